import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import type { ServerResponse } from "node:http";
import { exportJWK, generateKeyPair, jwtVerify, SignJWT, type GenerateKeyPairResult, type JWK } from "jose";
import {
  escapeHtml,
  FakeHttpsServer,
  isRecord,
  parseJsonObject,
  redirect,
  sendEmpty,
  sendHtml,
  sendJson,
  type FakeRequest,
  type TlsMaterial,
} from "./http";

/**
 * Stand-in for the Microsoft identity platform v2.0 endpoints, strict where Entra is strict
 * (exact redirect URIs, one-time codes, PKCE, tenant-bound codes) so the app's protocol
 * mistakes fail here instead of in production. See protocol.md §1–3 for the behaviour copied.
 */

export const DEFENDER_RESOURCE = "https://api.securitycenter.microsoft.com";

export interface FakeEntraClient {
  clientId: string;
  clientSecret: string;
  redirectUris: string[];
}

export interface FakeEntraOptions extends TlsMaterial {
  clients: FakeEntraClient[];
  accessTokenLifetimeSeconds?: number;
  /** Milliseconds since the epoch, like Date.now. */
  clock?: () => number;
}

export interface ConsentUser {
  oid?: string;
  preferredUsername?: string;
  name?: string;
  /** `tid` in the issued tokens; lets a test play an admin from another tenant than the one in the URL. */
  homeTenantId?: string;
}

export type ConsentBehaviour =
  | { kind: "approve"; user?: ConsentUser }
  | { kind: "deny"; error: string; errorDescription?: string };

export interface TokenFailure {
  status: number;
  error: string;
  errorCode?: number;
  suberror?: string;
}

export type IdTokenOverride = Record<string, unknown> | { badSignature: true };

export interface EntraStats {
  authorizeRequests: number;
  tokenRequests: { authorization_code: number; refresh_token: number };
}

export interface VerifiedAccessToken {
  tid: string;
  aud: string;
  scp: string;
  exp: number;
}

interface ResolvedUser {
  oid: string;
  tid: string;
  preferredUsername: string;
  name: string;
}

interface CodeGrant {
  clientId: string;
  redirectUri: string;
  pathTenant: string;
  codeChallenge: string;
  nonce?: string;
  scopes: string[];
  user: ResolvedUser;
  issuedAt: number;
  redeemed: boolean;
}

interface RefreshGrant {
  clientId: string;
  user: ResolvedUser;
  scopes: string[];
  issuedAt: number;
  revoked: boolean;
}

interface CountedFailure {
  failure: TokenFailure;
  remaining: number;
}

type KeyPair = GenerateKeyPairResult;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const CODE_LIFETIME_MS = 10 * 60_000;
const REFRESH_INACTIVITY_MS = 90 * 24 * 3600_000;
const ID_TOKEN_LIFETIME_S = 3600;
const OIDC_SCOPES = new Set(["openid", "profile", "email", "offline_access"]);

class TokenEndpointError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly code: number,
    message: string,
    readonly suberror?: string,
  ) {
    super(message);
  }
}

export class FakeEntra extends FakeHttpsServer {
  readonly stats: EntraStats = { authorizeRequests: 0, tokenRequests: { authorization_code: 0, refresh_token: 0 } };

  private readonly clients: Map<string, FakeEntraClient>;
  private readonly accessTokenLifetimeSeconds: number;
  private clock: () => number;
  private signingKey: KeyPair | undefined;
  /** Signs "bad signature" id tokens: same kid, different key, so only a real verification notices. */
  private impostorKey: KeyPair | undefined;
  private publicJwk: JWK | undefined;
  private readonly kid = randomBytes(12).toString("base64url");

  private readonly consent = new Map<string, ConsentBehaviour>();
  private readonly codes = new Map<string, CodeGrant>();
  private readonly refreshTokens = new Map<string, RefreshGrant>();
  private readonly refreshFailures = new Map<string, CountedFailure>();
  private allTokenFailure: CountedFailure | undefined;
  private readonly idOverrides = new Map<string, { override: IdTokenOverride; remaining: number }>();
  private readonly secrets: string[] = [];
  private lastAuthorize: URLSearchParams | undefined;

  constructor(options: FakeEntraOptions) {
    super(options);
    this.clients = new Map(options.clients.map((c) => [c.clientId, { ...c, redirectUris: [...c.redirectUris] }]));
    this.accessTokenLifetimeSeconds = options.accessTokenLifetimeSeconds ?? 3599;
    this.clock = options.clock ?? Date.now;
  }

