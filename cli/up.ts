/**
 * `deno task up`: a working local cluster in one command: nats-server (or a
 * cluster of three with `--nats-cluster 3`), three nodes in zones a/b/c
 * (separate processes and data dirs under .cairn/), and a demo volume. Ctrl-C
 * stops everything cleanly; running it again reuses the data.
 */
import { existsSync } from "node:fs";
import { LocalCluster } from "../server/local_cluster.ts";
import { untilStopSignal } from "../server/process.ts";
import { CairnError } from "../protocol/errors.ts";
import {
  flagInt,
  flagSize,
  flagString,
  formatBytes,
  parseArgs,
  runCommand,
  UsageError,
} from "./args.ts";

const usage =
  `usage: deno task up [--dir .cairn] [--port 4222] [--nats-cluster 1|3] [--demo-size 256MiB]
                     [--http-port 8420] [--no-http] [--nats-auth]
  --dir DIR           where NATS and the nodes keep their data (reused on the next run)
  --port N            NATS port on 127.0.0.1 (default 4222); a cluster uses N, N+1, N+2
                      (routes on N+2000.., monitoring on N+4000..)
  --nats-cluster 1|3  1 nats-server (default), or a cluster of 3 with routes and the metadata
                      bucket replicated 3 times: losing any one server loses no metadata
  --demo-size SIZE    size of the demo volume created on first start
  --http-port N       node i serves the HTTP admin API on 127.0.0.1:N+i-1 (default 8420);
                      loopback and no tokens, so open to local users only
  --no-http           no HTTP API
  --nats-auth         NATS authorization on: an nkey user per role (node, admin, data) made
                      under DIR/auth (kept and reused) with the permissions of
                      docs/NATS_AUTH.md; nodes run as node, the CLI as admin via NATS_CREDS`;

const zones = ["a", "b", "c"];
const demoVolume = "demo";

async function main(): Promise<number> {
  const args = parseArgs(Deno.args, ["help", "no-http", "nats-auth"]);
  if (args.flags.has("help")) return console.log(usage), 0;
  const root = flagString(args, "dir") ?? ".cairn";
  const port = flagInt(args, "port") ?? 4222;
  const demoBytes = flagSize(args, "demo-size") ?? 256 * 1024 * 1024;
  const natsCluster = flagInt(args, "nats-cluster") ?? 1;
  const http = !args.flags.has("no-http");
  const httpBasePort = flagInt(args, "http-port") ?? 8420;
  if (natsCluster !== 1 && natsCluster !== 3) {
    throw new UsageError(`--nats-cluster takes 1 or 3, not ${natsCluster}`);
  }
  // The metadata lives in the NATS store: a dir made with the other setting would start
  // with empty metadata, and nodes remove segment files that no volume names.
  const otherStore = natsCluster === 1 ? `${root}/nats-1` : `${root}/nats`;
  if (existsSync(otherStore)) {
    throw new UsageError(
      `${root}/ was set up with --nats-cluster ${
        natsCluster === 1 ? 3 : 1
      } (${otherStore} holds its metadata); run with that setting or use another --dir`,
    );
  }
  console.log(
    natsCluster === 1
      ? `starting nats-server on 127.0.0.1:${port} and ${zones.length} nodes under ${root}/ ...`
      : `starting ${natsCluster} nats-servers on 127.0.0.1:${port}-${
        port + natsCluster - 1
      } (a cluster) and ${zones.length} nodes under ${root}/ ...`,
  );
  const cluster = await LocalCluster.start({
    root,
    natsPort: port,
    natsCluster,
    nodes: zones.length,
    zoneOf: (i) => zones[i],
    capacity: "100GiB",
    http,
    httpBasePort,
    natsAuth: args.flags.has("nats-auth"),
  });
  try {
    const client = await cluster.client();
    try {
      await client.volumeInfo(demoVolume);
      console.log(`volume ${demoVolume} is here from an earlier run`);
    } catch (err) {
      if (!(err instanceof CairnError && err.code === "NO_SUCH_VOLUME")) throw err;
      const info = await client.createVolume({ name: demoVolume, sizeBytes: demoBytes });
      console.log(
        `created volume ${demoVolume}: ${formatBytes(info.sizeBytes)}, ${info.replicas} replicas`,
      );
    }
    const pids = cluster.nodes.map((n, i) => `${n.id} (zone ${n.zone}, pid ${cluster.pidOf(i)})`);
    const natsLogs = natsCluster === 1
      ? `${root}/nats.log`
      : cluster.natsUrls.map((_, i) => `${root}/nats-${i + 1}.log`).join(" ");
    const natsPids = cluster.natsUrls.map((url, i) => `${url} (pid ${cluster.natsPid(i)})`);
    const auth = cluster.natsAuthFiles;
    const authLines = auth
      ? `\nNATS authorization on (${auth.configFile}): nodes use ${auth.seedFiles.node}; ` +
        `the CLI below uses the admin user; ${auth.seedFiles.data} may do IO and look up but ` +
        `not create, delete or move volumes.`
      : "";
    const httpLines = http
      ? `\nHTTP API (any node answers for the cluster; open, loopback only):\n${
        cluster.nodes.map((n, i) =>
          `  ${n.id}: dashboard ${cluster.httpUrl(i)}/  API ${cluster.httpUrl(i)}/api/v1  docs ${
            cluster.httpUrl(i)
          }/docs`
        )
          .join("\n")
      }`
      : "";
    console.log(`
Cairn is up. NATS: ${natsPids.join(", ")}
Nodes: ${pids.join(", ")}${httpLines}
Logs: ${root}/n1.log ${root}/n2.log ${root}/n3.log ${natsLogs}${authLines}

In another terminal:
  export NATS_URL=${cluster.natsUrl}${auth ? `\n  export NATS_CREDS=${auth.seedFiles.admin}` : ""}
  deno task cairn node list
  deno task cairn volume info ${demoVolume}
  head -c 16777216 /dev/urandom > /tmp/16m.bin
  deno task cairn import ${demoVolume} /tmp/16m.bin
  deno task cairn export ${demoVolume} /tmp/back.bin --length 16MiB && cmp /tmp/16m.bin /tmp/back.bin
  deno task cairn volume verify ${demoVolume}${
      http ? `\n  curl -s ${cluster.httpUrl(0)}/api/v1/volumes/${demoVolume}` : ""
    }

Ctrl-C stops the cluster; the data stays in ${root}/.`);
    await untilStopSignal();
    console.log("\nstopping nodes (finishing IO in flight) ...");
  } finally {
    await cluster.stop();
  }
  console.log("stopped.");
  return 0;
}

await runCommand(main, usage);
