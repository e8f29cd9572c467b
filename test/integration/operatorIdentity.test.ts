import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiAccessTokenOptions } from "../fakes/fakeEntra";
import type { HttpResult } from "../harness/functionsHost";
import { secretsOf, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * Who calls the operator API (issue 11, item 3): the real entry point, the handlers as the host
 * registers them, the fake Entra ID minting the tokens. App Service authentication is on here
 * (WEBSITE_AUTH_ENABLED=True), as in Azure; a caller without a principal still reaches the app
 * (unauthenticated requests are allowed) and is then identified by its bearer token or, offering
 * nothing, as the function-key holder the host already checked.
 */

let env: TestEnvironment;
const responses: HttpResult[] = [];

beforeAll(async () => {
  env = await startTestEnvironment({ WEBSITE_AUTH_ENABLED: "True" });
});
afterAll(async () => {
  await env?.stop();
});

const ROLE = "Console.Operator";

interface Call {
  result: HttpResult;
  /** The fields of this invocation's "operator request" log line, if it logged one. */
  actor: Record<string, unknown> | undefined;
  /** The fields of its "operator request refused" line, if any. */
  refusal: Record<string, unknown> | undefined;
}

function fieldsOf(invocationId: string, message: string): Record<string, unknown> | undefined {
  const line = env.app.logs.find((entry) => entry.invocationId === invocationId && entry.message.startsWith(`${message} {`));
  return line ? (JSON.parse(line.message.slice(message.length + 1)) as Record<string, unknown>) : undefined;
}

async function call(name: string, init: { method: string; url: string; headers?: Record<string, string>; body?: string }): Promise<Call> {
  const result = await env.app.http(name, init);
  responses.push(result);
  const invocationId = env.app.lastContext?.invocationId ?? "";
  return { result, actor: fieldsOf(invocationId, "operator request"), refusal: fieldsOf(invocationId, "operator request refused") };
}

function register(tenantId: string, headers: Record<string, string> = {}): Promise<Call> {
  return call("registerTenant", {
    method: "POST",
    url: "/api/tenants",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ tenantId, displayName: "Identity Test Customer" }),
  });
}

/** Whether a tenant is registered, asked as the function-key holder. */
async function isRegistered(tenantId: string): Promise<boolean> {
  const { result } = await call("getTenant", { method: "GET", url: `/api/tenants/${tenantId}` });
  return result.status === 200;
}

function token(options: Partial<ApiAccessTokenOptions> = {}): Promise<string> {
  return env.entra.mintApiAccessToken({ resourceClientId: env.clientId, tenantId: env.msspTenantId, roles: [ROLE], ...options });
}

const bearer = (value: string) => ({ authorization: `Bearer ${value}` });

/** The header App Service writes for a caller it authenticated: base64 JSON with auth_typ and claims. */
function principal(options: { roles?: string[]; tenantId?: string; claims?: Array<{ typ: string; val: string }> } = {}): string {
  const claims = [
    { typ: "http://schemas.microsoft.com/identity/claims/tenantid", val: options.tenantId ?? env.msspTenantId },
    { typ: "aud", val: env.clientId },
    ...(options.claims ?? []),
    ...(options.roles ?? []).map((role) => ({ typ: "roles", val: role })),
  ];
  return Buffer.from(JSON.stringify({ auth_typ: "aad", claims })).toString("base64");
}

const errorOf = (result: HttpResult) => result.json<{ error: { code: string; message: string } }>().error;

