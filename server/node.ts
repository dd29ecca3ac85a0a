/**
 * A Cairn node process: connects to NATS, opens the metadata bucket, and runs
 * the node runtime (actors/node/runtime.ts) on the system's ports.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import * as fs from "node:fs";
import { JetStreamMetadata } from "../actors/metadata_jetstream.ts";
import type { Logger } from "../actors/replica/host.ts";
import type { VolumeActor } from "../actors/volume/actor.ts";
import { cairnVersion, NodeRuntime } from "../actors/node/runtime.ts";
import { systemClock, systemDisk, systemRandom } from "../actors/system_ports.ts";
import { NatsTransport } from "../protocol/nats_transport.ts";
import { namePattern } from "../protocol/limits.ts";
import { makeLogger } from "./log.ts";
import type { ScrubSettings } from "../actors/volume/scrub.ts";
import type { ControlService } from "../actors/control/service.ts";
import type { Readiness } from "../protocol/schemas.ts";
import type { Metrics } from "../actors/ports.ts";
import type { NodeSnapshot } from "../actors/metrics.ts";
import {
  connectNats,
  type NatsAuth,
  parseNatsServers,
  redactNatsUrl,
} from "../protocol/nats_auth.ts";
import { permissionViolation } from "../protocol/request_mux.ts";

export { cairnVersion };

export interface NodeOptions {
  /** NATS server URL, or several comma-separated (every member of a NATS cluster). */
  natsUrl: string;
  /** NATS credentials (`--creds`, `--user`/`--password`); none: as the URL says. */
  natsAuth?: NatsAuth;
  /**
   * Replicas of the metadata bucket if this node creates it (an existing bucket is kept
   * as it is); default 3 with three or more URLs, else 1.
   */
  kvReplicas?: number;
  dataDir: string;
  nodeId?: string;
  zone?: string;
  capacityBytes?: number;
  quiet?: boolean;
  /** Background scrub interval and rate (`--scrub-interval`, `--scrub-rate`). */
  scrub?: Partial<ScrubSettings>;
  /** `--replica-grace` and `--rebuild-rate` (see NodeRuntimeDeps). */
  replicaGraceMs?: number;
  rebuildRateBytesPerSec?: number;
  /** Called when the NATS connection closed for good while the node runs (`serve` exits). */
  onNatsClosed?: () => void;
  /** Where the node reports IO, copies, ownership and syncs (metrics/); none: not measured. */
  metrics?: Metrics;
}

/** Reads the node id stored in the data dir, or stores the given (or a new) one. */
/** This boot of the machine (a reboot or power cycle changes it), or undefined off Linux. */
function machineBootId(): string | undefined {
  try {
    return fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return undefined;
  }
}

export function stableNodeId(dataDir: string, wanted?: string): string {
  const path = `${dataDir}/node-id`;
  fs.mkdirSync(dataDir, { recursive: true });
  const stored = fs.existsSync(path) ? fs.readFileSync(path, "utf8").trim() : "";
  if (stored && wanted && stored !== wanted) {
    throw new Error(`data dir ${dataDir} belongs to node ${stored}, not ${wanted}`);
  }
  const id = stored || wanted || `node-${crypto.randomUUID().slice(0, 8)}`;
  if (!namePattern.test(id)) throw new Error(`node id ${id} is not a valid name`);
  if (!stored) fs.writeFileSync(path, id + "\n");
  return id;
}

function defaultCapacityBytes(dataDir: string): number {
  const stats = fs.statfsSync(dataDir);
  return stats.blocks * stats.bsize;
}

/** Splits a comma-separated NATS URL list (as `--nats` and NATS_URL take it). */
export function natsServerList(urls: string | string[]): string[] {
  const list = (Array.isArray(urls) ? urls : [urls]).flatMap((u) => u.split(","))
    .map((u) => u.trim()).filter((u) => u.length > 0);
  if (list.length === 0) throw new Error("no NATS URL given");
  return list;
}

/** The URLs without credentials in them (for counting servers and for logs). */
export function natsServersWithoutCredentials(urls: string | string[]): string[] {
  return parseNatsServers(urls).servers;
}

/** Metadata bucket replicas when none are asked for: 3 on a NATS cluster of three or more. */
export function defaultKvReplicas(natsUrlCount: number): number {
  return natsUrlCount >= 3 ? 3 : 1;
}

/**
 * A node rides out any NATS outage: it never gives up reconnecting, tries the next server
 * after 250 ms (plus up to 100 ms jitter) instead of the default 2 s, and pings every 2 s
 * so a server that hangs without closing the socket is left after 3 unanswered pings.
 */
export const natsReconnectOptions = {
  maxReconnectAttempts: -1,
  reconnectTimeWait: 250,
  reconnectJitter: 100,
  pingInterval: 2000,
  maxPingOut: 3,
} as const;

export class CairnNode {
  readonly id: string;
  private nc!: NatsConnection;
  private transport!: NatsTransport;
  private runtime!: NodeRuntime;
  private readonly log: Logger;
  private stopped = false;
  private started = false;
  /** False between a NATS disconnect and the reconnect. */
  private natsConnected = false;

  constructor(private readonly options: NodeOptions) {
    this.id = stableNodeId(options.dataDir, options.nodeId);
    this.log = makeLogger(this.id, options.quiet);
  }

  get natsConnection(): NatsConnection {
    return this.nc;
  }

