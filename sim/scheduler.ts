/**
 * The deterministic simulation scheduler: virtual time, one seeded PRNG, and a
 * queue of events ordered by (time, insertion sequence).
 *
 * Simulated code (every node's actors) reaches time, randomness and the network
 * only through ports built here (clockFor, randomFor, and SimNetwork). The run
 * loop pops the earliest event, sets virtual time to it, runs it synchronously,
 * then drains every microtask by awaiting one macrotask (setImmediate). Since
 * simulated code only ever awaits promises settled by those ports, or by events
 * of this queue, everything runs in one fixed order: the same seed replays the
 * same run.
 *
 * Processes: each event may be owned by a simulated process (a node id).
 * pause(owner) holds its events until resume(owner); kill(owner) drops them and
 * bumps the owner's generation, so timers set later through a clock of the dead
 * incarnation are ignored; revive(owner) starts the next incarnation.
 */
import { setImmediate } from "node:timers";
import { mulberry32 } from "../actors/seeded_random.ts";
import type { Clock, Random, WallClock } from "../actors/ports.ts";

/** Epoch added to virtual time for wallMs(): 2023-11-14T22:13:20Z. */
export const simWallEpochMs = 1_700_000_000_000;

export interface SimSchedulerOptions {
  seed: number;
  /** How many trace entries the ring buffer keeps; default 5,000. */
  traceCapacity?: number;
  /** A run stops with an error when more events than this run at one virtual instant; default 100,000. */
  maxEventsPerInstant?: number;
}

export interface ScheduleOptions {
  /** The owner's incarnation the event belongs to; default the current one. Stale → dropped. */
  generation?: number;
  /** Called (instead of fn) when the event is dropped by kill() or as stale. */
  onDrop?: () => void;
}

export interface TraceEntry {
  timeMs: number;
  owner: string | undefined;
  kind: string;
  detail: string;
}

export type TraceFilter =
  | ((entry: TraceEntry) => boolean)
  | { kind?: string | string[]; owner?: string; sinceMs?: number; last?: number };

export interface SimError {
  timeMs: number;
  owner: string | undefined;
  error: unknown;
}

/** Thrown by runFor/runUntil when too many events run at one virtual instant. */
export class SimLivelockError extends Error {
  override name = "SimLivelockError";
}

interface SimEvent {
  time: number;
  seq: number;
  fn: () => void;
  owner: string | undefined;
  generation: number;
  onDrop: (() => void) | undefined;
  /** Cancelled or dropped: skipped when popped. */
  dead: boolean;
}

interface ClockAnchor {
  virtualMs: number;
  localMs: number;
  rate: number;
}

/** fmix32 from MurmurHash3: spreads nearby inputs over all 32 bits. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a over UTF-16 code units, then fmix32. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq);
}

/** A binary min-heap of events by (time, seq). */
class EventHeap {
  items: SimEvent[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): SimEvent | undefined {
    return this.items[0];
  }

  push(e: SimEvent): void {
    const a = this.items;
    let i = a.length;
    a.push(e);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(e, a[parent])) break;
      a[i] = a[parent];
      i = parent;
    }
    a[i] = e;
  }

  pop(): SimEvent | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      let i = 0;
      const n = a.length;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && before(a[r], a[l]) ? r : l;
        if (!before(a[c], last)) break;
        a[i] = a[c];
        i = c;
      }
      a[i] = last;
    }
    return top;
  }

  /** Removes every event for which drop() is true (O(n), for rare kills). */
  removeWhere(drop: (e: SimEvent) => boolean): SimEvent[] {
    const removed: SimEvent[] = [];
    const kept: SimEvent[] = [];
    for (const e of this.items) (drop(e) ? removed : kept).push(e);
    if (removed.length > 0) {
      this.items = [];
      for (const e of kept.sort((x, y) => (before(x, y) ? -1 : 1))) this.items.push(e);
    }
    return removed;
  }
}

