import type { ServerResponse } from "node:http";
import { jsonValueEnd } from "../../shared/sinks/splunk/hecEvents";
import { registerSecrets } from "../harness/secrecy";
import { FakeHttpsServer, isRecord, sendJson, type FakeRequest, type TlsMaterial } from "./http";

/**
 * A stand-in for Splunk's HTTP Event Collector, served over HTTPS, that speaks the protocol a
 * sink must cope with:
 *
 * - `POST /services/collector/event` (and `/services/collector`): concatenated JSON events,
 *   `Authorization: Splunk <token>` (code 2 without a header, 3 without the `Splunk ` scheme,
 *   4 for an unknown token, 1 for a disabled one), each event's index checked against the
 *   token's allow-list (code 7), `event` required and not blank (12, 13), `fields` flat (15), a
 *   body over `maxContentLength` answered 413;
 * - code 6 with `invalid-event-number` on the first event that is not JSON (or that a test
 *   marked invalid), the events before it indexed, as Splunk 10 does;
 * - indexer acknowledgement for tokens with `ack`: a channel is required (code 10 without one,
 *   11 for one that is not a GUID), each request gets the channel's next `ackId`, and
 *   `POST /services/collector/ack?channel=` answers `true` for an id once its delay has passed,
 *   exactly once; code 14 for a token without acknowledgement;
 * - `GET /services/collector/health` (code 17, or 18–20 when set unhealthy);
 * - faults: a storm of busy answers (code 9, or any code, or a bare 503 from a load balancer,
 *   with or without Retry-After) and requests held open for ever (hang).
 *
 * Deliberate differences from Splunk: only code 6 indexes part of a request; codes 7, 12, 13
 * and 15 refuse it whole (Splunk's behaviour there is not documented). Channels are not tied to
 * a token. Requests are recorded by their metadata only (never a header, so never a token); the
 * events indexed are kept with the metadata they were sent with.
 */

export interface FakeHecToken {
  token: string;
  /** Indexer acknowledgement (useACK) on: requests need a channel and get ack ids. */
  ack?: boolean;
  /** Indexes the token may write to; the first is its default (default ["main"]). */
  indexes?: string[];
  disabled?: boolean;
}

export interface FakeSplunkHecOptions extends TlsMaterial {
  tokens: FakeHecToken[];
  /** Request bodies over this many bytes are answered 413 (default 1,000,000, like Splunk Cloud; at most 1 MiB). */
  maxContentLength?: number;
}

/** One event as indexed: its metadata and the parsed `event`. */
export interface IndexedEvent {
  /** Number of the request that carried it (1-based, across all requests). */
  request: number;
  index: string;
  time?: unknown;
  host?: unknown;
  source?: unknown;
  sourcetype?: unknown;
  fields?: Record<string, unknown>;
  event: unknown;
}

export interface HecRequestRecord {
  request: number;
  at: number;
  path: string;
  /** 0 while a request is held open by hang(). */
  status: number;
  code?: number;
  bytes: number;
  /** Events indexed by this request. */
  indexed: number;
  /** The request named a channel (header or query). */
  channel: boolean;
  ackId?: number;
}

export interface StormOptions {
  /** How many event requests meet it. */
  times: number;
  /** HEC code in the answer (default 9, "Server is busy"). */
  code?: number;
  /** HTTP status (default 503, or 500 for code 8). */
  status?: number;
  retryAfterSeconds?: number;
  /** A load balancer's plain-text answer, without a HEC body. */
  bare?: boolean;
}

export interface AckBehaviour {
  /** An ack id reads true this long after its request was indexed (default 0). */
  delayMs?: number;
  /** Ack ids issued while set never read true (the events are indexed all the same). */
  never?: boolean;
}

/** Which event a test wants refused as invalid: its parsed envelope. */
export type EventPredicate = (envelope: Record<string, unknown>) => boolean;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_BODY_BYTES = 1024 * 1024;
const CODE_TEXT: Record<number, string> = {
  0: "Success",
  1: "Token disabled",
  2: "Token is required",
  3: "Invalid authorization",
  4: "Invalid token",
  5: "No data",
  6: "Invalid data format",
  7: "Incorrect index",
  8: "Internal server error",
  9: "Server is busy",
  10: "Data channel is missing",
  11: "Invalid data channel",
  12: "Event field is required",
  13: "Event field cannot be blank",
  14: "ACK is disabled",
  15: "Error in handling indexed fields",
  17: "HEC is healthy",
  18: "HEC is unhealthy, queues are full",
  19: "HEC is unhealthy, ack service unavailable",
  20: "HEC is unhealthy, queues are full, ack service unavailable",
};

