/**
 * One chaos run against real processes: a NATS cluster and node processes (LocalCluster), a
 * workload of concurrent clients, and the nemesis (chaos/faults.ts) killing, pausing and
 * restarting nodes and nats-servers. Afterwards everything is healed, the cluster settles, every
 * block is read once more, and the run is judged: no acknowledged write lost, every block's
 * history linearizable (sim/linearizability.ts), no read of bytes no write produced, `volume
 * verify` passing on every volume, and every volume with a serving owner.
 */
import * as fs from "node:fs";
import { type ClusterOptions, LocalCluster } from "../server/local_cluster.ts";
import { type CairnClient, connectCluster } from "../client/client.ts";
import type { Volume } from "../client/volume.ts";
import { mulberry32 } from "../actors/seeded_random.ts";
import { checkLinearizable, type Violation } from "../sim/linearizability.ts";
import { blockSizeBytes } from "../protocol/limits.ts";
import {
  ChaosHistory,
  type ChaosOp,
  errorsByKind,
  type Gap,
  type GarbageRead,
  garbageReads,
  longestWriteGap,
  type LostWrite,
  lostWrites,
  registerHistory,
} from "./history.ts";
import {
  allFaultKinds,
  type CrashRecord,
  type FaultKind,
  type FaultRecord,
  Nemesis,
  withTimeout,
} from "./faults.ts";
import { countNodeLogs, type NodeLogCounts } from "./logs.ts";
import { Workload, type WorkloadClient } from "./workload.ts";

export interface ChaosOptions {
  /** How long faults are injected, ms. */
  durationMs: number;
  seed: number;
  nodes?: number;
  /** nats-servers: 3 (a cluster with routes, default) or 1. */
  natsServers?: number;
  /** NATS authorization on: nodes and clients run as the node and admin users (docs/NATS_AUTH.md). */
  natsAuth?: boolean;
  clients?: number;
  volumes?: number;
  /** Blocks per volume (all of them hot). */
  blocks?: number;
  segmentBytes?: number;
  faults?: readonly FaultKind[];
  /** Fault spacing and lengths, ms. */
  gapMs?: [number, number];
  downMs?: [number, number];
  pauseMs?: [number, number];
  /** Longest settle wait after each fault, and at the end. */
  settleMs?: number;
  finalSettleMs?: number;
  /** Keep the cluster's directory (logs, data) even when the run passes. */
  keep?: boolean;
  sabotage?: "drop-write";
  log?: (line: string) => void;
}

export interface VerifyOutcome {
  volume: string;
  ok: boolean;
  problems: string[];
}

export interface ChaosResult {
  seed: number;
  options: Required<Omit<ChaosOptions, "sabotage" | "log" | "keep">> & { sabotage?: string };
  /** Where the cluster's logs and data are (removed after a passing run unless keep). */
  root: string;
  kept: boolean;
  wallMs: number;
  /** When faults started and stopped, ms since start. */
  chaosFromMs: number;
  chaosToMs: number;
  ops: ChaosOp[];
  errors: Map<string, number>;
  lostWrites: LostWrite[];
  violations: { volume: string; violation: Violation }[];
  blocksChecked: number;
  blocksUndecided: number;
  garbage: GarbageRead[];
  verify: VerifyOutcome[];
  /** Volumes with no serving owner at the end, and why. */
  ownerless: { volume: string; why: string }[];
  longestWriteGap: Gap;
  faults: FaultRecord[];
  /** Node processes that exited with no fault on them (each was started again). */
  crashes: CrashRecord[];
  logs: NodeLogCounts;
  /** Things that went wrong in the harness itself (a node that would not restart). */
  harnessErrors: string[];
  /** Ops that had not ended when the run was judged. */
  unfinished: number;
  ok: boolean;
}

const defaults = {
  nodes: 5,
  natsServers: 3,
  natsAuth: false,
  clients: 6,
  volumes: 3,
  blocks: 256,
  segmentBytes: 256 * 1024,
  gapMs: [1000, 4000] as [number, number],
  downMs: [1000, 8000] as [number, number],
  pauseMs: [500, 10_000] as [number, number],
  settleMs: 15_000,
  finalSettleMs: 60_000,
};

/** How long the end waits for the clients' ops in flight (the client gives up after 60 s). */
const drainMaxMs = 70_000;

