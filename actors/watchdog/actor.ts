/** The watchdog actor of a node: publishes heartbeats and tracks everyone else's. */
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import type { Clock } from "../ports.ts";
import { subjectPrefix, subjects, subjectTail } from "../../protocol/subjects.ts";
import { heartbeatIntervalMs } from "../../protocol/limits.ts";
import { LivenessTracker } from "./core.ts";

export class Watchdog {
  readonly tracker: LivenessTracker;
  private subscription: Subscription | null = null;
  private cancelTimer: (() => void) | null = null;
  private sequence = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly nodeId: string,
    private readonly clock: Clock,
  ) {
    this.tracker = new LivenessTracker(clock.nowMs());
  }

  start(): void {
    this.subscription = this.nc.subscribe(subjects.heartbeatAll, {
      callback: (_err, msg) => {
        const node = subjectTail(msg.subject, `${subjectPrefix}.hb`);
        if (node) this.tracker.heard(node, this.clock.nowMs());
      },
    });
    const beat = () => {
      this.nc.publish(subjects.heartbeat(this.nodeId), String(++this.sequence));
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
