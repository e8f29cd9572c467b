import { DEFAULT_MSSP_DISPLAY_NAME, type AppConfig, type LocalDevSettings } from "../config";
import type { Clock } from "../clock";
import { errorKind } from "../errors";
import type { EntraClient } from "../identity/entraClient";
import { IdTokenRejectedError } from "../identity/idTokenValidator";
import { classifyTokenFailure } from "../identity/tokenErrors";
import type { LogFields, Logger } from "../logging";
import { newAccessTokenKey, newGeneration, type TenantTokenStore } from "../secrets/tenantTokens";
import type { TenantRegistry } from "../state/tenantRegistry";
import { isGuid } from "../validation";
import { verifyConsentLink } from "./consentLink";
import type { ConsentSessionStore } from "./consentSessions";
import { renderPage, type ConsentPageOptions, type HtmlPage } from "./pages";
import type { SigningKeyProvider } from "./signingKey";

export type ConsentResponse = { kind: "redirect"; location: string } | { kind: "page"; page: HtmlPage };

export interface ConsentFlowDeps {
  config: Pick<AppConfig, "clientId" | "msspTenantId"> & {
    /** MSSP_DISPLAY_NAME: every page names the MSSP. */
    msspDisplayName?: string;
    localDev?: Pick<LocalDevSettings, "signInBaseUrl" | "sandbox">;
  };
  tenants: TenantRegistry;
  sessions: ConsentSessionStore;
  signingKey: SigningKeyProvider;
  entra: EntraClient;
  tokens: TenantTokenStore;
  clock: Clock;
}

export interface CallbackQuery {
  get(name: string): string | null;
}


/**
 * The browser's hop to the sign-in page, moved to LOCAL_DEV_SIGN_IN_BASE_URL when that is set.
 * Why: in a local sandbox the Entra ID stand-in serves HTTPS with a self-signed certificate,
 * which a person's browser refuses or warns about, so the stand-in also serves its sign-in page
 * over plain HTTP on loopback. Only the origin changes: the path and the query MSAL built
 * (state, PKCE challenge, nonce, redirect URI) stay as they are, and MSAL itself keeps talking
 * to the HTTPS authority for tokens. The setting is refused in Azure (shared/config.ts).
 */
export function signInRedirect(authorizeUrl: string, signInBaseUrl: string | undefined): string {
  if (!signInBaseUrl) return authorizeUrl;
  const built = new URL(authorizeUrl);
  return `${new URL(signInBaseUrl).origin}${built.pathname}${built.search}${built.hash}`;
}
/**
 * The authorization errors OAuth 2.0 (RFC 6749 §4.1.2.1) and OpenID Connect define: only these are
 * shown on the page or stored on the tenant; anything else in `error=` becomes
 * `authorization_error`, so a crafted callback cannot write its own words into health.
 */
const KNOWN_ERROR_CODES: ReadonlySet<string> = new Set([
  "invalid_request",
  "unauthorized_client",
  "access_denied",
  "unsupported_response_type",
  "invalid_scope",
  "server_error",
  "temporarily_unavailable",
  "interaction_required",
  "login_required",
  "account_selection_required",
  "consent_required",
  "invalid_request_uri",
  "invalid_request_object",
  "request_not_supported",
  "request_uri_not_supported",
  "registration_not_supported",
]);

type ConsentOutcome = "started" | "connected" | "refused" | "declined" | "failed";

/**
 * The fields every consent log line carries besides the tenant id (docs/operations.md,
 * "Telemetry"): which step, how it ended and, when it did not succeed, a code. Codes are
 * identifiers the app or Entra ID chose, never a value from the request (no code, state or token).
 */
function step(consentStep: "start" | "callback", outcome: ConsentOutcome, errorCode?: string): LogFields {
  return { consentStep, outcome, errorCode };
}

/**
 * The customer-facing consent flow: a signed link starts an authorization-code + PKCE sign-in,
 * and the callback turns the code into a refresh token in Key Vault. Every failure ends on a
 * readable page and leaves nothing half-written.
 */
export class ConsentFlow {
  constructor(private readonly deps: ConsentFlowDeps) {}

  private get msspName(): string {
    return this.deps.config.msspDisplayName ?? DEFAULT_MSSP_DISPLAY_NAME;
  }

  private get pageOptions(): ConsentPageOptions {
    return { msspName: this.msspName, sandbox: this.deps.config.localDev?.sandbox === true };
  }

  private get askForNewLink(): string {
    return `Ask ${this.msspName} for a new consent link.`;
  }

  private page(status: number, title: string, ...paragraphs: string[]): ConsentResponse {
    return { kind: "page", page: renderPage(status, { title, paragraphs }, this.pageOptions) };
  }

