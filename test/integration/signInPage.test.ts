import { randomUUID } from "node:crypto";
import { fetch } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tenantTokenSecretName } from "../../shared/secrets/tenantTokens";
import { signInFormSubmission } from "../fakes/fakeEntra";
import {
  PUBLIC_BASE_URL,
  completeConsent,
  cookieHeaderFrom,
  openConsentLink,
  registerTenant,
  startTestEnvironment,
  type TestEnvironment,
} from "../harness/testEnvironment";

/**
 * The consent as a person clicks through it in a local sandbox: the app sends the browser to the
 * fake Entra's plain-HTTP sign-in page (LOCAL_DEV_SIGN_IN_BASE_URL), where Accept or Decline
 * leads back to the app's callback. No certificate is involved on the browser's side.
 */

let env: TestEnvironment;
let signInUrl: string;

beforeAll(async () => {
  env = await startTestEnvironment({}, { browserSignIn: true });
  signInUrl = env.signInUrl ?? "";
  env.entra.setInteractive(true);
});
afterAll(async () => {
  await env?.stop();
});

/** A plain browser: no CA for the fakes (it needs none on http), redirects not followed. */
async function browser(url: string, init: { method?: string; body?: URLSearchParams } = {}) {
  const res = await fetch(url, { ...init, redirect: "manual" });
  return { status: res.status, headers: res.headers, location: res.headers.get("location"), body: await res.text() };
}

/** Registers a tenant and opens its consent link; returns where the app sent the browser. */
async function startConsent(): Promise<{ tenantId: string; signInPage: string; cookie: string }> {
  const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), "Fabrikam <Labs> & \"Co\"");
  const start = await openConsentLink(env, consentUrl);
  expect(start.status).toBe(302);
  // The browser keeps the cookie the start set: the callback is accepted only with it.
  return { tenantId, signInPage: start.location ?? "", cookie: cookieHeaderFrom(start) };
}

/** Shows the sign-in page, clicks a button, follows the 302 to the app's callback. */
async function answer(signInPage: string, decision: "accept" | "decline", cookie: string) {
  const page = await browser(signInPage);
  expect(page.status).toBe(200);
  const { action, body } = signInFormSubmission(signInPage, page.body, decision);
  const answered = await browser(action, { method: "POST", body });
  expect(answered.status).toBe(302);
  const callbackUrl = answered.location ?? "";
  expect(callbackUrl.startsWith(`${PUBLIC_BASE_URL}/api/consent/callback?`)).toBe(true);
  const callback = await env.app.http("consentCallback", { method: "GET", url: callbackUrl, params: {}, headers: { cookie } });
  return { callbackUrl, callback };
}

async function tenantStatus(tenantId: string): Promise<Record<string, unknown>> {
  const result = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
  return result.json<Record<string, unknown>>();
}

function storedRefreshToken(tenantId: string): string | undefined {
  const secret = env.vault.peekLatest(tenantTokenSecretName(tenantId));
  return secret ? (JSON.parse(secret.value) as { refreshToken: string }).refreshToken : undefined;
}

