/**
 * Webhook notifications end to end (docs/notifications.md): the real app pulls through its queue
 * function, the pull observer writes the outbox, the pull timer flushes it to a local HTTPS
 * receiver. Its own Azurite: the timer's fan-out fills the fixed "tenant-pulls" queue, which other
 * test files clear and count.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { checkHealth, type HealthReport } from "../../shared/health/healthCheck";
import { NOTABLE_LIST_LIMIT, type PullReport } from "../../shared/pull/observer";
import { createServices, type ServiceOverrides, type Services } from "../../shared/services";
import { NotificationOutbox, OUTBOX_LIMITS } from "../../shared/notifications/outbox";
import { NotificationTable } from "../../shared/notifications/table";
import { generateAlerts, makeAlert, toMdeTimestamp, type MdeAlert, type MdeSeverity } from "../fakes/alerts";
import { WebhookReceiver } from "../fakes/webhookReceiver";
import { startAzurite, type AzuriteInstance } from "../harness/azurite";
import { capturingLogger, connectedTenant, deliveryTally, minutesAgo } from "../harness/pullFixture";
import { completeConsent, requestReconsent, secretsOf, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/** Stands for the signature a Teams or Slack webhook URL carries: nothing may ever repeat it. */
const SIGNATURE = `sig-${randomUUID()}`;

let azurite: AzuriteInstance;
let env: TestEnvironment;
let receiver: WebhookReceiver;
let webhookUrl = "";

interface JsonAlert {
  id: string;
  title: string;
  severity: string;
  category: string | null;
  lastUpdateTime: string;
  url: string;
}
interface JsonEvent {
  id: string;
  kind: "health" | "alerts";
  at: string;
  tenantId: string;
  tenantName: string;
  from?: string;
  to?: string;
  errorCode?: string | null;
  minSeverity?: string;
  total?: number;
  alerts?: JsonAlert[];
}
interface JsonMessage {
  source: string;
  schemaVersion: number;
  sentAt: string;
  consoleUrl: string;
  droppedSinceLastDelivery: number;
  events: JsonEvent[];
}

