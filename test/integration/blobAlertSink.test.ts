import { randomUUID } from "node:crypto";
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { describe, expect, inject, it } from "vitest";
import type { AlertBatchKey, AlertEnvelope } from "../../shared/sinks/alertSink";
import { BlobAlertSink, SinkError } from "../../shared/sinks/blobAlertSink";
import { makeAlert } from "../fakes/alerts";

const TENANT = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

function freshContainer(): ContainerClient {
  const conn = inject("storageConnectionString");
  return BlobServiceClient.fromConnectionString(conn).getContainerClient(`sink-${randomUUID().slice(0, 13)}`);
}

/** An alert as the Defender client hands it over: the fields it decides on plus the raw JSON. */
function raw(alert: { id: string; lastUpdateTime: string }): AlertEnvelope["alert"] {
  return { id: alert.id, lastUpdateTime: alert.lastUpdateTime, json: JSON.stringify(alert) };
}

interface StoredLine {
  tenantId: string;
  tenantName: string;
  source: string;
  pulledAt: string;
  alert: { id: string; lastUpdateTime: string };
}

function envelopes(count: number, tag = "v1"): AlertEnvelope[] {
  return Array.from({ length: count }, (_, i) => ({
    tenantId: TENANT,
    tenantName: "Contoso \"East\"\nLtd",
    source: "mde",
    pulledAt: "2025-03-05T00:15:00.000Z",
    alert: raw(makeAlert({ id: `da-${tag}-${i}`, lastUpdateTime: `2025-03-04T23:5${i % 10}:00.1234567Z` })),
  }));
}

async function blobNames(container: ContainerClient): Promise<string[]> {
  const names: string[] = [];
  for await (const blob of container.listBlobsFlat()) names.push(blob.name);
  return names;
}

async function readLines(container: ContainerClient, name: string): Promise<string[]> {
  return (await container.getBlobClient(name).downloadToBuffer()).toString("utf8").split("\n");
}

const BATCH = envelopes(3);
const KEY: AlertBatchKey = { tenantId: TENANT, windowFrom: "2025-03-04T05:06:07.089Z", windowTo: "2025-03-05T00:10:00.000Z", skip: 150 };

describe("BlobAlertSink", () => {
  it("names blobs deterministically by tenant, window end date, window, skip and content", () => {
    expect(BlobAlertSink.blobNameFor(KEY, BATCH)).toMatch(
      new RegExp(`^${TENANT}/2025/03/05/20250304T0506070890000Z_20250305T0010000000000Z_000000150_[0-9a-f]{12}\\.ndjson$`),
    );
    expect(BlobAlertSink.blobNameFor(KEY, envelopes(3))).toBe(BlobAlertSink.blobNameFor(KEY, BATCH));
    expect(BlobAlertSink.blobNameFor(KEY, envelopes(2))).not.toBe(BlobAlertSink.blobNameFor(KEY, BATCH));
    // Bounds that differ below a millisecond still get distinct names.
    const a = BlobAlertSink.blobNameFor({ ...KEY, windowFrom: "2025-03-04T05:06:07.0891Z" }, BATCH);
    expect(a).not.toBe(BlobAlertSink.blobNameFor(KEY, BATCH));
    // Names sort by window, then by skip.
    const names = [
      BlobAlertSink.blobNameFor({ ...KEY, skip: 1000 }, BATCH),
      BlobAlertSink.blobNameFor({ ...KEY, skip: 50 }, BATCH),
      BlobAlertSink.blobNameFor({ ...KEY, windowFrom: "2025-03-03T23:00:00Z", windowTo: "2025-03-04T23:59:59.999Z", skip: 9 }, BATCH),
    ];
    expect([...names].sort()).toEqual([names[2], names[1], names[0]]);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, tenantId: "../other" }, BATCH)).toThrow(SinkError);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, windowTo: "later" }, BATCH)).toThrow(SinkError);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, skip: -1 }, BATCH)).toThrow(SinkError);
  });

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
    expect(parsed).toEqual(batch.map((e) => ({ ...e, alert: JSON.parse(e.alert.json) as unknown })));
    expect(Object.keys(parsed[0] ?? {})).toEqual(["tenantId", "tenantName", "source", "pulledAt", "alert"]);
    // Sub-millisecond timestamps survive untouched.
    expect(parsed[0]?.alert.lastUpdateTime).toBe("2025-03-04T23:50:00.1234567Z");
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

    // Another page of the same window lands next to it.
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

  it("does nothing for an empty batch, not even create the container", async () => {
    const container = freshContainer();
    await new BlobAlertSink(container).write(KEY, []);
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
