/**
 * MULTI (docs/PROTOCOL.md): the envelope codec never throws on bad input and refuses what is
 * malformed, and the client's FrameCoalescer sends the frames of one event-loop turn as one
 * MULTI, matches replies in order, and falls back to single frames for an owner without MULTI.
 */
import assert from "node:assert/strict";
import {
  decodeMulti,
  decodeMultiReplyPart,
  decodeReply,
  decodeRequest,
  encodeErrorReply,
  encodeMulti,
  encodeMultiReplyPart,
  encodeReply,
  encodeRequest,
  isMulti,
  maxMultiFrames,
  Op,
} from "../../protocol/frames.ts";
import { FrameCoalescer, maxCoalescedFrameBytes } from "../../protocol/frame_coalescer.ts";
import type { RequestMux } from "../../protocol/request_mux.ts";

const write = (requestId: number, lengthBytes = 4096) =>
  encodeRequest({
    op: Op.WRITE,
    flags: 0,
    requestId,
    offsetBytes: 0,
    lengthBytes,
    payload: new Uint8Array(lengthBytes).fill(requestId & 0xff),
  });

Deno.test("MULTI round trips its members and their replies in order", () => {
  const members = [
    write(1),
    write(2, 8192),
    encodeRequest({ ...frameFields(Op.FLUSH), requestId: 3 }),
  ];
  const envelope = encodeMulti(members);
  assert.ok(isMulti(envelope));
  assert.ok(!isMulti(members[0]));
  const decoded = decodeMulti(envelope);
  assert.ok(Array.isArray(decoded));
  assert.deepEqual(decoded, members);
  const replies = [1, 2, 3].map((requestId) =>
    encodeReply({ status: 0, requestId, epoch: 9, payload: new Uint8Array(0) })
  );
  // Answered in two parts, out of order.
  const first = decodeMultiReplyPart(
    encodeMultiReplyPart([{ index: 2, frame: replies[2] }, { index: 0, frame: replies[0] }], 9),
    3,
  )!;
  assert.deepEqual(first.map((p) => [p.index, decodeReply(p.frame).requestId]), [[2, 3], [0, 1]]);
  const second = decodeMultiReplyPart(
    encodeMultiReplyPart([{ index: 1, frame: replies[1] }], 9),
    3,
  )!;
  assert.deepEqual(second.map((p) => p.index), [1]);
  // A plain error reply (an owner without MULTI) is not a part.
  assert.equal(
    decodeMultiReplyPart(encodeErrorReply("UNKNOWN_OP", "unknown op 7", 0, 9), 3),
    null,
  );
  // A part naming a member the MULTI did not have, or cut short, is refused.
  assert.throws(
    () => decodeMultiReplyPart(encodeMultiReplyPart([{ index: 3, frame: replies[0] }], 9), 3),
    /member 3/,
  );
  const part = encodeMultiReplyPart([{ index: 0, frame: replies[0] }], 9);
  for (let cut = 17; cut < part.byteLength; cut++) {
    assert.throws(() => decodeMultiReplyPart(part.subarray(0, cut), 3));
  }
  // A single-frame decoder refuses a MULTI as an unknown op (what an older owner answers).
  const asSingle = decodeRequest(envelope);
  assert.ok(!asSingle.ok && asSingle.code === "UNKNOWN_OP");
});

function frameFields(op: number) {
  return { op, flags: 0, offsetBytes: 0, lengthBytes: 0 };
}

Deno.test("malformed MULTI envelopes are refused without throwing", () => {
  const envelope = encodeMulti([write(1), write(2)]);
  // Every truncation and every extension is refused (or not a MULTI at all).
  for (let cut = 0; cut < envelope.byteLength; cut++) {
    const result = decodeMulti(envelope.subarray(0, cut));
    assert.ok(!Array.isArray(result), `a MULTI cut to ${cut} bytes decoded`);
  }
  const longer = new Uint8Array(envelope.byteLength + 1);
  longer.set(envelope);
  assert.ok(!Array.isArray(decodeMulti(longer)));
  const withCount = (count: number) => {
    const copy = envelope.slice();
    new DataView(copy.buffer).setUint32(16, count, true);
    return decodeMulti(copy);
  };
  for (const count of [0, 1, 3, maxMultiFrames + 1, 0xffff_ffff]) {
    const result = withCount(count);
    assert.ok(!Array.isArray(result) && result.code === "BAD_FRAME", `count ${count}`);
  }
  const nested = decodeMulti(encodeMulti([envelope]));
  assert.ok(!Array.isArray(nested) && /may not carry a MULTI/.test(nested.message));
  const flagged = envelope.slice();
  flagged[2] = 1;
  assert.ok(!Array.isArray(decodeMulti(flagged)));
  // Random bytes behind a MULTI header never throw.
  let seed = 7;
  for (let i = 0; i < 2000; i++) {
    const junk = envelope.slice();
    for (let j = 24; j < junk.byteLength; j += 1 + (seed % 97)) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      junk[j] = seed & 0xff;
    }
    decodeMulti(junk);
  }
  assert.throws(() => encodeMulti([]), RangeError);
});

