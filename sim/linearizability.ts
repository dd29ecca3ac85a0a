/**
 * Per-block linearizability checker for a volume seen as an array of read/write registers.
 *
 * Every write writes a unique value (a positive "write id") to a block; every block starts as 0
 * (zeros). Clients record a history of operations; multi-block IOs are recorded as one
 * {@link HistoryOp} per block, so each block is checked on its own.
 *
 * A block's history is linearizable when some total order of its ok ops plus any subset of its
 * unknown-outcome writes respects real time (a precedes b when a.endMs < b.startMs; unknown ops end
 * at +infinity) and every read returns the value of the latest write before it (0 if none). Failed
 * ops and unknown-outcome reads are ignored.
 *
 * The search is Wing & Gong / Lowe (WGL, as in Porcupine): a depth-first search over which op is
 * linearized next, memoized on (set of linearized ops, current value), with a step budget per
 * block. Unique write values allow strong pruning: a read is placed as soon as its value is
 * current, a write nobody read is placed as soon as writes may go, a value that has been
 * overwritten can never be read again, and no write can be placed while a read of the current value
 * is still pending. Unknown writes nobody read are dropped (they can always be left out), and a
 * write's end is tightened to the end of its earliest read. Fully sequential blocks are checked in
 * linear time without a search.
 *
 * Every block gets a short search first. If that does not settle it, the checker looks for a short
 * proof of a violation, in O(n log n): a stale read (a value already overwritten by a write or by a
 * read that completed before the read started), reported as a lost write when nobody ever saw the
 * newer write and only older values were read after it. Only without a proof does the full search
 * run; if it fails, the violation reports where it got stuck. Reads of a value never written to the
 * block (or written only after the read completed) are reported without any search. Proofs are
 * reported even for a block whose search would run out of budget.
 *
 * Pure: no IO, no clock, no randomness.
 */

export interface HistoryOp {
  /** Who issued it (ops of one client never overlap in time). */
  client: string;
  kind: "write" | "read";
  block: number;
  /** write: the unique value written; read: the value observed (only meaningful when outcome is "ok") */
  value: number;
  startMs: number;
  /** Completion time; for outcome "unknown" it is ignored (treated as +infinity). */
  endMs: number;
  /**
   * ok: completed with success. failed: definitely had no effect (e.g. refused before doing
   * anything). unknown: may or may not have taken effect, at any time after start (timeouts,
   * errors after sending).
   */
  outcome: "ok" | "failed" | "unknown";
  /**
   * A write acknowledged before it was durable (frame flag CACHED): durable only once a FLUSH
   * that started after it completed. Matters only with CheckOptions.losses.
   */
  cached?: boolean;
}

/** A FLUSH that completed OK: every write acknowledged before it started is durable. */
export interface FlushOp {
  startMs: number;
  endMs: number;
}

export type ViolationKind = "lost-write" | "stale-read" | "never-written" | "not-linearizable";

export interface Violation {
  block: number;
  kind: ViolationKind;
  /** Names the block, the values, the times, and what was expected. */
  message: string;
  /** A small relevant subset of the block's ops, sorted by start. */
  ops: HistoryOp[];
}

export interface CheckResult {
  /** No violation was found. Blocks whose search ran out of budget do not make this false. */
  ok: boolean;
  /** Distinct blocks in the history. */
  blocksChecked: number;
  /** Ops that constrain the check: ok reads and writes, and unknown-outcome writes. */
  opsChecked: number;
  /** Blocks whose search ran out of budget with no violation proven: neither passed nor failed. */
  blocksUndecided: number;
  /** Blocks with at least one violation (also counts those beyond maxViolations). */
  blocksFailed: number;
  /** Up to maxViolations, ordered by block, then by time. */
  violations: Violation[];
}

export interface CheckOptions {
  /** Most violations to return (default 100). Checking goes on to count blocksFailed. */
  maxViolations?: number;
  /** Most search steps per block (default 1,000,000). */
  searchBudget?: number;
  /**
   * Times at which every copy of the volume lost power at once (a total power loss), with no
   * op in flight (throws otherwise). At each, a block may go back to an older value: cached
   * writes acknowledged after the last FLUSH completed before the loss are not durable, so
   * the block may hold the value of its last durable write (ok and not cached, or cached and
   * covered by such a FLUSH) or of any write after it. Nothing else may be lost. Needs one
   * writer per block (its writes never overlap in time; throws otherwise).
   */
  losses?: readonly number[];
  /** The FLUSHes that completed OK (for losses). */
  flushes?: readonly FlushOp[];
}

export const DEFAULT_MAX_VIOLATIONS = 100;
export const DEFAULT_SEARCH_BUDGET = 1_000_000;

