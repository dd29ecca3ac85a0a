import assert from "node:assert/strict";
import { SimLivelockError, SimScheduler, simWallEpochMs } from "../../sim/scheduler.ts";

Deno.test("scheduler: events run in (time, insertion) order; cancel; time advances", async () => {
  const s = new SimScheduler({ seed: 1 });
  const log: string[] = [];
  s.schedule(20, () => log.push(`b@${s.nowMs}`));
  s.schedule(10, () => log.push(`a@${s.nowMs}`));
  const cancel = s.schedule(15, () => log.push("cancelled"));
  s.schedule(20, () => log.push(`c@${s.nowMs}`));
  s.schedule(10, () => {
    log.push(`a2@${s.nowMs}`);
    s.schedule(0, () => log.push(`a3@${s.nowMs}`));
  });
  assert.equal(s.pendingEvents, 5);
  cancel();
  cancel();
  assert.equal(s.pendingEvents, 4);
  await s.runFor(15);
  assert.deepEqual(log, ["a@10", "a2@10", "a3@10"]);
  assert.equal(s.nowMs, 15);
  await s.runFor(100);
  assert.deepEqual(log, ["a@10", "a2@10", "a3@10", "b@20", "c@20"]);
  assert.equal(s.nowMs, 115);
  assert.equal(s.eventsRun, 5);
  assert.equal(s.pendingEvents, 0);
});

Deno.test("scheduler: runUntil stops when the predicate holds, or at maxMs", async () => {
  const s = new SimScheduler({ seed: 1 });
  let n = 0;
  const tick = () => {
    n++;
    s.schedule(10, tick);
  };
  s.schedule(10, tick);
  assert.equal(await s.runUntil(() => n === 3, 1000), true);
  assert.equal(s.nowMs, 30);
  assert.equal(await s.runUntil(() => n === 1000, 100), false);
  assert.equal(s.nowMs, 130);
  assert.equal(n, 13);
});

Deno.test("scheduler: microtasks drain after each event (100 awaits complete before the next event)", async () => {
  const s = new SimScheduler({ seed: 1 });
  const log: string[] = [];
  s.schedule(5, () => {
    (async () => {
      for (let i = 0; i < 100; i++) await Promise.resolve();
      await new Promise<void>((r) => queueMicrotask(r));
      log.push("chain done");
    })();
  });
  s.schedule(5, () => log.push("next event"));
  await s.runFor(10);
  assert.deepEqual(log, ["chain done", "next event"]);
});

Deno.test("scheduler: code awaiting a clock timer continues inside that timer's event", async () => {
  const s = new SimScheduler({ seed: 1 });
  const clock = s.clockFor("n1");
  const sleep = (ms: number) => new Promise<void>((r) => clock.setTimer(ms, r));
  const log: string[] = [];
  s.spawn(async () => {
    for (let i = 0; i < 3; i++) {
      await sleep(10);
      log.push(`n1 woke at ${clock.nowMs()}`);
    }
  }, "n1");
  s.schedule(15, () => log.push("other at 15"));
  await s.runFor(100);
  assert.deepEqual(log, ["n1 woke at 10", "other at 15", "n1 woke at 20", "n1 woke at 30"]);
  assert.equal(clock.wallMs(), simWallEpochMs + 100);
});

Deno.test("scheduler: pause holds an owner's events; resume releases them at resume time, in order", async () => {
  const s = new SimScheduler({ seed: 1 });
  const log: string[] = [];
  s.schedule(10, () => log.push(`a1@${s.nowMs}`), "a");
  s.schedule(20, () => log.push(`b@${s.nowMs}`), "b");
  s.schedule(30, () => log.push(`a2@${s.nowMs}`), "a");
  const cancelA3 = s.schedule(35, () => log.push("a3"), "a");
  s.schedule(60, () => log.push(`a4@${s.nowMs}`), "a");
  s.pause("a");
  assert.equal(s.isPaused("a"), true);
  await s.runFor(50);
  assert.deepEqual(log, ["b@20"]);
  assert.equal(s.pendingEvents, 4);
  cancelA3();
  s.schedule(0, () => log.push(`b2@${s.nowMs}`), "b");
  s.resume("a");
  assert.equal(s.isPaused("a"), false);
  await s.runFor(50);
  assert.deepEqual(log, ["b@20", "b2@50", "a1@50", "a2@50", "a4@60"]);
});

Deno.test("scheduler: kill drops an owner's events and ignores its stale timers; revive starts anew", async () => {
  const s = new SimScheduler({ seed: 1 });
  const log: string[] = [];
  const oldClock = s.clockFor("a");
  oldClock.setTimer(10, () => log.push("old timer"));
  s.schedule(10, () => log.push("b"), "b");
  s.pause("a");
  s.schedule(5, () => log.push("held"), "a");
  await s.runFor(6);
  s.kill("a");
  assert.equal(s.isAlive("a"), false);
  assert.equal(s.isPaused("a"), false);
  assert.equal(s.generation("a"), 1);
  oldClock.setTimer(1, () => log.push("stale timer"));
  s.schedule(1, () => log.push("to dead owner"), "a");
  await s.runFor(20);
  assert.deepEqual(log, ["b"]);
  s.revive("a");
  assert.equal(s.isAlive("a"), true);
  const newClock = s.clockFor("a");
  oldClock.setTimer(1, () => log.push("stale after revive"));
  newClock.setTimer(1, () => log.push("new timer"));
  await s.runFor(20);
  assert.deepEqual(log, ["b", "new timer"]);
  assert.equal(s.pendingEvents, 0);
});

