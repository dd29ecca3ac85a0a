/**
 * Takeover reconciliation: after winning the term, a new owner fences every
 * replica, then makes every reachable replica hold, block by block, the
 * highest version any in-sync replica has (versions grow with the term, so
 * "highest wins" is a total order). Unreachable in-sync replicas are marked
 * stale; reachable stale ones are caught up and return to in-sync.
 */
import { editLayout, type MetadataPort, type OwnerClaim } from "../metadata.ts";
import type { Clock } from "../ports.ts";
import type { Logger } from "../replica/host.ts";
import type { VolumeLayout } from "../../protocol/schemas.ts";
import { CairnError } from "../../protocol/errors.ts";
import { blockSizeBytes } from "../../protocol/limits.ts";
import { EntryKind, type ReadResult, type WriteEntry } from "../replica/wire.ts";
import { callReplica } from "./actor.ts";
import type { ReplicaStream } from "./stream.ts";
import { setReplicaStates } from "./core.ts";

/**
 * How long a new owner waits for replica nodes to answer its fence before marking them stale:
 * above the longest lease a replica makes a fence wait out (2 s) and its 2 s start-up delay.
 */
export const takeoverReplicaWaitMs = 4_000;
const fenceRetryDelayMs = 250;
/** Blocks per meta request (512 KiB of versions) and per copy run (512 KiB of data). */
const metaChunkBlocks = 65_536;
const copyRunBlocks = 128;

export interface ReconcileInput {
  name: string;
  layout: VolumeLayout;
  segmentBytes: number;
  metadata: MetadataPort;
  /** The actor's write stream to each node (fences restart it). */
  link: (node: string) => ReplicaStream;
  log: Logger;
  clock: Clock;
  /**
   * The node's watchdog judges this replica node down: a fence it does not answer is not
   * retried until the deadline (the node is marked stale and caught up when it returns).
   */
  judgedDown?: (node: string) => boolean;
}

/** A newer owner holds the volume: stop, do not retry. */
export class FencedError extends CairnError {
  constructor(message: string) {
    super("MOVED", message);
  }
}

interface FencedSegment {
  segment: number;
  maxVersion: number;
  /** The replica may have lost unflushed cached writes in a power loss (host.ts `suspect`). */
  suspect?: boolean;
}

const encoder = new TextEncoder();
const json = (value: unknown) => encoder.encode(JSON.stringify(value));
const decoder = new TextDecoder();

function segmentsByNode(layout: VolumeLayout): Map<string, number[]> {
  const out = new Map<string, number[]>();
  layout.segments.forEach((s, index) => {
    for (const r of s.replicas) {
      if (!out.has(r.node)) out.set(r.node, []);
      out.get(r.node)!.push(index);
    }
  });
  return out;
}

export function sleep(clock: Clock, delayMs: number): Promise<void> {
  return new Promise((resolve) => clock.setTimer(delayMs, resolve));
}

async function fenceNode(
  link: ReplicaStream,
  epoch: number,
  segments: number[],
  deadlineMs: number,
  clock: Clock,
  judgedDown: () => boolean,
): Promise<FencedSegment[] | null> {
  for (;;) {
    try {
      const reply = await callReplica(link, "fence", link.fenceBody(epoch, segments));
      return JSON.parse(new TextDecoder().decode(reply.subarray(1))).segments;
    } catch (err) {
      if ((err as { code?: string }).code === "STALE_EPOCH") {
        throw new FencedError(`a newer owner fenced this one: ${(err as Error).message}`);
      }
      if (clock.nowMs() > deadlineMs || judgedDown()) return null;
      await sleep(clock, fenceRetryDelayMs);
    }
  }
}

export async function fetchVersions(
  link: Pick<ReplicaStream, "call">,
  epoch: number,
  segment: number,
  blockCount: number,
): Promise<Float64Array> {
  const out = new Float64Array(blockCount);
  for (let first = 0; first < blockCount; first += metaChunkBlocks) {
    const count = Math.min(metaChunkBlocks, blockCount - first);
    const reply = await callReplica(
      link,
      "meta",
      json({ epoch, segment, firstBlock: first, blockCount: count }),
    );
    // Copy: NATS hands out Buffers whose .buffer is a shared pool.
    out.set(new Float64Array(new Uint8Array(reply.subarray(1)).buffer), first);
  }
  return out;
}

