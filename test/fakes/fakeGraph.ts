import { randomInt, randomUUID } from "node:crypto";
import type { ServerResponse } from "node:http";
import {
  admitUnderQuota,
  boundedRange,
  clearVersions,
  compareKeyed as compareStored,
  countServed,
  firstIndex,
  hash32,
  isServedAt,
  newestVersions,
  MINUTE_MS,
  removeAllVersions,
  removeExact,
  resetBookkeeping,
  restartStream,
  runStreamTick,
  setQuota,
  streamStatusOf,
  trackedDelay,
  type Bound,
  type StreamPace,
} from "./alertApiFaults";
import { FOREIGN_NEXT_LINK_ORIGIN, mdeTimestampKey } from "./fakeDefender";
import {
  DEFAULT_GRAPH_SERVICE_SOURCES,
  EVOLVABLE_DETECTION_SOURCES,
  EVOLVABLE_SERVICE_SOURCES,
  generateGraphAlerts,
  makeGraphAlert,
  toGraphTimestamp,
  type GraphAlert,
  type GraphServiceSource,
} from "./graphAlerts";
import { FakeHttpsServer, isRecord, parseJsonObject, sendJson, type FakeRequest, type TlsMaterial } from "./http";

/**
 * A stand-in for Microsoft Graph `GET /v1.0/security/alerts_v2`, served over HTTPS on loopback
 * so the app's real HTTP client, TLS trust and paging code are exercised.
 *
 * What it models, and how:
 * - Data is chosen by the access token: Graph has no tenant in the URL, the token's `tid` is the
 *   tenant whose alerts are read. A token for the wrong tenant therefore reads that tenant's
 *   alerts (each alert carries `tenantId`); blockTenant() makes a tenant's tokens a 401.
 * - Tokens: 401 `InvalidAuthenticationToken` without a bearer token, for one the verifier
 *   refuses or that expired, and for an audience other than Graph's (an MDE token gets 401);
 *   403 when neither `scp` nor `roles` holds SecurityAlert.Read.All / ReadWrite.All, or when
 *   denyUserAccess() plays a consenting user without a Defender XDR role.
 * - `$filter`: only `lastUpdateDateTime` with ge/gt/le/lt, one comparison or two joined by
 *   `and`, compared at the service's 100 ns. Anything else is a 400 here (the real service
 *   accepts more), so an unexpected query shape fails loudly.
 * - `$top`: 1…1000 (the Graph security API's documented constraint); without it a page holds
 *   `defaultPageSize` (100). `$skip`, `$orderby`, `$count`, `$select`, `$expand` are 400s here:
 *   a client must page by `@odata.nextLink` alone. (The real alerts_v2 accepts `$skip` and
 *   `$count`; refusing them keeps the client honest.)
 * - Paging: a page with more behind it carries `@odata.nextLink`: this host, the same path,
 *   `$filter` and `$top` again, and an opaque `$skiptoken`. Two paging models, per tenant
 *   (setPaging):
 *     "offset" (default): the skip token holds an offset; every request evaluates the filter
 *       and the order again. This is the realistic trap: an alert updated while a span is paged
 *       leaves the span and the next page starts one alert late (one alert is never served); a
 *       late alert that becomes visible, or a shuffled order, repeats or skips alerts.
 *       Nothing in Graph's documentation promises more than this.
 *     "snapshot": the first page fixes the span's versions and order; later pages serve from
 *       that snapshot (alerts as they were), until `skipTokenTtlMs` (then 400).
 * - Order (setOrder): "newest" (default, most recently updated first, as the documentation says
 *   "the most recent alerts are displayed at the top"), "oldest" (lastUpdateDateTime, id), or
 *   "shuffled": a new pseudo-random order for every request, so offset paging over it repeats and
 *   misses alerts; with "snapshot" paging the first page's order holds. "flipping" (newest
 *   first on a first page, oldest on linked ones) is the worst case: the same alerts missed every time.
 * - `Prefer: include-unknown-enum-members`: without it, alerts whose serviceSource or
 *   detectionSource is an "evolvable enum" member past unknownFutureValue (e.g.
 *   microsoftDefenderForCloud) are not served (`unknownEnumMembers: "omit"`, the default, as the
 *   issue describes), or are served with those members turned into `unknownFutureValue`
 *   ("mask", as Graph's enum documentation describes).
 * - Late alerts (addAlerts/updateAlert with `visibleAt`, the fake's clock), updated alerts (a new
 *   lastUpdateDateTime for the same id), injected 429/503 with Retry-After, 5xx (also only on
 *   nextLink requests: "mid-paging"), hung requests, pages cut short, a per-tenant quota.
 *
 * The fake has its own clock (option `clock` plus setClockOffset) for the Date header, ingestion
 * delay, quota and skip-token expiry; token expiry is judged by the real clock.
 */

export const GRAPH_AUDIENCES: readonly string[] = ["https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"];
export const GRAPH_ALERT_PERMISSIONS: readonly string[] = ["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"];
export const GRAPH_ALERTS_ROUTE = "/v1.0/security/alerts_v2";
export const GRAPH_ODATA_CONTEXT = "https://graph.microsoft.com/v1.0/$metadata#security/alerts_v2";
/** The largest `$top` the fake accepts. */
export const GRAPH_MAX_PAGE_SIZE = 1000;
export const GRAPH_DEFAULT_PAGE_SIZE = 100;
export const PREFER_UNKNOWN_ENUM_MEMBERS = "include-unknown-enum-members";
export { FOREIGN_NEXT_LINK_ORIGIN };

/** Snapshots kept per tenant for "snapshot" paging; older ones answer 400 like expired ones. */
const MAX_SNAPSHOTS = 64;

export interface GraphTokenClaims {
  tid: string;
  aud: string;
  /** Delegated permissions, space-separated. */
  scp?: string;
  /** Application permissions. */
  roles?: string[];
  exp: number;
}

