/**
 * The replica host of one node: the replica actors of every segment stored
 * here, and the handler of `cairn.v1.rep.<node>.<volume>.<op>` messages.
 */
import type { Disk } from "../ports.ts";
import { SegmentFile, SegmentFileError } from "./segment_file.ts";
import { Replica, StaleEpochError } from "./replica.ts";
import {
  decodeReadRequest,
  decodeWriteBatch,
  encodeError,
  encodeJsonOk,
  encodeOk,
  encodeReadReply,
  EntryKind,
  WireError,
  type WriteEntry,
} from "./wire.ts";
import type { ReplicaOp } from "../../protocol/subjects.ts";
import {
  fenceRequestSchema,
  metaRequestSchema,
  parseJson,
  scrubRequestSchema,
} from "../../protocol/schemas.ts";
import { blockSizeBytes } from "../../protocol/limits.ts";
import type { ErrorCodeName } from "../../protocol/errors.ts";

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export class HostError extends Error {
  constructor(readonly code: ErrorCodeName, message: string) {
    super(message);
  }
}

export function segmentFileName(segment: number): string {
  return `${String(segment).padStart(6, "0")}.seg`;
}

export class ReplicaHost {
  private readonly volumes = new Map<string, Map<number, Replica>>();
  /** Per volume: pwrites of write batches apply in arrival order (fsyncs overlap). */
  private readonly writeChains = new Map<string, Promise<unknown>>();
  private closing = false;

  constructor(
    private readonly dataDir: string,
    private readonly disk: Disk,
    private readonly log: Logger,
  ) {}

  private volumeDir(volume: string): string {
    return `${this.dataDir}/segments/${volume}`;
  }

  /** Reopens every segment file in the data dir (node start). */
  async loadAll(): Promise<void> {
    const root = `${this.dataDir}/segments`;
    await this.disk.mkdirp(root);
    for (const volume of await this.disk.list(root)) {
      const replicas = new Map<number, Replica>();
      for (const name of await this.disk.list(`${root}/${volume}`)) {
        if (!name.endsWith(".seg")) continue;
        const path = `${root}/${volume}/${name}`;
        try {
          const file = await SegmentFile.open(this.disk, path);
          replicas.set(file.segmentIndex, new Replica(file));
        } catch (err) {
          this.log.error(`cannot open segment file ${path}: ${(err as Error).message}`);
        }
      }
      if (replicas.size) this.volumes.set(volume, replicas);
    }
  }

  volumeNames(): string[] {
    return [...this.volumes.keys()];
  }

  segmentsOf(volume: string): number[] {
    return [...(this.volumes.get(volume)?.keys() ?? [])].sort((a, b) => a - b);
  }

  async createSegments(
    volume: string,
    segmentBytes: number,
    segments: number[],
    epoch: number,
  ): Promise<void> {
    const dir = this.volumeDir(volume);
    await this.disk.mkdirp(dir);
    const replicas = this.volumes.get(volume) ?? new Map<number, Replica>();
    this.volumes.set(volume, replicas);
    for (const segment of segments) {
      if (replicas.has(segment)) continue;
      const file = await SegmentFile.create(this.disk, `${dir}/${segmentFileName(segment)}`, {
        volume,
        segmentIndex: segment,
        segmentBytes,
        blockSize: blockSizeBytes,
        epoch,
      });
      replicas.set(segment, new Replica(file));
    }
    await this.disk.syncDir(dir);
  }

  async deleteVolume(volume: string): Promise<void> {
    const replicas = this.volumes.get(volume);
    this.volumes.delete(volume);
    await this.writeChains.get(volume)?.catch(() => {});
    this.writeChains.delete(volume);
    for (const replica of replicas?.values() ?? []) await replica.close().catch(() => {});
    const dir = this.volumeDir(volume);
    for (const name of await this.disk.list(dir)) await this.disk.remove(`${dir}/${name}`);
    await this.disk.removeDir(dir);
    await this.disk.syncDir(`${this.dataDir}/segments`);
  }

  private replica(volume: string, segment: number): Replica {
    const replica = this.volumes.get(volume)?.get(segment);
    if (!replica) {
      throw new HostError("NO_SUCH_VOLUME", `no replica of ${volume} segment ${segment} here`);
    }
    return replica;
  }

  /** Handles one replica message; never throws: errors become error replies. */
  async handle(volume: string, op: ReplicaOp | string, body: Uint8Array): Promise<Uint8Array> {
    try {
      if (this.closing) throw new HostError("MOVED", "node is shutting down");
      switch (op) {
        case "write":
          return await this.write(volume, body);
        case "read":
          return await this.read(volume, body);
        case "fence":
          return await this.fence(volume, body);
        case "meta":
          return await this.meta(volume, body);
        case "scrub":
          return await this.scrub(volume, body);
        default:
          throw new HostError("UNKNOWN_OP", `unknown replica op ${op}`);
      }
    } catch (err) {
      if (err instanceof HostError) return encodeError(err.code, err.message);
      if (err instanceof StaleEpochError) return encodeError("STALE_EPOCH", err.message);
      if (err instanceof WireError) return encodeError("BAD_FRAME", err.message);
      if (err instanceof SegmentFileError) return encodeError("BAD_FRAME", err.message);
      this.log.error(`replica ${volume} ${op}: ${(err as Error).stack ?? err}`);
      return encodeError("IO_ERROR", (err as Error).message);
    }
  }

