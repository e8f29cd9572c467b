/**
 * Telemetry Azure Monitor understands, through the real entry point: in-memory OpenTelemetry
 * providers stand where the Azure Monitor exporters stand in Azure (functions/telemetry.ts), and
 * a real pull and a real consent run through the app's own handlers. What a record's attributes
 * hold is what Application Insights stores as custom dimensions (AppTraces.Properties); the
 * metric points are what it stores in AppMetrics.
 */
import { randomUUID } from "node:crypto";
import { metrics } from "@opentelemetry/api";
import { logs } from "@opentelemetry/api-logs";
import { InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor, type ReadableLogRecord } from "@opentelemetry/sdk-logs";
import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type DataPoint,
} from "@opentelemetry/sdk-metrics";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { METRICS, PULL_RUN_EVENT, PULL_RUN_MESSAGE } from "../../shared/telemetry/names";
import { generateAlerts } from "../fakes/alerts";
import { connectedTenant, minutesAgo } from "../harness/pullFixture";
import { completeConsent, registerTenant, secretsOf, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

const logExporter = new InMemoryLogRecordExporter();
const loggerProvider = new LoggerProvider({ processors: [new SimpleLogRecordProcessor(logExporter)] });
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const metricReader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });
const meterProvider = new MeterProvider({ readers: [metricReader] });
/** Values the consent flow handled that are not in the fakes' own secret lists (the state). */
const extraSecrets: string[] = [];

let env: TestEnvironment;

beforeAll(async () => {
  // Registered before the app loads, as functions/telemetry.ts does before any invocation.
  logs.setGlobalLoggerProvider(loggerProvider);
  metrics.setGlobalMeterProvider(meterProvider);
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50" });
});
afterAll(async () => {
  await env?.stop();
  await Promise.all([loggerProvider.shutdown(), meterProvider.shutdown()]);
  logs.disable();
  metrics.disable();
});

type Attributes = Record<string, unknown>;

function records(): ReadableLogRecord[] {
  return logExporter.getFinishedLogRecords();
}

function attributesOf(record: ReadableLogRecord): Attributes {
  return record.attributes as Attributes;
}

function pullRuns(tenantId: string): Attributes[] {
  return records()
    .map(attributesOf)
    .filter((a) => a["event"] === PULL_RUN_EVENT && a["tenantId"] === tenantId);
}

/** Cumulative data points of one metric, as the reader collects them now. */
async function points(name: string): Promise<Array<DataPoint<unknown>>> {
  await metricReader.forceFlush();
  const latest = metricExporter.getMetrics().at(-1);
  const metric = latest?.scopeMetrics.flatMap((scope) => scope.metrics).find((m) => m.descriptor.name === name);
  return (metric?.dataPoints ?? []) as Array<DataPoint<unknown>>;
}

async function sumFor(name: string, match: Attributes): Promise<number> {
  const matching = (await points(name)).filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v));
  return matching.reduce((total, p) => total + (typeof p.value === "number" ? p.value : 0), 0);
}

async function pullThroughTheApp(tenantId: string): Promise<string> {
  await env.app.queue("pullTenant", JSON.stringify({ tenantId, enqueuedAt: new Date().toISOString() }));
  return env.app.lastContext?.invocationId ?? "";
}

