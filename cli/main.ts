/** `deno task cairn`: the Cairn command line. */
import * as fs from "node:fs";
import { type CairnClient, connectCluster } from "../client/client.ts";
import { CairnError } from "../protocol/errors.ts";
import { degradedSegmentCount, type OkToStop, type VolumeInfo } from "../protocol/schemas.ts";
import { blockSizeBytes } from "../protocol/limits.ts";
import {
  flagInt,
  flagSize,
  flagString,
  formatBytes,
  natsAuthFlags,
  natsAuthUsage,
  natsInboxUsage,
  parseArgs,
  type ParsedArgs,
  runCommand,
  UsageError,
} from "./args.ts";
import { Progress } from "./progress.ts";
import { runGatewayCommand } from "../nbd/mod.ts";

const usage =
  `usage: deno task cairn [--nats URL] [--creds FILE | --user NAME --password PASS] COMMAND
  volume create NAME --size 64MiB [--replicas 3] [--segment-size 8MiB] [--min-in-sync N] [--read-policy local|round-robin|least-outstanding|weighted]
  volume list [--json]
  volume info NAME [--json]
  volume delete NAME
  volume verify NAME [--json]
  volume move NAME --to NODE       planned handoff of ownership (NODE must hold every segment in sync)
  node list [--json]
  node drain NODE [--json]         no new volumes or replicas on NODE; hand off the volumes it owns
  node undrain NODE                NODE takes new volumes and replicas again
  node ok-to-stop NODE [--json]    whether stopping NODE now keeps every volume serving (exit 1 if not)
  cluster status [--json]          nodes and volumes in one look (down nodes, degraded volumes)
  import NAME FILE [--offset BYTES]
  export NAME FILE [--offset BYTES] [--length BYTES]
  nbd [--listen HOST:PORT|unix:/path[,...]] [--address-file FILE]   NBD gateway for every volume (default 127.0.0.1:10809; until Ctrl-C)
NATS URL from --nats or NATS_URL (default nats://127.0.0.1:4222). Sizes take KiB/MiB/GiB/TiB.
${natsAuthUsage}
${natsInboxUsage}`;

const commands = ["volume", "node", "cluster", "import", "export", "nbd"];

/** Bytes per IO request during import/export; several are kept in flight. */
const transferChunkBytes = 4 * 1024 * 1024;
const transferChunksInFlight = 4;

function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

function need(args: ParsedArgs, index: number, what: string): string {
  const value = args.positional[index];
  if (!value) throw new UsageError(`missing ${what}`);
  return value;
}

function describeVolume(v: VolumeInfo): string {
  const states = new Map<string, number>();
  for (const s of v.segments) {
    for (const r of s.replicas) states.set(r.state, (states.get(r.state) ?? 0) + 1);
  }
  const replicaSummary = [...states].map(([state, n]) => `${n} ${state}`).join(", ");
  return [
    `name:          ${v.name}`,
    `size:          ${formatBytes(v.sizeBytes)} (${v.sizeBytes} bytes)`,
    `block size:    ${v.blockSize}`,
    `segment size:  ${formatBytes(v.segmentBytes)} (${v.segments.length} segments)`,
    `replicas:      ${v.replicas} (min in-sync ${v.minInSync}; ${replicaSummary})`,
    `read policy:   ${v.readPolicy}`,
    `id:            ${v.id} (incarnation ${v.incarnation})`,
    `owner:         ${v.owner} (term ${v.term}, layout revision ${v.layoutRevision}${
      v.home && v.home !== v.owner ? `; home ${v.home}` : ""
    })`,
    `created:       ${v.createdAt}`,
    `health:        ${
      degradedSegmentCount(v) === 0
        ? "ok"
        : `degraded: ${
          degradedSegmentCount(v)
        } of ${v.segments.length} segments lack an in-sync replica on a live node`
    }${v.downNodes.length ? ` (down: ${v.downNodes.join(", ")})` : ""}`,
    ...v.copies.map((c) =>
      `${c.kind.padEnd(15)}${c.node}: ${c.segments} segments, ${formatBytes(c.bytesDone)} copied, ${
        formatBytes(c.bytesLeft)
      } left, ${formatBytes(c.bytesPerSec)}/s, ${(c.elapsedMs / 1000).toFixed(1)} s`
    ),
    ...v.segments.map((s) =>
      `  segment ${String(s.index).padStart(4)}: ${
        s.replicas.map((r) =>
          `${r.node}(${r.state}${v.downNodes.includes(r.node) ? ", node down" : ""})`
        ).join(" ")
      }`
    ),
  ].join("\n");
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n");
}

