/**
 * The local disk ceiling, through the same node:fs calls the replicas use
 * (positional writeSync / readSync on a descriptor, async fdatasync):
 * durable writes with group commit (N writers share each fdatasync), cached
 * writes (no fdatasync; flush() is one shared fdatasync), and positional reads
 * of a file that was written first. A sparse file (createSparse) gives fresh
 * blocks: every write allocates, as on a never-written region of a volume.
 */
import * as fs from "node:fs";
import { promisify } from "node:util";

const fdatasync = promisify(fs.fdatasync);
const closeFd = promisify(fs.close);
const chunkBytes = 1024 * 1024;

/** Group commit: callers that arrive while an fdatasync runs share the next one. */
export class GroupCommit {
  private waiting: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private syncing = false;
  syncs = 0;

  constructor(private readonly fd: number) {}

  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.syncing || this.waiting.length === 0) return;
    const batch = this.waiting;
    this.waiting = [];
    this.syncing = true;
    this.syncs++;
    fdatasync(this.fd).then(
      () => batch.forEach((w) => w.resolve()),
      (err: Error) => batch.forEach((w) => w.reject(err)),
    ).finally(() => {
      this.syncing = false;
      this.kick();
    });
  }
}

export class DiskTarget {
  private readonly commit: GroupCommit;

  private constructor(readonly path: string, readonly fd: number, readonly sizeBytes: number) {
    this.commit = new GroupCommit(fd);
  }

  /** Creates a file of sizeBytes, fully written (not sparse) and synced. */
  static async create(path: string, sizeBytes: number): Promise<DiskTarget> {
    const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC);
    const chunk = crypto.getRandomValues(new Uint8Array(64 * 1024));
    const buf = new Uint8Array(chunkBytes);
    for (let at = 0; at < chunkBytes; at += chunk.length) buf.set(chunk, at);
    for (let at = 0; at < sizeBytes; at += chunkBytes) {
      writeAll(fd, buf.subarray(0, Math.min(chunkBytes, sizeBytes - at)), at);
    }
    await fdatasync(fd);
    return new DiskTarget(path, fd, sizeBytes);
  }

  /** A sparse file of sizeBytes: nothing written, so every write allocates blocks. */
  static async createSparse(path: string, sizeBytes: number): Promise<DiskTarget> {
    const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC);
    fs.ftruncateSync(fd, sizeBytes);
    await fdatasync(fd);
    return new DiskTarget(path, fd, sizeBytes);
  }

  get syncs(): number {
    return this.commit.syncs;
  }

  /** Durable write: positional write, then a (shared) fdatasync. */
  async write(offsetBytes: number, data: Uint8Array): Promise<void> {
    writeAll(this.fd, data, offsetBytes);
    await this.commit.sync();
  }

  /** Cached write: positional write only (page cache); durable after the next flush(). */
  writeCached(offsetBytes: number, data: Uint8Array): Promise<void> {
    writeAll(this.fd, data, offsetBytes);
    return Promise.resolve();
  }

  /** Every earlier write durable: one (shared) fdatasync. */
  flush(): Promise<void> {
    return this.commit.sync();
  }

  read(offsetBytes: number, into: Uint8Array): Promise<void> {
    let done = 0;
    while (done < into.length) {
      const n = fs.readSync(this.fd, into, done, into.length - done, offsetBytes + done);
      if (n === 0) throw new Error(`short read at ${offsetBytes + done}`);
      done += n;
    }
    return Promise.resolve();
  }

  async close(): Promise<void> {
    await closeFd(this.fd).catch(() => {});
    await Deno.remove(this.path).catch(() => {});
  }
}

function writeAll(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) {
    done += fs.writeSync(fd, data, done, data.length - done, position + done);
  }
}
