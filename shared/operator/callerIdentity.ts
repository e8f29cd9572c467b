import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTPayload } from "jose";
import { jwtRefusalOf, type JwtRefusal } from "../identity/jwtRefusal";
import type { Clock } from "../clock";
import type { AppConfig } from "../config";
import { decideAccess, decodeClientPrincipal, OPERATOR_ROLE, type ClientPrincipal, type HeaderReader } from "../console/access";
import { AppError } from "../errors";
import type { HttpClient } from "../http/httpClient";

/**
 * Who calls the operator API (`/api/tenants*`).
 *
 * The routes are `authLevel: function`: the Functions host checks the function key before the app
 * runs. A key is shared and names nobody, so the API also accepts Microsoft Entra ID callers and
 * names them, in this order:
 *
 * 1. **App Service authentication (EasyAuth)**, when it is on (WEBSITE_AUTH_ENABLED=True) and the
 *    platform passed a principal: the console's rules exactly (Entra ID, the MSSP tenant, the
 *    `Console.Operator` app role; `decideAccess`). A person signed in to the console, or an
 *    application whose bearer token EasyAuth validated.
 * 2. **A bearer token** (`Authorization: Bearer …`) the app validates itself against Entra ID's
 *    signing keys: issued by the MSSP tenant (v2.0 or v1 issuer), for this app
 *    (`{clientId}` or `api://{clientId}`), in date, with the `Console.Operator` role. App-only tokens
 *    (client credentials) name the application, delegated ones the user.
 * 3. **Nothing offered**: the function-key holder, unnamed; refused when OPERATOR_REQUIRE_ENTRA is
 *    true. The local sandbox has neither keys nor sign-in: its caller is the sandbox operator.
 *
 * A refused identity is never downgraded to the function key: an invalid token is a 401, a valid
 * one without the role (or from another tenant) a 403. No message quotes the token.
 */

export type { HeaderReader };

export interface OperatorActor {
  kind: "entra_user" | "entra_app" | "function_key" | "sandbox";
  /** Object id of the user, application (client) id of the app, "function-key" or "sandbox". */
  id: string;
  /** Display name, UPN or application name: trimmed, at most 128 characters. */
  name: string;
}

export const FUNCTION_KEY_ACTOR: Readonly<OperatorActor> = { kind: "function_key", id: "function-key", name: "Function key holder" };
export const SANDBOX_ACTOR: Readonly<OperatorActor> = { kind: "sandbox", id: "sandbox", name: "Sandbox operator" };

/** Why a caller was refused; in the error message and the log line, never the token. */
export type OperatorRefusal =
  /** 401 invalid_operator_token */
  | JwtRefusal
  | "wrong_issuer"
  /** 401 operator_identity_required */
  | "identity_required"
  /** 403 operator_forbidden */
  | "missing_role"
  | "other_tenant"
  | "not_entra_id";

/** A refused caller: an AppError (its status and code are the answer) that also says why, for the log. */
export class OperatorIdentityError extends AppError {
  constructor(code: string, message: string, status: number, readonly reason: OperatorRefusal) {
    super(code, message, status);
  }
}

const FORBIDDEN_MESSAGES: Record<"missing_role" | "other_tenant" | "not_entra_id", string> = {
  missing_role: `The caller is signed in but does not hold the ${OPERATOR_ROLE} app role (missing_role).`,
  other_tenant: "The caller does not belong to the MSSP's own Microsoft Entra ID tenant (other_tenant).",
  not_entra_id: "The caller did not sign in with Microsoft Entra ID (not_entra_id).",
};

function forbidden(reason: "missing_role" | "other_tenant" | "not_entra_id"): OperatorIdentityError {
  return new OperatorIdentityError("operator_forbidden", FORBIDDEN_MESSAGES[reason], 403, reason);
}

function invalidToken(reason: OperatorRefusal): OperatorIdentityError {
  return new OperatorIdentityError(
    "invalid_operator_token",
    `The bearer token is not valid for this API (${reason}). Send an access token for api://{client id}/.default issued by the MSSP's tenant.`,
    401,
    reason,
  );
}

export interface OperatorIdentityDeps {
  config: Pick<AppConfig, "easyAuthEnabled" | "msspTenantId" | "operatorRequireEntra" | "localDev">;
  /** Validates bearer tokens; one per process, since it caches Entra ID's signing keys. */
  tokens: Pick<OperatorTokenVerifier, "verify">;
}

