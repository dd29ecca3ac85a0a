/**
 * A simulated client of one volume: speaks the binary data path over the
 * simulated network, retries like the client library (MOVED, BUSY, no
 * responders, timeouts) and records every operation per block for the
 * linearizability checker. Every write stamps each block with a unique
 * write id, so a read tells exactly which write it saw.
 */
import type { Transport } from "../actors/ports.ts";
import {
  decodeReply,
  encodeFlushTerm,
  encodeRequest,
  Flag,
  Op,
  replyError,
} from "../protocol/frames.ts";
import type { ClientFlush } from "./flush_check.ts";
import type { AckedWrite, AckLog } from "./flush_durability.ts";
import { subjects } from "../protocol/subjects.ts";
import { requestFailure } from "../protocol/control.ts";
import { blockSizeBytes } from "../protocol/limits.ts";
import { type FlushOp, type HistoryOp, tornValue } from "./linearizability.ts";
import type { SimScheduler } from "./scheduler.ts";

/** One attempt's timeout; far above the network's largest delay, so no stale attempt lands late. */
export const attemptTimeoutMs = 1500;
/** How long one operation keeps retrying before it gives up (outcome unknown). */
export const operationDeadlineMs = 20_000;
/** Blocks per stripe: each stripe has one writer, so retried writes cannot reorder writers. */
export const stripeBlocks = 4;
/** Share of writes sent CACHED (acknowledged once applied, durable at the next FLUSH). */
export const cachedWriteChance = 0.5;
/** A client sends FLUSH after this many acknowledged cached writes. */
export const cachedWritesPerFlush = 4;

export interface SimVolume {
  name: string;
  incarnation: number;
  blocks: number;
}

/** A block's bytes for write `writeId`: the id and the block number, repeated. */
export function blockImage(writeId: number, block: number): Uint8Array {
  const out = new Uint8Array(blockSizeBytes);
  const view = new DataView(out.buffer);
  for (let at = 0; at < blockSizeBytes; at += 8) {
    view.setUint32(at, writeId, true);
    view.setUint32(at + 4, block, true);
  }
  return out;
}

/** The write id a block's bytes carry: 0 for zeros, -1 for bytes no write produced. */
export function decodeBlock(bytes: Uint8Array, block: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const writeId = view.getUint32(0, true);
  if (writeId === 0 && bytes.every((b) => b === 0)) return 0;
  for (let at = 0; at < blockSizeBytes; at += 8) {
    if (view.getUint32(at, true) !== writeId || view.getUint32(at + 4, true) !== block) return -1;
  }
  return writeId;
}

/** A FLUSH answered OK, for the FLUSH oracle (flush_durability.ts). */
export interface FlushAnswered {
  client: string;
  startMs: number;
  endMs: number;
  /** Per block, the newest write the volume had acknowledged when this FLUSH was sent. */
  acked: ReadonlyMap<number, AckedWrite>;
}

/** What the FLUSH oracle needs from clients: every acknowledged write, every FLUSH answered OK. */
export interface FlushObserver {
  /** Shared by the volume's clients: the promise covers every client's writes. */
  acks: AckLog;
  /** Called the moment the client has the OK. */
  answered(flush: FlushAnswered): void;
}

/**
 * The write id of a block that passed its checksum (a replica's "written" state): its bytes
 * are a whole blockImage, so the first id and block number tell which (-1 if they do not
 * match the block). A cheap stand-in for decodeBlock where the oracle reads every block.
 */
export function writeIdOfWhole(bytes: Uint8Array, block: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return view.getUint32(4, true) === block ? view.getUint32(0, true) : -1;
}

export interface ClientStats {
  ok: number;
  failed: number;
  retries: number;
  errors: Map<string, number>;
  /** FLUSHes answered OK. */
  flushes: number;
}

/**
 * Longest pause of a client between two operations, in virtual ms. The simulator's cost is
 * per operation; this keeps a seed near 4-5 thousand operations, enough to load every path
 * while the faults (which are what a seed is for) stay as many.
 */
export const clientThinkMaxMs = 40;

