/** Pure pieces of the gateway: codec, address parsing, byte queue, range locks, RMW splitting. */
import assert from "node:assert/strict";
import { ByteQueue } from "../../nbd/byte_queue.ts";
import {
  decodeInfoRequest,
  decodeRequestHeader,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeOffsetDataHeader,
  encodeRequestHeader,
  encodeSimpleReply,
  getU64,
  requestMagic,
  truncatedUtf8,
} from "../../nbd/protocol.ts";
import { formatListenAddress, nbdUri, parseListenAddress } from "../../nbd/server.ts";
import { RangeLocks, SubBlockIo } from "../../nbd/rmw.ts";
import { joinBody } from "../../actors/ports.ts";
import { MemoryBackend } from "./memory_source.ts";
import { mulberry32 } from "../harness/random.ts";
import { RawNbdClient } from "./raw_client.ts";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("codec: greeting, requests, replies are big-endian and byte-exact", () => {
  assert.equal(hex(encodeGreeting()), "4e42444d41474943" + "49484156454f5054" + "0003");
  const header = encodeRequestHeader({
    flags: 1,
    type: 1,
    handle: 0x0102030405060708n,
    offset: 0x1_0000_0200,
    length: 4096,
  });
  assert.equal(header.byteLength, 28);
  const req = decodeRequestHeader(header);
  assert.equal(req.magic, requestMagic);
  assert.deepEqual([req.flags, req.type, req.offset, req.length], [1, 1, 0x1_0000_0200, 4096]);
  assert.equal(hex(req.handle), "0102030405060708");
  const huge = encodeRequestHeader({ type: 0, handle: 1n, offset: 1n << 62n, length: 0 });
  assert.equal(decodeRequestHeader(huge).offset, Infinity, "beyond 2^53 is never in range");

  assert.equal(
    hex(encodeSimpleReply(22, req.handle)),
    "67446698" + "00000016" + "0102030405060708",
  );
  const chunk = encodeOffsetDataHeader(req.handle, 4096, 512);
  assert.equal(
    hex(chunk),
    "668e33ef0001" + "0001" + "0102030405060708" + "00000208" + "0000000000001000",
  );
  const error = encodeErrorChunk(req.handle, 5, "boom");
  assert.equal(
    hex(error.subarray(0, 20)),
    "668e33ef0001" + "8001" + "0102030405060708" + "0000000a",
  );
  assert.equal(
    hex(error.subarray(20)),
    "00000005" + "0004" + hex(new TextEncoder().encode("boom")),
  );
  assert.equal(
    hex(encodeInfoBlockSize({ minimumBytes: 512, preferredBytes: 4096, maximumBytes: 1 << 25 })),
    "0003" + "00000200" + "00001000" + "02000000",
  );
  const exportReply = encodeExportNameReply(1 << 20, 0x10d, false);
  assert.equal(exportReply.byteLength, 134);
  assert.equal(getU64(new DataView(exportReply.buffer), 0), 1 << 20);
  assert.equal(encodeExportNameReply(1, 1, true).byteLength, 10);
  assert.equal(truncatedUtf8("é".repeat(3000)).byteLength, 4096);
});

Deno.test("codec: NBD_OPT_INFO/GO data", () => {
  assert.deepEqual(decodeInfoRequest(RawNbdClient.infoData("vol", [3, 1])), {
    name: "vol",
    requests: [3, 1],
  });
  assert.equal(typeof decodeInfoRequest(new Uint8Array(5)), "string");
  const extra = new Uint8Array([...RawNbdClient.infoData("v", [3]), 0]);
  assert.equal(typeof decodeInfoRequest(extra), "string", "trailing bytes");
  const nul = RawNbdClient.infoData("a\0b", []);
  assert.equal(typeof decodeInfoRequest(nul), "string", "NUL in a name");
});

