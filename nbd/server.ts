/**
 * The NBD gateway: listens on TCP and/or Unix sockets, runs one NbdConnection per client, and
 * shares one opened export (backend plus read-modify-write locks) among every connection to
 * the same volume.
 */
import * as net from "node:net";
import * as fs from "node:fs";
import type { ExportInfo, ExportSource, NbdBackend } from "./backend.ts";
import { SubBlockIo } from "./rmw.ts";
import { type ConnectionHost, NbdConnection, type OpenedExport } from "./connection.ts";

/** Where to listen: TCP host and port, or a Unix socket path. */
export type ListenAddress = { host: string; port: number } | { path: string };

/** IANA port for NBD. */
export const defaultNbdPort = 10809;
/** How long shutdown waits for requests in flight before closing connections. */
export const shutdownGraceMs = 10_000;

/** Parses `HOST:PORT`, `:PORT`, `[V6]:PORT`, `PORT` or `unix:/path`. */
export function parseListenAddress(text: string): ListenAddress {
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    if (!path) throw new Error(`"${text}": unix: needs a socket path`);
    return { path };
  }
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) {
    throw new Error(`cannot read listen address "${text}" (HOST:PORT or unix:/path)`);
  }
  return { host: match[1] || match[2] || "0.0.0.0", port };
}

export function formatListenAddress(address: ListenAddress): string {
  if ("path" in address) return `unix:${address.path}`;
  return address.host.includes(":")
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

/** An NBD URI for an export at an address (what qemu, nbdinfo, nbdcopy and fio take). */
export function nbdUri(address: ListenAddress, exportName: string): string {
  const name = encodeURIComponent(exportName);
  if ("path" in address) return `nbd+unix:///${name}?socket=${encodeURIComponent(address.path)}`;
  const host = address.host === "0.0.0.0" ? "127.0.0.1" : address.host;
  return `nbd://${host.includes(":") ? `[${host}]` : host}:${address.port}/${name}`;
}

export type GatewayLog = (level: "info" | "warn" | "error", message: string) => void;

export interface GatewayOptions {
  source: ExportSource;
  log?: GatewayLog;
}

interface SharedExport {
  io: SubBlockIo;
  info: ExportInfo;
  backend: NbdBackend;
  refs: number;
}

export class NbdGateway implements ConnectionHost {
  private readonly servers: { server: net.Server; address: ListenAddress }[] = [];
  private readonly connections = new Set<NbdConnection>();
  private readonly exports = new Map<string, SharedExport>();
  private readonly opening = new Map<string, Promise<SharedExport | null>>();
  private stopping = false;
  private readonly logFn: GatewayLog;

  constructor(private readonly options: GatewayOptions) {
    this.logFn = options.log ?? ((level, message) => {
      if (level !== "info") console.error(`[${level}] ${message}`);
    });
  }

  get shuttingDown(): boolean {
    return this.stopping;
  }

  /** Addresses listened on, with the ports the OS chose for port 0. */
  get addresses(): ListenAddress[] {
    return this.servers.map((s) => s.address);
  }

  /** Open connections (for tests). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** The export shared by connections to `name`, if any is open (for tests and metrics). */
  openExportIo(name: string): SubBlockIo | undefined {
    return this.exports.get(name)?.io;
  }

  log(level: "info" | "warn" | "error", message: string): void {
    this.logFn(level, message);
  }

  listExports(): Promise<ExportInfo[]> {
    return this.options.source.list();
  }

  async openExport(name: string): Promise<OpenedExport | null> {
    let shared = this.exports.get(name);
    if (!shared) {
      let opening = this.opening.get(name);
      if (!opening) {
        opening = this.options.source.open(name).then((opened) => {
          if (!opened) return null;
          const created: SharedExport = {
            io: new SubBlockIo(opened.backend),
            info: opened.info,
            backend: opened.backend,
            refs: 0,
          };
          this.exports.set(name, created);
          return created;
        }).finally(() => this.opening.delete(name));
        this.opening.set(name, opening);
      }
      const opened = await opening;
      if (!opened) return null;
      shared = opened;
    }
    shared.refs++;
    const entry = shared;
    let released = false;
    return {
      io: entry.io,
      info: entry.info,
      release: () => {
        if (released) return;
        released = true;
        if (--entry.refs > 0) return;
        if (this.exports.get(name) === entry) this.exports.delete(name);
        entry.backend.close().catch(() => {});
      },
    };
  }

  /** Starts listening; resolves with the bound address (port 0 becomes the chosen port). */
  async listen(address: ListenAddress): Promise<ListenAddress> {
    if ("path" in address) await removeStaleSocket(address.path);
    const server = net.createServer((socket) => this.accept(socket));
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      const onListening = () => {
        server.off("error", reject);
        server.on("error", (err) => this.log("error", `nbd listener: ${err.message}`));
        let bound: ListenAddress = address;
        const info = server.address();
        if (info && typeof info === "object") bound = { host: info.address, port: info.port };
        this.servers.push({ server, address: bound });
        resolve(bound);
      };
      if ("path" in address) server.listen(address.path, onListening);
      else server.listen(address.port, address.host, onListening);
    });
  }

  private accept(socket: net.Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    const peer = socket.remoteAddress
      ? `${socket.remoteAddress}:${socket.remotePort}`
      : `unix#${this.connections.size + 1}`;
    const connection = new NbdConnection(socket, this, peer);
    this.connections.add(connection);
    connection.closed.then(() => this.connections.delete(connection));
    connection.start();
  }

  /**
   * Stops listening, answers requests in flight (new ones get ESHUTDOWN), closes every
   * connection and the opened volumes.
   */
  async close(graceMs = shutdownGraceMs): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    // A net.Server's close callback waits for its connections, so close those first.
    const listenersClosed = Promise.all(
      this.servers.map(({ server }) =>
        new Promise<void>((resolve) => server.close(() => resolve()))
      ),
    );
    await Promise.all([...this.connections].map((c) => c.shutdown(graceMs)));
    await listenersClosed;
    for (const { address } of this.servers) {
      if ("path" in address) {
        try {
          fs.unlinkSync(address.path);
        } catch { /* already gone */ }
      }
    }
    for (const shared of this.exports.values()) await shared.backend.close().catch(() => {});
    this.exports.clear();
  }
}

/**
 * Removes a socket file left by a process that died. Refuses anything that is not a socket, and
 * a socket something still listens on.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw new Error(`${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (live) throw new Error(`${path} is in use by another process`);
  fs.unlinkSync(path);
}