  protected override async beforeStart(): Promise<void> {
    if (this.signingKey) return;
    this.signingKey = await generateKeyPair("RS256");
    this.impostorKey = await generateKeyPair("RS256");
    this.publicJwk = { ...(await exportJWK(this.signingKey.publicKey)), kid: this.kid, use: "sig", alg: "RS256" };
  }

  // ---- test controls -------------------------------------------------------------------

  setClock(clock: () => number): void {
    this.clock = clock;
  }

  setConsentBehaviour(tenantId: string, behaviour: ConsentBehaviour): void {
    this.consent.set(tenantId.toLowerCase(), behaviour);
  }

  /** Refresh-token redemptions at that path tenant, or for a token whose tid is that tenant, fail `times` times. */
  failRefresh(tenantId: string, failure: TokenFailure, times = Number.POSITIVE_INFINITY): void {
    this.refreshFailures.set(tenantId.toLowerCase(), { failure, remaining: times });
  }

  /** Every token request fails, before client authentication, like an outage or an expired app secret. */
  failAllTokenRequests(failure: TokenFailure, times = Number.POSITIVE_INFINITY): void {
    this.allTokenFailure = { failure, remaining: times };
  }

  /** Tampers the id tokens issued for that tenant (tid or path tenant) until cleared or `times` are used. */
  idTokenOverrides(tenantId: string, override: IdTokenOverride, times = Number.POSITIVE_INFINITY): void {
    this.idOverrides.set(tenantId.toLowerCase(), { override, remaining: times });
  }

  clearFailures(): void {
    this.refreshFailures.clear();
    this.allTokenFailure = undefined;
    this.idOverrides.clear();
  }

  /** Existing refresh tokens of users in that tenant stop working (AADSTS50173); new consents still work. */
  revokeRefreshTokens(tenantId: string): void {
    const tid = tenantId.toLowerCase();
    for (const grant of this.refreshTokens.values()) {
      if (grant.user.tid.toLowerCase() === tid) grant.revoked = true;
    }
  }

  resetStats(): void {
    this.stats.authorizeRequests = 0;
    this.stats.tokenRequests.authorization_code = 0;
    this.stats.tokenRequests.refresh_token = 0;
  }

  issuedSecrets(): string[] {
    return [...this.secrets];
  }

  lastAuthorizeParams(): URLSearchParams | undefined {
    return this.lastAuthorize ? new URLSearchParams(this.lastAuthorize) : undefined;
  }

  /** What a resource server would check: this fake's signature, RS256, not expired by the fake clock, v1 issuer. */
  async verifyAccessToken(token: string): Promise<VerifiedAccessToken | null> {
    if (!this.signingKey) return null;
    try {
      const { payload } = await jwtVerify(token, this.signingKey.publicKey, {
        algorithms: ["RS256"],
        currentDate: new Date(this.clock()),
      });
      const { tid, aud, scp, exp, iss } = payload;
      if (typeof tid !== "string" || typeof aud !== "string" || typeof scp !== "string" || typeof exp !== "number") {
        return null;
      }
      if (iss !== `https://sts.windows.net/${tid}/`) return null;
      return { tid, aud, scp, exp };
    } catch {
      return null;
    }
  }

  // ---- HTTP ----------------------------------------------------------------------------

  protected override internalError(res: ServerResponse, err: unknown): void {
    sendJson(res, 500, { error: "server_error", error_description: `fake Entra bug: ${String(err)}` });
  }

  protected override async handle(req: FakeRequest, res: ServerResponse): Promise<void> {
    const path = req.url.pathname;
    if (path.startsWith("/_fake/")) {
      this.handleControl(req, res);
      return;
    }
    const [, tenant = "", ...rest] = path.split("/");
    const route = rest.join("/");
    const known =
      route === "v2.0/.well-known/openid-configuration" ||
      route === "discovery/v2.0/keys" ||
      route === "discovery/instance" ||
      route === "oauth2/v2.0/authorize" ||
      route === "oauth2/v2.0/token" ||
      route === "oauth2/v2.0/logout";
    if (!known) {
      sendJson(res, 404, { error: "not_found", error_description: `No route ${req.method} ${path} in the fake Entra.` });
      return;
    }
    if (!isValidTenant(tenant)) {
      this.tenantNotFound(req, res, tenant, route);
      return;
    }
    switch (route) {
      case "v2.0/.well-known/openid-configuration":
        sendJson(res, 200, this.openIdConfiguration(tenant));
        return;
      case "discovery/v2.0/keys":
        sendJson(res, 200, { keys: [this.publicJwk] });
        return;
      case "discovery/instance":
        sendJson(res, 200, this.instanceDiscovery());
        return;
      case "oauth2/v2.0/authorize":
        this.authorize(req, res, tenant);
        return;
      case "oauth2/v2.0/token":
        await this.token(req, res, tenant);
        return;
      case "oauth2/v2.0/logout":
        this.logout(req, res);
        return;
    }
  }

