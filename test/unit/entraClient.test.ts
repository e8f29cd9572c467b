import { webcrypto } from "node:crypto";
import { exportJWK, generateKeyPair, SignJWT, type JWK } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import type { HttpClient, HttpRequest, HttpResponse } from "../../shared/http/httpClient";
import { DEFENDER_ALERT_SCOPE, EntraClient } from "../../shared/identity/entraClient";
import { classifyTokenFailure } from "../../shared/identity/tokenErrors";
import { registerSecrets } from "../harness/secrecy";

/**
 * EntraClient through the real MSAL, with the token endpoint played by a scripted HTTP client:
 * what the app asks Entra ID for (authorize and admin-consent links, code and refresh
 * redemptions) and what it makes of the answers. The end-to-end flows against the fake Entra ID
 * are in test/integration (consent, appCredential); these pin the details a user would see
 * differ: a link's parameters, a token's expiry on the injected clock, a tenant's claims.
 */

type CryptoKey = webcrypto.CryptoKey;

const AUTHORITY = "https://login.example.test";
const CLIENT_ID = "6c3a9f0e-1d2b-4c5a-8e7f-9a0b1c2d3e4f";
const TENANT = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const REDIRECT = "https://mssp.example.test/api/consent/callback";
const NONCE = "n-0123456789abcdef";
const REFRESH = "rt-entra-client-test-0001";
const ROTATED = "rt-entra-client-test-0002";
const ACCESS = "at-entra-client-test-0001";

let signing: { privateKey: CryptoKey; jwk: JWK };

beforeAll(async () => {
  const pair = await generateKeyPair("RS256");
  signing = { privateKey: pair.privateKey, jwk: { ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "RS256", use: "sig" } };
  registerSecrets(() => [REFRESH, ROTATED, ACCESS], "entraClient test tokens");
});

async function idToken(overrides: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {
    aud: CLIENT_ID,
    iss: `${AUTHORITY}/${TENANT}/v2.0`,
    iat: now - 10,
    nbf: now - 10,
    exp: now + 3600,
    tid: TENANT,
    oid: "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
    sub: "subject-1",
    preferred_username: "admin@contoso.example",
    nonce: NONCE,
    ...overrides,
  };
  return new SignJWT(claims).setProtectedHeader({ alg: "RS256", typ: "JWT", kid: "k1" }).sign(signing.privateKey);
}

function unsigned(claims: Record<string, unknown>): string {
  return `${Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url")}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.`;
}

interface Sent extends HttpRequest {
  url: string;
  form: URLSearchParams;
}

/** Entra's token endpoint and signing keys, answering from a script. */
function entra(answer: (form: URLSearchParams) => { status?: number; body: string | Record<string, unknown> }) {
  const sent: Sent[] = [];
  const http: HttpClient = {
    async send(url: string, request: HttpRequest): Promise<HttpResponse> {
      const form = new URLSearchParams(request.body ?? "");
      sent.push({ url, ...request, form });
      if (url === `${AUTHORITY}/${TENANT}/discovery/v2.0/keys`) return { status: 200, headers: {}, body: JSON.stringify({ keys: [signing.jwk] }) };
      if (url.startsWith(`${AUTHORITY}/${TENANT}/oauth2/v2.0/token`)) {
        const { status = 200, body } = answer(form);
        return { status, headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) };
      }
      return { status: 404, headers: {}, body: "" };
    },
  };
  return { http, sent };
}

function client(http: HttpClient, clock = () => Date.now()): EntraClient {
  return new EntraClient({ clientId: CLIENT_ID, credential: { msal: () => ({ clientSecret: "client-secret-test-value" }) }, authorityHost: AUTHORITY, redirectUri: REDIRECT, http, clock });
}

const clientInfo = Buffer.from(JSON.stringify({ uid: "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", utid: TENANT })).toString("base64url");