Deno.test("listen addresses and URIs", () => {
  assert.deepEqual(parseListenAddress("127.0.0.1:10809"), { host: "127.0.0.1", port: 10809 });
  assert.deepEqual(parseListenAddress(":0"), { host: "0.0.0.0", port: 0 });
  assert.deepEqual(parseListenAddress("10809"), { host: "0.0.0.0", port: 10809 });
  assert.deepEqual(parseListenAddress("[::1]:99"), { host: "::1", port: 99 });
  assert.deepEqual(parseListenAddress("unix:/tmp/x.sock"), { path: "/tmp/x.sock" });
  assert.throws(() => parseListenAddress("host:99999"));
  assert.throws(() => parseListenAddress("unix:"));
  assert.throws(() => parseListenAddress("nonsense"));
  assert.equal(formatListenAddress({ host: "::1", port: 5 }), "[::1]:5");
  assert.equal(nbdUri({ host: "0.0.0.0", port: 7 }, "vol"), "nbd://127.0.0.1:7/vol");
  assert.equal(nbdUri({ path: "/t/s" }, "vol"), "nbd+unix:///vol?socket=%2Ft%2Fs");
});

Deno.test("byte queue: exact takes across chunks, views within one, skip", () => {
  const q = new ByteQueue();
  q.push(new Uint8Array([1, 2, 3]));
  q.push(new Uint8Array([4, 5]));
  q.push(new Uint8Array([6, 7, 8, 9]));
  assert.equal(q.length, 9);
  assert.deepEqual(q.take(2), new Uint8Array([1, 2]));
  assert.deepEqual(q.take(4), new Uint8Array([3, 4, 5, 6]));
  assert.equal(q.skip(2), 2);
  assert.deepEqual(q.take(1), new Uint8Array([9]));
  assert.equal(q.length, 0);
  assert.equal(q.skip(5), 0);
  assert.throws(() => q.take(1));
});

Deno.test("range locks: shared together, exclusive alone, waiters woken", async () => {
  const locks = new RangeLocks();
  const a = locks.tryAcquire(0, 10, false);
  const b = locks.tryAcquire(5, 15, false);
  assert.ok(a !== null && b !== null, "shared holds overlap");
  assert.equal(locks.tryAcquire(9, 10, true), null, "exclusive waits for shared");
  const order: string[] = [];
  const x = locks.acquire(9, 10, true).then((release) => {
    order.push("x");
    return release;
  });
  const y = locks.acquire(20, 21, true).then((release) => {
    order.push("y");
    return release;
  });
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(order, ["y"], "a disjoint exclusive goes at once");
  a();
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(order, ["y"], "still blocked by b");
  b();
  const releaseX = await x;
  assert.deepEqual(order, ["y", "x"]);
  assert.equal(locks.tryAcquire(0, 100, false), null, "shared waits for exclusive");
  releaseX();
  (await y)();
  assert.equal(locks.held, 0);
});

Deno.test("sub-block IO matches a byte model under random concurrent IO", async () => {
  const size = 256 * 1024;
  const backend = new MemoryBackend(new Uint8Array(size), 2, 9);
  const io = new SubBlockIo(backend);
  const model = new Uint8Array(size);
  const random = mulberry32(42);
  for (let round = 0; round < 20; round++) {
    // Concurrent ops on disjoint sector ranges, so the model is exact; they share blocks.
    const ops: Promise<void>[] = [];
    const taken = new Set<number>();
    for (let i = 0; i < 12; i++) {
      const sectors = 1 + Math.floor(random() * 20);
      const first = Math.floor(random() * (size / 512 - sectors));
      let free = true;
      for (let s = first; s < first + sectors; s++) if (taken.has(s)) free = false;
      if (!free) continue;
      for (let s = first; s < first + sectors; s++) taken.add(s);
      const offset = first * 512;
      const length = sectors * 512;
      const kind = random();
      if (kind < 0.7) {
        const data = new Uint8Array(length).map(() => (random() * 256) | 0);
        model.set(data, offset);
        ops.push(io.write(offset, data));
      } else {
        model.fill(0, offset, offset + length);
        ops.push(io.writeZeroes(offset, length));
      }
    }
    await Promise.all(ops);
    const offset = Math.floor(random() * (size / 512 - 64)) * 512;
    assert.deepEqual(
      joinBody(await io.read(offset, 64 * 512)),
      model.subarray(offset, offset + 32768),
    );
  }
  assert.deepEqual(backend.data, model);
  assert.equal(io.locks.held, 0);
  assert.ok(io.stats.readModifyWrites > 0);
});
