/**
 * Issue 8, "Through the NBD gateway": a `fio --ioengine=nbd` verify job through the gateway of
 * one node keeps running while the volume's owner, another node, is killed with kill -9. A
 * successor takes the volume over, the gateway retries the requests that were in flight, and fio
 * finishes with no IO error and a verify that passes. fio's longest completion latency is the
 * failover pause the NBD client saw.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { TestCluster } from "../harness/cluster.ts";
import { nbdUri, parseListenAddress } from "../../nbd/server.ts";
import { ensureNbdTools } from "./tools.ts";

const MiB = 1024 * 1024;
const volumeName = "fio-ha";
/** Each fio job writes this much (4 KiB random writes, each block once) and verifies it all. */
const fioBytes = 40 * MiB;
/** fio runs this long before the owner is killed. */
const killAfterMs = 3_000;
/** The owner stays down this long before it is started again (fio still running). */
const downMs = 3_000;

interface FioDirection {
  io_bytes: number;
  total_ios: number;
  clat_ns: { max: number; mean: number };
}
interface FioJob {
  jobname: string;
  error: number;
  read: FioDirection;
  write: FioDirection;
}

const ms = (ns: number) => Math.round(ns / 1e6);

Deno.test({
  name: "fio verify through other nodes' gateways while the owner is killed (kill -9)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await ensureNbdTools();
    const cluster = await TestCluster.start({ nodes: 3, serveArgs: ["--nbd", "127.0.0.1:0"] });
    let fio: Deno.ChildProcess | null = null;
    let fioLog = "";
    try {
      const admin = await cluster.client();
      await admin.createVolume({ name: volumeName, sizeBytes: 128 * MiB, segmentBytes: 8 * MiB });
      const owner = (await admin.volumeInfo(volumeName)).owner;
      const ownerIndex = cluster.nodes.findIndex((n) => n.id === owner);
      assert.ok(ownerIndex >= 0, `owner ${owner} is one of the cluster's nodes`);
      // A gateway on each of the other two nodes, one fio job through each: one of those nodes
      // becomes the successor (its gateway then serves the volume in-process), the other keeps
      // going through the cluster, so both paths ride out the failover in every run.
      const gateways = cluster.nodes.filter((_, i) => i !== ownerIndex).map((node) => ({
        node: node.id,
        address: parseListenAddress(
          fs.readFileSync(`${node.dataDir}/nbd.address`, "utf8").split("\n")[0].trim(),
        ),
      }));

      const started = performance.now();
      fio = new Deno.Command("fio", {
        args: [
          // Options for every job.
          "--ioengine=nbd",
          "--rw=randwrite",
          "--bs=4k",
          "--iodepth=16",
          `--size=${fioBytes}`,
          "--verify=crc32c",
          "--verify_fatal=1",
          // Verify while writing (every 256 blocks written), not only after the last write:
          // blocks written before, during and after the failover are read back through it.
          "--verify_backlog=256",
          // fio would otherwise leave *-verify.state files in the working directory.
          "--verify_state_save=0",
          "--output-format=json",
          // One job per gateway, each on its own region of the volume.
          ...gateways.flatMap((g, i) => [
            `--name=${g.node}`,
            `--uri=${nbdUri(g.address, volumeName)}`,
            `--offset=${i * fioBytes}`,
          ]),
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      let fioExitedAt = 0;
      const fioDone = fio.output().then((out) => {
        fioExitedAt = performance.now();
        const text = new TextDecoder();
        fioLog = text.decode(out.stderr);
        return { code: out.code, stdout: text.decode(out.stdout) };
      });

      await new Promise((r) => setTimeout(r, killAfterMs));
      assert.equal(fioExitedAt, 0, "fio is still running when the owner is killed");
      await cluster.killNode(ownerIndex);
      const killedAt = performance.now();

      // Who took over, and when the control plane said so (for the report only).
      let successor = "";
      let takeoverMs = -1;
      const watch = (async () => {
        while (performance.now() - killedAt < 20_000) {
          try {
            const now = (await admin.volumeInfo(volumeName)).owner;
            if (now !== owner) {
              successor = now;
              takeoverMs = performance.now() - killedAt;
              return;
            }
          } catch { /* metadata busy: ask again */ }
          await new Promise((r) => setTimeout(r, 100));
        }
      })();

      await new Promise((r) => setTimeout(r, downMs));
      await cluster.startNode(ownerIndex);
      const restartedAt = performance.now();
      // Requests give up after 60 s without an owner (EIO), so fio cannot legitimately take longer.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const { code, stdout } = await Promise.race([
        fioDone,
        new Promise<never>((_, reject) =>
          timer = setTimeout(
            () => reject(new Error("fio still running 90 s after the restart")),
            90_000,
          )
        ),
      ]).finally(() => clearTimeout(timer));
      await watch;

      let jobs: FioJob[] = [];
      try {
        jobs = JSON.parse(stdout.slice(stdout.indexOf("{"))).jobs;
      } catch { /* no report: the assertion below shows what fio said */ }
      const summary = jobs.map((j) =>
        `${j.jobname}: error ${j.error}, ${j.write.io_bytes} bytes written, ${j.read.io_bytes} verified`
      ).join("; ");
      assert.equal(
        code,
        0,
        `fio exited ${code} (${summary || stdout.slice(-2000)}):\n${fioLog.slice(-3000)}`,
      );
      assert.equal(jobs.length, gateways.length, "one fio job per gateway");
      assert.ok(fioExitedAt > killedAt, "fio was running during the kill");
      assert.ok(successor !== "", "a successor took the volume over");
      const lines: string[] = [];
      for (const job of jobs) {
        assert.equal(job.error, 0, `no error in fio job ${job.jobname}`);
        assert.equal(job.write.io_bytes, fioBytes, `fio job ${job.jobname} wrote every block`);
        // Every block written was read back and checked (verify_fatal stops fio at a mismatch).
        assert.equal(job.read.io_bytes, job.write.io_bytes, `${job.jobname}: verify read it all`);
        const longestMs = Math.max(ms(job.write.clat_ns.max), ms(job.read.clat_ns.max));
        // The kill was felt: requests in flight at that moment waited for the successor.
        assert.ok(longestMs >= 500, `${job.jobname}: IO paused in the failover (${longestMs} ms)`);
        lines.push(
          `  via ${job.jobname}'s gateway${job.jobname === successor ? " (the successor)" : ""}: ` +
            `${job.write.total_ios} writes, clat max ${ms(job.write.clat_ns.max)} ms, mean ${
              (job.write.clat_ns.mean / 1e6).toFixed(2)
            } ms; ${job.read.total_ios} verify reads, clat max ${ms(job.read.clat_ns.max)} ms; ` +
            `longest IO completion ${longestMs} ms`,
        );
      }
      console.error(
        `owner ${owner} killed ${Math.round(killedAt - started)} ms into fio; ${successor} ` +
          `took over ${Math.round(takeoverMs)} ms after the kill (volume info); ${owner} ` +
          `restarted ${Math.round(restartedAt - killedAt)} ms after it; fio ended ${
            Math.round(fioExitedAt - killedAt)
          } ms after the kill (${((fioExitedAt - started) / 1000).toFixed(1)} s in all)\n` +
          lines.join("\n"),
      );
    } catch (err) {
      console.error(cluster.logs());
      if (fioLog) console.error(`--- fio stderr\n${fioLog.slice(-3000)}`);
      throw err;
    } finally {
      try {
        fio?.kill("SIGKILL");
      } catch { /* exited already */ }
      await fio?.status;
      await cluster.stop();
    }
  },
});
