import { ConfidentialClientApplication, LogLevel, type Configuration } from "@azure/msal-node";
import type { Clock } from "../clock";
import type { HttpClient } from "../http/httpClient";
import type { AppCredential } from "./appCredential";
import { IdTokenValidator, type VerifiedIdentity } from "./idTokenValidator";
import { createMsalNetworkClient } from "./msalNetworkClient";

/** Delegated permission of the WindowsDefenderATP API that lets the app list alerts. */
export const DEFENDER_ALERT_SCOPE = "https://api.securitycenter.microsoft.com/Alert.Read";

// Stryker disable ArrayDeclaration,StringLiteral: for a Microsoft host the metadata the app would give names the endpoints MSAL knows for it, so listing it or not changes no request the user sees
const MICROSOFT_AUTHORITY_HOSTS = new Set([
  "login.microsoftonline.com",
  "login.microsoftonline.us",
  "login.partner.microsoftonline.cn",
]);
// Stryker restore ArrayDeclaration,StringLiteral

export interface EntraClientOptions {
  clientId: string;
  /** The app registration's own credential (MSSP_CLIENT_CREDENTIAL): secret, certificate or managed identity. */
  credential: Pick<AppCredential, "msal">;
  authorityHost: string;
  redirectUri: string;
  http: HttpClient;
  clock: Clock;
}

export interface RedeemedConsent {
  identity: VerifiedIdentity;
  refreshToken: string;
}

export interface RefreshedTokens {
  accessToken: string;
  /** When the access token expires, on the injected clock. */
  accessTokenExpiresAt: number;
  refreshToken: string;
}

/** The refresh token MSAL put in its cache: MSAL never returns it in the result itself. */
function refreshTokenFrom(app: ConfidentialClientApplication): string | undefined {
  const cache = JSON.parse(app.getTokenCache().serialize()) as { RefreshToken?: Record<string, { secret?: string }> };
  const entries = Object.values(cache.RefreshToken ?? {});
  // Stryker disable next-line ConditionalExpression,LogicalOperator,EqualityOperator: MSAL caches a refresh token only with its secret string, never an empty one
  return entries.find((entry) => typeof entry.secret === "string" && entry.secret.length > 0)?.secret;
}

/**
 * The app's conversation with Entra ID, through MSAL. Every operation builds its own MSAL
 * instance with an empty in-memory cache, so one customer's tokens can never be served for
 * another's request.
 */
export class EntraClient {
  private readonly idTokens: IdTokenValidator;
  private readonly networkClient;
  private readonly knownAuthorities: string[];
  private readonly customHost: boolean;

  constructor(private readonly options: EntraClientOptions) {
    this.idTokens = new IdTokenValidator(options.http, options.authorityHost, options.clientId, options.clock);
    this.networkClient = createMsalNetworkClient(options.http);
    const host = new URL(options.authorityHost).host;
    // A non-Microsoft host (sovereign proxy, local fake) must be declared or MSAL asks
    // login.microsoftonline.com to vouch for it.
    this.customHost = !MICROSOFT_AUTHORITY_HOSTS.has(host);
    this.knownAuthorities = this.customHost ? [host] : [];
  }

  /**
   * For Microsoft hosts MSAL uses built-in endpoint metadata. Any other host (a sovereign proxy,
   * the local fake) serves the same Entra layout, so the metadata is given the same way instead
   * of MSAL fetching the OpenID configuration before every token request.
   */
  private authorityMetadata(tenantId: string): string | undefined {
    // Stryker disable next-line ConditionalExpression: the metadata given for a Microsoft host is the one MSAL has built in (see MICROSOFT_AUTHORITY_HOSTS)
    if (!this.customHost) return undefined;
    const base = `${this.options.authorityHost}/${tenantId}`;
    return JSON.stringify({
      token_endpoint: `${base}/oauth2/v2.0/token`,
      authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
      // Stryker disable next-line StringLiteral: sign-out is never asked of MSAL here; the field is only there for a complete metadata document
      end_session_endpoint: `${base}/oauth2/v2.0/logout`,
      // Stryker disable next-line StringLiteral: MSAL does not check the id token's issuer (IdTokenValidator does), so it never reads this one
      issuer: `${base}/v2.0`,
      // Stryker disable next-line StringLiteral: MSAL never fetches signing keys (IdTokenValidator does, from its own URL)
      jwks_uri: `${base}/discovery/v2.0/keys`,
    });
  }

