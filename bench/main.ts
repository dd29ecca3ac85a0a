/**
 * `deno task bench [--seconds N] [--json FILE] [--only TEXT] [--nats-max-payload BYTES]`
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
import { spawnReady, stopChild } from "./child.ts";
import { connect } from "@nats-io/transport-node";
import { presizeReceiveBuffers } from "../protocol/nats_internals.ts";
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
import { parseSize } from "../cli/args.ts";
import { ioLimitsFor, recommendedNatsMaxPayloadBytes } from "../protocol/limits.ts";

/** A function: it lists the row ids, defined further down. */
const usage = () =>
  `usage: deno task bench [--seconds N] [--json FILE] [--only TEXT] [--nats-max-payload BYTES]
  --seconds N   measured seconds per row and per ceiling (default 5; warm-up is extra)
  --nats-max-payload BYTES
                nats-server's max_payload (default 8MiB, the recommended setting: 4 MiB frames,
                6 MiB replica batches; 1MiB is nats-server's default: 512 KiB and 768 KiB)
  --json FILE   also write the results as JSON to FILE
  --only TEXT   run only the rows whose id contains TEXT (e.g. randwrite, cached, seqwrite,
                fresh, overwrite; several, comma-separated); memory always runs
Row ids: ${rowSpecs.map((s) => s.id).join(", ")}
Fresh-blocks rows write a region of the volume never written before, sized for ${freshBudgetMBps} MB/s
over the warm-up and measured time (with 3 replicas on one disk, 3x that lands on the disk).`;

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const benchVolumeName = "bench";
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
const maxSeconds = 3600;

type Op = "write" | "read";
type Pattern = "random" | "sequential";
/** durable: every write fdatasynced on every in-sync replica before OK; cached: `{ durable: false }`. */
type Mode = "durable" | "cached";

/** A bound the issue sets for a row (issue 9 unless noted). */
type Target =
  /** Cairn's IOPS or MB/s at least this share of the echo's. */
  | { kind: "echoRatio"; bound: number }
  /** Cairn's CPU per op (all its processes) at most this multiple of the echo's. */
  | { kind: "echoCpuRatio"; bound: number }
  /** At least this many MB/s. */
  | { kind: "mbps"; bound: number }
  /** At most this many ms of CPU (all Cairn processes) per MiB written. */
  | { kind: "cpuMsPerMiB"; bound: number };

interface RowSpec {
  id: string;
  label: string;
  op: Op;
  pattern: Pattern;
  ioBytes: number;
  inFlight: number;
  /** Writes only. */
  mode?: Mode;
  /** Sequential writes only: a region never written, or one written before. */
  blocks?: "fresh" | "overwrite";
  targets: Target[];
}

/** Cached rows: each worker FLUSHes after every this many of its writes (and once at the end). */
const flushEvery = 32;
const cachedNote = `cached, FLUSH every ${flushEvery} writes per worker and at the end`;
/** A region written before the rows that overwrite it (and the read rows, inside it). */
const overwriteRegionBytes = 256 * MiB;
/** Random write rows write anywhere in the volume's first GiB; fresh regions come after it. */
const randomWriteRegionBytes = 1 * GiB;
/** Fastest a fresh-blocks row is expected to write; its never-written region is sized by it. */
const freshBudgetMBps = 500;
const freshNote = "fresh blocks (file-system allocation)";
const overwriteNote = "overwrite (region written before)";

const seqWriteTargets: Target[] = [
  { kind: "mbps", bound: 100 },
  { kind: "cpuMsPerMiB", bound: 20 },
];

function seqWriteSpec(mode: Mode, blocks: "fresh" | "overwrite"): RowSpec {
  return {
    id: `seqwrite-1m-qd8-${mode}-${blocks}`,
    label: `1 MiB sequential write, ${mode === "cached" ? cachedNote : "durable"}, ${
      blocks === "fresh" ? freshNote : overwriteNote
    }, 8 in flight`,
    op: "write",
    pattern: "sequential",
    ioBytes: 1 * MiB,
    inFlight: 8,
    mode,
    blocks,
    targets: seqWriteTargets,
  };
}

