import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { silentLogger, type Logger } from "../../logging";
import { APP_VERSION } from "../../version";
import { SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink, type CallOptions, type RefusedVersion, type SinkWriteResult } from "../alertSink";
import { describeAnswer, HEC_HEALTHY, HEC_INVALID_DATA_FORMAT, HEC_SUCCESS, isRetryable } from "./hecCodes";
import { batches, EventWriter, requestBody, type HecEvent } from "./hecEvents";
import { HecAbortedError, HecNoAnswerError, HecTransport, type HecAnswer } from "./hecTransport";
import type { SplunkSettings } from "./settings";
import { timeoutSignal } from "../../time/timeoutSignal";

export { SinkError };

/** The envelope's `source`: which program sent the event (the alert's product is in `fields.source`). */
export const DEFAULT_HEC_SOURCE = "mssp-defender-connector";
/**
 * Under Splunk Cloud's ~1 MB per request (Enterprise takes 800 MiB by default), so one batcher
 * fits both; it also bounds a single event.
 */
export const DEFAULT_MAX_REQUEST_BYTES = 900_000;

const EVENT_PATH = "/services/collector/event";
const ACK_PATH = "/services/collector/ack";
const HEALTH_PATH = "/services/collector/health";

export interface SplunkHecSinkOptions {
  /** Extra CA (PEM) to trust: the local-development setting, for a test collector. */
  caPem?: string;
  source?: string;
  /** The sink's own bound on one write, retries and acknowledgement included (default 120 s, as the blob sink). */
  timeoutMs?: number;
  /** One request (default 30 s). */
  requestTimeoutMs?: number;
  maxRequestBytes?: number;
  /** Attempts per request while the collector is busy or unreachable (default 8). */
  maxAttempts?: number;
  /** Backoff between attempts when the collector gives no Retry-After (default 500 ms doubling to 30 s, with jitter). */
  retryBackoffMs?: { initial: number; max: number };
  /** Interval of acknowledgement polls (default 1 s doubling to 10 s). */
  ackPollMs?: { initial: number; max: number };
  logger?: Logger;
  /** Waits `ms` or rejects when `signal` fires (tests pass a recording one). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export interface HecHealth {
  healthy: boolean;
  status?: number;
  code?: number;
}

/** One write's bounds: the pull's signal and the sink's timeout, whichever fires first. */
interface Call {
  signal: AbortSignal;
  callerSignal: AbortSignal | undefined;
  deadline: number;
}

/**
 * Delivers alerts to a Splunk HTTP Event Collector, many events per request under a byte cap.
 *
 * Without acknowledgement a request counts as delivered when the collector answers code 0: the
 * data has been received, not yet indexed. With SPLUNK_HEC_ACK=true (Splunk Enterprise only)
 * every request carries this instance's channel and counts only once the indexers acknowledge
 * its ack id. Either way a write that fails acknowledges nothing to the pipeline, which sends the
 * page again next run: delivery is at-least-once, and anything indexed before the failure (an
 * earlier request, an ack that never came) is indexed again. The sink cannot list what Splunk
 * holds, so it has no `storedVersions`; a resumed page is sent whole.
 */
export class SplunkHecSink implements AlertSink {
  /** One channel per instance: ack ids are numbered per channel, and one reads true only once. */
  readonly channel = randomUUID();
  private readonly transport: HecTransport;
  private readonly writer: EventWriter;
  private readonly ack: boolean;
  private readonly timeoutMs: number;
  private readonly maxRequestBytes: number;
  private readonly maxAttempts: number;
  private readonly backoffMs: { initial: number; max: number };
  private readonly ackPollMs: { initial: number; max: number };
  private readonly logger: Logger;
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Settled once the collector confirmed the token takes acknowledgements (ack mode only). */
  private ackProbe: Promise<void> | undefined;

