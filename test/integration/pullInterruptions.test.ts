import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { pullHealthOf } from "../../shared/pull/health";
import { createServices, type ServiceOverrides, type Services } from "../../shared/services";
import { SinkError, type AlertSink } from "../../shared/sinks/alertSink";
import { BlobAlertSink } from "../../shared/sinks/blobAlertSink";
import { openContainer } from "../../shared/sinks/containers";
import { generateAlerts, makeAlert, toMdeTimestamp } from "../fakes/alerts";
import { capturingLogger, connectedTenant, deliveryTally, minutesAgo, type DeliveryTally } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";
import { hangingSink } from "../harness/hangingSink";

/**
 * Runs that stop part-way: a page that arrives after the deadline, a sink that never answers,
 * a page slower than the lease, a page that does not parse, and a crowded millisecond that is
 * left half-read. Each test counts versions served vs delivered vs duplicated.
 */

let env: TestEnvironment;

beforeAll(async () => {
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50", PULL_OVERLAP_MINUTES: "10" });
});
afterAll(async () => {
  await env?.stop();
});

interface Options extends ServiceOverrides {
  /** Applied to the loaded settings, past their validation (tests use bounds the app refuses). */
  pull?: Partial<ReturnType<typeof loadConfig>["pull"]>;
}

function services(options: Options = {}): Services {
  const { pull, ...overrides } = options;
  const config = loadConfig({ ...process.env, ...env.env });
  Object.assign(config.pull, pull);
  return createServices(config, { sleep: async () => undefined, ...overrides });
}

const tally = (tenantId: string): Promise<DeliveryTally> => deliveryTally(env, tenantId);

function expectExactlyOnce(t: DeliveryTally): void {
  expect(t.missing).toEqual([]);
  expect(t.missingFinal).toEqual([]);
  expect(t.duplicated).toEqual([]);
  expect(t.duplicates).toBe(0);
}

/** The `$skip` of every alerts request the fake answered for the tenant since `from`. */
function skipsSince(tenantId: string, from: number): number[] {
  return env.defender
    .requests(tenantId)
    .slice(from)
    .map((r) => Number(r.query.get("$skip") ?? 0));
}

describe("a run that reaches its deadline", () => {
  it("does not deliver a page that arrives after the deadline; the next run delivers it, once", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 30, { start: minutesAgo(30), spacingMs: 20_000 }));
    // The pull's clock jumps past its deadline while the first page is on its way.
    let offset = 0;
    env.defender.afterPage(tenantId, () => {
      offset += 3_600_000;
    });
    const svc = services({ clock: () => Date.now() + offset });
    const first = await svc.tenantPull.run(tenantId, capturingLogger());
    env.defender.afterPage(tenantId, null);
    expect(first).toMatchObject({ outcome: "pulled", alerts: 0, complete: false });
    const served = await tally(tenantId);
    expect(served.served).toBe(30);
    expect(served.delivered).toBe(0);
    const state = await svc.pullState.read(tenantId);
    expect(state?.window).toBeDefined();
    expect(pullHealthOf(state, Date.now).catchingUp).toBe(true);

    const second = await svc.tenantPull.run(tenantId, capturingLogger());
    expect(second).toMatchObject({ outcome: "pulled", alerts: 30, complete: true });
    expectExactlyOnce(await tally(tenantId));
  });

  it("abandons a sink that never answers at the run's bound, says run_out_of_time, and releases the tenant", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 20, { start: minutesAgo(30), spacingMs: 20_000 }));
    const { sink: hanging, abandoned } = hangingSink();
    // Deadline 1 s, request timeout 1 s, 0.5 s of grace: the bound is 2.5 s after the start.
    const started = Date.now();
    const svc = services({ sink: hanging, pull: { maxRunSeconds: 1, requestTimeoutSeconds: 1 }, pullTimings: { deliveryGraceMs: 500, releaseGraceMs: 500 } });
    const outcome = await svc.tenantPull.run(tenantId, capturingLogger());
    const took = Date.now() - started;
    expect(outcome).toEqual({ outcome: "failed", code: "run_out_of_time", category: "transient" });
    expect(abandoned()).toBe(1);
    expect(took).toBeGreaterThanOrEqual(2_400);
    expect(took).toBeLessThan(10_000);
    const state = await svc.pullState.read(tenantId);
    expect(state?.lastErrorCode).toBe("run_out_of_time");
    // Released, not left to lapse: the next run starts at once and delivers everything.
    expect(state?.leaseOwner).toBeUndefined();
    const next = await services().tenantPull.run(tenantId, capturingLogger());
    expect(next).toMatchObject({ outcome: "pulled", alerts: 20, complete: true });
    expectExactlyOnce(await tally(tenantId));
  });
});

