/**
 * The live hub behind `GET /api/v1/events` (the dashboard's server-sent events): while
 * anyone listens it reads the cluster through the control service once a second (nodes,
 * volumes, and the owner's copy progress of volumes with a replica not in sync), sends a
 * snapshot when it changed and the events the change makes (live_events.ts), and forwards
 * every node's IO stats (`cairn.v1.stats.*`). One hub per HTTP listener, shared by its
 * streams; with no listener it reads nothing.
 */
import type { ControlApi } from "../protocol/control_api.ts";
import type { DashboardEvent, DashboardSnapshot, NodeStats } from "../protocol/schemas.ts";
import { diffSnapshots } from "./live_events.ts";

/** Every node's stats messages, as they arrive. */
export interface StatsFeed {
  subscribe(onStats: (stats: NodeStats) => void): () => void;
}

export type LiveMessage =
  | { event: "snapshot"; data: DashboardSnapshot }
  | { event: "stats"; data: NodeStats }
  | { event: "event"; data: DashboardEvent };

export interface LiveListener {
  send(message: LiveMessage): void;
  /** The hub closed (the listener shuts down): end the stream. */
  close(): void;
}

/** How often the cluster is read while someone listens. */
export const liveIntervalMs = 1000;
/** Events kept for new listeners (the feed they see at connect). */
export const maxKeptEvents = 100;

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
        for (const e of events) {
          const event: DashboardEvent = { id: this.nextEventId++, at: next.at, ...e };
          this.events.push(event);
          if (this.events.length > maxKeptEvents) this.events.shift();
          this.broadcast({ event: "event", data: event });
        }
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
