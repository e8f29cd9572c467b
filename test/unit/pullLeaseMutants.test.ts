import { randomUUID } from "node:crypto";
import type { ContainerClient } from "@azure/storage-blob";
import { describe, expect, it } from "vitest";
import { type PullLease, type PullStateStore } from "../../shared/pull/pullState";
import { versionHash } from "../../shared/pull/window";
import { aroundCalls, LEASE_MS, stateStore, type TableCall } from "../harness/pullStateFixture";

/**
 * The pull lease under what storage does to it (issue 15, the survivors of pullState.ts's lease
 * and write): renewals in the background, answers lost after a write landed, writes that never
 * reached storage, a rival between a read and a write, a spilled dedupe set caught in any of
 * these; and the failures and incidents recorded outside a lease, under the same. The real Tables and Blob clients against the run's Azurite; the faults are injected
 * around the client, where Azurite cannot be made to produce them.
 */

const T0 = Date.parse("2026-03-01T10:00:00.000Z");
const iso = (ms: number): string => new Date(ms).toISOString();
const guid = (): string => randomUUID();
const settle = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `check` holds, at most five seconds. */
async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("the condition never held");
    await settle(5);
  }
}

/** What the SDK throws when a conditional write meets another ETag (or its own retry met our success). */
const preconditionFailed = (): Error => Object.assign(new Error("precondition failed"), { statusCode: 412 });
/** What the SDK throws when a create meets an existing row. */
const alreadyExists = (): Error => Object.assign(new Error("the specified entity already exists"), { statusCode: 409 });

type Fault = { phase: "before" | "after"; match: (call: TableCall) => boolean; error: () => Error };

const isWrite = (call: TableCall): boolean => call.method === "updateEntity" || call.method === "createEntity";
const isRead = (call: TableCall): boolean => call.method === "getEntity";
/** The conditional Merge that marks a legacy row moved. */
const isMoveMark = (call: TableCall): boolean => call.method === "updateEntity" && call.args[1] === "Merge";

/**
 * A pull-state store whose table calls meet the faults queued on it, each once, in order: a
 * `before` fault fails the call before it reaches storage, an `after` fault loses the answer of
 * a call that landed. `writes` counts the writes that were tried, `aborts` the abort reasons the
 * calls held back by `hold` saw.
 */
function faultyStore(clock: () => number, timeoutMs?: number): {
  store: PullStateStore;
  otherInstance: PullStateStore;
  raw: ReturnType<typeof stateStore>["raw"];
  blobs: ContainerClient;
  fail: (phase: Fault["phase"], match: Fault["match"], error: Fault["error"]) => void;
  /** Runs `action` (a rival's write, a reset) just before the next matching call reaches storage. */
  interpose: (match: Fault["match"], action: () => Promise<unknown>) => void;
  writes: string[];
  hold: { writes: boolean };
  aborts: unknown[];
} {
  const faults: Fault[] = [];
  const actions: { match: Fault["match"]; action: () => Promise<unknown> }[] = [];
  const writes: string[] = [];
  const hold = { writes: false };
  const aborts: unknown[] = [];
  const take = (phase: Fault["phase"], call: TableCall): void => {
    const index = faults.findIndex((fault) => fault.phase === phase && fault.match(call));
    if (index < 0) return;
    const [fault] = faults.splice(index, 1);
    throw fault!.error();
  };
  const fixture = stateStore(
    clock,
    (client) =>
    aroundCalls(client, {
      before: async (call) => {
        if (isWrite(call)) writes.push(`${call.method}:${String((call.args[0] as Record<string, unknown>)["leaseOwner"])}`);
        if (hold.writes && isWrite(call)) {
          // Held until the call's own signal gives it up, as a socket that never answers would be.
          const signal = (call.args[2] as { abortSignal: AbortSignal }).abortSignal;
          await new Promise((_, reject) => signal.addEventListener("abort", () => reject(aborts[aborts.push(signal.reason) - 1]), { once: true }));
        }
        const interposed = actions.findIndex((entry) => entry.match(call));
        if (interposed >= 0) await actions.splice(interposed, 1)[0]!.action();
        take("before", call);
      },
      after: async (call) => take("after", call),
    }),
    timeoutMs,
  );
  return { ...fixture, fail: (phase, match, error) => void faults.push({ phase, match, error }), interpose: (match, action) => void actions.push({ match, action }), writes, hold, aborts };
}

