import type { TokenCredential } from "@azure/identity";
import { KnownMonitorAudience, LogsIngestionClient } from "@azure/monitor-ingestion";
import { APP_VERSION } from "../../version";
import { boundedSignal, type AlertBatchKey, type AlertEnvelope, type AlertSink, type CallOptions, type SinkWriteResult, type StoredVersion } from "../alertSink";
import { chunkRecords } from "./chunks";
import { uploadFailure } from "./failures";
import { IngestedLedger, type PageBounds } from "./ledger";
import { prepareRecords, versionOf, type PreparedRecord } from "./records";
import type { SentinelSettings } from "./settings";

export interface SentinelSinkOptions {
  settings: SentinelSettings;
  /** The app's managed identity in Azure; needs Monitoring Metrics Publisher on the DCR. */
  credential: TokenCredential;
  /** Local development and tests only: trust this CA (the fakes' certificate) as well. */
  localDevCaPem?: string;
  /** A write, retries and Retry-After waits included, is abandoned after this long (default 120 s, as the blob sink). */
  timeoutMs?: number;
  /** Calls in flight at once within one write (default 2). */
  concurrency?: number;
  /** Retries of one call by the SDK on 408, 429, 5xx and network errors (default 3, the SDK's). */
  maxRetries?: number;
  /** First back-off of those retries (default 1 s, the SDK's; 429 and 503 wait Retry-After instead). */
  retryDelayMs?: number;
}

/** The token audience for the endpoint's cloud; the SDK's default is the public cloud's. */
function audienceFor(endpoint: string): string {
  const host = new URL(endpoint).hostname;
  if (host.endsWith(".azure.us")) return KnownMonitorAudience.AzureGovernment;
  if (host.endsWith(".azure.cn")) return KnownMonitorAudience.AzureChina;
  return KnownMonitorAudience.AzurePublicCloud;
}

/**
 * Delivers alert versions to a Log Analytics custom table (Microsoft Sentinel) through the Logs
 * Ingestion API, one row per version (see records.ts for the columns).
 *
 * The sink chunks the records itself, below the service's 1 MB per call, and uploads chunk by chunk
 * with the SDK (which gzips, and retries each call on 429 with Retry-After and on 5xx). Each
 * accepted chunk is remembered by page (ledger.ts): when a later chunk fails, the write fails, and
 * the page's retry (a later run, or a parked page's catch-up) sends only what was not accepted,
 * because `write` skips remembered versions and `storedVersions` reports them to a resuming pull.
 *
 * Guarantee: at least once. The service has no idempotency: a call that timed out after the
 * service took it, or a retry on another instance, can store a version twice. Readers dedupe with
 * `summarize arg_max(TimeGenerated, *) by CustomerTenantId, AlertId, AlertLastUpdateTime`.
 */
export class SentinelAlertSink implements AlertSink {
  private readonly client: LogsIngestionClient;
  private readonly ledger = new IngestedLedger();
  private readonly timeoutMs: number;
  private readonly concurrency: number;

  constructor(private readonly options: SentinelSinkOptions) {
    const { settings } = options;
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.concurrency = Math.max(1, options.concurrency ?? 2);
    this.client = new LogsIngestionClient(settings.ingestionEndpoint, options.credential, {
      audience: audienceFor(settings.ingestionEndpoint),
      userAgentOptions: { userAgentPrefix: `MsspDefenderConnector/${APP_VERSION}` },
      retryOptions: {
        maxRetries: options.maxRetries ?? 3,
        ...(options.retryDelayMs === undefined ? {} : { retryDelayInMs: options.retryDelayMs, maxRetryDelayInMs: options.retryDelayMs * 8 }),
      },
      ...(options.localDevCaPem ? { tlsOptions: { ca: options.localDevCaPem } } : {}),
    });
  }

  async write(key: AlertBatchKey, alerts: readonly AlertEnvelope[], options?: CallOptions): Promise<SinkWriteResult> {
    // Versions this instance saw accepted for the same page bounds are not sent again.
    const unsent = alerts.filter((envelope) => !this.ledger.has(key, versionOf(envelope)));
    const { records, refused } = prepareRecords(unsent);
    if (records.length > 0) await this.upload(key, records, boundedSignal(this.timeoutMs, options));
    return refused.length > 0 ? { refused } : {};
  }

  /** What this instance saw accepted for the page's bounds; empty after a restart (nothing known). */
  async storedVersions(page: PageBounds): Promise<StoredVersion[]> {
    return this.ledger.stored(page);
  }

  /**
   * Uploads the records chunk by chunk, `concurrency` at a time. After the first failure no new
   * chunk starts; the ones in flight finish, and every accepted chunk is in the ledger before the
   * write fails with what is left.
   */
  private async upload(page: PageBounds, records: PreparedRecord[], signal: AbortSignal): Promise<void> {
    const { dcrImmutableId, streamName } = this.options.settings;
    const chunks = chunkRecords(records);
    let next = 0;
    let ingested = 0;
    let failure: { error: unknown } | undefined;
    const worker = async (): Promise<void> => {
      while (failure === undefined && !signal.aborted && next < chunks.length) {
        // Stryker disable next-line ArrayDeclaration: `?? []` is for the type checker; `next < chunks.length` always finds a chunk
        const chunk = chunks[next++] ?? [];
        try {
          // One call per chunk: the chunk is under the SDK's own split size, so it is sent whole.
          await this.client.upload(dcrImmutableId, streamName, chunk.map((prepared) => prepared.record), { abortSignal: signal, maxConcurrency: 1 });
          this.ledger.add(page, chunk.map((prepared) => prepared.version));
          ingested += chunk.length;
        } catch (error) {
          failure ??= { error };
        }
      }
    };
    // Stryker disable next-line MethodExpression: workers beyond the number of chunks find none left and end at once
    await Promise.all(Array.from({ length: Math.min(this.concurrency, chunks.length) }, worker));
    if (failure !== undefined || ingested < records.length) {
      throw uploadFailure(failure?.error, signal.aborted, { ingested, total: records.length });
    }
  }
}

/** The sink for the app's settings; the lead's createServices passes the managed identity and, locally, the fakes' CA. */
export function createSentinelSink(settings: SentinelSettings, credential: TokenCredential, extra: Omit<SentinelSinkOptions, "settings" | "credential"> = {}): SentinelAlertSink {
  return new SentinelAlertSink({ settings, credential, ...extra });
}
