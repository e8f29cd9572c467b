import { randomBytes, randomUUID } from "node:crypto";
import type { TokenCredential } from "@azure/identity";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { pullHealthOf } from "../../shared/pull/health";
import { createServices } from "../../shared/services";
import { SENTINEL_COLUMNS } from "../../shared/sinks/sentinel/records";
import { DEFAULT_SENTINEL_STREAM } from "../../shared/sinks/sentinel/settings";
import { generateAlerts } from "../fakes/alerts";
import { FakeLogsIngestion } from "../fakes/fakeLogsIngestion";
import { FakeSplunkHec } from "../fakes/fakeSplunkHec";
import { capturingLogger, connectedTenant, deliveredEnvelopes, minutesAgo } from "../harness/pullFixture";
import { completeConsent, registerTenant, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";
import { generateGraphAlerts } from "../fakes/graphAlerts";

/**
 * One deployment, three sinks, chosen by app settings alone: ALERT_SINKS=blob,sentinel,splunk and
 * each sink's own settings. Only the managed identity is stood in for (there is none here).
 */

const DCR = `dcr-${randomBytes(16).toString("hex")}`;
const MONITOR_TOKEN = `li-${randomBytes(18).toString("base64url")}`;
const HEC_TOKEN = "4f1c2b3a-9d8e-4f7a-b6c5-1e2d3c4b5a69";

let env: TestEnvironment;
let sentinel: FakeLogsIngestion;
let splunk: FakeSplunkHec;

beforeAll(async () => {
  env = await startTestEnvironment(
    { PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50", PULL_OVERLAP_MINUTES: "10" },
    {
      beforeLoad: async (tls) => {
        sentinel = new FakeLogsIngestion({ ...tls, acceptedToken: MONITOR_TOKEN, dcrImmutableId: DCR, streamName: DEFAULT_SENTINEL_STREAM, columns: SENTINEL_COLUMNS });
        await sentinel.start();
        splunk = new FakeSplunkHec({ ...tls, tokens: [{ token: HEC_TOKEN, indexes: ["main", "mssp"] }] });
        await splunk.start();
        return {};
      },
    },
  );
});
afterAll(async () => {
  await sentinel?.stop();
  await splunk?.stop();
  await env?.stop();
});

const managedIdentity: TokenCredential = { getToken: async () => ({ token: MONITOR_TOKEN, expiresOnTimestamp: Date.now() + 3600_000 }) };

function settings(extra: Record<string, string> = {}): Record<string, string | undefined> {
  return {
    ...process.env,
    ...env.env,
    ALERT_SINKS: "splunk,blob,sentinel",
    SENTINEL_INGESTION_ENDPOINT: sentinel.url,
    SENTINEL_DCR_IMMUTABLE_ID: DCR,
    SPLUNK_HEC_URL: splunk.url,
    SPLUNK_HEC_TOKEN: HEC_TOKEN,
    SPLUNK_INDEX: "mssp",
    ...extra,
  };
}

describe("sinks chosen by settings", () => {
  it("delivers every version of a tenant to Blob, Sentinel and Splunk at once, each exactly once", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 180, { start: minutesAgo(40), spacingMs: 10_000 }));
    const services = createServices(loadConfig(settings()), { sleep: async () => undefined, credential: managedIdentity });
    const outcome = await services.tenantPull.run(tenantId, capturingLogger());
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 180, complete: true });

    const served = [...env.defender.served(tenantId).keys()].sort();
    expect(served).toHaveLength(180);
    const blob = (await deliveredEnvelopes(env, tenantId)).map((e) => `${e.alert.id}@${e.alert.lastUpdateTime}`).sort();
    const rows = sentinel
      .rows()
      .filter((row) => row["CustomerTenantId"] === tenantId)
      .map((row) => `${String(row["AlertId"])}@${String((row["Alert"] as { lastUpdateTime: string }).lastUpdateTime)}`)
      .sort();
    const events = splunk
      .indexed()
      .filter((event) => event.fields?.["tenant_id"] === tenantId)
      .map((event) => {
        const alert = event.event as { id: string; lastUpdateTime: string };
        return `${alert.id}@${alert.lastUpdateTime}`;
      })
      .sort();
    expect(blob).toEqual(served);
    expect(rows).toEqual(served);
    expect(events).toEqual(served);
    expect(splunk.indexed().every((event) => event.index === "mssp" && event.sourcetype === "ms:defender:atp:alerts")).toBe(true);
    // Several sinks: each one's progress is in health, all caught up.
    const health = pullHealthOf(await services.pullState.read(tenantId), Date.now);
    expect(Object.keys(health.sinks ?? {}).sort()).toEqual(["blob", "sentinel", "splunk"]);
    expect(Object.values(health.sinks ?? {}).every((sink) => sink.parkedPages === 0 && sink.lastDeliveryAt !== null)).toBe(true);
  });

  it("delivers a Graph tenant's Defender XDR alerts to Blob, Sentinel and Splunk exactly like an MDE tenant's, marked as Graph", async () => {
    const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), "Graph everywhere", { source: "graph" });
    expect((await completeConsent(env, consentUrl)).callback.status).toBe(200);
    env.graph.addAlerts(tenantId, generateGraphAlerts(tenantId, 120, { start: minutesAgo(40), spacingMs: 15_000 }));
    const services = createServices(loadConfig(settings()), { sleep: async () => undefined, credential: managedIdentity });
    expect(await services.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 120, complete: true });

    const served = [...env.graph.served(tenantId).keys()].sort();
    expect(served).toHaveLength(120);
    const blob = (await deliveredEnvelopes(env, tenantId)).map((e) => `${e.alert.id}@${String(e.alert["lastUpdateDateTime"])}`).sort();
    const rows = sentinel.rows().filter((row) => row["CustomerTenantId"] === tenantId);
    const events = splunk.indexed().filter((event) => event.fields?.["tenant_id"] === tenantId);
    expect(blob).toEqual(served);
    expect(rows.map((row) => `${String(row["AlertId"])}@${String((row["Alert"] as { lastUpdateDateTime: string }).lastUpdateDateTime)}`).sort()).toEqual(served);
    expect(events.map((event) => { const alert = event.event as { id: string; lastUpdateDateTime: string }; return `${alert.id}@${alert.lastUpdateDateTime}`; }).sort()).toEqual(served);
    expect(rows.every((row) => row["Source"] === "graph" && typeof row["AlertTitle"] === "string")).toBe(true);
    // Not the add-on's MDE sourcetype, whose extractions expect the MDE API's shape.
    expect(events.every((event) => event.sourcetype === "_json" && event.fields?.["source"] === "graph")).toBe(true);
  });

  it("keeps Blob and Sentinel exact while Splunk is busy for a cycle, then catches Splunk up from its parked pages", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 150, { start: minutesAgo(40), spacingMs: 12_000 }));
    // The collector answers "server is busy" far longer than one write's retries last.
    splunk.storm({ times: 10_000, retryAfterSeconds: 0 });
    const services = createServices(loadConfig(settings()), { sleep: async () => undefined, credential: managedIdentity });
    try {
      expect(await services.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 150, complete: true });
    } finally {
      splunk.storm(null);
    }
    const versionsOfTenant = () => ({
      served: [...env.defender.served(tenantId).keys()].sort(),
      rows: sentinel
        .rows()
        .filter((row) => row["CustomerTenantId"] === tenantId)
        .map((row) => `${String(row["AlertId"])}@${String((row["Alert"] as { lastUpdateTime: string }).lastUpdateTime)}`)
        .sort(),
      events: splunk
        .indexed()
        .filter((event) => event.fields?.["tenant_id"] === tenantId)
        .map((event) => {
          const alert = event.event as { id: string; lastUpdateTime: string };
          return `${alert.id}@${alert.lastUpdateTime}`;
        })
        .sort(),
    });
    const during = versionsOfTenant();
    expect(during.served).toHaveLength(150);
    expect(during.rows).toEqual(during.served);
    expect(during.events).toEqual([]);
    expect(pullHealthOf(await services.pullState.read(tenantId), Date.now).sinks?.["splunk"]?.lastErrorCode).toBe("sink_9");

    const requestsBefore = env.defender.pageRequests(tenantId);
    expect(await services.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", complete: true });
    const after = versionsOfTenant();
    expect(after.events).toEqual(after.served);
    expect(after.rows).toEqual(after.served);
    const blob = (await deliveredEnvelopes(env, tenantId)).map((e) => `${e.alert.id}@${e.alert.lastUpdateTime}`).sort();
    expect(blob).toEqual(after.served);
    // Splunk caught up from parked pages: the API was not read again for it.
    expect(env.defender.pageRequests(tenantId) - requestsBefore).toBeLessThanOrEqual(3);
    expect(pullHealthOf(await services.pullState.read(tenantId), Date.now).sinks?.["splunk"]?.parkedPages).toBe(0);
  });

  it("refuses to start with a chosen sink's settings missing or wrong, naming each setting and never a value", () => {
    const leaked = "not-a-url-but-secret";
    let message = "";
    try {
      loadConfig(settings({ SENTINEL_DCR_IMMUTABLE_ID: "", SPLUNK_HEC_URL: leaked, ALERT_SINKS: "blob,sentinel,splunk,eventhubs" }));
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain("SENTINEL_DCR_IMMUTABLE_ID");
    expect(message).toContain("SPLUNK_HEC_URL");
    expect(message).toContain("EVENTHUB_FULLY_QUALIFIED_NAMESPACE");
    expect(message).not.toContain(leaked);
    expect(message).not.toContain(HEC_TOKEN);
  });

  it("ignores the settings of a sink that is not chosen", () => {
    expect(loadConfig(settings({ ALERT_SINKS: "blob", SPLUNK_HEC_URL: "nonsense" })).sinks).toEqual({ names: ["blob"] });
  });
});