  constructor(settings: SplunkSettings, options: SplunkHecSinkOptions = {}) {
    if (!settings.token) throw new Error("SplunkHecSink needs settings from parseSplunkSettings (the token is missing)");
    this.transport = new HecTransport({
      origin: settings.url,
      token: settings.token,
      userAgent: `${DEFAULT_HEC_SOURCE}/${APP_VERSION}`,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      ...(options.caPem ? { caPem: options.caPem } : {}),
    });
    this.writer = new EventWriter({
      source: options.source ?? DEFAULT_HEC_SOURCE,
      sourcetype: settings.sourcetype,
      ...(settings.index === undefined ? {} : { index: settings.index }),
    });
    this.ack = settings.ack;
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.maxRequestBytes = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    this.maxAttempts = options.maxAttempts ?? 8;
    this.backoffMs = options.retryBackoffMs ?? { initial: 500, max: 30_000 };
    this.ackPollMs = options.ackPollMs ?? { initial: 1_000, max: 10_000 };
    this.logger = options.logger ?? silentLogger;
    this.sleep = options.sleep ?? ((ms, signal) => delay(ms, undefined, { signal }));
  }

  async write(key: AlertBatchKey, alerts: readonly AlertEnvelope[], options?: CallOptions): Promise<SinkWriteResult> {
    const { events, refused } = this.writer.prepare(alerts, this.maxRequestBytes);
    for (const version of refused) {
      this.logger.warn("An alert is too large for a Splunk HEC request even without its evidence; it is returned as refused", { tenantId: key.tenantId, alertId: version.alert.id });
    }
    if (events.length > 0) {
      const call = this.startCall(options);
      if (this.ack) await this.ensureAckEnabled(call);
      const ackIds = await this.sendAll(key, events, call, refused);
      if (this.ack) await this.awaitAcks(ackIds, call);
    }
    return refused.length > 0 ? { refused } : {};
  }

  /** `GET /services/collector/health`: code 17 is healthy. Never throws. */
  async checkHealth(options?: CallOptions): Promise<HecHealth> {
    const call = this.startCall(options);
    try {
      const answer = await this.transport.send(HEALTH_PATH, undefined, call.signal);
      const code = answer.reply?.code;
      return { healthy: answer.status === 200 && code === HEC_HEALTHY, status: answer.status, ...(code === undefined ? {} : { code }) };
    } catch {
      return { healthy: false };
    }
  }

  /** Closes the connection pool. */
  close(): Promise<void> {
    return this.transport.close();
  }

  private startCall(options?: CallOptions): Call {
    return {
      signal: timeoutSignal(this.timeoutMs, options?.signal),
      callerSignal: options?.signal,
      deadline: Date.now() + this.timeoutMs,
    };
  }

