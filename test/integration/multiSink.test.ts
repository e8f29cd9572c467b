import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { pullHealthOf } from "../../shared/pull/health";
import { createServices, type Services } from "../../shared/services";
import { SinkError, type AlertSink } from "../../shared/sinks/alertSink";
import { BlobAlertSink } from "../../shared/sinks/blobAlertSink";
import type { NamedSink } from "../../shared/sinks/sinkSet";
import type { PullReport } from "../../shared/pull/observer";
import { generateAlerts, makeAlert, toMdeTimestamp } from "../fakes/alerts";
import { capturingLogger, connectedTenant, minutesAgo, type StoredEnvelope } from "../harness/pullFixture";
import { completeConsent, PUBLIC_BASE_URL, requestReconsent, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";
import { generateGraphAlerts } from "../fakes/graphAlerts";

/**
 * Two sinks at once, one of them down for a while: the API is read once, the healthy sink gets
 * every version exactly once, and the other catches up from its own parked pages, in order,
 * without a loss and without making the healthy one see anything twice.
 */

let env: TestEnvironment;

beforeAll(async () => {
  // The sandbox flag opens the console without sign-in (loopback only), to read a tenant's page.
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50", PULL_OVERLAP_MINUTES: "10", LOCAL_DEV_SANDBOX: "true" });
});
afterAll(async () => {
  await env?.stop();
});

function container(): ContainerClient {
  return BlobServiceClient.fromConnectionString(inject("storageConnectionString")).getContainerClient(`siem-${randomBytes(5).toString("hex")}`);
}

/** A real blob sink that answers like a SIEM that is down while `down()` says so. */
function switchable(target: ContainerClient, down: () => boolean): AlertSink & { attempts: number } {
  const real = new BlobAlertSink(target);
  const sink = {
    attempts: 0,
    async write(...args: Parameters<AlertSink["write"]>) {
      sink.attempts++;
      if (down()) throw new SinkError("The collector is unavailable (HTTP 503)", 503, { code: "9" });
      return real.write(...args);
    },
  };
  return sink;
}

async function versionsIn(target: ContainerClient, tenantId: string): Promise<string[]> {
  if (!(await target.exists())) return [];
  const versions: string[] = [];
  for await (const blob of target.listBlobsFlat({ prefix: `${tenantId}/` })) {
    const text = (await target.getBlobClient(blob.name).downloadToBuffer()).toString("utf8");
    for (const line of text.split("\n")) {
      if (!line) continue;
      const { alert } = JSON.parse(line) as StoredEnvelope;
      versions.push(`${alert.id}@${alert.lastUpdateTime}`);
    }
  }
  return versions;
}

function duplicatesOf(versions: string[]): string[] {
  const seen = new Set<string>();
  return versions.filter((v) => (seen.has(v) ? true : (seen.add(v), false)));
}

function services(sinks: NamedSink[]): Services {
  return createServices(loadConfig({ ...process.env, ...env.env }), { sleep: async () => undefined, sinks });
}

describe("a source switch while a sink is behind", () => {
  it("keeps the pages parked for the sink that was down, so it still gets every MDE alert after the tenant moved to Graph", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 120, { start: minutesAgo(50), spacingMs: 20_000 }));
    env.graph.addAlerts(tenantId, generateGraphAlerts(tenantId, 30, { start: minutesAgo(90), spacingMs: 60_000 }));
    const healthyStore = container();
    const flakyStore = container();
    let flakyDown = true;
    const svc = services([
      { name: "blob", sink: new BlobAlertSink(healthyStore) },
      { name: "splunk", sink: switchable(flakyStore, () => flakyDown) },
    ]);
    expect(await svc.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 120 });
    expect(pullHealthOf(await svc.pullState.read(tenantId), Date.now).sinks?.["splunk"]?.parkedPages).toBeGreaterThan(0);

    // The customer consents for Graph while the SIEM is still down.
    expect((await completeConsent(env, await requestReconsent(env, tenantId, { source: "graph" }))).callback.status).toBe(200);
    flakyDown = false;
    for (let run = 0; run < 3; run++) expect((await svc.tenantPull.run(tenantId, capturingLogger())).outcome).toBe("pulled");

    const mdeIds = new Set(env.defender.alerts(tenantId).map((a) => a.id));
    const caughtUp = await allLines(flakyStore, tenantId);
    expect(caughtUp.filter((line) => line.source === "mde" && mdeIds.has(line.alert.id))).toHaveLength(120);
    expect(caughtUp.filter((line) => line.source === "graph")).toHaveLength(30);
    expect((await svc.pullState.read(tenantId))?.source).toBe("graph");
  }, 60_000);
});