const drainMacrotask = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class SimScheduler {
  readonly seed: number;
  /** Virtual time in milliseconds; starts at 0. */
  nowMs = 0;
  /** Events run so far (dropped or cancelled ones not counted). */
  eventsRun = 0;
  /** Errors thrown synchronously by event functions (and rejections of spawn()ed tasks). */
  readonly errors: SimError[] = [];
  /** How many trace() calls there were per kind (not bounded by the ring buffer). */
  readonly traceCounts = new Map<string, number>();
  readonly maxEventsPerInstant: number;

  #next: () => number;
  #heap = new EventHeap();
  #seq = 0;
  #live = 0;
  #running = false;
  #instantMs = -1;
  #eventsAtInstant = 0;
  #paused = new Set<string>();
  #held = new Map<string, SimEvent[]>();
  #dead = new Set<string>();
  #generations = new Map<string, number>();
  #anchors = new Map<string, ClockAnchor>();
  #streams = new Map<string, number>();
  #trace: TraceEntry[] = [];
  #traceHead = 0;
  readonly #traceCapacity: number;

  constructor(options: SimSchedulerOptions) {
    this.seed = options.seed >>> 0;
    this.#next = mulberry32(fmix32(this.seed ^ 0x5eed5eed));
    this.#traceCapacity = options.traceCapacity ?? 5000;
    this.maxEventsPerInstant = options.maxEventsPerInstant ?? 100_000;
  }

  // ---- randomness ----

  /** A float in [0, 1) from the scheduler's own stream. */
  random(): number {
    return this.#next();
  }

  /** An integer in [lo, hiInclusive]. */
  int(lo: number, hiInclusive: number): number {
    return lo + Math.floor(this.#next() * (hiInclusive - lo + 1));
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.#next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty array");
    return items[Math.floor(this.#next() * items.length)];
  }

  /**
   * A Random port with its own stream, derived from the seed, the owner's name
   * and how many streams this owner asked for before: adding a node or an
   * actor does not shift anybody else's numbers.
   */
  randomFor(owner: string): Random {
    const n = this.#streams.get(owner) ?? 0;
    this.#streams.set(owner, n + 1);
    const seed = fmix32(hashString(owner) ^ Math.imul(this.seed, 0x9e3779b1) ^ fmix32(n + 1));
    return { next: mulberry32(seed) };
  }

  // ---- events ----

  /** Number of events waiting (held ones of paused owners included). */
  get pendingEvents(): number {
    return this.#live;
  }

  /**
   * Runs fn after delayMs of virtual time (0 = this instant, after the events
   * already due). owner tags it as part of a simulated process. Returns cancel.
   */
  schedule(delayMs: number, fn: () => void, owner?: string, options?: ScheduleOptions): () => void {
    const generation = options?.generation ?? (owner === undefined ? 0 : this.generation(owner));
    if (owner !== undefined && (generation !== this.generation(owner) || this.#dead.has(owner))) {
      options?.onDrop?.();
      return () => {};
    }
    const delay = delayMs > 0 ? delayMs : 0; // NaN and negatives → now
    const e: SimEvent = {
      time: this.nowMs + delay,
      seq: this.#seq++,
      fn,
      owner,
      generation,
      onDrop: options?.onDrop,
      dead: false,
    };
    this.#heap.push(e);
    this.#live++;
    return () => {
      if (e.dead) return;
      e.dead = true;
      this.#live--;
    };
  }

  /**
   * Runs fn (async) as an event of owner; a rejection is recorded in errors
   * instead of surfacing as an unhandled rejection.
   */
  spawn(fn: () => Promise<unknown> | unknown, owner?: string, delayMs = 0): () => void {
    return this.schedule(delayMs, () => {
      const result = fn();
      if (result instanceof Promise) {
        result.catch((error) => this.#recordError(owner, error));
      }
    }, owner);
  }

  /**
   * Hands a promise's outcome to owner: the returned promise settles inside an
   * event of owner (delayMs after p settles), and never if owner's incarnation
   * dies first. For shared in-memory services that simulated nodes reach
   * without the network: without a handoff, one node's continuation would run
   * inside another node's event.
   */
  handoff<T>(owner: string, p: Promise<T>, delayMs = 0): Promise<T> {
    const generation = this.generation(owner);
    return new Promise<T>((resolve, reject) => {
      p.then(
        (value) => this.schedule(delayMs, () => resolve(value), owner, { generation }),
        (error) => this.schedule(delayMs, () => reject(error), owner, { generation }),
      );
    });
  }

  // ---- processes ----

  /** The owner's incarnation number (0 until first killed). */
  generation(owner: string): number {
    return this.#generations.get(owner) ?? 0;
  }

  isPaused(owner: string): boolean {
    return this.#paused.has(owner);
  }

  isAlive(owner: string): boolean {
    return !this.#dead.has(owner);
  }

  /** Holds owner's events (as SIGSTOP would) until resume(owner). */
  pause(owner: string): void {
    if (this.#paused.has(owner)) return;
    this.#paused.add(owner);
    this.trace("proc", "pause", owner);
  }

  /** Releases owner's held events: they run now, in their original order. */
  resume(owner: string): void {
    if (!this.#paused.delete(owner)) return;
    const held = this.#held.get(owner) ?? [];
    this.#held.delete(owner);
    for (const e of held) {
      if (e.dead) continue;
      e.time = this.nowMs;
      e.seq = this.#seq++;
      this.#heap.push(e);
    }
    this.trace("proc", `resume (${held.length} held)`, owner);
  }

  /** Drops owner's pending events and ends its incarnation; stale timers are ignored. */
  kill(owner: string): void {
    const dropped = this.#heap.removeWhere((e) => e.owner === owner && !e.dead);
    dropped.push(...(this.#held.get(owner) ?? []).filter((e) => !e.dead));
    this.#held.delete(owner);
    this.#paused.delete(owner);
    this.#dead.add(owner);
    this.#generations.set(owner, this.generation(owner) + 1);
    for (const e of dropped) this.#drop(e);
    this.trace("proc", `kill (${dropped.length} events dropped)`, owner);
  }

  /** Starts owner's next incarnation (take fresh ports from clockFor/randomFor). */
  revive(owner: string): void {
    if (!this.#dead.delete(owner)) return;
    this.trace("proc", `revive as generation ${this.generation(owner)}`, owner);
  }

  // ---- clocks ----

  /** Makes owner's clock run at rate × virtual time from now on (continuous). */
  setClockRate(owner: string, rate: number): void {
    if (!(rate > 0)) throw new Error(`clock rate must be positive, got ${rate}`);
    this.#anchors.set(owner, { virtualMs: this.nowMs, localMs: this.localNowMs(owner), rate });
  }

  /** owner's clock reading (virtual time, skewed by its rate). */
  localNowMs(owner: string): number {
    const a = this.#anchors.get(owner);
    return a === undefined ? this.nowMs : a.localMs + (this.nowMs - a.virtualMs) * a.rate;
  }

  /**
   * The Clock and WallClock ports of owner's current incarnation: setTimer
   * events belong to owner; after kill(owner) this clock's timers are ignored.
   */
  clockFor(owner: string): Clock & WallClock {
    const generation = this.generation(owner);
    return {
      nowMs: () => this.localNowMs(owner),
      wallMs: () => simWallEpochMs + this.localNowMs(owner),
      setTimer: (delayMs, fn) => {
        const rate = this.#anchors.get(owner)?.rate ?? 1;
        return this.schedule(delayMs / rate, fn, owner, { generation });
      },
    };
  }

  /** A Clock for harness code that belongs to no process. */
  get clock(): Clock & WallClock {
    return {
      nowMs: () => this.nowMs,
      wallMs: () => simWallEpochMs + this.nowMs,
      setTimer: (delayMs, fn) => this.schedule(delayMs, fn),
    };
  }

  // ---- run loop ----

  /** Runs every event due within durationMs, then sets virtual time to the end. */
  async runFor(durationMs: number): Promise<void> {
    const end = this.nowMs + Math.max(0, durationMs);
    await this.#run(end, undefined);
    this.nowMs = Math.max(this.nowMs, end);
  }

  /**
   * Runs events until predicate() holds (checked before the first event and
   * after each), or maxMs of virtual time pass. Returns whether it held.
   */
  async runUntil(predicate: () => boolean, maxMs: number): Promise<boolean> {
    const end = this.nowMs + Math.max(0, maxMs);
    if (await this.#run(end, predicate)) return true;
    this.nowMs = Math.max(this.nowMs, end);
    return predicate();
  }

  /** Runs events until `promise` settles (or maxMs of virtual time pass), then returns it. */
  async drive<T>(promise: Promise<T>, maxMs = 60_000): Promise<T> {
    let settled = false;
    promise.then(() => (settled = true), () => (settled = true));
    await this.runUntil(() => settled, maxMs);
    return await promise;
  }

  async #run(endMs: number, predicate: (() => boolean) | undefined): Promise<boolean> {
    if (this.#running) throw new Error("SimScheduler: runFor/runUntil called while running");
    this.#running = true;
    try {
      await drainMacrotask();
      if (predicate?.()) return true;
      for (;;) {
        const e = this.#popDue(endMs);
        if (e === undefined) return false;
        this.nowMs = e.time;
        if (e.time !== this.#instantMs) {
          this.#instantMs = e.time;
          this.#eventsAtInstant = 0;
        }
        if (++this.#eventsAtInstant > this.maxEventsPerInstant) {
          throw new SimLivelockError(
            `more than ${this.maxEventsPerInstant} events at virtual time ${e.time} ms` +
              ` (last owner ${e.owner ?? "-"})`,
          );
        }
        this.eventsRun++;
        try {
          e.fn();
        } catch (error) {
          this.#recordError(e.owner, error);
        }
        await drainMacrotask();
        if (predicate?.()) return true;
      }
    } finally {
      this.#running = false;
    }
  }

  /** The next runnable event due by endMs; held, stale and cancelled ones are set aside. */
  #popDue(endMs: number): SimEvent | undefined {
    for (;;) {
      const top = this.#heap.peek();
      if (top === undefined || top.time > endMs) return undefined;
      this.#heap.pop();
      if (top.dead) continue;
      const owner = top.owner;
      if (owner !== undefined) {
        if (top.generation !== this.generation(owner) || this.#dead.has(owner)) {
          this.#drop(top);
          continue;
        }
        if (this.#paused.has(owner)) {
          let held = this.#held.get(owner);
          if (!held) this.#held.set(owner, held = []);
          held.push(top);
          continue;
        }
      }
      top.dead = true;
      this.#live--;
      return top;
    }
  }

  #drop(e: SimEvent): void {
    if (e.dead) return;
    e.dead = true;
    this.#live--;
    e.onDrop?.();
  }

  #recordError(owner: string | undefined, error: unknown): void {
    this.errors.push({ timeMs: this.nowMs, owner, error });
    this.trace("error", error instanceof Error ? error.message : String(error), owner);
  }

  // ---- trace ----

  /** Appends to the bounded trace (ring buffer) and counts the kind. */
  trace(kind: string, detail: string, owner?: string): void {
    this.traceCounts.set(kind, (this.traceCounts.get(kind) ?? 0) + 1);
    const entry: TraceEntry = { timeMs: this.nowMs, owner, kind, detail };
    if (this.#trace.length < this.#traceCapacity) {
      this.#trace.push(entry);
    } else if (this.#traceCapacity > 0) {
      this.#trace[this.#traceHead] = entry;
      this.#traceHead = (this.#traceHead + 1) % this.#traceCapacity;
    }
  }

  /** The kept trace entries, oldest first. */
  traceEntries(): TraceEntry[] {
    return [...this.#trace.slice(this.#traceHead), ...this.#trace.slice(0, this.#traceHead)];
  }

  /** The kept trace as text, one line per entry: "  12.345 n1 kind detail". */
  formatTrace(filter?: TraceFilter): string {
    let entries = this.traceEntries();
    let last: number | undefined;
    if (typeof filter === "function") {
      entries = entries.filter(filter);
    } else if (filter) {
      const kinds = filter.kind === undefined
        ? undefined
        : new Set(Array.isArray(filter.kind) ? filter.kind : [filter.kind]);
      entries = entries.filter((e) =>
        (kinds === undefined || kinds.has(e.kind)) &&
        (filter.owner === undefined || e.owner === filter.owner) &&
        (filter.sinceMs === undefined || e.timeMs >= filter.sinceMs)
      );
      last = filter.last;
    }
    if (last !== undefined) entries = entries.slice(-last);
    return entries
      .map((e) => `${e.timeMs.toFixed(3).padStart(12)} ${e.owner ?? "-"} ${e.kind} ${e.detail}`)
      .join("\n");
  }
}