class HecRefusal {
  constructor(
    readonly status: number,
    readonly code: number,
    readonly extra: Record<string, number> = {},
  ) {}
}

interface PendingAck {
  readyAt: number;
  never: boolean;
}

export class FakeSplunkHec extends FakeHttpsServer {
  private readonly tokens = new Map<string, FakeHecToken>();
  private maxContentLength: number;
  private readonly events: IndexedEvent[] = [];
  private readonly records: HecRequestRecord[] = [];
  private readonly channels = new Map<string, { next: number; pending: Map<number, PendingAck> }>();
  private readonly acksRead: Array<{ ackId: number; at: number }> = [];
  private stormLeft: (StormOptions & { left: number }) | undefined;
  private hangsLeft = 0;
  private readonly hung = new Set<ServerResponse>();
  private reject: { predicate: EventPredicate; left: number } | undefined;
  private ackBehaviour: Required<AckBehaviour> = { delayMs: 0, never: false };
  private healthCode = 17;

  constructor(options: FakeSplunkHecOptions) {
    super(options);
    for (const token of options.tokens) this.tokens.set(token.token, token);
    registerSecrets(() => [...this.tokens.keys()], "fake Splunk HEC token");
    this.maxContentLength = Math.min(options.maxContentLength ?? 1_000_000, MAX_BODY_BYTES);
  }

  /** The next `times` event requests (after authentication) are answered busy. `null` ends a storm. */
  storm(options: StormOptions | null): void {
    this.stormLeft = options ? { ...options, left: options.times } : undefined;
  }

  /** The next `times` event requests (or all, until hang(0)) are read and never answered. */
  hang(times: number | "all"): void {
    this.hangsLeft = times === "all" ? Number.POSITIVE_INFINITY : Math.max(0, times);
  }

  get hanging(): number {
    return this.hung.size;
  }

  /** The next `times` events matching `predicate` are refused as invalid (code 6). `null` clears it. */
  rejectEvents(predicate: EventPredicate | null, times = 1): void {
    this.reject = predicate ? { predicate, left: times } : undefined;
  }

  setAck(behaviour: AckBehaviour): void {
    this.ackBehaviour = { delayMs: behaviour.delayMs ?? 0, never: behaviour.never ?? false };
  }

  setMaxContentLength(bytes: number): void {
    this.maxContentLength = Math.min(bytes, MAX_BODY_BYTES);
  }

  /** 17 healthy; 18–20 unhealthy (the health endpoint answers 503 with that code). */
  setHealth(code: 17 | 18 | 19 | 20): void {
    this.healthCode = code;
  }

  indexed(): IndexedEvent[] {
    return [...this.events];
  }

  requests(): HecRequestRecord[] {
    return this.records.map((r) => ({ ...r }));
  }

  /** Every ack id that read true, when. */
  acksReadTrue(): Array<{ ackId: number; at: number }> {
    return [...this.acksRead];
  }

  /** Ack ids issued and not yet read true, across channels. */
  pendingAcks(): number {
    let count = 0;
    for (const channel of this.channels.values()) count += channel.pending.size;
    return count;
  }

  override async stop(): Promise<void> {
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    await super.stop();
  }

  protected override internalError(res: ServerResponse): void {
    sendJson(res, 500, { text: CODE_TEXT[8], code: 8 });
  }

