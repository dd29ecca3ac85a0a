/**
 * `deno task chaos [--duration 60s] [--seed N] [...]`: one chaos run against real processes
 * (chaos/mod.ts); prints the report and exits 0 only if nothing was lost, every history is
 * linearizable, every volume verifies and has an owner.
 */
import { allFaultKinds, type FaultKind, formatReport, runChaos } from "../chaos/mod.ts";
import { flagInt, flagSize, flagString, parseArgs, runCommand, UsageError } from "./args.ts";

const usage = `usage: deno task chaos [--duration 60s] [--seed N] [--nodes 5] [--nats 3|1]
                       [--clients 6] [--volumes 3] [--blocks 256] [--segment-size 256KiB]
                       [--faults kill,pause,restart,kill-nats] [--keep] [--nats-auth]
  --duration   how long faults are injected: 90s, 10m, 4h (default 60s)
  --seed       seeds the fault schedule and the workload (default: random, printed)
  --keep       keep the cluster's logs and data even when the run passes (always kept on failure)
  --nats-auth  NATS authorization on: nodes and clients as the node and admin users of
               docs/NATS_AUTH.md (nkeys made under the run's dir)
  --sabotage drop-write   break the workload on purpose (skips every 25th write, records it
                          acknowledged): the run must fail, which checks the checks`;

/** "90s", "10m", "4h", "1500ms", "60" (seconds) -> ms. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) throw new UsageError(`cannot read duration "${text}" (examples: 60s, 10m, 4h)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"]!;
  return Math.round(Number(m[1]) * unit);
}

async function main(): Promise<number> {
  const args = parseArgs(Deno.args, ["keep", "nats-auth"]);
  if (args.positional.length > 0) throw new UsageError(`unexpected ${args.positional[0]}`);
  const faults = flagString(args, "faults")?.split(",").map((f) => f.trim()) as
    | FaultKind[]
    | undefined;
  for (const f of faults ?? []) {
    if (!allFaultKinds.includes(f)) throw new UsageError(`unknown fault "${f}"`);
  }
  const sabotage = flagString(args, "sabotage");
  if (sabotage !== undefined && sabotage !== "drop-write") {
    throw new UsageError(`unknown sabotage "${sabotage}"`);
  }
  const seed = flagInt(args, "seed") ?? Math.floor(Math.random() * 2 ** 31);
  console.log(`chaos: seed ${seed} (run again with --seed ${seed})`);
  const result = await runChaos({
    durationMs: parseDuration(flagString(args, "duration") ?? "60s"),
    seed,
    nodes: flagInt(args, "nodes"),
    natsServers: flagInt(args, "nats"),
    clients: flagInt(args, "clients"),
    volumes: flagInt(args, "volumes"),
    blocks: flagInt(args, "blocks"),
    segmentBytes: flagSize(args, "segment-size"),
    faults,
    keep: args.flags.has("keep"),
    natsAuth: args.flags.has("nats-auth"),
    sabotage,
  });
  for (const line of formatReport(result)) console.log(line);
  return result.ok ? 0 : 1;
}

if (import.meta.main) await runCommand(main, usage);
