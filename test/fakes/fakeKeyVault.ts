import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import {
  FakeHttpsServer,
  isRecord,
  parseJsonObject,
  sendEmpty,
  sendJson,
  type FakeRequest,
  type TlsMaterial,
} from "./http";

/**
 * In-memory stand-in for the Key Vault secrets data plane, shaped after what
 * @azure/keyvault-secrets 4.11 sends (generated operations in dist/commonjs/api/operations.js)
 * and what the service answers. Only the secrets surface exists; keys/certificates 404.
 */

export interface FakeKeyVaultOptions extends TlsMaterial {
  /** The only bearer token accepted; any other token or none gets the challenge 401. */
  acceptedToken: string;
  /** Tenant put into the WWW-Authenticate challenge; the SDK passes it to getToken. */
  tenantId: string;
}

export interface KeyVaultFailure {
  status: number;
  code?: string;
  /** How many authenticated requests fail; omitted means every one until cleared. */
  times?: number;
  /** Sent as Retry-After; the SDK's throttling policy then waits that long instead of its exponential backoff. */
  retryAfterSeconds?: number;
}

export interface KeyVaultStats {
  get: number;
  set: number;
  update: number;
  delete: number;
  list: number;
}

/** What onRequest hooks see of a secret request; name and version are percent-decoded path segments. */
export interface SecretRequestInfo {
  method: string;
  /** The secret name, or undefined for collection routes such as the secret listing. */
  name: string | undefined;
  /** The version segment of /secrets/{name}/{version}, else undefined. */
  version: string | undefined;
}

export type SecretRequestHook = (req: SecretRequestInfo) => void | Promise<void>;

export interface PutSecretOptions {
  tags?: Record<string, string>;
  contentType?: string;
}

export interface SecretPeek {
  value: string;
  enabled: boolean;
  contentType?: string;
  tags?: Record<string, string>;
  versions: number;
}

interface SecretVersion {
  version: string;
  value: string;
  contentType?: string;
  tags?: Record<string, string>;
  enabled: boolean;
  exp?: number;
  nbf?: number;
  created: number;
  updated: number;
}

interface SecretRecord {
  /** Casing of the first PUT; Key Vault names are case-insensitive but keep their original spelling. */
  name: string;
  versions: SecretVersion[];
  deleted?: { deletedDate: number; scheduledPurgeDate: number };
}

const NAME_PATTERN = /^[0-9a-zA-Z-]{1,127}$/;
const MAX_VALUE_BYTES = 25 * 1024;
const MAX_TAGS = 15;
const RETENTION_DAYS = 90;
const RECOVERY_LEVEL = "Recoverable+Purgeable";

class KvError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly innerCode?: string,
  ) {
    super(message);
  }
}

export class FakeKeyVault extends FakeHttpsServer {
  readonly stats: KeyVaultStats = { get: 0, set: 0, update: 0, delete: 0, list: 0 };

  private readonly acceptedToken: string;
  private readonly tenantId: string;
  private readonly secrets = new Map<string, SecretRecord>();
  private failure: { status: number; code: string; remaining: number; retryAfterSeconds?: number } | undefined;
  private down = false;
  /** Authenticated secret requests still to be swallowed; Infinity for hang("all"). */
  private hangsLeft = 0;
  /** Responses held open by hang(), destroyed on stop() so it does not wait for the client to give up. */
  private readonly hung = new Set<ServerResponse>();
  private requestHook: SecretRequestHook | null = null;

  constructor(options: FakeKeyVaultOptions) {
    super(options);
    this.acceptedToken = options.acceptedToken;
    this.tenantId = options.tenantId;
  }

  setFailure(failure: KeyVaultFailure | null): void {
    this.failure = failure
      ? {
          status: failure.status,
          code: failure.code ?? defaultErrorCode(failure.status),
          remaining: failure.times ?? Number.POSITIVE_INFINITY,
          ...(failure.retryAfterSeconds !== undefined ? { retryAfterSeconds: failure.retryAfterSeconds } : {}),
        }
      : undefined;
  }

