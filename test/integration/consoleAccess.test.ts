import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CSRF_COOKIE } from "../../shared/console/csrf";
import type { HttpResult } from "../harness/functionsHost";
import { PUBLIC_BASE_URL, registerTenant, secretsOf, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * The console behind App Service authentication (EasyAuth): the platform sets
 * WEBSITE_AUTH_ENABLED=True and passes the signed-in user in x-ms-client-principal. The app
 * requires the Console.Operator app role. No sandbox here.
 */

let env: TestEnvironment;
const responses: HttpResult[] = [];

beforeAll(async () => {
  env = await startTestEnvironment({ WEBSITE_AUTH_ENABLED: "True", MSSP_DISPLAY_NAME: "Fabrikam MSSP" });
});
afterAll(async () => {
  await env?.stop();
});

const NAME_TYPE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
const ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";

/** The header EasyAuth sends: base64 JSON with auth_typ and claims, as App Service writes it. */
function principal(options: { roles?: string[]; authType?: string; name?: string; roleType?: string; tenantId?: string } = {}): string {
  const claims = [
    { typ: "http://schemas.microsoft.com/identity/claims/tenantid", val: options.tenantId ?? env.msspTenantId },
    { typ: "aud", val: randomUUID() },
    { typ: "iss", val: `https://login.microsoftonline.com/${randomUUID()}/v2.0` },
    { typ: "name", val: options.name ?? "Ada Operator" },
    { typ: "preferred_username", val: "ada@mssp.example" },
    ...(options.roles ?? []).map((role) => ({ typ: options.roleType ?? "roles", val: role })),
  ];
  return Buffer.from(JSON.stringify({ auth_typ: options.authType ?? "aad", claims, name_typ: NAME_TYPE, role_typ: ROLE_TYPE })).toString("base64");
}

async function open(headers: Record<string, string> = {}, url = "/api/console?q=x&page=2"): Promise<HttpResult> {
  const result = await env.app.http("consoleTenants", { method: "GET", url: `${PUBLIC_BASE_URL}${url}`, headers });
  responses.push(result);
  return result;
}

describe("console behind App Service authentication", () => {
  it("sends a browser without a signed-in user to the Entra ID sign-in, back to the page it asked for", async () => {
    const result = await open();
    expect(result.status).toBe(302);
    expect(result.location).toBe(`/.auth/login/aad?post_login_redirect_uri=${encodeURIComponent("/api/console?q=x&page=2")}`);
    expect(result.body).toBe("");
  });

  it("treats an unreadable principal header as no sign-in", async () => {
    for (const header of ["not base64 json", Buffer.from("[]").toString("base64"), Buffer.from('{"claims":[]}').toString("base64")]) {
      expect((await open({ "x-ms-client-principal": header })).status).toBe(302);
    }
  });

  it("refuses a signed-in user without the Console.Operator role (403), naming the user as text", async () => {
    const result = await open({ "x-ms-client-principal": principal({ roles: ["Reader", "console.operator"], name: "Eve <i>Intruder</i>" }) });
    expect(result.status).toBe(403);
    expect(result.body).toContain("You are signed in as Eve &lt;i&gt;Intruder&lt;/i&gt;, but you do not have the Console.Operator app role.");
    expect(result.body).toContain("Fabrikam MSSP");
    expect(result.body).not.toContain("<i>");
    expect(result.body).not.toContain("Register a tenant");
    expect(result.cookies).toEqual([]);
  });

  it("refuses a sign-in that is not Entra ID even if it claims the role", async () => {
    const result = await open({ "x-ms-client-principal": principal({ roles: ["Console.Operator"], authType: "github" }) });
    expect(result.status).toBe(403);
    expect(result.body).toContain("not with Microsoft Entra ID");
  });

  it("serves an operator with the role, shows their name, offers sign-out and no sandbox banner", async () => {
    const { tenantId } = await registerTenant(env, randomUUID(), "EasyAuth Customer");
    const result = await open({ "x-ms-client-principal": principal({ roles: ["Reader", "Console.Operator"] }) }, `/api/console?q=${tenantId}`);
    expect(result.status).toBe(200);
    expect(result.body).toContain("Signed in as <strong>Ada Operator</strong>");
    expect(result.body).toContain('<a href="/.auth/logout">Sign out</a>');
    expect(result.body).toContain("EasyAuth Customer");
    expect(result.body).not.toContain("Simulated Microsoft cloud");
    expect(result.cookies.find((c) => c.name === CSRF_COOKIE)).toBeDefined();
  });

  it("accepts the role under the principal's role_typ as well", async () => {
    const result = await open({ "x-ms-client-principal": principal({ roles: ["Console.Operator"], roleType: ROLE_TYPE }) });
    expect(result.status).toBe(200);
  });

  it("answers a form post without a signed-in user with 401, and changes nothing", async () => {
    const tenantId = randomUUID();
    const result = await env.app.http("consoleRegister", {
      method: "POST",
      url: `${PUBLIC_BASE_URL}/api/console/register`,
      headers: { "content-type": "application/x-www-form-urlencoded", origin: PUBLIC_BASE_URL, cookie: `${CSRF_COOKIE}=${"A".repeat(43)}` },
      body: new URLSearchParams({ tenantId, displayName: "Anonymous", csrf: "A".repeat(43) }).toString(),
      params: {},
    });
    responses.push(result);
    expect(result.status).toBe(401);
    const api = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    expect(api.status).toBe(404);
  });

  it("lets an operator register through the form", async () => {
    const signedIn = { "x-ms-client-principal": principal({ roles: ["Console.Operator"] }) };
    const page = await open(signedIn, "/api/console/register");
    const token = page.cookies.find((c) => c.name === CSRF_COOKIE)?.value ?? "";
    const tenantId = randomUUID();
    const result = await env.app.http("consoleRegister", {
      method: "POST",
      url: `${PUBLIC_BASE_URL}/api/console/register`,
      headers: { ...signedIn, "content-type": "application/x-www-form-urlencoded", origin: PUBLIC_BASE_URL, cookie: `${CSRF_COOKIE}=${token}` },
      body: new URLSearchParams({ tenantId, displayName: "Registered by Ada", csrf: token }).toString(),
      params: {},
    });
    responses.push(result);
    expect(result.status).toBe(201);
    expect(env.app.logs.some((l) => l.message.includes("console: tenant registered") && l.message.includes("Ada Operator"))).toBe(true);
  });

  it("puts no secret into any response", () => {
    for (const r of responses) for (const secret of secretsOf(env)) expect(r.body.includes(secret)).toBe(false);
  });
});
