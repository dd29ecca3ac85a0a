/** Error codes shared by the binary data path and the JSON control plane. */
export const ErrorCode = {
  OK: 0,
  /** Frame shorter than its header, wrong version byte, or payload length not matching the header. */
  BAD_FRAME: 1,
  /** Op byte not one of the known ops. */
  UNKNOWN_OP: 2,
  /** Offset or length not a multiple of the block size. */
  UNALIGNED: 3,
  /** Offset + length beyond the end of the volume. */
  OUT_OF_RANGE: 4,
  /** Length larger than the op's limit (maxIoBytes / maxZeroIoBytes). */
  TOO_LARGE: 5,
  /** No such volume. */
  NO_SUCH_VOLUME: 6,
  /** Fewer in-sync replicas than the volume's minimum: the write was not done. */
  UNAVAILABLE: 7,
  /** This node no longer (or not yet) owns the volume: back off briefly and resend. */
  MOVED: 8,
  /** A disk error on the replica. */
  IO_ERROR: 9,
  /** Request carried an epoch lower than one already seen (fenced). */
  STALE_EPOCH: 10,
  /** Every in-sync replica's copy of a block failed its checksum. */
  CORRUPT: 11,
  /** Invalid JSON or a message that fails its schema (control plane). */
  BAD_REQUEST: 12,
  /** Volume already exists. */
  EXISTS: 13,
  /** Not enough live nodes (or zones) to place the replicas asked for. */
  NOT_ENOUGH_NODES: 14,
  /** The volume actor's queue is full: back off and resend. */
  BUSY: 15,
  /** Anything else; the message says what. */
  INTERNAL: 16,
  /**
   * Internal (owner to replica): a write batch arrived out of sequence in its owner's write
   * stream (one before it was lost); the replica refuses writes until the owner fences again.
   */
  WRITE_GAP: 17,
  /** No node of that id in the metadata (control plane). */
  NO_SUCH_NODE: 18,
  /**
   * FLUSH: cached writes acknowledged before it, at a term before a power loss of every copy,
   * may be lost (their blocks hold older data, or read CORRUPT if torn). Not retryable.
   */
  CACHE_LOST: 19,
} as const;

export type ErrorCodeName = keyof typeof ErrorCode;
export type ErrorCodeValue = (typeof ErrorCode)[ErrorCodeName];

const namesByValue = new Map<number, ErrorCodeName>(
  Object.entries(ErrorCode).map(([name, value]) => [value, name as ErrorCodeName]),
);

export function errorCodeName(code: number): ErrorCodeName | `UNKNOWN_${number}` {
  return namesByValue.get(code) ?? `UNKNOWN_${code}`;
}

/** An error that carries a protocol error code, for replies and for the client's callers. */
export class CairnError extends Error {
  /** The message without the code in front, as error replies carry it. */
  readonly detail: string;

  constructor(readonly code: ErrorCodeName, message: string) {
    super(`${code}: ${message}`);
    this.detail = message;
    this.name = "CairnError";
  }

  /** Codes after which resending the same request may succeed. */
  get retryable(): boolean {
    return this.code === "MOVED" || this.code === "BUSY";
  }
}
