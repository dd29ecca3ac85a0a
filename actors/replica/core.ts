/** Pure decisions of a replica actor. */

export type EpochDecision = "accept" | "advance" | "reject";

/**
 * A replica refuses requests from an epoch lower than the highest it has
 * seen (that sender was fenced by a newer owner) and persists a higher one
 * before acting on it.
 */
export function decideEpoch(highestSeen: number, incoming: number): EpochDecision {
  if (incoming < highestSeen) return "reject";
  return incoming > highestSeen ? "advance" : "accept";
}

/**
 * Group commit: callers that ask for a sync while one runs share the next
 * one, so N concurrent writers cost about two fdatasyncs, not N.
 */
export class GroupSync {
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;

  constructor(private readonly syncOnce: () => Promise<void>) {}

  sync(): Promise<void> {
    if (!this.running) return this.start();
    // A sync is running; it may have started before our write, so join the next one.
    if (!this.next) {
      this.next = this.running.then(
        () => this.startQueued(),
        () => this.startQueued(),
      );
    }
    return this.next;
  }

  private startQueued(): Promise<void> {
    this.next = null;
    return this.start();
  }

  private start(): Promise<void> {
    const run = this.syncOnce().finally(() => {
      if (this.running === run) this.running = null;
    });
    this.running = run;
    return run;
  }
}
