/** Small flag parser and size parsing for the CLI (no std library here). */
import { mergeNatsAuth, type NatsAuth, natsAuthFromEnv } from "../protocol/nats_auth.ts";

export interface ParsedArgs {
  positional: string[];
  flags: Map<string, string | true>;
}

/** `--name value`, `--name=value`, and bare `--flag` for names in booleanFlags. */
export function parseArgs(argv: string[], booleanFlags: readonly string[] = []): ParsedArgs {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    if (eq > 0) {
      flags.set(arg.slice(2, eq), arg.slice(eq + 1));
    } else if (booleanFlags.includes(arg.slice(2))) {
      flags.set(arg.slice(2), true);
    } else {
      const value = argv[i + 1];
      if (value === undefined || value.startsWith("--")) {
        throw new UsageError(`${arg} needs a value`);
      }
      flags.set(arg.slice(2), value);
      i++;
    }
  }
  return { positional, flags };
}

export class UsageError extends Error {}

const units: Record<string, number> = {
  "": 1,
  B: 1,
  K: 1024,
  KB: 1024,
  KIB: 1024,
  M: 1024 ** 2,
  MB: 1024 ** 2,
  MIB: 1024 ** 2,
  G: 1024 ** 3,
  GB: 1024 ** 3,
  GIB: 1024 ** 3,
  T: 1024 ** 4,
  TB: 1024 ** 4,
  TIB: 1024 ** 4,
};

/** "64MiB", "1.5GiB", "4096", "16TiB" -> bytes (binary units; KB means KiB here). */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match ? units[match[2].toUpperCase()] : undefined;
  if (!match || unit === undefined) {
    throw new UsageError(`cannot read size "${text}" (examples: 4096, 64MiB, 1GiB, 16TiB)`);
  }
  const bytes = Number(match[1]) * unit;
  if (!Number.isSafeInteger(bytes)) {
    throw new UsageError(`size "${text}" is not a whole number of bytes`);
  }
  return bytes;
}

export function formatBytes(bytes: number): string {
  const names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < names.length - 1) {
    value /= 1024;
    i++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${names[i]}`;
}

export function flagString(args: ParsedArgs, name: string, env?: string): string | undefined {
  const value = args.flags.get(name);
  if (value === true) throw new UsageError(`--${name} needs a value`);
  return value ?? (env ? Deno.env.get(env) : undefined) ?? undefined;
}

/**
 * NATS credentials from `--creds FILE` or `--user NAME --password PASS`, else from NATS_CREDS
 * or NATS_USER and NATS_PASSWORD (flags win over the environment as a whole).
 */
export function natsAuthFlags(args: ParsedArgs): NatsAuth {
  return mergeNatsAuth(
    {
      creds: flagString(args, "creds"),
      user: flagString(args, "user"),
      password: flagString(args, "password"),
    },
    natsAuthFromEnv(),
  );
}

/** The usage lines for the NATS credential flags, shared by every command. */
export const natsAuthUsage =
  `  --creds FILE      NATS credentials: a .creds file (user JWT and seed) or an nkey user seed
                    file (SU...) (env NATS_CREDS)
  --user NAME, --password PASS  NATS user and password (env NATS_USER, NATS_PASSWORD; the
                    environment keeps the password out of the process list); a URL may carry
                    them too: nats://user:password@host:4222`;

/** The CLI's extra NATS flag (a client's reply inboxes). */
export const natsInboxUsage =
  `  --inbox-prefix P  reply subjects under P (env NATS_INBOX_PREFIX; default _INBOX), for a NATS
                    user that may subscribe only to P.> (docs/NATS_AUTH.md)`;

export function flagSize(args: ParsedArgs, name: string, env?: string): number | undefined {
  const value = flagString(args, name, env);
  return value === undefined ? undefined : parseSize(value);
}

export function flagInt(args: ParsedArgs, name: string): number | undefined {
  const value = flagString(args, name);
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new UsageError(`--${name} takes a whole number, not "${value}"`);
  return Number(value);
}

/**
 * Runs a command's main and exits with its code: a usage error prints the
 * usage and exits 2, any other error is one line and exits 1.
 */
export async function runCommand(main: () => Promise<number>, usage: string): Promise<never> {
  try {
    Deno.exit(await main());
  } catch (err) {
    if (err instanceof UsageError) console.error(`error: ${err.message}\n${usage}`);
    else console.error(`error: ${(err as Error).message}`);
    Deno.exit(err instanceof UsageError ? 2 : 1);
  }
}
