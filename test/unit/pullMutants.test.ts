import { randomBytes, randomUUID } from "node:crypto";
import { createServer as createNetServer, type Socket } from "node:net";
import type { TokenCredential } from "@azure/identity";
import { TableClient } from "@azure/data-tables";
import { BlobServiceClient } from "@azure/storage-blob";
import { QueueServiceClient, type QueueClient } from "@azure/storage-queue";
import { describe, expect, inject, it } from "vitest";
import type { LogFields, Logger } from "../../shared/logging";
import { blobDedupeSpill } from "../../shared/pull/dedupeSpill";
import { decodeDelivered, encodeDelivered, type DeliveredVersions } from "../../shared/pull/deliveredVersions";
import { consenterWarning, pullHealthDecorator, pullHealthOf } from "../../shared/pull/health";
import { DEGRADED_AFTER_FAILURES, DEGRADED_AFTER_SINK_BEHIND_MS, healthLevel, NOTABLE_LIST_LIMIT, severityRank } from "../../shared/pull/observer";
import { PULL_HISTORY_KEEP_MS, PULL_HISTORY_KEEP_ROWS, PULL_HISTORY_PRUNE_EVERY_MS, PullHistoryStore } from "../../shared/pull/pullHistory";
import { versionHash } from "../../shared/pull/window";
import { reportPoisoned, runPoisonedRequest, runPullRequest, SLOT_WAIT_MS, UnexpectedPullFailure } from "../../shared/pull/pullRequests";
import { PULL_SLOTS, PullSlots } from "../../shared/pull/pullSlots";
import { emptyState, LeaseLostError, PullStateStore, type PullState } from "../../shared/pull/pullState";
import { enqueueAlone, enqueueConnectedTenants, isQuiet, parsePullRequest, pullMessage } from "../../shared/pull/scheduler";
import type { PullOutcome } from "../../shared/pull/tenantPull";
import { createTableFactory, type TableFactory } from "../../shared/state/tables";
import { AZURITE_ACCOUNT, AZURITE_KEY } from "../harness/azurite";
import { beforeWrites, LEASE_MS, recordingCalls, stateStore } from "../harness/pullStateFixture";
import type { TenantRecord, TenantRegistry } from "../../shared/state/tenantRegistry";

/**
 * shared/pull's scheduling, slots, history, health and dedupe encoding at unit level (issue 15,
 * mutation testing): the real Storage clients against the run's Azurite (globalSetup), no app,
 * no Functions host, so that Stryker can afford to run this file for every mutant.
 */

const T0 = Date.parse("2026-03-01T10:00:00.000Z");
const iso = (ms: number): string => new Date(ms).toISOString();
const guid = (): string => randomUUID();

interface Logged {
  level: "info" | "warn" | "error";
  message: string;
  fields?: LogFields;
}

function recordingLogger(): Logger & { lines: Logged[] } {
  const lines: Logged[] = [];
  return {
    lines,
    info: (message, fields) => lines.push({ level: "info", message, fields }),
    warn: (message, fields) => lines.push({ level: "warn", message, fields }),
    error: (message, fields) => lines.push({ level: "error", message, fields }),
  };
}

const noCredential = (): TokenCredential => {
  throw new Error("no credential for a connection string");
};

/** A queue of this test's own in the run's Azurite. */
async function azuriteQueue(): Promise<QueueClient> {
  const queue = QueueServiceClient.fromConnectionString(inject("storageConnectionString")).getQueueClient(`pullmut-${randomBytes(6).toString("hex")}`);
  await queue.create();
  return queue;
}

interface Sent {
  body: Record<string, unknown>;
  ttlSeconds: number;
}

/** Every message on the queue, decoded as the Functions host decodes it, with its time to live. */
async function sentMessages(queue: QueueClient): Promise<Sent[]> {
  const sent: Sent[] = [];
  for (;;) {
    const received = await queue.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 600 });
    if (received.receivedMessageItems.length === 0) return sent;
    for (const item of received.receivedMessageItems) {
      sent.push({
        body: JSON.parse(Buffer.from(item.messageText, "base64").toString("utf8")) as Record<string, unknown>,
        ttlSeconds: Math.round((item.expiresOn.getTime() - item.insertedOn.getTime()) / 1000),
      });
    }
  }
}

