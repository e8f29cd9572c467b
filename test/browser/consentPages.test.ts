import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  checkAccessibility,
  useBrowser,
  saveScreenshot,
  watchPage,
  type Page,
  type PageWatch,
} from "../harness/browser";
import type { RegisteredApp } from "../harness/functionsHost";
import { startLocalDispatcher, type LocalDispatcher } from "../harness/localDispatcher";
import { PUBLIC_BASE_URL, registerTenant as register, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * The consent pages as a customer's admin sees them, in headless Chromium: the app is served over
 * real HTTP by the local dispatcher, and the browser follows the real redirects (app -> fake Entra
 * ID's /authorize -> app's callback).
 *
 * The app's public origin in the test environment is https://connector.example.test (consent
 * links and the redirect URI registered with the fake Entra ID use it), which resolves nowhere:
 * launchBrowser's `publicOrigins` makes this browser reach the dispatcher under that name, through
 * a TLS front on loopback, as a front door would.
 * The fake Entra ID is reached directly over HTTPS with its self-signed certificate, hence
 * `ignoreHTTPSErrors` here; the sandbox (and startTestEnvironment's `browserSignIn`) serves a
 * plain-http sign-in page instead, so a person's browser never sees that certificate.
 */

// Chromium starts and navigates more slowly on a loaded 2-core CI machine than a unit test runs.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 120_000 });

let env: TestEnvironment;
let dispatcher: LocalDispatcher;
const registered: string[] = [];

/**
 * The app with only its HTTP functions: the dispatcher would otherwise also run the pull timer and
 * poll the tenant-pulls queues, which live in the suite's one Azurite, where other test files
 * (run at the same time) put and expect their own messages.
 */
function httpFunctionsOnly(app: RegisteredApp): RegisteredApp {
  return { ...app, functions: new Map([...app.functions].filter(([, fn]) => fn.trigger.type === "httpTrigger")) };
}

beforeAll(async () => {
  env = await startTestEnvironment();
  dispatcher = await startLocalDispatcher({
    app: httpFunctionsOnly(env.app),
    port: 0,
    storageConnectionString: env.env["AzureWebJobsStorage"] ?? "",
  });
});

afterAll(async () => {
  // The suite's tenant registry is shared by every test file, and the pull tests schedule every
  // connected tenant in it: leave none of ours connected.
  for (const tenantId of registered) {
    const offboarded = await env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    expect(offboarded.status, `offboarding ${tenantId}`).toBe(200);
  }
  await dispatcher?.close();
  await env?.stop();
});

// After the hooks above (the dispatcher's URL is known by then); closed before them. Without
// Chromium, every test below fails with the test setup's reason.
const browser = useBrowser(() => ({ publicOrigins: { [PUBLIC_BASE_URL]: dispatcher.url } }));

async function openBrowserPage(): Promise<{ page: Page; watch: PageWatch }> {
  const page = await browser().newPage({ ignoreHTTPSErrors: true });
  return { page, watch: watchPage(page) };
}

/** The URLs the browser went through to reach the response, first to last. */
function redirectChain(response: { request(): { url(): string; redirectedFrom(): unknown } }): string[] {
  const chain: string[] = [];
  type Req = { url(): string; redirectedFrom(): Req | null };
  for (let request: Req | null = response.request() as Req; request; request = request.redirectedFrom()) chain.unshift(request.url());
  return chain;
}

/** What a person sees: the rendered text, plus the values of (read-only) fields, which innerText leaves out. */
async function visibleText(page: Page): Promise<string> {
  const values = await page.locator("input:visible, textarea:visible").evaluateAll((fields) => fields.map((f) => (f as unknown as { value: string }).value));
  return [await page.locator("body").innerText(), ...values].join("\n");
}

async function registerTenant(...args: Parameters<typeof register>): ReturnType<typeof register> {
  const result = await register(...args);
  registered.push(result.tenantId);
  return result;
}

async function tenantStatus(tenantId: string): Promise<string | undefined> {
  const result = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
  return result.json<{ status?: string }>().status;
}

describe("consent pages in a browser", () => {
  it("a consent link leads through the sign-in to the success page, which is accessible", async () => {
    const { tenantId, consentUrl, result } = await registerTenant(env, randomUUID(), "Contoso Ltd");
    expect(result.status).toBe(201);
    const { page, watch } = await openBrowserPage();

    const response = await page.goto(consentUrl);
    expect(response?.status()).toBe(200);
    const chain = redirectChain(response!);
    expect(chain[0]).toBe(consentUrl);
    expect(chain[1]).toMatch(new RegExp(`^${env.entra.url}/${tenantId}/oauth2/v2\\.0/authorize\\?`));
    expect(chain[2]).toMatch(new RegExp(`^${PUBLIC_BASE_URL}/api/consent/callback\\?`));
    expect(chain).toHaveLength(3);

    expect(await page.title()).toBe("Consent complete");
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Consent complete");
    const shown = await visibleText(page);
    expect(shown).toContain("Contoso Ltd is now connected");
    expect(shown).toMatch(/Settings > Endpoints > APIs > SIEM/);
    // The ids the admin must enter in the Defender portal (and their own tenant id) are shown.
    for (const value of [env.clientId, env.msspTenantId, tenantId]) expect(shown).toContain(value);
    const csp = response?.headers()["content-security-policy"] ?? "";
    expect(csp).toMatch(/default-src '(none|self)'/);
    expect(csp).not.toContain("unsafe-inline");

    const a11y = await checkAccessibility(page);
    expect(a11y.failing, a11y.summary).toEqual([]);
    expect(a11y.passes.length).toBeGreaterThan(5); // axe did run, and checked something
    await saveScreenshot(page, "consent-complete");

    expect(watch).toEqual({ dialogs: [], pageErrors: [], consoleErrors: [] });
    expect(await tenantStatus(tenantId)).toBe("connected");
  });

  it("a tampered consent link shows the error page and never reaches the sign-in", async () => {
    const { tenantId, consentUrl } = await registerTenant(env, randomUUID(), "Tampered Inc");
    const tampered = new URL(consentUrl);
    const sig = tampered.searchParams.get("sig") ?? "";
    tampered.searchParams.set("sig", (sig[0] === "A" ? "B" : "A") + sig.slice(1));
    const { page, watch } = await openBrowserPage();

    const response = await page.goto(tampered.toString());
    expect(response?.status()).toBe(400);
    expect(redirectChain(response!)).toEqual([tampered.toString()]);
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("This consent link is not valid");
    expect(await visibleText(page)).toMatch(/Ask your .*for a new consent link\./);

    const a11y = await checkAccessibility(page);
    expect(a11y.failing, a11y.summary).toEqual([]);
    await saveScreenshot(page, "consent-link-not-valid");

    // Chromium notes every error status of a document on the console; that is the only line.
    expect(watch).toEqual({
      dialogs: [],
      pageErrors: [],
      consoleErrors: [`Failed to load resource: the server responded with a status of 400 (Bad Request) [${tampered.toString()}]`],
    });
    expect(await tenantStatus(tenantId)).toBe("pending_consent");
  });

  it("shows a display name with markup as text: no element is created and no script runs", async () => {
    const hostile = "<script>alert(1)</script><b>x</b>";
    const { consentUrl, result } = await registerTenant(env, randomUUID(), `Evil ${hostile} Corp`);
    expect(result.status).toBe(201);
    const { page, watch } = await openBrowserPage();

    const response = await page.goto(consentUrl);
    expect(response?.status()).toBe(200);
    expect(await page.title()).toBe("Consent complete");
    expect(await visibleText(page)).toContain(`Evil ${hostile} Corp is now connected`);
    // The name became text: no <b> element anywhere, and no script but the app's own external ones.
    expect(await page.locator("b").count()).toBe(0);
    expect(await page.locator("script:not([src])").count()).toBe(0);
    for (const src of await page.locator("script[src]").evaluateAll((scripts) => scripts.map((s) => s.getAttribute("src")))) {
      expect(src).toMatch(/^\/api\//);
    }
    await saveScreenshot(page, "consent-complete-hostile-name");

    // Were the escaping broken, the page's CSP should still stop the script; either way, no dialog.
    expect(watch).toEqual({ dialogs: [], pageErrors: [], consoleErrors: [] });
  });
});
