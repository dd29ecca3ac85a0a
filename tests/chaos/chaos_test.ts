/**
 * `deno task chaos` in brief, as CI runs it: one run with a fixed seed and one with a random
 * seed (printed, to replay with `deno task chaos --seed N`). Each is a real cluster (3
 * nats-servers, 5 nodes) with 20 s of faults, then the checks (chaos/run.ts); under 90 s each.
 */
import assert from "node:assert/strict";
import { type ChaosOptions, formatReport, runChaos } from "../../chaos/mod.ts";

const brief: Omit<ChaosOptions, "seed"> = {
  durationMs: 20_000,
  // Faults closer together than the default, so 20 s sees several.
  gapMs: [500, 2000],
  downMs: [1000, 4000],
  pauseMs: [500, 6000],
  settleMs: 10_000,
  finalSettleMs: 30_000,
  log: (line) => console.log(line),
};

async function run(seed: number): Promise<void> {
  console.log(`chaos: seed ${seed} (replay: deno task chaos --duration 20s --seed ${seed})`);
  const result = await runChaos({ ...brief, seed });
  const report = formatReport(result);
  for (const line of report) console.log(line);
  assert.ok(result.ok, `chaos run with seed ${seed} failed:\n${report.join("\n")}`);
  assert.ok(result.ops.filter((op) => op.result === "ok").length > 100, "the workload ran");
}

Deno.test({
  name: "chaos: 20 s of faults with a fixed seed loses nothing and stays linearizable",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => run(20260101),
});

Deno.test({
  name: "chaos: 20 s of faults with a random seed (printed)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => run(Math.floor(Math.random() * 2 ** 31)),
});
