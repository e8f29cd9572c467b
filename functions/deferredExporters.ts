import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import type { LogRecordExporter, ReadableLogRecord } from "@opentelemetry/sdk-logs";
import { AggregationTemporality, InstrumentType, type PushMetricExporter, type ResourceMetrics } from "@opentelemetry/sdk-metrics";
import { describeError } from "../shared/errors";

/**
 * Builds the exporter once, on first use. A build that throws (settings the start-up check let
 * through) would otherwise fail inside the SDK's batch, which reports to OpenTelemetry's diag
 * logger, silent unless one is set: it is said once on stderr, where the host shows it, and every
 * export then fails without trying again (the cause is the configuration, not the moment).
 */
function onFirstUse<T>(make: () => T, kind: "log" | "metric"): () => T | Error {
  let built: T | Error | undefined;
  return () => {
    if (built !== undefined) return built;
    try {
      built = make();
    } catch (error) {
      built = error instanceof Error ? error : new Error(String(error));
      const items = kind === "log" ? "log records" : "metrics";
      console.error(`Error: the ${kind} exporter could not be built, so no ${items} reach Application Insights: ${describeError(error)}`);
    }
    return built;
  };
}

/**
 * Exporters built on their first export instead of when telemetry starts. The Azure Monitor
 * exporter package is the largest part of starting telemetry (about 110 ms of a cold instance's
 * entry load in the bundle, more than the rest of the SDK together), and nothing is sent before
 * the first batch is due (five seconds after a log line, a minute for metrics): building it then
 * takes that cost off the path to the first invocation. A shutdown or flush with nothing
 * exported yet builds nothing.
 */
export function deferredLogExporter(make: () => LogRecordExporter): LogRecordExporter {
  let exporter: LogRecordExporter | undefined;
  const build = onFirstUse(make, "log");
  return {
    export(logs: ReadableLogRecord[], resultCallback: (result: ExportResult) => void): void {
      const built = build();
      if (built instanceof Error) return resultCallback({ code: ExportResultCode.FAILED, error: built });
      exporter = built;
      built.export(logs, resultCallback);
    },
    forceFlush: () => exporter?.forceFlush() ?? Promise.resolve(),
    shutdown: () => exporter?.shutdown() ?? Promise.resolve(),
  };
}

/**
 * The same for metrics. The metric reader asks for the temporality of each instrument as the app
 * creates it, before any export, so the deferred exporter answers that itself: `temporality` must
 * answer as the real exporter would (a test compares them for every instrument type).
 */
export function deferredMetricExporter(make: () => PushMetricExporter, temporality: (type: InstrumentType) => AggregationTemporality): PushMetricExporter {
  let exporter: PushMetricExporter | undefined;
  const build = onFirstUse(make, "metric");
  return {
    export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
      const built = build();
      if (built instanceof Error) return resultCallback({ code: ExportResultCode.FAILED, error: built });
      exporter = built;
      built.export(metrics, resultCallback);
    },
    forceFlush: () => exporter?.forceFlush() ?? Promise.resolve(),
    shutdown: () => exporter?.shutdown() ?? Promise.resolve(),
    selectAggregationTemporality: temporality,
  };
}

/**
 * Azure Monitor's choice (AzureMonitorMetricExporter.selectAggregationTemporality): cumulative for
 * up-down counters, whose value is a level, and delta for everything else, which Application
 * Insights sums per interval.
 */
export function azureMonitorTemporality(type: InstrumentType): AggregationTemporality {
  return type === InstrumentType.UP_DOWN_COUNTER || type === InstrumentType.OBSERVABLE_UP_DOWN_COUNTER ? AggregationTemporality.CUMULATIVE : AggregationTemporality.DELTA;
}
