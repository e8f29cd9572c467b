import type { Clock } from "../clock";
import { HttpNetworkError, HttpResponseTooLargeError, HttpTimeoutError, type HttpClient, type HttpResponse } from "../http/httpClient";
import type { RateBudget } from "./rateBudget";
import type { FetchedPage, PageQuery } from "./types";
import { PageFormatError, scanPage } from "./pageScanner";

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

/**
 * A failed Defender API call. The message is written here and may name the host, the path,
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

  constructor(code: DefenderErrorCode, message: string, options: { status?: number; apiCode?: string; retryable?: boolean } = {}) {
    super(message);
    this.name = "DefenderApiError";
    this.code = code;
    if (options.status !== undefined) this.status = options.status;
    if (options.apiCode !== undefined) this.apiCode = options.apiCode;
    this.retryable = options.retryable ?? RETRYABLE_BY_DEFAULT.has(code);
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
  ) {
    super("invalid_response", message, { retryable: false });
    this.name = "InvalidPageError";
  }
}

export interface DefenderClientOptions {
  http: HttpClient;
  /** The partner User-Agent Microsoft asks MSSP integrations to send: `MdePartner-{Company}-{Product}/{Version}`. */
  userAgent: string;
  requestTimeoutMs: number;
  budget: RateBudget;
  clock: Clock;
  sleep: (ms: number) => Promise<void>;
  /** Transient failures (429, 5xx, timeouts, network) tolerated per page before giving up. */
  maxAttempts?: number;
  /** Longest Retry-After honoured as given; longer requests are shortened to this. */
  maxRetryAfterMs?: number;
  /** Source of backoff jitter in [0, 1); injected for deterministic tests. */
  random?: () => number;
}

const DEFAULT_RETRY_AFTER_MS = 10_000;
/** Reads of a page whose body does not parse before it is given up as invalid. */
const INVALID_PAGE_ATTEMPTS = 3;
const BACKOFF_BASE_MS = 1_000;
const BACKOFF_CAP_MS = 30_000;
/** The service's error codes are short identifiers; anything else in that field is not repeated. */
const SAFE_API_CODE = /^[A-Za-z][A-Za-z0-9_.]{0,63}$/;

/**
 * Reads the Defender for Endpoint alerts API (`GET /api/alerts`) one closed `lastUpdateTime`
 * window at a time, page by page, with the partner User-Agent, a per-tenant call budget and
 * retries that honour Retry-After.
 */
export class DefenderClient {
  private readonly maxAttempts: number;
  private readonly maxRetryAfterMs: number;
  private readonly random: () => number;

  constructor(private readonly options: DefenderClientOptions) {
    this.maxAttempts = options.maxAttempts ?? 5;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 120_000;
    this.random = options.random ?? Math.random;
    if (!Number.isInteger(this.maxAttempts) || this.maxAttempts < 1) throw new RangeError("DefenderClient: maxAttempts must be a positive integer");
    if (!Number.isInteger(options.requestTimeoutMs) || options.requestTimeoutMs < 1) {
      throw new RangeError("DefenderClient: requestTimeoutMs must be a positive integer");
    }
  }

