/**
 * Crash safety: kill -9 every node while clients write, restart them, and
 * every block must read back exactly as the write history allows (see
 * WriteHistory.allowed); replicas must agree (verify).
 */
import assert from "node:assert/strict";
import { TestCluster } from "../harness/cluster.ts";
import { mulberry32 } from "../harness/random.ts";
import { directWriteMinBytes } from "../../actors/replica/host.ts";
import { CairnError, type ErrorCodeName } from "../../protocol/errors.ts";

const blockSize = 4096;
const volumeBytes = 32 * 1024 * 1024;
const segmentBytes = 4 * 1024 * 1024;
const blockCount = volumeBytes / blockSize;
/** Whole-chunk writes are directWriteMinBytes long: the replica hosts write them in place. */
const chunkBlocks = directWriteMinBytes / blockSize;
const writerCount = 16;
/** Writes each writer keeps in flight at once, over its own chunks: they may overlap. */
const lanesPerWriter = 2;
/** Chance a lane writes the chunk its sibling lane is writing, so two writes to a block race. */
const overlapChance = 0.3;

/**
 * Fills a block with a pattern derived from (block, generation) so any value
 * can be recognized: words 0 and 1 are the block and the generation.
 */
function pattern(block: number, generation: number): Uint8Array {
  const out = new Uint8Array(blockSize);
  const view = new DataView(out.buffer);
  view.setUint32(0, block, true);
  view.setUint32(4, generation, true);
  for (let i = 8; i < blockSize; i += 8) {
    view.setUint32(i, block, true);
    view.setUint32(i + 4, generation * 2654435761 + i, true);
  }
  return out;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** What a block holds, in words: zeros, a generation (of this block or another), or neither. */
function describe(got: Uint8Array, block: number): string {
  if (got.every((b) => b === 0)) return "zeros";
  const view = new DataView(got.buffer, got.byteOffset, got.byteLength);
  const ofBlock = view.getUint32(0, true);
  const generation = view.getUint32(4, true);
  if (ofBlock < blockCount && equalBytes(got, pattern(ofBlock, generation))) {
    return ofBlock === block
      ? `generation ${generation}`
      : `generation ${generation} of block ${ofBlock} (misplaced)`;
  }
  const head = [...got.subarray(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
  const zeroFrom = got.findIndex((_, i) => got.subarray(i).every((b) => b === 0));
  return `unrecognized bytes (torn or corrupt; first 16 bytes ${head}${
    zeroFrom > 0 ? `, zeros from byte ${zeroFrom}` : ""
  }; header says block ${ofBlock} generation ${generation})`;
}

/**
 * Errors that prove a write had no effect: the request was refused before any
 * byte was written (client range check or the server's frame decoder). Every
 * other error leaves the outcome unknown: UNAVAILABLE comes after some
 * replicas wrote, or from the client giving up on retries with an attempt
 * possibly still queued; BAD_FRAME may be a garbled reply to a done write.
 */
const noEffectCodes: ReadonlySet<ErrorCodeName> = new Set([
  "UNALIGNED",
  "OUT_OF_RANGE",
  "TOO_LARGE",
]);

type Outcome = "pending" | "acked" | "failed" | "no-effect";

interface WriteRecord {
  generation: number;
  firstBlock: number;
  blockCount: number;
  /** Logical time the write was issued (taken before the call). */
  startedAt: number;
  /** Logical time its answer was seen (taken after the call returned or threw). */
  endedAt?: number;
  outcome: Outcome;
  error?: string;
}

interface Allowed {
  writes: WriteRecord[];
  zeros: boolean;
}

/**
 * Every write issued, per block, with logical start and end times, and the
 * rule for what a block may hold after the crash. A write is "certain" if it
 * was acknowledged before the read began; any other write that was issued
 * and not refused outright is "unknown": it may have landed or not, and, as
 * the client resends (a resent write gets a newer version), it may land
 * late, so its end is taken as never. Then, per block (each block of a
 * 64 KiB write separately):
 * - a write W to the block is allowed iff W is certain or unknown and no
 *   certain write to the block was issued after W's end (such a write is
 *   ordered after W and hides it); with one write in flight per block this
 *   is "the last acknowledged one, or one in flight at the crash";
 * - zeros are allowed iff no write to the block is certain;
 * - nothing else: not an older generation, not a refused write, not zeros
 *   over an acknowledged write, not a torn mix.
 */
class WriteHistory {
  private clock = 0;
  readonly byBlock: WriteRecord[][] = Array.from({ length: blockCount }, () => []);
  readonly all: WriteRecord[] = [];
  /** Writes issued while another write to one of their blocks was in flight. */
  overlapping = 0;

  now(): number {
    return ++this.clock;
  }

  start(generation: number, firstBlock: number, count: number): WriteRecord {
    const record: WriteRecord = {
      generation,
      firstBlock,
      blockCount: count,
      startedAt: this.now(),
      outcome: "pending",
    };
    let overlaps = false;
    for (let b = firstBlock; b < firstBlock + count; b++) {
      overlaps ||= this.byBlock[b].some((w) => w.outcome === "pending");
      this.byBlock[b].push(record);
    }
    if (overlaps) this.overlapping++;
    this.all.push(record);
    return record;
  }

  ack(record: WriteRecord): void {
    record.endedAt = this.now();
    record.outcome = "acked";
  }

  fail(record: WriteRecord, err: unknown): void {
    record.endedAt = this.now();
    const proven = err instanceof CairnError && noEffectCodes.has(err.code);
    record.outcome = proven ? "no-effect" : "failed";
    record.error = (err as Error)?.message ?? String(err);
  }

  count(outcome: Outcome): number {
    return this.all.filter((w) => w.outcome === outcome).length;
  }

  /** What block may hold, reading from logical time `readAt` on. */
  allowed(block: number, readAt: number): Allowed {
    const writes = this.byBlock[block];
    const certain = writes.filter((w) => w.outcome === "acked" && w.endedAt! < readAt);
    const end = (w: WriteRecord) => certain.includes(w) ? w.endedAt! : Infinity;
    return {
      writes: writes.filter((w) =>
        w.outcome !== "no-effect" && !certain.some((c) => c.startedAt > end(w))
      ),
      zeros: certain.length === 0,
    };
  }

  /** One write as the failure message shows it. */
  show(w: WriteRecord, readAt: number): string {
    const size = w.blockCount === 1 ? "4 KiB" : `${w.blockCount * blockSize / 1024} KiB`;
    const status = w.outcome === "acked"
      ? `acknowledged at t${w.endedAt}${w.endedAt! < readAt ? "" : " (after the read began)"}`
      : w.outcome === "pending"
      ? "still unanswered"
      : `failed at t${w.endedAt} (${
        w.outcome === "no-effect" ? "no effect" : "outcome unknown"
      }: ${w.error})`;
    return `generation ${w.generation} (${size} write of blocks ${w.firstBlock}-${
      w.firstBlock + w.blockCount - 1
    }, issued t${w.startedAt}, ${status})`;
  }
}

Deno.test("the crash check's rule: what a block may hold after a crash, from its write history", () => {
  const h = new WriteHistory();
  const gens = (block: number, readAt: number) => {
    const a = h.allowed(block, readAt);
    return [...a.writes.map((w) => w.generation), ...(a.zeros ? [0] : [])].sort((x, y) => x - y);
  };
  // Block 0: acknowledged 1, then 2 in flight at the crash: 1 or 2, never zeros.
  h.ack(h.start(1, 0, 1));
  h.start(2, 0, 1);
  // Block 1: 3 then 4 acknowledged one after the other: only 4.
  h.ack(h.start(3, 1, 1));
  h.ack(h.start(4, 1, 1));
  // Blocks 2-3: 5 (both blocks) and 6 (block 3) in flight together, both acknowledged:
  // block 2 only 5, block 3 either; then 7 on block 3 failed (unknown) and 8 refused.
  const five = h.start(5, 2, 2);
  const six = h.start(6, 3, 1);
  h.ack(six);
  h.ack(five);
  h.fail(h.start(7, 3, 1), new CairnError("UNAVAILABLE", "gave up"));
  h.fail(h.start(8, 3, 1), new CairnError("OUT_OF_RANGE", "refused"));
  // Block 4: only a refused write: zeros. Block 5: only an unknown one: zeros or it.
  h.fail(h.start(9, 4, 1), new CairnError("TOO_LARGE", "refused"));
  h.start(10, 5, 1);
  // Block 6: 11 in flight, then 12 issued and acknowledged while 11 still is: 11 may
  // land after 12 (a resent write gets a newer version), so either.
  const eleven = h.start(11, 6, 1);
  h.ack(h.start(12, 6, 1));
  // Block 7: 13 acknowledged after the read began counts as unknown: zeros or 13.
  const readAt = h.now();
  h.ack(h.start(13, 7, 1));
  assert.deepEqual(gens(0, readAt), [1, 2]);
  assert.deepEqual(gens(1, readAt), [4]);
  assert.deepEqual(gens(2, readAt), [5]);
  assert.deepEqual(gens(3, readAt), [5, 6, 7]);
  assert.deepEqual(gens(4, readAt), [0]);
  assert.deepEqual(gens(5, readAt), [0, 10]);
  h.ack(eleven);
  // Once 11 is acknowledged after 12 was issued, both overlapped: still either.
  assert.deepEqual(gens(6, h.now()), [11, 12]);
  assert.deepEqual(gens(7, readAt), [0, 13]);
  assert.deepEqual(gens(8, readAt), [0]);
});

/** Cached mode: a lane FLUSHes after this many of its writes (and proves nothing by it). */
const writesPerFlush = 8;

for (const mode of ["durable", "cached"] as const) {
  Deno.test({
    name: mode === "durable"
      ? "kill -9 all nodes during small and large writes: every block reads back as the write history allows, replicas agree"
      : "kill -9 all nodes during cached writes and FLUSHes: every acknowledged write is there (the page cache survives), replicas agree",
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () => crashAllNodes(mode),
  });
}

async function crashAllNodes(mode: "durable" | "cached"): Promise<void> {
  // Kept on failure for a look at the journals and segment files; removed below on success.
  const cluster = await TestCluster.start({ nodes: 3, keep: true });
  let passed = false;
  try {
    const client = await cluster.client();
    await client.createVolume({ name: "crash", sizeBytes: volumeBytes, segmentBytes });
    const volume = await client.openVolume("crash", {
      maxInFlight: 32,
      cachedWrites: mode === "cached",
    });
    const history = new WriteHistory();
    const random = mulberry32(42);
    let stop = false;
    let generation = 0;
    const chunksPerWriter = blockCount / chunkBlocks / writerCount;
    const lanes = Array.from({ length: writerCount }, (_, w) => {
      /** The chunk each lane of this writer is writing now (-1: none). */
      const busy = Array.from({ length: lanesPerWriter }, () => -1);
      return busy.map(async (_, lane) => {
        while (!stop) {
          // Writer w owns the chunks with index % writerCount == w; its lanes write them
          // concurrently and sometimes the same chunk at once. A quarter of the writes
          // cover a whole chunk (64 KiB: written in place, not journaled); the rest one
          // block of it (journaled), so both kinds overwrite and race each other.
          const sibling = busy.find((c, l) => l !== lane && c >= 0);
          const chunk = sibling !== undefined && random() < overlapChance
            ? sibling
            : Math.floor(random() * chunksPerWriter) * writerCount + w;
          const whole = random() < 0.25;
          const first = chunk * chunkBlocks + (whole ? 0 : Math.floor(random() * chunkBlocks));
          const count = whole ? chunkBlocks : 1;
          const data = new Uint8Array(count * blockSize);
          const record = history.start(++generation, first, count);
          for (let i = 0; i < count; i++) {
            data.set(pattern(first + i, record.generation), i * blockSize);
          }
          busy[lane] = chunk;
          try {
            await volume.write(first * blockSize, data);
            history.ack(record);
            if (mode === "cached" && record.generation % writesPerFlush === 0) {
              await volume.flush();
            }
          } catch (err) {
            history.fail(record, err);
            break; // This lane is done; its write stays unknown (or no-effect).
          } finally {
            busy[lane] = -1;
          }
        }
      });
    }).flat();
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(
      history.count("acked") > 100,
      `only ${history.count("acked")} writes before the crash`,
    );
    // The lanes share one handle: their writes go several to a message (MULTI) into the crash.
    assert.ok(volume.coalescing.multis > 0, "no write went in a MULTI before the crash");
    await Promise.all(cluster.nodes.map((_, i) => cluster.killNode(i)));
    stop = true;
    const ackedAtCrash = history.count("acked");
    const inFlightAtCrash = history.count("pending");
    const restartMs = performance.now();
    await Promise.all(cluster.nodes.map((_, i) => cluster.startNode(i)));
    console.log(`nodes restarted in ${Math.round(performance.now() - restartMs)} ms`);
    // Writes in flight at the crash are resent and may now complete; a lane still
    // retrying when this gives up leaves its write unknown.
    await Promise.race([Promise.all(lanes), new Promise((r) => setTimeout(r, 20_000))]);
    console.log(`writers done ${Math.round(performance.now() - restartMs)} ms after restart`);

    const readAt = history.now();
    const fresh = await cluster.client();
    const reader = await fresh.openVolume("crash");
    const all = await reader.read(0, volumeBytes);
    const bad: string[] = [];
    let checked = 0;
    for (let block = 0; block < blockCount; block++) {
      const got = all.subarray(block * blockSize, (block + 1) * blockSize);
      const allowed = history.allowed(block, readAt);
      const ok = (allowed.zeros && got.every((b) => b === 0)) ||
        allowed.writes.some((w) => equalBytes(got, pattern(block, w.generation)));
      if (!allowed.zeros) checked++;
      if (ok) continue;
      const choices = [
        ...allowed.writes.map((w) => history.show(w, readAt)),
        ...(allowed.zeros ? ["zeros (no write to it acknowledged)"] : []),
      ];
      // The newest few writes that are not allowed, for context.
      const others = history.byBlock[block].filter((w) => !allowed.writes.includes(w))
        .slice(-5);
      bad.push(
        `block ${block} (segment ${Math.floor(block * blockSize / segmentBytes)}, chunk ${
          Math.floor(block / chunkBlocks)
        }, byte offset ${block * blockSize}) holds ${describe(got, block)}\n` +
          `    allowed: ${choices.join("; ") || "nothing"}\n` +
          (others.length
            ? `    not allowed (hidden by a later acknowledged write, or no effect): ${
              others.map((w) => history.show(w, readAt)).join("; ")
            }\n`
            : ""),
      );
    }
    const summary = [
      `${ackedAtCrash} writes acknowledged before kill -9, ${inFlightAtCrash} in flight at it`,
      `${history.count("acked") - ackedAtCrash} more acknowledged after the restart`,
      `${history.count("failed")} failed (outcome unknown)`,
      `${history.count("no-effect")} refused (no effect)`,
      `${history.count("pending")} still unanswered`,
      `${history.overlapping} issued while another write to a block of theirs was in flight`,
      `${checked} blocks with an acknowledged write checked`,
    ].join(", ");
    console.log(summary);
    assert.ok(
      bad.length === 0,
      `${bad.length} of ${blockCount} blocks hold what the write history does not allow ` +
        `(${summary}). First ${Math.min(bad.length, 20)}:\n${bad.slice(0, 20).join("")}` +
        `What to do next: zeros or an older generation where a newer write was acknowledged ` +
        `mean a lost acknowledged write: check that a write is journaled (NodeJournal.append) ` +
        `and fdatasynced before its ack and replayed on start (ReplicaHost.replayJournal), ` +
        `and for 64 KiB (whole-chunk) writes that the segment file is written and synced ` +
        `before the ack (ReplicaHost.applyEntries). A generation not allowed means an old ` +
        `write landed over a newer one (versions, notOlder); unrecognized bytes mean a torn ` +
        `block. The node logs follow; the data dirs (journal/, segments/) are kept in ` +
        `${cluster.root}.`,
    );
    assert.ok(checked > 100, `${checked} blocks with acknowledged writes checked`);
    assert.ok(history.overlapping > 0, "no two writes to one block were ever in flight at once");

    console.log(`read back ${Math.round(performance.now() - restartMs)} ms after restart`);
    const verify = await cluster.cli(["volume", "verify", "crash"]);
    console.log(`verified ${Math.round(performance.now() - restartMs)} ms after restart`);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    passed = true;
  } catch (err) {
    console.error(cluster.logs());
    throw err;
  } finally {
    const stopMs = performance.now();
    await cluster.stop();
    if (passed) await Deno.remove(cluster.root, { recursive: true }).catch(() => {});
    console.log(`cluster stopped in ${Math.round(performance.now() - stopMs)} ms`);
  }
}

Deno.test({
  name: "a replica node killed and restarted while IO goes on is caught up and back in sync",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await TestCluster.start({ nodes: 3 });
    try {
      const client = await cluster.client();
      const info = await client.createVolume({
        name: "heal",
        sizeBytes: volumeBytes,
        segmentBytes: 4 * 1024 * 1024,
      });
      const victim = cluster.nodes.findIndex((n) => n.id !== info.owner);
      const volume = await client.openVolume("heal");
      const model = new Uint8Array(volumeBytes);
      const random = mulberry32(9);
      const writeSome = async (count: number, generation: number) => {
        await Promise.all(Array.from({ length: 8 }, async (_, w) => {
          for (let i = 0; i < count; i++) {
            const block = Math.floor(random() * (blockCount / 8)) * 8 + w;
            const data = pattern(block, generation + i);
            model.set(data, block * blockSize);
            await volume.write(block * blockSize, data);
          }
        }));
      };
      await writeSome(50, 1);
      await cluster.killNode(victim);
      // Writes go on with 2 of 3 replicas (minInSync 2); the dead one is marked stale.
      await writeSome(100, 1000);
      await volume.trim(0, 64 * blockSize);
      model.fill(0, 0, 64 * blockSize);
      const degraded = await client.volumeInfo("heal");
      const victimId = cluster.nodes[victim].id;
      assert.ok(
        degraded.segments.some((s) =>
          s.replicas.some((r) => r.node === victimId && r.state === "stale")
        ),
        "the dead node's replicas are stale",
      );
      await cluster.startNode(victim);
      // Keep writing while the owner catches the replica up.
      const during = writeSome(100, 5000);
      let healthy = false;
      for (let i = 0; i < 100 && !healthy; i++) {
        await new Promise((r) => setTimeout(r, 200));
        const now = await client.volumeInfo("heal");
        healthy = now.segments.every((s) => s.replicas.every((r) => r.state === "in-sync"));
      }
      await during;
      assert.ok(healthy, "replicas are back in sync");
      const verify = await cluster.cli(["volume", "verify", "heal"]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
      const all = await volume.read(0, volumeBytes);
      assert.ok(all.every((b, i) => b === model[i]), "data matches the model");
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      await cluster.stop();
    }
  },
});
