import type { AppConfig } from "../config";
import type { Clock } from "../clock";
import { type AuditAction, type AuditActor, type AuditEntry, type AuditTrail, MAX_AUDIT_LIMIT } from "../audit/auditTrail";
import { buildConsentUrl } from "../consent/consentLink";
import type { ConsentLinkRecord, ConsentLinkStore, LinkPurpose } from "../consent/consentLinks";
import { CONSENT_MODELS, consentModelOf, isConsentModel, type ConsentModel } from "../consent/consentModel";
import type { SigningKeyProvider } from "../consent/signingKey";
import { badRequest, conflict, notFound } from "../errors";
import type { Logger } from "../logging";
import type { TenantTokenStore } from "../secrets/tenantTokens";
import { ALERT_SOURCES, isAlertSource, sourceOf, type AlertSourceKind } from "../sources/alertSources";
import {
  DEFENDER_REGIONS,
  TenantAlreadyExistsError,
  type DefenderRegion,
  type TenantRecord,
  type TenantRegistry,
} from "../state/tenantRegistry";
import { isGuid } from "../validation";

export const MAX_DISPLAY_NAME_LENGTH = 128;

/** What the operator API shows of a tenant: status and health, never a secret. */
export interface TenantView extends TenantRecord {
  source: AlertSourceKind;
  consentModel: ConsentModel;
  consentUrl?: string;
  consentUrlExpiresAt?: string;
  linkId?: string;
}

/** Optional per-tenant extras (pull health) merged into the view by whoever knows them. */
export type TenantViewDecorator = (tenants: TenantRecord[]) => Promise<Map<string, Record<string, unknown>>>;

export interface TenantAdminDeps {
  config: Pick<AppConfig, "publicBaseUrl" | "consentLinkTtlHours" | "defaultAlertSource"> & {
    /** DEFAULT_CONSENT_MODEL (delegated when absent). */
    defaultConsentModel?: ConsentModel;
  };
  tenants: TenantRegistry;
  links: ConsentLinkStore;
  audit: AuditTrail;
  tokens: TenantTokenStore;
  signingKey: SigningKeyProvider;
  clock: Clock;
  health?: TenantViewDecorator;
  /** Frees the sign-in places a revoked link holds (shared/consent/consentSessions.ts). */
  sessions?: { releaseLink(tenantId: string, linkId: string): Promise<void> };
  /** Forgets the tenant's pull state (checkpoint, dedupe set, cached tokens). */
  resetPullState?: (tenantId: string) => Promise<void>;
}

export interface RegistrationInput {
  tenantId: string;
  displayName: string;
  defenderRegion?: DefenderRegion;
  source?: AlertSourceKind;
  consentModel?: ConsentModel;
}

/** One problem with a registration, tied to the field it concerns (the console shows it there). */
export interface RegistrationProblem {
  field: "tenantId" | "displayName" | "defenderRegion" | "source" | "consentModel" | "body";
  kind: "required" | "invalid" | "too_long" | "control_characters" | "unknown_field";
  /** The operator API's wording. */
  message: string;
}

