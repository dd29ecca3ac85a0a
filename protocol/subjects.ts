/** Every NATS subject Cairn uses, built in one place. */

export const subjectPrefix = "cairn.v1";

export const subjects = {
  /** Client data path of one volume (binary frames, see docs/PROTOCOL.md). */
  volumeIo: (volume: string) => `${subjectPrefix}.vol.${volume}.io`,
  /** Volume actor to the replica host on one node, for one volume. */
  replica: (node: string, volume: string, op: ReplicaOp) =>
    `${subjectPrefix}.rep.${node}.${volume}.${op}`,
  /** Everything a node's replica host listens to. */
  replicaAll: (node: string) => `${subjectPrefix}.rep.${node}.>`,
  /** Starting and stopping actors on a node. */
  node: (node: string, op: NodeOp) => `${subjectPrefix}.node.${node}.${op}`,
  nodeAll: (node: string) => `${subjectPrefix}.node.${node}.>`,
  heartbeat: (node: string) => `${subjectPrefix}.hb.${node}`,
  heartbeatAll: `${subjectPrefix}.hb.*`,
  /**
   * A node's watchdog answers here. A silent peer is probed: NATS says "no responders" at
   * once when the peer's connection is gone, which is proof enough that it is down.
   */
  watchdogProbe: (node: string) => `${subjectPrefix}.wd.${node}`,
  /** Control plane (JSON): any node answers, one per request (queue group). */
  control: (op: ControlOp) => `${subjectPrefix}.ctl.${op}`,
  controlAll: `${subjectPrefix}.ctl.>`,
  /**
   * Once a second each node publishes the IO of the volumes it owns in that second (JSON,
   * `nodeStatsSchema`); the HTTP API's live event stream forwards every node's.
   */
  stats: (node: string) => `${subjectPrefix}.stats.${node}`,
  statsAll: `${subjectPrefix}.stats.*`,
} as const;

export const controlQueueGroup = "cairn-ctl";

export const replicaOps = [
  "write",
  "read",
  "fence",
  "lease",
  "meta",
  "scrub",
  "requests",
  "flush",
] as const;
export type ReplicaOp = (typeof replicaOps)[number];

export const nodeOps = [
  "segments.create",
  "segments.delete",
  /** The supervisor re-reads a volume's metadata now and starts, stops or keeps its actor. */
  "volume.check",
  /** The owner hands a volume off to another node (planned move). */
  "volume.handoff",
  /** The owner's catch-ups and rebuilds under way (for `volume info`). */
  "volume.status",
] as const;
export type NodeOp = (typeof nodeOps)[number];

export const controlOps = [
  "volume.create",
  "volume.list",
  "volume.info",
  "volume.delete",
  "volume.move",
  "node.list",
  "node.drain",
  "node.undrain",
  "node.ok-to-stop",
  "cluster.status",
] as const;
export type ControlOp = (typeof controlOps)[number];

/** The last token(s) of a subject after a known prefix, or null. */
export function subjectTail(subject: string, prefix: string): string | null {
  return subject.startsWith(prefix + ".") ? subject.slice(prefix.length + 1) : null;
}
