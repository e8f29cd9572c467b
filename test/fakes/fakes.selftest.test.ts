import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SecretClient } from "@azure/keyvault-secrets";
import {
  ConfidentialClientApplication,
  CryptoProvider,
  ServerError,
  type INetworkModule,
  type NetworkRequestOptions,
  type NetworkResponse,
} from "@azure/msal-node";
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from "jose";
import { Agent, fetch } from "undici";
import { FakeEntra } from "./fakeEntra";
import { FakeKeyVault } from "./fakeKeyVault";
import { createTestCertificate, type TestCertificate } from "./tls";

/** Proves the fakes speak the protocols the real SDK clients expect; the app's own tests build on that. */

const TENANT = "11111111-2222-4333-8444-555555555555";
const OTHER_TENANT = "99999999-8888-4777-8666-555555555555";
const CLIENT_ID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
const CLIENT_SECRET = "s3cret~value";
const REDIRECT_URI = "https://app.example.test/api/consent/callback";
const SCOPES = ["https://api.securitycenter.microsoft.com/Alert.Read"];
const VAULT_TOKEN = "vault-token-for-tests";

let cert: TestCertificate;
let entra: FakeEntra;
let vault: FakeKeyVault;
let dispatcher: Agent;

beforeAll(async () => {
  cert = await createTestCertificate();
  dispatcher = new Agent({ connect: { ca: cert.certPem } });
  entra = new FakeEntra({
    certPem: cert.certPem,
    keyPem: cert.keyPem,
    clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [REDIRECT_URI] }],
  });
  vault = new FakeKeyVault({ certPem: cert.certPem, keyPem: cert.keyPem, acceptedToken: VAULT_TOKEN, tenantId: TENANT });
  await Promise.all([entra.start(), vault.start()]);
});

afterAll(async () => {
  await Promise.all([entra?.stop(), vault?.stop()]);
  await dispatcher?.close();
});

function secretClient(maxRetries?: number): SecretClient {
  return new SecretClient(
    vault.url,
    { getToken: async () => ({ token: VAULT_TOKEN, expiresOnTimestamp: Date.now() + 3600e3 }) },
    {
      tlsOptions: { ca: cert.certPem },
      disableChallengeResourceVerification: true,
      ...(maxRetries !== undefined ? { retryOptions: { maxRetries } } : {}),
    },
  );
}

/** Duck-typed so the test does not depend on which copy of @azure/core-rest-pipeline the SDK resolved. */
async function restError(promise: Promise<unknown>): Promise<{ statusCode: number; code?: string }> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof Error) || err.name !== "RestError" || !("statusCode" in err) || typeof err.statusCode !== "number") {
    throw new Error(`expected a RestError, got ${String(err)}`);
  }
  return { statusCode: err.statusCode, ...("code" in err && typeof err.code === "string" ? { code: err.code } : {}) };
}

