/**
 * Integration: 3 real node processes serving `/metrics` (`serve --metrics 127.0.0.1:0`).
 * Every node's exposition passes `promtool check metrics`, and a real Prometheus server
 * started here, scraping the three every second, answers a PromQL rate() of a volume's
 * writes with a non-zero rate while a client writes to it. Needs `promtool` and
 * `prometheus` (Debian package prometheus; scripts/install installs it).
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { TestCluster } from "../harness/cluster.ts";
import { freePort } from "../../server/nats_server.ts";
import { segmentStatsIntervalMs } from "../../metrics/mod.ts";

const volumeName = "metered";
const volumeBytes = 64 * 1024 * 1024;
const segmentBytes = 8 * 1024 * 1024;
const blockBytes = 4096;
/** Prometheus scrapes every second, so a rate over 5 s has several samples. */
const scrapeIntervalSeconds = 1;
/** How long the test waits for Prometheus to report a non-zero write rate. */
const rateDeadlineMs = 60_000;

/** Runs promtool with `args`, feeding it `stdin`; returns its exit code and output. */
async function promtool(args: string[], stdin?: string) {
  const child = new Deno.Command("promtool", {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    output: decoder.decode(out.stdout) + decoder.decode(out.stderr),
  };
}

/** The address a node wrote after binding `--metrics 127.0.0.1:0`. */
function metricsAddress(dataDir: string): string {
  return fs.readFileSync(`${dataDir}/metrics.address`, "utf8").trim();
}

async function scrape(address: string): Promise<string> {
  const res = await fetch(`http://${address}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return await res.text();
}

/** The value of the first sample line starting with `prefix` (name and labels), or null. */
function sampleValue(text: string, prefix: string): number | null {
  const line = text.split("\n").find((l) => l.startsWith(prefix));
  return line === undefined ? null : Number(line.slice(line.lastIndexOf(" ") + 1));
}

/** Starts Prometheus scraping `targets`; the caller stops it (by its pid) and removes `dir`. */
async function startPrometheus(targets: string[]) {
  const dir = await Deno.makeTempDir({ prefix: "cairn-test-prometheus-" });
  const port = await freePort();
  fs.writeFileSync(
    `${dir}/prometheus.yml`,
    [
      "global:",
      `  scrape_interval: ${scrapeIntervalSeconds}s`,
      `  evaluation_interval: ${scrapeIntervalSeconds}s`,
      "scrape_configs:",
      "  - job_name: cairn",
      "    static_configs:",
      `      - targets: [${targets.map((t) => `"${t}"`).join(", ")}]`,
      "",
    ].join("\n"),
  );
  const log = fs.openSync(`${dir}/prometheus.log`, "w");
  const child = new Deno.Command("prometheus", {
    args: [
      `--config.file=${dir}/prometheus.yml`,
      `--storage.tsdb.path=${dir}/data`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Its log goes to a file (read on failure); the pipe must be drained either way.
  child.stderr.pipeTo(
    new WritableStream({ write: (chunk) => void fs.writeSync(log, chunk) }),
  ).catch(() => {}).finally(() => fs.closeSync(log));
  return {
    dir,
    url: `http://127.0.0.1:${port}`,
    log: () => fs.readFileSync(`${dir}/prometheus.log`, "utf8").slice(-3000),
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** One instant query; the vector's samples as [labels, value]. */
async function query(url: string, promql: string): Promise<[Record<string, string>, number][]> {
  const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = await res.json() as {
    status: string;
    data?: { result: { metric: Record<string, string>; value: [number, string] }[] };
  };
  if (body.status !== "success") return [];
  return body.data!.result.map((r) => [r.metric, Number(r.value[1])]);
}

Deno.test({
  name: "metrics: every node's /metrics passes promtool; Prometheus sees a volume's write rate",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const cluster = await TestCluster.start({
      nodes: 3,
      serveArgs: ["--metrics", "127.0.0.1:0"],
    });
    let writing = true;
    let writer: Promise<void> = Promise.resolve();
    try {
      const client = await cluster.client();
      await client.createVolume({ name: volumeName, sizeBytes: volumeBytes, segmentBytes });
      const volume = await client.openVolume(volumeName);
      const block = new Uint8Array(blockBytes).fill(7);
      let written = 0;
      writer = (async () => {
        while (writing) {
          await volume.write((written++ % (volumeBytes / blockBytes)) * blockBytes, block);
        }
      })();
      const addresses = cluster.nodes.map((n) => metricsAddress(n.dataDir));

      await t.step("promtool check metrics passes on each node's output", async () => {
        // Let some writes land and the watchdogs hear each other first.
        await new Promise((r) => setTimeout(r, 2000));
        // Segment files are counted in the background (metrics/disk.ts): the volume's show
        // within one walk interval.
        const deadline = Date.now() + segmentStatsIntervalMs + 5000;
        for (const address of addresses) {
          while ((sampleValue(await scrape(address), "cairn_segment_files ") ?? 0) === 0) {
            assert.ok(Date.now() < deadline, `${address}: no segment files counted`);
            await new Promise((r) => setTimeout(r, 500));
          }
        }
        for (const [i, address] of addresses.entries()) {
          const text = await scrape(address);
          const checked = await promtool(["check", "metrics"], text);
          assert.equal(checked.code, 0, `${cluster.nodes[i].id}: ${checked.output}`);
          assert.match(text, new RegExp(`^cairn_node_info\\{node="${cluster.nodes[i].id}"`, "m"));
          assert.ok(sampleValue(text, "process_resident_memory_bytes ")! > 0);
          assert.ok(sampleValue(text, "cairn_data_dir_filesystem_free_bytes ")! > 0);
          for (const peer of cluster.nodes.filter((_, j) => j !== i)) {
            const age = sampleValue(text, `cairn_peer_heartbeat_age_seconds{peer="${peer.id}"}`);
            assert.ok(age !== null && age < 5, `${peer.id}'s heartbeat age on node ${i}: ${age}`);
          }
          assert.ok(
            sampleValue(text, 'cairn_fdatasync_duration_seconds_count{target="journal"}')! > 0,
            "journal fdatasyncs timed",
          );
        }
        // Exactly one node owns the volume and reports its IO and replicas.
        const texts = await Promise.all(addresses.map(scrape));
        const owners = texts.filter((text) =>
          (sampleValue(
            text,
            `cairn_volume_io_requests_total{volume="${volumeName}",op="write"}`,
          ) ?? 0) > 0
        );
        assert.equal(owners.length, 1, "one owner reports writes");
        const owner = owners[0];
        assert.equal(
          sampleValue(owner, `cairn_volume_replicas{volume="${volumeName}",state="in-sync"}`),
          (volumeBytes / segmentBytes) * 3,
        );
        assert.equal(
          sampleValue(owner, `cairn_volume_degraded_segments{volume="${volumeName}"}`),
          0,
        );
        assert.equal(
          sampleValue(owner, `cairn_volume_takeovers_total{volume="${volumeName}",kind="claim"}`),
          1,
          "the owner won the volume's first term",
        );
        assert.ok(sampleValue(owner, `cairn_volume_owner_term{volume="${volumeName}"}`)! >= 1);
        assert.equal(
          sampleValue(owner, `cairn_volume_actor_state{volume="${volumeName}",state="serving"}`),
          1,
        );
        assert.ok(
          sampleValue(owner, `cairn_volume_io_bytes_total{volume="${volumeName}",op="write"}`)! >=
            blockBytes,
        );
      });

      await t.step("a real Prometheus scrapes all three and rate() shows the writes", async () => {
        const prometheus = await startPrometheus(addresses);
        try {
          const promql = `sum by (volume) (rate(cairn_volume_io_requests_total{` +
            `volume="${volumeName}",op="write"}[5s]))`;
          const deadline = Date.now() + rateDeadlineMs;
          let result: [Record<string, string>, number][] = [];
          while (Date.now() < deadline) {
            result = await query(prometheus.url, promql).catch(() => []);
            if (result.length === 1 && result[0][1] > 0) break;
            await new Promise((r) => setTimeout(r, 1000));
          }
          assert.equal(result.length, 1, `no rate from Prometheus; log:\n${prometheus.log()}`);
          assert.equal(result[0][0].volume, volumeName);
          assert.ok(result[0][1] > 0, `write rate ${result[0][1]}`);
          console.log(`Prometheus: ${promql} = ${result[0][1].toFixed(1)} writes/s`);
          const up = await query(prometheus.url, `sum(up{job="cairn"})`);
          assert.equal(up[0]?.[1], 3, "all three nodes scraped");
        } finally {
          await prometheus.stop();
        }
      });
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      writing = false;
      await writer.catch(() => {});
      await cluster.stop();
    }
  },
});
