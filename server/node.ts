/**
 * A Cairn node: one process with a stable id, hosting a replica host, the
 * volume actors it owns, a watchdog, and a share of the control plane.
 */
import { connect } from "@nats-io/transport-node";
import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import * as fs from "node:fs";
import { MetadataStore } from "../actors/metadata.ts";
import { HostError, type Logger, ReplicaHost } from "../actors/replica/host.ts";
import {
  checkReplicaReply,
  type ReplicaLink,
  ReplicaReplyError,
  VolumeActor,
} from "../actors/volume/actor.ts";
import { decodeReadReply, encodeReadRequest, encodeWriteBatch } from "../actors/replica/wire.ts";
import { StaleEpochError } from "../actors/replica/replica.ts";
import { PlacementActor } from "../actors/placement/actor.ts";
import { Watchdog } from "../actors/watchdog/actor.ts";
import { systemClock, systemDisk, systemRandom } from "../actors/system_ports.ts";
import { controlQueueGroup, subjectPrefix, subjects, subjectTail } from "../protocol/subjects.ts";
import {
  createSegmentsRequestSchema,
  deleteSegmentsRequestSchema,
  parseJson,
  volumeStartRequestSchema,
} from "../protocol/schemas.ts";
import { CairnError } from "../protocol/errors.ts";
import { errorReply, okReply, replyForError, requestFailure } from "../protocol/control.ts";
import { namePattern, replicaTimeoutMs } from "../protocol/limits.ts";
import { makeLogger } from "./log.ts";
import { RequestMux } from "../protocol/request_mux.ts";

export const cairnVersion = "0.1.0";
/** Delay between attempts to take back an owned volume whose replicas are not up yet. */
const volumeStartRetryMs = 2000;

export interface NodeOptions {
  natsUrl: string;
  dataDir: string;
  nodeId?: string;
  zone?: string;
  capacityBytes?: number;
  quiet?: boolean;
}

/** Reads the node id stored in the data dir, or stores the given (or a new) one. */
export function stableNodeId(dataDir: string, wanted?: string): string {
  const path = `${dataDir}/node-id`;
  fs.mkdirSync(dataDir, { recursive: true });
  const stored = fs.existsSync(path) ? fs.readFileSync(path, "utf8").trim() : "";
  if (stored && wanted && stored !== wanted) {
    throw new Error(`data dir ${dataDir} belongs to node ${stored}, not ${wanted}`);
  }
  const id = stored || wanted || `node-${crypto.randomUUID().slice(0, 8)}`;
  if (!namePattern.test(id)) throw new Error(`node id ${id} is not a valid name`);
  if (!stored) fs.writeFileSync(path, id + "\n");
  return id;
}

function defaultCapacityBytes(dataDir: string): number {
  const stats = fs.statfsSync(dataDir);
  return stats.blocks * stats.bsize;
}

/** The in-process replica's errors, in the shape a remote reply would have. */
function replicaError(err: unknown): Error {
  if (err instanceof HostError) return new ReplicaReplyError(err.code, err.message);
  if (err instanceof StaleEpochError) return new ReplicaReplyError("STALE_EPOCH", err.message);
  return new ReplicaReplyError("IO_ERROR", (err as Error).message);
}

export class CairnNode {
  readonly id: string;
  private nc!: NatsConnection;
  private mux!: RequestMux;
  private metadata!: MetadataStore;
  private host!: ReplicaHost;
  private watchdog!: Watchdog;
  private placement!: PlacementActor;
  private readonly log: Logger;
  private readonly actors = new Map<string, VolumeActor>();
  private readonly ioSubscriptions = new Map<string, Subscription>();
  private readonly subscriptions: Subscription[] = [];
  private readonly starting = new Map<string, Promise<void>>();
  private stopped = false;

  constructor(private readonly options: NodeOptions) {
    this.id = stableNodeId(options.dataDir, options.nodeId);
    this.log = makeLogger(this.id, options.quiet);
  }