/**
 * Checks a history block by block. Throws a TypeError on malformed input (bad block, kind,
 * outcome, value or times, or two writes that were not failed writing the same value to one
 * block).
 */
export function checkLinearizable(
  history: readonly HistoryOp[],
  options: CheckOptions = {},
): CheckResult {
  const maxViolations = options.maxViolations ?? DEFAULT_MAX_VIOLATIONS;
  const budget = options.searchBudget ?? DEFAULT_SEARCH_BUDGET;
  const byBlock = new Map<number, HistoryOp[]>();
  for (const op of history) {
    validate(op);
    const list = byBlock.get(op.block);
    if (list) list.push(op);
    else byBlock.set(op.block, [op]);
  }
  const ctx: Context = { history, writtenTo: undefined };
  const result: CheckResult = {
    ok: true,
    blocksChecked: byBlock.size,
    opsChecked: 0,
    blocksUndecided: 0,
    blocksFailed: 0,
    violations: [],
  };
  const blocks = [...byBlock.keys()].sort((a, b) => a - b);
  const losses = [...options.losses ?? []].sort((a, b) => a - b);
  for (const block of blocks) {
    const outcome = losses.length
      ? checkBlockWithLosses(block, byBlock.get(block)!, budget, ctx, losses, options.flushes ?? [])
      : checkBlock(block, byBlock.get(block)!, budget, ctx);
    result.opsChecked += outcome.opsChecked;
    if (outcome.violations.length > 0) {
      result.blocksFailed++;
      for (const v of outcome.violations) {
        if (result.violations.length < maxViolations) result.violations.push(v);
      }
    } else if (outcome.undecided) {
      result.blocksUndecided++;
    }
  }
  result.ok = result.blocksFailed === 0;
  return result;
}

// ---------------------------------------------------------------------------------------------
// Per block

interface Context {
  history: readonly HistoryOp[];
  /** value -> blocks a non-failed write wrote it to; built on first need (messages only). */
  writtenTo: Map<number, number[]> | undefined;
}

interface BlockOutcome {
  opsChecked: number;
  violations: Violation[];
  undecided: boolean;
}

/**
 * The block's ops that enter the search, sorted by start. Slot 0 is the initial value 0; slot k
 * (k >= 1) is the k-th write. Each write's end is tightened to the end of its earliest read.
 */
interface Model {
  block: number;
  n: number;
  op: HistoryOp[];
  start: Float64Array;
  end: Float64Array;
  isWrite: Uint8Array;
  slot: Int32Array;
  /** Per slot: the value, the write's op (undefined for slot 0), its start and effective end. */
  slotValue: number[];
  slotWrite: (HistoryOp | undefined)[];
  slotStart: Float64Array;
  slotEnd: Float64Array;
  /** Per slot: the op whose end bounds when the value took effect (the write, or its first read). */
  slotEndBy: (HistoryOp | undefined)[];
  /** Per slot: how many model reads returned it. */
  slotReads: Int32Array;
}

function checkBlock(
  block: number,
  ops: HistoryOp[],
  budget: number,
  ctx: Context,
): BlockOutcome {
  const violations: Violation[] = [];
  const writeOf = new Map<number, HistoryOp>();
  const failedWriteOf = new Map<number, HistoryOp>();
  let opsChecked = 0;
  for (const op of ops) {
    if (op.kind !== "write") {
      if (op.outcome === "ok") opsChecked++;
      continue;
    }
    if (op.outcome === "failed") {
      failedWriteOf.set(op.value, op);
      continue;
    }
    opsChecked++;
    const other = writeOf.get(op.value);
    if (other) {
      throw new TypeError(
        `linearizability: block ${block}: value ${op.value} is written twice (${
          describe(other)
        } and ${
          describe(op)
        }); write values must be unique per block (give every attempt, retries included, its own write id)`,
      );
    }
    writeOf.set(op.value, op);
  }

  // Reads that cannot be explained by any write: reported directly, left out of the search.
  const reads: HistoryOp[] = [];
  for (const op of ops) {
    if (op.kind !== "read" || op.outcome !== "ok") continue;
    if (op.value === 0) {
      reads.push(op);
      continue;
    }
    const w = writeOf.get(op.value);
    if (w && w.startMs <= op.endMs) reads.push(op);
    else violations.push(neverWritten(block, op, w, failedWriteOf.get(op.value), ops, ctx));
  }

  const model = buildModel(block, ops, reads);
  let found: Violation | undefined;
  let undecided = false;
  if (model.n > 0) {
    if (isSequential(model)) {
      if (!checkSequential(model)) found = findProof(model) ?? notLinearizable(model, undefined);
    } else {
      // A short search settles most blocks. When it does not, a short proof, if there is one,
      // spares a full search that would have to exhaust every order.
      let verdict = search(model, Math.min(budget, QUICK_SEARCH_STEPS + 4 * model.n));
      if (verdict.kind !== "ok") found = findProof(model);
      if (!found && verdict.kind === "budget" && budget > QUICK_SEARCH_STEPS + 4 * model.n) {
        verdict = search(model, budget);
      }
      if (!found && verdict.kind === "fail") found = notLinearizable(model, verdict.deepest);
      if (!found && verdict.kind === "budget") undecided = true;
    }
  }
  if (found) violations.push(found);
  violations.sort((a, b) => firstStart(a) - firstStart(b));
  return { opsChecked, violations, undecided };
}

