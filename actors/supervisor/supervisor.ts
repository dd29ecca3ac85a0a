/**
 * The supervisor of one node: decides (core.ts) which volume actors run here,
 * starts and stops them, subscribes the IO subject of each serving one, and
 * looks again whenever an actor finishes, a node op asks, or a periodic sweep
 * runs, so no volume stays stuck answering MOVED while this node could serve it.
 */
import { isMulti } from "../../protocol/frames.ts";
import type { Clock, Metrics, Random, Transport, TransportSubscription } from "../ports.ts";
import type { VolumeView } from "../metrics.ts";
import type { MetadataPort, OwnerClaim } from "../metadata.ts";
import type { VolumeLayout, VolumeSpec } from "../../protocol/schemas.ts";
import type { Logger } from "../replica/host.ts";
import { type ReplicaLink, VolumeActor, type VolumeActorDeps } from "../volume/actor.ts";
import type { ScrubSettings } from "../volume/scrub.ts";
import { isFinal, type VolumeActorState } from "../volume/lifecycle.ts";
import { Mailbox } from "../mailbox.ts";
import {
  chooseSuccessor,
  decideVolume,
  type LocalActorView,
  type OwnerHealth,
  type VolumeRecordView,
} from "./core.ts";
import { subjects } from "../../protocol/subjects.ts";
import { CairnError } from "../../protocol/errors.ts";
import { requestJson } from "../../protocol/control.ts";

/** How often the supervisor re-reads every volume's metadata. */
export const supervisorSweepMs = 2000;
/** An actor that ended sooner than this after it started makes the next start wait. */
export const quickFailureMs = 5000;
export const restartBackoffFirstMs = 500;
export const restartBackoffMaxMs = 30_000;

export interface SupervisorDeps {
  nodeId: string;
  metadata: MetadataPort;
  transport: Transport;
  clock: Clock;
  random: Random;
  log: Logger;
  link: (volumeId: string, node: string) => ReplicaLink;
  weights: () => ReadonlyMap<string, number>;
  /** The watchdog's judgement of a node (for takeovers). */
  judgedDown?: (node: string) => boolean;
  /** Whether an operator drained a node (no failback to it). */
  drained?: (node: string) => boolean;
  /** Background scrub settings for this node's volume actors (default: scrub.ts). */
  scrub?: Partial<ScrubSettings>;
  /** Replacing lost replicas (see VolumeActorDeps). */
  replicaGraceMs?: number;
  rebuildRateBytesPerSec?: number;
  liveNodes?: VolumeActorDeps["liveNodes"];
  createReplicas?: (
    volumeId: string,
    name: string,
    node: string,
    segments: number[],
  ) => Promise<void>;
  /** Where the volume actors and ownership changes are reported (actors/metrics.ts). */
  metrics?: Metrics;
}

interface Running {
  actor: VolumeActor;
  startedMs: number;
  io: TransportSubscription | null;
}

export class Supervisor {
  private readonly running = new Map<string, Running>();
  /** One mailbox per volume: decisions about one volume never interleave. */
  private readonly mailboxes = new Map<string, Mailbox>();
  private readonly restartDelayMs = new Map<string, number>();
  private readonly notBeforeMs = new Map<string, number>();
  private cancelSweep: (() => void) | null = null;
  private stopped = false;

  constructor(private readonly deps: SupervisorDeps) {}

  start(): void {
    const sweep = () => {
      this.sweep()
        .catch((err) => this.deps.log.warn(`supervisor sweep: ${(err as Error).message}`))
        .finally(() => {
          if (!this.stopped) this.cancelSweep = this.deps.clock.setTimer(supervisorSweepMs, sweep);
        });
    };
    sweep();
  }

  /** Looks at every volume in the metadata and every actor running here. */
  async sweep(): Promise<void> {
    const names = new Set((await this.deps.metadata.listSpecs()).map((s) => s.name));
    for (const name of this.running.keys()) names.add(name);
    for (const name of names) await this.check(name);
  }

