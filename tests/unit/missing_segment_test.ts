/**
 * A node that starts with a missing or unreadable segment file (bad header checksum, bad
 * term record) says so, never serves that replica, and gets it rebuilt: the owner marks it
 * stale (the node's fence leaves it out, its reads and writes are refused), the node makes a
 * fresh file once the layout shows it stale, and the owner's catch-up copies every block in.
 * Real NodeRuntimes on the simulator's ports (sim/cluster.ts).
 */
import assert from "node:assert/strict";
import { SimCluster } from "../../sim/cluster.ts";
import { MemoryMetadata } from "../../actors/metadata_memory.ts";
import { planSegmentFiles, segmentFileName } from "../../actors/replica/host.ts";
import { termRecordOffset } from "../../actors/replica/segment_file.ts";
import { decodeReply } from "../../actors/replica/wire.ts";
import { encodeJson } from "../../protocol/control.ts";
import { subjects } from "../../protocol/subjects.ts";
import { Op } from "../../protocol/frames.ts";
import type { ControlReply, VolumeInfo, VolumeLayout } from "../../protocol/schemas.ts";

const segmentBytes = 64 * 1024;
const segments = 2;
const blockBytes = 4096;

interface Harness {
  cluster: SimCluster;
  info: VolumeInfo;
  layout(): Promise<VolumeLayout>;
  /** Runs the simulation until the promise settles. */
  drive<T>(promise: Promise<T>, maxMs?: number): Promise<T>;
  io(
    op: number,
    offsetBytes: number,
    lengthBytes: number,
    payload?: Uint8Array,
  ): Promise<Uint8Array>;
}

async function harness(seed: number, readPolicy: string): Promise<Harness> {
  const cluster = new SimCluster({ seed, nodes: 3 });
  const { scheduler, network } = cluster;
  for (const id of cluster.nodes.keys()) scheduler.schedule(0, () => void cluster.start(id), id);
  await scheduler.runFor(200);
  const metadata = new MemoryMetadata(cluster.kv);
  const drive = <T>(promise: Promise<T>, maxMs?: number) => scheduler.drive(promise, maxMs);
  const admin = network.endpoint("admin");
  const created = (async () => {
    const raw = await admin.request(
      subjects.control("volume.create"),
      encodeJson({
        name: "v",
        sizeBytes: segments * segmentBytes,
        segmentBytes,
        replicas: 3,
        readPolicy,
      }),
      30_000,
    );
    const reply = JSON.parse(new TextDecoder().decode(raw)) as ControlReply<VolumeInfo>;
    if (!reply.ok) throw new Error(reply.error.message);
    return reply.result;
  })();
  const info = await drive(created);
  const layout = async () => (await metadata.getLayout("v"))!.value;
  const owner = () => cluster.nodes.get(layoutNow?.owner ?? "")?.runtime?.localVolume("v");
  let layoutNow: VolumeLayout | null = null;
  const io = async (op: number, offsetBytes: number, lengthBytes: number, payload?: Uint8Array) => {
    for (let attempt = 0; attempt < 200; attempt++) {
      layoutNow = await drive(layout());
      const actor = owner();
      if (actor) {
        try {
          return await drive(actor.serve({
            op,
            flags: 0,
            requestId: 1,
            offsetBytes,
            lengthBytes,
            incarnation: info.incarnation,
            payload: payload ?? new Uint8Array(0),
          }));
        } catch (err) {
          if (!/MOVED|BUSY/.test((err as Error).message)) throw err;
        }
      }
      await scheduler.runFor(100);
    }
    throw new Error("no owner served the volume");
  };
  return { cluster, info, layout: () => drive(layout()), drive, io };
}

const volumeBytes = segments * segmentBytes;

function pattern(round: number): Uint8Array {
  const data = new Uint8Array(volumeBytes);
  for (let i = 0; i < data.length; i++) data[i] = (i * 13 + round * 101 + (i >> 12)) & 0xff;
  return data;
}

const stateOf = (layout: VolumeLayout, segment: number, node: string) =>
  layout.segments[segment].replicas.find((r) => r.node === node)?.state;

type Damage = "missing" | "bad header" | "bad term record";

/**
 * How the owner meets the lost replica while serving: reads (round-robin, so some go to
 * it) or writes to its segment (reads `local`, so none go to it).
 */
type Trigger = "reads" | "writes";

