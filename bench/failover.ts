/**
 * `deno task bench:failover [--kills N] [--quick] [--json FILE] [--serve-arg ARG]...`
 *
 * Failover figures of issue 8, measured with real processes: a local cluster (one
 * nats-server, 3 nodes; a 4th joins for the last figure) in a temp dir on free ports, a
 * 3-replica volume, and a write load from this process (16 writers, each one 4 KiB write
 * at a random block at a time, through the client library).
 *
 * 1. Owner kill -9 under load → the first write acknowledged after the kill. Exactly: the
 *    earliest acknowledgement of a write *issued after* the SIGKILL was sent (the writers go
 *    on issuing writes whenever one completes, and one more write is issued as soon as the
 *    killed process has exited), minus the time the SIGKILL was sent. A write in flight at
 *    the kill does not count even when it completes after it: its reply may have been on its
 *    way from the dead owner. Median and worst over N kills; then the node restarts and the
 *    volume is back in sync (every replica in-sync) before the next round.
 * 2. Catch-up after a replica node (not the owner) was away 10 s under writes: blocks the
 *    owner copied (its `caught up (... n blocks copied)` log line) against the distinct
 *    blocks written while the node was away. The load stops when the node restarts, so
 *    nothing written during the catch-up is counted on either side.
 * 3. Replica node (not the owner) kill -9 under load → the longest write stall: the longest
 *    time with no write completing, in the window from the kill to 5 s after it (the kill
 *    and the window's end count as edges). Median and worst over N kills.
 * 4. Rebuild throughput of a replacement replica (a node down past a grace period has its
 *    replicas rebuilt elsewhere) next to `cairn import` throughput on the same cluster. Until
 *    the nodes can replace a replica, the rebuild part says "not measured".
 *
 * Every process it starts is stopped by pid at the end, also on failure or Ctrl-C.
 */
import * as fs from "node:fs";
import { LocalCluster } from "../server/local_cluster.ts";
import type { CairnClient } from "../client/client.ts";
import type { Volume } from "../client/volume.ts";
import type { VolumeInfo } from "../protocol/schemas.ts";
import { CpuSampler, hostCpuName, type MachineInfo, machineInfo, othersCpuName } from "./proc.ts";
import { xorshift } from "./load.ts";
import { dash, markdownTable } from "./table.ts";
import { eachFlag } from "./flags.ts";

/** Issue 8: a replacement replica is rebuilt at this rate or faster (MB/s). */
const rebuildTargetMBps = 100;
const usage =
  `usage: deno task bench:failover [--kills N] [--quick] [--json FILE] [--serve-arg ARG]...
  --kills N        owner kills (figure 1) and replica kills (figure 3); default 10 (1 with --quick)
  --quick          fewer and shorter rounds, a smoke check (under 2 minutes)
  --json FILE      also write every round's numbers as JSON to FILE
  --serve-arg ARG  pass ARG to every node's serve (repeatable; e.g. a replacement grace period)
  --rebuild-timeout S  how long figure 4 waits for a replacement replica (default 300, 120 with --quick)
  --only LIST      run only these figures, e.g. 1,3 (default 1,2,3,4)
  --keep           keep the cluster's temp dir (node logs, data) and print its path`;

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const blockBytes = 4 * KiB;

const volumeName = "failover";
const volumeBytes = 1 * GiB;
const importVolumeName = "imported";
const writers = 16;
/** Distinct random payloads the writers cycle through. */
const payloadCount = 256;
/** Window after a replica kill in which figure 3 looks for the longest stall. */
const stallWindowMs = 5_000;
/** Figure 1's window: at least this long after the kill, and 2 s past the first ack. */
const ownerWindowMs = 5_000;
const afterFirstAckMs = 2_000;
/** How long a round waits for the first write acknowledged after an owner kill. */
const firstAckTimeoutMs = 60_000;
/** How long the volume may take to be in sync again after a restart. */
const inSyncTimeoutMs = 120_000;
/** Writes run this long between rounds once the volume is in sync. */
const settleMs = 1_000;

const medianTargetMs = 2_000;
const stallTargetMs = 1_000;
const catchUpTargetRatio = 1.1;

interface Settings {
  kills: number;
  quick: boolean;
  jsonFile: string | null;
  serveArgs: string[];
  awaySeconds: number;
  importBytes: number;
  rebuildTimeoutMs: number;
  /** Figures to run (1-4). */
  only: Set<number>;
  /** Keep the cluster's temp dir (logs, data) and print where it is. */
  keep: boolean;
}

function parseSettings(args: string[]): Settings | null {
  let kills: number | null = null;
  let quick = false;
  let jsonFile: string | null = null;
  let rebuildTimeoutMs: number | null = null;
  let only = new Set([1, 2, 3, 4]);
  let keep = false;
  const serveArgs: string[] = [];
  const wantsRun = eachFlag(args, (flag, value) => {
    switch (flag) {
      case "--kills": {
        kills = Number(value());
        if (!Number.isInteger(kills) || kills < 1 || kills > 1000) {
          throw new Error("--kills must be an integer in [1, 1000]");
        }
        break;
      }
      case "--quick":
        quick = true;
        break;
      case "--json":
        jsonFile = value();
        break;
      case "--serve-arg":
        serveArgs.push(value());
        break;
      case "--rebuild-timeout": {
        const seconds = Number(value());
        if (!Number.isFinite(seconds) || seconds <= 0) {
          throw new Error("--rebuild-timeout must be a positive number of seconds");
        }
        rebuildTimeoutMs = seconds * 1000;
        break;
      }
      case "--only": {
        only = new Set(value().split(",").map(Number));
        if ([...only].some((f) => !Number.isInteger(f) || f < 1 || f > 4)) {
          throw new Error("--only takes figure numbers 1-4, comma-separated");
        }
        break;
      }
      case "--keep":
        keep = true;
        break;
      default:
        throw new Error(`unknown argument ${flag}`);
    }
  });
  if (!wantsRun) return null;
  return {
    kills: kills ?? (quick ? 1 : 10),
    quick,
    jsonFile,
    serveArgs,
    awaySeconds: quick ? 5 : 10,
    importBytes: quick ? 64 * MiB : 256 * MiB,
    rebuildTimeoutMs: rebuildTimeoutMs ?? (quick ? 120_000 : 300_000),
    only,
    keep,
  };
}

