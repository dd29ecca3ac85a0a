/**
 * IO of any 512-byte granularity on top of a backend that takes whole blocks (4096 bytes).
 *
 * A write that covers part of a block becomes read-modify-write of that block under an
 * exclusive lock on it. Whole-block writes take a shared lock on their blocks, so they run
 * in parallel with each other but never inside another request's read-modify-write window
 * (otherwise the RMW could write back the old bytes over them). The locks belong to the
 * export, not the connection: every connection of one gateway to one volume shares them.
 * Two separate gateways doing RMW on the same block at the same time are not protected.
 */
import type { NbdBackend } from "./backend.ts";
import { joinBody } from "../actors/ports.ts";
import type { WriteOptions } from "../client/volume.ts";

interface Hold {
  first: number;
  end: number;
  exclusive: boolean;
  /** Resolvers of acquirers waiting for this hold to go; created on demand. */
  waiters: (() => void)[] | null;
}

/** Shared/exclusive locks over ranges of block indexes [first, end). */
export class RangeLocks {
  private readonly holds = new Set<Hold>();
  private exclusiveHolds = 0;

  /** Number of locks held now (for tests). */
  get held(): number {
    return this.holds.size;
  }

  private conflict(first: number, end: number, exclusive: boolean): Hold | null {
    // Fast path: shared requests only conflict with exclusive holds.
    if (!exclusive && this.exclusiveHolds === 0) return null;
    for (const hold of this.holds) {
      if ((exclusive || hold.exclusive) && hold.first < end && first < hold.end) return hold;
    }
    return null;
  }

  private take(first: number, end: number, exclusive: boolean): () => void {
    const hold: Hold = { first, end, exclusive, waiters: null };
    this.holds.add(hold);
    if (exclusive) this.exclusiveHolds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holds.delete(hold);
      if (exclusive) this.exclusiveHolds--;
      if (hold.waiters) { for (const wake of hold.waiters) wake(); }
    };
  }

  /** Takes the lock at once if free; null otherwise. */
  tryAcquire(first: number, end: number, exclusive: boolean): (() => void) | null {
    return this.conflict(first, end, exclusive) ? null : this.take(first, end, exclusive);
  }

  /** Waits for every conflicting hold to go, then takes the lock; returns its release. */
  async acquire(first: number, end: number, exclusive: boolean): Promise<() => void> {
    for (;;) {
      const blocking = this.conflict(first, end, exclusive);
      if (!blocking) return this.take(first, end, exclusive);
      await new Promise<void>((resolve) => (blocking.waiters ??= []).push(resolve));
    }
  }
}

/** Counters of what the sub-block layer did (for tests and metrics). */
export interface SubBlockStats {
  /** Writes, zeroes and trims of whole blocks, passed to the backend as they are. */
  wholeBlockOps: number;
  /** Partial blocks written by read-modify-write. */
  readModifyWrites: number;
}

/** Byte-addressed IO for one export over a block-aligned backend. */
export class SubBlockIo {
  readonly locks = new RangeLocks();
  readonly stats: SubBlockStats = { wholeBlockOps: 0, readModifyWrites: 0 };
  readonly blockBytes: number;

  constructor(readonly backend: NbdBackend) {
    this.blockBytes = backend.blockBytes;
  }

  get sizeBytes(): number {
    return this.backend.sizeBytes;
  }

  isAligned(offsetBytes: number, lengthBytes: number): boolean {
    return offsetBytes % this.blockBytes === 0 && lengthBytes % this.blockBytes === 0;
  }

  /** Reads whole blocks around the range; returns the bytes asked for as consecutive pieces. */
  async read(offsetBytes: number, lengthBytes: number): Promise<Uint8Array[]> {
    if (lengthBytes === 0) return [];
    if (this.isAligned(offsetBytes, lengthBytes)) {
      return await this.backend.read(offsetBytes, lengthBytes);
    }
    const bs = this.blockBytes;
    const start = Math.floor(offsetBytes / bs) * bs;
    const end = Math.ceil((offsetBytes + lengthBytes) / bs) * bs;
    const data = joinBody(await this.backend.read(start, end - start));
    return [data.subarray(offsetBytes - start, offsetBytes - start + lengthBytes)];
  }

