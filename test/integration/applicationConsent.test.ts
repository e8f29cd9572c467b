import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { CSRF_COOKIE } from "../../shared/console/csrf";
import { createServices } from "../../shared/services";
import { tenantTokenSecretName } from "../../shared/secrets/tenantTokens";
import { generateAlerts } from "../fakes/alerts";
import { DEFENDER_RESOURCE } from "../fakes/fakeEntra";
import { KvError } from "../fakes/fakeKeyVault";
import { generateGraphAlerts } from "../fakes/graphAlerts";
import type { HttpResult } from "../harness/functionsHost";
import { capturingLogger, deliveredEnvelopes, minutesAgo, pipelineServices } from "../harness/pullFixture";
import {
  PUBLIC_BASE_URL,
  completeConsent,
  cookieHeaderFrom,
  openConsentLink,
  registerTenant,
  requestReconsent,
  startTestEnvironment,
  type TestEnvironment,
} from "../harness/testEnvironment";

/**
 * Issue 13, consent model per tenant: a tenant registered with `"consentModel": "application"`
 * is connected by its administrator's admin consent to an application permission, proven by a
 * client-credential token (never by the redirect's parameters), stores no refresh token, and is
 * pulled with app-only tokens. Everything runs through the app's own handlers against the fakes.
 */

let env: TestEnvironment;

beforeAll(async () => {
  // The sandbox flag only opens the console without App Service sign-in (as in console.test.ts).
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50", PULL_OVERLAP_MINUTES: "10", LOCAL_DEV_SANDBOX: "true" });
});
afterAll(async () => {
  await env?.stop();
});
afterEach(() => {
  env.entra.setAppConsentPropagation(0);
  env.entra.clearFailures();
});

type View = {
  status: string;
  consentModel: string;
  source: string;
  lastErrorCode?: string;
  lastErrorMessage?: string;
  health?: { lastPullErrorCode: string | null; lastPullErrorMessage: string | null };
  consentedBy?: string;
};

async function view(tenantId: string): Promise<View> {
  return (await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } })).json<View>();
}

async function auditDetails(tenantId: string): Promise<string[]> {
  const result = await env.app.http("listAudit", { method: "GET", url: `/api/audit?tenantId=${tenantId}` });
  return result.json<{ entries: Array<{ action: string; detail: string }> }>().entries.map((e) => `${e.action}: ${e.detail}`);
}

function storedSecret(tenantId: string): string | undefined {
  return env.vault.peekLatest(tenantTokenSecretName(tenantId))?.value;
}

async function applicationTenant(displayName: string, extra: Record<string, unknown> = {}): Promise<{ tenantId: string; consentUrl: string }> {
  const { tenantId, consentUrl, result } = await registerTenant(env, randomUUID(), displayName, { consentModel: "application", ...extra });
  expect(result.status).toBe(201);
  return { tenantId, consentUrl };
}

async function connectedApplicationTenant(displayName: string, extra: Record<string, unknown> = {}): Promise<string> {
  const { tenantId, consentUrl } = await applicationTenant(displayName, extra);
  const { callback } = await completeConsent(env, consentUrl);
  if (callback.status !== 200) throw new Error(`admin consent answered ${callback.status}: ${callback.body.slice(0, 300)}`);
  return tenantId;
}

/** Opens the link like the admin's browser, then answers the callback with a query the test writes itself. */
async function forgedCallback(consentUrl: string, query: Record<string, string>): Promise<HttpResult> {
  const start = await openConsentLink(env, consentUrl);
  expect(start.status).toBe(302);
  const state = new URL(start.location ?? "").searchParams.get("state") ?? "";
  const callbackUrl = `${PUBLIC_BASE_URL}/api/consent/callback?${new URLSearchParams({ ...query, state }).toString()}`;
  return env.app.http("consentCallback", { method: "GET", url: callbackUrl, params: {}, headers: { cookie: cookieHeaderFrom(start) } });
}

async function pull(tenantId: string) {
  return pipelineServices(env).tenantPull.run(tenantId, capturingLogger());
}

