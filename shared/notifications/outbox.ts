import { randomBytes } from "node:crypto";
import { odata, type TableClient, type TransactionAction } from "@azure/data-tables";
import type { Clock } from "../clock";
import { statusOf } from "../errors";
import { eventBody, parseEvent, type NewNotificationEvent, type NotificationEvent } from "./events";
import { PARTITIONS, type NotificationTable } from "./table";

/**
 * The notification outbox: pull observers add events (one cheap Table write, so a webhook that is
 * down can never slow a pull), and the flush reads them once per cycle, sends them as one message
 * and deletes what was sent. Row key = the event's time in 13 digits + a random tail, so the
 * partition lists the oldest first and two events of one millisecond stay apart.
 */

export interface OutboxLimits {
  /** Events in one message at most; more wait for the next cycle's message, oldest first. */
  messageEvents: number;
  /** Events kept at most; beyond, the oldest are dropped (and counted): a receiver down for long cannot grow the table without end. */
  keptEvents: number;
  /** An event not delivered within this long is dropped: by then the news is stale. */
  maxAgeMs: number;
}

export const OUTBOX_LIMITS: OutboxLimits = { messageEvents: 500, keptEvents: 5_000, maxAgeMs: 24 * 3600_000 };

/** Keys read per flush at most; a larger backlog is trimmed over a few cycles. */
const SCAN_LIMIT = 10_000;
/** The stored body stays far below Table Storage's 32K-character property limit. */
const MAX_BODY_CHARS = 16_000;
/** A transaction holds up to 100 operations of one partition. */
const TRANSACTION_SIZE = 100;

/** 13 digits: every millisecond time up to the year 2286, so key order is time order. */
const timeKey = (ms: number): string => String(Math.max(0, Math.floor(ms))).padStart(13, "0");
const timeOfKey = (key: string): number => Number(key.slice(0, 13));

interface EventRow {
  partitionKey: string;
  rowKey: string;
  kind?: unknown;
  at?: unknown;
  tenantId?: unknown;
  tenantName?: unknown;
  body?: unknown;
}

export interface PendingEvents {
  /** What the next message carries, oldest first: at most `messageEvents`, none older than `maxAgeMs`. */
  events: NotificationEvent[];
  /** Row keys to delete unsent: too old, beyond the cap, or unreadable by this version. */
  dropped: string[];
  /** Events kept for a later message (beyond this one's limit). */
  later: number;
}

/** The body as stored: an alert list that would not fit is shortened (the total still counts them all). */
function storedBody(event: NewNotificationEvent): string {
  let body = JSON.stringify(eventBody(event));
  if (event.kind !== "alerts") return body;
  let alerts = event.alerts;
  while (body.length > MAX_BODY_CHARS && alerts.length > 0) {
    alerts = alerts.slice(0, Math.floor(alerts.length / 2));
    body = JSON.stringify(eventBody({ ...event, alerts }));
  }
  return body;
}

function readEvent(row: EventRow): NotificationEvent | undefined {
  if (typeof row.at !== "string" || typeof row.tenantId !== "string" || typeof row.tenantName !== "string" || typeof row.body !== "string") {
    return undefined;
  }
  let body: unknown;
  try {
    body = JSON.parse(row.body);
  } catch {
    return undefined;
  }
  return parseEvent({ id: row.rowKey, at: row.at, tenantId: row.tenantId, tenantName: row.tenantName }, row.kind, body);
}

export class NotificationOutbox {
  constructor(
    private readonly table: NotificationTable,
    private readonly clock: Clock,
    private readonly limits: OutboxLimits = OUTBOX_LIMITS,
  ) {}

  /** Stores one event; returns its id. */
  async add(event: NewNotificationEvent, signal?: AbortSignal): Promise<string> {
    const table = await this.table.open();
    const at = Date.parse(event.at);
    const rowKey = `${timeKey(Number.isFinite(at) ? at : this.clock())}-${randomBytes(6).toString("hex")}`;
    await table.createEntity(
      {
        partitionKey: PARTITIONS.events,
        rowKey,
        kind: event.kind,
        at: event.at,
        tenantId: event.tenantId,
        tenantName: event.tenantName,
        body: storedBody(event),
      },
      this.table.signal(signal),
    );
    return rowKey;
  }

  /**
   * What to send and what to drop. Keys only first (the time is in the key): the expired ones,
   * then the oldest beyond the cap, are dropped; whole rows are read only for the next message.
   */
  async pending(): Promise<PendingEvents> {
    const table = await this.table.open();
    const keys = await this.keys(table);
    const oldestKept = this.clock() - this.limits.maxAgeMs;
    const expired = keys.filter((key) => !(timeOfKey(key) >= oldestKept));
    const fresh = keys.filter((key) => timeOfKey(key) >= oldestKept);
    const overflow = fresh.splice(0, Math.max(0, fresh.length - this.limits.keptEvents));
    const batch = fresh.slice(0, this.limits.messageEvents);
    const dropped = [...expired, ...overflow];
    const events: NotificationEvent[] = [];
    const first = batch[0];
    const last = batch.at(-1);
    if (first !== undefined && last !== undefined) {
      const wanted = new Set(batch);
      for await (const row of table.listEntities<EventRow>({
        queryOptions: { filter: odata`PartitionKey eq ${PARTITIONS.events} and RowKey ge ${first} and RowKey le ${last}` },
        ...this.table.signal(),
      })) {
        // A row added meanwhile inside the range waits for the next message.
        if (!wanted.has(row.rowKey)) continue;
        const event = readEvent(row);
        if (event) events.push(event);
        else dropped.push(row.rowKey);
      }
    }
    return { events, dropped, later: fresh.length - batch.length };
  }

  /** The partition's keys, oldest first, up to SCAN_LIMIT. */
  private async keys(table: TableClient): Promise<string[]> {
    const keys: string[] = [];
    for await (const row of table.listEntities<EventRow>({
      queryOptions: { filter: odata`PartitionKey eq ${PARTITIONS.events}`, select: ["RowKey"] },
      ...this.table.signal(),
    })) {
      keys.push(row.rowKey);
      if (keys.length >= SCAN_LIMIT) break;
    }
    return keys;
  }

  /** Deletes the events (sent or dropped); one already gone is fine. */
  async remove(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    const table = await this.table.open();
    for (let i = 0; i < ids.length; i += TRANSACTION_SIZE) {
      const chunk = ids.slice(i, i + TRANSACTION_SIZE);
      const actions: TransactionAction[] = chunk.map((rowKey) => ["delete", { partitionKey: PARTITIONS.events, rowKey }]);
      try {
        await table.submitTransaction(actions, this.table.signal());
      } catch {
        // A transaction fails as a whole when one row is already gone: delete them one by one.
        for (const rowKey of chunk) {
          try {
            await table.deleteEntity(PARTITIONS.events, rowKey, this.table.signal());
          } catch (error) {
            if (statusOf(error) !== 404) throw error;
          }
        }
      }
    }
  }
}
