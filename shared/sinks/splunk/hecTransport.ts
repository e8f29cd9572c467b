import { createSecureContext, rootCertificates } from "node:tls";
import { Agent, request } from "undici";
import { timeoutSignal } from "../../time/timeoutSignal";

/**
 * HTTPS to the collector, on undici directly rather than the app's HttpClient, for two reasons:
 * the pull's AbortSignal must cancel a request in flight (HttpClient.send only takes a timeout,
 * so a hanging collector would hold the run past its bound), and a reply is read only up to a
 * few KiB (HttpClient reads any body whole; a proxy's error page need not be held, it is never
 * quoted). Trust follows HttpClient's rule: the public roots, plus the local-development CA.
 */

/** The fields of a HEC reply the sink acts on; the reply's `text` is deliberately not kept. */
export interface HecReply {
  code?: number;
  ackId?: number;
  /** On code 6: the first event of the request that was not indexed (those before it were). */
  invalidEventNumber?: number;
  /** From the ack endpoint: ack id → acknowledged. */
  acks?: Record<string, boolean>;
}

export interface HecAnswer {
  status: number;
  /** Undefined when the body was not a HEC reply (a proxy's page, empty, too long). */
  reply: HecReply | undefined;
  /** From a Retry-After header, in ms. */
  retryAfterMs?: number;
}

/** No answer: the request timed out or the connection failed. `reason` is a code, never a message. */
export class HecNoAnswerError extends Error {
  constructor(readonly reason: string) {
    super(`no answer from the collector (${reason})`);
    this.name = "HecNoAnswerError";
  }
}

/** The caller's signal fired: stop at once, no retry. */
export class HecAbortedError extends Error {
  constructor() {
    super("the call was abandoned");
    this.name = "HecAbortedError";
  }
}

/** A HEC reply is a few dozen bytes; anything much longer is not one. */
const MAX_REPLY_BYTES = 16 * 1024;
/** A Retry-After beyond this is taken as this: nothing here waits an hour. */
const MAX_RETRY_AFTER_MS = 10 * 60_000;

export interface HecTransportOptions {
  origin: string;
  token: string;
  /** Extra CA (PEM) to trust besides the public roots: local development and tests only. */
  caPem?: string;
  userAgent: string;
  requestTimeoutMs: number;
}

export class HecTransport {
  private readonly agent: Agent;

  constructor(private readonly options: HecTransportOptions) {
    const secureContext = options.caPem ? createSecureContext({ ca: [...rootCertificates, options.caPem] }) : undefined;
    this.agent = new Agent({ keepAliveTimeout: 30_000, connections: 16, ...(secureContext ? { connect: { secureContext } } : {}) });
  }

  /**
   * One POST (GET without a body) to `path` on the collector. Throws HecAbortedError when
   * `signal` fires and HecNoAnswerError on a timeout or network failure; any HTTP answer returns.
   */
  async send(path: string, body: Buffer | string | undefined, signal: AbortSignal, headers: Record<string, string> = {}): Promise<HecAnswer> {
    const perRequest = timeoutSignal(this.options.requestTimeoutMs);
    const combined = AbortSignal.any([signal, perRequest]);
    try {
      const response = await request(`${this.options.origin}${path}`, {
        method: body === undefined ? "GET" : "POST",
        headers: {
          authorization: `Splunk ${this.options.token}`,
          "user-agent": this.options.userAgent,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
          ...headers,
        },
        ...(body === undefined ? {} : { body }),
        dispatcher: this.agent,
        signal: combined,
      });
      const retryAfterMs = parseRetryAfter(response.headers["retry-after"]);
      const reply = parseReply(await readCapped(response.body));
      return { status: response.statusCode, reply, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
    } catch (error) {
      if (signal.aborted) throw new HecAbortedError();
      if (perRequest.aborted) throw new HecNoAnswerError("timeout");
      throw new HecNoAnswerError(noAnswerReason(error));
    }
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

/** The body up to MAX_REPLY_BYTES; undefined (and the rest discarded) beyond that. */
async function readCapped(body: AsyncIterable<unknown> & { destroy(): unknown }): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > MAX_REPLY_BYTES) {
      body.destroy();
      return undefined;
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks);
}

function parseReply(body: Buffer | undefined): HecReply | undefined {
  if (!body || body.length === 0) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined;
  const record = parsed as Record<string, unknown>;
  const reply: HecReply = {};
  const code = wholeNumber(record["code"]);
  const ackId = wholeNumber(record["ackId"]);
  const invalid = wholeNumber(record["invalid-event-number"]);
  if (code !== undefined) reply.code = code;
  if (ackId !== undefined) reply.ackId = ackId;
  if (invalid !== undefined) reply.invalidEventNumber = invalid;
  const acks = record["acks"];
  if (typeof acks === "object" && acks !== null && !Array.isArray(acks)) {
    reply.acks = Object.fromEntries(Object.entries(acks).map(([id, value]) => [id, value === true]));
  }
  return reply;
}

function wholeNumber(value: unknown): number | undefined {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

/** Retry-After as delta-seconds or an HTTP date, in ms (0 for a date in the past). */
export function parseRetryAfter(header: string | string[] | undefined): number | undefined {
  const value = (Array.isArray(header) ? header[0] : header)?.trim();
  if (!value) return undefined;
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  if (Number.isNaN(ms)) return undefined;
  return Math.min(Math.max(0, ms), MAX_RETRY_AFTER_MS);
}

/**
 * Why a call got no answer, as an operator may read it: the error's code (errno's, or OpenSSL's
 * with its digits and, from OpenSSL 3, a slash: `ERR_SSL_SSL/TLS_ALERT_…`, so a refused TLS handshake says so), else "network". Never a message or
 * anything else free-form: undici's messages and causes may describe the request.
 */
export function noAnswerReason(error: unknown): string {
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  const code = cause instanceof Error ? (cause as NodeJS.ErrnoException).code : undefined;
  return typeof code === "string" && /^[A-Z][A-Z0-9_/]{0,63}$/.test(code) ? code : "network";
}
