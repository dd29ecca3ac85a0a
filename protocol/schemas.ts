/** zod schemas of every JSON message and KV record, checked at the boundary. */
import { z } from "zod";
import { blockSizeBytes, maxNameLength, maxReplicas, namePattern } from "./limits.ts";
import { readPolicyNames } from "../actors/volume/read_policy.ts";
import { ErrorCode } from "./errors.ts";

export const nameSchema = z.string().max(maxNameLength).regex(
  namePattern,
  "names are 1-63 of a-z 0-9 _ - and start with a letter or digit",
);

export const readPolicySchema = z.enum(readPolicyNames as unknown as [string, ...string[]]);

export const replicaStateSchema = z.enum(["in-sync", "rebuilding", "stale"]);
export type ReplicaState = z.infer<typeof replicaStateSchema>;

export const nodeStateSchema = z.enum(["up", "draining", "down"]);

/** KV `node.<id>` */
export const nodeRecordSchema = z.object({
  id: nameSchema,
  zone: z.string().min(1).max(maxNameLength),
  capacityBytes: z.number().int().positive(),
  state: nodeStateSchema,
  startedAt: z.string(),
  pid: z.number().int(),
  version: z.string(),
  /**
   * Drained by an operator: no new replicas or ownership here, and the node's volumes were
   * handed off. Kept across restarts until undrained (absent in records before drain existed).
   */
  drained: z.boolean().optional(),
});
export type NodeRecord = z.infer<typeof nodeRecordSchema>;

/** A volume id: 16 hex digits (64 random bits), new at every create. */
export const volumeIdSchema = z.string().regex(/^[0-9a-f]{16}$/, "volume ids are 16 hex digits");

/** KV `vol.<name>`: what the user asked for; never changes after create (resize aside). */
export const volumeSpecSchema = z.object({
  name: nameSchema,
  /**
   * Immutable identity of this incarnation of the volume: a volume deleted and created again
   * under the same name gets a new id, so it never meets the old one's files or handles.
   * Segment files, replica subjects and the journal name volumes by id.
   */
  id: volumeIdSchema,
  /** The id's first 32 bits (never 0): carried in every IO frame and checked by the owner. */
  incarnation: z.number().int().min(1).max(0xffff_ffff),
  sizeBytes: z.number().int().positive(),
  blockSize: z.literal(blockSizeBytes),
  segmentBytes: z.number().int().positive(),
  replicas: z.number().int().min(1).max(maxReplicas),
  minInSync: z.number().int().min(1).max(maxReplicas),
  readPolicy: readPolicySchema,
  createdAt: z.string(),
});
export type VolumeSpec = z.infer<typeof volumeSpecSchema>;

export const segmentReplicaSchema = z.object({ node: nameSchema, state: replicaStateSchema });
export type SegmentReplica = z.infer<typeof segmentReplicaSchema>;

/**
 * KV `vol.<name>.layout`: changed only by compare-and-set on its KV revision (the layout
 * revision). The owner term changes only when ownership moves; replica-state edits keep it.
 */
export const volumeLayoutSchema = z.object({
  volumeId: volumeIdSchema,
  /** The fencing token: replicas refuse requests of a lower term; high bits of block versions. */
  term: z.number().int().nonnegative(),
  owner: nameSchema,
  segments: z.array(z.object({ replicas: z.array(segmentReplicaSchema) })),
  /**
   * The owner placement chose (set at creation and by `volume move`). After a failover the
   * volume returns to it by a planned handoff once it is back and in sync everywhere.
   */
  home: nameSchema.optional(),
  /**
   * The term of the latest takeover that kept copies which all lost power (every in-sync copy
   * suspect): cached writes acknowledged at an earlier term and not flushed may be lost, and a
   * FLUSH that says it covers one answers CACHE_LOST (docs/PROTOCOL.md, FLUSH).
   */
  cachedLossTerm: z.number().int().nonnegative().optional(),
});
export type VolumeLayout = z.infer<typeof volumeLayoutSchema>;

// ---- control plane requests (cairn.v1.ctl.*) ----

