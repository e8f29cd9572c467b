import { randomUUID } from "node:crypto";
import { QueueServiceClient } from "@azure/storage-queue";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inject } from "vitest";
import { tenantTokenSecretName } from "../../shared/secrets/tenantTokens";
import { QUEUES } from "../../shared/storage/names";
import { SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink } from "../../shared/sinks/alertSink";
import { BlobAlertSink } from "../../shared/sinks/blobAlertSink";
import { openContainer } from "../../shared/sinks/containers";
import { loadConfig } from "../../shared/config";
import { generateAlerts, makeAlert, toMdeTimestamp } from "../fakes/alerts";
import {
  capturingLogger,
  connectedTenant,
  deliveredEnvelopes,
  deliveredIds,
  minutesAgo,
  pipelineServices,
} from "../harness/pullFixture";
import { secretsOf, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

let env: TestEnvironment;
const logs: string[] = [];

beforeAll(async () => {
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50", PULL_OVERLAP_MINUTES: "10" });
});
afterAll(async () => {
  await env?.stop();
});

function realSink(): BlobAlertSink {
  const config = loadConfig({ ...process.env, ...env.env });
  return new BlobAlertSink(openContainer(config.storage, config.pull.alertsContainer, () => {
    throw new Error("no credential needed for Azurite");
  }));
}

/** Every alert version reached the sink exactly once. */
async function expectDeliveredOnce(tenantId: string, count: number): Promise<void> {
  const ids = deliveredIds(await deliveredEnvelopes(env, tenantId));
  expect(ids.length).toBe(count);
  expect(new Set(ids).size).toBe(count);
}

async function pull(tenantId: string, services = pipelineServices(env)) {
  const log = capturingLogger();
  const outcome = await services.tenantPull.run(tenantId, log);
  logs.push(...log.lines);
  return outcome;
}

describe("alert pull", () => {
  it("pulls a multi-page backlog exactly once, in envelopes naming the tenant", async () => {
    const tenantId = await connectedTenant(env, "Northwind");
    const alerts = generateAlerts(tenantId, 173, { start: minutesAgo(120), spacingMs: 20_000 });
    env.defender.addAlerts(tenantId, alerts);
    const outcome = await pull(tenantId);
    expect(outcome).toEqual({ outcome: "pulled", alerts: 173, complete: true, deadLetters: 0 });
    const envelopes = await deliveredEnvelopes(env, tenantId);
    expect(deliveredIds(envelopes).sort()).toEqual(alerts.map((a) => `${a.id}@${a.lastUpdateTime}`).sort());
    expect(envelopes[0]).toMatchObject({ tenantId, tenantName: "Northwind", source: "mde" });
    expect(typeof envelopes[0]?.pulledAt).toBe("string");
    // 173 alerts at $top=50: read in closed time sub-windows, never by $skip across a window
    // whose order could shift, and at a cost close to one request per page.
    const requests = env.defender.requests(tenantId);
    expect(requests.map((r) => r.query.get("$skip"))).toEqual(requests.map(() => "0"));
    for (const request of requests) {
      expect(request.query.get("$filter") ?? "").toMatch(/^lastUpdateTime ge \S+Z and lastUpdateTime lt \S+Z$/);
    }
    expect(requests.length).toBeLessThanOrEqual(12);
    // A second cycle finds nothing new and delivers nothing again.
    expect(await pull(tenantId)).toMatchObject({ outcome: "pulled", alerts: 0 });
    expect((await deliveredEnvelopes(env, tenantId)).length).toBe(173);
  });

  it("delivers a late alert inside the overlap window exactly once, and an updated alert again", async () => {
    const tenantId = await connectedTenant(env);
    const first = makeAlert({ id: "da-first", status: "New", lastUpdateTime: toMdeTimestamp(Date.now() - 3 * 60_000) });
    env.defender.addAlerts(tenantId, [first]);
    await pull(tenantId);
    // Appears only now, but with a lastUpdateTime before the checkpoint (inside the 10-minute overlap).
    const late = makeAlert({ id: "da-late", status: "New", lastUpdateTime: toMdeTimestamp(Date.now() - 4 * 60_000) });
    env.defender.addAlerts(tenantId, [late]);
    expect(await pull(tenantId)).toMatchObject({ alerts: 1 });
    expect(await pull(tenantId)).toMatchObject({ alerts: 0 });
    // A status change is news: the same id with a new lastUpdateTime is delivered again.
    env.defender.updateAlert(tenantId, "da-first", { status: "Resolved", lastUpdateTime: toMdeTimestamp(Date.now() - 1000) });
    expect(await pull(tenantId)).toMatchObject({ alerts: 1 });
    const envelopes = await deliveredEnvelopes(env, tenantId);
    expect(envelopes.map((e) => `${e.alert.id}:${String(e.alert["status"])}`).sort()).toEqual(
      ["da-first:New", "da-first:Resolved", "da-late:New"].sort(),
    );
  });

  it("loses no alert that shares a timestamp across a page boundary or the window edge", async () => {
    const tenantId = await connectedTenant(env);
    const stamp = toMdeTimestamp(Date.now() - 2 * 60_000);
    // 120 alerts at one instant: pages of 50 split them, and the checkpoint lands on them.
    const same = Array.from({ length: 120 }, (_, i) => makeAlert({ id: `da-same-${String(i).padStart(3, "0")}`, lastUpdateTime: stamp }));
    env.defender.addAlerts(tenantId, same);
    await pull(tenantId);
    // One more with that same timestamp appears after the checkpoint passed it.
    env.defender.addAlerts(tenantId, [makeAlert({ id: "da-same-late", lastUpdateTime: stamp })]);
    await pull(tenantId);
    const ids = (await deliveredEnvelopes(env, tenantId)).map((e) => e.alert.id);
    expect(ids.length).toBe(121);
    expect(new Set(ids).size).toBe(121);
  });

  it("waits out a 429 storm, honouring Retry-After", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 10, { start: minutesAgo(30), spacingMs: 1000 }));
    env.defender.throttle(tenantId, { times: 4, retryAfterSeconds: 7 });
    const services = pipelineServices(env);
    expect(await pull(tenantId, services)).toMatchObject({ outcome: "pulled", alerts: 10 });
    expect(services.sleeps.filter((ms) => ms === 7000).length).toBe(4);
    expect((await deliveredEnvelopes(env, tenantId)).length).toBe(10);
  });

  it("loses nothing when the sink fails mid-run", async () => {
    const tenantId = await connectedTenant(env);
    const alerts = generateAlerts(tenantId, 140, { start: minutesAgo(60), spacingMs: 10_000 });
    env.defender.addAlerts(tenantId, alerts);
    const blob = realSink();
    let writes = 0;
    const flaky: AlertSink = {
      async write(key: AlertBatchKey, batch: readonly AlertEnvelope[]) {
        if (++writes === 2) throw new SinkError("Uploading alerts failed (HTTP 503)", 503);
        await blob.write(key, batch);
      },
    };
    const failed = await pull(tenantId, pipelineServices(env, { sink: flaky }));
    expect(failed).toMatchObject({ outcome: "failed", code: "sink_failed", category: "transient" });
    expect(await pull(tenantId)).toMatchObject({ outcome: "pulled" });
    await expectDeliveredOnce(tenantId, 140);
  });

  it("loses and duplicates nothing after a crash between the sink write and the checkpoint", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 120, { start: minutesAgo(60), spacingMs: 10_000 }));
    const blob = realSink();
    let writes = 0;
    let crashed!: () => void;
    const crashedAt = new Promise<void>((resolve) => (crashed = resolve));
    // The second page reaches the sink durably, then the process "dies": the pull never gets to
    // save its checkpoint or release its lease.
    const dying: AlertSink = {
      async write(key, batch) {
        await blob.write(key, batch);
        if (++writes === 2) {
          crashed();
          await new Promise<never>(() => undefined);
        }
      },
    };
    void pull(tenantId, pipelineServices(env, { sink: dying }));
    await crashedAt;
    // While the dead pull's lease is unexpired, nobody else pulls the tenant.
    expect(await pull(tenantId)).toEqual({ outcome: "busy" });
    // Once it expires, the next pull resumes from the last saved page.
    const afterLease = Date.now() + 11 * 60_000;
    expect(await pull(tenantId, pipelineServices(env, { clock: () => afterLease }))).toMatchObject({ outcome: "pulled" });
    await expectDeliveredOnce(tenantId, 120);
  });

  it("lets only one of two concurrent pulls of a tenant run; the other exits cleanly", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 60, { start: minutesAgo(30), spacingMs: 1000 }));
    env.defender.setLatency(150, tenantId);
    const [a, b] = await Promise.all([pull(tenantId), pull(tenantId, pipelineServices(env))]);
    env.defender.setLatency(0, tenantId);
    expect([a.outcome, b.outcome].sort()).toEqual(["busy", "pulled"]);
    expect((await deliveredEnvelopes(env, tenantId)).length).toBe(60);
  });
});

