/** Line logger to stderr: time, node, level, message. */
import type { Logger } from "../actors/replica/host.ts";

export function makeLogger(nodeId: string, quiet = false): Logger {
  const line = (level: string, message: string) => {
    if (quiet && level === "info") return;
    console.error(`${new Date().toISOString()} ${nodeId} ${level} ${message}`);
  };
  return {
    info: (m) => line("info", m),
    warn: (m) => line("warn", m),
    error: (m) => line("error", m),
  };
}