  private async write(volume: string, body: Uint8Array): Promise<Uint8Array> {
    const { epoch, entries } = decodeWriteBatch(body);
    await this.writeEntries(volume, epoch, entries);
    return encodeOk();
  }

  /**
   * Applies write entries in arrival order and returns once they are durable
   * (group commit). The in-process path of the owner's own replica calls this
   * directly; remote owners arrive through `handle("write")`.
   */
  async writeEntries(volume: string, epoch: number, entries: WriteEntry[]): Promise<void> {
    if (this.closing) throw new HostError("MOVED", "node is shutting down");
    const touched = new Set<Replica>();
    for (const entry of entries) touched.add(this.replica(volume, entry.segment));
    // Fence check for the whole batch before any byte is written.
    for (const replica of touched) {
      if (epoch < replica.epoch) await replica.admit(epoch);
    }
    const previous = this.writeChains.get(volume) ?? Promise.resolve();
    const applied = previous.catch(() => {}).then(() => this.applyEntries(volume, epoch, entries));
    this.writeChains.set(volume, applied);
    await applied;
    await Promise.all([...touched].map((replica) => replica.sync()));
  }

  private async applyEntries(volume: string, epoch: number, entries: WriteEntry[]) {
    const admitted = new Set<Replica>();
    for (const entry of entries) {
      const replica = this.replica(volume, entry.segment);
      if (!admitted.has(replica)) {
        await replica.admit(epoch);
        admitted.add(replica);
      }
      if (entry.kind === EntryKind.data) {
        await replica.file.writeBlocks(entry.firstBlock, entry.data!, entry.version);
      } else if (entry.kind === EntryKind.repair) {
        await this.repairBlocks(replica, entry);
      } else {
        await replica.file.zeroBlocks(entry.firstBlock, entry.blockCount, entry.version);
      }
    }
  }

  /** Writes each block of a repair entry unless this replica already holds a newer version. */
  private async repairBlocks(replica: Replica, entry: WriteEntry): Promise<void> {
    const { versions, states } = await replica.file.readMeta(entry.firstBlock, entry.blockCount);
    for (let i = 0; i < entry.blockCount; i++) {
      if (versions[i] > entry.version && states[i] !== "corrupt") continue;
      const block = entry.data!.subarray(i * blockSizeBytes, (i + 1) * blockSizeBytes);
      await replica.file.writeBlocks(entry.firstBlock + i, block, entry.version);
    }
  }

  private async read(volume: string, body: Uint8Array): Promise<Uint8Array> {
    const request = decodeReadRequest(body);
    const replica = this.replica(volume, request.segment);
    await replica.admit(request.epoch);
    const result = await replica.file.readBlocks(request.firstBlock, request.blockCount);
    return encodeReadReply(result);
  }

  /** A new owner's first contact: persist its epoch and report each segment's highest version. */
  private async fence(volume: string, body: Uint8Array): Promise<Uint8Array> {
    const request = this.parse(fenceRequestSchema, body);
    const segments = [];
    for (const segment of request.segments) {
      const replica = this.replica(volume, segment);
      await replica.admit(request.epoch);
      await replica.sync();
      segments.push({ segment, epoch: replica.epoch, maxVersion: replica.file.maxVersion });
    }
    return encodeJsonOk({ segments });
  }

  /** Block versions of a range of one segment (for diffs between replicas), as f64s. */
  private async meta(volume: string, body: Uint8Array): Promise<Uint8Array> {
    const request = this.parse(metaRequestSchema, body);
    const replica = this.replica(volume, request.segment);
    await replica.admit(request.epoch);
    const { versions } = await replica.file.readMeta(request.firstBlock, request.blockCount);
    return encodeOk(new Uint8Array(Float64Array.from(versions).buffer));
  }

  private async scrub(volume: string, body: Uint8Array): Promise<Uint8Array> {
    const request = this.parse(scrubRequestSchema, body);
    const replica = this.replica(volume, request.segment);
    await replica.admit(request.epoch);
    return encodeJsonOk(await replica.file.scrub());
  }

  private parse<T>(schema: Parameters<typeof parseJson<T>>[0], body: Uint8Array): T {
    const parsed = parseJson(schema, body);
    if (!parsed.ok) throw new HostError("BAD_REQUEST", parsed.message);
    return parsed.value;
  }

  /** Stop taking writes, let the ones in flight finish, sync and close every file. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.writeChains.values()].map((p) => p.catch(() => {})));
    for (const replicas of this.volumes.values()) {
      for (const replica of replicas.values()) {
        await replica.sync().catch(() => {});
        await replica.close().catch(() => {});
      }
    }
    this.volumes.clear();
  }
}

export { blockSizeBytes };
