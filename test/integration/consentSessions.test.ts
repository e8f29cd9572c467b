import { createHash, randomBytes, randomUUID } from "node:crypto";
import { TableClient, type TransactionAction } from "@azure/data-tables";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inject } from "vitest";
import {
  ConsentSessionLimitError,
  ConsentSessionStore,
  DEFAULT_MAX_OPEN_PER_LINK,
  DEFAULT_MAX_OPEN_PER_TENANT,
  DEFAULT_PURGE_MAX_DELETES,
  PURGE_GRACE_MS,
  SESSION_LIFETIME_MS,
  type PurgeReport,
} from "../../shared/consent/consentSessions";
import { ncrontabProblem } from "../../shared/health/ncrontab";
import { createTableFactory, type TableFactory } from "../../shared/state/tables";
import { TABLES } from "../../shared/storage/names";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * Consent sign-in sessions (shared/consent/consentSessions.ts) against the suite's Azurite, and
 * their purge timer through the app's real entry point. Other test files share the table, so every
 * assertion here is about rows this file wrote.
 */

let env: TestEnvironment;
let table: TableClient;
const key = randomBytes(32);

/** A store as a separate process would build it: its own table factory, and a clock of our choosing. */
function newStore(clock: () => number = Date.now): ConsentSessionStore {
  const tables: TableFactory = createTableFactory({ kind: "connectionString", connectionString: inject("storageConnectionString") }, () => {
    throw new Error("no credential for a connection string");
  });
  return new ConsentSessionStore(tables, clock);
}

const hashOf = (state: string): string => createHash("sha256").update(state).digest("hex");

interface Row {
  partitionKey: string;
  rowKey: string;
  [property: string]: unknown;
}

async function rowsWhere(filter: string): Promise<Row[]> {
  const rows: Row[] = [];
  for await (const entity of table.listEntities<Record<string, unknown>>({ queryOptions: { filter } })) {
    rows.push({ ...entity, partitionKey: String(entity.partitionKey), rowKey: String(entity.rowKey) });
  }
  return rows;
}

async function exists(partitionKey: string, rowKey: string): Promise<boolean> {
  try {
    await table.getEntity(partitionKey, rowKey);
    return true;
  } catch (error) {
    if ((error as { statusCode?: unknown }).statusCode === 404) return false;
    throw error;
  }
}

/** Session rows as an older run would have left them, written in transactions of 100. */
async function writeExpiredRows(rows: ReadonlyArray<{ partitionKey: string; rowKey: string }>, expiresAt: number, linkId = "old"): Promise<void> {
  const byPartition = new Map<string, TransactionAction[]>();
  for (const row of rows) {
    const actions = byPartition.get(row.partitionKey) ?? [];
    actions.push([
      "create",
      {
        ...row,
        kind: "session",
        tenantId: randomUUID(),
        linkId,
        createdAt: new Date(expiresAt - SESSION_LIFETIME_MS).toISOString(),
        expiresAt: new Date(expiresAt).toISOString(),
        usedAt: "",
      },
    ]);
    byPartition.set(row.partitionKey, actions);
  }
  for (const actions of byPartition.values()) {
    for (let i = 0; i < actions.length; i += 100) await table.submitTransaction(actions.slice(i, i + 100));
  }
}

/** A random session row key in the partition the store would put it in (`s` + first hex digit). */
function randomRow(firstHexDigit?: string): { partitionKey: string; rowKey: string } {
  const hash = randomBytes(32).toString("hex");
  const rowKey = firstHexDigit === undefined ? hash : firstHexDigit + hash.slice(1);
  return { partitionKey: `s${rowKey[0]}`, rowKey };
}

/** Where the next purge run starts. */
async function purgeCursor(): Promise<unknown> {
  return (await table.getEntity<{ nextPartition: string }>("housekeeping", "purgeCursor")).nextPartition;
}

