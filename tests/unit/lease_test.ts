/**
 * Read leases and failover decisions, pure: a newer owner's fence waits out the older
 * owner's lease and stops its renewals; a restarted replica waits one longest lease; the
 * owner counts its lease short by the clock drift margin; the successor is the same on
 * every node.
 */
import assert from "node:assert/strict";
import { LeaseTable, maxLeaseMs } from "../../actors/replica/lease.ts";
import { maxClockDriftFraction, OwnerLeases } from "../../actors/volume/lease.ts";
import { chooseSuccessor, decideVolume } from "../../actors/supervisor/core.ts";

Deno.test("replica leases: a newer term's fence waits out the older lease and stops renewals", () => {
  const leases = new LeaseTable(-10_000); // started long ago: no start-up wait
  assert.deepEqual(leases.grant("v", 3, 2000, 0), { granted: true, untilMs: 2000 });
  // Term 4 fences at t=500: it may proceed only when term 3's lease is over.
  assert.equal(leases.fenceReadyAtMs("v", 4, 500), 2000);
  // Meanwhile term 3 cannot renew (else the fence could wait forever).
  assert.equal(leases.grant("v", 3, 2000, 600).granted, false);
  leases.fenced("v", 4);
  assert.equal(leases.grant("v", 4, 2000, 2100).granted, true);
  assert.equal(
    leases.grant("v", 3, 2000, 2200).granted,
    false,
    "an older term never gets one back",
  );
  // The same term re-fencing (a catch-up) does not wait for its own lease.
  assert.equal(leases.fenceReadyAtMs("v", 4, 2300), -10_000 + maxLeaseMs);
  // A released lease (duration 0) lets the next owner in at once.
  leases.grant("v", 4, 0, 3000);
  assert.equal(leases.fenceReadyAtMs("v", 5, 3000), 3000);
  // Grants are capped at the longest lease.
  assert.equal((leases.grant("w", 1, 60_000, 0) as { untilMs: number }).untilMs, maxLeaseMs);
});

Deno.test("replica leases: a replica that just started waits one longest lease before any fence", () => {
  const leases = new LeaseTable(1000);
  assert.equal(leases.fenceReadyAtMs("v", 9, 1000), 1000 + maxLeaseMs);
  assert.equal(leases.fenceReadyAtMs("v", 9, 1000 + maxLeaseMs + 1), 1000 + maxLeaseMs);
});

Deno.test("owner leases: counted short by the drift margin; reads need every in-sync node's", () => {
  const owner = new OwnerLeases();
  owner.granted("a", 100, 2000);
  owner.granted("b", 100, 2000);
  const end = 100 + 2000 * (1 - maxClockDriftFraction);
  assert.ok(owner.holdsAll(["a", "b"], end - 1));
  assert.ok(!owner.holdsAll(["a", "b"], end), "the owner stops trusting it before the replica");
  assert.ok(!owner.holdsAll(["a", "c"], 200), "no lease from c: no reads");
});

Deno.test("failover: the successor holds the most in-sync segments, and every node agrees", () => {
  const candidates = [
    { node: "n2", inSyncSegments: 3 },
    { node: "n3", inSyncSegments: 4 },
    { node: "n4", inSyncSegments: 4 },
  ];
  const chosen = chooseSuccessor("00112233445566aa", candidates);
  assert.ok(chosen === "n3" || chosen === "n4");
  assert.equal(chooseSuccessor("00112233445566aa", [...candidates].reverse()), chosen);
  assert.equal(chooseSuccessor("x", []), null);
  const record = { name: "v", volumeId: "00112233445566aa", owner: "n1", term: 7 };
  // Only the successor starts, and only while the owner is recorded down.
  assert.deepEqual(decideVolume(chosen!, record, null, { ownerDown: true, successor: chosen }), {
    kind: "start",
    name: "v",
    expected: { volumeId: record.volumeId, owner: "n1", term: 7 },
  });
  assert.equal(
    decideVolume("n2", record, null, { ownerDown: true, successor: chosen }).kind,
    "none",
  );
  assert.equal(
    decideVolume(chosen!, record, null, { ownerDown: false, successor: chosen }).kind,
    "none",
  );
});
