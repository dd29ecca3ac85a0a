/**
 * Real NBD clients against a real 3-node cluster whose nodes run the gateway (`serve --nbd`):
 * nbdinfo, qemu-img, qemu-io, nbdcopy, fio with verification, and raw sockets. Some steps go
 * through the owner node's gateway (in-process IO), others through another node's (over NATS).
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { TestCluster } from "../harness/cluster.ts";
import { ensureNbdTools, mustRun, runTool } from "./tools.ts";
import { RawNbdClient } from "./raw_client.ts";
import { checkBadInput } from "./bad_input.ts";
import { type ListenAddress, parseListenAddress } from "../../nbd/server.ts";
import { TransmissionFlag } from "../../nbd/protocol.ts";
import { mulberry32 } from "../harness/random.ts";

const MiB = 1024 * 1024;
const segmentBytes = 8 * MiB;

function randomFile(path: string, sizeBytes: number): Uint8Array {
  const data = new Uint8Array(sizeBytes);
  for (let at = 0; at < sizeBytes; at += 65536) {
    crypto.getRandomValues(data.subarray(at, Math.min(at + 65536, sizeBytes)));
  }
  fs.writeFileSync(path, data);
  return data;
}

function assertSameFile(path: string, expected: Uint8Array): void {
  const actual = fs.readFileSync(path);
  assert.equal(actual.byteLength, expected.byteLength, `${path} size`);
  const same = Buffer.compare(actual, expected) === 0;
  if (!same) {
    let first = 0;
    while (actual[first] === expected[first]) first++;
    assert.fail(`${path} differs from the source, first at byte ${first}`);
  }
}

function fioJobs(report: string): { error: number; name: string }[] {
  return JSON.parse(report.slice(report.indexOf("{"))).jobs;
}

Deno.test({
  name: "real NBD clients against a 3-node cluster",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await ensureNbdTools();
    const cluster = await TestCluster.start({ nodes: 3, serveArgs: ["--nbd", "127.0.0.1:0"] });
    const work = await Deno.makeTempDir({ prefix: "cairn-nbd-tools-" });
    try {
      const admin = await cluster.client();
      const volumes = { disk: 64 * MiB, img: 32 * MiB, copy: 32 * MiB };
      const owners = new Map<string, string>();
      for (const [name, sizeBytes] of Object.entries(volumes)) {
        owners.set(name, (await admin.createVolume({ name, sizeBytes, segmentBytes })).owner);
      }
      const addressOf = (nodeId: string): ListenAddress => {
        const node = cluster.nodes.find((n) => n.id === nodeId)!;
        const text = fs.readFileSync(`${node.dataDir}/nbd.address`, "utf8").split("\n")[0];
        return parseListenAddress(text.trim());
      };
      const hostPort = (a: ListenAddress) => "port" in a ? `127.0.0.1:${a.port}` : "";
      /** The gateway on the volume's owner (in-process IO) and one on another node (NATS). */
      const gateways = (volume: string) => {
        const owner = owners.get(volume)!;
        const other = cluster.nodes.find((n) => n.id !== owner)!.id;
        return { owner: hostPort(addressOf(owner)), other: hostPort(addressOf(other)) };
      };

      await t.step("nbdinfo --list shows every volume with its size", async () => {
        const out = await mustRun("nbdinfo", [
          "--list",
          "--json",
          `nbd://${gateways("disk").other}`,
        ]);
        const listed = JSON.parse(out).exports as {
          "export-name": string;
          "export-size": number;
          description?: string;
          block_size_minimum?: number;
          block_size_preferred?: number;
          block_size_maximum?: number;
          can_multi_conn?: boolean;
        }[];
        for (const [name, sizeBytes] of Object.entries(volumes)) {
          const entry = listed.find((e) => e["export-name"] === name);
          assert.ok(entry, `${name} listed`);
          assert.equal(entry["export-size"], sizeBytes);
          assert.match(entry.description ?? "", /Cairn volume/);
        }
        const disk = listed.find((e) => e["export-name"] === "disk")!;
        assert.equal(disk.block_size_minimum, 512);
        assert.equal(disk.block_size_preferred, 4096);
        assert.equal(disk.block_size_maximum, 32 * MiB);
        assert.equal(disk.can_multi_conn, true);
        // The plain listing a person reads.
        const text = await mustRun("nbdinfo", ["--list", `nbd://${gateways("disk").owner}`]);
        assert.match(text, /export="disk"/);
        assert.match(text, /export-size: 67108864/);
      });

      await t.step("qemu-img convert a random image in and back out: bytes equal", async () => {
        const { owner, other } = gateways("img");
        const source = randomFile(`${work}/src.img`, volumes.img);
        await mustRun("qemu-img", [
          "convert",
          "-n",
          "-f",
          "raw",
          "-O",
          "raw",
          `${work}/src.img`,
          `nbd://${other}/img`,
        ]);
        await mustRun("qemu-img", [
          "convert",
          "-f",
          "raw",
          "-O",
          "raw",
          `nbd://${owner}/img`,
          `${work}/out.img`,
        ]);
        assertSameFile(`${work}/out.img`, source);
        const compare = await runTool("qemu-img", [
          "compare",
          "-f",
          "raw",
          "-F",
          "raw",
          `${work}/src.img`,
          `nbd://${other}/img`,
        ]);
        assert.equal(compare.code, 0, compare.stdout + compare.stderr);
      });

      await t.step("qemu-io writes and reads patterns at 512 and 4096 bytes", async () => {
        const { owner, other } = gateways("disk");
        const base = 48 * MiB;
        const writes = [
          `write -P 0x5a ${base} 4k`,
          `write -P 0x11 ${base + 4096} 512`,
          `write -P 0x22 ${base + 4608} 512`,
          `write -P 0x33 ${base + 8192 + 3584} 1024`, // crosses a 4096 boundary
          `write -P 0x44 ${base + 16384} 64k`,
          `write -P 0x55 ${base + 16384 + 1536} 512`, // inside the 64k just written
          `write -z ${base + 16384 + 8192} 4k`,
        ];
        const reads = [
          `read -P 0x5a ${base} 4k`,
          `read -P 0x11 ${base + 4096} 512`,
          `read -P 0x22 ${base + 4608} 512`,
          `read -P 0x00 ${base + 5120} 3072`,
          `read -P 0x33 ${base + 8192 + 3584} 1024`,
          `read -P 0x44 ${base + 16384} 1536`,
          `read -P 0x55 ${base + 16384 + 1536} 512`,
          `read -P 0x44 ${base + 16384 + 2048} 6144`,
          `read -P 0x00 ${base + 16384 + 8192} 4k`,
          `read -P 0x44 ${base + 16384 + 12288} 52k`,
        ];
        for (const [writer, reader] of [[owner, other], [other, owner]]) {
          const w = await runTool("qemu-io", [
            "-f",
            "raw",
            ...writes.flatMap((c) => ["-c", c]),
            `nbd://${writer}/disk`,
          ]);
          assert.equal(w.code, 0, w.stdout + w.stderr);
          const r = await runTool("qemu-io", [
            "-f",
            "raw",
            ...reads.flatMap((c) => ["-c", c]),
            `nbd://${reader}/disk`,
          ]);
          assert.equal(r.code, 0, r.stdout + r.stderr);
          assert.doesNotMatch(r.stdout + r.stderr, /verification failed|error/i);
          assert.equal((r.stdout.match(/^read /gm) ?? []).length, reads.length, r.stdout);
        }
      });

      await t.step("nbdcopy in both directions: bytes equal", async () => {
        const { owner, other } = gateways("copy");
        const source = randomFile(`${work}/copy-src.img`, volumes.copy);
        await mustRun("nbdcopy", [`${work}/copy-src.img`, `nbd://${owner}/copy`]);
        await mustRun("nbdcopy", [`nbd://${other}/copy`, `${work}/copy-out.img`]);
        assertSameFile(`${work}/copy-out.img`, source);
        // And volume to volume through two gateways.
        await mustRun("nbdcopy", [`nbd://${other}/copy`, `nbd://${owner}/img`]);
        await mustRun("nbdcopy", [`nbd://${other}/img`, `${work}/copy-out2.img`]);
        assertSameFile(`${work}/copy-out2.img`, source);
      });

      for (const bs of [4096, 512]) {
        await t.step(
          `fio random writes with crc32c verify, 4 jobs, iodepth 16, bs ${bs}`,
          async () => {
            const { owner, other } = gateways("disk");
            const perJob = bs === 4096 ? 4 * MiB : 1 * MiB;
            for (const gateway of [owner, other]) {
              const out = await mustRun("fio", [
                "--name=verify",
                "--ioengine=nbd",
                `--uri=nbd://${gateway}/disk`,
                "--rw=randwrite",
                `--bs=${bs}`,
                "--iodepth=16",
                "--numjobs=4",
                `--size=${perJob}`,
                `--offset_increment=${perJob}`,
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                // fio would otherwise leave *-verify.state files in the working directory.
                "--verify_state_save=0",
                "--output-format=json",
              ]);
              const jobs = fioJobs(out);
              assert.equal(jobs.length, 4);
              for (const job of jobs) assert.equal(job.error, 0, JSON.stringify(job).slice(0, 500));
            }
          },
        );
      }

      await t.step(
        "sub-block writes to shared blocks from four connections: none lost",
        async () => {
          // Read-modify-write is protected among the connections of one gateway (see docs/NBD.md),
          // so each gateway gets its own blocks here.
          const { owner, other } = gateways("disk");
          for (const [index, gateway] of [other, owner].entries()) {
            const address = parseListenAddress(gateway);
            const clients = await Promise.all(
              [0, 1, 2, 3].map(async () => (await RawNbdClient.open(address, "disk")).client),
            );
            assert.ok(
              (await RawNbdClient.infoOf(address, "disk")).flags & TransmissionFlag.CAN_MULTI_CONN,
            );
            const base = (40 + index) * MiB;
            const random = mulberry32(77 + index);
            const model = new Uint8Array(16 * 4096).map(() => (random() * 256) | 0);
            // Every sector of 16 blocks written once, in random order, spread over the connections.
            const order = [...Array(model.byteLength / 512).keys()].sort(() => random() - 0.5);
            const replies = await Promise.all(
              order.map((sector, i) =>
                clients[i % clients.length].write(
                  base + sector * 512,
                  model.subarray(sector * 512, (sector + 1) * 512),
                )
              ),
            );
            assert.ok(replies.every((r) => r.error === 0));
            for (const client of clients) {
              const read = await client.readAt(base, model.byteLength);
              assert.equal(read.error, 0);
              assert.deepEqual(read.data, model);
            }
            for (const client of clients) {
              client.disconnect();
              await client.closed;
            }
          }
        },
      );

      await t.step("bad input over raw sockets (cluster-backed gateway)", async (t2) => {
        await checkBadInput(t2, parseListenAddress(gateways("disk").other), "disk", volumes.disk);
      });
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      await cluster.stop();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