describe("FakeKeyVault with the real SecretClient", () => {
  it("sets, reads, disables, lists, deletes and purges a secret", async () => {
    const client = secretClient();
    const set = await client.setSecret("rt-one", "v1", { contentType: "text/plain", tags: { tenant: TENANT } });
    expect(set.properties.version).toMatch(/^[0-9a-f]{32}$/);
    expect(set.properties.vaultUrl).toBe(vault.url);
    await client.setSecret("rt-one", "v2");

    const latest = await client.getSecret("rt-one");
    expect(latest.value).toBe("v2");
    expect(latest.properties.enabled).toBe(true);
    expect((await client.getSecret("rt-one", { version: set.properties.version ?? "" })).value).toBe("v1");
    expect(vault.peekLatest("rt-one")).toMatchObject({ value: "v2", enabled: true, versions: 2 });

    const names: string[] = [];
    for await (const p of client.listPropertiesOfSecrets()) names.push(p.name);
    expect(names).toContain("rt-one");
    let versions = 0;
    for await (const p of client.listPropertiesOfSecretVersions("rt-one")) {
      expect(p.version).toMatch(/^[0-9a-f]{32}$/);
      versions += 1;
    }
    expect(versions).toBe(2);

    const updated = await client.updateSecretProperties("rt-one", latest.properties.version ?? "", { enabled: false });
    expect(updated.enabled).toBe(false);
    const forbidden = await restError(client.getSecret("rt-one"));
    expect(forbidden.statusCode).toBe(403);
    expect(forbidden.code).toBe("Forbidden");

    const poller = await client.beginDeleteSecret("rt-one");
    const deleted = await poller.pollUntilDone();
    expect(deleted.properties.recoveryId).toBe(`${vault.url}/deletedsecrets/rt-one`);
    expect((await restError(client.getSecret("rt-one"))).statusCode).toBe(404);
    expect((await restError(client.setSecret("rt-one", "v3"))).statusCode).toBe(409);
    await client.purgeDeletedSecret("rt-one");
    expect((await client.setSecret("rt-one", "v4")).value).toBe("v4");
    expect(vault.allValues()).toEqual(expect.arrayContaining(["v4"]));
  });

  it("answers 404 as a RestError and challenges unauthenticated calls", async () => {
    const missing = await restError(secretClient().getSecret("does-not-exist"));
    expect(missing.statusCode).toBe(404);
    expect(missing.code).toBe("SecretNotFound");

    const anonymous = await fetch(`${vault.url}/secrets/x?api-version=2025-07-01`, { dispatcher });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toContain(`login.microsoftonline.com/${TENANT}`);
    const noVersion = await fetch(`${vault.url}/secrets/x`, { dispatcher, headers: { authorization: `Bearer ${VAULT_TOKEN}` } });
    expect(noVersion.status).toBe(400);
  });

  it("injects HTTP failures and network failures", async () => {
    const client = secretClient(0);
    await client.setSecret("flaky", "x");
    vault.setFailure({ status: 503, times: 1 });
    expect((await restError(client.getSecret("flaky"))).statusCode).toBe(503);
    expect((await client.getSecret("flaky")).value).toBe("x");

    vault.setDown(true);
    await expect(client.getSecret("flaky")).rejects.toThrow();
    vault.setDown(false);
    expect((await client.getSecret("flaky")).value).toBe("x");

    vault.resetStats();
    await client.getSecret("flaky");
    const stats = await fetch(`${vault.url}/_fake/stats`, { dispatcher });
    expect(await stats.json()).toMatchObject({ get: 1, set: 0 });
  });
});

function undiciNetworkClient(): INetworkModule {
  const send = async <T>(url: string, method: "GET" | "POST", options?: NetworkRequestOptions): Promise<NetworkResponse<T>> => {
    const res = await fetch(url, { method, headers: options?.headers ?? {}, body: options?.body ?? null, dispatcher });
    const headers: Record<string, string> = {};
    res.headers.forEach((value, key) => {
      headers[key] = value;
    });
    const text = await res.text();
    return { status: res.status, headers, body: (text ? JSON.parse(text) : {}) as T };
  };
  return {
    sendGetRequestAsync: <T>(url: string, options?: NetworkRequestOptions) => send<T>(url, "GET", options),
    sendPostRequestAsync: <T>(url: string, options?: NetworkRequestOptions) => send<T>(url, "POST", options),
  };
}

function msalApp(tenant: string, clientSecret = CLIENT_SECRET): ConfidentialClientApplication {
  return new ConfidentialClientApplication({
    auth: { clientId: CLIENT_ID, clientSecret, authority: `${entra.url}/${tenant}`, knownAuthorities: [entra.host] },
    system: { networkClient: undiciNetworkClient() },
  });
}

