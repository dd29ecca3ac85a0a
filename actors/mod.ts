/** The actors and the ports they reach the world through. */
export * from "./replica/mod.ts";
export * from "./volume/mod.ts";
export * from "./placement/mod.ts";
export * from "./watchdog/mod.ts";
export { MetadataStore } from "./metadata.ts";
export type { Clock, Disk, DiskFile, Random } from "./ports.ts";
export { systemClock, systemDisk, systemRandom } from "./system_ports.ts";
export { MemoryDisk } from "./memory_disk.ts";
