import assert from "node:assert/strict";
import {
  InflightWrites,
  inSyncNodes,
  maxTerm,
  minInSyncCount,
  setReplicaStates,
  splitBySegment,
  VersionCounter,
  versionsPerTerm,
  writeTargets,
} from "../../actors/volume/core.ts";
import { NodeWriteBatcher } from "../../actors/volume/batcher.ts";
import { EntryKind } from "../../actors/replica/wire.ts";
import type { VolumeLayout } from "../../protocol/schemas.ts";

const MiB = 1024 * 1024;

Deno.test("splitBySegment: within one segment, across two, across many", () => {
  assert.deepEqual(splitBySegment(8192, 4096, MiB), [
    { segment: 0, firstBlock: 2, blockCount: 1, byteStart: 0 },
  ]);
  assert.deepEqual(splitBySegment(MiB - 4096, 8192, MiB), [
    { segment: 0, firstBlock: 255, blockCount: 1, byteStart: 0 },
    { segment: 1, firstBlock: 0, blockCount: 1, byteStart: 4096 },
  ]);
  const pieces = splitBySegment(MiB / 2, 3 * MiB, MiB);
  assert.equal(pieces.length, 4);
  assert.equal(pieces.reduce((n, p) => n + p.blockCount * 4096, 0), 3 * MiB);
  assert.deepEqual(pieces.map((p) => p.byteStart), [0, MiB / 2, 3 * MiB / 2, 5 * MiB / 2]);
});

Deno.test("VersionCounter: increasing per segment, above every earlier epoch", () => {
  const versions = new VersionCounter();
  const a = versions.take(0, 1);
  const b = versions.take(0, 1);
  assert.ok(b > a);
  assert.equal(versions.take(1, 1), versionsPerTerm + 1, "segments count separately");
  // A later epoch always writes higher versions, even with a big counter before.
  versions.seed(0, 5 * versionsPerTerm + 1_000_000);
  assert.equal(versions.take(0, 5), 5 * versionsPerTerm + 1_000_001);
  assert.equal(versions.take(0, 6), 6 * versionsPerTerm + 1);
  assert.ok(Number.isSafeInteger(versions.take(0, maxTerm)));
  assert.throws(() => versions.take(0, maxTerm + 1), RangeError);
});

Deno.test("InflightWrites: overlap by block range, removal", () => {
  const inflight = new InflightWrites();
  const done = Promise.resolve();
  const a = inflight.add(10, 5, done);
  inflight.add(100, 1, done);
  assert.equal(inflight.overlapping(0, 10).length, 0);
  assert.equal(inflight.overlapping(14, 1).length, 1);
  assert.equal(inflight.overlapping(15, 85).length, 0);
  assert.equal(inflight.overlapping(0, 200).length, 2);
  inflight.remove(a);
  assert.equal(inflight.overlapping(0, 200).length, 1);
  assert.equal(inflight.size, 1);
});

const layout: VolumeLayout = {
  volumeId: "0123456789abcdef",
  term: 4,
  owner: "a",
  segments: [
    {
      replicas: [{ node: "a", state: "in-sync" }, { node: "b", state: "in-sync" }, {
        node: "c",
        state: "stale",
      }],
    },
    {
      replicas: [{ node: "b", state: "in-sync" }, { node: "c", state: "rebuilding" }, {
        node: "a",
        state: "in-sync",
      }],
    },
  ],
};

Deno.test("replica states: write targets skip stale, reads use in-sync only", () => {
  assert.deepEqual(writeTargets(layout.segments[0].replicas).map((r) => r.node), ["a", "b"]);
  assert.deepEqual(writeTargets(layout.segments[1].replicas).map((r) => r.node), ["b", "c", "a"]);
  assert.deepEqual(inSyncNodes(layout.segments[1].replicas), ["b", "a"]);
  assert.equal(minInSyncCount(layout), 2);
});

Deno.test("setReplicaStates changes only what it names, null when nothing changes", () => {
  const stale = setReplicaStates(layout, [{ segment: 1, node: "b", state: "stale" }])!;
  assert.equal(stale.segments[1].replicas[0].state, "stale");
  assert.equal(stale.segments[0].replicas[1].state, "in-sync");
  assert.equal(setReplicaStates(layout, [{ segment: 0, node: "c", state: "stale" }]), null);
  const healed = setReplicaStates(layout, [{ segment: 0, node: "c", state: "in-sync" }])!;
  assert.equal(healed.segments[0].replicas[2].state, "in-sync");
  assert.equal(setReplicaStates(layout, [{ segment: 0, node: "a", state: "in-sync" }]), null);
});

Deno.test("NodeWriteBatcher: entries of one tick share a batch; later ones wait for a slot", async () => {
  const sent: { epoch: number; count: number }[] = [];
  const releases: (() => void)[] = [];
  const batcher = new NodeWriteBatcher((epoch, entries) => {
    sent.push({ epoch, count: entries.length });
    return new Promise<void>((resolve) => releases.push(resolve));
  }, () => 7);
  const entry = (i: number) => ({
    segment: 0,
    firstBlock: i,
    blockCount: 1,
    kind: EntryKind.data,
    version: i + 1,
    data: new Uint8Array(4096).fill(i),
  });
  const first = Array.from({ length: 5 }, (_, i) => batcher.enqueue(entry(i)));
  await Promise.resolve();
  assert.deepEqual(sent, [{ epoch: 7, count: 5 }]);
  const second = [batcher.enqueue(entry(5))];
  await Promise.resolve();
  const third = [batcher.enqueue(entry(6)), batcher.enqueue(entry(7))];
  await new Promise((r) => setTimeout(r, 0));
  // Two batches may be in flight; the third waits for a slot and takes both entries.
  assert.deepEqual(sent.map((s) => s.count), [5, 1]);
  releases.shift()!();
  await Promise.all(first);
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(sent.map((s) => s.count), [5, 1, 2]);
  releases.forEach((release) => release());
  await Promise.all([...second, ...third]);
});

Deno.test("NodeWriteBatcher: a failed batch rejects every entry in it", async () => {
  const batcher = new NodeWriteBatcher(() => Promise.reject(new Error("node gone")), () => 1);
  const results = await Promise.allSettled(
    [0, 1, 2].map((i) =>
      batcher.enqueue({
        segment: 0,
        firstBlock: i,
        blockCount: 1,
        kind: EntryKind.zero,
        version: 1,
      })
    ),
  );
  assert.ok(results.every((r) => r.status === "rejected"));
});
