import { describe, expect, it } from "vitest";
import { pullHealthOf } from "../../shared/pull/health";
import { emptyState } from "../../shared/pull/pullState";

const NOW = Date.parse("2026-11-30T12:00:00.000Z");
const hoursAgo = (h: number) => new Date(NOW - h * 3600_000).toISOString();

describe("pull health warnings", () => {
  it("shows an event's warning for a day after its latest occurrence, then only its counter", () => {
    const state = {
      ...emptyState(),
      deadLetters: 2,
      lastDeadLetterReason: "missing_id",
      lastDeadLetterAt: hoursAgo(1),
      lastWarningCode: "unstable_order",
      lastWarningMessage: "order kept changing",
      lastWarningAt: hoursAgo(1),
      incidents: { leaseLost: 1, lastLeaseLostAt: hoursAgo(2), releaseFailed: 1, lastReleaseFailedAt: hoursAgo(30) },
    };
    const fresh = pullHealthOf(state, () => NOW);
    expect(fresh.warnings.map((w) => w.code).sort()).toEqual(["dead_letters", "lease_lost", "unstable_order"]);
    const dayLater = pullHealthOf(state, () => NOW + 24 * 3600_000);
    expect(dayLater.warnings).toEqual([]);
    expect(dayLater.deadLetters).toBe(2);
  });

  it("warns about clock skew beyond a minute for as long as it is measured", () => {
    expect(pullHealthOf({ ...emptyState(), clockSkewMs: -90_000, lastRunAt: hoursAgo(48) }, () => NOW).warnings.map((w) => w.code)).toEqual(["clock_skew"]);
    expect(pullHealthOf({ ...emptyState(), clockSkewMs: -30_000 }, () => NOW).warnings).toEqual([]);
  });
});
