/**
 * Hands freed memory back to the kernel once a burst of IO is over. A node's IO buffers and
 * socket reads come from glibc's main arena; after a burst of large IO the free space
 * lies scattered between live blocks, where the arena's own trimming (top of the heap
 * only) cannot return it, and dead ArrayBuffers wait for a V8 collection to be freed
 * at all. Measured after 6 s of 1 MiB writes: each node kept 80-95 MiB of heap resident
 * (RSS 155-179 MiB); with this, RSS was 92-96 MiB. Only when idle, so a busy node is
 * never paused by a full collection or made to fault trimmed pages straight back in (a node
 * at a quarter of a core or more is busy).
 */
import process from "node:process";
import { openNativeLibrary } from "../protocol/native.ts";

/** How often resident memory is checked. */
export const memoryTrimIntervalMs = 2000;
/** Below this resident size nothing is done, so a steady node pays nothing. */
export const memoryTrimAboveBytes = 110 * 1024 * 1024;
/**
 * Not busy: the process used less than this share of one core over the last interval. Not
 * 5%: a node with 100 volumes, scraped and asked for its volume list every second, never
 * fell that low and kept 190 MiB resident after a burst of writes.
 */
export const memoryTrimIdleCpuShare = 0.25;
/**
 * Least time between two trims, so a node whose live set is above memoryTrimAboveBytes is
 * not collected every interval (a full collection of a 50 MiB heap is tens of ms). Not a
 * regrowth rule: an idle node's garbage (a scrape, a volume list each second) grows the V8
 * heap slowly, and with one, nodes drifted from 150 back to 157-190 MiB in 30 s.
 */
export const memoryTrimMinGapMs = 10_000;

/**
 * Starts checking: when idle and above memoryTrimAboveBytes, it runs a V8 collection
 * (when the process has --expose-gc) and glibc's malloc_trim (when FFI is allowed).
 * Returns a stop function.
 */
export function startMemoryTrim(intervalMs = memoryTrimIntervalMs): () => void {
  const libc = openNativeLibrary("libc.so.6", {
    malloc_trim: { parameters: ["usize"], result: "i32" },
  });
  const collect = (globalThis as { gc?: () => void }).gc;
  if (!libc && !collect) return () => {};
  let cpu = process.cpuUsage();
  let lastTrimMs = -Infinity;
  const timer = setInterval(() => {
    const used = process.cpuUsage(cpu);
    cpu = process.cpuUsage();
    const busy = (used.user + used.system) / 1000 > intervalMs * memoryTrimIdleCpuShare;
    const nowMs = performance.now();
    if (busy || nowMs - lastTrimMs < memoryTrimMinGapMs) return;
    if (Deno.memoryUsage().rss < memoryTrimAboveBytes) return;
    lastTrimMs = nowMs;
    collect?.();
    libc?.symbols.malloc_trim(0n);
  }, intervalMs);
  Deno.unrefTimer(timer);
  return () => {
    clearInterval(timer);
    libc?.close();
  };
}
