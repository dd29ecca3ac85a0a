import { mulberry32 as seeded } from "../harness/random.ts";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { crc32c } from "../../protocol/crc32c.ts";
import { MemoryDisk } from "../../actors/memory_disk.ts";
import type { Disk } from "../../actors/ports.ts";
import {
  type BlockState,
  SegmentFile,
  SegmentFileError,
  type SegmentInfo,
} from "../../actors/replica/segment_file.ts";
import { systemDisk } from "../../actors/system_ports.ts";

const bs = 4096;
const MiB = 1024 * 1024;

function randomBytes(random: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += 4) {
    const word = Math.floor(random() * 4294967296);
    out[i] = word;
    out[i + 1] = word >>> 8;
    out[i + 2] = word >>> 16;
    out[i + 3] = word >>> 24;
  }
  return out;
}

function info(over: Partial<SegmentInfo> = {}): SegmentInfo {
  return {
    volume: "vol-1",
    segmentIndex: 3,
    segmentBytes: 8 * MiB,
    blockSize: bs,
    epoch: 7,
    ...over,
  };
}

interface Env {
  kind: "memory" | "system";
  disk: Disk;
  dir: string;
  /** Inverts one byte of a file behind the Disk's back (bit rot). */
  flipByte(path: string, position: number): void;
}

