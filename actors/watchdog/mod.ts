export { Watchdog } from "./actor.ts";
export { LivenessTracker } from "./core.ts";
