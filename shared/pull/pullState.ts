import { odata } from "@azure/data-tables";
import { TABLES } from "../storage/names";
import type { Clock } from "../clock";
import { isConcurrencyConflict, type TableFactory } from "../state/tables";

/**
 * Per-tenant pull state in Table Storage: checkpoint, the in-progress window, the versions
 * already delivered near the checkpoint, the pull lease, the encrypted access-token cache and
 * health. One entity per tenant so that one ETag guards all of it.
 */
export interface PullState {
  /** Every alert with lastUpdateTime below this was delivered (the end of the last finished window). */
  watermark?: string;
  /** A window being paged through; resumed at windowSkip after a crash or deadline. */
  window?: { from: string; to: string; skip: number };
  /** Hashes of alert versions delivered with lastUpdateTime ≥ watermark − overlap. */
  delivered: DeliveredVersions;
  accessTokenCipher?: string;
  accessTokenExpiresAt?: number;
  refreshTokenObtainedAt?: number;
  apiCalls: number[];
  lastRunAt?: string;
  lastSuccessAt?: string;
  lastAlertCount?: number;
  consecutiveFailures: number;
  lastErrorCode?: string;
  lastErrorMessage?: string;
}

/** Version hash → the version's lastUpdateTime in epoch seconds (kept for pruning). */
export type DeliveredVersions = Map<string, number>;

interface PullStateEntity {
  partitionKey: string;
  rowKey: string;
  watermark?: string;
  windowFrom?: string;
  windowTo?: string;
  windowSkip?: number;
  delivered?: string;
  accessTokenCipher?: string;
  accessTokenExpiresAt?: number;
  refreshTokenObtainedAt?: number;
  apiCalls?: string;
  lastRunAt?: string;
  lastSuccessAt?: string;
  lastAlertCount?: number;
  consecutiveFailures?: number;
  lastErrorCode?: string;
  lastErrorMessage?: string;
  leaseOwner?: string;
  leaseUntil?: number;
}

const PARTITION = "pull";
// A Table string property holds 32K UTF-16 characters; each delivered entry is ~24 of them.
const MAX_DELIVERED_CHARS = 30_000;
// 15 properties × 60 KB stays under the 1 MiB entity limit with room for the rest.
const EXTRA_DELIVERED_PROPERTIES = 14;

function encodeDelivered(delivered: DeliveredVersions): Record<string, string> {
  const chunks: string[] = [];
  let current = "";
  // Newest first: if a burst ever exceeds what one entity holds, the oldest versions are the
  // ones dropped, which can only cause a re-delivery, never a loss.
  const newestFirst = [...delivered].sort((a, b) => b[1] - a[1]);
  for (const [hash, at] of newestFirst) {
    const entry = `${hash}:${at.toString(36)};`;
    if (current.length + entry.length > MAX_DELIVERED_CHARS) {
      chunks.push(current);
      current = "";
    }
    current += entry;
  }
  if (current) chunks.push(current);
  chunks.length = Math.min(chunks.length, EXTRA_DELIVERED_PROPERTIES + 1);
  const properties: Record<string, string> = { delivered: chunks[0] ?? "" };
  for (let i = 1; i <= EXTRA_DELIVERED_PROPERTIES; i++) properties[`delivered${i}`] = chunks[i] ?? "";
  return properties;
}

function decodeDelivered(entity: Record<string, unknown>): DeliveredVersions {
  const delivered: DeliveredVersions = new Map();
  for (let i = 0; i <= EXTRA_DELIVERED_PROPERTIES; i++) {
    const chunk = entity[i === 0 ? "delivered" : `delivered${i}`];
    if (typeof chunk !== "string" || !chunk) continue;
    for (const entry of chunk.split(";")) {
      const sep = entry.indexOf(":");
      if (sep > 0) delivered.set(entry.slice(0, sep), parseInt(entry.slice(sep + 1), 36));
    }
  }
  return delivered;
}

function fromEntity(entity: PullStateEntity & Record<string, unknown>): PullState {
  const state: PullState = {
    delivered: decodeDelivered(entity),
    apiCalls: entity.apiCalls ? entity.apiCalls.split(",").map(Number).filter(Number.isFinite) : [],
    consecutiveFailures: entity.consecutiveFailures ?? 0,
  };
  const set = <K extends keyof PullState>(key: K, value: PullState[K] | "" | undefined) => {
    if (value !== undefined && value !== "") state[key] = value as PullState[K];
  };
  set("watermark", entity.watermark);
  if (entity.windowFrom && entity.windowTo) {
    state.window = { from: entity.windowFrom, to: entity.windowTo, skip: entity.windowSkip ?? 0 };
  }
  set("accessTokenCipher", entity.accessTokenCipher);
  if (entity.accessTokenExpiresAt) state.accessTokenExpiresAt = entity.accessTokenExpiresAt;
  if (entity.refreshTokenObtainedAt) state.refreshTokenObtainedAt = entity.refreshTokenObtainedAt;
  set("lastRunAt", entity.lastRunAt);
  set("lastSuccessAt", entity.lastSuccessAt);
  if (typeof entity.lastAlertCount === "number") state.lastAlertCount = entity.lastAlertCount;
  set("lastErrorCode", entity.lastErrorCode);
  set("lastErrorMessage", entity.lastErrorMessage);
  return state;
}

