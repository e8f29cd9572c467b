import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink, type CallOptions, type SinkWriteResult } from "../../shared/sinks/alertSink";
import { parseSplunkSettings } from "../../shared/sinks/splunk/settings";
import { DEFAULT_MAX_REQUEST_BYTES, SplunkHecSink, type SplunkHecSinkOptions } from "../../shared/sinks/splunk/splunkHecSink";
import { withoutMember } from "../../shared/sinks/splunk/hecEvents";
import { canonicalTimestamp } from "../../shared/time/timestamps";
import { generateAlerts, makeAlert, toMdeTimestamp, type MdeAlert } from "../fakes/alerts";
import { FakeSplunkHec, type IndexedEvent } from "../fakes/fakeSplunkHec";
import { capturingLogger, connectedTenant, minutesAgo, pipelineServices } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * The Splunk HEC sink end to end: real pulls (fake Entra, Key Vault, Defender, Azurite) deliver
 * into the sink, which talks HTTPS to a protocol-faithful fake collector. Each test counts the
 * versions the Defender fake served against the events the collector indexed, and duplicates.
 */

const TOKEN = randomUUID();
const ACK_TOKEN = randomUUID();
const WRONG_TOKEN = randomUUID();
const TOKENS = [TOKEN, ACK_TOKEN, WRONG_TOKEN];

let env: TestEnvironment;
let hec: FakeSplunkHec;
const sinkLog = capturingLogger();
const pullLogs: string[] = [];
const errors: unknown[] = [];
const opened: SplunkHecSink[] = [];
const sleeps: number[] = [];

beforeAll(async () => {
  env = await startTestEnvironment(
    { PULL_SETTLE_SECONDS: "0", PULL_OVERLAP_MINUTES: "10", PULL_EXPAND_EVIDENCE: "true" },
    {
      // Started with the certificate the app trusts, before the app loads.
      beforeLoad: async (tls) => {
        hec = new FakeSplunkHec({
          ...tls,
          tokens: [
            { token: TOKEN, indexes: ["main", "mssp"] },
            { token: ACK_TOKEN, ack: true, indexes: ["mssp"] },
          ],
        });
        await hec.start();
        return {};
      },
    },
  );
});
afterAll(async () => {
  await Promise.allSettled(opened.map((sink) => sink.close()));
  await hec?.stop();
  await env?.stop();
});

/** Records what the sink returned or threw, and when a write resolved. */
class RecordingSink implements AlertSink {
  readonly results: SinkWriteResult[] = [];
  readonly errors: unknown[] = [];
  readonly resolvedAt: number[] = [];
  readonly written: string[][] = [];

  constructor(readonly inner: SplunkHecSink) {}

  async write(key: AlertBatchKey, alerts: readonly AlertEnvelope[], options?: CallOptions): Promise<SinkWriteResult> {
    this.written.push(alerts.map((e) => e.alert.id));
    try {
      const result = await this.inner.write(key, alerts, options);
      this.results.push(result);
      this.resolvedAt.push(Date.now());
      return result;
    } catch (error) {
      this.errors.push(error);
      errors.push(error);
      throw error;
    }
  }
}

/** Short waits so the suite stays fast; every requested wait is recorded. */
const quickSleep = (ms: number, signal: AbortSignal): Promise<void> => {
  sleeps.push(ms);
  return delay(Math.min(ms, 20), undefined, { signal });
};

function splunkSink(settings: Record<string, string> = {}, options: SplunkHecSinkOptions = {}): RecordingSink {
  const sink = new SplunkHecSink(parseSplunkSettings({ SPLUNK_HEC_URL: hec.url, SPLUNK_HEC_TOKEN: TOKEN, SPLUNK_INDEX: "mssp", ...settings }), {
    caPem: env.certPem,
    logger: sinkLog,
    sleep: quickSleep,
    retryBackoffMs: { initial: 10, max: 40 },
    ackPollMs: { initial: 20, max: 80 },
    ...options,
  });
  opened.push(sink);
  return new RecordingSink(sink);
}

async function pull(tenantId: string, sink: AlertSink) {
  const log = capturingLogger();
  const outcome = await pipelineServices(env, { sink }).tenantPull.run(tenantId, log);
  pullLogs.push(...log.lines);
  return outcome;
}

