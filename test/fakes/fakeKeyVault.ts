import { randomBytes } from "node:crypto";
import { registerSecrets } from "../harness/secrecy";
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
  /** The unkind modes below start off (instant deletes, one page); setRealism() changes them later. */
  realism?: KeyVaultRealism;
}

/**
 * How much like the service the fake behaves where that costs time or requests. The defaults
 * (all zero or unset) keep the older instant behaviour other tests were written against.
 */
export interface KeyVaultRealism {
  /**
   * A DELETE is accepted at once but the soft delete completes this much later. Meanwhile the
   * secret is neither readable nor listed as deleted (GET /deletedsecrets/{name} 404s, which the
   * SDK's delete poller reads as "still running"), and a PUT, recover or second DELETE answers 409
   * `ObjectIsBeingDeleted`, as the service does.
   */
  deleteDelayMs?: number;
  /** The same for a recover: the secret comes back only this much later, 409 `ObjectIsBeingRecovered` meanwhile. */
  recoverDelayMs?: number;
  /**
   * Lists answer at most this many items per page with a `nextLink` (the service pages at 25);
   * unset means one page. A request's `maxresults` can only lower it.
   */
  pageSize?: number;
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
  /**
   * The creation time the version reports (default now). The service does not promise to list a
   * secret's versions oldest first, and a restored backup keeps its versions' creation times:
   * this lets a test list versions in another order than their age.
   */
  createdOn?: Date;
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
  /** A delete or recover the service has accepted but not finished: the name is in neither state until `until` (epoch ms). */
  pending?: { kind: "deleting" | "recovering"; until: number };
}

/** Where a name stands; `state()` settles first, so a finished delete or recover is seen as done. */
export type SecretState = "absent" | "live" | "deleting" | "deleted" | "recovering";

/** A 409 the fake answered because a name was in transit, with the innererror code a client has to act on. */
export interface KeyVaultConflict {
  method: string;
  name: string;
  innerCode: string;
}

const NAME_PATTERN = /^[0-9a-zA-Z-]{1,127}$/;
const MAX_VALUE_BYTES = 25 * 1024;
const MAX_TAGS = 15;
const RETENTION_DAYS = 90;
const RECOVERY_LEVEL = "Recoverable+Purgeable";

