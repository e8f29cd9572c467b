/**
 * Every Storage resource name the app uses. Infra tests read this file to prove
 * that Bicep creates each one, so add new names here rather than inline.
 */
export const TABLES = {
  tenants: "MsspTenants",
  consentSessions: "MsspConsentSessions",
  pullState: "MsspPullState",
  /** One row per pull run, newest first, for the console's "recent pulls" and 24-hour counts. */
  pullHistory: "MsspPullHistory",
  /** The notification outbox, the health level last notified per tenant, the webhook's delivery status. */
  notifications: "MsspNotifications",
  /** Every consent link issued, per tenant: used, revoked, expired (never the signature). */
  consentLinks: "MsspConsentLinks",
  /** The operator audit trail: who changed which tenant, when. */
  audit: "MsspAudit",
} as const;

export const QUEUES = {
  tenantPulls: "tenant-pulls",
  tenantPullsPoison: "tenant-pulls-poison",
} as const;

/** The alerts container name is an app setting (ALERTS_CONTAINER); this is its default. */
export const DEFAULT_ALERTS_CONTAINER = "alerts";

/** Containers the app keeps besides the alerts: poison data, and dedupe sets too large for a table row. */
export const CONTAINERS = {
  deadLetters: "alerts-dead-letters",
  pullState: "pull-state",
  /** Pages a sink could not take when it was down, kept in order until it catches up (with several sinks). */
  parked: "alerts-parked",
} as const;
