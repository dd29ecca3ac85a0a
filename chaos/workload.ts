/**
 * The chaos workload: several clients, each on its own NATS connection, reading and writing
 * runs of 1..maxBlocks blocks at random places in the hot region of random volumes, one op at a
 * time per client, every write with a unique write id stamped on each of its blocks. Every op is
 * recorded (start, end, result) in the {@link ChaosHistory}.
 */
import type { CairnClient } from "../client/client.ts";
import type { Volume } from "../client/volume.ts";
import { blockImage, decodeBlock } from "../sim/client.ts";
import { blockSizeBytes } from "../protocol/limits.ts";
import type { ChaosHistory, ChaosOp } from "./history.ts";

export interface WorkloadClient {
  id: string;
  cairn: CairnClient;
  /** This client's handle of each volume, by name. */
  volumes: Map<string, Volume>;
}

export interface WorkloadOptions {
  /** Blocks at the start of each volume that the clients touch. */
  hotBlocks: number;
  /** Most blocks in one op. */
  maxBlocks: number;
  /** Share of ops that are writes. */
  writeFraction: number;
  /** Pause between one client's ops, ms: [min, max]. */
  thinkMs: [number, number];
  now: () => number;
  /** A generator per client, so one client's choices do not depend on the others' timing. */
  randomFor: (client: number) => () => number;
  /**
   * Breaks the workload on purpose, to see the checks fail: "drop-write" skips every 25th
   * write but records it as acknowledged.
   */
  sabotage?: "drop-write";
}

export class Workload {
  private stopping = false;
  private loops: Promise<void>[] = [];
  private writeIds = 0;
  /** Ops in flight, by client. */
  readonly inFlight = new Map<string, ChaosOp>();

  constructor(
    private readonly history: ChaosHistory,
    private readonly clients: readonly WorkloadClient[],
    private readonly options: WorkloadOptions,
  ) {}

  nextWriteId(): number {
    return ++this.writeIds;
  }

  start(): void {
    this.loops = this.clients.map((c, i) => this.runClient(c, this.options.randomFor(i)));
  }

  /** No new ops; waits for the ops in flight to end (the client gives up after its deadline). */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
  }

  private async runClient(client: WorkloadClient, random: () => number): Promise<void> {
    const names = [...client.volumes.keys()];
    const { hotBlocks, maxBlocks, writeFraction, thinkMs } = this.options;
    const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
    while (!this.stopping) {
      const name = names[int(0, names.length - 1)];
      const volume = client.volumes.get(name)!;
      const count = int(1, Math.min(maxBlocks, hotBlocks));
      const first = int(0, hotBlocks - count);
      if (random() < writeFraction) await this.write(client.id, volume, first, count);
      else await this.read(client.id, volume, first, count);
      const think = int(thinkMs[0], thinkMs[1]);
      if (think > 0) await new Promise((r) => setTimeout(r, think));
    }
  }

  async write(client: string, volume: Volume, first: number, count: number): Promise<ChaosOp> {
    const writeId = this.nextWriteId();
    const data = new Uint8Array(count * blockSizeBytes);
    for (let i = 0; i < count; i++) data.set(blockImage(writeId, first + i), i * blockSizeBytes);
    const op = this.history.begin({
      client,
      volume: volume.name,
      kind: "write",
      firstBlock: first,
      count,
      writeId,
      startMs: this.options.now(),
    });
    this.inFlight.set(client, op);
    try {
      if (this.options.sabotage !== "drop-write" || writeId % 25 !== 0) {
        await volume.write(first * blockSizeBytes, data);
      }
      this.history.ok(op, this.options.now());
    } catch (err) {
      this.history.failed(op, this.options.now(), err);
    } finally {
      this.inFlight.delete(client);
    }
    return op;
  }

  async read(
    client: string,
    volume: Volume,
    first: number,
    count: number,
    final = false,
  ): Promise<ChaosOp> {
    const op = this.history.begin({
      client,
      volume: volume.name,
      kind: "read",
      firstBlock: first,
      count,
      writeId: 0,
      startMs: this.options.now(),
      final,
    });
    this.inFlight.set(client, op);
    try {
      const bytes = await volume.read(first * blockSizeBytes, count * blockSizeBytes);
      const endMs = this.options.now();
      const values: number[] = [];
      for (let i = 0; i < count; i++) {
        values.push(
          decodeBlock(bytes.subarray(i * blockSizeBytes, (i + 1) * blockSizeBytes), first + i),
        );
      }
      this.history.ok(op, endMs, values);
    } catch (err) {
      this.history.failed(op, this.options.now(), err);
    } finally {
      this.inFlight.delete(client);
    }
    return op;
  }
}