export interface FakeGraphOptions extends TlsMaterial {
  /** Returns the token's claims, or null when the token is not one the test issued. */
  verifyAccessToken: (token: string) => Promise<GraphTokenClaims | null>;
  latencyMs?: number;
  /** Keep `served()` (every version put in an answer). On by default; a benchmark turns it off. */
  recordServed?: boolean;
  /** The fake's time source in epoch ms (default Date.now); setClockOffset() is added on top. */
  clock?: () => number;
  /** Page size without `$top` (default 100). */
  defaultPageSize?: number;
  /** What a request without the Prefer header gets of evolvable-enum alerts (default "omit"). */
  unknownEnumMembers?: "omit" | "mask";
  /** How long a "snapshot" skip token stays valid, by the fake's clock (default 10 minutes). */
  skipTokenTtlMs?: number;
}

/**
 * "newest": lastUpdateDateTime descending (then id descending). "oldest": ascending. "shuffled": a
 * new order per request. "flipping": newest first on a first page, oldest first on pages reached
 * by a link: offset paging over it reads the newest end of a span twice and never the oldest.
 */
export type GraphAlertOrder = "newest" | "oldest" | "shuffled" | "flipping";
/** How a skip token pages: an offset into an order evaluated again per request, or a snapshot taken by the first page. */
export type GraphPaging = "offset" | "snapshot";
/** Where nextLinks point: this fake (normal), FOREIGN_NEXT_LINK_ORIGIN, or another path on this host. */
/**
 * "loop": every followed link answers an empty page whose nextLink is that same link (a service stuck in a loop).
 * "emptyChain": every followed link answers an empty page whose nextLink is a new one (a chain that never ends).
 */
export type GraphNextLinkMode = "normal" | "foreign" | "otherPath" | "loop" | "emptyChain";

export interface GraphRecordedRequest {
  /** The fake's clock when the response was decided. */
  at: number;
  query: URLSearchParams;
  /** 0 while a request is held open by hang(). */
  status: number;
  /** The Prefer header as sent, if any. */
  prefer: string | undefined;
  userAgent: string | undefined;
  /** Whether the request carried a `$skiptoken` (a followed nextLink). */
  followedLink: boolean;
  /** Alerts in the answer (0 for errors). */
  served: number;
}

export interface FakeGraphStats {
  /** Every request to the alerts route, authenticated or not. */
  requests: number;
  byTenant: Record<string, number>;
  byStatus: Record<string, number>;
  /** 200 pages served. */
  pages: number;
  /** Alerts put in 200 pages. */
  servedAlerts: number;
  /** 429 answers (injected or by quota). */
  throttled: number;
}

export interface GraphPageInfo {
  /** 0-based count of 200 pages served to the tenant (reset by resetStats). */
  index: number;
  query: URLSearchParams;
  served: number;
  followedLink: boolean;
}

export type GraphAfterPageHook = (info: GraphPageInfo) => void;

export type GraphVisibleAt = number | ((alert: GraphAlert) => number);

export interface GraphAlertStreamOptions {
  /** Arrivals per minute (new alerts plus updates); 0 stops the stream. */
  perMinute: number;
  /** Share of arrivals that update an open alert the stream created instead of adding one (0–1, default 0.1). */
  updateShare?: number;
  /** Sources new alerts cycle through (default DEFAULT_GRAPH_SERVICE_SOURCES). */
  serviceSources?: readonly GraphServiceSource[];
}

export interface GraphAlertStreamStatus {
  perMinute: number;
  updateShare: number;
  created: number;
  updated: number;
}

export interface GraphSeedRequest {
  tenantId: string;
  count: number;
  start: string;
  spacingMs: number;
}

export interface GraphFailure {
  status: number;
  times: number;
  /** Sent as Retry-After when given (Graph documents it on 503 as well as 429). */
  retryAfterSeconds?: number;
  /** Only requests that follow a nextLink fail: a 5xx in the middle of paging. */
  onlyFollowedLinks?: boolean;
}

/** A stored version of an alert. Seeded alerts keep only their recipe and are built when served. */
interface StoredAlert {
  /** lastUpdateDateTime at a fixed width (7 fractional digits), so string order is time order. */
  key: string;
  id: string;
  lastUpdateDateTime: string;
  alert: GraphAlert | undefined;
  recipe: { tenantId: string; serviceSource: GraphServiceSource } | undefined;
  /** Served only to requests with the Prefer header ("omit"), or masked ("mask"). */
  evolvable: boolean;
  /** Fake-clock ms from which queries match this version; -Infinity for "always". */
  visibleAt: number;
  supersededBy?: StoredAlert;
  supersedes?: StoredAlert;
}

interface Snapshot {
  id: string;
  createdAt: number;
  filter: string;
  top: number;
  versions: StoredAlert[];
}

interface AlertStream extends GraphAlertStreamStatus, StreamPace {
  serviceSources: readonly GraphServiceSource[];
}

interface TenantState {
  /** Every stored version, visible yet or not, in (key, id) order. */
  sorted: StoredAlert[];
  byId: Map<string, StoredAlert>;
  hasDelayedVersions: boolean;
  seed: number;
  order: GraphAlertOrder;
  paging: GraphPaging;
  snapshots: Map<string, Snapshot>;
  blocked: boolean;
  userDenied: boolean;
  throttle: { times: number; retryAfterSeconds: number; status: number } | null;
  failure: GraphFailure | null;
  hangs: number;
  corruptPages: number;
  poisoned: Map<string, string>;
  quota: { perMinute: number; perHour?: number } | null;
  admitted: number[];
  latencyMs: number | undefined;
  requests: GraphRecordedRequest[];
  served: Map<string, number>;
  pageRequests: number;
  afterPage: GraphAfterPageHook | null;
  /** Last stamp handed out by nextStamp (ms and a sub-ms counter), so generated versions never tie. */
  stampMs: number;
  stampSub: number;
  /** Requests so far: seeds the "shuffled" order, which differs per request. */
  requestCount: number;
}

/** A Graph error answer: status, `error.code`, message and extra headers. */
class GraphError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

interface ParsedQuery {
  filter: string;
  bounds: Bound[];
  top: number;
  /** Decoded skip token, when the request follows a nextLink. */
  token: SkipToken | undefined;
}

interface SkipToken {
  v: 1;
  /** The filter and page size the paging started with. */
  f: string;
  t: number;
  /** Offset into the order (offset paging) or the snapshot. */
  o: number;
  /** Snapshot id ("snapshot" paging). */
  s?: string;
}

