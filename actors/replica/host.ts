/**
 * The replica host of one node: the replica actors of every segment stored
 * here, and the handler of `cairn.v1.rep.<node>.<volume>.<op>` messages.
 */
import type { Disk } from "../ports.ts";
import { SegmentFile, SegmentFileError } from "./segment_file.ts";
import { Replica, StaleEpochError } from "./replica.ts";
import { encodeRecord, journalCheckpointBytes, NodeJournal } from "./journal.ts";
import { FailStop, FailStopError } from "./fail_stop.ts";
import {
  BatchFlag,
  clientRequestKey,
  decodeReadRequest,
  decodeWriteBatch,
  encodeError,
  encodeJsonOk,
  encodeOk,
  encodeReadReply,
  encodeWriteBatchParts,
  EntryKind,
  type ReadRequest,
  type ReadResult,
  requestKey,
  WireError,
  type WriteEntry,
} from "./wire.ts";
import type { ReplicaOp } from "../../protocol/subjects.ts";
import { LeaseTable } from "./lease.ts";
import type { Clock } from "../ports.ts";
import {
  epochRequestSchema,
  fenceRequestSchema,
  leaseRequestSchema,
  metaRequestSchema,
  parseJson,
  scrubRequestSchema,
} from "../../protocol/schemas.ts";
import { blockSizeBytes } from "../../protocol/limits.ts";
import { versionsPerTerm } from "../volume/core.ts";
import type { ErrorCodeName } from "../../protocol/errors.ts";
import type { ReplicaState } from "../../protocol/schemas.ts";

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

/**
 * Data entries at least this large bypass the journal: they are written in place and
 * their segment file is fdatasynced before the ack. Journaling them would write every
 * byte twice (journal, then segment file); on one disk shared by three replicas that
 * halved large sequential writes. Small writes stay journaled: one fdatasync for a
 * whole batch beats one per segment file.
 */
export const directWriteMinBytes = 64 * 1024;
/**
 * A segment file that has taken this many bytes of cached writes in place since its last
 * sync starts one in the background. The disk then writes them back while writes go on, so
 * a FLUSH waits for little (it used to find up to a whole FLUSH interval's writes dirty and
 * stall every writer while they went to disk), and a power loss takes at most about this
 * much per file. Writes so synced are still reported durable only by the FLUSH.
 */
export const cachedWritebackBytes = 8 * 1024 * 1024;
/**
 * Client requests remembered per volume (origin/requestId of writes held here), for a new
 * owner to recognize resends: the writes of a few seconds at thousands a second.
 */
export const rememberedRequestsPerVolume = 16_384;

export interface ReplicaHostOptions {
  /** Journal size at which a write starts a checkpoint; default journalCheckpointBytes. */
  journalCheckpointBytes?: number;
  /**
   * Smallest data entry written in place; default directWriteMinBytes. The simulator, whose
   * writes are a few blocks, lowers it so both paths (and batches mixing them) run.
   */
  directWriteMinBytes?: number;
  /** Cached bytes that start a segment file's background sync; default cachedWritebackBytes. */
  cachedWritebackBytes?: number;
  /**
   * Called once when the host fails-stop after a failed fdatasync (or a failed
   * checkpoint): the node should stop itself. The reason names what failed.
   */
  onFailStop?: (reason: string) => void;
  /**
   * Told of every write batch at the moment it is acknowledged as durable (for the
   * simulator's oracle: a replica holds every write it acknowledged, after any crash).
   */
  onDurable?: (
    volume: string,
    entries: readonly WriteEntry[],
    /**
     * Cached writes told durable at a flush (or fence): applied earlier, so a block may hold
     * a newer write told durable before them.
     */
    flushed?: boolean,
  ) => void;
  /**
   * The node's monotonic clock, for read leases (lease.ts): with it, fences of a higher
   * term wait out leases granted to lower ones. Without it (unit tests) fences never wait.
   */
  clock?: Clock;
  /**
   * Names this boot of the machine (Linux: /proc/sys/kernel/random/boot_id; the simulator:
   * one per power cycle). A host that finds its cached-writes marker from another boot may
   * have lost unflushed cached writes: its replicas are suspect (see loadAll). Without it
   * (unit tests) the boot never changes.
   */
  bootId?: string;
}

/**
 * Written (with the boot id) before the first cached write a host applies: found at start
 * with another boot's id, the machine lost power or rebooted since, and unflushed cached
 * writes may be gone.
 */
export const cachedWritesMarkerName = "cached-writes.boot";

/** A volume's cached writes applied and not yet synced (see ReplicaHost.unsyncedWrites). */
interface UnsyncedWrites {
  replicas: Set<Replica>;
  entries: { entry: WriteEntry; replica: Replica }[];
}

export function segmentFileName(segment: number): string {
  return `${String(segment).padStart(6, "0")}.seg`;
}

/** The segment index in a segment file name (`000003.seg` -> 3), or null for any other name. */
export function segmentOfFileName(name: string): number | null {
  const match = /^(\d{6,})\.seg$/.exec(name);
  return match ? Number(match[1]) : null;
}

/**
 * How often a node compares its segment files with the layouts (node/runtime.ts): orphaned
 * files go, lost replicas the owner has marked stale get a fresh file to be rebuilt into.
 */
export const segmentCheckIntervalMs = 10_000;

/** One volume as the metadata shows it, seen from one node (for planSegmentFiles). */
export interface VolumeLayoutView {
  volumeId: string;
  name: string;
  segmentBytes: number;
  /**
   * This node's replicas in the layout: segment -> state. null when the spec exists but its
   * layout could not be read or is not written yet (a create in progress): nothing is decided.
   */
  replicas: ReadonlyMap<number, ReplicaState> | null;
}

/** The segment files a node holds: good ones (open, served) and ones it could not open. */
export interface HeldSegments {
  good: ReadonlyMap<string, readonly number[]>;
  unreadable: ReadonlyMap<string, readonly number[]>;
}

