/**
 * `deno task sim [--seed N] [--seeds K] [--seconds S] [--nodes N] [--verbose]`
 *
 * `--stop-on-failure` ends at the first failing seed (used by sim/mutants.ts).
 *
 * Runs K seeds (from N, default 1) of the deterministic cluster simulation,
 * each with S virtual seconds of load under random faults, then prints a
 * summary. A failing seed prints its failures and the event trace that led
 * there; rerun it alone with `--seed N --seeds 1 --verbose` for node logs.
 * Exits 1 if any seed failed.
 */
import { runSeed, type SimResult, type SimTotals } from "./run.ts";

export interface SimSummary extends SimTotals {
  seeds: number;
  failedSeeds: number[];
}

export async function runSeeds(
  seeds: number[],
  options: { seconds: number; nodes?: number; verbose?: boolean; stopOnFailure?: boolean },
  onResult: (result: SimResult, done: number) => void = () => {},
): Promise<SimSummary> {
  const summary: SimSummary = {
    seeds: seeds.length,
    failedSeeds: [],
    simulatedMs: 0,
    realMs: 0,
    operations: 0,
    failedOperations: 0,
    faults: new Map(),
    checks: new Map(),
  };
  for (const [i, seed] of seeds.entries()) {
    const result = await runSeed({
      seed,
      durationMs: options.seconds * 1000,
      nodes: options.nodes,
      traceLogs: options.verbose,
    });
    summary.simulatedMs += result.simulatedMs;
    summary.realMs += result.realMs;
    summary.operations += result.operations;
    summary.failedOperations += result.failedOperations;
    for (const [k, n] of result.faults) summary.faults.set(k, (summary.faults.get(k) ?? 0) + n);
    for (const [k, n] of result.checks) summary.checks.set(k, (summary.checks.get(k) ?? 0) + n);
    if (!result.ok) summary.failedSeeds.push(seed);
    onResult(result, i + 1);
    if (!result.ok && options.stopOnFailure) {
      summary.seeds = i + 1;
      break;
    }
  }
  return summary;
}

export function formatSummary(summary: SimSummary): string {
  const faultTotal = [...summary.faults.values()].reduce((a, b) => a + b, 0);
  const list = (m: Map<string, number>) =>
    [...m].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n.toLocaleString("en-US")}`).join(
      ", ",
    );
  const simSeconds = summary.simulatedMs / 1000;
  const realSeconds = summary.realMs / 1000;
  return [
    `seeds: ${summary.seeds} (${summary.failedSeeds.length} failed${
      summary.failedSeeds.length ? `: ${summary.failedSeeds.join(" ")}` : ""
    })`,
    `simulated: ${simSeconds.toFixed(0)} s in ${realSeconds.toFixed(1)} s real (${
      (simSeconds / Math.max(realSeconds, 1e-9)).toFixed(1)
    } simulated s per real s)`,
    `operations: ${summary.operations.toLocaleString("en-US")} (${
      summary.failedOperations.toLocaleString("en-US")
    } gave up after retries)`,
    `faults injected: ${faultTotal.toLocaleString("en-US")} (${list(summary.faults)})`,
    `checks passed: ${list(summary.checks)}`,
  ].join("\n");
}

function flag(args: string[], name: string): string | undefined {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : undefined;
}

if (import.meta.main) {
  const args = Deno.args;
  const first = Number(flag(args, "seed") ?? 1);
  const count = Number(flag(args, "seeds") ?? 1);
  const seconds = Number(flag(args, "seconds") ?? 20);
  const nodes = flag(args, "nodes") ? Number(flag(args, "nodes")) : undefined;
  const verbose = args.includes("--verbose");
  const stopOnFailure = args.includes("--stop-on-failure");
  if (![first, count, seconds].every((n) => Number.isInteger(n) && n >= 0) || count < 1) {
    console.error(
      "usage: deno task sim [--seed N] [--seeds K] [--seconds S] [--nodes N] [--verbose]",
    );
    Deno.exit(2);
  }
  const seeds = Array.from({ length: count }, (_, i) => first + i);
  const summary = await runSeeds(seeds, { seconds, nodes, verbose, stopOnFailure }, (
    result,
    done,
  ) => {
    if (result.ok && verbose) console.log(result.trace);
    if (!result.ok) {
      console.log(`seed ${result.seed}: FAILED`);
      for (const failure of result.failures) console.log(`  ${failure}`);
      console.log(`  trace (last events):\n${result.trace}`);
      console.log(
        `  replay: deno task sim --seed ${result.seed} --seeds 1 --seconds ${seconds} --verbose`,
      );
    } else if (Deno.stdout.isTerminal()) {
      Deno.stdout.writeSync(
        new TextEncoder().encode(`\rseed ${result.seed} ok (${done}/${count})`),
      );
    }
  });
  if (Deno.stdout.isTerminal()) console.log();
  console.log(formatSummary(summary));
  Deno.exit(summary.failedSeeds.length ? 1 : 0);
}
