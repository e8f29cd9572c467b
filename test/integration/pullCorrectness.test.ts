import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { createServices, type ServiceOverrides, type Services } from "../../shared/services";
import { tenantTokenSecretName } from "../../shared/secrets/tenantTokens";
import type { AlertBatchKey, AlertEnvelope, AlertSink } from "../../shared/sinks/alertSink";
import { BlobAlertSink } from "../../shared/sinks/blobAlertSink";
import { openContainer } from "../../shared/sinks/containers";
import { generateAlerts, makeAlert, toMdeTimestamp, type MdeAlert } from "../fakes/alerts";
import { capturingLogger, connectedTenant, deliveredEnvelopes, deliveryTally, minutesAgo, seededRandom, type DeliveryTally } from "../harness/pullFixture";
import { registerTenant, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * "Every alert, exactly once" under what real tenants do. Each test counts the versions the
 * Defender fake served, the versions the blob sink holds and the duplicates among them.
 */

let env: TestEnvironment;

beforeAll(async () => {
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "2500", PULL_OVERLAP_MINUTES: "10" });
});
afterAll(async () => {
  await env?.stop();
});
afterEach(() => {
  env.defender.setClockOffset(0);
  env.defender.setNextLinkPaging(false);
});

function services(overrides: ServiceOverrides & { pageSize?: number } = {}): Services {
  const { pageSize, ...rest } = overrides;
  return createServices(
    loadConfig({ ...process.env, ...env.env, ...(pageSize ? { PULL_PAGE_SIZE: String(pageSize) } : {}) }),
    { sleep: async () => undefined, ...rest },
  );
}

async function pull(tenantId: string, svc: Services) {
  return svc.tenantPull.run(tenantId, capturingLogger());
}

/**
 * Pulls until a complete run delivers nothing new and its checkpoint has passed the newest
 * version the fake holds (a version updated a moment ago is not due before the window reaches it).
 */
