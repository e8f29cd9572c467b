import type { ServerResponse } from "node:http";
import { gunzipSync } from "node:zlib";
import { registerSecrets } from "../harness/secrecy";
import { FakeHttpsServer, isRecord, sendEmpty, sendJson, type FakeRequest, type TlsMaterial } from "./http";

/**
 * In-memory stand-in for the Azure Monitor Logs Ingestion API (the path Microsoft Sentinel's
 * custom tables are fed through), shaped after what @azure/monitor-ingestion 1.2.0 sends and what
 * the service documents:
 *
 *   POST {endpoint}/dataCollectionRules/{immutableId}/streams/{stream}?api-version=2023-01-01
 *   Authorization: Bearer …, Content-Type: application/json, optionally Content-Encoding: gzip
 *   body: a JSON array of records matching the DCR's stream declaration → 204, no body
 *
 * Limits as the service applies them: 1 MB per call, compressed or not (413); 64 KB per field,
 * cut silently (counted in `truncatedFields`, so a test can prove a client never lets it happen).
 * Stricter than the service on purpose: a column the stream does not declare, a reserved column
 * name or a value of the wrong type is a 400, where the service may drop it quietly. A body that is
 * JSON but not an array is answered 204 and stores nothing, as the service does. Error bodies are
 * `{"error":{"code","message"}}`; the codes are the documented ones where known (403
 * `OperationFailed`, 413 `ContentLengthLimitExceeded`), illustrative elsewhere.
 */

export type StreamColumnType = "string" | "datetime" | "dynamic" | "boolean" | "long" | "int" | "real";

export interface FakeLogsIngestionOptions extends TlsMaterial {
  /** The only bearer token accepted; another token gets 403, none (or a malformed header) 401. */
  acceptedToken: string;
  dcrImmutableId: string;
  streamName: string;
  columns: ReadonlyArray<{ name: string; type: StreamColumnType }>;
}

/** An injected answer: a status (and Retry-After) instead of ingesting. */
export interface IngestionFailure {
  status: number;
  code?: string;
  retryAfterSeconds?: number;
}

export interface IngestionRequest {
  status: number;
  path: string;
  gzip: boolean;
  compressedBytes: number;
  uncompressedBytes: number;
  /** Records in the body (0 when it was not an array of records). */
  records: number;
  /** Set on 204: the ingested rows' values of `idColumn` (see `acceptedIds`). */
  ids: string[];
}

/** The 1 MB per call, read strictly: 1,000,000 bytes. */
export const MAX_CALL_BYTES = 1_000_000;
/** 64 KB per field, read strictly; the service cuts longer values without saying so. */
export const MAX_FIELD_BYTES = 64_000;
export const API_VERSION = "2023-01-01";
const RESERVED_COLUMNS = new Set(["TenantId", "Title", "Type", "id", "_ResourceId", "_SubscriptionId", "UniqueId"]);

class IngestionError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class FakeLogsIngestion extends FakeHttpsServer {
  /** Which column names a record in `acceptedIds`/`requests().ids`. */
  idColumn = "AlertId";

  private readonly options: FakeLogsIngestionOptions;
  private readonly columns: Map<string, StreamColumnType>;
  private readonly stored: Array<Record<string, unknown>> = [];
  private readonly seen: IngestionRequest[] = [];
  private truncations = 0;
  private failure: (IngestionFailure & { remaining: number }) | undefined;
  private failWhenRule: ((records: ReadonlyArray<Record<string, unknown>>) => IngestionFailure | undefined) | undefined;
  private hangsLeft = 0;
  private readonly hung = new Set<ServerResponse>();

  constructor(options: FakeLogsIngestionOptions) {
    super(options);
    this.options = options;
    registerSecrets(() => [this.options.acceptedToken], "fake Logs Ingestion accepted token");
    this.columns = new Map(options.columns.map((column) => [column.name, column.type]));
  }

  /** The next `times` authenticated calls (all, without `times`) answer this instead of ingesting. */
  fail(failure: (IngestionFailure & { times?: number }) | null): void {
    this.failure = failure ? { ...failure, remaining: failure.times ?? Number.POSITIVE_INFINITY } : undefined;
  }

