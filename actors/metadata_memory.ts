/**
 * The metadata port in memory: a KV with one revision counter, CAS and
 * JSON round trips (so callers never share objects with the store). One
 * MemoryKv is the cluster's store; each simulated node gets a view whose
 * `gate` can delay or fail its calls (a node cut off from NATS).
 */
import {
  type NodeRecord,
  nodeRecordSchema,
  type VolumeLayout,
  volumeLayoutSchema,
  type VolumeSpec,
  volumeSpecSchema,
} from "../protocol/schemas.ts";
import { CasConflictError, metadataKeys, type MetadataPort, type Versioned } from "./metadata.ts";
import type { z } from "zod";

interface Entry {
  json: string;
  revision: number;
}

export class MemoryKv {
  private readonly entries = new Map<string, Entry>();
  private lastRevision = 0;
  /** Every successful write, for checks and traces. */
  writes = 0;
  /** Told of every write: the key, its JSON before (undefined: created) and after. */
  onWrite: (key: string, before: string | undefined, after: string) => void = () => {};

  get(key: string): Entry | undefined {
    return this.entries.get(key);
  }

  keys(prefix: string): string[] {
    return [...this.entries.keys()].filter((k) => k.startsWith(prefix)).sort();
  }

  put(key: string, json: string): number {
    this.writes++;
    this.onWrite(key, this.entries.get(key)?.json, json);
    this.entries.set(key, { json, revision: ++this.lastRevision });
    return this.lastRevision;
  }

  /** expected 0: the key must not exist. */
  cas(key: string, json: string, expected: number): number {
    const current = this.entries.get(key);
    if ((current?.revision ?? 0) !== expected) {
      throw new CasConflictError(
        `${key}: revision ${current?.revision ?? 0}, expected ${expected}`,
      );
    }
    return this.put(key, json);
  }

  delete(key: string): void {
    this.writes++;
    this.entries.delete(key);
  }
}

export class MemoryMetadata implements MetadataPort {
  constructor(
    readonly kv: MemoryKv = new MemoryKv(),
    /** Awaited before every call: a delay, or a throw when the store is out of reach. */
    private readonly gate: () => Promise<void> = () => Promise.resolve(),
  ) {}

  private async read<T>(key: string, schema: z.ZodType<T>): Promise<Versioned<T> | null> {
    await this.gate();
    const entry = this.kv.get(key);
    if (!entry) return null;
    return { value: schema.parse(JSON.parse(entry.json)), revision: entry.revision };
  }

  async getNode(id: string) {
    return await this.read(metadataKeys.node(id), nodeRecordSchema);
  }

  async putNode(record: NodeRecord): Promise<void> {
    await this.gate();
    this.kv.put(metadataKeys.node(record.id), JSON.stringify(record));
  }

  async casNode(record: NodeRecord, revision: number): Promise<number> {
    await this.gate();
    return this.kv.cas(metadataKeys.node(record.id), JSON.stringify(record), revision);
  }

  async listNodes(): Promise<Versioned<NodeRecord>[]> {
    await this.gate();
    return this.kv.keys("node.").map((key) => {
      const entry = this.kv.get(key)!;
      return { value: nodeRecordSchema.parse(JSON.parse(entry.json)), revision: entry.revision };
    });
  }

  async getSpec(name: string) {
    return await this.read(metadataKeys.volumeSpec(name), volumeSpecSchema);
  }

  async listSpecs(): Promise<VolumeSpec[]> {
    await this.gate();
    return this.kv.keys("vol.").filter((k) => !k.endsWith(".layout")).map((key) =>
      volumeSpecSchema.parse(JSON.parse(this.kv.get(key)!.json))
    );
  }

  async createSpec(spec: VolumeSpec): Promise<boolean> {
    await this.gate();
    try {
      this.kv.cas(metadataKeys.volumeSpec(spec.name), JSON.stringify(spec), 0);
      return true;
    } catch (err) {
      if (err instanceof CasConflictError) return false;
      throw err;
    }
  }

  async getLayout(name: string) {
    return await this.read(metadataKeys.volumeLayout(name), volumeLayoutSchema);
  }

  async createLayout(name: string, layout: VolumeLayout): Promise<number> {
    await this.gate();
    return this.kv.cas(metadataKeys.volumeLayout(name), JSON.stringify(layout), 0);
  }

  async casLayout(name: string, layout: VolumeLayout, revision: number): Promise<number> {
    await this.gate();
    return this.kv.cas(metadataKeys.volumeLayout(name), JSON.stringify(layout), revision);
  }

  async deleteVolume(name: string): Promise<void> {
    await this.gate();
    this.kv.delete(metadataKeys.volumeLayout(name));
    this.kv.delete(metadataKeys.volumeSpec(name));
  }
}
