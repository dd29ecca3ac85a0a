/**
 * A simulated NATS-like network between in-process nodes, driven by a
 * SimScheduler: every delivery is an event owned by the receiving node, after
 * a random delay, so a paused receiver holds its messages and a killed one
 * drops them.
 *
 * Routing follows NATS: subjects are "."-separated tokens; a subscription
 * pattern may use `*` (one token) and `>` (one or more trailing tokens). A
 * message goes to every plain subscriber that matches plus one member (picked
 * with the scheduler's PRNG) of each matching queue group (a group is the pair
 * pattern + queue name). Recipients are chosen when the message is sent.
 *
 * Faults: partitions, isolated nodes and one-way blocked links drop messages
 * silently (checked when sent and again when delivered), a random drop
 * probability, and node death. Messages already in flight from a node that
 * dies still arrive; messages to it are dropped.
 */
import {
  joinBody,
  type MessageBody,
  type Transport,
  TransportError,
  type TransportMessage,
  type TransportSubscription,
} from "../actors/ports.ts";
import type { SimScheduler } from "./scheduler.ts";

export interface SimNetworkOptions {
  /** Least one-way delay in ms; default 0.1. */
  minDelayMs?: number;
  /** Greatest one-way delay in ms (uniform between); default 1. */
  maxDelayMs?: number;
  /** Chance each message copy is lost; default 0. */
  dropProbability?: number;
  /**
   * true (default): each copy's delay is independent, so messages overtake
   * each other. false: FIFO per (sender, receiver) pair as on one NATS
   * connection: a copy never arrives before an earlier one on the same pair.
   */
  reorder?: boolean;
  /** Trace every message (kind "net"); off by default, it is costly. */
  verbose?: boolean;
}

export type DropReason = "partition" | "random" | "dead" | "unsubscribed";

interface Sub {
  node: string;
  generation: number;
  pattern: string[];
  queue: string | undefined;
  handler: (msg: TransportMessage) => void;
  active: boolean;
}

interface PendingRequest {
  subject: string;
  resolve: (data: Uint8Array) => void;
  reject: (error: Error) => void;
  cancelTimer: () => void;
}

const never = <T>(): Promise<T> => new Promise<T>(() => {});

/** Whether a subscription pattern (tokens) matches a subject (tokens). */
export function subjectMatches(pattern: readonly string[], subject: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i];
    if (p === ">") return subject.length > i;
    if (i >= subject.length) return false;
    if (p !== "*" && p !== subject[i]) return false;
  }
  return pattern.length === subject.length;
}

function checkSubject(subject: string, allowWildcards: boolean): string[] {
  const tokens = subject.split(".");
  tokens.forEach((t, i) => {
    const wild = t === "*" || (t === ">" && i === tokens.length - 1);
    if (t === "" || (!allowWildcards && (t === "*" || t === ">")) || (t === ">" && !wild)) {
      throw new Error(`invalid subject "${subject}"`);
    }
  });
  return tokens;
}

/** One node's Transport; calls from a dead incarnation do nothing (requests never settle). */
class SimEndpoint implements Transport {
  readonly pending = new Map<number, PendingRequest>();
  readonly subs = new Set<Sub>();

  constructor(
    private readonly net: SimNetwork,
    readonly node: string,
    readonly generation: number,
  ) {}

  get stale(): boolean {
    return this.net.scheduler.generation(this.node) !== this.generation ||
      !this.net.scheduler.isAlive(this.node);
  }

  publish(subject: string, data: Uint8Array): void {
    const tokens = checkSubject(subject, false);
    if (this.stale) return;
    this.net.send(this.node, subject, tokens, data, undefined);
  }

  request(subject: string, data: MessageBody, timeoutMs: number): Promise<Uint8Array> {
    const tokens = checkSubject(subject, false);
    if (this.stale) return never();
    return this.net.request(this, subject, tokens, joinBody(data), timeoutMs);
  }

