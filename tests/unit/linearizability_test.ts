import assert from "node:assert/strict";
import { mulberry32 } from "../../actors/seeded_random.ts";
import {
  checkLinearizable,
  type CheckResult,
  type HistoryOp,
  tornValue,
  type ViolationKind,
} from "../../sim/linearizability.ts";

type Outcome = HistoryOp["outcome"];

function w(
  client: string,
  value: number,
  startMs: number,
  endMs: number,
  outcome: Outcome = "ok",
  block = 0,
): HistoryOp {
  return { client, kind: "write", block, value, startMs, endMs, outcome };
}

function r(
  client: string,
  value: number,
  startMs: number,
  endMs: number,
  outcome: Outcome = "ok",
  block = 0,
): HistoryOp {
  return { client, kind: "read", block, value, startMs, endMs, outcome };
}

function assertPasses(history: HistoryOp[]): CheckResult {
  const res = checkLinearizable(history);
  assert.deepEqual(res.violations, [], res.violations.map((v) => v.message).join("\n"));
  assert.equal(res.ok, true);
  assert.equal(res.blocksUndecided, 0);
  return res;
}

function assertFails(history: HistoryOp[], kind: ViolationKind): CheckResult {
  const res = checkLinearizable(history);
  assert.equal(res.ok, false, "expected a violation");
  assert.ok(res.violations.length > 0);
  assert.equal(res.violations[0].kind, kind, res.violations[0].message);
  return res;
}

