import type { DefenderAlert } from "../defender/types";

/** One NDJSON line as the sink stores it. */
export interface AlertEnvelope {
  tenantId: string;
  tenantName: string;
  source: "mde";
  pulledAt: string;
  alert: DefenderAlert;
}

/** Where one batch goes: the same key always names the same object, so a retry replaces it. */
export interface AlertBatchKey {
  tenantId: string;
  windowFrom: string;
  windowTo: string;
  skip: number;
}

/**
 * A durable destination for alerts. `write` resolves only once the batch is durable; the
 * pipeline advances the checkpoint after that and never before. Writing the same key twice
 * must replace, not duplicate.
 */
export interface AlertSink {
  write(key: AlertBatchKey, alerts: readonly AlertEnvelope[]): Promise<void>;
}

/** A sink failure, described by status only (storage SDK errors echo request details). */
export class SinkError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "SinkError";
  }
}
