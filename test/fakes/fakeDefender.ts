import { randomInt, randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
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
  removeAllVersions,
  removeExact,
  resetBookkeeping,
  restartStream,
  runStreamTick,
  setQuota,
  streamStatusOf,
  trackedDelay,
  type Bound,
  type Quota,
  type StreamPace,
} from "./alertApiFaults";
import { generateAlerts, makeAlert, toMdeTimestamp, type MdeAlert, type MdeEvidence } from "./alerts";

/**
 * A stand-in for the Defender for Endpoint alerts API (`GET /api/alerts`),
 * served over HTTPS so the app's real HTTP client, TLS trust and paging code
 * are exercised.
 *
 * Deliberate differences from the real service, which a client must not rely on:
 * - By default results come back sorted by (lastUpdateTime, id). The real API
 *   promises no order; the only thing a client may assume is that $skip paging
 *   is stable while no alert inside the filtered window changes. setOrder(…,
 *   "shuffled") serves a stable order unrelated to time, to prove exactly that.
 * - Only `lastUpdateTime` filters (ge/gt/le/lt, one or two joined by `and`)
 *   are understood; anything else the real API accepts is a 400 here, so an
 *   unexpected query shape fails loudly in tests.
 * - Without `$top` a page holds up to 10,000 alerts (the documented maximum).
 *
 * The fake has its own clock (option `clock` plus setClockOffset): it drives the
 * HTTP Date header, ingestion delay (addAlerts' visibleAt) and the quota window.
 * Access-token expiry is still judged by the real clock, so skewing the fake's
 * clock does not also expire the tokens the fake Entra issued.
 */

export const DEFENDER_AUDIENCES: readonly string[] = [
  "https://api.securitycenter.microsoft.com",
  "https://securitycenter.onmicrosoft.com/windowsatpservice",
];
export const ODATA_CONTEXT = "https://api.security.microsoft.com/api/$metadata#Alerts";
export const MAX_PAGE_SIZE = 10_000;
/** Origin of the nextLink served in "foreign" mode; a client must refuse to send its token there. */
export const FOREIGN_NEXT_LINK_ORIGIN = "https://attacker.example.test";
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
  /**
   * Keep `served()` (every version put in an answer). On by default; the benchmark turns it off,
   * because a map of 100,000 versions made the fake's garbage collection the bench's bottleneck.
   */
  recordServed?: boolean;
  /** The fake's time source in epoch ms (default Date.now); setClockOffset() is added on top. */
  clock?: () => number;
}

export interface RecordedRequest {
  /** The fake's clock (now()) when the response was decided. */
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

/** When an added alert (version) becomes visible to queries, in the fake's clock; a function decides per alert. */
export type VisibleAt = number | ((alert: MdeAlert) => number);

export interface AddAlertsOptions {
  /** Default: visible immediately. Until then queries do not match it and any older version of it is still served. */
  visibleAt?: VisibleAt;
}

export interface UpdateAlertOptions {
  /** Default: the updated version is visible immediately. */
  visibleAt?: number;
}

/**
 * "sorted": (lastUpdateTime, id). "shuffled": a stable pseudo-random order that has nothing to do with time.
 * "unstable": a new pseudo-random order for every request, as the service promises no order at all,
 * so `$skip` paging over it repeats and misses alerts.
 */
export type AlertOrder = "sorted" | "shuffled" | "unstable";

/**
 * false: no nextLink. true: a full page links to the next $skip.
 * "loop": a full page links to itself plus `$skiptoken=B`, and that one links back (A→B→A forever).
 * "foreign": a full page links to FOREIGN_NEXT_LINK_ORIGIN.
 * "unparseable": a full page's nextLink is a string that is no URL (a proxy's or a bug's).
 */
export type NextLinkMode = boolean | "loop" | "foreign" | "unparseable";

export interface PageInfo {
  /** 0-based count of 200 pages served to the tenant (reset by resetStats). */
  index: number;
  query: URLSearchParams;
  /** How many alerts the page holds. */
  served: number;
}

export type AfterPageHook = (info: PageInfo) => void;

export type { Quota };

export interface AlertStreamOptions {
  /** Arrivals per minute (new alerts plus updates); 0 stops the stream. */
  perMinute: number;
  /** Share of arrivals that update an alert the stream created earlier instead of adding one (0–1, default 0.1). */
  updateShare?: number;
}

export interface AlertStreamStatus {
  perMinute: number;
  updateShare: number;
  /** New alerts the stream added since it was first set for the tenant. */
  created: number;
  /** Status changes (New→InProgress, InProgress→Resolved) it made. */
  updated: number;
}

interface AlertStream extends AlertStreamStatus, StreamPace {
  /** Last lastUpdateTime handed out, as whole ms plus a sub-ms counter, so versions never tie. */
  stampMs: number;
  stampSub: number;
}


interface StoredAlert {
  /** lastUpdateTime normalised to a fixed width so string order equals time order. */
  key: string;
  id: string;
  summary: Omit<MdeAlert, "evidence">;
  evidence: MdeEvidence[];
  /** Fake-clock ms from which queries match this version; -Infinity for "always". */
  visibleAt: number;

