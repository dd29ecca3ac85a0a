/**
 * `deno task bench [--seconds N] [--json FILE] [--only TEXT]`
 *
 * Starts a local 3-node cluster (real nats-server and node processes), runs
 * block IO against a 3-replica volume through the client library, and prints
 * one markdown table with ratios against ceilings measured in the same run:
 *
 * - echo: NATS request/reply to a responder in its own process, same payload
 *   size and in-flight count;
 * - disk: the local file system through node:fs (durable writes with group
 *   commit at the same in-flight count, positional reads of a written file);
 * - KV peer: JetStream KV used as a block store (one 4 KiB value per block).
 *
 * Before the rows it opens 10 more volumes (written a little, kept open);
 * after them it reports each node's resident memory against the target.
 * Every process it starts is stopped by pid at the end, also on failure.
 */
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { type KV, Kvm } from "@nats-io/kv";
import { StorageType } from "@nats-io/jetstream";
import { type CairnClient, connectCluster } from "../client/client.ts";
import type { Volume } from "../client/volume.ts";
import { TestCluster } from "../tests/harness/cluster.ts";
import { type LoadResult, type Operation, runLoad, xorshift } from "./load.ts";
import {
  CpuSampler,
  hostCpuName,
  type MachineInfo,
  machineInfo,
  memoryOf,
  othersCpuName,
} from "./proc.ts";
import { EchoRequester } from "./echo.ts";
import { DiskTarget } from "./disk.ts";
import {
  cell,
  dash,
  errorCell,
  formatCount,
  formatMiB,
  formatMs,
  formatPercent,
  markdownTable,
} from "./table.ts";
import { eachFlag } from "./flags.ts";

const usage = `usage: deno task bench [--seconds N] [--json FILE] [--only TEXT]
  --seconds N   measured seconds per row and per ceiling (default 5; warm-up is extra)
  --json FILE   also write the results as JSON to FILE
  --only TEXT   run only the rows whose id contains TEXT (e.g. randwrite); memory always runs`;

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const benchVolumeName = "bench";
const benchVolumeBytes = 1 * GiB;
const replicas = 3;
/** Region written before the read rows; random and sequential reads stay inside it. */
const readRegionBytes = 64 * MiB;
const diskFileBytes = 256 * MiB;
const memoryVolumeCount = 10;
const memoryVolumeBytes = 1 * GiB;
const rssTargetBytes = 150 * MiB;
const echoSubject = "bench.echo";
const kvBucket = "bench-blocks";
/** Per-request timeout for echo and KV operations. */
const peerTimeoutMs = 10_000;
const echoReadyTimeoutMs = 60_000;
const maxSeconds = 3600;

type Op = "write" | "read";
type Pattern = "random" | "sequential";

interface RowSpec {
  id: string;
  label: string;
  op: Op;
  pattern: Pattern;
  ioBytes: number;
  inFlight: number;
  /** Least Cairn/echo ratio that passes, if this row has a target. */
  minEchoRatio?: number;
}

const rowSpecs: RowSpec[] = [
  {
    id: "randwrite-4k-qd1",
    label: "4 KiB random write",
    op: "write",
    pattern: "random",
    ioBytes: 4 * KiB,
    inFlight: 1,
  },
  {
    id: "randwrite-4k-qd32",
    label: "4 KiB random write",
    op: "write",
    pattern: "random",
    ioBytes: 4 * KiB,
    inFlight: 32,
    minEchoRatio: 0.35,
  },
  {
    id: "randread-4k-qd1",
    label: "4 KiB random read",
    op: "read",
    pattern: "random",
    ioBytes: 4 * KiB,
    inFlight: 1,
  },
  {
    id: "randread-4k-qd32",
    label: "4 KiB random read",
    op: "read",
    pattern: "random",
    ioBytes: 4 * KiB,
    inFlight: 32,
    minEchoRatio: 0.6,
  },
  {
    id: "seqwrite-1m-qd8",
    label: "1 MiB sequential write",
    op: "write",
    pattern: "sequential",
    ioBytes: 1 * MiB,
    inFlight: 8,
  },
  {
    id: "seqread-1m-qd8",
    label: "1 MiB sequential read",
    op: "read",
    pattern: "sequential",
    ioBytes: 1 * MiB,
    inFlight: 8,
  },
];

