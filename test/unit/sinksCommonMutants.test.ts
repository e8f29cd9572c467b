/**
 * The sinks' common modules without the app (issue 15, mutation testing): the dead-letter and
 * parking stores against the run's Azurite through the real @azure/storage-blob client (and a
 * scripted storage endpoint for the answers Azurite does not give), the container creator, the
 * sink settings and the factory that builds the sinks ALERT_SINKS names.
 */
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink } from "../../shared/sinks/alertSink";
import { containerCreator, openContainer } from "../../shared/sinks/containers";
import { BlobDeadLetterStore, DeadLetterError, type DeadLetter } from "../../shared/sinks/deadLetters";
import { EventHubsAlertSink } from "../../shared/sinks/eventhubs/eventHubsSink";
import { BlobParkingStore, ParkingError } from "../../shared/sinks/parking";
import { everySink, SinkSet, type Refusal, type SinkProgressMap } from "../../shared/sinks/sinkSet";
import { SentinelAlertSink } from "../../shared/sinks/sentinel/sentinelSink";
import { SENTINEL_COLUMNS } from "../../shared/sinks/sentinel/records";
import { DEFAULT_SENTINEL_STREAM, parseSentinelSettings, SentinelSettingsError } from "../../shared/sinks/sentinel/settings";
import { readSinkConfig, SINK_SETTING_NAMES } from "../../shared/sinks/sinkConfig";
import { buildSinks } from "../../shared/sinks/sinkFactory";
import { parseAlertSinks } from "../../shared/sinks/sinkSettings";
import { SplunkHecSink } from "../../shared/sinks/splunk/splunkHecSink";
import { scanPage } from "../../shared/defender/pageScanner";
import { makeAlert } from "../fakes/alerts";
import { MemoryParking } from "../harness/memoryParking";
import { FakeLogsIngestion } from "../fakes/fakeLogsIngestion";
import { FakeSplunkHec } from "../fakes/fakeSplunkHec";
import { createTestCertificate, type TestCertificate } from "../fakes/tls";
import { scriptedStorage } from "../harness/scriptedStorage";

const TENANT = "7b1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const blobService = () => BlobServiceClient.fromConnectionString(inject("storageConnectionString"));
const freshContainer = (prefix: string) => blobService().getContainerClient(`${prefix}-${randomUUID().slice(0, 13)}`);

const refusing = (status: number) => () => ({ status, headers: { "x-ms-error-code": "AuthorizationFailure" } });

function letter(overrides: Partial<DeadLetter> = {}): DeadLetter {
  return {
    tenantId: TENANT,
    source: "mde",
    reason: "invalid_json",
    window: { from: "2026-11-30T04:00:00.000Z", to: "2026-11-30T05:00:00.000Z" },
    page: { from: "2026-11-30T04:10:00.000Z", to: "2026-11-30T04:20:00.000Z", skip: 3 },
    raw: `{"id":"broken-${randomUUID()}"`,
    at: "2026-11-30T05:00:01.000Z",
    ...overrides,
  };
}

