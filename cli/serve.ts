/**
 * `deno task serve`: run one Cairn node. With no NATS URL at all it starts its
 * own nats-server under the data dir, so one node runs with one command.
 */
import { crc32cImplementation } from "../protocol/crc32c.ts";
import { startMemoryTrim } from "../server/memory_trim.ts";
import {
  CairnNode,
  cairnVersion,
  defaultKvReplicas,
  natsServerList,
  natsServersWithoutCredentials,
} from "../server/node.ts";
import { untilStopSignal } from "../server/process.ts";
import { type LocalNats, startNatsServer } from "../server/nats_server.ts";
import { recommendedNatsMaxPayloadBytes } from "../protocol/limits.ts";
import {
  flagSize,
  flagString,
  natsAuthFlags,
  natsAuthUsage,
  parseArgs,
  runCommand,
  UsageError,
} from "./args.ts";
import { NatsAuthError, redactNatsUrl } from "../protocol/nats_auth.ts";
import { startNodeGateway } from "../nbd/mod.ts";
import { type HttpPlan, planHttp, startNodeHttp, TokenConfigError } from "../http/mod.ts";
import { metricsHandler, NodeMetrics, parseMetricsListen, serveMetrics } from "../metrics/mod.ts";
import { IoStats, teeMetrics } from "../actors/io_stats.ts";
import { natsStatsFeed, startStatsPublisher } from "../server/stats.ts";

const usage =
  `usage: deno task serve [--nats URL[,URL...]] [--creds FILE | --user NAME --password PASS]
                       [--kv-replicas N] [--data DIR] [--node ID]
                       [--zone NAME] [--capacity BYTES] [--metrics HOST:PORT]
  --nats URLS       NATS server, or every server of a NATS cluster comma-separated (env NATS_URL);
                    none: start a local nats-server
${natsAuthUsage}
  --kv-replicas N   replicas of the metadata bucket if this node creates it: 1, 3 or 5 (env
                    CAIRN_KV_REPLICAS; default 3 with three or more NATS URLs, else 1); a bucket
                    that exists keeps its own
  --data DIR        data directory (env CAIRN_DATA, default .cairn/node)
  --node ID         stable node id, stored in the data dir on first start (env CAIRN_NODE)
  --zone NAME       failure zone (env CAIRN_ZONE, default "default")
  --capacity BYTES  capacity used to weight placement, e.g. 100GiB (env CAIRN_CAPACITY; default: the disk's size)
  --nbd ADDR        also serve every volume over NBD at HOST:PORT or unix:/path (env CAIRN_NBD;
                    port 0 picks a free port; bound addresses are written to DIR/nbd.address)
  --http HOST:PORT  also serve the HTTP admin API (env CAIRN_HTTP), e.g. 127.0.0.1:8420; any
                    node answers for the whole cluster (docs/HTTP_API.md)
  --http-tokens FILE  bearer tokens, one role:token a line, role read or admin (also env
                    CAIRN_HTTP_TOKENS); without any, the API is served on loopback only, open
  --http-open GROUPS  what needs no token when tokens are set: probes (default: /healthz,
                    /readyz, /metrics), reads (every GET and verify), probes,reads, or none
                    (env CAIRN_HTTP_OPEN)
  --scrub-interval DURATION  time between background scrub passes of each volume this node
                    owns, e.g. 24h, 90m, 30s (env CAIRN_SCRUB_INTERVAL; default 24h)
  --scrub-rate BYTES  bytes per second each volume's scrub checks, summed over its replicas,
                    e.g. 8MiB; 0 turns the scrub off (env CAIRN_SCRUB_RATE; default 8MiB)
  --replica-grace DURATION  how long a down node's replicas wait for it before they are rebuilt
                    on other nodes, e.g. 5m, 30s (env CAIRN_REPLICA_GRACE; default 5m); a node
                    back sooner only catches up on the blocks written while it was away
  --rebuild-rate BYTES  rate limit of catch-up and rebuild copies, per volume, e.g. 100MiB
                    (env CAIRN_REBUILD_RATE; default 256MiB)
  --metrics ADDR     serve Prometheus metrics at http://HOST:PORT/metrics (env CAIRN_METRICS;
                    port 0 picks a free port; the bound address is written to DIR/metrics.address)
  --quiet           log warnings and errors only`;

