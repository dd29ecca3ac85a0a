/**
 * Crash safety: kill -9 every node while clients write, restart them, and
 * every acknowledged write must read back; replicas must agree (verify).
 */
import assert from "node:assert/strict";
import { TestCluster } from "../harness/cluster.ts";
import { mulberry32 } from "../harness/random.ts";
import { directWriteMinBytes } from "../../actors/replica/host.ts";

const blockSize = 4096;
const volumeBytes = 32 * 1024 * 1024;
const blockCount = volumeBytes / blockSize;
/** Whole-chunk writes are directWriteMinBytes long: the replica hosts write them in place. */
const chunkBlocks = directWriteMinBytes / blockSize;

/** Fills a block with a pattern derived from (block, generation) so any value can be recognized. */
function pattern(block: number, generation: number): Uint8Array {
  const out = new Uint8Array(blockSize);
  const view = new DataView(out.buffer);
  for (let i = 0; i < blockSize; i += 8) {
    view.setUint32(i, block, true);
    view.setUint32(i + 4, generation * 2654435761 + i, true);
  }
  return out;
}

Deno.test({
  name:
    "kill -9 all nodes during small and large writes: every acknowledged write survives, replicas agree",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await TestCluster.start({ nodes: 3 });
    try {
      const client = await cluster.client();
      await client.createVolume({
        name: "crash",
        sizeBytes: volumeBytes,
        segmentBytes: 4 * 1024 * 1024,
      });
      const volume = await client.openVolume("crash", { maxInFlight: 32 });
      /** Last acknowledged generation per block (0 = never written). */
      const acked = new Uint32Array(blockCount);
      /** Generation in flight per block (0 = none): after the crash it may or may not be there. */
      const inFlight = new Uint32Array(blockCount);
      const random = mulberry32(42);
      let stop = false;
      let writesAcked = 0;
      let writesFailed = 0;
      const writers = Array.from({ length: 16 }, async (_, w) => {
        let generation = 1;
        while (!stop) {
          // Writer w owns the chunks with index % 16 == w: no two writers race on a block.
          // A quarter of the writes cover a whole chunk (64 KiB: written in place, not
          // journaled); the rest one block of it (journaled), so both kinds overwrite each other.
          const chunk = Math.floor(random() * (blockCount / chunkBlocks / 16)) * 16 + w;
          const whole = random() < 0.25;
          const first = chunk * chunkBlocks + (whole ? 0 : Math.floor(random() * chunkBlocks));
          const count = whole ? chunkBlocks : 1;
          if (inFlight.subarray(first, first + count).some((g) => g !== 0)) continue;
          generation++;
          const data = new Uint8Array(count * blockSize);
          for (let i = 0; i < count; i++) {
            inFlight[first + i] = generation;
            data.set(pattern(first + i, generation), i * blockSize);
          }
          try {
            await volume.write(first * blockSize, data);
            acked.fill(generation, first, first + count);
            inFlight.fill(0, first, first + count);
            writesAcked++;
          } catch {
            // Not acknowledged: the blocks may hold either value; keep inFlight set.
            writesFailed++;
            break;
          }
        }
      });
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(writesAcked > 100, `only ${writesAcked} writes before the crash`);
      await Promise.all(cluster.nodes.map((_, i) => cluster.killNode(i)));
      stop = true;
      // Writers blocked in retries give up once the deadline passes; do not wait for them.
      const ackedAtCrash = writesAcked;
      const ackedSnapshot = acked.slice();
      const inFlightSnapshot = inFlight.slice();
      const restartMs = performance.now();
      await Promise.all(cluster.nodes.map((_, i) => cluster.startNode(i)));
      console.log(`nodes restarted in ${Math.round(performance.now() - restartMs)} ms`);
      // Writers retrying across the restart may now complete: they count as either.
      await Promise.race([Promise.all(writers), new Promise((r) => setTimeout(r, 20_000))]);

      console.log(`writers done ${Math.round(performance.now() - restartMs)} ms after restart`);
      const fresh = await cluster.client();
      const reader = await fresh.openVolume("crash");
      const all = await reader.read(0, volumeBytes);
      let checked = 0;
      for (let block = 0; block < blockCount; block++) {
        const got = all.subarray(block * blockSize, (block + 1) * blockSize);
        const allowed = [
          ackedSnapshot[block],
          acked[block],
          inFlightSnapshot[block],
          inFlight[block],
        ]
          .filter((g, i, a) => a.indexOf(g) === i);
        const matches = allowed.some((g) => {
          const expected = g === 0 ? new Uint8Array(blockSize) : pattern(block, g);
          return expected.every((b, i) => b === got[i]);
        });
        assert.ok(
          matches,
          `block ${block} holds neither acknowledged generation ${
            ackedSnapshot[block]
          } nor an in-flight one`,
        );
        if (ackedSnapshot[block]) checked++;
      }
      assert.ok(checked > 100, `${checked} blocks with acknowledged writes checked`);
      console.log(
        `${ackedAtCrash} writes acknowledged before kill -9, ${checked} blocks verified, ${writesFailed} writers gave up`,
      );

      console.log(`read back ${Math.round(performance.now() - restartMs)} ms after restart`);
      const verify = await cluster.cli(["volume", "verify", "crash"]);
      console.log(`verified ${Math.round(performance.now() - restartMs)} ms after restart`);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      const stopMs = performance.now();
      await cluster.stop();
      console.log(`cluster stopped in ${Math.round(performance.now() - stopMs)} ms`);
    }
  },
});

