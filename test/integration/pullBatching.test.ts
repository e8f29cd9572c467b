import { QueueServiceClient, type QueueClient } from "@azure/storage-queue";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { readFileSync } from "node:fs";
import { runPoisonedRequest, runPullRequest } from "../../shared/pull/pullRequests";
import { PULL_SLOTS, PullSlots } from "../../shared/pull/pullSlots";
import { parsePullRequest } from "../../shared/pull/scheduler";
import type { PullOutcome } from "../../shared/pull/tenantPull";
import { QUEUES } from "../../shared/storage/names";
import { generateAlerts } from "../fakes/alerts";
import { capturingLogger, connectedTenant, deliveredEnvelopes, minutesAgo, pipelineServices } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * Quiet tenants share pull queue messages (PULL_TENANTS_PER_MESSAGE): fewer queue operations per
 * tenant-cycle, while each tenant keeps its own bounds, retries and place in the poison queue.
 */

let env: TestEnvironment;
let queue: QueueClient;

beforeAll(async () => {
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50", PULL_TENANTS_PER_MESSAGE: "3" });
  queue = QueueServiceClient.fromConnectionString(inject("storageConnectionString")).getQueueClient(QUEUES.tenantPulls);
  await queue.createIfNotExists();
});
afterAll(async () => {
  await env?.stop();
});
beforeEach(async () => {
  await queue.clearMessages();
});

type Message = { tenantId?: string; tenantIds?: string[]; enqueuedAt: string };

async function drain(): Promise<Message[]> {
  const messages: Message[] = [];
  for (;;) {
    const received = await queue.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 300 });
    if (received.receivedMessageItems.length === 0) return messages;
    for (const m of received.receivedMessageItems) messages.push(JSON.parse(Buffer.from(m.messageText, "base64").toString("utf8")) as Message);
  }
}

const namesOf = (m: Message): string[] => m.tenantIds ?? (m.tenantId ? [m.tenantId] : []);