describe("a page slower than the lease", () => {
  it("keeps the lease while one page takes longer than the lease, so a second pull stays out", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 10, { start: minutesAgo(30), spacingMs: 20_000 }));
    env.defender.setLatency(2_500, tenantId);
    const timings = { leaseMs: 900 };
    const log = capturingLogger();
    const slow = services({ pullTimings: timings }).tenantPull.run(tenantId, log);
    // Well past the lease's first expiry, while the first page is still on its way.
    await new Promise((resolve) => setTimeout(resolve, 1_800));
    const rival = await services({ pullTimings: timings }).tenantPull.run(tenantId, capturingLogger());
    env.defender.setLatency(0, tenantId);
    expect(rival).toEqual({ outcome: "busy" });
    expect(await slow).toMatchObject({ outcome: "pulled", alerts: 10, complete: true });
    expect(log.lines.join("\n")).not.toMatch(/lease lost/);
    const state = await services().pullState.readAll();
    expect(pullHealthOf(state.get(tenantId), Date.now).warnings.map((w) => w.code)).not.toContain("lease_lost");
    expectExactlyOnce(await tally(tenantId));
  }, 20_000);
});

describe("a page that does not parse", () => {
  it("holds its position for two runs, then dead-letters only the millisecond that never parses and delivers the rest", async () => {
    const tenantId = await connectedTenant(env);
    const alerts = generateAlerts(tenantId, 120, { start: minutesAgo(40), spacingMs: 15_000 });
    const broken = alerts[70]?.id ?? "";
    env.defender.addAlerts(tenantId, alerts);
    env.defender.corruptPagesHolding(tenantId, broken);
    const sleeps: number[] = [];
    const svc = services({ sleep: async (ms) => void sleeps.push(ms) });

    for (const run of [1, 2]) {
      const outcome = await svc.tenantPull.run(tenantId, capturingLogger());
      expect(outcome).toMatchObject({ outcome: "pulled", complete: false });
      const state = await svc.pullState.read(tenantId);
      expect(state?.invalidSpan?.runs).toBe(run);
      expect(state?.lastWarningCode).toBe("invalid_page_held");
      expect(await svc.deadLetters.list(tenantId)).toEqual([]);
    }
    // Each failing read waited before it was tried again: 0.5–1 s, then 1–2 s.
    expect(sleeps.filter((ms) => ms >= 500).length).toBeGreaterThanOrEqual(4);

    let outcome = await svc.tenantPull.run(tenantId, capturingLogger());
    for (let run = 0; run < 5 && !(outcome.outcome === "pulled" && outcome.complete); run++) {
      outcome = await svc.tenantPull.run(tenantId, capturingLogger());
    }
    expect(outcome).toMatchObject({ outcome: "pulled", complete: true });
    const letters = await svc.deadLetters.list(tenantId);
    expect(letters).toHaveLength(1);
    expect(letters[0]?.reason).toBe("invalid_page");
    expect(Date.parse(letters[0]?.pageTo ?? "") - Date.parse(letters[0]?.pageFrom ?? "")).toBe(1);
    const t = await tally(tenantId);
    expect(t.delivered).toBe(119);
    expect(t.missingFinal).toEqual([`${broken}@${alerts[70]?.lastUpdateTime}`]);
    expect(t.missing).toEqual([]);
    expect(t.duplicates).toBe(0);
    expect((await svc.pullState.read(tenantId))?.invalidSpan).toBeUndefined();
    env.defender.corruptPagesHolding(tenantId, null);
  });

  it("reads a page that was broken for a moment in the next run, with no dead letter", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 30, { start: minutesAgo(20), spacingMs: 20_000 }));
    // Every attempt of the first page (one request covers the whole window) comes back cut short.
    env.defender.corruptPages(tenantId, { times: 3 });
    const svc = services();
    expect(await svc.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 0, complete: false });
    expect((await svc.pullState.read(tenantId))?.lastWarningCode).toBe("invalid_page_held");
    expect(await svc.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 30, complete: true });
    expect(await svc.deadLetters.list(tenantId)).toEqual([]);
    expect((await svc.pullState.read(tenantId))?.invalidSpan).toBeUndefined();
    const t = await tally(tenantId);
    expect(t.delivered).toBe(30);
    expectExactlyOnce(t);
  });
});

