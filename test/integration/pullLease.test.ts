import type { TableClient } from "@azure/data-tables";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { createServices, type ServiceOverrides, type Services } from "../../shared/services";
import type { AlertBatchKey, AlertEnvelope, AlertSink } from "../../shared/sinks/alertSink";
import type { TableFactory } from "../../shared/state/tables";
import { TABLES } from "../../shared/storage/names";
import { generateAlerts } from "../fakes/alerts";
import { capturingLogger, connectedTenant, deliveredEnvelopes, minutesAgo } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/** The lease and its saves against storage that misbehaves the way real storage can. */

let env: TestEnvironment;

beforeAll(async () => {
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50" });
});
afterAll(async () => {
  await env?.stop();
});

function services(overrides: ServiceOverrides = {}): Services {
  return createServices(loadConfig({ ...process.env, ...env.env }), { sleep: async () => undefined, ...overrides });
}

type UpdateEntity = TableClient["updateEntity"];

/**
 * The real Table client for the pull-state table with `updateEntity` passed through `intercept`,
 * which decides per call what happens around the real write.
 */
function intercepting(intercept: (entity: Record<string, unknown>, write: () => ReturnType<UpdateEntity>) => ReturnType<UpdateEntity>) {
  return (tables: TableFactory): TableFactory => ({
    async open(name) {
      const client = await tables.open(name);
      if (name !== TABLES.pullState) return client;
      return new Proxy(client, {
        get(target, property, receiver) {
          if (property !== "updateEntity") return Reflect.get(target, property, receiver) as unknown;
          const update: UpdateEntity = (entity, mode, options) =>
            intercept(entity as Record<string, unknown>, () => target.updateEntity(entity, mode, options));
          return update;
        },
      });
    },
  });
}

/** A tenant with 160 alerts and services whose pull-state saves land and then answer with `lie(n)` (n counts saves from 1), if it returns an error. */
async function landingThenLying(lie: (n: number) => Error | undefined): Promise<{ tenantId: string; svc: Services; writes: () => number }> {
  const tenantId = await connectedTenant(env);
  env.defender.addAlerts(tenantId, generateAlerts(tenantId, 160, { start: minutesAgo(30), spacingMs: 5_000 }));
  let writes = 0;
  const svc = services({
    wrapTables: intercepting(async (_entity, write) => {
      const result = await write();
      const error = lie(++writes);
      if (error) throw error;
      return result;
    }),
  });
  return { tenantId, svc, writes: () => writes };
}

const preconditionFailed = (): Error => Object.assign(new Error("The condition specified using HTTP conditional header(s) is not met."), { statusCode: 412 });

