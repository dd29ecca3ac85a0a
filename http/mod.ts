/** The HTTP admin API: the Hono app, access control, and serving it next to a node. */
export { buildHttpApi, type HttpApiDeps, maxRequestBodyBytes, openApiDocument } from "./app.ts";
export {
  type AccessPolicy,
  defaultOpenGroups,
  parseOpenGroups,
  parseTokens,
  type Role,
  TokenConfigError,
} from "./auth.ts";
export {
  type HttpNode,
  type HttpPlan,
  type HttpServer,
  type HttpSettings,
  listen,
  loadAccessPolicy,
  parseListen,
  planHttp,
  startNodeHttp,
} from "./serve.ts";
export { apiPrefix, routes } from "./routes.ts";
export { maxKeptOperations, maxRunningOperations } from "./operations.ts";
