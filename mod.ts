/**
 * Cairn: highly available block storage on NATS.
 *
 * ```ts
 * import { connectCluster } from "./mod.ts";
 * const cairn = await connectCluster({ servers: "nats://127.0.0.1:4222" });
 * const volume = await cairn.openVolume("demo");
 * await volume.write(0, new Uint8Array(4096).fill(1));
 * const data = await volume.read(0, 4096);
 * await volume.close();
 * await cairn.close();
 * ```
 */
export { CairnClient, connectCluster, type ConnectOptions } from "./client/client.ts";
export { type IoStats, Volume, type VolumeOptions } from "./client/volume.ts";
export type { SegmentMismatch, VerifyProgress, VerifyReport } from "./protocol/schemas.ts";
export { CairnNode, type NodeOptions } from "./server/node.ts";
export { startNatsServer } from "./server/nats_server.ts";
export { CairnError, ErrorCode, type ErrorCodeName } from "./protocol/errors.ts";
export type { CreateVolumeRequest, NodeInfo, VolumeInfo } from "./protocol/schemas.ts";
export type { VolumeStat } from "./protocol/frames.ts";
export * as limits from "./protocol/limits.ts";
