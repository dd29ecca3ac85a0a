/**
 * A real local cluster: one nats-server (or a cluster of three with routes,
 * `natsCluster: 3`) and N node processes on 127.0.0.1, for `deno task up`,
 * integration tests and benchmarks. Tests get free ports and a temp dir; `up`
 * gets a fixed dir that is reused. Every process started here is stopped by its pid.
 */
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import * as fs from "node:fs";
import { freePort, type LocalNats, natsMonitor, startNatsServer } from "./nats_server.ts";
import { recommendedNatsMaxPayloadBytes } from "../protocol/limits.ts";
import { runCapture } from "./process.ts";
import { type CairnClient, connectCluster } from "../client/client.ts";
import type { NatsAuth } from "../protocol/nats_auth.ts";
import { type GeneratedNatsAuth, generateNatsAuth } from "./nats_auth_config.ts";

const repoRoot = new URL("../", import.meta.url).pathname;
/**
 * A small young generation keeps a node's resident memory low under load, and an
 * exposed gc() lets an idle node free dead buffers (server/memory_trim.ts); the same
 * flags as `deno task serve` in deno.json.
 */
export const nodeV8Flags = "--v8-flags=--max-semi-space-size=2,--expose-gc";
/**
 * Fewer malloc arenas and an eager trim hand the large IO buffers' memory
 * back after load (same as `deno task serve`): resident memory after the
 * bench's 1 MiB rows went from 156-182 MiB to 124-138 MiB.
 */
export const nodeMallocEnv = { MALLOC_ARENA_MAX: "2", MALLOC_TRIM_THRESHOLD_: "131072" };
const profileV8Flags = Deno.env.get("CAIRN_NODE_V8_FLAGS")?.trim().replaceAll(" ", ",");
/** How long stopping the cluster waits for each client to drain and close. */
const clientCloseTimeoutMs = 5000;
/** How long a node may take to say it is serving. */
const nodeStartTimeoutMs = 30_000;

export interface NodeProcess {
  id: string;
  zone: string;
  dataDir: string;
  logFile: string;
  child: ChildProcess | null;
  /** Port of the node's HTTP API on 127.0.0.1 (with `http`), kept across restarts. */
  httpPort?: number;
}

export interface ClusterOptions {
  nodes?: number;
  /** Zone of node i; default zone-<i>. */
  zoneOf?: (index: number) => string;
  /** Directory for NATS and node data; default a new temp dir, removed on stop. */
  root?: string;
  /**
   * NATS client port; default a free one. With `natsCluster: 3`, server i listens on
   * natsPort + i, routes on natsPort + 2000 + i, monitoring on natsPort + 4000 + i.
   */
  natsPort?: number;
  /**
   * NATS servers: 1 (default) or 3, a cluster with routes on 127.0.0.1 whose metadata
   * bucket has 3 replicas; nodes and clients are given every URL.
   */
  natsCluster?: number;
  /** Capacity each node declares; default 100GiB. */
  capacity?: string;
  /** Extra flags for every `serve` process. */
  serveArgs?: string[];
  /**
   * Serve the HTTP API on every node (`--http 127.0.0.1:PORT`): node i on httpBasePort + i,
   * or on free ports without a base.
   */
  http?: boolean;
  httpBasePort?: number;
  /** Keep the data dir on stop (always kept when `root` is given). */
  keep?: boolean;
  /**
   * A nats-server config file for every server, e.g. users and permissions made by
   * server/nats_auth_config.ts (NATS authorization on).
   */
  natsConfigFile?: string;
  /**
   * Every nats-server's max_payload; default recommendedNatsMaxPayloadBytes (8 MiB: 4 MiB
   * frames, 6 MiB replica batches). defaultNatsMaxPayloadBytes (1 MiB) runs as nats-server does
   * without a setting.
   */
  natsMaxPayloadBytes?: number;
  /** NATS credentials of the nodes (passed as NATS_CREDS / NATS_USER / NATS_PASSWORD). */
  nodeAuth?: NatsAuth;
  /** NATS credentials of `client()` and `cli()` unless they are given others. */
  clientAuth?: NatsAuth;
  /**
   * NATS authorization on, with an nkey user per role made under `<root>/auth` (kept there and
   * reused): nodes run as the node user, `client()` and `cli()` as the admin user (unless
   * `nodeAuth`, `clientAuth` or `natsConfigFile` say otherwise). See docs/NATS_AUTH.md.
   */
  natsAuth?: boolean;
}

