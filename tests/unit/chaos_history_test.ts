/**
 * The chaos run's history and checks (chaos/history.ts, chaos/logs.ts) on hand-made histories:
 * ones that must fail (a lost write after a kill, a stale read after a pause, a read of a value
 * never written, bytes no write produced, a lost write in the final state) and ones that must
 * pass (indeterminate writes that land late or never, failed reads, concurrent writes).
 * The register checker itself is tested in linearizability_test.ts; here it is fed through
 * registerHistory, the way the chaos run feeds it.
 */
import assert from "node:assert/strict";
import {
  ChaosHistory,
  type ChaosOp,
  countNodeLogs,
  errorKind,
  errorsByKind,
  garbageReads,
  longestWriteGap,
  lostWrites,
  registerHistory,
} from "../../chaos/mod.ts";
import { checkLinearizable } from "../../sim/linearizability.ts";
import { CairnError } from "../../protocol/errors.ts";
import { TransportError } from "../../actors/ports.ts";
import { parseDuration } from "../../cli/chaos.ts";

type Spec = {
  c?: string;
  v?: string;
  at: number;
  end?: number;
  block?: number;
  count?: number;
  final?: boolean;
  err?: string;
};

/** A small builder: writes and reads with explicit times. */
class H {
  readonly h = new ChaosHistory();

  w(id: number, s: Spec): ChaosOp {
    const op = this.h.begin({
      client: s.c ?? "c1",
      volume: s.v ?? "vol",
      kind: "write",
      firstBlock: s.block ?? 0,
      count: s.count ?? 1,
      writeId: id,
      startMs: s.at,
    });
    if (s.end === undefined) return op; // still in flight
    if (s.err) this.h.failed(op, s.end, new CairnError("UNAVAILABLE", s.err));
    else this.h.ok(op, s.end);
    return op;
  }

  r(values: number[], s: Spec): ChaosOp {
    const op = this.h.begin({
      client: s.c ?? "c2",
      volume: s.v ?? "vol",
      kind: "read",
      firstBlock: s.block ?? 0,
      count: values.length,
      writeId: 0,
      startMs: s.at,
      final: s.final,
    });
    if (s.err) this.h.failed(op, s.end ?? s.at, new CairnError("UNAVAILABLE", s.err));
    else this.h.ok(op, s.end ?? s.at + 1, values);
    return op;
  }

  check(volume = "vol") {
    return checkLinearizable(registerHistory(this.h.ops, volume));
  }
}

// ---- must fail ----

Deno.test("lost write after a kill: an acknowledged write, then every read returns the older value", () => {
  const t = new H();
  t.w(1, { at: 0, end: 10 });
  t.w(2, { at: 20, end: 30 }); // acknowledged, then the owner is killed
  t.r([1], { at: 5000, end: 5010 }); // the successor serves the old value
  t.r([1], { at: 6000, end: 6010, final: true });
  const result = t.check();
  assert.equal(result.ok, false);
  assert.equal(result.violations[0].kind, "lost-write");
  const lost = lostWrites(t.h.ops);
  assert.equal(lost.length, 1);
  assert.equal(lost[0].write.writeId, 2);
  assert.equal(lost[0].finalValue, 1);
});

Deno.test("lost write: the final state is zeros although a write was acknowledged", () => {
  const t = new H();
  t.w(7, { at: 0, end: 10, block: 3 });
  t.r([0], { at: 100, block: 3, final: true });
  assert.equal(t.check().violations[0].kind, "lost-write");
  const lost = lostWrites(t.h.ops);
  assert.deepEqual(lost.map((l) => [l.block, l.write.writeId, l.finalValue]), [[3, 7, 0]]);
});

Deno.test("stale read after a pause: a paused old owner answers a read with an overwritten value", () => {
  const t = new H();
  t.w(1, { at: 0, end: 10 });
  t.r([1], { c: "c2", at: 15, end: 20 });
  t.w(2, { c: "c1", at: 8000, end: 8010 }); // the successor took over and acknowledged 2
  t.r([2], { c: "c3", at: 8020, end: 8030 });
  t.r([1], { c: "c2", at: 9000, end: 9005 }); // the old owner woke up and served its copy
  const result = t.check();
  assert.equal(result.ok, false);
  assert.equal(result.violations[0].kind, "stale-read");
  // The final state may be fine: a stale read is not a lost write.
  t.r([2], { at: 10_000, final: true });
  assert.equal(lostWrites(t.h.ops).length, 0);
});

Deno.test("a read of a value never written to the block fails; one written elsewhere is named", () => {
  const t = new H();
  t.w(5, { at: 0, end: 10, block: 1 });
  t.r([5], { at: 20, block: 2 });
  const result = t.check();
  assert.equal(result.ok, false);
  assert.equal(result.violations[0].kind, "never-written");
  assert.match(result.violations[0].message, /written to block 1/);
});

