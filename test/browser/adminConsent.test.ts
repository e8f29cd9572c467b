import { randomUUID } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import { consoleProfiles, expectAccessible, navigateBy, tableRows, useSandboxProcess } from "../harness/sandboxProcess";
import { saveScreenshot, useBrowser, type Page } from "../harness/browser";

/**
 * Issue 13 in the sandbox, as people use it, in Debian's Chromium: `scripts/sandbox.mjs` runs as a
 * child process (its own Azurite, a free port); an operator registers a customer with the
 * application consent model in the console; the customer's admin opens the consent link in another
 * browser profile and meets the simulated Entra admin-consent prompt (the app, its publisher, the
 * application permission by API), then Accepts (the tenant connects and its alerts arrive, pulled
 * with app-only tokens) or Cancels (the declined page, the tenant stays pending). The sandbox's own
 * application-model customer shows with its model too. The prompt is plain http on loopback: no
 * ignoreHTTPSErrors, so a certificate warning would fail the navigation.
 *
 * The tests run in order and share the sandbox.
 */

vi.setConfig({ testTimeout: 60_000, hookTimeout: 180_000 });

const PROMPT_TITLE = "Permissions requested (simulated Microsoft Entra ID)";
/** The sandbox's first simulated customer, connected by admin consent at start. */
const APPLICATION_CUSTOMER = "Contoso Ltd";

const sandbox = useSandboxProcess(["--tenants", "3", "--timer-seconds", "2", "--alerts-per-minute", "60", "--reconsent-after-minutes", "0"]);

// Registered after the hooks above, so closed before them.
const browser = useBrowser();

const { operatorPage, adminPage } = consoleProfiles(browser);


/** Registers an application-model tenant through the console's form, choosing the source and the model as an operator would. */
async function registerApplicationTenant(page: Page, tenantId: string, displayName: string, source: "mde" | "graph"): Promise<string> {
  await page.goto(`${sandbox.base}/api/console/register`);
  await page.locator("#tenantId").fill(tenantId);
  await page.locator("#displayName").fill(displayName);
  await page.locator(`#source-${source}`).check();
  await page.getByLabel("Application permission (admin consent)").check();
  const response = await navigateBy(page, () => page.getByRole("button", { name: "Register tenant" }).click());
  expect(response?.status()).toBe(201);
  const link = await page.locator("#consent-link").inputValue();
  expect(link.startsWith(`${sandbox.base}/api/consent/${tenantId}?`), link).toBe(true);
  return link;
}

/** Opens the consent link as the admin and checks the simulated admin-consent prompt it leads to. */
async function openPrompt(page: Page, link: string, tenantId: string): Promise<URL> {
  const response = await page.goto(link);
  expect(response?.status()).toBe(200);
  const prompt = new URL(page.url());
  // The simulated Entra ID's admin-consent endpoint, plain http on loopback, another port than the app.
  expect(prompt.protocol).toBe("http:");
  expect(prompt.hostname).toBe("localhost");
  expect(prompt.port).not.toBe(new URL(sandbox.base).port);
  expect(prompt.pathname).toBe(`/${tenantId}/v2.0/adminconsent`);
  expect(await page.title()).toBe(PROMPT_TITLE);
  expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Permissions requested");
  return prompt;
}

const mdeCustomer = { tenantId: randomUUID(), displayName: "Litware Inc", consentUrl: "" };

