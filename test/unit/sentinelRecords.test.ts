import { describe, expect, it } from "vitest";
import type { AlertEnvelope } from "../../shared/sinks/alertSink";
import { CALL_BUDGET_BYTES, chunkRecords } from "../../shared/sinks/sentinel/chunks";
import { retryAfterOf, uploadFailure } from "../../shared/sinks/sentinel/failures";
import { IngestedLedger } from "../../shared/sinks/sentinel/ledger";
import { FIELD_LIMIT_BYTES, prepareRecords, SENTINEL_COLUMNS, type PreparedRecord } from "../../shared/sinks/sentinel/records";
import { scanPage } from "../../shared/defender/pageScanner";
import { makeAlert, type MdeAlert } from "../fakes/alerts";

const TENANT = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

/** The envelope the pull builds: the alert read by the real page scanner. */
function envelope(alert: object): AlertEnvelope {
  const [scanned] = scanPage(JSON.stringify({ value: [alert] })).alerts;
  if (!scanned) throw new Error("the scanner refused the alert");
  return { tenantId: TENANT, tenantName: "Contoso", source: "mde", pulledAt: "2026-11-30T05:01:00.123Z", alert: scanned };
}

/** An alert whose evidence alone is about `bytes` large. */
function withEvidence(id: string, bytes: number, extra: Partial<MdeAlert> = {}): MdeAlert {
  const alert = makeAlert({ id, lastUpdateTime: "2026-11-30T04:59:30.5166667Z", ...extra });
  const template = alert.evidence[0];
  if (!template) throw new Error("makeAlert gave no evidence");
  const entry = { ...template, processCommandLine: "x".repeat(1000) };
  alert.evidence = Array.from({ length: Math.ceil(bytes / Buffer.byteLength(JSON.stringify(entry))) }, () => entry);
  return alert;
}

describe("Sentinel records", () => {
  it("maps an envelope to the declared columns, none of them reserved", () => {
    const alert = makeAlert({ id: "da-1", lastUpdateTime: "2026-11-30T04:59:30.51Z" });
    // TimeGenerated is the upload's time, not the pull's: a parked page may be sent days later.
    const { records, refused } = prepareRecords([envelope(alert)], "2026-12-03T08:00:00.000Z");
    expect(refused).toEqual([]);
    const record = records[0]?.record;
    expect(record).toEqual({
      TimeGenerated: "2026-12-03T08:00:00.000Z",
      CustomerTenantId: TENANT,
      CustomerName: "Contoso",
      Source: "mde",
      AlertId: "da-1",
      AlertLastUpdateTime: "2026-11-30T04:59:30.5100000Z",
      Severity: alert.severity,
      AlertTitle: alert.title,
      Status: alert.status,
      Alert: JSON.parse(JSON.stringify(alert)) as unknown,
    });
    const declared = new Set(SENTINEL_COLUMNS.map((column) => column.name as string));
    for (const name of Object.keys(record ?? {})) expect(declared.has(name), name).toBe(true);
    for (const reserved of ["TenantId", "Title", "Type", "id", "_ResourceId", "_SubscriptionId", "UniqueId"]) expect(declared.has(reserved)).toBe(false);
    expect(records[0]?.bytes).toBe(Buffer.byteLength(JSON.stringify(record)));
    expect(records[0]?.version).toEqual({ id: "da-1", updatedAtKey: "2026-11-30T04:59:30.5100000Z", updatedAtMs: Date.parse("2026-11-30T04:59:30.510Z") });
  });

  it("leaves out a column the alert does not have as a string", () => {
    const { records } = prepareRecords([envelope({ id: "da-2", lastUpdateTime: "2026-11-30T04:59:30Z", severity: 3 })]);
    expect(Object.keys(records[0]?.record ?? {})).not.toContain("Severity");
    expect(Object.keys(records[0]?.record ?? {})).not.toContain("AlertTitle");
  });

  it("keeps an alert up to the field limit whole", () => {
    const alert = withEvidence("da-3", 40_000);
    const { records } = prepareRecords([envelope(alert)]);
    expect(records[0]?.record.AlertTruncated).toBeUndefined();
    expect(records[0]?.record.Alert).toEqual(JSON.parse(JSON.stringify(alert)));
  });

  it("drops the evidence of an alert over the field limit, with a marker and the original size", () => {
    const alert = withEvidence("da-4", 1_000_000);
    const size = Buffer.byteLength(JSON.stringify(alert));
    const { records, refused } = prepareRecords([envelope(alert)]);
    expect(refused).toEqual([]);
    const { evidence: _evidence, ...rest } = alert;
    expect(records[0]?.record).toMatchObject({ AlertTruncated: true, AlertSizeBytes: size, AlertId: "da-4" });
    expect(records[0]?.record.Alert).toEqual(JSON.parse(JSON.stringify(rest)));
    expect(Buffer.byteLength(JSON.stringify(records[0]?.record.Alert))).toBeLessThanOrEqual(FIELD_LIMIT_BYTES);
  });

  it("refuses an alert still over the limit without its evidence, saying which field and never the content", () => {
    const alert = withEvidence("da-5", 200_000, { description: "secret-ish ".repeat(7_000) });
    const { records, refused } = prepareRecords([envelope(alert), envelope(makeAlert({ id: "da-6", lastUpdateTime: "2026-11-30T04:59:31Z" }))]);
    expect(records.map((r) => r.record.AlertId)).toEqual(["da-6"]);
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ reason: "oversized", alert: { id: "da-5" } });
    expect(refused[0]?.detail).toMatch(/^Log Analytics keeps at most 64 KB per field; Alert is \d+ bytes even without its evidence/);
    expect(refused[0]?.detail).not.toContain("secret-ish");
  });

  it("refuses a record whose other field is over the limit", () => {
    const alert = makeAlert({ id: "da-7", lastUpdateTime: "2026-11-30T04:59:31Z" });
    const big = { ...envelope(alert), tenantName: "n".repeat(FIELD_LIMIT_BYTES + 1) };
    expect(prepareRecords([big]).refused[0]?.detail).toMatch(/CustomerName is 60001 bytes \(/);
  });
});

