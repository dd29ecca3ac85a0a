/**
 * The HTTP layer on a stub control service: problem bodies and statuses, validation,
 * 404/405/413/415, access control (nothing reaches the service without the right), the
 * OpenAPI document (valid 3.1, same paths as the app), operations and the docs page.
 * tests/integration/http_api_test.ts runs the same app against a real cluster.
 */
import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import type { OpenAPIHono } from "@hono/zod-openapi";
import {
  type AccessPolicy,
  buildHttpApi,
  loadAccessPolicy,
  maxRequestBodyBytes,
  maxRunningOperations,
  openApiDocument,
  parseListen,
  parseOpenGroups,
  parseTokens,
  TokenConfigError,
} from "../../http/mod.ts";
import { problemStatus } from "../../http/problems.ts";
import type { ControlApi, ControlRequest, ControlResult } from "../../protocol/control_api.ts";
import type { ControlOp } from "../../protocol/subjects.ts";
import { CairnError, type ErrorCodeName } from "../../protocol/errors.ts";
import {
  drainResultSchema,
  nodeInfoSchema,
  okToStopSchema,
  operationSchema,
  problemSchema,
  type VerifyProgress,
  type VolumeInfo,
  volumeInfoSchema,
} from "../../protocol/schemas.ts";

const adminToken = "admin-token-0123456789abcdef";
const readToken = "read-token-0123456789abcdef";

function sampleVolume(name: string): VolumeInfo {
  return {
    name,
    id: "0123456789abcdef",
    incarnation: 0x01234567,
    sizeBytes: 1 << 20,
    blockSize: 4096,
    segmentBytes: 1 << 20,
    replicas: 1,
    minInSync: 1,
    readPolicy: "local",
    createdAt: "2026-01-01T00:00:00.000Z",
    term: 1,
    layoutRevision: 3,
    owner: "n1",
    home: "n1",
    segments: [{ index: 0, replicas: [{ node: "n1", state: "in-sync" }] }],
    downNodes: [],
    copies: [],
  };
}

/** Records every call; `missing` is an unknown volume; `fail-<CODE>` throws that code. */
class StubControl implements ControlApi {
  calls: { op: string; request: unknown }[] = [];
  verifyGate: Promise<void> = Promise.resolve();

  ops(): string[] {
    return this.calls.map((c) => c.op);
  }

  call<O extends ControlOp>(op: O, request: ControlRequest<O>): Promise<ControlResult<O>> {
    this.calls.push({ op, request });
    const name = (request as { name?: string }).name ?? "";
    const node = (request as { node?: string }).node ?? "";
    if (node === "missing") {
      return Promise.reject(new CairnError("NO_SUCH_NODE", `no node named ${node}`));
    }
    if (name === "missing") {
      return Promise.reject(new CairnError("NO_SUCH_VOLUME", `no volume named ${name}`));
    }
    if (name.startsWith("fail-")) {
      const code = name.slice(5).toUpperCase().replaceAll("-", "_") as ErrorCodeName;
      return Promise.reject(new CairnError(code, `stub failure ${code}`));
    }
    const results: { [K in ControlOp]: () => unknown } = {
      "volume.create": () => sampleVolume(name),
      "volume.list": () => [sampleVolume("a"), sampleVolume("b")],
      "volume.info": () => sampleVolume(name),
      "volume.delete": () => ({ deleted: name }),
      "volume.move": () => ({ ...sampleVolume(name), owner: (request as { to: string }).to }),
      "node.list": () => [],
      "node.drain": () => ({
        node,
        drained: true,
        moved: [{ volume: "a", to: "n2" }],
        blocked: [],
        okToStop: { node, okToStop: true, risks: [] },
      }),
      "node.undrain": () => ({
        id: node,
        zone: "z1",
        capacityBytes: 1 << 30,
        state: "up",
        startedAt: "2026-01-01T00:00:00.000Z",
        pid: 1,
        version: "0",
        live: true,
        drained: false,
        lastHeartbeatAgoMs: 10,
      }),
      "node.ok-to-stop": () => ({
        node,
        okToStop: false,
        risks: [{ volume: "a", kind: "owner", detail: `${node} owns a` }],
      }),
      "cluster.status": () => ({
        version: "0",
        answeredBy: "n1",
        nodes: { total: 1, live: 1, down: [] },
        volumes: { total: 0, degraded: [], unowned: [] },
      }),
    };
    return Promise.resolve(results[op]() as ControlResult<O>);
  }

