import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * Shared plumbing for the HTTPS fakes. Kept free of test-framework imports so the
 * fakes can also be compiled with `tsc` and run in a separate benchmark process.
 */

export interface TlsMaterial {
  certPem: string;
  keyPem: string;
}

export interface FakeRequest {
  method: string;
  url: URL;
  headers: IncomingMessage["headers"];
  body: Buffer;
  raw: IncomingMessage;
}

/** Large enough for a 25 KB Key Vault secret plus JSON overhead, small enough to catch runaway clients. */
const MAX_BODY_BYTES = 1024 * 1024;

export class BodyTooLargeError extends Error {}

export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new BodyTooLargeError(`request body exceeds ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": String(Buffer.byteLength(payload)),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(payload);
}

export function sendEmpty(res: ServerResponse, status: number, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-length": "0", ...headers });
  res.end();
}

export function sendHtml(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, {
    "content-type": "text/html; charset=utf-8",
    "content-length": String(Buffer.byteLength(html)),
    "cache-control": "no-store",
  });
  res.end(html);
}

export function redirect(res: ServerResponse, location: string): void {
  res.writeHead(302, { location, "content-length": "0", "cache-control": "no-store" });
  res.end();
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Parses a JSON body into a plain object, or returns undefined so callers can answer with their protocol's own 400. */
export function parseJsonObject(body: Buffer): Record<string, unknown> | undefined {
  if (body.length === 0) return undefined;
  try {
    const parsed: unknown = JSON.parse(body.toString("utf8"));
    return isRecord(parsed) ? parsed : undefined;
  } catch {
    return undefined;
  }
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Base for the fakes: one HTTPS server on 127.0.0.1 with an ephemeral port. The host is an
 * IP literal rather than `localhost` so Node never tries ::1 first; the test certificate
 * carries both names.
 */
export abstract class FakeHttpsServer {
  private server: Server | undefined;
  private baseUrl: string | undefined;

  protected constructor(private readonly tls: TlsMaterial) {}

  get url(): string {
    if (this.baseUrl === undefined) throw new Error(`${this.constructor.name} is not started`);
    return this.baseUrl;
  }

  /** host:port, the form MSAL's knownAuthorities wants. */
  get host(): string {
    return new URL(this.url).host;
  }

  /** Listens on an ephemeral port, and on that same port again after a stop(): the URL stays valid. */
  async start(): Promise<void> {
    if (this.server) return;
    await this.beforeStart();
    const server = createServer({ cert: this.tls.certPem, key: this.tls.keyPem }, (req, res) => {
      void this.dispatch(req, res);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.baseUrl === undefined ? 0 : Number(new URL(this.baseUrl).port), "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const { port } = server.address() as AddressInfo;
    this.server = server;
    this.baseUrl = `https://127.0.0.1:${port}`;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    // Clients keep sockets alive; without closing them close() would wait for their idle timeout.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  protected async beforeStart(): Promise<void> {}

  /** Lets a subclass drop a request before the body is read (e.g. to simulate a network failure). */
  protected intercept(_req: IncomingMessage, _res: ServerResponse): boolean {
    return false;
  }

  protected abstract handle(req: FakeRequest, res: ServerResponse): Promise<void> | void;

  /** Answer for a bug inside the fake itself; each fake renders it in its protocol's error shape. */
  protected abstract internalError(res: ServerResponse, err: unknown): void;

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (this.intercept(req, res)) return;
      let body: Buffer;
      try {
        body = await readBody(req);
      } catch (err) {
        if (err instanceof BodyTooLargeError && !res.headersSent) sendEmpty(res, 413, { connection: "close" });
        return;
      }
      const url = new URL(req.url ?? "/", this.baseUrl ?? "https://127.0.0.1");
      await this.handle({ method: req.method ?? "GET", url, headers: req.headers, body, raw: req }, res);
    } catch (err) {
      process.stderr.write(`[${this.constructor.name}] internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
      if (!res.headersSent) this.internalError(res, err);
      else res.destroy();
    }
  }
}
