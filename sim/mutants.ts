/**
 * `deno task sim:mutants [--seeds K] [--seconds S]`: shows the simulator finds
 * real bugs. Each patch in sim/mutants/ puts back one defect the simulator is
 * meant to catch (a journal checkpoint race, layout edits that bump the term,
 * retry-and-continue after a failed fdatasync, a takeover retry loop writing
 * metadata). For each, a scratch git worktree of HEAD gets the patch and runs
 * seeds 1..K until the first failure; the table says which seed found it, how
 * many seeds and how much real time that took, and the first violation.
 * Exits 1 if any mutant survives K seeds.
 */
const root = new URL("../", import.meta.url).pathname;

function flag(name: string, fallback: number): number {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 ? Number(Deno.args[at + 1]) : fallback;
}

async function run(cmd: string, args: string[], cwd: string) {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

const seeds = flag("seeds", 100);
const seconds = flag("seconds", 20);
const patches = [...Deno.readDirSync(`${root}sim/mutants`)]
  .filter((e) => e.name.endsWith(".patch")).map((e) => e.name).sort();
const rows: string[][] = [];
let survivors = 0;
for (const patch of patches) {
  const dir = await Deno.makeTempDir({ prefix: "cairn-mutant-" });
  await Deno.remove(dir);
  const add = await run("git", ["worktree", "add", "--detach", dir, "HEAD"], root);
  if (add.code !== 0) throw new Error(`git worktree add failed: ${add.text}`);
  try {
    const apply = await run("git", ["apply", `${root}sim/mutants/${patch}`], dir);
    if (apply.code !== 0) throw new Error(`${patch} does not apply to HEAD: ${apply.text}`);
    console.error(`${patch}: running up to ${seeds} seeds ...`);
    const started = performance.now();
    const sim = await run(Deno.execPath(), [
      "run",
      "-A",
      "sim/main.ts",
      "--seed",
      "1",
      "--seeds",
      String(seeds),
      "--seconds",
      String(seconds),
      "--stop-on-failure",
    ], dir);
    const realSeconds = ((performance.now() - started) / 1000).toFixed(1);
    const failed = sim.text.match(/^seed (\d+): FAILED\n\s+(.*)$/m);
    const tried = sim.text.match(/^seeds: (\d+)/m)?.[1] ?? "?";
    if (failed) {
      rows.push([patch, `found by seed ${failed[1]}`, tried, realSeconds, failed[2].slice(0, 140)]);
    } else {
      survivors++;
      rows.push([patch, "NOT FOUND", tried, realSeconds, sim.text.split("\n").slice(-6).join(" ")]);
    }
  } finally {
    await run("git", ["worktree", "remove", "--force", dir], root);
  }
}
console.log("| Mutant | Result | Seeds run | Real s | First violation |");
console.log("| --- | --- | --- | --- | --- |");
for (const row of rows) console.log(`| ${row.join(" | ")} |`);
Deno.exit(survivors ? 1 : 0);