export const createVolumeRequestSchema = z.object({
  name: nameSchema,
  sizeBytes: z.number().int().positive(),
  segmentBytes: z.number().int().positive().optional(),
  replicas: z.number().int().min(1).max(maxReplicas).optional(),
  minInSync: z.number().int().min(1).max(maxReplicas).optional(),
  readPolicy: readPolicySchema.optional(),
});
export type CreateVolumeRequest = z.infer<typeof createVolumeRequestSchema>;

export const volumeNameRequestSchema = z.object({ name: nameSchema });
export const emptyRequestSchema = z.object({}).strict();

/** A catch-up (a returning replica) or rebuild (a new one) of one node's replicas. */
export const copyProgressSchema = z.object({
  node: nameSchema,
  kind: z.enum(["catch-up", "rebuild"]),
  segments: z.number().int().nonnegative(),
  bytesDone: z.number().nonnegative(),
  /** Bytes known to be left (grows as segments are examined). */
  bytesLeft: z.number().nonnegative(),
  bytesPerSec: z.number().nonnegative(),
  elapsedMs: z.number().nonnegative(),
}).meta({ id: "CopyProgress", description: "A catch-up or rebuild under way" });
export type CopyProgress = z.infer<typeof copyProgressSchema>;

/** Volume info as the control plane, the HTTP API and `volume info --json` give it. */
export const volumeInfoSchema = volumeSpecSchema.extend({
  /** The owner term (0 until the first owner took the volume). */
  term: z.number().int().nonnegative(),
  layoutRevision: z.number().int().nonnegative(),
  owner: z.string(),
  /** The owner placement chose; the volume returns to it after a failover. */
  home: z.string(),
  segments: z.array(z.object({
    index: z.number().int().nonnegative(),
    replicas: z.array(segmentReplicaSchema),
  })),
  /** Nodes holding replicas of this volume that the cluster sees down now. */
  downNodes: z.array(nameSchema),
  /** Catch-ups and rebuilds under way, as the owner reports them ([] if it cannot be asked). */
  copies: z.array(copyProgressSchema),
}).meta({ id: "VolumeInfo", description: "A volume's spec, layout and health" });
export type VolumeInfo = z.infer<typeof volumeInfoSchema>;

/** Segments with fewer in-sync replicas on live nodes than the volume wants. */
export function degradedSegmentCount(v: VolumeInfo): number {
  return v.segments.filter((s) =>
    s.replicas.filter((r) => r.state === "in-sync" && !v.downNodes.includes(r.node)).length <
      v.replicas
  ).length;
}

export const nodeInfoSchema = nodeRecordSchema.extend({
  /**
   * `draining` or `down` as recorded in the metadata; otherwise `up` or `suspect` as the
   * answering node's failure detector sees it (or `down` before the record catches up).
   */
  state: z.enum(["up", "suspect", "draining", "down"]),
  /** Whether this node's heartbeats are arriving and it is not recorded down. */
  live: z.boolean(),
  /** Drained by an operator (state `draining` while live): takes no new volumes or replicas. */
  drained: z.boolean(),
  lastHeartbeatAgoMs: z.number().nonnegative().nullable(),
}).meta({ id: "NodeInfo", description: "A node as the cluster sees it" });
export type NodeInfo = z.infer<typeof nodeInfoSchema>;

export const deletedVolumeSchema = z.object({ deleted: nameSchema });

/** `cluster.status`: the whole cluster in one look. */
export const clusterStatusSchema = z.object({
  version: z.string(),
  /** The node that answered. */
  answeredBy: nameSchema,
  nodes: z.object({
    total: z.number().int().nonnegative(),
    live: z.number().int().nonnegative(),
    down: z.array(nameSchema),
  }),
  volumes: z.object({
    total: z.number().int().nonnegative(),
    /** Volumes with a segment short of in-sync replicas on live nodes. */
    degraded: z.array(nameSchema),
    /** Volumes with no owner serving yet (term 0). */
    unowned: z.array(nameSchema),
  }),
}).meta({ id: "ClusterStatus", description: "Counts of nodes and volumes and what needs care" });
export type ClusterStatus = z.infer<typeof clusterStatusSchema>;

