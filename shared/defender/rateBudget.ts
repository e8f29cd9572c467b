import type { Clock } from "../clock";
import { DefenderApiError, type AlertSource } from "../sources/sourceErrors";

export interface RateBudgetOptions {
  clock: Clock;
  /** Resolves no earlier than `ms` later; injected so tests can move a fake clock instead. */
  sleep?: (ms: number) => Promise<void>;
  /** Calls allowed per tenant in any 60 s; Microsoft documents 100, the margin absorbs clock skew. */
  perMinute?: number;
  /**
   * Calls allowed per tenant in any hour; Microsoft documents 1,500. The margin is smaller than the
   * minute's: skew only matters at the window's edges, where 30 calls are 75 s of a backlog's pace
   * (20 s at the minute's limit), and a 429 costs a wait, never an alert.
   */
  perHour?: number;
  /** The service whose calls this budget counts: named in budget_exhausted errors (default "mde"). */
  source?: AlertSource;
}

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
/** How often idle tenants are swept from memory. */
const SWEEP_INTERVAL_MS = MINUTE_MS;

const realSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Per-tenant sliding-window budget for the Defender API (documented limits: 100 calls a
 * minute and 1,500 an hour) or, as an instance of its own with GRAPH_BUDGET_LIMITS (graphClient.ts), for
 * Microsoft Graph. Every HTTP attempt takes one slot first; when the budget is spent the caller
 * waits for the oldest call to leave the window, or gives up with `budget_exhausted` when that
 * would pass its deadline, so the next run resumes instead.
 *
 * Memory per tenant is at most `perHour` timestamps, and tenants idle for an hour are dropped.
 */
export class RateBudget {
  readonly perMinute: number;
  readonly perHour: number;
  private readonly clock: Clock;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly source: AlertSource;
  /** Ascending call times (epoch ms) within the last hour, per tenant. */
  private readonly calls = new Map<string, number[]>();
  private lastSweep = Number.NEGATIVE_INFINITY;

  constructor(options: RateBudgetOptions) {
    this.clock = options.clock;
    this.sleep = options.sleep ?? realSleep;
    this.source = options.source ?? "mde";
    this.perMinute = positiveInt(options.perMinute ?? 90, "perMinute");
    this.perHour = positiveInt(options.perHour ?? 1_470, "perHour");
    if (this.perHour < this.perMinute) throw new RangeError("RateBudget: perHour must be at least perMinute");
  }

  /**
   * Takes one call slot for the tenant, waiting until one is free. Throws DefenderApiError
   * `budget_exhausted` (without waiting) if the slot would only free up after `deadline`.
   */
  async acquire(tenantId: string, deadline: number): Promise<void> {
    // A sleep resolves no earlier than asked, so time has moved at least that far even if the
    // injected clock has not (a frozen test clock must not turn this into a busy loop).
    let floor = Number.NEGATIVE_INFINITY;
    for (;;) {
      const now = Math.max(this.clock(), floor);
      this.sweep(now);
      const times = this.prune(tenantId, now);
      const wait = this.waitFor(times, now);
      if (wait <= 0) {
        insertSorted(times, now);
        this.calls.set(tenantId, times);
        return;
      }
      if (now + wait > deadline) {
        throw new DefenderApiError(
          "budget_exhausted",
          `${this.source === "graph" ? "Microsoft Graph" : "Defender API"} call budget for the tenant is spent until ${new Date(now + wait).toISOString()}, after this run's deadline`,
          { retryable: true, source: this.source },
        );
      }
      await this.sleep(wait);
      floor = now + wait;
    }
  }

  /** The tenant's call times in the last hour (ascending epoch ms), for persisting across processes. */
  snapshot(tenantId: string): number[] {
    const now = this.clock();
    return [...this.prune(tenantId, now)];
  }

  /**
   * Merges call times persisted by another process. Calls this process already knows are not
   * counted twice (per distinct timestamp the larger count wins), times from the future (clock
   * skew) are treated as now, and at most `perHour` of the newest are kept.
   */
  restore(tenantId: string, timestamps: readonly number[]): void {
    const now = this.clock();
    const since = now - HOUR_MS;
    const incoming = new Map<number, number>();
    for (const raw of timestamps) {
      if (typeof raw !== "number" || !Number.isFinite(raw)) continue;
      const t = Math.min(Math.floor(raw), now);
      if (t <= since) continue;
      incoming.set(t, (incoming.get(t) ?? 0) + 1);
    }
    const known = new Map<number, number>();
    for (const t of this.prune(tenantId, now)) known.set(t, (known.get(t) ?? 0) + 1);
    for (const [t, count] of incoming) known.set(t, Math.max(count, known.get(t) ?? 0));
    const merged: number[] = [];
    for (const [t, count] of known) for (let i = 0; i < count; i++) merged.push(t);
    merged.sort((a, b) => a - b);
    // Stryker disable next-line ConditionalExpression,EqualityOperator,MethodExpression: prune() caps at perHour again on every read (snapshot, acquire), so the cap here only bounds memory until then
    const capped = merged.length > this.perHour ? merged.slice(merged.length - this.perHour) : merged;
    if (capped.length > 0) this.calls.set(tenantId, capped);
    else this.calls.delete(tenantId);
  }

  /** Number of tenants currently tracked (for tests and diagnostics). */
  get trackedTenants(): number {
    return this.calls.size;
  }

  /** Milliseconds until one more call fits both windows (≤ 0: now). */
  private waitFor(times: readonly number[], now: number): number {
    let wait = 0;
    if (times.length >= this.perMinute) {
      // The call that must leave the minute window before another fits.
      const oldest = times[times.length - this.perMinute] as number;
      wait = Math.max(wait, oldest + MINUTE_MS - now);
    }
    if (times.length >= this.perHour) {
      const oldest = times[times.length - this.perHour] as number;
      wait = Math.max(wait, oldest + HOUR_MS - now);
    }
    return wait;
  }

  /** The tenant's times with everything older than an hour removed (and the tenant forgotten if none remain). */
  private prune(tenantId: string, now: number): number[] {
    const times = this.calls.get(tenantId);
    if (times === undefined) return [];
    const since = now - HOUR_MS;
    let drop = 0;
    while (drop < times.length && (times[drop] as number) <= since) drop++;
    if (drop > 0) times.splice(0, drop);
    // Stryker disable next-line all: restore() already caps what it stores at perHour and acquire() never inserts past it, so no caller can tell this defensive cap from none
    if (times.length > this.perHour) times.splice(0, times.length - this.perHour);
    if (times.length === 0) this.calls.delete(tenantId);
    return times;
  }

  private sweep(now: number): void {
    if (now - this.lastSweep < SWEEP_INTERVAL_MS) return;
    this.lastSweep = now;
    const since = now - HOUR_MS;
    for (const [tenantId, times] of this.calls) {
      const newest = times[times.length - 1];
      if (newest === undefined || newest <= since) this.calls.delete(tenantId);
    }
  }
}

function insertSorted(times: number[], t: number): void {
  let i = times.length;
  while (i > 0 && (times[i - 1] as number) > t) i--;
  times.splice(i, 0, t);
}

function positiveInt(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`RateBudget: ${name} must be a positive integer`);
  return value;
}
