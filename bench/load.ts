/**
 * Closed-loop load: N workers each run one operation at a time for a fixed
 * time, after a warm-up of the same operation. Every loop is bounded by a
 * deadline and an operation cap; a phase that stalls past its deadline plus
 * slack fails instead of hanging the bench.
 */

/** Most operations one phase runs, whatever its duration. */
export const maxOpsPerPhase = 50_000_000;
/** Latency samples kept per phase; beyond that a uniform reservoir sample. */
export const maxLatencySamples = 1_000_000;
/** How long a phase may overrun its duration (slow operations draining) before it fails. */
export const phaseSlackMs = 30_000;

export interface LoadOptions {
  /** Operations kept in flight (workers). */
  inFlight: number;
  seconds: number;
  warmupSeconds: number;
  /** Payload bytes one operation moves, for MB/s. */
  bytesPerOp: number;
  /**
   * Runs once every worker of a phase has stopped (warm-up and measured phase alike), e.g. a
   * final FLUSH. Inside the measured time: the phase's elapsed time ends when it resolves.
   */
  finish?: () => Promise<void>;
}

export interface LoadResult {
  ops: number;
  seconds: number;
  opsPerSec: number;
  mbPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** One operation; `worker` is 0..inFlight-1. */
export type Operation = (worker: number) => Promise<void>;

class Reservoir {
  private readonly samples = new Float64Array(maxLatencySamples);
  private seen = 0;
  max = 0;

  add(ms: number): void {
    if (ms > this.max) this.max = ms;
    if (this.seen < maxLatencySamples) {
      this.samples[this.seen] = ms;
    } else {
      const slot = Math.floor(Math.random() * (this.seen + 1));
      if (slot < maxLatencySamples) this.samples[slot] = ms;
    }
    this.seen++;
  }

  sorted(): Float64Array {
    return this.samples.slice(0, Math.min(this.seen, maxLatencySamples)).sort();
  }
}

export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} still running ${ms} ms after it should have ended`)),
      ms,
    );
  });
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}

async function phase(
  op: Operation,
  inFlight: number,
  durationMs: number,
  latencies: Reservoir | null,
  finish?: () => Promise<void>,
): Promise<{ ops: number; elapsedMs: number }> {
  const start = performance.now();
  const end = start + durationMs;
  let started = 0;
  let done = 0;
  let lastDone = start;
  let failure: unknown = null;
  const worker = async (index: number) => {
    while (failure === null && performance.now() < end && started < maxOpsPerPhase) {
      started++;
      const t0 = performance.now();
      try {
        await op(index);
      } catch (err) {
        // The first failure stops every worker; the phase then reports it.
        failure ??= err;
        return;
      }
      const t1 = performance.now();
      latencies?.add(t1 - t0);
      done++;
      lastDone = t1;
    }
  };
  const workers = Array.from({ length: inFlight }, (_, i) => worker(i));
  const all = Promise.all(workers).then(async () => {
    if (failure !== null || !finish) return;
    await finish();
    lastDone = performance.now();
  });
  await withDeadline(all, durationMs + phaseSlackMs, "load phase");
  if (failure !== null) throw failure;
  return { ops: done, elapsedMs: Math.max(lastDone - start, 1) };
}

/** Warms up, then measures. `around` wraps the measured phase only (e.g. CPU sampling). */
export async function runLoad(
  op: Operation,
  options: LoadOptions,
  around?: { before(): void; after(): void },
): Promise<LoadResult> {
  if (options.warmupSeconds > 0) {
    await phase(op, options.inFlight, options.warmupSeconds * 1000, null, options.finish);
  }
  const latencies = new Reservoir();
  around?.before();
  const { ops, elapsedMs } = await phase(
    op,
    options.inFlight,
    options.seconds * 1000,
    latencies,
    options.finish,
  );
  around?.after();
  const sorted = latencies.sorted();
  const seconds = elapsedMs / 1000;
  return {
    ops,
    seconds,
    opsPerSec: ops / seconds,
    mbPerSec: (ops * options.bytesPerOp) / seconds / 1e6,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: latencies.max,
  };
}

/** A small fast PRNG (xorshift32) so runs pick the same offsets for the same seed. */
export function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}
