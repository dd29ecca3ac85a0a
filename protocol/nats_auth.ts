/**
 * NATS credentials for every Cairn process (nodes, the CLI, the client library, the NBD
 * gateway): one place that turns `--creds` / `--user` / `--password`, their env variables
 * (NATS_CREDS, NATS_USER, NATS_PASSWORD) and credentials in a URL (`nats://u:p@host:4222`)
 * into nats.js connection options, connects, and explains a refusal. Secrets never appear in
 * an error or a log line: only file names and user names do. See docs/NATS_AUTH.md.
 */
import { connect } from "@nats-io/transport-node";
import { presizeReceiveBuffers } from "./nats_internals.ts";
import {
  type ConnectionOptions,
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
  nkeys,
} from "@nats-io/nats-core";
import * as fs from "node:fs";

/** How a process proves who it is to nats-server; every field optional (no authentication). */
export interface NatsAuth {
  /**
   * A NATS `.creds` file (user JWT and nkey seed, as `nsc` writes it), or a file holding a bare
   * nkey user seed (`SU...`, for a server that lists users by nkey). Which one is told by content.
   */
  creds?: string;
  user?: string;
  password?: string;
}

/** Credentials that cannot be used as given (bad file, half a user/password pair, ...). */
export class NatsAuthError extends Error {
  override name = "NatsAuthError";
}

/** nats-server refused the credentials, or asked for some and got none. */
export class NatsAuthRefusedError extends Error {
  override name = "NatsAuthRefusedError";
}

/** NATS_CREDS, NATS_USER and NATS_PASSWORD, as far as set. */
export function natsAuthFromEnv(
  env: { get(name: string): string | undefined } = Deno.env,
): NatsAuth {
  return withoutEmpty({
    creds: env.get("NATS_CREDS"),
    user: env.get("NATS_USER"),
    password: env.get("NATS_PASSWORD"),
  });
}

/**
 * Flags win over the environment as a whole: `--creds` with NATS_USER set uses the creds
 * file only, `--user`/`--password` with NATS_CREDS set use the user only.
 */
export function mergeNatsAuth(flags: NatsAuth, env: NatsAuth): NatsAuth {
  const given = withoutEmpty(flags);
  return Object.keys(given).length > 0 ? given : withoutEmpty(env);
}

function withoutEmpty(auth: NatsAuth): NatsAuth {
  const out: NatsAuth = {};
  if (auth.creds) out.creds = auth.creds;
  if (auth.user) out.user = auth.user;
  if (auth.password) out.password = auth.password;
  return out;
}

/** Server URLs with any `user:password@` taken out, and those credentials. */
export interface ParsedServers {
  servers: string[];
  urlUser?: string;
  urlPassword?: string;
  /** `nats://TOKEN@host` (a user without a password): a token. */
  urlToken?: string;
}

/**
 * Splits a URL list (comma-separated strings or an array) and takes credentials out of the
 * URLs: nats.js ignores them, so they are passed as user/password (or token) instead. Every
 * URL that carries credentials must carry the same ones.
 */
export function parseNatsServers(urls: string | string[]): ParsedServers {
  const list = (Array.isArray(urls) ? urls : [urls]).flatMap((u) => u.split(","))
    .map((u) => u.trim()).filter((u) => u.length > 0);
  if (list.length === 0) throw new Error("no NATS URL given");
  const servers: string[] = [];
  let creds: { user: string; password?: string } | undefined;
  for (const entry of list) {
    const match = /^([a-z][a-z0-9+.-]*:\/\/)?([^@/]*)@(.*)$/i.exec(entry);
    if (!match) {
      servers.push(entry);
      continue;
    }
    const [, scheme = "", userinfo, rest] = match;
    const colon = userinfo.indexOf(":");
    const found = colon < 0 ? { user: decodeURIComponent(userinfo) } : {
      user: decodeURIComponent(userinfo.slice(0, colon)),
      password: decodeURIComponent(userinfo.slice(colon + 1)),
    };
    if (creds && (creds.user !== found.user || creds.password !== found.password)) {
      throw new NatsAuthError(
        "the NATS URLs carry different credentials; give one user for all of them",
      );
    }
    creds = found;
    servers.push(scheme + rest);
  }
  if (!creds) return { servers };
  return creds.password === undefined
    ? { servers, urlToken: creds.user }
    : { servers, urlUser: creds.user, urlPassword: creds.password };
}

