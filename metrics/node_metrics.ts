/**
 * A node's Prometheus metrics (prom-client): the Metrics port the actors report to
 * (counters and histograms, pushed as things happen), and gauges read from a node
 * snapshot and the data dir at each scrape. Labels are bounded: volume names, ops,
 * error codes, states, peer node ids; never request ids.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { CopyKind, IoOpName, Metrics, SyncTarget, TakeoverKind } from "../actors/ports.ts";
import {
  degradedSegments,
  type NodeSnapshot,
  replicaStateCounts,
  replicaStates,
} from "../actors/metrics.ts";
import { fileSystemStats, SegmentStatsWatcher } from "./disk.ts";
import { registerProcessMetrics } from "./process.ts";

/** From 100 µs (a read from page cache) to 10 s (a write waiting out a failover). */
const ioBucketsSeconds = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];
/** From 100 µs (a cached device) to 2.5 s (a device in trouble). */
const syncBucketsSeconds = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
];
const actorStates = [
  "taking-over",
  "serving",
  "handing-off",
  "stopping",
  "stopped",
  "fenced",
] as const;
const livenessStates = ["up", "suspect", "down"] as const;
const copyKinds: readonly CopyKind[] = ["catch-up", "rebuild"];

export interface NodeMetricsOptions {
  /** The data dir whose file system and segment files are measured. */
  dataDir: string;
  /** Skips prom-client's process metrics and the event-loop sampler (tests of the rest). */
  processMetrics?: boolean;
}

/** Who the node is, once it has started (for `cairn_node_info`). */
export interface NodeIdentity {
  node: string;
  zone: string;
  version: string;
}

/** Label children by key, so the IO path skips prom-client's label hashing. */
class Children<T> {
  private readonly map = new Map<string, T>();
  constructor(private readonly make: (labels: string[]) => T) {}
  get(...labels: string[]): T {
    const key = labels.join("\u0000");
    let child = this.map.get(key);
    if (!child) this.map.set(key, child = this.make(labels));
    return child;
  }
}

export class NodeMetrics implements Metrics {
  readonly registry = new Registry();
  private snapshot: () => NodeSnapshot = () => ({ volumes: [], peers: [] });
  private readonly stopProcessMetrics: () => void;
  private readonly segmentWatcher: SegmentStatsWatcher;