  private openIdConfiguration(tenant: string): Record<string, unknown> {
    // Entra's tenant-independent documents use a {tenantid} template in the issuer; the app must substitute tid itself.
    const issuerTenant = GUID.test(tenant) ? tenant : "{tenantid}";
    const base = `${this.url}/${tenant}`;
    return {
      token_endpoint: `${base}/oauth2/v2.0/token`,
      token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
      jwks_uri: `${base}/discovery/v2.0/keys`,
      response_modes_supported: ["query", "fragment", "form_post"],
      subject_types_supported: ["pairwise"],
      id_token_signing_alg_values_supported: ["RS256"],
      response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
      scopes_supported: ["openid", "profile", "email", "offline_access"],
      issuer: `${this.url}/${issuerTenant}/v2.0`,
      request_uri_parameter_supported: false,
      userinfo_endpoint: `${this.url}/oidc/userinfo`,
      authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
      device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
      http_logout_supported: true,
      frontchannel_logout_supported: true,
      end_session_endpoint: `${base}/oauth2/v2.0/logout`,
      claims_supported: ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "preferred_username", "name", "tid", "ver", "oid"],
      kerberos_endpoint: `${base}/kerberos`,
      tenant_region_scope: "EU",
      cloud_instance_name: "microsoftonline.com",
      cloud_graph_host_name: "graph.windows.net",
      msgraph_host: "graph.microsoft.com",
      rbac_url: "https://pas.windows.net",
    };
  }

  /** Only reached when a client has neither knownAuthorities nor cloudDiscoveryMetadata for this host. */
  private instanceDiscovery(): Record<string, unknown> {
    return {
      tenant_discovery_endpoint: `${this.url}/common/v2.0/.well-known/openid-configuration`,
      "api-version": "1.1",
      metadata: [{ preferred_network: this.host, preferred_cache: this.host, aliases: [this.host] }],
    };
  }

  private logout(req: FakeRequest, res: ServerResponse): void {
    const target = req.url.searchParams.get("post_logout_redirect_uri");
    if (target) redirect(res, target);
    else sendHtml(res, 200, "<!doctype html><title>Signed out</title><p>You have signed out of your account.</p>");
  }

  private tenantNotFound(req: FakeRequest, res: ServerResponse, tenant: string, route: string): void {
    const message = `Tenant '${tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.`;
    if (route === "oauth2/v2.0/authorize") {
      errorPage(res, 90002, message);
      return;
    }
    this.sendTokenError(req, res, new TokenEndpointError(400, "invalid_tenant", 90002, message));
  }

  // ---- /authorize ----------------------------------------------------------------------

  private authorize(req: FakeRequest, res: ServerResponse, pathTenant: string): void {
    if (req.method !== "GET") {
      errorPage(res, 900561, "The endpoint only accepts GET requests in this fake.");
      return;
    }
    this.stats.authorizeRequests += 1;
    const q = req.url.searchParams;
    this.lastAuthorize = new URLSearchParams(q);

    // Until the client and redirect URI are trusted, Entra shows an error page instead of redirecting.
    const clientId = q.get("client_id");
    if (!clientId) {
      errorPage(res, 900144, "The request body must contain the following parameter: 'client_id'.");
      return;
    }
    const client = this.clients.get(clientId);
    if (!client) {
      errorPage(
        res,
        700016,
        `Application with identifier '${clientId}' was not found in the directory '${pathTenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.`,
      );
      return;
    }
    const redirectUri = q.get("redirect_uri");
    if (!redirectUri || !client.redirectUris.includes(redirectUri)) {
      errorPage(
        res,
        50011,
        `The redirect URI '${redirectUri ?? ""}' specified in the request does not match the redirect URIs configured for the application '${clientId}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal.`,
      );
      return;
    }

    const state = q.get("state");
    const fail = (error: string, description: string): void => {
      const params = new URLSearchParams({ error, error_description: description });
      if (state !== null) params.set("state", state);
      redirect(res, appendQuery(redirectUri, params));
    };

    const responseType = q.get("response_type");
    if (!responseType) {
      fail("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'response_type'.");
      return;
    }
    if (responseType !== "code") {
      fail("unsupported_response_type", `AADSTS700054: response_type '${responseType}' is not enabled for the application (the fake supports 'code' only).`);
      return;
    }
    const responseMode = q.get("response_mode");
    if (responseMode !== null && responseMode !== "query") {
      fail("invalid_request", `AADSTS900144: response_mode '${responseMode}' is not supported by the fake; use 'query'.`);
      return;
    }
    const codeChallenge = q.get("code_challenge");
    const method = q.get("code_challenge_method");
    if (!codeChallenge || method !== "S256") {
      fail(
        "invalid_request",
        "AADSTS9002325: Proof Key for Code Exchange is required: send code_challenge with code_challenge_method=S256.",
      );
      return;
    }
    if (!/^[A-Za-z0-9_-]{43}$/.test(codeChallenge)) {
      fail("invalid_request", "AADSTS501491: Invalid size of Code_Challenge parameter.");
      return;
    }
    const scopes = splitScopes(q.get("scope"));
    if (scopes.length === 0) {
      fail("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'scope'.");
      return;
    }
    if (!scopes.some((s) => s.toLowerCase() === "offline_access")) {
      fail("invalid_scope", "AADSTS70011: The fake requires the 'offline_access' scope, without it no refresh token is issued.");
      return;
    }

    const behaviour = this.consent.get(pathTenant.toLowerCase()) ?? { kind: "approve" };
    if (behaviour.kind === "deny") {
      fail(behaviour.error, behaviour.errorDescription ?? defaultDenyDescription(behaviour.error));
      return;
    }

    const user = resolveUser(pathTenant, behaviour.user);
    const code = this.remember(randomBytes(48).toString("base64url"));
    const grant: CodeGrant = {
      clientId,
      redirectUri,
      pathTenant: pathTenant.toLowerCase(),
      codeChallenge,
      scopes,
      user,
      issuedAt: this.clock(),
      redeemed: false,
    };
    const nonce = q.get("nonce");
    if (nonce !== null) grant.nonce = nonce;
    this.codes.set(code, grant);

    const params = new URLSearchParams({ code });
    if (q.get("client_info") === "1") params.set("client_info", clientInfo(user));
    if (state !== null) params.set("state", state);
    params.set("session_state", randomUUID());
    redirect(res, appendQuery(redirectUri, params));
  }

  // ---- /token --------------------------------------------------------------------------

  private async token(req: FakeRequest, res: ServerResponse, pathTenant: string): Promise<void> {
    try {
      if (req.method !== "POST") {
        throw new TokenEndpointError(400, "invalid_request", 900561, "The endpoint only accepts POST, OPTIONS requests. Received a GET request.");
      }
      const form = new URLSearchParams(req.body.toString("utf8"));
      const grantType = form.get("grant_type");
      if (grantType === "authorization_code" || grantType === "refresh_token") this.stats.tokenRequests[grantType] += 1;

      if (this.allTokenFailure && this.allTokenFailure.remaining > 0) {
        this.allTokenFailure.remaining -= 1;
        throw injected(this.allTokenFailure.failure);
      }

      const client = this.authenticateClient(req, form, pathTenant);
      if (!grantType) {
        throw new TokenEndpointError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.");
      }
      let body: Record<string, unknown>;
      if (grantType === "authorization_code") body = await this.redeemCode(form, client, pathTenant);
      else if (grantType === "refresh_token") body = await this.redeemRefreshToken(form, client, pathTenant);
      else {
        throw new TokenEndpointError(400, "unsupported_grant_type", 70003, `The app requested an unsupported grant type '${grantType}'.`);
      }
      sendJson(res, 200, body, { pragma: "no-cache" });
    } catch (err) {
      if (!(err instanceof TokenEndpointError)) throw err;
      this.sendTokenError(req, res, err);
    }
  }

  private authenticateClient(req: FakeRequest, form: URLSearchParams, pathTenant: string): FakeEntraClient {
    let clientId = form.get("client_id");
    let secret = form.get("client_secret");
    const authorization = req.headers.authorization;
    if (authorization?.startsWith("Basic ")) {
      // RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
      const decoded = Buffer.from(authorization.slice(6), "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon > 0) {
        clientId = decodeFormComponent(decoded.slice(0, colon));
        secret = decodeFormComponent(decoded.slice(colon + 1));
      }
    }
    if (!clientId) {
      throw new TokenEndpointError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.");
    }
    const client = this.clients.get(clientId);
    if (!client) {
      throw new TokenEndpointError(
        400,
        "unauthorized_client",
        700016,
        `Application with identifier '${clientId}' was not found in the directory '${pathTenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.`,
      );
    }
    if (!secret) {
      throw new TokenEndpointError(
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
      );
    }
    if (!safeEqual(secret, client.clientSecret)) {
      throw new TokenEndpointError(
        401,
        "invalid_client",
        7000215,
        `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`,
      );
    }
    return client;
  }

  private async redeemCode(form: URLSearchParams, client: FakeEntraClient, pathTenant: string): Promise<Record<string, unknown>> {
    const code = form.get("code");
    if (!code) {
      throw new TokenEndpointError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'code'.");
    }
    const grant = this.codes.get(code);
    if (!grant) throw new TokenEndpointError(400, "invalid_grant", 70000, "The provided value for the 'code' parameter is not valid.");
    if (grant.redeemed) {
      throw new TokenEndpointError(
        400,
        "invalid_grant",
        54005,
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
      );
    }
    if (this.clock() - grant.issuedAt > CODE_LIFETIME_MS) {
      throw new TokenEndpointError(
        400,
        "invalid_grant",
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
      );
    }
    if (grant.clientId !== client.clientId) {
      throw new TokenEndpointError(400, "invalid_grant", 70000, "The provided value for the 'code' parameter is not valid. The code was issued to another client.");
    }
    const redirectUri = form.get("redirect_uri");
    if (!redirectUri) {
      throw new TokenEndpointError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'redirect_uri'.");
    }
    if (redirectUri !== grant.redirectUri) {
      throw new TokenEndpointError(
        400,
        "invalid_grant",
        70000,
        "The provided value for the 'redirect_uri' is not valid. The value must exactly match the redirect URI used to obtain the authorization code.",
      );
    }
    // A code obtained at /organizations is bound to the signed-in user's home tenant, so redeeming it there is fine too.
    const tenant = pathTenant.toLowerCase();
    if (tenant !== grant.pathTenant && tenant !== grant.user.tid.toLowerCase()) {
      throw new TokenEndpointError(
        400,
        "invalid_grant",
        700005,
        "Provided Authorization Code is intended to use against other tenant, thus rejected.",
      );
    }
    const verifier = form.get("code_verifier");
    if (!verifier) {
      throw new TokenEndpointError(
        400,
        "invalid_grant",
        50148,
        "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
      );
    }
    if (createHash("sha256").update(verifier).digest("base64url") !== grant.codeChallenge) {
      throw new TokenEndpointError(
        400,
        "invalid_grant",
        501481,
        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
      );
    }
    grant.redeemed = true;
    const requested = splitScopes(form.get("scope"));
    const tokenOptions: { nonce?: string } = {};
    if (grant.nonce !== undefined) tokenOptions.nonce = grant.nonce;
    return this.issueTokens(client, grant.user, requested.length > 0 ? requested : grant.scopes, tenant, tokenOptions);
  }

  private async redeemRefreshToken(form: URLSearchParams, client: FakeEntraClient, pathTenant: string): Promise<Record<string, unknown>> {
    const refreshToken = form.get("refresh_token");
    if (!refreshToken) {
      throw new TokenEndpointError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'refresh_token'.");
    }
    const grant = this.refreshTokens.get(refreshToken);
    const tenant = pathTenant.toLowerCase();
    this.maybeFailRefresh(tenant, grant?.user.tid.toLowerCase());

    if (!grant || grant.clientId !== client.clientId) {
      throw new TokenEndpointError(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.");
    }
    if (grant.revoked) {
      throw new TokenEndpointError(
        400,
        "invalid_grant",
        50173,
        "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
      );
    }
    const idleMs = this.clock() - grant.issuedAt;
    if (idleMs > REFRESH_INACTIVITY_MS) {
      throw new TokenEndpointError(
        400,
        "invalid_grant",
        700082,
        `The refresh token has expired due to inactivity. The token was issued on ${new Date(grant.issuedAt).toISOString()} and was inactive for 90.00:00:00.`,
      );
    }
    if (GUID.test(tenant) && tenant !== grant.user.tid.toLowerCase()) {
      throw new TokenEndpointError(
        400,
        "invalid_grant",
        50020,
        `User account '${grant.user.preferredUsername}' from identity provider 'https://sts.windows.net/${grant.user.tid}/' does not exist in tenant '${tenant}' and cannot access the application '${client.clientId}' in that tenant.`,
      );
    }
    const requested = splitScopes(form.get("scope"));
    // Entra never puts a nonce into id tokens from a refresh; MSAL would reject one it did not ask for.
    return this.issueTokens(client, grant.user, requested.length > 0 ? requested : grant.scopes, tenant, {});
  }

  private maybeFailRefresh(pathTenant: string, tokenTenant: string | undefined): void {
    for (const key of [pathTenant, tokenTenant]) {
      if (key === undefined) continue;
      const entry = this.refreshFailures.get(key);
      if (!entry || entry.remaining <= 0) continue;
      entry.remaining -= 1;
      throw injected(entry.failure);
    }
  }

  private async issueTokens(
    client: FakeEntraClient,
    user: ResolvedUser,
    requestedScopes: string[],
    pathTenant: string,
    options: { nonce?: string },
  ): Promise<Record<string, unknown>> {
    const signingKey = this.requireKey(this.signingKey);
    const nowS = Math.floor(this.clock() / 1000);
    const { audience, permissions, scope } = describeScopes(requestedScopes);

    const accessToken = await new SignJWT({
      aud: audience,
      iss: `https://sts.windows.net/${user.tid}/`,
      iat: nowS,
      nbf: nowS,
      exp: nowS + this.accessTokenLifetimeSeconds,
      appid: client.clientId,
      appidacr: "1",
      name: user.name,
      oid: user.oid,
      scp: permissions,
      tid: user.tid,
      upn: user.preferredUsername,
      uti: randomBytes(16).toString("base64url"),
      ver: "1.0",
    })
      .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: this.kid })
      .sign(signingKey.privateKey);

    let idClaims: Record<string, unknown> = {
      aud: client.clientId,
      iss: `${this.url}/${user.tid}/v2.0`,
      iat: nowS,
      nbf: nowS,
      exp: nowS + ID_TOKEN_LIFETIME_S,
      name: user.name,
      oid: user.oid,
      preferred_username: user.preferredUsername,
      sub: pairwiseSubject(user.oid, client.clientId),
      tid: user.tid,
      uti: randomBytes(16).toString("base64url"),
      ver: "2.0",
    };
    if (options.nonce !== undefined) idClaims.nonce = options.nonce;
    let idKey = signingKey;
    const override = this.takeIdOverride(user.tid, pathTenant);
    if (override && "badSignature" in override && override.badSignature === true) {
      idKey = this.requireKey(this.impostorKey);
    } else if (override) {
      idClaims = { ...idClaims, ...override };
    }
    const idToken = await new SignJWT(idClaims)
      .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: this.kid })
      .sign(idKey.privateKey);

    const refreshToken = this.remember(randomBytes(64).toString("base64url"));
    this.refreshTokens.set(refreshToken, {
      clientId: client.clientId,
      user,
      scopes: requestedScopes,
      issuedAt: this.clock(),
      revoked: false,
    });
    this.remember(accessToken);
    this.remember(idToken);

    return {
      token_type: "Bearer",
      scope,
      expires_in: this.accessTokenLifetimeSeconds,
      ext_expires_in: this.accessTokenLifetimeSeconds,
      access_token: accessToken,
      refresh_token: refreshToken,
      id_token: idToken,
      client_info: clientInfo(user),
    };
  }

  private takeIdOverride(tid: string, pathTenant: string): IdTokenOverride | undefined {
    for (const key of [tid.toLowerCase(), pathTenant]) {
      const entry = this.idOverrides.get(key);
      if (!entry || entry.remaining <= 0) continue;
      entry.remaining -= 1;
      return entry.override;
    }
    return undefined;
  }

  private sendTokenError(req: FakeRequest, res: ServerResponse, err: TokenEndpointError): void {
    const traceId = randomUUID();
    const header = req.headers["client-request-id"];
    const correlationId = typeof header === "string" && header ? header : randomUUID();
    const timestamp = new Date(this.clock()).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
    const body: Record<string, unknown> = {
      error: err.error,
      error_description: `AADSTS${err.code}: ${err.message} Trace ID: ${traceId} Correlation ID: ${correlationId} Timestamp: ${timestamp}`,
      error_codes: [err.code],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
      error_uri: `${this.url}/error?code=${err.code}`,
    };
    if (err.suberror !== undefined) body.suberror = err.suberror;
    sendJson(res, err.status, body);
  }

  // ---- /_fake control API for a benchmark in another process ----------------------------

  private handleControl(req: FakeRequest, res: ServerResponse): void {
    const path = req.url.pathname;
    const body = parseJsonObject(req.body) ?? {};
    const tenantId = typeof body.tenantId === "string" ? body.tenantId : undefined;
    const times = typeof body.times === "number" ? body.times : undefined;
    const failure = parseFailure(body.failure);

    if (req.method === "GET" && path === "/_fake/stats") {
      sendJson(res, 200, this.stats);
      return;
    }
    if (req.method !== "POST") {
      sendJson(res, 405, { error: "method_not_allowed" });
      return;
    }
    switch (path) {
      case "/_fake/reset-stats":
        this.resetStats();
        break;
      case "/_fake/clear-failures":
        this.clearFailures();
        break;
      case "/_fake/consent": {
        const behaviour = parseBehaviour(body.behaviour);
        if (!tenantId || !behaviour) return sendJson(res, 400, { error: "expected {tenantId, behaviour}" });
        this.setConsentBehaviour(tenantId, behaviour);
        break;
      }
      case "/_fake/fail-refresh":
        if (!tenantId || !failure) return sendJson(res, 400, { error: "expected {tenantId, failure, times?}" });
        this.failRefresh(tenantId, failure, times);
        break;
      case "/_fake/fail-all":
        if (!failure) return sendJson(res, 400, { error: "expected {failure, times?}" });
        this.failAllTokenRequests(failure, times);
        break;
      case "/_fake/revoke":
        if (!tenantId) return sendJson(res, 400, { error: "expected {tenantId}" });
        this.revokeRefreshTokens(tenantId);
        break;
      default:
        sendJson(res, 404, { error: `no fake control route ${path}` });
        return;
    }
    sendEmpty(res, 204);
  }

  private remember(secret: string): string {
    this.secrets.push(secret);
    return secret;
  }

  private requireKey(key: KeyPair | undefined): KeyPair {
    if (!key) throw new Error("FakeEntra is not started");
    return key;
  }
}

