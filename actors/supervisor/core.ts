/**
 * The supervisor's decisions, pure: from what the metadata says of a volume
 * and what this node runs for it, which single action to take. The shell
 * (supervisor.ts) calls `decideVolume` whenever something changed (an actor
 * stopped or was fenced, a node op asked it to look, a periodic sweep) and
 * carries the action out.
 */
import type { OwnerClaim } from "../metadata.ts";
import type { VolumeActorState } from "../volume/lifecycle.ts";
import { isFinal } from "../volume/lifecycle.ts";

/** What the metadata says of one volume (null fields: the volume is gone). */
export interface VolumeRecordView {
  name: string;
  volumeId: string;
  owner: string;
  term: number;
}

/** The actor this node runs for the volume, if any. */
export interface LocalActorView {
  volumeId: string;
  state: VolumeActorState;
  /** The term it holds (0 while it has not won one yet). */
  term: number;
}

export type SupervisorAction =
  /** Take the volume over from exactly `expected` (a restart of this node's own ownership). */
  | { kind: "start"; name: string; expected: OwnerClaim }
  /** Stop the local actor (its volume is gone or owned elsewhere now). */
  | { kind: "stop"; name: string; reason: string }
  /** The local actor is finished: drop it (a new one may start on a later decision). */
  | { kind: "forget"; name: string }
  | { kind: "none" };

/** What the supervisor knows of the owner's node, for failover. */
export interface OwnerHealth {
  /** The owner's node is recorded `down` (the watchdogs' one CAS). */
  ownerDown: boolean;
  /** The live node that should take the volume over (chooseSuccessor), if any. */
  successor: string | null;
}

export function decideVolume(
  nodeId: string,
  record: VolumeRecordView | null,
  local: LocalActorView | null,
  health: OwnerHealth = { ownerDown: false, successor: null },
): SupervisorAction {
  const name = record?.name ?? "";
  if (local && isFinal(local.state)) return { kind: "forget", name };
  if (!record) {
    return local ? { kind: "stop", name, reason: "volume deleted" } : { kind: "none" };
  }
  if (local && local.volumeId !== record.volumeId) {
    return { kind: "stop", name, reason: "volume was deleted and created again" };
  }
  if (record.owner === nodeId) {
    if (!local) {
      // Even a restart of our own ownership takes a new term: writes a previous
      // incarnation of this node left in flight must be fenced out.
      return {
        kind: "start",
        name,
        expected: { volumeId: record.volumeId, owner: nodeId, term: record.term },
      };
    }
    if (local.state === "taking-over" || local.term === record.term) return { kind: "none" };
    return {
      kind: "stop",
      name,
      reason: `layout shows term ${record.term}, actor holds ${local.term}`,
    };
  }
  if (!local && health.ownerDown && health.successor === nodeId) {
    // Failover: the owner is recorded dead and this node is its deterministic successor. The
    // CAS states exactly what it takes over, so a second candidate cannot take it twice.
    return {
      kind: "start",
      name,
      expected: { volumeId: record.volumeId, owner: record.owner, term: record.term },
    };
  }
  // Owned elsewhere: a local actor that is not finishing its own handoff is deposed.
  if (local && local.state !== "handing-off" && local.state !== "stopping") {
    if (local.state === "taking-over" && local.term === 0) return { kind: "none" };
    return { kind: "stop", name, reason: `owned by ${record.owner} at term ${record.term}` };
  }
  return { kind: "none" };
}

export { chooseSuccessor, type SuccessorCandidate } from "../placement/rendezvous.ts";
