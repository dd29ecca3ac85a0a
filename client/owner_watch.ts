/**
 * Notices that a volume's owner changed, so requests already delivered to a
 * dead or deposed owner are resent at once instead of each waiting out its
 * attempt timeout.
 *
 * Evidence of a change: a reply carrying a higher owner term than any seen so
 * far, "no responders" on the volume's subject (the owner's connection is
 * gone), or a MOVED answer. Each piece of evidence starts a new generation;
 * every attempt sent in an older generation is abandoned and resent. While an
 * attempt has waited longer than `ownerProbeAfterMs`, the volume sends a cheap
 * STAT probe now and then: its answer (from a successor that subscribed since)
 * is the evidence a lone request on a paused owner would otherwise never get.
 */

/** An attempt older than this makes the volume probe for a new owner. */
export const ownerProbeAfterMs = 600;
/** How long a probe may take; a probe that times out proves nothing. */
export const ownerProbeTimeoutMs = 1000;

/** Thrown into an attempt that was sent to an owner since replaced. */
export class OwnerChangedError extends Error {
  override name = "OwnerChangedError";
  constructor(why: string) {
    super(`owner changed (${why}); resending`);
  }
}

export class OwnerWatch {
  private highestTerm = 0;
  private generationNow = 0;
  private abandon: ((err: OwnerChangedError) => void)[] = [];
  private changed!: Promise<never>;

  constructor() {
    this.renew();
  }

  private renew(): void {
    this.changed = new Promise<never>((_, reject) => this.abandon.push(reject));
    // Nobody may be racing against it right now; a rejection nobody awaits is not an error.
    this.changed.catch(() => {});
  }

  get generation(): number {
    return this.generationNow;
  }

  get term(): number {
    return this.highestTerm;
  }

  /** Rejects once the owner changes after `generation` (for racing an attempt against it). */
  changedSince(generation: number): Promise<never> {
    if (generation !== this.generationNow) {
      return Promise.reject(new OwnerChangedError("before this attempt was sent"));
    }
    return this.changed;
  }

  /** A reply came back carrying this owner term. */
  sawTerm(term: number): void {
    if (term <= this.highestTerm) return;
    const first = this.highestTerm === 0;
    this.highestTerm = term;
    // The first term seen is no change: it only tells which owner we talk to.
    if (!first) this.change(`term ${term}`);
  }

  /**
   * Evidence, from an attempt sent in `generation`, that the owner it went to is gone (no
   * responders, MOVED). Evidence about an owner already known to be gone changes nothing.
   */
  ownerGone(why: string, generation: number): void {
    if (generation === this.generationNow) this.change(why);
  }

  private change(why: string): void {
    this.generationNow++;
    const waiting = this.abandon.splice(0);
    this.renew();
    for (const reject of waiting) reject(new OwnerChangedError(why));
  }
}
