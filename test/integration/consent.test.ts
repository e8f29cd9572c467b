import { randomUUID } from "node:crypto";
import { TableClient } from "@azure/data-tables";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inject } from "vitest";
import { buildConsentUrl } from "../../shared/consent/consentLink";
import { stateCookie } from "../../shared/consent/consentFlow";
import { sessionPartition } from "../../shared/consent/consentSessions";
import { SIGNING_KEY_SECRET_NAME } from "../../shared/consent/signingKey";
import { tenantTokenSecretName } from "../../shared/secrets/tenantTokens";
import { TABLES } from "../../shared/storage/names";
import type { HttpResult } from "../harness/functionsHost";
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

let env: TestEnvironment;
const responses: HttpResult[] = [];
const track = <T extends HttpResult>(result: T): T => {
  responses.push(result);
  return result;
};

beforeAll(async () => {
  env = await startTestEnvironment();
});
afterAll(async () => {
  await env?.stop();
});

async function tenantView(tenantId: string) {
  const result = track(await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } }));
  return { status: result.status, body: result.json<Record<string, unknown>>() };
}

function storedRefreshToken(tenantId: string): string | undefined {
  const secret = env.vault.peekLatest(tenantTokenSecretName(tenantId));
  return secret ? (JSON.parse(secret.value) as { refreshToken: string }).refreshToken : undefined;
}

async function signingKey(): Promise<Buffer> {
  const secret = env.vault.peekLatest(SIGNING_KEY_SECRET_NAME);
  if (!secret) throw new Error("no signing key yet");
  return Buffer.from(secret.value, "base64");
}

describe("function registrations", () => {
  it("registers every function with the route, methods and auth level the product promises", () => {
    const summary = Object.fromEntries(
      [...env.app.functions.values()].map((fn) => [
        fn.name,
        { type: fn.trigger.type, route: fn.trigger["route"], methods: fn.trigger["methods"], authLevel: fn.trigger["authLevel"] },
      ]),
    );
    expect(summary["registerTenant"]).toEqual({ type: "httpTrigger", route: "tenants", methods: ["POST"], authLevel: "function" });
    expect(summary["listTenants"]).toEqual({ type: "httpTrigger", route: "tenants", methods: ["GET"], authLevel: "function" });
    expect(summary["getTenant"]).toEqual({ type: "httpTrigger", route: "tenants/{tenantId}", methods: ["GET"], authLevel: "function" });
    expect(summary["offboardTenant"]).toEqual({ type: "httpTrigger", route: "tenants/{tenantId}", methods: ["DELETE"], authLevel: "function" });
    expect(summary["listDeadLetters"]).toEqual({ type: "httpTrigger", route: "tenants/{tenantId}/dead-letters", methods: ["GET"], authLevel: "function" });
    expect(summary["redriveDeadLetters"]).toEqual({
      type: "httpTrigger",
      route: "tenants/{tenantId}/dead-letters/redrive",
      methods: ["POST"],
      authLevel: "function",
    });
    expect(summary["requestReconsent"]).toEqual({ type: "httpTrigger", route: "tenants/{tenantId}/reconsent", methods: ["POST"], authLevel: "function" });
    expect(summary["listConsentLinks"]).toEqual({ type: "httpTrigger", route: "tenants/{tenantId}/links", methods: ["GET"], authLevel: "function" });
    expect(summary["revokeConsentLink"]).toEqual({ type: "httpTrigger", route: "tenants/{tenantId}/links/{linkId}", methods: ["DELETE"], authLevel: "function" });
    expect(summary["listAudit"]).toEqual({ type: "httpTrigger", route: "audit", methods: ["GET"], authLevel: "function" });
    // The customer's admin has no function key; the guid constraint keeps start from shadowing callback.
    expect(summary["consentStart"]).toEqual({ type: "httpTrigger", route: "consent/{tenantId:guid}", methods: ["GET"], authLevel: "anonymous" });
    expect(summary["consentCallback"]).toEqual({ type: "httpTrigger", route: "consent/callback", methods: ["GET"], authLevel: "anonymous" });
    expect(summary["consentAssets"]).toEqual({ type: "httpTrigger", route: "consent/assets/{name}", methods: ["GET"], authLevel: "anonymous" });
    // The console: a browser has no function key; App Service authentication is the gate (test/integration/console*.test.ts).
    expect(summary["consoleTenants"]).toEqual({ type: "httpTrigger", route: "console", methods: ["GET"], authLevel: "anonymous" });
    expect(summary["consoleRegister"]).toEqual({ type: "httpTrigger", route: "console/register", methods: ["GET", "POST"], authLevel: "anonymous" });
    expect(summary["consoleTenant"]).toEqual({ type: "httpTrigger", route: "console/tenants/{tenantId}", methods: ["GET"], authLevel: "anonymous" });
    expect(summary["consoleConsentLink"]).toEqual({
      type: "httpTrigger",
      route: "console/tenants/{tenantId}/consent-link",
      methods: ["POST"],
      authLevel: "anonymous",
    });
    expect(summary["consoleOffboard"]).toEqual({ type: "httpTrigger", route: "console/tenants/{tenantId}/offboard", methods: ["POST"], authLevel: "anonymous" });
    expect(summary["consoleRevokeLink"]).toEqual({
      type: "httpTrigger",
      route: "console/tenants/{tenantId}/links/{linkId}/revoke",
      methods: ["POST"],
      authLevel: "anonymous",
    });
    expect(summary["consoleAudit"]).toEqual({ type: "httpTrigger", route: "console/audit", methods: ["GET"], authLevel: "anonymous" });
    expect(summary["consoleAssets"]).toEqual({ type: "httpTrigger", route: "console/assets/{name}", methods: ["GET"], authLevel: "anonymous" });
    // Health: anonymous (a probe has no key), no tenant data (test/integration/health.test.ts).
    expect(summary["health"]).toEqual({ type: "httpTrigger", route: "health", methods: ["GET"], authLevel: "anonymous" });
  });

  it("registers the pull timer and the queue functions on the queues the scheduler fills", () => {
    const trigger = (name: string) => env.app.functions.get(name)?.trigger;
    expect(trigger("schedulePulls")).toMatchObject({ type: "timerTrigger", schedule: "0 */5 * * * *", runOnStartup: false });
    expect(trigger("pullTenant")).toMatchObject({ type: "queueTrigger", queueName: "tenant-pulls", connection: "AzureWebJobsStorage" });
    expect(trigger("pullTenantPoisoned")).toMatchObject({ type: "queueTrigger", queueName: "tenant-pulls-poison", connection: "AzureWebJobsStorage" });
    expect(env.app.functions.size).toBe(26);
  });
});