/** Checks a registration body and names every problem, by field. */
export function checkRegistration(body: unknown): { input: RegistrationInput; problems?: undefined } | { problems: RegistrationProblem[] } {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return { problems: [{ field: "body", kind: "invalid", message: "The body must be a JSON object with tenantId and displayName." }] };
  }
  const input = body as Record<string, unknown>;
  const problems: RegistrationProblem[] = [];
  const known = new Set(["tenantId", "displayName", "defenderRegion", "source", "consentModel"]);
  for (const key of Object.keys(input)) {
    if (!known.has(key)) problems.push({ field: "body", kind: "unknown_field", message: `unknown field "${key.slice(0, 40)}"` });
  }
  if (!isGuid(input["tenantId"])) {
    problems.push({
      field: "tenantId",
      kind: input["tenantId"] === undefined || input["tenantId"] === "" ? "required" : "invalid",
      message: "tenantId must be the customer's Microsoft Entra tenant id (a GUID)",
    });
  }
  const displayName = typeof input["displayName"] === "string" ? input["displayName"].trim() : undefined;
  if (displayName === undefined || displayName.length === 0) {
    problems.push({ field: "displayName", kind: "required", message: "displayName is required" });
  } else if (displayName.length > MAX_DISPLAY_NAME_LENGTH) {
    problems.push({ field: "displayName", kind: "too_long", message: `displayName must be at most ${MAX_DISPLAY_NAME_LENGTH} characters` });
  } else if (/[\u0000-\u001f\u007f-\u009f]/.test(displayName)) {
    problems.push({ field: "displayName", kind: "control_characters", message: "displayName must not contain control characters" });
  }
  const region = input["defenderRegion"];
  if (region !== undefined && !(DEFENDER_REGIONS as readonly unknown[]).includes(region)) {
    problems.push({ field: "defenderRegion", kind: "invalid", message: `defenderRegion must be one of ${DEFENDER_REGIONS.join(", ")}` });
  }
  const source = input["source"];
  if (source !== undefined && !isAlertSource(source)) {
    problems.push({ field: "source", kind: "invalid", message: `source must be one of ${ALERT_SOURCES.join(", ")}` });
  }
  const consentModel = input["consentModel"];
  if (consentModel !== undefined && !isConsentModel(consentModel)) {
    problems.push({ field: "consentModel", kind: "invalid", message: `consentModel must be one of ${CONSENT_MODELS.join(", ")}` });
  }
  if (problems.length > 0) return { problems };
  return {
    input: {
      tenantId: (input["tenantId"] as string).toLowerCase(),
      displayName: displayName as string,
      ...(region !== undefined ? { defenderRegion: region as DefenderRegion } : {}),
      ...(isAlertSource(source) ? { source } : {}),
      ...(isConsentModel(consentModel) ? { consentModel } : {}),
    },
  };
}

/** Checks an operator's registration body; every problem is named in one 400. */
export function parseRegistration(body: unknown): RegistrationInput {
  const checked = checkRegistration(body);
  if (checked.problems === undefined) return checked.input;
  const [first] = checked.problems;
  if (first?.field === "body" && first.kind === "invalid") throw badRequest("invalid_body", first.message);
  throw badRequest("invalid_tenant", `Invalid tenant registration: ${checked.problems.map((p) => p.message).join("; ")}.`);
}

/** A freshly minted consent link. */
export interface ConsentLink {
  consentUrl: string;
  consentUrlExpiresAt: string;
  linkId: string;
}

/** What the operator API shows of an issued link: never its signature. */
export interface LinkView {
  id: string;
  purpose: LinkPurpose;
  source: AlertSourceKind | null;
  /** The consent model the link moves the tenant to; absent when it keeps the tenant's. */
  consentModel?: ConsentModel;
  created: string;
  expires: string;
  expired: boolean;
  used: boolean;
  usedAt: string | null;
  revoked: boolean;
  revokedAt: string | null;
  revokedBy: string | null;
  issuedBy: string;
}

function requireGuid(tenantId: string): string {
  if (!isGuid(tenantId)) throw badRequest("invalid_tenant_id", "The tenant id in the path must be a GUID.");
  return tenantId.toLowerCase();
}

/**
 * The body of a re-consent request: empty, or `{"source": "mde" | "graph"}` to move the tenant to
 * another source, and/or `{"consentModel": "delegated" | "application"}` to move it to another
 * consent model.
 */
