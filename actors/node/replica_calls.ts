/**
 * Requests from a volume owner to remote replica hosts, judged fairly:
 *
 * - A dead replica node is noticed in a few hundred milliseconds, not after
 *   the replica timeout. A request still waiting after `replicaProbeAfterMs`
 *   makes the owner probe the node; NATS answers "no responders" at once when
 *   the node's connection is gone (kill -9), and then every request waiting on
 *   that node fails now, so the write goes on and the replica is marked stale.
 *   A probe that times out while the watchdog judges the node down does the same.
 * - A timeout that expires while this process itself was stalled (SIGSTOP, a
 *   long pause of the event loop) is no evidence against the peer: the reply
 *   may be sitting in the socket. Such a timeout is extended by a fresh window
 *   after the stall, so a resumed owner does not mark healthy replicas stale.
 */
import { type Clock, type MessageBody, type Transport, TransportError } from "../ports.ts";
import { subjectPrefix } from "../../protocol/subjects.ts";

/** A request to a replica waiting this long makes the owner probe its node. */
export const replicaProbeAfterMs = 250;
/** A probe's own timeout. */
export const replicaProbeTimeoutMs = 500;
/** The stall detector's tick, and the silence that counts as a stall of this process. */
export const stallTickMs = 100;
export const stallThresholdMs = 500;
/** A request outlives its timeout by at most this much because of stalls of this process. */
export const maxStallGraceMs = 30_000;

/** The probe subject: any replica host answers it at once (not a volume op). */
export function replicaProbeSubject(node: string): string {
  return `${subjectPrefix}.rep.${node}.ping`;
}

/**
 * Notices stalls of this process: a tick that should come every stallTickMs
 * and came much later means the process (or its event loop) did not run.
 */
export class StallDetector {
  private lastTickMs: number;
  private lastStallEndMs = -Infinity;
  private cancel: (() => void) | null = null;

  constructor(private readonly clock: Clock) {
    this.lastTickMs = clock.nowMs();
  }

  start(): void {
    const tick = () => {
      this.observe();
      this.cancel = this.clock.setTimer(stallTickMs, tick);
    };
    this.cancel = this.clock.setTimer(stallTickMs, tick);
  }

  stop(): void {
    this.cancel?.();
    this.cancel = null;
  }

  private observe(): void {
    const nowMs = this.clock.nowMs();
    if (nowMs - this.lastTickMs > stallThresholdMs) this.lastStallEndMs = nowMs;
    this.lastTickMs = nowMs;
  }

  /** Whether this process stalled at some point after `sinceMs` (or is just waking from one). */
  stalledSince(sinceMs: number): boolean {
    if (this.cancel === null) return false; // not running: knows nothing
    this.observe();
    return this.lastStallEndMs >= sinceMs;
  }
}

interface Waiting {
  node: string;
  startedMs: number;
  reject: (err: Error) => void;
}

export class ReplicaCalls {
  private readonly waiting = new Set<Waiting>();
  private readonly probing = new Set<string>();
  private readonly probeTimers = new Map<string, () => void>();

  constructor(
    private readonly transport: Transport,
    private readonly clock: Clock,
    private readonly stall: StallDetector,
    /** The watchdog's judgement: a probe timing out on a node judged down fails its requests. */
    private readonly judgedDown: (node: string) => boolean,
  ) {}

  /** One request to `node`; rejects with TransportError like Transport.request. */
  request(
    node: string,
    subject: string,
    body: MessageBody,
    timeoutMs: number,
  ): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const startedMs = this.clock.nowMs();
      let cancelTimer = () => {};
      const entry: Waiting = {
        node,
        startedMs,
        reject: (err) => {
          if (!this.waiting.delete(entry)) return;
          cancelTimer();
          reject(err);
        },
      };
      this.waiting.add(entry);
      const arm = (delayMs: number, windowStartMs: number) => {
        cancelTimer = this.clock.setTimer(delayMs, () => {
          if (!this.waiting.has(entry)) return;
          if (this.stall.stalledSince(windowStartMs)) {
            // This process did not run for a while: give the peer a fresh window from now.
            const nowMs = this.clock.nowMs();
            if (nowMs - startedMs < timeoutMs + maxStallGraceMs) return arm(timeoutMs, nowMs);
          }
          entry.reject(new TransportError("timeout", `${subject} after ${timeoutMs} ms`));
        });
      };
      arm(timeoutMs, startedMs);
      this.transport.request(subject, body, timeoutMs + maxStallGraceMs).then(
        (reply) => {
          if (!this.waiting.delete(entry)) return;
          cancelTimer();
          resolve(reply);
        },
        (err) => {
          if (err instanceof TransportError && err.kind === "no-responders") this.nodeGone(node);
          entry.reject(err);
        },
      );
      this.scheduleProbe(node);
    });
  }

  private scheduleProbe(node: string): void {
    if (this.probeTimers.has(node)) return;
    this.probeTimers.set(
      node,
      this.clock.setTimer(replicaProbeAfterMs, () => {
        this.probeTimers.delete(node);
        const nowMs = this.clock.nowMs();
        let any = false;
        let old = false;
        for (const w of this.waiting) {
          if (w.node !== node) continue;
          any = true;
          if (nowMs - w.startedMs >= replicaProbeAfterMs) old = true;
        }
        if (old && !this.probing.has(node)) void this.probe(node);
        if (any) this.scheduleProbe(node);
      }),
    );
  }

  private async probe(node: string): Promise<void> {
    this.probing.add(node);
    try {
      await this.transport.request(
        replicaProbeSubject(node),
        new Uint8Array(0),
        replicaProbeTimeoutMs,
      );
    } catch (err) {
      if (!(err instanceof TransportError)) return;
      // No responders: the node's connection is gone. A timeout counts only on a node the
      // watchdog already judges down (a busy node may be slow to answer).
      if (err.kind === "no-responders" || (err.kind === "timeout" && this.judgedDown(node))) {
        this.nodeGone(node);
      }
    } finally {
      this.probing.delete(node);
    }
  }

  /** Fails every request waiting on `node`: its replies can no longer come. */
  private nodeGone(node: string): void {
    for (const w of [...this.waiting]) {
      if (w.node === node) {
        w.reject(new TransportError("no-responders", `replica node ${node} is gone`));
      }
    }
  }

  stop(): void {
    for (const cancel of this.probeTimers.values()) cancel();
    this.probeTimers.clear();
  }
}