/** Drives /authorize like a browser would and returns the redirect's query. */
async function consent(cca: ConfidentialClientApplication, nonce?: string) {
  const { verifier, challenge } = await new CryptoProvider().generatePkceCodes();
  const state = "st-" + Math.random().toString(36).slice(2);
  const url = await cca.getAuthCodeUrl({
    scopes: SCOPES,
    redirectUri: REDIRECT_URI,
    codeChallenge: challenge,
    codeChallengeMethod: "S256",
    state,
    prompt: "consent",
    ...(nonce !== undefined ? { nonce } : {}),
  });
  const res = await fetch(url, { redirect: "manual", dispatcher });
  expect(res.status).toBe(302);
  const location = new URL(res.headers.get("location") ?? "");
  expect(`${location.origin}${location.pathname}`).toBe(REDIRECT_URI);
  expect(location.searchParams.get("state")).toBe(state);
  return { query: location.searchParams, verifier };
}

function cachedRefreshTokens(cca: ConfidentialClientApplication): string[] {
  const cache = JSON.parse(cca.getTokenCache().serialize()) as { RefreshToken?: Record<string, { secret: string }> };
  return Object.values(cache.RefreshToken ?? {}).map((t) => t.secret);
}

/** MSAL types errorNo as string but copies error_codes[0] through unchanged, so at run time it is a number. */
async function serverError(promise: Promise<unknown>): Promise<ServerError> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof ServerError)) throw new Error(`expected a ServerError, got ${String(err)}`);
  return err;
}

