/**
 * The watchdog actor of a node: publishes heartbeats, runs the failure
 * detector (core.ts) over everyone else's, and records a node it judges dead
 * as `down` in the metadata, once, by compare-and-set on the node's record
 * (every watchdog races to record it; one CAS wins, the rest see it done). A
 * node that finds its own record `down` while it is alive (it was cut off or
 * paused) records itself `up` again.
 */
import {
  type Clock,
  type Transport,
  TransportError,
  type TransportSubscription,
} from "../ports.ts";
import { CasConflictError, type MetadataPort, type Versioned } from "../metadata.ts";
import type { Logger } from "../replica/host.ts";
import type { NodeRecord } from "../../protocol/schemas.ts";
import { subjectPrefix, subjects, subjectTail } from "../../protocol/subjects.ts";
import {
  defaultDetectorSettings,
  type DetectorSettings,
  FailureDetector,
  type PeerLiveness,
} from "./core.ts";

const encoder = new TextEncoder();
/** How often the watchdog re-reads every node record (to see who is recorded down). */
export const nodeRecordRefreshMs = 2000;
/** A probe of a suspect peer waits this long for its watchdog's answer. */
export const watchdogProbeTimeoutMs = 500;

export class Watchdog {
  readonly detector: FailureDetector;
  private subscription: TransportSubscription | null = null;
  private probeSubscription: TransportSubscription | null = null;
  /** Peers with a probe in flight. */
  private readonly probing = new Set<string>();
  private cancelTimer: (() => void) | null = null;
  private sequence = 0;
  private records = new Map<string, Versioned<NodeRecord>>();
  private lastRefreshMs = -Infinity;
  private recording = false;
  private stopped = false;
  /** Told when this watchdog recorded a node down (the supervisor looks for volumes to take). */
  onRecordedDown: (node: string) => void = () => {};

  constructor(
    private readonly transport: Transport,
    private readonly nodeId: string,
    private readonly clock: Clock,
    private readonly metadata?: MetadataPort,
    private readonly log?: Logger,
    settings: DetectorSettings = defaultDetectorSettings,
  ) {
    this.detector = new FailureDetector(clock.nowMs(), settings);
  }

  start(): void {
    this.subscription = this.transport.subscribe(subjects.heartbeatAll, (msg) => {
      const node = subjectTail(msg.subject, `${subjectPrefix}.hb`);
      if (node) this.detector.heard(node, this.clock.nowMs());
    });
    this.probeSubscription = this.transport.subscribe(
      subjects.watchdogProbe(this.nodeId),
      (msg) => msg.respond(new Uint8Array(0)),
    );
    const beat = () => {
      if (this.stopped) return;
      this.transport.publish(
        subjects.heartbeat(this.nodeId),
        encoder.encode(String(++this.sequence)),
      );
      if (this.detector.tick(this.clock.nowMs())) {
        this.log?.warn(`watchdog: this process was paused; peers get a fresh window`);
      }
      this.probeSuspects();
      this.recordNow();
      this.cancelTimer = this.clock.setTimer(this.detector.settings.heartbeatIntervalMs, beat);
    };
    beat();
  }

  /** Records node states now, unless a recording is under way. */
  private recordNow(): void {
    if (this.recording || !this.metadata || this.stopped) return;
    this.recording = true;
    this.recordDeaths().catch((err) =>
      this.log?.warn(`watchdog: recording node states: ${(err as Error).message}`)
    ).finally(() => (this.recording = false));
  }

  /**
   * Probes suspect peers: "no responders" means the peer's NATS connection is gone (the
   * process died), so it is down now rather than after the rest of the silence. A probe
   * that times out proves nothing (the peer may be paused, or the network slow).
   */
  private probeSuspects(): void {
    const nowMs = this.clock.nowMs();
    for (const id of this.records.keys()) {
      if (id === this.nodeId || this.probing.has(id)) continue;
      if (this.detector.liveness(id, nowMs) !== "suspect") continue;
      this.probing.add(id);
      this.transport.request(subjects.watchdogProbe(id), new Uint8Array(0), watchdogProbeTimeoutMs)
        .then(
          () => {},
          (err) => {
            if (err instanceof TransportError && err.kind === "no-responders") {
              this.detector.connectionGone(id, this.clock.nowMs());
              this.log?.warn(`watchdog: ${id}'s connection is gone (probe: no responders)`);
              this.recordNow();
            }
          },
        )
        .finally(() => this.probing.delete(id));
    }
  }

  /** Records peers judged dead as `down` (and this node as `up` if it was recorded down). */
  private async recordDeaths(rereadOnConflict = true): Promise<void> {
    const metadata = this.metadata!;
    const nowMs = this.clock.nowMs();
    if (nowMs - this.lastRefreshMs >= nodeRecordRefreshMs) {
      this.lastRefreshMs = nowMs;
      const before = this.records;
      this.records = new Map((await metadata.listNodes()).map((r) => [r.value.id, r]));
      for (const [id, record] of this.records) {
        // Another watchdog recorded it: this node's supervisor looks for volumes to take too.
        const was = before.get(id)?.value.state;
        if (record.value.state === "down" && was !== undefined && was !== "down") {
          this.onRecordedDown(id);
        }
      }
    }
    for (const [id, record] of this.records) {
      const self = id === this.nodeId;
      const judged = self ? "up" : this.detector.liveness(id, this.clock.nowMs());
      const next = self && record.value.state === "down"
        ? "up"
        : !self && judged === "down" && record.value.state !== "down"
        ? "down"
        : null;
      if (!next) continue;
      try {
        const revision = await metadata.casNode({ ...record.value, state: next }, record.revision);
        this.records.set(id, { value: { ...record.value, state: next }, revision });
        if (next === "down") this.onRecordedDown(id);
        this.log?.warn(
          self
            ? `watchdog: this node was recorded down while alive; recorded up again`
            : `watchdog: ${id} silent for ${
              Math.round(this.detector.silenceMs(id, this.clock.nowMs()) ?? 0)
            } ms; recorded down`,
        );
      } catch (err) {
        if (!(err instanceof CasConflictError)) throw err;
        // Another watchdog moved first: read it now (a node recorded down is news to act on).
        this.lastRefreshMs = -Infinity;
        if (rereadOnConflict) return await this.recordDeaths(false);
      }
    }
  }

  /** Whether the node's record (as last read, at most nodeRecordRefreshMs old) says drained. */
  drained(node: string): boolean {
    return this.records.get(node)?.value.drained === true;
  }

  liveness(node: string): PeerLiveness {
    return node === this.nodeId ? "up" : this.detector.liveness(node, this.clock.nowMs());
  }

  isLive(node: string): boolean {
    return this.liveness(node) !== "down";
  }

  /** Every other node in the metadata, as this watchdog judges it (for metrics). */
  peers(): { node: string; silenceMs: number | null; liveness: PeerLiveness }[] {
    return [...this.records.keys()].filter((id) => id !== this.nodeId).map((node) => ({
      node,
      silenceMs: this.silenceMs(node),
      liveness: this.liveness(node),
    }));
  }

  silenceMs(node: string): number | null {
    return node === this.nodeId ? 0 : this.detector.silenceMs(node, this.clock.nowMs());
  }

  stop(): void {
    this.stopped = true;
    this.cancelTimer?.();
    this.subscription?.unsubscribe();
    this.probeSubscription?.unsubscribe();
  }
}