async function pullUntilQuiet(tenantId: string, svc: Services, maxRuns = 12): Promise<number> {
  for (let run = 1; run <= maxRuns; run++) {
    const outcome = await pull(tenantId, svc);
    if (outcome.outcome !== "pulled") throw new Error(`pull ${run} ended ${JSON.stringify(outcome)}`);
    const newest = Math.max(...env.defender.alerts(tenantId).map((a) => Date.parse(a.lastUpdateTime)));
    const checkpoint = Date.parse((await svc.pullState.read(tenantId))?.watermark ?? "");
    if (outcome.complete && outcome.alerts === 0 && checkpoint > newest) return run;
    if (checkpoint <= newest) await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
  throw new Error(`still delivering after ${maxRuns} runs`);
}

const tally = (tenantId: string): Promise<DeliveryTally> => deliveryTally(env, tenantId);

function expectExactlyOnce(t: DeliveryTally): void {
  expect(t.missing).toEqual([]);
  expect(t.missingFinal).toEqual([]);
  expect(t.duplicates).toBe(0);
}

describe("bulk updates while a window is paged", () => {
  it.each([
    { pageSize: 2500, count: 6000, share: 0.01, order: "sorted" as const },
    { pageSize: 2500, count: 6000, share: 0.05, order: "sorted" as const },
    { pageSize: 2500, count: 6000, share: 0.3, order: "sorted" as const },
    { pageSize: 2500, count: 6000, share: 0.3, order: "shuffled" as const },
    { pageSize: 50, count: 600, share: 0.01, order: "sorted" as const },
    { pageSize: 50, count: 600, share: 0.05, order: "sorted" as const },
    { pageSize: 50, count: 600, share: 0.3, order: "sorted" as const },
  ])("loses and repeats nothing when $share of $count alerts are updated mid-window (page $pageSize, $order)", async ({ pageSize, count, share, order }) => {
    const tenantId = await connectedTenant(env);
    env.defender.setOrder(tenantId, order);
    const alerts = generateAlerts(tenantId, count, { start: minutesAgo(60), spacingMs: Math.floor(3_000_000 / count) });
    env.defender.addAlerts(tenantId, alerts);
    const random = seededRandom(count + Math.round(share * 100));
    let updated = 0;
    env.defender.afterPage(tenantId, ({ index }) => {
      if (index !== 1) return;
      // An analyst resolves a batch: those alerts leave the window being read and move to now.
      for (const alert of alerts) {
        if (random() >= share) continue;
        env.defender.updateAlert(tenantId, alert.id, { status: "Resolved", lastUpdateTime: toMdeTimestamp(Date.now()) });
        updated++;
      }
    });
    const svc = services({ pageSize });
    const runs = await pullUntilQuiet(tenantId, svc);
    env.defender.afterPage(tenantId, null);
    const t = await tally(tenantId);
    const calls = env.defender.pageRequests(tenantId);
    console.log(
      `bulk update page=${pageSize} ${order} ${share * 100}%: updated ${updated}, served ${t.served}, delivered ${t.delivered}, ` +
        `duplicates ${t.duplicates}, runs ${runs}, calls ${calls} (${(calls / t.delivered).toFixed(4)} per alert)`,
    );
    expect(updated).toBeGreaterThan(0);
    expect(t.finalVersions).toBe(count);
    // Versions updated before the pull reached them were never served, so never owed.
    expect(t.delivered).toBe(t.served);
    expectExactlyOnce(t);
  }, 60_000);
});

describe("a host clock that differs from the API's", () => {
  it.each([-5, 5, 15])("loses nothing with the host clock %i min off and ingestion delays up to the overlap", async (skewMinutes) => {
    const tenantId = await connectedTenant(env);
    // A simulated two hours: the fake's clock and ours move five minutes a cycle.
    let offset = -3 * 3600_000;
    const startOfStream = Date.now() + offset;
    const random = seededRandom(1200 + skewMinutes);
    const alerts: MdeAlert[] = [];
    const visible = new Map<string, number>();
    for (let i = 0; i < 1200; i++) {
      const at = startOfStream + i * 6_000;
      const alert = makeAlert({ id: `da-skew${skewMinutes}-${i}`, lastUpdateTime: toMdeTimestamp(at) });
      alerts.push(alert);
      // Visible up to the overlap (10 min) after its lastUpdateTime.
      visible.set(alert.id, at + Math.floor(random() * 10 * 60_000));
    }
    env.defender.addAlerts(tenantId, alerts, { visibleAt: (alert) => visible.get(alert.id) ?? 0 });
    env.defender.setClockOffset(offset);
    const svc = services({ clock: () => Date.now() + offset + skewMinutes * 60_000 });
    for (let cycle = 0; cycle < 30; cycle++) {
      const outcome = await pull(tenantId, svc);
      expect(outcome.outcome).toBe("pulled");
      offset += 5 * 60_000;
      env.defender.setClockOffset(offset);
    }
    const t = await tally(tenantId);
    const state = await svc.pullState.read(tenantId);
    console.log(`host clock ${skewMinutes} min: served ${t.served}, delivered ${t.delivered}, duplicates ${t.duplicates}, measured skew ${state?.clockSkewMs} ms`);
    expect(t.delivered).toBe(1200);
    expectExactlyOnce(t);
    // The measured difference is the configured one, to the Date header's second.
    expect(Math.abs((state?.clockSkewMs ?? 0) + skewMinutes * 60_000)).toBeLessThan(2_000);
    const listed = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    const health = listed.json<{ health: { clockSkewSeconds: number; warnings: Array<{ code: string }> } }>().health;
    expect(Math.abs(health.clockSkewSeconds + skewMinutes * 60)).toBeLessThanOrEqual(2);
    expect(health.warnings.map((w) => w.code)).toContain("clock_skew");
  }, 60_000);
});

describe("pages that misbehave", () => {
  it("never follows a nextLink that loops, and delivers the window", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 180, { start: minutesAgo(30), spacingMs: 5_000 }));
    env.defender.setNextLinkPaging("loop");
    await pullUntilQuiet(tenantId, services({ pageSize: 50 }));
    const requests = env.defender.requests(tenantId);
    expect(requests.some((r) => r.query.has("$skiptoken"))).toBe(false);
    const t = await tally(tenantId);
    expect(t.delivered).toBe(180);
    expectExactlyOnce(t);
  });

  it("never sends the token to a nextLink on another origin, and delivers the window", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 120, { start: minutesAgo(30), spacingMs: 5_000 }));
    env.defender.setNextLinkPaging("foreign");
    const svc = services({ pageSize: 50 });
    await pullUntilQuiet(tenantId, svc);
    const t = await tally(tenantId);
    expect(t.delivered).toBe(120);
    expectExactlyOnce(t);
    // Reported where the operator looks, with the link itself as the evidence.
    const letters = await svc.deadLetters.list(tenantId);
    expect(letters.length).toBeGreaterThan(0);
    expect(new Set(letters.map((l) => l.reason))).toEqual(new Set(["foreign_next_link"]));
    expect((await svc.deadLetters.read(letters[0]?.name ?? ""))?.raw).toMatch(/^https:\/\/attacker\.example\.test\//);
  });

  it("reads on past a short page inside a crowded millisecond", async () => {
    const tenantId = await connectedTenant(env);
    const stamp = toMdeTimestamp(Date.now() - 3 * 60_000);
    env.defender.addAlerts(tenantId, Array.from({ length: 130 }, (_, i) => makeAlert({ id: `da-short-${i}`, lastUpdateTime: stamp })));
    let armed = true;
    env.defender.afterPage(tenantId, ({ query }) => {
      const [, , from, , , , to] = (query.get("$filter") ?? "").split(" ");
      if (armed && Date.parse(to ?? "") - Date.parse(from ?? "") === 1) {
        armed = false;
        // The next page of that millisecond comes back short although more follow it.
        env.defender.shortPages(tenantId, { times: 1, size: 20 });
      }
    });
    await pullUntilQuiet(tenantId, services({ pageSize: 50 }));
    env.defender.afterPage(tenantId, null);
    expect(armed).toBe(false);
    const t = await tally(tenantId);
    expect(t.delivered).toBe(130);
    expectExactlyOnce(t);
  });

  it("dead-letters an alert without an id and one that is not JSON, delivers the rest of their page and counts each once", async () => {
    const tenantId = await connectedTenant(env);
    const alerts = generateAlerts(tenantId, 100, { start: minutesAgo(20), spacingMs: 5_000 });
    env.defender.addAlerts(tenantId, alerts);
    env.defender.poisonAlert(tenantId, alerts[40]?.id ?? "", '{"title":"an alert without its id"}');
    env.defender.poisonAlert(tenantId, alerts[60]?.id ?? "", `{"id":"${alerts[60]?.id ?? ""}","lastUpdateTime":"${alerts[60]?.lastUpdateTime ?? ""}","n":tru}`);
    const svc = services();
    await pullUntilQuiet(tenantId, svc);
    await pull(tenantId, svc);
    const t = await tally(tenantId);
    expect(t.delivered).toBe(98);
    expect(t.missing).toEqual([]);
    expect(t.duplicates).toBe(0);
    const letters = await svc.deadLetters.list(tenantId);
    expect(letters.map((l) => l.reason).sort()).toEqual(["invalid_json", "missing_id"]);
    const letter = await svc.deadLetters.read(letters.find((l) => l.reason === "missing_id")?.name ?? "");
    expect(letter).toMatchObject({ tenantId, source: "mde", reason: "missing_id", raw: '{"title":"an alert without its id"}' });
    const listed = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    const health = listed.json<{ health: { deadLetters: number; lastDeadLetterReason: string; warnings: Array<{ code: string }> } }>().health;
    // Read again in the next cycles' overlap, still counted once each.
    expect(health.deadLetters).toBe(2);
    expect(health.warnings.map((w) => w.code)).toContain("dead_letters");
  });

  it("re-drives the dead letters the current code accepts and keeps the rest, through the operator API", async () => {
    const tenantId = await connectedTenant(env, "Redrive Ltd");
    const alerts = generateAlerts(tenantId, 20, { start: minutesAgo(20), spacingMs: 5_000 });
    env.defender.addAlerts(tenantId, alerts);
    env.defender.poisonAlert(tenantId, alerts[5]?.id ?? "", '{"title":"still no id"}');
    const svc = services();
    await pullUntilQuiet(tenantId, svc);
    // As an older version would have left it: an alert it refused that this version reads.
    const recovered = makeAlert({ id: "da-recovered", lastUpdateTime: "2026-01-02T03:04:05.1234567" });
    const { evidence: _evidence, ...summary } = recovered;
    await svc.deadLetters.write({
      tenantId,
      source: "mde",
      reason: "invalid_time",
      window: { from: "2026-01-02T00:00:00.000Z", to: "2026-01-02T06:00:00.000Z" },
      page: { from: "2026-01-02T03:00:00.000Z", to: "2026-01-02T03:10:00.000Z", skip: 0 },
      raw: JSON.stringify(summary),
      at: new Date().toISOString(),
    });
    const listed = await env.app.http("listDeadLetters", { method: "GET", url: `/api/tenants/${tenantId}/dead-letters`, params: { tenantId } });
    expect(listed.status).toBe(200);
    const letters = listed.json<{ deadLetters: Array<{ reason: string; name: string }> }>().deadLetters;
    expect(letters.map((l) => l.reason).sort()).toEqual(["invalid_time", "missing_id"]);
    // Where and why only: never the alert's content.
    expect(listed.body).not.toContain("still no id");
    const redriven = await env.app.http("redriveDeadLetters", { method: "POST", url: `/api/tenants/${tenantId}/dead-letters/redrive`, params: { tenantId } });
    expect(redriven.status).toBe(200);
    expect(redriven.json()).toEqual({ examined: 2, redriven: 1, delivered: 1, remaining: 1 });
    const ids = (await deliveredEnvelopes(env, tenantId)).map((e) => e.alert.id);
    expect(ids.filter((id) => id === "da-recovered")).toHaveLength(1);
    expect(ids).toHaveLength(20);
    expect((await svc.deadLetters.list(tenantId)).map((l) => l.reason)).toEqual(["missing_id"]);
    // A second re-drive finds nothing new to deliver.
    const again = await env.app.http("redriveDeadLetters", { method: "POST", url: `/api/tenants/${tenantId}/dead-letters/redrive`, params: { tenantId } });
    expect(again.json()).toEqual({ examined: 1, redriven: 0, delivered: 0, remaining: 1 });
    const bad = await env.app.http("redriveDeadLetters", { method: "POST", url: "/api/tenants/not-a-guid/dead-letters/redrive", params: { tenantId: "not-a-guid" } });
    expect(bad.status).toBe(400);
  });

  it("dead-letters a page that never parses and carries on past it", async () => {
    const tenantId = await connectedTenant(env);
    const stamp = toMdeTimestamp(Date.now() - 3 * 60_000);
    env.defender.addAlerts(tenantId, Array.from({ length: 60 }, (_, i) => makeAlert({ id: `da-corrupt-${i}`, lastUpdateTime: stamp })));
    let armed = true;
    env.defender.afterPage(tenantId, ({ query }) => {
      const [, , from, , , , to] = (query.get("$filter") ?? "").split(" ");
      if (armed && Date.parse(to ?? "") - Date.parse(from ?? "") === 1) {
        armed = false;
        // Enough broken answers that the page (and those read ahead of it) fail every attempt.
        env.defender.corruptPages(tenantId, { times: 9 });
      }
    });
    const svc = services({ pageSize: 50 });
    await pullUntilQuiet(tenantId, svc);
    env.defender.afterPage(tenantId, null);
    const t = await tally(tenantId);
    expect(t.delivered).toBe(60);
    expectExactlyOnce(t);
    const letters = await svc.deadLetters.list(tenantId);
    expect(letters.length).toBeGreaterThan(0);
    expect(new Set(letters.map((l) => l.reason))).toEqual(new Set(["invalid_page"]));
    const letter = await svc.deadLetters.read(letters[0]?.name ?? "");
    // Kept raw, with where it came from, so it can be read again.
    expect(letter?.raw.length).toBeGreaterThan(0);
    expect(() => JSON.parse(letter?.raw ?? "")).toThrow();
    expect(letter?.page.to).toBe(new Date(Date.parse(letter?.page.from ?? "") + 1).toISOString());
  });

  it("reads zone-less timestamps as UTC whatever the host's time zone", async () => {
    const previous = process.env["TZ"];
    process.env["TZ"] = "Asia/Kolkata";
    try {
      const tenantId = await connectedTenant(env);
      const alerts = generateAlerts(tenantId, 60, { start: minutesAgo(30), spacingMs: 20_000 }).map((a) => ({
        ...a,
        lastUpdateTime: a.lastUpdateTime.replace(/Z$/, ""),
      }));
      env.defender.addAlerts(tenantId, alerts);
      const svc = services();
      await pullUntilQuiet(tenantId, svc);
      await pull(tenantId, svc);
      const t = await tally(tenantId);
      expect(t.delivered).toBe(60);
      expectExactlyOnce(t);
    } finally {
      if (previous === undefined) delete process.env["TZ"];
      else process.env["TZ"] = previous;
    }
  });
});