  /** While down every vault connection is destroyed mid-request, which clients see as a network error. */
  setDown(down: boolean): void {
    this.down = down;
  }

  /** The next `times` authenticated secret requests (or all of them, until hang(0)) are read and never answered. */
  hang(times: number | "all"): void {
    this.hangsLeft = times === "all" ? Number.POSITIVE_INFINITY : Math.max(0, times);
  }

  /** How many requests hang() is holding open right now. */
  get hanging(): number {
    return this.hung.size;
  }

  /**
   * Awaited after authentication and before each secret request is processed,
   * so a test can change the store between a client's read and its write (use
   * putSecret, not HTTP, from inside: an HTTP call would run the hook again).
   */
  onRequest(hook: SecretRequestHook | null): void {
    this.requestHook = hook;
  }

  /**
   * Adds a version to a live secret, or creates the secret, as a PUT would but
   * without HTTP or stats. A soft-deleted name is not recovered: that throws,
   * as the PUT's 409 would. Returns the new version id.
   */
  putSecret(name: string, value: string, options: PutSecretOptions = {}): string {
    const fields: Record<string, unknown> = {};
    if (options.tags !== undefined) fields.tags = options.tags;
    if (options.contentType !== undefined) fields.contentType = options.contentType;
    return this.addVersion(name, value, fields, {}).version.version;
  }

  override async stop(): Promise<void> {
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    await super.stop();
  }

  resetStats(): void {
    this.stats.get = 0;
    this.stats.set = 0;
    this.stats.update = 0;
    this.stats.delete = 0;
    this.stats.list = 0;
  }

  /** Latest version of a live (not soft-deleted) secret, read without going through HTTP or counting stats. */
  peekLatest(name: string): SecretPeek | undefined {
    const record = this.secrets.get(name.toLowerCase());
    const latest = record?.versions.at(-1);
    if (!record || record.deleted || !latest) return undefined;
    const peek: SecretPeek = { value: latest.value, enabled: latest.enabled, versions: record.versions.length };
    if (latest.contentType !== undefined) peek.contentType = latest.contentType;
    if (latest.tags !== undefined) peek.tags = { ...latest.tags };
    return peek;
  }

  /** Every value ever stored, including old versions and deleted secrets, so tests can search logs for them. */
  allValues(): string[] {
    return [...this.secrets.values()].flatMap((r) => r.versions.map((v) => v.value));
  }

  protected override intercept(req: IncomingMessage, _res: ServerResponse): boolean {
    if (!this.down || (req.url ?? "").startsWith("/_fake/")) return false;
    req.socket.destroy();
    return true;
  }

  protected override internalError(res: ServerResponse, err: unknown): void {
    sendJson(res, 500, { error: { code: "InternalServerError", message: `fake vault bug: ${String(err)}` } });
  }

  protected override async handle(req: FakeRequest, res: ServerResponse): Promise<void> {
    const path = req.url.pathname;
    if (path.startsWith("/_fake/")) {
      this.handleControl(req, res);
      return;
    }
    if (!this.isAuthorized(req)) {
      this.challenge(res, req.headers.authorization !== undefined);
      return;
    }
    if (this.hangsLeft > 0) {
      this.hangsLeft -= 1;
      this.holdOpen(res);
      return;
    }
    try {
      // Claimed before the hook is awaited, so injected failures still count in arrival order.
      if (this.failure && this.failure.remaining > 0) {
        this.failure.remaining -= 1;
        const { status, code, retryAfterSeconds } = this.failure;
        if (this.failure.remaining <= 0) this.failure = undefined;
        const headers: Record<string, string> =
          retryAfterSeconds !== undefined ? { "retry-after": String(retryAfterSeconds) } : {};
        sendJson(res, status, { error: { code, message: `Injected failure (HTTP ${status}).` } }, headers);
        return;
      }
      if (this.requestHook) await this.requestHook(describeSecretRequest(req));
      if (!req.url.searchParams.get("api-version")) {
        throw new KvError(400, "BadParameter", "The 'api-version' query parameter is missing.");
      }
      this.route(req, res);
    } catch (err) {
      if (!(err instanceof KvError)) throw err;
      const error: Record<string, unknown> = { code: err.code, message: err.message };
      if (err.innerCode) error.innererror = { code: err.innerCode };
      sendJson(res, err.status, { error });
    }
  }

