import type { ContainerClient } from "@azure/storage-blob";
import { statusOf } from "../errors";
import { boundedSignal, type AlertBatchKey, type AlertEnvelope, type CallOptions } from "./alertSink";
import { containerCreator } from "./containers";

/** One page a sink could not take, as it was handed over. */
export interface ParkedBatch {
  key: AlertBatchKey;
  envelopes: AlertEnvelope[];
}

/**
 * Where pages wait for a sink that was down while other sinks took them: `{tenantId}/{sink}/{seq}`,
 * `seq` counting up per sink and tenant, so the sink catches up in the order the pull read them.
 */
export interface ParkingStore {
  park(sink: string, tenantId: string, seq: number, batch: ParkedBatch, options?: CallOptions): Promise<void>;
  read(sink: string, tenantId: string, seq: number, options?: CallOptions): Promise<ParkedBatch | undefined>;
  remove(sink: string, tenantId: string, seq: number, options?: CallOptions): Promise<void>;
  removeAll(tenantId: string, options?: CallOptions): Promise<void>;
}

export class ParkingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ParkingError";
  }
}

const SAFE = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;

function nameOf(sink: string, tenantId: string, seq: number): string {
  if (!SAFE.test(sink) || !SAFE.test(tenantId) || !Number.isSafeInteger(seq) || seq < 0) throw new ParkingError("A parked batch needs a valid sink, tenant and sequence number");
  return `${tenantId}/${sink}/${String(seq).padStart(12, "0")}.json`;
}

function failure(what: string, error: unknown): ParkingError {
  const status = statusOf(error);
  return new ParkingError(status === undefined ? `${what} (no HTTP response)` : `${what} (HTTP ${status})`);
}

export class BlobParkingStore implements ParkingStore {
  private readonly ensureContainer: () => Promise<void>;

  constructor(
    private readonly container: ContainerClient,
    private readonly timeoutMs = 60_000,
  ) {
    this.ensureContainer = containerCreator(container, (error) => failure("Creating the parked-pages container failed", error), timeoutMs);
  }

  async park(sink: string, tenantId: string, seq: number, batch: ParkedBatch, options?: CallOptions): Promise<void> {
    const name = nameOf(sink, tenantId, seq);
    await this.ensureContainer();
    const body = Buffer.from(JSON.stringify(batch), "utf8");
    try {
      // Overwrites: a page parked again after a crash takes the same sequence number.
      await this.container.getBlockBlobClient(name).upload(body, body.length, {
        blobHTTPHeaders: { blobContentType: "application/json" },
        abortSignal: boundedSignal(this.timeoutMs, options),
      });
    } catch (error) {
      throw failure("Parking a page for a sink failed", error);
    }
  }

  async read(sink: string, tenantId: string, seq: number, options?: CallOptions): Promise<ParkedBatch | undefined> {
    try {
      const buffer = await this.container
        .getBlobClient(nameOf(sink, tenantId, seq))
        .downloadToBuffer(0, undefined, { abortSignal: boundedSignal(this.timeoutMs, options) });
      return JSON.parse(buffer.toString("utf8")) as ParkedBatch;
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw failure("Reading a parked page failed", error);
    }
  }

  async remove(sink: string, tenantId: string, seq: number, options?: CallOptions): Promise<void> {
    try {
      await this.container.getBlobClient(nameOf(sink, tenantId, seq)).deleteIfExists({ abortSignal: boundedSignal(this.timeoutMs, options) });
    } catch (error) {
      throw failure("Removing a delivered parked page failed", error);
    }
  }

  async removeAll(tenantId: string, options?: CallOptions): Promise<void> {
    if (!SAFE.test(tenantId)) return;
    const abortSignal = boundedSignal(4 * this.timeoutMs, options);
    try {
      if (!(await this.container.exists({ abortSignal }))) return;
      for await (const blob of this.container.listBlobsFlat({ prefix: `${tenantId}/`, abortSignal })) {
        await this.container.getBlobClient(blob.name).deleteIfExists({ abortSignal });
      }
    } catch (error) {
      throw failure("Removing a tenant's parked pages failed", error);
    }
  }
}