Deno.test("scheduler: handoff settles in the owner's event, never for a dead incarnation", async () => {
  const s = new SimScheduler({ seed: 1 });
  const log: string[] = [];
  let release!: (v: string) => void;
  const shared = new Promise<string>((r) => release = r);
  s.spawn(async () => log.push(`a got ${await s.handoff("a", shared, 3)} at ${s.nowMs}`), "a");
  s.spawn(async () => log.push(`b got ${await s.handoff("b", shared)}`), "b");
  s.schedule(10, () => {
    s.kill("b");
    release("x");
  });
  await s.runFor(100);
  assert.deepEqual(log, ["a got x at 13"]);
});

Deno.test("scheduler: errors thrown by events or spawned tasks are collected, the loop goes on", async () => {
  const s = new SimScheduler({ seed: 1 });
  let after = false;
  s.schedule(1, () => {
    throw new Error("boom");
  }, "n1");
  s.spawn(() => Promise.reject(new Error("async boom")), "n2", 2);
  s.schedule(3, () => after = true);
  await s.runFor(10);
  assert.equal(after, true);
  assert.deepEqual(
    s.errors.map((e) => [e.timeMs, e.owner, (e.error as Error).message]),
    [[1, "n1", "boom"], [2, "n2", "async boom"]],
  );
  assert.equal(s.traceCounts.get("error"), 2);
});

Deno.test("scheduler: more than maxEventsPerInstant events at one instant is a livelock", async () => {
  const s = new SimScheduler({ seed: 1, maxEventsPerInstant: 1000 });
  const spin = () => s.schedule(0, spin);
  s.schedule(5, spin);
  await assert.rejects(s.runFor(10), SimLivelockError);
  assert.equal(s.nowMs, 5);
});

Deno.test("scheduler: seeded randomness replays; per-owner streams are independent", () => {
  const a = new SimScheduler({ seed: 42 });
  const b = new SimScheduler({ seed: 42 });
  const c = new SimScheduler({ seed: 43 });
  const draw = (s: SimScheduler) => [s.random(), s.int(1, 6), s.chance(0.5), s.pick(["x", "y"])];
  assert.deepEqual(draw(a), draw(b));
  assert.notDeepEqual([a.random(), a.random()], [c.random(), c.random()]);
  for (let i = 0; i < 1000; i++) {
    const v = a.int(3, 5);
    assert.ok(v >= 3 && v <= 5 && Number.isInteger(v));
  }

  const seq = (r: { next(): number }) => Array.from({ length: 5 }, () => r.next());
  const s1 = new SimScheduler({ seed: 7 });
  const s2 = new SimScheduler({ seed: 7 });
  const n1 = seq(s1.randomFor("n1"));
  s2.randomFor("n0"); // another node's stream does not shift n1's
  assert.deepEqual(seq(s2.randomFor("n1")), n1);
  assert.notDeepEqual(seq(s1.randomFor("n2")), n1);
  assert.notDeepEqual(seq(s1.randomFor("n1")), n1, "a second stream for n1 differs from its first");
  assert.notDeepEqual(seq(new SimScheduler({ seed: 8 }).randomFor("n1")), n1);
});

Deno.test("scheduler: a clock rate skews nowMs and timers of one owner", async () => {
  const s = new SimScheduler({ seed: 1 });
  await s.runFor(100);
  s.setClockRate("fast", 2);
  const fast = s.clockFor("fast");
  const normal = s.clockFor("normal");
  let firedAt = -1;
  fast.setTimer(50, () => firedAt = s.nowMs);
  await s.runFor(100);
  assert.equal(normal.nowMs(), 200);
  assert.equal(fast.nowMs(), 300);
  assert.equal(firedAt, 125);
  s.setClockRate("fast", 1);
  await s.runFor(10);
  assert.equal(fast.nowMs(), 310);
});

Deno.test("scheduler: the trace is a bounded ring with per-kind counts and filters", async () => {
  const s = new SimScheduler({ seed: 1, traceCapacity: 3 });
  s.trace("a", "one", "n1");
  s.schedule(5, () => s.trace("b", "two", "n2"));
  await s.runFor(5);
  s.trace("a", "three");
  s.trace("a", "four", "n1");
  assert.deepEqual(s.traceEntries().map((e) => e.detail), ["two", "three", "four"]);
  assert.equal(s.traceCounts.get("a"), 3);
  assert.equal(s.formatTrace({ kind: "b" }), "       5.000 n2 b two");
  assert.equal(s.formatTrace({ owner: "n1" }), "       5.000 n1 a four");
  assert.equal(s.formatTrace({ last: 1 }).split("\n").length, 1);
  assert.equal(s.formatTrace((e) => e.detail.startsWith("t")).split("\n").length, 2);
});

Deno.test("scheduler: speed (printed, not asserted)", async () => {
  const s = new SimScheduler({ seed: 1 });
  const total = 200_000;
  let n = 0;
  const owners = ["n1", "n2", "n3", "n4", "n5"];
  const tick = () => {
    if (++n + owners.length <= total) s.schedule(s.random(), tick, s.pick(owners));
  };
  for (const o of owners) s.schedule(0, tick, o);
  const t0 = performance.now();
  await s.runFor(1e9);
  const seconds = (performance.now() - t0) / 1000;
  assert.equal(s.eventsRun, total);
  console.log(
    `SimScheduler: ${total} events in ${seconds.toFixed(2)} s = ${
      Math.round(total / seconds)
    } events/s`,
  );
});
