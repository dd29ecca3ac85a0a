/**
 * The live dashboard's pure parts and its HTTP routes on a stub control service: snapshot
 * diffs into events (takeover, handoff, stale marks, catch-ups, node states), the IO stats
 * counter, the SSE route (access, content type, first snapshot, stats and events), and the
 * static page (everything it loads comes from this node).
 */
import assert from "node:assert/strict";
import { buildHttpApi, parseOpenGroups, parseTokens } from "../../http/mod.ts";
import { diffSnapshots } from "../../http/live_events.ts";
import { LiveHub, type StatsFeed } from "../../http/live.ts";
import { OperationStore } from "../../http/operations.ts";
import { IoStats } from "../../actors/io_stats.ts";
import type { ControlApi, ControlRequest, ControlResult } from "../../protocol/control_api.ts";
import type { ControlOp } from "../../protocol/subjects.ts";
import {
  type DashboardEvent,
  dashboardEventSchema,
  dashboardSnapshotSchema,
  type NodeInfo,
  type NodeStats,
  nodeStatsSchema,
  type Operation,
  type VolumeInfo,
} from "../../protocol/schemas.ts";

function node(id: string, state: NodeInfo["state"] = "up", live = true): NodeInfo {
  return {
    id,
    zone: `z-${id}`,
    capacityBytes: 1 << 30,
    state,
    startedAt: "2026-01-01T00:00:00.000Z",
    pid: 1,
    version: "0",
    live,
    drained: state === "draining",
    lastHeartbeatAgoMs: 100,
  };
}

function volume(
  name: string,
  owner: string,
  term: number,
  states: Record<string, "in-sync" | "stale" | "rebuilding"> = {},
  segments = 2,
): VolumeInfo {
  return {
    name,
    id: "0123456789abcdef",
    incarnation: 0x01234567,
    sizeBytes: segments << 20,
    blockSize: 4096,
    segmentBytes: 1 << 20,
    replicas: 3,
    minInSync: 2,
    readPolicy: "local",
    createdAt: "2026-01-01T00:00:00.000Z",
    term,
    layoutRevision: term,
    owner,
    home: owner,
    segments: Array.from({ length: segments }, (_, index) => ({
      index,
      replicas: ["n1", "n2", "n3"].map((n) => ({ node: n, state: states[n] ?? "in-sync" })),
    })),
    downNodes: [],
    copies: [],
  };
}

const nodes3 = () => [node("n1"), node("n2"), node("n3")];
const kinds = (events: { kind: string }[]) => events.map((e) => e.kind);

Deno.test("live events: none for the first snapshot, none without a change", () => {
  const s = { nodes: nodes3(), volumes: [volume("web", "n1", 1)] };
  assert.deepEqual(diffSnapshots(null, s), []);
  assert.deepEqual(diffSnapshots(s, structuredClone(s)), []);
});

Deno.test("live events: a killed owner is down, its replicas stale, the volume taken over", () => {
  const before = { nodes: nodes3(), volumes: [volume("web", "n1", 1)] };
  const after = {
    nodes: [node("n1", "down", false), node("n2"), node("n3")],
    volumes: [volume("web", "n2", 2, { n1: "stale" })],
  };
  const events = diffSnapshots(before, after);
  assert.deepEqual(kinds(events), ["node-down", "takeover", "replica-stale"]);
  assert.equal(events[0].severity, "critical");
  assert.equal(events[1].message, "web: taken over by n2 from n1 (term 2)");
  assert.equal(events[2].message, "web: n1's replicas marked stale (2 segments)");
  for (const e of events) dashboardEventSchema.parse({ ...e, id: 1, at: "t" });
});

Deno.test("live events: a move with the old owner live is a handoff", () => {
  const before = { nodes: nodes3(), volumes: [volume("web", "n1", 3)] };
  const after = { nodes: nodes3(), volumes: [volume("web", "n3", 4)] };
  const events = diffSnapshots(before, after);
  assert.deepEqual(kinds(events), ["handoff"]);
  assert.equal(events[0].message, "web: handed off from n1 to n3 (term 4)");
  // The first owner's claim (term 0 to 1) is neither a failover nor a handoff.
  const first = diffSnapshots({ nodes: nodes3(), volumes: [volume("web", "n1", 0)] }, before);
  assert.deepEqual(kinds(first), ["takeover"]);
  assert.equal(first[0].severity, "info");
});

Deno.test("live events: a catch-up starts, its replicas come back in sync, the node is up", () => {
  const down = {
    nodes: [node("n1"), node("n2", "suspect"), node("n3")],
    volumes: [volume("web", "n1", 2, { n2: "stale" })],
  };
  const copying = {
    nodes: nodes3(),
    volumes: [{
      ...volume("web", "n1", 2, { n2: "stale" }),
      copies: [{
        node: "n2",
        kind: "catch-up" as const,
        segments: 2,
        bytesDone: 0,
        bytesLeft: 4096,
        bytesPerSec: 0,
        elapsedMs: 0,
      }],
    }],
  };
  const started = diffSnapshots(down, copying);
  assert.deepEqual(kinds(started), ["node-up", "copy-started"]);
  assert.equal(started[1].message, "web: catch-up of n2 started (2 segments)");
  const done = { nodes: nodes3(), volumes: [volume("web", "n1", 2)] };
  // Back in sync says it: no separate "finished" for the same node.
  assert.deepEqual(kinds(diffSnapshots(copying, done)), ["replica-in-sync"]);
});

