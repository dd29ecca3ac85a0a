import assert from "node:assert/strict";
import {
  AckLog,
  checkFlushDurable,
  type FlushDurabilityInput,
  inSyncThroughout,
  type LayoutReplicas,
  LayoutTimeline,
  stayedInSync,
  type SyncedBlock,
  SyncedMemo,
} from "../../sim/flush_durability.ts";
import { SimCluster } from "../../sim/cluster.ts";
import { ReplicaHost } from "../../actors/replica/host.ts";
import { EntryKind } from "../../actors/replica/wire.ts";
import { blockImage, writeIdOfWhole } from "../../sim/client.ts";
import { blockSizeBytes } from "../../protocol/limits.ts";

const blocksPerSegment = 4;

/** A layout of two segments; `states` gives each node's state in both. */
function layout(states: Record<string, string>): LayoutReplicas {
  const replicas = Object.entries(states).map(([node, state]) => ({ node, state }));
  return { segments: [{ replicas }, { replicas }] };
}

/** A FLUSH from 100 to 110 ms over block 1 (segment 0), acknowledged as write 7 sent at 50 ms. */
function input(
  synced: Record<string, SyncedBlock | undefined>,
  more: Partial<FlushDurabilityInput> = {},
): FlushDurabilityInput {
  return {
    client: "c1",
    startMs: 100,
    endMs: 110,
    acked: new Map([[1, { writeId: 7, startMs: 50 }]]),
    inSync: new Map([[0, ["n1", "n2"]], [1, ["n1", "n2"]]]),
    powerLossesMs: new Map(),
    blocksPerSegment,
    synced: (node) => synced[node],
    ...more,
  };
}

Deno.test("flush durability: a replica in sync that has not synced an acknowledged write fails", () => {
  const result = checkFlushDurable(input({ n1: 7, n2: 3 }));
  assert.equal(result.blocksChecked, 1);
  assert.equal(result.problems.length, 1);
  assert.match(result.problems[0], /FLUSH by c1 .* n2 segment 0, in sync throughout/);
  assert.match(result.problems[0], /1 \(acknowledged write 7, synced write 3\)/);
  assert.match(
    checkFlushDurable(input({ n1: 7, n2: "missing" })).problems[0],
    /no readable segment file/,
  );
});

Deno.test("flush durability: a newer write synced covers an older acknowledged one", () => {
  const result = checkFlushDurable(input({ n1: 7, n2: 9 }));
  assert.deepEqual(result.problems, []);
  assert.equal(result.blocksChecked, 2);
});

Deno.test("flush durability: a power loss since the write began excuses that node only", () => {
  const lossAt = (t: number) => input({ n1: 7, n2: 0 }, { powerLossesMs: new Map([["n2", [t]]]) });
  const excused = checkFlushDurable(lossAt(60));
  assert.deepEqual(excused.problems, []);
  assert.equal(excused.exemptPowerLoss, 1);
  assert.equal(excused.blocksChecked, 1);
  // Before the write was sent, or after the OK: no excuse.
  assert.equal(checkFlushDurable(lossAt(40)).problems.length, 1);
  assert.equal(checkFlushDurable(lossAt(111)).problems.length, 1);
});

Deno.test("flush durability: rotten copies are not judged; unknown ones are listed to read", () => {
  const rotten = checkFlushDurable(input({ n1: 7, n2: "corrupt" }));
  assert.deepEqual(rotten.problems, []);
  assert.equal(rotten.unjudgedCorrupt, 1);
  const unread = checkFlushDurable(input({ n1: 7, n2: undefined }));
  assert.deepEqual(unread.problems, []);
  assert.deepEqual([...unread.unread], [["n2", [1]]]);
});

