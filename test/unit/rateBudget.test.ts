import { describe, expect, it } from "vitest";
import { DefenderApiError } from "../../shared/defender/defenderClient";
import { RateBudget } from "../../shared/defender/rateBudget";
import { fakeTime as fakeTimeFrom } from "../harness/fakeTime";

const T0 = Date.parse("2025-06-01T12:00:00Z");
const FAR = T0 + 24 * 3600_000;

const fakeTime = (start = T0) => fakeTimeFrom(start);

describe("RateBudget", () => {
  it("allows 90 calls a minute by default; the 91st waits until the first leaves the window", async () => {
    const time = fakeTime();
    const budget = new RateBudget(time);
    for (let i = 0; i < 90; i++) {
      time.state.now = T0 + i * 100;
      await budget.acquire("t1", FAR);
    }
    expect(time.state.sleeps).toEqual([]);
    time.state.now = T0 + 20_000;
    await budget.acquire("t1", FAR);
    expect(time.state.sleeps).toEqual([40_000]);
    expect(time.state.now).toBe(T0 + 60_000);
    // Another tenant has its own budget.
    await budget.acquire("t2", FAR);
    expect(time.state.sleeps).toHaveLength(1);
    // The 92nd waits for the second call (T0 + 100) to leave the window.
    await budget.acquire("t1", FAR);
    expect(time.state.sleeps).toEqual([40_000, 100]);
  });

  it("enforces the hourly limit (1,470 by default) across many minutes", async () => {
    const time = fakeTime();
    const budget = new RateBudget(time);
    for (let i = 0; i < 1470; i++) await budget.acquire("t1", FAR);
    const calls = budget.snapshot("t1");
    expect(calls).toHaveLength(1470);
    expect(calls[0]).toBe(T0);
    // 1,470 calls at 90 a minute: 16 full minutes, and the last 30 at the start of the 17th.
    expect(time.state.now).toBe(T0 + 16 * 60_000);
    expect(calls.filter((at) => at === T0 + 16 * 60_000)).toHaveLength(30);
    await budget.acquire("t1", FAR);
    expect(time.state.now).toBe(T0 + 3600_000);
    // The 90 calls of the first minute left the hour window; the new one joined it.
    expect(budget.snapshot("t1")).toHaveLength(1470 - 90 + 1);
  });

  it("takes custom limits", async () => {
    const time = fakeTime();
    const budget = new RateBudget({ ...time, perMinute: 2, perHour: 3 });
    await budget.acquire("t", FAR);
    await budget.acquire("t", FAR);
    await budget.acquire("t", FAR);
    expect(time.state.now).toBe(T0 + 60_000);
    await budget.acquire("t", FAR);
    expect(time.state.now).toBe(T0 + 3600_000);
    expect(() => new RateBudget({ ...time, perMinute: 0 })).toThrow(RangeError);
  });

  it("throws budget_exhausted without waiting when the slot frees only after the deadline", async () => {
    const time = fakeTime();
    const budget = new RateBudget({ ...time, perMinute: 3 });
    for (let i = 0; i < 3; i++) await budget.acquire("t", FAR);
    const error = await budget.acquire("t", T0 + 59_999).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DefenderApiError);
    expect(error).toMatchObject({ name: "DefenderApiError", code: "budget_exhausted", retryable: true });
    expect(time.state.sleeps).toEqual([]);
    expect(budget.snapshot("t")).toHaveLength(3);
    // A deadline exactly at the slot is fine.
    await budget.acquire("t", T0 + 60_000);
    expect(time.state.now).toBe(T0 + 60_000);
  });

  it("does not spin when the clock does not move (sleep alone proves the time passed)", async () => {
    let sleeps = 0;
    const budget = new RateBudget({ clock: () => T0, sleep: async () => void sleeps++, perMinute: 1 });
    await budget.acquire("t", FAR);
    await budget.acquire("t", FAR);
    expect(sleeps).toBe(1);
  });

  it("carries the last hour's calls to another process through snapshot/restore", async () => {
    const time = fakeTime();
    const first = new RateBudget(time);
    for (let i = 0; i < 90; i++) await first.acquire("t", FAR);
    const saved = first.snapshot("t");
    expect(saved).toHaveLength(90);
    expect(JSON.stringify(saved).length).toBeLessThan(1500);

    time.state.now = T0 + 10_000;
    const second = new RateBudget(time);
    second.restore("t", saved);
    await second.acquire("t", FAR);
    expect(time.state.sleeps).toEqual([50_000]);

    // Restoring what a budget already knows does not count those calls twice.
    const before = second.snapshot("t");
    second.restore("t", before);
    second.restore("t", saved);
    expect(second.snapshot("t")).toEqual(before);
  });

  it("restores defensively: drops old and non-numeric times, clamps future ones, caps at the hourly limit", () => {
    const time = fakeTime(T0 + 3 * 3600_000);
    const budget = new RateBudget({ ...time, perMinute: 5, perHour: 10 });
    const now = time.state.now;
    const many = Array.from({ length: 50 }, (_, i) => now - 1000 * (50 - i));
    budget.restore("t", [now - 2 * 3600_000, Number.NaN, ...many, now + 600_000]);
    const kept = budget.snapshot("t");
    expect(kept).toHaveLength(10);
    expect(kept[kept.length - 1]).toBe(now);
    expect(kept[0]).toBe(now - 1000 * 9);
    budget.restore("gone", [now - 2 * 3600_000]);
    expect(budget.snapshot("gone")).toEqual([]);
  });

  it("keeps memory bounded: forgets tenants idle for an hour", async () => {
    const time = fakeTime();
    const budget = new RateBudget(time);
    for (let i = 0; i < 200; i++) await budget.acquire(`tenant-${i}`, FAR);
    expect(budget.trackedTenants).toBe(200);
    time.state.now += 3600_000 + 1;
    await budget.acquire("fresh", FAR);
    expect(budget.trackedTenants).toBe(1);
    expect(budget.snapshot("tenant-0")).toEqual([]);
  });
});
