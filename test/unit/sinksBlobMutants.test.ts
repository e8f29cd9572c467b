/**
 * The blob sink's NDJSON buffer and the pool it shares with the HTTP client (issue 15, mutation
 * testing of shared/sinks/blobAlertSink.ts), without the app, against the run's Azurite: each
 * line's own envelope, which batches borrow a pooled buffer, that a small batch never takes one the HTTP client could use,
 * and that what is stored is the exact NDJSON either way; and, against a scripted blob endpoint,
 * that reading an earlier attempt back on a resume is given up like every other call.
 */
import { randomUUID } from "node:crypto";
import { BlobServiceClient } from "@azure/storage-blob";
import { describe, expect, inject, it } from "vitest";
import { BufferPool, POOLED_MIN_BYTES } from "../../shared/http/bufferPool";
import type { AlertBatchKey, AlertEnvelope } from "../../shared/sinks/alertSink";
import { BlobAlertSink, SinkError } from "../../shared/sinks/blobAlertSink";
import { envelopeLine } from "../../shared/sinks/envelope";
import { canonicalTimestamp } from "../../shared/time/timestamps";
import { blobListing, scriptedStorage } from "../harness/scriptedStorage";

const TENANT = "5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c";
const KEY: AlertBatchKey = { tenantId: TENANT, pageFrom: "2025-03-04T05:06:07.089Z", pageTo: "2025-03-05T00:10:00.000Z", skip: 0 };
const freshContainer = () => BlobServiceClient.fromConnectionString(inject("storageConnectionString")).getContainerClient(`blobm-${randomUUID().slice(0, 12)}`);

function envelope(id: string, extra = "", overrides: Partial<AlertEnvelope> = {}): AlertEnvelope {
  const lastUpdateTime = "2025-03-04T23:50:00.1234567Z";
  const canonical = canonicalTimestamp(lastUpdateTime);
  if (canonical === undefined) throw new Error("not a timestamp");
  const alert = { id, lastUpdateTime, updatedAtKey: canonical.key, updatedAtMs: canonical.ms, json: `{"id":${JSON.stringify(id)},"lastUpdateTime":"${lastUpdateTime}"${extra}}` };
  return { tenantId: TENANT, tenantName: "Contoso", source: "mde", pulledAt: "2025-03-05T00:15:00.000Z", alert, ...overrides };
}

/** The NDJSON the sink must store for a batch. */
const expectedBytes = (batch: readonly AlertEnvelope[]) => Buffer.from(batch.map((e) => `${envelopeLine(e)}\n`).join(""), "utf8");

/** One envelope whose NDJSON line is exactly `total` bytes. */
function sized(id: string, total: number): AlertEnvelope[] {
  const short = total - expectedBytes([envelope(id, ',"pad":""')]).length;
  const batch = [envelope(id, `,"pad":"${"p".repeat(short)}"`)];
  expect(expectedBytes(batch).length).toBe(total);
  return batch;
}

/** A pool like the app's holding one free 1 MiB buffer, as after the HTTP client read a page. */
function poolHoldingOne(): BufferPool {
  const pool = new BufferPool({ minBytes: POOLED_MIN_BYTES, maxFreeBytes: 64 * POOLED_MIN_BYTES, idleMs: 60_000 });
  pool.give(pool.take(POOLED_MIN_BYTES));
  expect(pool.heldBytes).toBe(POOLED_MIN_BYTES);
  return pool;
}

