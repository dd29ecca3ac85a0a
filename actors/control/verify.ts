/**
 * `volume verify`: every segment's in-sync replicas scrubbed (every checksum
 * checked) and their data and version digests compared. One implementation for the
 * CLI (through a client's connection) and the HTTP API (on the node answering it).
 */
import type { Transport } from "../ports.ts";
import { subjects } from "../../protocol/subjects.ts";
import { decodeReply } from "../replica/wire.ts";
import { encodeJson } from "../../protocol/control.ts";
import { replicaTimeoutMs } from "../../protocol/limits.ts";
import type {
  SegmentMismatch,
  VerifyProgress,
  VerifyReport,
  VolumeInfo,
} from "../../protocol/schemas.ts";

export type { SegmentMismatch, VerifyProgress, VerifyReport };

/** Scrubbing reads a whole segment; allow it a long time. */
const scrubTimeoutMs = Math.max(replicaTimeoutMs, 120_000);

/** What verify needs: the volume's info and a way to reach every replica node. */
export interface VerifySource {
  volumeInfo(name: string): Promise<VolumeInfo>;
  transport: Transport;
}

interface ScrubResult {
  corruptBlocks: number[];
  dataDigest: string;
  metaDigest: string;
}

export async function verifyVolume(
  source: VerifySource,
  name: string,
  onProgress?: (p: VerifyProgress) => void,
): Promise<VerifyReport> {
  const info = await source.volumeInfo(name);
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
        const data = await source.transport.request(
          // By volume id, without a term: an observer's scrub is checked by nothing and
          // changes nothing, so verify can never fence the serving owner.
          subjects.replica(node, info.id, "scrub"),
          encodeJson({ segment: segment.index }),
          scrubTimeoutMs,
        );
        const { status, body } = decodeReply(data);
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
