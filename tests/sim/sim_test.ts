/**
 * The deterministic simulator in CI: a fixed set of seeds (the same every run) and one
 * random seed (printed, so a failure can be replayed), each a 5-node cluster under
 * random faults for 60 simulated seconds. Prints the summary the README quotes: seeds,
 * simulated seconds, operations, faults by kind, checks passed. Fails on any violation,
 * and if a run injects fewer than 10,000 faults (the simulator has gone soft).
 *
 * By hand, thousands of seeds: deno task sim --seed 1 --seeds 5000 --seconds 60
 */
import assert from "node:assert/strict";
import { formatSummary, runSeeds } from "../../sim/main.ts";

/** Seeds 1..fixedSeeds run in every CI run; a random one is added. */
const fixedSeeds = 160;
const simulatedSecondsPerSeed = 60;
const minFaultsPerRun = 10_000;

Deno.test({
  name: `simulator: ${fixedSeeds} fixed seeds and one random seed, no violation`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const random = 1_000_000 + Math.floor(Math.random() * 1_000_000);
    console.log(
      `random seed this run: ${random} (replay: deno task sim --seed ${random} --seeds 1 --seconds ${simulatedSecondsPerSeed} --verbose)`,
    );
    const seeds = [...Array.from({ length: fixedSeeds }, (_, i) => i + 1), random];
    const failures: string[] = [];
    const summary = await runSeeds(seeds, { seconds: simulatedSecondsPerSeed }, (result, done) => {
      if (done % 20 === 0) console.log(`  ${done}/${seeds.length} seeds`);
      if (!result.ok) {
        failures.push(
          `seed ${result.seed}:\n  ${result.failures.join("\n  ")}\n${result.trace}\n` +
            `replay: deno task sim --seed ${result.seed} --seeds 1 --seconds ${simulatedSecondsPerSeed} --verbose`,
        );
      }
    });
    console.log(formatSummary(summary));
    assert.deepEqual(failures, [], "every seed passes every check");
    const faults = [...summary.faults.values()].reduce((a, b) => a + b, 0);
    assert.ok(
      faults >= minFaultsPerRun,
      `${faults} faults injected, fewer than ${minFaultsPerRun}: raise the seed count or fault rate`,
    );
  },
});
