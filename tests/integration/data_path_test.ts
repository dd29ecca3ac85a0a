/**
 * Integration: a real nats-server and 3 real node processes. Data is checked
 * byte for byte against an in-memory model.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { TestCluster } from "../harness/cluster.ts";
import { CairnError } from "../../protocol/errors.ts";
import { decodeReply, encodeRequest, Op } from "../../protocol/frames.ts";
import { subjects } from "../../protocol/subjects.ts";
import { mulberry32 } from "../harness/random.ts";
import { segmentHeaderBytes, segmentMetaEntryBytes } from "../../actors/replica/segment_file.ts";

const blockSize = 4096;
const volumeBytes = 64 * 1024 * 1024;
const segmentBytes = 8 * 1024 * 1024;

function randomBytes(random: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += 4) {
    const word = (random() * 2 ** 32) >>> 0;
    out[i] = word;
    out[i + 1] = word >>> 8;
    out[i + 2] = word >>> 16;
    out[i + 3] = word >>> 24;
  }
  return out;
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

Deno.test({
  name: "3-node cluster: concurrent random writes, reads, import/export, verify, bad frames",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const cluster = await TestCluster.start({ nodes: 3 });
    try {
      const admin = await cluster.client();
      const info = await admin.createVolume({ name: "data", sizeBytes: volumeBytes, segmentBytes });
      assert.equal(info.segments.length, 8);
      for (const segment of info.segments) {
        const nodes = segment.replicas.map((r) => r.node);
        assert.equal(new Set(nodes).size, 3, "replicas of a segment on distinct nodes");
        assert.ok(segment.replicas.every((r) => r.state === "in-sync"));
      }

      const model = new Uint8Array(volumeBytes);
      await t.step("concurrent clients write random data at random aligned offsets", async () => {
        const writers = 4;
        let multis = 0;
        await Promise.all(Array.from({ length: writers }, async (_, w) => {
          const client = await cluster.client();
          const volume = await client.openVolume("data");
          const random = mulberry32(1000 + w);
          // Each writer owns the blocks whose index % writers == w, so the model is exact.
          await Promise.all(Array.from({ length: 8 }, async () => {
            for (let i = 0; i < 60; i++) {
              const blocks = 1 + Math.floor(random() * 4);
              const first = Math.floor(random() * (volumeBytes / blockSize - blocks) / writers) *
                  writers + w;
              for (let b = 0; b < blocks; b++) {
                const data = randomBytes(random, blockSize);
                const offset = (first + b * writers) * blockSize;
                if (offset + blockSize > volumeBytes) continue;
                model.set(data, offset);
                await volume.write(offset, data);
              }
            }
          }));
          multis += volume.coalescing.multis;
        }));
        // Eight writes in flight per client: some went several to a message (MULTI).
        assert.ok(multis > 0, "no write went in a MULTI");
        // Writes that cross segment boundaries and a large multi-request write.
        const volume = await admin.openVolume("data");
        const random = mulberry32(7);
        for (const offset of [segmentBytes - blockSize, 3 * segmentBytes - 2 * blockSize]) {
          const data = randomBytes(random, 4 * blockSize);
          model.set(data, offset);
          await volume.write(offset, data);
        }
        const big = randomBytes(random, 3 * 1024 * 1024 + 3 * blockSize);
        model.set(big, 5 * 1024 * 1024);
        await volume.write(5 * 1024 * 1024, big);
      });

      await t.step(
        "read back every byte from a fresh client and compare with the model",
        async () => {
          const client = await cluster.client();
          const volume = await client.openVolume("data");
          const all = await volume.read(0, volumeBytes);
          assert.equal(firstDifference(all, model), -1, "volume differs from the model");
          // Block reads, all at once (reads go alone, not in MULTIs).
          const random = mulberry32(11);
          const blocks = Array.from(
            { length: 512 },
            () => Math.floor(random() * (volumeBytes / blockSize)),
          );
          await Promise.all(blocks.map(async (block) => {
            const got = await volume.read(block * blockSize, blockSize);
            const want = model.subarray(block * blockSize, (block + 1) * blockSize);
            assert.equal(firstDifference(got, want), -1, `block ${block} differs from the model`);
          }));
        },
      );

      await t.step("trim and write-zeroes read back zeros", async () => {
        const volume = await admin.openVolume("data");
        await volume.trim(segmentBytes, 8 * blockSize);
        model.fill(0, segmentBytes, segmentBytes + 8 * blockSize);
        await volume.writeZeroes(2 * segmentBytes + blockSize, 3 * blockSize);
        model.fill(0, 2 * segmentBytes + blockSize, 2 * segmentBytes + 4 * blockSize);
        const got = await volume.read(segmentBytes - blockSize, 2 * segmentBytes);
        assert.equal(
          firstDifference(
            got,
            model.subarray(segmentBytes - blockSize, 3 * segmentBytes - blockSize),
          ),
          -1,
        );
        await volume.flush();
      });

      await t.step("CLI: volume info/list and node list as JSON", async () => {
        const info = await cluster.cli(["volume", "info", "data", "--json"]);
        assert.equal(info.code, 0, info.stderr);
        const parsed = JSON.parse(info.stdout);
        for (
          const key of [
            "name",
            "sizeBytes",
            "blockSize",
            "segmentBytes",
            "replicas",
            "id",
            "incarnation",
            "term",
            "layoutRevision",
            "owner",
          ]
        ) {
          assert.ok(key in parsed, `volume info --json has ${key}`);
        }
        assert.equal(parsed.sizeBytes, volumeBytes);
        assert.equal(parsed.segments.length, 8);
        assert.deepEqual(Object.keys(parsed.segments[0]).sort(), ["index", "replicas"]);
        assert.deepEqual(Object.keys(parsed.segments[0].replicas[0]).sort(), ["node", "state"]);
        const list = JSON.parse((await cluster.cli(["volume", "list", "--json"])).stdout);
        assert.deepEqual(list.map((v: { name: string }) => v.name), ["data"]);
        const nodes = JSON.parse((await cluster.cli(["node", "list", "--json"])).stdout);
        assert.deepEqual(nodes.map((n: { id: string }) => n.id).sort(), ["n1", "n2", "n3"]);
        assert.ok(nodes.every((n: { live: boolean; state: string }) => n.live && n.state === "up"));
        const human = await cluster.cli(["volume", "list"]);
        assert.match(human.stdout, /data\s+64 MiB\s+3/);
        const bad = await cluster.cli(["volume", "create", "x", "--size", "12 parsecs"]);
        assert.equal(bad.code, 2);
        assert.match(bad.stderr, /cannot read size/);
        const unaligned = await cluster.cli(["volume", "create", "x", "--size", "5000"]);
        assert.equal(unaligned.code, 1);
        assert.match(unaligned.stderr, /BAD_REQUEST.*multiple of 4096/);
      });

      await t.step("volume verify passes", async () => {
        const result = await cluster.cli(["volume", "verify", "data"]);
        assert.equal(result.code, 0, result.stdout + result.stderr);
        assert.match(result.stdout, /ok: 8 segments, 24 replicas agree/);
      });

      await t.step("bit rot on one replica: verify names it, reads repair it", async () => {
        const volume = await admin.openVolume("data");
        const offset = 2 * segmentBytes + 10 * blockSize; // segment 2, block 10
        const data = randomBytes(mulberry32(3), blockSize);
        model.set(data, offset);
        await volume.write(offset, data);
        const layout = await admin.volumeInfo("data");
        const owner = cluster.nodes.find((n) => n.id === layout.owner)!;
        const metaBytes = Math.ceil((segmentBytes / blockSize) * segmentMetaEntryBytes / 4096) *
          4096;
        const path = `${owner.dataDir}/segments/${layout.id}/000002.seg`;
        const fd = fs.openSync(path, "r+");
        fs.writeSync(
          fd,
          new Uint8Array([0xde, 0xad]),
          0,
          2,
          segmentHeaderBytes + metaBytes + 10 * blockSize + 100,
        );
        fs.closeSync(fd);
        const verify = await cluster.cli(["volume", "verify", "data"]);
        assert.equal(verify.code, 1);
        assert.match(
          verify.stdout,
          new RegExp(`segment 2: replica on ${owner.id} has 1 blocks failing their checksum`),
        );
        // The owner reads its own replica first (policy local), sees the rot, serves another copy.
        assert.deepEqual(new Uint8Array(await volume.read(offset, blockSize)), data);
        for (let i = 0; i < 50; i++) {
          if ((await cluster.cli(["volume", "verify", "data"])).code === 0) return;
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.fail("the rotten block was not repaired");
      });

      await t.step("import then export a 64 MiB random file: bytes equal", async () => {
        await admin.createVolume({ name: "files", sizeBytes: volumeBytes, segmentBytes });
        const dir = await Deno.makeTempDir({ prefix: "cairn-io-" });
        try {
          const input = randomBytes(mulberry32(99), volumeBytes);
          fs.writeFileSync(`${dir}/in.bin`, input);
          const imported = await cluster.cli(["import", "files", `${dir}/in.bin`]);
          assert.equal(imported.code, 0, imported.stderr);
          const exported = await cluster.cli(["export", "files", `${dir}/out.bin`]);
          assert.equal(exported.code, 0, exported.stderr);
          const output = fs.readFileSync(`${dir}/out.bin`);
          assert.equal(output.length, input.length);
          assert.equal(firstDifference(new Uint8Array(output), input), -1);
          // Partial export at an offset.
          const part = await cluster.cli([
            "export",
            "files",
            `${dir}/part.bin`,
            "--offset",
            "1MiB",
            "--length",
            "64KiB",
          ]);
          assert.equal(part.code, 0, part.stderr);
          assert.deepEqual(
            new Uint8Array(fs.readFileSync(`${dir}/part.bin`)),
            input.subarray(1024 * 1024, 1024 * 1024 + 65536),
          );
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      });

      await t.step(
        "bad frames get error replies with specific codes; nothing changes",
        async () => {
          const nc = admin.nc;
          const subject = subjects.volumeIo("data");
          const ownerIoBytes = (await (await admin.openVolume("data")).stat()).maxIoBytes;
          assert.equal(ownerIoBytes, 4 * 1024 * 1024);
          const ask = async (frame: Uint8Array) =>
            decodeReply((await nc.request(subject, frame, { timeout: 5000 })).data);
          const write = (offsetBytes: number, length: number, payloadBytes = length) =>
            encodeRequest({
              op: Op.WRITE,
              flags: 0,
              requestId: 77,
              offsetBytes,
              lengthBytes: length,
              payload: new Uint8Array(payloadBytes).fill(0xee),
            });
          const cases: [string, Uint8Array, number][] = [
            ["empty frame", new Uint8Array(0), 1],
            ["short frame", new Uint8Array(10).fill(1), 1],
            ["garbage", randomBytes(mulberry32(5), 100), 1],
            [
              "unknown op",
              (() => {
                const f = encodeRequest({
                  op: Op.READ,
                  flags: 0,
                  requestId: 1,
                  offsetBytes: 0,
                  lengthBytes: 4096,
                });
                f[1] = 99;
                return f;
              })(),
              2,
            ],
            ["unaligned offset", write(100, 4096), 3],
            ["unaligned length", write(0, 1000), 3],
            ["out of range", write(volumeBytes, 4096), 4],
            ["straddles the end", write(volumeBytes - 4096, 8192), 4],
            // Above the owner's frame limit (4 MiB with the tests' 8 MiB max_payload).
            ["oversize write", write(0, ownerIoBytes + blockSize), 5],
            ["payload shorter than length", write(0, 8192, 4096), 1],
          ];
          for (const [what, frame, code] of cases) {
            const reply = await ask(frame);
            assert.equal(reply.status, code, `${what}: status ${reply.status}`);
            assert.ok(new TextDecoder().decode(reply.payload).length > 0, `${what}: has a message`);
          }
          const volume = await admin.openVolume("data");
          const all = await volume.read(0, volumeBytes);
          assert.equal(firstDifference(all, model), -1, "bad frames changed data");
        },
      );

      await t.step("unknown volume is NO_SUCH_VOLUME", async () => {
        await assert.rejects(
          () => admin.openVolume("nope"),
          (err) => err instanceof CairnError && err.code === "NO_SUCH_VOLUME",
        );
        const cli = await cluster.cli(["volume", "info", "nope"]);
        assert.equal(cli.code, 1);
        assert.match(cli.stderr, /NO_SUCH_VOLUME/);
      });

      await t.step("more replicas than live nodes fails cleanly and creates nothing", async () => {
        await assert.rejects(
          () => admin.createVolume({ name: "toomany", sizeBytes: volumeBytes, replicas: 4 }),
          (err) => err instanceof CairnError && err.code === "NOT_ENOUGH_NODES",
        );
        const names = (await admin.listVolumes()).map((v) => v.name);
        assert.ok(!names.includes("toomany"));
        for (const node of cluster.nodes) {
          // Nothing was created: the node holds only the segment directories of live volumes.
          const live = new Set((await admin.listVolumes()).map((v) => v.id));
          for (const dir of fs.readdirSync(`${node.dataDir}/segments`)) {
            assert.ok(live.has(dir), `${node.id} holds segments of ${dir}, no live volume`);
          }
        }
        const cli = await cluster.cli([
          "volume",
          "create",
          "toomany",
          "--size",
          "64MiB",
          "--replicas",
          "5",
        ]);
        assert.equal(cli.code, 1);
        assert.match(cli.stderr, /NOT_ENOUGH_NODES/);
      });

      await t.step("delete removes the segment files on every node", async () => {
        const { id } = await admin.volumeInfo("files");
        for (const node of cluster.nodes) {
          assert.ok(fs.existsSync(`${node.dataDir}/segments/${id}`));
        }
        const cli = await cluster.cli(["volume", "delete", "files"]);
        assert.equal(cli.code, 0, cli.stderr);
        for (const node of cluster.nodes) {
          assert.ok(!fs.existsSync(`${node.dataDir}/segments/${id}`), `${node.id} kept files`);
        }
        await assert.rejects(() => admin.volumeInfo("files"), /NO_SUCH_VOLUME/);
      });
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      await cluster.stop();
    }
  },
});
