/**
 * The volume actor: the single writer of one volume. It lives on the owner
 * node, holds the volume's owner term, serves client IO frames, fans writes
 * out to replicas and picks a replica for each read.
 *
 * Its lifecycle is the pure table in lifecycle.ts (taking-over, serving,
 * handing-off, stopping, stopped, fenced). Layout edits, handoff and catch-up
 * steps are messages on one mailbox, handled one at a time; client IO runs
 * concurrently, but only while serving, and a transition out of serving
 * waits for the IO in flight to finish.
 */
import type { Clock, Metrics, Random } from "../ports.ts";
import { observeIo, type VolumeView } from "../metrics.ts";
import {
  editLayout,
  inSyncEverywhere,
  type MetadataPort,
  type OwnerClaim,
  segmentsOfNode,
  takeOver,
} from "../metadata.ts";
import { Mailbox } from "../mailbox.ts";
import { chooseSuccessor } from "../placement/rendezvous.ts";
import {
  admitsIo,
  canHappen,
  isFinal,
  type LifecycleEvent,
  nextState,
  type VolumeActorState,
} from "./lifecycle.ts";
import type { Logger } from "../replica/host.ts";
import type {
  CopyProgress,
  SegmentReplica,
  VolumeLayout,
  VolumeSpec,
} from "../../protocol/schemas.ts";
import {
  decodeFlushTerm,
  decodeMulti,
  decodeRequest,
  encodeErrorReply,
  encodeMultiReplyPart,
  encodeReply,
  encodeStat,
  type IoRequest,
  isCached,
  type MultiReplyPart,
  Op,
  validateRequest,
} from "../../protocol/frames.ts";
import { CairnError, type ErrorCodeName, errorCodeName } from "../../protocol/errors.ts";
import { encodeJson } from "../../protocol/control.ts";
import {
  blockSizeBytes,
  type IoLimits,
  ioLimitsFor,
  maxIoBytes,
  maxVolumeQueueDepth,
} from "../../protocol/limits.ts";
import {
  bodyText,
  type ClientRequest,
  clientRequestKey,
  decodeReply,
  EntryKind,
  type ReadRequest,
  type ReadResult,
  type WriteEntry,
} from "../replica/wire.ts";
import { NodeWriteBatcher } from "./batcher.ts";
import { type ReplicaLink, ReplicaStream } from "./stream.ts";
import { leaseDurationMs, leaseRenewMs, leaseRequestTimeoutMs, OwnerLeases } from "./lease.ts";
import {
  InflightWrites,
  inSyncNodes,
  minInSyncCount,
  type SegmentPiece,
  setReplicaStates,
  splitBySegment,
  VersionCounter,
  versionsPerTerm,
  writeTargets,
} from "./core.ts";
import { type ReadCandidate, ReadPicker, updateEwma } from "./read_policy.ts";
import {
  blocksToCopy,
  catchUp,
  FencedError,
  fetchVersions,
  reconcileVolume,
  sleep,
} from "./reconcile.ts";
import {
  addReplicas,
  defaultReplicaGraceMs,
  dropReplaced,
  planReplacements,
  type Replacement,
} from "./replace.ts";
import type { PlacementNode } from "../placement/rendezvous.ts";
import { replicaScrubCalls, Scrubber, scrubBusyRequests, type ScrubSettings } from "./scrub.ts";

/** How often the owner looks for stale replicas whose node answers again. */
export const catchUpIntervalMs = 2000;
/** Longest wait between catch-up attempts at one node that keeps failing. */
export const maxCatchUpBackoffMs = 10_000;
/**
 * How long a write waits, once applied, for its segment to have the minimum number of
 * in-sync replicas again (a stale one caught up) before it fails with UNAVAILABLE. Brief
 * trouble (a paused process, a NATS restart) becomes a pause, not an error, as in DRBD
 * and Ceph; a longer outage still fails rather than acknowledge too few copies.
 */
export const belowMinInSyncWaitMs = 20_000;
/**
 * Writes each volume actor remembers by client connection and request id, to answer a resend
 * without applying it twice (oldest forgotten first, about 1 MiB): seconds' worth at thousands
 * of writes a second. A resend that comes later than that, or to a new owner after a
 * failover, is applied again (with a newer version).
 */
export const rememberedWritesPerVolume = 8192;
/** Default rate limit of catch-up and rebuild copies, per volume. */
export const defaultRebuildRateBytesPerSec = 256 * 1024 * 1024;
/**
 * How long the volume's home node must be live and in sync everywhere before ownership
 * moves back to it after a failover (so a node that flaps does not drag the volume along).
 */
export const failBackAfterMs = 10_000;
/** Segments one catch-up or rebuild copies at once. */
export const catchUpSegmentsInParallel = 4;
/** Copies may run this far ahead of the rate limit (a burst). */
const copyBurstMs = 100;
/** First and longest wait between takeover reconcile attempts (no metadata is written per attempt). */
export const takeoverRetryFirstMs = 250;
/**
 * A takeover still failing after this long passes the volume on to another live node with
 * an in-sync replica of every segment (one CAS), rather than retry forever while clients
 * wait: that node may have the disk space or the replicas this one lacks.
 */
export const takeoverPassOnAfterMs = 15_000;
export const takeoverRetryMaxMs = 10_000;

export type { ReplicaLink } from "./stream.ts";

export interface VolumeActorDeps {
  spec: VolumeSpec;
  nodeId: string;
  metadata: MetadataPort;
  link: (node: string) => ReplicaLink;
  clock: Clock;
  random: Random;
  log: Logger;
  /** Read weights for the `weighted` policy: each node's declared capacity. */
  weights?: ReadonlyMap<string, number>;
  /** Told after every state change (the node's supervisor listens). */
  onState?: (actor: VolumeActor, state: VolumeActorState) => void;
  /** Background scrub interval and rate (scrub.ts); default a pass a day at 8 MiB/s. */
  scrub?: Partial<ScrubSettings>;
  /** The node's watchdog judges this node down (a takeover does not wait for its fence). */
  judgedDown?: (node: string) => boolean;
  /** An operator drained the node: ownership does not fail back to it. */
  drained?: (node: string) => boolean;
  /** How long a down node's replicas wait for it before they are rebuilt elsewhere. */
  replicaGraceMs?: number;
  /** Rate limit of catch-up and rebuild copies (bytes per second). */
  rebuildRateBytesPerSec?: number;
  /** Live nodes that may take new replicas (placement candidates). */
  liveNodes?: () => Promise<PlacementNode[]>;
  /** Tells `node` to look at this volume now (after passing it on). */
  tellOwner?: (node: string) => void;
  /** Planned handoff back to the volume's home node (the supervisor's handOff). */
  failBack?: (to: string) => Promise<void>;
  /** Creates empty segment files of this volume on `node` (the segments.create node op). */
  createReplicas?: (node: string, segments: number[]) => Promise<void>;
  /** Where client IO and copies are reported (actors/metrics.ts); none in tests. */
  metrics?: Metrics;
  /**
   * The largest message this node's transport may publish now (NATS max_payload; undefined:
   * the 1 MiB default). Sizes the frames this owner accepts and its replica batches.
   */
  maxPayloadBytes?: () => number | undefined;
}

export type { CopyProgress } from "../../protocol/schemas.ts";

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
  link: Pick<ReplicaLink, "call">,
  op: string,
  body: Uint8Array,
  timeoutMs?: number,
): Promise<Uint8Array> {
  return checkReplicaReply(await link.call(op, body, timeoutMs));
}

interface NodeStats {
  outstanding: number;
  latencyEwmaMs: number;
}

interface CatchUpBackoff {
  failures: number;
  nextAttemptMs: number;
}

