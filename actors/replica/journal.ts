/**
 * The node journal: one append-only write-ahead log per node, shared by every
 * segment file on it. A write batch is appended as one record and made
 * durable with one fdatasync of the journal, however many segment files it
 * touches (group commit across segments and volumes). Segment files receive
 * the same writes in the page cache and are fdatasynced at checkpoints; after
 * a crash, replaying the journal redoes every write that may not have reached
 * them, including one cut between its data and meta pwrites.
 *
 * File `journal/<generation>.log`, a sequence of records:
 *   u32 magic "CJR1", u32 bodyBytes, u32 crc32c(body), u32 0,
 *   body: u8 volumeNameBytes, volume name, write batch (see wire.ts).
 * Replay stops at the first record that is short or fails its crc (a torn tail).
 */
import type { Disk, DiskFile } from "../ports.ts";
import { crc32c } from "../../protocol/crc32c.ts";
import { GroupSync } from "./core.ts";
import { decodeWriteBatch, type WriteEntry } from "./wire.ts";

/** Journal size at which a checkpoint syncs the segment files and starts a new file. */
export const journalCheckpointBytes = 64 * 1024 * 1024;
/** fdatasyncs of the journal allowed to run at once (see GroupSync). */
export const journalConcurrentSyncs = 4;
const recordMagic = 0x3152_4a43; // "CJR1" little-endian
const recordHeaderBytes = 16;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export interface JournalRecord {
  volume: string;
  epoch: number;
  entries: WriteEntry[];
}

/**
 * A record as two buffers, header and the write batch as it is (no copy of
 * the data): written with one pwritev.
 */
export function encodeRecord(volume: string, batch: Uint8Array): Uint8Array[] {
  const name = encoder.encode(volume);
  const head = new Uint8Array(recordHeaderBytes + 1 + name.length);
  head[recordHeaderBytes] = name.length;
  head.set(name, recordHeaderBytes + 1);
  const view = new DataView(head.buffer);
  view.setUint32(0, recordMagic, true);
  view.setUint32(4, 1 + name.length + batch.length, true);
  view.setUint32(8, crc32c(batch, crc32c(head.subarray(recordHeaderBytes))), true);
  return [head, batch];
}

/** Decodes records from the start of a journal file; stops at the first bad one. */
export function decodeRecords(bytes: Uint8Array): { records: JournalRecord[]; validBytes: number } {
  const records: JournalRecord[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  while (at + recordHeaderBytes <= bytes.length) {
    if (view.getUint32(at, true) !== recordMagic) break;
    const bodyBytes = view.getUint32(at + 4, true);
    const end = at + recordHeaderBytes + bodyBytes;
    if (end > bytes.length) break;
    const body = bytes.subarray(at + recordHeaderBytes, end);
    if (crc32c(body) !== view.getUint32(at + 8, true)) break;
    try {
      const volume = decoder.decode(body.subarray(1, 1 + body[0]));
      const { epoch, entries } = decodeWriteBatch(body.subarray(1 + body[0]));
      records.push({ volume, epoch, entries });
    } catch {
      break;
    }
    at = end;
  }
  return { records, validBytes: at };
}

export class NodeJournal {
  private file!: DiskFile;
  private generation = 0;
  private tailBytes = 0;
  private groupSync!: GroupSync;
  /** Set while a rotation makes the previous file durable; syncs wait for it. */
  private rotation: Promise<void> = Promise.resolve();

  private constructor(private readonly disk: Disk, private readonly dir: string) {}

  /**
   * Opens the journal directory: returns every record of the existing files
   * (oldest first) for replay. Call `reset()` once they are applied and the
   * segment files synced.
   */
  static async open(
    disk: Disk,
    dir: string,
  ): Promise<{ journal: NodeJournal; records: JournalRecord[] }> {
    await disk.mkdirp(dir);
    const journal = new NodeJournal(disk, dir);
    const records: JournalRecord[] = [];
    for (const generation of await journal.generations()) {
      journal.generation = Math.max(journal.generation, generation);
      const file = await disk.open(journal.path(generation), { create: false });
      try {
        const bytes = new Uint8Array(await file.sizeBytes());
        await file.read(bytes, 0);
        records.push(...decodeRecords(bytes).records);
      } finally {
        await file.close();
      }
    }
    return { journal, records };
  }

  private path(generation: number): string {
    return `${this.dir}/${String(generation).padStart(10, "0")}.log`;
  }

  private async generations(): Promise<number[]> {
    return (await this.disk.list(this.dir))
      .filter((name) => /^\d+\.log$/.test(name))
      .map((name) => Number(name.slice(0, -4)))
      .sort((a, b) => a - b);
  }

  /** Starts a fresh file and removes every older one (their writes are in synced segment files). */
  async reset(): Promise<void> {
    const old = await this.generations();
    await (await this.startFile())?.close();
    for (const generation of old) await this.disk.remove(this.path(generation));
    await this.disk.syncDir(this.dir);
  }

  private async startFile(): Promise<DiskFile | undefined> {
    const previous = this.file;
    this.generation++;
    const file = await this.disk.open(this.path(this.generation), { create: true });
    await file.truncate(0);
    await this.disk.syncDir(this.dir);
    this.file = file;
    this.tailBytes = 0;
    this.groupSync = new GroupSync(() => file.datasync(), journalConcurrentSyncs);
    return previous;
  }

  get sizeBytes(): number {
    return this.tailBytes;
  }

  /** Appends one record at the tail (not yet durable); returns the generation it went to. */
  async append(record: Uint8Array[]): Promise<number> {
    const generation = this.generation;
    const at = this.tailBytes;
    for (const part of record) this.tailBytes += part.length;
    await this.file.writev(record, at);
    return generation;
  }

  /** Makes every record appended so far durable, in whichever file it went to. */
  async sync(): Promise<void> {
    // Captured together: a record went either to this group's file or to the
    // file a running rotation is making durable.
    const rotation = this.rotation;
    await Promise.all([this.groupSync.sync(), rotation]);
  }

  /**
   * Switches appends to a new file. Resolves with the previous generation
   * once it is durable; it may be removed when the segment files are synced.
   */
  rotate(): Promise<number> {
    const previousFile = this.file;
    const previousSync = this.groupSync;
    const previousGeneration = this.generation;
    const done = (async () => {
      await this.startFile();
      await previousSync.sync();
      await previousFile.close();
      return previousGeneration;
    })();
    this.rotation = done.then(() => {}, () => {});
    return done;
  }

  async remove(generation: number): Promise<void> {
    await this.disk.remove(this.path(generation));
    await this.disk.syncDir(this.dir);
  }

  async close(): Promise<void> {
    await this.rotation;
    await this.groupSync?.sync();
    await this.file?.close();
  }
}
