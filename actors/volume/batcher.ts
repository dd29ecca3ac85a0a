/**
 * Batches write entries bound for one replica node into one message while
 * earlier batches are in flight: group commit over the network, so 32 client
 * writes in flight cost a few replica round trips and fdatasyncs, not 32.
 */
import { entryWireBytes, type WriteEntry } from "../replica/wire.ts";
import { maxReplicaBatchBytes } from "../../protocol/limits.ts";

/** Batches to one node in flight at once; more pending entries wait and join the next. */
export const maxBatchesInFlightPerNode = 2;

interface Pending {
  entry: WriteEntry;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class NodeWriteBatcher {
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private inFlight = 0;
  private scheduled = false;

  constructor(
    /** Sends one batch; resolves when the node has it durably, rejects otherwise. */
    private readonly send: (epoch: number, entries: WriteEntry[]) => Promise<void>,
    private readonly epoch: () => number,
    /** Most entry bytes in one batch now (the owner connection's, see ioLimitsFor). */
    private readonly maxBatchBytes: () => number = () => maxReplicaBatchBytes,
  ) {}

  enqueue(entry: WriteEntry): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ entry, resolve, reject });
      this.pendingBytes += entryWireBytes(entry);
      // Entries arriving in the same tick (one socket read of many requests) share a batch.
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  private pump(): void {
    while (this.pending.length && this.inFlight < maxBatchesInFlightPerNode) {
      const batch: Pending[] = [];
      let bytes = 0;
      const limitBytes = this.maxBatchBytes();
      while (this.pending.length) {
        const size = entryWireBytes(this.pending[0].entry);
        // A single entry larger than the limit (one whole frame) still goes, alone.
        if (batch.length && bytes + size > limitBytes) break;
        batch.push(this.pending.shift()!);
        bytes += size;
      }
      this.pendingBytes -= bytes;
      this.inFlight++;
      this.send(this.epoch(), batch.map((p) => p.entry)).then(
        () => batch.forEach((p) => p.resolve()),
        (err) => batch.forEach((p) => p.reject(err)),
      ).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }
}