describe("consent happy path", () => {
  it("registers a tenant, walks the consent and stores the refresh token in Key Vault only", async () => {
    const { tenantId, consentUrl, result } = await registerTenant(env, randomUUID(), "Contoso <Pharma>");
    track(result);
    expect(result.status).toBe(201);
    const registered = result.json<Record<string, unknown>>();
    expect(registered).toMatchObject({ tenantId, displayName: "Contoso <Pharma>", status: "pending_consent" });
    expect(consentUrl.startsWith(`${PUBLIC_BASE_URL}/api/consent/${tenantId}?link=`)).toBe(true);

    const { start, callback } = await completeConsent(env, consentUrl);
    track(start);
    track(callback);
    const authorize = new URL(start.location ?? "");
    expect(`${authorize.origin}${authorize.pathname}`).toBe(`${env.entra.url}/${tenantId}/oauth2/v2.0/authorize`);
    const q = authorize.searchParams;
    expect(q.get("client_id")).toBe(env.clientId);
    expect(q.get("redirect_uri")).toBe(`${PUBLIC_BASE_URL}/api/consent/callback`);
    expect(q.get("response_type")).toBe("code");
    expect(q.get("code_challenge_method")).toBe("S256");
    expect(q.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get("state")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get("nonce")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get("prompt")).toBe("consent");
    expect((q.get("scope") ?? "").split(" ").sort()).toEqual(
      ["https://api.securitycenter.microsoft.com/Alert.Read", "offline_access", "openid", "profile"].sort(),
    );

    expect(callback.status).toBe(200);
    expect(callback.headers.get("content-type")).toContain("text/html");
    expect(callback.headers.get("referrer-policy")).toBe("no-referrer");
    expect(callback.body).toContain("Consent complete");
    expect(callback.body).toContain(env.clientId);
    expect(callback.body).toContain(env.msspTenantId);
    expect(callback.body).toContain("Contoso &lt;Pharma&gt;");
    expect(callback.body).not.toContain("Contoso <Pharma>");

    // The refresh token the fake Entra issued is the one in the vault, and nowhere else.
    const refreshToken = storedRefreshToken(tenantId);
    expect(refreshToken).toBeDefined();
    expect(env.entra.issuedSecrets()).toContain(refreshToken);
    const secret = env.vault.peekLatest(tenantTokenSecretName(tenantId));
    expect(secret?.contentType).toBe("application/vnd.mssp.tenant-token+json");
    expect(JSON.stringify(secret?.tags)).not.toContain(refreshToken);

    const view = await tenantView(tenantId);
    expect(view.status).toBe(200);
    expect(view.body).toMatchObject({ tenantId, status: "connected" });
    expect(String(view.body["consentedBy"])).toContain("@");
    expect(typeof view.body["consentedAt"]).toBe("string");
  });

  it("lists tenants with their status", async () => {
    const { tenantId } = await registerTenant(env, randomUUID(), "Fabrikam");
    const list = track(await env.app.http("listTenants", { method: "GET", url: "/api/tenants" }));
    expect(list.status).toBe(200);
    const tenants = list.json<{ tenants: Array<{ tenantId: string; status: string }> }>().tenants;
    expect(tenants.find((t) => t.tenantId === tenantId)?.status).toBe("pending_consent");
  });
});