/** A dedupe set one entry larger than the row's fifteen properties hold, so that it spills to a blob. */
function spillWorthy(lease: PullLease): void {
  for (let i = 0; i < 1250 * 15 + 1; i++) lease.state.delivered.set(versionHash({ id: `x${i}`, updatedAtKey: "k" }), 1_700_000_000);
  lease.markDeliveredChanged();
}

async function blobNames(blobs: ContainerClient): Promise<string[]> {
  const names: string[] = [];
  for await (const blob of blobs.listBlobsFlat()) names.push(blob.name);
  return names.sort();
}

/** Another instance's write over the tenant's row (its lease and write id), keeping the columns it did not change. */
async function rivalWrites(raw: ReturnType<typeof stateStore>["raw"], tenantId: string, at: number): Promise<void> {
  await (await raw()).updateEntity({ partitionKey: tenantId, rowKey: "pull", leaseOwner: "rival", leaseUntil: at + LEASE_MS, writeId: "rival-write" }, "Merge");
}

describe("PullLease.keepAlive: renewals while one call runs long", () => {
  it("renews once a lease's length less one interval is left, not before, and stops when told", async () => {
    let now = T0;
    const { store, otherInstance, writes } = faultyStore(() => now);
    const tenant = guid();
    const lease = (await store.acquire(tenant, "a", 1000))!;
    writes.length = 0;
    const stop = lease.keepAlive(50);
    await settle(300);
    expect(writes).toEqual([]);
    // 981 ms left, more than 1000 - 50: not yet.
    now += 19;
    await settle(300);
    expect(writes).toEqual([]);
    // 950 ms left: due.
    now += 31;
    // Renewed once storage answers (a renewal slower than an interval is abandoned and tried again
    // at the next one, so a loaded machine may show more than one write before that).
    await until(() => lease.expiresAt === now + 1000);
    await settle(300);
    const renewals = writes.length;
    expect(renewals).toBeGreaterThan(0);
    expect((await otherInstance.read(tenant))?.leaseUntil).toBe(now + 1000);
    // Renewed: nothing more is due while the clock stands still.
    await settle(300);
    expect(writes.length).toBe(renewals);
    await stop();
    now += 5000;
    await settle(300);
    expect(writes.length).toBe(renewals);
    expect(writes.every((write) => write === "updateEntity:a")).toBe(true);
  });

  it("stops renewing once a renewal finds the lease taken, and every later save fails without a write", async () => {
    let now = T0;
    const { store, raw, writes } = faultyStore(() => now);
    const tenant = guid();
    // Intervals long enough that a renewal on a loaded machine is answered inside its own bound.
    const lease = (await store.acquire(tenant, "a", 4000))!;
    const stop = lease.keepAlive(400);
    await rivalWrites(raw, tenant, now);
    writes.length = 0;
    now += 500;
    await until(() => writes.length > 0);
    now += 50_000;
    await settle(1000);
    expect(writes).toEqual(["updateEntity:a"]);
    await expect(lease.save()).rejects.toMatchObject({ reason: "taken", message: "pull lease lost to another instance" });
    expect(writes).toEqual(["updateEntity:a"]);
    expect(await store.read(tenant)).toMatchObject({ leaseOwner: "rival" });
    await stop();
  });

  it("gives a renewal storage does not answer up after an interval, or at once when stopped, and goes on saving", async () => {
    let now = T0;
    const { store, otherInstance, writes, hold, aborts } = faultyStore(() => now);
    const tenant = guid();
    const lease = (await store.acquire(tenant, "a", 3000))!;
    hold.writes = true;
    const stop = lease.keepAlive(1000);
    now += 1000;
    // The renewal's own bound: one interval.
    await until(() => aborts.length === 1);
    expect(aborts[0]).toMatchObject({ name: "TimeoutError" });
    // A renewal under way when the pull stops is given up at once.
    await until(() => writes.length > aborts.length);
    await stop();
    expect(aborts.slice(0, -1).every((reason) => (reason as Error).name === "TimeoutError")).toBe(true);
    expect(aborts.at(-1)).toMatchObject({ message: "the pull stopped renewing its lease" });
    // Neither failure is a lost lease: the pull's own saves go on.
    hold.writes = false;
    lease.state.watermark = iso(T0);
    await lease.save();
    expect(await otherInstance.read(tenant)).toMatchObject({ leaseOwner: "a", watermark: iso(T0) });
  });
});

