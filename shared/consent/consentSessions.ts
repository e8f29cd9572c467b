import { createHash, createHmac, randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { odata, type TableClient, type TransactionAction } from "@azure/data-tables";
import { TABLES } from "../storage/names";
import type { Clock } from "../clock";
import { isConcurrencyConflict, type TableFactory } from "../state/tables";

export const SESSION_LIFETIME_MS = 15 * 60_000;
/** Open sign-ins one tenant may have at once: far above any real admin, small enough that a flood stays a few rows. */
export const DEFAULT_MAX_OPEN_PER_TENANT = 30;
/** Open sign-ins one consent link may have at once: one forwarded or leaked link cannot use up the tenant's share. */
export const DEFAULT_MAX_OPEN_PER_LINK = 10;
/**
 * How long an expired session is kept before the purge deletes it: a callback arriving late still
 * gets "took too long, open your link again" rather than "not valid, ask for a new link".
 */
export const PURGE_GRACE_MS = 60 * 60_000;
/** Per purge run: enough for far more than the caps let anyone create between two runs. */
export const DEFAULT_PURGE_MAX_DELETES = 5_000;
/** Per purge run, well inside the host's function timeout; the rest waits for the next run. */
export const DEFAULT_PURGE_MAX_MILLIS = 120_000;
/** Link id of sessions begun without one (the callers that predate link records). */
export const LEGACY_LINK_ID = "legacy";

/** Sessions begun before they were spread over partitions; still read by claim and emptied by the purge. */
const LEGACY_PARTITION = "session";
/**
 * 16 partitions, named by the first hex digit of the row's key hash: random state spreads evenly, a
 * point read finds any row from its key alone, and the purge can walk a short fixed list.
 */
const SESSION_PARTITIONS: readonly string[] = Array.from({ length: 16 }, (_, i) => `s${i.toString(16)}`);
/** The order the purge walks; its cursor is an index into this list. */
export const PURGE_PARTITIONS: readonly string[] = [LEGACY_PARTITION, ...SESSION_PARTITIONS];
/** Outside every purged partition, so the purge never deletes its own cursor. */
const CURSOR_PARTITION = "housekeeping";
const CURSOR_ROW = "purgeCursor";
/** Table transactions take at most 100 operations, all in one partition. */
const TRANSACTION_LIMIT = 100;
/** Tries of the tenant's limit row under concurrent starts before refusing (see reserve). */
const RESERVE_ATTEMPTS = 8;

const STATE_FORMAT = /^[A-Za-z0-9_-]{43}$/;
const LINK_ID_FORMAT = /^[A-Za-z0-9_-]{1,64}$/;
/** Characters a Table key may hold; tenant ids are GUIDs, this only keeps a bad caller out of the key space. */
const TENANT_ID_FORMAT = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * The server-side half of one sign-in attempt. The table holds only a hash of `state`, the
 * tenant, the link id and the times: the PKCE verifier and nonce are derived from `state` with
 * the signing key, so reading the table gives an attacker nothing to redeem a stolen code with.
 */
export interface ConsentSession {
  state: string;
  tenantId: string;
  /** The consent link the sign-in was started from. */
  linkId: string;
  codeVerifier: string;
  codeChallenge: string;
  nonce: string;
}

export type SessionClaim =
  | { outcome: "claimed"; session: ConsentSession }
  | { outcome: "unknown" | "expired" | "replayed" };

/** A start refused because the tenant or the link already has its share of open sign-ins. */
export class ConsentSessionLimitError extends Error {
  constructor(
    readonly scope: "tenant" | "link",
    /** When the earliest of the open sessions that count against the limit expires. */
    readonly retryAfterSeconds: number,
  ) {
    super(`too many open consent sessions for this ${scope}; retry in ${retryAfterSeconds} s`);
    this.name = "ConsentSessionLimitError";
  }
}

export interface ConsentSessionLimits {
  maxOpenPerTenant?: number;
  maxOpenPerLink?: number;
}

export interface PurgeOptions {
  /** Rows deleted per run at most (sessions and limit rows together). */
  maxDeletes?: number;
  /** Wall time per run at most; checked before each page. */
  maxMillis?: number;
}

export interface PurgeReport {
  deletedSessions: number;
  deletedLimitRows: number;
  /** Table transactions submitted (each up to 100 deletes in one partition). */
  transactions: number;
  partitionsVisited: number;
  /** False when the run stopped at its bound; the next run resumes at `nextPartition`. */
  complete: boolean;
  nextPartition: string;
}

interface SessionEntity {
  partitionKey: string;
  rowKey: string;
  kind: "session";
  tenantId: string;
  linkId: string;
  createdAt: string;
  expiresAt: string;
  usedAt: string;
}

/** One open session as the tenant's limit row counts it: state hash, link id, expiry (epoch ms). */
interface OpenEntry {
  h: string;
  l: string;
  e: number;
}

interface LimitEntity {
  partitionKey: string;
  rowKey: string;
  kind: "limit";
  tenantId: string;
  /** JSON array of OpenEntry: the tenant's open sessions, at most the tenant cap of them. */
  open: string;
  /** The latest expiry ever recorded here; the purge removes the row once that has passed. */
  expiresAt: string;
}

interface PurgeRow {
  partitionKey?: string;
  rowKey?: string;
  kind?: string;
  etag?: string;
}

const hashState = (state: string): string => createHash("sha256").update(state).digest("hex");
const hexPartition = (hash: string): string => `s${hash[0] ?? "0"}`;
/** The partition a session lives in, from its state hash (the row key). */
export const sessionPartition = (stateHash: string): string => hexPartition(stateHash);
const limitKey = (tenantId: string) => ({
  partitionKey: hexPartition(createHash("sha256").update(tenantId).digest("hex")),
  rowKey: `limit_${tenantId}`,
});
const statusOf = (error: unknown): unknown => (error as { statusCode?: unknown } | null)?.statusCode;

function derive(key: Buffer, state: string, tenantId: string, linkId: string): ConsentSession {
  const mac = (label: string) => createHmac("sha256", key).update(`${label}:${state}`).digest("base64url");
  const codeVerifier = mac("pkce-verifier");
  return {
    state,
    tenantId,
    linkId,
    codeVerifier,
    codeChallenge: createHash("sha256").update(codeVerifier).digest("base64url"),
    nonce: mac("oidc-nonce"),
  };
}

/** Entries that are well formed; a row edited by hand cannot break starts, only lose its count. */
function parseOpen(text: string | undefined): OpenEntry[] {
  if (!text) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return [];
  }
  if (!Array.isArray(parsed)) return [];
  return parsed.filter(
    (entry: unknown): entry is OpenEntry =>
      typeof entry === "object" &&
      entry !== null &&
      typeof (entry as OpenEntry).h === "string" &&
      typeof (entry as OpenEntry).l === "string" &&
      typeof (entry as OpenEntry).e === "number",
  );
}

