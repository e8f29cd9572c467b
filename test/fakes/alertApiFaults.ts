/**
 * Machinery the fake alert APIs (FakeDefender, FakeGraph) share: the sorted, versioned per-tenant
 * store's search helpers, the per-tenant sliding-window quota, the alert stream's pacing, and
 * the latency timers. Each fake keeps its own wire format, error shapes and paging.
 */
import { performance } from "node:perf_hooks";

export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;

/** A stored alert version: its time at a fixed width (string order is time order), id and ingestion. */
export interface KeyedVersion {
  key: string;
  id: string;
  /** Fake-clock ms from which queries match this version; -Infinity for "always". */
  visibleAt: number;
  supersededBy?: KeyedVersion;
}

export type Bound = { op: "ge" | "gt" | "le" | "lt"; key: string };

export function compareKeyed(a: { key: string; id: string }, b: { key: string; id: string }): number {
  if (a.key !== b.key) return a.key < b.key ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return 0;
}

/** First index whose element satisfies `pred`; `pred` must be monotone (false… then true…). */
export function firstIndex<T>(items: readonly T[], pred: (item: T) => boolean): number {
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

/** Removes this exact version from a (key, id)-sorted list: two versions of one alert may share (key, id). */
export function removeExact<T extends { key: string; id: string }>(sorted: T[], stored: T): void {
  for (let i = firstIndex(sorted, (item) => compareKeyed(item, stored) >= 0); i < sorted.length; i++) {
    const item = sorted[i];
    if (item === undefined || compareKeyed(item, stored) !== 0) return;
    if (item === stored) {
      sorted.splice(i, 1);
      return;
    }
  }
}

/** A tenant's versioned store: every version in (key, id) order, and the newest of each alert. */
export interface VersionStore<T extends KeyedVersion & { supersedes?: T }> {
  sorted: T[];
  byId: Map<string, T>;
  /** Set once any version was added with a delayed visibleAt. */
  hasDelayedVersions: boolean;
}

/** Deletes every version of an alert; false when the store had none. */
export function removeAllVersions<T extends KeyedVersion & { supersedes?: T }>(store: VersionStore<T>, id: string): boolean {
  const newest = store.byId.get(id);
  if (newest === undefined) return false;
  for (let v: T | undefined = newest; v !== undefined; v = v.supersedes) removeExact(store.sorted, v);
  store.byId.delete(id);
  return true;
}

export function clearVersions<T extends KeyedVersion & { supersedes?: T }>(store: VersionStore<T>): void {
  store.sorted = [];
  store.byId.clear();
  store.hasDelayedVersions = false;
}

/** The newest version of each alert (visible yet or not), in (key, id) order. */
export function newestVersions<T extends KeyedVersion & { supersedes?: T }>(store: VersionStore<T>): T[] {
  return store.sorted.filter((s) => store.byId.get(s.id) === s);
}

/** A version is served once it is visible and until some newer version of the alert is. */
export function isServedAt(stored: KeyedVersion, now: number): boolean {
  if (stored.visibleAt > now) return false;
  for (let next = stored.supersededBy; next !== undefined; next = next.supersededBy) {
    if (next.visibleAt <= now) return false;
  }
  return true;
}

/** The [start, end) range of `sorted` that the filter's bounds select (end may be below start: empty). */
export function boundedRange(sorted: readonly { key: string }[], bounds: readonly Bound[]): { start: number; end: number } {
  let start = 0;
  let end = sorted.length;
  for (const { op, key } of bounds) {
    if (op === "ge") start = Math.max(start, firstIndex(sorted, (a) => a.key >= key));
    else if (op === "gt") start = Math.max(start, firstIndex(sorted, (a) => a.key > key));
    else if (op === "le") end = Math.min(end, firstIndex(sorted, (a) => a.key > key));
    else end = Math.min(end, firstIndex(sorted, (a) => a.key >= key));
  }
  return { start, end: Math.max(start, end) };
}

/**
 * 32-bit FNV-1a followed by murmur3's finaliser: alert ids and timestamps differ
 * only in a few trailing characters, and plain FNV would leave them nearly in order.
 */
export function hash32(text: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

// ---- quota ------------------------------------------------------------------

export interface Quota {
  perMinute: number;
  perHour?: number;
}

/** The per-tenant quota state: the limits, and the fake-clock ms of the requests admitted, oldest first. */
export interface QuotaState {
  quota: Quota | null;
  admitted: number[];
}

/** Sets (or with null lifts) a tenant's quota, after checking the limits are positive integers. */
export function setQuota(state: QuotaState, quota: Quota | null, fakeName: string): void {
  const isLimit = (n: unknown): boolean => typeof n === "number" && Number.isInteger(n) && n >= 1;
  if (quota !== null && (!isLimit(quota.perMinute) || (quota.perHour !== undefined && !isLimit(quota.perHour)))) {
    throw new Error(`${fakeName}: quota limits must be positive integers`);
  }
  state.quota = quota === null ? null : { ...quota };
  state.admitted = [];
}

/**
 * Milliseconds until one more request fits in a sliding window of `windowMs`
 * holding at most `limit` requests, or 0 if it fits now.
 */
function msUntilSlot(admitted: readonly number[], now: number, windowMs: number, limit: number): number {
  const inWindow = admitted.filter((t) => t > now - windowMs);
  if (inWindow.length < limit) return 0;
  // Enough of the oldest must age out to leave limit-1; the last of those frees the slot.
  const freeing = inWindow[inWindow.length - limit] ?? now;
  return freeing + windowMs - now;
}

/**
 * Seconds the tenant must wait under its quota, or 0 when the request is
 * admitted (it then holds a slot for the length of each window).
 */
export function admitUnderQuota(state: QuotaState, now: number): number {
  const { quota } = state;
  if (quota === null) return 0;
  const waitMs = Math.max(
    msUntilSlot(state.admitted, now, MINUTE_MS, quota.perMinute),
    quota.perHour === undefined ? 0 : msUntilSlot(state.admitted, now, HOUR_MS, quota.perHour),
  );
  if (waitMs > 0) return Math.ceil(waitMs / 1000);
  const horizon = now - (quota.perHour === undefined ? MINUTE_MS : HOUR_MS);
  state.admitted = state.admitted.filter((t) => t > horizon);
  state.admitted.push(now);
  return 0;
}

// ---- latency ----------------------------------------------------------------

/** A delay whose timer stop() can clear, so a hung or slow request never outlives its fake. */
export function trackedDelay(pending: Set<NodeJS.Timeout>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      pending.delete(timer);
      resolve();
    }, ms);
    pending.add(timer);
  });
}