/** The pseudo-client of the write that stands for a block's value after a total power loss. */
export const powerLossClient = "power-loss";

/**
 * The value of a read that found the block torn (CORRUPT on every copy). A total power loss
 * may tear a block whose last writes were not durable yet (its data and checksum written in
 * place, neither synced), as it may tear a sector of a disk: the checker allows it exactly
 * there (valuesAfterLoss), and nowhere else.
 */
export const tornValue = -1;

/**
 * A block's history cut at total power losses into epochs, each checked on its own from
 * every value the block may hold when it begins: 0 for the first; after a loss, the value of
 * the last write durable by then or of any write after it (see CheckOptions.losses), starting
 * from each value the epoch before may have begun with. The value an epoch begins with is a
 * write of it (by `power-loss`) just before its first op.
 */
function checkBlockWithLosses(
  block: number,
  ops: HistoryOp[],
  budget: number,
  ctx: Context,
  losses: number[],
  flushes: readonly FlushOp[],
): BlockOutcome {
  const epochs: HistoryOp[][] = losses.map(() => []).concat([[]]);
  for (const op of ops) {
    const at = losses.findIndex((t) => op.startMs < t);
    // An ok op, or a write that may have taken effect, must end before the loss it precedes.
    const counts = op.outcome === "ok" || (op.kind === "write" && op.outcome === "unknown");
    if (at >= 0 && counts && !(op.endMs < losses[at])) {
      throw new TypeError(
        `linearizability: ${describe(op)} is in flight at the power loss at ${ms(losses[at])} ms`,
      );
    }
    epochs[at < 0 ? losses.length : at].push(op);
  }
  let opsChecked = 0;
  let undecided = false;
  let begins = new Set<number>([0]);
  for (let e = 0; e < epochs.length; e++) {
    const epochOps = epochs[e];
    const lossAt = e > 0 ? losses[e - 1] : -Infinity;
    const next = new Set<number>();
    let fits = false;
    let firstFailure: BlockOutcome | undefined;
    // The newest value first: the one a run without any loss would have.
    for (const value of [...begins].reverse()) {
      const start: HistoryOp[] = value === 0 ? [] : [{
        client: powerLossClient,
        kind: "write",
        block,
        value,
        startMs: lossAt - 1,
        endMs: lossAt - 1,
        outcome: "ok",
      }];
      const outcome = checkBlock(block, [...start, ...epochOps], budget, ctx);
      if (outcome.violations.length) {
        firstFailure ??= outcome;
        continue;
      }
      fits = true;
      undecided ||= outcome.undecided;
      if (e < losses.length) {
        for (const v of valuesAfterLoss(block, epochOps, value, losses[e], flushes)) next.add(v);
      }
    }
    opsChecked += epochOps.filter((op) =>
      op.outcome === "ok" || (op.kind === "write" && op.outcome === "unknown")
    ).length;
    if (!fits && firstFailure) {
      const shown = [...begins].reverse().slice(0, 6).map(showValue).join(", ");
      const note = e === 0 ? "" : ` (after the total power loss at ${ms(lossAt)} ms the block ` +
        `could hold ${shown}${begins.size > 6 ? ", ..." : ""}; none fits)`;
      return {
        opsChecked,
        undecided: false,
        violations: firstFailure.violations.map((v) => ({ ...v, message: v.message + note })),
      };
    }
    if (e < losses.length) {
      begins = next;
    }
  }
  return { opsChecked, violations: [], undecided };
}

/**
 * What a block may hold after a total power loss at `lossAt`, given the epoch's ops and the
 * value it began with: the last durable write's value (or the beginning value, durable since
 * the restart that began the epoch, if none) and every write's after it; an unknown write
 * may have landed any time after it started, so its value too.
 */