describe("PullLease: a write whose answer was lost", () => {
  it("knows its own write among its last sixteen, and none further back", async () => {
    for (const failedBetween of [14, 15]) {
      const { store, fail } = faultyStore(() => T0);
      const tenant = guid();
      const lease = (await store.acquire(tenant, "a", LEASE_MS))!;
      lease.state.watermark = iso(T0 + 1);
      // It landed; its answer did not come back.
      fail("after", isWrite, () => new Error("socket hang up"));
      await expect(lease.save()).rejects.toThrow("socket hang up");
      for (let i = 0; i < failedBetween; i++) {
        fail("before", isWrite, () => new Error("connect ECONNRESET"));
        await expect(lease.save()).rejects.toThrow("ECONNRESET");
      }
      // The write that landed is the 16th before this one (the acquire's the 17th), or the 17th.
      lease.state.watermark = iso(T0 + 2);
      const outcome = await lease.save().then(
        () => "saved",
        (error: unknown) => (error as { reason?: string }).reason,
      );
      expect([failedBetween, outcome]).toEqual([failedBetween, failedBetween === 14 ? "saved" : "taken"]);
      expect((await store.read(tenant))?.watermark).toBe(iso(failedBetween === 14 ? T0 + 2 : T0 + 1));
    }
  });

  it("takes a first write whose answer was lost for its own, whether it created the row or updated it", async () => {
    const { store, otherInstance, fail, writes } = faultyStore(() => T0);
    // A new tenant: the SDK's retry of a create that landed meets the row it created.
    const fresh = guid();
    const created = (await store.open(fresh, "a", LEASE_MS))!;
    fail("after", isWrite, alreadyExists);
    await created.claim();
    // A tenant with a row, read by open: the retry of an update that landed meets its new ETag.
    const known = guid();
    await (await otherInstance.acquire(known, "earlier", 1))!.release();
    const updated = (await store.open(known, "b", LEASE_MS))!;
    expect(updated.openedFromMemory).toBe(false);
    fail("after", isWrite, preconditionFailed);
    await updated.claim();
    writes.length = 0;
    for (const [tenant, lease] of [[fresh, created], [known, updated]] as const) {
      lease.state.watermark = iso(T0);
      await lease.save();
      expect(await otherInstance.read(tenant)).toMatchObject({ leaseOwner: lease.owner, watermark: iso(T0) });
    }
    // Each save after it is one write: the lease knows the ETag its lost answer had.
    expect(writes).toEqual(["updateEntity:a", "updateEntity:b"]);
  });

  it("tries a write twice at most: a second refusal ends the lease even when the row still holds its own write", async () => {
    const { store, fail, writes } = faultyStore(() => T0);
    const tenant = guid();
    const lease = (await store.acquire(tenant, "a", LEASE_MS))!;
    fail("after", isWrite, () => new Error("socket hang up"));
    await expect(lease.save()).rejects.toThrow("socket hang up");
    writes.length = 0;
    // The first attempt meets the ETag of the write that landed; the retry under it is refused too.
    fail("before", (call) => isWrite(call) && writes.length === 2, preconditionFailed);
    await expect(lease.save()).rejects.toMatchObject({ reason: "taken" });
    expect(writes).toEqual(["updateEntity:a", "updateEntity:a"]);
  });

  it("takes a refusal it cannot look into for a rival's write", async () => {
    let now = T0;
    const { store, raw, fail } = faultyStore(() => now);
    const tenant = guid();
    const lease = (await store.acquire(tenant, "a", LEASE_MS))!;
    await rivalWrites(raw, tenant, now);
    fail("before", isRead, () => new Error("connect ECONNRESET"));
    await expect(lease.save()).rejects.toMatchObject({ reason: "taken" });
    now += 1;
    expect(await store.read(tenant)).toMatchObject({ leaseOwner: "rival" });
  });
});