describe("operator API: the caller is identified before anything changes", () => {
  it("names a caller that offers no identity the function-key holder", async () => {
    const { result, actor } = await call("listTenants", { method: "GET", url: "/api/tenants" });
    expect(result.status).toBe(200);
    expect(actor).toMatchObject({ actorKind: "function_key", actorId: "function-key", actorName: "Function key holder" });
  });

  it("accepts an app-only token (client credentials, v1) for api://{clientId} with the Console.Operator role, naming the application", async () => {
    const clientAppId = randomUUID();
    const tenantId = randomUUID();
    const { result, actor } = await register(tenantId, bearer(await token({ clientAppId })));
    expect(result.status).toBe(201);
    expect(actor).toMatchObject({ actorKind: "entra_app", actorId: clientAppId, actorName: `Application ${clientAppId}` });
    expect(await isRegistered(tenantId)).toBe(true);
  });

  it("accepts a v2.0 app-only token whose audience is the client id", async () => {
    const clientAppId = randomUUID();
    const { result, actor } = await call("listTenants", { method: "GET", url: "/api/tenants", headers: bearer(await token({ clientAppId, version: "2.0" })) });
    expect(result.status).toBe(200);
    expect(actor).toMatchObject({ actorKind: "entra_app", actorId: clientAppId });
  });

  it("accepts a delegated user token with the role, naming the user by object id and name", async () => {
    const oid = randomUUID();
    const user = { oid, name: "  Grace Operator  ", preferredUsername: "grace@mssp.example" };
    const { result, actor } = await call("listTenants", { method: "GET", url: "/api/tenants", headers: bearer(await token({ user, version: "2.0" })) });
    expect(result.status).toBe(200);
    expect(actor).toMatchObject({ actorKind: "entra_user", actorId: oid, actorName: "Grace Operator" });
  });

  it("refuses an invalid bearer token with 401 invalid_operator_token and registers nothing", async () => {
    const now = Date.now();
    const cases: Array<[string, Promise<string> | string]> = [
      ["wrong_audience", token({ resourceClientId: randomUUID() })],
      ["wrong_audience", token({ claims: { aud: [env.clientId, `api://${randomUUID()}`] } })],
      ["expired", token({ issuedAt: now - 3 * 3600_000, lifetimeSeconds: 3600 })],
      ["not_yet_valid", token({ claims: { nbf: Math.floor(now / 1000) + 3600 } })],
      ["invalid_signature", token({ badSignature: true })],
      ["wrong_issuer", token({ claims: { iss: `https://issuer.example.test/${env.msspTenantId}/v2.0` } })],
      ["missing_claim", token({ claims: { tid: undefined } })],
      ["invalid", "not-a-jwt"],
    ];
    for (const [reason, pending] of cases) {
      const tenantId = randomUUID();
      const { result, actor, refusal } = await register(tenantId, bearer(await pending));
      expect(result.status, reason).toBe(401);
      expect(errorOf(result).code, reason).toBe("invalid_operator_token");
      expect(errorOf(result).message, reason).toContain(`(${reason})`);
      expect(actor, reason).toBeUndefined();
      expect(refusal, reason).toMatchObject({ code: "invalid_operator_token", status: 401, reason });
      expect(await isRegistered(tenantId), reason).toBe(false);
    }
  });

  it("refuses a valid token of another tenant with 403 operator_forbidden (other_tenant) and registers nothing", async () => {
    const tenantId = randomUUID();
    const { result, actor } = await register(tenantId, bearer(await token({ tenantId: randomUUID() })));
    expect(result.status).toBe(403);
    expect(errorOf(result)).toMatchObject({ code: "operator_forbidden", message: expect.stringContaining("(other_tenant)") });
    expect(actor).toBeUndefined();
    expect(await isRegistered(tenantId)).toBe(false);
  });

  it("refuses a valid MSSP token without the Console.Operator role with 403 operator_forbidden (missing_role) and registers nothing", async () => {
    for (const roles of [[], ["Reader", "console.operator"]]) {
      const tenantId = randomUUID();
      const { result, actor, refusal } = await register(tenantId, bearer(await token({ roles })));
      expect(result.status).toBe(403);
      expect(errorOf(result)).toMatchObject({ code: "operator_forbidden", message: expect.stringContaining("(missing_role)") });
      expect(actor).toBeUndefined();
      expect(refusal).toMatchObject({ reason: "missing_role" });
      expect(await isRegistered(tenantId)).toBe(false);
    }
  });

  it("names an operator signed in through App Service authentication with the role (entra_user)", async () => {
    const oid = randomUUID();
    const tenantId = randomUUID();
    const header = principal({
      roles: [ROLE],
      claims: [
        { typ: "http://schemas.microsoft.com/identity/claims/objectidentifier", val: oid },
        { typ: "name", val: "Ada Operator" },
        { typ: "preferred_username", val: "ada@mssp.example" },
      ],
    });
    const { result, actor } = await register(tenantId, { "x-ms-client-principal": header });
    expect(result.status).toBe(201);
    expect(actor).toMatchObject({ actorKind: "entra_user", actorId: oid, actorName: "Ada Operator" });
  });

  it("names an application whose token App Service validated (entra_app)", async () => {
    const appId = randomUUID();
    const header = principal({ roles: [ROLE], claims: [{ typ: "appid", val: appId }, { typ: "idtyp", val: "app" }] });
    const { result, actor } = await call("listTenants", { method: "GET", url: "/api/tenants", headers: { "x-ms-client-principal": header } });
    expect(result.status).toBe(200);
    expect(actor).toMatchObject({ actorKind: "entra_app", actorId: appId });
  });

  it("refuses an App Service principal without the role (or of another tenant) with 403 and registers nothing", async () => {
    const cases: Array<[string, string]> = [
      ["missing_role", principal({ roles: ["Reader"], claims: [{ typ: "name", val: "Eve" }] })],
      ["other_tenant", principal({ roles: [ROLE], tenantId: randomUUID() })],
    ];
    for (const [reason, header] of cases) {
      const tenantId = randomUUID();
      // A valid bearer token beside it changes nothing: the platform's principal decides.
      const { result, actor } = await register(tenantId, { "x-ms-client-principal": header, ...bearer(await token()) });
      expect(result.status, reason).toBe(403);
      expect(errorOf(result), reason).toMatchObject({ code: "operator_forbidden", message: expect.stringContaining(`(${reason})`) });
      expect(actor, reason).toBeUndefined();
      expect(await isRegistered(tenantId), reason).toBe(false);
    }
  });

  it("never writes a bearer token into a log line or a response", () => {
    const secrets = secretsOf(env);
    expect(secrets.length).toBeGreaterThan(10);
    const haystacks = [...env.app.logs.map((entry) => entry.message), ...responses.map((r) => `${r.body} ${JSON.stringify([...r.headers.entries()])}`)];
    for (const secret of secrets) for (const text of haystacks) expect(text.includes(secret), `a secret leaked into: ${text.slice(0, 120)}`).toBe(false);
  });
});