// ---- helpers -------------------------------------------------------------------------------

function isValidTenant(tenant: string): boolean {
  return GUID.test(tenant) || tenant === "organizations" || tenant === "common";
}

function splitScopes(scope: string | null): string[] {
  return (scope ?? "").split(" ").filter((s) => s.length > 0);
}

/**
 * The access token is for the resource of the first non-OIDC scope (Defender when none), and
 * `.default` stands for what the app registration was granted, here Alert.Read.
 */
function describeScopes(scopes: string[]): { audience: string; permissions: string; scope: string } {
  const resourceScopes = scopes.filter((s) => !OIDC_SCOPES.has(s.toLowerCase()));
  const first = resourceScopes[0];
  const slash = first?.lastIndexOf("/") ?? -1;
  const audience = first !== undefined && slash > 0 ? first.slice(0, slash) : DEFENDER_RESOURCE;
  const names = resourceScopes
    .filter((s) => s.startsWith(`${audience}/`))
    .map((s) => s.slice(audience.length + 1))
    .map((p) => (p === ".default" ? "Alert.Read" : p));
  const permissions = names.length > 0 ? [...new Set(names)].join(" ") : "Alert.Read";
  const scope = permissions
    .split(" ")
    .map((p) => `${audience}/${p}`)
    .join(" ");
  return { audience, permissions, scope };
}