  /** Whether any actor (in any state) runs here for this volume incarnation. */
  hasActor(name: string, volumeId: string): boolean {
    return this.running.get(name)?.actor.volumeId === volumeId;
  }

  /** The serving actor of a volume on this node, if any (for in-process gateways). */
  localVolume(name: string): VolumeActor | undefined {
    const actor = this.running.get(name)?.actor;
    return actor?.serving ? actor : undefined;
  }

  /** Every volume actor here, as metrics see it. */
  volumeViews(): VolumeView[] {
    return [...this.running.values()].map((r) => r.actor.view());
  }

  actorStates(): { name: string; state: VolumeActorState; term: number }[] {
    return [...this.running].map(([name, r]) => ({
      name,
      state: r.actor.state,
      term: r.actor.ownerTerm,
    }));
  }

  /** Re-reads one volume's metadata and acts on the decision; serialized per volume. */
  check(name: string): Promise<void> {
    let mailbox = this.mailboxes.get(name);
    if (!mailbox) this.mailboxes.set(name, mailbox = new Mailbox());
    return mailbox.post(() => this.decideAndAct(name));
  }

  private async decideAndAct(name: string): Promise<void> {
    // A forget leads straight to another decision (a fenced actor may be replaced at once).
    for (let round = 0; round < 3 && !this.stopped; round++) {
      const spec = await this.deps.metadata.getSpec(name);
      const layout = spec ? await this.deps.metadata.getLayout(name) : null;
      const record: VolumeRecordView | null = spec && layout
        ? {
          name,
          volumeId: spec.value.id,
          owner: layout.value.owner,
          term: layout.value.term,
        }
        : null;
      const current = this.running.get(name);
      const local: LocalActorView | null = current
        ? {
          volumeId: current.actor.volumeId,
          state: current.actor.state,
          term: current.actor.ownerTerm,
        }
        : null;
      const health = record && layout && record.owner !== this.deps.nodeId && !local
        ? await this.ownerHealth(layout.value)
        : undefined;
      const action = decideVolume(this.deps.nodeId, record ? record : null, local, health);
      switch (action.kind) {
        case "none":
          return;
        case "forget":
          this.forget(name);
          continue;
        case "stop":
          await current!.actor.stop(action.reason);
          this.forget(name);
          continue;
        case "start": {
          const waitMs = (this.notBeforeMs.get(name) ?? 0) - this.deps.clock.nowMs();
          if (waitMs > 0) {
            // Restarting too fast would write metadata in a loop: look again later.
            this.deps.clock.setTimer(waitMs, () => void this.check(name));
            return;
          }
          this.launch(spec!.value, action.expected);
          return;
        }
      }
    }
  }

  /** Whether the owner's node is recorded down, and who should take over if it is. */
  private async ownerHealth(layout: VolumeLayout): Promise<OwnerHealth> {
    const owner = await this.deps.metadata.getNode(layout.owner);
    if (owner?.value.state !== "down") return { ownerDown: false, successor: null };
    const candidates = (await this.deps.metadata.listNodes())
      .filter((n) => n.value.state === "up" && n.value.id !== layout.owner)
      .map((n) => ({
        node: n.value.id,
        drained: n.value.drained === true,
        inSyncSegments:
          layout.segments.filter((s) =>
            s.replicas.some((r) => r.node === n.value.id && r.state === "in-sync")
          ).length,
      }));
    return { ownerDown: true, successor: chooseSuccessor(layout.volumeId, candidates) };
  }

