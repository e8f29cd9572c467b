import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { AggregateLogsUploadError } from "@azure/monitor-ingestion";
import { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { AlertEnvelope } from "../../shared/sinks/alertSink";
import { SinkError } from "../../shared/sinks/alertSink";
import { eventHubsFailure } from "../../shared/sinks/eventhubs/failure";
import { BlobParkingStore, ParkingError } from "../../shared/sinks/parking";
import { describeAnswer, isRetryable } from "../../shared/sinks/splunk/hecCodes";
import { batches, epochSeconds, EventWriter, jsonValueEnd, requestBody, withoutMember } from "../../shared/sinks/splunk/hecEvents";
import { parseRetryAfter } from "../../shared/sinks/splunk/hecTransport";
import { FIELD_LIMIT_BYTES, prepareRecords, SENTINEL_COLUMNS, type PreparedRecord } from "../../shared/sinks/sentinel/records";
import { retryAfterOf, uploadFailure } from "../../shared/sinks/sentinel/failures";
import { createSentinelSink, SentinelAlertSink, type SentinelSinkOptions } from "../../shared/sinks/sentinel/sentinelSink";
import { chunkRecords } from "../../shared/sinks/sentinel/chunks";
import { IngestedLedger } from "../../shared/sinks/sentinel/ledger";
import { DEFAULT_SENTINEL_STREAM, parseSentinelSettings } from "../../shared/sinks/sentinel/settings";
import { parseSplunkSettings } from "../../shared/sinks/splunk/settings";
import { SplunkHecSink } from "../../shared/sinks/splunk/splunkHecSink";
import { scanPage } from "../../shared/defender/pageScanner";
import { APP_VERSION } from "../../shared/version";
import { makeAlert, type MdeAlert } from "../fakes/alerts";
import { FakeLogsIngestion } from "../fakes/fakeLogsIngestion";
import type { FakeSplunkHec } from "../fakes/fakeSplunkHec";
import { sinkFailure, splunkSinkMaker, startFakeHec } from "../harness/splunkSinkFixture";
import { createTestCertificate, type TestCertificate } from "../fakes/tls";

/**
 * shared/sinks without the app (issue 15, mutation testing): what a SIEM receives, how a batch
 * is split and retried, what is refused or handed back, and the errors an operator reads. The
 * Splunk sink runs against the HTTPS fake collector through its real transport (undici).
 */

const TENANT = "6a0d1c2e-3b4f-4a5d-8e6f-7a8b9c0d1e2f";
const TOKEN = randomUUID();
const ACK_TOKEN = randomUUID();
const OTHER_TOKEN = randomUUID();

let cert: TestCertificate;
let hec: FakeSplunkHec;
let logs: FakeLogsIngestion;
const opened: SplunkHecSink[] = [];
const DCR = `dcr-${randomBytes(16).toString("hex")}`;
const LOGS_TOKEN = `li-${randomBytes(18).toString("base64url")}`;

beforeAll(async () => {
  cert = await createTestCertificate();
  hec = await startFakeHec(cert, { plain: TOKEN, ack: ACK_TOKEN });
  logs = new FakeLogsIngestion({ certPem: cert.certPem, keyPem: cert.keyPem, acceptedToken: LOGS_TOKEN, dcrImmutableId: DCR, streamName: DEFAULT_SENTINEL_STREAM, columns: SENTINEL_COLUMNS });
  await logs.start();
});
afterAll(async () => {
  await logs?.stop();
  await Promise.allSettled(opened.map((sink) => sink.close()));
  await hec?.stop();
});

function envelope(alert: MdeAlert, source: AlertEnvelope["source"] = "mde"): AlertEnvelope {
  const [scanned] = scanPage(JSON.stringify({ value: [alert] })).alerts;
  if (!scanned) throw new Error("the scanner refused the alert");
  return { tenantId: TENANT, tenantName: "Contoso", source, pulledAt: "2026-11-30T05:01:00.123Z", alert: scanned };
}

function alertOf(id: string, evidenceBytes = 0): MdeAlert {
  const alert = makeAlert({ id, lastUpdateTime: "2026-11-30T04:59:30.5166667Z" });
  if (evidenceBytes > 0) {
    const template = alert.evidence[0];
    if (!template) throw new Error("makeAlert gave no evidence");
    const entry = { ...template, processCommandLine: "x".repeat(1000) };
    alert.evidence = Array.from({ length: Math.ceil(evidenceBytes / Buffer.byteLength(JSON.stringify(entry))) }, () => entry);
  }
  return alert;
}

const key = (tenantId = TENANT) => ({ tenantId, pageFrom: "2026-11-30T04:00:00.000Z", pageTo: "2026-11-30T05:00:00.000Z", skip: 0 });

const splunk = splunkSinkMaker(() => ({ url: hec.url, token: TOKEN, caPem: cert.certPem }), opened);
const failure = sinkFailure;

function eventsOf(ids: readonly string[]) {
  return hec.indexed().filter((e) => ids.includes((e.event as { id: string }).id));
}

describe("Splunk HEC: what is sent", () => {
  it("sends each alert with its time, source, sourcetype, index and tenant fields, in one request", async () => {
    const ids = [`sa-${randomUUID()}`, `sa-${randomUUID()}`];
    const before = hec.requests().length;
    const { sink } = splunk({ SPLUNK_SOURCETYPE: "mde:alert" });
    const result = await sink.write(key(), ids.map((id) => envelope(alertOf(id))));
    expect(result).toEqual({});
    expect(hec.requests().length - before).toBe(1);
    const events = eventsOf(ids);
    expect(events).toHaveLength(2);
    for (const event of events) {
      expect(event).toMatchObject({ index: "mssp", source: "mssp-defender-connector", sourcetype: "mde:alert", fields: { tenant_id: TENANT, tenant_name: "Contoso", source: "mde" } });
      expect(event.fields).not.toHaveProperty("truncated");
      expect(event.time).toBe(Math.floor(Date.parse("2026-11-30T04:59:30.516Z")) / 1000);
    }
  });

  it("sends Graph alerts with the _json sourcetype and the token's default index when SPLUNK_INDEX is unset", async () => {
    const id = `sg-${randomUUID()}`;
    const { sink } = splunk({ SPLUNK_INDEX: "" }, { source: "custom-source" });
    await sink.write(key(), [envelope(alertOf(id), "graph")]);
    expect(eventsOf([id])[0]).toMatchObject({ index: "main", source: "custom-source", sourcetype: "_json", fields: { source: "graph" } });
  });

  it("cuts batches at the request cap and sends an oversized alert without its evidence, marked", async () => {
    const small = [`sb-${randomUUID()}`, `sb-${randomUUID()}`, `sb-${randomUUID()}`];
    const big = `sb-${randomUUID()}`;
    const writer = new EventWriter({ source: "mssp-defender-connector", sourcetype: "mde:alert", index: "mssp" });
    const one = Math.max(...small.map((id) => writer.event(envelope(alertOf(id))).bytes));
    const before = hec.requests().length;
    // Two small events and their separator fit a request, a third does not.
    const { sink } = splunk({ SPLUNK_SOURCETYPE: "mde:alert" }, { maxRequestBytes: 2 * one + 60 });
    const result = await sink.write(key(), [...small.map((id) => envelope(alertOf(id))), envelope(alertOf(big, 20_000))]);
    expect(result).toEqual({});
    const sent = hec.requests().slice(before);
    expect(sent.map((r) => r.indexed)).toEqual([2, 2]);
    const trimmed = eventsOf([big])[0];
    expect(trimmed?.fields).toMatchObject({ truncated: "evidence" });
    expect(trimmed?.event).not.toHaveProperty("evidence");
  });

  it("refuses an alert still too large without its evidence, naming its size, and sends the rest", async () => {
    const id = `sr-${randomUUID()}`;
    const ok = `sr-${randomUUID()}`;
    const { sink, warnings } = splunk({}, { maxRequestBytes: 3_000 });
    const huge = alertOf(id);
    huge.title = "t".repeat(5_000);
    const result = await sink.write(key(), [envelope(huge), envelope(alertOf(ok))]);
    expect(result.refused).toHaveLength(1);
    expect(result.refused?.[0]).toMatchObject({ reason: "oversized", alert: { id } });
    expect(result.refused?.[0]?.detail).toMatch(/^\d+ bytes as a Splunk HEC event even without its evidence, over the 3000-byte request cap$/);
    expect(warnings.map((w) => w.message)).toContain("An alert is too large for a Splunk HEC request even without its evidence; it is returned as refused");
    expect(eventsOf([ok])).toHaveLength(1);
  });

  it("refuses an alert with no evidence to cut, saying so, and sends nothing for an empty batch", async () => {
    const id = `sn-${randomUUID()}`;
    const alert = alertOf(id);
    alert.evidence = [];
    alert.title = "t".repeat(5_000);
    const before = hec.requests().length;
    const { sink } = splunk({}, { maxRequestBytes: 3_000 });
    const json = envelope(alert);
    const bare = JSON.parse(json.alert.json) as Record<string, unknown>;
    delete bare["evidence"];
    const result = await sink.write(key(), [{ ...json, alert: { ...json.alert, json: JSON.stringify(bare) } }]);
    expect(result.refused?.[0]?.detail).toMatch(/^\d+ bytes as a Splunk HEC event, over the 3000-byte request cap$/);
    expect(await sink.write(key(), [])).toEqual({});
    expect(hec.requests().length).toBe(before);
  });

  it("splits a batch the collector refuses as too large, and refuses a single event over its limit", async () => {
    const ids = Array.from({ length: 4 }, () => `sx-${randomUUID()}`);
    const big = `sx-${randomUUID()}`;
    const one = Buffer.byteLength(new EventWriter({ source: "s", sourcetype: "t" }).event(envelope(alertOf(ids[0] as string))).text);
    hec.setMaxContentLength(2 * one + 500);
    try {
      const { sink } = splunk();
      const result = await sink.write(key(), [...ids.map((id) => envelope(alertOf(id))), envelope(alertOf(big, 3 * one))]);
      expect(eventsOf(ids)).toHaveLength(4);
      expect(result.refused).toEqual([expect.objectContaining({ alert: expect.objectContaining({ id: big }), reason: "oversized", detail: "larger than the collector's max_content_length" })]);
    } finally {
      hec.setMaxContentLength(1_000_000);
    }
  });
});

describe("Splunk HEC: busy, refusing and partial answers", () => {
  it("waits as Retry-After says, then delivers", async () => {
    const id = `rb-${randomUUID()}`;
    hec.storm({ times: 2, retryAfterSeconds: 3 });
    const { sink, sleeps, warnings } = splunk();
    await sink.write(key(), [envelope(alertOf(id))]);
    expect(sleeps).toEqual([3000, 3000]);
    expect(warnings[0]).toMatchObject({ message: "Splunk HEC is busy or unreachable; retrying", fields: { status: 503, code: 9, attempt: 1, waitMs: 3000 } });
    expect(eventsOf([id])).toHaveLength(1);
  });

  it("backs off with jitter within doubling ceilings when no Retry-After comes, and gives up after its attempts", async () => {
    hec.storm({ times: 10, bare: true });
    try {
      const { sink, sleeps, warnings } = splunk({}, { maxAttempts: 4 });
      const error = await failure(sink.write(key(), [envelope(alertOf(`rj-${randomUUID()}`))]));
      expect(error.message).toBe("Splunk HEC stayed busy or unreachable while sending events, after 4 attempt(s) (HTTP 503)");
      expect(error.status).toBe(503);
      expect(error.details).toEqual({});
      expect(sleeps).toHaveLength(3);
      const ceilings = [100, 200, 400];
      sleeps.forEach((ms, i) => {
        const ceiling = ceilings[i] as number;
        expect(ms).toBeGreaterThanOrEqual(ceiling / 2);
        expect(ms).toBeLessThanOrEqual(ceiling);
      });
      expect(warnings[0]?.fields).toMatchObject({ status: 503, attempt: 1 });
      expect(warnings[0]?.fields?.["code"]).toBeUndefined();
      expect(warnings[0]?.fields?.["reason"]).toBeUndefined();
    } finally {
      hec.storm(null);
    }
  });

  it("the backoff ceiling stops at its maximum", async () => {
    hec.storm({ times: 10, bare: true });
    try {
      const { sink, sleeps } = splunk({}, { maxAttempts: 6, retryBackoffMs: { initial: 100, max: 150 } });
      await failure(sink.write(key(), [envelope(alertOf(`rm-${randomUUID()}`))]));
      expect(sleeps).toHaveLength(5);
      for (const ms of sleeps.slice(1)) {
        expect(ms).toBeGreaterThanOrEqual(75);
        expect(ms).toBeLessThanOrEqual(150);
      }
    } finally {
      hec.storm(null);
    }
  });

  it("gives up before a wait that would pass its own timeout, keeping the HEC code and Retry-After", async () => {
    hec.storm({ times: 5, retryAfterSeconds: 600 });
    try {
      const { sink, sleeps } = splunk({}, { timeoutMs: 5_000 });
      const error = await failure(sink.write(key(), [envelope(alertOf(`rt-${randomUUID()}`))]));
      expect(sleeps).toEqual([]);
      expect(error.message).toBe("Splunk HEC stayed busy or unreachable while sending events, after 1 attempt(s) (code 9 (Server is busy), HTTP 503)");
      expect(error.details).toEqual({ code: "9", retryAfterMs: 600_000 });
      expect(error.details.permanent).toBeUndefined();
    } finally {
      hec.storm(null);
    }
  });

  it("fails permanently on a wrong token, naming the setting to check", async () => {
    const { sink } = splunk({ SPLUNK_HEC_TOKEN: OTHER_TOKEN });
    const error = await failure(sink.write(key(), [envelope(alertOf(`rw-${randomUUID()}`))]));
    expect(error.message).toBe("Splunk HEC refused the events (code 4 (Invalid token), HTTP 403; check SPLUNK_HEC_TOKEN)");
    expect(error.status).toBe(403);
    expect(error.details).toEqual({ permanent: true, code: "4" });
    expect(error.name).toBe("SinkError");
  });

  it("fails permanently on an index the token may not write to", async () => {
    const { sink } = splunk({ SPLUNK_INDEX: "secret" });
    const error = await failure(sink.write(key(), [envelope(alertOf(`ri-${randomUUID()}`))]));
    expect(error.message).toBe("Splunk HEC refused the events (code 7 (Incorrect index), HTTP 400; add SPLUNK_INDEX to the token's allowed indexes, or change SPLUNK_INDEX)");
  });

  it("resends from the invalid event after a partial indexing, and logs how much was indexed", async () => {
    const ids = Array.from({ length: 4 }, () => `rp-${randomUUID()}`);
    const bad = ids[2] as string;
    hec.rejectEvents((e) => (e["event"] as { id?: string } | undefined)?.id === bad, 1);
    const { sink, warnings } = splunk();
    const result = await sink.write(key(), ids.map((id) => envelope(alertOf(id))));
    expect(result).toEqual({});
    expect(eventsOf(ids).map((e) => (e.event as { id: string }).id).sort()).toEqual([...ids].sort());
    expect(warnings).toContainEqual({ message: "Splunk HEC indexed part of a request (code 6); sending the rest again", fields: { tenantId: TENANT, indexed: 2, remaining: 2 } });
  });

  it("hands back an event refused twice as rejected and delivers the rest once", async () => {
    const ids = Array.from({ length: 4 }, () => `rr-${randomUUID()}`);
    const bad = ids[1] as string;
    hec.rejectEvents((e) => (e["event"] as { id?: string } | undefined)?.id === bad, 2);
    const { sink } = splunk();
    const result = await sink.write(key(), ids.map((id) => envelope(alertOf(id))));
    expect(result.refused).toEqual([{ alert: expect.objectContaining({ id: bad }), reason: "rejected", detail: "the collector refused the event as invalid data (HEC code 6)" }]);
    expect(eventsOf(ids).map((e) => (e.event as { id: string }).id).sort()).toEqual(ids.filter((id) => id !== bad).sort());
  });
});

describe("Splunk HEC: acknowledgement", () => {
  it("waits for every ack id, polling at growing intervals", async () => {
    const ids = [`aa-${randomUUID()}`, `aa-${randomUUID()}`];
    // Long enough that three polls come before it even on a loaded machine (20 + 40 + 50 ms of sleeps).
    hec.setAck({ delayMs: 600 });
    try {
      const { sink, sleeps } = splunk({ SPLUNK_HEC_TOKEN: ACK_TOKEN, SPLUNK_HEC_ACK: "true" });
      const before = hec.acksReadTrue().length;
      await sink.write(key(), ids.map((id) => envelope(alertOf(id))));
      expect(hec.acksReadTrue().length - before).toBe(1);
      expect(sleeps.length).toBeGreaterThan(2);
      expect(sleeps.slice(0, 3)).toEqual([20, 40, 50]);
      expect(hec.requests().at(-1)?.channel).toBe(true);
    } finally {
      hec.setAck({});
    }
  });

  it("fails when the ack never comes, naming what it waited for", async () => {
    hec.setAck({ never: true });
    try {
      const { sink } = splunk({ SPLUNK_HEC_TOKEN: ACK_TOKEN, SPLUNK_HEC_ACK: "true" }, { timeoutMs: 300 });
      const error = await failure(sink.write(key(), [envelope(alertOf(`an-${randomUUID()}`))]));
      expect(error.message).toBe(
        "Splunk HEC: waiting for indexer acknowledgement (1 of 1 request(s) unacknowledged) was abandoned because the sink's 300 ms timeout passed; nothing of the batch is acknowledged and the next run sends it again",
      );
    } finally {
      hec.setAck({});
    }
  });

  it("refuses before sending anything when the token takes no acknowledgement (code 14)", async () => {
    const before = hec.requests().filter((r) => r.path === "/services/collector/event").length;
    const { sink } = splunk({ SPLUNK_HEC_ACK: "true" });
    const error = await failure(sink.write(key(), [envelope(alertOf(`a14-${randomUUID()}`))]));
    expect(error.message).toBe(
      "Splunk HEC refused the acknowledgement check (code 14 (ACK is disabled), HTTP 400; the token has indexer acknowledgement off (always on Splunk Cloud): set SPLUNK_HEC_ACK=false)",
    );
    expect(hec.requests().filter((r) => r.path === "/services/collector/event").length).toBe(before);
  });

  it("probes once per sink, and again after a failed probe", async () => {
    const { sink } = splunk({ SPLUNK_HEC_TOKEN: ACK_TOKEN, SPLUNK_HEC_ACK: "true" });
    const acksBefore = hec.requests().filter((r) => r.path === "/services/collector/ack").length;
    await sink.write(key(), [envelope(alertOf(`ap-${randomUUID()}`))]);
    await sink.write(key(), [envelope(alertOf(`ap-${randomUUID()}`))]);
    // One probe, then one poll per write (the fake acknowledges at once).
    expect(hec.requests().filter((r) => r.path === "/services/collector/ack").length - acksBefore).toBe(3);
  });

  it("refuses when the token wants a channel and SPLUNK_HEC_ACK is off (code 10)", async () => {
    const { sink } = splunk({ SPLUNK_HEC_TOKEN: ACK_TOKEN });
    const error = await failure(sink.write(key(), [envelope(alertOf(`a10-${randomUUID()}`))]));
    expect(error.message).toBe("Splunk HEC refused the events (code 10 (Data channel is missing), HTTP 400; the token has indexer acknowledgement on: set SPLUNK_HEC_ACK=true)");
  });
});

describe("Splunk HEC: bounds and health", () => {
  it("stops when the pull's signal fires while the collector hangs", async () => {
    hec.hang(1);
    try {
      const { sink } = splunk();
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 100);
      const error = await failure(sink.write(key(), [envelope(alertOf(`bs-${randomUUID()}`))], { signal: controller.signal }));
      expect(error.message).toBe("Splunk HEC: sending events was abandoned because the pull's time ran out; nothing of the batch is acknowledged and the next run sends it again");
    } finally {
      hec.hang(0);
    }
  });

  it("counts a hanging request as no answer after its request timeout, and retries", async () => {
    const id = `bh-${randomUUID()}`;
    hec.hang(1);
    try {
      const { sink, warnings } = splunk({}, { requestTimeoutMs: 150 });
      await sink.write(key(), [envelope(alertOf(id))]);
      expect(warnings[0]?.fields).toMatchObject({ reason: "timeout", attempt: 1 });
      expect(eventsOf([id])).toHaveLength(1);
    } finally {
      hec.hang(0);
    }
  });

  it("names only the network code when nothing listens", async () => {
    const { sink } = splunk({ SPLUNK_HEC_URL: "https://127.0.0.1:1" }, { maxAttempts: 2 });
    const error = await failure(sink.write(key(), [envelope(alertOf(`bn-${randomUUID()}`))]));
    expect(error.message).toBe("Splunk HEC stayed busy or unreachable while sending events, after 2 attempt(s) (no answer: ECONNREFUSED)");
    expect(error.status).toBeUndefined();
  });

  it("reports health: healthy, unhealthy with its code, unreachable", async () => {
    const { sink } = splunk();
    expect(await sink.checkHealth()).toEqual({ healthy: true, status: 200, code: 17 });
    hec.setHealth(18);
    try {
      expect(await sink.checkHealth()).toEqual({ healthy: false, status: 503, code: 18 });
    } finally {
      hec.setHealth(17);
    }
    expect(await splunk({ SPLUNK_HEC_URL: "https://127.0.0.1:1" }).sink.checkHealth()).toEqual({ healthy: false });
  });

  it("refuses settings without a token", () => {
    expect(() => new SplunkHecSink({ url: hec.url, token: "", sourcetype: "x", ack: false } as never)).toThrow(
      "SplunkHecSink needs settings from parseSplunkSettings (the token is missing)",
    );
  });
});

