import { hash } from "node:crypto";
import type { ContainerClient } from "@azure/storage-blob";
import { statusOf } from "../errors";
import { largeBufferPool, POOLED_MIN_BYTES, type BufferPool } from "../http/bufferPool";
import { canonicalTimestamp } from "../time/timestamps";
import { containerCreator } from "./containers";
import { ENVELOPE_SUFFIX, envelopePrefix } from "./envelope";
import { boundedSignal, SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink, type CallOptions, type StoredVersion } from "./alertSink";

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

/**
 * The batch as NDJSON in one buffer of its exact size, each alert's JSON written straight from
 * the page's text. A batch of a megabyte or more (a backlog's page) takes its buffer from the
 * pool it shares with the HTTP client: the page's response buffer is free again by then (its
 * text is a copy), so on a 10,000-alert page the NDJSON reuses those ~27 MB instead of holding
 * another copy beside them. `sent` gives the buffer back once the upload has succeeded; after a
 * failure it may still sit in the dead request and is left to the GC.
 */
function ndjson(alerts: readonly AlertEnvelope[], pool: BufferPool): NdjsonBody {
  const prefixes = new PrefixCache();
  let size = 0;
  for (const envelope of alerts) {
    // Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
    size += prefixes.byteLength(envelope) + Buffer.byteLength(envelope.alert.json, "utf8") + SUFFIX_BYTES;
  }
  const pooled = size >= POOLED_MIN_BYTES;
  const body = pooled ? pool.take(size) : Buffer.allocUnsafe(size);
  let offset = 0;
  for (const envelope of alerts) {
    // Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
    offset += body.write(prefixes.text(envelope), offset, "utf8");
    // Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
    offset += body.write(envelope.alert.json, offset, "utf8");
    // Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
    offset += body.write(LINE_END, offset, "utf8");
  }
  return { body, sent: pooled ? () => pool.give(body) : () => undefined };
}

interface NdjsonBody {
  body: Buffer;
  /** Called once the upload succeeded. */
  sent: () => void;
}

const LINE_END = `${ENVELOPE_SUFFIX}\n`;
// Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
const SUFFIX_BYTES = Buffer.byteLength(LINE_END, "utf8");

/** The last envelope prefix built, reused while the envelope's fields stay the same. */
class PrefixCache {
  private last: AlertEnvelope | undefined;
  // Stryker disable next-line StringLiteral: never read: `last` starts undefined, so the first text() sets the prefix before returning it
  private prefix = "";
  private bytes = 0;

  text(envelope: AlertEnvelope): string {
    const last = this.last;
    if (
      last === undefined ||
      last.tenantId !== envelope.tenantId ||
      last.tenantName !== envelope.tenantName ||
      last.source !== envelope.source ||
      last.pulledAt !== envelope.pulledAt
    ) {
      this.last = envelope;
      this.prefix = envelopePrefix(envelope);
      // Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
      this.bytes = Buffer.byteLength(this.prefix, "utf8");
    }
    return this.prefix;
  }

  byteLength(envelope: AlertEnvelope): number {
    this.text(envelope);
    return this.bytes;
  }
}

