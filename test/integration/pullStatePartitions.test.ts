import { TableClient } from "@azure/data-tables";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { LeaseLostError } from "../../shared/pull/pullState";
import { TABLES } from "../../shared/storage/names";
import { generateAlerts } from "../fakes/alerts";
import { capturingLogger, connectedTenant, deliveryTally, minutesAgo, pipelineServices } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * Each tenant's pull state lives in a table partition of its own, so the fleet's pulls are not
 * capped by one partition's throughput. Rows written by earlier versions (every tenant in the
 * partition "pull") are read until each tenant's next pull moves its row, checkpoint and all.
 */

let env: TestEnvironment;
let table: TableClient;

beforeAll(async () => {
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50" });
  table = TableClient.fromConnectionString(inject("storageConnectionString"), TABLES.pullState, { allowInsecureConnection: true });
});
afterAll(async () => {
  await env?.stop();
});

type Row = Record<string, unknown> & { partitionKey: string; rowKey: string };

async function rowAt(partitionKey: string, rowKey: string): Promise<Row | undefined> {
  try {
    return await table.getEntity<Row>(partitionKey, rowKey);
  } catch (error) {
    if ((error as { statusCode?: number }).statusCode === 404) return undefined;
    throw error;
  }
}

/** A tenant pulled once, its row then put back where an earlier version kept it. */
async function legacyTenant(alerts: number): Promise<{ tenantId: string; legacy: Row }> {
  const tenantId = await connectedTenant(env);
  env.defender.addAlerts(tenantId, generateAlerts(tenantId, alerts, { start: minutesAgo(40), spacingMs: 5_000 }));
  expect(await pipelineServices(env).tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts });
  const current = await rowAt(tenantId, "pull");
  if (!current) throw new Error("no pull row in the tenant's partition");
  const { partitionKey: _p, rowKey: _r, etag: _e, timestamp: _t, ...columns } = current;
  const legacy: Row = { ...columns, partitionKey: "pull", rowKey: tenantId };
  await table.createEntity(legacy);
  await table.deleteEntity(tenantId, "pull");
  return { tenantId, legacy };
}

describe("pull state partitions", () => {
  it("keeps a tenant's pull state in a partition of its own", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: minutesAgo(10), spacingMs: 1_000 }));
    expect(await pipelineServices(env).tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 5 });
    expect((await rowAt(tenantId, "pull"))?.["watermark"]).toBeTruthy();
    expect(await rowAt("pull", tenantId)).toBeUndefined();
  });

  it("moves a row written by an earlier version at the tenant's next pull, resuming from its checkpoint", async () => {
    const { tenantId, legacy } = await legacyTenant(30);
    // Until then, health reads it where it is.
    const before = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    expect(before.json<{ health: { lastSuccessfulPullAt: string | null } }>().health.lastSuccessfulPullAt).toBe(legacy["lastSuccessAt"]);

    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 12, { start: minutesAgo(3), spacingMs: 5_000 }).map((a, i) => ({ ...a, id: `${a.id}-new-${i}` })));
    expect(await pipelineServices(env).tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 12 });
    const tally = await deliveryTally(env, tenantId);
    expect(tally).toMatchObject({ delivered: 42, duplicates: 0 });

    const moved = await rowAt(tenantId, "pull");
    expect(moved?.["leaseOwner"]).toBe("");
    expect(moved?.["lastRunAt"]).not.toBe(legacy["lastRunAt"]);
    // The old row stays, leased for an hour, so a pull of the earlier version still running keeps out.
    const old = await rowAt("pull", tenantId);
    expect(old?.["leaseOwner"]).toBe("moved");
    expect(Number(old?.["leaseUntil"])).toBeGreaterThan(Date.now() + 50 * 60_000);

    // Health now reads the moved row, once.
    const listed = await env.app.http("listTenants", { method: "GET", url: "/api/tenants" });
    const mine = listed.json<{ tenants: Array<{ tenantId: string; health: { alertsInLastPull: number | null } }> }>().tenants.filter((t) => t.tenantId === tenantId);
    expect(mine.map((t) => t.health.alertsInLastPull)).toEqual([12]);
    const after = await pipelineServices(env).pullState.read(tenantId);
    expect(after?.lastAlertCount).toBe(12);
    expect(after?.leaseOwner).toBeUndefined();
  });

  it("finishes a move cut short: a moved old row with no new one is resumed, not taken for a held lease", async () => {
    const { tenantId } = await legacyTenant(20);
    await table.updateEntity({ partitionKey: "pull", rowKey: tenantId, leaseOwner: "moved", leaseUntil: Date.now() + 3600_000 }, "Merge");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 4, { start: minutesAgo(2), spacingMs: 5_000 }).map((a, i) => ({ ...a, id: `${a.id}-late-${i}` })));
    expect(await pipelineServices(env).tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 4 });
    expect(await deliveryTally(env, tenantId)).toMatchObject({ delivered: 24, duplicates: 0 });
    expect((await rowAt(tenantId, "pull"))?.["lastAlertCount"]).toBe(4);
  });

  it("lets only one of two pulls that both read the old row move it", async () => {
    const { tenantId } = await legacyTenant(10);
    const [a, b] = [pipelineServices(env).pullState, pipelineServices(env).pullState];
    const [first, second] = await Promise.all([a.open(tenantId, "a", 60_000), b.open(tenantId, "b", 60_000)]);
    if (!first || !second) throw new Error("both opens should find the lease free");
    await first.claim();
    const lost = await second.claim().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(lost).toBeInstanceOf(LeaseLostError);
    expect((lost as LeaseLostError).reason).toBe("busy");
    expect((await rowAt(tenantId, "pull"))?.["leaseOwner"]).toBe("a");
  });

  it("forgets an unmoved old row when the tenant is offboarded", async () => {
    const { tenantId } = await legacyTenant(3);
    const result = await env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    expect(result.status).toBeLessThan(300);
    expect(await rowAt("pull", tenantId)).toBeUndefined();
    expect(await rowAt(tenantId, "pull")).toBeUndefined();
  });
});
