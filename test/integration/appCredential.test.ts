/**
 * The MSSP app's credential as a certificate kept in Key Vault (MSSP_CLIENT_CREDENTIAL
 * certificate), end to end through the real MSAL against the fake Entra ID, which checks every
 * client assertion (test/fakes/clientAssertions.ts): a consent sign-in and a pull's token
 * refresh work with no client secret configured at all; a certificate Entra does not know, an
 * expired assertion and a replayed one are refused with Entra's codes; the app then reports its
 * own credential, never the tenant. The managed-identity credential has its own file
 * (appCredentialManagedIdentity.test.ts): one app per process.
 */
import { randomUUID } from "node:crypto";
import { X509Certificate } from "node:crypto";
import { SignJWT, importPKCS8 } from "jose";
import { Agent, fetch } from "undici";
import { generate } from "selfsigned";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { generateAlerts } from "../fakes/alerts";
import { JWT_BEARER } from "../fakes/clientAssertions";
import { FakeKeyVault } from "../fakes/fakeKeyVault";
import { capturingLogger, connectedTenant, deliveredEnvelopes, minutesAgo, pipelineServices } from "../harness/pullFixture";
import { registerSecrets } from "../harness/secrecy";
import { completeConsent, grantAdminConsent, registerTenant, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

const CERTIFICATE_NAME = "mssp-app-certificate";

interface TestCertificate {
  certPem: string;
  keyPem: string;
}

async function newCertificate(): Promise<TestCertificate> {
  const pems = await generate([{ name: "commonName", value: "mssp-connector" }], {
    keySize: 2048,
    algorithm: "sha256",
    notBeforeDate: new Date(Date.now() - 60_000),
    notAfterDate: new Date(Date.now() + 30 * 24 * 3600_000),
  });
  return { certPem: pems.cert, keyPem: pems.private };
}

let env: TestEnvironment;
let certificate: TestCertificate;
let otherCertificate: TestCertificate;
/** The fakes' TLS key, to start another vault the app trusts. */
let tlsKeyPem = "";
const logs: string[] = [];

beforeAll(async () => {
  [certificate, otherCertificate] = await Promise.all([newCertificate(), newCertificate()]);
  // The private keys are secrets; the vault's copy (key and chain) is registered by the fake vault.
  registerSecrets(() => [certificate.keyPem, otherCertificate.keyPem, ...pemBodies(certificate.keyPem), ...pemBodies(otherCertificate.keyPem)], "test certificate private key");
  env = await startTestEnvironment({
    MSSP_CLIENT_CREDENTIAL: "certificate",
    MSSP_CLIENT_CERTIFICATE_NAME: CERTIFICATE_NAME,
    // No secret anywhere in the app's settings.
    MSSP_CLIENT_SECRET: "",
    PULL_SETTLE_SECONDS: "0",
  }, {
    beforeLoad: async (tls) => {
      tlsKeyPem = tls.keyPem;
      return {};
    },
  });
  // As Key Vault stores a PEM certificate: the backing secret holds the key and the certificate.
  env.vault.putSecret(CERTIFICATE_NAME, `${certificate.keyPem}${certificate.certPem}`, { contentType: "application/x-pem-file" });
  env.entra.clientAssertions.addCertificate(env.clientId, certificate.certPem);
});

afterAll(async () => {
  await env?.stop();
});

afterEach(() => {
  env.entra.clearFailures();
  env.entra.setClock(Date.now);
  env.entra.clientAssertions.removeCertificates(env.clientId);
  env.entra.clientAssertions.addCertificate(env.clientId, certificate.certPem);
});

/** The base64 body lines of a PEM: a key leaked without its armour still counts. */
function pemBodies(pem: string): string[] {
  return [pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, "")];
}

async function pull(tenantId: string) {
  const log = capturingLogger();
  const outcome = await pipelineServices(env).tenantPull.run(tenantId, log);
  logs.push(...log.lines);
  return { outcome, log };
}

async function tenantView(tenantId: string): Promise<Record<string, unknown>> {
  return (await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } })).json<Record<string, unknown>>();
}

