/**
 * The benchmarks' command lines: `--flag value`, `--flag=value` and bare switches, handed
 * one at a time to the caller, which knows its own flags.
 */

/**
 * Calls `on(flag, value)` for each argument (value() takes the flag's value, inline or the
 * next argument). Returns false when help was asked for (`--help`, `-h`).
 */
export function eachFlag(
  args: readonly string[],
  on: (flag: string, value: () => string) => void,
): boolean {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const [flag, inline] = arg.startsWith("--") && arg.includes("=")
      ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
      : [arg, undefined];
    if (flag === "--help" || flag === "-h") return false;
    on(flag, () => {
      const v = inline ?? args[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    });
  }
  return true;
}
