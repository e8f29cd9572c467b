/**
 * The Event Hubs sink with the real EventHubProducerClient (@azure/event-hubs 6.0.4, core-amqp,
 * rhea) talking AMQP over TLS to a local fake hub: only the endpoint differs from production.
 * First the sink on its own (batching, the size limit, throttling, refusals, aborts), then real
 * pulls through it, counting versions served by the Defender fake against events the hub took.
 */
import { randomBytes } from "node:crypto";
import type { TokenCredential } from "@azure/event-hubs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SinkError, type AlertBatchKey, type AlertEnvelope } from "../../shared/sinks/alertSink";
import { envelopeLine } from "../../shared/sinks/envelope";
import { createEventHubsProducer, EventHubsAlertSink, TRUNCATED_PROPERTY, type EventHubsProducer } from "../../shared/sinks/eventhubs/eventHubsSink";
import { canonicalTimestamp } from "../../shared/time/timestamps";
import { generateAlerts, makeAlert, toMdeTimestamp, type MdeAlert, type MdeEvidence } from "../fakes/alerts";
import { FakeEventHubs, trustFakeCertificates, type ReceivedEvent } from "../fakes/fakeEventHubs";
import { capturingLogger, connectedTenant, minutesAgo, pipelineServices, type StoredEnvelope } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

const NAMESPACE = "contoso-siem.servicebus.windows.net";
const HUB = "mssp-defender-alerts";
const TOKEN = `eh-token-${randomBytes(12).toString("hex")}`;
const SMALL_LIMIT = 64 * 1024;

const scopes: string[] = [];
function credential(token = TOKEN): TokenCredential {
  return {
    getToken: async (scope) => {
      scopes.push(...[scope].flat());
      return { token, expiresOnTimestamp: Date.now() + 3600_000 };
    },
  };
}

let restoreTls: () => void;
let small: FakeEventHubs;
let standard: FakeEventHubs;
const producers: EventHubsProducer[] = [];

/** A sink with its own producer (a new connection and link), so a fault on attach is seen. */
function sinkOn(hub: FakeEventHubs, options: { hubName?: string; token?: string; timeoutMs?: number } = {}): EventHubsAlertSink {
  const producer = createEventHubsProducer({ fullyQualifiedNamespace: NAMESPACE, eventHubName: options.hubName ?? HUB }, credential(options.token), {
    customEndpointAddress: hub.endpoint,
  });
  producers.push(producer);
  return new EventHubsAlertSink(producer, options.timeoutMs);
}

beforeAll(async () => {
  restoreTls = trustFakeCertificates();
  small = new FakeEventHubs({ namespace: NAMESPACE, hubName: HUB, acceptedToken: TOKEN, maxMessageSize: SMALL_LIMIT });
  standard = new FakeEventHubs({ namespace: NAMESPACE, hubName: HUB, acceptedToken: TOKEN });
  await Promise.all([small.start(), standard.start()]);
});

afterAll(async () => {
  for (const producer of producers) await producer.close().catch(() => undefined);
  await Promise.all([small?.stop(), standard?.stop()]);
  restoreTls?.();
});

const TENANT = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const KEY: AlertBatchKey = { tenantId: TENANT, pageFrom: "2026-11-30T04:00:00.000Z", pageTo: "2026-11-30T05:00:00.000Z", skip: 0 };

function envelopeOf(alert: MdeAlert, tenantId = TENANT): AlertEnvelope {
  const canonical = canonicalTimestamp(alert.lastUpdateTime);
  if (!canonical) throw new Error(`not a timestamp: ${alert.lastUpdateTime}`);
  const json = JSON.stringify(alert);
  return {
    tenantId,
    tenantName: "Contoso",
    source: "mde",
    pulledAt: "2026-11-30T05:01:00.000Z",
    alert: { id: alert.id, lastUpdateTime: alert.lastUpdateTime, updatedAtKey: canonical.key, updatedAtMs: canonical.ms, json },
  };
}

function envelopes(count: number, tag: string): AlertEnvelope[] {
  return Array.from({ length: count }, (_, i) =>
    envelopeOf(makeAlert({ id: `da-${tag}-${i}`, lastUpdateTime: toMdeTimestamp(Date.parse("2026-11-30T04:00:00Z") + i * 1000, "1234") })),
  );
}

