/**
 * A paused owner (SIGSTOP for 10 s under writes) is replaced, and when it resumes it neither
 * completes a write nor judges its replicas by the timers that ran while it was stopped: no
 * write fails, no healthy replica is marked stale by it, and every acknowledged write reads
 * back. (Tried as a new user would, the old code marked both healthy replicas stale on resume
 * and then failed 1,211 writes with UNAVAILABLE.)
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { TestCluster } from "../harness/cluster.ts";
import { mulberry32 } from "../harness/random.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const pauseMs = 10_000;

Deno.test({
  name: "an owner paused for 10 s under writes is replaced and, resumed, harms nothing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const cluster = await TestCluster.start({ nodes: 3 });
    let stop = false;
    try {
      const client = await cluster.client();
      await client.createVolume({ name: "pz", sizeBytes: 4 * MiB, segmentBytes: MiB });
      const volume = await client.openVolume("pz");
      const owner = (await client.volumeInfo("pz")).owner;
      const ownerIndex = cluster.nodes.findIndex((n) => n.id === owner);
      const random = mulberry32(21);
      const model = new Uint8Array(4 * MiB);
      const errors: string[] = [];
      let writes = 0;
      let longestMs = 0;
      const writers = Array.from({ length: 8 }, async (_, w) => {
        while (!stop) {
          // Each writer owns its blocks, so the model is exact.
          const block = w + 8 * Math.floor(random() * 128);
          const data = new Uint8Array(4 * KiB).map(() => (random() * 256) | 0);
          const started = performance.now();
          try {
            await volume.write(block * 4 * KiB, data);
            model.set(data, block * 4 * KiB);
            writes++;
          } catch (err) {
            errors.push((err as Error).message);
          }
          longestMs = Math.max(longestMs, performance.now() - started);
        }
      });
      while (writes < 200) await new Promise((r) => setTimeout(r, 20));
      await cluster.pauseNode(ownerIndex);
      await new Promise((r) => setTimeout(r, pauseMs));
      const logBytes = fs.statSync(cluster.nodes[ownerIndex].logFile).size;
      await cluster.resumeNode(ownerIndex);
      const resumedWrites = writes;
      await new Promise((r) => setTimeout(r, 5000));
      stop = true;
      await Promise.all(writers);
      assert.deepEqual(errors, [], "no write failed");
      assert.ok(writes > resumedWrites + 100, "writes went on after the resume");
      const info = await client.volumeInfo("pz");
      assert.notEqual(info.owner, owner, "a successor took the paused owner's volume");
      // What the resumed node logged: no replica of anyone marked stale by its old actor.
      const after = fs.readFileSync(cluster.nodes[ownerIndex].logFile, "utf8").slice(logBytes);
      assert.doesNotMatch(after, /marked \S+ stale/, `after the resume:\n${after}`);
      const back = await volume.read(0, 4 * MiB);
      assert.ok(Buffer.compare(back, model) === 0, "every acknowledged write reads back");
      const verify = await cluster.cli(["volume", "verify", "pz"]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
      console.error(
        `pause: ${writes} writes, longest ${Math.round(longestMs)} ms; ${owner} -> ${info.owner}`,
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
