import type { Clock } from "../clock";
import type { NotificationSettings } from "../config";
import type { HttpClient } from "../http/httpClient";
import type { TableFactory } from "../state/tables";
import { DeliveryStatusStore } from "./deliveryStatus";
import { NotificationFlush } from "./flush";
import { NotifiedHealthStore } from "./notifiedHealth";
import { NotificationObserver } from "./observer";
import { NotificationOutbox } from "./outbox";
import { WebhookSender } from "./sender";
import { NotificationTable } from "./table";

/** What the app wires when NOTIFY_WEBHOOK_URL is set (docs/notifications.md). */
export interface Notifications {
  /** Joins the pull observers: writes events, never calls the webhook. */
  observer: NotificationObserver;
  /** Run once per cycle by the pull timer. */
  flush: NotificationFlush;
  /** For the health check. */
  status: DeliveryStatusStore;
}

export function createNotifications(deps: {
  settings: NotificationSettings;
  tables: TableFactory;
  http: HttpClient;
  clock: Clock;
  sleep: (ms: number) => Promise<void>;
  storageTimeoutMs: number;
  /** MSSP_PUBLIC_BASE_URL: messages link to the operator console. */
  publicBaseUrl: string;
}): Notifications {
  const table = new NotificationTable({ tables: deps.tables, timeoutMs: deps.storageTimeoutMs });
  const outbox = new NotificationOutbox(table, deps.clock);
  const status = new DeliveryStatusStore(table);
  const { settings } = deps;
  return {
    observer: new NotificationObserver({ outbox, notified: new NotifiedHealthStore(table), minSeverity: settings.minSeverity, clock: deps.clock }),
    flush: new NotificationFlush({
      outbox,
      status,
      sender: new WebhookSender({ http: deps.http, url: settings.webhookUrl, sleep: deps.sleep }),
      format: settings.format,
      consoleUrl: `${deps.publicBaseUrl}/api/console`,
      clock: deps.clock,
    }),
    status,
  };
}
