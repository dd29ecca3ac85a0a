/**
 * Background scrub (actors/volume/scrub.ts) over in-process replica hosts on MemoryDisk and
 * the simulator's virtual clock: rot that no read touches is found and repaired from a good
 * copy, other replicas are left alone, a newer write racing the repair is not undone, the
 * rate is kept, and the volume actor runs the scrub only while it serves.
 */
import assert from "node:assert/strict";
import { inProcessLink } from "../harness/replica_link.ts";
import { MemoryDisk } from "../../actors/memory_disk.ts";
import { ReplicaHost, segmentFileName } from "../../actors/replica/host.ts";
import { segmentFileSizeBytes } from "../../actors/replica/segment_file.ts";
import { EntryKind, type WriteEntry } from "../../actors/replica/wire.ts";
import { Scrubber, type ScrubDeps, scrubFirstPassDelayMs } from "../../actors/volume/scrub.ts";
import { type ReplicaLink, VolumeActor } from "../../actors/volume/actor.ts";
import { MemoryKv, MemoryMetadata } from "../../actors/metadata_memory.ts";
import { SimScheduler } from "../../sim/scheduler.ts";
import { Op } from "../../protocol/frames.ts";
import type { VolumeSpec } from "../../protocol/schemas.ts";
import { ErrorCode } from "../../protocol/errors.ts";

const quiet = { info() {}, warn() {}, error() {} };
const volumeId = "0123456789abcdef";
const segmentBytes = 256 * 1024; // 64 blocks
const blocksPerSegment = segmentBytes / 4096;
const segments = 2;
const nodes = ["a", "b", "c"];
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const dataStart = segmentFileSizeBytes(segmentBytes, 4096) - segmentBytes;

const path = (node: string, segment: number) =>
  `/${node}/segments/${volumeId}/${segmentFileName(segment)}`;

/** Block contents that differ per segment, block and version. */
function blockData(segment: number, block: number, version: number): Uint8Array {
  const data = new Uint8Array(4096);
  for (let i = 0; i < data.length; i++) data[i] = (segment * 31 + block * 7 + version + i) & 0xff;
  return data;
}

async function fileBytes(disk: MemoryDisk, file: string): Promise<Uint8Array> {
  const handle = await disk.open(file, { create: false });
  const out = new Uint8Array(await handle.sizeBytes());
  await handle.read(out, 0);
  await handle.close();
  return out;
}

interface Cluster {
  hosts: Map<string, ReplicaHost>;
  disks: Map<string, MemoryDisk>;
}

/** Versions of term 1, the term these tests' hosts are written at (core.ts VersionCounter). */
const v5 = 2 ** 32 + 5;
const v9 = 2 ** 32 + 9;

/** Three hosts holding the same written blocks (every block of both segments, version 5). */
async function cluster(): Promise<Cluster> {
  const hosts = new Map<string, ReplicaHost>();
  const disks = new Map<string, MemoryDisk>();
  for (const node of nodes) {
    const disk = new MemoryDisk({ seed: node.charCodeAt(0) });
    const host = new ReplicaHost(`/${node}`, disk, quiet);
    await host.loadAll();
    await host.createSegments(volumeId, segmentBytes, [0, 1], 1);
    const entries: WriteEntry[] = [];
    for (let segment = 0; segment < segments; segment++) {
      for (let block = 0; block < blocksPerSegment; block++) {
        entries.push({
          segment,
          firstBlock: block,
          blockCount: 1,
          kind: EntryKind.data,
          version: v5,
          data: blockData(segment, block, v5),
        });
      }
    }
    await host.writeEntries(volumeId, 1, entries);
    hosts.set(node, host);
    disks.set(node, disk);
  }
  return { hosts, disks };
}

/** Scrubber deps straight over the hosts, as the volume actor's would be (term 1). */
function depsFor(
  { hosts }: Cluster,
  scheduler: SimScheduler,
  settings: ScrubDeps["settings"],
): ScrubDeps {
  return {
    name: "v",
    clock: scheduler.clock,
    log: quiet,
    settings,
    blocksPerSegment,
    segmentCount: () => segments,
    inSyncNodes: () => nodes,
    check: async (node, segment, firstBlock, blockCount) => {
      const reply = await hosts.get(node)!.handle(
        volumeId,
        "scrub",
        encoder.encode(JSON.stringify({ epoch: 1, segment, firstBlock, blockCount })),
      );
      assert.equal(reply[0], ErrorCode.OK, decoder.decode(reply.subarray(1)));
      return JSON.parse(decoder.decode(reply.subarray(1))).corruptBlocks;
    },
    read: (node, segment, firstBlock, blockCount) =>
      hosts.get(node)!.readBlocks(volumeId, { segment, epoch: 1, firstBlock, blockCount }),
    repair: (node, entry) => hosts.get(node)!.writeEntries(volumeId, 1, [entry]),
  };
}

