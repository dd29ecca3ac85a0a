/**
 * Metrics: the pure helpers (IO observer, timed disk, layout counts), NodeMetrics' exposition
 * from a snapshot, and the /metrics handler and server.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import type { Clock, Metrics } from "../../actors/ports.ts";
import {
  degradedSegments,
  ioOpName,
  type NodeSnapshot,
  noMetrics,
  observeIo,
  replicaStateCounts,
  syncTargetOf,
  timedDisk,
  type VolumeView,
} from "../../actors/metrics.ts";
import { MemoryDisk } from "../../actors/memory_disk.ts";
import { type IoRequest, Op } from "../../protocol/frames.ts";
import { CairnError } from "../../protocol/errors.ts";
import type { VolumeLayout } from "../../protocol/schemas.ts";
import { metricsHandler, NodeMetrics, serveMetrics } from "../../metrics/mod.ts";

/** A clock that moves only when told. */
function manualClock(): Clock & { advance(ms: number): void } {
  let now = 0;
  return {
    nowMs: () => now,
    setTimer: () => () => {},
    advance: (ms) => (now += ms),
  };
}

type Call = [string, ...unknown[]];

function recordingMetrics(): Metrics & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    ioStarted: (...args) => void calls.push(["ioStarted", ...args]),
    ioFinished: (...args) => void calls.push(["ioFinished", ...args]),
    copied: (...args) => void calls.push(["copied", ...args]),
    tookOver: (...args) => void calls.push(["tookOver", ...args]),
    handedOff: (...args) => void calls.push(["handedOff", ...args]),
    synced: (...args) => void calls.push(["synced", ...args]),
  };
}

function request(op: number, lengthBytes: number): IoRequest {
  return { op, flags: 0, requestId: 1, offsetBytes: 0, lengthBytes, payload: new Uint8Array(0) };
}

function layout(states: string[][]): VolumeLayout {
  return {
    volumeId: "0000000000000001",
    owner: "n1",
    term: 3,
    segments: states.map((replicas) => ({
      replicas: replicas.map((state, i) => ({ node: `n${i + 1}`, state })),
    })),
  } as unknown as VolumeLayout;
}

Deno.test("observeIo reports in flight, then length, seconds and error code", async () => {
  const clock = manualClock();
  const metrics = recordingMetrics();
  const reply = await observeIo(metrics, clock, "db", request(Op.WRITE, 8192), () => {
    assert.deepEqual(metrics.calls, [["ioStarted", "db", "write"]], "in flight while it runs");
    clock.advance(250);
    return Promise.resolve(new Uint8Array([1]));
  });
  assert.deepEqual(reply, new Uint8Array([1]));
  assert.deepEqual(metrics.calls[1], ["ioFinished", "db", "write", 8192, 0.25, null]);

  await assert.rejects(
    observeIo(metrics, clock, "db", request(Op.READ, 4096), () => {
      clock.advance(1000);
      return Promise.reject(new CairnError("MOVED", "elsewhere"));
    }),
    CairnError,
  );
  assert.deepEqual(metrics.calls[3], ["ioFinished", "db", "read", 4096, 1, "MOVED"]);

  await assert.rejects(
    observeIo(metrics, clock, "db", request(99, 0), () => Promise.reject(new Error("bug"))),
  );
  assert.deepEqual(metrics.calls[5], ["ioFinished", "db", "unknown", 0, 0, "INTERNAL"]);
});

Deno.test("observeIo without metrics only runs the request", async () => {
  const clock = manualClock();
  const reply = await observeIo(undefined, clock, "db", request(Op.FLUSH, 0), () => {
    return Promise.resolve(new Uint8Array([2]));
  });
  assert.deepEqual(reply, new Uint8Array([2]));
  assert.equal(ioOpName(Op.WRITE_ZEROES), "write_zeroes");
  // The no-op sink takes every call.
  noMetrics.ioFinished("db", "read", 0, 0, null);
});

