/**
 * Background scrub, run by a volume's owner while it serves: every in-sync replica of
 * every segment is asked to check the checksums of a range of blocks at a time (the
 * replica host's ranged `scrub`), and each corrupt block found is rewritten from a good
 * copy on another in-sync replica, as a version-guarded repair (it never undoes a newer
 * write). So rot on a replica that no read touches is found and repaired too.
 *
 * Driven by the clock port, one tick at a time: each tick may check up to the blocks the
 * rate allows (a token bucket of blocks, `rateBytesPerSec`), and waits for its checks to
 * answer before the next tick is scheduled, so at most one scrub request per volume is in
 * flight and a slow disk slows the scrub, not the clients. A tick is skipped while the
 * owner is busy with client IO. A pass starts at most once per `intervalMs`.
 */
import type { Clock, Random } from "../ports.ts";
import type { Logger } from "../replica/host.ts";
import { EntryKind, type ReadResult, type WriteEntry } from "../replica/wire.ts";
import { blockSizeBytes } from "../../protocol/limits.ts";
import { callReplica } from "./actor.ts";
import type { ReplicaStream } from "./stream.ts";

/** Time from the start of one scrub pass to the start of the next (a pass every 24 h). */
export const defaultScrubIntervalMs = 24 * 60 * 60 * 1000;
/**
 * Bytes checked per second per volume owner, summed over the replicas (each replica reads
 * what it checks): 8 MiB/s, so a 256 GiB volume with 3 replicas is scrubbed in about 27 h
 * (a pass that outlasts the interval is followed at once by the next).
 */
export const defaultScrubRateBytesPerSec = 8 * 1024 * 1024;
/** How often the scrubber wakes up to spend its budget. */
export const scrubTickMs = 100;
/** Most blocks asked of one replica in one request (1 MiB of 4 KiB blocks). */
export const maxScrubRangeBlocks = 256;
/** Delay from the owner starting to serve to its first pass, at most (capped by the interval). */
export const scrubFirstPassDelayMs = 5 * 60 * 1000;
/** A tick is skipped while the owner has at least this many client requests in flight. */
export const scrubBusyRequests = 64;

/** Per-node scrub settings (`deno task serve --scrub-interval ... --scrub-rate ...`). */
export interface ScrubSettings {
  /** Time between the starts of two passes. */
  intervalMs: number;
  /** Bytes checked per second, summed over replicas; 0 turns the background scrub off. */
  rateBytesPerSec: number;
}

export const defaultScrubSettings: ScrubSettings = {
  intervalMs: defaultScrubIntervalMs,
  rateBytesPerSec: defaultScrubRateBytesPerSec,
};

/** What the scrubber needs from its volume actor. */
export interface ScrubDeps {
  /** The volume's name, for logs. */
  name: string;
  clock: Clock;
  log: Logger;
  /** Where a pass starts (a random segment, so owners that change often still cover all). */
  random?: Random;
  settings?: Partial<ScrubSettings>;
  blocksPerSegment: number;
  segmentCount(): number;
  /** The in-sync replica nodes of a segment, as the layout shows now. */
  inSyncNodes(segment: number): string[];
  /** Asks `node` to check blocks firstBlock.. of a segment; resolves with the corrupt block numbers. */
  check(node: string, segment: number, firstBlock: number, blockCount: number): Promise<number[]>;
  /** Reads blocks of a segment from `node` (each block's version, state and data). */
  read(node: string, segment: number, firstBlock: number, blockCount: number): Promise<ReadResult>;
  /** Sends a repair entry to `node` (applied only where the replica holds nothing newer). */
  repair(node: string, entry: WriteEntry): Promise<void>;
  /** `node` answered that it holds no copy of the segment (its file is missing or unreadable). */
  lost?(node: string, segment: number, why: string): void;
  /** Whether client IO is heavy right now: the tick is skipped. */
  busy?(): boolean;
}

/** The scrubber's counters since it started. */
export interface ScrubStats {
  passesDone: number;
  /** Blocks checked, counted once per replica. */
  blocksChecked: number;
  corruptFound: number;
  repaired: number;
  /** Corrupt blocks with no good copy on any other in-sync replica, or whose repair failed. */
  unrepaired: number;
  checkErrors: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * `check` and `read` over the owner's links to its replica nodes, at its term (the replica
 * refuses a lower one and advances nothing: a scrub is read-only).
 */
