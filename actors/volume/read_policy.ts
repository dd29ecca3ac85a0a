/**
 * Read policies: which in-sync replica serves a read. Pure; randomness only
 * through the Random port so simulations replay.
 */

import type { Random } from "../ports.ts";

export type ReadPolicyName = "local" | "round-robin" | "least-outstanding" | "weighted";

export const readPolicyNames: readonly ReadPolicyName[] = [
  "local",
  "round-robin",
  "least-outstanding",
  "weighted",
];

export interface ReadCandidate {
  node: string;
  /** Reads sent to this replica and not yet answered. */
  outstanding: number;
  latencyEwmaMs: number;
  weight: number;
}

/** Weight of the newest latency sample: about the last 10 reads dominate, so a slow replica is noticed quickly without one outlier swinging the choice. */
export const latencyEwmaAlpha = 0.2;

/** Exponentially weighted moving average of latency; the first sample (no finite history) seeds it. */
export function updateEwma(previousMs: number, sampleMs: number): number {
  if (!Number.isFinite(sampleMs) || sampleMs < 0) return previousMs;
  if (!Number.isFinite(previousMs)) return sampleMs;
  return previousMs + latencyEwmaAlpha * (sampleMs - previousMs);
}

/** Uniform index in [0, n); clamped in case a Random port returns exactly 1. */
function randomIndex(random: Random, n: number): number {
  return Math.min(n - 1, Math.floor(random.next() * n));
}

/** NaN would defeat every comparison; an unknown latency ranks last. */
function latencyOf(c: ReadCandidate): number {
  return Number.isNaN(c.latencyEwmaMs) ? Infinity : c.latencyEwmaMs;
}

export class ReadPicker {
  #policy: ReadPolicyName;
  #localNode: string;
  #random: Random;
  #nextRoundRobin = 0;

  constructor(policy: ReadPolicyName, localNode: string, random: Random) {
    if (!readPolicyNames.includes(policy)) throw new RangeError(`unknown read policy ${policy}`);
    this.#policy = policy;
    this.#localNode = localNode;
    this.#random = random;
  }

  /** Index into candidates (non-empty, all in-sync replicas of the segment). */
  pick(candidates: readonly ReadCandidate[]): number {
    if (candidates.length === 0) throw new RangeError("no read candidates");
    if (candidates.length === 1) return 0;
    switch (this.#policy) {
      case "local": {
        const local = candidates.findIndex((c) => c.node === this.#localNode);
        return local >= 0 ? local : this.#leastOutstanding(candidates);
      }
      case "round-robin": {
        const index = this.#nextRoundRobin % candidates.length;
        // Wrap well before precision is lost; the tiny skew at the wrap is harmless.
        this.#nextRoundRobin = (this.#nextRoundRobin + 1) % Number.MAX_SAFE_INTEGER;
        return index;
      }
      case "least-outstanding":
        return this.#leastOutstanding(candidates);
      case "weighted":
        return this.#weighted(candidates);
    }
  }

  #leastOutstanding(candidates: readonly ReadCandidate[]): number {
    let ties: number[] = [];
    for (let i = 0; i < candidates.length; i++) {
      if (ties.length === 0) {
        ties = [i];
        continue;
      }
      const best = candidates[ties[0]];
      const c = candidates[i];
      if (
        c.outstanding < best.outstanding ||
        (c.outstanding === best.outstanding && latencyOf(c) < latencyOf(best))
      ) {
        ties = [i];
      } else if (c.outstanding === best.outstanding && latencyOf(c) === latencyOf(best)) {
        ties.push(i);
      }
    }
    // Random among equals so idle replicas share the load instead of the first one taking it all.
    return ties.length === 1 ? ties[0] : ties[randomIndex(this.#random, ties.length)];
  }

  #weighted(candidates: readonly ReadCandidate[]): number {
    const weights = candidates.map((c) => Number.isFinite(c.weight) && c.weight > 0 ? c.weight : 0);
    const total = weights.reduce((a, b) => a + b, 0);
    if (total === 0) return randomIndex(this.#random, candidates.length);
    const target = this.#random.next() * total;
    let sum = 0;
    let lastPositive = 0;
    for (let i = 0; i < weights.length; i++) {
      if (weights[i] === 0) continue;
      sum += weights[i];
      lastPositive = i;
      if (target < sum) return i;
    }
    // Rounding can leave target just above the summed weights.
    return lastPositive;
  }
}