/** The env variables that carry NATS credentials to a child process (none: removed). */
export function natsAuthEnv(auth: NatsAuth | undefined): Record<string, string> {
  const env = { ...process.env } as Record<string, string>;
  if (auth === undefined) return env;
  delete env.NATS_CREDS;
  delete env.NATS_USER;
  delete env.NATS_PASSWORD;
  if (auth.creds) env.NATS_CREDS = auth.creds;
  if (auth.user) env.NATS_USER = auth.user;
  if (auth.password !== undefined) env.NATS_PASSWORD = auth.password;
  return env;
}

function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no "${pattern}" within ${timeoutMs} ms; output:\n${seen.slice(-2000)}`));
    }, timeoutMs);
    const onData = (chunk: Uint8Array) => {
      seen += new TextDecoder().decode(chunk);
      if (pattern.test(seen)) {
        cleanup();
        resolve();
      }
    };
    const onExit = (code: number | null) => {
      cleanup();
      reject(new Error(`node exited with ${code} before serving; output:\n${seen.slice(-2000)}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.stderr?.off("data", onData);
      child.off("exit", onExit);
    };
    child.stderr?.on("data", onData);
    child.once("exit", onExit);
  });
}

/** How one NATS server of the cluster is (re)started: same store dir, name and ports. */
interface NatsSlot {
  dataDir: string;
  logFile: string;
  serverName: string;
  port: number;
  monitorPort: number;
  routePort?: number;
  server: LocalNats | null;
}

const natsClusterName = "cairn";

export class LocalCluster {
  readonly nodes: NodeProcess[] = [];
  private clients: CairnClient[] = [];

  private constructor(
    readonly root: string,
    private readonly natsSlots: NatsSlot[],
    private readonly options: ClusterOptions,
    /** The users, keys and config made for `natsAuth`. */
    readonly natsAuthFiles?: GeneratedNatsAuth,
  ) {}

  /** The credentials `client()` and `cli()` use by default (none: NATS without authorization). */
  get clientAuth(): NatsAuth | undefined {
    return this.options.clientAuth;
  }

  /** The first NATS server (the only one unless `natsCluster` is 3). */
  get nats(): LocalNats {
    const server = this.natsSlots[0].server;
    if (!server) throw new Error("NATS server 0 is not running");
    return server;
  }

  /** Every NATS client URL, one per server (running or not). */
  get natsUrls(): string[] {
    return this.natsSlots.map((slot) => `nats://127.0.0.1:${slot.port}`);
  }

  /** A `servers` value naming every NATS server (comma-joined when there are several). */
  get natsUrl(): string {
    return this.natsUrls.join(",");
  }

  /** Number of NATS servers. */
  get natsCount(): number {
    return this.natsSlots.length;
  }

  /** Pid of NATS server i, or undefined while it is not running. */
  natsPid(index: number): number | undefined {
    const server = this.natsSlot(index).server;
    return server && !server.exited ? server.pid : undefined;
  }

  /** Server name of NATS server i (JetStream names stream leaders and peers by it). */
  natsServerName(index: number): string {
    return this.natsSlot(index).serverName;
  }

  /** HTTP monitoring port of NATS server i (`/connz`, `/routez`, `/jsz`, `/healthz`). */
  natsMonitorPort(index: number): number {
    return this.natsSlot(index).monitorPort;
  }

  private natsSlot(index: number): NatsSlot {
    const slot = this.natsSlots[index];
    if (!slot) throw new Error(`no NATS server ${index} (there are ${this.natsSlots.length})`);
    return slot;
  }

  /** kill -9 of NATS server i; waits for it to exit. */
  async killNats(index: number): Promise<void> {
    const slot = this.natsSlot(index);
    await slot.server?.kill();
  }

  /**
   * (Re)starts NATS server i with the same store dir, name and ports; waits until it
   * listens and, in a cluster, has routes to every other running member.
   */
  async startNats(index: number): Promise<void> {
    const slot = this.natsSlot(index);
    if (slot.server && !slot.server.exited) throw new Error(`NATS server ${index} is running`);
    const others = this.natsSlots.filter((s) => s !== slot);
    slot.server = await startNatsServer({
      dataDir: slot.dataDir,
      logFile: slot.logFile,
      port: slot.port,
      serverName: slot.serverName,
      monitorPort: slot.monitorPort,
      configFile: this.options.natsConfigFile,
      maxPayloadBytes: this.options.natsMaxPayloadBytes ?? recommendedNatsMaxPayloadBytes,
      cluster: slot.routePort === undefined ? undefined : {
        name: natsClusterName,
        port: slot.routePort,
        routes: others.map((s) => s.routePort!),
        // Wait for routes only to the members that run now (all of them at first start).
        waitForRoutes: others.filter((s) => s.server === null || !s.server.exited).length,
      },
    });
  }

