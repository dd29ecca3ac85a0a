/**
 * NBD gateway: every Cairn volume as a Network Block Device export, so QEMU, nbdcopy, fio
 * and the Linux kernel use it as a disk. See docs/NBD.md.
 *
 * ```ts
 * import { connectCluster } from "../mod.ts";
 * import { startClusterGateway } from "./mod.ts";
 * const client = await connectCluster();
 * const gateway = await startClusterGateway({ client, listen: ["127.0.0.1:10809"] });
 * // qemu-img info nbd://127.0.0.1:10809/<volume>
 * await gateway.close();
 * ```
 */
import { untilStopSignal } from "../server/process.ts";
import * as fs from "node:fs";
import type { NatsConnection } from "@nats-io/nats-core";
import { CairnClient } from "../client/client.ts";
import { makeLogger } from "../server/log.ts";
import { ClusterExportSource, type LocalVolumeActor, type LocalVolumeLookup } from "./backend.ts";
import {
  defaultNbdPort,
  formatListenAddress,
  type GatewayLog,
  type ListenAddress,
  NbdGateway,
  parseListenAddress,
} from "./server.ts";

export {
  ClusterExportSource,
  type ExportInfo,
  type ExportSource,
  LocalFirstBackend,
  type LocalVolumeActor,
  type LocalVolumeLookup,
  type NbdBackend,
  VolumeBackend,
} from "./backend.ts";
export {
  defaultNbdPort,
  formatListenAddress,
  type GatewayLog,
  type GatewayOptions,
  type ListenAddress,
  NbdGateway,
  nbdUri,
  parseListenAddress,
} from "./server.ts";
export { RangeLocks, SubBlockIo } from "./rmw.ts";
export {
  errnoFor,
  maximumBlockBytes,
  minimumBlockBytes,
  preferredBlockBytes,
} from "./connection.ts";
export * as nbdProtocol from "./protocol.ts";

export interface ClusterGatewayOptions {
  client: CairnClient;
  /** Addresses to listen on: `HOST:PORT` or `unix:/path` (port 0: the OS picks). */
  listen: string[];
  /** Finds the in-process volume actor, on a node, for IO without a NATS hop. */
  localVolume?: LocalVolumeLookup;
  /** Written with the bound addresses, one per line (useful with port 0). */
  addressFile?: string;
  log?: GatewayLog;
}

/** Starts a gateway whose exports are the cluster's volumes. */
export async function startClusterGateway(options: ClusterGatewayOptions): Promise<NbdGateway> {
  const gateway = new NbdGateway({
    source: new ClusterExportSource(options.client, options.localVolume),
    log: options.log,
  });
  const bound: ListenAddress[] = [];
  try {
    for (const text of options.listen) bound.push(await gateway.listen(parseListenAddress(text)));
  } catch (err) {
    await gateway.close(0);
    throw err;
  }
  if (options.addressFile) {
    // Written aside and renamed, so a reader never sees a partial file.
    const partial = `${options.addressFile}.partial`;
    fs.writeFileSync(partial, bound.map(formatListenAddress).join("\n") + "\n");
    fs.renameSync(partial, options.addressFile);
  }
  return gateway;
}

/** What the node-side gateway needs of a running CairnNode. */
export interface GatewayNode {
  readonly id: string;
  readonly natsConnection: NatsConnection;
  localVolume(name: string): LocalVolumeActor | undefined;
}

/**
 * The gateway next to a node (`deno task serve --nbd ADDR`): shares the node's NATS
 * connection, and serves IO in-process for the volumes this node owns.
 */
export async function startNodeGateway(
  node: GatewayNode,
  listen: string,
  options: { addressFile?: string; quiet?: boolean } = {},
): Promise<{ gateway: NbdGateway; close(): Promise<void> }> {
  const client = new CairnClient(node.natsConnection);
  const logger = makeLogger(node.id, options.quiet);
  const gateway = await startClusterGateway({
    client,
    listen: listen.split(",").map((s) => s.trim()).filter(Boolean),
    localVolume: (name) => node.localVolume(name),
    addressFile: options.addressFile,
    log: (level, message) => logger[level](message),
  });
  logger.info(`nbd gateway listening on ${gateway.addresses.map(formatListenAddress).join(", ")}`);
  return {
    gateway,
    async close() {
      await gateway.close();
      // The NATS connection is the node's: only this client's request mux is ours.
      client.mux.close();
    },
  };
}

/**
 * `deno task cairn nbd --listen ADDR[,ADDR...]`: a standalone gateway that is only a client of
 * the cluster. Runs until SIGINT or SIGTERM.
 */
export async function runGatewayCommand(
  client: CairnClient,
  listen: string | undefined,
  options: { addressFile?: string } = {},
): Promise<number> {
  const gateway = await startClusterGateway({
    client,
    // Loopback unless told otherwise: NBD has no authentication.
    listen: (listen ?? `127.0.0.1:${defaultNbdPort}`).split(",").map((s) => s.trim()).filter(
      Boolean,
    ),
    addressFile: options.addressFile,
    log: (level, message) => console.error(`${new Date().toISOString()} nbd ${level} ${message}`),
  });
  console.error(
    `nbd gateway listening on ${
      gateway.addresses.map(formatListenAddress).join(", ")
    }; Ctrl-C to stop`,
  );
  await untilStopSignal();
  await gateway.close();
  return 0;
}
