import { describe, expect, it } from "vitest";
import { DEFAULT_MSSP_DISPLAY_NAME, LOCAL_DEV_SETTING_NAMES, loadConfig } from "../../shared/config";
import { decideAccess, decodeClientPrincipal, rolesOf } from "../../shared/console/access";
import { CSRF_COOKIE, csrfTokenFor, readCookie, verifyCsrf } from "../../shared/console/csrf";
import { consoleStatusOf, estimateCycleMs } from "../../shared/console/status";
import type { PullHealth } from "../../shared/pull/health";
import type { TenantRecord } from "../../shared/state/tenantRegistry";
import { escapeHtml, html, SafeHtml } from "../../shared/ui/page";

const REQUIRED = {
  MSSP_CLIENT_ID: "00000000-0000-4000-8000-000000000001",
  MSSP_CLIENT_SECRET: "not-a-real-secret",
  MSSP_TENANT_ID: "00000000-0000-4000-8000-000000000002",
  MSSP_PUBLIC_BASE_URL: "https://mssp.example",
  KEY_VAULT_URL: "https://kv.vault.azure.net/",
  AzureWebJobsStorage: "UseDevelopmentStorage=true",
};

const headers = (values: Record<string, string>) => ({ get: (name: string) => values[name.toLowerCase()] ?? null });

describe("console settings", () => {
  it("reads MSSP_DISPLAY_NAME with a neutral default, at most 100 characters, no control characters", () => {
    expect(loadConfig(REQUIRED).msspDisplayName).toBe(DEFAULT_MSSP_DISPLAY_NAME);
    expect(loadConfig({ ...REQUIRED, MSSP_DISPLAY_NAME: "  Contoso Security " }).msspDisplayName).toBe("Contoso Security");
    expect(() => loadConfig({ ...REQUIRED, MSSP_DISPLAY_NAME: "x".repeat(101) })).toThrow(/MSSP_DISPLAY_NAME must be at most 100/);
    expect(() => loadConfig({ ...REQUIRED, MSSP_DISPLAY_NAME: "Contoso\u0007Bell" })).toThrow(/control characters/);
  });

  it("reads LOCAL_DEV_SANDBOX, and refuses it in Azure", () => {
    expect(LOCAL_DEV_SETTING_NAMES).toContain("LOCAL_DEV_SANDBOX");
    expect(loadConfig(REQUIRED).localDev.sandbox).toBeUndefined();
    const local = { ...REQUIRED, MSSP_PUBLIC_BASE_URL: "http://localhost:7071" };
    expect(loadConfig({ ...local, LOCAL_DEV_SANDBOX: "true" }).localDev.sandbox).toBe(true);
    expect(loadConfig({ ...REQUIRED, LOCAL_DEV_SANDBOX: "false" }).localDev.sandbox).toBeUndefined();
    expect(() => loadConfig({ ...REQUIRED, LOCAL_DEV_SANDBOX: "yes please" })).toThrow(/LOCAL_DEV_SANDBOX must be true or false/);
    expect(() => loadConfig({ ...REQUIRED, LOCAL_DEV_SANDBOX: "true", WEBSITE_SITE_NAME: "mssp-func" })).toThrow(/LOCAL_DEV_SANDBOX/);
  });

  it("sees App Service authentication only when the platform says WEBSITE_AUTH_ENABLED=True", () => {
    expect(loadConfig(REQUIRED).easyAuthEnabled).toBe(false);
    expect(loadConfig({ ...REQUIRED, WEBSITE_AUTH_ENABLED: "True" }).easyAuthEnabled).toBe(true);
    expect(loadConfig({ ...REQUIRED, WEBSITE_AUTH_ENABLED: "False" }).easyAuthEnabled).toBe(false);
  });
});

