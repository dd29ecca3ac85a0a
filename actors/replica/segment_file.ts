/**
 * One replica of one segment of a volume, stored in one sparse file: a 4 KiB
 * header, a meta region (version, crc32c and state per block) and a data
 * region. The layout and the crash story are in docs/SEGMENT_FORMAT.md.
 *
 * A plain storage layer: it writes what it is told (ordering and epochs are
 * the replica actor's business) and never syncs except in create(). Callers
 * must not overlap a read or write with a write of the same blocks, and must
 * not modify a buffer passed to writeBlocks until its promise settles.
 */
import { createHash } from "node:crypto";
import { posix } from "node:path";
import { crc32c } from "../../protocol/crc32c.ts";
import type { Disk, DiskFile } from "../ports.ts";

export class SegmentFileError extends Error {
  override name = "SegmentFileError";
}

export interface SegmentInfo {
  volume: string;
  segmentIndex: number;
  segmentBytes: number;
  blockSize: number;
  epoch: number;
}

export type BlockState = "unwritten" | "written" | "zero" | "corrupt";

export const segmentMagic = "CAIRNSEG";
/**
 * 3: the highest owner term seen lives in a term record of its own inside one 512-byte
 * sector (offset 1024), outside the header checksum, so a new term is one sector write, which
 * a power loss cannot tear (rewriting the whole 4 KiB header could, and the file was lost).
 * 2: the header's volume field holds the volume id. Versions 1 and 2 are refused.
 */
export const segmentFormatVersion = 3;
/** Where the term record sits in the header, and its size: u32 magic, u32 crc32c(term), u64 term. */
export const termRecordOffset = 1024;
export const termRecordBytes = 16;
const termRecordMagic = 0x4d52_4554; // "TERM" little-endian
export const segmentHeaderBytes = 4096;
/** Bytes of one block's meta entry: u64 version, u32 crc32c, u32 flags. */
export const segmentMetaEntryBytes = 16;

const flagUnwritten = 0;
const flagWritten = 1;
const flagZero = 2;
const maxVolumeNameBytes = 63;
const minBlockSize = 512;
const maxBlockSize = 1024 * 1024;
const headerCrcOffset = segmentHeaderBytes - 4;
const twoTo32 = 4294967296;
/** Meta reads up to this many blocks use a per-file scratch buffer instead of allocating. */
const scratchBlocks = 256;
/** Scrub and the open-time meta scan work in chunks of about this many bytes. */
const chunkBytes = 1024 * 1024;

const stateByFlag: readonly BlockState[] = ["unwritten", "written", "zero"];

function roundUp(n: number, multiple: number): number {
  return Math.ceil(n / multiple) * multiple;
}

function metaRegionBytes(blockCount: number): number {
  return roundUp(blockCount * segmentMetaEntryBytes, segmentHeaderBytes);
}

/** Total length of a segment file: header, meta region and data region. */
export function segmentFileSizeBytes(segmentBytes: number, blockSize: number): number {
  return segmentHeaderBytes + metaRegionBytes(segmentBytes / blockSize) + segmentBytes;
}

function isUint(n: number, max: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= max;
}

function isPrintableAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

/** The problem with a geometry, or null when it is valid. */
function geometryProblem(blockSize: number, segmentBytes: number): string | null {
  if (
    !isUint(blockSize, maxBlockSize) || blockSize < minBlockSize || (blockSize & (blockSize - 1))
  ) {
    return `blockSize ${blockSize} is not a power of two in ${minBlockSize}..${maxBlockSize}`;
  }
  if (!isUint(segmentBytes, Number.MAX_SAFE_INTEGER) || segmentBytes === 0) {
    return `segmentBytes ${segmentBytes} is not a positive integer`;
  }
  if (segmentBytes % blockSize !== 0) {
    return `segmentBytes ${segmentBytes} is not a multiple of blockSize ${blockSize}`;
  }
  return null;
}

