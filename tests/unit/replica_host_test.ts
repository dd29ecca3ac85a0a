import assert from "node:assert/strict";
import { MemoryDisk } from "../../actors/memory_disk.ts";
import { type Disk, joinBody } from "../../actors/ports.ts";
import {
  cachedWritebackBytes,
  directWriteMinBytes,
  ReplicaHost,
} from "../../actors/replica/host.ts";
import { decideEpoch, GroupSync } from "../../actors/replica/core.ts";
import {
  BatchFlag,
  decodeReadReply,
  decodeReply,
  decodeWriteBatch,
  encodeReadRequest,
  encodeWriteBatch,
  encodeWriteBatchParts,
  EntryKind,
  type WriteEntry,
} from "../../actors/replica/wire.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import { decodeRecords, encodeRecord } from "../../actors/replica/journal.ts";

const silent = { info() {}, warn() {}, error() {} };
const encoder = new TextEncoder();
const segmentBytes = 256 * 1024;

async function newHost(disk = new MemoryDisk({ seed: 1 })) {
  const host = new ReplicaHost("/data", disk, silent);
  await host.loadAll();
  await host.createSegments("vol", segmentBytes, [0, 1], 1);
  return { host, disk };
}

const block = (fill: number) => new Uint8Array(4096).fill(fill);
const dataEntry = (
  segment: number,
  firstBlock: number,
  version: number,
  fill: number,
): WriteEntry => ({
  segment,
  firstBlock,
  blockCount: 1,
  kind: EntryKind.data,
  version,
  data: block(fill),
});

async function read(
  host: ReplicaHost,
  segment: number,
  firstBlock: number,
  count: number,
  epoch = 1,
) {
  const reply = await host.handle(
    "vol",
    "read",
    encodeReadRequest({ segment, epoch, firstBlock, blockCount: count }),
  );
  assert.equal(reply[0], ErrorCode.OK, new TextDecoder().decode(reply.subarray(1)));
  return decodeReadReply(reply);
}

Deno.test("decideEpoch: lower refused, equal accepted, higher advances", () => {
  assert.equal(decideEpoch(5, 4), "reject");
  assert.equal(decideEpoch(5, 5), "accept");
  assert.equal(decideEpoch(5, 6), "advance");
});

Deno.test("GroupSync: concurrent callers share syncs; none returns before a sync that started after it", async () => {
  let syncs = 0;
  let release: (() => void) | null = null;
  const group = new GroupSync(() => {
    syncs++;
    return new Promise<void>((resolve) => (release = resolve));
  });
  const first = group.sync();
  const waiting = Array.from({ length: 10 }, () => group.sync());
  assert.equal(syncs, 1);
  release!();
  await first;
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(syncs, 2, "everyone who arrived during sync 1 shares sync 2");
  let settled = false;
  Promise.all(waiting).then(() => (settled = true));
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(settled, false, "callers wait for the sync that started after their write");
  release!();
  await Promise.all(waiting);
  assert.equal(syncs, 2);
});

Deno.test("GroupSync with 2 at once: two start immediately, later callers share the next", async () => {
  let started = 0;
  const releases: (() => void)[] = [];
  const group = new GroupSync(() => {
    started++;
    return new Promise<void>((resolve) => releases.push(resolve));
  }, 2);
  const a = group.sync();
  const b = group.sync();
  const rest = [group.sync(), group.sync(), group.sync()];
  assert.equal(started, 2);
  releases.shift()!();
  await a;
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(started, 3, "the three waiting callers share one sync");
  releases.forEach((release) => release());
  await Promise.all([b, ...rest]);
  assert.equal(started, 3);
});

Deno.test("replica host: batch write, read back with versions, zero entries", async () => {
  const { host } = await newHost();
  const batch = encodeWriteBatch(1, [
    dataEntry(0, 3, 10, 0xaa),
    dataEntry(1, 0, 11, 0xbb),
    { segment: 0, firstBlock: 4, blockCount: 2, kind: EntryKind.zero, version: 12 },
  ]);
  assert.equal(decodeReply(await host.handle("vol", "write", batch)).status, 0);
  const result = await read(host, 0, 2, 4);
  assert.deepEqual(result.versions, [0, 10, 12, 12]);
  assert.deepEqual(result.states, ["unwritten", "written", "zero", "zero"]);
  assert.ok(result.data.subarray(4096, 8192).every((b) => b === 0xaa));
  assert.ok(result.data.subarray(0, 4096).every((b) => b === 0));
  assert.ok((await read(host, 1, 0, 1)).data.every((b) => b === 0xbb));
});

