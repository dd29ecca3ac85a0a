/**
 * Ownership cores: the lifecycle table, the supervisor's decisions, owner term vs layout
 * revision in the metadata rules, and a volume actor over in-process replica hosts:
 * a stale marking fences no one (defect: the owner fenced itself), a stop during a
 * takeover ends cleanly.
 */
import assert from "node:assert/strict";
import { inProcessLink } from "../harness/replica_link.ts";
import { canHappen, IllegalTransitionError, nextState } from "../../actors/volume/lifecycle.ts";
import { decideVolume } from "../../actors/supervisor/core.ts";
import { editLayout, takeOver } from "../../actors/metadata.ts";
import { MemoryKv, MemoryMetadata } from "../../actors/metadata_memory.ts";
import { MemoryDisk } from "../../actors/memory_disk.ts";
import { ReplicaHost, segmentFileName } from "../../actors/replica/host.ts";
import { SegmentFile, segmentFileSizeBytes } from "../../actors/replica/segment_file.ts";
import { type ReplicaLink, VolumeActor } from "../../actors/volume/actor.ts";
import {
  decodeMultiReplyPart,
  decodeReply,
  encodeFlushTerm,
  encodeMulti,
  encodeRequest,
  Flag,
  Op,
} from "../../protocol/frames.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import type { VolumeLayout, VolumeSpec } from "../../protocol/schemas.ts";
import type { Clock } from "../../actors/ports.ts";
import { HostError } from "../../actors/replica/host.ts";
import {
  belowMinInSyncWaitMs,
  ReplicaReplyError,
  takeoverPassOnAfterMs,
} from "../../actors/volume/actor.ts";
import { systemClock } from "../../actors/system_ports.ts";
import { SimScheduler } from "../../sim/scheduler.ts";

const quiet = { info() {}, warn() {}, error() {} };
const volumeId = "00112233445566aa";

Deno.test("lifecycle: only listed edges exist; fenced and stopped are final", () => {
  assert.equal(nextState("taking-over", "reconciled"), "serving");
  assert.equal(nextState("serving", "handoff-begun"), "handing-off");
  assert.equal(nextState("handing-off", "handoff-recorded"), "stopped");
  assert.equal(nextState("handing-off", "handoff-failed"), "serving");
  assert.equal(nextState("serving", "fenced"), "fenced");
  assert.throws(() => nextState("stopped", "reconciled"), IllegalTransitionError);
  assert.throws(() => nextState("fenced", "handoff-failed"), IllegalTransitionError);
  assert.throws(() => nextState("serving", "reconciled"), IllegalTransitionError);
  assert.ok(!canHappen("stopped", "term-lost"));
});

Deno.test("supervisor decisions: restart own volume at a new term, stop deposed or deleted", () => {
  const record = { name: "v", volumeId, owner: "a", term: 4 };
  assert.deepEqual(decideVolume("a", record, null), {
    kind: "start",
    name: "v",
    expected: { volumeId, owner: "a", term: 4 },
  });
  assert.deepEqual(decideVolume("a", record, { volumeId, state: "serving", term: 4 }), {
    kind: "none",
  });
  // A fenced actor is forgotten, and the next decision starts a new one (no volume stays stuck).
  assert.equal(decideVolume("a", record, { volumeId, state: "fenced", term: 3 }).kind, "forget");
  assert.equal(decideVolume("b", record, { volumeId, state: "serving", term: 3 }).kind, "stop");
  assert.equal(decideVolume("a", null, { volumeId, state: "serving", term: 4 }).kind, "stop");
  assert.equal(
    decideVolume("a", record, { volumeId: "ffffffffffffffff", state: "serving", term: 4 }).kind,
    "stop",
  );
  assert.equal(decideVolume("b", record, null).kind, "none");
});

function layout(owner: string, term: number): VolumeLayout {
  return {
    volumeId,
    term,
    owner,
    segments: [{
      replicas: ["a", "b", "c"].map((node) => ({ node, state: "in-sync" as const })),
    }],
  };
}

