/**
 * The volume actor: the single writer of one volume. It lives on the owner
 * node, holds the volume's epoch, serves client IO frames, fans writes out to
 * replicas and picks a replica for each read.
 */
import type { Clock, Random } from "../ports.ts";
import type { MetadataStore } from "../metadata.ts";
import type { Logger } from "../replica/host.ts";
import type { VolumeLayout, VolumeSpec } from "../../protocol/schemas.ts";
import {
  decodeRequest,
  encodeErrorReply,
  encodeReply,
  encodeStat,
  type IoRequest,
  Op,
  validateRequest,
} from "../../protocol/frames.ts";
import { CairnError, type ErrorCodeName, errorCodeName } from "../../protocol/errors.ts";
import { blockSizeBytes, maxIoBytes, maxVolumeQueueDepth } from "../../protocol/limits.ts";
import {
  bodyText,
  decodeReply,
  EntryKind,
  type ReadRequest,
  type ReadResult,
  type WriteEntry,
} from "../replica/wire.ts";
import { NodeWriteBatcher } from "./batcher.ts";
import {
  InflightWrites,
  inSyncNodes,
  markStale,
  minInSyncCount,
  type SegmentPiece,
  setReplicaStates,
  splitBySegment,
  VersionCounter,
  writeTargets,
} from "./core.ts";
import { type ReadCandidate, ReadPicker, updateEwma } from "./read_policy.ts";
import { catchUp, fetchVersions, reconcileVolume } from "./reconcile.ts";

/** How often the owner looks for stale replicas whose node answers again. */
export const catchUpIntervalMs = 2000;

const jsonBytes = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

/** How a volume actor reaches the replica host of one node (in-process or over NATS). */
export interface ReplicaLink {
  /** Sends one replica message; resolves with the raw reply (status byte first). */
  call(op: string, body: Uint8Array): Promise<Uint8Array>;
  /** Applies a batch of write entries durably; rejects (ReplicaReplyError or transport) otherwise. */
  write(epoch: number, entries: WriteEntry[]): Promise<void>;
  /** Reads blocks of one segment; rejects like write. */
  read(request: ReadRequest): Promise<ReadResult>;
}

export interface VolumeActorDeps {
  spec: VolumeSpec;
  nodeId: string;
  metadata: MetadataStore;
  link: (node: string) => ReplicaLink;
  clock: Clock;
  random: Random;
  log: Logger;
}

/** A replica answered with an error status (not a transport failure). */
export class ReplicaReplyError extends Error {
  constructor(readonly code: ErrorCodeName, message: string) {
    super(`${code}: ${message}`);
  }
}

/** Returns an OK replica reply as it is; turns any other status into ReplicaReplyError. */
export function checkReplicaReply(reply: Uint8Array): Uint8Array {
  const { status, body } = decodeReply(reply);
  if (status !== 0) {
    const code = errorCodeName(status);
    throw new ReplicaReplyError(
      code.startsWith("UNKNOWN") ? "INTERNAL" : code as ErrorCodeName,
      bodyText(body),
    );
  }
  return reply;
}

/** Calls a replica; a non-OK status becomes ReplicaReplyError. */
export async function callReplica(
  link: ReplicaLink,
  op: string,
  body: Uint8Array,
): Promise<Uint8Array> {
  return checkReplicaReply(await link.call(op, body));
}

interface NodeStats {
  outstanding: number;
  latencyEwmaMs: number;
}

export type ActorState = "starting" | "serving" | "stopping" | "stopped";

export class VolumeActor {
  readonly name: string;
  private layout!: VolumeLayout;
  private state: ActorState = "starting";
  private readonly versions = new VersionCounter();
  private readonly inflight = new InflightWrites();
  private readonly batchers = new Map<string, NodeWriteBatcher>();
  private readonly nodeStats = new Map<string, NodeStats>();
  private readonly picker: ReadPicker;
  /** Read weights for the `weighted` policy: each node's declared capacity. */
  private readonly weights = new Map<string, number>();
  private requestsInFlight = 0;
  private idle: (() => void) | null = null;
  /** Single-flight layout changes, so a burst of failures makes one CAS each. */
  private layoutChange: Promise<unknown> = Promise.resolve();
  private cancelCatchUp: (() => void) | null = null;

