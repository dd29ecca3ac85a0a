/** Every limit of the system, with its unit in the name. */

/** Block size of every volume; IO offsets and lengths are multiples of it. */
export const blockSizeBytes = 4096;
/** Largest READ/WRITE/TRIM/WRITE_ZEROES payload in one frame; fits NATS's default 1 MiB max_payload with headroom. */
export const maxIoBytes = 512 * 1024;
/** Largest TRIM / WRITE_ZEROES length in one frame (no payload travels with these). */
export const maxZeroIoBytes = 64 * 1024 * 1024;
/** Largest volume: 64 TiB (the issue asks for at least 16 TiB). */
export const maxVolumeSizeBytes = 64 * 1024 ** 4;
/** Smallest and largest segment size; segment size is a power of two. */
export const minSegmentBytes = 64 * 1024;
export const maxSegmentBytes = 64 * 1024 ** 3;
/** Most segments a volume may have, so its layout stays one small KV value. */
export const maxSegmentsPerVolume = 4096;
/** Default segment size for real volumes before the segment count cap raises it. */
export const defaultSegmentBytes = 64 * 1024 * 1024;
/** Most replicas a volume may ask for. */
export const maxReplicas = 7;
export const defaultReplicas = 3;
/** Length of a volume or node name. */
export const maxNameLength = 63;
/** Most client requests one volume actor holds in flight before it answers BUSY. */
export const maxVolumeQueueDepth = 1024;
/** Most bytes of writes batched into one message to a replica node. */
export const maxReplicaBatchBytes = 768 * 1024;
/** How long the volume actor waits for a replica before marking it stale. */
export const replicaTimeoutMs = 5000;
/**
 * Heartbeat period, and the silences after which a peer is suspect and judged down (the
 * detector raises both for a peer whose heartbeats arrive slowly; see actors/watchdog/core.ts).
 * A suspect peer is probed: if its NATS connection is gone (the process died) it is down at
 * once, so on loopback a killed node is recorded down about 0.6 s after it died, and a paused
 * or cut-off one after 1.5 s.
 */
export const heartbeatIntervalMs = 250;
export const nodeSuspectAfterMs = 500;
export const nodeDownAfterMs = 1500;

/** Names of volumes and nodes: safe as one NATS subject token and as a file name. */
export const namePattern = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** The default segment size for a volume of this size: at least the default, and a power of two that keeps the count within maxSegmentsPerVolume. */
export function defaultSegmentBytesFor(sizeBytes: number): number {
  let segmentBytes = defaultSegmentBytes;
  while (Math.ceil(sizeBytes / segmentBytes) > maxSegmentsPerVolume) segmentBytes *= 2;
  return segmentBytes;
}
