/**
 * The Event Hubs sink without the app (issue 15, mutation testing): the real EventHubProducerClient
 * (@azure/event-hubs, core-amqp, rhea) speaking AMQP over TLS to the local fake hub, with only the
 * endpoint changed. What the hub receives, in how many transfers, what is refused, and the errors
 * an operator reads. A file of its own: trusting the fake's self-signed certificate is a
 * process-wide setting (see `trustFakeCertificates`).
 */
import { randomBytes } from "node:crypto";
import type { TokenCredential } from "@azure/event-hubs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SinkError, type AlertBatchKey, type AlertEnvelope } from "../../shared/sinks/alertSink";
import { envelopeLine } from "../../shared/sinks/envelope";
import { createEventHubsProducer, EVENT_HUBS_RETRY, EventHubsAlertSink, TRUNCATED_PROPERTY, type EventHubsProducer } from "../../shared/sinks/eventhubs/eventHubsSink";
import { canonicalTimestamp } from "../../shared/time/timestamps";
import { makeAlert, toMdeTimestamp, type MdeAlert } from "../fakes/alerts";
import { FakeEventHubs, trustFakeCertificates, type ReceivedEvent } from "../fakes/fakeEventHubs";

const NAMESPACE = "contoso-siem.servicebus.windows.net";
const HUB = "mssp-defender-alerts";
const TOKEN = `eh-token-${randomBytes(12).toString("hex")}`;
const LIMIT = 64 * 1024;
const TENANT = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const KEY: AlertBatchKey = { tenantId: TENANT, pageFrom: "2026-11-30T04:00:00.000Z", pageTo: "2026-11-30T05:00:00.000Z", skip: 0 };

let restoreTls: () => void;
let hub: FakeEventHubs;
const producers: EventHubsProducer[] = [];

beforeAll(async () => {
  restoreTls = trustFakeCertificates();
  hub = new FakeEventHubs({ namespace: NAMESPACE, hubName: HUB, acceptedToken: TOKEN, maxMessageSize: LIMIT });
  await hub.start();
});

afterAll(async () => {
  for (const producer of producers) await producer.close().catch(() => undefined);
  await hub?.stop();
  restoreTls?.();
});

function credential(): TokenCredential {
  return { getToken: async () => ({ token: TOKEN, expiresOnTimestamp: Date.now() + 3_600_000 }) };
}

/** A sink with a producer of its own (a new connection), as createServices builds it. */
function sink(timeoutMs?: number): EventHubsAlertSink {
  const producer = createEventHubsProducer({ fullyQualifiedNamespace: NAMESPACE, eventHubName: HUB }, credential(), { customEndpointAddress: hub.endpoint });
  producers.push(producer);
  return new EventHubsAlertSink(producer, timeoutMs);
}

function envelopeOf(alert: MdeAlert): AlertEnvelope {
  const canonical = canonicalTimestamp(alert.lastUpdateTime);
  if (!canonical) throw new Error(`not a timestamp: ${alert.lastUpdateTime}`);
  return {
    tenantId: TENANT,
    tenantName: "Contoso",
    source: "mde",
    pulledAt: "2026-11-30T05:01:00.000Z",
    alert: { id: alert.id, lastUpdateTime: alert.lastUpdateTime, updatedAtKey: canonical.key, updatedAtMs: canonical.ms, json: JSON.stringify(alert) },
  };
}

let serial = 0;
function envelopes(count: number): AlertEnvelope[] {
  const tag = `m${++serial}`;
  return Array.from({ length: count }, (_, i) => envelopeOf(makeAlert({ id: `da-${tag}-${i}`, lastUpdateTime: toMdeTimestamp(Date.parse("2026-11-30T04:00:00Z") + i * 1000, "1234") })));
}

/** An alert too large for the hub whose evidence alone makes it so. */
function bulky(id: string): AlertEnvelope {
  const base = makeAlert({ id: "da-template", lastUpdateTime: "2026-11-30T04:00:00Z" }).evidence[0];
  if (!base) throw new Error("makeAlert gave no evidence to copy");
  return envelopeOf(makeAlert({ id, lastUpdateTime: "2026-11-30T04:00:02Z", evidence: [{ ...base, processCommandLine: "x".repeat(80_000) }] }));
}