  constructor(private readonly deps: VolumeActorDeps) {
    this.name = deps.spec.name;
    this.picker = new ReadPicker(
      deps.spec.readPolicy as ConstructorParameters<typeof ReadPicker>[0],
      deps.nodeId,
      deps.random,
    );
  }

  get epoch(): number {
    return this.layout?.epoch ?? 0;
  }

  get serving(): boolean {
    return this.state === "serving";
  }

  currentLayout(): VolumeLayout {
    return this.layout;
  }

  /**
   * Takes the volume: wins the CAS (epoch + 1, owner = us), fences and
   * reconciles the replicas, and only then serves IO.
   */
  async start(): Promise<void> {
    const { metadata, nodeId } = this.deps;
    const won = await metadata.updateLayout(
      this.name,
      (current) => ({ ...current, owner: nodeId }),
    );
    if (!won) throw new CairnError("NO_SUCH_VOLUME", `volume ${this.name} has no layout`);
    if (won.value.owner !== nodeId) {
      throw new CairnError("MOVED", `volume ${this.name} is owned by ${won.value.owner}`);
    }
    this.layout = won.value;
    const result = await reconcileVolume({
      name: this.name,
      layout: this.layout,
      segmentBytes: this.deps.spec.segmentBytes,
      metadata,
      link: (node) => this.deps.link(node),
      log: this.deps.log,
    });
    this.layout = result.layout;
    for (const [segment, version] of result.highestVersions) this.versions.seed(segment, version);
    for (const { value } of await metadata.listNodes()) {
      this.weights.set(value.id, value.capacityBytes);
    }
    this.state = "serving";
    this.deps.log.info(
      `volume ${this.name}: serving at epoch ${this.layout.epoch} (${result.summary})`,
    );
    this.scheduleCatchUp();
  }

  // ---- catching up replicas that come back ----

  private scheduleCatchUp(): void {
    this.cancelCatchUp = this.deps.clock.setTimer(catchUpIntervalMs, () => {
      if (this.state !== "serving") return;
      this.catchUpReplicas()
        .catch((err) => this.deps.log.warn(`volume ${this.name}: catch-up: ${err.message}`))
        .finally(() => {
          if (this.state === "serving") this.scheduleCatchUp();
        });
    });
  }

  /**
   * Brings stale replicas whose node answers again back in sync while IO
   * goes on: mark them rebuilding (writes now reach them), let older writes
   * finish, copy every block whose version differs from an in-sync source
   * (as version-guarded repairs, so a newer write is never undone), then mark
   * them in-sync.
   */
  private async catchUpReplicas(): Promise<void> {
    const behind = new Map<string, number[]>();
    this.layout.segments.forEach((segment, index) => {
      for (const r of segment.replicas) {
        if (r.state === "in-sync") continue;
        if (!behind.has(r.node)) behind.set(r.node, []);
        behind.get(r.node)!.push(index);
      }
    });
    for (const [node, segments] of behind) {
      if (this.state !== "serving") return;
      const link = this.deps.link(node);
      try {
        await callReplica(link, "fence", jsonBytes({ epoch: this.epoch, segments }));
      } catch {
        continue; // not back yet
      }
      try {
        await this.changeLayout((l) =>
          setReplicaStates(l, segments.map((segment) => ({ segment, node, state: "rebuilding" })))
        );
        await Promise.all(this.inflight.all());
        const blockCount = this.deps.spec.segmentBytes / blockSizeBytes;
        let copied = 0;
        for (const segment of segments) {
          const sources = inSyncNodes(this.layout.segments[segment].replicas);
          const sourceVersions = new Map<string, Float64Array>();
          for (const source of sources) {
            sourceVersions.set(
              source,
              await fetchVersions(this.deps.link(source), this.epoch, segment, blockCount),
            );
          }
          if (sourceVersions.size === 0) continue;
          const targetVersions = await fetchVersions(link, this.epoch, segment, blockCount);
          copied += await catchUp(
            { name: this.name, link: (n) => this.deps.link(n), log: this.deps.log },
            this.epoch,
            segment,
            blockCount,
            sourceVersions,
            node,
            targetVersions,
            true,
          );
        }
        await this.changeLayout((l) =>
          setReplicaStates(l, segments.map((segment) => ({ segment, node, state: "in-sync" })))
        );
        this.deps.log.info(
          `volume ${this.name}: ${node} caught up (${segments.length} segments, ${copied} blocks copied)`,
        );
      } catch (err) {
        this.deps.log.warn(
          `volume ${this.name}: catch-up of ${node} failed: ${(err as Error).message}`,
        );
        await this.markNodeStale(node, new Set(segments));
      }
    }
  }