type Measured =
  | (LoadResult & {
    cpuPercent?: Record<string, number>;
    otherProcesses?: CpuSampler["others"];
  })
  | { error: string };

interface RowResult extends Omit<RowSpec, "minEchoRatio"> {
  unit: "IOPS" | "MB/s";
  cairn: Measured;
  echo: Measured;
  disk: Measured;
  kv: Measured | null;
  target: string | null;
  /** null when there is no target or it could not be judged. */
  pass: boolean | null;
}

interface MemoryResult {
  node: string;
  pid: number | null;
  volumesOpen: number;
  /** RSS with the volumes open, before the rows' load. */
  idleRssBytes: number | null;
  rssBytes: number | null;
  peakBytes: number | null;
  error?: string;
  pass: boolean | null;
}

interface Settings {
  seconds: number;
  warmupSeconds: number;
  jsonFile: string | null;
  only: string | null;
}

function parseSettings(args: string[]): Settings | null {
  const settings: Settings = { seconds: 5, warmupSeconds: 1, jsonFile: null, only: null };
  const wantsRun = eachFlag(args, (flag, value) => {
    switch (flag) {
      case "--seconds": {
        const seconds = Number(value());
        if (!Number.isFinite(seconds) || seconds <= 0 || seconds > maxSeconds) {
          throw new Error(`--seconds must be a number in (0, ${maxSeconds}]`);
        }
        settings.seconds = seconds;
        break;
      }
      case "--json":
        settings.jsonFile = value();
        break;
      case "--only":
        settings.only = value();
        break;
      default:
        throw new Error(`unknown argument ${flag}`);
    }
  });
  if (!wantsRun) return null;
  // Long enough to fill queues and caches; short enough to keep the default run near 2 minutes.
  settings.warmupSeconds = Math.min(2, Math.max(0.5, settings.seconds / 10));
  return settings;
}

/** Random bytes of any length (getRandomValues gives at most 64 KiB a call). */
function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  const maxEntropyBytes = 65536;
  for (let at = 0; at < length; at += maxEntropyBytes) {
    crypto.getRandomValues(out.subarray(at, Math.min(length, at + maxEntropyBytes)));
  }
  return out;
}

function errorOf(err: unknown): { error: string } {
  return { error: errorCell(err).slice("error: ".length) };
}

function isError(m: Measured | null): m is { error: string } {
  return m !== null && "error" in m;
}

/** The row's headline number: IOPS for 4 KiB rows, MB/s for 1 MiB rows. */
function valueOf(m: Measured | null, unit: RowResult["unit"]): number | undefined {
  if (m === null || isError(m)) return undefined;
  return unit === "IOPS" ? m.opsPerSec : m.mbPerSec;
}

function formatValue(m: Measured | null, unit: RowResult["unit"]): string {
  if (m === null) return dash;
  if (isError(m)) return `error: ${m.error}`;
  const v = valueOf(m, unit)!;
  return unit === "IOPS" ? `${formatCount(v)} IOPS` : `${v.toFixed(1)} MB/s`;
}

function ratio(a: Measured | null, b: Measured | null, unit: RowResult["unit"]) {
  const x = valueOf(a, unit);
  const y = valueOf(b, unit);
  return x === undefined || y === undefined || y === 0 ? undefined : x / y;
}

/** Spawns the echo responder in its own Deno process and waits until it subscribed. */
async function startEchoResponder(natsUrl: string): Promise<Deno.ChildProcess> {
  const script = new URL("./echo_responder.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, natsUrl, echoSubject],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let seen = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`echo responder not ready within ${echoReadyTimeoutMs} ms`)),
        echoReadyTimeoutMs,
      );
    });
    while (!seen.includes("ready")) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) throw new Error(`echo responder exited before it was ready: ${seen}`);
      seen += decoder.decode(value);
    }
  } catch (err) {
    await stopChild(child);
    throw err;
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
  // Nothing more is printed, but keep the pipe drained so the child can never block on it.
  child.stdout.pipeTo(new WritableStream()).catch(() => {});
  return child;
}