/** Runs the registered purge timer and returns the report it logged. */
async function runPurgeTimer(): Promise<PurgeReport> {
  env.app.clearLogs();
  await env.app.timer("purgeConsentSessions");
  const line = env.app.logs.find((entry) => entry.message.startsWith("consent sessions purged "));
  if (!line) throw new Error(`the purge logged no report: ${env.app.logs.map((entry) => entry.message).join(" | ")}`);
  return JSON.parse(line.message.slice("consent sessions purged ".length)) as PurgeReport;
}

async function refusal(promise: Promise<unknown>): Promise<ConsentSessionLimitError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ConsentSessionLimitError);
  return error as ConsentSessionLimitError;
}

beforeAll(async () => {
  env = await startTestEnvironment();
  table = TableClient.fromConnectionString(inject("storageConnectionString"), TABLES.consentSessions, { allowInsecureConnection: true });
  await table.createTable();
});
afterAll(async () => {
  await env?.stop();
});

describe("consent sessions over partitions", () => {
  it("spreads sessions over several partitions and keeps only a hash of state, tenant, link and times", async () => {
    const store = newStore();
    const tenants = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    // One tenant's starts in sequence (their contention has its own test), the tenants side by side.
    const perTenant = await Promise.all(
      tenants.map(async (tenantId) => {
        const sessions = [];
        for (let i = 0; i < 10; i++) sessions.push(await store.begin(key, tenantId, `link-${tenantId.slice(0, 8)}`));
        return sessions;
      }),
    );
    const started = perTenant.flat();
    const rows = await Promise.all(
      started.map(async (session) => (await rowsWhere(`RowKey eq '${hashOf(session.state)}'`))[0]),
    );
    const partitions = new Set(rows.map((row) => row?.partitionKey));
    // 40 random hashes over 16 partitions: fewer than 8 distinct would be a one-in-billions draw.
    expect(partitions.size).toBeGreaterThanOrEqual(8);
    for (const [i, row] of rows.entries()) {
      const session = started[i];
      expect(row).toBeDefined();
      expect(row?.partitionKey).toBe(`s${row?.rowKey[0]}`);
      expect(row).toMatchObject({ tenantId: session?.tenantId, linkId: session?.linkId, usedAt: "" });
      expect(Object.keys(row ?? {}).sort()).toEqual(
        ["createdAt", "etag", "expiresAt", "kind", "linkId", "partitionKey", "rowKey", "tenantId", "timestamp", "usedAt"].sort(),
      );
      const text = JSON.stringify(row);
      for (const secret of [session?.state, session?.codeVerifier, session?.codeChallenge, session?.nonce]) expect(text).not.toContain(secret);
    }
  });

  it("claims a session from a different store instance, with its tenant and link, exactly once", async () => {
    const tenantId = randomUUID();
    const begun = await newStore().begin(key, tenantId, "link_A-1");
    const other = newStore();
    const claim = await other.claim(key, begun.state);
    expect(claim).toEqual({ outcome: "claimed", session: begun });
    expect(claim.outcome === "claimed" && claim.session.linkId).toBe("link_A-1");
    expect(await newStore().claim(key, begun.state)).toEqual({ outcome: "replayed" });
    expect(await other.claim(key, randomBytes(32).toString("base64url"))).toEqual({ outcome: "unknown" });
  });

  it("still claims a session begun before sessions were spread over partitions", async () => {
    const state = randomBytes(32).toString("base64url");
    const tenantId = randomUUID();
    await table.createEntity({
      partitionKey: "session",
      rowKey: hashOf(state),
      tenantId,
      createdAt: new Date().toISOString(),
      expiresAt: new Date(Date.now() + SESSION_LIFETIME_MS).toISOString(),
      usedAt: "",
    });
    const claim = await newStore().claim(key, state);
    expect(claim.outcome).toBe("claimed");
    expect(claim.outcome === "claimed" && claim.session).toMatchObject({ state, tenantId, linkId: "legacy" });
  });

  it("takes a link id of 1-64 characters of A-Z a-z 0-9 _ -, and 'legacy' when none is given", async () => {
    const store = newStore();
    for (const bad of ["", "a".repeat(65), "a/b", "a b", "x'y", "é"]) {
      await expect(store.begin(key, randomUUID(), bad)).rejects.toThrow(/link id/);
    }
    const session = await store.begin(key, randomUUID());
    expect(session.linkId).toBe("legacy");
    expect((await store.begin(key, randomUUID(), "A".repeat(64))).linkId).toBe("A".repeat(64));
  });
});

