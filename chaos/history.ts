/**
 * The chaos run's record of every client operation (start, end, result) and what can be
 * computed from it alone: the per-block register history for the linearizability checker
 * (sim/linearizability.ts), acknowledged writes missing from the final state, reads of bytes
 * no write produced, errors by kind, and the longest stretch with no write completing.
 *
 * Every write stamps each block with a unique write id (sim/client.ts `blockImage`), so a read
 * tells exactly which write it saw. A write that ends in an error is indeterminate: it may or
 * may not have taken effect, at any time after it started ("unknown" to the checker). A read
 * that ends in an error constrains nothing. Pure: no IO, no clock.
 */
import type { HistoryOp } from "../sim/linearizability.ts";
import { CairnError } from "../protocol/errors.ts";
import { requestFailure } from "../protocol/control.ts";

/** One client operation on a run of consecutive blocks of one volume. */
export interface ChaosOp {
  /** Who issued it; one client's ops never overlap in time. */
  client: string;
  volume: string;
  kind: "read" | "write";
  firstBlock: number;
  count: number;
  /** write: the write id stamped on every block (unique in the run). */
  writeId: number;
  /** ms since the run started */
  startMs: number;
  /** ms since the run started; NaN while in flight. */
  endMs: number;
  /** undefined while in flight */
  result?: "ok" | "error";
  /** The error kind when result is "error" (see {@link errorKind}). */
  error?: string;
  /** read, ok: the write id each block carried (0 zeros, -1 bytes no write produced). */
  values?: number[];
  /** One of the reads of every block after the faults were healed. */
  final?: boolean;
}

/** Records ops as they start and end. */
export class ChaosHistory {
  readonly ops: ChaosOp[] = [];

  begin(op: Omit<ChaosOp, "endMs" | "result" | "error" | "values">): ChaosOp {
    const record: ChaosOp = { ...op, endMs: NaN };
    this.ops.push(record);
    return record;
  }

  ok(op: ChaosOp, endMs: number, values?: number[]): void {
    op.endMs = endMs;
    op.result = "ok";
    if (values) op.values = values;
  }

  failed(op: ChaosOp, endMs: number, err: unknown): void {
    op.endMs = endMs;
    op.result = "error";
    op.error = errorKind(err);
  }
}

/**
 * A short, stable name for an error: the protocol code, with the cause for UNAVAILABLE
 * (the client gives up with UNAVAILABLE after retrying timeouts or "no responders"), or the
 * transport failure, or the error's name.
 */
export function errorKind(err: unknown): string {
  if (err instanceof CairnError) {
    const gaveUp = /gave up after \d+ ms \((.*)\)\s*$/s.exec(err.message);
    if (err.code === "UNAVAILABLE" && gaveUp) {
      const why = gaveUp[1];
      const code = /^(timeout|no-responders)$/.exec(why)?.[1] ?? /^([A-Z_]+):/.exec(why)?.[1];
      return `UNAVAILABLE (gave up: ${code ?? why.slice(0, 40)})`;
    }
    return err.code;
  }
  const kind = requestFailure(err);
  if (kind !== "other") return kind;
  const e = err as Error;
  if (e && typeof e === "object" && "message" in e) {
    const code = (e as { code?: unknown }).code;
    return `${e.name || "Error"}${typeof code === "string" ? ` ${code}` : ""}`;
  }
  return String(err);
}

/**
 * The register history of one volume's blocks: one HistoryOp per block of every finished op.
 * Writes that ended in an error are "unknown"; ops still in flight are "unknown" writes (left
 * out if reads). Reads of bytes no write produced (-1) are left out (see {@link garbageReads}).
 */
export function registerHistory(ops: readonly ChaosOp[], volume: string): HistoryOp[] {
  const out: HistoryOp[] = [];
  for (const op of ops) {
    if (op.volume !== volume) continue;
    if (op.kind === "write") {
      const ok = op.result === "ok";
      for (let i = 0; i < op.count; i++) {
        out.push({
          client: op.client,
          kind: "write",
          block: op.firstBlock + i,
          value: op.writeId,
          startMs: op.startMs,
          endMs: ok ? op.endMs : op.startMs,
          outcome: ok ? "ok" : "unknown",
        });
      }
    } else if (op.result === "ok" && op.values) {
      op.values.forEach((value, i) => {
        if (value < 0) return;
        out.push({
          client: op.client,
          kind: "read",
          block: op.firstBlock + i,
          value,
          startMs: op.startMs,
          endMs: op.endMs,
          outcome: "ok",
        });
      });
    }
  }
  return out;
}

export interface GarbageRead {
  volume: string;
  block: number;
  op: ChaosOp;
}

/** Reads that returned bytes no write produced (torn, foreign or corrupt blocks). */
export function garbageReads(ops: readonly ChaosOp[]): GarbageRead[] {
  const out: GarbageRead[] = [];
  for (const op of ops) {
    if (op.kind !== "read" || op.result !== "ok" || !op.values) continue;
    op.values.forEach((v, i) => {
      if (v < 0) out.push({ volume: op.volume, block: op.firstBlock + i, op });
    });
  }
  return out;
}