/** SIGTERM by pid, SIGKILL if it has not exited within 3 s. */
async function stopChild(child: Deno.ChildProcess): Promise<void> {
  try {
    await child.stdin.close();
  } catch {
    // already closed
  }
  const exited = child.status.then(() => true);
  try {
    Deno.kill(child.pid, "SIGTERM");
  } catch {
    return; // already gone
  }
  const inTime = await Promise.race([
    exited,
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 3000)),
  ]);
  if (!inTime) {
    try {
      Deno.kill(child.pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
    await child.status;
  }
}

/** Everything the rows need, set up once; every field is released in cleanup. */
interface Rig {
  cluster: TestCluster | null;
  cairn: CairnClient | null;
  volume: Volume | null;
  owner: string | null;
  nc: NatsConnection | null;
  kv: KV | null;
  echo: Deno.ChildProcess | null;
  echoRequester: EchoRequester | null;
  disk: DiskTarget | null;
  extraVolumes: Volume[];
}

class Bench {
  readonly rig: Rig = {
    cluster: null,
    cairn: null,
    volume: null,
    owner: null,
    nc: null,
    kv: null,
    echo: null,
    echoRequester: null,
    disk: null,
    extraVolumes: [],
  };
  private readonly random = xorshift(0xcafe);
  private readonly kvWritten: number[] = [];
  private readonly kvWrittenSet = new Set<number>();
  private readRegionReady = false;
  /** Each node's RSS once the memory volumes are open, before the rows. */
  private idleRss: (number | null)[] = [];
  private memorySetupError: string | null = null;
  private cleaned: Promise<void> | null = null;

  constructor(private readonly settings: Settings) {}

  private pids(): Record<string, number | undefined> {
    const cluster = this.rig.cluster;
    const pids: Record<string, number | undefined> = { bench: Deno.pid };
    if (cluster) {
      pids["nats"] = cluster.nats.pid;
      cluster.nodes.forEach((node, i) => pids[node.id] = cluster.pidOf(i));
    }
    if (this.rig.echo) pids["echo"] = this.rig.echo.pid;
    return pids;
  }

  async setUp(log: (line: string) => void): Promise<void> {
    log("starting nats-server and 3 nodes");
    const cluster = this.rig.cluster = await TestCluster.start({ nodes: 3 });
    const url = cluster.natsUrl;
    log(`cluster up at ${url}; starting echo responder`);
    this.rig.echo = await startEchoResponder(url);
    this.rig.nc = await connect({ servers: url, name: "bench", noAsyncTraces: true });
    this.rig.echoRequester = new EchoRequester(this.rig.nc, echoSubject, peerTimeoutMs);
    this.rig.cairn = await connectCluster({ servers: url, name: "bench" });
    log(`creating volume ${benchVolumeName} (${benchVolumeBytes / GiB} GiB, ${replicas} replicas)`);
    const info = await this.rig.cairn.createVolume({
      name: benchVolumeName,
      sizeBytes: benchVolumeBytes,
      replicas,
    });
    this.rig.owner = info.owner;
    this.rig.volume = await this.rig.cairn.openVolume(benchVolumeName);
  }

  private async kvBucket(): Promise<KV> {
    if (!this.rig.kv) {
      const kvm = new Kvm(this.rig.nc!);
      this.rig.kv = await kvm.create(kvBucket, { history: 1, storage: StorageType.File });
    }
    return this.rig.kv;
  }

  private async diskTarget(): Promise<DiskTarget> {
    if (!this.rig.disk) {
      this.rig.disk = await DiskTarget.create(
        `${this.rig.cluster!.root}/disk-ceiling`,
        diskFileBytes,
      );
    }
    return this.rig.disk;
  }

  /** Offsets for one row: random blocks of a region, or a shared sequential cursor. */
  private offsets(spec: RowSpec, regionBytes: number): () => number {
    const slots = Math.floor(regionBytes / spec.ioBytes);
    if (spec.pattern === "random") return () => Math.floor(this.random() * slots) * spec.ioBytes;
    let next = 0;
    return () => {
      const at = next;
      next = (next + 1) % slots;
      return at * spec.ioBytes;
    };
  }

  private async measure(spec: RowSpec, op: Operation): Promise<Measured> {
    const sampler = new CpuSampler(() => this.pids());
    try {
      const result = await runLoad(op, {
        inFlight: spec.inFlight,
        seconds: this.settings.seconds,
        warmupSeconds: this.settings.warmupSeconds,
        bytesPerOp: spec.ioBytes,
      }, sampler);
      return { ...result, cpuPercent: sampler.result, otherProcesses: sampler.others };
    } catch (err) {
      return errorOf(err);
    }
  }

  /** Writes the read region once with 1 MiB writes, so reads return written data. */
  private async fillReadRegion(log: (line: string) => void): Promise<void> {
    if (this.readRegionReady) return;
    const volume = this.rig.volume!;
    log(`writing the first ${readRegionBytes / MiB} MiB of ${benchVolumeName} for the read rows`);
    const data = randomBytes(MiB);
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < readRegionBytes) {
        const at = next;
        next += MiB;
        await volume.write(at, data);
      }
    }));
    this.readRegionReady = true;
  }

  private async cairnRow(spec: RowSpec, log: (line: string) => void): Promise<Measured> {
    try {
      const volume = this.rig.volume;
      if (!volume) throw new Error("no bench volume");
      if (spec.op === "read") await this.fillReadRegion(log);
      const region = spec.op === "read" ? readRegionBytes : volume.sizeBytes;
      const next = this.offsets(spec, region);
      const data = randomBytes(spec.ioBytes);
      return await this.measure(
        spec,
        spec.op === "write" ? () => volume.write(next(), data) : async () => {
          const got = await volume.read(next(), spec.ioBytes);
          if (got.length !== spec.ioBytes) throw new Error(`short read: ${got.length}`);
        },
      );
    } catch (err) {
      return errorOf(err);
    }
  }

  private async echoRow(spec: RowSpec): Promise<Measured> {
    const echo = this.rig.echoRequester;
    if (!echo || !this.rig.echo) return { error: "no echo responder" };
    const payload = randomBytes(spec.ioBytes);
    return await this.measure(spec, async () => {
      const reply = await echo.request(payload);
      if (reply.length !== payload.length) throw new Error(`echo returned ${reply.length} bytes`);
    });
  }

  private async diskRow(spec: RowSpec): Promise<Measured> {
    try {
      const disk = await this.diskTarget();
      const next = this.offsets(spec, disk.sizeBytes);
      const buffers = Array.from(
        { length: spec.inFlight },
        () => randomBytes(spec.ioBytes),
      );
      return await this.measure(
        spec,
        spec.op === "write"
          ? (w) => disk.write(next(), buffers[w])
          : (w) => disk.read(next(), buffers[w]),
      );
    } catch (err) {
      return errorOf(err);
    }
  }

  /** JetStream KV as a block store: key b.<block>, one 4 KiB value each. */
  private async kvRow(spec: RowSpec): Promise<Measured | null> {
    if (spec.ioBytes !== 4 * KiB || spec.pattern !== "random") return null;
    try {
      const kv = await this.kvBucket();
      const blocks = benchVolumeBytes / spec.ioBytes;
      const data = randomBytes(spec.ioBytes);
      if (spec.op === "write") {
        return await this.measure(spec, async () => {
          const block = Math.floor(this.random() * blocks);
          await kv.put(`b.${block}`, data, { timeout: peerTimeoutMs });
          if (!this.kvWrittenSet.has(block)) {
            this.kvWrittenSet.add(block);
            this.kvWritten.push(block);
          }
        });
      }
      if (this.kvWritten.length === 0) {
        // The write rows did not run (or failed): write some blocks to read.
        for (let block = 0; block < 1024; block++) {
          await kv.put(`b.${block}`, data, { timeout: peerTimeoutMs });
          this.kvWritten.push(block);
        }
      }
      const written = this.kvWritten;
      return await this.measure(spec, async () => {
        const block = written[Math.floor(this.random() * written.length)];
        const entry = await kv.get(`b.${block}`);
        if (!entry || entry.value.length !== spec.ioBytes) throw new Error(`b.${block} missing`);
      });
    } catch (err) {
      return errorOf(err);
    }
  }

  async row(spec: RowSpec, log: (line: string) => void): Promise<RowResult> {
    const unit = spec.ioBytes >= MiB ? "MB/s" : "IOPS";
    // Each cell fails on its own: an error becomes the cell's text, never the bench's end.
    const safely = async <T>(what: string, fn: () => Promise<T>): Promise<T | Measured> => {
      log(`${spec.id}: ${what}`);
      try {
        return await fn();
      } catch (err) {
        return errorOf(err);
      }
    };
    const cairn = await safely("cairn", () => this.cairnRow(spec, log));
    const echo = await safely("echo ceiling", () => this.echoRow(spec));
    const disk = await safely("disk ceiling", () => this.diskRow(spec));
    const kv = await safely("KV peer", () => this.kvRow(spec));
    let target: string | null = null;
    let pass: boolean | null = null;
    if (spec.minEchoRatio !== undefined) {
      target = `>= ${formatPercent(spec.minEchoRatio)} of echo`;
      const r = ratio(cairn, echo, unit);
      pass = r === undefined ? null : r >= spec.minEchoRatio;
    }
    return {
      id: spec.id,
      label: spec.label,
      op: spec.op,
      pattern: spec.pattern,
      ioBytes: spec.ioBytes,
      inFlight: spec.inFlight,
      unit,
      cairn,
      echo,
      disk,
      kv,
      target,
      pass,
    };
  }

  /**
   * Creates and opens memoryVolumeCount more volumes and writes a little to
   * each, then notes every node's RSS: the "10 volumes open" state, before
   * any load. They stay open while the rows run.
   */
  async openMemoryVolumes(log: (line: string) => void): Promise<void> {
    const cluster = this.rig.cluster;
    const cairn = this.rig.cairn;
    try {
      if (!cluster || !cairn) throw new Error("no cluster");
      log(`creating and opening ${memoryVolumeCount} more volumes`);
      const data = randomBytes(MiB);
      for (let i = 0; i < memoryVolumeCount; i++) {
        const name = `bench-mem-${i}`;
        await cairn.createVolume({ name, sizeBytes: memoryVolumeBytes, replicas });
        const volume = await cairn.openVolume(name);
        this.rig.extraVolumes.push(volume);
        // A little to each: 1 MiB at the start and 4 KiB in the last segment.
        await volume.write(0, data);
        await volume.write(volume.sizeBytes - 4 * KiB, data.subarray(0, 4 * KiB));
      }
      // Let the writes settle (batchers, timers) before reading the RSS.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      this.idleRss = cluster.nodes.map((_, i) => {
        const pid = cluster.pidOf(i);
        return (pid === undefined ? null : memoryOf(pid)?.rssBytes) ?? null;
      });
    } catch (err) {
      this.memorySetupError = errorOf(err).error;
      log(`opening the memory volumes failed: ${this.memorySetupError}`);
    }
  }

  /** Every node's RSS now (after the rows), with the volumes of openMemoryVolumes open. */
  memory(): MemoryResult[] {
    const cluster = this.rig.cluster;
    if (!cluster) return [];
    const volumesOpen = (this.rig.volume ? 1 : 0) + this.rig.extraVolumes.length;
    const setupError = this.memorySetupError ?? undefined;
    return cluster.nodes.map((node, i) => {
      const pid = cluster.pidOf(i) ?? null;
      const mem = pid === null ? null : memoryOf(pid);
      const error = setupError ?? (mem ? undefined : "process not running");
      return {
        node: node.id,
        pid,
        volumesOpen,
        idleRssBytes: this.idleRss[i] ?? null,
        rssBytes: mem?.rssBytes ?? null,
        peakBytes: mem?.peakBytes ?? null,
        error,
        pass: mem && !setupError ? mem.rssBytes < rssTargetBytes : null,
      };
    });
  }

  /** Idempotent: closes the clients, stops the echo process and the cluster. */
  cleanup(): Promise<void> {
    this.cleaned ??= (async () => {
      const rig = this.rig;
      const step = async (what: string, fn: () => Promise<unknown>) => {
        try {
          await fn();
        } catch (err) {
          console.error(`bench: cleanup of ${what} failed: ${(err as Error).message}`);
        }
      };
      if (rig.cairn) await step("cairn client", () => rig.cairn!.close());
      rig.echoRequester?.close();
      if (rig.nc) await step("bench connection", () => rig.nc!.close());
      if (rig.echo) await step("echo responder", () => stopChild(rig.echo!));
      if (rig.disk) await step("disk file", () => rig.disk!.close());
      if (rig.cluster) await step("cluster", () => rig.cluster!.stop());
    })();
    return this.cleaned;
  }
}

