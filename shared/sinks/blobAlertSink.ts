import { createHash } from "node:crypto";
import type { ContainerClient } from "@azure/storage-blob";
import { statusOf } from "../errors";
import { SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink } from "./alertSink";

export { SinkError };

const TIMESTAMP = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?Z$/;
/** Tenant ids are GUIDs; anything that could escape its folder ("/", "..") is refused. */
const SAFE_TENANT = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;

/**
 * Fixed-width, separator-free UTC form of a window bound (`20250102T030405.1234567Z` →
 * `20250102T0304051234567Z`): always 7 fractional digits so names sort by time and bounds that
 * differ below a millisecond never share a name.
 */
function compact(bound: string, which: string): { compact: string; datePath: string } {
  let match = TIMESTAMP.exec(bound);
  if (match === null) {
    // Not the canonical Z form (e.g. an offset): normalise through Date, keeping ms precision.
    const ms = Date.parse(bound);
    if (Number.isNaN(ms)) throw new SinkError(`The batch's ${which} is not an ISO-8601 timestamp`);
    match = TIMESTAMP.exec(new Date(ms).toISOString());
    if (match === null) throw new SinkError(`The batch's ${which} is out of range`);
  }
  const [, y, mo, d, h, mi, s, frac] = match as unknown as [string, string, string, string, string, string, string, string | undefined];
  return { compact: `${y}${mo}${d}T${h}${mi}${s}${(frac ?? "").padEnd(7, "0")}Z`, datePath: `${y}/${mo}/${d}` };
}

/** One NDJSON line: the envelope's fields, then the alert's JSON exactly as the API sent it. */
function envelopeLine(envelope: AlertEnvelope): string {
  return `{"tenantId":${JSON.stringify(envelope.tenantId)},"tenantName":${JSON.stringify(envelope.tenantName)},"source":"mde","pulledAt":${JSON.stringify(envelope.pulledAt)},"alert":${envelope.alert.json}}`;
}

/** 12 hex digits over the batch's alert versions: the same batch always gets the same name. */
function contentTag(alerts: readonly AlertEnvelope[]): string {
  const hash = createHash("sha256");
  for (const envelope of alerts) hash.update(`${envelope.alert.id}\n${envelope.alert.lastUpdateTime}\n`);
  return hash.digest("hex").slice(0, 12);
}

/**
 * Writes each page of alerts as one NDJSON block blob:
 * `{tenantId}/{yyyy}/{MM}/{dd}/{from}_{to}_{skip:9}_{content}.ndjson` (date of the window's end,
 * UTC). The name is deterministic in the batch key and the alert versions it holds, and uploads
 * overwrite: a retried page replaces its earlier copy instead of duplicating it, while a page
 * whose content changed between attempts (the API's order shifted) gets a name of its own, so an
 * overwrite can never erase an alert that was already stored.
 */
export class BlobAlertSink implements AlertSink {
  private ready: Promise<void> | undefined;

  constructor(private readonly container: ContainerClient) {}

  static blobNameFor(key: AlertBatchKey, alerts: readonly AlertEnvelope[]): string {
    if (!SAFE_TENANT.test(key.tenantId)) throw new SinkError("The batch's tenant id is not a valid tenant id");
    if (!Number.isSafeInteger(key.skip) || key.skip < 0 || key.skip > 999_999_999) {
      throw new SinkError("The batch's skip must be an integer between 0 and 999999999");
    }
    const from = compact(key.windowFrom, "window start");
    const to = compact(key.windowTo, "window end");
    const skip = String(key.skip).padStart(9, "0");
    return `${key.tenantId}/${to.datePath}/${from.compact}_${to.compact}_${skip}_${contentTag(alerts)}.ndjson`;
  }

  async write(key: AlertBatchKey, alerts: readonly AlertEnvelope[]): Promise<void> {
    if (alerts.length === 0) return;
    const name = BlobAlertSink.blobNameFor(key, alerts);
    // Serialised straight into one buffer of the exact size: no joined string beside it.
    const lines: string[] = new Array<string>(alerts.length);
    let size = 0;
    for (let i = 0; i < alerts.length; i++) {
      const line = envelopeLine(alerts[i] as AlertEnvelope);
      lines[i] = line;
      size += Buffer.byteLength(line, "utf8") + 1;
    }
    const body = Buffer.allocUnsafe(size);
    let offset = 0;
    for (let i = 0; i < lines.length; i++) {
      offset += body.write(lines[i] as string, offset, "utf8");
      body[offset++] = 0x0a;
    }
    lines.length = 0;
    await this.ensureContainer();
    try {
      await this.container.getBlockBlobClient(name).upload(body, body.length, {
        blobHTTPHeaders: { blobContentType: "application/x-ndjson" },
      });
    } catch (error) {
      throw storageFailure("Uploading the alert batch failed", error);
    }
  }

  /** Creates the container on first use; a failure is not cached, so the next write tries again. */
  private ensureContainer(): Promise<void> {
    this.ready ??= this.container.createIfNotExists().then(
      () => undefined,
      (error: unknown) => {
        this.ready = undefined;
        throw storageFailure("Creating the alerts container failed", error);
      },
    );
    return this.ready;
  }
}

function storageFailure(what: string, error: unknown): SinkError {
  const status = statusOf(error);
  return new SinkError(status === undefined ? `${what} (no HTTP response)` : `${what} (HTTP ${status})`, status);
}