async function volumeCommand(client: CairnClient, args: ParsedArgs): Promise<number> {
  const sub = need(args, 1, "volume command");
  const json = args.flags.has("json");
  switch (sub) {
    case "create": {
      const name = need(args, 2, "volume name");
      const sizeBytes = flagSize(args, "size");
      if (sizeBytes === undefined) throw new UsageError("volume create needs --size");
      const info = await client.createVolume({
        name,
        sizeBytes,
        replicas: flagInt(args, "replicas"),
        segmentBytes: flagSize(args, "segment-size"),
        minInSync: flagInt(args, "min-in-sync"),
        readPolicy: flagString(args, "read-policy"),
      });
      if (json) printJson(info);
      else {console.log(
          `created ${info.name}: ${
            formatBytes(info.sizeBytes)
          }, ${info.replicas} replicas, owner ${info.owner}`,
        );}
      return 0;
    }
    case "list": {
      const volumes = await client.listVolumes();
      if (json) return printJson(volumes), 0;
      if (!volumes.length) return console.log("no volumes"), 0;
      console.log(table([
        ["NAME", "SIZE", "REPLICAS", "OWNER", "TERM", "DEGRADED SEGMENTS"],
        ...volumes.map((v) => [
          v.name,
          formatBytes(v.sizeBytes),
          String(v.replicas),
          v.owner,
          String(v.term),
          String(degradedSegmentCount(v)),
        ]),
      ]));
      return 0;
    }
    case "info": {
      const info = await client.volumeInfo(need(args, 2, "volume name"));
      if (json) printJson(info);
      else console.log(describeVolume(info));
      return 0;
    }
    case "delete": {
      const name = need(args, 2, "volume name");
      await client.deleteVolume(name);
      console.log(`deleted ${name}`);
      return 0;
    }
    case "move": {
      const name = need(args, 2, "volume name");
      const to = flagString(args, "to");
      if (!to) throw new CairnError("BAD_REQUEST", "volume move needs --to NODE");
      const info = await client.moveVolume(name, to);
      if (json) printJson(info);
      else console.log(`moved ${name}: owner ${info.owner} (term ${info.term})`);
      return 0;
    }
    case "verify": {
      const name = need(args, 2, "volume name");
      const info = await client.volumeInfo(name);
      const progress = new Progress(`verify ${name}`, info.sizeBytes);
      const report = await client.verifyVolume(
        name,
        (p) => progress.update(Math.min(info.sizeBytes, p.segmentsDone * info.segmentBytes)),
      );
      progress.done(info.sizeBytes);
      if (json) printJson(report);
      else if (report.ok) {
        console.log(`ok: ${report.segments} segments, ${report.replicasChecked} replicas agree`);
      } else {
        for (const m of report.mismatches) console.log(`segment ${m.segment}: ${m.problem}`);
        console.log(`FAILED: ${report.mismatches.length} problems in ${report.segments} segments`);
      }
      return report.ok ? 0 : 1;
    }
    default:
      throw new UsageError(`unknown volume command ${sub}`);
  }
}

async function nodeCommand(client: CairnClient, args: ParsedArgs): Promise<number> {
  const sub = need(args, 1, "node command");
  const json = args.flags.has("json");
  switch (sub) {
    case "list":
      return await listNodes(client, json);
    case "drain": {
      const result = await client.drainNode(need(args, 2, "node id"));
      if (json) return printJson(result), 0;
      for (const m of result.moved) console.log(`moved ${m.volume} to ${m.to}`);
      for (const b of result.blocked) console.log(`stays  ${b.volume}: ${b.reason}`);
      console.log(
        `drained ${result.node}: ${result.moved.length} volumes moved, ${result.blocked.length} stay`,
      );
      printOkToStop(result.okToStop);
      return result.blocked.length ? 1 : 0;
    }
    case "undrain": {
      const node = await client.undrainNode(need(args, 2, "node id"));
      if (json) return printJson(node), 0;
      console.log(`undrained ${node.id} (state ${node.state}): it takes new volumes and replicas`);
      return 0;
    }
    case "ok-to-stop": {
      const result = await client.okToStop(need(args, 2, "node id"));
      if (json) printJson(result);
      else printOkToStop(result);
      return result.okToStop ? 0 : 1;
    }
    default:
      throw new UsageError(`unknown node command ${sub}`);
  }
}

function printOkToStop(result: OkToStop): void {
  if (result.okToStop) {
    console.log(`ok to stop ${result.node}: every volume keeps serving`);
    return;
  }
  console.log(`NOT ok to stop ${result.node}:`);
  for (const r of result.risks) console.log(`  ${r.kind.padEnd(18)} ${r.detail}`);
}

async function listNodes(client: CairnClient, json: boolean): Promise<number> {
  const nodes = await client.listNodes();
  if (json) return printJson(nodes), 0;
  if (!nodes.length) return console.log("no nodes"), 0;
  console.log(table([
    ["ID", "ZONE", "STATE", "LIVE", "CAPACITY", "LAST HEARTBEAT", "STARTED"],
    ...nodes.map((n) => [
      n.id,
      n.zone,
      n.state,
      n.live ? "yes" : "no",
      formatBytes(n.capacityBytes),
      n.lastHeartbeatAgoMs === null ? "-" : `${Math.round(n.lastHeartbeatAgoMs)} ms ago`,
      n.startedAt,
    ]),
  ]));
  return 0;
}