describe("a page larger than any page may be", () => {
  it("is refused unread, narrowed at once to the millisecond that causes it, which is dead-lettered; every other alert is delivered once", async () => {
    const tenantId = await connectedTenant(env);
    const alerts = generateAlerts(tenantId, 120, { start: minutesAgo(40), spacingMs: 15_000 });
    const huge = alerts[60] as (typeof alerts)[number];
    env.defender.addAlerts(tenantId, alerts);
    // 5 MiB in one alert: a page of 50 may take at most 4 MiB (maxPageBytes).
    env.defender.poisonAlert(tenantId, huge.id, JSON.stringify({ ...huge, description: "x".repeat(5 * 1024 * 1024) }));
    const svc = services();
    try {
      expect(await svc.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 119, complete: true });
    } finally {
      env.defender.poisonAlert(tenantId, huge.id, null);
    }
    const letters = await svc.deadLetters.list(tenantId);
    expect(letters.map((l) => l.reason)).toEqual(["page_too_large"]);
    expect(Date.parse(letters[0]?.pageTo ?? "") - Date.parse(letters[0]?.pageFrom ?? "")).toBe(1);
    // Nothing of the answer was kept, only why.
    expect((await svc.deadLetters.read(letters[0]?.name ?? ""))?.raw).toMatch(/^\(not kept: larger than \d+ bytes\)$/);
    const t = await tally(tenantId);
    expect(t.delivered).toBe(119);
    expect(t.missing).toEqual([]);
    expect(t.duplicates).toBe(0);
    // Narrowed at once: no run held for it.
    expect((await svc.pullState.read(tenantId))?.lastWarningCode).not.toBe("invalid_page_held");
  });
});

describe("a crowded millisecond left half-read", () => {
  it("carries on at the saved $skip in the next run instead of reading the millisecond again from the start", async () => {
    const tenantId = await connectedTenant(env);
    const stamp = toMdeTimestamp(Date.now() - 5 * 60_000);
    env.defender.addAlerts(tenantId, Array.from({ length: 400 }, (_, i) => makeAlert({ id: `da-crowd-${i}`, lastUpdateTime: stamp })));
    // The clock passes the deadline on the fifth page inside the millisecond ($skip 200).
    let offset = 0;
    env.defender.afterPage(tenantId, ({ query }) => {
      const [, , from, , , , to] = (query.get("$filter") ?? "").split(" ");
      if (Date.parse(to ?? "") - Date.parse(from ?? "") === 1 && query.get("$skip") === "200" && offset === 0) offset = 3_600_000;
    });
    const svc = services({ clock: () => Date.now() + offset });
    const first = await svc.tenantPull.run(tenantId, capturingLogger());
    env.defender.afterPage(tenantId, null);
    expect(first).toMatchObject({ outcome: "pulled", complete: false });
    expect((await svc.pullState.read(tenantId))?.window?.instant).toEqual({ pass: 0, skip: 200, foundNew: true });
    expect((await tally(tenantId)).delivered).toBe(200);

    const before = env.defender.requests(tenantId).length;
    const second = await svc.tenantPull.run(tenantId, capturingLogger());
    expect(second).toMatchObject({ outcome: "pulled", alerts: 200, complete: true });
    // Pass 0 from $skip 200 to the empty page at 400, then one verifying pass from 0; then the
    // rest of the window, which needs no $skip.
    const skips = skipsSince(tenantId, before);
    expect(skips.slice(0, 14)).toEqual([200, 250, 300, 350, 400, 0, 50, 100, 150, 200, 250, 300, 350, 400]);
    expect(skips.slice(14).every((skip) => skip === 0)).toBe(true);
    const t = await tally(tenantId);
    expect(t.delivered).toBe(400);
    expectExactlyOnce(t);
  });

  it("stores nothing twice when a resumed page comes back in another order: the sink's copy of the page counts as delivered", async () => {
    const tenantId = await connectedTenant(env);
    const stamp = toMdeTimestamp(Date.now() - 5 * 60_000);
    env.defender.addAlerts(tenantId, Array.from({ length: 160 }, (_, i) => makeAlert({ id: `da-order-${i}`, lastUpdateTime: stamp })));
    // An earlier attempt wrote the millisecond's page at $skip 50 and died before its checkpoint.
    const svc = services();
    const sink = new BlobAlertSink(openContainer(loadConfig({ ...process.env, ...env.env }).storage, env.env["ALERTS_CONTAINER"] ?? "alerts", () => {
      throw new Error("no credential needed for Azurite");
    }));
    let crashed = false;
    const dying: AlertSink = {
      write: async (key, alerts, options) => {
        await sink.write(key, alerts, options);
        if (key.skip === 50 && !crashed) {
          crashed = true;
          throw new SinkError("the process died here");
        }
      },
    };
    const first = await services({ sink: dying }).tenantPull.run(tenantId, capturingLogger());
    expect(first).toMatchObject({ outcome: "failed", code: "sink_failed" });
    expect(crashed).toBe(true);
    // The service now orders the millisecond differently: the page at $skip 50 holds other alerts.
    env.defender.setOrder(tenantId, "shuffled");
    const second = await svc.tenantPull.run(tenantId, capturingLogger());
    expect(second).toMatchObject({ outcome: "pulled", complete: true });
    const t = await tally(tenantId);
    expect(t.delivered).toBe(160);
    expectExactlyOnce(t);
  });
});