export class FakeGraph extends FakeHttpsServer {
  private readonly tenants = new Map<string, TenantState>();
  private readonly pendingTimers = new Set<NodeJS.Timeout>();
  private readonly streams = new Map<string, AlertStream>();
  private readonly clock: () => number;
  private clockOffsetMs = 0;
  private defaultLatencyMs: number;
  private readonly defaultPageSize: number;
  private readonly skipTokenTtlMs: number;
  private nextLinkMode: GraphNextLinkMode = "normal";
  private counters: FakeGraphStats = emptyStats();

  constructor(private readonly options: FakeGraphOptions) {
    super(options);
    this.clock = options.clock ?? Date.now;
    this.defaultLatencyMs = options.latencyMs ?? 0;
    this.defaultPageSize = options.defaultPageSize ?? GRAPH_DEFAULT_PAGE_SIZE;
    this.skipTokenTtlMs = options.skipTokenTtlMs ?? 10 * MINUTE_MS;
    if (!Number.isInteger(this.defaultPageSize) || this.defaultPageSize < 1 || this.defaultPageSize > GRAPH_MAX_PAGE_SIZE) {
      throw new Error(`FakeGraph: defaultPageSize must be 1…${GRAPH_MAX_PAGE_SIZE}`);
    }
  }

  override async stop(): Promise<void> {
    for (const timer of this.pendingTimers) clearTimeout(timer);
    this.pendingTimers.clear();
    for (const stream of this.streams.values()) clearInterval(stream.timer);
    this.streams.clear();
    await super.stop();
  }

  // ---- clock --------------------------------------------------------------

  /** The fake's current time in epoch ms: clock() + the offset. */
  now(): number {
    return this.clock() + this.clockOffsetMs;
  }

  /** Skews the fake's clock (Date header, ingestion delay, quota, skip-token expiry). */
  setClockOffset(ms: number): void {
    if (!Number.isFinite(ms)) throw new Error(`FakeGraph: clock offset must be finite, got ${ms}`);
    this.clockOffsetMs = ms;
  }

  // ---- test control: alerts -----------------------------------------------

  /**
   * Adds alerts for the tenant (the `tid` of the tokens that read them); an alert whose id exists
   * replaces it. With a `visibleAt` in the future (fake clock) the version is ingested late:
   * queries do not match it before then and keep serving the version it replaces.
   */
  addAlerts(tenantId: string, alerts: readonly GraphAlert[], options: { visibleAt?: GraphVisibleAt } = {}): void {
    const state = this.tenant(tenantId);
    for (const alert of alerts) {
      const visibleAt = options.visibleAt === undefined ? Number.NEGATIVE_INFINITY : typeof options.visibleAt === "function" ? options.visibleAt(alert) : options.visibleAt;
      this.store(state, toStored(alert, visibleAt));
    }
  }

  /**
   * Changes an alert as an analyst or automation would: a new version with a new
   * lastUpdateDateTime (the fake's now, unless the patch sets one), visible at once or at
   * `visibleAt`. Returns the new version.
   */
  updateAlert(tenantId: string, id: string, patch: Partial<Omit<GraphAlert, "id">> = {}, options: { visibleAt?: number } = {}): GraphAlert {
    const state = this.tenant(tenantId);
    const old = state.byId.get(id);
    if (old === undefined) throw new Error(`FakeGraph: tenant ${tenantId} has no alert ${id}`);
    const lastUpdateDateTime = patch.lastUpdateDateTime ?? this.nextStamp(state);
    const updated: GraphAlert = { ...build(old), ...patch, id, lastUpdateDateTime };
    this.store(state, toStored(updated, options.visibleAt ?? Number.NEGATIVE_INFINITY));
    return updated;
  }

  /** Deletes every version of an alert; false when the tenant had none. */
  removeAlert(tenantId: string, id: string): boolean {
    return removeAllVersions(this.tenant(tenantId), id);
  }

  removeAll(tenantId: string): void {
    clearVersions(this.tenant(tenantId));
  }

  /** The newest version of each of the tenant's alerts (visible yet or not), oldest first. */
  alerts(tenantId: string): GraphAlert[] {
    return newestVersions(this.tenant(tenantId)).map(build);
  }

  /** `count` generated alerts from `start`, `spacingMs` apart, cycling through the XDR sources. Returns the tenant's alert count. */
  seed(request: GraphSeedRequest): number {
    const state = this.tenant(request.tenantId);
    const start = new Date(request.start);
    // Generated alerts are rebuilt from their id when served: a 100,000-alert backlog keeps only keys in memory.
    const alerts = generateGraphAlerts(request.tenantId, request.count, { start, spacingMs: request.spacingMs });
    const batch = alerts.map((alert) => toRecipe(alert));
    for (const stored of batch) {
      const previous = state.byId.get(stored.id);
      if (previous !== undefined) this.removeAlert(request.tenantId, stored.id);
      state.byId.set(stored.id, stored);
    }
    state.sorted = state.sorted.concat(batch).sort(compareStored);
    return state.byId.size;
  }

  /** Serves `raw` verbatim in place of alert `id` (filtering still uses the stored alert); null clears. */
  poisonAlert(tenantId: string, id: string, raw: string | null): void {
    const { poisoned } = this.tenant(tenantId);
    if (raw === null) poisoned.delete(id);
    else poisoned.set(id, raw);
  }

  // ---- test control: behaviour --------------------------------------------

  setOrder(tenantId: string, order: GraphAlertOrder): void {
    this.tenant(tenantId).order = order;
  }

  setPaging(tenantId: string, paging: GraphPaging): void {
    const state = this.tenant(tenantId);
    state.paging = paging;
    state.snapshots.clear();
  }

  /** Where every nextLink points from now on (all tenants). */
  setNextLinkMode(mode: GraphNextLinkMode): void {
    this.nextLinkMode = mode;
  }

  /** The tenant's tokens get 401 (a tenant Graph does not accept tokens for); false lifts it. */
  blockTenant(tenantId: string, blocked = true): void {
    this.tenant(tenantId).blocked = blocked;
  }

  /** 403 for the tenant's delegated tokens, as for a consenting user with no Defender XDR role; false lifts it. */
  denyUserAccess(tenantId: string, denied = true): void {
    this.tenant(tenantId).userDenied = denied;
  }

