/**
 * The HTTP admin API against a real local cluster: the Hono app in-process over a client
 * of the cluster (every route's real behaviour), and the nodes' own `serve --http`
 * listeners (tokens from a file, probes, any node answering for the cluster).
 */
import assert from "node:assert/strict";
import { TestCluster } from "../harness/cluster.ts";
import { buildHttpApi, parseOpenGroups, parseTokens } from "../../http/mod.ts";
import {
  clusterStatusSchema,
  nodeInfoSchema,
  operationSchema,
  problemSchema,
  readinessSchema,
  volumeInfoSchema,
} from "../../protocol/schemas.ts";

const adminToken = "integration-admin-0123456789";
const readToken = "integration-read-0123456789";
/** How long a verify of a small volume may take on a busy machine. */
const verifyTimeoutMs = 60_000;
/** How long a node may take to serve every volume it owns after a change. */
const readyTimeoutMs = 30_000;

async function problemOf(res: Response, status: number, code: string) {
  assert.equal(res.status, status, `expected ${status} ${code}`);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  const problem = problemSchema.parse(await res.json());
  assert.equal(problem.code, code);
  return problem;
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | null>) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (performance.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

Deno.test({
  name: "http api: every route against a real cluster, in-process and from the nodes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const tokenDir = await Deno.makeTempDir({ prefix: "cairn-test-http-" });
    const tokensFile = `${tokenDir}/tokens`;
    await Deno.writeTextFile(tokensFile, `# test\nadmin:${adminToken}\nread:${readToken}\n`);
    const cluster = await TestCluster.start({
      nodes: 3,
      http: true,
      serveArgs: ["--http-tokens", tokensFile],
    });
    try {
      const client = await cluster.client();
      const app = buildHttpApi({
        control: client,
        readiness: () =>
          Promise.resolve({
            ready: true,
            node: "test",
            natsConnected: !client.nc.isClosed(),
            volumesOwned: 0,
            notServing: [],
            detail: "a client",
          }),
        access: {
          tokens: await parseTokens(`admin:${adminToken}\nread:${readToken}`, "test"),
          open: parseOpenGroups("probes"),
        },
        nodeId: "test",
      });
      const call = (method: string, path: string, json?: unknown, token = adminToken) =>
        app.request(path, {
          method,
          headers: {
            authorization: `Bearer ${token}`,
            ...(json === undefined ? {} : { "content-type": "application/json" }),
          },
          body: json === undefined ? undefined : JSON.stringify(json),
        });

      await t.step("nodes and cluster status", async () => {
        const nodes = nodeInfoSchema.array().parse(
          await (await call("GET", "/api/v1/nodes")).json(),
        );
        assert.deepEqual(nodes.map((n) => n.id).sort(), ["n1", "n2", "n3"]);
        assert.ok(nodes.every((n) => n.live));
        const status = clusterStatusSchema.parse(
          await (await call("GET", "/api/v1/cluster")).json(),
        );
        assert.equal(status.nodes.live, 3);
        assert.equal(status.volumes.total, 0);
      });

      let created!: ReturnType<typeof volumeInfoSchema.parse>;
      await t.step(
        "create: 201, then EXISTS, NOT_ENOUGH_NODES and the service's rules",
        async () => {
          const body = { name: "web", sizeBytes: 4 * 1024 * 1024, segmentBytes: 1024 * 1024 };
          const res = await call("POST", "/api/v1/volumes", body);
          assert.equal(res.status, 201, await res.clone().text());
          assert.equal(res.headers.get("location"), "/api/v1/volumes/web");
          created = volumeInfoSchema.parse(await res.json());
          assert.equal(created.segments.length, 4);
          await problemOf(await call("POST", "/api/v1/volumes", body), 409, "EXISTS");
          await problemOf(
            await call("POST", "/api/v1/volumes", { name: "wide", sizeBytes: 4096, replicas: 7 }),
            409,
            "NOT_ENOUGH_NODES",
          );
          const odd = await problemOf(
            await call("POST", "/api/v1/volumes", { name: "odd", sizeBytes: 1000 }),
            400,
            "BAD_REQUEST",
          );
          assert.match(odd.detail, /not a multiple of 4096/);
          await problemOf(
            await call("POST", "/api/v1/volumes", { name: "odd", sizeBytes: 4096, minInSync: 4 }),
            400,
            "BAD_REQUEST",
          );
        },
      );

      await t.step("list and info; unknown names are 404 NO_SUCH_VOLUME", async () => {
        const list = volumeInfoSchema.array().parse(
          await (await call("GET", "/api/v1/volumes", undefined, readToken)).json(),
        );
        assert.deepEqual(list.map((v) => v.name), ["web"]);
        const info = volumeInfoSchema.parse(
          await (await call("GET", "/api/v1/volumes/web", undefined, readToken)).json(),
        );
        assert.equal(info.id, created.id);
        await problemOf(await call("GET", "/api/v1/volumes/nope"), 404, "NO_SUCH_VOLUME");
        await problemOf(await call("DELETE", "/api/v1/volumes/nope"), 404, "NO_SUCH_VOLUME");
        await problemOf(
          await call("POST", "/api/v1/volumes/nope/move", { to: "n1" }),
          404,
          "NO_SUCH_VOLUME",
        );
        await problemOf(await call("POST", "/api/v1/volumes/nope/verify"), 404, "NO_SUCH_VOLUME");
      });

      await t.step("move: to another node, refused for an unknown node", async () => {
        const owner = (await client.volumeInfo("web")).owner;
        // The owner's /readyz is 200 once it serves web (taken over, reconciled).
        const ownerUrl = cluster.httpUrl(Number(owner.slice(1)) - 1);
        const ready = await until(`${owner} ready`, readyTimeoutMs, async () => {
          const res = await fetch(`${ownerUrl}/readyz`);
          const body = readinessSchema.parse(await res.json());
          return res.status === 200 ? body : null;
        });
        assert.equal(ready.volumesOwned, 1);
        const to = ["n1", "n2", "n3"].find((n) => n !== owner)!;
        const bad = await problemOf(
          await call("POST", "/api/v1/volumes/web/move", { to: "n9" }),
          400,
          "BAD_REQUEST",
        );
        assert.match(bad.detail, /no node named n9/);
        const res = await call("POST", "/api/v1/volumes/web/move", { to });
        assert.equal(res.status, 200, await res.clone().text());
        assert.equal(volumeInfoSchema.parse(await res.json()).owner, to);
      });

      await t.step("verify: an operation polled to a clean report", async () => {
        const res = await call("POST", "/api/v1/volumes/web/verify", undefined, readToken);
        assert.equal(res.status, 202);
        const op = operationSchema.parse(await res.json());
        const location = res.headers.get("location")!;
        const done = await until("verify to finish", verifyTimeoutMs, async () => {
          const now = operationSchema.parse(await (await call("GET", location)).json());
          return now.state === "running" ? null : now;
        });
        assert.equal(done.id, op.id);
        assert.equal(done.state, "succeeded", JSON.stringify(done));
        assert.equal(done.result?.ok, true, JSON.stringify(done.result));
        assert.equal(done.result?.replicasChecked, 12);
        assert.deepEqual(done.progress, { done: 4, total: 4, unit: "segments" });
      });

      await t.step("no rights: 401 and 403, and the volume is still there", async () => {
        await problemOf(
          await call("DELETE", "/api/v1/volumes/web", undefined, ""),
          401,
          "UNAUTHORIZED",
        );
        await problemOf(
          await call("DELETE", "/api/v1/volumes/web", undefined, readToken),
          403,
          "FORBIDDEN",
        );
        await problemOf(
          await call("POST", "/api/v1/volumes", { name: "sneaky", sizeBytes: 4096 }, readToken),
          403,
          "FORBIDDEN",
        );
        assert.equal((await client.volumeInfo("web")).id, created.id);
        assert.deepEqual((await client.listVolumes()).map((v) => v.name), ["web"]);
      });

      await t.step("the nodes' own listeners: tokens from the file, any node answers", async () => {
        for (let i = 0; i < 3; i++) {
          const base = cluster.httpUrl(i);
          const health = await fetch(`${base}/healthz`);
          assert.deepEqual(await health.json(), { status: "ok", node: `n${i + 1}` });
          const ready = await until(`n${i + 1} ready`, readyTimeoutMs, async () => {
            const res = await fetch(`${base}/readyz`);
            const body = readinessSchema.parse(await res.json());
            assert.equal(res.status, body.ready ? 200 : 503);
            return body.ready ? body : null;
          });
          assert.equal(ready.natsConnected, true);
          await problemOf(await fetch(`${base}/api/v1/volumes`), 401, "UNAUTHORIZED");
          const res = await fetch(`${base}/api/v1/volumes/web`, {
            headers: { authorization: `Bearer ${readToken}` },
          });
          assert.equal(volumeInfoSchema.parse(await res.json()).id, created.id);
          assert.equal((await fetch(`${base}/openapi.json`)).status, 200);
          // /metrics is open to probes by default, on the same listener.
          const metrics = await fetch(`${base}/metrics`);
          assert.equal(metrics.status, 200);
          assert.match(await metrics.text(), /cairn_volume_io_requests_total/);
          await (await fetch(`${base}/docs`)).body?.cancel();
        }
        const owners = await Promise.all([0, 1, 2].map(async (i) => {
          const ready = readinessSchema.parse(
            await (await fetch(`${cluster.httpUrl(i)}/readyz`)).json(),
          );
          return ready.volumesOwned;
        }));
        assert.equal(owners.reduce((a, b) => a + b, 0), 1, "one node owns web");
        // A mutation through a node's listener, with the admin token from the file.
        const res = await fetch(`${cluster.httpUrl(2)}/api/v1/volumes`, {
          method: "POST",
          headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
          body: JSON.stringify({ name: "via-n3", sizeBytes: 65536, replicas: 2 }),
        });
        assert.equal(res.status, 201, await res.clone().text());
        await res.body?.cancel();
      });

      await t.step("delete: 200, then 404", async () => {
        for (const name of ["web", "via-n3"]) {
          const res = await call("DELETE", `/api/v1/volumes/${name}`);
          assert.equal(res.status, 200);
          assert.deepEqual(await res.json(), { deleted: name });
          await problemOf(await call("GET", `/api/v1/volumes/${name}`), 404, "NO_SUCH_VOLUME");
        }
      });
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      await cluster.stop();
      await Deno.remove(tokenDir, { recursive: true });
    }
  },
});

Deno.test("http api: deno task serve refuses bad HTTP settings before it starts anything", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cairn-test-http-settings-" });
  const repoRoot = new URL("../../", import.meta.url).pathname;
  const serve = async (args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      // No NATS at this port: the settings must fail before the node tries to connect.
      args: ["task", "serve", "--nats", "nats://127.0.0.1:1", "--data", `${dir}/n`, ...args],
      cwd: repoRoot,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  };
  try {
    let r = await serve(["--http", "0.0.0.0:8420"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /error: --http 0\.0\.0\.0 is not a loopback address: give tokens/);
    r = await serve(["--http", "localhost"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--http takes HOST:PORT/);
    await Deno.writeTextFile(`${dir}/tokens`, "admin:short\n");
    r = await serve(["--http", "127.0.0.1:8420", "--http-tokens", `${dir}/tokens`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /tokens line 1: a token is at least 16 characters/);
    assert.ok(!r.stderr.includes("serving"), r.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
