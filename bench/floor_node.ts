/**
 * One process of the replicated-write floor (bench/floor.ts): the least work a 3-way replicated
 * durable 4 KiB write over NATS can do, with none of Cairn's logic. Run as:
 *
 *   deno run -A bench/floor_node.ts primary <natsUrl> <file> <disk|nodisk> <ioBytes> <replicaSubject>...
 *   deno run -A bench/floor_node.ts replica <natsUrl> <file> <disk|nodisk> <ioBytes> <subject>
 *
 * A request is `[u64 offset][ioBytes of data]`. The primary pwrites it into its file, sends the
 * writes that arrived in the same turn to each replica as one batch message (at most two
 * batches in flight per replica, as Cairn's batcher), and answers once its own fdatasync and
 * every replica's ack are in. A replica pwrites a batch, fdatasyncs (group commit) and acks.
 * With `nodisk` nothing touches a file: the transport's share alone. Prints "ready" once
 * subscribed; exits when stdin closes.
 */
import * as fs from "node:fs";
import { connect } from "@nats-io/transport-node";
import type { Msg } from "@nats-io/nats-core";
import { RequestMux } from "../protocol/request_mux.ts";
import { serveUntilStdinCloses } from "./child.ts";
import { GroupCommit } from "./disk.ts";

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

async function main(): Promise<void> {
  const [role, url, file, diskMode, ioText, ...subjects] = Deno.args;
  const ioBytes = Number(ioText);
  if (
    (role !== "primary" && role !== "replica") || !url || !file || !subjects.length ||
    !(ioBytes > 0)
  ) {
    console.error(
      "usage: deno run -A bench/floor_node.ts primary|replica <natsUrl> <file> disk|nodisk <ioBytes> <subject>...",
    );
    Deno.exit(2);
  }
  const fd = diskMode === "disk" ? fs.openSync(file, "w+") : null;
  const group = fd === null ? null : new GroupCommit(fd);
  const commit = { sync: () => group?.sync() ?? Promise.resolve() };
  const nc = await connect({ servers: url, name: `floor-${role}`, noAsyncTraces: true });
  if (role === "replica") {
    nc.subscribe(subjects[0], {
      callback: (_err, msg) => {
        applyRecords(fd, msg.data, ioBytes);
        commit.sync().then(() => msg.respond(new Uint8Array(0)));
      },
    });
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
