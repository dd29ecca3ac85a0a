/**
 * Request/reply for the data path: one inbox subscription, one shared
 * timeout sweep. nats.js's request() builds an Error (with a stack) for every
 * request and a timer each; at tens of thousands of requests a second that
 * was a measurable share of a node's CPU.
 */
import { createInbox, type Msg, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import type { MessageBody } from "../actors/ports.ts";
import { publishBody } from "./nats_internals.ts";

/** How often pending requests are checked for their deadline. */
export const requestSweepIntervalMs = 100;

export class RequestTimeoutError extends Error {
  override name = "TimeoutError";
  constructor(subject: string, timeoutMs: number) {
    super(`timeout: no reply on ${subject} within ${timeoutMs} ms`);
  }
}

/**
 * The connection moved to another NATS server (or came back): a request sent before may
 * have been lost with the old connection, so it fails now, as a timeout would later.
 */
export class ConnectionMovedError extends Error {
  override name = "TimeoutError";
  constructor(subject: string) {
    super(`timeout: the NATS connection moved while ${subject} waited; the request may be lost`);
  }
}

export class NoRespondersError extends Error {
  override name = "NoRespondersError";
  constructor(subject: string) {
    super(`no responders: ${subject}`);
  }
}

/**
 * nats-server refused a publish or a subscription of this connection (its user's permissions
 * do not allow the subject). The server says so asynchronously; a request to a denied subject
 * fails with this at once instead of waiting out its timeout.
 */
export class PermissionDeniedError extends Error {
  override name = "PermissionDeniedError";
  constructor(readonly operation: string, readonly subject: string) {
    super(
      `NATS permissions violation: this connection's NATS user may not ${
        operation === "subscription" ? "subscribe to" : "publish to"
      } ${subject} (see docs/NATS_AUTH.md for the permissions each role needs)`,
    );
  }
}

/** nats.js's PermissionViolationError, as the connection's status reports it. */
export function permissionViolation(
  err: unknown,
): { operation: string; subject: string } | null {
  const e = err as { name?: string; operation?: string; subject?: string } | undefined;
  if (e?.name !== "PermissionViolationError") return null;
  return { operation: e.operation ?? "publish", subject: e.subject ?? "" };
}

interface Pending {
  /**
   * For a request answered in parts: takes each reply, returns whether the request is answered.
   * Without it the first reply answers.
   */
  onPart?: (data: Uint8Array) => boolean;
  resolve: (data: Uint8Array) => void;
  reject: (err: Error) => void;
  subject: string;
  deadlineMs: number;
  timeoutMs: number;
  /** The connection's disconnect count when this was sent. */
  sentOnConnection: number;
}

export class RequestMux {
  private readonly prefix: string;
  private readonly pending = new Map<number, Pending>();
  private nextToken = 1;
  private lastRequestId = 0;
  /** Disconnects so far: requests sent before the latest one may be lost. */
  private disconnects = 0;
  private readonly subscription: Subscription;
  private readonly sweeper: number;
  /** Set when the server refused the reply subscription: no request can get an answer. */
  private inboxDenied: PermissionDeniedError | null = null;

  /**
   * `inboxPrefix` (default `_INBOX`): replies come to `<inboxPrefix>.<unique>.<token>`, so a
   * NATS user confined to `<inboxPrefix>.>` sees only its own replies (docs/NATS_AUTH.md).
   */
  /** The connected server's max_payload (from its INFO; undefined before the first). */
  maxPayloadBytes(): number | undefined {
    return this.nc.info?.max_payload;
  }

  constructor(private readonly nc: NatsConnection, inboxPrefix?: string) {
    this.prefix = createInbox(inboxPrefix);
    this.subscription = nc.subscribe(`${this.prefix}.*`, {
      // A refused subscription calls back with an error (and no message): see watchStatus.
      callback: (err, msg) => {
        if (!err) this.onReply(msg);
      },
    });
    this.sweeper = setInterval(() => this.sweep(), requestSweepIntervalMs) as unknown as number;
    Deno.unrefTimer(this.sweeper);
    void this.watchStatus();
  }

  /**
   * After a reconnect, requests sent on the old connection are failed at once (their
   * messages or replies may be gone with the old server) rather than each waiting out its
   * timeout: callers resend, or judge the peer, seconds sooner. A permissions violation fails
   * the requests it concerns at once, too.
   */
  private async watchStatus(): Promise<void> {
    try {
      for await (const status of this.nc.status()) {
        if (status.type === "error") this.onPermissionViolation(status.error);
        if (status.type === "disconnect") this.disconnects++;
        if (status.type !== "reconnect") continue;
        // Requests made while disconnected were buffered and go out now: they stay.
        for (const [token, pending] of [...this.pending]) {
          if (pending.sentOnConnection === this.disconnects) continue;
          this.pending.delete(token);
          pending.reject(new ConnectionMovedError(pending.subject));
        }
      }
    } catch {
      // The connection closed: close() rejects what is left.
    }
  }

  private onPermissionViolation(error: unknown): void {
    const violation = permissionViolation(error);
    if (!violation) return;
    if (violation.operation === "subscription") {
      if (violation.subject !== `${this.prefix}.*`) return;
      this.inboxDenied = new PermissionDeniedError("subscription", violation.subject);
      for (const pending of this.pending.values()) pending.reject(this.inboxDenied);
      this.pending.clear();
      return;
    }
    // The server names the subject, not the message: every request to it was refused.
    for (const [token, pending] of [...this.pending]) {
      if (pending.subject !== violation.subject) continue;
      this.pending.delete(token);
      pending.reject(new PermissionDeniedError("publish", violation.subject));
    }
  }

  /**
   * A request id unique on this connection (wrapping at 2^32): the owner recognizes a resent
   * write by this id and the connection's inbox, so it must not repeat across volume handles.
   */
  nextRequestId(): number {
    this.lastRequestId = (this.lastRequestId + 1) >>> 0 || 1;
    return this.lastRequestId;
  }

  /** Sends data (whole or in parts) to subject; resolves with the reply's payload. */
  request(subject: string, data: MessageBody, timeoutMs: number): Promise<Uint8Array> {
    return this.send(subject, data, timeoutMs);
  }

  /**
   * Sends data to subject and hands each reply to onPart until it returns true (answered):
   * for a request answered in several messages (a MULTI). Resolves once answered; rejects as
   * request() does if it is not answered in time.
   */
  async requestParts(
    subject: string,
    data: Uint8Array,
    timeoutMs: number,
    onPart: (reply: Uint8Array) => boolean,
  ): Promise<void> {
    await this.send(subject, data, timeoutMs, onPart);
  }

  private send(
    subject: string,
    data: MessageBody,
    timeoutMs: number,
    onPart?: (reply: Uint8Array) => boolean,
  ): Promise<Uint8Array> {
    if (this.inboxDenied) return Promise.reject(this.inboxDenied);
    const token = this.nextToken++;
    return new Promise<Uint8Array>((resolve, reject) => {
      this.pending.set(token, {
        onPart,
        resolve,
        reject,
        subject,
        deadlineMs: performance.now() + timeoutMs,
        timeoutMs,
        sentOnConnection: this.disconnects,
      });
      try {
        publishBody(this.nc, subject, data, `${this.prefix}.${token}`);
      } catch (err) {
        this.pending.delete(token);
        reject(err);
      }
    });
  }

  private onReply(msg: Msg): void {
    const token = Number(msg.subject.slice(this.prefix.length + 1));
    const pending = this.pending.get(token);
    if (!pending) return; // late reply after a timeout
    // NATS answers a request nobody subscribes to with an empty 503 status message.
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      this.pending.delete(token);
      pending.reject(new NoRespondersError(pending.subject));
      return;
    }
    if (pending.onPart) {
      let answered: boolean;
      try {
        answered = pending.onPart(msg.data);
      } catch (err) {
        this.pending.delete(token);
        pending.reject(err as Error);
        return;
      }
      if (!answered) return;
    }
    this.pending.delete(token);
    pending.resolve(msg.data);
  }

  private sweep(): void {
    const now = performance.now();
    for (const [token, pending] of this.pending) {
      if (pending.deadlineMs > now) continue;
      this.pending.delete(token);
      pending.reject(new RequestTimeoutError(pending.subject, pending.timeoutMs));
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    this.subscription.unsubscribe();
    for (const pending of this.pending.values()) pending.reject(new Error("connection closed"));
    this.pending.clear();
  }
}
