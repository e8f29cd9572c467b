import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { LogRecord, Logger, LoggerProvider } from "@opentelemetry/api-logs";
import { AzureMonitorLogExporter, AzureMonitorMetricExporter } from "@azure/monitor-opentelemetry-exporter";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import type { LogRecordExporter, ReadableLogRecord } from "@opentelemetry/sdk-logs";
import { InstrumentType, type PushMetricExporter, type ResourceMetrics } from "@opentelemetry/sdk-metrics";
import { describe, expect, it, vi } from "vitest";
import { azureMonitorTemporality, deferredLogExporter, deferredMetricExporter } from "../../functions/deferredExporters";
import { alreadyExported, skippingExportedLines } from "../../functions/hostLogForwarding";
import { attributesOf } from "../../shared/telemetry/logRecords";
import { METRICS } from "../../shared/telemetry/names";
import { connectionStringProblem, telemetrySettings } from "../../shared/telemetry/settings";

const CONNECTION = "InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/";

describe("telemetry settings", () => {
  it("exports nothing without a connection string (tests, sandbox)", () => {
    expect(telemetrySettings({})).toBeUndefined();
    expect(telemetrySettings({ APPLICATIONINSIGHTS_CONNECTION_STRING: "  " })).toBeUndefined();
  });

  it("authenticates ingestion as the host does: Entra ID with the user-assigned identity from APPLICATIONINSIGHTS_AUTHENTICATION_STRING", () => {
    const clientId = "11111111-2222-3333-4444-555555555555";
    expect(
      telemetrySettings({ APPLICATIONINSIGHTS_CONNECTION_STRING: CONNECTION, APPLICATIONINSIGHTS_AUTHENTICATION_STRING: `Authorization=AAD;ClientId=${clientId}` }),
    ).toEqual({ connectionString: CONNECTION, auth: { kind: "managedIdentity", clientId } });
    expect(telemetrySettings({ APPLICATIONINSIGHTS_CONNECTION_STRING: CONNECTION, APPLICATIONINSIGHTS_AUTHENTICATION_STRING: "authorization=aad" })).toEqual({
      connectionString: CONNECTION,
      auth: { kind: "managedIdentity" },
    });
    expect(telemetrySettings({ APPLICATIONINSIGHTS_CONNECTION_STRING: CONNECTION })?.auth).toEqual({ kind: "key" });
  });
});

describe("the connection string, checked when telemetry starts", () => {
  const candidates = [
    CONNECTION,
    "InstrumentationKey=00000000-0000-4000-8000-000000000000",
    "instrumentationkey=00000000-0000-4000-8000-000000000000;EndpointSuffix=applicationinsights.azure.com",
    `${CONNECTION};`,
    "InstrumentationKey=00000000-0000-4000-8000-00000000000G",
    "InstrumentationKey=AAAAAAAA-0000-4000-8000-000000000000",
    "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/",
    "InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://x/?a=b",
    "not a connection string",
    "InstrumentationKey=00000000-0000-4000-8000-000000000000=x",
    "",
  ];

  it("refuses exactly what the Azure Monitor exporter refuses, which is now built only at the first export", () => {
    for (const connectionString of candidates) {
      let exporterRefuses = false;
      try {
        new AzureMonitorLogExporter({ connectionString, disableOfflineStorage: true });
      } catch {
        exporterRefuses = true;
      }
      expect(connectionStringProblem(connectionString) !== undefined, connectionString).toBe(exporterRefuses);
    }
    expect(connectionStringProblem("IngestionEndpoint=https://x/")).toMatch(/no InstrumentationKey/);
  });

  it("keeps telemetry from starting with a connection string the exporter would refuse, naming the setting and not its value", async () => {
    const { startTelemetryOrSay } = await import("../../functions/telemetry");
    const connectionString = "InstrumentationKey=AAAAAAAA-0000-4000-8000-000000000000;IngestionEndpoint=https://x/";
    const said: string[] = [];
    expect(startTelemetryOrSay({ APPLICATIONINSIGHTS_CONNECTION_STRING: connectionString }, (line) => said.push(line))).toBeUndefined();
    expect(said).toEqual([
      "Error: telemetry did not start: ConfigError: Invalid app settings:\n- APPLICATIONINSIGHTS_CONNECTION_STRING has an InstrumentationKey that is not a GUID in lower case",
    ]);
    expect(said.join("\n")).not.toContain("AAAAAAAA");
    expect(startTelemetryOrSay({}, (line) => said.push(line))).toBeUndefined();
    expect(said).toHaveLength(1);
    expect(connectionStringProblem("InstrumentationKey=AAAAAAAA-0000-4000-8000-000000000000")).toMatch(/not a GUID in lower case/);
  });
});