const versionOf = (event: unknown): string => {
  const alert = event as { id: string; lastUpdateTime: string };
  return `${alert.id}@${alert.lastUpdateTime}`;
};

function indexedFor(tenantId: string): IndexedEvent[] {
  return hec.indexed().filter((e) => e.fields?.["tenant_id"] === tenantId);
}

/** Served by Defender vs indexed by Splunk vs duplicated, by version. */
function tally(tenantId: string) {
  const served = [...env.defender.served(tenantId).keys()];
  const counts = new Map<string, number>();
  for (const e of indexedFor(tenantId)) counts.set(versionOf(e.event), (counts.get(versionOf(e.event)) ?? 0) + 1);
  const indexed = [...counts.values()].reduce((a, b) => a + b, 0);
  return {
    served: served.length,
    indexed,
    duplicates: indexed - counts.size,
    missing: served.filter((v) => !counts.has(v)),
    duplicated: [...counts].filter(([, n]) => n > 1).map(([v]) => v),
  };
}

function expectExactlyOnce(tenantId: string, count: number): void {
  const t = tally(tenantId);
  expect(t.missing).toEqual([]);
  expect(t.duplicated).toEqual([]);
  expect(t).toMatchObject({ served: count, indexed: count, duplicates: 0 });
}

function errorOf(sink: RecordingSink): SinkError {
  const error = sink.errors.at(-1);
  expect(error).toBeInstanceOf(SinkError);
  return error as SinkError;
}

async function tenantWith(count: number, name = "Contoso"): Promise<{ tenantId: string; alerts: MdeAlert[] }> {
  const tenantId = await connectedTenant(env, name);
  const alerts = generateAlerts(tenantId, count, { start: minutesAgo(60), spacingMs: 1_000 });
  env.defender.addAlerts(tenantId, alerts);
  return { tenantId, alerts };
}

/** An envelope as the pipeline hands it over, for calls to the sink without a pull. */
function envelopeOf(alert: MdeAlert, tenantId = randomUUID()): AlertEnvelope {
  const time = canonicalTimestamp(alert.lastUpdateTime);
  if (!time) throw new Error("bad time");
  return {
    tenantId,
    tenantName: "Direct",
    source: "mde",
    pulledAt: new Date().toISOString(),
    alert: { id: alert.id, lastUpdateTime: alert.lastUpdateTime, updatedAtKey: time.key, updatedAtMs: time.ms, json: JSON.stringify(alert) },
  };
}

const KEY: AlertBatchKey = { tenantId: randomUUID(), pageFrom: "2026-01-01T00:00:00.000Z", pageTo: "2026-01-01T01:00:00.000Z", skip: 0 };

