/**
 * The failure detector, pure: an adaptive timeout per peer. A peer is
 * `suspect` after a silence of max(suspectAfterMs, 3 × its mean heartbeat
 * interval) and `down` after max(downAfterMs, 6 × that mean), so a peer whose
 * heartbeats arrive late but steadily (a loaded machine) is not declared dead.
 *
 * A paused process (SIGSTOP, a long GC) must not judge peers by timers that
 * ran while it could not listen: the watchdog ticks every heartbeat interval,
 * and a tick that arrives far later than planned means this process was
 * paused, so every peer gets a fresh window from now.
 */
import { heartbeatIntervalMs, nodeDownAfterMs, nodeSuspectAfterMs } from "../../protocol/limits.ts";

export type PeerLiveness = "up" | "suspect" | "down";

export interface DetectorSettings {
  heartbeatIntervalMs: number;
  suspectAfterMs: number;
  downAfterMs: number;
}

export const defaultDetectorSettings: DetectorSettings = {
  heartbeatIntervalMs,
  suspectAfterMs: nodeSuspectAfterMs,
  downAfterMs: nodeDownAfterMs,
};

/** A tick this many intervals late means this process was paused. */
const pausedAfterIntervals = 3;
/** Weight of the newest interval in the mean (exponential moving average). */
const intervalEwmaWeight = 0.2;

interface Peer {
  lastHeardMs: number;
  meanIntervalMs: number;
  /** When its connection was seen gone (a probe found no responders), if after lastHeardMs. */
  goneAtMs: number | null;
}

export class FailureDetector {
  private readonly peers = new Map<string, Peer>();
  private lastTickMs: number;
  /** Silence is counted from here for every peer (start, or the end of a pause of ours). */
  private windowStartMs: number;

  constructor(
    startedMs: number,
    readonly settings: DetectorSettings = defaultDetectorSettings,
  ) {
    this.lastTickMs = startedMs;
    this.windowStartMs = startedMs;
  }

  heard(node: string, nowMs: number): void {
    const peer = this.peers.get(node);
    if (!peer) {
      this.peers.set(node, {
        lastHeardMs: nowMs,
        meanIntervalMs: this.settings.heartbeatIntervalMs,
        goneAtMs: null,
      });
      return;
    }
    const interval = nowMs - Math.max(peer.lastHeardMs, this.windowStartMs);
    if (interval > 0) {
      peer.meanIntervalMs += intervalEwmaWeight * (interval - peer.meanIntervalMs);
    }
    peer.lastHeardMs = nowMs;
    peer.goneAtMs = null;
  }

  /**
   * A suspect peer's connection is gone (a probe got "no responders"): it is down now,
   * without waiting out the rest of the silence. Hearing from it again undoes this.
   */
  connectionGone(node: string, nowMs: number): void {
    const peer = this.peers.get(node);
    if (peer && this.liveness(node, nowMs) === "suspect") peer.goneAtMs = nowMs;
  }

  /**
   * The watchdog's own periodic tick. Returns true when it came so late that
   * this process must have been paused; silences restart from now.
   */
  tick(nowMs: number): boolean {
    const late = nowMs - this.lastTickMs > pausedAfterIntervals * this.settings.heartbeatIntervalMs;
    this.lastTickMs = nowMs;
    if (late) this.windowStartMs = nowMs;
    return late;
  }

  /** Milliseconds since the last heartbeat, or null if none was heard. */
  silenceMs(node: string, nowMs: number): number | null {
    const peer = this.peers.get(node);
    return peer === undefined ? null : nowMs - peer.lastHeardMs;
  }

  liveness(node: string, nowMs: number): PeerLiveness {
    const peer = this.peers.get(node);
    const since = Math.max(peer?.lastHeardMs ?? this.windowStartMs, this.windowStartMs);
    const silence = nowMs - since;
    const mean = peer?.meanIntervalMs ?? this.settings.heartbeatIntervalMs;
    if (peer?.goneAtMs != null && peer.goneAtMs >= since) return "down";
    if (silence >= Math.max(this.settings.downAfterMs, 6 * mean)) return "down";
    if (silence >= Math.max(this.settings.suspectAfterMs, 3 * mean)) return "suspect";
    return "up";
  }
}
