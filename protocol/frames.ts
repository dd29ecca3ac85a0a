/**
 * Binary codec of the client data path (`cairn.v1.vol.<volume>.io`), specified byte by byte in
 * docs/PROTOCOL.md. Little-endian throughout. This runs once per IO on both ends, so decoding
 * reads through a DataView over the caller's buffer and hands out payloads as subarrays; encoding
 * makes exactly one allocation per frame.
 */

import { CairnError, ErrorCode, type ErrorCodeName, errorCodeName } from "./errors.ts";
import { blockSizeBytes, maxIoBytes, maxZeroIoBytes } from "./limits.ts";

export const protocolVersion = 1;
export const requestHeaderBytes = 24;
export const replyHeaderBytes = 16;
/** Size of a STAT reply's body. */
export const statBodyBytes = 32;
/** Error messages are cut to this many bytes so an error reply stays small whatever it quotes. */
export const maxErrorMessageBytes = 1024;

export const Op = {
  READ: 1,
  WRITE: 2,
  FLUSH: 3,
  TRIM: 4,
  WRITE_ZEROES: 5,
  STAT: 6,
} as const;
export type OpName = keyof typeof Op;
export type OpCode = (typeof Op)[OpName];

/** Request flag bits. */
export const Flag = {
  /**
   * Force unit access: this write is durable on every in-sync replica before OK. Writes
   * without CACHED are durable anyway; FUA overrides CACHED.
   */
  FUA: 1,
  /**
   * WRITE, WRITE_ZEROES, TRIM: acknowledge once every in-sync replica has applied the write
   * (written, not yet fdatasync'd); it is durable once a later FLUSH answers OK. A process
   * crash keeps it (the page cache survives); a power loss before the FLUSH may not.
   */
  CACHED: 2,
} as const;
const knownFlags = Flag.FUA | Flag.CACHED;

const opNames: readonly (OpName | undefined)[] = [
  undefined,
  "READ",
  "WRITE",
  "FLUSH",
  "TRIM",
  "WRITE_ZEROES",
  "STAT",
];

export function opName(op: number): OpName | `UNKNOWN_${number}` {
  return opNames[op] ?? `UNKNOWN_${op}`;
}

export interface IoRequest {
  op: number;
  flags: number;
  requestId: number;
  offsetBytes: number;
  lengthBytes: number;
  /**
   * The volume incarnation the client opened (VolumeSpec.incarnation), or 0 for "whichever
   * exists". The owner refuses a nonzero one that is not its own with NO_SUCH_VOLUME, so a
   * handle to a deleted volume never writes into a new volume of the same name.
   */
  incarnation?: number;
  /** WRITE: the data (lengthBytes long); every other op: empty. */
  payload: Uint8Array;
}

export interface IoReply {
  /** 0 (ErrorCode.OK) or an ErrorCode value. */
  status: number;
  requestId: number;
  epoch: number;
  /** READ: data; STAT: stat body; error: UTF-8 message; otherwise empty. */
  payload: Uint8Array;
}

export interface VolumeStat {
  sizeBytes: number;
  blockSize: number;
  maxIoBytes: number;
  segmentBytes: number;
  /** Lowest count of in-sync replicas over the volume's segments. */
  inSyncReplicas: number;
  /** Configured replica count. */
  replicas: number;
}

export interface FrameProblem {
  code: ErrorCodeName;
  message: string;
}

export type DecodedRequest =
  | { ok: true; request: IoRequest }
  | { ok: false; code: ErrorCodeName; message: string; requestId: number };

const twoTo32 = 0x1_0000_0000;
/** Highest value of the upper u32 of a u64 that keeps the whole below 2^53. */
const maxSafeHigh = 0x1f_ffff;
const emptyPayload = new Uint8Array(0);
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;
}

