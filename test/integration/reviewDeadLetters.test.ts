import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { createServices, type Services } from "../../shared/services";
import { generateAlerts, makeAlert, toMdeTimestamp } from "../fakes/alerts";
import { capturingLogger, connectedTenant, deliveredEnvelopes } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * Found by a reliability review, kept as regression tests: each states a claim of docs/pull.md
 * and the scenario that once broke it.
 */

let env: TestEnvironment;

beforeAll(async () => {
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "2500", PULL_OVERLAP_MINUTES: "10" });
});
afterAll(async () => {
  await env?.stop();
});

function services(): Services {
  return createServices(loadConfig({ ...process.env, ...env.env }), { sleep: async () => undefined });
}

describe("review: dead letters", () => {
  it("claim: 'the same dead letter read again in the next cycle's overlap is stored and counted once'", async () => {
    const tenantId = await connectedTenant(env);
    // All within the 10-minute overlap of the next cycle.
    const alerts = generateAlerts(tenantId, 100, { start: new Date(Date.now() - 5 * 60_000), spacingMs: 1_000 });
    env.defender.addAlerts(tenantId, alerts);
    env.defender.poisonAlert(tenantId, alerts[40]?.id ?? "", '{"title":"an alert without its id"}');
    const svc = services();
    const first = await svc.tenantPull.run(tenantId, capturingLogger());
    expect(first).toMatchObject({ outcome: "pulled", complete: true });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const second = await svc.tenantPull.run(tenantId, capturingLogger());
    expect(second).toMatchObject({ outcome: "pulled", complete: true });
    const letters = await svc.deadLetters.list(tenantId);
    const state = await svc.pullState.read(tenantId);
    console.log("dead letters:", letters.map((l) => `${l.pageFrom}_${l.pageTo}`), "counted:", state?.deadLetters);
    // The claim: one letter, counted once. Page bounds are part of the letter's name and the
    // next window's sub-windows start elsewhere, so the same element is stored and counted again.
    expect(letters).toHaveLength(1);
    expect(state?.deadLetters).toBe(1);
  });

  it("claim: every served version delivered once; re-drive does not record what it delivered, so the next overlap delivers it again", async () => {
    const tenantId = await connectedTenant(env, "Redrive Overlap Ltd");
    const base = Date.now() - 4 * 60_000;
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 10, { start: new Date(base), spacingMs: 1_000 }));
    const svc = services();
    await svc.tenantPull.run(tenantId, capturingLogger());
    // An alert an older version dead-lettered (say, a time form it did not read) and this one accepts.
    const recovered = makeAlert({ id: "rv-recovered", lastUpdateTime: toMdeTimestamp(base + 30_000) });
    const { evidence: _evidence, ...summary } = recovered;
    await svc.deadLetters.write({
      tenantId,
      source: "mde",
      reason: "invalid_time",
      window: { from: new Date(base - 60_000).toISOString(), to: new Date().toISOString() },
      page: { from: new Date(base - 60_000).toISOString(), to: new Date().toISOString(), skip: 0 },
      raw: JSON.stringify(summary),
      at: new Date().toISOString(),
    });
    // The API serves it (it always did; the old code refused it).
    env.defender.addAlerts(tenantId, [recovered]);
    const redriven = await env.app.http("redriveDeadLetters", { method: "POST", url: `/api/tenants/${tenantId}/dead-letters/redrive`, params: { tenantId } });
    expect(redriven.json()).toMatchObject({ redriven: 1, delivered: 1 });
    // The next cycle's overlap reads it again.
    await svc.tenantPull.run(tenantId, capturingLogger());
    const copies = (await deliveredEnvelopes(env, tenantId)).filter((e) => e.alert.id === "rv-recovered");
    expect(copies).toHaveLength(1);
  });

  it("claim: no alert version served is lost; one bogus Date header (a gateway answering 1970) stops the tenant's pulls for good while each run reports success", async () => {
    const tenantId = await connectedTenant(env, "Bogus Date Ltd");
    const svc = services();
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: new Date(Date.now() - 3 * 60_000), spacingMs: 1_000 }));
    // One answer whose Date header is decades behind; the skew is stored and never re-measured.
    env.defender.setClockOffset(-Date.now() + 86_400_000);
    await svc.tenantPull.run(tenantId, capturingLogger());
    env.defender.setClockOffset(0);
    await new Promise((resolve) => setTimeout(resolve, 50));
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: new Date(Date.now() - 1_000), spacingMs: 10 }).map((a, i) => ({ ...a, id: `bogus-date-${i}` })));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const outcomes = [];
    for (let i = 0; i < 3; i++) outcomes.push(await svc.tenantPull.run(tenantId, capturingLogger()));
    console.log("outcomes after the bogus Date:", JSON.stringify(outcomes), "skew:", (await svc.pullState.read(tenantId))?.clockSkewMs);
    const ids = (await deliveredEnvelopes(env, tenantId)).map((e) => e.alert.id);
    expect(ids.filter((id) => id.startsWith("bogus-date-"))).toHaveLength(5);
  });
});
