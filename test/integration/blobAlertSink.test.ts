import { createHash, randomUUID } from "node:crypto";
import { createServer, request as httpRequest, type IncomingMessage } from "node:http";
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { describe, expect, inject, it } from "vitest";
import { canonicalTimestamp } from "../../shared/time/timestamps";
import type { AlertBatchKey, AlertEnvelope } from "../../shared/sinks/alertSink";
import { BlobAlertSink, SinkError } from "../../shared/sinks/blobAlertSink";
import { largeBufferPool } from "../../shared/http/bufferPool";
import { createHttpClient } from "../../shared/http/httpClient";
import { makeAlert } from "../fakes/alerts";
import { scriptedStorage } from "../harness/scriptedStorage";

const TENANT = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

function freshContainer(): ContainerClient {
  const conn = inject("storageConnectionString");
  return BlobServiceClient.fromConnectionString(conn).getContainerClient(`sink-${randomUUID().slice(0, 13)}`);
}

/** An alert as the Defender client hands it over: the fields it decides on plus the raw JSON. */
function raw(alert: { id: string; lastUpdateTime: string }): AlertEnvelope["alert"] {
  const canonical = canonicalTimestamp(alert.lastUpdateTime);
  if (canonical === undefined) throw new Error(`not a timestamp: ${alert.lastUpdateTime}`);
  return { id: alert.id, lastUpdateTime: alert.lastUpdateTime, updatedAtKey: canonical.key, updatedAtMs: canonical.ms, json: JSON.stringify(alert) };
}

interface StoredLine {
  tenantId: string;
  tenantName: string;
  source: string;
  pulledAt: string;
  alert: { id: string; lastUpdateTime: string };
}

function envelope(id: string, lastUpdateTime: string, pulledAt = "2025-03-05T00:15:00.000Z"): AlertEnvelope {
  return { tenantId: TENANT, tenantName: 'Contoso "East"\nLtd', source: "mde", pulledAt, alert: raw(makeAlert({ id, lastUpdateTime })) };
}

function envelopes(count: number, tag = "v1"): AlertEnvelope[] {
  return Array.from({ length: count }, (_, i) => envelope(`da-${tag}-${i}`, `2025-03-04T23:5${i % 10}:00.1234567Z`));
}

async function blobNames(container: ContainerClient): Promise<string[]> {
  const names: string[] = [];
  for await (const blob of container.listBlobsFlat()) names.push(blob.name);
  return names;
}

async function readLines(container: ContainerClient, name: string): Promise<string[]> {
  return (await container.getBlobClient(name).downloadToBuffer()).toString("utf8").split("\n");
}

/** Every stored record in the container, as `id@lastUpdateTime`, sorted. */
async function storedVersions(container: ContainerClient): Promise<string[]> {
  const versions: string[] = [];
  for (const name of await blobNames(container)) {
    for (const line of (await readLines(container, name)).filter(Boolean)) {
      const { alert } = JSON.parse(line) as StoredLine;
      versions.push(`${alert.id}@${alert.lastUpdateTime}`);
    }
  }
  return versions.sort();
}

const versionsOf = (batch: readonly AlertEnvelope[]): string[] => batch.map((e) => `${e.alert.id}@${e.alert.lastUpdateTime}`).sort();

const BATCH = envelopes(3);
const KEY: AlertBatchKey = { tenantId: TENANT, pageFrom: "2025-03-04T05:06:07.089Z", pageTo: "2025-03-05T00:10:00.000Z", skip: 150 };