/** `volume verify`: the report once every segment was checked. */
export const verifyReportSchema = z.object({
  volume: nameSchema,
  segments: z.number().int().nonnegative(),
  replicasChecked: z.number().int().nonnegative(),
  mismatches: z.array(z.object({ segment: z.number().int().nonnegative(), problem: z.string() })),
  ok: z.boolean(),
}).meta({ id: "VerifyReport", description: "Every in-sync replica scrubbed and compared" });
export type VerifyReport = z.infer<typeof verifyReportSchema>;
export type SegmentMismatch = VerifyReport["mismatches"][number];
export interface VerifyProgress {
  segmentsDone: number;
  segmentsTotal: number;
}

// ---- HTTP admin API bodies (http/): the control bodies above plus these ----

/**
 * Codes of errors the HTTP layer itself answers (no control op ran). Every other problem
 * carries one of the protocol's error codes (protocol/errors.ts).
 */
export const httpOnlyProblemCodes = [
  "UNAUTHORIZED",
  "FORBIDDEN",
  "NOT_FOUND",
  "METHOD_NOT_ALLOWED",
  "PAYLOAD_TOO_LARGE",
  "UNSUPPORTED_MEDIA_TYPE",
] as const;
export type HttpOnlyProblemCode = (typeof httpOnlyProblemCodes)[number];

/** An error body (RFC 9457, `application/problem+json`) with the error code as `code`. */
export const problemSchema = z.object({
  /** `urn:cairn:problem:<code>`, one per code. */
  type: z.string(),
  title: z.string(),
  status: z.number().int().min(400).max(599),
  detail: z.string(),
  code: z.enum([...Object.keys(ErrorCode), ...httpOnlyProblemCodes] as unknown as [string]),
  /** The request path. */
  instance: z.string(),
}).meta({ id: "Problem", description: "RFC 9457 problem details with a Cairn error code" });
export type Problem = z.infer<typeof problemSchema>;

export const operationIdSchema = z.object({ id: z.uuid() });

/** A long operation (today: volume verify), polled at `GET /api/v1/operations/{id}`. */
export const operationSchema = z.object({
  id: z.uuid(),
  kind: z.enum(["volume.verify"]),
  volume: nameSchema,
  /** `succeeded` means it ran to the end: a verify that found mismatches succeeded too. */
  state: z.enum(["running", "succeeded", "failed"]),
  progress: z.object({
    done: z.number().int().nonnegative(),
    total: z.number().int().nonnegative(),
    unit: z.enum(["segments"]),
  }),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  result: verifyReportSchema.nullable(),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
}).meta({ id: "Operation", description: "A long operation and its progress" });
export type Operation = z.infer<typeof operationSchema>;

/** `GET /healthz`: the process is alive and answers. */
export const healthSchema = z.object({ status: z.literal("ok"), node: z.string() });

/** `GET /readyz`: connected to NATS, and every volume this node owns is served here. */
export const readinessSchema = z.object({
  ready: z.boolean(),
  node: z.string(),
  natsConnected: z.boolean(),
  /** Volumes whose layout names this node as owner. */
  volumesOwned: z.number().int().nonnegative(),
  /** Owned volumes without a serving actor here yet (taking over, reconciling). */
  notServing: z.array(nameSchema),
  detail: z.string(),
}).meta({ id: "Readiness" });
export type Readiness = z.infer<typeof readinessSchema>;

// ---- live dashboard: cairn.v1.stats.<node> and GET /api/v1/events (server-sent events) ----

/** One volume's client IO answered by its owner during one stats interval. */
export const volumeIoStatsSchema = z.object({
  volume: nameSchema,
  readOps: z.number().int().nonnegative(),
  writeOps: z.number().int().nonnegative(),
  /** Flush, trim, write-zeroes and stat requests. */
  otherOps: z.number().int().nonnegative(),
  readBytes: z.number().int().nonnegative(),
  writeBytes: z.number().int().nonnegative(),
  errors: z.number().int().nonnegative(),
  /** Mean and largest time from admission to answer of the interval's requests (null: none). */
  meanLatencyMs: z.number().nonnegative().nullable(),
  maxLatencyMs: z.number().nonnegative().nullable(),
}).meta({ id: "VolumeIoStats", description: "A volume's IO in one stats interval" });
export type VolumeIoStats = z.infer<typeof volumeIoStatsSchema>;

