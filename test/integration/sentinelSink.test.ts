import { randomBytes } from "node:crypto";
import { gzipSync } from "node:zlib";
import type { TokenCredential } from "@azure/identity";
import { isAggregateLogsUploadError, LogsIngestionClient } from "@azure/monitor-ingestion";
import { Agent, fetch } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { scanPage } from "../../shared/defender/pageScanner";
import { SinkError, type AlertEnvelope, type AlertSink, type SinkWriteResult } from "../../shared/sinks/alertSink";
import { CALL_BUDGET_BYTES } from "../../shared/sinks/sentinel/chunks";
import { SENTINEL_COLUMNS } from "../../shared/sinks/sentinel/records";
import { SentinelAlertSink, type SentinelSinkOptions } from "../../shared/sinks/sentinel/sentinelSink";
import { DEFAULT_SENTINEL_STREAM, parseSentinelSettings, type SentinelSettings } from "../../shared/sinks/sentinel/settings";
import { generateAlerts, toMdeTimestamp, type MdeAlert } from "../fakes/alerts";
import { API_VERSION, FakeLogsIngestion, MAX_CALL_BYTES, MAX_FIELD_BYTES } from "../fakes/fakeLogsIngestion";
import { capturingLogger, connectedTenant, minutesAgo, pipelineServices } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

const DCR = `dcr-${randomBytes(16).toString("hex")}`;
const TOKEN = `li-${randomBytes(18).toString("base64url")}`;

let env: TestEnvironment;
let fake: FakeLogsIngestion;
let settings: SentinelSettings;

beforeAll(async () => {
  env = await startTestEnvironment(
    { PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50", PULL_OVERLAP_MINUTES: "10", PULL_EXPAND_EVIDENCE: "true" },
    {
      // Served with the certificate the app already trusts, like the other fakes.
      beforeLoad: async (tls) => {
        fake = new FakeLogsIngestion({ ...tls, acceptedToken: TOKEN, dcrImmutableId: DCR, streamName: DEFAULT_SENTINEL_STREAM, columns: SENTINEL_COLUMNS });
        await fake.start();
        return {};
      },
    },
  );
  // The settings as an operator would write them, through the sink's own parser.
  settings = parseSentinelSettings({ SENTINEL_INGESTION_ENDPOINT: fake.url, SENTINEL_DCR_IMMUTABLE_ID: DCR });
});
afterAll(async () => {
  await fake?.stop();
  await env?.stop();
});

const staticCredential = (token: string): TokenCredential => ({ getToken: async () => ({ token, expiresOnTimestamp: Date.now() + 3600_000 }) });

/** The real SDK client against the fake, trusting the test CA the way the app trusts its local fakes. */
function sentinelSink(overrides: Partial<SentinelSinkOptions> = {}): SentinelAlertSink {
  return new SentinelAlertSink({ settings, credential: staticCredential(TOKEN), localDevCaPem: env.certPem, retryDelayMs: 20, ...overrides });
}

/** One run of the real TenantPull with the sink injected. */
async function pull(tenantId: string, sink: AlertSink) {
  return pipelineServices(env, { sink }).tenantPull.run(tenantId, capturingLogger());
}

/** Served vs stored vs duplicated, by version `${id}@${lastUpdateTime}`, for one tenant. */
function tally(tenantId: string) {
  const served = [...env.defender.served(tenantId).keys()];
  const rows = fake
    .rows()
    .filter((row) => row["CustomerTenantId"] === tenantId)
    .map((row) => `${String(row["AlertId"])}@${String((row["Alert"] as { lastUpdateTime?: unknown }).lastUpdateTime)}`);
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(row, (counts.get(row) ?? 0) + 1);
  return {
    served: served.length,
    delivered: rows.length,
    duplicates: rows.length - counts.size,
    missing: served.filter((version) => !counts.has(version)),
  };
}

/** Fields the fake cut at 64 KB while `run` ran: the sink must never let that happen. */
async function truncationsDuring(run: () => Promise<void>): Promise<number> {
  const before = fake.truncatedFields;
  await run();
  return fake.truncatedFields - before;
}

const rowsOf = (tenantId: string) => fake.rows().filter((row) => row["CustomerTenantId"] === tenantId);

/** An alert whose evidence (long command lines) makes its JSON about `bytes` long. */
function bulkyAlert(alert: MdeAlert, bytes: number): MdeAlert {
  const entry = { ...(alert.evidence[0] as MdeAlert["evidence"][number]), processCommandLine: "powershell -enc ".padEnd(2000, "A") };
  const count = Math.max(1, Math.round((bytes - JSON.stringify({ ...alert, evidence: [] }).length) / JSON.stringify(entry).length));
  return { ...alert, evidence: Array.from({ length: count }, () => entry) };
}

async function expectSinkError(promise: Promise<unknown>): Promise<SinkError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SinkError);
  return error as SinkError;
}

