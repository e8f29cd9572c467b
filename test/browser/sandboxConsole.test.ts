import { randomUUID } from "node:crypto";
import { describe, expect, it, vi } from "vitest";
import { consoleProfiles, expectAccessible, navigateBy, tableRows, useSandboxProcess } from "../harness/sandboxProcess";
import { saveScreenshot, useBrowser, type Page, type PageWatch } from "../harness/browser";

/**
 * The sandbox as a person uses it, end to end in Debian's Chromium: `scripts/sandbox.mjs` runs as
 * a child process (its own Azurite, a free port), an operator registers a customer in the console
 * from the keyboard, the customer's admin opens the consent link in another browser profile and
 * clicks Accept on the simulated Entra ID sign-in page, and the console then shows the customer
 * healthy with alerts pulled. Nothing is faked here beyond what the sandbox itself simulates; the
 * sign-in page is plain http on loopback, so this test sets no ignoreHTTPSErrors: a certificate
 * warning would fail the navigation.
 *
 * The tests below run in order and share the sandbox and the tenants they register.
 */

// A 2-core CI machine: the sandbox, its Azurite and Chromium start slowly beside other test files.
vi.setConfig({ testTimeout: 60_000, hookTimeout: 180_000 });

/** The few DOM names used inside page.evaluate (the test tsconfig has no DOM lib). */
interface FocusedElement {
  id: string;
  tagName: string;
  textContent: string | null;
  matches(selector: string): boolean;
}
declare const document: { activeElement: FocusedElement | null; body: unknown };
declare const navigator: { clipboard: { readText(): Promise<string> } };

const SIMULATED_TENANTS = ["Contoso Ltd", "Northwind Traders", "Fabrikam Inc"];
const HOSTILE_NAME = "<img src=x onerror=alert(1)><b>bold</b>";

const sandbox = useSandboxProcess(["--tenants", "3", "--timer-seconds", "2", "--alerts-per-minute", "60"]);

// Registered after the hooks above, so closed before them.
const browser = useBrowser();

const { operatorPage, adminPage, forgetOperator } = consoleProfiles(browser);

/** Console errors other than Chromium's note of an expected error status of a document. */
function unexpectedConsoleErrors(watch: PageWatch, expectedStatuses: number[] = []): string[] {
  return watch.consoleErrors.filter(
    (line) => !expectedStatuses.some((status) => line.startsWith(`Failed to load resource: the server responded with a status of ${status} `)),
  );
}

/** What a person sees: the rendered text plus the values of the fields, which innerText leaves out. */
async function visibleText(page: Page): Promise<string> {
  const values = await page.locator("input:visible").evaluateAll((fields) => fields.map((f) => (f as unknown as { value: string }).value));
  return [await page.locator("body").innerText(), ...values].join("\n");
}

/** Presses Tab until the focused element matches `selector`; the keyboard path a person takes. */
async function tabTo(page: Page, selector: string, maxPresses = 40): Promise<void> {
  const seen: string[] = [];
  for (let i = 0; i < maxPresses; i++) {
    await page.keyboard.press("Tab");
    const focused = await page.evaluate((sel) => {
      const el = document.activeElement;
      if (!el || el === document.body) return { matches: false, what: "body" };
      return { matches: el.matches(sel), what: `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ""} "${(el.textContent ?? "").trim().slice(0, 40)}"` };
    }, selector);
    if (focused.matches) return;
    seen.push(focused.what);
  }
  throw new Error(`Tab never reached ${selector}; focus went through: ${seen.join(", ")}`);
}


/** Registers a tenant through the console's form (pointer and typing; the keyboard-only path is test 2). */
async function registerInConsole(page: Page, tenantId: string, displayName: string): Promise<string> {
  await page.goto(`${sandbox.base}/api/console/register`);
  await page.locator("#tenantId").fill(tenantId);
  await page.locator("#displayName").fill(displayName);
  const response = await navigateBy(page, () => page.getByRole("button", { name: "Register tenant" }).click());
  expect(response?.status()).toBe(201);
  const link = await page.locator("#consent-link").inputValue();
  expect(link.startsWith(`${sandbox.base}/api/consent/${tenantId}?`), link).toBe(true);
  return link;
}

