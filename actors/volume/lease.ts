/**
 * Read leases, the owner's side: when each replica node's lease ends, on this
 * node's clock. A lease granted for D ms from a request sent at t is counted
 * as ending at t + D × (1 − maxClockDriftFraction): the replica's clock
 * started the grant later than t and may run slower, so the owner stops
 * trusting it first. Pure: times are passed in.
 */

/**
 * How long each lease is asked for, and how often it is renewed. The duration bounds how
 * long a successor's fences wait after an owner dies (its last lease runs out), so it is
 * most of the failover time once death is detected; four renewals fit in one lease, so a
 * replica is judged by its lease only after several renewals in a row failed.
 */
export const leaseDurationMs = 1200;
export const leaseRenewMs = 300;
/** How long one lease request may take (under the renew period, so renewals never pile up). */
export const leaseRequestTimeoutMs = 250;
/** How much faster or slower two nodes' monotonic clocks may run, as a fraction. */
export const maxClockDriftFraction = 0.05;

export class OwnerLeases {
  private readonly untilMs = new Map<string, number>();

  /** A lease request sent at `sentAtMs` was granted for `durationMs`. */
  granted(node: string, sentAtMs: number, durationMs: number): void {
    const until = sentAtMs + durationMs * (1 - maxClockDriftFraction);
    this.untilMs.set(node, Math.max(this.untilMs.get(node) ?? 0, until));
  }

  /** Forget a node's lease (it was released, or the node left the segment). */
  drop(node: string): void {
    this.untilMs.delete(node);
  }

  /** Whether every node in `nodes` holds a lease that is still good at `nowMs`. */
  holdsAll(nodes: readonly string[], nowMs: number): boolean {
    return nodes.every((node) => (this.untilMs.get(node) ?? 0) > nowMs);
  }
}