describe("Splunk HEC: codes, events and Retry-After", () => {
  it("retries busy codes and statuses, not refusals", () => {
    for (const code of [8, 9, 18, 19, 20]) expect(isRetryable(400, code)).toBe(true);
    for (const status of [500, 502, 503, 429, 408]) expect(isRetryable(status, undefined)).toBe(true);
    for (const status of [400, 403, 404, 413, 499]) expect(isRetryable(status, 4)).toBe(false);
  });

  it("describes an answer by code, text and hint", () => {
    expect(describeAnswer(502, undefined)).toBe("HTTP 502");
    expect(describeAnswer(400, 99)).toBe("code 99, HTTP 400");
    expect(describeAnswer(400, 6)).toBe("code 6 (Invalid data format), HTTP 400");
    expect(describeAnswer(403, 1)).toBe("code 1 (Token disabled), HTTP 403; enable the HEC token or set SPLUNK_HEC_TOKEN to an enabled one");
  });

  it("reads Retry-After as seconds or a date, capped at ten minutes", () => {
    expect(parseRetryAfter(undefined)).toBeUndefined();
    expect(parseRetryAfter(" ")).toBeUndefined();
    expect(parseRetryAfter("soon")).toBeUndefined();
    expect(parseRetryAfter(" 7 ")).toBe(7000);
    expect(parseRetryAfter(["2", "9"])).toBe(2000);
    expect(parseRetryAfter("601")).toBe(600_000);
    expect(parseRetryAfter(new Date(Date.now() - 60_000).toUTCString())).toBe(0);
    const ahead = parseRetryAfter(new Date(Date.now() + 120_000).toUTCString()) as number;
    expect(ahead).toBeGreaterThan(100_000);
    expect(ahead).toBeLessThanOrEqual(120_000);
  });

  it("writes epoch seconds with three decimals", () => {
    expect(epochSeconds(1733000000123.9)).toBe("1733000000.123");
    expect(epochSeconds(1733000000005)).toBe("1733000000.005");
    expect(epochSeconds(0)).toBe("0.000");
  });

  it("groups events into requests by bytes, separators counted", () => {
    const event = (bytes: number) => ({ text: "x".repeat(bytes), bytes, envelope: envelope(alertOf("b")) });
    const sizes = (groups: { bytes: number }[][]) => groups.map((g) => g.map((e) => e.bytes));
    expect(sizes(batches([event(4), event(4), event(4)], 9))).toEqual([[4, 4], [4]]);
    expect(sizes(batches([event(4), event(4), event(4)], 8))).toEqual([[4], [4], [4]]);
    expect(sizes(batches([event(10), event(1)], 5))).toEqual([[10], [1]]);
    expect(sizes(batches([event(2), event(2), event(2)], 8))).toEqual([[2, 2, 2]]);
    expect(batches([], 5)).toEqual([]);
    expect(requestBody([event(1), event(2)]).toString()).toBe("x\nxx");
  });

  it("cuts a member out of raw JSON and refuses what it cannot delimit", () => {
    expect(withoutMember('{"a":1,"evidence":[{"x":"]}"}],"b":{"c":[1,2]}}', "evidence")).toBe('{"a":1,"b":{"c":[1,2]}}');
    expect(withoutMember(' { "evidence" : "x\\"y" , "a" : 1.50 } ', "evidence")).toBe('{"a" : 1.50}');
    expect(withoutMember('{"a":1}', "evidence")).toBeUndefined();
    expect(withoutMember("{}", "evidence")).toBeUndefined();
    expect(withoutMember("[1]", "evidence")).toBeUndefined();
    expect(withoutMember('{"a" 1}', "a")).toBeUndefined();
    expect(withoutMember('{"a":1 "b":2}', "a")).toBeUndefined();
    expect(withoutMember('{a:1}', "a")).toBeUndefined();
    expect(withoutMember('{"a', "a")).toBeUndefined();
    expect(withoutMember('{"a":[1', "a")).toBeUndefined();
    expect(withoutMember('{"\\u0061":1,"b":2}', "a")).toBe('{"b":2}');
    expect(withoutMember('{"a":,"b":2}', "a")).toBeUndefined();
    expect(withoutMember('{"a":"x', "a")).toBeUndefined();
    expect(withoutMember('{"a":{"s":"x', "a")).toBeUndefined();
    expect(withoutMember('{"a":1,"b":2}\t', "b")).toBe('{"a":1}');
    expect(withoutMember('{"a":1\n,\r"b":2}', "b")).toBe('{"a":1}');
  });

  it("finds the end of each kind of JSON value", () => {
    expect(jsonValueEnd('"ab"x', 0)).toBe(4);
    expect(jsonValueEnd("[1,[2]],", 0)).toBe(7);
    expect(jsonValueEnd("true}", 0)).toBe(4);
    expect(jsonValueEnd("12]", 0)).toBe(2);
    expect(jsonValueEnd("-1 ", 0)).toBe(2);
    expect(jsonValueEnd("7\t", 0)).toBe(1);
    expect(jsonValueEnd("7\n", 0)).toBe(1);
    expect(jsonValueEnd("7\r", 0)).toBe(1);
    expect(jsonValueEnd("7,", 0)).toBe(1);
    expect(jsonValueEnd(",", 0)).toBeUndefined();
    expect(jsonValueEnd('{"a":"}"}', 0)).toBe(9);
  });
});

