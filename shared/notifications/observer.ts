import type { Clock } from "../clock";
import type { PullObserver, PullReport, Severity, TenantHealthLevel } from "../pull/observer";
import { safeErrorCode } from "./events";
import type { NotificationOutbox } from "./outbox";
import type { NotifiedHealthStore } from "./notifiedHealth";
import { timeoutSignal } from "../time/timeoutSignal";

/** The observer's Table calls stop well before the pull stops waiting for it (10 s). */
const OBSERVER_BUDGET_MS = 8_000;

/**
 * Turns each pull report into outbox events: a health change and the run's notable alerts. It
 * only writes rows; the webhook is called by the flush, once per cycle, so a receiver that is down
 * or slow can never hold up a pull.
 */
export class NotificationObserver implements PullObserver {
  constructor(
    private readonly deps: {
      outbox: NotificationOutbox;
      notified: NotifiedHealthStore;
      minSeverity: Severity;
      clock: Clock;
    },
  ) {}

  async pulled(report: PullReport): Promise<void> {
    const signal = timeoutSignal(OBSERVER_BUDGET_MS);
    const at = new Date(this.deps.clock()).toISOString();
    const tenant = { at, tenantId: report.tenantId, tenantName: report.tenantName };
    const change = await this.healthChange(report, signal);
    if (change) {
      const errorCode = report.outcome === "failed" ? safeErrorCode(report.errorCode) : undefined;
      await this.deps.outbox.add({ kind: "health", ...tenant, ...change, ...(errorCode ? { errorCode } : {}) }, signal);
      // After the event: should this write fail, the change is announced again next run rather than never.
      await this.deps.notified.set(report.tenantId, change.to, signal);
    }
    if (report.notable.total > 0) {
      const { alerts, total } = report.notable;
      await this.deps.outbox.add({ kind: "alerts", ...tenant, minSeverity: this.deps.minSeverity, total, alerts }, signal);
    }
  }

  /** The change since the level last notified (the run's starting level for a tenant never notified). */
  private async healthChange(
    report: PullReport,
    signal: AbortSignal,
  ): Promise<{ from: TenantHealthLevel; to: TenantHealthLevel } | undefined> {
    const from = (await this.deps.notified.get(report.tenantId, signal)) ?? report.health.before;
    const to = report.health.after;
    if (from === to) return undefined;
    // Only a run that worked says a tenant is healthy again: a failed run after a re-consent counts
    // fewer than three failures, yet the tenant has not recovered.
    if (to === "healthy" && report.outcome === "failed") return undefined;
    return { from, to };
  }
}
