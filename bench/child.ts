/**
 * The bench's helper processes (the echo responder, the floor's nodes): started as their own Deno
 * processes, ready once they print "ready", stopped by closing their stdin (then SIGTERM, then
 * SIGKILL), so none outlives the bench that started it.
 */
import type { NatsConnection } from "@nats-io/nats-core";

/** How long a helper may take to print "ready". */
export const childReadyTimeoutMs = 60_000;
/** How long a helper may take to exit after SIGTERM before it gets SIGKILL. */
const childStopTimeoutMs = 3000;

/** Runs `deno run -A <script> ...args` (script relative to bench/) until it prints "ready". */
export async function spawnReady(script: string, args: string[]): Promise<Deno.ChildProcess> {
  const path = new URL(script, import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", path, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let seen = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${script} not ready within ${childReadyTimeoutMs} ms`)),
        childReadyTimeoutMs,
      );
    });
    while (!seen.includes("ready")) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) throw new Error(`${script} exited before it was ready: ${seen}`);
      seen += decoder.decode(value);
    }
  } catch (err) {
    await stopChild(child);
    throw err;
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
  // Nothing more is printed, but keep the pipe drained so the child can never block on it.
  child.stdout.pipeTo(new WritableStream()).catch(() => {});
  return child;
}

/** Closes its stdin and sends SIGTERM by pid; SIGKILL if it has not exited within 3 s. */
export async function stopChild(child: Deno.ChildProcess): Promise<void> {
  try {
    await child.stdin.close();
  } catch {
    // already closed
  }
  const exited = child.status.then(() => true);
  try {
    Deno.kill(child.pid, "SIGTERM");
  } catch {
    return; // already gone
  }
  const inTime = await Promise.race([
    exited,
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), childStopTimeoutMs)),
  ]);
  if (!inTime) {
    try {
      Deno.kill(child.pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
    await child.status;
  }
}

/**
 * The helper's side: prints "ready" (its subscriptions are in place once nc flushed), then
 * serves until its stdin closes (the bench exited or stopped it) or SIGTERM, and exits.
 */
export async function serveUntilStdinCloses(
  nc: NatsConnection,
  { announce = true } = {},
): Promise<void> {
  await nc.flush();
  if (announce) console.log("ready");
  const stop = async () => {
    await nc.close().catch(() => {});
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  const buf = new Uint8Array(64);
  while ((await Deno.stdin.read(buf)) !== null) {
    // nothing to read; only EOF matters
  }
  await stop();
}