export interface LostWrite {
  volume: string;
  block: number;
  /** The acknowledged write that is missing. */
  write: ChaosOp;
  /** What the final read returned, and the write that produced it (none for zeros). */
  finalValue: number;
  finalRead: ChaosOp;
  finalWrite?: ChaosOp;
}

/**
 * Acknowledged writes missing from the final state: for each block's last final read, a write
 * W acknowledged before that read started is lost when the read returned zeros, or the value of
 * a write X acknowledged before W started (X was certainly older than W). A value written by an
 * indeterminate write may have taken effect at any time, so it hides nothing. Reads of values
 * no write produced are not judged here.
 */
export function lostWrites(ops: readonly ChaosOp[]): LostWrite[] {
  const finals = new Map<string, { read: ChaosOp; value: number }>();
  const writes = new Map<string, ChaosOp[]>();
  const writeOf = new Map<string, ChaosOp>();
  const key = (volume: string, block: number) => `${volume}\u0000${block}`;
  for (const op of ops) {
    for (let i = 0; i < op.count; i++) {
      const k = key(op.volume, op.firstBlock + i);
      if (op.kind === "write") {
        const list = writes.get(k);
        if (list) list.push(op);
        else writes.set(k, [op]);
        writeOf.set(`${k}\u0000${op.writeId}`, op);
      } else if (op.final && op.result === "ok" && op.values) {
        const prev = finals.get(k);
        if (!prev || op.startMs > prev.read.startMs) {
          finals.set(k, { read: op, value: op.values[i] });
        }
      }
    }
  }
  const out: LostWrite[] = [];
  for (const [k, { read, value }] of finals) {
    if (value < 0) continue;
    const block = Number(k.slice(k.indexOf("\u0000") + 1));
    const x = value === 0 ? undefined : writeOf.get(`${k}\u0000${value}`);
    if (value !== 0 && !x) continue; // never written here: the checker reports it
    if (x && x.result !== "ok") continue; // indeterminate: may have landed last
    let lost: ChaosOp | undefined;
    for (const w of writes.get(k) ?? []) {
      if (w === x || w.result !== "ok" || !(w.endMs < read.startMs)) continue;
      if (x && !(x.endMs < w.startMs)) continue; // concurrent with X: either may be last
      if (!lost || w.endMs > lost.endMs) lost = w;
    }
    if (lost) {
      out.push({
        volume: read.volume,
        block,
        write: lost,
        finalValue: value,
        finalRead: read,
        finalWrite: x,
      });
    }
  }
  return out.sort((a, b) => a.volume.localeCompare(b.volume) || a.block - b.block);
}

/** Errors by kind, separately for reads and writes: "write UNAVAILABLE (gave up: timeout)". */
export function errorsByKind(ops: readonly ChaosOp[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const op of ops) {
    if (op.result !== "error") continue;
    const k = `${op.kind} ${op.error ?? "?"}`;
    out.set(k, (out.get(k) ?? 0) + 1);
  }
  return new Map([...out].sort((a, b) => b[1] - a[1]));
}

export interface Gap {
  ms: number;
  fromMs: number;
  toMs: number;
}

/**
 * The longest time within [fromMs, toMs] during which no write completed successfully
 * (counting from fromMs and up to toMs).
 */
export function longestWriteGap(ops: readonly ChaosOp[], fromMs: number, toMs: number): Gap {
  const ends = ops
    .filter((op) =>
      op.kind === "write" && op.result === "ok" && op.endMs >= fromMs &&
      op.endMs <= toMs
    )
    .map((op) => op.endMs)
    .sort((a, b) => a - b);
  let best: Gap = { ms: 0, fromMs, toMs: fromMs };
  let prev = fromMs;
  for (const t of [...ends, toMs]) {
    if (t - prev > best.ms) best = { ms: t - prev, fromMs: prev, toMs: t };
    prev = t;
  }
  return best;
}

/** e.g. "write 17 by c2 to chaos-1 blocks 4..6 [100..250 ms] ok". */
export function describeOp(op: ChaosOp): string {
  const blocks = op.count === 1
    ? `block ${op.firstBlock}`
    : `blocks ${op.firstBlock}..${op.firstBlock + op.count - 1}`;
  const what = op.kind === "write" ? `write ${op.writeId}` : op.final ? "final read" : "read";
  const end = Number.isNaN(op.endMs) ? "in flight" : `${op.endMs.toFixed(0)}`;
  const result = op.result === "error" ? `error ${op.error}` : op.result ?? "unfinished";
  return `${what} by ${op.client} of ${op.volume} ${blocks} [${
    op.startMs.toFixed(0)
  }..${end} ms] ${result}`;
}
