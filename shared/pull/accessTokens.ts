import type { Clock } from "../clock";
import { APPLICATION_PERMISSIONS, carriesRole, type ConsentModel } from "../consent/consentModel";
import { DefenderApiError } from "../sources/sourceErrors";
import { ALERT_SOURCE_PROFILES, type AlertSourceKind } from "../sources/alertSources";
import { DEFENDER_ALERT_SCOPE, type EntraClient } from "../identity/entraClient";
import { classifyTokenFailure, type TokenFailure } from "../identity/tokenErrors";
import type { TenantTokenBundle, TenantTokenStore } from "../secrets/tenantTokens";
import type { PullState } from "./pullState";
import { decryptToken, encryptToken } from "./tokenCipher";

/** Refresh this long before expiry so a token never dies in the middle of a page. */
const EXPIRY_SKEW_MS = 2 * 60_000;

export class TokenUnavailableError extends Error {
  constructor(readonly failure: TokenFailure) {
    super(`access token unavailable: ${failure.aadsts ?? failure.error} (${failure.category})`);
    this.name = "TokenUnavailableError";
  }
}

export interface AccessTokenSourceDeps {
  tokens: TenantTokenStore;
  entra: EntraClient;
  clock: Clock;
  sleep: (ms: number) => Promise<void>;
  /** Persist a rotated refresh token only when the stored one is at least this old. */
  refreshTokenPersistAgeMs: number;
  /** Transient token-endpoint failures are retried this many times with backoff. */
  transientRetries?: number;
}

/** Counts for the benchmark and health: how often each tier answered. */
export interface TokenStats {
  memoryHits: number;
  vaultReads: number;
  vaultWrites: number;
  vaultWriteFailures: number;
  tokenRequests: number;
}

/**
 * Access tokens for the Defender API, from the cheapest place that has a valid one:
 * process memory, then the encrypted copy beside the checkpoint (one Key Vault read for its
 * key), then Entra ID with the tenant's refresh token. Entra rotates the refresh token on every
 * use; the newest is written back only when the stored one is older than the persist age, which
 * bounds Key Vault writes while a daily write keeps every tenant far inside the 90-day limit.
 */
export class AccessTokenSource {
  private readonly memory = new Map<string, { token: string; expiresAt: number }>();
  /** Application tenants whose last app-only token lacked the permission's role (the grant was removed or has not arrived). */
  private readonly withoutRole = new Set<string>();
  readonly stats: TokenStats = { memoryHits: 0, vaultReads: 0, vaultWrites: 0, vaultWriteFailures: 0, tokenRequests: 0 };

  constructor(private readonly deps: AccessTokenSourceDeps) {}