function validateInfo(info: SegmentInfo): void {
  const problem = geometryProblem(info.blockSize, info.segmentBytes) ??
    (typeof info.volume !== "string" || info.volume.length === 0 ||
        info.volume.length > maxVolumeNameBytes || !isPrintableAscii(info.volume)
      ? `volume name ${JSON.stringify(info.volume)} is not 1..63 printable ASCII characters`
      : !isUint(info.segmentIndex, 0xffffffff)
      ? `segmentIndex ${info.segmentIndex} is not a u32`
      : !isUint(info.epoch, Number.MAX_SAFE_INTEGER)
      ? `epoch ${info.epoch} is not a non-negative safe integer`
      : null);
  if (problem) throw new SegmentFileError(`invalid segment info: ${problem}`);
}

function putU64(buf: Uint8Array, offset: number, value: number): void {
  putU32(buf, offset, value >>> 0);
  putU32(buf, offset + 4, Math.floor(value / twoTo32));
}

function putU32(buf: Uint8Array, offset: number, value: number): void {
  buf[offset] = value;
  buf[offset + 1] = value >>> 8;
  buf[offset + 2] = value >>> 16;
  buf[offset + 3] = value >>> 24;
}

function getU32(buf: Uint8Array, offset: number): number {
  return (buf[offset] | (buf[offset + 1] << 8) | (buf[offset + 2] << 16) |
    (buf[offset + 3] << 24)) >>>
    0;
}

/** A u64 as a number, or -1 when it exceeds 2^53 (only rot or a foreign file does that). */
function getU64(buf: Uint8Array, offset: number): number {
  const hi = getU32(buf, offset + 4);
  return hi > 0x1fffff ? -1 : hi * twoTo32 + getU32(buf, offset);
}

/** State of the meta entry at offset, ignoring the data crc. */
function entryState(meta: Uint8Array, offset: number): BlockState {
  const flags = getU32(meta, offset + 12);
  if (flags > flagZero || getU64(meta, offset) < 0) return "corrupt";
  return stateByFlag[flags];
}

function encodeHeader(info: SegmentInfo): Uint8Array {
  const h = new Uint8Array(segmentHeaderBytes);
  for (let i = 0; i < segmentMagic.length; i++) h[i] = segmentMagic.charCodeAt(i);
  putU32(h, 8, segmentFormatVersion);
  putU32(h, 12, info.blockSize);
  putU64(h, 16, info.segmentBytes);
  putU32(h, 24, info.segmentIndex);
  putU32(h, 28, 0);
  putU64(h, 32, info.epoch);
  h[40] = info.volume.length;
  for (let i = 0; i < info.volume.length; i++) h[41 + i] = info.volume.charCodeAt(i);
  h.set(encodeTermRecord(info.epoch), termRecordOffset);
  putU32(h, headerCrcOffset, headerCrc(h));
  return h;
}

/** The header checksum covers everything but the term record (rewritten alone) and itself. */
function headerCrc(h: Uint8Array): number {
  return crc32c(
    h.subarray(termRecordOffset + termRecordBytes, headerCrcOffset),
    crc32c(h.subarray(0, termRecordOffset)),
  );
}

function encodeTermRecord(term: number): Uint8Array {
  const record = new Uint8Array(termRecordBytes);
  putU32(record, 0, termRecordMagic);
  putU64(record, 8, term);
  putU32(record, 4, crc32c(record.subarray(8, 16)));
  return record;
}

function hex32(n: number): string {
  return "0x" + n.toString(16).padStart(8, "0");
}