/** Copies every block where `target` differs from the best in-sync version. */
/** Copy runs in flight at once per segment copy: keeps the source and target busy. */
export const copyRunsInFlight = 8;

/** Hooks of an online copy: pacing (a rate limit) and progress. */
export interface CopyHooks {
  /** Waits until `bytes` more may be copied (a rate limit); resolves at once without one. */
  pace?: (bytes: number) => Promise<void>;
  /** `blocks` more were copied. */
  copied?: (blocks: number) => void;
}

/** Runs of blocks the target lacks, each servable by one source: [first, end, source]. */
function copyRuns(
  blockCount: number,
  sources: Map<string, Float64Array>,
  targetVersions: Float64Array,
): [number, number, string][] {
  const runs: [number, number, string][] = [];
  let block = 0;
  while (block < blockCount) {
    // Find the best source of this block; then extend a run that one source can serve.
    let best = 0;
    let bestNode = "";
    for (const [node, versions] of sources) {
      if (versions[block] > best || !bestNode) [best, bestNode] = [versions[block], node];
    }
    if (targetVersions[block] === best) {
      block++;
      continue;
    }
    const source = sources.get(bestNode)!;
    let end = block + 1;
    while (
      end < blockCount && end - block < copyRunBlocks && targetVersions[end] !== source[end] &&
      [...sources.values()].every((v) => v[end] <= source[end])
    ) end++;
    runs.push([block, end, bestNode]);
    block = end;
  }
  return runs;
}

/** How many blocks catchUp would copy (for progress: what remains). */
export function blocksToCopy(
  blockCount: number,
  sources: Map<string, Float64Array>,
  targetVersions: Float64Array,
): number {
  return copyRuns(blockCount, sources, targetVersions).reduce((n, [a, b]) => n + b - a, 0);
}

export async function catchUp(
  input: Pick<ReconcileInput, "name" | "link" | "log">,
  epoch: number,
  segment: number,
  blockCount: number,
  sources: Map<string, Float64Array>,
  target: string,
  targetVersions: Float64Array,
  /**
   * While the volume serves IO, copies must never undo a newer write that
   * reached the target directly: send them as version-guarded repairs.
   */
  online = false,
  hooks: CopyHooks = {},
  /**
   * Other copies of the segment (stale ones, neither a source nor the target): one that holds
   * a block at exactly the version a source has rotten gives it, as versions are unique.
   */
  spares: readonly string[] = [],
): Promise<number> {
  const runs = copyRuns(blockCount, sources, targetVersions);
  let copied = 0;
  const copyRun = async ([block, end, bestNode]: [number, number, string]) => {
    await hooks.pace?.((end - block) * blockSizeBytes);
    const source = sources.get(bestNode)!;
    const read = await input.link(bestNode).read({
      segment,
      epoch,
      firstBlock: block,
      blockCount: end - block,
    });
    const entries: WriteEntry[] = [];
    /** Whether entries[k] holds bytes straight from `read` (so it can grow over the next block). */
    const fromRun: boolean[] = [];
    for (let i = 0; i < end - block; i++) {
      let state = read.states[i];
      let data = read.data.subarray(i * blockSizeBytes, (i + 1) * blockSizeBytes);
      let contiguous = true;
      if (state === "corrupt") {
        // Never skip it: the target would claim a version it does not hold. Versions are
        // unique, so another source with the same version holds the same bytes.
        input.log.error(
          `reconcile ${input.name}/${segment}: block ${block + i} rotten on ${bestNode}`,
        );
        const good = await readGoodCopy(input, epoch, segment, block + i, source[block + i], {
          sources,
          except: bestNode,
          spares: spares.filter((n) => n !== target && !sources.has(n)),
        });
        state = good.state;
        data = good.data;
        contiguous = false;
      }
      const version = read.versions[i];
      const kind = online
        ? EntryKind.repair
        : state === "written"
        ? EntryKind.data
        : EntryKind.zero;
      // Blocks of one write share its version: one entry for the run of them, so a large
      // write is copied as one large entry (written in place) rather than block by block.
      const last = entries.at(-1);
      if (
        last && contiguous && fromRun.at(-1) && last.kind === kind && last.version === version &&
        last.firstBlock + last.blockCount === block + i
      ) {
        last.blockCount++;
        if (kind !== EntryKind.zero) {
          last.data = read.data.subarray(
            (last.firstBlock - block) * blockSizeBytes,
            (i + 1) * blockSizeBytes,
          );
        }
        continue;
      }
      const base = { segment, firstBlock: block + i, blockCount: 1, version };
      entries.push(kind === EntryKind.zero ? { ...base, kind } : { ...base, kind, data });
      fromRun.push(contiguous);
    }
    if (entries.length) {
      await input.link(target).write(epoch, entries);
    }
    const blocks = entries.reduce((n, e) => n + e.blockCount, 0);
    copied += blocks;
    hooks.copied?.(blocks);
  };
  // A few runs in flight at once: each is a read, then a write the target fdatasyncs.
  let next = 0;
  let failed = false;
  await Promise.all(
    Array.from({ length: Math.min(copyRunsInFlight, runs.length) }, async () => {
      while (!failed && next < runs.length) {
        try {
          await copyRun(runs[next++]);
        } catch (err) {
          failed = true; // the other runs stop too; the caller retries the copy
          throw err;
        }
      }
    }),
  );
  return copied;
}