Deno.test("flush durability: only replicas in sync in every layout in effect are held to it", () => {
  const timeline = new LayoutTimeline();
  timeline.record(0, layout({ n1: "in-sync", n2: "in-sync", n3: "stale" }));
  timeline.record(105, layout({ n1: "in-sync", n2: "stale", n3: "stale" }));
  timeline.record(200, layout({ n1: "in-sync", n2: "in-sync", n3: "in-sync" }));
  assert.equal(timeline.during(100, 110).length, 2);
  assert.deepEqual(inSyncThroughout(timeline.during(100, 110)).get(0), ["n1"]);
  assert.deepEqual(inSyncThroughout(timeline.during(10, 20)).get(1), ["n1", "n2"]);
  assert.deepEqual(inSyncThroughout(timeline.during(201, 300)).get(0), ["n1", "n2", "n3"]);
  // One written at the very start counts both ways: the one before it is in effect too.
  assert.deepEqual(inSyncThroughout(timeline.during(200, 300)).get(0), ["n1"]);
  assert.equal(stayedInSync(timeline.during(10, 300), "n1", 1), true);
  assert.equal(stayedInSync(timeline.during(10, 300), "n2", 1), false);
  assert.deepEqual(inSyncThroughout([]), new Map());
});

Deno.test("flush durability: AckLog snapshots stay as they were; SyncedMemo forgets broken copies", () => {
  const acks = new AckLog();
  acks.acknowledged(3, { writeId: 5, startMs: 1 });
  const before = acks.snapshot();
  acks.acknowledged(3, { writeId: 6, startMs: 2 });
  acks.acknowledged(3, { writeId: 4, startMs: 3 }); // older: ignored
  assert.equal(before.get(3)?.writeId, 5);
  assert.equal(acks.snapshot().get(3)?.writeId, 6);

  const memo = new SyncedMemo();
  memo.record("n1", 0, 1, 7, 100);
  memo.record("n1", 0, 1, 5, 120);
  memo.record("n2", 0, 1, 7, 100);
  assert.equal(memo.get("n1", 0, 1), 7);
  const asked: number[] = [];
  memo.forgetUnless((node, _segment, sinceMs) => {
    asked.push(sinceMs);
    return node === "n1";
  });
  assert.deepEqual(asked, [100, 100]);
  assert.equal(memo.get("n1", 0, 1), 7);
  assert.equal(memo.get("n2", 0, 1), undefined);
});

Deno.test("SimCluster.durableBlocks reads what is synced: not a cached write, then it once flushed", async () => {
  const cluster = new SimCluster({ seed: 1, nodes: 1 });
  const disk = cluster.nodes.get("n1")!.disk;
  const quiet = { info: () => {}, warn: () => {}, error: () => {} };
  const host = new ReplicaHost("/n1", disk, quiet, { journalCheckpointBytes: 1 << 30 });
  await host.loadAll();
  const volume = "vol-1";
  await host.createSegments(volume, blocksPerSegment * blockSizeBytes, [0, 1], 1);
  const write = (block: number, writeId: number, version: number, cached: boolean) =>
    host.writeEntries(
      volume,
      1,
      [{
        segment: Math.floor(block / blocksPerSegment),
        firstBlock: block % blocksPerSegment,
        blockCount: 1,
        kind: EntryKind.data,
        version,
        data: blockImage(writeId, block),
      }],
      undefined,
      0,
      cached,
    );
  const synced = async (blocks: number[]) => {
    const read = await cluster.durableBlocks("n1", volume, blocks, blocksPerSegment);
    return blocks.map((b) => {
      const copy = read.get(b);
      return copy?.state === "written" ? writeIdOfWhole(copy.data, b) : copy ? 0 : "missing";
    });
  };

  await write(1, 11, 1, false); // durable at once (journal synced)
  await write(5, 12, 2, true); // cached: in the page cache only
  assert.deepEqual(await synced([1, 5]), [11, 0]);
  await host.flushVolume(volume);
  assert.deepEqual(await synced([1, 5]), [11, 12]);
  // A checkpoint moves both into synced segment files and drops the journal: still there.
  await write(1, 13, 3, true);
  await host.checkpoint();
  assert.deepEqual(await synced([1, 5, 9]), [13, 12, "missing"]);
  // The reads never touched the node's own disk: its files are as they were.
  assert.equal(host.segmentsOf(volume).length, 2);
  await host.close();
});
