/**
 * The batch as a chat message sees it: one entry per tenant with its health changes and its new
 * alerts, most urgent tenant first. Slack and Teams render the same digest; only their markup and
 * size limits differ.
 */
import { severityRank, type NotableAlert, type TenantHealthLevel } from "../../pull/observer";
import { defenderAlertUrl, type HealthEvent, type NotificationEvent } from "../events";

/** What the builders get: the batch, oldest first, and what the message says around it. */
export interface MessageInput {
  events: readonly NotificationEvent[];
  sentAt: string;
  /** Events dropped unsent (too old, or beyond the outbox cap) since the last delivered message. */
  dropped: number;
  /** The operator console, for a link. */
  consoleUrl: string;
}

export interface ListedAlert extends NotableAlert {
  url: string;
}

export interface TenantDigest {
  tenantId: string;
  tenantName: string;
  /** In time order. */
  health: HealthEvent[];
  /** Most severe first, then newest: at most what the outbox kept per run. */
  alerts: ListedAlert[];
  /** Every new alert at or above the threshold, listed or not. */
  alertTotal: number;
  /** The threshold the alerts were picked by. */
  minSeverity: string;
}

export interface Digest {
  tenants: TenantDigest[];
  healthChanges: number;
  alertTotal: number;
}

/** Alerts a chat message lists per tenant; the rest are counted. */
export const CHAT_ALERTS_PER_TENANT = 10;

export const LEVEL_LABELS: Record<TenantHealthLevel, string> = {
  healthy: "healthy",
  degraded: "degraded",
  reconsent_required: "re-consent required",
};

const URGENCY: Record<TenantHealthLevel, number> = { reconsent_required: 0, degraded: 1, healthy: 2 };

/** Text from outside (alert titles, tenant names) on one line, without control characters, cut to `max`. */
export function oneLine(value: string, max = 200): string {
  const flat = value.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, " ").replace(/\s+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/** "2025-03-01 12:05 UTC": the same for every reader, whatever their time zone. */
export function shortTime(iso: string): string {
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? `${new Date(ms).toISOString().slice(0, 16).replace("T", " ")} UTC` : "";
}

export const plural = (count: number, one: string, many = `${one}s`): string => `${count} ${count === 1 ? one : many}`;

/** "Defender connector: 1 health change, 35 new alerts". */
export function headline(digest: Digest): string {
  const parts = [
    digest.healthChanges > 0 ? plural(digest.healthChanges, "health change") : "",
    digest.alertTotal > 0 ? plural(digest.alertTotal, "new alert") : "",
  ].filter(Boolean);
  return `Defender connector: ${parts.join(", ") || "no news"}`;
}

export function droppedNotice(dropped: number): string {
  return `${plural(dropped, "earlier notification")} could not be delivered within 24 hours or exceeded the outbox limit and ${dropped === 1 ? "was" : "were"} dropped; the operator console has the current state.`;
}

export function digestOf(events: readonly NotificationEvent[]): Digest {
  const byTenant = new Map<string, TenantDigest>();
  for (const event of events) {
    let entry = byTenant.get(event.tenantId);
    if (!entry) {
      entry = { tenantId: event.tenantId, tenantName: event.tenantName, health: [], alerts: [], alertTotal: 0, minSeverity: "" };
      byTenant.set(event.tenantId, entry);
    }
    // Events come oldest first: the newest name wins.
    entry.tenantName = event.tenantName;
    if (event.kind === "health") {
      entry.health.push(event);
    } else {
      entry.alertTotal += event.total;
      entry.minSeverity = event.minSeverity;
      entry.alerts.push(...event.alerts.map((alert) => ({ ...alert, url: defenderAlertUrl(alert.id, event.tenantId) })));
    }
  }
  const tenants = [...byTenant.values()];
  for (const tenant of tenants) {
    tenant.alerts.sort((a, b) => severityRank(b.severity) - severityRank(a.severity) || b.lastUpdateTime.localeCompare(a.lastUpdateTime));
  }
  const urgency = (tenant: TenantDigest): number => URGENCY[tenant.health.at(-1)?.to ?? "healthy"];
  tenants.sort((a, b) => urgency(a) - urgency(b) || b.alertTotal - a.alertTotal || a.tenantName.localeCompare(b.tenantName));
  return {
    tenants,
    healthChanges: tenants.reduce((sum, tenant) => sum + tenant.health.length, 0),
    alertTotal: tenants.reduce((sum, tenant) => sum + tenant.alertTotal, 0),
  };
}

/** A tenant's part of a chat message, in plain words: each format adds its markup and escaping. */
export interface TenantLines {
  name: string;
  tenantId: string;
  /** "healthy → degraded at 2025-03-01 12:05 UTC (defender_unavailable)", with the level it went to. */
  health: Array<{ to: TenantHealthLevel; text: string }>;
  /** "35 new alerts at High or above"; empty without alerts. */
  summary: string;
  /** The first CHAT_ALERTS_PER_TENANT alerts; `detail` is "Malware · 2025-03-01 12:04 UTC". */
  alerts: Array<{ severity: string; title: string; url: string; detail: string }>;
  /** "…and 25 more alerts (Defender portal)" when `listed` of them are shown, or "". */
  more(listed: number): string;
}

export function tenantLines(tenant: TenantDigest): TenantLines {
  return {
    name: oneLine(tenant.tenantName, 128),
    tenantId: tenant.tenantId,
    health: tenant.health.map((event) => ({
      to: event.to,
      text: `${LEVEL_LABELS[event.from]} → ${LEVEL_LABELS[event.to]} at ${shortTime(event.at)}${event.errorCode ? ` (${event.errorCode})` : ""}`,
    })),
    summary: tenant.alertTotal > 0 ? `${plural(tenant.alertTotal, "new alert")} at ${tenant.minSeverity || "the threshold"} or above` : "",
    alerts: tenant.alerts.slice(0, CHAT_ALERTS_PER_TENANT).map((alert) => ({
      severity: oneLine(alert.severity, 20),
      title: oneLine(alert.title),
      url: alert.url,
      detail: [alert.category ? oneLine(alert.category, 60) : "", shortTime(alert.lastUpdateTime)].filter(Boolean).join(" · "),
    })),
    more: (listed) => {
      const rest = tenant.alertTotal - listed;
      return rest > 0 ? `…and ${plural(rest, "more alert")} (Defender portal)` : "";
    },
  };
}

/** "…and 3 more tenants (12 alerts, 1 health change)". */
export function moreTenants(rest: readonly TenantDigest[]): string {
  const alerts = rest.reduce((sum, tenant) => sum + tenant.alertTotal, 0);
  const changes = rest.reduce((sum, tenant) => sum + tenant.health.length, 0);
  return `…and ${plural(rest.length, "more tenant")} (${plural(alerts, "alert")}, ${plural(changes, "health change")}); see the operator console.`;
}

/** How many of `items`, in order, fit in `budget` when each costs `cost(item)`. */
export function countWithin<T>(items: readonly T[], cost: (item: T) => number, budget: number): number {
  let used = 0;
  let count = 0;
  for (const item of items) {
    used += cost(item);
    if (used > budget) break;
    count++;
  }
  return count;
}
