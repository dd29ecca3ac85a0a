/** A progress bar on a terminal; silent when stderr is not one. */
import { formatBytes } from "./args.ts";

const barWidth = 30;
const redrawIntervalMs = 100;

export class Progress {
  private readonly startMs = performance.now();
  private lastDrawMs = 0;
  private readonly enabled = Deno.stderr.isTerminal();
  private readonly encoder = new TextEncoder();

  constructor(private readonly label: string, private readonly totalBytes: number) {}

  update(doneBytes: number, force = false): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (!force && now - this.lastDrawMs < redrawIntervalMs) return;
    this.lastDrawMs = now;
    const fraction = this.totalBytes ? doneBytes / this.totalBytes : 1;
    const filled = Math.round(fraction * barWidth);
    const seconds = Math.max((now - this.startMs) / 1000, 0.001);
    const rate = doneBytes / seconds;
    const line = `\r${this.label} [${"#".repeat(filled)}${" ".repeat(barWidth - filled)}] ` +
      `${(fraction * 100).toFixed(0).padStart(3)}% ${formatBytes(doneBytes)}/${
        formatBytes(this.totalBytes)
      } ` +
      `${formatBytes(rate)}/s `;
    Deno.stderr.writeSync(this.encoder.encode(line));
  }

  done(doneBytes: number): void {
    this.update(doneBytes, true);
    if (this.enabled) Deno.stderr.writeSync(this.encoder.encode("\n"));
  }
}
