/**
 * The signals that make failover prompt without making it hasty:
 * - the owner's replica calls fail at once when the replica node's connection is gone
 *   (probe answered "no responders"), not after the replica timeout;
 * - a timeout that expired while this process was paused is extended, not believed;
 * - the client's owner watch abandons attempts sent to an owner since replaced.
 */
import assert from "node:assert/strict";
import { SimScheduler } from "../../sim/scheduler.ts";
import { SimNetwork } from "../../sim/network.ts";
import {
  ReplicaCalls,
  replicaProbeAfterMs,
  replicaProbeSubject,
  replicaProbeTimeoutMs,
  StallDetector,
} from "../../actors/node/replica_calls.ts";
import { TransportError } from "../../actors/ports.ts";
import { OwnerChangedError, OwnerWatch } from "../../client/owner_watch.ts";
import { subjectPrefix } from "../../protocol/subjects.ts";

const timeoutMs = 5000;

function setup(options: { answerProbe?: boolean } = {}) {
  const scheduler = new SimScheduler({ seed: 3 });
  const network = new SimNetwork(scheduler, { minDelayMs: 0.2, maxDelayMs: 1, reorder: false });
  const owner = network.endpoint("owner");
  const clock = scheduler.clockFor("owner");
  const stall = new StallDetector(clock);
  let judgedDown = false;
  const calls = new ReplicaCalls(owner, clock, stall, () => judgedDown);
  const replica = network.endpoint("r");
  let answer = false;
  // The replica takes a request and never answers it (until told to).
  const held: (() => void)[] = [];
  replica.subscribe(`${subjectPrefix}.rep.r.>`, (msg) => {
    if (msg.subject === replicaProbeSubject("r") && options.answerProbe !== false) {
      return msg.respond(new Uint8Array([1]));
    }
    if (msg.subject === replicaProbeSubject("r")) return;
    held.push(() => msg.respond(new Uint8Array([0])));
    if (answer) held.shift()!();
  });
  scheduler.schedule(0, () => stall.start(), "owner");
  return {
    scheduler,
    network,
    calls,
    held,
    setJudgedDown: (v: boolean) => (judgedDown = v),
    answerNow: () => {
      answer = true;
      for (const f of held.splice(0)) f();
    },
  };
}

interface Outcome {
  settledAtMs: number | null;
  error: TransportError | null;
}

/** Starts one request from the owner 10 ms from now; its outcome fills in when it settles. */
function start(s: ReturnType<typeof setup>): Outcome {
  const o: Outcome = { settledAtMs: null, error: null };
  s.scheduler.schedule(10, () => {
    s.calls.request("r", `${subjectPrefix}.rep.r.vol.write`, new Uint8Array(1), timeoutMs).then(
      () => (o.settledAtMs = s.scheduler.nowMs),
      (err) => {
        o.settledAtMs = s.scheduler.nowMs;
        o.error = err;
      },
    );
  }, "owner");
  return o;
}

async function outcome(s: ReturnType<typeof setup>, o: Outcome, runMs: number): Promise<Outcome> {
  await s.scheduler.runUntil(() => o.settledAtMs !== null, runMs);
  return o;
}

Deno.test("a request to a replica node whose connection is gone fails within the probe time", async () => {
  const s = setup();
  const p = start(s);
  await s.scheduler.runFor(50);
  s.network.kill("r");
  const killedAt = s.scheduler.nowMs;
  const { settledAtMs, error } = await outcome(s, p, timeoutMs * 2);
  assert.ok(error instanceof TransportError, "the request failed");
  assert.equal(error.kind, "no-responders");
  const tookMs = settledAtMs! - killedAt;
  assert.ok(tookMs <= replicaProbeAfterMs * 2 + 50, `failed ${tookMs} ms after the kill`);
});

Deno.test("a slow but live replica node is waited for (its probe answers)", async () => {
  const s = setup();
  const p = start(s);
  await s.scheduler.runFor(2000);
  s.answerNow();
  const { error } = await outcome(s, p, timeoutMs);
  assert.equal(error, null, "answered after 2 s: not failed early");
});

Deno.test("a probe that times out fails requests only on a node the watchdog judges down", async () => {
  const s = setup({ answerProbe: false });
  const p = start(s);
  await s.scheduler.runFor(1500);
  s.setJudgedDown(true);
  const judgedAt = s.scheduler.nowMs;
  const { settledAtMs, error } = await outcome(s, p, timeoutMs);
  assert.ok(error instanceof TransportError);
  assert.ok(
    settledAtMs! - judgedAt <= replicaProbeAfterMs + replicaProbeTimeoutMs + 100,
    `failed ${settledAtMs! - judgedAt} ms after the node was judged down`,
  );
});

Deno.test("a timeout that expires while this process is paused is extended, not believed", async () => {
  const s = setup();
  const p = start(s);
  await s.scheduler.runFor(100);
  // The owner is paused for twice the timeout; the replica answers after the timeout's
  // deadline, so on resume the timer comes due before the reply is read (as in a real
  // event loop, where timers run before I/O).
  s.scheduler.pause("owner");
  await s.scheduler.runFor(timeoutMs + 500);
  s.answerNow();
  await s.scheduler.runFor(timeoutMs);
  s.scheduler.resume("owner");
  const { error } = await outcome(s, p, timeoutMs * 3);
  assert.equal(error, null, "the reply that came during the pause is taken");
});

Deno.test("a replica that truly does not answer still times out", async () => {
  const s = setup();
  const p = start(s);
  const { settledAtMs, error } = await outcome(s, p, timeoutMs * 3);
  assert.ok(error instanceof TransportError);
  assert.equal(error.kind, "timeout");
  assert.ok(settledAtMs! <= timeoutMs + 100);
});

Deno.test("owner watch: attempts sent to a replaced owner are abandoned; old evidence is not", async () => {
  const watch = new OwnerWatch();
  watch.sawTerm(4);
  assert.equal(watch.generation, 0, "the first term seen is no change");
  const g0 = watch.generation;
  const attempt = watch.changedSince(g0);
  watch.sawTerm(3);
  watch.sawTerm(4);
  assert.equal(watch.generation, g0, "an older or equal term changes nothing");
  watch.sawTerm(5);
  await assert.rejects(attempt, OwnerChangedError);
  const g1 = watch.generation;
  const next = watch.changedSince(g1);
  let settled = false;
  next.catch(() => (settled = true));
  // A no-responders answer to an attempt of the old generation is old news.
  watch.ownerGone("no responders", g0);
  await Promise.resolve();
  assert.equal(settled, false);
  watch.ownerGone("no responders", g1);
  await assert.rejects(next, OwnerChangedError);
});