Deno.test("replica host: a lower epoch is refused and writes nothing; a higher one persists", async () => {
  const { host } = await newHost();
  const fence = await host.handle(
    "vol",
    "fence",
    encoder.encode(JSON.stringify({ epoch: 5, segments: [0, 1] })),
  );
  assert.equal(fence[0], 0);
  const stale = await host.handle("vol", "write", encodeWriteBatch(4, [dataEntry(0, 0, 1, 0x11)]));
  assert.equal(stale[0], ErrorCode.STALE_EPOCH);
  assert.equal((await read(host, 0, 0, 1, 5)).states[0], "unwritten");
  const readStale = await host.handle(
    "vol",
    "read",
    encodeReadRequest({ segment: 0, epoch: 3, firstBlock: 0, blockCount: 1 }),
  );
  assert.equal(readStale[0], ErrorCode.STALE_EPOCH);
  assert.equal(
    (await host.handle("vol", "write", encodeWriteBatch(6, [dataEntry(0, 0, 1, 0x22)])))[0],
    0,
  );
  await host.close();
  // Reopen from the same disk: the epoch survived.
  const reopened = new ReplicaHost("/data", (host as unknown as { disk: MemoryDisk }).disk, silent);
  await reopened.loadAll();
  assert.equal(
    (await reopened.handle("vol", "write", encodeWriteBatch(5, [dataEntry(0, 0, 2, 0x33)])))[0],
    ErrorCode.STALE_EPOCH,
  );
});

/** Version `seq` of term `term` (actors/volume/core.ts VersionCounter). */
const v = (term: number, seq: number) => term * 2 ** 32 + seq;

/** A repair entry: written only where the block holds no newer version. */
const repair = (firstBlock: number, version: number, fill: number): WriteEntry => ({
  ...dataEntry(0, firstBlock, version, fill),
  kind: EntryKind.repair,
});

Deno.test("replica host: repair entries never undo a newer version", async () => {
  const { host } = await newHost();
  await host.handle(
    "vol",
    "write",
    encodeWriteBatch(1, [dataEntry(0, 0, v(1, 20), 0x20), dataEntry(0, 1, v(1, 5), 0x05)]),
  );
  await host.handle(
    "vol",
    "write",
    encodeWriteBatch(1, [repair(0, v(1, 19), 0x19), repair(1, v(1, 6), 0x06)]),
  );
  const result = await read(host, 0, 0, 2);
  assert.deepEqual(result.versions, [v(1, 20), v(1, 6)]);
  assert.equal(result.data[0], 0x20);
  assert.equal(result.data[4096], 0x06);
});

Deno.test("replica host: a repair of a newer term replaces a newer version of an older term", async () => {
  // Sim seed 1079: a cached write (term 2) survived a blackout on one copy, n2, which was cut
  // off during the next takeover (term 4); the other copies had lost it, so the block took
  // the older write and reads saw that. n2's catch-up sent the older version as a repair;
  // guarded against the lost write's newer version it left it on n2 (and the copy back
  // brought it to every copy, where reads saw the lost write again). A version of the
  // repairing owner's term still wins over the repair (a write racing the copy).
  const { host } = await newHost();
  await host.handle(
    "vol",
    "write",
    encodeWriteBatch(2, [dataEntry(0, 0, v(2, 2), 0x66), dataEntry(0, 1, v(4, 3), 0x43)]),
  );
  const reply = await host.handle(
    "vol",
    "write",
    encodeWriteBatch(4, [repair(0, v(2, 1), 0x61), repair(1, v(2, 1), 0x61)]),
  );
  assert.equal(reply[0], ErrorCode.OK);
  const result = await read(host, 0, 0, 2, 4);
  assert.deepEqual(result.versions, [v(2, 1), v(4, 3)]);
  assert.equal(result.data[0], 0x61);
  assert.equal(result.data[4096], 0x43);
});

Deno.test("replica host: malformed messages get error replies, data untouched", async () => {
  const { host } = await newHost();
  await host.handle("vol", "write", encodeWriteBatch(1, [dataEntry(0, 0, 1, 0x44)]));
  const good = encodeWriteBatch(1, [dataEntry(0, 0, 2, 0x55)]);
  const cases: [string, string, Uint8Array, number][] = [
    ["truncated batch", "write", good.subarray(0, good.length - 100), ErrorCode.BAD_FRAME],
    ["short batch", "write", new Uint8Array(3), ErrorCode.BAD_FRAME],
    ["trailing bytes", "write", new Uint8Array([...good, 1]), ErrorCode.BAD_FRAME],
    [
      "unknown segment",
      "write",
      encodeWriteBatch(1, [dataEntry(9, 0, 2, 0x55)]),
      ErrorCode.NO_SUCH_VOLUME,
    ],
    [
      "block out of range",
      "write",
      encodeWriteBatch(1, [dataEntry(0, 64, 2, 0x55)]),
      ErrorCode.BAD_FRAME,
    ],
    ["bad read", "read", new Uint8Array(5), ErrorCode.BAD_FRAME],
    ["bad json", "fence", encoder.encode("{nope"), ErrorCode.BAD_REQUEST],
    ["wrong schema", "scrub", encoder.encode('{"epoch":"x"}'), ErrorCode.BAD_REQUEST],
    ["unknown op", "explode", new Uint8Array(0), ErrorCode.UNKNOWN_OP],
  ];
  for (const [what, op, body, code] of cases) {
    const reply = await host.handle("vol", op, body);
    assert.equal(reply[0], code, `${what}: got ${reply[0]}`);
  }
  const unknownVolume = await host.handle(
    "other",
    "read",
    encodeReadRequest({ segment: 0, epoch: 1, firstBlock: 0, blockCount: 1 }),
  );
  assert.equal(unknownVolume[0], ErrorCode.NO_SUCH_VOLUME);
  const result = await read(host, 0, 0, 1);
  assert.equal(result.versions[0], 1);
  assert.ok(result.data.every((b) => b === 0x44));
});

