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

function envelopes(count: number, tag = "v1"): AlertEnvelope[] {
  return Array.from({ length: count }, (_, i) => ({
    tenantId: TENANT,
    tenantName: "Contoso \"East\"\nLtd",
    source: "mde",
    pulledAt: "2025-03-05T00:15:00.000Z",
    alert: { ...makeAlert({ id: `da-${tag}-${i}`, lastUpdateTime: `2025-03-04T23:5${i % 10}:00.1234567Z` }) },
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

const KEY: AlertBatchKey = { tenantId: TENANT, windowFrom: "2025-03-04T05:06:07.089Z", windowTo: "2025-03-05T00:10:00.000Z", skip: 150 };

describe("BlobAlertSink", () => {
  it("names blobs deterministically by tenant, window end date, window and skip", () => {
    expect(BlobAlertSink.blobNameFor(KEY)).toBe(
      `${TENANT}/2025/03/05/20250304T0506070890000Z_20250305T0010000000000Z_000000150.ndjson`,
    );
    // Bounds that differ below a millisecond still get distinct names.
    const a = BlobAlertSink.blobNameFor({ ...KEY, windowFrom: "2025-03-04T05:06:07.0891Z" });
    expect(a).not.toBe(BlobAlertSink.blobNameFor(KEY));
    // Names sort by window, then by skip.
    const names = [
      BlobAlertSink.blobNameFor({ ...KEY, skip: 1000 }),
      BlobAlertSink.blobNameFor({ ...KEY, skip: 50 }),
      BlobAlertSink.blobNameFor({ ...KEY, windowFrom: "2025-03-03T23:00:00Z", windowTo: "2025-03-04T23:59:59.999Z", skip: 9 }),
    ];
    expect([...names].sort()).toEqual([names[2], names[1], names[0]]);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, tenantId: "../other" })).toThrow(SinkError);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, windowTo: "later" })).toThrow(SinkError);
    expect(() => BlobAlertSink.blobNameFor({ ...KEY, skip: -1 })).toThrow(SinkError);
  });

  it("writes one NDJSON line per envelope, creating the container on first use", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    const batch = envelopes(3);
    await sink.write(KEY, batch);

    expect(await blobNames(container)).toEqual([BlobAlertSink.blobNameFor(KEY)]);
    const blob = container.getBlobClient(BlobAlertSink.blobNameFor(KEY));
    expect((await blob.getProperties()).contentType).toBe("application/x-ndjson");
    const lines = await readLines(container, BlobAlertSink.blobNameFor(KEY));
    // Every line ends in "\n": three records and the empty rest after the last newline.
    expect(lines).toHaveLength(4);
    expect(lines[3]).toBe("");
    const parsed = lines.slice(0, 3).map((line) => JSON.parse(line) as AlertEnvelope);
    expect(parsed).toEqual(batch);
    expect(Object.keys(parsed[0] ?? {})).toEqual(["tenantId", "tenantName", "source", "pulledAt", "alert"]);
    // Sub-millisecond timestamps survive untouched.
    expect(parsed[0]?.alert.lastUpdateTime).toBe("2025-03-04T23:50:00.1234567Z");
  });

  it("replaces the blob when the same key is written again (a retried page)", async () => {
    const container = freshContainer();
    const sink = new BlobAlertSink(container);
    await sink.write(KEY, envelopes(5, "first"));
    await sink.write(KEY, envelopes(2, "retry"));
    const names = await blobNames(container);
    expect(names).toEqual([BlobAlertSink.blobNameFor(KEY)]);
    const ids = (await readLines(container, names[0] as string)).filter(Boolean).map((l) => (JSON.parse(l) as AlertEnvelope).alert.id);
    expect(ids).toEqual(["da-retry-0", "da-retry-1"]);

    // Another page of the same window lands next to it.
    await sink.write({ ...KEY, skip: 200 }, envelopes(1, "next"));
    expect((await blobNames(container)).length).toBe(2);
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