  async start(tenantId: string, exp: string | null, sig: string | null, log: Logger): Promise<ConsentResponse> {
    if (!isGuid(tenantId)) return this.page(400, "This consent link is not valid", this.askForNewLink);
    const tenant = tenantId.toLowerCase();
    const key = await this.deps.signingKey.get();
    const record = await this.deps.tenants.get(tenant);
    // An unknown tenant gets the same answer as a bad signature, so links cannot probe which
    // customers are registered.
    const verdict = record
      ? verifyConsentLink(key, { tenantId: tenant, registeredAt: record.createdAt }, exp, sig, this.deps.clock())
      : "bad_signature";
    if (verdict !== "valid") {
      log.warn("consent link refused", { tenantId: tenant, reason: verdict, ...step("start", "refused", `link_${verdict}`) });
      return verdict === "expired"
        ? this.page(410, "This consent link has expired", this.askForNewLink)
        : this.page(400, "This consent link is not valid", this.askForNewLink);
    }
    if (!record || record.status === "offboarded") {
      log.warn("consent link for an offboarded tenant", { tenantId: tenant, ...step("start", "refused", "tenant_offboarded") });
      return this.page(410, "This consent link is no longer active", this.askForNewLink);
    }
    const session = await this.deps.sessions.begin(key, tenant);
    const authorizeUrl = await this.deps.entra.authorizeUrl({
      tenantId: tenant,
      state: session.state,
      codeChallenge: session.codeChallenge,
      nonce: session.nonce,
    });
    const location = signInRedirect(authorizeUrl, this.deps.config.localDev?.signInBaseUrl);
    log.info("consent started", { tenantId: tenant, ...step("start", "started") });
    return { kind: "redirect", location };
  }

  async callback(query: CallbackQuery, log: Logger): Promise<ConsentResponse> {
    const state = query.get("state");
    if (!state) return this.page(400, "This sign-in response is not valid", "It did not come from a consent link. " + this.askForNewLink);
    const key = await this.deps.signingKey.get();
    const claim = await this.deps.sessions.claim(key, state);
    if (claim.outcome !== "claimed") {
      log.warn("consent callback refused", { reason: `state_${claim.outcome}`, ...step("callback", "refused", `state_${claim.outcome}`) });
      if (claim.outcome === "expired") {
        return this.page(400, "This sign-in took too long", "Sign-ins must finish within 15 minutes. Open your consent link again.");
      }
      if (claim.outcome === "replayed") {
        return this.page(400, "This sign-in response was already used", "Open your consent link again if you need to repeat the consent.");
      }
      return this.page(400, "This sign-in response is not valid", this.askForNewLink);
    }
    const { session } = claim;
    const tenantId = session.tenantId;

    const error = query.get("error");
    if (error) {
      const code = KNOWN_ERROR_CODES.has(error) ? error : "authorization_error";
      log.warn("consent answered with an error", { tenantId, error: code, ...step("callback", code === "access_denied" ? "declined" : "failed", code) });
      await this.recordError(tenantId, code, "The consent sign-in was not completed");
      return code === "access_denied"
        ? this.page(403, "Consent was declined", "The administrator declined the permission request, so no access was granted. You can open the consent link again to retry.")
        : this.page(400, "Consent was not completed", `Microsoft Entra ID answered: ${code}.`, "Open the consent link again to retry.");
    }
    const code = query.get("code");
    if (!code || code.length > 4096) {
      log.warn("consent callback without a usable authorization code", { tenantId, ...step("callback", "refused", "missing_code") });
      return this.page(400, "This sign-in response is not valid", "It carried no authorization code.");
    }

    const tenant = await this.deps.tenants.get(tenantId);
    if (!tenant || tenant.status === "offboarded") {
      log.warn("consent callback for a tenant that is not registered", { tenantId, ...step("callback", "refused", "tenant_not_registered") });
      return this.page(410, "This consent link is no longer active", this.askForNewLink);
    }

    let redeemed;
    try {
      redeemed = await this.deps.entra.redeemCode({ tenantId, code, codeVerifier: session.codeVerifier, nonce: session.nonce });
    } catch (failure) {
      return this.redeemFailed(tenantId, failure, log);
    }

    try {
      await this.deps.tokens.write(tenantId, {
        refreshToken: redeemed.refreshToken,
        refreshTokenObtainedAt: this.deps.clock(),
        accessTokenKey: newAccessTokenKey(),
        generation: newGeneration(this.deps.clock()),
      });
    } catch (failure) {
      log.error("could not store the refresh token", { tenantId, error: errorKind(failure), ...step("callback", "failed", "secret_store_unavailable") });
      await this.recordError(tenantId, "secret_store_unavailable", "The refresh token could not be stored in Key Vault").catch(
        () => undefined,
      );
      return this.page(503, "Consent could not be saved", "The sign-in worked, but the token could not be stored. Nothing was saved. Please open the consent link again in a few minutes.");
    }

    const nowIso = new Date(this.deps.clock()).toISOString();
    let offboardedMeanwhile = false;
    await this.deps.tenants.update(tenantId, (current) => {
      // The operator may have offboarded the tenant while the admin was signing in.
      if (current.status === "offboarded") {
        offboardedMeanwhile = true;
        return undefined;
      }
      return {
      status: "connected",
      consentedBy: redeemed.identity.username || redeemed.identity.objectId,
      consentedAt: nowIso,
      lastErrorCode: undefined,
      lastErrorMessage: undefined,
      lastErrorAt: undefined,
      };
    });
    if (offboardedMeanwhile) {
      await this.deps.tokens.remove(tenantId);
      log.warn("consent completed for a tenant offboarded meanwhile; token removed", { tenantId, ...step("callback", "refused", "tenant_offboarded") });
      return this.page(410, "This consent link is no longer active", this.askForNewLink);
    }
    log.info("tenant connected", { tenantId, ...step("callback", "connected") });
    return {
      kind: "page",
      page: renderPage(
        200,
        {
          title: "Consent complete",
          paragraphs: [
            `Thank you. ${tenant.displayName} is now connected, signed in as ${redeemed.identity.username || "your administrator"}.`,
            `One step remains so that ${this.msspName} can read your Microsoft Defender for Endpoint alerts:`,
          ],
          steps: [
            "Open the Microsoft Defender portal (security.microsoft.com) as a Global or Security Administrator.",
            "Go to Settings > Endpoints > APIs > SIEM and open the MSSP tab.",
            `Enter the Application ID and the Tenant ID below (both belong to ${this.msspName}), then choose Authorize application.`,
          ],
          copyable: [
            ["Application ID", this.deps.config.clientId],
            ["Tenant ID", this.deps.config.msspTenantId],
          ],
          details: [["Your tenant ID (for reference)", tenantId]],
        },
        this.pageOptions,
      ),
    };
  }

