import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from "jose";
import { jwtRefusalOf, type JwtRefusal } from "./jwtRefusal";
import type { Clock } from "../clock";
import type { HttpClient } from "../http/httpClient";

export interface VerifiedIdentity {
  tenantId: string;
  objectId: string;
  username: string;
}

/** Why an id token was refused. */
export type IdTokenRejection = JwtRefusal | "wrong_issuer" | "tenant_mismatch" | "nonce_mismatch";

/** An id token was refused; the message is safe to log (it never quotes the token). */
export class IdTokenRejectedError extends Error {
  constructor(readonly reason: IdTokenRejection) {
    super(`id token rejected: ${reason}`);
    this.name = "IdTokenRejectedError";
  }
}

const JWKS_CACHE_MS = 60 * 60_000;
/** Claims every id token must carry; `nonce` is checked on its own, against the session's. */
const REQUIRED_CLAIMS = ["exp", "iat", "tid"];


/**
 * MSAL Node decodes the id token without checking its signature, audience or issuer, so the
 * app does that itself before it trusts `tid` to decide whose refresh token it is storing.
 */
export class IdTokenValidator {
  private readonly jwksCache = new Map<string, { keys: JSONWebKeySet; until: number }>();

  constructor(
    private readonly http: HttpClient,
    private readonly authorityHost: string,
    private readonly clientId: string,
    private readonly clock: Clock,
  ) {}

  async validate(idToken: string, expected: { tenantId: string; nonce: string }): Promise<VerifiedIdentity> {
    const jwksUrl = `${this.authorityHost}/${expected.tenantId}/discovery/v2.0/keys`;
    const verify = async (keys: JSONWebKeySet) =>
      jwtVerify(idToken, createLocalJWKSet(keys), {
        audience: this.clientId,
        algorithms: ["RS256"],
        requiredClaims: REQUIRED_CLAIMS,
        clockTolerance: 300,
        currentDate: new Date(this.clock()),
      });
    // A key-fetch failure is an outage, not a bad token, so it is thrown as it is.
    const cachedKeys = await this.keys(jwksUrl, false);
    let payload;
    try {
      payload = (await verify(cachedKeys)).payload;
    } catch (error) {
      if ((error as { code?: unknown }).code !== "ERR_JWKS_NO_MATCHING_KEY") throw new IdTokenRejectedError(jwtRefusalOf(error));
      // Entra rotates signing keys; refetch once before refusing.
      const freshKeys = await this.keys(jwksUrl, true);
      try {
        payload = (await verify(freshKeys)).payload;
      } catch (retryError) {
        throw new IdTokenRejectedError(jwtRefusalOf(retryError));
      }
    }
    // One audience, ours: a token minted for several parties is not a sign-in to this app.
    if (typeof payload.aud !== "string") throw new IdTokenRejectedError("wrong_audience");
    const tid = typeof payload["tid"] === "string" ? payload["tid"].toLowerCase() : "";
    if (!tid) throw new IdTokenRejectedError("missing_claim");
    // Multi-tenant issuer rule: the issuer must be the authority's v2.0 issuer for the token's own tenant.
    if (payload.iss !== `${this.authorityHost}/${tid}/v2.0`) throw new IdTokenRejectedError("wrong_issuer");
    if (tid !== expected.tenantId.toLowerCase()) throw new IdTokenRejectedError("tenant_mismatch");
    // MSAL does not compare the nonce when it redeems a code: this is the only check.
    // Stryker disable next-line ConditionalExpression: a nonce that is not a string never equals the session's, which is one; the type test says so outright
    if (typeof payload["nonce"] !== "string" || payload["nonce"] !== expected.nonce) throw new IdTokenRejectedError("nonce_mismatch");
    const oid = typeof payload["oid"] === "string" ? payload["oid"] : "";
    const username = typeof payload["preferred_username"] === "string" ? payload["preferred_username"] : "";
    return { tenantId: tid, objectId: oid, username };
  }

  private async keys(url: string, refresh: boolean): Promise<JSONWebKeySet> {
    const cached = this.jwksCache.get(url);
    if (!refresh && cached && cached.until > this.clock()) return cached.keys;
    const response = await this.http.send(url, { method: "GET", timeoutMs: 15_000 });
    if (response.status !== 200) throw new Error(`signing keys unavailable (HTTP ${response.status})`);
    const keys = JSON.parse(response.body) as JSONWebKeySet;
    if (!Array.isArray(keys.keys)) throw new Error("signing keys document has no keys");
    this.jwksCache.set(url, { keys, until: this.clock() + JWKS_CACHE_MS });
    return keys;
  }
}
