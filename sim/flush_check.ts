/**
 * FLUSH after a total power loss, checked: a FLUSH answered OK promises that every write its
 * client had acknowledged before it is durable. A power loss of every copy may have taken the
 * client's cached writes not yet covered by a FLUSH; the first FLUSH of that client after the
 * loss must then fail (CACHE_LOST), never answer OK. Pure: from the history and the FLUSHes.
 */
import type { HistoryOp } from "./linearizability.ts";

export interface ClientFlush {
  client: string;
  startMs: number;
  endMs: number;
  /** ok: answered OK; lost: answered CACHE_LOST; failed: anything else. */
  outcome: "ok" | "lost" | "failed";
}

/** Messages for each FLUSH that answered OK after a loss took its client's cached writes. */
export function checkFlushesAfterLosses(
  history: readonly HistoryOp[],
  flushes: readonly ClientFlush[],
  losses: readonly number[],
): string[] {
  const problems: string[] = [];
  const okFlushes = flushes.filter((f) => f.outcome === "ok");
  /** Durable at the loss: not cached, or covered by an OK FLUSH (any client's) before it. */
  const durableAt = (w: HistoryOp, lossAt: number) =>
    !w.cached || okFlushes.some((f) => f.startMs >= w.endMs && f.endMs < lossAt);
  for (const lossAt of losses) {
    const clients = new Set(
      history.filter((op) =>
        op.kind === "write" && op.outcome === "ok" && op.endMs < lossAt && !durableAt(op, lossAt)
      ).map((op) => op.client),
    );
    for (const client of clients) {
      // The client's first FLUSH answered after the loss (one that started before it could
      // not know of it) must not be OK.
      const first = flushes
        .filter((f) => f.client === client && f.startMs > lossAt && f.outcome !== "failed")
        .sort((a, b) => a.startMs - b.startMs)[0];
      if (first?.outcome === "ok") {
        problems.push(
          `FLUSH by ${client} at ${first.startMs.toFixed(1)} ms answered OK, but cached writes ` +
            `it had acknowledged were not durable at the total power loss at ${
              lossAt.toFixed(1)
            } ms (expected CACHE_LOST)`,
        );
      }
    }
  }
  return problems;
}
