/**
 * The HTTP admin API as a Hono app: thin adapters from routes (routes.ts) to the control
 * service (protocol/control_api.ts), which any node answers for the whole cluster. Errors
 * are problem details (problems.ts); access is checked before a body is read (auth.ts).
 */
import { OpenAPIHono } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import type { ControlApi } from "../protocol/control_api.ts";
import { CairnError } from "../protocol/errors.ts";
import { describeZodError, type Readiness } from "../protocol/schemas.ts";
import { type AccessPolicy, requireAccess } from "./auth.ts";
import { addDashboard } from "./dashboard.ts";
import { addDocs, docsPath } from "./docs.ts";
import { LiveHub, type LiveMessage, type StatsFeed } from "./live.ts";
import { OperationStore } from "./operations.ts";
import { codeForStatus, ProblemError, problemForError, problemResponse } from "./problems.ts";
import { apiPrefix, metricsRoute, routes } from "./routes.ts";

/** Largest request body: control bodies are a few hundred bytes. */
export const maxRequestBodyBytes = 64 * 1024;

export const openApiPath = "/openapi.json";

export interface HttpApiDeps {
  /** The control service: in-process on a node, or a client over NATS (tests). */
  control: ControlApi;
  /** For `/readyz`. */
  readiness(): Promise<Readiness>;
  access: AccessPolicy;
  /** The node answering, for `/healthz`. */
  nodeId: string;
  /** Prometheus text for `/metrics`; without it there is no such route. */
  metrics?: () => string | Promise<string>;
  /** Where unexpected errors are logged. */
  logError?: (message: string) => void;
  /**
   * The live hub behind `/api/v1/events` (a listener closes it when it stops, ending the
   * streams); without one the app makes its own over `control` and `stats`.
   */
  live?: LiveHub;
  /** Every node's IO stats (`cairn.v1.stats.*`) for the live hub the app makes. */
  stats?: StatsFeed;
}

/** Comment lines that keep an idle event stream open through proxies. */
const keepAliveMs = 15_000;
/** A stream whose client reads slower than this many messages behind is closed. */
const maxQueuedMessages = 200;

/** 415 unless the body is JSON (before the validator, which would skip a non-JSON body). */
const requireJson: MiddlewareHandler = async (c, next) => {
  const type = c.req.header("content-type")?.split(";")[0].trim().toLowerCase() ?? "";
  if (type !== "application/json") {
    return problemResponse(
      c,
      "UNSUPPORTED_MEDIA_TYPE",
      `the body must be application/json, not ${type || "missing"}`,
    );
  }
  await next();
};

/** Methods some route allows at this path (for 405 and its Allow header). */
function allowedMethods(app: OpenAPIHono, path: string): string[] {
  const methods = new Set<string>();
  for (const r of app.routes) {
    if (r.method === "ALL") continue;
    const pattern = new RegExp(
      "^" + r.path.replace(/:[A-Za-z_]+(\{[^}]*\})?/g, "[^/]+").replace(/\*/g, ".*") + "$",
    );
    if (pattern.test(path)) methods.add(r.method);
  }
  if (methods.has("GET")) methods.add("HEAD");
  return [...methods].sort();
}