Deno.test("metadata: replica-state edits keep the term; takeovers state what they expect", async () => {
  const metadata = new MemoryMetadata(new MemoryKv());
  const revision0 = await metadata.createLayout("v", layout("a", 3));
  const claim = { volumeId, owner: "a", term: 3 };
  const edit = await editLayout(metadata, "v", claim, (l) => ({
    ...l,
    segments: [{
      replicas: l.segments[0].replicas.map((r) => ({ ...r, state: "stale" as const })),
    }],
  }));
  assert.equal(edit.kind, "done");
  if (edit.kind !== "done") return;
  assert.equal(edit.layout.value.term, 3, "a stale marking fences no one");
  assert.ok(edit.layout.revision > revision0, "but the layout revision moves");
  // Two nodes race to take over from a at term 3: exactly one wins, the other re-decides.
  const [b, c] = await Promise.all([
    takeOver(metadata, "v", claim, "b"),
    takeOver(metadata, "v", claim, "c"),
  ]);
  assert.deepEqual([b.kind, c.kind].sort(), ["lost", "won"]);
  const now = (await metadata.getLayout("v"))!.value;
  assert.equal(now.term, 4);
  // The loser's claim is stale now: editing with it is refused as fenced.
  const stale = await editLayout(metadata, "v", claim, (l) => l);
  assert.equal(stale.kind, "fenced");
});

/** A clock whose timers never fire (the test drives everything through awaits). */
const stillClock: Clock = { nowMs: () => 0, setTimer: () => () => {} };

interface Harness {
  actor: VolumeActor;
  hosts: Map<string, ReplicaHost>;
  disks: Map<string, MemoryDisk>;
  metadata: MemoryMetadata;
  failWrites: Set<string>;
  /** Nodes whose next write batch fails (once). */
  failOnce: Set<string>;
}

async function harness(
  spec: Partial<VolumeSpec> = {},
  clock: Clock = stillClock,
): Promise<Harness> {
  const metadata = new MemoryMetadata(new MemoryKv());
  const hosts = new Map<string, ReplicaHost>();
  const disks = new Map<string, MemoryDisk>();
  const failWrites = new Set<string>();
  const failOnce = new Set<string>();
  for (const node of ["a", "b", "c"]) {
    const disk = new MemoryDisk({ seed: node.charCodeAt(0) });
    disks.set(node, disk);
    const host = new ReplicaHost(`/${node}`, disk, quiet);
    await host.loadAll();
    await host.createSegments(volumeId, 64 * 1024, [0], 0);
    hosts.set(node, host);
  }
  const full: VolumeSpec = {
    name: "v",
    id: volumeId,
    incarnation: 0x00112233,
    sizeBytes: 64 * 1024,
    blockSize: 4096,
    segmentBytes: 64 * 1024,
    replicas: 3,
    minInSync: 2,
    readPolicy: "round-robin",
    createdAt: "now",
    ...spec,
  };
  await metadata.createSpec(full);
  await metadata.createLayout("v", layout("a", 0));
  const link = (node: string): ReplicaLink => {
    const host = hosts.get(node)!;
    return {
      call: (op, body) => host.handle(volumeId, op, body),
      write: async (term, entries, seq, cached) => {
        if (failWrites.has(node) || failOnce.delete(node)) {
          throw new ReplicaReplyError("IO_ERROR", `${node} write fails`);
        }
        await host.writeEntries(volumeId, term, entries, undefined, seq, cached).catch((err) => {
          if (err instanceof HostError) throw new ReplicaReplyError(err.code, err.message);
          throw err;
        });
      },
      read: (request) => host.readBlocks(volumeId, request),
    };
  };
  const actor = new VolumeActor({
    spec: full,
    nodeId: "a",
    metadata,
    link,
    clock,
    random: { next: () => 0.5 },
    log: quiet,
  });
  return { actor, hosts, disks, metadata, failWrites, failOnce };
}

const request = (op: number, offsetBytes: number, lengthBytes: number, payload?: Uint8Array) => ({
  op,
  flags: 0,
  requestId: 1,
  offsetBytes,
  lengthBytes,
  incarnation: 0x00112233,
  payload: payload ?? new Uint8Array(0),
});