export class SimClient {
  readonly stats: ClientStats = { ok: 0, failed: 0, retries: 0, errors: new Map(), flushes: 0 };
  private requestId = 1;
  private cachedSinceFlush = 0;
  stopped = false;
  /** While set, the client starts no new operation (see `idle`); the run waits on it. */
  hold: Promise<void> | null = null;
  /**
   * No operation in flight and none to start: waiting on `hold`, or done (stopped). A
   * blackout waits for every client to be idle; a client that stopped while another was
   * held must count, or a blackout begun just before the run's end never happens, never
   * releases the held client, and the run waits on it forever (seed 61).
   */
  idle = false;
  /** While set, the client reads instead of writing (a scenario in sim/run.ts). */
  readsOnly = false;

  constructor(
    readonly id: string,
    readonly index: number,
    private readonly clients: number,
    private readonly transport: Transport,
    private readonly scheduler: SimScheduler,
    private readonly volume: SimVolume,
    private readonly history: HistoryOp[],
    private readonly nextWriteId: () => number,
    /** Where FLUSHes answered OK are recorded (the checker's power-loss model needs them). */
    private readonly flushes: FlushOp[] = [],
    /** Every FLUSH of this client and how it was answered (flush_check.ts). */
    private readonly clientFlushes: ClientFlush[] = [],
    /** Told of acknowledged writes and FLUSHes answered OK (flush_durability.ts). */
    private readonly flushObserver?: FlushObserver,
  ) {}