  /**
   * One page of alerts whose version time lies in `[from, to)`: a single `GET /api/alerts` with
   * `$filter`, `$top` and `$skip`, retried through throttling, server errors, timeouts and an
   * unreadable body. The caller decides what a full page means (see the pull's sub-window
   * planner); this client never follows `@odata.nextLink`, so a link that loops or points at
   * another host can neither stall a pull nor carry the bearer token away.
   */
  async fetchPage(query: PageQuery): Promise<FetchedPage> {
    if (!Number.isInteger(query.top) || query.top < 1 || query.top > 10_000) {
      throw new RangeError("DefenderClient: top must be an integer between 1 and 10000");
    }
    if (!Number.isInteger(query.skip) || query.skip < 0) throw new RangeError("DefenderClient: skip must be a non-negative integer");
    const url = alertsUrl(query.baseUrl.replace(/\/+$/, ""), query);
    let lastRaw = "";
    for (let attempt = 1; ; attempt++) {
      const response = await this.fetch(url, query);
      try {
        const page = scanPage(response.body);
        const apiDate = httpDate(header(response, "date"));
        return { ...page, ...(apiDate !== undefined ? { apiDate } : {}) };
      } catch (error) {
        if (!(error instanceof PageFormatError)) throw error;
        lastRaw = response.body;
        // A body cut short in transit reads fine the next time; one that never parses is
        // handed to the caller whole, to be dead-lettered rather than to stop the tenant.
        if (attempt >= INVALID_PAGE_ATTEMPTS) {
          throw new InvalidPageError(`${describeUrl(url)} answered a page that is not valid JSON (${error.message}) ${attempt} times`, lastRaw);
        }
        // A proxy or gateway that cut the body short tends to do it for a moment: wait it out.
        const delay = this.jitter(attempt);
        if (this.options.clock() + delay > query.deadline) {
          throw new DefenderApiError("deadline", "The run's deadline passed while a page that was not valid JSON waited to be read again");
        }
        await this.options.sleep(delay);
      }
    }
  }

  /** One page request with budget, token refresh on 401 and retries; resolves only with a 2xx. */
  private async fetch(url: string, query: PageQuery): Promise<HttpResponse> {
    const { http, budget, clock, userAgent, requestTimeoutMs } = this.options;
    const where = describeUrl(url);
    let failures = 0;
    let refreshed = false;
    let freshToken: string | undefined;
    for (;;) {
      // Every send, retries included, starts before the deadline: the last one ends a request timeout after it at most.
      if (clock() > query.deadline) throw new DefenderApiError("deadline", "The run's deadline passed before the next page of alerts was requested");
      const token = freshToken ?? (await query.accessToken(false));
      freshToken = undefined;
      await budget.acquire(query.tenantId, query.deadline);
      let response: HttpResponse;
      try {
        response = await http.send(url, {
          method: "GET",
          headers: { Authorization: `Bearer ${token}`, Accept: "application/json", "User-Agent": userAgent },
          timeoutMs: requestTimeoutMs,
          maxResponseBytes: maxPageBytes(query),
        });
      } catch (error) {
        if (error instanceof HttpResponseTooLargeError) {
          // Not retried: the same span answers the same size. Nothing of it was kept.
          throw new InvalidPageError(`${where} answered more than ${error.maxBytes} bytes for one page`, `(not kept: larger than ${error.maxBytes} bytes)`, true);
        }
        let failure: DefenderApiError;
        if (error instanceof HttpTimeoutError) {
          failure = new DefenderApiError("timeout", `${where} timed out after ${error.timeoutMs} ms`);
        } else if (error instanceof HttpNetworkError) {
          failure = new DefenderApiError("network", `${where} failed: ${error.reason}`);
        } else {
          throw error;
        }
        await this.backoff(++failures, failure, query.deadline);
        continue;
      }

      const { status } = response;
      if (status >= 200 && status < 300) return response;
      // A service that echoed the bearer token into its error code must not get it into a log.
      const rawCode = errorCodeOf(response);
      const apiCode = rawCode !== undefined && !token.includes(rawCode) ? rawCode : undefined;
      const label = `${where} returned HTTP ${status}${apiCode ? ` (${apiCode})` : ""}`;
      const details = { status, ...(apiCode ? { apiCode } : {}) };

      if (status === 401) {
        if (refreshed) {
          throw new DefenderApiError("unauthorized", `${label} again with a freshly issued access token`, details);
        }
        refreshed = true;
        freshToken = await query.accessToken(true);
        continue;
      }
      if (status === 403) {
        throw new DefenderApiError(
          "forbidden",
          `${label}: the customer has not authorized the application in the Defender portal, or the consenting user lacks the View Data role`,
          details,
        );
      }
      if (status === 429) {
        failures++;
        const wait = Math.min(retryAfterMs(header(response, "retry-after"), clock()) ?? DEFAULT_RETRY_AFTER_MS, this.maxRetryAfterMs);
        if (failures >= this.maxAttempts) {
          throw new DefenderApiError("throttled", `${label}; still throttled after ${failures} attempts`, details);
        }
        if (clock() + wait > query.deadline) {
          throw new DefenderApiError("throttled", `${label}; the requested ${Math.ceil(wait / 1000)} s wait would pass the run's deadline`, details);
        }
        await this.options.sleep(wait);
        continue;
      }
      if (status >= 500 || status === 408) {
        const code = status === 408 ? "timeout" : "server_error";
        await this.backoff(++failures, new DefenderApiError(code, label, details), query.deadline);
        continue;
      }
      if (status === 404) throw new DefenderApiError("not_found", label, details);
      if (status >= 400) throw new DefenderApiError("bad_request", label, details);
      // 1xx/3xx: redirects are not followed (a token must not travel to another host).
      throw new DefenderApiError("invalid_response", `${label}, which the client does not follow`, { ...details, retryable: false });
    }
  }

