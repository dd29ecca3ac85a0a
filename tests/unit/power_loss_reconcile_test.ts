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

Deno.test("takeover after a power loss of every copy: a torn unflushed write gives way to the newest good version", async () => {
  const nodes = ["a", "b", "c"];
  const disks = new Map(nodes.map((n, i) => [n, new MemoryDisk({ seed: 40 + i })]));
  const before = new Map<string, ReplicaHost>();
  for (const node of nodes) {
    const host = new ReplicaHost(`/${node}`, disks.get(node)!, quiet, { bootId: "boot-1" });
    await host.loadAll();
    await host.createSegments(volumeId, segmentBytes, [0], 1);
    before.set(node, host);
  }
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
  for (const node of nodes) {
    const host = new ReplicaHost(`/${node}`, disks.get(node)!, quiet, { bootId: "boot-2" });
    await host.loadAll();
    hosts.set(node, host);
  }
  const path = `/a/segments/${volumeId}/${segmentFileName(0)}`;
  const dataStart = segmentFileSizeBytes(segmentBytes, 4096) - segmentBytes;
  disks.get("a")!.corrupt(path, dataStart + 5 * 4096 + 100, 8);
  assert.deepEqual([...(await hosts.get("a")!.inspectBlocks(volumeId, 0, 5, 1)).states], [
    "corrupt",
  ]);

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
  const result = await reconcileVolume({
    name: "v",
    layout,
    segmentBytes,
    metadata,
    link: (node) => streams.get(node)!,
    log: quiet,
    clock: stillClock,
  });
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
  const disks = new Map(nodes.map((n, i) => [n, new MemoryDisk({ seed: 50 + i })]));
  const before = new Map<string, ReplicaHost>();
  for (const node of nodes) {
    const host = new ReplicaHost(`/${node}`, disks.get(node)!, quiet, { bootId: "boot-1" });
    await host.loadAll();
    await host.createSegments(volumeId, segmentBytes, [0], 1);
    before.set(node, host);
  }
  // Block 5: version 100 durable on both, then 200 cached on both, then 300 cached on a.
  for (const host of before.values()) {
    await host.writeEntries(volumeId, 1, [entry(100, 0x10)]);
    await host.writeEntries(volumeId, 1, [entry(200, 0x20, true)], undefined, 0, true);
  }
  await before.get("a")!.writeEntries(volumeId, 1, [entry(300, 0x30, true)], undefined, 0, true);
  const hosts = new Map<string, ReplicaHost>();
  const dataStart = segmentFileSizeBytes(segmentBytes, 4096) - segmentBytes;
  for (const node of nodes) {
    // Power loss; then each copy's newest write is torn (metadata landed, data did not).
    disks.get(node)!.crash({ keepPendingProbability: 1, tearWrites: false });
    const host = new ReplicaHost(`/${node}`, disks.get(node)!, quiet, { bootId: "boot-2" });
    await host.loadAll();
    hosts.set(node, host);
    const path = `/${node}/segments/${volumeId}/${segmentFileName(0)}`;
    disks.get(node)!.corrupt(path, dataStart + 5 * 4096 + 100, 8);
  }
  assert.deepEqual([...(await hosts.get("a")!.inspectBlocks(volumeId, 0, 5, 1)).versions], [300]);
  assert.deepEqual([...(await hosts.get("b")!.inspectBlocks(volumeId, 0, 5, 1)).versions], [200]);

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
  const result = await reconcileVolume({
    name: "v",
    layout,
    segmentBytes,
    metadata,
    link: (node) => streams.get(node)!,
    log: quiet,
    clock: stillClock,
  });
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
  const disks = new Map(nodes.map((n, i) => [n, new MemoryDisk({ seed: 60 + i })]));
  const before = new Map<string, ReplicaHost>();
  for (const node of nodes) {
    const host = new ReplicaHost(`/${node}`, disks.get(node)!, quiet, { bootId: "boot-1" });
    await host.loadAll();
    await host.createSegments(volumeId, segmentBytes, [0], 1);
    before.set(node, host);
  }
  for (const host of before.values()) {
    await host.writeEntries(volumeId, 1, [entry(100, 0x10)]);
    await host.writeEntries(volumeId, 1, [entry(200, 0x20, true)], undefined, 0, true);
  }
  const hosts = new Map<string, ReplicaHost>();
  const dataStart = segmentFileSizeBytes(segmentBytes, 4096) - segmentBytes;
  for (const node of nodes) {
    disks.get(node)!.crash(
      node === "c" ? { keepPendingProbability: 0 } : {
        keepPendingProbability: 1,
        tearWrites: false,
      },
    );
    const host = new ReplicaHost(`/${node}`, disks.get(node)!, quiet, { bootId: "boot-2" });
    await host.loadAll();
    hosts.set(node, host);
    if (node !== "c") {
      const path = `/${node}/segments/${volumeId}/${segmentFileName(0)}`;
      disks.get(node)!.corrupt(path, dataStart + 5 * 4096 + 100, 8);
    }
  }
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
  const result = await reconcileVolume({
    name: "v",
    layout,
    segmentBytes,
    metadata,
    link: (node) => streams.get(node)!,
    log: quiet,
    clock: stillClock,
  });
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
