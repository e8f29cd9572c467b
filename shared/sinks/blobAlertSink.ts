import { createHash } from "node:crypto";
import type { ContainerClient } from "@azure/storage-blob";
import { statusOf } from "../errors";
import { canonicalTimestamp } from "../time/timestamps";
import { containerCreator } from "./containers";
import { SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink } from "./alertSink";

export { SinkError };

/** Tenant ids are GUIDs; anything that could escape its folder ("/", "..") is refused. */
const SAFE_TENANT = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;

/**
 * Fixed-width, separator-free UTC form of a page bound (`2025-01-02T03:04:05.1234567Z` →
 * `20250102T0304051234567Z`): always 7 fractional digits so names sort by time and bounds that
 * differ below a millisecond never share a name.
 */
function compact(bound: string, which: string): { compact: string; datePath: string } {
  const canonical = canonicalTimestamp(bound);
  if (canonical === undefined) throw new SinkError(`The batch's ${which} is not a valid ISO-8601 timestamp`);
  const key = canonical.key;
  return { compact: key.replace(/[-:.]/g, ""), datePath: `${key.slice(0, 4)}/${key.slice(5, 7)}/${key.slice(8, 10)}` };
}

/** A version as the dedupe rule sees it: id and canonical time, however the time was spelled. */
function versionKey(id: unknown, lastUpdateTime: unknown): string {
  const time = typeof lastUpdateTime === "string" ? (canonicalTimestamp(lastUpdateTime)?.key ?? lastUpdateTime) : String(lastUpdateTime);
  return `${String(id)}\n${time}`;
}

/** One NDJSON line: the envelope's fields, then the alert's JSON exactly as the API sent it. */
function envelopeLine(envelope: AlertEnvelope): string {
  return `{"tenantId":${JSON.stringify(envelope.tenantId)},"tenantName":${JSON.stringify(envelope.tenantName)},"source":"mde","pulledAt":${JSON.stringify(envelope.pulledAt)},"alert":${envelope.alert.json}}`;
}

/** The batch as NDJSON in one buffer of the exact size: no joined string beside it. */
function ndjson(alerts: readonly AlertEnvelope[]): Buffer {
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
  return body;
}

/** 12 hex digits over the batch's alert versions: the same batch always gets the same name. */
function contentTag(alerts: readonly AlertEnvelope[]): string {
  const hash = createHash("sha256");
  for (const envelope of alerts) hash.update(`${envelope.alert.id}\n${envelope.alert.updatedAtKey}\n`);
  return hash.digest("hex").slice(0, 12);
}

/**
 * Writes each page of alerts as one NDJSON block blob:
 * `{tenantId}/{yyyy}/{MM}/{dd}/{pageFrom}_{pageTo}_{skip:9}_{content}.ndjson` (date of the
 * page's end, UTC). The name is deterministic in the page and the alert versions it holds, and
 * uploads overwrite: a retried page replaces its earlier copy, while a page whose content
 * changed between attempts gets a name of its own, so an overwrite never erases a stored alert.
 * On the first page after a resume, versions an earlier attempt of the same page already stored
 * are left out (an identical retry therefore writes nothing and the first copy stays), so a
 * crash between the upload and the checkpoint duplicates nothing.
 */
export class BlobAlertSink implements AlertSink {
  private readonly ensureContainer: () => Promise<void>;

  constructor(
    private readonly container: ContainerClient,
    private readonly timeoutMs = 120_000,
  ) {
    this.ensureContainer = containerCreator(container, (error) => storageFailure("Creating the alerts container failed", error));
  }

  /** Everything in the name before the content tag: one page's attempts share it. */
  static pagePrefix(key: AlertBatchKey): string {
    if (!SAFE_TENANT.test(key.tenantId)) throw new SinkError("The batch's tenant id is not a valid tenant id");
    if (!Number.isSafeInteger(key.skip) || key.skip < 0 || key.skip > 999_999_999) {
      throw new SinkError("The batch's skip must be an integer between 0 and 999999999");
    }
    const from = compact(key.pageFrom, "page start");
    const to = compact(key.pageTo, "page end");
    return `${key.tenantId}/${to.datePath}/${from.compact}_${to.compact}_${String(key.skip).padStart(9, "0")}_`;
  }

  static blobNameFor(key: AlertBatchKey, alerts: readonly AlertEnvelope[]): string {
    return `${BlobAlertSink.pagePrefix(key)}${contentTag(alerts)}.ndjson`;
  }

  async write(key: AlertBatchKey, alerts: readonly AlertEnvelope[]): Promise<void> {
    if (alerts.length === 0) return;
    await this.ensureContainer();
    const batch = key.resumed ? await this.notYetStored(key, alerts) : alerts;
    if (batch.length === 0) return;
    const name = BlobAlertSink.blobNameFor(key, batch);
    const body = ndjson(batch);
    try {
      await this.container.getBlockBlobClient(name).upload(body, body.length, {
        blobHTTPHeaders: { blobContentType: "application/x-ndjson" },
        abortSignal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      throw storageFailure("Uploading the alert batch failed", error);
    }
  }

  /** The batch without versions that an earlier attempt of the same page stored under another name. */
  private async notYetStored(key: AlertBatchKey, alerts: readonly AlertEnvelope[]): Promise<readonly AlertEnvelope[]> {
    const prefix = BlobAlertSink.pagePrefix(key);
    const stored = new Set<string>();
    try {
      const signal = AbortSignal.timeout(this.timeoutMs);
      for await (const blob of this.container.listBlobsFlat({ prefix, abortSignal: signal })) {
        const text = (await this.container.getBlobClient(blob.name).downloadToBuffer(0, undefined, { abortSignal: signal })).toString("utf8");
        for (const line of text.split("\n")) {
          if (!line) continue;
          const parsed = JSON.parse(line) as { alert?: { id?: unknown; lastUpdateTime?: unknown } };
          stored.add(versionKey(parsed.alert?.id, parsed.alert?.lastUpdateTime));
        }
      }
    } catch (error) {
      throw storageFailure("Reading an earlier attempt of the page failed", error);
    }
    return stored.size === 0 ? alerts : alerts.filter((e) => !stored.has(`${e.alert.id}\n${e.alert.updatedAtKey}`));
  }

}

function storageFailure(what: string, error: unknown): SinkError {
  const status = statusOf(error);
  return new SinkError(status === undefined ? `${what} (no HTTP response)` : `${what} (HTTP ${status})`, status);
}