describe("PullLease: the first write of a lease open read", () => {
  it("ends busy only when a rival wrote first: a reset stays reset, and a fault stays itself and can be retried", async () => {
    const { store, otherInstance, fail } = faultyStore(() => T0);
    const reset = guid();
    await (await otherInstance.acquire(reset, "earlier", 1))!.release();
    const orphan = (await store.open(reset, "a", LEASE_MS))!;
    await otherInstance.reset(reset);
    await expect(orphan.claim()).rejects.toMatchObject({ reason: "reset" });

    const faulty = guid();
    await (await otherInstance.acquire(faulty, "earlier", 1))!.release();
    const lease = (await store.open(faulty, "b", LEASE_MS))!;
    fail("before", isWrite, () => new Error("connect ECONNRESET"));
    const error = await lease.claim().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toHaveProperty("reason");
    expect((error as Error).message).toBe("connect ECONNRESET");
    await lease.claim();
    expect(await otherInstance.read(faulty)).toMatchObject({ leaseOwner: "b" });
  });
});

describe("PullLease: the first write of a tenant's first pull", () => {
  it("takes a create that failed without a refusal for the fault it is, not a rival's row, and creates the row when retried", async () => {
    const { store, otherInstance, fail } = faultyStore(() => T0);
    const tenant = guid();
    const lease = (await store.open(tenant, "first", LEASE_MS))!;
    fail("before", (call) => call.method === "createEntity", () => Object.assign(new Error("server busy"), { statusCode: 503 }));
    const error = await lease.claim().catch((e: unknown) => e);
    expect(error).not.toHaveProperty("reason");
    expect((error as Error).message).toBe("server busy");
    expect(await otherInstance.read(tenant)).toBeUndefined();
    await lease.claim();
    expect(await otherInstance.read(tenant)).toMatchObject({ leaseOwner: "first" });
  });

  it("asks whether the tenant may still be created only for a row it creates from nothing, not for a legacy row it moves", async () => {
    const { store, raw } = faultyStore(() => T0);
    const [fresh, legacy] = [guid(), guid()];
    await (await raw()).createEntity({ partitionKey: "pull", rowKey: legacy, watermark: iso(T0 - 5) });
    const asked: string[] = [];
    for (const tenant of [fresh, legacy]) {
      const lease = (await store.open(tenant, "a", LEASE_MS, undefined, { beforeCreate: async () => void asked.push(tenant) }))!;
      await lease.save();
      await lease.save();
    }
    expect(asked).toEqual([fresh]);
  });
});

describe("PullStateStore.acquire", () => {
  it("finds the lease held when a rival writes between its read and its claim, and fails on a reset or a storage fault", async () => {
    const { store, otherInstance, raw, fail, interpose } = faultyStore(() => T0);
    const [raced, reset, faulty] = [guid(), guid(), guid()];
    for (const tenant of [raced, reset, faulty]) await (await otherInstance.acquire(tenant, "earlier", 1))!.release();
    interpose(isWrite, () => rivalWrites(raw, raced, T0));
    expect(await store.acquire(raced, "late", LEASE_MS)).toBeUndefined();
    expect(await otherInstance.read(raced)).toMatchObject({ leaseOwner: "rival" });
    interpose(isWrite, () => otherInstance.reset(reset));
    await expect(store.acquire(reset, "late", LEASE_MS)).rejects.toMatchObject({ reason: "reset" });
    fail("before", isWrite, () => new Error("connect ECONNRESET"));
    await expect(store.acquire(faulty, "late", LEASE_MS)).rejects.toThrow("connect ECONNRESET");
    expect((await store.acquire(faulty, "late", LEASE_MS))?.owner).toBe("late");
  });
});