/** An alert too large for the hub even without evidence. */
function huge(id: string, evidence = true): AlertEnvelope {
  const alert = makeAlert({ id, lastUpdateTime: "2026-11-30T04:00:03Z", description: "d".repeat(80_000) });
  if (!evidence) {
    const { evidence: _dropped, ...rest } = alert;
    return envelopeOf(rest as MdeAlert);
  }
  return envelopeOf(alert);
}

const ids = (events: readonly ReceivedEvent[]) => events.map((e) => (JSON.parse(e.body.toString("utf8")) as { alert: { id: string } }).alert.id);

async function failureOf(write: Promise<unknown>): Promise<SinkError> {
  const outcome: unknown = await write.then(
    () => "resolved",
    (error: unknown) => error,
  );
  if (outcome instanceof SinkError) return outcome;
  throw new Error(`expected a SinkError, got ${outcome instanceof Error ? `${outcome.name}: ${outcome.message}` : String(outcome)}`);
}

describe("Event Hubs sink: what the hub receives", () => {
  it("sends nothing and connects to nothing for an empty batch", async () => {
    const before = { events: hub.events.length, tokens: hub.tokenRequests.length, transfers: hub.transfers };
    expect(await sink().write(KEY, [])).toBeUndefined();
    expect({ events: hub.events.length, tokens: hub.tokenRequests.length, transfers: hub.transfers }).toEqual(before);
  });

  it("sends each version as its envelope line, JSON, keyed by tenant, in as few transfers as fit", async () => {
    const before = hub.events.length;
    const transfers = hub.transfers;
    const batch = envelopes(3);
    expect(await sink().write(KEY, batch)).toBeUndefined();
    const events = hub.events.slice(before);
    expect(events.map((e) => e.body.toString("utf8"))).toEqual(batch.map((e) => envelopeLine(e)));
    for (const event of events) expect(event).toEqual({ partitionKey: TENANT, body: expect.any(Buffer), contentType: "application/json", properties: {} });
    expect(hub.transfers - transfers).toBe(1);
  });

  it("starts a new transfer when the link's limit is reached, every event whole and unmarked", async () => {
    const before = hub.events.length;
    const transfers = hub.transfers;
    const batch = envelopes(40);
    expect(await sink().write(KEY, batch)).toBeUndefined();
    const events = hub.events.slice(before);
    expect(events.map((e) => e.body.toString("utf8"))).toEqual(batch.map((e) => envelopeLine(e)));
    expect(events.every((e) => Object.keys(e.properties).length === 0)).toBe(true);
    // About 2 KB an alert against a 64 KB link: two transfers.
    expect(hub.transfers - transfers).toBe(2);
  });

  it("refuses a tenant id that cannot be a partition key, sending nothing; 128 characters are fine", async () => {
    const before = hub.events.length;
    for (const tenantId of ["", "t".repeat(129)]) {
      const error = await failureOf(sink().write({ ...KEY, tenantId }, envelopes(1)));
      expect(error.message).toBe("The batch's tenant id cannot be a partition key");
    }
    expect(hub.events.length).toBe(before);
    const long = "t".repeat(128);
    await sink().write({ ...KEY, tenantId: long }, envelopes(1));
    expect(hub.events.slice(before).map((e) => e.partitionKey)).toEqual([long]);
  });

  it("refuses an oversized first alert without sending an empty transfer, then sends the rest trimmed or whole", async () => {
    const before = hub.events.length;
    const transfers = hub.transfers;
    const first = huge(`da-huge-${randomBytes(4).toString("hex")}`);
    const bare = huge(`da-bare-${randomBytes(4).toString("hex")}`, false);
    const trimmed = bulky(`da-bulky-${randomBytes(4).toString("hex")}`);
    const result = await sink().write(KEY, [first, bare, trimmed]);
    expect(result).toEqual({
      refused: [
        { alert: first.alert, reason: "oversized", detail: `Larger than the event hub's ${LIMIT}-byte message limit even without its evidence` },
        // Nothing to cut: the detail does not pretend it tried.
        { alert: bare.alert, reason: "oversized", detail: `Larger than the event hub's ${LIMIT}-byte message limit` },
      ],
    });
    const events = hub.events.slice(before);
    expect(ids(events)).toEqual([trimmed.alert.id]);
    expect(TRUNCATED_PROPERTY).toBe("truncated");
    expect(events[0]?.properties).toEqual({ truncated: "evidence" });
    expect(hub.transfers - transfers).toBe(1);
  });

  it("sends nothing at all when every alert is refused", async () => {
    const transfers = hub.transfers;
    const result = await sink().write(KEY, [huge(`da-only-${randomBytes(4).toString("hex")}`)]);
    expect(result?.refused).toHaveLength(1);
    expect(hub.transfers).toBe(transfers);
  });

  it("starts a new transfer when one is full, and retries a trimmed alert in the fresh one", async () => {
    const before = hub.events.length;
    const transfers = hub.transfers;
    const small = envelopes(2);
    const trimmed = bulky(`da-next-${randomBytes(4).toString("hex")}`);
    await sink().write(KEY, [small[0] as AlertEnvelope, trimmed, small[1] as AlertEnvelope]);
    expect(ids(hub.events.slice(before))).toEqual([small[0]?.alert.id, trimmed.alert.id, small[1]?.alert.id]);
    // The bulky alert closes the first transfer, then goes trimmed into the next one, with the last.
    expect(hub.transfers - transfers).toBe(2);
  });
});