  /**
   * Waits until the JetStream cluster has a meta leader (and every running server says
   * healthy), so a replicated bucket can be created. Single server: until JetStream answers.
   */
  async waitForJetStream(timeoutMs = 30_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const running = this.natsSlots.filter((s) => s.server && !s.server.exited);
      const states = await Promise.all(running.map(async (slot) => {
        const jsz = await natsMonitor<{ meta_cluster?: { leader?: string } }>(
          slot.monitorPort,
          "/jsz",
        );
        const leader = this.natsSlots.length === 1 || Boolean(jsz?.meta_cluster?.leader);
        return jsz !== null && leader;
      }));
      if (states.every(Boolean)) return;
      if (performance.now() > deadline) {
        throw new Error(`JetStream has no meta leader after ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  static async start(options: ClusterOptions = {}): Promise<LocalCluster> {
    const root = options.root ?? await Deno.makeTempDir({ prefix: "cairn-test-" });
    fs.mkdirSync(root, { recursive: true });
    const natsCount = options.natsCluster ?? 1;
    if (natsCount !== 1 && natsCount !== 3) {
      throw new Error(`natsCluster must be 1 or 3, not ${natsCount}`);
    }
    const base = options.natsPort;
    const slots: NatsSlot[] = [];
    for (let i = 0; i < natsCount; i++) {
      const single = natsCount === 1;
      slots.push({
        dataDir: single ? `${root}/nats` : `${root}/nats-${i + 1}`,
        logFile: single ? `${root}/nats.log` : `${root}/nats-${i + 1}.log`,
        serverName: single ? "cairn-nats" : `cairn-nats-${i + 1}`,
        port: base !== undefined ? base + i : await freePort(),
        monitorPort: base !== undefined && !single ? base + 4000 + i : await freePort(),
        routePort: single ? undefined : base !== undefined ? base + 2000 + i : await freePort(),
        server: null,
      });
    }
    const authFiles = options.natsAuth ? generateNatsAuth(`${root}/auth`) : undefined;
    const cluster = new LocalCluster(root, slots, {
      keep: options.root !== undefined,
      ...(authFiles
        ? {
          natsConfigFile: authFiles.configFile,
          nodeAuth: { creds: authFiles.seedFiles.node },
          clientAuth: { creds: authFiles.seedFiles.admin },
        }
        : {}),
      ...options,
    }, authFiles);
    try {
      await Promise.all(slots.map((_, i) => cluster.startNats(i)));
      if (natsCount > 1) await cluster.waitForJetStream();
    } catch (err) {
      await Promise.all(slots.map((s) => s.server?.kill()));
      throw err;
    }
    const count = options.nodes ?? 3;
    for (let i = 0; i < count; i++) {
      cluster.nodes.push({
        id: `n${i + 1}`,
        zone: options.zoneOf?.(i) ?? `zone-${i + 1}`,
        dataDir: `${root}/n${i + 1}`,
        logFile: `${root}/n${i + 1}.log`,
        child: null,
      });
    }
    try {
      await Promise.all(cluster.nodes.map((_, i) => cluster.startNode(i)));
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  /** Starts (or restarts) node i and waits until it serves. */
  async startNode(index: number): Promise<void> {
    const node = this.nodes[index];
    if (node.child && node.child.exitCode === null && node.child.signalCode === null) {
      throw new Error(`${node.id} is running`);
    }
    if (this.options.http && node.httpPort === undefined) {
      node.httpPort = this.options.httpBasePort !== undefined
        ? this.options.httpBasePort + index
        : await freePort();
    }
    const log = fs.openSync(node.logFile, "a");
    const child = spawn(Deno.execPath(), [
      "run",
      "-A",
      // CAIRN_NODE_V8_FLAGS (e.g. "--prof") adds V8 flags to every node, for profiling.
      `${nodeV8Flags}${profileV8Flags ? `,${profileV8Flags}` : ""}`,
      `${repoRoot}cli/serve.ts`,
      "--nats",
      this.natsUrl,
      "--data",
      node.dataDir,
      "--node",
      node.id,
      "--zone",
      node.zone,
      "--capacity",
      this.options.capacity ?? "100GiB",
      ...(node.httpPort !== undefined ? ["--http", `127.0.0.1:${node.httpPort}`] : []),
      ...(this.options.serveArgs ?? []),
    ], {
      stdio: ["ignore", log, "pipe"],
      cwd: repoRoot,
      env: { ...natsAuthEnv(this.options.nodeAuth), ...nodeMallocEnv },
    });
    node.child = child;
    child.stderr!.on("data", (chunk: Uint8Array) => fs.appendFileSync(node.logFile, chunk));
    await waitForLine(child, /serving \(NATS/, nodeStartTimeoutMs);
  }

  /** SIGSTOP: node i freezes (does not wait for anything); `resumeNode` continues it. */
  pauseNode(index: number): void {
    const pid = this.runningPid(index);
    process.kill(pid, "SIGSTOP");
  }

  /** SIGCONT to a node paused with `pauseNode`. */
  resumeNode(index: number): void {
    const pid = this.runningPid(index);
    process.kill(pid, "SIGCONT");
  }

  private runningPid(index: number): number {
    const child = this.nodes[index].child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${this.nodes[index].id} is not running`);
    }
    return child.pid!;
  }