describe("PullStateStore.write: a dedupe set spilled to a blob", () => {
  it("keeps a change to a spilled set for the next save when a save failed, and a lease that changed nothing writes no blob", async () => {
    const { store, otherInstance, raw, blobs, fail } = faultyStore(() => T0);
    const tenant = guid();
    const lease = (await store.acquire(tenant, "a", LEASE_MS))!;
    spillWorthy(lease);
    await lease.save();
    const late = versionHash({ id: "late", updatedAtKey: "k" });
    lease.state.delivered.set(late, 1_700_000_001);
    lease.markDeliveredChanged();
    fail("before", isWrite, () => new Error("connect ECONNRESET"));
    await expect(lease.save()).rejects.toThrow("ECONNRESET");
    await lease.save();
    await lease.release();
    const stored = await otherInstance.read(tenant);
    expect(stored?.delivered.size).toBe(1250 * 15 + 2);
    expect(stored?.delivered.has(late)).toBe(true);
    await settle(100);
    const before = await blobNames(blobs);
    // The blob of the failed save (written before its table write failed) went once a later save
    // replaced the row: only the one the row names is left.
    expect(before).toEqual([(await (await raw()).getEntity<{ deliveredBlob: string }>(tenant, "pull")).deliveredBlob]);
    const unchanged = (await otherInstance.open(tenant, "b", LEASE_MS))!;
    await unchanged.save();
    await unchanged.release();
    await settle(100);
    expect(await blobNames(blobs)).toEqual(before);
  });

  it("does not rewrite an unchanged spilled set because a save failed", async () => {
    const { store, raw, blobs, fail } = faultyStore(() => T0);
    const tenant = guid();
    const lease = (await store.acquire(tenant, "a", LEASE_MS))!;
    spillWorthy(lease);
    await lease.save();
    const named = async (): Promise<string> => (await (await raw()).getEntity<{ deliveredBlob: string }>(tenant, "pull")).deliveredBlob;
    const blob = await named();
    fail("before", isWrite, () => new Error("connect ECONNRESET"));
    await expect(lease.save()).rejects.toThrow("ECONNRESET");
    await lease.save();
    await lease.release();
    await settle(100);
    expect(await named()).toBe(blob);
    expect(await blobNames(blobs)).toEqual([blob]);
  });

  it("removes the blob it wrote only after a refusal: a blob a rival's row names, or a row whose answer was lost, stays", async () => {
    const { store, otherInstance, raw, blobs, fail } = faultyStore(() => T0);
    const late = versionHash({ id: "late", updatedAtKey: "k" });
    const [changed, unchanged, lost] = [guid(), guid(), guid()];
    const leases = new Map<string, PullLease>();
    for (const tenant of [changed, unchanged, lost]) {
      const lease = (await store.acquire(tenant, "a", LEASE_MS))!;
      spillWorthy(lease);
      await lease.save();
      leases.set(tenant, lease);
    }
    const first = await blobNames(blobs);
    expect(first).toHaveLength(3);
    for (const tenant of [changed, lost]) {
      leases.get(tenant)!.state.delivered.set(late, 1_700_000_001);
      leases.get(tenant)!.markDeliveredChanged();
    }
    // Refused: the rival's row names the set as it was, and the blob written for the refused save goes.
    for (const tenant of [changed, unchanged]) {
      await rivalWrites(raw, tenant, T0);
      await expect(leases.get(tenant)!.save()).rejects.toMatchObject({ reason: "taken" });
    }
    // Landed, answer lost: the row names the new blob.
    fail("after", isWrite, () => new Error("socket hang up"));
    await expect(leases.get(lost)!.save()).rejects.toThrow("socket hang up");
    await settle(100);
    const sizes = await Promise.all([changed, unchanged, lost].map(async (tenant) => (await otherInstance.read(tenant))?.delivered.size));
    expect(sizes).toEqual([1250 * 15 + 1, 1250 * 15 + 1, 1250 * 15 + 2]);
    const now = await blobNames(blobs);
    expect(now.filter((name) => !first.includes(name)).map((name) => name.split("/")[0])).toEqual([lost]);
    // The lease's next save replaces that row: both the blob before it and the blob of the save
    // whose answer was lost go, and the tenant holds one blob again.
    const recovered = leases.get(lost)!;
    recovered.state.delivered.set(versionHash({ id: "later", updatedAtKey: "k" }), 1_700_000_002);
    recovered.markDeliveredChanged();
    await recovered.save();
    await settle(100);
    expect((await otherInstance.read(lost))?.delivered.size).toBe(1250 * 15 + 3);
    const table = await raw();
    const named = (await table.getEntity<{ deliveredBlob: string }>(lost, "pull")).deliveredBlob;
    expect((await blobNames(blobs)).filter((name) => name.startsWith(`${lost}/`))).toEqual([named]);
  });
});

