import { app, type HttpRequest, type InvocationContext } from "@azure/functions";
import { badRequest, notFound } from "../shared/errors";
import { isGuid } from "../shared/validation";
import { readBodyText } from "./body";
import { operatorApi } from "./operatorApi";
import { json } from "./runtime";

const MAX_BODY_BYTES = 16 * 1024;

async function readJson(request: HttpRequest, options: { optional?: boolean } = {}): Promise<unknown> {
  const text = await readBodyText(request, MAX_BODY_BYTES);
  if (text === undefined) throw badRequest("body_too_large", "The body must be at most 16 KiB.");
  if (options.optional && text.trim() === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw badRequest("invalid_json", "The body must be JSON, e.g. {\"tenantId\":\"<guid>\",\"displayName\":\"Contoso\"}.");
  }
}

export async function registerTenant(request: HttpRequest, context: InvocationContext) {
  return operatorApi(request, context, async ({ tenantAdmin }, log, actor) => json(201, await tenantAdmin.register(await readJson(request), actor, log)));
}

export async function listTenants(request: HttpRequest, context: InvocationContext) {
  return operatorApi(request, context, async ({ tenantAdmin }) => json(200, { tenants: await tenantAdmin.list() }));
}

export async function getTenant(request: HttpRequest, context: InvocationContext) {
  // Reading a tenant never mints a consent link: only registration and a re-consent request do.
  return operatorApi(request, context, async ({ tenantAdmin }) => json(200, await tenantAdmin.view(request.params["tenantId"] ?? "")));
}

export async function offboardTenant(request: HttpRequest, context: InvocationContext) {
  return operatorApi(request, context, async ({ tenantAdmin }, log, actor) =>
    json(200, await tenantAdmin.offboard(request.params["tenantId"] ?? "", actor, log)),
  );
}

export async function requestReconsent(request: HttpRequest, context: InvocationContext) {
  return operatorApi(request, context, async ({ tenantAdmin }, log, actor) =>
    json(201, await tenantAdmin.requestReconsent(request.params["tenantId"] ?? "", await readJson(request, { optional: true }), actor, log)),
  );
}

export async function listConsentLinks(request: HttpRequest, context: InvocationContext) {
  return operatorApi(request, context, async ({ tenantAdmin }) => json(200, { links: await tenantAdmin.links(request.params["tenantId"] ?? "") }));
}

export async function revokeConsentLink(request: HttpRequest, context: InvocationContext) {
  return operatorApi(request, context, async ({ tenantAdmin }, log, actor) =>
    json(200, await tenantAdmin.revokeLink(request.params["tenantId"] ?? "", request.params["linkId"] ?? "", actor, log)),
  );
}

export async function listAudit(request: HttpRequest, context: InvocationContext) {
  return operatorApi(request, context, async ({ tenantAdmin }) => json(200, { entries: await tenantAdmin.auditEntries(request.query) }));
}

function tenantIdParam(request: HttpRequest): string {
  const tenantId = request.params["tenantId"] ?? "";
  if (!isGuid(tenantId)) throw badRequest("invalid_tenant_id", "The tenant id in the path must be a GUID.");
  return tenantId.toLowerCase();
}

export async function listDeadLetters(request: HttpRequest, context: InvocationContext) {
  return operatorApi(request, context, async ({ tenants, deadLetters }) => {
    const tenantId = tenantIdParam(request);
    if (!(await tenants.get(tenantId))) throw notFound("tenant_not_found", "No tenant with this id is registered.");
    return json(200, { deadLetters: await deadLetters.list(tenantId) });
  });
}

export async function redriveDeadLetters(request: HttpRequest, context: InvocationContext) {
  return operatorApi(request, context, async ({ redrive }, log) => json(200, await redrive.redrive(tenantIdParam(request), log)));
}

app.http("registerTenant", { route: "tenants", methods: ["POST"], authLevel: "function", handler: registerTenant });
app.http("listTenants", { route: "tenants", methods: ["GET"], authLevel: "function", handler: listTenants });
app.http("getTenant", { route: "tenants/{tenantId}", methods: ["GET"], authLevel: "function", handler: getTenant });
app.http("offboardTenant", { route: "tenants/{tenantId}", methods: ["DELETE"], authLevel: "function", handler: offboardTenant });
app.http("requestReconsent", { route: "tenants/{tenantId}/reconsent", methods: ["POST"], authLevel: "function", handler: requestReconsent });
app.http("listConsentLinks", { route: "tenants/{tenantId}/links", methods: ["GET"], authLevel: "function", handler: listConsentLinks });
app.http("revokeConsentLink", { route: "tenants/{tenantId}/links/{linkId}", methods: ["DELETE"], authLevel: "function", handler: revokeConsentLink });
app.http("listAudit", { route: "audit", methods: ["GET"], authLevel: "function", handler: listAudit });
app.http("listDeadLetters", { route: "tenants/{tenantId}/dead-letters", methods: ["GET"], authLevel: "function", handler: listDeadLetters });
app.http("redriveDeadLetters", {
  route: "tenants/{tenantId}/dead-letters/redrive",
  methods: ["POST"],
  authLevel: "function",
  handler: redriveDeadLetters,
});
