/** The Cairn client: control plane, volumes, verify. */
export { CairnClient, connectCluster, type ConnectOptions } from "./client.ts";
export { type IoStats, Volume, type VolumeOptions } from "./volume.ts";
export { type VerifyProgress, type VerifyReport, verifyVolume } from "../actors/control/verify.ts";
