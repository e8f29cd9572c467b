import type { AuditAction, AuditEntry } from "../audit/auditTrail";
import { DEFAULT_MSSP_DISPLAY_NAME } from "../config";
import type { ConsentLink, LinkView, TenantView } from "../operator/tenantAdmin";
import type { PullHealth, SinkHealth } from "../pull/health";
import type { PullRun } from "../pull/pullHistory";
import { ALERT_SOURCES, ALERT_SOURCE_PROFILES, isAlertSource, type AlertSourceKind } from "../sources/alertSources";
import { CONSENT_MODELS, CONSENT_MODEL_SUMMARIES, isConsentModel, permissionLabel, type ConsentModel } from "../consent/consentModel";
import { DEFENDER_REGIONS } from "../state/tenantRegistry";
import { CONSOLE_SCRIPT_PATH, CONSOLE_STYLESHEET_PATH } from "../ui/assets";
import { CONSOLE_PAGE_HEADERS, SANDBOX_BANNER, copyField, html, renderDocument, type HtmlPage, type PageCookie, type SafeHtml } from "../ui/page";
import type { Operator } from "./access";
import { CSRF_FIELD } from "./csrf";
import { CONSOLE_STATUSES, STATUS_LABELS, type ConsoleStatus, type StatusVerdict } from "./status";

/** The server-rendered pages of the operator console. Every value goes through `html`, which escapes it. */

export const CONSOLE_PATH = "/api/console";

export interface PageContext {
  msspName: string;
  sandbox: boolean;
  operator?: Operator;
  /** The CSRF token the page's forms carry. */
  csrf?: string;
  cookies?: PageCookie[];
  now: number;
}

export const tenantPath = (tenantId: string): string => `${CONSOLE_PATH}/tenants/${encodeURIComponent(tenantId)}`;
export const AUDIT_PATH = `${CONSOLE_PATH}/audit`;
/** The id of the tenant page's consent-links section: a revocation redirects back to it. */
export const LINKS_ANCHOR = "consent-links";

export function consolePage(ctx: PageContext, status: number, title: string, main: SafeHtml): HtmlPage {
  const site = ctx.msspName === DEFAULT_MSSP_DISPLAY_NAME ? "Defender connector console" : `${ctx.msspName} · Defender connector console`;
  const operator = ctx.operator;
  const headerExtra = operator
    ? html`<nav aria-label="Console"><a href="${CONSOLE_PATH}">Tenants</a> · <a href="${CONSOLE_PATH}/register">Register a tenant</a> · <a href="${AUDIT_PATH}">Audit</a></nav>
<p class="operator">Signed in as <strong>${operator.name}</strong>${
        operator.via === "easyauth" ? html` · <a href="/.auth/logout">Sign out</a>` : html` <span>(no sign-in in the sandbox)</span>`
      }</p>`
    : undefined;
  const body = renderDocument({
    title,
    site: { name: site, href: CONSOLE_PATH },
    ...(ctx.sandbox ? { banner: SANDBOX_BANNER } : {}),
    ...(headerExtra ? { headerExtra } : {}),
    main,
    stylesheet: CONSOLE_STYLESHEET_PATH,
    scripts: [CONSOLE_SCRIPT_PATH],
  });
  return { status, headers: { ...CONSOLE_PAGE_HEADERS }, body, ...(ctx.cookies?.length ? { cookies: ctx.cookies } : {}) };
}

export function messagePage(ctx: PageContext, status: number, title: string, paragraphs: readonly (string | SafeHtml)[]): HtmlPage {
  return consolePage(ctx, status, title, html`${paragraphs.map((p) => html`<p>${p}</p>`)}`);
}

export function redirect(location: string, status = 303): HtmlPage {
  return { status, headers: { ...CONSOLE_PAGE_HEADERS, Location: location }, body: "" };
}

// ---- formatting --------------------------------------------------------------------------------

function ago(ms: number): string {
  // Negative for what is still ahead (a link's expiry); under a minute either way is "just now".
  // Ahead rounds to the nearest minute, so a 7-day link just issued reads "in 7 days", not "in 6 days".
  const minutes = ms < 0 ? Math.round(-ms / 60_000) : Math.floor(ms / 60_000);
  if (minutes < 1) return "just now";
  const span = minutes < 120 ? `${minutes} min` : Math.floor(minutes / 60) < 48 ? `${Math.floor(minutes / 60)} h` : `${Math.floor(minutes / 1440)} days`;
  return ms < 0 ? `in ${span}` : `${span} ago`;
}

export function when(iso: string | null | undefined, now: number, never = "Never"): SafeHtml {
  if (!iso) return html`<span class="muted">${never}</span>`;
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms)) return html`${iso}`;
  const exact = new Date(ms).toISOString();
  return html`<time datetime="${exact}">${exact.slice(0, 16).replace("T", " ")} UTC</time> <span class="muted">(${ago(now - ms)})</span>`;
}

