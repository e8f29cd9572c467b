import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuditActor } from "../../shared/audit/auditTrail";
import { CSRF_COOKIE } from "../../shared/console/csrf";
import type { Services } from "../../shared/services";
import { generateAlerts } from "../fakes/alerts";
import type { HttpResult } from "../harness/functionsHost";
import { capturingLogger, connectedTenant, minutesAgo, pipelineServices } from "../harness/pullFixture";
import {
  PUBLIC_BASE_URL,
  completeConsent,
  cookieHeaderFrom,
  openConsentLink,
  registerTenant,
  secretsOf,
  startTestEnvironment,
  type TestEnvironment,
} from "../harness/testEnvironment";

/**
 * The operator console through the real app, in the sandbox configuration (LOCAL_DEV_SANDBOX=true,
 * no App Service sign-in). The suite's Azurite is shared with other test files running at the same
 * time, so every assertion on the list is scoped by a search for names only this file uses.
 */

const MSSP_NAME = "Contoso <Security> & Co";
const MSSP_NAME_HTML = "Contoso &lt;Security&gt; &amp; Co";
const ORIGIN = new URL(PUBLIC_BASE_URL).origin;
/** Who the audit trail names for the changes this file makes through TenantAdmin directly. */
const SETUP_ACTOR: AuditActor = { kind: "sandbox", id: "console-test-setup", name: "Console test setup" };

let env: TestEnvironment;
let services: Services;
const responses: HttpResult[] = [];
const track = (result: HttpResult): HttpResult => {
  responses.push(result);
  return result;
};

beforeAll(async () => {
  env = await startTestEnvironment({ LOCAL_DEV_SANDBOX: "true", MSSP_DISPLAY_NAME: MSSP_NAME });
  services = pipelineServices(env);
});
afterAll(async () => {
  await env?.stop();
});

// ---- a tiny browser: one CSRF cookie, same-origin form posts -----------------------------------

let csrfToken: string | undefined;

async function get(name: string, url: string, params?: Record<string, string>): Promise<HttpResult> {
  const result = track(
    await env.app.http(name, {
      method: "GET",
      url: `${PUBLIC_BASE_URL}${url}`,
      headers: csrfToken ? { cookie: `${CSRF_COOKIE}=${csrfToken}` } : {},
      ...(params ? { params } : {}),
    }),
  );
  const set = result.cookies.find((c) => c.name === CSRF_COOKIE);
  if (set) csrfToken = set.value;
  return result;
}

async function ensureToken(): Promise<string> {
  if (!csrfToken) await get("consoleTenants", "/api/console");
  return csrfToken as string;
}

interface PostOptions {
  /** Replaces the hidden field's token (undefined: the right one; null: none). */
  field?: string | null;
  /** Replaces the cookie's token (null: no cookie). */
  cookie?: string | null;
  /** The Origin header (default: the app's origin; null: none). */
  origin?: string | null;
  headers?: Record<string, string>;
}

async function post(name: string, url: string, form: Record<string, string>, params: Record<string, string> = {}, options: PostOptions = {}) {
  const token = await ensureToken();
  const body = new URLSearchParams(form);
  const field = options.field === undefined ? token : options.field;
  if (field !== null) body.set("csrf", field);
  const cookie = options.cookie === undefined ? token : options.cookie;
  return track(
    await env.app.http(name, {
      method: "POST",
      url: `${PUBLIC_BASE_URL}${url}`,
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        ...(options.origin === null ? {} : { origin: options.origin ?? ORIGIN }),
        ...(cookie === null ? {} : { cookie: `${CSRF_COOKIE}=${cookie}` }),
        ...options.headers,
      },
      body: body.toString(),
      params,
    }),
  );
}

const list = (query: string) => get("consoleTenants", `/api/console${query}`);
const tenantPage = (tenantId: string) => get("consoleTenant", `/api/console/tenants/${tenantId}`, { tenantId });

/** The rows of the tenants table: id, name (as HTML) and status badge. */
function rows(html: string): Array<{ tenantId: string; name: string; status: string }> {
  const tbody = html.slice(html.indexOf("<tbody>"), html.indexOf("</tbody>"));
  return [...tbody.matchAll(/<tr>\s*<th scope="row"><a href="\/api\/console\/tenants\/([0-9a-f-]+)">([^<]*)<\/a><\/th>[\s\S]*?<span class="badge badge-([a-z_]+)">/g)].map(
    (m) => ({ tenantId: m[1] as string, name: m[2] as string, status: m[3] as string }),
  );
}

async function apiStatus(tenantId: string): Promise<Record<string, unknown>> {
  return (await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } })).json();
}

/** The consent link shown on a page (the copy field), as a browser would read it. */
function shownLink(html: string): string {
  return /<input id="consent-link" type="text" readonly value="([^"]+)"/.exec(html)?.[1]?.replace(/&amp;/g, "&") ?? "";
}

const linkIdOf = (consentUrl: string): string => new URL(consentUrl).searchParams.get("link") ?? "";

/** One row of the tenant page's "Consent links" table. */
function linkRow(html: string, linkId: string): string {
  return new RegExp(`<tr data-link-id="${linkId}">[\\s\\S]*?</tr>`).exec(html)?.[0] ?? "";
}

/** A section of a tenant page: from its heading to the next h2. */
function section(html: string, heading: string): string {
  const start = html.indexOf(heading);
  if (start < 0) return "";
  const next = html.indexOf("<h2", start + heading.length);
  return html.slice(start, next < 0 ? undefined : next);
}

const revokePath = (tenantId: string, linkId: string) => `/api/console/tenants/${tenantId}/links/${linkId}/revoke`;
const revokeLink = (tenantId: string, linkId: string, options: PostOptions = {}) =>
  post("consoleRevokeLink", revokePath(tenantId, linkId), {}, { tenantId, linkId }, options);

// ---- the pages -----------------------------------------------------------------------------------