  /** The next `times` requests get `status` (429 by default) with Retry-After. */
  throttle(tenantId: string, opts: { times: number; retryAfterSeconds: number; status?: 429 | 503 }): void {
    this.tenant(tenantId).throttle = opts.times > 0 ? { times: opts.times, retryAfterSeconds: opts.retryAfterSeconds, status: opts.status ?? 429 } : null;
  }

  /** The next `times` requests (or only those following a nextLink) fail with `status`. */
  fail(tenantId: string, failure: GraphFailure): void {
    this.tenant(tenantId).failure = failure.times > 0 ? { ...failure } : null;
  }

  /** Accepts the next `times` requests and never answers them. */
  hang(tenantId: string, times: number): void {
    this.tenant(tenantId).hangs = times;
  }

  /** The next `times` pages are 200s whose body is cut in half, so not valid JSON. */
  corruptPages(tenantId: string, opts: { times: number }): void {
    this.tenant(tenantId).corruptPages = Math.max(0, opts.times);
  }

  /** Answers 429 with Retry-After beyond a sliding per-minute (and optional per-hour) limit; null lifts it. */
  enforceQuota(tenantId: string, quota: { perMinute: number; perHour?: number } | null): void {
    setQuota(this.tenant(tenantId), quota, "FakeGraph");
  }

  /** Runs after each 200 page for the tenant is computed and before it is sent; null removes it. */
  afterPage(tenantId: string, hook: GraphAfterPageHook | null): void {
    this.tenant(tenantId).afterPage = hook;
  }

  setLatency(ms: number, tenantId?: string): void {
    if (tenantId === undefined) this.defaultLatencyMs = ms;
    else this.tenant(tenantId).latencyMs = ms;
  }

  /**
   * Keeps alerts arriving for the tenant at about `perMinute` (new alerts, and for `updateShare`
   * of arrivals a status change new → inProgress → resolved of one the stream added), until
   * called with null or perMinute 0, or stop().
   */
  streamAlerts(tenantId: string, options: GraphAlertStreamOptions | null): void {
    restartStream(this.streams, tenantId, options, "FakeGraph", () => this.streamTick(tenantId), (previous) => ({
      serviceSources: options?.serviceSources ?? previous?.serviceSources ?? DEFAULT_GRAPH_SERVICE_SOURCES,
    }));
  }

  streamStatus(tenantId: string): GraphAlertStreamStatus | null {
    return streamStatusOf(this.streams.get(tenantId));
  }

  // ---- introspection ------------------------------------------------------

  requests(tenantId: string): GraphRecordedRequest[] {
    return [...(this.tenants.get(tenantId)?.requests ?? [])];
  }

  /** How often each version (`${id}@${lastUpdateDateTime}`) was in a 200 body (poisoned and corrupted ones not counted). */
  served(tenantId: string): Map<string, number> {
    return new Map(this.tenants.get(tenantId)?.served);
  }

  pageRequests(tenantId: string): number {
    return this.tenants.get(tenantId)?.pageRequests ?? 0;
  }

  get stats(): FakeGraphStats {
    const c = this.counters;
    return { ...c, byTenant: { ...c.byTenant }, byStatus: { ...c.byStatus } };
  }

  /** Clears counters, recorded requests, served() and pageRequests(). */
  resetStats(): void {
    this.counters = emptyStats();
    resetBookkeeping(this.tenants.values());
  }

  // ---- HTTP ---------------------------------------------------------------

  protected override internalError(res: ServerResponse, err: unknown): void {
    this.sendError(res, new GraphError(500, "generalException", `Fake Graph failure: ${String(err)}`));
  }

  protected override async handle(req: FakeRequest, res: ServerResponse): Promise<void> {
    const { url } = req;
    if (url.pathname.startsWith("/_fake/")) return this.handleControl(req, res);
    if (url.pathname !== GRAPH_ALERTS_ROUTE) {
      return this.sendError(res, new GraphError(400, "BadRequest", `Resource not found for the segment '${url.pathname.split("/").pop() ?? ""}'.`));
    }
    this.counters.requests++;
    const prefer = headerOf(req, "prefer");
    const userAgent = headerOf(req, "user-agent");
    const followedLink = url.searchParams.has("$skiptoken");
    const record = (state: TenantState | null, status: number, served = 0): void => {
      this.counters.byStatus[status] = (this.counters.byStatus[status] ?? 0) + 1;
      if (status === 429) this.counters.throttled++;
      state?.requests.push({ at: this.now(), query: new URLSearchParams(url.searchParams), status, prefer, userAgent, followedLink, served });
    };
    const refuse = (state: TenantState | null, error: GraphError): void => {
      record(state, error.status);
      this.sendError(res, error);
    };
    if (req.method !== "GET") return refuse(null, new GraphError(405, "Request_BadRequest", `Specified HTTP method is not allowed for the request target.`));

    const { claims, error } = await this.authenticate(headerOf(req, "authorization"));
    // A token the fake can read is recorded under its tenant even when refused (wrong audience, expired).
    const known = claims === undefined ? null : this.tenant(claims.tid);
    if (claims !== undefined) this.counters.byTenant[claims.tid] = (this.counters.byTenant[claims.tid] ?? 0) + 1;
    if (error !== undefined || claims === undefined) return refuse(known, error ?? invalidToken("Access token validation failure."));
    const state = this.tenant(claims.tid);
    state.requestCount++;
    if (state.blocked) return refuse(state, invalidToken("Access token validation failure. Invalid tenant."));
    const denied = this.authorize(claims, state);
    if (denied) return refuse(state, denied);

    // Faults are claimed on arrival, so "the next N requests" counts in arrival order whatever the latency.
    const quotaWait = this.admit(state);
    if (quotaWait === 0 && state.hangs > 0) {
      state.hangs--;
      record(state, 0);
      return;
    }
    let query: ParsedQuery | GraphError;
    try {
      query = this.parseQuery(url.searchParams, state);
    } catch (err) {
      if (!(err instanceof GraphError)) throw err;
      query = err;
    }
    const fault = quotaWait > 0 ? tooManyRequests(quotaWait) : this.claimFault(state, followedLink);
    const corrupt = fault === undefined && !(query instanceof GraphError) && state.corruptPages > 0;
    if (corrupt) state.corruptPages--;

    const latency = state.latencyMs ?? this.defaultLatencyMs;
    if (latency > 0) await this.delay(latency);
    if (res.destroyed) return;
    if (fault !== undefined) return refuse(state, fault);
    if (query instanceof GraphError) return refuse(state, query);

    const withUnknown = preferHas(prefer, PREFER_UNKNOWN_ENUM_MEMBERS);
    let page: { items: StoredAlert[]; next: SkipToken | undefined };
    try {
      page = this.selectPage(state, query, withUnknown);
    } catch (err) {
      if (!(err instanceof GraphError)) throw err;
      return refuse(state, err);
    }
    const looping = this.nextLinkMode === "loop" && followedLink;
    if (looping) page = { items: [], next: undefined };
    // Past any offset the data could reach, and a new one each time: never the same link twice.
    if (this.nextLinkMode === "emptyChain" && followedLink) page = { items: [], next: { v: 1, f: query.filter, t: query.top, o: 1_000_000_000 + state.pageRequests } };
    const mask = !withUnknown && this.options.unknownEnumMembers === "mask";
    const items = page.items.map((s) => state.poisoned.get(s.id) ?? JSON.stringify(mask && s.evolvable ? masked(build(s)) : build(s)));
    const nextLink = looping ? `${this.url}${url.pathname}${url.search}` : page.next === undefined ? undefined : this.nextLinkFor(page.next);
    let body = renderPage(items, nextLink);
    // Any strict prefix of a JSON object's text is invalid JSON.
    if (corrupt) body = body.slice(0, body.length >>> 1);

    state.afterPage?.({ index: state.pageRequests, query: new URLSearchParams(url.searchParams), served: page.items.length, followedLink });
    state.pageRequests++;
    this.counters.pages++;
    this.counters.servedAlerts += page.items.length;
    if (!corrupt && this.options.recordServed !== false) countServed(state, page.items, (s) => `${s.id}@${s.lastUpdateDateTime}`);
    record(state, 200, page.items.length);
    this.write(res, 200, body);
  }