Deno.test("timedDisk times journal, segment and directory syncs", async () => {
  const clock = manualClock();
  const metrics = recordingMetrics();
  const disk = timedDisk(new MemoryDisk(), clock, metrics);
  await disk.mkdirp("/data/journal");
  const journal = await disk.open("/data/journal/0000000001.log", { create: true });
  await journal.write(new Uint8Array([1, 2, 3]), 0);
  await journal.datasync();
  await disk.mkdirp("/data/segments/00ab");
  const segment = await disk.open("/data/segments/00ab/000001.seg", { create: true });
  await segment.datasync();
  await disk.syncDir("/data/journal");
  assert.deepEqual(metrics.calls.map((c) => c.slice(0, 2)), [
    ["synced", "journal"],
    ["synced", "segment"],
    ["synced", "directory"],
  ]);
  const back = new Uint8Array(3);
  assert.equal(await journal.read(back, 0), 3, "reads and writes pass through");
  assert.deepEqual(back, new Uint8Array([1, 2, 3]));
  assert.equal(syncTargetOf("journal/0000000002.log"), "journal");
  assert.equal(syncTargetOf("/data/segments/journalish/000001.seg"), "segment");
});

Deno.test("replica state counts and degraded segments of a layout", () => {
  const l = layout([["in-sync", "in-sync", "in-sync"], ["in-sync", "stale", "rebuilding"], [
    "in-sync",
    "in-sync",
  ]]);
  assert.deepEqual(replicaStateCounts(l), { "in-sync": 6, rebuilding: 1, stale: 1 });
  assert.equal(degradedSegments(l, 3), 2, "one with a stale and a rebuilding copy, one short");
  assert.equal(degradedSegments(l, 2), 1);
});

function view(overrides: Partial<VolumeView> = {}): VolumeView {
  return {
    name: "db",
    state: "serving",
    term: 4,
    wantedReplicas: 3,
    layout: layout([["in-sync", "in-sync", "stale"], ["in-sync", "in-sync", "in-sync"]]),
    copies: [{
      node: "n3",
      kind: "catch-up",
      segments: 1,
      bytesDone: 4096,
      bytesLeft: 8192,
      bytesPerSec: 1000,
      elapsedMs: 4096,
    }],
    ...overrides,
  };
}

/** Sample lines (no comments, no blanks). */
function samples(text: string): string[] {
  return text.split("\n").filter((l) => l && !l.startsWith("#"));
}

