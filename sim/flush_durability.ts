/**
 * The FLUSH promise, checked directly: a FLUSH answered OK means every write the volume had
 * acknowledged before the FLUSH began is durable on every replica in sync for its segment.
 * "Durable" is what the replica node's disk has synced (the simulator reads a copy of it as
 * a power loss now would leave it), not what its replica host reports: a host that is never
 * asked to sync has nothing to report, so the per-host durability oracle cannot see a FLUSH
 * that skips a node.
 *
 * Pure: the acknowledged writes, the layouts in effect, the nodes' power losses and what
 * their synced state holds come in; messages come out.
 *
 * What is not held against a replica, and why:
 * - one not in sync in every layout in effect while the FLUSH ran (from its start to the OK):
 *   a replica the owner marked stale (its flush failed) is caught up from another copy, one
 *   being rebuilt or replaced is not yet, or no longer, a copy the promise is about;
 * - one whose node lost power after the write started: the loss may take unflushed cached
 *   writes; the host then reports the replica suspect and the owner catches it up, and a
 *   FLUSH answered before the owner heard of it cannot bring them back (the other copies
 *   are still held to it). A kill -9 is no excuse: the page cache survives it;
 * - a block whose synced copy fails its checksum (bit rot): it holds no write id to judge,
 *   and reads and scrub repair it.
 * A newer write synced over an acknowledged one covers it: each block has one writer, whose
 * writes are sequential, so a block's write ids grow in the order its writes are applied.
 */

/** A write the volume acknowledged, as the oracle needs it. */
export interface AckedWrite {
  writeId: number;
  /** When its client sent it (virtual ms): a power loss from then on may take it. */
  startMs: number;
}

/** Per block, the newest write the volume has acknowledged (in the order acknowledged). */
export class AckLog {
  private readonly newest = new Map<number, AckedWrite>();

  acknowledged(block: number, write: AckedWrite): void {
    const held = this.newest.get(block);
    if (!held || write.writeId > held.writeId) this.newest.set(block, write);
  }

  /** What is acknowledged now, for a FLUSH beginning now (later acks do not change it). */
  snapshot(): ReadonlyMap<number, AckedWrite> {
    return new Map(this.newest);
  }
}

/** The replica states of one layout, as far as the oracle reads them. */
export interface LayoutReplicas {
  segments: readonly { replicas: readonly { node: string; state: string }[] }[];
}

/** Every layout the KV held, in the order written, with the virtual time of each write. */
export class LayoutTimeline {
  private readonly entries: { atMs: number; layout: LayoutReplicas }[] = [];

  record(atMs: number, layout: LayoutReplicas): void {
    this.entries.push({ atMs, layout });
  }

  /**
   * The layouts in effect at some moment of [startMs, endMs]: the last written before it and
   * every one written in it. One written at startMs itself counts in both ways (which of two
   * events at one virtual instant came first is not known here).
   */
  during(startMs: number, endMs: number): LayoutReplicas[] {
    let first = 0;
    for (let i = 0; i < this.entries.length && this.entries[i].atMs < startMs; i++) first = i;
    const out: LayoutReplicas[] = [];
    for (let i = first; i < this.entries.length; i++) {
      if (i > first && this.entries[i].atMs > endMs) break;
      out.push(this.entries[i].layout);
    }
    return out;
  }
}

/** Per segment, the nodes in sync for it in every one of `layouts` (none if there are none). */
export function inSyncThroughout(layouts: readonly LayoutReplicas[]): Map<number, string[]> {
  const out = new Map<number, string[]>();
  if (!layouts.length) return out;
  layouts[0].segments.forEach((_, segment) => {
    const inSync = (layout: LayoutReplicas) =>
      new Set(
        (layout.segments[segment]?.replicas ?? []).filter((r) => r.state === "in-sync")
          .map((r) => r.node),
      );
    const sets = layouts.map(inSync);
    out.set(segment, [...sets[0]].filter((node) => sets.every((s) => s.has(node))).sort());
  });
  return out;
}

/** Whether `node` is in sync for `segment` in every one of `layouts`. */
export function stayedInSync(
  layouts: readonly LayoutReplicas[],
  node: string,
  segment: number,
): boolean {
  return layouts.every((layout) =>
    layout.segments[segment]?.replicas.some((r) => r.node === node && r.state === "in-sync")
  );
}

/** Whether `node` lost power at some moment of [fromMs, toMs]. */
export function lostPower(
  powerLossesMs: ReadonlyMap<string, readonly number[]>,
  node: string,
  fromMs: number,
  toMs: number,
): boolean {
  return powerLossesMs.get(node)?.some((t) => t >= fromMs && t <= toMs) ?? false;
}

/**
 * One block as a node's synced state holds it: the write id its bytes carry (0: zeros, -1:
 * bytes no write made), "corrupt" (fails its checksum), or "missing" (no readable file for
 * its segment).
 */
export type SyncedBlock = number | "corrupt" | "missing";