Deno.test("a stale marking racing reads fences no one: the owner keeps serving at its term", async () => {
  const { actor, metadata, failWrites } = await harness();
  await actor.start({ volumeId, owner: "a", term: 0 });
  assert.equal(actor.state, "serving");
  const term = actor.ownerTerm;
  await actor.serve(request(Op.WRITE, 0, 4096, new Uint8Array(4096).fill(1)));
  // c starts failing: the next write marks it stale while reads (round-robin, so some
  // go to c) are in flight. On the old code this bumped the epoch and the reads met
  // STALE_EPOCH, the actor fenced itself and answered MOVED until its node restarted.
  failWrites.add("c");
  const reads = Array.from({ length: 12 }, () => actor.serve(request(Op.READ, 0, 4096)));
  await actor.serve(request(Op.WRITE, 4096, 4096, new Uint8Array(4096).fill(2)));
  for (const read of await Promise.all(reads)) assert.equal(read[0], 1);
  const now = (await metadata.getLayout("v"))!.value;
  assert.equal(now.segments[0].replicas.find((r) => r.node === "c")!.state, "stale");
  assert.equal(now.term, term, "the stale marking kept the term");
  assert.equal(actor.state, "serving");
  const more = await actor.serve(request(Op.READ, 4096, 4096));
  assert.equal(more[0], 2);
});

Deno.test("a stop during a takeover ends it cleanly (no illegal transition, nothing thrown)", async () => {
  const { actor, metadata } = await harness();
  await metadata.deleteVolume("v"); // the takeover CAS will find the volume gone...
  const started = actor.start({ volumeId, owner: "a", term: 0 });
  await actor.stop("volume deleted"); // ...after a stop arrived while it was under way
  await started;
  assert.equal(actor.state, "stopped");
});

Deno.test("a request for another incarnation is refused before anything is applied", async () => {
  const { actor, hosts } = await harness();
  await actor.start({ volumeId, owner: "a", term: 0 });
  await assert.rejects(
    () =>
      actor.serve({ ...request(Op.WRITE, 0, 4096, new Uint8Array(4096).fill(9)), incarnation: 7 }),
    /NO_SUCH_VOLUME/,
  );
  const read = await hosts.get("a")!.readBlocks(volumeId, {
    segment: 0,
    epoch: actor.ownerTerm,
    firstBlock: 0,
    blockCount: 1,
  });
  assert.equal(read.states[0], "unwritten");
});

Deno.test("read-only replica ops (scrub, meta, read) never advance a replica's term", async () => {
  const host = new ReplicaHost("/r", new MemoryDisk({ seed: 5 }), quiet);
  await host.loadAll();
  await host.createSegments(volumeId, 64 * 1024, [0], 3);
  const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const higher = 9;
  // A verify (no term) and observers with a higher term: answered, nothing changes.
  for (
    const [op, body] of [
      ["scrub", { segment: 0 }],
      ["scrub", { segment: 0, epoch: higher }],
      ["meta", { segment: 0, epoch: higher, firstBlock: 0, blockCount: 4 }],
    ] as const
  ) {
    const reply = await host.handle(volumeId, op, json(body));
    assert.equal(reply[0], 0, `${op} answered OK`);
  }
  await host.readBlocks(volumeId, { segment: 0, epoch: higher, firstBlock: 0, blockCount: 1 });
  // The owner at term 3 is still accepted: nothing above fenced it.
  const fence = await host.handle(volumeId, "fence", json({ epoch: 3, segments: [0] }));
  assert.equal(fence[0], 0, "the owner's term 3 is still current");
  const reply = JSON.parse(new TextDecoder().decode(fence.subarray(1)));
  assert.equal(reply.segments[0].epoch, 3);
});

Deno.test("handoff is refused with a reason unless the target holds every segment in sync", async () => {
  const { actor, failWrites } = await harness();
  await actor.start({ volumeId, owner: "a", term: 0 });
  await assert.rejects(() => actor.handOff("zz"), /zz does not hold an in-sync replica/);
  await assert.rejects(() => actor.handOff("a"), /already owned by a/);
  failWrites.add("c");
  await actor.serve(request(Op.WRITE, 0, 4096, new Uint8Array(4096).fill(3))); // c goes stale
  await assert.rejects(() => actor.handOff("c"), /c does not hold an in-sync replica/);
  assert.equal(actor.state, "serving", "a refused handoff leaves the owner serving");
  const moved = await actor.handOff("b");
  assert.equal(moved.term, actor.ownerTerm + 1);
  assert.equal(actor.state, "stopped");
  await assert.rejects(() => actor.serve(request(Op.READ, 0, 4096)), /MOVED/);
});

