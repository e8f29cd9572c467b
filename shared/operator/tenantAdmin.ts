import type { AppConfig } from "../config";
import type { Clock } from "../clock";
import { buildConsentUrl } from "../consent/consentLink";
import type { SigningKeyProvider } from "../consent/signingKey";
import { badRequest, conflict, notFound } from "../errors";
import type { Logger } from "../logging";
import type { TenantTokenStore } from "../secrets/tenantTokens";
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
  consentUrl?: string;
  consentUrlExpiresAt?: string;
}

/** Optional per-tenant extras (pull health) merged into the view by whoever knows them. */
export type TenantViewDecorator = (tenants: TenantRecord[]) => Promise<Map<string, Record<string, unknown>>>;

export interface TenantAdminDeps {
  config: Pick<AppConfig, "publicBaseUrl" | "consentLinkTtlHours">;
  tenants: TenantRegistry;
  tokens: TenantTokenStore;
  signingKey: SigningKeyProvider;
  clock: Clock;
  health?: TenantViewDecorator;
  /** Forgets the tenant's pull state (checkpoint, dedupe set, cached tokens). */
  resetPullState?: (tenantId: string) => Promise<void>;
}

export interface RegistrationInput {
  tenantId: string;
  displayName: string;
  defenderRegion?: DefenderRegion;
}

/** One problem with a registration, tied to the field it concerns (the console shows it there). */
export interface RegistrationProblem {
  field: "tenantId" | "displayName" | "defenderRegion" | "body";
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
  const known = new Set(["tenantId", "displayName", "defenderRegion"]);
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
  if (problems.length > 0) return { problems };
  return {
    input: {
      tenantId: (input["tenantId"] as string).toLowerCase(),
      displayName: displayName as string,
      ...(region !== undefined ? { defenderRegion: region as DefenderRegion } : {}),
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
}

function requireGuid(tenantId: string): string {
  if (!isGuid(tenantId)) throw badRequest("invalid_tenant_id", "The tenant id in the path must be a GUID.");
  return tenantId.toLowerCase();
}

/** The operator's view of the tenant registry: register, list, inspect, offboard. */
export class TenantAdmin {
  constructor(private readonly deps: TenantAdminDeps) {}

  async register(body: unknown, log: Logger): Promise<TenantView> {
    const input = parseRegistration(body);
    // The link key first: if Key Vault is unreachable the registration fails before writing anything.
    const key = await this.deps.signingKey.get();
    let record: TenantRecord;
    try {
      record = await this.deps.tenants.create(input);
      // A tenant registered again starts from the first-run look-back, not a months-old checkpoint.
      await this.deps.resetPullState?.(record.tenantId);
    } catch (error) {
      if (error instanceof TenantAlreadyExistsError) {
        throw conflict("tenant_exists", "This tenant is already registered. Offboard it first to register it again.");
      }
      throw error;
    }
    log.info("tenant registered", { tenantId: record.tenantId });
    return { ...record, ...this.consentUrlFor(record, key) };
  }

  async list(): Promise<TenantView[]> {
    const records = await this.deps.tenants.list();
    records.sort((a, b) => a.displayName.localeCompare(b.displayName) || a.tenantId.localeCompare(b.tenantId));
    return this.decorate(records);
  }

  /** One tenant with a fresh consent link unless it is offboarded (the operator API's GET). */
  async get(tenantIdParam: string): Promise<TenantView> {
    const view = await this.view(tenantIdParam);
    if (view.status === "offboarded") return view;
    return { ...view, ...this.consentUrlFor(view, await this.deps.signingKey.get()) };
  }

  /** One tenant with its health, and no consent link: viewing never mints one. */
  async view(tenantIdParam: string): Promise<TenantView> {
    const tenantId = requireGuid(tenantIdParam);
    const record = await this.deps.tenants.get(tenantId);
    if (!record) throw notFound("tenant_not_found", "No tenant with this id is registered.");
    const [view] = await this.decorate([record]);
    return view as TenantView;
  }

  /** Mints a new consent link on purpose (the console's "Issue a new consent link"); refused for an offboarded tenant. */
  async issueConsentLink(tenantIdParam: string, log: Logger): Promise<ConsentLink> {
    const tenantId = requireGuid(tenantIdParam);
    const key = await this.deps.signingKey.get();
    const record = await this.deps.tenants.get(tenantId);
    if (!record) throw notFound("tenant_not_found", "No tenant with this id is registered.");
    if (record.status === "offboarded") {
      throw conflict("tenant_offboarded", "This tenant is offboarded. Register it again to issue a consent link.");
    }
    // The link itself is never logged: it is what lets someone start this tenant's consent.
    log.info("consent link issued", { tenantId });
    return this.consentUrlFor(record, key);
  }

  /** Deletes the tenant's tokens from Key Vault first, then marks it offboarded: its links stop working. */
  async offboard(tenantIdParam: string, log: Logger): Promise<TenantView> {
    const tenantId = requireGuid(tenantIdParam);
    const existing = await this.deps.tenants.get(tenantId);
    if (!existing) throw notFound("tenant_not_found", "No tenant with this id is registered.");
    await this.deps.tokens.remove(tenantId);
    const record = await this.deps.tenants.update(tenantId, (current) =>
      current.status === "offboarded" ? undefined : { status: "offboarded" },
    );
    // After the status: a pull that started before it stops at its next page, and its next save
    // finds no state to write to.
    await this.deps.resetPullState?.(tenantId);
    log.info("tenant offboarded", { tenantId });
    return record;
  }

  private consentUrlFor(record: TenantRecord, key: Buffer): ConsentLink {
    const expiresAt = this.deps.clock() + this.deps.config.consentLinkTtlHours * 3600_000;
    return {
      consentUrl: buildConsentUrl(this.deps.config.publicBaseUrl, key, {
        tenantId: record.tenantId,
        registeredAt: record.createdAt,
        expiresAt,
      }),
      consentUrlExpiresAt: new Date(Math.floor(expiresAt / 1000) * 1000).toISOString(),
    };
  }

  private async decorate(records: TenantRecord[]): Promise<TenantView[]> {
    if (!this.deps.health || records.length === 0) return records;
    const extras = await this.deps.health(records);
    return records.map((record) => ({ ...record, ...(extras.get(record.tenantId) ?? {}) }));
  }
}
