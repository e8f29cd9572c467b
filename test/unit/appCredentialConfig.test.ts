import { generate } from "selfsigned";
import { afterEach, describe, expect, it, vi } from "vitest";
import { CredentialUnavailableError } from "@azure/identity";
import { ConfigError, loadConfig } from "../../shared/config";
import { AppCredentialError, createAppCredential, credentialRemedy, MANAGED_IDENTITY_TIMEOUT_MS, parseCertificate } from "../../shared/identity/appCredential";
import { SecretStoreError, type SecretStore } from "../../shared/secrets/secretStore";

const base = {
  MSSP_CLIENT_ID: "11111111-2222-3333-4444-555555555555",
  MSSP_TENANT_ID: "66666666-7777-8888-9999-000000000000",
  MSSP_PUBLIC_BASE_URL: "https://mssp-connector.azurewebsites.net/",
  KEY_VAULT_URL: "https://kv-mssp.vault.azure.net",
  AzureWebJobsStorage: "UseDevelopmentStorage=true",
};
const IDENTITY = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
const OTHER_IDENTITY = "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff";

function failure(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected a ConfigError");
}

describe("MSSP_CLIENT_CREDENTIAL", () => {
  it("keeps today's client secret while MSSP_CLIENT_SECRET is set and nothing else is chosen", () => {
    expect(loadConfig({ ...base, MSSP_CLIENT_SECRET: "s3cret-value" }).credential).toEqual({ kind: "secret", clientSecret: "s3cret-value" });
  });

  it("defaults to the managed identity of AZURE_CLIENT_ID when there is no secret", () => {
    expect(loadConfig({ ...base, AZURE_CLIENT_ID: IDENTITY.toUpperCase() }).credential).toEqual({
      kind: "managedIdentity",
      identityClientId: IDENTITY,
      identitySetting: "AZURE_CLIENT_ID",
    });
  });

  it("uses MSSP_FIC_IDENTITY_CLIENT_ID over AZURE_CLIENT_ID for the assertion", () => {
    const config = loadConfig({ ...base, MSSP_CLIENT_CREDENTIAL: "managedIdentity", AZURE_CLIENT_ID: IDENTITY, MSSP_FIC_IDENTITY_CLIENT_ID: OTHER_IDENTITY });
    expect(config.credential).toEqual({ kind: "managedIdentity", identityClientId: OTHER_IDENTITY, identitySetting: "MSSP_FIC_IDENTITY_CLIENT_ID" });
    // The app's own identity (storage, Key Vault) is still AZURE_CLIENT_ID.
    expect(config.managedIdentityClientId).toBe(IDENTITY);
  });

  it("ignores a configured secret once managedIdentity is chosen, and reads no secret for a certificate", () => {
    expect(loadConfig({ ...base, MSSP_CLIENT_SECRET: "s3cret-value", MSSP_CLIENT_CREDENTIAL: "managedIdentity", AZURE_CLIENT_ID: IDENTITY }).credential.kind).toBe("managedIdentity");
    expect(loadConfig({ ...base, MSSP_CLIENT_CREDENTIAL: "certificate", MSSP_CLIENT_CERTIFICATE_NAME: "mssp-app-cert" }).credential).toEqual({
      kind: "certificate",
      certificateName: "mssp-app-cert",
    });
  });

  it("explains a missing identity without a secret, naming every way out, by setting name", () => {
    const error = failure(base);
    expect(error.problems).toHaveLength(1);
    const [message] = error.problems;
    expect(message).toMatch(/^MSSP_CLIENT_CREDENTIAL is managedIdentity by default because MSSP_CLIENT_SECRET is not set: set AZURE_CLIENT_ID/);
    expect(error.details[0]?.settings).toEqual(
      expect.arrayContaining(["MSSP_CLIENT_CREDENTIAL", "MSSP_CLIENT_SECRET", "AZURE_CLIENT_ID", "MSSP_FIC_IDENTITY_CLIENT_ID", "MSSP_CLIENT_CERTIFICATE_NAME"]),
    );
    expect(error.details[0]?.setting).toBe("MSSP_CLIENT_CREDENTIAL");
  });

  it("requires what the chosen kind needs, and only that", () => {
    expect(failure({ ...base, MSSP_CLIENT_CREDENTIAL: "secret" }).problems).toEqual([
      expect.stringMatching(/^MSSP_CLIENT_SECRET is required when MSSP_CLIENT_CREDENTIAL is secret: the client secret of the MSSP app registration/),
    ]);
    expect(failure({ ...base, MSSP_CLIENT_CREDENTIAL: "certificate" }).problems).toEqual([
      expect.stringMatching(/^MSSP_CLIENT_CERTIFICATE_NAME is required when MSSP_CLIENT_CREDENTIAL is certificate: the name of the Key Vault certificate \(in the MSSP_CLIENT_CERTIFICATE_VAULT_URL vault, else the KEY_VAULT_URL one\)/),
    ]);
    expect(failure({ ...base, MSSP_CLIENT_CREDENTIAL: "managedIdentity" }).problems).toEqual([
      expect.stringMatching(/^MSSP_CLIENT_CREDENTIAL is managedIdentity: set AZURE_CLIENT_ID .* or MSSP_FIC_IDENTITY_CLIENT_ID/),
    ]);
  });

  it("refuses an unknown kind, a bad certificate name and a non-GUID identity without echoing the values", () => {
    expect(failure({ ...base, MSSP_CLIENT_SECRET: "s3cret-value", MSSP_CLIENT_CREDENTIAL: "password-leak1" }).problems).toEqual([
      "MSSP_CLIENT_CREDENTIAL must be secret, certificate or managedIdentity",
    ]);
    const badName = failure({ ...base, MSSP_CLIENT_CREDENTIAL: "certificate", MSSP_CLIENT_CERTIFICATE_NAME: "certs/leak2" });
    expect(badName.problems).toEqual(["MSSP_CLIENT_CERTIFICATE_NAME must be a Key Vault certificate name (1-127 letters, digits and hyphens)"]);
    const badId = failure({ ...base, MSSP_CLIENT_CREDENTIAL: "managedIdentity", MSSP_FIC_IDENTITY_CLIENT_ID: "leak3" });
    expect(badId.problems).toEqual([expect.stringMatching(/^MSSP_FIC_IDENTITY_CLIENT_ID must be a GUID/)]);
    expect(badId.settings).toEqual(["MSSP_FIC_IDENTITY_CLIENT_ID"]);
  });

  it("reads the certificate from MSSP_CLIENT_CERTIFICATE_VAULT_URL's vault when set (the credential vault), else from KEY_VAULT_URL's", () => {
    const certificate = { ...base, MSSP_CLIENT_CREDENTIAL: "certificate", MSSP_CLIENT_CERTIFICATE_NAME: "mssp-app-cert" };
    expect(loadConfig({ ...certificate, MSSP_CLIENT_CERTIFICATE_VAULT_URL: "https://kv-cred.vault.azure.net/" }).credential).toEqual({
      kind: "certificate",
      certificateName: "mssp-app-cert",
      vaultUrl: "https://kv-cred.vault.azure.net",
    });
    expect(failure({ ...certificate, MSSP_CLIENT_CERTIFICATE_VAULT_URL: "http://kv-cred.example/" }).problems).toEqual(["MSSP_CLIENT_CERTIFICATE_VAULT_URL must use https"]);
  });

  it("accepts the kind in any letter case", () => {
    expect(loadConfig({ ...base, MSSP_CLIENT_CREDENTIAL: "ManagedIdentity", AZURE_CLIENT_ID: IDENTITY }).credential.kind).toBe("managedIdentity");
  });

  it("reports a secret placeholder as such, not also as a missing identity", () => {
    const error = failure({ ...base, MSSP_CLIENT_SECRET: "@Microsoft.KeyVault(VaultName=kv;SecretName=mssp-client-secret)" });
    expect(error.problems).toEqual([expect.stringMatching(/^MSSP_CLIENT_SECRET is a Key Vault reference App Service could not resolve/)]);
  });
});