export interface SegmentFilePlan {
  /** Volume ids no spec names any more (deleted, or created again): every file goes. */
  deleteVolumes: string[];
  /** Segments of a live volume whose layout does not list this node for them. */
  orphans: { volume: string; segment: number }[];
  /**
   * Segments the layout lists here as stale or rebuilding while this node holds no good
   * copy (the file is missing or could not be opened): a fresh empty file is made, which
   * the owner's catch-up fills.
   */
  recreate: { volume: string; segment: number; segmentBytes: number }[];
  /**
   * Segments the layout lists here as in-sync while this node holds no good copy: reported;
   * the host answers their fence, reads and writes without them, so the owner marks them stale.
   */
  missing: { volume: string; name: string; segment: number }[];
}

/**
 * Compares a node's segment files with the layouts (pure). `views` must hold every volume
 * spec in the metadata: a volume id absent from it is deleted. A segment the layout lists
 * for this node, in any state, is never an orphan.
 */
export function planSegmentFiles(
  held: HeldSegments,
  views: readonly VolumeLayoutView[],
): SegmentFilePlan {
  const plan: SegmentFilePlan = { deleteVolumes: [], orphans: [], recreate: [], missing: [] };
  const byId = new Map(views.map((v) => [v.volumeId, v]));
  const volumes = new Set([...held.good.keys(), ...held.unreadable.keys()]);
  for (const volume of volumes) {
    const view = byId.get(volume);
    if (!view) {
      plan.deleteVolumes.push(volume);
      continue;
    }
    if (!view.replicas) continue;
    const files = new Set([...held.good.get(volume) ?? [], ...held.unreadable.get(volume) ?? []]);
    for (const segment of [...files].sort((a, b) => a - b)) {
      if (!view.replicas.has(segment)) plan.orphans.push({ volume, segment });
    }
  }
  for (const view of views) {
    if (!view.replicas) continue;
    const good = new Set(held.good.get(view.volumeId) ?? []);
    for (const [segment, state] of view.replicas) {
      if (good.has(segment)) continue;
      const lost = { volume: view.volumeId, segment };
      if (state === "in-sync") plan.missing.push({ ...lost, name: view.name });
      else plan.recreate.push({ ...lost, segmentBytes: view.segmentBytes });
    }
  }
  return plan;
}

export class ReplicaHost {
  private readonly volumes = new Map<string, Map<number, Replica>>();
  private journal!: NodeJournal;
  /** Replicas written per journal generation: synced before that generation is removed. */
  private readonly dirty = new Map<number, Set<Replica>>();
  /** Highest generation a checkpoint took the dirty replicas of: no record may go to it now. */
  private checkpointedThrough = 0;
  private checkpointing: Promise<void> | null = null;
  /**
   * Per volume, the client requests whose writes are held here (origin/requestId). In
   * memory, rebuilt from the journal on start: a restart forgets those from before the
   * last checkpoint (best effort; a resend is then applied again, as before this table).
   */
  private readonly clientRequests = new Map<string, Set<string>>();
  /**
   * Per volume, cached writes applied and not yet synced: the segment files written in
   * place, and (only for the onDurable oracle) the entries, told durable at the flush.
   */
  private readonly unsyncedWrites = new Map<string, UnsyncedWrites>();
  /** Bytes of cached writes each segment file took in place since its last writeback began. */
  private readonly cachedBytesSinceWriteback = new Map<Replica, number>();
  /** Background syncs under way (see cachedWritebackBytes): a file is closed only after its own. */
  private readonly writebacks = new Map<Replica, Promise<void>>();
  private readonly bootId: string;
  /** The cached-writes marker names this boot (set once written or found so). */
  private markerWritten: Promise<void> | null = null;
  /**
   * Segments (volume/segment) that may have lost unflushed cached writes in a power loss:
   * refused for reads, reported `suspect` to fences so an owner with another in-sync copy
   * marks them stale and catches them up. Value: the term of the last fence that heard
   * it (0: none yet); the first write batch at that term or later clears it, since the
   * owner has then recorded its decision in the layout.
   */
  private readonly suspect = new Map<string, number>();
  /** Per volume: pwrites of write batches apply in arrival order (fsyncs overlap). */
  private readonly writeChains = new Map<string, Promise<unknown>>();
  /** Per volume: the owner write stream this replica follows (set by fences, in memory only). */
  private readonly streams = new Map<string, { term: number; nextSeq: number }>();
  private closing = false;
  private closed: Promise<void> | null = null;
  private readonly failStop: FailStop;
  /** Every disk call goes through the fail-stop gate (see fail_stop.ts). */
  private readonly disk: Disk;
  private readonly checkpointBytes: number;
  private readonly directMinBytes: number;
  private readonly writebackBytes: number;
  private readonly onDurable: ReplicaHostOptions["onDurable"];
  /** Read leases, kept only with a clock (unit tests without one never make fences wait). */
  private readonly leases: { table: LeaseTable; clock: Clock } | null;
  /**
   * Segment files found at start that could not be opened (bad header, term record or
   * length), per volume: segment -> why. Not served; rebuilt once the owner marks them stale.
   */
  private readonly unreadable = new Map<string, Map<number, string>>();
  /** Segments reported missing (listed in sync here, no good copy), so each is logged once. */
  private readonly reportedMissing = new Set<string>();
  /** Orphan segment files seen by the last planSegmentFiles check (deleted if seen twice). */
  private orphanCandidates = new Set<string>();

  constructor(
    private readonly dataDir: string,
    disk: Disk,
    private readonly log: Logger,
    options: ReplicaHostOptions = {},
  ) {
    this.checkpointBytes = options.journalCheckpointBytes ?? journalCheckpointBytes;
    this.directMinBytes = options.directWriteMinBytes ?? directWriteMinBytes;
    this.writebackBytes = options.cachedWritebackBytes ?? cachedWritebackBytes;
    this.onDurable = options.onDurable;
    this.bootId = options.bootId ?? "this-boot";
    this.leases = options.clock
      ? { table: new LeaseTable(options.clock.nowMs()), clock: options.clock }
      : null;
    this.failStop = new FailStop((reason) => {
      log.error(
        `fail-stop: ${reason}; this node takes no more writes; journal kept for replay; ` +
          `restart the node after fixing the disk`,
      );
      try {
        options.onFailStop?.(reason);
      } catch (err) {
        log.error(`onFailStop: ${(err as Error).stack ?? err}`);
      }
    });
    this.disk = this.failStop.guard(disk);
  }

  /** Whether the host failed-stop (see fail_stop.ts): it then refuses every request. */
  get failed(): boolean {
    return this.failStop.failure !== null;
  }

