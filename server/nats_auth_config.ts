/**
 * The NATS permissions of each Cairn role, and a nats-server `authorization` block that gives
 * them to users (nkeys or user/password). docs/NATS_AUTH.md lists the same; the integration
 * test tests/integration/nats_auth_test.ts runs a cluster on it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { nkeys } from "@nats-io/nats-core";
import { subjectPrefix } from "../protocol/subjects.ts";
import { metadataBucket } from "../actors/metadata_jetstream.ts";

export interface RolePermissions {
  publish: string[];
  subscribe: string[];
  /** May answer requests sent to it (one reply each), without publish rights on `_INBOX.>`. */
  allowResponses: boolean;
}

const p = subjectPrefix;

/**
 * The roles: `node` (a `deno task serve` process), `admin` (every CLI command, the client
 * library's control calls, the NBD gateway), `data` (volume IO and read-only control: open,
 * read, write, list and info; no create, delete, move or verify).
 */
export const natsRoles = {
  node: {
    publish: [
      `${p}.hb.*`, // heartbeats
      `${p}.wd.*`, // watchdog probes of silent peers
      `${p}.stats.*`, // each second's IO counts, for the dashboard of any node
      `${p}.rep.>`, // owner -> replica hosts
      `${p}.node.>`, // segments create/delete, volume check/handoff/status
      `${p}.vol.*.io`, // the node's own NBD gateway (`serve --nbd`) to other owners
      `${p}.ctl.>`, // the node's own NBD gateway looks volumes up
      "$JS.API.>", // JetStream API: the metadata bucket's stream (create, info, get)
      `$KV.${metadataBucket}.>`, // metadata writes (put, create, update, purge)
    ],
    subscribe: [
      `${p}.hb.*`,
      `${p}.wd.*`,
      `${p}.stats.*`,
      `${p}.rep.>`,
      `${p}.node.>`,
      `${p}.vol.*.io`, // the owner serves a volume's IO
      `${p}.ctl.>`, // control plane (queue group cairn-ctl)
      "_INBOX.>", // replies to its requests (peers, JetStream)
    ],
    allowResponses: true,
  },
  admin: {
    publish: [
      `${p}.vol.*.io`,
      `${p}.ctl.>`,
      `${p}.rep.*.*.scrub`, // `volume verify` asks every replica for its checksums
    ],
    subscribe: ["_INBOX.>"],
    allowResponses: false,
  },
  data: {
    publish: [
      `${p}.vol.*.io`,
      `${p}.ctl.volume.info`, // opening a volume looks it up
      `${p}.ctl.volume.list`,
      `${p}.ctl.node.list`,
      `${p}.ctl.cluster.status`,
    ],
    subscribe: ["_INBOX.>"],
    allowResponses: false,
  },
} as const satisfies Record<string, RolePermissions>;

export type NatsRole = keyof typeof natsRoles;

/** One user of the `authorization` block: an nkey (public key, U...) or a user and password. */
export type NatsUser =
  & { permissions: RolePermissions; comment?: string }
  & ({ nkey: string } | { user: string; password: string });

function quote(s: string): string {
  // nats-server config strings: double quotes keep `$` and `>` literal.
  return JSON.stringify(s);
}

function permissionsBlock(perms: RolePermissions, indent: string): string {
  const list = (items: readonly string[]) =>
    `[\n${items.map((s) => `${indent}    ${quote(s)}`).join("\n")}\n${indent}  ]`;
  // nats-server reads an empty allow list as no restriction at all: deny everything instead.
  const rule = (items: readonly string[]) =>
    items.length === 0 ? `{ deny: [">"] }` : `{ allow: ${list(items)} }`;
  return [
    `${indent}permissions: {`,
    `${indent}  publish: ${rule(perms.publish)}`,
    `${indent}  subscribe: ${rule(perms.subscribe)}`,
    ...(perms.allowResponses ? [`${indent}  allow_responses: true`] : []),
    `${indent}}`,
  ].join("\n");
}

/** A nats-server config fragment (`authorization { users = [...] }`) for these users. */
export function natsAuthorizationConfig(users: NatsUser[]): string {
  const entries = users.map((u) => {
    const who = "nkey" in u
      ? `    nkey: ${quote(u.nkey)}`
      : `    user: ${quote(u.user)}\n    password: ${quote(u.password)}`;
    return `${u.comment ? `  # ${u.comment}\n` : ""}  {\n${who}\n${
      permissionsBlock(u.permissions, "    ")
    }\n  }`;
  });
  return `# Cairn NATS users (docs/NATS_AUTH.md)\nauthorization {\n  users = [\n${
    entries.join("\n")
  }\n  ]\n}\n`;
}

export interface GeneratedNatsAuth {
  /** The nats-server config file (`nats-server -c FILE ...`). */
  configFile: string;
  /** The seed file of each role's user, for `--creds` / NATS_CREDS. */
  seedFiles: Record<NatsRole, string>;
  /** Each role's public key, as the config lists it. */
  publicKeys: Record<NatsRole, string>;
}

/**
 * Makes a new nkey user per role, writes each seed to `<dir>/<role>.nk` (mode 0600) and the
 * config to `<dir>/nats-auth.conf`. Files that exist are kept (the same keys on the next run).
 */
export function generateNatsAuth(dir: string): GeneratedNatsAuth {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const seedFiles = {} as Record<NatsRole, string>;
  const publicKeys = {} as Record<NatsRole, string>;
  for (const role of Object.keys(natsRoles) as NatsRole[]) {
    const file = path.join(dir, `${role}.nk`);
    if (!fs.existsSync(file)) {
      const seed = new TextDecoder().decode(nkeys.createUser().getSeed());
      fs.writeFileSync(file, seed + "\n", { mode: 0o600 });
    }
    const seed = new TextEncoder().encode(fs.readFileSync(file, "utf8").trim());
    seedFiles[role] = file;
    publicKeys[role] = nkeys.fromSeed(seed).getPublicKey();
  }
  const configFile = path.join(dir, "nats-auth.conf");
  fs.writeFileSync(
    configFile,
    natsAuthorizationConfig(
      (Object.keys(natsRoles) as NatsRole[]).map((role) => ({
        nkey: publicKeys[role],
        permissions: natsRoles[role],
        comment: `role ${role}: seed in ${role}.nk`,
      })),
    ),
  );
  return { configFile, seedFiles, publicKeys };
}
