/**
 * `/metrics` over HTTP: a plain fetch-style handler (the HTTP admin API can mount the
 * same one), and a tiny Deno.serve server for `deno task serve --metrics HOST:PORT`.
 */
import * as fs from "node:fs";

export type MetricsHandler = (req: Request) => Promise<Response>;

/** What the handler needs: the exposition text and its content type. */
export interface MetricsSource {
  render(): Promise<string>;
  readonly contentType: string;
}

/** Answers GET (and HEAD) with the metrics, whatever the path: the caller routes. */
export function metricsHandler(source: MetricsSource): MetricsHandler {
  return async (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    try {
      const body = await source.render();
      return new Response(req.method === "HEAD" ? null : body, {
        headers: { "content-type": source.contentType },
      });
    } catch (err) {
      return new Response(`metrics: ${(err as Error).message}\n`, { status: 500 });
    }
  };
}

export interface MetricsServer {
  /** The bound address, HOST:PORT (the real port when 0 was asked for). */
  readonly address: string;
  close(): Promise<void>;
}

/** `HOST:PORT` -> its parts; the port may be 0 (the OS picks one). */
export function parseMetricsListen(text: string): { hostname: string; port: number } {
  const match = /^(.+):(\d+)$/.exec(text.trim());
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535) throw new Error(`--metrics takes HOST:PORT, not "${text}"`);
  return { hostname: match[1].replace(/^\[(.*)\]$/, "$1"), port };
}

/**
 * Serves `/metrics` (anything else is 404) on `listen`. With `addressFile`, the bound
 * address is written there (aside and renamed, so a reader never sees half of it).
 */
export function serveMetrics(
  listen: string,
  handler: MetricsHandler,
  options: { addressFile?: string } = {},
): MetricsServer {
  const { hostname, port } = parseMetricsListen(listen);
  const server = Deno.serve({ hostname, port, onListen: () => {} }, (req) => {
    if (new URL(req.url).pathname !== "/metrics") {
      return new Response("not found: try /metrics\n", { status: 404 });
    }
    return handler(req);
  });
  const address = `${hostname}:${server.addr.port}`;
  if (options.addressFile) {
    const partial = `${options.addressFile}.partial`;
    fs.writeFileSync(partial, address + "\n");
    fs.renameSync(partial, options.addressFile);
  }
  return { address, close: () => server.shutdown() };
}