  /** The token's claims when the verifier knows it, and the 401 when Graph would refuse it. */
  private async authenticate(header: string | undefined): Promise<{ claims?: GraphTokenClaims; error?: GraphError }> {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
    if (match?.[1] === undefined) return { error: invalidToken("Access token is empty.") };
    const claims = await this.options.verifyAccessToken(match[1]);
    if (claims === null) return { error: invalidToken("Access token validation failure.") };
    if (claims.exp * 1000 <= Date.now()) return { claims, error: invalidToken("Lifetime validation failed, the token is expired.") };
    if (!GRAPH_AUDIENCES.includes(claims.aud)) return { claims, error: invalidToken("Access token validation failure. Invalid audience.") };
    return { claims };
  }

  /** 403 unless the token carries an alerts permission and (for delegated tokens) the user may read alerts. */
  private authorize(claims: GraphTokenClaims, state: TenantState): GraphError | undefined {
    const scopes = (claims.scp ?? "").split(" ").filter((s) => s !== "");
    const roles = claims.roles ?? [];
    if (![...scopes, ...roles].some((p) => GRAPH_ALERT_PERMISSIONS.includes(p))) {
      const message =
        claims.scp === undefined
          ? `Missing application roles. API required roles: ${GRAPH_ALERT_PERMISSIONS.join(",")}.`
          : `Missing scope permissions on the request. API requires one of '${GRAPH_ALERT_PERMISSIONS.join(", ")}'. Scopes on the request '${scopes.join(", ")}'`;
      return new GraphError(403, "Forbidden", message);
    }
    if (state.userDenied && claims.scp !== undefined) {
      return new GraphError(403, "Forbidden", "The user does not have the permissions to read security alerts (Security Reader or a Microsoft Defender XDR role is required).");
    }
    return undefined;
  }

  private parseQuery(params: URLSearchParams, state: TenantState): ParsedQuery {
    const seen = new Set<string>();
    for (const name of params.keys()) {
      if (seen.has(name)) throw new GraphError(400, "BadRequest", `Query option '${name}' was specified more than once, but it must be specified at most once.`);
      seen.add(name);
      if (name === "$skip") throw new GraphError(400, "BadRequest", "The fake Graph does not support $skip: page with @odata.nextLink.");
      if (name.startsWith("$") && name !== "$filter" && name !== "$top" && name !== "$skiptoken") {
        throw new GraphError(400, "BadRequest", `The query specified in the URI is not valid. Query option '${name}' is not supported by the fake Graph.`);
      }
    }
    const rawToken = params.get("$skiptoken");
    const token = rawToken === null ? undefined : decodeSkipToken(rawToken);
    if (rawToken !== null && token === undefined) throw new GraphError(400, "BadRequest", "The $skiptoken is invalid.");
    const filter = params.get("$filter") ?? token?.f ?? "";
    const rawTop = params.get("$top");
    let top: number;
    if (rawTop === null) top = token?.t ?? this.defaultPageSize;
    else if (!/^\d{1,9}$/.test(rawTop)) throw new GraphError(400, "BadRequest", `Invalid value '${rawTop}' for $top query option found.`);
    else top = Number(rawTop);
    if (top < 1 || top > GRAPH_MAX_PAGE_SIZE) {
      throw new GraphError(400, "BadRequest", `Invalid page size specified: '${top}'. Must be between 1 and ${GRAPH_MAX_PAGE_SIZE} inclusive.`);
    }
    // A link whose $filter or $top was edited no longer matches the paging its token continues.
    if (token !== undefined && (token.f !== filter || token.t !== top)) {
      throw new GraphError(400, "BadRequest", "The $skiptoken does not match the query it continues.");
    }
    if (token?.s !== undefined && state.paging !== "snapshot") throw new GraphError(400, "BadRequest", "The $skiptoken has expired.");
    return { filter, bounds: filter === "" ? [] : parseFilter(filter), top, token };
  }