describe("the remedy a rejected credential's log line gives", () => {
  it("names the settings of the credential in use", () => {
    expect(credentialRemedy("secret")).toContain("MSSP_CLIENT_SECRET");
    expect(credentialRemedy("certificate")).toContain("MSSP_CLIENT_CERTIFICATE_NAME");
    expect(credentialRemedy("managedIdentity")).toMatch(/federated identity credential.*AZURE_CLIENT_ID/);
  });
});

async function testCertificate(options: { notBeforeDate?: Date; notAfterDate?: Date; keyType?: "rsa" | "ec" } = {}) {
  const notBeforeDate = options.notBeforeDate ?? new Date(Date.now() - 60_000);
  const notAfterDate = options.notAfterDate ?? new Date(Date.now() + 24 * 3600_000);
  return generate([{ name: "commonName", value: "mssp-app" }], { keySize: 2048, algorithm: "sha256", notBeforeDate, notAfterDate, ...(options.keyType === "ec" ? { keyType: "ec" as const } : {}) });
}

function storeWith(values: Record<string, string>): SecretStore {
  const none = async () => undefined;
  return {
    get: async (name) => (name in values ? { value: values[name] ?? "", updatedOn: undefined, tags: {} } : undefined),
    set: async () => undefined,
    delete: async () => undefined,
    getOldest: none,
    versions: async () => [],
    getVersion: none,
  };
}

