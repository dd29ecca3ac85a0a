/**
 * The live dashboard's event feed, pure: what changed between two snapshots of the cluster
 * (nodes and volumes as the control service gives them), worded for an operator. Handoffs
 * and takeovers come from owner and term changes, stale marks, catch-ups and rebuilds from
 * replica states and the owner's copies. The live hub (live.ts) stamps ids and times.
 */
import type {
  DashboardEvent,
  DashboardSnapshot,
  NodeInfo,
  VolumeInfo,
} from "../protocol/schemas.ts";

export type LiveEvent = Omit<DashboardEvent, "id" | "at">;

type Snapshot = Pick<DashboardSnapshot, "nodes" | "volumes">;

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

function nodeEvents(prev: NodeInfo[], next: NodeInfo[]): LiveEvent[] {
  const events: LiveEvent[] = [];
  const before = new Map(prev.map((n) => [n.id, n]));
  const after = new Map(next.map((n) => [n.id, n]));
  for (const n of next) {
    const p = before.get(n.id);
    if (!p) {
      events.push({
        kind: "node-joined",
        severity: "info",
        node: n.id,
        message: `node ${n.id} joined (zone ${n.zone})`,
      });
      continue;
    }
    if (n.drained && !p.drained) {
      events.push({
        kind: "node-draining",
        severity: "info",
        node: n.id,
        message: `node ${n.id} is draining: its volumes move away`,
      });
    } else if (!n.drained && p.drained) {
      events.push({
        kind: "node-up",
        severity: "info",
        node: n.id,
        message: `node ${n.id} undrained: it takes volumes again`,
      });
    }
    const was = p.live ? p.state : "down";
    const is = n.live ? n.state : "down";
    if (was === is || is === "draining" || was === "draining") continue;
    if (is === "down") {
      events.push({
        kind: "node-down",
        severity: "critical",
        node: n.id,
        message: `node ${n.id} is down`,
      });
    } else if (is === "suspect") {
      events.push({
        kind: "node-suspect",
        severity: "warning",
        node: n.id,
        message: `node ${n.id} is suspect: heartbeats late`,
      });
    } else if (is === "up") {
      events.push({
        kind: "node-up",
        severity: "info",
        node: n.id,
        message: `node ${n.id} is up again`,
      });
    }
  }
  for (const p of prev) {
    if (!after.has(p.id)) {
      events.push({
        kind: "node-removed",
        severity: "info",
        node: p.id,
        message: `node ${p.id} left the cluster`,
      });
    }
  }
  return events;
}

const stateWords: Record<string, { kind: LiveEvent["kind"]; text: string }> = {
  stale: { kind: "replica-stale", text: "marked stale" },
  rebuilding: { kind: "replica-rebuilding", text: "rebuilding" },
  "in-sync": { kind: "replica-in-sync", text: "back in sync" },
};