  /** The page the query selects and the skip token of the next one, if more remain. */
  private selectPage(state: TenantState, query: ParsedQuery, withUnknown: boolean): { items: StoredAlert[]; next: SkipToken | undefined } {
    const offset = query.token?.o ?? 0;
    if (state.paging === "snapshot") {
      let snapshot: Snapshot | undefined;
      if (query.token === undefined) {
        snapshot = { id: randomUUID(), createdAt: this.now(), filter: query.filter, top: query.top, versions: this.evaluate(state, query, withUnknown) };
        state.snapshots.set(snapshot.id, snapshot);
        // Oldest first out: a Map iterates in insertion order.
        for (const id of state.snapshots.keys()) {
          if (state.snapshots.size <= MAX_SNAPSHOTS) break;
          state.snapshots.delete(id);
        }
      } else {
        snapshot = query.token.s === undefined ? undefined : state.snapshots.get(query.token.s);
        if (snapshot === undefined || this.now() - snapshot.createdAt > this.skipTokenTtlMs) {
          throw new GraphError(400, "BadRequest", "The $skiptoken has expired.");
        }
      }
      const items = snapshot.versions.slice(offset, offset + query.top);
      const end = offset + items.length;
      return { items, next: end < snapshot.versions.length ? { v: 1, f: query.filter, t: query.top, o: end, s: snapshot.id } : undefined };
    }
    const all = this.evaluate(state, query, withUnknown);
    const items = all.slice(offset, offset + query.top);
    const end = offset + items.length;
    return { items, next: end < all.length ? { v: 1, f: query.filter, t: query.top, o: end } : undefined };
  }

  /** Every version the filter matches now, in the tenant's order for this request. */
  private evaluate(state: TenantState, query: ParsedQuery, withUnknown: boolean): StoredAlert[] {
    const { start, end } = boundedRange(state.sorted, query.bounds);
    let window = state.sorted.slice(start, end);
    if (state.hasDelayedVersions) {
      const now = this.now();
      window = window.filter((s) => isServedAt(s, now));
    }
    if (!withUnknown && this.options.unknownEnumMembers !== "mask") window = window.filter((s) => !s.evolvable);
    if (state.order === "newest" || (state.order === "flipping" && query.token === undefined)) window.reverse();
    else if (state.order === "shuffled") {
      const seed = (state.seed ^ Math.imul(state.requestCount, 0x9e3779b1)) >>> 0;
      const keys = new Map(window.map((s) => [s, hash32(`${s.id}\n${s.key}`, seed)]));
      window.sort((a, b) => (keys.get(a) ?? 0) - (keys.get(b) ?? 0) || compareStored(a, b));
    }
    return window;
  }

  private nextLinkFor(token: SkipToken): string {
    const query = `$filter=${encodeURIComponent(token.f)}&$top=${token.t}&$skiptoken=${encodeSkipToken(token)}`;
    if (this.nextLinkMode === "foreign") return `${FOREIGN_NEXT_LINK_ORIGIN}${GRAPH_ALERTS_ROUTE}?${query}`;
    if (this.nextLinkMode === "otherPath") return `${this.url}/v1.0/users?${query}`;
    return `${this.url}${GRAPH_ALERTS_ROUTE}?${query}`;
  }

  /** Seconds the tenant must wait under its quota, or 0 when admitted (it then holds a slot). */
  private admit(state: TenantState): number {
    return admitUnderQuota(state, this.now());
  }

  private claimFault(state: TenantState, followedLink: boolean): GraphError | undefined {
    if (state.throttle !== null) {
      const { retryAfterSeconds, status } = state.throttle;
      if (--state.throttle.times <= 0) state.throttle = null;
      return status === 429 ? tooManyRequests(retryAfterSeconds) : new GraphError(status, "serviceNotAvailable", "The service is temporarily unavailable.", { "Retry-After": String(retryAfterSeconds) });
    }
    const { failure } = state;
    if (failure !== null && (!failure.onlyFollowedLinks || followedLink)) {
      if (--failure.times <= 0) state.failure = null;
      const headers: Record<string, string> = failure.retryAfterSeconds === undefined ? {} : { "Retry-After": String(failure.retryAfterSeconds) };
      return new GraphError(failure.status, failure.status >= 500 ? "generalException" : "BadRequest", `Injected failure with status ${failure.status}.`, headers);
    }
    return undefined;
  }

  // ---- internals: store ---------------------------------------------------

  private tenant(tenantId: string): TenantState {
    let state = this.tenants.get(tenantId);
    if (state === undefined) {
      state = {
        sorted: [],
        byId: new Map(),
        hasDelayedVersions: false,
        seed: hash32(tenantId, 0),
        order: "newest",
        paging: "offset",
        snapshots: new Map(),
        blocked: false,
        userDenied: false,
        throttle: null,
        failure: null,
        hangs: 0,
        corruptPages: 0,
        poisoned: new Map(),
        quota: null,
        admitted: [],
        latencyMs: undefined,
        requests: [],
        served: new Map(),
        pageRequests: 0,
        afterPage: null,
        stampMs: Number.NEGATIVE_INFINITY,
        stampSub: 0,
        requestCount: 0,
      };
      this.tenants.set(tenantId, state);
    }
    return state;
  }

  /**
   * Makes `fresh` the newest version of its alert. A version visible at once retires the older
   * ones; a delayed one keeps the previous version served, linked, until it becomes visible.
   */
  private store(state: TenantState, fresh: StoredAlert): void {
    const previous = state.byId.get(fresh.id);
    state.byId.set(fresh.id, fresh);
    if (fresh.visibleAt === Number.NEGATIVE_INFINITY) {
      for (let v = previous; v !== undefined; v = v.supersedes) removeSorted(state, v);
    } else {
      state.hasDelayedVersions = true;
      if (previous !== undefined) {
        previous.supersededBy = fresh;
        fresh.supersedes = previous;
      }
    }
    const at = firstIndex(state.sorted, (item) => compareStored(item, fresh) > 0);
    state.sorted.splice(at, 0, fresh);
  }

  /** The fake's now as a Graph timestamp, strictly later than the tenant's previous stamp. */
  private nextStamp(state: TenantState): string {
    const now = Math.floor(this.now());
    if (now > state.stampMs) {
      state.stampMs = now;
      state.stampSub = 1;
    } else if (++state.stampSub > 9999) {
      state.stampMs++;
      state.stampSub = 1;
    }
    return toGraphTimestamp(state.stampMs, String(state.stampSub).padStart(4, "0"));
  }

  private streamTick(tenantId: string): void {
    const stream = this.streams.get(tenantId);
    if (stream === undefined) return;
    runStreamTick(
      stream,
      { update: () => this.streamUpdate(tenantId, stream), create: () => this.streamNew(tenantId, stream) },
      (message) => {
        process.stderr.write(`[FakeGraph] alert stream for ${tenantId} stopped: ${message}\n`);
        this.streamAlerts(tenantId, null);
      },
    );
  }

