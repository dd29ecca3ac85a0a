/**
 * Counts what the nodes did from the lines they log (server/log.ts: "<time> <node> <level>
 * <message>"). The wording is the volume actor's (actors/volume/actor.ts), the reconcile's
 * (actors/volume/reconcile.ts) and the watchdog's (actors/watchdog/actor.ts); if it changes,
 * the patterns here must follow (a pattern that stops matching shows as a zero). Pure.
 */

export interface NodeLogCounts {
  /** "won term T (from X)" with X another node: a failover or a handoff. */
  takeovers: number;
  /** "won term T (from X)" with X this node: a (re)start taking back its own volume. */
  reclaims: number;
  /** Takeovers by volume: "volume: n1->n3 n3->n2". */
  takeoverPath: Map<string, string[]>;
  /** Reconciles that copied blocks at takeover, and how many blocks in all. */
  reconcileCopies: number;
  reconcileBlocks: number;
  /** "<node> caught up (S segments, B blocks copied...)": a stale replica back in sync. */
  catchUps: number;
  /** Catch-ups that copied at least one block, and how many blocks in all. */
  catchUpsCopying: number;
  catchUpBlocks: number;
  /** "<node> rebuilt (S segments, B blocks copied...)": a replica rebuilt from scratch. */
  rebuilds: number;
  rebuildBlocks: number;
  catchUpFailures: number;
  staleMarks: number;
  fenced: number;
  takeoverRetries: number;
  recordedDown: number;
  /** Lines at level error. */
  errorLines: number;
  /** Some error lines, for the report. */
  errorSamples: string[];
}

const line = /^(\S+) (\S+) (info|warn|error) (.*)$/;
const wonTerm = /^volume (\S+): won term (\d+) \(from (\S+)\)/;
const reconciled = /^volume (\S+): taking-over -> serving \(term \d+: .*?(\d+) blocks copied/;
const caughtUp = /^volume (\S+): (\S+) (caught up|rebuilt) \((\d+) segments, (\d+) blocks copied/;
const catchUpFailed = /^volume (\S+): catch-up of (\S+) failed/;
const markedStale = /^volume (\S+): marked (\S+) stale/;
const fenced = /^volume (\S+): fenced at term/;
const takeoverRetry = /^volume (\S+): takeover at term \d+ not finished/;
const recordedDown = /^watchdog: (\S+) silent for \d+ ms; recorded down/;

export function emptyCounts(): NodeLogCounts {
  return {
    takeovers: 0,
    reclaims: 0,
    takeoverPath: new Map(),
    reconcileCopies: 0,
    reconcileBlocks: 0,
    catchUps: 0,
    catchUpsCopying: 0,
    catchUpBlocks: 0,
    rebuilds: 0,
    rebuildBlocks: 0,
    catchUpFailures: 0,
    staleMarks: 0,
    fenced: 0,
    takeoverRetries: 0,
    recordedDown: 0,
    errorLines: 0,
    errorSamples: [],
  };
}

/** Counts over the whole text of every node's log (lines of all its restarts). */
export function countNodeLogs(texts: readonly string[]): NodeLogCounts {
  const c = emptyCounts();
  const lines: { at: string; node: string; level: string; message: string }[] = [];
  for (const text of texts) {
    for (const raw of text.split("\n")) {
      const m = line.exec(raw);
      if (m) lines.push({ at: m[1], node: m[2], level: m[3], message: m[4] });
    }
  }
  lines.sort((a, b) => a.at.localeCompare(b.at)); // ISO times: the order they happened
  for (const { node, level, message } of lines) {
    if (level === "error") {
      c.errorLines++;
      if (c.errorSamples.length < 5) c.errorSamples.push(`${node}: ${message.slice(0, 300)}`);
    }
    let m: RegExpExecArray | null;
    if ((m = wonTerm.exec(message))) {
      if (m[3] === node) c.reclaims++;
      else {
        c.takeovers++;
        const path = c.takeoverPath.get(m[1]) ?? [];
        path.push(`${m[3]}->${node}`);
        c.takeoverPath.set(m[1], path);
      }
    } else if ((m = reconciled.exec(message))) {
      const blocks = Number(m[2]);
      if (blocks > 0) {
        c.reconcileCopies++;
        c.reconcileBlocks += blocks;
      }
    } else if ((m = caughtUp.exec(message))) {
      const blocks = Number(m[5]);
      if (m[3] === "rebuilt") {
        c.rebuilds++;
        c.rebuildBlocks += blocks;
      } else {
        c.catchUps++;
        if (blocks > 0) c.catchUpsCopying++;
        c.catchUpBlocks += blocks;
      }
    } else if (catchUpFailed.test(message)) c.catchUpFailures++;
    else if (markedStale.test(message)) c.staleMarks++;
    else if (fenced.test(message)) c.fenced++;
    else if (takeoverRetry.test(message)) c.takeoverRetries++;
    else if (recordedDown.test(message)) c.recordedDown++;
  }
  return c;
}