Deno.test("scrub: a rotten block no read touches is found and repaired from a good copy; other replicas untouched", async () => {
  const c = await cluster();
  const scheduler = new SimScheduler({ seed: 1 });
  const rotten = { segment: 1, block: 37 };
  c.disks.get("b")!.corrupt(path("b", 1), dataStart + rotten.block * 4096 + 100, 8);
  const before = await c.hosts.get("b")!.readBlocks(volumeId, {
    segment: 1,
    epoch: 1,
    firstBlock: rotten.block,
    blockCount: 1,
  });
  assert.equal(before.states[0], "corrupt", "the rot is there");
  const untouched = new Map<string, Uint8Array>();
  for (const node of ["a", "c"]) {
    for (let s = 0; s < segments; s++) {
      untouched.set(`${node}/${s}`, await fileBytes(c.disks.get(node)!, path(node, s)));
    }
  }
  const scrubber = new Scrubber(
    depsFor(c, scheduler, { intervalMs: 10_000, rateBytesPerSec: 4 * 1024 * 1024 }),
  );
  scrubber.start();
  await scheduler.runUntil(() => scrubber.stats.passesDone >= 1, 60_000);
  scrubber.stop();
  assert.equal(scrubber.stats.passesDone, 1);
  assert.equal(scrubber.stats.blocksChecked, segments * blocksPerSegment * nodes.length);
  assert.equal(scrubber.stats.corruptFound, 1);
  assert.equal(scrubber.stats.repaired, 1);
  const after = await c.hosts.get("b")!.readBlocks(volumeId, {
    segment: 1,
    epoch: 1,
    firstBlock: rotten.block,
    blockCount: 1,
  });
  assert.equal(after.states[0], "written");
  assert.equal(after.versions[0], v5, "repaired with the good copy's version");
  assert.deepEqual(after.data, blockData(1, rotten.block, v5), "and its bytes");
  for (const [key, bytes] of untouched) {
    const [node, s] = key.split("/");
    assert.deepEqual(
      await fileBytes(c.disks.get(node)!, path(node, Number(s))),
      bytes,
      `${key} untouched`,
    );
  }
});

Deno.test("scrub: a newer write racing the repair is not undone", async () => {
  const c = await cluster();
  const scheduler = new SimScheduler({ seed: 2 });
  const block = 3;
  c.disks.get("c")!.corrupt(path("c", 0), dataStart + block * 4096, 16);
  const deps = depsFor(c, scheduler, { intervalMs: 10_000, rateBytesPerSec: 4 * 1024 * 1024 });
  const read = deps.read;
  let raced = false;
  deps.read = async (node, segment, firstBlock, blockCount) => {
    const good = await read(node, segment, firstBlock, blockCount);
    if (segment === 0 && firstBlock === block && !raced) {
      // The good copy (version 5) is in hand; now a client write of version 9 lands everywhere.
      raced = true;
      for (const host of c.hosts.values()) {
        await host.writeEntries(volumeId, 1, [{
          segment: 0,
          firstBlock: block,
          blockCount: 1,
          kind: EntryKind.data,
          version: v9,
          data: blockData(0, block, v9),
        }]);
      }
    }
    return good;
  };
  const scrubber = new Scrubber(deps);
  scrubber.start();
  await scheduler.runUntil(() => scrubber.stats.passesDone >= 1, 60_000);
  scrubber.stop();
  assert.ok(raced, "the write raced the repair");
  assert.equal(scrubber.stats.corruptFound, 1);
  const now = await c.hosts.get("c")!.readBlocks(volumeId, {
    segment: 0,
    epoch: 1,
    firstBlock: block,
    blockCount: 1,
  });
  assert.equal(now.versions[0], v9, "the newer write stays");
  assert.deepEqual(now.data, blockData(0, block, v9));
});

