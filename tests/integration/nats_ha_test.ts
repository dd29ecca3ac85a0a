/**
 * NATS is not a single point of failure (issue 8): with three nats-servers in a cluster and
 * the metadata bucket replicated three times, kill -9 of any one server loses no metadata and
 * no acknowledged write, and IO continues once connections move; a single nats-server that
 * restarts on its store dir is ridden out by nodes and clients that keep running.
 *
 * A writer puts unique 4 KiB blocks at random offsets (each lane owns its own blocks, one
 * write in flight per block) and keeps a model of what was acknowledged; the whole volume is
 * read back at the end and compared with it. The longest gap between two acknowledged writes
 * around each fault is the IO pause, printed and bounded.
 */
import assert from "node:assert/strict";
import { TestCluster } from "../harness/cluster.ts";
import { mulberry32 } from "../harness/random.ts";
import { natsMonitor } from "../../server/nats_server.ts";
import type { CairnClient } from "../../client/client.ts";
import type { Volume } from "../../client/volume.ts";

const MiB = 1024 * 1024;
const blockBytes = 4096;
const volumeBytes = 16 * MiB;
const blockCount = volumeBytes / blockBytes;
const lanes = 4;
/** IO must be flowing again this long after a NATS server died (or came back). */
const recoveryBoundMs = 20_000;
/** A fault round lasts until this many writes started after the fault are acknowledged. */
const writesAfterFault = 150;

/** A block stamped with (lane, sequence, block): every write's bytes are unique. */
function stamp(lane: number, sequence: number, block: number): Uint8Array {
  const data = new Uint8Array(blockBytes);
  const view = new DataView(data.buffer);
  for (let at = 0; at < blockBytes; at += 16) {
    view.setUint32(at, lane + 1, true);
    view.setUint32(at + 4, sequence, true);
    view.setUint32(at + 8, block, true);
    view.setUint32(at + 12, 0xc0ffee, true);
  }
  return data;
}

function describe(data: Uint8Array): string {
  if (data.every((b) => b === 0)) return "zeros";
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return `lane ${view.getUint32(0, true) - 1} seq ${view.getUint32(4, true)} block ${
    view.getUint32(8, true)
  }`;
}

/**
 * Writers over one volume and the model of acknowledged writes. `acks` holds the time of
 * every acknowledgement, so pauses can be measured afterwards.
 */
class Writer {
  readonly acknowledged = new Map<number, Uint8Array>();
  readonly errors: string[] = [];
  readonly acks: number[] = [];
  /** Start and ack times of every acknowledged write. */
  readonly done: { startedAt: number; ackedAt: number }[] = [];
  private stopped = false;
  private readonly running: Promise<void>[];

