/**
 * Failure detection: the adaptive detector, and watchdogs on the simulated network recording
 * a dead node down once by CAS, a paused observer not judging peers by time it spent paused,
 * and a node recorded down while alive recording itself up again.
 */
import assert from "node:assert/strict";
import { FailureDetector } from "../../actors/watchdog/core.ts";
import { Watchdog } from "../../actors/watchdog/actor.ts";
import { SimScheduler } from "../../sim/scheduler.ts";
import { SimNetwork } from "../../sim/network.ts";
import { MemoryKv, MemoryMetadata } from "../../actors/metadata_memory.ts";

const settings = { heartbeatIntervalMs: 250, suspectAfterMs: 750, downAfterMs: 1500 };

Deno.test("detector: up, suspect, down by silence; a slow but steady peer gets more time", () => {
  const d = new FailureDetector(0, settings);
  for (let t = 0; t <= 2000; t += 250) d.heard("a", t);
  assert.equal(d.liveness("a", 2100), "up");
  assert.equal(d.liveness("a", 2800), "suspect");
  assert.equal(d.liveness("a", 3500), "down");
  // Heartbeats every 600 ms: suspect and down move out to 3x and 6x the mean interval.
  const slow = new FailureDetector(0, settings);
  for (let t = 0; t <= 12_000; t += 600) slow.heard("b", t);
  assert.equal(slow.liveness("b", 12_000 + 1600), "up");
  assert.equal(slow.liveness("b", 12_000 + 3700), "down");
  // Never heard: judged from the detector's start.
  assert.equal(d.liveness("never", 1000), "suspect");
  assert.equal(d.liveness("never", 1600), "down");
});

Deno.test("detector: after a pause of our own, peers get a fresh window", () => {
  const d = new FailureDetector(0, settings);
  d.heard("a", 0);
  assert.equal(d.tick(250), false);
  // Our next tick comes 5 s late: we were paused, not the peer.
  assert.equal(d.tick(5250), true);
  assert.equal(d.liveness("a", 5300), "up");
  assert.equal(d.liveness("a", 5250 + 1600), "down", "silence after the pause still counts");
});

interface Cluster {
  scheduler: SimScheduler;
  network: SimNetwork;
  kv: MemoryKv;
  watchdogs: Map<string, Watchdog>;
  warnings: string[];
}

async function cluster(nodes: string[]): Promise<Cluster> {
  const scheduler = new SimScheduler({ seed: 7 });
  const network = new SimNetwork(scheduler, { minDelayMs: 0.2, maxDelayMs: 2, reorder: false });
  const kv = new MemoryKv();
  const warnings: string[] = [];
  const watchdogs = new Map<string, Watchdog>();
  for (const id of nodes) {
    const metadata = new MemoryMetadata(kv);
    await metadata.putNode({
      id,
      zone: id,
      capacityBytes: 1,
      state: "up",
      startedAt: "t0",
      pid: 0,
      version: "test",
    });
    const log = { info() {}, warn: (m: string) => warnings.push(`${id}: ${m}`), error() {} };
    const watchdog = new Watchdog(
      network.endpoint(id),
      id,
      scheduler.clockFor(id),
      metadata,
      log,
      settings,
    );
    watchdogs.set(id, watchdog);
    scheduler.schedule(0, () => watchdog.start(), id);
  }
  await scheduler.runFor(1000);
  return { scheduler, network, kv, watchdogs, warnings };
}

const stateOf = (kv: MemoryKv, id: string) => JSON.parse(kv.get(`node.${id}`)!.json).state;

Deno.test("a dead node is recorded down once, by CAS, about 1 s after it died", async () => {
  const c = await cluster(["a", "b", "c"]);
  const writesBefore = c.kv.writes;
  c.network.kill("c");
  const killedAt = c.scheduler.nowMs;
  const recorded = await c.scheduler.runUntil(() => stateOf(c.kv, "c") === "down", 5000);
  assert.ok(recorded, "c recorded down");
  const tookMs = c.scheduler.nowMs - killedAt;
  // Silent for the suspect time, then a probe finds its connection gone: down at once.
  assert.ok(tookMs <= 1100, `recorded down after ${tookMs} ms`);
  await c.scheduler.runFor(3000);
  assert.equal(c.kv.writes - writesBefore, 1, "one record, however many watchdogs saw it");
  assert.equal(c.watchdogs.get("a")!.liveness("c"), "down");
  assert.equal(stateOf(c.kv, "a"), "up");
  assert.equal(stateOf(c.kv, "b"), "up");
});

Deno.test("a paused node is recorded down, and records itself up when it resumes", async () => {
  const c = await cluster(["a", "b", "c"]);
  c.scheduler.pause("c");
  await c.scheduler.runUntil(() => stateOf(c.kv, "c") === "down", 5000);
  assert.equal(stateOf(c.kv, "c"), "down");
  c.scheduler.resume("c");
  await c.scheduler.runFor(3000);
  assert.equal(stateOf(c.kv, "c"), "up", "c recorded itself up again");
  // c was paused, not its peers: it records no one down for the time it could not listen.
  assert.equal(stateOf(c.kv, "a"), "up");
  assert.equal(stateOf(c.kv, "b"), "up");
  assert.ok(c.warnings.some((w) => w.startsWith("c: watchdog: this process was paused")));
});