  /** Sleeps before retry `failures + 1`, or throws `failure` when attempts or time have run out. */
  private async backoff(failures: number, failure: DefenderApiError, deadline: number): Promise<void> {
    if (failures >= this.maxAttempts) {
      throw new DefenderApiError(failure.code, `${failure.message} (gave up after ${failures} attempts)`, {
        ...(failure.status !== undefined ? { status: failure.status } : {}),
        ...(failure.apiCode !== undefined ? { apiCode: failure.apiCode } : {}),
        retryable: true,
      });
    }
    const delay = this.jitter(failures);
    if (this.options.clock() + delay > deadline) throw failure;
    await this.options.sleep(delay);
  }

  /** The wait before retry `failures + 1`: exponential with "equal jitter" (at least half the step, so retries never bunch up at zero). */
  private jitter(failures: number): number {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (failures - 1));
    return Math.round(ceiling / 2 + this.random() * (ceiling / 2));
  }
}

/**
 * The most a page of `top` alerts may take: generous per alert (MDE alerts are a few KB, with
 * evidence tens of KB), so only an answer no page could honestly be is refused.
 */
export function maxPageBytes(query: Pick<PageQuery, "top" | "expandEvidence">): number {
  return Math.max(4 * 1024 * 1024, query.top * (query.expandEvidence ? 64 * 1024 : 16 * 1024));
}

function alertsUrl(base: string, query: PageQuery): string {
  const params = new URLSearchParams();
  params.set("$filter", `lastUpdateTime ge ${query.from} and lastUpdateTime lt ${query.to}`);
  params.set("$top", String(query.top));
  params.set("$skip", String(query.skip));
  if (query.expandEvidence) params.set("$expand", "evidence");
  // URLSearchParams escapes "$" in names; OData documents them literally, and both decode alike.
  return `${base}/api/alerts?${params.toString().replace(/(^|&)%24/g, "$1$")}`;
}

/** "GET host/path" — never the query, which may carry a skip token or filter values. */
function describeUrl(url: string): string {
  const parsed = new URL(url);
  return `Defender API GET ${parsed.host}${parsed.pathname}`;
}

function header(response: HttpResponse, name: string): string | undefined {
  const direct = response.headers[name];
  if (direct !== undefined) return direct;
  for (const [key, value] of Object.entries(response.headers)) if (key.toLowerCase() === name) return value;
  return undefined;
}

/** An HTTP `Date` header in epoch ms, or undefined when absent or unreadable. */
export function httpDate(value: string | undefined): number | undefined {
  if (value === undefined || !/[a-z]/i.test(value)) return undefined;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : at;
}

/** Retry-After as delay-seconds or an HTTP date, in ms from now; undefined when absent or unreadable. */
export function retryAfterMs(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.ceil(Number(trimmed) * 1000);
  if (!/[a-z]/i.test(trimmed)) return undefined;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The service's `error.code`, only when it is a plain identifier. */
function errorCodeOf(response: HttpResponse): string | undefined {
  try {
    const parsed = JSON.parse(response.body) as { error?: { code?: unknown } } | null;
    const code = parsed?.error?.code;
    return typeof code === "string" && SAFE_API_CODE.test(code) ? code : undefined;
  } catch {
    return undefined;
  }
}
