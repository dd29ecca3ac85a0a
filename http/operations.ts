/**
 * Long operations behind the HTTP API (today: volume verify): started by a request,
 * run in the background on the node that answered it, polled by id. Kept in memory on
 * that node only, and lost when it restarts.
 */
import { CairnError } from "../protocol/errors.ts";
import type { Operation, VerifyProgress, VerifyReport } from "../protocol/schemas.ts";

/** Most operations running at once on one node (each scrubs whole volumes). */
export const maxRunningOperations = 4;
/** Most finished operations kept for polling; the oldest finished go first. */
export const maxKeptOperations = 100;

export class OperationStore {
  private readonly operations = new Map<string, Operation>();

  constructor(
    private readonly now: () => Date = () => new Date(),
    /** Told of every change (start, progress, end), with a copy: the live events (live.ts). */
    private readonly onChange: (op: Operation) => void = () => {},
  ) {}

  get(id: string): Operation | undefined {
    const op = this.operations.get(id);
    return op && structuredClone(op);
  }

  private running(): number {
    return [...this.operations.values()].filter((o) => o.state === "running").length;
  }

  /**
   * Starts a verify of `volume` with `segments` segments; BUSY when too many run already.
   * Returns the operation as it is at start.
   */
  startVerify(
    volume: string,
    segments: number,
    run: (onProgress: (p: VerifyProgress) => void) => Promise<VerifyReport>,
  ): Operation {
    if (this.running() >= maxRunningOperations) {
      throw new CairnError(
        "BUSY",
        `${maxRunningOperations} operations are running on this node; try again later`,
      );
    }
    const op: Operation = {
      id: crypto.randomUUID(),
      kind: "volume.verify",
      volume,
      state: "running",
      progress: { done: 0, total: segments, unit: "segments" },
      startedAt: this.now().toISOString(),
      finishedAt: null,
      result: null,
      error: null,
    };
    this.operations.set(op.id, op);
    this.forgetOldest();
    const changed = () => this.onChange(structuredClone(op));
    changed();
    run((p) => {
      op.progress = { done: p.segmentsDone, total: p.segmentsTotal, unit: "segments" };
      changed();
    }).then((report) => {
      op.result = report;
      op.state = "succeeded";
    }, (err) => {
      op.error = err instanceof CairnError
        ? { code: err.code, message: err.detail }
        : { code: "INTERNAL", message: (err as Error)?.message ?? String(err) };
      op.state = "failed";
    }).finally(() => {
      op.finishedAt = this.now().toISOString();
      changed();
    });
    return structuredClone(op);
  }

  private forgetOldest(): void {
    for (const [id, op] of this.operations) {
      if (this.operations.size <= maxKeptOperations) return;
      if (op.state !== "running") this.operations.delete(id);
    }
  }
}
