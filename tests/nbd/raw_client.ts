/**
 * A small NBD client over a raw socket for tests: it can speak the protocol properly (many
 * requests in flight, simple and structured replies) and also send anything at all.
 */
import * as net from "node:net";
import { ByteQueue } from "../../nbd/byte_queue.ts";
import {
  Cmd,
  encodeRequestHeader,
  getU64,
  Info,
  Opt,
  optionMagic,
  optionReplyMagic,
  Rep,
  ReplyFlag,
  ReplyType,
  simpleReplyMagic,
  structuredReplyMagic,
} from "../../nbd/protocol.ts";
import type { ListenAddress } from "../../nbd/server.ts";

export interface OptionReply {
  option: number;
  type: number;
  data: Uint8Array;
}

export interface ExportDetails {
  sizeBytes: number;
  flags: number;
  blockSize?: { minimum: number; preferred: number; maximum: number };
  name?: string;
  description?: string;
}

export interface Reply {
  /** 0 on success, else the NBD error value. */
  error: number;
  /** READ data on success. */
  data: Uint8Array;
  /** Structured error message, if any. */
  message: string;
  /** Whether the reply came as structured chunks. */
  structured: boolean;
}

export class ConnectionClosed extends Error {}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface PendingRequest {
  type: number;
  length: number;
  resolve: (reply: Reply) => void;
  reject: (err: Error) => void;
  chunks: { offset: number; data: Uint8Array }[];
  error: number;
  message: string;
}

