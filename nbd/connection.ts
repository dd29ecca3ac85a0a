/**
 * One NBD client connection: the fixed newstyle handshake, then the transmission phase with
 * many requests in flight and replies in completion order.
 */
import type * as net from "node:net";
import { ByteQueue } from "./byte_queue.ts";
import {
  ClientFlag,
  Cmd,
  CmdFlag,
  cmdName,
  decodeInfoRequest,
  decodeOptionHeader,
  decodeRequestHeader,
  decodeString,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeNoneChunk,
  encodeOffsetDataHeader,
  encodeOptionError,
  encodeOptionReply,
  encodeServerReply,
  encodeSimpleReply,
  Info,
  NbdErrno,
  type NbdRequest,
  Opt,
  optionHeaderBytes,
  optionMagic,
  Rep,
  requestHeaderBytes,
  requestMagic,
  TransmissionFlag,
} from "./protocol.ts";
import type { ExportInfo } from "./backend.ts";
import type { SubBlockIo } from "./rmw.ts";
import { CairnError } from "../protocol/errors.ts";

/** Smallest request alignment the gateway accepts (what the Linux kernel sends). */
export const minimumBlockBytes = 512;
/** Alignment at which IO needs no read-modify-write. */
export const preferredBlockBytes = 4096;
/** Largest READ or WRITE (and the payload the gateway will buffer for one request). */
export const maximumBlockBytes = 32 * 1024 * 1024;
/** Largest option data accepted during the handshake; more is treated as garbage. */
export const maxOptionDataBytes = 64 * 1024;
/** A client that has not finished the handshake in this time is disconnected. */
export const handshakeTimeoutMs = 30_000;
/** Requests one connection keeps in flight before it stops reading the socket. */
export const maxRequestsInFlight = 256;
/** Bytes of request and reply data one connection holds before it stops reading. */
export const maxBytesInFlight = 256 * 1024 * 1024;
/** Replies queued together up to this size are copied into one buffer; larger ones use writev. */
const coalesceBytes = 256 * 1024;

/** An export opened for a connection; `release` when the connection is done with it. */
export interface OpenedExport {
  io: SubBlockIo;
  info: ExportInfo;
  release(): void;
}

/** What a connection needs from the gateway. */
export interface ConnectionHost {
  listExports(): Promise<ExportInfo[]>;
  /** Opens an export for IO; null when it does not exist. */
  openExport(name: string): Promise<OpenedExport | null>;
  readonly shuttingDown: boolean;
  log(level: "info" | "warn" | "error", message: string): void;
}

class Disconnected extends Error {}

/** A protocol violation that ends the session with a hard disconnect. */
class HardDisconnect extends Error {}

/** An error reply for one request. */
class RequestError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

/** NBD_CMD_FLAG_FUA asks for a durable write; without it a write may sit in the cache. */
function durability(flags: number): { durable: boolean } {
  return { durable: (flags & CmdFlag.FUA) !== 0 };
}

/** Transmission flags the gateway advertises. */
function transmissionFlags(structured: boolean): number {
  let flags = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_FUA |
    TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES |
    TransmissionFlag.SEND_FAST_ZERO |
    // Safe: every write goes through the volume's single owner and is durable before its reply,
    // and read-modify-write locks are shared by every connection of this gateway.
    TransmissionFlag.CAN_MULTI_CONN;
  if (structured) flags |= TransmissionFlag.SEND_DF;
  return flags;
}

/** Command flags each command accepts (FUA is accepted on every command, as the spec asks). */
function allowedFlags(type: number, structured: boolean): number {
  switch (type) {
    case Cmd.READ:
      return CmdFlag.FUA | (structured ? CmdFlag.DF : 0);
    case Cmd.WRITE_ZEROES:
      return CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO;
    default:
      return CmdFlag.FUA;
  }
}

