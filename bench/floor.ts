/**
 * `deno task bench:floor [--seconds N] [--rounds N] [--io-bytes N]`: how close Cairn's durable
 * writes can come to issue 9's targets on NATS at all. In one run, interleaved round by round, 4 KiB
 * writes at 32 in flight (or 1 MiB at 8 with `--io-bytes 1048576`):
 *
 * - echo: NATS request/reply of the same size to a responder process (the 4 KiB target's
 *   yardstick: CPU per write at most 3x the echo's);
 * - floor, no disk: the least messaging a 3-way replicated write needs (bench/floor_node.ts:
 *   client -> primary, primary -> 2 replicas in per-turn batches, acks back), nothing written;
 * - floor, disk: the same with every copy pwritten and fdatasynced (group commit) on 3 files;
 * - Cairn: a 3-replica volume through the client library, durable writes.
 *
 * CPU per write is utime+stime of every process of the row from /proc over the measured time.
 * If the floor with disk already costs more than 3x the echo, no Cairn on NATS meets the target
 * on this machine (all copies share its 2 cores); the Cairn/floor ratio is what Cairn's own
 * logic costs on top of the floor.
 */
import * as fs from "node:fs";
import { connect } from "@nats-io/transport-node";
import { presizeReceiveBuffers } from "../protocol/nats_internals.ts";
import type { NatsConnection } from "@nats-io/nats-core";
import { LocalCluster as TestCluster } from "../server/local_cluster.ts";
import { connectCluster } from "../client/client.ts";
import { EchoRequester } from "./echo.ts";
import { runLoad, xorshift } from "./load.ts";
import { cpuSecondsOf, loadAverage } from "./proc.ts";
import { eachFlag } from "./flags.ts";
import { floorOffsetBytes, floorRegionBytes } from "./floor_node.ts";
import { spawnReady, stopChild } from "./child.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Writes go to random blocks of this many bytes (each floor file and the Cairn volume). */
const regionBytes = floorRegionBytes;
const requestTimeoutMs = 10_000;

interface Settings {
  seconds: number;
  rounds: number;
  ioBytes: number;
  inFlight: number;
}

function usage(): string {
  return `usage: deno task bench:floor [--seconds N] [--rounds N] [--io-bytes N]
  --seconds N   measured seconds per row (default 5; 1 s warm-up extra)
  --rounds N    interleaved rounds of all four rows (default 2); medians are printed
  --io-bytes N  bytes per write: 4096 (default, 32 in flight) or up to 4 MiB (8 in flight)`;
}

