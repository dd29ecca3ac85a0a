/**
 * The metadata port on a JetStream KV bucket (R3 on a 3-server NATS cluster: every write is
 * on a majority of the servers before it is acknowledged, so losing one server loses none).
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { type KV, Kvm } from "@nats-io/kv";
import { jetstream, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import type { z } from "zod";
import {
  type NodeRecord,
  nodeRecordSchema,
  type VolumeLayout,
  volumeLayoutSchema,
  type VolumeSpec,
  volumeSpecSchema,
} from "../protocol/schemas.ts";
import { CasConflictError, metadataKeys, type MetadataPort, type Versioned } from "./metadata.ts";

export const metadataBucket = "cairn";

export interface MetadataOpenOptions {
  /** Replicas of the bucket if it must be created (an existing bucket keeps its own). Default 1. */
  replicas?: number;
  /** How long to keep trying while JetStream is not ready (no meta leader yet). Default 60 s. */
  timeoutMs?: number;
  /** Progress and warnings (each failed attempt, at most every 5 s; a replica mismatch). */
  log?: (message: string) => void;
}

/** Pause between attempts to create or open the bucket. */
const openRetryMs = 250;
/** At most one progress message per this many ms while retrying. */
const openLogEveryMs = 5000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The stream that holds the bucket, and the subject prefix of its keys. */
const metadataStream = `KV_${metadataBucket}`;
const keySubjectPrefix = `$KV.${metadataBucket}.`;

/** How long a call that met "no responders" is retried (see retryCall). */
const noRespondersRetryMs = 10_000;
const retryPauseMs = 100;
/**
 * Reads wait this long for one answer, and are retried (they change nothing) for up to
 * readRetryMs: a read sent to a stream leader that has just died gets no answer, and a new
 * leader takes about 6 s (up to 9) to be elected. One long timeout would make every read in
 * that window fail after its 5 s instead of being answered by the new leader.
 */
const readAttemptTimeoutMs = 2000;
const readRetryMs = 15_000;

function isNoResponders(err: unknown): boolean {
  return (err as Error).name === "JetStreamNotEnabled" ||
    /no responders/i.test((err as Error).message);
}

function isTimeout(err: unknown): boolean {
  return (err as Error).name === "TimeoutError" || /timeout/i.test((err as Error).message);
}

/**
 * Runs a KV call again while JetStream answers "no responders" (the client reports it as
 * "jetstream is not enabled"): nobody received the request, so nothing was written and a
 * retry is safe even for a create or a CAS. It happens while a replicated stream has no
 * leader (just created, or its leader's server died) or the interest in its subjects has
 * not reached this server yet. Timeouts are not retried here: the write may have happened.
 */
function retryNoResponders<T>(call: () => Promise<T>): Promise<T> {
  return retryCall(call, noRespondersRetryMs, isNoResponders);
}

/** A read: retried on no responders and on timeouts alike. */
function retryRead<T>(call: () => Promise<T>): Promise<T> {
  return retryCall(call, readRetryMs, (err) => isNoResponders(err) || isTimeout(err));
}

async function retryCall<T>(
  call: () => Promise<T>,
  forMs: number,
  retryable: (err: unknown) => boolean,
): Promise<T> {
  const deadline = performance.now() + forMs;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if (!retryable(err) || performance.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, retryPauseMs));
    }
  }
}

export class JetStreamMetadata implements MetadataPort {
  private constructor(
    private readonly kv: KV,
    /** The same bucket for reads, whose requests time out after readAttemptTimeoutMs. */
    private readonly readKv: KV,
    private readonly readJsm: JetStreamManager,
  ) {}

  /**
   * Opens the bucket, creating it with `replicas` if it does not exist. A replicated bucket
   * can only be created once the JetStream cluster has a meta leader (just after the servers
   * start, or while one is lost), and a new replicated bucket takes no write until its
   * stream has a leader, so this retries until both hold or `timeoutMs` passes.
   * With more than one replica, reads go through the stream leader (no direct get, which a
   * lagging follower may answer with an older value).
   */
  static async open(
    nc: NatsConnection,
    options: MetadataOpenOptions = {},
  ): Promise<JetStreamMetadata> {
    const replicas = options.replicas ?? 1;
    const timeoutMs = options.timeoutMs ?? 60_000;
    const kvm = new Kvm(nc);
    const started = performance.now();
    let lastLog = started;
    for (let attempt = 1;; attempt++) {
      try {
        const kv = await kvm.create(metadataBucket, {
          history: 1,
          replicas,
          ...(replicas > 1 ? { allow_direct: false } : {}),
        });
        const status = await kv.status();
        // A new replicated stream answers nothing (not even puts) until it elects a leader.
        if (status.replicas > 1 && !status.streamInfo.cluster?.leader) {
          throw new Error("the bucket's stream has no leader yet");
        }
        if (status.replicas !== replicas) {
          options.log?.(
            `metadata bucket ${metadataBucket} exists with ${status.replicas} replicas, not ${replicas}; kept as it is`,
          );
        }
        const readOptions = { timeout: readAttemptTimeoutMs, checkAPI: false };
        const readKv = await new Kvm(jetstream(nc, readOptions)).open(metadataBucket, {
          // Direct gets may be answered by a lagging follower: only for a single replica.
          allow_direct: status.replicas === 1 && status.streamInfo.config.allow_direct === true,
        });
        return new JetStreamMetadata(kv, readKv, await jetstreamManager(nc, readOptions));
      } catch (err) {
        const waited = performance.now() - started;
        const message = `metadata bucket ${metadataBucket} (${replicas} replicas): ${
          (err as Error).message
        }`;
        if (waited >= timeoutMs) {
          throw new Error(
            `cannot open ${message} after ${attempt} attempts in ${Math.round(waited)} ms${
              replicas > 1 ? ` (does the JetStream cluster have ${replicas} servers up?)` : ""
            }`,
          );
        }
        if (performance.now() - lastLog >= openLogEveryMs || attempt === 1) {
          lastLog = performance.now();
          options.log?.(`waiting for JetStream to open ${message}; retrying`);
        }
        await new Promise((r) => setTimeout(r, openRetryMs));
      }
    }
  }

