/**
 * A fresh load of the real app with broken settings: it fails fast and visibly. Every problem is
 * logged once, by setting name; operator calls answer 503 `misconfigured` with the names and no
 * value; consent and console pages say the service is misconfigured, with a reference; the timer
 * and the queue functions log and return instead of throwing; /api/health answers 503.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inject } from "vitest";
import { captureConsole, loadApp, type RegisteredApp } from "../harness/functionsHost";

/** Wrong in five different ways; none of these values may appear in a response or a log line. */
const BROKEN = {
  MSSP_CLIENT_ID: "not-a-guid-7f3a",
  MSSP_CLIENT_SECRET: "<client secret of the MSSP app registration; in Azure a Key Vault reference>",
  MSSP_TENANT_ID: "00000000-0000-0000-0000-000000000000",
  KEY_VAULT_URL: "https://<your-vault>.vault.azure.net",
  PULL_SCHEDULE: "0 0 */99 * * *",
  PULL_PAGE_SIZE: "123456789",
};
const BAD_NAMES = Object.keys(BROKEN);
const BAD_VALUES = ["not-a-guid-7f3a", "client secret of the MSSP", "your-vault", "*/99", "123456789"];

let app: RegisteredApp;
const saved: Record<string, string | undefined> = {};

beforeAll(() => {
  const env: Record<string, string> = {
    ...BROKEN,
    MSSP_PUBLIC_BASE_URL: "https://connector.example.test",
    AzureWebJobsStorage: inject("storageConnectionString"),
    MSSP_DISPLAY_NAME: "Contoso Security",
  };
  for (const [name, value] of Object.entries(env)) {
    saved[name] = process.env[name];
    process.env[name] = value;
  }
  app = loadApp();
});
afterAll(() => {
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

function expectNoValues(text: string): void {
  for (const value of BAD_VALUES) expect(text).not.toContain(value);
}

describe("a fresh app load with broken settings", () => {
  it("registers every function anyway, the timer on the default schedule (the host would drop an unparsable one)", () => {
    expect(app.functions.get("schedulePulls")?.trigger).toMatchObject({ type: "timerTrigger", schedule: "0 */5 * * * *" });
    expect(app.functions.has("health")).toBe(true);
    expect(app.hooks.filter((hook) => hook.hookName === "appStart")).toHaveLength(1);
  });

  it("answers an operator call 503 misconfigured with every bad setting's name and no value, and logs every problem once", async () => {
    app.clearLogs();
    const first = await app.http("listTenants", { method: "GET", url: "/api/tenants" });
    expect(first.status).toBe(503);
    expect(first.headers.get("cache-control")).toBe("no-store");
    const body = first.json<{ error: { code: string; settings: string[]; message: string } }>();
    expect(body.error.code).toBe("misconfigured");
    expect([...body.error.settings].sort()).toEqual([...BAD_NAMES].sort());
    expect(body.error.message).toContain(app.lastContext?.invocationId ?? "?");
    expectNoValues(first.body);

    // The harness runs no app start hook, so the first invocation logs the full report: one error naming every problem.
    const errors = app.logs.filter((line) => line.level === "error");
    expect(errors).toHaveLength(2);
    const report = errors[0]?.message ?? "";
    expect(report).toMatch(/^app settings are invalid \(6 problems\)/);
    for (const name of BAD_NAMES) expect(report).toContain(name);
    expect(report).toMatch(/MSSP_TENANT_ID still holds the all-zero GUID placeholder/);
    expect(report).toMatch(/KEY_VAULT_URL still holds a <…> placeholder/);
    expect(report).toMatch(/PULL_SCHEDULE .*step 99 of the hour field/);
    expect(errors[1]?.message).toMatch(/^misconfigured: this request refused until these app settings are fixed: /);
    expectNoValues(app.logs.map((line) => line.message).join("\n"));

    // Once: later calls log one line each, naming the settings.
    app.clearLogs();
    const tenantId = randomUUID();
    const second = await app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    expect(second.status).toBe(503);
    expect(app.logs.filter((line) => line.level === "error")).toHaveLength(1);
    expect(app.logs[0]?.message).toContain("MSSP_CLIENT_ID");
  });

  it("logs nothing more from the app start hook in this process (once per process)", async () => {
    const hook = app.hooks.find((entry) => entry.hookName === "appStart");
    const capture = captureConsole();
    try {
      await (hook?.callback as (context: unknown) => unknown)({ hookData: {} });
    } finally {
      capture.restore();
    }
    expect(capture.text()).toBe("");
  });

  it("shows a customer's admin a 503 page that says the service is misconfigured, with a reference, and no setting", async () => {
    const tenantId = randomUUID();
    const page = await app.http("consentStart", {
      method: "GET",
      url: `/api/consent/${tenantId}?exp=1&sig=x`,
      params: { tenantId },
    });
    expect(page.status).toBe(503);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    expect(page.body).toContain("This service is misconfigured");
    expect(page.body).toContain("Contoso Security");
    expect(page.body).toContain(app.lastContext?.invocationId ?? "?");
    for (const name of BAD_NAMES) expect(page.body).not.toContain(name);
    expectNoValues(page.body);

    const callback = await app.http("consentCallback", { method: "GET", url: "/api/consent/callback?code=c&state=s" });
    expect(callback.status).toBe(503);
    expect(callback.body).toContain("This service is misconfigured");
  });

  it("shows an operator's browser the same on the console, with a reference", async () => {
    const page = await app.http("consoleTenants", { method: "GET", url: "/api/console" });
    expect(page.status).toBe(503);
    expect(page.body).toContain("This service is misconfigured");
    expect(page.body).toContain(app.lastContext?.invocationId ?? "?");
    expectNoValues(page.body);
  });

  it("runs the timer without throwing and logs the refusal once per run", async () => {
    for (let run = 0; run < 2; run++) {
      app.clearLogs();
      await expect(app.timer("schedulePulls")).resolves.toBeUndefined();
      const errors = app.logs.filter((line) => line.level === "error");
      expect(errors).toHaveLength(1);
      expect(errors[0]?.message).toMatch(/^misconfigured: the pull fan-out refused until these app settings are fixed: .*MSSP_CLIENT_ID/);
    }
  });

  it("consumes queue messages without throwing (no retries, no poison): the next fan-out enqueues again", async () => {
    const tenantId = randomUUID();
    app.clearLogs();
    await expect(app.queue("pullTenant", JSON.stringify({ tenantId, enqueuedAt: new Date().toISOString() }))).resolves.toBeUndefined();
    await expect(app.queue("pullTenantPoisoned", JSON.stringify({ tenantId }))).resolves.toBeUndefined();
    expect(app.logs.filter((line) => line.level === "error").map((line) => line.message)).toEqual([
      expect.stringMatching(/^misconfigured: the pull of tenant .* refused/),
      "tenant pull failed repeatedly and was moved to the poison queue " + JSON.stringify({ tenantId }),
      expect.stringMatching(/^misconfigured: recording the poisoned pull refused/),
    ]);
  });

  it("answers /api/health 503 naming the settings part, without names or values (the route is anonymous)", async () => {
    const result = await app.http("health", { method: "GET", url: "/api/health" });
    expect(result.status).toBe(503);
    expect(result.json()).toMatchObject({
      status: "unhealthy",
      checks: { settings: { status: "unhealthy" }, storage: { status: "skipped" }, keyVault: { status: "skipped" } },
    });
    for (const name of BAD_NAMES) expect(result.body).not.toContain(name);
    expectNoValues(result.body);
  });
});