function assertMentions(message: string, ...parts: string[]): void {
  for (const part of parts) {
    assert.ok(message.includes(part), `${JSON.stringify(part)} not in: ${message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Histories that must fail

Deno.test("lost write: a later read returns the previous value after the write completed", () => {
  const res = assertFails([w("A", 1, 0, 10), w("A", 2, 20, 30), r("B", 1, 40, 50)], "lost-write");
  const v = res.violations[0];
  assert.equal(v.block, 0);
  assertMentions(
    v.message,
    "block 0",
    "write 2 by A [20..30 ms]",
    "returned 1",
    "40",
    "expected 2",
  );
  assert.deepEqual(v.ops.map((op) => op.startMs), [0, 20, 40]);
  assert.equal(res.blocksFailed, 1);
});

Deno.test("lost write: a later read returns 0 after the only write completed", () => {
  const res = assertFails([w("A", 7, 0, 10, "ok", 3), r("B", 0, 11, 12, "ok", 3)], "lost-write");
  assertMentions(
    res.violations[0].message,
    "block 3",
    "write 7",
    "0 (the initial zeros)",
    "expected 7",
  );
});

Deno.test("stale read after a pause: B reads v1 long after A's write of v2 completed", () => {
  const history = [
    w("A", 1, 0, 10),
    w("A", 2, 20, 30),
    r("A", 2, 31, 35),
    r("B", 1, 1000, 1010),
  ];
  const res = assertFails(history, "stale-read");
  assertMentions(
    res.violations[0].message,
    "block 0",
    "read by B [1000..1010 ms]",
    "returned 1",
    "expected 2",
  );
  // Without anyone having seen 2, the same shape reads as a lost write.
  assertFails([w("A", 1, 0, 10), w("A", 2, 20, 30), r("B", 1, 1000, 1010)], "lost-write");
  // Once a later write is seen, 2 was not lost: the read was stale.
  assertFails(
    [w("A", 1, 0, 10), w("A", 2, 20, 30), r("B", 1, 40, 50), w("A", 3, 60, 70), r("B", 3, 80, 90)],
    "stale-read",
  );
});

Deno.test("never-written: a read of a value no write wrote to the block", () => {
  const res = assertFails([w("A", 1, 0, 10), r("B", 99, 20, 30)], "never-written");
  assertMentions(
    res.violations[0].message,
    "block 0",
    "returned 99",
    "no write of 99",
    "write 1 by A [0..10 ms]",
  );
  // Written to another block: the message says where.
  const other = assertFails(
    [w("A", 5, 0, 10, "ok", 4), r("B", 5, 20, 30, "ok", 2)],
    "never-written",
  );
  assertMentions(other.violations[0].message, "block 2", "was written to block 4");
  // Only a failed write wrote it.
  const failed = assertFails([w("A", 6, 0, 10, "failed"), r("B", 6, 20, 30)], "never-written");
  assertMentions(failed.violations[0].message, "failed write 6 by A", "no effect");
  // Written only after the read completed.
  const future = assertFails([r("B", 8, 0, 10), w("A", 8, 20, 30)], "never-written");
  assertMentions(
    future.violations[0].message,
    "started at 20 ms, after the read completed at 10 ms",
  );
});

Deno.test("stale read: a read goes back in time to a value written before the newer one finished", () => {
  // 1 and 2 are written concurrently; once a read saw 2 after 1 completed, 1 is gone for good.
  const history = [
    w("A", 1, 0, 10),
    w("B", 2, 5, 20),
    r("C", 2, 25, 30),
    r("D", 1, 35, 40),
  ];
  const res = assertFails(history, "stale-read");
  assertMentions(
    res.violations[0].message,
    "went back in time",
    "read by C [25..30 ms]",
    "read by D [35..40 ms]",
  );
  // Reads in either order are fine while the writes are still running.
  assertPasses([w("A", 1, 0, 50), w("B", 2, 5, 50), r("C", 2, 25, 30), r("D", 1, 35, 40)]);
});

Deno.test("unknown outcome: a write that was seen and then disappeared is still a violation", () => {
  // The timed-out write took effect (C read it), then the block went back to zeros.
  assertFails([w("A", 5, 10, 11, "unknown"), r("C", 5, 20, 25), r("D", 0, 30, 35)], "stale-read");
  // It took effect after write 1, so seeing 1 again afterwards is stale.
  const res = assertFails(
    [w("A", 1, 0, 5), w("A", 2, 10, 11, "unknown"), r("B", 2, 20, 25), r("B", 1, 30, 35)],
    "stale-read",
  );
  assertMentions(res.violations[0].message, "outcome unknown");
  // An ok write cannot be hidden by an unknown one that nobody saw.
  assertFails([w("A", 1, 0, 5), w("A", 2, 10, 11, "unknown"), r("B", 0, 30, 35)], "lost-write");
});

Deno.test("not-linearizable when no short proof exists: concurrent writes seen in both orders", () => {
  // Both writes end at 10; reads after that must agree on which one was last.
  const res = assertFails(
    [w("A", 1, 0, 10), w("B", 2, 0, 10), r("C", 1, 20, 30), r("D", 2, 25, 35)],
    "not-linearizable",
  );
  assertMentions(
    res.violations[0].message,
    "block 0",
    "write 1 by A [0..10 ms]",
    "write 2 by B [0..10 ms]",
    "read by C [20..30 ms] must still return",
  );
});

// ---------------------------------------------------------------------------------------------
// Histories that must pass

Deno.test("pass: concurrent overlapping writes, reads agree on either order", () => {
  for (const last of [1, 2]) {
    assertPasses([w("A", 1, 0, 10), w("B", 2, 5, 15), r("C", last, 20, 25), r("D", last, 30, 35)]);
  }
  // Reads during the writes may see any of 0, 1, 2 in an order consistent with one of them.
  assertPasses([
    w("A", 1, 0, 10),
    w("B", 2, 5, 15),
    r("C", 0, 1, 2),
    r("D", 2, 6, 8),
    r("E", 1, 9, 20),
  ]);
  assertPasses([w("A", 1, 0, 10), w("B", 2, 5, 15), r("C", 1, 6, 8), r("D", 2, 9, 20)]);
});

Deno.test("pass: a read concurrent with a write sees the old or the new value", () => {
  for (const seen of [1, 2]) {
    assertPasses([w("A", 1, 0, 10), w("A", 2, 20, 30), r("B", seen, 25, 35), r("B", 2, 40, 41)]);
  }
});

Deno.test("pass: unknown writes that took effect late, or never", () => {
  // The recorded end (11) is ignored: the write may take effect any time after it started.
  assertPasses([
    w("A", 3, 10, 11, "unknown"),
    r("B", 0, 20, 25),
    r("B", 3, 100, 105),
    r("C", 3, 200, 201),
  ]);
  assertPasses([
    w("A", 1, 0, 5),
    w("A", 3, 10, 11, "unknown"),
    r("B", 1, 20, 25),
    r("B", 1, 100, 105),
  ]);
  // Taking effect after a later ok write: the block ends with the unknown write's value.
  assertPasses([
    w("A", 3, 10, 11, "unknown"),
    w("B", 4, 20, 21),
    r("C", 4, 30, 31),
    r("C", 3, 40, 41),
  ]);
});

Deno.test("pass: failed writes are never visible, unknown reads are ignored", () => {
  assertPasses([
    w("A", 1, 0, 5),
    w("A", 4, 10, 11, "failed"),
    r("B", 1, 20, 25),
    r("B", 77, 30, 31, "unknown"),
  ]);
  assertPasses([r("A", 12345, 0, 1, "failed"), r("A", 0, 2, 3)]);
});

Deno.test("pass: reads return 0 on untouched blocks; blocks are independent", () => {
  const res = assertPasses([
    r("A", 0, 0, 1, "ok", 5),
    w("A", 1, 2, 3, "ok", 6),
    r("B", 0, 4, 5, "ok", 5),
    r("B", 1, 4, 5, "ok", 6),
  ]);
  assert.equal(res.blocksChecked, 2);
  assert.equal(res.opsChecked, 4);
  assert.deepEqual(checkLinearizable([]), {
    ok: true,
    blocksChecked: 0,
    opsChecked: 0,
    blocksUndecided: 0,
    blocksFailed: 0,
    violations: [],
  });
});

Deno.test("the same write id on several blocks is fine; twice on one block is an input error", () => {
  assertPasses([w("A", 9, 0, 1, "ok", 0), w("A", 9, 0, 1, "ok", 1), r("B", 9, 2, 3, "ok", 1)]);
  assert.throws(() => checkLinearizable([w("A", 9, 0, 1), w("B", 9, 2, 3)]), /written twice/);
  // A retry after a failed attempt may reuse the id.
  assertPasses([w("A", 9, 0, 1, "failed"), w("A", 9, 2, 3), r("B", 9, 4, 5)]);
  assert.throws(() => checkLinearizable([w("A", 0, 0, 1)]), TypeError);
  assert.throws(() => checkLinearizable([r("A", 1, 5, 4)]), TypeError);
});

Deno.test("maxViolations caps the list; blocksFailed counts every failing block", () => {
  const history: HistoryOp[] = [];
  for (let b = 0; b < 10; b++) history.push(r("A", 42, 0, 1, "ok", b));
  const res = checkLinearizable(history, { maxViolations: 3 });
  assert.equal(res.ok, false);
  assert.equal(res.violations.length, 3);
  assert.equal(res.blocksFailed, 10);
  assert.deepEqual(res.violations.map((v) => v.block), [0, 1, 2]);
});

Deno.test("search budget: an exhausted block is undecided, not failed", () => {
  const history: HistoryOp[] = [];
  for (let i = 1; i <= 6; i++) history.push(w(`c${i}`, i, 0, 100));
  history.push(r("x", 6, 200, 201));
  const res = checkLinearizable(history, { searchBudget: 3 });
  assert.equal(res.blocksUndecided, 1);
  assert.equal(res.ok, true);
  assert.deepEqual(res.violations, []);
  assertPasses(history);
  // A proof that needs no search is still reported.
  history.push(r("y", 99, 300, 301));
  const bad = checkLinearizable(history, { searchBudget: 3 });
  assert.equal(bad.ok, false);
  assert.equal(bad.violations[0].kind, "never-written");
});

// ---------------------------------------------------------------------------------------------
// Randomized

interface GenOptions {
  blocks: number;
  opsPerBlock: number;
  maxConcurrency: number;
  pUnknown: number;
  pFailed: number;
}

/**
 * Simulates a real register per block: each op takes effect at a random point inside its
 * interval (unknown ones at any time after they start, or never; failed ones never).
 */
function legalHistory(rand: () => number, o: GenOptions): HistoryOp[] {
  const history: HistoryOp[] = [];
  let nextValue = 1;
  const int = (n: number) => Math.floor(rand() * n);
  for (let block = 0; block < o.blocks; block++) {
    const events: { at: number; op: HistoryOp; effect: boolean }[] = [];
    let t = int(50);
    let made = 0;
    while (made < o.opsPerBlock) {
      const burst = Math.min(1 + int(o.maxConcurrency), o.opsPerBlock - made);
      for (let k = 0; k < burst; k++) {
        const startMs = t + int(10);
        const endMs = startMs + 1 + int(20);
        const isWrite = rand() < 0.5;
        const roll = rand();
        const outcome: Outcome = roll < o.pUnknown
          ? "unknown"
          : roll < o.pUnknown + o.pFailed
          ? "failed"
          : "ok";
        const op: HistoryOp = {
          client: `c${k}`,
          kind: isWrite ? "write" : "read",
          block,
          value: isWrite ? nextValue++ : 0,
          startMs,
          endMs,
          outcome,
        };
        let effect = outcome !== "failed";
        let at = startMs + rand() * (endMs - startMs);
        if (outcome === "unknown") {
          effect = rand() < 0.6;
          at = startMs + rand() * 200;
        }
        events.push({ at, op, effect });
        history.push(op);
      }
      made += burst;
      t += rand() < 0.3 ? int(10) : 10 + int(40);
    }
    events.sort((a, b) => a.at - b.at);
    let value = 0;
    for (const e of events) {
      if (!e.effect) continue;
      if (e.op.kind === "write") value = e.op.value;
      else e.op.value = e.op.outcome === "ok" ? value : 1_000_000_000 + int(1000);
    }
  }
  return history;
}

/** Plain exhaustive search, no memo and no pruning: the reference for small blocks. */
function bruteForce(ops: HistoryOp[]): boolean {
  const live = ops.filter((op) =>
    op.outcome === "ok" || (op.outcome === "unknown" && op.kind === "write")
  );
  const end = (op: HistoryOp) => (op.outcome === "ok" ? op.endMs : Infinity);
  const used = new Array(live.length).fill(false);
  let required = live.filter((op) => op.outcome === "ok").length;
  const go = (value: number): boolean => {
    if (required === 0) return true;
    for (let i = 0; i < live.length; i++) {
      if (used[i]) continue;
      const x = live[i];
      let minimal = true;
      for (let j = 0; j < live.length && minimal; j++) {
        if (j !== i && !used[j] && end(live[j]) < x.startMs) minimal = false;
      }
      if (!minimal) continue;
      if (x.kind === "read" && x.value !== value) continue;
      used[i] = true;
      if (x.outcome === "ok") required--;
      const ok = go(x.kind === "write" ? x.value : value);
      used[i] = false;
      if (x.outcome === "ok") required++;
      if (ok) return true;
    }
    return false;
  };
  return go(0);
}

function byBlock(history: HistoryOp[]): Map<number, HistoryOp[]> {
  const map = new Map<number, HistoryOp[]>();
  for (const op of history) {
    const list = map.get(op.block) ?? [];
    list.push(op);
    map.set(op.block, list);
  }
  return map;
}

function failingBlocks(res: CheckResult): Set<number> {
  return new Set(res.violations.map((v) => v.block));
}

Deno.test("randomized: legal histories pass; mutated reads fail when provably illegal", () => {
  let failedTotal = 0;
  for (let seed = 1; seed <= 20; seed++) {
    const rand = mulberry32(seed);
    const history = legalHistory(rand, {
      blocks: 40,
      opsPerBlock: 8 + (seed % 4) * 10,
      maxConcurrency: 1 + (seed % 8),
      pUnknown: 0.1,
      pFailed: 0.05,
    });
    assertPasses(history);

    const okReads = history.filter((op) => op.kind === "read" && op.outcome === "ok");
    let provable = 0;
    let failed = 0;
    for (let m = 0; m < 30; m++) {
      const target = okReads[Math.floor(rand() * okReads.length)];
      const blockOps = history.filter((op) => op.block === target.block);
      const writes = blockOps.filter((op) => op.kind === "write" && op.outcome !== "failed");
      // Half never-written values, half another value of the same block (or 0).
      const choices = [0, ...writes.map((op) => op.value)].filter((v) => v !== target.value);
      const neverWritten = rand() < 0.5 || choices.length === 0;
      const value = neverWritten ? 2_000_000_000 + m : choices[Math.floor(rand() * choices.length)];
      const read = { ...target, value };
      const mutated = blockOps.map((op) => op === target ? read : op);
      const res = checkLinearizable(mutated);
      if (!res.ok) failed++;
      if (neverWritten) {
        provable++;
        assert.equal(res.ok, false, `seed ${seed}: never-written value passed`);
        assert.equal(res.violations[0].kind, "never-written");
        continue;
      }
      const illegal = mutated.length <= 9 ? !bruteForce(mutated) : obviouslyIllegal(mutated, read);
      if (illegal) {
        provable++;
        assert.equal(res.ok, false, `seed ${seed}: provably illegal mutation passed`);
      }
    }
    assert.ok(failed >= provable);
    assert.ok(failed >= 15, `seed ${seed}: only ${failed}/30 mutations failed`);
    failedTotal += failed;
  }
  // Most mutations are caught (about 90% with these seeds), not only the provable ones.
  assert.ok(failedTotal >= 0.8 * 20 * 30, `${failedTotal}/600 mutations failed`);
});

/** A read of a value whose write started after the read ended, or that an ok write surely replaced. */
function obviouslyIllegal(ops: HistoryOp[], read: HistoryOp): boolean {
  const v = read.value;
  const wv = ops.find((op) => op.kind === "write" && op.value === v && op.outcome !== "failed");
  if (wv && wv.startMs > read.endMs) return true;
  const wvEnd = !wv ? -Infinity : wv.outcome === "ok" ? wv.endMs : Infinity;
  return ops.some((op) =>
    op.kind === "write" && op.outcome === "ok" && op.value !== v && op.startMs > wvEnd &&
    op.endMs < read.startMs
  );
}

Deno.test("randomized: agrees with exhaustive search on small arbitrary histories", () => {
  const rand = mulberry32(7);
  const int = (n: number) => Math.floor(rand() * n);
  const history: HistoryOp[] = [];
  let nextValue = 1;
  for (let block = 0; block < 4000; block++) {
    const n = 2 + int(6);
    const written: number[] = [0];
    for (let i = 0; i < n; i++) {
      const startMs = int(30);
      const endMs = startMs + int(15);
      const roll = rand();
      const outcome: Outcome = roll < 0.15 ? "unknown" : roll < 0.2 ? "failed" : "ok";
      if (rand() < 0.5) {
        written.push(nextValue);
        history.push({
          client: `c${i}`,
          kind: "write",
          block,
          value: nextValue++,
          startMs,
          endMs,
          outcome,
        });
      } else {
        const value = written[int(written.length)];
        history.push({ client: `c${i}`, kind: "read", block, value, startMs, endMs, outcome });
      }
    }
  }
  const res = checkLinearizable(history, { maxViolations: Infinity });
  const failing = failingBlocks(res);
  let legal = 0;
  for (const [block, ops] of byBlock(history)) {
    const expected = bruteForce(ops);
    if (expected) legal++;
    assert.equal(!failing.has(block), expected, `block ${block}: ${JSON.stringify(ops)}`);
  }
  assert.equal(res.blocksUndecided, 0);
  // Both kinds are well represented.
  assert.ok(legal > 800 && legal < 3200, `${legal} legal of 4000`);
});

Deno.test("randomized: every reported violation is real (brute force confirms each kind)", () => {
  const rand = mulberry32(99);
  const history = legalHistory(rand, {
    blocks: 3000,
    opsPerBlock: 7,
    maxConcurrency: 4,
    pUnknown: 0.15,
    pFailed: 0.05,
  });
  // Scramble a fifth of the reads among the block's values.
  const blocks = byBlock(history);
  for (const ops of blocks.values()) {
    const values = [0, ...ops.filter((op) => op.kind === "write").map((op) => op.value)];
    for (const op of ops) {
      if (op.kind === "read" && op.outcome === "ok" && rand() < 0.2) {
        op.value = values[Math.floor(rand() * values.length)];
      }
    }
  }
  const res = checkLinearizable(history, { maxViolations: Infinity });
  const kinds = new Map<string, number>();
  for (const v of res.violations) {
    kinds.set(v.kind, (kinds.get(v.kind) ?? 0) + 1);
    assert.ok(v.message.startsWith(`block ${v.block}: `), v.message);
    assert.ok(v.ops.length > 0 && v.ops.every((op) => op.block === v.block));
    for (let i = 1; i < v.ops.length; i++) assert.ok(v.ops[i - 1].startMs <= v.ops[i].startMs);
  }
  const failing = failingBlocks(res);
  for (const [block, ops] of blocks) {
    assert.equal(!failing.has(block), bruteForce(ops), `block ${block}: ${JSON.stringify(ops)}`);
  }
  for (const kind of ["stale-read", "lost-write", "never-written", "not-linearizable"]) {
    assert.ok((kinds.get(kind) ?? 0) > 0, `no ${kind} in ${JSON.stringify([...kinds])}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Speed

Deno.test("speed: 100k ops over 2000 blocks with up to 8 overlapping ops check in well under 2 s", () => {
  const history = legalHistory(mulberry32(2024), {
    blocks: 2000,
    opsPerBlock: 50,
    maxConcurrency: 8,
    pUnknown: 0.05,
    pFailed: 0.02,
  });
  assert.equal(history.length, 100_000);
  const t0 = performance.now();
  const res = checkLinearizable(history);
  const elapsed = performance.now() - t0;
  console.log(
    `checked ${res.opsChecked} ops over ${res.blocksChecked} blocks in ${elapsed.toFixed(0)} ms`,
  );
  assert.equal(res.ok, true);
  assert.equal(res.blocksUndecided, 0);
  assert.ok(elapsed < 2000, `${elapsed} ms`);
});

Deno.test("speed: one hot block with 30k ops, and a failing one", () => {
  const history = legalHistory(mulberry32(5), {
    blocks: 1,
    opsPerBlock: 30_000,
    maxConcurrency: 8,
    pUnknown: 0.02,
    pFailed: 0.01,
  });
  const t0 = performance.now();
  assertPasses(history);
  // Break the last ok read of a value that is already overwritten: proven without a long search.
  const reads = history.filter((op) => op.kind === "read" && op.outcome === "ok");
  const last = reads[reads.length - 1];
  last.value = 0;
  const res = checkLinearizable(history);
  const elapsed = performance.now() - t0;
  assert.equal(res.ok, false);
  assert.ok(elapsed < 2000, `${elapsed} ms`);
});

// ---- total power losses: unflushed cached writes may be lost, nothing else ----

Deno.test("losses: a cached write acknowledged after the last flush may be lost in a total power loss", () => {
  const cw = (value: number, s: number, e: number) => ({ ...w("A", value, s, e), cached: true });
  const lost = (history: HistoryOp[], flushes = [] as { startMs: number; endMs: number }[]) =>
    checkLinearizable(history, { losses: [100], flushes });
  // 1 durable (not cached), 2 cached and never flushed: after the loss 1 or 2 may be read.
  for (const seen of [1, 2]) {
    const res = lost([w("A", 1, 0, 10), cw(2, 20, 30), r("B", 2, 40, 50), r("B", seen, 110, 120)]);
    assert.deepEqual(res.violations, [], `reading ${seen} after the loss is allowed`);
  }
  // Older than the last durable write: lost.
  const older = lost([w("A", 1, 0, 10), cw(2, 20, 30), r("B", 0, 110, 120)]);
  assert.equal(older.ok, false, "the durable write 1 must survive");
  assert.match(older.violations[0].message, /total power loss at 100 ms/);
  // Without the loss, the same history is a lost write.
  assert.equal(
    checkLinearizable([w("A", 1, 0, 10), cw(2, 20, 30), r("B", 1, 110, 120)]).ok,
    false,
  );
  // Not cached: must survive.
  assert.equal(lost([w("A", 1, 0, 10), w("A", 2, 20, 30), r("B", 1, 110, 120)]).ok, false);
  // A FLUSH that started after the write and completed before the loss makes it durable.
  assert.equal(
    lost([w("A", 1, 0, 10), cw(2, 20, 30), r("B", 1, 110, 120)], [{ startMs: 31, endMs: 40 }])
      .ok,
    false,
  );
  // One that started before the write was acknowledged does not; nor one done after the loss.
  for (const flush of [{ startMs: 25, endMs: 40 }, { startMs: 31, endMs: 105 }]) {
    assert.deepEqual(
      lost([w("A", 1, 0, 10), cw(2, 20, 30), r("B", 1, 110, 120)], [flush]).violations,
      [],
    );
  }
  // Several unflushed cached writes: any of them, or the durable base, may come back...
  for (const seen of [1, 2, 3, 4]) {
    const res = lost([
      w("A", 1, 0, 5),
      cw(2, 10, 15),
      cw(3, 20, 25),
      cw(4, 30, 35),
      r(
        "B",
        seen,
        110,
        120,
      ),
    ]);
    assert.deepEqual(res.violations, [], `reading ${seen} after the loss is allowed`);
  }
  // ...but once read after the restart, a value holds: no going back and forth.
  assert.equal(
    lost([w("A", 1, 0, 5), cw(2, 10, 15), cw(3, 20, 25), r("B", 3, 110, 120), r("B", 2, 130, 140)])
      .ok,
    false,
  );
  // Writes after the restart are checked as usual.
  assert.equal(
    lost([cw(2, 10, 15), w("A", 5, 110, 120), r("B", 2, 130, 140)]).ok,
    false,
  );
});

Deno.test("losses: a second loss starts from whatever the block held after the first", () => {
  const cw = (value: number, s: number, e: number) => ({ ...w("A", value, s, e), cached: true });
  const opts = { losses: [100, 200] };
  // 1 durable; 2 cached, lost at 100 or not; nothing written between, so the second loss
  // keeps what the first restart found.
  for (const [a, b] of [[1, 1], [2, 2], [1, 2], [2, 1]]) {
    const res = checkLinearizable(
      [w("A", 1, 0, 5), cw(2, 10, 15), r("B", a, 110, 120), r("B", b, 210, 220)],
      opts,
    );
    // What the restart found is durable (it was read after it): the second loss keeps it.
    assert.equal(res.ok, a === b, `read ${a} then ${b}`);
  }
  // A durable write between the losses is the floor for the second.
  assert.equal(
    checkLinearizable(
      [cw(2, 10, 15), w("A", 3, 110, 115), cw(4, 120, 125), r("B", 2, 210, 220)],
      opts,
    ).ok,
    false,
  );
});

Deno.test("losses: an op in flight at a loss, or two writers of a block, is refused", () => {
  assert.throws(
    () => checkLinearizable([w("A", 1, 90, 110)], { losses: [100] }),
    /in flight at the power loss/,
  );
  assert.throws(
    () => checkLinearizable([w("A", 1, 0, 20), w("B", 2, 10, 30)], { losses: [100] }),
    /one writer per block/,
  );
});

Deno.test("losses: a block may read torn (CORRUPT) after a total loss only if its last write was not durable", () => {
  const cw = (value: number, s: number, e: number) => ({ ...w("A", value, s, e), cached: true });
  const torn = (block: number, s: number, e: number) => r("B", tornValue, s, e, "ok", block);
  // An unflushed cached write at the loss: torn is one of the block's possible values, and
  // stays until the block is written again.
  assert.deepEqual(
    checkLinearizable([w("A", 1, 0, 10), cw(2, 20, 30), torn(0, 110, 120), torn(0, 130, 140)], {
      losses: [100],
    }).violations,
    [],
  );
  assert.deepEqual(
    checkLinearizable(
      [cw(2, 20, 30), torn(0, 110, 120), w("A", 3, 150, 160), r("B", 3, 170, 180)],
      {
        losses: [100],
      },
    ).violations,
    [],
  );
  // Written again, it is no longer torn.
  assert.equal(
    checkLinearizable([cw(2, 20, 30), torn(0, 110, 120), w("A", 3, 150, 160), torn(0, 170, 180)], {
      losses: [100],
    }).ok,
    false,
  );
  // Its last write durable (not cached, or flushed before the loss): never torn.
  assert.equal(
    checkLinearizable([w("A", 1, 0, 10), w("A", 2, 20, 30), torn(0, 110, 120)], { losses: [100] })
      .ok,
    false,
  );
  assert.equal(
    checkLinearizable([w("A", 1, 0, 10), cw(2, 20, 30), torn(0, 110, 120)], {
      losses: [100],
      flushes: [{ startMs: 31, endMs: 40 }],
    }).ok,
    false,
  );
  // No loss: never torn.
  assert.equal(checkLinearizable([w("A", 1, 0, 10), cw(2, 20, 30), torn(0, 40, 50)]).ok, false);
});