describe("Event Hubs failures", () => {
  const named = (name: string, message = "", code?: string) => Object.assign(new Error(message), { name, ...(code === undefined ? {} : { code }) });

  it("names the service code and whether a retry can help, never the SDK's message", () => {
    for (const code of ["UnauthorizedError", "MessagingEntityNotFoundError", "ServiceCommunicationError", "CredentialUnavailableError", "AuthenticationError"]) {
      const error = eventHubsFailure("Sending to Event Hubs failed", named(code, "secret sb://ns/hub key=abc"));
      expect(error.message).toBe(`Sending to Event Hubs failed (${code})`);
      expect(error.details).toEqual({ code, permanent: true });
    }
    const busy = eventHubsFailure("Sending failed", named("ServerBusyError", "The request was terminated. Please wait 4 seconds and try again."));
    expect(busy.details).toEqual({ code: "ServerBusyError", retryAfterMs: 4000 });
    expect(eventHubsFailure("Sending failed", named("ServerBusyError", "busy")).details).toEqual({ code: "ServerBusyError" });
    expect(eventHubsFailure("Sending failed", named("QuotaExceededError", "wait 4 seconds")).details).toEqual({ code: "QuotaExceededError" });
  });

  it("prefers the code to the name, skips generic names and free text", () => {
    expect(eventHubsFailure("x", named("MessagingError", "m", "ServerBusyError")).details.code).toBe("ServerBusyError");
    expect(eventHubsFailure("x", named("MessagingError", "m")).message).toBe("x (no error code)");
    expect(eventHubsFailure("x", named("Error", "m")).details).toEqual({});
    expect(eventHubsFailure("x", named("Error", "m", "has spaces in it")).details).toEqual({});
    expect(eventHubsFailure("x", "a string").message).toBe("x (no error code)");
    expect(eventHubsFailure("x", null).message).toBe("x (no error code)");
  });

  it("reads the wait only from a throttling message, in seconds, one to three digits, any case", () => {
    const busy = (message: unknown) => eventHubsFailure("x", Object.assign(new Error(), { name: "ServerBusyError", message })).details.retryAfterMs;
    expect(busy("Please wait 1 second and try again.")).toBe(1000);
    expect(busy("PLEASE WAIT 12 SECONDS.")).toBe(12_000);
    expect(busy("wait 999 seconds")).toBe(999_000);
    expect(busy("wait 1000 seconds")).toBeUndefined();
    expect(busy("await 4 seconds")).toBeUndefined();
    expect(busy("wait 4 secondsx")).toBeUndefined();
    expect(busy("wait four seconds")).toBeUndefined();
  });

  it("keeps a code of letters, digits and . _ : - up to 64 characters, starting with a letter", () => {
    const codeOf = (code: string) => eventHubsFailure("x", named("Error", "m", code)).details.code;
    for (const good of ["a", "com.microsoft:server-busy", "Quota_Exceeded", `A${"b".repeat(63)}`]) expect(codeOf(good)).toBe(good);
    for (const bad of ["1abc", "-abc", "!Code", "Code!", `A${"b".repeat(64)}`, ""]) expect(codeOf(bad)).toBeUndefined();
    // A nested AggregateError: the last attempt of the last attempt decides.
    expect(eventHubsFailure("x", new AggregateError([named("UnauthorizedError"), new AggregateError([named("UnauthorizedError"), named("ServerBusyError")])])).details).toEqual({ code: "ServerBusyError" });
  });

  it("reads the last attempt of a retry, says when the time ran out, and passes a SinkError on", () => {
    const aggregate = new AggregateError([named("ServerBusyError"), named("UnauthorizedError")]);
    expect(eventHubsFailure("x", aggregate).details).toEqual({ code: "UnauthorizedError", permanent: true });
    expect(eventHubsFailure("x", new AggregateError([])).message).toBe("x (AggregateError)");
    expect(eventHubsFailure("Sending failed", named("AbortError")).message).toBe("Sending failed: abandoned when the time for the write ran out");
    const own = new SinkError("mine");
    expect(eventHubsFailure("x", own)).toBe(own);
  });
});