describe("console pages", () => {
  it("serves the tenants page with the security headers, the sandbox banner and a __Host- CSRF cookie", async () => {
    csrfToken = undefined;
    const result = await get("consoleTenants", "/api/console");
    expect(result.status).toBe(200);
    const h = result.headers;
    expect(h.get("content-type")).toBe("text/html; charset=utf-8");
    const csp = h.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toContain("form-action 'self'");
    expect(csp).not.toContain("unsafe-inline");
    expect(h.get("strict-transport-security")).toMatch(/^max-age=\d+/);
    expect(h.get("cache-control")).toBe("no-store");
    expect(h.get("referrer-policy")).toBe("no-referrer");
    expect(h.get("x-content-type-options")).toBe("nosniff");
    expect(result.body).toContain('<html lang="en">');
    expect(result.body).toContain("Simulated Microsoft cloud (sandbox)");
    expect(result.body).toContain("Sandbox operator");
    expect(result.body).toContain(MSSP_NAME_HTML);
    expect(result.body).toContain('<link rel="stylesheet" href="/api/console/assets/console.css">');
    expect(result.body).toContain('<script src="/api/console/assets/console.js" defer></script>');
    // No external asset, no inline script or style.
    expect(result.body).not.toMatch(/(src|href)="(https?:)?\/\//);
    expect(result.body).not.toMatch(/<script>|<style|style="/);
    const cookie = result.cookies.find((c) => c.name === CSRF_COOKIE);
    expect(cookie).toMatchObject({ path: "/", secure: true, sameSite: "Strict" });
    expect(cookie?.domain).toBeUndefined();
    expect(cookie?.value).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // A browser that already has the cookie keeps its token.
    const again = await get("consoleTenants", "/api/console");
    expect(again.cookies.find((c) => c.name === CSRF_COOKIE)).toBeUndefined();
  });

  it("serves its stylesheet and script, and the consent pages' assets, from the app", async () => {
    for (const [fn, name, type] of [
      ["consoleAssets", "console.css", "text/css"],
      ["consoleAssets", "console.js", "text/javascript"],
      ["consentAssets", "consent.css", "text/css"],
      ["consentAssets", "copy.js", "text/javascript"],
    ] as const) {
      const prefix = fn === "consoleAssets" ? "console" : "consent";
      const result = track(await env.app.http(fn, { method: "GET", url: `/api/${prefix}/assets/${name}`, params: { name } }));
      expect(result.status, name).toBe(200);
      expect(result.headers.get("content-type")).toContain(type);
      expect(result.headers.get("x-content-type-options")).toBe("nosniff");
      expect(result.body.length).toBeGreaterThan(100);
    }
    const js = (await env.app.http("consoleAssets", { method: "GET", url: "/api/console/assets/console.js", params: { name: "console.js" } })).body;
    expect(js).toContain("navigator.clipboard");
    expect(js).toContain("select()");
    const missing = await env.app.http("consoleAssets", { method: "GET", url: "/api/console/assets/secrets.txt", params: { name: "secrets.txt" } });
    expect(missing.status).toBe(404);
    const proto = await env.app.http("consoleAssets", { method: "GET", url: "/api/console/assets/toString", params: { name: "toString" } });
    expect(proto.status).toBe(404);
  });

  it("answers 404 for an unknown or malformed tenant id", async () => {
    expect((await tenantPage(randomUUID())).status).toBe(404);
    const bad = await get("consoleTenant", "/api/console/tenants/nope", { tenantId: "nope" });
    expect(bad.status).toBe(404);
    expect(bad.body).toContain("No tenant with this id is registered.");
  });
});

describe("tenants list: filter, search, sort, paging", () => {
  const prefix = `Paging${randomUUID().slice(0, 8)}`;
  const ids: string[] = [];
  const byStatus: Record<string, string[]> = { reconsent_required: [], degraded: [], healthy: [], offboarded: [], pending_consent: [] };

  beforeAll(async () => {
    const log = capturingLogger();
    for (let i = 0; i < 120; i += 20) {
      const batch = Array.from({ length: 20 }, (_, j) => i + j + 1);
      const views = await Promise.all(
        batch.map((n) => services.tenantAdmin.register({ tenantId: randomUUID(), displayName: `${prefix} Tenant ${String(n).padStart(3, "0")}` }, SETUP_ACTOR, log)),
      );
      ids.push(...views.map((v) => v.tenantId));
    }
    const now = new Date().toISOString();
    const connect = (id: string) => services.tenants.update(id, () => ({ status: "connected", consentedAt: now }));
    await Promise.all(
      ids.map(async (id, i) => {
        // Few connected tenants: the pull timer of other test files enqueues every connected tenant of the shared registry.
        if (i % 40 === 0) {
          await services.tenants.update(id, () => ({ status: "reconsent_required", lastErrorCode: "invalid_grant", lastErrorMessage: "Entra ID refused the refresh token; the customer must consent again" }));
          byStatus["reconsent_required"]?.push(id);
        } else if (i % 40 === 1) {
          await connect(id);
          await services.pullState.recordFailure(id, "defender_forbidden", "The Defender API refused access");
          byStatus["degraded"]?.push(id);
        } else if (i % 40 === 2) {
          await connect(id);
          // A pull succeeded i minutes ago: healthy, and an order for "last successful pull".
          const lease = await services.pullState.acquire(id, "test", 60_000);
          if (!lease) throw new Error("no lease");
          lease.state.lastSuccessAt = new Date(Date.now() - i * 1000).toISOString();
          lease.state.lastAlertCount = i;
          await lease.release();
          byStatus["healthy"]?.push(id);
        } else if (i % 24 === 3) {
          await services.tenantAdmin.offboard(id, SETUP_ACTOR, log);
          byStatus["offboarded"]?.push(id);
        } else {
          byStatus["pending_consent"]?.push(id);
        }
      }),
    );
  }, 120_000);

  afterAll(async () => {
    const log = capturingLogger();
    for (const id of [...(byStatus["healthy"] ?? []), ...(byStatus["degraded"] ?? [])]) await services.tenantAdmin.offboard(id, SETUP_ACTOR, log);
  });

  it("shows 50 rows per page, sorted by name, with the count and a pager", async () => {
    const first = await list(`?q=${prefix}`);
    expect(first.status).toBe(200);
    const page1 = rows(first.body);
    expect(page1).toHaveLength(50);
    expect(page1[0]?.name).toBe(`${prefix} Tenant 001`);
    expect(page1[49]?.name).toBe(`${prefix} Tenant 050`);
    expect(first.body).toContain("Showing 1–50 of 120 matching tenants");
    expect(first.body).toContain("Page 1 of 3");
    expect(first.body).toContain(`href="/api/console?q=${prefix}&amp;page=2" rel="next"`);
    expect(first.body).not.toContain('rel="prev"');

    const third = await list(`?q=${prefix}&page=3`);
    expect(rows(third.body).map((r) => r.name)).toEqual(Array.from({ length: 20 }, (_, i) => `${prefix} Tenant ${String(101 + i)}`));
    expect(third.body).toContain("Showing 101–120 of 120");
    expect(third.body).toContain('rel="prev"');
    expect(third.body).not.toContain('rel="next"');

    // Past the end: the last page; nonsense: the first.
    expect(rows((await list(`?q=${prefix}&page=99`)).body)).toHaveLength(20);
    expect(rows((await list(`?q=${prefix}&page=-4`)).body)[0]?.name).toBe(`${prefix} Tenant 001`);
  });

  it("filters by status, healthy and degraded derived from pull health", async () => {
    for (const [status, expected] of Object.entries(byStatus)) {
      const ids = new Set<string>();
      for (let page = 1; page <= 3; page++) {
        for (const row of rows((await list(`?q=${prefix}&status=${status}&page=${page}`)).body)) {
          expect(row.status, row.name).toBe(status);
          ids.add(row.tenantId);
        }
      }
      expect([...ids].sort(), status).toEqual([...expected].sort());
    }
    const degraded = await list(`?q=${prefix}&status=degraded`);
    expect(degraded.body).toContain("<code>defender_forbidden</code> The Defender API refused access");
    // An unknown status filter shows every status.
    expect(rows((await list(`?q=${prefix}&status=bogus`)).body)).toHaveLength(50);
  });

  it("searches by name (any case) and by tenant id", async () => {
    const one = await list(`?q=${prefix.toLowerCase()}%20tenant%20007`);
    expect(rows(one.body).map((r) => r.name)).toEqual([`${prefix} Tenant 007`]);
    const target = ids[41] as string;
    const byId = rows((await list(`?q=${target}`)).body);
    expect(byId.map((r) => r.tenantId)).toEqual([target]);
    const none = await list(`?q=${prefix}-nothing-matches`);
    expect(rows(none.body)).toEqual([]);
    expect(none.body).toContain("No tenant matches");
  });

  it("sorts by status (most urgent first) and by last successful pull (oldest first)", async () => {
    const byStatusRows = rows((await list(`?q=${prefix}&sort=status`)).body);
    const order = ["reconsent_required", "degraded", "pending_consent", "healthy", "offboarded"];
    const ranks = byStatusRows.map((r) => order.indexOf(r.status));
    expect(ranks).toEqual([...ranks].sort((a, b) => a - b));
    expect(byStatusRows[0]?.status).toBe("reconsent_required");

    // Healthy tenant i pulled i seconds ago: oldest first means descending i; never-pulled tenants come before them all.
    const pulled = rows((await list(`?q=${prefix}&status=healthy&sort=last_pull`)).body).map((r) => r.tenantId);
    expect(pulled).toEqual([...(byStatus["healthy"] ?? [])].sort((a, b) => ids.indexOf(b) - ids.indexOf(a)));
    const all = rows((await list(`?q=${prefix}&sort=last_pull&page=3`)).body);
    expect(all.slice(-3).map((r) => r.tenantId)).toEqual(pulled);
  });

  it("counts every status in the overview", async () => {
    const body = (await list(`?q=${prefix}`)).body;
    expect(body).toMatch(/Degraded: \d+/);
    expect(body).toMatch(/Re-consent required: \d+/);
  });
});

describe("registering a tenant", () => {
  it("shows validation errors next to the fields, keeps the values and registers nothing", async () => {
    const form = await get("consoleRegister", "/api/console/register");
    expect(form.status).toBe(200);
    expect(form.body).toContain('<label for="tenantId">Tenant ID</label>');
    expect(form.body).toContain('<label for="displayName">Display name</label>');
    expect(form.body).toContain('<label for="defenderRegion">');

    const displayName = `Bad <b>input</b> ${randomUUID().slice(0, 6)}`;
    const result = await post("consoleRegister", "/api/console/register", { tenantId: "contoso.onmicrosoft.com", displayName, defenderRegion: "mars" });
    expect(result.status).toBe(400);
    expect(result.body).toContain('id="tenantId-error"');
    expect(result.body).toContain("Enter the tenant ID as a GUID");
    expect(result.body).toContain('id="defenderRegion-error"');
    expect(result.body).not.toContain('id="displayName-error"');
    expect(result.body).toMatch(/<input type="text" id="tenantId" name="tenantId" value="contoso\.onmicrosoft\.com"[^>]*aria-describedby="tenantId-hint tenantId-error" aria-invalid="true">/);
    expect(result.body).toContain(`value="Bad &lt;b&gt;input&lt;/b&gt;`);
    expect(result.body).not.toContain("<b>input</b>");
    expect(result.body).toContain('<a href="#tenantId">');

    const empty = await post("consoleRegister", "/api/console/register", { tenantId: "", displayName: "   " });
    expect(empty.status).toBe(400);
    expect(empty.body).toContain("Enter the customer&#39;s tenant ID.");
    expect(empty.body).toContain("Enter a display name.");

    const long = await post("consoleRegister", "/api/console/register", { tenantId: randomUUID(), displayName: "x".repeat(129) });
    expect(long.status).toBe(400);
    expect(long.body).toContain("at most 128 characters");
    const listed = await list(`?q=${encodeURIComponent(displayName)}`);
    expect(rows(listed.body)).toEqual([]);
  });

  it("registers, shows the new tenant's consent link with a Copy button, and the link works", async () => {
    const tenantId = randomUUID();
    const result = await post("consoleRegister", "/api/console/register", { tenantId: tenantId.toUpperCase(), displayName: "Northwind Traders", defenderRegion: "eu" });
    expect(result.status).toBe(201);
    expect(result.body).toContain("<h1>Northwind Traders</h1>");
    expect(result.body).toContain("The tenant is registered.");
    const link = /<input id="consent-link" type="text" readonly value="([^"]+)"/.exec(result.body)?.[1]?.replace(/&amp;/g, "&");
    expect(link?.startsWith(`${PUBLIC_BASE_URL}/api/consent/${tenantId}?link=`)).toBe(true);
    expect(result.body).toContain('data-copy-target="consent-link"');
    expect(result.body).toContain("data-select-on-focus");
    expect(result.body).toMatch(/Expires <time datetime="[^"]+">/);
    expect(await apiStatus(tenantId)).toMatchObject({ status: "pending_consent", displayName: "Northwind Traders", defenderRegion: "eu" });

    const started = await openConsentLink(env, link ?? "");
    expect(started.status).toBe(302);

    const again = await post("consoleRegister", "/api/console/register", { tenantId, displayName: "Other" });
    expect(again.status).toBe(409);
    expect(again.body).toContain("already registered");
    expect((await apiStatus(tenantId))["displayName"]).toBe("Northwind Traders");
  });
});

