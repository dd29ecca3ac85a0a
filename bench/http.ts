/**
 * `deno task bench:http`: latency of the HTTP admin API's reads with many volumes. Starts
 * its own local cluster (temp dir, free ports, 3 nodes serving HTTP on 127.0.0.1, no
 * tokens), creates the volumes through the API, then times `GET /api/v1/volumes` and
 * `GET /api/v1/volumes/{name}` one request at a time against node n1's listener.
 */
import { LocalCluster } from "../server/local_cluster.ts";
import { eachFlag } from "./flags.ts";
import { formatMs, markdownTable } from "./table.ts";

const usage = `usage: deno task bench:http [--volumes 100] [--requests 500] [--warmup 20]
  --volumes N   volumes to create first (64 KiB each, 3 replicas)
  --requests N  timed requests per route, one at a time
  --warmup N    untimed requests per route first`;

interface Settings {
  volumes: number;
  requests: number;
  warmup: number;
}

function parse(args: string[]): Settings | null {
  const settings: Settings = { volumes: 100, requests: 500, warmup: 20 };
  const positive = (flag: string, text: string) => {
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${flag} takes a whole number > 0`);
    return n;
  };
  const ok = eachFlag(args, (flag, value) => {
    if (flag === "--volumes") settings.volumes = positive(flag, value());
    else if (flag === "--requests") settings.requests = positive(flag, value());
    else if (flag === "--warmup") settings.warmup = positive(flag, value());
    else throw new Error(`unknown flag ${flag}\n${usage}`);
  });
  return ok ? settings : null;
}

function percentile(sortedMs: number[], p: number): number {
  return sortedMs[Math.min(sortedMs.length - 1, Math.ceil((p / 100) * sortedMs.length) - 1)];
}

/** Times `count` requests one after another; each body is read to its end. */
async function timeRequests(count: number, url: (i: number) => string): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    const res = await fetch(url(i));
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${url(i)}: ${res.status}`);
    times.push(performance.now() - start);
  }
  return times.sort((a, b) => a - b);
}

async function main(): Promise<number> {
  const settings = parse(Deno.args);
  if (!settings) return console.log(usage), 0;
  console.error(`starting 3 nodes with the HTTP API ...`);
  const cluster = await LocalCluster.start({ nodes: 3, http: true });
  try {
    const base = cluster.httpUrl(0);
    const names = Array.from({ length: settings.volumes }, (_, i) => `bench-${i}`);
    const createStart = performance.now();
    for (const name of names) {
      const res = await fetch(`${base}/api/v1/volumes`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name, sizeBytes: 65536, segmentBytes: 65536 }),
      });
      if (res.status !== 201) throw new Error(`create ${name}: ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
    }
    const createMs = performance.now() - createStart;
    console.error(`created ${names.length} volumes in ${(createMs / 1000).toFixed(1)} s`);
    const routes: [string, (i: number) => string][] = [
      [`GET /api/v1/volumes (${names.length} volumes)`, () => `${base}/api/v1/volumes`],
      [
        "GET /api/v1/volumes/{name}",
        (i) => `${base}/api/v1/volumes/${names[i % names.length]}`,
      ],
    ];
    const rows: string[][] = [];
    for (const [label, url] of routes) {
      await timeRequests(settings.warmup, url);
      const times = await timeRequests(settings.requests, url);
      const meanMs = times.reduce((a, b) => a + b, 0) / times.length;
      rows.push([
        label,
        String(times.length),
        formatMs(percentile(times, 50)),
        formatMs(percentile(times, 99)),
        formatMs(meanMs),
        formatMs(times[times.length - 1]),
      ]);
    }
    rows.push([
      `POST /api/v1/volumes (64 KiB, 3 replicas), ${names.length} in a row`,
      String(names.length),
      "—",
      "—",
      formatMs(createMs / names.length),
      "—",
    ]);
    const [load1] = Deno.loadavg();
    console.log(
      `${new Date().toISOString()}, load average ${
        load1.toFixed(1)
      } on ${navigator.hardwareConcurrency} cores`,
    );
    console.log(
      markdownTable(["Route", "Requests", "p50 ms", "p99 ms", "mean ms", "max ms"], rows),
    );
  } finally {
    await cluster.stop();
  }
  return 0;
}

try {
  Deno.exit(await main());
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  Deno.exit(1);
}
