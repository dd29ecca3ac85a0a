/**
 * The live dashboard's IO stats over NATS: each node publishes what its volumes served in
 * the last second on `cairn.v1.stats.<node>` (from an IoStats sink the volume actors report
 * to), and the HTTP API's live hub subscribes to every node's (`cairn.v1.stats.*`).
 */
import type { NatsConnection } from "@nats-io/nats-core";
import type { IoStats } from "../actors/io_stats.ts";
import { subjects } from "../protocol/subjects.ts";
import { type NodeStats, nodeStatsSchema, parseJson } from "../protocol/schemas.ts";
import type { StatsFeed } from "../http/live.ts";

/** How often a node publishes its stats. */
export const statsIntervalMs = 1000;

/** Publishes `io`'s counts once a second until the returned stop is called. */
export function startStatsPublisher(nc: NatsConnection, node: string, io: IoStats): () => void {
  const encoder = new TextEncoder();
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const stats: NodeStats = {
      node,
      at: new Date().toISOString(),
      intervalMs: Math.max(1, Math.round(now - last)),
      volumes: io.take(),
    };
    last = now;
    if (nc.isClosed()) return;
    try {
      nc.publish(subjects.stats(node), encoder.encode(JSON.stringify(stats)));
    } catch {
      // Disconnected for a moment: this second's figures are dropped, not queued.
    }
  }, statsIntervalMs);
  return () => clearInterval(timer);
}

/** Every node's stats as they arrive; messages that fail the schema are dropped. */
export function natsStatsFeed(nc: NatsConnection): StatsFeed {
  return {
    subscribe(onStats) {
      const sub = nc.subscribe(subjects.statsAll, {
        callback: (_err, msg) => {
          const parsed = parseJson(nodeStatsSchema, msg.data);
          if (parsed.ok) onStats(parsed.value);
        },
      });
      return () => sub.unsubscribe();
    },
  };
}