describe("parked pages", () => {
  const container = () => BlobServiceClient.fromConnectionString(inject("storageConnectionString")).getContainerClient(`park-${randomUUID().slice(0, 13)}`);
  const batch = { key: key(), envelopes: [envelope(alertOf("park-1"))] };

  it("stores a page under tenant, sink and a padded sequence number, reads it back and removes it", async () => {
    const client = container();
    const store = new BlobParkingStore(client);
    await store.park("splunk", TENANT, 7, batch);
    await store.park("splunk", TENANT, 7, batch);
    const names: string[] = [];
    for await (const blob of client.listBlobsFlat()) names.push(blob.name);
    expect(names).toEqual([`${TENANT}/splunk/000000000007.json`]);
    const properties = await client.getBlobClient(names[0] as string).getProperties();
    expect(properties.contentType).toBe("application/json");
    expect(await store.read("splunk", TENANT, 7)).toEqual(JSON.parse(JSON.stringify(batch)));
    expect(await store.read("splunk", TENANT, 8)).toBeUndefined();
    await store.remove("splunk", TENANT, 7);
    expect(await store.read("splunk", TENANT, 7)).toBeUndefined();
  });

  it("removes every page of one tenant only, and does nothing for a name it would never write", async () => {
    const client = container();
    const store = new BlobParkingStore(client);
    await store.removeAll(TENANT);
    const other = randomUUID();
    await store.park("splunk", TENANT, 0, batch);
    await store.park("sentinel", TENANT, 1, batch);
    await store.park("splunk", other, 0, batch);
    await store.removeAll("../x");
    await store.removeAll(TENANT);
    const names: string[] = [];
    for await (const blob of client.listBlobsFlat()) names.push(blob.name);
    expect(names).toEqual([`${other}/splunk/000000000000.json`]);
  });

  it("refuses a name it would not write, and says which step failed and its HTTP status", async () => {
    const store = new BlobParkingStore(container());
    for (const [sink, tenant, seq] of [["spl/unk", TENANT, 0], ["splunk", "../x", 0], ["splunk", TENANT, -1], ["splunk", TENANT, 1.5], ["-x", TENANT, 0]] as const) {
      await expect(store.park(sink, tenant, seq, batch)).rejects.toThrow(new ParkingError("A parked batch needs a valid sink, tenant and sequence number"));
    }
    const missing = BlobServiceClient.fromConnectionString(inject("storageConnectionString")).getContainerClient(`gone-${randomUUID().slice(0, 13)}`);
    const unready = new BlobParkingStore(missing);
    await expect(unready.remove("splunk", TENANT, 0)).rejects.toThrow("Removing a delivered parked page failed (HTTP 404)");
    const error = await unready.read("splunk", TENANT, 0);
    expect(error).toBeUndefined();
  });

  it("gives up when the call's signal fires", async () => {
    const store = new BlobParkingStore(container());
    await store.park("splunk", TENANT, 0, batch);
    await expect(store.read("splunk", TENANT, 0, { signal: AbortSignal.abort() })).rejects.toThrow("Reading a parked page failed (no HTTP response)");
    await expect(store.park("splunk", TENANT, 1, batch, { signal: AbortSignal.abort() })).rejects.toThrow("Parking a page for a sink failed (no HTTP response)");
    await expect(store.removeAll(TENANT, { signal: AbortSignal.abort() })).rejects.toThrow("Removing a tenant's parked pages failed (no HTTP response)");
  });
});

/**
 * A collector scripted per request, for answers the fake collector never gives: a 200 that is not
 * a HEC reply, an ack-mode success without an ack id, a partial indexing that carries one.
 */
interface Seen {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
}

