/**
 * Read leases, the replica's side (after Ceph's PG read leases). An owner may
 * answer reads only while it holds an unexpired lease from every in-sync
 * replica of the segment. A replica grants leases to the owner term it
 * follows; a fence of a higher term waits until its grant to a lower term has
 * lapsed (and refuses that term new grants meanwhile), so by the time a new
 * owner has fenced a replica, the old owner's lease from it is over. A host
 * that just started may have granted a lease before it restarted and lost the
 * record: it delays every fence by one longest lease after it starts.
 * Pure: times are this host's monotonic milliseconds, passed in.
 */

/** The longest lease a replica grants (and so the longest a fence can wait). */
export const maxLeaseMs = 2000;

export type LeaseAnswer = { granted: true; untilMs: number } | { granted: false; why: string };

export class LeaseTable {
  private readonly grants = new Map<string, { term: number; untilMs: number }>();
  /** The highest term waiting to fence each volume: lower terms get no new grants. */
  private readonly fencing = new Map<string, number>();

  constructor(private readonly startedMs: number) {}

  /** A lease request from the owner at `term` (durationMs 0 releases the lease). */
  grant(volume: string, term: number, durationMs: number, nowMs: number): LeaseAnswer {
    const pending = this.fencing.get(volume) ?? -1;
    if (pending > term) {
      return {
        granted: false,
        why: `owner term ${pending} is taking over; term ${term} gets no lease`,
      };
    }
    const current = this.grants.get(volume);
    if (current && current.term > term) {
      return { granted: false, why: `lease held at term ${current.term}; term ${term} is older` };
    }
    const untilMs = nowMs + Math.min(Math.max(durationMs, 0), maxLeaseMs);
    this.grants.set(volume, { term, untilMs });
    return { granted: true, untilMs };
  }

  /**
   * When a fence at `term` may proceed: after every lease granted to a lower term has
   * lapsed, and not before one longest lease after this host started. Marks the fence as
   * pending until then, so the lower term cannot renew meanwhile.
   */
  fenceReadyAtMs(volume: string, term: number, nowMs: number): number {
    let readyMs = this.startedMs + maxLeaseMs;
    const current = this.grants.get(volume);
    if (current && current.term < term) readyMs = Math.max(readyMs, current.untilMs);
    if (readyMs > nowMs) this.fencing.set(volume, Math.max(this.fencing.get(volume) ?? -1, term));
    return readyMs;
  }

  /** The fence at `term` went through: the lower terms' leases are gone for good. */
  fenced(volume: string, term: number): void {
    const current = this.grants.get(volume);
    if (current && current.term < term) this.grants.delete(volume);
    if ((this.fencing.get(volume) ?? -1) <= term) this.fencing.delete(volume);
  }
}