  /** Every authenticated, well-formed call whose records make `rule` answer a failure gets it (until cleared with null). */
  failWhen(rule: ((records: ReadonlyArray<Record<string, unknown>>) => IngestionFailure | undefined) | null): void {
    this.failWhenRule = rule ?? undefined;
  }

  /** The next `times` authenticated calls (or all, until hang(0)) are read and never answered. */
  hang(times: number | "all"): void {
    this.hangsLeft = times === "all" ? Number.POSITIVE_INFINITY : Math.max(0, times);
  }

  get hanging(): number {
    return this.hung.size;
  }

  /** Every stored row, as the table holds it (fields over 64 KB cut). */
  rows(): Array<Record<string, unknown>> {
    return this.stored.map((row) => ({ ...row }));
  }

  requests(): IngestionRequest[] {
    return this.seen.map((request) => ({ ...request, ids: [...request.ids] }));
  }

  /** `idColumn` values of every row stored, one entry per stored row (a duplicate shows twice). */
  acceptedIds(): string[] {
    return this.seen.flatMap((request) => request.ids);
  }

  /** Fields the fake cut at 64 KB: a client that respects the limit leaves this at 0. */
  get truncatedFields(): number {
    return this.truncations;
  }

  reset(): void {
    this.stored.length = 0;
    this.seen.length = 0;
    this.truncations = 0;
    this.failure = undefined;
    this.failWhenRule = undefined;
    this.hangsLeft = 0;
  }

  override async stop(): Promise<void> {
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    await super.stop();
  }

  protected override internalError(res: ServerResponse, err: unknown): void {
    sendJson(res, 500, { error: { code: "InternalServerError", message: `fake ingestion bug: ${String(err)}` } });
  }

  protected override handle(req: FakeRequest, res: ServerResponse): void {
    const request: IngestionRequest = {
      status: 0,
      path: req.url.pathname,
      gzip: /^gzip$/i.test(String(req.headers["content-encoding"] ?? "")),
      compressedBytes: req.body.length,
      uncompressedBytes: req.body.length,
      records: 0,
      ids: [],
    };
    this.seen.push(request);
    try {
      this.authorize(req.headers.authorization);
      this.route(req);
      if (this.hangsLeft > 0) {
        this.hangsLeft -= 1;
        this.hung.add(res);
        res.on("close", () => this.hung.delete(res));
        request.status = -1;
        return;
      }
      const records = this.parse(req, request);
      const injected = this.injectedFailure(records);
      if (injected) {
        request.status = injected.status;
        const headers: Record<string, string> = injected.retryAfterSeconds === undefined ? {} : { "retry-after": String(injected.retryAfterSeconds) };
        sendJson(res, injected.status, { error: { code: injected.code ?? defaultCode(injected.status), message: `Injected failure (HTTP ${injected.status}).` } }, headers);
        return;
      }
      for (const record of records) this.validate(record);
      for (const record of records) this.stored.push(this.truncated(record));
      request.ids = records.map((record) => String(record[this.idColumn]));
      request.status = 204;
      sendEmpty(res, 204);
    } catch (err) {
      if (!(err instanceof IngestionError)) throw err;
      request.status = err.status;
      const headers: Record<string, string> = err.status === 413 ? { "x-ms-error-code": err.code } : err.status === 401 ? { "www-authenticate": "Bearer" } : {};
      sendJson(res, err.status, { error: { code: err.code, message: err.message } }, headers);
    }
  }

  private authorize(header: string | undefined): void {
    const token = /^Bearer ([^\s]+)$/.exec(header ?? "")?.[1];
    if (token === undefined) throw new IngestionError(401, "InvalidToken", "The request carries no bearer token.");
    if (token !== this.options.acceptedToken) {
      // The service's text for a principal without the role on the DCR.
      throw new IngestionError(
        403,
        "OperationFailed",
        `The authentication token provided does not have access to ingest data for the data collection rule with immutable Id '${this.options.dcrImmutableId}'.`,
      );
    }
  }

