/**
 * The metrics port's helpers, pure: a no-op sink for tests and the simulator,
 * the IO observer the volume actor calls, a Disk that times its syncs, and the
 * node snapshot that metrics read at scrape time (gauges are pulled, not pushed).
 * Nothing here imports a metrics library: production plugs in metrics/.
 */
import type { Clock, Disk, DiskFile, IoOpName, Metrics, SyncTarget } from "./ports.ts";
import { type IoRequest, Op } from "../protocol/frames.ts";
import { CairnError } from "../protocol/errors.ts";
import type { CopyProgress, ReplicaState, VolumeLayout } from "../protocol/schemas.ts";
import type { VolumeActorState } from "./volume/lifecycle.ts";
import type { PeerLiveness } from "./watchdog/core.ts";

/** Drops everything (tests, the simulator, a node started without --metrics). */
export const noMetrics: Metrics = {
  ioStarted() {},
  ioFinished() {},
  copied() {},
  tookOver() {},
  handedOff() {},
  synced() {},
};

const opNames = new Map<number, IoOpName>([
  [Op.READ, "read"],
  [Op.WRITE, "write"],
  [Op.FLUSH, "flush"],
  [Op.TRIM, "trim"],
  [Op.WRITE_ZEROES, "write_zeroes"],
  [Op.STAT, "stat"],
]);

/** The metric name of a frame op; any op outside the protocol is "unknown" (a bounded set). */
export function ioOpName(op: number): IoOpName {
  return opNames.get(op) ?? "unknown";
}

/**
 * Runs one client request and reports it: in flight while it runs, then its length,
 * latency and error code (CairnError's code; anything else is INTERNAL, as serve() says).
 */
export function observeIo(
  metrics: Metrics | undefined,
  clock: Clock,
  volume: string,
  request: IoRequest,
  run: () => Promise<Uint8Array>,
): Promise<Uint8Array> {
  if (!metrics) return run();
  const op = ioOpName(request.op);
  const startedMs = clock.nowMs();
  metrics.ioStarted(volume, op);
  const finish = (code: string | null) =>
    metrics.ioFinished(volume, op, request.lengthBytes, (clock.nowMs() - startedMs) / 1000, code);
  return run().then(
    (reply) => {
      finish(null);
      return reply;
    },
    (err) => {
      finish(err instanceof CairnError ? err.code : "INTERNAL");
      throw err;
    },
  );
}

/** Which kind of file a path under the data dir is (the node journal lives in `journal/`). */
export function syncTargetOf(path: string): SyncTarget {
  return /(^|\/)journal\//.test(path) ? "journal" : "segment";
}

/** The disk with every fdatasync and directory fsync timed into `metrics.synced`. */
export function timedDisk(disk: Disk, clock: Clock, metrics: Metrics): Disk {
  const time = async <T>(target: SyncTarget, sync: () => Promise<T>): Promise<T> => {
    const startedMs = clock.nowMs();
    try {
      return await sync();
    } finally {
      metrics.synced(target, (clock.nowMs() - startedMs) / 1000);
    }
  };
  return {
    open: async (path, options): Promise<DiskFile> => {
      const file = await disk.open(path, options);
      const target = syncTargetOf(path);
      return {
        read: (buf, position) => file.read(buf, position),
        write: (buf, position) => file.write(buf, position),
        writev: (buffers, position) => file.writev(buffers, position),
        datasync: () => time(target, () => file.datasync()),
        truncate: (lengthBytes) => file.truncate(lengthBytes),
        sizeBytes: () => file.sizeBytes(),
        close: () => file.close(),
      };
    },
    remove: (path) => disk.remove(path),
    removeDir: (path) => disk.removeDir(path),
    list: (dir) => disk.list(dir),
    mkdirp: (dir) => disk.mkdirp(dir),
    syncDir: (dir) => time("directory", () => disk.syncDir(dir)),
  };
}

/** One volume actor on this node, as metrics see it at scrape time. */
export interface VolumeView {
  name: string;
  state: VolumeActorState;
  /** The owner term it holds (0 before it won one). */
  term: number;
  /** Replicas each segment should have (the spec). */
  wantedReplicas: number;
  /** The layout it holds; undefined before it won a term. */
  layout: VolumeLayout | undefined;
  /** Catch-ups and rebuilds under way. */
  copies: CopyProgress[];
}

/** Another node as this node's watchdog sees it. */
export interface PeerView {
  node: string;
  /** Milliseconds since its last heartbeat; null if none was heard since this node started. */
  silenceMs: number | null;
  liveness: PeerLiveness;
}

/** What a node's gauges show, read at each scrape. */
export interface NodeSnapshot {
  volumes: VolumeView[];
  peers: PeerView[];
}

export const replicaStates: readonly ReplicaState[] = ["in-sync", "rebuilding", "stale"];

/** Segment replicas of a layout in each state (every state present, 0 if none). */
export function replicaStateCounts(layout: VolumeLayout): Record<ReplicaState, number> {
  const counts: Record<ReplicaState, number> = { "in-sync": 0, rebuilding: 0, stale: 0 };
  for (const segment of layout.segments) {
    for (const replica of segment.replicas) counts[replica.state]++;
  }
  return counts;
}

/** Segments with fewer in-sync replicas than wanted: the volume's lost redundancy. */
export function degradedSegments(layout: VolumeLayout, wantedReplicas: number): number {
  return layout.segments.filter((s) =>
    s.replicas.filter((r) => r.state === "in-sync").length < wantedReplicas
  ).length;
}