Deno.test("a read assembles each block from any good copy when every replica has a different rotten block", async () => {
  const { actor, disks } = await harness();
  await actor.start({ volumeId, owner: "a", term: 0 });
  const data = new Uint8Array(3 * 4096);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  await actor.serve(request(Op.WRITE, 0, data.length, data));
  // Block i rots on node i: no replica holds a whole good copy of the three blocks.
  const dataStart = segmentFileSizeBytes(64 * 1024, 4096) - 64 * 1024;
  ["a", "b", "c"].forEach((node, block) =>
    disks.get(node)!.corrupt(
      `/${node}/segments/${volumeId}/${segmentFileName(0)}`,
      dataStart + block * 4096 + 10,
      4,
    )
  );
  for (let round = 0; round < 3; round++) {
    const read = await actor.serve(request(Op.READ, 0, data.length));
    assert.deepEqual(read, data, `round ${round}: the good copies of each block, assembled`);
  }
});

Deno.test("a power loss while a replica takes a new term keeps the old term or the new, never loses the file", async () => {
  for (let seed = 1; seed <= 40; seed++) {
    const disk = new MemoryDisk({ seed });
    await disk.mkdirp("/s");
    const path = "/s/000000.seg";
    const file = await SegmentFile.create(disk, path, {
      volume: volumeId,
      segmentIndex: 0,
      segmentBytes: 64 * 1024,
      blockSize: 4096,
      epoch: 3,
    });
    await file.setEpoch(4); // not synced: the power loss keeps it, loses it, or tears it
    disk.crash({ keepPendingProbability: 0.5, tearWrites: true });
    const reopened = await SegmentFile.open(disk, path);
    assert.ok(reopened.epoch === 3 || reopened.epoch === 4, `seed ${seed}: term ${reopened.epoch}`);
    await reopened.close();
  }
});

Deno.test("a takeover that keeps failing passes the volume on to a live node in sync everywhere", async () => {
  const scheduler = new SimScheduler({ seed: 9 });
  const clock = scheduler.clockFor("a");
  const metadata = new MemoryMetadata(new MemoryKv());
  const spec: VolumeSpec = {
    name: "v",
    id: volumeId,
    incarnation: 0x00112233,
    sizeBytes: 64 * 1024,
    blockSize: 4096,
    segmentBytes: 64 * 1024,
    replicas: 3,
    minInSync: 2,
    readPolicy: "local",
    createdAt: "now",
  };
  await metadata.createSpec(spec);
  await metadata.createLayout("v", layout("a", 0));
  // Every replica call fails (as on a node whose disk is full and whose peers it cannot use).
  const failing: ReplicaLink = {
    call: () => Promise.reject(new ReplicaReplyError("IO_ERROR", "No space left on device")),
    write: () => Promise.reject(new ReplicaReplyError("IO_ERROR", "No space left on device")),
    read: () => Promise.reject(new ReplicaReplyError("IO_ERROR", "No space left on device")),
  };
  const told: string[] = [];
  const actor = new VolumeActor({
    spec,
    nodeId: "a",
    metadata,
    link: () => failing,
    clock,
    random: { next: () => 0.5 },
    log: quiet,
    judgedDown: (node) => node === "c",
    liveNodes: () =>
      Promise.resolve(["a", "b", "c"].map((id) => ({ id, zone: id, capacityBytes: 1 }))),
    tellOwner: (node) => told.push(node),
  });
  let done = false;
  scheduler.spawn(() => actor.start({ volumeId, owner: "a", term: 0 }).then(() => (done = true)));
  await scheduler.runUntil(() => done, 60_000);
  assert.ok(done, "the takeover ended");
  assert.equal(actor.state, "stopped");
  const now = (await metadata.getLayout("v"))!.value;
  assert.equal(now.owner, "b", "passed on to the live node (c is judged down)");
  assert.equal(now.term, 2, "one term won, one CAS to pass it on");
  assert.deepEqual(told, ["b"]);
  assert.ok(scheduler.nowMs >= takeoverPassOnAfterMs, "not before it had tried for a while");
});

