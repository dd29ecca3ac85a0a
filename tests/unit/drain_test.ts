/**
 * Drain and ok-to-stop, pure parts: a drained node is a failover successor only where no
 * undrained node holds as much, and `stopRisks` says exactly which volumes a stop would
 * hurt and how. tests/integration/drain_test.ts drains a real cluster.
 */
import assert from "node:assert/strict";
import { chooseSuccessor } from "../../actors/placement/rendezvous.ts";
import { stopRisks, type VolumeView } from "../../actors/control/ok_to_stop.ts";
import type { ReplicaState, VolumeLayout } from "../../protocol/schemas.ts";

Deno.test("drain: a drained node succeeds a dead owner only when no undrained node holds as much", () => {
  // Whichever node the hash prefers, drained loses the tie.
  for (const volumeId of ["00112233445566aa", "ffeeddccbbaa9988", "0123456789abcdef"]) {
    const both = [
      { node: "n2", inSyncSegments: 4, drained: true },
      { node: "n3", inSyncSegments: 4 },
    ];
    assert.equal(chooseSuccessor(volumeId, both), "n3", volumeId);
    assert.equal(chooseSuccessor(volumeId, [...both].reverse()), "n3", volumeId);
  }
  // Coverage first: a drained node in sync everywhere beats an undrained one that is not
  // (a volume served by a drained node is better than one missing segments).
  assert.equal(
    chooseSuccessor("00112233445566aa", [
      { node: "n2", inSyncSegments: 4, drained: true },
      { node: "n3", inSyncSegments: 3 },
    ]),
    "n2",
  );
  assert.equal(
    chooseSuccessor("00112233445566aa", [{ node: "n2", inSyncSegments: 4, drained: true }]),
    "n2",
  );
});

function volume(
  name: string,
  owner: string,
  minInSync: number,
  segments: [string, ReplicaState][][],
): VolumeView {
  const layout: VolumeLayout = {
    volumeId: "00112233445566aa",
    term: 3,
    owner,
    home: owner,
    segments: segments.map((replicas) => ({
      replicas: replicas.map(([node, state]) => ({ node, state })),
    })),
  };
  return { name, minInSync, layout };
}

Deno.test("ok-to-stop: owning, falling below the minimum, or the only copy are risks; nothing else", () => {
  const live = (n: string) => n !== "n4";
  const healthy = volume("healthy", "n2", 2, [
    [["n1", "in-sync"], ["n2", "in-sync"], ["n3", "in-sync"]],
  ]);
  assert.deepEqual(stopRisks("n1", [healthy], live), []);

  const owned = volume("owned", "n1", 2, [[["n1", "in-sync"], ["n2", "in-sync"], [
    "n3",
    "in-sync",
  ]]]);
  assert.deepEqual(stopRisks("n1", [owned], live).map((r) => r.kind), ["owner"]);
  assert.match(stopRisks("n1", [owned], live)[0].detail, /drain n1 first/);

  // n3 is stale: without n1, segment 0 keeps one in-sync replica, below the minimum of 2.
  const thin = volume("thin", "n2", 2, [
    [["n1", "in-sync"], ["n2", "in-sync"], ["n3", "stale"]],
    [["n1", "in-sync"], ["n2", "in-sync"], ["n3", "in-sync"]],
  ]);
  const thinRisks = stopRisks("n1", [thin], live);
  assert.deepEqual(thinRisks.map((r) => r.kind), ["below-min-in-sync"]);
  assert.match(thinRisks[0].detail, /segments 0 keep fewer than 2/);

  // The other in-sync copy is on a down node: n1 holds the only live one; worst listed first.
  const only = volume("only", "n1", 1, [[["n1", "in-sync"], ["n4", "in-sync"]]]);
  assert.deepEqual(stopRisks("n1", [only], live).map((r) => r.kind), ["only-copy", "owner"]);

  // A replica of n1 that is not in sync costs nothing to stop.
  const stale = volume("stale", "n2", 2, [[["n1", "stale"], ["n2", "in-sync"], ["n3", "in-sync"]]]);
  assert.deepEqual(stopRisks("n1", [stale], live), []);
  // Another node's view: n2 owns all three, and without it `stale` keeps only n3 in sync.
  assert.deepEqual(
    stopRisks("n2", [healthy, thin, stale], live).map((r) => `${r.volume} ${r.kind}`),
    [
      "healthy owner",
      "thin below-min-in-sync",
      "thin owner",
      "stale below-min-in-sync",
      "stale owner",
    ],
  );
});