describe("state handling", () => {
  it("refuses a tampered state without redeeming anything", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const start = track(await openConsentLink(env, consentUrl));
    const authorize = await env.browserGet(start.location ?? "");
    const callbackUrl = new URL(authorize.location ?? "");
    const state = callbackUrl.searchParams.get("state") ?? "";
    callbackUrl.searchParams.set("state", (state[0] === "A" ? "B" : "A") + state.slice(1));
    const before = env.entra.stats.tokenRequests.authorization_code;
    // The attacker's own browser: it holds the cookie that matches the state it forged.
    const forged = stateCookie(callbackUrl.searchParams.get("state") ?? "");
    const callback = track(
      await env.app.http("consentCallback", { method: "GET", url: callbackUrl.toString(), params: {}, headers: { cookie: `${forged.name}=${forged.value}` } }),
    );
    expect(callback.status).toBe(400);
    expect(callback.body).toContain("not valid");
    expect(env.entra.stats.tokenRequests.authorization_code).toBe(before);
    expect(storedRefreshToken(tenantId)).toBeUndefined();
    expect((await tenantView(tenantId)).body["status"]).toBe("pending_consent");
  });

  it("refuses a replayed callback", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const { callbackUrl, callback, cookie } = await completeConsent(env, consentUrl);
    expect(callback.status).toBe(200);
    const versionsBefore = env.vault.peekLatest(tenantTokenSecretName(tenantId))?.versions;
    const replay = track(await env.app.http("consentCallback", { method: "GET", url: callbackUrl, params: {}, headers: { cookie } }));
    expect(replay.status).toBe(400);
    expect(replay.body).toContain("already used");
    expect(env.vault.peekLatest(tenantTokenSecretName(tenantId))?.versions).toBe(versionsBefore);
  });

  it("refuses an expired state (older than 15 minutes)", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const start = track(await openConsentLink(env, consentUrl));
    const authorize = await env.browserGet(start.location ?? "");
    // Age the stored session as if the admin had left the sign-in open for 20 minutes.
    const sessions = TableClient.fromConnectionString(inject("storageConnectionString"), TABLES.consentSessions, {
      allowInsecureConnection: true,
    });
    const { createHash } = await import("node:crypto");
    const state = new URL(authorize.location ?? "").searchParams.get("state") ?? "";
    const rowKey = createHash("sha256").update(state).digest("hex");
    await sessions.updateEntity({ partitionKey: sessionPartition(rowKey), rowKey, expiresAt: new Date(Date.now() - 5 * 60_000).toISOString() }, "Merge");
    const callback = track(
      await env.app.http("consentCallback", { method: "GET", url: authorize.location ?? "", params: {}, headers: { cookie: cookieHeaderFrom(start) } }),
    );
    expect(callback.status).toBe(400);
    expect(callback.body).toContain("took too long");
    expect(storedRefreshToken(tenantId)).toBeUndefined();
  });

  it("keeps nothing redeemable in Table Storage", async () => {
    const sessions = TableClient.fromConnectionString(inject("storageConnectionString"), TABLES.consentSessions, {
      allowInsecureConnection: true,
    });
    const { consentUrl } = await registerTenant(env);
    const start = await openConsentLink(env, consentUrl);
    const q = new URL(start.location ?? "").searchParams;
    const dump: string[] = [];
    for await (const entity of sessions.listEntities()) dump.push(JSON.stringify(entity));
    const all = dump.join("\n");
    expect(all).not.toContain(q.get("state"));
    expect(all).not.toContain(q.get("nonce"));
    expect(all).not.toContain(q.get("code_challenge"));
  });
});

