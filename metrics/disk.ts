/**
 * What a node's data dir holds and has left, read at scrape time: the file system's size
 * and free space, and the bytes segment files take on it (allocated blocks: they are sparse).
 */
import * as fs from "node:fs";

export interface DataDirStats {
  sizeBytes: number;
  /** Free to an unprivileged process (statfs f_bavail), which the node is. */
  freeBytes: number;
  segmentFiles: number;
  segmentAllocatedBytes: number;
}

/** stat's block unit (st_blocks counts 512-byte blocks whatever the file system's block size). */
const statBlockBytes = 512;

export async function dataDirStats(dataDir: string): Promise<DataDirStats> {
  const fsStats = fs.statfsSync(dataDir);
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
  return {
    sizeBytes: fsStats.blocks * fsStats.bsize,
    freeBytes: fsStats.bavail * fsStats.bsize,
    segmentFiles,
    segmentAllocatedBytes,
  };
}

async function listDir(dir: string): Promise<string[]> {
  return await fs.promises.readdir(dir).catch(() => []);
}
