/**
 * GET /api/health against the real app (fake Key Vault, suite Azurite): 200 when the settings are
 * valid and storage and Key Vault answer, 503 naming the failing part otherwise; never tenant
 * data, a setting value or a secret. Also: why the Bicep sets no healthCheckPath.
 */
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inject } from "vitest";
import { loadConfig } from "../../shared/config";
import { checkHealth, HealthMonitor, type HealthReport } from "../../shared/health/healthCheck";
import { createServices } from "../../shared/services";
import { readBicep, REPO_ROOT } from "../infra/bicepText";
import { registerTenant, secretsOf, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

let env: TestEnvironment;

beforeAll(async () => {
  env = await startTestEnvironment();
});
afterAll(async () => {
  await env?.stop();
});

async function health() {
  const result = await env.app.http("health", { method: "GET", url: "/api/health" });
  return { result, report: result.json<HealthReport>() };
}

/** A loopback port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== "object" || address === null) throw new Error("no port");
  return address.port;
}

describe("GET /api/health", () => {
  it("is an anonymous GET on /api/health", () => {
    const trigger = env.app.functions.get("health")?.trigger;
    expect(trigger).toMatchObject({ type: "httpTrigger", route: "health", methods: ["GET"], authLevel: "anonymous" });
  });

  // First: a healthy answer is reused for a few seconds, an unhealthy one never.
  it("answers 503 naming keyVault while the vault is down", async () => {
    // Storage warmed first (its tables exist), as in any running app.
    expect((await env.app.http("listTenants", { method: "GET", url: "/api/tenants" })).status).toBe(200);
    env.vault.setDown(true);
    try {
      const { result, report } = await health();
      expect(result.status, result.body).toBe(503);
      expect(result.headers.get("cache-control")).toBe("no-store");
      expect(report.status).toBe("unhealthy");
      expect(report.checks.settings.status).toBe("healthy");
      expect(report.checks.storage.status).toBe("healthy");
      expect(report.checks.keyVault).toMatchObject({ status: "unhealthy", reason: expect.any(String) });
      expect(result.body).not.toContain(env.vault.url);
      const warning = env.app.logs.find((line) => line.functionName === "health" && line.level === "warning");
      expect(warning?.message).toMatch(/^health check unhealthy: keyVault /);
    } finally {
      env.vault.setDown(false);
    }
  });

  it("answers 200 when the settings are valid and storage and Key Vault answer, with no tenant data or secret", async () => {
    const { tenantId } = await registerTenant(env, undefined, "Fabrikam Health Probe");
    const { result, report } = await health();
    expect(result.status, result.body).toBe(200);
    expect(result.headers.get("cache-control")).toBe("no-store");
    expect(report).toMatchObject({
      status: "healthy",
      checks: { settings: { status: "healthy" }, storage: { status: "healthy" }, keyVault: { status: "healthy" } },
    });
    expect(Object.keys(report)).toEqual(["status", "checks"]);
    for (const forbidden of [tenantId, "Fabrikam", env.env["ALERTS_CONTAINER"] as string, env.clientId, ...secretsOf(env)]) {
      expect(result.body).not.toContain(forbidden);
    }
  });

  it("answers 503 naming storage when AzureWebJobsStorage points at a closed port", async () => {
    // The app's process services are built once from the environment above, so this runs the
    // same check the function runs, on services whose storage is unreachable.
    const port = await closedPort();
    const unreachable = inject("storageConnectionString").replace(/127\.0\.0\.1:\d+/g, `127.0.0.1:${port}`);
    const services = createServices(loadConfig({ ...process.env, AzureWebJobsStorage: unreachable }));
    const report = await checkHealth(() => services, { timeoutMs: 3_000 });
    expect(report.status).toBe("unhealthy");
    expect(report.checks.settings.status).toBe("healthy");
    expect(report.checks.keyVault.status).toBe("healthy");
    expect(report.checks.storage).toMatchObject({ status: "unhealthy", reason: expect.stringMatching(/^(no answer within 3 s|unreachable)/) });
    expect(JSON.stringify(report)).not.toContain(String(port));
  });

  it("shares one check between concurrent calls and reuses only a healthy result, briefly", async () => {
    let now = 0;
    let runs = 0;
    let next: HealthReport["status"] = "unhealthy";
    const report = (): HealthReport => ({
      status: next,
      checks: { settings: { status: "healthy" }, storage: { status: "healthy" }, keyVault: { status: next } },
    });
    const monitor = new HealthMonitor(async () => (runs++, report()), 10_000, () => now);
    await Promise.all([monitor.check(), monitor.check(), monitor.check()]);
    expect(runs).toBe(1);
    await monitor.check();
    expect(runs).toBe(2); // unhealthy: checked again
    next = "healthy";
    await monitor.check();
    await monitor.check();
    expect(runs).toBe(3); // healthy: reused
    now += 10_001;
    await monitor.check();
    expect(runs).toBe(4);
  });
});

describe("platform health check (Bicep)", () => {
  it("sets no healthCheckPath: the site runs on Flex Consumption, which does not support the platform health check (docs/reference.md)", () => {
    const bicep = readBicep("modules/functionapp.bicep");
    expect(bicep.code).toMatch(/tier: 'FlexConsumption'/);
    expect(bicep.code).not.toMatch(/healthCheckPath/);
    const reference = readFileSync(join(REPO_ROOT, "docs", "reference.md"), "utf8");
    expect(reference).toMatch(/GET \/api\/health/);
    expect(reference).toMatch(/healthCheckPath/);
    expect(reference).toMatch(/Flex Consumption/);
  });
});