describe("consent refused or misdirected", () => {
  it("shows a readable page when the admin declines (access_denied) and stores nothing", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    env.entra.setConsentBehaviour(tenantId, { kind: "deny", error: "access_denied", errorDescription: "AADSTS65004: User declined to consent <script>" });
    const { callback } = await completeConsent(env, consentUrl);
    track(callback);
    expect(callback.status).toBe(403);
    expect(callback.body).toContain("Consent was declined");
    expect(callback.body).not.toContain("<script>");
    expect(storedRefreshToken(tenantId)).toBeUndefined();
    const view = await tenantView(tenantId);
    expect(view.body).toMatchObject({ status: "pending_consent", lastErrorCode: "access_denied" });
  });

  it("stores and shows only a known OAuth error code: anything else in error= becomes authorization_error", async () => {
    const forged = "please_call_support_at_evil_example";
    const { tenantId, consentUrl } = await registerTenant(env);
    env.entra.setConsentBehaviour(tenantId, { kind: "deny", error: forged, errorDescription: "x" });
    const { callback } = await completeConsent(env, consentUrl);
    track(callback);
    expect(callback.status).toBe(400);
    expect(callback.body).not.toContain(forged);
    expect(callback.body).toContain("authorization_error");
    expect((await tenantView(tenantId)).body).toMatchObject({ status: "pending_consent", lastErrorCode: "authorization_error" });
    // A code OAuth defines is kept as it is.
    const second = await registerTenant(env);
    env.entra.setConsentBehaviour(second.tenantId, { kind: "deny", error: "consent_required", errorDescription: "x" });
    track((await completeConsent(env, second.consentUrl)).callback);
    expect((await tenantView(second.tenantId)).body).toMatchObject({ lastErrorCode: "consent_required" });
  });

  it("rejects a consent by an admin of a different tenant than the link's", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const otherTenant = randomUUID();
    env.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { homeTenantId: otherTenant, preferredUsername: "admin@other.example" } });
    const { callback } = await completeConsent(env, consentUrl);
    track(callback);
    expect(callback.status).toBe(403);
    expect(callback.body).toContain("different organization");
    expect(storedRefreshToken(tenantId)).toBeUndefined();
    expect(storedRefreshToken(otherTenant)).toBeUndefined();
    expect((await tenantView(tenantId)).body).toMatchObject({ status: "pending_consent", lastErrorCode: "tenant_mismatch" });
  });

  it("rejects an id token whose signature does not verify", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    env.entra.idTokenOverrides(tenantId, { badSignature: true }, 1);
    const { callback } = await completeConsent(env, consentUrl);
    track(callback);
    expect(callback.status).toBe(400);
    expect(callback.body).toContain("could not be verified");
    expect(storedRefreshToken(tenantId)).toBeUndefined();
  });

  it("rejects an id token issued for another application", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    env.entra.idTokenOverrides(tenantId, { aud: randomUUID() }, 1);
    const { callback } = await completeConsent(env, consentUrl);
    expect(callback.status).toBe(400);
    expect(storedRefreshToken(tenantId)).toBeUndefined();
  });

  // Through MSAL and the real flow. MSAL decodes the id token without checking its issuer, expiry
  // or audience; it compares the nonce itself (as does the app, a second guard).
  it.each<[string, (tenantId: string) => Record<string, unknown>, string]>([
    ["another issuer", (tenantId) => ({ iss: `https://sts.windows.net/${tenantId}/` }), "wrong_issuer"],
    ["a nonce of another sign-in", () => ({ nonce: randomUUID() }), "nonce_mismatch"],
    ["no nonce", () => ({ nonce: undefined }), "nonce_mismatch"],
    ["no exp", () => ({ exp: undefined }), "missing_claim"],
    ["an expiry an hour ago", () => ({ exp: Math.floor(Date.now() / 1000) - 3600 }), "expired"],
    ["several audiences", () => ({ aud: [env.env["MSSP_CLIENT_ID"], randomUUID()] }), "wrong_audience"],
  ])("rejects an id token with %s, stores nothing and logs why", async (_name, override, reason) => {
    const { tenantId, consentUrl } = await registerTenant(env);
    env.entra.idTokenOverrides(tenantId, override(tenantId), 1);
    env.app.clearLogs();
    const { callback } = await completeConsent(env, consentUrl);
    track(callback);
    expect(callback.status).toBe(400);
    expect(callback.body).toContain("Nothing was saved");
    expect(storedRefreshToken(tenantId)).toBeUndefined();
    expect((await tenantView(tenantId)).body).toMatchObject({ status: "pending_consent" });
    const rejected = env.app.logs.find((entry) => /id token did not match the link|authorization code redemption failed/.test(entry.message));
    expect(rejected?.message).toContain(reason);
  });
});