describe("pull lease", () => {
  it("accepts a save that committed although its answer was a 412 (the SDK retried a write whose response was lost)", async () => {
    // Every third save lands, and the caller is told it did not.
    const { tenantId, svc, writes } = await landingThenLying((n) => (n % 3 === 0 ? preconditionFailed() : undefined));
    const outcome = await svc.tenantPull.run(tenantId, capturingLogger());
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 160, complete: true });
    expect(writes()).toBeGreaterThanOrEqual(3);
    expect(new Set((await deliveredEnvelopes(env, tenantId)).map((e) => e.alert.id)).size).toBe(160);
  });

  it("recognises a save of its own that committed unanswered, so the next save neither fails nor takes the lease from itself", async () => {
    // The second save lands and its answer never comes: to the pull it timed out.
    const { tenantId, svc } = await landingThenLying((n) => (n === 2 ? Object.assign(new Error("The operation was aborted."), { name: "AbortError" }) : undefined));
    const outcome = await svc.tenantPull.run(tenantId, capturingLogger(), "own");
    expect(outcome).toEqual({ outcome: "failed", code: "storage_timeout", category: "transient" });
    // The release after it met a 412 against that unseen write, knew it as its own, and went through.
    const state = await services().pullState.read(tenantId);
    expect(state?.leaseOwner).toBeUndefined();
    expect(state?.lastErrorCode).toBe("storage_timeout");
    const listed = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    const warnings = listed.json<{ health: { warnings: Array<{ code: string }> } }>().health.warnings;
    expect(warnings.map((w) => w.code)).not.toContain("lease_lost");
    // And the next run carries on from the saved position with nothing lost or repeated.
    expect(await services().tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", complete: true });
    const ids = (await deliveredEnvelopes(env, tenantId)).map((e) => e.alert.id);
    expect(ids.length).toBe(160);
    expect(new Set(ids).size).toBe(160);
  });

  it("stops a pull whose lease another pull took over, writes nothing more, and shows lease_lost in health", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 300, { start: minutesAgo(60), spacingMs: 10_000 }));
    // Ten minutes later, as another instance sees it: the first pull's lease has lapsed.
    const intruder = services({ clock: () => Date.now() + 10 * 60_000 });
    let writes = 0;
    const sink: AlertSink = {
      async write(_key: AlertBatchKey, _alerts: readonly AlertEnvelope[]) {
        writes++;
        if (writes === 1) expect(await intruder.pullState.acquire(tenantId, "intruder", 60_000)).toBeDefined();
      },
    };
    const outcome = await services({ sink }).tenantPull.run(tenantId, capturingLogger(), "first");
    expect(outcome).toEqual({ outcome: "failed", code: "lease_lost", category: "lease_lost" });
    expect(writes).toBe(1);
    const stored = await intruder.pullState.read(tenantId);
    expect(stored?.leaseOwner).toBe("intruder");
    const listed = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    const warnings = listed.json<{ health: { warnings: Array<{ code: string; at: string | null }> } }>().health.warnings;
    expect(warnings.find((w) => w.code === "lease_lost")?.at).toBeTruthy();
  });

  it("lets a second pull of a tenant that already has pull state exit busy, and never both write", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 20, { start: minutesAgo(30), spacingMs: 5_000 }));
    const svc = services();
    await svc.tenantPull.run(tenantId, capturingLogger());
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 120, { start: minutesAgo(8), spacingMs: 3_000 }).map((a, i) => ({ ...a, id: `${a.id}-second-${i}` })));
    const [a, b] = await Promise.all([svc.tenantPull.run(tenantId, capturingLogger(), "a"), services().tenantPull.run(tenantId, capturingLogger(), "b")]);
    const outcomes = [a.outcome, b.outcome].sort();
    expect(outcomes).toEqual(["busy", "pulled"]);
    const ids = (await deliveredEnvelopes(env, tenantId)).map((e) => `${e.alert.id}@${e.alert.lastUpdateTime}`);
    expect(ids.length).toBe(140);
    expect(new Set(ids).size).toBe(140);
  });

  it("records a release that failed, and the lease lapses on its own", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: minutesAgo(10), spacingMs: 1_000 }));
    const svc = services({
      wrapTables: intercepting(async (entity, write) => {
        // The release (owner cleared) meets a storage outage.
        if (entity["leaseOwner"] === "") throw Object.assign(new Error("Server busy"), { statusCode: 503 });
        return write();
      }),
    });
    const outcome = await svc.tenantPull.run(tenantId, capturingLogger(), "stuck");
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 5 });
    const state = await services().pullState.read(tenantId);
    expect(state?.leaseOwner).toBe("stuck");
    // Another pull now is busy; once the short lease lapses it proceeds.
    expect(await services().tenantPull.run(tenantId, capturingLogger())).toEqual({ outcome: "busy" });
    const later = await services({ clock: () => Date.now() + 5 * 60_000 }).tenantPull.run(tenantId, capturingLogger());
    expect(later.outcome).toBe("pulled");
    const listed = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    const warnings = listed.json<{ health: { warnings: Array<{ code: string }> } }>().health.warnings;
    expect(warnings.map((w) => w.code)).toContain("lease_release_failed");
  });
});
