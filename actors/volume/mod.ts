/** The volume actor: the single writer of one volume. */
export {
  callReplica,
  checkReplicaReply,
  type ReplicaLink,
  ReplicaReplyError,
  VolumeActor,
} from "./actor.ts";
export { type ReadPolicyName, readPolicyNames } from "./read_policy.ts";
