/**
 * Ownership with real processes: planned handoff under load, read-only verify,
 * volume identity across delete and create, and node ops checked against the
 * metadata (issue: ownership and fencing done right).
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { TestCluster } from "../harness/cluster.ts";
import { CairnError } from "../../protocol/errors.ts";
import { subjects } from "../../protocol/subjects.ts";
import { encodeJson } from "../../protocol/control.ts";
import { parseListenAddress } from "../../nbd/server.ts";
import { RawNbdClient } from "../nbd/raw_client.ts";
import type { Volume } from "../../client/volume.ts";

const MiB = 1024 * 1024;
const blockBytes = 4096;

/** A block stamped with (writer, sequence): every write's bytes are unique. */
function stamp(writer: number, sequence: number): Uint8Array {
  const block = new Uint8Array(blockBytes);
  const view = new DataView(block.buffer);
  for (let at = 0; at < blockBytes; at += 8) {
    view.setUint32(at, writer + 1, true);
    view.setUint32(at + 4, sequence, true);
  }
  return block;
}

Deno.test({
  name: "ownership: handoff under load, read-only verify, volume identity, checked node ops",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const cluster = await TestCluster.start({ nodes: 3, serveArgs: ["--nbd", "127.0.0.1:0"] });
    try {
      const admin = await cluster.client();

      await t.step("volume move under load: no failed request, no lost write", async () => {
        const info = await admin.createVolume({
          name: "mv",
          sizeBytes: 64 * MiB,
          segmentBytes: 8 * MiB,
        });
        const volume = await admin.openVolume("mv");
        const blocks = (64 * MiB) / blockBytes;
        const acknowledged = new Map<number, Uint8Array>();
        const errors: string[] = [];
        let stop = false;
        let writes = 0;
        const writers = Array.from({ length: 6 }, async (_, w) => {
          // Each writer owns every 6th block, so the model has one last value per block.
          for (let sequence = 1; !stop; sequence++) {
            const block = w + 6 * ((sequence * 7919) % Math.floor(blocks / 6));
            const data = stamp(w, sequence);
            try {
              await volume.write(block * blockBytes, data);
              acknowledged.set(block, data);
              writes++;
              const back = await volume.read(block * blockBytes, blockBytes);
              if (Buffer.compare(back, data) !== 0) errors.push(`block ${block} read back differs`);
            } catch (err) {
              errors.push(`writer ${w}: ${(err as Error).message}`);
            }
          }
        });
        const waitForWrites = async (n: number) => {
          const target = writes + n;
          const deadline = performance.now() + 60_000;
          while (writes < target) {
            assert.ok(performance.now() < deadline, `only ${writes} of ${target} writes`);
            await new Promise((r) => setTimeout(r, 20));
          }
        };
        let owner = info.owner;
        let term = 0;
        await waitForWrites(200);
        for (let move = 0; move < 4; move++) {
          const to = cluster.nodes.map((n) => n.id).find((id) => id !== owner)!;
          const moved = await admin.moveVolume("mv", to);
          assert.equal(moved.owner, to);
          assert.ok(moved.term > term, `term grows with every move (${term} -> ${moved.term})`);
          owner = to;
          term = moved.term;
          await waitForWrites(200);
        }
        stop = true;
        await Promise.all(writers);
        assert.deepEqual(errors, [], "no request failed during the moves");
        for (const [block, data] of acknowledged) {
          const back = await volume.read(block * blockBytes, blockBytes);
          assert.equal(Buffer.compare(back, data), 0, `block ${block} holds its last write`);
        }
        const cli = await cluster.cli(["volume", "move", "mv", "--to", "nosuchnode"]);
        assert.equal(cli.code, 1);
        assert.match(cli.stderr, /BAD_REQUEST: no node named nosuchnode/);
        await volume.close();
      });

      await t.step("volume verify changes nothing: same term, same layout revision", async () => {
        const before = await admin.volumeInfo("mv");
        const report = await admin.verifyVolume("mv");
        assert.ok(report.ok, JSON.stringify(report.mismatches));
        const after = await admin.volumeInfo("mv");
        assert.equal(after.term, before.term);
        assert.equal(after.layoutRevision, before.layoutRevision);
        assert.equal(after.owner, before.owner);
        const volume = await admin.openVolume("mv");
        await volume.write(0, stamp(9, 9)); // the owner still serves
        await volume.close();
      });

      await t.step(
        "a stale client handle never writes into a new volume of the same name",
        async () => {
          await admin.createVolume({ name: "d1", sizeBytes: 16 * MiB, segmentBytes: 8 * MiB });
          const old = await admin.openVolume("d1");
          let stop = false;
          let refused = 0;
          let acknowledgedAfterRecreate = 0;
          let recreated = false;
          const oldWriter = (async (volume: Volume) => {
            for (let i = 0; !stop; i++) {
              try {
                await volume.write((i % 1024) * blockBytes, stamp(1, i + 1));
                if (recreated) acknowledgedAfterRecreate++;
              } catch (err) {
                assert.ok(err instanceof CairnError, String(err));
                if (err.code === "NO_SUCH_VOLUME") refused++;
                await new Promise((r) => setTimeout(r, 5));
              }
            }
          })(old);
          await new Promise((r) => setTimeout(r, 300));
          await admin.deleteVolume("d1");
          await admin.createVolume({ name: "d1", sizeBytes: 16 * MiB, segmentBytes: 8 * MiB });
          recreated = true;
          await new Promise((r) => setTimeout(r, 1500));
          stop = true;
          await oldWriter;
          assert.equal(acknowledgedAfterRecreate, 0, "the old handle wrote nothing after recreate");
          assert.ok(refused > 0, "the old handle was refused with NO_SUCH_VOLUME");
          const fresh = await admin.openVolume("d1");
          const data = await fresh.read(0, 1024 * blockBytes);
          assert.ok(data.every((b) => b === 0), "the new d1 holds none of the old writer's bytes");
          await fresh.close();
        },
      );

      await t.step(
        "a stale NBD connection never writes into a new volume of the same name",
        async () => {
          await admin.createVolume({ name: "d2", sizeBytes: 16 * MiB, segmentBytes: 8 * MiB });
          const owner = (await admin.volumeInfo("d2")).owner;
          const node = cluster.nodes.find((n) => n.id === owner)!;
          const address = parseListenAddress(
            fs.readFileSync(`${node.dataDir}/nbd.address`, "utf8").split("\n")[0].trim(),
          );
          const { client } = await RawNbdClient.open(address, "d2");
          assert.equal((await client.write(0, stamp(2, 1))).error, 0);
          await admin.deleteVolume("d2");
          await admin.createVolume({ name: "d2", sizeBytes: 16 * MiB, segmentBytes: 8 * MiB });
          const written = await client.write(0, stamp(2, 2));
          assert.notEqual(written.error, 0, "the old connection's write is refused");
          const fresh = await admin.openVolume("d2");
          assert.ok((await fresh.read(0, blockBytes)).every((b) => b === 0));
          await fresh.close();
          client.disconnect();
          await client.closed;
        },
      );

      await t.step(
        "a destructive node op on a live volume is refused and touches nothing",
        async () => {
          const info = await admin.volumeInfo("mv");
          const target = cluster.nodes[0];
          const reply = await admin.nc.request(
            subjects.node(target.id, "segments.delete"),
            encodeJson({ name: "mv", volumeId: info.id }),
            { timeout: 10_000 },
          );
          const parsed = JSON.parse(new TextDecoder().decode(reply.data));
          assert.equal(parsed.ok, false);
          assert.equal(parsed.error.code, "BAD_REQUEST");
          assert.match(parsed.error.message, /lists replicas on/);
          assert.ok(fs.existsSync(`${target.dataDir}/segments/${info.id}/000000.seg`));
          const report = await admin.verifyVolume("mv");
          assert.ok(report.ok, JSON.stringify(report.mismatches));
        },
      );
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      await cluster.stop();
    }
  },
});