  /** The next version of the same alert, while this one may still be served until that one is visible. */
  supersededBy?: StoredAlert;
  /** The previous version this one replaced but did not yet retire. */
  supersedes?: StoredAlert;
  /** Sort key of the "shuffled" order: a hash of (id, lastUpdateTime, tenant seed). */
  shuffleKey: number;
}

interface TenantState {
  /** Every stored version, including ones not yet visible or about to be retired, in (lastUpdateTime, id) order. */
  sorted: StoredAlert[];
  /** The newest version of each alert. */
  byId: Map<string, StoredAlert>;
  /** Set once any version was added with a delayed visibleAt; until then pages skip the per-alert visibility check. */
  hasDelayedVersions: boolean;
  seed: number;
  order: AlertOrder;
  throttle: { times: number; retryAfterSeconds: number } | null;
  failure: { status: number; times: number } | null;
  hangs: number;
  shortPages: { times: number; size: number; linked?: boolean } | null;
  corruptPages: number;
  /** Every page holding this alert is cut short: a page that never parses, however often it is read. */
  corruptHolding: string | null;
  /** Alert id → raw JSON text served in its place. */
  poisoned: Map<string, string>;
  quota: Quota | null;
  /** Fake-clock ms of the requests the quota admitted, oldest first. */
  admitted: number[];
  latencyMs: number | undefined;
  requests: RecordedRequest[];
  served: Map<string, number>;
  pageRequests: number;
  afterPage: AfterPageHook | null;
}

// The zone is optional so a test can serve the zone-less timestamps some services emit; the
// fake reads them as UTC, as the real service means them.
const TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?Z?$/;

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

function compareShuffled(a: StoredAlert, b: StoredAlert): number {
  return a.shuffleKey - b.shuffleKey || compareStored(a, b);
}

/** The "unstable" order's sort key: the alert's shuffle key mixed with a per-request salt. */
function unstableKey(shuffleKey: number, salt: number): number {
  let h = Math.imul(shuffleKey ^ Math.imul(salt, 0x9e3779b1), 0x85ebca6b);
  h ^= h >>> 13;
  return Math.imul(h, 0xc2b2ae35) >>> 0;
}

function toStored(alert: MdeAlert, visibleAt: number, seed: number): StoredAlert {
  const key = mdeTimestampKey(alert.lastUpdateTime);
  if (key === null) throw new Error(`FakeDefender: alert ${alert.id} has an unparseable lastUpdateTime ${alert.lastUpdateTime}`);
  if (Number.isNaN(visibleAt)) throw new Error(`FakeDefender: alert ${alert.id} has a NaN visibleAt`);
  const { evidence, ...summary } = alert;
  return { key, id: alert.id, summary, evidence, visibleAt, shuffleKey: hash32(`${alert.id}\n${key}`, seed) };
}

function toAlert(stored: StoredAlert): MdeAlert {
  return { ...stored.summary, evidence: stored.evidence };
}

function servedKey(stored: StoredAlert): string {
  return `${stored.id}@${stored.summary.lastUpdateTime}`;
}

/** Every stored version of one alert, newest first. */
function versionChain(newest: StoredAlert): StoredAlert[] {
  const chain: StoredAlert[] = [];
  for (let v: StoredAlert | undefined = newest; v !== undefined; v = v.supersedes) chain.push(v);
  return chain;
}

function resolveVisibleAt(visibleAt: VisibleAt | undefined, alert: MdeAlert): number {
  if (visibleAt === undefined) return Number.NEGATIVE_INFINITY;
  return typeof visibleAt === "function" ? visibleAt(alert) : visibleAt;
}

/** The page as JSON text, built by hand so a poisoned alert's raw text lands in it verbatim. */
function renderPage(items: readonly string[], nextLink: string | undefined): string {
  const head = `{"@odata.context":${JSON.stringify(ODATA_CONTEXT)},"value":[${items.join(",")}]`;
  return nextLink === undefined ? `${head}}` : `${head},"@odata.nextLink":${JSON.stringify(nextLink)}}`;
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
const SKIP_TOKEN = "$skiptoken";

interface ParsedQuery {
  bounds: Bound[];
  top: number | undefined;
  skip: number;
  expandEvidence: boolean;
}

/** `allowSkipToken` only in "loop" nextLink mode, where the fake itself hands out $skiptoken links. */
function parseQuery(query: URLSearchParams, allowSkipToken: boolean): ParsedQuery {
  const seen = new Set<string>();
  for (const name of query.keys()) {
    const known = KNOWN_OPTIONS.has(name) || (allowSkipToken && name === SKIP_TOKEN);
    if (name.startsWith("$") && !known) throw new BadRequest(`The query parameter '${name}' is not supported.`);
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

/** Faults that change a 200 page rather than replace it, claimed when the request arrives. */
interface PageFaults {
  shortSize: number | undefined;
  shortLinked?: boolean;
  corrupt: boolean;
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

const RATE_LIMIT_MESSAGE = "Rate limit is exceeded. Try again later.";

export class FakeDefender {
  url = "";
  private readonly server: Server;
  private readonly tenants = new Map<string, TenantState>();
  private readonly pendingTimers = new Set<NodeJS.Timeout>();
  private readonly clock: () => number;
  private clockOffsetMs = 0;
  /** Whether answers carry a Date header (an origin without a clock, or a proxy, may send none). */
  private sendDate = true;
  private defaultLatencyMs: number;
  private nextLinkMode: NextLinkMode = false;
  private counters: FakeDefenderStats = { requests: 0, byTenant: {}, byStatus: {} };
  private readonly streams = new Map<string, AlertStream>();

  constructor(private readonly options: FakeDefenderOptions) {
    this.defaultLatencyMs = options.latencyMs ?? 0;
    this.clock = options.clock ?? Date.now;
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
    for (const stream of this.streams.values()) clearInterval(stream.timer);
    this.streams.clear();
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Hung and keep-alive sockets would otherwise keep close() waiting forever.
    this.server.closeAllConnections();
    await closed;
  }

  // ---- clock --------------------------------------------------------------

  /** The fake's current time in epoch ms: clock() + the offset. */
  now(): number {
    return this.clock() + this.clockOffsetMs;
  }

  /** Skews the fake's clock (Date header, ingestion delay, quota) against the clock option. */
  setClockOffset(ms: number): void {
    if (!Number.isFinite(ms)) throw new Error(`FakeDefender: clock offset must be finite, got ${ms}`);
    this.clockOffsetMs = ms;
  }

  /** Answers without a Date header from now on (false), or with the fake's clock again (true). */
  setSendDate(send: boolean): void {
    this.sendDate = send;
  }

  // ---- test control -------------------------------------------------------

  /**
   * Adds alerts; an alert whose id already exists replaces the old one. With a
   * `visibleAt` in the future the new version is ingested late: queries do not
   * match it before then, and keep serving the version it replaces until then.
   */
  addAlerts(tenantId: string, alerts: readonly MdeAlert[], options: AddAlertsOptions = {}): void {
    const state = this.tenant(tenantId);
    // Entries of this call not yet in `sorted`, so a repeated id within one call replaces cleanly.
    const batch = new Set<StoredAlert>();
    for (const alert of alerts) {
      const fresh = toStored(alert, resolveVisibleAt(options.visibleAt, alert), state.seed);
      for (const retired of this.supersede(state, fresh)) {
        if (!batch.delete(retired)) this.removeSorted(state, retired);
      }
      batch.add(fresh);
    }
    // Appending and sorting once is cheaper for bulk seeding; splicing keeps
    // small, frequent additions from re-sorting a 100k backlog.
    if (batch.size > 64) {
      state.sorted = state.sorted.concat([...batch]).sort(compareStored);
    } else {
      for (const stored of batch) this.insertSorted(state, stored);
    }
  }

  /** Changes an alert in place, as the service does when an analyst or automation touches it. */
  updateAlert(tenantId: string, id: string, patch: Partial<Omit<MdeAlert, "id">>, options: UpdateAlertOptions = {}): MdeAlert {
    const state = this.tenant(tenantId);
    const old = state.byId.get(id);
    if (old === undefined) throw new Error(`FakeDefender: tenant ${tenantId} has no alert ${id}`);
    const updated = toStored({ ...toAlert(old), ...patch, id }, options.visibleAt ?? Number.NEGATIVE_INFINITY, state.seed);
    for (const retired of this.supersede(state, updated)) this.removeSorted(state, retired);
    this.insertSorted(state, updated);
    return toAlert(updated);
  }

  /** Deletes every version of an alert; returns false if the tenant had no such alert. */
  removeAlert(tenantId: string, id: string): boolean {
    return removeAllVersions(this.tenant(tenantId), id);
  }

  removeAll(tenantId: string): void {
    clearVersions(this.tenant(tenantId));
  }

  /** The newest version of each of the tenant's alerts (visible yet or not), in (lastUpdateTime, id) order. */
  alerts(tenantId: string): MdeAlert[] {
    return newestVersions(this.tenant(tenantId)).map(toAlert);
  }

  setOrder(tenantId: string, mode: AlertOrder): void {
    this.tenant(tenantId).order = mode;
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

  /**
   * The next `times` pages hold at most `size` alerts, even when more match: with no nextLink, or
   * (`linked`) with one to the next `$skip` whenever more match, as a service that caps its pages
   * below `$top` (server-driven paging) answers.
   */
  shortPages(tenantId: string, opts: { times: number; size: number; linked?: boolean }): void {
    if (!Number.isInteger(opts.size) || opts.size < 0) throw new Error(`FakeDefender: shortPages size must be a non-negative integer`);
    this.tenant(tenantId).shortPages = opts.times > 0 ? { ...opts } : null;
  }

  /** The next `times` pages are 200s whose body is cut in half, so not valid JSON. */
  corruptPages(tenantId: string, opts: { times: number }): void {
    this.tenant(tenantId).corruptPages = Math.max(0, opts.times);
  }

  /** Every page that holds alert `id` is a 200 cut in half, on every read; null clears. */
  corruptPagesHolding(tenantId: string, id: string | null): void {
    this.tenant(tenantId).corruptHolding = id;
  }

  /** Serves `raw` verbatim in place of alert `id` whenever it matches (filtering still uses the stored alert); null clears. */
  poisonAlert(tenantId: string, id: string, raw: string | null): void {
    const { poisoned } = this.tenant(tenantId);
    if (raw === null) poisoned.delete(id);
    else poisoned.set(id, raw);
  }

  /** Answers 429 with Retry-After to requests beyond a sliding per-minute (and optional per-hour) limit; null lifts it. */
  enforceQuota(tenantId: string, quota: Quota | null): void {
    setQuota(this.tenant(tenantId), quota, "FakeDefender");
  }

  /** Runs synchronously after each 200 page for the tenant is computed and before it is sent; null removes it. */
  afterPage(tenantId: string, hook: AfterPageHook | null): void {
    this.tenant(tenantId).afterPage = hook;
  }

  setLatency(ms: number, tenantId?: string): void {
    if (tenantId === undefined) this.defaultLatencyMs = ms;
    else this.tenant(tenantId).latencyMs = ms;
  }

  /** Whether and how a full page carries "@odata.nextLink" (true: to the next $skip, even if that page is empty). */
  setNextLinkPaging(mode: NextLinkMode): void {
    this.nextLinkMode = mode;
  }

  // ---- introspection ------------------------------------------------------

  requests(tenantId: string): RecordedRequest[] {
    return [...(this.tenants.get(tenantId)?.requests ?? [])];
  }

  /**
   * How often each alert version (`${id}@${lastUpdateTime}`) was in a 200 body.
   * Poisoned alerts and corrupted pages do not count: the client never got those versions.
   */
  served(tenantId: string): Map<string, number> {
    return new Map(this.tenants.get(tenantId)?.served);
  }

  /** 200 responses to the alerts route for the tenant, corrupted ones included. */
  pageRequests(tenantId: string): number {
    return this.tenants.get(tenantId)?.pageRequests ?? 0;
  }

  get stats(): FakeDefenderStats {
    return { requests: this.counters.requests, byTenant: { ...this.counters.byTenant }, byStatus: { ...this.counters.byStatus } };
  }

  /** Clears counters, recorded requests, served() and pageRequests() (so afterPage's index restarts at 0). */
  resetStats(): void {
    this.counters = { requests: 0, byTenant: {}, byStatus: {} };
    resetBookkeeping(this.tenants.values());
  }

  /**
   * Keeps alerts arriving for the tenant at about `perMinute` until called with null (or
   * perMinute 0) or stop(): new alerts (status New, lastUpdateTime = now()) with the varied
   * titles, severities, categories and evidence of makeAlert, and, for `updateShare` of the
   * arrivals, a status change New→InProgress→Resolved of an alert the stream added earlier,
   * with a new lastUpdateTime. The first arrival comes on the first tick; the rate follows real
   * time (the timer's), the timestamps the fake's clock. Calling again changes the rate and keeps
   * the counters and the alerts still open for updates.
   */
  streamAlerts(tenantId: string, options: AlertStreamOptions | null): void {
    restartStream(this.streams, tenantId, options, "FakeDefender", () => this.streamTick(tenantId), (previous) => ({
      stampMs: previous?.stampMs ?? Number.NEGATIVE_INFINITY,
      stampSub: previous?.stampSub ?? 0,
    }));
  }

  /** The tenant's stream settings and counters, or null when none is running. */
  streamStatus(tenantId: string): AlertStreamStatus | null {
    return streamStatusOf(this.streams.get(tenantId));
  }

  seed(request: SeedRequest): number {
    const start = new Date(request.start);
    this.addAlerts(request.tenantId, generateAlerts(request.tenantId, request.count, { start, spacingMs: request.spacingMs }));
    return this.tenant(request.tenantId).byId.size;
  }

  // ---- internals: alert stream --------------------------------------------

  private streamTick(tenantId: string): void {
    const stream = this.streams.get(tenantId);
    if (stream === undefined) return;
    runStreamTick(
      stream,
      { update: () => this.streamUpdate(tenantId, stream), create: () => this.streamNew(tenantId, stream) },
      (message) => {
        process.stderr.write(`[FakeDefender] alert stream for ${tenantId} stopped: ${message}\n`);
        this.streamAlerts(tenantId, null);
      },
    );
  }

  private streamNew(tenantId: string, stream: AlertStream): void {
    const stamp = this.nextStreamStamp(stream);
    const byId = this.tenant(tenantId).byId;
    let id: string;
    do {
      // Shaped like real ids ("da637472900382838869_1364969609"): .NET ticks, then a number.
      const ticks = (BigInt(stamp.ms) + 62_135_596_800_000n) * 10_000n + BigInt(stamp.sub);
      id = `da${ticks.toString()}_${randomInt(2_147_483_647)}`;
    } while (byId.has(id));
    // A fresh alert is New and untouched, whatever status makeAlert would derive from its id.
    const alert = makeAlert({
      id,
      lastUpdateTime: stamp.text,
      aadTenantId: tenantId,
      status: "New",
      assignedTo: null,
      classification: null,
      determination: null,
      resolvedTime: null,
      investigationState: "Queued",
      comments: [],
    });
    this.addAlerts(tenantId, [alert]);
    stream.open.push(id);
    stream.created++;
  }

  /** Moves a random open streamed alert one step along New→InProgress→Resolved. */
  private streamUpdate(tenantId: string, stream: AlertStream): void {
    const index = randomInt(stream.open.length);
    const id = stream.open[index] ?? "";
    const current = this.tenant(tenantId).byId.get(id);
    if (current === undefined || current.summary.status === "Resolved") {
      // Removed or resolved by the test meanwhile: forget it and add a new alert instead.
      stream.open.splice(index, 1);
      this.streamNew(tenantId, stream);
      return;
    }
    const stamp = this.nextStreamStamp(stream);
    if (current.summary.status === "New") {
      this.updateAlert(tenantId, id, {
        status: "InProgress",
        assignedTo: "secop@contoso.com",
        investigationState: "Running",
        lastUpdateTime: stamp.text,
      });
    } else {
      this.updateAlert(tenantId, id, {
        status: "Resolved",
        classification: "TruePositive",
        determination: current.summary.threatFamilyName === null ? "SecurityTesting" : "Malware",
        investigationState: "SuccessfullyRemediated",
        resolvedTime: stamp.text,
        lastUpdateTime: stamp.text,
      });
      stream.open.splice(index, 1);
    }
    stream.updated++;
  }

  /**
   * now() as an MDE timestamp, strictly later than the stream's previous one: arrivals within one
   * millisecond (or under a frozen test clock) differ in the sub-millisecond digits.
   */
  private nextStreamStamp(stream: AlertStream): { ms: number; sub: number; text: string } {
    const now = Math.floor(this.now());
    if (now > stream.stampMs) {
      stream.stampMs = now;
      stream.stampSub = 0;
    } else if (++stream.stampSub > 9999) {
      stream.stampMs++;
      stream.stampSub = 0;
    }
    return {
      ms: stream.stampMs,
      sub: stream.stampSub,
      text: toMdeTimestamp(stream.stampMs, String(stream.stampSub).padStart(4, "0")),
    };
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
        order: "sorted",
        throttle: null,
        failure: null,
        hangs: 0,
        shortPages: null,
        corruptPages: 0,
        corruptHolding: null,
        poisoned: new Map(),
        quota: null,
        admitted: [],
        latencyMs: undefined,
        requests: [],
        served: new Map(),
        pageRequests: 0,
        afterPage: null,
      };
      this.tenants.set(tenantId, state);
    }
    return state;
  }

  /**
   * Makes `fresh` the newest version of its alert and returns the versions that
   * can never be served again (the caller takes them out of `sorted`). A delayed
   * version keeps the previous one around, linked, until it becomes visible.
   */
  private supersede(state: TenantState, fresh: StoredAlert): StoredAlert[] {
    const previous = state.byId.get(fresh.id);
    state.byId.set(fresh.id, fresh);
    if (fresh.visibleAt === Number.NEGATIVE_INFINITY) return previous === undefined ? [] : versionChain(previous);
    state.hasDelayedVersions = true;
    if (previous !== undefined) {
      previous.supersededBy = fresh;
      fresh.supersedes = previous;
    }
    return [];
  }

  private insertSorted(state: TenantState, stored: StoredAlert): void {
    const at = firstIndex(state.sorted, (item) => compareStored(item, stored) > 0);
    state.sorted.splice(at, 0, stored);
  }

  /** Removes this exact version: two versions of one alert may share (lastUpdateTime, id). */
  private removeSorted(state: TenantState, stored: StoredAlert): void {
    removeExact(state.sorted, stored);
  }

  /** The page of alerts a query selects, at most `limit` of them, in the tenant's serving order. */
  private selectPage(state: TenantState, query: ParsedQuery, limit: number): StoredAlert[] {
    const { start, end } = boundedRange(state.sorted, query.bounds);
    if (state.order === "sorted" && !state.hasDelayedVersions) {
      // Fast path for large backlogs: slice the page straight out of the sorted store.
      const from = Math.min(start + query.skip, end);
      return state.sorted.slice(from, Math.min(end, from + limit));
    }
    const now = this.now();
    let window = state.sorted.slice(start, end);
    if (state.hasDelayedVersions) window = window.filter((s) => isServedAt(s, now));
    if (state.order === "shuffled") window.sort(compareShuffled);
    if (state.order === "unstable") {
      const salt = this.counters.requests;
      window.sort((a, b) => unstableKey(a.shuffleKey, salt) - unstableKey(b.shuffleKey, salt) || compareStored(a, b));
    }
    return window.slice(query.skip, query.skip + limit);
  }

  // ---- internals: request handling ----------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    if (url.pathname.startsWith("/_fake/")) return this.handleControl(req, res, url);
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
    // The quota comes first: the gateway rejects before anything behind it sees the request.
    const quotaWaitSeconds = this.admit(state);
    if (quotaWaitSeconds === 0 && state.hangs > 0) {
      state.hangs--;
      this.record(state, url.searchParams, 0);
      return;
    }
    let query: ParsedQuery | BadRequest;
    try {
      query = parseQuery(url.searchParams, this.nextLinkMode === "loop");
    } catch (err) {
      if (!(err instanceof BadRequest)) throw err;
      query = err;
    }
    const fault = quotaWaitSeconds > 0 ? this.quotaFault(res, state, url, quotaWaitSeconds) : this.claimFault(res, state, url);
    const pageFaults = fault === undefined && !(query instanceof BadRequest) ? this.claimPageFaults(state) : undefined;

    const latency = state.latencyMs ?? this.defaultLatencyMs;
    if (latency > 0) await this.delay(latency);
    if (res.destroyed) return;
    if (fault !== undefined) return fault();
    if (query instanceof BadRequest) return this.finish(res, state, url.searchParams, 400, query.message);
    this.servePage(res, state, query, url, pageFaults ?? { shortSize: undefined, corrupt: false });
  }

  /**
   * Seconds the tenant must wait under its quota, or 0 when the request is
   * admitted (it then holds a slot for the length of each window).
   */
  private admit(state: TenantState): number {
    return admitUnderQuota(state, this.now());
  }

  private quotaFault(res: ServerResponse, state: TenantState, url: URL, waitSeconds: number): () => void {
    return () => this.finish(res, state, url.searchParams, 429, RATE_LIMIT_MESSAGE, { "Retry-After": String(waitSeconds) });
  }

  /** Claims an injected throttle or failure, returning how to answer once the latency has passed. */
  private claimFault(res: ServerResponse, state: TenantState, url: URL): (() => void) | undefined {
    if (state.throttle !== null && state.throttle.times > 0) {
      const { retryAfterSeconds } = state.throttle;
      if (--state.throttle.times === 0) state.throttle = null;
      return () => this.finish(res, state, url.searchParams, 429, RATE_LIMIT_MESSAGE, { "Retry-After": String(retryAfterSeconds) });
    }
    if (state.failure !== null && state.failure.times > 0) {
      const { status } = state.failure;
      if (--state.failure.times === 0) state.failure = null;
      return () => this.finish(res, state, url.searchParams, status, `Injected failure with status ${status}.`);
    }
    return undefined;
  }

  /** Claims the page-level faults; each counts down once per 200 page it applies to. */
  private claimPageFaults(state: TenantState): PageFaults {
    let shortSize: number | undefined;
    let shortLinked = false;
    if (state.shortPages !== null) {
      shortSize = state.shortPages.size;
      shortLinked = state.shortPages.linked === true;
      if (--state.shortPages.times <= 0) state.shortPages = null;
    }
    const corrupt = state.corruptPages > 0;
    if (corrupt) state.corruptPages--;
    return { shortSize, shortLinked, corrupt };
  }

  private servePage(res: ServerResponse, state: TenantState, query: ParsedQuery, url: URL, faults: PageFaults): void {
    const size = query.top ?? MAX_PAGE_SIZE;
    const shortSize = faults.shortSize;
    const page = this.selectPage(state, query, Math.min(size, shortSize ?? size));
    const full = shortSize === undefined && page.length === size;
    // A linked short page links on only when more match: one more alert beyond the cap is looked for.
    const linkedShort = shortSize !== undefined && faults.shortLinked === true && shortSize < size && this.selectPage(state, query, shortSize + 1).length > shortSize;
    const items = page.map((s) => state.poisoned.get(s.id) ?? JSON.stringify(query.expandEvidence ? toAlert(s) : s.summary));
    const link = full ? this.nextLink(url, query, size) : linkedShort ? this.nextLink(url, query, page.length) : undefined;
    let body = renderPage(items, link);
    const corrupt = faults.corrupt || (state.corruptHolding !== null && page.some((s) => s.id === state.corruptHolding));
    // Any strict prefix of a JSON object's text is invalid JSON.
    if (corrupt) body = body.slice(0, body.length >>> 1);

    // The hook runs before any bookkeeping, so a hook that throws leaves a plain 500 behind.
    state.afterPage?.({ index: state.pageRequests, query: new URLSearchParams(url.searchParams), served: page.length });
    state.pageRequests++;
    if (!corrupt && this.options.recordServed !== false) this.recordServed(state, page);
    this.record(state, url.searchParams, 200);
    this.write(res, 200, body);
  }

  private recordServed(state: TenantState, page: readonly StoredAlert[]): void {
    countServed(state, page, servedKey);
  }

  private nextLink(url: URL, query: ParsedQuery, size: number): string | undefined {
    const mode = this.nextLinkMode;
    if (mode === false) return undefined;
    if (mode === "foreign") return `${FOREIGN_NEXT_LINK_ORIGIN}/api/alerts?$skip=${query.skip + size}`;
    if (mode === "unparseable") return `api/alerts?$skip=${query.skip + size}`;
    const next = new URLSearchParams(url.searchParams);
    if (mode === "loop") {
      // A → A+$skiptoken → A → …: a client that follows links blindly never finishes.
      if (next.has(SKIP_TOKEN)) next.delete(SKIP_TOKEN);
      else next.set(SKIP_TOKEN, "B");
    } else {
      next.set("$skip", String(query.skip + size));
    }
    const search = next.toString();
    return `${this.url}${url.pathname}${search === "" ? "" : `?${search}`}`;
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
    return trackedDelay(this.pendingTimers, ms);
  }

  private record(state: TenantState | null, query: URLSearchParams, status: number): void {
    this.counters.byStatus[status] = (this.counters.byStatus[status] ?? 0) + 1;
    state?.requests.push({ at: this.now(), query, status });
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
    // Setting Date ourselves stops Node adding its own from the real clock; sendDate false sends none.
    res.sendDate = false;
    res.writeHead(status, {
      "Content-Type": "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8",
      "Content-Length": bytes.length,
      ...(this.sendDate ? { Date: new Date(this.now()).toUTCString() } : {}),
      ...headers,
    });
    res.end(bytes);
  }

  // ---- cross-process control ----------------------------------------------

  /** Cross-process control for benchmarks, which run the fake in another process. */
  private async handleControl(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const path = url.pathname;
    const route = `${String(req.method)} ${path}`;
    if (route === "GET /_fake/stats") return this.write(res, 200, JSON.stringify(this.stats));
    if (route === "GET /_fake/served") return this.controlServed(res, url);
    if (route === "POST /_fake/reset-stats") {
      this.resetStats();
      return this.write(res, 200, "{}");
    }
    if (route === "POST /_fake/stream") return this.controlStream(req, res);
    if (route === "POST /_fake/quota") return this.controlQuota(req, res);
    if (route === "POST /_fake/clock-offset") {
      const o = await readJsonObject(req);
      if (typeof o === "string") return this.sendError(res, 400, o);
      if (typeof o.ms !== "number" || !Number.isFinite(o.ms)) return this.sendError(res, 400, "Expected {ms}.");
      this.setClockOffset(o.ms);
      return this.write(res, 200, JSON.stringify({ now: this.now() }));
    }
    if (route === "POST /_fake/seed" || route === "POST /_fake/throttle" || route === "POST /_fake/fail") {
      const o = await readJsonObject(req);
      if (typeof o === "string") return this.sendError(res, 400, o);
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

  /**
   * `{tenantId, perMinute, perHour?, admitted?}` enforces the quota as enforceQuota does, counting
   * `admitted` (fake-clock ms, at most 10,000) as requests already made in its windows: a tenant
   * that has pulled at its quota for the past hour. `{tenantId, quota: null}` lifts it.
   */
  private async controlQuota(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const o = await readJsonObject(req);
    if (typeof o === "string") return this.sendError(res, 400, o);
    const { tenantId, perMinute, perHour, admitted } = o;
    if (typeof tenantId !== "string" || tenantId === "") return this.sendError(res, 400, "tenantId is required.");
    if (o.quota === null) {
      this.enforceQuota(tenantId, null);
      return this.write(res, 200, "{}");
    }
    const earlier = admitted === undefined ? [] : admitted;
    if (
      typeof perMinute !== "number" ||
      (perHour !== undefined && typeof perHour !== "number") ||
      !Array.isArray(earlier) ||
      earlier.length > 10_000 ||
      !earlier.every((t) => typeof t === "number" && Number.isFinite(t))
    ) {
      return this.sendError(res, 400, "Expected {tenantId, perMinute, perHour?, admitted?: number[] (at most 10,000)} or {tenantId, quota: null}.");
    }
    try {
      this.enforceQuota(tenantId, perHour === undefined ? { perMinute } : { perMinute, perHour });
    } catch (err) {
      return this.sendError(res, 400, err instanceof Error ? err.message : String(err));
    }
    this.tenant(tenantId).admitted = (earlier as number[]).slice().sort((a, b) => a - b);
    return this.write(res, 200, "{}");
  }

  /** `{tenantId, perMinute, updateShare?}`; perMinute 0 stops. Answers with streamStatus (null when stopped). */
  private async controlStream(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const o = await readJsonObject(req);
    if (typeof o === "string") return this.sendError(res, 400, o);
    const { tenantId, perMinute, updateShare } = o;
    if (typeof tenantId !== "string" || tenantId === "" || typeof perMinute !== "number" || (updateShare !== undefined && typeof updateShare !== "number")) {
      return this.sendError(res, 400, "Expected {tenantId, perMinute, updateShare?}.");
    }
    try {
      this.streamAlerts(tenantId, updateShare === undefined ? { perMinute } : { perMinute, updateShare });
    } catch (err) {
      return this.sendError(res, 400, err instanceof Error ? err.message : String(err));
    }
    return this.write(res, 200, JSON.stringify({ tenantId, stream: this.streamStatus(tenantId) }));
  }

  private controlServed(res: ServerResponse, url: URL): void {
    const tenantId = url.searchParams.get("tenantId");
    if (tenantId === null || tenantId === "") return this.sendError(res, 400, "tenantId is required.");
    const body = { served: Object.fromEntries(this.served(tenantId)), pageRequests: this.pageRequests(tenantId) };
    this.write(res, 200, JSON.stringify(body));
  }
}

/** The request body as a JSON object, or the message for a 400. */
async function readJsonObject(req: IncomingMessage): Promise<Record<string, unknown> | string> {
  let input: unknown;
  try {
    input = JSON.parse(await readBody(req));
  } catch {
    return "Body must be JSON.";
  }
  if (typeof input !== "object" || input === null || Array.isArray(input)) return "Body must be a JSON object.";
  return input as Record<string, unknown>;
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
