import { randomUUID } from "node:crypto";
import type { Clock } from "../clock";
import type { PullSettings } from "../config";
import { DefenderApiError, type DefenderClient } from "../defender/defenderClient";
import type { AlertPage } from "../defender/types";
import type { RateBudget } from "../defender/rateBudget";
import { defenderBaseUrl } from "../defender/regions";
import { describeError } from "../errors";
import type { Logger } from "../logging";
import { SecretStoreError } from "../secrets/secretStore";
import { SinkError, type AlertEnvelope, type AlertSink } from "../sinks/alertSink";
import type { TenantRecord, TenantRegistry } from "../state/tenantRegistry";
import { TokenUnavailableError, type AccessTokenSource } from "./accessTokens";
import { LeaseLostError, type PullLease, type PullStateStore } from "./pullState";
import { nextWindow, updatedAtSeconds, versionHash } from "./window";

export type PullOutcome =
  | { outcome: "pulled"; alerts: number; complete: boolean }
  | { outcome: "skipped"; reason: "not_connected" | "not_registered" }
  | { outcome: "busy" }
  | { outcome: "failed"; code: string; category: "reconsent" | "app_credential" | "transient" | "lease_lost" };

/** How stale the registry view a pull starts from may be; see TenantRegistry.getRecent. */
const TENANT_SNAPSHOT_MAX_AGE_MS = 60_000;

export interface TenantPullDeps {
  settings: Pick<
    PullSettings,
    "overlapMinutes" | "settleSeconds" | "firstRunLookbackHours" | "pageSize" | "expandEvidence" | "maxRunSeconds"
  >;
  defenderApiBaseUrl: string;
  tenants: TenantRegistry;
  pullState: PullStateStore;
  tokens: AccessTokenSource;
  defender: DefenderClient;
  budget: RateBudget;
  sink: AlertSink;
  clock: Clock;
}

/**
 * Pulls one tenant: takes its lease, reads the closed window after its checkpoint page by
 * page, hands each page's new alert versions to the sink, and only then advances the
 * checkpoint. A crash, timeout or lost lease therefore resumes where the last page ended.
 */
export class TenantPull {
  constructor(private readonly deps: TenantPullDeps) {}

  async run(tenantId: string, log: Logger, owner: string = randomUUID()): Promise<PullOutcome> {
    const { deps } = this;
    const tenant = await deps.tenants.getRecent(tenantId, TENANT_SNAPSHOT_MAX_AGE_MS);
    if (!tenant) return { outcome: "skipped", reason: "not_registered" };
    if (tenant.status !== "connected") return { outcome: "skipped", reason: "not_connected" };

    const started = deps.clock();
    const deadline = started + deps.settings.maxRunSeconds * 1000;
    // The lease outlives the deadline a little so a pull finishing its last page keeps it.
    const lease = await deps.pullState.acquire(tenantId, owner, deadline + 60_000);
    if (!lease) {
      log.info("pull skipped: another pull of this tenant holds the lease", { tenantId });
      return { outcome: "busy" };
    }
    deps.budget.restore(tenantId, lease.state.apiCalls);
    lease.state.lastRunAt = new Date(started).toISOString();
    try {
      const result = await this.pullWindow(tenant, lease, deadline);
      Object.assign(lease.state, {
        lastSuccessAt: new Date(deps.clock()).toISOString(),
        lastAlertCount: result.alerts,
        consecutiveFailures: 0,
        lastErrorCode: undefined,
        lastErrorMessage: undefined,
      });
      lease.state.apiCalls = deps.budget.snapshot(tenantId);
      await lease.release();
      log.info("pull finished", { tenantId, alerts: result.alerts, complete: result.complete });
      return { outcome: "pulled", ...result };
    } catch (error) {
      return this.failed(tenant, lease, error, log);
    }
  }