/** Events the hub holds since `from` (an index into its log). */
function eventsSince(hub: FakeEventHubs, from: number): ReceivedEvent[] {
  return hub.events.slice(from);
}

const parse = (event: ReceivedEvent): StoredEnvelope => JSON.parse(event.body.toString("utf8")) as StoredEnvelope;

/** The SinkError a write rejected with (a write that resolves fails the test). */
async function failureOf(write: Promise<unknown>): Promise<SinkError> {
  const outcome: unknown = await write.then(() => "resolved", (error: unknown) => error);
  if (outcome instanceof SinkError) return outcome;
  throw new Error(`expected a SinkError, got ${outcome instanceof Error ? outcome.name : String(outcome)}`);
}

/** A piece of evidence whose command line is `size` characters. */
function bulkyEvidence(size: number): MdeEvidence[] {
  const base = makeAlert({ id: "da-evidence-template", lastUpdateTime: "2026-11-30T04:00:00Z" }).evidence[0];
  if (!base) throw new Error("makeAlert gave no evidence to copy");
  return [{ ...base, processCommandLine: "x".repeat(size) }];
}

describe("EventHubsAlertSink against a fake hub", () => {
  it("publishes one event per version: the envelope line as JSON, keyed by tenant, in batches under the link's limit", async () => {
    const before = small.events.length;
    const transfersBefore = small.transfers;
    const batch = envelopes(200, "plain");
    expect(await sinkOn(small).write(KEY, batch)).toBeUndefined();

    const events = eventsSince(small, before);
    expect(events.map((e) => e.body.toString("utf8"))).toEqual(batch.map((e) => envelopeLine(e)));
    for (const event of events) {
      expect(event).toMatchObject({ partitionKey: TENANT, contentType: "application/json", properties: {} });
    }
    // ~2 KB per alert against a 64 KB link: several batches, none over the limit.
    expect(small.transfers - transfersBefore).toBeGreaterThan(3);
    expect(small.largestTransfer).toBeLessThanOrEqual(SMALL_LIMIT);
    expect(small.largestTransfer).toBeGreaterThan(SMALL_LIMIT * 0.8);
    // Signed in with an Entra token for Event Hubs, presented to the hub's audience.
    // (core-amqp asks for the scope with a double slash, as Event Hubs expects.)
    expect(scopes).toContain("https://eventhubs.azure.net//.default");
    expect(small.tokenRequests.at(-1)).toEqual({ audience: `sb://${NAMESPACE}/${HUB}`, type: "jwt", accepted: true });
  });

  it("sends an alert too large for the hub without its evidence, marked, and refuses one still too large", async () => {
    const before = small.events.length;
    const normal = envelopeOf(makeAlert({ id: "da-normal", lastUpdateTime: "2026-11-30T04:00:01Z" }));
    const bulky = envelopeOf(makeAlert({ id: "da-bulky-evidence", lastUpdateTime: "2026-11-30T04:00:02Z", evidence: bulkyEvidence(80_000) }));
    const huge = envelopeOf(makeAlert({ id: "da-huge-description", lastUpdateTime: "2026-11-30T04:00:03Z", description: "d".repeat(80_000) }));
    const last = envelopeOf(makeAlert({ id: "da-last", lastUpdateTime: "2026-11-30T04:00:04Z" }));

    const result = await sinkOn(small).write(KEY, [normal, bulky, huge, last]);

    expect(result).toEqual({
      refused: [{ alert: huge.alert, reason: "oversized", detail: `Larger than the event hub's ${SMALL_LIMIT}-byte message limit even without its evidence` }],
    });
    const events = eventsSince(small, before);
    expect(events.map((e) => parse(e).alert.id)).toEqual(["da-normal", "da-bulky-evidence", "da-last"]);
    const trimmed = events[1] as ReceivedEvent;
    expect(trimmed.properties).toEqual({ [TRUNCATED_PROPERTY]: "evidence" });
    const { evidence, ...rest } = JSON.parse(bulky.alert.json) as MdeAlert;
    expect(evidence).toHaveLength(1);
    expect(parse(trimmed)).toEqual({ tenantId: TENANT, tenantName: "Contoso", source: "mde", pulledAt: normal.pulledAt, alert: rest });
    expect(events[0]?.properties).toEqual({});
  });

  it("rides out throttling inside its retry budget: every event stored once", async () => {
    const before = small.events.length;
    const rejectedBefore = small.rejectedTransfers;
    small.rejectTransfers(2);
    const batch = envelopes(10, "throttled");
    await sinkOn(small).write(KEY, batch);
    expect(small.rejectedTransfers - rejectedBefore).toBe(2);
    expect(eventsSince(small, before).map((e) => parse(e).alert.id)).toEqual(batch.map((e) => e.alert.id));
  });

  it("gives up after its retries with the service's code and wait, having stored nothing", async () => {
    const before = small.events.length;
    small.rejectTransfers(3);
    const started = Date.now();
    const error = await failureOf(sinkOn(small).write(KEY, envelopes(5, "busy")));
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(error.message).toBe("Sending alerts to the event hub failed (ServerBusyError)");
    expect(error.details).toEqual({ code: "ServerBusyError", retryAfterMs: 1000 });
    expect(small.events.length).toBe(before);
  });

  it.each([
    [
      "a hub that refuses the identity (no Data Sender role)",
      { condition: "amqp:unauthorized-access", description: `Unauthorized access. 'Send' claim(s) are required to perform this operation. Resource: 'sb://${NAMESPACE}/${HUB}'.` },
      {},
      "UnauthorizedError",
    ],
    ["a token the namespace does not accept", undefined, { token: "not-the-right-token" }, "UnauthorizedError"],
    ["a hub that does not exist", undefined, { hubName: "no-such-hub" }, "MessagingEntityNotFoundError"],
  ] as const)("fails permanently on %s, saying nothing of the token or the entity", async (_what, refusal, options, code) => {
    small.refuseSenders(refusal);
    try {
      const error = await failureOf(sinkOn(small, options).write(KEY, envelopes(3, "refused")));
      expect(error.message).toMatch(/^Connecting to the event hub failed \(\w+\)$/);
      expect(error.details.permanent).toBe(true);
      expect(error.details.code).toBe(code);
      for (const secret of [TOKEN, "not-the-right-token", "sb://", NAMESPACE]) expect(error.message).not.toContain(secret);
    } finally {
      small.refuseSenders(undefined);
    }
  });

  it("stops waiting for a stalled send when the caller's signal fires", async () => {
    const before = small.events.length;
    small.stallTransfers("stored");
    try {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 300);
      const started = Date.now();
      const error = await failureOf(sinkOn(small).write(KEY, envelopes(4, "stalled"), { signal: controller.signal }));
      clearTimeout(timer);
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(error.message).toBe("Sending alerts to the event hub failed: abandoned when the time for the write ran out");
      // The hub has the batch all the same: why a retried page can duplicate (at least once).
      expect(small.events.length - before).toBe(4);
      // The sink's own bound does the same without a caller's signal.
      const bounded = await failureOf(sinkOn(small, { timeoutMs: 300 }).write(KEY, envelopes(1, "stalled-own")));
      expect(bounded.message).toMatch(/abandoned/);
    } finally {
      small.stallTransfers("none");
    }
  });
});

