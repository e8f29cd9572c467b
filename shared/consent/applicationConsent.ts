import type { Clock } from "../clock";
import type { AppToken, EntraClient } from "../identity/entraClient";
import { classifyTokenFailure, type TokenFailure } from "../identity/tokenErrors";
import { DefenderApiError } from "../sources/sourceErrors";
import type { AlertSourceKind } from "../sources/alertSources";
import { APPLICATION_PERMISSIONS, carriesRole } from "./consentModel";

/**
 * Reads one alert (at most) from the tenant's source with an app-only token: the last proof that
 * the consent gives the access the pull needs. Throws what the source client throws.
 */
export type SourceProbe = (input: { tenantId: string; source: AlertSourceKind; defenderRegion?: string; accessToken: string }) => Promise<void>;

/**
 * Entra ID answers these while a fresh admin consent is still spreading through the directory:
 * no service principal yet (7000229), application not found (700016), resource principal not
 * found (500011), no consent yet (65001). The same codes later mean the consent was removed.
 */
const NOT_YET_PROPAGATED = new Set(["AADSTS7000229", "AADSTS700016", "AADSTS500011", "AADSTS65001"]);

/** Waits between attempts while a fresh consent propagates: about 6 s in all, well inside a browser's patience. */
export const DEFAULT_PROPAGATION_DELAYS_MS: readonly number[] = [1_000, 2_000, 3_000];

export type ConsentProof =
  /** The consent works: a token for the tenant, with the role, that the source accepted. */
  | { kind: "proven"; servicePrincipalId: string | undefined }
  /** Not (yet) usable: Entra ID has no consent for the tenant, or the role is missing, or the source refused. */
  | { kind: "pending"; reason: string }
  /** A token for another tenant came back: never connect on it. */
  | { kind: "wrong_tenant" }
  /** Entra ID refused for another reason; `failure` says whose problem it is. */
  | { kind: "token_failed"; failure: TokenFailure }
  /** The source API could not be reached to confirm the access. */
  | { kind: "source_unavailable"; code: string };

export interface ApplicationConsentDeps {
  entra: Pick<EntraClient, "acquireAppToken">;
  probe: SourceProbe;
  clock: Clock;
  sleep: (ms: number) => Promise<void>;
  propagationDelaysMs?: readonly number[];
}

/**
 * Proves an application-permission consent without believing the redirect that announced it
 * (its `tenant` and `admin_consent` parameters can be forged): asks Entra ID for an app-only token
 * for the expected tenant, checks the token's `tid` and roles, and reads one alert with it. A
 * consent that is not visible yet is tried again a few times, then reported as pending.
 */
export class ApplicationConsentVerifier {
  constructor(private readonly deps: ApplicationConsentDeps) {}

  async prove(input: { tenantId: string; source: AlertSourceKind; defenderRegion?: string }): Promise<ConsentProof> {
    const delays = this.deps.propagationDelaysMs ?? DEFAULT_PROPAGATION_DELAYS_MS;
    // Stryker disable next-line ObjectLiteral,StringLiteral: attempt 0 always runs and replaces this value before any return
    let last: ConsentProof = { kind: "pending", reason: "no_attempt" };
    for (let attempt = 0; attempt <= delays.length; attempt++) {
      if (attempt > 0) await this.deps.sleep(delays[attempt - 1] ?? 0);
      last = await this.attempt(input);
      if (last.kind !== "pending") return last;
    }
    return last;
  }

  private async attempt(input: { tenantId: string; source: AlertSourceKind; defenderRegion?: string }): Promise<ConsentProof> {
    const permission = APPLICATION_PERMISSIONS[input.source];
    let token: AppToken;
    try {
      token = await this.deps.entra.acquireAppToken({ tenantId: input.tenantId, scope: permission.scope });
    } catch (error) {
      const failure = classifyTokenFailure(error);
      if (failure.aadsts && NOT_YET_PROPAGATED.has(failure.aadsts)) return { kind: "pending", reason: failure.aadsts };
      return { kind: "token_failed", failure };
    }
    if (token.claims.tid !== input.tenantId.toLowerCase()) return { kind: "wrong_tenant" };
    // Entra ID issues a token without the role when the service principal exists but the
    // assignment has not reached the token service yet (or was removed).
    if (!carriesRole(token.claims.roles, input.source)) return { kind: "pending", reason: "role_missing" };
    try {
      await this.deps.probe({
        tenantId: input.tenantId,
        source: input.source,
        ...(input.defenderRegion ? { defenderRegion: input.defenderRegion } : {}),
        accessToken: token.accessToken,
      });
    } catch (error) {
      // The token carries the role (checked above): a 403 is the source refusing for its own reasons
      // (not licensed, turned off), which no waiting or new consent changes. A 401 may be a token
      // the source does not accept yet.
      if (error instanceof DefenderApiError && error.code === "unauthorized") return { kind: "pending", reason: "source_unauthorized" };
      return { kind: "source_unavailable", code: error instanceof DefenderApiError ? `source_${error.code}` : "source_unavailable" };
    }
    return { kind: "proven", servicePrincipalId: token.claims.oid };
  }
}
