/**
 * The bound every storage, sink and notification call carries (shared/time/timeoutSignal.ts). It
 * used to be `AbortSignal.any([AbortSignal.timeout(ms), caller])`, whose timeout Node garbage-collects
 * when nothing but the composite refers to it: after a collection the call had no bound at all. A CI
 * run caught it as a blob download held 8 s that the sink's 300 ms bound never cut short.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { BlobAlertSink, SinkError } from "../../shared/sinks/blobAlertSink";
import { timeoutSignal } from "../../shared/time/timeoutSignal";
import { blobListing, scriptedStorage } from "../harness/scriptedStorage";

setFlagsFromString("--expose-gc");
const collectGarbage = runInNewContext("gc") as () => void;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Full collections while the bound is pending, as a busy process has them. */
async function collectWhilePending(): Promise<void> {
  for (let i = 0; i < 3; i += 1) {
    collectGarbage();
    await sleep(20);
  }
}

describe("timeoutSignal", () => {
  it("still fires after garbage collections when only the signal handed on refers to the bound", async () => {
    // As a sink builds it: the caller's controller and the timeout are reachable only through the result.
    const handedOn = (() => timeoutSignal(150, new AbortController().signal))();
    const fired = new Promise((resolve) => handedOn.addEventListener("abort", resolve, { once: true }));
    await collectWhilePending();
    // Waits well past the bound (a loaded machine runs timers late), and no longer than needed.
    await Promise.race([fired, sleep(5_000)]);
    expect(handedOn.aborted).toBe(true);
    expect((handedOn.reason as Error).name).toBe("TimeoutError");
  });

  it("fires with the caller's reason as soon as the caller aborts, before its own bound", async () => {
    const caller = new AbortController();
    const signal = timeoutSignal(60_000, caller.signal);
    expect(signal.aborted).toBe(false);
    caller.abort(new Error("run ended"));
    expect(signal.aborted).toBe(true);
    expect((signal.reason as Error).message).toBe("run ended");
  });

  it("fires on its own bound without a caller, and not before", async () => {
    const started = Date.now();
    const signal = timeoutSignal(300);
    expect(signal.aborted).toBe(false);
    await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
    // A timer never fires early; the millisecond is Date.now()'s rounding.
    expect(Date.now() - started).toBeGreaterThanOrEqual(299);
    expect((signal.reason as Error).name).toBe("TimeoutError");
  });

  it("gives a blob sink's read of earlier attempts up on its own timeout though collections run while storage holds the answer", async () => {
    const storage = await scriptedStorage(
      (req) => (req.url?.includes("comp=list") ? blobListing([]) : { status: 201 }),
      (req) => (req.url?.includes("comp=list") ? 8_000 : 0),
    );
    try {
      const sink = new BlobAlertSink(storage.container, 300);
      const started = Date.now();
      const read = sink.storedVersions({ tenantId: "5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c", pageFrom: "2025-03-04T05:06:07.089Z", pageTo: "2025-03-05T00:10:00.000Z" }, { signal: new AbortController().signal });
      const outcome = read.then(
        () => "resolved",
        (error: unknown) => error,
      );
      await collectWhilePending();
      expect(await outcome).toEqual(new SinkError("Reading earlier attempts of the page failed (no HTTP response)"));
      expect(Date.now() - started).toBeLessThan(4_000);
      expect(storage.requests.some((r) => r.query.includes("comp=list"))).toBe(true);
    } finally {
      await storage.close();
    }
  });

  it("is the only way shared/ bounds a call: no module builds a bound from AbortSignal.timeout", () => {
    const root = join(__dirname, "../../shared");
    const offenders = (readdirSync(root, { recursive: true }) as string[])
      .filter((file) => file.endsWith(".ts") && !file.endsWith("timeoutSignal.ts"))
      .filter((file) => readFileSync(join(root, file), "utf8").includes("AbortSignal.timeout("));
    expect(offenders).toEqual([]);
  });
});
