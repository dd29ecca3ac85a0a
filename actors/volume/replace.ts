/**
 * Replacing replicas lost for good, pure. A replica whose node has been down
 * longer than the grace period is replaced on another node chosen by
 * placement (distinct nodes, new zones first): the new replica joins the
 * segment as `stale`, the owner's catch-up rebuilds it (it receives new writes
 * while it copies, as `rebuilding`), and once the segment has its full count
 * of in-sync replicas again the lost one leaves the layout. A node that comes
 * back within the grace period only catches up.
 */
import type { SegmentReplica, VolumeLayout } from "../../protocol/schemas.ts";
import { type PlacementNode, placeReplicas } from "../placement/rendezvous.ts";

/** Default time a down node's replicas wait for it before being rebuilt elsewhere. */
export const defaultReplicaGraceMs = 5 * 60 * 1000;

export interface Replacement {
  segment: number;
  /** The lost replica's node. */
  lost: string;
  /** Where the new replica goes. */
  to: string;
}

/**
 * New replicas for segments that have fewer than `wanted` replicas on nodes not lost, one per
 * missing replica, on live nodes that hold none of the segment yet (new zones first).
 */
export function planReplacements(
  volumeName: string,
  layout: VolumeLayout,
  wanted: number,
  lost: ReadonlySet<string>,
  live: readonly PlacementNode[],
): Replacement[] {
  const plans: Replacement[] = [];
  layout.segments.forEach((segment, index) => {
    const kept = segment.replicas.filter((r) => !lost.has(r.node));
    const lostHere = segment.replicas.filter((r) => lost.has(r.node));
    let missing = Math.min(wanted - kept.length, lostHere.length);
    if (missing <= 0) return;
    const holders = new Set(segment.replicas.map((r) => r.node));
    const zonesKept = new Set(
      kept.map((r) => live.find((n) => n.id === r.node)?.zone).filter((z) => z !== undefined),
    );
    let candidates = live.filter((n) => !holders.has(n.id));
    for (const gone of lostHere) {
      if (missing-- <= 0 || candidates.length === 0) break;
      const newZones = candidates.filter((n) => !zonesKept.has(n.zone));
      const [to] = placeReplicas(
        `${volumeName}/${index}`,
        newZones.length ? newZones : candidates,
        1,
      );
      plans.push({ segment: index, lost: gone.node, to });
      zonesKept.add(live.find((n) => n.id === to)!.zone);
      candidates = candidates.filter((n) => n.id !== to);
    }
  });
  return plans;
}

/** The layout with each planned replica added as `stale` (catch-up rebuilds it). */
export function addReplicas(layout: VolumeLayout, plans: readonly Replacement[]): VolumeLayout {
  return {
    ...layout,
    segments: layout.segments.map((s, index) => {
      const added = plans.filter((p) =>
        p.segment === index && !s.replicas.some((r) => r.node === p.to)
      );
      return added.length
        ? {
          replicas: [...s.replicas, ...added.map((p) => ({ node: p.to, state: "stale" as const }))],
        }
        : s;
    }),
  };
}

/**
 * The layout without lost replicas in segments whose other replicas are `wanted` in-sync
 * ones (their replacements caught up), or null if no segment is there yet. A lost replica
 * that is still in sync is never dropped (the owner marks it stale first).
 */
export function dropReplaced(
  layout: VolumeLayout,
  wanted: number,
  lost: ReadonlySet<string>,
): VolumeLayout | null {
  let changed = false;
  const segments = layout.segments.map((s) => {
    const inSyncKept = s.replicas.filter((r) => !lost.has(r.node) && r.state === "in-sync");
    if (inSyncKept.length < wanted) return s;
    const replicas: SegmentReplica[] = s.replicas.filter((r) =>
      !(lost.has(r.node) && r.state === "stale")
    );
    if (replicas.length === s.replicas.length) return s;
    changed = true;
    return { replicas };
  });
  return changed ? { ...layout, segments } : null;
}
