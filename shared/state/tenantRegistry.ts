import { odata, type TableEntityResult } from "@azure/data-tables";
import { TABLES } from "../storage/names";
import type { Clock } from "../clock";
import { isConsentModel, type ConsentModel } from "../consent/consentModel";
import { isAlertSource, type AlertSourceKind } from "../sources/alertSources";
import { isConcurrencyConflict, type TableFactory } from "./tables";

export const TENANT_STATUSES = ["pending_consent", "connected", "reconsent_required", "offboarded"] as const;
export type TenantStatus = (typeof TENANT_STATUSES)[number];

export const DEFENDER_REGIONS = ["us", "eu", "uk", "au", "swa", "ina"] as const;
export type DefenderRegion = (typeof DEFENDER_REGIONS)[number];

/** One customer tenant. Holds no secret: tokens live in Key Vault only. */
export interface TenantRecord {
  tenantId: string;
  displayName: string;
  status: TenantStatus;
  defenderRegion?: DefenderRegion;
  /** Where its alerts are read; absent on records written before sources existed (= "mde"). */
  source?: AlertSourceKind;
  /** How the tenant grants access; absent on records written before consent models existed (= "delegated"). */
  consentModel?: ConsentModel;
  consentedBy?: string;
  /** The consenting user's object id: a re-consent by someone else is flagged. */
  consentedByObjectId?: string;
  consentedAt?: string;
  /** Set when a re-consent was given by a different user than the one before. */
  previousConsentedBy?: string;
  consenterChangedAt?: string;
  lastErrorCode?: string;
  lastErrorMessage?: string;
  lastErrorAt?: string;
  createdAt: string;
  updatedAt: string;
}

export type TenantChanges = Partial<Omit<TenantRecord, "tenantId" | "createdAt" | "updatedAt">>;

interface TenantEntity {
  partitionKey: string;
  rowKey: string;
  displayName: string;
  status: string;
  defenderRegion?: string;
  source?: string;
  consentModel?: string;
  consentedBy?: string;
  consentedByObjectId?: string;
  consentedAt?: string;
  previousConsentedBy?: string;
  consenterChangedAt?: string;
  lastErrorCode?: string;
  lastErrorMessage?: string;
  lastErrorAt?: string;
  createdAt: string;
  updatedAt: string;
}

const PARTITION = "tenant";
const OPTIONAL_FIELDS = [
  "defenderRegion",
  "source",
  "consentModel",
  "consentedBy",
  "consentedByObjectId",
  "consentedAt",
  "previousConsentedBy",
  "consenterChangedAt",
  "lastErrorCode",
  "lastErrorMessage",
  "lastErrorAt",
] as const;

export class TenantAlreadyExistsError extends Error {
  constructor() {
    super("tenant already registered");
    this.name = "TenantAlreadyExistsError";
  }
}

export class TenantNotFoundError extends Error {
  constructor() {
    super("tenant not registered");
    this.name = "TenantNotFoundError";
  }
}

function toRecord(entity: TableEntityResult<TenantEntity>): TenantRecord {
  const record: TenantRecord = {
    // Stryker disable next-line StringLiteral: the SDK returns every entity with its row key; the fallback only satisfies the type
    tenantId: entity.rowKey ?? "",
    displayName: entity.displayName,
    status: (TENANT_STATUSES as readonly string[]).includes(entity.status) ? (entity.status as TenantStatus) : "pending_consent",
    createdAt: entity.createdAt,
    updatedAt: entity.updatedAt,
  };
  for (const field of OPTIONAL_FIELDS) {
    const value = entity[field];
    // An empty string is how a cleared field is stored (Merge cannot remove a property).
    if (typeof value === "string" && value !== "") (record as unknown as Record<string, string>)[field] = value;
  }
  // A value this version does not know is not guessed at: the tenant reads as the original source.
  if (record.source !== undefined && !isAlertSource(record.source)) delete record.source;
  // Likewise an unknown model reads as the original one.
  if (record.consentModel !== undefined && !isConsentModel(record.consentModel)) delete record.consentModel;
  return record;
}

function toEntity(record: TenantRecord): TenantEntity {
  const entity: TenantEntity = {
    partitionKey: PARTITION,
    rowKey: record.tenantId,
    displayName: record.displayName,
    status: record.status,
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
  };
  for (const field of OPTIONAL_FIELDS) entity[field] = record[field] ?? "";
  return entity;
}

/** The tenant table. Every change is a read-modify-write guarded by the entity's ETag. */
export class TenantRegistry {
  private snapshot: { at: number; records: Map<string, TenantRecord> } | undefined;
  private loading: Promise<Map<string, TenantRecord>> | undefined;

