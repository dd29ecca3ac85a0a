/**
 * A whole Cairn cluster in one process: every node is a real NodeRuntime
 * (replica host, supervisor, volume actors, watchdog, placement) on simulated
 * ports: the SimNetwork for NATS, MemoryMetadata for JetStream KV, a
 * MemoryDisk each, and the scheduler's virtual clock and seeded randomness.
 */
import { SimScheduler } from "./scheduler.ts";
import { SimNetwork } from "./network.ts";
import { MemoryDisk } from "../actors/memory_disk.ts";
import { MemoryKv, MemoryMetadata } from "../actors/metadata_memory.ts";
import { NodeRuntime } from "../actors/node/runtime.ts";
import { type Logger, segmentFileName } from "../actors/replica/host.ts";
import { SegmentFile } from "../actors/replica/segment_file.ts";
import { NodeJournal } from "../actors/replica/journal.ts";
import { blockSizeBytes } from "../protocol/limits.ts";
import { type Disk, TransportError } from "../actors/ports.ts";
import { slowDisk } from "./slow_disk.ts";
import { EntryKind, type WireBlockState } from "../actors/replica/wire.ts";

/** The pseudo-node that stands for the NATS servers holding the KV bucket. */
export const kvNode = "kv";
/** Virtual time one metadata call takes (a KV round trip). */
const kvDelayMs = { min: 1, max: 4 };
/** How long a metadata call from a node cut off from the KV waits before it fails. */
const kvTimeoutMs = 2000;

/** The simulated nodes' journal checkpoint size: small, so rotations race with writes often. */
export const simJournalCheckpointBytes = 64 * 1024;
/** The simulated hosts write data entries of two blocks and more in place (production: 64 KiB). */
export const simDirectWriteMinBytes = 2 * blockSizeBytes;
/** A simulated segment file syncs in the background after this much cached in-place data. */
export const simCachedWritebackBytes = 32 * 1024;

export type SimNodeState = "up" | "crashed" | "paused";

export interface SimNode {
  id: string;
  zone: string;
  disk: MemoryDisk;
  runtime: NodeRuntime | null;
  state: SimNodeState;
  /** Bumped on every start: a view of the ports from an older life stays dead. */
  life: number;
  /** Set when the node's replica host failed-stop (a failed fdatasync). */
  failStopped: boolean;
  /** Bumped by every power loss: the machine's boot id (ReplicaHostOptions.bootId). */
  boot: number;
}

/** The simulator's replica grace period and scrub settings (see NodeRuntimeDeps). */
export const simReplicaGraceMs = 5000;
export const simScrubIntervalMs = 10_000;
export const simScrubRateBytesPerSec = 1024 * 1024;

export interface SimClusterOptions {
  seed: number;
  nodes: number;
  /** Network delay range in virtual ms. */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** Log lines of the nodes go to the trace (verbose, for replaying one seed). */
  traceLogs?: boolean;
}

/** One block of a node's synced state (SimCluster.durableBlocks). */
export interface SyncedCopy {
  version: number;
  state: WireBlockState;
  /** The block's bytes (zeros unless written). */
  data: Uint8Array;
}

/** One replica's acknowledged block versions: block -> version. */
interface AckedSegment {
  volume: string;
  segment: number;
  versions: Map<number, number>;
}

export class SimCluster {
  /**
   * The durability oracle: per node, the version of each block as its replica host last
   * acknowledged it durable. After any crash and restart the node must still hold at least it.
   */
  readonly acknowledged = new Map<string, Map<string, AckedSegment>>();
  /** Nodes armed to lose power at their next segment-file fdatasync. */
  readonly powerLossAtSync = new Set<string>();
  /** Per node, the virtual times it lost power (the FLUSH oracle excuses what they took). */
  readonly powerLossesMs = new Map<string, number[]>();
  /** Set by the run: where durability violations go. */
  onViolation: (message: string) => void = () => {};
  readonly scheduler: SimScheduler;
  readonly network: SimNetwork;
  readonly kv = new MemoryKv();
  readonly nodes = new Map<string, SimNode>();

  constructor(readonly options: SimClusterOptions) {
    this.scheduler = new SimScheduler({ seed: options.seed });
    this.network = new SimNetwork(this.scheduler, {
      minDelayMs: options.minDelayMs ?? 0.2,
      maxDelayMs: options.maxDelayMs ?? 3,
      // NATS keeps the order of messages from one connection to one subscriber; Cairn relies on it.
      reorder: false,
    });
    for (let i = 0; i < options.nodes; i++) {
      const id = `n${i + 1}`;
      this.nodes.set(id, {
        id,
        zone: `z${i + 1}`,
        disk: new MemoryDisk({ seed: options.seed * 100 + i }),
        runtime: null,
        state: "crashed",
        life: 0,
        boot: 0,
        failStopped: false,
      });
    }
  }

  private logger(node: SimNode): Logger {
    const trace = (kind: string) => (message: string) => {
      if (kind === "error" || this.options.traceLogs) {
        this.scheduler.trace(`log.${kind}`, message, node.id);
      }
    };
    return { info: trace("info"), warn: trace("warn"), error: trace("error") };
  }

