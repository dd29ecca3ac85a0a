/**
 * An in-memory Disk for unit tests and deterministic simulation, with crash
 * and bit-rot injection.
 *
 * Durability model (what crash() keeps):
 * - File contents: each file has a durable image (as of its last datasync) and
 *   the writes and truncates since. crash() reverts every file to its durable
 *   image, then re-applies each pending operation, in order, with probability
 *   keepPendingProbability (default 0); with tearWrites a kept write may land
 *   only as a prefix cut at a 512-byte sector boundary.
 * - Names: a created file's name is durable only after syncDir(parent); a
 *   removal likewise. crash() drops an unsynced creation (and undoes an
 *   unsynced removal) unless that pending name change is kept, with the same
 *   probability. A real file system may lose them too.
 * - Directories made by mkdirp are durable at once (a simplification).
 * - A failed fdatasync (injected with failDatasync) models Linux after a
 *   writeback error: the kernel reports the error once and marks the pages
 *   clean, so the file's pending writes are dropped from what a crash keeps
 *   (they are not applied to the durable image, and pending is cleared) while
 *   reads still see them until the crash. A later fdatasync then succeeds
 *   without making them durable ("fsyncgate"): whoever saw the failure must
 *   not retry and carry on. A failed syncDir leaves the directory's pending
 *   name changes as they were (a crash may still drop them).
 * Every open handle is invalid after crash(): further calls throw.
 * Everything is synchronous underneath, so a seeded run replays exactly.
 */
import { posix } from "node:path";
import { mulberry32 } from "./seeded_random.ts";
import type { Disk, DiskFile } from "./ports.ts";

const pageBytes = 4096;
const sectorBytes = 512;

/**
 * A growable byte array stored as 4 KiB pages, so sparse files cost only what is written.
 * A clone shares the pages until either side writes one (copy on write): crash() and
 * durableCopy() clone whole files, and most of their pages are never written again.
 */
class SparseBytes {
  readonly pages = new Map<number, Uint8Array>();
  length = 0;
  /** Pages this image may change in place; any other may be shared with a clone. */
  #owned = new Set<number>();

  read(buf: Uint8Array, position: number): number {
    if (position >= this.length) return 0;
    const n = Math.min(buf.length, this.length - position);
    let done = 0;
    while (done < n) {
      const at = position + done;
      const index = Math.floor(at / pageBytes);
      const offset = at - index * pageBytes;
      const take = Math.min(pageBytes - offset, n - done);
      const page = this.pages.get(index);
      if (page) buf.set(page.subarray(offset, offset + take), done);
      else buf.fill(0, done, done + take);
      done += take;
    }
    return n;
  }

  /** Page `index`, made if missing and copied first if shared: safe to change in place. */
  #writablePage(index: number): Uint8Array {
    let page = this.pages.get(index);
    if (page && this.#owned.has(index)) return page;
    page = page ? page.slice() : new Uint8Array(pageBytes);
    this.pages.set(index, page);
    this.#owned.add(index);
    return page;
  }

  write(buf: Uint8Array, position: number): void {
    let done = 0;
    while (done < buf.length) {
      const at = position + done;
      const index = Math.floor(at / pageBytes);
      const offset = at - index * pageBytes;
      const take = Math.min(pageBytes - offset, buf.length - done);
      this.#writablePage(index).set(buf.subarray(done, done + take), offset);
      done += take;
    }
    this.length = Math.max(this.length, position + buf.length);
  }

  truncate(length: number): void {
    if (length < this.length) {
      // Drop whole pages past the end and zero the tail of the last one, so a
      // later extension reads zeros as a real file does.
      const keepPages = Math.ceil(length / pageBytes);
      for (const index of [...this.pages.keys()]) {
        if (index < keepPages) continue;
        this.pages.delete(index);
        this.#owned.delete(index);
      }
      const tail = length % pageBytes;
      if (tail !== 0 && this.pages.has(keepPages - 1)) {
        this.#writablePage(keepPages - 1).fill(0, tail);
      }
    }
    this.length = length;
  }

  clone(): SparseBytes {
    const copy = new SparseBytes();
    copy.length = this.length;
    for (const [index, page] of this.pages) copy.pages.set(index, page);
    // Shared now: whichever side writes a page next copies it first.
    this.#owned.clear();
    return copy;
  }
}

type PendingOp =
  | { kind: "write"; position: number; data: Uint8Array }
  | { kind: "truncate"; length: number };