describe("blob sink: each line's envelope", () => {
  it("stores each line with its own source when only the source changes from one envelope to the next", async () => {
    const container = freshContainer();
    const batch = [envelope("a"), envelope("b", "", { source: "graph" }), envelope("c"), envelope("d")];
    await new BlobAlertSink(container).write(KEY, batch);
    const stored = await container.getBlobClient(BlobAlertSink.blobNameFor(KEY, batch)).downloadToBuffer();
    const sources = stored
      .toString("utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => (JSON.parse(line) as { source: string }).source);
    expect(sources).toEqual(["mde", "graph", "mde", "mde"]);
    expect(stored.equals(expectedBytes(batch))).toBe(true);
  });
});

describe("blob sink: the pooled NDJSON buffer", () => {
  it("borrows from an empty pool only for a batch of POOLED_MIN_BYTES or more, and gives that buffer back", async () => {
    const pool = new BufferPool({ minBytes: POOLED_MIN_BYTES, maxFreeBytes: 64 * POOLED_MIN_BYTES, idleMs: 60_000 });
    const container = freshContainer();
    const sink = new BlobAlertSink(container, undefined, pool);
    for (const [skip, batch, held] of [
      [1, sized("under", POOLED_MIN_BYTES - 1), 0],
      [2, sized("at", POOLED_MIN_BYTES), POOLED_MIN_BYTES],
    ] as const) {
      const key = { ...KEY, skip };
      await sink.write(key, batch);
      expect(pool.heldBytes, `skip ${skip}`).toBe(held);
      const stored = await container.getBlobClient(BlobAlertSink.blobNameFor(key, batch)).downloadToBuffer();
      expect(stored.equals(expectedBytes(batch)), `skip ${skip}`).toBe(true);
    }
  });

  it("leaves the free page buffer in the shared pool for a batch under POOLED_MIN_BYTES, and stores its exact bytes", async () => {
    const pool = poolHoldingOne();
    const container = freshContainer();
    const sink = new BlobAlertSink(container, undefined, pool);
    for (const [skip, batch] of [
      [1, [envelope("small-a"), envelope("small-b")]],
      [2, sized("under", POOLED_MIN_BYTES - 1)],
    ] as const) {
      const key = { ...KEY, skip };
      await sink.write(key, batch);
      // A small batch taking the free buffer (and never giving it back) would leave the HTTP
      // client's next page to allocate its megabytes anew.
      expect(pool.heldBytes, `skip ${skip}`).toBe(POOLED_MIN_BYTES);
      const stored = await container.getBlobClient(BlobAlertSink.blobNameFor(key, batch)).downloadToBuffer();
      expect(stored.equals(expectedBytes(batch)), `skip ${skip}`).toBe(true);
    }
  });

  it("writes a batch of exactly POOLED_MIN_BYTES into the pool's free buffer and gives it back after the upload", async () => {
    const pool = poolHoldingOne();
    const container = freshContainer();
    const batch = sized("at", POOLED_MIN_BYTES);
    await new BlobAlertSink(container, undefined, pool).write(KEY, batch);
    // Taken and given back: still exactly one buffer held, not a second one allocated beside it.
    expect(pool.heldBytes).toBe(POOLED_MIN_BYTES);
    const stored = await container.getBlobClient(BlobAlertSink.blobNameFor(KEY, batch)).downloadToBuffer();
    expect(stored.equals(expectedBytes(batch))).toBe(true);
  });
});

describe("blob sink: reading an earlier attempt back that storage never finishes", () => {
  /** An endpoint that creates the container, lists one earlier attempt of the page, and holds that blob's answers back 8 s. */
  async function hangingDownload() {
    const name = BlobAlertSink.blobNameFor(KEY, [envelope("earlier")]);
    const line = expectedBytes([envelope("earlier")]).toString("utf8");
    const isBlob = (url: string) => url.includes(".ndjson");
    return scriptedStorage(
      (req): { status: number; headers?: Record<string, string>; body?: string } => {
        const url = req.url ?? "";
        if (req.method === "PUT" && url.includes("restype=container")) return { status: 201 };
        if (url.includes("comp=list")) return blobListing([name], Buffer.byteLength(line));
        if (isBlob(url)) return { status: 200, headers: { "content-type": "application/x-ndjson", "x-ms-blob-type": "BlockBlob", etag: '"0x1"', "last-modified": "Tue, 01 Dec 2026 00:00:00 GMT" }, body: req.method === "HEAD" ? "" : line };
        return { status: 404 };
      },
      (req) => (isBlob(req.url ?? "") ? 8_000 : 0),
    );
  }

  it("gives up downloading an earlier attempt on the sink's own timeout, saying no answer came", async () => {
    const storage = await hangingDownload();
    try {
      const sink = new BlobAlertSink(storage.container, 300);
      const started = Date.now();
      await expect(sink.storedVersions(KEY, { signal: new AbortController().signal })).rejects.toThrow(new SinkError("Reading earlier attempts of the page failed (no HTTP response)"));
      expect(Date.now() - started).toBeLessThan(4_000);
      // The listing was answered and the earlier attempt's blob asked for: it was the download that was given up.
      expect(storage.requests.some((r) => r.query.includes("comp=list"))).toBe(true);
      expect(storage.requests.some((r) => r.path.endsWith(".ndjson"))).toBe(true);
    } finally {
      await storage.close();
    }
  });

  it("gives up downloading an earlier attempt when the caller's signal fires, so a resumed page writes nothing", async () => {
    const storage = await hangingDownload();
    try {
      const sink = new BlobAlertSink(storage.container);
      const caller = new AbortController();
      setTimeout(() => caller.abort(), 300);
      const started = Date.now();
      await expect(sink.write({ ...KEY, skip: 1, resumed: true }, [envelope("earlier"), envelope("new")], { signal: caller.signal })).rejects.toThrow(
        new SinkError("Reading earlier attempts of the page failed (no HTTP response)"),
      );
      expect(Date.now() - started).toBeLessThan(4_000);
      expect(storage.requests.filter((r) => r.method === "PUT" && r.path.endsWith(".ndjson"))).toHaveLength(0);
    } finally {
      await storage.close();
    }
  });
});
