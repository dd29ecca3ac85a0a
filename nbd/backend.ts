/**
 * What an NBD export reads from and writes to. A backend takes block-aligned IO only
 * (offsets and lengths multiples of its blockBytes); nbd/rmw.ts turns the NBD client's
 * smaller or unaligned requests into that.
 *
 * Two implementations over a Cairn volume:
 * - VolumeBackend: the client library over NATS (retries on no-responders, timeouts,
 *   MOVED and BUSY with backoff, splits large IO, keeps many requests in flight).
 * - LocalFirstBackend: on the node that owns the volume, hands request frames to the
 *   in-process volume actor (no NATS hop); whenever the actor is gone or answers
 *   MOVED/BUSY it falls back to the client path, which waits out the handoff.
 */
import type { Volume, WriteOptions } from "../client/volume.ts";
import type { CairnClient } from "../client/client.ts";
import { Flag, type IoRequest, Op } from "../protocol/frames.ts";
import { CairnError } from "../protocol/errors.ts";
import { blockSizeBytes, maxIoBytes, maxZeroIoBytes, namePattern } from "../protocol/limits.ts";

export interface NbdBackend {
  /** Export size in bytes (a multiple of blockBytes). */
  readonly sizeBytes: number;
  /** Alignment every call must keep. */
  readonly blockBytes: number;
  /** The bytes of [offset, offset+length), as one or more consecutive pieces. */
  read(offsetBytes: number, lengthBytes: number): Promise<Uint8Array[]>;
  /**
   * Resolves once the data is applied on every in-sync replica, and durable there unless
   * `options.durable` is false (then durable after the next flush()).
   */
  write(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void>;
  /** Resolves once every write acknowledged before it is durable. */
  flush(): Promise<void>;
  /** Discards the range; Cairn reads a trimmed range back as zeroes. */
  trim(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void>;
  writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void>;
  close(): Promise<void>;
}

/** One export as the gateway lists it. */
export interface ExportInfo {
  name: string;
  sizeBytes: number;
  description: string;
}

/** Where the gateway finds exports: list them, and open one for IO. */
export interface ExportSource {
  list(): Promise<ExportInfo[]>;
  /** The export's backend, or null when there is no export by that name. */
  open(name: string): Promise<{ backend: NbdBackend; info: ExportInfo } | null>;
}

/** The client path: a Volume opened with the client library. */
export class VolumeBackend implements NbdBackend {
  readonly blockBytes: number;
  constructor(readonly volume: Volume) {
    this.blockBytes = volume.blockSize || blockSizeBytes;
  }
  get sizeBytes(): number {
    return this.volume.sizeBytes;
  }
  get incarnation(): number {
    return this.volume.incarnation;
  }
  async read(offsetBytes: number, lengthBytes: number): Promise<Uint8Array[]> {
    return [await this.volume.read(offsetBytes, lengthBytes)];
  }
  write(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.volume.write(offsetBytes, data, options);
  }
  flush(): Promise<void> {
    return this.volume.flush();
  }
  trim(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    return this.volume.trim(offsetBytes, lengthBytes, options);
  }
  writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    return this.volume.writeZeroes(offsetBytes, lengthBytes, options);
  }
  close(): Promise<void> {
    return this.volume.close();
  }
}

/** What LocalFirstBackend needs of the in-process volume actor. */
export interface LocalVolumeActor {
  /** Serves one request without frames; the reply payload, or a CairnError. */
  serve(request: IoRequest): Promise<Uint8Array>;
}

/** Looks up the in-process actor serving a volume, if this process serves it now. */
export type LocalVolumeLookup = (name: string) => LocalVolumeActor | undefined;

/** The payload of every request but WRITE. */
const noPayload = new Uint8Array(0);

/** Status codes after which the request goes the client path instead. */
const fallbackCodes = new Set(["MOVED", "BUSY"]);

/**
 * In-process first, client path as the fallback. The actor is looked up on every request,
 * so a volume that moves away (or comes back) is noticed at once.
 */
export class LocalFirstBackend implements NbdBackend {
  readonly blockBytes: number;
  /** Requests served in-process and through the client path (for tests and metrics). */
  readonly stats = { local: 0, remote: 0 };
  private nextRequestId = 1;

  constructor(
    readonly name: string,
    private readonly lookup: LocalVolumeLookup,
    private readonly remote: VolumeBackend,
  ) {
    this.blockBytes = remote.blockBytes;
  }

  get sizeBytes(): number {
    return this.remote.sizeBytes;
  }