/** 12 hex digits over the batch's alert versions: the same batch always gets the same name. */
function contentTag(alerts: readonly AlertEnvelope[]): string {
  // One string hashed once: a hash update per alert cost about 1 µs each on a backlog. The
  // bytes hashed are the same, so names stay what earlier versions wrote.
  let versions = "";
  for (const envelope of alerts) versions += `${envelope.alert.id}\n${envelope.alert.updatedAtKey}\n`;
  return hash("sha256", versions, "hex").slice(0, 12);
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
    /** Where a page's NDJSON is assembled: best the pool the HTTP client reads pages into. */
    private readonly buffers: BufferPool = largeBufferPool(),
  ) {
    this.ensureContainer = containerCreator(container, (error) => storageFailure("Creating the alerts container failed", error), timeoutMs);
  }

  /** Everything in the name before the content tag: one page's attempts share it. */
  static pagePrefix(key: AlertBatchKey): string {
    if (!Number.isSafeInteger(key.skip) || key.skip < 0 || key.skip > 999_999_999) {
      throw new SinkError("The batch's skip must be an integer between 0 and 999999999");
    }
    return `${BlobAlertSink.boundsPrefix(key)}${String(key.skip).padStart(9, "0")}_`;
  }

  /** Everything in the name before the skip: every page of one set of bounds shares it. */
  static boundsPrefix(key: Pick<AlertBatchKey, "tenantId" | "pageFrom" | "pageTo">): string {
    if (!SAFE_TENANT.test(key.tenantId)) throw new SinkError("The batch's tenant id is not a valid tenant id");
    const from = compact(key.pageFrom, "page start");
    const to = compact(key.pageTo, "page end");
    return `${key.tenantId}/${to.datePath}/${from.compact}_${to.compact}_`;
  }

  static blobNameFor(key: AlertBatchKey, alerts: readonly AlertEnvelope[]): string {
    return `${BlobAlertSink.pagePrefix(key)}${contentTag(alerts)}.ndjson`;
  }

  async write(key: AlertBatchKey, alerts: readonly AlertEnvelope[], options?: CallOptions): Promise<void> {
    if (alerts.length === 0) return;
    // Checked before anything is written: a key that cannot name a blob is refused whole.
    const prefix = BlobAlertSink.pagePrefix(key);
    await this.ensureContainer();
    const batch = key.resumed ? await this.notYetStored(key, alerts, options) : alerts;
    if (batch.length === 0) return;
    const body = ndjson(batch, this.buffers);
    try {
      await this.container.getBlockBlobClient(`${prefix}${contentTag(batch)}.ndjson`).upload(body.body, body.body.length, {
        blobHTTPHeaders: { blobContentType: "application/x-ndjson" },
        abortSignal: boundedSignal(this.timeoutMs, options),
      });
      body.sent();
    } catch (error) {
      throw storageFailure("Uploading the alert batch failed", error);
    }
  }

  async storedVersions(page: Pick<AlertBatchKey, "tenantId" | "pageFrom" | "pageTo">, options?: CallOptions): Promise<StoredVersion[]> {
    const prefix = BlobAlertSink.boundsPrefix(page);
    const versions: StoredVersion[] = [];
    try {
      await this.ensureContainer();
      const signal = boundedSignal(this.timeoutMs, options);
      for await (const blob of this.container.listBlobsFlat({ prefix, abortSignal: signal })) {
        const text = (await this.container.getBlobClient(blob.name).downloadToBuffer(0, undefined, { abortSignal: signal })).toString("utf8");
        for (const line of text.split("\n")) {
          const version = line ? storedVersionOf(line) : undefined;
          if (version) versions.push(version);
        }
      }
    } catch (error) {
      if (error instanceof SinkError) throw error;
      throw storageFailure("Reading earlier attempts of the page failed", error);
    }
    return versions;
  }

  /** The batch without versions an earlier attempt stored under the same bounds (any skip, any content). */
  private async notYetStored(key: AlertBatchKey, alerts: readonly AlertEnvelope[], options?: CallOptions): Promise<readonly AlertEnvelope[]> {
    const stored = new Set((await this.storedVersions(key, options)).map((v) => `${v.id}\n${v.updatedAtKey}`));
    return stored.size === 0 ? alerts : alerts.filter((e) => !stored.has(`${e.alert.id}\n${e.alert.updatedAtKey}`));
  }

}

/** The version a stored line holds, or undefined for a line this sink did not write. */
function storedVersionOf(line: string): StoredVersion | undefined {
  let parsed: { source?: unknown; alert?: { id?: unknown; lastUpdateTime?: unknown; lastUpdateDateTime?: unknown } } | null;
  try {
    parsed = JSON.parse(line) as typeof parsed;
  } catch {
    return undefined;
  }
  // A line of `null` parses too: without this, one such line failed every resume of the page.
  if (parsed === null) return undefined;
  const id = parsed.alert?.id;
  // Each source names the version time its own way (Graph: lastUpdateDateTime).
  const time = parsed.source === "graph" ? parsed.alert?.lastUpdateDateTime : parsed.alert?.lastUpdateTime;
  const canonical = typeof time === "string" ? canonicalTimestamp(time) : undefined;
  if (typeof id !== "string" || !canonical) return undefined;
  return { id, updatedAtKey: canonical.key, updatedAtMs: canonical.ms };
}

function storageFailure(what: string, error: unknown): SinkError {
  const status = statusOf(error);
  return new SinkError(status === undefined ? `${what} (no HTTP response)` : `${what} (HTTP ${status})`, status);
}