describe("scheduling and tenant isolation", () => {
  it("enqueues every connected tenant once (a tenant never pulled in a message of its own); one tenant failing does not stop the others", async () => {
    const healthy = await connectedTenant(env, "Healthy");
    const broken = await connectedTenant(env, "Broken");
    const pending = randomUUID();
    await env.app.http("registerTenant", { method: "POST", url: "/api/tenants", body: JSON.stringify({ tenantId: pending, displayName: "Pending" }) });
    env.defender.addAlerts(healthy, generateAlerts(healthy, 5, { start: minutesAgo(20), spacingMs: 1000 }));
    env.defender.addAlerts(broken, generateAlerts(broken, 5, { start: minutesAgo(20), spacingMs: 1000 }));
    env.defender.fail(broken, { status: 403, times: 100 });

    const queue = QueueServiceClient.fromConnectionString(inject("storageConnectionString")).getQueueClient(QUEUES.tenantPulls);
    await queue.createIfNotExists();
    await queue.clearMessages();
    await env.app.timer("schedulePulls");
    // Every connected tenant of the shared registry is named once: read them all, not just a batch.
    // Tenants never pulled (these) get a message of their own; quiet ones may share one.
    const messages: Array<{ tenantId?: string; tenantIds?: string[] }> = [];
    for (;;) {
      const received = await queue.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 300 });
      if (received.receivedMessageItems.length === 0) break;
      for (const m of received.receivedMessageItems) {
        messages.push(JSON.parse(Buffer.from(m.messageText, "base64").toString("utf8")) as { tenantId?: string; tenantIds?: string[] });
      }
    }
    const ids = messages.flatMap((m) => m.tenantIds ?? [m.tenantId ?? ""]);
    expect(ids).toContain(healthy);
    expect(ids).toContain(broken);
    expect(ids).not.toContain(pending);
    expect(new Set(ids).size).toBe(ids.length);

    for (const message of messages.filter((m) => m.tenantId === healthy || m.tenantId === broken)) {
      await env.app.queue("pullTenant", message);
    }
    expect((await deliveredEnvelopes(env, healthy)).length).toBe(5);
    expect((await deliveredEnvelopes(env, broken)).length).toBe(0);

    const list = (await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).json<{
      tenants: Array<{ tenantId: string; status: string; health: Record<string, unknown> }>;
    }>().tenants;
    const healthyView = list.find((t) => t.tenantId === healthy);
    const brokenView = list.find((t) => t.tenantId === broken);
    expect(healthyView?.health).toMatchObject({ alertsInLastPull: 5, consecutiveFailures: 0, lastPullErrorCode: null, catchingUp: false });
    expect(typeof healthyView?.health["checkpoint"]).toBe("string");
    expect(typeof healthyView?.health["lastSuccessfulPullAt"]).toBe("string");
    expect(Number(healthyView?.health["refreshTokenAgeHours"])).toBeLessThan(1);
    expect(brokenView?.status).toBe("connected");
    expect(brokenView?.health).toMatchObject({ consecutiveFailures: 1, lastPullErrorCode: "defender_forbidden" });
  });

  it("marks only the tenant whose refresh token is refused (invalid_grant) as needing re-consent", async () => {
    const refused = await connectedTenant(env, "Refused");
    const fine = await connectedTenant(env, "Fine");
    env.entra.failRefresh(refused, { status: 400, error: "invalid_grant", errorCode: 700082 });
    try {
      expect(await pull(refused)).toMatchObject({ outcome: "failed", category: "reconsent", code: "AADSTS700082" });
      expect(await pull(fine)).toMatchObject({ outcome: "pulled" });
    } finally {
      env.entra.clearFailures();
    }
    const refusedView = (await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${refused}`, params: { tenantId: refused } })).json<Record<string, unknown>>();
    expect(refusedView).toMatchObject({ status: "reconsent_required", lastErrorCode: "AADSTS700082" });
    const fineView = (await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${fine}`, params: { tenantId: fine } })).json<Record<string, unknown>>();
    expect(fineView["status"]).toBe("connected");
    // Pulling stops until a new consent.
    expect(await pull(refused)).toEqual({ outcome: "skipped", reason: "not_connected" });
  });

  it("raises an app-level alarm for a rejected client credential and leaves tenants untouched", async () => {
    const tenantId = await connectedTenant(env);
    env.entra.failAllTokenRequests({ status: 401, error: "invalid_client", errorCode: 7000222 });
    const log = capturingLogger();
    try {
      const outcome = await pipelineServices(env).tenantPull.run(tenantId, log);
      expect(outcome).toMatchObject({ outcome: "failed", category: "app_credential" });
    } finally {
      env.entra.clearFailures();
    }
    logs.push(...log.lines);
    expect(log.lines.some((l) => l.startsWith("error") && l.includes("MSSP_CLIENT_SECRET"))).toBe(true);
    const view = (await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } })).json<Record<string, unknown>>();
    expect(view["status"]).toBe("connected");
  });
  it("records a poisoned pull message on that tenant's health only", async () => {
    const poisoned = await connectedTenant(env, "Poisoned");
    const other = await connectedTenant(env, "Other");
    await env.app.queue("pullTenantPoisoned", { tenantId: poisoned, enqueuedAt: new Date().toISOString() });
    const list = (await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).json<{
      tenants: Array<{ tenantId: string; status: string; health: Record<string, unknown> }>;
    }>().tenants;
    expect(list.find((t) => t.tenantId === poisoned)?.health).toMatchObject({ lastPullErrorCode: "pull_poisoned", consecutiveFailures: 1 });
    expect(list.find((t) => t.tenantId === other)?.health).toMatchObject({ lastPullErrorCode: null, consecutiveFailures: 0 });
    expect(list.find((t) => t.tenantId === poisoned)?.status).toBe("connected");
  });
});