function cpuCell(m: Measured, owner: string | null): string {
  if (isError(m) || !m.cpuPercent) return dash;
  const cores = navigator.hardwareConcurrency;
  return Object.entries(m.cpuPercent)
    .filter(([name]) => name !== "echo" && !name.startsWith(`${hostCpuName}.`))
    .map(([name, pct]) =>
      name === hostCpuName
        ? `machine ${pct}/${cores * 100} (softirq ${
          m.cpuPercent![`${hostCpuName}.softirq`] ?? "?"
        })`
        : name === othersCpuName
        ? `other processes ${pct}`
        : `${name}${name === owner ? "*" : ""} ${pct}`
    )
    .join(" · ");
}

function renderTable(rows: RowResult[], memory: MemoryResult[], owner: string | null): string {
  const header = [
    "Row",
    "Cairn",
    "p50 ms",
    "p99 ms",
    "Echo ceiling",
    "Cairn/echo",
    "Disk ceiling",
    "KV peer",
    "Cairn/KV",
    "Target",
    "Result",
    "CPU % of a core during the Cairn run (*owner of the volume)",
  ];
  const verdict = (pass: boolean | null, target: string | null) =>
    target === null ? dash : pass === null ? "no result" : pass ? "pass" : "FAIL";
  const lines = rows.map((r) => {
    const ok = !isError(r.cairn);
    return [
      `${r.label}, ${r.inFlight} in flight`,
      formatValue(r.cairn, r.unit),
      ok ? formatMs((r.cairn as LoadResult).p50Ms) : dash,
      ok ? formatMs((r.cairn as LoadResult).p99Ms) : dash,
      formatValue(r.echo, r.unit),
      formatPercent(ratio(r.cairn, r.echo, r.unit)),
      formatValue(r.disk, r.unit),
      r.kv === null ? "n/a" : formatValue(r.kv, r.unit),
      r.kv === null ? dash : formatPercent(ratio(r.cairn, r.kv, r.unit)),
      r.target ?? dash,
      verdict(r.pass, r.target),
      cpuCell(r.cairn, owner),
    ];
  });
  for (const m of memory) {
    const notes = [
      m.idleRssBytes === null ? null : `${formatMiB(m.idleRssBytes)} before the load`,
      m.peakBytes === null ? null : `peak ${formatMiB(m.peakBytes)}`,
    ].filter((n) => n !== null).join(", ");
    lines.push([
      `Node ${m.node}${m.node === owner ? "*" : ""} VmRSS, ${m.volumesOpen} volumes open, ` +
      `after the rows above (${notes})`,
      m.error ? `error: ${m.error}` : m.rssBytes === null ? dash : formatMiB(m.rssBytes),
      dash,
      dash,
      dash,
      dash,
      dash,
      dash,
      dash,
      `< ${formatMiB(rssTargetBytes)}`,
      verdict(m.pass, "rss"),
      dash,
    ]);
  }
  return markdownTable(header, lines);
}