export async function runChaos(input: ChaosOptions): Promise<ChaosResult> {
  const given = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined));
  const o = { ...defaults, faults: allFaultKinds, ...given } as typeof defaults & {
    faults: readonly FaultKind[];
  } & ChaosOptions;
  const log = input.log ?? ((line: string) => console.log(line));
  const t0 = performance.now();
  const now = () => performance.now() - t0;
  const stamp = (line: string) => log(`[${(now() / 1000).toFixed(1).padStart(6)} s] ${line}`);
  const seedRandom = mulberry32(o.seed);
  const harnessErrors: string[] = [];

  const root = await Deno.makeTempDir({ prefix: "cairn-chaos-" });
  stamp(
    `starting ${o.natsServers} nats-server(s) and ${o.nodes} nodes under ${root} (seed ${o.seed})`,
  );
  const clusterOptions: ClusterOptions = {
    nodes: o.nodes,
    natsCluster: o.natsServers,
    root,
    zoneOf: (i) => `zone-${String.fromCharCode(97 + (i % 3))}`,
    natsAuth: o.natsAuth,
  };
  const cluster = await LocalCluster.start(clusterOptions);
  const clientConnections: CairnClient[] = [];
  const connect = async (name: string) => {
    const c = await connectCluster({
      servers: cluster.natsUrls,
      name,
      auth: cluster.clientAuth ?? {},
    });
    clientConnections.push(c);
    return c;
  };
  const names = Array.from({ length: o.volumes }, (_, i) => `chaos-${i}`);
  const history = new ChaosHistory();
  let workload: Workload | undefined;
  let nemesis: Nemesis | undefined;
  let chaosFromMs = 0;
  let chaosToMs = 0;
  const verify: VerifyOutcome[] = [];
  const ownerless: { volume: string; why: string }[] = [];
  try {
    const control = await connect("chaos-control");
    for (const name of names) {
      await control.createVolume({
        name,
        sizeBytes: o.blocks * blockSizeBytes,
        segmentBytes: o.segmentBytes,
        replicas: 3,
        minInSync: 2,
      });
    }
    const clients: WorkloadClient[] = [];
    for (let i = 0; i < o.clients; i++) {
      const cairn = await connect(`chaos-c${i + 1}`);
      const volumes = new Map<string, Volume>();
      for (const name of names) volumes.set(name, await cairn.openVolume(name));
      clients.push({ id: `c${i + 1}`, cairn, volumes });
    }
    const clientSeeds = names.length + o.clients; // spread
    workload = new Workload(history, clients, {
      hotBlocks: o.blocks,
      maxBlocks: 4,
      writeFraction: 0.5,
      thinkMs: [0, 5],
      now,
      randomFor: (i) => mulberry32((o.seed ^ (0x9e3779b9 * (i + 1 + clientSeeds))) >>> 0),
      sabotage: input.sabotage,
    });
    nemesis = new Nemesis(cluster, control, names, {
      kinds: o.faults,
      gapMs: o.gapMs,
      downMs: o.downMs,
      pauseMs: o.pauseMs,
      settleMaxMs: o.settleMs,
      random: seedRandom,
      now,
      log: stamp,
    });
    stamp(`${names.length} volumes of ${o.blocks} blocks; ${o.clients} clients; faults on`);
    chaosFromMs = now();
    workload.start();
    nemesis.start();
    const progress = setInterval(() => {
      const done = history.ops.filter((op) => op.result !== undefined);
      const failed = done.filter((op) => op.result === "error").length;
      stamp(`ops ${done.length} (${failed} errors), ${workload!.inFlight.size} in flight`);
    }, 10_000);
    await new Promise((r) => setTimeout(r, o.durationMs));
    clearInterval(progress);

    stamp("faults off: healing");
    await nemesis.stop();
    chaosToMs = now();
    for (const fault of nemesis.faults) {
      if (fault.error) {
        harnessErrors.push(`undoing ${fault.kind} of ${fault.target}: ${fault.error}`);
      }
    }
    await healEverything(cluster, stamp, harnessErrors);

    stamp(`waiting for the ${workload.inFlight.size} ops in flight`);
    const drained = await withTimeout(workload.stop(), drainMaxMs).then(() => true, () => false);
    if (!drained) stamp(`ops still in flight after ${drainMaxMs} ms: judged as indeterminate`);

    stamp("waiting for every volume to have an owner and every replica in sync");
    const settledAt = await nemesis.waitSettled(o.finalSettleMs);
    stamp(settledAt === null ? `NOT settled within ${o.finalSettleMs} ms` : "settled");

    stamp("final reads of every block");
    const final = await connect("chaos-final");
    for (const name of names) {
      let volume: Volume;
      try {
        volume = await final.openVolume(name);
      } catch (err) {
        ownerless.push({ volume: name, why: `cannot open: ${(err as Error).message}` });
        continue;
      }
      let failed = 0;
      for (let b = 0; b < o.blocks; b += 16) {
        const op = await workload.read("final", volume, b, Math.min(16, o.blocks - b), true);
        if (op.result !== "ok") failed++;
      }
      if (failed > 0) {
        ownerless.push({ volume: name, why: `${failed} final reads failed after healing` });
      }
    }

    stamp("checking owners and running volume verify");
    const live = new Set(
      cluster.nodes.filter((n) => n.child && n.child.exitCode === null && !n.child.signalCode)
        .map((n) => n.id),
    );
    for (const name of names) {
      try {
        const info = await control.volumeInfo(name);
        if (!info.owner) ownerless.push({ volume: name, why: "layout names no owner" });
        else if (!live.has(info.owner)) {
          ownerless.push({ volume: name, why: `owner ${info.owner} is not a running node` });
        }
      } catch (err) {
        ownerless.push({ volume: name, why: `volume info failed: ${(err as Error).message}` });
      }
      verify.push(await verifyWithRetries(control, name));
    }
  } catch (err) {
    harnessErrors.push(`run aborted: ${(err as Error).stack ?? err}`);
  } finally {
    for (const c of clientConnections) {
      await withTimeout(c.close(), 5000).catch(() => c.nc.close().catch(() => {}));
    }
  }

  // ---- judging ----
  const ops = history.ops;
  const violations: { volume: string; violation: Violation }[] = [];
  let blocksChecked = 0;
  let blocksUndecided = 0;
  for (const name of names) {
    const result = checkLinearizable(registerHistory(ops, name), { maxViolations: 20 });
    blocksChecked += result.blocksChecked;
    blocksUndecided += result.blocksUndecided;
    for (const violation of result.violations) violations.push({ volume: name, violation });
  }
  const lost = lostWrites(ops);
  const garbage = garbageReads(ops);
  const logTexts = cluster.nodes.map((n) => {
    try {
      return fs.readFileSync(n.logFile, "utf8");
    } catch {
      return "";
    }
  });
  const logs = countNodeLogs(logTexts);
  const verifyFailed = verify.some((v) => !v.ok) || verify.length < names.length;
  const ok = violations.length === 0 && lost.length === 0 && garbage.length === 0 &&
    !verifyFailed && ownerless.length === 0 && harnessErrors.length === 0 &&
    (nemesis?.crashes.length ?? 0) === 0;
  const kept = !ok || Boolean(input.keep);
  if (kept) {
    // Every op, one JSON object a line, next to the node logs: the evidence for a failure.
    const lines = ops.map((op) => JSON.stringify(op)).join("\n");
    await Deno.writeTextFile(`${root}/history.jsonl`, lines + "\n").catch(() => {});
  }
  await cluster.stop().catch((err) => harnessErrors.push(`stopping the cluster: ${err}`));
  if (!kept) await Deno.remove(root, { recursive: true }).catch(() => {});
  const endMs = chaosToMs || now();
  return {
    seed: o.seed,
    options: {
      durationMs: o.durationMs,
      seed: o.seed,
      nodes: o.nodes,
      natsServers: o.natsServers,
      natsAuth: o.natsAuth,
      clients: o.clients,
      volumes: o.volumes,
      blocks: o.blocks,
      segmentBytes: o.segmentBytes,
      faults: o.faults,
      gapMs: o.gapMs,
      downMs: o.downMs,
      pauseMs: o.pauseMs,
      settleMs: o.settleMs,
      finalSettleMs: o.finalSettleMs,
      sabotage: input.sabotage,
    },
    root,
    kept,
    wallMs: now(),
    chaosFromMs,
    chaosToMs,
    ops,
    errors: errorsByKind(ops),
    lostWrites: lost,
    violations,
    blocksChecked,
    blocksUndecided,
    garbage,
    verify,
    ownerless,
    longestWriteGap: longestWriteGap(ops, chaosFromMs, endMs),
    faults: nemesis?.faults ?? [],
    crashes: nemesis?.crashes ?? [],
    logs,
    harnessErrors,
    unfinished: ops.filter((op) => op.result === undefined).length,
    ok,
  };
}