  private launch(
    spec: VolumeSpec,
    expected: OwnerClaim,
  ): void {
    const { deps } = this;
    const name = spec.name;
    const actor = new VolumeActor({
      spec,
      nodeId: deps.nodeId,
      metadata: deps.metadata,
      link: (node) => deps.link(spec.id, node),
      clock: deps.clock,
      random: deps.random,
      log: deps.log,
      weights: deps.weights(),
      scrub: deps.scrub,
      judgedDown: deps.judgedDown,
      drained: deps.drained,
      replicaGraceMs: deps.replicaGraceMs,
      rebuildRateBytesPerSec: deps.rebuildRateBytesPerSec,
      liveNodes: deps.liveNodes,
      failBack: (to) => this.handOff(name, to).then(() => {}),
      tellOwner: (node) =>
        void requestJson(deps.transport, subjects.node(node, "volume.check"), { name }).catch(
          () => {},
        ),
      createReplicas: deps.createReplicas &&
        ((node, segments) => deps.createReplicas!(spec.id, spec.name, node, segments)),
      onState: (a, state) => this.onActorState(name, a, state),
      metrics: deps.metrics,
      maxPayloadBytes: () => deps.transport.maxPayloadBytes?.(),
    });
    this.running.set(name, { actor, startedMs: deps.clock.nowMs(), io: null });
    actor.start(expected).then(() => {
      // Won a term, whatever happened after: a failover took it from another node.
      if (actor.ownerTerm > expected.term) {
        deps.metrics?.tookOver(name, expected.owner === deps.nodeId ? "claim" : "failover");
      }
    }).catch((err) =>
      deps.log.error(`volume ${name}: takeover ended with ${(err as Error).stack ?? err}`)
    );
  }

  private onActorState(name: string, actor: VolumeActor, state: VolumeActorState): void {
    const entry = this.running.get(name);
    if (!entry || entry.actor !== actor) return;
    if (state === "serving" && !entry.io) {
      this.restartDelayMs.delete(name);
      entry.io = this.deps.transport.subscribe(subjects.volumeIo(name), (msg) => {
        if (isMulti(msg.data)) actor.handleMulti(msg.data, msg.origin, (part) => msg.respond(part));
        else actor.handleFrame(msg.data, msg.origin).then((reply) => msg.respond(reply));
      });
    }
    if (state !== "serving" && entry.io) {
      // Requests arriving now would be answered MOVED anyway; let clients find the new owner.
      entry.io.unsubscribe();
      entry.io = null;
    }
    if (isFinal(state)) {
      const livedMs = this.deps.clock.nowMs() - entry.startedMs;
      if (livedMs < quickFailureMs) {
        const delayMs = Math.min(
          restartBackoffMaxMs,
          (this.restartDelayMs.get(name) ?? restartBackoffFirstMs / 2) * 2,
        );
        this.restartDelayMs.set(name, delayMs);
        this.notBeforeMs.set(name, this.deps.clock.nowMs() + delayMs);
      }
      if (!this.stopped) void this.check(name);
    }
  }

  private forget(name: string): void {
    const entry = this.running.get(name);
    entry?.io?.unsubscribe();
    this.running.delete(name);
  }

  /** Planned handoff of a volume this node serves; then tells the new owner to take it. */
  async handOff(name: string, to: string, rehome = false): Promise<{ term: number }> {
    const entry = this.running.get(name);
    if (!entry) {
      throw new CairnError("MOVED", `volume ${name} is not served by ${this.deps.nodeId}`);
    }
    const result = await entry.actor.handOff(to, rehome);
    this.deps.metrics?.handedOff(name);
    // The new owner's sweep would find the record too; this just saves it the wait.
    await requestJson(this.deps.transport, subjects.node(to, "volume.check"), { name })
      .catch((err) =>
        this.deps.log.warn(`volume ${name}: telling ${to} to take over: ${err.message}`)
      );
    return result;
  }

  /** A node was recorded down: every serving actor looks at its replicas now. */
  nodeDown(): void {
    for (const { actor } of this.running.values()) if (actor.serving) actor.kickCatchUp();
  }

  /** Stops every actor (node shutdown): each finishes the IO it has in flight. */
  async stopAll(): Promise<void> {
    this.stopped = true;
    this.cancelSweep?.();
    await Promise.all([...this.running.values()].map((r) => r.actor.stop("node stopping")));
    for (const name of [...this.running.keys()]) this.forget(name);
  }
}