  /** Stops taking IO; resolves when every request in flight has been answered. */
  async stop(): Promise<void> {
    if (this.state === "stopped") return;
    this.state = "stopping";
    this.cancelCatchUp?.();
    if (this.requestsInFlight > 0) {
      await new Promise<void>((resolve) => (this.idle = resolve));
    }
    this.state = "stopped";
  }

  /** Serves one client frame and returns the reply frame. Never throws. */
  async handleFrame(frame: Uint8Array): Promise<Uint8Array> {
    const decoded = decodeRequest(frame);
    if (!decoded.ok) {
      return encodeErrorReply(decoded.code, decoded.message, decoded.requestId, this.epoch);
    }
    const { requestId } = decoded.request;
    try {
      const payload = await this.serve(decoded.request);
      return encodeReply({ status: 0, requestId, epoch: this.epoch, payload });
    } catch (err) {
      // serve() throws only CairnErrors.
      const { code, detail } = err as CairnError;
      return encodeErrorReply(code, detail, requestId, this.epoch);
    }
  }

  /**
   * Serves one decoded request and returns the reply payload, or throws a
   * CairnError. The frame path above and in-process callers (the NBD gateway
   * on the owner, which so skips encoding and copying frames) share it.
   */
  async serve(request: IoRequest): Promise<Uint8Array> {
    if (this.state !== "serving") {
      throw new CairnError("MOVED", `volume ${this.name} is not served here now`);
    }
    const invalid = validateRequest(request, this.deps.spec.sizeBytes);
    if (invalid) throw new CairnError(invalid.code, invalid.message);
    if (this.requestsInFlight >= maxVolumeQueueDepth) {
      throw new CairnError("BUSY", "too many requests in flight");
    }
    this.requestsInFlight++;
    try {
      return await this.execute(request);
    } catch (err) {
      if (err instanceof CairnError) throw err;
      this.deps.log.error(`volume ${this.name}: ${(err as Error).stack}`);
      throw new CairnError("INTERNAL", (err as Error).message);
    } finally {
      this.requestsInFlight--;
      if (this.requestsInFlight === 0 && this.idle) {
        this.idle();
        this.idle = null;
      }
    }
  }

  private execute(request: IoRequest): Promise<Uint8Array> {
    switch (request.op) {
      case Op.READ:
        return this.read(request.offsetBytes, request.lengthBytes);
      case Op.WRITE:
        return this.write(request.offsetBytes, request.lengthBytes, request.payload);
      case Op.TRIM:
      case Op.WRITE_ZEROES:
        return this.write(request.offsetBytes, request.lengthBytes, null);
      case Op.FLUSH:
        // Every acknowledged write is already durable; FLUSH orders after writes in flight.
        return Promise.all(this.inflight.all()).then(() => new Uint8Array(0));
      case Op.STAT:
        return Promise.resolve(this.stat());
      default:
        throw new CairnError("UNKNOWN_OP", `op ${request.op}`);
    }
  }

  private stat(): Uint8Array {
    const { spec } = this.deps;
    return encodeStat({
      sizeBytes: spec.sizeBytes,
      blockSize: spec.blockSize,
      maxIoBytes,
      segmentBytes: spec.segmentBytes,
      inSyncReplicas: minInSyncCount(this.layout),
      replicas: spec.replicas,
    });
  }

  // ---- writes ----