export class VolumeActor {
  readonly name: string;
  readonly volumeId: string;
  private layout!: VolumeLayout;
  private term = 0;
  private lifecycle: VolumeActorState = "taking-over";
  private readonly mailbox = new Mailbox();
  private readonly versions = new VersionCounter();
  private readonly inflight = new InflightWrites();
  private readonly batchers = new Map<string, NodeWriteBatcher>();
  /** One write stream per replica node, for this actor's life (see stream.ts). */
  private readonly streams = new Map<string, ReplicaStream>();
  private readonly nodeStats = new Map<string, NodeStats>();
  private readonly picker: ReadPicker;
  private requestsInFlight = 0;
  private readonly idleWaiters: (() => void)[] = [];
  private cancelCatchUp: (() => void) | null = null;
  private readonly catchUpBackoff = new Map<string, CatchUpBackoff>();
  /** Writes that failed on a rebuilding replica, per node: a catch-up that saw one starts over. */
  private readonly rebuildMisses = new Map<string, number>();
  /** Read leases from the replica nodes (lease.ts): reads are answered only under them. */
  private readonly leases = new OwnerLeases();
  private cancelLeaseTimer: (() => void) | null = null;
  private renewal: Promise<void> | null = null;
  /** The background scrub (scrub.ts), running only while serving. */
  private scrubber: Scrubber | null = null;
  /** When this actor first saw each replica node judged down (for the grace period). */
  private readonly downSinceMs = new Map<string, number>();
  /** Nodes whose replicas are new (rebuilds, not catch-ups). */
  private readonly rebuilding = new Set<string>();
  private readonly copies = new Map<
    string,
    {
      kind: CopyProgress["kind"];
      segments: number;
      blocksDone: number;
      blocksLeft: number;
      startedMs: number;
    }
  >();
  /** Since when the home node has been live and in sync everywhere (for failback). */
  private homeReadySinceMs: number | null = null;
  /** The rate limit's clock: when the copy budget is next free. */
  private copyFreeAtMs = 0;
  /** Writes by (origin, request id), so a resend is answered, not applied twice. */
  /** A cached write was sent since the last FLUSH began (a FLUSH then syncs replicas). */
  private cachedSinceFlush = false;
  /** The latest FLUSH, while it runs (a FLUSH after it waits for it). */
  private flushing: Promise<void> | null = null;
  private readonly recentWrites = new Map<
    string,
    Promise<{ frame: Uint8Array; ok: boolean }> | "ok"
  >();
  /** Told whenever the layout held here changes (writes waiting for in-sync replicas). */
  private layoutWaiters: (() => void)[] = [];
  private catchUpRunning = false;

  constructor(private readonly deps: VolumeActorDeps) {
    this.name = deps.spec.name;
    this.volumeId = deps.spec.id;
    this.picker = new ReadPicker(
      deps.spec.readPolicy as ConstructorParameters<typeof ReadPicker>[0],
      deps.nodeId,
      deps.random,
    );
  }

  get state(): VolumeActorState {
    return this.lifecycle;
  }

  /** The owner term this actor holds (0 before it won one). */
  get ownerTerm(): number {
    return this.term;
  }

  /** The state as of now (a method, so TypeScript does not narrow it across awaits). */
  private stateNow(): VolumeActorState {
    return this.lifecycle;
  }

  /** This actor as metrics see it (actors/metrics.ts). */
  view(): VolumeView {
    const { spec } = this.deps;
    const layout = this.layout as VolumeLayout | undefined;
    return {
      name: this.name,
      state: this.lifecycle,
      term: this.term,
      wantedReplicas: spec.replicas,
      layout,
      copies: this.copyProgress(),
    };
  }

  /**
   * Frame and batch sizes for this node's connection as it is now (it may move to another
   * NATS server): frames above ioBytes are refused TOO_LARGE, so a READ reply always fits.
   */
  ioLimits(): IoLimits {
    const payload = this.deps.maxPayloadBytes?.();
    if (this.limits === null || this.limitsFor !== payload) {
      this.limits = ioLimitsFor(payload);
      this.limitsFor = payload;
    }
    return this.limits;
  }
  private limits: IoLimits | null = null;
  private limitsFor: number | undefined;

  get serving(): boolean {
    return admitsIo(this.lifecycle);
  }

  private get claim(): OwnerClaim {
    return { volumeId: this.volumeId, owner: this.deps.nodeId, term: this.term };
  }

  private transition(event: LifecycleEvent, why = ""): void {
    const from = this.lifecycle;
    this.lifecycle = nextState(from, event);
    if (!admitsIo(this.lifecycle)) this.stopCatchUp();
    this.updateScrub();
    if (isFinal(this.lifecycle)) {
      this.cancelLeaseTimer?.();
      this.cancelLeaseTimer = null;
    }
    this.deps.log.info(
      `volume ${this.name}: ${from} -> ${this.lifecycle} (term ${this.term}${
        why ? `: ${why}` : ""
      })`,
    );
    this.deps.onState?.(this, this.lifecycle);
  }

  /**
   * Takes the volume: one CAS from exactly `expected` to this node at term + 1,
   * then fences and reconciles the replicas (retrying with backoff, writing no
   * metadata per attempt), and only then serves IO. Never throws: the outcome
   * is the actor's state (serving, stopped when the CAS lost, fenced).
   */
  async start(expected: OwnerClaim): Promise<void> {
    const { metadata, nodeId, clock, log } = this.deps;
    let won;
    try {
      won = await takeOver(metadata, this.name, expected, nodeId);
    } catch (err) {
      this.transitionIfPossible("term-lost", `takeover CAS failed: ${(err as Error).message}`);
      return;
    }
    if (won.kind === "lost") {
      const now = won.layout?.value;
      this.transitionIfPossible(
        "term-lost",
        now ? `layout shows ${now.owner} at term ${now.term}` : "volume is gone",
      );
      return;
    }
    this.layout = won.layout.value;
    this.term = won.layout.value.term;
    log.info(`volume ${this.name}: won term ${this.term} (from ${expected.owner})`);
    const startedMs = clock.nowMs();
    for (let attempt = 0; this.lifecycle === "taking-over"; attempt++) {
      try {
        const result = await reconcileVolume({
          name: this.name,
          layout: this.layout,
          segmentBytes: this.deps.spec.segmentBytes,
          metadata,
          link: (node) => this.stream(node),
          log,
          clock,
          judgedDown: this.deps.judgedDown,
        });
        if (this.lifecycle !== "taking-over") return;
        this.layout = result.layout;
        if (result.lostCachedWrites && (this.layout.cachedLossTerm ?? -1) < this.term) {
          // Recorded before serving, so every later owner answers the FLUSHes it concerns.
          const term = this.term;
          await this.editLayoutNow((current) => ({ ...current, cachedLossTerm: term }));
        }
        for (const [segment, version] of result.highestVersions) {
          this.versions.seed(segment, version);
        }
        await this.learnClientRequests();
        // Leases first, so the first reads need not wait for them.
        await this.renewLeases();
        if (this.stateNow() !== "taking-over") return;
        this.transition("reconciled", result.summary);
        this.scheduleCatchUp();
        this.scheduleLeases();
        return;
      } catch (err) {
        if (err instanceof FencedError) return this.fence(err.message);
        if (clock.nowMs() - startedMs >= takeoverPassOnAfterMs && await this.passOn(err as Error)) {
          return;
        }
        const delayMs = Math.min(takeoverRetryMaxMs, takeoverRetryFirstMs * 2 ** attempt);
        log.warn(
          `volume ${this.name}: takeover at term ${this.term} not finished (${
            (err as Error).message
          }); trying again in ${delayMs} ms`,
        );
        await sleep(clock, delayMs);
      }
    }
  }

  /**
   * Passes a volume this node cannot take over to the next candidate: a live node with an
   * in-sync replica of every segment, chosen as for a failover. One CAS from our claim;
   * true if it was passed on (this actor has stopped).
   */
  private async passOn(why: Error): Promise<boolean> {
    const { liveNodes, judgedDown } = this.deps;
    if (!liveNodes || this.stateNow() !== "taking-over") return false;
    const layout = (await this.deps.metadata.getLayout(this.name))?.value ?? this.layout;
    const candidates = (await liveNodes())
      .filter((n) => n.id !== this.deps.nodeId && !judgedDown?.(n.id))
      .filter((n) => inSyncEverywhere(layout, n.id))
      .map((n) => ({ node: n.id, inSyncSegments: layout.segments.length }));
    const to = chooseSuccessor(this.volumeId, candidates);
    if (!to || this.stateNow() !== "taking-over") return false;
    const result = await takeOver(this.deps.metadata, this.name, this.claim, to).catch(() => null);
    if (result?.kind !== "won") return false;
    this.transitionIfPossible(
      "term-lost",
      `takeover failing (${why.message}); passed on to ${to} at term ${result.layout.value.term}`,
    );
    this.deps.tellOwner?.(to);
    return true;
  }