describe("dead letters", () => {
  it("names a letter by tenant, reason and the first 16 hex digits of SHA-256 over reason, sink and raw text", () => {
    const sha = (...parts: string[]) => createHash("sha256").update(parts.join("\n")).digest("hex").slice(0, 16);
    const plain = letter({ raw: "abc" });
    expect(BlobDeadLetterStore.nameFor(plain)).toBe(`${TENANT}/invalid_json_${sha("invalid_json", "abc")}.json`);
    expect(BlobDeadLetterStore.nameFor({ ...plain, reason: "oversized", sink: "splunk" })).toBe(`${TENANT}/oversized_${sha("oversized", "splunk", "abc")}.json`);
    // Where it was read does not count: the same poison alert is one letter.
    expect(BlobDeadLetterStore.nameFor({ ...plain, page: { from: "x", to: "y", skip: 0 } } as DeadLetter)).toBe(BlobDeadLetterStore.nameFor(plain));
    for (const tenantId of ["", "-abc", "a/b", "a".repeat(65), "abc!"]) {
      expect(() => BlobDeadLetterStore.nameFor({ ...plain, tenantId })).toThrow(new DeadLetterError("The dead letter's tenant id is not a valid tenant id"));
    }
    expect(BlobDeadLetterStore.nameFor({ ...plain, tenantId: "a".repeat(64) })).toMatch(/^a{64}\/invalid_json_[0-9a-f]{16}\.json$/);
  });

  it("stores a letter once, as JSON with its place in the metadata, and lists it without its content", async () => {
    const container = freshContainer("dl");
    const store = new BlobDeadLetterStore(container);
    const first = letter({ reason: "oversized", sink: "sentinel" });
    expect(await store.write(first)).toBe(true);
    expect(await store.write({ ...first, at: "2026-12-01T00:00:00.000Z" })).toBe(false);
    const name = BlobDeadLetterStore.nameFor(first);
    const properties = await container.getBlobClient(name).getProperties();
    expect(properties.contentType).toBe("application/json");
    expect(properties.metadata).toEqual({ reason: "oversized", pagefrom: first.page.from, pageto: first.page.to, skip: "3", sink: "sentinel" });
    expect(await store.read(name)).toEqual(first);

    const second = letter();
    await store.write(second);
    expect((await container.getBlobClient(BlobDeadLetterStore.nameFor(second)).getProperties()).metadata).not.toHaveProperty("sink");
    // A blob without metadata (an older version's) is listed from its name; another tenant's is not listed.
    await container.getBlockBlobClient(`${TENANT}/missing_id_00112233.json`).upload("{}", 2);
    await container.getBlockBlobClient(`${TENANT}0/invalid_json_0000.json`).upload("{}", 2);
    const listed = await store.list(TENANT);
    expect(listed.map((info) => info.name).sort()).toEqual([name, BlobDeadLetterStore.nameFor(second), `${TENANT}/missing_id_00112233.json`].sort());
    const info = listed.find((entry) => entry.name === name);
    expect(info).toEqual({
      name,
      reason: "oversized",
      pageFrom: first.page.from,
      pageTo: first.page.to,
      skip: 3,
      sizeBytes: Buffer.byteLength(JSON.stringify(first)),
      storedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
    });
    expect(listed.find((entry) => entry.name.endsWith("00112233.json"))).toEqual({
      name: `${TENANT}/missing_id_00112233.json`,
      reason: "missing_id",
      pageFrom: "",
      pageTo: "",
      skip: 0,
      sizeBytes: 2,
      storedAt: expect.any(String),
    });

    await store.remove(name);
    expect(await store.read(name)).toBeUndefined();
    await store.remove(name);
  });

  it("lists nothing for a tenant id it would never write, or before the container exists", async () => {
    const store = new BlobDeadLetterStore(freshContainer("dl"));
    expect(await store.list(TENANT)).toEqual([]);
    expect(await store.list("../x")).toEqual([]);
  });

  it("says which step failed and its HTTP status, never more", async () => {
    const storage = await scriptedStorage(refusing(403));
    try {
      const store = new BlobDeadLetterStore(storage.container);
      await expect(store.write(letter())).rejects.toThrow(new DeadLetterError("Creating the dead-letter container failed (HTTP 403)", 403));
      await expect(store.list(TENANT)).rejects.toThrow(new DeadLetterError("Listing dead letters failed (HTTP 403)", 403));
      await expect(store.read(`${TENANT}/x.json`)).rejects.toThrow(new DeadLetterError("Reading a dead letter failed (HTTP 403)", 403));
      await expect(store.remove(`${TENANT}/x.json`)).rejects.toThrow(new DeadLetterError("Removing a dead letter failed (HTTP 403)", 403));
      const error = await store.read(`${TENANT}/x.json`).catch((e: unknown) => e);
      expect(error).toMatchObject({ name: "DeadLetterError", status: 403 });
    } finally {
      await storage.close();
    }
  });

  it("tries to create the container again after a failure, and only once after a success; an upload refused otherwise than 409 fails", async () => {
    let creates = 0;
    const storage = await scriptedStorage((req) => {
      if ((req.url ?? "").includes("restype=container")) return { status: ++creates === 1 ? 400 : 201 };
      return { status: 403, headers: { "x-ms-error-code": "AuthorizationFailure" } };
    });
    try {
      const store = new BlobDeadLetterStore(storage.container);
      await expect(store.write(letter())).rejects.toThrow("Creating the dead-letter container failed (HTTP 400)");
      await expect(store.write(letter())).rejects.toThrow(new DeadLetterError("Storing a dead letter failed (HTTP 403)", 403));
      await expect(store.write(letter())).rejects.toThrow("Storing a dead letter failed (HTTP 403)");
      expect(creates).toBe(2);
    } finally {
      await storage.close();
    }
  });

  it("gives up a write when the caller's signal fires, saying no answer came", async () => {
    const store = new BlobDeadLetterStore(freshContainer("dl"));
    await expect(store.write(letter(), { signal: AbortSignal.abort() })).rejects.toThrow(new DeadLetterError("Storing a dead letter failed (no HTTP response)"));
  });
});

