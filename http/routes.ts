/**
 * The HTTP API's routes as OpenAPI definitions: paths, parameters, bodies and responses,
 * all from the protocol's zod schemas (nothing is defined here a second time), and who
 * may call each (`access`, see auth.ts).
 */
import { createRoute, type RouteConfig } from "@hono/zod-openapi";
import { z } from "zod";
import {
  healthSchema,
  moveVolumeRequestSchema,
  nodeIdRequestSchema,
  operationIdSchema,
  operationSchema,
  problemSchema,
  readinessSchema,
  volumeNameRequestSchema,
} from "../protocol/schemas.ts";
import { controlApi } from "../protocol/control_api.ts";
import type { Access } from "./auth.ts";
import { problemContentType, problemStatus } from "./problems.ts";

export const apiPrefix = "/api/v1";

const json = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { "application/json": { schema } },
  description,
});

const problemDescriptions: Record<number, string> = {
  400: "Invalid parameters or body (BAD_REQUEST)",
  401: "No bearer token, or one that matches none (UNAUTHORIZED)",
  403: "The token's role does not allow this route (FORBIDDEN)",
  404: "No such volume, node or operation",
  409: "The name is taken (EXISTS), or the cluster cannot place the volume (NOT_ENOUGH_NODES)",
  413: "Body larger than the limit (PAYLOAD_TOO_LARGE)",
  415: "Body not application/json (UNSUPPORTED_MEDIA_TYPE)",
  500: "Internal error",
  503: "Unavailable, moving or busy: retry after Retry-After seconds",
};

/** Problem responses of the given statuses (401 and 403 come with every guarded route). */
function problems(...statuses: number[]) {
  return Object.fromEntries(
    [...new Set([...statuses, 500])].sort().map((status) => [status, {
      content: { [problemContentType]: { schema: problemSchema } },
      description: problemDescriptions[status],
    }]),
  );
}

const guarded = [401, 403];
const bearer = [{ bearerAuth: [] }];
const moveBodySchema = moveVolumeRequestSchema.omit({ name: true });

interface ApiRoute<R extends RouteConfig> {
  route: R;
  access: Access;
}

const route = <R extends RouteConfig>(access: Access, config: R): ApiRoute<R> => ({
  access,
  route: createRoute({
    ...config,
    ...(access === "read" || access === "admin" ? { security: bearer } : {}),
  }),
});