describe("consent links", () => {
  it("refuses a link whose signature was tampered with, or that was re-pointed at another tenant", async () => {
    const { consentUrl } = await registerTenant(env);
    const tampered = new URL(consentUrl);
    const sig = tampered.searchParams.get("sig") ?? "";
    tampered.searchParams.set("sig", (sig[0] === "A" ? "B" : "A") + sig.slice(1));
    const bad = track(await openConsentLink(env, tampered.toString()));
    expect(bad.status).toBe(400);
    expect(bad.location).toBeNull();
    expect(bad.body).toContain("not valid");

    const { tenantId: other } = await registerTenant(env);
    const repointed = new URL(consentUrl);
    repointed.pathname = `/api/consent/${other}`;
    const moved = track(await openConsentLink(env, repointed.toString()));
    expect(moved.status).toBe(400);
    expect(moved.location).toBeNull();

    const bare = track(await openConsentLink(env, `${PUBLIC_BASE_URL}/api/consent/${other}`));
    expect(bare.status).toBe(400);

    // A link for a tenant nobody registered looks exactly like a bad one: no probing for customers.
    const unknown = track(await openConsentLink(env, consentUrl.replace(/consent\/[0-9a-f-]{36}/, `consent/${randomUUID()}`)));
    expect(unknown.status).toBe(400);
    expect(unknown.body).toBe(bad.body);
  });

  it("refuses an expired link", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const registeredAt = String((await tenantView(tenantId)).body["createdAt"]);
    const linkId = new URL(consentUrl).searchParams.get("link") ?? "";
    const expired = buildConsentUrl(PUBLIC_BASE_URL, await signingKey(), { tenantId, registeredAt, linkId, expiresAt: Date.now() - 60_000 });
    const result = track(await openConsentLink(env, expired));
    expect(result.status).toBe(410);
    expect(result.location).toBeNull();
    expect(result.body).toContain("expired");
  });
});

describe("transport security", () => {
  it("sends HSTS on every kind of response: JSON, a redirect, a page, an asset, a 404 asset and the health check", async () => {
    const { tenantId, consentUrl, result: registered } = await registerTenant(env);
    const responses = [
      registered,
      await env.app.http("listTenants", { method: "GET", url: "/api/tenants" }),
      await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } }),
      await openConsentLink(env, consentUrl),
      await env.app.http("consentCallback", { method: "GET", url: "/api/consent/callback?error=access_denied&state=x" }),
      await env.app.http("consentAssets", { method: "GET", url: "/api/consent/assets/consent.css", params: { name: "consent.css" } }),
      await env.app.http("consentAssets", { method: "GET", url: "/api/consent/assets/nope", params: { name: "nope" } }),
      await env.app.http("health", { method: "GET", url: "/api/health" }),
    ];
    expect(responses.map((r) => r.status)).toEqual([201, 200, 200, 302, 400, 200, 404, expect.any(Number)]);
    for (const response of responses) expect(response.headers.get("strict-transport-security")).toBe("max-age=31536000; includeSubDomains");
  });
});