describe("form size", () => {
  it("answers 413 for a form over 16 KiB, declared or not, and registers nothing", async () => {
    const before = (await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).json<{ tenants: unknown[] }>().tenants.length;
    const form = { tenantId: randomUUID(), displayName: "Too big", padding: "x".repeat(5 * 1024 * 1024) };
    const variants: Array<Record<string, string>> = [{}, { "content-length": String(new URLSearchParams(form).toString().length + 200) }];
    for (const headers of variants) {
      const result = await post("consoleRegister", "/api/console/register", form, {}, { headers });
      expect(result.status).toBe(413);
      expect(result.body).toContain("Form too large");
    }
    const after = (await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).json<{ tenants: unknown[] }>().tenants.length;
    expect(after).toBe(before);
  });
});

describe("CSRF protection", () => {
  const refusals: Array<[string, PostOptions]> = [
    ["no token at all", { field: null, cookie: null }],
    ["no cookie", { cookie: null }],
    ["no form field", { field: null }],
    ["a wrong token", { field: "A".repeat(43) }],
    ["a cookie that does not match the field", { cookie: "B".repeat(43) }],
    ["a foreign Origin", { origin: "https://attacker.example" }],
    ["the app's origin over http", { origin: ORIGIN.replace("https:", "http:") }],
    ["no Origin and a foreign Referer", { origin: null, headers: { referer: "https://attacker.example/page" } }],
    ["neither Origin nor Referer nor Sec-Fetch-Site", { origin: null }],
    ["Origin null from another site", { origin: "null", headers: { "sec-fetch-site": "cross-site" } }],
    ["Origin null without Sec-Fetch-Site", { origin: "null" }],
    ["Sec-Fetch-Site cross-site", { headers: { "sec-fetch-site": "cross-site" } }],
  ];

  it.each(refusals)("refuses a POST with %s (403) and changes nothing", async (_label, options) => {
    const tenantId = randomUUID();
    const result = await post("consoleRegister", "/api/console/register", { tenantId, displayName: "Forged" }, {}, options);
    expect(result.status).toBe(403);
    expect(result.body).toContain("This form could not be accepted");
    expect(result.body).not.toContain(tenantId);
    expect((await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } })).status).toBe(404);
  });

  it("accepts what a browser sends under Referrer-Policy no-referrer: Origin null with Sec-Fetch-Site same-origin", async () => {
    const tenantId = randomUUID();
    const result = await post("consoleRegister", "/api/console/register", { tenantId, displayName: "Same origin" }, {}, {
      origin: "null",
      headers: { "sec-fetch-site": "same-origin" },
    });
    expect(result.status).toBe(201);
    expect((await apiStatus(tenantId))["status"]).toBe("pending_consent");
  });

  it("accepts a same-origin Referer when there is no Origin", async () => {
    const tenantId = randomUUID();
    const token = await ensureToken();
    const result = track(
      await env.app.http("consoleRegister", {
        method: "POST",
        url: `${PUBLIC_BASE_URL}/api/console/register`,
        headers: { "content-type": "application/x-www-form-urlencoded", cookie: `${CSRF_COOKIE}=${token}`, referer: `${PUBLIC_BASE_URL}/api/console/register` },
        body: new URLSearchParams({ tenantId, displayName: "Referer", csrf: token }).toString(),
        params: {},
      }),
    );
    expect(result.status).toBe(201);
  });

  it("guards the consent-link and offboard forms too", async () => {
    const { tenantId } = await registerTenant(env, randomUUID(), "Guarded");
    const link = await post("consoleConsentLink", `/api/console/tenants/${tenantId}/consent-link`, {}, { tenantId }, { field: "C".repeat(43) });
    expect(link.status).toBe(403);
    expect(link.body).not.toContain(`/api/consent/${tenantId}?`);
    const off = await post("consoleOffboard", `/api/console/tenants/${tenantId}/offboard`, { confirmName: "Guarded" }, { tenantId }, {
      origin: "https://attacker.example",
    });
    expect(off.status).toBe(403);
    expect((await apiStatus(tenantId))["status"]).toBe("pending_consent");
  });

  it.each(refusals)("refuses a link revocation with %s (403), and the link keeps working", async (_label, options) => {
    const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), "Revoke Guarded");
    const linkId = linkIdOf(consentUrl);
    const result = await revokeLink(tenantId, linkId, options);
    expect(result.status).toBe(403);
    expect(result.body).toContain("This form could not be accepted");
    expect((await services.tenantAdmin.links(tenantId)).find((link) => link.id === linkId)).toMatchObject({ revoked: false });
    const actions = (await services.tenantAdmin.auditEntries(new URLSearchParams({ tenantId }))).map((entry) => entry.action);
    expect(actions).not.toContain("consent_link_revoked");
    expect((await openConsentLink(env, consentUrl)).status).toBe(302);
  });
});