  protected override handle(req: FakeRequest, res: ServerResponse): void {
    const path = req.url.pathname.replace(/\/+$/, "");
    const record: HecRequestRecord = { request: this.records.length + 1, at: Date.now(), path, status: 0, bytes: req.body.length, indexed: 0, channel: false };
    this.records.push(record);
    const answer = (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): void => {
      record.status = status;
      if (typeof body["code"] === "number") record.code = body["code"];
      sendJson(res, status, body, headers);
    };
    try {
      if (path === "/services/collector/health" || path === "/services/collector/health/1.0") {
        answer(this.healthCode === 17 ? 200 : 503, { text: CODE_TEXT[this.healthCode], code: this.healthCode });
        return;
      }
      const isEvent = path === "/services/collector/event" || path === "/services/collector" || path === "/services/collector/event/1.0";
      const isAck = path === "/services/collector/ack";
      if ((!isEvent && !isAck) || req.method !== "POST") {
        answer(404, { text: "The requested URL was not found on this server.", code: 404 });
        return;
      }
      const token = this.authenticate(req.headers.authorization);
      const channel = this.channelOf(req, token);
      record.channel = channel !== undefined;
      if (isAck) {
        answer(200, { acks: this.readAcks(token, channel, req.body) });
        return;
      }
      if (this.hangsLeft > 0) {
        this.hangsLeft -= 1;
        this.hung.add(res);
        res.on("close", () => this.hung.delete(res));
        return;
      }
      if (this.stormLeft && this.stormLeft.left > 0) {
        const storm = this.stormLeft;
        storm.left -= 1;
        this.sendStorm(storm, res, record);
        return;
      }
      if (req.body.length > this.maxContentLength) {
        answer(413, { text: "Content-Length of request exceeds max_content_length" });
        return;
      }
      const indexed = this.indexEvents(token, req.body, record.request);
      record.indexed = indexed;
      const ackId = token.ack && channel !== undefined ? this.issueAck(channel) : undefined;
      if (ackId !== undefined) record.ackId = ackId;
      answer(200, { text: CODE_TEXT[0], code: 0, ...(ackId === undefined ? {} : { ackId }) });
    } catch (error) {
      if (!(error instanceof HecRefusal)) throw error;
      answer(error.status, { text: CODE_TEXT[error.code] ?? "Error", code: error.code, ...error.extra });
    }
  }

  private authenticate(header: string | undefined): FakeHecToken {
    if (header === undefined) throw new HecRefusal(401, 2);
    const match = /^Splunk (\S+)$/.exec(header);
    if (!match) throw new HecRefusal(401, 3);
    const token = this.tokens.get(match[1] as string);
    if (!token) throw new HecRefusal(403, 4);
    if (token.disabled) throw new HecRefusal(403, 1);
    return token;
  }

  /** The request's channel; required (and checked) only for a token with acknowledgement. */
  private channelOf(req: FakeRequest, token: FakeHecToken): string | undefined {
    const header = req.headers["x-splunk-request-channel"];
    const channel = (Array.isArray(header) ? header[0] : header) ?? req.url.searchParams.get("channel") ?? undefined;
    if (!token.ack) return channel;
    if (channel === undefined || channel === "") throw new HecRefusal(400, 10);
    if (!GUID.test(channel)) throw new HecRefusal(400, 11);
    return channel;
  }

  private sendStorm(storm: StormOptions, res: ServerResponse, record: HecRequestRecord): void {
    const code = storm.code ?? 9;
    const status = storm.status ?? (code === 8 ? 500 : 503);
    const headers: Record<string, string> = storm.retryAfterSeconds === undefined ? {} : { "retry-after": String(storm.retryAfterSeconds) };
    record.status = status;
    if (storm.bare) {
      const text = "Service Unavailable";
      res.writeHead(status, { "content-type": "text/plain", "content-length": String(text.length), ...headers });
      res.end(text);
      return;
    }
    record.code = code;
    sendJson(res, status, { text: CODE_TEXT[code] ?? "Error", code }, headers);
  }