async function lostReplicaIsRebuilt(
  seed: number,
  victimIsOwner: boolean,
  damage: Damage,
  trigger: Trigger,
) {
  const h = await harness(seed, trigger === "reads" ? "round-robin" : "local");
  const { cluster } = h;
  let data = pattern(seed);
  await h.io(Op.WRITE, 0, volumeBytes, data);
  const before = await h.layout();
  const victim = victimIsOwner
    ? before.owner
    : before.segments[1].replicas.map((r) => r.node).find((n) => n !== before.owner)!;
  assert.equal(stateOf(before, 1, victim), "in-sync");

  // The victim stops (kill -9), and its copy of segment 1 is lost or damaged meanwhile.
  cluster.kill(victim);
  const disk = cluster.nodes.get(victim)!.disk;
  const file = `/${victim}/segments/${h.info.id}/${segmentFileName(1)}`;
  if (damage === "missing") await disk.remove(file);
  else if (damage === "bad header") disk.corrupt(file, 200, 1);
  else disk.corrupt(file, termRecordOffset + 8, 1);
  cluster.start = ((start) => async (id: string) => {
    await start(id);
    const runtime = cluster.nodes.get(id)!.runtime;
    if (id !== victim || !runtime) return;
    // Record every read the victim answers OK for segment 1 (it must answer none until
    // it is in sync again).
    const handle = runtime.host.handle.bind(runtime.host);
    runtime.host.handle = async (volume, op, body) => {
      const reply = await handle(volume, op, body);
      if (op === "read" && new DataView(body.buffer, body.byteOffset).getUint32(4, true) === 1) {
        if (decodeReply(reply).status === 0 && !rebuilt) servedWhileLost++;
      }
      return reply;
    };
  })(cluster.start.bind(cluster));
  let rebuilt = false;
  let servedWhileLost = 0;
  cluster.scheduler.schedule(0, () => void cluster.start(victim));
  await cluster.scheduler.runFor(500);
  const host = cluster.nodes.get(victim)!.runtime!.host;
  assert.ok(!host.segmentsOf(h.info.id).includes(1), "the lost replica is not opened");
  assert.ok(host.segmentsOf(h.info.id).includes(0), "the good one is");

  // Clients read everything over and over (round-robin reaches every in-sync replica) and
  // always get the written bytes; the owner marks the lost replica stale.
  let sawStale = false;
  let goodMarkedStale = false;
  for (let round = 0; round < 40 && !rebuilt; round++) {
    if (trigger === "writes") {
      data = pattern(seed + round + 1);
      await h.io(Op.WRITE, 0, volumeBytes, data);
    }
    const read = await h.io(Op.READ, 0, volumeBytes);
    assert.deepEqual(read, data, `round ${round}: reads return the written bytes`);
    const layout = await h.layout();
    if (stateOf(layout, 1, victim) !== "in-sync") sawStale = true;
    if (stateOf(layout, 0, victim) !== "in-sync") goodMarkedStale = true;
    if (sawStale && stateOf(layout, 1, victim) === "in-sync") rebuilt = true;
    await cluster.scheduler.runFor(1000);
  }
  assert.ok(sawStale, "the lost replica was marked stale");
  assert.ok(rebuilt, "and rebuilt to in-sync");
  assert.equal(servedWhileLost, 0, "the lost replica was never read from meanwhile");
  if (victimIsOwner) {
    // Its takeover fenced every replica (restarting the write streams): only the lost one
    // may leave in-sync. (A restarted replica node's writes meet a broken write stream, so
    // there segment 0 may go stale too and is caught up like any replica that restarted.)
    assert.ok(!goodMarkedStale, "only the lost replica left in-sync; the node's good one stayed");
  }

  // The rebuilt file holds the right bytes and versions, like another in-sync replica.
  const layout = await h.layout();
  const other = layout.segments[1].replicas.find((r) => r.node !== victim)!.node;
  const read = (node: string) =>
    h.drive(cluster.nodes.get(node)!.runtime!.host.readBlocks(h.info.id, {
      segment: 1,
      epoch: layout.term,
      firstBlock: 0,
      blockCount: segmentBytes / blockBytes,
    }));
  const rebuiltCopy = await read(victim);
  const good = await read(other);
  assert.deepEqual(rebuiltCopy.data, data.subarray(segmentBytes), "the rebuilt bytes");
  assert.deepEqual(rebuiltCopy.versions, good.versions, "and versions");
  assert.ok(rebuiltCopy.states.every((s) => s === "written"));
}

Deno.test("a replica node restarting with a segment file missing: stale, rebuilt, never read meanwhile", async () => {
  await lostReplicaIsRebuilt(11, false, "missing", "reads");
});

Deno.test("a replica node restarting with a bad segment header: stale, rebuilt, never read meanwhile", async () => {
  await lostReplicaIsRebuilt(12, false, "bad header", "writes");
});

Deno.test("the owner restarting with a bad term record: its takeover leaves that replica out (stale), then rebuilds it", async () => {
  await lostReplicaIsRebuilt(13, true, "bad term record", "reads");
});

Deno.test("planSegmentFiles: a lost replica listed in sync is reported, one listed stale is recreated", () => {
  const plan = planSegmentFiles(
    { good: new Map([["v1", [0]]]), unreadable: new Map([["v1", [2]]]) },
    [{
      volumeId: "v1",
      name: "one",
      segmentBytes: 65536,
      replicas: new Map([[0, "in-sync"], [1, "in-sync"], [2, "stale"], [3, "rebuilding"]] as const),
    }],
  );
  assert.deepEqual(plan.missing, [{ volume: "v1", name: "one", segment: 1 }]);
  assert.deepEqual(plan.recreate, [
    { volume: "v1", segment: 2, segmentBytes: 65536 },
    { volume: "v1", segment: 3, segmentBytes: 65536 },
  ]);
  assert.deepEqual(plan.orphans, []);
  assert.deepEqual(plan.deleteVolumes, []);
});