  subscribe(
    subject: string,
    handler: (msg: TransportMessage) => void,
    options: { queue?: string } = {},
  ): TransportSubscription {
    const pattern = checkSubject(subject, true);
    if (this.stale) return { unsubscribe() {} };
    const sub: Sub = {
      node: this.node,
      generation: this.generation,
      pattern,
      queue: options.queue,
      handler,
      active: true,
    };
    this.net.addSub(this, sub);
    return { unsubscribe: () => this.net.removeSub(this, sub) };
  }

  flush(): Promise<void> {
    if (this.stale) return never();
    const s = this.net.scheduler;
    const rtt = this.net.delayMs() + this.net.delayMs();
    return new Promise((resolve) =>
      s.schedule(rtt, () => resolve(), this.node, { generation: this.generation })
    );
  }
}

export class SimNetwork {
  messagesSent = 0;
  messagesDelivered = 0;
  readonly messagesDropped: Record<DropReason, number> = {
    partition: 0,
    random: 0,
    dead: 0,
    unsubscribed: 0,
  };
  requestsSent = 0;
  noResponders = 0;
  timeouts = 0;
  /** Replies that arrived after their request timed out or was answered. */
  lateReplies = 0;
  verbose: boolean;

  minDelayMs: number;
  maxDelayMs: number;
  dropProbability: number;
  readonly reorder: boolean;

  #endpoints = new Map<string, SimEndpoint>();
  #subs: Sub[] = [];
  #matchCache = new Map<string, Sub[]>();
  #groupOf = new Map<string, number>();
  #isolated = new Set<string>();
  #blocked = new Set<string>();
  #lastArrival = new Map<string, number>();
  #nextRequestId = 1;

  constructor(readonly scheduler: SimScheduler, options: SimNetworkOptions = {}) {
    this.minDelayMs = options.minDelayMs ?? 0.1;
    this.maxDelayMs = options.maxDelayMs ?? 1;
    this.dropProbability = options.dropProbability ?? 0;
    this.reorder = options.reorder ?? true;
    this.verbose = options.verbose ?? false;
    if (this.maxDelayMs < this.minDelayMs) throw new Error("maxDelayMs < minDelayMs");
  }

  /** Total copies dropped, for every reason. */
  get totalDropped(): number {
    const d = this.messagesDropped;
    return d.partition + d.random + d.dead + d.unsubscribed;
  }

  /** The Transport of node's current incarnation (the same object on every call). */
  endpoint(node: string): Transport {
    if (!this.scheduler.isAlive(node)) throw new Error(`node ${node} is dead; revive it first`);
    const generation = this.scheduler.generation(node);
    let ep = this.#endpoints.get(node);
    if (ep === undefined || ep.generation !== generation) {
      ep = new SimEndpoint(this, node, generation);
      this.#endpoints.set(node, ep);
    }
    return ep;
  }

  // ---- faults ----