describe("consent session caps", () => {
  it("refuses the tenant's 31st open session with ConsentSessionLimitError scope tenant", async () => {
    expect(DEFAULT_MAX_OPEN_PER_TENANT).toBe(30);
    const store = newStore();
    const tenantId = randomUUID();
    for (let i = 0; i < 30; i++) await store.begin(key, tenantId, `link${i % 3}`);
    const error = await refusal(store.begin(key, tenantId, "another-link"));
    expect(error.scope).toBe("tenant");
    expect(error.retryAfterSeconds).toBeGreaterThan(SESSION_LIFETIME_MS / 1000 - 60);
    expect(error.retryAfterSeconds).toBeLessThanOrEqual(SESSION_LIFETIME_MS / 1000);
    // Nothing was written for the refused start.
    expect(await rowsWhere(`tenantId eq '${tenantId}' and kind eq 'session'`)).toHaveLength(30);
    // Another tenant is not affected.
    await expect(store.begin(key, randomUUID(), "another-link")).resolves.toMatchObject({ linkId: "another-link" });
  });

  it("refuses a link's 11th open session with scope link while the tenant's other links still start", async () => {
    expect(DEFAULT_MAX_OPEN_PER_LINK).toBe(10);
    const store = newStore();
    const tenantId = randomUUID();
    for (let i = 0; i < 10; i++) await store.begin(key, tenantId, "forwarded");
    const error = await refusal(store.begin(key, tenantId, "forwarded"));
    expect(error.scope).toBe("link");
    expect(error.retryAfterSeconds).toBeGreaterThan(0);
    await expect(store.begin(key, tenantId, "fresh")).resolves.toMatchObject({ tenantId, linkId: "fresh" });
  });

  it("frees capacity when a session is claimed or expires", async () => {
    let now = Date.now();
    const store = newStore(() => now);
    const tenantId = randomUUID();
    const linkSessions = [];
    for (let i = 0; i < 10; i++) linkSessions.push(await store.begin(key, tenantId, "link"));
    await refusal(store.begin(key, tenantId, "link"));
    // A claim (from another instance) frees its place at once.
    const claimed = await newStore(() => now).claim(key, linkSessions[0]?.state ?? "");
    expect(claimed.outcome).toBe("claimed");
    await store.begin(key, tenantId, "link");
    await refusal(store.begin(key, tenantId, "link"));
    // Fill the tenant too, then let the lifetime pass: every place is free again.
    for (let i = 0; i < 20; i++) await store.begin(key, tenantId, `other${i % 2}`);
    expect((await refusal(store.begin(key, tenantId, "third"))).scope).toBe("tenant");
    now += SESSION_LIFETIME_MS + 1000;
    for (let i = 0; i < 10; i++) await store.begin(key, tenantId, "link");
    for (let i = 0; i < 20; i++) await store.begin(key, tenantId, `other${i % 2}`);
    expect((await refusal(store.begin(key, tenantId, "third"))).scope).toBe("tenant");
  });

  it("holds the tenant cap under a burst of concurrent starts from several instances", async () => {
    const tenantId = randomUUID();
    const stores = [newStore(), newStore(), newStore()];
    const outcomes = await Promise.allSettled(
      Array.from({ length: 60 }, (_, i) => stores[i % stores.length]?.begin(key, tenantId, `burst${i % 6}`) ?? Promise.reject(new Error("no store"))),
    );
    const started = outcomes.filter((outcome) => outcome.status === "fulfilled").length;
    for (const outcome of outcomes) {
      if (outcome.status === "rejected") expect(outcome.reason).toBeInstanceOf(ConsentSessionLimitError);
    }
    expect(started).toBeGreaterThan(0);
    expect(started).toBeLessThanOrEqual(30);
    // Whatever the burst left, the next starts fill the tenant to exactly its cap and no further.
    const store = newStore();
    for (let i = started; i < 30; i++) await store.begin(key, tenantId, `after${i % 3}`);
    await refusal(store.begin(key, tenantId, "after-last"));
    expect(await rowsWhere(`tenantId eq '${tenantId}' and kind eq 'session'`)).toHaveLength(30);
  });
});