  /**
   * Seeds the resend table from the in-sync replicas (they answered the fence, and the
   * reconcile made every write one of them holds the volume's): a client request whose
   * write an earlier owner applied is answered when it is resent here, not applied again.
   * Best effort: a replica that cannot say only costs that protection.
   */
  private async learnClientRequests(): Promise<void> {
    const body = encodeJson({ epoch: this.term });
    const nodes = new Set(this.layout.segments.flatMap((s) => inSyncNodes(s.replicas)));
    let learned = 0;
    await Promise.all([...nodes].map(async (node) => {
      try {
        const reply = await callReplica(this.stream(node), "requests", body);
        const { requests } = JSON.parse(new TextDecoder().decode(reply.subarray(1))) as {
          requests: string[];
        };
        for (const key of requests) {
          if (this.recentWrites.has(key)) continue;
          this.recentWrites.set(key, "ok");
          learned++;
          if (this.recentWrites.size > rememberedWritesPerVolume) {
            this.recentWrites.delete(this.recentWrites.keys().next().value!);
          }
        }
      } catch (err) {
        this.deps.log.warn(
          `volume ${this.name}: client requests of ${node} unknown (${(err as Error).message})`,
        );
      }
    }));
    if (learned) this.deps.log.info(`volume ${this.name}: ${learned} client requests known`);
  }

  /** For events that can race with a stop (a takeover that ends after stop() was called). */
  private transitionIfPossible(event: LifecycleEvent, why: string): void {
    if (canHappen(this.lifecycle, event)) this.transition(event, why);
  }

  /**
   * Planned handoff to `to`: stop admitting IO, let what is in flight finish,
   * record the move by one CAS (to `to` at term + 1), stop. The new owner then
   * takes over from that record. Refused unless `to` holds an in-sync replica
   * of every segment.
   */
  async handOff(to: string, rehome = false): Promise<{ term: number }> {
    if (this.lifecycle !== "serving") {
      throw new CairnError("MOVED", `volume ${this.name} is ${this.lifecycle} here, not serving`);
    }
    if (to === this.deps.nodeId) {
      throw new CairnError("BAD_REQUEST", `volume ${this.name} is already owned by ${to}`);
    }
    if (!inSyncEverywhere(this.layout, to)) {
      throw new CairnError(
        "BAD_REQUEST",
        `${to} does not hold an in-sync replica of every segment of ${this.name}`,
      );
    }
    this.transition("handoff-begun", `handing off to ${to}`);
    await this.drained();
    return await this.mailbox.post(async () => {
      if (this.lifecycle !== "handing-off") {
        throw new CairnError("MOVED", `volume ${this.name} was ${this.lifecycle} during handoff`);
      }
      if (!inSyncEverywhere(this.layout, to)) {
        // A write that failed while draining marked a replica of `to` stale.
        this.transition("handoff-failed", `${to} fell out of sync while IO drained`);
        this.scheduleCatchUp();
        throw new CairnError("UNAVAILABLE", `${to} fell out of sync during the handoff; try again`);
      }
      let result;
      try {
        result = await takeOver(this.deps.metadata, this.name, this.claim, to, rehome);
      } catch (err) {
        if (!canHappen(this.lifecycle, "handoff-failed")) {
          throw new CairnError("MOVED", `volume ${this.name} is ${this.lifecycle}`);
        }
        this.transition("handoff-failed", (err as Error).message);
        this.scheduleCatchUp();
        throw new CairnError("UNAVAILABLE", `handoff not recorded: ${(err as Error).message}`);
      }
      if (result.kind === "lost") {
        this.fence(`layout changed during handoff`);
        throw new CairnError("MOVED", `volume ${this.name} changed owner during handoff`);
      }
      this.transition(
        "handoff-recorded",
        `handed off to ${to} at term ${result.layout.value.term}`,
      );
      // The new owner's fences need not wait out our leases: we serve nothing more.
      await this.releaseLeases();
      return { term: result.layout.value.term };
    });
  }

  /** Stops taking IO; resolves when every request in flight has been answered. */
  async stop(why = "stopped"): Promise<void> {
    if (
      isFinal(this.lifecycle) || this.lifecycle === "stopping" || this.lifecycle === "handing-off"
    ) {
      await this.drained();
      return;
    }
    this.transition("stop-begun", why);
    await this.drained();
    // The state may have moved on (fenced) while draining.
    if (this.stateNow() === "stopping") {
      this.transition("drained");
      await this.releaseLeases();
    }
  }

