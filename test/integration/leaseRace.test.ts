import type { TableClient } from "@azure/data-tables";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { createServices, type ServiceOverrides, type Services } from "../../shared/services";
import type { TableFactory } from "../../shared/state/tables";
import { TABLES } from "../../shared/storage/names";
import { generateAlerts } from "../fakes/alerts";
import { capturingLogger, connectedTenant, deliveredEnvelopes, minutesAgo } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * Two pulls that both read a tenant's existing pull state, with its lease free, before either
 * writes: the read says "free" to both, so only the ETag condition on the write that takes the
 * lease can keep the second one out.
 */

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

/** Resolves when `open()` is called, or after `ms` at the latest (a missed interleaving then shows as a plain run). */
function gate(ms = 10_000): { opened: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const opened = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    open = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { opened, open };
}

/** The pull-state table with `getEntity` and `updateEntity` passed through hooks. */
function around(hooks: {
  afterRead?: () => void;
  beforeWrite?: () => Promise<void>;
}): (tables: TableFactory) => TableFactory {
  return (tables) => ({
    async open(name) {
      const client = await tables.open(name);
      if (name !== TABLES.pullState) return client;
      return new Proxy(client, {
        get(target, property, receiver) {
          if (property === "getEntity" && hooks.afterRead) {
            const read = async <T extends object = Record<string, unknown>>(partitionKey: string, rowKey: string, options?: Parameters<TableClient["getEntity"]>[2]) => {
              const entity = await target.getEntity<T>(partitionKey, rowKey, options);
              hooks.afterRead?.();
              return entity;
            };
            return read;
          }
          if (property === "updateEntity" && hooks.beforeWrite) {
            const update: TableClient["updateEntity"] = async (...args) => {
              await hooks.beforeWrite?.();
              return target.updateEntity(...args);
            };
            return update;
          }
          return Reflect.get(target, property, receiver) as unknown;
        },
      });
    },
  });
}

/** Two processes whose first pull-state write waits until both have read it once (bounded). */
function interleaved(onWrite: () => void = () => undefined): { first: Services; second: Services } {
  const bothRead = gate();
  let reads = 0;
  const instance = (): Services => {
    let read = false;
    let wrote = false;
    return services({
      wrapTables: around({
        afterRead: () => {
          if (read) return;
          read = true;
          if (++reads === 2) bothRead.open();
        },
        beforeWrite: async () => {
          onWrite();
          if (wrote) return;
          wrote = true;
          await bothRead.opened;
        },
      }),
    });
  };
  return { first: instance(), second: instance() };
}

describe("the lease on existing pull state, both pulls reading before either writes", () => {
  it("lets only one of two acquires take a free lease", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 10, { start: minutesAgo(20), spacingMs: 5_000 }));
    expect(await services().tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled" });
    const { first, second } = interleaved();
    const [a, b] = await Promise.all([first.pullState.acquire(tenantId, "a", 60_000), second.pullState.acquire(tenantId, "b", 60_000)]);
    expect([a !== undefined, b !== undefined].filter(Boolean)).toHaveLength(1);
    const owner = (await services().pullState.read(tenantId))?.leaseOwner;
    expect(owner).toBe(a ? "a" : "b");
  });

  it("lets one of two pulls run and the other exit busy; every alert is delivered once", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 20, { start: minutesAgo(30), spacingMs: 5_000 }));
    expect(await services().tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled" });
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 120, { start: minutesAgo(8), spacingMs: 3_000 }).map((a, i) => ({ ...a, id: `${a.id}-race-${i}` })));
    const { first, second } = interleaved();
    const [a, b] = await Promise.all([first.tenantPull.run(tenantId, capturingLogger(), "a"), second.tenantPull.run(tenantId, capturingLogger(), "b")]);
    expect([a.outcome, b.outcome].sort()).toEqual(["busy", "pulled"]);
    const ids = (await deliveredEnvelopes(env, tenantId)).map((e) => `${e.alert.id}@${e.alert.lastUpdateTime}`);
    expect(ids.length).toBe(140);
    expect(new Set(ids).size).toBe(140);
  });
});