describe("event shape and batching", () => {
  it("indexes every served version once, with the alert's time, the sourcetype, index and fields, in requests under the cap", async () => {
    const { tenantId, alerts } = await tenantWith(1_200, "Contoso Ltd");
    const sink = splunkSink();
    const before = hec.requests().length;
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 1_200, complete: true });
    expectExactlyOnce(tenantId, 1_200);

    const requests = hec.requests().slice(before).filter((r) => r.path === "/services/collector/event");
    expect(requests.length).toBeGreaterThanOrEqual(3);
    for (const r of requests) {
      expect(r.status).toBe(200);
      expect(r.bytes).toBeLessThanOrEqual(DEFAULT_MAX_REQUEST_BYTES);
    }
    // Batches are filled: all but the last of the page's requests carry more than 90 % of the cap.
    for (const r of requests.slice(0, -1)) expect(r.bytes).toBeGreaterThan(DEFAULT_MAX_REQUEST_BYTES * 0.9);

    const byId = new Map(alerts.map((a) => [a.id, a]));
    for (const e of indexedFor(tenantId)) {
      const alert = byId.get((e.event as { id: string }).id) as MdeAlert;
      expect(e).toMatchObject({ index: "mssp", sourcetype: "ms:defender:atp:alerts", source: "mssp-defender-connector" });
      expect(e.fields).toEqual({ tenant_id: tenantId, tenant_name: "Contoso Ltd", source: "mde" });
      expect(Math.round((e.time as number) * 1000)).toBe(canonicalTimestamp(alert.lastUpdateTime)?.ms);
      // The alert as the API sent it, evidence included, members in their order.
      expect(JSON.stringify(e.event)).toBe(JSON.stringify(alert));
    }

    // New versions of 100 alerts: the next run indexes exactly those.
    const now = Date.now() - 2_000;
    for (const [i, alert] of alerts.slice(0, 100).entries()) {
      env.defender.updateAlert(tenantId, alert.id, { status: "Resolved", lastUpdateTime: toMdeTimestamp(now + i, "12") });
    }
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 100 });
    expectExactlyOnce(tenantId, 1_300);
  });

  it("sends to the token's default index when SPLUNK_INDEX is not set, with a sourcetype of the operator's choice", async () => {
    const { tenantId } = await tenantWith(5);
    const sink = splunkSink({ SPLUNK_INDEX: "", SPLUNK_SOURCETYPE: "mssp:defender:alert" });
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 5 });
    expect(indexedFor(tenantId).map((e) => [e.index, e.sourcetype])).toEqual(Array.from({ length: 5 }, () => ["main", "mssp:defender:alert"]));
  });

  it("sends an alert too large for a request without its evidence, marked, and refuses one that is still too large", async () => {
    const tenantId = await connectedTenant(env);
    const [plain, bulky, hopeless] = generateAlerts(tenantId, 3, { start: minutesAgo(30), spacingMs: 1_000 }) as [MdeAlert, MdeAlert, MdeAlert];
    const evidence = Array.from({ length: 40 }, () => bulky.evidence).flat();
    const big = { ...bulky, evidence };
    const huge = { ...hopeless, description: "x".repeat(30_000) };
    env.defender.addAlerts(tenantId, [plain, big, huge]);
    const sink = splunkSink({}, { maxRequestBytes: 20_000 });
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled" });

    const refused = sink.results.flatMap((r) => r.refused ?? []);
    expect(refused.map((r) => [r.alert.id, r.reason])).toEqual([[huge.id, "oversized"]]);
    expect(refused[0]?.detail).toMatch(/^\d+ bytes as a Splunk HEC event even without its evidence, over the 20000-byte request cap$/);

    const indexed = indexedFor(tenantId);
    expect(indexed.map((e) => (e.event as { id: string }).id).sort()).toEqual([plain.id, big.id].sort());
    const trimmed = indexed.find((e) => (e.event as { id: string }).id === big.id) as IndexedEvent;
    expect(trimmed.fields).toEqual({ tenant_id: tenantId, tenant_name: "Contoso", source: "mde", truncated: "evidence" });
    const { evidence: _dropped, ...withoutEvidence } = big;
    expect(JSON.stringify(trimmed.event)).toBe(JSON.stringify(withoutEvidence));
    expect(indexed.find((e) => (e.event as { id: string }).id === plain.id)?.fields).not.toHaveProperty("truncated");
  });

  it("cuts a member out of the raw JSON without touching the rest", () => {
    expect(withoutMember('{"a":1, "evidence" : [{"x":"]}"}], "b":{"c":[1,2]},"d":"e\\"vidence"}', "evidence")).toBe('{"a":1,"b":{"c":[1,2]},"d":"e\\"vidence"}');
    expect(withoutMember('{"evidence":[],"a":1.50}', "evidence")).toBe('{"a":1.50}');
    expect(withoutMember('{"a":1,"evidence":null}', "evidence")).toBe('{"a":1}');
    expect(withoutMember('{"evid\\u0065nce":[1]}', "evidence")).toBe("{}");
    expect(withoutMember('{"a":1}', "evidence")).toBeUndefined();
    expect(withoutMember("[1]", "evidence")).toBeUndefined();
    expect(withoutMember('{"a":"unterminated', "evidence")).toBeUndefined();
  });

  it("splits a batch the collector refuses as too large, and hands back a single event over its limit as refused", async () => {
    const { tenantId } = await tenantWith(20);
    hec.setMaxContentLength(12_000);
    try {
      const before = hec.requests().length;
      expect(await pull(tenantId, splunkSink())).toMatchObject({ outcome: "pulled", alerts: 20 });
      expectExactlyOnce(tenantId, 20);
      const statuses = hec.requests().slice(before).map((r) => r.status);
      expect(statuses).toContain(413);
      expect(hec.requests().slice(before).filter((r) => r.status === 200).every((r) => r.bytes <= 12_000)).toBe(true);

      hec.setMaxContentLength(1_000);
      const sink = splunkSink();
      const small = envelopeOf(makeAlert({ id: "da-one", lastUpdateTime: "2026-01-01T00:10:00Z" }));
      // Never silently: the event comes back refused (the pipeline dead-letters it), and nothing was indexed for it.
      const result = await sink.write(KEY, [small]);
      expect(result?.refused?.map((r) => [r.alert.id, r.reason])).toEqual([["da-one", "oversized"]]);
    } finally {
      hec.setMaxContentLength(1_000_000);
    }
  });
});