async function withEnv(kind: Env["kind"], fn: (env: Env) => Promise<void>): Promise<void> {
  if (kind === "memory") {
    const disk = new MemoryDisk();
    await disk.mkdirp("/data");
    await fn({ kind, disk, dir: "/data", flipByte: (p, pos) => disk.corrupt(p, pos, 1) });
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "cairn-segment-test-" });
  try {
    await fn({
      kind,
      disk: systemDisk,
      dir,
      flipByte(path, position) {
        const fd = fs.openSync(path, "r+");
        try {
          const b = new Uint8Array(1);
          fs.readSync(fd, b, 0, 1, position);
          b[0] ^= 0xff;
          fs.writeSync(fd, b, 0, 1, position);
        } finally {
          fs.closeSync(fd);
        }
      },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Registers one test per disk kind. */
function bothDisks(name: string, fn: (env: Env) => Promise<void>): void {
  for (const kind of ["memory", "system"] as const) {
    Deno.test(`segment file (${kind} disk): ${name}`, () => withEnv(kind, fn));
  }
}

/** Byte offset of a block's data in the file (layout of docs/SEGMENT_FORMAT.md). */
function dataPosition(segmentBytes: number, block: number): number {
  const metaBytes = Math.ceil((segmentBytes / bs) * 16 / 4096) * 4096;
  return 4096 + metaBytes + block * bs;
}

/** A model of what each block should read as. */
class Model {
  data: Uint8Array;
  versions: number[];
  states: BlockState[];
  constructor(readonly blockCount: number) {
    this.data = new Uint8Array(blockCount * bs);
    this.versions = new Array(blockCount).fill(0);
    this.states = new Array(blockCount).fill("unwritten");
  }
  write(first: number, data: Uint8Array, version: number) {
    this.data.set(data, first * bs);
    for (let i = 0; i < data.length / bs; i++) {
      this.versions[first + i] = version;
      this.states[first + i] = "written";
    }
  }
  zero(first: number, count: number, version: number) {
    this.data.fill(0, first * bs, (first + count) * bs);
    for (let i = 0; i < count; i++) {
      this.versions[first + i] = version;
      this.states[first + i] = "zero";
    }
  }
}

async function assertMatchesModel(seg: SegmentFile, model: Model, first: number, count: number) {
  const r = await seg.readBlocks(first, count);
  assert.deepEqual(r.states, model.states.slice(first, first + count));
  assert.deepEqual(r.versions, model.versions.slice(first, first + count));
  assert.ok(
    Buffer.from(r.data).equals(Buffer.from(model.data.subarray(first * bs, (first + count) * bs))),
    `data of blocks ${first}+${count} differs from the model`,
  );
}

bothDisks("a fresh segment is sparse and reads as zeros", async ({ kind, disk, dir }) => {
  const path = `${dir}/seg-sparse`;
  const seg = await SegmentFile.create(disk, path, info());
  assert.equal(seg.blockCount, 2048);
  assert.equal(seg.maxVersion, 0);
  assert.equal(seg.epoch, 7);
  const r = await seg.readBlocks(0, seg.blockCount);
  assert.equal(r.data.length, 8 * MiB);
  assert.ok(r.data.every((b) => b === 0));
  assert.ok(r.states.every((s) => s === "unwritten"));
  assert.ok(r.versions.every((v) => v === 0));
  await seg.close();
  const allocated = kind === "system"
    ? (await Deno.stat(path)).blocks! * 512
    : (disk as MemoryDisk).allocatedBytes(path);
  assert.ok(allocated < 64 * 1024, `a fresh 8 MiB segment allocates ${allocated} bytes`);
  if (kind === "system") assert.equal((await Deno.stat(path)).size, 4096 + 32768 + 8 * MiB);
});

bothDisks("random writes, zeroes and reads match a model, also after reopen", async (env) => {
  const path = `${env.dir}/seg-model`;
  const random = seeded(42);
  let seg = await SegmentFile.create(env.disk, path, info({ segmentBytes: 1 * MiB }));
  const model = new Model(seg.blockCount);
  let version = 0;
  for (let op = 0; op < 300; op++) {
    const count = 1 + Math.floor(random() * 16);
    const first = Math.floor(random() * (seg.blockCount - count + 1));
    const pick = random();
    if (pick < 0.55) {
      const data = randomBytes(random, count * bs);
      await seg.writeBlocks(first, data, ++version);
      model.write(first, data, version);
    } else if (pick < 0.7) {
      await seg.zeroBlocks(first, count, ++version);
      model.zero(first, count, version);
    } else {
      await assertMatchesModel(seg, model, first, count);
    }
  }
  assert.equal(seg.maxVersion, version);
  await assertMatchesModel(seg, model, 0, seg.blockCount);
  const meta = await seg.readMeta(0, seg.blockCount);
  assert.deepEqual(meta.versions, model.versions);
  assert.deepEqual(meta.states, model.states);
  for (let i = 0; i < seg.blockCount; i++) {
    const expected = model.states[i] === "written"
      ? crc32c(model.data.subarray(i * bs, (i + 1) * bs))
      : 0;
    assert.equal(meta.crcs[i], expected, `crc of block ${i}`);
  }
  await seg.datasync();
  await seg.close();

  seg = await SegmentFile.open(env.disk, path);
  assert.equal(seg.volume, "vol-1");
  assert.equal(seg.segmentIndex, 3);
  assert.equal(seg.segmentBytes, 1 * MiB);
  assert.equal(seg.blockSize, bs);
  assert.equal(seg.epoch, 7);
  assert.equal(seg.maxVersion, version);
  await assertMatchesModel(seg, model, 0, seg.blockCount);
  await seg.close();
});

bothDisks(
  "zeroBlocks reads zeros over written data; lower versions are still written",
  async (env) => {
    const seg = await SegmentFile.create(
      env.disk,
      `${env.dir}/seg-zero`,
      info({ segmentBytes: 256 * 1024 }),
    );
    const data = randomBytes(seeded(1), 4 * bs);
    await seg.writeBlocks(10, data, 5);
    await seg.zeroBlocks(11, 2, 6);
    let r = await seg.readBlocks(10, 4);
    assert.deepEqual(r.states, ["written", "zero", "zero", "written"]);
    assert.deepEqual(r.versions, [5, 6, 6, 5]);
    assert.ok(Buffer.from(r.data.subarray(0, bs)).equals(Buffer.from(data.subarray(0, bs))));
    assert.ok(r.data.subarray(bs, 3 * bs).every((b) => b === 0));
    assert.ok(Buffer.from(r.data.subarray(3 * bs)).equals(Buffer.from(data.subarray(3 * bs))));

    // The storage layer writes what it is told; ordering is the caller's job.
    const older = randomBytes(seeded(2), bs);
    await seg.writeBlocks(11, older, 2);
    r = await seg.readBlocks(11, 1);
    assert.deepEqual(r.states, ["written"]);
    assert.deepEqual(r.versions, [2]);
    assert.ok(Buffer.from(r.data).equals(Buffer.from(older)));
    assert.equal(seg.maxVersion, 6);
    await seg.close();
  },
);

bothDisks("setEpoch and maxVersion persist across reopen", async (env) => {
  const path = `${env.dir}/seg-epoch`;
  let seg = await SegmentFile.create(env.disk, path, info({ segmentBytes: 64 * 1024, epoch: 0 }));
  assert.equal(seg.epoch, 0);
  await seg.setEpoch(12);
  assert.equal(seg.epoch, 12);
  await seg.writeBlocks(1, randomBytes(seeded(3), bs), 2 ** 40 + 3);
  await seg.zeroBlocks(2, 1, 9);
  await seg.datasync();
  await seg.close();
  seg = await SegmentFile.open(env.disk, path);
  assert.equal(seg.epoch, 12);
  assert.equal(seg.maxVersion, 2 ** 40 + 3);
  assert.deepEqual((await seg.readMeta(0, 3)).versions, [0, 2 ** 40 + 3, 9]);
  await seg.setEpoch(2 ** 50);
  await seg.datasync();
  await seg.close();
  seg = await SegmentFile.open(env.disk, path);
  assert.equal(seg.epoch, 2 ** 50);
  await seg.close();
});

bothDisks("open rejects bad magic, version, header crc, size, each clearly", async (env) => {
  const path = `${env.dir}/seg-bad`;
  const geometry = info({ segmentBytes: 64 * 1024 });
  const patch = async (position: number, bytes: number[]) => {
    const f = await env.disk.open(path, { create: false });
    await f.write(Uint8Array.from(bytes), position);
    await f.close();
  };
  const fresh = async () => {
    await env.disk.remove(path);
    await (await SegmentFile.create(env.disk, path, geometry)).close();
  };
  const rejects = (pattern: RegExp) =>
    assert.rejects(SegmentFile.open(env.disk, path), (err: unknown) => {
      assert.ok(err instanceof SegmentFileError, `expected SegmentFileError, got ${err}`);
      assert.match(err.message, pattern);
      assert.ok(err.message.includes(path), "the message names the file");
      return true;
    });

  await fresh();
  await patch(0, [0x58]); // "XAIRNSEG"
  await rejects(/bad magic "XAIRNSEG"/);

  await fresh();
  await patch(8, [4]);
  await rejects(/unsupported segment format version 4, expected 3/);

  await fresh();
  await patch(8, [1]); // a file written before volume ids and owner terms
  await rejects(/segment format version 1 .* is not supported by this Cairn: export the volume/);

  await fresh();
  await patch(8, [2]); // a file with the term inside the checksummed header
  await rejects(/segment format version 2 .* is not supported by this Cairn: export the volume/);

  await fresh();
  await patch(1024 + 9, [0x55]); // the term record rotted
  await rejects(/the term record fails its checksum/);

  await fresh();
  await patch(32, [99]); // epoch changed without updating the crc
  await rejects(/header checksum mismatch: stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}/);

  await fresh();
  await patch(4092, [0, 0, 0, 0]);
  await rejects(/header checksum mismatch/);

  await fresh();
  const size = 4096 + 4096 + 64 * 1024;
  let f = await env.disk.open(path, { create: false });
  await f.truncate(size + 4096);
  await f.close();
  await rejects(new RegExp(`file is ${size + 4096} bytes, expected ${size}`));

  await fresh();
  f = await env.disk.open(path, { create: false });
  await f.truncate(size - bs);
  await f.close();
  await rejects(new RegExp(`file is ${size - bs} bytes, expected ${size}`));

  f = await env.disk.open(path, { create: false });
  await f.truncate(100);
  await f.close();
  await rejects(/file is 100 bytes, too short/);

  // A missing file is the disk's own ENOENT, not a format error.
  await assert.rejects(
    SegmentFile.open(env.disk, `${env.dir}/missing`),
    (err: unknown) => (err as { code?: string }).code === "ENOENT",
  );
});

bothDisks("a flipped byte in a written block reads as corrupt and scrub lists it", async (env) => {
  const path = `${env.dir}/seg-rot`;
  const segmentBytes = 256 * 1024;
  const seg = await SegmentFile.create(env.disk, path, info({ segmentBytes }));
  const data = randomBytes(seeded(4), 3 * bs);
  await seg.writeBlocks(20, data, 1);
  await seg.datasync();
  assert.deepEqual((await seg.scrub()).corruptBlocks, []);

  env.flipByte(path, dataPosition(segmentBytes, 21) + 1234);
  const r = await seg.readBlocks(20, 3);
  assert.deepEqual(r.states, ["written", "corrupt", "written"]);
  assert.ok(r.data.subarray(bs, 2 * bs).every((b) => b === 0), "corrupt data is never returned");
  assert.ok(Buffer.from(r.data.subarray(0, bs)).equals(Buffer.from(data.subarray(0, bs))));
  assert.deepEqual((await seg.readBlocks(21, 1)).states, ["corrupt"]);

  // Rot in a meta entry's flags is caught too.
  env.flipByte(path, 4096 + 22 * 16 + 12);
  assert.deepEqual((await seg.readBlocks(22, 1)).states, ["corrupt"]);
  assert.deepEqual((await seg.readMeta(20, 3)).states, ["written", "written", "corrupt"]);

  const progress: number[] = [];
  const scrub = await seg.scrub((done, total) => {
    assert.equal(total, seg.blockCount);
    progress.push(done);
  });
  assert.deepEqual(scrub.corruptBlocks, [21, 22]);
  assert.equal(progress.at(-1), seg.blockCount);

  // A rewrite repairs the block.
  await seg.writeBlocks(21, data.subarray(bs, 2 * bs), 2);
  assert.deepEqual((await seg.readBlocks(21, 1)).states, ["written"]);
  await seg.close();
});

bothDisks("scrub digests agree for equal contents however the zeros got there", async (env) => {
  const geometry = info({ segmentBytes: 2 * MiB });
  const a = await SegmentFile.create(env.disk, `${env.dir}/seg-a`, geometry);
  const b = await SegmentFile.create(env.disk, `${env.dir}/seg-b`, geometry);
  const c = await SegmentFile.create(env.disk, `${env.dir}/seg-c`, geometry);
  const random = seeded(5);
  const shared = randomBytes(random, 2 * bs);
  // a: data, written zeros at 3, data trimmed at 5.
  await a.writeBlocks(7, shared, 1);
  await a.writeBlocks(3, new Uint8Array(bs), 2);
  await a.writeBlocks(5, randomBytes(random, bs), 3);
  await a.zeroBlocks(5, 1, 4);
  // b: the same data, with 3 and 5 never written.
  await b.writeBlocks(7, shared, 1);
  // c: the same versions as b but different bytes in one block.
  const other = shared.slice();
  other[5000] ^= 1;
  await c.writeBlocks(7, other, 1);

  const [sa, sb, sc] = [await a.scrub(), await b.scrub(), await c.scrub()];
  assert.equal(sa.dataDigest, sb.dataDigest);
  assert.notEqual(sa.metaDigest, sb.metaDigest);
  assert.notEqual(sc.dataDigest, sb.dataDigest);
  assert.equal(sc.metaDigest, sb.metaDigest);
  assert.match(sa.dataDigest, /^[0-9a-f]{64}$/);
  for (const s of [sa, sb, sc]) assert.deepEqual(s.corruptBlocks, []);
  for (const s of [a, b, c]) await s.close();
});

bothDisks("misuse throws SegmentFileError", async (env) => {
  const create = (over: Partial<SegmentInfo>) =>
    assert.rejects(SegmentFile.create(env.disk, `${env.dir}/seg-x`, info(over)), SegmentFileError);
  await create({ segmentBytes: 4096 * 3 + 1 });
  await create({ segmentBytes: 0 });
  await create({ blockSize: 3000 });
  await create({ blockSize: 256 });
  await create({ volume: "" });
  await create({ volume: "v".repeat(64) });
  await create({ volume: "vé" });
  await create({ segmentIndex: -1 });
  await create({ segmentIndex: 2 ** 32 });
  await create({ epoch: 1.5 });

  const seg = await SegmentFile.create(
    env.disk,
    `${env.dir}/seg-args`,
    info({ segmentBytes: 64 * 1024 }),
  );
  const n = seg.blockCount; // 16
  const block = new Uint8Array(bs);
  const bad: [string, () => Promise<unknown>][] = [
    ["write past the end", () => seg.writeBlocks(n, block, 1)],
    ["write straddling the end", () => seg.writeBlocks(n - 1, new Uint8Array(2 * bs), 1)],
    ["write at a negative block", () => seg.writeBlocks(-1, block, 1)],
    ["write at a fractional block", () => seg.writeBlocks(0.5, block, 1)],
    ["write of a partial block", () => seg.writeBlocks(0, new Uint8Array(bs + 1), 1)],
    ["write with a negative version", () => seg.writeBlocks(0, block, -1)],
    ["write with a NaN version", () => seg.writeBlocks(0, block, NaN)],
    ["write with an unsafe version", () => seg.writeBlocks(0, block, 2 ** 53)],
    ["zero past the end", () => seg.zeroBlocks(10, 7, 1)],
    ["zero with a negative count", () => seg.zeroBlocks(1, -1, 1)],
    ["zero with a bad version", () => seg.zeroBlocks(1, 1, 0.5)],
    ["read past the end", () => seg.readBlocks(15, 2)],
    ["read at NaN", () => seg.readBlocks(NaN, 1)],
    ["readMeta past the end", () => seg.readMeta(0, n + 1)],
    ["negative epoch", () => seg.setEpoch(-1)],
  ];
  for (const [what, call] of bad) await assert.rejects(call(), SegmentFileError, what);
  // Nothing reached the disk.
  assert.ok((await seg.readMeta(0, n)).states.every((s) => s === "unwritten"));
  assert.equal(seg.maxVersion, 0);
  // Empty ranges are no-ops.
  await seg.writeBlocks(n, new Uint8Array(0), 1);
  assert.equal((await seg.readBlocks(n, 0)).data.length, 0);

  await seg.close();
  await assert.rejects(seg.readBlocks(0, 1), /closed/);
  await assert.rejects(seg.writeBlocks(0, block, 1), /closed/);
});

Deno.test("segment file: IO pattern is one data and one meta pwrite per write, two preads per read", async () => {
  const disk = new MemoryDisk();
  await disk.mkdirp("/d");
  const seg = await SegmentFile.create(disk, "/d/seg", info({ segmentBytes: 1 * MiB }));
  const before = { ...disk.stats };
  const delta = () => {
    const d = {
      reads: disk.stats.reads - before.reads,
      writes: disk.stats.writes - before.writes,
      datasyncs: disk.stats.datasyncs - before.datasyncs,
    };
    Object.assign(before, disk.stats);
    return d;
  };
  await seg.writeBlocks(5, new Uint8Array(8 * bs).fill(1), 1);
  assert.deepEqual(delta(), { reads: 0, writes: 2, datasyncs: 0 });
  await seg.zeroBlocks(200, 50, 2);
  assert.deepEqual(delta(), { reads: 0, writes: 1, datasyncs: 0 });
  await seg.readBlocks(6, 1);
  assert.deepEqual(delta(), { reads: 2, writes: 0, datasyncs: 0 });
  await seg.readBlocks(190, 20); // none WRITTEN there: the data region is not touched
  assert.deepEqual(delta(), { reads: 1, writes: 0, datasyncs: 0 });
  // Concurrent reads share nothing that could mix their results.
  const [x, y] = await Promise.all([seg.readBlocks(5, 1), seg.readBlocks(200, 1)]);
  assert.deepEqual([x.states, y.states], [["written"], ["zero"]]);
  assert.ok(x.data.every((b) => b === 1) && y.data.every((b) => b === 0));
  await seg.datasync();
  assert.equal(delta().datasyncs, 1);
  await seg.close();
});

Deno.test("segment file (memory disk): a crash keeps synced writes and drops unsynced ones", async () => {
  const disk = new MemoryDisk();
  await disk.mkdirp("/d");
  const path = "/d/seg";
  let seg = await SegmentFile.create(disk, path, info({ segmentBytes: 64 * 1024 }));
  const a = new Uint8Array(bs).fill(0xaa);
  const b = new Uint8Array(bs).fill(0xbb);
  await seg.writeBlocks(1, a, 1);
  await seg.datasync();
  await seg.writeBlocks(2, b, 2);
  await seg.writeBlocks(1, b, 3);
  await seg.setEpoch(9);
  disk.crash();
  await assert.rejects(seg.readBlocks(0, 1), /crash/);

  seg = await SegmentFile.open(disk, path);
  assert.equal(seg.epoch, 7);
  assert.equal(seg.maxVersion, 1);
  const r = await seg.readBlocks(1, 2);
  assert.deepEqual(r.states, ["written", "unwritten"]);
  assert.ok(r.data.subarray(0, bs).every((x) => x === 0xaa));

  await seg.writeBlocks(2, b, 2);
  await seg.setEpoch(9);
  await seg.datasync();
  disk.crash({ keepPendingProbability: 0 });
  seg = await SegmentFile.open(disk, path);
  assert.equal(seg.epoch, 9);
  assert.deepEqual((await seg.readBlocks(2, 1)).states, ["written"]);
  await seg.close();
});

Deno.test("segment file (memory disk): torn crashes never return wrong data as written", async () => {
  const blockCount = 32;
  const outcomes = { old: 0, new: 0, corrupt: 0 };
  for (let seed = 1; seed <= 300; seed++) {
    const random = seeded(seed);
    const disk = new MemoryDisk({ seed });
    await disk.mkdirp("/d");
    const path = "/d/seg";
    let seg = await SegmentFile.create(disk, path, info({ segmentBytes: blockCount * bs }));
    // Per block: the synced (version, bytes), and every value written since.
    type Value = { version: number; bytes: Uint8Array };
    const zeros = new Uint8Array(bs);
    let synced: Value[] = Array.from({ length: blockCount }, () => ({ version: 0, bytes: zeros }));
    let candidates: Value[][] = synced.map((v) => [v]);
    let version = 0;
    const rounds = 1 + Math.floor(random() * 3);
    for (let round = 0; round < rounds; round++) {
      const ops = 1 + Math.floor(random() * 12);
      for (let op = 0; op < ops; op++) {
        const count = 1 + Math.floor(random() * 6);
        const first = Math.floor(random() * (blockCount - count + 1));
        version++;
        if (random() < 0.8) {
          const data = randomBytes(random, count * bs);
          await seg.writeBlocks(first, data, version);
          for (let i = 0; i < count; i++) {
            candidates[first + i].push({ version, bytes: data.subarray(i * bs, (i + 1) * bs) });
          }
        } else {
          await seg.zeroBlocks(first, count, version);
          for (let i = 0; i < count; i++) candidates[first + i].push({ version, bytes: zeros });
        }
      }
      if (round < rounds - 1) {
        await seg.datasync();
        synced = candidates.map((c) => c.at(-1)!);
        candidates = synced.map((v) => [v]);
      }
    }
    disk.crash({ keepPendingProbability: 0.5, tearWrites: true, random });

    seg = await SegmentFile.open(disk, path);
    const r = await seg.readBlocks(0, blockCount);
    const scrub = await seg.scrub();
    const corrupt: number[] = [];
    for (let i = 0; i < blockCount; i++) {
      if (r.states[i] === "corrupt") {
        corrupt.push(i);
        outcomes.corrupt++;
        continue;
      }
      const got = r.data.subarray(i * bs, (i + 1) * bs);
      const match = candidates[i].find((c) =>
        c.version === r.versions[i] && Buffer.from(c.bytes).equals(Buffer.from(got))
      );
      assert.ok(
        match,
        `seed ${seed} block ${i}: ${r.states[i]} v${r.versions[i]} is no value written`,
      );
      if (match === candidates[i][0]) outcomes.old++;
      else outcomes.new++;
    }
    assert.deepEqual(scrub.corruptBlocks, corrupt, `seed ${seed}: scrub agrees with reads`);
    assert.ok(seg.maxVersion <= version);
    await seg.close();
  }
  // The run must have exercised every outcome.
  assert.ok(outcomes.old > 0 && outcomes.new > 0 && outcomes.corrupt > 0, JSON.stringify(outcomes));
});

Deno.test("MemoryDisk: names need syncDir to survive a crash; handles die with it", async () => {
  const disk = new MemoryDisk();
  await disk.mkdirp("/a/b");
  assert.deepEqual(await disk.list("/a"), ["b"]);
  assert.deepEqual(await disk.list("/nope"), []);
  await assert.rejects(
    disk.open("/zz/f", { create: true }),
    (e: unknown) => (e as { code: string }).code === "ENOENT",
  );
  await assert.rejects(
    disk.open("/a/b/f", { create: false }),
    (e: unknown) => (e as { code: string }).code === "ENOENT",
  );

  const f = await disk.open("/a/b/f", { create: true });
  await f.write(new Uint8Array([1, 2, 3]), 0);
  await f.datasync();
  const g = await disk.open("/a/b/g", { create: true });
  await g.write(new Uint8Array([4]), 10);
  assert.equal(await g.sizeBytes(), 11);
  await g.datasync();
  await disk.syncDir("/a/b");
  const h = await disk.open("/a/b/h", { create: true });
  await h.datasync();
  await disk.remove("/a/b/g");
  assert.deepEqual(await disk.list("/a/b"), ["f", "h"]);

  disk.crash();
  assert.deepEqual(await disk.list("/a/b"), ["f", "g"]);
  await assert.rejects(f.read(new Uint8Array(1), 0), /crash/);
  const f2 = await disk.open("/a/b/f", { create: false });
  const buf = new Uint8Array(5);
  assert.equal(await f2.read(buf, 0), 3);
  assert.deepEqual([...buf], [1, 2, 3, 0, 0]);
  assert.deepEqual([...disk.fileBytes("/a/b/g")], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]);
  await f2.close();
  await assert.rejects(f2.read(buf, 0), /closed/);
});

Deno.test("MemoryDisk: torn writes keep a prefix cut at a 512-byte boundary", async () => {
  const lengths = new Set<number>();
  for (let seed = 1; seed <= 200; seed++) {
    const disk = new MemoryDisk();
    await disk.mkdirp("/d");
    const f = await disk.open("/d/f", { create: true });
    await f.truncate(8192);
    await f.datasync();
    await disk.syncDir("/d");
    await f.write(new Uint8Array(3000).fill(7), 100);
    disk.crash({ keepPendingProbability: 1, tearWrites: true, random: seeded(seed) });
    const bytes = disk.fileBytes("/d/f");
    assert.equal(bytes.length, 8192);
    const kept = bytes.indexOf(0, 100) - 100;
    assert.ok(bytes.subarray(100, 100 + kept).every((b) => b === 7));
    assert.ok(bytes.subarray(100 + kept).every((b) => b === 0));
    assert.ok(kept === 3000 || (100 + kept) % 512 === 0, `kept ${kept}`);
    lengths.add(kept);
  }
  // Cuts at 512, 1024, ..., 3072 and the whole write.
  assert.deepEqual([...lengths].sort((x, y) => x - y), [412, 924, 1436, 1948, 2460, 2972, 3000]);
});

Deno.test("MemoryDisk: corrupt flips bytes that survive a crash; truncate zeros the tail", async () => {
  const disk = new MemoryDisk();
  await disk.mkdirp("/d");
  const f = await disk.open("/d/f", { create: true });
  await f.write(new Uint8Array(10000).fill(0x0f), 0);
  await f.datasync();
  await disk.syncDir("/d");
  disk.corrupt("/d/f", 5000, 2);
  disk.crash();
  const bytes = disk.fileBytes("/d/f");
  assert.deepEqual([...bytes.subarray(4999, 5003)], [0x0f, 0xf0, 0xf0, 0x0f]);
  assert.throws(() => disk.corrupt("/d/f", 9999, 2), /past the end/);

  const g = await disk.open("/d/f", { create: false });
  await g.truncate(4100);
  await g.truncate(10000);
  const back = new Uint8Array(10000);
  await g.read(back, 0);
  assert.ok(back.subarray(0, 4100).every((b) => b === 0x0f || b === 0xf0));
  assert.ok(back.subarray(4100).every((b) => b === 0));
  assert.ok(disk.allocatedBytes("/d/f") <= 8192);
  await assert.rejects(
    disk.remove("/d"),
    (e: unknown) => (e as { code: string }).code === "EISDIR",
  );
  await disk.remove("/d/f");
  await disk.remove("/d/f");
  assert.equal(disk.exists("/d/f"), false);
});

Deno.test("MemoryDisk: durableCopy holds what a crash would keep and leaves the disk as it is", async () => {
  const disk = new MemoryDisk();
  await disk.mkdirp("/d");
  const f = await disk.open("/d/f", { create: true });
  await f.write(new Uint8Array([1, 2, 3]), 0);
  await f.datasync();
  const g = await disk.open("/d/g", { create: true });
  await g.write(new Uint8Array([4]), 0);
  await g.datasync();
  await disk.syncDir("/d");
  // Unsynced: a write over f, a new name, a removal.
  await f.write(new Uint8Array([9]), 1);
  const h = await disk.open("/d/h", { create: true });
  await h.datasync();
  await disk.remove("/d/g");

  const copy = disk.durableCopy();
  assert.deepEqual(await copy.list("/d"), ["f", "g"]);
  assert.deepEqual([...copy.fileBytes("/d/f")], [1, 2, 3]);
  assert.deepEqual([...copy.fileBytes("/d/g")], [4]);
  // Writes to the copy stay there; the disk still reads its page cache.
  const c = await copy.open("/d/f", { create: false });
  await c.write(new Uint8Array([7]), 0);
  assert.deepEqual([...disk.fileBytes("/d/f")], [1, 9, 3]);
  assert.deepEqual(await disk.list("/d"), ["f", "h"]);
  await f.read(new Uint8Array(1), 0); // handles of the disk stay valid

  disk.crash();
  assert.deepEqual(await disk.list("/d"), await copy.list("/d"));
  assert.deepEqual([...disk.fileBytes("/d/f")], [1, 2, 3]);
});

Deno.test("MemoryDisk: a durable copy and its disk share no writes either way (copy on write)", async () => {
  const disk = new MemoryDisk();
  await disk.mkdirp("/d");
  const f = await disk.open("/d/f", { create: true });
  await f.write(new Uint8Array(8192).fill(1), 0);
  await f.datasync();
  await disk.syncDir("/d");
  const copy = disk.durableCopy();
  const c = await copy.open("/d/f", { create: false });
  // The disk syncs a write over the shared pages; the copy writes its own; then each crashes.
  await f.write(new Uint8Array([2]), 0);
  await f.datasync();
  await c.write(new Uint8Array([3]), 4096);
  await c.truncate(4097);
  await c.datasync();
  disk.crash();
  copy.crash();
  const mine = disk.fileBytes("/d/f");
  assert.equal(mine.length, 8192);
  assert.deepEqual([mine[0], mine[1], mine[4096], mine[8191]], [2, 1, 1, 1]);
  assert.deepEqual([...copy.fileBytes("/d/f").subarray(4095)], [1, 3]);
  assert.equal(copy.fileBytes("/d/f")[0], 1);
});
