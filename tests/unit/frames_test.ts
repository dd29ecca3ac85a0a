import { mulberry32 } from "../harness/random.ts";
import assert from "node:assert/strict";
import { CairnError, ErrorCode, type ErrorCodeName } from "../../protocol/errors.ts";
import {
  allocReply,
  decodeFlushTerm,
  decodeReply,
  decodeRequest,
  decodeStat,
  encodeErrorReply,
  encodeFlushTerm,
  encodeReply,
  encodeRequest,
  encodeStat,
  Flag,
  type IoRequest,
  maxErrorMessageBytes,
  Op,
  opName,
  protocolVersion,
  replyError,
  replyHeaderBytes,
  requestHeaderBytes,
  statBodyBytes,
  validateRequest,
  type VolumeStat,
} from "../../protocol/frames.ts";
import { blockSizeBytes, maxIoBytes, maxZeroIoBytes } from "../../protocol/limits.ts";

const volumeSizeBytes = 1024 ** 4; // 1 TiB: large enough for offsets beyond 2^32.

function pattern(length: number, seed = 7): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

function decodeOk(frame: Uint8Array): IoRequest {
  const result = decodeRequest(frame);
  if (!result.ok) assert.fail(`expected ok, got ${result.code}: ${result.message}`);
  return result.request;
}

function assertRejected(frame: Uint8Array, code: ErrorCodeName, requestId?: number): string {
  const result = decodeRequest(frame);
  if (result.ok) assert.fail(`expected ${code}, frame was accepted`);
  assert.equal(result.code, code, result.message);
  assert.ok(result.message.length > 0);
  if (requestId !== undefined) assert.equal(result.requestId, requestId);
  return result.message;
}

function assertInvalid(req: Omit<IoRequest, "payload"> & { payload?: Uint8Array }, code: string) {
  const request = decodeOk(encodeRequest(req));
  const problem = validateRequest(request, volumeSizeBytes);
  assert.ok(problem !== null, `expected ${code}, request was valid`);
  assert.equal(problem.code, code, problem.message);
}

const base = { flags: 0, requestId: 0xdeadbeef, offsetBytes: 0, lengthBytes: blockSizeBytes };

function validFrame(): Uint8Array {
  return encodeRequest({ ...base, op: Op.WRITE, payload: pattern(blockSizeBytes) });
}

Deno.test("op names", () => {
  assert.equal(opName(Op.READ), "READ");
  assert.equal(opName(Op.WRITE_ZEROES), "WRITE_ZEROES");
  assert.equal(opName(Op.STAT), "STAT");
  assert.equal(opName(0), "UNKNOWN_0");
  assert.equal(opName(7), "UNKNOWN_7");
});

Deno.test("request header layout is little-endian as documented", () => {
  const frame = encodeRequest({
    op: Op.WRITE,
    flags: Flag.FUA,
    requestId: 7,
    offsetBytes: 8192,
    lengthBytes: 4096,
    payload: new Uint8Array(4096),
  });
  assert.equal(frame.byteLength, requestHeaderBytes + 4096);
  assert.deepEqual(
    [...frame.subarray(0, requestHeaderBytes)],
    [1, 2, 1, 0, 7, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0],
  );
});

Deno.test("round trip of every op", () => {
  const cases: (Omit<IoRequest, "payload"> & { payload?: Uint8Array })[] = [
    { ...base, op: Op.READ, offsetBytes: 8192, lengthBytes: 65536 },
    { ...base, op: Op.WRITE, flags: Flag.FUA, payload: pattern(blockSizeBytes) },
    { ...base, op: Op.FLUSH, offsetBytes: 0, lengthBytes: 0 },
    { ...base, op: Op.TRIM, offsetBytes: 4096, lengthBytes: maxZeroIoBytes },
    { ...base, op: Op.WRITE_ZEROES, flags: Flag.FUA, lengthBytes: 1024 * 1024 },
    { ...base, op: Op.STAT, offsetBytes: 0, lengthBytes: 0 },
  ];
  for (const req of cases) {
    const frame = encodeRequest(req);
    const got = decodeOk(frame);
    assert.equal(got.op, req.op);
    assert.equal(got.flags, req.flags);
    assert.equal(got.requestId, req.requestId);
    assert.equal(got.offsetBytes, req.offsetBytes);
    assert.equal(got.lengthBytes, req.lengthBytes);
    assert.deepEqual(got.payload, req.payload ?? new Uint8Array(0));
    assert.equal(validateRequest(got, volumeSizeBytes), null, opName(req.op));
    assert.deepEqual(encodeRequest(got), frame);
  }
});

