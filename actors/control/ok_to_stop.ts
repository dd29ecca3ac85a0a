/**
 * Whether a node can be stopped now without hurting a volume, pure: from the layouts and
 * who is live. A stop is safe when the node owns nothing (its volumes' IO would pause until
 * failover) and every segment it holds in sync keeps at least its volume's minimum of
 * in-sync replicas on other live nodes (else writes stop, or with no other copy the data
 * is unavailable until the node returns).
 */
import type { StopRisk, VolumeLayout } from "../../protocol/schemas.ts";

export interface VolumeView {
  name: string;
  minInSync: number;
  layout: VolumeLayout;
}

/** A volume's risks are listed worst first. */
const severity: Record<StopRisk["kind"], number> = {
  "only-copy": 3,
  "below-min-in-sync": 2,
  owner: 1,
};

export function stopRisks(
  node: string,
  volumes: readonly VolumeView[],
  isLive: (node: string) => boolean,
): StopRisk[] {
  const risks: StopRisk[] = [];
  for (const { name, minInSync, layout } of volumes) {
    const found: StopRisk[] = [];
    if (layout.owner === node) {
      found.push({
        volume: name,
        kind: "owner",
        detail: `${node} owns ${name}: its IO pauses until failover; drain ${node} first`,
      });
    }
    const onlyCopy: number[] = [];
    const belowMin: number[] = [];
    layout.segments.forEach((segment, index) => {
      const here = segment.replicas.find((r) => r.node === node);
      if (here?.state !== "in-sync") return;
      const others = segment.replicas.filter((r) =>
        r.node !== node && r.state === "in-sync" && isLive(r.node)
      ).length;
      if (others === 0) onlyCopy.push(index);
      else if (others < minInSync) belowMin.push(index);
    });
    if (onlyCopy.length) {
      found.push({
        volume: name,
        kind: "only-copy",
        detail: `${node} holds the only live in-sync copy of ${name} segments ${
          onlyCopy.join(", ")
        }: they would be unavailable until it returns; wait for catch-up or bring nodes back`,
      });
    }
    if (belowMin.length) {
      found.push({
        volume: name,
        kind: "below-min-in-sync",
        detail: `without ${node}, ${name} segments ${
          belowMin.join(", ")
        } keep fewer than ${minInSync} in-sync replicas: writes would stop; wait for catch-up`,
      });
    }
    found.sort((a, b) => severity[b.kind] - severity[a.kind]);
    risks.push(...found);
  }
  return risks;
}