  async verifyVolume(name: string, onProgress?: (p: VerifyProgress) => void) {
    this.calls.push({ op: "verify", request: { name } });
    onProgress?.({ segmentsDone: 0, segmentsTotal: 1 });
    await this.verifyGate;
    onProgress?.({ segmentsDone: 1, segmentsTotal: 1 });
    return { volume: name, segments: 1, replicasChecked: 1, mismatches: [], ok: true };
  }
}

async function policyWithTokens(open = "probes"): Promise<AccessPolicy> {
  return {
    tokens: await parseTokens(`# test tokens\nadmin:${adminToken}\nread:${readToken}\n`, "t"),
    open: parseOpenGroups(open),
  };
}

function makeApp(access: AccessPolicy = { tokens: [], open: new Set() }) {
  const control = new StubControl();
  const app = buildHttpApi({
    control,
    readiness: () =>
      Promise.resolve({
        ready: true,
        node: "n1",
        natsConnected: true,
        volumesOwned: 0,
        notServing: [],
        detail: "ok",
      }),
    access,
    nodeId: "n1",
    metrics: () => "cairn_up 1\n",
  });
  return { app, control };
}

function send(
  app: OpenAPIHono,
  method: string,
  path: string,
  options: { json?: unknown; body?: string; token?: string; type?: string } = {},
) {
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let body: string | undefined = options.body;
  if (options.json !== undefined) body = JSON.stringify(options.json);
  if (body !== undefined) headers["content-type"] = options.type ?? "application/json";
  return app.request(path, { method, headers, body });
}

async function expectProblem(res: Response, status: number, code: string): Promise<string> {
  assert.equal(res.status, status, `status of ${code}`);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  const body = problemSchema.parse(await res.json());
  assert.equal(body.status, status);
  assert.equal(body.code, code);
  assert.equal(body.type, `urn:cairn:problem:${code}`);
  assert.ok(body.detail.length > 0);
  return body.detail;
}

Deno.test("http: every route answers with its status and a body of its schema", async () => {
  const { app, control } = makeApp();
  let res = await send(app, "GET", "/api/v1/volumes");
  assert.equal(res.status, 200);
  assert.equal(volumeInfoSchema.array().parse(await res.json()).length, 2);

  res = await send(app, "POST", "/api/v1/volumes", { json: { name: "v1", sizeBytes: 1 << 20 } });
  assert.equal(res.status, 201);
  assert.equal(res.headers.get("location"), "/api/v1/volumes/v1");
  assert.equal(volumeInfoSchema.parse(await res.json()).name, "v1");

  res = await send(app, "GET", "/api/v1/volumes/v1");
  assert.equal(res.status, 200);
  assert.equal(volumeInfoSchema.parse(await res.json()).name, "v1");

  res = await send(app, "POST", "/api/v1/volumes/v1/move", { json: { to: "n2" } });
  assert.equal(res.status, 200);
  assert.equal(volumeInfoSchema.parse(await res.json()).owner, "n2");

  res = await send(app, "DELETE", "/api/v1/volumes/v1");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { deleted: "v1" });

  res = await send(app, "GET", "/api/v1/nodes");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), []);

  res = await send(app, "GET", "/api/v1/cluster");
  assert.equal(res.status, 200);
  assert.equal((await res.json()).answeredBy, "n1");

  res = await send(app, "POST", "/api/v1/nodes/n1/drain");
  assert.equal(res.status, 200);
  assert.deepEqual(drainResultSchema.parse(await res.json()).moved, [{ volume: "a", to: "n2" }]);
  res = await send(app, "POST", "/api/v1/nodes/n1/undrain");
  assert.equal(res.status, 200);
  assert.equal(nodeInfoSchema.parse(await res.json()).drained, false);
  res = await send(app, "GET", "/api/v1/nodes/n1/ok-to-stop");
  assert.equal(res.status, 200);
  assert.equal(okToStopSchema.parse(await res.json()).risks[0].kind, "owner");
  await expectProblem(
    await send(app, "GET", "/api/v1/nodes/missing/ok-to-stop"),
    404,
    "NO_SUCH_NODE",
  );
  await expectProblem(await send(app, "POST", "/api/v1/nodes/Bad!/drain"), 400, "BAD_REQUEST");

  res = await send(app, "GET", "/healthz");
  assert.deepEqual(await res.json(), { status: "ok", node: "n1" });
  res = await send(app, "GET", "/readyz");
  assert.equal(res.status, 200);
  res = await send(app, "GET", "/metrics");
  assert.equal(await res.text(), "cairn_up 1\n");
  res = await send(app, "HEAD", "/api/v1/volumes");
  assert.equal(res.status, 200);

  assert.deepEqual(control.ops(), [
    "volume.list",
    "volume.create",
    "volume.info",
    "volume.move",
    "volume.delete",
    "node.list",
    "cluster.status",
    "node.drain",
    "node.undrain",
    "node.ok-to-stop",
    "node.ok-to-stop",
    "volume.list",
  ]);
  assert.deepEqual(control.calls[3].request, { name: "v1", to: "n2" });
});

