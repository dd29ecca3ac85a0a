/**
 * One simulated run: a cluster of real node runtimes, clients writing unique
 * values and reading them back, faults injected at random, and the checks:
 * every read linearizable per block (so no acknowledged write is lost), at
 * most one owner serving per volume term, replicas converge, no actor stuck.
 * The same seed replays the same run exactly.
 */
import { SimCluster } from "./cluster.ts";
import { type FlushAnswered, SimClient, type SimVolume, writeIdOfWhole } from "./client.ts";
import { checkLinearizable, describe, type FlushOp, type HistoryOp } from "./linearizability.ts";
import { checkFlushesAfterLosses, type ClientFlush } from "./flush_check.ts";
import {
  AckLog,
  checkFlushDurable,
  inSyncThroughout,
  LayoutTimeline,
  lostPower,
  stayedInSync,
  type SyncedBlock,
  SyncedMemo,
} from "./flush_durability.ts";
import { subjects } from "../protocol/subjects.ts";
import { encodeJson } from "../protocol/control.ts";
import { segmentFileSizeBytes } from "../actors/replica/segment_file.ts";
import { segmentFileName } from "../actors/replica/host.ts";
import { blockSizeBytes } from "../protocol/limits.ts";
import type { ControlReply, VolumeInfo, VolumeLayout } from "../protocol/schemas.ts";

export interface SimOptions {
  seed: number;
  /** Virtual milliseconds of load with faults. */
  durationMs: number;
  nodes?: number;
  clients?: number;
  /** Print node logs into the trace (for replaying one seed). */
  traceLogs?: boolean;
}

/** What one run, or many added up, amounts to. */
export interface SimTotals {
  simulatedMs: number;
  realMs: number;
  operations: number;
  failedOperations: number;
  faults: Map<string, number>;
  checks: Map<string, number>;
}

export interface SimResult extends SimTotals {
  seed: number;
  ok: boolean;
  failures: string[];
  trace: string;
}

const segmentBytes = 256 * 1024;
const segments = 4;
const blocksPerSegment = segmentBytes / blockSizeBytes;
/** The KV key of the simulated volume's layout. */
const volumeLayoutKey = "vol.sim.layout";
/** Virtual time after the faults stop for the cluster to settle before the final checks. */
const settleMs = 45_000;
/** Gap between two fault attempts (a disruptive one is skipped while another is active). */
const faultGapMinMs = 50;
const faultGapMaxMs = 500;
/** At most this many disruptive faults (down, paused, cut off) at once: a volume survives one. */
const maxConcurrentDisruptions = 1;

type FaultKind =
  | "kill"
  | "long-kill"
  | "power-loss"
  | "pause"
  | "isolate"
  | "partition"
  | "drop-burst"
  | "fsync-failure"
  | "bit-rot"
  | "handoff"
  | "blackout"
  | "power-loss-reads";

const faultWeights: [FaultKind, number][] = [
  ["kill", 3],
  ["long-kill", 1],
  ["power-loss", 2],
  ["pause", 3],
  ["isolate", 2],
  ["partition", 1],
  ["drop-burst", 2],
  ["fsync-failure", 1],
  ["bit-rot", 2],
  ["handoff", 3],
  // Every node loses power at once (at most one a seed, see maxBlackouts): every copy of
  // every segment may lose its unflushed cached writes, the one loss the checker forgives.
  ["blackout", 1],
  // A node loses power while clients only read, for a while after it is back: its replicas
  // that nobody writes stay in sync in the layout, so a copy that lost unflushed cached
  // writes would be read unless it is suspect (host.ts). Found nothing else finds that.
  ["power-loss-reads", 2],
];
/** Blackouts per seed at most: each costs a takeover of the whole volume. */
const maxBlackouts = 1;