function volumeChanges(p: VolumeInfo, v: VolumeInfo, liveAfter: Set<string>): LiveEvent[] {
  const events: LiveEvent[] = [];
  const volume = v.name;
  if (v.term !== p.term && v.owner !== "") {
    if (p.term === 0) {
      events.push({
        kind: "takeover",
        severity: "info",
        volume,
        node: v.owner,
        message: `${volume}: first served by ${v.owner} (term ${v.term})`,
      });
    } else if (v.owner !== p.owner && liveAfter.has(p.owner)) {
      events.push({
        kind: "handoff",
        severity: "info",
        volume,
        node: v.owner,
        message: `${volume}: handed off from ${p.owner} to ${v.owner} (term ${v.term})`,
      });
    } else {
      const from = v.owner === p.owner ? `${p.owner} again` : `from ${p.owner}`;
      events.push({
        kind: "takeover",
        severity: "warning",
        volume,
        node: v.owner,
        message: `${volume}: taken over by ${v.owner} ${from} (term ${v.term})`,
      });
    }
  }
  // Replica changes, summed per node and transition over the segments.
  const transitions = new Map<string, number>();
  const replaced = new Map<string, number>();
  const count = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);
  for (const segment of v.segments) {
    const old = p.segments[segment.index];
    if (!old) continue;
    const oldByNode = new Map(old.replicas.map((r) => [r.node, r.state]));
    const newNodes = new Set(segment.replicas.map((r) => r.node));
    const gone = old.replicas.filter((r) => !newNodes.has(r.node)).map((r) => r.node);
    const added = segment.replicas.filter((r) => !oldByNode.has(r.node)).map((r) => r.node);
    for (const r of segment.replicas) {
      const was = oldByNode.get(r.node);
      if (was !== undefined && was !== r.state) count(transitions, `${r.node}\u0000${r.state}`);
    }
    added.forEach((node, i) => count(replaced, `${gone[i] ?? ""}\u0000${node}`));
  }
  const inSyncAgain = new Set<string>();
  for (const [key, segments] of transitions) {
    const [node, state] = key.split("\u0000");
    const words = stateWords[state];
    if (state === "in-sync") inSyncAgain.add(node);
    events.push({
      kind: words.kind,
      severity: state === "stale" ? "warning" : "info",
      volume,
      node,
      message: `${volume}: ${node}'s replicas ${words.text} (${plural(segments, "segment")})`,
    });
  }
  for (const [key, segments] of replaced) {
    const [from, to] = key.split("\u0000");
    events.push({
      kind: "replica-replaced",
      severity: "info",
      volume,
      node: to,
      message: from
        ? `${volume}: ${plural(segments, "replica")} moved from ${from} to ${to}`
        : `${volume}: ${plural(segments, "replica")} added on ${to}`,
    });
  }
  const copyKey = (c: VolumeInfo["copies"][number]) => `${c.node}\u0000${c.kind}`;
  const oldCopies = new Map(p.copies.map((c) => [copyKey(c), c]));
  const newCopies = new Set(v.copies.map(copyKey));
  for (const c of v.copies) {
    if (oldCopies.has(copyKey(c))) continue;
    events.push({
      kind: "copy-started",
      severity: "info",
      volume,
      node: c.node,
      message: `${volume}: ${c.kind} of ${c.node} started (${plural(c.segments, "segment")})`,
    });
  }
  for (const [key, c] of oldCopies) {
    if (newCopies.has(key) || inSyncAgain.has(c.node)) continue;
    events.push({
      kind: "copy-finished",
      severity: "info",
      volume,
      node: c.node,
      message: `${volume}: ${c.kind} of ${c.node} finished`,
    });
  }
  return events;
}

/**
 * What changed from `prev` to `next`, in a stable order: nodes first, then volumes by
 * name. No events for the first snapshot (prev null): that is the state, not a change.
 */
export function diffSnapshots(prev: Snapshot | null, next: Snapshot): LiveEvent[] {
  if (prev === null) return [];
  const events = nodeEvents(prev.nodes, next.nodes);
  const liveAfter = new Set(next.nodes.filter((n) => n.live).map((n) => n.id));
  const before = new Map(prev.volumes.map((v) => [v.name, v]));
  const after = new Set(next.volumes.map((v) => `${v.name}\u0000${v.id}`));
  for (const p of prev.volumes) {
    if (!after.has(`${p.name}\u0000${p.id}`)) {
      events.push({
        kind: "volume-deleted",
        severity: "info",
        volume: p.name,
        message: `volume ${p.name} deleted`,
      });
    }
  }
  for (const v of [...next.volumes].sort((a, b) => a.name < b.name ? -1 : 1)) {
    const p = before.get(v.name);
    if (!p || p.id !== v.id) {
      events.push({
        kind: "volume-created",
        severity: "info",
        volume: v.name,
        node: v.owner || undefined,
        message: `volume ${v.name} created (${plural(v.segments.length, "segment")}, ` +
          `${v.replicas} replicas, owner ${v.owner || "none yet"})`,
      });
      continue;
    }
    events.push(...volumeChanges(p, v, liveAfter));
  }
  return events;
}