describe("parked pages: the answers Azurite does not give", () => {
  it("says which step failed and its HTTP status", async () => {
    const storage = await scriptedStorage(refusing(403));
    const batch = { key: { tenantId: TENANT, pageFrom: "a", pageTo: "b", skip: 0 }, envelopes: [] };
    try {
      const store = new BlobParkingStore(storage.container);
      await expect(store.park("splunk", TENANT, 0, batch)).rejects.toThrow(new ParkingError("Creating the parked-pages container failed (HTTP 403)"));
      await expect(store.read("splunk", TENANT, 0)).rejects.toThrow(new ParkingError("Reading a parked page failed (HTTP 403)"));
      await expect(store.removeAll(TENANT)).rejects.toThrow(new ParkingError("Removing a tenant's parked pages failed (HTTP 403)"));
    } finally {
      await storage.close();
    }
  });

  it("uploads a parked page once the container exists, and fails with the upload's status", async () => {
    const storage = await scriptedStorage((req) => ((req.url ?? "").includes("restype=container") ? { status: 201 } : { status: 403 }));
    const batch = { key: { tenantId: TENANT, pageFrom: "a", pageTo: "b", skip: 0 }, envelopes: [] };
    try {
      const store = new BlobParkingStore(storage.container);
      await expect(store.park("splunk", TENANT, 4, batch)).rejects.toThrow(new ParkingError("Parking a page for a sink failed (HTTP 403)"));
      expect(storage.requests.map((r) => `${r.method} ${r.path}`)).toEqual(["PUT /devstoreaccount1/scripted", `PUT /devstoreaccount1/scripted/${TENANT}/splunk/000000000004.json`]);
    } finally {
      await storage.close();
    }
  });

  it("removes a tenant's pages within four times its per-call timeout", async () => {
    // Each answer takes 150 ms: two of them fit in 4 x 100 ms, not in 100 ms / 4.
    const storage = await scriptedStorage(
      (req) =>
        req.method === "GET"
          ? { status: 200, headers: { "content-type": "application/xml" }, body: '<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="scripted"><Blobs></Blobs><NextMarker/></EnumerationResults>' }
          : { status: 200 },
      150,
    );
    try {
      await new BlobParkingStore(storage.container, 100).removeAll(TENANT);
      expect(storage.requests.map((r) => `${r.method} ${r.query}`)).toEqual(["GET ?restype=container", expect.stringMatching(/^GET \?.*comp=list/)]);
    } finally {
      await storage.close();
    }
  });
});

describe("containers", () => {
  it("opens a container by connection string or by URL and identity", () => {
    const byString = openContainer({ kind: "connectionString", connectionString: inject("storageConnectionString") }, "alerts", () => {
      throw new Error("no identity wanted");
    });
    expect(byString.containerName).toBe("alerts");
    let asked = 0;
    const credential = { getToken: async () => ({ token: "t", expiresOnTimestamp: Date.now() + 60_000 }) };
    const byIdentity = openContainer({ kind: "identity", blobServiceUri: "https://acct.blob.core.windows.net", queueServiceUri: "", tableServiceUri: "" } as never, "alerts", () => {
      asked += 1;
      return credential;
    });
    expect(byIdentity.url).toBe("https://acct.blob.core.windows.net/alerts");
    expect(byIdentity.credential).toBe(credential);
    expect(asked).toBe(1);
  });

  it("creates a container once, again after a failure, and hands the failure over as the caller's error", async () => {
    const container = freshContainer("cc");
    const ensure = containerCreator(container, (error) => new Error(`wrapped ${String((error as { statusCode?: number }).statusCode)}`));
    await ensure();
    await ensure();
    expect(await container.exists()).toBe(true);
    const storage = await scriptedStorage((_req, index) => ({ status: index < 2 ? 400 : 201 }));
    try {
      const failing = containerCreator(storage.container, (error) => new Error(`wrapped ${String((error as { statusCode?: number }).statusCode)}`));
      await expect(failing()).rejects.toThrow("wrapped 400");
      await expect(failing()).rejects.toThrow("wrapped 400");
      await failing();
      await failing();
      expect(storage.requests).toHaveLength(3);
    } finally {
      await storage.close();
    }
  });
});

