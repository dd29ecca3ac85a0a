/**
 * Every defect patch the simulator is shown to find (`sim/mutants/`, and the ones it does not
 * find yet) still applies to the code: a patch that no longer applies proves nothing, and
 * `deno task sim:mutants` would only say so when someone runs it (one stopped applying when
 * the replica host's marker check changed).
 */
import assert from "node:assert/strict";

const root = new URL("../../", import.meta.url).pathname;

async function git(args: string[]): Promise<{ code: number; text: string }> {
  const out = await new Deno.Command("git", { args, cwd: root, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

function patches(dir: string): string[] {
  return [...Deno.readDirSync(`${root}${dir}`)]
    .filter((e) => e.isFile && e.name.endsWith(".patch"))
    .map((e) => `${dir}/${e.name}`)
    .sort();
}

Deno.test("every simulator mutant patch applies to the code as it is", async (t) => {
  const inRepo = await git(["rev-parse", "--is-inside-work-tree"]).catch(() => null);
  if (inRepo?.code !== 0) {
    console.log("not a git checkout: mutant patches not checked");
    return;
  }
  const all = [...patches("sim/mutants"), ...patches("sim/mutants/not-found-yet")];
  assert.ok(all.length >= 8, `only ${all.length} mutant patches found`);
  for (const patch of all) {
    await t.step(patch, async () => {
      const check = await git(["apply", "--check", patch]);
      assert.equal(
        check.code,
        0,
        `${patch} no longer applies: regenerate it against the current code ` +
          `(make the change, git diff > ${patch}) and rerun deno task sim:mutants.\n${check.text}`,
      );
    });
  }
});
