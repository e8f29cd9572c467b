/**
 * The production bootstrap (functions/telemetry.ts) end to end: the app's own telemetry module
 * starts the SDK with the Azure Monitor exporters from a connection string, pointed at a stand-in
 * for the Application Insights ingestion API on loopback (the exporter itself would upgrade the
 * connection string's endpoint to HTTPS, hence the `host` override). The test reads the very
 * envelopes Azure Monitor would store: log records as MessageData with the fields in
 * `properties` (customDimensions), metrics as MetricData.
 */
import { createServer, type Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { startTelemetry } from "../../functions/telemetry";
import { METRICS, PULL_RUN_EVENT } from "../../shared/telemetry/names";
import { generateAlerts } from "../fakes/alerts";
import { connectedTenant, minutesAgo } from "../harness/pullFixture";
import { secretsOf, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

interface Envelope {
  name: string;
  iKey?: string;
  tags?: Record<string, string>;
  data: { baseType: string; baseData: { message?: string; properties?: Record<string, string>; metrics?: Array<{ name: string; value: number }> } };
}

const envelopes: Envelope[] = [];
const ingestion: Server = createServer((request, response) => {
  const chunks: Buffer[] = [];
  request.on("data", (chunk: Buffer) => chunks.push(chunk));
  request.on("end", () => {
    const raw = Buffer.concat(chunks);
    const text = (request.headers["content-encoding"] === "gzip" ? gunzipSync(raw) : raw).toString("utf8");
    const batch = text.trim().startsWith("[") ? (JSON.parse(text) as Envelope[]) : text.split("\n").filter(Boolean).map((l) => JSON.parse(l) as Envelope);
    envelopes.push(...batch);
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify({ itemsReceived: batch.length, itemsAccepted: batch.length, errors: [] }));
  });
});

let env: TestEnvironment;

beforeAll(async () => {
  await new Promise<void>((resolve) => ingestion.listen(0, "127.0.0.1", resolve));
  const { port } = ingestion.address() as AddressInfo;
  // The SDK's own usage telemetry ("statsbeat") would go to a Microsoft endpoint: nothing leaves this machine.
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", APPLICATION_INSIGHTS_NO_STATSBEAT: "true" });
  // The same module instance the entry point loaded (native require), so its hooks land on the app.
  const telemetry = createRequire(env.app.entry)("./telemetry.js") as { startTelemetry: typeof startTelemetry };
  const started = telemetry.startTelemetry(
    {
      APPLICATIONINSIGHTS_CONNECTION_STRING: "InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://ingestion.invalid/",
      OTEL_SERVICE_NAME: "mssp-func-test",
    },
    { host: `http://127.0.0.1:${port}`, allowInsecureConnection: true },
  );
  expect(started).toBeDefined();
});
afterAll(async () => {
  await env?.stop();
  await new Promise((resolve) => ingestion.close(resolve));
});

/** Runs the app terminate hooks, as the host does on shutdown: the SDK flushes what it holds. */
async function terminateHooks(): Promise<void> {
  for (const hook of env.app.hooks.filter((h) => h.hookName === "appTerminate")) {
    await (hook.callback as (context: { hookData: object; appHookData: object }) => Promise<void> | void)({ hookData: {}, appHookData: {} });
  }
}

describe("Azure Monitor export", () => {
  it("registers the Functions instrumentation's hooks", () => {
    const names = env.app.hooks.map((h) => h.hookName);
    expect(names).toEqual(expect.arrayContaining(["log", "preInvocation", "appTerminate"]));
  });

  it("sends a pull's records with custom dimensions and its metrics to the ingestion endpoint", async () => {
    const tenantId = await connectedTenant(env, "Exported Ltd");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 12, { start: minutesAgo(60), spacingMs: 60_000 }));
    await env.app.queue("pullTenant", JSON.stringify({ tenantId, enqueuedAt: new Date().toISOString() }));
    const invocationId = env.app.lastContext?.invocationId;
    await terminateHooks();

    const messages = envelopes.filter((e) => e.data.baseType === "MessageData");
    const run = messages.find((e) => e.data.baseData.properties?.["event"] === PULL_RUN_EVENT);
    expect(run?.data.baseData.properties).toMatchObject({ tenantId, invocationId, outcome: "succeeded", alerts: "12" });
    expect(run?.tags?.["ai.cloud.role"]).toBe("mssp-func-test");
    const finished = messages.find((e) => e.data.baseData.message === "pull finished");
    expect(finished?.data.baseData.properties).toMatchObject({ tenantId, invocationId, functionName: "pullTenant" });

    const metricEnvelopes = envelopes.filter((e) => e.data.baseType === "MetricData");
    const delivered = metricEnvelopes.filter(
      (e) => e.data.baseData.metrics?.[0]?.name === METRICS.alertsDelivered && e.data.baseData.properties?.["tenantId"] === tenantId,
    );
    expect(delivered.reduce((sum, e) => sum + (e.data.baseData.metrics?.[0]?.value ?? 0), 0)).toBe(12);
    expect(metricEnvelopes.some((e) => e.data.baseData.metrics?.[0]?.name === METRICS.pulls)).toBe(true);

    const sent = JSON.stringify(envelopes);
    for (const secret of secretsOf(env)) expect(sent.includes(secret), "a secret reached the ingestion endpoint").toBe(false);
  });
});
