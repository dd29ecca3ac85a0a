import assert from "node:assert/strict";
import {
  blockSizeBytes,
  defaultNatsMaxPayloadBytes,
  frameHeadroomBytes,
  ioLimitsFor,
  maxIoBytes,
  maxIoBytesCap,
  maxReplicaBatchBytes,
  maxReplicaBatchBytesCap,
  recommendedNatsMaxPayloadBytes,
} from "../../protocol/limits.ts";
import { encodeRequest, Op, validateRequest } from "../../protocol/frames.ts";
import { NodeWriteBatcher } from "../../actors/volume/batcher.ts";
import { EntryKind, entryWireBytes, type WriteEntry } from "../../actors/replica/wire.ts";
import { decodeRequest } from "../../protocol/frames.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

Deno.test("ioLimitsFor: the 1 MiB default keeps today's 512 KiB frames and 768 KiB batches", () => {
  for (const payload of [undefined, defaultNatsMaxPayloadBytes, 0, -1, NaN]) {
    const limits = ioLimitsFor(payload);
    assert.equal(limits.ioBytes, maxIoBytes, `max_payload ${payload}`);
    assert.equal(limits.replicaBatchBytes, maxReplicaBatchBytes, `max_payload ${payload}`);
  }
  assert.equal(ioLimitsFor(undefined).maxPayloadBytes, defaultNatsMaxPayloadBytes);
});

Deno.test("ioLimitsFor: the recommended 8 MiB gives 4 MiB frames and 6 MiB batches", () => {
  const limits = ioLimitsFor(recommendedNatsMaxPayloadBytes);
  assert.deepEqual(limits, {
    maxPayloadBytes: 8 * MiB,
    ioBytes: 4 * MiB,
    replicaBatchBytes: 6 * MiB,
  });
});

Deno.test("ioLimitsFor: powers of two with headroom, clamped, batches hold a frame", () => {
  // Exactly 2 MiB leaves no room for headers around a 2 MiB frame: 1 MiB.
  assert.equal(ioLimitsFor(2 * MiB).ioBytes, MiB);
  assert.equal(ioLimitsFor(2 * MiB + frameHeadroomBytes).ioBytes, 2 * MiB);
  assert.equal(ioLimitsFor(2 * MiB + frameHeadroomBytes - 1).ioBytes, MiB);
  // Below the default: 512 KiB is always taken (the floor), never less.
  assert.equal(ioLimitsFor(256 * KiB).ioBytes, maxIoBytes);
  // Far above: capped.
  assert.equal(ioLimitsFor(64 * MiB).ioBytes, maxIoBytesCap);
  assert.equal(ioLimitsFor(64 * MiB).replicaBatchBytes, maxReplicaBatchBytesCap);
  for (let payload = MiB; payload <= 16 * MiB; payload += 100 * KiB + 4096) {
    const { ioBytes, replicaBatchBytes } = ioLimitsFor(payload);
    assert.equal(ioBytes & (ioBytes - 1), 0, `${payload}: ${ioBytes} is a power of two`);
    assert.ok(ioBytes >= maxIoBytes && ioBytes <= maxIoBytesCap);
    // A frame and its headers fit the message; so does a read reply (16 + data).
    assert.ok(ioBytes + frameHeadroomBytes <= payload, `${payload}: frame ${ioBytes}`);
    assert.equal(replicaBatchBytes % blockSizeBytes, 0);
    assert.ok(replicaBatchBytes >= maxReplicaBatchBytes);
    assert.ok(replicaBatchBytes <= Math.max(maxReplicaBatchBytes, payload - frameHeadroomBytes));
    // One whole frame as a write entry with its request entry fits one message on its own.
    const entry: WriteEntry = {
      segment: 0,
      firstBlock: 0,
      blockCount: ioBytes / blockSizeBytes,
      kind: EntryKind.data,
      version: 1,
      data: new Uint8Array(0),
      request: { origin: "x", requestId: 1 },
    };
    assert.ok(entryWireBytes(entry) + 16 <= payload - frameHeadroomBytes / 2);
  }
});

Deno.test("validateRequest: READ/WRITE up to the owner's frame limit, TOO_LARGE above", () => {
  const base = { flags: 0, requestId: 1, offsetBytes: 0, incarnation: 0 };
  const sizeBytes = 64 * MiB;
  const read = (lengthBytes: number) =>
    (decodeRequest(encodeRequest({ ...base, op: Op.READ, lengthBytes })) as {
      request: Parameters<typeof validateRequest>[0];
    }).request;
  assert.equal(validateRequest(read(4 * MiB), sizeBytes, 4 * MiB), null);
  assert.equal(validateRequest(read(4 * MiB + 4096), sizeBytes, 4 * MiB)?.code, "TOO_LARGE");
  // Without a limit given: today's maxIoBytes.
  assert.equal(validateRequest(read(maxIoBytes), sizeBytes), null);
  assert.equal(validateRequest(read(MiB), sizeBytes)?.code, "TOO_LARGE");
});

Deno.test("NodeWriteBatcher: batches up to the limit it is given now", async () => {
  const sent: number[] = [];
  let limitBytes = MiB;
  const batcher = new NodeWriteBatcher(
    (_epoch, entries) => {
      sent.push(entries.reduce((n, e) => n + e.blockCount, 0));
      return Promise.resolve();
    },
    () => 1,
    () => limitBytes,
  );
  const entry = (i: number): WriteEntry => ({
    segment: 0,
    firstBlock: i * 64,
    blockCount: 64, // 256 KiB
    kind: EntryKind.data,
    version: i + 1,
    data: new Uint8Array(256 * KiB),
  });
  // 16 entries of 256 KiB (+ headers): 3 per 1 MiB batch, with 2 batches in flight at once.
  await Promise.all(Array.from({ length: 16 }, (_, i) => batcher.enqueue(entry(i))));
  assert.ok(sent.every((blocks) => blocks <= 3 * 64), `batches ${sent}`);
  sent.length = 0;
  limitBytes = 6 * MiB;
  await Promise.all(Array.from({ length: 16 }, (_, i) => batcher.enqueue(entry(i))));
  assert.ok(sent.some((blocks) => blocks > 3 * 64), `batches ${sent}`);
  assert.ok(sent.every((blocks) => blocks <= 23 * 64), `batches ${sent}`);
  // One entry larger than the limit still goes, alone.
  sent.length = 0;
  limitBytes = 128 * KiB;
  await batcher.enqueue(entry(0));
  assert.deepEqual(sent, [64]);
});
