/**
 * A takeover after a power loss of every copy of a segment (every copy suspect, all kept):
 * an unflushed cached write torn in place on one copy (its version's metadata landed, not
 * its data) must not become the block's only newest version.
 */
import assert from "node:assert/strict";
import { inProcessLink } from "../harness/replica_link.ts";
import { MemoryKv, MemoryMetadata } from "../../actors/metadata_memory.ts";
import { MemoryDisk } from "../../actors/memory_disk.ts";
import { ReplicaHost, segmentFileName } from "../../actors/replica/host.ts";
import { segmentFileSizeBytes } from "../../actors/replica/segment_file.ts";
import { reconcileVolume } from "../../actors/volume/reconcile.ts";
import { ReplicaStream } from "../../actors/volume/stream.ts";
import { EntryKind, type WriteEntry } from "../../actors/replica/wire.ts";
import type { VolumeLayout } from "../../protocol/schemas.ts";
import type { Clock } from "../../actors/ports.ts";

const quiet = { info() {}, warn() {}, error() {} };
const volumeId = "00000000000000aa";
const segmentBytes = 64 * 1024;
const stillClock: Clock = { nowMs: () => 0, setTimer: () => () => {} };

const entry = (version: number, fill: number, cached = false): WriteEntry => ({
  segment: 0,
  firstBlock: 5,
  blockCount: 1,
  kind: EntryKind.data,
  version,
  data: new Uint8Array(4096).fill(fill),
  ...(cached ? { cached } : {}),
});

/** Three (or two) hosts with segment 0 of the volume, before the power loss. */
async function freshHosts(nodes: string[], seed: number) {
  const disks = new Map(nodes.map((n, i) => [n, new MemoryDisk({ seed: seed + i })]));
  const before = new Map<string, ReplicaHost>();
  for (const node of nodes) {
    const host = new ReplicaHost(`/${node}`, disks.get(node)!, quiet, { bootId: "boot-1" });
    await host.loadAll();
    await host.createSegments(volumeId, segmentBytes, [0], 1);
    before.set(node, host);
  }
  return { disks, before };
}

/** The node's host after the power loss (a new boot on the same disk). */
async function restarted(node: string, disk: MemoryDisk): Promise<ReplicaHost> {
  const host = new ReplicaHost(`/${node}`, disk, quiet, { bootId: "boot-2" });
  await host.loadAll();
  return host;
}

/** Tears block 5 on the node's disk: its metadata stays, its data fails the checksum. */
function tearBlock5(node: string, disk: MemoryDisk): void {
  const dataStart = segmentFileSizeBytes(segmentBytes, 4096) - segmentBytes;
  disk.corrupt(
    `/${node}/segments/${volumeId}/${segmentFileName(0)}`,
    dataStart + 5 * 4096 + 100,
    8,
  );
}

/** The takeover's reconcile with every copy kept in sync (all suspect after the power loss). */
async function takeOver(nodes: string[], hosts: Map<string, ReplicaHost>) {
  const layout: VolumeLayout = {
    volumeId,
    term: 2,
    owner: "a",
    segments: [{ replicas: nodes.map((node) => ({ node, state: "in-sync" as const })) }],
  };
  const metadata = new MemoryMetadata(new MemoryKv());
  await metadata.createLayout("v", layout);
  const streams = new Map(
    nodes.map((n) => [n, new ReplicaStream(n, inProcessLink(hosts.get(n)!, volumeId))]),
  );
  return await reconcileVolume({
    name: "v",
    layout,
    segmentBytes,
    metadata,
    link: (node) => streams.get(node)!,
    log: quiet,
    clock: stillClock,
  });
}

Deno.test("takeover after a power loss of every copy: a torn unflushed write gives way to the newest good version", async () => {
  const nodes = ["a", "b", "c"];
  const { disks, before } = await freshHosts(nodes, 40);
  // Block 5: version 100 durable everywhere, then version 200 cached (never flushed).
  for (const host of before.values()) {
    await host.writeEntries(volumeId, 1, [entry(100, 0x10)]);
    await host.writeEntries(volumeId, 1, [entry(200, 0x20, true)], undefined, 0, true);
  }
  // Every machine loses power: b and c lose the cached write; a keeps it, torn afterwards
  // (its metadata landed, its data did not: the block fails its checksum).
  disks.get("a")!.crash({ keepPendingProbability: 1, tearWrites: false });
  for (const node of ["b", "c"]) disks.get(node)!.crash({ keepPendingProbability: 0 });
  const hosts = new Map<string, ReplicaHost>();
  for (const node of nodes) hosts.set(node, await restarted(node, disks.get(node)!));
  tearBlock5("a", disks.get("a")!);
  assert.deepEqual([...(await hosts.get("a")!.inspectBlocks(volumeId, 0, 5, 1)).states], [
    "corrupt",
  ]);

  const result = await takeOver(nodes, hosts);
  // Every copy stays in sync and holds version 100, the newest one a copy holds whole.
  assert.deepEqual(
    result.layout.segments[0].replicas.map((r) => r.state),
    ["in-sync", "in-sync", "in-sync"],
  );
  for (const node of nodes) {
    const read = await hosts.get(node)!.inspectBlocks(volumeId, 0, 5, 1);
    assert.deepEqual([...read.versions], [100], `${node}'s version`);
    assert.deepEqual([...read.states], ["written"], `${node}'s block`);
    assert.equal(read.data[0], 0x10, `${node}'s data`);
  }
});