function decodeHeader(h: Uint8Array, path: string): SegmentInfo {
  const fail = (why: string) => new SegmentFileError(`${path}: ${why}`);
  const magic = String.fromCharCode(...h.subarray(0, 8));
  if (magic !== segmentMagic) {
    throw fail(`not a Cairn segment file: bad magic ${JSON.stringify(magic)}, expected "CAIRNSEG"`);
  }
  const version = getU32(h, 8);
  if (version !== segmentFormatVersion) {
    throw fail(
      version === 1 || version === 2
        ? `segment format version ${version} (${
          version === 1 ? "volumes named by name, layout epochs" : "term in the header"
        }) is not supported by ` +
          `this Cairn: export the volume with the Cairn that wrote it and import it into a new volume`
        : `unsupported segment format version ${version}, expected ${segmentFormatVersion}`,
    );
  }
  const stored = getU32(h, headerCrcOffset);
  const computed = headerCrc(h);
  if (stored !== computed) {
    throw fail(`header checksum mismatch: stored ${hex32(stored)}, computed ${hex32(computed)}`);
  }
  const blockSize = getU32(h, 12);
  const segmentBytes = getU64(h, 16);
  const problem = geometryProblem(blockSize, segmentBytes);
  if (problem) throw fail(`bad header: ${problem}`);
  const record = h.subarray(termRecordOffset, termRecordOffset + termRecordBytes);
  if (
    getU32(record, 0) !== termRecordMagic || getU32(record, 4) !== crc32c(record.subarray(8, 16))
  ) {
    throw fail("bad header: the term record fails its checksum (rot?); rebuild this replica");
  }
  const epoch = getU64(record, 8);
  if (epoch < 0) throw fail("bad header: term exceeds 2^53");
  const nameLength = h[40];
  if (nameLength === 0 || nameLength > maxVolumeNameBytes) {
    throw fail(`bad header: volume name length ${nameLength} is not 1..${maxVolumeNameBytes}`);
  }
  const volume = String.fromCharCode(...h.subarray(41, 41 + nameLength));
  if (!isPrintableAscii(volume)) throw fail("bad header: volume name is not printable ASCII");
  return { volume, segmentIndex: getU32(h, 24), segmentBytes, blockSize, epoch };
}

export class SegmentFile {
  readonly volume: string;
  readonly segmentIndex: number;
  readonly segmentBytes: number;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly path: string;
  #file: DiskFile;
  #closed = false;
  #epoch: number;
  #maxVersion = 0;
  readonly #metaOffset = segmentHeaderBytes;
  readonly #dataOffset: number;
  readonly #scratch = new Uint8Array(scratchBlocks * segmentMetaEntryBytes);
  #scratchBusy = false;

  private constructor(file: DiskFile, path: string, info: SegmentInfo) {
    this.#file = file;
    this.path = path;
    this.volume = info.volume;
    this.segmentIndex = info.segmentIndex;
    this.segmentBytes = info.segmentBytes;
    this.blockSize = info.blockSize;
    this.blockCount = info.segmentBytes / info.blockSize;
    this.#epoch = info.epoch;
    this.#dataOffset = segmentHeaderBytes + metaRegionBytes(this.blockCount);
  }

  /**
   * Creates (or replaces) the file at path: header, full length by truncate so
   * it stays sparse, then datasync and a sync of the parent directory.
   */
  static async create(disk: Disk, path: string, info: SegmentInfo): Promise<SegmentFile> {
    validateInfo(info);
    const file = await disk.open(path, { create: true });
    try {
      // Truncating to 0 first drops any old contents, so every block reads as never written.
      await file.truncate(0);
      await file.truncate(segmentFileSizeBytes(info.segmentBytes, info.blockSize));
      await file.write(encodeHeader(info), 0);
      await file.datasync();
      await disk.syncDir(posix.dirname(path));
    } catch (err) {
      await file.close().catch(() => {});
      throw err;
    }
    return new SegmentFile(file, path, { ...info });
  }

  /**
   * Opens an existing segment file, checking magic, version, header crc and
   * size; scans the meta region once for maxVersion. A missing file rejects
   * with the disk's own error (code ENOENT), a bad one with SegmentFileError.
   */
  static async open(disk: Disk, path: string): Promise<SegmentFile> {
    const file = await disk.open(path, { create: false });
    try {
      const size = await file.sizeBytes();
      if (size < segmentHeaderBytes) {
        throw new SegmentFileError(
          `${path}: file is ${size} bytes, too short for a ${segmentHeaderBytes}-byte segment header`,
        );
      }
      const header = new Uint8Array(segmentHeaderBytes);
      await readExactly(file, header, 0, path);
      const info = decodeHeader(header, path);
      const expected = segmentFileSizeBytes(info.segmentBytes, info.blockSize);
      if (size !== expected) {
        throw new SegmentFileError(
          `${path}: file is ${size} bytes, expected ${expected} for segmentBytes ` +
            `${info.segmentBytes} and blockSize ${info.blockSize}`,
        );
      }
      const segment = new SegmentFile(file, path, info);
      await segment.#scanMaxVersion();
      return segment;
    } catch (err) {
      await file.close().catch(() => {});
      throw err;
    }
  }