  get natsConnection(): NatsConnection {
    return this.nc;
  }

  async start(): Promise<void> {
    const { options } = this;
    this.nc = await connect({
      servers: options.natsUrl,
      name: `cairn-node-${this.id}`,
      maxReconnectAttempts: -1,
      // Async traces allocate an Error per request: measurable on the data path.
      noAsyncTraces: true,
    });
    this.mux = new RequestMux(this.nc);
    this.metadata = await MetadataStore.open(this.nc);
    this.host = new ReplicaHost(options.dataDir, systemDisk, this.log);
    await this.host.loadAll();
    await this.removeOrphanSegments();
    this.watchdog = new Watchdog(this.nc, this.id, systemClock);
    this.placement = new PlacementActor(this.nc, this.metadata, this.watchdog, this.log);

    this.subscriptions.push(
      this.nc.subscribe(subjects.replicaAll(this.id), {
        callback: (_e, msg) => this.onReplica(msg),
      }),
      this.nc.subscribe(subjects.nodeAll(this.id), { callback: (_e, msg) => this.onNodeOp(msg) }),
      this.nc.subscribe(subjects.controlAll, {
        queue: controlQueueGroup,
        callback: (_e, msg) => this.onControl(msg),
      }),
    );
    this.watchdog.start();
    await this.metadata.putNode({
      id: this.id,
      zone: options.zone ?? "default",
      capacityBytes: options.capacityBytes ?? defaultCapacityBytes(options.dataDir),
      state: "up",
      startedAt: new Date().toISOString(),
      pid: Deno.pid,
      version: cairnVersion,
    });
    await this.nc.flush();
    this.log.info(
      `node up: nats ${options.natsUrl}, data ${options.dataDir}, ${this.host.volumeNames().length} volumes with local segments`,
    );
    // Take back the volumes this node owns; their replicas may still be starting.
    for (const spec of await this.metadata.listSpecs()) {
      const layout = await this.metadata.getLayout(spec.name);
      if (layout?.value.owner === this.id) void this.startVolume(spec.name, true);
    }
  }

  /** Segment files of volumes that no longer exist (deleted while this node was down). */
  private async removeOrphanSegments(): Promise<void> {
    for (const volume of this.host.volumeNames()) {
      if (!await this.metadata.getSpec(volume)) {
        this.log.warn(`removing segments of deleted volume ${volume}`);
        await this.host.deleteVolume(volume);
      }
    }
  }

  private link(volume: string, node: string): ReplicaLink {
    if (node === this.id) {
      return {
        call: (op, body) => this.host.handle(volume, op, body),
        write: (epoch, entries) =>
          this.host.writeEntries(volume, epoch, entries).catch((err) => {
            throw replicaError(err);
          }),
        read: (request) =>
          this.host.readBlocks(volume, request).catch((err) => {
            throw replicaError(err);
          }),
      };
    }
    const call = (op: string, body: Uint8Array) =>
      this.mux.request(subjects.replica(node, volume, op as never), body, replicaTimeoutMs);
    return {
      call,
      write: async (epoch, entries) => {
        checkReplicaReply(await call("write", encodeWriteBatch(epoch, entries)));
      },
      read: async (request) =>
        decodeReadReply(checkReplicaReply(await call("read", encodeReadRequest(request)))),
    };
  }

  /** The in-process volume actor, if this node serves that volume now (for gateways). */
  localVolume(name: string): VolumeActor | undefined {
    const actor = this.actors.get(name);
    return actor?.serving ? actor : undefined;
  }