describe("tenant page", () => {
  it("never mints a consent link on view; a POST issues one with its expiry", async () => {
    const { tenantId } = await registerTenant(env, randomUUID(), "Link On Demand");
    const key = env.vault.peekLatest("consent-link-signing-key");
    const viewed = await tenantPage(tenantId);
    expect(viewed.status).toBe(200);
    expect(viewed.body).toContain("Request a new consent");
    expect(viewed.body).not.toContain(`/api/consent/${tenantId}`);
    expect(viewed.body).not.toMatch(/sig=|exp=/);
    expect(viewed.body).toMatch(new RegExp(`<form method="post" action="/api/console/tenants/${tenantId}/consent-link"><input type="hidden" name="csrf" value="[A-Za-z0-9_-]{43}">`));

    const issued = await post("consoleConsentLink", `/api/console/tenants/${tenantId}/consent-link`, {}, { tenantId });
    expect(issued.status).toBe(200);
    expect(issued.body).toContain("A new consent link was issued.");
    const link = /<input id="consent-link" type="text" readonly value="([^"]+)"/.exec(issued.body)?.[1]?.replace(/&amp;/g, "&") ?? "";
    expect(link.startsWith(`${PUBLIC_BASE_URL}/api/consent/${tenantId}?link=`)).toBe(true);
    expect(issued.body).toMatch(/Expires <time datetime="/);
    expect((await openConsentLink(env, link)).status).toBe(302);
    // The signing key is the same one: the console mints with TenantAdmin's link building.
    expect(env.vault.peekLatest("consent-link-signing-key")?.value).toBe(key?.value);
    // Nor does the operator API's GET: only registration and a re-consent request mint a link.
    expect(await apiStatus(tenantId)).not.toHaveProperty("consentUrl");
  });

  it("offboards only after the display name is typed again", async () => {
    const tenantId = await connectedTenant(env, "Offboard Me");
    const page = await tenantPage(tenantId);
    expect(page.body).toContain(`<label for="confirmName">Type the tenant's display name to confirm</label>`);

    const missing = await post("consoleOffboard", `/api/console/tenants/${tenantId}/offboard`, {}, { tenantId });
    expect(missing.status).toBe(400);
    expect(missing.body).toContain('id="confirmName-error"');
    expect(missing.body).toContain("Type the tenant&#39;s display name to confirm.");
    const wrong = await post("consoleOffboard", `/api/console/tenants/${tenantId}/offboard`, { confirmName: "offboard me" }, { tenantId });
    expect(wrong.status).toBe(400);
    expect(wrong.body).toContain("The name does not match");
    expect(wrong.body).toContain('value="offboard me"');
    expect((await apiStatus(tenantId))["status"]).toBe("connected");

    const done = await post("consoleOffboard", `/api/console/tenants/${tenantId}/offboard`, { confirmName: "Offboard Me" }, { tenantId });
    expect(done.status).toBe(303);
    expect(done.location).toBe(`/api/console/tenants/${tenantId}?done=offboarded`);
    expect((await apiStatus(tenantId))["status"]).toBe("offboarded");
    const after = await get("consoleTenant", `/api/console/tenants/${tenantId}?done=offboarded`, { tenantId });
    expect(after.body).toContain("The tenant was offboarded");
    expect(after.body).toContain('<span class="badge badge-offboarded">Offboarded</span>');
    expect(after.body).not.toContain("Request a new consent");
    expect(after.body).not.toContain("/revoke");
    expect(after.body).not.toContain('id="confirmName"');
    const refused = await post("consoleConsentLink", `/api/console/tenants/${tenantId}/consent-link`, {}, { tenantId });
    expect(refused.status).toBe(409);
    expect(refused.body).not.toContain(`/api/consent/${tenantId}?`);
  });

  it("shows recent pulls from the pull history that each run writes, and alerts in the last 24 h", async () => {
    const tenantId = await connectedTenant(env, "History Corp");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 37, { start: minutesAgo(90), spacingMs: 30_000 }));
    const first = await services.tenantPull.run(tenantId, capturingLogger());
    expect(first).toMatchObject({ outcome: "pulled", alerts: 37 });
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: minutesAgo(8), spacingMs: 1_000 }).map((a, i) => ({ ...a, id: `${a.id}-late-${i}` })));
    expect(await services.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 5 });
    // A failed run: Entra ID refuses the refresh token.
    env.entra.revokeRefreshTokens(tenantId);
    services.accessTokens.forget(tenantId);
    await services.pullState.reset(tenantId).catch(() => undefined);
    const failed = await services.tenantPull.run(tenantId, capturingLogger());
    expect(failed.outcome).toBe("failed");

    const history = await services.pullHistory.recent(tenantId);
    expect(history.map((r) => r.outcome)).toEqual(["failed", "succeeded", "succeeded"]);
    expect(history.map((r) => r.alerts)).toEqual([0, 5, 37]);
    expect(history[0]?.errorCode).toBe(failed.outcome === "failed" ? failed.code : "");
    for (const run of history) expect(run.durationMs).toBeGreaterThanOrEqual(0);
    expect(await services.pullHistory.alertsSince(tenantId, Date.now() - 24 * 3600_000)).toBe(42);

    const page = await tenantPage(tenantId);
    const recent = page.body.slice(page.body.indexOf("<h2>Recent pulls</h2>"));
    expect(recent).toContain("The 3 most recent pulls, newest first");
    expect(recent).toMatch(/<td>Failed<\/td><td class="num">0<\/td><td class="num">[^<]+<\/td><td><code>[A-Za-z_0-9]+<\/code><\/td>/);
    expect(recent).toMatch(/<td>Succeeded<\/td><td class="num">37<\/td>/);
    expect(page.body).toMatch(/<dt>Alerts in last 24 h<\/dt><dd>42<\/dd>/);
    expect(page.body).toMatch(/<dt>Dead letters<\/dt><dd>\d+/);
    expect(page.body).toContain('<span class="badge badge-reconsent_required">Re-consent required</span>');

    const row = (await list(`?q=${tenantId}`)).body;
    expect(row).toMatch(/<td class="num">42<\/td>/);
  });

  it("records no history for a tenant that is not registered, and a failure to record never fails a pull", async () => {
    const unknown = randomUUID();
    expect(await services.tenantPull.run(unknown, capturingLogger())).toEqual({ outcome: "skipped", reason: "not_registered" });
    expect(await services.pullHistory.recent(unknown)).toEqual([]);

    const tenantId = await connectedTenant(env, "History Outage");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 3, { start: minutesAgo(20), spacingMs: 1_000 }));
    const broken = pipelineServices(env, {
      wrapTables: (tables) => ({
        async open(name) {
          if (name === "MsspPullHistory") throw Object.assign(new Error("Server busy"), { statusCode: 503 });
          return tables.open(name);
        },
      }),
    });
    const log = capturingLogger();
    expect(await broken.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 3 });
    expect(log.lines.join("\n")).toContain("could not record the pull in the pull history");
    // The page still renders without the history.
    const page = await tenantPage(tenantId);
    expect(page.status).toBe(200);
  });

  it("keeps the newest 50 rows and everything of the last 25 hours", async () => {
    const tenantId = randomUUID();
    const now = Date.now();
    const store = services.pullHistory;
    // 60 runs two hours apart (only 13 of them inside 25 hours): the oldest beyond 50 are pruned.
    for (let i = 59; i >= 0; i--) {
      await store.record(tenantId, { at: new Date(now - i * 2 * 3600_000).toISOString(), outcome: "succeeded", alerts: 1, durationMs: 10 });
    }
    const kept = await store.recent(tenantId, 1000);
    expect(kept).toHaveLength(50);
    expect(kept[0]?.at).toBe(new Date(now).toISOString());
    // 60 runs a minute apart: all inside 25 hours, all kept.
    const busy = randomUUID();
    for (let i = 59; i >= 0; i--) {
      await store.record(busy, { at: new Date(now - i * 60_000).toISOString(), outcome: "succeeded", alerts: 2, durationMs: 10 });
    }
    expect(await store.recent(busy, 1000)).toHaveLength(60);
    expect(await store.alertsSince(busy, now - 30 * 60_000)).toBe(2 * 31);
  }, 60_000);

  it("lists a tenant's history to prune it at most once an hour of runs, not after every run", async () => {
    let listings = 0;
    const counted = pipelineServices(env, {
      wrapTables: (tables) => ({
        async open(name) {
          const client = await tables.open(name);
          return new Proxy(client, {
            get(target, property, receiver) {
              if (property === "listEntities") listings++;
              return Reflect.get(target, property, receiver) as unknown;
            },
          });
        },
      }),
    });
    const tenantId = randomUUID();
    const start = Date.now() - 3 * 3600_000;
    // Three hours of runs five minutes apart: 36 runs, pruned at the first and once an hour after.
    for (let i = 0; i < 36; i++) {
      await counted.pullHistory.record(tenantId, { at: new Date(start + i * 5 * 60_000).toISOString(), outcome: "succeeded", alerts: 0, durationMs: 5 });
    }
    expect(listings).toBe(3);
    expect(await counted.pullHistory.recent(tenantId, 1000)).toHaveLength(36);
  }, 60_000);

  it("renders a display name with markup as text everywhere", async () => {
    const hostile = `<img src=x onerror=alert(1)> "Evil" & 'Co' ${randomUUID().slice(0, 6)}`;
    const tenantId = randomUUID();
    const registered = await post("consoleRegister", "/api/console/register", { tenantId, displayName: hostile });
    expect(registered.status).toBe(201);
    const escaped = "&lt;img src=x onerror=alert(1)&gt; &quot;Evil&quot; &amp; &#39;Co&#39;";
    const audit = await get("consoleAudit", `/api/console/audit?tenantId=${tenantId}`);
    expect(audit.status).toBe(200);
    // The audit detail quotes the name too ('Registered "…" with source mde').
    expect(audit.body).toContain(`Registered &quot;${escaped}`);
    for (const result of [registered, await tenantPage(tenantId), await list(`?q=${tenantId}`), audit]) {
      expect(result.body).toContain(escaped);
      expect(result.body).not.toContain("<img");
      expect(result.body).not.toContain("onerror=alert(1)>");
    }
    expect((await tenantPage(tenantId)).body).toContain(`<title>${escaped}`);
  });
});

