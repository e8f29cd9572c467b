import { metrics, type Counter, type Histogram, type Meter, type ObservableResult } from "@opentelemetry/api";
import type { LogFields } from "../logging";
import type { PullReport } from "../pull/observer";
import { APP_VERSION } from "../version";
import { emitLogRecord } from "./logRecords";
import { METRICS, PULL_RUN_EVENT, PULL_RUN_MESSAGE, TELEMETRY_SCOPE } from "./names";
import type { Telemetry } from "./telemetry";

interface Instruments {
  meter: Meter;
  pulls: Counter;
  alertsDelivered: Counter;
  tokenRefreshes: Counter;
  lag: Histogram;
  duration: Histogram;
}

/** Where the re-consent gauge reads its count; the latest services built in this process win. */
let reconsentSource: (() => Promise<number>) | undefined;
/** Meters that already have the gauge: one callback per meter, whatever the number of services. */
const metersWithGauge = new WeakSet<Meter>();

function currentMeter(): Meter {
  return metrics.getMeter(TELEMETRY_SCOPE, APP_VERSION);
}

/**
 * Bounds the registry read: the SDK collects every metric in one pass, and a table that takes its
 * full storage timeout would make the whole minute's export miss its deadline.
 */
const RECONSENT_READ_TIMEOUT_MS = 5_000;

async function observeReconsentRequired(result: ObservableResult): Promise<void> {
  const source = reconsentSource;
  if (!source) return;
  let timer: NodeJS.Timeout | undefined;
  try {
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), RECONSENT_READ_TIMEOUT_MS);
      timer.unref();
    });
    const count = await Promise.race([source(), late]);
    if (count !== undefined) result.observe(count);
  } catch {
    // A registry that does not answer reports nothing this interval; a gap, not a false zero.
  } finally {
    clearTimeout(timer);
  }
}

function ensureGauge(meter: Meter): void {
  if (metersWithGauge.has(meter)) return;
  metersWithGauge.add(meter);
  meter
    .createObservableGauge(METRICS.reconsentRequired, { description: "Tenants whose consent must be renewed", unit: "{tenant}" })
    .addCallback(observeReconsentRequired);
}

function createInstruments(meter: Meter): Instruments {
  ensureGauge(meter);
  return {
    meter,
    pulls: meter.createCounter(METRICS.pulls, { description: "Finished pull runs", unit: "{pull}" }),
    alertsDelivered: meter.createCounter(METRICS.alertsDelivered, { description: "Alert versions delivered to the sink", unit: "{alert}" }),
    tokenRefreshes: meter.createCounter(METRICS.tokenRefreshes, { description: "Access tokens redeemed from a refresh token", unit: "{refresh}" }),
    lag: meter.createHistogram(METRICS.pullLag, { description: "Delivered-up-to point behind now at the end of a run", unit: "s" }),
    duration: meter.createHistogram(METRICS.pullDuration, { description: "Wall time of a pull run", unit: "ms" }),
  };
}

/** The pull-run record's fields: ids, counts and codes only (no alert content, no token). */
export function pullRunFields(report: PullReport): LogFields {
  return {
    event: PULL_RUN_EVENT,
    tenantId: report.tenantId,
    tenantName: report.tenantName,
    invocationId: report.invocationId,
    outcome: report.outcome,
    errorCode: report.errorCode,
    category: report.category,
    alerts: report.alerts,
    deadLetters: report.deadLetters,
    durationMs: report.durationMs,
    lagSeconds: report.lagSeconds,
    tokenRefreshed: report.tokenRefreshed,
    healthBefore: report.health.before,
    healthAfter: report.health.after,
    // A sink that is down shows here although the run succeeded for the others.
    sinksBehind: report.sinksBehind.map((s) => s.sink).join(",") || undefined,
    parkedPages: report.sinksBehind.reduce((sum, s) => sum + s.parkedPages, 0),
    startedAt: report.startedAt,
  };
}

/**
 * The Telemetry port on the OpenTelemetry API. Instruments are bound to whichever meter provider
 * is registered when they are first used (and rebound if it changes), so the order in which the
 * SDK and the core's modules load does not matter.
 */
export function openTelemetry(options: { reconsentRequired?: () => Promise<number> } = {}): Telemetry {
  if (options.reconsentRequired) reconsentSource = options.reconsentRequired;
  ensureGauge(currentMeter());
  let instruments: Instruments | undefined;
  const current = (): Instruments => {
    const meter = currentMeter();
    if (instruments?.meter !== meter) instruments = createInstruments(meter);
    return instruments;
  };
  return {
    pullRun(report) {
      const { pulls, alertsDelivered, tokenRefreshes, lag, duration } = current();
      const tenant = { tenantId: report.tenantId };
      const failure = report.outcome === "failed" ? { category: report.category ?? "unknown", errorCode: report.errorCode ?? "unknown" } : {};
      pulls.add(1, { ...tenant, outcome: report.outcome, ...failure });
      if (report.alerts > 0) alertsDelivered.add(report.alerts, tenant);
      if (report.tokenRefreshed) tokenRefreshes.add(1, tenant);
      if (report.lagSeconds !== null) lag.record(report.lagSeconds, tenant);
      duration.record(report.durationMs, { outcome: report.outcome });
      const severity = report.category === "app_credential" ? "error" : report.outcome === "failed" ? "warn" : "info";
      emitLogRecord(severity, PULL_RUN_MESSAGE, pullRunFields(report));
    },
  };
}