/**
 * One acknowledged batch, then one more in flight (not awaited, so not acknowledged) and
 * a crash after a seed-dependent number of steps (before, during or after its pwrites),
 * dropping or tearing what was not synced. Returns the host as it reopens.
 */
async function crashDuringWrite(
  seed: number,
  acknowledged: WriteEntry[],
  inFlight: WriteEntry[],
): Promise<ReplicaHost> {
  const disk = new MemoryDisk({ seed });
  const { host } = await newHost(disk);
  const reply = await host.handle("vol", "write", encodeWriteBatch(1, acknowledged));
  assert.equal(reply[0], ErrorCode.OK);
  void host.handle("vol", "write", encodeWriteBatch(1, inFlight));
  for (let i = 0; i < seed % 40; i++) await Promise.resolve();
  disk.crash({ keepPendingProbability: 0.5, tearWrites: true });
  const after = new ReplicaHost("/data", disk, silent);
  await after.loadAll();
  return after;
}

Deno.test("replica host: an acknowledged write survives a crash; an unacknowledged one is old, new or flagged", async () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 80; seed++) {
    const after = await crashDuringWrite(
      seed,
      [dataEntry(0, 0, 1, 0x01), dataEntry(0, 1, 2, 0x02)],
      [dataEntry(0, 1, 3, 0x03)],
    );
    const result = await read(after, 0, 0, 2);
    assert.equal(result.states[0], "written");
    assert.equal(result.data[0], 0x01, `seed ${seed}: acknowledged block lost`);
    const second = result.data[4096];
    assert.ok(
      result.states[1] === "corrupt" ||
        (result.states[1] === "written" && (second === 0x02 || second === 0x03)),
      `seed ${seed}: block 1 is ${result.states[1]} with ${second}`,
    );
    outcomes.add(result.states[1] === "corrupt" ? "corrupt" : String(second));
  }
  assert.ok(outcomes.size >= 2, `crash points reached only ${[...outcomes]}`);
});

Deno.test("journal: records round trip; replay stops at a torn or corrupt tail", () => {
  const records = [
    // In parts, as the owner's own replica journals a batch (headers between data blocks).
    encodeRecord(
      "vol",
      encodeWriteBatchParts(3, [dataEntry(0, 1, 5, 0x11), dataEntry(0, 2, 5, 0)]),
    ),
    encodeRecord(
      "other",
      encodeWriteBatch(4, [{
        segment: 2,
        firstBlock: 0,
        blockCount: 8,
        kind: EntryKind.zero,
        version: 6,
      }]),
    ),
  ].map(joinBody);
  const all = new Uint8Array(records[0].length + records[1].length);
  all.set(records[0]);
  all.set(records[1], records[0].length);
  const decoded = decodeRecords(all);
  assert.equal(decoded.records.length, 2);
  assert.equal(decoded.records[1].volume, "other");
  assert.equal(decoded.records[0].entries[0].data![0], 0x11);
  assert.equal(decodeRecords(all.subarray(0, all.length - 1)).records.length, 1, "torn tail");
  const flipped = all.slice();
  flipped[records[0].length + 20] ^= 1;
  assert.equal(decodeRecords(flipped).records.length, 1, "crc mismatch ends replay");
});

Deno.test("journal: acknowledged writes survive a crash before the segment files were synced", async () => {
  const disk = new MemoryDisk({ seed: 3 });
  const { host } = await newHost(disk);
  for (let i = 0; i < 20; i++) {
    const reply = await host.handle(
      "vol",
      "write",
      encodeWriteBatch(1, [dataEntry(i % 2, i, 100 + i, i + 1)]),
    );
    assert.equal(reply[0], 0);
  }
  // Only the journal was fdatasynced; the crash drops every unsynced segment write.
  disk.crash();
  const after = new ReplicaHost("/data", disk, silent);
  await after.loadAll();
  for (let i = 0; i < 20; i++) {
    const result = await read(after, i % 2, i, 1);
    assert.equal(result.versions[0], 100 + i);
    assert.ok(result.data.every((b) => b === i + 1), `block ${i}`);
  }
  // Replay left the journal empty and the data in synced segment files.
  disk.crash();
  const again = new ReplicaHost("/data", disk, silent);
  await again.loadAll();
  assert.equal((await read(again, 1, 19, 1)).data[0], 20);
});

Deno.test("journal: a checkpoint syncs segment files and removes the old generation", async () => {
  const disk = new MemoryDisk({ seed: 4 });
  const { host } = await newHost(disk);
  await host.handle("vol", "write", encodeWriteBatch(1, [dataEntry(0, 0, 1, 0x77)]));
  const before = await disk.list("/data/journal");
  await host.checkpoint();
  const after = await disk.list("/data/journal");
  assert.equal(after.length, 1);
  assert.notDeepEqual(after, before, "a new generation replaced the old");
  disk.crash();
  const reopened = new ReplicaHost("/data", disk, silent);
  await reopened.loadAll();
  assert.equal((await read(reopened, 0, 0, 1)).data[0], 0x77);
});

