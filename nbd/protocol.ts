/**
 * NBD wire protocol: constants and codecs for the fixed newstyle handshake and the
 * transmission phase, as described in the NBD protocol document (doc/proto.md of
 * NetworkBlockDevice/nbd). All integers are big-endian on the wire.
 */

/** "NBDMAGIC": first 8 bytes the server sends. */
export const nbdMagic = 0x4e42444d41474943n;
/** "IHAVEOPT": newstyle magic, also the prefix of every option request. */
export const optionMagic = 0x49484156454f5054n;
/** Magic of every option reply. */
export const optionReplyMagic = 0x3e889045565a9n;
export const requestMagic = 0x25609513;
export const simpleReplyMagic = 0x67446698;
export const structuredReplyMagic = 0x668e33ef;

/** Handshake flags (server, 16 bits). */
export const HandshakeFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Client flags (32 bits). */
export const ClientFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Option types. */
export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

/** Option reply types; errors have bit 31 set. */
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x8000_0001,
  ERR_POLICY: 0x8000_0002,
  ERR_INVALID: 0x8000_0003,
  ERR_PLATFORM: 0x8000_0004,
  ERR_TLS_REQD: 0x8000_0005,
  ERR_UNKNOWN: 0x8000_0006,
  ERR_SHUTDOWN: 0x8000_0007,
  ERR_BLOCK_SIZE_REQD: 0x8000_0008,
  ERR_TOO_BIG: 0x8000_0009,
} as const;

/** Information types in NBD_REP_INFO replies. */
export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission flags (16 bits). */
export const TransmissionFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** Command types. */
export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

/** Command flags (16 bits). */
export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

/** Structured reply chunk types. */
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

export const ReplyFlag = { DONE: 1 << 0 } as const;

/** Error values of the transmission phase (the spec's subset of errno). */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrnoName = keyof typeof NbdErrno;

/** Bytes of the server's greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export const greetingBytes = 18;
/** Bytes of an option request header: IHAVEOPT, option, length. */
export const optionHeaderBytes = 16;
/** Bytes of an option reply header: magic, option, reply type, length. */
export const optionReplyHeaderBytes = 20;
/** Bytes of a transmission request header. */
export const requestHeaderBytes = 28;
export const simpleReplyBytes = 16;
export const structuredReplyHeaderBytes = 20;
/** Zero padding after an NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was agreed. */
export const exportNameZeroBytes = 124;
/** The spec's limit for strings (export names, messages). */
export const maxStringBytes = 4096;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** u64 as two u32 halves; exact for every safe integer. */
function setU64(view: DataView, at: number, n: number): void {
  view.setUint32(at, Math.floor(n / 0x1_0000_0000), false);
  view.setUint32(at + 4, n >>> 0, false);
}

/** u64 as a number; values above 2^53 come back as Infinity so range checks reject them. */
export function getU64(view: DataView, at: number): number {
  const high = view.getUint32(at, false);
  if (high > 0x1f_ffff) return Infinity;
  return high * 0x1_0000_0000 + view.getUint32(at + 4, false);
}

export function encodeGreeting(): Uint8Array {
  const out = new Uint8Array(greetingBytes);
  const view = viewOf(out);
  view.setBigUint64(0, nbdMagic, false);
  view.setBigUint64(8, optionMagic, false);
  view.setUint16(16, HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES, false);
  return out;
}

export interface OptionHeader {
  magic: bigint;
  option: number;
  length: number;
}

export function decodeOptionHeader(bytes: Uint8Array): OptionHeader {
  const view = viewOf(bytes);
  return {
    magic: view.getBigUint64(0, false),
    option: view.getUint32(8, false),
    length: view.getUint32(12, false),
  };
}

/** One option reply: header plus data. */
export function encodeOptionReply(option: number, type: number, data?: Uint8Array): Uint8Array {
  const length = data?.byteLength ?? 0;
  const out = new Uint8Array(optionReplyHeaderBytes + length);
  const view = viewOf(out);
  view.setBigUint64(0, optionReplyMagic, false);
  view.setUint32(8, option, false);
  view.setUint32(12, type, false);
  view.setUint32(16, length, false);
  if (data) out.set(data, optionReplyHeaderBytes);
  return out;
}