describe("sink settings", () => {
  it("lists every setting the sinks read, ALERT_SINKS first", () => {
    expect(SINK_SETTING_NAMES).toEqual([
      "ALERT_SINKS",
      "SENTINEL_INGESTION_ENDPOINT",
      "SENTINEL_DCR_IMMUTABLE_ID",
      "SENTINEL_STREAM_NAME",
      "SPLUNK_HEC_URL",
      "SPLUNK_HEC_TOKEN",
      "SPLUNK_INDEX",
      "SPLUNK_SOURCETYPE",
      "SPLUNK_HEC_ACK",
      "EVENTHUB_FULLY_QUALIFIED_NAMESPACE",
      "EVENTHUB_NAME",
    ]);
  });

  it("reads only the chosen sinks' settings, and every problem at once", () => {
    expect(readSinkConfig({})).toEqual({ sinks: { names: ["blob"] }, problems: [] });
    const all = readSinkConfig({ ALERT_SINKS: "blob,sentinel,splunk,eventhubs" });
    expect(all.sinks).toEqual({ names: ["blob", "sentinel", "splunk", "eventhubs"] });
    expect(all.problems.map((p) => p.split(" ")[0])).toEqual([
      "SENTINEL_INGESTION_ENDPOINT",
      "SENTINEL_DCR_IMMUTABLE_ID",
      ...all.problems.slice(2, -2).map((p) => p.split(" ")[0]),
      "EVENTHUB_FULLY_QUALIFIED_NAMESPACE",
      "EVENTHUB_NAME",
    ]);
    expect(all.problems.slice(2, -2).every((p) => p.startsWith("SPLUNK_"))).toBe(true);
    const env = {
      ALERT_SINKS: "sentinel,splunk,eventhubs",
      SENTINEL_INGESTION_ENDPOINT: "https://dce.example.com",
      SENTINEL_DCR_IMMUTABLE_ID: `dcr-${"a".repeat(32)}`,
      SPLUNK_HEC_URL: "https://splunk.example.com:8088",
      SPLUNK_HEC_TOKEN: randomUUID(),
      EVENTHUB_FULLY_QUALIFIED_NAMESPACE: "ns.servicebus.windows.net",
      EVENTHUB_NAME: "alerts",
    };
    const read = readSinkConfig(env);
    expect(read.problems).toEqual([]);
    expect(read.sinks.names).toEqual(["sentinel", "splunk", "eventhubs"]);
    expect(read.sinks.sentinel).toEqual({ ingestionEndpoint: "https://dce.example.com", dcrImmutableId: env.SENTINEL_DCR_IMMUTABLE_ID, streamName: DEFAULT_SENTINEL_STREAM });
    expect(read.sinks.splunk?.url).toBe("https://splunk.example.com:8088");
    expect(read.sinks.eventHubs).toEqual({ fullyQualifiedNamespace: "ns.servicebus.windows.net", eventHubName: "alerts" });
    // A sink not chosen is not read: its broken settings are no problem.
    expect(readSinkConfig({ ALERT_SINKS: "blob", SENTINEL_INGESTION_ENDPOINT: "http://x", SPLUNK_HEC_URL: "x", EVENTHUB_NAME: "-" }).problems).toEqual([]);
  });

  it("falls back to the blob sink when ALERT_SINKS is wrong, with the problem listed", () => {
    const { sinks, problems } = readSinkConfig({ ALERT_SINKS: "blob,elastic" });
    expect(sinks).toEqual({ names: ["blob"] });
    expect(problems).toEqual(["ALERT_SINKS must list some of blob, sentinel, splunk, eventhubs, separated by commas"]);
    expect(() => parseAlertSinks(`blob,${" ".repeat(200)},splunk`)).toThrow("ALERT_SINKS is longer than any list of the known sinks");
    expect(parseAlertSinks(`${" ".repeat(150)}blob${" ".repeat(150)}`)).toEqual(["blob"]);
    expect(parseAlertSinks(`blob${",blob".repeat(39)}`)).toEqual(["blob"]);
  });
});