  /**
   * The metadata port as one node sees it: every call takes a KV round trip,
   * and hangs (then fails) while the node cannot reach the KV. A call from a
   * dead life never returns, like a request from a killed process.
   */
  private metadataFor(node: SimNode): MemoryMetadata {
    const life = node.life;
    const { scheduler, network } = this;
    const gate = () =>
      new Promise<void>((resolve, reject) => {
        const delay = kvDelayMs.min + scheduler.random() * (kvDelayMs.max - kvDelayMs.min);
        scheduler.schedule(delay, () => {
          if (node.life !== life) return; // the caller is dead: never answer
          if (network.canReach(node.id, kvNode)) return resolve();
          scheduler.schedule(kvTimeoutMs - delay, () => {
            if (node.life === life) reject(new TransportError("timeout", "metadata unreachable"));
          }, node.id);
        }, node.id);
      });
    return new MemoryMetadata(this.kv, gate);
  }

  /** Starts (or restarts) a node's runtime over its disk, as a process start would. */
  async start(id: string): Promise<void> {
    const node = this.nodes.get(id)!;
    node.life++;
    node.state = "up";
    node.failStopped = false;
    this.scheduler.revive(id);
    this.network.revive(id);
    const runtime = new NodeRuntime({
      nodeId: id,
      zone: node.zone,
      capacityBytes: 100 * 1024 ** 3,
      dataDir: `/${id}`,
      bootId: `${id}-boot-${node.boot}`,
      disk: this.forgetRemovedSegments(
        id,
        slowDisk(node.disk, this.scheduler, id, (path) => {
          if (!path.endsWith(".seg") || !this.powerLossAtSync.delete(id)) return false;
          this.scheduler.trace("fault", `power loss of ${id} during fdatasync of ${path}`);
          this.powerLoss(id);
          return true;
        }),
      ),
      onReplicaDurable: (volume, entries, flushed) => {
        let acked = this.acknowledged.get(id);
        if (!acked) this.acknowledged.set(id, acked = new Map());
        for (const e of entries) {
          const key = `${volume}/${e.segment}`;
          let seg = acked.get(key);
          if (!seg) acked.set(key, seg = { volume, segment: e.segment, versions: new Map() });
          for (let b = e.firstBlock; b < e.firstBlock + e.blockCount; b++) {
            // A data or zero entry is what the block holds now, even below an earlier version
            // (a new owner's reconcile rewrites a replica that was not in sync); a repair
            // applies only where it is not older, and so does a cached write told durable at
            // a flush (a newer write to its block may have been told durable before it).
            const guarded = e.kind === EntryKind.repair || flushed;
            if (!guarded || (seg.versions.get(b) ?? 0) < e.version) {
              seg.versions.set(b, e.version);
            }
          }
        }
      },
      transport: this.network.endpoint(id),
      metadata: this.metadataFor(node),
      clock: this.scheduler.clockFor(id),
      random: this.scheduler.randomFor(id),
      log: this.logger(node),
      pid: 0,
      // Checkpoints (journal rotation, segment syncs) every few hundred writes, not every 64 MiB.
      journalCheckpointBytes: simJournalCheckpointBytes,
      // The clients write 1-4 blocks: 2 and more go in place, 1 is journaled, and batches mix.
      directWriteMinBytes: simDirectWriteMinBytes,
      cachedWritebackBytes: simCachedWritebackBytes,
      // Short enough that a long kill has its replicas rebuilt elsewhere within a run, and
      // that every owner scrubs a few times (the defaults are 5 min and 24 h).
      replicaGraceMs: simReplicaGraceMs,
      scrub: { intervalMs: simScrubIntervalMs, rateBytesPerSec: simScrubRateBytesPerSec },
      onFailStop: () => {
        node.failStopped = true;
        this.scheduler.trace("fail-stop", `${id} failed-stop`, id);
      },
    });
    node.runtime = runtime;
    this.scheduler.trace("node", `${id} starting (life ${node.life})`, id);
    try {
      await runtime.start();
      await this.checkDurable(node, runtime);
    } catch (err) {
      // A start can fail like a real one (metadata unreachable): the node is down until restarted.
      this.scheduler.trace("node", `${id} failed to start: ${(err as Error).message}`, id);
      this.kill(id);
    }
  }

  /**
   * The durability oracle forgets a segment file's acknowledged versions when the node
   * removes that file (its replica moved away, or its volume id was deleted): the host owes
   * nothing for a file it was told to drop, and a file made at that path later starts empty.
   * Forgotten as the removal is issued; the host reports no write to a replica it has taken
   * out of its map (host.ts writeEntries, flushVolume), which it does before it removes the
   * file. Whether a removal was right is checked elsewhere: an acknowledged write that no copy
   * holds any more fails the linearizability check.
   */
  private forgetRemovedSegments(id: string, disk: Disk): Disk {
    return {
      ...disk,
      remove: (path) => {
        const match = new RegExp(`^/${id}/segments/([^/]+)/(\\d+)\\.seg$`).exec(path);
        if (match) {
          const key = `${match[1]}/${Number(match[2])}`;
          if (this.acknowledged.get(id)?.delete(key)) {
            this.scheduler.trace(
              "oracle",
              `${id} removed ${path}: its acknowledged versions go`,
              id,
            );
          }
        }
        return disk.remove(path);
      },
    };
  }

