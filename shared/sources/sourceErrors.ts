import type { AlertSourceKind } from "./alertSources";

/*
 * The errors every alert source's client throws. They keep the Defender names they were born
 * with: the pull classifies failures by these classes and codes, and one set of classes for all
 * sources keeps that classification in one place. `source` tells which service failed, so a
 * failure can be named per source (e.g. `graph_forbidden`).
 */

/** The services alerts are read from: the Defender for Endpoint API, or Microsoft Graph `security/alerts_v2`. */
export type AlertSource = AlertSourceKind;

export type DefenderErrorCode =
  | "unauthorized"
  | "forbidden"
  | "throttled"
  | "server_error"
  | "bad_request"
  | "not_found"
  | "timeout"
  | "network"
  | "budget_exhausted"
  | "deadline"
  | "invalid_response";

const RETRYABLE_BY_DEFAULT: ReadonlySet<DefenderErrorCode> = new Set<DefenderErrorCode>([
  "throttled",
  "server_error",
  "timeout",
  "network",
  "budget_exhausted",
  "deadline",
]);

export interface DefenderApiErrorOptions {
  status?: number;
  apiCode?: string;
  retryable?: boolean;
  /** Which service failed; "mde" when not said, as every error was before Graph. */
  source?: AlertSource;
}

/**
 * A failed alerts API call. The message is written here and may name the host, the path,
 * the HTTP status and the API's error code (e.g. "InvalidInput"); it never carries the token,
 * the request's query string or the response body.
 */
export class DefenderApiError extends Error {
  readonly code: DefenderErrorCode;
  readonly status?: number;
  /** The service's `error.code` (e.g. "InvalidInput"), when it sent a well-formed one. */
  readonly apiCode?: string;
  /** True when a later run (or a later retry) may succeed without anyone changing anything. */
  readonly retryable: boolean;
  /** The service that failed. */
  readonly source: AlertSource;

  constructor(code: DefenderErrorCode, message: string, options: DefenderApiErrorOptions = {}) {
    super(message);
    this.name = "DefenderApiError";
    this.code = code;
    if (options.status !== undefined) this.status = options.status;
    if (options.apiCode !== undefined) this.apiCode = options.apiCode;
    this.retryable = options.retryable ?? RETRYABLE_BY_DEFAULT.has(code);
    this.source = options.source ?? "mde";
  }
}

/**
 * A page that never arrived as valid JSON. Carries the raw body for the dead-letter store only:
 * the message never quotes it.
 */
export class InvalidPageError extends DefenderApiError {
  constructor(
    message: string,
    readonly raw: string,
    /** The answer was larger than a page of this size may be: refused unread, so a smaller span is the cure. */
    readonly tooLarge = false,
    source: AlertSource = "mde",
  ) {
    super("invalid_response", message, { retryable: false, source });
    this.name = "InvalidPageError";
  }
}