Deno.test("live events: rebuilt elsewhere, volumes created and deleted, nodes join and suspect", () => {
  const before = { nodes: nodes3(), volumes: [volume("web", "n1", 1), volume("old", "n2", 1)] };
  const rebuilt = volume("web", "n1", 1);
  rebuilt.segments[1].replicas[2] = { node: "n4", state: "rebuilding" };
  const after = {
    nodes: [node("n1"), node("n2"), node("n3", "suspect"), node("n4")],
    volumes: [volume("new", "n3", 0), rebuilt],
  };
  const events = diffSnapshots(before, after);
  assert.deepEqual(kinds(events), [
    "node-suspect",
    "node-joined",
    "volume-deleted",
    "volume-created",
    "replica-replaced",
  ]);
  assert.equal(events[4].message, "web: 1 replica moved from n3 to n4");
});

Deno.test("io stats: counts per volume since the last take, then starts over", () => {
  const io = new IoStats();
  io.ioFinished("b", "write", 8192, 0.002, null);
  io.ioFinished("b", "write", 4096, 0.004, "IO_ERROR");
  io.ioFinished("a", "read", 4096, 0.001, null);
  io.ioFinished("a", "flush", 0, 0.003, null);
  assert.deepEqual(io.take(), [
    {
      volume: "a",
      readOps: 1,
      writeOps: 0,
      otherOps: 1,
      readBytes: 4096,
      writeBytes: 0,
      errors: 0,
      meanLatencyMs: 2,
      maxLatencyMs: 3,
    },
    {
      volume: "b",
      readOps: 0,
      writeOps: 2,
      otherOps: 0,
      readBytes: 0,
      writeBytes: 8192,
      errors: 1,
      meanLatencyMs: 3,
      maxLatencyMs: 4,
    },
  ]);
  assert.deepEqual(io.take(), []);
});

/** node.list and volume.list from mutable fields; volume.info of a volume in `infos`. */
class StubControl implements ControlApi {
  nodes: NodeInfo[] = nodes3();
  volumes: VolumeInfo[] = [volume("web", "n1", 1)];
  reads = 0;
  call<O extends ControlOp>(op: O, request: ControlRequest<O>): Promise<ControlResult<O>> {
    if (op === "node.list") this.reads++;
    const name = (request as { name?: string }).name;
    const results: Partial<Record<ControlOp, () => unknown>> = {
      "node.list": () => structuredClone(this.nodes),
      "volume.list": () => structuredClone(this.volumes),
      "volume.info": () => structuredClone(this.volumes.find((v) => v.name === name)),
    };
    return Promise.resolve(results[op]!() as ControlResult<O>);
  }
  verifyVolume(): never {
    throw new Error("not here");
  }
}

class StubFeed implements StatsFeed {
  listeners = new Set<(s: NodeStats) => void>();
  subscribe(onStats: (s: NodeStats) => void) {
    this.listeners.add(onStats);
    return () => this.listeners.delete(onStats);
  }
  publish(s: NodeStats) {
    for (const l of this.listeners) l(s);
  }
}

const readToken = "read-token-0123456789abcdef";

async function sseApp() {
  const control = new StubControl();
  const feed = new StubFeed();
  const live = new LiveHub(control, "n1", feed, { intervalMs: 20 });
  const app = buildHttpApi({
    control,
    readiness: () => Promise.reject(new Error("unused")),
    access: { tokens: await parseTokens(`read:${readToken}`, "t"), open: parseOpenGroups("") },
    nodeId: "n1",
    live,
  });
  return { app, control, feed, live };
}

/** Reads SSE messages from a response until `until` says stop. */
async function readEvents(
  res: Response,
  until: (events: { event: string; data: unknown }[]) => boolean,
) {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const events: { event: string; data: unknown }[] = [];
  let buffer = "";
  while (!until(events)) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (event && data) events.push({ event, data: JSON.parse(data) });
    }
  }
  await reader.cancel();
  return events;
}

Deno.test("sse: /api/v1/events needs a read token (401 without, problem+json)", async () => {
  const { app, control, live } = await sseApp();
  const res = await app.request("/api/v1/events");
  assert.equal(res.status, 401);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  await res.body?.cancel();
  assert.equal(control.reads, 0, "nothing read for a caller without the right");
  live.close();
});