describe("a busy or refusing collector", () => {
  it("rides out a code 9 storm, waiting as Retry-After says, and a load balancer's bare 503s", async () => {
    const { tenantId } = await tenantWith(40);
    sleeps.length = 0;
    hec.storm({ times: 3, code: 9, retryAfterSeconds: 2 });
    expect(await pull(tenantId, splunkSink())).toMatchObject({ outcome: "pulled", alerts: 40 });
    expect(sleeps).toEqual([2_000, 2_000, 2_000]);
    expectExactlyOnce(tenantId, 40);

    const second = await tenantWith(10, "Fabrikam");
    sleeps.length = 0;
    hec.storm({ times: 2, bare: true });
    expect(await pull(second.tenantId, splunkSink())).toMatchObject({ outcome: "pulled", alerts: 10 });
    // No Retry-After: the sink's own jittered backoff (10 ms doubling, capped at 40 ms here).
    expect(sleeps).toHaveLength(2);
    expect(sleeps[0]).toBeGreaterThanOrEqual(5);
    expect(sleeps[1]).toBeLessThanOrEqual(20);
    expectExactlyOnce(second.tenantId, 10);
  });

  it("gives up after its attempts with a retryable SinkError, acknowledges nothing, and the next run delivers all", async () => {
    const { tenantId } = await tenantWith(15);
    hec.storm({ times: 1_000, code: 18 });
    const sink = splunkSink({}, { maxAttempts: 3 });
    try {
      expect(await pull(tenantId, sink)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    } finally {
      hec.storm(null);
    }
    const error = errorOf(sink);
    expect(error.message).toBe("Splunk HEC stayed busy or unreachable while sending events, after 3 attempt(s) (code 18 (HEC is unhealthy, queues are full), HTTP 503)");
    expect(error.details).toEqual({ code: "18" });
    expect(indexedFor(tenantId)).toHaveLength(0);
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 15 });
    expectExactlyOnce(tenantId, 15);
  });

  it("fails permanently on a wrong token, acknowledges nothing, and a later run with the right one delivers all", async () => {
    const { tenantId } = await tenantWith(25);
    const wrong = splunkSink({ SPLUNK_HEC_TOKEN: WRONG_TOKEN });
    expect(await pull(tenantId, wrong)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    const error = errorOf(wrong);
    expect(error).toMatchObject({ status: 403, details: { permanent: true, code: "4" } });
    expect(error.message).toBe("Splunk HEC refused the events (code 4 (Invalid token), HTTP 403; check SPLUNK_HEC_TOKEN)");
    expect(indexedFor(tenantId)).toHaveLength(0);

    expect(await pull(tenantId, splunkSink())).toMatchObject({ outcome: "pulled", alerts: 25 });
    expectExactlyOnce(tenantId, 25);
  });

  it("fails permanently on an index the token may not write to (code 7)", async () => {
    const sink = splunkSink({ SPLUNK_INDEX: "secret" });
    await expect(sink.write(KEY, [envelopeOf(makeAlert({ id: "da-ix", lastUpdateTime: "2026-01-01T00:10:00Z" }))])).rejects.toBeInstanceOf(SinkError);
    expect(errorOf(sink)).toMatchObject({ status: 400, details: { permanent: true, code: "7" } });
    expect(errorOf(sink).message).toContain("change SPLUNK_INDEX");
  });

  it("resends only from the invalid event after a partial indexing (code 6): no duplicate of the indexed prefix", async () => {
    const { tenantId, alerts } = await tenantWith(20);
    const target = (alerts[7] as MdeAlert).id;
    hec.rejectEvents((e) => (e["event"] as { id?: string }).id === target, 1);
    const before = hec.requests().length;
    expect(await pull(tenantId, splunkSink())).toMatchObject({ outcome: "pulled", alerts: 20 });
    expectExactlyOnce(tenantId, 20);
    const events = hec.requests().slice(before).filter((r) => r.path === "/services/collector/event");
    expect(events.map((r) => [r.status, r.code, r.indexed])).toEqual([
      [400, 6, 7],
      [200, 0, 13],
    ]);
  });

  it("dead-letters an event the collector refuses (code 6) twice and delivers every other one once: one event cannot wedge the tenant", async () => {
    const { tenantId, alerts } = await tenantWith(20);
    const target = alerts[12] as MdeAlert;
    hec.rejectEvents((e) => (e["event"] as { id?: string }).id === target.id, Number.POSITIVE_INFINITY);
    const sink = splunkSink();
    const services = pipelineServices(env, { sink });
    try {
      expect(await services.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 20, complete: true });
    } finally {
      hec.rejectEvents(null);
    }
    const t = tally(tenantId);
    expect(t.missing).toEqual([`${target.id}@${target.lastUpdateTime}`]);
    expect(t.duplicated).toEqual([]);
    expect(indexedFor(tenantId)).toHaveLength(19);
    const letters = await services.deadLetters.list(tenantId);
    expect(letters.map((l) => l.reason)).toEqual(["rejected"]);
    expect(JSON.parse((await services.deadLetters.read(letters[0]?.name ?? ""))?.raw ?? "{}")).toMatchObject({ id: target.id });
  });
});

