/**
 * Binary messages between a volume actor and a replica host (internal; not
 * for clients). Little-endian. Every request carries the sender's epoch.
 *
 * Write batch:  u8 version=1, u8 flags (bit 0: cached, see BatchFlag), u16 entryCount, u32 seq,
 *               u64 epoch (the owner term),
 *               then per entry: u32 segment, u32 firstBlock, u32 blockCount,
 *               u32 kind (0 data, 1 zero, 2 repair, 3 request), u64 version, data (data and
 *               repair: blockCount blocks; request: blockCount bytes of the client's origin).
 *               A request entry names the client request (origin, and its id in firstBlock)
 *               whose write the entry before it is: the replica remembers it, so a new owner
 *               recognizes that request's resend (see VolumeActor.handleFrame).
 * Read:         u8 version=1, u8 0, u16 0, u32 segment, u64 epoch, u32 firstBlock, u32 blockCount.
 *               seq numbers the owner's write stream to this replica (1, 2, ... after each
 *               fence; 0 = not sequenced, for tests and tools): a replica refuses a batch
 *               after a gap, so it never holds a later write while missing an earlier one.
 * Reply:        u8 status (ErrorCode), then the op's body or a UTF-8 error message.
 * Read reply:   u8 status, u8[3] 0, u32 count, f64 version[count], u8 state[count], data.
 */
import { blockSizeBytes } from "../../protocol/limits.ts";
import { ErrorCode, type ErrorCodeName } from "../../protocol/errors.ts";
import { joinBody } from "../ports.ts";

export const replicaWireVersion = 1;
const batchHeaderBytes = 16;
const entryHeaderBytes = 24;
const readRequestBytes = 24;

/**
 * data: write blocks; zero: mark blocks zero; repair: write each block only
 * where the replica's version is not newer (read repair and catch-up copy,
 * which must never undo a newer write that overtook them).
 */
export const EntryKind = { data: 0, zero: 1, repair: 2, request: 3 } as const;

/**
 * Write batch flags. `cached`: acknowledge once applied (written to the page cache, not
 * yet fdatasync'd); the owner's FLUSH makes it durable with the `flush` op. Without it a
 * batch is acknowledged only once durable, as before the flag existed.
 */
export const BatchFlag = { cached: 1 } as const;
const knownBatchFlags = BatchFlag.cached;

/** Longest client origin a request entry carries (a NATS inbox prefix is far shorter). */
export const maxRequestOriginBytes = 255;

export interface WriteEntry {
  segment: number;
  firstBlock: number;
  blockCount: number;
  kind: number;
  version: number;
  /** kind data: blockCount * blockSizeBytes bytes; kind request: the origin's bytes */
  data?: Uint8Array;
  /**
   * The client request this write serves (owner side only): encoded as a request entry
   * right after this one, in the same batch, so it is durable exactly when the write is.
   */
  request?: ClientRequest;
  /**
   * Owner side only: the client asked for a cached write (acknowledged once applied on
   * every in-sync replica, durable at the next FLUSH). A batch is sent cached only when
   * every entry in it is.
   */
  cached?: boolean;
}

