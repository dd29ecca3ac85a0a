/** Starts a local nats-server (JetStream on, loopback only) for one-command setups and tests. */
import { type ChildProcess, spawn } from "node:child_process";
import * as net from "node:net";
import * as fs from "node:fs";

export interface LocalNats {
  url: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
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

/** Readiness wait for a freshly started server. */
const natsStartTimeoutMs = 10_000;

export async function startNatsServer(
  options: { dataDir: string; port?: number; logFile?: string },
): Promise<LocalNats> {
  const port = options.port ?? await freePort();
  fs.mkdirSync(options.dataDir, { recursive: true });
  const args = ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", options.dataDir];
  const out = options.logFile ? fs.openSync(options.logFile, "a") : "ignore";
  let child: ChildProcess;
  try {
    child = spawn("nats-server", args, { stdio: ["ignore", out, out], detached: false });
  } catch (err) {
    throw new Error(`cannot start nats-server (is it installed?): ${(err as Error).message}`);
  }
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  const spawnError = new Promise<Error>((resolve) => child.once("error", resolve));
  const deadline = performance.now() + natsStartTimeoutMs;
  for (;;) {
    if (await portOpen(port)) break;
    const early = await Promise.race([
      exited.then((code) => new Error(`nats-server exited with ${code}`)),
      spawnError,
      new Promise<null>((r) => setTimeout(() => r(null), 50)),
    ]);
    if (early) throw new Error(`cannot start nats-server: ${early.message}`);
    if (performance.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`nats-server did not listen on ${port} within ${natsStartTimeoutMs} ms`);
    }
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
