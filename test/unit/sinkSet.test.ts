import { describe, expect, it } from "vitest";
import { SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink } from "../../shared/sinks/alertSink";
import { ParkingError } from "../../shared/sinks/parking";
import { MemoryParking } from "../harness/memoryParking";
import { SinkSet, type SinkProgressMap } from "../../shared/sinks/sinkSet";

/** SinkSet's rules at its ports: sinks and the parking store are in memory here; multiSink.test.ts runs it for real. */

const TENANT = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

function envelope(id: string): AlertEnvelope {
  const lastUpdateTime = "2026-11-30T10:00:00.000Z";
  return {
    tenantId: TENANT,
    tenantName: "Contoso",
    source: "mde",
    pulledAt: lastUpdateTime,
    alert: { id, lastUpdateTime, updatedAtKey: "2026-11-30T10:00:00.0000000Z", updatedAtMs: Date.parse(lastUpdateTime), json: JSON.stringify({ id, lastUpdateTime }) },
  };
}

const key = (n: number): AlertBatchKey => ({ tenantId: TENANT, pageFrom: `2026-11-30T10:0${n}:00.000Z`, pageTo: `2026-11-30T10:0${n + 1}:00.000Z`, skip: 0 });

class RecordingSink implements AlertSink {
  readonly pages: string[][] = [];
  down = false;
  async write(_key: AlertBatchKey, alerts: readonly AlertEnvelope[]) {
    if (this.down) throw new SinkError("Sending to the collector failed (HTTP 503)", 503);
    this.pages.push(alerts.map((a) => a.alert.id));
  }
}

function setup() {
  const parking = new MemoryParking();
  const blob = new RecordingSink();
  const siem = new RecordingSink();
  const set = new SinkSet(
    [
      { name: "blob", sink: blob },
      { name: "splunk", sink: siem },
    ],
    parking,
    () => Date.parse("2026-11-30T12:00:00Z"),
  );
  const progress: SinkProgressMap = {};
  return { parking, blob, siem, set, progress };
}

const options = (saved: () => Promise<void> = async () => undefined) => ({ until: Number.POSITIVE_INFINITY, saved, refused: async () => undefined });