  private holdOpen(res: ServerResponse): void {
    this.hung.add(res);
    res.on("close", () => this.hung.delete(res));
  }

  private isAuthorized(req: FakeRequest): boolean {
    return req.headers.authorization === `Bearer ${this.acceptedToken}`;
  }

  /** The SDK only acquires a token after this exact challenge; a 401 without it or with an empty body makes the SDK throw a TypeError. */
  private challenge(res: ServerResponse, hadToken: boolean): void {
    sendJson(
      res,
      401,
      {
        error: {
          code: "Unauthorized",
          message: hadToken
            ? "AKV10032: Invalid issuer or the access token is not valid for this vault."
            : "AKV10000: Request is missing a Bearer or PoP token.",
        },
      },
      {
        "www-authenticate": `Bearer authorization="https://login.microsoftonline.com/${this.tenantId}", resource="https://vault.azure.net"`,
      },
    );
  }

  private handleControl(req: FakeRequest, res: ServerResponse): void {
    const path = req.url.pathname;
    if (req.method === "GET" && path === "/_fake/stats") {
      sendJson(res, 200, this.stats);
    } else if (req.method === "POST" && path === "/_fake/reset-stats") {
      this.resetStats();
      sendEmpty(res, 204);
    } else if (req.method === "POST" && path === "/_fake/failure") {
      const body = parseJsonObject(req.body);
      const status = body?.status;
      this.setFailure(
        typeof status === "number"
          ? {
              status,
              ...(typeof body?.code === "string" ? { code: body.code } : {}),
              ...(typeof body?.times === "number" ? { times: body.times } : {}),
              ...(typeof body?.retryAfterSeconds === "number" ? { retryAfterSeconds: body.retryAfterSeconds } : {}),
            }
          : null,
      );
      sendEmpty(res, 204);
    } else if (req.method === "POST" && path === "/_fake/down") {
      this.setDown(parseJsonObject(req.body)?.down === true);
      sendEmpty(res, 204);
    } else {
      sendJson(res, 404, { error: { code: "NotFound", message: `No fake control route ${req.method} ${path}` } });
    }
  }

  private route(req: FakeRequest, res: ServerResponse): void {
    // Segments are percent-decoded individually so an encoded '/' cannot change the route shape.
    const segments = req.url.pathname.split("/").slice(1).map(decodeSegment);
    const [collection, name, third] = segments;
    const m = req.method;

    if (collection === "secrets") {
      if (segments.length === 1 || (segments.length === 2 && name === "")) {
        if (m === "GET") return this.listSecrets(res);
        throw methodNotAllowed(m);
      }
      if (name === undefined) throw notFoundRoute(req);
      if (name === "restore" && segments.length === 2 && m === "POST") {
        throw new KvError(501, "NotImplemented", "Backup/restore is not supported by the fake vault.");
      }
      if (segments.length === 2) {
        if (m === "PUT") return this.setSecret(name, req.body, res);
        if (m === "GET") return this.getSecret(name, "", res);
        if (m === "DELETE") return this.deleteSecret(name, res);
        if (m === "PATCH") return this.updateSecret(name, "", req.body, res);
        throw methodNotAllowed(m);
      }
      if (segments.length === 3 && third !== undefined) {
        if (third === "versions" && m === "GET") return this.listVersions(name, res);
        if (third === "backup" && m === "POST") {
          throw new KvError(501, "NotImplemented", "Backup/restore is not supported by the fake vault.");
        }
        if (m === "GET") return this.getSecret(name, third, res);
        if (m === "PATCH") return this.updateSecret(name, third, req.body, res);
        throw methodNotAllowed(m);
      }
      throw notFoundRoute(req);
    }

    if (collection === "deletedsecrets") {
      if (segments.length === 1) {
        if (m === "GET") return this.listDeleted(res);
        throw methodNotAllowed(m);
      }
      if (name === undefined || name === "") throw notFoundRoute(req);
      if (segments.length === 2) {
        if (m === "GET") return this.getDeleted(name, res);
        if (m === "DELETE") return this.purge(name, res);
        throw methodNotAllowed(m);
      }
      if (segments.length === 3 && third === "recover") {
        if (m === "POST") return this.recover(name, res);
        throw methodNotAllowed(m);
      }
    }
    throw notFoundRoute(req);
  }