/** Maps a backend failure to the NBD error value. */
export function errnoFor(err: unknown): number {
  if (err instanceof RequestError) return err.errno;
  if (err instanceof CairnError) {
    switch (err.code) {
      case "UNALIGNED":
      case "BAD_FRAME":
      case "TOO_LARGE":
      case "UNKNOWN_OP":
      case "BAD_REQUEST":
        return NbdErrno.EINVAL;
      case "OUT_OF_RANGE":
        return NbdErrno.ENOSPC;
      default:
        return NbdErrno.EIO;
    }
  }
  return NbdErrno.EIO;
}

type ReadState =
  | { kind: "header" }
  | { kind: "payload"; request: NbdRequest }
  | { kind: "discard"; request: NbdRequest; remaining: number; error: RequestError };

export class NbdConnection {
  private readonly queue = new ByteQueue();
  private waiter:
    | { n: number; resolve: (b: Uint8Array) => void; reject: (e: Error) => void }
    | null = null;
  private phase: "handshake" | "transmission" | "closing" | "closed" = "handshake";
  private structured = false;
  private noZeroes = false;
  private export: OpenedExport | null = null;
  private state: ReadState = { kind: "header" };
  private requestsInFlight = 0;
  private bytesInFlight = 0;
  private paused = false;
  /** The gateway is shutting down: end once nothing is in flight. */
  private draining = false;
  private outgoing: Uint8Array[] = [];
  private flushScheduled = false;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;
  /** Requests answered, by outcome (for tests and metrics). */
  readonly stats = { requests: 0, errors: 0 };

  constructor(
    private readonly socket: net.Socket,
    private readonly host: ConnectionHost,
    readonly peer: string,
  ) {
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.setNoDelay(true);
    socket.on("data", (chunk: Uint8Array) => this.onData(chunk));
    socket.on("error", () => this.close());
    socket.on("close", () => this.close());
    socket.on("end", () => this.onEnd());
  }

  /** Resolves when the socket is closed. */
  get closed(): Promise<void> {
    return this.closedPromise;
  }

  get inFlight(): number {
    return this.requestsInFlight;
  }

  start(): void {
    const timer = setTimeout(() => {
      if (this.phase === "handshake") {
        this.host.log(
          "warn",
          `nbd ${this.peer}: handshake not finished in ${handshakeTimeoutMs} ms`,
        );
        this.close();
      }
    }, handshakeTimeoutMs);
    Deno.unrefTimer(timer);
    this.handshake().then(
      () => clearTimeout(timer),
      (err) => {
        clearTimeout(timer);
        if (err instanceof HardDisconnect) {
          this.host.log("warn", `nbd ${this.peer}: ${err.message}; disconnecting`);
        } else if (!(err instanceof Disconnected)) {
          this.host.log("error", `nbd ${this.peer}: handshake failed: ${(err as Error).message}`);
        }
        this.close();
      },
    );
  }

  // ---- socket plumbing ----

