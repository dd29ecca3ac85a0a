/**
 * mulberry32: a small, fast, well-spread PRNG. Seeded randomness for fault
 * injection and tests, so the same seed replays the same run.
 */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The same generator behind the Random port. */
export function seededRandomPort(seed: number): { next: () => number } {
  return { next: mulberry32(seed) };
}
