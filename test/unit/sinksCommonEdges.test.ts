/**
 * The sinks' common modules at their edges (issue 15, mutation testing), without the app: the blob
 * sink's exact bytes, names, refusals and messages against the run's Azurite and a scripted
 * storage endpoint, the lines it reads back on a resume, the evidence trimmer's separators, and
 * the limits of ALERT_SINKS and readSinkConfig.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { BlobServiceClient, ContainerClient } from "@azure/storage-blob";
import { describe, expect, inject, it } from "vitest";
import type { AlertBatchKey, AlertEnvelope } from "../../shared/sinks/alertSink";
import { BlobAlertSink, SinkError } from "../../shared/sinks/blobAlertSink";
import { BlobDeadLetterStore, DeadLetterError, type DeadLetter } from "../../shared/sinks/deadLetters";
import { envelopeLine, withoutEvidence } from "../../shared/sinks/envelope";
import { BlobParkingStore, ParkingError } from "../../shared/sinks/parking";
import { readSinkConfig } from "../../shared/sinks/sinkConfig";
import { parseAlertSinks } from "../../shared/sinks/sinkSettings";
import { canonicalTimestamp } from "../../shared/time/timestamps";
import { scriptedStorage } from "../harness/scriptedStorage";

const TENANT = "3c2d1e0f-4b5a-4978-8695-a4b3c2d1e0f9";
const KEY: AlertBatchKey = { tenantId: TENANT, pageFrom: "2025-03-04T05:06:07.089Z", pageTo: "2025-03-05T00:10:00.000Z", skip: 150 };
const freshContainer = () => BlobServiceClient.fromConnectionString(inject("storageConnectionString")).getContainerClient(`edge-${randomUUID().slice(0, 13)}`);

/** An alert version whose JSON is `json`, or a small object naming it. */
function version(id: string, lastUpdateTime: string, extra = ""): AlertEnvelope["alert"] {
  const canonical = canonicalTimestamp(lastUpdateTime);
  if (canonical === undefined) throw new Error(`not a timestamp: ${lastUpdateTime}`);
  return { id, lastUpdateTime, updatedAtKey: canonical.key, updatedAtMs: canonical.ms, json: `{"id":${JSON.stringify(id)},"lastUpdateTime":${JSON.stringify(lastUpdateTime)}${extra}}` };
}

function envelope(id: string, overrides: Partial<AlertEnvelope> = {}, extra = ""): AlertEnvelope {
  return { tenantId: TENANT, tenantName: "Contoso", source: "mde", pulledAt: "2025-03-05T00:15:00.000Z", alert: version(id, "2025-03-04T23:50:00.1234567Z", extra), ...overrides };
}

/** The NDJSON the sink must store for a batch: each envelope's line and a newline, nothing else. */
const expectedBytes = (batch: readonly AlertEnvelope[]) => Buffer.from(batch.map((e) => `${envelopeLine(e)}\n`).join(""), "utf8");

