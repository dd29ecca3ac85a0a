/**
 * One Cairn node's logic over ports: the replica host, the supervisor and its
 * volume actors, the watchdog, and a share of the control plane. The process
 * shell (server/node.ts) gives it NATS, JetStream KV, node:fs and the system
 * clock; the simulator gives it a simulated network, MemoryMetadata,
 * MemoryDisk and a virtual clock.
 */
import type {
  Clock,
  Disk,
  MessageBody,
  Metrics,
  Random,
  Transport,
  TransportSubscription,
  WallClock,
} from "../ports.ts";
import { type NodeSnapshot, timedDisk } from "../metrics.ts";
import { CasConflictError, type MetadataPort, segmentsOfNode } from "../metadata.ts";
import { HostError, type Logger, ReplicaHost, type ReplicaHostOptions } from "../replica/host.ts";
import { planSegmentFiles, segmentCheckIntervalMs } from "../replica/host.ts";
import type { ScrubSettings } from "../volume/scrub.ts";
import {
  checkReplicaReply,
  type ReplicaLink,
  ReplicaReplyError,
  type VolumeActor,
} from "../volume/actor.ts";
import {
  BatchFlag,
  decodeReadReply,
  encodeError,
  encodeReadRequest,
  encodeWriteBatchParts,
} from "../replica/wire.ts";
import { StaleEpochError } from "../replica/replica.ts";
import { ControlService } from "../control/service.ts";
import { Watchdog } from "../watchdog/actor.ts";
import { Supervisor } from "../supervisor/supervisor.ts";
import {
  controlQueueGroup,
  subjectPrefix,
  subjects,
  subjectTail,
} from "../../protocol/subjects.ts";
import {
  createSegmentsRequestSchema,
  deleteSegmentsRequestSchema,
  handoffRequestSchema,
  parseJson,
  volumeNodeRequestSchema,
} from "../../protocol/schemas.ts";
import { CairnError } from "../../protocol/errors.ts";
import {
  errorReply,
  okReply,
  replyForError,
  requestFailure,
  requestJson,
} from "../../protocol/control.ts";
import { defaultNatsMaxPayloadBytes, replicaTimeoutMs } from "../../protocol/limits.ts";
import { ReplicaCalls, StallDetector } from "./replica_calls.ts";

export const cairnVersion = "0.2.0";

/** CAS attempts to record this node up at start before giving up (each loses to a writer). */
const maxStartRecordAttempts = 5;

export interface NodeRuntimeDeps {
  nodeId: string;
  zone: string;
  capacityBytes: number;
  dataDir: string;
  disk: Disk;
  transport: Transport;
  metadata: MetadataPort;
  clock: Clock & WallClock;
  random: Random;
  log: Logger;
  /** Process id, for `node list` (0 in the simulator). */
  pid: number;
  /**
   * Called once when the replica host failed-stop (a failed fdatasync): the node must take
   * no more writes. The process shell exits; the journal is kept for replay at restart.
   */
  onFailStop?: (reason: string) => void;
  /** Journal size that starts a checkpoint (the simulator checkpoints often); default 64 MiB. */
  journalCheckpointBytes?: number;
  /** The replica host's in-place and writeback sizes (ReplicaHostOptions); the simulator's are small. */
  directWriteMinBytes?: number;
  cachedWritebackBytes?: number;
  /** How long a down node's replicas wait before being rebuilt elsewhere (default 5 min). */
  replicaGraceMs?: number;
  /** Rate limit of catch-up and rebuild copies per volume (default 256 MiB/s). */
  rebuildRateBytesPerSec?: number;
  /** See ReplicaHostOptions.onDurable (the simulator's durability oracle). */
  onReplicaDurable?: ReplicaHostOptions["onDurable"];
  /** See ReplicaHostOptions.bootId (power loss detection for cached writes). */
  bootId?: string;
  /** Background scrub settings (`--scrub-interval`, `--scrub-rate`); default: scrub.ts. */
  scrub?: Partial<ScrubSettings>;
  /** Where IO, copies, ownership changes and syncs are reported; none: not measured. */
  metrics?: Metrics;
}

/** The in-process replica's errors, in the shape a remote reply would have. */
function replicaError(err: unknown): Error {
  if (err instanceof HostError) return new ReplicaReplyError(err.code, err.message);
  if (err instanceof StaleEpochError) return new ReplicaReplyError("STALE_EPOCH", err.message);
  return new ReplicaReplyError("IO_ERROR", (err as Error).message);
}

