import type { Clock } from "../clock";
import type { RateBudget } from "../defender/rateBudget";
import type { FetchedPage } from "../defender/types";
import { PageFormatError, scanPage } from "../defender/pageScanner";
import { HttpNetworkError, HttpResponseTooLargeError, HttpTimeoutError, type HttpClient, type HttpResponse } from "../http/httpClient";
import { DefenderApiError, InvalidPageError, type AlertSource, type DefenderApiErrorOptions, type DefenderErrorCode } from "./sourceErrors";

/**
 * The request loop every alert source shares: one GET of one page with a per-tenant call budget,
 * one forced token refresh after a 401, retries that honour Retry-After or back off with jitter,
 * deadline checks, a byte limit on the answer, and error messages that never carry the token,
 * the query string or the body. What differs between sources (the URL, extra headers, the time
 * member, what a 403 means) comes in through a SourceProfile.
 */

export interface PagedFetchOptions {
  http: HttpClient;
  /** Sent as User-Agent with every request (for Defender, the partner agent Microsoft asks MSSPs to send). */
  userAgent: string;
  requestTimeoutMs: number;
  /** The source's own per-tenant budget: each service counts its own calls. */
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

/** What makes one source's requests and messages its own. */
export interface SourceProfile {
  source: AlertSource;
  /** Prefix of the RangeErrors a misconfigured client throws ("DefenderClient"). */
  clientName: string;
  /** How messages name the service ("Defender API", "Microsoft Graph"). */
  serviceName: string;
  /** The alert member holding the version time. */
  timeField: "lastUpdateTime" | "lastUpdateDateTime";
  /** Sent with every request besides Authorization, Accept and User-Agent. */
  headers?: Readonly<Record<string, string>>;
  /** Why a 403 happens with this source, in words an operator can act on. */
  forbiddenReason: string;
  /**
   * Whether a 503 that carries Retry-After waits that long (like a 429) instead of backing off.
   * Microsoft Graph documents Retry-After on 503 as well as on 429.
   */
  retryAfterOn503: boolean;
}

/** One page to read: the URL is final (the caller built or checked it). */
export interface PageRequest {
  url: string;
  tenantId: string;
  /** Returns a valid access token; called again with `forceRefresh` after a 401. */
  accessToken: (forceRefresh: boolean) => Promise<string>;
  /** Stop (DefenderApiError "deadline") once this epoch-ms passes. */
  deadline: number;
  /** Larger answers are refused unread (InvalidPageError with tooLarge). */
  maxResponseBytes: number;
}

const DEFAULT_RETRY_AFTER_MS = 10_000;
/** Reads of a page whose body does not parse before it is given up as invalid. */
const INVALID_PAGE_ATTEMPTS = 3;
const BACKOFF_BASE_MS = 1_000;
const BACKOFF_CAP_MS = 30_000;
/** The service's error codes are short identifiers; anything else in that field is not repeated. */
const SAFE_API_CODE = /^[A-Za-z][A-Za-z0-9_.]{0,63}$/;

export class PagedFetch {
  private readonly maxAttempts: number;
  private readonly maxRetryAfterMs: number;
  private readonly random: () => number;

  constructor(
    private readonly options: PagedFetchOptions,
    private readonly profile: SourceProfile,
  ) {
    this.maxAttempts = options.maxAttempts ?? 5;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 120_000;
    this.random = options.random ?? Math.random;
    if (!Number.isInteger(this.maxAttempts) || this.maxAttempts < 1) throw new RangeError(`${profile.clientName}: maxAttempts must be a positive integer`);
    if (!Number.isInteger(options.requestTimeoutMs) || options.requestTimeoutMs < 1) {
      throw new RangeError(`${profile.clientName}: requestTimeoutMs must be a positive integer`);
    }
  }

  /** A DefenderApiError of this source. */
  error(code: DefenderErrorCode, message: string, options: Omit<DefenderApiErrorOptions, "source"> = {}): DefenderApiError {
    return new DefenderApiError(code, message, { ...options, source: this.profile.source });
  }

  /** "{service} GET host/path": never the query, which may carry a skip token or filter values. */
  describe(url: string): string {
    const parsed = new URL(url);
    return `${this.profile.serviceName} GET ${parsed.host}${parsed.pathname}`;
  }