describe("blob sink: names and refused keys", () => {
  it("refuses a key that cannot name a blob with a message saying which part, before touching storage", async () => {
    const batch = [envelope("a")];
    const refusal = (key: AlertBatchKey) => {
      try {
        BlobAlertSink.blobNameFor(key, batch);
      } catch (error) {
        expect(error).toBeInstanceOf(SinkError);
        return (error as Error).message;
      }
      return "accepted";
    };
    expect(refusal({ ...KEY, tenantId: "../other" })).toBe("The batch's tenant id is not a valid tenant id");
    expect(refusal({ ...KEY, pageFrom: "later" })).toBe("The batch's page start is not a valid ISO-8601 timestamp");
    expect(refusal({ ...KEY, pageTo: "later" })).toBe("The batch's page end is not a valid ISO-8601 timestamp");
    for (const skip of [-1, 1.5, 1_000_000_000, Number.NaN]) expect(refusal({ ...KEY, skip })).toBe("The batch's skip must be an integer between 0 and 999999999");
    // The edges of skip are names of their own, nine digits wide.
    expect(BlobAlertSink.pagePrefix({ ...KEY, skip: 0 }).endsWith("Z_000000000_")).toBe(true);
    expect(BlobAlertSink.pagePrefix({ ...KEY, skip: 999_999_999 }).endsWith("Z_999999999_")).toBe(true);

    // The write refuses it too, and nothing is created.
    const container = freshContainer();
    await expect(new BlobAlertSink(container).write({ ...KEY, tenantId: "a/b" }, batch)).rejects.toThrow(new SinkError("The batch's tenant id is not a valid tenant id"));
    expect(await container.exists()).toBe(false);
  });

  it("takes a tenant id of 1 to 64 letters, digits and hyphens that starts with a letter or digit, in any case", () => {
    const accepted = (tenantId: string) => {
      try {
        return BlobAlertSink.boundsPrefix({ ...KEY, tenantId }).startsWith(`${tenantId}/2025/03/05/`);
      } catch {
        return false;
      }
    };
    for (const tenantId of ["a", "Z", "7", "A-b", "aB-9", "Contoso-EAST-01", "a".repeat(64), `Z${"-".repeat(63)}`]) expect(accepted(tenantId), tenantId).toBe(true);
    for (const tenantId of ["", "-a", "a_b", "a.b", "a b", "a".repeat(65), "é", "aé", "a\n"]) expect(accepted(tenantId), JSON.stringify(tenantId)).toBe(false);
  });

  it("applies the same tenant rule to dead letters and parked pages", () => {
    const letter = { reason: "invalid_json" as const, raw: "x" };
    for (const tenantId of ["a", "Z", "A-b", "Contoso-EAST-01", "a".repeat(64)]) {
      expect(BlobDeadLetterStore.nameFor({ ...letter, tenantId }).startsWith(`${tenantId}/invalid_json_`)).toBe(true);
    }
    for (const tenantId of ["-a", "a_b", "a.b", "é", "a\n", "a".repeat(65)]) {
      expect(() => BlobDeadLetterStore.nameFor({ ...letter, tenantId })).toThrow(DeadLetterError);
    }
  });
});

describe("blob sink: the bytes it stores", () => {
  it("stores exactly one line per envelope, each with its own envelope, tenant id included", async () => {
    const container = freshContainer();
    const batch = [
      envelope("a"),
      envelope("b", { tenantId: "other-tenant" }),
      envelope("c", { tenantId: "other-tenant", tenantName: "Fabrikam ✓" }),
      envelope("d", { tenantId: TENANT, source: "graph" }),
      envelope("e", { pulledAt: "2025-03-05T00:16:00.000Z" }, ',"title":"東京 🛡"'),
    ];
    await new BlobAlertSink(container).write(KEY, batch);
    const stored = await container.getBlobClient(BlobAlertSink.blobNameFor(KEY, batch)).downloadToBuffer();
    expect(stored.toString("utf8")).toBe(expectedBytes(batch).toString("utf8"));
    expect(stored.equals(expectedBytes(batch))).toBe(true);
  });

  it("stores the exact bytes of batches just under, at and over one stream chunk (1 MiB), lines larger than a chunk included", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    const CHUNK = 1024 * 1024;
    /** `count` envelopes whose NDJSON is exactly `total` bytes (the last one padded). */
    const sized = (tag: string, count: number, total: number, each = 100): AlertEnvelope[] => {
      const batch = Array.from({ length: count }, (_, i) => envelope(`${tag}-${i}`, {}, `,"pad":"${"p".repeat(each)}"`));
      const short = total - expectedBytes(batch).length;
      if (short < 0) throw new Error("the batch is already larger than wanted");
      batch[count - 1] = envelope(`${tag}-${count - 1}`, {}, `,"pad":"${"p".repeat(each + short)}"`);
      expect(expectedBytes(batch).length).toBe(total);
      return batch;
    };
    const cases: Array<[string, AlertEnvelope[]]> = [
      ["under", sized("under", 3, CHUNK - 1)],
      ["at", sized("at", 3, CHUNK)],
      ["over", sized("over", 3, CHUNK + 1)],
      // Lines that fill a chunk exactly, then a line larger than a chunk, then small ones.
      ["fill", [...sized("fill", 2, CHUNK), ...sized("huge", 1, CHUNK + 4321), ...sized("tail", 4, 2000)]],
      // Many small lines across several chunks, none of them ending at a chunk's end.
      ["many", sized("many", 2500, 3 * CHUNK + 777, 1000)],
    ];
    for (const [tag, batch] of cases) {
      const key = { ...KEY, skip: cases.findIndex(([t]) => t === tag) };
      await sink.write(key, batch);
      const stored = await container.getBlobClient(BlobAlertSink.blobNameFor(key, batch)).downloadToBuffer();
      expect(stored.length, tag).toBe(expectedBytes(batch).length);
      expect(stored.equals(expectedBytes(batch)), tag).toBe(true);
    }
  });
});

