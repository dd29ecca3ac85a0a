/**
 * The NBD gateway over in-memory exports, through raw sockets: handshake, options, many
 * requests in flight with out-of-order completion, sub-block IO, bad input, shutdown.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import { NbdGateway } from "../../nbd/server.ts";
import { maxRequestsInFlight } from "../../nbd/connection.ts";
import { Cmd, CmdFlag, Info, NbdErrno, Opt, Rep, TransmissionFlag } from "../../nbd/protocol.ts";
import { MemorySource } from "./memory_source.ts";
import { RawNbdClient } from "./raw_client.ts";
import { checkBadInput } from "./bad_input.ts";
import { mulberry32 } from "../harness/random.ts";

const MiB = 1024 * 1024;
const quiet = () => {};

async function startGateway(source: MemorySource) {
  const gateway = new NbdGateway({ source, log: quiet });
  const address = await gateway.listen({ host: "127.0.0.1", port: 0 });
  return { gateway, address };
}

function pattern(seed: number, length: number): Uint8Array {
  const random = mulberry32(seed);
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (random() * 256) | 0;
  return out;
}

Deno.test("handshake: options, INFO, GO, EXPORT_NAME, structured replies", async () => {
  const source = new MemorySource();
  source.add("alpha", 8 * MiB);
  source.add("beta", 16 * MiB);
  const { gateway, address } = await startGateway(source);
  try {
    const client = await RawNbdClient.connect(address);
    const greeting = await client.greeting();
    assert.equal(greeting.flags, 3, "FIXED_NEWSTYLE | NO_ZEROES");
    client.sendClientFlags(1);
    const { names, final } = await client.list();
    assert.deepEqual(names.sort(), ["alpha", "beta"]);
    assert.equal(final.type, Rep.ACK);

    const info = await client.infoOrGo(Opt.INFO, "beta", [Info.NAME, Info.DESCRIPTION]);
    assert.equal(info.sizeBytes, 16 * MiB);
    assert.deepEqual(info.blockSize, { minimum: 512, preferred: 4096, maximum: 32 * MiB });
    assert.equal(info.name, "beta");
    assert.match(info.description!, /memory export/);
    for (
      const flag of [
        TransmissionFlag.HAS_FLAGS,
        TransmissionFlag.SEND_FLUSH,
        TransmissionFlag.SEND_FUA,
        TransmissionFlag.SEND_TRIM,
        TransmissionFlag.SEND_WRITE_ZEROES,
        TransmissionFlag.CAN_MULTI_CONN,
      ]
    ) assert.ok(info.flags & flag, `flag ${flag}`);
    assert.equal(info.flags & TransmissionFlag.SEND_DF, 0, "DF only with structured replies");
    assert.equal(info.flags & TransmissionFlag.READ_ONLY, 0);

    assert.equal((await client.option(Opt.STRUCTURED_REPLY)).type, Rep.ACK);
    client.structured = true;
    const go = await client.go("alpha");
    assert.equal(go.sizeBytes, 8 * MiB);
    assert.ok(go.flags & TransmissionFlag.SEND_DF);
    const data = pattern(1, 8192);
    assert.equal((await client.write(4096, data)).error, 0);
    const back = await client.readAt(4096, 8192);
    assert.ok(back.structured);
    assert.deepEqual(back.data, data);
    assert.equal((await client.readAt(0, 0)).error, 0, "zero-length read");
    client.disconnect();
    await client.closed;

    // The old way in: NBD_OPT_EXPORT_NAME, with and without the 124 zero bytes.
    for (const flags of [1, 3]) {
      const old = await RawNbdClient.connect(address);
      await old.greeting();
      old.sendClientFlags(flags);
      old.sendOption(Opt.EXPORT_NAME, new TextEncoder().encode("alpha"));
      const reply = new DataView((await old.readBytes(10)).slice().buffer);
      assert.equal(Number(reply.getBigUint64(0, false)), 8 * MiB);
      assert.ok(reply.getUint16(8, false) & TransmissionFlag.CAN_MULTI_CONN);
      if (flags === 1) assert.deepEqual(await old.readBytes(124), new Uint8Array(124));
      const read = await old.readAt(4096, 8192);
      assert.deepEqual(read.data, data);
      old.disconnect();
      await old.closed;
    }
  } finally {
    await gateway.close();
  }
});

Deno.test("many requests in flight complete out of order, each with its own data", async () => {
  const source = new MemorySource();
  source.add("disk", 16 * MiB, 5);
  const { gateway, address } = await startGateway(source);
  try {
    const model = new Uint8Array(16 * MiB);
    for (const structured of [false, true]) {
      const { client } = await RawNbdClient.open(address, "disk", { structured });
      const random = mulberry32(structured ? 2 : 3);
      // 128 writes of different sizes and alignments in flight at once (disjoint ranges).
      const writes = Array.from({ length: 128 }, (_, i) => {
        const offset = i * 128 * 1024 + Math.floor(random() * 64) * 512;
        const data = pattern(i + 10, 512 * (1 + Math.floor(random() * 100)));
        model.set(data, offset);
        return client.write(offset, data, i % 3 === 0 ? CmdFlag.FUA : 0);
      });
      for (const reply of await Promise.all(writes)) assert.equal(reply.error, 0);
      assert.equal((await client.request({ type: Cmd.FLUSH, offset: 0, length: 0 })).error, 0);
      const reads = Array.from({ length: 128 }, (_, i) => {
        const offset = i * 128 * 1024;
        return client.readAt(offset, 128 * 1024).then((r) => ({ r, offset }));
      });
      for (const { r, offset } of await Promise.all(reads)) {
        assert.equal(r.error, 0);
        assert.deepEqual(r.data, model.subarray(offset, offset + 128 * 1024));
      }
      client.disconnect();
      await client.closed;
    }
  } finally {
    await gateway.close();
  }
});

Deno.test("sub-block IO: 512-byte writes from several connections never lose each other", async () => {
  const source = new MemorySource();
  const backend = source.add("disk", 4 * MiB, 3);
  const { gateway, address } = await startGateway(source);
  try {
    const clients = await Promise.all(
      [0, 1, 2, 3].map(async () => (await RawNbdClient.open(address, "disk")).client),
    );
    // Every 512-byte sector of blocks 0..7 written once, by alternating connections, all at once.
    const model = new Uint8Array(8 * 4096);
    const writes: Promise<unknown>[] = [];
    for (let sector = 0; sector < 64; sector++) {
      const data = pattern(100 + sector, 512);
      model.set(data, sector * 512);
      writes.push(clients[sector % 4].write(sector * 512, data));
    }
    const results = await Promise.all(writes) as { error: number }[];
    assert.ok(results.every((r) => r.error === 0));
    assert.deepEqual(backend.data.subarray(0, model.byteLength), model);
    const io = gateway.openExportIo("disk")!;
    assert.equal(io.stats.readModifyWrites, 64);
    assert.equal(io.locks.held, 0);

    // Unaligned spans: partial head, whole middle, partial tail; zeroes and trims too.
    const span = pattern(7, 3 * 4096 + 1024);
    assert.equal((await clients[0].write(4096 * 20 + 1536, span)).error, 0);
    model.fill(0);
    const expected = backend.data.slice(0, 32 * 4096);
    expected.set(span, 4096 * 20 + 1536);
    assert.deepEqual(backend.data.subarray(0, 32 * 4096), expected);
    const read = await clients[1].readAt(4096 * 20 + 1024, 4096);
    assert.deepEqual(read.data, expected.subarray(4096 * 20 + 1024, 4096 * 21 + 1024));
    const zero = await clients[2].request({
      type: Cmd.WRITE_ZEROES,
      offset: 4096 * 20 + 2048,
      length: 8192,
    });
    assert.equal(zero.error, 0);
    expected.fill(0, 4096 * 20 + 2048, 4096 * 22 + 2048);
    assert.deepEqual(backend.data.subarray(0, 32 * 4096), expected);
    const fast = await clients[2].request({
      type: Cmd.WRITE_ZEROES,
      flags: CmdFlag.FAST_ZERO,
      offset: 512,
      length: 512,
    });
    assert.equal(fast.error, NbdErrno.ENOTSUP, "unaligned fast zero is not fast");
    const trim = await clients[3].request({
      type: Cmd.TRIM,
      offset: 4096 * 30 + 512,
      length: 8192,
    });
    assert.equal(trim.error, 0);
    assert.equal(backend.calls.trim, 1, "only the whole block inside the range is trimmed");
    for (const client of clients) {
      client.disconnect();
      await client.closed;
    }
  } finally {
    await gateway.close();
  }
});

Deno.test("bad input over raw sockets (in-memory export)", async (t) => {
  const source = new MemorySource();
  source.add("disk", 64 * MiB);
  const { gateway, address } = await startGateway(source);
  try {
    await checkBadInput(t, address, "disk", 64 * MiB);
    // Everything above ended: no connection is left behind.
    for (let i = 0; i < 50 && gateway.connectionCount > 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(gateway.connectionCount, 0);
  } finally {
    await gateway.close();
  }
});

Deno.test("DISC answers requests in flight first; shutdown answers with ESHUTDOWN", async () => {
  const source = new MemorySource();
  const backend = source.add("disk", 4 * MiB, 30);
  const { gateway, address } = await startGateway(source);
  try {
    const { client } = await RawNbdClient.open(address, "disk");
    const inFlight = Array.from({ length: 16 }, (_, i) => client.readAt(i * 4096, 4096));
    client.disconnect();
    for (const reply of await Promise.all(inFlight)) assert.equal(reply.error, 0);
    await client.closed;

    const { client: second } = await RawNbdClient.open(address, "disk");
    let release!: () => void;
    backend.hold = new Promise((resolve) => (release = resolve));
    const reads = backend.calls.read;
    const held = second.readAt(0, 4096);
    while (backend.calls.read === reads) await new Promise((r) => setTimeout(r, 1));
    const closing = gateway.close();
    const late = await second.readAt(4096, 4096);
    assert.equal(late.error, NbdErrno.ESHUTDOWN, "a request after shutdown began");
    release();
    assert.equal((await held).error, 0, "the request in flight is answered");
    await closing;
    assert.ok(await second.closesWithin(5000));
    // The listener is gone.
    await assert.rejects(RawNbdClient.connect(address));
  } finally {
    await gateway.close();
  }
});

Deno.test("listens on a Unix socket", async () => {
  const source = new MemorySource();
  source.add("disk", 1 * MiB);
  const dir = await Deno.makeTempDir({ prefix: "cairn-nbd-" });
  const gateway = new NbdGateway({ source, log: quiet });
  try {
    const address = await gateway.listen({ path: `${dir}/nbd.sock` });
    const { client, details } = await RawNbdClient.open(address, "disk");
    assert.equal(details.sizeBytes, 1 * MiB);
    assert.equal((await client.write(0, pattern(5, 4096))).error, 0);
    client.disconnect();
    await client.closed;
  } finally {
    await gateway.close();
    await Deno.remove(dir, { recursive: true });
  }
  // The socket file is removed on close.
  assert.throws(() => Deno.statSync(`${dir}/nbd.sock`));
});

Deno.test("a slow handshake does not hold up other connections", async () => {
  const source = new MemorySource();
  source.add("disk", 1 * MiB);
  const { gateway, address } = await startGateway(source);
  try {
    const idle = net.connect((address as { port: number }).port, "127.0.0.1");
    await new Promise((r) => idle.once("connect", r));
    const { client } = await RawNbdClient.open(address, "disk");
    assert.equal((await client.readAt(0, 512)).error, 0);
    client.disconnect();
    await client.closed;
    idle.destroy();
  } finally {
    await gateway.close();
  }
});

Deno.test("at most maxRequestsInFlight per connection; the rest wait, none are lost", async () => {
  const source = new MemorySource();
  const backend = source.add("disk", 4 * MiB);
  const { gateway, address } = await startGateway(source);
  try {
    const { client } = await RawNbdClient.open(address, "disk");
    let release!: () => void;
    backend.hold = new Promise((resolve) => (release = resolve));
    const replies = Array.from(
      { length: 3 * maxRequestsInFlight },
      (_, i) => client.readAt((i % 1024) * 4096, 4096),
    );
    for (let i = 0; i < 100 && backend.calls.read < maxRequestsInFlight; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(backend.calls.read, maxRequestsInFlight);
    backend.hold = null;
    release();
    for (const reply of await Promise.all(replies)) assert.equal(reply.error, 0);
    assert.equal(backend.calls.read, 3 * maxRequestsInFlight);
    client.disconnect();
    await client.closed;
  } finally {
    await gateway.close();
  }
});

Deno.test("a Unix socket in use is refused; a stale one is replaced", async () => {
  const source = new MemorySource();
  source.add("disk", 1 * MiB);
  const dir = await Deno.makeTempDir({ prefix: "cairn-nbd-" });
  const first = new NbdGateway({ source, log: quiet });
  const second = new NbdGateway({ source, log: quiet });
  const third = new NbdGateway({ source, log: quiet });
  try {
    await first.listen({ path: `${dir}/nbd.sock` });
    await assert.rejects(second.listen({ path: `${dir}/nbd.sock` }), /in use/);
    // A socket file whose listener died with kill -9 is taken over.
    const stalePath = `${dir}/stale.sock`;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `Deno.listen({ transport: "unix", path: "${stalePath}" }); setInterval(() => {}, 1000);`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    while (!fs.existsSync(stalePath)) await new Promise((r) => setTimeout(r, 20));
    child.kill("SIGKILL");
    await child.status;
    assert.ok(fs.statSync(stalePath).isSocket(), "the dead listener left its socket file");
    const address = await third.listen({ path: stalePath });
    const { client } = await RawNbdClient.open(address, "disk");
    assert.equal((await client.readAt(0, 512)).error, 0);
    client.disconnect();
    await client.closed;
  } finally {
    await first.close();
    await second.close();
    await third.close();
    await Deno.remove(dir, { recursive: true });
  }
});