  private streamNew(tenantId: string, stream: AlertStream): void {
    const state = this.tenant(tenantId);
    const stamp = this.nextStamp(state);
    const serviceSource = stream.serviceSources[stream.created % stream.serviceSources.length] ?? "microsoftDefenderForEndpoint";
    let id: string;
    do id = `da${Date.parse(stamp)}${randomInt(1_000_000)}_${randomInt(2_147_483_647)}`;
    while (state.byId.has(id));
    const alert = makeGraphAlert({
      id,
      lastUpdateDateTime: stamp,
      createdDateTime: stamp,
      tenantId,
      serviceSource,
      status: "new",
      assignedTo: null,
      classification: null,
      determination: null,
      resolvedDateTime: null,
      comments: [],
    });
    this.store(state, toStored(alert, Number.NEGATIVE_INFINITY));
    stream.open.push(id);
    stream.created++;
  }

  private streamUpdate(tenantId: string, stream: AlertStream): void {
    const index = randomInt(stream.open.length);
    const id = stream.open[index] ?? "";
    const current = this.tenant(tenantId).byId.get(id);
    const alert = current === undefined ? undefined : build(current);
    if (alert === undefined || alert.status === "resolved") {
      stream.open.splice(index, 1);
      this.streamNew(tenantId, stream);
      return;
    }
    if (alert.status === "new") {
      this.updateAlert(tenantId, id, { status: "inProgress", assignedTo: "secop@contoso.com" });
    } else {
      const stamp = this.nextStamp(this.tenant(tenantId));
      this.updateAlert(tenantId, id, { status: "resolved", classification: "truePositive", determination: "malware", resolvedDateTime: stamp, lastUpdateDateTime: stamp });
      stream.open.splice(index, 1);
    }
    stream.updated++;
  }

  private delay(ms: number): Promise<void> {
    return trackedDelay(this.pendingTimers, ms);
  }

  private sendError(res: ServerResponse, error: GraphError): void {
    const requestId = randomUUID();
    const body = JSON.stringify({
      error: {
        code: error.code,
        message: error.message,
        innerError: { date: new Date(this.now()).toISOString().replace(/\.\d+Z$/, ""), "request-id": requestId, "client-request-id": requestId },
      },
    });
    const headers: Record<string, string> = { "request-id": requestId, ...error.headers };
    if (error.status === 401) {
      headers["WWW-Authenticate"] = 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"';
    }
    this.write(res, error.status, body, headers);
  }

  private write(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    if (res.destroyed || res.writableEnded) return;
    const bytes = Buffer.from(body, "utf8");
    res.writeHead(status, {
      "Content-Type": "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
      "Content-Length": bytes.length,
      // Setting Date ourselves stops Node adding its own from the real clock.
      Date: new Date(this.now()).toUTCString(),
      ...headers,
    });
    res.end(bytes);
  }

  // ---- cross-process control (benchmark, sandbox) -------------------------

  private handleControl(req: FakeRequest, res: ServerResponse): void {
    const route = `${req.method} ${req.url.pathname}`;
    const bad = (message: string): void => sendJson(res, 400, { error: { code: "BadRequest", message } });
    if (route === "GET /_fake/stats") return sendJson(res, 200, this.stats);
    if (route === "GET /_fake/served") {
      const tenantId = req.url.searchParams.get("tenantId");
      if (!tenantId) return bad("tenantId is required.");
      return sendJson(res, 200, { served: Object.fromEntries(this.served(tenantId)), pageRequests: this.pageRequests(tenantId) });
    }
    if (route === "POST /_fake/reset-stats") {
      this.resetStats();
      return sendJson(res, 200, {});
    }
    const o = parseJsonObject(req.body);
    if (!isRecord(o)) return bad("Body must be a JSON object.");
    if (route === "POST /_fake/clock-offset") {
      if (typeof o.ms !== "number" || !Number.isFinite(o.ms)) return bad("Expected {ms}.");
      this.setClockOffset(o.ms);
      return sendJson(res, 200, { now: this.now() });
    }
    const tenantId = o.tenantId;
    if (typeof tenantId !== "string" || tenantId === "") return bad("tenantId is required.");
    switch (route) {
      case "POST /_fake/seed": {
        if (typeof o.count !== "number" || typeof o.start !== "string" || typeof o.spacingMs !== "number" || Number.isNaN(Date.parse(o.start))) {
          return bad("Expected {tenantId, count, start, spacingMs}.");
        }
        const total = this.seed({ tenantId, count: o.count, start: o.start, spacingMs: o.spacingMs });
        return sendJson(res, 200, { tenantId, added: o.count, total });
      }
      case "POST /_fake/throttle":
        if (typeof o.times !== "number") return bad("times is required.");
        this.throttle(tenantId, { times: o.times, retryAfterSeconds: Number(o.retryAfterSeconds ?? 1), status: o.status === 503 ? 503 : 429 });
        return sendJson(res, 200, {});
      case "POST /_fake/fail":
        if (typeof o.times !== "number") return bad("times is required.");
        this.fail(tenantId, { times: o.times, status: Number(o.status ?? 500), onlyFollowedLinks: o.onlyFollowedLinks === true });
        return sendJson(res, 200, {});
      case "POST /_fake/quota":
        if (o.perMinute === null) this.enforceQuota(tenantId, null);
        else if (typeof o.perMinute === "number") this.enforceQuota(tenantId, typeof o.perHour === "number" ? { perMinute: o.perMinute, perHour: o.perHour } : { perMinute: o.perMinute });
        else return bad("Expected {tenantId, perMinute, perHour?}.");
        return sendJson(res, 200, {});
      case "POST /_fake/stream": {
        const { perMinute, updateShare } = o;
        if (typeof perMinute !== "number" || (updateShare !== undefined && typeof updateShare !== "number")) return bad("Expected {tenantId, perMinute, updateShare?}.");
        try {
          this.streamAlerts(tenantId, updateShare === undefined ? { perMinute } : { perMinute, updateShare });
        } catch (err) {
          return bad(err instanceof Error ? err.message : String(err));
        }
        return sendJson(res, 200, { tenantId, stream: this.streamStatus(tenantId) });
      }
      default:
        return sendJson(res, 404, { error: { code: "NotFound", message: `Unknown control route: ${route}` } });
    }
  }
}