export class NodeRuntime {
  readonly id: string;
  host!: ReplicaHost;
  watchdog!: Watchdog;
  /** This node's share of the control plane (any node answers for the whole cluster). */
  control!: ControlService;
  supervisor!: Supervisor;
  private readonly subscriptions: TransportSubscription[] = [];
  private readonly weights = new Map<string, number>();
  private stopped = false;
  private cancelSegmentCheck: (() => void) | null = null;
  /** Notices stalls of this process, so timers that ran during one judge no peer. */
  private readonly stall: StallDetector;
  private readonly replicaCalls: ReplicaCalls;

  constructor(private readonly deps: NodeRuntimeDeps) {
    this.id = deps.nodeId;
    this.stall = new StallDetector(deps.clock);
    this.replicaCalls = new ReplicaCalls(
      deps.transport,
      deps.clock,
      this.stall,
      (node) => this.watchdog?.liveness(node) === "down",
    );
  }

  async start(): Promise<void> {
    const { deps } = this;
    this.stall.start();
    const disk = deps.metrics ? timedDisk(deps.disk, deps.clock, deps.metrics) : deps.disk;
    this.host = new ReplicaHost(deps.dataDir, disk, deps.log, {
      journalCheckpointBytes: deps.journalCheckpointBytes,
      directWriteMinBytes: deps.directWriteMinBytes,
      cachedWritebackBytes: deps.cachedWritebackBytes,
      clock: deps.clock,
      onDurable: deps.onReplicaDurable,
      bootId: deps.bootId,
      onFailStop: (reason) => {
        // Serve nothing more from here: volume actors stop, so clients move on.
        void this.supervisor?.stopAll();
        deps.onFailStop?.(reason);
      },
    });
    await this.host.loadAll();
    await this.removeOrphanSegments();
    this.watchdog = new Watchdog(deps.transport, this.id, deps.clock, deps.metadata, deps.log);
    this.control = new ControlService(
      deps.transport,
      deps.metadata,
      this.watchdog,
      deps.log,
      deps.clock,
      deps.random,
      { id: this.id, version: cairnVersion },
    );
    this.supervisor = new Supervisor({
      nodeId: this.id,
      metadata: deps.metadata,
      transport: deps.transport,
      clock: deps.clock,
      random: deps.random,
      log: deps.log,
      link: (volumeId, node) => this.link(volumeId, node),
      weights: () => this.weights,
      judgedDown: (node) => this.watchdog.liveness(node) === "down",
      drained: (node) => this.watchdog.drained(node),
      scrub: deps.scrub,
      replicaGraceMs: deps.replicaGraceMs,
      rebuildRateBytesPerSec: deps.rebuildRateBytesPerSec,
      metrics: deps.metrics,
      liveNodes: () => this.control.placementNodes(),
      createReplicas: async (volumeId, name, node, segments) => {
        const spec = await deps.metadata.getSpec(name);
        if (spec?.value.id !== volumeId) throw new Error(`volume ${name} is gone`);
        await requestJson(deps.transport, subjects.node(node, "segments.create"), {
          name,
          volumeId,
          segmentBytes: spec.value.segmentBytes,
          segments,
          term: 0,
        });
      },
    });
    this.watchdog.onRecordedDown = () => {
      void this.supervisor.sweep().catch(() => {});
      this.supervisor.nodeDown();
    };
    this.subscriptions.push(
      deps.transport.subscribe(subjects.replicaAll(this.id), (msg) => this.onReplica(msg)),
      deps.transport.subscribe(subjects.nodeAll(this.id), (msg) => {
        const op = subjectTail(msg.subject, `${subjectPrefix}.node.${this.id}`) ?? "";
        this.nodeOp(op, msg.data).then(okReply, replyForError).then((reply) => msg.respond(reply));
      }),
      deps.transport.subscribe(subjects.controlAll, (msg) => {
        const op = subjectTail(msg.subject, `${subjectPrefix}.ctl`);
        if (!op) return msg.respond(errorReply("BAD_REQUEST", "no control op"));
        this.control.handleRequest(op, msg.data).then((reply) => msg.respond(reply));
      }, { queue: controlQueueGroup }),
    );
    this.watchdog.start();
    await this.recordStart();
    for (const { value } of await deps.metadata.listNodes()) {
      this.weights.set(value.id, value.capacityBytes);
    }
    await deps.transport.flush();
    this.supervisor.start();
    this.scheduleSegmentCheck();
  }