/** A connected tenant pulled once with `alerts` alerts (quiet afterwards when fewer than a page). */
async function pulledTenant(alerts: number): Promise<string> {
  const tenantId = await connectedTenant(env);
  env.defender.addAlerts(tenantId, generateAlerts(tenantId, alerts, { start: minutesAgo(20), spacingMs: 2_000 }));
  expect(await pipelineServices(env).tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled" });
  return tenantId;
}

describe("quiet tenants share pull messages", () => {
  it("groups quiet tenants up to the setting, and sends a first pull, a backlog and a failing tenant alone", async () => {
    const quiet = [await pulledTenant(3), await pulledTenant(0), await pulledTenant(10), await pulledTenant(1)];
    const fresh = await connectedTenant(env, "Never pulled");
    // A full page in its last run: it may have more to read.
    const busy = await pulledTenant(60);
    const failing = await pulledTenant(2);
    env.defender.fail(failing, { status: 403, times: 1 });
    expect(await pipelineServices(env).tenantPull.run(failing, capturingLogger())).toMatchObject({ outcome: "failed", code: "defender_forbidden" });

    await env.app.timer("schedulePulls");
    const messages = await drain();
    const named = messages.flatMap(namesOf);
    // Every connected tenant of the registry (other tests' too) once, no message over the limit.
    expect(new Set(named).size).toBe(named.length);
    expect(messages.every((m) => namesOf(m).length >= 1 && namesOf(m).length <= 3)).toBe(true);
    for (const alone of [fresh, busy, failing]) {
      expect(messages.filter((m) => namesOf(m).includes(alone))).toEqual([expect.objectContaining({ tenantId: alone })]);
    }
    for (const id of quiet) expect(named).toContain(id);
    // Groups of three: all four quiet tenants but the last group's odd one out share messages.
    const grouped = messages.filter((m) => m.tenantIds !== undefined).flatMap(namesOf);
    expect(quiet.filter((id) => grouped.includes(id)).length).toBeGreaterThanOrEqual(3);
    // Fewer messages than tenants: the point of it.
    expect(messages.length).toBeLessThan(named.length);
  });

  it("pulls every tenant of a group message through the app's queue trigger, each once", async () => {
    const tenants = [await pulledTenant(2), await pulledTenant(2), await pulledTenant(2)];
    for (const [i, id] of tenants.entries()) {
      env.defender.addAlerts(id, generateAlerts(id, 4 + i, { start: minutesAgo(5), spacingMs: 1_000 }).map((a, j) => ({ ...a, id: `${a.id}-g${j}` })));
    }
    await env.app.queue("pullTenant", JSON.stringify({ tenantIds: tenants, enqueuedAt: new Date().toISOString() }));
    for (const [i, id] of tenants.entries()) {
      const ids = (await deliveredEnvelopes(env, id)).map((e) => `${e.alert.id}@${e.alert.lastUpdateTime}`);
      expect(ids.length).toBe(2 + 4 + i);
      expect(new Set(ids).size).toBe(ids.length);
    }
    expect(await drain()).toEqual([]);
  });

  it("sends a tenant whose pull fails unexpectedly in a group again on its own, and completes the message for the others", async () => {
    const [good, bad, other] = ["a", "b", "c"].map((c) => `${c.repeat(8)}-0000-4000-8000-000000000000`) as [string, string, string];
    const ran: string[] = [];
    const tenantPull = {
      async run(tenantId: string): Promise<PullOutcome> {
        ran.push(tenantId);
        if (tenantId === bad) return { outcome: "failed", code: "pull_failed", category: "transient" };
        if (tenantId === other) throw new Error("boom");
        return { outcome: "pulled", alerts: 0, complete: true, deadLetters: 0 };
      },
    };
    const log = capturingLogger();
    await runPullRequest({ tenantIds: [good, bad, other], enqueuedAt: "" }, { tenantPull, queue: async () => queue, now: Date.now, slots: new PullSlots() }, log, "inv");
    expect(ran.sort()).toEqual([good, bad, other].sort());
    const resent = await drain();
    expect(resent.map((m) => m.tenantId).sort()).toEqual([bad, other].sort());
    expect(resent.every((m) => m.tenantIds === undefined)).toBe(true);
    // A single-tenant message still throws, so the queue's retries and poison queue apply to it.
    await expect(runPullRequest({ tenantIds: [bad], enqueuedAt: "" }, { tenantPull, queue: async () => queue, now: Date.now, slots: new PullSlots() }, log, "inv")).rejects.toThrow(
      /failed unexpectedly/,
    );
    expect(await drain()).toEqual([]);
  });

  it("never runs more of a group's pulls than the process's free slots; a tenant that finds none within the wait is sent again alone", async () => {
    const ids = ["1", "2", "3", "4", "5"].map((c) => `${c.repeat(8)}-0000-4000-8000-000000000000`);
    const slots = new PullSlots(3);
    // A single-tenant message already running holds a slot: the host counts it, so it is never refused one.
    const single = slots.take();
    let running = 0;
    let most = 0;
    const waits: number[] = [];
    const finish: Array<() => void> = [];
    const tenantPull = {
      async run(_tenantId: string, _log: unknown, _owner?: string, waitedMs = 0): Promise<PullOutcome> {
        waits.push(waitedMs);
        most = Math.max(most, ++running);
        await new Promise<void>((resolve) => finish.push(resolve));
        running--;
        return { outcome: "pulled", alerts: 0, complete: true, deadLetters: 0 };
      },
    };
    const done = runPullRequest({ tenantIds: ids, enqueuedAt: "" }, { tenantPull, queue: async () => queue, now: Date.now, slots, slotWaitMs: 1_000 }, capturingLogger(), "inv");
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(running).toBe(2);
    // One pull ends: the next waiting tenant takes its slot at once.
    finish.shift()?.();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(running).toBe(2);
    // The rest wait out the second and are handed back to the queue, one message each.
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    for (const end of finish.splice(0)) end();
    await done;
    expect(most).toBe(2);
    // The one that waited for a slot was told how long, to take it off its own bounds.
    expect(waits).toHaveLength(3);
    expect(Math.max(...waits)).toBeGreaterThanOrEqual(80);
    expect((await drain()).map((m) => m.tenantId)).toHaveLength(2);
    single();
    expect(slots.inUse).toBe(0);
  });

  it("takes the time a tenant waited for its slot off the pull's own bounds", async () => {
    const tenantId = await connectedTenant(env);
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, 300, { start: minutesAgo(30), spacingMs: 5_000 }));
    const { maxRunSeconds } = pipelineServices(env).config.pull;
    // Waited the whole run time already: the pull stops at its first chance, checkpoint saved.
    const outcome = await pipelineServices(env).tenantPull.run(tenantId, capturingLogger(), "waited", maxRunSeconds * 1000);
    expect(outcome).toMatchObject({ outcome: "pulled", complete: false });
    expect(outcome.outcome === "pulled" && outcome.alerts).toBeLessThan(300);
    expect(await pipelineServices(env).tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled", complete: true });
    expect(new Set((await deliveredEnvelopes(env, tenantId)).map((e) => e.alert.id)).size).toBe(300);
  });

  it("counts as many slots as host.json lets queue messages run at once", () => {
    const host = JSON.parse(readFileSync("host.json", "utf8")) as { extensions: { queues: { batchSize: number; newBatchThreshold: number } } };
    expect(PULL_SLOTS).toBe(host.extensions.queues.batchSize + host.extensions.queues.newBatchThreshold);
  });

  it("splits a poisoned group into messages of one, recording nothing on its tenants", async () => {
    const tenants = [await pulledTenant(1), await pulledTenant(1)];
    await env.app.queue("pullTenantPoisoned", JSON.stringify({ tenantIds: tenants, enqueuedAt: new Date().toISOString() }));
    expect((await drain()).map((m) => m.tenantId).sort()).toEqual([...tenants].sort());
    for (const id of tenants) expect((await pipelineServices(env).pullState.read(id))?.lastErrorCode).toBeUndefined();
    // When even that fails, each is recorded as poisoned.
    const recorded: string[] = [];
    const broken = async (): Promise<QueueClient> => {
      throw new Error("queue unavailable");
    };
    const log = capturingLogger();
    await runPoisonedRequest({ tenantIds: tenants, enqueuedAt: "" }, { queue: broken, now: Date.now, recordPoisoned: async (id) => void recorded.push(id) }, log);
    expect(recorded.sort()).toEqual([...tenants].sort());
    // The line the pull-poisoned alert rule (infra) looks for, once per tenant.
    expect(log.lines.filter((line) => line.startsWith("error") && line.includes("moved to the poison queue"))).toHaveLength(2);
  });

  it("reads both message forms and refuses a malformed one", () => {
    const a = "AAAAAAAA-0000-4000-8000-000000000000";
    expect(parsePullRequest(JSON.stringify({ tenantId: a, enqueuedAt: "t" }))).toEqual({ tenantIds: [a.toLowerCase()], enqueuedAt: "t" });
    expect(parsePullRequest({ tenantIds: [a, a.toLowerCase()] })).toEqual({ tenantIds: [a.toLowerCase()], enqueuedAt: "" });
    const many = Array.from({ length: 33 }, (_, i) => `${String(i).padStart(8, "0")}-0000-4000-8000-000000000000`);
    expect(parsePullRequest({ tenantIds: many })).toBeUndefined();
    expect(parsePullRequest({ tenantIds: many.slice(0, 32) })?.tenantIds).toHaveLength(32);
    expect(parsePullRequest({ tenantIds: [] })).toBeUndefined();
    expect(parsePullRequest({ tenantIds: [a, "not-a-tenant"] })).toBeUndefined();
    expect(parsePullRequest({ tenantIds: a })).toBeUndefined();
    expect(parsePullRequest("{")).toBeUndefined();
  });
});
