import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { generateAlerts, type MdeAlert, type MdeEvidence } from "./alerts";

/**
 * A stand-in for the Defender for Endpoint alerts API (`GET /api/alerts`),
 * served over HTTPS so the app's real HTTP client, TLS trust and paging code
 * are exercised.
 *
 * Deliberate differences from the real service, which a client must not rely on:
 * - Results come back sorted by (lastUpdateTime, id). The real API promises no
 *   order; the only thing a client may assume is that $skip paging is stable
 *   while no alert inside the filtered window changes.
 * - Only `lastUpdateTime` filters (ge/gt/le/lt, one or two joined by `and`)
 *   are understood; anything else the real API accepts is a 400 here, so an
 *   unexpected query shape fails loudly in tests.
 * - Without `$top` a page holds up to 10,000 alerts (the documented maximum).
 */

export const DEFENDER_AUDIENCES: readonly string[] = [
  "https://api.securitycenter.microsoft.com",
  "https://securitycenter.onmicrosoft.com/windowsatpservice",
];
export const ODATA_CONTEXT = "https://api.security.microsoft.com/api/$metadata#Alerts";
export const MAX_PAGE_SIZE = 10_000;
const ALERT_PERMISSIONS = ["Alert.Read.All", "Alert.ReadWrite.All", "Alert.Read", "Alert.ReadWrite"];

export interface DefenderTokenClaims {
  tid: string;
  aud: string;
  scp?: string;
  /** When present (app tokens), must contain Alert.Read.All or Alert.ReadWrite.All, else 403. */
  roles?: string[];
  exp: number;
}

export interface FakeDefenderOptions {
  certPem: string;
  keyPem: string;
  /** Returns the token's claims, or null when the token is not one the test issued. */
  verifyAccessToken: (token: string) => Promise<DefenderTokenClaims | null>;
  latencyMs?: number;
}

export interface RecordedRequest {
  at: number;
  query: URLSearchParams;
  /** 0 while a request is held open by hang(). */
  status: number;
}

export interface FakeDefenderStats {
  /** Every request to the alerts API, authenticated or not. */
  requests: number;
  byTenant: Record<string, number>;
  byStatus: Record<string, number>;
}

export interface SeedRequest {
  tenantId: string;
  count: number;
  start: string;
  spacingMs: number;
}

interface StoredAlert {
  /** lastUpdateTime normalised to a fixed width so string order equals time order. */
  key: string;
  id: string;
  summary: Omit<MdeAlert, "evidence">;
  evidence: MdeEvidence[];
}

interface TenantState {
  sorted: StoredAlert[];
  byId: Map<string, StoredAlert>;
  throttle: { times: number; retryAfterSeconds: number } | null;
  failure: { status: number; times: number } | null;
  hangs: number;
  latencyMs: number | undefined;
  requests: RecordedRequest[];
}

type Bound = { op: "ge" | "gt" | "le" | "lt"; key: string };

const TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?Z$/;

/**
 * Fixed-width form (always 7 fractional digits) of an MDE timestamp, or null.
 * Date is avoided on purpose: it drops the digits below a millisecond, and the
 * service's timestamps carry up to 100 ns precision.
 */
