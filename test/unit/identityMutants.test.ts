import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { generate } from "selfsigned";
import { describe, expect, it, vi } from "vitest";
import { AppCredentialError, CERTIFICATE_RELOAD_MS, createAppCredential, parseCertificate, type MsalCredential } from "../../shared/identity/appCredential";
import { createMsalNetworkClient } from "../../shared/identity/msalNetworkClient";
import { classifyTokenFailure } from "../../shared/identity/tokenErrors";
import type { HttpRequest, HttpResponse } from "../../shared/http/httpClient";
import type { SecretStore, StoredSecret } from "../../shared/secrets/secretStore";

/**
 * The behaviours of shared/identity that a mutation run (npm run mutate -- identity) found no
 * test for: how each Entra failure is handled, when the app's own credential is read again and
 * what it does when Key Vault or the managed identity fails. Each names what an operator or a
 * customer would see go wrong.
 */

describe("how a failed token request is handled (classifyTokenFailure)", () => {
  const failure = (errorCode: string | undefined, errorNo?: number | string, extra: Record<string, unknown> = {}) =>
    classifyTokenFailure({ name: "ServerError", ...(errorCode === undefined ? {} : { errorCode }), ...(errorNo === undefined ? {} : { errorNo }), ...extra });

  // The customer removed or disabled our app, or never consented: theirs to fix, even when Entra
  // calls it invalid_client, which otherwise blames our own credential for every tenant.
  it.each(["700016", "7000112", "7000229", "500011", "65001"])("asks the customer to consent again on AADSTS%s, even as invalid_client", (code) => {
    expect(failure("invalid_client", Number(code))).toEqual({ category: "reconsent", error: "invalid_client", aadsts: `AADSTS${code}` });
  });

  // Our credential's own codes: a certificate Entra does not know, an expired secret, a disabled app.
  it.each(["7000215", "7000222", "700027", "50012"])("blames the app credential on AADSTS%s whatever the error says", (code) => {
    expect(failure("invalid_request", code)).toEqual({ category: "app_credential", error: "invalid_request", aadsts: `AADSTS${code}` });
  });

  it("blames the app credential on unauthorized_client without a code", () => {
    expect(failure("unauthorized_client").category).toBe("app_credential");
  });

  // MSAL's own checks of an answer: asking again brings the same answer.
  it.each(["nonce_mismatch", "state_mismatch", "token_parsing_error", "no_tokens_found"])("asks for a new consent on MSAL's %s", (code) => {
    expect(classifyTokenFailure({ name: "ClientAuthError", errorCode: code })).toEqual({ category: "reconsent", error: code });
  });

  it.each(["50033", "90006", "90033", "90090", "50087", "90024", "90055", "50196"])("retries AADSTS%s later even when it comes as invalid_grant", (code) => {
    expect(failure("invalid_grant", Number(code))).toEqual({ category: "transient", error: "invalid_grant", aadsts: `AADSTS${code}` });
  });

  it.each(["invalid_grant", "interaction_required", "consent_required", "login_required", "bad_token", "invalid_resource"])("stops the tenant for a new consent on %s", (code) => {
    expect(failure(code, undefined, { status: 400 }).category).toBe("reconsent");
  });

  it("asks for a new consent on any InteractionRequiredAuthError, even a code it does not know", () => {
    expect(classifyTokenFailure({ name: "InteractionRequiredAuthError", errorCode: "new_interaction_code" }).category).toBe("reconsent");
  });

  it("retries a server failure or throttling whatever its body says, but not another client error", () => {
    expect(failure("invalid_grant", undefined, { status: 500 }).category).toBe("transient");
    expect(failure("invalid_grant", undefined, { status: 503 }).category).toBe("transient");
    expect(failure("invalid_grant", undefined, { status: 429 }).category).toBe("transient");
    expect(failure("invalid_grant", undefined, { status: 499 }).category).toBe("reconsent");
    expect(failure("invalid_grant", undefined, { status: "503" }).category).toBe("reconsent");
  });

  it("retries a failure it cannot read, reported as unknown_error with no code", () => {
    expect(classifyTokenFailure("socket closed")).toEqual({ category: "transient", error: "unknown_error" });
    expect(classifyTokenFailure(null)).toEqual({ category: "transient", error: "unknown_error" });
    expect(failure("")).toEqual({ category: "transient", error: "unknown_error" });
    expect(failure(undefined, 50033)).toEqual({ category: "transient", error: "unknown_error", aadsts: "AADSTS50033" });
  });

  it("reports an AADSTS code only when Entra's number is a number", () => {
    expect(failure("invalid_grant", "70008x").aadsts).toBeUndefined();
    expect(failure("invalid_grant", "x70008").aadsts).toBeUndefined();
    expect(failure("invalid_grant", "").aadsts).toBeUndefined();
    expect(failure("invalid_grant", true as unknown as string).aadsts).toBeUndefined();
    // A code that is not a number cannot match one of the code lists either.
    expect(failure("invalid_client", "7000229 ").category).toBe("app_credential");
  });
});

