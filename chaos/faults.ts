/**
 * The nemesis: injects one fault at a time into a LocalCluster and undoes it.
 *
 * Safety rule: **one fault at a time, never overlapping.** At most one process of the whole
 * cluster (one node or one nats-server) is down or paused at any moment, and the next fault
 * starts only after the previous one was undone (the node restarted and serving, resumed, or
 * the nats-server back with its routes) and then the cluster settled: every volume has an owner
 * and every replica is in sync again, or `settleMaxMs` passed. With 3 replicas and minInSync 2
 * a volume keeps a quorum of in-sync copies through any single node fault, and the settle wait
 * keeps a second fault from landing on a replica that is still catching up from the first.
 * (Data on disk survives kill -9, so even two faults could only cost availability, never data;
 * the rule keeps unavailability a finding rather than an expected effect.)
 *
 * Faults: kill -9 of a node, later restarted; SIGSTOP of a node, later SIGCONT; a clean restart
 * (SIGTERM, start again at once); kill -9 of a nats-server, later restarted (with 3 servers;
 * with one it is a full NATS outage). Half of the node faults hit the owner of some volume.
 */
import * as fs from "node:fs";
import type { LocalCluster } from "../server/local_cluster.ts";
import type { CairnClient } from "../client/client.ts";

export type FaultKind = "kill" | "pause" | "restart" | "kill-nats";

export const allFaultKinds: readonly FaultKind[] = ["kill", "pause", "restart", "kill-nats"];

export interface FaultRecord {
  kind: FaultKind;
  /** Node id or "nats-<i>". */
  target: string;
  /** Whether the node owned a volume when hit. */
  owner: boolean;
  /** ms since the run started */
  startMs: number;
  /** When it was undone (restarted, resumed); NaN if never. */
  healedMs: number;
  /** How long after the heal the cluster settled (owners, replicas in sync); NaN if it did not. */
  settledMs: number;
  /** The run ended before the settle wait (the final settle wait covers it). */
  endedRun?: boolean;
  /** What went wrong undoing it, if anything (a node that would not start). */
  error?: string;
}

/** A node process that exited when no fault of the nemesis had stopped it. */
export interface CrashRecord {
  node: string;
  /** ms since the run started, when the watcher saw it gone (polled every 250 ms) */
  atMs: number;
  exitCode: number | null;
  signal: string | null;
  /** The node's last log lines. */
  logTail: string[];
  /** Whether the watcher started it again. */
  restarted: boolean;
}

export interface NemesisOptions {
  kinds: readonly FaultKind[];
  /** Time between the end of one fault (settled) and the next, ms: [min, max]. */
  gapMs: [number, number];
  /** How long a killed process stays down, ms. */
  downMs: [number, number];
  /** How long a paused node stays paused, ms. */
  pauseMs: [number, number];
  /** Longest wait for the cluster to settle after a fault. */
  settleMaxMs: number;
  random: () => number;
  now: () => number;
  log: (line: string) => void;
}

type Health = { owners: Set<string>; settled: boolean };