export interface ClientRequest {
  origin: string;
  requestId: number;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** The request entry that names `request` as the client request of a write at `version`. */
export function requestEntry(segment: number, version: number, request: ClientRequest): WriteEntry {
  const data = textEncoder.encode(request.origin).subarray(0, maxRequestOriginBytes);
  return {
    segment,
    firstBlock: request.requestId,
    blockCount: data.length,
    kind: EntryKind.request,
    version,
    data,
  };
}

/** A client request's key (origin/requestId): the owner's resend table and replicas use it. */
export function clientRequestKey(request: ClientRequest): string {
  return `${request.origin}/${request.requestId}`;
}

/** The key of the client request a request entry names. */
export function requestKey(entry: WriteEntry): string {
  return clientRequestKey({ origin: textDecoder.decode(entry.data), requestId: entry.firstBlock });
}

export function carriesData(kind: number): boolean {
  return kind === EntryKind.data || kind === EntryKind.repair;
}

function payloadBytes(entry: WriteEntry): number {
  if (entry.kind === EntryKind.request) return entry.blockCount;
  return carriesData(entry.kind) ? entry.blockCount * blockSizeBytes : 0;
}

export function entryWireBytes(entry: WriteEntry): number {
  const own = entryHeaderBytes + payloadBytes(entry);
  return entry.request ? own + entryHeaderBytes + maxRequestOriginBytes : own;
}

/** The entries as they go on the wire: each write's request entry right after it. */
function wireEntries(entries: readonly WriteEntry[]): WriteEntry[] {
  if (!entries.some((e) => e.request)) return entries as WriteEntry[];
  return entries.flatMap((e) =>
    e.request ? [e, requestEntry(e.segment, e.version, e.request)] : [e]
  );
}

/**
 * The write batch as parts sent back to back: the headers (and request entries' origins) in
 * one small buffer, viewed between the entries' own data blocks, which are not copied.
 */
export function encodeWriteBatchParts(
  epoch: number,
  entries: readonly WriteEntry[],
  seq = 0,
  flags = 0,
): Uint8Array[] {
  entries = wireEntries(entries);
  let headerBytes = batchHeaderBytes;
  for (const e of entries) {
    headerBytes += entryHeaderBytes + (e.kind === EntryKind.request ? e.data!.length : 0);
  }
  const headers = new Uint8Array(headerBytes);
  const view = new DataView(headers.buffer);
  view.setUint8(0, replicaWireVersion);
  view.setUint8(1, flags);
  view.setUint16(2, entries.length, true);
  view.setUint32(4, seq, true);
  view.setBigUint64(8, BigInt(epoch), true);
  const parts: Uint8Array[] = [];
  /** Where the headers not yet in parts begin. */
  let pendingFrom = 0;
  let at = batchHeaderBytes;
  for (const e of entries) {
    view.setUint32(at, e.segment, true);
    view.setUint32(at + 4, e.firstBlock, true);
    view.setUint32(at + 8, e.blockCount, true);
    view.setUint32(at + 12, e.kind, true);
    view.setBigUint64(at + 16, BigInt(e.version), true);
    at += entryHeaderBytes;
    if (e.kind === EntryKind.request) {
      headers.set(e.data!, at);
      at += e.data!.length;
    } else if (carriesData(e.kind)) {
      if (e.data!.length !== e.blockCount * blockSizeBytes) {
        throw new WireError(
          `write entry of ${e.blockCount} blocks carries ${e.data!.length} bytes`,
        );
      }
      parts.push(headers.subarray(pendingFrom, at), e.data!);
      pendingFrom = at;
    }
  }
  if (pendingFrom < at) parts.push(headers.subarray(pendingFrom, at));
  return parts;
}

/** The write batch in one buffer (the journal's record, tools and tests). */
export function encodeWriteBatch(
  epoch: number,
  entries: readonly WriteEntry[],
  seq = 0,
  flags = 0,
): Uint8Array {
  return joinBody(encodeWriteBatchParts(epoch, entries, seq, flags));
}

export class WireError extends Error {}

export function decodeWriteBatch(
  bytes: Uint8Array,
): { epoch: number; seq: number; flags: number; entries: WriteEntry[] } {
  if (bytes.length < batchHeaderBytes) throw new WireError("write batch shorter than its header");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint8(0) !== replicaWireVersion) throw new WireError("unknown write batch version");
  const flags = view.getUint8(1);
  if (flags & ~knownBatchFlags) {
    throw new WireError(`unknown write batch flags 0x${flags.toString(16)}`);
  }
  const count = view.getUint16(2, true);
  const seq = view.getUint32(4, true);
  const epoch = Number(view.getBigUint64(8, true));
  const entries: WriteEntry[] = [];
  let at = batchHeaderBytes;
  for (let i = 0; i < count; i++) {
    if (at + entryHeaderBytes > bytes.length) throw new WireError("write batch truncated");
    const entry: WriteEntry = {
      segment: view.getUint32(at, true),
      firstBlock: view.getUint32(at + 4, true),
      blockCount: view.getUint32(at + 8, true),
      kind: view.getUint32(at + 12, true),
      version: Number(view.getBigUint64(at + 16, true)),
    };
    at += entryHeaderBytes;
    if (carriesData(entry.kind)) {
      const length = entry.blockCount * blockSizeBytes;
      if (at + length > bytes.length) throw new WireError("write batch data truncated");
      entry.data = bytes.subarray(at, at + length);
      at += length;
    } else if (entry.kind === EntryKind.request) {
      if (entry.blockCount > maxRequestOriginBytes || at + entry.blockCount > bytes.length) {
        throw new WireError("write batch request entry truncated");
      }
      entry.data = bytes.subarray(at, at + entry.blockCount);
      at += entry.blockCount;
    } else if (entry.kind !== EntryKind.zero) {
      throw new WireError(`unknown write entry kind ${entry.kind}`);
    }
    entries.push(entry);
  }
  if (at !== bytes.length) throw new WireError("write batch has trailing bytes");
  return { epoch, seq, flags, entries };
}