const retryAfter = (entries: readonly OpenEntry[], now: number): number =>
  Math.max(1, Math.ceil((Math.min(...entries.map((entry) => entry.e)) - now) / 1000));

// Stryker disable next-line ArithmeticOperator: the length of the pause only spreads retries in time; no outcome depends on it
const jitter = (attempt: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.random() * 20 * attempt));

/**
 * Counting open sessions: one limit row per tenant, holding the tenant's open sessions (hash,
 * link, expiry), read and rewritten under its ETag. A query counting session rows instead would
 * be race-prone exactly when it matters: a burst of concurrent starts all count the same number
 * and all insert. Under the ETag only one writer per version wins and the others re-read, so the
 * caps hold exactly under a burst, and once the row is full a start costs one point read and no
 * write. The row is rewritten (expired entries dropped) on every start and trimmed on every claim,
 * so it never grows past the tenant cap, and the only failure mode is conservative: a session whose
 * claim could not trim the row keeps counting until it expires.
 */
export class ConsentSessionStore {
  private readonly maxOpenPerTenant: number;
  private readonly maxOpenPerLink: number;

  constructor(
    private readonly tables: TableFactory,
    private readonly clock: Clock,
    limits: ConsentSessionLimits = {},
  ) {
    this.maxOpenPerTenant = limits.maxOpenPerTenant ?? DEFAULT_MAX_OPEN_PER_TENANT;
    this.maxOpenPerLink = limits.maxOpenPerLink ?? DEFAULT_MAX_OPEN_PER_LINK;
  }

