/**
 * `/docs`: Swagger UI for `/openapi.json`, with its script and stylesheet served from
 * the `swagger-ui-dist` npm package on this node: the page loads nothing from the internet
 * (the default of @hono/swagger-ui is a CDN; the spec validator badge is turned off too).
 */
import { swaggerUI } from "@hono/swagger-ui";
import type { OpenAPIHono } from "@hono/zod-openapi";
import getAbsoluteFSPath from "swagger-ui-dist/absolute-path.js";

export const docsPath = "/docs";
const assetsBase = `${docsPath}/assets`;
/** The only files the page needs, and their types. */
const assets: Record<string, string> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
};

export function addDocs(app: OpenAPIHono, openApiPath: string): void {
  const cache = new Map<string, Uint8Array>();
  app.get(
    docsPath,
    swaggerUI({
      url: openApiPath,
      title: "Cairn HTTP API",
      // @hono/swagger-ui puts `${baseUrl}/swagger-ui-dist/<file>` in the page.
      baseUrl: assetsBase,
      validatorUrl: "none",
      persistAuthorization: false,
    }),
  );
  app.get(`${assetsBase}/swagger-ui-dist/:file`, async (c) => {
    const file = c.req.param("file");
    const type = assets[file];
    if (!type) return c.notFound();
    let bytes = cache.get(file);
    if (!bytes) {
      bytes = await Deno.readFile(`${getAbsoluteFSPath()}/${file}`);
      cache.set(file, bytes);
    }
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, {
      "content-type": type,
      "cache-control": "public, max-age=86400",
    });
  });
}