describe("operator input", () => {
  const post = async (body: string) =>
    track(await env.app.http("registerTenant", { method: "POST", url: "/api/tenants", headers: { "content-type": "application/json" }, body }));

  it.each([
    ["a tenant id that is not a GUID", JSON.stringify({ tenantId: "contoso.onmicrosoft.com", displayName: "Contoso" }), "GUID"],
    ["an empty display name", JSON.stringify({ tenantId: randomUUID(), displayName: "   " }), "displayName is required"],
    ["an overlong display name", JSON.stringify({ tenantId: randomUUID(), displayName: "x".repeat(129) }), "at most 128"],
    ["a body that is not JSON", "tenantId=abc", "must be JSON"],
    ["a JSON array", "[]", "JSON object"],
    ["an unknown field", JSON.stringify({ tenantId: randomUUID(), displayName: "A", refreshToken: "x" }), "unknown field"],
  ])("answers 400 for %s and registers nothing", async (_label, body, message) => {
    const before = (await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).json<{ tenants: unknown[] }>().tenants.length;
    const result = await post(body);
    expect(result.status).toBe(400);
    expect(result.json<{ error: { message: string } }>().error.message).toContain(message);
    const after = (await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).json<{ tenants: unknown[] }>().tenants.length;
    expect(after).toBe(before);
  });

  it("refuses a 30 MiB body as too large, by its declared length and without one, and registers nothing", async () => {
    const before = (await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).json<{ tenants: unknown[] }>().tenants.length;
    const huge = Buffer.alloc(30 * 1024 * 1024, 0x20);
    const variants: Array<Record<string, string>> = [{ "content-type": "application/json", "content-length": String(huge.length) }, { "content-type": "application/json" }];
    for (const headers of variants) {
      const result = track(await env.app.http("registerTenant", { method: "POST", url: "/api/tenants", headers, body: huge }));
      expect(result.status).toBe(400);
      expect(result.json<{ error: { code: string } }>().error.code).toBe("body_too_large");
    }
    const after = (await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).json<{ tenants: unknown[] }>().tenants.length;
    expect(after).toBe(before);
  });

  it("answers 409 for a tenant that is already registered", async () => {
    const { tenantId } = await registerTenant(env);
    const again = await registerTenant(env, tenantId, "Other name");
    track(again.result);
    expect(again.result.status).toBe(409);
    expect((await tenantView(tenantId)).body["displayName"]).toBe("Contoso Ltd");
  });

  it("answers 404 for an unknown tenant and 400 for a malformed id", async () => {
    expect((await tenantView(randomUUID())).status).toBe(404);
    const bad = await env.app.http("getTenant", { method: "GET", url: "/api/tenants/nope", params: { tenantId: "nope" } });
    expect(bad.status).toBe(400);
  });
});

describe("Key Vault outage during the callback", () => {
  it("shows a clear error page, does not mark the tenant connected and writes nothing", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const start = track(await openConsentLink(env, consentUrl));
    const authorize = await env.browserGet(start.location ?? "");
    env.vault.setFailure({ status: 503, code: "ServiceUnavailable" });
    try {
      const callback = track(
        await env.app.http("consentCallback", { method: "GET", url: authorize.location ?? "", params: {}, headers: { cookie: cookieHeaderFrom(start) } }),
      );
      expect(callback.status).toBe(503);
      expect(callback.body).toContain("could not be saved");
    } finally {
      env.vault.setFailure(null);
    }
    expect(storedRefreshToken(tenantId)).toBeUndefined();
    expect((await tenantView(tenantId)).body).toMatchObject({ status: "pending_consent", lastErrorCode: "secret_store_unavailable" });
  });
});

describe("offboarding", () => {
  it("deletes the tenant's token and stops its consent link from working", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    await completeConsent(env, consentUrl);
    expect(storedRefreshToken(tenantId)).toBeDefined();
    const result = track(await env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${tenantId}`, params: { tenantId } }));
    expect(result.status).toBe(200);
    expect(result.json<{ status: string }>().status).toBe("offboarded");
    expect(storedRefreshToken(tenantId)).toBeUndefined();
    const link = track(await openConsentLink(env, consentUrl));
    expect(link.status).toBe(410);
    expect(link.location).toBeNull();
  });

  it("can register and connect an offboarded tenant again, without reviving its old links", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    await completeConsent(env, consentUrl);
    await env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    await new Promise((resolve) => setTimeout(resolve, 5));
    const again = await registerTenant(env, tenantId, "Contoso again");
    expect(again.result.status).toBe(201);
    const oldLink = track(await openConsentLink(env, consentUrl));
    expect(oldLink.status).toBe(400);
    expect(oldLink.location).toBeNull();
    const { callback } = await completeConsent(env, again.consentUrl);
    expect(callback.status).toBe(200);
    expect(storedRefreshToken(tenantId)).toBeDefined();
  });
});

describe("secrecy", () => {
  it("never writes a token, code or secret into a log line or a response", () => {
    const secrets = secretsOf(env);
    expect(secrets.length).toBeGreaterThan(10);
    const haystacks = [
      ...env.app.logs.map((entry) => entry.message),
      ...responses.flatMap((r) => [r.body, r.location ?? "", JSON.stringify([...r.headers.entries()])]),
    ];
    expect(env.app.logs.length).toBeGreaterThan(5);
    for (const secret of secrets) {
      for (const text of haystacks) expect(text.includes(secret), `a secret leaked into: ${text.slice(0, 120)}`).toBe(false);
    }
  });
});
