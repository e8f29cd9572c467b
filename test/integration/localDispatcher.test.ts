import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { QueueServiceClient, type QueueClient } from "@azure/storage-queue";
import { fetch } from "undici";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { encodeQueueMessage } from "../../shared/state/queues";
import { QUEUES } from "../../shared/storage/names";
import { generateAlerts } from "../fakes/alerts";
import { startAzurite, type AzuriteInstance } from "../harness/azurite";
import type { LogEntry, QueueInvocationOptions } from "../harness/functionsHost";
import { nextTimerOccurrence, startLocalDispatcher, type LocalDispatcher, type LocalDispatcherOptions } from "../harness/localDispatcher";
import { connectedTenant, minutesAgo } from "../harness/pullFixture";
import { secretsOf, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

// Its own Azurite, not the suite's (inject("storageConnectionString")): the app's queue names are
// fixed, and a dispatcher polling the shared "tenant-pulls" would take the messages that other test
// files, running in parallel, enqueue and read themselves.
let azurite: AzuriteInstance;
let env: TestEnvironment;
let queues: QueueServiceClient;
let dispatcher: LocalDispatcher;
const lines: string[] = [];
const functionLogs: LogEntry[] = [];

const MAX_DEQUEUE = 3;
const failingQueue = `ld-fails-${randomUUID().slice(0, 8)}`;
const failingCalls: Array<{ message: unknown; metadata: QueueInvocationOptions }> = [];
/** A tenant whose pull message "crashed the worker" MAX_DEQUEUE times before the dispatcher started. */
let crashLoopTenant: string;

function options(overrides: Partial<LocalDispatcherOptions> = {}): LocalDispatcherOptions {
  return {
    app: env.app,
    port: 0,
    storageConnectionString: azurite.connectionString,
    // Fast retries and polling so a failing message reaches the poison queue in well under a second.
    queues: { maxDequeueCount: MAX_DEQUEUE, visibilityTimeoutMs: 0, maxPollingIntervalMs: 200, processingVisibilityMs: 1000 },
    log: (line) => lines.push(line),
    ...overrides,
  };
}

async function call(method: string, path: string, body?: string): Promise<{ status: number; headers: Headers; text: string }> {
  const response = await fetch(`${dispatcher.url}${path}`, {
    method,
    ...(body !== undefined ? { body, headers: { "content-type": "application/json" } } : {}),
  });
  return { status: response.status, headers: response.headers as unknown as Headers, text: await response.text() };
}

async function tenantHealth(tenantId: string): Promise<Record<string, unknown>> {
  const view = await call("GET", `/api/tenants/${tenantId}`);
  expect(view.status).toBe(200);
  return (JSON.parse(view.text) as { health?: Record<string, unknown> }).health ?? {};
}

/** Delivers a message `times` times without completing it, as a worker that crashes mid-run would. */
async function crashLoop(queue: QueueClient, text: string, times: number): Promise<void> {
  await queue.sendMessage(text);
  for (let i = 0; i < times; i++) {
    const [message] = (await queue.receiveMessages({ numberOfMessages: 1, visibilityTimeout: 30 })).receivedMessageItems;
    if (message === undefined) throw new Error("crash-loop message not received");
    await queue.updateMessage(message.messageId, message.popReceipt, undefined, 0);
  }
}

beforeAll(async () => {
  azurite = await startAzurite();
  env = await startTestEnvironment({ AzureWebJobsStorage: azurite.connectionString, PULL_SETTLE_SECONDS: "0" });
  queues = QueueServiceClient.fromConnectionString(azurite.connectionString);
  crashLoopTenant = await connectedTenant(env, "CrashLoop");
  const pulls = queues.getQueueClient(QUEUES.tenantPulls);
  await pulls.createIfNotExists();
  await crashLoop(pulls, encodeQueueMessage({ tenantId: crashLoopTenant, enqueuedAt: new Date().toISOString() }), MAX_DEQUEUE);

  dispatcher = await startLocalDispatcher(
    options({
      // Timers off for these tests (the timer test runs its own dispatcher), so every pull seen here was enqueued by the test.
      timerIntervalMs: 3_600_000,
      functionLog: (entry) => functionLogs.push(entry),
      extraQueueHandlers: [
        {
          name: "alwaysFails",
          queueName: failingQueue,
          handler: (message, metadata) => {
            failingCalls.push({ message, metadata });
            throw new Error("handler failure for the poison test");
          },
        },
      ],
    }),
  );
}, 60_000);

afterAll(async () => {
  await dispatcher?.close();
  await env?.stop();
  await azurite?.stop();
});

describe("HTTP triggers over a real socket", () => {
  it("serves the app's routes with their methods, and answers 404/405 like a host", async () => {
    expect(dispatcher.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const tenantId = randomUUID();
    const created = await call("POST", "/api/tenants", JSON.stringify({ tenantId, displayName: "Fabrikam" }));
    expect(created.status).toBe(201);
    expect(JSON.parse(created.text)).toMatchObject({ tenantId, consentUrl: expect.stringContaining(`/api/consent/${tenantId}?`) });
    expect(created.headers.get("cache-control")).toBe("no-store");

    const listed = await call("GET", "/api/tenants");
    expect(listed.status).toBe(200);
    expect((JSON.parse(listed.text) as { tenants: Array<{ tenantId: string }> }).tenants.map((t) => t.tenantId)).toContain(tenantId);
    // Route parameters reach the handler; literal segments match case-insensitively.
    expect(JSON.parse((await call("GET", `/API/Tenants/${tenantId}`)).text)).toMatchObject({ tenantId, displayName: "Fabrikam" });

    expect((await call("GET", "/api/nope")).status).toBe(404);
    expect((await call("GET", "/tenants")).status).toBe(404);
    const wrongMethod = await call("PUT", "/api/tenants");
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get("allow")).toBe("GET, POST");
    // consent/{tenantId:guid}: a non-GUID does not match the route at all.
    expect((await call("GET", "/api/consent/not-a-guid")).status).toBe(404);
    // A GUID reaches the consent handler, which refuses the unsigned link with its own page.
    const unsigned = await call("GET", `/api/consent/${tenantId}`);
    expect(unsigned.status).not.toBe(404);
    expect(unsigned.headers.get("content-type")).toMatch(/text\/html/);
    expect(lines.some((l) => / consentStart \d{3} \d+ms GET \/api\/consent\//.test(l))).toBe(true);
  });

  it("refuses bodies over the limit with 413 without invoking the function", async () => {
    const before = env.app.logs.length;
    const big = await call("POST", "/api/tenants", JSON.stringify({ tenantId: randomUUID(), displayName: "x".repeat(1_200_000) }));
    expect(big.status).toBe(413);
    // Only registerTenant's own lines count: the queue triggers keep running meanwhile (the
    // crash-loop message of beforeAll reaches pullTenantPoisoned at any time and logs).
    expect(env.app.logs.slice(before).filter((e) => e.functionName === "registerTenant")).toEqual([]);
  });

  it("relays status, headers and every cookie; a throwing handler becomes a bare 500", async () => {
    const fn = env.app.functions.get("listDeadLetters");
    if (fn === undefined) throw new Error("listDeadLetters is not registered");
    const original = fn.callback;
    const tenantId = randomUUID();
    try {
      fn.callback = () => ({
        status: 299,
        headers: { "x-relayed": "yes", "content-type": "text/plain" },
        cookies: [
          { name: "a", value: "1", httpOnly: true, path: "/api" },
          { name: "b", value: "2", sameSite: "Lax", maxAge: 60 },
        ],
        body: "relayed",
      });
      const relayed = await fetch(`${dispatcher.url}/api/tenants/${tenantId}/dead-letters`);
      expect(relayed.status).toBe(299);
      expect(relayed.headers.get("x-relayed")).toBe("yes");
      expect(relayed.headers.getSetCookie()).toEqual(["a=1; path=/api; httponly", "b=2; max-age=60; samesite=lax"]);
      expect(await relayed.text()).toBe("relayed");

      fn.callback = () => {
        throw new Error("secret detail at /work/main/shared/x.ts:12");
      };
      const failed = await call("GET", `/api/tenants/${tenantId}/dead-letters`);
      expect(failed.status).toBe(500);
      expect(failed.text).toBe("Internal Server Error");
    } finally {
      fn.callback = original;
    }
    expect(lines.some((l) => l.includes("listDeadLetters 500") && l.includes("secret detail"))).toBe(true);
  });
});

describe("queue triggers polled from Azurite", () => {
  it("runs pullTenant for a base64 JSON message, keeping it invisible while the pull outlasts its lease", async () => {
    const tenantId = await connectedTenant(env, "Queued");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 7, { start: minutesAgo(30), spacingMs: 1000 }));
    // Each Defender call takes longer than the 1 s processing visibility: without renewal the
    // message would reappear mid-pull and be run a second time.
    env.defender.setLatency(1200, tenantId);
    const sent = await queues
      .getQueueClient(QUEUES.tenantPulls)
      .sendMessage(encodeQueueMessage({ tenantId, enqueuedAt: new Date().toISOString() }));

    await vi.waitFor(async () => expect(await tenantHealth(tenantId)).toMatchObject({ alertsInLastPull: 7, lastPullErrorCode: null }), {
      timeout: 12_000,
      interval: 200,
    });
    env.defender.setLatency(0, tenantId);
    await vi.waitFor(() => expect(lines.some((l) => l.includes(`message ${sent.messageId}`))).toBe(true));
    const forMessage = lines.filter((l) => l.includes(`message ${sent.messageId}`));
    expect(forMessage).toHaveLength(1);
    expect(forMessage[0]).toMatch(new RegExp(` pullTenant succeeded \\d+ms tenant-pulls message ${sent.messageId} attempt 1/${MAX_DEQUEUE}$`));
    // The handler's own context.log lines reach functionLog too.
    expect(functionLogs.some((e) => e.functionName === "pullTenant" && e.message.includes("pull finished"))).toBe(true);
  });

  it("poisons a message that failed maxDequeueCount times, retrying it with a growing dequeue count", async () => {
    const text = encodeQueueMessage({ job: "will fail" });
    await queues.getQueueClient(failingQueue).sendMessage(text);
    const poison = queues.getQueueClient(`${failingQueue}-poison`);
    await vi.waitFor(async () => expect((await poison.exists()) && (await poison.peekMessages()).peekedMessageItems.length).toBe(1), {
      timeout: 8_000,
      interval: 100,
    });
    // The dispatcher copies to the poison queue first, then deletes the original and logs: wait for the log.
    await vi.waitFor(() => expect(lines.some((l) => l.includes(" alwaysFails poisoned ") && l.includes(`moved to ${failingQueue}-poison`))).toBe(true), {
      timeout: 5_000,
      interval: 50,
    });
    // The body is copied unchanged, so still base64, as the host writes it.
    expect((await poison.peekMessages()).peekedMessageItems[0]?.messageText).toBe(text);
    expect(failingCalls.map((c) => c.metadata.dequeueCount)).toEqual([1, 2, 3]);
    expect(failingCalls[0]?.message).toEqual({ job: "will fail" });
    expect(new Set(failingCalls.map((c) => c.metadata.id)).size).toBe(1);
    expect((await queues.getQueueClient(failingQueue).peekMessages()).peekedMessageItems).toHaveLength(0);
    expect(lines.filter((l) => l.includes(" alwaysFails failed "))).toHaveLength(3);
    expect(lines.some((l) => l.includes(" alwaysFails poisoned ") && l.includes(`moved to ${failingQueue}-poison`))).toBe(true);
  });

  it("poisons text that is not base64 without running the function", async () => {
    const calls = failingCalls.length;
    const poison = queues.getQueueClient(`${failingQueue}-poison`);
    const before = (await poison.peekMessages({ numberOfMessages: 32 })).peekedMessageItems.length;
    await queues.getQueueClient(failingQueue).sendMessage("{not base64}");
    await vi.waitFor(async () => expect((await poison.peekMessages({ numberOfMessages: 32 })).peekedMessageItems.length).toBe(before + 1), {
      timeout: 5_000,
      interval: 100,
    });
    // Copied first, logged after the delete: wait for the log line too.
    await vi.waitFor(() => expect(lines.some((l) => l.includes("not valid base64"))).toBe(true), { timeout: 5_000, interval: 50 });
    expect(failingCalls.length).toBe(calls);
  });

  it("poisons a pull message that crash-looped, and the app's poison function records it on the tenant", async () => {
    await vi.waitFor(async () => expect(await tenantHealth(crashLoopTenant)).toMatchObject({ lastPullErrorCode: "pull_poisoned" }), {
      timeout: 8_000,
      interval: 200,
    });
    expect(lines.some((l) => / pullTenant poisoned \d+ms tenant-pulls message \S+ attempt 4\/3: dequeue count over maxDequeueCount; moved to tenant-pulls-poison$/.test(l))).toBe(true);
    // The health record is written inside the handler; the dispatcher logs "succeeded" after it returns.
    await vi.waitFor(() => expect(lines.some((l) => / pullTenantPoisoned succeeded \d+ms tenant-pulls-poison message /.test(l))).toBe(true), {
      timeout: 5_000,
      interval: 50,
    });
    // Poisoned before any run: the tenant was never pulled.
    expect(env.defender.requests(crashLoopTenant)).toHaveLength(0);
  });
});

describe("timer triggers", () => {
  it("runs schedulePulls every interval, and its fan-out is pulled from the queue", async () => {
    await dispatcher.close();
    const tenantId = await connectedTenant(env, "Scheduled");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 4, { start: minutesAgo(20), spacingMs: 1000 }));
    const timerLines: Array<{ at: number; line: string }> = [];
    const started = Date.now();
    dispatcher = await startLocalDispatcher(
      options({ timerIntervalMs: 500, log: (line) => (lines.push(line), timerLines.push({ at: Date.now(), line })) }),
    );
    await vi.waitFor(async () => expect(await tenantHealth(tenantId)).toMatchObject({ alertsInLastPull: 4, lastPullErrorCode: null }), {
      timeout: 8_000,
      interval: 200,
    });
    const runs = timerLines.filter((l) => / schedulePulls succeeded \d+ms timer$/.test(l.line));
    expect(runs.length).toBeGreaterThanOrEqual(1);
    // The first run comes one interval after the start, not at once (runOnStartup is false).
    expect((runs[0]?.at ?? 0) - started).toBeGreaterThanOrEqual(450);
    expect(timerLines.some((l) => / pullTenant succeeded \d+ms tenant-pulls message /.test(l.line))).toBe(true);

    await dispatcher.close();
    const count = lines.length;
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(lines.length).toBe(count);
  });

  it("follows NCRONTAB schedules (UTC, six fields) when no interval is given", () => {
    const next = (schedule: string, after: string): string => nextTimerOccurrence(schedule, new Date(after)).toISOString();
    expect(next("0 */5 * * * *", "2026-03-01T10:02:30Z")).toBe("2026-03-01T10:05:00.000Z");
    expect(next("0 */5 * * * *", "2026-03-01T10:05:00Z")).toBe("2026-03-01T10:10:00.000Z");
    expect(next("30 15 9 * * MON-FRI", "2026-03-06T09:15:30Z")).toBe("2026-03-09T09:15:30.000Z");
    expect(next("0 0 0 29 FEB *", "2026-03-01T00:00:00Z")).toBe("2028-02-29T00:00:00.000Z");
    expect(next("00:00:20", "2026-03-01T10:00:00Z")).toBe("2026-03-01T10:00:20.000Z");
    expect(() => next("*/5 * * * *", "2026-03-01T10:00:00Z")).toThrow(/six-field/);
  });

  it("never logs a secret or a query string", () => {
    for (const secret of secretsOf(env)) for (const line of lines) expect(line.includes(secret)).toBe(false);
    expect(lines.some((l) => l.includes("?"))).toBe(false);
  });
});

describe("listen errors", () => {
  it("names the port when it is taken by another program", async () => {
    const other: Server = createServer();
    await new Promise<void>((resolve) => other.listen(0, "127.0.0.1", resolve));
    const port = (other.address() as AddressInfo).port;
    try {
      await expect(startLocalDispatcher(options({ port }))).rejects.toThrow(`port ${port} is already in use`);
    } finally {
      await new Promise((resolve) => other.close(resolve));
    }
  });
});