class MemFile {
  current = new SparseBytes();
  durable = new SparseBytes();
  pending: PendingOp[] = [];
  /** Whether the name survives a crash (set by syncDir of the parent). */
  nameDurable = false;

  apply(image: SparseBytes, op: PendingOp): void {
    if (op.kind === "write") image.write(op.data, op.position);
    else image.truncate(op.length);
  }
}

export interface MemoryDiskCrashOptions {
  /** Chance that each operation since the last sync survives the crash; default 0. */
  keepPendingProbability?: number;
  /** Source of randomness for this crash; default the disk's own seeded generator. */
  random?: () => number;
  /** A kept write may survive only as a prefix cut at a 512-byte boundary. */
  tearWrites?: boolean;
}

/** Counters of calls made through the disk, for tests that check IO patterns. */
export interface MemoryDiskStats {
  reads: number;
  writes: number;
  datasyncs: number;
  truncates: number;
  syncDirs: number;
  /** fdatasyncs and syncDirs that failed by an injected fault (counted in datasyncs/syncDirs too). */
  failedSyncs: number;
}

/** Which fdatasyncs and directory fsyncs an injected fault hits. */
export interface DatasyncFaultOptions {
  /** How many matching syncs fail before the fault is spent; default every one. */
  times?: number;
  /** The error to fail with; default an EIO error naming the path. */
  error?: (path: string) => Error;
}

interface DatasyncFault {
  matches: (path: string) => boolean;
  remaining: number;
  error: (path: string) => Error;
}

function fsError(code: string, message: string, path: string): Error {
  return Object.assign(new Error(`${code}: ${message}, '${path}'`), { code, path });
}

function normalize(path: string): string {
  const p = posix.normalize(path);
  return p.length > 1 && p.endsWith("/") ? p.slice(0, -1) : p;
}

class MemFileHandle implements DiskFile {
  #closed = false;

  constructor(
    private readonly disk: MemoryDisk,
    private readonly file: MemFile,
    private readonly path: string,
    private readonly generation: number,
  ) {}

  #check(): void {
    if (this.#closed) throw fsError("EBADF", "file handle is closed", this.path);
    if (this.disk.generation !== this.generation) {
      throw fsError("EBADF", "file handle invalidated by a simulated crash", this.path);
    }
  }

  // deno-lint-ignore require-await
  async read(buf: Uint8Array, position: number): Promise<number> {
    this.#check();
    checkPosition(position, this.path);
    this.disk.stats.reads++;
    return this.file.current.read(buf, position);
  }

  async writev(buffers: Uint8Array[], position: number): Promise<void> {
    let at = position;
    for (const buf of buffers) {
      await this.write(buf, at);
      at += buf.length;
    }
  }

  // deno-lint-ignore require-await
  async write(buf: Uint8Array, position: number): Promise<void> {
    this.#check();
    checkPosition(position, this.path);
    this.disk.stats.writes++;
    if (buf.length === 0) return;
    const data = new Uint8Array(buf); // a copy even when buf is a Node Buffer
    this.file.current.write(data, position);
    this.file.pending.push({ kind: "write", position, data });
  }

  // deno-lint-ignore require-await
  async datasync(): Promise<void> {
    this.#check();
    this.disk.stats.datasyncs++;
    const fault = this.disk.takeDatasyncFault(this.path);
    if (!fault) {
      for (const op of this.file.pending) this.file.apply(this.file.durable, op);
    }
    // On a failure too: the kernel marked the pages clean (see the module comment).
    this.file.pending = [];
    if (fault) throw fault;
  }

  // deno-lint-ignore require-await
  async truncate(lengthBytes: number): Promise<void> {
    this.#check();
    checkPosition(lengthBytes, this.path);
    this.disk.stats.truncates++;
    this.file.current.truncate(lengthBytes);
    this.file.pending.push({ kind: "truncate", length: lengthBytes });
  }

  // deno-lint-ignore require-await
  async sizeBytes(): Promise<number> {
    this.#check();
    return this.file.current.length;
  }

  // deno-lint-ignore require-await
  async close(): Promise<void> {
    this.#check();
    this.#closed = true;
  }
}

function checkPosition(position: number, path: string): void {
  if (!Number.isSafeInteger(position) || position < 0) {
    throw fsError("EINVAL", `invalid position or length ${position}`, path);
  }
}