Deno.test("a write that leaves its segment below minInSync waits for a catch-up instead of failing", async () => {
  const { actor, metadata, failOnce } = await harness({}, systemClock);
  await actor.start({ volumeId, owner: "a", term: 0 });
  await actor.serve(request(Op.WRITE, 0, 4096, new Uint8Array(4096).fill(1)));
  // b and c miss this write: both are marked stale, leaving one in-sync copy (a) of the two the
  // volume wants. The write waits until catch-up has brought one back, then is acknowledged.
  failOnce.add("b");
  failOnce.add("c");
  const startedMs = performance.now();
  await actor.serve(request(Op.WRITE, 4096, 4096, new Uint8Array(4096).fill(2)));
  const waitedMs = performance.now() - startedMs;
  const now = (await metadata.getLayout("v"))!.value;
  const inSync = now.segments[0].replicas.filter((r) => r.state === "in-sync").length;
  assert.ok(inSync >= 2, `acknowledged with ${inSync} in-sync replicas`);
  assert.ok(waitedMs < belowMinInSyncWaitMs, `waited ${Math.round(waitedMs)} ms`);
  assert.equal((await actor.serve(request(Op.READ, 4096, 4096)))[0], 2);
  await actor.stop();
});

Deno.test("a resent write the owner already applied is answered, not applied again", async () => {
  const { actor } = await harness();
  await actor.start({ volumeId, owner: "a", term: 0 });
  const frame = (requestId: number, fill: number) =>
    encodeRequest({ ...request(Op.WRITE, 0, 4096, new Uint8Array(4096).fill(fill)), requestId });
  const first = frame(7, 1);
  assert.equal(decodeReply(await actor.handleFrame(first, "_INBOX.client1")).status, 0);
  // Another write to the block is acknowledged; then the first one's resend arrives (its
  // reply was lost with a NATS server). Applied again, it would undo the acknowledged write.
  assert.equal(decodeReply(await actor.handleFrame(frame(8, 2), "_INBOX.client1")).status, 0);
  assert.equal(decodeReply(await actor.handleFrame(first, "_INBOX.client1")).status, 0);
  assert.equal((await actor.serve(request(Op.READ, 0, 4096)))[0], 2);
  // The same request id from another connection is another write.
  assert.equal(decodeReply(await actor.handleFrame(frame(7, 3), "_INBOX.client2")).status, 0);
  assert.equal((await actor.serve(request(Op.READ, 0, 4096)))[0], 3);
});

/** Sends a MULTI to the actor; resolves with its member replies in order once all came. */
function multi(actor: VolumeActor, envelope: Uint8Array, count: number): Promise<Uint8Array[]> {
  const replies: Uint8Array[] = [];
  let answered = 0;
  return new Promise((resolve) => {
    actor.handleMulti(envelope, "_INBOX.client1", (part) => {
      for (const { index, frame } of decodeMultiReplyPart(part, count)!) {
        assert.equal(replies[index], undefined, `member ${index} answered twice`);
        replies[index] = frame;
        answered++;
      }
      if (answered === count) resolve(replies);
    });
  });
}

Deno.test("a MULTI's members are served in order as if each came alone, and answered in parts", async () => {
  const { actor } = await harness();
  await actor.start({ volumeId, owner: "a", term: 0 });
  const write = (requestId: number, offset: number, fill: number) =>
    encodeRequest({
      ...request(Op.WRITE, offset, 4096, new Uint8Array(4096).fill(fill)),
      requestId,
    });
  const read = encodeRequest({ ...request(Op.READ, 0, 4096), requestId: 3 });
  const unaligned = encodeRequest({ ...request(Op.READ, 100, 4096), requestId: 4 });
  const members = [write(1, 0, 1), write(2, 0, 2), read, unaligned, write(5, 8192, 5)];
  const replies = (await multi(actor, encodeMulti(members), members.length)).map(decodeReply);
  assert.deepEqual(replies.map((r) => r.requestId), [1, 2, 3, 4, 5]);
  assert.deepEqual(
    replies.map((r) => r.status),
    [0, 0, 0, ErrorCode.UNALIGNED, 0],
    "one bad member fails alone",
  );
  assert.equal(replies[2].payload[0], 2, "the read saw both writes before it, in order");
  assert.equal((await actor.serve(request(Op.READ, 8192, 4096)))[0], 5);
  // A member resent alone (its MULTI's reply was lost) is answered, not applied again.
  assert.equal(decodeReply(await actor.handleFrame(write(6, 0, 6), "_INBOX.client1")).status, 0);
  assert.equal(decodeReply(await actor.handleFrame(members[0], "_INBOX.client1")).status, 0);
  assert.equal((await actor.serve(request(Op.READ, 0, 4096)))[0], 6);
  // A malformed envelope is refused whole: nothing in it is applied.
  const bad = encodeMulti([write(7, 0, 7), write(8, 4096, 8)]);
  const truncated = bad.subarray(0, bad.byteLength - 1);
  const refusedParts: Uint8Array[] = [];
  actor.handleMulti(truncated, "_INBOX.client1", (part) => refusedParts.push(part));
  assert.equal(refusedParts.length, 1);
  assert.equal(decodeReply(refusedParts[0]).status, ErrorCode.BAD_FRAME);
  assert.equal((await actor.serve(request(Op.READ, 0, 4096)))[0], 6);
  assert.equal((await actor.serve(request(Op.READ, 4096, 4096)))[0], 0);
  await actor.stop();
});