Deno.test("NodeMetrics: gauges follow the snapshot, counters the port", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "cairn-test-metrics-" });
  try {
    fs.mkdirSync(`${dataDir}/segments/00ab`, { recursive: true });
    fs.writeFileSync(`${dataDir}/segments/00ab/000000.seg`, new Uint8Array(8192).fill(1));
    const metrics = new NodeMetrics({ dataDir, processMetrics: false });
    let snapshot: NodeSnapshot = {
      volumes: [view()],
      peers: [
        { node: "n2", silenceMs: 250, liveness: "up" },
        { node: "n3", silenceMs: null, liveness: "down" },
      ],
    };
    metrics.attach({ node: "n1", zone: "a", version: "0.2.0" }, () => snapshot);
    metrics.ioStarted("db", "write");
    metrics.ioStarted("db", "write");
    metrics.ioFinished("db", "write", 4096, 0.002, null);
    metrics.ioStarted("db", "read");
    metrics.ioFinished("db", "read", 4096, 0.5, "UNAVAILABLE");
    metrics.copied("db", "catch-up", 4096);
    metrics.tookOver("db", "failover");
    metrics.handedOff("db");
    metrics.synced("journal", 0.0003);

    const first = samples(await metrics.render());
    const has = (line: string) => assert.ok(first.includes(line), `missing: ${line}`);
    has('cairn_node_info{node="n1",zone="a",version="0.2.0"} 1');
    has('cairn_volume_io_requests_total{volume="db",op="write"} 1');
    has('cairn_volume_io_bytes_total{volume="db",op="write"} 4096');
    has('cairn_volume_io_errors_total{volume="db",op="read",code="UNAVAILABLE"} 1');
    has('cairn_volume_io_duration_seconds_bucket{le="0.0025",volume="db",op="write"} 1');
    has('cairn_volume_io_in_flight{volume="db"} 1');
    has('cairn_volume_copied_bytes_total{volume="db",kind="catch-up"} 4096');
    has('cairn_volume_copy_rate_bytes_per_second{volume="db",kind="catch-up"} 1000');
    has('cairn_volume_copy_remaining_bytes{volume="db",kind="catch-up"} 8192');
    has('cairn_volume_copies_running{volume="db",kind="rebuild"} 0');
    has('cairn_volume_takeovers_total{volume="db",kind="failover"} 1');
    has('cairn_volume_handoffs_total{volume="db"} 1');
    has('cairn_volume_owner_term_changes_total{volume="db"} 2');
    has('cairn_volume_owner_term{volume="db"} 4');
    has('cairn_volume_actor_state{volume="db",state="serving"} 1');
    has('cairn_volume_actor_state{volume="db",state="fenced"} 0');
    has('cairn_volume_replicas{volume="db",state="in-sync"} 5');
    has('cairn_volume_replicas{volume="db",state="stale"} 1');
    has('cairn_volume_degraded_segments{volume="db"} 1');
    has('cairn_peer_heartbeat_age_seconds{peer="n2"} 0.25');
    has('cairn_peer_heartbeat_age_seconds{peer="n3"} +Inf');
    has('cairn_peer_liveness{peer="n3",state="down"} 1');
    has('cairn_fdatasync_duration_seconds_count{target="journal"} 1');
    has("cairn_segment_files 1");
    assert.ok(first.some((l) => /^cairn_data_dir_filesystem_free_bytes \d+$/.test(l)));
    assert.ok(!first.some((l) => l.startsWith("process_")), "process metrics were turned off");

    // The volume moved away and n3 left the metadata: their gauges go, the counters stay.
    snapshot = { volumes: [], peers: [{ node: "n2", silenceMs: 100, liveness: "up" }] };
    const second = samples(await metrics.render());
    assert.ok(!second.some((l) => l.startsWith("cairn_volume_replicas{")));
    assert.ok(!second.some((l) => l.startsWith("cairn_volume_owner_term{")));
    assert.ok(!second.some((l) => l.includes('peer="n3"')));
    assert.ok(second.includes('cairn_volume_io_requests_total{volume="db",op="write"} 1'));
    metrics.stop();
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("NodeMetrics: an actor that is not serving reports no replica counts", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "cairn-test-metrics-" });
  try {
    const metrics = new NodeMetrics({ dataDir, processMetrics: false });
    metrics.attach(
      { node: "n1", zone: "a", version: "0.2.0" },
      () => ({ volumes: [view({ state: "fenced" })], peers: [] }),
    );
    const text = samples(await metrics.render());
    assert.ok(text.includes('cairn_volume_actor_state{volume="db",state="fenced"} 1'));
    assert.ok(!text.some((l) => l.startsWith("cairn_volume_replicas{")));
    assert.ok(!text.some((l) => l.startsWith("cairn_volume_owner_term{")));
    metrics.stop();
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("process metrics: CPU, resident memory and the event-loop sampler", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "cairn-test-metrics-" });
  const metrics = new NodeMetrics({ dataDir });
  try {
    // Keep the event loop busy past a few sampler ticks: the delay must show.
    await new Promise((r) => setTimeout(r, 150));
    const startedMs = performance.now();
    while (performance.now() - startedMs < 300) { /* busy */ }
    await new Promise((r) => setTimeout(r, 150));
    const text = samples(await metrics.render());
    const value = (name: string) =>
      Number(text.find((l) => l.startsWith(`${name} `))?.split(" ")[1] ?? NaN);
    assert.ok(value("process_resident_memory_bytes") > 0);
    assert.ok(value("process_cpu_seconds_total") > 0);
    assert.ok(value("nodejs_heap_size_used_bytes") > 0);
    assert.ok(value("cairn_event_loop_delay_seconds_count") >= 1);
    assert.ok(value("cairn_event_loop_delay_seconds_sum") >= 0.2, "the 300 ms busy loop shows");
    assert.ok(!text.some((l) => l.startsWith("nodejs_eventloop_lag")), "the Deno stub is left out");
  } finally {
    metrics.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("metrics handler and server: GET /metrics, 405 and 404, address file", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "cairn-test-metrics-" });
  const handler = metricsHandler({
    render: () => Promise.resolve("cairn_up 1\n"),
    contentType: "text/plain; version=0.0.4; charset=utf-8",
  });
  const post = await handler(new Request("http://x/metrics", { method: "POST" }));
  assert.equal(post.status, 405);
  const server = serveMetrics("127.0.0.1:0", handler, {
    addressFile: `${dataDir}/metrics.address`,
  });
  try {
    assert.match(server.address, /^127\.0\.0\.1:\d+$/);
    assert.equal(fs.readFileSync(`${dataDir}/metrics.address`, "utf8"), `${server.address}\n`);
    const res = await fetch(`http://${server.address}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "cairn_up 1\n");
    const other = await fetch(`http://${server.address}/`);
    assert.equal(other.status, 404);
    await other.body?.cancel();
  } finally {
    await server.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});