async function scripted(answer: (path: string, body: string) => { status: number; body: string }): Promise<{ url: string; paths: string[]; seen: Seen[]; close: () => Promise<void> }> {
  const paths: string[] = [];
  const seen: Seen[] = [];
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = (req.url ?? "").split("?")[0] as string;
      paths.push(path);
      seen.push({ method: req.method ?? "", path, headers: req.headers });
      const { status, body } = answer(path, Buffer.concat(chunks).toString("utf8"));
      res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    paths,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("Splunk HEC: answers the fake collector does not give", () => {
  it("says when the URL answers, but not as a collector", async () => {
    const server = await scripted(() => ({ status: 200, body: "<html>welcome</html>" }));
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url });
      const error = await failure(sink.write(key(), [envelope(alertOf(`xu-${randomUUID()}`))]));
      expect(error.message).toBe("Splunk HEC refused the events (HTTP 200); the URL answered, but not as a Splunk HEC (check SPLUNK_HEC_URL)");
      expect(error.details).toEqual({ permanent: true });
    } finally {
      await server.close();
    }
  });

  it("fails permanently when ack mode gets a success without an ack id", async () => {
    const server = await scripted((path) => (path.endsWith("/ack") ? { status: 200, body: '{"acks":{"0":false}}' } : { status: 200, body: '{"text":"Success","code":0}' }));
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url, SPLUNK_HEC_ACK: "true" });
      const error = await failure(sink.write(key(), [envelope(alertOf(`xa-${randomUUID()}`))]));
      expect(error.message).toBe(
        "Splunk HEC took the events but returned no ack id: the token has indexer acknowledgement off (always so on Splunk Cloud); set SPLUNK_HEC_ACK=false or turn acknowledgement on for the token",
      );
      expect(error.status).toBe(200);
      expect(error.details).toEqual({ permanent: true });
    } finally {
      await server.close();
    }
  });

  it("waits for the ack id of a partly indexed request too, and refuses an ack poll that is not one", async () => {
    let events = 0;
    const polls: string[] = [];
    const server = await scripted((path, body) => {
      if (path.endsWith("/ack")) {
        polls.push(body);
        return polls.length === 1 ? { status: 200, body: '{"acks":{"0":false}}' } : { status: 200, body: '{"text":"odd"}' };
      }
      events += 1;
      return events === 1 ? { status: 400, body: '{"text":"Invalid data format","code":6,"invalid-event-number":1,"ackId":5}' } : { status: 200, body: '{"code":0,"ackId":6}' };
    });
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url, SPLUNK_HEC_ACK: "true" });
      const error = await failure(sink.write(key(), [envelope(alertOf(`xp-${randomUUID()}`)), envelope(alertOf(`xp-${randomUUID()}`))]));
      expect(JSON.parse(polls[1] as string)).toEqual({ acks: [5, 6] });
      expect(error.message).toBe("Splunk HEC refused the acknowledgement poll (HTTP 200)");
    } finally {
      await server.close();
    }
  });

  it("reads only a whole, non-negative ack id and code; ignores a reply too long to be one", async () => {
    const server = await scripted((path) => (path.endsWith("/health") ? { status: 200, body: JSON.stringify({ code: 17, pad: "x".repeat(20_000) }) } : { status: 200, body: '{"code":0.5}' }));
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url });
      expect(await sink.checkHealth()).toEqual({ healthy: false, status: 200 });
      const error = await failure(sink.write(key(), [envelope(alertOf(`xn-${randomUUID()}`))]));
      expect(error.message).toBe("Splunk HEC refused the events (HTTP 200)");
    } finally {
      await server.close();
    }
  });

  it("posts JSON with the Splunk scheme, its user agent and, in ack mode, its channel; asks for health with a GET", async () => {
    const server = await scripted((path) =>
      path.endsWith("/ack") ? { status: 200, body: '{"acks":{"0":true}}' } : path.endsWith("/health") ? { status: 200, body: '{"code":17}' } : { status: 200, body: '{"code":0,"ackId":0}' },
    );
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url, SPLUNK_HEC_ACK: "true" });
      await sink.write(key(), [envelope(alertOf(`xh-${randomUUID()}`))]);
      expect(await sink.checkHealth()).toEqual({ healthy: true, status: 200, code: 17 });
      const event = server.seen.find((r) => r.path === "/services/collector/event");
      expect(event?.method).toBe("POST");
      expect(event?.headers["authorization"]).toBe(`Splunk ${TOKEN}`);
      expect(event?.headers["content-type"]).toBe("application/json");
      expect(event?.headers["user-agent"]).toBe(`mssp-defender-connector/${APP_VERSION}`);
      expect(event?.headers["x-splunk-request-channel"]).toBe(sink.channel);
      const health = server.seen.find((r) => r.path === "/services/collector/health");
      expect(health?.method).toBe("GET");
      expect(health?.headers["content-type"]).toBeUndefined();
    } finally {
      await server.close();
    }
  });

  it("takes a reply up to 16 KiB; an array, null or a negative code is no HEC reply", async () => {
    const exact = (() => {
      const base = JSON.stringify({ code: 17, pad: "" });
      return JSON.stringify({ code: 17, pad: "x".repeat(16 * 1024 - base.length) });
    })();
    expect(Buffer.byteLength(exact)).toBe(16 * 1024);
    const bodies = ["[1]", "null", '{"code":-1}', '{"code":"0"}'];
    let next = 0;
    const server = await scripted((path) => (path.endsWith("/health") ? { status: 200, body: exact } : { status: 200, body: bodies[next++ % bodies.length] as string }));
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url });
      expect(await sink.checkHealth()).toEqual({ healthy: true, status: 200, code: 17 });
      for (const expected of [true, true, false, false]) {
        const error = await failure(sink.write(key(), [envelope(alertOf(`xc-${randomUUID()}`))]));
        expect(error.message.endsWith("; the URL answered, but not as a Splunk HEC (check SPLUNK_HEC_URL)")).toBe(expected);
      }
    } finally {
      await server.close();
    }
  });

  it("reads an ack as true only when it is true", async () => {
    let polls = 0;
    const server = await scripted((path) => {
      if (!path.endsWith("/ack")) return { status: 200, body: '{"code":0,"ackId":3}' };
      polls += 1;
      return { status: 200, body: polls <= 2 ? '{"acks":{"3":"true"}}' : '{"acks":{"3":true}}' };
    });
    try {
      const { sink, sleeps } = splunk({ SPLUNK_HEC_URL: server.url, SPLUNK_HEC_ACK: "true" });
      await sink.write(key(), [envelope(alertOf(`xt-${randomUUID()}`))]);
      // The probe, one poll that read "true" as not acknowledged, one that read true.
      expect(polls).toBe(3);
      expect(sleeps).toEqual([20]);
    } finally {
      await server.close();
    }
  });

  it("refuses an ack poll whose acks are null or a list, and a success with an empty body", async () => {
    for (const acks of ["null", "[true]", '"0"']) {
      let polls = 0;
      const server = await scripted((path) => {
        if (!path.endsWith("/ack")) return { status: 200, body: '{"code":0,"ackId":0}' };
        polls += 1;
        // The first answer is the probe's; the poll then reads `acks` as no acknowledgement at all.
        return { status: 200, body: polls === 1 ? '{"acks":{"0":false}}' : `{"acks":${acks}}` };
      });
      try {
        const { sink } = splunk({ SPLUNK_HEC_URL: server.url, SPLUNK_HEC_ACK: "true" });
        const error = await failure(sink.write(key(), [envelope(alertOf(`xl-${randomUUID()}`))]));
        expect(error.message, acks).toBe("Splunk HEC refused the acknowledgement poll (HTTP 200)");
        expect(error.details).toEqual({ permanent: true });
      } finally {
        await server.close();
      }
    }
    for (const body of ["", "5", '"Success"']) {
      const other = await scripted(() => ({ status: 200, body }));
      try {
        const { sink } = splunk({ SPLUNK_HEC_URL: other.url });
        const error = await failure(sink.write(key(), [envelope(alertOf(`xe-${randomUUID()}`))]));
        expect(error.message, body).toBe("Splunk HEC refused the events (HTTP 200); the URL answered, but not as a Splunk HEC (check SPLUNK_HEC_URL)");
        expect(await sink.checkHealth()).toEqual({ healthy: false, status: 200 });
      } finally {
        await other.close();
      }
    }
  });

  it("sends nothing more once closed", async () => {
    const sink = new SplunkHecSink(parseSplunkSettings({ SPLUNK_HEC_URL: hec.url, SPLUNK_HEC_TOKEN: TOKEN }), { caPem: cert.certPem, maxAttempts: 1 });
    const before = hec.requests().length;
    await sink.close();
    const error = await failure(sink.write(key(), [envelope(alertOf(`xz-${randomUUID()}`))]));
    expect(error.message).toMatch(/after 1 attempt\(s\) \(no answer: UND_ERR_[A-Z_]+\)$/);
    expect(hec.requests().length).toBe(before);
  });

  it("names the TLS failure's code when the collector's certificate is not trusted", async () => {
    const sink = new SplunkHecSink(parseSplunkSettings({ SPLUNK_HEC_URL: hec.url, SPLUNK_HEC_TOKEN: TOKEN }), { maxAttempts: 1 });
    opened.push(sink);
    const error = await failure(sink.write(key(), [envelope(alertOf(`xs-${randomUUID()}`))]));
    expect(error.message).toMatch(/after 1 attempt\(s\) \(no answer: [A-Z_]+\)$/);
    expect(error.message).not.toMatch(/no answer: network/);
  });

  it("probes acknowledgement again after a probe that was abandoned", async () => {
    const { sink } = splunk({ SPLUNK_HEC_TOKEN: ACK_TOKEN, SPLUNK_HEC_ACK: "true" });
    const error = await failure(sink.write(key(), [envelope(alertOf(`xr-${randomUUID()}`))], { signal: AbortSignal.abort() }));
    expect(error.message).toBe(
      "Splunk HEC: checking that the token takes acknowledgements was abandoned because the pull's time ran out; nothing of the batch is acknowledged and the next run sends it again",
    );
    const id = `xr-${randomUUID()}`;
    await sink.write(key(), [envelope(alertOf(id))]);
    expect(eventsOf([id])).toHaveLength(1);
  });

  it("uses its documented defaults: eight attempts, 500 ms doubling backoff, and gives up before a wait past 120 s", async () => {
    const sleeps: number[] = [];
    const sink = new SplunkHecSink(parseSplunkSettings({ SPLUNK_HEC_URL: hec.url, SPLUNK_HEC_TOKEN: TOKEN }), {
      caPem: cert.certPem,
      sleep: (ms, signal) => {
        sleeps.push(ms);
        return delay(1, undefined, { signal });
      },
    });
    opened.push(sink);
    hec.storm({ times: 20, bare: true });
    try {
      const error = await failure(sink.write(key(), [envelope(alertOf(`xd-${randomUUID()}`))]));
      expect(error.message).toMatch(/after 8 attempt\(s\)/);
      expect(sleeps).toHaveLength(7);
      [500, 1000, 2000, 4000, 8000, 16000, 30000].forEach((ceiling, i) => {
        expect(sleeps[i]).toBeGreaterThanOrEqual(ceiling / 2);
        expect(sleeps[i]).toBeLessThanOrEqual(ceiling);
      });
      hec.storm({ times: 1, retryAfterSeconds: 119 });
      const id = `xd-${randomUUID()}`;
      await sink.write(key(), [envelope(alertOf(id))]);
      expect(sleeps.at(-1)).toBe(119_000);
      hec.storm({ times: 1, retryAfterSeconds: 121 });
      await failure(sink.write(key(), [envelope(alertOf(`xd-${randomUUID()}`))]));
    } finally {
      hec.storm(null);
    }
  });

  it("polls acknowledgements after one second by default", async () => {
    const sleeps: number[] = [];
    hec.setAck({ delayMs: 30 });
    const sink = new SplunkHecSink(parseSplunkSettings({ SPLUNK_HEC_URL: hec.url, SPLUNK_HEC_TOKEN: ACK_TOKEN, SPLUNK_HEC_ACK: "true" }), {
      caPem: cert.certPem,
      sleep: (ms, signal) => {
        sleeps.push(ms);
        return delay(40, undefined, { signal });
      },
    });
    opened.push(sink);
    try {
      await sink.write(key(), [envelope(alertOf(`xk-${randomUUID()}`))]);
      expect(sleeps).toEqual([1000]);
    } finally {
      hec.setAck({});
    }
  });

  it("waits for real when no sleep is given", async () => {
    const sink = new SplunkHecSink(parseSplunkSettings({ SPLUNK_HEC_URL: hec.url, SPLUNK_HEC_TOKEN: TOKEN }), { caPem: cert.certPem, retryBackoffMs: { initial: 1, max: 1 } });
    opened.push(sink);
    hec.storm({ times: 1, bare: true });
    const id = `xw-${randomUUID()}`;
    await sink.write(key(), [envelope(alertOf(id))]);
    expect(eventsOf([id])).toHaveLength(1);
  });
});