Deno.test("a write resent to a new owner after the old one applied it is not applied again", async () => {
  const { actor, metadata, hosts } = await harness();
  await actor.start({ volumeId, owner: "a", term: 0 });
  const frame = (requestId: number, fill: number) =>
    encodeRequest({ ...request(Op.WRITE, 0, 4096, new Uint8Array(4096).fill(fill)), requestId });
  // Owner a applies client 1's request 7; its reply is lost with a, which is then taken over.
  const first = frame(7, 1);
  assert.equal(decodeReply(await actor.handleFrame(first, "_INBOX.client1")).status, 0);
  await actor.stop();
  const spec = (await metadata.getSpec("v"))!.value;
  const link = (node: string) => inProcessLink(hosts.get(node)!, volumeId);
  const successor = new VolumeActor({
    spec,
    nodeId: "b",
    metadata,
    link,
    clock: stillClock,
    random: { next: () => 0.5 },
    log: quiet,
  });
  const now = (await metadata.getLayout("v"))!.value;
  await successor.start({ volumeId, owner: "a", term: now.term });
  assert.equal(successor.state, "serving");
  // Client 2's write to the block is acknowledged by the successor; then client 1's resend of
  // request 7 arrives. Applied again, it would undo client 2's acknowledged write.
  assert.equal(decodeReply(await successor.handleFrame(frame(1, 2), "_INBOX.client2")).status, 0);
  assert.equal(decodeReply(await successor.handleFrame(first, "_INBOX.client1")).status, 0);
  assert.equal((await successor.serve(request(Op.READ, 0, 4096)))[0], 2);
  await successor.stop();
});

Deno.test("after every copy lost power, a FLUSH covering older cached writes answers CACHE_LOST", async () => {
  const { actor, metadata, hosts, disks } = await harness();
  await actor.start({ volumeId, owner: "a", term: 0 });
  const oldTerm = actor.ownerTerm;
  const cachedWrite = {
    ...request(Op.WRITE, 0, 4096, new Uint8Array(4096).fill(5)),
    flags: Flag.CACHED,
  };
  await actor.serve(cachedWrite);
  await actor.stop();
  // Every node loses power (unsynced writes lost) and boots again: every copy is suspect.
  for (const [node, disk] of disks) {
    disk.crash({ keepPendingProbability: 0 });
    const host = new ReplicaHost(`/${node}`, disk, quiet, { bootId: "boot-2" });
    await host.loadAll();
    hosts.set(node, host);
  }
  const spec = (await metadata.getSpec("v"))!.value;
  const successor = new VolumeActor({
    spec,
    nodeId: "b",
    metadata,
    link: (node) => inProcessLink(hosts.get(node)!, volumeId),
    clock: stillClock,
    random: { next: () => 0.5 },
    log: quiet,
  });
  const before = (await metadata.getLayout("v"))!.value;
  await successor.start({ volumeId, owner: "a", term: before.term });
  assert.equal(successor.state, "serving");
  const after = (await metadata.getLayout("v"))!.value;
  assert.equal(after.cachedLossTerm, successor.ownerTerm, "the loss is recorded in the layout");
  const flush = (term?: number) =>
    successor.handleFrame(
      encodeRequest({
        ...request(Op.FLUSH, 0, 0, term === undefined ? undefined : encodeFlushTerm(term)),
      }),
      "_INBOX.client1",
    ).then(decodeReply);
  // The client had a cached write acknowledged at the old term and not flushed: told.
  const lost = await flush(oldTerm);
  assert.equal(lost.status, ErrorCode.CACHE_LOST);
  assert.match(new TextDecoder().decode(lost.payload), /may be lost/);
  // Writes acknowledged at the new term, or none: OK.
  assert.equal((await flush(successor.ownerTerm)).status, 0);
  assert.equal((await flush()).status, 0);
  await successor.stop();
});