describe("certificate credential", () => {
  it("connects a tenant by a consent sign-in signed with the Key Vault certificate, with no client secret set", async () => {
    const before = env.entra.clientAssertions.stats.certificate;
    const tenantId = await connectedTenant(env, "Certificate Co");
    expect(env.entra.clientAssertions.stats.certificate).toBe(before + 1);
    expect((await tenantView(tenantId))["status"]).toBe("connected");
  });

  it("refreshes the tenant's token for a pull with a fresh certificate assertion each time", async () => {
    const tenantId = await connectedTenant(env, "Pulled Co");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 7, { start: minutesAgo(30), spacingMs: 60_000 }));
    const before = env.entra.clientAssertions.stats.certificate;
    expect((await pull(tenantId)).outcome).toMatchObject({ outcome: "pulled", alerts: 7 });
    // The refresh authenticated with a certificate assertion (the fake refuses a jti it has seen, so none was reused).
    expect(env.entra.clientAssertions.stats.certificate).toBeGreaterThan(before);
    expect((await pull(tenantId)).outcome).toMatchObject({ outcome: "pulled", alerts: 0 });
    expect(await deliveredEnvelopes(env, tenantId)).toHaveLength(7);
  });

  it("gets a client-credential token for a tenant whose administrator granted the application permission", async () => {
    const tenantId = randomUUID();
    await grantAdminConsent(env, tenantId);
    const before = env.entra.clientAssertions.stats.certificate;
    // The assertion's audience is that customer tenant's token endpoint, which the fake checks.
    const token = await pipelineServices(env).entra.acquireAppToken({ tenantId, scope: "https://api.securitycenter.microsoft.com/.default" });
    expect(token.claims.tid).toBe(tenantId);
    expect(env.entra.clientAssertions.stats.certificate).toBe(before + 1);
  });

  it("reports its own credential, not the tenant, when Entra does not know the certificate (AADSTS700027)", async () => {
    const tenantId = await connectedTenant(env, "Unknown Key Co");
    env.entra.clientAssertions.removeCertificates(env.clientId);
    env.entra.clientAssertions.addCertificate(env.clientId, otherCertificate.certPem);
    const rejectedBefore = env.entra.clientAssertions.stats.rejected;
    const { outcome, log } = await pull(tenantId);
    expect(outcome).toMatchObject({ outcome: "failed", category: "app_credential", code: "AADSTS700027" });
    expect(env.entra.clientAssertions.stats.rejected).toBe(rejectedBefore + 1);
    const alarm = log.lines.find((line) => line.startsWith("error"));
    expect(alarm).toContain("every tenant is affected");
    expect(alarm).toContain("MSSP_CLIENT_CERTIFICATE_NAME");
    expect(alarm).not.toContain("MSSP_CLIENT_SECRET");
    expect(await tenantView(tenantId)).toMatchObject({ status: "connected" });
    // The code shows on the tenant's health, which is where the console shows it.
    const list = (await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).json<{
      tenants: Array<{ tenantId: string; health: Record<string, unknown> }>;
    }>().tenants;
    expect(list.find((t) => t.tenantId === tenantId)?.health).toMatchObject({ lastPullErrorCode: "AADSTS700027", consecutiveFailures: 1 });
  });

  it("is refused as expired when Entra's clock is past the assertion's exp (AADSTS700024)", async () => {
    const tenantId = await connectedTenant(env, "Late Co");
    // MSAL's assertions live ten minutes; Entra allows five minutes of skew.
    env.entra.setClock(() => Date.now() + 20 * 60_000);
    const { outcome } = await pull(tenantId);
    expect(outcome).toMatchObject({ outcome: "failed", category: "app_credential", code: "AADSTS700024" });
    expect(await tenantView(tenantId)).toMatchObject({ status: "connected" });
  });

  it("shows the misconfiguration page, saves nothing and names the certificate when a consent meets a rejected certificate", async () => {
    const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), "Consent Co");
    env.entra.clientAssertions.removeCertificates(env.clientId);
    env.app.clearLogs();
    const { callback } = await completeConsent(env, consentUrl);
    expect(callback.status).toBe(502);
    expect(callback.body).toContain("misconfigured");
    const error = env.app.logs.find((entry) => entry.level === "error" && entry.message.includes("credential was rejected"));
    expect(error?.message).toContain("MSSP_CLIENT_CERTIFICATE_NAME");
    expect((await tenantView(tenantId))["status"]).not.toBe("connected");
  });

  it("reads the certificate from the vault MSSP_CLIENT_CERTIFICATE_VAULT_URL names (the credential vault)", async () => {
    const tenantId = await connectedTenant(env, "Credential Vault Co");
    const credentialVault = new FakeKeyVault({ certPem: env.certPem, keyPem: tlsKeyPem, acceptedToken: env.vaultToken, tenantId: env.msspTenantId });
    await credentialVault.start();
    try {
      // Only this vault holds a certificate by that name.
      credentialVault.putSecret("credential-vault-cert", `${certificate.keyPem}${certificate.certPem}`, { contentType: "application/x-pem-file" });
      const services = pipelineServices({
        ...env,
        env: { ...env.env, MSSP_CLIENT_CERTIFICATE_NAME: "credential-vault-cert", MSSP_CLIENT_CERTIFICATE_VAULT_URL: credentialVault.url },
      });
      expect(await services.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled" });
      expect(credentialVault.stats.get).toBeGreaterThan(0);
    } finally {
      await credentialVault.stop();
    }
  });

  it("fails the pull as the app credential when the named certificate is missing from Key Vault", async () => {
    const tenantId = await connectedTenant(env, "Missing Cert Co");
    const log = capturingLogger();
    const services = pipelineServices({ ...env, env: { ...env.env, MSSP_CLIENT_CERTIFICATE_NAME: "no-such-certificate" } });
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "failed", category: "app_credential", code: "invalid_client" });
    expect(log.lines.some((line) => line.startsWith("error") && line.includes("MSSP_CLIENT_CERTIFICATE_NAME"))).toBe(true);
    expect(await tenantView(tenantId)).toMatchObject({ status: "connected" });
  });
});

