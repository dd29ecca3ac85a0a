/**
 * What `--metrics` costs in node memory: `deno run -A bench/metrics_rss.ts on|off` starts 3
 * nodes (as the tests do), creates 10 volumes of 64 MiB, writes 4 MiB of 4 KiB blocks to
 * each, waits 8 s idle, and prints every node's VmRSS at start, after the writes and idle;
 * with `on`, every node's /metrics is fetched once a second throughout, and the scrape
 * times are printed.
 */
import * as fs from "node:fs";
import { LocalCluster } from "../server/local_cluster.ts";

const volumes = 10;
const volumeBytes = 64 * 1024 * 1024;
const blockBytes = 4096;
const blocksPerVolume = 1024;
const writersPerVolume = 4;
const scrapeIntervalMs = 1000;
const idleMs = 8000;

const withMetrics = Deno.args[0] === "on";
if (!withMetrics && Deno.args[0] !== "off") {
  console.error("usage: deno run -A bench/metrics_rss.ts on|off");
  Deno.exit(2);
}

function vmRssMiB(pid: number): string {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return (Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024).toFixed(1);
}

const cluster = await LocalCluster.start({
  nodes: 3,
  serveArgs: withMetrics ? ["--metrics", "127.0.0.1:0"] : [],
});
try {
  const pids = cluster.nodes.map((_, i) => cluster.pidOf(i)!);
  const rss = () => pids.map(vmRssMiB).join(" ");
  console.log(`VmRSS MiB at start: ${rss()}`);
  const client = await cluster.client();
  for (let v = 0; v < volumes; v++) {
    await client.createVolume({ name: `v${v}`, sizeBytes: volumeBytes });
  }
  const addresses = withMetrics
    ? cluster.nodes.map((n) => fs.readFileSync(`${n.dataDir}/metrics.address`, "utf8").trim())
    : [];
  const scrapeMs: number[] = [];
  let running = true;
  const scraper = (async () => {
    while (running && addresses.length) {
      for (const address of addresses) {
        const startedMs = performance.now();
        await (await fetch(`http://${address}/metrics`)).text();
        scrapeMs.push(performance.now() - startedMs);
      }
      await new Promise((r) => setTimeout(r, scrapeIntervalMs));
    }
  })();
  const block = new Uint8Array(blockBytes).fill(3);
  const startedMs = performance.now();
  await Promise.all(Array.from({ length: volumes }, async (_, v) => {
    const volume = await client.openVolume(`v${v}`);
    await Promise.all(Array.from({ length: writersPerVolume }, async (_, w) => {
      for (let i = w; i < blocksPerVolume; i += writersPerVolume) {
        await volume.write(i * blockBytes, block);
      }
    }));
  }));
  const writeSeconds = (performance.now() - startedMs) / 1000;
  console.log(`VmRSS MiB after the writes (${writeSeconds.toFixed(1)} s): ${rss()}`);
  await new Promise((r) => setTimeout(r, idleMs));
  running = false;
  await scraper;
  console.log(`VmRSS MiB after ${idleMs / 1000} s idle (metrics ${Deno.args[0]}): ${rss()}`);
  if (withMetrics) {
    scrapeMs.sort((a, b) => a - b);
    const text = await (await fetch(`http://${addresses[0]}/metrics`)).text();
    const samples = text.split("\n").filter((l) => l && !l.startsWith("#")).length;
    console.log(
      `${scrapeMs.length} scrapes: median ${scrapeMs[scrapeMs.length >> 1].toFixed(1)} ms, ` +
        `max ${
          scrapeMs[scrapeMs.length - 1].toFixed(1)
        } ms; ${text.length} bytes, ${samples} samples`,
    );
  }
} finally {
  await cluster.stop();
}
