/**
 * Chaos testing with real processes (`deno task chaos`): a NATS cluster and node processes,
 * concurrent clients, faults (kill -9, SIGSTOP/SIGCONT, restarts, a nats-server killed), and a
 * check of the recorded history. See README "Chaos testing".
 */
export { type ChaosOptions, type ChaosResult, runChaos, type VerifyOutcome } from "./run.ts";
export { failures, formatReport } from "./report.ts";
export {
  allFaultKinds,
  type CrashRecord,
  type FaultKind,
  type FaultRecord,
  Nemesis,
} from "./faults.ts";
export {
  ChaosHistory,
  type ChaosOp,
  describeOp,
  errorKind,
  errorsByKind,
  type Gap,
  type GarbageRead,
  garbageReads,
  longestWriteGap,
  type LostWrite,
  lostWrites,
  registerHistory,
} from "./history.ts";
export { countNodeLogs, type NodeLogCounts } from "./logs.ts";
export { Workload, type WorkloadClient, type WorkloadOptions } from "./workload.ts";
