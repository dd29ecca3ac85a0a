/**
 * The standard NBD tools the tests and the benchmark drive: found on PATH, or installed with
 * apt-get. When they cannot be had, this fails loudly: the NBD tests are never skipped.
 */

import { runCapture } from "../../server/process.ts";

/** Command -> Debian package that provides it. */
export const nbdTools: Record<string, string> = {
  "qemu-img": "qemu-utils",
  "qemu-io": "qemu-utils",
  nbdinfo: "libnbd-bin",
  nbdcopy: "libnbd-bin",
  fio: "fio",
  nbdkit: "nbdkit",
};

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; output: string }> {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      stdout: "piped",
      stderr: "piped",
      env: { DEBIAN_FRONTEND: "noninteractive" },
    }).output();
    const decoder = new TextDecoder();
    return { ok: out.success, output: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
  } catch (err) {
    return { ok: false, output: (err as Error).message };
  }
}

async function missingTools(): Promise<string[]> {
  const missing: string[] = [];
  for (const tool of Object.keys(nbdTools)) {
    if (!(await run("which", [tool])).ok) missing.push(tool);
  }
  // fio must have been built with the libnbd engine.
  if (!missing.includes("fio")) {
    const engines = await run("fio", ["--enghelp"]);
    if (!/^\s*nbd\s*$/m.test(engines.output)) missing.push("fio");
  }
  return missing;
}

let ready: Promise<void> | null = null;

/** Makes sure qemu-img, qemu-io, nbdinfo, nbdcopy, fio (with its nbd engine) and nbdkit exist. */
export function ensureNbdTools(): Promise<void> {
  ready ??= (async () => {
    let missing = await missingTools();
    if (missing.length === 0) return;
    const packages = [...new Set(missing.map((tool) => nbdTools[tool]))];
    const asRoot = Deno.uid() === 0 ? [] : ["sudo", "-n"];
    const apt = (args: string[]) =>
      asRoot.length
        ? run(asRoot[0], [...asRoot.slice(1), "apt-get", ...args])
        : run("apt-get", args);
    const log: string[] = [];
    console.error(`installing ${packages.join(" ")} for the NBD tests`);
    let result = await apt(["install", "-y", ...packages]);
    log.push(result.output);
    if (!result.ok) {
      log.push((await apt(["update"])).output);
      result = await apt(["install", "-y", ...packages]);
      log.push(result.output);
    }
    missing = await missingTools();
    if (missing.length > 0) {
      throw new Error(
        `the NBD tests need ${missing.join(", ")} (Debian packages ${
          packages.join(" ")
        }); apt-get install failed:\n${log.join("\n").slice(-3000)}`,
      );
    }
  })();
  return ready;
}

/** Runs a tool; returns exit code and output. */
export function runTool(
  cmd: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCapture(cmd, args, options);
}

/** Runs a tool and throws with its output unless it exits 0. */
export async function mustRun(
  cmd: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<string> {
  const result = await runTool(cmd, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} exited ${result.code}:\n${result.stdout.slice(-3000)}\n${
        result.stderr.slice(-3000)
      }`,
    );
  }
  return result.stdout;
}