Deno.test("a read of a value whose only write started after the read ended fails", () => {
  const t = new H();
  t.r([9], { at: 0, end: 5 });
  t.w(9, { at: 10, end: 20 });
  assert.equal(t.check().violations[0].kind, "never-written");
});

Deno.test("bytes no write produced are reported apart and kept out of the checker", () => {
  const t = new H();
  t.w(1, { at: 0, end: 10, count: 2 });
  t.r([1, -1], { at: 20, end: 30 });
  const garbage = garbageReads(t.h.ops);
  assert.deepEqual(garbage.map((g) => [g.volume, g.block]), [["vol", 1]]);
  // Block 1's torn read does not reach the checker (which rejects negative values).
  const result = t.check();
  assert.equal(result.ok, true);
  assert.equal(registerHistory(t.h.ops, "vol").filter((op) => op.kind === "read").length, 1);
});

Deno.test("an indeterminate write that was read and then vanished is a violation", () => {
  const t = new H();
  t.w(1, { at: 0, end: 10 });
  t.w(2, { at: 20, end: 60_000, err: "gave up after 60000 ms (timeout)" });
  t.r([2], { at: 100, end: 110 });
  t.r([1], { at: 200, end: 210 });
  assert.equal(t.check().ok, false);
});

// ---- must pass ----

Deno.test("pass: an indeterminate write may land late, or never", () => {
  const late = new H();
  late.w(1, { at: 0, end: 10 });
  late.w(2, { at: 20, end: 60_020, err: "gave up" });
  late.r([1], { at: 100 });
  late.r([2], { at: 70_000, final: true }); // it landed after all
  assert.equal(late.check().ok, true);
  assert.equal(lostWrites(late.h.ops).length, 0);

  const never = new H();
  never.w(1, { at: 0, end: 10 });
  never.w(2, { at: 20, end: 60_020, err: "gave up" });
  never.r([1], { at: 70_000, final: true });
  assert.equal(never.check().ok, true);
  assert.equal(lostWrites(never.h.ops).length, 0);
});

Deno.test("pass: a write still in flight at the end counts as indeterminate", () => {
  const t = new H();
  t.w(1, { at: 0, end: 10 });
  t.w(2, { at: 20 }); // never ended
  t.r([2], { at: 100, final: true });
  assert.equal(t.check().ok, true);
  assert.equal(registerHistory(t.h.ops, "vol").find((op) => op.value === 2)?.outcome, "unknown");
  assert.equal(lostWrites(t.h.ops).length, 0);
});

Deno.test("pass: concurrent acknowledged writes may end in either order; failed reads are ignored", () => {
  const t = new H();
  t.w(1, { c: "c1", at: 0, end: 50 });
  t.w(2, { c: "c2", at: 10, end: 40 });
  t.r([9], { c: "c3", at: 20, err: "gave up after 60000 ms (no-responders)" });
  t.r([1], { c: "c3", at: 100, final: true });
  assert.equal(t.check().ok, true);
  assert.equal(lostWrites(t.h.ops).length, 0);
});

Deno.test("pass: multi-block ops are checked per block, volumes apart", () => {
  const t = new H();
  t.w(1, { at: 0, end: 10, block: 4, count: 3 });
  t.w(2, { at: 20, end: 30, block: 5, count: 1, v: "other" });
  t.r([1, 1, 1], { at: 40, block: 4, final: true });
  t.r([2], { at: 40, block: 5, v: "other", final: true });
  assert.equal(t.check("vol").ok, true);
  assert.equal(t.check("other").ok, true);
  assert.equal(t.check("vol").blocksChecked, 3);
  assert.equal(lostWrites(t.h.ops).length, 0);
});

// ---- the rest of the record ----

Deno.test("errors by kind: codes, and what the client gave up on", () => {
  assert.equal(
    errorKind(new CairnError("UNAVAILABLE", "volume v: gave up after 60000 ms (timeout)")),
    "UNAVAILABLE (gave up: timeout)",
  );
  assert.equal(
    errorKind(new CairnError("UNAVAILABLE", "volume v: gave up after 60000 ms (MOVED: not here)")),
    "UNAVAILABLE (gave up: MOVED)",
  );
  assert.equal(errorKind(new CairnError("UNAVAILABLE", "1 of 2 in sync")), "UNAVAILABLE");
  assert.equal(errorKind(new CairnError("CORRUPT", "x")), "CORRUPT");
  assert.equal(errorKind(new TransportError("timeout", "timeout")), "timeout");
  assert.equal(errorKind(new TypeError("boom")), "TypeError");
  const t = new H();
  t.w(1, { at: 0, end: 10, err: "gave up after 60000 ms (timeout)" });
  t.w(2, { at: 0, end: 10, err: "gave up after 60000 ms (timeout)" });
  t.r([0], { at: 0, err: "x" });
  assert.deepEqual([...errorsByKind(t.h.ops)], [
    ["write UNAVAILABLE (gave up: timeout)", 2],
    ["read UNAVAILABLE", 1],
  ]);
});

