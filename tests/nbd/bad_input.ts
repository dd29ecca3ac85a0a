/**
 * Raw-socket checks of every kind of bad input, against any gateway address: each gets the
 * error the NBD spec names or a clean disconnect, and the gateway keeps serving.
 */
import assert from "node:assert/strict";
import { RawNbdClient } from "./raw_client.ts";
import {
  Cmd,
  CmdFlag,
  encodeRequestHeader,
  NbdErrno,
  nbdMagic,
  Opt,
  optionMagic,
  Rep,
} from "../../nbd/protocol.ts";
import type { ListenAddress } from "../../nbd/server.ts";

const maxRequestBytes = 32 * 1024 * 1024;
/** How long a disconnect may take to be seen. */
const disconnectWithinMs = 5_000;

async function handshaken(address: ListenAddress): Promise<RawNbdClient> {
  const client = await RawNbdClient.connect(address);
  const greeting = await client.greeting();
  assert.equal(greeting.magic, nbdMagic);
  assert.equal(greeting.newstyle, optionMagic);
  client.sendClientFlags(3);
  return client;
}

/** Runs every bad-input check as a step of `t`. */
export async function checkBadInput(
  t: Deno.TestContext,
  address: ListenAddress,
  exportName: string,
  sizeBytes: number,
): Promise<void> {
  await t.step("garbage instead of a handshake: disconnect", async () => {
    const client = await RawNbdClient.connect(address);
    await client.greeting();
    client.send(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert.ok(await client.closesWithin(disconnectWithinMs), "server closes");
  });

  await t.step("unknown client flags: disconnect", async () => {
    const client = await RawNbdClient.connect(address);
    await client.greeting();
    client.sendClientFlags(0x80);
    assert.ok(await client.closesWithin(disconnectWithinMs));
  });

  await t.step("truncated handshake and truncated option: the gateway carries on", async () => {
    const a = await RawNbdClient.connect(address);
    await a.greeting();
    a.send(new Uint8Array([0, 0]));
    a.destroy();
    const b = await handshaken(address);
    b.send(new Uint8Array(10)); // part of an option header
    b.destroy();
    const c = await handshaken(address);
    c.sendOption(Opt.GO, RawNbdClient.infoData(exportName, []).subarray(0, 3)); // short data
    const reply = await c.readOptionReply();
    assert.equal(reply.type, Rep.ERR_INVALID);
    c.destroy();
  });

  await t.step("bad option magic: disconnect", async () => {
    const client = await handshaken(address);
    client.sendOption(Opt.LIST, new Uint8Array(0), 0x1234n);
    assert.ok(await client.closesWithin(disconnectWithinMs));
  });

  await t.step("option data far too long: disconnect", async () => {
    const client = await handshaken(address);
    const header = new Uint8Array(16);
    const v = new DataView(header.buffer);
    v.setBigUint64(0, optionMagic, false);
    v.setUint32(8, Opt.GO, false);
    v.setUint32(12, 0xffff_ffff, false);
    client.send(header);
    assert.ok(await client.closesWithin(disconnectWithinMs));
  });

  await t.step("unknown and unsupported options: NBD_REP_ERR_UNSUP, session goes on", async () => {
    const client = await handshaken(address);
    for (const option of [99, Opt.STARTTLS, Opt.SET_META_CONTEXT, Opt.LIST_META_CONTEXT]) {
      const reply = await client.option(option, new Uint8Array(4));
      assert.equal(reply.option, option);
      assert.equal(reply.type, Rep.ERR_UNSUP, `option ${option}`);
    }
    const { names, final } = await client.list();
    assert.equal(final.type, Rep.ACK);
    assert.ok(names.includes(exportName));
    client.destroy();
  });

  await t.step("malformed options: NBD_REP_ERR_INVALID", async () => {
    const client = await handshaken(address);
    assert.equal((await client.option(Opt.LIST, new Uint8Array(3))).type, Rep.ERR_INVALID);
    assert.equal(
      (await client.option(Opt.STRUCTURED_REPLY, new Uint8Array(1))).type,
      Rep.ERR_INVALID,
    );
    const lying = RawNbdClient.infoData(exportName, [3]);
    new DataView(lying.buffer).setUint32(0, 1000, false); // name length beyond the data
    assert.equal((await client.option(Opt.INFO, lying)).type, Rep.ERR_INVALID);
    client.destroy();
  });

  await t.step("unknown export: ERR_UNKNOWN on GO, disconnect on EXPORT_NAME", async () => {
    const client = await handshaken(address);
    const reply = await client.option(Opt.GO, RawNbdClient.infoData("no-such-volume", []));
    assert.equal(reply.type, Rep.ERR_UNKNOWN);
    const details = await client.go(exportName);
    assert.equal(details.sizeBytes, sizeBytes);
    client.disconnect();
    assert.ok(await client.closesWithin(disconnectWithinMs));

    const other = await handshaken(address);
    other.sendOption(Opt.EXPORT_NAME, new TextEncoder().encode("no-such-volume"));
    assert.ok(await other.closesWithin(disconnectWithinMs));
  });

  await t.step("NBD_OPT_ABORT: ACK and close", async () => {
    const client = await handshaken(address);
    const reply = await client.option(Opt.ABORT);
    assert.equal(reply.type, Rep.ACK);
    assert.ok(await client.closesWithin(disconnectWithinMs));
  });

  for (const structured of [false, true]) {
    const mode = structured ? "structured" : "simple";
    await t.step(`bad requests get the spec's errors (${mode} replies)`, async () => {
      const { client } = await RawNbdClient.open(address, exportName, { structured });
      const marker = new Uint8Array(4096).fill(0x5c);
      assert.equal((await client.write(0, marker)).error, 0);
      const expect = async (
        what: string,
        req: Parameters<RawNbdClient["request"]>[0],
        errno: number,
      ) => {
        const reply = await client.request(req);
        assert.equal(reply.error, errno, `${what}: got ${reply.error} (${reply.message})`);
        assert.equal(reply.structured, structured);
        if (structured) assert.ok(reply.message.length > 0, `${what}: a message`);
      };
      await expect("unknown command", { type: 99, offset: 0, length: 0 }, NbdErrno.EINVAL);
      await expect("CACHE", { type: Cmd.CACHE, offset: 0, length: 4096 }, NbdErrno.EINVAL);
      await expect(
        "BLOCK_STATUS",
        { type: Cmd.BLOCK_STATUS, offset: 0, length: 4096 },
        NbdErrno.EINVAL,
      );
      await expect(
        "read past the end",
        { type: Cmd.READ, offset: sizeBytes - 512, length: 1024 },
        NbdErrno.EINVAL,
      );
      await expect(
        "read at 2^63",
        { type: Cmd.READ, offset: 1n << 63n, length: 512 },
        NbdErrno.EINVAL,
      );
      await expect(
        "write past the end",
        { type: Cmd.WRITE, offset: sizeBytes, length: 4096, data: new Uint8Array(4096) },
        NbdErrno.ENOSPC,
      );
      await expect(
        "write-zeroes past the end",
        { type: Cmd.WRITE_ZEROES, offset: sizeBytes - 4096, length: 8192 },
        NbdErrno.ENOSPC,
      );
      await expect(
        "trim past the end",
        { type: Cmd.TRIM, offset: sizeBytes, length: 4096 },
        NbdErrno.EINVAL,
      );
      await expect(
        "read over 32 MiB",
        { type: Cmd.READ, offset: 0, length: maxRequestBytes + 512 },
        NbdErrno.EINVAL,
      );
      await expect(
        "write over 32 MiB (payload skipped)",
        {
          type: Cmd.WRITE,
          offset: 0,
          length: maxRequestBytes + 4096,
          data: new Uint8Array(maxRequestBytes + 4096).fill(0xee),
        },
        NbdErrno.EINVAL,
      );
      if (structured) {
        await expect(
          "unfragmented read over 32 MiB",
          { type: Cmd.READ, flags: CmdFlag.DF, offset: 0, length: maxRequestBytes + 512 },
          NbdErrno.EOVERFLOW,
        );
      } else {
        await expect(
          "DF without structured replies",
          { type: Cmd.READ, flags: CmdFlag.DF, offset: 0, length: 512 },
          NbdErrno.EINVAL,
        );
      }
      await expect(
        "offset not a multiple of 512",
        { type: Cmd.READ, offset: 100, length: 512 },
        NbdErrno.EINVAL,
      );
      await expect(
        "length not a multiple of 512",
        { type: Cmd.WRITE, offset: 0, length: 100, data: new Uint8Array(100) },
        NbdErrno.EINVAL,
      );
      await expect(
        "NO_HOLE on WRITE",
        {
          type: Cmd.WRITE,
          flags: CmdFlag.NO_HOLE,
          offset: 0,
          length: 512,
          data: new Uint8Array(512),
        },
        NbdErrno.EINVAL,
      );
      await expect(
        "unknown flag bit",
        { type: Cmd.READ, flags: 0x8000, offset: 0, length: 512 },
        NbdErrno.EINVAL,
      );
      await expect(
        "FLUSH with an offset",
        { type: Cmd.FLUSH, offset: 4096, length: 0 },
        NbdErrno.EINVAL,
      );
      // The connection is still in sync: the skipped 32 MiB payload was not read as requests,
      // and nothing was written.
      const ok = await client.readAt(0, 4096);
      assert.equal(ok.error, 0);
      assert.deepEqual(ok.data, marker, "the rejected writes did not land");
      client.disconnect();
      assert.ok(await client.closesWithin(disconnectWithinMs));
    });
  }

  await t.step("bad request magic: disconnect; other connections unaffected", async () => {
    const { client: good } = await RawNbdClient.open(address, exportName);
    const { client: bad } = await RawNbdClient.open(address, exportName);
    const header = encodeRequestHeader({ type: Cmd.READ, handle: 1n, offset: 0, length: 512 });
    header[0] ^= 0xff;
    bad.send(header);
    assert.ok(await bad.closesWithin(disconnectWithinMs));
    const reply = await good.readAt(0, 512);
    assert.equal(reply.error, 0);
    assert.equal(reply.data.byteLength, 512);
    good.disconnect();
    await good.closed;
  });
}