describe("registration with a consent model", () => {
  it("takes delegated by default, application on request, and refuses an unknown model with a 400 naming the field", async () => {
    const plain = await registerTenant(env, randomUUID(), "Default Model");
    expect(plain.result.status).toBe(201);
    expect(plain.result.json<View>().consentModel).toBe("delegated");

    const app = await registerTenant(env, randomUUID(), "App Model", { consentModel: "application" });
    expect(app.result.status).toBe(201);
    expect(app.result.json<View>()).toMatchObject({ status: "pending_consent", consentModel: "application" });
    const listed = (await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).json<{ tenants: Array<{ tenantId: string; consentModel: string }> }>();
    expect(listed.tenants.find((t) => t.tenantId === app.tenantId)?.consentModel).toBe("application");
    expect(listed.tenants.find((t) => t.tenantId === plain.tenantId)?.consentModel).toBe("delegated");

    const bad = await registerTenant(env, randomUUID(), "Bad Model", { consentModel: "certificate" });
    expect(bad.result.status).toBe(400);
    expect(bad.result.body).toContain("consentModel must be one of delegated, application");
    const notString = await registerTenant(env, randomUUID(), "Bad Model 2", { consentModel: 1 });
    expect(notString.result.status).toBe(400);

    const reconsent = await env.app.http("requestReconsent", {
      method: "POST",
      url: `/api/tenants/${app.tenantId}/reconsent`,
      params: { tenantId: app.tenantId },
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ consentModel: "both" }),
    });
    expect(reconsent.status).toBe(400);
    expect(reconsent.body).toContain("consentModel must be one of delegated, application");
  });
});

describe("DEFAULT_CONSENT_MODEL", () => {
  it("gives a registration without a model the configured default, and refuses an unknown default", async () => {
    const services = createServices(loadConfig({ ...process.env, ...env.env, DEFAULT_CONSENT_MODEL: "application" }));
    const registered = await services.tenantAdmin.register({ tenantId: randomUUID(), displayName: "Default App" }, { kind: "sandbox", id: "t", name: "Test" }, capturingLogger());
    expect(registered.consentModel).toBe("application");
    expect(await view(registered.tenantId)).toMatchObject({ consentModel: "application" });
    expect(() => loadConfig({ ...process.env, ...env.env, DEFAULT_CONSENT_MODEL: "app" })).toThrow(/DEFAULT_CONSENT_MODEL must be delegated or application/);
  });
});

describe("console", () => {
  let csrf = "";
  const origin = new URL(PUBLIC_BASE_URL).origin;
  async function consoleGet(name: string, path: string, params: Record<string, string> = {}): Promise<HttpResult> {
    const result = await env.app.http(name, { method: "GET", url: `${PUBLIC_BASE_URL}${path}`, headers: csrf ? { cookie: `${CSRF_COOKIE}=${csrf}` } : {}, params });
    csrf = result.cookies.find((c) => c.name === CSRF_COOKIE)?.value ?? csrf;
    return result;
  }
  async function consolePost(name: string, path: string, form: Record<string, string>, params: Record<string, string> = {}): Promise<HttpResult> {
    if (!csrf) await consoleGet("consoleTenants", "/api/console");
    return env.app.http(name, {
      method: "POST",
      url: `${PUBLIC_BASE_URL}${path}`,
      headers: { "content-type": "application/x-www-form-urlencoded", origin, cookie: `${CSRF_COOKIE}=${csrf}` },
      body: new URLSearchParams({ ...form, csrf }).toString(),
      params,
    });
  }

  it("offers the consent model at registration with one line on each, and shows it on the tenant page", async () => {
    const form = await consoleGet("consoleRegister", "/api/console/register");
    expect(form.body).toContain("<legend><strong>Consent model</strong></legend>");
    expect(form.body).toMatch(/<input type="radio" id="consentModel-delegated" name="consentModel" value="delegated" checked/);
    expect(form.body).toContain('id="consentModel-application"');
    expect(form.body).toContain("ends with their account");
    expect(form.body).toContain("stores no token at all");

    const bad = await consolePost("consoleRegister", "/api/console/register", { tenantId: randomUUID(), displayName: "Console Bad", consentModel: "nope" });
    expect(bad.status).toBe(400);
    expect(bad.body).toContain("Choose one of the listed consent models.");

    const tenantId = randomUUID();
    const made = await consolePost("consoleRegister", "/api/console/register", { tenantId, displayName: "Console App", consentModel: "application" });
    expect(made.status).toBe(201);
    expect(made.body).toContain("Application permission (admin consent) <code>application</code>");
    expect(made.body).toContain("no user's token is kept");
    expect(await view(tenantId)).toMatchObject({ consentModel: "application" });
    // No refresh token to age, and offboarding cannot take back the customer's grant: the page says both.
    const tenantPage = await consoleGet("consoleTenant", `/api/console/tenants/${tenantId}`, { tenantId });
    expect(tenantPage.body).toContain("None (application permission)");
    expect(tenantPage.body).toContain("remove the enterprise application");

    // A new consent that moves the tenant back to the delegated model, from the tenant page.
    const issued = await consolePost("consoleConsentLink", `/api/console/tenants/${tenantId}/consent-link`, { consentModel: "delegated" }, { tenantId });
    expect(issued.status).toBe(200);
    expect(issued.body).toContain("moves the tenant to delegated consent");
  });
});

