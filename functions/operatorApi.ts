import type { HttpRequest, HttpResponseInit, InvocationContext } from "@azure/functions";
import { ConfigError } from "../shared/config";
import { AppError } from "../shared/errors";
import { misconfiguredBody } from "../shared/health/misconfiguration";
import type { Logger } from "../shared/logging";
import { identifyOperator, OperatorIdentityError, OperatorTokenVerifier, type OperatorActor, type OperatorIdentityDeps } from "../shared/operator/callerIdentity";
import type { Services } from "../shared/services";
import { guarded, json, logFailure, type Handler } from "./runtime";

/** An operator API handler: it runs only once the caller is known, and is told who it is. */
export type OperatorHandler = (services: Services, log: Logger, actor: OperatorActor) => Promise<HttpResponseInit>;

/** One bearer-token verifier per process services: it caches Entra ID's signing keys. */
const tokenVerifiers = new WeakMap<Services, OperatorTokenVerifier>();

function operatorIdentityDeps(services: Services): OperatorIdentityDeps {
  let tokens = tokenVerifiers.get(services);
  if (!tokens) {
    const { config, http, clock } = services;
    tokens = new OperatorTokenVerifier({ http, clock, authorityHost: config.entraAuthorityHost, clientId: config.clientId, msspTenantId: config.msspTenantId });
    tokenVerifiers.set(services, tokens);
  }
  return { config: services.config, tokens };
}

/**
 * Runs an operator API handler: first the caller is identified (shared/operator/callerIdentity.ts)
 * and logged, so nothing changes for a refused one; AppErrors become their 4xx/5xx JSON, anything
 * else an opaque 500.
 */
export function operatorApi(request: HttpRequest, context: InvocationContext, run: OperatorHandler): Promise<HttpResponseInit> {
  const identified: Handler = async (services, log) => {
    // A browser page of another site must not drive the API with a signed-in operator's cookies
    // (and a leaked key): browsers say so in Sec-Fetch-Site; API clients send no such header.
    if (request.headers.get("sec-fetch-site") === "cross-site") {
      log.warn("operator request refused", { code: "cross_site_request", status: 403 });
      throw new AppError("cross_site_request", "The operator API does not take requests from another site's pages.", 403);
    }
    let actor: OperatorActor;
    try {
      actor = await identifyOperator(request.headers, operatorIdentityDeps(services));
    } catch (error) {
      if (error instanceof OperatorIdentityError) {
        log.warn("operator request refused", { code: error.code, status: error.status, reason: error.reason });
      }
      throw error;
    }
    log.info("operator request", { actorKind: actor.kind, actorId: actor.id, actorName: actor.name });
    return run(services, log, actor);
  };
  return guarded(context, identified, (error) => {
    if (error instanceof AppError) return json(error.status, { error: { code: error.code, message: error.message } });
    logFailure(context, error);
    if (error instanceof ConfigError) return json(503, misconfiguredBody(error, context.invocationId));
    return json(500, {
      error: { code: "internal_error", message: `The request failed. Invocation id: ${context.invocationId}.` },
    });
  });
}