  private app(tenantId: string): ConfidentialClientApplication {
    const config: Configuration = {
      auth: {
        clientId: this.options.clientId,
        ...this.options.credential.msal(),
        authority: `${this.options.authorityHost}/${tenantId}`,
        knownAuthorities: this.knownAuthorities,
        ...(this.customHost ? { authorityMetadata: this.authorityMetadata(tenantId) } : {}),
      },
      system: {
        networkClient: this.networkClient,
        // MSAL's own log lines can quote request parameters; the app logs outcomes itself.
        // Stryker disable next-line ObjectLiteral,BooleanLiteral: MSAL's default logger prints nothing either; the callback that drops every line is the guard against a future default
        loggerOptions: { logLevel: LogLevel.Error, piiLoggingEnabled: false, loggerCallback: () => undefined },
      },
    };
    return new ConfidentialClientApplication(config);
  }

  /** The authorize URL for one consent attempt: PKCE S256, state and nonce, admin consent prompt. */
  async authorizeUrl(input: { tenantId: string; state: string; codeChallenge: string; nonce: string; scope?: string }): Promise<string> {
    return this.app(input.tenantId).getAuthCodeUrl({
      scopes: [input.scope ?? DEFENDER_ALERT_SCOPE],
      redirectUri: this.options.redirectUri,
      state: input.state,
      nonce: input.nonce,
      codeChallenge: input.codeChallenge,
      codeChallengeMethod: "S256",
      prompt: "consent",
      // Stryker disable next-line StringLiteral: query is MSAL's default response mode; it is spelt out because the callback reads the query string
      responseMode: "query",
    });
  }

  /** Redeems an authorization code and proves whose it is before handing back the refresh token. */
  async redeemCode(input: { tenantId: string; code: string; codeVerifier: string; nonce: string; scope?: string }): Promise<RedeemedConsent> {
    const app = this.app(input.tenantId);
    const result = await app.acquireTokenByCode({
      code: input.code,
      scopes: [input.scope ?? DEFENDER_ALERT_SCOPE],
      redirectUri: this.options.redirectUri,
      codeVerifier: input.codeVerifier,
      nonce: input.nonce,
    });
    // Stryker disable next-line ConditionalExpression,StringLiteral: MSAL, given the nonce, refuses an answer without an id token first (nonce_mismatch)
    if (!result.idToken) throw new Error("token response carried no id token");
    const identity = await this.idTokens.validate(result.idToken, { tenantId: input.tenantId, nonce: input.nonce });
    const refreshToken = refreshTokenFrom(app);
    if (!refreshToken) throw new Error("token response carried no refresh token (was offline_access granted?)");
    return { identity, refreshToken };
  }

  /**
   * Redeems a refresh token for an access token to one resource (the tenant's alert source; Entra
   * refresh tokens are multi-resource, but each token request names one) and the rotated refresh token.
   */
  async refresh(input: { tenantId: string; refreshToken: string; scope?: string }): Promise<RefreshedTokens> {
    const app = this.app(input.tenantId);
    const requestedAt = this.options.clock();
    const wallClockAtRequest = Date.now();
    // forceCache: without it MSAL drops the rotated refresh token when no account is cached.
    const result = await app.acquireTokenByRefreshToken({
      refreshToken: input.refreshToken,
      scopes: [input.scope ?? DEFENDER_ALERT_SCOPE],
      forceCache: true,
    });
    // Stryker disable next-line ConditionalExpression,LogicalOperator,OptionalChaining,StringLiteral: MSAL refuses a token response without access_token or expires_in before it returns one
    if (!result?.accessToken || !result.expiresOn) throw new Error("token response carried no access token");
    // MSAL computes expiry on the wall clock; carry the lifetime over to the injected clock.
    const lifetimeMs = result.expiresOn.getTime() - wallClockAtRequest;
    return {
      accessToken: result.accessToken,
      accessTokenExpiresAt: requestedAt + lifetimeMs,
      refreshToken: refreshTokenFrom(app) ?? input.refreshToken,
    };
  }

