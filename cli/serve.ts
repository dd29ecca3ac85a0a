/**
 * `deno task serve`: run one Cairn node. With no NATS URL at all it starts its
 * own nats-server under the data dir, so one node runs with one command.
 */
import { crc32cImplementation } from "../protocol/crc32c.ts";
import { startMemoryTrim } from "../server/memory_trim.ts";
import { CairnNode, defaultKvReplicas, natsServerList } from "../server/node.ts";
import { untilStopSignal } from "../server/process.ts";
import { type LocalNats, startNatsServer } from "../server/nats_server.ts";
import { flagSize, flagString, parseArgs, runCommand, UsageError } from "./args.ts";
import { startNodeGateway } from "../nbd/mod.ts";

const usage =
  `usage: deno task serve [--nats URL[,URL...]] [--kv-replicas N] [--data DIR] [--node ID]
                       [--zone NAME] [--capacity BYTES]
  --nats URLS       NATS server, or every server of a NATS cluster comma-separated (env NATS_URL);
                    none: start a local nats-server
  --kv-replicas N   replicas of the metadata bucket if this node creates it: 1, 3 or 5 (env
                    CAIRN_KV_REPLICAS; default 3 with three or more NATS URLs, else 1); a bucket
                    that exists keeps its own
  --data DIR        data directory (env CAIRN_DATA, default .cairn/node)
  --node ID         stable node id, stored in the data dir on first start (env CAIRN_NODE)
  --zone NAME       failure zone (env CAIRN_ZONE, default "default")
  --capacity BYTES  capacity used to weight placement, e.g. 100GiB (env CAIRN_CAPACITY; default: the disk's size)
  --nbd ADDR        also serve every volume over NBD at HOST:PORT or unix:/path (env CAIRN_NBD;
                    port 0 picks a free port; bound addresses are written to DIR/nbd.address)
  --quiet           log warnings and errors only`;

async function main(): Promise<number> {
  const args = parseArgs(Deno.args, ["quiet", "help"]);
  if (args.flags.has("help")) {
    console.log(usage);
    return 0;
  }
  const dataDir = flagString(args, "data", "CAIRN_DATA") ?? ".cairn/node";
  let natsUrl = flagString(args, "nats", "NATS_URL");
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
    });
    natsUrl = localNats.url;
    console.error(`started nats-server at ${natsUrl} (pid ${localNats.pid})`);
  }
  const natsUrls = natsServerList(natsUrl);
  const kvReplicas = kvReplicasFlag !== undefined
    ? Number(kvReplicasFlag)
    : defaultKvReplicas(natsUrls.length);
  const node = new CairnNode({
    natsUrl: natsUrls.join(","),
    kvReplicas,
    dataDir,
    nodeId: flagString(args, "node", "CAIRN_NODE"),
    zone: flagString(args, "zone", "CAIRN_ZONE"),
    capacityBytes: flagSize(args, "capacity", "CAIRN_CAPACITY"),
    quiet: args.flags.has("quiet"),
  });
  await node.start();
  const stopMemoryTrim = startMemoryTrim();
  const nbdListen = flagString(args, "nbd", "CAIRN_NBD");
  const nbd = nbdListen
    ? await startNodeGateway(node, nbdListen, {
      addressFile: `${dataDir}/nbd.address`,
      quiet: args.flags.has("quiet"),
    })
    : null;
  console.error(
    `node ${node.id} serving (NATS ${natsUrl}; CRC-32C: ${crc32cImplementation}); Ctrl-C to stop`,
  );
  await untilStopSignal();
  stopMemoryTrim();
  await nbd?.close();
  await node.stop();
  await localNats?.stop();
  return 0;
}

await runCommand(main, usage);