/** The operator API's caller, or an OperatorIdentityError (401/403) that must end the request before any change. */
export async function identifyOperator(headers: HeaderReader, deps: OperatorIdentityDeps): Promise<OperatorActor> {
  const { config } = deps;
  if (config.easyAuthEnabled && headers.get("x-ms-client-principal")) {
    const decision = decideAccess({ easyAuthEnabled: true, sandbox: false, msspTenantId: config.msspTenantId }, headers);
    if (decision.kind === "forbidden") throw forbidden(decision.reason);
    if (decision.kind === "allowed") {
      const principal = decodeClientPrincipal(headers.get("x-ms-client-principal"));
      if (principal) return principalActor(principal, decision.operator.name);
    }
    // An unreadable principal is no sign-in, as in the console: the caller offered nothing usable.
  }
  const authorization = headers.get("authorization");
  if (authorization !== null && /^bearer(\s|$)/i.test(authorization.trim())) {
    const token = /^bearer\s+([A-Za-z0-9_.~+/=-]+)$/i.exec(authorization.trim())?.[1];
    if (!token) throw invalidToken("invalid");
    return deps.tokens.verify(token);
  }
  if (config.localDev.sandbox) return { ...SANDBOX_ACTOR };
  if (config.operatorRequireEntra) {
    throw new OperatorIdentityError(
      "operator_identity_required",
      "This operator API requires a Microsoft Entra ID caller (OPERATOR_REQUIRE_ENTRA): send Authorization: Bearer with an access token for api://{client id}/.default, or sign in through App Service authentication.",
      401,
      "identity_required",
    );
  }
  return { ...FUNCTION_KEY_ACTOR };
}

// ---- naming ------------------------------------------------------------------------------------

const MAX_NAME = 128;

/** Trimmed, without control characters, at most 128 characters; `fallback` when nothing is left. */
function clean(value: string | undefined, fallback: string): string {
  const text = (value ?? "").replace(/[\u0000-\u001f\u007f-\u009f]/g, "").trim().slice(0, MAX_NAME).trim();
  return text || fallback;
}

interface CallerClaims {
  oid?: string | undefined;
  sub?: string | undefined;
  appId?: string | undefined;
  idtyp?: string | undefined;
  scp?: string | undefined;
  appName?: string | undefined;
}

/**
 * App-only (client credentials) or a user? `idtyp` says so when the app registration emits it;
 * without it, an app-only token has no delegated scopes and its `oid` is its `sub` (the service
 * principal), while a user's `sub` is pairwise and differs from the `oid`.
 */
function isApplication(claims: CallerClaims): boolean {
  if (claims.idtyp !== undefined) return claims.idtyp.toLowerCase() === "app";
  return claims.appId !== undefined && claims.scp === undefined && (claims.oid === undefined || claims.oid === claims.sub);
}

function applicationActor(claims: CallerClaims): OperatorActor {
  const id = clean(claims.appId ?? claims.oid ?? claims.sub, "");
  if (!id) throw invalidToken("missing_claim");
  return { kind: "entra_app", id, name: clean(claims.appName, `Application ${id}`) };
}

