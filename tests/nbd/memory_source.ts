/** In-memory exports for gateway tests that do not need a cluster. */
import type { ExportInfo, ExportSource, NbdBackend } from "../../nbd/backend.ts";
import { mulberry32 } from "../harness/random.ts";

export class MemoryBackend implements NbdBackend {
  readonly blockBytes = 4096;
  readonly calls = { read: 0, write: 0, flush: 0, trim: 0, writeZeroes: 0 };
  private readonly random: () => number;

  constructor(
    readonly data: Uint8Array,
    /** Up to this many ms of random delay per call, so completions come out of order. */
    private readonly maxDelayMs = 0,
    seed = 1,
  ) {
    this.random = mulberry32(seed);
  }

  get sizeBytes(): number {
    return this.data.byteLength;
  }

  private check(offset: number, length: number): void {
    if (offset % this.blockBytes || length % this.blockBytes) {
      throw new Error(`unaligned backend call ${offset}+${length}`);
    }
    if (offset + length > this.data.byteLength) throw new Error(`out of range ${offset}+${length}`);
  }

  /** While set, every call waits for it (tests use it to hold requests in flight). */
  hold: Promise<void> | null = null;

  private async delay(): Promise<void> {
    if (this.hold) await this.hold;
    if (this.maxDelayMs === 0) return;
    await new Promise((resolve) => setTimeout(resolve, this.random() * this.maxDelayMs));
  }

  async read(offset: number, length: number): Promise<Uint8Array[]> {
    this.check(offset, length);
    this.calls.read++;
    await this.delay();
    // Two pieces when possible, like the in-process backend's split reads.
    const copy = this.data.slice(offset, offset + length);
    if (length >= 2 * this.blockBytes) {
      const half = Math.floor(length / 2 / this.blockBytes) * this.blockBytes;
      return [copy.subarray(0, half), copy.subarray(half)];
    }
    return [copy];
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.check(offset, data.byteLength);
    this.calls.write++;
    const copy = data.slice();
    await this.delay();
    this.data.set(copy, offset);
  }

  async flush(): Promise<void> {
    this.calls.flush++;
    await this.delay();
  }

  async trim(offset: number, length: number): Promise<void> {
    this.check(offset, length);
    this.calls.trim++;
    await this.delay();
    this.data.fill(0, offset, offset + length);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.check(offset, length);
    this.calls.writeZeroes++;
    await this.delay();
    this.data.fill(0, offset, offset + length);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

export class MemorySource implements ExportSource {
  readonly backends = new Map<string, MemoryBackend>();

  add(name: string, sizeBytes: number, maxDelayMs = 0): MemoryBackend {
    const backend = new MemoryBackend(new Uint8Array(sizeBytes), maxDelayMs, name.length + 1);
    this.backends.set(name, backend);
    return backend;
  }

  list(): Promise<ExportInfo[]> {
    return Promise.resolve(
      [...this.backends].map(([name, b]) => ({
        name,
        sizeBytes: b.sizeBytes,
        description: `memory export ${name}`,
      })),
    );
  }

  open(name: string): Promise<{ backend: NbdBackend; info: ExportInfo } | null> {
    const backend = this.backends.get(name);
    if (!backend) return Promise.resolve(null);
    return Promise.resolve({
      backend,
      info: { name, sizeBytes: backend.sizeBytes, description: `memory export ${name}` },
    });
  }
}