describe("PullStateStore.write: moving a legacy row", () => {
  it("goes on when the answer to its move mark was lost, and fails on a fault or a refusal it cannot look into", async () => {
    const { store, raw, fail } = faultyStore(() => T0);
    const table = await raw();
    const [lost, faulted, unreadable] = [guid(), guid(), guid()];
    for (const tenant of [lost, faulted, unreadable]) await table.createEntity({ partitionKey: "pull", rowKey: tenant, watermark: iso(T0 - 5) });
    const moved = (await store.open(lost, "a", LEASE_MS))!;
    fail("after", isMoveMark, preconditionFailed);
    await moved.save();
    expect(await table.getEntity("pull", lost)).toMatchObject({ leaseOwner: "moved" });
    expect(await table.getEntity(lost, "pull")).toMatchObject({ watermark: iso(T0 - 5), leaseOwner: "a" });

    const retried = (await store.open(faulted, "b", LEASE_MS))!;
    fail("before", isMoveMark, () => new Error("connect ECONNRESET"));
    await expect(retried.save()).rejects.toThrow("connect ECONNRESET");
    expect((await table.getEntity<Record<string, unknown>>("pull", faulted))["leaseOwner"]).toBeUndefined();
    await retried.save();
    expect(await table.getEntity(faulted, "pull")).toMatchObject({ watermark: iso(T0 - 5), leaseOwner: "b" });

    const refused = (await store.open(unreadable, "c", LEASE_MS))!;
    fail("after", isMoveMark, preconditionFailed);
    fail("before", isRead, () => new Error("connect ECONNRESET"));
    await expect(refused.save()).rejects.toMatchObject({ reason: "busy" });
    await expect(table.getEntity(unreadable, "pull")).rejects.toMatchObject({ statusCode: 404 });
  });
});

describe("PullStateStore.write: a legacy row another writer changed since it was read", () => {
  it("is moved by no one: the pull ends busy whether the writer left a write id (a move mark) or none (an earlier version's save)", async () => {
    const { store, raw, interpose } = faultyStore(() => T0);
    const table = await raw();
    for (const change of [{ writeId: "rival-mark", leaseOwner: "moved" }, { leaseOwner: "earlier-version" }]) {
      const tenant = guid();
      await table.createEntity({ partitionKey: "pull", rowKey: tenant, watermark: iso(T0 - 5) });
      const lease = (await store.open(tenant, "late", LEASE_MS))!;
      interpose(isMoveMark, () => table.updateEntity({ partitionKey: "pull", rowKey: tenant, ...change }, "Merge"));
      await expect(lease.save()).rejects.toMatchObject({ reason: "busy" });
      await expect(table.getEntity(tenant, "pull")).rejects.toMatchObject({ statusCode: 404 });
      expect(await table.getEntity("pull", tenant)).toMatchObject(change);
    }
  });
});