const OID_CLAIMS = ["oid", "http://schemas.microsoft.com/identity/claims/objectidentifier"];
const SUB_CLAIMS = ["sub", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"];
const UPN_CLAIMS = ["preferred_username", "upn", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"];
const SCOPE_CLAIMS = ["scp", "http://schemas.microsoft.com/identity/claims/scope"];

/** An actor from an EasyAuth principal that passed the console's rules; `userName` is the console's choice of name. */
function principalActor(principal: ClientPrincipal, userName: string): OperatorActor {
  const claim = (types: readonly string[]): string | undefined =>
    principal.claims.find((c) => types.includes(c.typ) && c.val.trim() !== "")?.val.trim();
  const claims: CallerClaims = {
    oid: claim(OID_CLAIMS),
    sub: claim(SUB_CLAIMS),
    appId: claim(["azp", "appid"]),
    idtyp: claim(["idtyp"]),
    scp: claim(SCOPE_CLAIMS),
    appName: claim(["app_displayname"]),
  };
  if (isApplication(claims)) return applicationActor(claims);
  const id = clean(claims.oid ?? claims.sub ?? claim(UPN_CLAIMS), userName);
  return { kind: "entra_user", id, name: clean(userName, "Signed-in user") };
}

// ---- bearer tokens -----------------------------------------------------------------------------

/** Entra ID tokens are a few kilobytes; anything far larger is refused before it is parsed. */
const MAX_TOKEN_LENGTH = 16 * 1024;
const JWKS_CACHE_MS = 60 * 60_000;
/** An unknown key id refetches the keys (Entra rotates them), but at most this often. */
const JWKS_REFETCH_COOLDOWN_MS = 5 * 60_000;
const JWKS_TIMEOUT_MS = 10_000;
const JWKS_MAX_BYTES = 256 * 1024;
/** Small clock skew between Entra ID and this host. */
const CLOCK_TOLERANCE_SECONDS = 120;
/** The v1 token issuer (access tokens of an app registration that accepts v1 tokens, the default). */
const V1_ISSUER_HOST = "https://sts.windows.net";

function stringClaim(payload: JWTPayload, name: string): string | undefined {
  const value = payload[name];
  return typeof value === "string" && value.trim() !== "" ? value.trim() : undefined;
}


export interface OperatorTokenVerifierOptions {
  http: HttpClient;
  clock: Clock;
  /** ENTRA_AUTHORITY_HOST, e.g. https://login.microsoftonline.com. */
  authorityHost: string;
  /** MSSP_CLIENT_ID: the API is this app registration. */
  clientId: string;
  msspTenantId: string;
}

/**
 * Validates an operator's bearer token with jose against the MSSP tenant's signing keys, fetched
 * through the app's HTTP client (timeout, size limit), cached for an hour and refetched at most
 * every five minutes for an unknown key id.
 */
export class OperatorTokenVerifier {
  private cached: { keys: JSONWebKeySet; until: number; fetchedAt: number } | undefined;
  private inFlight: Promise<JSONWebKeySet> | undefined;

  constructor(private readonly options: OperatorTokenVerifierOptions) {}

  async verify(token: string): Promise<OperatorActor> {
    if (token.length > MAX_TOKEN_LENGTH || token.split(".").length !== 3) throw invalidToken("invalid");
    const { clientId, authorityHost } = this.options;
    const msspTenantId = this.options.msspTenantId.toLowerCase();
    const verify = async (keys: JSONWebKeySet) =>
      jwtVerify(token, createLocalJWKSet(keys), {
        audience: [clientId, `api://${clientId}`],
        algorithms: ["RS256"],
        requiredClaims: ["exp", "iat", "tid"],
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
        currentDate: new Date(this.options.clock()),
      });
    let payload: JWTPayload;
    try {
      payload = (await verify(await this.keys(false))).payload;
    } catch (error) {
      if (error instanceof AppError) throw error;
      if ((error as { code?: unknown }).code !== "ERR_JWKS_NO_MATCHING_KEY") throw invalidToken(jwtRefusalOf(error));
      try {
        payload = (await verify(await this.keys(true))).payload;
      } catch (retryError) {
        if (retryError instanceof AppError) throw retryError;
        throw invalidToken(jwtRefusalOf(retryError));
      }
    }
    // One audience, this API: a token minted for several parties is not a call to it.
    if (typeof payload.aud !== "string") throw invalidToken("wrong_audience");
    const tid = stringClaim(payload, "tid")?.toLowerCase();
    if (!tid) throw invalidToken("missing_claim");
    // The issuer must be Entra's (v2.0 or v1) for the token's own tenant, then that tenant must be the MSSP's.
    if (payload.iss !== `${authorityHost}/${tid}/v2.0` && payload.iss !== `${V1_ISSUER_HOST}/${tid}/`) throw invalidToken("wrong_issuer");
    if (tid !== msspTenantId) throw forbidden("other_tenant");
    const roles = Array.isArray(payload["roles"]) ? payload["roles"] : [];
    if (!roles.includes(OPERATOR_ROLE)) throw forbidden("missing_role");

    const claims: CallerClaims = {
      oid: stringClaim(payload, "oid"),
      sub: stringClaim(payload, "sub"),
      appId: stringClaim(payload, "azp") ?? stringClaim(payload, "appid"),
      idtyp: stringClaim(payload, "idtyp"),
      scp: stringClaim(payload, "scp"),
      appName: stringClaim(payload, "app_displayname"),
    };
    if (isApplication(claims)) return applicationActor(claims);
    if (!claims.oid) throw invalidToken("missing_claim");
    const name = stringClaim(payload, "name") ?? stringClaim(payload, "preferred_username") ?? stringClaim(payload, "upn");
    return { kind: "entra_user", id: clean(claims.oid, ""), name: clean(name, "Entra ID user") };
  }

  private async keys(refresh: boolean): Promise<JSONWebKeySet> {
    const now = this.options.clock();
    const cached = this.cached;
    if (cached && (refresh ? now - cached.fetchedAt < JWKS_REFETCH_COOLDOWN_MS : cached.until > now)) return cached.keys;
    this.inFlight ??= this.fetchKeys()
      .catch((error: unknown) => {
        // Entra ID's keys rotate over weeks: during an outage the keys last read still verify
        // today's tokens, so an expired cache is served rather than every caller refused.
        if (cached && !refresh) return cached.keys;
        throw error;
      })
      .finally(() => {
        this.inFlight = undefined;
      });
    return this.inFlight;
  }

  private async fetchKeys(): Promise<JSONWebKeySet> {
    const url = `${this.options.authorityHost}/${this.options.msspTenantId}/discovery/v2.0/keys`;
    const outage = (cause?: unknown) =>
      new AppError("signing_keys_unavailable", "Microsoft Entra ID's signing keys could not be read; try again shortly.", 503, { cause });
    let keys: JSONWebKeySet;
    try {
      const response = await this.options.http.send(url, { method: "GET", timeoutMs: JWKS_TIMEOUT_MS, maxResponseBytes: JWKS_MAX_BYTES });
      if (response.status !== 200) throw outage();
      keys = JSON.parse(response.body) as JSONWebKeySet;
    } catch (error) {
      throw error instanceof AppError ? error : outage(error);
    }
    if (typeof keys !== "object" || keys === null || !Array.isArray(keys.keys)) throw outage();
    const now = this.options.clock();
    this.cached = { keys, until: now + JWKS_CACHE_MS, fetchedAt: now };
    return keys;
  }
}