function parse(args: string[]): Settings | null {
  const settings: Settings = { seconds: 5, rounds: 2, ioBytes: 4 * KiB, inFlight: 32 };
  const ok = eachFlag(args, (flag, value) => {
    const n = Number(value());
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag} must be a positive number`);
    if (flag === "--seconds") settings.seconds = n;
    else if (flag === "--rounds") settings.rounds = Math.round(n);
    else if (flag === "--io-bytes") {
      if (n % (4 * KiB) || n > 4 * MiB) {
        throw new Error("--io-bytes: a multiple of 4096 up to 4 MiB");
      }
      settings.ioBytes = n;
      settings.inFlight = n > 4 * KiB ? 8 : 32;
    } else throw new Error(`unknown flag ${flag}`);
  });
  return ok ? settings : null;
}

interface RowResult {
  iops: number;
  mbPerSec: number;
  /** CPU µs per write, by process. */
  cpuUs: Record<string, number>;
  totalUs: number;
}

/** Runs one row with the given processes' CPU counted (the bench process as "client"). */
async function measure(
  settings: Settings,
  pids: Record<string, number>,
  op: () => Promise<void>,
): Promise<RowResult> {
  const all = { client: Deno.pid, ...pids };
  const used: Record<string, number> = {};
  const result = await runLoad(() => op(), {
    inFlight: settings.inFlight,
    seconds: settings.seconds,
    warmupSeconds: 1,
    bytesPerOp: settings.ioBytes,
  }, {
    before: () => {
      for (const [name, pid] of Object.entries(all)) used[name] = cpuSecondsOf(pid) ?? NaN;
    },
    after: () => {
      for (const [name, pid] of Object.entries(all)) {
        used[name] = (cpuSecondsOf(pid) ?? NaN) - used[name];
      }
    },
  });
  const cpuUs: Record<string, number> = {};
  let totalUs = 0;
  for (const [name, seconds] of Object.entries(used)) {
    cpuUs[name] = (seconds / result.ops) * 1e6;
    totalUs += cpuUs[name];
  }
  return { iops: result.opsPerSec, mbPerSec: result.mbPerSec, cpuUs, totalUs };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** A random offset of an io-sized piece of the region. */
function randomOffset(random: () => number, ioBytes: number): number {
  return Math.floor(random() * (regionBytes / ioBytes)) * ioBytes;
}

/** A request for the floor: a random offset, then the data. */
function floorRequest(random: () => number, data: Uint8Array): Uint8Array {
  const record = new Uint8Array(floorOffsetBytes + data.byteLength);
  new DataView(record.buffer).setBigUint64(0, BigInt(randomOffset(random, data.byteLength)), true);
  record.set(data, floorOffsetBytes);
  return record;
}

async function floorRow(
  settings: Settings,
  url: string,
  nc: NatsConnection,
  root: string,
  disk: boolean,
  natsPid: number,
): Promise<RowResult> {
  const mode = disk ? "disk" : "nodisk";
  const replicas = await Promise.all(
    ["r1", "r2"].map((r) =>
      spawnReady("./floor_node.ts", [
        "replica",
        url,
        `${root}/floor-${r}`,
        mode,
        String(settings.ioBytes),
        `bench.floor.${r}`,
      ])
    ),
  );
  const primary = await spawnReady("./floor_node.ts", [
    "primary",
    url,
    `${root}/floor-p`,
    mode,
    String(settings.ioBytes),
    "bench.floor.r1",
    "bench.floor.r2",
  ]);
  try {
    const requester = new EchoRequester(nc, "bench.floor", requestTimeoutMs);
    const random = xorshift(7);
    const data = new Uint8Array(settings.ioBytes).fill(0x5a);
    const result = await measure(settings, {
      "nats-server": natsPid,
      primary: primary.pid,
      replica1: replicas[0].pid,
      replica2: replicas[1].pid,
    }, async () => {
      await requester.request(floorRequest(random, data));
    });
    requester.close();
    return result;
  } finally {
    await Promise.all([primary, ...replicas].map(stopChild));
    for (const f of ["p", "r1", "r2"]) fs.rmSync(`${root}/floor-${f}`, { force: true });
  }
}

function printResults(settings: Settings, rows: Record<string, RowResult[]>): void {
  const small = settings.ioBytes <= 4 * KiB;
  // Per write for 4 KiB, per MiB for larger writes (as deno task bench reports them).
  const perUnit = small ? 1 : MiB / settings.ioBytes;
  const unit = small ? "µs per write" : "ms per MiB";
  const show = (us: number) => small ? `${Math.round(us)}` : (us * perUnit / 1000).toFixed(1);
  const echoUs = median(rows.echo.map((r) => r.totalUs));
  const floorUs = median(rows["floor, disk"].map((r) => r.totalUs));
  console.log(
    `\n${settings.ioBytes / KiB} KiB durable writes, ${settings.inFlight} in flight, medians of ` +
      `${settings.rounds} interleaved rounds of ${settings.seconds} s (${
        new Date().toISOString()
      }, load average ${loadAverage()?.toFixed(2)}):\n`,
  );
  console.log(
    `| Row | IOPS | MB/s | CPU (${unit}), by process | total | / echo | / floor with disk |`,
  );
  console.log("|---|---|---|---|---|---|---|");
  for (const [name, results] of Object.entries(rows)) {
    const parts = Object.keys(results[0].cpuUs).map((n) =>
      `${n} ${show(median(results.map((r) => r.cpuUs[n])))}`
    ).join(", ");
    const total = median(results.map((r) => r.totalUs));
    console.log(
      `| ${name} | ${Math.round(median(results.map((r) => r.iops))).toLocaleString("en-US")} | ${
        median(results.map((r) => r.mbPerSec)).toFixed(1)
      } | ${parts} | ${show(total)} | ${(total / echoUs).toFixed(1)}x | ${
        (total / floorUs).toFixed(2)
      }x |`,
    );
  }
  if (small) {
    console.log(
      `\nTarget: Cairn at most 3x echo (${Math.round(3 * echoUs)} µs). The floor with disk is ` +
        `${(floorUs / echoUs).toFixed(1)}x echo: ${
          floorUs > 3 * echoUs
            ? "above the target before any Cairn logic, so the target cannot be met on NATS here"
            : "below the target, so the target is reachable in principle"
        }.`,
    );
  } else {
    console.log(
      `\nTarget: at most 20 ms CPU per MiB and 100 MB/s. The floor with disk: ${
        show(floorUs)
      } ms per MiB, ${median(rows["floor, disk"].map((r) => r.mbPerSec)).toFixed(1)} MB/s.`,
    );
  }
}

async function main(): Promise<void> {
  let settings: Settings | null;
  try {
    settings = parse(Deno.args);
  } catch (err) {
    console.error(`bench:floor: ${(err as Error).message}\n${usage()}`);
    Deno.exit(2);
  }
  if (!settings) {
    console.log(usage());
    return;
  }
  const log = (line: string) => console.error(`bench:floor: ${line}`);
  log(`starting nats-server and 3 nodes (load average ${loadAverage()?.toFixed(2)})`);
  const cluster = await TestCluster.start({ nodes: 3 });
  try {
    const url = cluster.natsUrl;
    const natsPid = cluster.nats.pid!;
    presizeReceiveBuffers(); // as Cairn's own connections do
    const nc = await connect({ servers: url, name: "bench-floor", noAsyncTraces: true });
    const echo = await spawnReady("./echo_responder.ts", [url, "bench.echo"]);
    const cairn = await connectCluster({ servers: url, name: "bench-floor" });
    const { owner } = await cairn.createVolume({
      name: "floor",
      sizeBytes: regionBytes,
      replicas: 3,
    });
    const volume = await cairn.openVolume("floor");
    const nodePids: Record<string, number> = {};
    cluster.nodes.forEach((node, i) =>
      nodePids[node.id === owner ? `${node.id} (owner)` : node.id] = cluster.pidOf(i)!
    );
    const rows: Record<string, RowResult[]> = {
      echo: [],
      "floor, no disk": [],
      "floor, disk": [],
      Cairn: [],
    };
    for (let round = 1; round <= settings.rounds; round++) {
      log(`round ${round} of ${settings.rounds}: echo`);
      const echoRequester = new EchoRequester(nc, "bench.echo", requestTimeoutMs);
      const payload = new Uint8Array(settings.ioBytes).fill(1);
      rows.echo.push(
        await measure(
          settings,
          { "nats-server": natsPid, responder: echo.pid },
          async () => {
            await echoRequester.request(payload);
          },
        ),
      );
      echoRequester.close();
      log(`round ${round}: floor, no disk`);
      rows["floor, no disk"].push(
        await floorRow(settings, url, nc, cluster.root, false, natsPid),
      );
      log(`round ${round}: floor, disk`);
      rows["floor, disk"].push(
        await floorRow(settings, url, nc, cluster.root, true, natsPid),
      );
      log(`round ${round}: Cairn`);
      const random = xorshift(11);
      const data = new Uint8Array(settings.ioBytes).fill(2);
      rows.Cairn.push(
        await measure(settings, { "nats-server": natsPid, ...nodePids }, async () => {
          await volume.write(randomOffset(random, settings.ioBytes), data);
        }),
      );
    }
    await stopChild(echo);
    await nc.close();
    await cairn.close();
    printResults(settings, rows);
  } finally {
    await cluster.stop();
  }
}

if (import.meta.main) await main();