async function allLines(target: ContainerClient, tenantId: string): Promise<StoredEnvelope[]> {
  const lines: StoredEnvelope[] = [];
  for await (const blob of target.listBlobsFlat({ prefix: `${tenantId}/` })) {
    const text = (await target.getBlobClient(blob.name).downloadToBuffer()).toString("utf8");
    for (const line of text.split("\n")) if (line) lines.push(JSON.parse(line) as StoredEnvelope);
  }
  return lines;
}

describe("several sinks, each with its own progress", () => {
  it("keeps delivering to the healthy sink while the other is down, then catches the other up in order, with no loss and no duplicate", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 300, { start: minutesAgo(50), spacingMs: 8_000 }));
    const healthyStore = container();
    const flakyStore = container();
    let flakyDown = true;
    const flaky = switchable(flakyStore, () => flakyDown);
    const svc = services([
      { name: "blob", sink: new BlobAlertSink(healthyStore) },
      { name: "splunk", sink: flaky },
    ]);

    const first = await svc.tenantPull.run(tenantId, capturingLogger());
    expect(first).toMatchObject({ outcome: "pulled", alerts: 300, complete: true });
    const requestsAfterFirst = env.defender.pageRequests(tenantId);
    expect(await versionsIn(healthyStore, tenantId)).toHaveLength(300);
    expect(await versionsIn(flakyStore, tenantId)).toEqual([]);
    // The down sink was tried once (then parked behind), not once per page.
    expect(flaky.attempts).toBe(1);
    const behind = pullHealthOf(await svc.pullState.read(tenantId), Date.now);
    expect(behind.sinks?.["splunk"]?.parkedPages).toBeGreaterThan(0);
    expect(behind.sinks?.["splunk"]?.lastErrorCode).toBe("sink_9");
    expect(behind.sinks?.["blob"]?.parkedPages).toBe(0);
    expect(behind.warnings.map((w) => w.code)).toContain("sink_behind");
    // The operator sees it on the tenant's console page too.
    const page = await env.app.http("consoleTenant", { method: "GET", url: `${PUBLIC_BASE_URL}/api/console/tenants/${tenantId}`, params: { tenantId } });
    expect(page.status).toBe(200);
    const sinkRow = /<tr><th scope="row"><code>splunk<\/code><\/th><td class="num">(\d+)<\/td>.*?<code>(sink_9)<\/code>/s.exec(page.body);
    expect(Number(sinkRow?.[1])).toBe(behind.sinks?.["splunk"]?.parkedPages);
    expect(sinkRow?.[2]).toBe("sink_9");

    // New alerts arrive while the sink is still down: parked behind the others, in order.
    const late = Array.from({ length: 40 }, (_, i) => makeAlert({ id: `da-late-${i}`, lastUpdateTime: toMdeTimestamp(Date.now() - 60_000 + i) }));
    env.defender.addAlerts(tenantId, late);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    expect(await svc.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", complete: true });
    expect(await versionsIn(flakyStore, tenantId)).toEqual([]);

    flakyDown = false;
    const catchUp = await svc.tenantPull.run(tenantId, capturingLogger());
    expect(catchUp).toMatchObject({ outcome: "pulled", complete: true });
    const healthy = await versionsIn(healthyStore, tenantId);
    const caughtUp = await versionsIn(flakyStore, tenantId);
    expect(healthy).toHaveLength(340);
    expect(duplicatesOf(healthy)).toEqual([]);
    expect(caughtUp.sort()).toEqual([...healthy].sort());
    expect(duplicatesOf(caughtUp)).toEqual([]);
    // The catch-up came from the parked pages, not from reading the API again.
    expect(env.defender.pageRequests(tenantId) - requestsAfterFirst).toBeLessThan(10);
    const healthyAgain = pullHealthOf(await svc.pullState.read(tenantId), Date.now);
    expect(healthyAgain.sinks?.["splunk"]).toMatchObject({ parkedPages: 0, behindSince: null });
    expect(healthyAgain.warnings.map((w) => w.code)).not.toContain("sink_behind");
  });

  it("re-drives a dead letter to a sink that refuses the version as too large: a letter of its own for that sink, never a silent loss", async () => {
    const tenantId = await connectedTenant(env);
    const alert = makeAlert({ id: "da-redrive-big", lastUpdateTime: toMdeTimestamp(Date.now() - 120_000) });
    const refusing: AlertSink = {
      async write(_key, alerts) {
        return { refused: alerts.map((a) => ({ alert: a.alert, reason: "oversized" as const, detail: "larger than the collector takes" })) };
      },
    };
    const svc = createServices(loadConfig({ ...process.env, ...env.env }), { sleep: async () => undefined, sink: refusing });
    const page = { from: new Date(Date.now() - 600_000).toISOString(), to: new Date().toISOString(), skip: 0 };
    await svc.deadLetters.write({ tenantId, source: "mde", reason: "invalid_time", window: page, page, raw: JSON.stringify(alert), at: new Date().toISOString() });
    const result = await svc.redrive.redrive(tenantId, capturingLogger());
    expect(result).toEqual({ examined: 1, redriven: 1, delivered: 1, remaining: 1 });
    const letters = await svc.deadLetters.list(tenantId);
    expect(letters.map((l) => l.reason)).toEqual(["oversized"]);
    const kept = await svc.deadLetters.read(letters[0]?.name ?? "");
    expect(kept).toMatchObject({ reason: "oversized", sink: "blob" });
    expect(JSON.parse(kept?.raw ?? "{}")).toMatchObject({ id: "da-redrive-big" });
  });

  it("reports a tenant degraded, for notifications and telemetry, once a sink has been behind for 15 minutes, and healthy when it caught up", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 60, { start: minutesAgo(30), spacingMs: 20_000 }));
    let down = true;
    let offset = 0;
    const reports: PullReport[] = [];
    const svc = createServices(loadConfig({ ...process.env, ...env.env }), {
      sleep: async () => undefined,
      clock: () => Date.now() + offset,
      pullObservers: [{ pulled: async (report) => void reports.push(report) }],
      sinks: [
        { name: "blob", sink: new BlobAlertSink(container()) },
        { name: "sentinel", sink: switchable(container(), () => down) },
      ],
    });
    await svc.tenantPull.run(tenantId, capturingLogger());
    offset = 20 * 60_000;
    await svc.tenantPull.run(tenantId, capturingLogger());
    down = false;
    await svc.tenantPull.run(tenantId, capturingLogger());
    expect(reports.map((r) => [r.outcome, r.health.before, r.health.after])).toEqual([
      ["succeeded", "healthy", "healthy"],
      // 20 minutes on, the sink had been behind since the first run: degraded before and after.
      ["succeeded", "degraded", "degraded"],
      ["succeeded", "degraded", "healthy"],
    ]);
    expect(reports[1]?.sinksBehind.map((s) => s.sink)).toEqual(["sentinel"]);
    expect(reports[2]?.sinksBehind).toEqual([]);
  });
});
