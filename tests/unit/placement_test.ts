import assert from "node:assert/strict";
import {
  chooseOwner,
  hashUnit,
  NotEnoughNodesError,
  type PlacementNode,
  placeReplicas,
  placeVolume,
  score,
} from "../../actors/placement/rendezvous.ts";

const tib = 1024 ** 4;

function nodes(count: number, zones: number, capacityBytes = tib): PlacementNode[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `node-${i}`,
    zone: `zone-${i % zones}`,
    capacityBytes,
  }));
}

function zoneOf(all: PlacementNode[], id: string): string {
  return all.find((n) => n.id === id)!.zone;
}

/** Every (segment, replica slot) whose node differs between two layouts. */
function moves(before: string[][], after: string[][]): { from: string; to: string }[] {
  const out: { from: string; to: string }[] = [];
  for (let s = 0; s < before.length; s++) {
    const was = new Set(before[s]);
    const now = new Set(after[s]);
    const gone = before[s].filter((id) => !now.has(id));
    const came = after[s].filter((id) => !was.has(id));
    assert.equal(gone.length, came.length);
    for (let i = 0; i < gone.length; i++) out.push({ from: gone[i], to: came[i] });
  }
  return out;
}

Deno.test("hashUnit is in (0,1), deterministic and spread", () => {
  assert.equal(hashUnit("vol-a/0|node-1"), hashUnit("vol-a/0|node-1"));
  assert.notEqual(hashUnit("vol-a/0|node-1"), hashUnit("vol-a/0|node-2"));
  let sum = 0;
  const n = 20_000;
  for (let i = 0; i < n; i++) {
    const u = hashUnit(`k${i}`);
    assert.ok(u > 0 && u < 1);
    sum += u;
  }
  assert.ok(Math.abs(sum / n - 0.5) < 0.01, `mean ${sum / n}`);
  assert.ok(hashUnit("") > 0 && hashUnit("") < 1);
  assert.ok(score("k", { id: "a", zone: "z", capacityBytes: tib }) > 0);
});

Deno.test("replicas of every segment are on distinct nodes", () => {
  const all = nodes(5, 5);
  for (const replicas of [1, 2, 3, 5]) {
    for (const segment of placeVolume("vol", 500, all, replicas)) {
      assert.equal(segment.length, replicas);
      assert.equal(new Set(segment).size, replicas);
    }
  }
});

Deno.test("replicas go to distinct zones when there are enough zones", () => {
  const all = nodes(6, 3);
  for (const segment of placeVolume("vol", 1000, all, 3)) {
    assert.equal(new Set(segment).size, 3);
    assert.equal(new Set(segment.map((id) => zoneOf(all, id))).size, 3);
  }
});

Deno.test("with fewer zones than replicas, nodes stay distinct and every zone is used", () => {
  const all = nodes(6, 2);
  for (const segment of placeVolume("vol", 1000, all, 3)) {
    assert.equal(new Set(segment).size, 3);
    assert.equal(new Set(segment.map((id) => zoneOf(all, id))).size, 2);
  }
});

Deno.test("placement is deterministic and ignores the order of nodes", () => {
  const all = nodes(9, 3);
  const shuffled = [...all].reverse();
  shuffled.push(shuffled.shift()!);
  const a = placeVolume("vol", 300, all, 3);
  assert.deepEqual(placeVolume("vol", 300, all, 3), a);
  assert.deepEqual(placeVolume("vol", 300, shuffled, 3), a);
  assert.deepEqual(placeReplicas("vol/7", shuffled, 3), a[7]);
});

for (const zones of [1, 11]) {
  Deno.test(`adding an 11th node moves about 1/11 of replicas, all to it (${zones} zones)`, () => {
    const ten = nodes(10, zones);
    const eleven = [...ten, { id: "node-new", zone: `zone-${10 % zones}`, capacityBytes: tib }];
    const segments = 3000;
    const before = placeVolume("vol", segments, ten, 3);
    const after = placeVolume("vol", segments, eleven, 3);
    const moved = moves(before, after);
    const fraction = moved.length / (segments * 3);
    const expected = 1 / 11;
    assert.ok(
      fraction > 0.6 * expected && fraction < 1.5 * expected,
      `moved ${fraction}, expected about ${expected}`,
    );
    for (const move of moved) assert.equal(move.to, "node-new");
  });
}