Deno.test("max-size 512 KiB write round trips and its payload is a view, not a copy", () => {
  const payload = pattern(maxIoBytes, 3);
  const frame = encodeRequest({ ...base, op: Op.WRITE, lengthBytes: maxIoBytes, payload });
  assert.equal(frame.byteLength, requestHeaderBytes + maxIoBytes);
  const got = decodeOk(frame);
  assert.equal(got.lengthBytes, maxIoBytes);
  assert.equal(got.payload.buffer, frame.buffer);
  assert.equal(got.payload.byteOffset, requestHeaderBytes);
  assert.deepEqual(got.payload, payload);
  assert.equal(validateRequest(got, volumeSizeBytes), null);
});

Deno.test("u64 offsets beyond 2^32 round trip exactly", () => {
  for (
    const offsetBytes of [
      2 ** 32,
      2 ** 32 + blockSizeBytes,
      2 ** 40 - blockSizeBytes,
      Number.MAX_SAFE_INTEGER - 4095,
      Number.MAX_SAFE_INTEGER,
    ]
  ) {
    const frame = encodeRequest({ ...base, op: Op.READ, offsetBytes });
    assert.equal(decodeOk(frame).offsetBytes, offsetBytes);
    const view = new DataView(frame.buffer);
    assert.equal(view.getBigUint64(8, true), BigInt(offsetBytes));
  }
  const read = decodeOk(
    encodeRequest({ ...base, op: Op.READ, offsetBytes: 2 ** 39, lengthBytes: 8192 }),
  );
  assert.equal(validateRequest(read, volumeSizeBytes), null);
});

Deno.test("frames inside a larger buffer (nonzero byteOffset) decode correctly", () => {
  const frame = encodeRequest({
    ...base,
    op: Op.WRITE,
    offsetBytes: 2 ** 33,
    payload: pattern(4096),
  });
  const big = new Uint8Array(frame.byteLength + 13);
  big.set(frame, 5);
  const got = decodeOk(big.subarray(5, 5 + frame.byteLength));
  assert.equal(got.offsetBytes, 2 ** 33);
  assert.equal(got.requestId, base.requestId);
  assert.deepEqual(got.payload, pattern(4096));

  const reply = encodeReply({ status: 0, requestId: 9, epoch: 2 ** 35, payload: pattern(100) });
  const bigReply = new Uint8Array(reply.byteLength + 3);
  bigReply.set(reply, 3);
  const decoded = decodeReply(bigReply.subarray(3));
  assert.equal(decoded.epoch, 2 ** 35);
  assert.equal(decoded.requestId, 9);
  assert.deepEqual(decoded.payload, pattern(100));
});

Deno.test("rejects an empty frame and every truncation of a valid header", () => {
  assertRejected(new Uint8Array(0), "BAD_FRAME", 0);
  const frame = validFrame();
  for (let length = 0; length < requestHeaderBytes; length++) {
    // The request id is echoed once the frame is long enough to carry it.
    const message = assertRejected(
      frame.subarray(0, length),
      "BAD_FRAME",
      length >= 8 ? 0xdeadbeef : 0,
    );
    assert.match(message, /shorter/);
  }
});