  private drained(): Promise<void> {
    if (this.requestsInFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** A replica saw a newer term, or the layout shows another owner: stop serving for good. */
  private fence(why: string): void {
    if (!canHappen(this.lifecycle, "fenced")) return;
    this.deps.log.warn(`volume ${this.name}: fenced at term ${this.term} (${why})`);
    this.transition("fenced", why);
  }

  // ---- read leases ----

  private scheduleLeases(): void {
    this.cancelLeaseTimer = this.deps.clock.setTimer(leaseRenewMs, () => {
      this.cancelLeaseTimer = null;
      if (isFinal(this.lifecycle)) return;
      this.renewLeases().finally(() => {
        if (!isFinal(this.lifecycle) && !this.cancelLeaseTimer) this.scheduleLeases();
      });
    });
  }

  /** Nodes holding a replica that receives writes (in-sync or rebuilding). */
  private replicaNodes(): string[] {
    const nodes = new Set<string>();
    for (const s of this.layout.segments) {
      for (const r of s.replicas) if (r.state !== "stale") nodes.add(r.node);
    }
    return [...nodes];
  }

  /**
   * Renews the lease on every replica node (one renewal at a time; callers share it).
   * A refusal for a newer term fences this actor. A node whose renewals fail until its
   * lease has lapsed is treated like a failed write: stale, unless it is a last copy.
   */
  private renewLeases(): Promise<void> {
    this.renewal ??= (async () => {
      const body = new TextEncoder().encode(
        JSON.stringify({ epoch: this.term, durationMs: leaseDurationMs }),
      );
      await Promise.all(
        this.replicaNodes().map(async (node) => {
          const sentAtMs = this.deps.clock.nowMs();
          try {
            // A short timeout: a dead node must not hold the other nodes' renewals up.
            const reply = await callReplica(
              this.stream(node),
              "lease",
              body,
              leaseRequestTimeoutMs,
            );
            this.leases.granted(node, sentAtMs, leaseDurationMs);
            this.suspectReported(node, reply);
          } catch (err) {
            if (err instanceof ReplicaReplyError && err.code === "STALE_EPOCH") {
              return this.fence(`lease refused by ${node}: ${err.message}`);
            }
            if (this.leases.holdsAll([node], this.deps.clock.nowMs())) return;
            if (this.stateNow() !== "serving") return;
            this.layout.segments.forEach((s, segment) => {
              if (s.replicas.some((r) => r.node === node && r.state === "in-sync")) {
                void this.replicaWriteFailed(node, segment).catch(() => {});
              }
            });
          }
        }),
      );
    })().finally(() => (this.renewal = null));
    return this.renewal;
  }

  /**
   * A lease answer that lists suspect segments (host.ts `lease`): the node lost power with
   * unflushed cached writes and came back, and no fence of this term has judged it. Its
   * in-sync replicas of those segments are marked stale (a last copy is kept, as a takeover
   * keeps copies that are all suspect), so catch-up brings them the writes they lost;
   * otherwise, with no read or write reaching them, they would stay listed in sync without.
   */
  private suspectReported(node: string, reply: Uint8Array): void {
    if (reply.length <= 1 || this.stateNow() !== "serving") return;
    const { suspect } = JSON.parse(new TextDecoder().decode(reply.subarray(1))) as {
      suspect?: number[];
    };
    for (const segment of suspect ?? []) {
      const replica = this.layout.segments[segment]?.replicas.find((r) => r.node === node);
      if (replica?.state !== "in-sync") continue;
      this.deps.log.warn(
        `volume ${this.name}: ${node} reports segment ${segment} suspect (a power loss with ` +
          `unflushed cached writes); marking it stale to catch it up`,
      );
      void this.replicaWriteFailed(node, segment).catch(() => {});
    }
  }

  /** Gives the leases back (durationMs 0), so a new owner's fences need not wait them out. */
  private async releaseLeases(): Promise<void> {
    if (!this.layout || this.term === 0) return; // never won a term: holds no lease
    const body = new TextEncoder().encode(JSON.stringify({ epoch: this.term, durationMs: 0 }));
    await Promise.allSettled(
      this.replicaNodes().map((node) => callReplica(this.stream(node), "lease", body)),
    );
  }

  /** Whether reads of `segment` may be answered now: a lease from every in-sync replica. */
  private leased(segment: number): boolean {
    return this.leases.holdsAll(
      inSyncNodes(this.layout.segments[segment].replicas),
      this.deps.clock.nowMs(),
    );
  }

  // ---- background scrub ----

  /** Runs the background scrub (scrub.ts) while serving; stops it in any other state. */
  private updateScrub(): void {
    if (!admitsIo(this.lifecycle)) {
      this.scrubber?.stop();
      this.scrubber = null;
      return;
    }
    this.scrubber ??= new Scrubber({
      name: this.name,
      clock: this.deps.clock,
      log: this.deps.log,
      random: this.deps.random,
      settings: this.deps.scrub,
      blocksPerSegment: this.deps.spec.segmentBytes / blockSizeBytes,
      segmentCount: () => this.layout.segments.length,
      inSyncNodes: (segment) => inSyncNodes(this.layout.segments[segment].replicas),
      ...replicaScrubCalls((node) => this.stream(node), () => this.term),
      repair: (node, entry) => this.batcher(node).enqueue(entry),
      // No copy there (file missing or unreadable): stale, unless it is a last copy.
      lost: (node, segment) => void this.replicaWriteFailed(node, segment).catch(() => {}),
      busy: () => this.requestsInFlight >= scrubBusyRequests,
    });
    this.scrubber.start();
  }

  // ---- catching up replicas that come back ----

  private stopCatchUp(): void {
    this.cancelCatchUp?.();
    this.cancelCatchUp = null;
  }

  private scheduleCatchUp(delayMs = catchUpIntervalMs): void {
    this.stopCatchUp();
    this.cancelCatchUp = this.deps.clock.setTimer(delayMs, () => {
      this.cancelCatchUp = null;
      if (this.lifecycle !== "serving" || this.catchUpRunning) return;
      this.catchUpRunning = true;
      this.catchUpReplicas()
        .catch((err) => this.deps.log.warn(`volume ${this.name}: catch-up: ${err.message}`))
        .finally(() => {
          this.catchUpRunning = false;
          if (this.lifecycle === "serving" && !this.cancelCatchUp) this.scheduleCatchUp();
        });
    });
  }

  /** Catch-ups and rebuilds under way (for `volume info`). */
  copyProgress(): CopyProgress[] {
    const nowMs = this.deps.clock.nowMs();
    return [...this.copies].map(([node, c]) => {
      const elapsedMs = Math.max(1, nowMs - c.startedMs);
      return {
        node,
        kind: c.kind,
        segments: c.segments,
        bytesDone: c.blocksDone * blockSizeBytes,
        bytesLeft: Math.max(0, c.blocksLeft) * blockSizeBytes,
        bytesPerSec: Math.round(c.blocksDone * blockSizeBytes / (elapsedMs / 1000)),
        elapsedMs,
      };
    });
  }

  /** Waits until `bytes` more may be copied under the rate limit. */
  private async paceCopy(bytes: number): Promise<void> {
    const rate = this.deps.rebuildRateBytesPerSec ?? defaultRebuildRateBytesPerSec;
    const nowMs = this.deps.clock.nowMs();
    this.copyFreeAtMs = Math.max(this.copyFreeAtMs, nowMs) + bytes / rate * 1000;
    const waitMs = this.copyFreeAtMs - nowMs - copyBurstMs;
    if (waitMs > 0) await sleep(this.deps.clock, waitMs);
  }

  /**
   * Replica nodes the watchdog judges down: their in-sync replicas are marked stale now (so
   * the layout, `volume info` and `volume list` show the lost redundancy, and no read waits
   * on them), and once a node has been down longer than the grace period its replicas are
   * rebuilt elsewhere.
   */
  private async handleDownNodes(): Promise<void> {
    const { judgedDown } = this.deps;
    if (!judgedDown) return;
    const nowMs = this.deps.clock.nowMs();
    const nodes = new Set(this.layout.segments.flatMap((s) => s.replicas.map((r) => r.node)));
    for (const node of [...this.downSinceMs.keys()]) {
      if (!nodes.has(node)) this.downSinceMs.delete(node);
    }
    const lost = new Set<string>();
    for (const node of nodes) {
      if (node === this.deps.nodeId || !judgedDown(node)) {
        // Back: its catch-up is tried on this pass, not after the backoff it built up while
        // it was away (a node returning after 10 s would otherwise wait up to 10 s more).
        if (this.downSinceMs.delete(node)) this.catchUpBackoff.delete(node);
        continue;
      }
      if (!this.downSinceMs.has(node)) this.downSinceMs.set(node, nowMs);
      for (const [segment, s] of this.layout.segments.entries()) {
        if (s.replicas.some((r) => r.node === node && r.state !== "stale")) {
          await this.replicaWriteFailed(node, segment);
        }
      }
      const graceMs = this.deps.replicaGraceMs ?? defaultReplicaGraceMs;
      if (nowMs - this.downSinceMs.get(node)! >= graceMs) lost.add(node);
    }
    if (lost.size > 0) await this.replaceLost(lost);
  }

  /**
   * After a failover, ownership returns to the volume's home node (placement's choice) by a
   * planned handoff, once the home has been live and in sync everywhere for failBackAfterMs.
   */
  private considerFailBack(): void {
    const home = this.layout.home;
    const ready = home !== undefined && home !== this.deps.nodeId && this.deps.failBack &&
      !this.deps.judgedDown?.(home) && !this.deps.drained?.(home) &&
      inSyncEverywhere(this.layout, home);
    if (!ready) {
      this.homeReadySinceMs = null;
      return;
    }
    const nowMs = this.deps.clock.nowMs();
    this.homeReadySinceMs ??= nowMs;
    if (nowMs - this.homeReadySinceMs < failBackAfterMs) return;
    this.homeReadySinceMs = null;
    this.deps.log.info(`volume ${this.name}: failing back to its home node ${home}`);
    this.deps.failBack!(home!).catch((err) =>
      this.deps.log.warn(`volume ${this.name}: failback to ${home} not done: ${err.message}`)
    );
  }

  /** Adds replacements for replicas on `lost` nodes; drops the lost ones once replaced. */
  private async replaceLost(lost: ReadonlySet<string>): Promise<void> {
    const { liveNodes, createReplicas } = this.deps;
    if (!liveNodes || !createReplicas) return;
    const wanted = this.deps.spec.replicas;
    const live = (await liveNodes()).filter((n) => !lost.has(n.id));
    const plans = planReplacements(this.name, this.layout, wanted, lost, live);
    const byNode = new Map<string, Replacement[]>();
    for (const plan of plans) byNode.set(plan.to, [...(byNode.get(plan.to) ?? []), plan]);
    for (const [node, nodePlans] of byNode) {
      try {
        await createReplicas(node, nodePlans.map((p) => p.segment));
      } catch (err) {
        this.deps.log.warn(
          `volume ${this.name}: cannot create replacement replicas on ${node}: ${
            (err as Error).message
          }`,
        );
        continue;
      }
      const added = await this.mailbox.post(() =>
        this.editLayoutNow((current) => {
          const still = nodePlans.filter((p) =>
            current.segments[p.segment].replicas.some((r) => r.node === p.lost)
          );
          return still.length ? addReplicas(current, still) : null;
        })
      );
      if (added) {
        this.rebuilding.add(node);
        this.deps.log.warn(
          `volume ${this.name}: replacing replicas of ${
            [...new Set(nodePlans.map((p) => p.lost))].join(", ")
          } (down longer than the grace period) on ${node}: segments ${
            nodePlans.map((p) => p.segment).join(", ")
          }`,
        );
      }
    }
    const dropped = await this.mailbox.post(() =>
      this.editLayoutNow((current) => dropReplaced(current, wanted, lost))
    );
    if (dropped) {
      this.deps.log.info(
        `volume ${this.name}: replicas on ${
          [...lost].join(", ")
        } replaced and removed from the layout`,
      );
    }
  }

  /** Runs a catch-up pass now (unless one is running), not at the next period. */
  kickCatchUp(): void {
    if (this.catchUpRunning || this.lifecycle !== "serving") return;
    this.scheduleCatchUp(0);
  }

  /**
   * Brings stale replicas whose node answers again back in sync while IO
   * goes on: mark them rebuilding (writes now reach them), let older writes
   * finish, copy every block whose version differs from an in-sync source
   * (as version-guarded repairs, so a newer write is never undone), then mark
   * them in-sync, unless a write to them failed meanwhile. A node that keeps
   * failing is retried with backoff (at most 10 s apart), so its stale and
   * rebuilding edits cannot loop.
   */
  private async catchUpReplicas(): Promise<void> {
    await this.handleDownNodes();
    this.considerFailBack();
    const behind = new Map<string, number[]>();
    this.layout.segments.forEach((segment, index) => {
      for (const r of segment.replicas) {
        if (r.state === "in-sync") continue;
        if (!behind.has(r.node)) behind.set(r.node, []);
        behind.get(r.node)!.push(index);
      }
    });
    const nowMs = this.deps.clock.nowMs();
    for (const [node, segments] of behind) {
      if (this.lifecycle !== "serving") return;
      const backoff = this.catchUpBackoff.get(node);
      if (backoff && nowMs < backoff.nextAttemptMs) continue;
      try {
        await this.catchUpNode(node, segments);
        this.catchUpBackoff.delete(node);
      } catch (err) {
        if (err instanceof FencedError) return this.fence(err.message);
        const failures = (backoff?.failures ?? 0) + 1;
        const delayMs = Math.min(maxCatchUpBackoffMs, catchUpIntervalMs * 2 ** failures);
        this.catchUpBackoff.set(node, { failures, nextAttemptMs: nowMs + delayMs });
        this.deps.log.warn(
          `volume ${this.name}: catch-up of ${node} failed (${
            (err as Error).message
          }); next try in ${delayMs} ms`,
        );
      }
    }
  }

  private async catchUpNode(node: string, segments: number[]): Promise<void> {
    const link = this.stream(node);
    try {
      await callReplica(link, "fence", link.fenceBody(this.term, segments));
    } catch (err) {
      if (err instanceof ReplicaReplyError && err.code === "STALE_EPOCH") {
        throw new FencedError(err.message);
      }
      throw err;
    }
    const missesBefore = this.rebuildMisses.get(node) ?? 0;
    await this.editReplicaStates(
      segments.map((segment) => ({ segment, node, state: "rebuilding" as const })),
      (r) => r.state === "stale",
    );
    // Writes that started before the replica was a target are copied, not sent: let them land.
    await Promise.all(this.inflight.all());
    const blockCount = this.deps.spec.segmentBytes / blockSizeBytes;
    const copyInput = { name: this.name, link: (n: string) => this.stream(n), log: this.deps.log };
    const kind: CopyProgress["kind"] = this.rebuilding.has(node) ? "rebuild" : "catch-up";
    const live = {
      kind,
      segments: segments.length,
      blocksDone: 0,
      blocksLeft: 0,
      startedMs: this.deps.clock.nowMs(),
    };
    this.copies.set(node, live);
    const hooks = {
      pace: (bytes: number) => this.paceCopy(bytes),
      copied: (blocks: number) => {
        live.blocksDone += blocks;
        live.blocksLeft -= blocks;
        this.deps.metrics?.copied(this.name, kind, blocks * blockSizeBytes);
      },
    };
    /** Only segments copied from an in-sync source may become in-sync. */
    const caughtUp: number[] = [];
    const copySegment = async (segment: number) => {
      const sources = inSyncNodes(this.layout.segments[segment].replicas).filter((n) => n !== node);
      const sourceVersions = new Map<string, Float64Array>();
      for (const source of sources) {
        sourceVersions.set(
          source,
          await fetchVersions(this.stream(source), this.term, segment, blockCount),
        );
      }
      if (sourceVersions.size === 0) return;
      const targetVersions = await fetchVersions(link, this.term, segment, blockCount);
      live.blocksLeft += blocksToCopy(blockCount, sourceVersions, targetVersions);
      const spares = this.layout.segments[segment].replicas.map((r) => r.node);
      await catchUp(
        copyInput,
        this.term,
        segment,
        blockCount,
        sourceVersions,
        node,
        targetVersions,
        true,
        hooks,
        spares,
      );
      // Highest version wins both ways: where the returning replica holds a newer version
      // (a write that failed on the in-sync copies but reached it, never acknowledged), the
      // in-sync copies take it too, or the two would differ once it is back in sync. An
      // unacknowledged write may take effect late; repairs never undo a newer write of this
      // term. Only writes of this term: a newer version of an older term on the returning
      // replica alone was never acknowledged, or was lost in a power loss of every copy that
      // this term's takeover settled (reads may have seen the loss): the copy above replaced
      // it (host.ts notOlder), and it must not come back.
      const termFloor = this.term * versionsPerTerm;
      for (const [source, versions] of sourceVersions) {
        // Only blocks where the returning replica is strictly newer go up.
        const newer = Float64Array.from(
          versions,
          (v, b) => targetVersions[b] >= termFloor ? Math.max(v, targetVersions[b]) : v,
        );
        await catchUp(
          copyInput,
          this.term,
          segment,
          blockCount,
          new Map([[node, newer]]),
          source,
          versions,
          true,
          hooks,
        );
      }
      caughtUp.push(segment);
    };
    try {
      // Several segments at once; each copies a few runs at once (reconcile.ts).
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(catchUpSegmentsInParallel, segments.length) }, async () => {
          while (next < segments.length && this.lifecycle === "serving") {
            await copySegment(segments[next++]);
          }
        }),
      );
      if (this.lifecycle !== "serving") return;
      const changed = await this.mailbox.post(async () => {
        if ((this.rebuildMisses.get(node) ?? 0) !== missesBefore) {
          throw new Error(`a write to ${node} failed during the copy; starting over`);
        }
        return await this.editReplicaStatesNow(
          caughtUp.map((segment) => ({ segment, node, state: "in-sync" as const })),
          (r) => r.state === "rebuilding",
        );
      });
      if (changed) {
        const tookMs = Math.max(1, Math.round(this.deps.clock.nowMs() - live.startedMs));
        const bytes = live.blocksDone * blockSizeBytes;
        this.deps.log.info(
          `volume ${this.name}: ${node} ${
            kind === "rebuild" ? "rebuilt" : "caught up"
          } (${caughtUp.length} segments, ${live.blocksDone} blocks copied: ${bytes} bytes in ${tookMs} ms, ${
            Math.round(bytes / 1e6 / (tookMs / 1000))
          } MB/s)`,
        );
        if (caughtUp.length === segments.length) this.rebuilding.delete(node);
      }
    } finally {
      this.copies.delete(node);
    }
  }

  /** Serves one client frame and returns the reply frame. Never throws. */
  async handleFrame(frame: Uint8Array, origin?: string): Promise<Uint8Array> {
    const decoded = decodeRequest(frame);
    if (!decoded.ok) {
      return encodeErrorReply(decoded.code, decoded.message, decoded.requestId, this.term);
    }
    const request = decoded.request;
    const mutates = request.op === Op.WRITE || request.op === Op.TRIM ||
      request.op === Op.WRITE_ZEROES;
    if (!origin || !mutates || request.requestId === 0) return (await this.answer(request)).frame;
    // A resent write (the client's attempt timed out, or its connection moved) that this
    // actor already applied, or is applying, is answered, not applied again: applied again,
    // it would take a newer version and could undo a write acknowledged in between.
    const key = clientRequestKey({ origin, requestId: request.requestId });
    const earlier = this.recentWrites.get(key);
    if (earlier === "ok") {
      return encodeReply({
        status: 0,
        requestId: request.requestId,
        epoch: this.term,
        payload: new Uint8Array(0),
      });
    }
    if (earlier) return (await earlier).frame;
    const answer = this.answer(request, { origin, requestId: request.requestId });
    this.recentWrites.set(key, answer);
    if (this.recentWrites.size > rememberedWritesPerVolume) {
      this.recentWrites.delete(this.recentWrites.keys().next().value!);
    }
    const { frame: reply, ok } = await answer;
    if (this.recentWrites.get(key) === answer) {
      // Done: remember only that it was applied. A failed write may be tried again for real.
      if (ok) this.recentWrites.set(key, "ok");
      else this.recentWrites.delete(key);
    }
    return reply;
  }

  /**
   * Serves a MULTI's member frames in order, as if each came alone, and answers in parts:
   * the member replies ready in one burst of completions (one replica batch's writes, say) go
   * in one message, so a slow member holds back none of the others. Never throws.
   */
  handleMulti(frame: Uint8Array, origin: string | undefined, respond: (part: Uint8Array) => void) {
    const members = decodeMulti(frame);
    if (!Array.isArray(members)) {
      respond(encodeErrorReply(members.code, members.message, 0, this.term));
      return;
    }
    let ready: MultiReplyPart[] = [];
    const sendReady = () => {
      respond(encodeMultiReplyPart(ready, this.term));
      ready = [];
    };
    members.forEach((member, index) => {
      void this.handleFrame(member, origin).then((reply) => {
        // Completions of one burst run as promise jobs one after another: the first queues
        // the send behind the others' jobs, already queued, so they join it.
        if (ready.length === 0) queueMicrotask(sendReady);
        ready.push({ index, frame: reply });
      });
    });
  }

  private async answer(
    request: IoRequest,
    client?: ClientRequest,
  ): Promise<{ frame: Uint8Array; ok: boolean }> {
    const { requestId } = request;
    try {
      const payload = await this.serve(request, client);
      return { frame: encodeReply({ status: 0, requestId, epoch: this.term, payload }), ok: true };
    } catch (err) {
      // serve() throws only CairnErrors.
      const { code, detail } = err as CairnError;
      return { frame: encodeErrorReply(code, detail, requestId, this.term), ok: false };
    }
  }

  /**
   * Serves one decoded request and returns the reply payload, or throws a
   * CairnError. The frame path above and in-process callers (the NBD gateway
   * on the owner, which so skips encoding and copying frames) share it.
   */
  serve(request: IoRequest, client?: ClientRequest): Promise<Uint8Array> {
    return observeIo(
      this.deps.metrics,
      this.deps.clock,
      this.name,
      request,
      () => this.serveUnobserved(request, client),
    );
  }

  private async serveUnobserved(request: IoRequest, client?: ClientRequest): Promise<Uint8Array> {
    if (request.incarnation && request.incarnation !== this.deps.spec.incarnation) {
      // Checked before anything else: a handle to a deleted volume must never touch this one.
      throw new CairnError(
        "NO_SUCH_VOLUME",
        `volume ${this.name} was deleted and created again (incarnation ${request.incarnation} is gone)`,
      );
    }
    if (!admitsIo(this.lifecycle)) {
      throw new CairnError("MOVED", `volume ${this.name} is ${this.lifecycle} here`);
    }
    const invalid = validateRequest(request, this.deps.spec.sizeBytes, this.ioLimits().ioBytes);
    if (invalid) throw new CairnError(invalid.code, invalid.message);
    if (this.requestsInFlight >= maxVolumeQueueDepth) {
      throw new CairnError("BUSY", "too many requests in flight");
    }
    this.requestsInFlight++;
    try {
      return await this.execute(request, client);
    } catch (err) {
      if (err instanceof CairnError) throw err;
      this.deps.log.error(`volume ${this.name}: ${(err as Error).stack}`);
      throw new CairnError("INTERNAL", (err as Error).message);
    } finally {
      this.requestsInFlight--;
      if (this.requestsInFlight === 0) {
        for (const resolve of this.idleWaiters.splice(0)) resolve();
      }
    }
  }

  private execute(request: IoRequest, client?: ClientRequest): Promise<Uint8Array> {
    switch (request.op) {
      case Op.READ:
        return this.read(request.offsetBytes, request.lengthBytes);
      case Op.WRITE:
        return this.write(request.offsetBytes, request.lengthBytes, request.payload, client, {
          cached: isCached(request.flags),
        });
      case Op.TRIM:
      case Op.WRITE_ZEROES:
        return this.write(request.offsetBytes, request.lengthBytes, null, client, {
          cached: isCached(request.flags),
        });
      case Op.FLUSH:
        return this.flush(decodeFlushTerm(request.payload));
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
      maxIoBytes: this.ioLimits().ioBytes,
      segmentBytes: spec.segmentBytes,
      inSyncReplicas: minInSyncCount(this.layout),
      replicas: spec.replicas,
    });
  }

  // ---- writes ----

  /**
   * FLUSH: every write acknowledged before it becomes durable on every replica written to
   * (in sync or catching up). Orders after the writes in flight; free when no cached write
   * was sent since the last FLUSH. A replica whose flush fails is marked stale like one
   * whose write failed; the last in-sync copy is kept and the FLUSH fails.
   */
  private async flush(oldestCachedTerm: number | null = null): Promise<Uint8Array> {
    const lossTerm = this.layout.cachedLossTerm;
    if (oldestCachedTerm !== null && lossTerm !== undefined && oldestCachedTerm < lossTerm) {
      throw new CairnError(
        "CACHE_LOST",
        `cached writes acknowledged at term ${oldestCachedTerm} and not flushed may be lost: ` +
          `every copy of some segment lost power before term ${lossTerm} took over; their ` +
          `blocks hold older data or read CORRUPT until written again`,
      );
    }
    const needed = this.cachedSinceFlush;
    this.cachedSinceFlush = false;
    // A FLUSH still syncing covers writes acknowledged before this one too: this one answers
    // only after it, and fails with it (else it could say OK for writes not yet durable).
    const earlier = this.flushing;
    const run = (async () => {
      try {
        await Promise.all(this.inflight.all());
        if (earlier) await earlier;
        if (needed) await this.flushReplicas();
      } catch (err) {
        if (needed) this.cachedSinceFlush = true;
        throw err;
      }
    })();
    this.flushing = run;
    try {
      await run;
    } finally {
      if (this.flushing === run) this.flushing = null;
    }
    return new Uint8Array(0);
  }

  private async flushReplicas(): Promise<void> {
    const segmentsByNode = new Map<string, number[]>();
    this.layout.segments.forEach((segment, index) => {
      for (const { node } of writeTargets(segment.replicas)) {
        segmentsByNode.set(node, [...segmentsByNode.get(node) ?? [], index]);
      }
    });
    const body = encodeJson({ epoch: this.term });
    const nodes = [...segmentsByNode.keys()];
    const results = await Promise.allSettled(
      nodes.map((node) => callReplica(this.stream(node), "flush", body)),
    );
    const failed: { node: string; segment: number }[] = [];
    for (const [i, result] of results.entries()) {
      if (result.status === "fulfilled") continue;
      const err = result.reason as Error;
      if (err instanceof ReplicaReplyError && err.code === "STALE_EPOCH") this.fence(err.message);
      this.deps.log.warn(`volume ${this.name}: flush on ${nodes[i]} failed: ${err.message}`);
      for (const segment of segmentsByNode.get(nodes[i])!) failed.push({ node: nodes[i], segment });
    }
    await this.settleFailedReplicas(
      failed,
      `the flush failed on a last in-sync replica, which stays in sync; not acknowledged`,
    );
  }

  /**
   * A failed in-sync replica is marked stale before the client hears OK, so it is never read;
   * MOVED if the actor was fenced meanwhile, UNAVAILABLE (with `lastCopyMessage`) if one was a
   * segment's last in-sync replica, which stays in sync and the request is not acknowledged.
   */
  private async settleFailedReplicas(
    failed: readonly { node: string; segment: number }[],
    lastCopyMessage: string,
  ): Promise<void> {
    let keptLastCopy = false;
    for (const { node, segment } of failed) {
      if (await this.replicaWriteFailed(node, segment) === "kept-last-copy") keptLastCopy = true;
    }
    if (this.stateNow() === "fenced") {
      throw new CairnError("MOVED", "volume was taken over by a newer owner");
    }
    if (keptLastCopy) throw new CairnError("UNAVAILABLE", lastCopyMessage);
  }

  private async write(
    offsetBytes: number,
    lengthBytes: number,
    data: Uint8Array | null,
    client?: ClientRequest,
    { cached = false } = {},
  ): Promise<Uint8Array> {
    // Set before the write is sent: a FLUSH arriving meanwhile waits for it and syncs it.
    if (cached) this.cachedSinceFlush = true;
    const { spec } = this.deps;
    const pieces = splitBySegment(offsetBytes, lengthBytes, spec.segmentBytes);
    const firstBlock = offsetBytes / blockSizeBytes;
    let finish!: () => void;
    const done = new Promise<void>((resolve) => (finish = resolve));
    const id = this.inflight.add(firstBlock, lengthBytes / blockSizeBytes, done);
    try {
      // Every piece settles before the write leaves the in-flight set, even when one fails:
      // a catch-up waiting for writes in flight must not copy around a piece still landing.
      // Only a write of one piece names its request to the replicas: a new owner that saw
      // the request on one piece could not know the other pieces had landed too.
      const named = pieces.length === 1 ? client : undefined;
      const settled = await Promise.allSettled(
        pieces.map((piece) => this.writePiece(piece, data, named, cached)),
      );
      const failed = settled.find((r) => r.status === "rejected");
      if (failed) throw (failed as PromiseRejectedResult).reason;
    } finally {
      this.inflight.remove(id);
      finish();
    }
    // Out of the in-flight set first: the catch-up that brings a replica back waits for the
    // writes in flight to land, and this one has landed everywhere it will.
    for (const piece of pieces) await this.awaitMinInSync(piece.segment);
    return new Uint8Array(0);
  }

  private async writePiece(
    piece: SegmentPiece,
    data: Uint8Array | null,
    client: ClientRequest | undefined,
    cached: boolean,
  ): Promise<void> {
    const segment = this.layout.segments[piece.segment];
    const entry: WriteEntry = {
      segment: piece.segment,
      firstBlock: piece.firstBlock,
      blockCount: piece.blockCount,
      kind: data ? EntryKind.data : EntryKind.zero,
      version: this.versions.take(piece.segment, this.term),
      data: data?.subarray(piece.byteStart, piece.byteStart + piece.blockCount * blockSizeBytes),
      // Goes with the write to every replica, so a new owner knows this request was applied.
      request: client,
      cached,
    };
    const targets = writeTargets(segment.replicas);
    const results = await Promise.allSettled(
      targets.map((r) => this.batcher(r.node).enqueue(entry)),
    );
    const failed: string[] = [];
    results.forEach((result, i) => {
      if (result.status === "fulfilled") return;
      const err = result.reason as Error;
      if (err instanceof ReplicaReplyError && err.code === "STALE_EPOCH") this.fence(err.message);
      failed.push(targets[i].node);
      this.deps.log.warn(
        `volume ${this.name} segment ${piece.segment}: write to ${
          targets[i].node
        } failed: ${err.message}`,
      );
    });
    if (this.lifecycle === "fenced") {
      throw new CairnError("MOVED", "volume was taken over by a newer owner");
    }
    await this.settleFailedReplicas(
      failed.map((node) => ({ node, segment: piece.segment })),
      `segment ${piece.segment}: the write failed on its last in-sync replica, which stays in sync; not acknowledged`,
    );
  }

  /**
   * Waits, up to belowMinInSyncWaitMs, until `segment` has the volume's minimum number of
   * in-sync replicas (catch-up runs at once meanwhile); throws UNAVAILABLE if it does not.
   */
  private async awaitMinInSync(segment: number): Promise<void> {
    const { minInSync } = this.deps.spec;
    const inSync = () => inSyncNodes(this.layout.segments[segment].replicas).length;
    if (inSync() >= minInSync) return;
    const deadlineMs = this.deps.clock.nowMs() + belowMinInSyncWaitMs;
    this.kickCatchUp();
    while (inSync() < minInSync) {
      const leftMs = deadlineMs - this.deps.clock.nowMs();
      if (leftMs <= 0 || this.stateNow() !== "serving") {
        if (this.stateNow() !== "serving") {
          // Applied, not acknowledged: the client resends it to whoever serves next.
          throw new CairnError("MOVED", `volume ${this.name} is ${this.stateNow()} here`);
        }
        throw new CairnError(
          "UNAVAILABLE",
          `segment ${segment} has ${inSync()} in-sync replicas, fewer than ${minInSync}, and none came back within ${belowMinInSyncWaitMs} ms`,
        );
      }
      await new Promise<void>((resolve) => {
        const cancel = this.deps.clock.setTimer(Math.min(leftMs, catchUpIntervalMs), resolve);
        this.layoutWaiters.push(() => {
          cancel();
          resolve();
        });
      });
    }
  }

  /** The layout held here changed: writes waiting for in-sync replicas look again. */
  private layoutChanged(): void {
    for (const wake of this.layoutWaiters.splice(0)) wake();
  }

  /**
   * A write to `node` failed. An in-sync replica is marked stale by CAS before the write
   * is acknowledged, unless it is the segment's last in-sync copy; a rebuilding one is
   * marked stale too and spoils the catch-up running for it. One mailbox message, so it
   * orders with catch-up's in-sync edit.
   */
  private replicaWriteFailed(
    node: string,
    segment: number,
  ): Promise<"marked" | "not-in-sync" | "kept-last-copy"> {
    return this.mailbox.post(async () => {
      const replicas = this.layout.segments[segment].replicas;
      const replica = replicas.find((r) => r.node === node);
      if (!replica || replica.state === "stale") return "not-in-sync";
      if (replica.state === "rebuilding") {
        // Spoils the copy running for it, and stops sending it writes (one CAS): a hung
        // node must not hold every write to this segment up for the replica timeout.
        this.rebuildMisses.set(node, (this.rebuildMisses.get(node) ?? 0) + 1);
        await this.editReplicaStatesNow(
          [{ segment, node, state: "stale" }],
          (r) => r.state === "rebuilding",
        );
        return "not-in-sync";
      }
      if (inSyncNodes(replicas).length === 1) {
        // Never demote the last in-sync copy (DRBD keeps its last UpToDate disk): it holds
        // every acknowledged write, and with no in-sync replica no owner could take over.
        this.deps.log.warn(
          `volume ${this.name}: write to ${node}, the last in-sync replica of segment ${segment}, failed; it stays in sync`,
        );
        // If a lost batch broke its write stream, it refuses every write until fenced
        // again: restart the stream (it misses only writes that failed, unacknowledged).
        const stream = this.stream(node);
        const segments = segmentsOfNode(this.layout, node);
        await callReplica(stream, "fence", stream.fenceBody(this.term, segments)).catch(() => {});
        return "kept-last-copy";
      }
      if (
        await this.editReplicaStatesNow(
          [{ segment, node, state: "stale" }],
          (r) => r.state === "in-sync",
        )
      ) {
        this.deps.log.warn(
          `volume ${this.name}: marked ${node} stale for segment ${segment} (term ${this.term})`,
        );
      }
      return "marked";
    });
  }

  private batcher(node: string): NodeWriteBatcher {
    let batcher = this.batchers.get(node);
    if (!batcher) {
      const link = this.stream(node);
      batcher = new NodeWriteBatcher(
        (term, entries) => link.write(term, entries),
        () => this.term,
        () => this.ioLimits().replicaBatchBytes,
      );
      this.batchers.set(node, batcher);
    }
    return batcher;
  }

  private stream(node: string): ReplicaStream {
    let stream = this.streams.get(node);
    if (!stream) this.streams.set(node, stream = new ReplicaStream(node, this.deps.link(node)));
    return stream;
  }

  private editReplicaStates(
    changes: { segment: number; node: string; state: SegmentReplica["state"] }[],
    when: (current: SegmentReplica) => boolean,
  ): Promise<boolean> {
    return this.mailbox.post(() => this.editReplicaStatesNow(changes, when));
  }

  /**
   * Sets replica states by CAS on the layout revision (the term stays: this fences
   * no one), only for replicas whose current state passes `when`. Call from inside
   * a mailbox message. False if nothing changed; fences the actor if the layout
   * shows another owner or term.
   */
  private async editReplicaStatesNow(
    changes: { segment: number; node: string; state: SegmentReplica["state"] }[],
    when: (current: SegmentReplica) => boolean,
  ): Promise<boolean> {
    const applicable = (layout: VolumeLayout) =>
      changes.filter((c) => {
        const r = layout.segments[c.segment]?.replicas.find((x) => x.node === c.node);
        return r !== undefined && when(r);
      });
    if (applicable(this.layout).length === 0) return false;
    return await this.editLayoutNow((current) => setReplicaStates(current, applicable(current)));
  }

  /**
   * Any replica-list edit by CAS on the layout revision (the term stays: this fences no one);
   * call from inside a mailbox message. False if nothing changed; fences the actor if the
   * layout shows another owner or term.
   */
  private async editLayoutNow(
    change: (current: VolumeLayout) => VolumeLayout | null,
  ): Promise<boolean> {
    const result = await editLayout(this.deps.metadata, this.name, this.claim, change);
    if (result.kind === "fenced") {
      this.fence(
        result.layout
          ? `layout shows ${result.layout.value.owner} at term ${result.layout.value.term}`
          : "volume is gone",
      );
      throw new CairnError("MOVED", "volume was taken over by a newer owner");
    }
    this.layout = result.layout.value;
    this.layoutChanged();
    return result.kind === "done";
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

  /**
   * Reads one piece from one in-sync replica, trying the others on failure or rot. A replica
   * whose NATS server allows smaller messages than this node's answers a large piece with
   * TOO_LARGE: the piece is then read in pieces of maxIoBytes (which every server carries).
   */
  private async readPiece(piece: SegmentPiece): Promise<ReadResult> {
    if (piece.blockCount * blockSizeBytes <= maxIoBytes) return await this.readPieceLeased(piece);
    try {
      return await this.readPieceLeased(piece);
    } catch (err) {
      if (!(err instanceof ReplicaReplyError && err.code === "TOO_LARGE")) throw err;
    }
    const maxBlocks = maxIoBytes / blockSizeBytes;
    const parts: SegmentPiece[] = [];
    for (let at = 0; at < piece.blockCount; at += maxBlocks) {
      parts.push({
        segment: piece.segment,
        firstBlock: piece.firstBlock + at,
        blockCount: Math.min(maxBlocks, piece.blockCount - at),
        byteStart: piece.byteStart + at * blockSizeBytes,
      });
    }
    const results = await Promise.all(parts.map((part) => this.readPieceLeased(part)));
    const data = new Uint8Array(piece.blockCount * blockSizeBytes);
    results.forEach((r, i) =>
      data.set(r.data, (parts[i].firstBlock - piece.firstBlock) * blockSizeBytes)
    );
    return {
      versions: results.flatMap((r) => r.versions),
      states: results.flatMap((r) => r.states),
      data,
    };
  }

  private async readPieceLeased(piece: SegmentPiece): Promise<ReadResult> {
    if (!this.leased(piece.segment)) await this.renewLeases();
    const result = await this.readPieceUnleased(piece);
    // Checked when the data is in hand: a read that began under a lease but finished
    // after it lapsed (this process was paused, or cut off) may be stale; answer nothing.
    if (!this.leased(piece.segment)) {
      throw new CairnError(
        "MOVED",
        `no read lease from every in-sync replica of segment ${piece.segment}: this owner may have been replaced`,
      );
    }
    return result;
  }

  private async readPieceUnleased(piece: SegmentPiece): Promise<ReadResult> {
    const nodes = inSyncNodes(this.layout.segments[piece.segment].replicas);
    if (nodes.length === 0) {
      throw new CairnError("UNAVAILABLE", `segment ${piece.segment} has no in-sync replica`);
    }
    const candidates: ReadCandidate[] = nodes.map((node) => ({
      node,
      ...this.stats(node),
      weight: this.deps.weights?.get(node) ?? 1,
    }));
    const first = this.picker.pick(candidates);
    const order = [nodes[first], ...nodes.filter((_, i) => i !== first)];
    const request: ReadRequest = {
      segment: piece.segment,
      epoch: this.term,
      firstBlock: piece.firstBlock,
      blockCount: piece.blockCount,
    };
    let lastError: Error | null = null;
    /** The piece as assembled so far: the first answer, with rotten blocks filled in later. */
    let merged: ReadResult | null = null;
    /** Blocks of `merged` still without a good copy. */
    let missing: number[] = [];
    const rotten: { node: string; result: ReadResult }[] = [];
    for (const node of order) {
      const stats = this.stats(node);
      const startedMs = this.deps.clock.nowMs();
      stats.outstanding++;
      try {
        const result = await this.stream(node).read(request);
        stats.latencyEwmaMs = updateEwma(stats.latencyEwmaMs, this.deps.clock.nowMs() - startedMs);
        const corrupt = result.states.includes("corrupt");
        if (!merged) {
          if (!corrupt) return result;
          // Keep this copy's good blocks; only the rotten ones are looked for elsewhere.
          merged = {
            versions: [...result.versions],
            states: [...result.states],
            data: new Uint8Array(result.data),
          };
          missing = result.states.flatMap((state, i) => state === "corrupt" ? [i] : []);
        } else {
          // Block by block: each rotten block takes the first good copy any replica has.
          missing = missing.filter((i) => {
            if (result.states[i] === "corrupt") return true;
            merged!.states[i] = result.states[i];
            merged!.versions[i] = result.versions[i];
            merged!.data.set(
              result.data.subarray(i * blockSizeBytes, (i + 1) * blockSizeBytes),
              i * blockSizeBytes,
            );
            return false;
          });
        }
        if (corrupt) {
          this.deps.log.error(
            `volume ${this.name} segment ${piece.segment}: checksum mismatch on ${node}; reading another replica`,
          );
          rotten.push({ node, result });
        }
        if (missing.length === 0) {
          for (const bad of rotten) this.repair(piece, bad, merged);
          return merged;
        }
      } catch (err) {
        lastError = err as Error;
        // Too large for that replica's NATS server: readPiece reads it in smaller pieces.
        if (err instanceof ReplicaReplyError && err.code === "TOO_LARGE") throw err;
        if (err instanceof ReplicaReplyError && err.code === "STALE_EPOCH") {
          this.fence(err.message);
          throw new CairnError("MOVED", "volume was taken over by a newer owner");
        }
        if (err instanceof ReplicaReplyError && err.code === "NO_SUCH_VOLUME") {
          // The node holds no good copy (its segment file is missing or unreadable): mark it
          // stale (unless it is a last copy) so catch-up rebuilds it; the next replica answers.
          void this.replicaWriteFailed(node, piece.segment).catch(() => {});
        }
      } finally {
        stats.outstanding--;
      }
    }
    if (merged) {
      throw new CairnError(
        "CORRUPT",
        `block ${
          piece.firstBlock + missing[0]
        } of segment ${piece.segment} failed its checksum on every in-sync replica`,
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
      if (rotten.result.states[i] !== "corrupt" || good.states[i] === "corrupt") continue;
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