export interface ReadRequest {
  segment: number;
  epoch: number;
  firstBlock: number;
  blockCount: number;
}

export function encodeReadRequest(req: ReadRequest): Uint8Array {
  const out = new Uint8Array(readRequestBytes);
  const view = new DataView(out.buffer);
  view.setUint8(0, replicaWireVersion);
  view.setUint32(4, req.segment, true);
  view.setBigUint64(8, BigInt(req.epoch), true);
  view.setUint32(16, req.firstBlock, true);
  view.setUint32(20, req.blockCount, true);
  return out;
}

export function decodeReadRequest(bytes: Uint8Array): ReadRequest {
  if (bytes.length !== readRequestBytes) throw new WireError("read request has the wrong size");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint8(0) !== replicaWireVersion) throw new WireError("unknown read version");
  return {
    segment: view.getUint32(4, true),
    epoch: Number(view.getBigUint64(8, true)),
    firstBlock: view.getUint32(16, true),
    blockCount: view.getUint32(20, true),
  };
}

/** Block states on the wire, in SegmentFile's BlockState order. */
export const wireBlockStates = ["unwritten", "written", "zero", "corrupt"] as const;
export type WireBlockState = (typeof wireBlockStates)[number];

export interface ReadResult {
  versions: number[];
  states: WireBlockState[];
  data: Uint8Array;
}

export function encodeReadReply(result: ReadResult): Uint8Array {
  const count = result.versions.length;
  const dataAt = 8 + 9 * count;
  const out = new Uint8Array(dataAt + result.data.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, ErrorCode.OK);
  view.setUint32(4, count, true);
  for (let i = 0; i < count; i++) {
    view.setFloat64(8 + 8 * i, result.versions[i], true);
    out[8 + 8 * count + i] = wireBlockStates.indexOf(result.states[i]);
  }
  out.set(result.data, dataAt);
  return out;
}

/** Decodes a whole OK read reply (status byte included). */
export function decodeReadReply(reply: Uint8Array): ReadResult {
  const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  const count = view.getUint32(4, true);
  const versions: number[] = new Array(count);
  const states: WireBlockState[] = new Array(count);
  for (let i = 0; i < count; i++) {
    versions[i] = view.getFloat64(8 + 8 * i, true);
    states[i] = wireBlockStates[reply[8 + 8 * count + i]] ?? "corrupt";
  }
  return { versions, states, data: reply.subarray(8 + 9 * count) };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeOk(body?: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + (body?.length ?? 0));
  if (body) out.set(body, 1);
  return out;
}

export function encodeJsonOk(value: unknown): Uint8Array {
  return encodeOk(encoder.encode(JSON.stringify(value)));
}

export function encodeError(code: ErrorCodeName, message: string): Uint8Array {
  const out = encodeOk(encoder.encode(message));
  out[0] = ErrorCode[code];
  return out;
}

/** Splits a reply into status and body; an empty reply is an error. */
export function decodeReply(bytes: Uint8Array): { status: number; body: Uint8Array } {
  if (bytes.length === 0) return { status: ErrorCode.INTERNAL, body: encoder.encode("empty") };
  return { status: bytes[0], body: bytes.subarray(1) };
}

export function bodyText(body: Uint8Array): string {
  return decoder.decode(body);
}
