/** A node's Prometheus metrics and their `/metrics` endpoint. */
export { type NodeIdentity, NodeMetrics, type NodeMetricsOptions } from "./node_metrics.ts";
export {
  type MetricsHandler,
  metricsHandler,
  type MetricsServer,
  type MetricsSource,
  parseMetricsListen,
  serveMetrics,
} from "./http.ts";
export { defaultMetricsBrokenOnDeno, eventLoopSampleIntervalMs } from "./process.ts";
export { segmentStatsIntervalMs } from "./disk.ts";