  write(offsetBytes: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    return this.split(offsetBytes, data.byteLength, {
      whole: (offset, length) =>
        this.wholeBlocks(offset, length, () => {
          const from = offset - offsetBytes;
          return this.backend.write(offset, data.subarray(from, from + length), options);
        }),
      part: (block, at, length) =>
        this.readModifyWrite(block, options, (buf) => {
          const from = block * this.blockBytes + at - offsetBytes;
          buf.set(data.subarray(from, from + length), at);
        }),
    });
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, options: WriteOptions = {}): Promise<void> {
    return this.split(offsetBytes, lengthBytes, {
      whole: (offset, length) =>
        this.wholeBlocks(offset, length, () => this.backend.writeZeroes(offset, length, options)),
      part: (block, at, length) =>
        this.readModifyWrite(block, options, (buf) => buf.fill(0, at, at + length)),
    });
  }

  /** Trims the whole blocks inside the range; partial blocks at the edges are left as they are. */
  trim(offsetBytes: number, lengthBytes: number, options: WriteOptions = {}): Promise<void> {
    return this.split(offsetBytes, lengthBytes, {
      whole: (offset, length) =>
        this.wholeBlocks(offset, length, () => this.backend.trim(offset, length, options)),
      part: () => Promise.resolve(),
    });
  }

  flush(): Promise<void> {
    return this.backend.flush();
  }

  /** Runs a whole-block operation under a shared lock on its blocks. */
  private async wholeBlocks(
    offsetBytes: number,
    lengthBytes: number,
    run: () => Promise<void>,
  ): Promise<void> {
    const first = offsetBytes / this.blockBytes;
    const end = first + lengthBytes / this.blockBytes;
    const release = this.locks.tryAcquire(first, end, false) ??
      await this.locks.acquire(first, end, false);
    this.stats.wholeBlockOps++;
    try {
      await run();
    } finally {
      release();
    }
  }

  /** Reads one block, lets `modify` change it, writes it back, all under its exclusive lock. */
  private async readModifyWrite(
    block: number,
    options: WriteOptions,
    modify: (buf: Uint8Array) => void,
  ): Promise<void> {
    const release = await this.locks.acquire(block, block + 1, true);
    this.stats.readModifyWrites++;
    try {
      const offset = block * this.blockBytes;
      const buf = new Uint8Array(this.blockBytes);
      let at = 0;
      for (const piece of await this.backend.read(offset, this.blockBytes)) {
        buf.set(piece, at);
        at += piece.byteLength;
      }
      modify(buf);
      await this.backend.write(offset, buf, options);
    } finally {
      release();
    }
  }

  /**
   * Splits [offset, offset+length) into at most one partial block at each end and a run of
   * whole blocks in between; runs the pieces in parallel (they touch different blocks).
   */
  private async split(
    offsetBytes: number,
    lengthBytes: number,
    ops: {
      whole: (offset: number, length: number) => Promise<void>;
      part: (block: number, at: number, length: number) => Promise<void>;
    },
  ): Promise<void> {
    if (lengthBytes === 0) return;
    const bs = this.blockBytes;
    const end = offsetBytes + lengthBytes;
    if (this.isAligned(offsetBytes, lengthBytes)) return await ops.whole(offsetBytes, lengthBytes);
    const firstBlock = Math.floor(offsetBytes / bs);
    const lastBlock = Math.floor((end - 1) / bs);
    if (firstBlock === lastBlock) {
      return await ops.part(firstBlock, offsetBytes - firstBlock * bs, lengthBytes);
    }
    const parts: Promise<void>[] = [];
    let wholeStart = offsetBytes;
    let wholeEnd = end;
    if (offsetBytes % bs !== 0) {
      wholeStart = (firstBlock + 1) * bs;
      parts.push(ops.part(firstBlock, offsetBytes - firstBlock * bs, wholeStart - offsetBytes));
    }
    if (end % bs !== 0) {
      wholeEnd = lastBlock * bs;
      parts.push(ops.part(lastBlock, 0, end - wholeEnd));
    }
    if (wholeEnd > wholeStart) parts.push(ops.whole(wholeStart, wholeEnd - wholeStart));
    await Promise.all(parts);
  }
}