  private async redeemFailed(tenantId: string, failure: unknown, log: Logger): Promise<ConsentResponse> {
    if (failure instanceof IdTokenRejectedError) {
      log.warn("consent rejected: id token did not match the link", { tenantId, reason: failure.reason, ...step("callback", "failed", failure.reason) });
      if (failure.reason === "tenant_mismatch") {
        await this.recordError(tenantId, "tenant_mismatch", "An administrator of a different organization signed in");
        return this.page(
          403,
          "Signed in to a different organization",
          "The account you signed in with belongs to a different Microsoft Entra organization than the one this link was issued for. Nothing was saved.",
          "Sign in with an administrator account of the organization the link was sent to.",
        );
      }
      return this.page(400, "The sign-in could not be verified", "Nothing was saved. Open the consent link again.");
    }
    const classified = classifyTokenFailure(failure);
    const errorCode = classified.aadsts ?? classified.error;
    log.warn("authorization code redemption failed", {
      tenantId,
      error: classified.error,
      aadsts: classified.aadsts,
      category: classified.category,
      ...step("callback", "failed", errorCode),
    });
    if (classified.category === "app_credential") {
      log.error("the MSSP application's credential was rejected by Entra ID; check MSSP_CLIENT_SECRET", {
        tenantId,
        error: errorCode,
        category: classified.category,
        ...step("callback", "failed", errorCode),
      });
      return this.page(502, "Consent could not be completed", `The application of ${this.msspName} is misconfigured. Nothing was saved; the monitoring of ${this.msspName} reports this failure to them.`);
    }
    if (classified.category === "transient") {
      return this.page(503, "Consent could not be completed", "Microsoft Entra ID is temporarily unavailable. Nothing was saved. Please open the consent link again in a few minutes.");
    }
    await this.recordError(tenantId, errorCode, "The authorization code could not be redeemed");
    return this.page(400, "Consent could not be completed", `Microsoft Entra ID refused the sign-in (${errorCode}). Nothing was saved. Open the consent link again.`);
  }

  /** Housekeeping for the scheduler: sign-in attempts older than a day are deleted. */
  async purgeExpiredSessions(): Promise<number> {
    return this.deps.sessions.purgeExpired();
  }

  private async recordError(tenantId: string, code: string, message: string): Promise<void> {
    const at = new Date(this.deps.clock()).toISOString();
    await this.deps.tenants.update(tenantId, () => ({ lastErrorCode: code, lastErrorMessage: message, lastErrorAt: at }));
  }
}
