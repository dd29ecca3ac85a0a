/** Backoff for requests that met a handoff, a restart or a busy owner. */

export const retryInitialDelayMs = 10;
export const retryMaxDelayMs = 1000;
/**
 * Longest wait before resending after "no responders": nobody serves the volume right now
 * (its owner just died, a successor is taking over). Asking costs the server almost nothing,
 * and the successor's first answer should not wait out a long backoff.
 */
export const noRespondersRetryMaxMs = 50;
/** Give up on one request after this long without an answer that is not a retry. */
export const retryDeadlineMs = 60_000;

/** Exponential backoff with full jitter, capped. */
export function backoffDelayMs(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(retryMaxDelayMs, retryInitialDelayMs * 2 ** attempt);
  return ceiling / 2 + random() * ceiling / 2;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
