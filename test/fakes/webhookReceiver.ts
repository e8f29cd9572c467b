import type { IncomingHttpHeaders, ServerResponse } from "node:http";
import { registerSecrets } from "../harness/secrecy";
import { FakeHttpsServer, sendEmpty, sendJson, type FakeRequest, type TlsMaterial } from "./http";

/** One request the receiver got, whatever it answered. */
export interface ReceivedWebhook {
  method: string;
  /** Path and query, as sent. */
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** What the receiver answered. */
  status: number;
}

/**
 * How the receiver behaves: `up` accepts (202, like a Teams Workflows trigger), `error` answers
 * 500, `refuse` is not listening at all (connection refused), and comes back on the same port.
 */
export type ReceiverMode = "up" | "error" | "refuse";

/**
 * A local HTTPS webhook receiver for the notification tests, on 127.0.0.1 with the fakes'
 * certificate (which the app trusts through LOCAL_DEV_CA_CERT_FILE). It records every request,
 * including the ones it answers with an error; `delivered` lists only the accepted ones.
 */
export class WebhookReceiver extends FakeHttpsServer {
  private mode: ReceiverMode = "up";
  readonly requests: ReceivedWebhook[] = [];
  /** Every URL handed out: a webhook URL is a credential (its signature query), for the secrecy scan. */
  private readonly urls: string[] = [];

  constructor(tls: TlsMaterial) {
    super(tls);
    registerSecrets(() => this.urls, "webhook receiver URL");
  }

  /** A webhook URL on this receiver; the tests give it a signature-like query, as Teams and Slack URLs have. */
  webhookUrl(pathAndQuery: string): string {
    const url = `${this.url}${pathAndQuery}`;
    this.urls.push(url);
    return url;
  }

  /** Bodies of the requests it accepted, parsed. */
  delivered(): unknown[] {
    return this.requests.filter((r) => r.status < 300).map((r) => JSON.parse(r.body) as unknown);
  }

  clear(): void {
    this.requests.length = 0;
  }

  async setMode(mode: ReceiverMode): Promise<void> {
    this.mode = mode;
    // stop() also closes kept-alive sockets: a refusing receiver must refuse.
    if (mode === "refuse") await this.stop();
    else await this.start();
  }

  protected handle(req: FakeRequest, res: ServerResponse): void {
    const status = this.mode === "up" ? 202 : 500;
    const path = `${req.url.pathname}${req.url.search}`;
    this.requests.push({ method: req.method, path, headers: req.headers, body: req.body.toString("utf8"), status });
    if (status === 202) sendEmpty(res, 202);
    else sendJson(res, 500, { error: "the receiver fails on purpose" });
  }

  protected internalError(res: ServerResponse): void {
    sendEmpty(res, 500);
  }
}