const durationUnitsMs: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** "24h", "90m", "30s", "500ms", "1d" -> milliseconds (a positive whole number). */
function parseDurationMs(text: string, flag: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(text);
  const ms = match ? Number(match[1]) * durationUnitsMs[match[2]] : NaN;
  if (!Number.isSafeInteger(ms) || ms <= 0) {
    throw new UsageError(`--${flag}: cannot read duration "${text}" (examples: 24h, 90m, 30s)`);
  }
  return ms;
}

async function main(): Promise<number> {
  const args = parseArgs(Deno.args, ["quiet", "help"]);
  if (args.flags.has("help")) {
    console.log(usage);
    return 0;
  }
  const dataDir = flagString(args, "data", "CAIRN_DATA") ?? ".cairn/node";
  const httpPlan = await httpSettings(args);
  let natsUrl = flagString(args, "nats", "NATS_URL");
  const natsAuth = natsAuthFlags(args);
  const kvReplicasFlag = flagString(args, "kv-replicas", "CAIRN_KV_REPLICAS");
  if (kvReplicasFlag !== undefined && !/^[135]$/.test(kvReplicasFlag)) {
    throw new UsageError(`--kv-replicas takes 1, 3 or 5, not "${kvReplicasFlag}"`);
  }
  let localNats: LocalNats | null = null;
  if (!natsUrl) {
    localNats = await startNatsServer({
      dataDir: `${dataDir}/nats`,
      port: 4222,
      logFile: `${dataDir}/nats.log`,
      maxPayloadBytes: recommendedNatsMaxPayloadBytes,
    });
    natsUrl = localNats.url;
    console.error(`started nats-server at ${natsUrl} (pid ${localNats.pid})`);
  }
  const rebuildRate = flagSize(args, "rebuild-rate", "CAIRN_REBUILD_RATE");
  if (rebuildRate !== undefined && rebuildRate <= 0) {
    throw new UsageError(`--rebuild-rate must be above 0 (e.g. 100MiB)`);
  }
  const metricsListen = flagString(args, "metrics", "CAIRN_METRICS");
  if (metricsListen !== undefined) {
    try {
      parseMetricsListen(metricsListen);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  // Metrics are kept when something serves them: --metrics, or /metrics on the HTTP API.
  const metrics = metricsListen || httpPlan ? new NodeMetrics({ dataDir }) : undefined;
  // Every node publishes its volumes' IO each second for the dashboard of any node.
  const ioStats = new IoStats();
  let natsUrls: string[];
  try {
    // Credentials in a URL do not count as servers; a bad URL list is a usage error.
    natsUrls = natsServersWithoutCredentials(natsServerList(natsUrl));
  } catch (err) {
    throw err instanceof NatsAuthError ? new UsageError(err.message) : err;
  }
  const kvReplicas = kvReplicasFlag !== undefined
    ? Number(kvReplicasFlag)
    : defaultKvReplicas(natsUrls.length);
  const node = new CairnNode({
    natsUrl: natsServerList(natsUrl).join(","),
    natsAuth,
    // Without NATS the node serves nothing (the connection closes only when nats-server
    // refuses the node's credentials): exit, so a supervisor restarts it.
    onNatsClosed: () => Deno.exit(1),
    kvReplicas,
    dataDir,
    nodeId: flagString(args, "node", "CAIRN_NODE"),
    zone: flagString(args, "zone", "CAIRN_ZONE"),
    capacityBytes: flagSize(args, "capacity", "CAIRN_CAPACITY"),
    quiet: args.flags.has("quiet"),
    scrub: scrubSettings(args),
    replicaGraceMs: optionalDurationMs(args, "replica-grace", "CAIRN_REPLICA_GRACE"),
    rebuildRateBytesPerSec: rebuildRate,
    metrics: teeMetrics(metrics, ioStats),
  });
  // Bound before the node starts (its constructor made the data dir), so a taken port fails the start, not a running node.
  const metricsServer = metrics && metricsListen
    ? serveMetrics(metricsListen, metricsHandler(metrics), {
      addressFile: `${dataDir}/metrics.address`,
    })
    : null;
  await node.start();
  metrics?.attach(
    {
      node: node.id,
      zone: flagString(args, "zone", "CAIRN_ZONE") ?? "default",
      version: cairnVersion,
    },
    () => node.metricsSnapshot(),
  );
  const stopMemoryTrim = startMemoryTrim();
  const stopStats = startStatsPublisher(node.natsConnection, node.id, ioStats);
  const nbdListen = flagString(args, "nbd", "CAIRN_NBD");
  const nbd = nbdListen
    ? await startNodeGateway(node, nbdListen, {
      addressFile: `${dataDir}/nbd.address`,
      quiet: args.flags.has("quiet"),
    })
    : null;
  let http = null;
  if (httpPlan) {
    try {
      http = await startNodeHttp(
        {
          id: node.id,
          control: node.control,
          readiness: () => node.readiness(),
          metrics: metrics ? () => metrics.render() : undefined,
          stats: natsStatsFeed(node.natsConnection),
        },
        httpPlan,
        (message) => console.error(`${node.id} ERROR ${message}`),
      );
    } catch (err) {
      // The port is taken, say: stop cleanly rather than serve without the API asked for.
      stopMemoryTrim();
      stopStats();
      await nbd?.close();
      await node.stop();
      await localNats?.stop();
      throw new Error(`--http ${httpPlan.hostname}:${httpPlan.port}: ${(err as Error).message}`);
    }
  }
  if (http) {
    console.error(
      `HTTP API at ${http.url}/api/v1 (dashboard ${http.url}/, docs ${http.url}/docs; ${
        httpPlan!.access.tokens.length
          ? `${httpPlan!.access.tokens.length} tokens`
          : "no tokens: open, on loopback only"
      })`,
    );
  }
  console.error(
    `node ${node.id} serving (NATS ${redactNatsUrl(natsUrl)}; CRC-32C: ${crc32cImplementation}${
      metricsServer ? `; metrics: http://${metricsServer.address}/metrics` : ""
    }); Ctrl-C to stop`,
  );
  await untilStopSignal();
  stopMemoryTrim();
  stopStats();
  await http?.close();
  await nbd?.close();
  await metricsServer?.close();
  metrics?.stop();
  await node.stop();
  await localNats?.stop();
  return 0;
}

/** `--http` and its token settings, checked before the node starts (null without --http). */
async function httpSettings(args: ReturnType<typeof parseArgs>): Promise<HttpPlan | null> {
  const listen = flagString(args, "http", "CAIRN_HTTP");
  if (!listen) return null;
  try {
    return await planHttp({
      listen,
      tokensFile: flagString(args, "http-tokens"),
      tokensEnv: Deno.env.get("CAIRN_HTTP_TOKENS"),
      open: flagString(args, "http-open", "CAIRN_HTTP_OPEN"),
    });
  } catch (err) {
    throw err instanceof TokenConfigError ? new UsageError(err.message) : err;
  }
}

function optionalDurationMs(
  args: ReturnType<typeof parseArgs>,
  flag: string,
  env: string,
): number | undefined {
  const text = flagString(args, flag, env);
  return text === undefined ? undefined : parseDurationMs(text, flag);
}

/** `--scrub-interval` and `--scrub-rate`, as far as given (the rest keep scrub.ts defaults). */
function scrubSettings(args: ReturnType<typeof parseArgs>) {
  const interval = flagString(args, "scrub-interval", "CAIRN_SCRUB_INTERVAL");
  const rate = flagSize(args, "scrub-rate", "CAIRN_SCRUB_RATE");
  return {
    ...(interval === undefined ? {} : { intervalMs: parseDurationMs(interval, "scrub-interval") }),
    ...(rate === undefined ? {} : { rateBytesPerSec: rate }),
  };
}

await runCommand(main, usage);