  private route(req: FakeRequest): void {
    const match = /^\/dataCollectionRules\/([^/]+)\/streams\/([^/]+)$/.exec(req.url.pathname);
    if (!match) throw new IngestionError(404, "NotFound", "No such route.");
    if (req.method !== "POST") throw new IngestionError(405, "MethodNotAllowed", "Only POST is supported.");
    if (req.url.searchParams.get("api-version") !== API_VERSION) throw new IngestionError(400, "InvalidApiVersion", "The api-version is missing or not supported.");
    if (decodeURIComponent(match[1] ?? "") !== this.options.dcrImmutableId) throw new IngestionError(404, "InvalidDataCollectionRule", "The data collection rule is not known at this endpoint.");
    if (decodeURIComponent(match[2] ?? "") !== this.options.streamName) throw new IngestionError(404, "InvalidStream", "The stream is not declared by the data collection rule.");
    if (!/^application\/json\b/i.test(String(req.headers["content-type"] ?? ""))) throw new IngestionError(415, "UnsupportedMediaType", "The body must be application/json.");
  }

  /** The body's records: gunzipped when so marked, size-checked before and after, parsed. */
  private parse(req: FakeRequest, request: IngestionRequest): Array<Record<string, unknown>> {
    if (req.body.length > MAX_CALL_BYTES) throw tooLarge();
    let text: Buffer = req.body;
    if (request.gzip) {
      try {
        text = gunzipSync(req.body, { maxOutputLength: MAX_CALL_BYTES + 1 });
      } catch (err) {
        if (err instanceof RangeError) throw tooLarge();
        throw new IngestionError(400, "InvalidContentEncoding", "The body is not valid gzip.");
      }
    }
    request.uncompressedBytes = text.length;
    if (text.length > MAX_CALL_BYTES) throw tooLarge();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text.toString("utf8"));
    } catch {
      throw new IngestionError(400, "InvalidJson", "The body is not valid JSON.");
    }
    // The service answers 204 to a JSON object and stores nothing: only arrays are ingested.
    if (!Array.isArray(parsed)) return [];
    if (!parsed.every(isRecord)) throw new IngestionError(400, "InvalidRecord", "Every element of the array must be a JSON object.");
    request.records = parsed.length;
    return parsed;
  }

  private injectedFailure(records: ReadonlyArray<Record<string, unknown>>): IngestionFailure | undefined {
    if (this.failure && this.failure.remaining > 0) {
      this.failure.remaining -= 1;
      const failure = this.failure;
      if (failure.remaining <= 0) this.failure = undefined;
      return failure;
    }
    return this.failWhenRule?.(records);
  }

  private validate(record: Record<string, unknown>): void {
    for (const [name, value] of Object.entries(record)) {
      if (RESERVED_COLUMNS.has(name)) throw new IngestionError(400, "InvalidColumnName", `Column '${name}' is a reserved name.`);
      const type = this.columns.get(name);
      if (type === undefined) throw new IngestionError(400, "InvalidColumnName", `Column '${name}' is not declared by the stream.`);
      if (value !== null && !matchesType(value, type)) throw new IngestionError(400, "InvalidColumnValue", `Column '${name}' does not hold a ${type}.`);
    }
  }

  /** The row as stored: strings and dynamic values over 64 KB cut, as the service does without a word. */
  private truncated(record: Record<string, unknown>): Record<string, unknown> {
    const row: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(record)) {
      const text = typeof value === "string" ? value : this.columns.get(name) === "dynamic" ? JSON.stringify(value) : undefined;
      if (text === undefined || Buffer.byteLength(text, "utf8") <= MAX_FIELD_BYTES) {
        row[name] = value;
        continue;
      }
      this.truncations++;
      // A cut dynamic value no longer parses: it is kept as the cut text.
      row[name] = Buffer.from(text, "utf8").subarray(0, MAX_FIELD_BYTES).toString("utf8");
    }
    return row;
  }
}

function matchesType(value: unknown, type: StreamColumnType): boolean {
  switch (type) {
    case "string":
      return typeof value === "string";
    case "datetime":
      return typeof value === "string" && Number.isFinite(Date.parse(value));
    case "boolean":
      return typeof value === "boolean";
    case "long":
    case "int":
      return typeof value === "number" && Number.isInteger(value);
    case "real":
      return typeof value === "number";
    case "dynamic":
      return true;
  }
}

function tooLarge(): IngestionError {
  return new IngestionError(413, "ContentLengthLimitExceeded", `A call may carry at most ${MAX_CALL_BYTES} bytes, compressed or not.`);
}

function defaultCode(status: number): string {
  if (status === 429) return "TooManyRequests";
  if (status === 503) return "ServiceUnavailable";
  return status >= 500 ? "InternalServerError" : "BadRequest";
}