describe("indexer acknowledgement", () => {
  it("counts a request delivered only once its ack id read true", async () => {
    const { tenantId } = await tenantWith(600);
    hec.setAck({ delayMs: 300 });
    const sink = splunkSink({ SPLUNK_HEC_TOKEN: ACK_TOKEN, SPLUNK_HEC_ACK: "true" }, { maxRequestBytes: 400_000 });
    const before = hec.requests().length;
    const readBefore = hec.acksReadTrue().length;
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 600 });
    expectExactlyOnce(tenantId, 600);
    const events = hec.requests().slice(before).filter((r) => r.path === "/services/collector/event");
    expect(events.length).toBeGreaterThanOrEqual(3);
    expect(events.every((r) => r.channel && r.ackId !== undefined)).toBe(true);
    const read = hec.acksReadTrue().slice(readBefore);
    expect(read.map((a) => a.ackId).sort()).toEqual(events.map((r) => r.ackId).sort());
    // The write resolved after the last ack turned true, at least the ack delay after the last request.
    expect(sink.resolvedAt[0]).toBeGreaterThanOrEqual(Math.max(...read.map((a) => a.at)));
    expect(Math.max(...read.map((a) => a.at)) - Math.max(...events.map((r) => r.at))).toBeGreaterThanOrEqual(290);
    expect(hec.pendingAcks()).toBe(0);
    hec.setAck({});
  });

  it("fails when an ack never comes, and the next run sends the page again: every event twice (at-least-once)", async () => {
    const { tenantId } = await tenantWith(30);
    hec.setAck({ never: true });
    const sink = splunkSink({ SPLUNK_HEC_TOKEN: ACK_TOKEN, SPLUNK_HEC_ACK: "true" }, { timeoutMs: 1_500 });
    const started = Date.now();
    try {
      expect(await pull(tenantId, sink)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    } finally {
      hec.setAck({});
    }
    expect(Date.now() - started).toBeLessThan(8_000);
    const error = errorOf(sink);
    expect(error.message).toBe(
      "Splunk HEC: waiting for indexer acknowledgement (1 of 1 request(s) unacknowledged) was abandoned because the sink's 1500 ms timeout passed; nothing of the batch is acknowledged and the next run sends it again",
    );
    expect(error.details.permanent).toBeUndefined();
    // Indexed but never acknowledged: the pipeline did not move, so the next run sends them again.
    expect(indexedFor(tenantId)).toHaveLength(30);
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 30 });
    const t = tally(tenantId);
    expect(t).toMatchObject({ served: 30, indexed: 60, duplicates: 30, missing: [] });
  });

  it("refuses before sending anything when SPLUNK_HEC_ACK=true meets a token without acknowledgement (code 14)", async () => {
    const sink = splunkSink({ SPLUNK_HEC_ACK: "true" });
    const before = hec.indexed().length;
    await expect(sink.write(KEY, [envelopeOf(makeAlert({ id: "da-noack", lastUpdateTime: "2026-01-01T00:10:00Z" }))])).rejects.toBeInstanceOf(SinkError);
    expect(errorOf(sink)).toMatchObject({ status: 400, details: { permanent: true, code: "14" } });
    expect(errorOf(sink).message).toContain("set SPLUNK_HEC_ACK=false");
    expect(hec.indexed().length).toBe(before);
  });

  it("refuses permanently when the token wants acknowledgement and SPLUNK_HEC_ACK is off (code 10)", async () => {
    const sink = splunkSink({ SPLUNK_HEC_TOKEN: ACK_TOKEN });
    await expect(sink.write(KEY, [envelopeOf(makeAlert({ id: "da-nochannel", lastUpdateTime: "2026-01-01T00:10:00Z" }))])).rejects.toBeInstanceOf(SinkError);
    expect(errorOf(sink)).toMatchObject({ status: 400, details: { permanent: true, code: "10" } });
    expect(errorOf(sink).message).toContain("set SPLUNK_HEC_ACK=true");
  });
});

