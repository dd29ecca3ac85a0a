/**
 * Self-healing with real processes: a replica node killed under load is marked stale at
 * once (volume info shows it), writes go on without an error, and once it has been down
 * longer than the grace period its replicas are rebuilt on the spare node while writes
 * continue; the dead node leaves the layout, and every acknowledged write reads back.
 */
import assert from "node:assert/strict";
import { TestCluster } from "../harness/cluster.ts";
import { mulberry32 } from "../harness/random.ts";
import type { VolumeInfo } from "../../protocol/schemas.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const graceMs = 3000;

async function until<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | null | undefined | false>,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (performance.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test({
  name: "a replica node down longer than the grace period is replaced while writes go on",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const cluster = await TestCluster.start({
      nodes: 4,
      serveArgs: ["--replica-grace", `${graceMs / 1000}s`],
    });
    let stop = false;
    try {
      const client = await cluster.client();
      // Four 1 MiB segments over four nodes: every node holds some, one is spare for each.
      await client.createVolume({ name: "heal", sizeBytes: 4 * MiB, segmentBytes: MiB });
      const volume = await client.openVolume("heal");
      const info = await client.volumeInfo("heal");
      const victim = cluster.nodes.find((n) =>
        n.id !== info.owner && info.segments.some((s) => s.replicas.some((r) => r.node === n.id))
      )!;
      const random = mulberry32(11);
      const model = new Uint8Array(4 * MiB);
      // A full first pass, so the rebuild has every block to copy.
      const initial = new Uint8Array(4 * MiB).map(() => (random() * 256) | 0);
      await volume.write(0, initial);
      model.set(initial);

      const errors: string[] = [];
      let writes = 0;
      const writers = Array.from({ length: 4 }, async () => {
        while (!stop) {
          const offset = Math.floor(random() * 1024) * 4 * KiB;
          const data = new Uint8Array(4 * KiB).map(() => (random() * 256) | 0);
          try {
            await volume.write(offset, data);
            model.set(data, offset);
            writes++;
          } catch (err) {
            errors.push((err as Error).message);
          }
        }
      });

      await until("writes before the kill", 10_000, () => Promise.resolve(writes > 50));
      await cluster.killNode(cluster.nodes.indexOf(victim));
      // Seen at once: the victim's replicas are stale and the node is shown down.
      const degraded = await until("the dead node's replicas shown", 5000, async () => {
        const now = await client.volumeInfo("heal");
        const states = now.segments.flatMap((s) =>
          s.replicas.filter((r) => r.node === victim.id).map((r) => r.state)
        );
        return now.downNodes.includes(victim.id) && states.every((s) => s === "stale") && now;
      });
      assert.ok(degraded.segments.some((s) => s.replicas.some((r) => r.node === victim.id)));
      const listed = (await cluster.cli(["volume", "list"])).stdout;
      const row = listed.split("\n").find((line) => line.startsWith("heal"))!.trim().split(/\s+/);
      assert.ok(Number(row.at(-1)) > 0, `volume list counts degraded segments: ${listed}`);

      // After the grace period the victim leaves the layout and every segment has 3 in-sync.
      const healed = await until<VolumeInfo>("replicas replaced", 30_000, async () => {
        const now = await client.volumeInfo("heal");
        const whole = now.segments.every((s) =>
          s.replicas.length === 3 && s.replicas.every((r) => r.state === "in-sync") &&
          !s.replicas.some((r) => r.node === victim.id)
        );
        return whole && now;
      });
      stop = true;
      await Promise.all(writers);
      assert.deepEqual(errors, [], "no write failed");
      for (const s of healed.segments) {
        assert.equal(new Set(s.replicas.map((r) => r.node)).size, 3, "distinct nodes");
      }
      const back = await volume.read(0, 4 * MiB);
      assert.ok(Buffer.compare(back, model) === 0, "every acknowledged write reads back");
      const verify = await cluster.cli(["volume", "verify", "heal"]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
      const logs = cluster.logs();
      assert.match(logs, /replacing replicas of/);
      assert.match(logs, /rebuilt \(\d+ segments, \d+ blocks copied/);
      console.error(
        `self-healing: ${writes} writes, victim ${victim.id}; ${
          logs.match(/rebuilt \([^)]*\)/)?.[0]
        }`,
      );
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      stop = true;
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "failback: a killed owner's successor serves, and the volume moves home once it is back",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const cluster = await TestCluster.start({ nodes: 3 });
    let stop = false;
    try {
      const client = await cluster.client();
      await client.createVolume({ name: "home", sizeBytes: 4 * MiB, segmentBytes: MiB });
      const volume = await client.openVolume("home");
      const home = (await client.volumeInfo("home")).owner;
      const homeIndex = cluster.nodes.findIndex((n) => n.id === home);
      const random = mulberry32(5);
      const model = new Uint8Array(4 * MiB);
      const errors: string[] = [];
      const writer = (async () => {
        while (!stop) {
          const offset = Math.floor(random() * 1024) * 4 * KiB;
          const data = new Uint8Array(4 * KiB).map(() => (random() * 256) | 0);
          try {
            await volume.write(offset, data);
            model.set(data, offset);
          } catch (err) {
            errors.push((err as Error).message);
          }
        }
      })();
      await cluster.killNode(homeIndex);
      const successor = await until("a successor serves", 10_000, async () => {
        const info = await client.volumeInfo("home");
        return info.owner !== home && info.owner;
      });
      await cluster.startNode(homeIndex);
      // Caught up, in sync everywhere for the failback delay, then handed back.
      await until("ownership back home", 40_000, async () => {
        const info = await client.volumeInfo("home");
        return info.owner === home && info.home === home;
      });
      stop = true;
      await writer;
      assert.deepEqual(errors, [], "no write failed");
      const back = await volume.read(0, 4 * MiB);
      assert.ok(Buffer.compare(back, model) === 0, "every acknowledged write reads back");
      assert.match(cluster.logs(), new RegExp(`failing back to its home node ${home}`));
      console.error(`failback: ${home} -> ${successor} -> ${home}`);
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      stop = true;
      await cluster.stop();
    }
  },
});
