import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { checkHealth, HealthMonitor } from "../shared/health/healthCheck";
import { getServices } from "../shared/services";
import { json } from "./runtime";

/**
 * GET /api/health, anonymous: 200 when the settings are valid and Table Storage and Key Vault
 * answer, else 503, with `{status, checks: {settings, storage, keyVault}}` naming the failing
 * part, plus `notifications` when a webhook is configured (informative: it never makes a 503).
 * No tenant data, no setting value, no secret (shared/health/healthCheck.ts).
 */
const monitor = new HealthMonitor(() => checkHealth(getServices));

export async function health(_request: HttpRequest, context: InvocationContext) {
  const report = await monitor.check();
  if (report.status !== "healthy") {
    const failing = Object.entries(report.checks).filter(([, check]) => check.status === "unhealthy");
    context.warn(`health check unhealthy: ${failing.map(([part, check]) => `${part} ${check.reason ?? ""}`.trim()).join("; ")}`);
  }
  return json(report.status === "healthy" ? 200 : 503, report);
}

app.http("health", { route: "health", methods: ["GET"], authLevel: "anonymous", handler: health });
