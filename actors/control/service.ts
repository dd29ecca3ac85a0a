/**
 * The control service: every control operation (volumes, nodes, cluster state) and its
 * rules, in one place. Any node answers a control request (NATS queue group); every
 * decision is committed by compare-and-set in KV, so two nodes acting at once cannot both
 * win. The NATS subjects (`handleRequest`), the HTTP API and the CLI are adapters over it;
 * requests and results are the schemas of protocol/control_api.ts.
 */
import {
  CasConflictError,
  inSyncEverywhere,
  type MetadataPort,
  type Versioned,
} from "../metadata.ts";
import type { Random, Transport, WallClock } from "../ports.ts";
import type { Watchdog } from "../watchdog/actor.ts";
import type { Logger } from "../replica/host.ts";
import { subjects } from "../../protocol/subjects.ts";
import {
  type ClusterStatus,
  type CopyProgress,
  type CreateVolumeRequest,
  degradedSegmentCount,
  describeZodError,
  type DrainResult,
  type NodeInfo,
  type OkToStop,
  parseJson,
  type VerifyProgress,
  type VerifyReport,
  type VolumeInfo,
  type VolumeLayout,
  type VolumeSpec,
} from "../../protocol/schemas.ts";
import {
  type ControlApi,
  controlApi,
  type ControlHandlers,
  type ControlRequest,
  type ControlResult,
  isControlOp,
} from "../../protocol/control_api.ts";
import type { ControlOp } from "../../protocol/subjects.ts";
import { CairnError } from "../../protocol/errors.ts";
import {
  blockSizeBytes,
  defaultReplicas,
  defaultSegmentBytesFor,
  maxSegmentBytes,
  maxSegmentsPerVolume,
  maxVolumeSizeBytes,
  minSegmentBytes,
} from "../../protocol/limits.ts";
import { okReply, replyForError, requestJson } from "../../protocol/control.ts";
import {
  chooseOwner,
  NotEnoughNodesError,
  type PlacementNode,
  placeVolume,
} from "../placement/rendezvous.ts";
import { verifyVolume } from "./verify.ts";
import { stopRisks } from "./ok_to_stop.ts";

export function volumeInfo(
  spec: VolumeSpec,
  layout: Versioned<VolumeLayout> | null,
  isDown: (node: string) => boolean = () => false,
  copies: CopyProgress[] = [],
): VolumeInfo {
  const segments = (layout?.value.segments ?? []).map((s, index) => ({
    index,
    replicas: s.replicas,
  }));
  const nodes = new Set(segments.flatMap((s) => s.replicas.map((r) => r.node)));
  return {
    ...spec,
    term: layout?.value.term ?? 0,
    layoutRevision: layout?.revision ?? 0,
    owner: layout?.value.owner ?? "",
    home: layout?.value.home ?? layout?.value.owner ?? "",
    segments,
    downNodes: [...nodes].filter(isDown).sort(),
    copies,
  };
}

/** How long `volume info` waits for the owner's catch-up and rebuild progress. */
const copyProgressTimeoutMs = 500;

/** Handoffs a drain runs at once (each waits for its volume's IO in flight). */
const drainHandoffsInFlight = 4;

/** CAS attempts on a node record before a drain or undrain gives up (each lost to a writer). */
const maxNodeCasAttempts = 5;

/** A new volume id: 16 hex digits (64 bits from the random port). */
export function newVolumeId(random: Random): string {
  let id = "";
  for (let i = 0; i < 4; i++) {
    id += Math.floor(random.next() * 0x1_0000).toString(16).padStart(4, "0");
  }
  return id;
}

/** The incarnation carried in IO frames: the id's first 32 bits, never 0. */
export function incarnationOf(id: string): number {
  return parseInt(id.slice(0, 8), 16) || 1;
}

/** The minimum in-sync count a volume of this many replicas defaults to. */
export function defaultMinInSync(replicas: number): number {
  return Math.max(1, replicas - 1);
}

