/**
 * Frames sized to the NATS server's max_payload (protocol/limits.ts ioLimitsFor), with real
 * nats-server and node processes: 4 MiB IO in one frame at the recommended 8 MiB, split into
 * 512 KiB frames at nats-server's 1 MiB default, and a client falling back to 512 KiB frames
 * when an owner refuses a larger one (an owner on a server with a smaller max_payload).
 */
import assert from "node:assert/strict";
import { TestCluster } from "../harness/cluster.ts";
import { startNatsServer } from "../../server/nats_server.ts";
import { connectCluster } from "../../client/client.ts";
import { Volume } from "../../client/volume.ts";
import {
  decodeRequest,
  encodeErrorReply,
  encodeReply,
  encodeStat,
  Op,
} from "../../protocol/frames.ts";
import { subjects } from "../../protocol/subjects.ts";
import {
  defaultNatsMaxPayloadBytes,
  maxIoBytes,
  recommendedNatsMaxPayloadBytes,
} from "../../protocol/limits.ts";
import { mulberry32 } from "../harness/random.ts";

const MiB = 1024 * 1024;
const segmentBytes = 8 * MiB;

function randomBytes(seed: number, length: number): Uint8Array {
  const random = mulberry32(seed);
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (random() * 256) | 0;
  return out;
}

/** Writes 4 MiB (across a segment boundary too) and 8 MiB, reads them back; frames per call. */
async function bigIo(cluster: TestCluster, name: string) {
  const client = await cluster.client();
  await client.createVolume({ name, sizeBytes: 64 * MiB, segmentBytes });
  const volume = await client.openVolume(name);
  const frames = async (fn: () => Promise<unknown>) => {
    const before = volume.stats.requests;
    await fn();
    return volume.stats.requests - before;
  };
  const four = randomBytes(1, 4 * MiB);
  const straddle = randomBytes(2, 4 * MiB);
  const eight = randomBytes(3, 8 * MiB);
  const result = {
    frameBytes: volume.frameBytes,
    write4: await frames(() => volume.write(0, four)),
    writeStraddle: await frames(() => volume.write(segmentBytes - 2 * MiB, straddle)),
    write8: await frames(() => volume.write(32 * MiB, eight, { durable: false })),
    read4: 0,
    read8: 0,
  };
  await volume.flush();
  let back4: Uint8Array = new Uint8Array(0);
  result.read4 = await frames(async () => back4 = await volume.read(0, 4 * MiB));
  assert.ok(back4.every((b, i) => b === four[i]), "4 MiB read back");
  assert.deepEqual(await volume.read(segmentBytes - 2 * MiB, 4 * MiB), straddle);
  let back8: Uint8Array = new Uint8Array(0);
  result.read8 = await frames(async () => back8 = await volume.read(32 * MiB, 8 * MiB));
  assert.ok(back8.every((b, i) => b === eight[i]), "8 MiB read back");
  const report = await client.verifyVolume(name);
  assert.equal(report.ok, true, `verify: ${JSON.stringify(report).slice(0, 500)}`);
  return result;
}

Deno.test({
  name: "max_payload 8 MiB: 4 MiB writes and reads are one frame each",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await TestCluster.start({
      nodes: 3,
      natsMaxPayloadBytes: recommendedNatsMaxPayloadBytes,
    });
    try {
      const got = await bigIo(cluster, "big");
      assert.deepEqual(got, {
        frameBytes: 4 * MiB,
        write4: 1,
        writeStraddle: 1,
        write8: 2,
        read4: 1,
        read8: 2,
      });
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "max_payload 1 MiB (nats-server's default): 4 MiB IO still works, in 512 KiB frames",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await TestCluster.start({
      nodes: 3,
      natsMaxPayloadBytes: defaultNatsMaxPayloadBytes,
    });
    try {
      const got = await bigIo(cluster, "small");
      assert.deepEqual(got, {
        frameBytes: maxIoBytes,
        write4: 8,
        writeStraddle: 8,
        write8: 16,
        read4: 8,
        read8: 16,
      });
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "an owner that refuses a large frame TOO_LARGE: the client resends in 512 KiB frames",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "cairn-max-payload-" });
    const nats = await startNatsServer({
      dataDir: `${dir}/nats`,
      maxPayloadBytes: recommendedNatsMaxPayloadBytes,
    });
    const client = await connectCluster({ servers: nats.url });
    try {
      // A stand-in owner: its STAT says 4 MiB (as an owner on an 8 MiB server would), but it
      // takes only 512 KiB frames (as the owner that replaced it on a 1 MiB server would).
      const sizeBytes = 16 * MiB;
      const disk = new Uint8Array(sizeBytes);
      const seen: { op: number; lengthBytes: number; status: number }[] = [];
      const sub = client.nc.subscribe(subjects.volumeIo("fake"), {
        callback: (_err, msg) => {
          const decoded = decodeRequest(msg.data);
          if (!decoded.ok) throw new Error(decoded.message);
          const { op, requestId, offsetBytes, lengthBytes, payload } = decoded.request;
          const ok = (body: Uint8Array = new Uint8Array(0)) =>
            encodeReply({ status: 0, requestId, epoch: 1, payload: body });
          let reply: Uint8Array;
          if (op === Op.STAT) {
            reply = ok(encodeStat({
              sizeBytes,
              blockSize: 4096,
              maxIoBytes: 4 * MiB,
              segmentBytes: 8 * MiB,
              inSyncReplicas: 3,
              replicas: 3,
            }));
          } else if (lengthBytes > maxIoBytes) {
            reply = encodeErrorReply("TOO_LARGE", "above 524288", requestId, 1);
          } else if (op === Op.WRITE) {
            disk.set(payload, offsetBytes);
            reply = ok();
          } else if (op === Op.READ) {
            reply = ok(disk.slice(offsetBytes, offsetBytes + lengthBytes));
          } else {
            reply = ok();
          }
          seen.push({ op, lengthBytes, status: reply[1] });
          msg.respond(reply);
        },
      });
      const volume = await Volume.open(client.mux, "fake", 0);
      assert.equal(volume.frameBytes, 4 * MiB, "frames as large as the owner's STAT says");
      const data = randomBytes(9, 5 * MiB);
      await volume.write(MiB, data); // no error reaches the caller
      assert.deepEqual(disk.subarray(MiB, 6 * MiB), data);
      const writes = seen.filter((s) => s.op === Op.WRITE);
      // First a 4 MiB frame and the 1 MiB rest (both refused), then 512 KiB frames only.
      assert.deepEqual(
        writes.filter((s) => s.status !== 0).map((s) => s.lengthBytes).sort(),
        [1 * MiB, 4 * MiB].sort(),
      );
      assert.ok(writes.filter((s) => s.status === 0).every((s) => s.lengthBytes === maxIoBytes));
      assert.equal(writes.filter((s) => s.status === 0).length, 10);
      assert.equal(volume.frameBytes, maxIoBytes, "the volume keeps 512 KiB frames");
      seen.length = 0;
      assert.deepEqual(await volume.read(MiB, 5 * MiB), data);
      assert.ok(seen.every((s) => s.status === 0 && s.lengthBytes <= maxIoBytes));
      assert.equal(seen.length, 10);
      sub.unsubscribe();
    } finally {
      await client.close();
      await nats.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