  private async write(
    offsetBytes: number,
    lengthBytes: number,
    data: Uint8Array | null,
  ): Promise<Uint8Array> {
    const { spec } = this.deps;
    const pieces = splitBySegment(offsetBytes, lengthBytes, spec.segmentBytes);
    const firstBlock = offsetBytes / blockSizeBytes;
    let finish!: () => void;
    const done = new Promise<void>((resolve) => (finish = resolve));
    const id = this.inflight.add(firstBlock, lengthBytes / blockSizeBytes, done);
    try {
      await Promise.all(pieces.map((piece) => this.writePiece(piece, data)));
    } finally {
      this.inflight.remove(id);
      finish();
    }
    return new Uint8Array(0);
  }

  private async writePiece(piece: SegmentPiece, data: Uint8Array | null): Promise<void> {
    const segment = this.layout.segments[piece.segment];
    const entry: WriteEntry = {
      segment: piece.segment,
      firstBlock: piece.firstBlock,
      blockCount: piece.blockCount,
      kind: data ? EntryKind.data : EntryKind.zero,
      version: this.versions.take(piece.segment, this.epoch),
      data: data?.subarray(piece.byteStart, piece.byteStart + piece.blockCount * blockSizeBytes),
    };
    const targets = writeTargets(segment.replicas);
    const results = await Promise.allSettled(
      targets.map((r) => this.batcher(r.node).enqueue(entry)),
    );
    const failed: string[] = [];
    results.forEach((result, i) => {
      if (result.status === "fulfilled") return;
      const err = result.reason as Error;
      if (err instanceof ReplicaReplyError && err.code === "STALE_EPOCH") this.fenced(err);
      failed.push(targets[i].node);
      this.deps.log.warn(
        `volume ${this.name} segment ${piece.segment}: write to ${
          targets[i].node
        } failed: ${err.message}`,
      );
    });
    if (this.state !== "serving" && this.state !== "stopping") {
      throw new CairnError("MOVED", "volume was taken over by a newer owner");
    }
    // A failed replica is marked stale before the client hears ok, so it is never read.
    for (const node of failed) await this.markNodeStale(node, new Set([piece.segment]));
    const inSync = inSyncNodes(this.layout.segments[piece.segment].replicas).length;
    if (inSync < this.deps.spec.minInSync) {
      throw new CairnError(
        "UNAVAILABLE",
        `segment ${piece.segment} has ${inSync} in-sync replicas, fewer than ${this.deps.spec.minInSync}`,
      );
    }
  }

  private batcher(node: string): NodeWriteBatcher {
    let batcher = this.batchers.get(node);
    if (!batcher) {
      const link = this.deps.link(node);
      batcher = new NodeWriteBatcher(
        (epoch, entries) => link.write(epoch, entries),
        () => this.epoch,
      );
      this.batchers.set(node, batcher);
    }
    return batcher;
  }

  /**
   * Commits a layout change by CAS (one at a time, so a burst of failures
   * makes one change each) and adopts the result; false if nothing changed.
   */
  private changeLayout(change: (layout: VolumeLayout) => VolumeLayout | null): Promise<boolean> {
    const run = this.layoutChange.catch(() => {}).then(async () => {
      if (!change(this.layout)) return false;
      const updated = await this.deps.metadata.updateLayout(
        this.name,
        (current) => current.owner === this.deps.nodeId ? change(current) : null,
      );
      if (!updated) throw new CairnError("NO_SUCH_VOLUME", `volume ${this.name} is gone`);
      if (updated.value.owner !== this.deps.nodeId) {
        this.fenced(new Error(`owner is now ${updated.value.owner}`));
        throw new CairnError("MOVED", "volume was taken over by a newer owner");
      }
      this.layout = updated.value;
      return true;
    });
    this.layoutChange = run;
    return run;
  }

  private async markNodeStale(node: string, segments: Set<number>): Promise<void> {
    if (await this.changeLayout((l) => markStale(l, node, segments))) {
      this.deps.log.warn(
        `volume ${this.name}: marked ${node} stale for segments ${
          [...segments].join(",")
        } (epoch ${this.epoch})`,
      );
    }
  }

  /** A replica saw a newer epoch: someone else owns this volume now. */
  private fenced(err: Error): void {
    if (this.state === "serving") {
      this.deps.log.warn(`volume ${this.name}: fenced (${err.message}); stopping`);
      this.state = "stopping";
    }
  }

