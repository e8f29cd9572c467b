import * as azureFunctions from "@azure/functions";
import { AzureFunctionsInstrumentationESM } from "@azure/functions-opentelemetry-instrumentation";
import { ManagedIdentityCredential, type TokenCredential } from "@azure/identity";
import { AzureMonitorLogExporter, AzureMonitorMetricExporter, type AzureMonitorExporterOptions } from "@azure/monitor-opentelemetry-exporter";
import { context, metrics, propagation } from "@opentelemetry/api";
import { logs } from "@opentelemetry/api-logs";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchLogRecordProcessor, LoggerProvider } from "@opentelemetry/sdk-logs";
import { MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { ConfigError } from "../shared/config";
import { describeError } from "../shared/errors";
import { TELEMETRY_SCOPE } from "../shared/telemetry/names";
import { connectionStringProblem, telemetrySettings, type TelemetrySettings } from "../shared/telemetry/settings";
import { azureMonitorTemporality, deferredLogExporter, deferredMetricExporter } from "./deferredExporters";
import { APP_VERSION } from "../shared/version";
import { skippingExportedLines } from "./hostLogForwarding";

/**
 * The OpenTelemetry SDK with the Azure Monitor exporters, as Microsoft documents it for Node.js
 * Functions (docs/operations.md, "Telemetry"), started once per worker process by the entry point
 * and only when APPLICATIONINSIGHTS_CONNECTION_STRING is set: never in the tests or the sandbox.
 * The core writes to the OpenTelemetry API alone (shared/telemetry/); this is the one place
 * that knows the exporter.
 */

/** Metrics are pre-aggregated and sent once a minute (Application Insights' own granularity). */
/** Time series kept per instrument (see the metric reader below). */
const METRIC_SERIES_LIMIT = 50_000;
const METRIC_EXPORT_INTERVAL_MS = 60_000;

function ingestionCredential(auth: TelemetrySettings["auth"]): TokenCredential | undefined {
  if (auth.kind === "key") return undefined;
  return auth.clientId ? new ManagedIdentityCredential({ clientId: auth.clientId }) : new ManagedIdentityCredential();
}

export interface TelemetryHandle {
  /** Flushes what is buffered and stops the exporters. */
  shutdown(): Promise<void>;
}

/**
 * Starts the SDK once per process when a connection string is set. `exporterOverrides` exist for
 * the export test, which points the exporters at a stand-in ingestion endpoint on loopback.
 */
export function startTelemetry(
  env: Readonly<Record<string, string | undefined>> = process.env,
  exporterOverrides: Partial<AzureMonitorExporterOptions> = {},
): TelemetryHandle | undefined {
  const settings = telemetrySettings(env);
  if (!settings) return undefined;
  const problem = connectionStringProblem(settings.connectionString);
  if (problem) throw new ConfigError([problem]);
  // Built with the first exporter, at its first export (in the bundle, that is when the identity
  // and exporter packages are evaluated), and shared by both: one token cache.
  let credential: TokenCredential | undefined | null = null;
  const exporterOptions = (): AzureMonitorExporterOptions => {
    if (credential === null) credential = ingestionCredential(settings.auth);
    return { connectionString: settings.connectionString, ...(credential ? { credential } : {}), ...exporterOverrides };
  };
  // The host names itself after the site; the same name puts both on one node of the application map.
  const resource = resourceFromAttributes({
    "service.name": env["OTEL_SERVICE_NAME"] || env["WEBSITE_SITE_NAME"] || TELEMETRY_SCOPE,
    "service.version": APP_VERSION,
  });
  const loggerProvider = new LoggerProvider({
    resource,
    processors: [new BatchLogRecordProcessor(deferredLogExporter(() => new AzureMonitorLogExporter(exporterOptions())))],
  });
  const meterProvider = new MeterProvider({
    resource,
    readers: [
      new PeriodicExportingMetricReader({
        exporter: deferredMetricExporter(() => new AzureMonitorMetricExporter(exporterOptions()), azureMonitorTemporality),
        exportIntervalMillis: METRIC_EXPORT_INTERVAL_MS,
        // Per-tenant series (tenantId × outcome × category × errorCode on mssp.pulls) pass the
        // SDK's default 2,000 per instrument at a few hundred tenants and would fold into an
        // overflow series; each series costs a few hundred bytes, so allow a large fleet.
        cardinalityLimits: { default: METRIC_SERIES_LIMIT },
      }),
    ],
  });
  logs.setGlobalLoggerProvider(loggerProvider);
  metrics.setGlobalMeterProvider(meterProvider);
  // The host hands each invocation a W3C traceparent; with a propagator and a context manager the
  // app's records carry its operation id and line up under the host's request telemetry.
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  // Microsoft's Functions instrumentation: tells the host that this worker exports its own logs
  // (so the host does not send them again), forwards context.log lines that bypass loggerFor,
  // and binds the host's trace context. Registered explicitly rather than through a require
  // hook, so the order in which modules load cannot silently disable it.
  const instrumentation = new AzureFunctionsInstrumentationESM({ enabled: false });
  instrumentation.setLoggerProvider(skippingExportedLines(loggerProvider));
  instrumentation.registerAzFunc(azureFunctions);
  const handle: TelemetryHandle = {
    async shutdown() {
      await Promise.allSettled([loggerProvider.shutdown(), meterProvider.shutdown()]);
    },
  };
  azureFunctions.app.hook.appTerminate(() => handle.shutdown());
  return handle;
}

/** Telemetry must never keep the app from starting (a malformed connection string, say): it says why on stderr instead. */
export function startTelemetryOrSay(env: Readonly<Record<string, string | undefined>> = process.env, say: (line: string) => void = console.error): TelemetryHandle | undefined {
  try {
    return startTelemetry(env);
  } catch (error) {
    say(`Error: telemetry did not start: ${describeError(error)}`);
    return undefined;
  }
}

startTelemetryOrSay();