function valuesAfterLoss(
  block: number,
  ops: HistoryOp[],
  began: number,
  lossAt: number,
  flushes: readonly FlushOp[],
): number[] {
  const writes = ops.filter((op) => op.kind === "write" && op.outcome === "ok")
    .sort((a, b) => a.startMs - b.startMs);
  for (let i = 1; i < writes.length; i++) {
    if (writes[i - 1].endMs > writes[i].startMs) {
      throw new TypeError(
        `linearizability: block ${block}: ${describe(writes[i - 1])} and ${
          describe(writes[i])
        } overlap; losses need one writer per block`,
      );
    }
  }
  const durable = (w: HistoryOp) =>
    !w.cached || flushes.some((f) => f.startMs >= w.endMs && f.endMs < lossAt);
  let from = -1;
  for (let i = writes.length - 1; i >= 0; i--) {
    if (durable(writes[i])) {
      from = i;
      break;
    }
  }
  const out = from < 0
    ? [began, ...writes.map((w) => w.value)]
    : writes.slice(from).map((w) => w.value);
  let notDurable = writes.length - 1 - from;
  for (const op of ops) {
    if (op.kind === "write" && op.outcome === "unknown") {
      out.push(op.value);
      notDurable++;
    }
  }
  // A write not durable at the loss may have been cut between its data and its checksum.
  if (notDurable > 0 && !out.includes(tornValue)) out.push(tornValue);
  return out;
}

function firstStart(v: Violation): number {
  return v.ops.length > 0 ? v.ops[0].startMs : 0;
}

function buildModel(
  block: number,
  ops: HistoryOp[],
  reads: HistoryOp[],
): Model {
  // Earliest-ending read of each value: it bounds when the value's write took effect.
  const firstRead = new Map<number, HistoryOp>();
  for (const r of reads) {
    const prev = firstRead.get(r.value);
    if (!prev || r.endMs < prev.endMs) firstRead.set(r.value, r);
  }
  const included: HistoryOp[] = [];
  for (const op of ops) {
    if (op.kind !== "write" || op.outcome === "failed") continue;
    // An unknown write nobody read can always be left out of the order.
    if (op.outcome === "unknown" && !firstRead.has(op.value)) continue;
    included.push(op);
  }
  for (const r of reads) included.push(r);
  included.sort((a, b) => a.startMs - b.startMs);

  const n = included.length;
  const model: Model = {
    block,
    n,
    op: included,
    start: new Float64Array(n),
    end: new Float64Array(n),
    isWrite: new Uint8Array(n),
    slot: new Int32Array(n),
    slotValue: [0],
    slotWrite: [undefined],
    slotStart: new Float64Array(0),
    slotEnd: new Float64Array(0),
    slotEndBy: [undefined],
    slotReads: new Int32Array(0),
  };
  const slotOfValue = new Map<number, number>([[0, 0]]);
  const starts = [-Infinity];
  const ends = [-Infinity];
  for (let i = 0; i < n; i++) {
    const op = included[i];
    if (op.kind !== "write") continue;
    const s = model.slotValue.length;
    slotOfValue.set(op.value, s);
    model.slotValue.push(op.value);
    model.slotWrite.push(op);
    const r = firstRead.get(op.value);
    let end = op.outcome === "ok" ? op.endMs : Infinity;
    let endBy: HistoryOp | undefined = op.outcome === "ok" ? op : undefined;
    if (r && r.endMs < end) {
      end = r.endMs;
      endBy = r;
    }
    starts.push(op.startMs);
    ends.push(end);
    model.slotEndBy.push(endBy);
  }
  model.slotStart = Float64Array.from(starts);
  model.slotEnd = Float64Array.from(ends);
  model.slotReads = new Int32Array(starts.length);
  for (let i = 0; i < n; i++) {
    const op = included[i];
    const s = slotOfValue.get(op.value)!;
    model.slot[i] = s;
    model.start[i] = op.startMs;
    if (op.kind === "write") {
      model.isWrite[i] = 1;
      model.end[i] = model.slotEnd[s];
    } else {
      model.end[i] = op.endMs;
      model.slotReads[s]++;
    }
  }
  return model;
}

// ---------------------------------------------------------------------------------------------
// Deciding

/** Why an op could not go next at the deepest point of the search. */
const enum Why {
  HidesPendingRead,
  NothingFitsAfter,
  Overwritten,
  NotWrittenYet,
}

interface Snapshot {
  placed: number;
  /** Slot of the value the block held. */
  cur: number;
  /** Ops that could have gone next by real time, and why each could not. */
  next: number[];
  why: Why[];
  /** Up to two reads still to return the held value. */
  waiting: number[];
  /** The last ops placed. */
  path: number[];
}

type SearchVerdict =
  | { kind: "ok" }
  | { kind: "fail"; deepest: Snapshot | undefined }
  | { kind: "budget" };