const rowSpecs: RowSpec[] = [
  {
    id: "randwrite-4k-qd1-durable",
    label: "4 KiB random write, durable, 1 in flight",
    op: "write",
    pattern: "random",
    ioBytes: 4 * KiB,
    inFlight: 1,
    mode: "durable",
    targets: [],
  },
  {
    id: "randwrite-4k-qd32-durable",
    label: "4 KiB random write, durable, 32 in flight",
    op: "write",
    pattern: "random",
    ioBytes: 4 * KiB,
    inFlight: 32,
    mode: "durable",
    targets: [{ kind: "echoRatio", bound: 0.3 }, { kind: "echoCpuRatio", bound: 3 }],
  },
  {
    id: "randwrite-4k-qd32-cached",
    label: `4 KiB random write, ${cachedNote}, 32 in flight`,
    op: "write",
    pattern: "random",
    ioBytes: 4 * KiB,
    inFlight: 32,
    mode: "cached",
    targets: [],
  },
  {
    id: "randread-4k-qd1",
    label: "4 KiB random read, 1 in flight",
    op: "read",
    pattern: "random",
    ioBytes: 4 * KiB,
    inFlight: 1,
    targets: [],
  },
  {
    id: "randread-4k-qd32",
    label: "4 KiB random read, 32 in flight",
    op: "read",
    pattern: "random",
    ioBytes: 4 * KiB,
    inFlight: 32,
    // From the read-path issue; issue 9 asks that no read row gets more than 5% worse.
    targets: [{ kind: "echoRatio", bound: 0.6 }],
  },
  seqWriteSpec("durable", "fresh"),
  seqWriteSpec("durable", "overwrite"),
  seqWriteSpec("cached", "fresh"),
  seqWriteSpec("cached", "overwrite"),
  {
    id: "seqread-1m-qd8",
    label: "1 MiB sequential read, 8 in flight",
    op: "read",
    pattern: "sequential",
    ioBytes: 1 * MiB,
    inFlight: 8,
    targets: [],
  },
];

type Measured =
  | (LoadResult & {
    cpuPercent?: Record<string, number>;
    /** CPU seconds each process (and "host", "others") used during the measured phase. */
    cpuSeconds?: Record<string, number>;
    otherProcesses?: CpuSampler["others"];
  })
  | { error: string };

/** One target's verdict: what it asks, what was measured, and whether that meets it. */
interface Verdict {
  target: string;
  measured: string | null;
  /** null when it could not be judged (a cell failed). */
  pass: boolean | null;
}

interface RowResult extends Omit<RowSpec, "targets"> {
  unit: "IOPS" | "MB/s";
  cairn: Measured;
  echo: Measured;
  disk: Measured;
  kv: Measured | null;
  verdicts: Verdict[];
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
  /** nats-server's max_payload (sizes frames and replica batches, see ioLimitsFor). */
  natsMaxPayloadBytes: number;
}

function parseSettings(args: string[]): Settings | null {
  const settings: Settings = {
    seconds: 5,
    warmupSeconds: 1,
    jsonFile: null,
    only: null,
    natsMaxPayloadBytes: recommendedNatsMaxPayloadBytes,
  };
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
      case "--nats-max-payload":
        settings.natsMaxPayloadBytes = parseSize(value());
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

/** The processes whose CPU is Cairn's cost: the client (this process), nats-server, each node. */
const clientCpuName = "bench";
const natsCpuName = "nats";
const echoCpuName = "echo";

/** CPU seconds per operation of each named process, and their sum; undefined if not measured. */
function cpuPerOp(
  m: Measured | null,
  names: string[],
): { byName: Record<string, number>; total: number } | undefined {
  if (m === null || isError(m) || !m.cpuSeconds || m.ops === 0) return undefined;
  const byName: Record<string, number> = {};
  let total = 0;
  for (const name of names) {
    const seconds = m.cpuSeconds[name];
    if (seconds === undefined) continue;
    byName[name] = seconds / m.ops;
    total += seconds / m.ops;
  }
  return { byName, total };
}

/** CPU per op: microseconds for 4 KiB rows, milliseconds (per MiB) for 1 MiB rows. */
function formatCpu(seconds: number | undefined, unit: RowResult["unit"]): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return dash;
  return unit === "IOPS" ? `${Math.round(seconds * 1e6)} µs` : `${(seconds * 1e3).toFixed(1)} ms`;
}

