import { isAggregateLogsUploadError } from "@azure/monitor-ingestion";
import { statusOf } from "../../errors";
import { SinkError } from "../alertSink";

/** Statuses that a retry of the same request cannot fix (413: the sink already trimmed and chunked below the limits). */
const PERMANENT = new Set([400, 401, 403, 404, 413]);

/** What an operator should check, per status: fixed text, never anything the service sent. */
const HINTS: Record<number, string> = {
  400: "the records do not match the DCR's stream declaration",
  401: "the token was not accepted",
  403: "the app's identity lacks Monitoring Metrics Publisher on the data collection rule (a new assignment takes up to 30 minutes)",
  404: "the endpoint does not know the DCR immutable id or the stream",
  413: "a call was larger than the service accepts",
  429: "throttled by the data collection rule's limits",
};

/** A plain service code such as `OperationFailed`: anything else (free text, a quoted token) is dropped. */
const PLAIN_CODE = /^[A-Za-z][A-Za-z0-9_.]{0,63}$/;

export interface UploadProgress {
  ingested: number;
  total: number;
}

/**
 * The SinkError for a failed upload: status, Retry-After, permanence and the service's code, with
 * a message of our own. The SDK's error messages quote the response body, so none of them, no
 * header and no body text ever reaches the message.
 */
export function uploadFailure(error: unknown, aborted: boolean, progress: UploadProgress): SinkError {
  const cause = isAggregateLogsUploadError(error) ? error.errors[0]?.cause : error;
  const kept = `${progress.ingested} of ${progress.total} records were ingested and are not sent again by this instance`;
  if (aborted) {
    return new SinkError(`Sending alerts to Log Analytics was stopped: the call's time was up or it was cancelled; ${kept}`);
  }
  const status = statusOf(cause);
  if (status === undefined) return new SinkError(`Sending alerts to Log Analytics failed (no HTTP response: network, TLS or token failure); ${kept}`);
  const hint = HINTS[status] ?? (status >= 500 ? "service error" : "unexpected answer");
  const retryAfterMs = retryAfterOf(cause);
  const code = serviceCodeOf(cause);
  return new SinkError(`Sending alerts to Log Analytics failed (HTTP ${status}: ${hint}); ${kept}`, status, {
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    ...(PERMANENT.has(status) ? { permanent: true } : {}),
    ...(code === undefined ? {} : { code }),
  });
}

interface ResponseLike {
  headers?: { get(name: string): string | undefined };
  bodyAsText?: string | null;
}

function responseOf(error: unknown): ResponseLike | undefined {
  if (typeof error !== "object" || error === null || !("response" in error)) return undefined;
  const response = (error as { response?: unknown }).response;
  return typeof response === "object" && response !== null ? (response as ResponseLike) : undefined;
}

/** `retry-after-ms`, `x-ms-retry-after-ms`, or `Retry-After` in seconds or as an HTTP date. */
export function retryAfterOf(error: unknown, now = Date.now()): number | undefined {
  const headers = responseOf(error)?.headers;
  if (!headers || typeof headers.get !== "function") return undefined;
  for (const name of ["retry-after-ms", "x-ms-retry-after-ms"]) {
    const ms = Number(headers.get(name));
    if (headers.get(name) && Number.isFinite(ms) && ms >= 0) return Math.round(ms);
  }
  const value = headers.get("retry-after")?.trim();
  if (!value) return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

/**
 * The service's `error.code`, when it is a plain identifier: the SDK's RestError carries it when
 * the body was JSON; else the body text or the `x-ms-error-code` header.
 */
function serviceCodeOf(error: unknown): string | undefined {
  const response = responseOf(error);
  // Stryker disable next-line LogicalOperator: only reached with an object that carries a status (statusOf), never null
  const candidates: unknown[] = [typeof error === "object" && error !== null ? (error as { code?: unknown }).code : undefined];
  try {
    const body = JSON.parse(response?.bodyAsText ?? "") as { error?: { code?: unknown } };
    // Stryker disable next-line OptionalChaining: inside the try, a body without `error` throws a TypeError the catch reads as no code
    candidates.push(body.error?.code);
  } catch {
    // Not JSON: no code from the body.
  }
  if (typeof response?.headers?.get === "function") candidates.push(response.headers.get("x-ms-error-code"));
  return candidates.find((code): code is string => typeof code === "string" && PLAIN_CODE.test(code));
}