describe("admin consent (application model)", () => {
  it("sends the admin to the tenant's admin-consent endpoint, proves the consent with an app token and stores no refresh token", async () => {
    const { tenantId, consentUrl } = await applicationTenant("Fabrikam App");
    const { start, callback } = await completeConsent(env, consentUrl);

    const target = new URL(start.location ?? "");
    expect(`${target.origin}${target.pathname}`).toBe(`${env.entra.url}/${tenantId}/v2.0/adminconsent`);
    expect(target.searchParams.get("client_id")).toBe(env.clientId);
    expect(target.searchParams.get("scope")).toBe("https://api.securitycenter.microsoft.com/.default");
    expect(target.searchParams.get("redirect_uri")).toBe(`${PUBLIC_BASE_URL}/api/consent/callback`);
    expect(target.searchParams.get("state")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(target.searchParams.has("code_challenge")).toBe(false);

    expect(callback.status).toBe(200);
    expect(callback.body).toContain("Consent complete");
    expect(callback.body).toContain("Alert.Read.All");
    expect(await view(tenantId)).toMatchObject({ status: "connected", consentModel: "application", source: "mde" });
    expect(storedSecret(tenantId)).toBeUndefined();
    expect(env.entra.appRoles(tenantId, env.clientId)).toEqual([`${DEFENDER_RESOURCE}/Alert.Read.All`]);
    expect((await auditDetails(tenantId)).some((d) => d.startsWith("consent_completed: Admin consent given"))).toBe(true);

    // The pull reads with app-only tokens: no refresh-token redemption, no Key Vault secret.
    const alerts = generateAlerts(tenantId, 120, { start: minutesAgo(90), spacingMs: 30_000 });
    env.defender.addAlerts(tenantId, alerts);
    const refreshesBefore = env.entra.stats.tokenRequests.refresh_token;
    const appTokensBefore = env.entra.appTokenRequests;
    const outcome = await pull(tenantId);
    expect(outcome).toEqual({ outcome: "pulled", alerts: 120, complete: true, deadLetters: 0 });
    expect((await deliveredEnvelopes(env, tenantId)).length).toBe(120);
    expect(env.entra.stats.tokenRequests.refresh_token).toBe(refreshesBefore);
    expect(env.entra.appTokenRequests).toBeGreaterThan(appTokensBefore);
    expect(storedSecret(tenantId)).toBeUndefined();

    // A connected tenant's link is spent, as in the delegated flow.
    const again = await openConsentLink(env, consentUrl);
    expect(again.status).toBe(410);
  });

  it("connects a Graph tenant with SecurityAlert.Read.All and pulls it with an app token", async () => {
    const { tenantId, consentUrl } = await applicationTenant("Graph App", { source: "graph" });
    const { start, callback } = await completeConsent(env, consentUrl);
    expect(new URL(start.location ?? "").searchParams.get("scope")).toBe("https://graph.microsoft.com/.default");
    expect(callback.status).toBe(200);
    expect(callback.body).toContain("SecurityAlert.Read.All");
    env.graph.addAlerts(tenantId, generateGraphAlerts(tenantId, 30, { start: minutesAgo(60), spacingMs: 60_000 }));
    const outcome = await pull(tenantId);
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 30 });
    expect(storedSecret(tenantId)).toBeUndefined();
  });

  it("never trusts the callback's tenant parameter: a forged one connects nothing", async () => {
    const { tenantId, consentUrl } = await applicationTenant("Forged Target");
    // The tenant never consented; a callback claiming it did proves nothing.
    const claimed = await forgedCallback(consentUrl, { admin_consent: "True", tenant: tenantId });
    expect(claimed.status).not.toBe(200);
    expect(claimed.body).not.toContain("Consent complete");
    // Another organization (the attacker's, which really consented) named in the callback: refused outright.
    const attacker = randomUUID();
    env.entra.grantAppConsent(attacker, env.clientId, [`${DEFENDER_RESOURCE}/Alert.Read.All`]);
    const other = await forgedCallback(consentUrl, { admin_consent: "True", tenant: attacker });
    expect(other.status).toBe(403);
    expect(other.body).toContain("different organization");

    expect(await view(tenantId)).toMatchObject({ status: "pending_consent", consentModel: "application" });
    expect((await auditDetails(tenantId)).some((d) => d.startsWith("consent_completed"))).toBe(false);
    expect(storedSecret(tenantId)).toBeUndefined();
    // The link was not spent: the real admin can still consent through it.
    const { callback } = await completeConsent(env, consentUrl);
    expect(callback.status).toBe(200);
  }, 30_000);

  it("shows a declined admin consent as declined, records it, and keeps the link usable", async () => {
    const { tenantId, consentUrl } = await applicationTenant("Declining Admin");
    env.entra.setConsentBehaviour(tenantId, { kind: "deny", error: "access_denied" });
    const { callback } = await completeConsent(env, consentUrl);
    expect(callback.status).toBe(403);
    expect(callback.body).toContain("Consent was declined");
    expect(await view(tenantId)).toMatchObject({ status: "pending_consent", lastErrorCode: "access_denied" });
    expect(env.entra.appRoles(tenantId, env.clientId)).toBeUndefined();
    // The admin-consent endpoint's own word for a cancel reads the same to the admin.
    env.entra.setConsentBehaviour(tenantId, { kind: "deny", error: "permission_denied" });
    const cancelled = await completeConsent(env, consentUrl);
    expect(cancelled.callback.status).toBe(403);
    expect(cancelled.callback.body).toContain("Consent was declined");

    env.entra.setConsentBehaviour(tenantId, { kind: "approve" });
    const retry = await completeConsent(env, consentUrl);
    expect(retry.callback.status).toBe(200);
    expect(await view(tenantId)).toMatchObject({ status: "connected" });
  });

  it("says 'try again in a minute' while a fresh consent propagates, then connects through the same link", async () => {
    const { tenantId, consentUrl } = await applicationTenant("Slow Directory");
    env.entra.setAppConsentPropagation(10 * 60_000, "no_service_principal");
    const first = await completeConsent(env, consentUrl);
    expect(first.callback.status).toBe(202);
    expect(first.callback.body).toContain("try again in a minute");
    expect(await view(tenantId)).toMatchObject({ status: "pending_consent" });
    expect((await view(tenantId)).lastErrorCode).toBeUndefined();

    env.entra.completeAppConsentPropagation();
    env.entra.setAppConsentPropagation(0);
    const second = await completeConsent(env, consentUrl);
    expect(second.callback.status).toBe(200);
    expect(await view(tenantId)).toMatchObject({ status: "connected", consentModel: "application" });
  }, 30_000);

  it("treats a token without the role right after consent as pending, not as a failure", async () => {
    const { tenantId, consentUrl } = await applicationTenant("Role Lag");
    env.entra.setAppConsentPropagation(10 * 60_000, "no_role");
    const first = await completeConsent(env, consentUrl);
    expect(first.callback.status).toBe(202);
    expect(await view(tenantId)).toMatchObject({ status: "pending_consent" });
    env.entra.setAppConsentPropagation(0);
    const second = await completeConsent(env, consentUrl);
    expect(second.callback.status).toBe(200);
  }, 30_000);
});