describe("Sentinel sink", () => {
  const credential = (token = LOGS_TOKEN) => ({ getToken: async () => ({ token, expiresOnTimestamp: Date.now() + 3_600_000 }) });
  const sentinel = (overrides: Partial<SentinelSinkOptions> = {}) =>
    new SentinelAlertSink({
      settings: parseSentinelSettings({ SENTINEL_INGESTION_ENDPOINT: logs.url, SENTINEL_DCR_IMMUTABLE_ID: DCR }),
      credential: credential(),
      localDevCaPem: cert.certPem,
      retryDelayMs: 5,
      ...overrides,
    });
  const rowsFor = (ids: readonly string[]) => logs.rows().filter((row) => ids.includes(row["AlertId"] as string));

  it("ingests every version once, and does not send again what this instance saw accepted for the page", async () => {
    const ids = [`ss-${randomUUID()}`, `ss-${randomUUID()}`, `ss-${randomUUID()}`];
    const sink = sentinel({ concurrency: 0 });
    const batch = ids.map((id) => envelope(alertOf(id)));
    const before = logs.requests().length;
    expect(await sink.write(key(), batch)).toEqual({});
    expect(rowsFor(ids)).toHaveLength(3);
    expect(await sink.write(key(), batch)).toEqual({});
    expect(logs.requests().length - before).toBe(1);
    expect(rowsFor(ids)).toHaveLength(3);
    expect((await sink.storedVersions({ tenantId: TENANT, pageFrom: key().pageFrom, pageTo: key().pageTo })).map((v) => v.id).sort()).toEqual([...ids].sort());
  });

  it("refuses a version over the field limit even without its evidence, and sends the rest", async () => {
    const big = alertOf(`sb-${randomUUID()}`);
    big.title = "t".repeat(70_000);
    const ok = `sb-${randomUUID()}`;
    const result = await sentinel().write(key(), [envelope(big), envelope(alertOf(ok))]);
    expect(result.refused?.map((r) => r.alert.id)).toEqual([big.id]);
    expect(rowsFor([ok])).toHaveLength(1);
  });

  it("fails with the status, a hint and how much was ingested; permanent for a refused token", async () => {
    const error = await failure(sentinel({ credential: credential("li-someone-else-entirely") }).write(key(), [envelope(alertOf(`sf-${randomUUID()}`))]));
    expect(error.status).toBe(403);
    expect(error.details.permanent).toBe(true);
    expect(error.message).toMatch(/^Sending alerts to Log Analytics failed \(HTTP 403: .*\); 0 of 1 records were ingested/);
  });

  it("stops when its own time is up", async () => {
    logs.hang(1);
    try {
      const error = await failure(sentinel({ timeoutMs: 200, maxRetries: 0 }).write(key(), [envelope(alertOf(`sh-${randomUUID()}`))]));
      expect(error.message).toMatch(/^Sending alerts to Log Analytics was stopped/);
    } finally {
      logs.hang(0);
    }
  });

  it("stops sending further chunks after a failed one, and counts what was ingested", async () => {
    const ids = Array.from({ length: 4 }, () => `sc-${randomUUID()}`);
    // Each alert about 400 KB of evidence: two records per 1 MB call at most.
    const batch = ids.map((id) => envelope(alertOf(id, 40_000)));
    logs.failWhen((records) => (records.some((r) => r["AlertId"] === ids[0]) ? { status: 400, code: "InvalidStream" } : undefined));
    try {
      const error = await failure(sentinel({ concurrency: 1, maxRetries: 0 }).write(key(), batch));
      expect(error.message).toMatch(/; 0 of 4 records were ingested/);
      expect(error.details).toMatchObject({ permanent: true, code: "InvalidStream" });
    } finally {
      logs.failWhen(null);
    }
  });
});