// ---- alert stream pacing ----------------------------------------------------

/** Bounds the stream's timer: often enough for a smooth rate, rarely enough to stay cheap. */
const STREAM_MIN_TICK_MS = 20;
const STREAM_MAX_TICK_MS = 1000;
/** Ten thousand a second is far beyond any tenant; the cap keeps a typo from flooding memory. */
export const STREAM_MAX_PER_MINUTE = 600_000;
export const DEFAULT_UPDATE_SHARE = 0.1;

export interface StreamPace {
  perMinute: number;
  updateShare: number;
  created: number;
  updated: number;
  timer: NodeJS.Timeout;
  /** performance.now() when the current rate was set; arrivals are counted from there. */
  since: number;
  arrivals: number;
  /** Streamed alerts not yet resolved: the candidates for an update. */
  open: string[];
}

export interface StreamStatus {
  perMinute: number;
  updateShare: number;
  created: number;
  updated: number;
}

/**
 * Sets, changes or (perMinute 0 or null) stops a tenant's stream. The rate is checked before
 * the running stream is touched, so a bad call leaves it as it was; a changed rate keeps the
 * counters and the alerts still open for updates, and `extra` carries the fake's own fields.
 */
export function restartStream<S extends StreamPace>(
  streams: Map<string, S>,
  tenantId: string,
  options: { perMinute: number; updateShare?: number } | null,
  fakeName: string,
  tick: () => void,
  extra: (previous: S | undefined) => Omit<S, keyof StreamPace>,
): void {
  const perMinute = options?.perMinute ?? 0;
  const updateShare = options?.updateShare ?? DEFAULT_UPDATE_SHARE;
  checkStreamRate(perMinute, updateShare, fakeName);
  const previous = streams.get(tenantId);
  if (previous !== undefined) clearInterval(previous.timer);
  if (perMinute === 0) {
    streams.delete(tenantId);
    return;
  }
  const timer = streamTimer(perMinute, tick);
  const pace: StreamPace = {
    perMinute,
    updateShare,
    created: previous?.created ?? 0,
    updated: previous?.updated ?? 0,
    timer,
    since: performance.now(),
    arrivals: 0,
    open: previous?.open ?? [],
  };
  streams.set(tenantId, { ...pace, ...extra(previous) } as S);
}