/** A stand-in RequestMux that records what was sent and answers like an owner. */
function stubMux(knowsMulti: boolean) {
  const sent: Uint8Array[] = [];
  const answer = (frame: Uint8Array): Uint8Array => {
    const decoded = decodeRequest(frame);
    if (!decoded.ok) return encodeErrorReply(decoded.code, decoded.message, decoded.requestId, 1);
    return encodeReply({
      status: 0,
      requestId: decoded.request.requestId,
      epoch: 1,
      payload: new Uint8Array(0),
    });
  };
  let fail: Error | null = null;
  const request = (_subject: string, frame: Uint8Array) => {
    sent.push(frame);
    if (fail) return Promise.reject(fail);
    return Promise.resolve(answer(frame));
  };
  const mux = {
    request,
    // Answers each member in a part of its own, last first.
    requestParts: async (
      subject: string,
      frame: Uint8Array,
      _timeoutMs: number,
      onPart: (part: Uint8Array) => boolean,
    ) => {
      if (!knowsMulti) {
        onPart(await request(subject, frame));
        return;
      }
      sent.push(frame);
      if (fail) throw fail;
      const members = decodeMulti(frame) as Uint8Array[];
      for (let index = members.length - 1; index >= 0; index--) {
        const part = encodeMultiReplyPart([{ index, frame: answer(members[index]) }], 1);
        if (onPart(part)) return;
      }
      throw new Error("onPart never said answered");
    },
  } as unknown as RequestMux;
  return { mux, sent, failWith: (err: Error | null) => (fail = err) };
}

Deno.test("writes sent in one turn go as one MULTI; each caller gets its own reply", async () => {
  const { mux, sent } = stubMux(true);
  const coalescer = new FrameCoalescer(mux, "s");
  const replies = await Promise.all(
    [1, 2, 3, 4, 5].map((id) => coalescer.request(write(id), 1000)),
  );
  assert.deepEqual(replies.map((r) => decodeReply(r).requestId), [1, 2, 3, 4, 5]);
  assert.equal(sent.length, 1, "one NATS message");
  assert.ok(isMulti(sent[0]));
  assert.deepEqual(coalescer.stats, { multis: 1, framesInMultis: 5 });
  // One frame alone, and a large frame, go as they are.
  await coalescer.request(write(6), 1000);
  await coalescer.request(write(7, maxCoalescedFrameBytes), 1000);
  assert.equal(sent.length, 3);
  assert.ok(!isMulti(sent[1]) && !isMulti(sent[2]));
  // Reads go alone, however many at once.
  const read = (requestId: number) =>
    encodeRequest({ op: Op.READ, flags: 0, requestId, offsetBytes: 0, lengthBytes: 4096 });
  await Promise.all([8, 9, 10].map((id) => coalescer.request(read(id), 1000)));
  assert.equal(sent.length, 6);
  assert.ok(sent.slice(3).every((f) => !isMulti(f)));
});

Deno.test("an owner without MULTI: the frames go again one by one, and from then on alone", async () => {
  const { mux, sent } = stubMux(false);
  const coalescer = new FrameCoalescer(mux, "s");
  const replies = await Promise.all([1, 2, 3].map((id) => coalescer.request(write(id), 1000)));
  assert.deepEqual(replies.map((r) => decodeReply(r).status), [0, 0, 0]);
  assert.deepEqual(replies.map((r) => decodeReply(r).requestId), [1, 2, 3]);
  assert.equal(sent.length, 4, "the MULTI, then each frame alone");
  await Promise.all([4, 5].map((id) => coalescer.request(write(id), 1000)));
  assert.equal(sent.length, 6);
  assert.ok(sent.slice(4).every((f) => !isMulti(f)));
});

Deno.test("a MULTI that fails (timeout, no responders) fails every member with the same error", async () => {
  const { mux, failWith } = stubMux(true);
  const coalescer = new FrameCoalescer(mux, "s");
  const timeout = new Error("timeout: no reply");
  timeout.name = "TimeoutError";
  failWith(timeout);
  const results = await Promise.allSettled([1, 2, 3].map((id) => coalescer.request(write(id), 5)));
  for (const r of results) {
    assert.equal(r.status, "rejected");
    assert.equal((r as PromiseRejectedResult).reason, timeout);
  }
});