export function parseReconsent(body: unknown): { source?: AlertSourceKind; consentModel?: ConsentModel } {
  if (body === undefined || body === null) return {};
  if (typeof body !== "object" || Array.isArray(body)) throw badRequest("invalid_body", "The body must be a JSON object (or empty).");
  const input = body as Record<string, unknown>;
  const unknown = Object.keys(input).filter((key) => key !== "source" && key !== "consentModel");
  if (unknown.length > 0) throw badRequest("invalid_body", `unknown field "${(unknown[0] as string).slice(0, 40)}"`);
  const parsed: { source?: AlertSourceKind; consentModel?: ConsentModel } = {};
  if (input["source"] !== undefined) {
    if (!isAlertSource(input["source"])) throw badRequest("invalid_source", `source must be one of ${ALERT_SOURCES.join(", ")}`);
    parsed.source = input["source"];
  }
  if (input["consentModel"] !== undefined) {
    if (!isConsentModel(input["consentModel"])) {
      throw badRequest("invalid_consent_model", `consentModel must be one of ${CONSENT_MODELS.join(", ")}`);
    }
    parsed.consentModel = input["consentModel"];
  }
  return parsed;
}

/** A link id from a path: the shape the app issues, or a 404 (an unknown id is simply not there). */
function requireLinkId(linkId: string): string {
  if (!/^[A-Za-z0-9_-]{22}$/.test(linkId)) throw notFound("link_not_found", "This tenant has no consent link with this id.");
  return linkId;
}

/**
 * The operator's view of the tenant registry: register, list, inspect, ask for a re-consent,
 * see and revoke issued links, offboard. Every change is written to the audit trail with who
 * asked for it.
 */
export class TenantAdmin {
  constructor(private readonly deps: TenantAdminDeps) {}

  async register(body: unknown, actor: AuditActor, log: Logger): Promise<TenantView> {
    const input = parseRegistration(body);
    // The link key first: if Key Vault is unreachable the registration fails before writing anything.
    const key = await this.deps.signingKey.get();
    let record: TenantRecord;
    try {
      record = await this.deps.tenants.create({
        ...input,
        source: input.source ?? this.deps.config.defaultAlertSource,
        consentModel: input.consentModel ?? this.deps.config.defaultConsentModel ?? "delegated",
      });
      // A tenant registered again starts from the first-run look-back, not a months-old checkpoint.
      await this.deps.resetPullState?.(record.tenantId);
    } catch (error) {
      if (error instanceof TenantAlreadyExistsError) {
        throw conflict("tenant_exists", "This tenant is already registered. Offboard it first to register it again.");
      }
      throw error;
    }
    const link = await this.issueLink(record, key, "registration", actor);
    await this.audited(record.tenantId, "tenant_registered", actor, `Registered "${record.displayName}" with source ${sourceOf(record)} and ${consentModelOf(record)} consent; consent link ${link.linkId} issued`);
    log.info("tenant registered", { tenantId: record.tenantId });
    return { ...this.withSource(record), ...link };
  }

  async list(): Promise<TenantView[]> {
    const records = await this.deps.tenants.list();
    records.sort((a, b) => a.displayName.localeCompare(b.displayName) || a.tenantId.localeCompare(b.tenantId));
    return this.decorate(records);
  }

  /** One tenant with its health, and no consent link: reading never mints one. */
  async view(tenantIdParam: string): Promise<TenantView> {
    const record = await this.existing(requireGuid(tenantIdParam));
    const [view] = await this.decorate([record]);
    return view as TenantView;
  }

