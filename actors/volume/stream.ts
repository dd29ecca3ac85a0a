/**
 * The owner's write stream to one replica node: every write batch carries the
 * next sequence number, and a fence restarts the stream at 1. The replica
 * refuses a batch after a gap (a lost message), so it can never hold a later
 * write of this term while missing an earlier one. One stream per node per
 * volume actor; batches go out in order on one connection.
 */
import type { ReadRequest, ReadResult, WriteEntry } from "../replica/wire.ts";

/** How a volume actor reaches the replica host of one node (in-process or over NATS). */
export interface ReplicaLink {
  /**
   * Sends one replica message; resolves with the raw reply (status byte first). timeoutMs
   * (default: the replica timeout) bounds a remote call; in-process calls ignore it.
   */
  call(op: string, body: Uint8Array, timeoutMs?: number): Promise<Uint8Array>;
  /**
   * Applies a batch of write entries, durably unless `cached` (then once applied);
   * rejects (ReplicaReplyError or transport) otherwise.
   */
  write(term: number, entries: WriteEntry[], seq: number, cached?: boolean): Promise<void>;
  /** Reads blocks of one segment; rejects like write. */
  read(request: ReadRequest): Promise<ReadResult>;
}

const encoder = new TextEncoder();

export class ReplicaStream {
  private nextSeq = 1;

  constructor(readonly node: string, private readonly link: ReplicaLink) {}

  /** The fence message, restarting the stream: send it with `call("fence", ...)`. */
  fenceBody(term: number, segments: number[]): Uint8Array {
    this.nextSeq = 1;
    return encoder.encode(JSON.stringify({ epoch: term, segments, nextSeq: 1 }));
  }

  call(op: string, body: Uint8Array, timeoutMs?: number): Promise<Uint8Array> {
    return this.link.call(op, body, timeoutMs);
  }

  /**
   * Sends one batch as the stream's next (the send itself happens before this returns):
   * cached only if every entry is, so a durable write is never acknowledged unsynced.
   */
  write(term: number, entries: WriteEntry[]): Promise<void> {
    return this.link.write(term, entries, this.nextSeq++, entries.every((e) => e.cached));
  }

  read(request: ReadRequest): Promise<ReadResult> {
    return this.link.read(request);
  }
}
