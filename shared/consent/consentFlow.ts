import type { AppConfig } from "../config";
import type { Clock } from "../clock";
import { errorKind } from "../errors";
import type { EntraClient } from "../identity/entraClient";
import { IdTokenRejectedError } from "../identity/idTokenValidator";
import { classifyTokenFailure } from "../identity/tokenErrors";
import type { Logger } from "../logging";
import { newAccessTokenKey, newGeneration, type TenantTokenStore } from "../secrets/tenantTokens";
import type { TenantRegistry } from "../state/tenantRegistry";
import { isGuid } from "../validation";
import { verifyConsentLink } from "./consentLink";
import type { ConsentSessionStore } from "./consentSessions";
import { renderPage, type HtmlPage } from "./pages";
import type { SigningKeyProvider } from "./signingKey";

export type ConsentResponse = { kind: "redirect"; location: string } | { kind: "page"; page: HtmlPage };

export interface ConsentFlowDeps {
  config: Pick<AppConfig, "clientId" | "msspTenantId">;
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

const page = (status: number, title: string, ...paragraphs: string[]): ConsentResponse => ({
  kind: "page",
  page: renderPage(status, { title, paragraphs }),
});

const ASK_FOR_NEW_LINK = "Ask your security provider for a new consent link.";
// Entra error codes are short identifiers; anything else is not echoed back.
const ERROR_CODE = /^[a-z_]{1,64}$/;

/**
 * The customer-facing consent flow: a signed link starts an authorization-code + PKCE sign-in,
 * and the callback turns the code into a refresh token in Key Vault. Every failure ends on a
 * readable page and leaves nothing half-written.
 */
export class ConsentFlow {
  constructor(private readonly deps: ConsentFlowDeps) {}

  async start(tenantId: string, exp: string | null, sig: string | null, log: Logger): Promise<ConsentResponse> {
    if (!isGuid(tenantId)) return page(400, "This consent link is not valid", ASK_FOR_NEW_LINK);
    const tenant = tenantId.toLowerCase();
    const key = await this.deps.signingKey.get();
    const record = await this.deps.tenants.get(tenant);
    // An unknown tenant gets the same answer as a bad signature, so links cannot probe which
    // customers are registered.
    const verdict = record
      ? verifyConsentLink(key, { tenantId: tenant, registeredAt: record.createdAt }, exp, sig, this.deps.clock())
      : "bad_signature";
    if (verdict !== "valid") {
      log.warn("consent link refused", { tenantId: tenant, reason: verdict });
      return verdict === "expired"
        ? page(410, "This consent link has expired", ASK_FOR_NEW_LINK)
        : page(400, "This consent link is not valid", ASK_FOR_NEW_LINK);
    }
    if (!record || record.status === "offboarded") {
      log.warn("consent link for an offboarded tenant", { tenantId: tenant });
      return page(410, "This consent link is no longer active", ASK_FOR_NEW_LINK);
    }
    const session = await this.deps.sessions.begin(key, tenant);
    const location = await this.deps.entra.authorizeUrl({
      tenantId: tenant,
      state: session.state,
      codeChallenge: session.codeChallenge,
      nonce: session.nonce,
    });
    log.info("consent started", { tenantId: tenant });
    return { kind: "redirect", location };
  }