function toEntity(tenantId: string, state: PullState, lease: { owner: string; until: number }): PullStateEntity & Record<string, unknown> {
  return {
    partitionKey: PARTITION,
    rowKey: tenantId,
    watermark: state.watermark ?? "",
    windowFrom: state.window?.from ?? "",
    windowTo: state.window?.to ?? "",
    windowSkip: state.window?.skip ?? 0,
    ...encodeDelivered(state.delivered),
    accessTokenCipher: state.accessTokenCipher ?? "",
    accessTokenExpiresAt: state.accessTokenExpiresAt ?? 0,
    refreshTokenObtainedAt: state.refreshTokenObtainedAt ?? 0,
    apiCalls: state.apiCalls.join(","),
    lastRunAt: state.lastRunAt ?? "",
    lastSuccessAt: state.lastSuccessAt ?? "",
    lastAlertCount: state.lastAlertCount ?? 0,
    consecutiveFailures: state.consecutiveFailures,
    lastErrorCode: state.lastErrorCode ?? "",
    lastErrorMessage: state.lastErrorMessage ?? "",
    leaseOwner: lease.owner,
    leaseUntil: lease.until,
  };
}

/** Thrown when another writer changed the entity: this pull has lost its lease and must stop. */
export class LeaseLostError extends Error {
  constructor() {
    super("pull lease lost to another instance");
    this.name = "LeaseLostError";
  }
}

/**
 * A held pull lease. Every save is conditioned on the ETag of the previous one, so two pulls of
 * one tenant can never both write: the second to arrive fails and stops.
 */
export class PullLease {
  constructor(
    private readonly store: PullStateStore,
    readonly tenantId: string,
    readonly owner: string,
    private etag: string,
    private until: number,
    public state: PullState,
  ) {}

  async save(extendUntil?: number): Promise<void> {
    if (extendUntil !== undefined) this.until = extendUntil;
    this.etag = await this.store.write(this.tenantId, this.state, { owner: this.owner, until: this.until }, this.etag);
  }

  async release(): Promise<void> {
    this.until = 0;
    this.etag = await this.store.write(this.tenantId, this.state, { owner: "", until: 0 }, this.etag);
  }
}

export class PullStateStore {
  constructor(
    private readonly tables: TableFactory,
    private readonly clock: Clock,
  ) {}

  private table() {
    return this.tables.open(TABLES.pullState);
  }

  /** Takes the tenant's lease, or returns undefined if another pull holds an unexpired one. */
  async acquire(tenantId: string, owner: string, until: number): Promise<PullLease | undefined> {
    const table = await this.table();
    let entity: (PullStateEntity & Record<string, unknown> & { etag: string }) | undefined;
    try {
      entity = await table.getEntity<PullStateEntity & Record<string, unknown>>(PARTITION, tenantId);
    } catch (error) {
      if ((error as { statusCode?: unknown }).statusCode !== 404) throw error;
    }
    const state: PullState = entity ? fromEntity(entity) : { delivered: new Map(), apiCalls: [], consecutiveFailures: 0 };
    if (entity && entity.leaseOwner && (entity.leaseUntil ?? 0) > this.clock() && entity.leaseOwner !== owner) return undefined;
    try {
      let etag: string;
      if (entity) {
        etag = (await table.updateEntity(toEntity(tenantId, state, { owner, until }), "Replace", { etag: entity.etag })).etag ?? "";
      } else {
        etag = (await table.createEntity(toEntity(tenantId, state, { owner, until }))).etag ?? "";
      }
      return new PullLease(this, tenantId, owner, etag, until, state);
    } catch (error) {
      const status = (error as { statusCode?: unknown }).statusCode;
      if (isConcurrencyConflict(error) || status === 409) return undefined;
      throw error;
    }
  }

  /** @internal used by PullLease */
  async write(tenantId: string, state: PullState, lease: { owner: string; until: number }, etag: string): Promise<string> {
    const table = await this.table();
    try {
      const result = await table.updateEntity(toEntity(tenantId, state, lease), "Replace", { etag });
      return result.etag ?? "";
    } catch (error) {
      if (isConcurrencyConflict(error)) throw new LeaseLostError();
      throw error;
    }
  }

  /** Health for the operator API: everything except secrets and the dedupe set. */
  async readAll(): Promise<Map<string, PullState>> {
    const table = await this.table();
    const states = new Map<string, PullState>();
    for await (const entity of table.listEntities<PullStateEntity & Record<string, unknown>>({
      queryOptions: { filter: odata`PartitionKey eq ${PARTITION}` },
    })) {
      if (entity.rowKey) states.set(entity.rowKey, fromEntity(entity));
    }
    return states;
  }

  /** Records a failure that happened outside a held lease (e.g. a poison message). */
  async recordFailure(tenantId: string, code: string, message: string): Promise<void> {
    const table = await this.table();
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const entity = await table.getEntity<PullStateEntity & Record<string, unknown>>(PARTITION, tenantId);
        await table.updateEntity(
          {
            partitionKey: PARTITION,
            rowKey: tenantId,
            lastErrorCode: code,
            lastErrorMessage: message,
            consecutiveFailures: (entity.consecutiveFailures ?? 0) + 1,
            lastRunAt: new Date(this.clock()).toISOString(),
          },
          "Merge",
          { etag: entity.etag },
        );
        return;
      } catch (error) {
        const status = (error as { statusCode?: unknown }).statusCode;
        if (status === 404) {
          await table
            .createEntity({ partitionKey: PARTITION, rowKey: tenantId, lastErrorCode: code, lastErrorMessage: message, consecutiveFailures: 1 })
            .catch(() => undefined);
          return;
        }
        if (!isConcurrencyConflict(error)) throw error;
      }
    }
  }
}
