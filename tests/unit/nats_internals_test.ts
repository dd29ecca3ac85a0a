/**
 * protocol/nats_internals.ts: the parts of nats.js it reaches into are still there (an
 * upgrade that moves them fails here, not silently in a benchmark), a message published in
 * parts arrives as the bytes joined, and a message split over many socket reads is gathered
 * intact in one buffer of its size. Against a real nats-server where the wire matters.
 */
import assert from "node:assert/strict";
import type { NatsConnection } from "@nats-io/nats-core";
import { Parser } from "@nats-io/nats-core/internal";
import { startNatsServer } from "../../server/nats_server.ts";
import { connectNats } from "../../protocol/nats_auth.ts";
import {
  canGatherPublish,
  presizeReceiveBuffers,
  publishBody,
} from "../../protocol/nats_internals.ts";
import { joinBody } from "../../actors/ports.ts";
import { mulberry32 } from "../harness/random.ts";

const MiB = 1024 * 1024;

function randomBytes(random: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (random() * 256) | 0;
  return out;
}

async function withServer(fn: (nc: NatsConnection) => Promise<void>): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "cairn-nats-internals-" });
  const nats = await startNatsServer({ dataDir, maxPayloadBytes: 8 * MiB });
  const nc = await connectNats({ servers: nats.url });
  try {
    await fn(nc);
  } finally {
    await nc.close();
    await nats.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
}

interface ParserUnderTest {
  parse(buf: Uint8Array): void;
  msgBuf?: { capacity: number; length: number };
}

Deno.test("a message split over many reads is gathered in one buffer of its size", () => {
  assert.equal(
    presizeReceiveBuffers(),
    true,
    "nats.js's parser is not what nats_internals.ts expects",
  );
  const delivered: Uint8Array[] = [];
  const parser = new Parser({
    push: (event: unknown) => {
      const data = (event as { data?: Uint8Array }).data;
      if (data) delivered.push(data.slice());
    },
  }) as unknown as ParserUnderTest;
  const random = mulberry32(7);
  for (const sizeBytes of [1, 1000, 65_536, MiB + 13, 3 * MiB]) {
    const payload = randomBytes(random, sizeBytes);
    const wire = joinBody([
      new TextEncoder().encode(`MSG cairn.test 1 _INBOX.x.1 ${sizeBytes}\r\n`),
      payload,
      new TextEncoder().encode("\r\n"),
    ]);
    const readBytes = 64 * 1024 - 7;
    let sawPresized = false;
    for (let at = 0; at < wire.length; at += readBytes) {
      parser.parse(wire.subarray(at, Math.min(wire.length, at + readBytes)));
      if (parser.msgBuf && parser.msgBuf.length < sizeBytes) {
        // Gathering: the buffer already has room for the whole message (no doubling).
        assert.equal(parser.msgBuf.capacity, sizeBytes);
        sawPresized = true;
      }
    }
    assert.equal(sawPresized, wire.length > readBytes, `size ${sizeBytes}`);
    assert.deepEqual(delivered.pop(), payload, `size ${sizeBytes}`);
  }
});

Deno.test("a message published in parts arrives whole, with its reply subject", async () => {
  await withServer(async (nc) => {
    assert.equal(canGatherPublish(nc), true, "nats.js's publish internals moved");
    const random = mulberry32(11);
    const received: { data: Uint8Array; reply?: string }[] = [];
    const sub = nc.subscribe("cairn.test.parts", {
      callback: (_err, msg) => {
        received.push({ data: new Uint8Array(msg.data), reply: msg.reply });
      },
    });
    const bodies: Uint8Array[][] = [
      [new Uint8Array([1, 2, 3])],
      [new Uint8Array(0), new Uint8Array([4]), new Uint8Array(0)],
      [randomBytes(random, 40), randomBytes(random, 4 * MiB), randomBytes(random, 24)],
      Array.from({ length: 70 }, (_, i) => randomBytes(random, i % 2 ? 4096 : 24)),
    ];
    for (const [i, parts] of bodies.entries()) {
      publishBody(nc, "cairn.test.parts", parts, i % 2 ? `_INBOX.test.${i}` : undefined);
    }
    await nc.flush();
    for (let waited = 0; received.length < bodies.length && waited < 100; waited++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    sub.unsubscribe();
    assert.equal(received.length, bodies.length);
    for (const [i, parts] of bodies.entries()) {
      assert.deepEqual(received[i].data, joinBody(parts), `message ${i}`);
      assert.equal(received[i].reply ?? "", i % 2 ? `_INBOX.test.${i}` : "");
    }
  });
});

Deno.test("a message in parts over max_payload, or on a closed connection, is refused", async () => {
  await withServer(async (nc) => {
    const tooLarge = [new Uint8Array(16), new Uint8Array(8 * MiB)];
    assert.throws(() => publishBody(nc, "cairn.test.parts", tooLarge), /max_payload/);
    assert.throws(() => publishBody(nc, "bad subject", [new Uint8Array(1), new Uint8Array(1)]));
    await nc.close();
    assert.throws(() =>
      publishBody(nc, "cairn.test.parts", [new Uint8Array(1), new Uint8Array(1)])
    );
  });
});
