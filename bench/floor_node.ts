/**
 * One process of the replicated-write floor (bench/floor.ts): the least work a 3-way replicated
 * durable 4 KiB write over NATS can do, with none of Cairn's logic. Run as:
 *
 *   deno run -A bench/floor_node.ts primary <natsUrl> <file> <mode> <ioBytes> <replicaSubject>...
 *   deno run -A bench/floor_node.ts replica <natsUrl> <file> <mode> <ioBytes> <subject>
 *   deno run -A bench/floor_node.ts gateway <natsUrl> <file> <mode> <ioBytes> <load> <replicaSubject>...
 *
 * mode: `disk` (every write fdatasynced, group commit), `cached` (pwrite only; an empty message
 * to a replica is a FLUSH: it fdatasyncs) or `nodisk`.
 * A request is `[u64 offset][ioBytes of data]`. The primary pwrites it into its file, sends the
 * writes that arrived in the same turn to each replica as one batch message (at most two
 * batches in flight per replica, as Cairn's batcher), and answers once its own fdatasync and
 * every replica's ack are in. A replica pwrites a batch, fdatasyncs (group commit) and acks.
 * With `nodisk` nothing touches a file: the transport's share alone. Prints "ready" once
 * subscribed; exits when stdin closes.
 *
 * A gateway is a primary that makes its own load, as Cairn's NBD gateway on the owner serves IO
 * in-process: `load` is `<inFlight>,<seconds>,<flushEvery>,<resultFile>`. On the first byte on
 * its stdin it runs random writes for that long (each worker FLUSHes all three copies after every
 * flushEvery of its writes; 0: never) and writes `{"ops":N,"seconds":S}` to resultFile.
 */
import * as fs from "node:fs";
import { connect } from "@nats-io/transport-node";
import { presizeReceiveBuffers } from "../protocol/nats_internals.ts";
import type { Msg } from "@nats-io/nats-core";
import { RequestMux } from "../protocol/request_mux.ts";
import { serveUntilStdinCloses } from "./child.ts";
import { GroupCommit } from "./disk.ts";
import { xorshift } from "./load.ts";

/** Writes go to random offsets of this many bytes of the file. */
export const floorRegionBytes = 256 * 1024 * 1024;
/** A record on the wire: its u64 offset, then its data. */
export const floorOffsetBytes = 8;
const replicaTimeoutMs = 10_000;
const maxBatchesInFlight = 2;

/** pwrites every `[u64 offset][ioBytes]` record of `bytes`. */
function applyRecords(fd: number | null, bytes: Uint8Array, ioBytes: number): void {
  if (fd === null) return;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const recordBytes = floorOffsetBytes + ioBytes;
  for (let at = 0; at + recordBytes <= bytes.byteLength; at += recordBytes) {
    const offset = Number(view.getBigUint64(at, true));
    fs.writeSync(fd, bytes, at + floorOffsetBytes, ioBytes, offset);
  }
}