Deno.test({
  name: "a replica node killed and restarted while IO goes on is caught up and back in sync",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await TestCluster.start({ nodes: 3 });
    try {
      const client = await cluster.client();
      const info = await client.createVolume({
        name: "heal",
        sizeBytes: volumeBytes,
        segmentBytes: 4 * 1024 * 1024,
      });
      const victim = cluster.nodes.findIndex((n) => n.id !== info.owner);
      const volume = await client.openVolume("heal");
      const model = new Uint8Array(volumeBytes);
      const random = mulberry32(9);
      const writeSome = async (count: number, generation: number) => {
        await Promise.all(Array.from({ length: 8 }, async (_, w) => {
          for (let i = 0; i < count; i++) {
            const block = Math.floor(random() * (blockCount / 8)) * 8 + w;
            const data = pattern(block, generation + i);
            model.set(data, block * blockSize);
            await volume.write(block * blockSize, data);
          }
        }));
      };
      await writeSome(50, 1);
      await cluster.killNode(victim);
      // Writes go on with 2 of 3 replicas (minInSync 2); the dead one is marked stale.
      await writeSome(100, 1000);
      await volume.trim(0, 64 * blockSize);
      model.fill(0, 0, 64 * blockSize);
      const degraded = await client.volumeInfo("heal");
      const victimId = cluster.nodes[victim].id;
      assert.ok(
        degraded.segments.some((s) =>
          s.replicas.some((r) => r.node === victimId && r.state === "stale")
        ),
        "the dead node's replicas are stale",
      );
      await cluster.startNode(victim);
      // Keep writing while the owner catches the replica up.
      const during = writeSome(100, 5000);
      let healthy = false;
      for (let i = 0; i < 100 && !healthy; i++) {
        await new Promise((r) => setTimeout(r, 200));
        const now = await client.volumeInfo("heal");
        healthy = now.segments.every((s) => s.replicas.every((r) => r.state === "in-sync"));
      }
      await during;
      assert.ok(healthy, "replicas are back in sync");
      const verify = await cluster.cli(["volume", "verify", "heal"]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
      const all = await volume.read(0, volumeBytes);
      assert.ok(all.every((b, i) => b === model[i]), "data matches the model");
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      await cluster.stop();
    }
  },
});
