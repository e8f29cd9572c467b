import type { DefenderAlert } from "../defender/types";

/** One NDJSON line as the sink stores it. */
export interface AlertEnvelope {
  tenantId: string;
  tenantName: string;
  source: "mde";
  pulledAt: string;
  alert: DefenderAlert;
}

/**
 * Which page a batch came from: the sub-window `[pageFrom, pageTo)` of version times and the
 * `$skip` inside it (non-zero only when one millisecond holds more than a page). A retry of the
 * same page carries the same key.
 */
export interface AlertBatchKey {
  tenantId: string;
  pageFrom: string;
  pageTo: string;
  skip: number;
  /**
   * The page is the first one written after a pull resumed: an earlier attempt may have
   * written it (or a version of it) before dying, so a sink that can tell should not store
   * what it already holds.
   */
  resumed?: boolean;
}

/**
 * A durable destination for alerts. `write` resolves only once the batch is durable; the
 * pipeline advances the checkpoint after that and never before. Writing the same key and
 * versions twice must replace, not duplicate.
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
