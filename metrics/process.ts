/**
 * Process metrics: prom-client's defaults that hold on Deno (CPU from process.cpuUsage,
 * resident memory from /proc, V8 heap), less those that do not, and an event-loop delay
 * measured by timer drift in their place.
 */
import { collectDefaultMetrics, Histogram, type Registry } from "prom-client";

/**
 * Defaults that read nothing real on Deno 2.9: perf_hooks' monitorEventLoopDelay is a stub
 * there (a 300 ms busy loop showed a 4 µs maximum), and Deno has no libuv handles to count.
 */
export const defaultMetricsBrokenOnDeno = [
  "nodejs_eventloop_lag_seconds",
  "nodejs_eventloop_lag_min_seconds",
  "nodejs_eventloop_lag_max_seconds",
  "nodejs_eventloop_lag_mean_seconds",
  "nodejs_eventloop_lag_stddev_seconds",
  "nodejs_eventloop_lag_p50_seconds",
  "nodejs_eventloop_lag_p90_seconds",
  "nodejs_eventloop_lag_p99_seconds",
  "nodejs_active_resources",
  "nodejs_active_resources_total",
  "nodejs_active_handles",
  "nodejs_active_handles_total",
  "nodejs_active_requests",
  "nodejs_active_requests_total",
  "nodejs_gc_duration_seconds",
];

/** How often the event-loop sampler asks for a timer (its drift is the delay). */
export const eventLoopSampleIntervalMs = 100;
const eventLoopDelayBucketsSeconds = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Registers the process metrics; returns a function that stops the sampler. */
export function registerProcessMetrics(registry: Registry): () => void {
  collectDefaultMetrics({ register: registry });
  for (const name of defaultMetricsBrokenOnDeno) registry.removeSingleMetric(name);
  const delay = new Histogram({
    name: "cairn_event_loop_delay_seconds",
    help: `How late a ${eventLoopSampleIntervalMs} ms timer fired: time the event loop was busy ` +
      `or the process was not scheduled`,
    buckets: eventLoopDelayBucketsSeconds,
    registers: [registry],
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const sample = (dueMs: number) => {
    const next = setTimeout(() => {
      const now = performance.now();
      delay.observe(Math.max(0, now - dueMs) / 1000);
      sample(now + eventLoopSampleIntervalMs);
    }, eventLoopSampleIntervalMs);
    timer = next;
    // The sampler alone must not keep a stopping process alive.
    Deno.unrefTimer(next);
  };
  sample(performance.now() + eventLoopSampleIntervalMs);
  return () => clearTimeout(timer);
}
