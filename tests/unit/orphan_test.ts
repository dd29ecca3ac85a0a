/**
 * Orphan cleanup per segment: a node whose replica of a segment was removed from the layout
 * (replaced while it was away) deletes that segment file, at start and on its periodic check
 * (node/runtime.ts, host.ts planSegmentFiles), on the second look; it never deletes a segment
 * the layout lists for it in any state, nor anything while the metadata cannot be read.
 * Real NodeRuntimes on the simulator's ports (sim/cluster.ts).
 */
import assert from "node:assert/strict";
import { kvNode, SimCluster } from "../../sim/cluster.ts";
import { MemoryMetadata } from "../../actors/metadata_memory.ts";
import {
  planSegmentFiles,
  segmentCheckIntervalMs,
  segmentFileName,
} from "../../actors/replica/host.ts";
import { encodeJson } from "../../protocol/control.ts";
import { subjects } from "../../protocol/subjects.ts";
import type { ControlReply, VolumeInfo, VolumeLayout } from "../../protocol/schemas.ts";

const segmentBytes = 64 * 1024;

async function setUp(seed: number) {
  const cluster = new SimCluster({ seed, nodes: 4 });
  const { scheduler, network } = cluster;
  for (const id of cluster.nodes.keys()) scheduler.schedule(0, () => void cluster.start(id), id);
  await scheduler.runFor(200);
  const metadata = new MemoryMetadata(cluster.kv);
  const drive = <T>(promise: Promise<T>) => scheduler.drive(promise);
  const created = (async () => {
    const raw = await network.endpoint("admin").request(
      subjects.control("volume.create"),
      encodeJson({ name: "v", sizeBytes: 2 * segmentBytes, segmentBytes, replicas: 3 }),
      30_000,
    );
    const reply = JSON.parse(new TextDecoder().decode(raw)) as ControlReply<VolumeInfo>;
    if (!reply.ok) throw new Error(reply.error.message);
    return reply.result;
  })();
  const info = await drive(created);
  await scheduler.runFor(3_000); // the owner serves
  const layout = async () => (await drive(metadata.getLayout("v")))!;
  // A node other than the owner holding replicas of both segments (4 nodes, 6 replicas).
  const l = (await layout()).value;
  const node = [...cluster.nodes.keys()].find((n) =>
    n !== l.owner && l.segments.every((s) => s.replicas.some((r) => r.node === n))
  )!;
  assert.ok(node, "a node holds both segments");
  const exists = async (segment: number) => {
    const files = await cluster.nodes.get(node)!.disk.list(`/${node}/segments/${info.id}`);
    return files.includes(segmentFileName(segment));
  };
  /** The layout with `node` no longer in segment 1 (replaced), and stale in segment 0. */
  const replaceInSegment1 = async () => {
    const current = await layout();
    const next: VolumeLayout = {
      ...current.value,
      segments: current.value.segments.map((s, i) => ({
        replicas: i === 1
          ? s.replicas.filter((r) => r.node !== node)
          : s.replicas.map((r) => r.node === node ? { ...r, state: "stale" as const } : r),
      })),
    };
    await drive(metadata.casLayout("v", next, current.revision));
  };
  return { cluster, scheduler, network, info, node, exists, replaceInSegment1 };
}

Deno.test("a node that returns after its replica of a segment was replaced deletes that segment file only", async () => {
  const { cluster, scheduler, node, info, exists, replaceInSegment1 } = await setUp(21);
  assert.ok(await exists(0) && await exists(1));
  cluster.kill(node);
  await replaceInSegment1();
  scheduler.schedule(0, () => void cluster.start(node));
  await scheduler.runFor(segmentCheckIntervalMs / 2);
  assert.ok(
    await exists(1),
    "the first look only notes the orphan (a replica may be on its way in)",
  );
  await scheduler.runFor(2 * segmentCheckIntervalMs);
  assert.ok(!await exists(1), "the orphaned segment file is deleted");
  assert.ok(await exists(0), "the segment the layout still lists (stale) is kept");
  const host = cluster.nodes.get(node)!.runtime!.host;
  assert.deepEqual(host.segmentsOf(info.id), [0]);
  // Still gone after more checks, still kept: the plan is stable.
  await scheduler.runFor(3 * segmentCheckIntervalMs);
  assert.ok(!await exists(1) && await exists(0));
});

Deno.test("orphan cleanup also runs periodically, and never while the metadata cannot be read", async () => {
  const { network, scheduler, node, exists, replaceInSegment1 } = await setUp(22);
  // The node is cut off from the KV (it still talks to the other nodes): no check may act.
  network.blockLink(node, kvNode);
  await replaceInSegment1();
  await scheduler.runFor(5 * segmentCheckIntervalMs);
  assert.ok(await exists(1), "nothing deleted while the metadata is unreadable");
  network.heal();
  await scheduler.runFor(3 * segmentCheckIntervalMs);
  assert.ok(!await exists(1), "the periodic check deletes the orphan once it can read the layout");
  assert.ok(await exists(0));
});

Deno.test("planSegmentFiles: listed segments in any state are kept; deleted ids go; unknown layouts decide nothing", () => {
  const held = {
    good: new Map([["v1", [0, 1, 2, 3]], ["gone", [0]], ["new", [0]]]),
    unreadable: new Map([["v1", [4]]]),
  };
  const plan = planSegmentFiles(held, [
    {
      volumeId: "v1",
      name: "one",
      segmentBytes: 65536,
      replicas: new Map([[0, "in-sync"], [1, "stale"], [2, "rebuilding"]] as const),
    },
    { volumeId: "new", name: "two", segmentBytes: 65536, replicas: null },
  ]);
  assert.deepEqual(plan.deleteVolumes, ["gone"]);
  assert.deepEqual(plan.orphans, [{ volume: "v1", segment: 3 }, { volume: "v1", segment: 4 }]);
  assert.deepEqual(plan.recreate, []);
  assert.deepEqual(plan.missing, []);
});