/** One data entry of count blocks, block i filled with fill + i. */
function runEntry(
  segment: number,
  firstBlock: number,
  count: number,
  version: number,
  fill: number,
) {
  const data = new Uint8Array(count * 4096);
  for (let i = 0; i < count; i++) data.fill(fill + i, i * 4096, (i + 1) * 4096);
  return { segment, firstBlock, blockCount: count, kind: EntryKind.data, version, data };
}

async function journalBytes(disk: MemoryDisk): Promise<number> {
  let total = 0;
  for (const name of await disk.list("/data/journal")) {
    const file = await disk.open(`/data/journal/${name}`, { create: false });
    total += await file.sizeBytes();
    await file.close();
  }
  return total;
}

const directBlocks = directWriteMinBytes / 4096;

Deno.test("replica host: large writes are written in place, not journaled, and survive a crash", async () => {
  const disk = new MemoryDisk({ seed: 5 });
  const { host } = await newHost(disk);
  const reply = await host.handle(
    "vol",
    "write",
    encodeWriteBatch(1, [runEntry(0, 0, directBlocks, 10, 0x20)]),
  );
  assert.equal(reply[0], ErrorCode.OK);
  assert.equal(await journalBytes(disk), 0, "nothing journaled");
  // A batch that mixes a large write with a small one is journaled whole: written in place
  // with the small one journaled, a crash between the journal record and the in-place write
  // would leave the later version without the earlier (replicas would differ at equal
  // highest versions, and a takeover trusts those).
  const mixed = await host.handle(
    "vol",
    "write",
    encodeWriteBatch(1, [runEntry(0, 0, directBlocks, 11, 0x30), dataEntry(1, 0, 12, 0x55)]),
  );
  assert.equal(mixed[0], ErrorCode.OK);
  assert.ok(
    await journalBytes(disk) > directBlocks * 4096,
    `a mixed batch is journaled whole: journal holds ${await journalBytes(disk)} bytes`,
  );
  disk.crash();
  const after = new ReplicaHost("/data", disk, silent);
  await after.loadAll();
  const big = await read(after, 0, 0, directBlocks);
  for (let i = 0; i < directBlocks; i++) {
    assert.equal(big.versions[i], 11);
    assert.ok(
      big.data.subarray(i * 4096, (i + 1) * 4096).every((b) => b === 0x30 + i),
      `block ${i}`,
    );
  }
  assert.equal((await read(after, 1, 0, 1)).data[0], 0x55);
});

Deno.test("replica host: replay never undoes a newer in-place write, and redoes newer journaled ones", async () => {
  const disk = new MemoryDisk({ seed: 6 });
  const { host } = await newHost(disk);
  const write = async (entries: WriteEntry[]) => {
    const reply = await host.handle("vol", "write", encodeWriteBatch(1, entries));
    assert.equal(reply[0], ErrorCode.OK);
  };
  // Segment 0: journaled v1 on every block, then an in-place v2 over them.
  await write(Array.from({ length: directBlocks }, (_, i) => dataEntry(0, i, 1, 0x01)));
  await write([runEntry(0, 0, directBlocks, 2, 0x40)]);
  // Segment 1: in place v3, then a journaled v4 on one block of it.
  await write([runEntry(1, 0, directBlocks, 3, 0x80)]);
  await write([dataEntry(1, 5, 4, 0xee)]);
  disk.crash();
  const after = new ReplicaHost("/data", disk, silent);
  await after.loadAll();
  const first = await read(after, 0, 0, directBlocks);
  for (let i = 0; i < directBlocks; i++) {
    assert.equal(first.versions[i], 2, `segment 0 block ${i} went back to the journaled version`);
    assert.equal(first.data[i * 4096], 0x40 + i);
  }
  const second = await read(after, 1, 0, directBlocks);
  for (let i = 0; i < directBlocks; i++) {
    assert.equal(second.versions[i], i === 5 ? 4 : 3, `segment 1 block ${i}`);
    assert.equal(second.data[i * 4096], i === 5 ? 0xee : 0x80 + i);
  }
});

Deno.test("replica host: a crash during an unacknowledged in-place write leaves each block old, new or flagged", async () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 60; seed++) {
    const after = await crashDuringWrite(
      seed,
      Array.from({ length: directBlocks }, (_, i) => dataEntry(0, i, 1, 0x01)),
      [runEntry(0, 0, directBlocks, 2, 0x40)],
    );
    const result = await read(after, 0, 0, directBlocks);
    for (let i = 0; i < directBlocks; i++) {
      const block = result.data.subarray(i * 4096, (i + 1) * 4096);
      const state = result.states[i];
      const old = state === "written" && result.versions[i] === 1 && block.every((b) => b === 1);
      const fresh = state === "written" && result.versions[i] === 2 &&
        block.every((b) => b === 0x40 + i);
      assert.ok(old || fresh || state === "corrupt", `seed ${seed} block ${i}: ${state}`);
      outcomes.add(old ? "old" : fresh ? "new" : "corrupt");
    }
  }
  assert.ok(outcomes.size >= 2, `crash points reached only ${[...outcomes]}`);
});