export function mdeTimestampKey(value: string): string | null {
  const m = TIMESTAMP.exec(value);
  if (m === null) return null;
  const [, y, mo, d, h, mi, s, frac] = m;
  const check = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}Z`);
  // Date rolls 02-30 over to 03-02 instead of failing, so compare the parts back.
  if (Number.isNaN(check.getTime()) || check.toISOString().slice(0, 19) !== value.slice(0, 19)) return null;
  return `${value.slice(0, 19)}.${(frac ?? "").padEnd(7, "0")}Z`;
}

function compareStored(a: StoredAlert, b: StoredAlert): number {
  if (a.key !== b.key) return a.key < b.key ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return 0;
}

/** First index whose element satisfies `pred`; `pred` must be monotone (false… then true…). */
function firstIndex(items: readonly StoredAlert[], pred: (item: StoredAlert) => boolean): number {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const item = items[mid];
    if (item !== undefined && pred(item)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function toStored(alert: MdeAlert): StoredAlert {
  const key = mdeTimestampKey(alert.lastUpdateTime);
  if (key === null) throw new Error(`FakeDefender: alert ${alert.id} has an unparseable lastUpdateTime ${alert.lastUpdateTime}`);
  const { evidence, ...summary } = alert;
  return { key, id: alert.id, summary, evidence };
}

function toAlert(stored: StoredAlert): MdeAlert {
  return { ...stored.summary, evidence: stored.evidence };
}

class BadRequest extends Error {}

function parseFilter(raw: string): Bound[] {
  const tokens = raw.trim().split(/\s+/);
  const conditions: string[][] = [];
  if (tokens.length === 3) conditions.push(tokens);
  else if (tokens.length === 7 && tokens[3] === "and") conditions.push(tokens.slice(0, 3), tokens.slice(4));
  else throw new BadRequest(`Unsupported $filter expression: ${raw}`);
  return conditions.map(([property, op, value]) => {
    if (property !== "lastUpdateTime") throw new BadRequest(`Unsupported $filter property: ${String(property)}`);
    if (op !== "ge" && op !== "gt" && op !== "le" && op !== "lt") throw new BadRequest(`Unsupported $filter operator: ${String(op)}`);
    const key = mdeTimestampKey(value ?? "");
    if (key === null) throw new BadRequest(`Invalid DateTimeOffset literal in $filter: ${String(value)}`);
    return { op, key };
  });
}

function parseNonNegativeInt(name: string, raw: string | null): number | undefined {
  if (raw === null) return undefined;
  if (!/^\d{1,9}$/.test(raw)) throw new BadRequest(`Invalid value for ${name}: ${raw}`);
  return Number(raw);
}

const KNOWN_OPTIONS = new Set(["$filter", "$top", "$skip", "$expand"]);

interface ParsedQuery {
  bounds: Bound[];
  top: number | undefined;
  skip: number;
  expandEvidence: boolean;
}

function parseQuery(query: URLSearchParams): ParsedQuery {
  const seen = new Set<string>();
  for (const name of query.keys()) {
    if (name.startsWith("$") && !KNOWN_OPTIONS.has(name)) throw new BadRequest(`The query parameter '${name}' is not supported.`);
    if (seen.has(name)) throw new BadRequest(`The query parameter '${name}' is specified more than once.`);
    seen.add(name);
  }
  const filter = query.get("$filter");
  const top = parseNonNegativeInt("$top", query.get("$top"));
  if (top !== undefined && (top < 1 || top > MAX_PAGE_SIZE)) throw new BadRequest(`$top must be between 1 and ${MAX_PAGE_SIZE}.`);
  const expand = query.get("$expand");
  if (expand !== null && expand !== "evidence") throw new BadRequest(`Unsupported $expand: ${expand}`);
  return {
    bounds: filter === null ? [] : parseFilter(filter),
    top,
    skip: parseNonNegativeInt("$skip", query.get("$skip")) ?? 0,
    expandEvidence: expand === "evidence",
  };
}

const ERROR_CODES: Record<number, string> = {
  400: "InvalidInput",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  405: "MethodNotAllowed",
  429: "TooManyRequests",
  500: "InternalServerError",
  502: "BadGateway",
  503: "ServiceUnavailable",
  504: "GatewayTimeout",
};

export class FakeDefender {
  url = "";
  private readonly server: Server;
  private readonly tenants = new Map<string, TenantState>();
  private readonly pendingTimers = new Set<NodeJS.Timeout>();
  private defaultLatencyMs: number;
  private nextLinkPaging = false;
  private counters: FakeDefenderStats = { requests: 0, byTenant: {}, byStatus: {} };

  constructor(private readonly options: FakeDefenderOptions) {
    this.defaultLatencyMs = options.latencyMs ?? 0;
    this.server = createServer({ cert: options.certPem, key: options.keyPem }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent && !res.destroyed) this.sendError(res, 500, `Fake failure: ${String(err)}`);
      });
    });
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, "127.0.0.1", () => {
        this.server.off("error", reject);
        resolve();
      });
    });
    const { port } = this.server.address() as AddressInfo;
    this.url = `https://127.0.0.1:${port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    for (const timer of this.pendingTimers) clearTimeout(timer);
    this.pendingTimers.clear();
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Hung and keep-alive sockets would otherwise keep close() waiting forever.
    this.server.closeAllConnections();
    await closed;
  }

  // ---- test control -------------------------------------------------------

  /** Adds alerts; an alert whose id already exists replaces the old one. */
  addAlerts(tenantId: string, alerts: readonly MdeAlert[]): void {
    const state = this.tenant(tenantId);
    const fresh = alerts.map(toStored);
    for (const stored of fresh) {
      const old = state.byId.get(stored.id);
      if (old !== undefined) this.removeSorted(state, old);
      state.byId.set(stored.id, stored);
    }
    // Appending and sorting once is cheaper for bulk seeding; splicing keeps
    // small, frequent additions from re-sorting a 100k backlog.
    if (fresh.length > 64) {
      state.sorted = state.sorted.concat(fresh).sort(compareStored);
    } else {
      for (const stored of fresh) this.insertSorted(state, stored);
    }
  }

  /** Changes an alert in place, as the service does when an analyst or automation touches it. */
  updateAlert(tenantId: string, id: string, patch: Partial<Omit<MdeAlert, "id">>): MdeAlert {
    const state = this.tenant(tenantId);
    const old = state.byId.get(id);
    if (old === undefined) throw new Error(`FakeDefender: tenant ${tenantId} has no alert ${id}`);
    const updated = toStored({ ...toAlert(old), ...patch, id });
    this.removeSorted(state, old);
    this.insertSorted(state, updated);
    state.byId.set(id, updated);
    return toAlert(updated);
  }

  removeAll(tenantId: string): void {
    const state = this.tenant(tenantId);
    state.sorted = [];
    state.byId.clear();
  }

  /** The tenant's alerts in the order the fake serves them. */
  alerts(tenantId: string): MdeAlert[] {
    return this.tenant(tenantId).sorted.map(toAlert);
  }

  throttle(tenantId: string, opts: { times: number; retryAfterSeconds: number }): void {
    this.tenant(tenantId).throttle = { ...opts };
  }

  fail(tenantId: string, opts: { status: number; times: number }): void {
    this.tenant(tenantId).failure = { ...opts };
  }

  /** Accepts the next `times` requests of the tenant and never answers them. */
  hang(tenantId: string, times: number): void {
    this.tenant(tenantId).hangs = times;
  }

  setLatency(ms: number, tenantId?: string): void {
    if (tenantId === undefined) this.defaultLatencyMs = ms;
    else this.tenant(tenantId).latencyMs = ms;
  }

  /** When on, a full page carries "@odata.nextLink" to the next $skip (even if that page is empty). */
  setNextLinkPaging(enabled: boolean): void {
    this.nextLinkPaging = enabled;
  }

  // ---- introspection ------------------------------------------------------

  requests(tenantId: string): RecordedRequest[] {
    return [...(this.tenants.get(tenantId)?.requests ?? [])];
  }

  get stats(): FakeDefenderStats {
    return { requests: this.counters.requests, byTenant: { ...this.counters.byTenant }, byStatus: { ...this.counters.byStatus } };
  }

  resetStats(): void {
    this.counters = { requests: 0, byTenant: {}, byStatus: {} };
    for (const state of this.tenants.values()) state.requests = [];
  }

  seed(request: SeedRequest): number {
    const start = new Date(request.start);
    this.addAlerts(request.tenantId, generateAlerts(request.tenantId, request.count, { start, spacingMs: request.spacingMs }));
    return this.tenant(request.tenantId).sorted.length;
  }

  // ---- internals ----------------------------------------------------------

  private tenant(tenantId: string): TenantState {
    let state = this.tenants.get(tenantId);
    if (state === undefined) {
      state = { sorted: [], byId: new Map(), throttle: null, failure: null, hangs: 0, latencyMs: undefined, requests: [] };
      this.tenants.set(tenantId, state);
    }
    return state;
  }

  private insertSorted(state: TenantState, stored: StoredAlert): void {
    const at = firstIndex(state.sorted, (item) => compareStored(item, stored) > 0);
    state.sorted.splice(at, 0, stored);
  }

  private removeSorted(state: TenantState, stored: StoredAlert): void {
    const at = firstIndex(state.sorted, (item) => compareStored(item, stored) >= 0);
    if (state.sorted[at]?.id === stored.id) state.sorted.splice(at, 1);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    if (url.pathname.startsWith("/_fake/")) return this.handleControl(req, res, url.pathname);
    if (url.pathname !== "/api/alerts" && url.pathname !== "/api/v1.0/alerts") {
      return this.sendError(res, 404, `Resource not found: ${url.pathname}`);
    }
    this.counters.requests++;
    if (req.method !== "GET") return this.finish(res, null, url.searchParams, 405, `Method ${String(req.method)} is not allowed.`);

    const claims = await this.authenticate(req.headers.authorization);
    if (typeof claims === "string") return this.finish(res, null, url.searchParams, 401, claims);
    const state = this.tenant(claims.tid);
    this.counters.byTenant[claims.tid] = (this.counters.byTenant[claims.tid] ?? 0) + 1;
    if (claims.roles !== undefined || claims.scp !== undefined) {
      const granted = [...(claims.roles ?? []), ...(claims.scp ?? "").split(" ")];
      if (!granted.some((p) => ALERT_PERMISSIONS.includes(p))) {
        return this.finish(res, state, url.searchParams, 403, "The application does not have any of the required application permissions (Alert.ReadWrite.All, Alert.Read.All) to access the resource.");
      }
    }

    // Faults are claimed on arrival, so "the next N requests" counts in arrival order whatever the latency.
    if (state.hangs > 0) {
      state.hangs--;
      this.record(state, url.searchParams, 0);
      return;
    }
    let fault: (() => void) | undefined;
    if (state.throttle !== null && state.throttle.times > 0) {
      const { retryAfterSeconds } = state.throttle;
      if (--state.throttle.times === 0) state.throttle = null;
      fault = () =>
        this.finish(res, state, url.searchParams, 429, "Rate limit is exceeded. Try again later.", {
          "Retry-After": String(retryAfterSeconds),
        });
    } else if (state.failure !== null && state.failure.times > 0) {
      const { status } = state.failure;
      if (--state.failure.times === 0) state.failure = null;
      fault = () => this.finish(res, state, url.searchParams, status, `Injected failure with status ${status}.`);
    }

    const latency = state.latencyMs ?? this.defaultLatencyMs;
    if (latency > 0) await this.delay(latency);
    if (res.destroyed) return;
    if (fault !== undefined) return fault();

    let query: ParsedQuery;
    try {
      query = parseQuery(url.searchParams);
    } catch (err) {
      if (err instanceof BadRequest) return this.finish(res, state, url.searchParams, 400, err.message);
      throw err;
    }
    const body = this.page(state, query, url);
    this.record(state, url.searchParams, 200);
    this.write(res, 200, JSON.stringify(body));
  }

  private page(state: TenantState, query: ParsedQuery, url: URL): Record<string, unknown> {
    let start = 0;
    let end = state.sorted.length;
    for (const { op, key } of query.bounds) {
      if (op === "ge") start = Math.max(start, firstIndex(state.sorted, (a) => a.key >= key));
      else if (op === "gt") start = Math.max(start, firstIndex(state.sorted, (a) => a.key > key));
      else if (op === "le") end = Math.min(end, firstIndex(state.sorted, (a) => a.key > key));
      else end = Math.min(end, firstIndex(state.sorted, (a) => a.key >= key));
    }
    const size = query.top ?? MAX_PAGE_SIZE;
    const from = Math.min(start + query.skip, Math.max(start, end));
    const to = Math.min(end, from + size);
    const slice = state.sorted.slice(from, to);
    const value = query.expandEvidence ? slice.map(toAlert) : slice.map((s) => s.summary);
    const body: Record<string, unknown> = { "@odata.context": ODATA_CONTEXT, value };
    if (this.nextLinkPaging && value.length === size) {
      const next = new URLSearchParams(url.searchParams);
      next.set("$skip", String(query.skip + size));
      body["@odata.nextLink"] = `${this.url}${url.pathname}?${next.toString()}`;
    }
    return body;
  }

  private async authenticate(header: string | undefined): Promise<DefenderTokenClaims | string> {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
    if (match?.[1] === undefined) return "Authorization header with a Bearer access token is required.";
    const claims = await this.options.verifyAccessToken(match[1]);
    if (claims === null) return "The access token is invalid.";
    if (claims.exp * 1000 <= Date.now()) return "The access token has expired.";
    if (!DEFENDER_AUDIENCES.includes(claims.aud)) return `The access token audience '${claims.aud}' is not valid for this resource.`;
    return claims;
  }

  private delay(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pendingTimers.delete(timer);
        resolve();
      }, ms);
      this.pendingTimers.add(timer);
    });
  }

  private record(state: TenantState | null, query: URLSearchParams, status: number): void {
    this.counters.byStatus[status] = (this.counters.byStatus[status] ?? 0) + 1;
    state?.requests.push({ at: Date.now(), query, status });
  }

  private finish(
    res: ServerResponse,
    state: TenantState | null,
    query: URLSearchParams,
    status: number,
    message: string,
    headers: Record<string, string> = {},
  ): void {
    this.record(state, query, status);
    this.sendError(res, status, message, headers);
  }

  private sendError(res: ServerResponse, status: number, message: string, headers: Record<string, string> = {}): void {
    const code = ERROR_CODES[status] ?? (status >= 500 ? "InternalServerError" : "BadRequest");
    const extra = status === 401 ? { "WWW-Authenticate": 'Bearer error="invalid_token"', ...headers } : headers;
    this.write(res, status, JSON.stringify({ error: { code, message, target: randomUUID() } }), extra);
  }

  private write(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    if (res.destroyed || res.writableEnded) return;
    // Encoded once: a 10,000-alert page is ~11 MB, and byteLength + end(string) would scan it twice.
    const bytes = Buffer.from(body, "utf8");
    res.writeHead(status, {
      "Content-Type": "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8",
      "Content-Length": bytes.length,
      ...headers,
    });
    res.end(bytes);
  }

  /** Cross-process control for benchmarks, which run the fake in another process. */
  private async handleControl(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const route = `${String(req.method)} ${path}`;
    if (route === "GET /_fake/stats") return this.write(res, 200, JSON.stringify(this.stats));
    if (route === "POST /_fake/reset-stats") {
      this.resetStats();
      return this.write(res, 200, "{}");
    }
    if (route === "POST /_fake/seed" || route === "POST /_fake/throttle" || route === "POST /_fake/fail") {
      let input: unknown;
      try {
        input = JSON.parse(await readBody(req));
      } catch {
        return this.sendError(res, 400, "Body must be JSON.");
      }
      if (typeof input !== "object" || input === null) return this.sendError(res, 400, "Body must be a JSON object.");
      const o = input as Record<string, unknown>;
      if (typeof o.tenantId !== "string") return this.sendError(res, 400, "tenantId is required.");
      if (path === "/_fake/seed") {
        if (typeof o.count !== "number" || typeof o.start !== "string" || typeof o.spacingMs !== "number" || Number.isNaN(Date.parse(o.start))) {
          return this.sendError(res, 400, "Expected {tenantId, count, start, spacingMs}.");
        }
        const total = this.seed({ tenantId: o.tenantId, count: o.count, start: o.start, spacingMs: o.spacingMs });
        return this.write(res, 200, JSON.stringify({ tenantId: o.tenantId, added: o.count, total }));
      }
      if (typeof o.times !== "number") return this.sendError(res, 400, "times is required.");
      if (path === "/_fake/throttle") this.throttle(o.tenantId, { times: o.times, retryAfterSeconds: Number(o.retryAfterSeconds ?? 1) });
      else this.fail(o.tenantId, { times: o.times, status: Number(o.status ?? 500) });
      return this.write(res, 200, "{}");
    }
    return this.sendError(res, 404, `Unknown control route: ${route}`);
  }
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > 1_000_000) throw new Error("body too large");
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString("utf8");
}