describe("pulls through the Event Hubs sink", () => {
  let env: TestEnvironment;

  beforeAll(async () => {
    env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50", PULL_EXPAND_EVIDENCE: "true" });
  });
  afterAll(async () => {
    await env?.stop();
  });

  async function pull(tenantId: string, sink: EventHubsAlertSink) {
    return pipelineServices(env, { sink }).tenantPull.run(tenantId, capturingLogger());
  }

  /** Versions served by the Defender fake vs events the hub took for the tenant. */
  function tally(tenantId: string) {
    const served = [...env.defender.served(tenantId).keys()];
    const received = standard.events.filter((e) => e.partitionKey === tenantId).map(parse);
    const versions = received.map((e) => `${e.alert.id}@${e.alert.lastUpdateTime}`);
    const unique = new Set(versions);
    return {
      served: served.length,
      received: versions.length,
      duplicates: versions.length - unique.size,
      missing: served.filter((v) => !unique.has(v)),
      envelopes: received,
    };
  }

  it("delivers a 400-alert backlog: every served version once, in envelopes naming the tenant", async () => {
    const tenantId = await connectedTenant(env, "Northwind");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 400, { start: minutesAgo(120), spacingMs: 15_000 }));
    const sink = sinkOn(standard);
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 400, complete: true });
    const counts = tally(tenantId);
    expect(counts).toMatchObject({ served: 400, received: 400, duplicates: 0, missing: [] });
    expect(counts.envelopes[0]).toMatchObject({ tenantId, tenantName: "Northwind", source: "mde" });
    expect(await pull(tenantId, sink)).toMatchObject({ outcome: "pulled", alerts: 0 });
    expect(tally(tenantId).received).toBe(400);
  });

  it("loses and repeats nothing while the hub throttles", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 150, { start: minutesAgo(60), spacingMs: 15_000 }));
    const rejectedBefore = standard.rejectedTransfers;
    standard.rejectTransfers(2);
    expect(await pull(tenantId, sinkOn(standard))).toMatchObject({ outcome: "pulled", alerts: 150 });
    expect(standard.rejectedTransfers - rejectedBefore).toBe(2);
    expect(tally(tenantId)).toMatchObject({ served: 150, received: 150, duplicates: 0, missing: [] });
  });

  it("holds the checkpoint while the hub refuses the identity, then delivers everything once", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 80, { start: minutesAgo(60), spacingMs: 15_000 }));
    standard.refuseSenders({ condition: "amqp:unauthorized-access", description: "Unauthorized access. 'Send' claim(s) are required to perform this operation." });
    try {
      expect(await pull(tenantId, sinkOn(standard))).toMatchObject({ outcome: "failed", code: "sink_failed" });
    } finally {
      standard.refuseSenders(undefined);
    }
    expect(tally(tenantId).received).toBe(0);
    expect(await pull(tenantId, sinkOn(standard))).toMatchObject({ outcome: "pulled", alerts: 80 });
    expect(tally(tenantId)).toMatchObject({ served: 80, received: 80, duplicates: 0, missing: [] });
  });

  it("sends a 1.2 MB alert without its evidence and dead-letters one that stays too large", async () => {
    const tenantId = await connectedTenant(env);
    const start = minutesAgo(30).getTime();
    const alerts = generateAlerts(tenantId, 20, { start: new Date(start), spacingMs: 10_000 });
    const bulky = makeAlert({ id: "da-bulky", lastUpdateTime: toMdeTimestamp(start + 1_000, "0000"), aadTenantId: tenantId, evidence: bulkyEvidence(1_200_000) });
    const huge = makeAlert({ id: "da-huge", lastUpdateTime: toMdeTimestamp(start + 2_000, "0000"), aadTenantId: tenantId, description: "d".repeat(1_200_000) });
    env.defender.addAlerts(tenantId, [...alerts, bulky, huge]);

    expect(await pull(tenantId, sinkOn(standard))).toMatchObject({ outcome: "pulled", alerts: 22, deadLetters: 1 });
    const counts = tally(tenantId);
    expect(counts).toMatchObject({ served: 22, received: 21, duplicates: 0, missing: [`da-huge@${huge.lastUpdateTime}`] });
    const trimmed = standard.events.filter((e) => e.partitionKey === tenantId && e.properties[TRUNCATED_PROPERTY] === "evidence");
    expect(trimmed.map((e) => parse(e).alert.id)).toEqual(["da-bulky"]);
    expect(parse(trimmed[0] as ReceivedEvent).alert["evidence"]).toBeUndefined();
    expect(standard.largestTransfer).toBeLessThanOrEqual(standard.maxMessageSize);
  });

  it("repeats exactly the page whose acknowledgement never came (at least once)", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 120, { start: minutesAgo(60), spacingMs: 15_000 }));
    standard.stallTransfers("stored");
    try {
      // The sink's own bound (here 1 s) abandons the send the hub took but never acknowledged.
      expect(await pull(tenantId, sinkOn(standard, { timeoutMs: 1_000 }))).toMatchObject({ outcome: "failed", code: "sink_failed" });
    } finally {
      standard.stallTransfers("none");
    }
    const stalled = tally(tenantId).received;
    expect(stalled).toBeGreaterThan(0);
    expect(await pull(tenantId, sinkOn(standard))).toMatchObject({ outcome: "pulled" });
    const counts = tally(tenantId);
    expect(counts).toMatchObject({ served: 120, missing: [] });
    // The unacknowledged page, and only it, arrived twice.
    expect(counts.duplicates).toBe(stalled);
    expect(counts.received).toBe(120 + stalled);
  });
});