function checkVolumeShape(request: CreateVolumeRequest): Required<CreateVolumeRequest> {
  const { sizeBytes } = request;
  if (sizeBytes % blockSizeBytes !== 0) {
    throw new CairnError("BAD_REQUEST", `size ${sizeBytes} is not a multiple of ${blockSizeBytes}`);
  }
  if (sizeBytes > maxVolumeSizeBytes) {
    throw new CairnError(
      "BAD_REQUEST",
      `size ${sizeBytes} is above the limit ${maxVolumeSizeBytes}`,
    );
  }
  const segmentBytes = request.segmentBytes ?? defaultSegmentBytesFor(sizeBytes);
  if (
    segmentBytes < minSegmentBytes || segmentBytes > maxSegmentBytes ||
    (segmentBytes & (segmentBytes - 1)) !== 0 && Math.log2(segmentBytes) % 1 !== 0
  ) {
    throw new CairnError(
      "BAD_REQUEST",
      `segment size ${segmentBytes} must be a power of two from ${minSegmentBytes} to ${maxSegmentBytes}`,
    );
  }
  const segmentCount = Math.ceil(sizeBytes / segmentBytes);
  if (segmentCount > maxSegmentsPerVolume) {
    throw new CairnError(
      "BAD_REQUEST",
      `${segmentCount} segments is above the limit ${maxSegmentsPerVolume}; use a larger segment size`,
    );
  }
  const replicas = request.replicas ?? defaultReplicas;
  const minInSync = request.minInSync ?? defaultMinInSync(replicas);
  if (minInSync > replicas) {
    throw new CairnError("BAD_REQUEST", `minInSync ${minInSync} is above replicas ${replicas}`);
  }
  return {
    name: request.name,
    sizeBytes,
    segmentBytes,
    replicas,
    minInSync,
    readPolicy: request.readPolicy ?? "local",
  };
}

export class ControlService implements ControlApi {
  /** One handler per control op; the table is checked to be complete by its type. */
  private readonly handlers: ControlHandlers = {
    "volume.create": (r) => this.createVolume(r),
    "volume.list": () => this.listVolumes(),
    "volume.info": (r) => this.info(r.name),
    "volume.delete": (r) => this.deleteVolume(r.name),
    "volume.move": (r) => this.moveVolume(r),
    "node.list": () => this.listNodes(),
    "node.drain": (r) => this.drainNode(r.node),
    "node.undrain": (r) => this.undrainNode(r.node),
    "node.ok-to-stop": (r) => this.okToStop(r.node),
    "cluster.status": () => this.clusterStatus(),
  };

  constructor(
    private readonly transport: Transport,
    private readonly metadata: MetadataPort,
    private readonly watchdog: Watchdog,
    private readonly log: Logger,
    private readonly clock: WallClock,
    private readonly random: Random,
    /** This node's id and version, for `cluster.status`. */
    private readonly self: { id: string; version: string },
  ) {}

  /**
   * Runs one op in-process (the HTTP API on a node). The request is checked against its
   * schema here too, so no caller reaches a handler with an unchecked body.
   */
  call<O extends ControlOp>(op: O, request: ControlRequest<O>): Promise<ControlResult<O>> {
    const parsed = controlApi[op].request.safeParse(request);
    if (!parsed.success) {
      return Promise.reject(new CairnError("BAD_REQUEST", describeZodError(parsed.error)));
    }
    const handler = this.handlers[op] as (r: unknown) => Promise<ControlResult<O>>;
    return handler(parsed.data);
  }

  /** The NATS adapter: one control request's bytes in, a JSON ControlReply out. */
  async handleRequest(op: string, body: Uint8Array): Promise<Uint8Array> {
    try {
      if (!isControlOp(op)) throw new CairnError("BAD_REQUEST", `unknown control op ${op}`);
      const parsed = parseJson(controlApi[op].request as never, body);
      if (!parsed.ok) throw new CairnError("BAD_REQUEST", parsed.message);
      const handler = this.handlers[op] as (r: unknown) => Promise<unknown>;
      return okReply(await handler(parsed.value));
    } catch (err) {
      if (!(err instanceof CairnError)) this.log.error(`control ${op}: ${(err as Error).stack}`);
      return replyForError(err);
    }
  }

  /** The long operation: scrubs every in-sync replica from this node (see verify.ts). */
  verifyVolume(name: string, onProgress?: (p: VerifyProgress) => void): Promise<VerifyReport> {
    return verifyVolume(
      { volumeInfo: (n) => this.info(n), transport: this.transport },
      name,
      onProgress,
    );
  }