  /**
   * Nodes in different groups cannot exchange messages. A node in no group is
   * not affected. Replaces any earlier partition (isolated nodes stay so).
   */
  partition(groups: string[][]): void {
    this.#groupOf.clear();
    groups.forEach((group, i) => group.forEach((node) => this.#groupOf.set(node, i)));
    this.scheduler.trace("fault", `partition ${groups.map((g) => `[${g.join(",")}]`).join(" ")}`);
  }

  /** Cuts node off from every other node (until heal). */
  isolate(node: string): void {
    this.#isolated.add(node);
    this.scheduler.trace("fault", `isolate ${node}`);
  }

  /** Drops messages from `from` to `to` only (a one-way fault, until heal). */
  blockLink(from: string, to: string): void {
    this.#blocked.add(`${from}\u0000${to}`);
    this.scheduler.trace("fault", `block ${from} -> ${to}`);
  }

  /** Ends every partition, isolation and blocked link. */
  heal(): void {
    this.#groupOf.clear();
    this.#isolated.clear();
    this.#blocked.clear();
    this.scheduler.trace("fault", "heal");
  }

  setDropProbability(p: number): void {
    this.dropProbability = p;
  }

  setDelay(minDelayMs: number, maxDelayMs: number): void {
    if (maxDelayMs < minDelayMs) throw new Error("maxDelayMs < minDelayMs");
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
  }

  /** Whether a message from `from` can reach `to` now. */
  canReach(from: string, to: string): boolean {
    if (from === to) return true;
    if (this.#isolated.has(from) || this.#isolated.has(to)) return false;
    if (this.#blocked.has(`${from}\u0000${to}`)) return false;
    const a = this.#groupOf.get(from);
    const b = this.#groupOf.get(to);
    return a === undefined || b === undefined || a === b;
  }

  /**
   * Kills node: its subscriptions and pending requests vanish (never settled),
   * its scheduled events are dropped, and its endpoint goes stale.
   */
  kill(node: string): void {
    const ep = this.#endpoints.get(node);
    if (ep) {
      for (const sub of ep.subs) sub.active = false;
      ep.subs.clear();
      for (const req of ep.pending.values()) req.cancelTimer();
      ep.pending.clear();
      this.#endpoints.delete(node);
    }
    this.#subs = this.#subs.filter((s) => s.node !== node);
    this.#matchCache.clear();
    this.scheduler.kill(node);
  }

  /** Lets node start a new incarnation: call endpoint(node) again for its Transport. */
  revive(node: string): void {
    this.scheduler.revive(node);
  }

  // ---- internals used by endpoints ----

  /** One random one-way delay. */
  delayMs(): number {
    return this.minDelayMs + this.scheduler.random() * (this.maxDelayMs - this.minDelayMs);
  }

  addSub(ep: SimEndpoint, sub: Sub): void {
    ep.subs.add(sub);
    this.#subs.push(sub);
    this.#matchCache.clear();
  }

  removeSub(ep: SimEndpoint, sub: Sub): void {
    if (!sub.active) return;
    sub.active = false;
    ep.subs.delete(sub);
    this.#subs = this.#subs.filter((s) => s !== sub);
    this.#matchCache.clear();
  }

  #matching(subject: string, tokens: string[]): Sub[] {
    let subs = this.#matchCache.get(subject);
    if (subs === undefined) {
      subs = this.#subs.filter((s) => subjectMatches(s.pattern, tokens));
      if (this.#matchCache.size > 10_000) this.#matchCache.clear();
      this.#matchCache.set(subject, subs);
    }
    return subs;
  }

  /** Every plain subscriber plus one member of each queue group, in subscription order. */
  #recipients(subs: Sub[]): Sub[] {
    const out: Sub[] = [];
    let groups: Map<string, Sub[]> | undefined;
    for (const s of subs) {
      if (s.queue === undefined) {
        out.push(s);
      } else {
        groups ??= new Map();
        const key = `${s.pattern.join(".")}\u0000${s.queue}`;
        const members = groups.get(key);
        if (members) members.push(s);
        else groups.set(key, [s]);
      }
    }
    if (groups) { for (const members of groups.values()) out.push(this.scheduler.pick(members)); }
    return out;
  }

  /** Sends a message (a publish, or a request when replyTo is set) from node `from`. */
  send(
    from: string,
    subject: string,
    tokens: string[],
    data: Uint8Array,
    replyTo: { requester: SimEndpoint; id: number } | undefined,
  ): number {
    const recipients = this.#recipients(this.#matching(subject, tokens));
    for (const sub of recipients) {
      const respond = replyTo === undefined
        ? () => {}
        : (reply: Uint8Array) => this.#reply(sub, replyTo.requester, replyTo.id, reply);
      this.#transmit(from, sub.node, subject, data, sub.generation, (copy) => {
        if (!sub.active) return this.#dropped("unsubscribed", from, sub.node, subject);
        sub.handler({ subject, data: copy, respond });
      });
    }
    return recipients.length;
  }

  /**
   * Puts one copy of data on the wire from `from` to `to`; deliver gets it in
   * an event of `to` (incarnation toGeneration) unless the copy is lost.
   */
  #transmit(
    from: string,
    to: string,
    subject: string,
    data: Uint8Array,
    toGeneration: number,
    deliver: (copy: Uint8Array) => void,
  ): void {
    const s = this.scheduler;
    this.messagesSent++;
    if (!s.isAlive(to) || s.generation(to) !== toGeneration) {
      return this.#dropped("dead", from, to, subject);
    }
    if (!this.canReach(from, to)) return this.#dropped("partition", from, to, subject);
    if (this.dropProbability > 0 && s.chance(this.dropProbability)) {
      return this.#dropped("random", from, to, subject);
    }
    const copy = new Uint8Array(data); // a copy (even of a Node Buffer): never shared with the sender
    let delay = this.delayMs();
    if (!this.reorder) {
      const pair = `${from}\u0000${to}`;
      const arrival = Math.max(s.nowMs + delay, this.#lastArrival.get(pair) ?? 0);
      this.#lastArrival.set(pair, arrival);
      delay = arrival - s.nowMs;
    }
    if (this.verbose) s.trace("net", `send ${from} -> ${to} ${subject} (${data.length} B)`, from);
    s.schedule(
      delay,
      () => {
        if (!this.canReach(from, to)) return this.#dropped("partition", from, to, subject);
        this.messagesDelivered++;
        if (this.verbose) s.trace("net", `recv ${from} -> ${to} ${subject}`, to);
        deliver(copy);
      },
      to,
      {
        generation: toGeneration,
        onDrop: () => this.#dropped("dead", from, to, subject),
      },
    );
  }

  #dropped(reason: DropReason, from: string, to: string, subject: string): void {
    this.messagesDropped[reason]++;
    if (this.verbose) this.scheduler.trace("net", `drop(${reason}) ${from} -> ${to} ${subject}`);
  }