  /**
   * Issues a new consent link on purpose. For a tenant waiting for consent it is simply a new
   * link; for a connected tenant it is the only way a link can start a sign-in again, and the
   * consent it leads to replaces the stored one. `source` moves the tenant to another alert
   * source once that consent completes (its checkpoint then starts afresh).
   */
  async requestReconsent(tenantIdParam: string, body: unknown, actor: AuditActor, log: Logger): Promise<ConsentLink> {
    const tenantId = requireGuid(tenantIdParam);
    const { source, consentModel } = parseReconsent(body);
    const key = await this.deps.signingKey.get();
    const record = await this.existing(tenantId);
    if (record.status === "offboarded") {
      throw conflict("tenant_offboarded", "This tenant is offboarded. Register it again to issue a consent link.");
    }
    const switching = source !== undefined && source !== sourceOf(record);
    const changingModel = consentModel !== undefined && consentModel !== consentModelOf(record);
    const purpose: LinkPurpose = record.status === "connected" || switching || changingModel ? "reconsent" : "registration";
    const link = await this.issueLink(record, key, purpose, actor, switching ? source : undefined, changingModel ? consentModel : undefined);
    const action: AuditAction = purpose === "reconsent" ? "reconsent_requested" : "consent_link_issued";
    const moves = [
      ...(switching ? [`from ${sourceOf(record)} to ${source}`] : []),
      ...(changingModel ? [`from ${consentModelOf(record)} to ${consentModel} consent`] : []),
    ];
    const detail =
      moves.length > 0
        ? `Consent link ${link.linkId} issued to move the tenant ${moves.join(" and ")}`
        : `Consent link ${link.linkId} issued (tenant ${record.status})`;
    await this.audited(tenantId, action, actor, detail);
    // Two live links of different models could each finish a consent, and the tenant would end
    // with whichever finished last (a delegated one after an application one leaves no token):
    // a link that moves the model supersedes the tenant's other unused links.
    if (changingModel) await this.revokeOtherLinks(record, link.linkId, actor);
    // The link itself is never logged: it is what lets someone start this tenant's consent.
    log.info("consent link issued", { tenantId, purpose });
    return link;
  }

  private async revokeOtherLinks(record: TenantRecord, keptLinkId: string, actor: AuditActor): Promise<void> {
    const now = this.deps.clock();
    for (const other of await this.deps.links.list(record.tenantId, record.createdAt)) {
      if (other.linkId === keptLinkId || other.usedAt || other.revokedAt || Date.parse(other.expiresAt) <= now) continue;
      await this.deps.links.revoke(record.tenantId, other.linkId, record.createdAt, actor);
      await this.deps.sessions?.releaseLink(record.tenantId, other.linkId);
      await this.deps.audit.recordOnce({
        tenantId: record.tenantId,
        action: "consent_link_revoked",
        actor,
        detail: `Consent link ${other.linkId} revoked: superseded by link ${keptLinkId}, which moves the consent model`,
      });
    }
  }

  /** Every link issued for the tenant's current registration, newest first. */
  async links(tenantIdParam: string): Promise<LinkView[]> {
    const record = await this.existing(requireGuid(tenantIdParam));
    const now = this.deps.clock();
    return (await this.deps.links.list(record.tenantId, record.createdAt)).map((link) => linkView(link, now));
  }

  async revokeLink(tenantIdParam: string, linkIdParam: string, actor: AuditActor, log: Logger): Promise<LinkView> {
    const record = await this.existing(requireGuid(tenantIdParam));
    const linkId = requireLinkId(linkIdParam);
    const revoked = await this.deps.links.revoke(record.tenantId, linkId, record.createdAt, actor);
    if (!revoked) throw notFound("link_not_found", "This tenant has no consent link with this id.");
    await this.deps.sessions?.releaseLink(record.tenantId, linkId);
    // Once per link, also when a retry finds it revoked by an attempt whose entry did not land.
    await this.deps.audit.recordOnce({ tenantId: record.tenantId, action: "consent_link_revoked", actor, detail: `Consent link ${linkId} revoked` });
    log.info("consent link revoked", { tenantId: record.tenantId });
    return linkView(revoked, this.deps.clock());
  }

  /**
   * Marks the tenant offboarded first, then deletes its tokens from Key Vault: a consent finishing
   * meanwhile finds the status and removes what it wrote, and nothing written before the status
   * survives the delete. Its links stop working with the status.
   */
  async offboard(tenantIdParam: string, actor: AuditActor, log: Logger): Promise<TenantView> {
    const tenantId = requireGuid(tenantIdParam);
    const existing = await this.existing(tenantId);
    const record = await this.deps.tenants.update(tenantId, (current) =>
      current.status === "offboarded" ? undefined : { status: "offboarded" },
    );
    await this.deps.tokens.remove(tenantId);
    // After the status: a pull that started before it stops at its next page, and its next save
    // finds no state to write to.
    await this.deps.resetPullState?.(tenantId);
    // Also on a retry of an offboarding whose entry did not land (the registration time makes it unique).
    await this.deps.audit.recordOnce({
      tenantId,
      action: "tenant_offboarded",
      actor,
      detail: `Offboarded "${existing.displayName}" (registered ${existing.createdAt}); its tokens and pull state were deleted`,
    });
    log.info("tenant offboarded", { tenantId });
    return this.withSource(record);
  }