describe("Sentinel sink: calls, retries, concurrency and the ledger", () => {
  const settings = (endpoint = logs.url) => parseSentinelSettings({ SENTINEL_INGESTION_ENDPOINT: endpoint, SENTINEL_DCR_IMMUTABLE_ID: DCR });
  const credential = { getToken: async () => ({ token: LOGS_TOKEN, expiresOnTimestamp: Date.now() + 3_600_000 }) };
  const sentinel = (overrides: Partial<SentinelSinkOptions> = {}) => new SentinelAlertSink({ settings: settings(), credential, localDevCaPem: cert.certPem, retryDelayMs: 5, ...overrides });
  const timesStored = (id: string) => logs.rows().filter((row) => row["AlertId"] === id).length;
  /** `count` versions of about 42 KB each: 21 to a call, so 50 make three calls (21, 21, 8). */
  const heavy = (count: number) => Array.from({ length: count }, () => envelope(alertOf(`sq-${randomUUID()}`, 40_000)));
  const elapsed = async (work: () => Promise<unknown>): Promise<number> => {
    const started = Date.now();
    await work();
    return Date.now() - started;
  };

  it("asks for a token for the endpoint's cloud: public, US Government, China", async () => {
    for (const [endpoint, scope] of [
      [logs.url, "https://monitor.azure.com/.default"],
      ["https://dce-1.usgovvirginia-1.ingest.monitor.azure.us", "https://monitor.azure.us/.default"],
      ["https://dce-1.chinaeast2-1.ingest.monitor.azure.cn", "https://monitor.azure.cn/.default"],
    ] as const) {
      const scopes: string[] = [];
      // The token is refused before any request: nothing leaves this machine.
      const refusing = {
        getToken: async (asked: string | string[]) => {
          scopes.push(...[asked].flat());
          throw new Error("no token here");
        },
      };
      const sink = new SentinelAlertSink({ settings: settings(endpoint), credential: refusing, localDevCaPem: cert.certPem, maxRetries: 0 });
      const error = await failure(sink.write(key(), [envelope(alertOf(`su-${randomUUID()}`))]));
      expect(error.message).toBe("Sending alerts to Log Analytics failed (no HTTP response: network, TLS or token failure); 0 of 1 records were ingested and are not sent again by this instance");
      expect(scopes[0]).toBe(scope);
    }
  });

  it("posts gzipped JSON to the DCR's stream with the app's user agent, one call for a small batch", async () => {
    const server = await scripted(() => ({ status: 204, body: "" }));
    try {
      const sink = new SentinelAlertSink({ settings: settings(server.url), credential, localDevCaPem: cert.certPem });
      expect(await sink.write(key(), [envelope(alertOf(`sg-${randomUUID()}`)), envelope(alertOf(`sg-${randomUUID()}`))])).toEqual({});
      expect(server.seen).toHaveLength(1);
      expect(server.seen[0]).toMatchObject({ method: "POST", path: `/dataCollectionRules/${DCR}/streams/${DEFAULT_SENTINEL_STREAM}` });
      expect(String(server.seen[0]?.headers["user-agent"])).toMatch(new RegExp(`^MsspDefenderConnector/${APP_VERSION.replace(/\./g, "\\.")} `));
      expect(server.seen[0]?.headers["authorization"]).toBe(`Bearer ${LOGS_TOKEN}`);
    } finally {
      await server.close();
    }
  });

  it("makes no call for an empty batch or one this instance already delivered", async () => {
    const before = logs.requests().length;
    const sink = sentinel();
    expect(await sink.write(key(), [])).toEqual({});
    const one = envelope(alertOf(`se-${randomUUID()}`));
    await sink.write(key(), [one]);
    expect(await sink.write(key(), [one])).toEqual({});
    expect(logs.requests().length - before).toBe(1);
  });

  it("retries a busy service three times by default, and as often as maxRetries says", async () => {
    const id = `sy-${randomUUID()}`;
    logs.fail({ status: 503, times: 3 });
    await sentinel().write(key(), [envelope(alertOf(id))]);
    expect(timesStored(id)).toBe(1);
    logs.fail({ status: 503, times: 4 });
    try {
      const error = await failure(sentinel().write(key(), [envelope(alertOf(`sy-${randomUUID()}`))]));
      expect(error.message).toBe("Sending alerts to Log Analytics failed (HTTP 503: service error); 0 of 1 records were ingested and are not sent again by this instance");
      expect(error.status).toBe(503);
      expect(error.details).toEqual({ code: "ServiceUnavailable" });
      logs.fail({ status: 503, times: 2 });
      const once = await failure(sentinel({ maxRetries: 1 }).write(key(), [envelope(alertOf(`sy-${randomUUID()}`))]));
      expect(once.status).toBe(503);
    } finally {
      logs.fail(null);
    }
  });

  it("backs off from retryDelayMs, doubling up to eight times it; one second at first by default", async () => {
    logs.fail({ status: 503, times: 3 });
    // 50-100, 100-200 and 200-400 ms; a ceiling of retryDelayMs / 8 would make them all ~10 ms.
    const quick = await elapsed(() => sentinel({ retryDelayMs: 100 }).write(key(), [envelope(alertOf(`sd-${randomUUID()}`))]));
    expect(quick).toBeGreaterThanOrEqual(340);
    expect(quick).toBeLessThan(3_000);
    logs.fail({ status: 503, times: 1 });
    const first = await elapsed(() => new SentinelAlertSink({ settings: settings(), credential, localDevCaPem: cert.certPem }).write(key(), [envelope(alertOf(`sd-${randomUUID()}`))]));
    expect(first).toBeGreaterThanOrEqual(480);
    logs.fail(null);
  });

  it("is built by createSentinelSink with the options it is given", async () => {
    const id = `sk-${randomUUID()}`;
    const sink = createSentinelSink(settings(), credential, { localDevCaPem: cert.certPem, retryDelayMs: 5 });
    expect(await sink.write(key(), [envelope(alertOf(id))])).toEqual({});
    expect(timesStored(id)).toBe(1);
  });

  it("starts no further call after a failed one; the retry sends only what was not accepted, each version once", async () => {
    const batch = heavy(50);
    const first = batch[0]?.alert.id;
    const before = logs.requests().length;
    logs.failWhen((records) => (records.some((r) => r["AlertId"] === first) ? { status: 400, code: "InvalidStream" } : undefined));
    const sink = sentinel({ concurrency: 1, maxRetries: 0 });
    try {
      const error = await failure(sink.write(key(), batch));
      expect(error.message).toBe(
        "Sending alerts to Log Analytics failed (HTTP 400: the records do not match the DCR's stream declaration); 0 of 50 records were ingested and are not sent again by this instance",
      );
      expect(logs.requests().length - before).toBe(1);
      expect(batch.filter((e) => timesStored(e.alert.id) > 0)).toEqual([]);
    } finally {
      logs.failWhen(null);
    }
    await sink.write(key(), batch);
    expect(logs.requests().slice(before + 1).map((r) => r.records)).toEqual([21, 21, 8]);
    expect(batch.map((e) => timesStored(e.alert.id))).toEqual(batch.map(() => 1));
  });

  it("sends two calls at once by default: one hanging call does not hold back the others", async () => {
    const batch = heavy(50);
    logs.hang(1);
    const sink = sentinel({ timeoutMs: 4_000, maxRetries: 0 });
    try {
      const error = await failure(sink.write(key(), batch));
      // The hanging call is the first or the second chunk (21 records); the other two went through.
      expect(error.message).toBe("Sending alerts to Log Analytics was stopped: the call's time was up or it was cancelled; 29 of 50 records were ingested and are not sent again by this instance");
    } finally {
      logs.hang(0);
    }
    const before = logs.requests().length;
    await sink.write(key(), batch);
    expect(logs.requests().slice(before).map((r) => r.records)).toEqual([21]);
    expect(batch.map((e) => timesStored(e.alert.id))).toEqual(batch.map(() => 1));
    expect((await sink.storedVersions(key())).length).toBe(50);
  });

  it("puts a record larger than a whole call alone in a call of its own, and starts no empty call", () => {
    const record = (bytes: number, id: string): PreparedRecord => ({ record: {} as PreparedRecord["record"], bytes, version: { id, updatedAtKey: "k", updatedAtMs: 0 } });
    expect(chunkRecords([record(50, "a"), record(5, "b")], 20).map((chunk) => chunk.map((r) => r.version.id))).toEqual([["a"], ["b"]]);
    expect(chunkRecords([record(5, "a"), record(5, "b"), record(5, "c")], 2 + 5 + 1 + 5).map((chunk) => chunk.length)).toEqual([2, 1]);
  });

  it("counts a version the ledger already holds once, so remembering it again evicts nothing", () => {
    const ledger = new IngestedLedger(3);
    const page = { tenantId: TENANT, pageFrom: "2026-11-30T04:00:00.000Z", pageTo: "2026-11-30T05:00:00.000Z" };
    const other = { ...page, pageFrom: "2026-11-30T03:00:00.000Z" };
    const version = (id: string) => ({ id, updatedAtKey: "2026-11-30T04:30:00.0000000Z", updatedAtMs: 0 });
    ledger.add(page, [version("a"), version("b")]);
    ledger.add(page, [version("a"), version("b")]);
    ledger.add(other, [version("c")]);
    expect(ledger.stored(page).map((v) => v.id)).toEqual(["a", "b"]);
    expect(ledger.has(other, version("c"))).toBe(true);
    // One more: the least recently written page (the first) goes, and the count drops by its two,
    // so a third page's version fits beside the other page's two.
    ledger.add(other, [version("d")]);
    expect(ledger.stored(page)).toEqual([]);
    ledger.add({ ...page, pageFrom: "2026-11-30T02:00:00.000Z" }, [version("g")]);
    expect(ledger.stored(other).map((v) => v.id)).toEqual(["c", "d"]);
    expect(ledger.has(other, { ...version("c"), updatedAtKey: "2026-11-30T04:30:00.0000001Z" })).toBe(false);
    // Bounds that are no timestamp are kept as they are.
    const odd = { tenantId: TENANT, pageFrom: "start", pageTo: "end" };
    ledger.add(odd, [version("z")]);
    expect(ledger.has(odd, version("z"))).toBe(true);
    expect(ledger.has({ ...odd, pageTo: "End" }, version("z"))).toBe(false);
  });

  it("sends nothing when the caller's signal has already fired, and says so", async () => {
    const before = logs.requests().length;
    const id = `sa-${randomUUID()}`;
    const error = await failure(sentinel().write(key(), [envelope(alertOf(id))], { signal: AbortSignal.abort() }));
    expect(error.message).toBe("Sending alerts to Log Analytics was stopped: the call's time was up or it was cancelled; 0 of 1 records were ingested and are not sent again by this instance");
    expect(logs.requests().length).toBe(before);
    expect(timesStored(id)).toBe(0);
  });
});

