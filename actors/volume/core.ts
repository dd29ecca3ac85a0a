/** Pure parts of the volume actor: IO splitting, versions, ordering, replica choice. */
import { blockSizeBytes } from "../../protocol/limits.ts";
import type { SegmentReplica, VolumeLayout } from "../../protocol/schemas.ts";

/** One request's part that falls in one segment. */
export interface SegmentPiece {
  segment: number;
  /** First block within the segment. */
  firstBlock: number;
  blockCount: number;
  /** Where this piece starts within the request's bytes. */
  byteStart: number;
}

export function splitBySegment(
  offsetBytes: number,
  lengthBytes: number,
  segmentBytes: number,
): SegmentPiece[] {
  const pieces: SegmentPiece[] = [];
  let at = offsetBytes;
  const end = offsetBytes + lengthBytes;
  while (at < end) {
    const segment = Math.floor(at / segmentBytes);
    const segmentEnd = Math.min(end, (segment + 1) * segmentBytes);
    pieces.push({
      segment,
      firstBlock: (at - segment * segmentBytes) / blockSizeBytes,
      blockCount: (segmentEnd - at) / blockSizeBytes,
      byteStart: at - offsetBytes,
    });
    at = segmentEnd;
  }
  return pieces;
}

/**
 * Block versions are term * 2^32 + a counter, so versions written by a later
 * owner are always higher than earlier ones and "highest version wins" is a
 * total order across owners. 2^53 / 2^32 bounds the term; the term changes
 * only when ownership moves (takeover, handoff, owner restart), never with a
 * replica-state edit, so 2^21 terms last.
 */
export const versionsPerTerm = 2 ** 32;
export const maxTerm = 2 ** 21 - 1;

export class VersionCounter {
  private readonly next = new Map<number, number>();

  /** After a takeover: continue above what any replica holds. */
  seed(segment: number, highestSeen: number): void {
    this.next.set(segment, Math.max(this.next.get(segment) ?? 0, highestSeen));
  }

  take(segment: number, term: number): number {
    if (term > maxTerm) {
      throw new RangeError(`term ${term} is above ${maxTerm}: versions would lose precision`);
    }
    const version = Math.max(this.next.get(segment) ?? 0, term * versionsPerTerm) + 1;
    this.next.set(segment, version);
    return version;
  }
}

/**
 * Writes in flight by block range, so a read that overlaps one waits for it
 * (linearizable reads) and a FLUSH waits for everything before it.
 */
export class InflightWrites {
  private readonly writes = new Map<number, { first: number; end: number; done: Promise<void> }>();
  private nextId = 1;

  add(firstBlock: number, blockCount: number, done: Promise<void>): number {
    const id = this.nextId++;
    this.writes.set(id, { first: firstBlock, end: firstBlock + blockCount, done });
    return id;
  }

  remove(id: number): void {
    this.writes.delete(id);
  }

  overlapping(firstBlock: number, blockCount: number): Promise<void>[] {
    const end = firstBlock + blockCount;
    const out: Promise<void>[] = [];
    for (const w of this.writes.values()) if (w.first < end && firstBlock < w.end) out.push(w.done);
    return out;
  }

  all(): Promise<void>[] {
    return [...this.writes.values()].map((w) => w.done);
  }

  get size(): number {
    return this.writes.size;
  }
}

/** Replicas that receive writes: in-sync and rebuilding ones. */
export function writeTargets(replicas: readonly SegmentReplica[]): SegmentReplica[] {
  return replicas.filter((r) => r.state !== "stale");
}

export function inSyncNodes(replicas: readonly SegmentReplica[]): string[] {
  return replicas.filter((r) => r.state === "in-sync").map((r) => r.node);
}

/** Lowest count of in-sync replicas over all segments. */
export function minInSyncCount(layout: VolumeLayout): number {
  let min = Infinity;
  for (const s of layout.segments) min = Math.min(min, inSyncNodes(s.replicas).length);
  return Number.isFinite(min) ? min : 0;
}

/** The layout with the given replicas set to `state`, or null if nothing changes. */
export function setReplicaStates(
  layout: VolumeLayout,
  changes: readonly { segment: number; node: string; state: SegmentReplica["state"] }[],
): VolumeLayout | null {
  let changed = false;
  const next = layout.segments.map((s, index) => ({
    replicas: s.replicas.map((r) => {
      const change = changes.find((c) => c.segment === index && c.node === r.node);
      if (!change || change.state === r.state) return r;
      changed = true;
      return { ...r, state: change.state };
    }),
  }));
  return changed ? { ...layout, segments: next } : null;
}