/** An option error reply whose data is a message for humans. */
export function encodeOptionError(option: number, type: number, message: string): Uint8Array {
  return encodeOptionReply(option, type, truncatedUtf8(message));
}

/** NBD_REP_SERVER data: name length, name, then a description for humans. */
export function encodeServerReply(name: string, description: string): Uint8Array {
  const nameBytes = textEncoder.encode(name);
  const descriptionBytes = truncatedUtf8(description);
  const data = new Uint8Array(4 + nameBytes.byteLength + descriptionBytes.byteLength);
  viewOf(data).setUint32(0, nameBytes.byteLength, false);
  data.set(nameBytes, 4);
  data.set(descriptionBytes, 4 + nameBytes.byteLength);
  return encodeOptionReply(Opt.LIST, Rep.SERVER, data);
}

/** NBD_INFO_EXPORT payload: type, size, transmission flags. */
export function encodeInfoExport(sizeBytes: number, flags: number): Uint8Array {
  const data = new Uint8Array(12);
  const view = viewOf(data);
  view.setUint16(0, Info.EXPORT, false);
  setU64(view, 2, sizeBytes);
  view.setUint16(10, flags, false);
  return data;
}

export interface BlockSizeConstraints {
  minimumBytes: number;
  preferredBytes: number;
  maximumBytes: number;
}