/** The same queue, except that sending a message naming one of `refused` fails. */
function refusing(queue: QueueClient, refused: ReadonlySet<string>): QueueClient {
  return new Proxy(queue, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (property === "sendMessage" && typeof value === "function") {
        return async (text: string, options?: unknown) => {
          const decoded = Buffer.from(text, "base64").toString("utf8");
          if ([...refused].some((id) => decoded.includes(id))) throw new Error("queue refused the message");
          return (value as (t: string, o?: unknown) => Promise<unknown>).call(target, text, options);
        };
      }
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

function registry(tenantIds: readonly string[]): TenantRegistry {
  const list = async (status?: string): Promise<TenantRecord[]> => {
    expect(status).toBe("connected");
    return tenantIds.map((tenantId) => ({ tenantId, displayName: tenantId, status: "connected", createdAt: iso(T0), updatedAt: iso(T0) }) as TenantRecord);
  };
  return { list } as unknown as TenantRegistry;
}

/** A state whose next pull is expected to be short (see isQuiet). */
function quietState(): PullState {
  return { ...emptyState(), lastSuccessAt: iso(T0), lastAlertCount: 3 };
}

describe("isQuiet: which tenants may share a message", () => {
  it("is quiet only after a success, with no window, no invalid span, no failure, under a page and no sink behind", () => {
    expect(isQuiet(quietState(), 100)).toBe(true);
    expect(isQuiet({ ...quietState(), lastAlertCount: undefined }, 100)).toBe(true);
    expect(isQuiet({ ...quietState(), lastSuccessAt: undefined }, 100)).toBe(false);
    expect(isQuiet({ ...quietState(), window: { from: iso(T0), to: iso(T0 + 1), position: iso(T0), nextEnd: iso(T0 + 1) } }, 100)).toBe(false);
    expect(isQuiet({ ...quietState(), invalidSpan: { from: iso(T0), to: iso(T0 + 1), runs: 1 } }, 100)).toBe(false);
    expect(isQuiet({ ...quietState(), consecutiveFailures: 1 }, 100)).toBe(false);
    expect(isQuiet({ ...quietState(), lastAlertCount: 99 }, 100)).toBe(true);
    expect(isQuiet({ ...quietState(), lastAlertCount: 100 }, 100)).toBe(false);
    expect(isQuiet({ ...quietState(), sinks: { splunk: { parkedFrom: 2, parkedTo: 3 } } }, 100)).toBe(false);
    expect(isQuiet({ ...quietState(), sinks: { splunk: { parkedFrom: 3, parkedTo: 3 } } }, 100)).toBe(true);
  });
});

describe("pull request messages", () => {
  it("keeps the single-tenant form for one tenant and lists several", () => {
    expect(pullMessage(["a"], "t")).toEqual({ tenantId: "a", enqueuedAt: "t" });
    expect(pullMessage(["a", "b"], "t")).toEqual({ tenantIds: ["a", "b"], enqueuedAt: "t" });
  });

  it("parses both forms, from text or object, lower-cased and without repeats", () => {
    const id = guid();
    expect(parsePullRequest(JSON.stringify({ tenantId: id.toUpperCase(), enqueuedAt: "x" }))).toEqual({ tenantIds: [id], enqueuedAt: "x" });
    expect(parsePullRequest({ tenantIds: [id, id.toUpperCase()] })).toEqual({ tenantIds: [id], enqueuedAt: "" });
    expect(parsePullRequest({ tenantId: id, enqueuedAt: 5 })).toEqual({ tenantIds: [id], enqueuedAt: "" });
  });

  it("refuses malformed messages", () => {
    const id = guid();
    expect(parsePullRequest("{not json")).toBeUndefined();
    expect(parsePullRequest(null)).toBeUndefined();
    expect(parsePullRequest(42)).toBeUndefined();
    expect(parsePullRequest("42")).toBeUndefined();
    expect(parsePullRequest({ tenantIds: [] })).toBeUndefined();
    expect(parsePullRequest({ tenantIds: id })).toBeUndefined();
    expect(parsePullRequest({ tenantId: `${id}x` })).toBeUndefined();
    expect(parsePullRequest({ tenantId: `x${id}` })).toBeUndefined();
    expect(parsePullRequest({ tenantId: 7 })).toBeUndefined();
    expect(parsePullRequest({ tenantIds: [id, "nope"] })).toBeUndefined();
    // Each group of the GUID at its exact length, in hex only (the 'i' flag admits capitals).
    const hex = "0a9f0a9f-0a9f-4a9f-8a9f-0a9f0a9f0a9f";
    expect(parsePullRequest({ tenantId: hex })?.tenantIds).toEqual([hex]);
    expect(parsePullRequest({ tenantId: hex.toUpperCase() })?.tenantIds).toEqual([hex]);
    const groups = hex.split("-");
    for (let g = 0; g < groups.length; g++) {
      const variant = (group: string): string => groups.map((part, i) => (i === g ? group : part)).join("-");
      const part = groups[g] as string;
      expect(parsePullRequest({ tenantId: variant(`${part}a`) }), `group ${g} one longer`).toBeUndefined();
      expect(parsePullRequest({ tenantId: variant(part.slice(1)) }), `group ${g} one shorter`).toBeUndefined();
      expect(parsePullRequest({ tenantId: variant(`g${part.slice(1)}`) }), `group ${g} not hex`).toBeUndefined();
    }
    expect(parsePullRequest({ tenantId: hex.replace(/-/g, "") })).toBeUndefined();
    const max = Array.from({ length: 32 }, guid);
    expect(parsePullRequest({ tenantIds: max })?.tenantIds).toHaveLength(32);
    expect(parsePullRequest({ tenantIds: [...max, guid()] })).toBeUndefined();
  });
});

describe("enqueueConnectedTenants: the timer's fan-out", () => {
  it("sends one message per tenant without pull states, each living 15 minutes", async () => {
    const queue = await azuriteQueue();
    const ids = [guid(), guid(), guid()];
    const log = recordingLogger();
    const count = await enqueueConnectedTenants({ tenants: registry(ids), queue: async () => queue, now: () => T0, tenantsPerMessage: 8 }, log);
    expect(count).toBe(3);
    const sent = await sentMessages(queue);
    expect(sent.map((m) => m.body).sort((a, b) => String(a.tenantId).localeCompare(String(b.tenantId)))).toEqual(
      [...ids].sort().map((tenantId) => ({ tenantId, enqueuedAt: iso(T0) })),
    );
    expect(sent.every((m) => m.ttlSeconds === 900)).toBe(true);
    expect(log.lines).toEqual([{ level: "info", message: "tenant pulls enqueued", fields: { tenants: 3, messages: 3 } }]);
  });

  it("groups quiet tenants up to the group size and sends the others alone", async () => {
    const queue = await azuriteQueue();
    const quiet = Array.from({ length: 5 }, guid);
    const busy = [guid(), guid()];
    const unknown = guid();
    const states = new Map<string, PullState>([...quiet.map((id) => [id, quietState()] as const), ...busy.map((id) => [id, { ...quietState(), consecutiveFailures: 2 }] as const)]);
    const log = recordingLogger();
    const count = await enqueueConnectedTenants(
      { tenants: registry([...quiet, ...busy, unknown]), queue: async () => queue, now: () => T0, pullStates: async () => states, tenantsPerMessage: 2, pageSize: 10 },
      log,
    );
    expect(count).toBe(8);
    const sent = (await sentMessages(queue)).map((m) => m.body);
    const alone = sent.filter((m) => m.tenantId !== undefined).map((m) => m.tenantId as string);
    const groups = sent.filter((m) => m.tenantIds !== undefined).map((m) => m.tenantIds as string[]);
    expect(alone.sort()).toEqual([...busy, unknown, quiet[4]].sort());
    expect(groups.map((g) => g.length)).toEqual([2, 2]);
    expect(groups.flat().sort()).toEqual(quiet.slice(0, 4).sort());
    expect(log.lines.at(-1)).toEqual({ level: "info", message: "tenant pulls enqueued", fields: { tenants: 8, messages: 6 } });
  });

  it("counts a tenant with a full page as busy, and caps a group at 32 tenants", async () => {
    const queue = await azuriteQueue();
    const ids = Array.from({ length: 34 }, guid);
    const states = new Map<string, PullState>(ids.map((id, i) => [id, { ...quietState(), lastAlertCount: i === 0 ? 10 : 9 }]));
    await enqueueConnectedTenants(
      { tenants: registry(ids), queue: async () => queue, now: () => T0, pullStates: async () => states, tenantsPerMessage: 100, pageSize: 10 },
      recordingLogger(),
    );
    const sent = (await sentMessages(queue)).map((m) => m.body);
    // 33 quiet tenants: a group of 32, and the last one in the single-tenant form.
    const alone = sent.filter((m) => m.tenantId !== undefined).map((m) => m.tenantId as string);
    expect(alone).toHaveLength(2);
    expect(alone).toContain(ids[0]);
    expect(sent.filter((m) => m.tenantIds !== undefined).map((m) => (m.tenantIds as string[]).length)).toEqual([32]);
  });

  it("groups every quiet tenant when no page size is given, and none when the group size is one or below", async () => {
    const ids = [guid(), guid(), guid()];
    const states = new Map<string, PullState>(ids.map((id) => [id, { ...quietState(), lastAlertCount: 1_000_000 }]));
    const grouped = await azuriteQueue();
    await enqueueConnectedTenants({ tenants: registry(ids), queue: async () => grouped, now: () => T0, pullStates: async () => states, tenantsPerMessage: 3 }, recordingLogger());
    expect((await sentMessages(grouped)).map((m) => m.body)).toEqual([{ tenantIds: ids, enqueuedAt: iso(T0) }]);
    for (const tenantsPerMessage of [1, 0, undefined]) {
      const single = await azuriteQueue();
      let reads = 0;
      const pullStates = async (): Promise<ReadonlyMap<string, PullState>> => (reads++, states);
      await enqueueConnectedTenants({ tenants: registry(ids), queue: async () => single, now: () => T0, pullStates, tenantsPerMessage }, recordingLogger());
      expect((await sentMessages(single)).every((m) => typeof m.body.tenantId === "string")).toBe(true);
      // Nothing to group: the pull states (a whole-table query) are not read.
      expect(reads).toBe(0);
    }
  });

  it("groups two quiet tenants, the smallest group there is", async () => {
    const queue = await azuriteQueue();
    const ids = [guid(), guid()];
    const states = new Map<string, PullState>(ids.map((id) => [id, quietState()]));
    await enqueueConnectedTenants({ tenants: registry(ids), queue: async () => queue, now: () => T0, pullStates: async () => states, tenantsPerMessage: 2, pageSize: 10 }, recordingLogger());
    expect((await sentMessages(queue)).map((m) => m.body)).toEqual([{ tenantIds: ids, enqueuedAt: iso(T0) }]);
  });

  it("sends a single connected tenant alone without reading the pull states", async () => {
    const queue = await azuriteQueue();
    const id = guid();
    let reads = 0;
    await enqueueConnectedTenants(
      { tenants: registry([id]), queue: async () => queue, now: () => T0, pullStates: async () => (reads++, new Map([[id, quietState()]])), tenantsPerMessage: 4 },
      recordingLogger(),
    );
    expect(reads).toBe(0);
    expect((await sentMessages(queue)).map((m) => m.body)).toEqual([{ tenantId: id, enqueuedAt: iso(T0) }]);
  });

  it("sends every tenant alone, with a warning, when the pull states cannot be read", async () => {
    const queue = await azuriteQueue();
    const ids = [guid(), guid()];
    const log = recordingLogger();
    await enqueueConnectedTenants(
      {
        tenants: registry(ids),
        queue: async () => queue,
        now: () => T0,
        pullStates: async () => {
          throw new Error("table down");
        },
        tenantsPerMessage: 4,
      },
      log,
    );
    expect((await sentMessages(queue)).map((m) => m.body.tenantId).sort()).toEqual([...ids].sort());
    expect(log.lines[0]).toMatchObject({ level: "warn", message: "could not read the pull states to group quiet tenants; one message per tenant this cycle" });
    expect(log.lines[0]?.fields?.detail).toBe("Error");
  });

  it("counts the tenants whose message failed and reports them", async () => {
    const queue = await azuriteQueue();
    const quiet = [guid(), guid()];
    const alone = guid();
    const fine = guid();
    const states = new Map<string, PullState>([...quiet.map((id) => [id, quietState()] as const), [fine, { ...quietState(), consecutiveFailures: 1 }]]);
    const log = recordingLogger();
    const count = await enqueueConnectedTenants(
      { tenants: registry([...quiet, alone, fine]), queue: async () => refusing(queue, new Set([quiet[0] as string, alone])), now: () => T0, pullStates: async () => states, tenantsPerMessage: 2 },
      log,
    );
    expect(count).toBe(1);
    expect((await sentMessages(queue)).map((m) => m.body)).toEqual([{ tenantId: fine, enqueuedAt: iso(T0) }]);
    expect(log.lines).toEqual([
      { level: "error", message: "could not enqueue some tenant pulls", fields: { failed: 3, tenants: 4 } },
      { level: "info", message: "tenant pulls enqueued", fields: { tenants: 1, messages: 3 } },
    ]);
  });

  it("sends a message of its own for a tenant taken out of a group", async () => {
    const queue = await azuriteQueue();
    const id = guid();
    await enqueueAlone(async () => queue, id, "at");
    expect(await sentMessages(queue)).toEqual([{ body: { tenantId: id, enqueuedAt: "at" }, ttlSeconds: 900 }]);
  });
});

describe("PullSlots", () => {
  it("holds 24 slots by default and grants a waiting pull the slot released first", async () => {
    expect(PULL_SLOTS).toBe(24);
    expect(new PullSlots().capacity).toBe(24);
    const slots = new PullSlots(2);
    const first = await slots.acquire(1000);
    const second = await slots.acquire(1000);
    expect(first).toBeTypeOf("function");
    expect(slots.inUse).toBe(2);
    const order: string[] = [];
    const third = slots.acquire(5000).then((release) => (order.push("third"), release));
    const fourth = slots.acquire(5000).then((release) => (order.push("fourth"), release));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(order).toEqual([]);
    first?.();
    first?.();
    const thirdRelease = await third;
    expect(order).toEqual(["third"]);
    expect(slots.inUse).toBe(2);
    second?.();
    const fourthRelease = await fourth;
    expect(order).toEqual(["third", "fourth"]);
    thirdRelease?.();
    fourthRelease?.();
    expect(slots.inUse).toBe(0);
  });

  it("gives up after the wait, leaves the queue, and takes a slot regardless of the count", async () => {
    const slots = new PullSlots(1);
    const held = slots.take();
    const extra = slots.take();
    expect(slots.inUse).toBe(2);
    const started = Date.now();
    expect(await slots.acquire(50)).toBeUndefined();
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    held();
    expect(slots.inUse).toBe(1);
    extra();
    expect(slots.inUse).toBe(0);
    // The timed-out waiter is gone: a later acquire is not queued behind it.
    const next = await slots.acquire(10);
    expect(next).toBeTypeOf("function");
    expect(slots.inUse).toBe(1);
  });

  it("queues a new pull behind those already waiting even when a slot is free", async () => {
    const slots = new PullSlots(1);
    const held = await slots.acquire(1000);
    const waiting = slots.acquire(1000);
    held?.();
    // Released synchronously to the waiter: the slot is taken again before anyone else asks.
    expect(slots.inUse).toBe(1);
    expect(await slots.acquire(20)).toBeUndefined();
    (await waiting)?.();
    expect(slots.inUse).toBe(0);
  });
});

type Run = { tenantId: string; owner?: string; waitedMs?: number };

function scriptedPull(outcomes: Record<string, PullOutcome | Error>, slots?: PullSlots, gate?: Promise<void>) {
  const runs: Run[] = [];
  const inUse: number[] = [];
  return {
    runs,
    inUse,
    tenantPull: {
      async run(tenantId: string, _log: Logger, owner?: string, waitedMs?: number): Promise<PullOutcome> {
        runs.push({ tenantId, owner, waitedMs });
        if (slots) inUse.push(slots.inUse);
        if (gate) await gate;
        const outcome = outcomes[tenantId] ?? ({ outcome: "succeeded" } as unknown as PullOutcome);
        if (outcome instanceof Error) throw outcome;
        return outcome;
      },
    },
  };
}

const failed = (code: string): PullOutcome => ({ outcome: "failed", code }) as unknown as PullOutcome;

describe("runPullRequest", () => {
  it("runs one tenant in a slot and throws only for an unexpected failure", async () => {
    const slots = new PullSlots(1);
    const id = guid();
    const queue = await azuriteQueue();
    const pull = scriptedPull({ [id]: failed("pull_failed") }, slots);
    const error = await runPullRequest({ tenantIds: [id], enqueuedAt: "" }, { tenantPull: pull.tenantPull, queue: async () => queue, now: () => T0, slots }, recordingLogger(), "inv-1").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnexpectedPullFailure);
    expect((error as Error).name).toBe("UnexpectedPullFailure");
    expect((error as Error).message).toBe(`pull of tenant ${id} failed unexpectedly`);
    expect(pull.runs).toEqual([{ tenantId: id, owner: "inv-1", waitedMs: undefined }]);
    expect(pull.inUse).toEqual([1]);
    expect(slots.inUse).toBe(0);
    for (const outcome of [failed("reconsent_required"), { outcome: "succeeded", code: "pull_failed" } as unknown as PullOutcome]) {
      const again = scriptedPull({ [id]: outcome }, slots);
      await runPullRequest({ tenantIds: [id], enqueuedAt: "" }, { tenantPull: again.tenantPull, queue: async () => queue, now: () => T0, slots }, recordingLogger(), "inv-2");
      expect(slots.inUse).toBe(0);
    }
    expect(await sentMessages(queue)).toEqual([]);
  });

  it("releases the slot when a lone pull throws", async () => {
    const slots = new PullSlots(1);
    const id = guid();
    const pull = scriptedPull({ [id]: new Error("boom") });
    await expect(runPullRequest({ tenantIds: [id], enqueuedAt: "" }, { tenantPull: pull.tenantPull, queue: async () => azuriteQueue(), now: () => T0, slots }, recordingLogger(), "i")).rejects.toThrow("boom");
    expect(slots.inUse).toBe(0);
  });

  it("pulls a group side by side and sends the unexpected failures and throws again alone", async () => {
    const [ok, bad, thrown, expected] = [guid(), guid(), guid(), guid()];
    const queue = await azuriteQueue();
    const slots = new PullSlots(4);
    const pull = scriptedPull({ [bad]: failed("pull_failed"), [thrown]: new Error("kaput"), [expected]: failed("budget_exhausted") }, slots);
    const log = recordingLogger();
    await runPullRequest({ tenantIds: [ok, bad, thrown, expected], enqueuedAt: "" }, { tenantPull: pull.tenantPull, queue: async () => queue, now: () => T0 + 5, slots }, log, "inv");
    expect(pull.runs.map((r) => r.tenantId)).toEqual([ok, bad, thrown, expected]);
    expect(pull.runs.every((r) => r.owner === "inv" && typeof r.waitedMs === "number" && r.waitedMs >= 0 && r.waitedMs < 1000)).toBe(true);
    expect(slots.inUse).toBe(0);
    const sent = await sentMessages(queue);
    expect(sent.map((m) => m.body).sort((a, b) => String(a.tenantId).localeCompare(String(b.tenantId)))).toEqual(
      [bad, thrown].sort().map((tenantId) => ({ tenantId, enqueuedAt: iso(T0 + 5) })),
    );
    expect(log.lines).toContainEqual({ level: "error", message: "tenant pull threw in a group; it is sent again on its own", fields: { tenantId: thrown, detail: "Error" } });
    expect(log.lines).toContainEqual({ level: "warn", message: "tenants whose pull failed unexpectedly in a group were sent again on their own", fields: { tenants: 2 } });
    expect(log.lines.some((l) => l.message.includes("no free pull slot"))).toBe(false);
  });

  it("completes a group whose pulls all ended as expected without a word", async () => {
    const queue = await azuriteQueue();
    const ids = [guid(), guid()];
    const pull = scriptedPull({ [ids[0] as string]: failed("reconsent_required") });
    const log = recordingLogger();
    await runPullRequest({ tenantIds: ids, enqueuedAt: "" }, { tenantPull: pull.tenantPull, queue: async () => queue, now: () => T0, slots: new PullSlots(4) }, log, "i");
    expect(log.lines).toEqual([]);
    expect(await sentMessages(queue)).toEqual([]);
  });

  it("waits the slot wait for a slot, then sends the tenant again alone; by default it waits a minute", async () => {
    expect(SLOT_WAIT_MS).toBe(60_000);
    const queue = await azuriteQueue();
    const slots = new PullSlots(1);
    const ids = [guid(), guid()];
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const pull = scriptedPull({}, slots, gate);
    const log = recordingLogger();
    const started = Date.now();
    const running = runPullRequest({ tenantIds: ids, enqueuedAt: "" }, { tenantPull: pull.tenantPull, queue: async () => queue, now: () => T0, slots, slotWaitMs: 60 }, log, "i");
    await new Promise((resolve) => setTimeout(resolve, 120));
    open();
    await running;
    expect(Date.now() - started).toBeGreaterThanOrEqual(60);
    expect(pull.runs.map((r) => r.tenantId)).toEqual([ids[0]]);
    expect((await sentMessages(queue)).map((m) => m.body)).toEqual([{ tenantId: ids[1], enqueuedAt: iso(T0) }]);
    expect(log.lines).toEqual([{ level: "warn", message: "tenants of a group found no free pull slot and were sent again on their own", fields: { tenants: 1 } }]);
  });

  it("reports the time a tenant waited for its slot to the pull", async () => {
    const slots = new PullSlots(1);
    const ids = [guid(), guid()];
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const pull = scriptedPull({}, slots, gate);
    const running = runPullRequest({ tenantIds: ids, enqueuedAt: "" }, { tenantPull: pull.tenantPull, queue: async () => azuriteQueue(), now: () => T0, slots, slotWaitMs: 5000 }, recordingLogger(), "i");
    await new Promise((resolve) => setTimeout(resolve, 80));
    open();
    await running;
    expect(pull.runs[0]?.waitedMs).toBeLessThan(40);
    expect(pull.runs[1]?.waitedMs).toBeGreaterThanOrEqual(70);
  });

  it("throws for the tenants it could not send again", async () => {
    const queue = await azuriteQueue();
    const [bad, refused] = [guid(), guid()];
    const pull = scriptedPull({ [bad]: failed("pull_failed"), [refused]: failed("pull_failed") });
    const error = await runPullRequest(
      { tenantIds: [bad, refused], enqueuedAt: "" },
      { tenantPull: pull.tenantPull, queue: async () => refusing(queue, new Set([refused])), now: () => T0, slots: new PullSlots(4) },
      recordingLogger(),
      "i",
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnexpectedPullFailure);
    expect((error as Error).message).toBe(`pull of tenant ${refused} failed unexpectedly`);
    expect((await sentMessages(queue)).map((m) => m.body.tenantId)).toEqual([bad]);
    const both = await runPullRequest(
      { tenantIds: [bad, refused], enqueuedAt: "" },
      { tenantPull: pull.tenantPull, queue: async () => refusing(queue, new Set([bad, refused])), now: () => T0, slots: new PullSlots(4) },
      recordingLogger(),
      "i",
    ).catch((e: unknown) => e);
    expect((both as Error).message).toBe(`pull of tenant ${bad}, ${refused} failed unexpectedly`);
  });
});

describe("runPoisonedRequest", () => {
  it("records a lone tenant as poisoned without sending it again", async () => {
    const queue = await azuriteQueue();
    const id = guid();
    const recorded: string[] = [];
    const log = recordingLogger();
    await runPoisonedRequest({ tenantIds: [id], enqueuedAt: "" }, { queue: async () => queue, now: () => T0, recordPoisoned: async (t) => void recorded.push(t) }, log);
    expect(recorded).toEqual([id]);
    expect(log.lines).toEqual([]);
    expect(await sentMessages(queue)).toEqual([]);
  });

  it("splits a group into messages of their own, and poisons only the tenants it could not send", async () => {
    const queue = await azuriteQueue();
    const [a, b, c] = [guid(), guid(), guid()];
    const recorded: string[] = [];
    const log = recordingLogger();
    await runPoisonedRequest(
      { tenantIds: [a, b, c], enqueuedAt: "" },
      { queue: async () => refusing(queue, new Set([b])), now: () => T0 + 1, recordPoisoned: async (t) => void recorded.push(t) },
      log,
    );
    expect((await sentMessages(queue)).map((m) => m.body).sort((x, y) => String(x.tenantId).localeCompare(String(y.tenantId)))).toEqual(
      [a, c].sort().map((tenantId) => ({ tenantId, enqueuedAt: iso(T0 + 1) })),
    );
    expect(recorded).toEqual([b]);
    expect(log.lines).toEqual([
      { level: "warn", message: "a group of tenant pulls failed repeatedly; its tenants were sent again one per message", fields: { tenants: 2 } },
      { level: "error", message: "tenant pull failed repeatedly and was moved to the poison queue", fields: { tenantId: b } },
    ]);
  });

  it("names the tenant in the poison report", () => {
    const log = recordingLogger();
    reportPoisoned(log, "t-1");
    expect(log.lines).toEqual([{ level: "error", message: "tenant pull failed repeatedly and was moved to the poison queue", fields: { tenantId: "t-1" } }]);
  });
});

/** A pull-history table of this test's own in the run's Azurite. */
function historyTables(): TableFactory {
  const inner = createTableFactory({ kind: "connectionString", connectionString: inject("storageConnectionString") }, noCredential);
  const name = `PullHist${randomBytes(6).toString("hex")}`;
  return { open: () => inner.open(name) };
}

describe("PullHistoryStore", () => {
  it("keeps what an operator reads of a run, newest first, and only the app's own error codes", async () => {
    const store = new PullHistoryStore({ tables: historyTables(), clock: () => T0, timeoutMs: 5000 });
    const tenant = guid();
    await store.record(tenant, { at: iso(T0 - 3000), outcome: "succeeded", alerts: 4.7, durationMs: 12.6 });
    await store.record(tenant, { at: iso(T0 - 2000), outcome: "failed", alerts: -3, durationMs: -5, errorCode: "token_refresh_failed" });
    await store.record(tenant, { at: iso(T0 - 1000), outcome: "partial", alerts: 2, durationMs: 7, errorCode: "Bearer eyJ secret" });
    await store.record(tenant, { at: iso(T0), outcome: "busy", alerts: 0, durationMs: 1, errorCode: "" });
    await store.record(guid(), { at: iso(T0), outcome: "succeeded", alerts: 9, durationMs: 1 });
    expect(await store.recent(tenant)).toEqual([
      { at: iso(T0), outcome: "busy", alerts: 0, durationMs: 1 },
      { at: iso(T0 - 1000), outcome: "partial", alerts: 2, durationMs: 7, errorCode: "other" },
      { at: iso(T0 - 2000), outcome: "failed", alerts: 0, durationMs: 0, errorCode: "token_refresh_failed" },
      { at: iso(T0 - 3000), outcome: "succeeded", alerts: 4, durationMs: 13 },
    ]);
    expect(await store.recent(tenant, 2)).toHaveLength(2);
    expect(await store.recent(tenant, 0)).toHaveLength(1);
    expect(await store.alertsSince(tenant, T0 - 2000)).toBe(2);
    expect(await store.alertsSince(tenant, T0 - 2001)).toBe(2);
    expect(await store.alertsSince(tenant, T0 - 3000)).toBe(6);
    expect(await store.alertsSince(tenant, T0 + 1)).toBe(0);
  });

  it("accepts a code of 64 characters of its alphabet, and no longer one", async () => {
    const store = new PullHistoryStore({ tables: historyTables(), clock: () => T0, timeoutMs: 5000 });
    const tenant = guid();
    const code = `aZ09_.:-${"x".repeat(56)}`;
    await store.record(tenant, { at: iso(T0 - 1), outcome: "failed", alerts: 0, durationMs: 0, errorCode: code });
    await store.record(tenant, { at: iso(T0), outcome: "failed", alerts: 0, durationMs: 0, errorCode: `${code}y` });
    expect((await store.recent(tenant)).map((r) => r.errorCode)).toEqual(["other", code]);
  });

  it("files a run with an unreadable start at the clock's time and skips rows it cannot read", async () => {
    const tables = historyTables();
    const store = new PullHistoryStore({ tables, clock: () => T0, timeoutMs: 5000 });
    const tenant = guid();
    await store.record(tenant, { at: iso(T0 - 5000), outcome: "succeeded", alerts: 1, durationMs: 1 });
    await store.record(tenant, { at: "not a time", outcome: "succeeded", alerts: 3, durationMs: 1 });
    const table = await tables.open("x");
    await table.createEntity({ partitionKey: tenant, rowKey: "0", at: iso(T0), outcome: "exploded" });
    await table.createEntity({ partitionKey: tenant, rowKey: "00", at: 5, outcome: "succeeded" });
    await table.createEntity({ partitionKey: tenant, rowKey: "000", at: iso(T0), outcome: 1 });
    await table.createEntity({ partitionKey: tenant, rowKey: "0000", at: iso(T0), outcome: "succeeded", alerts: "7", durationMs: "9", errorCode: 4 });
    const recent = await store.recent(tenant);
    expect(recent).toEqual([
      { at: iso(T0), outcome: "succeeded", alerts: 0, durationMs: 0 },
      { at: "not a time", outcome: "succeeded", alerts: 3, durationMs: 1 },
      { at: iso(T0 - 5000), outcome: "succeeded", alerts: 1, durationMs: 1 },
    ]);
    expect(await store.alertsSince(tenant, T0 - 1)).toBe(3);
  });

  it("prunes rows beyond the newest 50 that are older than 25 hours, at most hourly per tenant", async () => {
    expect([PULL_HISTORY_KEEP_ROWS, PULL_HISTORY_KEEP_MS, PULL_HISTORY_PRUNE_EVERY_MS]).toEqual([50, 25 * 3600_000, 3600_000]);
    const tables = historyTables();
    let now = T0;
    const store = new PullHistoryStore({ tables, clock: () => now, timeoutMs: 5000 });
    const tenant = guid();
    const old = T0 - 26 * 3600_000;
    // 54 old runs a second apart (the first prunes; the others fall within its hour).
    for (let i = 0; i < 54; i++) await store.record(tenant, { at: iso(old + i * 1000), outcome: "succeeded", alerts: 1, durationMs: 1 });
    expect(await store.recent(tenant, 100)).toHaveLength(54);
    // A run more than an hour after the last prune prunes: the oldest 5 of 55 rows go, the newest 50 stay.
    await store.record(tenant, { at: iso(T0 - 3600_000 + 1), outcome: "succeeded", alerts: 1, durationMs: 1 });
    const kept = await store.recent(tenant, 100);
    expect(kept).toHaveLength(50);
    expect(kept.at(-1)?.at).toBe(iso(old + 5000));
    // A run within the hour of that prune does not prune again.
    await store.record(tenant, { at: iso(T0 - 3600_000 + 2), outcome: "succeeded", alerts: 1, durationMs: 1 });
    expect(await store.recent(tenant, 100)).toHaveLength(51);
    // Rows younger than 25 hours stay however many there are.
    now = old + 25 * 3600_000 - 10_000;
    await store.record(tenant, { at: iso(T0 + 3600_000), outcome: "succeeded", alerts: 1, durationMs: 1 });
    expect(await store.recent(tenant, 100)).toHaveLength(52);
    // Exactly an hour after the last prune it prunes again.
    now = T0 + 2 * 3600_000;
    await store.record(tenant, { at: iso(T0 + 2 * 3600_000), outcome: "succeeded", alerts: 1, durationMs: 1 });
    expect(await store.recent(tenant, 100)).toHaveLength(50);
  });

  it("prunes each tenant on its own schedule", async () => {
    const tables = historyTables();
    const store = new PullHistoryStore({ tables, clock: () => T0, timeoutMs: 5000 });
    const [a, b] = [guid(), guid()];
    const old = T0 - 30 * 3600_000;
    const table = await tables.open("x");
    for (const tenant of [a, b]) {
      for (let i = 0; i < 52; i++) {
        await table.createEntity({ partitionKey: tenant, rowKey: String(9_999_999_999_999 - (old + i)).padStart(13, "0"), at: iso(old + i), outcome: "succeeded", alerts: 1, durationMs: 1 });
      }
    }
    await store.record(a, { at: iso(T0), outcome: "succeeded", alerts: 1, durationMs: 1 });
    await store.record(b, { at: iso(T0), outcome: "succeeded", alerts: 1, durationMs: 1 });
    expect(await store.recent(a, 100)).toHaveLength(50);
    expect(await store.recent(b, 100)).toHaveLength(50);
  });
});

describe("PullHistoryStore at the edges", () => {
  it("keeps runs newest first past the year 2255, where the inverted time needs its padding", async () => {
    const store = new PullHistoryStore({ tables: historyTables(), clock: () => T0, timeoutMs: 5000 });
    const tenant = guid();
    await store.record(tenant, { at: "2260-01-01T00:00:00.000Z", outcome: "succeeded", alerts: 1, durationMs: 1 });
    await store.record(tenant, { at: "2250-01-01T00:00:00.000Z", outcome: "failed", alerts: 0, durationMs: 1 });
    expect((await store.recent(tenant)).map((run) => run.at)).toEqual(["2260-01-01T00:00:00.000Z", "2250-01-01T00:00:00.000Z"]);
  });

  it("deletes more than one transaction's worth of stale rows (over 100) in one prune", async () => {
    const tables = historyTables();
    const store = new PullHistoryStore({ tables, clock: () => T0, timeoutMs: 5000 });
    const tenant = guid();
    const old = T0 - 30 * 3600_000;
    const table = await tables.open("x");
    const rows = Array.from({ length: 170 }, (_, i) => ({
      partitionKey: tenant,
      rowKey: String(9_999_999_999_999 - (old + i)).padStart(13, "0"),
      at: iso(old + i),
      outcome: "succeeded",
      alerts: 1,
      durationMs: 1,
    }));
    for (let i = 0; i < rows.length; i += 100) await table.submitTransaction(rows.slice(i, i + 100).map((row) => ["create", row]));
    await store.record(tenant, { at: iso(T0), outcome: "succeeded", alerts: 1, durationMs: 1 });
    const kept = await store.recent(tenant, 500);
    expect(kept).toHaveLength(50);
    expect(kept[0]?.at).toBe(iso(T0));
    expect(kept.at(-1)?.at).toBe(iso(old + 121));
  });

  it("abandons a call that storage never answers after the store's own timeout", async () => {
    // A Table endpoint that accepts connections and never answers; the client has no timeout of its own.
    const sockets: Socket[] = [];
    const server = createNetServer((socket) => {
      sockets.push(socket);
      socket.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const port = (server.address() as { port: number }).port;
      const client = TableClient.fromConnectionString(
        `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};TableEndpoint=http://127.0.0.1:${port}/${AZURITE_ACCOUNT};`,
        "PullHistory",
        { allowInsecureConnection: true, retryOptions: { maxRetries: 0 } },
      );
      const store = new PullHistoryStore({ tables: { open: () => Promise.resolve(client) }, clock: () => T0, timeoutMs: 300 });
      const tenant = guid();
      for (const call of [
        () => store.record(tenant, { at: iso(T0), outcome: "succeeded", alerts: 1, durationMs: 1 }),
        () => store.recent(tenant),
        () => store.alertsSince(tenant, T0 - 1000),
      ]) {
        const started = Date.now();
        await expect(call()).rejects.toThrow();
        expect(Date.now() - started).toBeLessThan(5_000);
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  }, 20_000);
});

describe("pull health as GET /api/tenants shows it", () => {
  it("shows nothing but zeros and nulls before a first pull", () => {
    expect(pullHealthOf(undefined, () => T0)).toEqual({
      lastPullAt: null,
      lastSuccessfulPullAt: null,
      alertsInLastPull: null,
      checkpoint: null,
      catchingUp: false,
      catchingUpPosition: null,
      refreshTokenAgeHours: null,
      consecutiveFailures: 0,
      lastPullErrorCode: null,
      lastPullErrorMessage: null,
      clockSkewSeconds: null,
      deadLetters: 0,
      lastDeadLetterReason: null,
      sinks: null,
      warnings: [],
    });
    expect(pullHealthOf(emptyState(), () => T0).sinks).toBeNull();
    expect(pullHealthOf({ ...emptyState(), sinks: {} }, () => T0).sinks).toBeNull();
  });

  it("shows the state's fields, the token's age in tenths of an hour and each sink's progress", () => {
    const state: PullState = {
      ...emptyState(),
      lastRunAt: iso(T0 - 1000),
      lastSuccessAt: iso(T0 - 2000),
      lastAlertCount: 7,
      watermark: iso(T0 - 60_000),
      window: { from: iso(T0 - 60_000), to: iso(T0), position: iso(T0 - 30_000), nextEnd: iso(T0 - 20_000) },
      refreshTokenObtainedAt: T0 - 5.25 * 3600_000,
      consecutiveFailures: 2,
      lastErrorCode: "transient",
      lastErrorMessage: "it broke",
      clockSkewMs: 2600,
      deadLetters: 1,
      lastDeadLetterReason: "missing_id",
      sinks: {
        blob: { parkedFrom: 0, parkedTo: 0, lastDeliveryAt: iso(T0) },
        splunk: { parkedFrom: 2, parkedTo: 5, behindSince: iso(T0 - 9000), lastErrorAt: iso(T0 - 1), lastErrorCode: "sink_unavailable", lastErrorMessage: "down" },
      },
    };
    const health = pullHealthOf(state, () => T0);
    expect(health).toMatchObject({
      lastPullAt: iso(T0 - 1000),
      lastSuccessfulPullAt: iso(T0 - 2000),
      alertsInLastPull: 7,
      checkpoint: iso(T0 - 60_000),
      catchingUp: true,
      catchingUpPosition: iso(T0 - 30_000),
      refreshTokenAgeHours: 5.3,
      consecutiveFailures: 2,
      lastPullErrorCode: "transient",
      lastPullErrorMessage: "it broke",
      clockSkewSeconds: 3,
      deadLetters: 1,
      lastDeadLetterReason: "missing_id",
    });
    expect(health.sinks).toEqual({
      blob: { parkedPages: 0, behindSince: null, lastDeliveryAt: iso(T0), lastErrorCode: null, lastErrorMessage: null, lastErrorAt: null },
      splunk: { parkedPages: 3, behindSince: iso(T0 - 9000), lastDeliveryAt: null, lastErrorCode: "sink_unavailable", lastErrorMessage: "down", lastErrorAt: iso(T0 - 1) },
    });
    expect(health.warnings).toEqual([
      {
        code: "sink_behind",
        message: `Sink splunk is 3 page(s) behind since ${iso(T0 - 9000)} (last error: sink_unavailable); the other sinks are unaffected and it catches up when it answers again`,
        at: iso(T0 - 9000),
      },
    ]);
    expect(pullHealthOf({ ...emptyState(), sinks: { s: { parkedFrom: 1, parkedTo: 2 } } }, () => T0).warnings).toEqual([
      { code: "sink_behind", message: "Sink s is 1 page(s) behind since an earlier run (last error: none); the other sinks are unaffected and it catches up when it answers again", at: null },
    ]);
  });

  it("words each warning for the operator", () => {
    const base = { ...emptyState(), lastRunAt: iso(T0 - 5) };
    expect(pullHealthOf({ ...base, clockSkewMs: -61_000 }, () => T0).warnings).toEqual([
      { code: "clock_skew", message: "This host's clock is 61 s ahead of the Defender API's; windows end by the API's clock", at: iso(T0 - 5) },
    ]);
    expect(pullHealthOf({ ...emptyState(), clockSkewMs: 90_400 }, () => T0).warnings).toEqual([
      { code: "clock_skew", message: "This host's clock is 90 s behind the Defender API's; windows end by the API's clock", at: null },
    ]);
    expect(pullHealthOf({ ...base, clockSkewMs: 60_000 }, () => T0).warnings).toEqual([]);
    expect(pullHealthOf({ ...base, clockSkewMs: -60_000 }, () => T0).warnings).toEqual([]);
    expect(pullHealthOf({ ...base, deadLetters: 3, lastDeadLetterAt: iso(T0 - 1) }, () => T0).warnings).toEqual([
      {
        code: "dead_letters",
        message: "3 item(s) the pipeline could not accept are in the dead-letter container (last: unknown); list them with GET /api/tenants/{tenantId}/dead-letters",
        at: iso(T0 - 1),
      },
    ]);
    expect(pullHealthOf({ ...base, deadLetters: 0, lastDeadLetterAt: iso(T0 - 1) }, () => T0).warnings).toEqual([]);
    expect(pullHealthOf({ ...base, deadLetters: 2 }, () => T0).warnings).toEqual([]);
    const incidents = { leaseLost: 2, lastLeaseLostAt: iso(T0 - 10), releaseFailed: 1, lastReleaseFailedAt: iso(T0 - 20) };
    expect(pullHealthOf({ ...base, incidents }, () => T0).warnings).toEqual([
      { code: "lease_lost", message: "A pull lost its lease to another pull of this tenant 2 time(s); the other pull carried on", at: iso(T0 - 10) },
      { code: "lease_release_failed", message: "A pull could not release its lease 1 time(s); the tenant waited for the lease to lapse", at: iso(T0 - 20) },
    ]);
    expect(pullHealthOf({ ...base, incidents: { ...incidents, leaseLost: 0, releaseFailed: 0 } }, () => T0).warnings).toEqual([]);
    expect(pullHealthOf({ ...base, incidents: { leaseLost: 1, releaseFailed: 1 } }, () => T0).warnings).toEqual([]);
    expect(pullHealthOf({ ...base, lastWarningCode: "unstable_order", lastWarningAt: iso(T0 - 24 * 3600_000 + 1) }, () => T0).warnings).toEqual([
      { code: "unstable_order", message: "", at: iso(T0 - 24 * 3600_000 + 1) },
    ]);
    expect(pullHealthOf({ ...base, lastWarningCode: "unstable_order", lastWarningAt: iso(T0 - 24 * 3600_000) }, () => T0).warnings).toEqual([]);
    expect(pullHealthOf({ ...base, lastWarningCode: "", lastWarningAt: iso(T0) }, () => T0).warnings).toEqual([]);
  });

  it("flags a consent by another user for 30 days, and decorates each tenant with its health", async () => {
    const tenant: TenantRecord = {
      tenantId: guid(),
      displayName: "Contoso",
      status: "connected",
      consentedBy: "eve@contoso.example",
      previousConsentedBy: "alice@contoso.example",
      consenterChangedAt: iso(T0 - 1000),
      createdAt: iso(T0),
      updatedAt: iso(T0),
    };
    const warning = {
      code: "consenter_changed",
      message: `The consent was last given by eve@contoso.example, not by alice@contoso.example who consented before; confirm the change with the customer (GET /api/audit?tenantId=${tenant.tenantId})`,
      at: iso(T0 - 1000),
    };
    expect(consenterWarning(tenant, T0)).toEqual(warning);
    expect(consenterWarning(tenant, T0 - 1000 + 30 * 24 * 3600_000 - 1)).toBeDefined();
    expect(consenterWarning(tenant, T0 - 1000 + 30 * 24 * 3600_000)).toBeUndefined();
    expect(consenterWarning({ ...tenant, consenterChangedAt: undefined }, T0)).toBeUndefined();
    expect(consenterWarning({ ...tenant, consentedBy: undefined, previousConsentedBy: "" }, T0)?.message).toBe(
      `The consent was last given by another user, not by the user who consented before; confirm the change with the customer (GET /api/audit?tenantId=${tenant.tenantId})`,
    );
    const other: TenantRecord = { ...tenant, tenantId: guid(), consenterChangedAt: undefined };
    const store = { readAll: async () => new Map([[tenant.tenantId, { ...emptyState(), lastAlertCount: 4 }]]) } as unknown as PullStateStore;
    const views = await pullHealthDecorator(store, () => T0)([tenant, other]);
    expect(views.get(tenant.tenantId)).toEqual({ health: { ...pullHealthOf({ ...emptyState(), lastAlertCount: 4 }, () => T0), warnings: [warning] } });
    expect(views.get(other.tenantId)).toEqual({ health: pullHealthOf(undefined, () => T0) });
  });
});

describe("health levels and severities for notifications", () => {
  it("degrades after three failures or a sink fifteen minutes behind; re-consent comes first", () => {
    expect([DEGRADED_AFTER_FAILURES, DEGRADED_AFTER_SINK_BEHIND_MS, NOTABLE_LIST_LIMIT]).toEqual([3, 15 * 60_000, 20]);
    expect(healthLevel({ reconsentRequired: false, consecutiveFailures: 2 })).toBe("healthy");
    expect(healthLevel({ reconsentRequired: false, consecutiveFailures: 3 })).toBe("degraded");
    expect(healthLevel({ reconsentRequired: true, consecutiveFailures: 0, sinkBehindMs: 10 ** 9 })).toBe("reconsent_required");
    expect(healthLevel({ reconsentRequired: false, consecutiveFailures: 0, sinkBehindMs: 15 * 60_000 - 1 })).toBe("healthy");
    expect(healthLevel({ reconsentRequired: false, consecutiveFailures: 0, sinkBehindMs: 15 * 60_000 })).toBe("degraded");
  });

  it("ranks severities case-insensitively, unknown ones lowest", () => {
    expect(["informational", "LOW", "Medium", "high"].map(severityRank)).toEqual([0, 1, 2, 3]);
    expect(severityRank("UnSpecified")).toBe(-1);
    expect(severityRank(3)).toBe(-1);
  });
});

describe("the dedupe set in the pull-state row", () => {
  const versions = (count: number, start = 0): DeliveredVersions => new Map(Array.from({ length: count }, (_, i) => [versionHash({ id: `alert-${start + i}`, updatedAtKey: "k" }), 1_700_000_000 + i]));

  it("round-trips through the row's properties, always writing all fifteen", () => {
    const set = versions(3);
    const encoded = encodeDelivered(set);
    expect(Object.keys(encoded ?? {})).toEqual(["delivered", ...Array.from({ length: 14 }, (_, i) => `delivered${i + 1}`)]);
    expect(encoded?.delivered).toBe([...set].map(([h, at]) => `${h}:${at.toString(36)};`).join(""));
    expect(encoded?.delivered1).toBe("");
    expect([...decodeDelivered(encoded ?? {})].sort()).toEqual([...set].sort());
    expect(encodeDelivered(new Map())).toMatchObject({ delivered: "", delivered14: "" });
  });

  it("splits at 30,000 characters per property, and gives up beyond fifteen properties", () => {
    // Each entry: 16-character hash, ':', 6 base-36 digits, ';' = 24 characters; 1,250 fill a property exactly.
    const exact = versions(1250);
    const one = encodeDelivered(exact);
    expect(one?.delivered).toHaveLength(30_000);
    expect(one?.delivered1).toBe("");
    const two = encodeDelivered(versions(1251));
    expect(two?.delivered).toHaveLength(30_000);
    expect(two?.delivered1).toHaveLength(24);
    expect([...decodeDelivered(two ?? {})]).toHaveLength(1251);
    expect(encodeDelivered(versions(1250 * 15))?.delivered14).toHaveLength(30_000);
    expect(encodeDelivered(versions(1250 * 15 + 1))).toBeUndefined();
    const whole = encodeDelivered(versions(1250 * 15 + 1), { unbounded: true });
    expect(Object.keys(whole ?? {})).toEqual(["delivered"]);
    expect(decodeDelivered(whole ?? {}).size).toBe(1250 * 15 + 1);
  });

  it("reads every property and skips what is not an entry", () => {
    const decoded = decodeDelivered({ delivered: "a:z;:5;b;c:10", delivered7: "d:1", delivered14: "e:2;", delivered15: "f:3;", delivered3: 5 });
    expect([...decoded].sort()).toEqual([
      ["a", 35],
      ["c", 36],
      ["d", 1],
      ["e", 2],
    ]);
  });
});

describe("the dedupe spill blobs", () => {
  it("writes, reads, removes one and removes a tenant's all, and reads an absent one as none", async () => {
    const service = BlobServiceClient.fromConnectionString(inject("storageConnectionString"));
    const container = service.getContainerClient(`pullmut-${randomBytes(6).toString("hex")}`);
    const spill = blobDedupeSpill(container);
    const signal = AbortSignal.timeout(10_000);
    await spill.removeAll("t1", signal);
    expect(await container.exists()).toBe(false);
    await spill.write("t1", "t1/a.versions", "héllo", signal);
    await spill.write("t1", "t1/b.versions", "b", signal);
    await spill.write("t2", "t2/a.versions", "c", signal);
    expect(await spill.read("t1/a.versions", signal)).toBe("héllo");
    expect(await spill.read("t1/none.versions", signal)).toBeUndefined();
    await spill.remove("t1/b.versions", signal);
    await spill.remove("t1/b.versions", signal);
    expect(await spill.read("t1/b.versions", signal)).toBeUndefined();
    await spill.write("t1", "t1/c.versions", "c", signal);
    await spill.removeAll("t1", signal);
    expect(await spill.read("t1/a.versions", signal)).toBeUndefined();
    expect(await spill.read("t1/c.versions", signal)).toBeUndefined();
    expect(await spill.read("t2/a.versions", signal)).toBe("c");
    await expect(spill.read("t1/a.versions", AbortSignal.abort())).rejects.toThrow();
  });
});


describe("PullStateStore: a row this process wrote last", () => {
  it("is claimed at open by one conditional write, with no read, and carries what the pull wrote", async () => {
    let now = T0;
    const calls: string[] = [];
    const { store, otherInstance } = stateStore(() => now, (client) => recordingCalls(client, calls));
    const tenant = guid();
    const first = (await store.acquire(tenant, "first", LEASE_MS))!;
    first.state.watermark = iso(T0);
    first.state.delivered.set("v1", 100);
    first.markDeliveredChanged();
    await first.release();
    calls.length = 0;
    now += 5 * 60_000;
    const next = (await store.open(tenant, "next", LEASE_MS, (state) => {
      state.window = { from: iso(T0), to: iso(now), position: iso(T0), nextEnd: iso(now) };
    }))!;
    expect(calls).toEqual(["updateEntity"]);
    expect(next.openedFromMemory).toBe(true);
    expect(next.state.watermark).toBe(iso(T0));
    expect([...next.state.delivered]).toEqual([["v1", 100]]);
    // Stored before open returned: the lease, and the window prepare opened.
    expect(await otherInstance.read(tenant)).toMatchObject({ leaseOwner: "next", leaseUntil: now + LEASE_MS, window: { from: iso(T0), to: iso(now) } });
    await next.claim();
    await next.release();
    expect(calls).toEqual(["updateEntity", "updateEntity"]);
    // A store with nothing remembered reads, and writes nothing until the claim.
    calls.length = 0;
    const lazy = (await otherInstance.open(tenant, "lazy", LEASE_MS))!;
    expect(lazy.openedFromMemory).toBe(false);
    expect(lazy.state.watermark).toBe(iso(T0));
  });

  it("is read again when another instance wrote it since: that instance's state, and its lease, win", async () => {
    let now = T0;
    const calls: string[] = [];
    const { store, otherInstance } = stateStore(() => now, (client) => recordingCalls(client, calls));
    const tenant = guid();
    await (await store.acquire(tenant, "mine", LEASE_MS))!.release();
    const other = (await otherInstance.acquire(tenant, "other", LEASE_MS))!;
    other.state.watermark = iso(T0 + 1000);
    await other.save();
    calls.length = 0;
    // Held by the other instance: the remembered row's claim is refused and nothing of ours is stored.
    expect(await store.open(tenant, "mine-again", LEASE_MS)).toBeUndefined();
    // A stale row costs one refused write more than a read.
    expect(calls).toEqual(["updateEntity", "getEntity"]);
    expect(await otherInstance.read(tenant)).toMatchObject({ leaseOwner: "other", watermark: iso(T0 + 1000) });
    await other.release();
    now += 1000;
    const mine = (await store.open(tenant, "mine-again", LEASE_MS))!;
    expect(mine.openedFromMemory).toBe(false);
    expect(mine.state.watermark).toBe(iso(T0 + 1000));
    await mine.claim();
    // Remembered again from that write on.
    calls.length = 0;
    await mine.release();
    expect((await store.open(tenant, "third", LEASE_MS))?.openedFromMemory).toBe(true);
    expect(calls).toEqual(["updateEntity", "updateEntity"]);
  });

  it("is never claimed while its own lease runs, in this process or after it lapsed", async () => {
    let now = T0;
    const { store, otherInstance } = stateStore(() => now);
    const tenant = guid();
    const running = (await store.acquire(tenant, "running", LEASE_MS))!;
    running.state.watermark = iso(T0);
    await running.save();
    // The row this process wrote last holds a live lease: another pull here finds it held.
    expect(await store.open(tenant, "second", LEASE_MS)).toBeUndefined();
    expect(await otherInstance.read(tenant)).toMatchObject({ leaseOwner: "running" });
    await expect(running.save()).resolves.toBeUndefined();
    // A pull that died: once its lease lapsed (at its last instant, as a read would judge it) the next one takes the row over at open.
    now = running.expiresAt;
    const after = (await store.open(tenant, "after", LEASE_MS))!;
    expect(after.openedFromMemory).toBe(true);
    expect(after.state.watermark).toBe(iso(T0));
    await after.claim();
    await expect(running.save()).rejects.toMatchObject({ reason: "taken" });
  });

  it("is read, with its blob, when its dedupe set was spilled: the whole set comes back", async () => {
    const calls: string[] = [];
    const { store } = stateStore(() => T0, (client) => recordingCalls(client, calls));
    const tenant = guid();
    const first = (await store.acquire(tenant, "first", LEASE_MS))!;
    // One more than fifteen properties hold: the set goes to a blob and the row names it.
    for (let i = 0; i < 1250 * 15 + 1; i++) first.state.delivered.set(versionHash({ id: `x${i}`, updatedAtKey: "k" }), 1_700_000_000);
    first.markDeliveredChanged();
    await first.release();
    calls.length = 0;
    const next = (await store.open(tenant, "next", LEASE_MS))!;
    expect(calls).toEqual(["getEntity"]);
    expect(next.openedFromMemory).toBe(false);
    expect(next.state.delivered.size).toBe(1250 * 15 + 1);
    expect(next.state.delivered.has(versionHash({ id: "x18750", updatedAtKey: "k" }))).toBe(true);
  });

  it("is forgotten when the tenant is reset or a failure is recorded, and after a write that may not have landed", async () => {
    const calls: string[] = [];
    let loseAnswers = 0;
    const { store } = stateStore(
      () => T0,
      (client) =>
        recordingCalls(
          beforeWrites(client, async () => undefined, async () => {
            if (loseAnswers > 0 && loseAnswers--) throw new Error("socket hang up");
          }),
          calls,
        ),
    );
    const tenant = guid();
    await (await store.acquire(tenant, "a", LEASE_MS))!.release();
    await store.reset(tenant);
    calls.length = 0;
    const fresh = (await store.open(tenant, "b", LEASE_MS))!;
    // Read, not claimed: no write is tried on a row that is gone.
    expect(calls).toEqual(["getEntity", "getEntity"]);
    expect(fresh.openedFromMemory).toBe(false);
    await fresh.release();
    await store.recordFailure(tenant, "poison_message", "The pull message failed five times");
    calls.length = 0;
    const next = (await store.open(tenant, "c", LEASE_MS))!;
    expect(calls).toEqual(["getEntity"]);
    expect(next.state).toMatchObject({ lastErrorCode: "poison_message", consecutiveFailures: 1 });
    await next.release();
    // The claim at open landed but its answer was lost: what storage holds is not known here, so
    // the row is read (the lease it finds is this pull's own) and read again by the next pull.
    loseAnswers = 1;
    calls.length = 0;
    const lost = (await store.open(tenant, "d", LEASE_MS))!;
    expect(calls[0]).toBe("updateEntity");
    expect(lost.openedFromMemory).toBe(false);
    calls.length = 0;
    expect(await store.open(tenant, "e", LEASE_MS)).toBeUndefined();
    expect(calls).toEqual(["getEntity"]);
  });
});

/** A pull state with every field set (apart from the dedupe set), as a busy tenant's might be. */
function everyField(): Omit<PullState, "delivered"> {
  return {
    source: "graph",
    window: { from: iso(T0 - 60_000), to: iso(T0), position: iso(T0 - 30_000), nextEnd: iso(T0 - 20_000), density: 0.5, instant: { pass: 1, skip: 100, foundNew: true } },
    invalidSpan: { from: iso(T0 - 10), to: iso(T0 - 5), runs: 2 },
    sinks: { splunk: { parkedFrom: 1, parkedTo: 4, behindSince: iso(T0 - 100) } },
    accessTokenCipher: "sealed",
    accessTokenExpiresAt: T0 + 3600_000,
    refreshTokenObtainedAt: T0 - 5000,
    apiCalls: [T0 - 2, T0 - 1],
    lastRunAt: iso(T0),
    lastSuccessAt: iso(T0 - 1),
    lastAlertCount: 0,
    consecutiveFailures: 2,
    lastErrorCode: "transient",
    lastErrorMessage: "it broke",
    clockSkewMs: -1500,
    deadLetters: 3,
    lastDeadLetterReason: "missing_id",
    lastDeadLetterAt: iso(T0 - 7),
    lastWarningCode: "unstable_order",
    lastWarningMessage: "moved",
    lastWarningAt: iso(T0 - 8),
  };
}

describe("PullStateStore: the pull's lease and state", () => {
  it("writes nothing on open, claims the lease with the first save and stores every field it reads back", async () => {
    const now = T0;
    const { store } = stateStore(() => now);
    const tenant = guid();
    const lease = await store.open(tenant, "pull-a", LEASE_MS, (state) => {
      state.watermark = iso(T0 - 60_000);
    });
    expect(lease).toBeDefined();
    expect(await store.read(tenant)).toBeUndefined();
    expect(lease?.expiresAt).toBe(T0 + LEASE_MS);
    const state = lease?.state as PullState;
    expect(state.watermark).toBe(iso(T0 - 60_000));
    Object.assign(state, everyField());
    state.delivered.set(versionHash({ id: "a", updatedAtKey: "k" }), 1_700_000_000);
    lease?.markDeliveredChanged();
    await lease?.save();
    const stored = await store.read(tenant);
    const { delivered, ...rest } = stored as PullState & { leaseOwner?: string };
    expect([...delivered]).toEqual([[versionHash({ id: "a", updatedAtKey: "k" }), 1_700_000_000]]);
    const { delivered: _d, ...expected } = state;
    expect(rest).toEqual({ ...expected, leaseOwner: "pull-a", leaseUntil: T0 + LEASE_MS });
  });

  it("shows every health column in readAll, and not the dedupe set, the token cache, the call log, the span or the source", async () => {
    const { store } = stateStore(() => T0);
    const tenant = guid();
    const lease = (await store.open(tenant, "a", LEASE_MS))!;
    const { window, ...full } = everyField();
    Object.assign(lease.state, full, { window });
    lease.state.delivered.set(versionHash({ id: "a", updatedAtKey: "k" }), 1_700_000_000);
    lease.markDeliveredChanged();
    await lease.release();
    const { delivered, ...health } = (await store.readAll()).get(tenant)!;
    expect(delivered.size).toBe(0);
    const { source: _s, invalidSpan: _i, accessTokenCipher: _c, accessTokenExpiresAt: _e, apiCalls: _a, ...shown } = full;
    expect(health).toEqual({ ...shown, apiCalls: [], window: { from: window!.from, to: window!.to, position: window!.position, nextEnd: window!.nextEnd, density: window!.density } });
  });

  it("reads an empty row as an empty state, and a state without a window, span or sinks without them", async () => {
    const { store } = stateStore(() => T0);
    const tenant = guid();
    const lease = await store.open(tenant, "a", LEASE_MS);
    await lease?.release();
    const { delivered, ...rest } = (await store.read(tenant)) as PullState;
    expect(delivered.size).toBe(0);
    expect(rest).toEqual({ apiCalls: [], consecutiveFailures: 0, deadLetters: 0, lastAlertCount: 0 });
  });

  it("reads old or damaged columns defensively", async () => {
    const { store, raw } = stateStore(() => T0);
    const tenant = guid();
    const table = await raw();
    await table.createEntity({
      partitionKey: tenant,
      rowKey: "pull",
      source: "nonsense",
      windowFrom: iso(T0 - 1000),
      windowTo: iso(T0),
      windowDensity: 0,
      windowInstantPass: 0,
      windowInstantSkip: -1,
      invalidSpanFrom: iso(T0),
      invalidSpanTo: iso(T0 + 1),
      sinkProgress: JSON.stringify({ good: { parkedFrom: 0, parkedTo: 0 }, negative: { parkedFrom: -1, parkedTo: 0 }, backwards: { parkedFrom: 3, parkedTo: 2 }, missing: { parkedFrom: 1 } }),
      apiCalls: "5,x,7",
      consecutiveFailures: "2",
      clockSkewMs: "abc",
      accessTokenExpiresAt: 0,
      lastAlertCount: Number.NaN,
    });
    const state = (await store.read(tenant)) as PullState;
    expect(state.source).toBeUndefined();
    expect(state.window).toEqual({ from: iso(T0 - 1000), to: iso(T0), position: iso(T0 - 1000), nextEnd: iso(T0) });
    expect(state.invalidSpan).toBeUndefined();
    expect(state.sinks).toEqual({ good: { parkedFrom: 0, parkedTo: 0 } });
    expect(state.apiCalls).toEqual([5, 7]);
    expect(state.consecutiveFailures).toBe(0);
    expect(state.clockSkewMs).toBeUndefined();
    expect(state.accessTokenExpiresAt).toBeUndefined();
    const other = guid();
    await table.createEntity({ partitionKey: other, rowKey: "pull", sinkProgress: "{not json", windowFrom: iso(T0), invalidSpanFrom: iso(T0), invalidSpanTo: iso(T0), invalidSpanRuns: 0, windowInstantPass: 2, windowInstantSkip: 0, windowDensity: 2 });
    const second = (await store.read(other)) as PullState;
    expect(second.sinks).toBeUndefined();
    expect(second.window).toBeUndefined();
    expect(second.invalidSpan).toEqual({ from: iso(T0), to: iso(T0), runs: 0 });
  });

  it("keeps a held lease from another owner until it lapses, but not from its own owner", async () => {
    let now = T0;
    const { store } = stateStore(() => now);
    const tenant = guid();
    const held = await store.acquire(tenant, "a", LEASE_MS);
    expect((await store.read(tenant))?.leaseOwner).toBe("a");
    expect(await store.open(tenant, "b", LEASE_MS)).toBeUndefined();
    expect(await store.acquire(tenant, "b", LEASE_MS)).toBeUndefined();
    expect(await store.open(tenant, "a", LEASE_MS)).toBeDefined();
    now = T0 + LEASE_MS - 1;
    expect(await store.open(tenant, "b", LEASE_MS)).toBeUndefined();
    now = T0 + LEASE_MS;
    const taken = await store.acquire(tenant, "b", LEASE_MS);
    expect(taken).toBeDefined();
    expect((await store.read(tenant))?.leaseUntil).toBe(T0 + 2 * LEASE_MS);
    // The first holder's next save finds the lease taken and writes nothing.
    held!.state.watermark = iso(T0);
    const error = await held!.save().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(error).toMatchObject({ reason: "taken", name: "LeaseLostError", message: "pull lease lost to another instance" });
    expect((await store.read(tenant))?.watermark).toBeUndefined();
    expect((await store.read(tenant))?.leaseOwner).toBe("b");
    // And every save after it fails the same way.
    await expect(held!.claim()).resolves.toBeUndefined();
    await expect(held!.save()).rejects.toMatchObject({ reason: "taken" });
  });

  it("ends a pull busy, having written nothing, when a rival wrote before its first write", async () => {
    // The rival and the earlier pull run in another instance: a row this store wrote last would be claimed at open.
    const { store, otherInstance } = stateStore(() => T0);
    for (const existing of [false, true]) {
      const tenant = guid();
      if (existing) await (await otherInstance.acquire(tenant, "earlier", 1))!.release();
      const slow = await store.open(tenant, "slow", LEASE_MS);
      const fast = await otherInstance.acquire(tenant, "fast", LEASE_MS);
      expect(fast).toBeDefined();
      slow!.state.watermark = iso(T0);
      const error = await slow!.claim().catch((e: unknown) => e);
      expect(error).toMatchObject({ reason: "busy", message: "another pull of the tenant wrote first" });
      expect(await store.read(tenant)).toMatchObject({ leaseOwner: "fast" });
      expect((await store.read(tenant))?.watermark).toBeUndefined();
      // acquire reports the same as "held": undefined.
      const third = await store.open(tenant, "fast", LEASE_MS);
      await fast!.save();
      expect(await third!.claim().catch((e: unknown) => (e as LeaseLostError).reason)).toBe("busy");
    }
  });

  it("claims once, renews the lease with each save and releases it for the next pull", async () => {
    let now = T0;
    const writes: string[] = [];
    const { store } = stateStore(
      () => now,
      (client) => beforeWrites(client, async (method, entity) => void writes.push(`${method}:${String(entity.leaseOwner)}`)),
    );
    const tenant = guid();
    const lease = (await store.open(tenant, "a", LEASE_MS))!;
    await lease.claim();
    await lease.claim();
    expect(writes).toEqual(["createEntity:a"]);
    now += 1000;
    await lease.save();
    expect(lease.expiresAt).toBe(T0 + 1000 + LEASE_MS);
    expect((await store.read(tenant))?.leaseUntil).toBe(T0 + 1000 + LEASE_MS);
    await lease.release();
    await lease.release();
    await lease.save();
    expect(writes).toEqual(["createEntity:a", "updateEntity:a", "updateEntity:"]);
    expect((await store.read(tenant))?.leaseOwner).toBeUndefined();
    expect(await store.open(tenant, "b", LEASE_MS)).toBeDefined();
  });

  it("ends a pull whose tenant was reset with reason reset", async () => {
    const { store, blobs } = stateStore(() => T0);
    const tenant = guid();
    const lease = (await store.acquire(tenant, "a", LEASE_MS))!;
    await store.recordIncident(tenant, "lease_lost");
    await store.reset(tenant);
    await store.reset(tenant);
    expect(await store.read(tenant)).toBeUndefined();
    expect((await store.readAll()).size).toBe(0);
    await expect(lease.save()).rejects.toMatchObject({ reason: "reset", message: "the tenant's pull state was reset" });
    expect(await blobs.exists()).toBe(false);
  });

  it("asks before creating a tenant's row, and only then", async () => {
    const { store } = stateStore(() => T0);
    const tenant = guid();
    let asked = 0;
    const lease = (await store.open(tenant, "a", LEASE_MS, undefined, { beforeCreate: async () => void asked++ }))!;
    await lease.save();
    await lease.save();
    expect(asked).toBe(1);
    const refused = (await store.open(guid(), "a", LEASE_MS, undefined, {
      beforeCreate: async () => {
        throw new Error("offboarded");
      },
    }))!;
    await expect(refused.save()).rejects.toThrow("offboarded");
  });

  it("spills a dedupe set too large for the row to a blob, rewrites it only when it changed, and removes the old one", async () => {
    const { store, blobs } = stateStore(() => T0);
    const tenant = guid();
    const lease = (await store.open(tenant, "a", LEASE_MS))!;
    for (let i = 0; i < 1250 * 15 + 1; i++) lease.state.delivered.set(versionHash({ id: `x${i}`, updatedAtKey: "k" }), 1_700_000_000);
    lease.markDeliveredChanged();
    await lease.save();
    const names = async (): Promise<string[]> => {
      const found: string[] = [];
      for await (const blob of blobs.listBlobsFlat()) found.push(blob.name);
      return found;
    };
    const first = await names();
    expect(first).toHaveLength(1);
    expect(first[0]).toMatch(new RegExp(`^${tenant}/[0-9a-f-]{36}\\.versions$`));
    expect((await store.read(tenant))?.delivered.size).toBe(1250 * 15 + 1);
    await lease.save();
    expect(await names()).toEqual(first);
    lease.state.delivered.set(versionHash({ id: "new", updatedAtKey: "k" }), 1_700_000_001);
    lease.markDeliveredChanged();
    await lease.save();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const second = await names();
    expect(second).toHaveLength(1);
    expect(second[0]).not.toBe(first[0]);
    const reopened = (await store.open(tenant, "a", LEASE_MS))!;
    expect(reopened.state.delivered.size).toBe(1250 * 15 + 2);
    // Shrunk back under the row's limit: inline again, the blob dropped.
    reopened.state.delivered.clear();
    reopened.markDeliveredChanged();
    await reopened.save();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await names()).toEqual([]);
    expect((await store.read(tenant))?.delivered.size).toBe(0);
  });

  it("takes its own committed write whose answer was lost for success", async () => {
    let loseAnswer = false;
    const calls: string[] = [];
    const { store } = stateStore(
      () => T0,
      (client) =>
        recordingCalls(
          beforeWrites(
            client,
            async () => undefined,
            async () => {
              if (loseAnswer) {
                loseAnswer = false;
                throw Object.assign(new Error("precondition failed"), { statusCode: 412 });
              }
            },
          ),
          calls,
        ),
    );
    const tenant = guid();
    const lease = (await store.acquire(tenant, "a", LEASE_MS))!;
    loseAnswer = true;
    lease.state.watermark = iso(T0);
    await lease.save();
    lease.state.watermark = iso(T0 + 1);
    await lease.save();
    expect((await store.read(tenant))?.watermark).toBe(iso(T0 + 1));
    // The same for a lease claimed at open from the row this process wrote last, once claimed.
    await lease.release();
    const warm = (await store.open(tenant, "b", LEASE_MS))!;
    expect(warm.openedFromMemory).toBe(true);
    loseAnswer = true;
    warm.state.watermark = iso(T0 + 2);
    await warm.save();
    await warm.release();
    expect(await store.read(tenant)).toMatchObject({ watermark: iso(T0 + 2) });
    expect((await store.read(tenant))?.leaseOwner).toBeUndefined();
    // A row whose ETag was adopted after a lost answer is not remembered: another writer's Merge
    // may lie on top of it under that ETag, so the next pull reads it.
    const adopted = (await store.open(tenant, "c", LEASE_MS))!;
    loseAnswer = true;
    await adopted.release();
    expect((await store.read(tenant))?.leaseOwner).toBeUndefined();
    calls.length = 0;
    expect((await store.open(tenant, "d", LEASE_MS))?.openedFromMemory).toBe(false);
    expect(calls[0]).toBe("getEntity");
  });

  it("counts failures outside a lease and incidents apart from the pull row, and shows them in readAll", async () => {
    let now = T0;
    const { store, raw } = stateStore(() => now);
    const tenant = guid();
    await store.recordFailure(tenant, "pull_poisoned", "moved to the poison queue");
    now += 1000;
    await store.recordFailure(tenant, "pull_poisoned", "again");
    expect(await store.read(tenant)).toMatchObject({ consecutiveFailures: 2, lastErrorCode: "pull_poisoned", lastErrorMessage: "again", lastRunAt: iso(T0 + 1000) });
    await store.recordIncident(tenant, "lease_lost");
    now += 1000;
    await store.recordIncident(tenant, "lease_lost");
    await store.recordIncident(tenant, "release_failed");
    const legacy = guid();
    await (await raw()).createEntity({ partitionKey: "pull", rowKey: legacy, watermark: iso(T0), consecutiveFailures: 4 });
    await store.recordFailure(legacy, "x", "y");
    await store.recordIncident(guid(), "lease_lost");
    const all = await store.readAll();
    expect([...all.keys()].sort()).toEqual([tenant, legacy].sort());
    expect(all.get(tenant)?.incidents).toEqual({ leaseLost: 2, lastLeaseLostAt: iso(T0 + 2000), releaseFailed: 1, lastReleaseFailedAt: iso(T0 + 2000) });
    expect(all.get(tenant)?.delivered.size).toBe(0);
    expect(all.get(legacy)).toMatchObject({ watermark: iso(T0), consecutiveFailures: 5, lastErrorCode: "x" });
    expect(all.get(legacy)?.incidents).toBeUndefined();
  });

  it("moves a legacy row into the tenant's partition with its first write, marking the old one moved", async () => {
    const now = T0;
    const { store, raw } = stateStore(() => now);
    const tenant = guid();
    const table = await raw();
    await table.createEntity({ partitionKey: "pull", rowKey: tenant, watermark: iso(T0 - 5), leaseOwner: "old", leaseUntil: T0 - 1 });
    expect(await store.read(tenant)).toMatchObject({ watermark: iso(T0 - 5), leaseOwner: "old" });
    const lease = (await store.open(tenant, "a", LEASE_MS))!;
    expect(lease.state.watermark).toBe(iso(T0 - 5));
    lease.state.lastAlertCount = 9;
    await lease.save();
    const moved = await table.getEntity<Record<string, unknown>>("pull", tenant);
    expect(moved).toMatchObject({ leaseOwner: "moved", leaseUntil: T0 + 3600_000, watermark: iso(T0 - 5) });
    expect(await table.getEntity<Record<string, unknown>>(tenant, "pull")).toMatchObject({ watermark: iso(T0 - 5), lastAlertCount: 9, leaseOwner: "a" });
    expect((await store.readAll()).get(tenant)?.lastAlertCount).toBe(9);
    // A move cut short (legacy marked moved, no new row): the next pull finishes it.
    const other = guid();
    await table.createEntity({ partitionKey: "pull", rowKey: other, watermark: iso(T0 - 6), leaseOwner: "moved", leaseUntil: T0 + 3600_000 });
    expect((await store.read(other))?.leaseOwner).toBeUndefined();
    const resumed = (await store.acquire(other, "b", LEASE_MS))!;
    expect(resumed.state.watermark).toBe(iso(T0 - 6));
    // Two pulls moving one legacy row: only the first gets past the mark.
    const raced = guid();
    await table.createEntity({ partitionKey: "pull", rowKey: raced, watermark: iso(T0 - 7) });
    const one = (await store.open(raced, "one", LEASE_MS))!;
    const two = (await store.open(raced, "two", LEASE_MS))!;
    await one.save();
    await expect(two.save()).rejects.toMatchObject({ reason: "busy" });
    const gone = guid();
    await table.createEntity({ partitionKey: "pull", rowKey: gone, watermark: iso(T0 - 7) });
    const late = (await store.open(gone, "late", LEASE_MS))!;
    await table.deleteEntity("pull", gone);
    await expect(late.save()).rejects.toMatchObject({ reason: "reset" });
  });
});