describe("Event Hubs sink: retries, bounds and closing", () => {
  it("retries twice with exponential backoff (about 0.5 s, then 1.5 s), then gives up with the code", async () => {
    expect(EVENT_HUBS_RETRY).toEqual({ maxRetries: 2, retryDelayInMs: 500, maxRetryDelayInMs: 4_000, timeoutInMs: 20_000 });
    expect(Object.isFrozen(EVENT_HUBS_RETRY)).toBe(true);
    const s = sink();
    await s.write(KEY, envelopes(1)); // connected and linked: what follows times the send's retries only
    const rejected = hub.rejectedTransfers;
    hub.rejectTransfers(3);
    const started = Date.now();
    const error = await failureOf(s.write(KEY, envelopes(2)));
    const elapsed = Date.now() - started;
    expect(hub.rejectedTransfers - rejected).toBe(3);
    expect(error.message).toBe("Sending alerts to the event hub failed (ServerBusyError)");
    // Exponential: 0.4-0.6 s then 1.2-1.8 s; a fixed 0.5 s delay would take 1 s in all.
    expect(elapsed).toBeGreaterThanOrEqual(1_500);
    expect(elapsed).toBeLessThan(10_000);
  });

  it("gives up connecting at once when the signal has already fired", async () => {
    const tokens = hub.tokenRequests.length;
    const error = await failureOf(sink().write(KEY, envelopes(1), { signal: AbortSignal.abort() }));
    expect(error.message).toBe("Connecting to the event hub failed: abandoned when the time for the write ran out");
    expect(hub.tokenRequests.length).toBe(tokens);
  });

  it("gives up a stalled send when the caller's signal fires", async () => {
    const s = sink();
    await s.write(KEY, envelopes(1));
    hub.stallTransfers("stored");
    try {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 300);
      const error = await failureOf(s.write(KEY, envelopes(1), { signal: controller.signal }));
      clearTimeout(timer);
      expect(error.message).toBe("Sending alerts to the event hub failed: abandoned when the time for the write ran out");
    } finally {
      hub.stallTransfers("none");
    }
  });

  it("closes its connection: a write after close fails", async () => {
    const s = sink();
    await s.write(KEY, envelopes(1));
    await s.close();
    const error = await failureOf(s.write(KEY, envelopes(1)));
    expect(error.message).toMatch(/^Connecting to the event hub failed/);
  });
});