export function encodeInfoBlockSize(c: BlockSizeConstraints): Uint8Array {
  const data = new Uint8Array(14);
  const view = viewOf(data);
  view.setUint16(0, Info.BLOCK_SIZE, false);
  view.setUint32(2, c.minimumBytes, false);
  view.setUint32(6, c.preferredBytes, false);
  view.setUint32(10, c.maximumBytes, false);
  return data;
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION payload. */
export function encodeInfoString(type: number, text: string): Uint8Array {
  const bytes = truncatedUtf8(text);
  const data = new Uint8Array(2 + bytes.byteLength);
  viewOf(data).setUint16(0, type, false);
  data.set(bytes, 2);
  return data;
}

/** Reply to NBD_OPT_EXPORT_NAME: size, flags, and 124 zero bytes unless NO_ZEROES. */
export function encodeExportNameReply(sizeBytes: number, flags: number, noZeroes: boolean) {
  const out = new Uint8Array(10 + (noZeroes ? 0 : exportNameZeroBytes));
  const view = viewOf(out);
  setU64(view, 0, sizeBytes);
  view.setUint16(8, flags, false);
  return out;
}

export interface InfoRequest {
  name: string;
  /** Information types the client asked for. */
  requests: number[];
}

/**
 * Parses NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, u16 x count.
 * Returns a message describing the problem when the data is malformed.
 */
export function decodeInfoRequest(data: Uint8Array): InfoRequest | string {
  if (data.byteLength < 6) return `option data is ${data.byteLength} bytes, at least 6 needed`;
  const view = viewOf(data);
  const nameLength = view.getUint32(0, false);
  if (nameLength > data.byteLength - 6) {
    return `name length ${nameLength} does not fit in ${data.byteLength} bytes of option data`;
  }
  const name = decodeString(data.subarray(4, 4 + nameLength));
  if (name === null) return "export name is not valid UTF-8";
  const count = view.getUint16(4 + nameLength, false);
  if (data.byteLength !== 6 + nameLength + 2 * count) {
    return `option data is ${data.byteLength} bytes; ${count} information requests need ${
      6 + nameLength + 2 * count
    }`;
  }
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(view.getUint16(6 + nameLength + 2 * i, false));
  return { name, requests };
}

/** Strict UTF-8 decode without NUL; null when invalid. */
export function decodeString(bytes: Uint8Array): string | null {
  if (bytes.includes(0)) return null;
  try {
    return textDecoder.decode(bytes);
  } catch {
    return null;
  }
}

/** UTF-8 cut to the spec's 4096-byte string limit (on a character boundary). */
export function truncatedUtf8(text: string): Uint8Array {
  const bytes = textEncoder.encode(text);
  if (bytes.byteLength <= maxStringBytes) return bytes;
  let end = maxStringBytes;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

export interface NbdRequest {
  magic: number;
  flags: number;
  type: number;
  /** The client's 8-byte handle, echoed in the reply. */
  handle: Uint8Array;
  offset: number;
  length: number;
}

/** Decodes a 28-byte request header; `handle` is a view into `bytes`. */
export function decodeRequestHeader(bytes: Uint8Array): NbdRequest {
  const view = viewOf(bytes);
  return {
    magic: view.getUint32(0, false),
    flags: view.getUint16(4, false),
    type: view.getUint16(6, false),
    handle: bytes.subarray(8, 16),
    offset: getU64(view, 16),
    length: view.getUint32(24, false),
  };
}

/** Encodes a request header (for clients and tests). */
export function encodeRequestHeader(
  req: { flags?: number; type: number; handle: bigint; offset: number | bigint; length: number },
): Uint8Array {
  const out = new Uint8Array(requestHeaderBytes);
  const view = viewOf(out);
  view.setUint32(0, requestMagic, false);
  view.setUint16(4, req.flags ?? 0, false);
  view.setUint16(6, req.type, false);
  view.setBigUint64(8, req.handle, false);
  view.setBigUint64(16, BigInt(req.offset), false);
  view.setUint32(24, req.length, false);
  return out;
}

export function encodeSimpleReply(error: number, handle: Uint8Array): Uint8Array {
  const out = new Uint8Array(simpleReplyBytes);
  const view = viewOf(out);
  view.setUint32(0, simpleReplyMagic, false);
  view.setUint32(4, error, false);
  out.set(handle, 8);
  return out;
}

/** Header of a structured reply chunk whose payload is `length` bytes. */
export function encodeChunkHeader(
  flags: number,
  type: number,
  handle: Uint8Array,
  length: number,
): Uint8Array {
  const out = new Uint8Array(structuredReplyHeaderBytes);
  writeChunkHeader(out, flags, type, handle, length);
  return out;
}

function writeChunkHeader(
  out: Uint8Array,
  flags: number,
  type: number,
  handle: Uint8Array,
  length: number,
): void {
  const view = viewOf(out);
  view.setUint32(0, structuredReplyMagic, false);
  view.setUint16(4, flags, false);
  view.setUint16(6, type, false);
  out.set(handle, 8);
  view.setUint32(16, length, false);
}

/**
 * Header of a final NBD_REPLY_TYPE_OFFSET_DATA chunk (chunk header plus the 8-byte
 * offset); the data itself follows it on the wire.
 */
export function encodeOffsetDataHeader(
  handle: Uint8Array,
  offset: number,
  dataBytes: number,
): Uint8Array {
  const out = new Uint8Array(structuredReplyHeaderBytes + 8);
  writeChunkHeader(out, ReplyFlag.DONE, ReplyType.OFFSET_DATA, handle, 8 + dataBytes);
  setU64(viewOf(out), structuredReplyHeaderBytes, offset);
  return out;
}

/** A final NBD_REPLY_TYPE_ERROR chunk with a message for humans. */
export function encodeErrorChunk(handle: Uint8Array, error: number, message: string): Uint8Array {
  let text = truncatedUtf8(message);
  if (text.byteLength > 0xffff) text = text.subarray(0, 0xffff);
  const out = new Uint8Array(structuredReplyHeaderBytes + 6 + text.byteLength);
  writeChunkHeader(out, ReplyFlag.DONE, ReplyType.ERROR, handle, 6 + text.byteLength);
  const view = viewOf(out);
  view.setUint32(structuredReplyHeaderBytes, error, false);
  view.setUint16(structuredReplyHeaderBytes + 4, text.byteLength, false);
  out.set(text, structuredReplyHeaderBytes + 6);
  return out;
}

/** A final NBD_REPLY_TYPE_NONE chunk. */
export function encodeNoneChunk(handle: Uint8Array): Uint8Array {
  return encodeChunkHeader(ReplyFlag.DONE, ReplyType.NONE, handle, 0);
}

export function cmdName(type: number): string {
  for (const [name, value] of Object.entries(Cmd)) if (value === type) return name;
  return `UNKNOWN_${type}`;
}
