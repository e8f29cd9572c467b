import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { createServices, type ServiceOverrides, type Services } from "../../shared/services";
import { generateAlerts, makeAlert, toMdeTimestamp } from "../fakes/alerts";
import { capturingLogger, connectedTenant, deliveryTally, seededRandom, type DeliveryTally } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * The Defender API as unkind as the service: no order at all (a new one for every request),
 * alerts inserted, updated and removed between page reads and while a run is stopped, and its
 * call quota enforced with 429s. Counts served vs delivered vs duplicated versions.
 */

const PAGE = 50;
/** The app's longest run (the default): a two-minute Retry-After fits in it, an hour does not. */
const MAX_RUN_MS = 480_000;

let env: TestEnvironment;
/** The simulated clock, shared by the app and the Defender fake (Date header, quota). */
let offset = 0;
const simNow = (): number => Date.now() + offset;

beforeAll(async () => {
  env = await startTestEnvironment({
    PULL_SETTLE_SECONDS: "0",
    PULL_PAGE_SIZE: String(PAGE),
    PULL_OVERLAP_MINUTES: "10",
    PULL_MAX_RUN_SECONDS: String(MAX_RUN_MS / 1000),
  });
});
afterAll(async () => {
  await env?.stop();
});
afterEach(() => {
  offset = 0;
  env.defender.setClockOffset(0);
});

function advance(ms: number): void {
  offset += ms;
  env.defender.setClockOffset(offset);
}

/** A process whose sleeps pass simulated time, so the fake's quota window moves with them. */
function services(extra: ServiceOverrides = {}): Services & { sleeps: number[] } {
  const sleeps: number[] = [];
  const svc = createServices(loadConfig({ ...process.env, ...env.env }), {
    clock: simNow,
    sleep: async (ms) => {
      sleeps.push(ms);
      advance(ms);
    },
    ...extra,
  });
  return Object.assign(svc, { sleeps });
}

/** Runs until a complete run delivers nothing new and the checkpoint has passed every alert. */
async function pullToTheEnd(tenantId: string, svc: Services, maxRuns = 20): Promise<{ runs: number; stopped: number }> {
  let stopped = 0;
  for (let run = 1; run <= maxRuns; run++) {
    const outcome = await svc.tenantPull.run(tenantId, capturingLogger());
    if (outcome.outcome !== "pulled") throw new Error(`run ${run} ended ${JSON.stringify(outcome)}`);
    if (!outcome.complete) stopped++;
    const newest = Math.max(...env.defender.alerts(tenantId).map((a) => Date.parse(a.lastUpdateTime)));
    const checkpoint = Date.parse((await svc.pullState.read(tenantId))?.watermark ?? "");
    if (outcome.complete && outcome.alerts === 0 && checkpoint > newest) return { runs: run, stopped };
    advance(60_000);
  }
  throw new Error(`still delivering after ${maxRuns} runs`);
}

function expectExactlyOnce(t: DeliveryTally): void {
  expect(t.missing).toEqual([]);
  expect(t.missingFinal).toEqual([]);
  expect(t.duplicated).toEqual([]);
  expect(t.duplicates).toBe(0);
}

