/**
 * Fail-stop after a failed fdatasync ("fsyncgate"): the host acknowledges
 * nothing that depended on it, refuses every later request, keeps the journal
 * (never resets or removes it) and calls onFailStop once; a restart replays the
 * journal, so every acknowledged write is there.
 */
import assert from "node:assert/strict";
import { MemoryDisk } from "../../actors/memory_disk.ts";
import { directWriteMinBytes, ReplicaHost } from "../../actors/replica/host.ts";
import {
  bodyText,
  decodeReadReply,
  decodeReply,
  encodeReadRequest,
  encodeWriteBatch,
  EntryKind,
  type WriteEntry,
} from "../../actors/replica/wire.ts";
import { decodeRecords } from "../../actors/replica/journal.ts";
import { ErrorCode } from "../../protocol/errors.ts";

const segmentBytes = 256 * 1024;
const encoder = new TextEncoder();

const entry = (segment: number, firstBlock: number, version: number, blocks = 1): WriteEntry => ({
  segment,
  firstBlock,
  blockCount: blocks,
  kind: EntryKind.data,
  version,
  data: new Uint8Array(blocks * 4096).fill(version),
});

interface Setup {
  disk: MemoryDisk;
  host: ReplicaHost;
  /** Reasons onFailStop was called with. */
  failStops: string[];
  /** Lines logged at error level. */
  errors: string[];
}

async function setup(
  options: { journalCheckpointBytes?: number; onFailStop?: (host: ReplicaHost) => void } = {},
): Promise<Setup> {
  const disk = new MemoryDisk({ seed: 7 });
  const failStops: string[] = [];
  const errors: string[] = [];
  const log = { info() {}, warn() {}, error: (line: string) => errors.push(line) };
  const host: ReplicaHost = new ReplicaHost("/data", disk, log, {
    journalCheckpointBytes: options.journalCheckpointBytes,
    onFailStop: (reason) => {
      failStops.push(reason);
      options.onFailStop?.(host);
    },
  });
  await host.loadAll();
  await host.createSegments("vol", segmentBytes, [0, 1], 1);
  await host.createSegments("other", segmentBytes, [0], 1);
  return { disk, host, failStops, errors };
}

async function write(host: ReplicaHost, entries: WriteEntry[], volume = "vol") {
  return decodeReply(await host.handle(volume, "write", encodeWriteBatch(1, entries)));
}

async function writeOk(host: ReplicaHost, entries: WriteEntry[], volume = "vol") {
  const reply = await write(host, entries, volume);
  assert.equal(reply.status, ErrorCode.OK, bodyText(reply.body));
}

async function readBlock(host: ReplicaHost, segment: number, block: number, volume = "vol") {
  const reply = decodeReply(
    await host.handle(
      volume,
      "read",
      encodeReadRequest({ segment, epoch: 1, firstBlock: block, blockCount: 1 }),
    ),
  );
  return reply;
}

/** The node refuses writes, reads and fences with an IO_ERROR saying it failed-stop. */
async function assertRefusesEverything(host: ReplicaHost): Promise<void> {
  const replies = {
    write: await write(host, [entry(0, 9, 99)]),
    read: await readBlock(host, 0, 0),
    fence: decodeReply(
      await host.handle(
        "vol",
        "fence",
        encoder.encode(JSON.stringify({ epoch: 2, segments: [0] })),
      ),
    ),
  };
  for (const [op, reply] of Object.entries(replies)) {
    assert.equal(
      reply.status,
      ErrorCode.IO_ERROR,
      `${op} after fail-stop: ${bodyText(reply.body)}`,
    );
    assert.match(bodyText(reply.body), /failed-stop/, `${op} after fail-stop`);
  }
  await assert.rejects(host.writeEntries("vol", 1, [entry(0, 9, 99)]), /failed-stop/);
  await assert.rejects(
    host.readBlocks("vol", { segment: 0, epoch: 1, firstBlock: 0, blockCount: 1 }),
    /failed-stop/,
  );
}

function assertFailedStopOnce(s: Setup, what: RegExp): void {
  assert.equal(s.failStops.length, 1, `onFailStop calls: ${JSON.stringify(s.failStops)}`);
  assert.match(s.failStops[0], what);
  const lines = s.errors.filter((line) => line.startsWith("fail-stop:"));
  assert.equal(lines.length, 1, `fail-stop log lines: ${JSON.stringify(s.errors)}`);
  assert.match(lines[0], /journal kept for replay/);
}