  /** Every write this node's replica host acknowledged is still there after its restart. */
  private async checkDurable(node: SimNode, runtime: NodeRuntime): Promise<void> {
    for (const { volume, segment, versions } of this.acknowledged.get(node.id)?.values() ?? []) {
      if (!runtime.host.segmentsOf(volume).includes(segment)) continue;
      // Suspect replicas too (readBlocks refuses them): a power loss may take unflushed
      // cached writes, never the ones acknowledged durable.
      const read = await runtime.host.inspectBlocks(
        volume,
        segment,
        0,
        Math.max(...versions.keys()) + 1,
      );
      for (const [block, want] of versions) {
        if (read.versions[block] < want) {
          this.onViolation(
            `durability: ${node.id} acknowledged version ${want} of segment ${segment} block ${block} as durable, but holds version ${
              read.versions[block]
            } after its restart`,
          );
        }
      }
    }
  }

  /** kill -9: the process is gone; its disk keeps everything written (the page cache survives). */
  kill(id: string): void {
    const node = this.nodes.get(id)!;
    node.life++;
    node.state = "crashed";
    node.runtime = null;
    this.network.kill(id);
    this.scheduler.kill(id);
  }

  /** Power loss: the process dies and unsynced writes are lost or torn. */
  powerLoss(id: string): void {
    this.kill(id);
    const node = this.nodes.get(id)!;
    node.boot++;
    this.powerLossesMs.set(id, [...this.powerLossesMs.get(id) ?? [], this.scheduler.nowMs]);
    node.disk.crash({
      keepPendingProbability: this.scheduler.random(),
      tearWrites: true,
      random: () => this.scheduler.random(),
    });
  }

  /**
   * Blocks of a volume as node `id` would hold them after a power loss now that kept nothing
   * unsynced, read from a copy of the disk's synced state (MemoryDisk.durableCopy): each
   * segment file as synced, then the synced journal's records over it as a restart replays
   * them (host.ts replayJournal: an entry lands where the block's version is not newer). The
   * copy is taken at once; the reads run on it alone (promise jobs only, no events, no
   * randomness), so neither the node nor the seed's replay is touched. A block whose segment
   * file is missing or cannot be opened there (a restart would not serve it) reads null.
   */
  durableBlocks(
    id: string,
    volumeId: string,
    /** Volume block numbers, ascending. */
    blocks: readonly number[],
    blocksPerSegment: number,
  ): Promise<Map<number, SyncedCopy | null>> {
    const disk = this.nodes.get(id)!.disk.durableCopy();
    return (async () => {
      const bySegment = new Map<number, number[]>();
      for (const block of blocks) {
        const segment = Math.floor(block / blocksPerSegment);
        if (!bySegment.has(segment)) bySegment.set(segment, []);
        bySegment.get(segment)!.push(block);
      }
      const out = new Map<number, SyncedCopy | null>();
      for (const [segment, wanted] of bySegment) {
        const path = `/${id}/segments/${volumeId}/${segmentFileName(segment)}`;
        const file = await SegmentFile.open(disk, path).catch(() => null);
        // One read per run of consecutive blocks.
        for (let i = 0; i < wanted.length;) {
          let end = i + 1;
          while (end < wanted.length && wanted[end] === wanted[end - 1] + 1) end++;
          const first = wanted[i] - segment * blocksPerSegment;
          const read = file && await file.readBlocks(first, end - i);
          for (let k = 0; k < end - i; k++) {
            out.set(
              wanted[i + k],
              read && {
                version: read.versions[k],
                state: read.states[k],
                data: read.data.subarray(k * blockSizeBytes, (k + 1) * blockSizeBytes),
              },
            );
          }
          i = end;
        }
      }
      const { records } = await NodeJournal.open(disk, `/${id}/journal`);
      for (const record of records) {
        if (record.volume !== volumeId) continue;
        for (const entry of record.entries) {
          if (entry.kind === EntryKind.request || !bySegment.has(entry.segment)) continue;
          const first = entry.segment * blocksPerSegment + entry.firstBlock;
          for (let b = first; b < first + entry.blockCount; b++) {
            const held = out.get(b);
            if (!held || held.version > entry.version) continue;
            const at = (b - first) * blockSizeBytes;
            out.set(
              b,
              entry.kind === EntryKind.zero
                ? { version: entry.version, state: "zero", data: new Uint8Array(blockSizeBytes) }
                : {
                  version: entry.version,
                  state: "written",
                  data: entry.data!.subarray(at, at + blockSizeBytes),
                },
            );
          }
        }
      }
      return out;
    })();
  }

  pause(id: string): void {
    this.nodes.get(id)!.state = "paused";
    this.scheduler.pause(id);
  }

  resume(id: string): void {
    const node = this.nodes.get(id)!;
    if (node.state === "paused") node.state = "up";
    this.scheduler.resume(id);
  }

  upNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.state === "up" && n.runtime);
  }
}