export const routes = {
  clusterStatus: route("read", {
    method: "get",
    path: `${apiPrefix}/cluster`,
    tags: ["cluster"],
    summary: "Cluster status: nodes, down nodes, degraded volumes",
    responses: {
      200: json(controlApi["cluster.status"].result, "Cluster status"),
      ...problems(...guarded, 503),
    },
  }),
  listNodes: route("read", {
    method: "get",
    path: `${apiPrefix}/nodes`,
    tags: ["nodes"],
    summary: "Every node the metadata knows, with its liveness",
    responses: {
      200: json(controlApi["node.list"].result, "Nodes"),
      ...problems(...guarded, 503),
    },
  }),
  drainNode: route("admin", {
    method: "post",
    path: `${apiPrefix}/nodes/{node}/drain`,
    tags: ["nodes"],
    summary: "Drain a node: no new volumes or replicas there; hand off the volumes it owns",
    description: "The node stays drained across restarts until undrained. Its replicas stay " +
      "and are kept in sync. Volumes that cannot move now are listed under `blocked`; drain " +
      "again once they can. The answer says whether the node is then ok to stop.",
    request: { params: nodeIdRequestSchema },
    responses: {
      200: json(controlApi["node.drain"].result, "Drained"),
      ...problems(400, ...guarded, 404, 503),
    },
  }),
  undrainNode: route("admin", {
    method: "post",
    path: `${apiPrefix}/nodes/{node}/undrain`,
    tags: ["nodes"],
    summary: "Undrain a node: it takes new volumes and replicas again",
    request: { params: nodeIdRequestSchema },
    responses: {
      200: json(controlApi["node.undrain"].result, "Undrained"),
      ...problems(400, ...guarded, 404, 503),
    },
  }),
  okToStop: route("read", {
    method: "get",
    path: `${apiPrefix}/nodes/{node}/ok-to-stop`,
    tags: ["nodes"],
    summary: "Whether stopping the node now keeps every volume serving, and if not why",
    request: { params: nodeIdRequestSchema },
    responses: {
      200: json(controlApi["node.ok-to-stop"].result, "The answer (okToStop false lists risks)"),
      ...problems(400, ...guarded, 404, 503),
    },
  }),
  listVolumes: route("read", {
    method: "get",
    path: `${apiPrefix}/volumes`,
    tags: ["volumes"],
    summary: "Every volume",
    responses: {
      200: json(controlApi["volume.list"].result, "Volumes"),
      ...problems(...guarded, 503),
    },
  }),
  createVolume: route("admin", {
    method: "post",
    path: `${apiPrefix}/volumes`,
    tags: ["volumes"],
    summary: "Create a volume",
    request: {
      body: { ...json(controlApi["volume.create"].request, "The new volume"), required: true },
    },
    responses: {
      201: json(controlApi["volume.create"].result, "Created"),
      ...problems(400, ...guarded, 409, 413, 415, 503),
    },
  }),
  volumeInfo: route("read", {
    method: "get",
    path: `${apiPrefix}/volumes/{name}`,
    tags: ["volumes"],
    summary: "One volume: spec, layout, health, copies under way",
    request: { params: volumeNameRequestSchema },
    responses: {
      200: json(controlApi["volume.info"].result, "The volume"),
      ...problems(400, ...guarded, 404, 503),
    },
  }),
  deleteVolume: route("admin", {
    method: "delete",
    path: `${apiPrefix}/volumes/{name}`,
    tags: ["volumes"],
    summary: "Delete a volume (metadata first, then every node's segment files)",
    request: { params: volumeNameRequestSchema },
    responses: {
      200: json(controlApi["volume.delete"].result, "Deleted"),
      ...problems(400, ...guarded, 404, 503),
    },
  }),
  moveVolume: route("admin", {
    method: "post",
    path: `${apiPrefix}/volumes/{name}/move`,
    tags: ["volumes"],
    summary: "Planned handoff of ownership to a node with every segment in sync",
    request: {
      params: volumeNameRequestSchema,
      body: { ...json(moveBodySchema, "The node to move to"), required: true },
    },
    responses: {
      200: json(controlApi["volume.move"].result, "Moved"),
      ...problems(400, ...guarded, 404, 413, 415, 503),
    },
  }),
  verifyVolume: route("read", {
    method: "post",
    path: `${apiPrefix}/volumes/{name}/verify`,
    tags: ["volumes", "operations"],
    summary: "Start a verify (read-only scrub and compare of every in-sync replica)",
    description: "Returns an operation to poll at its Location. It changes nothing in the " +
      "cluster, so the read role may start it.",
    request: { params: volumeNameRequestSchema },
    responses: {
      202: json(operationSchema, "Started"),
      ...problems(400, ...guarded, 404, 503),
    },
  }),
  getOperation: route("read", {
    method: "get",
    path: `${apiPrefix}/operations/{id}`,
    tags: ["operations"],
    summary: "A long operation's state, progress and result",
    request: { params: operationIdSchema },
    responses: {
      200: json(operationSchema, "The operation"),
      ...problems(400, ...guarded, 404),
    },
  }),
  events: route("read", {
    method: "get",
    path: `${apiPrefix}/events`,
    tags: ["cluster"],
    summary: "Live updates as server-sent events: snapshots, IO stats and cluster events",
    description: "A `text/event-stream` that stays open. Events: `snapshot` (DashboardSnapshot: " +
      "at connect, then whenever nodes or volumes change, at most once a second), `stats` " +
      "(NodeStats: each node's IO per volume, once a second) and `event` (DashboardEvent: " +
      "a handoff, takeover, stale mark, copy, node state change, an operation's start and end; " +
      "the last 100 at connect) and `operation` (Operation: a long operation of the answering " +
      "node, such as a verify, at every progress step; running and recent ones at connect). " +
      "Send the token in the Authorization header (the dashboard reads the stream with fetch).",
    responses: {
      200: {
        content: { "text/event-stream": { schema: z.string() } },
        description: "The stream (each data line is one JSON object of the event's schema)",
      },
      ...problems(...guarded),
    },
  }),
  health: route("probe", {
    method: "get",
    path: "/healthz",
    tags: ["probes"],
    summary: "The process is alive",
    responses: { 200: json(healthSchema, "Alive"), ...problems(...guarded) },
  }),
  ready: route("probe", {
    method: "get",
    path: "/readyz",
    tags: ["probes"],
    summary: "Connected to NATS and serving every volume this node owns",
    responses: {
      200: json(readinessSchema, "Ready"),
      503: json(readinessSchema, "Not ready (the body says why)"),
      ...problems(...guarded),
    },
  }),
} as const;

/** Prometheus text; a route only when the node has metrics to give. */
export const metricsRoute = route("probe", {
  method: "get",
  path: "/metrics",
  tags: ["probes"],
  summary: "Metrics in the Prometheus text format",
  responses: {
    200: { content: { "text/plain": { schema: z.string() } }, description: "Metrics" },
    ...problems(...guarded),
  },
});

/** Every status a problem can have, for the tests. */
export const problemStatuses = new Set(Object.values(problemStatus));