describe("refresh-token rotation", () => {
  it("keeps the stored refresh token while it is young and persists the newest once it is older than the age rule", async () => {
    const tenantId = await connectedTenant(env);
    const secretName = tenantTokenSecretName(tenantId);
    const storedToken = () => (JSON.parse(env.vault.peekLatest(secretName)?.value ?? "{}") as { refreshToken?: string }).refreshToken;
    const consented = storedToken();
    const versions = env.vault.peekLatest(secretName)?.versions ?? 0;

    // An hour later, in a fresh process: a token call is needed, but the stored token is young.
    const hourLater = Date.now() + 3600_000;
    const before = env.entra.stats.tokenRequests.refresh_token;
    await pull(tenantId, pipelineServices(env, { clock: () => hourLater }));
    expect(env.entra.stats.tokenRequests.refresh_token).toBe(before + 1);
    expect(storedToken()).toBe(consented);
    expect(env.vault.peekLatest(secretName)?.versions).toBe(versions);

    // Minutes later, another fresh process reuses the encrypted access token: no token call at all.
    await pull(tenantId, pipelineServices(env, { clock: () => hourLater + 5 * 60_000 }));
    expect(env.entra.stats.tokenRequests.refresh_token).toBe(before + 1);

    // A day later the stored token is past the 24 h rule: the rotated one is written back.
    await pull(tenantId, pipelineServices(env, { clock: () => Date.now() + 25 * 3600_000 }));
    const rotated = storedToken();
    expect(rotated).not.toBe(consented);
    expect(env.entra.issuedSecrets()).toContain(rotated);
    expect(env.vault.peekLatest(secretName)?.versions).toBe(versions + 1);
  });
});

describe("secrecy in the pull path", () => {
  it("never logs a token or secret", () => {
    const secrets = secretsOf(env);
    const lines = [...logs, ...env.app.logs.map((l) => l.message)];
    expect(lines.length).toBeGreaterThan(10);
    for (const secret of secrets) for (const line of lines) expect(line.includes(secret)).toBe(false);
  });
});