describe("consent through the fake's plain-HTTP sign-in page", () => {
  it("points the app at the browser listener via LOCAL_DEV_SIGN_IN_BASE_URL", () => {
    expect(signInUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(env.env["LOCAL_DEV_SIGN_IN_BASE_URL"]).toBe(signInUrl);
  });

  it("redirects the consent start to the http sign-in origin with MSAL's path and query unchanged", async () => {
    const { tenantId, signInPage } = await startConsent();
    const url = new URL(signInPage);
    expect(url.origin).toBe(signInUrl);
    expect(url.pathname).toBe(`/${tenantId}/oauth2/v2.0/authorize`);
    expect(url.searchParams.get("client_id")).toBe(env.clientId);
    expect(url.searchParams.get("redirect_uri")).toBe(`${PUBLIC_BASE_URL}/api/consent/callback`);
    expect(url.searchParams.get("code_challenge_method")).toBe("S256");
    expect(url.searchParams.get("state")).toBeTruthy();
    expect(url.searchParams.get("scope")).toContain("offline_access");
    // Tokens still go to the HTTPS authority; only the browser's hop moved.
    expect(env.env["ENTRA_AUTHORITY_HOST"]).toBe(env.entra.url);
  });

  it("shows the simulated sign-in page: Accept, Decline, banner, ids and scopes, escaped, with a strict CSP", async () => {
    const { tenantId, signInPage } = await startConsent();
    // A parameter a browser could be handed with hostile content; it must come back inert.
    const hostile = new URL(signInPage);
    hostile.searchParams.set("login_hint", `"><script>alert(1)</script>`);
    const page = await browser(hostile.toString());
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("content-security-policy")).toBe(
      `default-src 'none'; style-src 'unsafe-inline'; form-action 'self' ${PUBLIC_BASE_URL}; frame-ancestors 'none'; base-uri 'none'`,
    );
    expect(page.headers.get("referrer-policy")).toBe("no-referrer");
    expect(page.body).toContain("<title>Sign in (simulated Microsoft Entra ID)</title>");
    expect(page.body).toContain("Simulated Microsoft cloud for local testing");
    expect(page.body).toMatch(/<button[^>]*>Accept<\/button>/);
    expect(page.body).toMatch(/<button[^>]*>Decline<\/button>/);
    expect(page.body).toContain(tenantId);
    expect(page.body).toContain(env.clientId);
    expect(page.body).toContain("https://api.securitycenter.microsoft.com/Alert.Read");
    expect(page.body).not.toContain("<script>");
    expect(page.body).toContain("&#34;&#62;&#60;script&#62;");
    expect(page.body).not.toMatch(/<(script|link|img|iframe)\b|\b(src|href)=/i);
    expect((await tenantStatus(tenantId))["status"]).toBe("pending_consent");
  });

  it("Accept leads to the callback, which connects the tenant and stores its refresh token", async () => {
    const { tenantId, signInPage, cookie } = await startConsent();
    const { callback } = await answer(signInPage, "accept", cookie);
    expect(callback.status).toBe(200);
    expect(callback.body).toContain("Consent complete");
    expect(callback.body).toContain("Fabrikam &lt;Labs&gt; &amp; &quot;Co&quot;");
    expect(storedRefreshToken(tenantId)).toBeTruthy();
    expect(env.entra.issuedSecrets()).toContain(storedRefreshToken(tenantId));
    expect((await tenantStatus(tenantId))["status"]).toBe("connected");
  });

  it("Decline leads to the callback's refusal page; the tenant stays pending and nothing is stored", async () => {
    const { tenantId, signInPage, cookie } = await startConsent();
    const { callbackUrl, callback } = await answer(signInPage, "decline", cookie);
    expect(new URL(callbackUrl).searchParams.get("error_description")).toBe("AADSTS65004: User declined to consent to access the app.");
    expect(callback.status).toBe(403);
    expect(callback.body).toContain("Consent was declined");
    expect(storedRefreshToken(tenantId)).toBeUndefined();
    expect(await tenantStatus(tenantId)).toMatchObject({ status: "pending_consent", lastErrorCode: "access_denied" });
  });

  it("answers a POST with a tampered redirect_uri with the error page, never a redirect", async () => {
    const { tenantId, signInPage } = await startConsent();
    const page = await browser(signInPage);
    const { action, body } = signInFormSubmission(signInPage, page.body, "accept");
    body.set("redirect_uri", "https://attacker.example/api/consent/callback");
    const tampered = await browser(action, { method: "POST", body });
    expect(tampered.status).toBe(400);
    expect(tampered.location).toBeNull();
    expect(tampered.body).toContain("AADSTS50011");
    expect(storedRefreshToken(tenantId)).toBeUndefined();
    expect((await tenantStatus(tenantId))["status"]).toBe("pending_consent");
  });

  it("still auto-approves through the same listener when the fake is not interactive", async () => {
    env.entra.setInteractive(false);
    try {
      const { tenantId, consentUrl } = await registerTenant(env);
      const { start, callback } = await completeConsent(env, consentUrl);
      expect(new URL(start.location ?? "").origin).toBe(signInUrl);
      expect(callback.status).toBe(200);
      expect((await tenantStatus(tenantId))["status"]).toBe("connected");
    } finally {
      env.entra.setInteractive(true);
    }
  });
});