function isSequential(m: Model): boolean {
  for (let i = 1; i < m.n; i++) if (!(m.end[i - 1] < m.start[i])) return false;
  return true;
}

/** For a block whose ops are totally ordered by real time: true when every read is right. */
function checkSequential(m: Model): boolean {
  let cur = 0;
  for (let i = 0; i < m.n; i++) {
    if (m.isWrite[i]) cur = m.slot[i];
    else if (m.slot[i] !== cur) return false;
  }
  return true;
}

const DEAD: number[] = [];

/** Steps of the first, short search (plus 4 per op). */
const QUICK_SEARCH_STEPS = 1000;

/** WGL depth-first search with memoization; see the module comment for the pruning rules. */
function search(m: Model, budget: number): SearchVerdict {
  const { n, start, end, isWrite, slot } = m;
  const slots = m.slotValue.length;
  const lin = new Uint8Array(n);
  const slotLin = new Uint8Array(slots);
  slotLin[0] = 1;
  const pending = Int32Array.from(m.slotReads);
  let p = 0; // first op not yet linearized
  let cur = 0; // slot of the current value
  let placed = 0;
  let steps = 0;
  let winEnd = 0; // ops [p, winEnd) may be linearized next, those with start <= minEnd
  let minEnd = Infinity;
  let deepest: Snapshot | undefined;
  const seen = new Set<string>();
  const readsOf: number[][] = m.slotValue.map(() => []);
  for (let i = 0; i < n; i++) if (!isWrite[i]) readsOf[slot[i]].push(i);
  interface Frame {
    moves: number[];
    next: number;
    applied: number;
    prevCur: number;
  }
  const stack: Frame[] = [];

  /** Computes the window and returns the memo key of the current state. */
  const expand = (): string => {
    let mEnd = Infinity;
    let j = p;
    let key = cur + ":" + p;
    while (j < n && start[j] <= mEnd) {
      if (!lin[j]) {
        if (end[j] < mEnd) mEnd = end[j];
      } else {
        key += "," + (j - p);
      }
      j++;
    }
    winEnd = j;
    minEnd = mEnd;
    return key;
  };

  const moves = (): number[] => {
    if (placed > (deepest?.placed ?? -1)) deepest = snapshot();
    let writes: number[] | undefined;
    for (let i = p; i < winEnd; i++) {
      if (lin[i] || start[i] > minEnd) continue;
      if (isWrite[i]) {
        (writes ??= []).push(i);
        continue;
      }
      const s = slot[i];
      if (s === cur) return [i]; // a read of the current value can always go now
      if (slotLin[s]) return DEAD; // its value was overwritten and can never come back
    }
    if (pending[cur] > 0 || !writes) return DEAD; // a write now would hide a value still to be read
    // A write nobody read can go now: wherever it sits in a valid order, moving it here is valid.
    for (const i of writes) if (m.slotReads[slot[i]] === 0) return [i];
    if (writes.length > 1) writes.sort((a, b) => end[a] - end[b]);
    return writes;
  };

  const snapshot = (): Snapshot => {
    const next: number[] = [];
    const why: Why[] = [];
    for (let i = p; i < winEnd; i++) {
      if (lin[i] || start[i] > minEnd) continue;
      next.push(i);
      if (isWrite[i]) why.push(pending[cur] > 0 ? Why.HidesPendingRead : Why.NothingFitsAfter);
      else why.push(slotLin[slot[i]] ? Why.Overwritten : Why.NotWrittenYet);
    }
    const waiting: number[] = [];
    for (const i of readsOf[cur]) {
      if (!lin[i]) waiting.push(i);
      if (waiting.length === 2) break;
    }
    const path: number[] = [];
    for (let k = Math.max(0, stack.length - 3); k < stack.length; k++) {
      if (stack[k].applied >= 0) path.push(stack[k].applied);
    }
    return { placed, cur, next, why, waiting, path };
  };

  const apply = (i: number): void => {
    lin[i] = 1;
    placed++;
    if (isWrite[i]) {
      cur = slot[i];
      slotLin[cur] = 1;
    } else {
      pending[slot[i]]--;
    }
    while (p < n && lin[p]) p++;
  };

  const undo = (i: number, prevCur: number): void => {
    lin[i] = 0;
    placed--;
    if (isWrite[i]) slotLin[slot[i]] = 0;
    else pending[slot[i]]++;
    cur = prevCur;
    if (i < p) p = i;
  };

  seen.add(expand());
  stack.push({ moves: moves(), next: 0, applied: -1, prevCur: 0 });
  while (stack.length > 0) {
    const f = stack[stack.length - 1];
    if (f.applied >= 0) {
      undo(f.applied, f.prevCur);
      f.applied = -1;
    }
    let descended = false;
    while (f.next < f.moves.length) {
      const i = f.moves[f.next++];
      if (++steps > budget) return { kind: "budget" };
      const prevCur = cur;
      apply(i);
      if (placed === n) return { kind: "ok" };
      const key = expand();
      if (seen.has(key)) {
        undo(i, prevCur);
        continue;
      }
      seen.add(key);
      f.applied = i;
      f.prevCur = prevCur;
      stack.push({ moves: moves(), next: 0, applied: -1, prevCur: 0 });
      descended = true;
      break;
    }
    if (!descended) stack.pop();
  }
  return { kind: "fail", deepest };
}