describe("buildSinks", () => {
  let cert: TestCertificate;
  let logs: FakeLogsIngestion;
  let hec: FakeSplunkHec;
  const DCR = `dcr-${randomBytes(16).toString("hex")}`;
  const LOGS_TOKEN = `li-${randomBytes(18).toString("base64url")}`;
  const HEC_TOKEN = randomUUID();
  const credential = { getToken: async () => ({ token: LOGS_TOKEN, expiresOnTimestamp: Date.now() + 3_600_000 }) };

  beforeAll(async () => {
    cert = await createTestCertificate();
    logs = new FakeLogsIngestion({ certPem: cert.certPem, keyPem: cert.keyPem, acceptedToken: LOGS_TOKEN, dcrImmutableId: DCR, streamName: DEFAULT_SENTINEL_STREAM, columns: SENTINEL_COLUMNS });
    hec = new FakeSplunkHec({ certPem: cert.certPem, keyPem: cert.keyPem, tokens: [{ token: HEC_TOKEN, indexes: ["main"] }] });
    await Promise.all([logs.start(), hec.start()]);
  });
  afterAll(async () => {
    await logs?.stop();
    await hec?.stop();
  });

  const envelope = (): AlertEnvelope => {
    const [alert] = scanPage(JSON.stringify({ value: [makeAlert({ id: `bs-${randomUUID()}`, lastUpdateTime: "2026-11-30T04:59:30Z" })] })).alerts;
    if (!alert) throw new Error("the scanner refused the alert");
    return { tenantId: TENANT, tenantName: "Contoso", source: "mde", pulledAt: "2026-11-30T05:01:00.000Z", alert };
  };
  const key = { tenantId: TENANT, pageFrom: "2026-11-30T04:00:00.000Z", pageTo: "2026-11-30T05:00:00.000Z", skip: 0 };
  const config = () => {
    const { sinks, problems } = readSinkConfig({
      ALERT_SINKS: "blob,sentinel,splunk,eventhubs",
      SENTINEL_INGESTION_ENDPOINT: logs.url,
      SENTINEL_DCR_IMMUTABLE_ID: DCR,
      SPLUNK_HEC_URL: hec.url,
      SPLUNK_HEC_TOKEN: HEC_TOKEN,
      EVENTHUB_FULLY_QUALIFIED_NAMESPACE: "ns.servicebus.windows.net",
      EVENTHUB_NAME: "alerts",
    });
    expect(problems).toEqual([]);
    return sinks;
  };

  it("builds each named sink in order, from its own settings, trusting the given CA", async () => {
    const blob = { write: async () => undefined };
    const built = buildSinks(config(), { blob: () => blob, credential: () => credential, caPem: cert.certPem });
    expect(built.map((entry) => entry.name)).toEqual(["blob", "sentinel", "splunk", "eventhubs"]);
    expect(built[0]?.sink).toBe(blob);
    expect(built[1]?.sink).toBeInstanceOf(SentinelAlertSink);
    expect(built[2]?.sink).toBeInstanceOf(SplunkHecSink);
    expect(built[3]?.sink).toBeInstanceOf(EventHubsAlertSink);
    const one = envelope();
    await built[1]?.sink.write(key, [one]);
    expect(logs.rows().filter((row) => row["AlertId"] === one.alert.id)).toHaveLength(1);
    await built[2]?.sink.write(key, [one]);
    expect(hec.indexed().filter((event) => (event.event as { id: string }).id === one.alert.id)).toHaveLength(1);
    await (built[2]?.sink as SplunkHecSink).close();
    await (built[3]?.sink as EventHubsAlertSink).close();
  });

  it("does not trust the fakes' CA unless given it", async () => {
    const built = buildSinks(config(), { blob: () => ({ write: async () => undefined }), credential: () => credential });
    await expect(built[1]?.sink.write(key, [envelope()])).rejects.toThrow(/no HTTP response/);
    await (built[2]?.sink as SplunkHecSink).close();
    await (built[3]?.sink as EventHubsAlertSink).close();
  });

  it("gives the Splunk sink the app's logger", async () => {
    const warnings: string[] = [];
    const logger = { info: () => undefined, warn: (message: string) => warnings.push(message), error: () => undefined };
    const built = buildSinks(config(), { blob: () => ({ write: async () => undefined }), credential: () => credential, caPem: cert.certPem, logger: logger as never });
    hec.storm({ times: 1, bare: true });
    try {
      await built[2]?.sink.write(key, [envelope()]);
    } finally {
      hec.storm(null);
    }
    expect(warnings).toContain("Splunk HEC is busy or unreachable; retrying");
    await (built[2]?.sink as SplunkHecSink).close();
    await (built[3]?.sink as EventHubsAlertSink).close();
  });

  it("refuses a named sink whose settings were not read", () => {
    const deps = { blob: () => ({ write: async () => undefined }), credential: () => credential };
    expect(() => buildSinks({ names: ["sentinel"] }, deps)).toThrow("ALERT_SINKS names sentinel but its settings were not read");
    expect(() => buildSinks({ names: ["splunk"] }, deps)).toThrow("ALERT_SINKS names splunk but its settings were not read");
    expect(() => buildSinks({ names: ["eventhubs"] }, deps)).toThrow("ALERT_SINKS names eventhubs but its settings were not read");
  });
});

