import { hash } from "node:crypto";
import { Readable } from "node:stream";
import type { ContainerClient } from "@azure/storage-blob";
import { statusOf } from "../errors";
import { BufferPool } from "../http/bufferPool";
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
 * The batch as NDJSON: its exact size, and its bytes either as one buffer (a batch under a chunk,
 * as most warm-cycle batches are) or as a stream the upload may open again on a retry. A stream's
 * bytes are made a chunk at a time as the request sends them, each alert's JSON written straight
 * from the page's text: a whole-page buffer (or a line string per alert) would be another copy of
 * the page held beside its text until the upload ends, on a 10,000-alert page ~27 MB.
 */
function ndjson(alerts: readonly AlertEnvelope[], pool: BufferPool): NdjsonBody {
  const prefixes = new PrefixCache();
  // Each line's length, measured once: it sizes the upload and then each chunk (again on a retry).
  const lineBytes = new Float64Array(alerts.length);
  let size = 0;
  for (let i = 0; i < alerts.length; i++) {
    const envelope = alerts[i] as AlertEnvelope;
    // Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
    const bytes = prefixes.byteLength(envelope) + Buffer.byteLength(envelope.alert.json, "utf8") + SUFFIX_BYTES;
    lineBytes[i] = bytes;
    size += bytes;
  }
  // Stryker disable next-line ConditionalExpression,EqualityOperator,BlockStatement: buffer or stream, the same bytes are uploaded (and again on a retry); only the memory held differs
  if (size <= NDJSON_CHUNK_BYTES) {
    // Chunks are sized by what is left, so a batch under a chunk is one exact-size chunk.
    return { size, body: Buffer.concat([...ndjsonChunks(alerts, lineBytes, size, (bytes) => Buffer.allocUnsafe(bytes))], size), sent: () => undefined };
  }
  let attempt: Buffer[] = [];
  return {
    size,
    body: () => {
      // A new attempt: the chunks of an earlier one may still sit in its dead request, never reused.
      const taken: Buffer[] = (attempt = []);
      return Readable.from(
        ndjsonChunks(alerts, lineBytes, size, (bytes) => {
          const chunk = pool.take(bytes);
          taken.push(chunk);
          return chunk;
        }),
        // Stryker disable next-line ObjectLiteral,BooleanLiteral: in object mode the same Buffers reach the request; only the stream's buffering (memory) differs
        { objectMode: false },
      );
    },
    // The service answered after reading every byte: the last attempt's chunks are free.
    sent: () => {
      for (const chunk of attempt) pool.give(chunk);
      attempt = [];
    },
  };
}

interface NdjsonBody {
  size: number;
  body: Buffer | (() => Readable);
  /** Called once the upload succeeded. */
  sent: () => void;
}

/** Chunk size of the NDJSON stream: large enough that a page is a few dozen socket writes. */
const NDJSON_CHUNK_BYTES = 1024 * 1024;

/** `size` bytes of NDJSON (lines of `lineBytes` each) in chunks of at most NDJSON_CHUNK_BYTES (or one line, if longer). */
function* ndjsonChunks(alerts: readonly AlertEnvelope[], lineBytes: Float64Array, size: number, take: (bytes: number) => Buffer): Generator<Buffer> {
  const prefixes = new PrefixCache();
  let chunk: Buffer = Buffer.alloc(0);
  let offset = 0;
  let left = size;
  for (let i = 0; i < alerts.length; i++) {
    const envelope = alerts[i] as AlertEnvelope;
    const prefix = prefixes.text(envelope);
    const bytes = lineBytes[i] as number;
    if (offset + bytes > chunk.length) {
      if (offset > 0) yield chunk.subarray(0, offset);
      // The stream may still hold the chunk it was given: never write into it again. No larger
      // than what is left, so that a small batch does not cost a whole chunk of external memory.
      chunk = take(Math.max(bytes, Math.min(NDJSON_CHUNK_BYTES, left)));
      offset = 0;
    }
    // Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
    offset += chunk.write(prefix, offset, "utf8");
    // Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
    offset += chunk.write(envelope.alert.json, offset, "utf8");
    // Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
    offset += chunk.write(LINE_END, offset, "utf8");
    // Stryker disable next-line AssignmentOperator: `left` only sizes the next chunk (at most a chunk, at least the line): the same bytes, more memory
    left -= bytes;
  }
  if (offset > 0) yield chunk.subarray(0, offset);
}

const LINE_END = `${ENVELOPE_SUFFIX}\n`;
// Stryker disable next-line StringLiteral: an empty encoding name is utf8 (Buffer.byteLength, Buffer.write)
const SUFFIX_BYTES = Buffer.byteLength(LINE_END, "utf8");

/** The last envelope prefix built, reused while the envelope's fields stay the same. */
class PrefixCache {
  private last: AlertEnvelope | undefined;
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
  /** NDJSON chunks reused from one page's upload to the next (a 10,000-alert page is ~27 of them). */
  private readonly chunks = new BufferPool({ unitBytes: NDJSON_CHUNK_BYTES, maxFreeBytes: 64 * NDJSON_CHUNK_BYTES, idleMs: 60_000 });

  constructor(
    private readonly container: ContainerClient,
    private readonly timeoutMs = 120_000,
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
    const body = ndjson(batch, this.chunks);
    try {
      await this.container.getBlockBlobClient(`${prefix}${contentTag(batch)}.ndjson`).upload(body.body, body.size, {
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
