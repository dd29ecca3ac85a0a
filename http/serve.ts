/**
 * Serving the HTTP API next to a node (`deno task serve --http HOST:PORT`): the listen
 * address, the access policy from the token settings, and the listener.
 */
import * as fs from "node:fs";
import type { ControlApi } from "../protocol/control_api.ts";
import type { Readiness } from "../protocol/schemas.ts";
import { buildHttpApi, type HttpApiDeps } from "./app.ts";
import { LiveHub, type StatsFeed } from "./live.ts";
import {
  type AccessPolicy,
  defaultOpenGroups,
  isLoopbackHost,
  parseOpenGroups,
  parseTokens,
  TokenConfigError,
} from "./auth.ts";

export interface HttpSettings {
  /** `HOST:PORT` (`[::1]:PORT` for IPv6); port 0 picks a free one. */
  listen: string;
  /** `--http-tokens FILE`: `role:token` lines. */
  tokensFile?: string;
  /** `CAIRN_HTTP_TOKENS`: `role:token` entries separated by commas, spaces or newlines. */
  tokensEnv?: string;
  /** `--http-open`: groups open without a token, e.g. `probes`, `probes,reads`, `none`. */
  open?: string;
}

export function parseListen(text: string): { hostname: string; port: number } {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:\s[\]]+):(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535) {
    throw new TokenConfigError(`--http takes HOST:PORT (e.g. 127.0.0.1:8420), not "${text}"`);
  }
  return { hostname: match[1].replace(/^\[|\]$/g, ""), port };
}

/**
 * The access policy from the settings. Without any token the API is open to everyone,
 * which is only allowed on a loopback address (a dev cluster); elsewhere it refuses.
 */
export async function loadAccessPolicy(
  settings: HttpSettings,
  hostname: string,
): Promise<AccessPolicy> {
  const tokens = [];
  if (settings.tokensFile !== undefined) {
    let text: string;
    try {
      text = fs.readFileSync(settings.tokensFile, "utf8");
    } catch (err) {
      throw new TokenConfigError(
        `--http-tokens ${settings.tokensFile}: ${(err as Error).message}`,
      );
    }
    tokens.push(...await parseTokens(text, settings.tokensFile));
  }
  if (settings.tokensEnv !== undefined) {
    tokens.push(...await parseTokens(settings.tokensEnv, "CAIRN_HTTP_TOKENS"));
  }
  if ((settings.tokensFile !== undefined || settings.tokensEnv !== undefined) && !tokens.length) {
    throw new TokenConfigError("the token settings name no token");
  }
  if (tokens.length === 0 && !isLoopbackHost(hostname)) {
    throw new TokenConfigError(
      `--http ${hostname} is not a loopback address: give tokens (--http-tokens FILE or ` +
        `CAIRN_HTTP_TOKENS); without them the API is served on loopback only`,
    );
  }
  const open = settings.open !== undefined
    ? parseOpenGroups(settings.open)
    : new Set(defaultOpenGroups);
  return { tokens, open };
}

export interface HttpServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serves an app's fetch on hostname:port until close(). */
export function listen(
  fetch: (request: Request) => Response | Promise<Response>,
  hostname: string,
  port: number,
): Promise<HttpServer> {
  return new Promise((resolve, reject) => {
    try {
      const server = Deno.serve({
        hostname,
        port,
        onListen: (addr) => {
          const host = hostname.includes(":") ? `[${hostname}]` : hostname;
          resolve({
            url: `http://${host}:${addr.port}`,
            port: addr.port,
            close: () => server.shutdown(),
          });
        },
      }, fetch);
    } catch (err) {
      reject(err);
    }
  });
}

/** What a node gives the HTTP API. */
export interface HttpNode {
  id: string;
  control: ControlApi;
  readiness(): Promise<Readiness>;
  metrics?: HttpApiDeps["metrics"];
  /** Every node's IO stats, for the dashboard's live stream. */
  stats?: StatsFeed;
}

/** Where and for whom to serve: read and checked before the node starts. */
export interface HttpPlan {
  hostname: string;
  port: number;
  access: AccessPolicy;
}

/** Checks the settings (listen address, tokens): a bad one fails before anything starts. */
export async function planHttp(settings: HttpSettings): Promise<HttpPlan> {
  const { hostname, port } = parseListen(settings.listen);
  return { hostname, port, access: await loadAccessPolicy(settings, hostname) };
}

/** The HTTP API of one node: any node answers for the whole cluster. */
export async function startNodeHttp(
  node: HttpNode,
  plan: HttpPlan,
  logError: (message: string) => void,
): Promise<HttpServer> {
  const live = new LiveHub(node.control, node.id, node.stats, { logError });
  const app = buildHttpApi({
    control: node.control,
    readiness: () => node.readiness(),
    access: plan.access,
    nodeId: node.id,
    metrics: node.metrics,
    logError,
    live,
  });
  const server = await listen(app.fetch, plan.hostname, plan.port);
  return {
    ...server,
    // Event streams never end by themselves: end them, or shutdown would wait for them.
    close: () => {
      live.close();
      return server.close();
    },
  };
}
