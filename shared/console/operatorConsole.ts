import type { AppConfig } from "../config";
import type { Clock } from "../clock";
import type { ConsentModel } from "../consent/consentModel";
import { AppError, describeError } from "../errors";
import type { Logger } from "../logging";
import type { AuditActor, AuditEntry } from "../audit/auditTrail";
import { checkRegistration, type LinkView, type RegistrationProblem, type TenantAdmin, type TenantView } from "../operator/tenantAdmin";
import type { PullHealth } from "../pull/health";
import type { PullHistoryStore } from "../pull/pullHistory";
import { isGuid } from "../validation";
import type { HtmlPage } from "../ui/page";
import { html } from "../ui/page";
import { decideAccess, OPERATOR_ROLE, type AccessDecision, type HeaderReader } from "./access";
import { csrfTokenFor, verifyCsrf } from "./csrf";
import { CONSOLE_STATUSES, consoleStatusOf, estimateCycleMs, type ConsoleStatus } from "./status";
import {
  ACTIVITY_LIMIT,
  AUDIT_PAGE_LIMIT,
  AUDIT_PATH,
  CONSOLE_PATH,
  LINKS_ANCHOR,
  SORTS,
  auditPage,
  messagePage,
  redirect,
  registerPage,
  tenantPage,
  tenantPath,
  tenantsPage,
  type ListedTenant,
  type ListQuery,
  type PageContext,
  type RegisterErrors,
  type RegisterValues,
  type SortKey,
} from "./views";

/** What a console handler needs of an HTTP request (functions/console.ts adapts the runtime's). */
export interface ConsoleRequest {
  method: string;
  url: string;
  headers: HeaderReader;
  params: Readonly<Record<string, string | undefined>>;
  /** The body as text, or undefined when it is larger than `maxBytes` (never read whole then). */
  text(maxBytes: number): Promise<string | undefined>;
}

export type ConsoleRoute = "tenants" | "register" | "tenant" | "consentLink" | "revokeLink" | "offboard" | "audit";

export interface OperatorConsoleDeps {
  config: Pick<AppConfig, "publicBaseUrl" | "msspDisplayName" | "easyAuthEnabled" | "localDev" | "msspTenantId" | "defaultAlertSource"> & {
    /** DEFAULT_CONSENT_MODEL: the register form's preselected model (delegated when absent). */
    defaultConsentModel?: ConsentModel;
    pull: Pick<AppConfig["pull"], "schedule">;
  };
  tenantAdmin: TenantAdmin;
  history: PullHistoryStore;
  clock: Clock;
}

export const PAGE_SIZE = 50;
const MAX_FORM_BYTES = 16 * 1024;
const DAY_MS = 24 * 3600_000;
/** History reads in flight at once while a page of the list is built. */
const HISTORY_CONCURRENCY = 10;

/** What a tenant page says after a redirect from a change (`?done=`); a Map, so `?done=toString` finds nothing. */
const DONE_NOTICES: ReadonlyMap<string, string> = new Map([
  ["offboarded", "The tenant was offboarded: its refresh token is deleted and its pulls and links stopped."],
  ["revoked", "The consent link was revoked: it can no longer start a sign-in, and a sign-in already started with it cannot finish."],
]);

const STATUS_ORDER = new Map<ConsoleStatus, number>(CONSOLE_STATUSES.map((status, i) => [status, i]));

const healthOf = (view: TenantView): PullHealth | undefined => (view as TenantView & { health?: PullHealth }).health;

/** Field messages in the console's words; the API's wording names JSON fields. */
function fieldMessage(problem: RegistrationProblem): string {
  switch (problem.field) {
    case "tenantId":
      return problem.kind === "required"
        ? "Enter the customer's tenant ID."
        : "Enter the tenant ID as a GUID, for example 72f988bf-86f1-41af-91ab-2d7cd011db47.";
    case "displayName":
      return problem.kind === "required"
        ? "Enter a display name."
        : problem.kind === "too_long"
          ? "Use at most 128 characters for the display name."
          : "Remove the control characters from the display name.";
    case "defenderRegion":
      return "Choose one of the listed regions.";
    case "source":
      return "Choose one of the listed alert sources.";
    case "consentModel":
      return "Choose one of the listed consent models.";
    default:
      return problem.message;
  }
}