export class RawNbdClient {
  private readonly queue = new ByteQueue();
  private waiter:
    | { n: number; resolve: (b: Uint8Array) => void; reject: (e: Error) => void }
    | null = null;
  private ended = false;
  readonly closed: Promise<void>;
  private nextHandle = 1n;
  private readonly pending = new Map<bigint, PendingRequest>();
  private readerRunning = false;
  structured = false;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Uint8Array) => {
      this.queue.push(chunk);
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      const done = () => {
        this.ended = true;
        this.wake();
        for (const p of this.pending.values()) p.reject(new ConnectionClosed("connection closed"));
        this.pending.clear();
        resolve();
      };
      socket.on("close", done);
      socket.on("error", () => {});
    });
  }

  static connect(address: ListenAddress): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const socket = "path" in address
        ? net.connect(address.path)
        : net.connect(address.port, address.host === "0.0.0.0" ? "127.0.0.1" : address.host);
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve(new RawNbdClient(socket));
      });
    });
  }

  /** Connects and negotiates an export with NBD_OPT_GO. */
  static async open(
    address: ListenAddress,
    name: string,
    options: { structured?: boolean } = {},
  ): Promise<{ client: RawNbdClient; details: ExportDetails }> {
    const client = await RawNbdClient.connect(address);
    await client.greeting();
    client.sendClientFlags(3);
    if (options.structured) {
      const reply = await client.option(Opt.STRUCTURED_REPLY);
      if (reply.type !== Rep.ACK) throw new Error(`structured replies refused: ${reply.type}`);
      client.structured = true;
    }
    const details = await client.go(name);
    return { client, details };
  }

  /** The export's details through NBD_OPT_INFO, on a connection of its own. */
  static async infoOf(address: ListenAddress, name: string): Promise<ExportDetails> {
    const client = await RawNbdClient.connect(address);
    try {
      await client.greeting();
      client.sendClientFlags(3);
      return await client.infoOrGo(Opt.INFO, name);
    } finally {
      client.destroy();
    }
  }

  private wake(): void {
    const waiter = this.waiter;
    if (!waiter) return;
    if (this.queue.length >= waiter.n) {
      this.waiter = null;
      waiter.resolve(this.queue.take(waiter.n));
    } else if (this.ended) {
      this.waiter = null;
      waiter.reject(new ConnectionClosed("connection closed"));
    }
  }

  /** Exactly n bytes from the server. */
  readBytes(n: number): Promise<Uint8Array> {
    if (this.queue.length >= n) return Promise.resolve(this.queue.take(n));
    if (this.ended) return Promise.reject(new ConnectionClosed("connection closed"));
    return new Promise((resolve, reject) => (this.waiter = { n, resolve, reject }));
  }

  send(bytes: Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Resolves true if the server closes the connection within timeoutMs. */
  async closesWithin(timeoutMs: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const result = await Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    return result;
  }

  get isClosed(): boolean {
    return this.ended;
  }

  destroy(): void {
    this.socket.destroy();
  }

  // ---- handshake ----

  async greeting(): Promise<{ magic: bigint; newstyle: bigint; flags: number }> {
    const bytes = await this.readBytes(18);
    const v = view(bytes);
    return {
      magic: v.getBigUint64(0, false),
      newstyle: v.getBigUint64(8, false),
      flags: v.getUint16(16, false),
    };
  }

  sendClientFlags(flags: number): void {
    const out = new Uint8Array(4);
    view(out).setUint32(0, flags, false);
    this.send(out);
  }

  sendOption(option: number, data: Uint8Array = new Uint8Array(0), magic = optionMagic): void {
    const out = new Uint8Array(16 + data.byteLength);
    const v = view(out);
    v.setBigUint64(0, magic, false);
    v.setUint32(8, option, false);
    v.setUint32(12, data.byteLength, false);
    out.set(data, 16);
    this.send(out);
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = view(await this.readBytes(20));
    const magic = header.getBigUint64(0, false);
    if (magic !== optionReplyMagic) throw new Error(`bad option reply magic ${magic.toString(16)}`);
    const length = header.getUint32(16, false);
    return {
      option: header.getUint32(8, false),
      type: header.getUint32(12, false),
      data: (await this.readBytes(length)).slice(),
    };
  }

  /** Sends an option and returns its (first) reply. */
  async option(option: number, data?: Uint8Array): Promise<OptionReply> {
    this.sendOption(option, data);
    return await this.readOptionReply();
  }

  async list(): Promise<{ names: string[]; final: OptionReply }> {
    this.sendOption(Opt.LIST);
    const names: string[] = [];
    for (;;) {
      const reply = await this.readOptionReply();
      if (reply.type !== Rep.SERVER) return { names, final: reply };
      const length = view(reply.data).getUint32(0, false);
      names.push(decoder.decode(reply.data.subarray(4, 4 + length)));
    }
  }

  static infoData(name: string, requests: number[]): Uint8Array {
    const nameBytes = encoder.encode(name);
    const data = new Uint8Array(6 + nameBytes.byteLength + 2 * requests.length);
    const v = view(data);
    v.setUint32(0, nameBytes.byteLength, false);
    data.set(nameBytes, 4);
    v.setUint16(4 + nameBytes.byteLength, requests.length, false);
    requests.forEach((r, i) => v.setUint16(6 + nameBytes.byteLength + 2 * i, r, false));
    return data;
  }

  /** NBD_OPT_INFO or NBD_OPT_GO; throws with the error reply type on failure. */
  async infoOrGo(
    option: number,
    name: string,
    requests: number[] = [Info.BLOCK_SIZE, Info.NAME, Info.DESCRIPTION],
  ): Promise<ExportDetails> {
    this.sendOption(option, RawNbdClient.infoData(name, requests));
    const details: ExportDetails = { sizeBytes: -1, flags: 0 };
    for (;;) {
      const reply = await this.readOptionReply();
      if (reply.type === Rep.ACK) return details;
      if (reply.type !== Rep.INFO) {
        throw new OptionError(reply.type, decoder.decode(reply.data));
      }
      const v = view(reply.data);
      const type = v.getUint16(0, false);
      if (type === Info.EXPORT) {
        details.sizeBytes = getU64(v, 2);
        details.flags = v.getUint16(10, false);
      } else if (type === Info.BLOCK_SIZE) {
        details.blockSize = {
          minimum: v.getUint32(2, false),
          preferred: v.getUint32(6, false),
          maximum: v.getUint32(10, false),
        };
      } else if (type === Info.NAME) {
        details.name = decoder.decode(reply.data.subarray(2));
      } else if (type === Info.DESCRIPTION) {
        details.description = decoder.decode(reply.data.subarray(2));
      }
    }
  }

  go(name: string, requests?: number[]): Promise<ExportDetails> {
    return this.infoOrGo(Opt.GO, name, requests);
  }

  // ---- transmission ----

  /** Sends a request and resolves with its reply (replies may come in any order). */
  request(
    req: {
      type: number;
      flags?: number;
      offset: number | bigint;
      length: number;
      data?: Uint8Array;
    },
  ): Promise<Reply> {
    const handle = this.nextHandle++;
    const promise = new Promise<Reply>((resolve, reject) => {
      this.pending.set(handle, {
        type: req.type,
        length: req.length,
        resolve,
        reject,
        chunks: [],
        error: 0,
        message: "",
      });
    });
    const header = encodeRequestHeader({ ...req, handle });
    if (req.data) {
      const out = new Uint8Array(header.byteLength + req.data.byteLength);
      out.set(header);
      out.set(req.data, header.byteLength);
      this.send(out);
    } else {
      this.send(header);
    }
    this.startReader();
    return promise;
  }

  readAt(offset: number, length: number, flags = 0): Promise<Reply> {
    return this.request({ type: Cmd.READ, offset, length, flags });
  }

  write(offset: number, data: Uint8Array, flags = 0): Promise<Reply> {
    return this.request({ type: Cmd.WRITE, offset, length: data.byteLength, data, flags });
  }

  /** Sends NBD_CMD_DISC (no reply comes). */
  disconnect(): void {
    this.send(encodeRequestHeader({ type: Cmd.DISC, handle: 0n, offset: 0, length: 0 }));
  }

  private startReader(): void {
    if (this.readerRunning) return;
    this.readerRunning = true;
    this.readReplies().catch(() => {});
  }

  /** Reads replies while requests are pending; clears readerRunning the moment it stops. */
  private async readReplies(): Promise<void> {
    try {
      await this.readRepliesWhilePending();
    } catch (err) {
      this.readerRunning = false;
      for (const p of this.pending.values()) p.reject(err as Error);
      this.pending.clear();
    }
  }

  private async readRepliesWhilePending(): Promise<void> {
    while (this.pending.size > 0) {
      const magic = view(await this.readBytes(4)).getUint32(0, false);
      if (magic === simpleReplyMagic) {
        const rest = view(await this.readBytes(12));
        const error = rest.getUint32(0, false);
        const handle = rest.getBigUint64(4, false);
        const p = this.pending.get(handle);
        if (!p) throw new Error(`reply for unknown handle ${handle}`);
        this.pending.delete(handle);
        const data = p.type === Cmd.READ && error === 0
          ? (await this.readBytes(p.length)).slice()
          : new Uint8Array(0);
        p.resolve({ error, data, message: "", structured: false });
      } else if (magic === structuredReplyMagic) {
        const rest = view(await this.readBytes(16));
        const flags = rest.getUint16(0, false);
        const type = rest.getUint16(2, false);
        const handle = rest.getBigUint64(4, false);
        const length = rest.getUint32(12, false);
        const payload = (await this.readBytes(length)).slice();
        const p = this.pending.get(handle);
        if (!p) throw new Error(`chunk for unknown handle ${handle}`);
        const pv = view(payload);
        if (type === ReplyType.OFFSET_DATA) {
          p.chunks.push({ offset: getU64(pv, 0), data: payload.subarray(8) });
        } else if (type === ReplyType.ERROR || type === ReplyType.ERROR_OFFSET) {
          p.error = pv.getUint32(0, false);
          const messageLength = pv.getUint16(4, false);
          p.message = decoder.decode(payload.subarray(6, 6 + messageLength));
        } else if (type !== ReplyType.NONE) {
          throw new Error(`unexpected chunk type ${type}`);
        }
        if (flags & ReplyFlag.DONE) {
          this.pending.delete(handle);
          let data = new Uint8Array(0);
          if (p.error === 0 && p.chunks.length > 0) {
            const base = Math.min(...p.chunks.map((c) => c.offset));
            data = new Uint8Array(p.length);
            for (const c of p.chunks) data.set(c.data, c.offset - base);
          }
          p.resolve({ error: p.error, data, message: p.message, structured: true });
        }
      } else {
        throw new Error(`bad reply magic 0x${magic.toString(16)}`);
      }
    }
    this.readerRunning = false;
  }
}

export class OptionError extends Error {
  constructor(readonly type: number, message: string) {
    super(`option error 0x${type.toString(16)}: ${message}`);
  }
}