describe("BlobAlertSink names", () => {
  it("names blobs deterministically by tenant, page end date, page bounds, skip and content", () => {
    expect(BlobAlertSink.blobNameFor(KEY, BATCH)).toMatch(
      new RegExp(`^${TENANT}/2025/03/05/20250304T0506070890000Z_20250305T0010000000000Z_000000150_[0-9a-f]{12}\\.ndjson$`),
    );
    expect(BlobAlertSink.blobNameFor(KEY, envelopes(3))).toBe(BlobAlertSink.blobNameFor(KEY, BATCH));
    expect(BlobAlertSink.blobNameFor(KEY, envelopes(2))).not.toBe(BlobAlertSink.blobNameFor(KEY, BATCH));
    // The tag is the one earlier versions wrote (an upgrade mid-page must not rename a retried
    // page): SHA-256 over "id\nupdatedAtKey\n" per alert, in order, first 12 hex digits.
    const versions = createHash("sha256");
    for (const { alert } of BATCH) versions.update(`${alert.id}\n${alert.updatedAtKey}\n`);
    expect(BlobAlertSink.blobNameFor(KEY, BATCH)).toBe(`${BlobAlertSink.pagePrefix(KEY)}${versions.digest("hex").slice(0, 12)}.ndjson`);
    expect(BlobAlertSink.blobNameFor(KEY, [...BATCH].reverse())).not.toBe(BlobAlertSink.blobNameFor(KEY, BATCH));
    // Every attempt of one page shares the prefix; only the content tag differs.
    expect(BlobAlertSink.pagePrefix(KEY)).toBe(`${TENANT}/2025/03/05/20250304T0506070890000Z_20250305T0010000000000Z_000000150_`);
    expect(BlobAlertSink.blobNameFor(KEY, envelopes(2)).startsWith(BlobAlertSink.pagePrefix(KEY))).toBe(true);
    // `resumed` says how to write, not which page: it does not enter the name.
    expect(BlobAlertSink.blobNameFor({ ...KEY, resumed: true }, BATCH)).toBe(BlobAlertSink.blobNameFor(KEY, BATCH));
    // Bounds that differ below a millisecond still get distinct names.
    const a = BlobAlertSink.blobNameFor({ ...KEY, pageFrom: "2025-03-04T05:06:07.0891Z" }, BATCH);
    expect(a).not.toBe(BlobAlertSink.blobNameFor(KEY, BATCH));
    // An offset names the same instant as its Z form.
    expect(BlobAlertSink.blobNameFor({ ...KEY, pageTo: "2025-03-05T01:10:00.000+01:00" }, BATCH)).toBe(BlobAlertSink.blobNameFor(KEY, BATCH));
    // Names sort by page, then by skip.
    const names = [
      BlobAlertSink.blobNameFor({ ...KEY, skip: 1000 }, BATCH),
      BlobAlertSink.blobNameFor({ ...KEY, skip: 50 }, BATCH),
      BlobAlertSink.blobNameFor({ ...KEY, pageFrom: "2025-03-03T23:00:00Z", pageTo: "2025-03-04T23:59:59.999Z", skip: 9 }, BATCH),
    ];
    expect([...names].sort()).toEqual([names[2], names[1], names[0]]);
    // The date folder is the page end's (UTC).
    expect(BlobAlertSink.blobNameFor({ ...KEY, pageFrom: "2025-03-04T23:59:59.000Z", pageTo: "2025-03-05T00:00:00.001Z" }, BATCH)).toMatch(
      new RegExp(`^${TENANT}/2025/03/05/`),
    );
  });

  it("refuses keys that could not name a blob safely", () => {
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, tenantId: "../other" }, BATCH)).toThrow(SinkError);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, tenantId: "a/b" }, BATCH)).toThrow(SinkError);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, pageTo: "later" }, BATCH)).toThrow(SinkError);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, skip: -1 }, BATCH)).toThrow(SinkError);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, skip: 1.5 }, BATCH)).toThrow(SinkError);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, skip: 1_000_000_000 }, BATCH)).toThrow(SinkError);
  });

  it("refuses a page bound that is no real date", () => {
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, pageTo: "2025-13-01T00:00:00Z" }, BATCH)).toThrow(SinkError);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, pageFrom: "2025-02-30T24:61:00Z" }, BATCH)).toThrow(SinkError);
  });
});

