/**
 * What a pull tells the rest of the app once it has run: telemetry and notifications read it,
 * the pull never waits on them for long and never fails because of them. Nothing in a report is
 * secret: ids, counts, codes and the alerts' own titles.
 */

/** A tenant's health as notifications and alert rules see it. */
export type TenantHealthLevel = "healthy" | "degraded" | "reconsent_required";

/** Consecutive failed pulls from which a tenant counts as degraded (the console's rule too). */
export const DEGRADED_AFTER_FAILURES = 3;
/** A sink behind this long (its pages parked while the others take them) makes the tenant degraded too. */
export const DEGRADED_AFTER_SINK_BEHIND_MS = 15 * 60_000;

export function healthLevel(input: { reconsentRequired: boolean; consecutiveFailures: number; sinkBehindMs?: number }): TenantHealthLevel {
  if (input.reconsentRequired) return "reconsent_required";
  if ((input.sinkBehindMs ?? 0) >= DEGRADED_AFTER_SINK_BEHIND_MS) return "degraded";
  return input.consecutiveFailures >= DEGRADED_AFTER_FAILURES ? "degraded" : "healthy";
}

/** Alert severities from least to most severe, as Defender for Endpoint and Graph spell them (case aside). */
export const SEVERITIES = ["Informational", "Low", "Medium", "High"] as const;
export type Severity = (typeof SEVERITIES)[number];

/** The rank of a severity as an API sent it; unknown values (`UnSpecified`, future ones) rank lowest. */
export function severityRank(value: unknown): number {
  if (typeof value !== "string") return -1;
  const lower = value.toLowerCase();
  return SEVERITIES.findIndex((s) => s.toLowerCase() === lower);
}

/** A newly delivered alert at or above the notification threshold. */
export interface NotableAlert {
  id: string;
  title: string;
  severity: string;
  category: string | null;
  lastUpdateTime: string;
}

/** At most this many notable alerts are listed per run; `total` counts all of them. */
export const NOTABLE_LIST_LIMIT = 20;

export interface PullReport {
  tenantId: string;
  tenantName: string;
  /** The queue message's invocation id (or the pull's owner id outside Functions). */
  invocationId: string;
  startedAt: string;
  durationMs: number;
  outcome: "succeeded" | "partial" | "failed";
  /** Set when `outcome` is "failed". */
  errorCode?: string;
  category?: "reconsent" | "app_credential" | "transient" | "lease_lost";
  alerts: number;
  deadLetters: number;
  /** Seconds from the newest point before which everything is delivered to the end of the run; null before the first window closes. */
  lagSeconds: number | null;
  /** The access token came from Entra ID in this run (not from a cache). */
  tokenRefreshed: boolean;
  health: { before: TenantHealthLevel; after: TenantHealthLevel };
  /** With several sinks: those with pages parked for them after this run (a sink that is down). */
  sinksBehind: Array<{ sink: string; parkedPages: number; behindSince: string | null }>;
  notable: { alerts: NotableAlert[]; total: number };
}

export interface PullObserver {
  pulled(report: PullReport): Promise<void>;
}