describe("dedupe state", () => {
  it("holds 50,000 versions inside one overlap window and repeats none of them", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 50_000, { start: minutesAgo(8), spacingMs: 9 }));
    const svc = services();
    const first = await pull(tenantId, svc);
    expect(first).toMatchObject({ outcome: "pulled", alerts: 50_000, complete: true });
    // Two more cycles re-read the whole overlap; a fresh process must know every version too.
    expect(await pull(tenantId, services())).toMatchObject({ alerts: 0 });
    expect(await pull(tenantId, svc)).toMatchObject({ alerts: 0 });
    const state = await svc.pullState.read(tenantId);
    expect(state?.delivered.size).toBeGreaterThanOrEqual(50_000);
    const t = await tally(tenantId);
    console.log(`50,000 in the overlap: delivered ${t.delivered}, duplicates ${t.duplicates}, calls ${env.defender.pageRequests(tenantId)}`);
    expect(t.delivered).toBe(50_000);
    expectExactlyOnce(t);
  }, 60_000);
});

describe("stalls are bounded and visible", () => {
  it("gives up on a Key Vault that accepts and never answers, and says so in health", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: minutesAgo(10), spacingMs: 1000 }));
    env.vault.hang("all");
    const started = Date.now();
    try {
      const outcome = await pull(tenantId, services({ storageTimeoutMs: 1_500 }));
      expect(outcome).toMatchObject({ outcome: "failed", code: "secret_store_timeout", category: "transient" });
    } finally {
      env.vault.hang(0);
    }
    expect(Date.now() - started).toBeLessThan(10_000);
    const state = await services().pullState.read(tenantId);
    expect(state).toMatchObject({ lastErrorCode: "secret_store_timeout", consecutiveFailures: 1 });
    // The vault is back: the next cycle delivers.
    expect(await pull(tenantId, services())).toMatchObject({ outcome: "pulled", alerts: 5 });
  });
});