  private readonly ioRequests = new Counter({
    name: "cairn_volume_io_requests_total",
    help: "Client IO requests answered by this node as the volume's owner, by op",
    labelNames: ["volume", "op"],
    registers: [this.registry],
  });
  private readonly ioBytes = new Counter({
    name: "cairn_volume_io_bytes_total",
    help: "Bytes covered by successful client IO requests, by op (read, write, trim, write_zeroes)",
    labelNames: ["volume", "op"],
    registers: [this.registry],
  });
  private readonly ioErrors = new Counter({
    name: "cairn_volume_io_errors_total",
    help: "Client IO requests answered with an error, by op and protocol error code",
    labelNames: ["volume", "op", "code"],
    registers: [this.registry],
  });
  private readonly ioDuration = new Histogram({
    name: "cairn_volume_io_duration_seconds",
    help: "Time from admitting a client IO request to its answer, errors included, by op",
    labelNames: ["volume", "op"],
    buckets: ioBucketsSeconds,
    registers: [this.registry],
  });
  private readonly ioInFlight = new Gauge({
    name: "cairn_volume_io_in_flight",
    help: "Client IO requests being served now",
    labelNames: ["volume"],
    registers: [this.registry],
  });
  private readonly copiedBytes = new Counter({
    name: "cairn_volume_copied_bytes_total",
    help: "Bytes copied to replicas by catch-ups and rebuilds this node ran as owner",
    labelNames: ["volume", "kind"],
    registers: [this.registry],
  });
  private readonly copyRate = new Gauge({
    name: "cairn_volume_copy_rate_bytes_per_second",
    help: "Rate of the catch-ups or rebuilds under way (bytes copied over their time so far)",
    labelNames: ["volume", "kind"],
    registers: [this.registry],
  });
  private readonly copyRemaining = new Gauge({
    name: "cairn_volume_copy_remaining_bytes",
    help: "Bytes the catch-ups or rebuilds under way still have to copy, as known so far",
    labelNames: ["volume", "kind"],
    registers: [this.registry],
  });
  private readonly copiesRunning = new Gauge({
    name: "cairn_volume_copies_running",
    help: "Replica nodes being caught up or rebuilt now",
    labelNames: ["volume", "kind"],
    registers: [this.registry],
  });
  private readonly takeovers = new Counter({
    name: "cairn_volume_takeovers_total",
    help: "Owner terms this node won: failover (from a node recorded down) or claim " +
      "(its own volume at start or after a handoff to it)",
    labelNames: ["volume", "kind"],
    registers: [this.registry],
  });
  private readonly handoffs = new Counter({
    name: "cairn_volume_handoffs_total",
    help: "Planned handoffs this node recorded, as owner, to another node",
    labelNames: ["volume"],
    registers: [this.registry],
  });
  private readonly termChanges = new Counter({
    name: "cairn_volume_owner_term_changes_total",
    help: "Owner term increments this node wrote (its takeovers and its handoffs)",
    labelNames: ["volume"],
    registers: [this.registry],
  });
  private readonly ownerTerm = new Gauge({
    name: "cairn_volume_owner_term",
    help: "Owner term held by this node's live volume actor",
    labelNames: ["volume"],
    registers: [this.registry],
  });
  private readonly actorState = new Gauge({
    name: "cairn_volume_actor_state",
    help: "1 for the state of this node's volume actor, 0 for the others",
    labelNames: ["volume", "state"],
    registers: [this.registry],
  });
  private readonly replicas = new Gauge({
    name: "cairn_volume_replicas",
    help: "Segment replicas of the volume by state, as its owner holds the layout",
    labelNames: ["volume", "state"],
    registers: [this.registry],
  });
  private readonly degraded = new Gauge({
    name: "cairn_volume_degraded_segments",
    help: "Segments with fewer in-sync replicas than the volume wants, as its owner sees them",
    labelNames: ["volume"],
    registers: [this.registry],
  });
  private readonly nodeInfo = new Gauge({
    name: "cairn_node_info",
    help: "Always 1: this node's id, zone and Cairn version",
    labelNames: ["node", "zone", "version"],
    registers: [this.registry],
  });
  private readonly heartbeatAge = new Gauge({
    name: "cairn_peer_heartbeat_age_seconds",
    help: "Time since this node last heard the peer's heartbeat (+Inf: not since it started)",
    labelNames: ["peer"],
    registers: [this.registry],
  });
  private readonly peerLiveness = new Gauge({
    name: "cairn_peer_liveness",
    help: "1 for this node's failure detector's judgement of the peer, 0 for the others",
    labelNames: ["peer", "state"],
    registers: [this.registry],
  });
  private readonly syncDuration = new Histogram({
    name: "cairn_fdatasync_duration_seconds",
    help: "Duration of fdatasync calls (journal, segment files) and directory fsyncs",
    labelNames: ["target"],
    buckets: syncBucketsSeconds,
    registers: [this.registry],
  });
  private readonly segmentFiles = new Gauge({
    name: "cairn_segment_files",
    help: "Segment files in the data dir (counted every 10 s)",
    registers: [this.registry],
  });
  private readonly segmentBytes = new Gauge({
    name: "cairn_segment_files_allocated_bytes",
    help: "Disk space segment files take (allocated blocks: the files are sparse; every 10 s)",
    registers: [this.registry],
  });
  private readonly dataDirSize = new Gauge({
    name: "cairn_data_dir_filesystem_size_bytes",
    help: "Size of the file system that holds the data dir",
    registers: [this.registry],
  });
  private readonly dataDirFree = new Gauge({
    name: "cairn_data_dir_filesystem_free_bytes",
    help: "Free space of the file system that holds the data dir (available to the node)",
    registers: [this.registry],
  });

  private readonly io = new Children((labels) => ({
    requests: this.ioRequests.labels(...labels),
    bytes: this.ioBytes.labels(...labels),
    duration: this.ioDuration.labels(...labels),
  }));
  private readonly inFlight = new Children(([volume]) => this.ioInFlight.labels(volume));

  constructor(private readonly options: NodeMetricsOptions) {
    this.segmentWatcher = new SegmentStatsWatcher(options.dataDir);
    this.stopProcessMetrics = options.processMetrics === false
      ? () => {}
      : registerProcessMetrics(this.registry);
  }