  get epoch(): number {
    return this.#epoch;
  }

  /** Highest block version in the file (0 if none). */
  get maxVersion(): number {
    return this.#maxVersion;
  }

  /** Rewrites the header with this epoch; durable after the next datasync(). */
  async setEpoch(epoch: number): Promise<void> {
    this.#checkOpen();
    if (!isUint(epoch, Number.MAX_SAFE_INTEGER)) {
      throw new SegmentFileError(`epoch ${epoch} is not a non-negative safe integer`);
    }
    this.#epoch = epoch;
    // One write inside one sector: a power loss keeps the old term or the new, never a tear.
    await this.#file.write(encodeTermRecord(epoch), termRecordOffset);
  }

  /**
   * Writes data.length / blockSize blocks from firstBlock with this version:
   * one data pwrite and one meta pwrite, no sync.
   */
  async writeBlocks(firstBlock: number, data: Uint8Array, version: number): Promise<void> {
    this.#checkOpen();
    if (!(data instanceof Uint8Array) || data.length % this.blockSize !== 0) {
      throw new SegmentFileError(
        `write of ${data?.length} bytes is not a multiple of blockSize ${this.blockSize}`,
      );
    }
    const count = data.length / this.blockSize;
    this.#checkRange(firstBlock, count);
    this.#checkVersion(version);
    if (count === 0) return;
    const bs = this.blockSize;
    const meta = new Uint8Array(count * segmentMetaEntryBytes);
    for (let i = 0; i < count; i++) {
      const at = i * segmentMetaEntryBytes;
      putU64(meta, at, version);
      putU32(meta, at + 8, crc32c(data.subarray(i * bs, (i + 1) * bs)));
      putU32(meta, at + 12, flagWritten);
    }
    if (version > this.#maxVersion) this.#maxVersion = version;
    // Both in flight at once: their order does not matter for crash safety
    // (either half alone fails the crc), and this halves the latency.
    await Promise.all([
      this.#file.write(data, this.#dataOffset + firstBlock * bs),
      this.#file.write(meta, this.#metaOffset + firstBlock * segmentMetaEntryBytes),
    ]);
  }

  /** Marks count blocks ZERO with this version (trim / write-zeroes): one meta pwrite, no sync. */
  async zeroBlocks(firstBlock: number, count: number, version: number): Promise<void> {
    this.#checkOpen();
    this.#checkRange(firstBlock, count);
    this.#checkVersion(version);
    if (count === 0) return;
    const meta = new Uint8Array(count * segmentMetaEntryBytes);
    for (let i = 0; i < count; i++) {
      const at = i * segmentMetaEntryBytes;
      putU64(meta, at, version);
      putU32(meta, at + 12, flagZero);
    }
    if (version > this.#maxVersion) this.#maxVersion = version;
    await this.#file.write(meta, this.#metaOffset + firstBlock * segmentMetaEntryBytes);
  }

  /** Reads the meta entries of blocks firstBlock.. into meta (16 bytes each). */
  #readMetaEntries(firstBlock: number, meta: Uint8Array): Promise<void> {
    return readExactly(
      this.#file,
      meta,
      this.#metaOffset + firstBlock * segmentMetaEntryBytes,
      this.path,
    );
  }

  /**
   * Reads count blocks: one meta pread, then one data pread spanning the
   * WRITTEN blocks (none if there are none). Unwritten and zero blocks read as
   * zeros; a WRITTEN block whose crc fails is "corrupt" and reads as zeros.
   */
  async readBlocks(
    firstBlock: number,
    count: number,
  ): Promise<{ data: Uint8Array; states: BlockState[]; versions: number[] }> {
    this.#checkOpen();
    this.#checkRange(firstBlock, count);
    const bs = this.blockSize;
    const data = new Uint8Array(count * bs);
    const states: BlockState[] = new Array(count);
    const versions: number[] = new Array(count);
    if (count === 0) return { data, states, versions };
    const meta = this.#takeMetaBuffer(count);
    try {
      await this.#readMetaEntries(firstBlock, meta);
      let first = -1;
      let last = -1;
      for (let i = 0; i < count; i++) {
        const at = i * segmentMetaEntryBytes;
        states[i] = entryState(meta, at);
        versions[i] = Math.max(0, getU64(meta, at));
        if (states[i] === "written") {
          if (first < 0) first = i;
          last = i;
        }
      }
      if (first < 0) return { data, states, versions };
      const span = data.subarray(first * bs, (last + 1) * bs);
      await readExactly(this.#file, span, this.#dataOffset + (firstBlock + first) * bs, this.path);
      for (let i = first; i <= last; i++) {
        const block = data.subarray(i * bs, (i + 1) * bs);
        // Trimmed blocks in the span may still hold old bytes; corrupt ones hold bad bytes.
        if (states[i] !== "written") block.fill(0);
        else if (crc32c(block) !== getU32(meta, i * segmentMetaEntryBytes + 8)) {
          states[i] = "corrupt";
          block.fill(0);
        }
      }
      return { data, states, versions };
    } finally {
      this.#releaseMetaBuffer(meta);
    }
  }

  /** Per-block version, crc and state without reading data (for diffs between replicas). */
  async readMeta(
    firstBlock: number,
    count: number,
  ): Promise<{ versions: number[]; crcs: number[]; states: BlockState[] }> {
    this.#checkOpen();
    this.#checkRange(firstBlock, count);
    const versions: number[] = new Array(count);
    const crcs: number[] = new Array(count);
    const states: BlockState[] = new Array(count);
    if (count === 0) return { versions, crcs, states };
    const meta = this.#takeMetaBuffer(count);
    try {
      await this.#readMetaEntries(firstBlock, meta);
      for (let i = 0; i < count; i++) {
        const at = i * segmentMetaEntryBytes;
        versions[i] = Math.max(0, getU64(meta, at));
        crcs[i] = getU32(meta, at + 8);
        states[i] = entryState(meta, at);
      }
      return { versions, crcs, states };
    } finally {
      this.#releaseMetaBuffer(meta);
    }
  }

  /**
   * Reads every block and checks every crc. dataDigest is SHA-256 over each
   * block's effective contents (zeros for unwritten and zero blocks, the raw
   * bytes for corrupt ones), so replicas with equal contents agree however
   * the zeros got there; metaDigest is SHA-256 over each block's version as
   * a u64 little-endian.
   */
  async scrub(
    onProgress?: (doneBlocks: number, totalBlocks: number) => void,
    /**
     * Only these blocks (the owner's background scrub checks a segment a range at a time);
     * default the whole segment. corruptBlocks are block numbers in the segment, the
     * digests cover the range only.
     */
    range?: { firstBlock: number; blockCount: number },
  ): Promise<{ corruptBlocks: number[]; dataDigest: string; metaDigest: string }> {
    this.#checkOpen();
    const from = range?.firstBlock ?? 0;
    const to = range ? from + range.blockCount : this.blockCount;
    if (range) this.#checkRange(range.firstBlock, range.blockCount);
    const bs = this.blockSize;
    // A small range needs only buffers its size.
    const chunkBlocks = Math.max(1, Math.min(Math.floor(chunkBytes / bs), to - from));
    const meta = new Uint8Array(chunkBlocks * segmentMetaEntryBytes);
    const versionBytes = new Uint8Array(chunkBlocks * 8);
    const data = new Uint8Array(chunkBlocks * bs);
    const dataHash = createHash("sha256");
    const metaHash = createHash("sha256");
    const corruptBlocks: number[] = [];
    for (let start = from; start < to; start += chunkBlocks) {
      const n = Math.min(chunkBlocks, to - start);
      const m = meta.subarray(0, n * segmentMetaEntryBytes);
      await readExactly(this.#file, m, this.#metaOffset + start * segmentMetaEntryBytes, this.path);
      // Blocks whose bytes matter: WRITTEN ones, and those with unreadable meta.
      let first = -1;
      let last = -1;
      for (let i = 0; i < n; i++) {
        const at = i * segmentMetaEntryBytes;
        versionBytes.set(m.subarray(at, at + 8), i * 8);
        if (getU32(m, at + 12) !== flagUnwritten && getU32(m, at + 12) !== flagZero) {
          if (first < 0) first = i;
          last = i;
        }
      }
      const chunk = data.subarray(0, n * bs);
      chunk.fill(0);
      if (first >= 0) {
        const span = chunk.subarray(first * bs, (last + 1) * bs);
        await readExactly(this.#file, span, this.#dataOffset + (start + first) * bs, this.path);
        for (let i = first; i <= last; i++) {
          const at = i * segmentMetaEntryBytes;
          const block = chunk.subarray(i * bs, (i + 1) * bs);
          const state = entryState(m, at);
          if (state === "corrupt") corruptBlocks.push(start + i);
          else if (state !== "written") block.fill(0);
          else if (crc32c(block) !== getU32(m, at + 8)) corruptBlocks.push(start + i);
        }
      }
      dataHash.update(chunk);
      metaHash.update(versionBytes.subarray(0, n * 8));
      onProgress?.(start + n - from, to - from);
    }
    return {
      corruptBlocks,
      dataDigest: dataHash.digest("hex"),
      metaDigest: metaHash.digest("hex"),
    };
  }

  async datasync(): Promise<void> {
    this.#checkOpen();
    await this.#file.datasync();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#file.close();
  }

  #info(): SegmentInfo {
    return {
      volume: this.volume,
      segmentIndex: this.segmentIndex,
      segmentBytes: this.segmentBytes,
      blockSize: this.blockSize,
      epoch: this.#epoch,
    };
  }

  #checkOpen(): void {
    if (this.#closed) throw new SegmentFileError(`${this.path}: segment file is closed`);
  }

  #checkRange(firstBlock: number, count: number): void {
    if (
      !isUint(firstBlock, this.blockCount) || !isUint(count, this.blockCount) ||
      firstBlock + count > this.blockCount
    ) {
      throw new SegmentFileError(
        `block range ${firstBlock}+${count} is outside the segment's ${this.blockCount} blocks`,
      );
    }
  }

  #checkVersion(version: number): void {
    if (!isUint(version, Number.MAX_SAFE_INTEGER)) {
      throw new SegmentFileError(`version ${version} is not a non-negative safe integer`);
    }
  }

  #takeMetaBuffer(count: number): Uint8Array {
    if (count > scratchBlocks || this.#scratchBusy) {
      return new Uint8Array(count * segmentMetaEntryBytes);
    }
    this.#scratchBusy = true;
    return this.#scratch.subarray(0, count * segmentMetaEntryBytes);
  }