export class KvError extends Error {
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
  /** Every 409 answered because a name was deleted or a delete or recover still running, oldest first (cleared by resetStats). */
  readonly conflicts: KeyVaultConflict[] = [];
  /**
   * How many challenge 401s were sent, and how many of them to a request with no token at all
   * (the SDK's first request on a client): proof that the challenge path ran.
   */
  readonly challenges = { total: 0, withoutToken: 0 };
  private readonly realism: { deleteDelayMs: number; recoverDelayMs: number; pageSize: number | undefined } = {
    deleteDelayMs: 0,
    recoverDelayMs: 0,
    pageSize: undefined,
  };

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
    this.setRealism(options.realism ?? {});
    // For the after-each secrecy scan: its bearer token and every value ever stored in it.
    registerSecrets(() => [this.acceptedToken, ...this.allValues()], "fake Key Vault token or stored value");
  }

  /** Changes the given realism settings (see KeyVaultRealism); omitted ones keep their value. A pageSize of 0 means one page again. */
  setRealism(realism: KeyVaultRealism): void {
    if (realism.deleteDelayMs !== undefined) this.realism.deleteDelayMs = Math.max(0, realism.deleteDelayMs);
    if (realism.recoverDelayMs !== undefined) this.realism.recoverDelayMs = Math.max(0, realism.recoverDelayMs);
    if (realism.pageSize !== undefined) this.realism.pageSize = realism.pageSize > 0 ? Math.floor(realism.pageSize) : undefined;
  }

  /** Where a name stands now, without HTTP or stats: lets a test tell a finished delete from one still running. */
  stateOf(name: string): SecretState {
    return this.state(this.secrets.get(name.toLowerCase()));
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
    const { version } = this.addVersion(name, value, fields, {});
    if (options.createdOn !== undefined) version.created = Math.floor(options.createdOn.getTime() / 1000);
    return version.version;
  }

  /** Enables or disables one version of a live secret, as a PATCH of its attributes would, without HTTP or stats. */
  setEnabled(name: string, version: string, enabled: boolean): void {
    const found = this.liveRecord(name).versions.find((v) => v.version === version);
    if (!found) throw secretNotFound(`${name}/${version}`);
    found.enabled = enabled;
  }

  /** Soft-deletes a live secret at once, as a finished DELETE would, without HTTP or stats (for races set up from a request hook). */
  softDelete(name: string): void {
    const record = this.liveRecord(name);
    const now = nowSeconds();
    record.deleted = { deletedDate: now, scheduledPurgeDate: now + RETENTION_DAYS * 24 * 3600 };
  }

  /**
   * The race of an offboarding (or a move to the application model) with a rotation: the next PUT
   * of `name` finds it soft-deleted just before it lands. Returns what disarms the hook.
   */
  softDeleteBeforeNextPut(name: string): () => void {
    let deleted = false;
    this.onRequest((request) => {
      if (deleted || request.method !== "PUT" || request.name !== name) return;
      deleted = true;
      this.softDelete(name);
    });
    return () => this.onRequest(null);
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
    this.conflicts.length = 0;
    this.challenges.total = 0;
    this.challenges.withoutToken = 0;
  }

  /** Latest version of a live (not soft-deleted) secret, read without going through HTTP or counting stats. */
  peekLatest(name: string): SecretPeek | undefined {
    const record = this.secrets.get(name.toLowerCase());
    const latest = record?.versions.at(-1);
    if (!record || this.state(record) !== "live" || !latest) return undefined;
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
    this.challenges.total += 1;
    if (!hadToken) this.challenges.withoutToken += 1;
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
    } else if (req.method === "POST" && path === "/_fake/realism") {
      // For fakes run in another process (the local stack, the bench): same fields as KeyVaultRealism.
      const body = parseJsonObject(req.body);
      const number = (key: string): number | undefined => (typeof body?.[key] === "number" ? body[key] : undefined);
      const deleteDelayMs = number("deleteDelayMs");
      const recoverDelayMs = number("recoverDelayMs");
      const pageSize = number("pageSize");
      this.setRealism({
        ...(deleteDelayMs !== undefined ? { deleteDelayMs } : {}),
        ...(recoverDelayMs !== undefined ? { recoverDelayMs } : {}),
        ...(pageSize !== undefined ? { pageSize } : {}),
      });
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
        if (m === "GET") return this.listSecrets(req, res);
        throw methodNotAllowed(m);
      }
      if (name === undefined) throw notFoundRoute(req);
      if (name === "restore" && segments.length === 2 && m === "POST") {
        throw new KvError(501, "NotImplemented", "Backup/restore is not supported by the fake vault.");
      }
      if (segments.length === 2) {
        if (m === "PUT") return this.setSecret(name, req.body, req, res);
        if (m === "GET") return this.getSecret(name, "", req, res);
        if (m === "DELETE") return this.deleteSecret(name, req, res);
        if (m === "PATCH") return this.updateSecret(name, "", req, res);
        throw methodNotAllowed(m);
      }
      if (segments.length === 3 && third !== undefined) {
        if (third === "versions" && m === "GET") return this.listVersions(name, req, res);
        if (third === "backup" && m === "POST") {
          throw new KvError(501, "NotImplemented", "Backup/restore is not supported by the fake vault.");
        }
        if (m === "GET") return this.getSecret(name, third, req, res);
        if (m === "PATCH") return this.updateSecret(name, third, req, res);
        throw methodNotAllowed(m);
      }
      throw notFoundRoute(req);
    }

    if (collection === "deletedsecrets") {
      if (segments.length === 1) {
        if (m === "GET") return this.listDeleted(req, res);
        throw methodNotAllowed(m);
      }
      if (name === undefined || name === "") throw notFoundRoute(req);
      if (segments.length === 2) {
        if (m === "GET") return this.getDeleted(name, req, res);
        if (m === "DELETE") return this.purge(name, req, res);
        throw methodNotAllowed(m);
      }
      if (segments.length === 3 && third === "recover") {
        if (m === "POST") return this.recover(name, req, res);
        throw methodNotAllowed(m);
      }
    }
    throw notFoundRoute(req);
  }

  private setSecret(name: string, rawBody: Buffer, req: FakeRequest, res: ServerResponse): void {
    checkName(name);
    this.refuseInTransit(req, name, { orDeleted: true });
    const body = parseJsonObject(rawBody);
    if (!body) throw new KvError(400, "BadParameter", "The request body is missing or is not a JSON object.");
    const value = body.value;
    if (typeof value !== "string") throw new KvError(400, "BadParameter", "Property 'value' is required.");
    const attributes = isRecord(body.attributes) ? body.attributes : {};
    const { record, version } = this.addVersion(name, value, body, attributes);
    this.stats.set += 1;
    sendJson(res, 200, this.bundle(record, version, true, req));
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
    const state = this.state(existing);
    if (existing && state !== "live" && state !== "absent") throw conflictFor(state, existing.name);
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

  private getSecret(name: string, versionId: string, req: FakeRequest, res: ServerResponse): void {
    const record = this.liveRecord(name);
    const version = versionId === "" ? record.versions.at(-1) : record.versions.find((v) => v.version === versionId);
    if (!version) throw secretNotFound(versionId === "" ? name : `${name}/${versionId}`);
    if (!version.enabled) {
      throw new KvError(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled");
    }
    this.stats.get += 1;
    sendJson(res, 200, this.bundle(record, version, true, req));
  }

  private updateSecret(name: string, versionId: string, req: FakeRequest, res: ServerResponse): void {
    const rawBody = req.body;
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
    sendJson(res, 200, this.bundle(record, version, false, req));
  }

  private deleteSecret(name: string, req: FakeRequest, res: ServerResponse): void {
    checkName(name);
    // A second DELETE while the first still runs, or one racing a recover, is refused like a PUT.
    this.refuseInTransit(req, name);
    const record = this.liveRecord(name);
    const now = nowSeconds();
    record.deleted = { deletedDate: now, scheduledPurgeDate: now + RETENTION_DAYS * 24 * 3600 };
    if (this.realism.deleteDelayMs > 0) record.pending = { kind: "deleting", until: Date.now() + this.realism.deleteDelayMs };
    this.stats.delete += 1;
    // The answer is the deleted bundle (with recoveryId) at once, even while the delete still runs.
    sendJson(res, 200, this.deletedBundle(record, req));
  }

  private getDeleted(name: string, req: FakeRequest, res: ServerResponse): void {
    const record = this.deletedRecord(name);
    this.stats.get += 1;
    sendJson(res, 200, this.deletedBundle(record, req));
  }

  private purge(name: string, req: FakeRequest, res: ServerResponse): void {
    checkName(name);
    this.refuseInTransit(req, name);
    const record = this.deletedRecord(name);
    this.secrets.delete(record.name.toLowerCase());
    this.stats.delete += 1;
    sendEmpty(res, 204);
  }

  private recover(name: string, req: FakeRequest, res: ServerResponse): void {
    checkName(name);
    this.refuseInTransit(req, name);
    const record = this.deletedRecord(name);
    const latest = record.versions.at(-1);
    if (!latest) throw secretNotFound(name);
    // The deleted marker stays until the recovery finishes: meanwhile the name is in neither state.
    if (this.realism.recoverDelayMs > 0) record.pending = { kind: "recovering", until: Date.now() + this.realism.recoverDelayMs };
    else delete record.deleted;
    this.stats.update += 1;
    sendJson(res, 200, this.bundle(record, latest, false, req));
  }

  private listSecrets(req: FakeRequest, res: ServerResponse): void {
    const base = this.publicUrl(req);
    const items = [...this.secrets.values()]
      .filter((r) => this.state(r) === "live")
      .flatMap((r) => {
        const latest = r.versions.at(-1);
        return latest ? [this.item(`${base}/secrets/${r.name}`, latest)] : [];
      });
    this.stats.list += 1;
    sendJson(res, 200, this.page(req, items));
  }

  private listVersions(name: string, req: FakeRequest, res: ServerResponse): void {
    checkName(name);
    const base = this.publicUrl(req);
    const record = this.secrets.get(name.toLowerCase());
    // The service lists nothing (rather than 404) for an unknown, soft-deleted or in-transit name.
    const versions = record && this.state(record) === "live" ? record.versions : [];
    const items = versions.map((v) => this.item(`${base}/secrets/${record?.name ?? name}/${v.version}`, v));
    this.stats.list += 1;
    sendJson(res, 200, this.page(req, items));
  }

  private listDeleted(req: FakeRequest, res: ServerResponse): void {
    const base = this.publicUrl(req);
    const items = [...this.secrets.values()]
      .filter((r) => this.state(r) === "deleted")
      .flatMap((r) => {
        const latest = r.versions.at(-1);
        if (!latest || !r.deleted) return [];
        return [
          {
            ...this.item(`${base}/secrets/${r.name}`, latest),
            recoveryId: `${base}/deletedsecrets/${r.name}`,
            deletedDate: r.deleted.deletedDate,
            scheduledPurgeDate: r.deleted.scheduledPurgeDate,
          },
        ];
      });
    this.stats.list += 1;
    sendJson(res, 200, this.page(req, items));
  }

  /**
   * One page of a listing. The continuation is an opaque `$skiptoken` in a `nextLink` that also
   * carries api-version and maxresults, the shape the service uses; the SDK follows the link as
   * given, so a client that ignored nextLink would see only the first page.
   */
  private page(req: FakeRequest, items: Record<string, unknown>[]): { value: Record<string, unknown>[]; nextLink: string | null } {
    const params = req.url.searchParams;
    const requested = Number(params.get("maxresults") ?? "");
    const configured = this.realism.pageSize;
    const size =
      Number.isInteger(requested) && requested > 0 ? Math.min(requested, configured ?? requested) : (configured ?? Number.POSITIVE_INFINITY);
    const token = params.get("$skiptoken");
    let offset = 0;
    if (token !== null) {
      const parsed = parseSkipToken(token);
      if (parsed === undefined) throw new KvError(400, "BadParameter", "The $skiptoken is not valid.");
      offset = parsed;
    }
    const value = items.slice(offset, offset + size);
    const next = offset + value.length;
    if (!Number.isFinite(size) || next >= items.length) return { value, nextLink: null };
    const link = new URL(`${this.publicUrl(req)}${req.url.pathname}`);
    link.searchParams.set("api-version", params.get("api-version") ?? "");
    link.searchParams.set("$skiptoken", Buffer.from(JSON.stringify({ NextMarker: next })).toString("base64url"));
    link.searchParams.set("maxresults", String(size));
    return { value, nextLink: link.toString() };
  }

  /**
   * The vault's origin as the client addressed it: ids and nextLinks carry the name the client
   * used, as the service's carry its DNS name (127.0.0.1:port here, or a *.vault.azure.net name a
   * test maps to loopback, so the SDK's challenge-resource check can stay on).
   */
  private publicUrl(req: FakeRequest): string {
    const host = req.headers.host;
    return typeof host === "string" && /^[0-9A-Za-z.-]+(:[0-9]{1,5})?$/.test(host) ? `https://${host}` : this.url;
  }

  /** Finishes a delete or recover whose time has come; the fake keeps no timers, so every look at a record settles it first. */
  private state(record: SecretRecord | undefined): SecretState {
    if (!record) return "absent";
    if (record.pending && record.pending.until <= Date.now()) {
      if (record.pending.kind === "recovering") delete record.deleted;
      delete record.pending;
    }
    if (record.pending) return record.pending.kind;
    return record.deleted ? "deleted" : "live";
  }

  /**
   * 409 while a delete or recover of this name still runs (and, for a PUT, while it is deleted),
   * recorded so a test can tell which path a client went through.
   */
  private refuseInTransit(req: FakeRequest, name: string, options: { orDeleted?: boolean } = {}): void {
    const record = this.secrets.get(name.toLowerCase());
    const state = this.state(record);
    const refused = state === "deleting" || state === "recovering" || (options.orDeleted === true && state === "deleted");
    if (!record || !refused) return;
    const error = conflictFor(state, record.name);
    this.conflicts.push({ method: req.method, name: record.name, innerCode: error.innerCode ?? "" });
    throw error;
  }

  private liveRecord(name: string): SecretRecord {
    checkName(name);
    const record = this.secrets.get(name.toLowerCase());
    if (!record || this.state(record) !== "live" || record.versions.length === 0) throw secretNotFound(name);
    return record;
  }

  /** Only a finished soft delete: while the delete runs, GET /deletedsecrets/{name} 404s, which the SDK's poller reads as "not yet". */
  private deletedRecord(name: string): SecretRecord {
    checkName(name);
    const record = this.secrets.get(name.toLowerCase());
    if (!record || this.state(record) !== "deleted") {
      throw new KvError(404, "SecretNotFound", `Deleted Secret not found: ${name}`);
    }
    return record;
  }

  private bundle(record: SecretRecord, version: SecretVersion, withValue: boolean, req: FakeRequest): Record<string, unknown> {
    const bundle: Record<string, unknown> = {};
    if (withValue) bundle.value = version.value;
    bundle.id = `${this.publicUrl(req)}/secrets/${record.name}/${version.version}`;
    if (version.contentType !== undefined) bundle.contentType = version.contentType;
    bundle.attributes = attributesJson(version);
    bundle.tags = version.tags ?? {};
    return bundle;
  }

  /** A deleted bundle never carries the value, like the service. */
  private deletedBundle(record: SecretRecord, req: FakeRequest): Record<string, unknown> {
    const latest = record.versions.at(-1);
    if (!latest || !record.deleted) throw secretNotFound(record.name);
    return {
      ...this.bundle(record, latest, false, req),
      recoveryId: `${this.publicUrl(req)}/deletedsecrets/${record.name}`,
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

/** The 409 for a name that is deleted or on its way in or out of the deleted state; the innererror code says which. */
function conflictFor(state: SecretState, name: string): KvError {
  switch (state) {
    case "deleting":
      return new KvError(409, "Conflict", `Secret ${name} is currently being deleted.`, "ObjectIsBeingDeleted");
    case "recovering":
      return new KvError(409, "Conflict", `Secret ${name} is currently being recovered.`, "ObjectIsBeingRecovered");
    default:
      return new KvError(
        409,
        "Conflict",
        `Secret ${name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.`,
        "ObjectIsDeletedButRecoverable",
      );
  }
}

/** The offset inside a `$skiptoken` this fake issued, or undefined for anything else. */
function parseSkipToken(token: string): number | undefined {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    const marker = isRecord(parsed) ? parsed.NextMarker : undefined;
    return typeof marker === "number" && Number.isInteger(marker) && marker >= 0 ? marker : undefined;
  } catch {
    return undefined;
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