describe("consent session purge timer", () => {
  it("registers purgeConsentSessions every 15 minutes, and the pull timer no longer purges", async () => {
    const trigger = env.app.functions.get("purgeConsentSessions")?.trigger;
    expect(trigger).toMatchObject({ type: "timerTrigger", schedule: "30 */15 * * * *", runOnStartup: false, useMonitor: true });
    expect(ncrontabProblem(String(trigger?.["schedule"]))).toBeUndefined();

    const old = randomRow();
    await writeExpiredRows([old], Date.now() - PURGE_GRACE_MS - 3600_000);
    await env.app.timer("schedulePulls");
    expect(await exists(old.partitionKey, old.rowKey)).toBe(true);
    await runPurgeTimer();
    expect(await exists(old.partitionKey, old.rowKey)).toBe(false);
  });

  it("deletes only expired sessions and stale limit rows, in batches of up to 100, across partitions", async () => {
    const now = Date.now();
    // Sessions begun three hours ago (long expired, one of them claimed), 30 minutes ago (expired,
    // still within the grace hour) and now.
    const longAgo = newStore(() => now - 3 * 3600_000);
    const oldTenant = randomUUID();
    const oldSessions = await Promise.all(Array.from({ length: 5 }, () => longAgo.begin(key, oldTenant, "old")));
    expect((await longAgo.claim(key, oldSessions[0]?.state ?? "")).outcome).toBe("claimed");
    const recentTenant = randomUUID();
    const recent = await Promise.all(Array.from({ length: 5 }, () => newStore(() => now - 30 * 60_000).begin(key, recentTenant, "recent")));
    const freshTenant = randomUUID();
    const fresh = await Promise.all(Array.from({ length: 5 }, () => newStore().begin(key, freshTenant, "fresh")));
    // 250 long-expired rows in one partition (three transactions there) and 64 spread over all 16.
    const crowded = Array.from({ length: 250 }, () => randomRow("a"));
    const spread = Array.from({ length: 64 }, (_, i) => randomRow((i % 16).toString(16)));
    await writeExpiredRows([...crowded, ...spread], now - 2 * 3600_000);

    const report = await runPurgeTimer();
    expect(report.complete).toBe(true);
    expect(report.deletedSessions).toBeGreaterThanOrEqual(5 + 250 + 64);
    expect(report.deletedLimitRows).toBeGreaterThanOrEqual(1);
    expect(report.partitionsVisited).toBe(17);
    // One transaction per partition page, never one per row: the crowded partition took three.
    expect(report.transactions).toBeLessThan(report.deletedSessions / 5);
    expect(report.transactions).toBeGreaterThanOrEqual(3 + 15);

    for (const row of [...crowded, ...spread]) expect(await exists(row.partitionKey, row.rowKey)).toBe(false);
    for (const session of oldSessions) expect(await rowsWhere(`RowKey eq '${hashOf(session.state)}'`)).toEqual([]);
    expect(await rowsWhere(`RowKey eq 'limit_${oldTenant}'`)).toEqual([]);
    for (const session of [...recent, ...fresh]) expect(await rowsWhere(`RowKey eq '${hashOf(session.state)}'`)).toHaveLength(1);
    expect(await rowsWhere(`RowKey eq 'limit_${recentTenant}'`)).toHaveLength(1);
    expect(await rowsWhere(`RowKey eq 'limit_${freshTenant}'`)).toHaveLength(1);
    // The sessions it kept still work.
    expect((await newStore().claim(key, fresh[0]?.state ?? "")).outcome).toBe("claimed");
    expect((await newStore().claim(key, recent[0]?.state ?? "")).outcome).toBe("expired");
  });

  it("stops at its bound per run and the next run resumes where it stopped", async () => {
    const rows = Array.from({ length: DEFAULT_PURGE_MAX_DELETES + 600 }, () => randomRow());
    const marker = `bound${randomBytes(4).toString("hex")}`;
    await writeExpiredRows(rows, Date.now() - 2 * 3600_000, marker);
    const left = async () => (await rowsWhere(`linkId eq '${marker}'`)).length;

    const first = await runPurgeTimer();
    expect(first.complete).toBe(false);
    expect(first.deletedSessions + first.deletedLimitRows).toBe(DEFAULT_PURGE_MAX_DELETES);
    expect(await purgeCursor()).toBe(first.nextPartition);
    const afterFirst = await left();
    expect(afterFirst).toBeGreaterThanOrEqual(600);
    expect(afterFirst).toBeLessThan(rows.length);

    const second = await runPurgeTimer();
    expect(second.complete).toBe(true);
    // It began where the first run stopped, not at the first partition again.
    expect(second.deletedSessions).toBeGreaterThanOrEqual(600);
    expect(await left()).toBe(0);
  }, 120_000);

  it("finishes a batch whose rows another run deleted first, row by row", async () => {
    const rows = Array.from({ length: 30 }, () => randomRow("7"));
    const marker = `vanish${randomBytes(4).toString("hex")}`;
    await writeExpiredRows(rows, Date.now() - 2 * 3600_000, marker);
    const base = createTableFactory({ kind: "connectionString", connectionString: inject("storageConnectionString") }, () => {
      throw new Error("no credential for a connection string");
    });
    let stolen = 0;
    let refused = 0;
    // Deletes one row of the first transaction just before it is sent: the whole transaction then fails.
    const racing: TableFactory = {
      async open(name) {
        const client = await base.open(name);
        const submit = client.submitTransaction.bind(client);
        client.submitTransaction = async (actions, options) => {
          const first = actions[0]?.[1];
          if (stolen === 0 && first) {
            stolen++;
            await client.deleteEntity(String(first.partitionKey), String(first.rowKey));
          }
          return submit(actions, options).catch((error: unknown) => {
            refused++;
            throw error;
          });
        };
        return client;
      },
    };
    const report = await new ConsentSessionStore(racing, Date.now).purge();
    expect(stolen).toBe(1);
    expect(refused).toBe(1);
    expect(report.complete).toBe(true);
    expect(await rowsWhere(`linkId eq '${marker}'`)).toEqual([]);
  });

  it("bounds a run by time too, and resumes at the partition it stopped in", async () => {
    const store = newStore();
    const rows = Array.from({ length: 40 }, (_, i) => randomRow((i % 16).toString(16)));
    await writeExpiredRows(rows, Date.now() - 2 * 3600_000);
    const out = await store.purge({ maxMillis: 0 });
    expect(out).toMatchObject({ complete: false, deletedSessions: 0, partitionsVisited: 1 });
    const few = await store.purge({ maxDeletes: 3 });
    expect(few.complete).toBe(false);
    expect(few.deletedSessions + few.deletedLimitRows).toBe(3);
    expect(await purgeCursor()).toBe(few.nextPartition);
    const next = await store.purge({ maxDeletes: 1_000 });
    // The run after starts in the partition the bounded one stopped in.
    expect(next.complete).toBe(true);
    expect(next.partitionsVisited).toBe(17);
    for (const row of rows) expect(await exists(row.partitionKey, row.rowKey)).toBe(false);
  });
});
