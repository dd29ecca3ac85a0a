/**
 * Weighted rendezvous (highest-random-weight) hashing: where replicas and
 * volume owners live. Pure and deterministic: the same nodes and keys give the
 * same answer on every machine, whatever the order the nodes are listed in.
 */

export interface PlacementNode {
  id: string;
  zone: string;
  capacityBytes: number;
}

export class NotEnoughNodesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NotEnoughNodesError";
  }
}

const mask64 = (1n << 64n) - 1n;
const fnvOffset64 = 0xcbf29ce484222325n;
const fnvPrime64 = 0x100000001b3n;
const encoder = new TextEncoder();

/**
 * 64-bit FNV-1a of the key's UTF-8 bytes, then a splitmix64 finalizer (FNV
 * alone mixes the last bytes poorly, and keys differ mostly at the end), as a
 * float in (0, 1).
 */
export function hashUnit(key: string): number {
  let h = fnvOffset64;
  for (const byte of encoder.encode(key)) {
    h = ((h ^ BigInt(byte)) * fnvPrime64) & mask64;
  }
  h = ((h ^ (h >> 30n)) * 0xbf58476d1ce4e5b9n) & mask64;
  h = ((h ^ (h >> 27n)) * 0x94d049bb133111ebn) & mask64;
  h ^= h >> 31n;
  // Top 52 bits plus a half: exact in a double, never 0 and never 1, so ln() is finite and < 0.
  return (Number(h >> 12n) + 0.5) / 2 ** 52;
}

/** Weighted HRW score: the top node for a key is node i with probability capacity_i / sum. */
export function score(key: string, node: PlacementNode): number {
  return -node.capacityBytes / Math.log(hashUnit(key + "|" + node.id));
}

interface Scored {
  node: PlacementNode;
  score: number;
}

/** Best first; ties (practically never) by id so the input order never matters. */
function byScore(a: Scored, b: Scored): number {
  if (a.score !== b.score) return b.score - a.score;
  return a.node.id < b.node.id ? -1 : a.node.id > b.node.id ? 1 : 0;
}

function eligible(nodes: readonly PlacementNode[]): PlacementNode[] {
  const seen = new Set<string>();
  for (const node of nodes) {
    if (seen.has(node.id)) throw new Error(`duplicate placement node id ${node.id}`);
    seen.add(node.id);
  }
  return nodes.filter((n) => Number.isFinite(n.capacityBytes) && n.capacityBytes > 0);
}

function checkCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
  }
}

/**
 * count distinct nodes for key, spread over as many zones as possible: the best
 * node of each zone (zones ranked by it), then the best remaining nodes.
 * Ordered by selection.
 */
export function placeReplicas(key: string, nodes: PlacementNode[], count: number): string[] {
  checkCount("replica count", count);
  const live = eligible(nodes);
  if (live.length < count) {
    throw new NotEnoughNodesError(
      `placement of ${key} asked for ${count} nodes but only ${live.length} are live`,
    );
  }
  const ranked = live.map((node) => ({ node, score: score(key, node) })).sort(byScore);
  const chosen: string[] = [];
  const taken = new Set<string>();
  const zonesSeen = new Set<string>();
  // ranked is best first, so each zone's first appearance is its best node, in zone order.
  for (const { node } of ranked) {
    if (chosen.length === count) break;
    if (zonesSeen.has(node.zone)) continue;
    zonesSeen.add(node.zone);
    chosen.push(node.id);
    taken.add(node.id);
  }
  for (const { node } of ranked) {
    if (chosen.length === count) break;
    if (!taken.has(node.id)) chosen.push(node.id);
  }
  return chosen;
}

/**
 * The owner of a volume among the nodes holding its replicas: the one owning
 * fewest volumes, ties by highest score, so owners spread and the choice is stable.
 */
export function chooseOwner(
  volume: string,
  candidates: PlacementNode[],
  ownedCounts: ReadonlyMap<string, number>,
): string {
  if (candidates.length === 0) {
    throw new NotEnoughNodesError(`owner of ${volume} asked for 1 node but 0 are candidates`);
  }
  let best: { scored: Scored; owned: number } | undefined;
  for (const node of candidates) {
    const scored = { node, score: score(volume, node) };
    const owned = ownedCounts.get(node.id) ?? 0;
    if (
      best === undefined || owned < best.owned ||
      (owned === best.owned && byScore(scored, best.scored) < 0)
    ) {
      best = { scored, owned };
    }
  }
  return best!.scored.node.id;
}

/** Layout of a whole volume: segment i is placed under key `${volume}/${i}`. */
export function placeVolume(
  volume: string,
  segmentCount: number,
  nodes: PlacementNode[],
  replicas: number,
): string[][] {
  checkCount("segment count", segmentCount);
  const layout: string[][] = [];
  for (let i = 0; i < segmentCount; i++) {
    layout.push(placeReplicas(`${volume}/${i}`, nodes, replicas));
  }
  return layout;
}

/** A live node and what it holds of one volume, for choosing a successor. */
export interface SuccessorCandidate {
  node: string;
  /** Segments of the volume with an in-sync replica on this node. */
  inSyncSegments: number;
  /** Drained by an operator: chosen only where no undrained node holds as much. */
  drained?: boolean;
}

/** FNV-1a of a string: a stable pseudo-random rank, the same on every node. */
function rank(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/**
 * The successor of a dead owner, the same on every node that sees the same metadata: the
 * live node with in-sync replicas of the most segments (every segment, where one has them),
 * then an undrained one (a drained node still serves rather than leave a volume unowned),
 * ties broken by a hash of volume and node, so volumes spread over the survivors.
 */
export function chooseSuccessor(
  volumeId: string,
  candidates: readonly SuccessorCandidate[],
): string | null {
  let best: SuccessorCandidate | null = null;
  for (const c of candidates) {
    const drainedOrder = Number(best?.drained === true) - Number(c.drained === true);
    if (
      !best || c.inSyncSegments > best.inSyncSegments ||
      (c.inSyncSegments === best.inSyncSegments &&
        (drainedOrder > 0 ||
          drainedOrder === 0 && rank(`${volumeId}/${c.node}`) > rank(`${volumeId}/${best.node}`)))
    ) best = c;
  }
  return best?.node ?? null;
}