/**
 * One block at exactly `version` from a source other than `except`, or else from a spare,
 * whose copy passes its checksum; CORRUPT if none has one (the copy fails, and the target
 * stays out of sync). Without the spares, a block rotten on a segment's last in-sync copy kept
 * every other copy out of sync for good, though a stale one held that version whole
 * (simulator seeds 3011 and 3063: rot while all three were in sync, then two went stale).
 */
async function readGoodCopy(
  input: Pick<ReconcileInput, "name" | "link">,
  epoch: number,
  segment: number,
  block: number,
  version: number,
  where: { sources: Map<string, Float64Array>; except: string; spares?: readonly string[] },
): Promise<{ state: ReadResult["states"][number]; data: Uint8Array }> {
  const candidates = [
    ...[...where.sources].filter(([node, versions]) =>
      node !== where.except && versions[block] === version
    ).map(([node]) => node),
    ...where.spares ?? [],
  ];
  for (const node of candidates) {
    try {
      const read = await input.link(node).read({
        segment,
        epoch,
        firstBlock: block,
        blockCount: 1,
      });
      if (read.states[0] !== "corrupt" && read.versions[0] === version) {
        return { state: read.states[0], data: read.data };
      }
    } catch {
      // try the next source
    }
  }
  throw new CairnError(
    "CORRUPT",
    `volume ${input.name} segment ${segment} block ${block}: no source holds a good copy of version ${version}; not copied`,
  );
}

/**
 * After a power loss of every copy (all kept, all suspect), a copy may hold an unflushed
 * write torn in place: its version's metadata landed, not its data, so the block fails its
 * checksum. Where no other copy holds that version, the write was never durable (a durable
 * write is on every in-sync copy), so that copy is no source of the block: the block takes
 * the newest version another copy holds, as it would had the write been lost whole, and the
 * torn copy is rewritten with it. Without this the torn block is the block's only newest
 * version: it reads CORRUPT and no other copy can be caught up. Rot of a version another
 * copy holds whole is left to the usual path (the copy comes from that other copy).
 */