/** A stream's settings and counters, or null when none is running. */
export function streamStatusOf(stream: StreamPace | undefined): StreamStatus | null {
  if (stream === undefined) return null;
  const { perMinute, updateShare, created, updated } = stream;
  return { perMinute, updateShare, created, updated };
}

// ---- per-tenant bookkeeping ---------------------------------------------------

/** What each fake records per tenant for introspection: requests, served versions, 200 pages. */
export interface TenantBookkeeping<R> {
  requests: R[];
  served: Map<string, number>;
  pageRequests: number;
}

/** Clears recorded requests, served() and pageRequests() (so afterPage's index restarts at 0). */
export function resetBookkeeping<R>(states: Iterable<TenantBookkeeping<R>>): void {
  for (const state of states) {
    state.requests = [];
    state.served = new Map();
    state.pageRequests = 0;
  }
}

/** Counts each served version by `keyOf`; poisoned alerts do not count (the client never got them). */
export function countServed<T extends { id: string }>(
  state: TenantBookkeeping<unknown> & { poisoned: Map<string, string> },
  page: readonly T[],
  keyOf: (stored: T) => string,
): void {
  for (const stored of page) {
    if (state.poisoned.has(stored.id)) continue;
    const key = keyOf(stored);
    state.served.set(key, (state.served.get(key) ?? 0) + 1);
  }
}

/** Checks a stream's rate and update share, before the running stream is touched. */
export function checkStreamRate(perMinute: number, updateShare: number, fakeName: string): void {
  if (!Number.isFinite(perMinute) || perMinute < 0 || perMinute > STREAM_MAX_PER_MINUTE) {
    throw new Error(`${fakeName}: perMinute must be from 0 to ${STREAM_MAX_PER_MINUTE}`);
  }
  if (!Number.isFinite(updateShare) || updateShare < 0 || updateShare > 1) {
    throw new Error(`${fakeName}: updateShare must be from 0 to 1`);
  }
}

/** An unref'd interval ticking often enough for `perMinute` arrivals. */
export function streamTimer(perMinute: number, tick: () => void): NodeJS.Timeout {
  const tickMs = Math.min(STREAM_MAX_TICK_MS, Math.max(STREAM_MIN_TICK_MS, 60_000 / perMinute));
  const timer = setInterval(tick, tickMs);
  // A forgotten stream must never keep a test process alive.
  timer.unref();
  return timer;
}

/**
 * One tick of a stream: the arrivals now due, each an update (for `updateShare` of them, while
 * an open alert remains) or a new alert. A throw stops the stream via `stop` and is reported.
 */
export function runStreamTick(
  stream: StreamPace,
  arrive: { update: () => void; create: () => void },
  onError: (message: string) => void,
): void {
  try {
    // The first arrival is due at once, then one every 60,000/perMinute ms.
    const due = Math.floor((stream.perMinute * (performance.now() - stream.since)) / 60_000) + 1 - stream.arrivals;
    // After a stalled event loop, catch up by at most ten seconds' worth; the rest is skipped.
    const cap = Math.max(1, Math.ceil(stream.perMinute / 6));
    stream.arrivals += Math.max(0, due - cap);
    for (let i = 0; i < Math.min(due, cap); i++) {
      stream.arrivals++;
      if (stream.open.length > 0 && Math.random() < stream.updateShare) arrive.update();
      else arrive.create();
    }
  } catch (err) {
    // A throw in a timer would take the whole process down; stop this stream and say why.
    onError(err instanceof Error ? err.message : String(err));
  }
}
