/** An open volume: block IO over NATS with splitting, pipelining and retries. */
import {
  decodeReply,
  decodeStat,
  encodeFlushTerm,
  encodeRequest,
  Flag,
  isCached,
  Op,
  replyError,
  type VolumeStat,
} from "../protocol/frames.ts";
import { CairnError } from "../protocol/errors.ts";
import { blockSizeBytes, ioLimitsFor, maxIoBytes, maxZeroIoBytes } from "../protocol/limits.ts";
import { subjects } from "../protocol/subjects.ts";
import { requestFailure } from "../protocol/control.ts";
import type { RequestMux } from "../protocol/request_mux.ts";
import { FrameCoalescer } from "../protocol/frame_coalescer.ts";
import { backoffDelayMs, noRespondersRetryMaxMs, retryDeadlineMs, sleep } from "./retry.ts";
import {
  OwnerChangedError,
  ownerProbeAfterMs,
  ownerProbeTimeoutMs,
  OwnerWatch,
} from "./owner_watch.ts";

/** Requests one Volume keeps in flight at most. */
export const defaultMaxInFlight = 64;
/**
 * Time one attempt may take before it is resent: above the owner's own
 * replica timeout, so a slow replica is marked stale before we give up.
 * Resending is safe: a write carries the same bytes, and a later write gets
 * a higher version than any earlier attempt. An attempt sent to an owner that
 * has since been replaced is resent at once (owner_watch.ts), not after this.
 */
export const requestTimeoutMs = 7_000;

export interface VolumeOptions {
  maxInFlight?: number;
  /** Asked when the volume's subject has no responders: does the volume still exist? */
  exists?: () => Promise<boolean>;
  /**
   * Writes without a `durable` option are cached (acknowledged once applied on every
   * in-sync replica, durable after the next flush()), as a disk with a volatile write
   * cache. Default false: every write is durable before it is acknowledged.
   */
  cachedWrites?: boolean;
}

export interface WriteOptions {
  /**
   * true: durable on every in-sync replica before the write is acknowledged (FUA).
   * false: acknowledged once applied; durable after the next flush(). Default: the
   * volume's `cachedWrites` setting.
   */
  durable?: boolean;
}

export interface IoStats {
  requests: number;
  retries: number;
}

export class Volume {
  readonly stats: IoStats = { requests: 0, retries: 0 };
  private readonly subject: string;
  private readonly owner = new OwnerWatch();
  /** Sends this volume's small frames several to a NATS message (MULTI). */
  private readonly coalescer: FrameCoalescer;
  /** Start times of attempts waiting for a reply (for probing a silent owner). */
  private readonly attemptsStartedMs = new Set<{ startedMs: number }>();
  private probeTimer: ReturnType<typeof setTimeout> | null = null;
  private probing = false;
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly maxInFlight: number;
  private readonly cachedWrites: boolean;
  private closed = false;
  /**
   * The owner term of the oldest cached write acknowledged since the last FLUSH that covered
   * it (null: none), sent with FLUSH so a power loss of every copy since is reported.
   */
  private oldestUnflushedTerm: number | null = null;
  /** Cached writes acknowledged so far (tells a FLUSH whether others came in meanwhile). */
  private cachedAcks = 0;
  /** Set once the volume this handle was opened on is gone; every call then fails with it. */
  private gone: CairnError | null = null;
  /**
   * Largest READ/WRITE frame the owner takes: its STAT's maxIoBytes, down to maxIoBytes
   * (which every owner takes) once an owner answered a larger frame TOO_LARGE.
   */
  private ownerIoBytes = maxIoBytes;

  private constructor(
    private readonly mux: RequestMux,
    readonly name: string,
    /** The incarnation this handle was opened on (0: whichever exists). */
    readonly incarnation: number,
    private info: VolumeStat,
    private readonly options: VolumeOptions,
  ) {
    this.subject = subjects.volumeIo(name);
    this.coalescer = new FrameCoalescer(mux, this.subject);
    this.maxInFlight = options.maxInFlight ?? defaultMaxInFlight;
    this.cachedWrites = options.cachedWrites ?? false;
  }