describe("SinkSet", () => {
  it("refuses to be built for one sink: one sink is written directly", () => {
    expect(() => new SinkSet([{ name: "blob", sink: new RecordingSink() }], new MemoryParking(), Date.now)).toThrow(RangeError);
  });

  it("parks a page for a sink that fails, and every later page behind it while it is behind, without trying it again", async () => {
    const { blob, siem, set, progress, parking } = setup();
    siem.down = true;
    const first = await set.deliver(key(1), [envelope("a")], progress, {});
    expect(first).toMatchObject({ delivered: ["blob"], parked: ["splunk"] });
    siem.down = false;
    // Behind: parked without being tried, so its order holds.
    const second = await set.deliver(key(2), [envelope("b")], progress, {});
    expect(second).toMatchObject({ delivered: ["blob"], parked: ["splunk"] });
    expect(siem.pages).toEqual([]);
    expect(blob.pages).toEqual([["a"], ["b"]]);
    expect(progress["splunk"]).toMatchObject({ parkedFrom: 0, parkedTo: 2, behindSince: "2026-11-30T12:00:00.000Z", lastErrorCode: "sink_http_503" });
    expect([...parking.blobs.keys()]).toEqual([`${TENANT}/splunk/0`, `${TENANT}/splunk/1`]);
  });

  it("drains parked pages oldest first, saving after each, and is caught up when the last is delivered", async () => {
    const { siem, set, progress, parking } = setup();
    siem.down = true;
    await set.deliver(key(1), [envelope("a")], progress, {});
    await set.deliver(key(2), [envelope("b")], progress, {});
    siem.down = false;
    let saves = 0;
    const drained = await set.drain(TENANT, progress, options(async () => void saves++));
    expect(drained.delivered).toBe(2);
    expect(siem.pages).toEqual([["a"], ["b"]]);
    expect(saves).toBe(2);
    expect(progress["splunk"]).toMatchObject({ parkedFrom: 2, parkedTo: 2 });
    expect(progress["splunk"]?.behindSince).toBeUndefined();
    expect(parking.blobs.size).toBe(0);
    // Caught up: the next page goes straight to it.
    expect(await set.deliver(key(3), [envelope("c")], progress, {})).toMatchObject({ delivered: ["blob", "splunk"], parked: [] });
  });

  it("stops draining a sink at its first failure and keeps the rest parked", async () => {
    const { siem, set, progress } = setup();
    siem.down = true;
    for (const n of [1, 2, 3]) await set.deliver(key(n), [envelope(`x${n}`)], progress, {});
    const drained = await set.drain(TENANT, progress, options());
    expect(drained.delivered).toBe(0);
    expect(progress["splunk"]).toMatchObject({ parkedFrom: 0, parkedTo: 3 });
  });

  it("stops draining at the deadline", async () => {
    const { siem, set, progress } = setup();
    siem.down = true;
    await set.deliver(key(1), [envelope("a")], progress, {});
    siem.down = false;
    const drained = await set.drain(TENANT, progress, { until: 0, saved: async () => undefined, refused: async () => undefined });
    expect(drained.delivered).toBe(0);
    expect(siem.pages).toEqual([]);
  });

  it("hands over what a catching-up sink refuses before the parked page is removed: a failure after it loses nothing", async () => {
    const parking = new MemoryParking();
    let refuseBig = false;
    const sentinel: AlertSink = {
      async write(_k, alerts) {
        if (!refuseBig) throw new SinkError("Uploading to Log Analytics failed (HTTP 503)", 503);
        return { refused: alerts.filter((a) => a.alert.id === "big").map((a) => ({ alert: a.alert, reason: "oversized" as const, detail: "over 64 KB" })) };
      },
    };
    const set = new SinkSet([{ name: "blob", sink: new RecordingSink() }, { name: "sentinel", sink: sentinel }], parking, Date.now);
    const progress: SinkProgressMap = {};
    await set.deliver(key(1), [envelope("big"), envelope("a")], progress, {});
    refuseBig = true;
    const events: string[] = [];
    // The dead-letter write fails: the drain must stop with the parked page still there.
    await expect(
      set.drain(TENANT, progress, {
        until: Number.POSITIVE_INFINITY,
        saved: async () => void events.push("saved"),
        refused: async (refusals) => {
          events.push(`refused ${refusals.map((r) => `${r.sink}:${r.version.alert.id}`).join(",")}`);
          throw new Error("Storing a dead letter failed (HTTP 503)");
        },
      }),
    ).rejects.toThrow("dead letter");
    expect(events).toEqual(["refused sentinel:big"]);
    expect(progress["sentinel"]).toMatchObject({ parkedFrom: 0, parkedTo: 1 });
    expect(parking.blobs.size).toBe(1);
  });

  it("fails the page when it cannot be parked, so the pull does not acknowledge it", async () => {
    const { siem, set, progress, parking } = setup();
    siem.down = true;
    parking.failing = true;
    await expect(set.deliver(key(1), [envelope("a")], progress, {})).rejects.toBeInstanceOf(ParkingError);
  });

  it("passes on what a sink refuses, with the sink's name", async () => {
    const progress: SinkProgressMap = {};
    const refusing = new SinkSet(
      [
        { name: "blob", sink: new RecordingSink() },
        {
          name: "sentinel",
          sink: {
            async write(_k, alerts) {
              return { refused: alerts.map((a) => ({ alert: a.alert, reason: "oversized" as const, detail: "over 64 KB" })) };
            },
          },
        },
      ],
      new MemoryParking(),
      Date.now,
    );
    const outcome = await refusing.deliver(key(1), [envelope("big")], progress, {});
    expect(outcome.refused.map((r) => [r.sink, r.version.alert.id])).toEqual([["sentinel", "big"]]);
  });

  it("lets an error that is not a sink failure through: a bug is not an outage", async () => {
    const set = new SinkSet(
      [
        { name: "blob", sink: new RecordingSink() },
        {
          name: "eventhubs",
          sink: {
            async write() {
              throw new TypeError("undefined is not a function");
            },
          },
        },
      ],
      new MemoryParking(),
      Date.now,
    );
    await expect(set.deliver(key(1), [envelope("a")], {}, {})).rejects.toBeInstanceOf(TypeError);
  });
});
