import { credentialRemedy } from "../identity/appCredential";
import { randomUUID } from "node:crypto";
import type { Clock } from "../clock";
import type { PullSettings } from "../config";
import { DefenderApiError, InvalidPageError, type DefenderClient } from "../defender/defenderClient";
import type { RateBudget } from "../defender/rateBudget";
import { defenderBaseUrl } from "../defender/regions";
import type { FetchedPage, PageQuery } from "../defender/types";
import { describeError, statusOf } from "../errors";
import type { Logger } from "../logging";
import { SecretStoreError } from "../secrets/secretStore";
import { SinkError, type AlertEnvelope, type AlertSink } from "../sinks/alertSink";
import { DeadLetterError, type DeadLetterReason, type DeadLetterStore } from "../sinks/deadLetters";
import { ParkingError } from "../sinks/parking";
import type { Refusal, SinkSet } from "../sinks/sinkSet";
import type { TenantRecord, TenantRegistry } from "../state/tenantRegistry";
import { ALERT_SOURCE_PROFILES, sourceOf, type AlertSourceKind } from "../sources/alertSources";
import { classifyApplicationFailure, TokenUnavailableError, type AccessTokenSource } from "./accessTokens";
import { consentModelOf, tokenScope, type ConsentModel } from "../consent/consentModel";
import type { PullHistoryStore, PullRun } from "./pullHistory";
import { LeaseLostError, type InstantProgress, type PullLease, type PullState, type PullStateStore } from "./pullState";
import { healthLevel, NOTABLE_LIST_LIMIT, severityRank, type NotableAlert, type PullObserver, type PullReport, type Severity } from "./observer";
import { SubWindowPlanner, type SubWindow } from "./subWindows";
import { InstantCensus } from "./instantCensus";
import { isoMs, nextWindow, rawHash, versionHash } from "./window";
import { timeoutSignal } from "../time/timeoutSignal";

export type PullOutcome =
  | { outcome: "pulled"; alerts: number; complete: boolean; deadLetters: number }
  | { outcome: "skipped"; reason: "not_connected" | "not_registered" }
  | { outcome: "busy" }
  | { outcome: "failed"; code: string; category: "reconsent" | "app_credential" | "transient" | "lease_lost" };

/** The run's time bounds as abort signals (real time, whatever clock the pull is given). */
interface RunBounds {
  /** Fires when the sink, dead-letter and progress calls must stop. */
  work: AbortSignal;
  /** Fires when recording the run's outcome must stop. */
  release: AbortSignal;
}

/** Pages in flight at most, the one being read included: hides the API's latency on a backlog. */
const READ_AHEAD = 3;
/**
 * ...and no more than this many bytes of them, as estimated from the alerts read so far: three
 * 2,500-alert pages fit; a 10,000-alert page (about 27 MB) is read with nothing ahead of it.
 */
const READ_AHEAD_BYTES = 24 * 1024 * 1024;
/** Passes over a single millisecond that holds more than a page, until two agree (see InstantCensus). */
const INSTANT_PASSES = 3;
/**
 * The same by links (Graph): its order inside the millisecond may change with every request, so
 * one pass that finds nothing new is weak evidence (a missing alert can escape a pass by chance).
 * The passes end when the versions read reach the millisecond's count, or, where the count cannot
 * tell, after two quiet passes in a row; within this many. With a new random order per request,
 * 1,250 alerts and 1,000-alert pages, a pass misses each alert with a chance of 0.16: 12 passes
 * leave one of them unread about once in 3 million pulls.
 */
const LINKED_INSTANT_PASSES = 12;
/** Pages read inside one millisecond per pass before giving up on it (10,000 alerts at 1 ms is already absurd). */
const MAX_INSTANT_PAGES = 200;
/** Host and API clocks further apart than this are reported in health. */
const CLOCK_SKEW_WARNING_MS = 60_000;
/** How long a pull may hold its tenant and finish after its deadline. */
export interface PullTimings {
  /** A pull that dies blocks its tenant this long at most; a live one renews every third of it. */
  leaseMs: number;
  /**
   * After the deadline the page in flight may take one request timeout; then this long is left
   * to hand it to the sink and save, and `releaseGraceMs` more to record the run. The settings
   * check keeps deadline + request timeout + 60 s inside the host's functionTimeout.
   */
  deliveryGraceMs: number;
  releaseGraceMs: number;
  /** An observer that has not finished by then is left to finish on its own: the pull moves on. */
  observerTimeoutMs: number;
}

/**
 * The 60 s the settings check leaves after deadline + request timeout: 20 s to deliver the page in
 * flight, 15 s to record the run on the tenant, then the observers (`observerTimeoutMs`) and the
 * pull history (`HISTORY_TIMEOUT_MS`), with 5 s to spare.
 */
const DEFAULT_TIMINGS: PullTimings = { leaseMs: 180_000, deliveryGraceMs: 20_000, releaseGraceMs: 15_000, observerTimeoutMs: 10_000 };
const HISTORY_TIMEOUT_MS = 10_000;
/** Parked pages are delivered for at most 1/DRAIN_SHARE of a run's time, then new pages are read. */
const DRAIN_SHARE = 3;
/** Runs that meet a page that never parses before the pull narrows it down and dead-letters it. */
const INVALID_PAGE_RUNS = 3;
/** A measured clock difference beyond this is not believed (see settleClock). */
const MAX_PLAUSIBLE_SKEW_MS = 3_600_000;
/** An HTTP Date header names whole seconds. */
const DATE_RESOLUTION_MS = 1_000;

/** One alert source as the pull reads it: its client, its per-tenant call budget, where it lives. */
export interface SourceReader {
  client: { fetchPage(query: PageQuery): Promise<FetchedPage> };
  budget: RateBudget;
  /** The API's base URL (MDE: regionalised per tenant). */
  baseUrl: string;
  /** The largest `$top` the API accepts. */
  maxTop: number;
  /** Whether the client would follow this nextLink (a source that pages by link); default: same origin as baseUrl. */
  followable?: (link: string) => boolean;
}

/** The Defender for Endpoint API's `$top` limit. */
const MDE_MAX_TOP = 10_000;

export interface TenantPullDeps {
  settings: Pick<
    PullSettings,
    "overlapMinutes" | "settleSeconds" | "firstRunLookbackHours" | "pageSize" | "expandEvidence" | "maxRunSeconds" | "requestTimeoutSeconds"
  >;
  defenderApiBaseUrl: string;
  tenants: TenantRegistry;
  pullState: PullStateStore;
  tokens: AccessTokenSource;
  defender: DefenderClient;
  budget: RateBudget;
  /** Microsoft Graph `security/alerts_v2`, for tenants whose source is "graph". */
  graph?: SourceReader;
  /** The sink, when there is one; see `sinkSet` for several. */
  sink: AlertSink;
  /** Its name in ALERT_SINKS (for dead letters of versions it refuses); default "blob". */
  sinkName?: string;
  /** Several sinks, each with its own progress; when set, `sink` is not written to. */
  sinkSet?: SinkSet;
  deadLetters: DeadLetterStore;
  clock: Clock;
  /** Where each run is recorded for the console; optional, and a failure to record never fails a pull. */
  history?: PullHistoryStore;
  timings?: Partial<PullTimings>;
  /** Told about every run that took the lease (telemetry, notifications); never awaited past `PullTimings.observerTimeoutMs`. */
  observers?: readonly PullObserver[];
  /** New alerts at or above this severity are listed in the run's report (notifications); unset, none are. */
  notableSeverity?: Severity;
}

