import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { registerSecrets } from "../harness/secrecy";
import { AssertionRejection, authenticateByAssertion, ClientAssertionVerifier } from "./clientAssertions";
import { exportJWK, generateKeyPair, jwtVerify, SignJWT, type GenerateKeyPairResult, type JWK } from "jose";
import {
  BodyTooLargeError,
  escapeHtml,
  FakeHttpsServer,
  isRecord,
  parseJsonObject,
  readBody,
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
/** Microsoft Graph: its tokens carry this audience; `.default` stands for the Graph permissions the tenant consented to. */
export const GRAPH_RESOURCE = "https://graph.microsoft.com";

export interface FakeEntraClient {
  clientId: string;
  clientSecret: string;
  redirectUris: string[];
  /** The app registration's name, as Entra's consent prompts show it; "MSSP connector" when unset. */
  displayName?: string;
  /** Who publishes the app (the MSSP), as the admin-consent prompt shows it; "unverified" when unset. */
  publisherName?: string;
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

/** An access token for the MSSP app's own API (see FakeEntra.mintApiAccessToken). */
export interface ApiAccessTokenOptions {
  /** The app registration whose API the token is for: `aud` is `api://{it}` (v1) or the id itself (v2). */
  resourceClientId: string;
  /** The issuing tenant (`tid`, issuer); defaults to the user's. */
  tenantId?: string;
  /** The calling application (`appid` v1, `azp` v2); a fresh GUID by default. */
  clientAppId?: string;
  /** App roles assigned to the caller (the `roles` claim). */
  roles?: string[];
  /** Access token version, as the resource's `requestedAccessTokenVersion` decides (default 1.0). */
  version?: "1.0" | "2.0";
  /** Delegated: a user signed in to the calling app. Without it the token is app-only. */
  user?: { oid?: string; name?: string; preferredUsername?: string; tenantId?: string };
  /** Milliseconds since the epoch (default: the fake's clock). */
  issuedAt?: number;
  lifetimeSeconds?: number;
  /** Replace claims; `undefined` removes one. */
  claims?: Record<string, unknown>;
  badSignature?: boolean;
}

export interface VerifiedAccessToken {
  tid: string;
  aud: string;
  /** Delegated tokens: the user's consented permissions. */
  scp?: string;
  /** App-only tokens (`idtyp` app): the app roles granted in the tenant, empty when none. */
  roles?: string[];
  exp: number;
}

/**
 * How a fresh admin consent shows while it "propagates" (Entra ID takes up to a minute or so):
 * the client-credential grant refused with AADSTS7000229 (no service principal yet), or tokens
 * issued without the new role.
 */
export type PropagationSymptom = "no_service_principal" | "no_role";

/** The application permissions the fake app registration asks for at admin consent, per resource. */
export const DEFAULT_APPLICATION_PERMISSIONS: Readonly<Record<string, readonly string[]>> = {
  [DEFENDER_RESOURCE]: ["Alert.Read.All"],
  [GRAPH_RESOURCE]: ["SecurityAlert.Read.All"],
};

/**
 * How Entra's admin-consent prompt names each resource and application permission (the API's
 * display name and the permission's admin-consent display name, as in the Entra admin center).
 */
const APPLICATION_PERMISSION_NAMES: Readonly<Record<string, { api: string; roles: Readonly<Record<string, string>> }>> = {
  [DEFENDER_RESOURCE]: { api: "WindowsDefenderATP", roles: { "Alert.Read.All": "Read all alerts" } },
  [GRAPH_RESOURCE]: { api: "Microsoft Graph", roles: { "SecurityAlert.Read.All": "Read all security alerts" } },
};

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

/** An authorization request that passed every check; what an Accept or Decline answers. */
interface AuthorizeRequest {
  pathTenant: string;
  clientId: string;
  redirectUri: string;
  state: string | null;
  codeChallenge: string;
  scopes: string[];
  nonce: string | null;
  wantsClientInfo: boolean;
}

/** An admin-consent request that passed every check; what an Accept or Cancel answers. */
interface AdminConsentRequest {
  pathTenant: string;
  client: FakeEntraClient;
  redirectUri: string;
  state: string | null;
  /** The one resource of the `{resource}/.default` scope. */
  resource: string;
}

type AdminConsentCheck = PromptCheck<AdminConsentRequest>;

type AuthorizeCheck = PromptCheck<AuthorizeRequest>;

/** What checking a browser prompt's parameters found. */
type PromptCheck<R> =
  | { kind: "valid"; request: R }
  /** Client or redirect URI not trusted: Entra shows its own error page and never redirects. */
  | { kind: "errorPage"; code: number; message: string }
  /** Trusted redirect URI, bad request otherwise: the error goes back to the app. */
  | { kind: "errorRedirect"; location: string };

/** One browser prompt (the sign-in, the admin consent): how its parameters are checked, shown and answered. */
interface Prompt<R> {
  /** "sign-in" or "consent", for the error messages. */
  answer: string;
  validate(params: URLSearchParams): PromptCheck<R>;
  show(res: ServerResponse, request: R, params: URLSearchParams): void;
  /** Where Accept sends the browser. */
  accept(request: R): string;
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
/** Form field of the sign-in page's two submit buttons; no OAuth parameter has this name. */
const DECISION_FIELD = "fake_consent_decision";
const AUTHORIZE_ROUTE = "oauth2/v2.0/authorize";
/** The v2.0 admin-consent endpoint (protocol.md §1): application permissions, no code, no token. */
const ADMIN_CONSENT_ROUTE = "v2.0/adminconsent";

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
  /** Certificates and federated credentials of the clients, and the issuers trusted for the latter. */
  readonly clientAssertions: ClientAssertionVerifier;
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
  /**
   * Resource-qualified scopes consented to per `${clientId}|${tid}` (the union of every approved
   * /authorize). Graph tokens are issued only for consented Graph permissions (else AADSTS65001),
   * as Entra does for a resource the consent did not cover; Defender tokens are not checked.
   */
  private readonly consented = new Map<string, Set<string>>();
  private allTokenFailure: CountedFailure | undefined;
  private codeHold: { waiting: number; released: Promise<void>; release: () => void } | undefined;
  private readonly idOverrides = new Map<string, { override: IdTokenOverride; remaining: number }>();
  private readonly secrets: string[] = [];
  private lastAuthorize: URLSearchParams | undefined;
  private interactive = false;
  private browserServer: HttpServer | undefined;
  private browserBaseUrl: string | undefined;
  /**
   * Application permissions granted by admin consent, per `${clientId}|${tid}`: the app's service
   * principal in that tenant and its app-role assignments (resource-qualified, `{resource}/{role}`).
   */
  private readonly appGrants = new Map<string, { roles: Set<string>; consentedAt: number }>();
  private propagation: { delayMs: number; symptom: PropagationSymptom } = { delayMs: 0, symptom: "no_service_principal" };
  /** Client-credential requests answered (issued or refused after client authentication). */
  appTokenRequests = 0;

  constructor(options: FakeEntraOptions) {
    super(options);
    this.clients = new Map(options.clients.map((c) => [c.clientId, { ...c, redirectUris: [...c.redirectUris] }]));
    this.accessTokenLifetimeSeconds = options.accessTokenLifetimeSeconds ?? 3599;
    this.clock = options.clock ?? Date.now;
    this.clientAssertions = new ClientAssertionVerifier(() => this.clock());
    // For the after-each secrecy scan: every code and token issued, and the clients' secrets.
    registerSecrets(() => [...this.secrets, ...[...this.clients.values()].map((c) => c.clientSecret)], "fake Entra issued code/token or client secret");
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

  /**
   * Interactive: a valid GET /authorize answers with a sign-in page where a person chooses
   * Accept or Decline (GET /adminconsent: a permission prompt with Accept or Cancel), instead of
   * redirecting at once. Off by default so tests stay unattended.
   * Accept then does what the non-interactive path does (including setConsentBehaviour).
   */
  setInteractive(enabled: boolean): void {
    this.interactive = enabled;
  }

  /**
   * Serves the browser-facing /authorize routes (GET and POST) over plain HTTP as well, so a
   * person's browser reaches the sign-in page without a certificate warning for the fake's
   * self-signed certificate. Token, keys and discovery stay HTTPS-only: MSAL insists on https.
   * Binds to loopback by default; returns the origin to put in LOCAL_DEV_SIGN_IN_BASE_URL.
   */
  async startBrowserListener(port = 0, host = "127.0.0.1"): Promise<string> {
    if (this.browserBaseUrl !== undefined) return this.browserBaseUrl;
    const server = createHttpServer((req, res) => {
      void this.dispatchBrowser(req, res);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const bound = (server.address() as AddressInfo).port;
    this.browserServer = server;
    this.browserBaseUrl = `http://${host.includes(":") ? `[${host}]` : host}:${bound}`;
    return this.browserBaseUrl;
  }

  /** The plain-HTTP sign-in origin while startBrowserListener is running. */
  get browserUrl(): string | undefined {
    return this.browserBaseUrl;
  }

  override async stop(): Promise<void> {
    await Promise.all([super.stop(), this.stopBrowserListener()]);
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

  /**
   * Forgets the tenant's consent to `resource`'s permissions (all clients), as an admin removing
   * a permission grant would: Graph tokens are then refused with AADSTS65001 until a new consent.
   */
  revokeConsent(tenantId: string, resource: string = GRAPH_RESOURCE): void {
    const tid = tenantId.toLowerCase();
    for (const [key, scopes] of this.consented) {
      if (!key.endsWith(`|${tid}`)) continue;
      for (const scope of [...scopes]) if (scope.startsWith(`${resource}/`)) scopes.delete(scope);
    }
  }

  /** The resource-qualified scopes the tenant consented to for the client, sorted. */
  consentedScopes(tenantId: string, clientId: string): string[] {
    return [...(this.consented.get(`${clientId}|${tenantId.toLowerCase()}`) ?? [])].sort();
  }

  /** Existing refresh tokens of users in that tenant stop working (AADSTS50173); new consents still work. */
  revokeRefreshTokens(tenantId: string): void {
    const tid = tenantId.toLowerCase();
    for (const grant of this.refreshTokens.values()) {
      if (grant.user.tid.toLowerCase() === tid) grant.revoked = true;
    }
  }

  /**
   * Holds every authorization-code redemption until `release()` (or 10 s, so a test that forgets
   * cannot hang), as a slow token endpoint would: a test can then act while a callback is midway.
   */
  holdCodeRedemptions(): { waiting: () => number; release: () => void } {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const hold = { waiting: 0, released, release };
    this.codeHold = hold;
    return {
      waiting: () => hold.waiting,
      release: () => {
        if (this.codeHold === hold) this.codeHold = undefined;
        hold.release();
      },
    };
  }

  // ---- application permissions (admin consent, client credentials) ----------------------------

  /**
   * A fresh admin consent is not usable for `delayMs` (on the fake's clock): client-credential
   * requests for the tenant are refused with AADSTS7000229, or (symptom "no_role") answered with
   * tokens that lack the new role. 0 turns it off.
   */
  setAppConsentPropagation(delayMs: number, symptom: PropagationSymptom = "no_service_principal"): void {
    this.propagation = { delayMs, symptom };
  }

  /** Ends a propagation delay at once for every tenant (as if a minute had passed). */
  completeAppConsentPropagation(): void {
    for (const grant of this.appGrants.values()) grant.consentedAt = Number.NEGATIVE_INFINITY;
  }

  /** As an admin consent would: the app's service principal in the tenant, with these roles (`{resource}/{role}`). */
  grantAppConsent(tenantId: string, clientId: string, roles: readonly string[], consentedAt = this.clock()): void {
    const key = `${clientId}|${tenantId.toLowerCase()}`;
    const grant = this.appGrants.get(key) ?? { roles: new Set<string>(), consentedAt };
    for (const role of roles) grant.roles.add(role);
    grant.consentedAt = consentedAt;
    this.appGrants.set(key, grant);
  }

  /** The customer deletes the app's service principal (Enterprise applications > Delete): AADSTS7000229 from then on. */
  removeAppConsent(tenantId: string): void {
    const tid = tenantId.toLowerCase();
    for (const key of [...this.appGrants.keys()]) if (key.endsWith(`|${tid}`)) this.appGrants.delete(key);
  }

  /** The customer removes one app-role assignment (`{resource}/{role}`, or every role when omitted); tokens are issued without it. */
  removeAppRole(tenantId: string, role?: string): void {
    const tid = tenantId.toLowerCase();
    for (const [key, grant] of this.appGrants) {
      if (!key.endsWith(`|${tid}`)) continue;
      if (role === undefined) grant.roles.clear();
      else grant.roles.delete(role);
    }
  }

  /** The app roles granted to the client in the tenant, sorted; undefined when it has no service principal there. */
  appRoles(tenantId: string, clientId: string): string[] | undefined {
    const grant = this.appGrants.get(`${clientId}|${tenantId.toLowerCase()}`);
    return grant ? [...grant.roles].sort() : undefined;
  }

  /**
   * GET /{tenant}/v2.0/adminconsent: the tenant's administrator grants the app's application
   * permissions for the scope's resource (`{resource}/.default`). Untrusted client or redirect
   * URI: an error page; otherwise the answer goes back to the redirect URI with `admin_consent`,
   * `tenant`, `scope` and `state`, or with `error` (setConsentBehaviour "deny"). Interactive, a
   * GET shows the permission prompt instead, and its POST (Accept or Cancel) answers; the POST
   * goes through the same checks as the GET.
   */
  private adminConsent(req: FakeRequest, res: ServerResponse, pathTenant: string): void {
    this.prompt(req, res, {
      answer: "consent",
      validate: (params) => this.validateAdminConsent(pathTenant, params),
      show: (out, request, params) => this.sendAdminConsentPage(out, request, params),
      accept: (request) => this.decideAdminConsent(request),
    });
  }

  /** Everything Entra checks before it would show the admin-consent prompt. */
  private validateAdminConsent(pathTenant: string, q: URLSearchParams): AdminConsentCheck {
    const clientId = q.get("client_id") ?? "";
    const client = this.clients.get(clientId);
    if (!client) {
      return { kind: "errorPage", code: 700016, message: `Application with identifier '${clientId}' was not found in the directory '${pathTenant}'.` };
    }
    const redirectUri = q.get("redirect_uri");
    if (!redirectUri || !client.redirectUris.includes(redirectUri)) {
      return {
        kind: "errorPage",
        code: 50011,
        message: `The redirect URI '${redirectUri ?? ""}' specified in the request does not match the redirect URIs configured for the application '${clientId}'.`,
      };
    }
    if (pathTenant === "common") {
      return { kind: "errorPage", code: 90130, message: "The admin consent endpoint does not accept the 'common' tenant; use a tenant id or 'organizations'." };
    }
    const state = q.get("state");
    const scopes = splitScopes(q.get("scope"));
    const resource = scopes.length === 1 && scopes[0]?.endsWith("/.default") ? scopes[0].slice(0, -"/.default".length) : undefined;
    if (!resource) {
      return {
        kind: "errorRedirect",
        location: errorLocation({ redirectUri, state }, "invalid_request", "AADSTS70011: The provided value for the input parameter 'scope' is not valid: application permissions need one '{resource}/.default'."),
      };
    }
    return { kind: "valid", request: { pathTenant, client, redirectUri, state, resource } };
  }

  /** Where the browser goes once the admin has accepted (or, when not interactive, at once). */
  private decideAdminConsent(request: AdminConsentRequest): string {
    const behaviour = this.consentBehaviourFor(request.pathTenant);
    if (behaviour.kind === "deny") {
      return errorLocation(request, behaviour.error, behaviour.errorDescription ?? defaultDenyDescription(behaviour.error));
    }
    const tid = resolveUser(request.pathTenant, behaviour.user).tid.toLowerCase();
    const roles = (DEFAULT_APPLICATION_PERMISSIONS[request.resource] ?? []).map((role) => `${request.resource}/${role}`);
    this.grantAppConsent(tid, request.client.clientId, roles);
    const params = new URLSearchParams({ admin_consent: "True", tenant: tid, scope: `${request.resource}/.default` });
    if (request.state !== null) params.set("state", request.state);
    return appendQuery(request.redirectUri, params);
  }

  private sendAdminConsentPage(res: ServerResponse, request: AdminConsentRequest, params: URLSearchParams): void {
    const behaviour = this.consentBehaviourFor(request.pathTenant);
    const signingInAs = behaviour.kind === "approve" ? resolveUser(request.pathTenant, behaviour.user).preferredUsername : undefined;
    sendConsentPage(res, renderAdminConsentPage(request, params, signingInAs), request.redirectUri);
  }

  /** The client_credentials grant: an app-only token for one resource in one customer tenant. */
  private async clientCredentials(form: URLSearchParams, client: FakeEntraClient, pathTenant: string): Promise<Record<string, unknown>> {
    this.appTokenRequests += 1;
    const tid = pathTenant.toLowerCase();
    if (!GUID.test(tid)) {
      throw new TokenEndpointError(400, "invalid_request", 90009, "The client credentials grant needs a tenant id or domain, not a multi-tenant alias.");
    }
    const scopes = splitScopes(form.get("scope"));
    const resource = scopes.length === 1 && scopes[0]?.endsWith("/.default") ? scopes[0].slice(0, -"/.default".length) : undefined;
    if (!resource) {
      throw new TokenEndpointError(400, "invalid_scope", 1002012, "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).");
    }
    const grant = this.appGrants.get(`${client.clientId}|${tid}`);
    const propagating = grant !== undefined && this.clock() - grant.consentedAt < this.propagation.delayMs;
    if (!grant || (propagating && this.propagation.symptom === "no_service_principal")) {
      throw new TokenEndpointError(
        401,
        "invalid_client",
        7000229,
        `The client application ${client.clientId} is missing service principal in the tenant ${tid}. See instructions here: https://go.microsoft.com/fwlink/?linkid=2225119`,
      );
    }
    const roles = propagating ? [] : [...grant.roles].filter((role) => role.startsWith(`${resource}/`)).map((role) => role.slice(resource.length + 1));
    const nowS = Math.floor(this.clock() / 1000);
    const servicePrincipal = stableGuid(`sp:${tid}:${client.clientId}`);
    const accessToken = await new SignJWT({
      aud: resource,
      iss: `https://sts.windows.net/${tid}/`,
      iat: nowS,
      nbf: nowS,
      exp: nowS + this.accessTokenLifetimeSeconds,
      appid: client.clientId,
      appidacr: "1",
      idtyp: "app",
      oid: servicePrincipal,
      sub: servicePrincipal,
      tid,
      uti: randomBytes(16).toString("base64url"),
      ver: "1.0",
      // Entra omits the claim when no role is assigned.
      ...(roles.length > 0 ? { roles } : {}),
    })
      .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: this.kid })
      .sign(this.requireKey(this.signingKey).privateKey);
    this.remember(accessToken);
    return { token_type: "Bearer", expires_in: this.accessTokenLifetimeSeconds, ext_expires_in: this.accessTokenLifetimeSeconds, access_token: accessToken };
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
      const { tid, aud, scp, exp, iss, idtyp, roles } = payload;
      if (typeof tid !== "string" || typeof aud !== "string" || typeof exp !== "number") return null;
      if (iss !== `https://sts.windows.net/${tid}/`) return null;
      if (typeof scp === "string") return { tid, aud, scp, exp };
      // An app-only token: its permissions are its roles (none at all is a token a resource refuses).
      if (idtyp !== "app") return null;
      return { tid, aud, exp, roles: Array.isArray(roles) ? roles.filter((r): r is string => typeof r === "string") : [] };
    } catch {
      return null;
    }
  }

  // ---- access tokens for the MSSP app's own API (operator identity) ----------------------

  /**
   * What Entra ID issues for `api://{resourceClientId}/.default`: to an application by the client
   * credentials grant (app-only, `idtyp` app, the app's roles), or to a signed-in user (delegated,
   * `scp`, the user's roles). Signed with this fake's key, remembered as a secret; `claims` override
   * or (as undefined) drop claims, `badSignature` signs with the impostor key under the same kid.
   */
  async mintApiAccessToken(options: ApiAccessTokenOptions): Promise<string> {
    const nowS = Math.floor((options.issuedAt ?? this.clock()) / 1000);
    const tid = (options.tenantId ?? options.user?.tenantId ?? "").toLowerCase();
    if (!GUID.test(tid)) throw new Error("mintApiAccessToken needs a tenant id");
    const version = options.version ?? "1.0";
    const clientAppId = options.clientAppId ?? randomUUID();
    const v1 = version === "1.0";
    const common: Record<string, unknown> = {
      aud: v1 ? `api://${options.resourceClientId}` : options.resourceClientId,
      iss: v1 ? `https://sts.windows.net/${tid}/` : `${this.url}/${tid}/v2.0`,
      iat: nowS,
      nbf: nowS,
      exp: nowS + (options.lifetimeSeconds ?? this.accessTokenLifetimeSeconds),
      tid,
      uti: randomBytes(16).toString("base64url"),
      ver: version,
      ...(v1 ? { appid: clientAppId, appidacr: "1" } : { azp: clientAppId, azpacr: "1" }),
      ...(options.roles && options.roles.length > 0 ? { roles: options.roles } : {}),
    };
    let claims: Record<string, unknown>;
    if (options.user) {
      const oid = options.user.oid ?? stableGuid(`oid:${tid}:${options.user.preferredUsername ?? "user"}`);
      claims = {
        ...common,
        idtyp: "user",
        name: options.user.name ?? "Operator",
        oid,
        scp: "access_as_user",
        sub: pairwiseSubject(oid, options.resourceClientId),
        ...(v1 ? { upn: options.user.preferredUsername ?? `operator@${tid.slice(0, 8)}.example` } : { preferred_username: options.user.preferredUsername ?? `operator@${tid.slice(0, 8)}.example` }),
      };
    } else {
      // An app-only token's oid and sub are the calling app's service principal in that tenant.
      const servicePrincipal = stableGuid(`sp:${tid}:${clientAppId}`);
      claims = { ...common, idtyp: "app", oid: servicePrincipal, sub: servicePrincipal };
    }
    for (const [name, value] of Object.entries(options.claims ?? {})) {
      if (value === undefined) delete claims[name];
      else claims[name] = value;
    }
    const key = options.badSignature ? this.requireKey(this.impostorKey) : this.requireKey(this.signingKey);
    const token = await new SignJWT(claims).setProtectedHeader({ alg: "RS256", typ: "JWT", kid: this.kid }).sign(key.privateKey);
    return this.remember(token);
  }

  // ---- HTTP ----------------------------------------------------------------------------

  private async stopBrowserListener(): Promise<void> {
    const server = this.browserServer;
    if (!server) return;
    this.browserServer = undefined;
    this.browserBaseUrl = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  /** The plain-HTTP listener: only /{tenant}/oauth2/v2.0/authorize, everything else is a 404. */
  private async dispatchBrowser(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? "/", this.browserBaseUrl ?? "http://127.0.0.1");
      const [, , ...rest] = url.pathname.split("/");
      if (url.pathname.startsWith("/_fake/") || (rest.join("/") !== AUTHORIZE_ROUTE && rest.join("/") !== ADMIN_CONSENT_ROUTE)) {
        sendJson(res, 404, { error: "not_found", error_description: "The plain-HTTP listener of the fake Entra serves only the sign-in page." });
        return;
      }
      let body: Buffer;
      try {
        body = await readBody(req);
      } catch (err) {
        if (err instanceof BodyTooLargeError && !res.headersSent) sendEmpty(res, 413, { connection: "close" });
        return;
      }
      await this.handle({ method: req.method ?? "GET", url, headers: req.headers, body, raw: req }, res);
    } catch (err) {
      process.stderr.write(`[FakeEntra browser listener] internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
      if (!res.headersSent) this.internalError(res, err);
      else res.destroy();
    }
  }

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
      route === AUTHORIZE_ROUTE ||
      route === "oauth2/v2.0/token" ||
      route === "oauth2/v2.0/logout" ||
      route === ADMIN_CONSENT_ROUTE;
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
      case AUTHORIZE_ROUTE:
        this.authorize(req, res, tenant);
        return;
      case "oauth2/v2.0/token":
        await this.token(req, res, tenant);
        return;
      case "oauth2/v2.0/logout":
        this.logout(req, res);
        return;
      case ADMIN_CONSENT_ROUTE:
        this.adminConsent(req, res, tenant);
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
    if (route === AUTHORIZE_ROUTE) {
      errorPage(res, 90002, message);
      return;
    }
    this.sendTokenError(req, res, new TokenEndpointError(400, "invalid_tenant", 90002, message));
  }

  // ---- /authorize ----------------------------------------------------------------------

  /**
   * GET is the browser's authorization request; POST is the answer from the interactive sign-in
   * page, carrying the same parameters as form fields. Both go through the same validation, so a
   * tampered POST meets the same error pages and error redirects as a bad GET.
   */
  private authorize(req: FakeRequest, res: ServerResponse, pathTenant: string): void {
    this.prompt(req, res, {
      answer: "sign-in",
      validate: (params) => this.validateAuthorize(pathTenant, params),
      show: (out, request, params) => this.sendSignInPage(out, request, params),
      accept: (request) => this.decide(request),
    });
  }

  /**
   * A browser prompt: GET is the request (shown as a page when interactive, answered at once
   * otherwise); POST is the page's answer, carrying the same parameters as form fields. Both go
   * through the same checks, so a tampered POST meets the same error pages and redirects as a bad
   * GET. Cancel sends access_denied (AADSTS65004) back, as Entra does; nothing is granted.
   */
  private prompt<R extends { redirectUri: string; state: string | null }>(req: FakeRequest, res: ServerResponse, prompt: Prompt<R>): void {
    if (req.method !== "GET" && req.method !== "POST") {
      errorPage(res, 900561, "The endpoint only accepts GET and POST requests in this fake.");
      return;
    }
    let params: URLSearchParams;
    if (req.method === "GET") {
      this.stats.authorizeRequests += 1;
      params = req.url.searchParams;
      this.lastAuthorize = new URLSearchParams(params);
    } else {
      const form = signInForm(req);
      if (!form) {
        errorPage(res, 900144, `The ${prompt.answer} answer must be an application/x-www-form-urlencoded form.`);
        return;
      }
      params = form;
    }
    const checked = prompt.validate(params);
    if (checked.kind === "errorPage") {
      errorPage(res, checked.code, checked.message);
      return;
    }
    if (checked.kind === "errorRedirect") {
      redirect(res, checked.location);
      return;
    }
    const request = checked.request;
    if (req.method === "GET") {
      if (this.interactive) prompt.show(res, request, params);
      else redirect(res, prompt.accept(request));
      return;
    }
    const decision = params.get(DECISION_FIELD);
    if (decision === "accept") {
      redirect(res, prompt.accept(request));
    } else if (decision === "decline") {
      redirect(res, errorLocation(request, "access_denied", defaultDenyDescription("access_denied")));
    } else {
      errorPage(res, 900144, `The ${prompt.answer} answer must contain '${DECISION_FIELD}' with the value 'accept' or 'decline'.`);
    }
  }

  /** Everything Entra checks before it would show a sign-in page, in Entra's order. */
  private validateAuthorize(pathTenant: string, q: URLSearchParams): AuthorizeCheck {
    // Until the client and redirect URI are trusted, Entra shows an error page instead of redirecting.
    const clientId = q.get("client_id");
    if (!clientId) {
      return { kind: "errorPage", code: 900144, message: "The request body must contain the following parameter: 'client_id'." };
    }
    const client = this.clients.get(clientId);
    if (!client) {
      return {
        kind: "errorPage",
        code: 700016,
        message: `Application with identifier '${clientId}' was not found in the directory '${pathTenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.`,
      };
    }
    const redirectUri = q.get("redirect_uri");
    if (!redirectUri || !client.redirectUris.includes(redirectUri)) {
      return {
        kind: "errorPage",
        code: 50011,
        message: `The redirect URI '${redirectUri ?? ""}' specified in the request does not match the redirect URIs configured for the application '${clientId}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal.`,
      };
    }

    const state = q.get("state");
    const fail = (error: string, description: string): AuthorizeCheck => ({
      kind: "errorRedirect",
      location: errorLocation({ redirectUri, state }, error, description),
    });

    const responseType = q.get("response_type");
    if (!responseType) {
      return fail("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'response_type'.");
    }
    if (responseType !== "code") {
      return fail("unsupported_response_type", `AADSTS700054: response_type '${responseType}' is not enabled for the application (the fake supports 'code' only).`);
    }
    const responseMode = q.get("response_mode");
    if (responseMode !== null && responseMode !== "query") {
      return fail("invalid_request", `AADSTS900144: response_mode '${responseMode}' is not supported by the fake; use 'query'.`);
    }
    const codeChallenge = q.get("code_challenge");
    const method = q.get("code_challenge_method");
    if (!codeChallenge || method !== "S256") {
      return fail(
        "invalid_request",
        "AADSTS9002325: Proof Key for Code Exchange is required: send code_challenge with code_challenge_method=S256.",
      );
    }
    if (!/^[A-Za-z0-9_-]{43}$/.test(codeChallenge)) {
      return fail("invalid_request", "AADSTS501491: Invalid size of Code_Challenge parameter.");
    }
    const scopes = splitScopes(q.get("scope"));
    if (scopes.length === 0) {
      return fail("invalid_request", "AADSTS900144: The request body must contain the following parameter: 'scope'.");
    }
    if (!scopes.some((s) => s.toLowerCase() === "offline_access")) {
      return fail("invalid_scope", "AADSTS70011: The fake requires the 'offline_access' scope, without it no refresh token is issued.");
    }
    return {
      kind: "valid",
      request: {
        pathTenant,
        clientId,
        redirectUri,
        state,
        codeChallenge,
        scopes,
        nonce: q.get("nonce"),
        wantsClientInfo: q.get("client_info") === "1",
      },
    };
  }

  /**
   * Where the browser goes once the user has agreed (or, when not interactive, at once): the
   * tenant's consent behaviour decides, so setConsentBehaviour still picks the signing-in user
   * or a refusal after an Accept click.
   */
  private decide(request: AuthorizeRequest): string {
    const behaviour = this.consentBehaviourFor(request.pathTenant);
    if (behaviour.kind === "deny") {
      return errorLocation(request, behaviour.error, behaviour.errorDescription ?? defaultDenyDescription(behaviour.error));
    }
    return this.approve(request, resolveUser(request.pathTenant, behaviour.user));
  }

  private consentBehaviourFor(pathTenant: string): ConsentBehaviour {
    return this.consent.get(pathTenant.toLowerCase()) ?? { kind: "approve" };
  }

  /** Issues a one-time code bound to the request and returns the redirect that carries it. */
  private approve(request: AuthorizeRequest, user: ResolvedUser): string {
    const code = this.remember(randomBytes(48).toString("base64url"));
    const grant: CodeGrant = {
      clientId: request.clientId,
      redirectUri: request.redirectUri,
      pathTenant: request.pathTenant.toLowerCase(),
      codeChallenge: request.codeChallenge,
      scopes: request.scopes,
      user,
      issuedAt: this.clock(),
      redeemed: false,
    };
    if (request.nonce !== null) grant.nonce = request.nonce;
    this.codes.set(code, grant);
    const consentKey = `${request.clientId}|${user.tid.toLowerCase()}`;
    const consented = this.consented.get(consentKey) ?? new Set<string>();
    for (const scope of request.scopes) if (!OIDC_SCOPES.has(scope.toLowerCase())) consented.add(scope);
    this.consented.set(consentKey, consented);

    const params = new URLSearchParams({ code });
    if (request.wantsClientInfo) params.set("client_info", clientInfo(user));
    if (request.state !== null) params.set("state", request.state);
    params.set("session_state", randomUUID());
    return appendQuery(request.redirectUri, params);
  }

  private sendSignInPage(res: ServerResponse, request: AuthorizeRequest, params: URLSearchParams): void {
    const behaviour = this.consentBehaviourFor(request.pathTenant);
    const signingInAs =
      behaviour.kind === "approve" ? resolveUser(request.pathTenant, behaviour.user).preferredUsername : undefined;
    sendConsentPage(res, renderSignInPage(request, params, signingInAs), request.redirectUri);
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
      const hold = grantType === "authorization_code" ? this.codeHold : undefined;
      if (hold) {
        hold.waiting += 1;
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([hold.released, new Promise<void>((resolve) => (timer = setTimeout(resolve, 10_000)))]);
        clearTimeout(timer);
        hold.waiting -= 1;
      }

      if (this.allTokenFailure && this.allTokenFailure.remaining > 0) {
        this.allTokenFailure.remaining -= 1;
        throw injected(this.allTokenFailure.failure);
      }

      const client = await this.authenticateClient(req, form, pathTenant);
      if (!grantType) {
        throw new TokenEndpointError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.");
      }
      let body: Record<string, unknown>;
      if (grantType === "authorization_code") body = await this.redeemCode(form, client, pathTenant);
      else if (grantType === "refresh_token") body = await this.redeemRefreshToken(form, client, pathTenant);
      else if (grantType === "client_credentials") body = await this.clientCredentials(form, client, pathTenant);
      else {
        throw new TokenEndpointError(400, "unsupported_grant_type", 70003, `The app requested an unsupported grant type '${grantType}'.`);
      }
      sendJson(res, 200, body, { pragma: "no-cache" });
    } catch (err) {
      if (!(err instanceof TokenEndpointError)) throw err;
      this.sendTokenError(req, res, err);
    }
  }

  private async authenticateClient(req: FakeRequest, form: URLSearchParams, pathTenant: string): Promise<FakeEntraClient> {
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
    // Certificate and federated credentials (test/fakes/clientAssertions.ts).
    try {
      const tokenEndpoint = `${this.url}/${pathTenant}/oauth2/v2.0/token`;
      if (await authenticateByAssertion(this.clientAssertions, { clientId, form, tokenEndpoint, secretSent: Boolean(secret) })) return client;
    } catch (err) {
      if (err instanceof AssertionRejection) throw new TokenEndpointError(err.status, err.error, err.code, err.message);
      throw err;
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
    const { audience, permissions, scope } = describeScopes(requestedScopes, this.graphPermissions(client, user, requestedScopes));

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

  /**
   * For a Graph token request, the Graph permissions `.default` stands for: those the tenant
   * consented to. Throws AADSTS65001 when the consent covers none of them, or not one that was
   * asked for by name. Undefined for other resources (Defender tokens behave as before).
   */
  private graphPermissions(client: FakeEntraClient, user: ResolvedUser, requestedScopes: string[]): string[] | undefined {
    const asked = requestedScopes.filter((s) => s.startsWith(`${GRAPH_RESOURCE}/`));
    const first = requestedScopes.find((s) => !OIDC_SCOPES.has(s.toLowerCase()));
    if (first === undefined || !first.startsWith(`${GRAPH_RESOURCE}/`)) return undefined;
    const consented = [...(this.consented.get(`${client.clientId}|${user.tid.toLowerCase()}`) ?? [])]
      .filter((s) => s.startsWith(`${GRAPH_RESOURCE}/`))
      .map((s) => s.slice(GRAPH_RESOURCE.length + 1))
      .filter((p) => p !== ".default");
    const missing = asked.map((s) => s.slice(GRAPH_RESOURCE.length + 1)).filter((p) => p !== ".default" && !consented.includes(p));
    if (consented.length === 0 || missing.length > 0) {
      throw new TokenEndpointError(
        400,
        "invalid_grant",
        65001,
        `The user or administrator has not consented to use the application with ID '${client.clientId}' named 'MSSP connector'. Send an interactive authorization request for this user and resource.`,
        "consent_required",
      );
    }
    return consented;
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
      case "/_fake/interactive":
        if (typeof body.enabled !== "boolean") return sendJson(res, 400, { error: "expected {enabled: boolean}" });
        this.setInteractive(body.enabled);
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

/**
 * What a browser submits when a person clicks Accept or Decline on the interactive sign-in page
 * (or Accept or Cancel, as "decline", on the admin-consent prompt): the form's action, resolved
 * against the page's URL, and its fields. For tests and for scripted
 * checks of a local sandbox; it reads only this fake's own markup.
 */
export function signInFormSubmission(
  pageUrl: string,
  html: string,
  decision: "accept" | "decline",
): { action: string; body: URLSearchParams } {
  const action = /<form method="post" action="([^"]*)"/.exec(html)?.[1];
  if (action === undefined) throw new Error("not the fake Entra sign-in page: no form");
  const body = new URLSearchParams();
  for (const match of html.matchAll(/<input type="hidden" name="([^"]*)" value="([^"]*)">/g)) {
    body.append(unescapeHtml(match[1] ?? ""), unescapeHtml(match[2] ?? ""));
  }
  body.set(DECISION_FIELD, decision);
  return { action: new URL(unescapeHtml(action), pageUrl).toString(), body };
}

// ---- helpers -------------------------------------------------------------------------------

/** Inverse of http.ts escapeHtml, which writes every special character as a numeric reference. */
function unescapeHtml(text: string): string {
  return text.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)));
}