Deno.test("a FLUSH during another waits for it: no OK before the first's replica syncs", async () => {
  const h = await harness();
  await h.actor.start({ volumeId, owner: "a", term: 0 });
  await h.actor.serve({
    ...request(Op.WRITE, 0, 4096, new Uint8Array(4096).fill(3)),
    flags: Flag.CACHED,
  });
  // Replica c's flush is held until released.
  const c = h.hosts.get("c")!;
  const handle = c.handle.bind(c);
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let cFlushed = false;
  c.handle = async (volume, op, body) => {
    if (op !== "flush") return await handle(volume, op, body);
    await held;
    const reply = await handle(volume, op, body);
    cFlushed = true;
    return reply;
  };
  const first = h.actor.serve(request(Op.FLUSH, 0, 0));
  // The second FLUSH has no cached write of its own to cover, but the write acknowledged
  // before it is not durable on c until the first's flush is.
  let secondAnswered = false;
  const second = h.actor.serve(request(Op.FLUSH, 0, 0)).then((reply) => {
    secondAnswered = true;
    return reply;
  });
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 0));
  assert.equal(secondAnswered, false, "the second FLUSH answered before c synced");
  release();
  await Promise.all([first, second]);
  assert.ok(cFlushed);
});

Deno.test("FLUSH makes the cached writes before it durable on every in-sync replica", async () => {
  const cachedWrite = (offsetBytes: number, fill: number, lengthBytes = 4096) => ({
    ...request(Op.WRITE, offsetBytes, lengthBytes, new Uint8Array(lengthBytes).fill(fill)),
    flags: Flag.CACHED,
  });
  /** Every node loses power (unsynced writes lost); what each holds after, block 0..15. */
  const afterPowerLoss = async (h: Harness, term: number) => {
    const held = new Map<string, number[]>();
    for (const [node, disk] of h.disks) {
      disk.crash({ keepPendingProbability: 0 });
      const host = new ReplicaHost(`/${node}`, disk, quiet);
      await host.loadAll();
      const read = await host.readBlocks(volumeId, {
        segment: 0,
        epoch: term,
        firstBlock: 0,
        blockCount: 16,
      });
      held.set(node, [...read.data.filter((_, i) => i % 4096 === 0)]);
    }
    return held;
  };
  // The whole segment in place (a large write), then small journaled ones over it.
  const writeAll = async (actor: VolumeActor) => {
    await actor.serve(cachedWrite(0, 7, 64 * 1024));
    await Promise.all([1, 5, 9].map((block) => actor.serve(cachedWrite(block * 4096, block))));
  };
  const want = Array.from({ length: 16 }, (_, i) => [1, 5, 9].includes(i) ? i : 7);

  const flushed = await harness();
  await flushed.actor.start({ volumeId, owner: "a", term: 0 });
  await writeAll(flushed.actor);
  await flushed.actor.serve(request(Op.FLUSH, 0, 0));
  for (const [node, blocks] of await afterPowerLoss(flushed, flushed.actor.ownerTerm)) {
    assert.deepEqual(blocks, want, `${node} holds every write acknowledged before the FLUSH`);
  }

  // Without the FLUSH the same power loss takes them: the check above can tell.
  const unflushed = await harness();
  await unflushed.actor.start({ volumeId, owner: "a", term: 0 });
  await writeAll(unflushed.actor);
  for (const [node, blocks] of await afterPowerLoss(unflushed, unflushed.actor.ownerTerm)) {
    assert.notDeepEqual(blocks, want, `${node} lost unflushed cached writes`);
  }
});