Deno.test("http: bad bodies and parameters are 400/415 problems and reach no service", async () => {
  const { app, control } = makeApp();
  let detail = await expectProblem(
    await send(app, "POST", "/api/v1/volumes", { body: "{not json" }),
    400,
    "BAD_REQUEST",
  );
  assert.match(detail, /Malformed JSON/);
  detail = await expectProblem(
    await send(app, "POST", "/api/v1/volumes", { json: { name: "v1", sizeBytes: "big" } }),
    400,
    "BAD_REQUEST",
  );
  assert.match(detail, /^sizeBytes: /);
  detail = await expectProblem(
    await send(app, "POST", "/api/v1/volumes", { json: { name: "Bad Name", sizeBytes: 4096 } }),
    400,
    "BAD_REQUEST",
  );
  assert.match(detail, /^name: names are 1-63/);
  await expectProblem(
    await send(app, "POST", "/api/v1/volumes", { json: [1, 2] }),
    400,
    "BAD_REQUEST",
  );
  await expectProblem(
    await send(app, "POST", "/api/v1/volumes/v1/move", { json: {} }),
    400,
    "BAD_REQUEST",
  );
  await expectProblem(
    await send(app, "POST", "/api/v1/volumes", {
      body: "name=v1",
      type: "application/x-www-form-urlencoded",
    }),
    415,
    "UNSUPPORTED_MEDIA_TYPE",
  );
  await expectProblem(await send(app, "POST", "/api/v1/volumes"), 415, "UNSUPPORTED_MEDIA_TYPE");
  await expectProblem(await send(app, "GET", "/api/v1/volumes/UPPER"), 400, "BAD_REQUEST");
  await expectProblem(
    await send(app, "GET", `/api/v1/volumes/${"x".repeat(64)}`),
    400,
    "BAD_REQUEST",
  );
  await expectProblem(await send(app, "GET", "/api/v1/operations/nope"), 400, "BAD_REQUEST");
  assert.deepEqual(control.ops(), []);
});

Deno.test("http: unknown names 404, unknown routes 404, wrong methods 405 with Allow", async () => {
  const { app } = makeApp();
  assert.match(
    await expectProblem(await send(app, "GET", "/api/v1/volumes/missing"), 404, "NO_SUCH_VOLUME"),
    /no volume named missing/,
  );
  await expectProblem(await send(app, "DELETE", "/api/v1/volumes/missing"), 404, "NO_SUCH_VOLUME");
  await expectProblem(
    await send(app, "POST", "/api/v1/volumes/missing/verify"),
    404,
    "NO_SUCH_VOLUME",
  );
  await expectProblem(
    await send(app, "GET", `/api/v1/operations/${crypto.randomUUID()}`),
    404,
    "NOT_FOUND",
  );
  await expectProblem(await send(app, "GET", "/api/v1/nothing"), 404, "NOT_FOUND");
  await expectProblem(await send(app, "GET", "/api/v2/volumes"), 404, "NOT_FOUND");

  const cases: [string, string, string][] = [
    ["PUT", "/api/v1/volumes", "GET, HEAD, POST"],
    ["DELETE", "/api/v1/volumes", "GET, HEAD, POST"],
    ["POST", "/api/v1/volumes/v1", "DELETE, GET, HEAD"],
    ["GET", "/api/v1/volumes/v1/move", "POST"],
    ["GET", "/api/v1/volumes/v1/verify", "POST"],
    ["POST", "/api/v1/nodes", "GET, HEAD"],
    ["DELETE", "/api/v1/operations/x", "GET, HEAD"],
    ["POST", "/healthz", "GET, HEAD"],
  ];
  for (const [method, path, allow] of cases) {
    const res = await send(app, method, path, method === "GET" ? {} : { json: {} });
    assert.equal(res.headers.get("allow"), allow, `${method} ${path}`);
    await expectProblem(res, 405, "METHOD_NOT_ALLOWED");
  }
});