  private startVolume(name: string, retry: boolean): Promise<void> {
    const existing = this.starting.get(name);
    if (existing) return existing;
    if (this.actors.get(name)?.serving) return Promise.resolve();
    const run = (async () => {
      for (;;) {
        if (this.stopped) return;
        const spec = await this.metadata.getSpec(name);
        if (!spec) throw new CairnError("NO_SUCH_VOLUME", `no volume named ${name}`);
        const actor = new VolumeActor({
          spec: spec.value,
          nodeId: this.id,
          metadata: this.metadata,
          link: (node) => this.link(name, node),
          clock: systemClock,
          random: systemRandom,
          log: this.log,
        });
        try {
          await actor.start();
        } catch (err) {
          if (!retry || (err instanceof CairnError && err.code === "MOVED")) throw err;
          this.log.warn(`volume ${name}: takeover failed (${(err as Error).message}); retrying`);
          await new Promise((r) => setTimeout(r, volumeStartRetryMs));
          continue;
        }
        this.actors.set(name, actor);
        const subscription = this.nc.subscribe(subjects.volumeIo(name), {
          callback: (_e, msg) => {
            actor.handleFrame(msg.data).then((reply) => msg.respond(reply));
          },
        });
        this.ioSubscriptions.set(name, subscription);
        await this.nc.flush();
        return;
      }
    })().finally(() => this.starting.delete(name));
    this.starting.set(name, run);
    run.catch((err) => this.log.error(`volume ${name}: cannot start: ${err.message}`));
    return run;
  }

  private async stopVolume(name: string): Promise<void> {
    const subscription = this.ioSubscriptions.get(name);
    this.ioSubscriptions.delete(name);
    subscription?.unsubscribe();
    await this.actors.get(name)?.stop();
    this.actors.delete(name);
  }

  private onReplica(msg: Msg): void {
    const tail = subjectTail(msg.subject, `${subjectPrefix}.rep.${this.id}`);
    const dot = tail?.indexOf(".") ?? -1;
    if (!tail || dot < 0) return void msg.respond(new Uint8Array([1]));
    const volume = tail.slice(0, dot);
    const op = tail.slice(dot + 1);
    this.host.handle(volume, op, msg.data).then((reply) => msg.respond(reply));
  }

  private onNodeOp(msg: Msg): void {
    const op = subjectTail(msg.subject, `${subjectPrefix}.node.${this.id}`) ?? "";
    this.nodeOp(op, msg.data).then(okReply, replyForError).then((reply) => msg.respond(reply));
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
        await this.host.createSegments(r.volume, r.segmentBytes, r.segments, r.epoch);
        return { created: r.segments.length };
      }
      case "segments.delete": {
        const r = parse(deleteSegmentsRequestSchema);
        await this.stopVolume(r.volume);
        await this.host.deleteVolume(r.volume);
        return { deleted: r.volume };
      }
      case "volume.start": {
        await this.startVolume(parse(volumeStartRequestSchema).volume, false);
        return { started: true };
      }
      case "volume.stop": {
        await this.stopVolume(parse(volumeStartRequestSchema).volume);
        return { stopped: true };
      }
      default:
        throw new CairnError("BAD_REQUEST", `unknown node op ${op}`);
    }
  }

  private onControl(msg: Msg): void {
    const op = subjectTail(msg.subject, `${subjectPrefix}.ctl`);
    if (!op) return void msg.respond(errorReply("BAD_REQUEST", "no control op"));
    this.placement.handle(op, msg.data).then((reply) => msg.respond(reply));
  }

  /** Graceful stop: stop taking IO, finish what is in flight, fdatasync, close. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.log.info("stopping: finishing IO in flight");
    for (const name of [...this.ioSubscriptions.keys()]) await this.stopVolume(name);
    for (const sub of this.subscriptions) sub.unsubscribe();
    this.watchdog?.stop();
    await this.host?.close();
    try {
      const record = await this.metadata.getNode(this.id);
      if (record) await this.metadata.putNode({ ...record.value, state: "down" });
    } catch (err) {
      if (requestFailure(err) === "other") this.log.warn(`cannot record shutdown: ${err}`);
    }
    this.mux?.close();
    await this.nc?.drain().catch(() => {});
    this.log.info("stopped");
  }
}