/** Shared between the tests, in order. */
const customer = { tenantId: randomUUID(), displayName: "Tailspin Toys", consentUrl: "" };

describe("the sandbox's console and consent pages in a browser", () => {
  it("1. lists the three simulated tenants, says the cloud is simulated, and is accessible", async () => {
    const { page } = await operatorPage();
    const response = await page.goto(`${sandbox.base}/api/console`);
    expect(response?.status()).toBe(200);
    expect(await page.title()).toBe("Tenants");
    expect(await page.getByRole("note").innerText()).toMatch(/Simulated Microsoft cloud/);
    const rows = await tableRows(page);
    expect(rows.map((r) => r.name).sort()).toEqual([...SIMULATED_TENANTS].sort());
    for (const row of rows) expect(row.tenantId).toMatch(/^[0-9a-f-]{36}$/);
    await expectAccessible(page);
  });

  it("2. registers a tenant from the keyboard alone, with inline validation, and copies its consent link", async () => {
    const { page } = await operatorPage();
    await page.goto(`${sandbox.base}/api/console`);
    // Keyboard only from here: Tab to the register link, Enter.
    await tabTo(page, `a[href="/api/console/register"]`);
    await navigateBy(page, () => page.keyboard.press("Enter"));
    expect(new URL(page.url()).pathname).toBe("/api/console/register");

    // A tenant id one character short first.
    const typo = customer.tenantId.slice(0, -1);
    await tabTo(page, "#tenantId");
    await page.keyboard.type(typo);
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("displayName");
    await page.keyboard.type(customer.displayName);
    const refused = await navigateBy(page, () => page.keyboard.press("Enter"));
    expect(refused?.status()).toBe(400);
    // The error is next to the field (same field group), tied to it, and the values are kept.
    const error = page.locator("#tenantId-error");
    expect(await error.isVisible()).toBe(true);
    expect(await error.innerText()).toMatch(/Enter the tenant ID as a GUID/);
    expect(await page.locator(".field:has(#tenantId) #tenantId-error").count()).toBe(1);
    expect(await page.locator("#tenantId").getAttribute("aria-invalid")).toBe("true");
    expect((await page.locator("#tenantId").getAttribute("aria-describedby"))?.split(" ")).toContain("tenantId-error");
    expect(await page.locator("#tenantId").inputValue()).toBe(typo);
    expect(await page.locator("#displayName").inputValue()).toBe(customer.displayName);
    expect(await page.locator("#displayName").getAttribute("aria-invalid")).toBeNull();
    expect(await page.getByRole("alert").innerText()).toMatch(/The tenant was not registered/);
    await expectAccessible(page);

    // Then the right one: replace the field's text, submit with Enter.
    await tabTo(page, "#tenantId");
    await page.keyboard.press("Control+A");
    await page.keyboard.type(customer.tenantId);
    const registered = await navigateBy(page, () => page.keyboard.press("Enter"));
    expect(registered?.status()).toBe(201);
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe(customer.displayName);
    expect(await page.getByRole("status").first().innerText()).toMatch(/The tenant is registered/);
    customer.consentUrl = await page.locator("#consent-link").inputValue();
    expect(customer.consentUrl.startsWith(`${sandbox.base}/api/consent/${customer.tenantId}?`), customer.consentUrl).toBe(true);
    expect(new URL(customer.consentUrl).searchParams.get("sig")).toBeTruthy();
    await expectAccessible(page);

    // Copy, from the keyboard: Tab to the Copy button, Enter, and read the clipboard.
    await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: sandbox.base });
    await tabTo(page, `button[data-copy-target="consent-link"]`);
    expect(await page.locator(`button[data-copy-target="consent-link"]`).innerText()).toMatch(/^Copy/);
    await page.keyboard.press("Enter");
    const copyStatus = page.locator(`[data-copy-status-for="consent-link"]`);
    await sandbox.until("the copy status", async () => ((await copyStatus.innerText()) ? true : undefined), 10_000, 100);
    expect(await copyStatus.innerText()).toBe("Copied to the clipboard.");
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(customer.consentUrl);
  });

  it("3. the customer's admin opens the link, reaches the plain-http simulated sign-in, accepts, and sees the success page", async () => {
    expect(customer.consentUrl, "test 2 registered the tenant").not.toBe("");
    const { page, watch } = await adminPage();
    // No console cookie in this profile.
    expect(await page.context().cookies()).toEqual([]);

    const response = await page.goto(customer.consentUrl);
    expect(response?.status()).toBe(200);
    const signIn = new URL(page.url());
    // The simulated Entra ID on plain http on loopback (another port than the app): no certificate to warn about.
    expect(signIn.protocol).toBe("http:");
    expect(signIn.hostname).toBe("localhost");
    expect(signIn.port).not.toBe(new URL(sandbox.base).port);
    expect(signIn.pathname).toBe(`/${customer.tenantId}/oauth2/v2.0/authorize`);
    expect(await page.title()).toBe("Sign in (simulated Microsoft Entra ID)");
    expect(await page.locator("body").innerText()).toMatch(/Simulated Microsoft cloud/);
    const applicationId = signIn.searchParams.get("client_id") ?? "";
    expect(applicationId).toMatch(/^[0-9a-f-]{36}$/);
    await expectAccessible(page);

    const accepted = await navigateBy(page, () => page.getByRole("button", { name: /Accept/ }).click());
    expect(accepted?.status()).toBe(200);
    const landed = new URL(page.url());
    expect(landed.origin).toBe(sandbox.base);
    expect(landed.pathname).toBe("/api/consent/callback");
    expect(await page.title()).toBe("Consent complete");
    const shown = await visibleText(page);
    expect(shown).toContain("Sandbox MSSP");
    expect(shown).toContain(`${customer.displayName} is now connected`);
    expect(shown).toMatch(/Simulated Microsoft cloud/);
    // The two values the admin enters in the Defender portal, each with a Copy button.
    expect(await page.getByLabel("Application ID", { exact: true }).inputValue()).toBe(applicationId);
    const msspTenantId = await page.getByLabel("Tenant ID", { exact: true }).inputValue();
    expect(msspTenantId).toMatch(/^[0-9a-f-]{36}$/);
    expect(msspTenantId).not.toBe(customer.tenantId);
    expect(await page.getByRole("button", { name: "Copy Application ID" }).isVisible()).toBe(true);
    expect(await page.getByRole("button", { name: "Copy Tenant ID" }).isVisible()).toBe(true);
    expect(shown).toContain(customer.tenantId);
    await expectAccessible(page);
    await saveScreenshot(page, "consent-success");

    expect(watch).toEqual({ dialogs: [], pageErrors: [], consoleErrors: [] });
  });

  it("4. the console then shows the new tenant healthy, with alerts in its last pull", async () => {
    const { page } = await operatorPage();
    // The sandbox streams alerts to tenants registered while it runs (it looks every 15 s), pulls
    // every 2 s and reads alerts once they are 5 s old.
    const row = await sandbox.until(
      "the new tenant healthy with alerts in its last pull",
      async () => {
        await page.goto(`${sandbox.base}/api/console?q=${customer.tenantId}`);
        const [found] = await tableRows(page);
        return found && found.status === "Healthy" && Number(found.alertsInLastPull.replace(/,/g, "")) > 0 ? found : undefined;
      },
      90_000,
      2_000,
    );
    expect(row).toMatchObject({ name: customer.displayName, tenantId: customer.tenantId, status: "Healthy" });
    // Registered with the form's default source, the sandbox's DEFAULT_ALERT_SOURCE (mde).
    expect(row.source).toMatch(/mde$/);

    // The picture for the docs: every tenant listed, as an operator sees them.
    const response = await page.goto(`${sandbox.base}/api/console`);
    expect(response?.status()).toBe(200);
    const rows = await tableRows(page);
    expect(rows.map((r) => r.name).sort()).toEqual([...SIMULATED_TENANTS, customer.displayName].sort());
    await expectAccessible(page);
    await saveScreenshot(page, "console");
  }, 150_000);

  it("5. a tampered consent link shows the error page, not a redirect", async () => {
    const tampered = new URL(customer.consentUrl);
    const sig = tampered.searchParams.get("sig") ?? "";
    tampered.searchParams.set("sig", (sig[0] === "A" ? "B" : "A") + sig.slice(1));
    const { page, watch } = await adminPage();
    const response = await page.goto(tampered.toString());
    expect(response?.status()).toBe(400);
    expect(response?.request().redirectedFrom()).toBeNull();
    expect(page.url()).toBe(tampered.toString());
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("This consent link is not valid");
    await expectAccessible(page);
    expect(watch.dialogs).toEqual([]);
    expect(watch.pageErrors).toEqual([]);
    expect(unexpectedConsoleErrors(watch, [400])).toEqual([]);
  });

  it("6. a display name with markup shows as text in the table and on the tenant page", async () => {
    const { page, watch } = await operatorPage();
    const tenantId = randomUUID();
    await registerInConsole(page, tenantId, HOSTILE_NAME);
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe(HOSTILE_NAME);
    expect(await page.title()).toBe(HOSTILE_NAME);
    expect(await page.locator("b, img").count()).toBe(0);

    await page.goto(`${sandbox.base}/api/console`);
    const rows = await tableRows(page);
    expect(rows.find((r) => r.tenantId === tenantId)?.name).toBe(HOSTILE_NAME);
    expect(await page.locator("b, img").count()).toBe(0);

    await navigateBy(page, () => page.getByRole("link", { name: HOSTILE_NAME, exact: true }).click());
    expect(new URL(page.url()).pathname).toBe(`/api/console/tenants/${tenantId}`);
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe(HOSTILE_NAME);
    expect(await page.locator("b, img").count()).toBe(0);

    expect(watch.dialogs).toEqual([]);
    expect(watch.pageErrors).toEqual([]);
    // The only error lines of the operator's page so far: the 400 of test 2's refused form.
    expect(unexpectedConsoleErrors(watch, [400])).toEqual([]);
  });

  it("7. an admin who declines sees the refusal, and the tenant stays pending consent", async () => {
    const operatorSide = await operatorPage();
    const tenantId = randomUUID();
    const link = await registerInConsole(operatorSide.page, tenantId, "Woodgrove Bank");

    const { page, watch } = await adminPage();
    const response = await page.goto(link);
    expect(response?.status()).toBe(200);
    expect(await page.title()).toBe("Sign in (simulated Microsoft Entra ID)");
    const declined = await navigateBy(page, () => page.getByRole("button", { name: /Decline/ }).click());
    expect(declined?.status()).toBe(403);
    expect(new URL(page.url()).pathname).toBe("/api/consent/callback");
    expect(await page.getByRole("heading", { level: 1 }).innerText()).toBe("Consent was declined");
    expect(await page.locator("main").innerText()).toMatch(/declined the permission request/);
    await expectAccessible(page);
    expect(watch.dialogs).toEqual([]);
    expect(watch.pageErrors).toEqual([]);
    expect(unexpectedConsoleErrors(watch, [403])).toEqual([]);

    await operatorSide.page.goto(`${sandbox.base}/api/console?q=${tenantId}`);
    const [row] = await tableRows(operatorSide.page);
    expect(row).toMatchObject({ tenantId, name: "Woodgrove Bank", status: "Pending consent" });
    await operatorSide.page.goto(`${sandbox.base}/api/console/tenants/${tenantId}`);
    expect(await operatorSide.page.locator("dl.facts .badge").first().innerText()).toBe("Pending consent");
  });

  it("8. requests a new consent, revokes the link from its Revoke button, and the audit page shows it", async () => {
    const { page, watch } = await operatorPage();
    await page.goto(`${sandbox.base}/api/console/tenants/${customer.tenantId}`);
    // Connected: the page says what a new link can do before anyone asks for one.
    expect(await page.locator("main").innerText()).toMatch(/A new consent link lets whoever opens it replace the current consent/);
    const issued = await navigateBy(page, () => page.getByRole("button", { name: "Request a new consent" }).click());
    expect(issued?.status()).toBe(200);
    expect(await page.locator("main").innerText()).toMatch(/It works once\./);
    const link = await page.locator("#consent-link").inputValue();
    const linkId = new URL(link).searchParams.get("link") ?? "";
    expect(linkId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    const row = page.locator(`tr[data-link-id="${linkId}"]`);
    expect(await row.innerText()).toMatch(/Active/);
    await expectAccessible(page);

    const revoked = await navigateBy(page, () => row.getByRole("button", { name: /^Revoke/ }).click());
    expect(revoked?.status()).toBe(200);
    expect(new URL(page.url()).pathname).toBe(`/api/console/tenants/${customer.tenantId}`);
    expect(new URL(page.url()).hash).toBe("#consent-links");
    expect(await page.getByRole("status").first().innerText()).toMatch(/The consent link was revoked/);
    const after = page.locator(`tr[data-link-id="${linkId}"]`);
    expect(await after.innerText()).toMatch(/Revoked[\s\S]*by Sandbox operator/);
    expect(await after.getByRole("button").count()).toBe(0);
    await expectAccessible(page);
    await saveScreenshot(page, "tenant-links");

    // The customer's admin: the revoked link starts no sign-in.
    const admin = await adminPage();
    const refused = await admin.page.goto(link);
    expect(refused?.status()).toBe(410);
    expect(await admin.page.getByRole("heading", { level: 1 }).innerText()).toBe("This consent link was withdrawn");
    expect(admin.watch.pageErrors).toEqual([]);

    // The audit page, from the console's navigation.
    await navigateBy(page, () => page.getByRole("navigation", { name: "Console" }).getByRole("link", { name: "Audit", exact: true }).click());
    expect(new URL(page.url()).pathname).toBe("/api/console/audit");
    expect(await page.title()).toBe("Audit trail");
    const entries = page.locator("main table tbody tr").filter({ hasText: customer.displayName });
    const revocation = entries.filter({ hasText: "Consent link revoked" }).first();
    expect(await revocation.innerText()).toMatch(/Sandbox operator/);
    expect(await revocation.innerText()).toContain(linkId);
    expect(await entries.filter({ hasText: "New consent requested" }).count()).toBeGreaterThan(0);
    expect(await entries.filter({ hasText: "Consent completed" }).count()).toBeGreaterThan(0);
    await expectAccessible(page);
    await saveScreenshot(page, "audit");

    expect(watch.dialogs).toEqual([]);
    expect(watch.pageErrors).toEqual([]);
    expect(unexpectedConsoleErrors(watch, [400])).toEqual([]);
  });

  it("stops on Ctrl-C (SIGINT) with exit code 0", async () => {
    // Close the browser's connections first, so the sandbox's shutdown waits for none.
    await Promise.all(browser().browser.contexts().map((context) => context.close()));
    forgetOperator();
    expect(await sandbox.interrupt(), sandbox.output).toBe(0);
  });
});
