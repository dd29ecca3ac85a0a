/**
 * No stale read from a deposed owner. The owner is paused; a successor takes the volume over
 * (it does not wait for the paused node's fence) and acknowledges a newer write; the old
 * owner resumes and is asked to read before it has heard of any of this. Its own replica
 * still holds the older value and has not been fenced, so only the read lease stops it from
 * answering with it: the lease lapsed during the pause, renewing it is refused for the old
 * term, and the read answers MOVED. Red without the lease check (the old value comes back).
 * Real NodeRuntimes on the simulator's ports (sim/cluster.ts).
 */
import assert from "node:assert/strict";
import { SimCluster } from "../../sim/cluster.ts";
import { MemoryMetadata } from "../../actors/metadata_memory.ts";
import { encodeJson } from "../../protocol/control.ts";
import { subjects } from "../../protocol/subjects.ts";
import { type IoRequest, Op } from "../../protocol/frames.ts";
import type { ControlReply, VolumeInfo } from "../../protocol/schemas.ts";
import type { VolumeActor } from "../../actors/volume/actor.ts";

const blockBytes = 4096;

for (const seed of [1, 2, 3]) {
  Deno.test(`a resumed, deposed owner answers no read with data older than an acknowledged write (seed ${seed})`, async () => {
    const cluster = new SimCluster({ seed, nodes: 3 });
    const { scheduler, network } = cluster;
    for (const id of cluster.nodes.keys()) scheduler.schedule(0, () => void cluster.start(id), id);
    await scheduler.runFor(200);
    const metadata = new MemoryMetadata(cluster.kv);
    const drive = <T>(promise: Promise<T>) => scheduler.drive(promise);
    const admin = network.endpoint("admin");
    const info = await drive((async () => {
      const raw = await admin.request(
        subjects.control("volume.create"),
        encodeJson({
          name: "v",
          sizeBytes: 64 * 1024,
          segmentBytes: 64 * 1024,
          replicas: 3,
          readPolicy: "local",
        }),
        30_000,
      );
      const reply = JSON.parse(new TextDecoder().decode(raw)) as ControlReply<VolumeInfo>;
      if (!reply.ok) throw new Error(reply.error.message);
      return reply.result;
    })());
    const request = (op: number, fill?: number): IoRequest => ({
      op,
      flags: 0,
      requestId: 1,
      offsetBytes: 0,
      lengthBytes: blockBytes,
      incarnation: info.incarnation,
      payload: fill === undefined ? new Uint8Array(0) : new Uint8Array(blockBytes).fill(fill),
    });
    const ownerActor = async (not = ""): Promise<[string, VolumeActor]> => {
      for (let i = 0; i < 300; i++) {
        const owner = (await drive(metadata.getLayout("v")))!.value.owner;
        const actor = cluster.nodes.get(owner)?.runtime?.localVolume("v");
        if (actor && owner !== not) return [owner, actor];
        await scheduler.runFor(100);
      }
      throw new Error("no owner serves the volume");
    };

    const [first, firstActor] = await ownerActor();
    await drive(firstActor.serve(request(Op.WRITE, 1)));
    assert.equal((await drive(firstActor.serve(request(Op.READ))))[0], 1);

    cluster.pause(first);
    const [second, secondActor] = await ownerActor(first);
    assert.notEqual(second, first, "a successor took the paused owner's volume");
    await drive(secondActor.serve(request(Op.WRITE, 2)));

    // The old owner wakes up and a read reaches it before anything else it was sent.
    cluster.resume(first);
    const read = firstActor.serve(request(Op.READ));
    let answer: Uint8Array | null = null;
    let refusal = "";
    try {
      answer = await drive(read);
    } catch (err) {
      refusal = (err as Error).message;
    }
    if (answer) assert.equal(answer[0], 2, "a read the old owner answers is not stale");
    else assert.match(refusal, /MOVED/);
    // And the successor serves the acknowledged write.
    assert.equal((await drive(secondActor.serve(request(Op.READ))))[0], 2);
  });
}
