/**
 * A block rotten on a segment's last in-sync copy, while a stale copy still holds that very
 * version whole: catch-up takes the block from the stale copy (versions are unique, and the
 * checksum proves the bytes), so the target gets back in sync. Without spares it failed
 * CORRUPT every time, and the segment stayed at one in-sync copy for good (simulator seeds
 * 3011 and 3063).
 */
import assert from "node:assert/strict";
import { inProcessLink } from "../harness/replica_link.ts";
import { MemoryDisk } from "../../actors/memory_disk.ts";
import { ReplicaHost, segmentFileName } from "../../actors/replica/host.ts";
import { segmentFileSizeBytes } from "../../actors/replica/segment_file.ts";
import { catchUp, fetchVersions } from "../../actors/volume/reconcile.ts";
import { ReplicaStream } from "../../actors/volume/stream.ts";
import { EntryKind, type WriteEntry } from "../../actors/replica/wire.ts";
import { CairnError } from "../../protocol/errors.ts";

const quiet = { info() {}, warn() {}, error() {} };
const volumeId = "00000000000000bb";
const segmentBytes = 64 * 1024;
const blockCount = segmentBytes / 4096;

const write = (block: number, version: number, fill: number): WriteEntry => ({
  segment: 0,
  firstBlock: block,
  blockCount: 1,
  kind: EntryKind.data,
  version,
  data: new Uint8Array(4096).fill(fill),
});

/** a: in sync, block 5 rotten; b: stale (missed the write to block 6), block 5 whole; c: new. */
async function hosts() {
  const disks = new Map(["a", "b", "c"].map((n, i) => [n, new MemoryDisk({ seed: 30 + i })]));
  const byNode = new Map<string, ReplicaHost>();
  for (const [node, disk] of disks) {
    const host = new ReplicaHost(`/${node}`, disk, quiet);
    await host.loadAll();
    await host.createSegments(volumeId, segmentBytes, [0], 1);
    byNode.set(node, host);
  }
  for (const node of ["a", "b"]) {
    await byNode.get(node)!.writeEntries(volumeId, 1, [write(5, 7, 55)]);
  }
  await byNode.get("a")!.writeEntries(volumeId, 1, [write(6, 8, 66)]);
  const dataStart = segmentFileSizeBytes(segmentBytes, 4096) - segmentBytes;
  disks.get("a")!.corrupt(
    `/a/segments/${volumeId}/${segmentFileName(0)}`,
    dataStart + 5 * 4096 + 100,
    8,
  );
  const streams = new Map(
    [...byNode].map((
      [node, host],
    ) => [node, new ReplicaStream(node, inProcessLink(host, volumeId))]),
  );
  const link = (node: string) => streams.get(node)!;
  // The owner's write stream to the target starts with a fence, as a catch-up's does.
  const fenced = await link("c").call("fence", link("c").fenceBody(1, [0]));
  assert.equal(fenced[0], 0);
  const input = { name: "v", link, log: quiet };
  const sources = new Map([["a", await fetchVersions(link("a"), 1, 0, blockCount)]]);
  const target = await fetchVersions(link("c"), 1, 0, blockCount);
  return { byNode, input, sources, target };
}

Deno.test("catch-up takes a block rotten on every source from a stale copy of the same version", async () => {
  const { byNode, input, sources, target } = await hosts();
  const copied = await catchUp(input, 1, 0, blockCount, sources, "c", target, true, {}, [
    "a",
    "b",
    "c",
  ]);
  assert.equal(copied, 2);
  const read = await byNode.get("c")!.readBlocks(volumeId, {
    segment: 0,
    epoch: 1,
    firstBlock: 5,
    blockCount: 2,
  });
  assert.deepEqual([...read.versions], [7, 8]);
  assert.deepEqual(read.states, ["written", "written"]);
  assert.equal(read.data[0], 55, "block 5 came whole from the stale copy");
  assert.equal(read.data[4096], 66);
});

Deno.test("without a spare holding the version, the rotten block fails the copy (CORRUPT)", async () => {
  const { input, sources, target } = await hosts();
  await assert.rejects(
    catchUp(input, 1, 0, blockCount, sources, "c", target, true, {}, ["a", "c"]),
    (err) => err instanceof CairnError && err.code === "CORRUPT",
  );
});