  /**
   * Starts a sign-in for `tenantId` from the consent link `linkId`. Throws ConsentSessionLimitError
   * when the tenant already has its cap of open (unexpired, unclaimed) sessions, or the link its own.
   */
  async begin(key: Buffer, tenantId: string, linkId: string = LEGACY_LINK_ID): Promise<ConsentSession> {
    if (!LINK_ID_FORMAT.test(linkId)) throw new Error("consent link id must be 1-64 characters of A-Z a-z 0-9 _ -");
    if (!TENANT_ID_FORMAT.test(tenantId)) throw new Error("tenant id is not usable as a table key");
    const state = randomBytes(32).toString("base64url");
    const stateHash = hashState(state);
    const now = this.clock();
    const expiresAt = now + SESSION_LIFETIME_MS;
    const table = await this.tables.open(TABLES.consentSessions);
    // Capacity first: a session row written before its reservation could outlive a refusal.
    await this.reserve(table, tenantId, { h: stateHash, l: linkId, e: expiresAt }, now);
    const entity: SessionEntity = {
      partitionKey: sessionPartition(stateHash),
      rowKey: stateHash,
      kind: "session",
      tenantId,
      linkId,
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(expiresAt).toISOString(),
      usedAt: "",
    };
    await table.createEntity(entity);
    return derive(key, state, tenantId, linkId);
  }

  /** Marks the session used (exactly once, even under concurrent callbacks) and returns it. */
  async claim(key: Buffer, state: string): Promise<SessionClaim> {
    if (!STATE_FORMAT.test(state)) return { outcome: "unknown" };
    const table = await this.tables.open(TABLES.consentSessions);
    const stateHash = hashState(state);
    const entity =
      (await this.read<SessionEntity>(table, sessionPartition(stateHash), stateHash)) ??
      // A sign-in begun by the previous release, minutes before a deployment, still completes.
      (await this.read<SessionEntity>(table, LEGACY_PARTITION, stateHash));
    if (!entity) return { outcome: "unknown" };
    if (entity.usedAt) return { outcome: "replayed" };
    const now = this.clock();
    if (Date.parse(entity.expiresAt) <= now) return { outcome: "expired" };
    try {
      await table.updateEntity(
        { partitionKey: entity.partitionKey, rowKey: entity.rowKey, usedAt: new Date(now).toISOString() },
        "Merge",
        { etag: entity.etag },
      );
    } catch (error) {
      if (isConcurrencyConflict(error)) return { outcome: "replayed" };
      throw error;
    }
    // The sign-in is claimed whatever happens to the count: a row that cannot be trimmed now only
    // keeps the session counted until it expires, never refuses this admin.
    await this.release(table, entity.tenantId, stateHash).catch(() => undefined);
    return { outcome: "claimed", session: derive(key, state, entity.tenantId, entity.linkId || LEGACY_LINK_ID) };
  }

