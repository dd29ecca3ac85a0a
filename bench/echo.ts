/**
 * The requester side of the echo ceiling. Requests go out the way Cairn's
 * client sends its data frames: one shared inbox subscription and a reply
 * subject per request, no Error or timer per request (see
 * protocol/request_mux.ts). Measured here, nats.js's own `request()` reaches
 * only about half the rate at 32 in flight, so it would understate the
 * ceiling. Timeouts are checked by one sweep.
 */
import { createInbox, type NatsConnection, type Subscription } from "@nats-io/nats-core";

const sweepIntervalMs = 250;

interface Pending {
  resolve: (data: Uint8Array) => void;
  reject: (err: Error) => void;
  deadlineMs: number;
}

export class EchoRequester {
  private readonly prefix = createInbox();
  private readonly pending = new Map<number, Pending>();
  private readonly subscription: Subscription;
  private readonly sweeper: ReturnType<typeof setInterval>;
  private nextToken = 1;

  constructor(
    private readonly nc: NatsConnection,
    private readonly subject: string,
    private readonly timeoutMs: number,
  ) {
    this.subscription = nc.subscribe(`${this.prefix}.*`, {
      callback: (_err, msg) => {
        const token = Number(msg.subject.slice(this.prefix.length + 1));
        const pending = this.pending.get(token);
        if (!pending) return;
        this.pending.delete(token);
        if (msg.data.length === 0 && msg.headers?.code === 503) {
          pending.reject(new Error(`no responders on ${this.subject}`));
        } else {
          pending.resolve(msg.data);
        }
      },
    });
    this.sweeper = setInterval(() => this.sweep(), sweepIntervalMs);
  }

  request(data: Uint8Array): Promise<Uint8Array> {
    const token = this.nextToken++;
    return new Promise((resolve, reject) => {
      this.pending.set(token, {
        resolve,
        reject,
        deadlineMs: performance.now() + this.timeoutMs,
      });
      try {
        this.nc.publish(this.subject, data, { reply: `${this.prefix}.${token}` });
      } catch (err) {
        this.pending.delete(token);
        reject(err);
      }
    });
  }

  private sweep(): void {
    const now = performance.now();
    for (const [token, pending] of this.pending) {
      if (pending.deadlineMs > now) continue;
      this.pending.delete(token);
      pending.reject(new Error(`echo timeout after ${this.timeoutMs} ms`));
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    this.subscription.unsubscribe();
    for (const pending of this.pending.values()) pending.reject(new Error("echo closed"));
    this.pending.clear();
  }
}