  /** Where the gauges read the node from, once it has started. */
  attach(identity: NodeIdentity, snapshot: () => NodeSnapshot): void {
    this.nodeInfo.reset();
    this.nodeInfo.labels(identity.node, identity.zone, identity.version).set(1);
    this.snapshot = snapshot;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text: gauges refreshed from the node and the data dir first. */
  async render(): Promise<string> {
    if (!this.segmentWatcher.latest) await this.segmentWatcher.first;
    // Synchronous from here: a concurrent scrape never sees gauges half reset.
    const segments = this.segmentWatcher.latest;
    if (segments) {
      this.segmentFiles.set(segments.segmentFiles);
      this.segmentBytes.set(segments.segmentAllocatedBytes);
    }
    const fileSystem = fileSystemStats(this.options.dataDir);
    this.dataDirSize.set(fileSystem.sizeBytes);
    this.dataDirFree.set(fileSystem.freeBytes);
    this.refresh(this.snapshot());
    return await this.registry.metrics();
  }

  /** Sets the gauges from a snapshot; volumes and peers no longer here drop out. */
  private refresh(snapshot: NodeSnapshot): void {
    for (
      const gauge of [
        this.ownerTerm,
        this.actorState,
        this.replicas,
        this.degraded,
        this.copyRate,
        this.copyRemaining,
        this.copiesRunning,
        this.heartbeatAge,
        this.peerLiveness,
      ]
    ) gauge.reset();
    for (const volume of snapshot.volumes) {
      for (const state of actorStates) {
        this.actorState.labels(volume.name, state).set(volume.state === state ? 1 : 0);
      }
      const live = volume.state !== "stopped" && volume.state !== "fenced";
      if (live && volume.term > 0) this.ownerTerm.labels(volume.name).set(volume.term);
      // The owner's layout is the one that counts; an actor still taking over may hold an old one.
      if (volume.state === "serving" && volume.layout) {
        const counts = replicaStateCounts(volume.layout);
        for (const state of replicaStates) {
          this.replicas.labels(volume.name, state).set(counts[state]);
        }
        this.degraded.labels(volume.name).set(
          degradedSegments(volume.layout, volume.wantedReplicas),
        );
        for (const kind of copyKinds) {
          const copies = volume.copies.filter((c) => c.kind === kind);
          this.copiesRunning.labels(volume.name, kind).set(copies.length);
          this.copyRate.labels(volume.name, kind).set(
            copies.reduce((sum, c) => sum + c.bytesPerSec, 0),
          );
          this.copyRemaining.labels(volume.name, kind).set(
            copies.reduce((sum, c) => sum + c.bytesLeft, 0),
          );
        }
      }
    }
    for (const peer of snapshot.peers) {
      this.heartbeatAge.labels(peer.node).set(
        peer.silenceMs === null ? Infinity : peer.silenceMs / 1000,
      );
      for (const state of livenessStates) {
        this.peerLiveness.labels(peer.node, state).set(peer.liveness === state ? 1 : 0);
      }
    }
  }

  stop(): void {
    this.stopProcessMetrics();
    this.segmentWatcher.stop();
  }

  // ---- the Metrics port ----

  ioStarted(volume: string, _op: IoOpName): void {
    this.inFlight.get(volume).inc();
  }

  ioFinished(
    volume: string,
    op: IoOpName,
    lengthBytes: number,
    seconds: number,
    errorCode: string | null,
  ): void {
    this.inFlight.get(volume).dec();
    const io = this.io.get(volume, op);
    io.requests.inc();
    io.duration.observe(seconds);
    if (errorCode === null) {
      if (lengthBytes > 0) io.bytes.inc(lengthBytes);
    } else {
      this.ioErrors.labels(volume, op, errorCode).inc();
    }
  }

  copied(volume: string, kind: CopyKind, bytes: number): void {
    this.copiedBytes.labels(volume, kind).inc(bytes);
  }

  tookOver(volume: string, kind: TakeoverKind): void {
    this.takeovers.labels(volume, kind).inc();
    this.termChanges.labels(volume).inc();
  }

  handedOff(volume: string): void {
    this.handoffs.labels(volume).inc();
    this.termChanges.labels(volume).inc();
  }

  synced(target: SyncTarget, seconds: number): void {
    this.syncDuration.labels(target).observe(seconds);
  }
}