beforeAll(async () => {
  azurite = await startAzurite();
  env = await startTestEnvironment(
    { AzureWebJobsStorage: azurite.connectionString, PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50" },
    {
      beforeLoad: async (tls) => {
        receiver = new WebhookReceiver(tls);
        await receiver.start();
        webhookUrl = receiver.webhookUrl(`/workflows/notify/invoke?api-version=2016-06-01&sp=%2Ftriggers&sig=${SIGNATURE}`);
        return { NOTIFY_WEBHOOK_URL: webhookUrl };
      },
    },
  );
});
afterAll(async () => {
  await env?.stop();
  await receiver?.stop();
  await azurite?.stop();
});

/** Every log line and every request body of the file, for the last test's secret check. */
const seen: string[] = [];

// Every test starts with an empty outbox and a receiver that is up.
beforeEach(async () => {
  await receiver.setMode("up");
  await flush();
  seen.push(...env.app.logs.map((line) => line.message), ...receiver.requests.flatMap((request) => [request.body, JSON.stringify(request.headers)]));
  receiver.clear();
  env.app.clearLogs();
});

/** One pull of each tenant through the app's queue function, as the host would run it. */
async function pullAll(...tenantIds: string[]): Promise<void> {
  for (const tenantId of tenantIds) await env.app.queue("pullTenant", { tenantId, enqueuedAt: new Date().toISOString() });
}

/** The pull timer: fan-out, then the notification flush. */
async function flush(): Promise<void> {
  await env.app.timer("schedulePulls");
}

function messages(): JsonMessage[] {
  return receiver.delivered() as JsonMessage[];
}

function alertsOf(tenantId: string, count: number, severity: MdeSeverity, minutes: number): MdeAlert[] {
  return generateAlerts(tenantId, count, { start: minutesAgo(minutes), spacingMs: 1_000 }).map((alert) => ({ ...alert, severity }));
}

/** Services built like the app's, with other settings or overrides (a format, a clock, an observer). */
function servicesWith(settings: Record<string, string>, overrides: ServiceOverrides = {}): Services {
  return createServices(loadConfig({ ...process.env, ...env.env, ...settings }), overrides);
}

async function health(): Promise<HealthReport> {
  return checkHealth(() => servicesWith({}), { timeoutMs: 5_000 });
}

/** Everything the app wrote and the receiver got must be free of these. */
function secrets(): string[] {
  return [...secretsOf(env), webhookUrl, SIGNATURE];
}

function expectNoSecrets(texts: readonly string[]): void {
  const all = texts.join("\n");
  for (const secret of secrets()) expect(all.includes(secret), `a secret appears (${secret.slice(0, 6)}…)`).toBe(false);
}

describe("new alerts at or above the threshold", () => {
  it("turns a burst across tenants into one message, listing the capped alerts and the true totals, and changes no delivery", async () => {
    const burst = await connectedTenant(env, "Burst Corp");
    const quiet = await connectedTenant(env, "Quiet Ltd");
    env.defender.addAlerts(burst, [
      ...alertsOf(burst, 35, "High", 50),
      ...alertsOf(burst, 60, "Low", 40),
      ...alertsOf(burst, 10, "Medium", 30),
    ]);
    env.defender.addAlerts(quiet, [...alertsOf(quiet, 3, "High", 20), ...alertsOf(quiet, 5, "Informational", 10)]);

    await pullAll(burst, quiet);
    // The pulls never call the webhook: they only write the outbox.
    expect(receiver.requests).toHaveLength(0);
    await flush();

    expect(receiver.requests).toHaveLength(1);
    const [message] = messages();
    expect(message).toMatchObject({ source: "mssp-defender-connector", schemaVersion: 1, droppedSinceLastDelivery: 0 });
    expect(message?.consoleUrl).toBe(`${env.env["MSSP_PUBLIC_BASE_URL"]}/api/console`);
    const events = message?.events ?? [];
    expect(events.map((event) => [event.tenantName, event.kind, event.total])).toEqual([
      ["Burst Corp", "alerts", 35],
      ["Quiet Ltd", "alerts", 3],
    ]);
    const burstAlerts = events[0]?.alerts ?? [];
    expect(burstAlerts).toHaveLength(NOTABLE_LIST_LIMIT);
    expect(new Set(burstAlerts.map((alert) => alert.severity))).toEqual(new Set(["High"]));
    expect(events[0]?.minSeverity).toBe("High");
    expect(burstAlerts[0]?.url).toBe(`https://security.microsoft.com/alerts/${encodeURIComponent(burstAlerts[0]?.id ?? "")}?tid=${burst}`);
    expect(events[1]?.alerts?.map((alert) => alert.severity)).toEqual(["High", "High", "High"]);
    expect(receiver.requests[0]?.headers["content-type"]).toBe("application/json; charset=utf-8");

    // Notifications change nothing in what is delivered.
    for (const [tenantId, count] of [
      [burst, 105],
      [quiet, 8],
    ] as const) {
      const tally = await deliveryTally(env, tenantId);
      expect(tally).toMatchObject({ served: count, delivered: count, duplicates: 0, missing: [] });
    }
    // Sent once: the next cycle has nothing to say.
    await flush();
    expect(receiver.requests).toHaveLength(1);
  });

  it("says nothing about alerts below the threshold", async () => {
    const tenantId = await connectedTenant(env, "Low Noise");
    env.defender.addAlerts(tenantId, [...alertsOf(tenantId, 12, "Medium", 30), ...alertsOf(tenantId, 7, "Low", 20)]);
    await pullAll(tenantId);
    await flush();
    expect(receiver.requests).toHaveLength(0);
  });

  it("does not parse alerts for their severity when no webhook is configured", async () => {
    const tenantId = await connectedTenant(env, "No Webhook");
    env.defender.addAlerts(tenantId, alertsOf(tenantId, 4, "High", 15));
    const reports: PullReport[] = [];
    const services = servicesWith({ NOTIFY_WEBHOOK_URL: "" }, { pullObservers: [{ pulled: async (report) => void reports.push(report) }] });
    expect(services.notifications).toBeUndefined();
    expect(await services.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", alerts: 4 });
    expect(reports.map((report) => report.notable)).toEqual([{ alerts: [], total: 0 }]);
  });
});

describe("tenant health changes", () => {
  it("notifies degraded after the third failed pull, healthy when a pull works again, and nothing while nothing changes", async () => {
    const tenantId = await connectedTenant(env, "Flaky Inc");
    env.defender.fail(tenantId, { status: 403, times: 3 });
    for (let run = 1; run <= 3; run++) {
      await pullAll(tenantId);
      await flush();
      expect(receiver.requests, `after failed pull ${run}`).toHaveLength(run < 3 ? 0 : 1);
    }
    expect(messages()[0]?.events).toEqual([
      expect.objectContaining({ kind: "health", tenantId, tenantName: "Flaky Inc", from: "healthy", to: "degraded", errorCode: "defender_forbidden" }),
    ]);

    await pullAll(tenantId);
    await flush();
    expect(messages()[1]?.events).toEqual([expect.objectContaining({ kind: "health", from: "degraded", to: "healthy", errorCode: null })]);

    await pullAll(tenantId);
    await flush();
    expect(receiver.requests).toHaveLength(2);
  });

  it("notifies re-consent required when the refresh token is refused, and healthy after the re-consent's first pull", async () => {
    const tenantId = await connectedTenant(env, "Revoked Co");
    env.entra.failRefresh(tenantId, { status: 400, error: "invalid_grant", errorCode: 700082 });
    try {
      await pullAll(tenantId);
    } finally {
      env.entra.clearFailures();
    }
    await flush();
    expect(messages()[0]?.events).toEqual([
      expect.objectContaining({ kind: "health", tenantId, from: "healthy", to: "reconsent_required", errorCode: "AADSTS700082" }),
    ]);

    // The customer's admin consents again; the tenant's pull state still counts the failed run.
    expect((await completeConsent(env, await requestReconsent(env, tenantId))).callback.status).toBe(200);
    await flush();
    expect(receiver.requests).toHaveLength(1);
    await pullAll(tenantId);
    await flush();
    expect(messages()[1]?.events).toEqual([expect.objectContaining({ kind: "health", from: "reconsent_required", to: "healthy" })]);
  });
});

describe("a receiver that is down", () => {
  it("leaves the pulls alone, keeps the events, and delivers them once when it is back", async () => {
    const tenantId = await connectedTenant(env, "Outage Watch");
    env.defender.addAlerts(tenantId, alertsOf(tenantId, 6, "High", 25));
    await receiver.setMode("refuse");

    await pullAll(tenantId);
    expect(await deliveryTally(env, tenantId)).toMatchObject({ served: 6, delivered: 6, duplicates: 0 });
    const started = Date.now();
    await flush();
    // One attempt, a one-second pause, one retry: refused at once each time.
    expect(Date.now() - started).toBeLessThan(8_000);
    const failed = env.app.logs.filter((line) => line.message.includes('"code":"notify_failed"'));
    expect(failed.map((line) => [line.functionName, line.level])).toEqual([["schedulePulls", "warning"]]);
    expect(failed[0]?.message).toContain('"reason":"webhook_unreachable"');
    const down = await health();
    expect(down.status).toBe("healthy");
    expect(down.checks.notifications).toMatchObject({ status: "unhealthy", reason: expect.stringContaining("webhook_unreachable") });
    expect(down.checks.notifications?.reason).toContain("1 event(s) waiting");
    const endpoint = await env.app.http("health", { method: "GET", url: "/api/health" });
    expect(endpoint.status).toBe(200);
    expect(endpoint.json<HealthReport>().checks.notifications?.status).toBe("unhealthy");

    // A receiver that answers 500: tried twice, still kept.
    await receiver.setMode("error");
    await flush();
    expect(receiver.requests.map((request) => request.status)).toEqual([500, 500]);

    await receiver.setMode("up");
    await flush();
    await flush();
    const delivered = messages();
    expect(delivered).toHaveLength(1);
    expect(delivered[0]?.events.map((event) => [event.tenantId, event.kind, event.total])).toEqual([[tenantId, "alerts", 6]]);
    expect((await health()).checks.notifications).toMatchObject({ status: "healthy" });
    expectNoSecrets([...env.app.logs.map((line) => line.message), JSON.stringify(down), endpoint.body]);
  });

  it("drops an event older than 24 hours, counts it, and says so in the next message", async () => {
    const old = await connectedTenant(env, "Stale Events");
    const fresh = await connectedTenant(env, "Fresh Events");
    const dayAgo = Date.now() - 25 * 3600_000;
    const outboxAt = (clock: () => number) => new NotificationOutbox(new NotificationTable({ tables: servicesWith({}).tables, timeoutMs: 10_000 }), clock);
    const alert = { id: "da-old", title: "Old news", severity: "High", category: "Malware", lastUpdateTime: new Date(dayAgo).toISOString() };
    const event = { kind: "alerts" as const, tenantName: "Stale Events", minSeverity: "High" as const, total: 1, alerts: [alert] };
    await outboxAt(() => dayAgo).add({ ...event, tenantId: old, at: new Date(dayAgo).toISOString() });
    await outboxAt(Date.now).add({ ...event, tenantId: fresh, tenantName: "Fresh Events", at: new Date().toISOString() });

    await flush();
    const [message] = messages();
    expect(message?.events.map((e) => e.tenantId)).toEqual([fresh]);
    expect(message?.droppedSinceLastDelivery).toBe(1);
    expect(env.app.logs.some((line) => line.message.includes('"code":"notify_dropped"') && line.message.includes('"dropped":1'))).toBe(true);
  });

  it("sends at most 500 events a message, oldest first, and the rest with the next cycle's", async () => {
    const tenantId = await connectedTenant(env, "Flood Co");
    const outbox = new NotificationOutbox(new NotificationTable({ tables: servicesWith({}).tables, timeoutMs: 10_000 }), Date.now);
    const start = Date.now() - 3_600_000;
    const count = OUTBOX_LIMITS.messageEvents + 5;
    const indexes = Array.from({ length: count }, (_, i) => i);
    // Row keys follow each event's time, so the order of the writes does not matter.
    for (let from = 0; from < count; from += 50) {
      await Promise.all(
        indexes.slice(from, from + 50).map((i) =>
          outbox.add({ kind: "health", tenantId, tenantName: "Flood Co", at: new Date(start + i * 1_000).toISOString(), from: "healthy", to: "degraded" }),
        ),
      );
    }
    await flush();
    await flush();
    const [first, second] = messages();
    expect(first?.events).toHaveLength(OUTBOX_LIMITS.messageEvents);
    expect(first?.events[0]?.at).toBe(new Date(start).toISOString());
    expect(second?.events.map((event) => event.at)).toEqual(indexes.slice(-5).map((i) => new Date(start + i * 1_000).toISOString()));
    expect(second?.droppedSinceLastDelivery).toBe(0);
  });

  it("drops the oldest events beyond the cap and hands out the next message oldest first", async () => {
    const tenantId = randomUUID();
    const table = new NotificationTable({ tables: servicesWith({}).tables, timeoutMs: 10_000 });
    const small = new NotificationOutbox(table, Date.now, { messageEvents: 3, keptEvents: 5, maxAgeMs: 24 * 3600_000 });
    const start = Date.now() - 60_000;
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      ids.push(await small.add({ kind: "health", tenantId, tenantName: "Capped", at: new Date(start + i * 1_000).toISOString(), from: "healthy", to: "degraded" }));
    }
    const { events, dropped } = await small.pending();
    expect(dropped).toEqual(ids.slice(0, 3));
    expect(events.map((event) => event.id)).toEqual(ids.slice(3, 6));
    await small.remove([...dropped, ...ids.slice(3)]);
    expect((await small.pending()).events).toEqual([]);
  });
});

describe("message formats", () => {
  const title = "Evil <!channel> & [click](https://evil.example.test) *bold* {{DATE(2017-02-14T06:00:00Z)}}";

  /** A tenant with one hostile-looking alert title and a name that tries mrkdwn, plus a health change. */
  async function hostileBatch(name: string): Promise<string> {
    const tenantId = await connectedTenant(env, name);
    env.defender.addAlerts(tenantId, [
      makeAlert({ id: `da-${randomUUID()}`, lastUpdateTime: toMdeTimestamp(Date.now() - 60_000), severity: "High", title }),
      ...alertsOf(tenantId, 2, "High", 30),
    ]);
    await pullAll(tenantId);
    return tenantId;
  }

  async function flushAs(format: string): Promise<unknown> {
    const log = capturingLogger();
    const summary = await servicesWith({ NOTIFY_WEBHOOK_FORMAT: format }).notifications?.flush.run(log);
    expect(summary).toMatchObject({ outcome: "delivered" });
    expectNoSecrets(log.lines);
    return messages().at(-1);
  }

  it("teams: a Workflows message with one Adaptive Card, outside text only in TextRuns, portal links per alert", async () => {
    const tenantId = await hostileBatch("Contoso *Teams* <b>");
    const message = (await flushAs("teams")) as {
      type: string;
      attachments: Array<{ contentType: string; content: { type: string; version: string; body: unknown[]; actions: unknown[] } }>;
    };
    expect(message.type).toBe("message");
    expect(message.attachments).toHaveLength(1);
    const card = message.attachments[0];
    expect(card?.contentType).toBe("application/vnd.microsoft.card.adaptive");
    expect(card?.content).toMatchObject({ type: "AdaptiveCard", version: "1.4" });
    expect(card?.content.actions).toEqual([{ type: "Action.OpenUrl", title: "Open the operator console", url: `${env.env["MSSP_PUBLIC_BASE_URL"]}/api/console` }]);
    const text = JSON.stringify(card?.content.body);
    // Markdown-capable TextBlocks carry only the app's own words.
    const blocks = JSON.stringify(card?.content.body).match(/"type":"TextBlock","text":"[^"]*"/g) ?? [];
    for (const block of blocks) expect(block).not.toMatch(/Evil|Contoso/);
    expect(text).toContain('{"type":"TextRun","text":"Contoso *Teams* <b>","weight":"Bolder"}');
    expect(text).toContain("Evil <!channel> & [click](https://evil.example.test) *bold* {\u200b{DATE");
    expect(text).toContain(`https://security.microsoft.com/alerts/`);
    expect(text).toContain(`?tid=${tenantId}`);
    expect(Buffer.byteLength(JSON.stringify(message))).toBeLessThan(28_000);
  });

  it("slack: text and mrkdwn blocks, with &, < and > escaped in names and titles", async () => {
    await hostileBatch("Fabrikam <!here> & Co");
    const message = (await flushAs("slack")) as { text: string; blocks: Array<{ type: string; text?: { type: string; text: string } }> };
    expect(message.text).toBe("Defender connector: 3 new alerts");
    expect(message.blocks[0]).toEqual({ type: "header", text: { type: "plain_text", text: "Defender connector: 3 new alerts" } });
    expect(message.blocks.length).toBeLessThanOrEqual(50);
    const section = message.blocks.find((block) => block.type === "section")?.text;
    expect(section?.type).toBe("mrkdwn");
    expect(section?.text).toContain("*Fabrikam &lt;!here&gt; &amp; Co*");
    expect(section?.text).toContain("Evil &lt;!channel&gt; &amp; [click](https://evil.example.test)");
    expect(section?.text).not.toContain("<!");
    expect(section?.text).toMatch(/<https:\/\/security\.microsoft\.com\/alerts\/[^|>]+\?tid=[0-9a-f-]{36}\|/);
    for (const block of message.blocks) if (block.type === "section") expect(block.text?.text.length).toBeLessThanOrEqual(3000);
  });

  it("json: the documented schema; and no format carries a secret in its body or headers", async () => {
    const tenantId = await hostileBatch("Northwind JSON");
    const message = (await flushAs("json")) as JsonMessage;
    expect(Object.keys(message)).toEqual(["source", "schemaVersion", "sentAt", "consoleUrl", "droppedSinceLastDelivery", "events"]);
    expect(message.events).toEqual([
      {
        id: expect.any(String),
        kind: "alerts",
        at: expect.any(String),
        tenantId,
        tenantName: "Northwind JSON",
        minSeverity: "High",
        total: 3,
        alerts: expect.arrayContaining([expect.objectContaining({ title, severity: "High", url: expect.stringContaining(`?tid=${tenantId}`) })]),
      },
    ]);
    expect(Object.keys(message.events[0]?.alerts?.[0] ?? {})).toEqual(["id", "title", "severity", "category", "lastUpdateTime", "url"]);
    expectNoSecrets(receiver.requests.flatMap((request) => [request.body, JSON.stringify(request.headers), request.path.replace(SIGNATURE, "")]));
    expect(receiver.requests.every((request) => request.headers["authorization"] === undefined)).toBe(true);
  });
});

describe("secrets", () => {
  it("appear in no log line and no message of this whole file: not the client secret, a token, the webhook URL or its signature", () => {
    seen.push(...env.app.logs.map((line) => line.message), ...receiver.requests.map((request) => request.body));
    expect(seen.length).toBeGreaterThan(20);
    expect(seen.some((text) => text.includes("notify_delivered"))).toBe(true);
    expectNoSecrets(seen);
  });
});
