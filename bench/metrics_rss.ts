/**
 * What metrics and the HTTP API cost in node memory:
 * `deno run -A bench/metrics_rss.ts on|off|http [--volumes 10] [--blocks 1024]
 * [--idle-seconds 8]` starts 3 nodes (as the tests do), creates the volumes (64 MiB each),
 * writes `--blocks` 4 KiB blocks to each, waits idle, and prints every node's VmRSS at start,
 * after the writes and idle.
 * `on`: `--metrics`, every node's /metrics fetched once a second throughout. `http`: `--http`
 * (API and /metrics on one listener), every node's /metrics and `GET /api/v1/volumes`
 * fetched once a second throughout. The scrape times are printed.
 */
import * as fs from "node:fs";
import { LocalCluster } from "../server/local_cluster.ts";
import { eachFlag } from "./flags.ts";
import { cpuSecondsOf } from "./proc.ts";

const volumeBytes = 64 * 1024 * 1024;
const blockBytes = 4096;
const writersPerVolume = 4;
const scrapeIntervalMs = 1000;
const usage =
  "usage: deno run -A bench/metrics_rss.ts on|off|http [--volumes 10] [--blocks 1024] [--idle-seconds 8]";

const mode = Deno.args[0];
let volumes = 10;
let blocksPerVolume = 1024;
let idleMs = 8000;
const helpless = eachFlag(Deno.args.slice(1), (flag, value) => {
  if (flag === "--volumes") volumes = Number(value());
  else if (flag === "--blocks") blocksPerVolume = Number(value());
  else if (flag === "--idle-seconds") idleMs = 1000 * Number(value());
  else throw new Error(`unknown flag ${flag}; ${usage}`);
});
if (
  !helpless || !["on", "off", "http"].includes(mode) || !(volumes > 0) || !(blocksPerVolume > 0) ||
  !(idleMs > 0)
) {
  console.error(usage);
  Deno.exit(2);
}
const withMetrics = mode !== "off";

function vmRssMiB(pid: number): string {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return (Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024).toFixed(1);
}

const cluster = await LocalCluster.start({
  nodes: 3,
  http: mode === "http",
  serveArgs: mode === "on" ? ["--metrics", "127.0.0.1:0"] : [],
});
try {
  const pids = cluster.nodes.map((_, i) => cluster.pidOf(i)!);
  const rss = () => pids.map(vmRssMiB).join(" ");
  console.log(`VmRSS MiB at start: ${rss()}`);
  const client = await cluster.client();
  for (let v = 0; v < volumes; v++) {
    await client.createVolume({ name: `v${v}`, sizeBytes: volumeBytes });
  }
  console.log(`VmRSS MiB with ${volumes} volumes: ${rss()}`);
  const addresses = mode === "on"
    ? cluster.nodes.map((n) => fs.readFileSync(`${n.dataDir}/metrics.address`, "utf8").trim())
    : mode === "http"
    ? cluster.nodes.map((_, i) => cluster.httpUrl(i).replace(/^http:\/\//, ""))
    : [];
  const apiMs: number[] = [];
  const scrapeMs: number[] = [];
  let running = true;
  const scraper = (async () => {
    while (running && addresses.length) {
      for (const address of addresses) {
        const startedMs = performance.now();
        await (await fetch(`http://${address}/metrics`)).text();
        scrapeMs.push(performance.now() - startedMs);
        if (mode === "http") {
          const apiStartedMs = performance.now();
          await (await fetch(`http://${address}/api/v1/volumes`)).json();
          apiMs.push(performance.now() - apiStartedMs);
        }
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
  const cpuBefore = pids.map((pid) => cpuSecondsOf(pid) ?? 0);
  await new Promise((r) => setTimeout(r, idleMs));
  const idleCpu = pids.map((pid, i) => ((cpuSecondsOf(pid) ?? 0) - cpuBefore[i]) / (idleMs / 1000));
  console.log(
    `CPU share of one core while idle: ${idleCpu.map((c) => `${(100 * c).toFixed(1)}%`).join(" ")}`,
  );
  running = false;
  await scraper;
  console.log(`VmRSS MiB after ${idleMs / 1000} s idle (${mode}): ${rss()}`);
  if (mode === "http") {
    // Where the memory is: V8's heap and the memory outside it, as node n1 reports them.
    const text = await (await fetch(`${cluster.httpUrl(0)}/metrics`)).text();
    const memory = text.split("\n").filter((l) =>
      /^(process_resident_memory_bytes|nodejs_heap_size_(used|total)_bytes|nodejs_external_memory_bytes|nodejs_heap_space_size_used_bytes)/
        .test(l)
    );
    for (const line of memory) {
      const [name, value] = line.split(" ");
      console.log(`n1 ${name.padEnd(60)} ${(Number(value) / 2 ** 20).toFixed(1)} MiB`);
    }
  }
  if (apiMs.length) {
    apiMs.sort((a, b) => a - b);
    console.log(
      `${apiMs.length} GET /api/v1/volumes: median ${apiMs[apiMs.length >> 1].toFixed(1)} ms, ` +
        `max ${apiMs[apiMs.length - 1].toFixed(1)} ms`,
    );
  }
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
