/** Replica actors: segment files, the node journal, and the host that serves them. */
export { HostError, type Logger, ReplicaHost } from "./host.ts";
export { NodeJournal } from "./journal.ts";
export { SegmentFile, SegmentFileError } from "./segment_file.ts";
export { Replica, StaleEpochError } from "./replica.ts";