describe("SinkSet and everySink: what the progress records", () => {
  class ScriptedSink implements AlertSink {
    readonly pages: string[][] = [];
    failure: Error | undefined;
    refuse = new Set<string>();
    async write(_key: AlertBatchKey, alerts: readonly AlertEnvelope[]) {
      if (this.failure) throw this.failure;
      this.pages.push(alerts.map((a) => a.alert.id));
      const refused = alerts.filter((a) => this.refuse.has(a.alert.id)).map((a) => ({ alert: a.alert, reason: "oversized" as const, detail: "too big" }));
      return refused.length > 0 ? { refused } : undefined;
    }
  }

  const item = (id: string): AlertEnvelope => {
    const at = "2026-11-30T10:00:00.000Z";
    return { tenantId: TENANT, tenantName: "Contoso", source: "mde", pulledAt: at, alert: { id, lastUpdateTime: at, updatedAtKey: "2026-11-30T10:00:00.0000000Z", updatedAtMs: Date.parse(at), json: JSON.stringify({ id }) } };
  };
  const pageKey = (n: number): AlertBatchKey => ({ tenantId: TENANT, pageFrom: `2026-11-30T10:0${n}:00.000Z`, pageTo: `2026-11-30T10:0${n + 1}:00.000Z`, skip: 0 });

  function setup() {
    let now = Date.parse("2026-11-30T12:00:00Z");
    const parking = new MemoryParking();
    const blob = new ScriptedSink();
    const siem = new ScriptedSink();
    const set = new SinkSet([{ name: "blob", sink: blob }, { name: "splunk", sink: siem }], parking, () => now);
    const progress: SinkProgressMap = {};
    return { parking, blob, siem, set, progress, at: (iso: string) => (now = Date.parse(iso)), now: () => now };
  }
  const drainOptions = (refusedLog: Refusal[][] = [], saves: { count: number } = { count: 0 }) => ({
    until: Number.POSITIVE_INFINITY,
    saved: async () => void saves.count++,
    refused: async (refusals: Refusal[]) => void refusedLog.push(refusals),
  });

  it("records when a sink delivered, and when and how it last failed: code, status or unreachable, and a safe message", async () => {
    const { siem, set, progress, at } = setup();
    await set.deliver(pageKey(1), [item("a")], progress, {});
    expect(progress["splunk"]).toEqual({ parkedFrom: 0, parkedTo: 0, lastDeliveryAt: "2026-11-30T12:00:00.000Z" });
    at("2026-11-30T12:05:00Z");
    siem.failure = new SinkError("Splunk HEC refused the events (HTTP 403): token disabled", 403, { code: `C${"x".repeat(80)}` });
    await set.deliver(pageKey(2), [item("b")], progress, {});
    expect(progress["splunk"]).toMatchObject({ lastErrorAt: "2026-11-30T12:05:00.000Z", lastErrorCode: `sink_C${"x".repeat(58)}`, behindSince: "2026-11-30T12:05:00.000Z" });
    expect(progress["splunk"]?.lastErrorMessage).toBe("SinkError: Splunk HEC refused the events (HTTP 403): token disabled");
    expect(progress["splunk"]?.lastDeliveryAt).toBe("2026-11-30T12:00:00.000Z");

    const other = setup();
    other.siem.failure = new SinkError(`m${"y".repeat(400)}`);
    await other.set.deliver(pageKey(1), [item("a")], other.progress, {});
    expect(other.progress["splunk"]?.lastErrorCode).toBe("sink_unreachable");
    expect(other.progress["splunk"]?.lastErrorMessage).toHaveLength(300);
    other.siem.failure = undefined;
    const third = setup();
    third.siem.failure = new SinkError("busy", 503);
    await third.set.deliver(pageKey(1), [item("a")], third.progress, {});
    expect(third.progress["splunk"]?.lastErrorCode).toBe("sink_http_503");
  });

  it("keeps the time a sink fell behind while more pages are parked, and clears it only when caught up", async () => {
    const { siem, set, progress, at } = setup();
    siem.failure = new SinkError("down", 503);
    await set.deliver(pageKey(1), [item("a")], progress, {});
    at("2026-11-30T12:10:00Z");
    await set.deliver(pageKey(2), [item("b")], progress, {});
    await set.deliver(pageKey(3), [item("c")], progress, {});
    expect(progress["splunk"]).toMatchObject({ parkedFrom: 0, parkedTo: 3, behindSince: "2026-11-30T12:00:00.000Z" });
    // The first parked page goes through, the second fails: still behind since then.
    siem.failure = undefined;
    let writes = 0;
    const original = siem.write.bind(siem);
    siem.write = async (k, alerts) => {
      if (++writes === 2) throw new SinkError("down again", 503);
      return original(k, alerts);
    };
    at("2026-11-30T12:20:00Z");
    const drained = await set.drain(TENANT, progress, drainOptions());
    expect(drained).toEqual({ delivered: 1 });
    expect(progress["splunk"]).toMatchObject({ parkedFrom: 1, parkedTo: 3, behindSince: "2026-11-30T12:00:00.000Z", lastDeliveryAt: "2026-11-30T12:20:00.000Z", lastErrorAt: "2026-11-30T12:20:00.000Z" });
  });

  it("stops at the deadline itself, skips a parked page that is gone, and asks for the dead-letter hand-over only when something was refused", async () => {
    const { siem, set, progress, parking, now } = setup();
    siem.failure = new SinkError("down", 503);
    for (const n of [1, 2, 3]) await set.deliver(pageKey(n), [item(`p${n}`)], progress, {});
    siem.failure = undefined;
    expect(await set.drain(TENANT, progress, { ...drainOptions(), until: now() })).toEqual({ delivered: 0 });
    parking.blobs.delete(`${TENANT}/splunk/1`);
    siem.refuse.add("p3");
    const refusals: Refusal[][] = [];
    const saves = { count: 0 };
    expect(await set.drain(TENANT, progress, drainOptions(refusals, saves))).toEqual({ delivered: 2 });
    expect(siem.pages).toEqual([["p1"], ["p3"]]);
    expect(saves.count).toBe(3);
    expect(refusals.map((batch) => batch.map((r) => `${r.sink}:${r.key.pageFrom}:${r.version.alert.id}`))).toEqual([["splunk:2026-11-30T10:03:00.000Z:p3"]]);
    expect(progress["splunk"]).toMatchObject({ parkedFrom: 3, parkedTo: 3 });
    expect(progress["splunk"]).not.toHaveProperty("behindSince");
  });

  it("lets an error that is not a sink failure out of a delivery as it is, recording no sink error", async () => {
    const { siem, set, progress } = setup();
    const bug = new RangeError("a bug in the sink");
    siem.failure = bug;
    await expect(set.deliver(pageKey(1), [item("a")], progress, {})).rejects.toBe(bug);
    expect(progress["splunk"]).toEqual({ parkedFrom: 0, parkedTo: 0 });
  });

  it("lets an error that is not a sink failure out of a drain", async () => {
    const { siem, set, progress } = setup();
    siem.failure = new SinkError("down", 503);
    await set.deliver(pageKey(1), [item("a")], progress, {});
    siem.failure = new TypeError("a bug");
    await expect(set.drain(TENANT, progress, drainOptions())).rejects.toBeInstanceOf(TypeError);
    expect(progress["splunk"]).toMatchObject({ parkedFrom: 0, parkedTo: 1 });
  });

  it("is built for two sinks or more", () => {
    const parking = new MemoryParking();
    expect(() => new SinkSet([], parking, Date.now)).toThrow(new RangeError("SinkSet: a single sink is used directly, without parking"));
    expect(new SinkSet([{ name: "blob", sink: new ScriptedSink() }, { name: "splunk", sink: new ScriptedSink() }], parking, Date.now).sinks).toHaveLength(2);
  });

  it("everySink writes each sink in turn, names the sink of each refusal, and stops at the first failure", async () => {
    const first = new ScriptedSink();
    const second = new ScriptedSink();
    const all = everySink([{ name: "blob", sink: first }, { name: "sentinel", sink: second }]);
    expect(await all.write(pageKey(1), [item("a")])).toBeUndefined();
    second.refuse.add("b");
    expect(await all.write(pageKey(1), [item("b")])).toEqual({ refused: [{ alert: item("b").alert, reason: "oversized", detail: "too big", sink: "sentinel" }] });
    first.failure = new SinkError("down", 503);
    await expect(all.write(pageKey(1), [item("c")])).rejects.toThrow("down");
    expect(second.pages).toEqual([["a"], ["b"]]);
  });
});

