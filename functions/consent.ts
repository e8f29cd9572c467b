import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from "@azure/functions";
import type { ConsentResponse } from "../shared/consent/consentFlow";
import { assetResponse, CONSENT_ASSETS } from "../shared/ui/assets";
import { HSTS_HEADER } from "../shared/ui/page";
import { browserFlow, htmlResponse } from "./runtime";

function toHttp(response: ConsentResponse): HttpResponseInit {
  if (response.kind === "redirect") {
    return {
      status: 302,
      headers: { Location: response.location, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", ...HSTS_HEADER },
      ...(response.cookies?.length ? { cookies: response.cookies } : {}),
    };
  }
  return htmlResponse(response.page);
}

export async function consentStart(request: HttpRequest, context: InvocationContext) {
  return browserFlow(context, async ({ consent }, log) =>
    toHttp(
      await consent.start(
        request.params["tenantId"] ?? "",
        { link: request.query.get("link"), exp: request.query.get("exp"), sig: request.query.get("sig") },
        log,
      ),
    ),
  );
}

export async function consentCallback(request: HttpRequest, context: InvocationContext) {
  return browserFlow(context, async ({ consent }, log) => toHttp(await consent.callback(request.query, request.headers.get("cookie"), log)));
}

/** The consent pages' stylesheet and copy script: static, public, same origin (their CSP allows only 'self'). */
export async function consentAssets(request: HttpRequest) {
  return assetResponse(CONSENT_ASSETS, request.params["name"] ?? "");
}

// Anonymous: the customer's admin has no function key. The guid constraint keeps the start
// route from ever shadowing consent/callback.
app.http("consentStart", { route: "consent/{tenantId:guid}", methods: ["GET"], authLevel: "anonymous", handler: consentStart });
app.http("consentCallback", { route: "consent/callback", methods: ["GET"], authLevel: "anonymous", handler: consentCallback });
app.http("consentAssets", { route: "consent/assets/{name}", methods: ["GET"], authLevel: "anonymous", handler: consentAssets });