describe("admin consent (application model) in the sandbox, in a browser", () => {
  it("1. the sandbox's application-model customer is listed with its model, healthy, with alerts", async () => {
    const { page } = await operatorPage();
    const row = await sandbox.until(
      `${APPLICATION_CUSTOMER} healthy with alerts in its last pull`,
      async () => {
        await page.goto(`${sandbox.base}/api/console`);
        const found = (await tableRows(page)).find((r) => r.name === APPLICATION_CUSTOMER);
        return found && found.status === "Healthy" && Number(found.alertsInLastPull.replace(/,/g, "")) > 0 ? found : undefined;
      },
      60_000,
      2_000,
    );
    expect(row.source).toMatch(/application consent/);
    // The other simulated customers consented the delegated way.
    for (const other of (await tableRows(page)).filter((r) => r.name !== APPLICATION_CUSTOMER)) expect(other.source).not.toMatch(/application consent/);

    await navigateBy(page, () => page.getByRole("link", { name: APPLICATION_CUSTOMER, exact: true }).click());
    const facts = await page.locator("dl.facts").first().innerText();
    expect(facts).toMatch(/Consent model\s+Application permission \(admin consent\) application/);
    expect(sandbox.output).toContain(`${APPLICATION_CUSTOMER} by admin consent (application permission)`);
  });

  it("2. an application tenant registered in the console: the prompt names the app, the MSSP and Read all alerts; Accept connects it", async () => {
    const operatorSide = await operatorPage();
    mdeCustomer.consentUrl = await registerApplicationTenant(operatorSide.page, mdeCustomer.tenantId, mdeCustomer.displayName, "mde");

    const { page, watch } = await adminPage();
    expect(await page.context().cookies()).toEqual([]);
    const prompt = await openPrompt(page, mdeCustomer.consentUrl, mdeCustomer.tenantId);
    expect(prompt.searchParams.get("scope")).toBe("https://api.securitycenter.microsoft.com/.default");
    const main = await page.locator("main").innerText();
    expect(main).toContain("Accept for your organization");
    expect(main).toMatch(/Application\s+MSSP Defender connector/);
    expect(main).toMatch(/Publisher\s+Sandbox MSSP/);
    expect(main).toContain(mdeCustomer.tenantId);
    const permission = await page.locator("ul.permissions li").allInnerTexts();
    expect(permission).toEqual(["Read all alerts (WindowsDefenderATP Alert.Read.All, application permission)"]);
    expect(await page.getByRole("button", { name: "Cancel" }).isVisible()).toBe(true);
    expect(await page.locator("body").innerText()).toMatch(/Simulated Microsoft cloud/);
    await expectAccessible(page);
    await saveScreenshot(page, "admin-consent-prompt");

    const accepted = await navigateBy(page, () => page.getByRole("button", { name: "Accept" }).click());
    expect(accepted?.status()).toBe(200);
    const landed = new URL(page.url());
    expect(landed.origin).toBe(sandbox.base);
    expect(landed.pathname).toBe("/api/consent/callback");
    expect(await page.title()).toBe("Consent complete");
    const shown = await page.locator("main").innerText();
    expect(shown).toContain(`${mdeCustomer.displayName} is now connected`);
    expect(shown).toContain("WindowsDefenderATP Alert.Read.All (application)");
    expect(shown).toContain("no token of yours is kept");
    // Nothing to enter in the Defender portal's MSSP tab in this model: no copy fields.
    expect(await page.locator("input").count()).toBe(0);
    await expectAccessible(page);
    await saveScreenshot(page, "admin-consent-complete");
    expect(watch).toEqual({ dialogs: [], pageErrors: [], consoleErrors: [] });
  });

  it("3. the console then shows that tenant healthy with its model and alerts pulled with app-only tokens", async () => {
    const { page } = await operatorPage();
    // The sandbox streams alerts to tenants registered while it runs (it looks every 15 s), pulls every 2 s.
    const row = await sandbox.until(
      "the application tenant healthy with alerts in its last pull",
      async () => {
        await page.goto(`${sandbox.base}/api/console?q=${mdeCustomer.tenantId}`);
        const [found] = await tableRows(page);
        return found && found.status === "Healthy" && Number(found.alertsInLastPull.replace(/,/g, "")) > 0 ? found : undefined;
      },
      90_000,
      2_000,
    );
    expect(row).toMatchObject({ name: mdeCustomer.displayName, tenantId: mdeCustomer.tenantId });
    expect(row.source).toMatch(/mde/);
    expect(row.source).toMatch(/application consent/);
    await page.goto(`${sandbox.base}/api/console/tenants/${mdeCustomer.tenantId}`);
    const facts = await page.locator("dl.facts").first().innerText();
    expect(facts).toMatch(/Consent model\s+Application permission \(admin consent\) application/);
    expect(facts).toMatch(/Status\s+Healthy/);
    await expectAccessible(page);
  }, 120_000);

  it("4. a Graph application tenant: the prompt asks for Microsoft Graph's Read all security alerts; Cancel shows the declined page", async () => {
    const operatorSide = await operatorPage();
    const tenantId = randomUUID();
    const link = await registerApplicationTenant(operatorSide.page, tenantId, "Wide World Importers", "graph");

    const { page, watch } = await adminPage();
    const prompt = await openPrompt(page, link, tenantId);
    expect(prompt.searchParams.get("scope")).toBe("https://graph.microsoft.com/.default");
    expect(await page.locator("ul.permissions li").allInnerTexts()).toEqual(["Read all security alerts (Microsoft Graph SecurityAlert.Read.All, application permission)"]);

    const declined = await navigateBy(page, () => page.getByRole("button", { name: "Cancel" }).click());
    expect(declined?.status()).toBe(403);
    const landed = new URL(page.url());
    expect(landed.origin).toBe(sandbox.base);
    expect(landed.pathname).toBe("/api/consent/callback");
    // What Entra ID sends back on Cancel.
    expect(landed.searchParams.get("error")).toBe("access_denied");
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Consent was declined");
    expect(await page.locator("main").innerText()).toMatch(/declined the permission request/);
    await expectAccessible(page);
    expect(watch.dialogs).toEqual([]);
    expect(watch.pageErrors).toEqual([]);
    expect(watch.consoleErrors.filter((line) => !line.startsWith("Failed to load resource: the server responded with a status of 403 "))).toEqual([]);

    await operatorSide.page.goto(`${sandbox.base}/api/console?q=${tenantId}`);
    const [row] = await tableRows(operatorSide.page);
    expect(row).toMatchObject({ tenantId, name: "Wide World Importers", status: "Pending consent" });
  });
});