function prepared(count: number, bytes: number): PreparedRecord[] {
  return Array.from({ length: count }, (_, i) => ({
    record: {} as PreparedRecord["record"],
    bytes,
    version: { id: `a${i}`, updatedAtKey: "2026-11-30T00:00:00.0000000Z", updatedAtMs: 0 },
  }));
}

describe("Sentinel chunks", () => {
  it("keeps every call's JSON array, brackets and commas included, within the budget", () => {
    // 1,000 records of 999 bytes: the SDK's own split (elements only, < 1,000,000) would put them
    // all in one call of 1,000,001 bytes.
    const chunks = chunkRecords(prepared(1000, 999));
    expect(chunks.length).toBe(2);
    for (const chunk of chunks) expect(2 + chunk.reduce((sum, r) => sum + r.bytes, 0) + chunk.length - 1).toBeLessThanOrEqual(CALL_BUDGET_BYTES);
    expect(chunks.flat().map((r) => r.version.id)).toEqual(prepared(1000, 999).map((r) => r.version.id));
  });

  it("fills a call exactly to the budget and starts the next one after it", () => {
    const chunks = chunkRecords(prepared(4, 10), 2 + 10 + 1 + 10 + 1 + 10);
    expect(chunks.map((c) => c.length)).toEqual([3, 1]);
    expect(chunkRecords([])).toEqual([]);
  });
});