Deno.test("replica host: a repair after a newer write in the same batch does not undo it", async () => {
  const { host } = await newHost();
  await host.handle("vol", "write", encodeWriteBatch(1, [dataEntry(0, 0, v(1, 10), 0x10)]));
  // One batch: a client write (v20), then a read repair carrying an older good copy (v19),
  // as the owner's batcher may send them. The repair is guarded against the write before it.
  const repair: WriteEntry = { ...dataEntry(0, 0, v(1, 19), 0x19), kind: EntryKind.repair };
  const reply = await host.handle(
    "vol",
    "write",
    encodeWriteBatch(1, [dataEntry(0, 0, v(1, 20), 0x20), repair]),
  );
  assert.equal(reply[0], ErrorCode.OK);
  const result = await read(host, 0, 0, 1);
  assert.deepEqual([...result.versions], [v(1, 20)]);
  assert.equal(result.data[0], 0x20);
});

Deno.test("replica host: a write's client request is remembered (not written as blocks) and survives a crash", async () => {
  const disk = new MemoryDisk({ seed: 5 });
  const { host } = await newHost(disk);
  const entry: WriteEntry = {
    ...dataEntry(0, 2, 30, 0x30),
    request: { origin: "_INBOX.abc", requestId: 7 },
  };
  // Over the wire the request travels as its own entry, right after the write.
  const wire = encodeWriteBatch(1, [entry]);
  assert.deepEqual(
    decodeWriteBatch(wire).entries.map((e) => e.kind),
    [EntryKind.data, EntryKind.request],
  );
  assert.equal((await host.handle("vol", "write", wire))[0], ErrorCode.OK);
  const asked = async (h: ReplicaHost) => {
    const reply = await h.handle("vol", "requests", new TextEncoder().encode('{"epoch":1}'));
    assert.equal(reply[0], ErrorCode.OK);
    return JSON.parse(new TextDecoder().decode(reply.subarray(1))).requests as string[];
  };
  assert.deepEqual(await asked(host), ["_INBOX.abc/7"]);
  // Block 7 (the request id) is untouched; block 2 holds the write.
  assert.deepEqual([...(await read(host, 0, 7, 1)).versions], [0]);
  assert.deepEqual([...(await read(host, 0, 2, 1)).versions], [30]);
  // kill -9: the journal still holds the record; replay remembers the request again.
  disk.crash({ keepPendingProbability: 1, tearWrites: false });
  const after = new ReplicaHost("/data", disk, silent);
  await after.loadAll();
  assert.deepEqual(await asked(after), ["_INBOX.abc/7"]);
  // A stale term may not ask.
  const stale = await after.handle("vol", "requests", new TextEncoder().encode('{"epoch":0}'));
  assert.equal(stale[0], ErrorCode.STALE_EPOCH);
});

Deno.test("replica host: a cached batch is acknowledged unsynced, and durable only after a flush", async () => {
  const bigBlocks = directWriteMinBytes / 4096; // written in place, not journaled
  const big = (version: number, fill: number): WriteEntry => ({
    segment: 1,
    firstBlock: 0,
    blockCount: bigBlocks,
    kind: EntryKind.data,
    version,
    data: new Uint8Array(bigBlocks * 4096).fill(fill),
  });
  const cachedBatch = (small: number, large: number) =>
    encodeWriteBatch(1, [dataEntry(0, 3, small, small), big(large, large)], 0, BatchFlag.cached);
  const flushBody = encoder.encode('{"epoch":1}');
  const powerLoss = (disk: MemoryDisk) => disk.crash({ keepPendingProbability: 0 });

  // Power loss before the flush: both writes are gone (they were never synced).
  {
    const disk = new MemoryDisk({ seed: 7 });
    const durable: number[] = [];
    const host = new ReplicaHost("/data", disk, silent, {
      onDurable: (_v, entries) => durable.push(...entries.map((e) => e.version)),
    });
    await host.loadAll();
    await host.createSegments("vol", segmentBytes, [0, 1], 1);
    // The first cached batch of a boot writes the cached-writes marker (one fdatasync).
    const first = encodeWriteBatch(1, [dataEntry(0, 9, 10, 10)], 0, BatchFlag.cached);
    assert.equal((await host.handle("vol", "write", first))[0], ErrorCode.OK);
    const syncsBefore = disk.stats.datasyncs;
    assert.equal((await host.handle("vol", "write", cachedBatch(11, 12)))[0], ErrorCode.OK);
    assert.equal(disk.stats.datasyncs, syncsBefore, "a cached batch costs no fdatasync");
    assert.deepEqual(durable, [], "not told durable before the flush");
    durable.length = 0;
    // Reads see it at once.
    assert.deepEqual([...(await read(host, 0, 3, 1)).versions], [11]);
    powerLoss(disk);
    const after = new ReplicaHost("/data", disk, silent);
    await after.loadAll();
    assert.deepEqual([...(await read(after, 0, 3, 1)).versions], [0]);
    assert.deepEqual([...(await read(after, 1, 0, 1)).versions], [0]);
  }
  // Flushed, then power loss: both are there.
  {
    const disk = new MemoryDisk({ seed: 8 });
    const durable: number[] = [];
    const host = new ReplicaHost("/data", disk, silent, {
      onDurable: (_v, entries) => durable.push(...entries.map((e) => e.version)),
    });
    await host.loadAll();
    await host.createSegments("vol", segmentBytes, [0, 1], 1);
    assert.equal((await host.handle("vol", "write", cachedBatch(21, 22)))[0], ErrorCode.OK);
    assert.equal((await host.handle("vol", "flush", flushBody))[0], ErrorCode.OK);
    assert.deepEqual(durable, [21, 22], "told durable at the flush");
    // A stale term may not flush.
    const stale = await host.handle("vol", "flush", encoder.encode('{"epoch":0}'));
    assert.equal(stale[0], ErrorCode.STALE_EPOCH);
    powerLoss(disk);
    const after = new ReplicaHost("/data", disk, silent);
    await after.loadAll();
    assert.deepEqual([...(await read(after, 0, 3, 1)).versions], [21]);
    assert.deepEqual([...(await read(after, 1, 0, 1)).versions], [22]);
  }
  // A fence (a new owner taking over) flushes too.
  {
    const disk = new MemoryDisk({ seed: 9 });
    const { host } = await newHost(disk);
    assert.equal((await host.handle("vol", "write", cachedBatch(31, 32)))[0], ErrorCode.OK);
    const fence = encoder.encode(JSON.stringify({ epoch: 2, segments: [0, 1] }));
    assert.equal((await host.handle("vol", "fence", fence))[0], ErrorCode.OK);
    powerLoss(disk);
    const after = new ReplicaHost("/data", disk, silent);
    await after.loadAll();
    assert.deepEqual([...(await read(after, 0, 3, 1, 2)).versions], [31]);
    assert.deepEqual([...(await read(after, 1, 0, 1, 2)).versions], [32]);
  }
});

