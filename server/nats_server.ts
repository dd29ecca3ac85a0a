/**
 * Starts a local nats-server (JetStream on, loopback only) for one-command setups and tests:
 * one server, or one member of a cluster with routes to the others (each with its own
 * server name, which JetStream clustering needs).
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as net from "node:net";
import * as fs from "node:fs";
import process from "node:process";

export interface LocalNats {
  url: string;
  port: number;
  pid: number;
  /** HTTP monitoring port (`/routez`, `/connz`, `/jsz`, `/healthz`), if one was asked for. */
  monitorPort?: number;
  /** True once the process has exited. */
  readonly exited: boolean;
  /** SIGTERM (SIGKILL after 5 s); waits for the exit. */
  stop(): Promise<void>;
  /** kill -9; waits for the exit. */
  kill(): Promise<void>;
}

export interface NatsClusterMember {
  /** Cluster name shared by every member (`--cluster_name`). */
  name: string;
  /** This server's route port on 127.0.0.1. */
  port: number;
  /** Route ports of the other members (this server's own port is skipped if present). */
  routes: number[];
  /** Start-up waits for this many routes (default: one to every other member). */
  waitForRoutes?: number;
}

export interface NatsServerOptions {
  /** Store dir (JetStream keeps its files under `<dataDir>/jetstream`). */
  dataDir: string;
  /** Client port; default a free one. */
  port?: number;
  logFile?: string;
  /** Server name (`-n`); every member of a cluster needs its own. */
  serverName?: string;
  /** HTTP monitoring port (`-m`). */
  monitorPort?: number;
  /** Makes this server a member of a cluster. */
  cluster?: NatsClusterMember;
  /**
   * A config file (`-c`), e.g. an `authorization` block (server/nats_auth_config.ts); the
   * flags above take precedence over it.
   */
  configFile?: string;
  /**
   * The server's max_payload in bytes (written into a generated config, with the contents of
   * `configFile` after it); default nats-server's own, 1 MiB. Cairn recommends 8 MiB
   * (recommendedNatsMaxPayloadBytes): larger frames and replica batches.
   */
  maxPayloadBytes?: number;
}

/**
 * The config file to start the server with: `configFile` as it is, or, with maxPayloadBytes,
 * a generated one in the store dir holding max_payload and then `configFile`'s contents.
 */
function serverConfigFile(options: NatsServerOptions): string | undefined {
  if (options.maxPayloadBytes === undefined) return options.configFile;
  const path = `${options.dataDir}/cairn-nats.conf`;
  const included = options.configFile ? fs.readFileSync(options.configFile, "utf8") : "";
  fs.writeFileSync(
    path,
    `# Written by Cairn (server/nats_server.ts) at every start.\n` +
      `max_payload: ${Math.floor(options.maxPayloadBytes)}\n${included}`,
  );
  return path;
}

/** A free TCP port on 127.0.0.1 (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** GET a monitoring endpoint as JSON; null when the server does not answer. */
export async function natsMonitor<T = Record<string, unknown>>(
  monitorPort: number,
  path: string,
): Promise<T | null> {
  try {
    const response = await fetch(`http://127.0.0.1:${monitorPort}${path}`, {
      signal: AbortSignal.timeout(2000),
    });
    if (!response.ok) {
      await response.body?.cancel();
      return null;
    }
    return await response.json() as T;
  } catch {
    return null;
  }
}

/** Readiness wait for a freshly started server (listening, and routed to every other member). */
const natsStartTimeoutMs = 20_000;

export async function startNatsServer(options: NatsServerOptions): Promise<LocalNats> {
  const port = options.port ?? await freePort();
  fs.mkdirSync(options.dataDir, { recursive: true });
  const configFile = serverConfigFile(options);
  const args = [
    ...(configFile ? ["-c", configFile] : []),
    ...["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", options.dataDir],
  ];
  if (options.serverName) args.push("-n", options.serverName);
  if (options.monitorPort !== undefined) args.push("-m", String(options.monitorPort));
  const routes = options.cluster?.routes.filter((p) => p !== options.cluster!.port) ?? [];
  if (options.cluster) {
    if (!options.serverName) throw new Error("a NATS cluster member needs a server name");
    args.push(
      "--cluster",
      `nats://127.0.0.1:${options.cluster.port}`,
      "--cluster_name",
      options.cluster.name,
    );
    if (routes.length > 0) {
      args.push("--routes", routes.map((p) => `nats://127.0.0.1:${p}`).join(","));
    }
  }
  const wantRoutes = options.cluster?.waitForRoutes ?? routes.length;
  const out = options.logFile ? fs.openSync(options.logFile, "a") : "ignore";
  let child: ChildProcess;
  try {
    child = spawn("nats-server", args, { stdio: ["ignore", out, out], detached: false });
  } catch (err) {
    throw new Error(`cannot start nats-server (is it installed?): ${(err as Error).message}`);
  } finally {
    if (typeof out === "number") fs.closeSync(out);
  }
  let exitedFlag = false;
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      exitedFlag = true;
      resolve(code);
    })
  );
  const spawnError = new Promise<Error>((resolve) => child.once("error", resolve));
  const deadline = performance.now() + natsStartTimeoutMs;
  const ready = async () => {
    if (!await portOpen(port)) return false;
    if (wantRoutes === 0 || options.monitorPort === undefined) return true;
    const routez = await natsMonitor<{ num_routes?: number }>(options.monitorPort, "/routez");
    return (routez?.num_routes ?? 0) >= wantRoutes;
  };
  for (;;) {
    if (await ready()) break;
    const early = await Promise.race([
      exited.then((code) => new Error(`nats-server exited with ${code}`)),
      spawnError,
      new Promise<null>((r) => setTimeout(() => r(null), 50)),
    ]);
    if (early) throw new Error(`cannot start nats-server: ${early.message}`);
    if (performance.now() > deadline) {
      child.kill("SIGKILL");
      await exited;
      throw new Error(
        `nats-server did not listen on ${port}${
          wantRoutes > 0 ? ` with ${wantRoutes} routes` : ""
        } within ${natsStartTimeoutMs} ms`,
      );
    }
  }
  const signal = async (sig: NodeJS.Signals) => {
    if (exitedFlag) return;
    process.kill(child.pid!, sig);
    await exited;
  };
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    monitorPort: options.monitorPort,
    get exited() {
      return exitedFlag;
    },
    async stop() {
      if (exitedFlag) return;
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await signal("SIGTERM");
      clearTimeout(timer);
    },
    kill: () => signal("SIGKILL"),
  };
}
