import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tenantTokenSecretName } from "../../shared/secrets/tenantTokens";
import { completeConsent, registerTenant, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * An operator offboards a tenant while its admin's consent is being stored. The callback checked
 * the tenant when it started; only the check made with the write that marks the tenant connected
 * can see the offboarding.
 */

let env: TestEnvironment;

beforeAll(async () => {
  env = await startTestEnvironment();
});
afterAll(async () => {
  env?.vault.onRequest(null);
  await env?.stop();
});

describe("a consent that completes after its tenant was offboarded", () => {
  it("leaves the tenant offboarded, answers 410 and keeps no token", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const secretName = tenantTokenSecretName(tenantId);
    let offboarded = 0;
    env.vault.onRequest(async ({ method, name, version }) => {
      if (method !== "PUT" || name !== secretName || version !== undefined || offboarded !== 0) return;
      // The refresh token is on its way into Key Vault: the operator offboards the tenant first.
      offboarded = -1;
      const result = await env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${tenantId}`, params: { tenantId } });
      offboarded = result.status;
    });
    const { callback } = await completeConsent(env, consentUrl);
    env.vault.onRequest(null);

    expect(offboarded).toBe(200);
    expect(callback.status).toBe(410);
    const listed = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    expect(listed.json<{ status: string }>().status).toBe("offboarded");
    expect(env.vault.stateOf(secretName)).not.toBe("live");
  });
});
