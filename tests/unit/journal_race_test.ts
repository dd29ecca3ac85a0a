/**
 * Journal rotation against concurrent writes: many small journaled writes race
 * checkpoints (explicit ones and ones the tiny threshold starts), with seeded
 * yields inside every disk call, then a power loss. Every acknowledged write
 * must read back after replay.
 */
import assert from "node:assert/strict";
import { mulberry32 } from "../harness/random.ts";
import { MemoryDisk } from "../../actors/memory_disk.ts";
import type { Disk, DiskFile } from "../../actors/ports.ts";
import { ReplicaHost } from "../../actors/replica/host.ts";
import { EntryKind, type WriteEntry } from "../../actors/replica/wire.ts";

const silent = { info() {}, warn() {}, error() {} };
const segmentBytes = 16 * 4096;
const volumes: Record<string, number[]> = { a: [0, 1, 2], b: [0, 1] };
/** Writes land on the first few blocks of each segment, so they overlap. */
const hotBlocks = 5;

/** Up to max microtask turns, seeded. */
async function yields(random: () => number, max: number): Promise<void> {
  const n = Math.floor(random() * (max + 1));
  for (let i = 0; i < n; i++) await Promise.resolve();
}

/**
 * A Disk over a MemoryDisk that yields a seeded number of microtask turns
 * before each call, so calls interleave differently per seed, and that can be
 * killed: once `dead`, every call throws, as if the process lost power with
 * the disk (the old host can then touch nothing the crash left).
 * Except write(): the system disk's pwrites run synchronously, so a segment
 * write's data and meta pwrites reach the page cache together, before any
 * fdatasync can run between them. (Journal appends, writev, are delayed.)
 */
class JitterDisk implements Disk {
  dead = false;
  constructor(private readonly inner: MemoryDisk, private readonly random: () => number) {}

  async step(): Promise<void> {
    await yields(this.random, 3);
    if (this.dead) throw new Error("process died with the power loss");
  }

  async open(path: string, options: { create: boolean }): Promise<DiskFile> {
    await this.step();
    return new JitterFile(this, await this.inner.open(path, options));
  }
  async remove(path: string): Promise<void> {
    await this.step();
    await this.inner.remove(path);
  }
  async removeDir(path: string): Promise<void> {
    await this.step();
    await this.inner.removeDir(path);
  }
  async list(dir: string): Promise<string[]> {
    await this.step();
    return await this.inner.list(dir);
  }
  async mkdirp(dir: string): Promise<void> {
    await this.step();
    await this.inner.mkdirp(dir);
  }
  async syncDir(dir: string): Promise<void> {
    await this.step();
    await this.inner.syncDir(dir);
  }
}

class JitterFile implements DiskFile {
  constructor(private readonly disk: JitterDisk, private readonly inner: DiskFile) {}

  async read(buf: Uint8Array, position: number): Promise<number> {
    await this.disk.step();
    return await this.inner.read(buf, position);
  }
  write(buf: Uint8Array, position: number): Promise<void> {
    if (this.disk.dead) return Promise.reject(new Error("process died with the power loss"));
    return this.inner.write(buf, position);
  }
  async writev(buffers: Uint8Array[], position: number): Promise<void> {
    await this.disk.step();
    await this.inner.writev(buffers, position);
  }
  async datasync(): Promise<void> {
    await this.disk.step();
    await this.inner.datasync();
  }
  async truncate(lengthBytes: number): Promise<void> {
    await this.disk.step();
    await this.inner.truncate(lengthBytes);
  }
  async sizeBytes(): Promise<number> {
    await this.disk.step();
    return await this.inner.sizeBytes();
  }
  async close(): Promise<void> {
    await this.disk.step();
    await this.inner.close();
  }
}

/** A block's contents name its version: u32 version, then a fill derived from it. */
function blockOf(version: number): Uint8Array {
  const data = new Uint8Array(4096).fill((version % 251) + 1);
  new DataView(data.buffer).setUint32(0, version, true);
  return data;
}

function holdsVersion(data: Uint8Array, version: number): boolean {
  const expected = blockOf(version);
  return data.length === expected.length && data.every((b, i) => b === expected[i]);
}

/**
 * One seeded run; returns what went wrong, or null. Even seeds let every write
 * and checkpoint finish before the power loss, odd ones cut them mid-flight.
 * In every third run one fdatasync (journal, segment file or directory) fails
 * on the way: the host fails-stop, and acknowledged writes must survive that too.
 */
