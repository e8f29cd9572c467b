import { randomBytes, randomUUID } from "node:crypto";
import { Agent, fetch } from "undici";
import { inject } from "vitest";
import type { FakeDefender } from "../fakes/fakeDefender";
import type { FakeEntra } from "../fakes/fakeEntra";
import type { FakeGraph } from "../fakes/fakeGraph";
import type { FakeKeyVault } from "../fakes/fakeKeyVault";
import type { FakeManagedIdentity } from "../fakes/fakeManagedIdentity";
import { PUBLIC_BASE_URL, stackSettings, startFakeStack } from "../fakes/fakeStack";
import { loadApp, type HttpResult, type RegisteredApp } from "./functionsHost";
import { registerSecrets } from "./secrecy";

export { PUBLIC_BASE_URL };

export interface TestEnvironment {
  app: RegisteredApp;
  entra: FakeEntra;
  vault: FakeKeyVault;
  defender: FakeDefender;
  /** Microsoft Graph security alerts_v2. */
  graph: FakeGraph;
  env: Record<string, string>;
  clientId: string;
  clientSecret: string;
  msspTenantId: string;
  vaultToken: string;
  certPem: string;
  /** With `browserSignIn`: the fake Entra's plain-HTTP sign-in origin, also set as LOCAL_DEV_SIGN_IN_BASE_URL. */
  signInUrl?: string;
  /** With `managedIdentity`: the function app's managed-identity endpoint (IDENTITY_ENDPOINT, IDENTITY_HEADER, AZURE_CLIENT_ID set). */
  managedIdentity?: FakeManagedIdentity;
  /** Fetch that trusts the fakes' CA and does not follow redirects (a browser's first hop). */
  browserGet(url: string): Promise<{ status: number; location: string | null; body: string }>;
  stop(): Promise<void>;
}

/**
 * Starts the three protocol fakes over HTTPS on loopback, points the app's settings at them and
 * at the suite's Azurite, and loads the real app entry point. One per test file (each file runs
 * in its own process, so the app reads these settings fresh).
 */
export interface TestEnvironmentOptions {
  browserSignIn?: boolean;
  /**
   * Runs once the fakes listen and before the app is loaded, with the certificate the app trusts
   * (LOCAL_DEV_CA_CERT_FILE): starts another HTTPS server (a webhook receiver) and returns the
   * settings that point the app at it. `extraEnv` still wins over what it returns.
   */
  beforeLoad?: (tls: { certPem: string; keyPem: string }) => Promise<Record<string, string>>;
  /**
   * Start the managed-identity endpoint and set IDENTITY_ENDPOINT, IDENTITY_HEADER and
   * AZURE_CLIENT_ID as App Service does; the MSSP app trusts the identity by a federated
   * credential. The app's credential stays the secret unless MSSP_CLIENT_CREDENTIAL says otherwise.
   */
  managedIdentity?: boolean;
}

export async function startTestEnvironment(
  extraEnv: Record<string, string> = {},
  options: TestEnvironmentOptions = {},
): Promise<TestEnvironment> {
  // browserSignIn: the consent start sends the browser to the fake's plain-HTTP sign-in listener,
  // whose port is only known once it listens, so the setting is filled in here.
  const stack = await startFakeStack({ browserSignIn: options.browserSignIn === true, managedIdentity: options.managedIdentity === true });
  const { entra, vault, defender, graph, clientId, clientSecret, msspTenantId, vaultToken } = stack;
  const env: Record<string, string> = {
    ...stackSettings(stack),
    AzureWebJobsStorage: inject("storageConnectionString"),
    ALERTS_CONTAINER: `alerts-${randomBytes(6).toString("hex")}`,
    MDE_PARTNER_COMPANY: "TestMssp",
    MDE_PARTNER_PRODUCT: "Connector",
    ...(stack.signInUrl === undefined ? {} : { LOCAL_DEV_SIGN_IN_BASE_URL: stack.signInUrl }),
    ...(stack.managedIdentity && stack.managedIdentityClientId
      ? { ...stack.managedIdentity.environment, AZURE_CLIENT_ID: stack.managedIdentityClientId }
      : {}),
    ...(options.beforeLoad ? await options.beforeLoad({ certPem: stack.certPem, keyPem: stack.keyPem }) : {}),
    ...extraEnv,
  };
  Object.assign(process.env, env);
  const app = loadApp();
  const agent = new Agent({ connect: { ca: stack.certPem } });
  const testEnvironment: TestEnvironment = {
    app,
    entra,
    vault,
    defender,
    graph,
    env,
    clientId,
    clientSecret,
    msspTenantId,
    vaultToken,
    certPem: stack.certPem,
    ...(stack.signInUrl === undefined ? {} : { signInUrl: stack.signInUrl }),
    ...(stack.managedIdentity === undefined ? {} : { managedIdentity: stack.managedIdentity }),
    async browserGet(url) {
      const response = await fetch(url, { dispatcher: agent, redirect: "manual" });
      return { status: response.status, location: response.headers.get("location"), body: await response.text() };
    },
    async stop() {
      await stack.stop();
      await agent.close();
    },
  };
  // The after-each secrecy scan (test/harness/secrecy.setup.ts) looks for all of these.
  registerSecrets(() => secretsOf(testEnvironment), "test environment secret (secretsOf)");
  return testEnvironment;
}