export function buildHttpApi(deps: HttpApiDeps): OpenAPIHono {
  const live = deps.live ??
    new LiveHub(deps.control, deps.nodeId, deps.stats, { logError: deps.logError });
  const operations = new OperationStore(undefined, (op) => live.operation(op));
  const app = new OpenAPIHono({
    // A parameter or body that fails its schema: the same wording as the NATS replies.
    defaultHook: (result, c) => {
      if (!result.success) {
        return problemResponse(c as Context, "BAD_REQUEST", describeZodError(result.error));
      }
    },
  });

  app.use(
    "*",
    bodyLimit({
      maxSize: maxRequestBodyBytes,
      onError: (c) =>
        problemResponse(
          c,
          "PAYLOAD_TOO_LARGE",
          `request bodies are at most ${maxRequestBodyBytes} bytes`,
        ),
    }),
  );

  app.onError((err, c) => {
    if (err instanceof CairnError) return problemForError(c, err);
    if (err instanceof ProblemError) return problemResponse(c, err.code, err.detail);
    if (err instanceof HTTPException) {
      return problemResponse(c, codeForStatus(err.status), err.message);
    }
    deps.logError?.(`HTTP ${c.req.method} ${c.req.path}: ${(err as Error)?.stack ?? err}`);
    return problemResponse(c, "INTERNAL", (err as Error)?.message ?? String(err));
  });

  app.notFound((c) => {
    const allowed = allowedMethods(app, c.req.path);
    // A route of this method matched and found nothing (an asset that is not there): 404.
    if (allowed.length > 0 && !allowed.includes(c.req.method)) {
      return problemResponse(
        c,
        "METHOD_NOT_ALLOWED",
        `${c.req.method} is not allowed on ${c.req.path}; allowed: ${allowed.join(", ")}`,
        { allow: allowed.join(", ") },
      );
    }
    return problemResponse(c, "NOT_FOUND", `no route ${c.req.path}`);
  });

  const guard = (r: { access: Parameters<typeof requireAccess>[1] }, json = false) => [
    requireAccess(deps.access, r.access),
    ...(json ? [requireJson] : []),
  ];
  const { control } = deps;

  app.openapi(
    { ...routes.clusterStatus.route, middleware: guard(routes.clusterStatus) },
    async (c) => c.json(await control.call("cluster.status", {}), 200),
  );
  app.openapi(
    { ...routes.listNodes.route, middleware: guard(routes.listNodes) },
    async (c) => c.json(await control.call("node.list", {}), 200),
  );
  app.openapi(
    { ...routes.drainNode.route, middleware: guard(routes.drainNode) },
    async (c) => c.json(await control.call("node.drain", c.req.valid("param")), 200),
  );
  app.openapi(
    { ...routes.undrainNode.route, middleware: guard(routes.undrainNode) },
    async (c) => c.json(await control.call("node.undrain", c.req.valid("param")), 200),
  );
  app.openapi(
    { ...routes.okToStop.route, middleware: guard(routes.okToStop) },
    async (c) => c.json(await control.call("node.ok-to-stop", c.req.valid("param")), 200),
  );
  app.openapi(
    { ...routes.listVolumes.route, middleware: guard(routes.listVolumes) },
    async (c) => c.json(await control.call("volume.list", {}), 200),
  );
  app.openapi(
    { ...routes.createVolume.route, middleware: guard(routes.createVolume, true) },
    async (c) => {
      const info = await control.call("volume.create", c.req.valid("json"));
      return c.json(info, 201, { location: `${apiPrefix}/volumes/${info.name}` });
    },
  );
  app.openapi(
    { ...routes.volumeInfo.route, middleware: guard(routes.volumeInfo) },
    async (c) => c.json(await control.call("volume.info", c.req.valid("param")), 200),
  );
  app.openapi(
    { ...routes.deleteVolume.route, middleware: guard(routes.deleteVolume) },
    async (c) => c.json(await control.call("volume.delete", c.req.valid("param")), 200),
  );
  app.openapi(
    { ...routes.moveVolume.route, middleware: guard(routes.moveVolume, true) },
    async (c) => {
      const request = { ...c.req.valid("param"), ...c.req.valid("json") };
      return c.json(await control.call("volume.move", request), 200);
    },
  );
  app.openapi(
    { ...routes.verifyVolume.route, middleware: guard(routes.verifyVolume) },
    async (c) => {
      const { name } = c.req.valid("param");
      // An unknown name is a 404 now, not an operation that fails later.
      const info = await control.call("volume.info", { name });
      const op = operations.startVerify(
        name,
        info.segments.length,
        (onProgress) => control.verifyVolume(name, onProgress),
      );
      return c.json(op, 202, { location: `${apiPrefix}/operations/${op.id}` });
    },
  );
  app.openapi(
    { ...routes.getOperation.route, middleware: guard(routes.getOperation) },
    (c) => {
      const { id } = c.req.valid("param");
      const op = operations.get(id);
      if (!op) {
        throw new ProblemError(
          "NOT_FOUND",
          `no operation ${id} on this node (operations live on the node that started them)`,
        );
      }
      return c.json(op, 200);
    },
  );
  app.openapi(
    { ...routes.health.route, middleware: guard(routes.health) },
    (c) => c.json({ status: "ok" as const, node: deps.nodeId }, 200),
  );
  app.openapi(
    { ...routes.ready.route, middleware: guard(routes.ready) },
    async (c) => {
      const readiness = await deps.readiness();
      return c.json(readiness, readiness.ready ? 200 : 503);
    },
  );
  app.openapi(
    { ...routes.events.route, middleware: guard(routes.events) },
    (c) =>
      streamSSE(c, async (stream) => {
        let queued = 0;
        let chain = stream.writeSSE({
          event: "hello",
          data: JSON.stringify({ node: deps.nodeId }),
          retry: 2000,
        });
        const write = (message: LiveMessage) => {
          if (stream.aborted || stream.closed) return;
          if (++queued > maxQueuedMessages) return void stream.abort();
          const id = message.event === "event" ? String(message.data.id) : undefined;
          chain = chain.then(() =>
            stream.writeSSE({ event: message.event, data: JSON.stringify(message.data), id })
          ).then(() => void queued--, () => stream.abort());
        };
        const done = Promise.withResolvers<void>();
        const unsubscribe = live.subscribe({ send: write, close: () => done.resolve() });
        stream.onAbort(() => done.resolve());
        const keepAlive = setInterval(() => {
          chain = chain.then(() => stream.write(": keep-alive\n\n")).then(
            () => {},
            () => stream.abort(),
          );
        }, keepAliveMs);
        await done.promise;
        clearInterval(keepAlive);
        unsubscribe();
        await chain.catch(() => {});
      }) as never,
  );
  // The stream's messages are no route's body: their schemas are added as components
  // (they refer to NodeInfo and VolumeInfo, which the routes' bodies add).
  const messageSchemas = z.toJSONSchema(z.globalRegistry, {
    target: "draft-2020-12",
    uri: (id) => `#/components/schemas/${id}`,
  }).schemas;
  for (const id of ["DashboardSnapshot", "NodeStats", "VolumeIoStats", "DashboardEvent"]) {
    const { $schema: _, $id: __, id: ___, ...schema } = messageSchemas[id] as Record<
      string,
      unknown
    >;
    app.openAPIRegistry.registerComponent("schemas", id, schema as never);
  }
  const metrics = deps.metrics;
  if (metrics) {
    app.openapi(
      { ...metricsRoute.route, middleware: guard(metricsRoute) },
      async (c) => c.text(await metrics(), 200, { "content-type": "text/plain; version=0.0.4" }),
    );
  }

  app.openAPIRegistry.registerComponent("securitySchemes", "bearerAuth", {
    type: "http",
    scheme: "bearer",
    description: "A token of role read or admin (see docs/HTTP_API.md)",
  });
  let document: unknown;
  app.get(openApiPath, (c) => {
    document ??= openApiDocument(app);
    return c.json(document);
  });
  addDocs(app, openApiPath);
  addDashboard(app);
  return app;
}

/** The OpenAPI 3.1 document of an app built by buildHttpApi. */
export function openApiDocument(app: OpenAPIHono) {
  return app.getOpenAPI31Document({
    openapi: "3.1.0",
    info: {
      title: "Cairn HTTP admin API",
      version: "1",
      description: "Volumes, nodes and cluster state of a Cairn cluster; any node answers " +
        `for the whole cluster. Errors are RFC 9457 problem details. Interactive docs: ${docsPath}.`,
    },
  });
}