// ---- helpers ----------------------------------------------------------------

function emptyStats(): FakeGraphStats {
  return { requests: 0, byTenant: {}, byStatus: {}, pages: 0, servedAlerts: 0, throttled: 0 };
}

function headerOf(req: FakeRequest, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

/** Whether a Prefer header (comma-separated preferences, each possibly with parameters) holds `preference`. */
function preferHas(header: string | undefined, preference: string): boolean {
  if (header === undefined) return false;
  return header.split(",").some((part) => (part.split(";")[0] ?? "").trim().toLowerCase() === preference);
}

function invalidToken(message: string): GraphError {
  return new GraphError(401, "InvalidAuthenticationToken", message);
}

function tooManyRequests(retryAfterSeconds: number): GraphError {
  return new GraphError(429, "TooManyRequests", "Too many requests.", { "Retry-After": String(retryAfterSeconds) });
}

function timeKey(value: string, id: string): string {
  const key = mdeTimestampKey(value);
  if (key === null) throw new Error(`FakeGraph: alert ${id} has an unparseable lastUpdateDateTime ${value}`);
  return key;
}

function isEvolvable(serviceSource: string, detectionSource: string): boolean {
  return EVOLVABLE_SERVICE_SOURCES.has(serviceSource) || EVOLVABLE_DETECTION_SOURCES.has(detectionSource);
}

function toStored(alert: GraphAlert, visibleAt: number): StoredAlert {
  if (Number.isNaN(visibleAt)) throw new Error(`FakeGraph: alert ${alert.id} has a NaN visibleAt`);
  return {
    key: timeKey(alert.lastUpdateDateTime, alert.id),
    id: alert.id,
    lastUpdateDateTime: alert.lastUpdateDateTime,
    alert: structuredClone(alert),
    recipe: undefined,
    evolvable: isEvolvable(alert.serviceSource, alert.detectionSource),
    visibleAt,
  };
}

/** A generated alert kept as its recipe: makeGraphAlert rebuilds the same alert from id, time, tenant and source. */
function toRecipe(alert: GraphAlert): StoredAlert {
  return {
    key: timeKey(alert.lastUpdateDateTime, alert.id),
    id: alert.id,
    lastUpdateDateTime: alert.lastUpdateDateTime,
    alert: undefined,
    recipe: { tenantId: alert.tenantId, serviceSource: alert.serviceSource },
    evolvable: isEvolvable(alert.serviceSource, alert.detectionSource),
    visibleAt: Number.NEGATIVE_INFINITY,
  };
}

function build(stored: StoredAlert): GraphAlert {
  if (stored.alert !== undefined) return stored.alert;
  const recipe = stored.recipe ?? { tenantId: "", serviceSource: "microsoftDefenderForEndpoint" as const };
  return makeGraphAlert({ id: stored.id, lastUpdateDateTime: stored.lastUpdateDateTime, tenantId: recipe.tenantId, serviceSource: recipe.serviceSource });
}

/** The alert as a client without the Prefer header sees it in "mask" mode. */
function masked(alert: GraphAlert): GraphAlert {
  return {
    ...alert,
    serviceSource: EVOLVABLE_SERVICE_SOURCES.has(alert.serviceSource) ? "unknownFutureValue" : alert.serviceSource,
    detectionSource: EVOLVABLE_DETECTION_SOURCES.has(alert.detectionSource) ? "unknownFutureValue" : alert.detectionSource,
  };
}

function removeSorted(state: TenantState, stored: StoredAlert): void {
  removeExact(state.sorted, stored);
}

/** `lastUpdateDateTime {ge|gt|le|lt} {DateTimeOffset}`, once or twice joined by `and`. */
function parseFilter(raw: string): Bound[] {
  const tokens = raw.trim().split(/\s+/);
  const conditions: string[][] = [];
  if (tokens.length === 3) conditions.push(tokens);
  else if (tokens.length === 7 && tokens[3] === "and") conditions.push(tokens.slice(0, 3), tokens.slice(4));
  else throw new GraphError(400, "BadRequest", "Invalid filter clause: the fake Graph understands only lastUpdateDateTime comparisons joined by 'and'.");
  return conditions.map(([property, op, value]) => {
    if (property !== "lastUpdateDateTime") throw new GraphError(400, "BadRequest", `Invalid filter clause: property '${String(property)}' is not supported by the fake Graph.`);
    if (op !== "ge" && op !== "gt" && op !== "le" && op !== "lt") throw new GraphError(400, "BadRequest", `Invalid filter clause: operator '${String(op)}' is not supported.`);
    const key = mdeTimestampKey(value ?? "");
    if (key === null) throw new GraphError(400, "BadRequest", `Invalid filter clause: '${String(value)}' is not a valid DateTimeOffset literal.`);
    return { op, key };
  });
}

function encodeSkipToken(token: SkipToken): string {
  return Buffer.from(JSON.stringify(token), "utf8").toString("base64url");
}

function decodeSkipToken(raw: string): SkipToken | undefined {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(raw, "base64url").toString("utf8"));
    if (!isRecord(parsed) || parsed.v !== 1 || typeof parsed.f !== "string" || typeof parsed.t !== "number" || typeof parsed.o !== "number") return undefined;
    if (!Number.isInteger(parsed.o) || parsed.o < 0 || (parsed.s !== undefined && typeof parsed.s !== "string")) return undefined;
    return { v: 1, f: parsed.f, t: parsed.t, o: parsed.o, ...(typeof parsed.s === "string" ? { s: parsed.s } : {}) };
  } catch {
    return undefined;
  }
}

/** The page as JSON text, built by hand so a poisoned alert's raw text lands in it verbatim; nextLink before value, as Graph orders them. */
function renderPage(items: readonly string[], nextLink: string | undefined): string {
  const link = nextLink === undefined ? "" : `,"@odata.nextLink":${JSON.stringify(nextLink)}`;
  return `{"@odata.context":${JSON.stringify(GRAPH_ODATA_CONTEXT)}${link},"value":[${items.join(",")}]}`;
}
