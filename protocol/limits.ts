/** Every limit of the system, with its unit in the name. */

/** Block size of every volume; IO offsets and lengths are multiples of it. */
export const blockSizeBytes = 4096;
/**
 * Largest READ/WRITE payload in one frame that every owner accepts: it fits NATS's default
 * 1 MiB max_payload with headroom. On a server with a larger max_payload frames may be
 * larger (ioLimitsFor below); this size is always accepted.
 */
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
/**
 * Most bytes of writes batched into one message to a replica node with NATS's default 1 MiB
 * max_payload (with a larger one, see ioLimitsFor).
 */
export const maxReplicaBatchBytes = 768 * 1024;
/** NATS's default max_payload: what a connection that does not say otherwise allows. */
export const defaultNatsMaxPayloadBytes = 1024 * 1024;
/**
 * The max_payload Cairn recommends for nats-server (`max_payload: 8MB` in its config; the
 * server warns above 8 MiB): 4 MiB frames and 6 MiB replica batches.
 */
export const recommendedNatsMaxPayloadBytes = 8 * 1024 * 1024;
/** Largest READ/WRITE frame payload on any server, however large its max_payload. */
export const maxIoBytesCap = 4 * 1024 * 1024;
/** Largest replica write batch on any server. */
export const maxReplicaBatchBytesCap = 6 * 1024 * 1024;
/** Room left in a message for frame and NATS headers when sizing a frame to max_payload. */
export const frameHeadroomBytes = 64 * 1024;

/** Frame and batch sizes for one NATS connection. */
export interface IoLimits {
  /** The connection's max_payload these were derived from. */
  maxPayloadBytes: number;
  /** Largest READ/WRITE length in one frame (a power of two, maxIoBytes..maxIoBytesCap). */
  ioBytes: number;
  /** Most bytes of write entries in one replica batch (at least maxReplicaBatchBytes). */
  replicaBatchBytes: number;
}

/**
 * The limits for a connection whose server allows messages of maxPayloadBytes (NATS INFO
 * `max_payload`; undefined or invalid = the 1 MiB default). Frames: the largest power of two
 * that leaves frameHeadroomBytes, clamped to [maxIoBytes, maxIoBytesCap], so the 1 MiB default
 * gives 512 KiB and 8 MiB gives 4 MiB. Replica batches: three quarters of max_payload, clamped
 * to [maxReplicaBatchBytes, maxReplicaBatchBytesCap] (768 KiB at 1 MiB, 6 MiB at 8 MiB); a
 * single write entry (at most one frame plus small headers) may go alone above that.
 */
export function ioLimitsFor(maxPayloadBytes: number | undefined): IoLimits {
  const payload = maxPayloadBytes !== undefined && Number.isFinite(maxPayloadBytes) &&
      maxPayloadBytes > 0
    ? Math.floor(maxPayloadBytes)
    : defaultNatsMaxPayloadBytes;
  let ioBytes = maxIoBytes;
  while (ioBytes * 2 <= maxIoBytesCap && ioBytes * 2 <= payload - frameHeadroomBytes) {
    ioBytes *= 2;
  }
  const replicaBatchBytes = Math.min(
    maxReplicaBatchBytesCap,
    Math.max(maxReplicaBatchBytes, Math.floor(payload * 3 / 4 / blockSizeBytes) * blockSizeBytes),
  );
  return { maxPayloadBytes: payload, ioBytes, replicaBatchBytes };
}
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