describe("Sentinel settings: the edges", () => {
  const VALID = { SENTINEL_INGESTION_ENDPOINT: "https://dce.westeurope-1.ingest.monitor.azure.com", SENTINEL_DCR_IMMUTABLE_ID: `dcr-${"0123456789abcdef".repeat(2)}` };
  const problemsOf = (env: Record<string, string>): readonly string[] => {
    try {
      parseSentinelSettings({ ...VALID, ...env });
      return [];
    } catch (error) {
      if (!(error instanceof SentinelSettingsError)) throw error;
      expect(error.name).toBe("SentinelSettingsError");
      return error.problems;
    }
  };

  it("takes an immutable id in either case, exactly dcr- and 32 hex digits", () => {
    expect(parseSentinelSettings({ ...VALID, SENTINEL_DCR_IMMUTABLE_ID: ` DCR-${"0123456789ABCDEF".repeat(2)} ` }).dcrImmutableId).toBe(`DCR-${"0123456789ABCDEF".repeat(2)}`);
    for (const id of [`${VALID.SENTINEL_DCR_IMMUTABLE_ID}0`, `x${VALID.SENTINEL_DCR_IMMUTABLE_ID}`]) {
      expect(problemsOf({ SENTINEL_DCR_IMMUTABLE_ID: id })).toEqual([
        "SENTINEL_DCR_IMMUTABLE_ID must be dcr- and 32 hex digits (the DCR's properties.immutableId, not its resource id)",
      ]);
    }
  });

  it("takes a stream of Custom- and a letter, then up to 99 letters, digits, _ or -", () => {
    expect(parseSentinelSettings({ ...VALID, SENTINEL_STREAM_NAME: `Custom-a${"b_-9".repeat(24)}abc` }).streamName).toHaveLength(7 + 100);
    for (const stream of [`Custom-a${"b".repeat(100)}`, "Custom-1abc", "Custom-_abc", "Custom-abc!", "Custom-"]) {
      expect(problemsOf({ SENTINEL_STREAM_NAME: stream })).toEqual(["SENTINEL_STREAM_NAME must be Custom- followed by letters, digits, _ or - (at most 100)"]);
    }
    expect(problemsOf({ SENTINEL_STREAM_NAME: "custom-abc" })).toEqual(["SENTINEL_STREAM_NAME must start with Custom- (a custom stream of the DCR)"]);
  });

  it("refuses an endpoint with a user, a password or a fragment, each alone", () => {
    for (const endpoint of ["https://user@dce.example.com", "https://:pw@dce.example.com", "https://dce.example.com/#x", "https://dce.example.com?"]) {
      const problems = problemsOf({ SENTINEL_INGESTION_ENDPOINT: endpoint });
      if (endpoint.endsWith("?")) expect(problems).toEqual([]);
      else expect(problems).toEqual(["SENTINEL_INGESTION_ENDPOINT must not carry credentials, a query or a fragment"]);
    }
    expect(problemsOf({ SENTINEL_INGESTION_ENDPOINT: "http://dce.example.com/path" })).toEqual([
      "SENTINEL_INGESTION_ENDPOINT must use https",
      "SENTINEL_INGESTION_ENDPOINT must be the endpoint's origin only, without a path",
    ]);
    expect(problemsOf({ SENTINEL_INGESTION_ENDPOINT: "no url" })).toEqual(["SENTINEL_INGESTION_ENDPOINT must be an absolute https URL"]);
    expect(problemsOf({ SENTINEL_INGESTION_ENDPOINT: " " })).toEqual(["SENTINEL_INGESTION_ENDPOINT is required (the https logs-ingestion endpoint of the DCR or its data collection endpoint)"]);
    expect(problemsOf({ SENTINEL_DCR_IMMUTABLE_ID: " " })).toEqual(["SENTINEL_DCR_IMMUTABLE_ID is required (the DCR's immutableId, dcr- and 32 hex digits)"]);
    expect(() => parseSentinelSettings({})).toThrow(
      "Invalid Microsoft Sentinel settings:\n- SENTINEL_INGESTION_ENDPOINT is required (the https logs-ingestion endpoint of the DCR or its data collection endpoint)\n- SENTINEL_DCR_IMMUTABLE_ID is required (the DCR's immutableId, dcr- and 32 hex digits)",
    );
  });
});