  /**
   * Deletes sessions and limit rows expired longer than PURGE_GRACE_MS: partition by partition, in
   * transactions of up to 100 deletes, until the run's bound. The run starts at the partition the
   * last one stopped in, so a partition that keeps refilling cannot starve the others.
   */
  async purge(options: PurgeOptions = {}): Promise<PurgeReport> {
    const maxDeletes = options.maxDeletes ?? DEFAULT_PURGE_MAX_DELETES;
    const maxMillis = options.maxMillis ?? DEFAULT_PURGE_MAX_MILLIS;
    // Real elapsed time, not the store's clock: the bound protects the host's function timeout,
    // and tests move the clock by hours.
    const started = performance.now();
    const table = await this.tables.open(TABLES.consentSessions);
    const cutoff = new Date(this.clock() - PURGE_GRACE_MS).toISOString();
    const cursor = await this.readCursor(table);
    const report: PurgeReport = {
      deletedSessions: 0,
      deletedLimitRows: 0,
      transactions: 0,
      partitionsVisited: 0,
      complete: true,
      nextPartition: PURGE_PARTITIONS[cursor] ?? LEGACY_PARTITION,
    };
    const budget = {
      left: () => maxDeletes - report.deletedSessions - report.deletedLimitRows,
      expired: () => performance.now() - started >= maxMillis,
    };
    for (let step = 0; step < PURGE_PARTITIONS.length; step++) {
      const partition = PURGE_PARTITIONS[(cursor + step) % PURGE_PARTITIONS.length] ?? LEGACY_PARTITION;
      report.partitionsVisited++;
      const finished = await this.purgePartition(table, partition, cutoff, budget, report);
      if (!finished) {
        report.complete = false;
        report.nextPartition = partition;
        break;
      }
    }
    if (report.nextPartition !== PURGE_PARTITIONS[cursor]) {
      await table.upsertEntity({ partitionKey: CURSOR_PARTITION, rowKey: CURSOR_ROW, nextPartition: report.nextPartition }, "Replace");
    }
    return report;
  }

  /** Adds `entry` to the tenant's limit row, or refuses; see the class comment for why a row and an ETag. */
  private async reserve(table: TableClient, tenantId: string, entry: OpenEntry, now: number): Promise<void> {
    const keys = limitKey(tenantId);
    for (let attempt = 1; attempt <= RESERVE_ATTEMPTS; attempt++) {
      const current = await this.read<LimitEntity>(table, keys.partitionKey, keys.rowKey);
      const open = parseOpen(current?.open).filter((existing) => existing.e > now);
      if (open.length >= this.maxOpenPerTenant) throw new ConsentSessionLimitError("tenant", retryAfter(open, now));
      const ofLink = open.filter((existing) => existing.l === entry.l);
      if (ofLink.length >= this.maxOpenPerLink) throw new ConsentSessionLimitError("link", retryAfter(ofLink, now));
      const previousExpiry = current ? Date.parse(current.expiresAt) : 0;
      const row: LimitEntity = {
        ...keys,
        kind: "limit",
        tenantId,
        open: JSON.stringify([...open, entry]),
        expiresAt: new Date(Math.max(Number.isNaN(previousExpiry) ? 0 : previousExpiry, entry.e)).toISOString(),
      };
      try {
        if (current) await table.updateEntity(row, "Replace", { etag: current.etag });
        else await table.createEntity(row);
        return;
      } catch (error) {
        // 412: another start wrote first; 409: another start created it first; 404: the purge
        // removed it meanwhile. Each time the fresh row decides.
        const status = statusOf(error);
        if (status !== 412 && status !== 409 && status !== 404) throw error;
      }
      await jitter(attempt);
    }
    // Only a burst of simultaneous starts for one tenant gets here; refusing it briefly is the point.
    throw new ConsentSessionLimitError("tenant", 1);
  }

  /**
   * Frees the places a revoked link's sign-ins hold: whoever filled the link's cap to lock the
   * customer out loses them with the link, and a new link starts at once.
   */
  async releaseLink(tenantId: string, linkId: string): Promise<void> {
    const table = await this.tables.open(TABLES.consentSessions);
    await this.dropOpen(table, tenantId, (entry) => entry.l === linkId);
  }

  /** Drops a claimed session from its tenant's limit row, so the capacity frees before expiry. */
  private async release(table: TableClient, tenantId: string, stateHash: string): Promise<void> {
    await this.dropOpen(table, tenantId, (entry) => entry.h === stateHash);
  }