describe("EasyAuth principal", () => {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64");

  it("decodes auth_typ and claims, and reads roles from `roles` or the principal's role_typ", () => {
    const principal = decodeClientPrincipal(
      encode({ auth_typ: "aad", role_typ: "role", claims: [{ typ: "roles", val: "A" }, { typ: "role", val: "B" }, { typ: "roles", val: '["C","D"]' }, { typ: 1, val: "x" }] }),
    );
    expect(principal?.authType).toBe("aad");
    expect(rolesOf(principal!)).toEqual(["A", "B", "C", "D"]);
    expect(decodeClientPrincipal(null)).toBeUndefined();
    expect(decodeClientPrincipal("%%%")).toBeUndefined();
    expect(decodeClientPrincipal(encode({ claims: [] }))).toBeUndefined();
    expect(decodeClientPrincipal("A".repeat(70_000))).toBeUndefined();
  });

  it("decides: not configured, sign in, forbidden, allowed; the sandbox never trusts the header", () => {
    const MSSP = "00000000-0000-4000-8000-00000000aaaa";
    const withRole = encode({ auth_typ: "aad", claims: [{ typ: "name", val: "Ada" }, { typ: "tid", val: MSSP }, { typ: "roles", val: "Console.Operator" }] });
    const otherTenant = encode({ auth_typ: "aad", claims: [{ typ: "name", val: "Mallory" }, { typ: "tid", val: "00000000-0000-4000-8000-00000000bbbb" }, { typ: "roles", val: "Console.Operator" }] });
    expect(decideAccess({ easyAuthEnabled: false, sandbox: false, msspTenantId: MSSP }, headers({ "x-ms-client-principal": withRole }))).toEqual({ kind: "not_configured" });
    expect(decideAccess({ easyAuthEnabled: false, sandbox: true, msspTenantId: MSSP }, headers({ "x-ms-client-principal": withRole }))).toEqual({
      kind: "allowed",
      operator: { name: "Sandbox operator", via: "sandbox" },
    });
    expect(decideAccess({ easyAuthEnabled: true, sandbox: false, msspTenantId: MSSP }, headers({}))).toEqual({ kind: "sign_in" });
    expect(decideAccess({ easyAuthEnabled: true, sandbox: false, msspTenantId: MSSP }, headers({ "x-ms-client-principal": withRole }))).toEqual({
      kind: "allowed",
      operator: { name: "Ada", via: "easyauth" },
    });
    // The role assigned in another tenant (the app is multi-tenant) does not count.
    expect(decideAccess({ easyAuthEnabled: true, sandbox: false, msspTenantId: MSSP }, headers({ "x-ms-client-principal": otherTenant }))).toEqual({
      kind: "forbidden",
      name: "Mallory",
      reason: "other_tenant",
    });
    const noRole = encode({ auth_typ: "aad", claims: [{ typ: "preferred_username", val: "eve@x" }, { typ: "tid", val: MSSP }] });
    expect(decideAccess({ easyAuthEnabled: true, sandbox: true, msspTenantId: MSSP }, headers({ "x-ms-client-principal": noRole }))).toEqual({
      kind: "forbidden",
      name: "eve@x",
      reason: "missing_role",
    });
  });
});

