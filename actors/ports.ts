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

/** Wall-clock time, only for labels people read (createdAt); never for decisions. */
export interface WallClock {
  /** Milliseconds since the Unix epoch. */
  wallMs(): number;
}

/**
 * A message's bytes, whole or as parts sent back to back (a replica batch's headers between
 * the client's own data blocks): a transport that can send parts without joining them saves
 * a copy of every byte.
 */
export type MessageBody = Uint8Array | readonly Uint8Array[];

/** The body as one buffer (itself when it is one already). */
export function joinBody(body: MessageBody): Uint8Array {
  if (body instanceof Uint8Array) return body;
  if (body.length === 1) return body[0];
  let sizeBytes = 0;
  for (const part of body) sizeBytes += part.length;
  const joined = new Uint8Array(sizeBytes);
  let at = 0;
  for (const part of body) {
    joined.set(part, at);
    at += part.length;
  }
  return joined;
}

/** One message delivered to a subscriber. */
export interface TransportMessage {
  subject: string;
  data: Uint8Array;
  /** Answers a request; a no-op for a plain publish. */
  respond(data: Uint8Array): void;
  /**
   * Who asked, where the transport can tell (the requester's reply inbox without its
   * per-request token): the same for every request one client connection sends.
   */
  origin?: string;
}

export interface TransportSubscription {
  unsubscribe(): void;
}

/** Why a request got no answer: both "timeout" and "no-responders" mean nobody served it (yet). */
export type TransportFailureKind = "timeout" | "no-responders" | "closed";

export class TransportError extends Error {
  override name = "TransportError";
  constructor(readonly kind: TransportFailureKind, message: string) {
    super(`${kind}: ${message}`);
  }
}

/**
 * Subject-based messaging (NATS semantics: tokens separated by ".", `*` matches
 * one token, `>` the rest; a queue group delivers each message to one member).
 * Production wraps a NATS connection; the simulator routes between in-process nodes.
 */
export interface Transport {
  /** Sends a request; resolves with the reply's data or rejects with a TransportError. */
  request(subject: string, data: MessageBody, timeoutMs: number): Promise<Uint8Array>;
  publish(subject: string, data: Uint8Array): void;
  subscribe(
    subject: string,
    handler: (msg: TransportMessage) => void,
    options?: { queue?: string },
  ): TransportSubscription;
  /** Resolves once subscriptions made so far receive messages (a NATS flush). */
  flush(): Promise<void>;
  /**
   * The largest message this transport may publish now (NATS: the connected server's
   * `max_payload`, which can change when the connection moves to another server); undefined
   * when unknown, which callers read as NATS's 1 MiB default (protocol/limits.ts ioLimitsFor).
   */
  maxPayloadBytes?(): number | undefined;
}

/** Client IO operations as metrics name them (lower-case frame op names). */
export type IoOpName = "read" | "write" | "flush" | "trim" | "write_zeroes" | "stat" | "unknown";
/** A copy that brings a replica back (catch-up) or fills a new one (rebuild). */
export type CopyKind = "catch-up" | "rebuild";
/** Which kind of file an fdatasync made durable. */
export type SyncTarget = "journal" | "segment" | "directory";
/** How this node came to own a volume: a failover from a dead owner, or any other claim. */
export type TakeoverKind = "failover" | "claim";

/**
 * Where actors report what they did, for the node's metrics. Production plugs in
 * Prometheus (metrics/); tests and the simulator use `noMetrics` (actors/metrics.ts).
 * Calls must be cheap and never throw: they sit on the IO path.
 */
export interface Metrics {
  /** A client IO request was admitted to the volume actor (it counts as in flight). */
  ioStarted(volume: string, op: IoOpName): void;
  /** A client IO request was answered: bytes it covered, how long it took, its error code. */
  ioFinished(
    volume: string,
    op: IoOpName,
    lengthBytes: number,
    seconds: number,
    errorCode: string | null,
  ): void;
  /** Bytes copied to a replica by a catch-up or rebuild. */
  copied(volume: string, kind: CopyKind, bytes: number): void;
  /** This node won an owner term of the volume by a takeover. */
  tookOver(volume: string, kind: TakeoverKind): void;
  /** This node recorded a planned handoff of the volume to another node (a new term). */
  handedOff(volume: string): void;
  /** One fdatasync (or directory fsync) took this long. */
  synced(target: SyncTarget, seconds: number): void;
}
