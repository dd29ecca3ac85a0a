/**
 * A mailbox: messages run one at a time, in the order posted, each to the end
 * of its awaits. An actor posts its state transitions, layout edits, timers
 * and repair steps here, so they never interleave in ways no one listed.
 */
export class Mailbox {
  private tail: Promise<unknown> = Promise.resolve();
  private pending = 0;

  /** Runs `handle` after every message posted before it; resolves or rejects with its result. */
  post<T>(handle: () => Promise<T>): Promise<T> {
    this.pending++;
    const run = this.tail.then(handle).finally(() => this.pending--);
    this.tail = run.catch(() => {});
    return run;
  }

  /** Messages posted and not yet finished. */
  get depth(): number {
    return this.pending;
  }
}
