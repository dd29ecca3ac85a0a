/**
 * A simulated node's disk: MemoryDisk with the latency of a real one where a
 * real one has it. fdatasync and directory fsyncs take virtual time (the
 * node's own events, so a paused or killed node's syncs wait or never end);
 * pwrites and reads stay immediate, as production's synchronous page-cache
 * writes are. Without this every sync is instant and checkpoints never race
 * with writes.
 */
import type { Disk, DiskFile } from "../actors/ports.ts";
import type { MemoryDisk } from "../actors/memory_disk.ts";
import type { SimScheduler } from "./scheduler.ts";

/** Virtual time of one fdatasync, uniform in this range (ms). */
export const simSyncLatencyMs = { min: 0.1, max: 2 };

export function slowDisk(
  inner: MemoryDisk,
  scheduler: SimScheduler,
  node: string,
  /** Asked as each fdatasync starts: true means the node loses power right now (it never returns). */
  dieAtSync: (path: string) => boolean = () => false,
): Disk {
  const later = () =>
    new Promise<void>((resolve) =>
      scheduler.schedule(
        simSyncLatencyMs.min + scheduler.random() * (simSyncLatencyMs.max - simSyncLatencyMs.min),
        resolve,
        node,
      )
    );
  const wrap = (file: DiskFile, path: string): DiskFile => ({
    read: (buf, position) => file.read(buf, position),
    write: (buf, position) => file.write(buf, position),
    writev: (buffers, position) => file.writev(buffers, position),
    datasync: async () => {
      await later();
      if (dieAtSync(path)) return new Promise<void>(() => {});
      await file.datasync();
    },
    truncate: (lengthBytes) => file.truncate(lengthBytes),
    sizeBytes: () => file.sizeBytes(),
    close: () => file.close(),
  });
  return {
    open: async (path, options) => wrap(await inner.open(path, options), path),
    remove: (path) => inner.remove(path),
    removeDir: (path) => inner.removeDir(path),
    list: (dir) => inner.list(dir),
    mkdirp: (dir) => inner.mkdirp(dir),
    syncDir: async (dir) => {
      await later();
      await inner.syncDir(dir);
    },
  };
}