describe("EntraClient links", () => {
  it("asks for the admin's consent with PKCE S256, the session's state and nonce, and the alert scope", async () => {
    const { http, sent } = entra(() => ({ body: {} }));
    const url = new URL(await client(http).authorizeUrl({ tenantId: TENANT, state: "state-1", codeChallenge: "challenge-1", nonce: NONCE }));
    expect(`${url.origin}${url.pathname}`).toBe(`${AUTHORITY}/${TENANT}/oauth2/v2.0/authorize`);
    const params = Object.fromEntries(url.searchParams);
    expect(params).toMatchObject({
      client_id: CLIENT_ID,
      redirect_uri: REDIRECT,
      state: "state-1",
      nonce: NONCE,
      code_challenge: "challenge-1",
      code_challenge_method: "S256",
      prompt: "consent",
      response_mode: "query",
      response_type: "code",
    });
    expect(params["scope"]?.split(" ")).toContain(DEFENDER_ALERT_SCOPE);
    const graph = new URL(await client(http).authorizeUrl({ tenantId: TENANT, state: "s", codeChallenge: "c", nonce: NONCE, scope: "https://graph.microsoft.com/SecurityAlert.Read.All" }));
    expect(graph.searchParams.get("scope")?.split(" ")).toContain("https://graph.microsoft.com/SecurityAlert.Read.All");
    expect(graph.searchParams.get("scope")).not.toContain(DEFENDER_ALERT_SCOPE);
    // The authority's metadata is given, not fetched: building a link costs no request.
    expect(sent).toEqual([]);
  });

  it("builds the tenant's admin-consent link for an application permission", () => {
    const { http } = entra(() => ({ body: {} }));
    const url = new URL(client(http).adminConsentUrl({ tenantId: "contoso.onmicrosoft.com/x", scope: "https://api.securitycenter.microsoft.com/.default", state: "state-2" }));
    expect(url.pathname).toBe("/contoso.onmicrosoft.com%2Fx/v2.0/adminconsent");
    expect(Object.fromEntries(url.searchParams)).toEqual({
      client_id: CLIENT_ID,
      scope: "https://api.securitycenter.microsoft.com/.default",
      redirect_uri: REDIRECT,
      state: "state-2",
    });
  });
});