  // ---- reads ----

  private async read(offsetBytes: number, lengthBytes: number): Promise<Uint8Array> {
    const firstBlock = offsetBytes / blockSizeBytes;
    const waits = this.inflight.overlapping(firstBlock, lengthBytes / blockSizeBytes);
    if (waits.length) await Promise.all(waits);
    const pieces = splitBySegment(offsetBytes, lengthBytes, this.deps.spec.segmentBytes);
    if (pieces.length === 1) return (await this.readPiece(pieces[0])).data;
    const out = new Uint8Array(lengthBytes);
    await Promise.all(pieces.map(async (piece) => {
      out.set((await this.readPiece(piece)).data, piece.byteStart);
    }));
    return out;
  }

  private stats(node: string): NodeStats {
    let stats = this.nodeStats.get(node);
    if (!stats) this.nodeStats.set(node, stats = { outstanding: 0, latencyEwmaMs: 0 });
    return stats;
  }

  /** Reads one piece from one in-sync replica, trying the others on failure or rot. */
  private async readPiece(piece: SegmentPiece): Promise<ReadResult> {
    const nodes = inSyncNodes(this.layout.segments[piece.segment].replicas);
    if (nodes.length === 0) {
      throw new CairnError("UNAVAILABLE", `segment ${piece.segment} has no in-sync replica`);
    }
    const candidates: ReadCandidate[] = nodes.map((node) => ({
      node,
      ...this.stats(node),
      weight: this.weights.get(node) ?? 1,
    }));
    const first = this.picker.pick(candidates);
    const order = [nodes[first], ...nodes.filter((_, i) => i !== first)];
    const request: ReadRequest = {
      segment: piece.segment,
      epoch: this.epoch,
      firstBlock: piece.firstBlock,
      blockCount: piece.blockCount,
    };
    let lastError: Error | null = null;
    let rotten: { node: string; result: ReadResult } | null = null;
    for (const node of order) {
      const stats = this.stats(node);
      const startedMs = this.deps.clock.nowMs();
      stats.outstanding++;
      try {
        const result = await this.deps.link(node).read(request);
        stats.latencyEwmaMs = updateEwma(stats.latencyEwmaMs, this.deps.clock.nowMs() - startedMs);
        if (!result.states.includes("corrupt")) {
          if (rotten) this.repair(piece, rotten, result);
          return result;
        }
        this.deps.log.error(
          `volume ${this.name} segment ${piece.segment}: checksum mismatch on ${node}; reading another replica`,
        );
        rotten ??= { node, result };
      } catch (err) {
        lastError = err as Error;
        if (err instanceof ReplicaReplyError && err.code === "STALE_EPOCH") {
          this.fenced(err);
          throw new CairnError("MOVED", "volume was taken over by a newer owner");
        }
      } finally {
        stats.outstanding--;
      }
    }
    if (rotten) {
      throw new CairnError(
        "CORRUPT",
        `every replica of segment ${piece.segment} failed its checksum`,
      );
    }
    throw new CairnError(
      "UNAVAILABLE",
      `no replica of segment ${piece.segment} answered: ${lastError?.message}`,
    );
  }

  /** Rewrites rotten blocks on `node` from a good copy; a newer write is never undone. */
  private repair(
    piece: SegmentPiece,
    rotten: { node: string; result: ReadResult },
    good: ReadResult,
  ): void {
    const { node } = rotten;
    for (let i = 0; i < piece.blockCount; i++) {
      if (rotten.result.states[i] !== "corrupt") continue;
      const entry: WriteEntry = {
        segment: piece.segment,
        firstBlock: piece.firstBlock + i,
        blockCount: 1,
        kind: EntryKind.repair,
        version: good.versions[i],
        data: good.data.subarray(i * blockSizeBytes, (i + 1) * blockSizeBytes),
      };
      this.batcher(node).enqueue(entry).then(
        () =>
          this.deps.log.warn(
            `volume ${this.name}: repaired block ${entry.firstBlock} of segment ${piece.segment} on ${node}`,
          ),
        (err) =>
          this.deps.log.error(`volume ${this.name}: repair on ${node} failed: ${err.message}`),
      );
    }
  }
}
