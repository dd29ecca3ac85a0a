/**
 * Ports: the only way an actor reaches time, randomness and the disk.
 * Production ports wrap the system; tests pass in-memory ones.
 */

export interface Clock {
  /** Milliseconds on a monotonic clock. */
  nowMs(): number;
  /** Calls fn after delayMs; returns a cancel function. */
  setTimer(delayMs: number, fn: () => void): () => void;
}

export interface Random {
  /** A float in [0, 1). */
  next(): number;
}

/** One open file, read and written at explicit byte positions. */
export interface DiskFile {
  /** Reads into buf at position; returns bytes read (fewer at end of file). */
  read(buf: Uint8Array, position: number): Promise<number>;
  /** Writes all of buf at position. */
  write(buf: Uint8Array, position: number): Promise<void>;
  /** Writes the buffers back to back from position (one syscall where the system has pwritev). */
  writev(buffers: Uint8Array[], position: number): Promise<void>;
  /** Makes every write so far durable (fdatasync). */
  datasync(): Promise<void>;
  /** Sets the file's length (sparse growth). */
  truncate(lengthBytes: number): Promise<void>;
  sizeBytes(): Promise<number>;
  close(): Promise<void>;
}

export interface Disk {
  /** Opens a file for read and write; creates it only when create is true. */
  open(path: string, options: { create: boolean }): Promise<DiskFile>;
  /** Removes a file (no error if it is gone). */
  remove(path: string): Promise<void>;
  /** Removes an empty directory (no error if it is gone). */
  removeDir(path: string): Promise<void>;
  /** Names (not paths) of the entries in dir; [] if it does not exist. */
  list(dir: string): Promise<string[]>;
  mkdirp(dir: string): Promise<void>;
  /** fsyncs a directory so a created or removed name is durable. */
  syncDir(dir: string): Promise<void>;
}