Deno.test("rejects a bad version", () => {
  for (const version of [0, 2, 255]) {
    const frame = validFrame();
    frame[0] = version;
    assert.match(assertRejected(frame, "BAD_FRAME", 0xdeadbeef), /version/);
  }
  assert.equal(protocolVersion, 1);
});

Deno.test("rejects unknown ops", () => {
  for (const op of [0, 7, 255]) {
    const frame = encodeRequest({ ...base, op, lengthBytes: 0 });
    assertRejected(frame, "UNKNOWN_OP", 0xdeadbeef);
    const problem = validateRequest({ ...base, op, payload: new Uint8Array(0) }, volumeSizeBytes);
    assert.equal(problem?.code, "UNKNOWN_OP");
  }
});

Deno.test("rejects unknown flags, and FUA and CACHED on ops that do not write", () => {
  for (const flags of [4, 0x8000, 0xffff]) {
    const frame = validFrame();
    new DataView(frame.buffer).setUint16(2, flags, true);
    assert.match(assertRejected(frame, "BAD_FRAME"), /flag/);
  }
  for (const op of [Op.READ, Op.FLUSH, Op.TRIM, Op.STAT]) {
    const lengthBytes = op === Op.FLUSH || op === Op.STAT ? 0 : 4096;
    assert.match(
      assertRejected(encodeRequest({ ...base, op, flags: Flag.FUA, lengthBytes }), "BAD_FRAME"),
      /FUA/,
    );
  }
  for (const op of [Op.READ, Op.FLUSH, Op.STAT]) {
    const lengthBytes = op === Op.FLUSH || op === Op.STAT ? 0 : 4096;
    assert.match(
      assertRejected(encodeRequest({ ...base, op, flags: Flag.CACHED, lengthBytes }), "BAD_FRAME"),
      /CACHED/,
    );
  }
  for (const op of [Op.WRITE, Op.WRITE_ZEROES, Op.TRIM]) {
    const payload = new Uint8Array(op === Op.WRITE ? 4096 : 0);
    const frame = encodeRequest({ ...base, op, flags: Flag.CACHED, lengthBytes: 4096, payload });
    const decoded = decodeRequest(frame);
    assert.ok(decoded.ok, `CACHED on ${op}`);
    assert.equal(decoded.request.flags, Flag.CACHED);
  }
});

Deno.test("carries the volume incarnation at offset 20 (0 when not given)", () => {
  const decodedWith = (incarnation?: number) => {
    const decoded = decodeRequest(encodeRequest({ ...base, op: Op.READ, incarnation }));
    assert.ok(decoded.ok);
    return decoded.request.incarnation;
  };
  assert.equal(decodedWith(undefined), 0);
  assert.equal(decodedWith(0xdead_beef), 0xdead_beef);
  assert.throws(() => encodeRequest({ ...base, op: Op.READ, incarnation: 2 ** 32 }), RangeError);
});

Deno.test("rejects a WRITE with a short or long payload, and a READ with a payload", () => {
  const write = { ...base, op: Op.WRITE, lengthBytes: 8192 };
  assertRejected(encodeRequest({ ...write, payload: pattern(8191) }), "BAD_FRAME");
  assertRejected(encodeRequest({ ...write, payload: pattern(4096) }), "BAD_FRAME");
  assertRejected(encodeRequest({ ...write, payload: pattern(8193) }), "BAD_FRAME");
  assertRejected(encodeRequest(write), "BAD_FRAME");
  assertRejected(encodeRequest({ ...base, op: Op.READ, payload: pattern(4096) }), "BAD_FRAME");
  assertRejected(encodeRequest({ ...base, op: Op.READ, payload: pattern(1) }), "BAD_FRAME");
  assertRejected(
    encodeRequest({ ...base, op: Op.FLUSH, lengthBytes: 0, payload: pattern(1) }),
    "BAD_FRAME",
  );
  // A hand-built request with the same mistake is caught by validateRequest too.
  const problem = validateRequest({ ...write, payload: pattern(4096) }, volumeSizeBytes);
  assert.equal(problem?.code, "BAD_FRAME");
});