describe("consent and offboarding races", () => {
  it("keeps a re-consent that lands between the token write-back's re-read and its write", async () => {
    const tenantId = await connectedTenant(env);
    const name = tenantTokenSecretName(tenantId);
    const before = JSON.parse(env.vault.peekLatest(name)?.value ?? "{}") as { generation: string; accessTokenKey: string };
    const consent = {
      refreshToken: `rt-newer-consent-${randomUUID()}`,
      refreshTokenObtainedAt: Date.now(),
      accessTokenKey: before.accessTokenKey,
      generation: `${Date.now() + 1}-newerconsent`,
    };
    let reads = 0;
    env.vault.onRequest(({ method, name: secret, version }) => {
      if (method !== "GET" || secret !== name || version !== undefined) return;
      // The first read loads the bundle; the second is the write-back's check. Right after
      // it a new consent is stored, before the write-back writes.
      if (++reads === 2) env.vault.putSecret(name, JSON.stringify(consent), { tags: { generation: consent.generation } });
    });
    try {
      // A day later the stored refresh token is old enough to be written back.
      const outcome = await pull(tenantId, services({ clock: () => Date.now() + 25 * 3600_000 }));
      expect(outcome.outcome).toBe("pulled");
    } finally {
      env.vault.onRequest(null);
    }
    expect(reads).toBeGreaterThanOrEqual(2);
    const latest = JSON.parse(env.vault.peekLatest(name)?.value ?? "{}") as { refreshToken: string; generation: string };
    expect(latest.generation).toBe(consent.generation);
    expect(latest.refreshToken).toBe(consent.refreshToken);
  });

  it("writes a rotated token back when no consent races it (the control for the test above)", async () => {
    const tenantId = await connectedTenant(env);
    const name = tenantTokenSecretName(tenantId);
    const before = JSON.parse(env.vault.peekLatest(name)?.value ?? "{}") as { refreshToken: string; generation: string };
    await pull(tenantId, services({ clock: () => Date.now() + 25 * 3600_000 }));
    const after = JSON.parse(env.vault.peekLatest(name)?.value ?? "{}") as { refreshToken: string; generation: string };
    expect(after.refreshToken).not.toBe(before.refreshToken);
    expect(after.generation).toBe(before.generation);
  });

  it("stops a running pull at its next page when the tenant is offboarded, and forgets its pull state", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 400, { start: minutesAgo(60), spacingMs: 8_000 }));
    const config = loadConfig({ ...process.env, ...env.env });
    const blob = new BlobAlertSink(openContainer(config.storage, config.pull.alertsContainer, () => {
      throw new Error("Azurite needs no credential");
    }));
    let writes = 0;
    const sink: AlertSink = {
      async write(key: AlertBatchKey, alerts: readonly AlertEnvelope[]) {
        writes++;
        if (writes === 2) {
          const offboarded = await env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${tenantId}`, params: { tenantId } });
          expect(offboarded.status).toBe(200);
        }
        await blob.write(key, alerts);
      },
    };
    const svc = services({ pageSize: 50, sink });
    const outcome = await pull(tenantId, svc);
    expect(outcome.outcome).not.toBe("pulled");
    expect(writes).toBe(2);
    expect(await svc.pullState.read(tenantId)).toBeUndefined();
    expect(await pull(tenantId, svc)).toEqual({ outcome: "skipped", reason: "not_connected" });
    expect(writes).toBe(2);
  });

  it("starts a re-registered tenant from the first-run look-back, not its old checkpoint", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 3, { start: minutesAgo(10), spacingMs: 1000 }));
    const svc = services();
    await pull(tenantId, svc);
    expect((await svc.pullState.read(tenantId))?.watermark).toBeDefined();
    await env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    const again = await registerTenant(env, tenantId);
    expect(again.result.status).toBe(201);
    expect(await svc.pullState.read(tenantId)).toBeUndefined();
  });
});
