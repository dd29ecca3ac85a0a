/**
 * Fail-stop after a failed fdatasync ("fsyncgate"). When writeback fails, Linux
 * reports the error once and may mark the pages clean: a retried fdatasync then
 * succeeds while the data never reached the disk. So after any failed
 * fdatasync (journal, segment file or directory) nothing written since the
 * last good one can be vouched for, and the only copy known durable is the
 * journal. The node keeps it (removes nothing, retries no sync) and stops; at
 * the next start the journal is replayed.
 */
import type { Disk, DiskFile } from "../ports.ts";

/** What every request and sync gets once the node has failed-stop. */
export class FailStopError extends Error {
  override name = "FailStopError";
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class FailStop {
  private error: FailStopError | null = null;

  /** onFail runs once, with the first failure's reason. */
  constructor(private readonly onFail: (reason: string) => void) {}

  get failure(): FailStopError | null {
    return this.error;
  }

  /** Throws the FailStopError if the node has failed-stop. */
  check(): void {
    if (this.error) throw this.error;
  }

  /** Enters the failed state (the first call; later ones keep the first reason) and returns its error. */
  fail(reason: string): FailStopError {
    if (!this.error) {
      this.error = new FailStopError(
        `node failed-stop: ${reason}; it takes no more requests until restarted`,
      );
      this.onFail(reason);
    }
    return this.error;
  }

  /**
   * The disk with every fdatasync and directory fsync through this gate: the
   * first failure fails the node; after it every sync is refused untried, and
   * so is a sync that ends after it (its success vouches for nothing); and
   * every remove and truncate is refused, so nothing durable is thrown away.
   */
  guard(disk: Disk): Disk {
    const run = async (what: string, op: () => Promise<void>): Promise<void> => {
      this.check();
      try {
        await op();
      } catch (err) {
        throw this.fail(`${what} failed (${describe(err)})`);
      }
      this.check();
    };
    const guardFile = (file: DiskFile, path: string): DiskFile => ({
      read: (buf, position) => file.read(buf, position),
      write: (buf, position) => file.write(buf, position),
      writev: (buffers, position) => file.writev(buffers, position),
      datasync: () => run(`fdatasync of ${path}`, () => file.datasync()),
      truncate: async (lengthBytes) => {
        this.check();
        await file.truncate(lengthBytes);
      },
      sizeBytes: () => file.sizeBytes(),
      close: () => file.close(),
    });
    return {
      open: async (path, options) => guardFile(await disk.open(path, options), path),
      remove: async (path) => {
        this.check();
        await disk.remove(path);
      },
      removeDir: async (path) => {
        this.check();
        await disk.removeDir(path);
      },
      list: (dir) => disk.list(dir),
      mkdirp: (dir) => disk.mkdirp(dir),
      syncDir: (dir) => run(`fsync of directory ${dir}`, () => disk.syncDir(dir)),
    };
  }
}
