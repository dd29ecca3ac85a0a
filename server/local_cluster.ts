/**
 * A real local cluster: one nats-server and N node processes on 127.0.0.1,
 * for `deno task up`, integration tests and benchmarks. Tests get free ports
 * and a temp dir; `up` gets a fixed dir that is reused. Every process started
 * here is stopped by its pid.
 */
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import * as fs from "node:fs";
import { type LocalNats, startNatsServer } from "./nats_server.ts";
import { runCapture } from "./process.ts";
import { type CairnClient, connectCluster } from "../client/client.ts";

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
/** How long a node may take to say it is serving. */
const nodeStartTimeoutMs = 30_000;

export interface NodeProcess {
  id: string;
  zone: string;
  dataDir: string;
  logFile: string;
  child: ChildProcess | null;
}

export interface ClusterOptions {
  nodes?: number;
  /** Zone of node i; default zone-<i>. */
  zoneOf?: (index: number) => string;
  /** Directory for NATS and node data; default a new temp dir, removed on stop. */
  root?: string;
  /** NATS port; default a free one. */
  natsPort?: number;
  /** Capacity each node declares; default 100GiB. */
  capacity?: string;
  /** Extra flags for every `serve` process. */
  serveArgs?: string[];
  /** Keep the data dir on stop (always kept when `root` is given). */
  keep?: boolean;
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

export class LocalCluster {
  readonly nodes: NodeProcess[] = [];
  private clients: CairnClient[] = [];

  private constructor(
    readonly root: string,
    readonly nats: LocalNats,
    private readonly options: ClusterOptions,
  ) {}

  get natsUrl(): string {
    return this.nats.url;
  }

  static async start(options: ClusterOptions = {}): Promise<LocalCluster> {
    const root = options.root ?? await Deno.makeTempDir({ prefix: "cairn-test-" });
    fs.mkdirSync(root, { recursive: true });
    const nats = await startNatsServer({
      dataDir: `${root}/nats`,
      logFile: `${root}/nats.log`,
      port: options.natsPort,
    });
    const cluster = new LocalCluster(root, nats, { keep: options.root !== undefined, ...options });
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
      ...(this.options.serveArgs ?? []),
    ], {
      stdio: ["ignore", log, "pipe"],
      cwd: repoRoot,
      env: { ...process.env, ...nodeMallocEnv },
    });
    node.child = child;
    child.stderr!.on("data", (chunk: Uint8Array) => fs.appendFileSync(node.logFile, chunk));
    await waitForLine(child, /serving \(NATS/, nodeStartTimeoutMs);
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

  pidOf(index: number): number | undefined {
    return this.nodes[index].child?.pid;
  }

  async client(): Promise<CairnClient> {
    const client = await connectCluster({ servers: this.natsUrl, name: "cairn-test" });
    this.clients.push(client);
    return client;
  }

  /** Runs the CLI against this cluster; returns exit code and output. */
  async cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return await runCapture(
      Deno.execPath(),
      ["run", "-A", `${repoRoot}cli/main.ts`, "--nats", this.natsUrl, ...args],
      { cwd: repoRoot },
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
    for (const client of this.clients) await client.close().catch(() => {});
    this.clients = [];
    await Promise.all(this.nodes.map(async (node, i) => {
      if (!node.child || node.child.exitCode !== null || node.child.signalCode !== null) return;
      const timer = setTimeout(() => node.child?.kill("SIGKILL"), 10_000);
      await this.signalNode(i, "SIGTERM");
      clearTimeout(timer);
    }));
    await this.nats.stop();
    if (!this.options.keep) await Deno.remove(this.root, { recursive: true }).catch(() => {});
  }
}
