/** The replica actor of one segment: owns its segment file. */
import type { SegmentFile } from "./segment_file.ts";
import { decideEpoch, GroupSync } from "./core.ts";

export class StaleEpochError extends Error {}

export class Replica {
  private readonly groupSync: GroupSync;

  constructor(readonly file: SegmentFile) {
    this.groupSync = new GroupSync(() => file.datasync());
  }

  get epoch(): number {
    return this.file.epoch;
  }

  /**
   * Refuses a lower term and changes nothing: reads, version listings and scrubs
   * are checked, never admitted, so a read-only caller cannot fence the owner.
   */
  check(term: number): void {
    if (term < this.file.epoch) {
      throw new StaleEpochError(
        `segment ${this.file.volume}/${this.file.segmentIndex} has seen term ${this.file.epoch}, request has ${term}`,
      );
    }
  }

  /** Refuses a lower term; records a higher one (durable with the next sync). */
  async admit(epoch: number): Promise<void> {
    const decision = decideEpoch(this.file.epoch, epoch);
    if (decision === "reject") {
      throw new StaleEpochError(
        `segment ${this.file.volume}/${this.file.segmentIndex} has seen epoch ${this.file.epoch}, request has ${epoch}`,
      );
    }
    if (decision === "advance") await this.file.setEpoch(epoch);
  }

  sync(): Promise<void> {
    return this.groupSync.sync();
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
