/**
 * The telemetry contract: the metric names and the pull-run record (with the attributes of
 * pullRunFields in ./openTelemetry.ts) that the alert rules (infra/modules/alerts.bicep), the
 * fleet-health workbook and operators' own queries read.
 * Renaming any of these silently breaks them, so each is documented in docs/operations.md
 * ("Telemetry") and test/infra/monitoring.test.ts checks the Bicep against this file.
 */

/** Instrumentation scope of the app's meter and logger (OpenTelemetry's "library name"). */
export const TELEMETRY_SCOPE = "mssp-defender-connector";

export const METRICS = {
  /** Counter, {alert}: alert versions a pull handed to the sink. Attributes: tenantId. */
  alertsDelivered: "mssp.alerts.delivered",
  /** Counter, {pull}: finished pull runs. Attributes: tenantId, outcome, and category + errorCode on a failure. */
  pulls: "mssp.pulls",
  /** Counter, {refresh}: access tokens obtained from Entra ID with a refresh token. Attributes: tenantId. */
  tokenRefreshes: "mssp.token.refreshes",
  /** Observable gauge, {tenant}: tenants in status reconsent_required (every instance reports it: take the max). */
  reconsentRequired: "mssp.tenants.reconsent_required",
  /** Histogram, s: how far behind "now" everything delivered reaches at the end of a run. Attributes: tenantId. */
  pullLag: "mssp.pull.lag",
  /** Histogram, ms: wall time of a pull run. Attributes: outcome. */
  pullDuration: "mssp.pull.duration",
} as const;

/**
 * The `event` attribute of the one record each pull run writes (message PULL_RUN_MESSAGE); its
 * other attributes are pullRunFields in ./openTelemetry.ts.
 */
export const PULL_RUN_EVENT = "pull_run";
export const PULL_RUN_MESSAGE = "pull run finished";
