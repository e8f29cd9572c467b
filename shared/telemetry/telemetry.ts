import type { PullObserver, PullReport } from "../pull/observer";

/**
 * What the core reports as telemetry beyond its log lines. The app's implementation
 * (./openTelemetry.ts) writes to the OpenTelemetry API only, so any SDK and exporter can sit
 * behind it: Azure Monitor in Azure (functions/telemetry.ts), in-memory exporters in the tests,
 * nothing at all in the sandbox.
 */
export interface Telemetry {
  /** One finished pull run: its structured record and the pull metrics. Never throws. */
  pullRun(report: PullReport): void;
}

/** Hands every pull report to the telemetry (a pull observer: bounded, and never fails the pull). */
export function telemetryObserver(telemetry: Telemetry): PullObserver {
  return {
    pulled: async (report) => telemetry.pullRun(report),
  };
}
