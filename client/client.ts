/** The Cairn client: control plane calls and opening volumes. */
import type { NatsConnection } from "@nats-io/nats-core";
import { controlTimeoutMs, drainTimeoutMs, requestJson } from "../protocol/control.ts";
import type { ControlApi, ControlRequest, ControlResult } from "../protocol/control_api.ts";
import { NatsTransport } from "../protocol/nats_transport.ts";
import { type ControlOp, subjects } from "../protocol/subjects.ts";
import type {
  ClusterStatus,
  CreateVolumeRequest,
  DrainResult,
  NodeInfo,
  OkToStop,
  VerifyProgress,
  VerifyReport,
  VolumeInfo,
} from "../protocol/schemas.ts";
import { CairnError } from "../protocol/errors.ts";
import { RequestMux } from "../protocol/request_mux.ts";
import { Volume, type VolumeOptions } from "./volume.ts";
import { verifyVolume } from "../actors/control/verify.ts";
import { connectNats, type NatsAuth, natsAuthFromEnv } from "../protocol/nats_auth.ts";

export interface ConnectOptions {
  /**
   * NATS URL(s), a list or comma-separated (every member of a NATS cluster); default env
   * NATS_URL, else nats://127.0.0.1:4222
   */
  servers?: string | string[];
  name?: string;
  /**
   * NATS credentials: a `.creds` or nkey seed file, or a user and password (docs/NATS_AUTH.md);
   * default env NATS_CREDS, or NATS_USER and NATS_PASSWORD. Credentials in a URL
   * (`nats://user:password@host:4222`) are used when none are given here.
   */
  auth?: NatsAuth;
  /**
   * Subject prefix of this connection's reply inboxes (default env NATS_INBOX_PREFIX, else
   * `_INBOX`). A NATS user allowed to subscribe only to `<prefix>.>` cannot see replies meant
   * for other users (docs/NATS_AUTH.md).
   */
  inboxPrefix?: string;
}

/** The control plane over NATS (`cairn.v1.ctl.<op>`), plus opening volumes for IO. */
export class CairnClient implements ControlApi {
  /** Shared by every volume this client opens. */
  readonly mux: RequestMux;
  readonly transport: NatsTransport;

  /** `inboxPrefix`: where replies come (default `_INBOX`), see ConnectOptions. */
  constructor(readonly nc: NatsConnection, options: { inboxPrefix?: string } = {}) {
    this.mux = new RequestMux(nc, options.inboxPrefix);
    this.transport = new NatsTransport(nc, this.mux);
  }

  /** One control op over NATS; its request and result are the schemas of control_api.ts. */
  call<O extends ControlOp>(
    op: O,
    request: ControlRequest<O>,
    timeoutMs = op === "node.drain" ? drainTimeoutMs : controlTimeoutMs,
  ): Promise<ControlResult<O>> {
    return requestJson<ControlResult<O>>(this.transport, subjects.control(op), request, timeoutMs);
  }

  createVolume(request: CreateVolumeRequest): Promise<VolumeInfo> {
    return this.call("volume.create", request);
  }

  listVolumes(): Promise<VolumeInfo[]> {
    return this.call("volume.list", {});
  }

  volumeInfo(name: string): Promise<VolumeInfo> {
    return this.call("volume.info", { name });
  }

  async deleteVolume(name: string): Promise<void> {
    await this.call("volume.delete", { name });
  }

  listNodes(): Promise<NodeInfo[]> {
    return this.call("node.list", {});
  }

  /** Drains a node: no new volumes or replicas there, and its volumes handed off. */
  drainNode(node: string): Promise<DrainResult> {
    return this.call("node.drain", { node });
  }

  undrainNode(node: string): Promise<NodeInfo> {
    return this.call("node.undrain", { node });
  }

  /** Whether stopping the node now keeps every volume serving, and if not, why. */
  okToStop(node: string): Promise<OkToStop> {
    return this.call("node.ok-to-stop", { node });
  }

  clusterStatus(): Promise<ClusterStatus> {
    return this.call("cluster.status", {});
  }

  /** Planned handoff of a volume's ownership to `to` (which must hold every segment in sync). */
  moveVolume(name: string, to: string): Promise<VolumeInfo> {
    return this.call("volume.move", { name, to });
  }

  /**
   * Opens a volume for IO; NO_SUCH_VOLUME if it does not exist. The handle is bound to
   * this incarnation: once the volume is deleted, every call fails with NO_SUCH_VOLUME,
   * even after a new volume of the same name is created.
   */
  async openVolume(name: string, options: VolumeOptions = {}): Promise<Volume> {
    const info = await this.volumeInfo(name);
    return await Volume.open(this.mux, name, info.incarnation, {
      exists: () =>
        this.volumeInfo(name).then((now) => now.incarnation === info.incarnation, (err) => {
          if (err instanceof CairnError && err.code === "NO_SUCH_VOLUME") return false;
          return true;
        }),
      ...options,
    });
  }

  verifyVolume(name: string, onProgress?: (p: VerifyProgress) => void): Promise<VerifyReport> {
    return verifyVolume(
      { volumeInfo: (n) => this.volumeInfo(n), transport: this.transport },
      name,
      onProgress,
    );
  }

  async close(): Promise<void> {
    this.mux.close();
    await this.nc.drain();
  }
}

export async function connectCluster(options: ConnectOptions = {}): Promise<CairnClient> {
  const servers = options.servers ?? Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222";
  const inboxPrefix = options.inboxPrefix ?? (Deno.env.get("NATS_INBOX_PREFIX") || undefined);
  const nc = await connectNats({
    servers,
    auth: options.auth ?? natsAuthFromEnv(),
    inboxPrefix,
    name: options.name ?? "cairn-client",
    // Async traces allocate an Error per request: measurable on the data path.
    noAsyncTraces: true,
    // Long-running users (the NBD gateway) ride out a NATS restart or the loss of one server
    // of a cluster; IO retries meanwhile. The next server is tried after 250 ms (the default
    // is 2 s), and pings every 2 s leave a server that hangs after 3 unanswered ones.
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    pingInterval: 2000,
    maxPingOut: 3,
  });
  return new CairnClient(nc, { inboxPrefix });
}
