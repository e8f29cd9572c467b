import type { Clock } from "../clock";
import type { TenantRecord } from "../state/tenantRegistry";
import type { PullStateStore } from "./pullState";

/** What `GET /api/tenants` shows about a tenant's pulls: no token, no dedupe internals. */
export interface PullHealth {
  lastPullAt: string | null;
  lastSuccessfulPullAt: string | null;
  alertsInLastPull: number | null;
  checkpoint: string | null;
  /** A window is partly read (a backlog larger than one run, or a run cut short); the next run resumes it. */
  catchingUp: boolean;
  refreshTokenAgeHours: number | null;
  consecutiveFailures: number;
  lastPullErrorCode: string | null;
  lastPullErrorMessage: string | null;
}

export function pullHealthDecorator(store: PullStateStore, clock: Clock) {
  return async (tenants: TenantRecord[]): Promise<Map<string, Record<string, unknown>>> => {
    const states = await store.readAll();
    const views = new Map<string, Record<string, unknown>>();
    for (const tenant of tenants) {
      const state = states.get(tenant.tenantId);
      const health: PullHealth = {
        lastPullAt: state?.lastRunAt ?? null,
        lastSuccessfulPullAt: state?.lastSuccessAt ?? null,
        alertsInLastPull: state?.lastAlertCount ?? null,
        checkpoint: state?.watermark ?? null,
        catchingUp: state?.window !== undefined,
        refreshTokenAgeHours: state?.refreshTokenObtainedAt
          ? Math.round(((clock() - state.refreshTokenObtainedAt) / 3600_000) * 10) / 10
          : null,
        consecutiveFailures: state?.consecutiveFailures ?? 0,
        lastPullErrorCode: state?.lastErrorCode ?? null,
        lastPullErrorMessage: state?.lastErrorMessage ?? null,
      };
      views.set(tenant.tenantId, { health });
    }
    return views;
  };
}
