import { defenderAlertUrl, type NotificationEvent } from "../events";
import type { MessageInput } from "./digest";

/** `source` of every JSON message, so a receiver that serves several senders can route on it. */
export const JSON_SOURCE = "mssp-defender-connector";
/** Raised only by a change a receiver could trip over (a field removed or its meaning changed). */
export const JSON_SCHEMA_VERSION = 1;

/**
 * The `json` format: every event of the batch as it was recorded, oldest first, for automation
 * (a Logic App, a SOAR playbook, a ticketing bridge). docs/notifications.md documents the schema.
 */
export function jsonMessage(input: MessageInput): Record<string, unknown> {
  return {
    source: JSON_SOURCE,
    schemaVersion: JSON_SCHEMA_VERSION,
    sentAt: input.sentAt,
    consoleUrl: input.consoleUrl,
    droppedSinceLastDelivery: input.dropped,
    events: input.events.map(jsonEvent),
  };
}

function jsonEvent(event: NotificationEvent): Record<string, unknown> {
  const { id, kind, at, tenantId, tenantName } = event;
  const base = { id, kind, at, tenantId, tenantName };
  if (event.kind === "health") return { ...base, from: event.from, to: event.to, errorCode: event.errorCode ?? null };
  return {
    ...base,
    minSeverity: event.minSeverity,
    total: event.total,
    alerts: event.alerts.map((alert) => ({ ...alert, url: defenderAlertUrl(alert.id, tenantId) })),
  };
}