describe("alert source, new consent, consent links and activity", () => {
  it("offers the source on the registration form (default DEFAULT_ALERT_SOURCE), with what each needs from the customer", async () => {
    const form = await get("consoleRegister", "/api/console/register");
    expect(form.status).toBe(200);
    expect(form.body).toContain("<legend><strong>Alert source</strong></legend>");
    // No DEFAULT_ALERT_SOURCE in this environment: mde.
    expect(form.body).toMatch(/<input type="radio" id="source-mde" name="source" value="mde" checked/);
    expect(form.body).toMatch(/<input type="radio" id="source-graph" name="source" value="graph" aria-describedby/);
    expect(form.body).toContain('<label for="source-mde">Microsoft Defender for Endpoint API</label>');
    expect(form.body).toContain('<label for="source-graph">Microsoft Graph security alerts (Defender XDR)</label>');
    expect(form.body).toContain("MSSP tab");
    expect(form.body).toContain("such as Security Reader; there is no portal step");

    const bad = await post("consoleRegister", "/api/console/register", { tenantId: randomUUID(), displayName: "Bad Source", source: "splunk" });
    expect(bad.status).toBe(400);
    expect(bad.body).toContain('id="source-error"');
    expect(bad.body).toContain("Choose one of the listed alert sources.");
    expect(bad.body).toContain('<a href="#source">');
    expect(bad.body).not.toContain('id="tenantId-error"');
  });

  it("registers a tenant with source graph and shows the source on its page, in the list and in the API", async () => {
    const tenantId = randomUUID();
    const result = await post("consoleRegister", "/api/console/register", { tenantId, displayName: "Graph Corp", source: "graph" });
    expect(result.status).toBe(201);
    expect(result.body).toContain("<dt>Alert source</dt><dd>Microsoft Graph security alerts (Defender XDR) <code>graph</code></dd>");
    // What the customer must grant for this source, beside the link to send them.
    expect(shownLink(result.body)).toContain(`/api/consent/${tenantId}?`);
    expect(result.body).toContain("such as Security Reader");
    expect(await apiStatus(tenantId)).toMatchObject({ source: "graph", status: "pending_consent" });

    const listed = await list(`?q=${tenantId}`);
    expect(listed.body).toContain('<th scope="col">Source</th>');
    expect(listed.body).toContain("<td>Graph (Defender XDR) <code>graph</code></td>");
    const page = await tenantPage(tenantId);
    expect(page.body).toContain("<dt>Alert source</dt><dd>Microsoft Graph security alerts (Defender XDR) <code>graph</code></dd>");
    // The form offers the other source only.
    expect(page.body).toContain('<option value="">Keep Microsoft Graph security alerts (Defender XDR)</option><option value="mde">Move to Microsoft Defender for Endpoint API</option>');
  });

  it("requests a new consent for a connected tenant: a one-time link that can replace the consent, listed under Consent links", async () => {
    const tenantId = await connectedTenant(env, "Reconsent Corp");
    const before = await tenantPage(tenantId);
    expect(before.body).toContain("A new consent link lets whoever opens it replace the current consent");
    expect(before.body).toContain("It works once");
    expect(before.body).toContain('<button type="submit" class="button">Request a new consent</button>');
    // The registration link was used by the consent: listed as used, and dormant while connected.
    const [registration] = await services.tenantAdmin.links(tenantId);
    expect(linkRow(before.body, registration?.id ?? "?")).toMatch(/<strong>Used<\/strong>/);

    const issued = await post("consoleConsentLink", `/api/console/tenants/${tenantId}/consent-link`, { source: "" }, { tenantId });
    expect(issued.status).toBe(200);
    expect(issued.body).toContain("A new consent link was issued.");
    expect(issued.body).toContain("Whoever opens this link can replace the tenant's current consent with their own sign-in. It works once.");
    const link = shownLink(issued.body);
    const linkId = linkIdOf(link);
    expect(linkId).toMatch(/^[A-Za-z0-9_-]{22}$/);

    const page = await tenantPage(tenantId);
    // Shown once: the page lists the link's record, never the link again.
    expect(page.body).not.toContain(`/api/consent/${tenantId}?`);
    const row = linkRow(page.body, linkId);
    expect(row).toContain("<td>New consent</td>");
    expect(row).toContain("<strong>Active</strong>");
    expect(row).toContain("<td>Sandbox operator</td>");
    expect(row).toMatch(new RegExp(`<form method="post" action="${revokePath(tenantId, linkId)}"><input type="hidden" name="csrf" value="[A-Za-z0-9_-]{43}"><button type="submit" class="button button-secondary">Revoke`));
    const activity = section(page.body, '<h2 id="activity"');
    expect(activity).toMatch(/<td>New consent requested<\/td><td>Sandbox operator <span class="muted">\(sandbox\)<\/span><\/td><td>Consent link [A-Za-z0-9_-]{22} issued \(tenant connected\)<\/td>/);
    expect(activity).toContain("<td>Consent completed</td>");
    expect(activity.indexOf("New consent requested")).toBeLessThan(activity.indexOf("Consent completed"));

    // It works: the admin's browser reaches Entra ID.
    expect((await openConsentLink(env, link)).status).toBe(302);
  });

  it("requests a new consent that moves the tenant to another source once it completes", async () => {
    const tenantId = await connectedTenant(env, "Mover Corp");
    const issued = await post("consoleConsentLink", `/api/console/tenants/${tenantId}/consent-link`, { source: "graph" }, { tenantId });
    expect(issued.status).toBe(200);
    expect(issued.body).toContain("Once the consent through it completes, the tenant moves to Microsoft Graph security alerts (Defender XDR)");
    expect(issued.body).toContain("such as Security Reader");
    const linkId = linkIdOf(shownLink(issued.body));
    expect(linkRow(issued.body, linkId)).toContain("<td>New consent, moves the tenant to Microsoft Graph security alerts (Defender XDR)</td>");
    // Until then it stays where it is.
    expect(await apiStatus(tenantId)).toMatchObject({ source: "mde", status: "connected" });

    const bogus = await post("consoleConsentLink", `/api/console/tenants/${tenantId}/consent-link`, { source: "splunk" }, { tenantId });
    expect(bogus.status).toBe(400);
    expect(bogus.body).not.toContain(`/api/consent/${tenantId}?`);
  });

  it("revokes a link from its Revoke button: the page says so, and a consent through it is refused", async () => {
    const tenantId = await connectedTenant(env, "Revoke Corp");
    const issued = await post("consoleConsentLink", `/api/console/tenants/${tenantId}/consent-link`, {}, { tenantId });
    const link = shownLink(issued.body);
    const linkId = linkIdOf(link);
    // A sign-in started before the revocation must not finish either.
    const started = await openConsentLink(env, link);
    expect(started.status).toBe(302);

    const revoked = await revokeLink(tenantId, linkId);
    expect(revoked.status).toBe(303);
    expect(revoked.location).toBe(`/api/console/tenants/${tenantId}?done=revoked#consent-links`);
    const page = await get("consoleTenant", `/api/console/tenants/${tenantId}?done=revoked`, { tenantId });
    expect(page.body).toContain("The consent link was revoked");
    const row = linkRow(page.body, linkId);
    expect(row).toMatch(/<strong>Revoked<\/strong> <time datetime="[^"]+">[^<]+<\/time> <span class="muted">\(just now\)<\/span> by Sandbox operator/);
    expect(row).not.toContain("/revoke");
    expect(section(page.body, '<h2 id="activity"')).toMatch(/<td>Consent link revoked<\/td><td>Sandbox operator [^<]*<span class="muted">\(sandbox\)<\/span><\/td><td>Consent link [A-Za-z0-9_-]{22} revoked<\/td>/);
    expect((await services.tenantAdmin.links(tenantId)).find((l) => l.id === linkId)).toMatchObject({ revoked: true, revokedBy: "Sandbox operator" });

    // Refused at the start, and the sign-in already under way cannot finish.
    const again = await openConsentLink(env, link);
    expect(again.status).toBe(410);
    expect(again.body).toContain("This consent link was withdrawn");
    const authorize = await env.browserGet(started.location ?? "");
    const callback = await env.app.http("consentCallback", { method: "GET", url: authorize.location ?? "", params: {}, headers: { cookie: cookieHeaderFrom(started) } });
    expect(callback.status).toBeGreaterThanOrEqual(400);

    // Revoking again changes nothing and records nothing more; an unknown link is a 404.
    expect((await revokeLink(tenantId, linkId)).status).toBe(303);
    const revocations = (await services.tenantAdmin.auditEntries(new URLSearchParams({ tenantId }))).filter((e) => e.action === "consent_link_revoked");
    expect(revocations).toHaveLength(1);
    expect((await revokeLink(tenantId, "A".repeat(22))).status).toBe(404);
    expect((await revokeLink(tenantId, "..%2F..%2Fx")).status).toBe(404);
  });

  it("makes a consent by a different user stand out on the tenant page", async () => {
    const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), "Takeover Corp");
    env.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { preferredUsername: "alice@customer.test", name: "Alice" } });
    expect((await completeConsent(env, consentUrl)).callback.status).toBe(200);
    expect((await tenantPage(tenantId)).body).not.toContain("The consent was replaced by a different user");

    const issued = await post("consoleConsentLink", `/api/console/tenants/${tenantId}/consent-link`, {}, { tenantId });
    env.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { preferredUsername: "mallory@customer.test", name: "Mallory" } });
    expect((await completeConsent(env, shownLink(issued.body))).callback.status).toBe(200);

    const page = (await tenantPage(tenantId)).body;
    const alert = /<div class="notice notice-error" role="alert"[\s\S]*?<\/div>/.exec(page)?.[0] ?? "";
    expect(alert).toContain("The consent was replaced by a different user");
    expect(alert).toContain("mallory@customer.test");
    expect(alert).toContain("alice@customer.test");
    // Above the consent section, so it is the first thing read.
    expect(page.indexOf("The consent was replaced by a different user")).toBeLessThan(page.indexOf("<h2>Consent</h2>"));
    expect(page).toContain('<dd>mallory@customer.test <span class="muted">(before: alice@customer.test)</span></dd>');
    expect(page).toMatch(/<li class="field-error"><strong><code>consenter_changed<\/code>/);
    expect(page).toContain('<span class="badge badge-degraded">Degraded</span>');
    expect(section(page, '<h2 id="activity"')).toMatch(/<strong class="field-error">Consent given by a different user<\/strong><\/td><td>mallory@customer\.test <span class="muted">\(customer&#39;s administrator\)<\/span>/);
  });

  it("lists the latest entries of all tenants on the audit page, with the operator's name and links to the tenants", async () => {
    const tenantId = randomUUID();
    const displayName = `Audited <Co> ${randomUUID().slice(0, 6)}`;
    expect((await post("consoleRegister", "/api/console/register", { tenantId, displayName })).status).toBe(201);
    const linkId = (await services.tenantAdmin.links(tenantId))[0]?.id ?? "";
    expect((await revokeLink(tenantId, linkId)).status).toBe(303);

    const page = await get("consoleAudit", "/api/console/audit");
    expect(page.status).toBe(200);
    expect(page.body).toContain("<title>Audit trail</title>");
    // Linked from every page's navigation.
    expect(page.body).toContain('<a href="/api/console/audit">Audit</a>');
    expect((await list("")).body).toContain('<a href="/api/console/audit">Audit</a>');
    expect(page.body).toMatch(/The \d+ most recent entries of all tenants, newest first/);
    const rowsShown = page.body.slice(page.body.indexOf("<tbody>"), page.body.indexOf("</tbody>")).match(/<tr>/g) ?? [];
    expect(rowsShown.length).toBeGreaterThan(2);
    expect(rowsShown.length).toBeLessThanOrEqual(100);
    const nameHtml = displayName.replace("<", "&lt;").replace(">", "&gt;");
    const link = `<td><a href="/api/console/tenants/${tenantId}">${nameHtml}</a></td>`;
    expect(page.body).toContain(`${link}<td>Consent link revoked</td><td>Sandbox operator <span class="muted">(sandbox)</span></td><td>Consent link ${linkId} revoked</td>`);
    expect(page.body).toContain(`${link}<td>Tenant registered</td><td>Sandbox operator`);
    // Newest first.
    expect(page.body.indexOf(`${link}<td>Consent link revoked`)).toBeLessThan(page.body.indexOf(`${link}<td>Tenant registered`));
    expect(page.body).not.toContain("<Co>");

    // One tenant's activity only.
    const one = await get("consoleAudit", `/api/console/audit?tenantId=${tenantId.toUpperCase()}`);
    expect(one.status).toBe(200);
    expect(one.body).toContain("Showing the activity of");
    const tenantsShown = new Set([...one.body.matchAll(/<td><a href="\/api\/console\/tenants\/([0-9a-f-]+)">/g)].map((m) => m[1]));
    expect([...tenantsShown]).toEqual([tenantId]);
    const bad = await get("consoleAudit", "/api/console/audit?tenantId=nope");
    expect(bad.status).toBe(400);
  });
});