export async function runSeed(options: SimOptions): Promise<SimResult> {
  const realStart = performance.now();
  const nodeCount = options.nodes ?? 5;
  const cluster = new SimCluster({
    seed: options.seed,
    nodes: nodeCount,
    traceLogs: options.traceLogs,
  });
  const { scheduler, network } = cluster;
  cluster.onViolation = (message) => fail(message);
  /** Every layout of the simulated volume and when it was written (the FLUSH oracle's). */
  const layouts = new LayoutTimeline();
  // Terms move only with ownership: a layout write changes owner and term (a takeover or
  // a handoff) or replica states (an owner's edit), never both, and never the term alone
  // downward. Checked on every write to the KV.
  cluster.kv.onWrite = (key, before, after) => {
    if (key === volumeLayoutKey) layouts.record(scheduler.nowMs, JSON.parse(after) as VolumeLayout);
    if (!key.endsWith(".layout") || before === undefined) return;
    const a = JSON.parse(before) as VolumeLayout;
    const b = JSON.parse(after) as VolumeLayout;
    countCheck("layout writes checked");
    const termMoved = a.term !== b.term || a.owner !== b.owner;
    const statesMoved = JSON.stringify(a.segments) !== JSON.stringify(b.segments);
    if (termMoved && statesMoved) {
      fail(`a layout write changed the term (${a.term} -> ${b.term}) and replica states at once`);
    } else if (termMoved && b.term !== a.term + 1) {
      fail(`a layout write moved the term from ${a.term} to ${b.term}`);
    }
  };
  const failures: string[] = [];
  const faults = new Map<string, number>();
  const checks = new Map<string, number>();
  const countFault = (kind: string) => faults.set(kind, (faults.get(kind) ?? 0) + 1);
  const countCheck = (kind: string, n = 1) => checks.set(kind, (checks.get(kind) ?? 0) + n);
  const history: HistoryOp[] = [];
  const flushes: FlushOp[] = [];
  const clientFlushes: ClientFlush[] = [];
  /** Times of blackouts (every node lost power at once, no client op in flight). */
  const losses: number[] = [];
  let clients: SimClient[] = [];
  const fail = (message: string) => {
    failures.push(message);
    scheduler.trace("VIOLATION", message);
  };

  // ---- start the nodes and create a volume ----
  for (const id of cluster.nodes.keys()) scheduler.schedule(0, () => void cluster.start(id), id);
  await scheduler.runFor(200);
  const admin = network.endpoint("admin");
  const control = async <T>(op: string, body: unknown): Promise<T> => {
    const raw = await admin.request(subjects.control(op as never), encodeJson(body), 30_000);
    const reply = JSON.parse(new TextDecoder().decode(raw)) as ControlReply<T>;
    if (!reply.ok) throw new Error(`${op}: ${reply.error.code}: ${reply.error.message}`);
    return reply.result;
  };
  let info: VolumeInfo | null = null;
  const created = control<VolumeInfo>("volume.create", {
    name: "sim",
    sizeBytes: segmentBytes * segments,
    segmentBytes,
    replicas: 3,
    // Odd seeds read round-robin (a replica that lost data is read too), even seeds `local`,
    // the default (the owner reads its own copy first, as a cut-off owner would).
    readPolicy: options.seed % 2 ? "round-robin" : "local",
  }).then((v) => (info = v), (err) => fail(`volume create: ${err.message}`));
  await scheduler.runUntil(() => info !== null || failures.length > 0, 60_000);
  await created;
  if (!info) {
    return finish();
  }
  const volumeInfo: VolumeInfo = info;
  const volume: SimVolume = {
    name: volumeInfo.name,
    incarnation: volumeInfo.incarnation,
    blocks: (segmentBytes * segments) / blockSizeBytes,
  };

  // ---- the FLUSH oracle (flush_durability.ts) ----
  const acks = new AckLog();
  const syncedMemo = new SyncedMemo();
  /** Checks begun at FLUSH replies: they read copies taken then, and finish in promise jobs. */
  const flushChecks: Promise<void>[] = [];
  /** Replicas found lacking at FLUSHes: the first few are reported, the rest counted. */
  let flushProblems = 0;
  const flushProblemsShown = 5;
  const flushAnswered = (flush: FlushAnswered) => {
    const { endMs } = flush;
    const { powerLossesMs } = cluster;
    const inSync = inSyncThroughout(layouts.during(flush.startMs, endMs));
    // A copy found synced earlier counts only while its node kept power and it stayed in sync.
    syncedMemo.forgetUnless((node, segment, sinceMs) =>
      !lostPower(powerLossesMs, node, sinceMs, endMs) &&
      stayedInSync(layouts.during(sinceMs, endMs), node, segment)
    );
    const reads = new Map<string, Map<number, SyncedBlock>>();
    const input = {
      ...flush,
      inSync,
      powerLossesMs,
      blocksPerSegment,
      synced: (node: string, block: number, atLeast: number) => {
        const known = syncedMemo.get(node, Math.floor(block / blocksPerSegment), block);
        return known !== undefined && known >= atLeast ? known : reads.get(node)?.get(block);
      },
    };
    // What the memo cannot vouch for is read from copies of the nodes' synced state, taken
    // now, at the OK.
    const copies = [...checkFlushDurable(input).unread].map(([node, blocks]) =>
      cluster.durableBlocks(node, volumeInfo.id, blocks, blocksPerSegment).then((read) =>
        [node, read] as const
      )
    );
    flushChecks.push(
      (async () => {
        for (const [node, read] of await Promise.all(copies)) {
          const here = new Map<number, SyncedBlock>();
          for (const [block, copy] of read) {
            const held: SyncedBlock = !copy
              ? "missing"
              : copy.state === "corrupt"
              ? "corrupt"
              : copy.state === "written"
              ? writeIdOfWhole(copy.data, block)
              : 0;
            here.set(block, held);
            if (typeof held === "number") {
              syncedMemo.record(node, Math.floor(block / blocksPerSegment), block, held, endMs);
            }
          }
          reads.set(node, here);
        }
        const checked = checkFlushDurable(input);
        if (checked.unread.size) throw new Error("blocks left unread after reading them");
        countCheck("FLUSHes answered OK, synced on every in-sync replica");
        countCheck("block copies synced as a FLUSH promised", checked.blocksChecked);
        countCheck(
          "(observed, not a check) block copies not judged at a FLUSH: power lost since the write",
          checked.exemptPowerLoss,
        );
        countCheck(
          "(observed, not a check) block copies not judged at a FLUSH: rotten",
          checked.unjudgedCorrupt,
        );
        for (const problem of checked.problems) {
          if (flushProblems++ < flushProblemsShown) fail(`flush-durability: ${problem}`);
        }
      })().catch((err) => fail(`flush-durability: the check failed: ${(err as Error).stack}`)),
    );
  };

  // ---- clients ----
  let writeIds = 0;
  const clientCount = options.clients ?? 3;
  clients = Array.from({ length: clientCount }, (_, i) =>
    new SimClient(
      `c${i + 1}`,
      i,
      clientCount,
      network.endpoint(`c${i + 1}`),
      scheduler,
      volume,
      history,
      () => ++writeIds,
      flushes,
      clientFlushes,
      { acks, answered: flushAnswered },
    ));
  const runs = clients.map((c) => c.run(0.6));

  // ---- the single-owner-per-term monitor ----
  const servingByTerm = new Map<number, string>();
  let lastServingNode: string | null = null;
  let monitoring = true;
  const monitor = () => {
    for (const node of cluster.nodes.values()) {
      if (!node.runtime || node.state === "crashed") continue;
      for (const actor of node.runtime.supervisor?.actorStates() ?? []) {
        if (actor.state !== "serving") continue;
        const holder = servingByTerm.get(actor.term);
        countCheck("single owner per term");
        if (holder === undefined) {
          servingByTerm.set(actor.term, node.id);
          if (lastServingNode !== null && lastServingNode !== node.id) {
            // Takeovers of a dead or cut-off owner count here, and so do handoffs.
            countCheck("(observed, not a check) owner changes, by handoff or failover");
          }
          lastServingNode = node.id;
        } else if (holder !== node.id) {
          fail(
            `two owners served volume ${actor.name} at term ${actor.term}: ${holder} and ${node.id}`,
          );
        }
      }
    }
    if (monitoring) scheduler.schedule(25, monitor);
  };
  monitor();

  // ---- faults ----
  let disruptions = 0;
  let blackingOut = false;
  const nodeIds = [...cluster.nodes.keys()];
  const rotten = new Set<string>();
  const fullyRedundant = () =>
    currentLayout()?.value.segments.every((s) => s.replicas.every((r) => r.state === "in-sync")) ??
      false;
  const anySuspect = () =>
    [...cluster.nodes.values()].some((n) => (n.runtime?.host.suspectReplicas ?? 0) > 0);
  const injectFault = () => {
    const total = faultWeights.reduce((n, [, w]) => n + w, 0);
    let pick = scheduler.random() * total;
    const kind = faultWeights.find(([, w]) => (pick -= w) < 0)![0];
    const node = scheduler.pick(nodeIds);
    const sim = cluster.nodes.get(node)!;
    const disruptive = [
      "kill",
      "long-kill",
      "power-loss",
      "pause",
      "isolate",
      "partition",
      "fsync-failure",
      "drop-burst",
      "blackout",
      "power-loss-reads",
    ];
    if (kind === "blackout" && losses.length + (blackingOut ? 1 : 0) >= maxBlackouts) return;
    if (disruptive.includes(kind)) {
      if (disruptions >= maxConcurrentDisruptions || sim.state !== "up") return;
      // A power loss can tear an unacknowledged write in place (new meta, old data); with a
      // single in-sync copy left that block has no good copy of its newest version. Cairn
      // cannot yet tell that from rot (docs/SEGMENT_FORMAT.md), so these two faults wait
      // until every segment is fully redundant again.
      // Copies a power loss left suspect count as not redundant until an owner has judged
      // them (caught up, or kept where all were suspect): another power loss meanwhile can
      // keep a copy out of the takeover that judges them, and the copies it compares may
      // each have torn the same block (seeds 72, 1138, 1406, 1499: after a blackout).
      if (
        ["power-loss", "fsync-failure", "blackout", "power-loss-reads"].includes(kind) &&
        (!fullyRedundant() || anySuspect())
      ) return;
      disruptions++;
    }
    const forMs = scheduler.int(100, 3000);
    countFault(kind);
    scheduler.trace("fault", `${kind} ${node} for ${forMs} ms`);
    switch (kind) {
      case "kill":
      case "long-kill":
        cluster.kill(node);
        // A long kill outlasts the replica grace period: its replicas are rebuilt elsewhere,
        // and its files are orphans when it returns.
        scheduler.schedule(kind === "long-kill" ? scheduler.int(8000, 15_000) : forMs, () => {
          disruptions--;
          void cluster.start(node);
        });
        return;
      case "power-loss": {
        // Half at once, half during the node's next segment-file fdatasync (a checkpoint's
        // or a large write's), where a power loss finds the most windows.
        if (scheduler.chance(0.5)) cluster.powerLoss(node);
        else cluster.powerLossAtSync.add(node);
        scheduler.schedule(Math.max(forMs, 500), () => {
          if (cluster.powerLossAtSync.delete(node)) cluster.powerLoss(node);
          scheduler.schedule(100, () => {
            disruptions--;
            void cluster.start(node);
          });
        });
        return;
      }
      case "pause":
        cluster.pause(node);
        scheduler.schedule(forMs, () => {
          disruptions--;
          cluster.resume(node);
        });
        return;
      case "isolate":
        network.isolate(node);
        scheduler.schedule(forMs, () => {
          disruptions--;
          network.heal();
        });
        return;
      case "partition": {
        // The node alone, or with one client that can reach it and nothing else (the case read
        // leases exist for: a cut-off owner answering a client it can still hear).
        const withClient = scheduler.chance(0.5) ? [scheduler.pick(["c1", "c2", "c3"])] : [];
        const majority = [...nodeIds.filter((n) => n !== node), "kv", "admin", "final"]
          .concat(["c1", "c2", "c3"].filter((c) => !withClient.includes(c)));
        network.partition([[node, ...withClient], majority]);
        // Long enough, often, for the others to take over what the cut-off node owned.
        scheduler.schedule(forMs * 3, () => {
          disruptions--;
          network.heal();
        });
        return;
      }
      case "drop-burst":
        // Messages lost as on a NATS reconnect; every lost write batch costs a replica a catch-up.
        network.setDropProbability(0.02);
        scheduler.schedule(forMs, () => {
          disruptions--;
          network.setDropProbability(0);
        });
        return;
      case "fsync-failure": {
        // The next fdatasync on that node's disk fails; its host fail-stops; a person
        // replaces the disk's fault and restarts the node later.
        const removeFault = sim.disk.failDatasync(() => true, { times: 1 });
        scheduler.schedule(forMs, () => {
          disruptions--;
          // The machine is rebooted: what the failed fdatasync did not make durable is gone.
          cluster.powerLoss(node);
          removeFault();
          scheduler.schedule(100, () => void cluster.start(node));
        });
        return;
      }
      case "bit-rot": {
        const segment = scheduler.int(0, segments - 1);
        const block = scheduler.int(0, segmentBytes / blockSizeBytes - 1);
        const key = `${segment}/${block}`;
        if (rotten.has(key)) return; // one rotten copy of a block at most
        // Only while the segment has every replica in sync: rotting a block's last good copy
        // is real data loss (scrub, not built yet, is what prevents it), not a test of Cairn.
        const replicas = currentLayout()?.value.segments[segment].replicas ?? [];
        if (
          replicas.length < 3 || replicas.some((r) => r.state !== "in-sync") ||
          !replicas.some((r) => r.node === node)
        ) return;
        const path = `/${node}/segments/${volumeInfo.id}/${segmentFileName(segment)}`;
        if (!sim.disk.exists(path)) return;
        rotten.add(key);
        const dataStart = segmentFileSizeBytes(segmentBytes, blockSizeBytes) - segmentBytes;
        sim.disk.corrupt(path, dataStart + block * blockSizeBytes + 100, 8);
        return;
      }
      case "power-loss-reads": {
        for (const c of clients) c.readsOnly = true;
        cluster.powerLoss(node);
        scheduler.schedule(scheduler.int(100, 1000), () => {
          void cluster.start(node);
          // Reads only until well after the restart, then writes again.
          scheduler.schedule(scheduler.int(1000, 3000), () => {
            for (const c of clients) c.readsOnly = false;
            disruptions--;
          });
        });
        return;
      }
      case "blackout": {
        // Clients finish what they have in flight (a FLUSH after a write included) and start
        // nothing new; then every node loses power at the same instant; they restart
        // together. The checker's model of the loss needs no op in flight at it.
        blackingOut = true;
        let release = () => {};
        const held = new Promise<void>((resolve) => (release = resolve));
        for (const c of clients) c.hold = held;
        const startedMs = scheduler.nowMs;
        const whenQuiet = () => {
          const quiet = clients.every((c) => c.idle);
          if (!quiet && scheduler.nowMs - startedMs < 60_000) {
            scheduler.schedule(5, whenQuiet);
            return;
          }
          // Redundancy is checked again at the cut: waiting for quiet can take seconds, and
          // a takeover meanwhile may have marked copies stale (seed 1196: n2's, 84 ms
          // before the cut; the one usable copy of a block then held it torn).
          const redundant = fullyRedundant() && !anySuspect();
          if (quiet && !redundant) {
            scheduler.trace("fault", `blackout skipped: not every segment is fully redundant`);
          }
          if (quiet && redundant) {
            for (const node of cluster.nodes.values()) {
              if (node.state === "paused") cluster.resume(node.id);
              cluster.powerLoss(node.id);
            }
            cluster.powerLossAtSync.clear();
            losses.push(scheduler.nowMs);
            scheduler.trace("fault", `blackout: every node lost power`);
          }
          scheduler.schedule(forMs, () => {
            // Only nodes that lost power restart (start makes a new runtime).
            if (quiet && redundant) { for (const id of nodeIds) void cluster.start(id); }
            for (const c of clients) c.hold = null;
            release();
            blackingOut = false;
            disruptions--;
          });
        };
        whenQuiet();
        return;
      }
      case "handoff": {
        const to = scheduler.pick(nodeIds);
        control("volume.move", { name: "sim", to }).catch(() => {});
        return;
      }
    }
  };
  const faultLoop = () => {
    if (scheduler.nowMs > options.durationMs) return;
    injectFault();
    scheduler.schedule(scheduler.int(faultGapMinMs, faultGapMaxMs), faultLoop);
  };
  scheduler.schedule(500, faultLoop);

  await scheduler.runFor(options.durationMs);

  // ---- heal everything and let the cluster settle ----
  for (const c of clients) c.stopped = true;
  network.heal();
  network.setDropProbability(0);
  for (const node of cluster.nodes.values()) {
    if (node.state === "paused") cluster.resume(node.id);
  }
  await scheduler.runFor(5000); // restarts scheduled by faults happen
  for (const node of cluster.nodes.values()) {
    if (node.state === "crashed" || node.failStopped) {
      if (node.failStopped) cluster.kill(node.id);
      scheduler.schedule(0, () => void cluster.start(node.id));
    }
  }
  const settled = Promise.all(runs);
  await scheduler.runFor(settleMs);
  await settled;
  monitoring = false;

  // ---- final reads of every block, recorded in the history ----
  const reader = new SimClient(
    "final",
    0,
    1,
    network.endpoint("final"),
    scheduler,
    volume,
    history,
    () => 0,
  );
  let readsDone = false;
  const finalReads = (async () => {
    for (let block = 0; block < volume.blocks; block += 16) {
      if (await reader.read(block, 16)) continue;
      // Block by block: a torn one (CORRUPT) goes to the history for the checker to judge.
      for (let b = block; b < block + 16; b++) {
        if (!await reader.readOrTorn(b)) fail(`final read of block ${b} failed`);
      }
    }
    readsDone = true;
  })();
  await scheduler.runUntil(() => readsDone, 120_000);
  if (!readsDone) {
    fail("final reads did not finish within 120 s of virtual time: an actor is stuck");
  } else await finalReads;

  // ---- checks ----
  await Promise.all(flushChecks);
  if (flushProblems > flushProblemsShown) {
    fail(`flush-durability: ${flushProblems - flushProblemsShown} more replicas lacking writes`);
  }
  const result = checkLinearizable(history, { losses, flushes });
  countCheck("linearizable blocks", result.blocksChecked);
  for (const v of result.violations.slice(0, 5)) {
    fail(`${v.kind}: ${v.message}\n      ${v.ops.map(describe).join("\n      ")}`);
  }
  if (losses.length) {
    countCheck("FLUSHes after a total power loss");
    for (const problem of checkFlushesAfterLosses(history, clientFlushes, losses).slice(0, 5)) {
      fail(`flush-after-loss: ${problem}`);
    }
  }
  await checkConverged();
  checkNotStuck();
  checkMetadataBudget();
  return finish();

  /**
   * No retry loop writes metadata on every attempt, and terms change only with ownership:
   * the layout's term and its writes stay within a budget set by the faults that move or
   * disturb ownership (each costs at most a few terms and a few state edits per segment).
   */
  function checkMetadataBudget(): void {
    const layout = currentLayout();
    if (!layout) return;
    const { term } = layout.value;
    const events = [...faults.values()].reduce((a, b) => a + b, 0) + nodeCount;
    countCheck("metadata budget");
    // Terms move only with ownership: a handoff costs two (the record, the new owner's
    // takeover), a restart of the owner one; a kill, power loss or failed fdatasync may
    // restart it. Anything above that is a term taken for something else.
    const ownershipEvents = ["handoff", "kill", "long-kill", "power-loss", "fsync-failure"]
      .reduce((n, kind) => n + (faults.get(kind) ?? 0), 0);
    // A failover may be followed by a failback (a handoff home): three terms per event.
    const termBudget = 3 * ownershipEvents + 2;
    if (term > termBudget) {
      fail(
        `owner term reached ${term}, above ${termBudget} for ${ownershipEvents} ownership events: terms are taken for something else`,
      );
    }
    const writeBudget = 12 * segments * events + 20;
    if (layout.revision > writeBudget) {
      fail(
        `the KV took ${layout.revision} writes, above ${writeBudget} for ${events} faults: a retry loop writes metadata`,
      );
    }
  }

  /**
   * In-sync replicas of every segment serve the same version and bytes for every block,
   * read through each node's replica host. A block that fails its checksum (rot, or an
   * unacknowledged write torn by a power loss) is counted, not compared: reads repair
   * those from another copy, and scrub (not built yet) would find the rest.
   */
  async function checkConverged(): Promise<void> {
    const layout = currentLayout();
    if (!layout) return fail("volume layout is gone");
    const blocks = segmentBytes / blockSizeBytes;
    for (const [index, segment] of layout.value.segments.entries()) {
      const inSync = segment.replicas.filter((r) => r.state === "in-sync").map((r) => r.node);
      if (inSync.length < 2) {
        fail(`segment ${index} has ${inSync.length} in-sync replicas after settling`);
      }
      const images = [];
      for (const node of inSync) {
        const host = cluster.nodes.get(node)!.runtime?.host;
        if (!host) return fail(`in-sync replica node ${node} is not running after settling`);
        // An observer's read: no term check, and a suspect replica (every copy of the
        // segment lost power with unflushed cached writes, so all were kept) is read too.
        const read = await host.inspectBlocks(volumeInfo.id, index, 0, blocks);
        images.push({ node, read });
      }
      for (let i = 1; i < images.length; i++) {
        countCheck("replica convergence");
        const [a, b] = [images[0], images[i]];
        for (let block = 0; block < blocks; block++) {
          if (a.read.states[block] === "corrupt" || b.read.states[block] === "corrupt") {
            countCheck(
              "(observed, not a check) blocks failing their checksum, left for read repair",
            );
            continue;
          }
          const at = block * blockSizeBytes;
          const same = a.read.versions[block] === b.read.versions[block] &&
            a.read.data.subarray(at, at + blockSizeBytes).every((x, k) =>
              x === b.read.data[at + k]
            );
          if (!same) {
            fail(
              `segment ${index} block ${block}: in-sync replicas differ: ${a.node} has version ${
                a.read.versions[block]
              } (${a.read.states[block]}), ${b.node} has version ${b.read.versions[block]} (${
                b.read.states[block]
              })`,
            );
            break;
          }
        }
      }
    }
  }

  function checkNotStuck(): void {
    const layout = currentLayout();
    if (!layout) return;
    const { owner } = layout.value;
    countCheck("owner serving");
    const node = cluster.nodes.get(owner);
    if (!node?.runtime?.localVolume("sim")) {
      fail(`after settling, owner ${owner} does not serve the volume (actor stuck)`);
    }
  }

  /** The simulated volume's layout as the KV holds it now, with its revision. */
  function currentLayout(): { value: VolumeLayout; revision: number } | null {
    const entry = cluster.kv.get(volumeLayoutKey);
    return entry
      ? { value: JSON.parse(entry.json) as VolumeLayout, revision: entry.revision }
      : null;
  }

  function finish(): SimResult {
    return {
      seed: options.seed,
      ok: failures.length === 0,
      failures,
      simulatedMs: scheduler.nowMs,
      realMs: performance.now() - realStart,
      operations: clients.reduce((n, c) => n + c.stats.ok + c.stats.failed, 0),
      failedOperations: clients.reduce((n, c) => n + c.stats.failed, 0),
      faults,
      checks,
      // Shortened to what explains a failure: faults, node starts, warnings, errors, violations.
      // With --verbose (replaying one seed) the whole trace.
      trace: options.traceLogs ? scheduler.formatTrace() : failures.length
        ? scheduler.formatTrace({
          kind: ["fault", "node", "fail-stop", "log.warn", "log.error", "VIOLATION"],
          last: 80,
        })
        : "",
    };
  }
}