Deno.test("replica host: a segment file with cachedWritebackBytes of cached writes syncs in the background", async () => {
  const disk = new MemoryDisk({ seed: 9 });
  const durable: number[] = [];
  const host = new ReplicaHost("/data", disk, silent, {
    onDurable: (_v, entries) => durable.push(...entries.map((e) => e.version)),
  });
  await host.loadAll();
  const fileBytes = 2 * cachedWritebackBytes;
  await host.createSegments("vol", fileBytes, [0], 1);
  const chunkBytes = 1024 * 1024; // written in place, not journaled
  const cachedWrite = (index: number) =>
    encodeWriteBatch(
      1,
      [{
        segment: 0,
        firstBlock: index * (chunkBytes / 4096),
        blockCount: chunkBytes / 4096,
        kind: EntryKind.data,
        version: index + 1,
        data: new Uint8Array(chunkBytes).fill(index + 1),
      }],
      0,
      BatchFlag.cached,
    );
  const written = cachedWritebackBytes / chunkBytes;
  // The first cached batch of a boot writes the cached-writes marker (one fdatasync).
  assert.equal((await host.handle("vol", "write", cachedWrite(0)))[0], ErrorCode.OK);
  const syncsBefore = disk.stats.datasyncs;
  for (let i = 1; i < written - 1; i++) {
    assert.equal((await host.handle("vol", "write", cachedWrite(i)))[0], ErrorCode.OK);
  }
  assert.equal(disk.stats.datasyncs, syncsBefore, "under cachedWritebackBytes: no sync");
  assert.equal((await host.handle("vol", "write", cachedWrite(written - 1)))[0], ErrorCode.OK);
  // Acknowledged before the writeback ends; the writeback then runs on its own.
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(disk.stats.datasyncs, syncsBefore + 1, "the file holding 8 MiB cached syncs once");
  assert.deepEqual(durable, [], "still reported durable only by a FLUSH");
  // Power loss without a FLUSH: what the writeback synced is there.
  disk.crash({ keepPendingProbability: 0 });
  const after = new ReplicaHost("/data", disk, silent);
  await after.loadAll();
  assert.deepEqual([...(await read(after, 0, 0, 1)).versions], [1]);
});