describe("consent removed", () => {
  it("marks the tenant reconsent_required with the reason when the customer deletes the app between pulls", async () => {
    const tenantId = await connectedApplicationTenant("Removed Between");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 10, { start: minutesAgo(60), spacingMs: 60_000 }));
    expect(await pull(tenantId)).toMatchObject({ outcome: "pulled", alerts: 10 });

    env.entra.removeAppConsent(tenantId);
    const outcome = await pull(tenantId);
    expect(outcome).toEqual({ outcome: "failed", code: "AADSTS7000229", category: "reconsent" });
    const after = await view(tenantId);
    expect(after).toMatchObject({ status: "reconsent_required", lastErrorCode: "AADSTS7000229" });
    expect(after.lastErrorMessage).toContain("consent again");
  });

  it("marks the tenant reconsent_required when the app role is removed and the API answers 403", async () => {
    const tenantId = await connectedApplicationTenant("Role Removed");
    env.entra.removeAppRole(tenantId);
    const outcome = await pull(tenantId);
    expect(outcome).toMatchObject({ outcome: "failed", code: "defender_forbidden", category: "reconsent" });
    const after = await view(tenantId);
    expect(after).toMatchObject({ status: "reconsent_required", lastErrorCode: "defender_forbidden" });
    expect(after.lastErrorMessage).toContain("Alert.Read.All");
  });

  it("keeps the tenant connected when the API refuses a token that carries the role: no new consent would help", async () => {
    const tenantId = await connectedApplicationTenant("Refused With Role");
    env.defender.fail(tenantId, { status: 403, times: 3 });
    const outcome = await pull(tenantId);
    expect(outcome).toMatchObject({ outcome: "failed", code: "defender_forbidden", category: "transient" });
    const after = await view(tenantId);
    expect(after).toMatchObject({ status: "connected", health: { lastPullErrorCode: "defender_forbidden" } });
    expect(after.health?.lastPullErrorMessage).toContain("carries Alert.Read.All");
  });

  it("stops a pull whose consent is removed in the middle, keeping the pages already delivered", async () => {
    const tenantId = await connectedApplicationTenant("Removed During");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 150, { start: minutesAgo(120), spacingMs: 30_000 }));
    let pages = 0;
    env.defender.afterPage(tenantId, () => {
      pages++;
      if (pages !== 1) return;
      // The customer deletes the app; the API stops accepting the token the pull holds.
      env.entra.removeAppConsent(tenantId);
      env.defender.fail(tenantId, { status: 401, times: 1 });
    });
    try {
      const outcome = await pull(tenantId);
      expect(outcome).toMatchObject({ outcome: "failed", code: "AADSTS7000229", category: "reconsent" });
    } finally {
      env.defender.afterPage(tenantId, null);
    }
    expect((await deliveredEnvelopes(env, tenantId)).length).toBeGreaterThan(0);
    expect(await view(tenantId)).toMatchObject({ status: "reconsent_required", lastErrorCode: "AADSTS7000229" });
  });
});