describe("Sentinel records and upload failures: the edges", () => {
  /** An envelope whose alert JSON is exactly `bytes` long (padded in its description). */
  const alertOfSize = (bytes: number): AlertEnvelope => {
    const alert = alertOf(`sz-${randomUUID()}`);
    alert.evidence = [];
    alert.description = "";
    alert.description = "d".repeat(bytes - Buffer.byteLength(JSON.stringify(alert)));
    const made = envelope(alert);
    expect(Buffer.byteLength(made.alert.json)).toBe(bytes);
    return made;
  };

  it("declares the table's columns and types in order", () => {
    expect(SENTINEL_COLUMNS.map(({ name, type }) => `${name}:${type}`)).toEqual([
      "TimeGenerated:datetime",
      "CustomerTenantId:string",
      "CustomerName:string",
      "Source:string",
      "AlertId:string",
      "AlertLastUpdateTime:datetime",
      "Severity:string",
      "AlertTitle:string",
      "Status:string",
      "Alert:dynamic",
      "AlertTruncated:boolean",
      "AlertSizeBytes:long",
    ]);
  });

  it("keeps an alert of exactly the field limit whole, and trims one a byte over", () => {
    const exact = prepareRecords([alertOfSize(FIELD_LIMIT_BYTES)]);
    expect(exact.refused).toEqual([]);
    expect(exact.records[0]?.record.AlertTruncated).toBeUndefined();
    const over = prepareRecords([alertOfSize(FIELD_LIMIT_BYTES + 1)]);
    expect(over.records[0]?.record).toMatchObject({ AlertTruncated: true, AlertSizeBytes: FIELD_LIMIT_BYTES + 1 });
  });

  it("measures a string field by its UTF-8 bytes: exactly the limit passes, one more is refused with its size", () => {
    const base = envelope(alertOf(`sl-${randomUUID()}`));
    // "é" is two bytes: 30,000 of them are 60,000 bytes (60,002 as JSON, with the quotes).
    expect(prepareRecords([{ ...base, tenantName: "é".repeat(FIELD_LIMIT_BYTES / 2) }]).refused).toEqual([]);
    const refused = prepareRecords([{ ...base, tenantName: `${"é".repeat(FIELD_LIMIT_BYTES / 2)}x` }]).refused;
    expect(refused[0]?.detail).toBe(`Log Analytics keeps at most 64 KB per field; CustomerName is ${FIELD_LIMIT_BYTES + 1} bytes (the sink's limit is ${FIELD_LIMIT_BYTES})`);
  });

  it("delivers a trimmed alert to the table marked, with its original size, nothing cut by the service", async () => {
    const id = `st-${randomUUID()}`;
    const big = envelope(alertOf(id, 100_000));
    const size = Buffer.byteLength(big.alert.json);
    const cut = logs.truncatedFields;
    const sink = new SentinelAlertSink({
      settings: parseSentinelSettings({ SENTINEL_INGESTION_ENDPOINT: logs.url, SENTINEL_DCR_IMMUTABLE_ID: DCR }),
      credential: { getToken: async () => ({ token: LOGS_TOKEN, expiresOnTimestamp: Date.now() + 3_600_000 }) },
      localDevCaPem: cert.certPem,
    });
    expect(await sink.write(key(), [big])).toEqual({});
    const row = logs.rows().find((r) => r["AlertId"] === id);
    expect(row).toMatchObject({ AlertTruncated: true, AlertSizeBytes: size, CustomerTenantId: TENANT, Source: "mde" });
    expect(row?.["Alert"]).not.toHaveProperty("evidence");
    expect(logs.truncatedFields).toBe(cut);
  });

  const answered = (status: number, options: { headers?: Record<string, string>; body?: string; code?: unknown } = {}) => ({
    statusCode: status,
    ...(options.code === undefined ? {} : { code: options.code }),
    response: { headers: { get: (name: string) => options.headers?.[name] }, bodyAsText: options.body },
  });
  const progress = { ingested: 1, total: 3 };
  const kept = "1 of 3 records were ingested and are not sent again by this instance";

  it("names a fixed hint per status, and says which are permanent", () => {
    const hints: Array<[number, string, boolean]> = [
      [400, "the records do not match the DCR's stream declaration", true],
      [401, "the token was not accepted", true],
      [403, "the app's identity lacks Monitoring Metrics Publisher on the data collection rule (a new assignment takes up to 30 minutes)", true],
      [404, "the endpoint does not know the DCR immutable id or the stream", true],
      [413, "a call was larger than the service accepts", true],
      [429, "throttled by the data collection rule's limits", false],
      [500, "service error", false],
      [499, "unexpected answer", false],
      [409, "unexpected answer", false],
    ];
    for (const [status, hint, permanent] of hints) {
      const error = uploadFailure(answered(status), false, progress);
      expect(error.message).toBe(`Sending alerts to Log Analytics failed (HTTP ${status}: ${hint}); ${kept}`);
      expect(error.status).toBe(status);
      expect(error.details).toEqual(permanent ? { permanent: true } : {});
    }
    expect(uploadFailure({ statusCode: 502 }, false, progress).details).toEqual({});
    expect(uploadFailure(new AggregateLogsUploadError([]), false, progress).message).toBe(`Sending alerts to Log Analytics failed (no HTTP response: network, TLS or token failure); ${kept}`);
    expect(uploadFailure(new AggregateLogsUploadError([{ failedLogs: [], cause: Object.assign(new Error("x"), answered(404)) }]), false, progress).status).toBe(404);
  });

  it("takes the service's code from the error, else its body, else its header, when it is a plain identifier", () => {
    const codeOf = (options: Parameters<typeof answered>[1]) => uploadFailure(answered(400, options), false, progress).details.code;
    expect(codeOf({ code: "FromError", body: '{"error":{"code":"FromBody"}}', headers: { "x-ms-error-code": "FromHeader" } })).toBe("FromError");
    expect(codeOf({ code: "not plain", body: '{"error":{"code":"FromBody"}}', headers: { "x-ms-error-code": "FromHeader" } })).toBe("FromBody");
    expect(codeOf({ body: "<html>", headers: { "x-ms-error-code": "FromHeader" } })).toBe("FromHeader");
    expect(codeOf({ body: '{"error":{"code":7}}' })).toBeUndefined();
    expect(codeOf({})).toBeUndefined();
    for (const good of ["a", "Too_Many.Requests", `A${"b".repeat(63)}`]) expect(codeOf({ code: good })).toBe(good);
    for (const bad of ["1abc", "_abc", "!Code", "Code!", `A${"b".repeat(64)}`, "Code\nInjected", ""]) expect(codeOf({ code: bad })).toBeUndefined();
  });

  it("reads retry-after-ms first, then x-ms-retry-after-ms, then Retry-After; never from no response", () => {
    const now = Date.parse("2026-11-30T05:00:00Z");
    const after = (headers: Record<string, string>) => retryAfterOf(answered(429, { headers }), now);
    expect(after({ "retry-after-ms": "250.4", "x-ms-retry-after-ms": "900", "retry-after": "7" })).toBe(250);
    expect(after({ "x-ms-retry-after-ms": "900", "retry-after": "7" })).toBe(900);
    expect(after({ "retry-after-ms": "0", "retry-after": "7" })).toBe(0);
    expect(after({ "retry-after-ms": "", "retry-after": "7" })).toBe(7000);
    expect(after({ "retry-after-ms": "-5", "x-ms-retry-after-ms": "soon", "retry-after": "7" })).toBe(7000);
    expect(after({ "retry-after": " 7 " })).toBe(7000);
    expect(after({ "retry-after": "7s" })).toBeUndefined();
    expect(after({ "retry-after": "a7" })).toBeUndefined();
    expect(after({ "retry-after": "Mon, 30 Nov 2026 04:59:00 GMT" })).toBe(0);
    expect(after({})).toBeUndefined();
    expect(retryAfterOf(null, now)).toBeUndefined();
    expect(retryAfterOf("429", now)).toBeUndefined();
    expect(retryAfterOf({ response: null }, now)).toBeUndefined();
    expect(retryAfterOf({ response: { headers: {} } }, now)).toBeUndefined();
    expect(uploadFailure(answered(429, { headers: { "retry-after": "3" } }), false, progress).details).toEqual({ retryAfterMs: 3000 });
  });
});