function isValidTenant(tenant: string): boolean {
  return GUID.test(tenant) || tenant === "organizations" || tenant === "common";
}

function splitScopes(scope: string | null): string[] {
  return (scope ?? "").split(" ").filter((s) => s.length > 0);
}

/**
 * The access token is for the resource of the first non-OIDC scope (Defender when none), and
 * `.default` stands for what the app registration was granted: for Defender Alert.Read, for
 * Graph the consented permissions (`graphDefault`).
 */
function describeScopes(scopes: string[], graphDefault?: string[]): { audience: string; permissions: string; scope: string } {
  const resourceScopes = scopes.filter((s) => !OIDC_SCOPES.has(s.toLowerCase()));
  const first = resourceScopes[0];
  const slash = first?.lastIndexOf("/") ?? -1;
  const audience = first !== undefined && slash > 0 ? first.slice(0, slash) : DEFENDER_RESOURCE;
  const names = resourceScopes
    .filter((s) => s.startsWith(`${audience}/`))
    .map((s) => s.slice(audience.length + 1))
    .flatMap((p) => (p !== ".default" ? [p] : audience === GRAPH_RESOURCE && graphDefault !== undefined ? graphDefault : ["Alert.Read"]));
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

function errorLocation(target: { redirectUri: string; state: string | null }, error: string, description: string): string {
  const params = new URLSearchParams({ error, error_description: description });
  if (target.state !== null) params.set("state", target.state);
  return appendQuery(target.redirectUri, params);
}

/** The sign-in page's POST body, or undefined when it is not the form a browser sends. */
function signInForm(req: FakeRequest): URLSearchParams | undefined {
  const type = req.headers["content-type"]?.split(";")[0]?.trim().toLowerCase();
  if (type !== "application/x-www-form-urlencoded") return undefined;
  return new URLSearchParams(req.body.toString("utf8"));
}

/**
 * Nothing may load or run; the form may post only to this fake, and the redirect that answers
 * the post must be allowed too (browsers apply form-action to the redirect's target).
 */
function signInPageCsp(redirectUri: string): string {
  const target = new URL(redirectUri);
  // A custom-scheme redirect URI (myapp://cb) has an opaque "null" origin; allow its scheme instead.
  const redirectSource = target.origin === "null" ? target.protocol : target.origin;
  return `default-src 'none'; style-src 'unsafe-inline'; form-action 'self' ${redirectSource}; frame-ancestors 'none'; base-uri 'none'`;
}

/** The sign-in and admin-consent prompts: never cached, framed or sent on as a Referer. */
function sendConsentPage(res: ServerResponse, html: string, redirectUri: string): void {
  res.writeHead(200, {
    "content-type": "text/html; charset=utf-8",
    "content-length": String(Buffer.byteLength(html)),
    "cache-control": "no-store",
    "content-security-policy": signInPageCsp(redirectUri),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
  });
  res.end(html);
}

const SIGN_IN_STYLE = [
  "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f2f2f2;color:#1b1b1b;line-height:1.5}",
  ".banner{padding:.75rem 1rem;background:#fff4ce;border-bottom:2px solid #8a6d00;color:#3b2f00;text-align:center}.banner p{margin:0}",
  "main{max-width:30rem;margin:2rem auto;padding:1.5rem 2rem;background:#fff;box-shadow:0 2px 6px rgba(0,0,0,.2)}",
  "h1{font-size:1.5rem;margin-top:0}dt{font-weight:600;margin-top:.5rem}dd{margin:0;overflow-wrap:anywhere}",
  "code{background:#f3f3f3;padding:.1rem .3rem}",
  ".actions{display:flex;gap:.75rem;justify-content:flex-end;margin-top:1.5rem}",
  "button{font:inherit;padding:.5rem 1.5rem;border:2px solid #0067b8;cursor:pointer}",
  "button:focus-visible{outline:3px solid #1b1b1b;outline-offset:2px}",
  ".accept{background:#0067b8;color:#fff}.decline{background:#fff;color:#0067b8}",
  ".subtitle{margin-top:-.5rem;font-weight:600}.permissions{padding-left:1.25rem}.permissions li{margin:.25rem 0}",
].join("");

const SIMULATED_BANNER =
  '<header class="banner"><p><strong>Simulated Microsoft cloud for local testing.</strong> This page is not Microsoft Entra ID: no real account is used and nothing leaves this computer.</p></header>';

/** The original parameters as hidden fields, so the POST can be validated exactly like the GET. */
function hiddenFields(params: URLSearchParams): string {
  return [...params]
    .filter(([name]) => name !== DECISION_FIELD)
    .map(([name, value]) => `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">`)
    .join("\n");
}

/**
 * The simulated admin-consent prompt, laid out like Entra's ("Permissions requested", "Accept for
 * your organization"): the app and its publisher, each application permission by its API, Cancel
 * and Accept. Every value from the request is escaped.
 */
function renderAdminConsentPage(request: AdminConsentRequest, params: URLSearchParams, signingInAs: string | undefined): string {
  const names = APPLICATION_PERMISSION_NAMES[request.resource];
  const api = names?.api ?? request.resource;
  const roles = DEFAULT_APPLICATION_PERMISSIONS[request.resource] ?? [];
  const permissions =
    roles.length > 0
      ? roles
          .map((role) => `<li><strong>${escapeHtml(names?.roles[role] ?? role)}</strong> (${escapeHtml(api)} <code>${escapeHtml(role)}</code>, application permission)</li>`)
          .join("")
      : `<li>The application permissions of <code>${escapeHtml(request.resource)}</code> (none known to this simulation)</li>`;
  const appName = request.client.displayName ?? "MSSP connector";
  const publisher = request.client.publisherName ?? "unverified";
  const user = signingInAs === undefined ? "" : `<p>You are signed in as <strong>${escapeHtml(signingInAs)}</strong>.</p>`;
  const action = `/${encodeURIComponent(request.pathTenant)}/${ADMIN_CONSENT_ROUTE}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Permissions requested (simulated Microsoft Entra ID)</title>
<style>${SIGN_IN_STYLE}</style></head>
<body>
${SIMULATED_BANNER}
<main>
<h1 id="heading">Permissions requested</h1>
<p class="subtitle">Accept for your organization</p>
${user}
<dl>
<dt>Application</dt><dd>${escapeHtml(appName)}</dd>
<dt>Publisher</dt><dd>${escapeHtml(publisher)}</dd>
<dt>Application (client) ID</dt><dd><code>${escapeHtml(request.client.clientId)}</code></dd>
<dt>Your organization (tenant ID)</dt><dd><code>${escapeHtml(request.pathTenant)}</code></dd>
</dl>
<p>This app would like to, without a signed-in user:</p>
<ul class="permissions">${permissions}</ul>
<p>If you accept, this app gets this access for your whole organization, and nobody else in it is asked. You can remove it at any time under Enterprise applications.</p>
<form method="post" action="${escapeHtml(action)}" aria-labelledby="heading">
${hiddenFields(params)}
<div class="actions">
<button type="submit" class="decline" name="${DECISION_FIELD}" value="decline">Cancel</button>
<button type="submit" class="accept" name="${DECISION_FIELD}" value="accept">Accept</button>
</div>
</form>
</main>
</body></html>`;
}

/**
 * The simulated consent prompt. Every value from the request is escaped; the original
 * parameters ride along as hidden fields so the POST can be validated exactly like the GET.
 */
function renderSignInPage(request: AuthorizeRequest, params: URLSearchParams, signingInAs: string | undefined): string {
  const hidden = hiddenFields(params);
  const scopes = request.scopes.map((scope) => `<li><code>${escapeHtml(scope)}</code></li>`).join("");
  const user = signingInAs === undefined ? "" : `<p>You are signed in as <strong>${escapeHtml(signingInAs)}</strong>.</p>`;
  const action = `/${encodeURIComponent(request.pathTenant)}/${AUTHORIZE_ROUTE}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Sign in (simulated Microsoft Entra ID)</title>
<style>${SIGN_IN_STYLE}</style></head>
<body>
${SIMULATED_BANNER}
<main>
<h1 id="heading">Permissions requested</h1>
${user}
<p>An application asks for these permissions in your organization.</p>
<dl>
<dt>Tenant ID</dt><dd><code>${escapeHtml(request.pathTenant)}</code></dd>
<dt>Application (client) ID</dt><dd><code>${escapeHtml(request.clientId)}</code></dd>
<dt>Permissions requested (scopes)</dt><dd><ul>${scopes}</ul></dd>
</dl>
<form method="post" action="${escapeHtml(action)}" aria-labelledby="heading">
${hidden}
<div class="actions">
<button type="submit" class="decline" name="${DECISION_FIELD}" value="decline">Decline</button>
<button type="submit" class="accept" name="${DECISION_FIELD}" value="accept">Accept</button>
</div>
</form>
</main>
</body></html>`;
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
