/**
 * The secretless app credential (MSSP_CLIENT_CREDENTIAL managedIdentity, Bicep's default): the
 * function app's user-assigned identity gets a token for api://AzureADTokenExchange from the
 * App Service managed-identity endpoint (the fake behind IDENTITY_ENDPOINT / IDENTITY_HEADER,
 * reached through the real @azure/identity and msal-node), and MSAL presents it as the client
 * assertion; the fake Entra accepts it only through the app registration's federated identity
 * credential (issuer, subject, audience) and the issuer's signing key. A consent sign-in and a
 * pull's token refresh work with no secret in any setting; a federated credential that no longer
 * matches, an expired token or an untrusted key are refused with Entra's codes and reported as
 * the app's credential, never as the tenant's.
 */
import { randomUUID } from "node:crypto";
import { generateKeyPair } from "jose";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { generateAlerts } from "../fakes/alerts";
import { TOKEN_EXCHANGE_AUDIENCE, type FederatedCredential } from "../fakes/clientAssertions";
import type { FakeManagedIdentity } from "../fakes/fakeManagedIdentity";
import { capturingLogger, connectedTenant, deliveredEnvelopes, minutesAgo, pipelineServices } from "../harness/pullFixture";
import { grantAdminConsent, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

let env: TestEnvironment;
let identity: FakeManagedIdentity;
let federated: FederatedCredential[];

beforeAll(async () => {
  env = await startTestEnvironment(
    { MSSP_CLIENT_CREDENTIAL: "managedIdentity", MSSP_CLIENT_SECRET: "", PULL_SETTLE_SECONDS: "0" },
    { managedIdentity: true },
  );
  if (!env.managedIdentity) throw new Error("the test environment started no managed-identity endpoint");
  identity = env.managedIdentity;
  federated = env.entra.clientAssertions.federatedCredentials(env.clientId);
});

afterAll(async () => {
  await env?.stop();
});

afterEach(() => {
  env.entra.setClock(Date.now);
  env.entra.clientAssertions.setFederatedCredentials(env.clientId, federated);
  env.entra.clientAssertions.trustIssuer(identity.issuer, identity.publicKey);
});

async function pull(tenantId: string) {
  const log = capturingLogger();
  const outcome = await pipelineServices(env).tenantPull.run(tenantId, log);
  return { outcome, log };
}

async function tenantView(tenantId: string): Promise<Record<string, unknown>> {
  return (await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } })).json<Record<string, unknown>>();
}

describe("managed identity as the app's federated credential", () => {
  it("is configured as App Service does it, without any client secret", () => {
    expect(env.env["IDENTITY_ENDPOINT"]).toBe(identity.endpoint);
    expect(env.env["AZURE_CLIENT_ID"]).toMatch(/^[0-9a-f-]{36}$/);
    expect(env.env["MSSP_CLIENT_SECRET"]).toBe("");
    expect(federated).toEqual([expect.objectContaining({ audiences: [TOKEN_EXCHANGE_AUDIENCE], issuer: identity.issuer })]);
  });

  it("connects a tenant by a consent sign-in whose client assertion is the identity's token", async () => {
    const before = env.entra.clientAssertions.stats.federated;
    const tenantId = await connectedTenant(env, "Federated Co");
    expect(env.entra.clientAssertions.stats.federated).toBe(before + 1);
    expect(identity.stats.tokenRequests).toBeGreaterThanOrEqual(1);
    expect((await tenantView(tenantId))["status"]).toBe("connected");
  });

  it("refreshes the tenant's token for a pull with the same credential", async () => {
    const tenantId = await connectedTenant(env, "Pulled Federated Co");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 5, { start: minutesAgo(30), spacingMs: 60_000 }));
    const before = env.entra.clientAssertions.stats.federated;
    const { outcome } = await pull(tenantId);
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 5 });
    expect(env.entra.clientAssertions.stats.federated).toBeGreaterThan(before);
    expect(await deliveredEnvelopes(env, tenantId)).toHaveLength(5);
  });

  it("gets a client-credential token for a tenant whose administrator granted the application permission", async () => {
    const tenantId = randomUUID();
    await grantAdminConsent(env, tenantId);
    const before = env.entra.clientAssertions.stats.federated;
    const token = await pipelineServices(env).entra.acquireAppToken({ tenantId, scope: "https://api.securitycenter.microsoft.com/.default" });
    expect(token.claims.tid).toBe(tenantId);
    expect(env.entra.clientAssertions.stats.federated).toBe(before + 1);
  });

  it("reports the app's credential, not the tenant, when the federated credential's subject no longer matches (AADSTS700213)", async () => {
    const tenantId = await connectedTenant(env, "Moved Identity Co");
    env.entra.clientAssertions.setFederatedCredentials(
      env.clientId,
      federated.map((credential) => ({ ...credential, subject: randomUUID() })),
    );
    const { outcome, log } = await pull(tenantId);
    expect(outcome).toMatchObject({ outcome: "failed", category: "app_credential", code: "AADSTS700213" });
    const alarm = log.lines.find((line) => line.startsWith("error"));
    expect(alarm).toContain("every tenant is affected");
    expect(alarm).toContain("federated identity credential");
    expect(alarm).not.toContain("MSSP_CLIENT_SECRET");
    expect(await tenantView(tenantId)).toMatchObject({ status: "connected" });
  });

  it("is refused when Entra no longer trusts the key that signed the token (AADSTS700027)", async () => {
    const tenantId = await connectedTenant(env, "Rotated Key Co");
    env.entra.clientAssertions.trustIssuer(identity.issuer, (await generateKeyPair("RS256")).publicKey);
    expect((await pull(tenantId)).outcome).toMatchObject({ outcome: "failed", category: "app_credential", code: "AADSTS700027" });
    expect(await tenantView(tenantId)).toMatchObject({ status: "connected" });
  });

  it("is refused as expired when Entra's clock is past the identity token's exp (AADSTS700024)", async () => {
    const tenantId = await connectedTenant(env, "Expired Token Co");
    // The fake identity's tokens live an hour; Entra allows five minutes of skew.
    env.entra.setClock(() => Date.now() + 2 * 3600_000);
    expect((await pull(tenantId)).outcome).toMatchObject({ outcome: "failed", category: "app_credential", code: "AADSTS700024" });
    expect(await tenantView(tenantId)).toMatchObject({ status: "connected" });
  });

  it("gets no token for an identity the function app does not have, and leaves the tenant connected", async () => {
    const tenantId = await connectedTenant(env, "Wrong Identity Co");
    const refused = identity.stats.refused;
    const log = capturingLogger();
    const services = pipelineServices({ ...env, env: { ...env.env, MSSP_FIC_IDENTITY_CLIENT_ID: randomUUID() } });
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "failed" });
    expect(identity.stats.refused).toBeGreaterThan(refused);
    expect(await tenantView(tenantId)).toMatchObject({ status: "connected" });
  });
});