  async clusterStatus(): Promise<ClusterStatus> {
    const [nodes, volumes] = await Promise.all([this.listNodes(), this.listVolumes()]);
    return {
      version: this.self.version,
      answeredBy: this.self.id,
      nodes: {
        total: nodes.length,
        live: nodes.filter((n) => n.live).length,
        down: nodes.filter((n) => !n.live).map((n) => n.id).sort(),
      },
      volumes: {
        total: volumes.length,
        degraded: volumes.filter((v) => degradedSegmentCount(v) > 0).map((v) => v.name).sort(),
        unowned: volumes.filter((v) => v.term === 0).map((v) => v.name).sort(),
      },
    };
  }

  async listNodes(): Promise<NodeInfo[]> {
    const records = await this.metadata.listNodes();
    return records.map(({ value }) => {
      const liveness = this.watchdog.liveness(value.id);
      const live = value.state !== "down" && liveness !== "down";
      const drained = value.drained === true;
      return {
        ...value,
        // What an operator reads: down as recorded, draining while a drained node is live,
        // else what the detector sees.
        state: value.state !== "up" ? value.state : drained && live ? "draining" : liveness,
        live,
        drained,
        lastHeartbeatAgoMs: this.watchdog.silenceMs(value.id),
      };
    });
  }

  /** Nodes that may take new replicas or ownership: live, not suspect, not drained. */
  async placementNodes(): Promise<PlacementNode[]> {
    return (await this.listNodes())
      .filter((n) => n.live && n.state === "up")
      .map((n) => ({ id: n.id, zone: n.zone, capacityBytes: n.capacityBytes }));
  }

  async info(name: string): Promise<VolumeInfo> {
    const spec = await this.metadata.getSpec(name);
    if (!spec) throw new CairnError("NO_SUCH_VOLUME", `no volume named ${name}`);
    const layout = await this.metadata.getLayout(name);
    let copies: CopyProgress[] = [];
    if (layout && this.isDown(layout.value.owner) === false) {
      copies = await requestJson<{ copies: CopyProgress[] }>(
        this.transport,
        subjects.node(layout.value.owner, "volume.status"),
        { name },
        copyProgressTimeoutMs,
      ).then((r) => r.copies, () => []);
    }
    return volumeInfo(spec.value, layout, (node) => this.isDown(node), copies);
  }

  async listVolumes(): Promise<VolumeInfo[]> {
    const specs = await this.metadata.listSpecs();
    return await Promise.all(
      specs.map(async (spec) =>
        volumeInfo(spec, await this.metadata.getLayout(spec.name), (node) => this.isDown(node))
      ),
    );
  }

  /** Down as recorded, or as this node's watchdog sees it. */
  private isDown(node: string): boolean {
    return this.watchdog.liveness(node) === "down";
  }

  async createVolume(request: CreateVolumeRequest): Promise<VolumeInfo> {
    const shape = checkVolumeShape(request);
    const nodes = await this.placementNodes();
    const segmentCount = Math.ceil(shape.sizeBytes / shape.segmentBytes);
    let placement: string[][];
    try {
      placement = placeVolume(shape.name, segmentCount, nodes, shape.replicas);
    } catch (err) {
      if (err instanceof NotEnoughNodesError) {
        throw new CairnError(
          "NOT_ENOUGH_NODES",
          `${shape.replicas} replicas asked for, but only ${nodes.length} nodes are live and ` +
            `not drained; start or undrain nodes, or ask for fewer replicas`,
        );
      }
      throw err;
    }
    const id = newVolumeId(this.random);
    const spec: VolumeSpec = {
      ...shape,
      id,
      incarnation: incarnationOf(id),
      blockSize: blockSizeBytes,
      createdAt: new Date(this.clock.wallMs()).toISOString(),
    } as VolumeSpec;
    if (!await this.metadata.createSpec(spec)) {
      throw new CairnError("EXISTS", `volume ${shape.name} already exists`);
    }
    const holders = new Map<string, number[]>();
    placement.forEach((nodesOfSegment, segment) => {
      for (const node of nodesOfSegment) {
        if (!holders.has(node)) holders.set(node, []);
        holders.get(node)!.push(segment);
      }
    });
    try {
      await Promise.all(
        [...holders].map(([node, segments]) =>
          requestJson(this.transport, subjects.node(node, "segments.create"), {
            name: spec.name,
            volumeId: spec.id,
            segmentBytes: spec.segmentBytes,
            segments,
            term: 0,
          })
        ),
      );
      const owner = chooseOwner(
        spec.name,
        nodes.filter((n) => holders.has(n.id)),
        await this.ownedCounts(),
      );
      // Term 0: placed, never served. The owner's first takeover makes it term 1.
      const layout: VolumeLayout = {
        volumeId: spec.id,
        term: 0,
        owner,
        home: owner,
        segments: placement.map((replicaNodes) => ({
          replicas: replicaNodes.map((node) => ({ node, state: "in-sync" as const })),
        })),
      };
      await this.metadata.createLayout(spec.name, layout);
      await requestJson(this.transport, subjects.node(owner, "volume.check"), { name: spec.name });
    } catch (err) {
      this.log.error(`create ${spec.name} failed, undoing: ${(err as Error).message}`);
      await this.metadata.deleteVolume(spec.name);
      await this.removeFiles(spec, [...holders.keys()]);
      throw err;
    }
    this.log.info(
      `created volume ${spec.name} (${spec.sizeBytes} bytes, ${segmentCount} segments)`,
    );
    return await this.info(spec.name);
  }