function isU64Safe(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** u64 as two u32 halves: cheaper than BigInt and exact for every safe integer. */
function setU64(view: DataView, at: number, n: number): void {
  view.setUint32(at, n >>> 0, true);
  view.setUint32(at + 4, Math.floor(n / twoTo32), true);
}

/** u64 that must be a safe integer; returns -1 when it is not. */
function getU64Safe(view: DataView, at: number): number {
  const high = view.getUint32(at + 4, true);
  if (high > maxSafeHigh) return -1;
  return high * twoTo32 + view.getUint32(at, true);
}

function fieldCheck(ok: boolean, what: string, value: number): void {
  if (!ok) throw new RangeError(`frame field ${what} out of range: ${value}`);
}

/** Whether the op may carry the FUA flag. */
function takesFua(op: number): boolean {
  return op === Op.WRITE || op === Op.WRITE_ZEROES;
}

/**
 * Writes a request header into target[0..24). Throws RangeError if a field does not fit its
 * width (a caller bug, not bad input from the wire). Does not check the op's rules: see
 * validateRequest.
 */
export function writeRequestHeader(target: Uint8Array, req: Omit<IoRequest, "payload">): void {
  fieldCheck(Number.isInteger(req.op) && req.op >= 0 && req.op <= 0xff, "op", req.op);
  fieldCheck(
    Number.isInteger(req.flags) && req.flags >= 0 && req.flags <= 0xffff,
    "flags",
    req.flags,
  );
  fieldCheck(isU32(req.requestId), "requestId", req.requestId);
  fieldCheck(isU64Safe(req.offsetBytes), "offsetBytes", req.offsetBytes);
  fieldCheck(isU32(req.lengthBytes), "lengthBytes", req.lengthBytes);
  fieldCheck(isU32(req.incarnation ?? 0), "incarnation", req.incarnation ?? 0);
  const view = viewOf(target);
  view.setUint8(0, protocolVersion);
  view.setUint8(1, req.op);
  view.setUint16(2, req.flags, true);
  view.setUint32(4, req.requestId, true);
  setU64(view, 8, req.offsetBytes);
  view.setUint32(16, req.lengthBytes, true);
  view.setUint32(20, req.incarnation ?? 0, true);
}

/**
 * Encodes a request frame: one allocation, the payload copied once. Encodes what it is given
 * (so tests can build frames a server must reject); run validateRequest first to catch misuse.
 */
export function encodeRequest(
  req: Omit<IoRequest, "payload"> & { payload?: Uint8Array },
): Uint8Array {
  const payload = req.payload ?? emptyPayload;
  const frame = new Uint8Array(requestHeaderBytes + payload.byteLength);
  writeRequestHeader(frame, req);
  if (payload.byteLength > 0) frame.set(payload, requestHeaderBytes);
  return frame;
}

function reject(
  code: ErrorCodeName,
  message: string,
  requestId: number,
): DecodedRequest {
  return { ok: false, code, message, requestId };
}

/**
 * Decodes and structurally checks a request frame. Never throws. The payload is a view into
 * `frame` (no copy), so the caller must not reuse the buffer while the request is alive.
 * Checks that depend on the volume (alignment, size limits, range) are in validateRequest.
 */
export function decodeRequest(frame: Uint8Array): DecodedRequest {
  const length = frame.byteLength;
  const view = viewOf(frame);
  // Echo the request id whenever the frame is long enough to carry one, so the client can match.
  const requestId = length >= 8 ? view.getUint32(4, true) : 0;
  if (length < requestHeaderBytes) {
    return reject(
      "BAD_FRAME",
      `frame is ${length} bytes, shorter than the ${requestHeaderBytes}-byte request header`,
      requestId,
    );
  }
  const version = view.getUint8(0);
  if (version !== protocolVersion) {
    return reject(
      "BAD_FRAME",
      `protocol version ${version} not supported (expected ${protocolVersion})`,
      requestId,
    );
  }
  const op = view.getUint8(1);
  if (op < Op.READ || op > Op.STAT) return reject("UNKNOWN_OP", `unknown op ${op}`, requestId);
  const flags = view.getUint16(2, true);
  const flagProblem = checkFlags(op, flags);
  if (flagProblem !== null) return reject("BAD_FRAME", flagProblem, requestId);
  const incarnation = view.getUint32(20, true);
  const lengthBytes = view.getUint32(16, true);
  const payloadBytes = length - requestHeaderBytes;
  if (op === Op.WRITE) {
    if (payloadBytes !== lengthBytes) {
      return reject(
        "BAD_FRAME",
        `WRITE payload is ${payloadBytes} bytes but lengthBytes is ${lengthBytes}`,
        requestId,
      );
    }
  } else if (op === Op.FLUSH) {
    if (payloadBytes !== 0 && payloadBytes !== flushTermBytes) {
      return reject(
        "BAD_FRAME",
        `FLUSH carries no payload or a ${flushTermBytes}-byte term, got ${payloadBytes} bytes`,
        requestId,
      );
    }
  } else if (payloadBytes !== 0) {
    return reject(
      "BAD_FRAME",
      `${opNames[op]} must carry no payload, got ${payloadBytes} bytes`,
      requestId,
    );
  }
  const offsetBytes = getU64Safe(view, 8);
  if (offsetBytes < 0) {
    return reject(
      "OUT_OF_RANGE",
      `offset 0x${view.getBigUint64(8, true).toString(16)} is above 2^53-1`,
      requestId,
    );
  }
  return {
    ok: true,
    request: {
      op,
      flags,
      requestId,
      offsetBytes,
      lengthBytes,
      incarnation,
      payload: payloadBytes === 0 ? emptyPayload : frame.subarray(requestHeaderBytes),
    },
  };
}

function checkFlags(op: number, flags: number): string | null {
  if ((flags & ~knownFlags) !== 0) {
    return `unknown flag bits 0x${(flags & ~knownFlags).toString(16)}`;
  }
  if ((flags & Flag.FUA) !== 0 && !takesFua(op)) {
    return `FUA flag is only allowed on WRITE and WRITE_ZEROES, not ${opName(op)}`;
  }
  if ((flags & Flag.CACHED) !== 0 && !takesFua(op) && op !== Op.TRIM) {
    return `CACHED flag is only allowed on WRITE, WRITE_ZEROES and TRIM, not ${opName(op)}`;
  }
  return null;
}

function problem(code: ErrorCodeName, message: string): FrameProblem {
  return { code, message };
}

/**
 * Checks a request against the op's rules and the volume's size. Returns null when it may be
 * served. Also re-checks what decodeRequest checks, so hand-built requests are covered too.
 */
export function validateRequest(
  req: IoRequest,
  volumeSizeBytes: number,
  /** Largest READ/WRITE length this owner takes (its connection's, see ioLimitsFor). */
  ioBytes = maxIoBytes,
): FrameProblem | null {
  const { op, offsetBytes, lengthBytes } = req;
  let limitBytes: number;
  switch (op) {
    case Op.READ:
    case Op.WRITE:
      limitBytes = ioBytes;
      break;
    case Op.TRIM:
    case Op.WRITE_ZEROES:
      limitBytes = maxZeroIoBytes;
      break;
    case Op.FLUSH:
    case Op.STAT:
      if (offsetBytes !== 0 || lengthBytes !== 0) {
        return problem(
          "BAD_FRAME",
          `${
            opNames[op]
          } must have offset 0 and length 0, got offset ${offsetBytes} length ${lengthBytes}`,
        );
      }
      limitBytes = 0;
      break;
    default:
      return problem("UNKNOWN_OP", `unknown op ${op}`);
  }
  const flagProblem = checkFlags(op, req.flags);
  if (flagProblem !== null) return problem("BAD_FRAME", flagProblem);
  const payloadBytes = req.payload.byteLength;
  if (op === Op.FLUSH) {
    if (payloadBytes !== 0 && payloadBytes !== flushTermBytes) {
      return problem(
        "BAD_FRAME",
        `FLUSH payload is ${payloadBytes} bytes, expected 0 or ${flushTermBytes} (a term)`,
      );
    }
  } else if (op === Op.WRITE ? payloadBytes !== lengthBytes : payloadBytes !== 0) {
    return problem(
      "BAD_FRAME",
      `${opNames[op]} payload is ${payloadBytes} bytes, expected ${
        op === Op.WRITE ? lengthBytes : 0
      }`,
    );
  }
  if (limitBytes === 0) return null; // FLUSH / STAT: nothing more to check.
  if (!isU32(lengthBytes) || lengthBytes === 0) {
    return problem("BAD_FRAME", `${opNames[op]} length must be above 0, got ${lengthBytes}`);
  }
  if (!isU64Safe(offsetBytes)) {
    return problem("OUT_OF_RANGE", `offset ${offsetBytes} is not a byte offset`);
  }
  if (offsetBytes % blockSizeBytes !== 0 || lengthBytes % blockSizeBytes !== 0) {
    return problem(
      "UNALIGNED",
      `offset ${offsetBytes} and length ${lengthBytes} must be multiples of ${blockSizeBytes}`,
    );
  }
  if (lengthBytes > limitBytes) {
    return problem(
      "TOO_LARGE",
      `${opNames[op]} length ${lengthBytes} is above the limit of ${limitBytes} bytes`,
    );
  }
  // Subtract rather than add so a huge offset cannot lose precision.
  if (offsetBytes > volumeSizeBytes - lengthBytes) {
    return problem(
      "OUT_OF_RANGE",
      `offset ${offsetBytes} + length ${lengthBytes} is beyond the volume's end at ${volumeSizeBytes}`,
    );
  }
  return null;
}

/**
 * A FLUSH may carry the owner term (u64 little-endian) of the oldest cached write the sender
 * had acknowledged since its last FLUSH; the owner answers CACHE_LOST when a power loss of
 * every copy since that term may have taken it. Without it (0 bytes) nothing is checked.
 */
export const flushTermBytes = 8;

/** A write the client asked to be acknowledged before it is durable (see Flag.CACHED). */
export function isCached(flags: number): boolean {
  return (flags & Flag.CACHED) !== 0 && (flags & Flag.FUA) === 0;
}

export function encodeFlushTerm(term: number): Uint8Array {
  const out = new Uint8Array(flushTermBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(term), true);
  return out;
}

/** The term a FLUSH carries, or null if it carries none. */
export function decodeFlushTerm(payload: Uint8Array): number | null {
  if (payload.byteLength !== flushTermBytes) return null;
  const term = new DataView(payload.buffer, payload.byteOffset, flushTermBytes).getBigUint64(
    0,
    true,
  );
  return term > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(term);
}

/** Writes a reply header into target[0..16). Throws RangeError if a field does not fit. */
export function writeReplyHeader(
  target: Uint8Array,
  status: number,
  requestId: number,
  epoch: number,
): void {
  fieldCheck(Number.isInteger(status) && status >= 0 && status <= 0xff, "status", status);
  fieldCheck(isU32(requestId), "requestId", requestId);
  fieldCheck(isU64Safe(epoch), "epoch", epoch);
  const view = viewOf(target);
  view.setUint8(0, protocolVersion);
  view.setUint8(1, status);
  view.setUint16(2, 0, true);
  view.setUint32(4, requestId, true);
  setU64(view, 8, epoch);
}

/**
 * Allocates a reply frame with room for payloadBytes and writes its header; the caller fills
 * `frame.subarray(replyHeaderBytes)` directly (e.g. a READ's data), saving a copy.
 */
export function allocReply(
  status: number,
  requestId: number,
  epoch: number,
  payloadBytes: number,
): Uint8Array {
  const frame = new Uint8Array(replyHeaderBytes + payloadBytes);
  writeReplyHeader(frame, status, requestId, epoch);
  return frame;
}

/** Encodes a reply frame: one allocation, the payload copied once. */
export function encodeReply(reply: IoReply): Uint8Array {
  const frame = allocReply(reply.status, reply.requestId, reply.epoch, reply.payload.byteLength);
  if (reply.payload.byteLength > 0) frame.set(reply.payload, replyHeaderBytes);
  return frame;
}

/** Encodes an error reply whose payload is the UTF-8 message (cut to maxErrorMessageBytes). */
export function encodeErrorReply(
  code: ErrorCodeName,
  message: string,
  requestId: number,
  epoch: number,
): Uint8Array {
  let text = textEncoder.encode(message);
  if (text.byteLength > maxErrorMessageBytes) text = text.subarray(0, maxErrorMessageBytes);
  return encodeReply({ status: ErrorCode[code], requestId, epoch, payload: text });
}

/** Decodes a reply frame; the payload is a view into `frame`. Throws CairnError BAD_FRAME. */
export function decodeReply(frame: Uint8Array): IoReply {
  const length = frame.byteLength;
  if (length < replyHeaderBytes) {
    throw new CairnError(
      "BAD_FRAME",
      `reply is ${length} bytes, shorter than the ${replyHeaderBytes}-byte reply header`,
    );
  }
  const view = viewOf(frame);
  const version = view.getUint8(0);
  if (version !== protocolVersion) {
    throw new CairnError(
      "BAD_FRAME",
      `reply protocol version ${version} not supported (expected ${protocolVersion})`,
    );
  }
  const reserved = view.getUint16(2, true);
  if (reserved !== 0) {
    throw new CairnError("BAD_FRAME", `reserved reply field is ${reserved}, must be 0`);
  }
  const epoch = getU64Safe(view, 8);
  if (epoch < 0) throw new CairnError("BAD_FRAME", "reply epoch is above 2^53-1");
  return {
    status: view.getUint8(1),
    requestId: view.getUint32(4, true),
    epoch,
    payload: length === replyHeaderBytes ? emptyPayload : frame.subarray(replyHeaderBytes),
  };
}

/**
 * The error an error reply stands for, or null for an OK reply. Status values this version
 * does not know become INTERNAL with the number in the message.
 */
export function replyError(reply: IoReply): CairnError | null {
  if (reply.status === ErrorCode.OK) return null;
  const name = errorCodeName(reply.status);
  const message = textDecoder.decode(reply.payload);
  if (name.startsWith("UNKNOWN_")) {
    return new CairnError("INTERNAL", `unknown status ${reply.status}: ${message}`);
  }
  return new CairnError(name as ErrorCodeName, message);
}

/** Encodes the 32-byte STAT body. Throws RangeError if a field does not fit. */
export function encodeStat(stat: VolumeStat): Uint8Array {
  fieldCheck(isU64Safe(stat.sizeBytes), "sizeBytes", stat.sizeBytes);
  fieldCheck(isU32(stat.blockSize), "blockSize", stat.blockSize);
  fieldCheck(isU32(stat.maxIoBytes), "maxIoBytes", stat.maxIoBytes);
  fieldCheck(isU64Safe(stat.segmentBytes), "segmentBytes", stat.segmentBytes);
  fieldCheck(isU32(stat.inSyncReplicas), "inSyncReplicas", stat.inSyncReplicas);
  fieldCheck(isU32(stat.replicas), "replicas", stat.replicas);
  const body = new Uint8Array(statBodyBytes);
  const view = viewOf(body);
  setU64(view, 0, stat.sizeBytes);
  view.setUint32(8, stat.blockSize, true);
  view.setUint32(12, stat.maxIoBytes, true);
  setU64(view, 16, stat.segmentBytes);
  view.setUint32(24, stat.inSyncReplicas, true);
  view.setUint32(28, stat.replicas, true);
  return body;
}

/** Decodes a STAT body (the payload of an OK STAT reply). Throws CairnError BAD_FRAME. */
export function decodeStat(body: Uint8Array): VolumeStat {
  if (body.byteLength !== statBodyBytes) {
    throw new CairnError(
      "BAD_FRAME",
      `STAT body is ${body.byteLength} bytes, expected ${statBodyBytes}`,
    );
  }
  const view = viewOf(body);
  const sizeBytes = getU64Safe(view, 0);
  const segmentBytes = getU64Safe(view, 16);
  if (sizeBytes < 0 || segmentBytes < 0) {
    throw new CairnError("BAD_FRAME", "STAT sizeBytes or segmentBytes is above 2^53-1");
  }
  return {
    sizeBytes,
    blockSize: view.getUint32(8, true),
    maxIoBytes: view.getUint32(12, true),
    segmentBytes,
    inSyncReplicas: view.getUint32(24, true),
    replicas: view.getUint32(28, true),
  };
}

/**
 * MULTI (op 7): several request frames in one NATS message. Each member is `[u32 length][frame]`.
 * The owner serves them in order as if each came alone and answers in parts: each reply
 * message carries the member replies ready at that moment, as `[u32 index][u32 length][reply]`,
 * so a member that waits does not hold back the others. A client coalesces small requests sent
 * at the same moment into one MULTI, so nats-server, the client and the owner handle one
 * message where they handled many. MULTI has no IoRequest of its own and does not nest.
 */
export const multiOp = 7;
/** Most member frames one MULTI carries. */
export const maxMultiFrames = 256;
const u32Bytes = 4;

/** Whether a frame is a MULTI envelope (its version and op bytes say so). */
export function isMulti(frame: Uint8Array): boolean {
  return frame.byteLength >= requestHeaderBytes && frame[0] === protocolVersion &&
    frame[1] === multiOp;
}

/** Encodes a MULTI request of the given member frames: one allocation. */
export function encodeMulti(frames: readonly Uint8Array[]): Uint8Array {
  fieldCheck(frames.length >= 1 && frames.length <= maxMultiFrames, "frames", frames.length);
  let total = requestHeaderBytes;
  for (const f of frames) total += u32Bytes + f.byteLength;
  const out = new Uint8Array(total);
  writeRequestHeader(out, {
    op: multiOp,
    flags: 0,
    requestId: 0,
    offsetBytes: 0,
    lengthBytes: frames.length,
  });
  const view = viewOf(out);
  let at = requestHeaderBytes;
  for (const f of frames) {
    view.setUint32(at, f.byteLength, true);
    out.set(f, at + u32Bytes);
    at += u32Bytes + f.byteLength;
  }
  return out;
}

/**
 * The member frames of a MULTI request (views into it), or the problem that makes the whole
 * envelope unanswerable member by member. Never throws.
 */
export function decodeMulti(frame: Uint8Array): Uint8Array[] | FrameProblem {
  if (!isMulti(frame)) return problem("BAD_FRAME", "not a MULTI frame");
  const view = viewOf(frame);
  if (view.getUint16(2, true) !== 0) return problem("BAD_FRAME", "MULTI takes no flags");
  const count = view.getUint32(16, true);
  if (count < 1 || count > maxMultiFrames) {
    return problem("BAD_FRAME", `MULTI carries 1 to ${maxMultiFrames} frames, says ${count}`);
  }
  const members: Uint8Array[] = [];
  let at = requestHeaderBytes;
  for (let i = 0; i < count; i++) {
    if (at + u32Bytes > frame.byteLength) {
      return problem("BAD_FRAME", `MULTI ends before member ${i + 1} of ${count}`);
    }
    const bytes = view.getUint32(at, true);
    at += u32Bytes;
    if (bytes > frame.byteLength - at) {
      return problem(
        "BAD_FRAME",
        `MULTI member ${i + 1} says ${bytes} bytes, ${frame.byteLength - at} are left`,
      );
    }
    const member = frame.subarray(at, at + bytes);
    if (isMulti(member)) return problem("BAD_FRAME", "a MULTI may not carry a MULTI");
    members.push(member);
    at += bytes;
  }
  if (at !== frame.byteLength) {
    return problem("BAD_FRAME", `MULTI has ${frame.byteLength - at} bytes after its last member`);
  }
  return members;
}

/** One member's reply in a part of a MULTI's answer. */
export interface MultiReplyPart {
  /** The member's position in its MULTI, from 0. */
  index: number;
  /** Its reply frame. */
  frame: Uint8Array;
}

/** Encodes one part of a MULTI's answer: an OK reply header whose payload is member replies. */
export function encodeMultiReplyPart(parts: readonly MultiReplyPart[], epoch: number): Uint8Array {
  let payloadBytes = 0;
  for (const p of parts) payloadBytes += 2 * u32Bytes + p.frame.byteLength;
  const out = allocReply(ErrorCode.OK, 0, epoch, payloadBytes);
  const view = viewOf(out);
  let at = replyHeaderBytes;
  for (const p of parts) {
    fieldCheck(isU32(p.index), "index", p.index);
    view.setUint32(at, p.index, true);
    view.setUint32(at + u32Bytes, p.frame.byteLength, true);
    out.set(p.frame, at + 2 * u32Bytes);
    at += 2 * u32Bytes + p.frame.byteLength;
  }
  return out;
}

/**
 * The member replies in one part of a MULTI's answer (frames are views into it), or null when
 * the message is an error reply to the whole envelope (an owner that does not know MULTI
 * answers UNKNOWN_OP). Throws CairnError BAD_FRAME on a malformed part or an index not below
 * `count`.
 */
export function decodeMultiReplyPart(frame: Uint8Array, count: number): MultiReplyPart[] | null {
  const reply = decodeReply(frame);
  if (reply.status !== ErrorCode.OK) return null;
  const view = viewOf(frame);
  const parts: MultiReplyPart[] = [];
  let at = replyHeaderBytes;
  while (at < frame.byteLength) {
    if (at + 2 * u32Bytes > frame.byteLength) {
      throw new CairnError("BAD_FRAME", "MULTI reply part ends inside a member header");
    }
    const index = view.getUint32(at, true);
    const bytes = view.getUint32(at + u32Bytes, true);
    at += 2 * u32Bytes;
    if (index >= count) {
      throw new CairnError("BAD_FRAME", `MULTI reply for member ${index}, the MULTI had ${count}`);
    }
    if (bytes > frame.byteLength - at) {
      throw new CairnError("BAD_FRAME", `MULTI reply member says ${bytes} bytes, fewer are left`);
    }
    parts.push({ index, frame: frame.subarray(at, at + bytes) });
    at += bytes;
  }
  return parts;
}