/** Every journal file, name to contents. */
async function journalFiles(disk: MemoryDisk): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const name of await disk.list("/data/journal")) {
    files.set(name, disk.fileBytes(`/data/journal/${name}`));
  }
  return files;
}

/** Power loss, then a new host on the same disk (faults cleared): every acknowledged write is back. */
async function assertAcknowledgedSurviveRestart(
  disk: MemoryDisk,
  acknowledged: { volume?: string; segment: number; block: number; version: number }[],
): Promise<void> {
  disk.crash();
  const after = new ReplicaHost("/data", disk, { info() {}, warn() {}, error() {} });
  await after.loadAll();
  for (const { volume = "vol", segment, block, version } of acknowledged) {
    const reply = await readBlock(after, segment, block, volume);
    assert.equal(reply.status, ErrorCode.OK, bodyText(reply.body));
    const result = decodeReadReply(new Uint8Array([reply.status, ...reply.body]));
    assert.equal(
      result.versions[0],
      version,
      `${volume}/${segment}/${block}: acknowledged version ${version} lost`,
    );
    assert.ok(result.data.every((b) => b === version), `${volume}/${segment}/${block}: data`);
  }
  await after.close();
}

Deno.test("MemoryDisk: a failed fdatasync drops the pending writes; a later good one does not bring them back", async () => {
  const disk = new MemoryDisk();
  await disk.mkdirp("/d");
  const file = await disk.open("/d/f", { create: true });
  await disk.syncDir("/d");
  await file.write(new Uint8Array([1, 1]), 0);
  await file.datasync();
  await file.write(new Uint8Array([2]), 0);
  const clear = disk.failDatasync("/d/f", { times: 1 });
  await assert.rejects(file.datasync(), /EIO/);
  const buf = new Uint8Array(2);
  await file.read(buf, 0);
  assert.deepEqual([...buf], [2, 1], "the page cache still serves the write");
  await file.datasync(); // the fault is spent: succeeds, with nothing left to write
  assert.equal(disk.stats.failedSyncs, 1);
  clear();
  const fails = disk.failDatasync((path) => path === "/d");
  await assert.rejects(disk.syncDir("/d"), /EIO/);
  fails();
  await disk.syncDir("/d");
  disk.crash();
  assert.deepEqual([...disk.fileBytes("/d/f")], [1, 1], "the write whose sync failed is gone");
});

Deno.test("fail-stop: a failed journal fdatasync is not acknowledged; the host refuses everything after and keeps the journal", async () => {
  const s = await setup();
  await writeOk(s.host, [entry(0, 0, 1)]);
  s.disk.failDatasync("/data/journal/", { times: 1 });
  const failed = await write(s.host, [entry(0, 1, 2)]);
  assert.equal(failed.status, ErrorCode.IO_ERROR, "the write whose journal sync failed");
  await assertRefusesEverything(s.host);
  assertFailedStopOnce(s, /fdatasync of \/data\/journal\/\d+\.log failed/);
  const journal = await journalFiles(s.disk);
  assert.ok(journal.size > 0);
  await s.host.close();
  assert.deepEqual(
    await journalFiles(s.disk),
    journal,
    "close() after a failure keeps the journal",
  );
  assert.equal(s.failStops.length, 1);
  await assertAcknowledgedSurviveRestart(s.disk, [{ segment: 0, block: 0, version: 1 }]);
});

