import type { LogFields, Logger } from "../../shared/logging";

export interface LogLine {
  level: "info" | "warn" | "error";
  message: string;
  fields: LogFields;
}

/** A Logger that keeps every line with its fields, for tests that assert what an operator would read. */
export function recordingLog(): { lines: LogLine[]; log: Logger } {
  const lines: LogLine[] = [];
  const log: Logger = {
    info: (message, fields = {}) => void lines.push({ level: "info", message, fields }),
    warn: (message, fields = {}) => void lines.push({ level: "warn", message, fields }),
    error: (message, fields = {}) => void lines.push({ level: "error", message, fields }),
  };
  return { lines, log };
}
