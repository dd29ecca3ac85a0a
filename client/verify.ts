/**
 * `volume verify`: every segment's in-sync replicas scrubbed (every checksum
 * checked) and their data and version digests compared.
 */
import type { CairnClient } from "./client.ts";
import { subjects } from "../protocol/subjects.ts";
import { decodeReply } from "../actors/replica/wire.ts";
import { encodeJson } from "../protocol/control.ts";
import { replicaTimeoutMs } from "../protocol/limits.ts";

/** Scrubbing reads a whole segment; allow it a long time. */
const scrubTimeoutMs = Math.max(replicaTimeoutMs, 120_000);

export interface VerifyProgress {
  segmentsDone: number;
  segmentsTotal: number;
}

export interface SegmentMismatch {
  segment: number;
  problem: string;
}

export interface VerifyReport {
  volume: string;
  segments: number;
  replicasChecked: number;
  mismatches: SegmentMismatch[];
  ok: boolean;
}

interface ScrubResult {
  corruptBlocks: number[];
  dataDigest: string;
  metaDigest: string;
}

export async function verifyVolume(
  client: CairnClient,
  name: string,
  onProgress?: (p: VerifyProgress) => void,
): Promise<VerifyReport> {
  const info = await client.volumeInfo(name);
  const mismatches: SegmentMismatch[] = [];
  let replicasChecked = 0;
  const decoder = new TextDecoder();
  for (const segment of info.segments) {
    const inSync = segment.replicas.filter((r) => r.state === "in-sync");
    const results = new Map<string, ScrubResult>();
    for (const replica of segment.replicas.filter((r) => r.state !== "in-sync")) {
      mismatches.push({
        segment: segment.index,
        problem: `replica on ${replica.node} is ${replica.state}`,
      });
    }
    await Promise.all(inSync.map(async ({ node }) => {
      try {
        const msg = await client.nc.request(
          // By volume id, without a term: an observer's scrub is checked by nothing and
          // changes nothing, so verify can never fence the serving owner.
          subjects.replica(node, info.id, "scrub"),
          encodeJson({ segment: segment.index }),
          { timeout: scrubTimeoutMs },
        );
        const { status, body } = decodeReply(msg.data);
        if (status !== 0) throw new Error(decoder.decode(body));
        results.set(node, JSON.parse(decoder.decode(body)));
        replicasChecked++;
      } catch (err) {
        mismatches.push({
          segment: segment.index,
          problem: `replica on ${node} could not be scrubbed: ${(err as Error).message}`,
        });
      }
    }));
    const entries = [...results];
    for (const [node, result] of entries) {
      if (result.corruptBlocks.length) {
        mismatches.push({
          segment: segment.index,
          problem:
            `replica on ${node} has ${result.corruptBlocks.length} blocks failing their checksum (first: ${
              result.corruptBlocks.slice(0, 8).join(", ")
            })`,
        });
      }
    }
    const [referenceNode, reference] = entries[0] ?? [];
    for (const [node, result] of entries.slice(1)) {
      if (result.dataDigest !== reference!.dataDigest) {
        mismatches.push({
          segment: segment.index,
          problem: `data differs between ${referenceNode} and ${node}`,
        });
      } else if (result.metaDigest !== reference!.metaDigest) {
        mismatches.push({
          segment: segment.index,
          problem: `block versions differ between ${referenceNode} and ${node}`,
        });
      }
    }
    if (inSync.length === 0) {
      mismatches.push({ segment: segment.index, problem: "no in-sync replica" });
    }
    onProgress?.({ segmentsDone: segment.index + 1, segmentsTotal: info.segments.length });
  }
  return {
    volume: name,
    segments: info.segments.length,
    replicasChecked,
    mismatches,
    ok: mismatches.length === 0,
  };
}