  /** Throws unless the host takes requests: not failed-stop, not shutting down. */
  private checkUsable(): void {
    const failure = this.failStop.failure;
    if (failure) throw new HostError("IO_ERROR", failure.message);
    if (this.closing) throw new HostError("MOVED", "node is shutting down");
  }

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
          const segment = segmentOfFileName(name);
          const why = (err as Error).message;
          if (segment === null) {
            this.log.error(`cannot open segment file ${path}: ${why}`);
            continue;
          }
          // No good copy here: never served (fence, read and write leave it out), rebuilt
          // into a fresh file once the owner has marked it stale (planSegmentFiles).
          if (!this.unreadable.has(volume)) this.unreadable.set(volume, new Map());
          this.unreadable.get(volume)!.set(segment, why);
          this.log.error(
            `volume ${volume} segment ${segment}: no good copy on this node, the segment file ` +
              `cannot be opened (${why}); not served, it is rebuilt once the owner marks it stale`,
          );
        }
      }
      if (replicas.size) this.volumes.set(volume, replicas);
    }
    await this.replayJournal();
    await this.checkCachedWritesMarker();
  }

  private get markerPath(): string {
    return `${this.dataDir}/${cachedWritesMarkerName}`;
  }

  /** At start: a marker from another boot makes every replica here suspect (see `suspect`). */
  private async checkCachedWritesMarker(): Promise<void> {
    const boot = await this.readMarker();
    if (boot === null) return;
    if (boot === this.bootId) {
      this.markerWritten = Promise.resolve();
      // An earlier process of this boot applied cached writes (it was killed, or stopped
      // before its last flush): they may sit in the page cache unsynced, in files this process
      // has not written. The next FLUSH of each volume syncs all its segment files, else it
      // would answer OK for writes a power loss could still take (simulator seed 3083).
      for (const [volume, replicas] of this.volumes) {
        for (const replica of replicas.values()) this.unsynced(volume).replicas.add(replica);
      }
      return;
    }
    for (const [volume, replicas] of this.volumes) {
      for (const segment of replicas.keys()) this.suspect.set(`${volume}/${segment}`, 0);
    }
    this.log.warn(
      `cached writes were applied here in an earlier boot (${boot}): unflushed ones may be ` +
        `lost, so the ${this.suspect.size} replicas here are suspect until their owners ` +
        `catch them up from another copy (or keep them, where no other copy is in sync)`,
    );
  }

  private async readMarker(): Promise<string | null> {
    if (!(await this.disk.list(this.dataDir)).includes(cachedWritesMarkerName)) return null;
    const file = await this.disk.open(this.markerPath, { create: false });
    try {
      const bytes = new Uint8Array(await file.sizeBytes());
      await file.read(bytes, 0);
      return new TextDecoder().decode(bytes);
    } finally {
      await file.close();
    }
  }

  /** Makes the marker durably name this boot (before a cached write is applied). */
  private writeMarker(): Promise<void> {
    return (async () => {
      const file = await this.disk.open(this.markerPath, { create: true });
      try {
        const bytes = new TextEncoder().encode(this.bootId);
        await file.truncate(0);
        await file.write(bytes, 0);
        await file.datasync();
      } finally {
        await file.close();
      }
      await this.disk.syncDir(this.dataDir);
    })();
  }

  /**
   * Before the first cached batch: the marker must name this boot, durably. While suspect
   * replicas remain, the other boot's marker stays (it keeps them suspect across restarts).
   */
  private cachedWritesMarked(): Promise<void> {
    if (this.suspect.size) return Promise.resolve();
    return this.markerWritten ??= this.writeMarker().catch((err) => {
      this.markerWritten = null;
      throw err;
    });
  }

  /** A write batch at `epoch` was applied to `segments`: clears those an owner has judged. */
  private clearSuspect(volume: string, epoch: number, segments: Iterable<number>): void {
    if (!this.suspect.size) return;
    for (const segment of segments) {
      const key = `${volume}/${segment}`;
      const fencedAt = this.suspect.get(key);
      if (fencedAt !== undefined && fencedAt > 0 && epoch >= fencedAt) this.suspect.delete(key);
    }
    if (this.suspect.size === 0) {
      this.log.info("no suspect replicas left: the cached-writes marker names this boot again");
      this.markerWritten = this.writeMarker();
      this.markerWritten.catch((err) => this.log.warn(`cached-writes marker: ${err.message}`));
    }
  }

  /**
   * A suspect replica serves reads only at the term of the owner that fenced it, or later:
   * that owner has judged it (a copy it marked stale it never reads; one it kept, where every
   * in-sync copy was suspect, it reads, also as a catch-up source). Without this a segment
   * nobody writes after a power loss of every copy would stay unreadable.
   */
  private checkNotSuspect(volume: string, segment: number, epoch: number): void {
    const fencedAt = this.suspect.get(`${volume}/${segment}`);
    if (fencedAt !== undefined && (fencedAt === 0 || epoch < fencedAt)) {
      throw new HostError(
        "NO_SUCH_VOLUME",
        `segment ${segment} of ${volume} here may have lost unflushed cached writes in a ` +
          `power loss; not served until its owner fences it (it is caught up from another copy)`,
      );
    }
  }

  /**
   * Redoes every journaled write (the segment files may lack some after a crash), then
   * starts clean. Version-guarded: a block that already holds a newer version (a direct
   * write made after the record) keeps it; an equal version is rewritten, which repairs a
   * block torn by the crash.
   */
  private async replayJournal(): Promise<void> {
    const { journal, records } = await NodeJournal.open(this.disk, `${this.dataDir}/journal`);
    this.journal = journal;
    const touched = new Set<Replica>();
    const replayed: { volume: string; entry: WriteEntry }[] = [];
    for (const record of records) {
      for (const entry of record.entries) {
        const replica = this.volumes.get(record.volume)?.get(entry.segment);
        if (!replica) continue; // its volume was deleted
        if (entry.kind === EntryKind.request) {
          this.rememberRequest(record.volume, requestKey(entry));
          continue;
        }
        for (const run of await this.notOlder(replica, entry)) await this.applyEntry(replica, run);
        touched.add(replica);
        replayed.push({ volume: record.volume, entry });
      }
    }
    for (const replica of touched) await replica.sync();
    // Durable now (cached writes a kill -9 left in the journal too): told as a flush tells
    // them, version-guarded like the replay.
    for (const { volume, entry } of replayed) this.onDurable?.(volume, [entry], true);
    if (records.length) {
      this.log.info(
        `journal replayed: ${records.length} write batches into ${touched.size} segment files`,
      );
    }
    await this.journal.reset();
  }

  /** Volume ids with segment files here (good or unreadable). */
  volumeNames(): string[] {
    return [...new Set([...this.volumes.keys(), ...this.unreadable.keys()])];
  }

  /** A snapshot of the segment files held here, for planSegmentFiles. */
  heldSegments(): HeldSegments {
    const good = new Map<string, number[]>();
    for (const volume of this.volumes.keys()) good.set(volume, this.segmentsOf(volume));
    const unreadable = new Map<string, number[]>();
    for (const [volume, segments] of this.unreadable) unreadable.set(volume, [...segments.keys()]);
    return { good, unreadable };
  }

  /**
   * Acts on planSegmentFiles: removes the files of deleted volume ids at once; removes an
   * orphan segment file only when the previous check saw it orphaned too (a replica being
   * added here has its file made just before the layout lists it); makes fresh files for
   * lost replicas the owner marked stale; reports lost replicas still listed in sync.
   */
  async applySegmentPlan(plan: SegmentFilePlan): Promise<void> {
    for (const volume of plan.deleteVolumes) {
      this.log.warn(`removing segments of deleted volume id ${volume}`);
      await this.deleteVolume(volume);
    }
    const candidates = new Set<string>();
    for (const { volume, segment } of plan.orphans) {
      const key = `${volume}/${segment}`;
      if (!this.orphanCandidates.has(key)) {
        candidates.add(key);
        continue;
      }
      this.log.warn(
        `removing segment ${segment} of volume id ${volume}: its layout no longer lists this node`,
      );
      await this.deleteSegment(volume, segment);
    }
    this.orphanCandidates = candidates;
    for (const { volume, segment, segmentBytes } of plan.recreate) {
      const why = this.unreadable.get(volume)?.get(segment) ?? "its file is missing";
      this.log.warn(
        `volume ${volume} segment ${segment}: marked stale, and no good copy here (${why}); ` +
          `making a fresh file for the owner to rebuild`,
      );
      await this.recreateSegment(volume, segment, segmentBytes);
    }
    for (const { volume, name, segment } of plan.missing) {
      const key = `${volume}/${segment}`;
      if (this.reportedMissing.has(key)) continue;
      this.reportedMissing.add(key);
      this.log.error(
        `volume ${name} (id ${volume}) segment ${segment}: the layout lists an in-sync replica ` +
          `here but this node has no good copy (${this.missingReason(volume, segment)}); not ` +
          `served, it is rebuilt once the owner marks it stale`,
      );
    }
  }

  /** Why this node has no replica of a segment (for errors and logs). */
  private missingReason(volume: string, segment: number): string {
    const unreadable = this.unreadable.get(volume)?.get(segment);
    return unreadable ? `its file cannot be opened: ${unreadable}` : "no segment file";
  }

  /** How many replicas here are suspect (see `suspect`); for observers such as the simulator. */
  get suspectReplicas(): number {
    return this.suspect.size;
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
    this.failStop.check();
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

  /**
   * A fresh, empty file for a segment this node holds no good copy of (missing or
   * unreadable), replacing a bad one. Only for a replica the owner has marked stale: the
   * owner's catch-up then copies every block into it.
   */
  async recreateSegment(volume: string, segment: number, segmentBytes: number): Promise<void> {
    this.failStop.check();
    if (this.volumes.get(volume)?.has(segment)) return;
    await this.createSegments(volume, segmentBytes, [segment], 0);
    this.unreadable.get(volume)?.delete(segment);
    if (this.unreadable.get(volume)?.size === 0) this.unreadable.delete(volume);
    this.reportedMissing.delete(`${volume}/${segment}`);
  }

  /**
   * Removes one segment file of a volume (the layout no longer lists this node for it);
   * the volume's directory goes with its last file.
   */
  async deleteSegment(volume: string, segment: number): Promise<void> {
    this.failStop.check();
    const replicas = this.volumes.get(volume);
    const replica = replicas?.get(segment);
    // Out of the map first: from now on requests for it are refused.
    replicas?.delete(segment);
    if (replicas?.size === 0) this.volumes.delete(volume);
    this.unreadable.get(volume)?.delete(segment);
    if (this.unreadable.get(volume)?.size === 0) this.unreadable.delete(volume);
    // No journal record of it may outlive it: a replica made here again later must not
    // get old writes replayed into it.
    await this.writeChains.get(volume)?.catch(() => {});
    await this.checkpoint();
    for (const dirty of this.dirty.values()) if (replica) dirty.delete(replica);
    if (replica) await this.forgetUnsynced(volume, replica);
    await replica?.close().catch(() => {});
    const dir = this.volumeDir(volume);
    await this.disk.remove(`${dir}/${segmentFileName(segment)}`);
    if (!this.volumes.has(volume) && !this.unreadable.has(volume)) {
      for (const name of await this.disk.list(dir)) await this.disk.remove(`${dir}/${name}`);
      await this.disk.removeDir(dir);
      await this.disk.syncDir(`${this.dataDir}/segments`);
    } else {
      await this.disk.syncDir(dir);
    }
  }

  async deleteVolume(volume: string): Promise<void> {
    this.failStop.check();
    // No journal record of this volume may outlive it (a new volume could take its name).
    await this.writeChains.get(volume)?.catch(() => {});
    await this.checkpoint();
    const replicas = this.volumes.get(volume);
    this.volumes.delete(volume);
    this.unreadable.delete(volume);
    for (const dirty of this.dirty.values()) {
      for (const r of replicas?.values() ?? []) dirty.delete(r);
    }
    this.writeChains.delete(volume);
    for (const replica of replicas?.values() ?? []) {
      await this.forgetUnsynced(volume, replica);
      await replica.close().catch(() => {});
    }
    const dir = this.volumeDir(volume);
    for (const name of await this.disk.list(dir)) await this.disk.remove(`${dir}/${name}`);
    await this.disk.removeDir(dir);
    await this.disk.syncDir(`${this.dataDir}/segments`);
  }

  private replica(volume: string, segment: number): Replica {
    const replica = this.volumes.get(volume)?.get(segment);
    if (!replica) {
      const unreadable = this.unreadable.get(volume)?.get(segment);
      throw new HostError(
        "NO_SUCH_VOLUME",
        unreadable
          ? `no good copy of ${volume} segment ${segment} here (its file cannot be opened: ${unreadable}); it must be rebuilt`
          : `no replica of ${volume} segment ${segment} here`,
      );
    }
    return replica;
  }

  /** Handles one replica message; never throws: errors become error replies. */
  async handle(volume: string, op: ReplicaOp | string, body: Uint8Array): Promise<Uint8Array> {
    try {
      this.checkUsable();
      switch (op) {
        case "write":
          return await this.write(volume, body);
        case "read":
          return await this.read(volume, body);
        case "fence":
          return await this.fence(volume, body);
        case "lease":
          return this.lease(volume, body);
        case "meta":
          return await this.meta(volume, body);
        case "requests":
          return this.requests(volume, body);
        case "flush":
          return await this.flush(volume, body);
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
      // Logged once, when the host failed-stop.
      if (err instanceof FailStopError) return encodeError("IO_ERROR", err.message);
      this.log.error(`replica ${volume} ${op}: ${(err as Error).stack ?? err}`);
      return encodeError("IO_ERROR", (err as Error).message);
    }
  }

  private async write(volume: string, body: Uint8Array): Promise<Uint8Array> {
    const { epoch, seq, flags, entries } = decodeWriteBatch(body);
    await this.writeEntries(volume, epoch, entries, body, seq, (flags & BatchFlag.cached) !== 0);
    return encodeOk();
  }

  /**
   * Checks a batch's place in its owner's write stream, on arrival (before any await, so
   * in arrival order). A batch after a gap is refused, and so is everything after it until
   * the owner fences again: this replica then never holds a later write of a term while
   * missing an earlier one, which is what lets a takeover trust equal highest versions.
   */
  private checkSequence(volume: string, term: number, seq: number): void {
    if (seq === 0) return;
    const stream = this.streams.get(volume);
    if (stream && stream.term === term && stream.nextSeq === seq) {
      stream.nextSeq++;
      return;
    }
    const expected = !stream || stream.term !== term
      ? `no fence at term ${term} in this node's life`
      : stream.nextSeq === 0
      ? `a gap was seen earlier`
      : `expected ${stream.nextSeq}`;
    if (stream && stream.term === term) stream.nextSeq = 0; // refuse everything until a fence
    throw new HostError(
      "WRITE_GAP",
      `write batch ${seq} of term ${term} for ${volume} out of sequence (${expected}); fence again`,
    );
  }

  /**
   * Applies write entries in arrival order and returns once they are durable:
   * one journal record and one journal fdatasync however many segment files
   * they touch (group commit). The owner's own replica calls this directly;
   * remote owners arrive through `handle("write")`. A cached batch returns once
   * applied (written, not synced); flushVolume makes it durable.
   */
  async writeEntries(
    volume: string,
    epoch: number,
    entries: WriteEntry[],
    /** The entries as the wire encoded them, if they came that way: journaled without a copy. */
    encoded?: Uint8Array,
    /** The batch's place in the owner's write stream (see checkSequence); 0 = unsequenced. */
    seq = 0,
    cached = false,
  ): Promise<void> {
    this.checkUsable();
    const bySegment = new Map<number, Replica>();
    for (const entry of entries) bySegment.set(entry.segment, this.replica(volume, entry.segment));
    const touched = new Set(bySegment.values());
    // Fence check for the whole batch before any byte is written.
    for (const replica of touched) {
      if (epoch < replica.epoch) await replica.admit(epoch);
    }
    this.checkSequence(volume, epoch, seq);
    const previous = this.writeChains.get(volume) ?? Promise.resolve();
    const marked = cached ? this.cachedWritesMarked() : null;
    const applied = previous.catch(() => {}).then(async () => {
      await marked;
      return this.applyEntries(volume, epoch, entries, touched, encoded, cached);
    });
    this.writeChains.set(volume, applied);
    const { advanced, durable, effective } = await applied;
    await durable;
    // A new epoch lives in the segment header, not the journal: sync those files too.
    await Promise.all(advanced.map((replica) => replica.sync()));
    // Nothing is acknowledged once the host failed-stop (a sync that succeeded after a
    // failed one vouches for nothing; the gate already refuses those, this is cheap).
    this.failStop.check();
    this.clearSuspect(volume, epoch, new Set(entries.map((e) => e.segment)));
    if (this.onDurable) {
      // Only writes still in the file they went to: a segment file removed meanwhile (its
      // replica moved away) holds none of them, and a file made there again later neither.
      // Repairs as resolved: the blocks they really wrote (see notOlder).
      const written: { entry: WriteEntry; replica: Replica }[] = [];
      for (const entry of effective) {
        if (entry.kind === EntryKind.request) continue;
        const replica = bySegment.get(entry.segment)!;
        if (this.volumes.get(volume)?.get(entry.segment) === replica) {
          written.push({ entry, replica });
        }
      }
      if (!cached) this.onDurable(volume, written.map(({ entry }) => entry));
      else this.unsynced(volume).entries.push(...written);
    }
    // A failed checkpoint fails the host; there is nothing more to do with its error here.
    if (this.journal.sizeBytes > this.checkpointBytes) this.checkpoint().catch(() => {});
  }

  /**
   * Journals then applies one batch; large data entries are written in place instead
   * (see directWriteMinBytes). Returns the replicas whose epoch advanced, and a promise
   * that resolves once the batch is durable: the journal synced and the segment files
   * written in place synced.
   */
  private async applyEntries(
    volume: string,
    epoch: number,
    entries: WriteEntry[],
    touched: Set<Replica>,
    encoded: Uint8Array | undefined,
    cached: boolean,
  ): Promise<{ advanced: Replica[]; durable: Promise<void>; effective: WriteEntry[] }> {
    const advanced: Replica[] = [];
    for (const replica of touched) {
      const before = replica.epoch;
      await replica.admit(epoch);
      if (replica.epoch !== before) advanced.push(replica);
    }
    let effective = entries;
    if (entries.some((e) => e.kind === EntryKind.repair)) {
      // A repair writes only blocks that are not newer: resolve it now into the data
      // entries it really writes, which is what gets journaled. Guarded against the blocks
      // as the entries before it in this batch leave them, not as they are on disk now: a
      // write then an older repair of the same block in one batch must keep the write.
      effective = [];
      const earlier = new Map<string, number>();
      for (const entry of entries) {
        const resolved = entry.kind !== EntryKind.repair ? [entry] : await this.notOlder(
          this.replica(volume, entry.segment),
          entry,
          (block) => earlier.get(`${entry.segment}/${block}`),
          epoch * versionsPerTerm,
        );
        for (const e of resolved) {
          for (let b = e.firstBlock; b < e.firstBlock + e.blockCount; b++) {
            earlier.set(`${e.segment}/${b}`, e.version);
          }
        }
        effective.push(...resolved);
      }
      encoded = undefined;
    }
    // In place only when every versioned entry of the batch goes in place: a replica must
    // never hold a later version while missing an earlier one (a takeover trusts equal
    // highest versions). With both kinds in one batch, a crash after its journal record and
    // before its in-place writes replays later versions without the earlier in-place ones
    // (kill -9 of every node in the crash test: replicas differed at equal highest versions).
    // A mixed batch is journaled whole.
    const versioned = effective.filter((e) => e.kind !== EntryKind.request);
    const isDirect = (e: WriteEntry) =>
      e.kind === EntryKind.data && e.blockCount * blockSizeBytes >= this.directMinBytes;
    const inPlace = versioned.length > 0 && versioned.every(isDirect);
    const direct = (e: WriteEntry) => inPlace && isDirect(e);
    const journaled = inPlace ? effective.filter((e) => !isDirect(e)) : effective;
    if (journaled !== effective) encoded = undefined;
    const syncs: Promise<void>[] = [];
    if (journaled.length) {
      const batch = encoded ?? encodeWriteBatchParts(epoch, journaled);
      const file = await this.journal.append(encodeRecord(volume, batch));
      // The segment files this record writes, under the generation of the file it is
      // in: a checkpoint syncs them before it removes that file.
      this.markDirty(file.generation, journaled.map((e) => this.replica(volume, e.segment)));
      if (!cached) {
        // Started before the segment writes below, so the two overlap.
        const synced = file.sync();
        // Awaited through durable; keeps it from going unhandled if a segment write throws first.
        synced.catch(() => {});
        syncs.push(synced);
      }
    }
    const inPlaceReplicas = new Set<Replica>();
    // In arrival order, so a later entry for a block lands after an earlier one.
    for (const entry of effective) {
      if (entry.kind === EntryKind.request) {
        this.rememberRequest(volume, requestKey(entry));
        continue;
      }
      const replica = this.replica(volume, entry.segment);
      if (direct(entry)) {
        inPlaceReplicas.add(replica);
        if (cached) this.countCachedBytes(replica, entry.data!.length);
      }
      await this.applyEntry(replica, entry);
      if (entry.request) {
        this.rememberRequest(volume, clientRequestKey(entry.request));
      }
    }
    if (cached) {
      for (const replica of inPlaceReplicas) {
        this.unsynced(volume).replicas.add(replica);
        this.writeBackEarly(replica);
      }
    } else for (const replica of inPlaceReplicas) syncs.push(replica.sync());
    const durable = Promise.all(syncs).then(() => {});
    return { advanced, durable, effective };
  }

  private countCachedBytes(replica: Replica, bytes: number): void {
    this.cachedBytesSinceWriteback.set(
      replica,
      (this.cachedBytesSinceWriteback.get(replica) ?? 0) + bytes,
    );
  }

  /** Starts a background sync of a segment file holding cachedWritebackBytes of cached writes. */
  private writeBackEarly(replica: Replica): void {
    if ((this.cachedBytesSinceWriteback.get(replica) ?? 0) < this.writebackBytes) return;
    if (this.writebacks.has(replica)) return; // the next cached write after it ends starts one
    this.cachedBytesSinceWriteback.delete(replica);
    // A failed fdatasync fails the host through the disk gate (fail_stop.ts); nothing waits here.
    const writeback = replica.sync().catch(() => {}).finally(() => this.writebacks.delete(replica));
    this.writebacks.set(replica, writeback);
  }

  /**
   * Before a segment file is closed: no FLUSH will sync it (a closed file's sync fails the
   * FLUSH), its count goes, and its background sync ends.
   */
  private async forgetUnsynced(volume: string, replica: Replica): Promise<void> {
    this.unsyncedWrites.get(volume)?.replicas.delete(replica);
    this.cachedBytesSinceWriteback.delete(replica);
    await this.writebacks.get(replica);
  }

  private async applyEntry(replica: Replica, entry: WriteEntry): Promise<void> {
    if (entry.kind === EntryKind.zero) {
      await replica.file.zeroBlocks(entry.firstBlock, entry.blockCount, entry.version);
    } else {
      await replica.file.writeBlocks(entry.firstBlock, entry.data!, entry.version);
    }
  }

  private markDirty(generation: number, replicas: Replica[]): void {
    if (generation <= this.checkpointedThrough) {
      throw new Error(
        `journal invariant: a record went to generation ${generation} after a checkpoint took it`,
      );
    }
    const dirty = this.dirty.get(generation) ?? new Set<Replica>();
    this.dirty.set(generation, dirty);
    for (const replica of replicas) dirty.add(replica);
  }

  /**
   * Starts a new journal generation, syncs the segment files written by the
   * records of the old ones and removes the old file, so the journal stays small
   * and replay short. Any failure fails the host (see fail_stop.ts): the
   * journal is then kept whole.
   */
  checkpoint(): Promise<void> {
    if (this.checkpointing) return this.checkpointing;
    const run = (async () => {
      try {
        this.failStop.check();
        // Once this resolves no record goes to `generation` or older, and every one
        // of theirs is durable in the journal.
        const generation = await this.journal.rotate();
        // Their segment pwrites run in write chains that have started by now.
        await Promise.all([...this.writeChains.values()].map((p) => p.catch(() => {})));
        this.checkpointedThrough = generation;
        for (const [g, replicas] of [...this.dirty]) {
          if (g > generation) continue;
          for (const replica of replicas) await replica.sync();
          this.dirty.delete(g);
        }
        await this.journal.remove(generation);
      } catch (err) {
        throw this.failStop.fail(`checkpoint failed (${(err as Error).message})`);
      }
    })().finally(() => (this.checkpointing = null));
    this.checkpointing = run;
    return run;
  }

  /**
   * The parts of an entry that do not go below a block's current version, as runs of
   * consecutive blocks: a repair or a replayed record never undoes a newer write.
   * Repair entries come back as data entries.
   */
  private async notOlder(
    replica: Replica,
    entry: WriteEntry,
    /** A block's version once the entries before this one in its batch are applied, if any. */
    pending: (block: number) => number | undefined = () => undefined,
    /**
     * The first version of the sending owner's term (0: none). A version here below it that
     * is newer than the repair is from an older term and on no in-sync copy (the owner's
     * takeover made those agree, and the repair comes from one): a write never acknowledged,
     * or one lost in a power loss of every copy. It gives way: kept, it would outlive a loss
     * that reads may already have seen (or a catch-up would bring it back to every copy).
     * Versions of the owner's term (a write racing the repair) and of this batch are kept.
     */
    termFloor = 0,
  ): Promise<WriteEntry[]> {
    const { versions } = await replica.file.readMeta(entry.firstBlock, entry.blockCount);
    const guards = new Array<boolean>(entry.blockCount);
    for (let i = 0; i < entry.blockCount; i++) {
      const inBatch = pending(entry.firstBlock + i);
      guards[i] = inBatch !== undefined || versions[i] >= termFloor;
      versions[i] = inBatch ?? versions[i];
    }
    const kind = entry.kind === EntryKind.zero ? EntryKind.zero : EntryKind.data;
    const out: WriteEntry[] = [];
    let start = -1;
    for (let i = 0; i <= entry.blockCount; i++) {
      const keep = i < entry.blockCount && (versions[i] <= entry.version || !guards[i]);
      if (keep && start < 0) start = i;
      if (keep || start < 0) continue;
      out.push({
        segment: entry.segment,
        firstBlock: entry.firstBlock + start,
        blockCount: i - start,
        kind,
        version: entry.version,
        data: kind === EntryKind.data
          ? entry.data!.subarray(start * blockSizeBytes, i * blockSizeBytes)
          : undefined,
      });
      start = -1;
    }
    return out;
  }

  private async read(volume: string, body: Uint8Array): Promise<Uint8Array> {
    return encodeReadReply(await this.readBlocks(volume, decodeReadRequest(body)));
  }

  /**
   * An observer's read (the simulator's checks): blocks of one segment as the file holds
   * them, with no term check and suspect replicas too. Never used to serve IO.
   */
  async inspectBlocks(
    volume: string,
    segment: number,
    firstBlock: number,
    blockCount: number,
  ): Promise<ReadResult> {
    return await this.replica(volume, segment).file.readBlocks(firstBlock, blockCount);
  }

  /** Reads blocks of one segment; the owner's own replica is read through this directly. */
  async readBlocks(volume: string, request: ReadRequest): Promise<ReadResult> {
    this.checkUsable();
    const replica = this.replica(volume, request.segment);
    replica.check(request.epoch);
    this.checkNotSuspect(volume, request.segment, request.epoch);
    return await replica.file.readBlocks(request.firstBlock, request.blockCount);
  }

  /** A new owner's first contact: persist its epoch and report each segment's highest version. */
  private async fence(volume: string, body: Uint8Array): Promise<Uint8Array> {
    const request = this.parse(fenceRequestSchema, body);
    // A segment with no good copy here (its file missing or unreadable) is left out of the
    // answer, not fenced: the owner then counts it unreachable and marks it stale, never
    // trusting an empty or bad file as an in-sync copy. The others are fenced as usual.
    const held = request.segments.filter((s) => this.volumes.get(volume)?.has(s));
    const missing = request.segments.filter((s) => !held.includes(s));
    if (missing.length) {
      this.log.warn(
        `fence of ${volume} at term ${request.epoch}: no good copy of segments ` +
          `${missing.join(", ")} here; left out, so the owner marks them stale`,
      );
    }
    // The write stream restarts here, decided on arrival so later batches meet it in order.
    const refused = held.some((s) => request.epoch < this.replica(volume, s).epoch);
    if (!refused && request.nextSeq !== undefined) {
      this.streams.set(volume, { term: request.epoch, nextSeq: request.nextSeq });
    }
    if (!refused && this.leases) {
      // A newer owner waits out the older owner's read lease before it may take this replica.
      const { table, clock } = this.leases;
      const waitMs = table.fenceReadyAtMs(volume, request.epoch, clock.nowMs()) - clock.nowMs();
      if (waitMs > 0) await new Promise<void>((resolve) => clock.setTimer(waitMs, resolve));
    }
    // A new owner starts from durable state: cached writes applied here are synced (and told
    // durable) now, before any write of the new term can rewrite their blocks.
    if (!refused) await this.flushVolume(volume);
    const segments = [];
    for (const segment of held) {
      const replica = this.replica(volume, segment);
      await replica.admit(request.epoch);
      await replica.sync();
      const key = `${volume}/${segment}`;
      const suspect = this.suspect.has(key);
      if (suspect) this.suspect.set(key, request.epoch);
      segments.push({
        segment,
        epoch: replica.epoch,
        maxVersion: replica.file.maxVersion,
        ...(suspect ? { suspect } : {}),
      });
    }
    this.leases?.table.fenced(volume, request.epoch);
    return encodeJsonOk({
      segments,
      missing: missing.map((segment) => ({ segment, why: this.missingReason(volume, segment) })),
    });
  }

  /**
   * A read lease for the owner at `epoch` (its term): see lease.ts. The answer lists the
   * segments here that are suspect and that no owner of this term or earlier has judged
   * (`{ suspect: [...] }`, omitted when none): the owner renews leases on a timer, so it
   * learns of a node that lost power and came back even if no read or write of those
   * segments reaches it (it marks them stale and catches them up). Without this a copy that
   * lost unflushed cached writes stays listed in sync with nobody catching it up.
   */
  private lease(volume: string, body: Uint8Array): Uint8Array {
    const request = this.parse(leaseRequestSchema, body);
    for (const segment of this.segmentsOf(volume)) {
      this.replica(volume, segment).check(request.epoch);
    }
    const suspect = this.segmentsOf(volume).filter((segment) => {
      const fencedAt = this.suspect.get(`${volume}/${segment}`);
      return fencedAt !== undefined && (fencedAt === 0 || request.epoch < fencedAt);
    });
    const answer = () => suspect.length ? encodeJsonOk({ suspect }) : encodeOk();
    if (!this.leases) return answer();
    const { table, clock } = this.leases;
    const granted = table.grant(volume, request.epoch, request.durationMs, clock.nowMs());
    if (!granted.granted) throw new StaleEpochError(granted.why);
    return answer();
  }

  /**
   * The client requests (origin/requestId) whose writes this replica holds, newest last,
   * for a new owner to recognize their resends. Checks the term like meta.
   */
  private requests(volume: string, body: Uint8Array): Uint8Array {
    const request = this.parse(epochRequestSchema, body);
    const held = this.volumes.get(volume);
    if (!held) throw new HostError("NO_SUCH_VOLUME", `no replica of ${volume} here`);
    for (const replica of held.values()) replica.check(request.epoch);
    return encodeJsonOk({ requests: [...(this.clientRequests.get(volume)?.keys() ?? [])] });
  }

  /** The owner's FLUSH: every cached write applied here so far becomes durable. */
  private async flush(volume: string, body: Uint8Array): Promise<Uint8Array> {
    const request = this.parse(epochRequestSchema, body);
    const held = this.volumes.get(volume);
    if (!held) throw new HostError("NO_SUCH_VOLUME", `no replica of ${volume} here`);
    for (const replica of held.values()) replica.check(request.epoch);
    await this.flushVolume(volume);
    return encodeOk();
  }

  /**
   * Makes every write of `volume` applied here so far durable: the journal (one fdatasync
   * covers every volume's records) and the segment files cached large writes went to.
   */
  async flushVolume(volume: string): Promise<void> {
    this.checkUsable();
    // Batches already applying finish first (their records and pwrites are then issued).
    await this.writeChains.get(volume)?.catch(() => {});
    const pending = this.unsyncedWrites.get(volume);
    this.unsyncedWrites.delete(volume);
    // A failed fdatasync fails the host (the disk gate, fail_stop.ts): nothing is dropped.
    await this.journal.sync();
    await Promise.all([...pending?.replicas ?? []].map((replica) => replica.sync()));
    this.failStop.check();
    // Only writes still in the file they went to: a segment deleted and created again since
    // (a replica moved away and back) holds none of them.
    const held = pending?.entries.filter(({ entry, replica }) =>
      this.volumes.get(volume)?.get(entry.segment) === replica
    );
    if (held?.length) this.onDurable?.(volume, held.map(({ entry }) => entry), true);
  }

  /** What of `volume` was applied cached and is not yet synced. */
  private unsynced(volume: string): UnsyncedWrites {
    let pending = this.unsyncedWrites.get(volume);
    if (!pending) this.unsyncedWrites.set(volume, pending = { replicas: new Set(), entries: [] });
    return pending;
  }

  /** Remembers that the write of `key` (origin/requestId) is held here. */
  private rememberRequest(volume: string, key: string): void {
    let keys = this.clientRequests.get(volume);
    if (!keys) this.clientRequests.set(volume, keys = new Set());
    keys.delete(key);
    keys.add(key);
    if (keys.size > rememberedRequestsPerVolume) keys.delete(keys.values().next().value!);
  }

  /** Block versions of a range of one segment (for diffs between replicas), as f64s. */
  private async meta(volume: string, body: Uint8Array): Promise<Uint8Array> {
    const request = this.parse(metaRequestSchema, body);
    const replica = this.replica(volume, request.segment);
    replica.check(request.epoch);
    const { versions } = await replica.file.readMeta(request.firstBlock, request.blockCount);
    return encodeOk(new Uint8Array(Float64Array.from(versions).buffer));
  }

  private async scrub(volume: string, body: Uint8Array): Promise<Uint8Array> {
    const request = this.parse(scrubRequestSchema, body);
    const replica = this.replica(volume, request.segment);
    // Without a term (volume verify, an observer) nothing is checked; scrub never changes state.
    if (request.epoch !== undefined) replica.check(request.epoch);
    if (request.firstBlock === undefined || request.blockCount === undefined) {
      return encodeJsonOk(await replica.file.scrub());
    }
    const { firstBlock, blockCount } = request;
    if (firstBlock + blockCount > replica.file.blockCount) {
      throw new HostError(
        "BAD_REQUEST",
        `scrub of blocks ${firstBlock}+${blockCount} is outside segment ${request.segment}'s ` +
          `${replica.file.blockCount} blocks`,
      );
    }
    return encodeJsonOk(await replica.file.scrub(undefined, { firstBlock, blockCount }));
  }

  private parse<T>(schema: Parameters<typeof parseJson<T>>[0], body: Uint8Array): T {
    const parsed = parseJson(schema, body);
    if (!parsed.ok) throw new HostError("BAD_REQUEST", parsed.message);
    return parsed.value;
  }

  /**
   * Stop taking writes, let the ones in flight finish, sync and close every
   * file. After a failed sync the journal is kept as it is, for replay at start.
   */
  close(): Promise<void> {
    this.closed ??= this.closeOnce();
    return this.closed;
  }

  private async closeOnce(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.writeChains.values()].map((p) => p.catch(() => {})));
    await this.checkpointing?.catch(() => {});
    if (this.journal && !this.failed) {
      // A clean stop leaves every write in synced segment files and an empty journal.
      try {
        for (const replicas of this.volumes.values()) {
          for (const replica of replicas.values()) await replica.sync();
        }
        await this.journal.reset();
      } catch (err) {
        // A failed sync has failed-stop the host; else the journal replays at start.
        if (!this.failed) this.log.warn(`journal kept for replay: ${(err as Error).message}`);
      }
    }
    // After a failure its sync is refused untried; the file is closed all the same.
    await this.journal?.close().catch(() => {});
    for (const [volume, replicas] of this.volumes) {
      for (const replica of replicas.values()) {
        await this.forgetUnsynced(volume, replica);
        await replica.close().catch(() => {});
      }
    }
    this.volumes.clear();
  }
}