Deno.test("http: protocol error codes map to HTTP statuses", async () => {
  const { app } = makeApp();
  const expected: [ErrorCodeName, number][] = [
    ["EXISTS", 409],
    ["NOT_ENOUGH_NODES", 409],
    ["UNAVAILABLE", 503],
    ["MOVED", 503],
    ["BUSY", 503],
    ["BAD_REQUEST", 400],
    ["INTERNAL", 500],
  ];
  for (const [code, status] of expected) {
    const name = `fail-${code.toLowerCase().replaceAll("_", "-")}`;
    const res = await send(app, "GET", `/api/v1/volumes/${name}`);
    if (status === 503) assert.equal(res.headers.get("retry-after"), "1");
    assert.equal(await expectProblem(res, status, code), `stub failure ${code}`);
    assert.equal(problemStatus[code], status);
  }
});

Deno.test("http: oversized bodies are 413 and reach no service", async () => {
  const { app, control } = makeApp();
  const big = JSON.stringify({ name: "v1", sizeBytes: 4096, pad: "x".repeat(maxRequestBodyBytes) });
  await expectProblem(
    await send(app, "POST", "/api/v1/volumes", { body: big }),
    413,
    "PAYLOAD_TOO_LARGE",
  );
  // Without a Content-Length (a stream), the limit holds too.
  const stream = new Blob([big]).stream();
  const res = await app.request("/api/v1/volumes", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: stream,
  });
  await expectProblem(res, 413, "PAYLOAD_TOO_LARGE");
  assert.deepEqual(control.ops(), []);
  const justUnder = JSON.stringify({ name: "v1", sizeBytes: 4096 }).padEnd(
    maxRequestBodyBytes,
    " ",
  );
  assert.equal((await send(app, "POST", "/api/v1/volumes", { body: justUnder })).status, 201);
});

Deno.test("http: without rights 401/403 and nothing changes; each role does what it may", async () => {
  const { app, control } = makeApp(await policyWithTokens());
  const mutations: [string, string, unknown][] = [
    ["POST", "/api/v1/volumes", { name: "v1", sizeBytes: 4096 }],
    ["DELETE", "/api/v1/volumes/v1", undefined],
    ["POST", "/api/v1/volumes/v1/move", { to: "n2" }],
  ];
  for (const [method, path, json] of mutations) {
    let res = await send(app, method, path, { json });
    assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="cairn"');
    await expectProblem(res, 401, "UNAUTHORIZED");
    res = await send(app, method, path, { json, token: "wrong-token-0123456789abcdef" });
    assert.match(res.headers.get("www-authenticate")!, /invalid_token/);
    await expectProblem(res, 401, "UNAUTHORIZED");
    res = await send(app, method, path, { json, token: readToken });
    assert.match(res.headers.get("www-authenticate")!, /insufficient_scope/);
    await expectProblem(res, 403, "FORBIDDEN");
  }
  // A bad body without rights is still 401: nothing is validated for an unknown caller.
  await expectProblem(
    await send(app, "POST", "/api/v1/volumes", { body: "{" }),
    401,
    "UNAUTHORIZED",
  );
  // Reads need a token by default when tokens are set; probes do not.
  await expectProblem(await send(app, "GET", "/api/v1/volumes"), 401, "UNAUTHORIZED");
  await expectProblem(await send(app, "POST", "/api/v1/volumes/v1/verify"), 401, "UNAUTHORIZED");
  await expectProblem(
    await app.request("/api/v1/volumes", { headers: { authorization: "Basic abc" } }),
    401,
    "UNAUTHORIZED",
  );
  assert.deepEqual(control.ops(), [], "no call reached the service without the right");

  assert.equal((await send(app, "GET", "/healthz")).status, 200);
  assert.equal((await send(app, "GET", "/readyz")).status, 200);
  assert.equal((await send(app, "GET", "/metrics")).status, 200);
  assert.equal((await send(app, "GET", "/openapi.json")).status, 200);
  assert.equal((await send(app, "GET", "/api/v1/volumes", { token: readToken })).status, 200);
  assert.equal((await send(app, "GET", "/api/v1/volumes", { token: adminToken })).status, 200);
  for (const [method, path, json] of mutations) {
    const res = await send(app, method, path, { json, token: adminToken });
    assert.ok(res.status < 300, `${method} ${path} with the admin token: ${res.status}`);
  }
  assert.deepEqual(control.ops(), [
    "volume.list",
    "volume.list",
    "volume.create",
    "volume.delete",
    "volume.move",
  ]);
});