Deno.test("longest time with no write completing", () => {
  const t = new H();
  t.w(1, { at: 0, end: 1000 });
  t.w(2, { at: 0, end: 1500 });
  t.w(3, { at: 0, end: 9000, err: "gave up" }); // errors do not count
  t.w(4, { at: 0, end: 7500 });
  assert.deepEqual(longestWriteGap(t.h.ops, 0, 10_000), { ms: 6000, fromMs: 1500, toMs: 7500 });
  assert.deepEqual(longestWriteGap(t.h.ops, 0, 20_000), { ms: 12_500, fromMs: 7500, toMs: 20_000 });
  assert.deepEqual(longestWriteGap([], 5, 10), { ms: 5, fromMs: 5, toMs: 10 });
});

Deno.test("node logs: takeovers, restarts, catch-ups and rebuilds counted from their wording", () => {
  const n1 = [
    "2030-01-01T00:00:01.000Z n1 info volume chaos-0: won term 1 (from n1)",
    "2030-01-01T00:00:01.100Z n1 info volume chaos-0: taking-over -> serving (term 1: 3/3 replica nodes answered, 0 blocks copied, 0 replica state changes)",
    "2030-01-01T00:00:09.000Z n1 info volume chaos-1: n3 caught up (2 segments, 17 blocks copied)",
    "2030-01-01T00:00:09.500Z n1 info volume chaos-1: n4 caught up (1 segments, 0 blocks copied)",
    "2030-01-01T00:00:09.550Z n1 info volume chaos-2: n5 caught up (2 segments, 3 blocks copied: 12288 bytes in 5 ms, 2 MB/s)",
    "2030-01-01T00:00:09.560Z n1 info volume chaos-2: n4 rebuilt (4 segments, 256 blocks copied: 1048576 bytes in 500 ms, 2 MB/s)",
    "2030-01-01T00:00:09.600Z n1 warn volume chaos-1: marked n2 stale for segment 0 (term 3)",
    "2030-01-01T00:00:09.700Z n1 warn volume chaos-1: catch-up of n2 failed (timeout); next try in 2000 ms",
    "2030-01-01T00:00:09.800Z n1 error something broke",
  ].join("\n");
  const n2 = [
    "2030-01-01T00:00:05.000Z n2 info volume chaos-1: won term 3 (from n3)",
    "2030-01-01T00:00:05.100Z n2 info volume chaos-1: taking-over -> serving (term 3: 2/3 replica nodes answered, 5 blocks copied, 1 replica state changes)",
    "2030-01-01T00:00:04.000Z n2 warn watchdog: n3 silent for 3100 ms; recorded down",
    "2030-01-01T00:00:06.000Z n2 warn volume chaos-1: fenced at term 2 (STALE_EPOCH)",
    "2030-01-01T00:00:06.500Z n2 warn volume chaos-2: takeover at term 4 not finished (x); trying again in 250 ms",
    "not a log line",
  ].join("\n");
  const c = countNodeLogs([n1, n2]);
  assert.equal(c.takeovers, 1);
  assert.equal(c.reclaims, 1);
  assert.deepEqual([...c.takeoverPath], [["chaos-1", ["n3->n2"]]]);
  assert.equal(c.reconcileCopies, 1);
  assert.equal(c.reconcileBlocks, 5);
  assert.equal(c.catchUps, 3);
  assert.equal(c.catchUpsCopying, 2);
  assert.equal(c.catchUpBlocks, 20);
  assert.equal(c.rebuilds, 1);
  assert.equal(c.rebuildBlocks, 256);
  assert.equal(c.staleMarks, 1);
  assert.equal(c.catchUpFailures, 1);
  assert.equal(c.recordedDown, 1);
  assert.equal(c.fenced, 1);
  assert.equal(c.takeoverRetries, 1);
  assert.equal(c.errorLines, 1);
});

Deno.test("chaos durations", () => {
  assert.equal(parseDuration("60s"), 60_000);
  assert.equal(parseDuration("90"), 90_000);
  assert.equal(parseDuration("10m"), 600_000);
  assert.equal(parseDuration("4h"), 4 * 3_600_000);
  assert.equal(parseDuration("1500ms"), 1500);
  assert.throws(() => parseDuration("soon"));
});
