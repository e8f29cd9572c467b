import { credentialRemedy } from "../identity/appCredential";
import { createHash, timingSafeEqual } from "node:crypto";
import { DEFAULT_MSSP_DISPLAY_NAME, type AppConfig, type LocalDevSettings } from "../config";
import type { Clock } from "../clock";
import type { AuditTrail } from "../audit/auditTrail";
import { readCookie } from "../console/csrf";
import { errorKind } from "../errors";
import type { EntraClient } from "../identity/entraClient";
import { IdTokenRejectedError } from "../identity/idTokenValidator";
import { classifyTokenFailure, type TokenFailure } from "../identity/tokenErrors";
import type { LogFields, Logger } from "../logging";
import { newAccessTokenKey, newGeneration, type TenantTokenStore } from "../secrets/tenantTokens";
import type { TenantRecord, TenantRegistry } from "../state/tenantRegistry";
import { ALERT_SOURCE_PROFILES, sourceOf, isAlertSource, type AlertSourceKind } from "../sources/alertSources";
import type { PageCookie } from "../ui/page";
import { isGuid } from "../validation";
import type { ApplicationConsentVerifier } from "./applicationConsent";
import { verifyConsentLink, type ConsentLinkQuery } from "./consentLink";
import { APPLICATION_PERMISSIONS, consentModelOf, isConsentModel, type ConsentModel } from "./consentModel";
import { linkRefusal, type ConsentLinkRecord, type ConsentLinkStore, type LinkRefusal } from "./consentLinks";
import { ConsentSessionLimitError, SESSION_LIFETIME_MS, type ConsentSession, type ConsentSessionStore } from "./consentSessions";
import { renderPage, type ConsentPageOptions, type HtmlPage } from "./pages";
import type { SigningKeyProvider } from "./signingKey";

export type ConsentResponse =
  | { kind: "redirect"; location: string; cookies?: PageCookie[] }
  | { kind: "page"; page: HtmlPage };

/**
 * The sign-in's `state` is bound to the browser that started it: the start sets a `__Host-`
 * cookie holding a hash of the state (never the state itself), and the callback is accepted only
 * from a browser that sends it. A sign-in started by someone else and finished in the admin's
 * browser (a login-CSRF or a link handed over mid-flow) fails there. The name carries part of the
 * hash so two consents open in one browser do not overwrite each other's cookie. SameSite=Lax:
 * Entra ID's redirect back is a top-level GET, which Lax cookies follow.
 */
const STATE_COOKIE_PREFIX = "__Host-consent-";

function stateHash(state: string): string {
  return createHash("sha256").update(`consent-state:${state}`).digest("base64url");
}

function stateCookieName(hash: string): string {
  return `${STATE_COOKIE_PREFIX}${hash.slice(0, 16).replace(/[^A-Za-z0-9]/g, "x")}`;
}

/** The cookie a consent start sets for `state` (exported so tests can play a browser that forges its own). */
export function stateCookie(state: string): PageCookie {
  const hash = stateHash(state);
  return { name: stateCookieName(hash), value: hash, path: "/", secure: true, httpOnly: true, sameSite: "Lax", maxAge: SESSION_LIFETIME_MS / 1000 };
}

function clearedStateCookie(state: string): PageCookie {
  return { name: stateCookieName(stateHash(state)), value: "", path: "/", secure: true, httpOnly: true, sameSite: "Lax", maxAge: 0 };
}