  /**
   * A token getter bound to one pull; `state` receives the refreshed cache for the caller to save.
   * `scope` names the resource (the tenant's alert source): the one refresh token is redeemed for
   * it, and a cached token of another resource is never served for it. `model` "application"
   * gets client-credential tokens for `scope` (a `{resource}/.default`) instead: no Key Vault read.
   */
  forPull(
    tenantId: string,
    state: PullState,
    deadline = Number.POSITIVE_INFINITY,
    scope: string = DEFENDER_ALERT_SCOPE,
    model: ConsentModel = "delegated",
    /** Runs before a refresh token is redeemed or a leftover one deleted: the pull claims its lease there (see PullLease). */
    beforeRefresh: () => Promise<void> = async () => undefined,
  ): (forceRefresh: boolean) => Promise<string> {
    if (model === "application") return this.forApplication(tenantId, state, deadline, scope, beforeRefresh);
    const memoryKey = `${tenantId}\n${scope}`;
    // The cipher's associated data names the resource too (MDE keeps the bare tenant id it always had).
    const cipherContext = scope === DEFENDER_ALERT_SCOPE ? tenantId : `${tenantId} ${scope}`;
    let bundle: TenantTokenBundle | undefined;
    const loadBundle = async (): Promise<TenantTokenBundle> => {
      if (!bundle) {
        this.stats.vaultReads++;
        bundle = await this.deps.tokens.read(tenantId);
        if (!bundle) throw new TokenUnavailableError({ category: "reconsent", error: "no_refresh_token" });
        state.refreshTokenObtainedAt = bundle.refreshTokenObtainedAt;
      }
      return bundle;
    };

    return async (forceRefresh) => {
      const now = this.deps.clock();
      if (forceRefresh) {
        // The API refused this token: no later call, run or process may serve it again, even if
        // the refresh below fails.
        this.memory.delete(memoryKey);
        delete state.accessTokenCipher;
      } else {
        const cached = this.memory.get(memoryKey);
        if (cached && cached.expiresAt - EXPIRY_SKEW_MS > now) {
          this.stats.memoryHits++;
          return cached.token;
        }
      }
      const current = await loadBundle();
      if (state.accessTokenCipher && (state.accessTokenExpiresAt ?? 0) - EXPIRY_SKEW_MS > now) {
        const token = decryptToken(current.accessTokenKey, cipherContext, state.accessTokenCipher);
        if (token) {
          this.memory.set(memoryKey, { token, expiresAt: state.accessTokenExpiresAt ?? 0 });
          return token;
        }
      }
      await beforeRefresh();
      const refreshed = await this.refreshWithRetry(tenantId, current.refreshToken, deadline, scope);
      state.accessTokenCipher = encryptToken(current.accessTokenKey, cipherContext, refreshed.accessToken);
      state.accessTokenExpiresAt = refreshed.accessTokenExpiresAt;
      this.memory.set(memoryKey, { token: refreshed.accessToken, expiresAt: refreshed.accessTokenExpiresAt });
      if (now - current.refreshTokenObtainedAt >= this.deps.refreshTokenPersistAgeMs) {
        bundle = await this.persistRotated(tenantId, current, refreshed.refreshToken, now, state);
      }
      return refreshed.accessToken;
    };
  }

  /**
   * Writes the rotated refresh token back, unless a consent stored a newer bundle meanwhile
   * (see TenantTokenStore.writeRotation). Best effort: the stored token stays valid, so a failed
   * write is retried by a later pull rather than failing this one.
   */
  private async persistRotated(
    tenantId: string,
    current: TenantTokenBundle,
    refreshToken: string,
    now: number,
    state: PullState,
  ): Promise<TenantTokenBundle> {
    try {
      this.stats.vaultReads++;
      this.stats.vaultWrites++;
      const next: TenantTokenBundle = { ...current, refreshToken, refreshTokenObtainedAt: now };
      const result = await this.deps.tokens.writeRotation(tenantId, next);
      state.refreshTokenObtainedAt = result.refreshTokenObtainedAt;
      return result;
    } catch {
      this.stats.vaultWriteFailures++;
      return current;
    }
  }

  /**
   * App-only tokens for a tenant of the application model, kept in memory only: a new one costs
   * one token request and no secret, so there is nothing worth the pull state's encrypted copy
   * (and no per-tenant key to encrypt it with). Its memory key is its own `.default` scope, which
   * no delegated token ever has.
   */
  private forApplication(
    tenantId: string,
    state: PullState,
    deadline: number,
    scope: string,
    /** Runs before a Key Vault delete: the pull claims its lease there, as before a redemption. */
    beforeDelete: () => Promise<void>,
  ): (forceRefresh: boolean) => Promise<string> {
    const memoryKey = `${tenantId}\n${scope}`;
    return async (forceRefresh) => {
      await this.removeDelegatedLeftovers(tenantId, state, beforeDelete);
      const now = this.deps.clock();
      if (forceRefresh) {
        this.memory.delete(memoryKey);
      } else {
        const cached = this.memory.get(memoryKey);
        if (cached && cached.expiresAt - EXPIRY_SKEW_MS > now) {
          this.stats.memoryHits++;
          return cached.token;
        }
      }
      const issued = await this.withRetry(deadline, () => this.deps.entra.acquireAppToken({ tenantId, scope }));
      const source = sourceOfApplicationScope(scope);
      if (source && !carriesRole(issued.claims.roles, source)) this.withoutRole.add(tenantId);
      else this.withoutRole.delete(tenantId);
      this.memory.set(memoryKey, { token: issued.accessToken, expiresAt: issued.accessTokenExpiresAt });
      return issued.accessToken;
    };
  }