/** A URL list fit for logs: `nats://alice:***@host:4222` (the password, or a token, hidden). */
export function redactNatsUrl(urls: string): string {
  return urls.replace(
    /(^|,|\s)([a-z][a-z0-9+.-]*:\/\/)?([^@/,\s]*)@/gi,
    (_all, lead, scheme, info) => {
      const colon = info.indexOf(":");
      return `${lead}${scheme ?? ""}${colon < 0 ? "***" : `${info.slice(0, colon)}:***`}@`;
    },
  );
}

const credsJwtHeader = /-{3,}BEGIN NATS USER JWT-{3,}/;
const credsSeedHeader = /-{3,}BEGIN USER NKEY SEED-{3,}/;
/** An nkey seed is base32 (A-Z, 2-7) and starts with S and the key type: U for a user. */
const seedPattern = /^S[A-Z][A-Z2-7]{50,}$/;

/** What a credentials file holds, by content. */
export type CredsKind = "creds" | "nkey-seed";

/**
 * Reads a credentials file and tells a `.creds` file from a bare user seed; any other
 * content is an error that says what was expected (and never quotes the file).
 */
export function readCredsFile(path: string): { kind: CredsKind; content: Uint8Array } {
  let content: Uint8Array;
  try {
    content = fs.readFileSync(path);
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new NatsAuthError(
      `cannot read the NATS credentials file ${path} (${
        code ?? (err as Error).message
      }): check --creds / NATS_CREDS`,
    );
  }
  const text = new TextDecoder().decode(content);
  if (credsJwtHeader.test(text) && credsSeedHeader.test(text)) {
    try {
      credsAuthenticator(content)(""); // parses the JWT and the seed now, not at connect
    } catch {
      throw new NatsAuthError(
        `${path} looks like a NATS .creds file but its JWT or seed cannot be read: get the file again (nsc generate creds)`,
      );
    }
    return { kind: "creds", content };
  }
  const trimmed = text.trim();
  if (seedPattern.test(trimmed)) {
    if (!trimmed.startsWith("SU")) {
      throw new NatsAuthError(
        `${path} holds an nkey seed that is not a user seed (it starts with ${
          trimmed.slice(0, 2)
        }, a user seed with SU): give the user's seed or .creds file`,
      );
    }
    try {
      nkeys.fromSeed(new TextEncoder().encode(trimmed));
    } catch {
      throw new NatsAuthError(`${path} holds an nkey user seed that is not valid (bad checksum?)`);
    }
    return { kind: "nkey-seed", content: new TextEncoder().encode(trimmed) };
  }
  throw new NatsAuthError(
    `${path} is neither a NATS .creds file (a user JWT and seed) nor an nkey user seed (SU...): check --creds / NATS_CREDS`,
  );
}

/** The public key (U...) of a user seed, for server configs and messages. */
export function nkeyPublicKey(seed: string | Uint8Array): string {
  const bytes = typeof seed === "string" ? new TextEncoder().encode(seed.trim()) : seed;
  return nkeys.fromSeed(bytes).getPublicKey();
}

/**
 * nats.js options for these credentials and servers (the servers without credentials in
 * them). Throws NatsAuthError for credentials that cannot be used as given.
 */
