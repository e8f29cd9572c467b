import { logs, SeverityNumber, type AnyValueMap } from "@opentelemetry/api-logs";
import type { LogFields } from "../logging";
import { APP_VERSION } from "../version";
import { TELEMETRY_SCOPE } from "./names";

export type LogSeverity = "info" | "warn" | "error";

const SEVERITY: Record<LogSeverity, { number: SeverityNumber; text: string }> = {
  info: { number: SeverityNumber.INFO, text: "Information" },
  warn: { number: SeverityNumber.WARN, text: "Warning" },
  error: { number: SeverityNumber.ERROR, text: "Error" },
};

/** Fields as record attributes: absent values are left out rather than sent as empty dimensions. */
export function attributesOf(fields: LogFields): AnyValueMap {
  const attributes: AnyValueMap = {};
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null) attributes[key] = value;
  }
  return attributes;
}

/**
 * Emits one log record through the OpenTelemetry Logs API: the message is the body and every
 * field an attribute, which Azure Monitor stores as a custom dimension (AppTraces.Properties).
 * The logger is looked up on every call because the SDK registers its provider after the core's
 * modules load (and tests register theirs); with none registered this is a no-op.
 */
export function emitLogRecord(severity: LogSeverity, message: string, fields: LogFields): void {
  const level = SEVERITY[severity];
  logs.getLogger(TELEMETRY_SCOPE, APP_VERSION).emit({
    severityNumber: level.number,
    severityText: level.text,
    body: message,
    attributes: attributesOf(fields),
  });
}
