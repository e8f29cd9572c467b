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

/** The pull's own bound on a call: a sink stops when it fires, whatever its own timeout says. */
export interface CallOptions {
  signal?: AbortSignal;
}

/** An alert version a sink already holds: id and canonical `lastUpdateTime`. */
export interface StoredVersion {
  id: string;
  updatedAtKey: string;
  updatedAtMs: number;
}

/**
 * A durable destination for alerts. `write` resolves only once the batch is durable; the
 * pipeline advances the checkpoint after that and never before. Writing the same key and
 * versions twice must replace, not duplicate.
 */
export interface AlertSink {
  write(key: AlertBatchKey, alerts: readonly AlertEnvelope[], options?: CallOptions): Promise<void>;
  /**
   * The versions stored for a page's bounds, whatever its `$skip`. A pull that resumes asks this
   * about the page that was in flight, so what an earlier attempt stored is not stored again
   * even if the service orders the page differently this time. A sink that cannot tell leaves
   * it out; a resume then repeats at most that one page.
   */
  storedVersions?(page: Omit<AlertBatchKey, "skip" | "resumed">, options?: CallOptions): Promise<StoredVersion[]>;
}

/** The caller's signal and a timeout of the callee's own, whichever fires first. */
export function boundedSignal(timeoutMs: number, options?: CallOptions): AbortSignal {
  const own = AbortSignal.timeout(timeoutMs);
  return options?.signal ? AbortSignal.any([own, options.signal]) : own;
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