describe("the Key Vault certificate (PEM backing secret)", () => {
  it("yields the SHA-256 thumbprint of the certificate and its key, in either order of the blocks", async () => {
    const pems = await testCertificate();
    const loaded = parseCertificate(`${pems.cert}\n${pems.private}`, Date.now());
    const { X509Certificate } = await import("node:crypto");
    expect(loaded.thumbprintSha256).toBe(new X509Certificate(pems.cert).fingerprint256.replace(/:/g, "").toLowerCase());
    expect(loaded.privateKey).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(loaded.x5c).toContain("BEGIN CERTIFICATE");
    expect(loaded.x5c).not.toContain("PRIVATE KEY");
    expect(parseCertificate(`${pems.private}${pems.cert}`, Date.now()).thumbprintSha256).toBe(loaded.thumbprintSha256);
  });

  it("refuses PKCS#12, an expired certificate, a key without its certificate, with messages that carry no key material", async () => {
    const pems = await testCertificate();
    const other = await testCertificate();
    const expired = await testCertificate({ notBeforeDate: new Date(Date.now() - 48 * 3600_000), notAfterDate: new Date(Date.now() - 3600_000) });
    const cases: Array<[string, string]> = [
      [Buffer.from("not really pkcs12").toString("base64"), "certificate_not_pem"],
      [`${expired.private}${expired.cert}`, "certificate_expired"],
      [`${pems.private}${other.cert}`, "certificate_mismatch"],
      [pems.cert, "certificate_key"],
    ];
    for (const [value, reason] of cases) {
      let caught: unknown;
      try {
        parseCertificate(value, Date.now());
      } catch (error) {
        caught = error;
      }
      expect(caught, reason).toBeInstanceOf(AppCredentialError);
      expect((caught as AppCredentialError).reason).toBe(reason);
      expect((caught as AppCredentialError).errorCode).toBe("invalid_client");
      expect((caught as Error).message).toContain("MSSP_CLIENT_CERTIFICATE_NAME");
      expect((caught as Error).message).not.toMatch(/BEGIN|MII/);
    }
  });

  it("signs a fresh PS256 assertion per request with the certificate's x5t#S256, loading the certificate once", async () => {
    const pems = await testCertificate();
    let reads = 0;
    const store = storeWith({ "mssp-app-cert": `${pems.private}${pems.cert}` });
    const counting: SecretStore = { ...store, get: async (name) => ((reads += 1), store.get(name)) };
    const credential = createAppCredential({ kind: "certificate", certificateName: "mssp-app-cert" }, { secrets: counting });
    const auth = credential.msal();
    if (!("clientAssertion" in auth)) throw new Error("expected an assertion callback");
    const request = { clientId: "client-1", tokenEndpoint: "https://login.example.test/tenant/oauth2/v2.0/token" };
    const [first, second] = [await auth.clientAssertion(request), await auth.clientAssertion(request)];
    expect(reads).toBe(1);
    const { decodeJwt, decodeProtectedHeader } = await import("jose");
    const header = decodeProtectedHeader(first);
    expect(header.alg).toBe("PS256");
    const { X509Certificate } = await import("node:crypto");
    expect(header["x5t#S256"]).toBe(Buffer.from(new X509Certificate(pems.cert).fingerprint256.replace(/:/g, ""), "hex").toString("base64url"));
    const claims = decodeJwt(first);
    expect(claims).toMatchObject({ iss: "client-1", sub: "client-1", aud: request.tokenEndpoint });
    expect(decodeJwt(second).jti).not.toBe(claims.jti);
  });

  it("fails a missing certificate as the app credential (invalid_client), not as a transient fault", async () => {
    const credential = createAppCredential({ kind: "certificate", certificateName: "absent" }, { secrets: storeWith({}) });
    const auth = credential.msal();
    if (!("clientAssertion" in auth)) throw new Error("expected an assertion callback");
    await expect(auth.clientAssertion({ clientId: "c", tokenEndpoint: "https://x.test/t/oauth2/v2.0/token" })).rejects.toMatchObject({
      errorCode: "invalid_client",
      reason: "certificate_not_found",
    });
  });
});