Deno.test("takeover after a power loss of every copy: a block torn on every copy reads CORRUPT, and the copies stay in sync", async () => {
  // Sim seed 1047: two copies each tore a different unflushed cached write of one block.
  // Both torn versions were dropped as lost, leaving no version to take: the copy of
  // "version -1" failed on both, the segment lost every in-sync copy and no later owner
  // could take the volume over.
  const nodes = ["a", "b"];
  const { disks, before } = await freshHosts(nodes, 50);
  // Block 5: version 100 durable on both, then 200 cached on both, then 300 cached on a.
  for (const host of before.values()) {
    await host.writeEntries(volumeId, 1, [entry(100, 0x10)]);
    await host.writeEntries(volumeId, 1, [entry(200, 0x20, true)], undefined, 0, true);
  }
  await before.get("a")!.writeEntries(volumeId, 1, [entry(300, 0x30, true)], undefined, 0, true);
  const hosts = new Map<string, ReplicaHost>();
  for (const node of nodes) {
    // Power loss; then each copy's newest write is torn (metadata landed, data did not).
    disks.get(node)!.crash({ keepPendingProbability: 1, tearWrites: false });
    hosts.set(node, await restarted(node, disks.get(node)!));
    tearBlock5(node, disks.get(node)!);
  }
  assert.deepEqual([...(await hosts.get("a")!.inspectBlocks(volumeId, 0, 5, 1)).versions], [300]);
  assert.deepEqual([...(await hosts.get("b")!.inspectBlocks(volumeId, 0, 5, 1)).versions], [200]);

  const result = await takeOver(nodes, hosts);
  assert.deepEqual(result.layout.segments[0].replicas.map((r) => r.state), ["in-sync", "in-sync"]);
  for (const node of nodes) {
    const read = await hosts.get(node)!.inspectBlocks(volumeId, 0, 5, 1);
    assert.deepEqual([...read.states], ["corrupt"], `${node}'s block reads CORRUPT, never wrong`);
  }
});

Deno.test("takeover after a power loss of every copy: a write torn on every copy that has it gives way to the newest good version", async () => {
  // Sim seed 1530: a and b both tore the same unflushed cached write (version 200), c lost
  // it and holds 100 whole. 200 was kept, as "held by another copy", though no copy holds
  // it whole: c could not be copied it and went stale, and the block read CORRUPT.
  const nodes = ["a", "b", "c"];
  const { disks, before } = await freshHosts(nodes, 60);
  for (const host of before.values()) {
    await host.writeEntries(volumeId, 1, [entry(100, 0x10)]);
    await host.writeEntries(volumeId, 1, [entry(200, 0x20, true)], undefined, 0, true);
  }
  const hosts = new Map<string, ReplicaHost>();
  for (const node of nodes) {
    disks.get(node)!.crash(
      node === "c" ? { keepPendingProbability: 0 } : {
        keepPendingProbability: 1,
        tearWrites: false,
      },
    );
    hosts.set(node, await restarted(node, disks.get(node)!));
    if (node !== "c") tearBlock5(node, disks.get(node)!);
  }
  const result = await takeOver(nodes, hosts);
  assert.deepEqual(
    result.layout.segments[0].replicas.map((r) => r.state),
    ["in-sync", "in-sync", "in-sync"],
  );
  for (const node of nodes) {
    const read = await hosts.get(node)!.inspectBlocks(volumeId, 0, 5, 1);
    assert.deepEqual([...read.versions], [100], `${node}'s version`);
    assert.deepEqual([...read.states], ["written"], `${node}'s block`);
    assert.equal(read.data[0], 0x10, `${node}'s data`);
  }
});