  /** Every volume that has a layout, with it (one read of each). */
  private async placedVolumes(): Promise<{ spec: VolumeSpec; layout: VolumeLayout }[]> {
    const placed = [];
    for (const spec of await this.metadata.listSpecs()) {
      const layout = await this.metadata.getLayout(spec.name);
      if (layout) placed.push({ spec, layout: layout.value });
    }
    return placed;
  }

  private async ownedCounts(
    placed?: { layout: VolumeLayout }[],
  ): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (const { layout } of placed ?? await this.placedVolumes()) {
      counts.set(layout.owner, (counts.get(layout.owner) ?? 0) + 1);
    }
    return counts;
  }

  /**
   * Removes the segment files of one incarnation on every node it can reach. Each node
   * checks the metadata first (the incarnation must be gone); a node that was down removes
   * them when it starts.
   */
  private async removeFiles(spec: VolumeSpec, nodes: string[]): Promise<void> {
    await Promise.all(
      nodes.map((node) =>
        requestJson(this.transport, subjects.node(node, "segments.delete"), {
          name: spec.name,
          volumeId: spec.id,
        }).catch((err) =>
          this.log.warn(
            `delete of ${spec.name} on ${node}: ${err.message} (it is removed when ${node} starts)`,
          )
        )
      ),
    );
  }

  /**
   * Deletes the metadata first (from then on the incarnation is gone: its owner stops and
   * every node may remove its files), then tells the owner and removes the files.
   */
  async deleteVolume(name: string): Promise<{ deleted: string }> {
    const spec = await this.metadata.getSpec(name);
    if (!spec) throw new CairnError("NO_SUCH_VOLUME", `no volume named ${name}`);
    const layout = await this.metadata.getLayout(name);
    const nodes = new Set<string>((await this.metadata.listNodes()).map((n) => n.value.id));
    await this.metadata.deleteVolume(name);
    if (layout) {
      await requestJson(this.transport, subjects.node(layout.value.owner, "volume.check"), {
        name,
      }).catch((err) => this.log.warn(`stop of ${name} on its owner: ${err.message}`));
    }
    await this.removeFiles(spec.value, [...nodes]);
    this.log.info(`deleted volume ${name} (id ${spec.value.id})`);
    return { deleted: name };
  }

  /**
   * Planned handoff: refused with a reason unless `to` is live and holds an in-sync replica
   * of every segment; then the owner stops admitting IO, finishes what is in flight, records
   * the move by CAS, and `to` takes over.
   */
  async moveVolume(request: { name: string; to: string }): Promise<VolumeInfo> {
    const { name, to } = request;
    const spec = await this.metadata.getSpec(name);
    const layout = await this.metadata.getLayout(name);
    if (!spec || !layout) throw new CairnError("NO_SUCH_VOLUME", `no volume named ${name}`);
    if (layout.value.owner === to) return volumeInfo(spec.value, layout);
    const target = (await this.listNodes()).find((n) => n.id === to);
    if (!target) throw new CairnError("BAD_REQUEST", `no node named ${to}`);
    if (target.drained) {
      throw new CairnError("BAD_REQUEST", `node ${to} is drained; undrain it first`);
    }
    if (!target.live || target.state !== "up") {
      throw new CairnError("UNAVAILABLE", `node ${to} is not live (state ${target.state})`);
    }
    if (!inSyncEverywhere(layout.value, to)) {
      throw new CairnError(
        "BAD_REQUEST",
        `${to} does not hold an in-sync replica of every segment of ${name}; choose one that does`,
      );
    }
    await this.handOff(name, layout.value.owner, to);
    return await this.info(name);
  }

  /** Asks the owner to hand the volume to `to`, which becomes its home (no failback). */
  private async handOff(name: string, owner: string, to: string): Promise<void> {
    await requestJson(this.transport, subjects.node(owner, "volume.handoff"), {
      name,
      to,
      rehome: true,
    });
  }

  /**
   * Drain: records the node drained (placement and failback skip it from then on, across
   * its restarts), then hands every volume it owns to a live undrained node holding every
   * segment in sync, the one owning fewest. Volumes with no such node stay and are reported.
   * Its replicas stay: the node keeps them in sync, so a stop for maintenance costs only a
   * catch-up. Idempotent: a second drain moves what the first could not.
   */
  async drainNode(node: string): Promise<DrainResult> {
    await this.setDrained(node, true);
    this.log.info(`node ${node} drained: moving the volumes it owns`);
    const nodeLive = (await this.listNodes()).find((n) => n.id === node)?.live === true;
    const targets = (await this.placementNodes()).filter((n) => n.id !== node);
    const placed = await this.placedVolumes();
    const counts = await this.ownedCounts(placed);
    const owned = placed.filter(({ layout }) => layout.owner === node)
      .map(({ spec, layout }) => ({ name: spec.name, layout }));
    const moved: DrainResult["moved"] = [];
    const blocked: DrainResult["blocked"] = [];
    const queue = [...owned];
    const worker = async () => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        const { name, layout } = next;
        if (!nodeLive) {
          blocked.push({ volume: name, reason: `${node} is down: failover moves ${name}` });
          continue;
        }
        const candidates = targets.filter((n) => inSyncEverywhere(layout, n.id));
        if (!candidates.length) {
          blocked.push({
            volume: name,
            reason: `no live undrained node holds an in-sync replica of every segment of ` +
              `${name}; wait for catch-up or add a node, then drain again`,
          });
          continue;
        }
        const to = chooseOwner(name, candidates, counts);
        counts.set(to, (counts.get(to) ?? 0) + 1);
        try {
          await this.handOff(name, node, to);
          moved.push({ volume: name, to });
        } catch (err) {
          blocked.push({
            volume: name,
            reason: `handoff to ${to} failed: ${(err as Error).message}`,
          });
        }
      }
    };
    await Promise.all(Array.from({ length: drainHandoffsInFlight }, worker));
    moved.sort((a, b) => a.volume.localeCompare(b.volume));
    blocked.sort((a, b) => a.volume.localeCompare(b.volume));
    this.log.info(`node ${node} drained: ${moved.length} volumes moved, ${blocked.length} stay`);
    return { node, drained: true, moved, blocked, okToStop: await this.okToStop(node) };
  }

  /** Undrain: the node takes new volumes and replicas again (nothing moves back by itself). */
  async undrainNode(node: string): Promise<NodeInfo> {
    await this.setDrained(node, false);
    this.log.info(`node ${node} undrained`);
    return (await this.listNodes()).find((n) => n.id === node)!;
  }

  /** Whether stopping the node now keeps every volume serving (see ok_to_stop.ts). */
  async okToStop(node: string): Promise<OkToStop> {
    if (!await this.metadata.getNode(node)) {
      throw new CairnError("NO_SUCH_NODE", `no node named ${node}; see node list`);
    }
    const volumes = (await this.placedVolumes()).map(({ spec, layout }) => ({
      name: spec.name,
      minInSync: spec.minInSync,
      layout,
    }));
    const risks = stopRisks(node, volumes, (n) => !this.isDown(n));
    return { node, okToStop: risks.length === 0, risks };
  }

  private async setDrained(node: string, drained: boolean): Promise<void> {
    for (let attempt = 1;; attempt++) {
      const record = await this.metadata.getNode(node);
      if (!record) throw new CairnError("NO_SUCH_NODE", `no node named ${node}; see node list`);
      if ((record.value.drained === true) === drained) return;
      const { drained: _was, ...rest } = record.value;
      try {
        await this.metadata.casNode(drained ? { ...rest, drained } : rest, record.revision);
        return;
      } catch (err) {
        if (!(err instanceof CasConflictError) || attempt >= maxNodeCasAttempts) throw err;
      }
    }
  }
}