describe("moving a tenant between consent models", () => {
  it("revokes the tenant's other unused links when a link that moves the consent model is issued", async () => {
    const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), "Two Links");
    const moving = await requestReconsent(env, tenantId, { consentModel: "application" });
    // The delegated link could otherwise finish after the admin consent and leave the tenant delegated without a token.
    expect((await openConsentLink(env, consentUrl)).status).toBe(410);
    expect((await auditDetails(tenantId)).some((d) => d.startsWith("consent_link_revoked:") && d.includes("superseded by link"))).toBe(true);
    expect((await completeConsent(env, moving)).callback.status).toBe(200);
    expect(await view(tenantId)).toMatchObject({ status: "connected", consentModel: "application" });
  });

  it("leaves no pull state and delivers nothing when the tenant is offboarded before its first pull writes anything", async () => {
    const tenantId = await connectedApplicationTenant("Gone Before First Write");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: minutesAgo(10), spacingMs: 1_000 }));
    // The first page is throttled once; the operator offboards while the pull waits it out. The
    // pull has written nothing yet (an application-model token needs no claim), so offboarding
    // found no pull state to delete: the pull's first write must not create it.
    env.defender.throttle(tenantId, { times: 1, retryAfterSeconds: 1 });
    const svc = pipelineServices(env, {
      sleep: async () => {
        const offboarded = await env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${tenantId}`, params: { tenantId } });
        expect(offboarded.status).toBeLessThan(300);
      },
    });
    expect(await svc.tenantPull.run(tenantId, capturingLogger())).toEqual({ outcome: "skipped", reason: "not_connected" });
    expect(await svc.pullState.read(tenantId)).toBeUndefined();
    expect(await deliveredEnvelopes(env, tenantId)).toHaveLength(0);
  });

  it("deletes at the next pull a refresh token that the move to the application model could not delete", async () => {
    const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), "Leftover Token");
    expect((await completeConsent(env, consentUrl)).callback.status).toBe(200);
    expect(await pull(tenantId)).toMatchObject({ outcome: "pulled" });
    const name = tenantTokenSecretName(tenantId);
    env.vault.onRequest((request) => {
      if (request.method === "DELETE" && request.name === name) throw new KvError(403, "Forbidden", "Injected: the delete is refused.");
    });
    try {
      const moved = await completeConsent(env, await requestReconsent(env, tenantId, { consentModel: "application" }));
      expect(moved.callback.status).toBe(200);
    } finally {
      env.vault.onRequest(null);
    }
    expect(storedSecret(tenantId)).toBeDefined();
    expect((await auditDetails(tenantId)).some((d) => d.includes("the stored refresh token could not be deleted yet"))).toBe(true);
    expect(await pull(tenantId)).toMatchObject({ outcome: "pulled" });
    expect(storedSecret(tenantId)).toBeUndefined();
  });

  it("moves delegated → application (the refresh token is deleted) and back (a refresh token is stored again)", async () => {
    const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), "Mover");
    const delegated = await completeConsent(env, consentUrl);
    expect(delegated.callback.status).toBe(200);
    expect(storedSecret(tenantId)).toBeDefined();
    expect(await view(tenantId)).toMatchObject({ status: "connected", consentModel: "delegated" });
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: minutesAgo(60), spacingMs: 60_000 }));
    expect(await pull(tenantId)).toMatchObject({ outcome: "pulled", alerts: 5 });

    const toApplication = await requestReconsent(env, tenantId, { consentModel: "application" });
    const links = (await env.app.http("listConsentLinks", { method: "GET", url: `/api/tenants/${tenantId}/links`, params: { tenantId } })).json<{
      links: Array<{ purpose: string; consentModel?: string }>;
    }>().links;
    expect(links[0]).toMatchObject({ purpose: "reconsent", consentModel: "application" });
    // The tenant keeps its model and its access until the consent through that link completes.
    expect(await view(tenantId)).toMatchObject({ status: "connected", consentModel: "delegated" });
    const moved = await completeConsent(env, toApplication);
    expect(new URL(moved.start.location ?? "").pathname).toBe(`/${tenantId}/v2.0/adminconsent`);
    expect(moved.callback.status).toBe(200);
    expect(await view(tenantId)).toMatchObject({ status: "connected", consentModel: "application" });
    expect(storedSecret(tenantId)).toBeUndefined();
    expect((await auditDetails(tenantId)).some((d) => d.includes("from delegated to application; the stored refresh token was deleted"))).toBe(true);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 3, { start: minutesAgo(5), spacingMs: 10_000 }).map((a) => ({ ...a, id: `moved-${a.id}` })));
    expect(await pull(tenantId)).toMatchObject({ outcome: "pulled", alerts: 3 });

    const toDelegated = await requestReconsent(env, tenantId, { consentModel: "delegated" });
    const back = await completeConsent(env, toDelegated);
    expect(new URL(back.start.location ?? "").pathname).toBe(`/${tenantId}/oauth2/v2.0/authorize`);
    expect(back.callback.status).toBe(200);
    expect(await view(tenantId)).toMatchObject({ status: "connected", consentModel: "delegated" });
    expect(storedSecret(tenantId)).toBeDefined();
    const refreshesBefore = env.entra.stats.tokenRequests.refresh_token;
    expect(await pull(tenantId)).toMatchObject({ outcome: "pulled" });
    expect(env.entra.stats.tokenRequests.refresh_token).toBeGreaterThan(refreshesBefore);
  });
});