  async callback(query: CallbackQuery, log: Logger): Promise<ConsentResponse> {
    const state = query.get("state");
    if (!state) return page(400, "This sign-in response is not valid", "It did not come from a consent link. " + ASK_FOR_NEW_LINK);
    const key = await this.deps.signingKey.get();
    const claim = await this.deps.sessions.claim(key, state);
    if (claim.outcome !== "claimed") {
      log.warn("consent callback refused", { reason: `state_${claim.outcome}` });
      if (claim.outcome === "expired") {
        return page(400, "This sign-in took too long", "Sign-ins must finish within 15 minutes. Open your consent link again.");
      }
      if (claim.outcome === "replayed") {
        return page(400, "This sign-in response was already used", "Open your consent link again if you need to repeat the consent.");
      }
      return page(400, "This sign-in response is not valid", ASK_FOR_NEW_LINK);
    }
    const { session } = claim;
    const tenantId = session.tenantId;

    const error = query.get("error");
    if (error) {
      const code = ERROR_CODE.test(error) ? error : "authorization_error";
      log.warn("consent answered with an error", { tenantId, error: code });
      await this.recordError(tenantId, code, "The consent sign-in was not completed");
      return code === "access_denied"
        ? page(403, "Consent was declined", "The administrator declined the permission request, so no access was granted. You can open the consent link again to retry.")
        : page(400, "Consent was not completed", `Microsoft Entra ID answered: ${code}.`, "Open the consent link again to retry.");
    }
    const code = query.get("code");
    if (!code || code.length > 4096) return page(400, "This sign-in response is not valid", "It carried no authorization code.");

    const tenant = await this.deps.tenants.get(tenantId);
    if (!tenant || tenant.status === "offboarded") {
      log.warn("consent callback for a tenant that is not registered", { tenantId });
      return page(410, "This consent link is no longer active", ASK_FOR_NEW_LINK);
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
      log.error("could not store the refresh token", { tenantId, error: errorKind(failure) });
      await this.recordError(tenantId, "secret_store_unavailable", "The refresh token could not be stored in Key Vault").catch(
        () => undefined,
      );
      return page(503, "Consent could not be saved", "The sign-in worked, but the token could not be stored. Nothing was saved. Please open the consent link again in a few minutes.");
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
      log.warn("consent completed for a tenant offboarded meanwhile; token removed", { tenantId });
      return page(410, "This consent link is no longer active", ASK_FOR_NEW_LINK);
    }
    log.info("tenant connected", { tenantId });
    return {
      kind: "page",
      page: renderPage(200, {
        title: "Consent complete",
        paragraphs: [
          `Thank you. ${tenant.displayName} is now connected, signed in as ${redeemed.identity.username || "your administrator"}.`,
          "One step remains so that your security provider can read your Microsoft Defender for Endpoint alerts:",
        ],
        steps: [
          "Open the Microsoft Defender portal (security.microsoft.com) as a Global or Security Administrator.",
          "Go to Settings > Endpoints > APIs > SIEM and open the MSSP tab.",
          "Enter the application ID and MSSP tenant ID shown below, then choose Authorize application.",
        ],
        details: [
          ["Application (client) ID", this.deps.config.clientId],
          ["MSSP tenant ID", this.deps.config.msspTenantId],
          ["Your tenant ID", tenantId],
        ],
      }),
    };
  }

  private async redeemFailed(tenantId: string, failure: unknown, log: Logger): Promise<ConsentResponse> {
    if (failure instanceof IdTokenRejectedError) {
      log.warn("consent rejected: id token did not match the link", { tenantId, reason: failure.reason });
      if (failure.reason === "tenant_mismatch") {
        await this.recordError(tenantId, "tenant_mismatch", "An administrator of a different organization signed in");
        return page(
          403,
          "Signed in to a different organization",
          "The account you signed in with belongs to a different Microsoft Entra organization than the one this link was issued for. Nothing was saved.",
          "Sign in with an administrator account of the organization the link was sent to.",
        );
      }
      return page(400, "The sign-in could not be verified", "Nothing was saved. Open the consent link again.");
    }
    const classified = classifyTokenFailure(failure);
    const errorCode = classified.aadsts ?? classified.error;
    log.warn("authorization code redemption failed", { tenantId, error: classified.error, aadsts: classified.aadsts, category: classified.category });
    if (classified.category === "app_credential") {
      log.error("the MSSP application's credential was rejected by Entra ID; check MSSP_CLIENT_SECRET", { error: errorCode });
      return page(502, "Consent could not be completed", "The security provider's application is misconfigured. Nothing was saved; your provider has been notified by its monitoring.");
    }
    if (classified.category === "transient") {
      return page(503, "Consent could not be completed", "Microsoft Entra ID is temporarily unavailable. Nothing was saved. Please open the consent link again in a few minutes.");
    }
    await this.recordError(tenantId, errorCode, "The authorization code could not be redeemed");
    return page(400, "Consent could not be completed", `Microsoft Entra ID refused the sign-in (${errorCode}). Nothing was saved. Open the consent link again.`);
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
