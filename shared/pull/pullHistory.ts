import { randomBytes } from "node:crypto";
import { odata, type TableClient, type TransactionAction } from "@azure/data-tables";
import type { Clock } from "../clock";
import type { TableFactory } from "../state/tables";
import { TABLES } from "../storage/names";
import { timeoutSignal } from "../time/timeoutSignal";

/**
 * One row per pull run in `MsspPullHistory`: partition = tenant id, row key = inverted time, so
 * a partition query returns the newest first. A row holds what an operator needs to see how the
 * tenant's pulls went (never a token, never an error message that could quote one: only the
 * app's own error code).
 */
export type PullRunOutcome = "succeeded" | "partial" | "failed" | "busy";

export interface PullRun {
  /** When the run started (ISO). */
  at: string;
  outcome: PullRunOutcome;
  /** Alert versions delivered by the run. */
  alerts: number;
  durationMs: number;
  errorCode?: string;
}

/** Rows kept per tenant at least (the console shows them) … */
export const PULL_HISTORY_KEEP_ROWS = 50;
/**
 * … and every row of the last 25 hours besides, so "alerts in the last 24 h" is exact: with the
 * default 5-minute schedule 50 rows only reach back about four hours.
 */
export const PULL_HISTORY_KEEP_MS = 25 * 3600_000;
/**
 * A tenant's rows are pruned at most once per this much run time per process: the prune lists
 * the tenant's partition (about 300 rows at the default schedule), which cost more than the rest
 * of a quiet pull's storage calls. Rows then outlive their limits by up to an hour.
 */
export const PULL_HISTORY_PRUNE_EVERY_MS = 3600_000;
/** Tenants whose last prune this process remembers; beyond that it forgets and prunes anew. */
const PRUNES_REMEMBERED = 100_000;

/** 13 digits cover every millisecond time up to the year 2286. */
const MAX_TIME = 9_999_999_999_999;

function invertedTime(ms: number): string {
  return String(MAX_TIME - Math.max(0, Math.min(MAX_TIME, Math.floor(ms)))).padStart(13, "0");
}

const OUTCOMES: readonly string[] = ["succeeded", "partial", "failed", "busy"];
const CODE = /^[A-Za-z0-9_.:-]{1,64}$/;

interface Row {
  partitionKey: string;
  rowKey: string;
  at?: unknown;
  outcome?: unknown;
  alerts?: unknown;
  durationMs?: unknown;
  errorCode?: unknown;
}

function toRun(row: Row): PullRun | undefined {
  if (typeof row.at !== "string" || typeof row.outcome !== "string" || !OUTCOMES.includes(row.outcome)) return undefined;
  const run: PullRun = {
    at: row.at,
    outcome: row.outcome as PullRunOutcome,
    alerts: typeof row.alerts === "number" ? row.alerts : 0,
    durationMs: typeof row.durationMs === "number" ? row.durationMs : 0,
  };
  if (typeof row.errorCode === "string" && row.errorCode !== "") run.errorCode = row.errorCode;
  return run;
}

export class PullHistoryStore {
  /** Run time (`at`, ms) of each tenant's last prune in this process. */
  private readonly lastPrune = new Map<string, number>();

  constructor(
    private readonly deps: {
      tables: TableFactory;
      clock: Clock;
      /** How long one Table call may take before it is abandoned. */
      timeoutMs: number;
    },
  ) {}

  private table(): Promise<TableClient> {
    return this.deps.tables.open(TABLES.pullHistory);
  }

  private signal(): { abortSignal: AbortSignal } {
    return { abortSignal: timeoutSignal(this.deps.timeoutMs) };
  }

  /** Adds a run, then (at most hourly, see PULL_HISTORY_PRUNE_EVERY_MS) drops what is beyond both retention limits. */
  async record(tenantId: string, run: PullRun): Promise<void> {
    const table = await this.table();
    const at = Date.parse(run.at);
    const errorCode = run.errorCode && CODE.test(run.errorCode) ? run.errorCode : run.errorCode ? "other" : "";
    await table.createEntity(
      {
        partitionKey: tenantId,
        // A random tail keeps two runs in the same millisecond apart.
        rowKey: `${invertedTime(Number.isFinite(at) ? at : this.deps.clock())}-${randomBytes(4).toString("hex")}`,
        at: run.at,
        outcome: run.outcome,
        alerts: Math.max(0, Math.floor(run.alerts)),
        durationMs: Math.max(0, Math.round(run.durationMs)),
        errorCode,
      },
      this.signal(),
    );
    const runAt = Number.isFinite(at) ? at : this.deps.clock();
    const pruned = this.lastPrune.get(tenantId);
    if (pruned !== undefined && Math.abs(runAt - pruned) < PULL_HISTORY_PRUNE_EVERY_MS) return;
    await this.prune(tenantId, table);
    // Stryker disable next-line ConditionalExpression,EqualityOperator: forgetting sooner or later only bounds this process's memory or adds a prune (the same rows kept); no test holds 100,000 tenants
    if (this.lastPrune.size >= PRUNES_REMEMBERED) this.lastPrune.clear();
    this.lastPrune.set(tenantId, runAt);
  }

  /** The newest runs first. */
  async recent(tenantId: string, limit = PULL_HISTORY_KEEP_ROWS): Promise<PullRun[]> {
    const table = await this.table();
    const runs: PullRun[] = [];
    const pages = table
      .listEntities<Row>({ queryOptions: { filter: odata`PartitionKey eq ${tenantId}` }, ...this.signal() })
      .byPage({ maxPageSize: Math.min(1000, Math.max(1, limit)) });
    for await (const page of pages) {
      for (const row of page) {
        const run = toRun(row);
        if (run) runs.push(run);
        if (runs.length >= limit) return runs;
      }
    }
    return runs;
  }

  /** Alerts delivered by the runs that started at or after `sinceMs`. */
  async alertsSince(tenantId: string, sinceMs: number): Promise<number> {
    const table = await this.table();
    // Newer runs have smaller keys; every key of a run at `sinceMs` itself sorts after the bare prefix.
    const bound = `${invertedTime(sinceMs)}-~`;
    let total = 0;
    for await (const row of table.listEntities<Row>({
      // Stryker disable next-line ArrayDeclaration: an empty select returns every column, the alerts among them
      queryOptions: { filter: odata`PartitionKey eq ${tenantId} and RowKey lt ${bound}`, select: ["alerts"] },
      ...this.signal(),
    })) {
      if (typeof row.alerts === "number") total += row.alerts;
    }
    return total;
  }

  /** Deletes rows beyond the newest PULL_HISTORY_KEEP_ROWS that are also older than PULL_HISTORY_KEEP_MS. */
  private async prune(tenantId: string, table: TableClient): Promise<void> {
    const cutoff = invertedTime(this.deps.clock() - PULL_HISTORY_KEEP_MS);
    const stale: string[] = [];
    let index = 0;
    for await (const row of table.listEntities<Row>({
      // Stryker disable next-line ArrayDeclaration: an empty select returns every column, the row key among them
      queryOptions: { filter: odata`PartitionKey eq ${tenantId}`, select: ["RowKey"] },
      ...this.signal(),
    })) {
      if (index++ >= PULL_HISTORY_KEEP_ROWS && row.rowKey > cutoff) stale.push(row.rowKey);
    }
    // A transaction holds up to 100 operations of one partition.
    for (let i = 0; i < stale.length; i += 100) {
      const actions: TransactionAction[] = stale.slice(i, i + 100).map((rowKey) => ["delete", { partitionKey: tenantId, rowKey }]);
      await table.submitTransaction(actions, this.signal());
    }
  }
}