  /**
   * Indexes the request's events in order. The first event that is not a JSON object (or that
   * a test marked invalid) ends the request with code 6: those before it stay indexed. Any other
   * problem refuses the request whole.
   */
  private indexEvents(token: FakeHecToken, body: Buffer, request: number): number {
    const { envelopes, invalidAt } = splitEvents(body.toString("utf8"));
    if (envelopes.length === 0 && invalidAt === undefined) throw new HecRefusal(400, 5);
    const allowed = token.indexes ?? ["main"];
    const accepted: IndexedEvent[] = [];
    let badAt = invalidAt;
    for (const [i, envelope] of envelopes.entries()) {
      if (this.reject && this.reject.left > 0 && this.reject.predicate(envelope)) {
        this.reject.left -= 1;
        badAt = i;
        break;
      }
      if (!("event" in envelope)) throw new HecRefusal(400, 12, { "invalid-event-number": i });
      if (envelope["event"] === "" || envelope["event"] === null) throw new HecRefusal(400, 13, { "invalid-event-number": i });
      const fields = envelope["fields"];
      if (fields !== undefined && (!isRecord(fields) || Object.values(fields).some((v) => !isFieldValue(v)))) {
        throw new HecRefusal(400, 15, { "invalid-event-number": i });
      }
      const index = envelope["index"] ?? allowed[0];
      if (typeof index !== "string" || !allowed.includes(index)) throw new HecRefusal(400, 7, { "invalid-event-number": i });
      accepted.push({
        request,
        index,
        event: envelope["event"],
        ...pick(envelope, ["time", "host", "source", "sourcetype"]),
        ...(isRecord(fields) ? { fields } : {}),
      });
    }
    const indexed = badAt === undefined ? accepted : accepted.slice(0, badAt);
    this.events.push(...indexed);
    if (badAt !== undefined) {
      this.records[request - 1]!.indexed = indexed.length;
      throw new HecRefusal(400, 6, { "invalid-event-number": badAt });
    }
    return indexed.length;
  }

  private issueAck(channel: string): number {
    let state = this.channels.get(channel);
    if (!state) this.channels.set(channel, (state = { next: 0, pending: new Map() }));
    const ackId = state.next++;
    state.pending.set(ackId, { readyAt: Date.now() + this.ackBehaviour.delayMs, never: this.ackBehaviour.never });
    return ackId;
  }

  /** `{"acks":[ids]}` → `{id: boolean}`; an id reads true once, then it is forgotten. */
  private readAcks(token: FakeHecToken, channel: string | undefined, body: Buffer): Record<string, boolean> {
    if (!token.ack) throw new HecRefusal(400, 14);
    let ids: unknown;
    try {
      ids = (JSON.parse(body.toString("utf8")) as { acks?: unknown }).acks;
    } catch {
      throw new HecRefusal(400, 6);
    }
    if (!Array.isArray(ids) || !ids.every((id) => Number.isSafeInteger(id))) throw new HecRefusal(400, 6);
    const pending = channel === undefined ? undefined : this.channels.get(channel)?.pending;
    const now = Date.now();
    const acks: Record<string, boolean> = {};
    for (const id of ids as number[]) {
      const entry = pending?.get(id);
      const ready = entry !== undefined && !entry.never && entry.readyAt <= now;
      if (ready) {
        pending?.delete(id);
        this.acksRead.push({ ackId: id, at: now });
      }
      acks[String(id)] = ready;
    }
    return acks;
  }
}

function isFieldValue(value: unknown): boolean {
  return typeof value === "string" || typeof value === "number" || (Array.isArray(value) && value.every((v) => typeof v === "string"));
}

function pick(record: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((k) => k in record).map((k) => [k, record[k]]));
}

/**
 * Splits concatenated JSON objects (whitespace between them allowed, nothing else) into parsed
 * envelopes, up to the first one that does not delimit or parse: `invalidAt` is its number.
 * Delimiting borrows the sink's bracket scanner; each slice is then parsed here on its own, so a
 * scanner bug shows up as a code 6 in the tests rather than hiding.
 */
export function splitEvents(text: string): { envelopes: Array<Record<string, unknown>>; invalidAt?: number } {
  const envelopes: Array<Record<string, unknown>> = [];
  let at = 0;
  for (;;) {
    while (at < text.length && /\s/.test(text[at] as string)) at++;
    if (at >= text.length) return { envelopes };
    const end = text[at] === "{" ? jsonValueEnd(text, at) : undefined;
    let parsed: unknown;
    try {
      parsed = end === undefined ? undefined : JSON.parse(text.slice(at, end));
    } catch {
      parsed = undefined;
    }
    if (end === undefined || !isRecord(parsed)) return { envelopes, invalidAt: envelopes.length };
    envelopes.push(parsed);
    at = end;
  }
}