function renderMachine(machine: MachineInfo, settings: Settings): string {
  return [
    `Machine: ${machine.cores} cores (${machine.cpuModel}), ${
      (machine.memoryBytes / GiB).toFixed(1)
    } GiB memory, Linux ${machine.kernel}`,
    `Deno: ${machine.deno}`,
    `nats-server: ${machine.natsServer}`,
    `Date: ${machine.date}; 1-minute load average at start: ${machine.loadAverage ?? "unknown"}`,
    `Setup: local cluster, 1 nats-server + 3 nodes on loopback; volume ${benchVolumeName} ` +
    `${benchVolumeBytes / GiB} GiB, ${replicas} replicas, default segment size; ` +
    `${settings.seconds} s per measurement after ${settings.warmupSeconds} s warm-up.`,
    `Echo = NATS request/reply to a responder in another Deno process, same payload both ways, ` +
    `same in flight, requests sent like Cairn's client (one inbox subscription). Disk = node:fs on the same file system: writes are pwrite + fdatasync with ` +
    `group commit at the same in flight, reads are preads of a written file (page cache). ` +
    `KV peer = JetStream KV bucket (file storage, history 1), key b.<block>, 4 KiB values.`,
  ].join("\n");
}

async function main(): Promise<number> {
  let settings: Settings | null;
  try {
    settings = parseSettings(Deno.args);
  } catch (err) {
    console.error(`bench: ${(err as Error).message}\n${usage}`);
    return 2;
  }
  if (!settings) {
    console.log(usage);
    return 0;
  }
  const log = (line: string) => console.error(`bench: ${line}`);
  const started = performance.now();
  const machine = await machineInfo();
  const bench = new Bench(settings);
  // First signal: stop the processes (so a running row ends quickly), skip the
  // remaining rows, print what was measured. Second signal: exit at once.
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) Deno.exit(130);
    interrupted = true;
    log("interrupted; stopping the cluster (again to exit at once)");
    bench.cleanup().catch(() => {});
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const rows: RowResult[] = [];
  let memory: MemoryResult[] = [];
  let setupError: string | null = null;
  try {
    try {
      await bench.setUp(log);
    } catch (err) {
      setupError = errorCell(err);
      log(`setup failed: ${(err as Error).stack ?? err}`);
    }
    if (!setupError && !interrupted) await bench.openMemoryVolumes(log);
    const specs = rowSpecs.filter((s) => !settings.only || s.id.includes(settings.only));
    for (const spec of specs) {
      if (interrupted) break;
      if (setupError) {
        const failed = { error: setupError.slice("error: ".length) };
        rows.push({
          ...spec,
          unit: spec.ioBytes >= MiB ? "MB/s" : "IOPS",
          cairn: failed,
          echo: failed,
          disk: failed,
          kv: null,
          target: spec.minEchoRatio === undefined ? null : `>= ${formatPercent(spec.minEchoRatio)}`,
          pass: null,
        });
        continue;
      }
      rows.push(await bench.row(spec, log));
    }
    if (!setupError && !interrupted) memory = bench.memory();
  } finally {
    log("stopping the echo responder and the cluster");
    await bench.cleanup();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  const owner = bench.rig.owner;
  const elapsedSeconds = (performance.now() - started) / 1000;
  console.log(renderMachine(machine, settings));
  console.log("");
  console.log(renderTable(rows, memory, owner));
  console.log("");
  console.log(
    `* marks the owner of volume ${benchVolumeName} (${owner ?? "unknown"}). Echo carries the ` +
      `payload both ways, so for reads and 1 MiB rows it costs more than Cairn's traffic shape. ` +
      `CPU: per process from /proc/<pid>/stat; "machine" is all cores from /proc/stat.`,
  );
  console.log(cell(`Total bench time ${elapsedSeconds.toFixed(0)} s.`));
  if (settings.jsonFile) {
    const report = {
      machine,
      settings: {
        seconds: settings.seconds,
        warmupSeconds: settings.warmupSeconds,
        volume: { name: benchVolumeName, sizeBytes: benchVolumeBytes, replicas },
        readRegionBytes,
        echo: "responder in its own process; requests published with a reply subject on one " +
          "shared inbox subscription, as Cairn's client does",
        diskFileBytes,
        rssTargetBytes,
      },
      owner,
      setupError,
      rows,
      memory,
      elapsedSeconds,
    };
    await Deno.writeTextFile(settings.jsonFile, JSON.stringify(report, null, 2) + "\n");
    log(`wrote ${settings.jsonFile}`);
  }
  return interrupted ? 130 : setupError ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
