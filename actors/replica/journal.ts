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
import type { Disk, DiskFile, MessageBody } from "../ports.ts";
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
 * A record as buffers: its header, then the write batch as it is, whole or in parts (no copy
 * of the data): written with one pwritev.
 */
export function encodeRecord(volume: string, batch: MessageBody): Uint8Array[] {
  const parts = batch instanceof Uint8Array ? [batch] : batch;
  const name = encoder.encode(volume);
  const head = new Uint8Array(recordHeaderBytes + 1 + name.length);
  head[recordHeaderBytes] = name.length;
  head.set(name, recordHeaderBytes + 1);
  let crc = crc32c(head.subarray(recordHeaderBytes));
  let batchBytes = 0;
  for (const part of parts) {
    crc = crc32c(part, crc);
    batchBytes += part.length;
  }
  const view = new DataView(head.buffer);
  view.setUint32(0, recordMagic, true);
  view.setUint32(4, 1 + name.length + batchBytes, true);
  view.setUint32(8, crc, true);
  return [head, ...parts];
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

/**
 * One journal file. Records go to it until it is retired; a record's
 * generation is that of the file it was written to, by construction: append()
 * hands back the file itself.
 */
export class JournalFile {
  private tailBytes = 0;
  /** Appends and fdatasyncs under way: retire() lets them end before it closes the file. */
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly groupSync: GroupSync;
  private retired: Promise<void> | null = null;
  /**
   * Once the file is closed: the outcome of its last fdatasync, which started
   * after the last append ended. A sync still queued then gets that outcome.
   */
  private lastSync: Promise<void> | null = null;

  constructor(readonly generation: number, private readonly file: DiskFile) {
    this.groupSync = new GroupSync(
      () => this.lastSync ?? this.track(file.datasync()),
      journalConcurrentSyncs,
    );
  }

  get sizeBytes(): number {
    return this.tailBytes;
  }

  private track<T>(op: Promise<T>): Promise<T> {
    this.inFlight.add(op);
    const done = () => this.inFlight.delete(op);
    op.then(done, done);
    return op;
  }

  private async settle(): Promise<void> {
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
  }

  append(record: Uint8Array[]): Promise<void> {
    if (this.retired) {
      throw new Error(`journal invariant: a record went to retired generation ${this.generation}`);
    }
    const at = this.tailBytes;
    for (const part of record) this.tailBytes += part.length;
    return this.track(this.file.writev(record, at));
  }

  /** Resolves once every record appended to this file so far is durable. */
  sync(): Promise<void> {
    return this.retired ?? this.groupSync.sync();
  }

  /**
   * Takes no more records; resolves once every record it has is durable. The
   * file is closed either way, after the appends and syncs under way end.
   */
  retire(): Promise<void> {
    this.retired ??= (async () => {
      await this.settle(); // appends end; no more can start
      const last = this.groupSync.sync(); // starts after them: covers every record
      await last.catch(() => {});
      await this.settle(); // fdatasyncs that started before it ended
      this.lastSync = last; // set in the same step settle() found none running
      await this.file.close();
      await last;
    })();
    return this.retired;
  }
}

/**
 * The journal files of a node: appends go to the newest; rotate() starts a new
 * one. The Disk must fail-stop after a failed fdatasync (ReplicaHost guards
 * it): a sync here after a failed one must be refused, never retried.
 */
export class NodeJournal {
  /** Undefined until reset() starts the first file. */
  private current?: JournalFile;
  /** Highest generation on disk or started. */
  private lastGeneration = 0;
  /** File switches run one at a time, so generations go up in the order files are used. */
  private switching: Promise<unknown> = Promise.resolve();

  private constructor(private readonly disk: Disk, private readonly dir: string) {}

  /**
   * Opens the journal directory: returns every record of the existing files
   * (oldest first) for replay. Call `reset()` once they are applied and the
   * segment files synced; appends start after that.
   */
  static async open(
    disk: Disk,
    dir: string,
  ): Promise<{ journal: NodeJournal; records: JournalRecord[] }> {
    await disk.mkdirp(dir);
    const journal = new NodeJournal(disk, dir);
    const records: JournalRecord[] = [];
    for (const generation of await journal.generations()) {
      journal.lastGeneration = Math.max(journal.lastGeneration, generation);
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

  /**
   * Starts a fresh file and removes every older one. Only with no append under
   * way and every record's writes in synced segment files (replay, clean stop).
   */
  async reset(): Promise<void> {
    const old = await this.generations();
    await this.switchFile();
    for (const generation of old) await this.disk.remove(this.path(generation));
    await this.disk.syncDir(this.dir);
  }

  /**
   * Opens the next generation's file, then makes it the one appends go to in
   * one step, and retires the previous one. Returns the previous one, if any.
   */
  private switchFile(): Promise<JournalFile | undefined> {
    const run = this.switching.catch(() => {}).then(async () => {
      const generation = this.lastGeneration + 1;
      const file = await this.disk.open(this.path(generation), { create: true });
      await file.truncate(0);
      await this.disk.syncDir(this.dir);
      this.lastGeneration = generation;
      const previous = this.current;
      this.current = new JournalFile(generation, file);
      await previous?.retire();
      return previous;
    });
    this.switching = run;
    return run;
  }

  get sizeBytes(): number {
    return this.current?.sizeBytes ?? 0;
  }

  /**
   * Appends one record at the tail (not yet durable: call sync() on the file
   * returned). Resolves with the file the record is in, once written.
   */
  async append(record: Uint8Array[]): Promise<JournalFile> {
    const file = this.current;
    if (!file) throw new Error("journal: append before reset()");
    await file.append(record);
    return file;
  }

  /**
   * Switches appends to a new file. Resolves with the previous generation once
   * every record in it is durable; no record goes to it or an older one after
   * that. It may be removed once the segment files its records wrote are synced.
   */
  async rotate(): Promise<number> {
    const previous = await this.switchFile();
    if (!previous) throw new Error("journal: rotate before reset()");
    return previous.generation;
  }

  /** Resolves once every record appended so far (to any file) is durable: a FLUSH. */
  async sync(): Promise<void> {
    const file = this.current;
    // A switch under way retires (syncs) the files before `file`; a retired `file` answers
    // sync() with its retirement, which syncs every record it has.
    await this.switching.catch(() => {});
    await file?.sync();
  }

  async remove(generation: number): Promise<void> {
    if (!this.current || generation >= this.current.generation) {
      throw new Error(`journal invariant: removing generation ${generation}, which takes appends`);
    }
    await this.disk.remove(this.path(generation));
    await this.disk.syncDir(this.dir);
  }

  /** Makes every record durable and closes the file. */
  async close(): Promise<void> {
    await this.switching.catch(() => {});
    await this.current?.retire();
  }
}