// ---------------------------------------------------------------------------------------------
// Explaining

/**
 * Looks for the earliest read that provably cannot be linearized: its value v was certainly
 * overwritten before the read started, because either
 * - a write w2 took effect before the read started and v took effect before w2 started, or
 * - an earlier read r1 returned another value, completed before the read started, and started
 *   after v had taken effect.
 */
function findProof(m: Model): Violation | undefined {
  // Writes by effective end, with the running latest start.
  const writes: number[] = [];
  for (let i = 0; i < m.n; i++) if (m.isWrite[i]) writes.push(i);
  writes.sort((a, b) => m.end[a] - m.end[b]);
  const wEnd = writes.map((i) => m.end[i]);
  const wBest: number[] = [];
  for (let k = 0; k < writes.length; k++) {
    const prev = k > 0 ? wBest[k - 1] : -1;
    wBest.push(prev >= 0 && m.start[prev] >= m.start[writes[k]] ? prev : writes[k]);
  }
  // Reads by end, with the latest start and the latest start of another value than that one.
  const reads: number[] = [];
  for (let i = 0; i < m.n; i++) if (!m.isWrite[i]) reads.push(i);
  const readsByEnd = [...reads].sort((a, b) => m.end[a] - m.end[b]);
  const rEnd = readsByEnd.map((i) => m.end[i]);
  const best1: number[] = [];
  const best2: number[] = [];
  let b1 = -1;
  let b2 = -1;
  for (const x of readsByEnd) {
    if (b1 < 0) b1 = x;
    else if (m.slot[x] === m.slot[b1]) {
      if (m.start[x] > m.start[b1]) b1 = x;
    } else if (m.start[x] > m.start[b1]) {
      b2 = b1;
      b1 = x;
    } else if (b2 < 0 || m.start[x] > m.start[b2]) {
      b2 = x;
    }
    best1.push(b1);
    best2.push(b2);
  }

  for (const r of reads) { // reads are in start order
    const s = m.slot[r];
    const tookEffect = m.slotEnd[s];
    const k = countBelow(wEnd, m.start[r]);
    if (k > 0) {
      const w2 = wBest[k - 1];
      if (m.start[w2] > tookEffect) return overwrittenByWrite(m, r, w2);
    }
    const j = countBelow(rEnd, m.start[r]);
    if (j > 0) {
      const r1 = m.slot[best1[j - 1]] !== s ? best1[j - 1] : best2[j - 1];
      if (r1 >= 0 && m.start[r1] > tookEffect) return wentBackInTime(m, r1, r);
    }
  }
  return undefined;
}