describe("Sentinel ledger", () => {
  const page = { tenantId: TENANT, pageFrom: "2026-11-30T04:00:00.000Z", pageTo: "2026-11-30T05:00:00.000Z" };
  const version = (id: string) => ({ id, updatedAtKey: "2026-11-30T04:30:00.0000000Z", updatedAtMs: 0 });

  it("remembers accepted versions by page bounds, whatever their spelling", () => {
    const ledger = new IngestedLedger();
    ledger.add(page, [version("a"), version("b"), version("a")]);
    expect(ledger.has({ ...page, pageTo: "2026-11-30T06:00:00.000+01:00" }, version("a"))).toBe(true);
    expect(ledger.has(page, version("c"))).toBe(false);
    expect(ledger.has({ ...page, pageFrom: "2026-11-30T04:00:00.001Z" }, version("a"))).toBe(false);
    expect(ledger.stored(page).map((v) => v.id)).toEqual(["a", "b"]);
  });

  it("forgets the least recently written pages first, never the one just written", () => {
    const ledger = new IngestedLedger(3);
    const pageN = (n: number) => ({ ...page, pageFrom: `2026-11-30T0${n}:00:00.000Z` });
    ledger.add(pageN(1), [version("a"), version("b")]);
    ledger.add(pageN(2), [version("c")]);
    ledger.add(pageN(1), [version("d")]);
    expect(ledger.stored(pageN(2))).toEqual([]);
    expect(ledger.stored(pageN(1)).map((v) => v.id)).toEqual(["a", "b", "d"]);
    ledger.add(pageN(3), [version("e"), version("f"), version("g"), version("h")]);
    expect(ledger.stored(pageN(1))).toEqual([]);
    expect(ledger.stored(pageN(3))).toHaveLength(4);
  });
});

describe("Sentinel upload failures", () => {
  const restError = (status: number, headers: Record<string, string>, code?: string) =>
    Object.assign(new Error(`{"error":{"code":"${code}","message":"token eyJhbGciOi leaked"}}`), {
      statusCode: status,
      code,
      response: { headers: { get: (name: string) => headers[name] } },
    });
  const progress = { ingested: 2, total: 5 };

  it("keeps status, code, Retry-After and permanence, and no service text", () => {
    const error = uploadFailure(restError(403, {}, "OperationFailed"), false, progress);
    expect(error).toMatchObject({ name: "SinkError", status: 403, details: { permanent: true, code: "OperationFailed" } });
    expect(error.message).toMatch(/^Sending alerts to Log Analytics failed \(HTTP 403: .*Monitoring Metrics Publisher.*\); 2 of 5 records were ingested/);
    expect(error.message).not.toMatch(/eyJ|leaked|OperationFailed/);
    expect(uploadFailure(restError(429, { "retry-after": "7" }), false, progress).details).toEqual({ retryAfterMs: 7000 });
    expect(uploadFailure(restError(503, { "retry-after-ms": "250" }), false, progress).details).toEqual({ retryAfterMs: 250 });
    for (const status of [400, 401, 404, 413]) expect(uploadFailure(restError(status, {}), false, progress).details.permanent).toBe(true);
    expect(uploadFailure(restError(500, {}), false, progress).details.permanent).toBeUndefined();
  });

  it("drops a code that is not a plain identifier", () => {
    expect(uploadFailure(restError(400, {}, "Bearer eyJ0eXAi"), false, progress).details.code).toBeUndefined();
    expect(uploadFailure(restError(413, { "x-ms-error-code": "ContentLengthLimitExceeded" }), false, progress).details.code).toBe("ContentLengthLimitExceeded");
  });

  it("tells a stop by the signal and a network failure apart from an answer", () => {
    expect(uploadFailure(new Error("The operation was aborted"), true, progress)).toMatchObject({ status: undefined, message: expect.stringMatching(/was stopped/) });
    expect(uploadFailure(new Error("ECONNRESET"), false, progress).message).toMatch(/no HTTP response/);
  });

  it("reads Retry-After as seconds or as an HTTP date", () => {
    const now = Date.parse("2026-11-30T05:00:00Z");
    expect(retryAfterOf(restError(429, { "retry-after": "Mon, 30 Nov 2026 05:00:05 GMT" }), now)).toBe(5000);
    expect(retryAfterOf(restError(429, { "retry-after": "soon" }), now)).toBeUndefined();
    expect(retryAfterOf(new Error("no response"), now)).toBeUndefined();
  });
});