/**
 * Block copies already found synced, so a FLUSH reads only what changed since: a copy's
 * synced write id only grows while its node keeps power and stays in sync (the file is not
 * removed or made again meanwhile), so once found at or past a write it stays so. A synced
 * block going back to an older write without a power loss would be another defect, for the
 * linearizability, convergence and per-replica durability checks, not this one.
 */
export class SyncedMemo {
  /** "node/segment" -> since when it has been watched, and block -> the write id found. */
  private readonly copies = new Map<
    string,
    { node: string; segment: number; sinceMs: number; writeIds: Map<number, number> }
  >();

  /** Drops every copy for which `continuous(node, segment, sinceMs)` is false. */
  forgetUnless(continuous: (node: string, segment: number, sinceMs: number) => boolean): void {
    for (const [key, copy] of this.copies) {
      if (!continuous(copy.node, copy.segment, copy.sinceMs)) this.copies.delete(key);
    }
  }

  /** The write id found synced for a block of `node` (undefined: none yet). */
  get(node: string, segment: number, block: number): number | undefined {
    return this.copies.get(`${node}/${segment}`)?.writeIds.get(block);
  }

  /** A write id read from `node`'s synced state at `atMs`. */
  record(node: string, segment: number, block: number, writeId: number, atMs: number): void {
    const key = `${node}/${segment}`;
    let copy = this.copies.get(key);
    if (!copy) this.copies.set(key, copy = { node, segment, sinceMs: atMs, writeIds: new Map() });
    copy.writeIds.set(block, Math.max(writeId, copy.writeIds.get(block) ?? -1));
  }
}

export interface FlushDurabilityInput {
  client: string;
  startMs: number;
  /** When the client had the OK (virtual ms). */
  endMs: number;
  /** Per block, the newest write acknowledged when the FLUSH began (AckLog.snapshot). */
  acked: ReadonlyMap<number, AckedWrite>;
  /** Per segment, the nodes held to the promise (inSyncThroughout). */
  inSync: ReadonlyMap<number, readonly string[]>;
  /** node -> virtual times it lost power. */
  powerLossesMs: ReadonlyMap<string, readonly number[]>;
  blocksPerSegment: number;
  /**
   * What `node`'s synced state held for `block` at the OK, if known: a write id at least
   * `atLeast` may come from an earlier read (SyncedMemo), anything less must be read now.
   * undefined: not read yet (listed in `unread`, not judged).
   */
  synced: (node: string, block: number, atLeast: number) => SyncedBlock | undefined;
}

export interface FlushDurabilityResult {
  /** One message per replica (node and segment) that lacks an acknowledged write. */
  problems: string[];
  /** Block copies found synced as promised. */
  blocksChecked: number;
  /** Block copies not judged: the node lost power since the write began. */
  exemptPowerLoss: number;
  /** Block copies not judged: the synced copy fails its checksum. */
  unjudgedCorrupt: number;
  /** node -> blocks to read from its synced state before they can be judged. */
  unread: Map<string, number[]>;
}

export function checkFlushDurable(input: FlushDurabilityInput): FlushDurabilityResult {
  const result: FlushDurabilityResult = {
    problems: [],
    blocksChecked: 0,
    exemptPowerLoss: 0,
    unjudgedCorrupt: 0,
    unread: new Map(),
  };
  /** "node segment S" -> the blocks it lacks, as "block (acknowledged id, synced id)". */
  const missing = new Map<string, string[]>();
  for (const [block, write] of [...input.acked].sort((a, b) => a[0] - b[0])) {
    const segment = Math.floor(block / input.blocksPerSegment);
    for (const node of input.inSync.get(segment) ?? []) {
      if (lostPower(input.powerLossesMs, node, write.startMs, input.endMs)) {
        result.exemptPowerLoss++;
        continue;
      }
      const held = input.synced(node, block, write.writeId);
      if (held === undefined) {
        if (!result.unread.has(node)) result.unread.set(node, []);
        result.unread.get(node)!.push(block);
      } else if (held === "corrupt") {
        result.unjudgedCorrupt++;
      } else if (held !== "missing" && held >= write.writeId) {
        result.blocksChecked++;
      } else {
        const key = `${node} segment ${segment}`;
        if (!missing.has(key)) missing.set(key, []);
        missing.get(key)!.push(
          `${block} (acknowledged write ${write.writeId}, synced ${
            held === "missing" ? "no readable segment file" : `write ${held}`
          })`,
        );
      }
    }
  }
  for (const [replica, blocks] of missing) {
    result.problems.push(
      `FLUSH by ${input.client} (sent at ${input.startMs.toFixed(1)} ms) answered OK at ${
        input.endMs.toFixed(1)
      } ms, but ${replica}, in sync throughout, has not synced ${blocks.length} block(s) ` +
        `acknowledged before it: ${blocks.slice(0, 3).join(", ")}${
          blocks.length > 3 ? ", ..." : ""
        }`,
    );
  }
  return result;
}