async function clusterCommand(client: CairnClient, args: ParsedArgs): Promise<number> {
  const sub = need(args, 1, "cluster command");
  if (sub !== "status") throw new UsageError(`unknown cluster command ${sub}`);
  const status = await client.clusterStatus();
  if (args.flags.has("json")) return printJson(status), 0;
  const list = (names: string[]) => names.length ? ` (${names.join(", ")})` : "";
  console.log([
    `version:  ${status.version} (answered by ${status.answeredBy})`,
    `nodes:    ${status.nodes.total}, ${status.nodes.live} live${list(status.nodes.down)}`,
    `volumes:  ${status.volumes.total}, ${status.volumes.degraded.length} degraded${
      list(status.volumes.degraded)
    }, ${status.volumes.unowned.length} not yet served${list(status.volumes.unowned)}`,
  ].join("\n"));
  return 0;
}

/** Runs `work` over chunk indexes with a fixed number in flight, in order of start. */
async function pipeline(count: number, inFlight: number, work: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, async () => {
    while (next < count) await work(next++);
  }));
}

async function importCommand(client: CairnClient, args: ParsedArgs): Promise<number> {
  const name = need(args, 1, "volume name");
  const path = need(args, 2, "file");
  const offset = flagSize(args, "offset") ?? 0;
  const volume = await client.openVolume(name);
  const sizeBytes = fs.statSync(path).size;
  if (offset % blockSizeBytes) {
    throw new UsageError(`--offset must be a multiple of ${blockSizeBytes}`);
  }
  if (offset + sizeBytes > volume.sizeBytes) {
    throw new CairnError(
      "OUT_OF_RANGE",
      `${formatBytes(sizeBytes)} at ${offset} does not fit in ${formatBytes(volume.sizeBytes)}`,
    );
  }
  const fd = fs.openSync(path, "r");
  const progress = new Progress(`import ${name}`, sizeBytes);
  let done = 0;
  try {
    const chunks = Math.ceil(sizeBytes / transferChunkBytes);
    await pipeline(chunks, transferChunksInFlight, async (i) => {
      const at = i * transferChunkBytes;
      const length = Math.min(transferChunkBytes, sizeBytes - at);
      // The tail of a file not a multiple of the block size is padded with zeros.
      const buf = new Uint8Array(Math.ceil(length / blockSizeBytes) * blockSizeBytes);
      fs.readSync(fd, buf, 0, length, at);
      await volume.write(offset + at, buf);
      done += length;
      progress.update(done);
    });
  } finally {
    fs.closeSync(fd);
  }
  await volume.flush();
  progress.done(done);
  console.log(`imported ${formatBytes(sizeBytes)} into ${name} at offset ${offset}`);
  return 0;
}

async function exportCommand(client: CairnClient, args: ParsedArgs): Promise<number> {
  const name = need(args, 1, "volume name");
  const path = need(args, 2, "file");
  const offset = flagSize(args, "offset") ?? 0;
  const volume = await client.openVolume(name);
  const length = flagSize(args, "length") ?? volume.sizeBytes - offset;
  if (offset % blockSizeBytes || length % blockSizeBytes) {
    throw new UsageError(`--offset and --length must be multiples of ${blockSizeBytes}`);
  }
  if (offset + length > volume.sizeBytes) {
    throw new CairnError("OUT_OF_RANGE", `${offset}+${length} is beyond ${volume.sizeBytes}`);
  }
  const fd = fs.openSync(path, "w");
  const progress = new Progress(`export ${name}`, length);
  let done = 0;
  try {
    const chunks = Math.ceil(length / transferChunkBytes);
    await pipeline(chunks, transferChunksInFlight, async (i) => {
      const at = i * transferChunkBytes;
      const data = await volume.read(offset + at, Math.min(transferChunkBytes, length - at));
      fs.writeSync(fd, data, 0, data.length, at);
      done += data.length;
      progress.update(done);
    });
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  progress.done(done);
  console.log(`exported ${formatBytes(length)} of ${name} to ${path}`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, ["json", "help"]);
  if (args.flags.has("help") || args.positional.length === 0) {
    console.log(usage);
    return args.positional.length === 0 && !args.flags.has("help") ? 2 : 0;
  }
  if (!commands.includes(args.positional[0])) {
    throw new UsageError(`unknown command ${args.positional[0]}`);
  }
  const client = await connectCluster({
    servers: flagString(args, "nats", "NATS_URL"),
    auth: natsAuthFlags(args),
    inboxPrefix: flagString(args, "inbox-prefix", "NATS_INBOX_PREFIX"),
  });
  try {
    switch (args.positional[0]) {
      case "volume":
        return await volumeCommand(client, args);
      case "node":
        return await nodeCommand(client, args);
      case "cluster":
        return await clusterCommand(client, args);
      case "import":
        return await importCommand(client, args);
      case "export":
        return await exportCommand(client, args);
      case "nbd":
        return await runGatewayCommand(client, flagString(args, "listen"), {
          addressFile: flagString(args, "address-file"),
        });
      default:
        throw new UsageError(`unknown command ${args.positional[0]}`);
    }
  } finally {
    await client.close().catch(() => {});
  }
}

if (import.meta.main) await runCommand(() => main(Deno.args), usage);
