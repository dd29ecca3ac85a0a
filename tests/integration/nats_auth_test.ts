/**
 * Integration: a 3-node cluster on a nats-server with authorization on (nkey users with the
 * permissions of server/nats_auth_config.ts, plus two user/password users). Nodes run as the
 * node user, the CLI and the client library as the admin user; a data user (IO and read-only
 * control) and an IO-only user (nothing in cairn.v1.ctl.>) cannot create or delete volumes;
 * wrong or missing credentials are refused with a message that says what to check.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { nkeys } from "@nats-io/nats-core";
import { TestCluster } from "../harness/cluster.ts";
import { natsAuthEnv } from "../../server/local_cluster.ts";
import { runCapture } from "../../server/process.ts";
import {
  generateNatsAuth,
  natsAuthorizationConfig,
  natsRoles,
} from "../../server/nats_auth_config.ts";
import { PermissionDeniedError } from "../../protocol/request_mux.ts";
import { subjects } from "../../protocol/subjects.ts";

const repoRoot = new URL("../../", import.meta.url).pathname;
const ioOnlyPassword = "io-only-secret-pw";
const alicePassword = "alice-secret-pw";
const carolPassword = "carol-secret-pw";

/** A user with the volume IO subjects only: no rights to cairn.v1.ctl.> at all. */
const ioOnlyPermissions = {
  publish: [subjects.volumeIo("*")],
  subscribe: ["_INBOX.>"],
  allowResponses: false,
};