  private onData(chunk: Uint8Array): void {
    if (this.phase === "closed" || this.phase === "closing") return;
    this.queue.push(chunk);
    if (this.phase === "transmission") {
      this.pumpSafely();
    } else if (this.waiter && this.queue.length >= this.waiter.n) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter.resolve(this.queue.take(waiter.n));
    }
  }

  private onEnd(): void {
    // The client closed its side: nothing more will arrive. Finish what is in flight.
    if (this.phase === "transmission") {
      this.phase = "closing";
      this.finishIfIdle();
    } else {
      this.close();
    }
  }

  private need(n: number): Promise<Uint8Array> {
    if (this.queue.length >= n) return Promise.resolve(this.queue.take(n));
    if (this.phase === "closed") return Promise.reject(new Disconnected());
    return new Promise((resolve, reject) => (this.waiter = { n, resolve, reject }));
  }

  /**
   * Queues bytes for the socket. Everything queued in one round of completions goes out in
   * one write (one syscall): with many requests in flight that is most of the cost of a
   * small reply.
   */
  private write(...parts: Uint8Array[]): void {
    if (this.phase === "closed") return;
    for (const part of parts) if (part.byteLength > 0) this.outgoing.push(part);
    if (!this.flushScheduled && this.outgoing.length > 0) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    const parts = this.outgoing;
    if (parts.length === 0) return;
    this.outgoing = [];
    if (this.phase === "closed" || this.socket.destroyed) return;
    if (parts.length === 1) {
      this.socket.write(parts[0]);
      return;
    }
    let total = 0;
    for (const part of parts) total += part.byteLength;
    if (total <= coalesceBytes) {
      const joined = new Uint8Array(total);
      let at = 0;
      for (const part of parts) {
        joined.set(part, at);
        at += part.byteLength;
      }
      this.socket.write(joined);
      return;
    }
    this.socket.cork();
    for (const part of parts) this.socket.write(part);
    this.socket.uncork();
  }

  /** Hard disconnect (or the peer went away). */
  close(): void {
    if (this.phase === "closed") return;
    this.phase = "closed";
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.reject(new Disconnected());
    this.socket.destroy();
    this.export?.release();
    this.export = null;
    this.resolveClosed();
  }

  /** Ends the session once every request in flight has been answered. */
  private finishIfIdle(): void {
    if (this.phase !== "closing" || this.requestsInFlight > 0) return;
    this.endGracefully();
  }

  /** Sends what is queued, then closes our side (a soft disconnect). */
  private endGracefully(): void {
    if (this.phase === "closed") return;
    this.flush();
    this.phase = "closed";
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.reject(new Disconnected());
    this.socket.end(() => this.socket.destroy());
    this.export?.release();
    this.export = null;
    this.resolveClosed();
  }

  /**
   * Gateway shutdown: requests in flight are answered, new ones get ESHUTDOWN, and the
   * connection ends once nothing is in flight (or after graceMs).
   */
  async shutdown(graceMs: number): Promise<void> {
    if (this.phase === "handshake") return this.close();
    this.draining = true;
    if (this.requestsInFlight === 0) this.endGracefully();
    const timer = setTimeout(() => this.close(), graceMs);
    await this.closedPromise;
    clearTimeout(timer);
  }

  // ---- handshake ----

  private async handshake(): Promise<void> {
    this.write(encodeGreeting());
    const clientFlags = new DataView((await this.need(4)).slice().buffer).getUint32(0, false);
    const known = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;
    if (clientFlags & ~known) {
      throw new HardDisconnect(`unknown client flags 0x${clientFlags.toString(16)}`);
    }
    this.noZeroes = (clientFlags & ClientFlag.NO_ZEROES) !== 0;
    for (;;) {
      const header = decodeOptionHeader(await this.need(optionHeaderBytes));
      if (header.magic !== optionMagic) {
        throw new HardDisconnect(`bad option magic 0x${header.magic.toString(16)}`);
      }
      if (header.length > maxOptionDataBytes) {
        throw new HardDisconnect(
          `option ${header.option} carries ${header.length} bytes, more than ${maxOptionDataBytes}`,
        );
      }
      const data = (await this.need(header.length)).slice();
      if (this.host.shuttingDown && header.option !== Opt.ABORT) {
        if (header.option === Opt.EXPORT_NAME) throw new Disconnected();
        this.write(encodeOptionError(header.option, Rep.ERR_SHUTDOWN, "gateway is shutting down"));
        continue;
      }
      if (await this.option(header.option, data)) return;
    }
  }

  /** Handles one option; true when the transmission phase has started. */
  private async option(option: number, data: Uint8Array): Promise<boolean> {
    switch (option) {
      case Opt.EXPORT_NAME: {
        const name = decodeString(data);
        if (name === null) throw new HardDisconnect("export name is not valid UTF-8");
        const opened = await this.host.openExport(name);
        // NBD_OPT_EXPORT_NAME cannot return an error: the spec says to end the session.
        if (!opened) throw new HardDisconnect(`no export named "${name}"`);
        this.write(
          encodeExportNameReply(
            opened.info.sizeBytes,
            transmissionFlags(this.structured),
            this.noZeroes,
          ),
        );
        this.startTransmission(opened);
        return true;
      }
      case Opt.ABORT:
        this.write(encodeOptionReply(option, Rep.ACK));
        this.endGracefully();
        throw new Disconnected();
      case Opt.LIST: {
        if (data.byteLength !== 0) {
          this.write(encodeOptionError(option, Rep.ERR_INVALID, "NBD_OPT_LIST takes no data"));
          return false;
        }
        let exports: ExportInfo[];
        try {
          exports = await this.host.listExports();
        } catch (err) {
          this.write(
            encodeOptionError(option, Rep.ERR_POLICY, `cannot list volumes: ${errorText(err)}`),
          );
          return false;
        }
        for (const e of exports) this.write(encodeServerReply(e.name, e.description));
        this.write(encodeOptionReply(option, Rep.ACK));
        return false;
      }
      case Opt.INFO:
      case Opt.GO:
        return await this.infoOrGo(option, data);
      case Opt.STRUCTURED_REPLY:
        if (data.byteLength !== 0) {
          this.write(
            encodeOptionError(option, Rep.ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data"),
          );
        } else if (this.structured) {
          this.write(
            encodeOptionError(option, Rep.ERR_INVALID, "structured replies already negotiated"),
          );
        } else {
          this.structured = true;
          this.write(encodeOptionReply(option, Rep.ACK));
        }
        return false;
      default:
        this.write(encodeOptionError(option, Rep.ERR_UNSUP, `option ${option} is not supported`));
        return false;
    }
  }

  private async infoOrGo(option: number, data: Uint8Array): Promise<boolean> {
    const request = decodeInfoRequest(data);
    if (typeof request === "string") {
      this.write(encodeOptionError(option, Rep.ERR_INVALID, request));
      return false;
    }
    let opened: OpenedExport | null;
    try {
      opened = await this.host.openExport(request.name);
    } catch (err) {
      this.write(
        encodeOptionError(option, Rep.ERR_POLICY, `cannot open ${request.name}: ${errorText(err)}`),
      );
      return false;
    }
    if (!opened) {
      this.write(
        encodeOptionError(option, Rep.ERR_UNKNOWN, `no volume named "${request.name}"`),
      );
      return false;
    }
    const { info } = opened;
    const reply = (payload: Uint8Array) => this.write(encodeOptionReply(option, Rep.INFO, payload));
    reply(encodeInfoExport(info.sizeBytes, transmissionFlags(this.structured)));
    // Sent whether or not it was asked for: the gateway's constraints differ from the defaults.
    reply(encodeInfoBlockSize({
      minimumBytes: minimumBlockBytes,
      preferredBytes: preferredBlockBytes,
      maximumBytes: maximumBlockBytes,
    }));
    if (request.requests.includes(Info.NAME)) reply(encodeInfoString(Info.NAME, info.name));
    if (request.requests.includes(Info.DESCRIPTION)) {
      reply(encodeInfoString(Info.DESCRIPTION, info.description));
    }
    this.write(encodeOptionReply(option, Rep.ACK));
    if (option === Opt.INFO) {
      opened.release();
      return false;
    }
    this.startTransmission(opened);
    return true;
  }

  private startTransmission(opened: OpenedExport): void {
    if (this.phase !== "handshake") {
      opened.release();
      throw new Disconnected();
    }
    this.export = opened;
    this.phase = "transmission";
    this.host.log("info", `nbd ${this.peer}: serving ${opened.info.name}`);
    // Requests may already be queued behind the last option.
    if (this.queue.length > 0) this.pumpSafely();
  }

  // ---- transmission ----

  /** pump(), where a bug costs this connection, never the process (a storage node). */
  private pumpSafely(): void {
    try {
      this.pump();
    } catch (err) {
      this.host.log("error", `nbd ${this.peer}: ${(err as Error).stack ?? err}; disconnecting`);
      this.close();
    }
  }

  /** Parses every complete request in the queue and starts it, up to the in-flight limits. */
  private pump(): void {
    while (this.phase === "transmission") {
      const state = this.state;
      if (state.kind === "header") {
        // At the limit, requests wait in the queue (and the socket pauses) until some finish.
        if (this.full || this.queue.length < requestHeaderBytes) break;
        const request = decodeRequestHeader(this.queue.take(requestHeaderBytes));
        if (request.magic !== requestMagic) {
          this.host.log(
            "warn",
            `nbd ${this.peer}: bad request magic 0x${request.magic.toString(16)}; disconnecting`,
          );
          this.close();
          return;
        }
        request.handle = new Uint8Array(request.handle);
        const error = this.validate(request);
        if (request.type === Cmd.WRITE) {
          this.state = error
            ? { kind: "discard", request, remaining: request.length, error }
            : { kind: "payload", request };
          continue;
        }
        if (error) {
          this.replyError(request, error);
          continue;
        }
        if (request.type === Cmd.DISC) {
          this.phase = "closing";
          this.finishIfIdle();
          return;
        }
        this.dispatch(request, null);
      } else if (state.kind === "payload") {
        if (this.queue.length < state.request.length) break;
        const data = this.queue.take(state.request.length);
        this.state = { kind: "header" };
        this.dispatch(state.request, data);
      } else {
        state.remaining -= this.queue.skip(state.remaining);
        if (state.remaining > 0) break;
        this.state = { kind: "header" };
        this.replyError(state.request, state.error);
      }
    }
    this.applyBackpressure();
  }

  private get full(): boolean {
    return this.requestsInFlight >= maxRequestsInFlight || this.bytesInFlight >= maxBytesInFlight;
  }

  private applyBackpressure(): void {
    const full = this.full;
    if (full && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (!full && this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }

  /** Checks a request before anything is done; the error to answer with, or null. */
  private validate(request: NbdRequest): RequestError | null {
    const { type, flags, offset, length } = request;
    const name = cmdName(type);
    if (this.host.shuttingDown && type !== Cmd.DISC) {
      return new RequestError(NbdErrno.ESHUTDOWN, "gateway is shutting down");
    }
    switch (type) {
      case Cmd.DISC:
        return null;
      case Cmd.READ:
      case Cmd.WRITE:
      case Cmd.FLUSH:
      case Cmd.TRIM:
      case Cmd.WRITE_ZEROES:
        break;
      default:
        return new RequestError(NbdErrno.EINVAL, `command ${name} is not supported`);
    }
    const unknownFlags = flags & ~allowedFlags(type, this.structured);
    if (unknownFlags) {
      return new RequestError(
        NbdErrno.EINVAL,
        `flags 0x${unknownFlags.toString(16)} are not valid on ${name}`,
      );
    }
    if (type === Cmd.FLUSH) {
      return offset === 0 && length === 0
        ? null
        : new RequestError(NbdErrno.EINVAL, "FLUSH must have offset 0 and length 0");
    }
    if ((type === Cmd.READ || type === Cmd.WRITE) && length > maximumBlockBytes) {
      // A read that must not be fragmented is the one case the spec names EOVERFLOW for.
      const errno = type === Cmd.READ && (flags & CmdFlag.DF)
        ? NbdErrno.EOVERFLOW
        : NbdErrno.EINVAL;
      return new RequestError(
        errno,
        `${name} of ${length} bytes is above the maximum of ${maximumBlockBytes}`,
      );
    }
    if (offset % minimumBlockBytes !== 0 || length % minimumBlockBytes !== 0) {
      return new RequestError(
        NbdErrno.EINVAL,
        `offset ${offset} and length ${length} must be multiples of ${minimumBlockBytes}`,
      );
    }
    const size = this.export!.info.sizeBytes;
    if (!(offset <= size - length)) {
      const errno = type === Cmd.WRITE || type === Cmd.WRITE_ZEROES
        ? NbdErrno.ENOSPC
        : NbdErrno.EINVAL;
      return new RequestError(
        errno,
        `${name} at ${offset} of ${length} bytes goes beyond the export's end at ${size}`,
      );
    }
    return null;
  }

  private dispatch(request: NbdRequest, data: Uint8Array | null): void {
    const bytes = request.type === Cmd.READ || request.type === Cmd.WRITE ? request.length : 0;
    this.requestsInFlight++;
    this.bytesInFlight += bytes;
    this.execute(request, data).then(
      (payload) => this.replyOk(request, payload),
      (err) => {
        const errno = errnoFor(err);
        if (!(err instanceof RequestError)) {
          this.host.log(
            "warn",
            `nbd ${this.peer}: ${
              cmdName(request.type)
            } at ${request.offset} of ${request.length} bytes failed: ${errorText(err)}`,
          );
        }
        this.replyError(request, new RequestError(errno, errorText(err)));
      },
    ).finally(() => {
      this.requestsInFlight--;
      this.bytesInFlight -= bytes;
      if (this.draining && this.requestsInFlight === 0) this.endGracefully();
      else if (this.phase !== "transmission") this.finishIfIdle();
      else if (this.queue.length > 0) this.pumpSafely();
      else this.applyBackpressure();
    });
  }

  private execute(request: NbdRequest, data: Uint8Array | null): Promise<Uint8Array[] | null> {
    const io = this.export!.io;
    const { offset, length } = request;
    switch (request.type) {
      case Cmd.READ:
        return io.read(offset, length).then((pieces) => {
          let total = 0;
          for (const piece of pieces) total += piece.byteLength;
          if (total !== length) throw new Error(`backend returned ${total} bytes for ${length}`);
          return pieces;
        });
      case Cmd.WRITE:
        // As a disk with a volatile write cache: a plain write is acknowledged once applied
        // on every in-sync replica; FUA makes it durable first; FLUSH syncs the ones before.
        return io.write(offset, data!, durability(request.flags)).then(() => null);
      case Cmd.FLUSH:
        return io.flush().then(() => null);
      case Cmd.TRIM:
        return io.trim(offset, length, durability(request.flags)).then(() => null);
      case Cmd.WRITE_ZEROES:
        if ((request.flags & CmdFlag.FAST_ZERO) && !io.isAligned(offset, length)) {
          return Promise.reject(
            new RequestError(NbdErrno.ENOTSUP, "unaligned zeroing needs read-modify-write"),
          );
        }
        // NO_HOLE needs nothing more: Cairn segments are fully allocated.
        return io.writeZeroes(offset, length, durability(request.flags)).then(() => null);
      default:
        return Promise.reject(
          new RequestError(NbdErrno.EINVAL, `command ${cmdName(request.type)}`),
        );
    }
  }

  private replyOk(request: NbdRequest, pieces: Uint8Array[] | null): void {
    this.stats.requests++;
    if (request.type !== Cmd.READ) {
      this.write(encodeSimpleReply(0, request.handle));
      return;
    }
    if (!this.structured) {
      this.write(encodeSimpleReply(0, request.handle), ...(pieces ?? []));
    } else if (request.length === 0) {
      this.write(encodeNoneChunk(request.handle));
    } else {
      // One content chunk for the whole read, so NBD_CMD_FLAG_DF is always honoured.
      this.write(
        encodeOffsetDataHeader(request.handle, request.offset, request.length),
        ...pieces!,
      );
    }
  }

  private replyError(request: NbdRequest, error: RequestError): void {
    this.stats.errors++;
    if (this.structured) {
      this.write(encodeErrorChunk(request.handle, error.errno, error.message));
    } else {
      this.write(encodeSimpleReply(error.errno, request.handle));
    }
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