/** Starts every node and nats-server that is not running (the nemesis heals its own faults). */
async function healEverything(
  cluster: LocalCluster,
  log: (line: string) => void,
  errors: string[],
): Promise<void> {
  for (let i = 0; i < cluster.natsCount; i++) {
    if (cluster.natsPid(i) !== undefined) continue;
    log(`starting nats-server ${i + 1}, which is down`);
    await cluster.startNats(i).catch((err) =>
      errors.push(`starting nats-server ${i + 1}: ${(err as Error).message.split("\n")[0]}`)
    );
  }
  for (const [i, node] of cluster.nodes.entries()) {
    if (node.child && node.child.exitCode === null && node.child.signalCode === null) continue;
    log(`starting ${node.id}, which is down`);
    await cluster.startNode(i).catch((err) =>
      errors.push(`starting ${node.id}: ${(err as Error).message.split("\n")[0]}`)
    );
  }
}

/** `volume verify`, tried again (5 s apart, 4 tries) while replicas may still be catching up. */
async function verifyWithRetries(control: CairnClient, name: string): Promise<VerifyOutcome> {
  let problems: string[] = [];
  for (let attempt = 0; attempt < 4; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, 5000));
    try {
      const report = await control.verifyVolume(name);
      if (report.ok) return { volume: name, ok: true, problems: [] };
      problems = report.mismatches.map((m) => `segment ${m.segment}: ${m.problem}`);
    } catch (err) {
      problems = [`verify failed: ${(err as Error).message}`];
    }
  }
  return { volume: name, ok: false, problems };
}
