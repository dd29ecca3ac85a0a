/**
 * Cluster metadata in a JetStream KV bucket. Every layout change is a
 * compare-and-set on the key's revision; losers re-read and re-decide.
 */
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

export const metadataBucket = "cairn";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const metadataKeys = {
  node: (id: string) => `node.${id}`,
  volumeSpec: (name: string) => `vol.${name}`,
  volumeLayout: (name: string) => `vol.${name}.layout`,
};

export interface Versioned<T> {
  value: T;
  revision: number;
}

/** A compare-and-set lost to another writer. */
export class CasConflictError extends Error {}

export class MetadataStore {
  private constructor(private readonly kv: KV) {}

  static async open(nc: NatsConnection): Promise<MetadataStore> {
    const kvm = new Kvm(nc);
    const kv = await kvm.create(metadataBucket, { history: 1 });
    return new MetadataStore(kv);
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
  putNode = (record: NodeRecord) => this.kv.put(metadataKeys.node(record.id), this.encode(record));
  listNodes = () => this.list("node", nodeRecordSchema);

  getSpec = (name: string) => this.read(metadataKeys.volumeSpec(name), volumeSpecSchema);
  listSpecs = () =>
    this.list("vol", volumeSpecSchema, (key) => key.endsWith(".layout")).then((specs) =>
      specs.map((s) => s.value)
    );

  /** Creates the spec key; false if the volume already exists. */
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

  /** Writes the layout only if its revision is still `revision`; bumps nothing by itself. */
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

  /**
   * Re-reads and applies `change` until the CAS wins. `change` returns the new
   * layout (epoch bumped here) or null to leave it as it is.
   */
  async updateLayout(
    name: string,
    change: (current: VolumeLayout) => VolumeLayout | null,
  ): Promise<Versioned<VolumeLayout> | null> {
    for (;;) {
      const current = await this.getLayout(name);
      if (!current) return null;
      const next = change(current.value);
      if (!next) return current;
      const updated = { ...next, epoch: current.value.epoch + 1 };
      try {
        const revision = await this.casLayout(name, updated, current.revision);
        return { value: updated, revision };
      } catch (err) {
        if (!(err instanceof CasConflictError)) throw err;
      }
    }
  }

  async deleteVolume(name: string): Promise<void> {
    await this.kv.purge(metadataKeys.volumeLayout(name));
    await this.kv.purge(metadataKeys.volumeSpec(name));
  }
}