/** `cairn.v1.stats.<node>`: what one node served in the last interval (about a second). */
export const nodeStatsSchema = z.object({
  node: nameSchema,
  /** Wall time at the end of the interval (ISO 8601). */
  at: z.string(),
  intervalMs: z.number().positive(),
  /** Volumes this node owns that had IO in the interval. */
  volumes: z.array(volumeIoStatsSchema),
}).meta({ id: "NodeStats", description: "A node's IO per volume in one interval" });
export type NodeStats = z.infer<typeof nodeStatsSchema>;

/** The `snapshot` event: the cluster as the answering node sees it now. */
export const dashboardSnapshotSchema = z.object({
  at: z.string(),
  answeredBy: nameSchema,
  nodes: z.array(nodeInfoSchema),
  /** Every volume; `copies` are filled for volumes with a replica not in sync. */
  volumes: z.array(volumeInfoSchema),
}).meta({
  id: "DashboardSnapshot",
  description: "Nodes and volumes, sent at connect and on change",
});
export type DashboardSnapshot = z.infer<typeof dashboardSnapshotSchema>;

export const dashboardEventKinds = [
  "node-joined",
  "node-up",
  "node-suspect",
  "node-down",
  "node-draining",
  "node-removed",
  "volume-created",
  "volume-deleted",
  "takeover",
  "handoff",
  "replica-stale",
  "replica-rebuilding",
  "replica-in-sync",
  "replica-replaced",
  "copy-started",
  "copy-finished",
  "operation-started",
  "operation-finished",
] as const;

/** The `event` event: something that changed between two snapshots. */
export const dashboardEventSchema = z.object({
  /** Increasing per answering node (the SSE id). */
  id: z.number().int().nonnegative(),
  at: z.string(),
  kind: z.enum(dashboardEventKinds),
  severity: z.enum(["info", "warning", "critical"]),
  node: nameSchema.optional(),
  volume: nameSchema.optional(),
  message: z.string(),
}).meta({ id: "DashboardEvent", description: "A handoff, takeover, stale mark, copy, ..." });
export type DashboardEvent = z.infer<typeof dashboardEventSchema>;

/** Every control reply: { ok: true, result } or { ok: false, error: { code, message } }. */
export type ControlReply<T> = { ok: true; result: T } | {
  ok: false;
  error: { code: string; message: string };
};

// ---- node ops (cairn.v1.node.<node>.*) ----

export const createSegmentsRequestSchema = z.object({
  name: nameSchema,
  volumeId: volumeIdSchema,
  segmentBytes: z.number().int().positive(),
  segments: z.array(z.number().int().nonnegative()),
  term: z.number().int().nonnegative(),
});
/**
 * Removes a node's replicas of one volume incarnation. The node checks the metadata first:
 * it acts only if that incarnation is deleted or this node is no longer in its layout.
 */
export const deleteSegmentsRequestSchema = z.object({ name: nameSchema, volumeId: volumeIdSchema });
/** Asks a node's supervisor to look at a volume now (start, stop or hand off its actor). */
export const volumeNodeRequestSchema = z.object({ name: nameSchema });
export const handoffRequestSchema = z.object({
  name: nameSchema,
  to: nameSchema,
  /** `to` becomes the volume's home too (an operator's move, not a failback). */
  rehome: z.boolean().optional(),
});

/** `cairn.v1.ctl.volume.move`: planned handoff of ownership to a node with every segment in sync. */
export const moveVolumeRequestSchema = z.object({ name: nameSchema, to: nameSchema });

/** `node.drain`, `node.undrain`, `node.ok-to-stop`: one node by id. */
export const nodeIdRequestSchema = z.object({ node: nameSchema });