  /** kill -9: no chance to flush or say goodbye. */
  async killNode(index: number): Promise<void> {
    await this.signalNode(index, "SIGKILL");
  }

  /** Sends a signal and waits for the process to exit; returns its exit code. */
  async signalNode(index: number, signal: NodeJS.Signals): Promise<number | null> {
    const child = this.nodes[index].child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      return child?.exitCode ?? null;
    }
    const exited = new Promise<number | null>((resolve) =>
      child.once("exit", (code) => resolve(code))
    );
    process.kill(child.pid!, signal);
    return await exited;
  }

  /** Base URL of node i's HTTP API (with `http`). */
  httpUrl(index: number): string {
    const port = this.nodes[index].httpPort;
    if (port === undefined) throw new Error(`${this.nodes[index].id} serves no HTTP API`);
    return `http://127.0.0.1:${port}`;
  }

  pidOf(index: number): number | undefined {
    return this.nodes[index].child?.pid;
  }

  /**
   * A client of this cluster, as the `clientAuth` user (or `auth`, or none at all), with its
   * replies under `inboxPrefix` (default `_INBOX`).
   */
  async client(auth?: NatsAuth, inboxPrefix?: string): Promise<CairnClient> {
    const client = await connectCluster({
      servers: this.natsUrl,
      name: "cairn-test",
      auth: auth ?? this.options.clientAuth ?? {},
      inboxPrefix,
    });
    this.clients.push(client);
    return client;
  }

  /**
   * Runs the CLI against this cluster (as the `clientAuth` user, or `auth`); returns exit code
   * and output.
   */
  async cli(
    args: string[],
    auth?: NatsAuth,
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const as = auth ?? this.options.clientAuth;
    return await runCapture(
      Deno.execPath(),
      ["run", "-A", `${repoRoot}cli/main.ts`, "--nats", this.natsUrl, ...args],
      { cwd: repoRoot, ...(as ? { env: natsAuthEnv(as) } : {}) },
    );
  }

  logs(): string {
    return this.nodes.map((n) => {
      try {
        return `--- ${n.id}\n${fs.readFileSync(n.logFile, "utf8").slice(-4000)}`;
      } catch {
        return `--- ${n.id}: no log`;
      }
    }).join("\n");
  }

  async stop(): Promise<void> {
    // A drain cannot finish while no NATS server runs: give each client 5 s.
    const within = async (ms: number, work: Promise<unknown>) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([work.catch(() => {}), new Promise((r) => (timer = setTimeout(r, ms)))]);
      clearTimeout(timer);
    };
    // All at once, each bounded: a client whose server is gone must not hold the stop up.
    await Promise.all(this.clients.map(async (client) => {
      await within(clientCloseTimeoutMs, client.close());
      if (!client.nc.isClosed()) await within(clientCloseTimeoutMs, client.nc.close());
    }));
    this.clients = [];
    await Promise.all(this.nodes.map(async (node, i) => {
      if (!node.child || node.child.exitCode !== null || node.child.signalCode !== null) return;
      process.kill(node.child.pid!, "SIGCONT"); // a paused node could not see the SIGTERM
      const timer = setTimeout(() => node.child?.kill("SIGKILL"), 10_000);
      await this.signalNode(i, "SIGTERM");
      clearTimeout(timer);
    }));
    await Promise.all(this.natsSlots.map((slot) => slot.server?.stop()));
    if (!this.options.keep) await Deno.remove(this.root, { recursive: true }).catch(() => {});
  }
}