  /**
   * Sends every event, one request per batch, in order. A request the collector partly indexed
   * (code 6) is sent again from its first unindexed event only; one it refuses as too large is
   * split in halves. Returns the ack ids of the requests (ack mode).
   */
  private async sendAll(key: AlertBatchKey, events: readonly HecEvent[], call: Call, refused: RefusedVersion[]): Promise<number[]> {
    const queue = batches(events, this.maxRequestBytes);
    const ackIds: number[] = [];
    const headers: Record<string, string> = this.ack ? { "x-splunk-request-channel": this.channel } : {};
    let lastInvalid: HecEvent | undefined;
    for (let batch = queue.shift(); batch !== undefined; batch = queue.shift()) {
      const answer = await this.exchange(EVENT_PATH, requestBody(batch), call, "sending events", headers);
      const reply = answer.reply;
      if (answer.status === 200 && reply?.code === HEC_SUCCESS) {
        if (this.ack) ackIds.push(this.ackIdOf(answer));
        continue;
      }
      if (answer.status === 413 && batch.length > 1) {
        // Below our cap yet too large for this collector (max_content_length lowered): halve.
        const half = Math.ceil(batch.length / 2);
        queue.unshift(batch.slice(0, half), batch.slice(half));
        continue;
      }
      const [only] = batch;
      if (answer.status === 413 && only !== undefined) {
        // One event larger than this collector takes: it will never fit; the rest go on.
        refused.push({ alert: only.envelope.alert, reason: "oversized", detail: "larger than the collector's max_content_length" });
        continue;
      }
      const invalid = reply?.code === HEC_INVALID_DATA_FORMAT ? reply.invalidEventNumber : undefined;
      const culprit = invalid === undefined ? undefined : batch[invalid];
      if (invalid !== undefined && culprit !== undefined && culprit === lastInvalid) {
        // Refused twice: it will not change. Hand it back (the pipeline dead-letters it) and go
        // on after it, so one event cannot hold back the rest for ever.
        refused.push({ alert: culprit.envelope.alert, reason: "rejected", detail: "the collector refused the event as invalid data (HEC code 6)" });
        if (invalid + 1 < batch.length) queue.unshift(batch.slice(invalid + 1));
        continue;
      }
      // The events before the invalid one are indexed: resend from it, once. The pipeline only
      // passes alerts that parsed as JSON, so the same event refused twice will not change.
      if (culprit !== undefined && culprit !== lastInvalid) {
        lastInvalid = culprit;
        // In ack mode the indexed prefix is confirmed only if Splunk gave it an ack id; without
        // one it counts as the no-ack mode's code 0 would (received, not known to be indexed).
        if (this.ack && reply?.ackId !== undefined) ackIds.push(reply.ackId);
        this.logger.warn("Splunk HEC indexed part of a request (code 6); sending the rest again", {
          tenantId: key.tenantId,
          indexed: invalid,
          remaining: batch.length - (invalid ?? 0),
        });
        queue.unshift(batch.slice(invalid));
        continue;
      }
      throw refusal(answer, "the events");
    }
    return ackIds;
  }

  /** The ack id of a successful request in ack mode; a reply without one means the token has acknowledgement off. */
  private ackIdOf(answer: HecAnswer): number {
    const ackId = answer.reply?.ackId;
    if (ackId === undefined) {
      throw new SinkError(
        "Splunk HEC took the events but returned no ack id: the token has indexer acknowledgement off (always so on Splunk Cloud); set SPLUNK_HEC_ACK=false or turn acknowledgement on for the token",
        answer.status,
        { permanent: true },
      );
    }
    return ackId;
  }

  /**
   * Before the first request in ack mode: asks the ack endpoint about an id this fresh channel
   * cannot have issued yet, so a token without acknowledgement (code 14) fails before any event
   * is indexed, instead of after every page. Shared by concurrent writes, so no probe can read
   * (and so consume) an ack id a write is waiting for. Any answer but code 14 lets the writes go on.
   */
  private ensureAckEnabled(call: Call): Promise<void> {
    this.ackProbe ??= (async () => {
      const answer = await this.exchange(this.ackPath(), JSON.stringify({ acks: [0] }), call, "checking that the token takes acknowledgements");
      if (answer.reply?.code === 14) throw refusal(answer, "the acknowledgement check");
    })();
    const probe = this.ackProbe;
    // A probe that failed (abandoned, collector down) is tried again by the next write.
    probe.catch(() => {
      if (this.ackProbe === probe) this.ackProbe = undefined;
    });
    return probe;
  }

  /** Polls until every ack id read true once, with growing intervals; the call's bound ends it. */
  private async awaitAcks(ackIds: readonly number[], call: Call): Promise<void> {
    const pending = new Set(ackIds);
    if (pending.size === 0) return;
    let wait = this.ackPollMs.initial;
    const doing = (): string => `waiting for indexer acknowledgement (${pending.size} of ${ackIds.length} request(s) unacknowledged)`;
    for (;;) {
      const answer = await this.exchange(this.ackPath(), JSON.stringify({ acks: [...pending] }), call, doing());
      const acks = answer.reply?.acks;
      if (answer.status !== 200 || acks === undefined) throw refusal(answer, "the acknowledgement poll");
      for (const id of [...pending]) if (acks[String(id)] === true) pending.delete(id);
      if (pending.size === 0) return;
      await this.pause(wait, call, doing());
      wait = Math.min(wait * 2, this.ackPollMs.max);
    }
  }