  /** The audit trail, newest first; `tenantId` narrows it to one tenant. */
  async auditEntries(query: { get(name: string): string | null }): Promise<AuditEntry[]> {
    const tenantParam = query.get("tenantId");
    const limitParam = query.get("limit");
    const tenantId = tenantParam === null ? undefined : requireQueryGuid(tenantParam);
    let limit = 100;
    if (limitParam !== null) {
      if (!/^[0-9]{1,4}$/.test(limitParam) || Number(limitParam) < 1 || Number(limitParam) > MAX_AUDIT_LIMIT) {
        throw badRequest("invalid_limit", `limit must be an integer from 1 to ${MAX_AUDIT_LIMIT}.`);
      }
      limit = Number(limitParam);
    }
    return this.deps.audit.list({ ...(tenantId ? { tenantId } : {}), limit });
  }

  private async existing(tenantId: string): Promise<TenantRecord> {
    const record = await this.deps.tenants.get(tenantId);
    if (!record) throw notFound("tenant_not_found", "No tenant with this id is registered.");
    return record;
  }

  private async audited(tenantId: string, action: AuditAction, actor: AuditActor, detail: string): Promise<void> {
    await this.deps.audit.record({ tenantId, action, actor, detail });
  }

  private async issueLink(
    record: TenantRecord,
    key: Buffer,
    purpose: LinkPurpose,
    actor: AuditActor,
    source?: AlertSourceKind,
    consentModel?: ConsentModel,
  ): Promise<ConsentLink> {
    const issued = await this.deps.links.issue({
      tenantId: record.tenantId,
      registeredAt: record.createdAt,
      purpose,
      ttlMs: this.deps.config.consentLinkTtlHours * 3600_000,
      issuedBy: actor,
      ...(source ? { source } : {}),
      ...(consentModel ? { consentModel } : {}),
    });
    return {
      consentUrl: buildConsentUrl(this.deps.config.publicBaseUrl, key, {
        tenantId: record.tenantId,
        registeredAt: record.createdAt,
        linkId: issued.linkId,
        expiresAt: issued.expiresAtMs,
      }),
      consentUrlExpiresAt: issued.expiresAt,
      linkId: issued.linkId,
    };
  }

  private withSource(record: TenantRecord): TenantView {
    return { ...record, source: sourceOf(record), consentModel: consentModelOf(record) };
  }

  private async decorate(records: TenantRecord[]): Promise<TenantView[]> {
    const views = records.map((record) => this.withSource(record));
    if (!this.deps.health || records.length === 0) return views;
    const extras = await this.deps.health(records);
    return views.map((view) => ({ ...view, ...(extras.get(view.tenantId) ?? {}) }));
  }
}

function requireQueryGuid(value: string): string {
  if (!isGuid(value)) throw badRequest("invalid_tenant_id", "tenantId must be a GUID.");
  return value.toLowerCase();
}

function linkView(link: ConsentLinkRecord, now: number): LinkView {
  return {
    id: link.linkId,
    purpose: link.purpose,
    source: isAlertSource(link.source) ? link.source : null,
    ...(isConsentModel(link.consentModel) ? { consentModel: link.consentModel } : {}),
    created: link.createdAt,
    expires: link.expiresAt,
    expired: Date.parse(link.expiresAt) <= now,
    used: link.usedAt !== undefined,
    usedAt: link.usedAt ?? null,
    revoked: link.revokedAt !== undefined,
    revokedAt: link.revokedAt ?? null,
    revokedBy: link.revokedBy ?? null,
    issuedBy: link.issuedBy,
  };
}