async function dropTornVersions(
  input: Pick<ReconcileInput, "name" | "link" | "log">,
  epoch: number,
  segment: number,
  sources: Map<string, Float64Array>,
): Promise<Set<number>> {
  const corrupt = new Map<string, number[]>();
  for (const node of sources.keys()) {
    const reply = await callReplica(input.link(node), "scrub", json({ epoch, segment }));
    const blocks = (JSON.parse(decoder.decode(reply.subarray(1))) as { corruptBlocks: number[] })
      .corruptBlocks;
    if (blocks.length) corrupt.set(node, blocks);
  }
  // Blocks no copy holds whole (each copy tore its own unflushed write, or rotted): there is
  // no version to take and nothing to copy. Each copy keeps its block, which reads CORRUPT
  // until it is written again (docs/SEGMENT_FORMAT.md); the copies stay in sync for every
  // other block. Copying them would fail on every target and leave the segment without an
  // in-sync copy, the volume without a possible owner (sim seed 1047).
  const nowhereWhole = new Set<number>();
  for (const blocks of corrupt.values()) {
    for (const block of blocks) {
      if ([...sources.keys()].every((node) => corrupt.get(node)?.includes(block))) {
        nowhereWhole.add(block);
      }
    }
  }
  for (const block of nowhereWhole) {
    input.log.error(
      `volume ${input.name} segment ${segment} block ${block}: no copy holds it whole after ` +
        `the power loss (each tore or rotted); it reads CORRUPT until it is written again`,
    );
  }
  for (const [node, blocks] of corrupt) {
    // A copy of its own: the target side of the same node keeps the real versions.
    const versions = new Float64Array(sources.get(node)!);
    for (const block of blocks) {
      if (nowhereWhole.has(block)) continue;
      const version = versions[block];
      // Held whole elsewhere: rot, or a tear on this copy only; the copy comes from there.
      // Held torn by every copy that has it (seed 1530: two copies tore the same unflushed
      // write, the third lacks it), it was never durable either: a durable write is whole
      // on every in-sync copy, and a copy here holds the block whole without it.
      const elsewhere = [...sources].some(([other, v]) =>
        other !== node && v[block] === version && !corrupt.get(other)?.includes(block)
      );
      if (elsewhere) continue;
      versions[block] = -1;
      input.log.warn(
        `volume ${input.name} segment ${segment} block ${block}: version ${version} on ${node} ` +
          `is torn and no other copy holds it (an unflushed write, lost in the power loss); ` +
          `the block takes the newest version another copy holds`,
      );
    }
    sources.set(node, versions);
  }
  return nowhereWhole;
}