Deno.test("scrub: the rate is kept per virtual second, and a busy owner's ticks are skipped", async () => {
  const c = await cluster();
  const scheduler = new SimScheduler({ seed: 3 });
  const rateBlocksPerSec = 20;
  const deps = depsFor(c, scheduler, {
    intervalMs: 1_000,
    rateBytesPerSec: rateBlocksPerSec * 4096,
  });
  const checkedAt: { ms: number; blocks: number }[] = [];
  const check = deps.check;
  deps.check = (node, segment, firstBlock, blockCount) => {
    checkedAt.push({ ms: scheduler.nowMs, blocks: blockCount });
    return check(node, segment, firstBlock, blockCount);
  };
  let busy = false;
  deps.busy = () => busy;
  const scrubber = new Scrubber(deps);
  scrubber.start();
  const seconds = 10;
  await scheduler.runFor(1_000 + seconds * 1000);
  const perSecond = new Array(seconds).fill(0);
  for (const { ms, blocks } of checkedAt) {
    if (ms < 1_000 + seconds * 1000) perSecond[Math.floor((ms - 1_000) / 1000)] += blocks;
  }
  for (const [second, blocks] of perSecond.entries()) {
    assert.ok(
      blocks <= rateBlocksPerSec && blocks >= rateBlocksPerSec * 0.8,
      `second ${second}: ${blocks} blocks checked, the rate allows ${rateBlocksPerSec}`,
    );
  }
  busy = true;
  const before = scrubber.stats.blocksChecked;
  await scheduler.runFor(5_000);
  assert.equal(scrubber.stats.blocksChecked, before, "nothing checked while the owner is busy");
  busy = false;
  await scheduler.runFor(1_000);
  assert.ok(scrubber.stats.blocksChecked - before <= rateBlocksPerSec, "no burst after busy");
  scrubber.stop();
});

Deno.test("scrub: the volume actor scrubs while it serves and stops when it stops serving", async () => {
  const c = await cluster();
  const scheduler = new SimScheduler({ seed: 4 });
  const metadata = new MemoryMetadata(new MemoryKv());
  const spec: VolumeSpec = {
    name: "v",
    id: volumeId,
    incarnation: 0x01234567,
    sizeBytes: segments * segmentBytes,
    blockSize: 4096,
    segmentBytes,
    replicas: 3,
    minInSync: 2,
    readPolicy: "local",
    createdAt: "now",
  };
  await metadata.createSpec(spec);
  await metadata.createLayout("v", {
    volumeId,
    term: 0,
    owner: "a",
    segments: Array.from({ length: segments }, () => ({
      replicas: nodes.map((node) => ({ node, state: "in-sync" as const })),
    })),
  });
  let scrubCalls = 0;
  const link = (node: string): ReplicaLink => {
    const inner = inProcessLink(c.hosts.get(node)!, volumeId);
    return {
      ...inner,
      call: (op, body) => {
        if (op === "scrub") scrubCalls++;
        return inner.call(op, body);
      },
    };
  };
  const actor = new VolumeActor({
    spec,
    nodeId: "a",
    metadata,
    link,
    clock: scheduler.clock,
    random: { next: () => 0 },
    log: quiet,
    scrub: { intervalMs: 2_000, rateBytesPerSec: 4 * 1024 * 1024 },
  });
  const started = actor.start({ volumeId, owner: "a", term: 0 });
  await scheduler.runUntil(() => actor.state === "serving", 10_000);
  await started;
  assert.equal(actor.state, "serving");
  // Rot on c, in a block clients never read.
  c.disks.get("c")!.corrupt(path("c", 1), dataStart + 60 * 4096 + 1, 1);
  await scheduler.runFor(scrubFirstPassDelayMs); // the first pass is due within the interval
  const fixed = await c.hosts.get("c")!.readBlocks(volumeId, {
    segment: 1,
    epoch: actor.ownerTerm,
    firstBlock: 60,
    blockCount: 1,
  });
  assert.equal(fixed.states[0], "written", "the serving owner's scrub repaired c");
  assert.deepEqual(fixed.data, blockData(1, 60, v5));
  assert.ok(scrubCalls > 0);
  const stopping = actor.stop("test");
  await scheduler.runFor(100);
  await stopping;
  const callsAtStop = scrubCalls;
  await scheduler.runFor(30_000);
  assert.equal(scrubCalls, callsAtStop, "no scrub once the actor stopped serving");
  // A client request still reads right after the stop is refused, not scrubbed.
  await assert.rejects(
    () =>
      actor.serve({
        op: Op.READ,
        flags: 0,
        requestId: 1,
        offsetBytes: 0,
        lengthBytes: 4096,
        incarnation: 0,
        payload: new Uint8Array(0),
      }),
    /MOVED/,
  );
});