  /**
   * Records this node up, keeping an operator's drain across the restart. By CAS, so a drain
   * recorded while the node starts is not overwritten.
   */
  private async recordStart(): Promise<void> {
    const { deps } = this;
    const record = {
      id: this.id,
      zone: deps.zone,
      capacityBytes: deps.capacityBytes,
      state: "up" as const,
      startedAt: new Date(deps.clock.wallMs()).toISOString(),
      pid: deps.pid,
      version: cairnVersion,
    };
    for (let attempt = 0;; attempt++) {
      const existing = await deps.metadata.getNode(this.id);
      if (!existing) return await deps.metadata.putNode(record);
      const drained = existing.value.drained === true;
      try {
        await deps.metadata.casNode(
          { ...record, ...(drained ? { drained } : {}) },
          existing.revision,
        );
        if (drained) deps.log.info(`this node is drained: it takes no new volumes or replicas`);
        return;
      } catch (err) {
        if (!(err instanceof CasConflictError) || attempt >= maxStartRecordAttempts) throw err;
      }
    }
  }

  /** Every segmentCheckIntervalMs, the check removeOrphanSegments makes at start. */
  private scheduleSegmentCheck(): void {
    this.cancelSegmentCheck = this.deps.clock.setTimer(segmentCheckIntervalMs, () => {
      if (this.stopped || this.host.failed) return;
      this.removeOrphanSegments()
        .catch((err) => this.deps.log.warn(`segment file check: ${(err as Error).message}`))
        .finally(() => {
          if (!this.stopped) this.scheduleSegmentCheck();
        });
    });
  }

  /**
   * Compares the segment files here with the metadata (host.ts planSegmentFiles): files of
   * volume ids that no longer exist go, and so do (on a second look) segments whose layout
   * no longer lists this node; lost replicas (file missing or unreadable) are reported, and
   * once the owner has marked them stale get a fresh file to be rebuilt into. Any metadata
   * read that fails ends the check before it acts.
   */
  private async removeOrphanSegments(): Promise<void> {
    const held = this.host.heldSegments(); // before the metadata: newer files are not judged
    const views = [];
    for (const spec of await this.deps.metadata.listSpecs()) {
      const layout = (await this.deps.metadata.getLayout(spec.name))?.value;
      const mine = layout?.volumeId === spec.id
        ? new Map(
          layout.segments.flatMap((s, i) =>
            s.replicas.filter((r) => r.node === this.id).map((r) => [i, r.state] as const)
          ),
        )
        : null;
      views.push({
        volumeId: spec.id,
        name: spec.name,
        segmentBytes: spec.segmentBytes,
        replicas: mine,
      });
    }
    await this.host.applySegmentPlan(planSegmentFiles(held, views));
  }

  link(volumeId: string, node: string): ReplicaLink {
    if (node === this.id) {
      return {
        call: (op, body) => this.host.handle(volumeId, op, body),
        write: (term, entries, seq, cached) =>
          this.host.writeEntries(volumeId, term, entries, undefined, seq, cached).catch((err) => {
            throw replicaError(err);
          }),
        read: (request) =>
          this.host.readBlocks(volumeId, request).catch((err) => {
            throw replicaError(err);
          }),
      };
    }
    const call = (op: string, body: MessageBody, timeoutMs = replicaTimeoutMs) =>
      this.replicaCalls.request(
        node,
        subjects.replica(node, volumeId, op as never),
        body,
        timeoutMs,
      );
    return {
      call,
      write: async (term, entries, seq, cached) => {
        const flags = cached ? BatchFlag.cached : 0;
        checkReplicaReply(await call("write", encodeWriteBatchParts(term, entries, seq, flags)));
      },
      read: async (request) =>
        decodeReadReply(checkReplicaReply(await call("read", encodeReadRequest(request)))),
    };
  }

  /**
   * For readiness: the volumes whose layout names this node as owner, and those of them
   * that have no serving actor here yet (taking over, reconciling, or backing off).
   */
  async ownedVolumes(): Promise<{ owned: string[]; notServing: string[] }> {
    const owned: string[] = [];
    for (const spec of await this.deps.metadata.listSpecs()) {
      const layout = (await this.deps.metadata.getLayout(spec.name))?.value;
      if (layout?.owner === this.id && layout.volumeId === spec.id) owned.push(spec.name);
    }
    return { owned, notServing: owned.filter((name) => !this.localVolume(name)) };
  }

  /** What this node's gauges show now: its volume actors and its peers (for metrics). */
  metricsSnapshot(): NodeSnapshot {
    return {
      volumes: this.supervisor?.volumeViews() ?? [],
      peers: this.watchdog?.peers() ?? [],
    };
  }