describe("blob sink: reading earlier attempts back", () => {
  it("counts only lines it wrote: a string id and a valid version time, Graph's lastUpdateDateTime for Graph", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    await sink.write(KEY, [envelope("mine")]);
    const lines = [
      "not json",
      "null",
      "42",
      "{}",
      '{"alert":null}',
      '{"alert":{"id":7,"lastUpdateTime":"2025-03-04T23:00:00Z"}}',
      '{"alert":{"id":"no-time"}}',
      '{"alert":{"id":"numeric-time","lastUpdateTime":1741129200000}}',
      '{"alert":{"id":"bad-time","lastUpdateTime":"soon"}}',
      '{"source":"graph","alert":{"id":"graph-old-field","lastUpdateTime":"2025-03-04T23:00:00Z"}}',
      '{"source":"graph","alert":{"id":"graph","lastUpdateDateTime":"2025-03-04T23:01:00Z","lastUpdateTime":"2025-03-04T22:00:00Z"}}',
      '{"source":"mde","alert":{"id":"mde","lastUpdateTime":"2025-03-04T23:02:00Z","lastUpdateDateTime":"2025-03-04T22:00:00Z"}}',
      '{"alert":{"id":"no-source","lastUpdateTime":"2025-03-04T23:03:00+01:00"}}',
      "",
    ].join("\n");
    // Another writer's blob under the same bounds (another skip), as an operator's copy might be.
    await container.getBlockBlobClient(`${BlobAlertSink.boundsPrefix(KEY)}000000007_foreign.ndjson`).upload(lines, Buffer.byteLength(lines));
    const listed = (await sink.storedVersions(KEY)).map((v) => `${v.id}@${v.updatedAtKey}@${v.updatedAtMs}`).sort();
    expect(listed).toEqual(
      [
        `graph@2025-03-04T23:01:00.0000000Z@${Date.parse("2025-03-04T23:01:00Z")}`,
        `mde@2025-03-04T23:02:00.0000000Z@${Date.parse("2025-03-04T23:02:00Z")}`,
        `mine@2025-03-04T23:50:00.1234567Z@${Date.parse("2025-03-04T23:50:00.123Z")}`,
        `no-source@2025-03-04T22:03:00.0000000Z@${Date.parse("2025-03-04T22:03:00Z")}`,
      ].sort(),
    );
    // A resumed page leaves out the versions read back, and stores the rest.
    await sink.write({ ...KEY, resumed: true }, [envelope("mine"), envelope("graph", { source: "graph", alert: version("graph", "2025-03-04T23:01:00Z") }), envelope("new")]);
    const names = [];
    for await (const blob of container.listBlobsFlat()) names.push(blob.name);
    const added = [envelope("new")];
    expect(names.sort()).toEqual([BlobAlertSink.blobNameFor(KEY, [envelope("mine")]), `${BlobAlertSink.boundsPrefix(KEY)}000000007_foreign.ndjson`, BlobAlertSink.blobNameFor(KEY, added)].sort());
    expect((await container.getBlobClient(BlobAlertSink.blobNameFor(KEY, added)).downloadToBuffer()).equals(expectedBytes(added))).toBe(true);
  });

  it("says which step failed: creating the container, listing, uploading, with the status or that no answer came", async () => {
    // Upper case is no valid container name: Azurite answers 400, and the listing says the creation failed.
    const invalid = new BlobAlertSink(BlobServiceClient.fromConnectionString(inject("storageConnectionString")).getContainerClient("Not_A_Valid_Name"));
    await expect(invalid.storedVersions(KEY)).rejects.toThrow(new SinkError("Creating the alerts container failed (HTTP 400)", 400));
    await expect(invalid.storedVersions(KEY)).rejects.toMatchObject({ status: 400 });

    const storage = await scriptedStorage((req) => ((req.url ?? "").includes("restype=container") && req.method === "PUT" ? { status: 201 } : { status: 403, headers: { "x-ms-error-code": "AuthorizationFailure" } }));
    try {
      const sink = new BlobAlertSink(storage.container);
      await expect(sink.storedVersions(KEY)).rejects.toThrow(new SinkError("Reading earlier attempts of the page failed (HTTP 403)", 403));
      await expect(sink.storedVersions(KEY)).rejects.toMatchObject({ status: 403 });
      await expect(sink.write(KEY, [envelope("a")])).rejects.toThrow(new SinkError("Uploading the alert batch failed (HTTP 403)", 403));
      await expect(sink.write(KEY, [envelope("a")])).rejects.toMatchObject({ status: 403 });
      await expect(sink.write({ ...KEY, resumed: true }, [envelope("a")])).rejects.toThrow("Reading earlier attempts of the page failed (HTTP 403)");
      // The container was created once; nothing else succeeded.
      expect(storage.requests.filter((r) => r.method === "PUT" && r.query.includes("restype=container"))).toHaveLength(1);
    } finally {
      await storage.close();
    }

    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    await sink.write(KEY, [envelope("a")]);
    const aborted = AbortSignal.abort();
    await expect(sink.storedVersions(KEY, { signal: aborted })).rejects.toThrow(new SinkError("Reading earlier attempts of the page failed (no HTTP response)"));
    await expect(sink.write({ ...KEY, skip: 1 }, [envelope("b")], { signal: aborted })).rejects.toThrow(new SinkError("Uploading the alert batch failed (no HTTP response)"));
  });

  it("gives up an upload on its own timeout when the caller's signal never fires", async () => {
    // The container exists at once; the upload is never answered.
    const server = createServer((req, res) => {
      req.resume();
      if ((req.url ?? "").includes("restype=container")) req.on("end", () => res.writeHead(201, { "content-length": "0" }).end());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const sink = new BlobAlertSink(new ContainerClient(`http://127.0.0.1:${port}/devstoreaccount1/scripted`), 300);
      const started = Date.now();
      await expect(sink.write(KEY, [envelope("a")], { signal: new AbortController().signal })).rejects.toThrow(new SinkError("Uploading the alert batch failed (no HTTP response)"));
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("withoutEvidence: where a member ends", () => {
  it.each([
    // A scalar as the last member ends at the object's brace.
    ['{"id":"a","evidence":null}', '{"id":"a"}'],
    ['{"id":"a","evidence":12}', '{"id":"a"}'],
    ['{"id":"a","evidence":true }', '{"id":"a" }'],
    // A scalar ends at a comma or at any JSON whitespace.
    ['{"n":1,"evidence":[]}', '{"n":1}'],
    ['{"n":1 ,"evidence":[]}', '{"n":1}'],
    ['{"n":1\t,"evidence":[]}', '{"n":1}'],
    ['{"n":1\n,"evidence":[]}', '{"n":1}'],
    ['{"n":1\r,"evidence":[]}', '{"n":1}'],
    // Commas inside an array or object are not the member's end.
    ['{"a":[1,2],"evidence":0,"b":{"c":1,"d":[3,{"e":4}]}}', '{"a":[1,2],"b":{"c":1,"d":[3,{"e":4}]}}'],
    ['{"a":{"b":[1,{"c":2}],"d":3},"evidence":[{"x":[1,2]},{"y":{}}],"z":1}', '{"a":{"b":[1,{"c":2}],"d":3},"z":1}'],
    // A first member takes the comma and the space after it.
    ['{"evidence":[1], "id":"a"}', '{"id":"a"}'],
    ['{"evidence":[1] ,\t"id":"a"}', '{"id":"a"}'],
    ['{ "evidence" : "x\\\\" , "id":"a"}', '{"id":"a"}'],
    // Backslashes inside strings, an escaped backslash before the closing quote.
    ['{"t":"a\\\\","evidence":"\\"}","u":"\\\\\\""}', '{"t":"a\\\\","u":"\\\\\\""}'],
  ])("drops the evidence of %j", (json, expected) => {
    expect(withoutEvidence(json)).toBe(expected);
    expect(JSON.parse(expected)).toEqual(Object.fromEntries(Object.entries(JSON.parse(json) as object).filter(([k]) => k !== "evidence")));
  });

  it("finds no evidence in what is not an object, nor after a member it cannot follow", () => {
    expect(withoutEvidence('["evidence",1]')).toBeUndefined();
    expect(withoutEvidence('"evidence"')).toBeUndefined();
    expect(withoutEvidence(' {"id":"a","nested":[{"evidence":1}]} ')).toBeUndefined();
    expect(withoutEvidence('{"id":"a","evidenceX":1,"xevidence":2}')).toBeUndefined();
  });
});

describe("ALERT_SINKS and readSinkConfig: the limits", () => {
  it("takes a value of up to 200 characters after trimming, and refuses one of 201", () => {
    const ofLength = (n: number) => `blob,${" ".repeat(n - 9)}blob`;
    expect(ofLength(200)).toHaveLength(200);
    expect(parseAlertSinks(ofLength(200))).toEqual(["blob"]);
    expect(parseAlertSinks(`  ${ofLength(200)}  `)).toEqual(["blob"]);
    expect(() => parseAlertSinks(ofLength(201))).toThrow(new Error("ALERT_SINKS is longer than any list of the known sinks"));
  });

  it("refuses an empty name or an unknown one with the list of known sinks", () => {
    for (const value of ["blob,", ",blob", "blob,,splunk", "Elastic", "blob, splunk ,x"]) {
      expect(() => parseAlertSinks(value)).toThrow(new Error("ALERT_SINKS must list some of blob, sentinel, splunk, eventhubs, separated by commas"));
    }
    expect(parseAlertSinks("EVENTHUBS,Sentinel")).toEqual(["sentinel", "eventhubs"]);
  });

  it("holds no settings for a chosen sink whose settings were refused, each problem listed once", () => {
    for (const name of ["sentinel", "splunk", "eventhubs"]) {
      const { sinks, problems } = readSinkConfig({ ALERT_SINKS: `blob,${name}` });
      expect(sinks, name).toStrictEqual({ names: ["blob", name] });
      expect(problems.length, name).toBeGreaterThan(0);
      expect(new Set(problems).size, name).toBe(problems.length);
    }
  });
});

describe("dead letters and parked pages: bounds and listings", () => {
  const letter = (tenantId: string): DeadLetter => ({
    tenantId,
    source: "mde",
    reason: "missing_id",
    window: { from: "2026-11-30T04:00:00.000Z", to: "2026-11-30T05:00:00.000Z" },
    page: { from: "2026-11-30T04:10:00.000Z", to: "2026-11-30T04:20:00.000Z", skip: 0 },
    raw: `{"x":"${randomUUID()}"}`,
    at: "2026-11-30T05:00:01.000Z",
  });

  it("gives up each dead-letter call on the store's own timeout, saying no answer came", async () => {
    // Every answer takes two seconds (the container's creation excepted); the store waits 200 ms.
    const storage = await scriptedStorage(
      (req) => (req.method === "GET" && (req.url ?? "").includes("restype=container") && !(req.url ?? "").includes("comp=list") ? { status: 404, headers: { "x-ms-error-code": "ContainerNotFound" } } : { status: req.method === "DELETE" ? 202 : 201 }),
      (req) => (req.method === "PUT" && (req.url ?? "").includes("restype=container") ? 0 : 2_000),
    );
    try {
      const store = new BlobDeadLetterStore(storage.container, 200);
      const started = Date.now();
      await expect(store.list(TENANT)).rejects.toThrow(new DeadLetterError("Listing dead letters failed (no HTTP response)"));
      await expect(store.read(`${TENANT}/x.json`)).rejects.toThrow(new DeadLetterError("Reading a dead letter failed (no HTTP response)"));
      await expect(store.remove(`${TENANT}/x.json`)).rejects.toThrow(new DeadLetterError("Removing a dead letter failed (no HTTP response)"));
      await expect(store.write(letter(TENANT))).rejects.toThrow(new DeadLetterError("Storing a dead letter failed (no HTTP response)"));
      expect(Date.now() - started).toBeLessThan(1_900);
    } finally {
      await storage.close();
    }
  });

  it("gives up removing a tenant's parked pages within four times the store's timeout, whichever call hangs", async () => {
    const listing = `<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="scripted"><Blobs><Blob><Name>${TENANT}/splunk/000000000000.json</Name><Properties><BlobType>BlockBlob</BlobType></Properties></Blob></Blobs><NextMarker/></EnumerationResults>`;
    const isExists = (req: IncomingMessage) => req.method === "GET" && (req.url ?? "").includes("restype=container") && !(req.url ?? "").includes("comp=list");
    // First the existence check hangs (and would say 404), then the delete of the one page (and would say 202).
    for (const hangs of ["exists", "delete"] as const) {
      const storage = await scriptedStorage(
        (req) => (isExists(req) ? { status: hangs === "exists" ? 404 : 200 } : req.method === "DELETE" ? { status: 202 } : { status: 200, headers: { "content-type": "application/xml" }, body: listing }),
        (req) => ((hangs === "exists" && isExists(req)) || (hangs === "delete" && req.method === "DELETE") ? 3_000 : 0),
      );
      try {
        const started = Date.now();
        const error = await new BlobParkingStore(storage.container, 200).removeAll(TENANT).catch((e: unknown) => e);
        expect(error, hangs).toEqual(new ParkingError("Removing a tenant's parked pages failed (no HTTP response)"));
        expect(error, hangs).toMatchObject({ name: "ParkingError" });
        expect(Date.now() - started, hangs).toBeLessThan(2_500);
      } finally {
        await storage.close();
      }
    }
  });

  it("gives up removing a parked page when the caller's signal fires", async () => {
    const container = freshContainer();
    const store = new BlobParkingStore(container);
    await store.park("splunk", TENANT, 3, { key: KEY, envelopes: [] });
    await expect(store.remove("splunk", TENANT, 3, { signal: AbortSignal.abort() })).rejects.toThrow(new ParkingError("Removing a delivered parked page failed (no HTTP response)"));
    expect(await store.read("splunk", TENANT, 3)).toEqual({ key: KEY, envelopes: [] });
  });

  it("neither lists nor removes anything for a tenant id it would never write, even when blobs sit under that prefix", async () => {
    const container = freshContainer();
    await container.createIfNotExists();
    for (const name of ["a.b/missing_id_0011.json", "a.b/splunk/000000000000.json"]) await container.getBlockBlobClient(name).upload("{}", 2);
    expect(await new BlobDeadLetterStore(container).list("a.b")).toEqual([]);
    await new BlobParkingStore(container).removeAll("a.b");
    const names: string[] = [];
    for await (const blob of container.listBlobsFlat()) names.push(blob.name);
    expect(names.sort()).toEqual(["a.b/missing_id_0011.json", "a.b/splunk/000000000000.json"]);
    // A valid one-letter tenant is listed and removed.
    await new BlobDeadLetterStore(container).write(letter("a"));
    expect((await new BlobDeadLetterStore(container).list("a")).map((info) => info.reason)).toEqual(["missing_id"]);
    await new BlobParkingStore(container).park("splunk", "a", 0, { key: KEY, envelopes: [] });
    await new BlobParkingStore(container).removeAll("a");
    expect(await new BlobParkingStore(container).read("splunk", "a", 0)).toBeUndefined();
  });

  it("lists a letter whose listing carries no size or creation time as 0 bytes, stored at null, with the metadata's reason", async () => {
    const listing =
      '<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1/devstoreaccount1/" ContainerName="scripted">' +
      `<Prefix>${TENANT}/</Prefix><Blobs><Blob><Name>${TENANT}/renamed_0011.json</Name><Properties><BlobType>BlockBlob</BlobType></Properties>` +
      "<Metadata><reason>missing_id</reason><skip>4</skip></Metadata></Blob></Blobs><NextMarker/></EnumerationResults>";
    const storage = await scriptedStorage((req) => ((req.url ?? "").includes("comp=list") ? { status: 200, headers: { "content-type": "application/xml" }, body: listing } : { status: 200 }));
    try {
      expect(await new BlobDeadLetterStore(storage.container).list(TENANT)).toEqual([
        // The reason is the metadata's, whatever the name says.
        { name: `${TENANT}/renamed_0011.json`, reason: "missing_id", pageFrom: "", pageTo: "", skip: 4, sizeBytes: 0, storedAt: null },
      ]);
    } finally {
      await storage.close();
    }
  });
});

describe("creating a container that storage never answers", () => {
  it("is given up on the store's own timeout by the blob sink, the dead-letter and the parking store", async () => {
    // The container's creation takes three seconds; each store waits 200 ms.
    const storage = await scriptedStorage(
      () => ({ status: 201 }),
      (req) => (req.method === "PUT" && (req.url ?? "").includes("restype=container") ? 3_000 : 0),
    );
    try {
      const letter: DeadLetter = {
        tenantId: TENANT,
        source: "mde",
        reason: "missing_id",
        window: { from: "2026-11-30T04:00:00.000Z", to: "2026-11-30T05:00:00.000Z" },
        page: { from: "2026-11-30T04:10:00.000Z", to: "2026-11-30T04:20:00.000Z", skip: 0 },
        raw: "{}",
        at: "2026-11-30T05:00:01.000Z",
      };
      const calls: Array<[() => Promise<unknown>, Error]> = [
        [() => new BlobAlertSink(storage.container, 200).write(KEY, [envelope("a")], { signal: new AbortController().signal }), new SinkError("Creating the alerts container failed (no HTTP response)")],
        [() => new BlobDeadLetterStore(storage.container, 200).write(letter), new DeadLetterError("Creating the dead-letter container failed (no HTTP response)")],
        [() => new BlobParkingStore(storage.container, 200).park("splunk", TENANT, 0, { key: KEY, envelopes: [envelope("a")] }), new ParkingError("Creating the parked-pages container failed (no HTTP response)")],
      ];
      for (const [call, expected] of calls) {
        const started = Date.now();
        await expect(call()).rejects.toThrow(expected);
        expect(Date.now() - started).toBeLessThan(1_900);
      }
    } finally {
      await storage.close();
    }
  });
});