  constructor(private readonly volume: Volume, seed: number) {
    const random = mulberry32(seed);
    this.running = Array.from({ length: lanes }, async (_, lane) => {
      for (let sequence = 1; !this.stopped; sequence++) {
        // Lane l owns the blocks b with b % lanes === l: one write in flight per block.
        const block = lane + lanes * Math.floor(random() * (blockCount / lanes));
        const data = stamp(lane, sequence, block);
        const startedAt = performance.now();
        try {
          await this.volume.write(block * blockBytes, data);
          const ackedAt = performance.now();
          this.acknowledged.set(block, data);
          this.acks.push(ackedAt);
          this.done.push({ startedAt, ackedAt });
        } catch (err) {
          // Not acknowledged: the block may hold this value or the one before; never expected.
          this.errors.push(`lane ${lane} block ${block}: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, 50)); // no hot loop on a closed client
        }
      }
    });
  }

  /** Waits until `count` writes started at or after `since` are acknowledged; returns when. */
  async waitForWritesSince(since: number, count: number, timeoutMs: number): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const after = this.done.filter((w) => w.startedAt >= since).map((w) => w.ackedAt);
      if (after.length >= count) return after.sort((a, b) => a - b)[count - 1];
      assert.ok(
        performance.now() < deadline,
        `only ${after.length} of ${count} writes started after the fault were acknowledged within ${timeoutMs} ms (errors: ${
          this.errors.slice(0, 3).join("; ")
        })`,
      );
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Longest gap between consecutive acknowledgements in [from, to]. */
  longestPauseMs(from: number, to: number): number {
    const times = [from, ...this.acks.filter((t) => t >= from && t <= to).sort((a, b) => a - b)];
    let longest = 0;
    for (let i = 1; i < times.length; i++) longest = Math.max(longest, times[i] - times[i - 1]);
    return longest;
  }

  /** Stops issuing writes (without waiting for those in flight). */
  halt(): void {
    this.stopped = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
  }

  /** Reads the whole volume back: every block holds its last acknowledged write, or zeros. */
  async verify(): Promise<void> {
    const chunk = 256 * blockBytes;
    const wrong: string[] = [];
    for (let offset = 0; offset < volumeBytes; offset += chunk) {
      const back = await this.volume.read(offset, chunk);
      for (let i = 0; i < chunk / blockBytes; i++) {
        const block = offset / blockBytes + i;
        const got = back.subarray(i * blockBytes, (i + 1) * blockBytes);
        const want = this.acknowledged.get(block) ?? new Uint8Array(blockBytes);
        if (Buffer.compare(got, want) !== 0) {
          wrong.push(`block ${block}: holds ${describe(got)}, acknowledged ${describe(want)}`);
        }
      }
    }
    assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} blocks lost an acknowledged write`);
  }
}

/** Index of the NATS server a client named `name` is connected to, or -1. */
async function serverOf(cluster: TestCluster, name: string): Promise<number> {
  for (let i = 0; i < cluster.natsCount; i++) {
    if (cluster.natsPid(i) === undefined) continue;
    const connz = await natsMonitor<{ connections?: { name?: string }[] }>(
      cluster.natsMonitorPort(i),
      "/connz?limit=1024",
    );
    if (connz?.connections?.some((c) => c.name === name)) return i;
  }
  return -1;
}

interface StreamDetail {
  name: string;
  config?: { num_replicas?: number };
  cluster?: { leader?: string; replicas?: { name: string; current: boolean }[] };
}

/** The metadata stream as a running server sees it. */
async function metadataStream(cluster: TestCluster, index: number) {
  const jsz = await natsMonitor<{ account_details?: { stream_detail?: StreamDetail[] }[] }>(
    cluster.natsMonitorPort(index),
    "/jsz?streams=true&config=true",
  );
  return jsz?.account_details?.flatMap((a) => a.stream_detail ?? [])
    .find((s) => s.name === "KV_cairn");
}

/** Waits until `check` holds (polling), or fails with `what`. */
async function eventually(what: string, timeoutMs: number, check: () => Promise<boolean>) {
  const deadline = performance.now() + timeoutMs;
  while (!await check()) {
    assert.ok(performance.now() < deadline, `${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * `volume info` and `node list` through the CLI (a fresh process given every URL) until both
 * answer (the metadata stream may be electing a new leader: a few seconds), then the metadata
 * must be whole. Returns how long it took from `since`.
 */
async function checkMetadata(cluster: TestCluster, volume: string, id: string, since: number) {
  const deadline = performance.now() + recoveryBoundMs;
  for (;;) {
    const info = await cluster.cli(["volume", "info", volume, "--json"]);
    const nodes = info.code === 0 ? await cluster.cli(["node", "list", "--json"]) : info;
    if (info.code === 0 && nodes.code === 0) {
      const parsed = JSON.parse(info.stdout);
      assert.equal(parsed.id, id, "the volume keeps its id");
      assert.equal(parsed.segments.length, volumeBytes / (8 * MiB));
      const ids = (JSON.parse(nodes.stdout) as { id: string }[]).map((n) => n.id).sort();
      assert.deepEqual(ids, cluster.nodes.map((n) => n.id).sort(), "every node is listed");
      return performance.now() - since;
    }
    assert.ok(
      performance.now() < deadline,
      `metadata answers within ${recoveryBoundMs} ms: ${info.stderr}${nodes.stderr}`,
    );
  }
}

function nodesAlive(cluster: TestCluster, pids: (number | undefined)[]) {
  cluster.nodes.forEach((node, i) => {
    assert.equal(cluster.pidOf(i), pids[i], `${node.id} was not restarted`);
    assert.ok(
      node.child && node.child.exitCode === null && node.child.signalCode === null,
      `${node.id} is still running (exit ${node.child?.exitCode}, signal ${node.child?.signalCode})`,
    );
  });
}

async function openWriter(client: CairnClient, name: string, seed: number) {
  const info = await client.createVolume({ name, sizeBytes: volumeBytes, segmentBytes: 8 * MiB });
  const volume = await client.openVolume(name);
  return { info, volume, writer: new Writer(volume, seed) };
}

Deno.test({
  name: "nats ha: kill -9 of any one of 3 nats-servers loses no metadata and no write",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await TestCluster.start({ nodes: 3, natsCluster: 3 });
    let writer: Writer | undefined;
    try {
      for (let i = 0; i < 3; i++) {
        const stream = await metadataStream(cluster, i);
        assert.equal(stream?.config?.num_replicas, 3, "the metadata bucket has 3 replicas");
      }
      const client = await cluster.client();
      const opened = await openWriter(client, "ha", 1);
      const { info, volume } = opened;
      writer = opened.writer;
      const pids = cluster.nodes.map((_, i) => cluster.pidOf(i));
      await writer.waitForWritesSince(0, 100, 20_000);

      // Round 1: the server the owner is connected to. Round 2: the metadata stream's leader.
      const rounds: { why: string; victim: () => Promise<number> }[] = [
        {
          why: "the owner's server",
          victim: async () => {
            const owner = (await client.volumeInfo("ha")).owner;
            const index = await serverOf(cluster, `cairn-node-${owner}`);
            assert.ok(index >= 0, `owner ${owner} is connected to some server`);
            return index;
          },
        },
        {
          why: "the metadata leader",
          victim: async () => {
            // The leader is the one server that says it leads (a server just restarted may
            // still name an old leader).
            let leaders: number[] = [];
            await eventually("one server leads the metadata stream", 10_000, async () => {
              const views = await Promise.all([0, 1, 2].map((i) => metadataStream(cluster, i)));
              leaders = [0, 1, 2].filter((i) =>
                views[i]?.cluster?.leader === cluster.natsServerName(i)
              );
              return leaders.length === 1;
            });
            return leaders[0];
          },
        },
      ];
      for (const round of rounds) {
        const victim = await round.victim();
        const killedAt = performance.now();
        await cluster.killNats(victim);
        const flowingAt = await writer.waitForWritesSince(
          killedAt,
          writesAfterFault,
          recoveryBoundMs,
        );
        const pause = writer.longestPauseMs(killedAt - 1000, flowingAt);
        console.log(
          `kill -9 of nats server ${victim} (${round.why}): longest IO pause ${
            Math.round(pause)
          } ms; ${writesAfterFault} new writes acknowledged ${
            Math.round(flowingAt - killedAt)
          } ms after the kill`,
        );
        const metadataMs = await checkMetadata(cluster, "ha", info.id, killedAt);
        console.log(
          `  metadata (volume info, node list) answered ${Math.round(metadataMs)} ms after`,
        );
        nodesAlive(cluster, pids);

        await cluster.startNats(victim);
        const name = cluster.natsServerName(victim);
        await eventually(
          `${name} rejoins: routes, and a current copy of the metadata`,
          20_000,
          () =>
            Promise.all([0, 1, 2].map((i) => metadataStream(cluster, i))).then((views) =>
              views.some((s) =>
                s?.cluster?.leader !== undefined &&
                (s.cluster.leader === name ||
                  s.cluster.replicas?.some((r) => r.name === name && r.current) === true)
              )
            ),
        );
        await writer.waitForWritesSince(performance.now(), 50, recoveryBoundMs);
      }

      await writer.stop();
      assert.deepEqual(writer.errors, [], "no write failed");
      await writer.verify();
      await checkMetadata(cluster, "ha", info.id, performance.now());
      await volume.close();
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      writer?.halt();
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "nats ha: a single nats-server restarting on its store dir is ridden out",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await TestCluster.start({ nodes: 3 });
    let writer: Writer | undefined;
    try {
      const client = await cluster.client();
      const opened = await openWriter(client, "solo", 2);
      const { info, volume } = opened;
      writer = opened.writer;
      const pids = cluster.nodes.map((_, i) => cluster.pidOf(i));
      await writer.waitForWritesSince(0, 100, 20_000);

      const killedAt = performance.now();
      await cluster.killNats(0);
      await new Promise((r) => setTimeout(r, 2000)); // a few seconds without NATS at all
      await cluster.startNats(0);
      const backAt = performance.now();
      const flowingAt = await writer.waitForWritesSince(backAt, writesAfterFault, recoveryBoundMs);
      const pause = writer.longestPauseMs(killedAt - 1000, flowingAt);
      console.log(
        `nats-server down ${Math.round(backAt - killedAt)} ms: longest IO pause ${
          Math.round(pause)
        } ms, ${Math.round(pause - (backAt - killedAt))} ms of it after the server was back; ${
          Math.round(flowingAt - backAt)
        } ms to ${writesAfterFault} new writes`,
      );
      nodesAlive(cluster, pids);
      const metadataMs = await checkMetadata(cluster, "solo", info.id, backAt);
      console.log(`  metadata answered ${Math.round(metadataMs)} ms after the server was back`);

      await writer.stop();
      assert.deepEqual(writer.errors, [], "no write failed");
      await writer.verify();
      nodesAlive(cluster, pids);
      await volume.close();
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      writer?.halt();
      await cluster.stop();
    }
  },
});