describe("consent pages name the MSSP (MSSP_DISPLAY_NAME)", () => {
  it("on link errors, on success with copy buttons for both values, and in the sandbox banner", async () => {
    const { consentUrl } = await registerTenant(env, randomUUID(), "Adatum");
    const tampered = new URL(consentUrl);
    tampered.searchParams.set("sig", "A".repeat(43));
    const bad = track(await openConsentLink(env, tampered.toString()));
    expect(bad.status).toBe(400);
    expect(bad.body).toContain(`Ask ${MSSP_NAME_HTML} for a new consent link.`);
    expect(bad.body).toContain("Simulated Microsoft cloud (sandbox)");
    expect(bad.body).not.toContain(MSSP_NAME);
    expect(bad.body).not.toContain("<script");

    const { callback } = await completeConsent(env, consentUrl);
    track(callback);
    expect(callback.status).toBe(200);
    expect(callback.body).toContain(`One step remains so that ${MSSP_NAME_HTML} can read`);
    expect(callback.body).toMatch(new RegExp(`<label for="value-1">Application ID</label>[\\s\\S]*?value="${env.clientId}"`));
    expect(callback.body).toMatch(new RegExp(`<label for="value-2">Tenant ID</label>[\\s\\S]*?value="${env.msspTenantId}"`));
    expect(callback.body).toContain('data-copy-target="value-1"');
    expect(callback.body).toContain('data-copy-target="value-2"');
    expect(callback.body).toContain('<script src="/api/consent/assets/copy.js" defer></script>');
    const csp = callback.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("form-action 'none'");
    expect(csp).not.toContain("unsafe");
  });
});

describe("secrecy", () => {
  it("puts no token, code or secret into any console response", () => {
    const secrets = secretsOf(env);
    expect(secrets.length).toBeGreaterThan(3);
    expect(responses.length).toBeGreaterThan(30);
    for (const r of responses) {
      const text = [r.body, r.location ?? "", JSON.stringify([...r.headers.entries()]), JSON.stringify(r.cookies)].join("\n");
      for (const secret of secrets) expect(text.includes(secret), `a secret leaked into: ${text.slice(0, 120)}`).toBe(false);
    }
    for (const entry of env.app.logs) for (const secret of secrets) expect(entry.message.includes(secret)).toBe(false);
  });
});