describe("PullStateStore: failures and incidents recorded outside a lease", () => {
  it("counts a failure once when another writer changed or created the row between its read and its write", async () => {
    const { store, otherInstance, raw, fail, interpose } = faultyStore(() => T0);
    const table = await raw();
    const [existing, created, busy, faulted] = [guid(), guid(), guid(), guid()];
    await (await otherInstance.acquire(existing, "earlier", 1))!.release();
    interpose(isWrite, () => table.updateEntity({ partitionKey: existing, rowKey: "pull", consecutiveFailures: 4 }, "Merge"));
    await store.recordFailure(existing, "pull_poisoned", "moved to the poison queue");
    interpose(isWrite, () => table.createEntity({ partitionKey: created, rowKey: "pull", consecutiveFailures: 2 }));
    await store.recordFailure(created, "pull_poisoned", "moved to the poison queue");
    expect((await Promise.all([existing, created].map((tenant) => otherInstance.read(tenant)))).map((state) => [state?.consecutiveFailures, state?.lastErrorCode])).toEqual([
      [5, "pull_poisoned"],
      [3, "pull_poisoned"],
    ]);
    // Five refusals in a row: it gives up rather than loop, leaving the row to its other writer.
    await (await otherInstance.acquire(busy, "earlier", 1))!.release();
    for (let i = 1; i <= 5; i++) interpose(isWrite, () => table.updateEntity({ partitionKey: busy, rowKey: "pull", consecutiveFailures: 10 * i }, "Merge"));
    await store.recordFailure(busy, "pull_poisoned", "moved to the poison queue");
    expect(await otherInstance.read(busy)).toMatchObject({ consecutiveFailures: 50 });
    expect((await otherInstance.read(busy))?.lastErrorCode).toBeUndefined();
    // Anything but a refusal is the caller's to see.
    fail("before", isWrite, () => new Error("connect ECONNRESET"));
    await expect(store.recordFailure(faulted, "pull_poisoned", "moved to the poison queue")).rejects.toThrow("connect ECONNRESET");
  });

  it("counts an incident once when another writer changed or created its row meanwhile", async () => {
    const { store, raw, fail, interpose } = faultyStore(() => T0);
    const table = await raw();
    const [existing, created, faulted] = [guid(), guid(), guid()];
    await store.recordIncident(existing, "lease_lost");
    interpose(isWrite, () => table.updateEntity({ partitionKey: "incident", rowKey: existing, leaseLost: 7 }, "Merge"));
    await store.recordIncident(existing, "lease_lost");
    interpose(isWrite, () => table.createEntity({ partitionKey: "incident", rowKey: created, releaseFailed: 2 }));
    await store.recordIncident(created, "release_failed");
    fail("before", isWrite, () => new Error("connect ECONNRESET"));
    await expect(store.recordIncident(faulted, "lease_lost")).rejects.toThrow("connect ECONNRESET");
    const incidents = await Promise.all(
      [existing, created].map(async (tenant) => {
        const { leaseLost, releaseFailed } = await table.getEntity<Record<string, unknown>>("incident", tenant);
        return [leaseLost, releaseFailed];
      }),
    );
    expect(incidents).toEqual([
      [8, 0],
      [0, 3],
    ]);
  });
});

