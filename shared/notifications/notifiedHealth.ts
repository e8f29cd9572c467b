import { statusOf } from "../errors";
import type { TenantHealthLevel } from "../pull/observer";
import { PARTITIONS, type NotificationTable } from "./table";

const LEVELS: readonly string[] = ["healthy", "degraded", "reconsent_required"];

interface LevelRow {
  partitionKey: string;
  rowKey: string;
  level?: unknown;
}

/**
 * The health level last notified per tenant. A change is announced against this, not against
 * the level the run started from: after a re-consent the tenant's pull state may still count the
 * failures from before it, so "re-consent required → healthy" would otherwise never be said.
 */
export class NotifiedHealthStore {
  constructor(private readonly table: NotificationTable) {}

  async get(tenantId: string, signal?: AbortSignal): Promise<TenantHealthLevel | undefined> {
    const table = await this.table.open();
    try {
      const row = await table.getEntity<LevelRow>(PARTITIONS.health, tenantId, this.table.signal(signal));
      return typeof row.level === "string" && LEVELS.includes(row.level) ? (row.level as TenantHealthLevel) : undefined;
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  async set(tenantId: string, level: TenantHealthLevel, signal?: AbortSignal): Promise<void> {
    const table = await this.table.open();
    await table.upsertEntity({ partitionKey: PARTITIONS.health, rowKey: tenantId, level }, "Replace", this.table.signal(signal));
  }
}
