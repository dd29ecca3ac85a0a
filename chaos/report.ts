/** The chaos run's summary, as lines for a terminal. Pure. */
import { describe } from "../sim/linearizability.ts";
import { describeOp } from "./history.ts";
import type { ChaosResult } from "./run.ts";

const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export function formatReport(r: ChaosResult): string[] {
  const out: string[] = [];
  const o = r.options;
  const ops = r.ops;
  const writes = ops.filter((op) => op.kind === "write");
  const reads = ops.filter((op) => op.kind === "read");
  const okOf = (list: typeof ops) => list.filter((op) => op.result === "ok").length;
  const errOf = (list: typeof ops) => list.filter((op) => op.result === "error").length;
  const chaosS = (r.chaosToMs - r.chaosFromMs) / 1000;

  out.push("");
  out.push(
    `=== chaos: seed ${r.seed}, ${s(r.chaosToMs - r.chaosFromMs)} of faults, ${
      s(r.wallMs)
    } in all ===`,
  );
  out.push(
    `cluster: ${o.nodes} nodes, ${o.natsServers} nats-server(s)${
      o.natsAuth ? " with authorization" : ""
    }; ${o.volumes} volumes x ${o.blocks} blocks ` +
      `(segments of ${o.segmentBytes / 1024} KiB, 3 replicas, minInSync 2); ${o.clients} clients` +
      (o.sabotage ? `; SABOTAGE ${o.sabotage}` : ""),
  );
  out.push(
    `ops: ${ops.length} (writes ${writes.length}: ${okOf(writes)} ok, ${
      errOf(writes)
    } indeterminate; ` +
      `reads ${reads.length}: ${okOf(reads)} ok, ${errOf(reads)} failed)` +
      (chaosS > 0 ? `, ${(okOf(ops) / chaosS).toFixed(0)} ok ops/s` : "") +
      (r.unfinished > 0 ? `; ${r.unfinished} never ended (indeterminate)` : ""),
  );
  const latencies = writes.filter((op) => op.result === "ok").map((op) => op.endMs - op.startMs)
    .sort((a, b) => a - b);
  if (latencies.length > 0) {
    const p = (q: number) =>
      latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
    out.push(
      `write latency: p50 ${p(0.5).toFixed(0)} ms, p99 ${p(0.99).toFixed(0)} ms, max ${
        latencies[latencies.length - 1].toFixed(0)
      } ms`,
    );
  }
  const g = r.longestWriteGap;
  out.push(
    `longest time with no write completing: ${s(g.ms)} (${s(g.fromMs)} .. ${
      s(g.toMs)
    } into the run)`,
  );

  if (r.errors.size === 0) out.push("errors by kind: none");
  else {
    out.push("!!! errors by kind (allowed: writes count as indeterminate, reads are dropped):");
    for (const [kind, n] of r.errors) out.push(`!!!   ${String(n).padStart(6)}  ${kind}`);
  }

  const byKind = new Map<string, number>();
  for (const f of r.faults) byKind.set(f.kind, (byKind.get(f.kind) ?? 0) + 1);
  out.push(
    `faults injected: ${r.faults.length}` +
      (r.faults.length ? ` (${[...byKind].map(([k, n]) => `${k} ${n}`).join(", ")})` : ""),
  );
  for (const f of r.faults) {
    const down = Number.isNaN(f.healedMs) ? "never healed" : `for ${s(f.healedMs - f.startMs)}`;
    const settled = Number.isNaN(f.healedMs)
      ? ""
      : f.endedRun
      ? " (healed when the faults stopped)"
      : Number.isNaN(f.settledMs)
      ? ", did not settle"
      : `, settled ${s(f.settledMs)} later`;
    out.push(
      `  ${s(f.startMs).padStart(8)}  ${f.kind.padEnd(9)} ${f.target}${
        f.owner ? " (owner)" : ""
      } ${down}${settled}` +
        (f.error ? `  ERROR ${f.error}` : ""),
    );
  }

  if (r.crashes.length > 0) {
    out.push(`!!! node processes that exited on their own: ${r.crashes.length}`);
    for (const c of r.crashes) {
      out.push(
        `!!!   ${s(c.atMs)}  ${c.node} exited (code ${c.exitCode}, signal ${c.signal})${
          c.restarted ? ", started again" : ""
        }`,
      );
      for (const line of c.logTail.slice(-4)) out.push(`!!!       ${line}`);
    }
  }

  const l = r.logs;
  out.push(
    `node logs: takeovers ${l.takeovers}, restarts taking back own volumes ${l.reclaims}, ` +
      `takeover retries ${l.takeoverRetries}, fenced ${l.fenced}, recorded down ${l.recordedDown}`,
  );
  out.push(
    `           catch-ups ${l.catchUps} (${l.catchUpsCopying} copying blocks, ${l.catchUpBlocks} blocks), ` +
      `rebuilds ${l.rebuilds} (${l.rebuildBlocks} blocks), catch-up failures ${l.catchUpFailures}, ` +
      `stale marks ${l.staleMarks}, takeover reconciles copying blocks ${l.reconcileCopies} ` +
      `(${l.reconcileBlocks} blocks), error lines ${l.errorLines}`,
  );
  const nodeFaults = r.faults.filter((f) => f.kind !== "kill-nats").length;
  if (
    nodeFaults > 0 && l.takeovers + l.reclaims + l.staleMarks > 0 && l.catchUps + l.rebuilds === 0
  ) {
    out.push(
      "           (no catch-up or rebuild lines matched after node faults: has the log wording in actors/volume/actor.ts changed? see chaos/logs.ts)",
    );
  }
  if (l.takeoverPath.size > 0) {
    out.push(
      `           owners: ${[...l.takeoverPath].map(([v, p]) => `${v} ${p.join(" ")}`).join("; ")}`,
    );
  }
  for (const e of l.errorSamples) out.push(`           error: ${e}`);

  out.push(
    `checked: ${r.blocksChecked} blocks linearizable per block` +
      (r.blocksUndecided ? ` (${r.blocksUndecided} UNDECIDED: search budget)` : ""),
  );
  out.push(`lost acknowledged writes (final state): ${r.lostWrites.length}`);
  for (const w of r.lostWrites.slice(0, 10)) {
    out.push(
      `  ${w.volume} block ${w.block}: ${describeOp(w.write)} is gone; the final read returned ${
        w.finalValue === 0 ? "zeros" : w.finalValue
      }${w.finalWrite ? ` (${describeOp(w.finalWrite)})` : ""}`,
    );
  }
  const vk = new Map<string, number>();
  for (const { violation } of r.violations) {
    vk.set(violation.kind, (vk.get(violation.kind) ?? 0) + 1);
  }
  out.push(
    `linearizability violations: ${r.violations.length}` +
      (vk.size ? ` (${[...vk].map(([k, n]) => `${k} ${n}`).join(", ")})` : ""),
  );
  for (const { volume, violation } of r.violations.slice(0, 10)) {
    out.push(`  ${volume}: ${violation.message}`);
    for (const op of violation.ops) out.push(`      ${describe(op)}`);
  }
  out.push(`reads of bytes no write produced: ${r.garbage.length}`);
  for (const g of r.garbage.slice(0, 5)) {
    out.push(`  ${g.volume} block ${g.block}: ${describeOp(g.op)}`);
  }
  const vOk = r.verify.filter((v) => v.ok).length;
  out.push(`volume verify: ${vOk}/${o.volumes} passed`);
  for (const v of r.verify.filter((v) => !v.ok)) {
    out.push(`  ${v.volume}: ${v.problems.slice(0, 5).join("; ")}`);
  }
  out.push(`volumes without a serving owner: ${r.ownerless.length}`);
  for (const w of r.ownerless) out.push(`  ${w.volume}: ${w.why}`);
  for (const e of r.harnessErrors) out.push(`harness error: ${e}`);
  out.push(r.kept ? `logs, data and history.jsonl kept in ${r.root}` : "");
  out.push(
    r.ok ? `PASS (seed ${r.seed})` : `FAIL (seed ${r.seed}): ${failures(r).join(", ")}`,
  );
  return out.filter((line, i) => line !== "" || i === 0);
}

export function failures(r: ChaosResult): string[] {
  const f: string[] = [];
  if (r.lostWrites.length) f.push(`${r.lostWrites.length} lost writes`);
  if (r.violations.length) f.push(`${r.violations.length} linearizability violations`);
  if (r.garbage.length) f.push(`${r.garbage.length} garbage reads`);
  const vf = r.verify.filter((v) => !v.ok).length + (r.options.volumes - r.verify.length);
  if (vf) f.push(`${vf} volumes failed verify`);
  if (r.ownerless.length) f.push(`${r.ownerless.length} volumes without a serving owner`);
  if (r.crashes.length) f.push(`${r.crashes.length} node processes exited on their own`);
  if (r.harnessErrors.length) f.push(`${r.harnessErrors.length} harness errors`);
  return f;
}
