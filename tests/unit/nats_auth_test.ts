/** NATS credentials: URL parsing, redaction, creds file detection, flags over env. */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { nkeys } from "@nats-io/nats-core";
import {
  explainConnectError,
  mergeNatsAuth,
  NatsAuthError,
  natsAuthOptions,
  parseNatsServers,
  readCredsFile,
  redactNatsUrl,
} from "../../protocol/nats_auth.ts";
import { natsAuthorizationConfig, natsRoles } from "../../server/nats_auth_config.ts";

Deno.test("credentials in URLs are taken out and used as user/password or token", () => {
  const parsed = parseNatsServers("nats://al%40ice:p%3Aw@h1:4222, nats://al%40ice:p%3Aw@h2:4222");
  assert.deepEqual(parsed.servers, ["nats://h1:4222", "nats://h2:4222"]);
  assert.equal(parsed.urlUser, "al@ice");
  assert.equal(parsed.urlPassword, "p:w");
  assert.deepEqual(natsAuthOptions({}, parsed), { user: "al@ice", pass: "p:w" });
  const token = parseNatsServers(["tok123@127.0.0.1:4222"]);
  assert.deepEqual(token.servers, ["127.0.0.1:4222"]);
  assert.deepEqual(natsAuthOptions({}, token), { token: "tok123" });
  assert.deepEqual(parseNatsServers("nats://h:1").servers, ["nats://h:1"]);
  assert.throws(() => parseNatsServers("nats://a:b@h1:1,nats://c:d@h2:1"), NatsAuthError);
  // Flags win over the URL.
  assert.deepEqual(
    natsAuthOptions({ user: "bob", password: "x" }, parseNatsServers("nats://a:b@h:1")),
    { user: "bob", pass: "x" },
  );
});

Deno.test("redacted URLs keep the user and hide the password or token", () => {
  assert.equal(
    redactNatsUrl("nats://alice:s3cret@h1:4222,nats://alice:s3cret@h2:4222"),
    "nats://alice:***@h1:4222,nats://alice:***@h2:4222",
  );
  assert.equal(redactNatsUrl("nats://tok@h:4222"), "nats://***@h:4222");
  assert.equal(redactNatsUrl("nats://h:4222"), "nats://h:4222");
});

Deno.test("flags replace the environment as a whole", () => {
  assert.deepEqual(mergeNatsAuth({ creds: "f" }, { user: "u", password: "p" }), { creds: "f" });
  assert.deepEqual(mergeNatsAuth({}, { user: "u", password: "p" }), { user: "u", password: "p" });
  assert.throws(() => natsAuthOptions({ creds: "f", user: "u" }, { servers: [] }), /not both/);
  assert.throws(() => natsAuthOptions({ user: "u" }, { servers: [] }), /needs a password/);
  assert.throws(() => natsAuthOptions({ password: "p" }, { servers: [] }), /needs a user/);
});

Deno.test("a credentials file is told by content; other content is refused without quoting it", () => {
  const dir = Deno.makeTempDirSync({ prefix: "cairn-auth-unit-" });
  try {
    const user = nkeys.createUser();
    const seed = new TextDecoder().decode(user.getSeed());
    fs.writeFileSync(`${dir}/user.nk`, `${seed}\n`);
    assert.equal(readCredsFile(`${dir}/user.nk`).kind, "nkey-seed");
    assert.ok(natsAuthOptions({ creds: `${dir}/user.nk` }, { servers: [] }).authenticator);
    // A .creds file as nsc writes it (the JWT is not checked here, only parsed).
    const jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln";
    fs.writeFileSync(
      `${dir}/user.creds`,
      `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n` +
        `************************* IMPORTANT *************************\n\n` +
        `-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n`,
    );
    assert.equal(readCredsFile(`${dir}/user.creds`).kind, "creds");
    const account = new TextDecoder().decode(nkeys.createAccount().getSeed());
    fs.writeFileSync(`${dir}/account.nk`, account);
    assert.throws(() => readCredsFile(`${dir}/account.nk`), /not a user seed/);
    fs.writeFileSync(`${dir}/junk`, "password=hunter2\n");
    assert.throws(() => readCredsFile(`${dir}/junk`), (err: Error) => {
      assert.match(err.message, /is neither a NATS \.creds file .* nor an nkey user seed/);
      assert.ok(!err.message.includes("hunter2"));
      return true;
    });
    assert.throws(() => readCredsFile(`${dir}/missing`), /cannot read .*ENOENT.*--creds/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a refusal says what was sent and what to check, never the secret", () => {
  const refusal = Object.assign(new Error("Authorization Violation"), {
    name: "AuthorizationError",
  });
  const parsed = parseNatsServers("nats://alice:s3cret@h:4222");
  const fromUrl = explainConnectError(refusal, {}, parsed).message;
  assert.match(fromUrl, /nats-server at nats:\/\/h:4222 refused user "alice" from the NATS URL/);
  assert.ok(!fromUrl.includes("s3cret"));
  const none = explainConnectError(refusal, {}, parseNatsServers("h:4222")).message;
  assert.match(none, /requires authentication and no credentials were given/);
  const creds = explainConnectError(refusal, { creds: "/k/node.nk" }, parseNatsServers("h:1"));
  assert.match(creds.message, /refused the credentials in \/k\/node.nk .*check --creds/);
  const other = new Error("connection refused");
  assert.equal(explainConnectError(other, {}, parseNatsServers("h:1")), other);
});

Deno.test("the authorization config lists each role's subjects, quoted", () => {
  const text = natsAuthorizationConfig([
    { nkey: "UABC", permissions: natsRoles.node },
    { user: "u", password: 'p"w', permissions: natsRoles.data },
  ]);
  assert.match(text, /nkey: "UABC"/);
  assert.match(text, /"\$JS\.API\.>"/);
  assert.match(text, /allow_responses: true/);
  assert.match(text, /password: "p\\"w"/);
  assert.equal(text.match(/allow_responses/g)?.length, 1);
  // An empty list would mean "anything" to nats-server: it becomes a deny-all.
  const none = natsAuthorizationConfig([
    {
      user: "x",
      password: "y",
      permissions: { publish: [], subscribe: [], allowResponses: false },
    },
  ]);
  assert.equal(none.match(/\{ deny: \[">"\] \}/g)?.length, 2);
});