describe("alerts that move while a window is read", () => {
  it("loses nothing that stays visible and repeats nothing when alerts are inserted, updated and removed between pages and before a resume", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.setOrder(tenantId, "unstable");
    const start = simNow() - 50 * 60_000;
    const initial = generateAlerts(tenantId, 1500, { start: new Date(start), spacingMs: 2_000 });
    env.defender.addAlerts(tenantId, initial);
    const random = seededRandom(15);
    let seq = 0;
    let inserted = 0;
    let updated = 0;
    let removed = 0;
    const churn = (inserts: number, updates: number, removals: number): void => {
      const now = env.defender.now();
      const present = env.defender.alerts(tenantId);
      for (let i = 0; i < updates && present.length > 0; i++) {
        const alert = present[Math.floor(random() * present.length)];
        if (!alert) continue;
        // An analyst resolves it: the alert leaves the span being read for "now".
        env.defender.updateAlert(tenantId, alert.id, { status: "Resolved", lastUpdateTime: toMdeTimestamp(now - Math.floor(random() * 1000)) });
        updated++;
      }
      for (let i = 0; i < removals && present.length > 0; i++) {
        const alert = present.splice(Math.floor(random() * present.length), 1)[0];
        if (alert && env.defender.removeAlert(tenantId, alert.id)) removed++;
      }
      for (let i = 0; i < inserts; i++) {
        // Ingested a little late, inside the overlap, so earlier in the window than its read position.
        const at = now - Math.floor(random() * 5 * 60_000);
        env.defender.addAlerts(tenantId, [makeAlert({ id: `uo-${tenantId.slice(0, 8)}-${seq++}`, lastUpdateTime: toMdeTimestamp(at) })]);
        inserted++;
      }
    };

    let pagesSeen = 0;
    env.defender.afterPage(tenantId, ({ index }) => {
      pagesSeen = index + 1;
      // More than a page shifts between two page reads, in every direction.
      if (index < 40) churn(PAGE + 10, PAGE, 20);
      // The run's time runs out after the tenth page: the next run resumes the window.
      if (index === 9) advance(MAX_RUN_MS + 1_000);
    });
    const svc = services();
    const first = await svc.tenantPull.run(tenantId, capturingLogger());
    expect(first).toMatchObject({ outcome: "pulled", complete: false });
    // While it is stopped: far more than an overlap or a page moves before the resume.
    churn(4 * PAGE, 4 * PAGE, 3 * PAGE);
    const { runs, stopped } = await pullToTheEnd(tenantId, services());
    env.defender.afterPage(tenantId, null);

    const t = await deliveryTally(env, tenantId);
    console.log(
      `unstable order: ${initial.length} alerts, inserted ${inserted}, updated ${updated}, removed ${removed}; ` +
        `pages ${pagesSeen}, runs ${runs + 1} (${stopped + 1} stopped early); served ${t.served}, delivered ${t.delivered}, duplicates ${t.duplicates}`,
    );
    expect(pagesSeen).toBeGreaterThanOrEqual(40);
    expect(Math.min(updated, inserted, removed)).toBeGreaterThan(10 * PAGE);
    expect(t.finalVersions).toBe(initial.length + inserted - removed);
    // Every alert still there has its newest version delivered, and nothing twice.
    expect(t.missingFinal).toEqual([]);
    expect(t.duplicated).toEqual([]);
    expect(t.duplicates).toBe(0);
    // A version served but not delivered was on the page the deadline cut off, and has since been
    // removed or replaced: nothing that stays visible.
    const current = new Set(env.defender.alerts(tenantId).map((a) => `${a.id}@${a.lastUpdateTime}`));
    expect(t.missing.filter((version) => current.has(version))).toEqual([]);
    expect(t.missing.length).toBeLessThanOrEqual(2 * PAGE);
  }, 120_000);
});

describe("the call quota enforced with 429s", () => {
  it("pulls a backlog under a quota below the app's own budget: backs off as told, loses nothing, repeats nothing", async () => {
    const tenantId = await connectedTenant(env);
    // Other clients of the same tenant spend most of the documented 100 calls a minute.
    const quota = { perMinute: 8 };
    env.defender.enforceQuota(tenantId, quota);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 2000, { start: new Date(simNow() - 60 * 60_000), spacingMs: 1_800 }));
    const svc = services();
    const { runs } = await pullToTheEnd(tenantId, svc);
    env.defender.enforceQuota(tenantId, null);

    const requests = env.defender.requests(tenantId);
    const ok = requests.filter((r) => r.status === 200);
    const throttled = requests.filter((r) => r.status === 429);
    const t = await deliveryTally(env, tenantId);
    console.log(
      `quota ${quota.perMinute}/min: ${requests.length} requests (${ok.length} answered, ${throttled.length} throttled) in ${runs} runs, ` +
        `waits ${svc.sleeps.length}; served ${t.served}, delivered ${t.delivered}, duplicates ${t.duplicates}`,
    );
    expect(throttled.length).toBeGreaterThan(0);
    // Told to wait, the app waits as long as it is told: each 429 costs at most one more request,
    // never a burst of retries into a closed quota.
    expect(throttled.length).toBeLessThanOrEqual(ok.length);
    expect(throttled.length).toBeLessThanOrEqual(svc.sleeps.length);
    expect(t.delivered).toBe(2000);
    expectExactlyOnce(t);
  }, 120_000);

  it("caps a Retry-After of an hour at two minutes and finishes the run", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 30, { start: new Date(simNow() - 20 * 60_000), spacingMs: 10_000 }));
    env.defender.throttle(tenantId, { times: 1, retryAfterSeconds: 3600 });
    const svc = services();
    // A run may last longer than the cap but far less than the hour asked for.
    const outcome = await svc.tenantPull.run(tenantId, capturingLogger());
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 30 });
    expect(svc.sleeps).toContain(120_000);
    expect(svc.sleeps.every((ms) => ms <= 120_000)).toBe(true);
  });
});