/** How many of the sorted values are < x. */
function countBelow(sorted: number[], x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function overwrittenByWrite(m: Model, r: number, w2: number): Violation {
  const read = m.op[r];
  const write2 = m.op[w2];
  const s = m.slot[r];
  const u = m.slotValue[m.slot[w2]];
  const w2End = m.end[w2];
  // Lost when nobody ever read u and every read after w2 returned a value older than w2.
  let lost = m.slotReads[m.slot[w2]] === 0;
  let laterReads = 0;
  for (let i = 0; lost && i < m.n; i++) {
    if (m.isWrite[i] || !(m.start[i] > w2End)) continue;
    laterReads++;
    if (!(m.slotEnd[m.slot[i]] < m.start[w2])) lost = false;
  }
  const ops = [read, write2];
  const writeV = m.slotWrite[s];
  if (writeV) ops.push(writeV);
  const endBy = m.slotEndBy[s];
  if (endBy && endBy !== writeV && endBy !== read) ops.push(endBy);
  ops.sort(byStart);
  const older = s === 0
    ? showValue(0)
    : `${m.slotValue[s]}, which ${tookEffectText(m, s)}, before write ${u} started at ${
      ms(m.start[w2])
    } ms`;
  const block = m.block;
  const took = tookEffectBy(m, w2);
  if (lost) {
    return {
      block,
      kind: "lost-write",
      message:
        `block ${block}: lost write: ${describe(write2)} ${took}, but no read ever returned ${u}; ${
          describe(read)
        } started at ${ms(read.startMs)} ms, after that, and returned ${older}` +
        (laterReads > 1 ? `; all ${laterReads} reads after the write returned older values` : "") +
        `; expected ${u} or a value written after it`,
      ops,
    };
  }
  return {
    block,
    kind: "stale-read",
    message: `block ${block}: stale read: ${describe(read)} returned ${older}; but ${
      describe(write2)
    } ${took}, before the read started at ${
      ms(read.startMs)
    } ms; expected ${u} or a value written after it`,
    ops,
  };
}

function wentBackInTime(m: Model, r1: number, r: number): Violation {
  const first = m.op[r1];
  const read = m.op[r];
  const s = m.slot[r];
  const u = m.slotValue[m.slot[r1]];
  const ops = [first, read];
  for (const t of [m.slot[r1], s]) {
    const w = m.slotWrite[t];
    if (w) ops.push(w);
  }
  ops.sort(byStart);
  const older = s === 0
    ? `${showValue(0)}, although ${u} had been written before`
    : `${m.slotValue[s]}, although ${m.slotValue[s]} ${
      tookEffectText(m, s)
    }, before the first read started at ${
      ms(first.startMs)
    } ms, so it had already been replaced by ${u}`;
  return {
    block: m.block,
    kind: "stale-read",
    message: `block ${m.block}: stale read (the value went back in time): ${
      describe(first)
    } returned ${u}, then ${
      describe(read)
    }, which started after the first completed, returned ${older}; expected ${u} or a value written after it`,
    ops,
  };
}

/** "took effect by T ms (...)" for a write slot, naming what bounds it. */
function tookEffectText(m: Model, s: number): string {
  const w = m.slotWrite[s]!;
  const by = m.slotEndBy[s];
  const where = `written by ${describe(w)}`;
  if (by === w) return `was ${where}, which completed at ${ms(w.endMs)} ms`;
  return `was ${where}, which took effect by ${ms(m.slotEnd[s])} ms (it was read by ${
    describe(by!)
  })`;
}

function tookEffectBy(m: Model, w: number): string {
  const s = m.slot[w];
  const op = m.op[w];
  const by = m.slotEndBy[s];
  if (by === op) return `completed (ok) at ${ms(op.endMs)} ms`;
  return `took effect by ${ms(m.slotEnd[s])} ms (it was read by ${describe(by!)})`;
}

function notLinearizable(m: Model, d: Snapshot | undefined): Violation {
  const block = m.block;
  const head =
    `block ${block}: not linearizable: no order of its ${m.n} ops respects real time with every read returning the latest write before it`;
  if (!d) return { block, kind: "not-linearizable", message: head, ops: m.op.slice(0, 10) };
  const held = showValue(m.slotValue[d.cur]);
  const waiting = d.waiting.map((i) => describe(m.op[i])).join(" and ");
  const reason = (i: number, why: Why): string => {
    const v = m.slotValue[m.slot[i]];
    switch (why) {
      case Why.HidesPendingRead:
        return `it would overwrite ${held}, which ${waiting} must still return`;
      case Why.NothingFitsAfter:
        return "no order of the remaining ops fits after it";
      case Why.Overwritten:
        return `${showValue(v)} was already overwritten`;
      case Why.NotWrittenYet:
        return `write ${v} has not taken effect yet, and cannot go first`;
    }
  };
  const shown = d.next.slice(0, 8);
  const stuck = shown.map((i, k) => `${describeRead(m.op[i])}: ${reason(i, d.why[k])}`).join("; ");
  const prefix = d.placed === 0
    ? "no op can go first"
    : `the longest valid prefix has ${d.placed} op${d.placed > 1 ? "s" : ""} (ending with ${
      d.path.map((i) => describeRead(m.op[i])).join(", ")
    }), after which the block holds ${held}`;
  const ops = new Set<HistoryOp>();
  for (const i of [...d.path, ...shown, ...d.waiting]) ops.add(m.op[i]);
  const curWrite = m.slotWrite[d.cur];
  if (curWrite) ops.add(curWrite);
  return {
    block,
    kind: "not-linearizable",
    message: `${head}; ${prefix}, and none of the ops that may go next fits: ${stuck}` +
      (d.next.length > shown.length ? `; and ${d.next.length - shown.length} more` : ""),
    ops: [...ops].sort(byStart),
  };
}

function neverWritten(
  block: number,
  read: HistoryOp,
  write: HistoryOp | undefined,
  failed: HistoryOp | undefined,
  ops: HistoryOp[],
  ctx: Context,
): Violation {
  const v = read.value;
  let latest: HistoryOp | undefined;
  for (const op of ops) {
    if (op.kind !== "write" || op.outcome !== "ok" || !(op.endMs < read.startMs)) continue;
    if (!latest || op.endMs > latest.endMs) latest = op;
  }
  const expected = latest
    ? `expected ${latest.value} (from ${
      describe(latest)
    }, the latest write completed before the read started) or the value of a write concurrent with the read`
    : `expected 0 (no write to block ${block} completed before the read started) or the value of a write concurrent with the read`;
  let why: string;
  const involved = [read];
  if (write) {
    why = `but ${v} was written by ${describe(write)}, which started at ${
      ms(write.startMs)
    } ms, after the read completed at ${ms(read.endMs)} ms`;
    involved.push(write);
  } else if (failed) {
    why = `but the only write of ${v} to block ${block} was ${
      describe(failed)
    }, which had no effect`;
    involved.push(failed);
  } else {
    const elsewhere = (writtenTo(ctx).get(v) ?? []).filter((b) => b !== block);
    why = `but no write of ${v} to block ${block} appears in the history` +
      (elsewhere.length > 0
        ? ` (${v} was written to block${elsewhere.length > 1 ? "s" : ""} ${
          elsewhere.slice(0, 5).join(", ")
        }${elsewhere.length > 5 ? ", ..." : ""})`
        : "");
  }
  if (latest) involved.push(latest);
  involved.sort(byStart);
  return {
    block,
    kind: "never-written",
    message: `block ${block}: ${describe(read)} returned ${v}, ${why}; ${expected}`,
    ops: involved,
  };
}

function writtenTo(ctx: Context): Map<number, number[]> {
  if (ctx.writtenTo) return ctx.writtenTo;
  const map = new Map<number, number[]>();
  for (const op of ctx.history) {
    if (op.kind !== "write" || op.outcome === "failed") continue;
    const list = map.get(op.value);
    if (!list) map.set(op.value, [op.block]);
    else if (!list.includes(op.block)) list.push(op.block);
  }
  ctx.writtenTo = map;
  return map;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function validate(op: HistoryOp): void {
  const bad = (what: string) => {
    throw new TypeError(`linearizability: ${what} in op ${JSON.stringify(op)}`);
  };
  if (!Number.isSafeInteger(op.block) || op.block < 0) bad("block must be an integer >= 0");
  if (op.kind !== "write" && op.kind !== "read") bad('kind must be "write" or "read"');
  if (op.outcome !== "ok" && op.outcome !== "failed" && op.outcome !== "unknown") {
    bad('outcome must be "ok", "failed" or "unknown"');
  }
  if (!Number.isFinite(op.startMs)) bad("startMs must be finite");
  if (op.kind === "write" && (!Number.isSafeInteger(op.value) || op.value <= 0)) {
    bad("a write's value must be an integer > 0");
  }
  if (op.outcome === "ok") {
    if (
      op.kind === "read" &&
      (!Number.isSafeInteger(op.value) || (op.value < 0 && op.value !== tornValue))
    ) {
      bad("an ok read's value must be an integer >= 0, or tornValue");
    }
    if (!Number.isFinite(op.endMs) || op.endMs < op.startMs) {
      bad("endMs must be finite and >= startMs");
    }
  }
}

function byStart(a: HistoryOp, b: HistoryOp): number {
  return a.startMs - b.startMs || a.endMs - b.endMs;
}

function ms(t: number): string {
  return Number.isInteger(t) ? String(t) : String(Number(t.toFixed(3)));
}

function showValue(v: number): string {
  return v === 0 ? "0 (the initial zeros)" : v === tornValue ? "torn (CORRUPT)" : String(v);
}

/** describe(), with the value a read returned. */
function describeRead(op: HistoryOp): string {
  return op.kind === "read" ? `${describe(op)} (returned ${op.value})` : describe(op);
}

/** e.g. "write 7 by A [10..20 ms]", "read by B [30..35 ms]". */
export function describe(op: HistoryOp): string {
  const who = `by ${op.client}`;
  if (op.kind === "write") {
    if (op.outcome === "unknown") {
      return `write ${op.value} ${who} [started ${ms(op.startMs)} ms, outcome unknown]`;
    }
    const failed = op.outcome === "failed" ? "failed " : "";
    return `${failed}write ${op.value} ${who} [${ms(op.startMs)}..${ms(op.endMs)} ms]`;
  }
  if (op.outcome === "ok") return `read ${who} [${ms(op.startMs)}..${ms(op.endMs)} ms]`;
  return `${op.outcome} read ${who} [started ${ms(op.startMs)} ms]`;
}