function browserStarted(state: string, cookieHeader: string | null): boolean {
  const hash = stateHash(state);
  const sent = readCookie(cookieHeader, stateCookieName(hash));
  if (!sent || sent.length !== hash.length) return false;
  return timingSafeEqual(Buffer.from(sent), Buffer.from(hash));
}

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
  links: ConsentLinkStore;
  audit: AuditTrail;
  clock: Clock;
  /** Proves an application-permission consent (shared/consent/applicationConsent.ts). */
  application: ApplicationConsentVerifier;
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
  // The admin-consent endpoint's answer when the administrator cancels (client-credentials docs).
  "permission_denied",
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
    return { kind: "page", page: this.htmlPage(status, title, ...paragraphs) };
  }

  private htmlPage(status: number, title: string, ...paragraphs: string[]): HtmlPage {
    return renderPage(status, { title, paragraphs }, this.pageOptions);
  }

  /** The page for a link its record no longer lets start a sign-in. */
  private linkRefused(refusal: LinkRefusal): ConsentResponse {
    if (refusal === "revoked") return this.page(410, "This consent link was withdrawn", this.askForNewLink);
    if (refusal === "in_use") {
      return this.page(409, "This consent link is being used right now", "Another sign-in through this link is finishing at this moment. If that was not you, tell your provider.", "Otherwise wait a minute and open the link again.");
    }
    if (refusal === "spent") {
      return this.page(
        410,
        "This consent link has already been used",
        "Your organization is already connected through it, so it cannot be used again.",
        `If ${this.msspName} asked you to consent again, ask them for the new link they issued.`,
      );
    }
    return this.page(400, "This consent link is not valid", this.askForNewLink);
  }

  async start(tenantId: string, linkQuery: ConsentLinkQuery, log: Logger): Promise<ConsentResponse> {
    if (!isGuid(tenantId)) return this.page(400, "This consent link is not valid", this.askForNewLink);
    const tenant = tenantId.toLowerCase();
    const key = await this.deps.signingKey.get();
    const record = await this.deps.tenants.get(tenant);
    // An unknown tenant gets the same answer as a bad signature, so links cannot probe which
    // customers are registered.
    const verdict = record
      ? verifyConsentLink(key, { tenantId: tenant, registeredAt: record.createdAt }, linkQuery, this.deps.clock())
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
    const linkId = linkQuery.link as string;
    const link = await this.deps.links.get(tenant, linkId, record.createdAt);
    const refusal = linkRefusal(link, record);
    if (refusal) {
      log.warn("consent link refused by its record", { tenantId: tenant, reason: refusal, ...step("start", "refused", `link_${refusal}`) });
      return this.linkRefused(refusal);
    }
    let session;
    try {
      session = await this.deps.sessions.begin(key, tenant, linkId);
    } catch (error) {
      if (!(error instanceof ConsentSessionLimitError)) throw error;
      log.warn("consent start refused: too many open sign-ins", { tenantId: tenant, scope: error.scope, ...step("start", "refused", "too_many_sign_ins") });
      const minutes = Math.max(1, Math.ceil(error.retryAfterSeconds / 60));
      const page = this.htmlPage(429, "Too many sign-ins in progress", `This link has started many sign-ins in the last few minutes. Please try again in ${minutes} minute(s), in one browser window.`);
      page.headers["Retry-After"] = String(Math.max(1, error.retryAfterSeconds));
      return { kind: "page", page };
    }
    const source = consentSource(record.source, link);
    if (consentModelFor(record, link) === "application") {
      // The admin-consent endpoint: same server-side state, same browser binding, no code and no PKCE
      // (nothing is redeemed: the callback proves the consent with a client-credential token).
      const adminConsentUrl = this.deps.entra.adminConsentUrl({ tenantId: tenant, scope: APPLICATION_PERMISSIONS[source].scope, state: session.state });
      log.info("consent started", { tenantId: tenant, source, consentModel: "application", ...step("start", "started") });
      return { kind: "redirect", location: signInRedirect(adminConsentUrl, this.deps.config.localDev?.signInBaseUrl), cookies: [stateCookie(session.state)] };
    }
    const authorizeUrl = await this.deps.entra.authorizeUrl({
      tenantId: tenant,
      state: session.state,
      codeChallenge: session.codeChallenge,
      nonce: session.nonce,
      scope: ALERT_SOURCE_PROFILES[source].scope,
    });
    const location = signInRedirect(authorizeUrl, this.deps.config.localDev?.signInBaseUrl);
    log.info("consent started", { tenantId: tenant, source, ...step("start", "started") });
    return { kind: "redirect", location, cookies: [stateCookie(session.state)] };
  }

  async callback(query: CallbackQuery, cookieHeader: string | null, log: Logger): Promise<ConsentResponse> {
    const response = await this.finish(query, cookieHeader, log);
    const state = query.get("state");
    // The state's cookie has done its job whatever the outcome (a retry starts a new sign-in).
    if (state && response.kind === "page" && browserStarted(state, cookieHeader)) {
      response.page.cookies = [...(response.page.cookies ?? []), clearedStateCookie(state)];
    }
    return response;
  }

  private async finish(query: CallbackQuery, cookieHeader: string | null, log: Logger): Promise<ConsentResponse> {
    const state = query.get("state");
    if (!state || state.length > 256) return this.page(400, "This sign-in response is not valid", "It did not come from a consent link. " + this.askForNewLink);
    // Before the session is claimed: a callback from another browser changes nothing.
    if (!browserStarted(state, cookieHeader)) {
      log.warn("consent callback refused", { reason: "state_other_browser", ...step("callback", "refused", "state_other_browser") });
      return this.page(
        400,
        "Finish the sign-in in the browser that started it",
        "This sign-in was started in another browser (or this browser's cookies were cleared), so it cannot be completed here. Nothing was saved.",
        "Open the consent link again in this browser.",
      );
    }
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

    const tenant = await this.deps.tenants.get(tenantId);
    if (!tenant || tenant.status === "offboarded") {
      log.warn("consent callback for a tenant that is not registered", { tenantId, ...step("callback", "refused", "tenant_not_registered") });
      return this.page(410, "This consent link is no longer active", this.askForNewLink);
    }
    // The link may have been revoked, spent or superseded while this admin signed in; only a link
    // that may still be used gets to write anything, an error code included.
    const link = await this.deps.links.get(tenantId, session.linkId, tenant.createdAt);
    const refusal = linkRefusal(link, tenant);
    if (refusal) return this.refusedByLink(tenantId, refusal, log);

    const error = query.get("error");
    if (error) {
      const code = KNOWN_ERROR_CODES.has(error) ? error : "authorization_error";
      const declined = code === "access_denied" || code === "permission_denied";
      log.warn("consent answered with an error", { tenantId, error: code, ...step("callback", declined ? "declined" : "failed", code) });
      await this.recordError(tenantId, code, "The consent sign-in was not completed");
      return declined
        ? this.page(403, "Consent was declined", "The administrator declined the permission request, so no access was granted. You can open the consent link again to retry.")
        : this.page(400, "Consent was not completed", `Microsoft Entra ID answered: ${code}.`, "Open the consent link again to retry.");
    }
    if (consentModelFor(tenant, link) === "application") return this.finishApplication(query, tenant, session, state, log);
    const code = query.get("code");
    if (!code || code.length > 4096) {
      log.warn("consent callback without a usable authorization code", { tenantId, ...step("callback", "refused", "missing_code") });
      return this.page(400, "This sign-in response is not valid", "It carried no authorization code.");
    }

    // One finishing sign-in per link: a second callback through the same link waits its turn or is refused.
    const claimant = stateHash(state);
    const claimRefusal = await this.deps.links.claim(tenantId, session.linkId, tenant, claimant);
    if (claimRefusal) return this.refusedByLink(tenantId, claimRefusal, log);
    const release = () => this.deps.links.release(tenantId, session.linkId, claimant).catch(() => undefined);
    const response = await this.connect(tenant, session, code, log);
    if (response.connected) {
      await this.deps.links.markUsed(tenantId, session.linkId);
    } else {
      await release();
    }
    return response.page;
  }

  private refusedByLink(tenantId: string, refusal: LinkRefusal, log: Logger): ConsentResponse {
    log.warn("consent callback refused by the link's record", { tenantId, reason: refusal, ...step("callback", "refused", `link_${refusal}`) });
    return this.linkRefused(refusal);
  }

  /** Redeems the code, stores the refresh token and marks the tenant connected; the link is held meanwhile. */
  private async connect(
    tenant: TenantRecord,
    session: ConsentSession,
    code: string,
    log: Logger,
  ): Promise<{ connected: boolean; page: ConsentResponse }> {
    const tenantId = tenant.tenantId;
    const link = await this.deps.links.get(tenantId, session.linkId, tenant.createdAt);
    const source = consentSource(tenant.source, link);
    const failed = (page: ConsentResponse) => ({ connected: false, page });

    let redeemed;
    try {
      redeemed = await this.deps.entra.redeemCode({
        tenantId,
        code,
        codeVerifier: session.codeVerifier,
        nonce: session.nonce,
        scope: ALERT_SOURCE_PROFILES[source].scope,
      });
    } catch (failure) {
      return failed(await this.redeemFailed(tenantId, failure, log));
    }
    // Read again right before the stored consent is replaced: a revocation meanwhile still wins.
    if (await this.deps.links.revokedSince(tenantId, session.linkId)) {
      log.warn("consent link revoked while its sign-in finished; nothing stored", { tenantId, ...step("callback", "refused", "link_revoked") });
      return failed(this.linkRefused("revoked"));
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
      return failed(
        this.page(503, "Consent could not be saved", "The sign-in worked, but the token could not be stored. Nothing was saved. Please open the consent link again in a few minutes."),
      );
    }

    const nowIso = new Date(this.deps.clock()).toISOString();
    const consenter = redeemed.identity.username || redeemed.identity.objectId;
    let goneMeanwhile = false;
    let before: { consentedBy?: string; consentedByObjectId?: string; source: AlertSourceKind; consentModel: ConsentModel } | undefined;
    await this.deps.tenants.update(tenantId, (current) => {
      // The operator may have offboarded (or offboarded and registered again) the tenant meanwhile.
      if (current.status === "offboarded" || current.createdAt !== tenant.createdAt) {
        goneMeanwhile = true;
        return undefined;
      }
      // A consent given the application way had no user: the next user is no "different" one.
      const wasDelegated = consentModelOf(current) === "delegated";
      before = {
        source: sourceOf(current),
        consentModel: consentModelOf(current),
        ...(wasDelegated && current.consentedBy ? { consentedBy: current.consentedBy } : {}),
        ...(wasDelegated && current.consentedByObjectId ? { consentedByObjectId: current.consentedByObjectId } : {}),
      };
      const changedConsenter = wasDelegated && isDifferentConsenter(current, redeemed.identity.objectId, consenter);
      return {
        status: "connected",
        source,
        consentModel: "delegated",
        consentedBy: consenter,
        consentedByObjectId: redeemed.identity.objectId,
        consentedAt: nowIso,
        ...(changedConsenter ? { previousConsentedBy: current.consentedBy ?? current.consentedByObjectId ?? "", consenterChangedAt: nowIso } : {}),
        lastErrorCode: undefined,
        lastErrorMessage: undefined,
        lastErrorAt: undefined,
      };
    });
    if (goneMeanwhile) {
      await this.deps.tokens.remove(tenantId);
      log.warn("consent completed for a tenant offboarded meanwhile; token removed", { tenantId, ...step("callback", "refused", "tenant_offboarded") });
      return failed(this.page(410, "This consent link is no longer active", this.askForNewLink));
    }
    const admin = { kind: "customer_admin", id: redeemed.identity.objectId, name: consenter };
    await this.deps.audit.record({ tenantId, action: "consent_completed", actor: admin, detail: `Consent given through link ${session.linkId} for source ${source}` });
    // The pull resets its own state when it meets the new source (shared/pull/tenantPull.ts), under its lease.
    if (before && before.source !== source) {
      await this.deps.audit.record({ tenantId, action: "source_changed", actor: admin, detail: `Alert source changed from ${before.source} to ${source}` });
    }
    if (before && before.consentModel !== "delegated") {
      await this.deps.audit.record({ tenantId, action: "consent_completed", actor: admin, detail: `Consent model changed from ${before.consentModel} to delegated; a refresh token is stored from now on` });
    }
    if (before && isDifferentConsenter(before, redeemed.identity.objectId, consenter)) {
      await this.deps.audit.record({
        tenantId,
        action: "consenter_changed",
        actor: admin,
        detail: `The consent was given by a different user than before (was ${before.consentedBy ?? before.consentedByObjectId ?? "unknown"})`,
      });
      log.warn("consent given by a different user than the current consenter", { tenantId, ...step("callback", "connected", "consenter_changed") });
    }
    log.info("tenant connected", { tenantId, source, ...step("callback", "connected") });
    return { connected: true, page: { kind: "page", page: this.connectedPage(tenant.displayName, tenantId, source, redeemed.identity.username) } };
  }

  private connectedPage(displayName: string, tenantId: string, source: AlertSourceKind, username: string): HtmlPage {
    const thanks = `Thank you. ${displayName} is now connected, signed in as ${username || "your administrator"}.`;
    if (source === "graph") {
      return renderPage(
        200,
        {
          title: "Consent complete",
          paragraphs: [
            thanks,
            `${this.msspName} now reads your Microsoft Defender XDR alerts through Microsoft Graph. Nothing else is needed; the access follows the permissions of the account that consented (for example Security Reader).`,
          ],
          details: [["Your tenant ID (for reference)", tenantId]],
        },
        this.pageOptions,
      );
    }
    return renderPage(
      200,
      {
        title: "Consent complete",
        paragraphs: [thanks, `One step remains so that ${this.msspName} can read your Microsoft Defender for Endpoint alerts:`],
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
    );
  }

  /**
   * The admin-consent callback. Its `tenant` and `admin_consent` parameters prove nothing (anyone
   * can type them): the consent counts only once a client-credential token for the link's tenant,
   * with the role, has read from the source. A `tenant` naming another organization is refused at
   * once, since no proof for the link's tenant can come of it.
   */
  private async finishApplication(query: CallbackQuery, tenant: TenantRecord, session: ConsentSession, state: string, log: Logger): Promise<ConsentResponse> {
    const tenantId = tenant.tenantId;
    const named = query.get("tenant");
    if (named !== null && named.toLowerCase() !== tenantId) {
      log.warn("admin consent callback names another tenant; nothing changed", { tenantId, consentModel: "application", ...step("callback", "refused", "tenant_mismatch") });
      return this.page(
        403,
        "Consent was given for a different organization",
        "The consent did not come from the organization this link was issued for, so it was not used. Nothing was saved.",
        "Open the consent link again and consent as an administrator of the organization the link was sent to.",
      );
    }
    const claimant = stateHash(state);
    const claimRefusal = await this.deps.links.claim(tenantId, session.linkId, tenant, claimant);
    if (claimRefusal) return this.refusedByLink(tenantId, claimRefusal, log);
    const response = await this.connectApplication(tenant, session, log);
    if (response.connected) {
      await this.deps.links.markUsed(tenantId, session.linkId);
    } else {
      await this.deps.links.release(tenantId, session.linkId, claimant).catch(() => undefined);
    }
    return response.page;
  }

  private async connectApplication(tenant: TenantRecord, session: ConsentSession, log: Logger): Promise<{ connected: boolean; page: ConsentResponse }> {
    const tenantId = tenant.tenantId;
    const link = await this.deps.links.get(tenantId, session.linkId, tenant.createdAt);
    const source = consentSource(tenant.source, link);
    const failed = (page: ConsentResponse) => ({ connected: false, page });
    const proof = await this.deps.application.prove({ tenantId, source, ...(tenant.defenderRegion ? { defenderRegion: tenant.defenderRegion } : {}) });
    const fields = { tenantId, source, consentModel: "application" };
    if (proof.kind === "pending") {
      // Not a failure: a fresh consent takes a while to reach the token service. The link stays usable.
      log.info("admin consent not usable yet", { ...fields, reason: proof.reason, ...step("callback", "refused", "consent_pending") });
      return failed(
        this.page(
          202,
          "Almost done: the consent is not active yet",
          `Microsoft Entra ID does not yet let ${this.msspName} read your alerts with the permission you granted. A new consent can take a minute to take effect. Nothing was saved yet.`,
          "Please try again in a minute: open the consent link again. If you did not grant the consent, grant it when Microsoft asks.",
        ),
      );
    }
    if (proof.kind === "wrong_tenant") {
      log.warn("app-only token was for another tenant; nothing stored", { ...fields, ...step("callback", "failed", "tenant_mismatch") });
      return failed(this.page(403, "Consent could not be verified", "Microsoft Entra ID answered for a different organization. Nothing was saved. Open the consent link again."));
    }
    if (proof.kind === "source_unavailable" && proof.code === "source_forbidden") {
      log.warn("the alert source refused an app token that carries the role", { ...fields, error: proof.code, ...step("callback", "failed", proof.code) });
      return failed(
        this.page(
          403,
          "Consent could not be confirmed",
          `The permission was granted, but the ${ALERT_SOURCE_PROFILES[source].label} refused access with it. Is the product licensed and turned on in your tenant? Nothing was saved.`,
          "Once the service is available to your tenant, open the consent link again.",
        ),
      );
    }
    if (proof.kind === "source_unavailable") {
      log.warn("could not confirm the access at the alert source", { ...fields, error: proof.code, ...step("callback", "failed", proof.code) });
      return failed(this.page(503, "Consent could not be confirmed", "The consent was received, but the alert service could not be reached to confirm the access. Nothing was saved. Please open the consent link again in a few minutes."));
    }
    if (proof.kind === "token_failed") return failed(await this.tokenFailed(tenantId, proof.failure, log));

    if (await this.deps.links.revokedSince(tenantId, session.linkId)) {
      log.warn("consent link revoked while its consent finished; nothing stored", { ...fields, ...step("callback", "refused", "link_revoked") });
      return failed(this.linkRefused("revoked"));
    }
    const nowIso = new Date(this.deps.clock()).toISOString();
    let goneMeanwhile = false;
    let before: { source: AlertSourceKind; consentModel: ConsentModel } | undefined;
    await this.deps.tenants.update(tenantId, (current) => {
      if (current.status === "offboarded" || current.createdAt !== tenant.createdAt) {
        goneMeanwhile = true;
        return undefined;
      }
      before = { source: sourceOf(current), consentModel: consentModelOf(current) };
      return {
        status: "connected",
        source,
        consentModel: "application",
        // No user consented: the tenant's administrator granted the app a permission.
        consentedBy: ADMIN_CONSENT_NAME,
        consentedByObjectId: undefined,
        consentedAt: nowIso,
        lastErrorCode: undefined,
        lastErrorMessage: undefined,
        lastErrorAt: undefined,
      };
    });
    if (goneMeanwhile) {
      log.warn("admin consent completed for a tenant offboarded meanwhile", { ...fields, ...step("callback", "refused", "tenant_offboarded") });
      return failed(this.page(410, "This consent link is no longer active", this.askForNewLink));
    }
    // A refresh token from an earlier delegated consent is no longer needed: it goes.
    let tokenDeleted = true;
    await this.deps.tokens.remove(tenantId).catch((error: unknown) => {
      tokenDeleted = false;
      log.warn("could not delete the tenant's former refresh token", { ...fields, error: errorKind(error) });
    });
    const admin = { kind: "customer_admin", id: proof.servicePrincipalId ?? "", name: ADMIN_CONSENT_NAME };
    await this.deps.audit.record({
      tenantId,
      action: "consent_completed",
      actor: admin,
      detail: `Admin consent given through link ${session.linkId} for source ${source} (application permission ${APPLICATION_PERMISSIONS[source].role})`,
    });
    if (before && before.source !== source) {
      await this.deps.audit.record({ tenantId, action: "source_changed", actor: admin, detail: `Alert source changed from ${before.source} to ${source}` });
    }
    if (before && before.consentModel !== "application") {
      await this.deps.audit.record({
        tenantId,
        action: "consent_completed",
        actor: admin,
        detail: tokenDeleted
          ? `Consent model changed from ${before.consentModel} to application; the stored refresh token was deleted`
          : `Consent model changed from ${before.consentModel} to application; the stored refresh token could not be deleted yet`,
      });
    }
    log.info("tenant connected", { ...fields, ...step("callback", "connected") });
    return {
      connected: true,
      page: {
        kind: "page",
        page: renderPage(
          200,
          {
            title: "Consent complete",
            paragraphs: [
              `Thank you. ${tenant.displayName} is now connected.`,
              `${this.msspName} now reads your ${source === "graph" ? "Microsoft Defender XDR alerts through Microsoft Graph" : "Microsoft Defender for Endpoint alerts"} with the application permission ${APPLICATION_PERMISSIONS[source].label}. No user account is involved and no token of yours is kept. Nothing else is needed.`,
              "To end this access at any time, remove the application under Enterprise applications in the Microsoft Entra admin center.",
            ],
            details: [["Your tenant ID (for reference)", tenantId]],
          },
          this.pageOptions,
        ),
      },
    };
  }

  /** A client-credential request Entra ID refused for a reason other than a consent still propagating. */
  private async tokenFailed(tenantId: string, failure: TokenFailure, log: Logger): Promise<ConsentResponse> {
    const errorCode = failure.aadsts ?? failure.error;
    if (failure.category === "app_credential") {
      log.error(`the MSSP application's credential was rejected by Entra ID; ${credentialRemedy()}`, { tenantId, error: errorCode, category: failure.category, ...step("callback", "failed", errorCode) });
    } else {
      log.warn("client-credential token for the consent refused", { tenantId, error: failure.error, aadsts: failure.aadsts, category: failure.category, ...step("callback", "failed", errorCode) });
    }
    if (failure.category === "app_credential") {
      return this.page(502, "Consent could not be completed", `The application of ${this.msspName} is misconfigured. Nothing was saved; the monitoring of ${this.msspName} reports this failure to them.`);
    }
    if (failure.category === "transient") {
      return this.page(503, "Consent could not be completed", "Microsoft Entra ID is temporarily unavailable. Nothing was saved. Please open the consent link again in a few minutes.");
    }
    await this.recordError(tenantId, errorCode, "The admin consent could not be verified");
    return this.page(400, "Consent could not be completed", `Microsoft Entra ID refused access for the consent (${errorCode}). Nothing was saved. Open the consent link again.`);
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
      log.error(`the MSSP application's credential was rejected by Entra ID; ${credentialRemedy()}`, {
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

  private async recordError(tenantId: string, code: string, message: string): Promise<void> {
    const at = new Date(this.deps.clock()).toISOString();
    await this.deps.tenants.update(tenantId, () => ({ lastErrorCode: code, lastErrorMessage: message, lastErrorAt: at }));
  }
}

/** How the consenting tenant is named where a user's name would be: nobody signed in to the app. */
const ADMIN_CONSENT_NAME = "Tenant administrator (admin consent)";

/** The model a consent is for: the link's (a re-consent that moves the tenant) or the tenant's own. */
function consentModelFor(tenant: { consentModel?: ConsentModel }, link: ConsentLinkRecord | undefined): ConsentModel {
  return isConsentModel(link?.consentModel) ? link.consentModel : consentModelOf(tenant);
}

/** The source a consent is for: the link's (a re-consent that moves the tenant) or the tenant's own. */
function consentSource(tenantSource: AlertSourceKind | undefined, link: ConsentLinkRecord | undefined): AlertSourceKind {
  return isAlertSource(link?.source) ? link.source : sourceOf({ ...(tenantSource ? { source: tenantSource } : {}) });
}

/** A consent by someone other than the one on record (by object id when both are known). */
function isDifferentConsenter(current: { consentedBy?: string; consentedByObjectId?: string }, objectId: string, name: string): boolean {
  if (current.consentedByObjectId) return current.consentedByObjectId !== objectId;
  if (current.consentedBy) return current.consentedBy.toLowerCase() !== name.toLowerCase() && current.consentedBy !== objectId;
  return false;
}
