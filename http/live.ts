/**
 * The live hub behind `GET /api/v1/events` (the dashboard's server-sent events): while
 * anyone listens it reads the cluster through the control service once a second (nodes,
 * volumes, and the owner's copy progress of volumes with a replica not in sync), sends a
 * snapshot when it changed and the events the change makes (live_events.ts), and forwards
 * every node's IO stats (`cairn.v1.stats.*`). One hub per HTTP listener, shared by its
 * streams; with no listener it reads nothing.
 */
import type { ControlApi } from "../protocol/control_api.ts";
import type {
  DashboardEvent,
  DashboardSnapshot,
  NodeStats,
  Operation,
} from "../protocol/schemas.ts";
import { diffSnapshots } from "./live_events.ts";

/** Every node's stats messages, as they arrive. */
export interface StatsFeed {
  subscribe(onStats: (stats: NodeStats) => void): () => void;
}

export type LiveMessage =
  | { event: "snapshot"; data: DashboardSnapshot }
  | { event: "stats"; data: NodeStats }
  | { event: "event"; data: DashboardEvent }
  | { event: "operation"; data: Operation };

export interface LiveListener {
  send(message: LiveMessage): void;
  /** The hub closed (the listener shuts down): end the stream. */
  close(): void;
}

/** How often the cluster is read while someone listens. */
export const liveIntervalMs = 1000;
/** Events kept for new listeners (the feed they see at connect). */
export const maxKeptEvents = 100;
/** Operations of this node a new listener is shown (running ones, then the latest ended). */
export const maxKeptOperations = 10;

export interface LiveHubOptions {
  intervalMs?: number;
  now?: () => Date;
  /** Where a failed read of the cluster is reported (once until one succeeds again). */
  logError?: (message: string) => void;
}

export class LiveHub {
  private readonly listeners = new Set<LiveListener>();
  private snapshot: DashboardSnapshot | null = null;
  private snapshotKey = "";
  private readonly events: DashboardEvent[] = [];
  private readonly operations = new Map<string, Operation>();
  private nextEventId = 1;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running = false;
  private closed = false;
  private failing = false;
  private stopStats: (() => void) | null = null;
  private readonly intervalMs: number;
  private readonly now: () => Date;

  constructor(
    private readonly control: ControlApi,
    private readonly nodeId: string,
    private readonly stats?: StatsFeed,
    private readonly options: LiveHubOptions = {},
  ) {
    this.intervalMs = options.intervalMs ?? liveIntervalMs;
    this.now = options.now ?? (() => new Date());
  }

  /** Sends the current snapshot (once there is one) and kept events, then everything new. */
  subscribe(listener: LiveListener): () => void {
    if (this.closed) {
      listener.close();
      return () => {};
    }
    this.listeners.add(listener);
    if (this.snapshot) listener.send({ event: "snapshot", data: this.snapshot });
    for (const event of this.events) listener.send({ event: "event", data: event });
    for (const op of this.operations.values()) listener.send({ event: "operation", data: op });
    if (!this.running) this.start();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.stop();
    };
  }

  /** Ends every stream and stops reading (the HTTP listener closes). */
  close(): void {
    this.closed = true;
    this.stop();
    for (const listener of [...this.listeners]) listener.close();
    this.listeners.clear();
  }

  /**
   * A long operation of this node changed (started, progressed, ended): sent as it is, and
   * its start and end go to the event feed. Kept whether or not anyone listens.
   */
  operation(op: Operation): void {
    const before = this.operations.get(op.id);
    this.operations.delete(op.id);
    this.operations.set(op.id, op);
    for (const [id, kept] of this.operations) {
      if (this.operations.size <= maxKeptOperations) break;
      if (kept.state !== "running") this.operations.delete(id);
    }
    this.broadcast({ event: "operation", data: op });
    const what = `${op.kind} of ${op.volume}`;
    if (!before) {
      this.note({
        kind: "operation-started",
        severity: "info",
        volume: op.volume,
        message: `${what} started on ${this.nodeId}`,
      }, op.startedAt);
    } else if (before.state === "running" && op.state !== "running") {
      const mismatches = op.result?.mismatches.length ?? 0;
      this.note({
        kind: "operation-finished",
        severity: op.state === "failed" || mismatches > 0 ? "critical" : "info",
        volume: op.volume,
        message: op.state === "failed"
          ? `${what} failed: ${op.error?.message ?? "unknown error"}`
          : mismatches > 0
          ? `${what}: ${mismatches} problems found`
          : `${what}: every replica agrees (${op.result?.replicasChecked ?? 0} checked)`,
      }, op.finishedAt ?? this.now().toISOString());
    }
  }

  private note(e: Omit<DashboardEvent, "id" | "at">, at: string): void {
    const event: DashboardEvent = { id: this.nextEventId++, at, ...e };
    this.events.push(event);
    if (this.events.length > maxKeptEvents) this.events.shift();
    this.broadcast({ event: "event", data: event });
  }

  private broadcast(message: LiveMessage): void {
    for (const listener of this.listeners) listener.send(message);
  }

  private start(): void {
    this.running = true;
    this.stopStats = this.stats?.subscribe((data) => this.broadcast({ event: "stats", data })) ??
      null;
    void this.tick();
  }

  private stop(): void {
    this.running = false;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.stopStats?.();
    this.stopStats = null;
    // A later listener starts from a fresh read: no events for what changed unwatched.
    this.snapshot = null;
    this.snapshotKey = "";
  }

  private async tick(): Promise<void> {
    try {
      const next = await this.read();
      if (!this.running) return;
      this.failing = false;
      const { at: _, ...rest } = next;
      const key = JSON.stringify(rest);
      if (key !== this.snapshotKey) {
        const events = diffSnapshots(this.snapshot, next);
        this.snapshot = next;
        this.snapshotKey = key;
        this.broadcast({ event: "snapshot", data: next });
        for (const e of events) this.note(e, next.at);
      }
    } catch (err) {
      if (!this.failing) this.options.logError?.(`live view: ${(err as Error).message}`);
      this.failing = true;
    }
    if (this.running) this.timer = setTimeout(() => void this.tick(), this.intervalMs);
  }

  private async read(): Promise<DashboardSnapshot> {
    const [nodes, listed] = await Promise.all([
      this.control.call("node.list", {}),
      this.control.call("volume.list", {}),
    ]);
    // Copy progress comes from each owner: asked only of volumes with a copy to make.
    const volumes = await Promise.all(
      listed.map((v) =>
        v.segments.some((s) => s.replicas.some((r) => r.state !== "in-sync"))
          ? this.control.call("volume.info", { name: v.name }).catch(() => v)
          : v
      ),
    );
    nodes.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    volumes.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    return { at: this.now().toISOString(), answeredBy: this.nodeId, nodes, volumes };
  }
}