  private setSecret(name: string, rawBody: Buffer, res: ServerResponse): void {
    checkName(name);
    const body = parseJsonObject(rawBody);
    if (!body) throw new KvError(400, "BadParameter", "The request body is missing or is not a JSON object.");
    const value = body.value;
    if (typeof value !== "string") throw new KvError(400, "BadParameter", "Property 'value' is required.");
    const attributes = isRecord(body.attributes) ? body.attributes : {};
    const { record, version } = this.addVersion(name, value, body, attributes);
    this.stats.set += 1;
    sendJson(res, 200, this.bundle(record, version, true));
  }

  /** The shared part of PUT and putSecret: validates, then appends a version (creating the secret if needed). */
  private addVersion(
    name: string,
    value: string,
    fields: Record<string, unknown>,
    attributes: Record<string, unknown>,
  ): { record: SecretRecord; version: SecretVersion } {
    checkName(name);
    if (Buffer.byteLength(value, "utf8") > MAX_VALUE_BYTES) {
      throw new KvError(400, "BadParameter", `Secret value exceeds the maximum of ${MAX_VALUE_BYTES} bytes.`);
    }
    const key = name.toLowerCase();
    const existing = this.secrets.get(key);
    if (existing?.deleted) {
      throw new KvError(
        409,
        "Conflict",
        `Secret ${existing.name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.`,
      );
    }
    const now = nowSeconds();
    const version: SecretVersion = {
      version: randomBytes(16).toString("hex"),
      value,
      enabled: typeof attributes.enabled === "boolean" ? attributes.enabled : true,
      created: now,
      updated: now,
    };
    applyMutableFields(version, fields, attributes);
    const record = existing ?? { name, versions: [] };
    record.versions.push(version);
    this.secrets.set(key, record);
    return { record, version };
  }

