import { randomBytes } from "node:crypto";
import { odata } from "@azure/data-tables";
import type { Clock } from "../clock";
import { TABLES } from "../storage/names";
import type { TableFactory } from "../state/tables";

/** Who did it: an operator (Entra user or app, a function key holder), a customer's admin, or the app itself. */
export interface AuditActor {
  kind: string;
  id: string;
  name: string;
}

export const AUDIT_ACTIONS = [
  "tenant_registered",
  "consent_link_issued",
  "reconsent_requested",
  "consent_link_revoked",
  "consent_completed",
  "consenter_changed",
  "source_changed",
  "tenant_offboarded",
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export interface AuditEntry {
  at: string;
  tenantId: string;
  action: AuditAction;
  actor: AuditActor;
  /** A sentence the app wrote (never a value a caller chose beyond names and ids). */
  detail: string;
}

interface AuditEntity {
  partitionKey: string;
  rowKey: string;
  at: string;
  tenantId: string;
  action: string;
  actorKind: string;
  actorId: string;
  actorName: string;
  detail: string;
}

/** How far back a listing looks (months of partitions) before it stops. */
const LOOKBACK_MONTHS = 24;
export const MAX_AUDIT_LIMIT = 500;
/** How far back recordOnce looks for the same entry: far more than one tenant's changes in a retry's time. */
const RECORD_ONCE_LOOKBACK = 100;
/** Larger than any epoch ms until the year 2286: newer entries get smaller row keys and list first. */
const INVERT_BASE = 9_999_999_999_999;

function monthOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 7);
}

/**
 * The operator audit trail: every state change of a tenant with who, what and when. One
 * partition per month, newest first inside it, so the latest entries (of every tenant or of one)
 * are read from the front of the newest partitions without scanning the whole table.
 */
export class AuditTrail {
  constructor(
    private readonly tables: TableFactory,
    private readonly clock: Clock,
  ) {}

  async record(entry: { tenantId: string; action: AuditAction; actor: AuditActor; detail: string }): Promise<AuditEntry> {
    const now = this.clock();
    const entity: AuditEntity = {
      partitionKey: monthOf(now),
      rowKey: `${String(INVERT_BASE - now).padStart(13, "0")}-${randomBytes(6).toString("hex")}`,
      at: new Date(now).toISOString(),
      tenantId: entry.tenantId,
      action: entry.action,
      actorKind: entry.actor.kind.slice(0, 32),
      actorId: entry.actor.id.slice(0, 128),
      actorName: entry.actor.name.slice(0, 128),
      detail: entry.detail.slice(0, 512),
    };
    await (await this.tables.open(TABLES.audit)).createEntity(entity);
    return toEntry(entity);
  }

  /**
   * Records the entry unless the tenant's recent trail already holds the same action and detail:
   * a retried operation whose change landed but whose entry did not gets it now, and a repeat
   * does not count twice. `detail` must therefore name what makes the change unique (a link id,
   * the registration time).
   */
  async recordOnce(entry: { tenantId: string; action: AuditAction; actor: AuditActor; detail: string }): Promise<void> {
    const recent = await this.list({ tenantId: entry.tenantId, limit: RECORD_ONCE_LOOKBACK });
    if (recent.some((existing) => existing.action === entry.action && existing.detail === entry.detail.slice(0, 512))) return;
    await this.record(entry);
  }

  /** The newest `limit` entries, of one tenant when `tenantId` is given. */
  async list(options: { tenantId?: string; limit: number }): Promise<AuditEntry[]> {
    const table = await this.tables.open(TABLES.audit);
    const entries: AuditEntry[] = [];
    const now = new Date(this.clock());
    for (let back = 0; back < LOOKBACK_MONTHS && entries.length < options.limit; back++) {
      const month = monthOf(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - back, 1));
      const filter = options.tenantId
        ? odata`PartitionKey eq ${month} and tenantId eq ${options.tenantId}`
        : odata`PartitionKey eq ${month}`;
      for await (const entity of table.listEntities<AuditEntity>({ queryOptions: { filter } })) {
        entries.push(toEntry(entity));
        if (entries.length >= options.limit) break;
      }
    }
    return entries;
  }
}

function toEntry(entity: AuditEntity): AuditEntry {
  return {
    at: entity.at,
    tenantId: entity.tenantId,
    action: entity.action as AuditAction,
    actor: { kind: entity.actorKind, id: entity.actorId, name: entity.actorName },
    detail: entity.detail,
  };
}
