/**
 * GET /api/health: are the settings valid, and do Table Storage and Key Vault answer? Anonymous,
 * so the body names only the failing part and a coarse reason: no tenant data, no setting value,
 * no secret, no SDK message (those can quote URLs).
 *
 * Each dependency gets one cheap call bounded by a timeout: a point read of a row that never
 * exists in the tenants table (404 means storage answered), and the version list of the
 * consent-link signing key's secret (properties only, never a value; 404 means the vault
 * answered). A healthy result is reused for a few seconds and concurrent requests share one
 * check, so hammering the endpoint cannot turn into Key Vault throttling for the real work.
 */
import { SIGNING_KEY_SECRET_NAME } from "../consent/signingKey";
import { ConfigError } from "../config";
import { errorKind, statusOf } from "../errors";
import type { DeliveryStatus } from "../notifications/deliveryStatus";
import type { Services } from "../services";
import { TABLES } from "../storage/names";
import { bounded } from "../time/bounded";
import { timeoutSignal } from "../time/timeoutSignal";

export type CheckStatus = "healthy" | "unhealthy" | "skipped";

export interface CheckResult {
  status: CheckStatus;
  /** Why it is not healthy, in words safe for anyone to read. */
  reason?: string;
  durationMs?: number;
}

export interface HealthReport {
  status: "healthy" | "unhealthy";
  /**
   * `notifications` is there only when a webhook is configured, and never decides `status`: a
   * receiver that is down costs notifications, not pulls, and must not take the app out of a
   * load balancer or page anyone as if it were down.
   */
  checks: { settings: CheckResult; storage: CheckResult; keyVault: CheckResult; notifications?: CheckResult };
}

export interface HealthCheckOptions {
  /** Per dependency (default 5 s): the platform's probe and a load balancer must not wait long. */
  timeoutMs?: number;
}

export const DEFAULT_HEALTH_TIMEOUT_MS = 5_000;
/** A row key no tenant can have (tenant ids are GUIDs). */
const PROBE_KEYS = { partitionKey: "~health", rowKey: "~probe" } as const;

class TimedOut extends Error {}


function failure(error: unknown, timeoutMs: number): string {
  if (error instanceof TimedOut || (error as { timedOut?: unknown })?.timedOut === true) {
    return `no answer within ${Math.round(timeoutMs / 100) / 10} s`;
  }
  const status = statusOf(error) ?? (error as { status?: unknown })?.status;
  if (typeof status === "number") return `answered HTTP ${status}`;
  return `unreachable (${errorKind(error)})`;
}

async function probe(run: (signal: AbortSignal) => Promise<unknown>, timeoutMs: number): Promise<CheckResult> {
  const started = Date.now();
  try {
    await bounded(run(timeoutSignal(timeoutMs)), timeoutMs, () => new TimedOut());
    return { status: "healthy", durationMs: Date.now() - started };
  } catch (error) {
    return { status: "unhealthy", reason: failure(error, timeoutMs), durationMs: Date.now() - started };
  }
}

export async function checkStorage(services: Pick<Services, "tables">, timeoutMs: number): Promise<CheckResult> {
  return probe(async (abortSignal) => {
    const table = await services.tables.open(TABLES.tenants);
    try {
      await table.getEntity(PROBE_KEYS.partitionKey, PROBE_KEYS.rowKey, { abortSignal });
    } catch (error) {
      if (statusOf(error) !== 404) throw error;
    }
  }, timeoutMs);
}

export async function checkKeyVault(services: Pick<Services, "secrets">, timeoutMs: number): Promise<CheckResult> {
  // versions() reads properties only (a 404 comes back as an empty list): no secret value moves.
  return probe(async () => services.secrets.versions(SIGNING_KEY_SECRET_NAME), timeoutMs);
}

/**
 * How the webhook fared at the last flush, from the status row it wrote: unhealthy while the last
 * message could not be delivered. The reason names the app's own code and counts, never the URL.
 */
export async function checkNotifications(services: Pick<Services, "notifications">, timeoutMs: number): Promise<CheckResult | undefined> {
  const notifications = services.notifications;
  if (!notifications) return undefined;
  const started = Date.now();
  let status: DeliveryStatus;
  try {
    status = await bounded(notifications.status.read(timeoutSignal(timeoutMs)), timeoutMs, () => new TimedOut());
  } catch {
    return { status: "skipped", reason: "the delivery status could not be read", durationMs: Date.now() - started };
  }
  const durationMs = Date.now() - started;
  const dropped = status.droppedSinceDelivery > 0 ? `; ${status.droppedSinceDelivery} dropped unsent` : "";
  if (status.lastOutcome === "failed") {
    return {
      status: "unhealthy",
      reason: `the last message could not be delivered (${status.lastErrorCode ?? "unknown"}); ${status.pending} event(s) waiting${dropped}`,
      durationMs,
    };
  }
  return { status: "healthy", durationMs };
}

/**
 * Runs the three checks (four with notifications). `services` throws ConfigError when the settings are invalid; then the
 * dependencies cannot even be addressed and are reported as skipped.
 */
export async function checkHealth(services: () => Services, options: HealthCheckOptions = {}): Promise<HealthReport> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
  let wired: Services;
  try {
    wired = services();
  } catch (error) {
    const reason =
      error instanceof ConfigError
        ? `${error.settings.length || error.problems.length} app setting(s) missing or invalid; the function logs and the operator API name them`
        : "the app could not start its services";
    const skipped: CheckResult = { status: "skipped", reason: "the settings are invalid" };
    return { status: "unhealthy", checks: { settings: { status: "unhealthy", reason }, storage: skipped, keyVault: skipped } };
  }
  const [storage, keyVault, notifications] = await Promise.all([
    checkStorage(wired, timeoutMs),
    checkKeyVault(wired, timeoutMs),
    checkNotifications(wired, timeoutMs),
  ]);
  const healthy = storage.status === "healthy" && keyVault.status === "healthy";
  return {
    status: healthy ? "healthy" : "unhealthy",
    checks: { settings: { status: "healthy" }, storage, keyVault, ...(notifications ? { notifications } : {}) },
  };
}

/** Single-flight and a short reuse of healthy results, per process. */
export class HealthMonitor {
  private inFlight: Promise<HealthReport> | undefined;
  private healthyUntil = 0;
  private lastHealthy: HealthReport | undefined;

  constructor(
    private readonly run: () => Promise<HealthReport>,
    private readonly reuseHealthyMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  check(): Promise<HealthReport> {
    if (this.lastHealthy && this.now() < this.healthyUntil) return Promise.resolve(this.lastHealthy);
    this.inFlight ??= this.run()
      .then((report) => {
        if (report.status === "healthy") {
          this.lastHealthy = report;
          this.healthyUntil = this.now() + this.reuseHealthyMs;
        } else {
          this.lastHealthy = undefined;
        }
        return report;
      })
      .finally(() => {
        this.inFlight = undefined;
      });
    return this.inFlight;
  }
}