describe("exporters built at the first export", () => {
  const done = (): Promise<ExportResult> => Promise.resolve({ code: ExportResultCode.SUCCESS });

  it("builds the log exporter only when there is something to send, once, and forwards to it", async () => {
    const sent: ReadableLogRecord[][] = [];
    let built = 0;
    const real: LogRecordExporter = {
      export: (logs, callback) => {
        sent.push(logs);
        callback({ code: ExportResultCode.SUCCESS });
      },
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve(),
    };
    const exporter = deferredLogExporter(() => {
      built++;
      return real;
    });
    await exporter.forceFlush();
    await exporter.shutdown();
    expect(built).toBe(0);
    const records = [{ body: "one" }, { body: "two" }] as unknown as ReadableLogRecord[];
    const results: ExportResult[] = [];
    exporter.export(records, (r) => results.push(r));
    exporter.export(records, (r) => results.push(r));
    expect(built).toBe(1);
    expect(sent).toEqual([records, records]);
    expect(results.map((r) => r.code)).toEqual([ExportResultCode.SUCCESS, ExportResultCode.SUCCESS]);
    await done();
  });

  it("says once on stderr when the exporter cannot be built, fails every export with that error, and does not try again", () => {
    const said = vi.spyOn(console, "error").mockImplementation(() => undefined);
    try {
      let attempts = 0;
      const exporter = deferredLogExporter(() => {
        attempts++;
        throw new Error("no credential");
      });
      const results: ExportResult[] = [];
      for (let i = 0; i < 3; i++) exporter.export([], (r) => results.push(r));
      expect(attempts).toBe(1);
      expect(results.map((r) => [r.code, r.error?.message])).toEqual(Array.from({ length: 3 }, () => [ExportResultCode.FAILED, "no credential"]));
      expect(said.mock.calls.map((c) => String(c[0]))).toEqual([
        // The kind only: an SDK's message may quote the connection string, which holds the instrumentation key.
        "Error: the log exporter could not be built, so no log records reach Application Insights: Error",
      ]);
      const metrics = deferredMetricExporter(() => {
        throw new Error("bad endpoint");
      }, azureMonitorTemporality);
      metrics.export({ resource: {}, scopeMetrics: [] } as unknown as ResourceMetrics, (r) => results.push(r));
      expect(results.at(-1)?.code).toBe(ExportResultCode.FAILED);
      expect(String(said.mock.calls.at(-1)?.[0])).toBe("Error: the metric exporter could not be built, so no metrics reach Application Insights: Error");
    } finally {
      said.mockRestore();
    }
  });

  it("builds the metric exporter on its first export and answers each instrument's temporality exactly as Azure Monitor's exporter", async () => {
    let built = 0;
    let flushed = 0;
    const real: PushMetricExporter = {
      export: (_metrics, callback) => callback({ code: ExportResultCode.SUCCESS }),
      forceFlush: () => {
        flushed++;
        return Promise.resolve();
      },
      shutdown: () => Promise.resolve(),
    };
    const exporter = deferredMetricExporter(() => {
      built++;
      return real;
    }, azureMonitorTemporality);
    const azureMonitor = new AzureMonitorMetricExporter({ connectionString: CONNECTION, disableOfflineStorage: true });
    for (const type of Object.values(InstrumentType)) {
      expect(exporter.selectAggregationTemporality?.(type), type).toBe(azureMonitor.selectAggregationTemporality(type));
    }
    await exporter.forceFlush();
    expect(built).toBe(0);
    exporter.export({ resource: {}, scopeMetrics: [] } as unknown as ResourceMetrics, () => undefined);
    await exporter.forceFlush();
    expect([built, flushed]).toEqual([1, 1]);
    await azureMonitor.shutdown();
  });
});

describe("log records", () => {
  it("turns fields into attributes and leaves absent values out", () => {
    expect(attributesOf({ tenantId: "t", alerts: 0, ok: false, errorCode: undefined, detail: null })).toEqual({ tenantId: "t", alerts: 0, ok: false });
  });
});

describe("host log forwarding", () => {
  function capturing(): { provider: LoggerProvider; emitted: LogRecord[] } {
    const emitted: LogRecord[] = [];
    const logger: Logger = { emit: (record) => void emitted.push(record), enabled: () => true };
    return { provider: { getLogger: () => logger }, emitted };
  }

  it("drops the instrumentation's copy of a line loggerFor already exported, and keeps every other line", () => {
    const { provider, emitted } = capturing();
    const hookLogger = skippingExportedLines(provider).getLogger("@azure/functions-opentelemetry-instrumentation");
    // What the worker does: context.log runs the log hooks synchronously.
    const contextLog = (text: string) => hookLogger.emit({ body: text });
    alreadyExported(() => contextLog("pull finished {\"tenantId\":\"t\"}"));
    contextLog("unhandled failure: boom");
    expect(emitted.map((r) => r.body)).toEqual(["unhandled failure: boom"]);
    expect(hookLogger.enabled()).toBe(true);
  });

  it("unmarks the line even when context.log throws", () => {
    const { provider, emitted } = capturing();
    const hookLogger = skippingExportedLines(provider).getLogger("x");
    expect(() =>
      alreadyExported(() => {
        throw new Error("log failed");
      }),
    ).toThrow("log failed");
    hookLogger.emit({ body: "next" });
    expect(emitted).toHaveLength(1);
  });
});

describe("telemetry layout", () => {
  const root = join(__dirname, "..", "..");
  const files = readdirSync(join(root, "shared", "telemetry")).map((name) => readFileSync(join(root, "shared", "telemetry", name), "utf8"));

  it("keeps the core on the OpenTelemetry API: no SDK, exporter or Functions package in shared/telemetry", () => {
    const imports = files.flatMap((text) => [...text.matchAll(/from\s+"([^".][^"]*)"/g)].map((m) => m[1]));
    expect(new Set(imports)).toEqual(new Set(["@opentelemetry/api", "@opentelemetry/api-logs"]));
  });

  it("names every metric in the mssp. namespace, once", () => {
    const names = Object.values(METRICS);
    expect(new Set(names).size).toBe(names.length);
    for (const name of names) expect(name).toMatch(/^mssp\.[a-z_]+(\.[a-z_]+)*$/);
  });
});