const startedMs = performance.now();
function progress(line: string): void {
  const t = ((performance.now() - startedMs) / 1000).toFixed(1).padStart(6);
  console.error(`failover-bench ${t}s: ${line}`);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function seconds(ms: number | undefined | null): string {
  if (ms === undefined || ms === null || !Number.isFinite(ms)) return dash;
  return `${(ms / 1000).toFixed(2)} s`;
}

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

// ---- the write load ----

interface WriteRecord {
  start: number;
  end: number;
  block: number;
  ok: boolean;
}

/**
 * Closed-loop 4 KiB random writes: `writers` loops, each one write at a time. Every
 * completion is recorded (in completion order) with its start and end; failures too, and
 * the writer goes on after 100 ms.
 */
class WriteLoad {
  /** Completed writes, sorted by end (pushed when they complete). */
  records: WriteRecord[] = [];
  errors: { at: number; message: string }[] = [];
  /** Start times of the writes in flight. */
  readonly pending = new Set<{ start: number }>();
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly payloads: Uint8Array[];
  private readonly random = xorshift(0x5eed);
  private readonly blocks: number;
  private listeners: ((r: WriteRecord) => void)[] = [];
  /** Printed write errors (the first few of a phase; the rest are counted). */
  printedErrors = 0;

  constructor(private readonly volume: Volume) {
    this.blocks = Math.floor(volume.sizeBytes / blockBytes);
    this.payloads = Array.from({ length: payloadCount }, () => {
      const p = new Uint8Array(blockBytes);
      crypto.getRandomValues(p);
      return p;
    });
  }

  get isRunning(): boolean {
    return this.running;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loops = Array.from({ length: writers }, async () => {
      while (this.running) await this.writeOnce();
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    this.loops = [];
  }

  async writeOnce(): Promise<WriteRecord> {
    const block = Math.floor(this.random() * this.blocks);
    const payload = this.payloads[block % payloadCount];
    const inFlight = { start: performance.now() };
    this.pending.add(inFlight);
    let ok = true;
    try {
      await this.volume.write(block * blockBytes, payload);
    } catch (err) {
      ok = false;
      const message = (err as Error).message;
      this.errors.push({ at: performance.now(), message });
      if (this.printedErrors++ < 5) progress(`WRITE ERROR (block ${block}): ${message}`);
    } finally {
      this.pending.delete(inFlight);
    }
    const record = { start: inFlight.start, end: performance.now(), block, ok };
    this.records.push(record);
    for (const listener of this.listeners) listener(record);
    if (!ok) await sleep(100);
    return record;
  }

  /** Drops records that completed before `t` (keeps memory flat over many rounds). */
  trimBefore(t: number): void {
    const i = this.records.findIndex((r) => r.end >= t);
    this.records = i < 0 ? [] : this.records.slice(i);
  }

  /** Resolves with the first record (from now on) that matches, or null at the deadline. */
  waitFor(match: (r: WriteRecord) => boolean, timeoutMs: number): Promise<WriteRecord | null> {
    return new Promise((resolve) => {
      const listener = (r: WriteRecord) => {
        if (!match(r)) return;
        done(r);
      };
      const timer = setTimeout(() => done(null), timeoutMs);
      const done = (r: WriteRecord | null) => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== listener);
        resolve(r);
      };
      this.listeners.push(listener);
    });
  }

  /** Waits until writes complete (after `now`), so a kill lands on a loaded volume. */
  async flowing(): Promise<void> {
    const since = performance.now();
    const ok = await this.waitFor((r) => r.ok && r.start >= since, 60_000);
    if (!ok) throw new Error("no write completed within 60 s before a kill");
  }

  /**
   * Over [from, to]: the longest gap with no successful completion (both ends count as
   * edges), the longest latency of a write that completed in it (or, still pending at `to`,
   * its age then), and the failures in it.
   */
  window(from: number, to: number): {
    stallMs: number;
    stallStartMs: number;
    maxLatencyMs: number;
    completed: number;
    errors: number;
  } {
    let last = from;
    let stallMs = 0;
    let stallStartMs = 0;
    let maxLatencyMs = 0;
    let completed = 0;
    let errors = 0;
    for (const r of this.records) {
      if (r.end < from) continue;
      if (r.end > to) break;
      if (!r.ok) {
        errors++;
        continue;
      }
      completed++;
      maxLatencyMs = Math.max(maxLatencyMs, r.end - r.start);
      if (r.end - last > stallMs) {
        stallMs = r.end - last;
        stallStartMs = last - from;
      }
      last = r.end;
    }
    if (to - last > stallMs) {
      stallMs = to - last;
      stallStartMs = last - from;
    }
    for (const p of this.pending) {
      if (p.start < to) maxLatencyMs = Math.max(maxLatencyMs, to - p.start);
    }
    return { stallMs, stallStartMs, maxLatencyMs, completed, errors };
  }
}

// ---- cluster helpers ----

function replicaStates(info: VolumeInfo): Map<string, number> {
  const states = new Map<string, number>();
  for (const s of info.segments) {
    for (const r of s.replicas) states.set(r.state, (states.get(r.state) ?? 0) + 1);
  }
  return states;
}

function describeStates(info: VolumeInfo): string {
  return [...replicaStates(info)].map(([state, n]) => `${n} ${state}`).join(", ");
}

function fullyInSync(info: VolumeInfo): boolean {
  return info.segments.every((s) =>
    s.replicas.length === info.replicas && s.replicas.every((r) => r.state === "in-sync")
  );
}

/** Nodes that hold a replica of the volume. */
function replicaNodes(info: VolumeInfo): string[] {
  return [...new Set(info.segments.flatMap((s) => s.replicas.map((r) => r.node)))].sort();
}

class Rig {
  cluster: LocalCluster | null = null;
  client: CairnClient | null = null;
  volume: Volume | null = null;
  load: WriteLoad | null = null;
  stopped = false;

  constructor(readonly settings: Settings) {}

  get c(): LocalCluster {
    if (!this.cluster) throw new Error("no cluster");
    return this.cluster;
  }

  index(nodeId: string): number {
    const i = this.c.nodes.findIndex((n) => n.id === nodeId);
    if (i < 0) throw new Error(`no node ${nodeId}`);
    return i;
  }

  /** Volume info, retried for up to 30 s: a control request can fail while a node is dying. */
  async info(name = volumeName): Promise<VolumeInfo> {
    const t0 = performance.now();
    for (let attempt = 0;; attempt++) {
      if (this.stopped) throw new Error("stopped");
      try {
        return await this.client!.volumeInfo(name);
      } catch (err) {
        if (performance.now() - t0 > 30_000) {
          throw new BugError(`volume info ${name} failed for 30 s: ${(err as Error).message}`);
        }
        if (attempt % 8 === 0) progress(`  volume info ${name}: ${(err as Error).message}`);
        await sleep(250);
      }
    }
  }

  /** Polls until every replica of every segment is in-sync; returns the time it took. */
  async waitInSync(what: string, name = volumeName, timeoutMs = inSyncTimeoutMs) {
    const t0 = performance.now();
    let lastPrint = t0;
    for (;;) {
      const info = await this.info(name);
      if (fullyInSync(info)) return { ms: performance.now() - t0, info };
      const now = performance.now();
      if (now - t0 > timeoutMs) {
        throw new BugError(
          `${what}: volume ${name} not in sync ${Math.round(timeoutMs / 1000)} s after ` +
            `(${describeStates(info)}; owner ${info.owner}, term ${info.term})`,
        );
      }
      if (now - lastPrint > 5_000) {
        lastPrint = now;
        progress(`  ${what}: waiting for in-sync (${describeStates(info)})`);
      }
      await sleep(200);
    }
  }

  logSizes(): number[] {
    return this.c.nodes.map((n) => {
      try {
        return fs.statSync(n.logFile).size;
      } catch {
        return 0;
      }
    });
  }

  /** The text node i logged since `offsets` were taken. */
  logSince(i: number, offsets: number[]): string {
    try {
      const text = fs.readFileSync(this.c.nodes[i].logFile);
      return new TextDecoder().decode(text.subarray(offsets[i] ?? 0));
    } catch {
      return "";
    }
  }

  /** Warnings, errors and volume events every node logged since `offsets`, for bug reports. */
  excerpt(offsets: number[], maxLines = 40): string {
    const lines: string[] = [];
    this.c.nodes.forEach((_, i) => {
      for (const line of this.logSince(i, offsets).split("\n")) {
        if (/ (warn|error) |won term|caught up|fenced|taking over|down/i.test(line)) {
          lines.push(line);
        }
      }
    });
    lines.sort(); // ISO timestamps first
    // A message repeated (a retry every few seconds) is shown once, with its count.
    const out: string[] = [];
    let repeats = 0;
    const body = (line: string) => line.slice(line.indexOf(" ") + 1);
    for (const line of lines) {
      if (out.length && body(out[out.length - 1]) === body(line)) {
        repeats++;
        continue;
      }
      if (repeats) out.push(`    (the line above ${repeats} more times)`);
      repeats = 0;
      out.push(line);
    }
    if (repeats) out.push(`    (the line above ${repeats} more times)`);
    return out.slice(-maxLines).join("\n");
  }

  pids(): Record<string, number | undefined> {
    const out: Record<string, number | undefined> = {
      bench: Deno.pid,
      nats: this.cluster?.natsPid(0),
    };
    this.cluster?.nodes.forEach((n, i) => {
      const child = n.child;
      out[n.id] = child && child.exitCode === null && child.signalCode === null
        ? this.cluster!.pidOf(i)
        : undefined;
    });
    return out;
  }

  async cleanup(): Promise<void> {
    this.stopped = true;
    await this.stopCluster();
  }

  /** Stops the load and the cluster (every process it started, by pid). */
  async stopCluster(): Promise<void> {
    const load = this.load;
    this.load = null;
    if (load) {
      // Writes end when their retries give up; do not wait for that.
      await Promise.race([load.stop(), sleep(3_000)]);
    }
    const cluster = this.cluster;
    this.cluster = null;
    this.client = null;
    this.volume = null;
    if (!cluster) return;
    const t0 = performance.now();
    progress(`stopping the ${cluster.nodes.length}-node cluster`);
    await cluster.stop();
    progress(`  stopped in ${seconds(performance.now() - t0)}`);
  }

  async startCluster(nodes: number, serveArgs: string[]): Promise<void> {
    progress(
      `starting a ${nodes}-node cluster${serveArgs.length ? ` (${serveArgs.join(" ")})` : ""}`,
    );
    this.cluster = await LocalCluster.start({ nodes, serveArgs, keep: this.settings.keep });
    if (this.settings.keep) progress(`cluster dir (kept): ${this.cluster.root}`);
    this.client = await this.cluster.client();
  }
}

/** A finding that looks like a bug in the system, not in the bench. */
class BugError extends Error {}

function cpuLine(sampler: CpuSampler, owner: string | null): string {
  const parts: string[] = [];
  for (const [name, percent] of Object.entries(sampler.result)) {
    if (name.startsWith(`${hostCpuName}.`) || name === hostCpuName || name === othersCpuName) {
      continue;
    }
    parts.push(`${name}${name === owner ? "*" : ""} ${percent}`);
  }
  const host = sampler.result[hostCpuName];
  if (host !== undefined) {
    parts.push(`machine ${host}/${navigator.hardwareConcurrency * 100}`);
  }
  if (sampler.result[othersCpuName] !== undefined) {
    parts.push(`other processes ${sampler.result[othersCpuName]}`);
  }
  return parts.join(" · ");
}

// ---- figure 1: owner kill ----

interface OwnerRound {
  round: number;
  killed: string;
  newOwner: string | null;
  /** Kill → first ack of a write issued after the kill. */
  firstAckMs: number | null;
  /** Kill → first completion of any write (may be a reply from the dead owner in transit). */
  firstAnyAckMs: number | null;
  /** Kill → the successor's "won term" log line (log timestamps, ms resolution). */
  wonTermMs: number | null;
  stallMs: number;
  maxLatencyMs: number;
  writeErrors: number;
  /** Restart of the killed node until the volume was in sync again. */
  restartToInSyncMs: number | null;
  /** Longest write latency from the restart until in sync. */
  maxLatencyDuringCatchUpMs: number;
  error?: string;
}

async function ownerKills(rig: Rig, rounds: OwnerRound[]): Promise<OwnerRound[]> {
  const load = rig.load!;
  for (let round = 1; round <= rig.settings.kills; round++) {
    const offsets = rig.logSizes();
    await rig.waitInSync(`owner kill ${round}`);
    await sleep(settleMs);
    load.trimBefore(performance.now() - 1000);
    const info = await rig.info();
    const victim = rig.index(info.owner);
    await load.flowing();
    const errorsBefore = load.errors.length;
    load.printedErrors = 0;
    const killWall = Date.now();
    const killAt = performance.now();
    const firstAck = load.waitFor((r) => r.ok && r.start >= killAt, firstAckTimeoutMs);
    const firstAny = load.waitFor((r) => r.ok, firstAckTimeoutMs);
    await rig.c.killNode(victim);
    // One more write issued right after the process exited, so there is always one.
    void load.writeOnce();
    const ack = await firstAck;
    const any = await firstAny;
    const firstAckMs = ack ? ack.end - killAt : null;
    const windowEnd = Math.max(killAt + ownerWindowMs, (ack?.end ?? killAt) + afterFirstAckMs);
    await sleep(windowEnd - performance.now());
    const w = load.window(killAt, windowEnd);
    const after = await rig.info();
    const wonTerm = rig.logSince(rig.index(after.owner), offsets).split("\n")
      .find((l) => l.includes(`volume ${volumeName}: won term`));
    const wonTermMs = wonTerm ? Date.parse(wonTerm.split(" ")[0]) - killWall : null;
    const r: OwnerRound = {
      round,
      killed: info.owner,
      newOwner: after.owner === info.owner ? null : after.owner,
      firstAckMs,
      firstAnyAckMs: any ? any.end - killAt : null,
      wonTermMs,
      stallMs: w.stallMs,
      maxLatencyMs: w.maxLatencyMs,
      writeErrors: load.errors.length - errorsBefore,
      restartToInSyncMs: null,
      maxLatencyDuringCatchUpMs: 0,
    };
    progress(
      `owner kill ${round}/${rig.settings.kills}: ${info.owner} killed; first write acknowledged ` +
        `after the kill at ${seconds(firstAckMs)} (won term at ${seconds(wonTermMs)}, new owner ` +
        `${after.owner}); longest write ${seconds(w.maxLatencyMs)}; ${r.writeErrors} write errors`,
    );
    if (!ack) {
      r.error = `no write acknowledged within ${firstAckTimeoutMs / 1000} s of the kill`;
      progress(`  BUG? ${r.error}; logs:\n${rig.excerpt(offsets)}`);
    } else if (r.writeErrors > 0) {
      r.error = `${r.writeErrors} writes failed: ${load.errors[errorsBefore].message}`;
      progress(`  BUG? ${r.error}; logs:\n${rig.excerpt(offsets)}`);
    }
    const restartAt = performance.now();
    await rig.c.startNode(victim);
    try {
      const sync = await rig.waitInSync(`owner kill ${round} restart`);
      r.restartToInSyncMs = performance.now() - restartAt;
      r.maxLatencyDuringCatchUpMs = load.window(restartAt, performance.now()).maxLatencyMs;
      progress(
        `  ${info.owner} restarted; in sync ${seconds(r.restartToInSyncMs)} after the restart ` +
          `(owner ${sync.info.owner}); longest write meanwhile ${
            seconds(r.maxLatencyDuringCatchUpMs)
          }`,
      );
    } catch (err) {
      r.error = (err as Error).message;
      progress(`  BUG? ${r.error}; logs:\n${rig.excerpt(offsets)}`);
      rounds.push(r);
      throw err;
    }
    rounds.push(r);
  }
  return rounds;
}

// ---- figure 2: catch-up after time away ----

interface CatchUpResult {
  node: string;
  owner: string;
  awayMs: number;
  writes: number;
  totalBytesWritten: number;
  distinctBlocks: number;
  distinctBytesWritten: number;
  blocksCopied: number | null;
  bytesCopied: number | null;
  caughtUpLines: string[];
  failedCatchUps: number;
  /** Version maps a catch-up reads: one per segment from each in-sync source and the target. */
  versionMapBytes: number;
  restartToInSyncMs: number;
  /** The copy's rate from the caught-up line, where the build logs bytes and time. */
  copyMBps: number | null;
  cpu: string;
  writeErrors: number;
  ratio: number | null;
  error?: string;
}

async function catchUpAfterAway(rig: Rig): Promise<CatchUpResult> {
  const load = rig.load!;
  await rig.waitInSync("catch-up");
  await sleep(settleMs);
  const info = await rig.info();
  const candidates = replicaNodes(info).filter((n) => n !== info.owner);
  const node = candidates[0];
  const victim = rig.index(node);
  await load.flowing();
  const errorsBefore = load.errors.length;
  load.trimBefore(performance.now());
  const killAt = performance.now();
  await rig.c.killNode(victim);
  progress(
    `catch-up: ${node} killed (owner ${info.owner}); writing for ${rig.settings.awaySeconds} s`,
  );
  const sampler = new CpuSampler(() => rig.pids());
  sampler.before();
  await sleep(rig.settings.awaySeconds * 1000);
  sampler.after();
  await load.stop();
  const stoppedAt = performance.now();
  const written = load.records.filter((r) => r.ok && r.end > killAt);
  const distinct = new Set(written.map((r) => r.block)).size;
  const writeErrors = load.errors.length - errorsBefore;
  progress(
    `catch-up: load stopped; ${written.length} writes (${distinct} distinct blocks) while ` +
      `${node} was away; restarting it`,
  );
  const offsets = rig.logSizes();
  const restartAt = performance.now();
  await rig.c.startNode(victim);
  const sync = await rig.waitInSync("catch-up restart");
  const restartToInSyncMs = performance.now() - restartAt;
  const ownerLog = rig.logSince(rig.index(sync.info.owner), offsets);
  const pattern = new RegExp(
    `volume ${volumeName}: ${node} caught up \\((\\d+) segments, (\\d+) blocks copied[^)]*\\)`,
  );
  const caughtUpLines = ownerLog.split("\n").filter((l) => pattern.test(l));
  const failedCatchUps =
    ownerLog.split("\n").filter((l) => l.includes(`catch-up of ${node} failed`)).length;
  const blocksCopied = caughtUpLines.length
    ? caughtUpLines.reduce((sum, l) => sum + Number(l.match(pattern)![2]), 0)
    : null;
  // Newer builds add "(...: <bytes> bytes in <ms> ms, ...)": the copy's own rate.
  const timed = caughtUpLines.map((l) => l.match(/(\d+) bytes in ([\d.]+) ms/)).filter((m) => m);
  const copyMBps = timed.length
    ? timed.reduce((sum, m) => sum + Number(m![1]), 0) / 1e6 /
      (timed.reduce((sum, m) => sum + Number(m![2]), 0) / 1000)
    : null;
  const sources = info.replicas - 1;
  const blocksPerSegment = info.segmentBytes / blockBytes;
  const versionMapBytes = info.segments.length * blocksPerSegment * 8 * (sources + 1);
  const result: CatchUpResult = {
    node,
    owner: sync.info.owner,
    awayMs: stoppedAt - killAt,
    writes: written.length,
    totalBytesWritten: written.length * blockBytes,
    distinctBlocks: distinct,
    distinctBytesWritten: distinct * blockBytes,
    blocksCopied,
    bytesCopied: blocksCopied === null ? null : blocksCopied * blockBytes,
    caughtUpLines,
    failedCatchUps,
    versionMapBytes,
    restartToInSyncMs,
    copyMBps,
    cpu: cpuLine(sampler, info.owner),
    writeErrors,
    ratio: blocksCopied === null || distinct === 0 ? null : blocksCopied / distinct,
  };
  if (blocksCopied === null) {
    result.error = `no "${node} caught up" line in ${sync.info.owner}'s log`;
    progress(`  ${result.error}; logs:\n${rig.excerpt(offsets)}`);
  }
  if (writeErrors > 0) {
    result.error = `${writeErrors} writes failed: ${load.errors[errorsBefore].message}`;
    progress(`  BUG? ${result.error}`);
  }
  progress(
    `catch-up: ${node} in sync ${seconds(restartToInSyncMs)} after the restart; ${
      blocksCopied ?? "?"
    } blocks copied for ${distinct} distinct blocks written (${result.ratio?.toFixed(3) ?? "?"}×)`,
  );
  load.start();
  return result;
}

// ---- figure 3: replica kill ----

interface ReplicaRound {
  round: number;
  killed: string;
  owner: string;
  stallMs: number;
  /** When the stall began, after the kill. */
  stallStartMs: number;
  maxLatencyMs: number;
  writesInWindow: number;
  writeErrors: number;
  restartToInSyncMs: number | null;
  error?: string;
}

async function replicaKills(rig: Rig, rounds: ReplicaRound[]): Promise<ReplicaRound[]> {
  const load = rig.load!;
  for (let round = 1; round <= rig.settings.kills; round++) {
    const offsets = rig.logSizes();
    await rig.waitInSync(`replica kill ${round}`);
    await sleep(settleMs);
    load.trimBefore(performance.now() - 1000);
    const info = await rig.info();
    const candidates = replicaNodes(info).filter((n) => n !== info.owner);
    const node = candidates[(round - 1) % candidates.length];
    const victim = rig.index(node);
    await load.flowing();
    const errorsBefore = load.errors.length;
    load.printedErrors = 0;
    const killAt = performance.now();
    await rig.c.killNode(victim);
    await sleep(killAt + stallWindowMs - performance.now());
    const w = load.window(killAt, killAt + stallWindowMs);
    const r: ReplicaRound = {
      round,
      killed: node,
      owner: info.owner,
      stallMs: w.stallMs,
      stallStartMs: w.stallStartMs,
      maxLatencyMs: w.maxLatencyMs,
      writesInWindow: w.completed,
      writeErrors: load.errors.length - errorsBefore,
      restartToInSyncMs: null,
    };
    progress(
      `replica kill ${round}/${rig.settings.kills}: ${node} killed (owner ${info.owner}); ` +
        `longest stall ${seconds(w.stallMs)} (from +${seconds(w.stallStartMs)}); longest write ` +
        `${seconds(w.maxLatencyMs)}; ${w.completed} writes in ${stallWindowMs / 1000} s; ` +
        `${r.writeErrors} write errors`,
    );
    if (r.writeErrors > 0) {
      r.error = `${r.writeErrors} writes failed: ${load.errors[errorsBefore].message}`;
      progress(`  BUG? ${r.error}; logs:\n${rig.excerpt(offsets)}`);
    }
    const restartAt = performance.now();
    await rig.c.startNode(victim);
    try {
      await rig.waitInSync(`replica kill ${round} restart`);
      r.restartToInSyncMs = performance.now() - restartAt;
      progress(`  ${node} restarted; in sync ${seconds(r.restartToInSyncMs)} after the restart`);
    } catch (err) {
      r.error = (err as Error).message;
      progress(`  BUG? ${r.error}; logs:\n${rig.excerpt(offsets)}`);
      rounds.push(r);
      throw err;
    }
    rounds.push(r);
  }
  return rounds;
}

// ---- figure 4: import and rebuild throughput ----

/**
 * Whether the nodes can replace the replicas of a node that stays down (the owner logs
 * `volume <name>: <node> rebuilt (...)` when a replacement replica is in sync), and the
 * serve flag that sets the grace period before a down node's replicas are replaced, if
 * `serve --help` names one (a flag with "grace" in its name).
 */
function replacementSupport(): { available: boolean; graceFlag: string | null } {
  const root = new URL("../", import.meta.url).pathname;
  const walk = (dir: string): boolean => {
    for (const entry of Deno.readDirSync(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory && walk(path)) return true;
      if (entry.isFile && entry.name.endsWith(".ts")) {
        if (/["'`]rebuilt["'`]|: rebuilt\b|\} rebuilt \(/.test(Deno.readTextFileSync(path))) {
          return true;
        }
      }
    }
    return false;
  };
  let graceFlag: string | null = null;
  try {
    const serve = Deno.readTextFileSync(`${root}cli/serve.ts`);
    graceFlag = serve.match(/(--[a-z-]*grace[a-z-]*)/)?.[1] ?? null;
  } catch {
    // no serve.ts: no flag
  }
  return { available: walk(`${root}actors`), graceFlag };
}

/** Grace period figure 4 gives a down node before its replicas are replaced. */
const rebuildGraceSeconds = 10;

/** The grace period the serve args set (`--flag 10s` or `--flag=10s`), else the 5 min default. */
function graceMsOf(args: string[], flag: string | null): number {
  const fallbackMs = 5 * 60_000;
  if (!flag) return fallbackMs;
  const i = args.findIndex((a) => a === flag || a.startsWith(`${flag}=`));
  if (i < 0) return fallbackMs;
  const text = args[i].includes("=") ? args[i].slice(args[i].indexOf("=") + 1) : args[i + 1];
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text ?? "");
  if (!m) return fallbackMs;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms"];
}

interface ThroughputResult {
  importBytes: number;
  importMs: number;
  importMBps: number;
  /** The same with the CLI's start-up (a `node list` run) taken off. */
  cliStartMs: number;
  importNetMBps: number;
  importCpu: string;
  rebuild: {
    measured: boolean;
    note: string;
    node?: string;
    replacement?: string;
    bytes?: number;
    ms?: number;
    MBps?: number;
    /** Kill until every replica was in sync on live nodes (includes the grace period). */
    killToInSyncMs?: number;
    logLine?: string;
  };
}

async function throughput(rig: Rig): Promise<ThroughputResult> {
  const support = replacementSupport();
  // Its own 4-node cluster (figures 1-3 keep default settings): a replacement replica needs
  // a node that holds none, and the grace period is shortened where a flag allows it.
  const serveArgs = [...rig.settings.serveArgs];
  const userGrace = support.graceFlag !== null &&
    serveArgs.some((a) => a.startsWith(support.graceFlag!));
  if (support.available && support.graceFlag && !userGrace) {
    serveArgs.push(support.graceFlag, `${rebuildGraceSeconds}s`);
  }
  await rig.stopCluster();
  await rig.startCluster(4, serveArgs);
  const c = rig.c;
  const bytes = rig.settings.importBytes;
  await rig.client!.createVolume({ name: importVolumeName, sizeBytes: bytes });
  const file = `${c.root}/import.bin`;
  const fd = fs.openSync(file, "w");
  const chunk = new Uint8Array(MiB);
  for (let at = 0; at < bytes; at += MiB) {
    for (let i = 0; i < MiB; i += 65536) crypto.getRandomValues(chunk.subarray(i, i + 65536));
    fs.writeSync(fd, chunk, 0, MiB, at);
  }
  fs.closeSync(fd);
  const startT0 = performance.now();
  await c.cli(["node", "list"]);
  const cliStartMs = performance.now() - startT0;
  progress(`throughput: cairn import of ${mib(bytes)}`);
  const sampler = new CpuSampler(() => rig.pids());
  sampler.before();
  const t0 = performance.now();
  const out = await c.cli(["import", importVolumeName, file]);
  const importMs = performance.now() - t0;
  sampler.after();
  if (out.code !== 0) {
    throw new Error(`cairn import failed (${out.code}): ${out.stderr.slice(-500)}`);
  }
  const info = await rig.info(importVolumeName);
  const result: ThroughputResult = {
    importBytes: bytes,
    importMs,
    importMBps: bytes / 1e6 / (importMs / 1000),
    cliStartMs,
    importNetMBps: bytes / 1e6 / (Math.max(1, importMs - cliStartMs) / 1000),
    importCpu: cpuLine(sampler, info.owner),
    rebuild: { measured: false, note: "not measured: replica replacement not available yet" },
  };
  progress(
    `throughput: import ${result.importMBps.toFixed(1)} MB/s (${
      result.importNetMBps.toFixed(1)
    } MB/s without the CLI's ${seconds(cliStartMs)} start-up)`,
  );
  if (!support.available) {
    progress(`throughput: rebuild ${result.rebuild.note}`);
    return result;
  }
  if (!support.graceFlag && !rig.settings.serveArgs.length) {
    result.rebuild.note = "not measured: no serve flag for the replacement grace period " +
      "(pass one with --serve-arg)";
    progress(`throughput: rebuild ${result.rebuild.note}`);
    return result;
  }
  // Kill a replica node of the imported volume (not its owner) and leave it down.
  await rig.waitInSync("rebuild", importVolumeName);
  const before = await rig.info(importVolumeName);
  const holders = replicaNodes(before);
  const victimId = holders.find((n) => n !== before.owner)!;
  const victim = rig.index(victimId);
  const offsets = rig.logSizes();
  progress(`throughput: ${victimId} killed and left down; waiting for a replacement replica`);
  const killAt = performance.now();
  await c.killNode(victim);
  const deadline = killAt + rig.settings.rebuildTimeoutMs;
  // Without a "replacing replicas" line by the grace period + 30 s, no rebuild is coming.
  const startDeadline = killAt + graceMsOf(serveArgs, support.graceFlag) + 30_000;
  let lastPrint = killAt;
  let replaced: VolumeInfo | null = null;
  let started = false;
  let gaveUp = "";
  while (performance.now() < deadline && !rig.stopped) {
    started ||= rig.c.nodes.some((_, i) =>
      rig.logSince(i, offsets).includes(`volume ${importVolumeName}: replacing replicas`)
    );
    if (!started && performance.now() > startDeadline) {
      gaveUp = `no "replacing replicas" line ${
        seconds(performance.now() - killAt)
      } after the kill (grace period + 30 s)`;
      break;
    }
    const now = await rig.info(importVolumeName);
    const onVictim = now.segments.some((s) => s.replicas.some((r) => r.node === victimId));
    if (!onVictim && fullyInSync(now)) {
      replaced = now;
      break;
    }
    if (performance.now() - lastPrint > 10_000) {
      lastPrint = performance.now();
      progress(`  waiting for the rebuild (${describeStates(now)})`);
    }
    await sleep(250);
  }
  const killToInSyncMs = performance.now() - killAt;
  // One "rebuilt" line per node that received replacements (segments are placed one by one,
  // so a lost node's segments may go to several nodes). The layout can say in-sync just
  // before the line is written: wait briefly until the lines cover every lost segment.
  const lostSegments = before.segments.filter((s) => s.replicas.some((r) => r.node === victimId))
    .length;
  const rebuiltPattern = new RegExp(
    `^(\\S+) \\S+ \\S+ volume ${importVolumeName}: (\\S+) rebuilt \\((\\d+) segments, ` +
      `(\\d+) blocks copied(?:: (\\d+) bytes in ([\\d.]+) ms)?`,
  );
  let lines: RegExpMatchArray[] = [];
  for (let waited = 0; replaced && waited <= 5_000; waited += 250) {
    const ownerLog = rig.logSince(rig.index(replaced.owner), offsets);
    lines = ownerLog.split("\n").map((l) => l.match(rebuiltPattern)).filter((m) => m !== null);
    if (lines.reduce((sum, m) => sum + Number(m[3]), 0) >= lostSegments) break;
    await sleep(250);
  }
  if (!replaced) {
    result.rebuild = {
      measured: false,
      note: `not measured: ${
        gaveUp ||
        `no replacement replica in sync within ${
          rig.settings.rebuildTimeoutMs / 1000
        } s of the kill`
      }`,
      node: victimId,
    };
    progress(`  ${result.rebuild.note}; logs:\n${rig.excerpt(offsets)}`);
  } else {
    const timed = lines.filter((m) => m[5] !== undefined);
    // Copies to several nodes may overlap: from the earliest start to the last end.
    const endsMs = timed.map((m) => Date.parse(m[1]));
    const startsMs = timed.map((m, i) => endsMs[i] - Number(m[6]));
    const rebuiltBytes = timed.reduce((sum, m) => sum + Number(m[5]), 0);
    const rebuiltMs = timed.length ? Math.max(...endsMs) - Math.min(...startsMs) : NaN;
    const replacement = lines.map((m) => m[2]).join(", ") || undefined;
    result.rebuild = {
      measured: timed.length > 0,
      note: timed.length
        ? `from the owner's rebuilt lines (${lines.length})`
        : `no "<bytes> bytes in <ms> ms" in the owner's rebuilt lines (${lines.length})`,
      node: victimId,
      replacement,
      bytes: rebuiltBytes,
      ms: rebuiltMs,
      MBps: rebuiltBytes / 1e6 / (rebuiltMs / 1000),
      killToInSyncMs,
      logLine: lines.map((m) => m[0]).join("\n"),
    };
    progress(
      `throughput: ${lostSegments} lost segments replaced on ${replacement ?? "?"}; in sync ` +
        `${seconds(killToInSyncMs)} after the kill; ${
          result.rebuild.MBps?.toFixed(1) ?? "?"
        } MB/s (${mib(rebuiltBytes)} in ${seconds(rebuiltMs)})`,
    );
    if (lines.length) progress(`  ${lines.map((m) => m[0]).join("\n  ")}`);
  }
  await c.startNode(victim);
  return result;
}

// ---- report ----

interface Report {
  machine: MachineInfo;
  commit: string;
  settings: Settings;
  elapsedSeconds: number;
  ownerKills: OwnerRound[];
  catchUp: CatchUpResult | null;
  replicaKills: ReplicaRound[];
  throughput: ThroughputResult | null;
  errors: string[];
}

function verdict(pass: boolean | null): string {
  return pass === null ? "—" : pass ? "PASS" : "NOT MET";
}

function renderSummary(r: Report): string {
  const rows: string[][] = [];
  const kills = r.ownerKills;
  const acks = kills.map((k) => k.firstAckMs ?? Infinity);
  const ownerErrors = kills.reduce((s, k) => s + k.writeErrors, 0);
  rows.push([
    "1",
    `Owner kill -9 under load → first write acknowledged after the kill (a write issued after ` +
    `the SIGKILL), over ${kills.length} kills`,
    kills.length ? `median ${seconds(median(acks))}, worst ${seconds(Math.max(...acks))}` : dash,
    kills.length
      ? `longest single write per round: median ${
        seconds(median(kills.map((k) => k.maxLatencyMs)))
      }, worst ${seconds(Math.max(...kills.map((k) => k.maxLatencyMs)))}; ${ownerErrors} write ` +
        `errors; back in sync ${
          seconds(median(kills.map((k) => k.restartToInSyncMs ?? NaN)))
        } (median) after the restart`
      : dash,
    `median ≤ ${seconds(medianTargetMs)}`,
    verdict(kills.length === expectedRounds(r) ? median(acks) <= medianTargetMs : null),
  ]);
  const cu = r.catchUp;
  rows.push([
    "2",
    `Catch-up after ${r.settings.awaySeconds} s away under writes: bytes copied vs distinct bytes ` +
    `written meanwhile`,
    cu && cu.ratio !== null
      ? `${cu.ratio.toFixed(3)}× (${mib(cu.bytesCopied!)} copied, ${
        mib(cu.distinctBytesWritten)
      } distinct)`
      : cu?.error ?? dash,
    cu
      ? `${cu.writes} writes (${mib(cu.totalBytesWritten)}) while ${cu.node} was away; ` +
        `metadata: version maps ~${mib(cu.versionMapBytes)}; in sync ${
          seconds(cu.restartToInSyncMs)
        } after the restart${
          cu.copyMBps !== null ? ` (copy ${cu.copyMBps.toFixed(1)} MB/s)` : ""
        }; ${cu.failedCatchUps} failed catch-up attempts`
      : dash,
    `≤ ${catchUpTargetRatio}× + metadata`,
    verdict(cu && cu.ratio !== null ? cu.ratio <= catchUpTargetRatio : null),
  ]);
  const rk = r.replicaKills;
  const stalls = rk.map((k) => k.stallMs);
  const replicaErrors = rk.reduce((s, k) => s + k.writeErrors, 0);
  rows.push([
    "3",
    `Replica node kill -9 under load → longest write stall in the ${stallWindowMs / 1000} s ` +
    `after the kill, over ${rk.length} kills`,
    rk.length ? `median ${seconds(median(stalls))}, worst ${seconds(Math.max(...stalls))}` : dash,
    rk.length
      ? `longest single write per round: median ${
        seconds(median(rk.map((k) => k.maxLatencyMs)))
      }, worst ${
        seconds(Math.max(...rk.map((k) => k.maxLatencyMs)))
      }; ${replicaErrors} write errors`
      : dash,
    `median ≤ ${seconds(stallTargetMs)}`,
    verdict(rk.length === expectedRounds(r) ? median(stalls) <= stallTargetMs : null),
  ]);
  const t = r.throughput;
  rows.push([
    "4a",
    "`cairn import` throughput (same cluster, 4 nodes)",
    t ? `${t.importMBps.toFixed(1)} MB/s` : dash,
    t
      ? `${mib(t.importBytes)} in ${seconds(t.importMs)}; ${
        t.importNetMBps.toFixed(1)
      } MB/s without the CLI start-up (${seconds(t.cliStartMs)})`
      : dash,
    "reference",
    "—",
  ]);
  rows.push([
    "4b",
    "Rebuild throughput of a replacement replica",
    t?.rebuild.MBps !== undefined && Number.isFinite(t.rebuild.MBps)
      ? `${t.rebuild.MBps.toFixed(1)} MB/s`
      : t?.rebuild.note ?? dash,
    t?.rebuild.replacement
      ? `${t.rebuild.node} down → ${t.rebuild.replacement}; ${
        t.rebuild.bytes !== undefined ? mib(t.rebuild.bytes) : "?"
      } in ${seconds(t.rebuild.ms)}; kill to in-sync ${seconds(t.rebuild.killToInSyncMs)}`
      : dash,
    `≥ ${rebuildTargetMBps} MB/s`,
    t?.rebuild.MBps !== undefined && Number.isFinite(t.rebuild.MBps)
      ? t.rebuild.MBps >= rebuildTargetMBps ? "PASS" : "NOT MET"
      : "—",
  ]);
  return markdownTable(["#", "Figure", "Measured", "Detail", "Target", "Result"], rows);
}

/** Rounds a figure must have finished to be judged. */
function expectedRounds(r: Report): number {
  return r.settings.kills;
}

function renderOwnerRounds(rounds: OwnerRound[]): string {
  return markdownTable(
    [
      "Owner kill",
      "Killed → new owner",
      "First ack after kill",
      "Won term at",
      "Longest stall",
      "Longest write",
      "Write errors",
      "Restart → in sync",
      "Longest write while catching up",
    ],
    rounds.map((k) => [
      String(k.round),
      `${k.killed} → ${k.newOwner ?? "?"}`,
      seconds(k.firstAckMs),
      seconds(k.wonTermMs),
      seconds(k.stallMs),
      seconds(k.maxLatencyMs),
      String(k.writeErrors),
      seconds(k.restartToInSyncMs),
      seconds(k.maxLatencyDuringCatchUpMs),
    ]),
  );
}

function renderReplicaRounds(rounds: ReplicaRound[]): string {
  return markdownTable(
    [
      "Replica kill",
      "Killed (owner)",
      "Longest stall",
      "Stall began at",
      "Longest write",
      "Writes in window",
      "Write errors",
      "Restart → in sync",
    ],
    rounds.map((k) => [
      String(k.round),
      `${k.killed} (${k.owner})`,
      seconds(k.stallMs),
      `+${seconds(k.stallStartMs)}`,
      seconds(k.maxLatencyMs),
      String(k.writesInWindow),
      String(k.writeErrors),
      seconds(k.restartToInSyncMs),
    ]),
  );
}

/** Figures 1-3 on the 3-node cluster, under one write load; stops at the first that fails. */
async function figures123(
  rig: Rig,
  report: Report,
  attempt: <T>(what: string, fn: () => Promise<T>) => Promise<T | null>,
): Promise<void> {
  const settings = rig.settings;
  rig.volume = await rig.client!.openVolume(volumeName);
  rig.load = new WriteLoad(rig.volume);
  rig.load.start();
  progress(`volume ${volumeName} (${mib(volumeBytes)}, 3 replicas), ${writers} writers running`);
  const run = settings.only;
  let healthy = true;
  if (run.has(1)) {
    progress(`figure 1: ${settings.kills} owner kills`);
    healthy = await attempt("owner kills", () => ownerKills(rig, report.ownerKills)) !== null;
  }
  if (healthy && run.has(2)) {
    progress(`figure 2: catch-up after ${settings.awaySeconds} s away`);
    report.catchUp = await attempt("catch-up", () => catchUpAfterAway(rig));
    healthy = report.catchUp !== null;
  }
  if (healthy && run.has(3)) {
    progress(`figure 3: ${settings.kills} replica kills`);
    await attempt("replica kills", () => replicaKills(rig, report.replicaKills));
  }
  await rig.load.stop();
}

async function gitCommit(): Promise<string> {
  const run = async (args: string[]) => {
    try {
      const out = await new Deno.Command("git", {
        args,
        cwd: new URL("../", import.meta.url).pathname,
        stdout: "piped",
        stderr: "null",
      }).output();
      return new TextDecoder().decode(out.stdout).trim();
    } catch {
      return "";
    }
  };
  const head = await run(["rev-parse", "--short", "HEAD"]) || "unknown";
  const status = await run(["status", "--porcelain", "--untracked-files=no"]);
  const dirty = status.split("\n").map((l) => l.trim().replace(/^\S+\s+/, "")).filter(Boolean);
  return dirty.length ? `${head} + uncommitted changes in ${dirty.join(", ")}` : head;
}

async function main(): Promise<number> {
  let settings: Settings | null;
  try {
    settings = parseSettings(Deno.args);
  } catch (err) {
    console.error(`bench:failover: ${(err as Error).message}\n${usage}`);
    return 2;
  }
  if (!settings) {
    console.log(usage);
    return 0;
  }
  const machine = await machineInfo();
  const commit = await gitCommit();
  const rig = new Rig(settings);
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) Deno.exit(130);
    interrupted = true;
    progress("interrupted; stopping the cluster (again to exit at once)");
    rig.cleanup().catch(() => {});
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const report: Report = {
    machine,
    commit,
    settings,
    elapsedSeconds: 0,
    ownerKills: [],
    catchUp: null,
    replicaKills: [],
    throughput: null,
    errors: [],
  };
  const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | null> => {
    if (rig.stopped) return null;
    try {
      return await fn();
    } catch (err) {
      const message = `${what}: ${(err as Error).message}`;
      report.errors.push(message);
      progress(`${err instanceof BugError ? "BUG? " : "failed: "}${message}`);
      return null;
    }
  };
  try {
    progress(`commit ${commit}`);
    const run = settings.only;
    if (run.has(1) || run.has(2) || run.has(3)) {
      await rig.startCluster(3, settings.serveArgs);
      await rig.client!.createVolume({ name: volumeName, sizeBytes: volumeBytes });
      await figures123(rig, report, attempt);
    }
    if (run.has(4)) {
      progress("figure 4: import and rebuild throughput");
      report.throughput = await attempt("throughput", () => throughput(rig));
    }
  } catch (err) {
    report.errors.push(`setup: ${(err as Error).message}`);
    progress(`failed: ${(err as Error).message}`);
  } finally {
    progress("stopping the cluster");
    await rig.cleanup().catch((err) => progress(`cleanup: ${err.message}`));
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  report.elapsedSeconds = (performance.now() - startedMs) / 1000;
  const m = machine;
  console.log(
    [
      `- Machine: ${m.cores} cores (${m.cpuModel}), ${(m.memoryBytes / GiB).toFixed(1)} GiB, ` +
      `Linux ${m.kernel}; 1-minute load average at start: ${m.loadAverage ?? "?"}`,
      `- ${m.deno.split(",")[0]}; ${m.natsServer}`,
      `- Date: ${m.date}; commit ${commit}`,
      `- Setup: 1 nats-server + 3 nodes on loopback, default settings` +
      `${settings.serveArgs.length ? ` + ${settings.serveArgs.join(" ")}` : ""}; volume ` +
      `${volumeName} ${
        mib(volumeBytes)
      }, 3 replicas, default segment size; ${writers} writers of ` +
      `4 KiB at random blocks. Figure 4: its own cluster of 1 nats-server + 4 nodes, volume ` +
      `${importVolumeName} ${mib(settings.importBytes)}. --kills ${settings.kills}${
        settings.quick ? " --quick" : ""
      }; ` +
      `${report.elapsedSeconds.toFixed(0)} s`,
    ].join("\n"),
  );
  console.log("");
  console.log(renderSummary(report));
  if (report.ownerKills.length) console.log(`\n${renderOwnerRounds(report.ownerKills)}`);
  if (report.replicaKills.length) console.log(`\n${renderReplicaRounds(report.replicaKills)}`);
  const notes: string[] = [];
  if (report.catchUp) {
    notes.push(`- CPU % of a core while ${report.catchUp.node} was away: ${report.catchUp.cpu}`);
  }
  if (report.throughput) {
    notes.push(`- CPU % of a core during the import: ${report.throughput.importCpu}`);
  }
  for (const e of report.errors) notes.push(`- error: ${e}`);
  for (const k of [...report.ownerKills, ...report.replicaKills]) {
    if (k.error) notes.push(`- round ${k.round} (${k.killed}): ${k.error}`);
  }
  if (report.catchUp?.error) notes.push(`- catch-up: ${report.catchUp.error}`);
  if (notes.length) console.log(`\n${notes.join("\n")}`);
  if (settings.jsonFile) {
    Deno.writeTextFileSync(settings.jsonFile, JSON.stringify(report, null, 2) + "\n");
    progress(`wrote ${settings.jsonFile}`);
  }
  return report.errors.length ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