async function raceOnce(seed: number): Promise<string | null> {
  const random = mulberry32(seed);
  const memory = new MemoryDisk({ seed });
  const disk = new JitterDisk(memory, random);
  const host = new ReplicaHost("/data", disk, silent, {
    journalCheckpointBytes: 256 + Math.floor(random() * 4096),
  });
  await host.loadAll();
  for (const [volume, segments] of Object.entries(volumes)) {
    await host.createSegments(volume, segmentBytes, segments, 1);
  }

  let nextVersion = 1;
  /** Per block ("volume/segment/block"): every version issued, and the highest acknowledged. */
  const issued = new Map<string, Set<number>>();
  const acked = new Map<string, number>();
  const key = (volume: string, segment: number, block: number) => `${volume}/${segment}/${block}`;

  const writer = async () => {
    for (let i = 0; i < 20 && !disk.dead; i++) {
      await yields(random, 6);
      const volume = random() < 0.6 ? "a" : "b";
      // One entry per segment in a batch, on 1 to all of the volume's segments.
      const segments = volumes[volume].filter(() => random() < 0.6);
      if (!segments.length) segments.push(volumes[volume][0]);
      const entries: WriteEntry[] = segments.map((segment) => {
        const version = nextVersion++;
        const firstBlock = Math.floor(random() * hotBlocks);
        issued.set(
          key(volume, segment, firstBlock),
          issued.get(key(volume, segment, firstBlock)) ?? new Set(),
        );
        issued.get(key(volume, segment, firstBlock))!.add(version);
        return {
          segment,
          firstBlock,
          blockCount: 1,
          kind: EntryKind.data,
          version,
          data: blockOf(version),
        };
      });
      // Versions are taken and the write starts in one synchronous step, so a block's
      // writes reach the host in version order, as a volume actor sends them.
      const done = host.writeEntries(volume, 1, entries).then(() => true, () => false);
      if (!await done) continue;
      for (const e of entries) {
        const k = key(volume, e.segment, e.firstBlock);
        acked.set(k, Math.max(acked.get(k) ?? 0, e.version));
      }
    }
  };
  let writing = true;
  const checkpointer = async () => {
    while (writing && !disk.dead) {
      await yields(random, 40);
      await host.checkpoint().catch(() => {});
    }
  };

  const faultTargets = [
    "/data/journal/",
    "/data/segments/a/",
    "/data/segments/b/0",
    "/data/journal",
  ];
  let clearFault = () => {};
  const faulter = async () => {
    await yields(random, 1500);
    const target = faultTargets[Math.floor(random() * faultTargets.length)];
    clearFault = memory.failDatasync((path) => path.startsWith(target), { times: 1 });
  };

  const writers = Array.from({ length: 6 }, writer);
  const checkpoints = checkpointer();
  const faulted = seed % 3 === 0 ? faulter() : Promise.resolve();
  if (seed % 2 === 0) {
    await Promise.all(writers);
    writing = false;
    await checkpoints;
  } else {
    await yields(random, 2000);
  }
  // Power loss: the process dies with it, so the old host touches nothing after.
  disk.dead = true;
  memory.crash();
  await Promise.all(writers);
  writing = false;
  await checkpoints;

  await faulted;
  clearFault(); // a fault the old host never hit is not for the new one
  const after = new ReplicaHost("/data", memory, silent);
  await after.loadAll();
  for (const [k, versions] of issued) {
    const [volume, segment, block] = k.split("/");
    const result = await after.readBlocks(volume, {
      segment: Number(segment),
      epoch: 1,
      firstBlock: Number(block),
      blockCount: 1,
    });
    const version = result.versions[0];
    const state = result.states[0];
    const want = acked.get(k) ?? 0;
    if (version < want) {
      return `block ${k}: acknowledged version ${want} lost, reads ${state} version ${version}`;
    }
    if (version === 0) continue;
    if (state !== "written" || !versions.has(version) || !holdsVersion(result.data, version)) {
      return `block ${k}: reads ${state} version ${version} with wrong data (acknowledged ${want})`;
    }
  }
  await after.close();
  return null;
}

Deno.test("journal race: acknowledged writes survive a power loss while checkpoints rotate the journal", async () => {
  const failures: string[] = [];
  for (let seed = 1; seed <= 200; seed++) {
    const failure = await raceOnce(seed);
    if (failure) failures.push(`seed ${seed}: ${failure}`);
  }
  assert.deepEqual(
    failures,
    [],
    `${failures.length} of 200 seeds failed:\n${failures.slice(0, 5).join("\n")}`,
  );
});
