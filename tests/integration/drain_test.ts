/**
 * Drain, undrain and ok-to-stop on real processes: a drain hands off every volume the node
 * owns with no failed write, new volumes and failovers avoid the drained node, the drain
 * survives its restart (kill -9), and undrain lets it take volumes again. The pure parts
 * (successor choice, stop risks) are in tests/unit/drain_test.ts.
 */
import assert from "node:assert/strict";
import { TestCluster } from "../harness/cluster.ts";
import type { CairnClient } from "../../client/client.ts";

const MiB = 1024 * 1024;
const blockBytes = 4096;
/** A failover after kill -9 is about 1.5 s; allow for a loaded machine. */
const failoverWaitMs = 30_000;

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number) {
  const deadline = performance.now() + timeoutMs;
  while (!await check()) {
    assert.ok(performance.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function nodeState(client: CairnClient, id: string) {
  return (await client.listNodes()).find((n) => n.id === id)!;
}

Deno.test({
  name:
    "drain: volumes move off under writes, new volumes and failover avoid the node, kept across restart",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await TestCluster.start({ nodes: 4 });
    try {
      const admin = await cluster.client();
      for (const name of ["d1", "d2", "d3", "d4"]) {
        await admin.createVolume({ name, sizeBytes: 8 * MiB, replicas: 3 });
      }
      const drained = (await admin.volumeInfo("d1")).owner;
      const drainedIndex = cluster.nodes.findIndex((n) => n.id === drained);
      const ownedBefore = (await admin.listVolumes()).filter((v) => v.owner === drained);
      assert.ok(ownedBefore.length >= 1);

      let check = await cluster.cli(["node", "ok-to-stop", drained]);
      assert.equal(check.code, 1, check.stdout + check.stderr);
      assert.match(check.stdout, new RegExp(`owner +${drained} owns d1`));

      // Writes keep going through the drain; each is read back at the end.
      const volume = await admin.openVolume("d1");
      const written = new Map<number, number>();
      const errors: string[] = [];
      let stop = false;
      const writer = (async () => {
        for (let sequence = 1; !stop; sequence++) {
          const block = sequence % 512;
          try {
            await volume.write(block * blockBytes, new Uint8Array(blockBytes).fill(sequence % 251));
            written.set(block, sequence % 251);
          } catch (err) {
            errors.push((err as Error).message);
          }
        }
      })();
      await new Promise((r) => setTimeout(r, 300));
      const drain = await cluster.cli(["node", "drain", drained]);
      stop = true;
      await writer;
      assert.equal(drain.code, 0, drain.stdout + drain.stderr);
      assert.match(drain.stdout, /moved d1 to n\d/);
      assert.match(drain.stdout, new RegExp(`ok to stop ${drained}`));
      assert.deepEqual(errors, [], "no write fails during a drain");
      assert.ok(written.size > 0);
      for (const [block, fill] of written) {
        const back = await volume.read(block * blockBytes, blockBytes);
        assert.ok(back.every((b) => b === fill), `block ${block} reads back what was written`);
      }
      let volumes = await admin.listVolumes();
      assert.deepEqual(volumes.filter((v) => v.owner === drained).map((v) => v.name), []);
      for (const v of ownedBefore) {
        assert.notEqual(volumes.find((x) => x.name === v.name)!.home, drained, "rehomed");
      }
      assert.equal((await nodeState(admin, drained)).state, "draining");
      check = await cluster.cli(["node", "ok-to-stop", drained, "--json"]);
      assert.equal(check.code, 0, check.stdout + check.stderr);
      assert.equal(JSON.parse(check.stdout).okToStop, true);

      // New volumes are placed on the three others (3 replicas of 4 nodes: by chance each
      // would include the drained node 3 times in 4).
      for (const name of ["n-a", "n-b", "n-c"]) {
        const info = await admin.createVolume({ name, sizeBytes: 4 * MiB, replicas: 3 });
        const nodes = info.segments.flatMap((s) => s.replicas.map((r) => r.node));
        assert.ok(!nodes.includes(drained), `${name} placed on ${nodes}`);
      }

      // Drained across a kill -9 and restart; nothing fails back to it.
      await cluster.killNode(drainedIndex);
      await cluster.startNode(drainedIndex);
      await waitFor("the drained node to be live", async () => {
        const n = await nodeState(admin, drained);
        return n.live && n.state === "draining";
      }, failoverWaitMs);
      assert.equal((await nodeState(admin, drained)).drained, true);

      // A failover of d1 picks an undrained successor even though the drained node holds
      // every segment in sync.
      const d1 = await admin.volumeInfo("d1");
      const owner = cluster.nodes.findIndex((n) => n.id === d1.owner);
      const holders = d1.segments[0].replicas.map((r) => r.node);
      await cluster.killNode(owner);
      await waitFor("d1 to fail over", async () => {
        const info = await admin.volumeInfo("d1").catch(() => null);
        return info !== null && info.owner !== d1.owner && info.term > d1.term;
      }, failoverWaitMs);
      const after = await admin.volumeInfo("d1");
      if (holders.includes(drained)) assert.notEqual(after.owner, drained);
      await cluster.startNode(owner);

      const undrain = await cluster.cli(["node", "undrain", drained]);
      assert.equal(undrain.code, 0, undrain.stdout + undrain.stderr);
      const node = await nodeState(admin, drained);
      assert.equal(node.drained, false);
      assert.equal(node.state, "up");
      volumes = await admin.listVolumes();
      assert.equal(volumes.length, 7);

      const unknown = await cluster.cli(["node", "drain", "nope"]);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /NO_SUCH_NODE: no node named nope/);
    } finally {
      await cluster.stop();
    }
  },
});