  static async open(
    mux: RequestMux,
    name: string,
    incarnation: number,
    options: VolumeOptions = {},
  ): Promise<Volume> {
    const volume = new Volume(mux, name, incarnation, null as unknown as VolumeStat, options);
    volume.info = await volume.stat();
    volume.ownerIoBytes = Math.max(maxIoBytes, volume.info.maxIoBytes);
    return volume;
  }

  /**
   * Largest READ/WRITE length sent in one frame: what the owner takes and what this
   * connection's NATS server carries (its max_payload, see ioLimitsFor), whichever is less.
   */
  get frameBytes(): number {
    return Math.min(this.ownerIoBytes, ioLimitsFor(this.mux.maxPayloadBytes()).ioBytes);
  }

  /** MULTI envelopes this handle sent and the frames they carried (see FrameCoalescer). */
  get coalescing(): { readonly multis: number; readonly framesInMultis: number } {
    return this.coalescer.stats;
  }

  get sizeBytes(): number {
    return this.info.sizeBytes;
  }

  get blockSize(): number {
    return this.info.blockSize;
  }

  private async slot(): Promise<void> {
    if (this.inFlight < this.maxInFlight) {
      this.inFlight++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.inFlight--;
  }

  /** One frame, resent with backoff on no-responders, timeouts, MOVED and BUSY. */
  private async call(
    op: number,
    offsetBytes: number,
    lengthBytes: number,
    payload?: Uint8Array,
    flags = 0,
  ) {
    if (this.closed) throw new CairnError("BAD_REQUEST", `volume ${this.name} is closed`);
    if (this.gone) throw this.gone;
    await this.slot();
    try {
      // The same id on every attempt: the owner applies a resent write only once.
      const requestId = this.mux.nextRequestId();
      const frame = encodeRequest({
        op,
        flags,
        requestId,
        offsetBytes,
        lengthBytes,
        incarnation: this.incarnation,
        payload,
      });
      const deadline = performance.now() + retryDeadlineMs;
      for (let attempt = 0;; attempt++) {
        this.stats.requests++;
        let why: string;
        let noResponders = false;
        const generation = this.owner.generation;
        try {
          const reply = decodeReply(await this.attempt(frame, generation));
          this.owner.sawTerm(reply.epoch);
          const error = replyError(reply);
          if (!error) {
            if (isCached(flags) && op !== Op.FLUSH) this.cachedAcked(reply.epoch);
            return reply.payload;
          }
          if (error.code === "NO_SUCH_VOLUME") throw this.gone = error;
          if (!error.retryable) throw error;
          if (error.code === "MOVED") this.owner.ownerGone("MOVED", generation);
          why = error.message;
        } catch (err) {
          if (err instanceof CairnError) throw err;
          if (err instanceof OwnerChangedError && performance.now() <= deadline) {
            // Sent to an owner since replaced: resend now, to whoever serves the volume.
            this.stats.retries++;
            continue;
          }
          if (err instanceof OwnerChangedError) {
            throw new CairnError(
              "UNAVAILABLE",
              `volume ${this.name}: gave up after ${retryDeadlineMs} ms (owners kept changing)`,
            );
          }
          const kind = requestFailure(err);
          noResponders = kind === "no-responders";
          if (noResponders) this.owner.ownerGone("no responders", generation);
          if (kind === "other") throw err;
          why = kind;
          if (kind === "no-responders" && attempt % 8 === 7 && this.options.exists) {
            if (!await this.options.exists()) {
              throw this.gone = new CairnError(
                "NO_SUCH_VOLUME",
                `volume ${this.name} (incarnation ${this.incarnation}) no longer exists`,
              );
            }
          }
        }
        if (performance.now() > deadline) {
          throw new CairnError(
            "UNAVAILABLE",
            `volume ${this.name}: gave up after ${retryDeadlineMs} ms (${why})`,
          );
        }
        this.stats.retries++;
        const delayMs = backoffDelayMs(attempt);
        await sleep(noResponders ? Math.min(delayMs, noRespondersRetryMaxMs) : delayMs);
      }
    } finally {
      this.release();
    }
  }

  /** One attempt, abandoned early if the owner it went to is replaced meanwhile. */
  private async attempt(frame: Uint8Array, generation: number): Promise<Uint8Array> {
    const started = { startedMs: performance.now() };
    this.attemptsStartedMs.add(started);
    this.watchForSilence();
    try {
      return await Promise.race([
        this.coalescer.request(frame, requestTimeoutMs),
        this.owner.changedSince(generation),
      ]);
    } finally {
      this.attemptsStartedMs.delete(started);
      if (this.attemptsStartedMs.size === 0 && this.probeTimer !== null) {
        clearTimeout(this.probeTimer);
        this.probeTimer = null;
      }
    }
  }

  /**
   * While some attempt has waited longer than ownerProbeAfterMs, probes the volume's subject
   * with STAT now and then: a successor's answer (a higher term) or no responders tells the
   * owner watch that the waiting attempts went to an owner that is gone.
   */
  private watchForSilence(): void {
    if (this.probeTimer !== null) return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      if (this.attemptsStartedMs.size === 0 || this.closed) return;
      const now = performance.now();
      let oldestMs = now;
      for (const a of this.attemptsStartedMs) oldestMs = Math.min(oldestMs, a.startedMs);
      if (now - oldestMs >= ownerProbeAfterMs && !this.probing) void this.probe();
      this.watchForSilence();
    }, ownerProbeAfterMs / 2);
  }

  private async probe(): Promise<void> {
    this.probing = true;
    const generation = this.owner.generation;
    try {
      const frame = encodeRequest({
        op: Op.STAT,
        flags: 0,
        requestId: 0,
        offsetBytes: 0,
        lengthBytes: 0,
        incarnation: this.incarnation,
      });
      const reply = decodeReply(await this.mux.request(this.subject, frame, ownerProbeTimeoutMs));
      this.owner.sawTerm(reply.epoch);
      if (replyError(reply)?.code === "MOVED") this.owner.ownerGone("MOVED", generation);
    } catch (err) {
      if (requestFailure(err) === "no-responders") {
        this.owner.ownerGone("no responders", generation);
      }
      // A probe that timed out proves nothing: the owner may be busy, or paused.
    } finally {
      this.probing = false;
    }
  }

  private checkRange(offsetBytes: number, lengthBytes: number): void {
    if (offsetBytes % blockSizeBytes || lengthBytes % blockSizeBytes) {
      throw new CairnError("UNALIGNED", `offset and length must be multiples of ${blockSizeBytes}`);
    }
    if (offsetBytes < 0 || offsetBytes + lengthBytes > this.sizeBytes) {
      throw new CairnError(
        "OUT_OF_RANGE",
        `${offsetBytes}+${lengthBytes} is beyond ${this.sizeBytes}`,
      );
    }
  }

  /** Runs fn over [offset, offset+length) in chunks of at most chunkBytes, all in flight at once. */
  private async chunked(
    offsetBytes: number,
    lengthBytes: number,
    chunkBytes: number,
    fn: (offset: number, length: number, at: number) => Promise<void>,
  ): Promise<void> {
    this.checkRange(offsetBytes, lengthBytes);
    const parts: Promise<void>[] = [];
    for (let at = 0; at < lengthBytes; at += chunkBytes) {
      parts.push(fn(offsetBytes + at, Math.min(chunkBytes, lengthBytes - at), at));
    }
    await Promise.all(parts);
  }

  /**
   * One READ or WRITE frame of `length` bytes; if it is larger than maxIoBytes and the owner
   * (or this connection) refuses it as too large, e.g. an owner now on a NATS server with a
   * smaller max_payload than the one that answered STAT, this volume sends frames of
   * maxIoBytes from then on and the range goes again in those.
   */
  private async frame(
    offset: number,
    length: number,
    send: (offset: number, length: number, at: number) => Promise<void>,
  ): Promise<void> {
    try {
      return await send(offset, length, 0);
    } catch (err) {
      if (length <= maxIoBytes || !tooLarge(err)) throw err;
    }
    this.ownerIoBytes = maxIoBytes;
    const parts: Promise<void>[] = [];
    for (let at = 0; at < length; at += maxIoBytes) {
      parts.push(send(offset + at, Math.min(maxIoBytes, length - at), at));
    }
    await Promise.all(parts);
  }

  async read(offsetBytes: number, lengthBytes: number): Promise<Uint8Array> {
    if (lengthBytes <= maxIoBytes) {
      this.checkRange(offsetBytes, lengthBytes);
      return await this.call(Op.READ, offsetBytes, lengthBytes);
    }
    const out = new Uint8Array(lengthBytes);
    await this.chunked(
      offsetBytes,
      lengthBytes,
      this.frameBytes,
      (offset, length, at) =>
        this.frame(offset, length, async (o, l, within) => {
          const data = await this.call(Op.READ, o, l);
          out.set(data, at + within);
        }),
    );
    return out;
  }

  /**
   * The frame flags of a write: CACHED unless durable (asked for, or by default); a durable
   * one carries no flag, which every owner version reads as durable.
   */
  private writeFlags(options: WriteOptions): number {
    return (options.durable ?? !this.cachedWrites) ? 0 : Flag.CACHED;
  }

  async write(offsetBytes: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    const flags = this.writeFlags(options);
    await this.chunked(
      offsetBytes,
      data.length,
      this.frameBytes,
      (offset, length, at) =>
        this.frame(offset, length, async (o, l, within) => {
          const from = at + within;
          await this.call(Op.WRITE, o, l, data.subarray(from, from + l), flags);
        }),
    );
  }

  async trim(offsetBytes: number, lengthBytes: number, options: WriteOptions = {}): Promise<void> {
    const flags = this.writeFlags(options);
    await this.chunked(offsetBytes, lengthBytes, maxZeroIoBytes, async (offset, length) => {
      await this.call(Op.TRIM, offset, length, undefined, flags);
    });
  }

  async writeZeroes(
    offsetBytes: number,
    lengthBytes: number,
    options: WriteOptions = {},
  ): Promise<void> {
    const flags = this.writeFlags(options);
    await this.chunked(offsetBytes, lengthBytes, maxZeroIoBytes, async (offset, length) => {
      await this.call(Op.WRITE_ZEROES, offset, length, undefined, flags);
    });
  }

  private cachedAcked(term: number): void {
    this.cachedAcks++;
    this.oldestUnflushedTerm = Math.min(this.oldestUnflushedTerm ?? term, term);
  }

  /**
   * Every write acknowledged before this call is durable on every in-sync replica. Fails with
   * CACHE_LOST when cached writes of this handle acknowledged before it may have been lost in
   * a power loss of every copy (reported once: later FLUSHes cover only later writes).
   */
  async flush(): Promise<void> {
    const term = this.oldestUnflushedTerm;
    const acksBefore = this.cachedAcks;
    try {
      await this.call(Op.FLUSH, 0, 0, term === null ? undefined : encodeFlushTerm(term));
    } catch (err) {
      if (err instanceof CairnError && err.code === "CACHE_LOST") this.oldestUnflushedTerm = null;
      throw err;
    }
    // Covered, unless more cached writes were acknowledged meanwhile (kept, conservatively).
    if (this.cachedAcks === acksBefore) this.oldestUnflushedTerm = null;
  }

  async stat(): Promise<VolumeStat> {
    return decodeStat(await this.call(Op.STAT, 0, 0));
  }

  /** Waits for requests in flight, then refuses new ones. */
  async close(): Promise<void> {
    while (this.inFlight > 0) await sleep(5);
    this.closed = true;
  }
}

/** An owner's TOO_LARGE, or this connection's server refusing a message above its max_payload. */
function tooLarge(err: unknown): boolean {
  if (err instanceof CairnError) return err.code === "TOO_LARGE";
  return err instanceof Error && err.message.includes("max_payload");
}
