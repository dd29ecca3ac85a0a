/**
 * The live dashboard at `/`: static files (HTML, CSS, plain ES modules; no build step) from
 * http/dashboard/, and uPlot's script and stylesheet from the `uplot` npm package on this
 * node, so the page loads nothing from the internet. The page holds no data: it reads the
 * API (`/api/v1/events` and the other routes) with the token the operator gives it.
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import { createRequire } from "node:module";
// Makes the package part of the module graph, so installing the app caches it.
import "uplot/package.json" with { type: "json" };

export const dashboardPath = "/";
export const dashboardAssetsPath = "/dashboard/assets";

const types: Record<string, string> = {
  html: "text/html; charset=utf-8",
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  svg: "image/svg+xml",
};

/** Files of the page: ours (reloaded when changed) and uPlot's (cached a day). */
const ownFiles = ["app.js", "charts.js", "view.js", "style.css", "favicon.svg"];
const uplotFiles: Record<string, string> = {
  "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
  "uPlot.min.css": "uplot/dist/uPlot.min.css",
};

/** Scripts and styles from this node only; the stream and API calls to this node only. */
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; " +
  "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const typeOf = (file: string) => types[file.slice(file.lastIndexOf(".") + 1)];

export function addDashboard(app: OpenAPIHono): void {
  const cache = new Map<string, Uint8Array>();
  const require = createRequire(import.meta.url);
  const read = async (file: string): Promise<Uint8Array> => {
    let bytes = cache.get(file);
    if (!bytes) {
      const path = uplotFiles[file]
        ? require.resolve(uplotFiles[file])
        : new URL(`./dashboard/${file}`, import.meta.url);
      bytes = await Deno.readFile(path);
      cache.set(file, bytes);
    }
    return bytes;
  };
  app.get(
    dashboardPath,
    async (c) =>
      c.body(await read("index.html") as Uint8Array<ArrayBuffer>, 200, {
        "content-type": types.html,
        "cache-control": "no-cache",
        "content-security-policy": contentSecurityPolicy,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
      }),
  );
  app.get(`${dashboardAssetsPath}/:file`, async (c) => {
    const file = c.req.param("file");
    if (!ownFiles.includes(file) && !uplotFiles[file]) return c.notFound();
    return c.body(await read(file) as Uint8Array<ArrayBuffer>, 200, {
      "content-type": typeOf(file),
      "cache-control": uplotFiles[file] ? "public, max-age=86400" : "no-cache",
      "x-content-type-options": "nosniff",
    });
  });
}
