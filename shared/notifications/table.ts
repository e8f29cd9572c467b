import type { TableClient } from "@azure/data-tables";
import type { TableFactory } from "../state/tables";
import { TABLES } from "../storage/names";
import { timeoutSignal } from "../time/timeoutSignal";

/**
 * `MsspNotifications` holds three kinds of rows, one partition each: the outbox's events, the
 * health level last notified per tenant, and the webhook's delivery status.
 */
export const PARTITIONS = { events: "event", health: "health", status: "status" } as const;

/** Opens the table and bounds each call, like every other Table call of the app. */
export class NotificationTable {
  constructor(
    private readonly deps: {
      tables: TableFactory;
      /** How long one Table call may take before it is abandoned. */
      timeoutMs: number;
    },
  ) {}

  open(): Promise<TableClient> {
    return this.deps.tables.open(TABLES.notifications);
  }

  /** The call's abort signal: its own timeout, or the caller's signal if that fires first. */
  signal(outer?: AbortSignal): { abortSignal: AbortSignal } {
    return { abortSignal: timeoutSignal(this.deps.timeoutMs, outer) };
  }
}
