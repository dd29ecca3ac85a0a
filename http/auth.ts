/**
 * HTTP access control. Two roles: `read` (every GET, and verify, which changes nothing)
 * and `admin` (everything, mutations included). Tokens come from a file (`--http-tokens`)
 * and/or the env (`CAIRN_HTTP_TOKENS`), as `role:token` entries; only their SHA-256
 * digests are kept, and a presented token's digest is compared with every one of them in
 * constant time.
 */
import type { Context, MiddlewareHandler } from "hono";
import { problemResponse } from "./problems.ts";

export const roles = ["read", "admin"] as const;
export type Role = (typeof roles)[number];

/**
 * Who may call a route: `public` (the OpenAPI document and its docs page), `probe`
 * (/healthz, /readyz, /metrics), or a role.
 */
export type Access = "public" | "probe" | Role;

/** Route groups that can be left open to callers without a token (`--http-open`). */
export const openGroups = ["probes", "reads"] as const;
export type OpenGroup = (typeof openGroups)[number];

/** Shortest token accepted: 16 characters (a guessable token is no control at all). */
export const minTokenLength = 16;
/** RFC 6750 b64token: what a bearer token may be made of. */
const tokenPattern = /^[A-Za-z0-9\-._~+/]+=*$/;

export interface TokenEntry {
  role: Role;
  /** SHA-256 of the token; the token itself is not kept. */
  digest: Uint8Array;
}

export interface AccessPolicy {
  tokens: TokenEntry[];
  /** Groups open without a token (when tokens are configured). */
  open: Set<OpenGroup>;
}

export class TokenConfigError extends Error {}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** Equal digests, in time independent of where they differ. */
function digestsEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ (b[i] ?? 0);
  return diff === 0;
}

/**
 * Parses `role:token` entries, one per line in a file (`#` starts a comment line), or
 * separated by commas or whitespace in the env. `source` names where they came from.
 */
export async function parseTokens(text: string, source: string): Promise<TokenEntry[]> {
  const entries: TokenEntry[] = [];
  const lines = text.split(/\r?\n/);
  for (let lineIndex = 0; lineIndex < lines.length; lineIndex++) {
    const line = lines[lineIndex].trim();
    if (line === "" || line.startsWith("#")) continue;
    for (const item of line.split(/[\s,]+/).filter((i) => i !== "")) {
      const where = `${source} line ${lineIndex + 1}`;
      const colon = item.indexOf(":");
      const role = item.slice(0, colon);
      const token = item.slice(colon + 1);
      if (colon < 0 || !(roles as readonly string[]).includes(role)) {
        throw new TokenConfigError(`${where}: entries are role:token with role read or admin`);
      }
      if (token.length < minTokenLength || !tokenPattern.test(token)) {
        throw new TokenConfigError(
          `${where}: a token is at least ${minTokenLength} characters of A-Z a-z 0-9 - . _ ~ + /`,
        );
      }
      entries.push({ role: role as Role, digest: await sha256(token) });
    }
  }
  return entries;
}

/** `--http-open probes,reads` (or `none`): which groups need no token. */
export function parseOpenGroups(text: string): Set<OpenGroup> {
  const groups = new Set<OpenGroup>();
  for (const item of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    if (item === "none") continue;
    if (!(openGroups as readonly string[]).includes(item)) {
      throw new TokenConfigError(`--http-open takes probes, reads or none, not "${item}"`);
    }
    groups.add(item as OpenGroup);
  }
  return groups;
}

/** Default: probes open, reads and mutations need a token. */
export const defaultOpenGroups: OpenGroup[] = ["probes"];

/** The role a presented bearer token carries; null without one; "invalid" if it matches none. */
async function presentedRole(
  policy: AccessPolicy,
  authorization: string | undefined,
): Promise<Role | null | "invalid"> {
  if (authorization === undefined) return null;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  if (!match) return "invalid";
  const digest = await sha256(match[1]);
  let found: Role | null = null;
  // Every entry is compared, so the time taken does not tell which (or whether one) matched.
  for (const entry of policy.tokens) {
    if (digestsEqual(digest, entry.digest) && found !== "admin") found = entry.role;
  }
  return found ?? "invalid";
}

function isOpen(policy: AccessPolicy, access: Access): boolean {
  if (access === "probe") return policy.open.has("probes");
  if (access === "read") return policy.open.has("reads");
  return false;
}

/**
 * Runs before a route's body is read or validated: a caller without the right gets 401
 * (no token, or one that matches nothing) or 403 (a read token on a mutation), and the
 * route's handler never runs.
 */
export function requireAccess(policy: AccessPolicy, access: Access): MiddlewareHandler {
  return async (c: Context, next) => {
    // Without token configuration (loopback only, see serve.ts) everything is open.
    if (access === "public" || policy.tokens.length === 0) return await next();
    const role = await presentedRole(policy, c.req.header("authorization"));
    const challenge = { "www-authenticate": 'Bearer realm="cairn"' };
    if (role === "invalid") {
      return problemResponse(c, "UNAUTHORIZED", "the bearer token is not valid", {
        "www-authenticate": 'Bearer realm="cairn", error="invalid_token"',
      });
    }
    if (isOpen(policy, access)) return await next();
    if (role === null) {
      return problemResponse(c, "UNAUTHORIZED", `this route needs a bearer token`, challenge);
    }
    if (access === "admin" && role !== "admin") {
      return problemResponse(c, "FORBIDDEN", "this route needs a token of role admin", {
        "www-authenticate": 'Bearer realm="cairn", error="insufficient_scope"',
      });
    }
    return await next();
  };
}

/** Loopback addresses: the only ones served without token configuration. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