export async function registerTenant(
  env: TestEnvironment,
  tenantId: string = randomUUID(),
  displayName = "Contoso Ltd",
  extra: Record<string, unknown> = {},
): Promise<{ tenantId: string; consentUrl: string; result: HttpResult }> {
  const result = await env.app.http("registerTenant", {
    method: "POST",
    url: "/api/tenants",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ tenantId, displayName, ...extra }),
  });
  const body = result.status === 201 ? result.json<{ consentUrl: string }>() : { consentUrl: "" };
  return { tenantId, consentUrl: body.consentUrl, result };
}

/** Asks for a new consent link (POST /api/tenants/{id}/reconsent), as an operator would; `body` e.g. `{ source: "graph" }`. */
export async function requestReconsent(env: TestEnvironment, tenantId: string, body?: Record<string, unknown>): Promise<string> {
  const result = await env.app.http("requestReconsent", {
    method: "POST",
    url: `/api/tenants/${tenantId}/reconsent`,
    params: { tenantId },
    headers: { "content-type": "application/json" },
    body: body ? JSON.stringify(body) : "",
  });
  if (result.status !== 201) throw new Error(`reconsent answered ${result.status}: ${result.body.slice(0, 200)}`);
  return result.json<{ consentUrl: string }>().consentUrl;
}

/** Invokes the consent-start handler for a consent URL, as the host would route it. */
export function openConsentLink(env: TestEnvironment, consentUrl: string): Promise<HttpResult> {
  const url = new URL(consentUrl);
  const tenantId = url.pathname.split("/").pop() ?? "";
  return env.app.http("consentStart", { method: "GET", url: url.toString(), params: { tenantId } });
}

/**
 * Walks a consent link end to end like the admin's browser: the app redirects to the fake
 * Entra ID, which redirects back to the callback, which the app handles.
 * Returns the callback URL too, so tests can replay it.
 */
export async function completeConsent(
  env: TestEnvironment,
  consentUrl: string,
): Promise<{ start: HttpResult; callbackUrl: string; callback: HttpResult; cookie: string }> {
  const start = await openConsentLink(env, consentUrl);
  if (start.status !== 302 || !start.location) throw new Error(`consent start answered ${start.status}: ${start.body.slice(0, 200)}`);
  const authorize = await env.browserGet(start.location);
  if (authorize.status !== 302 || !authorize.location) throw new Error(`authorize answered ${authorize.status}`);
  const callbackUrl = authorize.location;
  const cookie = cookieHeaderFrom(start);
  const callback = await env.app.http("consentCallback", { method: "GET", url: callbackUrl, params: {}, headers: { cookie } });
  return { start, callbackUrl, callback, cookie };
}

/** The Cookie header a browser would send back after this response's Set-Cookie (name=value pairs). */
/**
 * A customer administrator grants the application permission at the fake's admin-consent
 * endpoint directly (no consent link): for tests of the app credential, not of the consent flow.
 */
export async function grantAdminConsent(env: TestEnvironment, tenantId: string, scope = "https://api.securitycenter.microsoft.com/.default"): Promise<void> {
  const consent = new URL(`${env.entra.url}/${tenantId}/v2.0/adminconsent`);
  consent.search = new URLSearchParams({ client_id: env.clientId, scope, redirect_uri: `${PUBLIC_BASE_URL}/api/consent/callback`, state: randomUUID() }).toString();
  const answer = await env.browserGet(consent.toString());
  if (answer.status !== 302) throw new Error(`admin consent for ${tenantId} answered ${answer.status}`);
}

export function cookieHeaderFrom(response: HttpResult): string {
  return response.cookies
    .filter((cookie) => cookie.value !== "" && cookie.maxAge !== 0)
    .map((cookie) => `${cookie.name}=${cookie.value}`)
    .join("; ");
}

/** Every secret value a log line or response must never contain. */
export function secretsOf(env: TestEnvironment): string[] {
  return [env.clientSecret, env.vaultToken, ...env.entra.issuedSecrets(), ...env.vault.allValues()].filter((s) => s.length >= 8);
}
