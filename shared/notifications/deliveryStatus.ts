import { statusOf } from "../errors";
import { PARTITIONS, type NotificationTable } from "./table";

/** How the webhook fared, as the last flush left it: read by the health check and the next flush. */
export interface DeliveryStatus {
  /** When a message was last attempted (ISO); absent before the first one. */
  lastAttemptAt?: string;
  lastOutcome?: "delivered" | "failed";
  lastDeliveredAt?: string;
  /** Why the last attempt failed: `webhook_http_<status>`, `webhook_timeout`, `webhook_unreachable`, `webhook_failed`. */
  lastErrorCode?: string;
  /** Events waiting for the next message. */
  pending: number;
  /** Events dropped unsent since the last delivered message; the next message says how many. */
  droppedSinceDelivery: number;
  /** Events dropped unsent, ever. */
  droppedTotal: number;
  consecutiveFailures: number;
}

export const EMPTY_STATUS: DeliveryStatus = { pending: 0, droppedSinceDelivery: 0, droppedTotal: 0, consecutiveFailures: 0 };

const ROW_KEY = "webhook";
const OPTIONAL_TEXT = ["lastAttemptAt", "lastDeliveredAt", "lastErrorCode"] as const;
const COUNTS = ["pending", "droppedSinceDelivery", "droppedTotal", "consecutiveFailures"] as const;

type StatusRow = { partitionKey: string; rowKey: string } & Partial<Record<keyof DeliveryStatus, unknown>>;

function toStatus(row: StatusRow): DeliveryStatus {
  const status: DeliveryStatus = { ...EMPTY_STATUS };
  for (const name of COUNTS) {
    const value = row[name];
    if (typeof value === "number" && Number.isFinite(value)) status[name] = value;
  }
  for (const name of OPTIONAL_TEXT) {
    const value = row[name];
    if (typeof value === "string" && value !== "") status[name] = value;
  }
  if (row.lastOutcome === "delivered" || row.lastOutcome === "failed") status.lastOutcome = row.lastOutcome;
  return status;
}

export class DeliveryStatusStore {
  constructor(private readonly table: NotificationTable) {}

  /** The status, or EMPTY_STATUS before the first flush. */
  async read(signal?: AbortSignal): Promise<DeliveryStatus> {
    const table = await this.table.open();
    try {
      return toStatus(await table.getEntity<StatusRow>(PARTITIONS.status, ROW_KEY, this.table.signal(signal)));
    } catch (error) {
      if (statusOf(error) === 404) return { ...EMPTY_STATUS };
      throw error;
    }
  }

  async write(status: DeliveryStatus): Promise<void> {
    const table = await this.table.open();
    // Empty strings rather than absent columns: a Replace must clear what no longer applies.
    const text = Object.fromEntries(OPTIONAL_TEXT.map((name) => [name, status[name] ?? ""]));
    await table.upsertEntity(
      { partitionKey: PARTITIONS.status, rowKey: ROW_KEY, ...status, ...text, lastOutcome: status.lastOutcome ?? "" },
      "Replace",
      this.table.signal(),
    );
  }
}