  constructor(
    private readonly tables: TableFactory,
    private readonly clock: Clock,
  ) {}

  /**
   * A tenant as of at most `maxAgeMs` ago, for the pull's hot path: one query of the whole
   * registry per interval instead of a point read per pull. A stale answer is harmless there
   * (a pull of a tenant offboarded seconds ago finds no token and changes nothing); a tenant
   * missing from the snapshot is read directly.
   */
  async getRecent(tenantId: string, maxAgeMs: number): Promise<TenantRecord | undefined> {
    const now = this.clock();
    if (!this.snapshot || now - this.snapshot.at > maxAgeMs) {
      this.loading ??= this.list()
        .then((records) => new Map(records.map((record) => [record.tenantId, record])))
        .finally(() => {
          this.loading = undefined;
        });
      this.snapshot = { at: now, records: await this.loading };
    }
    return this.snapshot.records.get(tenantId) ?? (await this.get(tenantId));
  }

  private table() {
    return this.tables.open(TABLES.tenants);
  }

  private async read(tenantId: string, signal?: AbortSignal): Promise<{ record: TenantRecord; etag: string } | undefined> {
    const table = await this.table();
    try {
      const entity = await table.getEntity<TenantEntity>(PARTITION, tenantId, signal ? { abortSignal: signal } : {});
      return { record: toRecord(entity), etag: entity.etag };
    } catch (error) {
      if ((error as { statusCode?: unknown }).statusCode === 404) return undefined;
      throw error;
    }
  }

  /** `signal` lets a pull bound the read by its own remaining time. */
  async get(tenantId: string, options?: { signal?: AbortSignal }): Promise<TenantRecord | undefined> {
    return (await this.read(tenantId, options?.signal))?.record;
  }

  async list(status?: TenantStatus): Promise<TenantRecord[]> {
    const table = await this.table();
    const filter = status
      ? odata`PartitionKey eq ${PARTITION} and status eq ${status}`
      : odata`PartitionKey eq ${PARTITION}`;
    const records: TenantRecord[] = [];
    for await (const entity of table.listEntities<TenantEntity>({ queryOptions: { filter } })) {
      records.push(toRecord(entity));
    }
    return records;
  }

  /**
   * Registers a tenant. An offboarded tenant may be registered again; any other existing
   * tenant is a conflict.
   */
  async create(input: {
    tenantId: string;
    displayName: string;
    defenderRegion?: DefenderRegion;
    source?: AlertSourceKind;
    consentModel?: ConsentModel;
  }): Promise<TenantRecord> {
    const now = new Date(this.clock()).toISOString();
    const record: TenantRecord = {
      tenantId: input.tenantId,
      displayName: input.displayName,
      status: "pending_consent",
      ...(input.defenderRegion ? { defenderRegion: input.defenderRegion } : {}),
      ...(input.source ? { source: input.source } : {}),
      ...(input.consentModel ? { consentModel: input.consentModel } : {}),
      createdAt: now,
      updatedAt: now,
    };
    const table = await this.table();
    try {
      await table.createEntity(toEntity(record));
      return record;
    } catch (error) {
      if ((error as { statusCode?: unknown }).statusCode !== 409) throw error;
    }
    const existing = await this.read(input.tenantId);
    if (!existing || existing.record.status !== "offboarded") throw new TenantAlreadyExistsError();
    try {
      await table.updateEntity(toEntity(record), "Replace", { etag: existing.etag });
    } catch (error) {
      if (isConcurrencyConflict(error)) throw new TenantAlreadyExistsError();
      throw error;
    }
    return record;
  }

  /**
   * Applies `change` to the current record and writes it back only if nobody wrote in between;
   * on a lost race it re-reads and re-applies, so a decision is always made on fresh state.
   * `change` returns undefined to leave the record as it is.
   */
  async update(tenantId: string, change: (current: TenantRecord) => TenantChanges | undefined): Promise<TenantRecord> {
    const table = await this.table();
    for (let attempt = 0; ; attempt++) {
      const current = await this.read(tenantId);
      if (!current) throw new TenantNotFoundError();
      const changes = change(current.record);
      if (!changes) return current.record;
      const next: TenantRecord = {
        ...current.record,
        ...changes,
        tenantId,
        updatedAt: new Date(this.clock()).toISOString(),
      };
      try {
        await table.updateEntity(toEntity(next), "Replace", { etag: current.etag });
        return next;
      } catch (error) {
        if (!isConcurrencyConflict(error) || attempt >= 4) throw error;
      }
    }
  }
}