describe("CSRF checks", () => {
  const token = "T".repeat(43);
  const form = (csrf?: string) => new URLSearchParams(csrf === undefined ? {} : { csrf });
  const origin = "https://mssp.example";

  it("reuses a well-formed cookie token and mints one otherwise", () => {
    expect(csrfTokenFor(headers({ cookie: `a=b; ${CSRF_COOKIE}=${token}` }))).toEqual({ token });
    const fresh = csrfTokenFor(headers({ cookie: `${CSRF_COOKIE}=short` }));
    expect(fresh.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(fresh.cookie).toEqual({ name: CSRF_COOKIE, value: fresh.token, path: "/", secure: true, httpOnly: true, sameSite: "Strict" });
    expect(readCookie("x=1;  y = 2 ", "y")).toBe("2");
  });

  it("needs the matching token and a same-origin request", () => {
    const ok = { cookie: `${CSRF_COOKIE}=${token}`, origin };
    expect(verifyCsrf(headers(ok), form(token), origin)).toEqual({ ok: true, token });
    expect(verifyCsrf(headers(ok), form("U".repeat(43)), origin)).toEqual({ ok: false, reason: "token" });
    expect(verifyCsrf(headers(ok), form(), origin)).toEqual({ ok: false, reason: "token" });
    expect(verifyCsrf(headers({ origin }), form(token), origin)).toEqual({ ok: false, reason: "token" });
    expect(verifyCsrf(headers({ ...ok, origin: "https://mssp.example.evil" }), form(token), origin)).toEqual({ ok: false, reason: "origin" });
    expect(verifyCsrf(headers({ cookie: ok.cookie, referer: `${origin}/api/console` }), form(token), origin).ok).toBe(true);
    expect(verifyCsrf(headers({ cookie: ok.cookie, referer: "https://evil.example/" }), form(token), origin).ok).toBe(false);
    expect(verifyCsrf(headers({ cookie: ok.cookie, origin: "null", "sec-fetch-site": "same-origin" }), form(token), origin).ok).toBe(true);
    expect(verifyCsrf(headers({ cookie: ok.cookie, origin: "null" }), form(token), origin).ok).toBe(false);
    expect(verifyCsrf(headers({ ...ok, "sec-fetch-site": "same-site" }), form(token), origin).ok).toBe(false);
  });
});

describe("console status", () => {
  const record = (status: TenantRecord["status"], consentedAt?: string): TenantRecord => ({
    tenantId: "t",
    displayName: "T",
    status,
    createdAt: "2024-01-01T00:00:00.000Z",
    updatedAt: "2024-01-01T00:00:00.000Z",
    ...(consentedAt ? { consentedAt } : {}),
  });
  const health = (overrides: Partial<PullHealth>): PullHealth => ({
    lastPullAt: null,
    lastSuccessfulPullAt: null,
    alertsInLastPull: null,
    checkpoint: null,
    catchingUp: false,
    catchingUpPosition: null,
    refreshTokenAgeHours: null,
    consecutiveFailures: 0,
    lastPullErrorCode: null,
    lastPullErrorMessage: null,
    clockSkewSeconds: null,
    deadLetters: 0,
    lastDeadLetterReason: null,
    sinks: null,
    warnings: [],
    ...overrides,
  });
  const now = Date.parse("2024-06-01T12:00:00Z");
  const cycle = 5 * 60_000;
  const ago = (minutes: number) => new Date(now - minutes * 60_000).toISOString();

  it("derives healthy and degraded for connected tenants only", () => {
    expect(consoleStatusOf(record("pending_consent"), undefined, now, cycle).status).toBe("pending_consent");
    expect(consoleStatusOf(record("reconsent_required"), health({ consecutiveFailures: 3 }), now, cycle).status).toBe("reconsent_required");
    expect(consoleStatusOf(record("connected", ago(1)), undefined, now, cycle).status).toBe("healthy");
    expect(consoleStatusOf(record("connected", ago(60)), health({ lastSuccessfulPullAt: ago(4) }), now, cycle).status).toBe("healthy");
    const failing = consoleStatusOf(record("connected", ago(60)), health({ lastSuccessfulPullAt: ago(4), consecutiveFailures: 2, lastPullErrorCode: "defender_timeout" }), now, cycle);
    expect(failing).toEqual({ status: "degraded", reasons: ["2 failed pulls in a row (last: defender_timeout)"] });
    const warned = consoleStatusOf(record("connected", ago(60)), health({ lastSuccessfulPullAt: ago(4), warnings: [{ code: "clock_skew", message: "m", at: null }] }), now, cycle);
    expect(warned.status).toBe("degraded");
    expect(consoleStatusOf(record("connected", ago(600)), health({ lastSuccessfulPullAt: ago(17) }), now, cycle).status).toBe("degraded");
    expect(consoleStatusOf(record("connected", ago(600)), health({ lastSuccessfulPullAt: ago(15) }), now, cycle).status).toBe("healthy");
    expect(consoleStatusOf(record("connected", ago(30)), health({}), now, cycle).reasons[0]).toMatch(/No successful pull since the consent/);
  });

  it("estimates the pull cycle from the NCRONTAB schedule", () => {
    expect(estimateCycleMs("0 */5 * * * *")).toBe(300_000);
    expect(estimateCycleMs("*/20 * * * * *")).toBe(20_000);
    expect(estimateCycleMs("0 0 * * * *")).toBe(3_600_000);
    expect(estimateCycleMs("0 0,30 * * * *")).toBe(1_800_000);
    expect(estimateCycleMs("0 15 2 * * *")).toBe(86_400_000);
    expect(estimateCycleMs("*/10 * * * *")).toBe(600_000);
    expect(estimateCycleMs("nonsense")).toBe(300_000);
    expect(estimateCycleMs("0 99 * * * *")).toBe(300_000);
  });
});

describe("page template", () => {
  it("escapes every interpolated value unless it is markup from another template", () => {
    const name = `<script>alert("x")</script>&'`;
    expect(html`<p>${name}</p>`.value).toBe(`<p>${escapeHtml(name)}</p>`);
    expect(html`<ul>${["<a>", html`<li>ok</li>`]}</ul>`.value).toBe("<ul>&lt;a&gt;<li>ok</li></ul>");
    expect(html`${null}${undefined}${false}${0}`.value).toBe("0");
    expect(html`<a title="${'" onmouseover="x'}">`.value).toBe('<a title="&quot; onmouseover=&quot;x">');
    expect(html`x` instanceof SafeHtml).toBe(true);
  });
});