async function mapLimited<T, R>(items: readonly T[], limit: number, run: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await run(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * The operator console: tenants with their health, registration, consent links, offboarding.
 * Every request passes the sign-in gate first; every POST passes the CSRF checks before it can
 * change anything.
 */
export class OperatorConsole {
  private readonly cycleMs: number;
  private readonly origin: string;

  private get defaultModel(): ConsentModel {
    return this.deps.config.defaultConsentModel ?? "delegated";
  }

  constructor(private readonly deps: OperatorConsoleDeps) {
    this.cycleMs = estimateCycleMs(deps.config.pull.schedule);
    this.origin = new URL(deps.config.publicBaseUrl).origin;
  }

  private get sandbox(): boolean {
    return this.deps.config.localDev.sandbox === true;
  }

  private baseContext(): PageContext {
    return { msspName: this.deps.config.msspDisplayName, sandbox: this.sandbox, now: this.deps.clock() };
  }

  async handle(route: ConsoleRoute, request: ConsoleRequest, log: Logger): Promise<HtmlPage> {
    const access = decideAccess(
      { easyAuthEnabled: this.deps.config.easyAuthEnabled, sandbox: this.sandbox, msspTenantId: this.deps.config.msspTenantId },
      request.headers,
    );
    if (access.kind !== "allowed") return this.refuse(access, request, log);
    const base: PageContext = { ...this.baseContext(), operator: access.operator };
    const method = request.method.toUpperCase();
    try {
      if (method === "POST") {
        const text = await request.text(MAX_FORM_BYTES);
        if (text === undefined) return messagePage(base, 413, "Form too large", ["The form sent more data than the console accepts."]);
        const form = new URLSearchParams(text);
        const verdict = verifyCsrf(request.headers, form, this.origin);
        if (!verdict.ok) {
          log.warn("console form refused by the CSRF checks", { reason: verdict.reason, route });
          return messagePage(base, 403, "This form could not be accepted", [
            "The request did not come from a console page of this app, or the page was open too long.",
            html`Nothing was changed. <a href="${CONSOLE_PATH}">Go back to the console</a>, reload the page and try again.`,
          ]);
        }
        const ctx: PageContext = { ...base, csrf: verdict.token };
        if (route === "register") return await this.register(ctx, form, log);
        if (route === "consentLink") return await this.issueLink(ctx, request, form, log);
        if (route === "revokeLink") return await this.revokeLink(ctx, request, log);
        if (route === "offboard") return await this.offboard(ctx, request, form, log);
      } else if (method === "GET" || method === "HEAD") {
        const { token, cookie } = csrfTokenFor(request.headers);
        const ctx: PageContext = { ...base, csrf: token, ...(cookie ? { cookies: [cookie] } : {}) };
        if (route === "tenants") return await this.tenants(ctx, request);
        if (route === "register") {
          const blank = { tenantId: "", displayName: "", defenderRegion: "", source: this.deps.config.defaultAlertSource, consentModel: this.defaultModel };
          return registerPage(ctx, blank, {}, this.deps.config.defaultAlertSource, 200, this.defaultModel);
        }
        if (route === "tenant") return await this.tenant(ctx, request);
        if (route === "audit") return await this.audit(ctx, request);
      }
      return messagePage(base, 405, "Not available", ["This address does not accept this kind of request."]);
    } catch (error) {
      if (error instanceof AppError) return messagePage(base, error.status, error.status === 404 ? "Not found" : "Not possible", [error.message]);
      throw error;
    }
  }

  private refuse(access: Exclude<AccessDecision, { kind: "allowed" }>, request: ConsoleRequest, log: Logger): HtmlPage {
    const ctx = this.baseContext();
    if (access.kind === "not_configured") {
      return messagePage(ctx, 503, "The console needs sign-in", [
        "The console needs sign-in: configure App Service authentication (Microsoft Entra ID) for this function app, and assign the Console.Operator app role to the operators who may use it.",
        "Until then the console stays off. The operator API (function keys) and the consent links keep working. See docs/console.md.",
      ]);
    }
    if (access.kind === "sign_in") {
      if (request.method.toUpperCase() === "GET") {
        const target = new URL(request.url);
        return redirect(`/.auth/login/aad?post_login_redirect_uri=${encodeURIComponent(target.pathname + target.search)}`, 302);
      }
      return messagePage(ctx, 401, "Sign-in required", [html`<a href="/.auth/login/aad?post_login_redirect_uri=${encodeURIComponent(CONSOLE_PATH)}">Sign in</a> to use the console.`]);
    }
    log.warn("console access refused", { reason: access.reason });
    return messagePage(ctx, 403, "You cannot use the console", [
      access.reason === "missing_role"
        ? `You are signed in as ${access.name}, but you do not have the ${OPERATOR_ROLE} app role.`
        : `You are signed in as ${access.name}, but not with Microsoft Entra ID.`,
      `Ask an administrator of ${this.deps.config.msspDisplayName} to assign you the ${OPERATOR_ROLE} role of this app in Microsoft Entra ID (Enterprise applications, Users and groups).`,
      html`<a href="/.auth/logout">Sign out</a>`,
    ]);
  }

  // ---- list --------------------------------------------------------------------------------

  private parseQuery(url: string): ListQuery {
    const params = new URL(url).searchParams;
    const status = params.get("status") ?? "";
    const sort = params.get("sort") ?? "";
    const page = Number.parseInt(params.get("page") ?? "1", 10);
    return {
      ...((CONSOLE_STATUSES as readonly string[]).includes(status) ? { status: status as ConsoleStatus } : {}),
      q: (params.get("q") ?? "").trim().slice(0, 128),
      sort: Object.prototype.hasOwnProperty.call(SORTS, sort) ? (sort as SortKey) : "name",
      page: Number.isFinite(page) && page >= 1 ? Math.min(page, 100_000) : 1,
    };
  }

  private async tenants(ctx: PageContext, request: ConsoleRequest): Promise<HtmlPage> {
    const query = this.parseQuery(request.url);
    const views = await this.deps.tenantAdmin.list();
    const all: ListedTenant[] = views.map((view) => {
      const health = healthOf(view);
      return { view, ...(health ? { health } : {}), verdict: consoleStatusOf(view, health, ctx.now, this.cycleMs) };
    });
    const counts = Object.fromEntries(CONSOLE_STATUSES.map((s) => [s, 0])) as Record<ConsoleStatus, number>;
    for (const row of all) counts[row.verdict.status]++;
    const needle = query.q.toLowerCase();
    const matching = all.filter(
      (row) =>
        (!query.status || row.verdict.status === query.status) &&
        (!needle || row.view.displayName.toLowerCase().includes(needle) || row.view.tenantId.includes(needle)),
    );
    const byName = (a: ListedTenant, b: ListedTenant) =>
      a.view.displayName.localeCompare(b.view.displayName) || a.view.tenantId.localeCompare(b.view.tenantId);
    const lastPull = (row: ListedTenant) => (row.health?.lastSuccessfulPullAt ? Date.parse(row.health.lastSuccessfulPullAt) : -1);
    if (query.sort === "status") {
      matching.sort((a, b) => (STATUS_ORDER.get(a.verdict.status) ?? 0) - (STATUS_ORDER.get(b.verdict.status) ?? 0) || byName(a, b));
    } else if (query.sort === "last_pull") {
      matching.sort((a, b) => lastPull(a) - lastPull(b) || byName(a, b));
    } else {
      matching.sort(byName);
    }
    const pages = Math.max(1, Math.ceil(matching.length / PAGE_SIZE));
    const page = Math.min(query.page, pages);
    const rows = matching.slice((page - 1) * PAGE_SIZE, page * PAGE_SIZE);
    // Only the rows shown: one history query each, never one per registered tenant.
    await mapLimited(rows, HISTORY_CONCURRENCY, async (row) => {
      const count = await this.alerts24h(row.view.tenantId, ctx.now);
      if (count !== undefined) row.alerts24h = count;
    });
    return tenantsPage(ctx, { query: { ...query, page }, rows, matching: matching.length, pages, pageSize: PAGE_SIZE, counts, total: all.length });
  }

  private async alerts24h(tenantId: string, now: number): Promise<number | undefined> {
    try {
      return await this.deps.history.alertsSince(tenantId, now - DAY_MS);
    } catch {
      return undefined;
    }
  }

  // ---- one tenant ----------------------------------------------------------------------------

  private tenantIdOf(request: ConsoleRequest): string {
    const tenantId = request.params["tenantId"] ?? "";
    if (!isGuid(tenantId)) throw new AppError("tenant_not_found", "No tenant with this id is registered.", 404);
    return tenantId.toLowerCase();
  }

  private async tenantData(ctx: PageContext, tenantId: string) {
    const view = await this.deps.tenantAdmin.view(tenantId);
    const health = healthOf(view);
    // Each part on its own: a table that cannot be read leaves its section saying so, not a broken page.
    const [history, alerts24h, links, activity] = await Promise.all([
      this.deps.history.recent(tenantId).catch(() => undefined),
      this.alerts24h(tenantId, ctx.now),
      this.deps.tenantAdmin.links(tenantId).catch((): LinkView[] | undefined => undefined),
      this.deps.tenantAdmin
        .auditEntries(new URLSearchParams({ tenantId, limit: String(ACTIVITY_LIMIT) }))
        .catch((): AuditEntry[] | undefined => undefined),
    ]);
    return {
      view,
      ...(health ? { health } : {}),
      verdict: consoleStatusOf(view, health, ctx.now, this.cycleMs),
      ...(history ? { history } : {}),
      ...(alerts24h !== undefined ? { alerts24h } : {}),
      ...(links ? { links } : {}),
      ...(activity ? { activity } : {}),
    };
  }

  private async tenant(ctx: PageContext, request: ConsoleRequest): Promise<HtmlPage> {
    const data = await this.tenantData(ctx, this.tenantIdOf(request));
    const notice = DONE_NOTICES.get(new URL(request.url).searchParams.get("done") ?? "");
    return tenantPage(ctx, { ...data, ...(notice ? { notice } : {}) });
  }

  /**
   * "Request a new consent": a new link, on purpose. For a connected tenant it is the only kind of
   * link that can start a sign-in, and it can replace the current consent, so the page says so.
   * The form's optional `source` moves the tenant once that consent completes.
   */
  private async issueLink(ctx: PageContext, request: ConsoleRequest, form: URLSearchParams, log: Logger): Promise<HtmlPage> {
    const tenantId = this.tenantIdOf(request);
    const source = (form.get("source") ?? "").trim().slice(0, 16);
    const consentModel = (form.get("consentModel") ?? "").trim().slice(0, 16);
    // An unknown source or model is TenantAdmin's to refuse (400), like the operator API's.
    const body = { ...(source ? { source } : {}), ...(consentModel ? { consentModel } : {}) };
    const link = await this.deps.tenantAdmin.requestReconsent(tenantId, Object.keys(body).length > 0 ? body : undefined, actorOf(ctx), log);
    log.info("console: consent link issued", {
      tenantId,
      linkId: link.linkId,
      ...(source ? { source } : {}),
      ...(consentModel ? { consentModel } : {}),
      operator: ctx.operator?.name,
    });
    return tenantPage(ctx, { ...(await this.tenantData(ctx, tenantId)), link, notice: "A new consent link was issued." });
  }

  private async revokeLink(ctx: PageContext, request: ConsoleRequest, log: Logger): Promise<HtmlPage> {
    const tenantId = this.tenantIdOf(request);
    // TenantAdmin checks the id's shape and that this tenant's registration issued it (else 404).
    const linkId = request.params["linkId"] ?? "";
    await this.deps.tenantAdmin.revokeLink(tenantId, linkId, actorOf(ctx), log);
    log.info("console: consent link revoked", { tenantId, linkId, operator: ctx.operator?.name });
    // Post/redirect/get: a reload of the page that follows does not post again.
    return redirect(`${tenantPath(tenantId)}?done=revoked#${LINKS_ANCHOR}`);
  }

  // ---- audit ---------------------------------------------------------------------------------

  private async audit(ctx: PageContext, request: ConsoleRequest): Promise<HtmlPage> {
    const tenantParam = new URL(request.url).searchParams.get("tenantId");
    const tenantId = tenantParam && isGuid(tenantParam) ? tenantParam.toLowerCase() : undefined;
    if (tenantParam !== null && tenantParam !== "" && tenantId === undefined) {
      return messagePage(ctx, 400, "Not possible", [html`The tenant ID must be a GUID. <a href="${AUDIT_PATH}">Show every tenant's activity</a>`]);
    }
    const query = new URLSearchParams({ limit: String(AUDIT_PAGE_LIMIT), ...(tenantId ? { tenantId } : {}) });
    // One registry read names every tenant in the entries (never one read per entry).
    const [entries, tenants] = await Promise.all([this.deps.tenantAdmin.auditEntries(query), this.deps.tenantAdmin.list()]);
    const names = new Map(tenants.map((view) => [view.tenantId, view.displayName]));
    return auditPage(ctx, { entries, names, ...(tenantId ? { tenantId } : {}) });
  }

  private async offboard(ctx: PageContext, request: ConsoleRequest, form: URLSearchParams, log: Logger): Promise<HtmlPage> {
    const tenantId = this.tenantIdOf(request);
    const data = await this.tenantData(ctx, tenantId);
    const typed = (form.get("confirmName") ?? "").trim();
    if (data.view.status === "offboarded") return redirect(`${tenantPath(tenantId)}?done=offboarded`);
    if (typed !== data.view.displayName) {
      return tenantPage(
        ctx,
        {
          ...data,
          confirmValue: typed.slice(0, 256),
          offboardError: typed ? "The name does not match. Type the tenant's display name exactly." : "Type the tenant's display name to confirm.",
        },
        400,
      );
    }
    await this.deps.tenantAdmin.offboard(tenantId, actorOf(ctx), log);
    log.info("console: tenant offboarded", { tenantId, operator: ctx.operator?.name });
    return redirect(`${tenantPath(tenantId)}?done=offboarded`);
  }

  // ---- registration --------------------------------------------------------------------------

  private async register(ctx: PageContext, form: URLSearchParams, log: Logger): Promise<HtmlPage> {
    const values: RegisterValues = {
      tenantId: (form.get("tenantId") ?? "").trim().slice(0, 256),
      displayName: (form.get("displayName") ?? "").slice(0, 1024),
      defenderRegion: (form.get("defenderRegion") ?? "").trim().slice(0, 16),
      source: (form.get("source") ?? "").trim().slice(0, 16),
      consentModel: (form.get("consentModel") ?? "").trim().slice(0, 16),
    };
    const body = {
      tenantId: values.tenantId,
      displayName: values.displayName,
      ...(values.defenderRegion ? { defenderRegion: values.defenderRegion } : {}),
      ...(values.source ? { source: values.source } : {}),
      ...(values.consentModel ? { consentModel: values.consentModel } : {}),
    };
    const checked = checkRegistration(body);
    if (checked.problems) {
      const errors: RegisterErrors = {};
      for (const problem of checked.problems) {
        const key = problem.field === "body" ? "form" : problem.field;
        errors[key] ??= fieldMessage(problem);
      }
      return registerPage(ctx, values, errors, this.deps.config.defaultAlertSource, 400, this.defaultModel);
    }
    let registered: TenantView;
    try {
      registered = await this.deps.tenantAdmin.register(body, actorOf(ctx), log);
    } catch (error) {
      if (error instanceof AppError && error.code === "tenant_exists") {
        return registerPage(
          ctx,
          values,
          { tenantId: "This tenant is already registered. Offboard it first to register it again." },
          this.deps.config.defaultAlertSource,
          409,
          this.defaultModel,
        );
      }
      throw error;
    }
    log.info("console: tenant registered", { tenantId: registered.tenantId, operator: ctx.operator?.name });
    const link =
      registered.consentUrl && registered.consentUrlExpiresAt && registered.linkId
        ? { consentUrl: registered.consentUrl, consentUrlExpiresAt: registered.consentUrlExpiresAt, linkId: registered.linkId }
        : undefined;
    let data;
    try {
      data = await this.tenantData(ctx, registered.tenantId);
    } catch (error) {
      // Registered all the same: show what is known rather than hide the link.
      log.warn("console: could not read the tenant just registered", { tenantId: registered.tenantId, detail: describeError(error) });
      data = { view: registered, verdict: { status: "pending_consent" as const, reasons: [] } };
    }
    return tenantPage(ctx, {
      ...data,
      ...(link ? { link } : {}),
      notice: "The tenant is registered. Send the consent link below to the customer's administrator.",
    }, 201);
  }
}

/** The signed-in operator as the audit trail names them. */
function actorOf(ctx: PageContext): AuditActor {
  const operator = ctx.operator;
  if (!operator) return { kind: "unknown", id: "unknown", name: "Unknown operator" };
  return { kind: operator.via === "easyauth" ? "entra_user" : "sandbox", id: operator.name, name: operator.name };
}
