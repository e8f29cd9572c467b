import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * OPERATOR_REQUIRE_ENTRA=true: a function key alone no longer acts on the operator API. Its own
 * file because the app reads its settings once per process (test/integration/operatorIdentity.test.ts
 * covers the default).
 */

let env: TestEnvironment;

beforeAll(async () => {
  env = await startTestEnvironment({ OPERATOR_REQUIRE_ENTRA: "true" });
});
afterAll(async () => {
  await env?.stop();
});

async function bearer(): Promise<Record<string, string>> {
  const token = await env.entra.mintApiAccessToken({ resourceClientId: env.clientId, tenantId: env.msspTenantId, roles: ["Console.Operator"] });
  return { authorization: `Bearer ${token}` };
}

function register(tenantId: string, headers: Record<string, string> = {}) {
  return env.app.http("registerTenant", {
    method: "POST",
    url: "/api/tenants",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ tenantId, displayName: "Required Identity Customer" }),
  });
}

describe("operator API with OPERATOR_REQUIRE_ENTRA=true", () => {
  it("refuses a function-key-only caller with 401 operator_identity_required and registers nothing", async () => {
    const tenantId = randomUUID();
    const refused = await register(tenantId);
    expect(refused.status).toBe(401);
    expect(refused.json<{ error: { code: string } }>().error.code).toBe("operator_identity_required");
    expect((await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).status).toBe(401);
    const lookup = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, headers: await bearer() });
    expect(lookup.status).toBe(404);
  });

  it("still accepts an Entra ID caller with the Console.Operator role", async () => {
    const tenantId = randomUUID();
    const result = await register(tenantId, await bearer());
    expect(result.status).toBe(201);
    expect(env.app.logs.some((l) => l.message.startsWith("operator request {") && l.message.includes('"actorKind":"entra_app"'))).toBe(true);
  });
});