describe("the lease is written by the pull's first write, not by a write of its own", () => {
  /** Counts the pull-state table's point reads and writes of one services instance. */
  function counting(onWrite?: () => void): { svc: Services; reads: () => number; writes: () => number } {
    let reads = 0;
    let writes = 0;
    const svc = services({
      wrapTables: around({
        afterRead: () => void reads++,
        beforeWrite: async () => {
          writes++;
          onWrite?.();
        },
      }),
    });
    return { svc, reads: () => reads, writes: () => writes };
  }

  it("costs a quiet tenant one read and one write of its pull state per cycle, and moves its checkpoint", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 10, { start: minutesAgo(20), spacingMs: 5_000 }));
    expect(await services().tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 10 });
    const before = await services().pullState.read(tenantId);
    const { svc, reads, writes } = counting();
    expect(await svc.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 0, complete: true });
    expect({ reads: reads(), writes: writes() }).toEqual({ reads: 1, writes: 1 });
    const after = await services().pullState.read(tenantId);
    expect(after?.leaseOwner).toBeUndefined();
    expect(after?.lastRunAt).not.toBe(before?.lastRunAt);
    expect(after?.lastAlertCount).toBe(0);
  });

  it("ends one of two quiet pulls that both read first busy, with one write, and no lease_lost in health", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 10, { start: minutesAgo(20), spacingMs: 5_000 }));
    expect(await services().tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled" });
    const stored = await services().pullState.read(tenantId);
    let writes = 0;
    const { first, second } = interleaved(() => void writes++);
    const [a, b] = await Promise.all([first.tenantPull.run(tenantId, capturingLogger(), "a"), second.tenantPull.run(tenantId, capturingLogger(), "b")]);
    expect([a.outcome, b.outcome].sort()).toEqual(["busy", "pulled"]);
    // Both tried their one write; the ETag let only the first land.
    expect(writes).toBe(2);
    const after = await services().pullState.read(tenantId);
    expect(after?.leaseOwner).toBeUndefined();
    expect(after?.lastRunAt).not.toBe(stored?.lastRunAt);
    const listed = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    const health = listed.json<{ health: { warnings: Array<{ code: string }> } }>().health;
    expect(health.warnings.map((w) => w.code)).not.toContain("lease_lost");
    expect((await deliveredEnvelopes(env, tenantId)).length).toBe(10);
  });

  it("ends busy, recording no failure, a pull that failed after another pull wrote first", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: minutesAgo(20), spacingMs: 5_000 }));
    expect(await services().tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled" });
    // Right after this pull reads its state, another runs to the end; then this one's API call fails.
    let raced = false;
    const late = services({
      wrapTables: (tables) => ({
        async open(name) {
          const client = await tables.open(name);
          if (name !== TABLES.pullState) return client;
          return new Proxy(client, {
            get(target, property, receiver) {
              if (property !== "getEntity") return Reflect.get(target, property, receiver) as unknown;
              return async (...args: Parameters<TableClient["getEntity"]>) => {
                const entity = await target.getEntity(...args);
                if (!raced) {
                  raced = true;
                  expect(await services().tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled" });
                  env.defender.fail(tenantId, { status: 503, times: 50 });
                }
                return entity;
              };
            },
          });
        },
      }),
    });
    expect(await late.tenantPull.run(tenantId, capturingLogger())).toEqual({ outcome: "busy" });
    const listed = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    expect(listed.json<{ status: string; health: { consecutiveFailures: number } }>()).toMatchObject({ status: "connected", health: { consecutiveFailures: 0 } });
  });

  it("claims the lease before it redeems the refresh token, so two pulls never both redeem it", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: minutesAgo(20), spacingMs: 5_000 }));
    expect(await services().tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled" });
    // Two hours on: the cached access token has expired and this process has none in memory.
    const later = (): number => Date.now() + 2 * 3600_000;
    const refreshes = (): number => env.entra.stats.tokenRequests.refresh_token;
    const atStart = refreshes();
    const atWrites: number[] = [];
    let reads = 0;
    const svc = services({
      clock: later,
      wrapTables: around({ afterRead: () => void reads++, beforeWrite: async () => void atWrites.push(refreshes()) }),
    });
    expect(await svc.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 0 });
    expect(refreshes()).toBe(atStart + 1);
    // The first write (the claim) came before the redemption; the closing one after it.
    expect(atWrites).toEqual([atStart, atStart + 1]);
  });
});