  private async pullWindow(tenant: TenantRecord, lease: PullLease, deadline: number): Promise<{ alerts: number; complete: boolean }> {
    const { deps } = this;
    const { settings } = deps;
    const state = lease.state;
    const overlapMs = settings.overlapMinutes * 60_000;
    const window =
      state.window ??
      (() => {
        const next = nextWindow({
          watermark: state.watermark,
          now: deps.clock(),
          overlapMs,
          settleMs: settings.settleSeconds * 1000,
          firstRunLookbackMs: settings.firstRunLookbackHours * 3600_000,
        });
        return next && { ...next, skip: 0 };
      })();
    const accessToken = deps.tokens.forPull(tenant.tenantId, state);
    if (!window) {
      // Nothing to read yet; still exercise the refresh token so it never idles out.
      await accessToken(false);
      return { alerts: 0, complete: true };
    }

    let delivered = 0;
    // Versions that a later window will re-read (inside its overlap) are kept in the persisted
    // set; the rest of this window's versions only need remembering until the window ends.
    const keepFrom = Math.floor((Date.parse(window.to) - overlapMs) / 1000);
    const seenThisRun = new Set<string>();
    // The last page's versions are persisted too, so a resumed run can re-read that page
    // (the API's order may have shifted while no one was reading) without re-delivering it.
    let lastPage: Array<[string, number]> = [];
    const pageOverlap = Math.max(1, Math.ceil(settings.pageSize / 50));
    const startSkip = window.skip > 0 ? Math.max(0, window.skip - settings.pageSize) : 0;
    const pulledAt = new Date(deps.clock()).toISOString();
    const pages = deps.defender
      .pages({
        tenantId: tenant.tenantId,
        from: window.from,
        to: window.to,
        startSkip,
        pageSize: settings.pageSize,
        pageOverlap,
        // Three pages requested at once hide the API's latency on a backlog; more would only
        // hold more pages in memory.
        readAhead: 3,
        expandEvidence: settings.expandEvidence,
        baseUrl: defenderBaseUrl(deps.defenderApiBaseUrl, tenant.defenderRegion),
        accessToken: async (force) => {
          if (force) deps.tokens.forget(tenant.tenantId);
          return accessToken(force);
        },
        deadline,
      })
      [Symbol.asyncIterator]();
    const ahead = (): Promise<IteratorResult<AlertPage, void>> => {
      const next = pages.next();
      // Marked handled here; the failure surfaces when the loop awaits it.
      next.catch(() => undefined);
      return next;
    };
    try {
      let pending = ahead();
      for (;;) {
        const result = await pending;
        if (result.done) break;
        const page = result.value;
        // The next page is read while this one goes to the sink: the two overlap, and no more
        // than two pages are ever in memory.
        if (page.nextSkip !== undefined) pending = ahead();
        const fresh: AlertEnvelope[] = [];
        const versions: Array<[string, number]> = [];
        for (const alert of page.alerts) {
          const hash = versionHash(alert);
          versions.push([hash, updatedAtSeconds(alert)]);
          if (state.delivered.has(hash) || seenThisRun.has(hash)) continue;
          seenThisRun.add(hash);
          fresh.push({ tenantId: tenant.tenantId, tenantName: tenant.displayName, source: "mde", pulledAt, alert });
        }
        if (fresh.length > 0) {
          await deps.sink.write({ tenantId: tenant.tenantId, windowFrom: window.from, windowTo: window.to, skip: page.skip }, fresh);
        }
        // Acknowledge only now that the sink holds the page durably.
        for (const [hash, at] of lastPage) if (at < keepFrom) state.delivered.delete(hash);
        for (const [hash, at] of versions) state.delivered.set(hash, at);
        lastPage = versions;
        delivered += fresh.length;
        state.apiCalls = deps.budget.snapshot(tenant.tenantId);
        if (page.nextSkip === undefined) break;
        state.window = { from: window.from, to: window.to, skip: page.nextSkip };
        // The last page's progress is saved by the checkpoint write that ends the run.
        await lease.save();
      }
    } catch (error) {
      if (error instanceof DefenderApiError && (error.code === "deadline" || error.code === "budget_exhausted")) {
        // Out of time or budget: the position is saved per page, so the next run resumes here.
        return { alerts: delivered, complete: false };
      }
      throw error;
    }
    state.watermark = window.to;
    state.window = undefined;
    for (const [hash, at] of state.delivered) if (at < keepFrom) state.delivered.delete(hash);
    return { alerts: delivered, complete: true };
  }

  private async failed(tenant: TenantRecord, lease: PullLease, error: unknown, log: Logger): Promise<PullOutcome> {
    const { deps } = this;
    const tenantId = tenant.tenantId;
    if (error instanceof LeaseLostError) {
      log.warn("pull stopped: lease lost to another pull", { tenantId });
      return { outcome: "failed", code: "lease_lost", category: "lease_lost" };
    }
    let category: "reconsent" | "app_credential" | "transient" = "transient";
    let code = "pull_failed";
    let message = "The pull failed; it will be retried on the next cycle";
    if (error instanceof TokenUnavailableError) {
      category = error.failure.category;
      code = error.failure.aadsts ?? error.failure.error;
      message =
        category === "reconsent"
          ? "Entra ID refused the refresh token; the customer must consent again"
          : category === "app_credential"
            ? "Entra ID rejected the MSSP application's own credential"
            : "Entra ID was unavailable";
    } else if (error instanceof DefenderApiError) {
      code = `defender_${error.code}`;
      message =
        error.code === "forbidden"
          ? "The Defender API refused access: the customer must authorize the MSSP application in the Defender portal"
          : `The Defender API call failed (${error.code})`;
    } else if (error instanceof SecretStoreError) {
      code = "secret_store_unavailable";
      message = "Key Vault could not be reached for the tenant's token; the next cycle retries";
    } else if (error instanceof SinkError) {
      code = "sink_failed";
      message = "Writing alerts to the sink failed; the checkpoint did not move and the next cycle retries";
    } else {
      code = "pull_failed";
      message = "The pull failed unexpectedly; see the function logs";
    }
    if (category === "app_credential") {
      log.error("MSSP application credential rejected by Entra ID: every tenant is affected; rotate MSSP_CLIENT_SECRET", { tenantId, error: code });
    } else {
      log.warn("pull failed", { tenantId, error: code, category, detail: describeError(error) });
    }
    Object.assign(lease.state, {
      consecutiveFailures: lease.state.consecutiveFailures + 1,
      lastErrorCode: code,
      lastErrorMessage: message,
    });
    lease.state.apiCalls = deps.budget.snapshot(tenantId);
    try {
      await lease.release();
    } catch (saveError) {
      log.warn("could not record the pull failure", { tenantId, detail: describeError(saveError) });
    }
    if (category === "reconsent") {
      const at = new Date(deps.clock()).toISOString();
      // Only if no new consent landed while this pull ran with the old token.
      await deps.tenants.update(tenantId, (current) =>
        current.status === "connected" && current.consentedAt === tenant.consentedAt
          ? { status: "reconsent_required", lastErrorCode: code, lastErrorMessage: message, lastErrorAt: at }
          : undefined,
      );
    }
    return { outcome: "failed", code, category };
  }
}
