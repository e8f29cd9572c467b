import type { Clock } from "../clock";
import type { TenantRecord } from "../state/tenantRegistry";
import type { SinkProgressMap } from "../sinks/sinkSet";
import type { PullIncidents, PullState, PullStateStore } from "./pullState";

/** Host and API clocks further apart than this are shown as a warning. */
const CLOCK_SKEW_WARNING_SECONDS = 60;

/** Something an operator should look at although pulls succeed; `code` is stable for alert rules. */
export interface PullWarning {
  code: "clock_skew" | "dead_letters" | "lease_lost" | "lease_release_failed" | "unstable_order" | string;
  message: string;
  at: string | null;
}

/** What `GET /api/tenants` shows about a tenant's pulls: no token, no dedupe internals. */
export interface PullHealth {
  lastPullAt: string | null;
  lastSuccessfulPullAt: string | null;
  alertsInLastPull: number | null;
  checkpoint: string | null;
  /** A window is partly read (a backlog larger than one run, or a run cut short); the next run resumes it. */
  catchingUp: boolean;
  /** How far into that window the pull has read (everything before it is delivered). */
  catchingUpPosition: string | null;
  refreshTokenAgeHours: number | null;
  consecutiveFailures: number;
  lastPullErrorCode: string | null;
  lastPullErrorMessage: string | null;
  /** The Defender API's clock minus this app's, in seconds, as last measured. */
  clockSkewSeconds: number | null;
  /** Alerts or pages the pipeline could not accept, kept in the dead-letter container. */
  deadLetters: number;
  lastDeadLetterReason: string | null;
  /** With several sinks: each sink's own progress (null with one sink, whose progress is the checkpoint's). */
  sinks: Record<string, SinkHealth> | null;
  warnings: PullWarning[];
}

export interface SinkHealth {
  /** Pages waiting for this sink, parked while it was down; 0 when it is caught up. */
  parkedPages: number;
  /** Since when it has been behind (null when caught up). */
  behindSince: string | null;
  lastDeliveryAt: string | null;
  lastErrorCode: string | null;
  lastErrorMessage: string | null;
  lastErrorAt: string | null;
}

function sinkHealthOf(sinks: SinkProgressMap | undefined): Record<string, SinkHealth> | null {
  if (!sinks || Object.keys(sinks).length === 0) return null;
  const view: Record<string, SinkHealth> = {};
  for (const [name, entry] of Object.entries(sinks)) {
    view[name] = {
      parkedPages: entry.parkedTo - entry.parkedFrom,
      behindSince: entry.behindSince ?? null,
      lastDeliveryAt: entry.lastDeliveryAt ?? null,
      lastErrorCode: entry.lastErrorCode ?? null,
      lastErrorMessage: entry.lastErrorMessage ?? null,
      lastErrorAt: entry.lastErrorAt ?? null,
    };
  }
  return view;
}

/** An event warns for a day: long enough to be seen on the next shift, not a tenant degraded for ever. */
const WARNING_LIFETIME_MS = 24 * 3600_000;

