/**
 * The watchdog actor of a node: publishes heartbeats, runs the failure
 * detector (core.ts) over everyone else's, and records a node it judges dead
 * as `down` in the metadata, once, by compare-and-set on the node's record
 * (every watchdog races to record it; one CAS wins, the rest see it done). A
 * node that finds its own record `down` while it is alive (it was cut off or
 * paused) records itself `up` again.
 */
import type { Clock, Transport, TransportSubscription } from "../ports.ts";
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

export class Watchdog {
  readonly detector: FailureDetector;
  private subscription: TransportSubscription | null = null;
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
    const beat = () => {
      if (this.stopped) return;
      this.transport.publish(
        subjects.heartbeat(this.nodeId),
        encoder.encode(String(++this.sequence)),
      );
      if (this.detector.tick(this.clock.nowMs())) {
        this.log?.warn(`watchdog: this process was paused; peers get a fresh window`);
      }
      if (!this.recording && this.metadata) {
        this.recording = true;
        this.recordDeaths().catch((err) =>
          this.log?.warn(`watchdog: recording node states: ${(err as Error).message}`)
        ).finally(() => (this.recording = false));
      }
      this.cancelTimer = this.clock.setTimer(this.detector.settings.heartbeatIntervalMs, beat);
    };
    beat();
  }

  /** Records peers judged dead as `down` (and this node as `up` if it was recorded down). */
  private async recordDeaths(): Promise<void> {
    const metadata = this.metadata!;
    const nowMs = this.clock.nowMs();
    if (nowMs - this.lastRefreshMs >= nodeRecordRefreshMs) {
      this.lastRefreshMs = nowMs;
      this.records = new Map((await metadata.listNodes()).map((r) => [r.value.id, r]));
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
        this.lastRefreshMs = -Infinity; // another watchdog moved first: re-read next tick
      }
    }
  }

  liveness(node: string): PeerLiveness {
    return node === this.nodeId ? "up" : this.detector.liveness(node, this.clock.nowMs());
  }

  isLive(node: string): boolean {
    return this.liveness(node) !== "down";
  }

  silenceMs(node: string): number | null {
    return node === this.nodeId ? 0 : this.detector.silenceMs(node, this.clock.nowMs());
  }

  stop(): void {
    this.stopped = true;
    this.cancelTimer?.();
    this.subscription?.unsubscribe();
  }
}
