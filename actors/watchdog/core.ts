/** Pure failure detector: a node is live while its heartbeats keep arriving. */
import { nodeDownAfterMs } from "../../protocol/limits.ts";

export class LivenessTracker {
  private readonly lastSeenMs = new Map<string, number>();

  constructor(private readonly startedMs: number, private readonly downAfterMs = nodeDownAfterMs) {}

  heard(node: string, nowMs: number): void {
    this.lastSeenMs.set(node, nowMs);
  }

  /** Milliseconds since the last heartbeat, or null if none was heard. */
  silenceMs(node: string, nowMs: number): number | null {
    const seen = this.lastSeenMs.get(node);
    return seen === undefined ? null : nowMs - seen;
  }

  /**
   * Live if heard recently. Before we have listened for a full down-after
   * window, a node we have not heard yet is given the benefit of the doubt.
   */
  isLive(node: string, nowMs: number): boolean {
    const silence = this.silenceMs(node, nowMs);
    if (silence === null) return nowMs - this.startedMs < this.downAfterMs;
    return silence < this.downAfterMs;
  }
}