  private ackPath(): string {
    return `${ACK_PATH}?channel=${this.channel}`;
  }

  /**
   * One request, sent again while the collector is busy, unhealthy or unreachable (codes 8, 9,
   * 18–20, HTTP 5xx, 429, no answer), after its Retry-After or a jittered backoff, within the
   * attempt limit and the call's bound. Returns the first other answer.
   */
  private async exchange(path: string, body: Buffer | string, call: Call, doing: string, headers: Record<string, string> = {}): Promise<HecAnswer> {
    for (let attempt = 1; ; attempt++) {
      let answer: HecAnswer | undefined;
      let reason = "";
      try {
        answer = await this.transport.send(path, body, call.signal, headers);
      } catch (error) {
        if (error instanceof HecAbortedError) throw this.abandoned(call, doing);
        if (!(error instanceof HecNoAnswerError)) throw error;
        reason = error.reason;
      }
      if (answer && !isRetryable(answer.status, answer.reply?.code)) return answer;
      const what = answer ? describeAnswer(answer.status, answer.reply?.code) : `no answer: ${reason}`;
      const wait = answer?.retryAfterMs ?? this.backoff(attempt);
      if (attempt >= this.maxAttempts || Date.now() + wait >= call.deadline) {
        const code = answer?.reply?.code;
        throw new SinkError(`Splunk HEC stayed busy or unreachable while ${doing}, after ${attempt} attempt(s) (${what})`, answer?.status, {
          ...(code === undefined ? {} : { code: String(code) }),
          ...(answer?.retryAfterMs === undefined ? {} : { retryAfterMs: answer.retryAfterMs }),
        });
      }
      this.logger.warn("Splunk HEC is busy or unreachable; retrying", {
        status: answer?.status,
        code: answer?.reply?.code,
        reason: reason || undefined,
        attempt,
        waitMs: wait,
      });
      await this.pause(wait, call, doing);
    }
  }

  /** Exponential with equal jitter: many tenants' pulls meeting one busy collector spread out. */
  private backoff(attempt: number): number {
    const ceiling = Math.min(this.backoffMs.max, this.backoffMs.initial * 2 ** (attempt - 1));
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  private async pause(ms: number, call: Call, doing: string): Promise<void> {
    try {
      await this.sleep(ms, call.signal);
    } catch (error) {
      if (call.signal.aborted) throw this.abandoned(call, doing);
      throw error;
    }
    if (call.signal.aborted) throw this.abandoned(call, doing);
  }

  private abandoned(call: Call, doing: string): SinkError {
    const why = call.callerSignal?.aborted ? "the pull's time ran out" : `the sink's ${this.timeoutMs} ms timeout passed`;
    return new SinkError(`Splunk HEC: ${doing} was abandoned because ${why}; nothing of the batch is acknowledged and the next run sends it again`);
  }
}

/** A refusal that will not fix itself: a token, index, channel or URL problem. */
function refusal(answer: HecAnswer, what: string): SinkError {
  const code = answer.reply?.code;
  const shape =
    answer.status === 413
      ? // Event requests split on a 413 (sendAll); one that still reaches here is a check or a poll.
        "; the request is larger than the collector's max_content_length"
      : answer.reply === undefined && answer.status < 300
        ? "; the URL answered, but not as a Splunk HEC (check SPLUNK_HEC_URL)"
        : "";
  return new SinkError(`Splunk HEC refused ${what} (${describeAnswer(answer.status, code)})${shape}`, answer.status, {
    permanent: true,
    ...(code === undefined ? {} : { code: String(code) }),
  });
}