  /** The owner term of the oldest cached write acknowledged since the last FLUSH answered. */
  private oldestUnflushedTerm: number | null = null;

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.scheduler.schedule(ms, resolve, this.id));
  }

  /** Sends one request, retrying retryable failures; the reply payload, or the final error. */
  private async call(
    op: number,
    offsetBytes: number,
    lengthBytes: number,
    payload?: Uint8Array,
    flags = 0,
  ): Promise<{ ok: true; payload: Uint8Array; term: number } | { ok: false; why: string }> {
    const deadline = this.scheduler.nowMs + operationDeadlineMs;
    const frame = encodeRequest({
      op,
      flags,
      requestId: this.requestId = (this.requestId + 1) >>> 0,
      offsetBytes,
      lengthBytes,
      incarnation: this.volume.incarnation,
      payload,
    });
    for (let attempt = 0;; attempt++) {
      let why: string;
      try {
        const raw = await this.transport.request(
          subjects.volumeIo(this.volume.name),
          frame,
          attemptTimeoutMs,
        );
        const reply = decodeReply(raw);
        const error = replyError(reply);
        if (!error) return { ok: true, payload: reply.payload, term: reply.epoch };
        why = error.code;
        if (!error.retryable) return { ok: false, why };
      } catch (err) {
        const kind = requestFailure(err);
        if (kind === "other") return { ok: false, why: (err as Error).message };
        why = kind;
      }
      if (this.scheduler.nowMs > deadline || this.stopped) return { ok: false, why };
      this.stats.retries++;
      await this.sleep(Math.min(500, 10 * 2 ** Math.min(attempt, 6)));
    }
  }

  private count(why: string): void {
    this.stats.errors.set(why, (this.stats.errors.get(why) ?? 0) + 1);
  }

  /** Writes 1..stripeBlocks blocks of one of this client's stripes. */
  async write(): Promise<void> {
    const stripes = Math.floor(this.volume.blocks / stripeBlocks);
    const mine = Math.floor(stripes / this.clients);
    const stripe = this.index + this.clients * this.scheduler.int(0, mine - 1);
    const count = this.scheduler.int(1, stripeBlocks);
    const first = stripe * stripeBlocks + this.scheduler.int(0, stripeBlocks - count);
    const writeId = this.nextWriteId();
    const data = new Uint8Array(count * blockSizeBytes);
    for (let i = 0; i < count; i++) data.set(blockImage(writeId, first + i), i * blockSizeBytes);
    const startMs = this.scheduler.nowMs;
    // Half the writes are cached (durable at a FLUSH, which follows every few of them).
    const cached = this.scheduler.chance(cachedWriteChance);
    const flags = cached ? Flag.CACHED : 0;
    const result = await this.call(Op.WRITE, first * blockSizeBytes, data.length, data, flags);
    const endMs = this.scheduler.nowMs;
    if (result.ok) {
      // Now, not with the history below: the FLUSH that may follow at once must count it.
      for (let i = 0; i < count; i++) {
        this.flushObserver?.acks.acknowledged(first + i, { writeId, startMs });
      }
    }
    if (cached && result.ok) {
      // As the client library does: the oldest unflushed cached write's term goes with FLUSH.
      this.oldestUnflushedTerm = Math.min(this.oldestUnflushedTerm ?? result.term, result.term);
    }
    if (cached && result.ok && ++this.cachedSinceFlush >= cachedWritesPerFlush) {
      this.cachedSinceFlush = 0;
      const flushStartMs = this.scheduler.nowMs;
      const term = this.oldestUnflushedTerm;
      const acked = this.flushObserver?.acks.snapshot();
      const flushed = await this.call(
        Op.FLUSH,
        0,
        0,
        term === null ? undefined : encodeFlushTerm(term),
      );
      const flushEndMs = this.scheduler.nowMs;
      const outcome = flushed.ok ? "ok" : flushed.why === "CACHE_LOST" ? "lost" : "failed";
      this.clientFlushes.push({
        client: this.id,
        startMs: flushStartMs,
        endMs: flushEndMs,
        outcome,
      });
      if (outcome !== "failed") this.oldestUnflushedTerm = null;
      if (flushed.ok) {
        this.stats.flushes++;
        this.flushes.push({ startMs: flushStartMs, endMs: flushEndMs });
        if (acked) {
          this.flushObserver!.answered({
            client: this.id,
            startMs: flushStartMs,
            endMs: flushEndMs,
            acked,
          });
        }
      } else this.count(`FLUSH ${flushed.why}`);
    }
    if (result.ok) this.stats.ok++;
    else {
      this.stats.failed++;
      this.count(result.why);
    }
    for (let i = 0; i < count; i++) {
      this.history.push({
        client: this.id,
        kind: "write",
        block: first + i,
        value: writeId,
        startMs,
        endMs,
        // A write that failed may still have reached replicas: its effect is unknown.
        outcome: result.ok ? "ok" : "unknown",
        ...(cached ? { cached } : {}),
      });
    }
  }

  /** Reads 1..8 blocks anywhere in the volume (any client's stripes). */
  async read(first = -1, count = 0): Promise<boolean> {
    if (count === 0) count = this.scheduler.int(1, 8);
    if (first < 0) first = this.scheduler.int(0, this.volume.blocks - count);
    const startMs = this.scheduler.nowMs;
    const result = await this.call(Op.READ, first * blockSizeBytes, count * blockSizeBytes);
    const endMs = this.scheduler.nowMs;
    if (!result.ok) {
      this.stats.failed++;
      this.count(result.why);
      return false;
    }
    this.stats.ok++;
    for (let i = 0; i < count; i++) {
      const bytes = result.payload.subarray(i * blockSizeBytes, (i + 1) * blockSizeBytes);
      this.history.push({
        client: this.id,
        kind: "read",
        block: first + i,
        value: decodeBlock(bytes, first + i),
        startMs,
        endMs,
        outcome: "ok",
      });
    }
    return true;
  }

  /**
   * Reads one block; one that reads CORRUPT is recorded as torn (the checker decides whether
   * a power loss explains it). False if the read failed otherwise.
   */
  async readOrTorn(block: number): Promise<boolean> {
    const startMs = this.scheduler.nowMs;
    const result = await this.call(Op.READ, block * blockSizeBytes, blockSizeBytes);
    const endMs = this.scheduler.nowMs;
    if (!result.ok && result.why !== "CORRUPT") {
      this.stats.failed++;
      this.count(result.why);
      return false;
    }
    this.stats.ok++;
    this.history.push({
      client: this.id,
      kind: "read",
      block,
      value: result.ok ? decodeBlock(result.payload, block) : tornValue,
      startMs,
      endMs,
      outcome: "ok",
    });
    return true;
  }

  /** Reads and writes until stopped, with small think times (clientThinkMaxMs). */
  async run(writeFraction: number): Promise<void> {
    while (!this.stopped) {
      while (this.hold) {
        this.idle = true;
        await this.hold;
        this.idle = false;
      }
      if (this.stopped) break;
      if (this.scheduler.chance(writeFraction) && !this.readsOnly) await this.write();
      else await this.read();
      await this.sleep(this.scheduler.int(0, clientThinkMaxMs));
    }
    this.idle = true;
  }
}
