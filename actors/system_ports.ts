/** Production ports: the monotonic clock, Math.random, and node:fs. */
import * as fs from "node:fs";
import { promisify } from "node:util";
import type { Clock, Disk, DiskFile, Random } from "./ports.ts";

export const systemClock: Clock = {
  nowMs: () => performance.now(),
  setTimer(delayMs, fn) {
    const id = setTimeout(fn, delayMs);
    return () => clearTimeout(id);
  },
};

export const systemRandom: Random = { next: () => Math.random() };

const openFd = promisify(fs.open);
const closeFd = promisify(fs.close);
const fdatasync = promisify(fs.fdatasync);
const ftruncate = promisify(fs.ftruncate);
const fstat = promisify(fs.fstat);
const fsync = promisify(fs.fsync);

function readAt(fd: number, buf: Uint8Array, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.read(fd, buf, 0, buf.length, position, (err, n) => err ? reject(err) : resolve(n))
  );
}

function writeAt(fd: number, buf: Uint8Array, offset: number, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.write(
      fd,
      buf,
      offset,
      buf.length - offset,
      position,
      (err, n) => err ? reject(err) : resolve(n),
    )
  );
}

class NodeFsFile implements DiskFile {
  constructor(private readonly fd: number) {}

  async read(buf: Uint8Array, position: number): Promise<number> {
    let total = 0;
    while (total < buf.length) {
      const n = await readAt(this.fd, buf.subarray(total), position + total);
      if (n === 0) break;
      total += n;
    }
    return total;
  }

  async write(buf: Uint8Array, position: number): Promise<void> {
    let done = 0;
    while (done < buf.length) done += await writeAt(this.fd, buf, done, position + done);
  }

  datasync = () => fdatasync(this.fd);
  truncate = (lengthBytes: number) => ftruncate(this.fd, lengthBytes);
  sizeBytes = async () => (await fstat(this.fd)).size;
  close = () => closeFd(this.fd);
}

export const systemDisk: Disk = {
  async open(path, { create }) {
    const flags = create ? fs.constants.O_RDWR | fs.constants.O_CREAT : fs.constants.O_RDWR;
    return new NodeFsFile(await openFd(path, flags, 0o644));
  },
  remove: (path) => fs.promises.rm(path, { force: true }),
  async list(dir) {
    try {
      return await fs.promises.readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
  },
  mkdirp: async (dir) => {
    await fs.promises.mkdir(dir, { recursive: true });
  },
  async syncDir(dir) {
    const fd = await openFd(dir, fs.constants.O_RDONLY);
    try {
      await fsync(fd);
    } finally {
      await closeFd(fd);
    }
  },
};