function certificateAt(notBeforeDate: Date, notAfterDate: Date, extra: { keyType?: "ec" } = {}) {
  return generate([{ name: "commonName", value: "mssp-app" }], { keySize: 2048, algorithm: "sha256", notBeforeDate, notAfterDate, ...extra });
}

function refusal(value: string, nowMs = Date.now()): string {
  try {
    parseCertificate(value, nowMs);
  } catch (error) {
    if (!(error instanceof AppCredentialError)) throw error;
    expect(error.errorCode).toBe("invalid_client");
    expect(error.message).toContain("MSSP_CLIENT_CERTIFICATE_NAME");
    expect(error.message).not.toMatch(/BEGIN|MII/);
    return error.reason;
  }
  return "accepted";
}

describe("the Key Vault certificate's backing secret (parseCertificate)", () => {
  it("refuses a value far larger than any PEM chain before parsing it", async () => {
    const pems = await certificateAt(new Date(Date.now() - 60_000), new Date(Date.now() + 3600_000));
    expect(refusal(`${pems.private}${pems.cert}${" ".repeat(64 * 1024)}`)).toBe("certificate_too_large");
    expect(refusal(`${pems.private}${pems.cert}`.padEnd(64 * 1024, "\n"))).toBe("accepted");
  });

  it("refuses two private keys, an encrypted key, an EC key and a certificate block it cannot read", async () => {
    const now = Date.now();
    const pems = await certificateAt(new Date(now - 60_000), new Date(now + 3600_000));
    const other = await certificateAt(new Date(now - 60_000), new Date(now + 3600_000));
    expect(refusal(`${pems.private}${other.private}${pems.cert}`)).toBe("certificate_key");
    const encrypted = generateKeyPairSync("rsa", {
      modulusLength: 2048,
      privateKeyEncoding: { type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "p" },
      publicKeyEncoding: { type: "spki", format: "pem" },
    }).privateKey;
    expect(refusal(`${encrypted}${pems.cert}`)).toBe("certificate_key");
    const ec = await certificateAt(new Date(now - 60_000), new Date(now + 3600_000), { keyType: "ec" });
    expect(refusal(`${ec.private}${ec.cert}`)).toBe("certificate_key");
    expect(refusal(`${pems.private}${pems.cert}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`)).toBe("certificate_unreadable");
  });

  it("reads blocks only between a BEGIN and an END of the same label", async () => {
    const now = Date.now();
    const pems = await certificateAt(new Date(now - 60_000), new Date(now + 3600_000));
    const mislabelled = pems.cert.replace("-----END CERTIFICATE-----", "-----END X509 CRL-----");
    expect(refusal(mislabelled)).toBe("certificate_not_pem");
    expect(refusal(`${pems.private}${mislabelled}`)).toBe("certificate_mismatch");
  });

  it("accepts a PKCS#1 RSA key and hands MSAL PKCS#8", async () => {
    const now = Date.now();
    const pems = await certificateAt(new Date(now - 60_000), new Date(now + 3600_000));
    const { createPrivateKey } = await import("node:crypto");
    const pkcs1 = createPrivateKey(pems.private).export({ type: "pkcs1", format: "pem" }).toString();
    expect(pkcs1).toMatch(/^-----BEGIN RSA PRIVATE KEY-----/);
    const loaded = parseCertificate(`${pkcs1}${pems.cert}`, now);
    expect(loaded.privateKey).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });

  it("is valid from its notBefore up to, not at, its notAfter", async () => {
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
    const notAfter = new Date(notBefore.getTime() + 3600_000);
    const pems = await certificateAt(notBefore, notAfter);
    const value = `${pems.private}${pems.cert}`;
    const validFrom = Date.parse(new X509Certificate(pems.cert).validFrom);
    const validTo = Date.parse(new X509Certificate(pems.cert).validTo);
    expect(refusal(value, validFrom - 1)).toBe("certificate_expired");
    expect(refusal(value, validFrom)).toBe("accepted");
    expect(refusal(value, validTo - 1)).toBe("accepted");
    expect(refusal(value, validTo)).toBe("certificate_expired");
    expect(parseCertificate(value, validFrom).notAfter).toBe(validTo);
  });

  it("sends the leaf first in x5c, followed by the rest of the chain", async () => {
    const now = Date.now();
    const pems = await certificateAt(new Date(now - 60_000), new Date(now + 3600_000));
    const other = await certificateAt(new Date(now - 60_000), new Date(now + 3600_000));
    const loaded = parseCertificate(`${other.cert}${pems.private}${pems.cert}`, now);
    const blocks = loaded.x5c.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    expect(blocks.map((block) => new X509Certificate(block).fingerprint256)).toEqual([
      new X509Certificate(pems.cert).fingerprint256,
      new X509Certificate(other.cert).fingerprint256,
    ]);
  });
});