describe("the fake Entra's certificate assertion checks", () => {
  const agent = () => new Agent({ connect: { ca: env.certPem } });

  async function assertion(claims: Record<string, unknown>, cert: TestCertificate = certificate): Promise<string> {
    const key = await importPKCS8(cert.keyPem, "PS256");
    const thumbprint = Buffer.from(new X509Certificate(cert.certPem).fingerprint256.replace(/:/g, ""), "hex").toString("base64url");
    const now = Math.floor(Date.now() / 1000);
    const jwt = await new SignJWT({ iss: env.clientId, sub: env.clientId, jti: randomUUID(), nbf: now, exp: now + 600, ...claims })
      .setProtectedHeader({ alg: "PS256", typ: "JWT", "x5t#S256": thumbprint })
      .sign(key);
    extra.push(jwt);
    return jwt;
  }
  const extra: string[] = [];
  registerSecrets(() => extra, "assertion made by the test");

  async function tokenRequest(tenant: string, clientAssertion: string): Promise<{ status: number; body: { error?: string; error_codes?: number[] } }> {
    const dispatcher = agent();
    try {
      const response = await fetch(`${env.entra.url}/${tenant}/oauth2/v2.0/token`, {
        method: "POST",
        dispatcher,
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({
          client_id: env.clientId,
          grant_type: "refresh_token",
          refresh_token: "not-a-refresh-token",
          client_assertion_type: JWT_BEARER,
          client_assertion: clientAssertion,
        }).toString(),
      });
      return { status: response.status, body: (await response.json()) as { error?: string; error_codes?: number[] } };
    } finally {
      await dispatcher.close();
    }
  }

  it("accepts an assertion once and refuses its replay", async () => {
    const tenant = randomUUID();
    const jwt = await assertion({ aud: `${env.entra.url}/${tenant}/oauth2/v2.0/token` });
    // Past client authentication, the bogus refresh token is what fails.
    expect(await tokenRequest(tenant, jwt)).toMatchObject({ status: 400, body: { error: "invalid_grant" } });
    expect(await tokenRequest(tenant, jwt)).toMatchObject({ status: 401, body: { error: "invalid_client", error_codes: [50013] } });
  });

  it("refuses a wrong audience, another client's issuer, a future nbf and a signature by an unregistered key", async () => {
    const tenant = randomUUID();
    const aud = `${env.entra.url}/${tenant}/oauth2/v2.0/token`;
    const now = Math.floor(Date.now() / 1000);
    expect((await tokenRequest(tenant, await assertion({ aud: `${env.entra.url}/${randomUUID()}/oauth2/v2.0/token` }))).body.error_codes).toEqual([700023]);
    expect((await tokenRequest(tenant, await assertion({ aud, iss: randomUUID() }))).body.error_codes).toEqual([700021]);
    expect((await tokenRequest(tenant, await assertion({ aud, nbf: now + 3600, exp: now + 4200 }))).body.error_codes).toEqual([700024]);
    expect((await tokenRequest(tenant, await assertion({ aud }, otherCertificate))).body.error_codes).toEqual([700027]);
  });
});

afterAll(() => {
  // Nothing the app logged names a value of its credential (the scan also checks this for every test).
  expect(logs.join("\n")).not.toMatch(/PRIVATE KEY|client_assertion=/);
});
