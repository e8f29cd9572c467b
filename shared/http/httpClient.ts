import { isAscii } from "node:buffer";
import { createSecureContext, rootCertificates } from "node:tls";
import { Agent, request as undiciRequest, type Dispatcher } from "undici";
import { largeBufferPool, POOLED_MIN_BYTES, type BufferPool } from "./bufferPool";
import { timeoutSignal } from "../time/timeoutSignal";

export interface HttpRequest {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  headers?: Record<string, string>;
  body?: string;
  /** Abort the request (and fail with HttpTimeoutError) after this many milliseconds. */
  timeoutMs?: number;
  /** Refuse (HttpResponseTooLargeError) a body larger than this, without reading it whole (default 16 MiB). */
  maxResponseBytes?: number;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The one outbound HTTP seam of the app: Entra token calls, JWKS and the Defender API. */
export interface HttpClient {
  send(url: string, request: HttpRequest): Promise<HttpResponse>;
}

export class HttpTimeoutError extends Error {
  constructor(readonly host: string, readonly timeoutMs: number) {
    super(`request to ${host} timed out after ${timeoutMs} ms`);
    this.name = "HttpTimeoutError";
  }
}

/** The answer was larger than the caller accepts: refused before, or while, it was read. */
export class HttpResponseTooLargeError extends Error {
  constructor(readonly host: string, readonly maxBytes: number) {
    super(`the answer from ${host} was larger than ${maxBytes} bytes`);
    this.name = "HttpResponseTooLargeError";
  }
}

/** Every answer is read up to this many bytes unless the request says otherwise. */
export const DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/** Transport failure (DNS, TLS, reset). The message names the host only, never the URL's query. */
export class HttpNetworkError extends Error {
  constructor(readonly host: string, readonly reason: string) {
    super(`request to ${host} failed: ${reason}`);
    this.name = "HttpNetworkError";
  }
}

export interface HttpClientOptions {
  /** Extra CA certificate (PEM) to trust besides the public roots; local development only. */
  extraCaPem?: string;
  defaultTimeoutMs?: number;
  userAgent?: string;
  /** Where large bodies are assembled; shared with the blob sink so a page and its NDJSON reuse one buffer. */
  buffers?: BufferPool;
}

export function createHttpClient(options: HttpClientOptions = {}): HttpClient {
  // One secure context for every connection: handing `ca` to each connect re-parses all the
  // public roots per TLS handshake, which dominated CPU at a thousand tenants.
  const secureContext = options.extraCaPem
    ? createSecureContext({ ca: [...rootCertificates, options.extraCaPem] })
    : undefined;
  const dispatcher = new Agent({
    keepAliveTimeout: 30_000,
    connections: 128,
    ...(secureContext ? { connect: { secureContext } } : {}),
  });
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 30_000;
  const pages = options.buffers ?? largeBufferPool();
  return {
    async send(url, request) {
      const timeoutMs = request.timeoutMs ?? defaultTimeoutMs;
      const host = new URL(url).host;
      const headers: Record<string, string> = { ...request.headers };
      if (options.userAgent && !Object.keys(headers).some((h) => h.toLowerCase() === "user-agent")) {
        headers["User-Agent"] = options.userAgent;
      }
      const signal = timeoutSignal(timeoutMs);
      try {
        // undici's request API rather than fetch: no WHATWG stream layers, which halved the CPU
        // and memory cost of reading 10,000-alert pages.
        const response = await undiciRequest(url, {
          method: request.method,
          headers,
          ...(request.body === undefined ? {} : { body: request.body }),
          dispatcher,
          signal,
        });
        const body = await readBounded(response, request.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES, host, pages);
        const responseHeaders: Record<string, string> = {};
        for (const [key, value] of Object.entries(response.headers)) {
          if (value !== undefined) responseHeaders[key] = Array.isArray(value) ? value.join(", ") : value;
        }
        return { status: response.statusCode, headers: responseHeaders, body };
      } catch (error) {
        if (error instanceof HttpResponseTooLargeError) throw error;
        if (signal.aborted) throw new HttpTimeoutError(host, timeoutMs);
        const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
        const reason = cause instanceof Error ? ((cause as NodeJS.ErrnoException).code ?? cause.name) : "unknown";
        throw new HttpNetworkError(host, reason);
      }
    },
  };
}

/**
 * The body as text, refusing one over `maxBytes`: by its Content-Length before reading anything,
 * or as soon as the bytes read pass the limit, so an oversized answer never sits in memory whole.
 */
/** The largest body given its whole buffer before its bytes arrive (a 10,000-alert page is ~27 MB). */
const PREALLOCATE_MAX_BYTES = 64 * 1024 * 1024;

async function readBounded(response: Dispatcher.ResponseData, maxBytes: number, host: string, pool: BufferPool): Promise<string> {
  const declared = Number(response.headers["content-length"]);
  if (Number.isFinite(declared) && declared > maxBytes) {
    response.body.destroy();
    throw new HttpResponseTooLargeError(host, maxBytes);
  }
  // A declared length gets one buffer filled as the chunks arrive, each chunk garbage at once:
  // a 27 MB page then costs its bytes once, not chunks and their concatenation side by side, and
  // a page's buffer is the client's to reuse for the next one. Only up to a bound: a peer that
  // declares much and sends little must not cost it up front.
  const preallocate = Number.isFinite(declared) && declared > 0 && declared <= PREALLOCATE_MAX_BYTES;
  const into = !preallocate ? undefined : declared >= POOLED_MIN_BYTES ? pool.take(declared) : Buffer.allocUnsafe(declared);
  try {
    /** Bytes copied into `into`; anything past its length (or without one) is kept as chunks. */
    let filled = 0;
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response.body) {
      const bytes = chunk as Buffer;
      if (size + bytes.length > maxBytes) {
        response.body.destroy();
        throw new HttpResponseTooLargeError(host, maxBytes);
      }
      if (into && chunks.length === 0 && filled + bytes.length <= into.length) {
        bytes.copy(into, filled);
        filled += bytes.length;
      } else {
        chunks.push(bytes);
      }
      size += bytes.length;
    }
    const head = into?.subarray(0, filled);
    return decodeUtf8(head && chunks.length === 0 ? head : Buffer.concat(head ? [head, ...chunks] : chunks, size));
  } finally {
    // The text is a copy (either decoding copies): the next page may fill the same buffer.
    if (into && into.length >= POOLED_MIN_BYTES) pool.give(into);
  }
}

/**
 * UTF-8 text of a body. ASCII (every byte below 0x80) is its own Latin-1 decoding, and Node gives
 * a large Latin-1 decoding as an external string: copied, not transcoded, and its memory freed as
 * soon as a young-generation GC finds it unused, where a UTF-8 decoding of a multi-megabyte page
 * sits in the old generation until the next full GC (several dead pages of a backlog at once).
 */
export function decodeUtf8(bytes: Buffer): string {
  return isAscii(bytes) ? bytes.toString("latin1") : bytes.toString("utf8");
}