Deno.test("fail-stop: a write whose fdatasync succeeded after another one failed is not acknowledged either", async () => {
  const s = await setup();
  s.disk.failDatasync("/data/journal/", { times: 1 });
  // Two volumes: two write chains, so both records are appended before either sync runs;
  // the first sync fails and (as Linux may) drops both from the disk, the second succeeds.
  const replies = await Promise.all([
    write(s.host, [entry(0, 0, 1)], "vol"),
    write(s.host, [entry(0, 0, 2)], "other"),
  ]);
  const acknowledged = [
    { volume: "vol", segment: 0, block: 0, version: 1 },
    { volume: "other", segment: 0, block: 0, version: 2 },
  ].filter((_, i) => replies[i].status === ErrorCode.OK);
  await assertAcknowledgedSurviveRestart(s.disk, acknowledged);
  assert.deepEqual(
    replies.map((r) => r.status),
    [ErrorCode.IO_ERROR, ErrorCode.IO_ERROR],
    "nothing is acknowledged once an fdatasync failed",
  );
  assertFailedStopOnce(s, /fdatasync of \/data\/journal\//);
});

Deno.test("fail-stop: a failed segment fdatasync in a checkpoint keeps the journal generation that needs it", async () => {
  const s = await setup();
  const acknowledged = [];
  for (let i = 0; i < 6; i++) {
    await writeOk(s.host, [entry(i % 2, i, 10 + i)]);
    acknowledged.push({ segment: i % 2, block: i, version: 10 + i });
  }
  const before = await journalFiles(s.disk);
  assert.equal(before.size, 1);
  const [generation, bytes] = [...before][0];
  assert.equal(decodeRecords(bytes).records.length, 6);
  const clear = s.disk.failDatasync("/segments/vol/000001.seg");
  await assert.rejects(s.host.checkpoint());
  assert.ok((await journalFiles(s.disk)).has(generation), "the checkpoint removed the generation");
  await s.host.close();
  assert.ok((await journalFiles(s.disk)).has(generation), "close() removed the generation");
  assert.deepEqual((await journalFiles(s.disk)).get(generation), bytes);
  await assertRefusesEverything(s.host);
  assertFailedStopOnce(s, /fdatasync of \/data\/segments\/vol\/000001\.seg failed/);
  await assert.rejects(s.host.checkpoint(), /failed-stop/);
  clear();
  await assertAcknowledgedSurviveRestart(s.disk, acknowledged);
});

Deno.test("fail-stop: a checkpoint started by the journal size fails the host, not a dropped promise", async () => {
  let closedByCallback: Promise<void> | undefined;
  // The node stops itself from onFailStop; the host copes with close() from inside it.
  const s = await setup({
    journalCheckpointBytes: 1,
    onFailStop: (host) => (closedByCallback = host.close()),
  });
  const clear = s.disk.failDatasync("/segments/vol/");
  await writeOk(s.host, [entry(0, 0, 1)]); // durable in the journal, then starts a checkpoint
  for (let i = 0; i < 50 && !s.failStops.length; i++) await new Promise((r) => setTimeout(r, 0));
  assertFailedStopOnce(s, /fdatasync of \/data\/segments\/vol\/000000\.seg failed/);
  await assertRefusesEverything(s.host);
  await closedByCallback;
  const journal = await journalFiles(s.disk);
  assert.ok(
    [...journal.values()].some((bytes) => decodeRecords(bytes).records.length === 1),
    "the record is still in the journal",
  );
  clear();
  await assertAcknowledgedSurviveRestart(s.disk, [{ segment: 0, block: 0, version: 1 }]);
});

Deno.test("fail-stop: close() after a failed segment fdatasync keeps the journal for replay", async () => {
  const s = await setup();
  await writeOk(s.host, [entry(0, 0, 1), entry(1, 3, 2)]);
  const clear = s.disk.failDatasync("/segments/vol/000000.seg");
  await s.host.close(); // its sync of the segment files fails: fail-stop, no journal reset
  assert.ok(
    [...(await journalFiles(s.disk)).values()].some((b) => decodeRecords(b).records.length === 1),
    "the journal was reset",
  );
  clear();
  await assertAcknowledgedSurviveRestart(s.disk, [
    { segment: 0, block: 0, version: 1 },
    { segment: 1, block: 3, version: 2 },
  ]);
  assertFailedStopOnce(s, /fdatasync of \/data\/segments\/vol\/000000\.seg failed/);
});

Deno.test("fail-stop: a failed fsync of the journal directory in a checkpoint", async () => {
  const s = await setup();
  await writeOk(s.host, [entry(1, 0, 5)]);
  const before = await journalFiles(s.disk);
  const clear = s.disk.failDatasync((path) => path === "/data/journal");
  await assert.rejects(s.host.checkpoint());
  await s.host.close();
  for (const [name, bytes] of before) {
    assert.deepEqual((await journalFiles(s.disk)).get(name), bytes, `${name} kept`);
  }
  await assertRefusesEverything(s.host);
  assertFailedStopOnce(s, /fsync of directory \/data\/journal failed/);
  clear();
  await assertAcknowledgedSurviveRestart(s.disk, [{ segment: 1, block: 0, version: 5 }]);
});

Deno.test("fail-stop: a failed fdatasync of an in-place write is not acknowledged", async () => {
  const s = await setup();
  s.disk.failDatasync("/segments/vol/000001.seg", { times: 1 });
  const reply = await write(s.host, [entry(1, 0, 3, directWriteMinBytes / 4096)]);
  assert.equal(reply.status, ErrorCode.IO_ERROR);
  await assertRefusesEverything(s.host);
  assertFailedStopOnce(s, /fdatasync of \/data\/segments\/vol\/000001\.seg failed/);
  await s.host.close();
});