/** Batches records bound for one replica: those of one turn share a message. */
class ReplicaBatcher {
  private pending: { record: Uint8Array; done: () => void }[] = [];
  private inFlight = 0;
  private scheduled = false;
  constructor(private readonly mux: RequestMux, private readonly subject: string) {}
  send(record: Uint8Array): Promise<void> {
    return new Promise((done) => {
      this.pending.push({ record, done });
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }
  private pump(): void {
    while (this.pending.length && this.inFlight < maxBatchesInFlight) {
      const batch = this.pending;
      this.pending = [];
      const out = new Uint8Array(batch.reduce((n, p) => n + p.record.byteLength, 0));
      let at = 0;
      for (const p of batch) {
        out.set(p.record, at);
        at += p.record.byteLength;
      }
      this.inFlight++;
      this.mux.request(this.subject, out, replicaTimeoutMs).then(
        () => batch.forEach((p) => p.done()),
        (err) => console.error(`floor: replica ${this.subject}: ${(err as Error).message}`),
      ).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }
}

/** Random writes from inside the process, as an NBD gateway on the owner would serve them. */
async function runGatewayLoad(
  load: string,
  ioBytes: number,
  write: (record: Uint8Array) => Promise<void>,
  flush: () => Promise<void>,
): Promise<void> {
  const [inFlight, seconds, flushEvery] = load.split(",").slice(0, 3).map(Number);
  const resultFile = load.split(",").slice(3).join(",");
  const regionBlocks = floorRegionBytes / ioBytes;
  const random = xorshift(0x9e3779b9);
  const data = new Uint8Array(ioBytes).fill(0x5a);
  // Wait for the bench's go (a byte on stdin): every process of the floor is up by then.
  await Deno.stdin.read(new Uint8Array(1));
  const startMs = performance.now();
  const endMs = startMs + seconds * 1000;
  let ops = 0;
  await Promise.all(Array.from({ length: inFlight }, async () => {
    let mine = 0;
    while (performance.now() < endMs) {
      const record = new Uint8Array(floorOffsetBytes + ioBytes);
      const offset = Math.floor(random() * regionBlocks) * ioBytes;
      new DataView(record.buffer).setBigUint64(0, BigInt(offset), true);
      record.set(data, floorOffsetBytes);
      await write(record);
      ops++;
      if (flushEvery > 0 && ++mine % flushEvery === 0) await flush();
    }
  }));
  const elapsedS = (performance.now() - startMs) / 1000;
  fs.writeFileSync(resultFile, JSON.stringify({ ops, seconds: elapsedS }));
}

async function main(): Promise<void> {
  const [role, url, file, diskMode, ioText, ...rest] = Deno.args;
  const ioBytes = Number(ioText);
  const load = role === "gateway" ? rest.shift() : undefined;
  const subjects = rest;
  if (
    !["primary", "replica", "gateway"].includes(role) || !url || !file || !subjects.length ||
    !["disk", "cached", "nodisk"].includes(diskMode) || !(ioBytes > 0) ||
    (role === "gateway" && !load)
  ) {
    console.error(
      "usage: deno run -A bench/floor_node.ts primary|replica|gateway <natsUrl> <file> disk|cached|nodisk <ioBytes> [<load>] <subject>...",
    );
    Deno.exit(2);
  }
  const fd = diskMode === "nodisk" ? null : fs.openSync(file, "w+");
  if (fd !== null && diskMode === "cached") {
    // Written once first, so the load overwrites, as fio does on a filled nbdkit file.
    const chunk = new Uint8Array(1024 * 1024);
    for (let at = 0; at < floorRegionBytes; at += chunk.byteLength) {
      fs.writeSync(fd, chunk, 0, chunk.byteLength, at);
    }
    fs.fdatasyncSync(fd);
  }
  const group = fd === null ? null : new GroupCommit(fd);
  /** Durable now: every write in disk mode, at a FLUSH in cached mode. */
  const flushCopy = () => group?.sync() ?? Promise.resolve();
  const commit = { sync: () => diskMode === "disk" ? flushCopy() : Promise.resolve() };
  presizeReceiveBuffers(); // as Cairn's own connections do
  const nc = await connect({ servers: url, name: `floor-${role}`, noAsyncTraces: true });
  if (role === "replica") {
    nc.subscribe(subjects[0], {
      callback: (_err, msg) => {
        if (msg.data.byteLength === 0) {
          flushCopy().then(() => msg.respond(new Uint8Array(0)));
          return;
        }
        applyRecords(fd, msg.data, ioBytes);
        commit.sync().then(() => msg.respond(new Uint8Array(0)));
      },
    });
  } else if (role === "gateway") {
    const mux = new RequestMux(nc);
    const batchers = subjects.map((s) => new ReplicaBatcher(mux, s));
    const write = async (record: Uint8Array) => {
      applyRecords(fd, record, ioBytes);
      await Promise.all([commit.sync(), ...batchers.map((b) => b.send(record))]);
    };
    const flush = async () => {
      await Promise.all([
        flushCopy(),
        ...subjects.map((s) => mux.request(s, new Uint8Array(0), replicaTimeoutMs)),
      ]);
    };
    await nc.flush();
    console.log("ready");
    await runGatewayLoad(load!, ioBytes, write, flush);
    await serveUntilStdinCloses(nc, { announce: false });
    return;
  } else {
    const mux = new RequestMux(nc);
    const batchers = subjects.map((s) => new ReplicaBatcher(mux, s));
    nc.subscribe("bench.floor", {
      callback: (_err, msg: Msg) => {
        const record = msg.data;
        applyRecords(fd, record, ioBytes);
        Promise.all([commit.sync(), ...batchers.map((b) => b.send(record))]).then(() =>
          msg.respond(new Uint8Array(0))
        );
      },
    });
  }
  await serveUntilStdinCloses(nc);
}

if (import.meta.main) await main();
