/**
 * What a node's data dir holds and has left: the file system's size and free space (one
 * statfs, read at each scrape), and the bytes segment files take on it (allocated blocks:
 * they are sparse). Segment files are counted in the background every
 * segmentStatsIntervalMs, not per scrape: one stat per file went through the thread pool
 * and made scrapes take 30 ms (up to 0.7 s) on a loaded 2-core machine, against 5 ms without.
 */
import * as fs from "node:fs";

/** How often the segment files are walked and stat'ed. */
export const segmentStatsIntervalMs = 10_000;
/** stat's block unit (st_blocks counts 512-byte blocks whatever the file system's block size). */
const statBlockBytes = 512;

export interface FileSystemStats {
  sizeBytes: number;
  /** Free to an unprivileged process (statfs f_bavail), which the node is. */
  freeBytes: number;
}

export interface SegmentStats {
  segmentFiles: number;
  segmentAllocatedBytes: number;
}

export function fileSystemStats(dir: string): FileSystemStats {
  const stats = fs.statfsSync(dir);
  return { sizeBytes: stats.blocks * stats.bsize, freeBytes: stats.bavail * stats.bsize };
}

/** Counts the segment files under `<dataDir>/segments/<volume id>/` and their allocated bytes. */
export async function segmentStats(dataDir: string): Promise<SegmentStats> {
  let segmentFiles = 0;
  let segmentAllocatedBytes = 0;
  const root = `${dataDir}/segments`;
  for (const volume of await listDir(root)) {
    for (const name of await listDir(`${root}/${volume}`)) {
      if (!name.endsWith(".seg")) continue;
      // A file removed since the listing (a deleted volume) just does not count.
      const stat = await fs.promises.stat(`${root}/${volume}/${name}`).catch(() => null);
      if (!stat) continue;
      segmentFiles++;
      segmentAllocatedBytes += stat.blocks * statBlockBytes;
    }
  }
  return { segmentFiles, segmentAllocatedBytes };
}

async function listDir(dir: string): Promise<string[]> {
  return await fs.promises.readdir(dir).catch(() => []);
}

/** Keeps segmentStats fresh in the background; `latest` is the last walk's result. */
export class SegmentStatsWatcher {
  latest: SegmentStats | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  /** The walk under way (the first one: render() waits for it once). */
  first: Promise<void>;

  constructor(private readonly dataDir: string, intervalMs = segmentStatsIntervalMs) {
    const walk = async () => {
      try {
        this.latest = await segmentStats(this.dataDir);
      } catch {
        // Leave the last good figures; the next walk tries again.
      }
      if (this.stopped) return;
      this.timer = setTimeout(walk, intervalMs);
      // The watcher alone must not keep a stopping process alive.
      Deno.unrefTimer(this.timer);
    };
    this.first = walk();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
