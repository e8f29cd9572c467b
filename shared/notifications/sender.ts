import { HttpNetworkError, HttpTimeoutError, type HttpClient } from "../http/httpClient";
import { APP_VERSION } from "../version";

/** One attempt may take this long; two attempts and the pause between stay well inside a timer run. */
export const WEBHOOK_TIMEOUT_MS = 10_000;
/** Pause before the one retry, unless the receiver asks for longer (Retry-After, honoured up to the cap). */
const RETRY_PAUSE_MS = 1_000;
const MAX_RETRY_PAUSE_MS = 5_000;

export type DeliveryResult =
  | { ok: true; status: number; attempts: number }
  /** `code`: webhook_http_<status>, webhook_timeout, webhook_unreachable, webhook_failed. Never the URL, never the body. */
  | { ok: false; code: string; attempts: number };

type Attempt = { ok: true; status: number } | { ok: false; code: string; retryable: boolean; retryAfterMs?: number };

function retryAfterMs(header: string | undefined): number | undefined {
  const seconds = header === undefined ? Number.NaN : Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? Math.min(seconds * 1000, MAX_RETRY_PAUSE_MS) : undefined;
}

/**
 * Posts one message to the webhook: a timeout per attempt and at most one retry, for what a retry
 * can fix (no answer, a 5xx, 408, 429). The URL is a secret (Teams and Slack URLs carry their
 * signature): it is used here and nowhere else, and no result or error names it.
 */
export class WebhookSender {
  constructor(
    private readonly deps: {
      http: HttpClient;
      url: string;
      sleep: (ms: number) => Promise<void>;
    },
  ) {}

  async send(body: string): Promise<DeliveryResult> {
    const first = await this.attempt(body);
    if (first.ok) return { ...first, attempts: 1 };
    if (!first.retryable) return { ok: false, code: first.code, attempts: 1 };
    await this.deps.sleep(first.retryAfterMs ?? RETRY_PAUSE_MS);
    const second = await this.attempt(body);
    return second.ok ? { ...second, attempts: 2 } : { ok: false, code: second.code, attempts: 2 };
  }

  private async attempt(body: string): Promise<Attempt> {
    try {
      const response = await this.deps.http.send(this.deps.url, {
        method: "POST",
        headers: { "content-type": "application/json; charset=utf-8", "user-agent": `MsspDefenderConnector/${APP_VERSION}` },
        body,
        timeoutMs: WEBHOOK_TIMEOUT_MS,
      });
      if (response.status >= 200 && response.status < 300) return { ok: true, status: response.status };
      const retryable = response.status >= 500 || response.status === 408 || response.status === 429;
      const pause = retryAfterMs(response.headers["retry-after"]);
      return { ok: false, code: `webhook_http_${response.status}`, retryable, ...(pause === undefined ? {} : { retryAfterMs: pause }) };
    } catch (error) {
      if (error instanceof HttpTimeoutError) return { ok: false, code: "webhook_timeout", retryable: true };
      if (error instanceof HttpNetworkError) return { ok: false, code: "webhook_unreachable", retryable: true };
      return { ok: false, code: "webhook_failed", retryable: false };
    }
  }
}
