import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PUBLIC_BASE_URL, registerTenant, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/** Neither App Service authentication nor the sandbox: the console refuses to serve. */

let env: TestEnvironment;

beforeAll(async () => {
  env = await startTestEnvironment();
});
afterAll(async () => {
  await env?.stop();
});

/** What a client could send itself when EasyAuth is off: a principal with the operator role. */
const forged = Buffer.from(
  JSON.stringify({ auth_typ: "aad", claims: [{ typ: "name", val: "Mallory" }, { typ: "roles", val: "Console.Operator" }] }),
).toString("base64");

describe("console without sign-in", () => {
  it("answers 503 with what to configure, on every console page", async () => {
    const { tenantId } = await registerTenant(env, randomUUID(), "Hidden Customer");
    const pages = [
      await env.app.http("consoleTenants", { method: "GET", url: `${PUBLIC_BASE_URL}/api/console` }),
      await env.app.http("consoleRegister", { method: "GET", url: `${PUBLIC_BASE_URL}/api/console/register` }),
      await env.app.http("consoleTenant", { method: "GET", url: `${PUBLIC_BASE_URL}/api/console/tenants/${tenantId}`, params: { tenantId } }),
    ];
    for (const page of pages) {
      expect(page.status).toBe(503);
      expect(page.body).toContain("The console needs sign-in: configure App Service authentication");
      expect(page.body).not.toContain("Hidden Customer");
      expect(page.body).not.toContain("Simulated Microsoft cloud");
      expect(page.headers.get("content-security-policy")).toContain("default-src 'self'");
      expect(page.headers.get("cache-control")).toBe("no-store");
      expect(page.cookies).toEqual([]);
    }
  });

  it("ignores an x-ms-client-principal header unless WEBSITE_AUTH_ENABLED is True", async () => {
    const page = await env.app.http("consoleTenants", { method: "GET", url: `${PUBLIC_BASE_URL}/api/console`, headers: { "x-ms-client-principal": forged } });
    expect(page.status).toBe(503);
    expect(page.body).not.toContain("Mallory");
    const tenantId = randomUUID();
    const post = await env.app.http("consoleRegister", {
      method: "POST",
      url: `${PUBLIC_BASE_URL}/api/console/register`,
      headers: { "x-ms-client-principal": forged, "content-type": "application/x-www-form-urlencoded", origin: PUBLIC_BASE_URL },
      body: new URLSearchParams({ tenantId, displayName: "Forged" }).toString(),
      params: {},
    });
    expect(post.status).toBe(503);
    expect((await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } })).status).toBe(404);
  });

  it("still serves the static assets, the consent links and the operator API", async () => {
    const css = await env.app.http("consoleAssets", { method: "GET", url: "/api/console/assets/console.css", params: { name: "console.css" } });
    expect(css.status).toBe(200);
    const { consentUrl, result } = await registerTenant(env);
    expect(result.status).toBe(201);
    expect(consentUrl).toContain("/api/consent/");
  });

  it("names the MSSP with the neutral default when MSSP_DISPLAY_NAME is not set", async () => {
    const { consentUrl } = await registerTenant(env);
    const bad = new URL(consentUrl);
    bad.searchParams.set("sig", "B".repeat(43));
    const page = await env.app.http("consentStart", { method: "GET", url: bad.toString(), params: { tenantId: bad.pathname.split("/").pop() ?? "" } });
    expect(page.status).toBe(400);
    expect(page.body).toContain("Ask your managed security provider for a new consent link.");
  });
});