export class Nemesis {
  readonly faults: FaultRecord[] = [];
  readonly crashes: CrashRecord[] = [];
  /** The node the fault in progress has stopped (killed, paused or restarting), if any. */
  private faulted: string | null = null;
  private watcher: ReturnType<typeof setInterval> | undefined;
  private restarting = new Set<number>();
  private stopping = false;
  private wake: (() => void) | null = null;
  /** Undo of the fault in progress, so heal() can run it at once. */
  private undo: (() => Promise<void>) | null = null;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly cluster: LocalCluster,
    private readonly control: CairnClient,
    private readonly volumes: readonly string[],
    private readonly options: NemesisOptions,
  ) {}

  start(): void {
    this.loop = this.run();
    this.watcher = setInterval(() => this.watchNodes(), 250);
  }

  /** Stops injecting, undoes the fault in progress, and waits for the loop to end. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
    clearInterval(this.watcher);
    while (this.restarting.size > 0) await new Promise((r) => setTimeout(r, 100));
  }

  /**
   * Notices node processes that exited with no fault of ours on them (a crash): records the
   * exit and the last log lines, and starts the node again so the run goes on.
   */
  private watchNodes(): void {
    for (const [i, node] of this.cluster.nodes.entries()) {
      const child = node.child;
      if (!child || this.restarting.has(i) || node.id === this.faulted) continue;
      if (child.exitCode === null && child.signalCode === null) continue;
      const record: CrashRecord = {
        node: node.id,
        atMs: this.options.now(),
        exitCode: child.exitCode,
        signal: child.signalCode,
        logTail: logTail(node.logFile, 8),
        restarted: false,
      };
      this.crashes.push(record);
      this.options.log(
        `!!! ${node.id} EXITED ON ITS OWN (code ${record.exitCode}, signal ${record.signal}); last log lines:\n` +
          record.logTail.map((l) => `      ${l}`).join("\n"),
      );
      this.restarting.add(i);
      this.cluster.startNode(i).then(
        () => {
          record.restarted = true;
          this.options.log(`nemesis: ${node.id} started again after it exited`);
        },
        (err) => this.options.log(`nemesis: starting ${node.id} again failed: ${err.message}`),
      ).finally(() => this.restarting.delete(i));
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
    });
  }

  private between([lo, hi]: [number, number]): number {
    return Math.round(lo + this.options.random() * (hi - lo));
  }

  private async run(): Promise<void> {
    const { kinds, log } = this.options;
    while (!this.stopping) {
      await this.sleep(this.between(this.options.gapMs));
      if (this.stopping || kinds.length === 0) break;
      const kind = kinds[Math.floor(this.options.random() * kinds.length)];
      const record = await this.inject(kind).catch((err) => {
        this.faulted = null;
        log(`nemesis: ${kind} could not be injected: ${(err as Error).message}`);
        return null;
      });
      if (!record) continue;
      this.faults.push(record);
      try {
        await this.sleep(
          this.between(kind === "pause" ? this.options.pauseMs : this.options.downMs),
        );
      } finally {
        await this.heal(record);
      }
      if (this.stopping) record.endedRun = true;
      else if (!Number.isNaN(record.healedMs)) {
        const settledAt = await this.waitSettled(this.options.settleMaxMs);
        record.settledMs = settledAt === null ? NaN : settledAt - record.healedMs;
        log(
          `nemesis: ${record.kind} ${record.target} ${
            settledAt === null
              ? `healed; NOT settled within ${this.options.settleMaxMs} ms`
              : `healed; settled in ${Math.round(record.settledMs)} ms`
          }`,
        );
      }
    }
  }

  private async pickNode(): Promise<{ index: number; owner: boolean }> {
    const n = this.cluster.nodes.length;
    const { owners } = await this.health(1500);
    if (owners.size > 0 && this.options.random() < 0.5) {
      const list = [...owners];
      const id = list[Math.floor(this.options.random() * list.length)];
      const index = this.cluster.nodes.findIndex((node) => node.id === id);
      if (index >= 0) return { index, owner: true };
    }
    const index = Math.floor(this.options.random() * n);
    return { index, owner: owners.has(this.cluster.nodes[index].id) };
  }

  private async inject(kind: FaultKind): Promise<FaultRecord | null> {
    const { now, log } = this.options;
    if (kind === "kill-nats") {
      const i = Math.floor(this.options.random() * this.cluster.natsCount);
      const record = this.record(kind, `nats-${i + 1}`, false);
      log(`nemesis: kill -9 nats-server ${i + 1} of ${this.cluster.natsCount}`);
      await this.cluster.killNats(i);
      this.undo = () => this.cluster.startNats(i);
      return record;
    }
    const { index, owner } = await this.pickNode();
    if (this.restarting.has(index)) return null;
    const id = this.cluster.nodes[index].id;
    const record = this.record(kind, id, owner);
    this.faulted = id;
    record.startMs = now();
    const role = owner ? " (an owner)" : "";
    if (kind === "kill") {
      log(`nemesis: kill -9 ${id}${role}`);
      await this.cluster.killNode(index);
      this.undo = () => this.cluster.startNode(index);
    } else if (kind === "pause") {
      log(`nemesis: SIGSTOP ${id}${role}`);
      this.cluster.pauseNode(index);
      this.undo = () => Promise.resolve(this.cluster.resumeNode(index));
    } else {
      log(`nemesis: restart ${id}${role} (SIGTERM, start again)`);
      await this.cluster.signalNode(index, "SIGTERM");
      this.undo = () => this.cluster.startNode(index);
    }
    return record;
  }

  private record(kind: FaultKind, target: string, owner: boolean): FaultRecord {
    return { kind, target, owner, startMs: this.options.now(), healedMs: NaN, settledMs: NaN };
  }

  private async heal(record: FaultRecord): Promise<void> {
    const undo = this.undo;
    this.undo = null;
    if (!undo) return;
    try {
      await undo();
      record.healedMs = this.options.now();
      this.faulted = null;
    } catch (err) {
      record.error = (err as Error).message.split("\n")[0];
      this.options.log(`nemesis: undoing ${record.kind} ${record.target} FAILED: ${record.error}`);
    }
  }

  /** Owners of the volumes, and whether every volume has an owner and all replicas in sync. */
  async health(timeoutMs: number): Promise<Health> {
    const owners = new Set<string>();
    let settled = true;
    await Promise.all(this.volumes.map(async (name) => {
      try {
        const info = await withTimeout(this.control.volumeInfo(name), timeoutMs);
        if (info.owner) owners.add(info.owner);
        else settled = false;
        for (const segment of info.segments) {
          if (segment.replicas.some((r) => r.state !== "in-sync")) settled = false;
        }
      } catch {
        settled = false;
      }
    }));
    return { owners, settled };
  }

  /** Waits until health() says settled; the time it did, or null after maxMs. */
  async waitSettled(maxMs: number): Promise<number | null> {
    const deadline = this.options.now() + maxMs;
    for (;;) {
      if ((await this.health(2000)).settled) return this.options.now();
      if (this.options.now() > deadline) return null;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

function logTail(file: string, lines: number): string[] {
  try {
    const text = fs.readFileSync(file, "utf8");
    return text.trimEnd().split("\n").slice(-lines).map((l) => l.slice(0, 300));
  } catch {
    return [];
  }
}

export function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