function resolveUser(pathTenant: string, user: ConsentUser | undefined): ResolvedUser {
  // Multi-tenant paths have no tenant of their own; a stable GUID stands in for "the admin's home tenant".
  const tid = user?.homeTenantId ?? (GUID.test(pathTenant) ? pathTenant.toLowerCase() : stableGuid(`home:${pathTenant}`));
  const preferredUsername = user?.preferredUsername ?? `admin@${tid.slice(0, 8)}.onmicrosoft.com`;
  return {
    tid,
    oid: user?.oid ?? stableGuid(`oid:${tid}:${preferredUsername}`),
    preferredUsername,
    name: user?.name ?? `Admin ${tid.slice(0, 8)}`,
  };
}

function stableGuid(seed: string): string {
  const h = createHash("sha256").update(seed).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function pairwiseSubject(oid: string, clientId: string): string {
  return createHash("sha256").update(`${oid}:${clientId}`).digest("base64url");
}

function clientInfo(user: ResolvedUser): string {
  return Buffer.from(JSON.stringify({ uid: user.oid, utid: user.tid })).toString("base64url");
}

function appendQuery(uri: string, params: URLSearchParams): string {
  return `${uri}${uri.includes("?") ? "&" : "?"}${params.toString()}`;
}

function decodeFormComponent(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, " "));
  } catch {
    return text;
  }
}

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