export function natsAuthOptions(
  auth: NatsAuth,
  parsed: ParsedServers,
): Pick<ConnectionOptions, "authenticator" | "user" | "pass" | "token"> {
  if (auth.creds && (auth.user || auth.password)) {
    throw new NatsAuthError(
      "give either a credentials file (--creds / NATS_CREDS) or a user and password (--user and --password / NATS_USER and NATS_PASSWORD), not both",
    );
  }
  if (auth.creds) {
    const { kind, content } = readCredsFile(auth.creds);
    return {
      authenticator: kind === "creds" ? credsAuthenticator(content) : nkeyAuthenticator(content),
    };
  }
  if (auth.user || auth.password) {
    if (!auth.user) {
      throw new NatsAuthError("a NATS password needs a user: give --user / NATS_USER");
    }
    if (auth.password === undefined) {
      throw new NatsAuthError(
        `NATS user "${auth.user}" needs a password: give --password / NATS_PASSWORD`,
      );
    }
    return { user: auth.user, pass: auth.password };
  }
  if (parsed.urlUser !== undefined) return { user: parsed.urlUser, pass: parsed.urlPassword };
  if (parsed.urlToken !== undefined) return { token: parsed.urlToken };
  return {};
}

/** What the caller gave, in words (for refusals). */
function describeCredentials(auth: NatsAuth, parsed: ParsedServers): string | null {
  if (auth.creds) return `the credentials in ${auth.creds}`;
  if (auth.user) return `user "${auth.user}" and its password`;
  if (parsed.urlUser !== undefined) return `user "${parsed.urlUser}" from the NATS URL`;
  if (parsed.urlToken !== undefined) return "the token in the NATS URL";
  return null;
}

function whatToCheck(auth: NatsAuth, parsed: ParsedServers): string {
  if (auth.creds) {
    return "check --creds / NATS_CREDS, and that the server's authorization lists this user's public key";
  }
  if (auth.user) return "check --user and --password (or NATS_USER and NATS_PASSWORD)";
  if (parsed.urlUser !== undefined || parsed.urlToken !== undefined) {
    return "check the user and password in the NATS URL";
  }
  return "";
}

/** True for nats-server refusing a connection's authentication. */
export function isAuthRefusal(err: unknown): boolean {
  for (let e = err as Error | undefined; e; e = e.cause as Error | undefined) {
    if (e.name === "AuthorizationError" || e.name === "UserAuthenticationExpiredError") {
      return true;
    }
    if (/authorization violation|authentication (expired|timeout)/i.test(e.message ?? "")) {
      return true;
    }
  }
  return false;
}

/** Turns a refused connect into a message that says what to do next; others pass as they are. */
export function explainConnectError(err: unknown, auth: NatsAuth, parsed: ParsedServers): Error {
  if (!isAuthRefusal(err)) return err as Error;
  const where = `nats-server at ${parsed.servers.join(",")}`;
  const reason = (err as Error).message;
  const given = describeCredentials(auth, parsed);
  if (!given) {
    return new NatsAuthRefusedError(
      `${where} requires authentication and no credentials were given (${reason}): pass --creds FILE (or NATS_CREDS), or --user and --password (or NATS_USER and NATS_PASSWORD)`,
    );
  }
  return new NatsAuthRefusedError(
    `${where} refused ${given} (${reason}): ${whatToCheck(auth, parsed)}`,
  );
}

export interface NatsConnectOptions extends Omit<ConnectionOptions, "servers"> {
  /** URL(s), a list or comma-separated; credentials in a URL are taken out and used. */
  servers: string | string[];
  /** Default: none (the caller decides whether the environment applies). */
  auth?: NatsAuth;
}

/**
 * Connects with the given credentials; a refusal becomes a NatsAuthRefusedError naming what
 * was sent (a file or a user name, never a secret) and what to check.
 */
export async function connectNats(options: NatsConnectOptions): Promise<NatsConnection> {
  const { auth = {}, servers, ...rest } = options;
  const parsed = parseNatsServers(servers);
  const authOptions = natsAuthOptions(auth, parsed);
  presizeReceiveBuffers();
  try {
    return await connect({ ...rest, ...authOptions, servers: parsed.servers });
  } catch (err) {
    throw explainConnectError(err, auth, parsed);
  }
}