describe("the managed-identity assertion", () => {
  it("asks for api://AzureADTokenExchange once per token lifetime, shared by concurrent requests", async () => {
    const scopes: Array<string | string[]> = [];
    let clock = 1_000_000;
    const identity = {
      getToken: async (scope: string | string[]) => {
        scopes.push(scope);
        return { token: `mi-token-${scopes.length}`, expiresOnTimestamp: clock + 3600_000 };
      },
    };
    const credential = createAppCredential(
      { kind: "managedIdentity", identityClientId: IDENTITY, identitySetting: "AZURE_CLIENT_ID" },
      { secrets: storeWith({}), managedIdentity: identity, now: () => clock },
    );
    const auth = credential.msal();
    if (!("clientAssertion" in auth)) throw new Error("expected an assertion callback");
    const request = { clientId: "c" };
    expect(await Promise.all([auth.clientAssertion(request), auth.clientAssertion(request)])).toEqual(["mi-token-1", "mi-token-1"]);
    clock += 50 * 60_000;
    expect(await auth.clientAssertion(request)).toBe("mi-token-1");
    // Within five minutes of expiry a new token is fetched: Entra checks exp on every request.
    clock += 6 * 60_000;
    expect(await auth.clientAssertion(request)).toBe("mi-token-2");
    expect(scopes).toEqual(["api://AzureADTokenExchange/.default", "api://AzureADTokenExchange/.default"]);
  });

  const managedIdentityAssertion = (getToken: () => Promise<{ token: string; expiresOnTimestamp: number }>, now: () => number = Date.now) => {
    const auth = createAppCredential(
      { kind: "managedIdentity", identityClientId: IDENTITY, identitySetting: "AZURE_CLIENT_ID" },
      { secrets: storeWith({}), managedIdentity: { getToken }, now },
    ).msal();
    if (!("clientAssertion" in auth)) throw new Error("expected an assertion callback");
    return () => auth.clientAssertion({ clientId: "c" });
  };

  afterEach(() => {
    vi.useRealTimers();
  });

  it("gives up on a managed-identity endpoint that never answers, within its bound, and asks again next time", async () => {
    vi.useFakeTimers();
    let calls = 0;
    const assertion = managedIdentityAssertion(() => {
      calls++;
      return calls === 1 ? new Promise(() => undefined) : Promise.resolve({ token: "mi-token-late", expiresOnTimestamp: Date.now() + 3600_000 });
    });
    const first = assertion();
    const settled = expect(first).rejects.toThrow(/did not answer within 15 s/);
    await vi.advanceTimersByTimeAsync(MANAGED_IDENTITY_TIMEOUT_MS);
    await settled;
    expect(await assertion()).toBe("mi-token-late");
  });

  it("keeps signing with the token in hand while a renewal fails, and fails once that token is near expiry", async () => {
    let clock = 1_000_000;
    let fail = false;
    const assertion = managedIdentityAssertion(
      async () => {
        if (fail) throw new Error("endpoint down");
        return { token: "mi-token-first", expiresOnTimestamp: clock + 3600_000 };
      },
      () => clock,
    );
    expect(await assertion()).toBe("mi-token-first");
    fail = true;
    clock += 56 * 60_000; // inside the renewal margin: a renewal is attempted and fails
    expect(await assertion()).toBe("mi-token-first");
    clock += 4 * 60_000; // within a minute of expiry: no longer served
    await expect(assertion()).rejects.toThrow("endpoint down");
  });

  it("reports a managed identity the host does not have as the app's credential, naming the settings", async () => {
    const assertion = managedIdentityAssertion(async () => {
      throw new CredentialUnavailableError("ManagedIdentityCredential: no identity with that client id");
    });
    await expect(assertion()).rejects.toMatchObject({ errorCode: "invalid_client", reason: "managed_identity_unavailable" });
    await expect(assertion()).rejects.toThrow(/AZURE_CLIENT_ID/);
  });
});

describe("the certificate's vault refusing the app", () => {
  it("reports a 403 from Key Vault as the app's credential (a role or firewall to fix), not as an outage", async () => {
    const forbidden: SecretStore = {
      ...storeWith({}),
      get: async () => {
        throw new SecretStoreError("get", 403);
      },
    };
    const auth = createAppCredential({ kind: "certificate", certificateName: "mssp-app-cert" }, { secrets: forbidden }).msal();
    if (!("clientAssertion" in auth)) throw new Error("expected an assertion callback");
    await expect(auth.clientAssertion({ clientId: "c", tokenEndpoint: "https://x.test/t/oauth2/v2.0/token" })).rejects.toMatchObject({
      errorCode: "invalid_client",
      reason: "certificate_forbidden",
    });
  });
});
