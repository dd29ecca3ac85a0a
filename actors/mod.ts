/** The actors and the ports they reach the world through. */
export * from "./replica/mod.ts";
export * from "./volume/mod.ts";
export * from "./placement/mod.ts";
export * from "./control/mod.ts";
export * from "./watchdog/mod.ts";
export * from "./metadata.ts";
export { JetStreamMetadata, metadataBucket } from "./metadata_jetstream.ts";
export { MemoryKv, MemoryMetadata } from "./metadata_memory.ts";
export * from "./supervisor/core.ts";
export { Supervisor } from "./supervisor/supervisor.ts";
export { NodeRuntime } from "./node/runtime.ts";
export type { Clock, Disk, DiskFile, Random, Transport, WallClock } from "./ports.ts";
export { TransportError } from "./ports.ts";
export { systemClock, systemDisk, systemRandom } from "./system_ports.ts";
export { MemoryDisk } from "./memory_disk.ts";
