import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openConsentLink, registerTenant, secretsOf, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

// A fresh process: nothing is cached yet, so every first use of Key Vault meets the outage.
let env: TestEnvironment;
beforeAll(async () => {
  env = await startTestEnvironment();
});
afterAll(async () => {
  await env?.stop();
});

describe("Key Vault unreachable", () => {
  it("answers a consent link with an error page and a reference, never a stack trace or a redirect", async () => {
    env.vault.setDown(true);
    try {
      const tenantId = randomUUID();
      const page = await openConsentLink(env, `https://connector.example.test/api/consent/${tenantId}?exp=9999999999&sig=${"A".repeat(43)}`);
      expect(page.status).toBe(503);
      expect(page.location).toBeNull();
      expect(page.headers.get("content-type")).toContain("text/html");
      expect(page.body).toContain("Reference");
      expect(page.body).not.toMatch(/at \S+ \(|SecretStoreError|Key Vault/);
    } finally {
      env.vault.setDown(false);
    }
  });

  it("fails a registration with an opaque 500 and registers nothing, then works once the vault is back", async () => {
    const tenantId = randomUUID();
    env.vault.setDown(true);
    try {
      const failed = await registerTenant(env, tenantId);
      expect(failed.result.status).toBe(500);
      const body = failed.result.json<{ error: { code: string; message: string } }>();
      expect(body.error.code).toBe("internal_error");
      expect(body.error.message).toContain("Invocation id");
    } finally {
      env.vault.setDown(false);
    }
    const view = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    expect(view.status).toBe(404);
    const again = await registerTenant(env, tenantId);
    expect(again.result.status).toBe(201);

    const logs = env.app.logs.map((l) => l.message).join("\n");
    expect(logs).toContain("SecretStoreError");
    for (const secret of secretsOf(env)) expect(logs.includes(secret)).toBe(false);
  });
});