export class MemoryDisk implements Disk {
  readonly stats: MemoryDiskStats = {
    reads: 0,
    writes: 0,
    datasyncs: 0,
    truncates: 0,
    syncDirs: 0,
    failedSyncs: 0,
  };
  /** Bumped by crash(); handles from an older generation refuse every call. */
  generation = 0;
  #files = new Map<string, MemFile>();
  #dirs = new Set<string>(["/", "."]);
  /** Files unlinked since their parent's last syncDir: a crash may bring them back. */
  #pendingRemovals = new Map<string, MemFile>();
  #random: () => number;
  #faults: DatasyncFault[] = [];

  constructor(options: { seed?: number; random?: () => number } = {}) {
    this.#random = options.random ?? mulberry32(options.seed ?? 1);
  }

  // deno-lint-ignore require-await
  async open(path: string, options: { create: boolean }): Promise<DiskFile> {
    const p = normalize(path);
    if (this.#dirs.has(p)) throw fsError("EISDIR", "illegal operation on a directory", path);
    let file = this.#files.get(p);
    if (!file) {
      if (!options.create) throw fsError("ENOENT", "no such file or directory", path);
      if (!this.#dirs.has(posix.dirname(p))) {
        throw fsError("ENOENT", "no such file or directory", path);
      }
      file = new MemFile();
      this.#files.set(p, file);
    }
    return new MemFileHandle(this, file, p, this.generation);
  }

  // deno-lint-ignore require-await
  async remove(path: string): Promise<void> {
    const p = normalize(path);
    if (this.#dirs.has(p)) throw fsError("EISDIR", "path is a directory", path);
    const file = this.#files.get(p);
    if (!file) return;
    this.#files.delete(p);
    // Only a durable name can come back after a crash.
    if (file.nameDurable && !this.#pendingRemovals.has(p)) this.#pendingRemovals.set(p, file);
  }

  // deno-lint-ignore require-await
  async removeDir(path: string): Promise<void> {
    const p = normalize(path);
    if (!this.#dirs.has(p)) return;
    for (const q of [...this.#files.keys(), ...this.#dirs]) {
      if (q !== p && posix.dirname(q) === p) {
        throw fsError("ENOTEMPTY", "directory not empty", path);
      }
    }
    this.#dirs.delete(p);
  }

  // deno-lint-ignore require-await
  async list(dir: string): Promise<string[]> {
    const d = normalize(dir);
    if (!this.#dirs.has(d)) return [];
    const names: string[] = [];
    for (const p of [...this.#files.keys(), ...this.#dirs]) {
      if (p !== d && posix.dirname(p) === d) names.push(posix.basename(p));
    }
    return names.sort();
  }

  // deno-lint-ignore require-await
  async mkdirp(dir: string): Promise<void> {
    let d = normalize(dir);
    const made: string[] = [];
    while (!this.#dirs.has(d)) {
      if (this.#files.has(d)) throw fsError("ENOTDIR", "not a directory", dir);
      made.push(d);
      const parent = posix.dirname(d);
      if (parent === d) break;
      d = parent;
    }
    for (const m of made) this.#dirs.add(m);
  }

  // deno-lint-ignore require-await
  async syncDir(dir: string): Promise<void> {
    const d = normalize(dir);
    if (!this.#dirs.has(d)) throw fsError("ENOENT", "no such file or directory", dir);
    this.stats.syncDirs++;
    const fault = this.takeDatasyncFault(d);
    if (fault) throw fault;
    for (const [p, file] of this.#files) if (posix.dirname(p) === d) file.nameDurable = true;
    for (const p of [...this.#pendingRemovals.keys()]) {
      if (posix.dirname(p) === d) this.#pendingRemovals.delete(p);
    }
  }

  /**
   * Makes fdatasyncs of files, and syncDirs of directories, whose path matches
   * fail (by default with EIO), `times` times or until the returned function
   * is called. `match` is a substring of the normalized path or a predicate.
   * A failed fdatasync drops the file's pending writes from the durable image
   * (see the module comment).
   */
  failDatasync(
    match: string | ((path: string) => boolean),
    options: DatasyncFaultOptions = {},
  ): () => void {
    const fault: DatasyncFault = {
      matches: typeof match === "string" ? (path) => path.includes(match) : match,
      remaining: options.times ?? Infinity,
      error: options.error ??
        ((path) => fsError("EIO", "input/output error (injected fdatasync fault)", path)),
    };
    this.#faults.push(fault);
    return () => {
      this.#faults = this.#faults.filter((f) => f !== fault);
    };
  }

  /** The error of the first fault matching path, spending one of its times; null if none. */
  takeDatasyncFault(path: string): Error | null {
    const fault = this.#faults.find((f) => f.remaining > 0 && f.matches(path));
    if (!fault) return null;
    if (--fault.remaining <= 0) this.#faults = this.#faults.filter((f) => f !== fault);
    this.stats.failedSyncs++;
    return fault.error(path);
  }

  /**
   * Simulates a power loss: see the module comment. With the default options
   * every file is exactly its durable image afterwards.
   */
  crash(options: MemoryDiskCrashOptions = {}): void {
    const probability = options.keepPendingProbability ?? 0;
    const random = options.random ?? this.#random;
    const keep = () => probability >= 1 || (probability > 0 && random() < probability);
    this.generation++;

    for (const [p, file] of [...this.#files]) {
      if (!file.nameDurable && !keep()) this.#files.delete(p);
    }
    for (const [p, file] of this.#pendingRemovals) {
      if (!keep() && !this.#files.has(p)) this.#files.set(p, file);
    }
    this.#pendingRemovals.clear();

    for (const file of this.#files.values()) {
      const image = file.durable;
      for (const op of file.pending) {
        if (!keep()) continue;
        if (op.kind === "write" && options.tearWrites) {
          image.write(
            op.data.subarray(0, tornLength(op.position, op.data.length, random)),
            op.position,
          );
        } else {
          file.apply(image, op);
        }
      }
      file.pending = [];
      file.current = image;
      file.durable = image.clone();
      file.nameDurable = true;
    }
  }

  /**
   * A new disk holding what crash() with the default options (nothing pending kept) would
   * leave now: each file with a durable name as of its last fdatasync, files removed since
   * their directory's last sync back. This disk is untouched. For observers that must judge
   * what is synced, not what the code using the disk says is (the simulator's FLUSH oracle).
   */
  durableCopy(): MemoryDisk {
    const copy = new MemoryDisk();
    for (const dir of this.#dirs) copy.#dirs.add(dir);
    const keep = (path: string, file: MemFile) => {
      const kept = new MemFile();
      kept.current = file.durable.clone();
      kept.durable = file.durable.clone();
      kept.nameDurable = true;
      copy.#files.set(path, kept);
    };
    // In crash()'s order: unsynced names go, then unsynced removals come back where free.
    for (const [path, file] of this.#files) if (file.nameDurable) keep(path, file);
    for (const [path, file] of this.#pendingRemovals) {
      if (!copy.#files.has(path)) keep(path, file);
    }
    return copy;
  }

  /** Bit rot: inverts byteCount bytes at position, in the durable image too. */
  corrupt(path: string, position: number, byteCount: number): void {
    const p = normalize(path);
    const file = this.#files.get(p);
    if (!file) throw fsError("ENOENT", "no such file or directory", path);
    if (position < 0 || byteCount < 0 || position + byteCount > file.current.length) {
      throw fsError("EINVAL", `corrupt range ${position}+${byteCount} is past the end`, path);
    }
    for (const image of [file.current, file.durable]) {
      const bytes = new Uint8Array(byteCount);
      const n = image.read(bytes, position);
      for (let i = 0; i < n; i++) bytes[i] ^= 0xff;
      image.write(bytes.subarray(0, n), position);
    }
  }

  exists(path: string): boolean {
    const p = normalize(path);
    return this.#files.has(p) || this.#dirs.has(p);
  }

  /** A copy of a file's current contents. */
  fileBytes(path: string): Uint8Array {
    const file = this.#files.get(normalize(path));
    if (!file) throw fsError("ENOENT", "no such file or directory", path);
    const out = new Uint8Array(file.current.length);
    file.current.read(out, 0);
    return out;
  }

  /** Bytes of pages actually stored for a file (sparse files store little). */
  allocatedBytes(path: string): number {
    const file = this.#files.get(normalize(path));
    if (!file) throw fsError("ENOENT", "no such file or directory", path);
    return file.current.pages.size * pageBytes;
  }
}

/** Length of a torn write's surviving prefix: it ends at a sector boundary inside the write, or at its end. */
function tornLength(position: number, length: number, random: () => number): number {
  const end = position + length;
  const firstCut = (Math.floor(position / sectorBytes) + 1) * sectorBytes;
  const cuts = firstCut < end ? Math.ceil((end - firstCut) / sectorBytes) : 0;
  const k = Math.floor(random() * (cuts + 1));
  return k === cuts ? length : firstCut + k * sectorBytes - position;
}
