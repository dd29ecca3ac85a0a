/**
 * The client library's side of CACHE_LOST (docs/PROTOCOL.md, FLUSH): a handle sends the owner
 * term of its oldest unflushed cached write with FLUSH, forgets it once FLUSH answered, and
 * surfaces CACHE_LOST as an error. Against a stand-in owner (no NATS): the mux is a stub.
 */
import assert from "node:assert/strict";
import { Volume } from "../../client/volume.ts";
import type { RequestMux } from "../../protocol/request_mux.ts";
import {
  decodeFlushTerm,
  decodeRequest,
  encodeErrorReply,
  encodeReply,
  encodeStat,
  Op,
} from "../../protocol/frames.ts";
import { CairnError } from "../../protocol/errors.ts";

Deno.test("client: FLUSH carries the oldest unflushed cached write's term; CACHE_LOST is an error", async () => {
  let term = 3;
  /** The term each FLUSH carried (null: none), and whether the owner reports a loss. */
  const flushTerms: (number | null)[] = [];
  let lossBeforeTerm = 0;
  let nextId = 1;
  const mux = {
    nextRequestId: () => nextId++,
    maxPayloadBytes: () => undefined,
    request: (_subject: string, frame: Uint8Array) => {
      const decoded = decodeRequest(frame);
      if (!decoded.ok) throw new Error(decoded.message);
      const { op, requestId, payload } = decoded.request;
      const ok = (body: Uint8Array = new Uint8Array(0)) =>
        Promise.resolve(encodeReply({ status: 0, requestId, epoch: term, payload: body }));
      if (op === Op.STAT) {
        return ok(
          encodeStat({
            sizeBytes: 1 << 20,
            blockSize: 4096,
            maxIoBytes: 512 * 1024,
            segmentBytes: 1 << 20,
            inSyncReplicas: 3,
            replicas: 3,
          }),
        );
      }
      if (op === Op.FLUSH) {
        const carried = decodeFlushTerm(payload);
        flushTerms.push(carried);
        if (carried !== null && carried < lossBeforeTerm) {
          return Promise.resolve(
            encodeErrorReply("CACHE_LOST", "lost in a power loss", requestId, term),
          );
        }
      }
      return ok();
    },
  } as unknown as RequestMux;
  const volume = await Volume.open(mux, "v", 1);
  const block = new Uint8Array(4096).fill(1);

  await volume.flush(); // nothing cached yet: no term
  await volume.write(0, block); // durable: not tracked
  await volume.write(0, block, { durable: false });
  term = 4;
  await volume.write(4096, block, { durable: false });
  await volume.flush(); // the oldest is term 3's
  await volume.flush(); // covered: none again
  assert.deepEqual(flushTerms, [null, 3, null]);

  // A power loss of every copy before term 5 took over: the cached write of term 4 is reported.
  await volume.write(0, block, { durable: false });
  term = 5;
  lossBeforeTerm = 5;
  await assert.rejects(
    volume.flush(),
    (err) => err instanceof CairnError && err.code === "CACHE_LOST",
  );
  // Reported once: the next FLUSH covers only later writes.
  await volume.flush();
  assert.deepEqual(flushTerms, [null, 3, null, 4, null]);
  await volume.close();
});
