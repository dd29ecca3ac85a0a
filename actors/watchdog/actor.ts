/** The watchdog actor of a node: publishes heartbeats and tracks everyone else's. */
import type { Clock, Transport, TransportSubscription } from "../ports.ts";
import { subjectPrefix, subjects, subjectTail } from "../../protocol/subjects.ts";
import { heartbeatIntervalMs } from "../../protocol/limits.ts";
import { LivenessTracker } from "./core.ts";

const encoder = new TextEncoder();

export class Watchdog {
  readonly tracker: LivenessTracker;
  private subscription: TransportSubscription | null = null;
  private cancelTimer: (() => void) | null = null;
  private sequence = 0;

  constructor(
    private readonly transport: Transport,
    private readonly nodeId: string,
    private readonly clock: Clock,
  ) {
    this.tracker = new LivenessTracker(clock.nowMs());
  }

  start(): void {
    this.subscription = this.transport.subscribe(subjects.heartbeatAll, (msg) => {
      const node = subjectTail(msg.subject, `${subjectPrefix}.hb`);
      if (node) this.tracker.heard(node, this.clock.nowMs());
    });
    const beat = () => {
      this.transport.publish(
        subjects.heartbeat(this.nodeId),
        encoder.encode(String(++this.sequence)),
      );
      this.cancelTimer = this.clock.setTimer(heartbeatIntervalMs, beat);
    };
    beat();
  }

  isLive(node: string): boolean {
    return node === this.nodeId || this.tracker.isLive(node, this.clock.nowMs());
  }

  silenceMs(node: string): number | null {
    return node === this.nodeId ? 0 : this.tracker.silenceMs(node, this.clock.nowMs());
  }

  stop(): void {
    this.cancelTimer?.();
    this.subscription?.unsubscribe();
  }
}