Deno.test("http: --http-open opens reads or closes probes", async () => {
  const reads = makeApp(await policyWithTokens("probes,reads")).app;
  assert.equal((await send(reads, "GET", "/api/v1/volumes")).status, 200);
  await expectProblem(await send(reads, "DELETE", "/api/v1/volumes/v1"), 401, "UNAUTHORIZED");
  // A token that matches nothing is refused even where no token is needed.
  await expectProblem(
    await send(reads, "GET", "/api/v1/volumes", { token: "wrong-token-0123456789abcdef" }),
    401,
    "UNAUTHORIZED",
  );
  const closed = makeApp(await policyWithTokens("none")).app;
  for (const path of ["/healthz", "/readyz", "/metrics"]) {
    await expectProblem(await send(closed, "GET", path), 401, "UNAUTHORIZED");
    assert.equal((await send(closed, "GET", path, { token: readToken })).status, 200);
  }
  // With no token configuration (loopback only) everything is open, a header or not.
  const open = makeApp().app;
  assert.equal((await send(open, "DELETE", "/api/v1/volumes/v1")).status, 200);
  assert.equal(
    (await send(open, "DELETE", "/api/v1/volumes/v1", { token: "whatever" })).status,
    200,
  );
});

Deno.test("http: token settings are checked, stored hashed, and required off loopback", async () => {
  const entries = await parseTokens(`admin:${adminToken}`, "f");
  assert.equal(entries.length, 1);
  assert.equal(entries[0].digest.length, 32);
  assert.ok(!JSON.stringify(entries).includes(adminToken));
  assert.equal((await parseTokens(`read:${readToken}, admin:${adminToken}`, "env")).length, 2);
  await assert.rejects(() => parseTokens(`root:${adminToken}`, "f"), /f line 1: .*read or admin/);
  await assert.rejects(() => parseTokens("\nadmin:short", "f"), /f line 2: .*at least 16/);
  await assert.rejects(() => parseTokens(`admin ${adminToken}`, "f"), TokenConfigError);
  assert.throws(() => parseOpenGroups("everything"), /probes, reads or none/);

  await assert.rejects(
    () => loadAccessPolicy({ listen: "0.0.0.0:8420" }, "0.0.0.0"),
    /not a loopback address: give tokens/,
  );
  const dir = await Deno.makeTempDir({ prefix: "cairn-http-unit-" });
  try {
    await Deno.writeTextFile(`${dir}/tokens`, `# ops\nadmin:${adminToken}\n`);
    const policy = await loadAccessPolicy(
      { listen: "0.0.0.0:8420", tokensFile: `${dir}/tokens` },
      "0.0.0.0",
    );
    assert.equal(policy.tokens.length, 1);
    assert.deepEqual([...policy.open], ["probes"]);
    await Deno.writeTextFile(`${dir}/empty`, "# nothing\n");
    await assert.rejects(
      () => loadAccessPolicy({ listen: "127.0.0.1:1", tokensFile: `${dir}/empty` }, "127.0.0.1"),
      /name no token/,
    );
    await assert.rejects(
      () => loadAccessPolicy({ listen: "127.0.0.1:1", tokensFile: `${dir}/none` }, "127.0.0.1"),
      /--http-tokens/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const open = await loadAccessPolicy({ listen: "127.0.0.1:8420" }, "127.0.0.1");
  assert.equal(open.tokens.length, 0);
  assert.deepEqual(parseListen("[::1]:80"), { hostname: "::1", port: 80 });
  assert.deepEqual(parseListen("127.0.0.1:0"), { hostname: "127.0.0.1", port: 0 });
  assert.throws(() => parseListen("8420"), /HOST:PORT/);
  assert.throws(() => parseListen("127.0.0.1:70000"), /HOST:PORT/);
});

Deno.test("http: verify is an operation polled to its end; too many at once is BUSY", async () => {
  const { app, control } = makeApp();
  let release!: () => void;
  control.verifyGate = new Promise((resolve) => (release = resolve));
  const res = await send(app, "POST", "/api/v1/volumes/v1/verify");
  assert.equal(res.status, 202);
  const started = operationSchema.parse(await res.json());
  assert.equal(res.headers.get("location"), `/api/v1/operations/${started.id}`);
  assert.equal(started.state, "running");
  let polled = operationSchema.parse(
    await (await send(app, "GET", `/api/v1/operations/${started.id}`)).json(),
  );
  assert.equal(polled.state, "running");
  assert.deepEqual(polled.progress, { done: 0, total: 1, unit: "segments" });
  for (let i = 1; i < maxRunningOperations; i++) {
    assert.equal((await send(app, "POST", "/api/v1/volumes/v1/verify")).status, 202);
  }
  await expectProblem(await send(app, "POST", "/api/v1/volumes/v1/verify"), 503, "BUSY");
  release();
  await new Promise((r) => setTimeout(r, 10));
  polled = operationSchema.parse(
    await (await send(app, "GET", `/api/v1/operations/${started.id}`)).json(),
  );
  assert.equal(polled.state, "succeeded");
  assert.equal(polled.result?.ok, true);
  assert.ok(polled.finishedAt);
  assert.deepEqual(polled.progress, { done: 1, total: 1, unit: "segments" });
});

Deno.test("http: the OpenAPI document is valid 3.1 and its paths are the app's routes", async () => {
  const { app } = makeApp();
  const res = await send(app, "GET", "/openapi.json");
  const doc = await res.json();
  const validator = new Validator();
  const result = await validator.validate(doc);
  assert.ok(result.valid, JSON.stringify(result.errors, null, 2));
  assert.equal(validator.version, "3.1");
  assert.deepEqual(doc, JSON.parse(JSON.stringify(openApiDocument(app))));

  const documented = new Set<string>();
  for (const [path, item] of Object.entries(doc.paths as Record<string, object>)) {
    for (const method of Object.keys(item)) {
      documented.add(`${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ":$1")}`);
    }
  }
  const served = new Set(
    app.routes
      .filter((r) => r.method !== "ALL")
      .filter((r) => !r.path.startsWith("/docs") && r.path !== "/openapi.json")
      // The dashboard's page and its static files are no API.
      .filter((r) => r.path !== "/" && !r.path.startsWith("/dashboard/"))
      .map((r) => `${r.method} ${r.path}`),
  );
  assert.deepEqual([...documented].sort(), [...served].sort());
  assert.ok(documented.has("POST /api/v1/volumes/:name/verify"));
  // Mutations and reads declare the bearer scheme; every response of every route is listed.
  assert.deepEqual(doc.paths["/api/v1/volumes"].post.security, [{ bearerAuth: [] }]);
  assert.ok(doc.paths["/api/v1/volumes"].post.responses["413"]);
  assert.equal(doc.components.securitySchemes.bearerAuth.scheme, "bearer");
  assert.ok(doc.components.schemas.VolumeInfo);
  assert.ok(doc.components.schemas.Problem);
  // The event stream's messages are documented with their schemas.
  assert.ok(doc.paths["/api/v1/events"].get.responses["200"].content["text/event-stream"]);
  for (const id of ["DashboardSnapshot", "NodeStats", "VolumeIoStats", "DashboardEvent"]) {
    assert.ok(doc.components.schemas[id], id);
  }
});

Deno.test("http: /docs loads its script and stylesheet from this node, not the internet", async () => {
  const { app } = makeApp();
  const html = await (await send(app, "GET", "/docs")).text();
  const sources = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(sources.sort(), [
    "/docs/assets/swagger-ui-dist/swagger-ui-bundle.js",
    "/docs/assets/swagger-ui-dist/swagger-ui.css",
  ]);
  assert.match(html, /url: '\/openapi.json'/);
  assert.match(html, /validatorUrl: 'none'/);
  for (const source of sources) {
    const res = await send(app, "GET", source);
    assert.equal(res.status, 200);
    assert.ok((await res.arrayBuffer()).byteLength > 100_000);
  }
  assert.equal((await send(app, "GET", "/docs/assets/swagger-ui-dist/package.json")).status, 404);
});
