export { Watchdog } from "./actor.ts";
export { defaultDetectorSettings, FailureDetector, type PeerLiveness } from "./core.ts";