describe("PullStateStore: storage faults are never read as an absent row", () => {
  const unavailable = (): Error => Object.assign(new Error("Service Unavailable"), { statusCode: 503 });

  it("fails an open whose read storage refused, instead of taking the tenant for one never pulled", async () => {
    const { store, otherInstance, fail } = faultyStore(() => T0);
    const tenant = guid();
    await (await otherInstance.acquire(tenant, "earlier", LEASE_MS))!.release();
    fail("before", isRead, unavailable);
    await expect(store.open(tenant, "late", LEASE_MS)).rejects.toMatchObject({ statusCode: 503 });
    expect((await store.open(tenant, "late", LEASE_MS))?.state.watermark).toBeUndefined();
  });

  it("fails a reset that storage refused, and resets a tenant whose rows are already gone", async () => {
    const { store, otherInstance, fail } = faultyStore(() => T0);
    const [pulled, never] = [guid(), guid()];
    await (await otherInstance.acquire(pulled, "earlier", LEASE_MS))!.release();
    fail("before", (call) => call.method === "deleteEntity", unavailable);
    await expect(store.reset(pulled)).rejects.toMatchObject({ statusCode: 503 });
    expect(await otherInstance.read(pulled)).toBeDefined();
    await store.reset(pulled);
    expect(await otherInstance.read(pulled)).toBeUndefined();
    await store.reset(never);
  });

  it("gives a save storage does not answer up after the store's own bound", async () => {
    const { store, otherInstance, hold } = faultyStore(() => T0, 300);
    const tenant = guid();
    await (await otherInstance.acquire(tenant, "earlier", LEASE_MS))!.release();
    const lease = (await store.open(tenant, "a", LEASE_MS))!;
    hold.writes = true;
    const started = Date.now();
    await expect(lease.save()).rejects.toMatchObject({ name: "TimeoutError" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(Date.now() - started).toBeLessThan(4_000);
  }, 10_000);

  it("gives an incident up after five writes that all met another writer, rather than trying for ever", async () => {
    const { store, fail, writes } = faultyStore(() => T0);
    for (let i = 0; i < 8; i++) fail("before", isWrite, alreadyExists);
    await store.recordIncident(guid(), "lease_lost");
    expect(writes).toHaveLength(5);
  });
});

describe("PullStateStore: a lease's end and a legacy row's lease", () => {
  it("finds a lease free at the very millisecond it ends, and held one millisecond before", async () => {
    let now = T0;
    const { store, otherInstance } = faultyStore(() => now);
    const tenant = guid();
    expect(await otherInstance.acquire(tenant, "first", LEASE_MS)).toBeDefined();
    now = T0 + LEASE_MS - 1;
    expect(await store.open(tenant, "second", LEASE_MS)).toBeUndefined();
    now = T0 + LEASE_MS;
    expect((await store.open(tenant, "second", LEASE_MS))?.owner).toBe("second");
  });

  it("leaves a legacy row an earlier version's pull holds to that pull, and lists a legacy row's health", async () => {
    const { store, raw } = faultyStore(() => T0);
    const tenant = guid();
    await (await raw()).createEntity({
      partitionKey: "pull",
      rowKey: tenant,
      watermark: iso(T0 - 5),
      leaseOwner: "earlier-version",
      leaseUntil: T0 + 1,
      consecutiveFailures: 3,
      lastErrorCode: "sink_failed",
    });
    expect(await store.open(tenant, "late", LEASE_MS)).toBeUndefined();
    expect((await store.readAll()).get(tenant)).toMatchObject({ watermark: iso(T0 - 5), consecutiveFailures: 3, lastErrorCode: "sink_failed" });
  });
});

describe("PullStateStore: the row's columns", () => {
  it("reads back the state it saved: what was absent stays absent, an instant at its first page stays itself", async () => {
    const { store, otherInstance } = faultyStore(() => T0);
    const tenant = guid();
    const lease = (await store.open(tenant, "a", LEASE_MS))!;
    await lease.save();
    const blank = { apiCalls: [], consecutiveFailures: 0, deadLetters: 0, lastAlertCount: 0, leaseOwner: "a", leaseUntil: T0 + LEASE_MS };
    expect(await otherInstance.read(tenant)).toEqual({ delivered: expect.anything(), ...blank });

    const window = { from: iso(T0 - 60_000), to: iso(T0), position: iso(T0 - 30_000), nextEnd: iso(T0), instant: { pass: 0, skip: 0, foundNew: false } };
    lease.state.window = { ...window, instant: { ...window.instant } };
    await lease.save();
    expect(await otherInstance.read(tenant)).toEqual({ delivered: expect.anything(), ...blank, window });
  });

  it("reads a row another version or a hand edit left defensively: numbers as text (the Tables client hands an infinite Double back as text), a negative pass, half a span, a bad sink entry", async () => {
    const { otherInstance, raw } = faultyStore(() => T0);
    const tenant = guid();
    const [from, to] = [iso(T0 - 60_000), iso(T0)];
    await (await raw()).createEntity({
      partitionKey: tenant,
      rowKey: "pull",
      consecutiveFailures: "3",
      deadLetters: "2",
      watermark: "",
      windowFrom: from,
      windowTo: to,
      windowDensity: 0,
      windowInstantPass: -1,
      windowInstantSkip: 3,
      invalidSpanFrom: iso(T0 - 5),
      invalidSpanRuns: 2,
      sinkProgress: JSON.stringify({ splunk: { parkedFrom: -1, parkedTo: 2 }, blob: { parkedFrom: 1, parkedTo: 3 } }),
      accessTokenExpiresAt: 0,
      lastAlertCount: { value: "Infinity", type: "Double" },
    });
    expect(await otherInstance.read(tenant)).toEqual({
      delivered: expect.anything(),
      apiCalls: [],
      consecutiveFailures: 0,
      deadLetters: 0,
      window: { from, to, position: from, nextEnd: to },
      sinks: { blob: { parkedFrom: 1, parkedTo: 3 } },
    });
  });
});
