/** Formatting of the bench's one markdown table. */

export const dash = "—";

export function formatCount(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

export function formatMs(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return dash;
  return ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0);
}

export function formatMiB(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function formatPercent(ratio: number | undefined): string {
  if (ratio === undefined || !Number.isFinite(ratio)) return dash;
  return `${(ratio * 100).toFixed(ratio < 0.1 ? 1 : 0)}%`;
}

/** Keeps a cell on one line and free of the column separator. */
export function cell(text: string): string {
  return text.replace(/\s+/g, " ").replaceAll("|", "\\|").trim() || dash;
}

/** An error as a short table cell. */
export function errorCell(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const short = message.length > 120 ? `${message.slice(0, 117)}...` : message;
  return `error: ${short}`;
}

export function markdownTable(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.map(cell).join(" | ")} |`;
  const rule = `|${header.map(() => "---").join("|")}|`;
  return [line(header), rule, ...rows.map(line)].join("\n");
}