function warningsOf(state: PullState & { incidents?: PullIncidents }, now: number): PullWarning[] {
  const warnings: PullWarning[] = [];
  const recent = (at: string | undefined): boolean => at !== undefined && now - Date.parse(at) < WARNING_LIFETIME_MS;
  if (state.clockSkewMs !== undefined && Math.abs(state.clockSkewMs) / 1000 > CLOCK_SKEW_WARNING_SECONDS) {
    const seconds = Math.round(state.clockSkewMs / 1000);
    warnings.push({
      code: "clock_skew",
      message: `This host's clock is ${Math.abs(seconds)} s ${seconds < 0 ? "ahead of" : "behind"} the Defender API's; windows end by the API's clock`,
      at: state.lastRunAt ?? null,
    });
  }
  if (state.deadLetters > 0 && recent(state.lastDeadLetterAt)) {
    warnings.push({
      code: "dead_letters",
      message: `${state.deadLetters} item(s) the pipeline could not accept are in the dead-letter container (last: ${state.lastDeadLetterReason ?? "unknown"}); list them with GET /api/tenants/{tenantId}/dead-letters`,
      at: state.lastDeadLetterAt ?? null,
    });
  }
  const incidents = state.incidents;
  if (incidents && incidents.leaseLost > 0 && recent(incidents.lastLeaseLostAt)) {
    warnings.push({
      code: "lease_lost",
      message: `A pull lost its lease to another pull of this tenant ${incidents.leaseLost} time(s); the other pull carried on`,
      at: incidents.lastLeaseLostAt ?? null,
    });
  }
  if (incidents && incidents.releaseFailed > 0 && recent(incidents.lastReleaseFailedAt)) {
    warnings.push({
      code: "lease_release_failed",
      message: `A pull could not release its lease ${incidents.releaseFailed} time(s); the tenant waited for the lease to lapse`,
      at: incidents.lastReleaseFailedAt ?? null,
    });
  }
  for (const [name, entry] of Object.entries(state.sinks ?? {})) {
    const parked = entry.parkedTo - entry.parkedFrom;
    if (parked <= 0) continue;
    warnings.push({
      code: "sink_behind",
      message: `Sink ${name} is ${parked} page(s) behind since ${entry.behindSince ?? "an earlier run"} (last error: ${entry.lastErrorCode ?? "none"}); the other sinks are unaffected and it catches up when it answers again`,
      at: entry.behindSince ?? null,
    });
  }
  if (state.lastWarningCode && recent(state.lastWarningAt)) {
    warnings.push({ code: state.lastWarningCode, message: state.lastWarningMessage ?? "", at: state.lastWarningAt ?? null });
  }
  return warnings;
}

export function pullHealthOf(state: (PullState & { incidents?: PullIncidents }) | undefined, clock: Clock): PullHealth {
  return {
    lastPullAt: state?.lastRunAt ?? null,
    lastSuccessfulPullAt: state?.lastSuccessAt ?? null,
    alertsInLastPull: state?.lastAlertCount ?? null,
    checkpoint: state?.watermark ?? null,
    catchingUp: state?.window !== undefined,
    catchingUpPosition: state?.window?.position ?? null,
    refreshTokenAgeHours: state?.refreshTokenObtainedAt
      ? Math.round(((clock() - state.refreshTokenObtainedAt) / 3600_000) * 10) / 10
      : null,
    consecutiveFailures: state?.consecutiveFailures ?? 0,
    lastPullErrorCode: state?.lastErrorCode ?? null,
    lastPullErrorMessage: state?.lastErrorMessage ?? null,
    clockSkewSeconds: state?.clockSkewMs === undefined ? null : Math.round(state.clockSkewMs / 1000),
    deadLetters: state?.deadLetters ?? 0,
    lastDeadLetterReason: state?.lastDeadLetterReason ?? null,
    sinks: sinkHealthOf(state?.sinks),
    warnings: state ? warningsOf(state, clock()) : [],
  };
}

/** A change of consenting user is shown this long: a takeover through a leaked link must not go unseen. */
const CONSENTER_CHANGE_WARNING_MS = 30 * 24 * 3600_000;

/** A consent given by someone else than the user who consented before (the audit trail has the details). */
export function consenterWarning(tenant: TenantRecord, now: number): PullWarning | undefined {
  if (!tenant.consenterChangedAt || now - Date.parse(tenant.consenterChangedAt) >= CONSENTER_CHANGE_WARNING_MS) return undefined;
  return {
    code: "consenter_changed",
    message: `The consent was last given by ${tenant.consentedBy ?? "another user"}, not by ${tenant.previousConsentedBy || "the user"} who consented before; confirm the change with the customer (GET /api/audit?tenantId=${tenant.tenantId})`,
    at: tenant.consenterChangedAt,
  };
}

export function pullHealthDecorator(store: PullStateStore, clock: Clock) {
  return async (tenants: TenantRecord[]): Promise<Map<string, Record<string, unknown>>> => {
    const states = await store.readAll();
    const views = new Map<string, Record<string, unknown>>();
    for (const tenant of tenants) {
      const health = pullHealthOf(states.get(tenant.tenantId), clock);
      const changed = consenterWarning(tenant, clock());
      if (changed) health.warnings.push(changed);
      views.set(tenant.tenantId, { health });
    }
    return views;
  };
}