Deno.test("rejects unaligned offsets and lengths, and zero length", () => {
  for (const op of [Op.READ, Op.TRIM, Op.WRITE_ZEROES]) {
    assertInvalid({ ...base, op, offsetBytes: 512 }, "UNALIGNED");
    assertInvalid({ ...base, op, offsetBytes: 2 ** 33 + 1 }, "UNALIGNED");
    assertInvalid({ ...base, op, lengthBytes: 4097 }, "UNALIGNED");
    assertInvalid({ ...base, op, lengthBytes: 512 }, "UNALIGNED");
    assertInvalid({ ...base, op, lengthBytes: 0 }, "BAD_FRAME");
  }
  assertInvalid({ ...base, op: Op.WRITE, offsetBytes: 100, payload: pattern(4096) }, "UNALIGNED");
  assertInvalid({ ...base, op: Op.WRITE, lengthBytes: 1000, payload: pattern(1000) }, "UNALIGNED");
  assertInvalid({ ...base, op: Op.WRITE, lengthBytes: 0 }, "BAD_FRAME");
});

Deno.test("rejects requests beyond the end of the volume", () => {
  for (const op of [Op.READ, Op.TRIM, Op.WRITE_ZEROES]) {
    assertInvalid(
      { ...base, op, offsetBytes: volumeSizeBytes - 4096, lengthBytes: 8192 },
      "OUT_OF_RANGE",
    );
    assertInvalid({ ...base, op, offsetBytes: volumeSizeBytes }, "OUT_OF_RANGE");
    const last = decodeOk(
      encodeRequest({ ...base, op, offsetBytes: volumeSizeBytes - 8192, lengthBytes: 8192 }),
    );
    assert.equal(validateRequest(last, volumeSizeBytes), null);
  }
  assertInvalid(
    { ...base, op: Op.WRITE, offsetBytes: volumeSizeBytes, payload: pattern(4096) },
    "OUT_OF_RANGE",
  );
  assertInvalid(
    { ...base, op: Op.READ, offsetBytes: Number.MAX_SAFE_INTEGER - 4095 },
    "OUT_OF_RANGE",
  );
  // u64 offsets that are not safe integers are refused by the decoder.
  for (const high of [0x20_0000, 0xffff_ffff]) {
    const frame = encodeRequest({ ...base, op: Op.READ });
    new DataView(frame.buffer).setUint32(12, high, true);
    assertRejected(frame, "OUT_OF_RANGE", 0xdeadbeef);
  }
});

Deno.test("rejects oversize READ, WRITE, TRIM and WRITE_ZEROES", () => {
  assertInvalid({ ...base, op: Op.READ, lengthBytes: maxIoBytes + 4096 }, "TOO_LARGE");
  const big = maxIoBytes + 4096;
  assertInvalid({ ...base, op: Op.WRITE, lengthBytes: big, payload: pattern(big) }, "TOO_LARGE");
  assertInvalid({ ...base, op: Op.TRIM, lengthBytes: maxZeroIoBytes + 4096 }, "TOO_LARGE");
  assertInvalid({ ...base, op: Op.WRITE_ZEROES, lengthBytes: maxZeroIoBytes + 4096 }, "TOO_LARGE");
  const read = decodeOk(encodeRequest({ ...base, op: Op.READ, lengthBytes: maxIoBytes }));
  assert.equal(validateRequest(read, volumeSizeBytes), null);
});

Deno.test("rejects FLUSH and STAT with a nonzero offset or length", () => {
  for (const op of [Op.FLUSH, Op.STAT]) {
    assertInvalid({ ...base, op, offsetBytes: 4096, lengthBytes: 0 }, "BAD_FRAME");
    assertInvalid({ ...base, op, offsetBytes: 0, lengthBytes: 4096 }, "BAD_FRAME");
  }
});