function errorPage(res: ServerResponse, code: number, message: string): void {
  sendHtml(
    res,
    400,
    `<!doctype html><html><head><title>Sign in to your account</title></head><body>` +
      `<h1>Sorry, but we're having trouble signing you in.</h1><p id="error">AADSTS${code}: ${escapeHtml(message)}</p></body></html>`,
  );
}

function defaultDenyDescription(error: string): string {
  if (error === "access_denied") return "AADSTS65004: User declined to consent to access the app.";
  if (error === "consent_required") return "AADSTS65001: The user or administrator has not consented to use the application.";
  return `AADSTS90000: Authorization failed (${error}).`;
}

const DEFAULT_FAILURE_CODES: Record<string, number> = {
  invalid_grant: 70000,
  invalid_client: 7000215,
  interaction_required: 50076,
  unauthorized_client: 700016,
  invalid_resource: 500011,
  temporarily_unavailable: 90033,
  server_error: 50033,
};

const FAILURE_MESSAGES: Record<number, string> = {
  70000: "Provided grant is invalid or malformed.",
  70008: "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
  700082: "The refresh token has expired due to inactivity. The token was issued on 2026-01-01T00:00:00.0000000Z and was inactive for 90.00:00:00.",
  50173: "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
  70043: "The refresh token has expired or is invalid due to sign-in frequency checks by conditional access.",
  65001: "The user or administrator has not consented to use the application. Send an interactive authorization request for this user and resource.",
  50076: "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access the resource.",
  53003: "Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.",
  50057: "The user account is disabled.",
  500011: "The resource principal named https://api.securitycenter.microsoft.com was not found in the tenant.",
  700016: "Application was not found in the directory.",
  7000215: "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
  7000222: "The provided client secret keys for app are expired. Visit the Azure portal to create new keys for your app.",
  90033: "A transient error has occurred. Please try again.",
  50033: "A transient error has occurred. Please try again.",
};