function assertionOf(auth: MsalCredential) {
  if (!("clientAssertion" in auth)) throw new Error("expected an assertion callback");
  return auth.clientAssertion;
}

const TOKEN_ENDPOINT = "https://login.example.test/tenant/oauth2/v2.0/token";

/** A Key Vault whose certificate can be replaced, removed or made unreachable. */
function vault(initial: string | undefined) {
  const state = { value: initial, outage: false, reads: 0 };
  const none = async () => undefined;
  const store: SecretStore = {
    get: async (): Promise<StoredSecret | undefined> => {
      state.reads += 1;
      if (state.outage) throw Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
      return state.value === undefined ? undefined : { value: state.value, updatedOn: undefined, tags: {} };
    },
    set: async () => undefined,
    delete: async () => undefined,
    getOldest: none,
    versions: async () => [],
    getVersion: none,
  };
  return { state, store };
}

async function thumbprintOf(assertion: string): Promise<unknown> {
  const { decodeProtectedHeader } = await import("jose");
  return decodeProtectedHeader(assertion)["x5t#S256"];
}

describe("the certificate credential over time", () => {
  it("picks up a renewed certificate after an hour, not before", async () => {
    let clock = Date.now();
    const first = await certificateAt(new Date(clock - 60_000), new Date(clock + 48 * 3600_000));
    const renewed = await certificateAt(new Date(clock - 60_000), new Date(clock + 48 * 3600_000));
    const kv = vault(`${first.private}${first.cert}`);
    const sign = assertionOf(createAppCredential({ kind: "certificate", certificateName: "c" }, { secrets: kv.store, now: () => clock }).msal());
    const request = { clientId: "client-1", tokenEndpoint: TOKEN_ENDPOINT };
    const original = await thumbprintOf(await sign(request));
    kv.state.value = `${renewed.private}${renewed.cert}`;
    clock += CERTIFICATE_RELOAD_MS - 1;
    expect(await thumbprintOf(await sign(request))).toBe(original);
    expect(kv.state.reads).toBe(1);
    clock += 1;
    expect(await thumbprintOf(await sign(request))).not.toBe(original);
    expect(kv.state.reads).toBe(2);
  });

  it("keeps signing with the loaded certificate while Key Vault is unreachable, until it expires", async () => {
    const start = Date.now();
    let clock = start;
    const pems = await certificateAt(new Date(start - 60_000), new Date(start + 3 * 3600_000));
    const notAfter = Date.parse(new X509Certificate(pems.cert).validTo);
    const kv = vault(`${pems.private}${pems.cert}`);
    const sign = assertionOf(createAppCredential({ kind: "certificate", certificateName: "c" }, { secrets: kv.store, now: () => clock }).msal());
    const request = { clientId: "client-1", tokenEndpoint: TOKEN_ENDPOINT };
    await sign(request);
    kv.state.outage = true;
    clock = start + CERTIFICATE_RELOAD_MS + 1;
    expect(typeof (await sign(request))).toBe("string");
    expect(kv.state.reads).toBe(2);
    // Past its notAfter the cached certificate is not used, outage or not.
    clock = notAfter;
    await expect(sign(request)).rejects.toThrow(/ECONNREFUSED/);
  });

  it("stops signing once the certificate is gone from Key Vault, rather than using the old one", async () => {
    let clock = Date.now();
    const pems = await certificateAt(new Date(clock - 60_000), new Date(clock + 48 * 3600_000));
    const kv = vault(`${pems.private}${pems.cert}`);
    const sign = assertionOf(createAppCredential({ kind: "certificate", certificateName: "c" }, { secrets: kv.store, now: () => clock }).msal());
    const request = { clientId: "client-1", tokenEndpoint: TOKEN_ENDPOINT };
    await sign(request);
    kv.state.value = undefined;
    clock += CERTIFICATE_RELOAD_MS;
    await expect(sign(request)).rejects.toMatchObject({ reason: "certificate_not_found" });
  });

  it("reads Key Vault once for concurrent requests, and again after a failed read", async () => {
    const clock = Date.now();
    const pems = await certificateAt(new Date(clock - 60_000), new Date(clock + 48 * 3600_000));
    const kv = vault(undefined);
    const sign = assertionOf(createAppCredential({ kind: "certificate", certificateName: "c" }, { secrets: kv.store, now: () => clock }).msal());
    const request = { clientId: "client-1", tokenEndpoint: TOKEN_ENDPOINT };
    await expect(sign(request)).rejects.toMatchObject({ reason: "certificate_not_found" });
    kv.state.value = `${pems.private}${pems.cert}`;
    const both = await Promise.all([sign(request), sign(request)]);
    expect(both.every((assertion) => typeof assertion === "string")).toBe(true);
    expect(kv.state.reads).toBe(2);
  });

  it("refuses to sign without the token endpoint the assertion is for", async () => {
    const clock = Date.now();
    const pems = await certificateAt(new Date(clock - 60_000), new Date(clock + 48 * 3600_000));
    const kv = vault(`${pems.private}${pems.cert}`);
    const sign = assertionOf(createAppCredential({ kind: "certificate", certificateName: "c" }, { secrets: kv.store }).msal());
    await expect(sign({ clientId: "client-1" })).rejects.toMatchObject({ reason: "no_token_endpoint", errorCode: "invalid_client" });
  });
});