/** Spawns the echo responder in its own Deno process and waits until it subscribed. */
function startEchoResponder(natsUrl: string): Promise<Deno.ChildProcess> {
  return spawnReady("./echo_responder.ts", [natsUrl, echoSubject]);
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
  /** The bench volume's size: the random-write GiB plus one fresh region per fresh row. */
  readonly volumeBytes: number;
  /** Bytes of never-written volume (and sparse disk file) each fresh-blocks row gets. */
  readonly freshRegionBytes: number;
  /** Node ids in cluster order, once the cluster is up. */
  nodeIds: string[] = [];
  private readonly random = xorshift(0xcafe);
  private readonly kvWritten: number[] = [];
  private readonly kvWrittenSet = new Set<number>();
  /** The volume's first this many bytes have been written (read rows, overwrite rows). */
  private writtenBytes = 0;
  /** Where the next fresh region starts; regions are handed out once, never reused. */
  private nextFreshAt = randomWriteRegionBytes;
  /** Each node's RSS once the memory volumes are open, before the rows. */
  private idleRss: (number | null)[] = [];
  private memorySetupError: string | null = null;
  private cleaned: Promise<void> | null = null;

  constructor(private readonly settings: Settings, specs: RowSpec[]) {
    const segment = 64 * MiB;
    const seconds = settings.seconds + settings.warmupSeconds;
    this.freshRegionBytes = Math.ceil((seconds * freshBudgetMBps * 1e6) / segment) * segment;
    const freshRows = specs.filter((s) => s.blocks === "fresh").length;
    this.volumeBytes = randomWriteRegionBytes + freshRows * this.freshRegionBytes;
  }

  private pids(): Record<string, number | undefined> {
    const cluster = this.rig.cluster;
    const pids: Record<string, number | undefined> = { [clientCpuName]: Deno.pid };
    if (cluster) {
      pids[natsCpuName] = cluster.nats.pid;
      cluster.nodes.forEach((node, i) => pids[node.id] = cluster.pidOf(i));
    }
    if (this.rig.echo) pids[echoCpuName] = this.rig.echo.pid;
    return pids;
  }

  async setUp(log: (line: string) => void): Promise<void> {
    log("starting nats-server and 3 nodes");
    const cluster = this.rig.cluster = await TestCluster.start({
      nodes: 3,
      natsMaxPayloadBytes: this.settings.natsMaxPayloadBytes,
    });
    this.nodeIds = cluster.nodes.map((n) => n.id);
    const url = cluster.natsUrl;
    log(`cluster up at ${url}; starting echo responder`);
    this.rig.echo = await startEchoResponder(url);
    presizeReceiveBuffers(); // as Cairn's own connections do
    this.rig.nc = await connect({ servers: url, name: "bench", noAsyncTraces: true });
    this.rig.echoRequester = new EchoRequester(this.rig.nc, echoSubject, peerTimeoutMs);
    this.rig.cairn = await connectCluster({ servers: url, name: "bench" });
    log(
      `creating volume ${benchVolumeName} (${(this.volumeBytes / GiB).toFixed(2)} GiB, ` +
        `${replicas} replicas)`,
    );
    const info = await this.rig.cairn.createVolume({
      name: benchVolumeName,
      sizeBytes: this.volumeBytes,
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

  /** The shared disk-ceiling file: fully written, so every write to it overwrites. */
  private async diskTarget(): Promise<DiskTarget> {
    if (!this.rig.disk) {
      this.rig.disk = await DiskTarget.create(
        `${this.rig.cluster!.root}/disk-ceiling`,
        diskFileBytes,
      );
    }
    return this.rig.disk;
  }

  /**
   * Offsets for one row: random blocks of a region, or a cursor shared by the workers that
   * starts at `startBytes`; it wraps around the region, or (`wrap` false: fresh blocks) fails
   * when the region is used up rather than write a block twice.
   */
  private offsets(
    spec: RowSpec,
    regionBytes: number,
    { startBytes = 0, wrap = true } = {},
  ): () => number {
    const slots = Math.floor(regionBytes / spec.ioBytes);
    if (spec.pattern === "random") {
      return () => startBytes + Math.floor(this.random() * slots) * spec.ioBytes;
    }
    let next = 0;
    return () => {
      if (next >= slots) {
        if (!wrap) {
          throw new Error(
            `fresh region of ${regionBytes / MiB} MiB used up (sized for ${freshBudgetMBps} MB/s)`,
          );
        }
        next = 0;
      }
      return startBytes + spec.ioBytes * next++;
    };
  }

  private async measure(
    spec: RowSpec,
    op: Operation,
    finish?: () => Promise<void>,
  ): Promise<Measured> {
    const sampler = new CpuSampler(() => this.pids());
    try {
      const result = await runLoad(op, {
        inFlight: spec.inFlight,
        seconds: this.settings.seconds,
        warmupSeconds: this.settings.warmupSeconds,
        bytesPerOp: spec.ioBytes,
        finish,
      }, sampler);
      return {
        ...result,
        cpuPercent: sampler.result,
        cpuSeconds: sampler.seconds,
        otherProcesses: sampler.others,
      };
    } catch (err) {
      return errorOf(err);
    }
  }

  /**
   * A write operation in the row's mode, and what ends each phase: durable writes as they
   * are; cached ones FLUSH after every flushEvery-th write of each worker, and once at the end.
   */
  private writeOp(
    spec: RowSpec,
    write: (worker: number, cached: boolean) => Promise<void>,
    flush: () => Promise<void>,
  ): { op: Operation; finish?: () => Promise<void> } {
    if (spec.mode !== "cached") return { op: (w) => write(w, false) };
    const writes = new Array<number>(spec.inFlight).fill(0);
    return {
      op: async (w) => {
        await write(w, true);
        if (++writes[w] % flushEvery === 0) await flush();
      },
      finish: flush,
    };
  }

  /** Writes the volume's first `bytes` once (1 MiB cached writes, then a FLUSH). */
  private async ensureWritten(bytes: number, log: (line: string) => void): Promise<void> {
    if (this.writtenBytes >= bytes) return;
    const volume = this.rig.volume!;
    log(`writing ${benchVolumeName} from ${this.writtenBytes / MiB} MiB to ${bytes / MiB} MiB`);
    const data = randomBytes(MiB);
    let next = this.writtenBytes;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < bytes) {
        const at = next;
        next += MiB;
        await volume.write(at, data, { durable: false });
      }
    }));
    await volume.flush();
    this.writtenBytes = bytes;
  }

  /** A never-written region of the volume for one fresh-blocks row. */
  private freshRegion(): number {
    const at = this.nextFreshAt;
    if (at + this.freshRegionBytes > this.volumeBytes) throw new Error("no fresh region left");
    this.nextFreshAt += this.freshRegionBytes;
    return at;
  }

  private async cairnRow(spec: RowSpec, log: (line: string) => void): Promise<Measured> {
    try {
      const volume = this.rig.volume;
      if (!volume) throw new Error("no bench volume");
      const data = randomBytes(spec.ioBytes);
      const before = { ...volume.coalescing };
      const logCoalescing = () => {
        const multis = volume.coalescing.multis - before.multis;
        const frames = volume.coalescing.framesInMultis - before.framesInMultis;
        if (multis > 0) {
          log(
            `${spec.id}: ${frames} frames went in ${multis} MULTI messages (${
              (frames / multis).toFixed(1)
            } each)`,
          );
        }
      };
      if (spec.op === "read") {
        await this.ensureWritten(readRegionBytes, log);
        const next = this.offsets(spec, readRegionBytes);
        return await this.measure(spec, async () => {
          const got = await volume.read(next(), spec.ioBytes);
          if (got.length !== spec.ioBytes) throw new Error(`short read: ${got.length}`);
        }).finally(logCoalescing);
      }
      let next: () => number;
      if (spec.blocks === "fresh") {
        next = this.offsets(spec, this.freshRegionBytes, {
          startBytes: this.freshRegion(),
          wrap: false,
        });
      } else if (spec.blocks === "overwrite") {
        await this.ensureWritten(overwriteRegionBytes, log);
        next = this.offsets(spec, overwriteRegionBytes);
      } else {
        next = this.offsets(spec, randomWriteRegionBytes);
      }
      const { op, finish } = this.writeOp(
        spec,
        (_w, cached) => volume.write(next(), data, cached ? { durable: false } : {}),
        () => volume.flush(),
      );
      return await this.measure(spec, op, finish).finally(logCoalescing);
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

  /** node:fs on the same disk: the same offsets pattern, mode and fresh/overwrite as the row. */
  private async diskRow(spec: RowSpec): Promise<Measured> {
    let fresh: DiskTarget | null = null;
    try {
      if (spec.blocks === "fresh") {
        fresh = await DiskTarget.createSparse(
          `${this.rig.cluster!.root}/disk-fresh-${spec.id}`,
          this.freshRegionBytes,
        );
      }
      const disk = fresh ?? await this.diskTarget();
      const next = this.offsets(spec, disk.sizeBytes, { wrap: fresh === null });
      const buffers = Array.from(
        { length: spec.inFlight },
        () => randomBytes(spec.ioBytes),
      );
      if (spec.op === "read") return await this.measure(spec, (w) => disk.read(next(), buffers[w]));
      const { op, finish } = this.writeOp(
        spec,
        (w, cached) =>
          cached ? disk.writeCached(next(), buffers[w]) : disk.write(next(), buffers[w]),
        () => disk.flush(),
      );
      return await this.measure(spec, op, finish);
    } catch (err) {
      return errorOf(err);
    } finally {
      await fresh?.close();
    }
  }

  /** JetStream KV as a block store: key b.<block>, one 4 KiB value each (no cached mode). */
  private async kvRow(spec: RowSpec): Promise<Measured | null> {
    if (spec.ioBytes !== 4 * KiB || spec.pattern !== "random" || spec.mode === "cached") {
      return null;
    }
    try {
      const kv = await this.kvBucket();
      const blocks = randomWriteRegionBytes / spec.ioBytes;
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

  /** Cairn's processes for CPU per op: client, nats-server, the owner, then the other nodes. */
  cairnCpuNames(): string[] {
    const owner = this.rig.owner;
    const nodes = owner && this.nodeIds.includes(owner)
      ? [owner, ...this.nodeIds.filter((id) => id !== owner)]
      : this.nodeIds;
    return [clientCpuName, natsCpuName, ...nodes];
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
    const { targets: _targets, ...rest } = spec;
    return {
      ...rest,
      unit,
      cairn,
      echo,
      disk,
      kv,
      verdicts: verdictsOf(spec, unit, cairn, echo, this.cairnCpuNames()),
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

/** Each of the row's targets judged against this run's cells. */
function verdictsOf(
  spec: RowSpec,
  unit: RowResult["unit"],
  cairn: Measured,
  echo: Measured,
  cairnNames: string[],
): Verdict[] {
  const echoNames = [clientCpuName, natsCpuName, echoCpuName];
  const judged = (target: string, value: number | undefined, text: string, ok: boolean) =>
    value === undefined || !Number.isFinite(value)
      ? { target, measured: null, pass: null }
      : { target, measured: text, pass: ok };
  return spec.targets.map((t): Verdict => {
    switch (t.kind) {
      case "echoRatio": {
        const r = ratio(cairn, echo, unit);
        return judged(
          `${unit} ≥ ${formatPercent(t.bound)} of echo`,
          r,
          formatPercent(r),
          (r ?? 0) >= t.bound,
        );
      }
      case "echoCpuRatio": {
        const c = cpuPerOp(cairn, cairnNames)?.total;
        const e = cpuPerOp(echo, echoNames)?.total;
        const r = c === undefined || e === undefined || e === 0 ? undefined : c / e;
        return judged(
          `CPU/op ≤ ${t.bound}x echo's`,
          r,
          `${r?.toFixed(1)}x`,
          (r ?? Infinity) <= t.bound,
        );
      }
      case "mbps": {
        const v = isError(cairn) ? undefined : cairn.mbPerSec;
        return judged(`≥ ${t.bound} MB/s`, v, `${v?.toFixed(0)} MB/s`, (v ?? 0) >= t.bound);
      }
      case "cpuMsPerMiB": {
        const c = cpuPerOp(cairn, cairnNames)?.total;
        const ms = c === undefined ? undefined : (c * 1e3) / (spec.ioBytes / MiB);
        return judged(
          `CPU ≤ ${t.bound} ms/MiB`,
          ms,
          `${ms?.toFixed(1)} ms`,
          (ms ?? Infinity) <= t.bound,
        );
      }
    }
  });
}

function verdictCell(v: Verdict): string {
  if (v.pass === null) return "no result";
  return `${v.pass ? "met" : "NOT met"} (${v.measured})`;
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
    "Targets",
    "Result",
  ];
  const lines = rows.map((r) => {
    const ok = !isError(r.cairn);
    return [
      r.label,
      formatValue(r.cairn, r.unit),
      ok ? formatMs((r.cairn as LoadResult).p50Ms) : dash,
      ok ? formatMs((r.cairn as LoadResult).p99Ms) : dash,
      formatValue(r.echo, r.unit),
      formatPercent(ratio(r.cairn, r.echo, r.unit)),
      formatValue(r.disk, r.unit),
      r.kv === null ? "n/a" : formatValue(r.kv, r.unit),
      r.kv === null ? dash : formatPercent(ratio(r.cairn, r.kv, r.unit)),
      r.verdicts.length ? r.verdicts.map((v) => v.target).join("; ") : dash,
      r.verdicts.length ? r.verdicts.map(verdictCell).join("; ") : dash,
    ];
  });
  for (const m of memory) {
    const notes = [
      m.idleRssBytes === null ? null : `${formatMiB(m.idleRssBytes)} before the load`,
      m.peakBytes === null ? null : `peak ${formatMiB(m.peakBytes)}`,
    ].filter((n) => n !== null).join(", ");
    const measured = m.error
      ? `error: ${m.error}`
      : m.rssBytes === null
      ? dash
      : formatMiB(m.rssBytes);
    lines.push([
      `Node ${m.node}${m.node === owner ? "*" : ""} VmRSS, ${m.volumesOpen} volumes open, ` +
      `after the rows above (${notes})`,
      measured,
      ...Array.from({ length: 7 }, () => dash),
      `< ${formatMiB(rssTargetBytes)}`,
      m.pass === null ? "no result" : `${m.pass ? "met" : "NOT met"} (${measured})`,
    ]);
  }
  return markdownTable(header, lines);
}

/**
 * CPU per operation of each process during the Cairn run, next to the echo's during the echo
 * run of the same row (µs per op for 4 KiB rows, ms per op = per MiB for 1 MiB rows).
 */
function renderCpuTable(rows: RowResult[], cairnNames: string[], owner: string | null): string {
  const echoNames = [clientCpuName, natsCpuName, echoCpuName];
  const nodeNames = cairnNames.slice(2);
  const header = [
    "Row",
    "client",
    "nats-server",
    ...nodeNames.map((n) => n === owner ? `${n}* (owner)` : `${n} (replica)`),
    "Cairn total",
    "Echo: client",
    "Echo: nats-server",
    "Echo: responder",
    "Echo total",
    "Cairn/echo CPU",
    "Machine CPU % during the Cairn run",
  ];
  const lines = rows.map((r) => {
    const cairn = cpuPerOp(r.cairn, cairnNames);
    const echo = cpuPerOp(r.echo, echoNames);
    const pct = isError(r.cairn) ? undefined : r.cairn.cpuPercent;
    const machine = pct?.[hostCpuName] === undefined
      ? dash
      : `${pct[hostCpuName]}/${navigator.hardwareConcurrency * 100} (softirq ${
        pct[`${hostCpuName}.softirq`] ?? "?"
      }; processes not the bench's: ${pct[othersCpuName] ?? "?"})`;
    return [
      r.label,
      ...cairnNames.map((n) => formatCpu(cairn?.byName[n], r.unit)),
      formatCpu(cairn?.total, r.unit),
      ...echoNames.map((n) => formatCpu(echo?.byName[n], r.unit)),
      formatCpu(echo?.total, r.unit),
      cairn && echo && echo.total > 0 ? `${(cairn.total / echo.total).toFixed(1)}x` : dash,
      machine,
    ];
  });
  return markdownTable(header, lines);
}

function renderMachine(machine: MachineInfo, settings: Settings, volumeBytes: number): string {
  return [
    `Machine: ${machine.cores} cores (${machine.cpuModel}), ${
      (machine.memoryBytes / GiB).toFixed(1)
    } GiB memory, Linux ${machine.kernel}`,
    `Deno: ${machine.deno}`,
    `nats-server: ${machine.natsServer}, max_payload ${
      settings.natsMaxPayloadBytes / MiB
    } MiB: frames up to ${ioLimitsFor(settings.natsMaxPayloadBytes).ioBytes / KiB} KiB, ` +
    `replica batches up to ${
      ioLimitsFor(settings.natsMaxPayloadBytes).replicaBatchBytes / KiB
    } KiB`,
    `Date: ${machine.date}; 1-minute load average at start: ${machine.loadAverage ?? "unknown"}`,
    `Setup: local cluster, 1 nats-server + 3 nodes on loopback; volume ${benchVolumeName} ` +
    `${(volumeBytes / GiB).toFixed(2)} GiB (random writes in its first ` +
    `${randomWriteRegionBytes / GiB} GiB, reads in its first ${readRegionBytes / MiB} MiB, ` +
    `overwrite rows in its first ${overwriteRegionBytes / MiB} MiB, each fresh-blocks row in a ` +
    `region of its own after the first GiB), ${replicas} replicas, default segment size; ` +
    `${settings.seconds} s per measurement after ${settings.warmupSeconds} s warm-up.`,
    `Durable = a write without options (fdatasync on every in-sync replica before OK). Cached = ` +
    `write(offset, data, { durable: false }) (OK once every in-sync replica applied it); each ` +
    `worker FLUSHes after each ${flushEvery} of its writes, and one FLUSH after the last write ` +
    `ends the measured time (inside it). Fresh blocks = a region of the volume never written ` +
    `(sparse segment files: the file system allocates); overwrite = the first ` +
    `${overwriteRegionBytes / MiB} MiB, written before the row.`,
    `Echo = NATS request/reply to a responder in another Deno process, same payload both ways, ` +
    `same in flight, requests sent like Cairn's client (one inbox subscription). Disk = node:fs on ` +
    `the same file system, same mode: durable writes are pwrite + fdatasync with group commit at ` +
    `the same in flight, cached ones pwrite with the same FLUSH (fdatasync) pattern; fresh-blocks ` +
    `rows write a new sparse file, the others a fully written one; reads are preads of a written ` +
    `file (page cache). KV peer = JetStream KV bucket (file storage, history 1), key b.<block>, ` +
    `4 KiB values (no cached mode, so n/a on cached rows).`,
  ].join("\n");
}

async function main(): Promise<number> {
  let settings: Settings | null;
  try {
    settings = parseSettings(Deno.args);
  } catch (err) {
    console.error(`bench: ${(err as Error).message}\n${usage()}`);
    return 2;
  }
  if (!settings) {
    console.log(usage());
    return 0;
  }
  const log = (line: string) => console.error(`bench: ${line}`);
  const started = performance.now();
  const machine = await machineInfo();
  const only = settings.only?.split(",").filter(Boolean) ?? [];
  const specs = rowSpecs.filter((s) => !only.length || only.some((text) => s.id.includes(text)));
  const bench = new Bench(settings, specs);
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
    for (const spec of specs) {
      if (interrupted) break;
      if (setupError) {
        const failed = { error: setupError.slice("error: ".length) };
        const { targets: _targets, ...rest } = spec;
        const unit = spec.ioBytes >= MiB ? "MB/s" : "IOPS";
        rows.push({
          ...rest,
          unit,
          cairn: failed,
          echo: failed,
          disk: failed,
          kv: null,
          verdicts: verdictsOf(spec, unit, failed, failed, []),
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
  console.log(renderMachine(machine, settings, bench.volumeBytes));
  console.log("");
  console.log(renderTable(rows, memory, owner));
  console.log("");
  console.log(
    `* marks the owner of volume ${benchVolumeName} (${owner ?? "unknown"}). Echo carries the ` +
      `payload both ways, so for reads and 1 MiB rows it costs more than Cairn's traffic shape. ` +
      `Targets are issue 9's (the 4 KiB read target is the read-path issue's).`,
  );
  console.log("");
  console.log(
    "CPU per operation, by process (µs per 4 KiB op; ms per 1 MiB op, i.e. per MiB), from " +
      "/proc/<pid>/stat over the measured time; echo columns from the echo run of the same row:",
  );
  console.log("");
  console.log(renderCpuTable(rows, bench.cairnCpuNames(), owner));
  console.log("");
  console.log(
    `client = this bench process (Cairn's client library, or the echo requester). "Machine" is ` +
      `all cores from /proc/stat (loopback TCP and file-system work partly shows only there); ` +
      `the processes not the bench's are other work on this shared machine.`,
  );
  console.log(cell(`Total bench time ${elapsedSeconds.toFixed(0)} s.`));
  if (settings.jsonFile) {
    const report = {
      machine,
      settings: {
        seconds: settings.seconds,
        warmupSeconds: settings.warmupSeconds,
        natsMaxPayloadBytes: settings.natsMaxPayloadBytes,
        ioLimits: ioLimitsFor(settings.natsMaxPayloadBytes),
        volume: { name: benchVolumeName, sizeBytes: bench.volumeBytes, replicas },
        readRegionBytes,
        randomWriteRegionBytes,
        overwriteRegionBytes,
        freshRegionBytes: bench.freshRegionBytes,
        flushEvery,
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