  async start(): Promise<void> {
    const { options } = this;
    const servers = natsServerList(options.natsUrl);
    this.nc = await connectNats({
      servers,
      auth: options.natsAuth,
      name: `cairn-node-${this.id}`,
      ...natsReconnectOptions,
      // Async traces allocate an Error per request: measurable on the data path.
      noAsyncTraces: true,
    });
    this.natsConnected = true;
    this.watchNatsStatus();
    this.transport = new NatsTransport(this.nc);
    this.runtime = new NodeRuntime({
      nodeId: this.id,
      zone: options.zone ?? "default",
      capacityBytes: options.capacityBytes ?? defaultCapacityBytes(options.dataDir),
      dataDir: options.dataDir,
      disk: systemDisk,
      bootId: machineBootId(),
      transport: this.transport,
      metadata: await JetStreamMetadata.open(this.nc, {
        replicas: options.kvReplicas ?? defaultKvReplicas(servers.length),
        log: (message) => this.log.warn(message),
      }),
      clock: systemClock,
      random: systemRandom,
      log: this.log,
      pid: Deno.pid,
      scrub: options.scrub,
      replicaGraceMs: options.replicaGraceMs,
      rebuildRateBytesPerSec: options.rebuildRateBytesPerSec,
      metrics: options.metrics,
      onFailStop: (reason) => {
        // The replica host logged the details; exit without a graceful close, which would sync.
        this.log.error(
          `exiting after fail-stop (${reason}); restart the node once the disk is fixed`,
        );
        Deno.exit(70);
      },
    });
    await this.runtime.start();
    this.started = true;
    this.log.info(
      `node up: nats ${
        redactNatsUrl(options.natsUrl)
      }, data ${options.dataDir}, ${this.runtime.host.volumeNames().length} volumes with local segments`,
    );
  }

  /** Logs NATS disconnects and reconnects (the connection itself retries forever). */
  private watchNatsStatus(): void {
    (async () => {
      for await (const status of this.nc.status()) {
        if (this.stopped) return;
        if (status.type === "disconnect") {
          this.natsConnected = false;
          this.log.warn(`NATS: disconnected from ${status.server}; reconnecting`);
        } else if (status.type === "reconnect") {
          this.natsConnected = true;
          this.log.warn(`NATS: reconnected to ${status.server}`);
        } else if (status.type === "error") {
          // A permissions violation never stops the node: the request or subscription it
          // concerns fails, and this says which subject the node's NATS user lacks.
          const violation = permissionViolation(status.error);
          this.log.error(
            violation
              ? `NATS permissions violation: this node's NATS user may not ${
                violation.operation === "subscription" ? "subscribe to" : "publish to"
              } ${violation.subject}; give the node user the permissions in docs/NATS_AUTH.md`
              : `NATS: ${status.error.message}`,
          );
        }
      }
    })().catch(() => {});
    // The connection retries forever; it closes for good only when nats-server refuses the
    // node's credentials twice in a row (or on stop). A node without NATS serves nothing.
    this.nc.closed().then((err) => {
      if (this.stopped) return;
      this.natsConnected = false;
      this.log.error(
        `NATS connection closed for good${
          err ? `: ${err.message}` : ""
        } (check the node's NATS credentials: --creds, or --user and --password)`,
      );
      this.options.onNatsClosed?.();
    }).catch(() => {});
  }

  /** This node's control service (for the HTTP API: any node answers for the cluster). */
  get control(): ControlService {
    return this.runtime.control;
  }

  /**
   * Ready: started, connected to NATS, and every volume whose layout names this node as
   * owner is served here (taken over and reconciled).
   */
  async readiness(): Promise<Readiness> {
    const base = { node: this.id, natsConnected: this.natsConnected && !this.nc.isClosed() };
    if (!this.started || this.stopped) {
      const detail = this.stopped ? "stopping" : "starting";
      return { ...base, ready: false, volumesOwned: 0, notServing: [], detail };
    }
    if (!base.natsConnected) {
      return {
        ...base,
        ready: false,
        volumesOwned: 0,
        notServing: [],
        detail: "NATS disconnected",
      };
    }
    let owned: { owned: string[]; notServing: string[] };
    try {
      owned = await this.runtime.ownedVolumes();
    } catch (err) {
      const detail = `cannot read the metadata: ${(err as Error).message}`;
      return { ...base, ready: false, volumesOwned: 0, notServing: [], detail };
    }
    const ready = owned.notServing.length === 0;
    return {
      ...base,
      ready,
      volumesOwned: owned.owned.length,
      notServing: owned.notServing,
      detail: ready
        ? `serving all ${owned.owned.length} volumes it owns`
        : `${owned.notServing.length} of ${owned.owned.length} owned volumes not served yet`,
    };
  }

  /** What the node's gauges show now (metrics/). */
  metricsSnapshot(): NodeSnapshot {
    return this.runtime?.metricsSnapshot() ?? { volumes: [], peers: [] };
  }

  /** The in-process volume actor, if this node serves that volume now (for gateways). */
  localVolume(name: string): VolumeActor | undefined {
    return this.runtime?.localVolume(name);
  }

  /** Graceful stop: stop taking IO, finish what is in flight, fdatasync, close. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.log.info("stopping: finishing IO in flight");
    await this.runtime?.stop();
    this.transport?.close();
    await this.nc?.drain().catch(() => {});
    this.log.info("stopped");
  }
}