export async function reconcileVolume(input: ReconcileInput): Promise<{
  layout: VolumeLayout;
  highestVersions: Map<number, number>;
  summary: string;
  /** Some segment kept copies that all lost power: unflushed cached writes may be gone. */
  lostCachedWrites: boolean;
}> {
  let layout = input.layout;
  const epoch = layout.term;
  const deadlineMs = input.clock.nowMs() + takeoverReplicaWaitMs;
  const nodeSegments = segmentsByNode(layout);
  const fenced = new Map<string, Map<number, number>>();
  /** Per segment, the nodes whose replica answered suspect. */
  const suspects = new Map<number, Set<string>>();
  await Promise.all([...nodeSegments].map(async ([node, segments]) => {
    const result = await fenceNode(
      input.link(node),
      epoch,
      segments,
      deadlineMs,
      input.clock,
      () => input.judgedDown?.(node) ?? false,
    );
    if (result) fenced.set(node, new Map(result.map((s) => [s.segment, s.maxVersion])));
    else input.log.warn(`volume ${input.name}: replica node ${node} did not answer the fence`);
    for (const s of result ?? []) {
      if (s.suspect) suspects.set(s.segment, (suspects.get(s.segment) ?? new Set()).add(node));
    }
  }));

  const highestVersions = new Map<number, number>();
  let lostCachedWrites = false;
  const stateChanges: { segment: number; node: string; state: "in-sync" | "stale" }[] = [];
  let copiedBlocks = 0;
  const blockCount = input.segmentBytes / blockSizeBytes;
  for (let segment = 0; segment < layout.segments.length; segment++) {
    const replicas = layout.segments[segment].replicas;
    let reachable = replicas.filter((r) => fenced.get(r.node)?.has(segment));
    // A replica that may have lost unflushed cached writes in a power loss is no source while
    // another in-sync one answered: it is marked stale below and caught up. Where every
    // in-sync copy is suspect (the whole cluster lost power) they are all there is.
    const suspect = suspects.get(segment);
    let keptSuspect = false;
    if (suspect && reachable.some((r) => r.state === "in-sync" && !suspect.has(r.node))) {
      for (const node of suspect) fenced.get(node)?.delete(segment);
      reachable = reachable.filter((r) => !suspect.has(r.node));
    } else if (suspect) {
      input.log.warn(
        `volume ${input.name} segment ${segment}: every in-sync copy answered suspect (a ` +
          `power loss with unflushed cached writes); kept, as a disk after a power loss`,
      );
      keptSuspect = true;
      lostCachedWrites = true;
    }
    const sources = reachable.filter((r) => r.state === "in-sync");
    for (const r of replicas) {
      if (r.state !== "stale" && !fenced.get(r.node)?.has(segment)) {
        stateChanges.push({ segment, node: r.node, state: "stale" });
      }
    }
    if (sources.length === 0) {
      throw new CairnError(
        "UNAVAILABLE",
        `volume ${input.name} segment ${segment}: no in-sync replica answered`,
      );
    }
    const maxVersions = reachable.map((r) => fenced.get(r.node)!.get(segment)!);
    highestVersions.set(segment, Math.max(...maxVersions));
    // Copies kept after a power loss of every one may differ below their highest versions
    // (each lost its own unflushed writes): always compared.
    const allAgree = !keptSuspect && maxVersions.every((v) => v === maxVersions[0]) &&
      reachable.every((r) => r.state === "in-sync");
    if (allAgree) continue;

    // Replicas disagree (a crash cut writes short, or a stale replica came back): diff and copy.
    const versions = new Map<string, Float64Array>();
    for (const r of reachable) {
      versions.set(r.node, await fetchVersions(input.link(r.node), epoch, segment, blockCount));
    }
    const sourceVersions = new Map(sources.map((r) => [r.node, versions.get(r.node)!]));
    const uncopyable = keptSuspect && sources.length > 1
      ? await dropTornVersions(input, epoch, segment, sourceVersions)
      : new Set<number>();
    for (const r of reachable) {
      let targetVersions = versions.get(r.node)!;
      if (uncopyable.size && sourceVersions.has(r.node)) {
        // A source's own torn block counts as held at the newest version: not copied (see
        // dropTornVersions). Any other copy still needs it and stays stale without it: its
        // block may hold an older version whole, which must not be read.
        targetVersions = Float64Array.from(targetVersions);
        for (const block of uncopyable) {
          targetVersions[block] = Math.max(...[...sourceVersions.values()].map((v) => v[block]));
        }
      }
      let copied: number;
      try {
        copied = await catchUp(
          input,
          epoch,
          segment,
          blockCount,
          sourceVersions,
          r.node,
          targetVersions,
          false,
          {},
          reachable.map((spare) => spare.node),
        );
      } catch (err) {
        if (!(err instanceof CairnError && err.code === "CORRUPT")) throw err;
        // The newest copy of some block rotted on every source: that block reads CORRUPT
        // (its only copies are bad), and this replica, which lacks it, is not in sync. The
        // takeover goes on; one lost block must not take the whole volume down.
        input.log.error(`${err.message}; ${r.node} stays out of sync for segment ${segment}`);
        if (r.state !== "stale") stateChanges.push({ segment, node: r.node, state: "stale" });
        continue;
      }
      copiedBlocks += copied;
      if (r.state !== "in-sync") stateChanges.push({ segment, node: r.node, state: "in-sync" });
    }
  }

  if (stateChanges.length) {
    const claim: OwnerClaim = { volumeId: layout.volumeId, owner: layout.owner, term: layout.term };
    const edit = await editLayout(
      input.metadata,
      input.name,
      claim,
      (current) => setReplicaStates(current, stateChanges),
    );
    if (edit.kind === "fenced") {
      throw new FencedError(`layout of ${input.name} changed owner or term during takeover`);
    }
    layout = edit.layout.value;
  }
  const summary = `${fenced.size}/${nodeSegments.size} replica nodes answered, ` +
    `${copiedBlocks} blocks copied, ${stateChanges.length} replica state changes`;
  return { layout, highestVersions, summary, lostCachedWrites };
}
