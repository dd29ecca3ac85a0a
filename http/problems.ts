/**
 * Errors as RFC 9457 problem details (`application/problem+json`): a protocol error code
 * (protocol/errors.ts) or one of the HTTP layer's own, with the HTTP status it maps to.
 */
import type { Context } from "hono";
import { CairnError, type ErrorCodeName } from "../protocol/errors.ts";
import type { HttpOnlyProblemCode, Problem } from "../protocol/schemas.ts";

export type ProblemCode = ErrorCodeName | HttpOnlyProblemCode;

export const problemContentType = "application/problem+json";

/** Seconds a client should wait before retrying a 503 (an owner moving, a full queue). */
export const retryAfterSeconds = 1;

/** The HTTP status of each code. Checked complete by its type. */
export const problemStatus: Record<ProblemCode, number> = {
  OK: 200,
  BAD_FRAME: 400,
  UNKNOWN_OP: 400,
  UNALIGNED: 400,
  OUT_OF_RANGE: 400,
  TOO_LARGE: 400,
  BAD_REQUEST: 400,
  NO_SUCH_VOLUME: 404,
  NO_SUCH_NODE: 404,
  CACHE_LOST: 500,
  EXISTS: 409,
  // The cluster, as it is now, cannot place the volume: a conflict with its state.
  NOT_ENOUGH_NODES: 409,
  UNAVAILABLE: 503,
  MOVED: 503,
  BUSY: 503,
  STALE_EPOCH: 503,
  IO_ERROR: 500,
  CORRUPT: 500,
  INTERNAL: 500,
  WRITE_GAP: 500,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
};

const titles: Partial<Record<ProblemCode, string>> = {
  BAD_REQUEST: "The request is not valid",
  NO_SUCH_VOLUME: "No such volume",
  NO_SUCH_NODE: "No such node",
  EXISTS: "The volume already exists",
  NOT_ENOUGH_NODES: "Not enough live nodes",
  UNAVAILABLE: "Unavailable, try again",
  MOVED: "The volume is moving, try again",
  BUSY: "Busy, try again",
  INTERNAL: "Internal error",
  UNAUTHORIZED: "A valid bearer token is needed",
  FORBIDDEN: "The token's role does not allow this",
  NOT_FOUND: "No such resource",
  METHOD_NOT_ALLOWED: "Method not allowed on this resource",
  PAYLOAD_TOO_LARGE: "Request body too large",
  UNSUPPORTED_MEDIA_TYPE: "The body must be application/json",
};

/** Which problem code an HTTP status the framework raised stands for. */
export function codeForStatus(status: number): ProblemCode {
  const byStatus: Record<number, ProblemCode> = {
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
  };
  return byStatus[status] ?? (status >= 500 ? "INTERNAL" : "BAD_REQUEST");
}

export function problemBody(code: ProblemCode, detail: string, instance: string): Problem {
  return {
    type: `urn:cairn:problem:${code}`,
    title: titles[code] ?? code,
    status: problemStatus[code],
    detail,
    code,
    instance,
  };
}

/** A problem response; 503s say when to retry. */
export function problemResponse(
  c: Context,
  code: ProblemCode,
  detail: string,
  headers: Record<string, string> = {},
): Response {
  const body = problemBody(code, detail, c.req.path);
  if (body.status === 503) headers = { "retry-after": String(retryAfterSeconds), ...headers };
  return new Response(JSON.stringify(body), {
    status: body.status,
    headers: { "content-type": problemContentType, ...headers },
  });
}

/** A problem a handler raises that is not a protocol error (an unknown operation id, say). */
export class ProblemError extends Error {
  constructor(readonly code: ProblemCode, readonly detail: string) {
    super(`${code}: ${detail}`);
    this.name = "ProblemError";
  }
}

/** A CairnError's problem (its message without the code in front). */
export function problemForError(c: Context, err: CairnError): Response {
  return problemResponse(c, err.code, err.detail);
}