  private getSecret(name: string, versionId: string, res: ServerResponse): void {
    const record = this.liveRecord(name);
    const version = versionId === "" ? record.versions.at(-1) : record.versions.find((v) => v.version === versionId);
    if (!version) throw secretNotFound(versionId === "" ? name : `${name}/${versionId}`);
    if (!version.enabled) {
      throw new KvError(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled");
    }
    this.stats.get += 1;
    sendJson(res, 200, this.bundle(record, version, true));
  }

  private updateSecret(name: string, versionId: string, rawBody: Buffer, res: ServerResponse): void {
    const record = this.liveRecord(name);
    const version = versionId === "" ? record.versions.at(-1) : record.versions.find((v) => v.version === versionId);
    if (!version) throw secretNotFound(versionId === "" ? name : `${name}/${versionId}`);
    const body = parseJsonObject(rawBody);
    if (!body) throw new KvError(400, "BadParameter", "The request body is missing or is not a JSON object.");
    const attributes = isRecord(body.attributes) ? body.attributes : {};
    if (typeof attributes.enabled === "boolean") version.enabled = attributes.enabled;
    applyMutableFields(version, body, attributes);
    version.updated = nowSeconds();
    this.stats.update += 1;
    sendJson(res, 200, this.bundle(record, version, false));
  }

  private deleteSecret(name: string, res: ServerResponse): void {
    const record = this.liveRecord(name);
    const now = nowSeconds();
    record.deleted = { deletedDate: now, scheduledPurgeDate: now + RETENTION_DAYS * 24 * 3600 };
    this.stats.delete += 1;
    sendJson(res, 200, this.deletedBundle(record));
  }

  private getDeleted(name: string, res: ServerResponse): void {
    const record = this.deletedRecord(name);
    this.stats.get += 1;
    sendJson(res, 200, this.deletedBundle(record));
  }

  private purge(name: string, res: ServerResponse): void {
    const record = this.deletedRecord(name);
    this.secrets.delete(record.name.toLowerCase());
    this.stats.delete += 1;
    sendEmpty(res, 204);
  }

  private recover(name: string, res: ServerResponse): void {
    const record = this.deletedRecord(name);
    delete record.deleted;
    const latest = record.versions.at(-1);
    if (!latest) throw secretNotFound(name);
    this.stats.update += 1;
    sendJson(res, 200, this.bundle(record, latest, false));
  }

  private listSecrets(res: ServerResponse): void {
    const value = [...this.secrets.values()]
      .filter((r) => !r.deleted)
      .flatMap((r) => {
        const latest = r.versions.at(-1);
        return latest ? [this.item(`${this.url}/secrets/${r.name}`, latest)] : [];
      });
    this.stats.list += 1;
    sendJson(res, 200, { value, nextLink: null });
  }

  private listVersions(name: string, res: ServerResponse): void {
    checkName(name);
    const record = this.secrets.get(name.toLowerCase());
    // The service lists nothing (rather than 404) for an unknown or soft-deleted name.
    const versions = record && !record.deleted ? record.versions : [];
    const value = versions.map((v) => this.item(`${this.url}/secrets/${record?.name ?? name}/${v.version}`, v));
    this.stats.list += 1;
    sendJson(res, 200, { value, nextLink: null });
  }

  private listDeleted(res: ServerResponse): void {
    const value = [...this.secrets.values()]
      .filter((r) => r.deleted)
      .flatMap((r) => {
        const latest = r.versions.at(-1);
        if (!latest || !r.deleted) return [];
        return [
          {
            ...this.item(`${this.url}/secrets/${r.name}`, latest),
            recoveryId: `${this.url}/deletedsecrets/${r.name}`,
            deletedDate: r.deleted.deletedDate,
            scheduledPurgeDate: r.deleted.scheduledPurgeDate,
          },
        ];
      });
    this.stats.list += 1;
    sendJson(res, 200, { value, nextLink: null });
  }

  private liveRecord(name: string): SecretRecord {
    checkName(name);
    const record = this.secrets.get(name.toLowerCase());
    if (!record || record.deleted || record.versions.length === 0) throw secretNotFound(name);
    return record;
  }

  private deletedRecord(name: string): SecretRecord {
    checkName(name);
    const record = this.secrets.get(name.toLowerCase());
    if (!record?.deleted) {
      throw new KvError(404, "SecretNotFound", `Deleted Secret not found: ${name}`);
    }
    return record;
  }

  private bundle(record: SecretRecord, version: SecretVersion, withValue: boolean): Record<string, unknown> {
    const bundle: Record<string, unknown> = {};
    if (withValue) bundle.value = version.value;
    bundle.id = `${this.url}/secrets/${record.name}/${version.version}`;
    if (version.contentType !== undefined) bundle.contentType = version.contentType;
    bundle.attributes = attributesJson(version);
    bundle.tags = version.tags ?? {};
    return bundle;
  }

  /** A deleted bundle never carries the value, like the service. */
  private deletedBundle(record: SecretRecord): Record<string, unknown> {
    const latest = record.versions.at(-1);
    if (!latest || !record.deleted) throw secretNotFound(record.name);
    return {
      ...this.bundle(record, latest, false),
      recoveryId: `${this.url}/deletedsecrets/${record.name}`,
      deletedDate: record.deleted.deletedDate,
      scheduledPurgeDate: record.deleted.scheduledPurgeDate,
    };
  }

  private item(id: string, version: SecretVersion): Record<string, unknown> {
    const item: Record<string, unknown> = { id, attributes: attributesJson(version), tags: version.tags ?? {} };
    if (version.contentType !== undefined) item.contentType = version.contentType;
    return item;
  }
}

function attributesJson(version: SecretVersion): Record<string, unknown> {
  const attributes: Record<string, unknown> = { enabled: version.enabled };
  if (version.nbf !== undefined) attributes.nbf = version.nbf;
  if (version.exp !== undefined) attributes.exp = version.exp;
  attributes.created = version.created;
  attributes.updated = version.updated;
  attributes.recoveryLevel = RECOVERY_LEVEL;
  attributes.recoverableDays = RETENTION_DAYS;
  return attributes;
}

/** contentType, tags, exp and nbf are settable both on PUT and on PATCH. */
function applyMutableFields(version: SecretVersion, body: Record<string, unknown>, attributes: Record<string, unknown>): void {
  if (typeof body.contentType === "string") {
    if (body.contentType.length > 255) throw new KvError(400, "BadParameter", "contentType exceeds 255 characters.");
    version.contentType = body.contentType;
  }
  if (isRecord(body.tags)) version.tags = parseTags(body.tags);
  if (typeof attributes.exp === "number") version.exp = attributes.exp;
  if (typeof attributes.nbf === "number") version.nbf = attributes.nbf;
}

function parseTags(raw: Record<string, unknown>): Record<string, string> {
  const entries = Object.entries(raw);
  if (entries.length > MAX_TAGS) throw new KvError(400, "BadParameter", `A secret can have at most ${MAX_TAGS} tags.`);
  const tags: Record<string, string> = {};
  for (const [k, v] of entries) {
    if (typeof v !== "string" || k.length > 256 || v.length > 256) {
      throw new KvError(400, "BadParameter", `Invalid tag '${k}': names and values are strings of at most 256 characters.`);
    }
    tags[k] = v;
  }
  return tags;
}

/** Names the secret (and version) a request targets, as route() reads the path. */
function describeSecretRequest(req: FakeRequest): SecretRequestInfo {
  const [collection, name, third] = req.url.pathname.split("/").slice(1).map(decodeSegment);
  const isSecretPath = collection === "secrets" || collection === "deletedsecrets";
  const named = isSecretPath && name !== undefined && name !== "";
  // secrets/{name}/versions and /backup are actions on the secret, not a version id.
  // An empty third segment (GET /secrets/{name}/) is the SDK asking for the latest version.
  const isVersion = collection === "secrets" && third !== undefined && third !== "" && third !== "versions" && third !== "backup";
  return { method: req.method, name: named ? name : undefined, version: named && isVersion ? third : undefined };
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    // Malformed escapes stay as typed and then fail the name check, as a 400 rather than a crash.
    return segment;
  }
}

function checkName(name: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new KvError(
      400,
      "BadParameter",
      `The request URI contains an invalid name: ${name}. Names may only contain 0-9, a-z, A-Z and -, up to 127 characters.`,
    );
  }
}

function secretNotFound(nameOrId: string): KvError {
  return new KvError(
    404,
    "SecretNotFound",
    `A secret with (name/id) ${nameOrId} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command.`,
  );
}

function methodNotAllowed(method: string): KvError {
  return new KvError(405, "MethodNotAllowed", `The requested resource does not support http method '${method}'.`);
}

function notFoundRoute(req: FakeRequest): KvError {
  return new KvError(404, "NotFound", `No route for ${req.method} ${req.url.pathname} in the fake vault.`);
}

function defaultErrorCode(status: number): string {
  switch (status) {
    case 400:
      return "BadParameter";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "NotFound";
    case 409:
      return "Conflict";
    case 429:
      return "Throttled";
    case 503:
      return "ServiceUnavailable";
    default:
      return status >= 500 ? "InternalServerError" : "BadRequest";
  }
}

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}
