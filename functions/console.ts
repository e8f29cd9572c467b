import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import type { ConsoleRequest, ConsoleRoute } from "../shared/console/operatorConsole";
import { assetResponse, CONSOLE_ASSETS } from "../shared/ui/assets";
import { readBodyText } from "./body";
import { consoleFlow } from "./runtime";

/**
 * The operator console (shared/console/): server-rendered pages and their two assets.
 * `authLevel: anonymous` because a browser has no function key: in Azure, App Service
 * authentication (Entra ID) is the gate and the app checks the Console.Operator role itself;
 * with no sign-in configured the console answers 503 (see shared/console/access.ts).
 */

function adapt(request: HttpRequest): ConsoleRequest {
  return { method: request.method, url: request.url, headers: request.headers, params: request.params, text: (maxBytes) => readBodyText(request, maxBytes) };
}

function handler(route: ConsoleRoute) {
  return (request: HttpRequest, context: InvocationContext) =>
    consoleFlow(context, ({ operatorConsole }, log) => operatorConsole.handle(route, adapt(request), log));
}

export const consoleTenants = handler("tenants");
export const consoleRegister = handler("register");
export const consoleTenant = handler("tenant");
export const consoleConsentLink = handler("consentLink");
export const consoleRevokeLink = handler("revokeLink");
export const consoleOffboard = handler("offboard");
export const consoleAudit = handler("audit");

// Static and public (no tenant data): served without the sign-in gate.
export async function consoleAssets(request: HttpRequest) {
  return assetResponse(CONSOLE_ASSETS, request.params["name"] ?? "");
}

app.http("consoleTenants", { route: "console", methods: ["GET"], authLevel: "anonymous", handler: consoleTenants });
app.http("consoleRegister", { route: "console/register", methods: ["GET", "POST"], authLevel: "anonymous", handler: consoleRegister });
app.http("consoleTenant", { route: "console/tenants/{tenantId}", methods: ["GET"], authLevel: "anonymous", handler: consoleTenant });
app.http("consoleConsentLink", {
  route: "console/tenants/{tenantId}/consent-link",
  methods: ["POST"],
  authLevel: "anonymous",
  handler: consoleConsentLink,
});
app.http("consoleRevokeLink", {
  route: "console/tenants/{tenantId}/links/{linkId}/revoke",
  methods: ["POST"],
  authLevel: "anonymous",
  handler: consoleRevokeLink,
});
app.http("consoleOffboard", { route: "console/tenants/{tenantId}/offboard", methods: ["POST"], authLevel: "anonymous", handler: consoleOffboard });
app.http("consoleAudit", { route: "console/audit", methods: ["GET"], authLevel: "anonymous", handler: consoleAudit });
app.http("consoleAssets", { route: "console/assets/{name}", methods: ["GET"], authLevel: "anonymous", handler: consoleAssets });
