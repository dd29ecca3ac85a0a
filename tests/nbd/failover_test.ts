/**
 * The gateway is only a client of the volume: when the volume's owner is killed (kill -9) and
 * restarted, NBD connections through a standalone gateway (`cairn nbd`) and through another
 * node's gateway (`serve --nbd`) stay open and their requests are retried. The NBD client sees
 * a pause, not an error.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { type ChildProcess, spawn } from "node:child_process";
import { TestCluster } from "../harness/cluster.ts";
import { type ListenAddress, nbdUri, parseListenAddress } from "../../nbd/server.ts";
import { RawNbdClient } from "./raw_client.ts";
import { ensureNbdTools, mustRun } from "./tools.ts";
import { mulberry32 } from "../harness/random.ts";

const MiB = 1024 * 1024;
const repoRoot = new URL("../../", import.meta.url).pathname;

async function startStandaloneGateway(
  natsUrl: string,
  root: string,
): Promise<
  { child: ChildProcess; address: ListenAddress; unix: ListenAddress; stop(): Promise<void> }
> {
  const addressFile = `${root}/gateway.address`;
  const log = fs.openSync(`${root}/gateway.log`, "a");
  const child = spawn(Deno.execPath(), [
    "run",
    "-A",
    `${repoRoot}cli/main.ts`,
    "--nats",
    natsUrl,
    "nbd",
    "--listen",
    `127.0.0.1:0,unix:${root}/gateway.sock`,
    "--address-file",
    addressFile,
  ], { cwd: repoRoot, stdio: ["ignore", log, log] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = performance.now() + 30_000;
  while (!fs.existsSync(addressFile)) {
    if (child.exitCode !== null) throw new Error("gateway exited before listening");
    if (performance.now() > deadline) throw new Error("gateway did not listen within 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  const [tcp, unix] = fs.readFileSync(addressFile, "utf8").trim().split("\n");
  return {
    child,
    address: parseListenAddress(tcp),
    unix: parseListenAddress(unix),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid!, "SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

Deno.test({
  name: "owner killed and restarted: NBD connection stays open, IO pauses then completes",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await ensureNbdTools();
    const cluster = await TestCluster.start({ nodes: 3, serveArgs: ["--nbd", "127.0.0.1:0"] });
    let gateway: Awaited<ReturnType<typeof startStandaloneGateway>> | null = null;
    try {
      const admin = await cluster.client();
      const volumeBytes = 64 * MiB;
      const info = await admin.createVolume({
        name: "ha",
        sizeBytes: volumeBytes,
        segmentBytes: 8 * MiB,
      });
      const ownerIndex = cluster.nodes.findIndex((n) => n.id === info.owner);
      gateway = await startStandaloneGateway(cluster.natsUrl, cluster.root);
      const other = cluster.nodes[(ownerIndex + 1) % cluster.nodes.length];
      const nodeGateway = parseListenAddress(
        fs.readFileSync(`${other.dataDir}/nbd.address`, "utf8").split("\n")[0].trim(),
      );
      const { client: standalone } = await RawNbdClient.open(gateway.address, "ha", {
        structured: true,
      });
      const { client: viaNode } = await RawNbdClient.open(nodeGateway, "ha");
      const clients = [standalone, viaNode];

      // Eight writers, each with its own 1 MiB region; every write is read back and checked.
      const model = new Uint8Array(volumeBytes);
      const workers = 8;
      let stop = false;
      let ops = 0;
      let maxLatencyMs = 0;
      const errors: string[] = [];
      const loops = Array.from({ length: workers }, async (_, w) => {
        const client = clients[w % clients.length];
        const random = mulberry32(500 + w);
        while (!stop) {
          // 512-byte and 4096-byte IO, so sub-block read-modify-write is retried too.
          const small = random() < 0.3;
          const length = small ? 512 : 4096;
          const slots = MiB / length;
          const offset = w * MiB + Math.floor(random() * slots) * length;
          const data = new Uint8Array(length).map(() => (random() * 256) | 0);
          const started = performance.now();
          const written = await client.write(offset, data);
          const read = await client.readAt(offset, length);
          maxLatencyMs = Math.max(maxLatencyMs, performance.now() - started);
          if (written.error || read.error) {
            errors.push(`at ${offset}: write ${written.error} read ${read.error} ${read.message}`);
            continue;
          }
          model.set(data, offset);
          if (Buffer.compare(read.data, data) !== 0) errors.push(`at ${offset}: read back differs`);
          ops++;
        }
      });

      const waitForOps = async (n: number, what: string) => {
        const target = ops + n;
        const deadline = performance.now() + 90_000;
        while (ops < target) {
          assert.ok(performance.now() < deadline, `${what}: only ${ops} of ${target} ops`);
          for (const client of clients) assert.ok(!client.isClosed, "NBD connections stay open");
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await waitForOps(300, "before the kill");
      await cluster.killNode(ownerIndex);
      const killedAt = performance.now();
      await new Promise((r) => setTimeout(r, 1000));
      await cluster.startNode(ownerIndex);
      await waitForOps(300, "after the restart");
      stop = true;
      await Promise.all(loops);
      const pauseMs = performance.now() - killedAt;

      assert.deepEqual(errors, [], "no NBD request failed");
      for (const client of clients) assert.ok(!client.isClosed, "NBD connections stayed open");
      assert.ok(maxLatencyMs >= 500, `IO paused while the owner was gone (max ${maxLatencyMs} ms)`);
      // Everything acknowledged is there, read back in one go per region.
      for (let w = 0; w < workers; w++) {
        const read = await clients[(w + 1) % clients.length].readAt(w * MiB, MiB);
        assert.equal(read.error, 0);
        assert.equal(Buffer.compare(read.data, model.subarray(w * MiB, (w + 1) * MiB)), 0);
      }
      for (const client of clients) {
        client.disconnect();
        await client.closed;
      }

      // And a real client through the same gateway, on its Unix socket, after the failover.
      const out = await mustRun("fio", [
        "--name=after",
        "--ioengine=nbd",
        `--uri=${nbdUri(gateway.unix, "ha")}`,
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=16",
        "--size=4m",
        "--offset=32m",
        "--verify=crc32c",
        "--verify_fatal=1",
        // fio would otherwise leave *-verify.state files in the working directory.
        "--verify_state_save=0",
        "--output-format=json",
      ]);
      assert.equal(JSON.parse(out.slice(out.indexOf("{"))).jobs[0].error, 0);
      console.error(
        `failover: ${ops} ops, longest request ${Math.round(maxLatencyMs)} ms, ${
          Math.round(pauseMs)
        } ms from kill to the end`,
      );
    } catch (err) {
      console.error(cluster.logs());
      try {
        console.error(fs.readFileSync(`${cluster.root}/gateway.log`, "utf8").slice(-4000));
      } catch { /* no log */ }
      throw err;
    } finally {
      await gateway?.stop();
      await cluster.stop();
    }
  },
});