Deno.test("sse: a snapshot at connect, stats forwarded, an event on change", async () => {
  const { app, control, feed, live } = await sseApp();
  const res = await app.request("/api/v1/events", {
    headers: { authorization: `Bearer ${readToken}` },
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
  let changed = false;
  const events = await readEvents(res, (events) => {
    const names = events.map((e) => e.event);
    if (names.includes("snapshot") && !changed) {
      changed = true;
      feed.publish({ node: "n2", at: "2026-01-01T00:00:01.000Z", intervalMs: 1000, volumes: [] });
      control.nodes = [node("n1"), node("n2"), node("n3", "down", false)];
    }
    return names.includes("event") && names.includes("stats");
  });
  assert.equal(events[0].event, "hello");
  const snapshot = dashboardSnapshotSchema.parse(events[1].data);
  assert.equal(events[1].event, "snapshot");
  assert.deepEqual(snapshot.nodes.map((n) => n.id), ["n1", "n2", "n3"]);
  assert.deepEqual(snapshot.volumes.map((v) => v.name), ["web"]);
  assert.equal(snapshot.answeredBy, "n1");
  const stats = events.find((e) => e.event === "stats")!;
  assert.equal(nodeStatsSchema.parse(stats.data).node, "n2");
  const event = dashboardEventSchema.parse(events.find((e) => e.event === "event")!.data);
  assert.equal(event.kind, "node-down");
  assert.equal(event.node, "n3");
  live.close();
});

Deno.test("sse: closing the hub ends open streams (a node's HTTP listener can stop)", async () => {
  const { app, live } = await sseApp();
  const res = await app.request("/api/v1/events", {
    headers: { authorization: `Bearer ${readToken}` },
  });
  const reader = res.body!.getReader();
  await reader.read();
  live.close();
  const ended = (async () => {
    for (;;) if ((await reader.read()).done) return "ended";
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise((r) => timer = setTimeout(() => r("still open"), 2000));
  const outcome = await Promise.race([ended, late]);
  clearTimeout(timer);
  if (outcome !== "ended") await reader.cancel();
  assert.equal(outcome, "ended");
});

Deno.test("dashboard: / and every file it loads come from this node", async () => {
  const { app, live } = await sseApp();
  const res = await app.request("/");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  assert.match(res.headers.get("content-security-policy") ?? "", /default-src 'self'/);
  const html = await res.text();
  const sources = [...html.matchAll(/(?:src|href)="([^"#]+)"/g)].map((m) => m[1]);
  assert.ok(sources.length >= 5, sources.join(" "));
  for (const source of sources) {
    assert.ok(source.startsWith("/dashboard/assets/"), source);
    const asset = await app.request(source);
    assert.equal(asset.status, 200, source);
    assert.ok((await asset.arrayBuffer()).byteLength > 0);
  }
  // The page's modules import only each other.
  const app_js = await (await app.request("/dashboard/assets/app.js")).text();
  for (const m of app_js.matchAll(/from "([^"]+)"/g)) {
    assert.equal(
      (await app.request(new URL(m[1], "http://x/dashboard/assets/").pathname)).status,
      200,
    );
  }
  assert.equal((await app.request("/dashboard/assets/package.json")).status, 404);
  live.close();
});

Deno.test("live: a long operation's progress is sent as it goes; its start and end are events", async () => {
  const live = new LiveHub(new StubControl(), "n1", undefined, { intervalMs: 60_000 });
  const sent: { event: string; data: unknown }[] = [];
  const stop = live.subscribe({ send: (m) => sent.push(m), close: () => {} });
  let finish!: () => void;
  const store = new OperationStore(undefined, (op) => live.operation(op));
  const op = store.startVerify("web", 2, async (onProgress) => {
    onProgress({ segmentsDone: 1, segmentsTotal: 2 });
    await new Promise<void>((resolve) => (finish = resolve));
    onProgress({ segmentsDone: 2, segmentsTotal: 2 });
    return { volume: "web", segments: 2, replicasChecked: 6, mismatches: [], ok: true };
  });
  const operations = () =>
    sent.filter((m) => m.event === "operation").map((m) => m.data as Operation);
  const events = () => sent.filter((m) => m.event === "event").map((m) => m.data as DashboardEvent);
  assert.deepEqual(operations().map((o) => [o.state, o.progress.done]), [
    ["running", 0],
    ["running", 1],
  ]);
  assert.deepEqual(events().map((e) => e.kind), ["operation-started"]);
  finish();
  await new Promise((r) => setTimeout(r, 0));
  const last = operations().at(-1)!;
  assert.equal(last.id, op.id);
  assert.equal(last.state, "succeeded");
  assert.deepEqual(events().map((e) => [e.kind, e.severity]), [
    ["operation-started", "info"],
    ["operation-finished", "info"],
  ]);
  assert.match(events()[1].message, /volume\.verify of web: every replica agrees \(6 checked\)/);
  // A listener that connects later is shown the operation as it ended.
  const later: string[] = [];
  const stopLater = live.subscribe({ send: (m) => later.push(m.event), close: () => {} });
  assert.ok(later.includes("operation"));
  stop();
  stopLater();
  live.close();
});
