/**
 * Cluster metadata: a port (a KV with revisions and compare-and-set) and the
 * rules every writer follows. Production keeps it in a JetStream KV bucket
 * (metadata_jetstream.ts); the simulator and unit tests use MemoryMetadata
 * (metadata_memory.ts).
 *
 * Keys: `node.<id>`, `vol.<name>` (spec), `vol.<name>.layout`. Every layout
 * edit is a CAS on the key's revision (the layout revision). The owner term
 * changes only when ownership changes, and a takeover CAS states what it
 * expects ("from owner X at term T"), so two nodes racing cannot ping-pong.
 */
import type { NodeRecord, SegmentReplica, VolumeLayout, VolumeSpec } from "../protocol/schemas.ts";

export interface Versioned<T> {
  value: T;
  /** The KV revision of this value; the layout revision for layouts. */
  revision: number;
}

/** A compare-and-set lost to another writer. */
export class CasConflictError extends Error {
  override name = "CasConflictError";
}

export interface MetadataPort {
  getNode(id: string): Promise<Versioned<NodeRecord> | null>;
  putNode(record: NodeRecord): Promise<void>;
  /** Writes a node record only if its revision is still `revision`; CasConflictError otherwise. */
  casNode(record: NodeRecord, revision: number): Promise<number>;
  listNodes(): Promise<Versioned<NodeRecord>[]>;

  getSpec(name: string): Promise<Versioned<VolumeSpec> | null>;
  listSpecs(): Promise<VolumeSpec[]>;
  /** Creates the spec key; false if a volume of that name already exists. */
  createSpec(spec: VolumeSpec): Promise<boolean>;

  getLayout(name: string): Promise<Versioned<VolumeLayout> | null>;
  /** Creates the layout key; returns its revision. */
  createLayout(name: string, layout: VolumeLayout): Promise<number>;
  /** Writes the layout only if its revision is still `revision`; CasConflictError otherwise. */
  casLayout(name: string, layout: VolumeLayout, revision: number): Promise<number>;
  deleteVolume(name: string): Promise<void>;
}

export const metadataKeys = {
  node: (id: string) => `node.${id}`,
  volumeSpec: (name: string) => `vol.${name}`,
  volumeLayout: (name: string) => `vol.${name}.layout`,
};

/** Most CAS attempts one layout edit makes before giving up (each re-reads first). */
export const maxLayoutCasAttempts = 16;

/** What a layout edit by the owner expects to still hold: the same volume, owner and term. */
export interface OwnerClaim {
  volumeId: string;
  owner: string;
  term: number;
}

export type LayoutEditResult =
  | { kind: "done"; layout: Versioned<VolumeLayout> }
  | { kind: "unchanged"; layout: Versioned<VolumeLayout> }
  /** The volume is gone or another owner (or term) holds it now: the claimant is fenced. */
  | { kind: "fenced"; layout: Versioned<VolumeLayout> | null };

/**
 * An owner's edit of replica states (stale, rebuilding, in-sync): a CAS on
 * the layout revision that keeps the term, so it fences no one. `change`
 * returns null to leave the layout as it is. Fails (kind "fenced") as soon as
 * the layout shows another volume id, owner or term.
 */
export async function editLayout(
  metadata: MetadataPort,
  name: string,
  claim: OwnerClaim,
  change: (current: VolumeLayout) => VolumeLayout | null,
): Promise<LayoutEditResult> {
  for (let attempt = 0; attempt < maxLayoutCasAttempts; attempt++) {
    const current = await metadata.getLayout(name);
    if (!current || !holdsClaim(current.value, claim)) return { kind: "fenced", layout: current };
    const next = change(current.value);
    if (!next) return { kind: "unchanged", layout: current };
    if (next.term !== claim.term || next.owner !== claim.owner) {
      throw new Error(`layout edit of ${name} may not change owner or term`);
    }
    try {
      const revision = await metadata.casLayout(name, next, current.revision);
      return { kind: "done", layout: { value: next, revision } };
    } catch (err) {
      if (!(err instanceof CasConflictError)) throw err;
    }
  }
  throw new Error(`layout of ${name}: ${maxLayoutCasAttempts} CAS attempts lost in a row`);
}

export function holdsClaim(layout: VolumeLayout, claim: OwnerClaim): boolean {
  return layout.volumeId === claim.volumeId && layout.owner === claim.owner &&
    layout.term === claim.term;
}

export type TakeoverResult =
  | { kind: "won"; layout: Versioned<VolumeLayout> }
  /** The layout no longer shows what the takeover expected: someone else moved first. */
  | { kind: "lost"; layout: Versioned<VolumeLayout> | null };

/**
 * Moves ownership: one CAS from exactly `expected` (volume id, owner, term)
 * to `newOwner` at term + 1. Never retried blindly: if the layout changed,
 * the caller re-decides from what it now shows.
 */
export async function takeOver(
  metadata: MetadataPort,
  name: string,
  expected: OwnerClaim,
  newOwner: string,
  /** Also make newOwner the volume's home (a planned move by an operator). */
  rehome = false,
): Promise<TakeoverResult> {
  const current = await metadata.getLayout(name);
  if (!current || !holdsClaim(current.value, expected)) return { kind: "lost", layout: current };
  const next: VolumeLayout = {
    ...current.value,
    owner: newOwner,
    term: expected.term + 1,
    ...(rehome ? { home: newOwner } : {}),
  };
  try {
    const revision = await metadata.casLayout(name, next, current.revision);
    return { kind: "won", layout: { value: next, revision } };
  } catch (err) {
    if (!(err instanceof CasConflictError)) throw err;
    return { kind: "lost", layout: await metadata.getLayout(name) };
  }
}

/** The replicas of one node in a layout, as segment indexes. */
export function segmentsOfNode(layout: VolumeLayout, node: string): number[] {
  const out: number[] = [];
  layout.segments.forEach((s, index) => {
    if (s.replicas.some((r) => r.node === node)) out.push(index);
  });
  return out;
}

/** Whether `node` holds an in-sync replica of every segment (a handoff target must). */
export function inSyncEverywhere(layout: VolumeLayout, node: string): boolean {
  return layout.segments.every((s) =>
    s.replicas.some((r: SegmentReplica) => r.node === node && r.state === "in-sync")
  );
}