Deno.test("adding a node in an existing zone moves replicas only to it", () => {
  const before = nodes(9, 3);
  const after = [...before, { id: "node-new", zone: "zone-1", capacityBytes: tib }];
  const moved = moves(placeVolume("vol", 3000, before, 3), placeVolume("vol", 3000, after, 3));
  assert.ok(moved.length > 0);
  for (const move of moved) assert.equal(move.to, "node-new");
});

for (const zones of [2, 3, 10]) {
  Deno.test(`removing a node moves only the replicas that were on it (${zones} zones)`, () => {
    const all = nodes(10, zones);
    const gone = "node-4";
    const before = placeVolume("vol", 3000, all, 3);
    const after = placeVolume("vol", 3000, all.filter((n) => n.id !== gone), 3);
    const moved = moves(before, after);
    const onGone = before.flat().filter((id) => id === gone).length;
    assert.equal(moved.length, onGone);
    for (const move of moved) assert.equal(move.from, gone);
  });
}

Deno.test("capacity weights are honoured", () => {
  const all: PlacementNode[] = [
    { id: "a", zone: "z", capacityBytes: tib },
    { id: "b", zone: "z", capacityBytes: tib },
    { id: "c", zone: "z", capacityBytes: 2 * tib },
  ];
  const counts = new Map<string, number>();
  const keys = 30_000;
  for (let i = 0; i < keys; i++) {
    const [id] = placeReplicas(`key-${i}`, all, 1);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  const share = (id: string) => (counts.get(id) ?? 0) / keys;
  assert.ok(Math.abs(share("a") - 0.25) < 0.02, `a ${share("a")}`);
  assert.ok(Math.abs(share("b") - 0.25) < 0.02, `b ${share("b")}`);
  assert.ok(Math.abs(share("c") - 0.5) < 0.02, `c ${share("c")}`);
});

Deno.test("not enough nodes", () => {
  assert.throws(
    () => placeReplicas("vol/0", nodes(2, 2), 3),
    (e: unknown) => e instanceof NotEnoughNodesError && /3/.test(e.message) && /2/.test(e.message),
  );
  // A node without capacity is not eligible.
  const withEmpty = [...nodes(2, 2), { id: "empty", zone: "zone-9", capacityBytes: 0 }];
  assert.throws(() => placeReplicas("vol/0", withEmpty, 3), NotEnoughNodesError);
  for (const segment of placeVolume("vol", 200, [...nodes(3, 3), withEmpty[2]], 3)) {
    assert.ok(!segment.includes("empty"));
  }
  assert.throws(() => chooseOwner("vol", [], new Map()), NotEnoughNodesError);
});

Deno.test("chooseOwner spreads owners evenly and is stable", () => {
  const all = nodes(3, 3);
  const owned = new Map<string, number>();
  for (let i = 0; i < 30; i++) {
    const owner = chooseOwner(`vol-${i}`, all, owned);
    owned.set(owner, (owned.get(owner) ?? 0) + 1);
  }
  assert.deepEqual([...owned.values()].sort(), [10, 10, 10]);
  // Equal counts: the highest score wins, whatever the candidate order.
  const empty = new Map<string, number>();
  const owner = chooseOwner("vol-x", all, empty);
  assert.equal(chooseOwner("vol-x", [...all].reverse(), empty), owner);
  const best = [...all].sort((a, b) => score("vol-x", b) - score("vol-x", a))[0].id;
  assert.equal(owner, best);
  // Fewest owned wins over score.
  const counts = new Map(all.map((n) => [n.id, n.id === "node-2" ? 0 : 5]));
  assert.equal(chooseOwner("vol-x", all, counts), "node-2");
});