describe("EntraClient token requests", () => {
  it("redeems a code with its verifier, checks the id token and keeps the refresh token", async () => {
    const token = await idToken();
    const { http, sent } = entra(() => ({
      body: { token_type: "Bearer", scope: DEFENDER_ALERT_SCOPE, expires_in: 3600, access_token: ACCESS, refresh_token: REFRESH, id_token: token, client_info: clientInfo },
    }));
    const redeemed = await client(http).redeemCode({ tenantId: TENANT, code: "code-1", codeVerifier: "verifier-1", nonce: NONCE });
    expect(redeemed).toEqual({ identity: { tenantId: TENANT, objectId: "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", username: "admin@contoso.example" }, refreshToken: REFRESH });
    const post = sent.find((request) => request.method === "POST");
    expect(post?.url.split("?")[0]).toBe(`${AUTHORITY}/${TENANT}/oauth2/v2.0/token`);
    expect(post?.form.get("code")).toBe("code-1");
    expect(post?.form.get("code_verifier")).toBe("verifier-1");
    expect(post?.form.get("redirect_uri")).toBe(REDIRECT);
    expect(post?.form.get("scope")?.split(" ")).toContain(DEFENDER_ALERT_SCOPE);
    expect(post?.timeoutMs).toBeGreaterThan(0);
  });

  it("refuses a code whose id token carries another nonce, and one that brings no refresh token", async () => {
    const wrongNonce = await idToken({ nonce: "n-somebody-elses" });
    const first = entra(() => ({ body: { token_type: "Bearer", expires_in: 3600, access_token: ACCESS, refresh_token: REFRESH, id_token: wrongNonce, client_info: clientInfo } }));
    const refused = await client(first.http).redeemCode({ tenantId: TENANT, code: "c", codeVerifier: "v", nonce: NONCE }).catch((error: unknown) => error);
    // MSAL compares the nonce it was given before the app's own check (IdTokenValidator) does.
    expect(refused).toBeInstanceOf(Error);
    expect(String(refused)).toContain("nonce_mismatch");
    const good = await idToken();
    const second = entra(() => ({ body: { token_type: "Bearer", expires_in: 3600, access_token: ACCESS, id_token: good, client_info: clientInfo } }));
    await expect(client(second.http).redeemCode({ tenantId: TENANT, code: "c", codeVerifier: "v", nonce: NONCE })).rejects.toThrow(/no refresh token/);
  });

  it("refuses a code whose answer carries no id token: nothing proves whose consent it is", async () => {
    const { http } = entra(() => ({ body: { token_type: "Bearer", expires_in: 3600, access_token: ACCESS, refresh_token: REFRESH, client_info: clientInfo } }));
    // MSAL, given the nonce, refuses it first (nonce_mismatch); the app's own check is the backstop.
    await expect(client(http).redeemCode({ tenantId: TENANT, code: "c", codeVerifier: "v", nonce: NONCE })).rejects.toThrow(/nonce_mismatch|no id token/);
  });

  it("returns the rotated refresh token even when the answer names no account", async () => {
    const { http } = entra(() => ({ body: { token_type: "Bearer", expires_in: 3600, access_token: ACCESS, refresh_token: ROTATED } }));
    expect((await client(http).refresh({ tenantId: TENANT, refreshToken: REFRESH })).refreshToken).toBe(ROTATED);
  });

  it("refreshes on the injected clock: the access token expires its lifetime after the request, and the rotated refresh token is returned", async () => {
    const { http, sent } = entra(() => ({ body: { token_type: "Bearer", scope: DEFENDER_ALERT_SCOPE, expires_in: 3600, access_token: ACCESS, refresh_token: ROTATED, client_info: clientInfo } }));
    const clock = Date.parse("2031-01-01T00:00:00Z");
    const refreshed = await client(http, () => clock).refresh({ tenantId: TENANT, refreshToken: REFRESH });
    expect(refreshed.accessToken).toBe(ACCESS);
    expect(refreshed.refreshToken).toBe(ROTATED);
    // 3,600 s after the injected clock's now, give or take the test's run time and MSAL's whole seconds.
    expect(refreshed.accessTokenExpiresAt).toBeGreaterThan(clock + 3590_000);
    expect(refreshed.accessTokenExpiresAt).toBeLessThanOrEqual(clock + 3601_000);
    const post = sent.find((request) => request.method === "POST");
    expect(post?.form.get("grant_type")).toBe("refresh_token");
    expect(post?.form.get("refresh_token")).toBe(REFRESH);
    expect(post?.form.get("scope")?.split(" ")).toContain(DEFENDER_ALERT_SCOPE);
  });

  it("keeps the old refresh token when Entra does not rotate it, and asks for the scope it is given", async () => {
    const { http, sent } = entra(() => ({ body: { token_type: "Bearer", expires_in: 3600, access_token: ACCESS, client_info: clientInfo } }));
    const refreshed = await client(http).refresh({ tenantId: TENANT, refreshToken: REFRESH, scope: "https://graph.microsoft.com/SecurityAlert.Read.All" });
    expect(refreshed.refreshToken).toBe(REFRESH);
    expect(sent.find((request) => request.method === "POST")?.form.get("scope")?.split(" ")).toContain("https://graph.microsoft.com/SecurityAlert.Read.All");
  });

  it("fails a refresh whose answer carries no access token", async () => {
    const { http } = entra(() => ({ body: { token_type: "Bearer", expires_in: 3600, refresh_token: ROTATED, client_info: clientInfo } }));
    await expect(client(http).refresh({ tenantId: TENANT, refreshToken: REFRESH })).rejects.toThrow();
  });

  it("takes a failure page that is not JSON as a server failure, to be retried", async () => {
    const { http } = entra(() => ({ status: 503, body: "<html>Service Unavailable</html>" }));
    const failure = await client(http).refresh({ tenantId: TENANT, refreshToken: REFRESH }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(Error);
    expect(classifyTokenFailure(failure).category).toBe("transient");
  });

  it("reads the tenant, its application permissions and the token type from a client-credential token", async () => {
    const appToken = unsigned({ tid: TENANT.toUpperCase(), roles: ["Alert.Read.All", 7, "Machine.Read.All"], idtyp: "app", oid: "sp-object-id" });
    const { http, sent } = entra(() => ({ body: { token_type: "Bearer", expires_in: 3599, access_token: appToken } }));
    const clock = Date.parse("2031-01-01T00:00:00Z");
    const token = await client(http, () => clock).acquireAppToken({ tenantId: TENANT, scope: "https://api.securitycenter.microsoft.com/.default" });
    expect(token.claims).toEqual({ tid: TENANT, roles: ["Alert.Read.All", "Machine.Read.All"], idtyp: "app", oid: "sp-object-id" });
    expect(token.accessTokenExpiresAt).toBeGreaterThan(clock + 3589_000);
    expect(token.accessTokenExpiresAt).toBeLessThanOrEqual(clock + 3600_000);
    const post = sent.find((request) => request.method === "POST");
    expect(post?.form.get("grant_type")).toBe("client_credentials");
    expect(post?.form.get("scope")).toBe("https://api.securitycenter.microsoft.com/.default");
  });

  it("reads no claims from a token that is not a JWT or carries claims of the wrong type", async () => {
    for (const [accessToken, claims] of [
      ["opaque-token-value", { tid: "", roles: [] }],
      [unsigned({ tid: 5, roles: "Alert.Read.All", idtyp: 1, oid: null }), { tid: "", roles: [] }],
      [`x.${Buffer.from("not json").toString("base64url")}.y`, { tid: "", roles: [] }],
      [`x.${Buffer.from("[1,2]").toString("base64url")}.y`, { tid: "", roles: [] }],
      [`x.${Buffer.from("null").toString("base64url")}.y`, { tid: "", roles: [] }],
    ] as const) {
      const { http } = entra(() => ({ body: { token_type: "Bearer", expires_in: 3599, access_token: accessToken } }));
      const token = await client(http).acquireAppToken({ tenantId: TENANT, scope: "https://api.securitycenter.microsoft.com/.default" });
      expect(token.claims).toEqual(claims);
    }
  });
});