  /** The in-process volume actor, if this node serves that volume now (for gateways). */
  localVolume(name: string): VolumeActor | undefined {
    return this.supervisor?.localVolume(name);
  }

  private onReplica(msg: { subject: string; data: Uint8Array; respond(d: Uint8Array): void }) {
    const tail = subjectTail(msg.subject, `${subjectPrefix}.rep.${this.id}`);
    const dot = tail?.indexOf(".") ?? -1;
    if (!tail || dot < 0) return msg.respond(new Uint8Array([1]));
    const volumeId = tail.slice(0, dot);
    const op = tail.slice(dot + 1);
    this.host.handle(volumeId, op, msg.data).then((reply) => {
      // A read reply larger than this node's NATS server takes (an owner on a server with a
      // larger max_payload asked for it) is refused, and the owner reads it in smaller pieces.
      const maxBytes = this.deps.transport.maxPayloadBytes?.() ?? defaultNatsMaxPayloadBytes;
      msg.respond(
        reply.byteLength <= maxBytes ? reply : encodeError(
          "TOO_LARGE",
          `a reply of ${reply.byteLength} bytes is above this node's NATS max_payload (${maxBytes})`,
        ),
      );
    });
  }

  private async nodeOp(op: string, body: Uint8Array): Promise<unknown> {
    const parse = <T>(schema: Parameters<typeof parseJson<T>>[0]) => {
      const parsed = parseJson(schema, body);
      if (!parsed.ok) throw new CairnError("BAD_REQUEST", parsed.message);
      return parsed.value;
    };
    switch (op) {
      case "segments.create": {
        const r = parse(createSegmentsRequestSchema);
        const spec = await this.deps.metadata.getSpec(r.name);
        if (spec?.value.id !== r.volumeId) {
          throw new CairnError("NO_SUCH_VOLUME", `no volume ${r.name} with id ${r.volumeId}`);
        }
        await this.host.createSegments(r.volumeId, r.segmentBytes, r.segments, r.term);
        return { created: r.segments.length };
      }
      case "segments.delete": {
        const r = parse(deleteSegmentsRequestSchema);
        await this.checkReplicasRemovable(r.name, r.volumeId);
        // Any actor of this incarnation (serving, taking over, handing off) stops first.
        if (this.supervisor.hasActor(r.name, r.volumeId)) await this.supervisor.check(r.name);
        await this.host.deleteVolume(r.volumeId);
        return { deleted: r.volumeId };
      }
      case "volume.check": {
        await this.supervisor.check(parse(volumeNodeRequestSchema).name);
        return { checked: true };
      }
      case "volume.status": {
        const name = parse(volumeNodeRequestSchema).name;
        return { copies: this.supervisor.localVolume(name)?.copyProgress() ?? [] };
      }
      case "volume.handoff": {
        const r = parse(handoffRequestSchema);
        return await this.supervisor.handOff(r.name, r.to, r.rehome ?? false);
      }
      default:
        throw new CairnError("BAD_REQUEST", `unknown node op ${op}`);
    }
  }

  /**
   * A destructive node op is checked against the metadata: the incarnation must be
   * deleted, or this node no longer in its layout. Anything else is refused.
   */
  private async checkReplicasRemovable(name: string, volumeId: string): Promise<void> {
    const spec = await this.deps.metadata.getSpec(name);
    if (!spec || spec.value.id !== volumeId) return;
    const layout = await this.deps.metadata.getLayout(name);
    if (layout && segmentsOfNode(layout.value, this.id).length > 0) {
      throw new CairnError(
        "BAD_REQUEST",
        `volume ${name} (id ${volumeId}) exists and its layout lists replicas on ${this.id}; ` +
          `delete the volume or move the replicas first`,
      );
    }
  }

  /** Graceful stop: stop taking IO, finish what is in flight, fdatasync, close. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.cancelSegmentCheck?.();
    await this.supervisor?.stopAll();
    for (const sub of this.subscriptions) sub.unsubscribe();
    this.watchdog?.stop();
    this.replicaCalls.stop();
    this.stall.stop();
    await this.host?.close();
    try {
      const record = await this.deps.metadata.getNode(this.id);
      // By CAS: an operator's drain recorded since the read is not lost (on a conflict the
      // watchdogs record this node down instead).
      if (record) {
        await this.deps.metadata.casNode({ ...record.value, state: "down" }, record.revision);
      }
    } catch (err) {
      if (!(err instanceof CasConflictError) && requestFailure(err) === "other") {
        this.deps.log.warn(`cannot record shutdown: ${err}`);
      }
    }
  }
}