  /**
   * Runs one request in-process (no frame is encoded, so no payload is copied); returns the
   * reply payload, or null when the request must take the client path (no local actor, or
   * it answered MOVED/BUSY).
   */
  private async local(
    op: number,
    offsetBytes: number,
    lengthBytes: number,
    payload: Uint8Array = noPayload,
    options: WriteOptions = {},
  ): Promise<Uint8Array | null> {
    const actor = this.lookup(this.name);
    if (!actor) return null;
    const requestId = this.nextRequestId = (this.nextRequestId + 1) >>> 0;
    try {
      const reply = await actor.serve({
        op,
        // As the client library sends them: durable unless asked otherwise.
        flags: options.durable === false ? Flag.CACHED : 0,
        requestId,
        offsetBytes,
        lengthBytes,
        // The incarnation the connection opened: a volume created again under this name is refused.
        incarnation: this.remote.incarnation,
        payload,
      });
      this.stats.local++;
      return reply;
    } catch (err) {
      if (err instanceof CairnError && fallbackCodes.has(err.code)) return null;
      throw err;
    }
  }

  /** Splits [offset, offset+length) into pieces of at most pieceBytes, all in flight. */
  private pieces(
    offsetBytes: number,
    lengthBytes: number,
    pieceBytes: number,
    fn: (offset: number, length: number, at: number) => Promise<void>,
  ): Promise<void> {
    if (lengthBytes <= pieceBytes) return fn(offsetBytes, lengthBytes, 0);
    const parts: Promise<void>[] = [];
    for (let at = 0; at < lengthBytes; at += pieceBytes) {
      parts.push(fn(offsetBytes + at, Math.min(pieceBytes, lengthBytes - at), at));
    }
    return Promise.all(parts).then(() => {});
  }

  /** Pieces of at most maxIoBytes, read in parallel and handed on without joining them. */
  async read(offsetBytes: number, lengthBytes: number): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    await this.pieces(offsetBytes, lengthBytes, maxIoBytes, async (offset, length, at) => {
      const index = at / maxIoBytes;
      const data = await this.local(Op.READ, offset, length);
      if (data !== null) {
        out[index] = data;
      } else {
        this.stats.remote++;
        out[index] = (await this.remote.read(offset, length))[0];
      }
    });
    return out;
  }

  write(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.pieces(offsetBytes, data.byteLength, maxIoBytes, async (offset, length, at) => {
      const piece = data.subarray(at, at + length);
      if (await this.local(Op.WRITE, offset, length, piece, options) !== null) return;
      this.stats.remote++;
      await this.remote.write(offset, piece, options);
    });
  }

  async flush(): Promise<void> {
    if (await this.local(Op.FLUSH, 0, 0) !== null) return;
    this.stats.remote++;
    await this.remote.flush();
  }

  trim(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    return this.pieces(offsetBytes, lengthBytes, maxZeroIoBytes, async (offset, length) => {
      if (await this.local(Op.TRIM, offset, length, noPayload, options) !== null) return;
      this.stats.remote++;
      await this.remote.trim(offset, length, options);
    });
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    return this.pieces(offsetBytes, lengthBytes, maxZeroIoBytes, async (offset, length) => {
      if (await this.local(Op.WRITE_ZEROES, offset, length, noPayload, options) !== null) return;
      this.stats.remote++;
      await this.remote.writeZeroes(offset, length, options);
    });
  }

  close(): Promise<void> {
    return this.remote.close();
  }
}

function describe(sizeBytes: number, replicas: number, owner: string): string {
  const mib = sizeBytes / (1024 * 1024);
  const size = mib >= 1024 ? `${+(mib / 1024).toFixed(2)} GiB` : `${+mib.toFixed(2)} MiB`;
  return `Cairn volume, ${size}, ${replicas} replica${replicas === 1 ? "" : "s"}, owner ${owner}`;
}

/** Volumes of a Cairn cluster as exports; in-process IO when `local` finds the actor. */
export class ClusterExportSource implements ExportSource {
  constructor(
    private readonly client: CairnClient,
    private readonly localLookup?: LocalVolumeLookup,
    /** Requests each opened volume keeps in flight through the client path. */
    private readonly maxInFlight = 256,
  ) {}

  async list(): Promise<ExportInfo[]> {
    const volumes = await this.client.listVolumes();
    return volumes.map((v) => ({
      name: v.name,
      sizeBytes: v.sizeBytes,
      description: describe(v.sizeBytes, v.replicas, v.owner),
    }));
  }

  async open(name: string): Promise<{ backend: NbdBackend; info: ExportInfo } | null> {
    // The empty (default) export and names no volume can have are simply unknown.
    if (!namePattern.test(name)) return null;
    let volume: Volume;
    let description: string;
    try {
      const info = await this.client.volumeInfo(name);
      description = describe(info.sizeBytes, info.replicas, info.owner);
      volume = await this.client.openVolume(name, { maxInFlight: this.maxInFlight });
    } catch (err) {
      if (err instanceof CairnError && err.code === "NO_SUCH_VOLUME") return null;
      throw err;
    }
    const remote = new VolumeBackend(volume);
    const backend = this.localLookup
      ? new LocalFirstBackend(name, this.localLookup, remote)
      : remote;
    return { backend, info: { name, sizeBytes: volume.sizeBytes, description } };
  }
}