  private async read<T>(key: string, schema: z.ZodType<T>): Promise<Versioned<T> | null> {
    const entry = await retryRead(() => this.readKv.get(key));
    if (!entry || entry.operation !== "PUT" || entry.value.length === 0) return null;
    const value = schema.parse(JSON.parse(decoder.decode(entry.value)));
    return { value, revision: entry.revision };
  }

  /**
   * Keys are listed from the stream's subjects (one STREAM.INFO, answered by the stream
   * leader), not with `kv.keys()`: that creates a consumer, which the JetStream meta leader
   * may place on a server that just died: after a kill -9 of the stream leader's server,
   * listing failed for 16-27 s (and now and then after), where a new stream leader answers
   * reads after about 6 s.
   */
  private async list<T>(prefix: string, schema: z.ZodType<T>, skip?: (key: string) => boolean) {
    const out: Versioned<T>[] = [];
    const info = await retryRead(() =>
      this.readJsm.streams.info(metadataStream, {
        subjects_filter: `${keySubjectPrefix}${prefix}.>`,
      })
    );
    const names = Object.keys(info.state.subjects ?? {})
      .map((subject) => subject.slice(keySubjectPrefix.length))
      .filter((key) => !skip?.(key));
    for (const key of names.sort()) {
      const entry = await this.read(key, schema);
      if (entry) out.push(entry);
    }
    return out;
  }

  private encode(value: unknown): Uint8Array {
    return encoder.encode(JSON.stringify(value));
  }

  getNode = (id: string) => this.read(metadataKeys.node(id), nodeRecordSchema);
  putNode = async (record: NodeRecord) => {
    const data = this.encode(record);
    await retryNoResponders(() => this.kv.put(metadataKeys.node(record.id), data));
  };
  listNodes = () => this.list("node", nodeRecordSchema);

  async casNode(record: NodeRecord, revision: number): Promise<number> {
    try {
      const data = this.encode(record);
      return await retryNoResponders(() =>
        this.kv.update(metadataKeys.node(record.id), data, revision)
      );
    } catch (err) {
      if (/wrong last sequence/i.test((err as Error).message)) {
        throw new CasConflictError(`node record ${record.id} changed under us`);
      }
      throw err;
    }
  }

  getSpec = (name: string) => this.read(metadataKeys.volumeSpec(name), volumeSpecSchema);
  listSpecs = () =>
    this.list("vol", volumeSpecSchema, (key) => key.endsWith(".layout")).then((specs) =>
      specs.map((s) => s.value)
    );

  async createSpec(spec: VolumeSpec): Promise<boolean> {
    try {
      const data = this.encode(spec);
      await retryNoResponders(() => this.kv.create(metadataKeys.volumeSpec(spec.name), data));
      return true;
    } catch (err) {
      if (/wrong last sequence|key exists/i.test((err as Error).message)) return false;
      throw err;
    }
  }

  getLayout = (name: string) => this.read(metadataKeys.volumeLayout(name), volumeLayoutSchema);

  async createLayout(name: string, layout: VolumeLayout): Promise<number> {
    const data = this.encode(layout);
    return await retryNoResponders(() => this.kv.create(metadataKeys.volumeLayout(name), data));
  }

  async casLayout(name: string, layout: VolumeLayout, revision: number): Promise<number> {
    try {
      const data = this.encode(layout);
      return await retryNoResponders(() =>
        this.kv.update(metadataKeys.volumeLayout(name), data, revision)
      );
    } catch (err) {
      if (/wrong last sequence/i.test((err as Error).message)) {
        throw new CasConflictError(`layout of ${name} changed under us`);
      }
      throw err;
    }
  }

  async deleteVolume(name: string): Promise<void> {
    await retryNoResponders(() => this.kv.purge(metadataKeys.volumeLayout(name)));
    await retryNoResponders(() => this.kv.purge(metadataKeys.volumeSpec(name)));
  }
}
