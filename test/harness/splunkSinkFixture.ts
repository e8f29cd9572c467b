import { setTimeout as delay } from "node:timers/promises";
import { expect } from "vitest";
import { SinkError } from "../../shared/sinks/alertSink";
import { parseSplunkSettings } from "../../shared/sinks/splunk/settings";
import { SplunkHecSink, type SplunkHecSinkOptions } from "../../shared/sinks/splunk/splunkHecSink";
import { FakeSplunkHec } from "../fakes/fakeSplunkHec";
import type { TestCertificate } from "../fakes/tls";

/** The fake collector the Splunk mutation files share, started: `plain` takes indexes main and mssp, `ack` mssp with indexer acknowledgement. */
export async function startFakeHec(cert: TestCertificate, tokens: { plain: string; ack: string }): Promise<FakeSplunkHec> {
  const hec = new FakeSplunkHec({
    certPem: cert.certPem,
    keyPem: cert.keyPem,
    tokens: [
      { token: tokens.plain, indexes: ["main", "mssp"] },
      { token: tokens.ack, ack: true, indexes: ["mssp"] },
    ],
  });
  await hec.start();
  return hec;
}

/** A Splunk sink built for a test, with the waits it asked for and the warnings it logged. */
export interface RecordedSplunkSink {
  sink: SplunkHecSink;
  sleeps: number[];
  warnings: Array<{ message: string; fields: Record<string, unknown> | undefined }>;
}

/** Where the sinks send and what they trust: read when a sink is built, so a `beforeAll` may set it. */
export interface SplunkTarget {
  url: string;
  token: string;
  caPem: string;
}

/**
 * Builds Splunk sinks against `target()` with short backoffs and near-instant sleeps (each wait
 * still recorded), and keeps every sink in `opened` for the file's `afterAll` to close.
 */
export function splunkSinkMaker(target: () => SplunkTarget, opened: SplunkHecSink[]) {
  return (settings: Record<string, string> = {}, options: SplunkHecSinkOptions = {}): RecordedSplunkSink => {
    const { url, token, caPem } = target();
    const sleeps: number[] = [];
    const warnings: RecordedSplunkSink["warnings"] = [];
    const logger = {
      info: () => undefined,
      warn: (message: string, fields?: Record<string, unknown>) => warnings.push({ message, fields }),
      error: () => undefined,
    };
    const sink = new SplunkHecSink(parseSplunkSettings({ SPLUNK_HEC_URL: url, SPLUNK_HEC_TOKEN: token, SPLUNK_INDEX: "mssp", ...settings }), {
      caPem,
      logger: logger as unknown as NonNullable<SplunkHecSinkOptions["logger"]>,
      sleep: (ms, signal) => {
        sleeps.push(ms);
        return delay(Math.min(ms, 5), undefined, { signal });
      },
      retryBackoffMs: { initial: 100, max: 400 },
      ackPollMs: { initial: 20, max: 50 },
      ...options,
    });
    opened.push(sink);
    return { sink, sleeps, warnings };
  };
}

/** The SinkError a write ends with (fails the test if it resolves or throws anything else). */
export async function sinkFailure(promise: Promise<unknown>): Promise<SinkError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SinkError);
  return error as SinkError;
}