describe("FakeLogsIngestion speaks the Logs Ingestion protocol", () => {
  const agent = () => new Agent({ connect: { ca: env.certPem } });
  const post = async (body: Buffer | string, headers: Record<string, string> = {}, path = `/dataCollectionRules/${DCR}/streams/${DEFAULT_SENTINEL_STREAM}?api-version=${API_VERSION}`) => {
    const dispatcher = agent();
    try {
      const response = await fetch(`${fake.url}${path}`, {
        method: "POST",
        dispatcher,
        headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}`, ...headers },
        body,
      });
      const text = await response.text();
      return { status: response.status, code: text ? (JSON.parse(text) as { error?: { code?: string } }).error?.code : undefined, headers: response.headers };
    } finally {
      await dispatcher.close();
    }
  };
  const row = (fields: Record<string, unknown> = {}) => ({ TimeGenerated: "2026-11-30T05:00:00Z", AlertId: `probe-${randomBytes(4).toString("hex")}`, ...fields });

  it("needs a bearer token, the DCR's token, the DCR and stream and the api-version", async () => {
    const body = JSON.stringify([row()]);
    expect(await post(body, { authorization: "" })).toMatchObject({ status: 401 });
    expect(await post(body, { authorization: "Bearer someone-else" })).toMatchObject({ status: 403, code: "OperationFailed" });
    expect(await post(body, {}, `/dataCollectionRules/dcr-${"0".repeat(32)}/streams/${DEFAULT_SENTINEL_STREAM}?api-version=${API_VERSION}`)).toMatchObject({ status: 404 });
    expect(await post(body, {}, `/dataCollectionRules/${DCR}/streams/Custom-Other_CL?api-version=${API_VERSION}`)).toMatchObject({ status: 404 });
    expect(await post(body, {}, `/dataCollectionRules/${DCR}/streams/${DEFAULT_SENTINEL_STREAM}`)).toMatchObject({ status: 400 });
  });

  it("takes a gzipped JSON array with 204, refuses reserved and undeclared columns, ignores a non-array", async () => {
    const before = fake.rows().length;
    expect(await post(gzipSync(JSON.stringify([row(), row()])), { "content-encoding": "gzip" })).toMatchObject({ status: 204 });
    expect(fake.rows().length).toBe(before + 2);
    expect(await post(JSON.stringify([row({ TenantId: "x" })]))).toMatchObject({ status: 400, code: "InvalidColumnName" });
    expect(await post(JSON.stringify([row({ Title: "x" })]))).toMatchObject({ status: 400 });
    expect(await post(JSON.stringify([row({ Colour: "x" })]))).toMatchObject({ status: 400 });
    expect(await post(JSON.stringify([row({ AlertTruncated: "yes" })]))).toMatchObject({ status: 400, code: "InvalidColumnValue" });
    // The service answers 204 to an object and stores nothing.
    expect(await post(JSON.stringify(row()))).toMatchObject({ status: 204 });
    expect(fake.rows().length).toBe(before + 2);
  });

  it("refuses a call over 1 MB, compressed or not, with 413", async () => {
    const big = JSON.stringify([row({ AlertTitle: "a".repeat(MAX_CALL_BYTES) })]);
    const gzipped = gzipSync(big);
    expect(gzipped.length).toBeLessThan(MAX_CALL_BYTES);
    const answer = await post(gzipped, { "content-encoding": "gzip" });
    expect(answer).toMatchObject({ status: 413, code: "ContentLengthLimitExceeded" });
    expect(answer.headers.get("x-ms-error-code")).toBe("ContentLengthLimitExceeded");
    expect(await post(big)).toMatchObject({ status: 413 });
  });

  it("cuts a field over 64 KB without a word, as the service does, and counts it", async () => {
    const before = fake.truncatedFields;
    const id = `probe-long-${randomBytes(4).toString("hex")}`;
    expect(await post(JSON.stringify([row({ AlertId: id, AlertTitle: "t".repeat(70_000), Alert: { blob: "b".repeat(70_000) } })]))).toMatchObject({ status: 204 });
    const stored = fake.rows().find((r) => r["AlertId"] === id);
    expect(String(stored?.["AlertTitle"]).length).toBe(MAX_FIELD_BYTES);
    expect(typeof stored?.["Alert"]).toBe("string"); // a cut dynamic value no longer parses
    expect(fake.truncatedFields).toBe(before + 2);
  });

  it("shows why the sink chunks for itself: the SDK's own split can exceed a strict 1,000,000 bytes by its commas", async () => {
    // 1,000 records of exactly 999 bytes: 999,000 by the SDK's count, one call of 1,000,001 bytes.
    const records = Array.from({ length: 1000 }, (_, i) => ({ AlertId: `${String(i).padStart(4, "0")}`.padEnd(985, "x") }));
    expect(Buffer.byteLength(JSON.stringify(records[0]))).toBe(999);
    const client = new LogsIngestionClient(fake.url, staticCredential(TOKEN), { tlsOptions: { ca: env.certPem }, retryOptions: { maxRetries: 0 } });
    const error = await client.upload(DCR, DEFAULT_SENTINEL_STREAM, records).catch((e: unknown) => e);
    expect(isAggregateLogsUploadError(error)).toBe(true);
    expect(fake.requests().at(-1)).toMatchObject({ status: 413, uncompressedBytes: 1_000_001 });
  });
});

describe("SentinelAlertSink in a real pull", () => {
  it("delivers every version once, in rows the stream accepts, gzipped and under the limits", async () => {
    const tenantId = await connectedTenant(env, "Northwind");
    const alerts = generateAlerts(tenantId, 173, { start: minutesAgo(120), spacingMs: 20_000 });
    env.defender.addAlerts(tenantId, alerts);
    const sink = sentinelSink();
    const requestsBefore = fake.requests().length;
    const cut = await truncationsDuring(async () => {
      expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 173, complete: true });
    });
    expect(cut).toBe(0);
    expect(tally(tenantId)).toEqual({ served: 173, delivered: 173, duplicates: 0, missing: [] });

    const rows = rowsOf(tenantId);
    const first = alerts[0] as MdeAlert;
    const row = rows.find((r) => r["AlertId"] === first.id);
    expect(row).toMatchObject({
      CustomerTenantId: tenantId,
      CustomerName: "Northwind",
      Source: "mde",
      Severity: first.severity,
      AlertTitle: first.title,
      Status: first.status,
    });
    // The alert exactly as the API served it (evidence included), its time in canonical UTC.
    expect(row?.["Alert"]).toEqual(JSON.parse(JSON.stringify(first)));
    expect(String(row?.["AlertLastUpdateTime"])).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
    expect(Date.parse(String(row?.["TimeGenerated"]))).toBeGreaterThan(Date.now() - 120_000);
    for (const name of ["TenantId", "Title", "Type", "id"]) expect(Object.keys(row ?? {})).not.toContain(name);

    const calls = fake.requests().slice(requestsBefore);
    expect(calls.every((call) => call.status === 204 && call.gzip && call.uncompressedBytes <= CALL_BUDGET_BYTES)).toBe(true);

    // Nothing new: nothing sent. An update is a new version: one more row.
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 0 });
    env.defender.updateAlert(tenantId, first.id, { status: "Resolved", lastUpdateTime: toMdeTimestamp(Date.now() - 1000) });
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 1 });
    expect(tally(tenantId)).toMatchObject({ served: 174, delivered: 174, duplicates: 0, missing: [] });
  });

  it("splits a page larger than 1 MB into calls under the budget", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 40, { start: minutesAgo(30), spacingMs: 1000 }).map((a) => bulkyAlert(a, 45_000)));
    const before = fake.requests().length;
    const cut = await truncationsDuring(async () => {
      expect(await pull(tenantId, sentinelSink())).toMatchObject({ outcome: "pulled", alerts: 40 });
    });
    expect(cut).toBe(0);
    const calls = fake.requests().slice(before);
    expect(calls.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...calls.map((call) => call.uncompressedBytes))).toBeLessThanOrEqual(CALL_BUDGET_BYTES);
    expect(tally(tenantId)).toMatchObject({ served: 40, delivered: 40, duplicates: 0 });
  });

  it("waits out a 429 storm, honouring Retry-After", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 10, { start: minutesAgo(30), spacingMs: 1000 }));
    fake.fail({ status: 429, times: 3, retryAfterSeconds: 1 });
    const started = Date.now();
    expect(await pull(tenantId, sentinelSink())).toMatchObject({ outcome: "pulled", alerts: 10 });
    // Three waits of one second each: the SDK honoured the header (its own back-off starts at 20 ms here).
    expect(Date.now() - started).toBeGreaterThanOrEqual(2_900);
    expect(tally(tenantId)).toMatchObject({ served: 10, delivered: 10, duplicates: 0 });
  });

  it("fails a storm longer than its retries with Retry-After in the error, acknowledging nothing; the next run delivers", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 10, { start: minutesAgo(30), spacingMs: 1000 }));
    const written: unknown[] = [];
    const sink = sentinelSink({ maxRetries: 1 });
    const watching: AlertSink = {
      write: (key, alerts, options) => sink.write(key, alerts, options).catch((error: unknown) => {
        written.push(error);
        throw error;
      }),
    };
    fake.fail({ status: 429, times: 2, retryAfterSeconds: 1 });
    expect(await pull(tenantId, watching)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    expect(written[0]).toMatchObject({ name: "SinkError", status: 429, details: { retryAfterMs: 1000 } });
    expect((written[0] as SinkError).details.permanent).toBeUndefined();
    expect(rowsOf(tenantId)).toEqual([]);
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 10 });
    expect(tally(tenantId)).toMatchObject({ served: 10, delivered: 10, duplicates: 0 });
  });

  it("stops waiting on Retry-After when the caller's signal fires", async () => {
    const tenantId = await connectedTenant(env);
    const [alert] = generateAlerts(tenantId, 1, { start: minutesAgo(5), spacingMs: 1 });
    fake.fail({ status: 429, retryAfterSeconds: 60 });
    try {
      const started = Date.now();
      const error = await expectSinkError(sentinelSink().write(batchKey(tenantId), envelopesOf(tenantId, [alert as MdeAlert]), { signal: AbortSignal.timeout(400) }));
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(error.message).toMatch(/was stopped/);
    } finally {
      fake.fail(null);
    }
  });

  for (const [status, token] of [
    [403, "not-the-dcr-token"],
    [401, ""],
  ] as const) {
    it(`fails ${status} as a permanent SinkError without any secret, acknowledging nothing; a later run delivers all`, async () => {
      const tenantId = await connectedTenant(env);
      env.defender.addAlerts(tenantId, generateAlerts(tenantId, 60, { start: minutesAgo(60), spacingMs: 10_000 }));
      const refused = sentinelSink({ credential: staticCredential(token) });
      const errors: unknown[] = [];
      const watching: AlertSink = {
        write: (key, alerts, options) =>
          refused.write(key, alerts, options).catch((error: unknown) => {
            errors.push(error);
            throw error;
          }),
      };
      expect(await pull(tenantId, watching)).toMatchObject({ outcome: "failed", code: "sink_failed" });
      const error = errors[0] as SinkError;
      expect(error).toBeInstanceOf(SinkError);
      expect(error.status).toBe(status);
      expect(error.details.permanent).toBe(true);
      if (status === 403) expect(error.details.code).toBe("OperationFailed");
      for (const secret of [TOKEN, "not-the-dcr-token", "Bearer", "authentication token provided", DCR]) expect(error.message).not.toContain(secret);
      expect(rowsOf(tenantId)).toEqual([]);

      expect(await pull(tenantId, sentinelSink())).toMatchObject({ outcome: "pulled", alerts: 60 });
      expect(tally(tenantId)).toMatchObject({ served: 60, delivered: 60, duplicates: 0, missing: [] });
    });
  }

  it("trims a 1 MB alert to its evidence-free form with a marker, and refuses one too large even then", async () => {
    const tenantId = await connectedTenant(env);
    const [plain, huge, hopeless] = generateAlerts(tenantId, 3, { start: minutesAgo(10), spacingMs: 1000 }) as [MdeAlert, MdeAlert, MdeAlert];
    const bulky = bulkyAlert(huge, 1_000_000);
    const overlong = { ...bulkyAlert(hopeless, 200_000), description: "d".repeat(100_000) };
    env.defender.addAlerts(tenantId, [plain, bulky, overlong]);
    const sink = sentinelSink();
    const results: SinkWriteResult[] = [];
    const watching: AlertSink = { write: async (key, alerts, options) => { const result = await sink.write(key, alerts, options); results.push(result); return result; } };
    expect(await truncationsDuring(async () => void (await pull(tenantId, watching)))).toBe(0);

    const rows = rowsOf(tenantId);
    expect(rows.map((r) => r["AlertId"]).sort()).toEqual([plain.id, bulky.id].sort());
    const trimmed = rows.find((r) => r["AlertId"] === bulky.id);
    const { evidence: _evidence, ...withoutEvidence } = bulky;
    expect(trimmed).toMatchObject({ AlertTruncated: true, AlertSizeBytes: Buffer.byteLength(JSON.stringify(bulky)) });
    expect(trimmed?.["Alert"]).toEqual(withoutEvidence);
    expect(rows.find((r) => r["AlertId"] === plain.id)?.["AlertTruncated"]).toBeUndefined();
    // Refused, for the pipeline to dead-letter: never cut by the service.
    const refusals = results.flatMap((result) => result.refused ?? []);
    expect(refusals.map((r) => [r.alert.id, r.reason])).toEqual([[overlong.id, "oversized"]]);
    expect(refusals[0]?.detail).not.toContain("ddd");
  });

  /**
   * A 1.8 MB page (three chunks) whose last chunk, holding the newest alert, answers 500 for as
   * long as the first pull runs: the chunks before it go through. Returns the 500s seen.
   */
  async function pullWithLastChunkFailing(tenantId: string, sink: SentinelAlertSink): Promise<{ alerts: MdeAlert[]; failedCalls: number }> {
    const alerts = generateAlerts(tenantId, 40, { start: minutesAgo(30), spacingMs: 1000 }).map((a) => bulkyAlert(a, 45_000));
    env.defender.addAlerts(tenantId, alerts);
    const poison = (alerts.at(-1) as MdeAlert).id;
    fake.failWhen((records) => (records.some((r) => r["AlertId"] === poison) ? { status: 500 } : undefined));
    const before = fake.requests().length;
    try {
      expect(await pull(tenantId, sink)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    } finally {
      fake.failWhen(null);
    }
    return { alerts, failedCalls: fake.requests().slice(before).filter((call) => call.status === 500).length };
  }

  it("after one chunk fails for good, the page's retry sends only what was not accepted", async () => {
    const tenantId = await connectedTenant(env);
    const sink = sentinelSink({ concurrency: 1, maxRetries: 2 });
    const { alerts, failedCalls } = await pullWithLastChunkFailing(tenantId, sink);
    expect(failedCalls).toBe(3); // the SDK's try and 2 retries of that chunk only
    const accepted = tally(tenantId).delivered;
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(40);

    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled" });
    expect(tally(tenantId)).toEqual({ served: 40, delivered: 40, duplicates: 0, missing: [] });
    const ids = fake.acceptedIds().filter((id) => alerts.some((a) => a.id === id));
    expect(ids.length).toBe(new Set(ids).size);
  });

  it("repeats at most the accepted chunks of the page in flight when another instance retries it (at least once)", async () => {
    const tenantId = await connectedTenant(env);
    await pullWithLastChunkFailing(tenantId, sentinelSink({ concurrency: 1, maxRetries: 0 }));
    const accepted = tally(tenantId).delivered;
    // A fresh instance (another worker, a restart) knows nothing of the first one's chunks.
    await pull(tenantId, sentinelSink());
    expect(tally(tenantId)).toMatchObject({ served: 40, delivered: 40 + accepted, duplicates: accepted, missing: [] });
  });

  it("gives up on a service that never answers when its timeout or the caller's signal fires", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 20, { start: minutesAgo(30), spacingMs: 1000 }));
    fake.hang("all");
    try {
      let started = Date.now();
      expect(await pull(tenantId, sentinelSink({ timeoutMs: 700 }))).toMatchObject({ outcome: "failed", code: "sink_failed" });
      expect(Date.now() - started).toBeLessThan(15_000);

      started = Date.now();
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 300);
      const [alert] = generateAlerts(tenantId, 1, { start: minutesAgo(40), spacingMs: 1 });
      const error = await expectSinkError(sentinelSink().write(batchKey(tenantId), envelopesOf(tenantId, [alert as MdeAlert]), { signal: controller.signal }));
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(error.status).toBeUndefined();
      expect(error.message).toMatch(/was stopped/);
    } finally {
      fake.hang(0);
    }
    expect(await pull(tenantId, sentinelSink())).toMatchObject({ outcome: "pulled", alerts: 20 });
    expect(tally(tenantId)).toMatchObject({ served: 20, delivered: 20, duplicates: 0 });
  });
});

function batchKey(tenantId: string) {
  return { tenantId, pageFrom: "2026-11-30T04:00:00.000Z", pageTo: "2026-11-30T05:00:00.000Z", skip: 0 };
}

/** Envelopes as the pull builds them, the alerts read by the real page scanner. */
function envelopesOf(tenantId: string, alerts: readonly MdeAlert[]): AlertEnvelope[] {
  const pulledAt = new Date().toISOString();
  return scanPage(JSON.stringify({ value: alerts })).alerts.map((alert) => ({ tenantId, tenantName: "Direct", source: "mde", pulledAt, alert }));
}