  private async dropOpen(table: TableClient, tenantId: string, drop: (entry: OpenEntry) => boolean): Promise<void> {
    const keys = limitKey(tenantId);
    for (let attempt = 1; attempt <= 3; attempt++) {
      const current = await this.read<LimitEntity>(table, keys.partitionKey, keys.rowKey);
      if (!current) return;
      const open = parseOpen(current.open);
      const rest = open.filter((existing) => !drop(existing));
      if (rest.length === open.length) return;
      try {
        await table.updateEntity({ ...keys, open: JSON.stringify(rest) }, "Merge", { etag: current.etag });
        return;
      } catch (error) {
        const status = statusOf(error);
        if (status === 404) return;
        if (status !== 412) throw error;
      }
      await jitter(attempt);
    }
  }

  /** Deletes what expired in one partition, page by page; false when the budget ran out first. */
  private async purgePartition(
    table: TableClient,
    partition: string,
    cutoff: string,
    budget: { left(): number; expired(): boolean },
    report: PurgeReport,
  ): Promise<boolean> {
    const pages = table
      .listEntities<PurgeRow>({
        queryOptions: { filter: odata`PartitionKey eq ${partition} and expiresAt lt ${cutoff}`, select: ["rowKey", "kind"] },
      })
      .byPage({ maxPageSize: TRANSACTION_LIMIT });
    // Deleting rows already paged past leaves the continuation token valid: it points at the
    // next key, not at a position.
    for await (const page of pages) {
      if (budget.expired() || budget.left() <= 0) return false;
      const rows = page.flatMap((row) => (typeof row.rowKey === "string" ? [{ rowKey: row.rowKey, kind: row.kind, etag: row.etag }] : []));
      const limitRows = rows.filter((row) => row.kind === "limit");
      const sessions = rows.filter((row) => row.kind !== "limit");
      let cut = false;
      for (const row of limitRows) {
        if (budget.left() <= 0) {
          cut = true;
          break;
        }
        // Conditional: a start that just reused the row has changed its ETag, and keeps it.
        await table.deleteEntity(partition, row.rowKey, row.etag ? { etag: row.etag } : {}).then(
          () => void report.deletedLimitRows++,
          (error: unknown) => {
            const status = statusOf(error);
            if (status !== 404 && status !== 412) throw error;
          },
        );
      }
      const take = Math.min(sessions.length, Math.max(0, budget.left()));
      if (take < sessions.length) cut = true;
      if (take > 0) {
        report.deletedSessions += await this.deleteBatch(table, partition, sessions.slice(0, take).map((row) => row.rowKey), report);
      }
      if (cut) return false;
    }
    return true;
  }

  /** One transaction; if it fails as a whole (a row already gone fails them all), one by one. */
  private async deleteBatch(table: TableClient, partition: string, rowKeys: readonly string[], report: PurgeReport): Promise<number> {
    const actions: TransactionAction[] = rowKeys.map((rowKey) => ["delete", { partitionKey: partition, rowKey }]);
    report.transactions++;
    try {
      await table.submitTransaction(actions);
      return rowKeys.length;
    } catch (error) {
      if (statusOf(error) === undefined) throw error;
    }
    let deleted = 0;
    for (const rowKey of rowKeys) {
      try {
        await table.deleteEntity(partition, rowKey);
        deleted++;
      } catch (error) {
        if (statusOf(error) !== 404) throw error;
      }
    }
    return deleted;
  }

  private async readCursor(table: TableClient): Promise<number> {
    const row = await this.read<{ nextPartition?: unknown }>(table, CURSOR_PARTITION, CURSOR_ROW);
    const index = typeof row?.nextPartition === "string" ? PURGE_PARTITIONS.indexOf(row.nextPartition) : -1;
    return index < 0 ? 0 : index;
  }

  private async read<T extends object>(table: TableClient, partitionKey: string, rowKey: string): Promise<(T & { etag: string }) | undefined> {
    try {
      return await table.getEntity<T>(partitionKey, rowKey);
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }
}