function injected(failure: TokenFailure): TokenEndpointError {
  const code = failure.errorCode ?? DEFAULT_FAILURE_CODES[failure.error] ?? 90033;
  const message = FAILURE_MESSAGES[code] ?? `Injected failure '${failure.error}'.`;
  return new TokenEndpointError(failure.status, failure.error, code, message, failure.suberror);
}

function parseFailure(raw: unknown): TokenFailure | undefined {
  if (!isRecord(raw) || typeof raw.status !== "number" || typeof raw.error !== "string") return undefined;
  const failure: TokenFailure = { status: raw.status, error: raw.error };
  if (typeof raw.errorCode === "number") failure.errorCode = raw.errorCode;
  if (typeof raw.suberror === "string") failure.suberror = raw.suberror;
  return failure;
}

function parseBehaviour(raw: unknown): ConsentBehaviour | undefined {
  if (!isRecord(raw)) return undefined;
  if (raw.kind === "deny" && typeof raw.error === "string") {
    return typeof raw.errorDescription === "string"
      ? { kind: "deny", error: raw.error, errorDescription: raw.errorDescription }
      : { kind: "deny", error: raw.error };
  }
  if (raw.kind !== "approve") return undefined;
  if (!isRecord(raw.user)) return { kind: "approve" };
  const user: ConsentUser = {};
  for (const key of ["oid", "preferredUsername", "name", "homeTenantId"] as const) {
    const value = raw.user[key];
    if (typeof value === "string") user[key] = value;
  }
  return { kind: "approve", user };
}