  #releaseMetaBuffer(meta: Uint8Array): void {
    if (meta.buffer === this.#scratch.buffer) this.#scratchBusy = false;
  }

  async #scanMaxVersion(): Promise<void> {
    const chunkBlocks = chunkBytes / segmentMetaEntryBytes;
    const meta = new Uint8Array(Math.min(this.blockCount, chunkBlocks) * segmentMetaEntryBytes);
    let max = 0;
    for (let start = 0; start < this.blockCount; start += chunkBlocks) {
      const n = Math.min(chunkBlocks, this.blockCount - start);
      const m = meta.subarray(0, n * segmentMetaEntryBytes);
      await readExactly(this.#file, m, this.#metaOffset + start * segmentMetaEntryBytes, this.path);
      for (let at = 0; at < m.length; at += segmentMetaEntryBytes) {
        const v = getU64(m, at);
        if (v > max && entryState(m, at) !== "corrupt") max = v;
      }
    }
    this.#maxVersion = max;
  }
}

async function readExactly(file: DiskFile, buf: Uint8Array, position: number, path: string) {
  const n = await file.read(buf, position);
  if (n !== buf.length) {
    throw new SegmentFileError(
      `${path}: short read of ${n} of ${buf.length} bytes at ${position} (file truncated?)`,
    );
  }
}