describe("telemetry of a pull", () => {
  it("writes one pull-run record with the structured fields, and the pull metrics", async () => {
    const tenantId = await connectedTenant(env, "Fabrikam Telemetry");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 64, { start: minutesAgo(90), spacingMs: 30_000 }));
    const invocationId = await pullThroughTheApp(tenantId);

    const [run, ...more] = pullRuns(tenantId);
    expect(more).toEqual([]);
    expect(run).toMatchObject({
      tenantId,
      tenantName: "Fabrikam Telemetry",
      invocationId,
      outcome: "succeeded",
      alerts: 64,
      deadLetters: 0,
      tokenRefreshed: true,
      healthBefore: "healthy",
      healthAfter: "healthy",
    });
    expect(run?.["durationMs"]).toEqual(expect.any(Number));
    expect(run?.["lagSeconds"]).toEqual(expect.any(Number));
    expect(run).not.toHaveProperty("errorCode");
    const runRecord = records().find((r) => attributesOf(r)["tenantId"] === tenantId && attributesOf(r)["event"] === PULL_RUN_EVENT);
    expect(runRecord?.body).toBe(PULL_RUN_MESSAGE);
    expect(runRecord?.severityText).toBe("Information");

    // The pull's own lines through loggerFor carry their fields plus the invocation.
    const finished = records().find((r) => r.body === "pull finished" && attributesOf(r)["tenantId"] === tenantId);
    expect(finished && attributesOf(finished)).toMatchObject({ tenantId, alerts: 64, invocationId, functionName: "pullTenant" });
    // ...and still reach the host's log stream as text, once.
    expect(env.app.logs.filter((l) => l.invocationId === invocationId && l.message.startsWith("pull finished"))).toHaveLength(1);

    expect(await sumFor(METRICS.alertsDelivered, { tenantId })).toBe(env.defender.served(tenantId).size);
    expect(await sumFor(METRICS.alertsDelivered, { tenantId })).toBe(64);
    expect(await sumFor(METRICS.pulls, { tenantId, outcome: "succeeded" })).toBe(1);
    expect(await sumFor(METRICS.tokenRefreshes, { tenantId })).toBe(1);
    const lag = (await points(METRICS.pullLag)).find((p) => p.attributes["tenantId"] === tenantId);
    expect(lag?.value).toMatchObject({ count: 1 });
    const durations = (await points(METRICS.pullDuration)).filter((p) => p.attributes["outcome"] === "succeeded");
    expect(durations.length).toBeGreaterThan(0);

    // A second run uses the cached access token: no refresh is counted.
    await pullThroughTheApp(tenantId);
    expect(await sumFor(METRICS.tokenRefreshes, { tenantId })).toBe(1);
    expect(await sumFor(METRICS.pulls, { tenantId, outcome: "succeeded" })).toBe(2);
  });

  it("records a failed pull with its error code and counts it by category", async () => {
    const tenantId = await connectedTenant(env, "Broken Defender");
    env.defender.fail(tenantId, { status: 403, times: 100 });
    const invocationId = await pullThroughTheApp(tenantId);

    const [run] = pullRuns(tenantId);
    expect(run).toMatchObject({ tenantId, invocationId, outcome: "failed", alerts: 0, errorCode: "defender_forbidden", category: "transient" });
    expect(run?.["durationMs"]).toEqual(expect.any(Number));
    expect(await sumFor(METRICS.pulls, { tenantId, outcome: "failed", category: "transient", errorCode: "defender_forbidden" })).toBe(1);
    expect(await sumFor(METRICS.alertsDelivered, { tenantId })).toBe(0);
  });

  it("records a tenant becoming reconsent_required, and the gauge counts it", async () => {
    const tenantId = await connectedTenant(env, "Revoked Ltd");
    env.entra.revokeRefreshTokens(tenantId);
    await pullThroughTheApp(tenantId);

    const [run] = pullRuns(tenantId);
    expect(run).toMatchObject({ outcome: "failed", category: "reconsent", healthAfter: "reconsent_required" });
    expect(await sumFor(METRICS.pulls, { tenantId, outcome: "failed", category: "reconsent" })).toBe(1);
    const gauge = await points(METRICS.reconsentRequired);
    expect(gauge).toHaveLength(1);
    const listed = (await env.app.http("listTenants", { url: "/api/tenants" })).json<{ tenants: Array<{ status: string }> }>();
    expect(gauge[0]?.value).toBe(listed.tenants.filter((t) => t.status === "reconsent_required").length);
    expect(gauge[0]?.value).toBeGreaterThanOrEqual(1);
  });

  it("marks an app-level credential failure as an error record of category app_credential", async () => {
    const tenantId = await connectedTenant(env, "Any Customer");
    env.entra.failAllTokenRequests({ status: 401, error: "invalid_client", errorCode: 7000222 });
    try {
      await pullThroughTheApp(tenantId);
    } finally {
      env.entra.clearFailures();
    }
    const record = records().find((r) => attributesOf(r)["event"] === PULL_RUN_EVENT && attributesOf(r)["tenantId"] === tenantId);
    expect(record && attributesOf(record)).toMatchObject({ outcome: "failed", category: "app_credential" });
    expect(record?.severityText).toBe("Error");
  });
});

describe("telemetry of a consent", () => {
  it("logs each step with the tenant id, the outcome and, on a refusal, the code", async () => {
    const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), "Consenting Co");
    const { callbackUrl } = await completeConsent(env, consentUrl);
    extraSecrets.push(new URL(callbackUrl).searchParams.get("state") ?? "");
    const steps = records()
      .map(attributesOf)
      .filter((a) => a["tenantId"] === tenantId && typeof a["consentStep"] === "string");
    expect(steps).toEqual([
      expect.objectContaining({ consentStep: "start", outcome: "started", invocationId: expect.any(String) }),
      expect.objectContaining({ consentStep: "callback", outcome: "connected", functionName: "consentCallback" }),
    ]);

    const declined = await registerTenant(env, randomUUID(), "Declining Co");
    env.entra.setConsentBehaviour(declined.tenantId, { kind: "deny", error: "access_denied", errorDescription: "AADSTS65004: declined" });
    await completeConsent(env, declined.consentUrl);
    const refusal = records()
      .map(attributesOf)
      .find((a) => a["tenantId"] === declined.tenantId && a["consentStep"] === "callback");
    expect(refusal).toMatchObject({ outcome: "declined", errorCode: "access_denied" });
  });
});

describe("no secret in telemetry", () => {
  it("keeps every secret the run handled out of record bodies, attributes and metric attributes", async () => {
    const metricAttributes = await Promise.all(Object.values(METRICS).map(async (name) => (await points(name)).map((p) => p.attributes)));
    const everything = JSON.stringify([records().map((r) => [r.body, r.attributes]), metricAttributes]);
    const secrets = [...secretsOf(env), ...extraSecrets].filter((s) => s.length >= 8);
    expect(secrets.length).toBeGreaterThan(5);
    for (const secret of secrets) expect(everything.includes(secret), "a secret reached telemetry").toBe(false);
    expect(everything).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/); // no JWT
    // Sanity: the check looked at real content.
    expect(records().length).toBeGreaterThan(10);
    expect(metricExporter.getMetrics().at(-1)?.scopeMetrics[0]?.metrics.some((m) => m.dataPointType === DataPointType.SUM)).toBe(true);
  });
});