Deno.test("encodeRequest refuses fields that do not fit their width", () => {
  const ok = { ...base, op: Op.READ };
  assert.throws(() => encodeRequest({ ...ok, op: 256 }), RangeError);
  assert.throws(() => encodeRequest({ ...ok, flags: 0x1_0000 }), RangeError);
  assert.throws(() => encodeRequest({ ...ok, requestId: -1 }), RangeError);
  assert.throws(() => encodeRequest({ ...ok, requestId: 2 ** 32 }), RangeError);
  assert.throws(() => encodeRequest({ ...ok, offsetBytes: 2 ** 53 }), RangeError);
  assert.throws(() => encodeRequest({ ...ok, offsetBytes: 1.5 }), RangeError);
  assert.throws(() => encodeRequest({ ...ok, lengthBytes: 2 ** 32 }), RangeError);
});

Deno.test("reply round trips: OK, READ data, STAT body, errors", () => {
  const empty = encodeReply({ status: 0, requestId: 42, epoch: 3, payload: new Uint8Array(0) });
  assert.equal(empty.byteLength, replyHeaderBytes);
  assert.deepEqual([...empty], [1, 0, 0, 0, 42, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(decodeReply(empty), {
    status: 0,
    requestId: 42,
    epoch: 3,
    payload: new Uint8Array(0),
  });
  assert.equal(replyError(decodeReply(empty)), null);

  const data = pattern(maxIoBytes, 11);
  const readReply = encodeReply({
    status: 0,
    requestId: 0xffff_ffff,
    epoch: 2 ** 40 + 1,
    payload: data,
  });
  const got = decodeReply(readReply);
  assert.equal(got.requestId, 0xffff_ffff);
  assert.equal(got.epoch, 2 ** 40 + 1);
  assert.deepEqual(got.payload, data);
  assert.equal(got.payload.buffer, readReply.buffer); // a view, not a copy

  // allocReply lets the server fill READ data in place.
  const inPlace = allocReply(0, 5, 6, 4096);
  inPlace.set(pattern(4096), replyHeaderBytes);
  assert.deepEqual(
    inPlace,
    encodeReply({ status: 0, requestId: 5, epoch: 6, payload: pattern(4096) }),
  );

  const stat: VolumeStat = {
    sizeBytes: 16 * 1024 ** 4,
    blockSize: blockSizeBytes,
    maxIoBytes,
    segmentBytes: 2 ** 34,
    inSyncReplicas: 2,
    replicas: 3,
  };
  const body = encodeStat(stat);
  assert.equal(body.byteLength, statBodyBytes);
  const statReply = decodeReply(encodeReply({ status: 0, requestId: 1, epoch: 1, payload: body }));
  assert.deepEqual(decodeStat(statReply.payload), stat);
  assert.throws(() => decodeStat(body.subarray(0, 31)), CairnError);
  const badStat = body.slice();
  badStat[7] = 0xff;
  assert.throws(() => decodeStat(badStat), CairnError);

  const errorFrame = encodeErrorReply("MOVED", "volume moved to node b", 77, 9);
  const errorReply = decodeReply(errorFrame);
  assert.equal(errorReply.status, ErrorCode.MOVED);
  assert.equal(errorReply.requestId, 77);
  assert.equal(errorReply.epoch, 9);
  assert.equal(new TextDecoder().decode(errorReply.payload), "volume moved to node b");
  const error = replyError(errorReply);
  assert.ok(error instanceof CairnError);
  assert.equal(error.code, "MOVED");
  assert.equal(error.retryable, true);

  const long = decodeReply(encodeErrorReply("INTERNAL", "x".repeat(5000), 0, 0));
  assert.equal(long.payload.byteLength, maxErrorMessageBytes);
  const unknown = replyError(
    decodeReply(encodeReply({ status: 200, requestId: 0, epoch: 0, payload: new Uint8Array(0) })),
  );
  assert.equal(unknown?.code, "INTERNAL");
});

Deno.test("decodeReply rejects malformed replies", () => {
  const good = encodeReply({ status: 0, requestId: 1, epoch: 1, payload: pattern(8) });
  for (let length = 0; length < replyHeaderBytes; length++) {
    assert.throws(
      () => decodeReply(good.subarray(0, length)),
      (e) => e instanceof CairnError && e.code === "BAD_FRAME",
    );
  }
  const badVersion = good.slice();
  badVersion[0] = 2;
  assert.throws(() => decodeReply(badVersion), CairnError);
  const badReserved = good.slice();
  badReserved[3] = 1;
  assert.throws(() => decodeReply(badReserved), CairnError);
  const badEpoch = good.slice();
  badEpoch[15] = 0x80;
  assert.throws(() => decodeReply(badEpoch), CairnError);
});

Deno.test("fuzz: decodeRequest never throws; accepted frames re-encode identically", () => {
  const random = mulberry32(0xc0ffee);
  const byte = () => Math.floor(random() * 256);
  let accepted = 0;

  const check = (frame: Uint8Array) => {
    const result = decodeRequest(frame); // throwing here fails the test
    if (!result.ok) {
      assert.ok(result.code in ErrorCode && result.message.length > 0);
      return;
    }
    accepted++;
    assert.deepEqual(encodeRequest(result.request), frame);
    const problem = validateRequest(result.request, volumeSizeBytes);
    if (problem !== null) assert.ok(problem.code in ErrorCode);
  };

  for (let i = 0; i < 20_000; i++) {
    const frame = new Uint8Array(Math.floor(random() * 64));
    for (let j = 0; j < frame.length; j++) frame[j] = byte();
    // Give a quarter of them a valid version and op so they get past the first checks.
    if (i % 4 === 0 && frame.length >= 2) {
      frame[0] = 1;
      frame[1] = 1 + Math.floor(random() * 6);
    }
    check(frame);
  }

  const ops = [Op.READ, Op.WRITE, Op.FLUSH, Op.TRIM, Op.WRITE_ZEROES, Op.STAT];
  for (let i = 0; i < 20_000; i++) {
    const op = ops[Math.floor(random() * ops.length)];
    const noRange = op === Op.FLUSH || op === Op.STAT;
    const lengthBytes = noRange ? 0 : blockSizeBytes * (1 + Math.floor(random() * 4));
    const frame = encodeRequest({
      op,
      flags: op === Op.WRITE || op === Op.WRITE_ZEROES ? Math.floor(random() * 2) : 0,
      requestId: Math.floor(random() * 2 ** 32),
      offsetBytes: noRange ? 0 : blockSizeBytes * Math.floor(random() * 2 ** 20),
      lengthBytes,
      payload: op === Op.WRITE ? pattern(lengthBytes, i) : undefined,
    });
    // Mutate within the header most of the time: that is where the checks are.
    const at = Math.floor(random() * (random() < 0.8 ? requestHeaderBytes : frame.length));
    frame[at] = byte();
    check(frame);
  }
  assert.ok(accepted > 1000, `fuzz accepted only ${accepted} frames`);
});

Deno.test("FLUSH may carry the term of the sender's oldest unflushed cached write", () => {
  const base = {
    op: Op.FLUSH,
    flags: 0,
    requestId: 9,
    offsetBytes: 0,
    lengthBytes: 0,
    incarnation: 1,
  };
  const request = decodeOk(encodeRequest({ ...base, payload: encodeFlushTerm(42) }));
  assert.equal(decodeFlushTerm(request.payload), 42);
  assert.equal(validateRequest(request, 1 << 20), null);
  assert.equal(decodeFlushTerm(decodeOk(encodeRequest(base)).payload), null);
  // Any other size is a bad frame, in the decoder and in validateRequest.
  assertRejected(encodeRequest({ ...base, payload: new Uint8Array(7) }), "BAD_FRAME", 9);
  assert.equal(
    validateRequest({ ...base, payload: new Uint8Array(7) }, 1 << 20)?.code,
    "BAD_FRAME",
  );
});
