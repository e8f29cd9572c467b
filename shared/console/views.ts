import { DEFAULT_MSSP_DISPLAY_NAME } from "../config";
import type { ConsentLink, TenantView } from "../operator/tenantAdmin";
import type { PullHealth, SinkHealth } from "../pull/health";
import type { PullRun } from "../pull/pullHistory";
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

export function consolePage(ctx: PageContext, status: number, title: string, main: SafeHtml): HtmlPage {
  const site = ctx.msspName === DEFAULT_MSSP_DISPLAY_NAME ? "Defender connector console" : `${ctx.msspName} · Defender connector console`;
  const operator = ctx.operator;
  const headerExtra = operator
    ? html`<nav aria-label="Console"><a href="${CONSOLE_PATH}">Tenants</a> · <a href="${CONSOLE_PATH}/register">Register a tenant</a></nav>
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
  if (ms < 0) return "in the future";
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 1) return "just now";
  if (minutes < 120) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} days ago`;
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

function tokenAge(hours: number | null | undefined): SafeHtml {
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
<thead><tr><th scope="col">Name</th><th scope="col">Tenant ID</th><th scope="col">Status</th><th scope="col">Last successful pull</th><th scope="col">Alerts in last pull</th><th scope="col">Alerts in last 24 h</th><th scope="col">Refresh-token age</th><th scope="col">Last error</th></tr></thead>
<tbody>${
    rows.length === 0
      ? html`<tr><td colspan="8">No tenant matches these filters.</td></tr>`
      : rows.map(
          ({ view, health, verdict, alerts24h }) => html`<tr>
<th scope="row"><a href="${tenantPath(view.tenantId)}">${view.displayName}</a></th>
<td><code>${view.tenantId}</code></td>
<td>${badge(verdict.status)}</td>
<td>${when(health?.lastSuccessfulPullAt, ctx.now)}</td>
<td class="num">${count(health?.alertsInLastPull)}</td>
<td class="num">${count(alerts24h)}</td>
<td>${tokenAge(health?.refreshTokenAgeHours)}</td>
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

export function registerPage(ctx: PageContext, values: RegisterValues, errors: RegisterErrors, status = 200): HtmlPage {
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
  link?: ConsentLink;
  notice?: string;
  offboardError?: string;
  confirmValue?: string;
}

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

export function tenantPage(ctx: PageContext, data: TenantPageData, status = 200): HtmlPage {
  const { view, health, verdict } = data;
  const offboarded = view.status === "offboarded";
  const link = data.link
    ? html`<div class="notice notice-ok">
${copyField("consent-link", "Consent link", data.link.consentUrl)}
<p>Expires ${when(data.link.consentUrlExpiresAt, ctx.now)}. Send it only to the customer's administrator: whoever has it can start this tenant's consent.</p>
</div>`
    : "";
  const linkSection = offboarded
    ? html`<p>This tenant is offboarded: its links no longer work. Register it again to connect it.</p>`
    : html`${link}<p>Consent links are shown only when they are issued. Issue a new one to send to the customer's administrator; earlier links keep working until they expire.</p>
<form method="post" action="${tenantPath(view.tenantId)}/consent-link">${csrfField(ctx)}<button type="submit" class="button">Issue a new consent link</button></form>`;
  const facts = html`<dl class="facts">
<dt>Status</dt><dd>${badge(verdict.status)}</dd>
<dt>Tenant ID</dt><dd><code>${view.tenantId}</code></dd>
<dt>Defender API region</dt><dd>${view.defenderRegion ?? "Global endpoint"}</dd>
<dt>Registered</dt><dd>${when(view.createdAt, ctx.now)}</dd>
<dt>Consented by</dt><dd>${view.consentedBy ?? html`<span class="muted">Not yet</span>`}</dd>
<dt>Consented</dt><dd>${when(view.consentedAt, ctx.now, "Not yet")}</dd>
<dt>Last error</dt><dd>${lastError(view, health)}</dd>
</dl>`;
  const reasons = verdict.reasons.length ? html`<h3>Why it is degraded</h3><ul>${verdict.reasons.map((r) => html`<li>${r}</li>`)}</ul>` : "";
  const pullFacts = html`<dl class="facts">
<dt>Last pull</dt><dd>${when(health?.lastPullAt, ctx.now)}</dd>
<dt>Last successful pull</dt><dd>${when(health?.lastSuccessfulPullAt, ctx.now)}</dd>
<dt>Alerts in last pull</dt><dd>${count(health?.alertsInLastPull)}</dd>
<dt>Alerts in last 24 h</dt><dd>${count(data.alerts24h)}</dd>
<dt>Refresh-token age</dt><dd>${tokenAge(health?.refreshTokenAgeHours)}</dd>
<dt>Failed pulls in a row</dt><dd>${health?.consecutiveFailures ?? 0}</dd>
<dt>Checkpoint</dt><dd>${health?.checkpoint ? when(health.checkpoint, ctx.now) : html`<span class="muted">None yet</span>`}</dd>
<dt>Catching up</dt><dd>${health?.catchingUp ? html`Yes, read up to ${when(health.catchingUpPosition, ctx.now)}` : "No"}</dd>
<dt>Clock skew (Defender API minus this app)</dt><dd>${health?.clockSkewSeconds === null || health?.clockSkewSeconds === undefined ? html`<span class="muted">Not measured</span>` : `${health.clockSkewSeconds} s`}</dd>
<dt>Dead letters</dt><dd>${health?.deadLetters ?? 0}${health?.lastDeadLetterReason ? html` (last: <code>${health.lastDeadLetterReason}</code>)` : ""}</dd>
</dl>
<h3>Warnings</h3>
${
  health?.warnings.length
    ? html`<ul>${health.warnings.map((w) => html`<li><code>${w.code}</code> ${w.message}${w.at ? html` (${when(w.at, ctx.now)})` : ""}</li>`)}</ul>`
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
<p>Offboarding deletes the tenant's refresh token from Key Vault, stops its pulls and makes its consent links stop working. Alerts already delivered stay in the sink.</p>
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
<h2>Consent link</h2>
${linkSection}
<h2>Status</h2>
${facts}
${reasons}
<h2>Pull health</h2>
${pullFacts}
${sinks}
<h2>Recent pulls</h2>
${history}
${offboard}`,
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
