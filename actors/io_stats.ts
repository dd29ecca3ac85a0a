/**
 * Per-volume IO counts for the live dashboard, pure: a Metrics sink that adds up each
 * answered client request, and `take()` that returns what came since the last take and
 * starts over. The node's stats publisher (server/stats_publisher.ts) takes once a second
 * and publishes on `cairn.v1.stats.<node>`; time comes from it, not from here.
 */
import type { IoOpName, Metrics } from "./ports.ts";
import type { VolumeIoStats } from "../protocol/schemas.ts";

interface Counts {
  readOps: number;
  writeOps: number;
  otherOps: number;
  readBytes: number;
  writeBytes: number;
  errors: number;
  latencySumMs: number;
  maxLatencyMs: number;
}

const zero = (): Counts => ({
  readOps: 0,
  writeOps: 0,
  otherOps: 0,
  readBytes: 0,
  writeBytes: 0,
  errors: 0,
  latencySumMs: 0,
  maxLatencyMs: 0,
});

export class IoStats implements Metrics {
  private counts = new Map<string, Counts>();

  ioStarted(): void {}

  ioFinished(
    volume: string,
    op: IoOpName,
    lengthBytes: number,
    seconds: number,
    errorCode: string | null,
  ): void {
    let c = this.counts.get(volume);
    if (!c) this.counts.set(volume, c = zero());
    const ms = seconds * 1000;
    c.latencySumMs += ms;
    if (ms > c.maxLatencyMs) c.maxLatencyMs = ms;
    if (errorCode !== null) c.errors++;
    if (op === "read") {
      c.readOps++;
      if (errorCode === null) c.readBytes += lengthBytes;
    } else if (op === "write") {
      c.writeOps++;
      if (errorCode === null) c.writeBytes += lengthBytes;
    } else {
      c.otherOps++;
    }
  }

  copied(): void {}
  tookOver(): void {}
  handedOff(): void {}
  synced(): void {}

  /** The counts since the last take, by volume name (volumes without IO are left out). */
  take(): VolumeIoStats[] {
    const taken = [...this.counts].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
    this.counts = new Map();
    return taken.map(([volume, c]) => {
      const ops = c.readOps + c.writeOps + c.otherOps;
      const round = (ms: number) => Math.round(ms * 1000) / 1000;
      return {
        volume,
        readOps: c.readOps,
        writeOps: c.writeOps,
        otherOps: c.otherOps,
        readBytes: c.readBytes,
        writeBytes: c.writeBytes,
        errors: c.errors,
        meanLatencyMs: ops ? round(c.latencySumMs / ops) : null,
        maxLatencyMs: ops ? round(c.maxLatencyMs) : null,
      };
    });
  }
}

/** Reports to every sink given (undefined ones skipped). */
export function teeMetrics(...sinks: (Metrics | undefined)[]): Metrics {
  const all = sinks.filter((s): s is Metrics => s !== undefined);
  if (all.length === 1) return all[0];
  return {
    ioStarted: (...a) => all.forEach((s) => s.ioStarted(...a)),
    ioFinished: (...a) => all.forEach((s) => s.ioFinished(...a)),
    copied: (...a) => all.forEach((s) => s.copied(...a)),
    tookOver: (...a) => all.forEach((s) => s.tookOver(...a)),
    handedOff: (...a) => all.forEach((s) => s.handedOff(...a)),
    synced: (...a) => all.forEach((s) => s.synced(...a)),
  };
}