Deno.test("replica host: after a power loss with cached writes, its replicas are suspect until an owner writes after fencing", async () => {
  const disk = new MemoryDisk({ seed: 11 });
  const open = async (bootId: string) => {
    const host = new ReplicaHost("/data", disk, silent, { bootId });
    await host.loadAll();
    return host;
  };
  const first = await open("boot-1");
  await first.createSegments("vol", segmentBytes, [0, 1], 1);
  const cached = encodeWriteBatch(1, [dataEntry(0, 4, 40, 0x40)], 0, BatchFlag.cached);
  assert.equal((await first.handle("vol", "write", cached))[0], ErrorCode.OK);
  const fence = (epoch: number) =>
    encoder.encode(JSON.stringify({ epoch, segments: [0, 1], nextSeq: 1 }));
  const suspectIn = async (host: ReplicaHost, epoch: number) => {
    const reply = await host.handle("vol", "fence", fence(epoch));
    assert.equal(reply[0], ErrorCode.OK);
    const answer = JSON.parse(new TextDecoder().decode(reply.subarray(1)));
    return answer.segments.filter((s: { suspect?: boolean }) => s.suspect).map((
      s: { segment: number },
    ) => s.segment);
  };

  // kill -9 (same boot): the page cache survived, nothing is suspect.
  disk.crash({ keepPendingProbability: 1, tearWrites: false });
  const sameBoot = await open("boot-1");
  assert.deepEqual(await suspectIn(sameBoot, 2), []);

  // A power loss (another boot): every replica is suspect, reads are refused.
  disk.crash({ keepPendingProbability: 1, tearWrites: false });
  const rebooted = await open("boot-2");
  const read = await rebooted.handle(
    "vol",
    "read",
    encodeReadRequest({ segment: 0, epoch: 2, firstBlock: 4, blockCount: 1 }),
  );
  assert.equal(read[0], ErrorCode.NO_SUCH_VOLUME, "a suspect replica serves no read");
  // Restarted again before any owner judged it: still suspect (the marker names boot-1).
  disk.crash({ keepPendingProbability: 1, tearWrites: false });
  const again = await open("boot-2");
  assert.deepEqual(await suspectIn(again, 3), [0, 1]);
  // Fenced at term 3, it serves that owner's reads (the owner judged it: where every in-sync
  // copy is suspect it keeps them and reads them); still suspect until that owner writes.
  const judged = await again.handle(
    "vol",
    "read",
    encodeReadRequest({ segment: 1, epoch: 3, firstBlock: 4, blockCount: 1 }),
  );
  assert.equal(judged[0], ErrorCode.OK, "the fencing owner may read a suspect copy it kept");
  // The owner that fenced at term 3 writes (it has recorded its judgement): cleared.
  const write = encodeWriteBatch(
    3,
    [dataEntry(0, 5, 3_000_001, 1), dataEntry(1, 5, 3_000_002, 2)],
    1,
  );
  assert.equal((await again.handle("vol", "write", write))[0], ErrorCode.OK);
  assert.deepEqual(await suspectIn(again, 4), []);
  // And the marker names this boot again: a kill -9 now leaves nothing suspect.
  disk.crash({ keepPendingProbability: 1, tearWrites: false });
  assert.deepEqual(await suspectIn(await open("boot-2"), 5), []);
});

Deno.test("replica host: writes to a segment file removed before they finish are never told durable", async () => {
  // The simulator's durability oracle forgets a segment file's versions when the node removes
  // it; a write applied before the removal and synced after it must not put them back (a file
  // made there again later starts empty). Plain and cached writes, each racing deleteSegment.
  for (const flags of [0, BatchFlag.cached]) {
    const durable: number[] = [];
    // fdatasyncs wait while `held` is set, so the removal lands between apply and sync.
    let held: Promise<void> | null = null;
    let release = () => {};
    let waiting = 0;
    const inner = new MemoryDisk({ seed: 12 });
    const disk: Disk = {
      ...inner,
      open: async (path, options) => {
        const file = await inner.open(path, options);
        return {
          ...file,
          read: (b, p) => file.read(b, p),
          write: (b, p) => file.write(b, p),
          writev: (b, p) => file.writev(b, p),
          truncate: (n) => file.truncate(n),
          sizeBytes: () => file.sizeBytes(),
          close: () => file.close(),
          datasync: async () => {
            if (held) {
              waiting++;
              await held;
            }
            await file.datasync();
          },
        };
      },
      remove: (path) => inner.remove(path),
      removeDir: (path) => inner.removeDir(path),
      list: (dir) => inner.list(dir),
      mkdirp: (dir) => inner.mkdirp(dir),
      syncDir: (dir) => inner.syncDir(dir),
    };
    const host = new ReplicaHost("/data", disk, silent, {
      onDurable: (_v, entries) => durable.push(...entries.map((e) => e.version)),
    });
    await host.loadAll();
    await host.createSegments("vol", segmentBytes, [0, 1], 1);
    // The cached-writes marker first (its own fdatasync), so the race below is the batch's.
    const warm = encodeWriteBatch(1, [dataEntry(0, 0, 49, 4)], 0, flags);
    assert.equal((await host.handle("vol", "write", warm))[0], ErrorCode.OK);
    durable.length = 0;
    held = new Promise((resolve) => (release = resolve));
    const batch = encodeWriteBatch(1, [dataEntry(0, 1, 50, 5), dataEntry(1, 1, 51, 5)], 0, flags);
    const writing = host.handle("vol", "write", batch);
    if (flags) assert.equal((await writing)[0], ErrorCode.OK, "a cached batch needs no sync");
    else while (waiting === 0) await new Promise((resolve) => setTimeout(resolve, 0));
    const removing = host.deleteSegment("vol", 1);
    await new Promise((resolve) => setTimeout(resolve, 0));
    held = null;
    release();
    assert.equal((await writing)[0], ErrorCode.OK, `flags ${flags}: applied before the removal`);
    await removing;
    assert.equal(
      (await host.handle("vol", "flush", encoder.encode('{"epoch":1}')))[0],
      ErrorCode.OK,
    );
    // (A cached warm-up write is told durable at the flush too.)
    assert.deepEqual(
      durable,
      flags ? [49, 50] : [50],
      `flags ${flags}: never the write to the removed file`,
    );
  }
});

