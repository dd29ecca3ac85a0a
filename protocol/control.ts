/** JSON request/reply helpers for the control plane and node ops. */
import { CairnError, ErrorCode, type ErrorCodeName } from "./errors.ts";
import type { Transport } from "../actors/ports.ts";
import type { ControlReply } from "./schemas.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Default time a control request may take (volume create touches every node). */
export const controlTimeoutMs = 30_000;
/** A drain hands off every volume of a node, a few at a time: it may take longer. */
export const drainTimeoutMs = 180_000;

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export function okReply<T>(result: T): Uint8Array {
  return encodeJson({ ok: true, result } satisfies ControlReply<T>);
}

export function errorReply(code: ErrorCodeName, message: string): Uint8Array {
  return encodeJson({ ok: false, error: { code, message } } satisfies ControlReply<never>);
}

/** Turns anything thrown by a handler into an error reply. */
export function replyForError(err: unknown): Uint8Array {
  if (err instanceof CairnError) return errorReply(err.code, err.message.replace(/^\w+: /, ""));
  return errorReply("INTERNAL", (err as Error)?.message ?? String(err));
}

function isErrorCode(code: string): code is ErrorCodeName {
  return code in ErrorCode;
}

/** What kind of NATS request failure this is: both retryable kinds mean "nobody served it (yet)". */
export function requestFailure(err: unknown): "no-responders" | "timeout" | "other" {
  for (let e = err as Error | undefined; e; e = e.cause as Error | undefined) {
    const kind = (e as { kind?: string }).kind;
    if (e.name === "TransportError" && kind === "no-responders") return "no-responders";
    if (e.name === "TransportError" && kind === "timeout") return "timeout";
    if (e.name === "NoRespondersError" || /no responders/i.test(e.message)) return "no-responders";
    if (e.name === "TimeoutError" || /^timeout/i.test(e.message)) return "timeout";
  }
  return "other";
}

/** Sends a JSON request and returns the result, or throws the reply's error as CairnError. */
export async function requestJson<T>(
  transport: Transport,
  subject: string,
  body: unknown,
  timeoutMs = controlTimeoutMs,
): Promise<T> {
  let data: Uint8Array;
  try {
    data = await transport.request(subject, encodeJson(body), timeoutMs);
  } catch (err) {
    const kind = requestFailure(err);
    if (kind === "no-responders") {
      throw new CairnError("UNAVAILABLE", `nobody answers ${subject} (no responders)`);
    }
    if (kind === "timeout") {
      throw new CairnError("UNAVAILABLE", `${subject} timed out after ${timeoutMs} ms`);
    }
    throw err;
  }
  const reply = JSON.parse(decoder.decode(data)) as ControlReply<T>;
  if (reply.ok) return reply.result;
  const code = isErrorCode(reply.error.code) ? reply.error.code : "INTERNAL";
  throw new CairnError(code, reply.error.message);
}
