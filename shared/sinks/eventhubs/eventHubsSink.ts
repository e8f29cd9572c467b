import { EventHubProducerClient, RetryMode, type EventData, type EventDataBatch, type RetryOptions, type TokenCredential } from "@azure/event-hubs";
import { boundedSignal, SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink, type CallOptions, type RefusedVersion, type SinkWriteResult } from "../alertSink";
import { envelopeLine, withoutEvidence } from "../envelope";
import { eventHubsFailure } from "./failure";
import type { EventHubsSettings } from "./settings";

/**
 * core-amqp's defaults (3 retries 30 s apart, 60 s per try) let one send run for over four
 * minutes, most of a pull's time. Here one operation (connect, authorize, open the link, send a
 * batch) gives up after 3 tries of at most 20 s with about 0.5 s and 1.5 s between them, ~62 s at
 * worst; the next pull retries what is left, and the write as a whole has its own bound too.
 */
export const EVENT_HUBS_RETRY: Readonly<RetryOptions> = Object.freeze({
  maxRetries: 2,
  retryDelayInMs: 500,
  maxRetryDelayInMs: 4_000,
  timeoutInMs: 20_000,
});

/** Event Hubs refuses longer partition keys. */
const MAX_PARTITION_KEY_LENGTH = 128;

/** The application property an event carries when its alert was sent without `evidence`. */
export const TRUNCATED_PROPERTY = "truncated";

/** What the sink uses of the producer client. */
export type EventHubsProducer = Pick<EventHubProducerClient, "createBatch" | "sendBatch" | "close">;

export interface EventHubsConnectionOptions {
  /**
   * Where to open the AMQP connection instead of the namespace's own host (an intermediary or,
   * in tests, a local AMQP endpoint); the namespace still names the token audience.
   */
  customEndpointAddress?: string;
}

/** A producer for the configured hub, signed in with the given identity, with the bounded retry policy. */
export function createEventHubsProducer(settings: EventHubsSettings, credential: TokenCredential, options: EventHubsConnectionOptions = {}): EventHubProducerClient {
  return new EventHubProducerClient(settings.fullyQualifiedNamespace, settings.eventHubName, credential, {
    // The mode is read here, not in the constant: a module-level read would load the Event Hubs SDK on every cold start.
    retryOptions: { ...EVENT_HUBS_RETRY, mode: RetryMode.Exponential },
    ...(options.customEndpointAddress === undefined ? {} : { customEndpointAddress: options.customEndpointAddress }),
  });
}

/** The event for one alert version: its envelope line as UTF-8 JSON (a Buffer, which the SDK sends as is). */
function eventOf(envelope: AlertEnvelope, trimmedAlertJson?: string): EventData {
  return {
    // Stryker disable next-line StringLiteral: Buffer.from reads an empty encoding name as utf8, its default
    body: Buffer.from(envelopeLine(envelope, trimmedAlertJson), "utf8"),
    contentType: "application/json",
    ...(trimmedAlertJson === undefined ? {} : { properties: { [TRUNCATED_PROPERTY]: "evidence" } }),
  };
}

/**
 * Publishes each alert version as one event on an event hub, partitioned by tenant so one
 * customer's alerts stay in order on one partition. Delivery is at least once: a batch whose
 * acknowledgement is lost (a timeout, an abort, a dropped connection) counts as failed, the page is
 * not acknowledged, and the next attempt sends it again, so readers deduplicate on the version
 * (docs/sinks/eventhubs.md). Event Hubs cannot list what it holds, so there is no `storedVersions`.
 */
export class EventHubsAlertSink implements AlertSink {
  constructor(
    private readonly producer: EventHubsProducer,
    private readonly timeoutMs = 120_000,
  ) {}

  async write(key: AlertBatchKey, alerts: readonly AlertEnvelope[], options?: CallOptions): Promise<SinkWriteResult | void> {
    if (alerts.length === 0) return;
    const partitionKey = key.tenantId;
    if (!partitionKey || partitionKey.length > MAX_PARTITION_KEY_LENGTH) throw new SinkError("The batch's tenant id cannot be a partition key");
    const abortSignal = boundedSignal(this.timeoutMs, options);
    const newBatch = async (): Promise<EventDataBatch> => {
      try {
        return await this.producer.createBatch({ partitionKey, abortSignal });
      } catch (error) {
        throw eventHubsFailure("Connecting to the event hub failed", error);
      }
    };
    const send = async (full: EventDataBatch): Promise<void> => {
      try {
        await this.producer.sendBatch(full, { abortSignal });
      } catch (error) {
        throw eventHubsFailure("Sending alerts to the event hub failed", error);
      }
    };

    const refused: RefusedVersion[] = [];
    let batch = await newBatch();
    for (const envelope of alerts) {
      if (batch.tryAdd(eventOf(envelope))) continue;
      if (batch.count > 0) {
        await send(batch);
        batch = await newBatch();
        if (batch.tryAdd(eventOf(envelope))) continue;
      }
      // Alone in a batch and still too large: the hub's per-event limit. Evidence is what grows.
      const trimmed = withoutEvidence(envelope.alert.json);
      if (trimmed !== undefined && batch.tryAdd(eventOf(envelope, trimmed))) continue;
      refused.push({
        alert: envelope.alert,
        reason: "oversized",
        detail: `Larger than the event hub's ${batch.maxSizeInBytes}-byte message limit${trimmed === undefined ? "" : " even without its evidence"}`,
      });
    }
    if (batch.count > 0) await send(batch);
    return refused.length > 0 ? { refused } : undefined;
  }

  /** Closes the AMQP connection; the host calls it on shutdown (the client reconnects lazily otherwise). */
  close(): Promise<void> {
    return this.producer.close();
  }
}
