/**
 * What the notification outbox holds: one event per tenant health change and one per pull run
 * that delivered new alerts at or above the threshold. Everything here is safe to send to a chat
 * channel: ids, names, counts, the app's own error codes and the alerts' titles. Never a token,
 * never the webhook URL.
 */
import { SEVERITIES, type NotableAlert, type Severity, type TenantHealthLevel } from "../pull/observer";

interface EventBase {
  /** The outbox row's key: unique, and a receiver can drop a redelivered event by it. */
  id: string;
  /** When the pull that caused it ended (ISO). */
  at: string;
  tenantId: string;
  tenantName: string;
}

export interface HealthEvent extends EventBase {
  kind: "health";
  from: TenantHealthLevel;
  to: TenantHealthLevel;
  /** The failed run's error code (the app's own code or an AADSTS number), when the run failed. */
  errorCode?: string;
}

export interface AlertsEvent extends EventBase {
  kind: "alerts";
  minSeverity: Severity;
  /** Every new alert at or above `minSeverity` in the run; `alerts` lists at most NOTABLE_LIST_LIMIT of them. */
  total: number;
  alerts: NotableAlert[];
}

export type NotificationEvent = HealthEvent | AlertsEvent;

/** An event before the outbox gives it its id. */
export type NewNotificationEvent = Omit<HealthEvent, "id"> | Omit<AlertsEvent, "id">;

const HEALTH_LEVELS: readonly string[] = ["healthy", "degraded", "reconsent_required"];
const ERROR_CODE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** An error code fit for a message; anything unexpected is reduced to "other". */
export function safeErrorCode(code: string | undefined): string | undefined {
  if (code === undefined || code === "") return undefined;
  return ERROR_CODE.test(code) ? code : "other";
}

/** The Defender portal's page of one alert, in the customer's tenant. */
export function defenderAlertUrl(alertId: string, tenantId: string): string {
  return `https://security.microsoft.com/alerts/${encodeURIComponent(alertId)}?tid=${encodeURIComponent(tenantId)}`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const text = (value: unknown): value is string => typeof value === "string";

function toAlert(value: unknown): NotableAlert | undefined {
  if (!isRecord(value) || !text(value["id"]) || !text(value["title"]) || !text(value["severity"]) || !text(value["lastUpdateTime"])) {
    return undefined;
  }
  const category = value["category"];
  return {
    id: value["id"],
    title: value["title"],
    severity: value["severity"],
    category: text(category) ? category : null,
    lastUpdateTime: value["lastUpdateTime"],
  };
}

/** The kind-specific part of an event as the outbox stores it (its `body` column). */
export function eventBody(event: NewNotificationEvent): Record<string, unknown> {
  if (event.kind === "health") return { from: event.from, to: event.to, ...(event.errorCode ? { errorCode: event.errorCode } : {}) };
  return { minSeverity: event.minSeverity, total: event.total, alerts: event.alerts };
}

/** Rebuilds an event from its stored columns; undefined for a row this version cannot read. */
export function parseEvent(base: EventBase, kind: unknown, body: unknown): NotificationEvent | undefined {
  if (!isRecord(body)) return undefined;
  if (kind === "health") {
    const { from, to, errorCode } = body;
    if (!text(from) || !text(to) || !HEALTH_LEVELS.includes(from) || !HEALTH_LEVELS.includes(to)) return undefined;
    const code = text(errorCode) ? safeErrorCode(errorCode) : undefined;
    return { ...base, kind, from: from as TenantHealthLevel, to: to as TenantHealthLevel, ...(code ? { errorCode: code } : {}) };
  }
  if (kind === "alerts") {
    const minSeverity = SEVERITIES.find((severity) => severity === body["minSeverity"]);
    const total = body["total"];
    const alerts = Array.isArray(body["alerts"]) ? body["alerts"].map(toAlert) : undefined;
    if (!minSeverity || typeof total !== "number" || !alerts || alerts.some((alert) => alert === undefined)) return undefined;
    return { ...base, kind, minSeverity, total, alerts: alerts as NotableAlert[] };
  }
  return undefined;
}