  request(
    ep: SimEndpoint,
    subject: string,
    tokens: string[],
    data: Uint8Array,
    timeoutMs: number,
  ): Promise<Uint8Array> {
    const s = this.scheduler;
    this.requestsSent++;
    const generation = ep.generation;
    return new Promise<Uint8Array>((resolve, reject) => {
      if (this.#matching(subject, tokens).length === 0) {
        this.noResponders++;
        s.schedule(
          this.delayMs(),
          () => reject(new TransportError("no-responders", subject)),
          ep.node,
          { generation },
        );
        return;
      }
      const id = this.#nextRequestId++;
      const cancelTimer = s.schedule(
        timeoutMs,
        () => {
          if (!ep.pending.delete(id)) return;
          this.timeouts++;
          if (this.verbose) s.trace("net", `timeout ${subject} after ${timeoutMs} ms`, ep.node);
          reject(new TransportError("timeout", `${subject} after ${timeoutMs} ms`));
        },
        ep.node,
        { generation },
      );
      ep.pending.set(id, { subject, resolve, reject, cancelTimer });
      this.send(ep.node, subject, tokens, data, { requester: ep, id });
    });
  }

  /** A responder's reply travels back like any message; the first one settles the request. */
  #reply(responder: Sub, requester: SimEndpoint, id: number, data: Uint8Array): void {
    const s = this.scheduler;
    if (s.generation(responder.node) !== responder.generation || !s.isAlive(responder.node)) {
      return; // stale code of a dead incarnation answering
    }
    const subject = `_INBOX.${requester.node}.${id}`;
    this.#transmit(responder.node, requester.node, subject, data, requester.generation, (copy) => {
      const req = requester.pending.get(id);
      if (req === undefined) {
        this.lateReplies++;
        return;
      }
      requester.pending.delete(id);
      req.cancelTimer();
      req.resolve(copy);
    });
  }
}
