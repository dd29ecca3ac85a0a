/** A volume actor's link to a replica host in the same process (unit tests). */
import type { ReplicaHost } from "../../actors/replica/host.ts";
import type { ReplicaLink } from "../../actors/volume/stream.ts";

export function inProcessLink(host: ReplicaHost, volumeId: string): ReplicaLink {
  return {
    call: (op, body) => host.handle(volumeId, op, body),
    write: (term, entries, seq, cached) =>
      host.writeEntries(volumeId, term, entries, undefined, seq, cached),
    read: (request) => host.readBlocks(volumeId, request),
  };
}