  /**
   * The tenant's admin-consent endpoint (v2.0) for an application permission: `scope` must be a
   * `{resource}/.default`. Entra ID answers it with a redirect that carries no code and no token,
   * only `tenant`, `admin_consent` and `state`, which anyone can forge: the caller proves the
   * consent with acquireAppToken instead.
   */
  adminConsentUrl(input: { tenantId: string; scope: string; state: string }): string {
    const url = new URL(`${this.options.authorityHost}/${encodeURIComponent(input.tenantId)}/v2.0/adminconsent`);
    url.searchParams.set("client_id", this.options.clientId);
    url.searchParams.set("scope", input.scope);
    url.searchParams.set("redirect_uri", this.options.redirectUri);
    url.searchParams.set("state", input.state);
    return url.toString();
  }

  /**
   * A client-credential (app-only) token for one customer tenant and one resource (`scope` is
   * `{resource}/.default`), with the claims the app decides on. Like every call here it runs on
   * a fresh MSAL instance with an empty cache; skipCache keeps MSAL from even looking.
   */
  async acquireAppToken(input: { tenantId: string; scope: string }): Promise<AppToken> {
    const requestedAt = this.options.clock();
    const wallClockAtRequest = Date.now();
    // Stryker disable next-line BooleanLiteral: every call has a fresh MSAL instance with an empty cache; skipCache only spares the look
    const result = await this.app(input.tenantId).acquireTokenByClientCredential({ scopes: [input.scope], skipCache: true });
    // Stryker disable next-line ConditionalExpression,LogicalOperator,OptionalChaining,StringLiteral: MSAL refuses a token response without access_token or expires_in before it returns one
    if (!result?.accessToken || !result.expiresOn) throw new Error("token response carried no access token");
    const lifetimeMs = result.expiresOn.getTime() - wallClockAtRequest;
    return { accessToken: result.accessToken, accessTokenExpiresAt: requestedAt + lifetimeMs, claims: appTokenClaims(result.accessToken) };
  }
}

/** What the app reads from an app-only access token it was just issued. */
export interface AppTokenClaims {
  /** The tenant the token was issued in. */
  tid: string;
  /** The application permissions (app roles) granted in that tenant. */
  roles: string[];
  /** `app` for an app-only token. */
  idtyp?: string;
  /** The app's service principal in that tenant. */
  oid?: string;
}

export interface AppToken {
  accessToken: string;
  /** When the access token expires, on the injected clock. */
  accessTokenExpiresAt: number;
  claims: AppTokenClaims;
}

/**
 * The claims of an access token that came straight from the token endpoint over TLS: read, not
 * verified (a client must not validate tokens meant for another resource, and this one cannot
 * have been tampered with on the way). A token that is not a JWT has no claims to offer.
 */
function appTokenClaims(accessToken: string): AppTokenClaims {
  const payload = accessToken.split(".")[1];
  let claims: Record<string, unknown> = {};
  try {
    const parsed: unknown = payload ? JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) : undefined;
    if (typeof parsed === "object" && parsed !== null) claims = parsed as Record<string, unknown>;
  } catch {
    claims = {};
  }
  const roles = Array.isArray(claims["roles"]) ? claims["roles"].filter((role): role is string => typeof role === "string") : [];
  return {
    tid: typeof claims["tid"] === "string" ? claims["tid"].toLowerCase() : "",
    roles,
    ...(typeof claims["idtyp"] === "string" ? { idtyp: claims["idtyp"] } : {}),
    ...(typeof claims["oid"] === "string" ? { oid: claims["oid"] } : {}),
  };
}