  /**
   * One page, read again through throttling, server errors, timeouts and an unreadable body.
   * A body that never parses is handed back whole in an InvalidPageError, to be dead-lettered
   * rather than to stop the tenant.
   */
  async fetchPage(request: PageRequest): Promise<FetchedPage> {
    const where = this.describe(request.url);
    for (let attempt = 1; ; attempt++) {
      const response = await this.send(request, where);
      try {
        const page = scanPage(response.body, { timeField: this.profile.timeField });
        const apiDate = httpDate(header(response, "date"));
        return { ...page, ...(apiDate !== undefined ? { apiDate } : {}) };
      } catch (error) {
        if (!(error instanceof PageFormatError)) throw error;
        // A body cut short in transit reads fine the next time; one that never parses is
        // handed to the caller whole, to be dead-lettered rather than to stop the tenant.
        if (attempt >= INVALID_PAGE_ATTEMPTS) {
          throw new InvalidPageError(`${where} answered a page that is not valid JSON (${error.message}) ${attempt} times`, response.body, false, this.profile.source);
        }
        // A proxy or gateway that cut the body short tends to do it for a moment: wait it out.
        const delay = this.jitter(attempt);
        if (this.options.clock() + delay > request.deadline) {
          throw this.error("deadline", "The run's deadline passed while a page that was not valid JSON waited to be read again");
        }
        await this.options.sleep(delay);
      }
    }
  }

  /** One page request with budget, token refresh on 401 and retries; resolves only with a 2xx. */
  private async send(request: PageRequest, where: string): Promise<HttpResponse> {
    const { http, budget, clock, userAgent, requestTimeoutMs } = this.options;
    const { url, deadline } = request;
    let failures = 0;
    let refreshed = false;
    let freshToken: string | undefined;
    for (;;) {
      // Every send, retries included, starts before the deadline: the last one ends a request timeout after it at most.
      if (clock() > deadline) throw this.error("deadline", "The run's deadline passed before the next page of alerts was requested");
      const token = freshToken ?? (await request.accessToken(false));
      freshToken = undefined;
      await budget.acquire(request.tenantId, deadline);
      let response: HttpResponse;
      try {
        response = await http.send(url, {
          method: "GET",
          headers: { ...this.profile.headers, Authorization: `Bearer ${token}`, Accept: "application/json", "User-Agent": userAgent },
          timeoutMs: requestTimeoutMs,
          maxResponseBytes: request.maxResponseBytes,
        });
      } catch (error) {
        if (error instanceof HttpResponseTooLargeError) {
          // Not retried: the same span answers the same size. Nothing of it was kept.
          throw new InvalidPageError(
            `${where} answered more than ${error.maxBytes} bytes for one page`,
            `(not kept: larger than ${error.maxBytes} bytes)`,
            true,
            this.profile.source,
          );
        }
        let failure: DefenderApiError;
        if (error instanceof HttpTimeoutError) {
          failure = this.error("timeout", `${where} timed out after ${error.timeoutMs} ms`);
        } else if (error instanceof HttpNetworkError) {
          failure = this.error("network", `${where} failed: ${error.reason}`);
        } else {
          throw error;
        }
        await this.backoff(++failures, failure, deadline);
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
          throw this.error("unauthorized", `${label} again with a freshly issued access token`, details);
        }
        refreshed = true;
        freshToken = await request.accessToken(true);
        continue;
      }
      if (status === 403) {
        throw this.error("forbidden", `${label}: ${this.profile.forbiddenReason}`, details);
      }
      const retryAfter = retryAfterMs(header(response, "retry-after"), clock());
      if (status === 429 || (status === 503 && this.profile.retryAfterOn503 && retryAfter !== undefined)) {
        failures++;
        const code = status === 429 ? "throttled" : "server_error";
        const wait = Math.min(retryAfter ?? DEFAULT_RETRY_AFTER_MS, this.maxRetryAfterMs);
        if (failures >= this.maxAttempts) {
          throw this.error(code, `${label}; still ${status === 429 ? "throttled" : "unavailable"} after ${failures} attempts`, details);
        }
        if (clock() + wait > deadline) {
          throw this.error(code, `${label}; the requested ${Math.ceil(wait / 1000)} s wait would pass the run's deadline`, details);
        }
        await this.options.sleep(wait);
        continue;
      }
      if (status >= 500 || status === 408) {
        const code = status === 408 ? "timeout" : "server_error";
        await this.backoff(++failures, this.error(code, label, details), deadline);
        continue;
      }
      if (status === 404) throw this.error("not_found", label, details);
      if (status >= 400) throw this.error("bad_request", label, details);
      // 1xx/3xx: redirects are not followed (a token must not travel to another host).
      throw this.error("invalid_response", `${label}, which the client does not follow`, { ...details, retryable: false });
    }
  }

  /** Sleeps before retry `failures + 1`, or throws `failure` when attempts or time have run out. */
  private async backoff(failures: number, failure: DefenderApiError, deadline: number): Promise<void> {
    if (failures >= this.maxAttempts) {
      throw this.error(failure.code, `${failure.message} (gave up after ${failures} attempts)`, {
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
 * A URL with OData system query options: URLSearchParams escapes "$" in names, which OData
 * documents literally; both decode alike, so the literal form is sent.
 */
export function odataUrl(base: string, path: string, params: URLSearchParams): string {
  return `${base.replace(/\/+$/, "")}${path}?${params.toString().replace(/(^|&)%24/g, "$1$")}`;
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