describe("BlobAlertSink", () => {
  it("writes one NDJSON line per envelope, creating the container on first use", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    const batch = BATCH;
    await sink.write(KEY, batch);

    expect(await blobNames(container)).toEqual([BlobAlertSink.blobNameFor(KEY, BATCH)]);
    const blob = container.getBlobClient(BlobAlertSink.blobNameFor(KEY, BATCH));
    expect((await blob.getProperties()).contentType).toBe("application/x-ndjson");
    const lines = await readLines(container, BlobAlertSink.blobNameFor(KEY, BATCH));
    // Every line ends in "\n": three records and the empty rest after the last newline.
    expect(lines).toHaveLength(4);
    expect(lines[3]).toBe("");
    const parsed = lines.slice(0, 3).map((line) => JSON.parse(line) as StoredLine);
    expect(parsed).toEqual(
      batch.map((e) => ({ tenantId: e.tenantId, tenantName: e.tenantName, source: e.source, pulledAt: e.pulledAt, alert: JSON.parse(e.alert.json) as unknown })),
    );
    expect(Object.keys(parsed[0] ?? {})).toEqual(["tenantId", "tenantName", "source", "pulledAt", "alert"]);
    // Sub-millisecond timestamps survive untouched, and the alert is stored exactly as received.
    expect(parsed[0]?.alert.lastUpdateTime).toBe("2025-03-04T23:50:00.1234567Z");
    expect(lines[0]?.endsWith(`"alert":${batch[0]?.alert.json}}`)).toBe(true);
  });


  it("writes each line with its own envelope when the envelopes of one batch differ, multi-byte text included", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    // A re-drive batch mixes pull times; names and alert text may hold any Unicode.
    const base = envelopes(4, "mixed");
    const accented = { ...makeAlert({ id: "da-mixed-3", lastUpdateTime: "2025-03-04T23:53:00.1234567Z" }), title: "Fichier suspect ✓ 🛡" };
    const batch: AlertEnvelope[] = [
      { ...base[0]!, tenantName: "Société Générale – Ost 東" },
      { ...base[1]!, tenantName: "Société Générale – Ost 東" },
      { ...base[2]!, tenantName: "Société Générale – Ost 東", pulledAt: "2025-03-05T00:20:00.000Z" },
      { ...base[3]!, source: "graph", alert: raw(accented) },
    ];
    await sink.write(KEY, batch);

    const lines = await readLines(container, BlobAlertSink.blobNameFor(KEY, batch));
    expect(lines).toHaveLength(5);
    expect(lines.slice(0, 4).map((line) => JSON.parse(line) as StoredLine)).toEqual(
      batch.map((e) => ({ tenantId: e.tenantId, tenantName: e.tenantName, source: e.source, pulledAt: e.pulledAt, alert: JSON.parse(e.alert.json) as unknown })),
    );
  });
  it("sends a large page whole, and whole again when the service fails the first upload", async () => {
    // A proxy in front of Azurite that answers the first upload 503 once it has read its body.
    const conn = inject("storageConnectionString");
    const blobUrl = new URL(/BlobEndpoint=([^;]+)/.exec(conn)?.[1] ?? "");
    const uploads: number[] = [];
    const proxy = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        const isUpload = req.method === "PUT" && (req.url ?? "").includes(".ndjson");
        if (isUpload) uploads.push(body.length);
        if (isUpload && uploads.length === 1) {
          res.writeHead(503, { "x-ms-error-code": "ServerBusy" }).end();
          return;
        }
        const forward = httpRequest(
          { host: blobUrl.hostname, port: blobUrl.port, method: req.method, path: req.url, headers: req.headers },
          (answer: IncomingMessage) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            answer.pipe(res);
          },
        );
        forward.end(body);
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    try {
      const port = (proxy.address() as { port: number }).port;
      const proxied = conn.replace(/BlobEndpoint=[^;]+/, `BlobEndpoint=http://127.0.0.1:${port}${blobUrl.pathname}`);
      const container = BlobServiceClient.fromConnectionString(proxied, { retryOptions: { retryDelayInMs: 5, maxRetryDelayInMs: 5 } }).getContainerClient(
        `sink-${randomUUID().slice(0, 13)}`,
      );
      // About 3 MB, one alert of 1.5 MB among them.
      const batch = envelopes(600, "big").map((e, i) => ({
        ...e,
        alert: raw({ ...JSON.parse(e.alert.json), notes: (i === 300 ? "x".repeat(1_500_000) : "y".repeat(2_500)) + " ✓" } as { id: string; lastUpdateTime: string }),
      }));
      await new BlobAlertSink(container).write(KEY, batch);

      const expected = batch.reduce((n, e) => n + Buffer.byteLength(JSON.stringify({ tenantId: e.tenantId, tenantName: e.tenantName, source: e.source, pulledAt: e.pulledAt }), "utf8") - 1 + Buffer.byteLength(`,"alert":${e.alert.json}}\n`, "utf8"), 0);
      expect(uploads).toEqual([expected, expected]);
      const lines = await readLines(container, BlobAlertSink.blobNameFor(KEY, batch));
      expect(lines).toHaveLength(601);
      expect(lines.slice(0, 600).map((line) => (JSON.parse(line) as { alert: unknown }).alert)).toEqual(batch.map((e) => JSON.parse(e.alert.json) as unknown));
    } finally {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  it("stores each large page's own lines when one sink writes several side by side and in turn", async () => {
    // The sink reuses a page's chunks for the next page once its upload succeeded: no page may
    // carry another's bytes, whether uploads overlap, follow each other or shrink.
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    const page = (tag: string, count: number): AlertEnvelope[] =>
      envelopes(count, tag).map((e) => ({ ...e, alert: raw({ ...JSON.parse(e.alert.json), notes: `${tag}-`.repeat(800) } as { id: string; lastUpdateTime: string }) }));
    const pages = [page("a", 900), page("b", 700), page("c", 1_000), page("d", 900), page("e", 400)];
    const keyOf = (i: number): AlertBatchKey => ({ ...KEY, skip: i * 1_000 });
    await Promise.all(pages.slice(0, 3).map((batch, i) => sink.write(keyOf(i), batch)));
    await sink.write(keyOf(3), pages[3] ?? []);
    await sink.write(keyOf(4), pages[4] ?? []);
    for (const [i, batch] of pages.entries()) {
      const lines = (await readLines(container, BlobAlertSink.blobNameFor(keyOf(i), batch))).filter(Boolean);
      expect(lines.map((line) => (JSON.parse(line) as { alert: unknown }).alert), `page ${i}`).toEqual(batch.map((e) => JSON.parse(e.alert.json) as unknown));
    }
  });

  it("writes a large page's NDJSON into the buffer the HTTP client read a page into, and keeps none of a failed upload", async () => {
    // The pool the app shares between its HTTP client and this sink: after a page is read and
    // its NDJSON written, it holds one buffer, not one of each (a 10,000-alert page: ~27 MB less).
    const buffers = largeBufferPool();
    const body = Buffer.from(`[${'"x",'.repeat(600_000)}"x"]`);
    const server = createServer((_req, res) => res.writeHead(200, { "content-type": "application/json", "content-length": body.length }).end(body));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const port = (server.address() as { port: number }).port;
      const read = await createHttpClient({ buffers }).send(`http://127.0.0.1:${port}/page`, { method: "GET" });
      expect(read.body.length).toBe(body.length);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    expect(buffers.heldBytes).toBe(4 * 1024 * 1024);

    const container = freshContainer();
    const batch = envelopes(700, "pooled").map((e) => ({ ...e, alert: raw({ ...JSON.parse(e.alert.json), notes: "n".repeat(2_000) } as { id: string; lastUpdateTime: string }) }));
    await new BlobAlertSink(container, undefined, buffers).write(KEY, batch);
    expect(buffers.heldBytes).toBe(4 * 1024 * 1024);
    const stored = await container.getBlobClient(BlobAlertSink.blobNameFor(KEY, batch)).getProperties();
    // Larger than the page read (so not a buffer of a smaller class) and within the same class.
    expect(stored.contentLength).toBeGreaterThan(body.length);
    expect(stored.contentLength).toBeLessThanOrEqual(4 * 1024 * 1024);
    const lines = (await readLines(container, BlobAlertSink.blobNameFor(KEY, batch))).filter(Boolean);
    expect(lines.map((line) => (JSON.parse(line) as { alert: unknown }).alert)).toEqual(batch.map((e) => JSON.parse(e.alert.json) as unknown));

    // A failed upload's buffer may still sit in its dead request: it is not handed out again.
    const refusing = await scriptedStorage((req) => ((req.url ?? "").includes(".ndjson") ? { status: 400, headers: { "x-ms-error-code": "InvalidInput" } } : { status: 201 }));
    try {
      await expect(new BlobAlertSink(refusing.container, undefined, buffers).write(KEY, batch)).rejects.toThrow("Uploading the alert batch failed (HTTP 400)");
    } finally {
      await refusing.close();
    }
    expect(buffers.heldBytes).toBe(0);
  });

  it("replaces the blob when the same page is written again (a retried page)", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    const page = envelopes(5, "page");
    await sink.write(KEY, page);
    await sink.write(KEY, page.map((e) => ({ ...e, pulledAt: "2025-03-05T00:20:00.000Z" })));
    const names = await blobNames(container);
    expect(names).toEqual([BlobAlertSink.blobNameFor(KEY, page)]);
    const lines = (await readLines(container, names[0] as string)).filter(Boolean).map((l) => JSON.parse(l) as StoredLine);
    expect(lines.map((e) => e.pulledAt)).toEqual(Array(5).fill("2025-03-05T00:20:00.000Z"));

    // Another page of the same sub-window lands next to it.
    await sink.write({ ...KEY, skip: 200 }, envelopes(1, "next"));
    expect((await blobNames(container)).length).toBe(2);
  });

  it("never erases stored alerts when a retried page holds different alerts", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    await sink.write(KEY, envelopes(5, "first"));
    await sink.write(KEY, envelopes(2, "shifted"));
    const ids: string[] = [];
    for (const name of await blobNames(container)) {
      for (const line of (await readLines(container, name)).filter(Boolean)) ids.push((JSON.parse(line) as StoredLine).alert.id);
    }
    expect(ids.sort()).toEqual(["da-first-0", "da-first-1", "da-first-2", "da-first-3", "da-first-4", "da-shifted-0", "da-shifted-1"]);
  });

  it("on a resumed page stores only the versions an earlier attempt did not, so each version is stored once", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    const page = envelopes(6, "page");
    // The earlier attempt wrote the page and died before its checkpoint.
    const earlier = page.slice(0, 5);
    await sink.write(KEY, earlier);
    // The resumed run reads the page again: one alert fewer (da-page-0 moved on), one more (da-page-5).
    const again = page.slice(1, 6).map((e) => ({ ...e, pulledAt: "2025-03-05T01:00:00.000Z" }));
    await sink.write({ ...KEY, resumed: true }, again);

    const added = page.slice(5);
    expect((await blobNames(container)).sort()).toEqual([BlobAlertSink.blobNameFor(KEY, earlier), BlobAlertSink.blobNameFor(KEY, added)].sort());
    const addedLines = (await readLines(container, BlobAlertSink.blobNameFor(KEY, added))).filter(Boolean).map((l) => JSON.parse(l) as StoredLine);
    expect(addedLines.map((l) => [l.alert.id, l.pulledAt])).toEqual([["da-page-5", "2025-03-05T01:00:00.000Z"]]);
    // Every version of both attempts, each exactly once.
    expect(await storedVersions(container)).toEqual(versionsOf(page));
  });

  it("on a resumed page stores a new version of an alert the earlier attempt stored", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    const earlier = envelopes(3, "page");
    await sink.write(KEY, earlier);
    // da-page-1 was updated in between: its new lastUpdateTime is a version of its own.
    const updated = envelope("da-page-1", "2025-03-04T23:59:00.5Z");
    await sink.write({ ...KEY, resumed: true }, [earlier[0] as AlertEnvelope, updated, earlier[2] as AlertEnvelope]);
    expect(await blobNames(container)).toHaveLength(2);
    expect(await storedVersions(container)).toEqual(versionsOf([...earlier, updated]));
  });

  it("on a resumed page with the same content keeps a single blob holding each version once", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    const page = envelopes(5, "page");
    await sink.write(KEY, page);
    await sink.write({ ...KEY, resumed: true }, page.map((e) => ({ ...e, pulledAt: "2025-03-05T01:00:00.000Z" })));
    expect(await blobNames(container)).toEqual([BlobAlertSink.blobNameFor(KEY, page)]);
    expect(await storedVersions(container)).toEqual(versionsOf(page));
    // And again, as a second resume of the same page would.
    await sink.write({ ...KEY, resumed: true }, page);
    expect(await blobNames(container)).toEqual([BlobAlertSink.blobNameFor(KEY, page)]);
    expect(await storedVersions(container)).toEqual(versionsOf(page));
  });

  it("on a resumed page with no earlier attempt under its bounds stores the whole page, whatever other bounds hold", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    const page = envelopes(4, "page");
    // The same alerts under bounds one millisecond apart: another page, not an earlier attempt.
    await sink.write({ ...KEY, pageTo: "2025-03-05T00:10:00.001Z" }, page);
    await sink.write({ ...KEY, pageFrom: "2025-03-04T05:06:07.088Z" }, page);
    await sink.write({ ...KEY, resumed: true }, page);
    expect(await blobNames(container)).toContain(BlobAlertSink.blobNameFor(KEY, page));
    expect(await blobNames(container)).toHaveLength(3);
    const lines = (await readLines(container, BlobAlertSink.blobNameFor(KEY, page))).filter(Boolean);
    expect(lines).toHaveLength(4);
  });

  it("on a resumed page leaves out what an earlier attempt stored under the same bounds at another skip (an order that shifted)", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    const page = envelopes(4, "page");
    // Inside one crowded millisecond the service moved two alerts from skip 15 to skip 150.
    await sink.write({ ...KEY, skip: 15 }, page);
    await sink.write({ ...KEY, resumed: true }, [...page.slice(2), envelope("da-new", "2025-03-04T23:59:59Z")]);
    expect(await blobNames(container)).toHaveLength(2);
    expect(await storedVersions(container)).toEqual(versionsOf([...page, envelope("da-new", "2025-03-04T23:59:59Z")]));
  });

  it("lists the versions stored under a page's bounds across skips and attempts, in canonical time", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    expect(await sink.storedVersions(KEY)).toEqual([]);
    const first = envelopes(2, "a");
    const zoneless = envelope("da-zoneless", "2025-03-04T23:58:00.5");
    await sink.write({ ...KEY, skip: 0 }, first);
    await sink.write({ ...KEY, skip: 2 }, [zoneless]);
    await sink.write({ ...KEY, pageTo: "2025-03-05T00:10:00.001Z" }, envelopes(2, "other"));
    const listed = (await sink.storedVersions(KEY)).map((v) => `${v.id}@${v.updatedAtKey}@${v.updatedAtMs}`).sort();
    expect(listed).toEqual(
      [
        `da-a-0@2025-03-04T23:50:00.1234567Z@${Date.parse("2025-03-04T23:50:00.123Z")}`,
        `da-a-1@2025-03-04T23:51:00.1234567Z@${Date.parse("2025-03-04T23:51:00.123Z")}`,
        `da-zoneless@2025-03-04T23:58:00.5000000Z@${Date.parse("2025-03-04T23:58:00.500Z")}`,
      ].sort(),
    );
  });

  it("gives up a listing when the caller's signal fires, as a SinkError", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    await sink.write(KEY, envelopes(2));
    const aborted = AbortSignal.abort();
    await expect(sink.storedVersions(KEY, { signal: aborted })).rejects.toBeInstanceOf(SinkError);
    await expect(sink.write({ ...KEY, skip: 7 }, envelopes(1), { signal: aborted })).rejects.toBeInstanceOf(SinkError);
    expect(await blobNames(container)).toHaveLength(1);
  });

  it("does nothing for an empty batch, not even create the container", async () => {
    const container = freshContainer();
    await new BlobAlertSink(container).write(KEY, []);
    await new BlobAlertSink(container).write({ ...KEY, resumed: true }, []);
    expect(await container.exists()).toBe(false);
  });

  it("wraps storage failures in a SinkError carrying only the HTTP status", async () => {
    const conn = inject("storageConnectionString");
    // Upper case is not a valid container name: the service answers 400.
    const container = BlobServiceClient.fromConnectionString(conn).getContainerClient("Not_A_Valid_Name");
    const sink = new BlobAlertSink(container);
    const error = await sink.write(KEY, envelopes(1)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SinkError);
    expect(error).toMatchObject({ name: "SinkError", status: 400, message: "Creating the alerts container failed (HTTP 400)" });
    // The failed creation is not cached: the next write tries again (and fails the same way).
    await expect(sink.write(KEY, envelopes(1))).rejects.toMatchObject({ status: 400 });
  });
});