describe("FakeEntra with the real MSAL ConfidentialClientApplication", () => {
  it("runs auth code + PKCE, then rotates the refresh token", async () => {
    entra.resetStats();
    const cca = msalApp(TENANT);
    const { query, verifier } = await consent(cca, "n-123");
    expect(entra.lastAuthorizeParams()?.get("code_challenge_method")).toBe("S256");
    const code = query.get("code") ?? "";

    const result = await cca.acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier, nonce: "n-123" });
    expect(result.tenantId).toBe(TENANT);
    expect(result.idTokenClaims).toMatchObject({ aud: CLIENT_ID, tid: TENANT, nonce: "n-123" });
    expect(await entra.verifyAccessToken(result.accessToken)).toMatchObject({
      tid: TENANT,
      aud: "https://api.securitycenter.microsoft.com",
      scp: "Alert.Read",
    });

    const [first] = cachedRefreshTokens(cca);
    expect(first).toBeDefined();
    const fresh = msalApp(TENANT);
    const refreshed = await fresh.acquireTokenByRefreshToken({ refreshToken: first ?? "", scopes: SCOPES, forceCache: true });
    expect(refreshed?.idTokenClaims).not.toHaveProperty("nonce");
    const [second] = cachedRefreshTokens(fresh);
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
    // Entra keeps the old refresh token valid after rotation.
    expect(await msalApp(TENANT).acquireTokenByRefreshToken({ refreshToken: first ?? "", scopes: SCOPES })).not.toBeNull();

    const replay = await serverError(cca.acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier }));
    expect(String(replay.errorNo)).toBe("54005");
    expect(entra.stats).toEqual({ authorizeRequests: 1, tokenRequests: { authorization_code: 2, refresh_token: 2 } });
    expect(entra.issuedSecrets()).toEqual(expect.arrayContaining([code, first, second, result.accessToken]));

    entra.failRefresh(TENANT, { status: 400, error: "invalid_grant", errorCode: 700082 }, 1);
    const expired = await serverError(msalApp(TENANT).acquireTokenByRefreshToken({ refreshToken: second ?? "", scopes: SCOPES }));
    expect(expired.errorCode).toBe("invalid_grant");
    expect(String(expired.errorNo)).toBe("700082");

    entra.revokeRefreshTokens(TENANT);
    const revoked = await serverError(msalApp(TENANT).acquireTokenByRefreshToken({ refreshToken: second ?? "", scopes: SCOPES }));
    expect(String(revoked.errorNo)).toBe("50173");
  });

  it("rejects a wrong PKCE verifier, a bad client secret and a code redeemed at another tenant", async () => {
    const cca = msalApp(TENANT);
    const { query, verifier } = await consent(cca);
    const code = query.get("code") ?? "";
    const pkce = await serverError(
      cca.acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier.slice(1) + "x" }),
    );
    expect(pkce.errorCode).toBe("invalid_grant");
    expect(String(pkce.errorNo)).toBe("501481");

    const badSecret = await serverError(
      msalApp(TENANT, "wrong").acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier }),
    );
    expect(badSecret.errorCode).toBe("invalid_client");
    expect(String(badSecret.errorNo)).toBe("7000215");

    const wrongTenant = await serverError(
      msalApp(OTHER_TENANT).acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier }),
    );
    expect(String(wrongTenant.errorNo)).toBe("700005");
  });

  it("lets a test choose who consents, deny consent, and refuses unregistered redirect URIs", async () => {
    const cca = msalApp("organizations");
    entra.setConsentBehaviour("organizations", { kind: "approve", user: { homeTenantId: OTHER_TENANT } });
    const { query, verifier } = await consent(cca);
    const result = await cca.acquireTokenByCode({ code: query.get("code") ?? "", scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier });
    expect(result.tenantId).toBe(OTHER_TENANT);

    entra.setConsentBehaviour("organizations", { kind: "deny", error: "access_denied" });
    const denied = await consent(cca);
    expect(denied.query.get("error")).toBe("access_denied");
    expect(denied.query.get("code")).toBeNull();

    const bad = new URL(`${entra.url}/${TENANT}/oauth2/v2.0/authorize`);
    bad.search = new URLSearchParams({ client_id: CLIENT_ID, redirect_uri: "https://evil.example/cb", response_type: "code" }).toString();
    const res = await fetch(bad, { redirect: "manual", dispatcher });
    expect(res.status).toBe(400);
    expect(res.headers.get("location")).toBeNull();
    expect(await res.text()).toContain("AADSTS50011");
  });

  it("publishes metadata and keys, tampers id tokens, expires codes by the fake clock and fails on demand", async () => {
    const metadata = (await (await fetch(`${entra.url}/${TENANT}/v2.0/.well-known/openid-configuration`, { dispatcher })).json()) as {
      issuer: string;
      jwks_uri: string;
    };
    expect(metadata.issuer).toBe(`${entra.url}/${TENANT}/v2.0`);
    const jwks = createLocalJWKSet((await (await fetch(metadata.jwks_uri, { dispatcher })).json()) as JSONWebKeySet);

    const redeem = async (cca: ConfidentialClientApplication) => {
      const { query, verifier } = await consent(cca);
      return cca.acquireTokenByCode({ code: query.get("code") ?? "", scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier });
    };
    const good = await redeem(msalApp(TENANT));
    expect((await jwtVerify(good.idToken, jwks, { issuer: metadata.issuer, audience: CLIENT_ID })).payload.tid).toBe(TENANT);

    entra.idTokenOverrides(TENANT, { badSignature: true }, 1);
    const forged = await redeem(msalApp(TENANT));
    await expect(jwtVerify(forged.idToken, jwks)).rejects.toThrow();
    entra.idTokenOverrides(TENANT, { aud: "someone-else" }, 1);
    expect((await redeem(msalApp(TENANT))).idTokenClaims).toMatchObject({ aud: "someone-else" });

    const start = Date.now();
    try {
      const cca = msalApp(TENANT);
      const { query, verifier } = await consent(cca);
      entra.setClock(() => start + 11 * 60_000);
      const late = await serverError(
        cca.acquireTokenByCode({ code: query.get("code") ?? "", scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier }),
      );
      expect(String(late.errorNo)).toBe("70008");
    } finally {
      entra.setClock(Date.now);
    }

    entra.failAllTokenRequests({ status: 503, error: "temporarily_unavailable" }, 1);
    const outage = await serverError(redeem(msalApp(TENANT)));
    expect(outage.errorCode).toBe("temporarily_unavailable");
    // ServerError.status stays undefined: MSAL reads it from the JSON body, where Entra never puts it.
    expect(outage.status).toBeUndefined();
    entra.clearFailures();

    const stats = (await (await fetch(`${entra.url}/_fake/stats`, { dispatcher })).json()) as { authorizeRequests: number };
    expect(stats.authorizeRequests).toBeGreaterThan(0);
  });
});