function duration(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

function tokenAge(hours: number | null | undefined, consentModel?: string): SafeHtml {
  // An application-model tenant has no refresh token to age: say so rather than "Unknown".
  if (consentModel === "application") return html`<span class="muted">None (application permission)</span>`;
  if (hours === null || hours === undefined) return html`<span class="muted">Unknown</span>`;
  return html`${hours < 48 ? `${hours} h` : `${Math.floor(hours / 24)} days`}`;
}

function count(value: number | null | undefined): SafeHtml {
  return value === null || value === undefined ? html`<span class="muted">–</span>` : html`${value.toLocaleString("en-US")}`;
}

export function badge(status: ConsoleStatus): SafeHtml {
  return html`<span class="badge badge-${status}">${STATUS_LABELS[status]}</span>`;
}

function lastError(view: TenantView, health: PullHealth | undefined): SafeHtml {
  const code = health?.lastPullErrorCode ?? view.lastErrorCode;
  const message = health?.lastPullErrorCode ? health.lastPullErrorMessage : view.lastErrorMessage;
  if (!code) return html`<span class="muted">None</span>`;
  return html`<code>${code}</code>${message ? html` ${message}` : ""}`;
}

const csrfField = (ctx: PageContext): SafeHtml => html`<input type="hidden" name="${CSRF_FIELD}" value="${ctx.csrf ?? ""}">`;

// ---- alert sources -----------------------------------------------------------------------------

/** The table's narrow column gets the short name; the tenant page and the forms the full one. */
const SOURCE_SHORT: Readonly<Record<AlertSourceKind, string>> = {
  mde: "Defender for Endpoint API",
  graph: "Graph (Defender XDR)",
};

export const sourceLabel = (source: AlertSourceKind): string => ALERT_SOURCE_PROFILES[source].label;

/** What the customer must grant for each source: shown where the operator chooses one. */
export const SOURCE_GRANTS: Readonly<Record<AlertSourceKind, string>> = {
  mde: "The customer's administrator consents, then authorizes this app in the Microsoft Defender portal (Settings > Endpoints > APIs > SIEM, MSSP tab).",
  graph: "The user who consents needs a role that can read Defender XDR alerts, such as Security Reader; there is no portal step.",
};

function sourceBadge(source: AlertSourceKind, short = false): SafeHtml {
  return html`${short ? SOURCE_SHORT[source] : sourceLabel(source)} <code>${source}</code>`;
}

// ---- consent models ----------------------------------------------------------------------------

const MODEL_LABELS: Readonly<Record<ConsentModel, string>> = {
  delegated: "Delegated (an administrator's sign-in)",
  application: "Application permission (admin consent)",
};

function modelBadge(model: ConsentModel): SafeHtml {
  return html`${MODEL_LABELS[model]} <code>${model}</code>`;
}

/** The list's source cell names the model only when it is not the original one, so the common case stays short. */
function sourceCell(view: TenantView): SafeHtml {
  return view.consentModel === "application"
    ? html`${sourceBadge(view.source, true)}<br><span class="muted">application consent</span>`
    : sourceBadge(view.source, true);
}

// ---- the audit trail ---------------------------------------------------------------------------

/**
 * Each action in words; an action this version does not know (a newer writer) shows its code.
 * Maps, not object literals: the keys come from a table, and `constructor` must find nothing.
 */
const ACTION_LABELS: ReadonlyMap<string, string> = new Map<AuditAction, string>([
  ["tenant_registered", "Tenant registered"],
  ["consent_link_issued", "Consent link issued"],
  ["reconsent_requested", "New consent requested"],
  ["consent_link_revoked", "Consent link revoked"],
  ["consent_completed", "Consent completed"],
  ["consenter_changed", "Consent given by a different user"],
  ["source_changed", "Alert source changed"],
  ["tenant_offboarded", "Tenant offboarded"],
]);

const ACTOR_KINDS: ReadonlyMap<string, string> = new Map([
  ["entra_user", "operator, Entra ID"],
  ["entra_app", "application, Entra ID"],
  ["function_key", "operator API, function key"],
  ["sandbox", "sandbox"],
  ["customer_admin", "customer's administrator"],
]);

/** Actions an operator must look at: a consent replaced by somebody else. */
const ALARMING_ACTIONS = new Set<string>(["consenter_changed"]);

function actionCell(entry: AuditEntry): SafeHtml {
  const label = ACTION_LABELS.get(entry.action) ?? entry.action;
  return ALARMING_ACTIONS.has(entry.action) ? html`<strong class="field-error">${label}</strong>` : html`${label}`;
}

function actorCell(entry: AuditEntry): SafeHtml {
  const kind = ACTOR_KINDS.get(entry.actor.kind) ?? entry.actor.kind;
  return html`${entry.actor.name}${kind ? html` <span class="muted">(${kind})</span>` : ""}`;
}

/** Audit entries as a table; `names` adds a Tenant column (the console-wide page). */
function auditTable(entries: readonly AuditEntry[], now: number, caption: string, names?: ReadonlyMap<string, string>): SafeHtml {
  const tenantCell = (tenantId: string): SafeHtml => {
    const name = names?.get(tenantId);
    return name !== undefined
      ? html`<td><a href="${tenantPath(tenantId)}">${name}</a></td>`
      : html`<td><code>${tenantId}</code> <span class="muted">(no longer registered)</span></td>`;
  };
  return html`<div class="table-wrap"><table><caption>${caption}</caption>
<thead><tr><th scope="col">When</th>${names ? html`<th scope="col">Tenant</th>` : ""}<th scope="col">Action</th><th scope="col">Who</th><th scope="col">Detail</th></tr></thead>
<tbody>${entries.map(
    (entry) =>
      html`<tr><th scope="row">${when(entry.at, now)}</th>${names ? tenantCell(entry.tenantId) : ""}<td>${actionCell(entry)}</td><td>${actorCell(entry)}</td><td>${entry.detail}</td></tr>`,
  )}</tbody></table></div>`;
}

// ---- the tenants list --------------------------------------------------------------------------

export const SORTS = { name: "Name (A to Z)", status: "Status (most urgent first)", last_pull: "Last successful pull (oldest first)" } as const;
export type SortKey = keyof typeof SORTS;

export interface ListQuery {
  status?: ConsoleStatus;
  q: string;
  sort: SortKey;
  page: number;
}

export interface ListedTenant {
  view: TenantView;
  health?: PullHealth;
  verdict: StatusVerdict;
  /** Undefined when the history could not be read. */
  alerts24h?: number;
}

export interface Listing {
  query: ListQuery;
  rows: ListedTenant[];
  /** Tenants matching the filter, over all pages. */
  matching: number;
  pages: number;
  pageSize: number;
  /** Per status, over every registered tenant. */
  counts: Record<ConsoleStatus, number>;
  total: number;
  notice?: string;
}

function listHref(query: ListQuery, changes: Partial<ListQuery>): string {
  const next = { ...query, ...changes };
  const params = new URLSearchParams();
  if (next.status) params.set("status", next.status);
  if (next.q) params.set("q", next.q);
  if (next.sort !== "name") params.set("sort", next.sort);
  if (next.page > 1) params.set("page", String(next.page));
  const search = params.toString();
  return search ? `${CONSOLE_PATH}?${search}` : CONSOLE_PATH;
}

export function tenantsPage(ctx: PageContext, listing: Listing): HtmlPage {
  const { query, rows } = listing;
  const first = (query.page - 1) * listing.pageSize + 1;
  const range =
    listing.matching === 0
      ? "No tenant matches."
      : `Showing ${first}–${first + rows.length - 1} of ${listing.matching} matching tenant${listing.matching === 1 ? "" : "s"} (${listing.total} registered).`;
  const summary = html`<ul class="summary">${CONSOLE_STATUSES.map(
    (status) => html`<li><a href="${listHref({ ...query, q: "" }, { status, page: 1 })}">${STATUS_LABELS[status]}: ${listing.counts[status]}</a></li>`,
  )}</ul>`;
  const filters = html`<form class="filters" method="get" action="${CONSOLE_PATH}" role="search" aria-label="Filter tenants">
<div class="field"><label for="q">Search by name or tenant ID</label><input type="search" id="q" name="q" value="${query.q}" maxlength="128"></div>
<div class="field"><label for="status">Status</label><select id="status" name="status"><option value="">All statuses</option>${CONSOLE_STATUSES.map(
    (status) => html`<option value="${status}"${query.status === status ? html` selected` : ""}>${STATUS_LABELS[status]}</option>`,
  )}</select></div>
<div class="field"><label for="sort">Sort by</label><select id="sort" name="sort">${(Object.keys(SORTS) as SortKey[]).map(
    (key) => html`<option value="${key}"${query.sort === key ? html` selected` : ""}>${SORTS[key]}</option>`,
  )}</select></div>
<button type="submit" class="button">Apply</button>
${query.q || query.status || query.sort !== "name" ? html`<a href="${CONSOLE_PATH}">Clear filters</a>` : ""}
</form>`;
  const table = html`<div class="table-wrap"><table>
<caption>Tenants, page ${query.page} of ${listing.pages}</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Tenant ID</th><th scope="col">Status</th><th scope="col">Source</th><th scope="col">Last successful pull</th><th scope="col">Alerts in last pull</th><th scope="col">Alerts in last 24 h</th><th scope="col">Refresh-token age</th><th scope="col">Last error</th></tr></thead>
<tbody>${
    rows.length === 0
      ? html`<tr><td colspan="9">No tenant matches these filters.</td></tr>`
      : rows.map(
          ({ view, health, verdict, alerts24h }) => html`<tr>
<th scope="row"><a href="${tenantPath(view.tenantId)}">${view.displayName}</a></th>
<td><code>${view.tenantId}</code></td>
<td>${badge(verdict.status)}</td>
<td>${sourceCell(view)}</td>
<td>${when(health?.lastSuccessfulPullAt, ctx.now)}</td>
<td class="num">${count(health?.alertsInLastPull)}</td>
<td class="num">${count(alerts24h)}</td>
<td>${tokenAge(health?.refreshTokenAgeHours, view.consentModel)}</td>
<td>${lastError(view, health)}</td>
</tr>`,
        )
  }</tbody></table></div>`;
  const pager =
    listing.pages > 1
      ? html`<nav class="pager" aria-label="Pages">${
          query.page > 1 ? html`<a href="${listHref(query, { page: query.page - 1 })}" rel="prev">Previous page</a>` : ""
        }<span>Page ${query.page} of ${listing.pages}</span>${
          query.page < listing.pages ? html`<a href="${listHref(query, { page: query.page + 1 })}" rel="next">Next page</a>` : ""
        }</nav>`
      : "";
  return consolePage(
    ctx,
    200,
    "Tenants",
    html`${listing.notice ? html`<div class="notice notice-ok" role="status">${listing.notice}</div>` : ""}
<p><a class="button" href="${CONSOLE_PATH}/register">Register a tenant</a></p>
<h2>Overview</h2>
${summary}
<h2>Find tenants</h2>
${filters}
<p role="status">${range}</p>
${table}
${pager}`,
  );
}

// ---- registration ------------------------------------------------------------------------------

export interface RegisterValues {
  tenantId: string;
  displayName: string;
  defenderRegion: string;
  source: string;
  consentModel: string;
}

export type RegisterErrors = Partial<Record<keyof RegisterValues | "form", string>>;

function field(
  id: keyof RegisterValues,
  label: string,
  hint: string,
  control: (describedBy: string, invalid: boolean) => SafeHtml,
  errors: RegisterErrors,
): SafeHtml {
  const error = errors[id];
  const describedBy = [`${id}-hint`, ...(error ? [`${id}-error`] : [])].join(" ");
  return html`<div class="field">
<label for="${id}">${label}</label>
<p class="hint" id="${id}-hint">${hint}</p>
${error ? html`<p class="field-error" id="${id}-error"><span class="visually-hidden">Error: </span>${error}</p>` : ""}
${control(describedBy, error !== undefined)}
</div>`;
}

/**
 * The alert-source choice: radio buttons, each with what the customer must grant, because that
 * differs (a portal step for one, a role for the other) and the operator has to tell the customer.
 */
function sourceChoice(value: string, error: string | undefined, defaultSource: AlertSourceKind): SafeHtml {
  const chosen = isAlertSource(value) ? value : defaultSource;
  const describedBy = ["source-hint", ...(error ? ["source-error"] : [])].join(" ");
  return html`<fieldset class="field" id="source" tabindex="-1" aria-describedby="${describedBy}">
<legend><strong>Alert source</strong></legend>
<p class="hint" id="source-hint">Where this tenant's alerts are read. This app's default (DEFAULT_ALERT_SOURCE) is ${sourceLabel(defaultSource)}. Changing it later takes a new consent.</p>
${error ? html`<p class="field-error" id="source-error"><span class="visually-hidden">Error: </span>${error}</p>` : ""}
${ALERT_SOURCES.map(
  (source) => html`<div class="choice"><input type="radio" id="source-${source}" name="source" value="${source}"${source === chosen ? html` checked` : ""} aria-describedby="source-${source}-hint"${error ? html` aria-invalid="true"` : ""}>
<label for="source-${source}">${sourceLabel(source)}</label>
<p class="hint" id="source-${source}-hint">${SOURCE_GRANTS[source]}</p></div>`,
)}
</fieldset>`;
}

/** The consent-model choice: radio buttons, each with one line on what it means for the customer. */
function consentModelChoice(value: string, error: string | undefined, defaultModel: ConsentModel): SafeHtml {
  const chosen = isConsentModel(value) ? value : defaultModel;
  const describedBy = ["consentModel-hint", ...(error ? ["consentModel-error"] : [])].join(" ");
  return html`<fieldset class="field" id="consentModel" tabindex="-1" aria-describedby="${describedBy}">
<legend><strong>Consent model</strong></legend>
<p class="hint" id="consentModel-hint">How the customer grants access. This app's default (DEFAULT_CONSENT_MODEL) is ${MODEL_LABELS[defaultModel]}. Changing it later takes a new consent.</p>
${error ? html`<p class="field-error" id="consentModel-error"><span class="visually-hidden">Error: </span>${error}</p>` : ""}
${CONSENT_MODELS.map(
  (model) => html`<div class="choice"><input type="radio" id="consentModel-${model}" name="consentModel" value="${model}"${model === chosen ? html` checked` : ""} aria-describedby="consentModel-${model}-hint"${error ? html` aria-invalid="true"` : ""}>
<label for="consentModel-${model}">${MODEL_LABELS[model]}</label>
<p class="hint" id="consentModel-${model}-hint">${CONSENT_MODEL_SUMMARIES[model]}</p></div>`,
)}
</fieldset>`;
}

export function registerPage(
  ctx: PageContext,
  values: RegisterValues,
  errors: RegisterErrors,
  defaultSource: AlertSourceKind,
  status = 200,
  defaultModel: ConsentModel = "delegated",
): HtmlPage {
  const problems = Object.entries(errors) as Array<[keyof RegisterErrors, string]>;
  const summary = problems.length
    ? html`<div class="notice notice-error" role="alert" aria-labelledby="error-summary"><h2 id="error-summary">The tenant was not registered</h2><ul>${problems.map(
        ([key, message]) => html`<li>${key === "form" ? message : html`<a href="#${key}">${message}</a>`}</li>`,
      )}</ul></div>`
    : "";
  const invalid = (flag: boolean): SafeHtml => (flag ? html` aria-invalid="true"` : html``);
  const form = html`<form method="post" action="${CONSOLE_PATH}/register" novalidate>
${csrfField(ctx)}
${field(
  "tenantId",
  "Tenant ID",
  "The customer's Microsoft Entra tenant ID, a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47.",
  (d, bad) => html`<input type="text" id="tenantId" name="tenantId" value="${values.tenantId}" required autocomplete="off" spellcheck="false" aria-describedby="${d}"${invalid(bad)}>`,
  errors,
)}
${field(
  "displayName",
  "Display name",
  "How the customer is named here and on the consent pages, at most 128 characters.",
  (d, bad) => html`<input type="text" id="displayName" name="displayName" value="${values.displayName}" required maxlength="128" autocomplete="off" aria-describedby="${d}"${invalid(bad)}>`,
  errors,
)}
${field(
  "defenderRegion",
  "Defender API region (optional)",
  "Only if the customer's data must be read from a regional Defender API endpoint.",
  (d, bad) => html`<select id="defenderRegion" name="defenderRegion" aria-describedby="${d}"${invalid(bad)}><option value="">Global endpoint (default)</option>${DEFENDER_REGIONS.map(
    (region) => html`<option value="${region}"${values.defenderRegion === region ? html` selected` : ""}>${region}</option>`,
  )}</select>`,
  errors,
)}
${sourceChoice(values.source, errors.source, defaultSource)}
${consentModelChoice(values.consentModel, errors.consentModel, defaultModel)}
<button type="submit" class="button">Register tenant</button>
</form>`;
  return consolePage(ctx, status, "Register a tenant", html`${summary}
<p>Registering a tenant creates a consent link for its administrator. Nothing is read from the tenant before the consent.</p>
${form}`);
}

// ---- one tenant --------------------------------------------------------------------------------

export interface TenantPageData {
  view: TenantView;
  health?: PullHealth;
  verdict: StatusVerdict;
  history?: PullRun[];
  alerts24h?: number;
  /** The links of the tenant's current registration, newest first; undefined when they could not be read. */
  links?: LinkView[];
  /** The tenant's newest audit entries, newest first; undefined when the trail could not be read. */
  activity?: AuditEntry[];
  link?: ConsentLink;
  notice?: string;
  offboardError?: string;
  confirmValue?: string;
}

/** Audit entries on a tenant's page; the audit page has the rest. */
export const ACTIVITY_LIMIT = 20;

const OUTCOME_LABELS: Readonly<Record<PullRun["outcome"], string>> = {
  succeeded: "Succeeded",
  partial: "Partly read (continues next run)",
  failed: "Failed",
  busy: "Skipped: another pull was running",
};

/** With several sinks: each one's own progress (a sink that was down catches up from parked pages). */
function sinkTable(sinks: Record<string, SinkHealth>, now: number): ReturnType<typeof html> {
  return html`<h3>Sinks</h3><div class="table-wrap"><table><caption>Each sink's own progress for this tenant</caption>
<thead><tr><th scope="col">Sink</th><th scope="col">Pages waiting</th><th scope="col">Behind since</th><th scope="col">Last delivery</th><th scope="col">Last error</th></tr></thead>
<tbody>${Object.entries(sinks).map(
    ([name, sink]) =>
      html`<tr><th scope="row"><code>${name}</code></th><td class="num">${sink.parkedPages}</td><td>${sink.behindSince ? when(sink.behindSince, now) : html`<span class="muted">Caught up</span>`}</td><td>${when(sink.lastDeliveryAt, now)}</td><td>${sink.lastErrorCode ? html`<code>${sink.lastErrorCode}</code> ${when(sink.lastErrorAt, now)}` : html`<span class="muted">None</span>`}</td></tr>`,
  )}</tbody></table></div>`;
}

/** A warning an operator must act on, not just read: someone else replaced the consent. */
const CONSENTER_CHANGED = "consenter_changed";

const waitsForConsent = (view: TenantView): boolean => view.status === "pending_consent" || view.status === "reconsent_required";

type LinkState = "active" | "used" | "revoked" | "expired";
const LINK_STATE_LABELS: Readonly<Record<LinkState, string>> = { active: "Active", used: "Used", revoked: "Revoked", expired: "Expired" };

function linkState(link: LinkView): LinkState {
  if (link.revoked) return "revoked";
  if (link.expired) return "expired";
  if (link.used) return "used";
  return "active";
}

/**
 * Whether the link could start a sign-in right now. This mirrors the consent flow's rule
 * (shared/consent/consentLinks.ts `linkRefusal`): a used link never again; a tenant waiting for
 * consent takes any other live link of its registration; a connected tenant only a re-consent link
 * issued after its current consent. The status column says so, because "Active" alone would mislead.
 */
function linkWorks(link: LinkView, view: TenantView): boolean {
  if (link.revoked || link.expired || link.used || view.status === "offboarded") return false;
  if (waitsForConsent(view)) return true;
  return link.purpose === "reconsent" && (!view.consentedAt || link.created > view.consentedAt);
}

function linkPurpose(link: LinkView): SafeHtml {
  const purpose = link.purpose === "reconsent" ? "New consent" : "First consent";
  const moves = [...(link.source ? [sourceLabel(link.source)] : []), ...(link.consentModel ? [`${link.consentModel} consent`] : [])];
  return moves.length > 0 ? html`${purpose}, moves the tenant to ${moves.join(" and ")}` : html`${purpose}`;
}

function linkStatus(link: LinkView, view: TenantView, now: number): SafeHtml {
  const state = linkState(link);
  const label = html`<strong>${LINK_STATE_LABELS[state]}</strong>`;
  if (state === "revoked") return html`${label} ${when(link.revokedAt, now)}${link.revokedBy ? html` by ${link.revokedBy}` : ""}`;
  if (state === "expired") return label;
  const works = linkWorks(link, view);
  if (state === "used") return html`${label} ${when(link.usedAt, now)}`;
  return works ? label : html`${label}<br><span class="muted">Starts no sign-in while the tenant is connected</span>`;
}

function linksTable(ctx: PageContext, view: TenantView, links: readonly LinkView[]): SafeHtml {
  const revocable = view.status !== "offboarded";
  return html`<div class="table-wrap"><table><caption>${links.length} consent link${links.length === 1 ? "" : "s"} issued since the tenant was registered, newest first</caption>
<thead><tr><th scope="col">Created</th><th scope="col">Expires</th><th scope="col">Purpose</th><th scope="col">Status</th><th scope="col">Issued by</th>${revocable ? html`<th scope="col">Action</th>` : ""}</tr></thead>
<tbody>${links.map((link) => {
    // A used link starts nothing any more: only live ones are offered for revocation.
    const action =
      !revocable
        ? ""
        : link.revoked || link.expired || link.used
          ? html`<td><span class="muted">None</span></td>`
          : html`<td><form method="post" action="${tenantPath(view.tenantId)}/links/${encodeURIComponent(link.id)}/revoke">${csrfField(ctx)}<button type="submit" class="button button-secondary">Revoke<span class="visually-hidden"> the link created ${link.created.slice(0, 16).replace("T", " ")} UTC</span></button></form></td>`;
    return html`<tr data-link-id="${link.id}"><th scope="row">${when(link.created, ctx.now)}</th><td>${when(link.expires, ctx.now)}</td><td>${linkPurpose(link)}</td><td>${linkStatus(link, view, ctx.now)}</td><td>${link.issuedBy}</td>${action}</tr>`;
  })}</tbody></table></div>`;
}

function linksSection(ctx: PageContext, data: TenantPageData): SafeHtml {
  const { view, links } = data;
  if (links === undefined) return html`<p>The consent links could not be read just now. Reload the page to try again.</p>`;
  if (links.length === 0) return html`<p>No consent link was issued for this registration.</p>`;
  const explain =
    view.status === "offboarded"
      ? html`<p>This tenant is offboarded: none of its links works any more.</p>`
      : html`<p>Revoke a link that was sent to the wrong person or is no longer needed: it then cannot start a sign-in, and a sign-in already started with it cannot finish. The customer's existing consent is not affected.</p>`;
  return html`${explain}${linksTable(ctx, view, links)}`;
}

/** The link just minted, once: it is never shown again (the page keeps only its record). */
function mintedLink(ctx: PageContext, data: TenantPageData, link: ConsentLink): SafeHtml {
  const record = data.links?.find((candidate) => candidate.id === link.linkId);
  const target = record?.source ?? data.view.source;
  const targetModel = record?.consentModel ?? data.view.consentModel;
  const replaces = record?.purpose === "reconsent" && data.view.status === "connected";
  return html`<div class="notice notice-ok">
${copyField("consent-link", "Consent link", link.consentUrl)}
<p>Expires ${when(link.consentUrlExpiresAt, ctx.now)}. Send it only to the customer's administrator: whoever has it can start this tenant's consent.</p>
${replaces ? html`<p><strong>Whoever opens this link can replace the tenant's current consent with their own sign-in. It works once.</strong></p>` : ""}
${record?.source ? html`<p>Once the consent through it completes, the tenant moves to ${sourceLabel(record.source)} and its checkpoint starts afresh.</p>` : ""}
${record?.consentModel ? html`<p>Once the consent through it completes, the tenant moves to ${MODEL_LABELS[record.consentModel]}.</p>` : ""}
${targetModel === "application"
  ? html`<p>What the customer must grant: an administrator consents to ${permissionLabel("application", target)} for this app; no user's token is kept.</p>`
  : html`<p>What the customer must grant for ${sourceLabel(target)}: ${SOURCE_GRANTS[target]}</p>`}
</div>`;
}

function consentSection(ctx: PageContext, data: TenantPageData): SafeHtml {
  const { view } = data;
  if (view.status === "offboarded") return html`<p>This tenant is offboarded: its links no longer work. Register it again to connect it.</p>`;
  const explain =
    view.status === "connected"
      ? html`<p>The tenant is connected. <strong>A new consent link lets whoever opens it replace the current consent</strong>${view.consentModel === "delegated" ? " (and the refresh token stored for it)" : ""} with their own sign-in. It works once, until it expires or is revoked. Request one only when the customer must consent again or move to another source, and send it only to the customer's administrator.</p>`
      : html`<p>Consent links are shown only when they are issued. Request a new one to send to the customer's administrator; earlier links keep working until they expire or are revoked below.</p>`;
  const others = ALERT_SOURCES.filter((source) => source !== view.source);
  const form = html`<form method="post" action="${tenantPath(view.tenantId)}/consent-link">${csrfField(ctx)}
<div class="field"><label for="moveSource">Move to another alert source (optional)</label>
<p class="hint" id="moveSource-hint">The tenant reads from ${sourceLabel(view.source)}. To move it, pick another source: it moves once the consent through the new link completes, and its checkpoint then starts afresh.</p>
<select id="moveSource" name="source" aria-describedby="moveSource-hint"><option value="">Keep ${sourceLabel(view.source)}</option>${others.map(
    (source) => html`<option value="${source}">Move to ${sourceLabel(source)}</option>`,
  )}</select></div>
<div class="field"><label for="moveModel">Move to another consent model (optional)</label>
<p class="hint" id="moveModel-hint">The tenant uses ${MODEL_LABELS[view.consentModel]}. To move it, pick the other model: it moves once the consent through the new link completes.</p>
<select id="moveModel" name="consentModel" aria-describedby="moveModel-hint"><option value="">Keep ${MODEL_LABELS[view.consentModel]}</option>${CONSENT_MODELS.filter((model) => model !== view.consentModel).map(
    (model) => html`<option value="${model}">Move to ${MODEL_LABELS[model]}</option>`,
  )}</select></div>
<button type="submit" class="button">Request a new consent</button>
</form>`;
  return html`${data.link ? mintedLink(ctx, data, data.link) : ""}${explain}${form}`;
}

function activitySection(ctx: PageContext, data: TenantPageData): SafeHtml {
  const { activity, view } = data;
  if (activity === undefined) return html`<p>The audit trail could not be read just now.</p>`;
  if (activity.length === 0) return html`<p>Nothing is recorded for this tenant yet.</p>`;
  return html`${auditTable(activity, ctx.now, `The ${activity.length} most recent entries, newest first`)}
<p><a href="${AUDIT_PATH}?tenantId=${encodeURIComponent(view.tenantId)}">All of this tenant's activity on the audit page</a></p>`;
}

export function tenantPage(ctx: PageContext, data: TenantPageData, status = 200): HtmlPage {
  const { view, health, verdict } = data;
  const offboarded = view.status === "offboarded";
  const changed = health?.warnings.find((w) => w.code === CONSENTER_CHANGED);
  // Shown above everything else: a consent replaced by somebody else may be a takeover through a
  // forwarded or leaked link, and the operator must confirm it with the customer.
  const consenterAlert = changed
    ? html`<div class="notice notice-error" role="alert" aria-labelledby="consenter-changed-heading">
<h2 id="consenter-changed-heading">The consent was replaced by a different user</h2>
<p>${changed.message}${changed.at ? html` (${when(changed.at, ctx.now)})` : ""}</p>
<p>Confirm the change with the customer. If they did not make it, revoke the remaining links, request a new consent for their administrator, or offboard the tenant. The <a href="#activity">activity</a> below has the details.</p>
</div>`
    : "";
  const facts = html`<dl class="facts">
<dt>Status</dt><dd>${badge(verdict.status)}</dd>
<dt>Tenant ID</dt><dd><code>${view.tenantId}</code></dd>
<dt>Alert source</dt><dd>${sourceBadge(view.source)}</dd>
<dt>Consent model</dt><dd>${modelBadge(view.consentModel)}</dd>
<dt>Defender API region</dt><dd>${view.defenderRegion ?? "Global endpoint"}</dd>
<dt>Registered</dt><dd>${when(view.createdAt, ctx.now)}</dd>
<dt>Consented by</dt><dd>${view.consentedBy ?? html`<span class="muted">Not yet</span>`}${view.previousConsentedBy ? html` <span class="muted">(before: ${view.previousConsentedBy})</span>` : ""}</dd>
<dt>Consented</dt><dd>${when(view.consentedAt, ctx.now, "Not yet")}</dd>
<dt>Last error</dt><dd>${lastError(view, health)}</dd>
</dl>`;
  const reasons = verdict.reasons.length ? html`<h3>Why it is degraded</h3><ul>${verdict.reasons.map((r) => html`<li>${r}</li>`)}</ul>` : "";
  const pullFacts = html`<dl class="facts">
<dt>Last pull</dt><dd>${when(health?.lastPullAt, ctx.now)}</dd>
<dt>Last successful pull</dt><dd>${when(health?.lastSuccessfulPullAt, ctx.now)}</dd>
<dt>Alerts in last pull</dt><dd>${count(health?.alertsInLastPull)}</dd>
<dt>Alerts in last 24 h</dt><dd>${count(data.alerts24h)}</dd>
<dt>Refresh-token age</dt><dd>${tokenAge(health?.refreshTokenAgeHours, view.consentModel)}</dd>
<dt>Failed pulls in a row</dt><dd>${health?.consecutiveFailures ?? 0}</dd>
<dt>Checkpoint</dt><dd>${health?.checkpoint ? when(health.checkpoint, ctx.now) : html`<span class="muted">None yet</span>`}</dd>
<dt>Catching up</dt><dd>${health?.catchingUp ? html`Yes, read up to ${when(health.catchingUpPosition, ctx.now)}` : "No"}</dd>
<dt>Clock skew (Defender API minus this app)</dt><dd>${health?.clockSkewSeconds === null || health?.clockSkewSeconds === undefined ? html`<span class="muted">Not measured</span>` : `${health.clockSkewSeconds} s`}</dd>
<dt>Dead letters</dt><dd>${health?.deadLetters ?? 0}${health?.lastDeadLetterReason ? html` (last: <code>${health.lastDeadLetterReason}</code>)` : ""}</dd>
</dl>
<h3>Warnings</h3>
${
  health?.warnings.length
    ? html`<ul>${health.warnings.map((w) => {
        const text = html`<code>${w.code}</code> ${w.message}${w.at ? html` (${when(w.at, ctx.now)})` : ""}`;
        return w.code === CONSENTER_CHANGED ? html`<li class="field-error"><strong>${text}</strong></li>` : html`<li>${text}</li>`;
      })}</ul>`
    : html`<p>None.</p>`
}`;
  const sinks = health?.sinks ? sinkTable(health.sinks, ctx.now) : "";
  const history =
    data.history === undefined
      ? html`<p>The pull history could not be read just now.</p>`
      : data.history.length === 0
        ? html`<p>No pull has run for this tenant yet.</p>`
        : html`<div class="table-wrap"><table><caption>The ${data.history.length} most recent pulls, newest first</caption>
<thead><tr><th scope="col">Started</th><th scope="col">Outcome</th><th scope="col">Alerts</th><th scope="col">Duration</th><th scope="col">Error code</th></tr></thead>
<tbody>${data.history.map(
            (run) => html`<tr><th scope="row">${when(run.at, ctx.now)}</th><td>${OUTCOME_LABELS[run.outcome]}</td><td class="num">${run.alerts}</td><td class="num">${duration(run.durationMs)}</td><td>${run.errorCode ? html`<code>${run.errorCode}</code>` : html`<span class="muted">None</span>`}</td></tr>`,
          )}</tbody></table></div>`;
  const offboard = offboarded
    ? ""
    : html`<section class="danger" aria-labelledby="offboard-heading"><h2 id="offboard-heading">Offboard this tenant</h2>
${
      view.consentModel === "application"
        ? html`<p>Offboarding stops the tenant's pulls and makes its consent links stop working; no token of it is stored. Its administrator's grant to this app stays until they remove the enterprise application in the Microsoft Entra admin center: ask them to. Alerts already delivered stay in the sink.</p>`
        : html`<p>Offboarding deletes the tenant's refresh token from Key Vault, stops its pulls and makes its consent links stop working. Alerts already delivered stay in the sink.</p>`
    }
<form method="post" action="${tenantPath(view.tenantId)}/offboard" novalidate>${csrfField(ctx)}
<div class="field"><label for="confirmName">Type the tenant's display name to confirm</label>
<p class="hint" id="confirmName-hint">Type exactly: ${view.displayName}</p>
${data.offboardError ? html`<p class="field-error" id="confirmName-error"><span class="visually-hidden">Error: </span>${data.offboardError}</p>` : ""}
<input type="text" id="confirmName" name="confirmName" value="${data.confirmValue ?? ""}" autocomplete="off" spellcheck="false" aria-describedby="confirmName-hint${data.offboardError ? " confirmName-error" : ""}"${data.offboardError ? html` aria-invalid="true"` : ""}></div>
<button type="submit" class="button button-danger">Offboard tenant</button>
</form></section>`;
  return consolePage(
    ctx,
    status,
    view.displayName,
    html`${data.notice ? html`<div class="notice notice-ok" role="status">${data.notice}</div>` : ""}
<p><a href="${CONSOLE_PATH}">Back to all tenants</a></p>
${consenterAlert}
<h2>Consent</h2>
${consentSection(ctx, data)}
<h2 id="${LINKS_ANCHOR}" tabindex="-1">Consent links</h2>
${linksSection(ctx, data)}
<h2>Status</h2>
${facts}
${reasons}
<h2>Pull health</h2>
${pullFacts}
${sinks}
<h2>Recent pulls</h2>
${history}
<h2 id="activity" tabindex="-1">Activity</h2>
${activitySection(ctx, data)}
${offboard}`,
  );
}

// ---- the audit page ----------------------------------------------------------------------------

/** Entries on the console-wide audit page. */
export const AUDIT_PAGE_LIMIT = 100;

export interface AuditPageData {
  entries: AuditEntry[];
  /** Display names of the registered tenants, by id. */
  names: ReadonlyMap<string, string>;
  /** Set when the page is narrowed to one tenant. */
  tenantId?: string;
}

export function auditPage(ctx: PageContext, data: AuditPageData): HtmlPage {
  const scope = data.tenantId
    ? html`<p>Showing the activity of ${data.names.has(data.tenantId) ? html`<a href="${tenantPath(data.tenantId)}">${data.names.get(data.tenantId) ?? ""}</a>` : html`<code>${data.tenantId}</code>`} only. <a href="${AUDIT_PATH}">Show every tenant</a></p>`
    : "";
  const table =
    data.entries.length === 0
      ? html`<p>Nothing is recorded yet.</p>`
      : auditTable(
          data.entries,
          ctx.now,
          `The ${data.entries.length} most recent entries${data.tenantId ? "" : " of all tenants"}, newest first`,
          data.names,
        );
  return consolePage(
    ctx,
    200,
    "Audit trail",
    html`<p>Every change to a tenant, with who made it: registrations, consent requests, revoked links, completed consents (and consents given by a different user than before), source changes and offboarding. Operators are named by their sign-in; the operator API's function key by its holder.</p>
${scope}
${table}`,
  );
}

/** An unexpected failure: a reference for the logs, nothing else (no operator: the gate may not have run). */
export function consoleFailurePage(reference: string, options: { msspName?: string; sandbox?: boolean }): HtmlPage {
  return messagePage(
    { msspName: options.msspName ?? DEFAULT_MSSP_DISPLAY_NAME, sandbox: options.sandbox === true, now: Date.now() },
    500,
    "Something went wrong",
    ["The console could not complete this request. Nothing more is known here; the function logs have the details under this reference:", html`<code>${reference}</code>`],
  );
}