describe("bounds", () => {
  it("stops at once when the pull's signal fires while the collector hangs", async () => {
    hec.hang("all");
    try {
      const sink = splunkSink({}, { requestTimeoutMs: 60_000 });
      const controller = new AbortController();
      const started = Date.now();
      setTimeout(() => controller.abort(), 200);
      await expect(sink.write(KEY, [envelopeOf(makeAlert({ id: "da-hang", lastUpdateTime: "2026-01-01T00:10:00Z" }))], { signal: controller.signal })).rejects.toThrow(
        "Splunk HEC: sending events was abandoned because the pull's time ran out; nothing of the batch is acknowledged and the next run sends it again",
      );
      expect(Date.now() - started).toBeLessThan(1_500);
      // Cancelled, not left running: the collector sees the connection go.
      await expect.poll(() => hec.hanging, { timeout: 1_000 }).toBe(0);
    } finally {
      hec.hang(0);
    }
  });

  it("stops at its own timeout too, and a hanging request counts as no answer within it", async () => {
    hec.hang("all");
    try {
      const sink = splunkSink({}, { timeoutMs: 600, requestTimeoutMs: 250 });
      const started = Date.now();
      await expect(sink.write(KEY, [envelopeOf(makeAlert({ id: "da-hang2", lastUpdateTime: "2026-01-01T00:10:00Z" }))])).rejects.toBeInstanceOf(SinkError);
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(errorOf(sink).details.permanent).toBeUndefined();
    } finally {
      hec.hang(0);
    }
  });

  it("names only a network code when there is no answer: a closed port, a certificate the app does not trust", async () => {
    const alert = envelopeOf(makeAlert({ id: "da-net", lastUpdateTime: "2026-01-01T00:10:00Z" }));
    const closed = splunkSink({ SPLUNK_HEC_URL: "https://127.0.0.1:1" }, { maxAttempts: 2 });
    await expect(closed.write(KEY, [alert])).rejects.toThrow("Splunk HEC stayed busy or unreachable while sending events, after 2 attempt(s) (no answer: ECONNREFUSED)");
    const untrusted = splunkSink({}, { maxAttempts: 1, caPem: "" });
    await expect(untrusted.write(KEY, [alert])).rejects.toThrow(/^Splunk HEC stayed busy or unreachable while sending events, after 1 attempt\(s\) \(no answer: [A-Z_]*CERT[A-Z_]*\)$/);
    expect(errorOf(untrusted).status).toBeUndefined();
  });

  it("reports the collector's health", async () => {
    const sink = splunkSink().inner;
    expect(await sink.checkHealth()).toEqual({ healthy: true, status: 200, code: 17 });
    hec.setHealth(18);
    expect(await sink.checkHealth()).toEqual({ healthy: false, status: 503, code: 18 });
    hec.setHealth(17);
  });
});

describe("secrets", () => {
  it("never puts a token into a log line, an error or what the collector recorded", () => {
    expect(sinkLog.lines.length).toBeGreaterThan(0);
    expect(errors.length).toBeGreaterThan(5);
    const texts = [
      ...sinkLog.lines,
      ...pullLogs,
      ...errors.map((e) => (e instanceof Error ? `${e.message} ${e.stack ?? ""} ${JSON.stringify(e)}` : String(e))),
      JSON.stringify(hec.requests()),
      JSON.stringify(hec.indexed()),
    ];
    for (const text of texts) for (const token of TOKENS) expect(text).not.toContain(token);
  });
});
