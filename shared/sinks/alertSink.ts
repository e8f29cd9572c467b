import type { DefenderAlert } from "../defender/types";
import type { AlertSourceKind } from "../sources/alertSources";
import { timeoutSignal } from "../time/timeoutSignal";

/** One NDJSON line as the sink stores it. */
export interface AlertEnvelope {
  tenantId: string;
  tenantName: string;
  /** Which API the alert came from; `alert` is exactly what that API returned. */
  source: AlertSourceKind;
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
  /**
   * Resolves once every version of the batch is durable in the sink, except those listed as
   * refused (a version the sink can never take, e.g. larger than its per-record limit even after
   * the sink's own trimming): the pipeline dead-letters those and reports them in health.
   */
  write(key: AlertBatchKey, alerts: readonly AlertEnvelope[], options?: CallOptions): Promise<SinkWriteResult | void>;
  /**
   * The versions stored for a page's bounds, whatever its `$skip`. A pull that resumes asks this
   * about the page that was in flight, so what an earlier attempt stored is not stored again
   * even if the service orders the page differently this time. A sink that cannot tell leaves
   * it out; a resume then repeats at most that one page.
   */
  storedVersions?(page: Omit<AlertBatchKey, "skip" | "resumed">, options?: CallOptions): Promise<StoredVersion[]>;
}

/** What a sink could not take, by version; anything not listed here was stored. */
export interface SinkWriteResult {
  refused?: RefusedVersion[];
}

export interface RefusedVersion {
  alert: AlertEnvelope["alert"];
  /** `oversized`: over the sink's size limit even trimmed; `rejected`: the service refused it every time. */
  reason: "oversized" | "rejected";
  /** For the operator: which limit, in words; never the alert's content. */
  detail: string;
  /** Which sink refused it, when several were written as one (a re-drive). */
  sink?: string;
}

/** The caller's signal and a timeout of the callee's own, whichever fires first. */
export function boundedSignal(timeoutMs: number, options?: CallOptions): AbortSignal {
  return timeoutSignal(timeoutMs, options?.signal);
}

/**
 * A sink failure, described by status and a service code only (SDK errors echo request details,
 * and a SIEM's error body can echo a token). Nothing of the batch was acknowledged.
 */
export class SinkError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    readonly details: {
      /** The service asked to wait this long before the next attempt. */
      retryAfterMs?: number;
      /** It will not fix itself: credentials, permissions, a wrong endpoint or index. */
      permanent?: boolean;
      /** The service's own error code (e.g. a Splunk HEC code or a Logs Ingestion error code), when it is a plain identifier. */
      code?: string;
    } = {},
  ) {
    super(message);
    this.name = "SinkError";
  }
}