/** Why stopping a node now would hurt (node.ok-to-stop). */
export const stopRiskSchema = z.object({
  volume: nameSchema,
  /** `owner`: its IO pauses until failover; `below-min-in-sync`: writes stop; `only-copy`: data unavailable. */
  kind: z.enum(["owner", "below-min-in-sync", "only-copy"]),
  detail: z.string(),
});
export type StopRisk = z.infer<typeof stopRiskSchema>;

export const okToStopSchema = z.object({
  node: nameSchema,
  okToStop: z.boolean(),
  risks: z.array(stopRiskSchema),
}).meta({
  id: "OkToStop",
  description: "Whether stopping the node now keeps every volume serving",
});
export type OkToStop = z.infer<typeof okToStopSchema>;

export const drainResultSchema = z.object({
  node: nameSchema,
  drained: z.literal(true),
  /** Volumes whose ownership was handed off, and to whom. */
  moved: z.array(z.object({ volume: nameSchema, to: nameSchema })),
  /** Volumes still owned by the node, and why (no target in sync everywhere, a handoff error). */
  blocked: z.array(z.object({ volume: nameSchema, reason: z.string() })),
  okToStop: okToStopSchema,
}).meta({ id: "DrainResult", description: "What a drain did" });
export type DrainResult = z.infer<typeof drainResultSchema>;

// ---- replica ops with JSON bodies ----

export const fenceRequestSchema = z.object({
  epoch: z.number().int().nonnegative(),
  segments: z.array(z.number().int().nonnegative()),
  /** The seq of the owner's next write batch to this replica: its write stream restarts. */
  nextSeq: z.number().int().min(1).max(0xffff_ffff).optional(),
});
/** A read lease for the owner term `epoch`, for durationMs (0 releases it); see actors/replica/lease.ts. */
export const leaseRequestSchema = z.object({
  epoch: z.number().int().nonnegative(),
  durationMs: z.number().int().min(0).max(60_000),
});

/** Most blocks one ranged scrub request may check (256 MiB of 4 KiB blocks). */
export const maxScrubRequestBlocks = 65_536;

/**
 * Read-only: `epoch` (the caller's owner term) is optional; a scrub never changes anything.
 * With `firstBlock` and `blockCount` (both or neither) only that range is checked (the owner's
 * background scrub); the reply's corruptBlocks are block numbers in the segment.
 */
export const scrubRequestSchema = z.object({
  epoch: z.number().int().nonnegative().optional(),
  segment: z.number().int().nonnegative(),
  firstBlock: z.number().int().nonnegative().optional(),
  blockCount: z.number().int().positive().max(maxScrubRequestBlocks).optional(),
}).refine(
  (r) => (r.firstBlock === undefined) === (r.blockCount === undefined),
  "firstBlock and blockCount go together",
);
export const metaRequestSchema = z.object({
  epoch: z.number().int().nonnegative(),
  segment: z.number().int().nonnegative(),
  firstBlock: z.number().int().nonnegative(),
  blockCount: z.number().int().positive(),
});

/**
 * Replica ops that name only the owner's term: `requests` (the client requests whose writes
 * this replica holds, for a new owner) and `flush` (make every cached write durable).
 */
export const epochRequestSchema = z.object({
  epoch: z.number().int().nonnegative(),
});

/** Parses JSON bytes against a schema; returns a readable error instead of throwing. */
export function parseJson<T>(
  schema: z.ZodType<T>,
  bytes: Uint8Array,
): { ok: true; value: T } | { ok: false; message: string } {
  let raw: unknown;
  try {
    raw = bytes.length === 0 ? {} : JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    return { ok: false, message: `invalid JSON: ${(err as Error).message}` };
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) return { ok: false, message: describeZodError(parsed.error) };
  return { ok: true, value: parsed.data };
}

/** The first problem of a failed parse, as every error reply words it ("sizeBytes: ..."). */
export function describeZodError(error: z.ZodError): string {
  const issue = error.issues[0];
  const path = issue.path.length ? issue.path.join(".") + ": " : "";
  return `${path}${issue.message}`;
}