function pattern(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

async function volumeNames(cluster: TestCluster): Promise<string[]> {
  const client = await cluster.client();
  return (await client.listVolumes()).map((v) => v.name).sort();
}

Deno.test({
  name: "NATS authorization: node, admin, data and IO-only users; refused credentials",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const keysDir = await Deno.makeTempDir({ prefix: "cairn-auth-" });
    const generated = generateNatsAuth(keysDir);
    // The generated config plus two user/password users (for the URL and --user paths).
    const configFile = `${keysDir}/test.conf`;
    fs.writeFileSync(
      configFile,
      natsAuthorizationConfig([
        ...(Object.keys(natsRoles) as (keyof typeof natsRoles)[]).map((role) => ({
          nkey: generated.publicKeys[role],
          permissions: natsRoles[role],
        })),
        { user: "ioonly", password: ioOnlyPassword, permissions: ioOnlyPermissions },
        { user: "alice", password: alicePassword, permissions: natsRoles.admin },
        // An admin confined to its own reply inboxes (--inbox-prefix _INBOX_carol).
        {
          user: "carol",
          password: carolPassword,
          permissions: { ...natsRoles.admin, subscribe: ["_INBOX_carol.>"] },
        },
      ]),
    );
    const seeds = generated.seedFiles;
    const secrets = [
      ioOnlyPassword,
      alicePassword,
      carolPassword,
      ...Object.values(seeds).map((f) => fs.readFileSync(f, "utf8").trim()),
    ];
    const noSecrets = (text: string) => {
      for (const secret of secrets) assert.ok(!text.includes(secret), "a secret was printed");
    };
    const cluster = await TestCluster.start({
      nodes: 3,
      natsConfigFile: configFile,
      nodeAuth: { creds: seeds.node },
      clientAuth: { creds: seeds.admin },
    });
    try {
      await t.step("admin user: create, write, read, verify", async () => {
        const created = await cluster.cli(["volume", "create", "v1", "--size", "16MiB"]);
        assert.equal(created.code, 0, created.stderr);
        const admin = await cluster.client();
        const volume = await admin.openVolume("v1");
        const data = pattern(64 * 1024, 1);
        await volume.write(8192, data);
        assert.deepEqual(new Uint8Array(await volume.read(8192, data.length)), data);
        const verify = await cluster.cli(["volume", "verify", "v1"]);
        assert.equal(verify.code, 0, verify.stdout + verify.stderr);
        const list = await cluster.cli(["volume", "list"]);
        assert.equal(list.code, 0, list.stderr);
        assert.match(list.stdout, /v1/);
        const nodes = await cluster.cli(["node", "list", "--json"]);
        assert.equal(nodes.code, 0, nodes.stderr);
        assert.equal(JSON.parse(nodes.stdout).length, 3);
      });

      await t.step("data user: IO and lookups work; create and delete are refused", async () => {
        const data = await cluster.client({ creds: seeds.data });
        const volume = await data.openVolume("v1");
        const bytes = pattern(8192, 2);
        await volume.write(0, bytes);
        assert.deepEqual(new Uint8Array(await volume.read(0, bytes.length)), bytes);
        assert.deepEqual(
          new Uint8Array(await volume.read(8192, 4096)),
          pattern(64 * 1024, 1).slice(0, 4096),
        );
        const started = performance.now();
        await assert.rejects(
          data.createVolume({ name: "v2", sizeBytes: 16 * 1024 * 1024 }),
          (err: Error) =>
            err instanceof PermissionDeniedError &&
            err.subject === subjects.control("volume.create"),
        );
        await assert.rejects(
          data.deleteVolume("v1"),
          (err: Error) =>
            err instanceof PermissionDeniedError &&
            err.subject === subjects.control("volume.delete"),
        );
        // Refused at once, not after the 30 s control timeout.
        assert.ok(performance.now() - started < 10_000, "refusals took too long");
        const create = await cluster.cli(["volume", "create", "v2", "--size", "16MiB"], {
          creds: seeds.data,
        });
        assert.equal(create.code, 1);
        assert.match(
          create.stderr,
          /permissions violation.*may not publish to cairn\.v1\.ctl\.volume\.create/,
        );
        const del = await cluster.cli(["volume", "delete", "v1"], { creds: seeds.data });
        assert.equal(del.code, 1);
        assert.match(del.stderr, /may not publish to cairn\.v1\.ctl\.volume\.delete/);
        const move = await cluster.cli(["volume", "move", "v1", "--to", "n2"], {
          creds: seeds.data,
        });
        assert.equal(move.code, 1);
        assert.match(move.stderr, /may not publish to cairn\.v1\.ctl\.volume\.move/);
        const list = await cluster.cli(["volume", "list"], { creds: seeds.data });
        assert.equal(list.code, 0, list.stderr);
        for (const out of [create, del, move, list]) noSecrets(out.stdout + out.stderr);
      });

      await t.step("IO-only user (no cairn.v1.ctl.>, password in the URL)", async () => {
        const port = new URL(cluster.natsUrl.replace(/^nats:/, "http:")).port;
        const url = `nats://ioonly:${ioOnlyPassword}@127.0.0.1:${port}`;
        const run = (args: string[]) =>
          runCapture(Deno.execPath(), ["run", "-A", `${repoRoot}cli/main.ts`, ...args], {
            cwd: repoRoot,
            env: natsAuthEnv({}),
          });
        const create = await run(["--nats", url, "volume", "create", "v3", "--size", "16MiB"]);
        assert.equal(create.code, 1);
        assert.match(create.stderr, /may not publish to cairn\.v1\.ctl\.volume\.create/);
        const del = await run(["--nats", url, "volume", "delete", "v1"]);
        assert.equal(del.code, 1);
        assert.match(del.stderr, /may not publish to cairn\.v1\.ctl\.volume\.delete/);
        const list = await run(["--nats", url, "volume", "list"]);
        assert.equal(list.code, 1);
        assert.match(list.stderr, /may not publish to cairn\.v1\.ctl\.volume\.list/);
        // The same user with a wrong password in the URL: refused, and the URL's password
        // is not repeated.
        const wrong = await run([
          "--nats",
          `nats://ioonly:not-the-password@127.0.0.1:${port}`,
          "volume",
          "list",
        ]);
        assert.equal(wrong.code, 1);
        assert.match(wrong.stderr, /refused user "ioonly" from the NATS URL/);
        assert.ok(!wrong.stderr.includes("not-the-password"));
        for (const out of [create, del, list]) noSecrets(out.stdout + out.stderr);
      });

      await t.step("the volume list is unchanged", async () => {
        assert.deepEqual(await volumeNames(cluster), ["v1"]);
      });

      await t.step("user and password: right ones work, wrong ones are refused", async () => {
        const ok = await cluster.cli([
          "--user",
          "alice",
          "--password",
          alicePassword,
          "node",
          "list",
        ], {});
        assert.equal(ok.code, 0, ok.stderr);
        const wrong = await cluster.cli(["volume", "list"], {
          user: "alice",
          password: "wrong-password-x",
        });
        assert.equal(wrong.code, 1);
        assert.match(
          wrong.stderr,
          /nats-server at .* refused user "alice" and its password \(.*\): check --user and --password/,
        );
        assert.ok(!wrong.stderr.includes("wrong-password-x"));
      });

      await t.step("a user confined to its own inboxes needs --inbox-prefix", async () => {
        const carol = { user: "carol", password: carolPassword };
        const ok = await cluster.cli(["--inbox-prefix", "_INBOX_carol", "volume", "list"], carol);
        assert.equal(ok.code, 0, ok.stderr);
        assert.match(ok.stdout, /v1/);
        const client = await cluster.client(carol, "_INBOX_carol");
        const volume = await client.openVolume("v1");
        assert.deepEqual(new Uint8Array(await volume.read(0, 8192)), pattern(8192, 2));
        const without = await cluster.cli(["volume", "list"], carol);
        assert.equal(without.code, 1);
        assert.match(without.stderr, /may not subscribe to _INBOX\.\S+\.\*/);
      });

      await t.step("unknown key, junk file and no credentials are refused clearly", async () => {
        const stranger = `${keysDir}/stranger.nk`;
        fs.writeFileSync(stranger, new TextDecoder().decode(nkeys.createUser().getSeed()));
        const unknown = await cluster.cli(["volume", "list"], { creds: stranger });
        assert.equal(unknown.code, 1);
        assert.match(unknown.stderr, new RegExp(`refused the credentials in ${stranger}`));
        assert.match(unknown.stderr, /check --creds/);
        const junk = `${keysDir}/junk.txt`;
        fs.writeFileSync(junk, "not a key\n");
        const bad = await cluster.cli(["volume", "list"], { creds: junk });
        assert.equal(bad.code, 1);
        assert.match(bad.stderr, /is neither a NATS \.creds file .* nor an nkey user seed/);
        const none = await cluster.cli(["volume", "list"], {});
        assert.equal(none.code, 1);
        assert.match(
          none.stderr,
          /requires authentication and no credentials were given .*: pass --creds FILE/,
        );
      });

      await t.step("a node without credentials cannot join", async () => {
        const dataDir = `${cluster.root}/n-intruder`;
        const started = performance.now();
        const out = await runCapture(Deno.execPath(), [
          "run",
          "-A",
          `${repoRoot}cli/serve.ts`,
          "--nats",
          cluster.natsUrl,
          "--data",
          dataDir,
          "--node",
          "intruder",
          "--capacity",
          "1GiB",
        ], { cwd: repoRoot, env: natsAuthEnv({}) });
        assert.equal(out.code, 1, out.stderr);
        assert.match(out.stderr, /requires authentication and no credentials were given/);
        assert.ok(performance.now() - started < 20_000);
        const nodes = await cluster.client().then((c) => c.listNodes());
        assert.deepEqual(nodes.map((n) => n.id).sort(), ["n1", "n2", "n3"]);
      });

      await t.step("nodes never hit a permissions violation", () => {
        assert.doesNotMatch(cluster.logs(), /permissions violation/i);
        noSecrets(cluster.logs());
      });
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      await cluster.stop();
      await Deno.remove(keysDir, { recursive: true }).catch(() => {});
    }
  },
});
