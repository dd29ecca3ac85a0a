/** The control service (every control operation and its rules) and volume verify. */
export { ControlService, defaultMinInSync, volumeInfo } from "./service.ts";
export { type VerifySource, verifyVolume } from "./verify.ts";