/**
 * Waits for `work` at most `ms`; true when it settled in time. The work's own failure is swallowed
 * (callers that care attach their handler first), and work still running is left to finish alone.
 */
async function atMost(ms: number, work: Promise<unknown>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work.then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
        timer.unref();
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A page that never parsed is held for a later run: stop here, keep the position. */
class HoldPosition extends Error {
  constructor() {
    super("the pull holds its position for a later run");
    this.name = "HoldPosition";
  }
}

/** The tenant was offboarded (or lost its consent) while its pull ran: stop without writing. */
/** A new consent that moved the tenant to another source ends a run too: the next one resets. */
function isStillConnected(current: TenantRecord | undefined, source: AlertSourceKind): boolean {
  return current !== undefined && current.status === "connected" && sourceOf(current) === source;
}

class TenantNoLongerConnected extends Error {
  constructor() {
    super("tenant is no longer connected");
    this.name = "TenantNoLongerConnected";
  }
}

/**
 * Pulls one tenant: takes its lease, reads the closed window after its checkpoint in
 * time-bounded sub-windows, hands each page's new alert versions to the sink, and only then
 * records the page as read. A crash, timeout or lost lease resumes at exactly the page that was
 * in flight.
 */
export class TenantPull {
  private readonly timings: PullTimings;

  constructor(private readonly deps: TenantPullDeps) {
    this.timings = { ...DEFAULT_TIMINGS, ...deps.timings };
  }

  /**
   * Pulls the tenant once and records the run in the pull history (best-effort). `waitedMs`: time
   * the invocation already spent before this run (waiting for a pull slot), taken off its bounds
   * so that the run still ends inside the function timeout.
   */
  async run(tenantId: string, log: Logger, owner: string = randomUUID(), waitedMs = 0): Promise<PullOutcome> {
    const startedAt = this.deps.clock();
    let outcome: PullOutcome;
    try {
      outcome = await this.pull(tenantId, log, owner, waitedMs);
    } catch (error) {
      await this.recordRun(tenantId, startedAt, { outcome: "failed", code: "pull_failed", category: "transient" }, log);
      throw error;
    }
    await this.recordRun(tenantId, startedAt, outcome, log);
    return outcome;
  }

  private async recordRun(tenantId: string, startedAt: number, outcome: PullOutcome, log: Logger): Promise<void> {
    const { history, clock } = this.deps;
    // A skipped run did nothing worth a row (an unregistered tenant must not get a partition either).
    if (!history || outcome.outcome === "skipped") return;
    const run: PullRun = {
      at: new Date(startedAt).toISOString(),
      outcome:
        outcome.outcome === "pulled" ? (outcome.complete ? "succeeded" : "partial") : outcome.outcome === "busy" ? "busy" : "failed",
      alerts: outcome.outcome === "pulled" ? outcome.alerts : 0,
      durationMs: Math.max(0, clock() - startedAt),
      ...(outcome.outcome === "failed" ? { errorCode: outcome.code } : {}),
    };
    // Best-effort and bounded: it runs after the pull, inside the host's function timeout.
    await atMost(
      HISTORY_TIMEOUT_MS,
      history.record(tenantId, run).catch((error: unknown) => {
        log.warn("could not record the pull in the pull history", { tenantId, detail: describeError(error) });
      }),
    );
  }

  private async pull(tenantId: string, log: Logger, owner: string, waitedMs: number): Promise<PullOutcome> {
    const { deps } = this;
    // A point read, not a cached list: an offboarding must stop the very next pull.
    // The run's time counts from here (its bounds less any wait before it): the point read below is part of it.
    const started = deps.clock();
    const startedReal = Date.now() - waitedMs;
    let tenant: TenantRecord | undefined;
    try {
      tenant = await deps.tenants.get(tenantId);
    } catch (error) {
      return this.unavailableBeforeLease(tenantId, error, log);
    }
    if (!tenant) return { outcome: "skipped", reason: "not_registered" };
    if (tenant.status !== "connected") return { outcome: "skipped", reason: "not_connected" };
    let reader: SourceReader;
    try {
      reader = sourceReader(deps, tenant);
    } catch (error) {
      if (!(error instanceof SourceUnavailableError)) throw error;
      log.error("pull not started: the tenant's alert source has no client in this deployment", { tenantId, source: sourceOf(tenant) });
      return { outcome: "failed", code: "source_not_configured", category: "transient" };
    }

    const deadline = started - waitedMs + deps.settings.maxRunSeconds * 1000;
    const { leaseMs, deliveryGraceMs, releaseGraceMs } = this.timings;
    // Real time (the bounds are timers), counted from the same start as the deadline.
    const workMs = Math.max(1, (deps.settings.maxRunSeconds + deps.settings.requestTimeoutSeconds) * 1000 + deliveryGraceMs - (Date.now() - startedReal));
    const bounds: RunBounds = { work: timeoutSignal(workMs), release: timeoutSignal(workMs + releaseGraceMs) };
    let windowOpened = false;
    let sourceSwitched = false;
    const source = sourceOf(tenant);
    // Read only: the lease (and the new window with it) is written by the pull's first save, so a
    // quiet tenant's cycle costs one read and one write (see PullLease). A tenant this process
    // wrote last is claimed instead of read, under that write's ETag (PullStateStore.open).
    let lease: PullLease | undefined;
    try {
      // A first pull creates the tenant's row: checked again just before, so an offboarding
      // meanwhile (which found no row to delete) cannot bring it back.
      const beforeCreate = async (): Promise<void> => {
        if (!isStillConnected(await deps.tenants.get(tenantId), source)) throw new TenantNoLongerConnected();
      };
      lease = await deps.pullState.open(tenantId, owner, leaseMs, (state, stored) => {
      // Decided afresh for each state offered: a refused claim of a remembered row reads the row again.
      windowOpened = false;
      sourceSwitched = false;
      // A consent moved the tenant to another source: its checkpoint starts afresh, here under the
      // lease so no run of the old source can write after it. Sink progress and parked pages stay:
      // they hold alerts already read that a sink still owes. A state stored without a source is
      // from before sources were named: Defender for Endpoint's. A blank one has nothing to forget.
      if (stored && (state.source ?? "mde") !== source) {
        forgetSourceProgress(state);
        sourceSwitched = true;
      }
      state.source = source;
      if (state.window) return;
      const window = nextWindow({
        watermark: state.watermark,
        now: started,
        skewMs: state.clockSkewMs,
        overlapMs: deps.settings.overlapMinutes * 60_000,
        settleMs: deps.settings.settleSeconds * 1000,
        firstRunLookbackMs: deps.settings.firstRunLookbackHours * 3600_000,
      });
      if (!window) {
        // Nothing to read yet. A remembered skew must not keep it so: measure it afresh next time.
        delete state.clockSkewMs;
        return;
      }
      const [from, to] = [isoMs(window.from), isoMs(window.to)];
      // Not yet checked against the API's clock: a claim at open stores it before the first page.
      state.window = { from, to, position: from, nextEnd: to, settled: false };
      windowOpened = true;
      }, { beforeCreate });
    } catch (error) {
      return this.unavailableBeforeLease(tenantId, error, log);
    }
    if (!lease) {
      log.info("pull skipped: another pull of this tenant holds the lease", { tenantId });
      return { outcome: "busy" };
    }
    if (sourceSwitched) {
      // The emptied dedupe set replaces the old one (and its spill) at the first save.
      lease.markDeliveredChanged();
      log.info("pull state reset for the tenant's new alert source", { tenantId, source });
    }
    reader.budget.restore(tenantId, lease.state.apiCalls);
    lease.state.lastRunAt = new Date(started).toISOString();
    const before = {
      failures: lease.state.consecutiveFailures,
      tokenExpiry: lease.state.accessTokenExpiresAt,
      sinkBehindMs: oldestSinkBehindMs(lease.state, started),
    };
    // One slow page (retries, a slow sink) may outlast the lease: renew it in the background.
    const stopKeepAlive = lease.keepAlive(leaseMs / 3);
    try {
      const read = new WindowRead(deps, reader, tenant, lease, deadline, bounds.work, log, windowOpened);
      const observe = (outcome: PullOutcome, reconsent = false) =>
        this.observe({ tenant, owner, started, state: lease.state, before, notable: read.notable, reconsent }, outcome, log);
      let result: Awaited<ReturnType<WindowRead["run"]>>;
      try {
        result = await read.run();
      } catch (error) {
        await stopKeepAlive();
        if (error instanceof TenantNoLongerConnected) throw error;
        const outcome = await this.failed(tenant, lease, bounds, error, log);
        await observe(outcome, outcome.outcome === "failed" && outcome.category === "reconsent");
        return outcome;
      }
      await stopKeepAlive();
      Object.assign(lease.state, {
        lastSuccessAt: new Date(deps.clock()).toISOString(),
        lastAlertCount: result.alerts,
        consecutiveFailures: 0,
        lastErrorCode: undefined,
        lastErrorMessage: undefined,
      });
      lease.state.apiCalls = reader.budget.snapshot(tenantId);
      await this.release(lease, bounds.release, log);
      log.info("pull finished", { tenantId, alerts: result.alerts, complete: result.complete, deadLetters: result.deadLetters });
      const outcome: PullOutcome = { outcome: "pulled", ...result };
      await observe(outcome);
      return outcome;
    } catch (error) {
      if (error instanceof TenantNoLongerConnected) {
        log.info("pull stopped: the tenant is no longer connected", { tenantId });
        deps.tokens.forget(tenantId);
        return { outcome: "skipped", reason: "not_connected" };
      }
      return this.failed(tenant, lease, bounds, error, log);
    }
  }

  /** Tells the observers how the run went; each is bounded and none can fail the pull. */
  private async observe(
    run: {
      tenant: TenantRecord;
      owner: string;
      started: number;
      state: PullState;
      before: { failures: number; tokenExpiry: number | undefined; sinkBehindMs: number };
      notable: { alerts: NotableAlert[]; total: number };
      reconsent: boolean;
    },
    outcome: PullOutcome,
    log: Logger,
  ): Promise<void> {
    const observers = this.deps.observers ?? [];
    if (observers.length === 0 || (outcome.outcome !== "pulled" && outcome.outcome !== "failed")) return;
    const now = this.deps.clock();
    const { state } = run;
    const delivered = state.window?.position ?? state.watermark;
    const report: PullReport = {
      tenantId: run.tenant.tenantId,
      tenantName: run.tenant.displayName,
      invocationId: run.owner,
      startedAt: new Date(run.started).toISOString(),
      durationMs: Math.max(0, now - run.started),
      outcome: outcome.outcome === "failed" ? "failed" : outcome.complete ? "succeeded" : "partial",
      ...(outcome.outcome === "failed" ? { errorCode: outcome.code, category: outcome.category } : {}),
      alerts: outcome.outcome === "pulled" ? outcome.alerts : 0,
      deadLetters: outcome.outcome === "pulled" ? outcome.deadLetters : 0,
      lagSeconds: delivered === undefined ? null : Math.max(0, Math.round((now - Date.parse(delivered)) / 1000)),
      tokenRefreshed: state.accessTokenExpiresAt !== run.before.tokenExpiry,
      health: {
        before: healthLevel({ reconsentRequired: false, consecutiveFailures: run.before.failures, sinkBehindMs: run.before.sinkBehindMs }),
        after: healthLevel({ reconsentRequired: run.reconsent, consecutiveFailures: state.consecutiveFailures, sinkBehindMs: oldestSinkBehindMs(state, now) }),
      },
      sinksBehind: Object.entries(state.sinks ?? {})
        .filter(([, entry]) => entry.parkedTo > entry.parkedFrom)
        .map(([sink, entry]) => ({ sink, parkedPages: entry.parkedTo - entry.parkedFrom, behindSince: entry.behindSince ?? null })),
      notable: run.notable,
    };
    const failed = (detail: string) => log.warn("a pull observer failed; the pull is unaffected", { tenantId: report.tenantId, detail });
    const { observerTimeoutMs } = this.timings;
    await Promise.all(
      observers.map(async (observer) => {
        const work = observer.pulled(report).catch((error: unknown) => failed(describeError(error)));
        if (!(await atMost(observerTimeoutMs, work))) failed(`an observer did not finish in ${observerTimeoutMs} ms`);
      }),
    );
  }

  /**
   * Storage failed before the lease was taken: nothing can be recorded on the tenant, and throwing
   * would only retry the message into the poison queue. The next cycle tries again.
   */
  private unavailableBeforeLease(tenantId: string, error: unknown, log: Logger): PullOutcome {
    const { code, category } = classifyFailure(error);
    if (code === "pull_failed") throw error;
    log.warn("pull not started: storage did not answer", { tenantId, error: code, detail: describeError(error) });
    return { outcome: "failed", code, category };
  }

  private async release(lease: PullLease, signal: AbortSignal, log: Logger): Promise<void> {
    try {
      await lease.release({ signal });
    } catch (error) {
      if (error instanceof LeaseLostError || error instanceof TenantNoLongerConnected) throw error;
      // The lease lapses on its own shortly; say so where the operator looks.
      log.warn("could not release the pull lease", { tenantId: lease.tenantId, detail: describeError(error) });
      await this.deps.pullState.recordIncident(lease.tenantId, "release_failed").catch(() => undefined);
    }
  }

  private async failed(tenant: TenantRecord, lease: PullLease, bounds: RunBounds, error: unknown, log: Logger): Promise<PullOutcome> {
    const { deps } = this;
    const tenantId = tenant.tenantId;
    if (error instanceof LeaseLostError && error.reason === "busy") {
      log.info("pull skipped: another pull of this tenant took the lease first", { tenantId });
      return { outcome: "busy" };
    }
    if (error instanceof LeaseLostError) {
      log.warn("pull stopped: lease lost to another pull", { tenantId, reason: error.reason });
      if (error.reason === "taken") await deps.pullState.recordIncident(tenantId, "lease_lost").catch(() => undefined);
      return { outcome: "failed", code: "lease_lost", category: "lease_lost" };
    }
    // Whatever the call said, it was cut short by the run's own bound, not by the service.
    const { code, message, category } = bounds.work.aborted
      ? { code: "run_out_of_time", message: "The run's time was up while the sink or storage still had not answered; the next run resumes at the same page", category: "transient" as const }
      : classifyFailure(error, sourceOf(tenant), consentModelOf(tenant), this.deps.tokens.issuedWithoutRole(tenantId));
    if (category === "app_credential") {
      log.error(`MSSP application credential rejected by Entra ID: every tenant is affected; ${credentialRemedy()}`, { tenantId, error: code });
    } else {
      log.warn("pull failed", { tenantId, error: code, category, detail: describeError(error) });
    }
    Object.assign(lease.state, {
      consecutiveFailures: lease.state.consecutiveFailures + 1,
      lastErrorCode: code,
      lastErrorMessage: message,
    });
    lease.state.apiCalls = sourceReader(deps, tenant).budget.snapshot(tenantId);
    try {
      await this.release(lease, bounds.release, log);
    } catch (saveError) {
      // Another pull wrote first, or the tenant went: this run did nothing worth a failure.
      if (saveError instanceof LeaseLostError && saveError.reason === "busy") return { outcome: "busy" };
      if (saveError instanceof TenantNoLongerConnected) return { outcome: "skipped", reason: "not_connected" };
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

/** How long the sink furthest behind has been so (0 when every sink is caught up). */
function oldestSinkBehindMs(state: PullState, now: number): number {
  let oldest = 0;
  for (const entry of Object.values(state.sinks ?? {})) {
    if (entry.parkedTo <= entry.parkedFrom || !entry.behindSince) continue;
    oldest = Math.max(oldest, now - Date.parse(entry.behindSince));
  }
  return oldest;
}

function classifyFailure(
  error: unknown,
  source: AlertSourceKind = "mde",
  model: ConsentModel = "delegated",
  tokenLackedRole = false,
): { code: string; message: string; category: "reconsent" | "app_credential" | "transient" } {
  const profile = ALERT_SOURCE_PROFILES[source];
  if (model === "application") {
    const applicationFailure = classifyApplicationFailure(error, source, tokenLackedRole);
    if (applicationFailure) return applicationFailure;
  }
  if (error instanceof TokenUnavailableError) {
    const category = error.failure.category;
    return {
      category,
      code: error.failure.aadsts ?? error.failure.error,
      message:
        category === "reconsent"
          ? `Entra ID refused the refresh token for the ${profile.label}; the customer must consent again (permission needed: ${profile.permission})`
          : category === "app_credential"
            ? "Entra ID rejected the MSSP application's own credential"
            : "Entra ID was unavailable",
    };
  }
  if (error instanceof DefenderApiError && error.source === "graph") {
    return {
      category: "transient",
      code: `graph_${error.code}`,
      message:
        error.code === "forbidden"
          ? `Microsoft Graph refused access to security alerts: the consenting user needs a role that can read Defender XDR alerts (e.g. Security Reader), and the app ${profile.permission}`
          : `The Microsoft Graph call failed (${error.code})`,
    };
  }
  if (error instanceof DefenderApiError) {
    return {
      category: "transient",
      code: `defender_${error.code}`,
      message:
        error.code === "forbidden"
          ? "The Defender API refused access: the customer must authorize the MSSP application in the Defender portal"
          : `The Defender API call failed (${error.code})`,
    };
  }
  if (error instanceof SourceUnavailableError) {
    return { category: "transient", code: "source_not_configured", message: error.message };
  }
  if (error instanceof SecretStoreError) {
    return error.timedOut
      ? { category: "transient", code: "secret_store_timeout", message: "Key Vault did not answer in time for the tenant's token; the next cycle retries" }
      : { category: "transient", code: "secret_store_unavailable", message: "Key Vault could not be reached for the tenant's token; the next cycle retries" };
  }
  if (error instanceof SinkError) {
    return { category: "transient", code: "sink_failed", message: "Writing alerts to the sink failed; the checkpoint did not move and the next cycle retries" };
  }
  if (error instanceof ParkingError) {
    return { category: "transient", code: "parking_failed", message: "Parking a page for a sink that was down failed; the checkpoint did not move and the next cycle retries" };
  }
  if (error instanceof DeadLetterError) {
    return { category: "transient", code: "dead_letter_failed", message: "Storing data the pipeline could not accept failed; the checkpoint did not move" };
  }
  if (isAbort(error)) {
    return { category: "transient", code: "storage_timeout", message: "Table or Blob Storage did not answer in time; the next cycle retries" };
  }
  if (isStorageOutage(error)) {
    return { category: "transient", code: "storage_unavailable", message: "Table or Blob Storage was unavailable; the next cycle retries" };
  }
  return { category: "transient", code: "pull_failed", message: "The pull failed unexpectedly; see the function logs" };
}

/** An Azure SDK RestError that a later attempt may not meet: throttling, a server error, no answer. */
function isStorageOutage(error: unknown): boolean {
  if (!(error instanceof Error) || error.name !== "RestError") return false;
  const status = statusOf(error);
  return status === undefined || status === 408 || status === 429 || status >= 500;
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError");
}

/** One run over the tenant's current window: the state machine of a single pull. */
class WindowRead {
  private readonly state: PullState;
  private readonly overlapMs: number;
  private readonly top: number;
  private readonly source: AlertSourceKind;
  private readonly inFlight = new Map<string, Promise<FetchedPage>>();
  /** Mean JSON length of the alerts of the last page read (sizes the read-ahead). */
  private bytesPerAlert: number | undefined;
  private readonly accessToken: (force: boolean) => Promise<string>;
  private readonly pulledAt: string;
  /** What every sink, dead-letter, tenant and progress call of this run is bounded by. */
  private readonly call: { signal: AbortSignal };
  private planner!: SubWindowPlanner;
  private windowFrom = 0;
  /** The window is in Table Storage already (resumed, or saved before its first sink write). */
  private windowSaved: boolean;
  /** With several sinks: the first page written after a resume is flagged, for a sink that can tell what it holds. */
  private resumedWrite: boolean;
  /** Paging inside one crowded millisecond, saved with every page so a resume continues it. */
  private instant: InstantProgress | undefined;
  /** This run already counted itself against the span that never parses. */
  private invalidCounted = false;
  private delivered = 0;
  private deadLettered = 0;
  /** New alerts at or above `notableSeverity` (for the run's report). */
  readonly notable: { alerts: NotableAlert[]; total: number } = { alerts: [], total: 0 };
  private readonly notableRank: number;
  /** The window's end has been checked against the API's clock (settleClock), in this run or one before. */
  // Stryker disable next-line BooleanLiteral: run() sets it before the first page; a run without a window never reads it
  private clockChecked = false;
  /** The last prune limit (s): pruning again at or below it finds nothing. */
  private pruned = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly deps: TenantPullDeps,
    private readonly reader: SourceReader,
    private readonly tenant: TenantRecord,
    private readonly lease: PullLease,
    private readonly deadline: number,
    work: AbortSignal,
    private readonly log: Logger,
    /** This run opened the window (stored by its first save); otherwise it resumes a stored one. */
    private readonly windowOpened: boolean,
  ) {
    this.state = lease.state;
    this.overlapMs = deps.settings.overlapMinutes * 60_000;
    this.top = Math.min(deps.settings.pageSize, reader.maxTop);
    this.source = sourceOf(tenant);
    // Both matter only once a page is delivered, which a run without a window never does.
    this.windowSaved = !windowOpened || lease.openedFromMemory;
    this.resumedWrite = !windowOpened;
    this.call = { signal: work };
    this.notableRank = deps.notableSeverity === undefined ? Number.POSITIVE_INFINITY : severityRank(deps.notableSeverity);
    this.pulledAt = new Date(deps.clock()).toISOString();
    const model = consentModelOf(tenant);
    // A refresh token is redeemed (and its rotation written back) only under a claimed lease.
    this.accessToken = deps.tokens.forPull(tenant.tenantId, this.state, deadline, tokenScope(model, this.source), model, () => lease.claim(this.call));
  }

  async run(): Promise<{ alerts: number; complete: boolean; deadLetters: number }> {
    await this.drainParked();
    const window = this.state.window;
    if (!window) {
      // Nothing to read yet; still exercise the refresh token so it never idles out.
      await this.accessToken(false);
      return { alerts: 0, complete: true, deadLetters: 0 };
    }
    this.windowFrom = Date.parse(window.from);
    this.planner = new SubWindowPlanner(
      { from: this.windowFrom, to: Date.parse(window.to) },
      // Stryker disable next-line ConditionalExpression: a hint only, soon outweighed by the sub-windows read; two resumed windows took the same requests with and without it (10 and 11)
      { position: Date.parse(window.position), nextEnd: Date.parse(window.nextEnd), ...(window.density ? { density: window.density } : {}) },
      this.top,
    );
    let resumeInstant = window.instant;

    try {
      // With several sinks one sink's copy says nothing of the others': each is told `resumed` instead.
      if (!this.windowOpened && !this.deps.sinkSet) await this.rememberStored();
      // A stored window is checked against the API's clock again only if that never happened.
      this.clockChecked = !this.windowOpened && window.settled !== false;
      let pages = 0;
      for (let head = this.planner.head(); head; head = this.planner.head()) {
        const requested = { ...head };
        if (resumeInstant) {
          // A crowded millisecond was being paged when the last run stopped: carry on there.
          const progress = resumeInstant;
          resumeInstant = undefined;
          if (requested.to - requested.from === 1) {
            await this.readInstant(requested, progress);
            this.planner.complete(undefined);
            await this.acknowledge();
            continue;
          }
        }
        this.prefetch();
        let page: FetchedPage;
        try {
          page = await this.take(requested, 0);
        } catch (error) {
          if (!(error instanceof InvalidPageError)) throw error;
          await this.ensureConnected();
          // Too large is no passing fault: a narrower span is the cure, at once.
          if (!error.tooLarge) this.holdUnlessGivenUp(requested);
          // Narrow a page that never parses down to its millisecond before giving it up.
          if (!this.planner.split()) {
            await this.deadLetter(error.tooLarge ? "page_too_large" : "invalid_page", requested, 0, error.raw);
            this.planner.complete(0);
          }
          await this.acknowledge();
          continue;
        }
        this.measure(page);
        this.checkTime();
        if (!this.clockChecked) {
          this.clockChecked = true;
          this.settleClock(page);
        }
        // The run began with a point read of the tenant; every later page checks again.
        if (pages++ > 0) await this.ensureConnected();
        await this.deliver(requested, 0, page);
        const returned = page.alerts.length + page.rejected.length;
        // A page is the whole sub-window only when it came back short and the service says no more.
        const full = returned >= this.top || page.nextLink !== undefined;
        if (this.planner.finished) {
          // The service's clock ended the window before this sub-window: nothing left to read.
        } else if (!full) {
          this.planner.complete(returned, page.alerts.map((alert) => alert.updatedAtMs));
        } else if (!this.planner.split(page.alerts.map((alert) => alert.updatedAtMs))) {
          await this.readInstant(this.planner.head() ?? requested);
          this.planner.complete(undefined);
        }
        await this.acknowledge();
      }
    } catch (error) {
      const stop =
        error instanceof HoldPosition ||
        (error instanceof DefenderApiError && (error.code === "deadline" || error.code === "budget_exhausted"));
      if (!stop) throw error;
      // Held, out of time or out of budget: the run's closing save keeps the position (and a
      // window cut by the service's clock), so the next run resumes exactly here. (No stop comes
      // after the window's last sub-window: its pages are all read by then.)
      this.recordProgress();
      return { alerts: this.delivered, complete: false, deadLetters: this.deadLettered };
    } finally {
      for (const pending of this.inFlight.values()) pending.catch(() => undefined);
      this.inFlight.clear();
    }
    this.state.watermark = isoMs(this.planner.to);
    this.state.window = undefined;
    delete this.state.invalidSpan;
    this.prune(this.planner.to - this.overlapMs);
    return { alerts: this.delivered, complete: true, deadLetters: this.deadLettered };
  }

  /**
   * A resumed run first learns what the sink already holds of the page that was in flight: an
   * earlier attempt may have stored it and died before its checkpoint, and the service may order
   * the page differently this time. Those versions count as delivered, so none is stored twice.
   */
  private async rememberStored(): Promise<void> {
    const { sink } = this.deps;
    const head = this.planner.head();
    if (!sink.storedVersions || !head) return;
    const page = { tenantId: this.tenant.tenantId, pageFrom: isoMs(head.from), pageTo: isoMs(head.to) };
    // Stryker disable next-line BooleanLiteral: marking an unchanged set changed costs one more write of a spilled set, nothing a reader sees
    let added = false;
    for (const version of await sink.storedVersions(page, this.call)) {
      const hash = versionHash(version);
      if (this.state.delivered.has(hash)) continue;
      this.state.delivered.set(hash, Math.floor(version.updatedAtMs / 1000));
      added = true;
    }
    if (added) this.lease.markDeliveredChanged();
  }

  /** A page that arrives after the deadline is not delivered: the next run reads it again. */
  private checkTime(): void {
    // Stryker disable next-line EqualityOperator: a millisecond clock equal to the deadline is one page either way
    if (this.deps.clock() > this.deadline) {
      // Stryker disable next-line StringLiteral: caught as a stop, never shown
      throw new DefenderApiError("deadline", "The run's deadline passed while a page of alerts was being read; it is read again next run");
    }
  }

  /**
   * A page that is not valid JSON after its retries is most often a proxy or gateway having a
   * bad moment, not poison: the pull keeps its position and stops, for `INVALID_PAGE_RUNS` runs,
   * before it narrows the span down and dead-letters what still does not parse. Returns only
   * when the span is given up; otherwise throws HoldPosition.
   */
  private holdUnlessGivenUp(sub: SubWindow): void {
    const span = this.state.invalidSpan;
    const inside = span !== undefined && Date.parse(span.from) <= sub.from && sub.from < Date.parse(span.to);
    if (!inside) {
      this.state.invalidSpan = { from: isoMs(sub.from), to: isoMs(sub.to), runs: 1 };
      this.invalidCounted = true;
    } else if (!this.invalidCounted) {
      span.runs++;
      this.invalidCounted = true;
    }
    const runs = this.state.invalidSpan?.runs ?? 1;
    if (runs >= INVALID_PAGE_RUNS) return;
    this.warn(
      "invalid_page_held",
      `A page of alerts was not valid JSON in ${runs} run(s); the pull keeps its position and reads it again next run (after ${INVALID_PAGE_RUNS} runs what still does not parse is dead-lettered)`,
    );
    throw new HoldPosition();
  }

  /** Requests the next few planned sub-windows so the API's latency overlaps the sink's. */
  private prefetch(): void {
    for (const sub of this.planner.upcoming(this.readAhead())) this.request(sub, 0);
  }

  /** How many pages may be in flight: one until a page has shown how large alerts are, then by bytes. */
  private readAhead(): number {
    if (this.bytesPerAlert === undefined) return 1;
    const fit = Math.floor(READ_AHEAD_BYTES / (this.bytesPerAlert * this.top));
    return Math.max(1, Math.min(READ_AHEAD, fit));
  }

  private measure(page: FetchedPage): void {
    if (page.alerts.length === 0) return;
    let bytes = 0;
    for (const alert of page.alerts) bytes += alert.json.length;
    this.bytesPerAlert = bytes / page.alerts.length;
  }

  private key(sub: SubWindow, skip: number): string {
    return `${sub.from}:${sub.to}:${skip}`;
  }

  /**
   * The page of `sub` at `skip`. MDE pages by `$skip`; Graph by the previous page's nextLink only
   * (`next`), so there `skip` is the count read before it in the pass and names the page.
   */
  private request(sub: SubWindow, skip: number, next?: string): Promise<FetchedPage> {
    const key = this.key(sub, skip);
    let pending = this.inFlight.get(key);
    if (!pending) {
      const paged = this.source === "graph";
      pending = this.reader.client.fetchPage({
        tenantId: this.tenant.tenantId,
        baseUrl: this.reader.baseUrl,
        from: isoMs(sub.from),
        to: isoMs(sub.to),
        top: this.top,
        skip: paged ? 0 : skip,
        ...(paged && next !== undefined ? { nextLink: next } : {}),
        expandEvidence: this.deps.settings.expandEvidence,
        accessToken: this.accessToken,
        deadline: this.deadline,
      });
      // Marked handled here; the failure surfaces when the page is taken.
      pending.catch(() => undefined);
      this.inFlight.set(key, pending);
    }
    return pending;
  }

  private take(sub: SubWindow, skip: number, next?: string): Promise<FetchedPage> {
    const pending = this.request(sub, skip, next);
    this.inFlight.delete(this.key(sub, skip));
    return pending;
  }

  /**
   * Ends a new window by the service's clock: the first answer's `Date` header caps `to`, and
   * the difference is kept so the next window starts right. Alerts already read past the new end
   * stay delivered and remembered, so the next window does not repeat them.
   */
  private settleClock(page: FetchedPage): void {
    if (page.apiDate === undefined) return;
    // Date has whole seconds, so this errs towards the service being behind: the safe side.
    const skew = page.apiDate - this.deps.clock();
    if (Math.abs(skew) > MAX_PLAUSIBLE_SKEW_MS) {
      // A gateway's or cache's Date, not the service's clock: trusting it could end every later
      // window before it starts. Keep the host's clock and say so.
      this.warn("implausible_clock", `The Defender API answered with a Date ${Math.round(skew / 60_000)} min from this host's clock; it was ignored`);
      return;
    }
    this.state.clockSkewMs = skew;
    if (Math.abs(skew) > CLOCK_SKEW_WARNING_MS) {
      this.log.warn("host clock and Defender API clock differ", { tenantId: this.tenant.tenantId, skewSeconds: Math.round(skew / 1000) });
    }
    // The service's now lies within the second its Date header names: end there at the latest.
    const apiTo = page.apiDate + DATE_RESOLUTION_MS - this.deps.settings.settleSeconds * 1000;
    if (apiTo < this.planner.to) {
      this.planner.clip(apiTo);
      // A stored window ends later: store the cut before anything is written.
      this.windowSaved = false;
    }
  }

  /** Whether a link stays on the tenant's API host (a link elsewhere is never followed, only reported). */
  private sameOrigin(link: string): boolean {
    if (this.reader.followable) return this.reader.followable(link);
    try {
      return new URL(link).origin === new URL(this.reader.baseUrl).origin;
    } catch {
      return false;
    }
  }

  private async ensureConnected(): Promise<void> {
    if (!isStillConnected(await this.deps.tenants.get(this.tenant.tenantId, this.call), this.source)) throw new TenantNoLongerConnected();
  }

  /**
   * Hands the page's new versions to the sink and its unacceptable elements to the dead-letter
   * store; only when both hold them are the versions remembered as delivered. Returns how many
   * versions were new.
   */
  private async deliver(requested: SubWindow, skip: number, page: FetchedPage): Promise<number> {
    const { tenant } = this;
    // Named as a resume would read it again: a page cut by the service's clock ends at the cut.
    const sub = { from: requested.from, to: Math.min(requested.to, this.planner.to) };
    const fresh: AlertEnvelope[] = [];
    const versions: Array<[string, number]> = [];
    const inPage = new Set<string>();
    const clipped = sub.to < requested.to;
    for (const alert of page.alerts) {
      // Past a cut made by the service's clock: the next window reads it, so a resume of this
      // page (which reads only up to the cut) finds exactly what this attempt wrote.
      if (clipped && alert.updatedAtMs >= sub.to) continue;
      const hash = versionHash(alert);
      if (this.state.delivered.has(hash) || inPage.has(hash)) continue;
      inPage.add(hash);
      versions.push([hash, Math.floor(alert.updatedAtMs / 1000)]);
      fresh.push({ tenantId: tenant.tenantId, tenantName: tenant.displayName, source: this.source, pulledAt: this.pulledAt, alert });
    }
    if (fresh.length > 0) {
      await this.saveWindowOnce();
      const key = { tenantId: tenant.tenantId, pageFrom: isoMs(sub.from), pageTo: isoMs(sub.to), skip };
      const { sinkSet } = this.deps;
      let refused: Refusal[];
      if (sinkSet) {
        const outcome = await sinkSet.deliver(this.resumedWrite ? { ...key, resumed: true } : key, fresh, (this.state.sinks ??= {}), this.call);
        this.resumedWrite = false;
        refused = outcome.refused;
      } else {
        const result = await this.deps.sink.write(key, fresh, this.call);
        const sink = (this.deps.sinkName ?? "blob") as Refusal["sink"];
        refused = (result?.refused ?? []).map((version) => ({ sink, key, version }));
      }
      for (const refusal of refused) await this.deadLetterRefusal(refusal);
    }
    for (const rejected of page.rejected) await this.deadLetter(rejected.reason, sub, skip, rejected.raw);
    if (page.nextLink !== undefined && !this.sameOrigin(page.nextLink)) await this.deadLetter("foreign_next_link", sub, skip, page.nextLink);
    for (const [hash, at] of versions) this.state.delivered.set(hash, at);
    if (versions.length > 0) this.lease.markDeliveredChanged();
    this.delivered += fresh.length;
    if (this.notableRank !== Number.POSITIVE_INFINITY) for (const envelope of fresh) this.noteIfNotable(envelope.alert);
    return fresh.length;
  }

  /** Reads the few fields a notification shows; only when notifications are on (a parse per alert). */
  private noteIfNotable(alert: AlertEnvelope["alert"]): void {
    let fields: { severity?: unknown; title?: unknown; category?: unknown };
    try {
      fields = JSON.parse(alert.json) as typeof fields;
    } catch {
      return;
    }
    if (severityRank(fields.severity) < this.notableRank) return;
    this.notable.total++;
    if (this.notable.alerts.length >= NOTABLE_LIST_LIMIT) return;
    this.notable.alerts.push({
      id: alert.id,
      title: typeof fields.title === "string" ? fields.title.slice(0, 256) : "",
      severity: String(fields.severity),
      category: typeof fields.category === "string" ? fields.category.slice(0, 128) : null,
      lastUpdateTime: alert.lastUpdateTime,
    });
  }

  /**
   * One millisecond holds more than a page: page through it (MDE by `$skip`, Graph by nextLink) to
   * the end (MDE: an empty page, as a short page is not trusted to be the end; Graph: a page
   * without a nextLink), and read it again until a whole pass finds nothing new, so an order that
   * shifted under one pass cannot hide an alert. The progress is saved with every page: a run that
   * stops here (deadline, budget, crash) carries on where it was. A Graph nextLink is not kept
   * (it is the service's, and expires): a resumed Graph pass starts that pass over, and what it
   * already delivered is recognised as such.
   */
  private async readInstant(sub: SubWindow, from: InstantProgress = { pass: 0, skip: 0, foundNew: false }): Promise<void> {
    const progress: InstantProgress = { ...from };
    const linked = this.source === "graph";
    if (linked) progress.skip = 0;
    this.instant = progress;
    const passes = linked ? LINKED_INSTANT_PASSES : INSTANT_PASSES;
    const census = new InstantCensus();
    let quietPasses = 0;
    for (; progress.pass < passes; Object.assign(progress, { pass: progress.pass + 1, skip: 0, foundNew: false })) {
      census.startPass(progress.skip === 0);
      let next: string | undefined;
      // Links are counted by pages, not alerts: a chain of empty pages must end too.
      let pages = 0;
      const followed = new Set<string>();
      for (;;) {
        if (progress.skip >= MAX_INSTANT_PAGES * this.top || pages++ >= MAX_INSTANT_PAGES) {
          this.warn("instant_page_limit", `One millisecond held more than ${MAX_INSTANT_PAGES} pages; the pull moved on after reading that many`);
          census.cutShort();
          break;
        }
        let page: FetchedPage;
        try {
          page = await this.take(sub, progress.skip, next);
        } catch (error) {
          if (!(error instanceof InvalidPageError)) throw error;
          if (!error.tooLarge) this.holdUnlessGivenUp(sub);
          await this.deadLetter(error.tooLarge ? "page_too_large" : "invalid_page", sub, progress.skip, error.raw);
          progress.skip += this.top;
          census.cutShort();
          await this.acknowledge();
          // Without the page there is no link to the one after it: the pass ends here, and what
          // lies behind it in that millisecond may not be read at all. Say so where health shows it.
          if (linked) {
            this.warn(
              "instant_pages_unreachable",
              `A page inside the crowded millisecond ${isoMs(sub.from)} was dead-lettered; the alert API links its later pages only from it, so alerts behind it in that millisecond may be missing`,
            );
            break;
          }
          continue;
        }
        this.checkTime();
        await this.ensureConnected();
        const returned = page.alerts.length + page.rejected.length;
        if (returned === 0 && !(linked && page.nextLink !== undefined)) break;
        for (const alert of page.alerts) census.saw(versionHash(alert));
        for (const rejected of page.rejected) census.saw(rawHash(rejected.raw));
        if ((await this.deliver(sub, progress.skip, page)) > 0) progress.foundNew = true;
        progress.skip += returned;
        await this.acknowledge();
        if (linked) {
          // A link to another origin was dead-lettered as a report by deliver(); it is never followed.
          if (page.nextLink === undefined || !this.sameOrigin(page.nextLink)) break;
          if (followed.has(page.nextLink)) {
            census.cutShort();
            this.warn("next_link_loop", "The alert API answered a nextLink it had already given inside one millisecond; the pass ended there instead of looping");
            await this.deadLetter("next_link_loop", sub, progress.skip, page.nextLink);
            break;
          }
          followed.add(page.nextLink);
          next = page.nextLink;
        }
      }
      const verdict = census.endPass();
      // The first pass always counts as finding something: only a re-read can confirm. A quiet
      // pass is no confirmation when the count says some versions were never read.
      quietPasses = progress.pass > 0 && !progress.foundNew ? quietPasses + 1 : 0;
      if (verdict === "complete" || (verdict === "unknown" && quietPasses >= (linked ? 2 : 1))) {
        this.instant = undefined;
        return;
      }
    }
    this.instant = undefined;
    const shortfall = census.shortfall;
    this.warn(
      "unstable_order",
      shortfall
        ? `The alert API's order inside the millisecond ${isoMs(sub.from)} kept changing between reads: it holds ${shortfall.counted} alerts and its passes read ${shortfall.read} of them; every version read was delivered`
        : "The alert API's order inside one millisecond kept changing between reads; every version read was delivered",
    );
  }

  /**
   * Pages parked for sinks that were down are delivered first, so each sink catches up in order
   * before this run's new pages reach it; what a sink refuses is dead-lettered like any refusal.
   */
  private async drainParked(): Promise<void> {
    const { sinkSet } = this.deps;
    if (!sinkSet) return;
    if (Object.values(this.state.sinks ?? {}).some((entry) => entry.parkedTo > entry.parkedFrom)) await this.lease.claim(this.call);
    // A third of the run at most: a long backlog for one sink must not hold back the others' new pages.
    const started = this.deps.clock();
    await sinkSet.drain(this.tenant.tenantId, (this.state.sinks ??= {}), {
      ...this.call,
      until: started + (this.deadline - started) / DRAIN_SHARE,
      saved: () => this.lease.save(this.call),
      refused: async (refusals) => {
        for (const refusal of refusals) await this.deadLetterRefusal(refusal);
      },
    });
  }

  /** A version a sink can never take: kept raw for the operator, named by the sink that refused it. */
  private async deadLetterRefusal(refusal: Refusal): Promise<void> {
    const { key, version, sink } = refusal;
    await this.deadLetter(version.reason, { from: Date.parse(key.pageFrom), to: Date.parse(key.pageTo) }, key.skip, version.alert.json, sink);
  }

  private async deadLetter(reason: DeadLetterReason, sub: SubWindow, skip: number, raw: string, sink?: string): Promise<void> {
    await this.lease.claim(this.call);
    const at = new Date(this.deps.clock()).toISOString();
    // A refusal drained before the window is planned belongs to its own page's span.
    const window = this.planner ? { from: isoMs(this.windowFrom), to: isoMs(this.planner.to) } : { from: isoMs(sub.from), to: isoMs(sub.to) };
    const stored = await this.deps.deadLetters.write(
      {
        tenantId: this.tenant.tenantId,
        source: this.source,
        reason,
        window,
        page: { from: isoMs(sub.from), to: isoMs(sub.to), skip },
        raw,
        at,
        ...(sink ? { sink } : {}),
      },
      this.call,
    );
    if (!stored) return;
    this.deadLettered++;
    this.state.deadLetters++;
    this.state.lastDeadLetterReason = reason;
    this.state.lastDeadLetterAt = at;
    this.log.warn("data the pipeline cannot accept was dead-lettered", { tenantId: this.tenant.tenantId, reason });
  }

  private warn(code: string, message: string): void {
    Object.assign(this.state, { lastWarningCode: code, lastWarningMessage: message, lastWarningAt: new Date(this.deps.clock()).toISOString() });
    this.log.warn(message, { tenantId: this.tenant.tenantId, warning: code });
  }

  /**
   * Before each sink write: claims the lease, and stores a window new to this run, so a crash
   * after the write resumes it. A lease claimed at open that has lapsed since (its renewals
   * failed) is written again first: another pull may have taken it, and then this write fails.
   */
  private async saveWindowOnce(): Promise<void> {
    if (this.windowSaved && this.lease.expiresAt > this.deps.clock()) return this.lease.claim(this.call);
    this.recordProgress();
    await this.lease.save(this.call);
    // Stryker disable next-line BooleanLiteral: acknowledge() sets it after every page but the window's last, and nothing is delivered after that
    this.windowSaved = true;
  }

  private recordProgress(): void {
    const { planner } = this;
    this.state.window = {
      from: isoMs(this.windowFrom),
      to: isoMs(planner.to),
      position: isoMs(planner.position),
      nextEnd: isoMs(planner.nextEnd()),
      ...(planner.density !== undefined ? { density: planner.density } : {}),
      ...(this.instant ? { instant: { ...this.instant } } : {}),
      ...(this.clockChecked ? {} : { settled: false }),
    };
    const span = this.state.invalidSpan;
    if (span && planner.position >= Date.parse(span.to)) delete this.state.invalidSpan;
  }

  /** The page is durable in the sink: record it as read, forget what no later read can serve again, renew the lease. */
  private async acknowledge(): Promise<void> {
    this.prune(Math.min(this.planner.position, this.planner.to - this.overlapMs));
    if (this.planner.finished) {
      // The run's closing save records the finished window.
      return;
    }
    this.recordProgress();
    this.state.apiCalls = this.reader.budget.snapshot(this.tenant.tenantId);
    await this.lease.save(this.call);
    this.windowSaved = true;
  }

  /** Drops remembered versions older than `before` (ms); a second's margin for the rounding. */
  private prune(before: number): void {
    const limit = Math.floor(before / 1000) - 1;
    if (limit <= this.pruned) return;
    this.pruned = limit;
    const size = this.state.delivered.size;
    for (const [hash, at] of this.state.delivered) if (at < limit) this.state.delivered.delete(hash);
    if (this.state.delivered.size !== size) this.lease.markDeliveredChanged();
  }
}

/** A tenant's source is "graph" but this process has no Graph reader (a wiring fault, not the customer's). */
class SourceUnavailableError extends Error {
  constructor(source: AlertSourceKind) {
    super(`No client is configured for the tenant's alert source (${source})`);
    this.name = "SourceUnavailableError";
  }
}

/** How the pull reads the tenant's source. */
function sourceReader(deps: TenantPullDeps, tenant: TenantRecord): SourceReader {
  if (sourceOf(tenant) === "graph") {
    if (!deps.graph) throw new SourceUnavailableError("graph");
    return deps.graph;
  }
  return {
    client: deps.defender,
    budget: deps.budget,
    baseUrl: defenderBaseUrl(deps.defenderApiBaseUrl, tenant.defenderRegion),
    maxTop: MDE_MAX_TOP,
  };
}

/** What belongs to one source's reading: checkpoint, window, dedupe set, token cache, call budget. */
function forgetSourceProgress(state: PullState): void {
  delete state.watermark;
  delete state.window;
  delete state.invalidSpan;
  delete state.accessTokenCipher;
  delete state.accessTokenExpiresAt;
  delete state.clockSkewMs;
  state.delivered.clear();
  state.apiCalls = [];
}
