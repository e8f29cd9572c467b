import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { badRequest, notFound } from "../shared/errors";
import { isGuid } from "../shared/validation";
import { readBodyText } from "./body";
import { json, operatorApi } from "./runtime";

const MAX_BODY_BYTES = 16 * 1024;

async function readJson(request: HttpRequest): Promise<unknown> {
  const text = await readBodyText(request, MAX_BODY_BYTES);
  if (text === undefined) throw badRequest("body_too_large", "The body must be at most 16 KiB.");
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw badRequest("invalid_json", "The body must be JSON, e.g. {\"tenantId\":\"<guid>\",\"displayName\":\"Contoso\"}.");
  }
}

export async function registerTenant(request: HttpRequest, context: InvocationContext) {
  return operatorApi(context, async ({ tenantAdmin }, log) => json(201, await tenantAdmin.register(await readJson(request), log)));
}

export async function listTenants(_request: HttpRequest, context: InvocationContext) {
  return operatorApi(context, async ({ tenantAdmin }) => json(200, { tenants: await tenantAdmin.list() }));
}

export async function getTenant(request: HttpRequest, context: InvocationContext) {
  return operatorApi(context, async ({ tenantAdmin }) => json(200, await tenantAdmin.get(request.params["tenantId"] ?? "")));
}

export async function offboardTenant(request: HttpRequest, context: InvocationContext) {
  return operatorApi(context, async ({ tenantAdmin }, log) =>
    json(200, await tenantAdmin.offboard(request.params["tenantId"] ?? "", log)),
  );
}

function tenantIdParam(request: HttpRequest): string {
  const tenantId = request.params["tenantId"] ?? "";
  if (!isGuid(tenantId)) throw badRequest("invalid_tenant_id", "The tenant id in the path must be a GUID.");
  return tenantId.toLowerCase();
}

export async function listDeadLetters(request: HttpRequest, context: InvocationContext) {
  return operatorApi(context, async ({ tenants, deadLetters }) => {
    const tenantId = tenantIdParam(request);
    if (!(await tenants.get(tenantId))) throw notFound("tenant_not_found", "No tenant with this id is registered.");
    return json(200, { deadLetters: await deadLetters.list(tenantId) });
  });
}

export async function redriveDeadLetters(request: HttpRequest, context: InvocationContext) {
  return operatorApi(context, async ({ redrive }, log) => json(200, await redrive.redrive(tenantIdParam(request), log)));
}

app.http("registerTenant", { route: "tenants", methods: ["POST"], authLevel: "function", handler: registerTenant });
app.http("listTenants", { route: "tenants", methods: ["GET"], authLevel: "function", handler: listTenants });
app.http("getTenant", { route: "tenants/{tenantId}", methods: ["GET"], authLevel: "function", handler: getTenant });
app.http("offboardTenant", { route: "tenants/{tenantId}", methods: ["DELETE"], authLevel: "function", handler: offboardTenant });
app.http("listDeadLetters", { route: "tenants/{tenantId}/dead-letters", methods: ["GET"], authLevel: "function", handler: listDeadLetters });
app.http("redriveDeadLetters", {
  route: "tenants/{tenantId}/dead-letters/redrive",
  methods: ["POST"],
  authLevel: "function",
  handler: redriveDeadLetters,
});