describe("the managed-identity credential's failures", () => {
  it("fails as the app credential when the identity returns no token, and asks again next time", async () => {
    const answers: Array<{ token: string; expiresOnTimestamp: number } | null> = [null, { token: "", expiresOnTimestamp: Date.now() + 3600_000 }, { token: "mi-token", expiresOnTimestamp: Date.now() + 3600_000 }];
    let asked = 0;
    const identity = { getToken: async () => answers[asked++] ?? null };
    const { store } = vault(undefined);
    const sign = assertionOf(
      createAppCredential({ kind: "managedIdentity", identityClientId: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", identitySetting: "AZURE_CLIENT_ID" }, { secrets: store, managedIdentity: identity }).msal(),
    );
    await expect(sign({ clientId: "c" })).rejects.toMatchObject({ reason: "no_managed_identity_token", errorCode: "invalid_client" });
    await expect(sign({ clientId: "c" })).rejects.toMatchObject({ reason: "no_managed_identity_token" });
    expect(await sign({ clientId: "c" })).toBe("mi-token");
    expect(asked).toBe(3);
  });
});

describe("the credential a process reports", () => {
  it("hands MSAL the client secret, and names each kind's settings in its remedy", () => {
    const { store } = vault(undefined);
    const secret = createAppCredential({ kind: "secret", clientSecret: "s3cret-value" }, { secrets: store });
    expect(secret.kind).toBe("secret");
    expect(secret.msal()).toEqual({ clientSecret: "s3cret-value" });
    expect(secret.remedy).toContain("MSSP_CLIENT_SECRET");
    const certificate = createAppCredential({ kind: "certificate", certificateName: "c" }, { secrets: store });
    expect(certificate.kind).toBe("certificate");
    expect(certificate.remedy).toContain("MSSP_CLIENT_CERTIFICATE_NAME");
  });

  it("names the credential in use in its log lines, or MSSP_CLIENT_CREDENTIAL before one is chosen", async () => {
    vi.resetModules();
    const fresh = await import("../../shared/identity/appCredential");
    expect(fresh.credentialRemedy()).toContain("MSSP_CLIENT_CREDENTIAL");
    const { store } = vault(undefined);
    fresh.createAppCredential({ kind: "certificate", certificateName: "c" }, { secrets: store });
    expect(fresh.credentialRemedy()).toContain("MSSP_CLIENT_CERTIFICATE_NAME");
    fresh.createAppCredential({ kind: "managedIdentity", identityClientId: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", identitySetting: "AZURE_CLIENT_ID" }, { secrets: store, managedIdentity: { getToken: async () => null } });
    expect(fresh.credentialRemedy()).toContain("federated identity credential");
  });
});

describe("MSAL's requests through the app's HTTP client (createMsalNetworkClient)", () => {
  it("sends MSAL's GET and POST with their headers and body under one bound, and hands back the parsed answer", async () => {
    const sent: Array<{ url: string; request: HttpRequest }> = [];
    const answers: HttpResponse[] = [
      { status: 200, headers: { "x-ms-request-id": "r1" }, body: JSON.stringify({ issuer: "https://login.example.test/t/v2.0" }) },
      { status: 400, headers: {}, body: JSON.stringify({ error: "invalid_grant" }) },
      { status: 502, headers: {}, body: "<html>Bad Gateway</html>" },
      { status: 204, headers: {}, body: "" },
    ];
    const network = createMsalNetworkClient({
      send: async (url, request) => {
        sent.push({ url, request });
        return answers.shift() ?? { status: 500, headers: {}, body: "" };
      },
    }, 12_345);
    expect(await network.sendGetRequestAsync("https://login.example.test/t/v2.0/.well-known/openid-configuration")).toEqual({
      status: 200,
      headers: { "x-ms-request-id": "r1" },
      body: { issuer: "https://login.example.test/t/v2.0" },
    });
    expect(await network.sendPostRequestAsync("https://login.example.test/t/oauth2/v2.0/token", { headers: { "content-type": "application/x-www-form-urlencoded" }, body: "grant_type=refresh_token" })).toEqual({
      status: 400,
      headers: {},
      body: { error: "invalid_grant" },
    });
    // A proxy's error page is not JSON: MSAL judges it by its status alone.
    expect((await network.sendPostRequestAsync("https://login.example.test/t/oauth2/v2.0/token", { body: "x" })).body).toEqual({});
    expect((await network.sendGetRequestAsync("https://login.example.test/empty")).body).toEqual({});
    expect(sent.map(({ url, request }) => [url, request.method, request.timeoutMs])).toEqual([
      ["https://login.example.test/t/v2.0/.well-known/openid-configuration", "GET", 12_345],
      ["https://login.example.test/t/oauth2/v2.0/token", "POST", 12_345],
      ["https://login.example.test/t/oauth2/v2.0/token", "POST", 12_345],
      ["https://login.example.test/empty", "GET", 12_345],
    ]);
    expect(sent[0]?.request).not.toHaveProperty("body");
    expect(sent[0]?.request.headers).toEqual({});
    expect(sent[1]?.request.headers).toEqual({ "content-type": "application/x-www-form-urlencoded" });
    expect(sent[1]?.request.body).toBe("grant_type=refresh_token");
  });

  it("bounds MSAL's requests by 30 s unless told otherwise", async () => {
    let timeoutMs: number | undefined;
    const network = createMsalNetworkClient({ send: async (_url, request) => ((timeoutMs = request.timeoutMs), { status: 200, headers: {}, body: "{}" }) });
    await network.sendGetRequestAsync("https://login.example.test/x");
    expect(timeoutMs).toBe(30_000);
  });
});

describe("what the credential's errors say", () => {
  it("names the setting or the identity to check, under the error's own name", async () => {
    const { store } = vault(undefined);
    const sign = assertionOf(createAppCredential({ kind: "certificate", certificateName: "absent" }, { secrets: store }).msal());
    const missing = await sign({ clientId: "c", tokenEndpoint: TOKEN_ENDPOINT }).catch((error: unknown) => error);
    expect(missing).toBeInstanceOf(AppCredentialError);
    expect((missing as Error).name).toBe("AppCredentialError");
    expect((missing as Error).message).toMatch(/MSSP_CLIENT_CERTIFICATE_NAME/);
    const pems = await certificateAt(new Date(Date.now() - 60_000), new Date(Date.now() + 3600_000));
    const noEndpoint = await assertionOf(createAppCredential({ kind: "certificate", certificateName: "c" }, { secrets: vault(`${pems.private}${pems.cert}`).store }).msal())({ clientId: "c" }).catch((error: unknown) => error);
    expect((noEndpoint as Error).message).toMatch(/token endpoint/);
    const identity = { getToken: async () => null };
    const mi = await assertionOf(
      createAppCredential({ kind: "managedIdentity", identityClientId: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", identitySetting: "AZURE_CLIENT_ID" }, { secrets: store, managedIdentity: identity }).msal(),
    )({ clientId: "c" }).catch((error: unknown) => error);
    expect((mi as Error).message).toMatch(/managed identity/);
  });
});

describe("the app credential at its boundaries", () => {
  it("renews the managed-identity token exactly five minutes before it expires", async () => {
    let clock = 1_000_000;
    let asked = 0;
    const identity = { getToken: async () => ({ token: `mi-${++asked}`, expiresOnTimestamp: 1_000_000 + 3600_000 }) };
    const credential = createAppCredential(
      { kind: "managedIdentity", identityClientId: "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", identitySetting: "AZURE_CLIENT_ID" },
      { secrets: vault(undefined).store, managedIdentity: identity, now: () => clock },
    );
    expect(credential.kind).toBe("managedIdentity");
    const sign = assertionOf(credential.msal());
    expect(await sign({ clientId: "c" })).toBe("mi-1");
    clock = 1_000_000 + 3600_000 - 5 * 60_000 - 1;
    expect(await sign({ clientId: "c" })).toBe("mi-1");
    clock += 1;
    expect(await sign({ clientId: "c" })).toBe("mi-2");
  });

  it("stops signing with a certificate at its notAfter, even within the hour it is kept", async () => {
    const start = Date.now();
    let clock = start;
    const pems = await certificateAt(new Date(start - 60_000), new Date(start + 20 * 60_000));
    const notAfter = Date.parse(new X509Certificate(pems.cert).validTo);
    const sign = assertionOf(createAppCredential({ kind: "certificate", certificateName: "c" }, { secrets: vault(`${pems.private}${pems.cert}`).store, now: () => clock }).msal());
    await sign({ clientId: "client-1", tokenEndpoint: TOKEN_ENDPOINT });
    clock = notAfter;
    await expect(sign({ clientId: "client-1", tokenEndpoint: TOKEN_ENDPOINT })).rejects.toMatchObject({ reason: "certificate_expired" });
  });

  it("reports an error code that is not a string as unknown_error", () => {
    expect(classifyTokenFailure({ errorCode: 42 }).error).toBe("unknown_error");
  });
});