Deno.test("replica host: a lease answer lists the suspect segments no owner of its term has fenced", async () => {
  // Sim seed 1226: a node lost power with an unflushed cached write and came back while
  // clients only read; no read or write of its segment reached it, so the owner never
  // learned, and the copy stayed listed in sync without that write. The owner renews
  // leases on a timer: the answer tells it.
  const disk = new MemoryDisk({ seed: 12 });
  const open = async (bootId: string) => {
    const host = new ReplicaHost("/data", disk, silent, { bootId });
    await host.loadAll();
    return host;
  };
  const first = await open("boot-1");
  await first.createSegments("vol", segmentBytes, [0, 1], 1);
  const cached = encodeWriteBatch(1, [dataEntry(0, 4, v(1, 40), 0x40)], 0, BatchFlag.cached);
  assert.equal((await first.handle("vol", "write", cached))[0], ErrorCode.OK);
  const lease = async (host: ReplicaHost, epoch: number) => {
    const reply = await host.handle(
      "vol",
      "lease",
      encoder.encode(JSON.stringify({ epoch, durationMs: 1000 })),
    );
    assert.equal(reply[0], ErrorCode.OK);
    return reply.length > 1
      ? JSON.parse(new TextDecoder().decode(reply.subarray(1))).suspect
      : undefined;
  };
  assert.equal(await lease(first, 1), undefined, "nothing suspect: a bare OK");
  disk.crash({ keepPendingProbability: 1, tearWrites: false });
  const rebooted = await open("boot-2");
  assert.deepEqual(await lease(rebooted, 1), [0, 1]);
  // Fenced at term 2 (an owner judged it): not listed to that owner, still to an older one.
  const fence = encoder.encode(JSON.stringify({ epoch: 2, segments: [1], nextSeq: 1 }));
  assert.equal((await rebooted.handle("vol", "fence", fence))[0], ErrorCode.OK);
  assert.deepEqual(await lease(rebooted, 2), [0]);
});

Deno.test("replica host: inspectBlocks reads a suspect replica, which serves no read", async () => {
  const disk = new MemoryDisk({ seed: 13 });
  const first = new ReplicaHost("/data", disk, silent, { bootId: "boot-1" });
  await first.loadAll();
  await first.createSegments("vol", segmentBytes, [0], 1);
  const plain = encodeWriteBatch(1, [dataEntry(0, 2, 60, 6)], 0);
  assert.equal((await first.handle("vol", "write", plain))[0], ErrorCode.OK);
  const cached = encodeWriteBatch(1, [dataEntry(0, 3, 61, 6)], 0, BatchFlag.cached);
  assert.equal((await first.handle("vol", "write", cached))[0], ErrorCode.OK);
  disk.crash({ keepPendingProbability: 0 });
  const rebooted = new ReplicaHost("/data", disk, silent, { bootId: "boot-2" });
  await rebooted.loadAll();
  const refused = await rebooted.handle(
    "vol",
    "read",
    encodeReadRequest({ segment: 0, epoch: 1, firstBlock: 2, blockCount: 1 }),
  );
  assert.equal(refused[0], ErrorCode.NO_SUCH_VOLUME);
  const seen = await rebooted.inspectBlocks("vol", 0, 2, 2);
  assert.deepEqual([...seen.versions], [60, 0], "the durable write is there, the cached one lost");
});

Deno.test("replica host: a FLUSH after a restart syncs cached writes the killed process left unsynced", async () => {
  const disk = new MemoryDisk({ seed: 10 });
  const host = new ReplicaHost("/data", disk, silent);
  await host.loadAll();
  await host.createSegments("vol", segmentBytes, [0, 1], 1);
  const inPlace: WriteEntry = {
    segment: 1,
    firstBlock: 0,
    blockCount: directBlocks,
    kind: EntryKind.data,
    version: 5,
    data: new Uint8Array(directWriteMinBytes).fill(5),
  };
  const batch = encodeWriteBatch(1, [inPlace], 0, BatchFlag.cached);
  assert.equal((await host.handle("vol", "write", batch))[0], ErrorCode.OK);
  // kill -9: the process is gone, the page cache keeps the write unsynced (the disk is left as
  // it is), and a new process of the same boot starts.
  const restarted = new ReplicaHost("/data", disk, silent);
  await restarted.loadAll();
  // A segment file removed meanwhile (its replica moved away) is no longer the FLUSH's to sync.
  await restarted.deleteSegment("vol", 0);
  const flushed = await restarted.handle("vol", "flush", encoder.encode('{"epoch":1}'));
  assert.equal(flushed[0], ErrorCode.OK);
  // The FLUSH answered OK: a power loss now must not take the write.
  disk.crash({ keepPendingProbability: 0 });
  const after = new ReplicaHost("/data", disk, silent);
  await after.loadAll();
  assert.deepEqual([...(await read(after, 1, 0, 1)).versions], [5]);
});