export function replicaScrubCalls(
  link: (node: string) => Pick<ReplicaStream, "call" | "read">,
  term: () => number,
): Pick<ScrubDeps, "check" | "read"> {
  return {
    check: async (node, segment, firstBlock, blockCount) => {
      const body = encoder.encode(
        JSON.stringify({ epoch: term(), segment, firstBlock, blockCount }),
      );
      const reply = await callReplica(link(node), "scrub", body);
      return JSON.parse(decoder.decode(reply.subarray(1))).corruptBlocks;
    },
    read: (node, segment, firstBlock, blockCount) =>
      link(node).read({ segment, epoch: term(), firstBlock, blockCount }),
  };
}

/** An error a replica answered with, as far as the scrubber cares: its code. */
function errorCode(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

export class Scrubber {
  readonly stats: ScrubStats = {
    passesDone: 0,
    blocksChecked: 0,
    corruptFound: 0,
    repaired: 0,
    unrepaired: 0,
    checkErrors: 0,
  };
  private readonly intervalMs: number;
  private readonly blocksPerTick: number;
  private cancelTimer: (() => void) | null = null;
  private running = false;
  /** Blocks the rate allows now (fractions carry over, so any rate is met on average). */
  private credit = 0;
  private pass: {
    startedMs: number;
    /** Segments visited so far, and the first one (passes wrap around). */
    visited: number;
    firstSegment: number;
    block: number;
    /** Index into the segment's in-sync nodes for the range at `block`. */
    nodeIndex: number;
    /** Blocks of that range the current node has checked. */
    done: number;
  } | null = null;
  private lastPassStartedMs = 0;

  constructor(private readonly deps: ScrubDeps) {
    const settings = {
      intervalMs: deps.settings?.intervalMs ?? defaultScrubSettings.intervalMs,
      rateBytesPerSec: deps.settings?.rateBytesPerSec ?? defaultScrubSettings.rateBytesPerSec,
    };
    const valid = settings.intervalMs > 0 && settings.rateBytesPerSec >= 0;
    if (!valid) {
      // Never a reason to crash the actor: say so and do not scrub.
      deps.log.error(
        `volume ${deps.name}: scrub off: the interval (${settings.intervalMs} ms) must be ` +
          `positive and the rate (${settings.rateBytesPerSec} B/s) not negative`,
      );
    }
    this.intervalMs = settings.intervalMs;
    this.blocksPerTick = valid ? settings.rateBytesPerSec * scrubTickMs / 1000 / blockSizeBytes : 0;
  }

  /** Whether a pass is under way. */
  get passing(): boolean {
    return this.pass !== null;
  }

  /** Schedules the first pass (at once idempotent); a rate of 0 never scrubs. */
  start(): void {
    if (this.running || this.blocksPerTick === 0) return;
    this.running = true;
    this.schedule(Math.min(this.intervalMs, scrubFirstPassDelayMs), () => this.beginPass());
  }

  /** Stops for good; a check in flight finishes, nothing more is sent. */
  stop(): void {
    this.running = false;
    this.cancelTimer?.();
    this.cancelTimer = null;
  }

  private schedule(delayMs: number, fn: () => void): void {
    this.cancelTimer?.();
    this.cancelTimer = this.deps.clock.setTimer(delayMs, () => {
      this.cancelTimer = null;
      if (this.running) fn();
    });
  }

  private beginPass(): void {
    const count = this.deps.segmentCount();
    const firstSegment = this.deps.random ? Math.floor(this.deps.random.next() * count) : 0;
    this.pass = {
      startedMs: this.deps.clock.nowMs(),
      visited: 0,
      firstSegment: Math.min(firstSegment, Math.max(0, count - 1)),
      block: 0,
      nodeIndex: 0,
      done: 0,
    };
    this.credit = 0;
    this.deps.log.info(`volume ${this.deps.name}: scrub pass ${this.stats.passesDone + 1} begins`);
    this.schedule(0, () => this.tick());
  }

  private tick(): void {
    if (this.deps.busy?.()) {
      this.schedule(scrubTickMs, () => this.tick());
      return;
    }
    // No bursts after a pause: at most one tick's worth (or one block) is kept.
    this.credit = Math.min(this.credit + this.blocksPerTick, Math.max(this.blocksPerTick, 1));
    this.spend()
      .catch((err) =>
        this.deps.log.warn(`volume ${this.deps.name}: scrub: ${(err as Error).message}`)
      )
      .finally(() => {
        if (!this.running) return;
        if (this.pass) this.schedule(scrubTickMs, () => this.tick());
        else this.schedule(this.untilNextPassMs(), () => this.beginPass());
      });
  }

  private untilNextPassMs(): number {
    return Math.max(0, this.lastPassStartedMs + this.intervalMs - this.deps.clock.nowMs());
  }

  /**
   * Checks ranges while the credit lasts; ends the pass after the last segment. A range
   * (up to maxScrubRangeBlocks) is checked on each in-sync node in turn, in pieces as the
   * credit allows, before the next range.
   */
  private async spend(): Promise<void> {
    const pass = this.pass!;
    const { blocksPerSegment } = this.deps;
    while (this.running && this.credit >= 1) {
      const count = this.deps.segmentCount();
      if (pass.visited >= count) {
        this.finishPass();
        return;
      }
      const segment = (pass.firstSegment + pass.visited) % count;
      const nodes = this.deps.inSyncNodes(segment);
      const rangeEnd = Math.min(pass.block + maxScrubRangeBlocks, blocksPerSegment);
      if (pass.nodeIndex >= nodes.length) {
        pass.nodeIndex = 0;
        pass.done = 0;
        pass.block = rangeEnd;
        if (pass.block >= blocksPerSegment) {
          pass.block = 0;
          pass.visited++;
        }
        continue;
      }
      const firstBlock = pass.block + pass.done;
      const blockCount = Math.min(Math.floor(this.credit), rangeEnd - firstBlock);
      this.credit -= blockCount;
      await this.checkRange(nodes[pass.nodeIndex], segment, firstBlock, blockCount, nodes);
      pass.done += blockCount;
      if (firstBlock + blockCount >= rangeEnd) {
        pass.done = 0;
        pass.nodeIndex++;
      }
    }
  }

  private finishPass(): void {
    const pass = this.pass!;
    this.pass = null;
    this.lastPassStartedMs = pass.startedMs;
    this.stats.passesDone++;
    const s = this.stats;
    this.deps.log.info(
      `volume ${this.deps.name}: scrub pass ${s.passesDone} done in ${
        Math.round((this.deps.clock.nowMs() - pass.startedMs) / 1000)
      } s (totals: ${s.blocksChecked} blocks checked, ${s.corruptFound} corrupt found, ` +
        `${s.repaired} repaired, ${s.unrepaired} not repaired)`,
    );
  }

  /** Checks one range on one node and repairs what it finds from the other in-sync nodes. */
  private async checkRange(
    node: string,
    segment: number,
    firstBlock: number,
    blockCount: number,
    inSync: string[],
  ): Promise<void> {
    const { name, log } = this.deps;
    let corrupt: number[];
    try {
      corrupt = await this.deps.check(node, segment, firstBlock, blockCount);
    } catch (err) {
      this.stats.checkErrors++;
      const why = (err as Error).message;
      if (errorCode(err) === "NO_SUCH_VOLUME") {
        log.error(`volume ${name}: scrub found no copy of segment ${segment} on ${node}: ${why}`);
        this.deps.lost?.(node, segment, why);
      } else if (errorCode(err) === "STALE_EPOCH") {
        // A newer owner exists; the actor learns it from its own calls and stops this.
        log.warn(`volume ${name}: scrub refused by ${node} (${why}); stopping the scrub`);
        this.stop();
      } else {
        log.warn(`volume ${name}: scrub of segment ${segment} on ${node} failed: ${why}`);
      }
      return;
    } finally {
      this.stats.blocksChecked += blockCount;
    }
    if (corrupt.length === 0) return;
    this.stats.corruptFound += corrupt.length;
    log.error(
      `volume ${name}: scrub found ${corrupt.length} corrupt blocks of segment ${segment} on ${node}`,
    );
    let repaired = 0;
    for (const block of corrupt) {
      if (await this.repairBlock(node, segment, block, inSync)) repaired++;
      else this.stats.unrepaired++;
    }
    this.stats.repaired += repaired;
    if (repaired) {
      log.warn(
        `volume ${name}: scrub repaired ${repaired} blocks of segment ${segment} on ${node}`,
      );
    }
  }

  /** One rotten block, from the first other in-sync node whose copy passes its checksum. */
  private async repairBlock(
    node: string,
    segment: number,
    block: number,
    inSync: string[],
  ): Promise<boolean> {
    const { name, log } = this.deps;
    for (const source of inSync) {
      if (source === node) continue;
      let good: ReadResult;
      try {
        good = await this.deps.read(source, segment, block, 1);
      } catch {
        continue;
      }
      if (good.states[0] === "corrupt") continue;
      try {
        await this.deps.repair(node, {
          segment,
          firstBlock: block,
          blockCount: 1,
          kind: EntryKind.repair,
          version: good.versions[0],
          data: good.data.subarray(0, blockSizeBytes),
        });
        return true;
      } catch (err) {
        log.error(
          `volume ${name}: scrub repair of block ${block} of segment ${segment} on ${node} ` +
            `failed: ${(err as Error).message}`,
        );
        return false;
      }
    }
    log.error(
      `volume ${name}: block ${block} of segment ${segment} is corrupt on ${node} and no other ` +
        `in-sync replica has a good copy`,
    );
    return false;
  }
}
