/**
 * The two places Cairn reaches into nats.js's internals, for the bulk data path. Both keep
 * the wire protocol as it is; both fall back to nats.js's public behaviour when the
 * internals are not what this was written against (tests/unit/nats_internals_test.ts fails
 * then, so an upgrade of nats.js shows it).
 *
 * - Gathered publish: a message given in parts (a replica batch's headers and the client's
 *   own data blocks) goes into nats.js's send buffer part by part. nats.js copies what it
 *   sends into one buffer anyway; joining the parts first cost a second copy of every byte,
 *   and a fresh allocation as large as the batch, per replica.
 * - Presized receive buffers: nats.js gathers a message that arrives in several socket reads
 *   in a buffer sized to the first read and doubles it as the rest comes (for 1 MiB, four
 *   reallocations and about 1.7 MiB of extra copying). Once the message's header says its
 *   size, this gives the buffer that size at once.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { Parser, State } from "@nats-io/nats-core/internal";
import { joinBody, type MessageBody } from "../actors/ports.ts";

const crlf = new Uint8Array([13, 10]);

/** What gathered publish uses of nats.js's connection and its ProtocolHandler. */
interface ConnectionInternals {
  /** nats.js's own checks before a publish: closed, draining, a bad subject (its errors). */
  _check(subject: string, sub: boolean, pub: boolean): void;
  protocol: {
    info?: { max_payload: number };
    outBytes: number;
    outMsgs: number;
    sendCommand(command: string, ...payloads: Uint8Array[]): void;
  };
}

function internalsOf(nc: NatsConnection): ConnectionInternals | null {
  const internals = nc as unknown as Partial<ConnectionInternals>;
  const protocol = internals.protocol;
  if (
    typeof internals._check !== "function" || typeof protocol?.sendCommand !== "function" ||
    typeof protocol.outBytes !== "number" || typeof protocol.outMsgs !== "number"
  ) return null;
  return internals as ConnectionInternals;
}

/** Whether this connection publishes parts without joining them (else publishBody joins). */
export function canGatherPublish(nc: NatsConnection): boolean {
  return internalsOf(nc) !== null;
}

/**
 * Publishes body (whole or in parts) to subject, with an optional reply subject; throws what
 * nats.js's publish throws for a closed or draining connection or a bad subject, and an
 * Error for a message over the server's max_payload.
 */
export function publishBody(
  nc: NatsConnection,
  subject: string,
  body: MessageBody,
  reply?: string,
): void {
  const internals = body instanceof Uint8Array ? null : internalsOf(nc);
  if (!internals) {
    nc.publish(subject, joinBody(body), reply ? { reply } : {});
    return;
  }
  internals._check(subject, false, true);
  if (reply) internals._check(reply, false, true);
  const protocol = internals.protocol;
  let sizeBytes = 0;
  for (const part of body as readonly Uint8Array[]) sizeBytes += part.length;
  if (protocol.info && sizeBytes > protocol.info.max_payload) {
    throw new Error(
      `a message of ${sizeBytes} bytes to ${subject} is over the NATS server's max_payload ` +
        `(${protocol.info.max_payload} bytes)`,
    );
  }
  protocol.outBytes += sizeBytes;
  protocol.outMsgs++;
  const command = reply
    ? `PUB ${subject} ${reply} ${sizeBytes}\r\n`
    : `PUB ${subject} ${sizeBytes}\r\n`;
  protocol.sendCommand(command, ...body as readonly Uint8Array[], crlf);
}

/** What presizing uses of nats.js's Parser and its DenoBuffer. */
interface ParserInternals {
  state: number;
  ma: { size: number };
  msgBuf?: {
    _buf: Uint8Array;
    _off: number;
    readonly capacity: number;
    bytes(options: { copy: boolean }): Uint8Array;
  };
  parse(buf: Uint8Array): void;
}

const presized = Symbol.for("cairn.presizedReceiveBuffers");

/**
 * Makes every nats.js connection in this process gather a split message in a buffer of the
 * message's size (idempotent). Returns false, changing nothing, if nats.js's parser is not
 * what this expects.
 */
export function presizeReceiveBuffers(): boolean {
  const prototype = Parser.prototype as unknown as ParserInternals & { [presized]?: true };
  if (prototype[presized]) return true;
  if (typeof prototype.parse !== "function" || typeof State?.MSG_PAYLOAD !== "number") {
    return false;
  }
  const parse = prototype.parse;
  prototype.parse = function (this: ParserInternals, buf: Uint8Array): void {
    const before = this.msgBuf;
    parse.call(this, buf);
    const gathering = this.msgBuf;
    // A message whose payload did not all arrive in buf starts a new gathering buffer.
    if (this.state !== State.MSG_PAYLOAD || !gathering || gathering === before) return;
    const sizeBytes = this.ma?.size;
    if (typeof sizeBytes !== "number" || gathering.capacity >= sizeBytes) return;
    const received = gathering.bytes({ copy: false });
    const whole = new Uint8Array(sizeBytes);
    whole.set(received);
    gathering._buf = whole.subarray(0, received.length);
    gathering._off = 0;
  };
  prototype[presized] = true;
  return true;
}