  /**
   * A tenant moved here from the delegated model: the consent deleted its refresh token, but a
   * delete that failed then would leave a live refresh token nobody uses. The pull state's marks
   * of a delegated token (its age, the encrypted access token) stay until the delete is known to
   * have happened, so a failed delete is tried again by the next pull.
   */
  private async removeDelegatedLeftovers(tenantId: string, state: PullState, beforeDelete: () => Promise<void>): Promise<void> {
    if (state.refreshTokenObtainedAt === undefined && state.accessTokenCipher === undefined) return;
    await beforeDelete();
    try {
      await this.deps.tokens.remove(tenantId);
    } catch {
      return;
    }
    delete state.accessTokenCipher;
    delete state.accessTokenExpiresAt;
    delete state.refreshTokenObtainedAt;
  }

  /** Whether the tenant's last app-only token lacked the role its source needs: a 403 then means the grant is gone. */
  issuedWithoutRole(tenantId: string): boolean {
    return this.withoutRole.has(tenantId);
  }

  /** Forget a tenant's in-memory tokens, of every resource (after an offboarding). */
  forget(tenantId: string): void {
    const prefix = `${tenantId}\n`;
    for (const key of this.memory.keys()) if (key.startsWith(prefix)) this.memory.delete(key);
  }

  /** Transient token-endpoint failures are retried with backoff, never past the pull's deadline. */
  private refreshWithRetry(tenantId: string, refreshToken: string, deadline: number, scope: string) {
    return this.withRetry(deadline, () => this.deps.entra.refresh({ tenantId, refreshToken, scope }));
  }

  private async withRetry<T>(deadline: number, request: () => Promise<T>): Promise<T> {
    const retries = this.deps.transientRetries ?? 3;
    for (let attempt = 0; ; attempt++) {
      try {
        this.stats.tokenRequests++;
        return await request();
      } catch (error) {
        const failure = classifyTokenFailure(error);
        const delay = Math.min(30_000, 1_000 * 2 ** attempt) * (0.5 + Math.random() / 2);
        if (failure.category !== "transient" || attempt >= retries || this.deps.clock() + delay > deadline) {
          throw new TokenUnavailableError(failure);
        }
        await this.deps.sleep(delay);
      }
    }
  }
}

/**
 * The failures that, for a tenant of the application model, mean its consent is gone: Entra ID
 * refusing the client-credential token for a customer-side reason (service principal deleted,
 * 7000229, 700016, 500011, 65001: category "reconsent"), or the source answering 403 because the
 * app role was removed. Undefined for anything else, which the pull classifies as for any tenant.
 */
export function classifyApplicationFailure(
  error: unknown,
  source: AlertSourceKind,
  tokenLackedRole: boolean,
): { code: string; message: string; category: "reconsent" | "transient" } | undefined {
  const permission = APPLICATION_PERMISSIONS[source];
  if (error instanceof TokenUnavailableError && error.failure.category === "reconsent") {
    return {
      category: "reconsent",
      code: error.failure.aadsts ?? error.failure.error,
      message: `Entra ID no longer issues the app a token for this tenant (the admin consent or the app was removed); the customer's administrator must consent again to ${permission.label}`,
    };
  }
  if (error instanceof DefenderApiError && error.code === "forbidden") {
    const prefix = error.source === "graph" ? "graph" : "defender";
    // The token carried the role, so the grant is there: a new consent cannot fix this refusal
    // (a feature turned off, no licence); it is shown and retried, the tenant stays connected.
    if (!tokenLackedRole) {
      return {
        category: "transient",
        code: `${prefix}_forbidden`,
        message: `The ${ALERT_SOURCE_PROFILES[source].label} refused the app's token although it carries ${permission.role} (is the product licensed and enabled in the tenant?)`,
      };
    }
    return {
      category: "reconsent",
      code: `${prefix}_forbidden`,
      message: `The ${ALERT_SOURCE_PROFILES[source].label} refused the app's token: the application permission ${permission.role} is missing (removed by the customer); their administrator must consent again`,
    };
  }
  return undefined;
}

/** The source whose application permission a `{resource}/.default` scope asks for. */
function sourceOfApplicationScope(scope: string): AlertSourceKind | undefined {
  return (Object.keys(APPLICATION_PERMISSIONS) as AlertSourceKind[]).find((source) => APPLICATION_PERMISSIONS[source].scope === scope);
}
