import { seededRandomPort } from "../harness/random.ts";
import assert from "node:assert/strict";
import {
  type ReadCandidate,
  ReadPicker,
  readPolicyNames,
  updateEwma,
} from "../../actors/volume/read_policy.ts";

function candidate(node: string, fields: Partial<ReadCandidate> = {}): ReadCandidate {
  return { node, outstanding: 0, latencyEwmaMs: 1, weight: 1, ...fields };
}

Deno.test("local picks the local replica", () => {
  const picker = new ReadPicker("local", "b", seededRandomPort(1));
  const cs = [candidate("a"), candidate("b", { outstanding: 50 }), candidate("c")];
  for (let i = 0; i < 10; i++) assert.equal(picker.pick(cs), 1);
});

Deno.test("local falls back to least-outstanding when no replica is local", () => {
  const picker = new ReadPicker("local", "z", seededRandomPort(1));
  const cs = [
    candidate("a", { outstanding: 3 }),
    candidate("b", { outstanding: 1 }),
    candidate("c", { outstanding: 2 }),
  ];
  assert.equal(picker.pick(cs), 1);
});

Deno.test("round-robin cycles evenly", () => {
  const picker = new ReadPicker("round-robin", "a", seededRandomPort(1));
  const cs = [candidate("a"), candidate("b"), candidate("c")];
  const picks = Array.from({ length: 9 }, () => picker.pick(cs));
  assert.deepEqual(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
  const counts = [0, 0, 0];
  for (let i = 0; i < 3000; i++) counts[picker.pick(cs)]++;
  assert.deepEqual(counts, [1000, 1000, 1000]);
});

Deno.test("least-outstanding picks the minimum and breaks ties by latency, then at random", () => {
  const picker = new ReadPicker("least-outstanding", "a", seededRandomPort(7));
  assert.equal(
    picker.pick([
      candidate("a", { outstanding: 4 }),
      candidate("b", { outstanding: 2 }),
      candidate("c", { outstanding: 3 }),
    ]),
    1,
  );
  const tied = [
    candidate("a", { outstanding: 1, latencyEwmaMs: 5 }),
    candidate("b", { outstanding: 1, latencyEwmaMs: 2 }),
    candidate("c", { outstanding: 2, latencyEwmaMs: 0.1 }),
  ];
  for (let i = 0; i < 20; i++) assert.equal(picker.pick(tied), 1);
  const equal = [candidate("a"), candidate("b"), candidate("c", { outstanding: 1 })];
  const counts = [0, 0, 0];
  for (let i = 0; i < 2000; i++) counts[picker.pick(equal)]++;
  assert.equal(counts[2], 0);
  assert.ok(counts[0] > 850 && counts[1] > 850, `${counts}`);
});

Deno.test("weighted shares follow the weights", () => {
  const picker = new ReadPicker("weighted", "a", seededRandomPort(42));
  const cs = [
    candidate("a", { weight: 1 }),
    candidate("b", { weight: 2 }),
    candidate("c", { weight: 1 }),
  ];
  const counts = [0, 0, 0];
  const n = 40_000;
  for (let i = 0; i < n; i++) counts[picker.pick(cs)]++;
  const expected = [0.25, 0.5, 0.25];
  for (let i = 0; i < 3; i++) {
    assert.ok(Math.abs(counts[i] / n - expected[i]) < 0.02, `${counts}`);
  }
});

Deno.test("weighted ignores non-positive weights and is uniform when all are zero", () => {
  const picker = new ReadPicker("weighted", "a", seededRandomPort(3));
  const someZero = [
    candidate("a", { weight: 0 }),
    candidate("b", { weight: -4 }),
    candidate("c", { weight: 2 }),
  ];
  for (let i = 0; i < 200; i++) assert.equal(picker.pick(someZero), 2);
  const allZero = [
    candidate("a", { weight: 0 }),
    candidate("b", { weight: 0 }),
    candidate("c", { weight: -1 }),
  ];
  const counts = [0, 0, 0];
  for (let i = 0; i < 3000; i++) counts[picker.pick(allZero)]++;
  for (const c of counts) assert.ok(c > 850 && c < 1150, `${counts}`);
});

Deno.test("every policy handles a single candidate and rejects an empty list", () => {
  for (const policy of readPolicyNames) {
    const picker = new ReadPicker(policy, "x", seededRandomPort(9));
    for (let i = 0; i < 5; i++) assert.equal(picker.pick([candidate("only", { weight: 0 })]), 0);
    assert.throws(() => picker.pick([]), RangeError);
  }
});

Deno.test("the same seed gives the same picks", () => {
  const cs = [
    candidate("a", { weight: 1 }),
    candidate("b", { weight: 3 }),
    candidate("c", { weight: 2 }),
  ];
  const run = () => {
    const picker = new ReadPicker("weighted", "a", seededRandomPort(11));
    return Array.from({ length: 100 }, () => picker.pick(cs));
  };
  assert.deepEqual(run(), run());
});

Deno.test("updateEwma moves toward samples and seeds from the first", () => {
  assert.equal(updateEwma(NaN, 8), 8);
  assert.equal(updateEwma(10, 10), 10);
  const next = updateEwma(10, 20);
  assert.ok(next > 10 && next < 20);
  let ewma = 100;
  for (let i = 0; i < 100; i++) ewma = updateEwma(ewma, 1);
  assert.ok(Math.abs(ewma - 1) < 0.01);
  assert.equal(updateEwma(5, NaN), 5);
});
