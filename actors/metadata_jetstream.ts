/** The metadata port on a JetStream KV bucket (R3 on a 3-server NATS cluster). */
import type { NatsConnection } from "@nats-io/nats-core";
import { type KV, Kvm } from "@nats-io/kv";
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

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class JetStreamMetadata implements MetadataPort {
  private constructor(private readonly kv: KV) {}

  static async open(nc: NatsConnection, options: { replicas?: number } = {}) {
    const kvm = new Kvm(nc);
    const kv = await kvm.create(metadataBucket, { history: 1, replicas: options.replicas ?? 1 });
    return new JetStreamMetadata(kv);
  }

  private async read<T>(key: string, schema: z.ZodType<T>): Promise<Versioned<T> | null> {
    const entry = await this.kv.get(key);
    if (!entry || entry.operation !== "PUT" || entry.value.length === 0) return null;
    const value = schema.parse(JSON.parse(decoder.decode(entry.value)));
    return { value, revision: entry.revision };
  }

  private async list<T>(prefix: string, schema: z.ZodType<T>, skip?: (key: string) => boolean) {
    const out: Versioned<T>[] = [];
    const keys = await this.kv.keys(`${prefix}.>`);
    const names: string[] = [];
    for await (const key of keys) if (!skip?.(key)) names.push(key);
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
    await this.kv.put(metadataKeys.node(record.id), this.encode(record));
  };
  listNodes = () => this.list("node", nodeRecordSchema);

  async casNode(record: NodeRecord, revision: number): Promise<number> {
    try {
      return await this.kv.update(metadataKeys.node(record.id), this.encode(record), revision);
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
      await this.kv.create(metadataKeys.volumeSpec(spec.name), this.encode(spec));
      return true;
    } catch (err) {
      if (/wrong last sequence|key exists/i.test((err as Error).message)) return false;
      throw err;
    }
  }

  getLayout = (name: string) => this.read(metadataKeys.volumeLayout(name), volumeLayoutSchema);

  async createLayout(name: string, layout: VolumeLayout): Promise<number> {
    return await this.kv.create(metadataKeys.volumeLayout(name), this.encode(layout));
  }

  async casLayout(name: string, layout: VolumeLayout, revision: number): Promise<number> {
    try {
      return await this.kv.update(metadataKeys.volumeLayout(name), this.encode(layout), revision);
    } catch (err) {
      if (/wrong last sequence/i.test((err as Error).message)) {
        throw new CasConflictError(`layout of ${name} changed under us`);
      }
      throw err;
    }
  }

  async deleteVolume(name: string): Promise<void> {
    await this.kv.purge(metadataKeys.volumeLayout(name));
    await this.kv.purge(metadataKeys.volumeSpec(name));
  }
}
