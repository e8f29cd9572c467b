import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { TableClient } from "@azure/data-tables";
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from "vitest";
import { TABLES } from "../../shared/storage/names";
import { generateAlerts, makeAlert, toMdeTimestamp } from "../fakes/alerts";
import { capturingLogger, connectedTenant, deliveredEnvelopes, deliveredIds, deliveryTally, minutesAgo, pipelineServices, seededRandom, type DeliveryTally } from "../harness/pullFixture";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * Crash safety with real processes: each pull runs the compiled app (dist/) in a child process
 * that is SIGKILLed at a chosen phase of a page (before its sink write, after it, after a state
 * save) or after a random delay. Whatever the timing, no alert version the API served may be
 * missing from the blob sink once a later pull completes, and the blob sink holds no version
 * twice (it de-duplicates the resumed page).
 */

const CHILD = fileURLToPath(new URL("../harness/pullChild.mjs", import.meta.url));
type Phase = "before_write" | "after_write" | "after_save";

interface ChildEvent {
  event: "write" | "save" | "crash" | "outcome";
  n?: number;
  [field: string]: unknown;
}

interface ChildRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  events: ChildEvent[];
  outcome: ChildEvent | undefined;
  stderr: string;
  ms: number;
}

let env: TestEnvironment;
let pullState: TableClient;
let children: ChildPool;

beforeAll(async () => {
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "50" });
  const connection = inject("storageConnectionString");
  pullState = TableClient.fromConnectionString(connection, TABLES.pullState, { allowInsecureConnection: true });
  children = new ChildPool(2);
  children.fill();
});
afterAll(async () => {
  children?.drain();
  await env?.stop();
});

function childSettings(): string {
  return JSON.stringify({ ...env.env, AzureWebJobsStorage: inject("storageConnectionString") });
}

interface WarmChild {
  /** Hands the child its tenant and crash plan and starts the pull; `killAfterMs` has the parent SIGKILL it that long after. */
  go(settings: Record<string, string>, killAfterMs?: number): Promise<ChildRun>;
  /** Ends a child that was never told to go. */
  discard(): void;
}

/**
 * A child process that loads the compiled app now and pulls when told (PULL_CHILD_WAIT): loading
 * takes a second or more, so the pool below keeps children loading while others pull.
 */
function spawnWarm(): WarmChild {
  const child = spawn(process.execPath, [CHILD], {
    env: { ...process.env, PULL_CHILD_SETTINGS: childSettings(), PULL_CHILD_WAIT: "1" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  let started = 0;
  let timer: NodeJS.Timeout | undefined;
  let ready = false;
  let start: (() => void) | undefined;
  child.stdin.on("error", () => undefined);
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
    if (!ready && stdout.includes('"event":"ready"')) {
      ready = true;
      start?.();
    }
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const closed = new Promise<ChildRun>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      const events: ChildEvent[] = [];
      for (const line of stdout.split("\n")) {
        if (!line.trim()) continue;
        try {
          const event = JSON.parse(line) as { event: string };
          if (event.event !== "ready" && event.event !== "go") events.push(event as ChildEvent);
        } catch {
          // A line cut by the kill.
        }
      }
      resolve({ code, signal, events, outcome: events.find((e) => e.event === "outcome"), stderr, ms: started ? Date.now() - started : 0 });
    });
  });
  void closed.catch(() => undefined);
  return {
    go(settings, killAfterMs) {
      start = () => {
        started = Date.now();
        child.stdin.end(`${JSON.stringify(settings)}\n`);
        if (killAfterMs !== undefined) timer = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      };
      if (ready) start();
      return closed;
    },
    discard() {
      if (!start) child.kill("SIGKILL");
    },
  };
}

/** Children kept loading ahead of need. */
class ChildPool {
  private warm: WarmChild[] = [];
  constructor(private readonly size: number) {}

  fill(): void {
    while (this.warm.length < this.size) this.warm.push(spawnWarm());
  }

  /** One pull of `tenantId` in a child process, with the crash plan in its environment. */
  run(tenantId: string, plan: { phase?: Phase; at?: number; killAfterMs?: number } = {}): Promise<ChildRun> {
    const child = this.warm.shift() ?? spawnWarm();
    this.fill();
    return child.go({ PULL_CHILD_TENANT: tenantId, CRASH_PHASE: plan.phase ?? "", CRASH_AT: String(plan.at ?? 0) }, plan.killAfterMs);
  }

  drain(): void {
    for (const child of this.warm.splice(0)) child.discard();
  }
}

/** What a lapsed lease looks like to the next pull: the dead owner's lease ran out. */
async function lapseLease(tenantId: string): Promise<void> {
  try {
    // The tenant's own partition, row "pull" (see PullStateStore).
    await pullState.updateEntity({ partitionKey: tenantId, rowKey: "pull", leaseUntil: 0 }, "Merge");
  } catch (error) {
    // Killed before it took the lease: nothing to lapse.
    if ((error as { statusCode?: number }).statusCode !== 404) throw error;
  }
}

/** Pulls in fresh children until one finishes its window; returns the runs. */
async function pullToCompletion(tenantId: string, maxRuns = 4): Promise<ChildRun[]> {
  const runs: ChildRun[] = [];
  for (let i = 0; i < maxRuns; i++) {
    const run = await children.run(tenantId);
    runs.push(run);
    if (run.code !== 0 || !run.outcome) throw new Error(`pull child failed (code ${run.code}, signal ${run.signal}): ${run.stderr.slice(0, 2000)}`);
    expect(run.outcome).toMatchObject({ outcome: "pulled" });
    if (run.outcome["complete"] === true) return runs;
  }
  throw new Error(`no pull completed in ${maxRuns} runs`);
}

type Tally = DeliveryTally;

const tally = (tenantId: string): Promise<Tally> => deliveryTally(env, tenantId);

const totals = { kills: 0, served: 0, delivered: 0, duplicates: 0, missing: 0 };

function record(t: Tally): void {
  totals.served += t.served;
  totals.delivered += t.delivered;
  totals.duplicates += t.duplicates;
  totals.missing += t.missing.length + t.missingFinal.length;
}

/** A pull in the test's own process (same settings, real sink): for the quick checks around the crashes. */
function inProcessPull(tenantId: string) {
  return pipelineServices(env).tenantPull.run(tenantId, capturingLogger());
}

const prng = seededRandom;

const ALERTS = 400;

describe("pull crash safety (real SIGKILLed child processes)", () => {
  // `apiBehindMs`: the Defender API's clock runs that far behind the host's, so the first page
  // of a window always ends the window by the API's Date header (without it, that happens only
  // when the first answer comes back within the same wall-clock second the window was planned).
  const cases = (
    [
      ["before_write", 1, 0],
      ["before_write", 6, 0],
      ["after_write", 1, 0],
      ["after_write", 1, 3000],
      ["after_write", 6, 0],
      ["after_save", 1, 0],
      ["after_save", 6, 0],
    ] as const
  ).map(([phase, at, apiBehindMs]) => ({
    phase: phase as Phase,
    at,
    apiBehindMs,
    name: `${phase} #${at}${apiBehindMs ? ` with the API clock ${apiBehindMs / 1000} s behind` : ""}`,
  }));

  it.each(cases)(
    "loses and duplicates nothing when killed $name",
    async ({ phase, at, apiBehindMs, name }) => {
      const tenantId = await connectedTenant(env, `Crash ${phase} ${at}`);
      env.defender.addAlerts(tenantId, generateAlerts(tenantId, ALERTS, { start: minutesAgo(150), spacingMs: 20_000 }));
      env.defender.setClockOffset(-apiBehindMs);
      onTestFinished(() => env.defender.setClockOffset(0));

      const crashed = await children.run(tenantId, { phase, at });
      expect(crashed.stderr).toBe("");
      expect(crashed.signal).toBe("SIGKILL");
      expect(crashed.events.at(-1)).toMatchObject({ event: "crash", phase, n: at });
      totals.kills++;
      const crashWrites = crashed.events.filter((e) => e.event === "write");

      // The dead pull's lease blocks the tenant until it lapses.
      expect(await inProcessPull(tenantId)).toEqual({ outcome: "busy" });
      await lapseLease(tenantId);

      const recovery = await pullToCompletion(tenantId);
      const firstWrite = recovery[0]?.events.find((e) => e.event === "write");
      // One more cycle finds nothing new.
      expect(await inProcessPull(tenantId)).toMatchObject({ outcome: "pulled", alerts: 0, complete: true });

      const t = await tally(tenantId);
      record(t);
      console.log(
        `[crash ${name}] killed after ${crashed.ms} ms with ${crashWrites.length - (phase === "before_write" ? 1 : 0)} page(s) written; ` +
          `recovered in ${recovery.length} run(s) (${recovery.map((r) => r.ms).join("+")} ms): served ${t.served}, delivered ${t.delivered}, ` +
          `unique ${t.unique}, duplicates ${t.duplicates}, missing ${t.missing.length}` +
          (t.duplicates > 0 || t.missing.length > 0
            ? `; crashed run's last page ${JSON.stringify(crashWrites.at(-1) ?? null)}, resumed run's first page ${JSON.stringify(firstWrite ?? null)}`
            : ""),
      );
      expect(t.served).toBe(ALERTS);
      expect(t.missing).toEqual([]);
      expect(t.missingFinal).toEqual([]);
      expect(t.duplicated).toEqual([]);
      expect(t.duplicates).toBe(0);
      expect(t.delivered).toBe(ALERTS);
    },
    30_000,
  );

  it("loses and duplicates nothing when killed inside a crowded millisecond, with the order changed for the resume", async () => {
    const tenantId = await connectedTenant(env, "Crash in a crowded millisecond");
    const stamp = toMdeTimestamp(Date.now() - 20 * 60_000);
    const crowd = Array.from({ length: 300 }, (_, i) => makeAlert({ id: `da-crowd-${String(i).padStart(3, "0")}`, lastUpdateTime: stamp }));
    env.defender.addAlerts(tenantId, [...crowd, ...generateAlerts(tenantId, 60, { start: minutesAgo(40), spacingMs: 30_000 })]);
    onTestFinished(() => env.defender.setOrder(tenantId, "sorted"));

    // Write #1 is the window's first page; #2 and #3 are pages inside the millisecond ($skip 50, 100).
    const crashed = await children.run(tenantId, { phase: "after_write", at: 3 });
    expect(crashed.stderr).toBe("");
    expect(crashed.signal).toBe("SIGKILL");
    totals.kills++;
    const saved = (await pipelineServices(env).pullState.read(tenantId))?.window?.instant;
    expect(saved).toMatchObject({ pass: 0 });
    // The service orders the millisecond differently after the crash: the in-flight page holds other alerts now.
    env.defender.setOrder(tenantId, "shuffled");
    await lapseLease(tenantId);
    await pullToCompletion(tenantId);
    expect(await inProcessPull(tenantId)).toMatchObject({ outcome: "pulled", alerts: 0, complete: true });

    const t = await tally(tenantId);
    record(t);
    expect(t.missing).toEqual([]);
    expect(t.missingFinal).toEqual([]);
    expect(t.duplicated).toEqual([]);
    expect(t.delivered).toBe(360);
  }, 30_000);

  it("loses and duplicates nothing when killed at random times while alerts keep changing", async () => {
    const seed = Number(process.env["CRASH_SEED"] ?? 20240607);
    const random = prng(seed);
    const alerts = 500;
    const tenantId = await connectedTenant(env, "Random kills");
    env.defender.addAlerts(tenantId, generateAlerts(tenantId, alerts, { start: minutesAgo(150), spacingMs: 17_000 }));
    env.defender.setLatency(20, tenantId);
    // Rounds go on until enough of them ended in a kill (a child may finish before its kill).
    const wantedKills = 5;
    const maxRounds = 10;
    // How long one uninterrupted pull of the same backlog takes once the app is loaded.
    const calibration = await connectedTenant(env, "Random kills calibration");
    env.defender.addAlerts(calibration, generateAlerts(calibration, alerts, { start: minutesAgo(150), spacingMs: 17_000 }));
    env.defender.setLatency(20, calibration);
    const reference = await children.run(calibration);
    expect(reference.outcome, reference.stderr).toMatchObject({ outcome: "pulled", complete: true, alerts });
    const typicalMs = reference.ms;
    env.defender.setLatency(0, calibration);

    // Kills are spread over the run time of the latest child that finished on its own: later
    // rounds have less to read than the first.
    let runMs = typicalMs;
    let kills = 0;
    let added = 0;
    let rounds = 0;
    for (let round = 0; round < maxRounds && kills < wantedKills; round++) {
      rounds++;
      if (round > 0) {
        // New versions: alerts whose current version is in the sink change now (a version the
        // pull never delivered is not replaced, so every served version stays readable), and
        // late alerts land inside the overlap.
        const stored = new Set(deliveredIds(await deliveredEnvelopes(env, tenantId)));
        const current = env.defender.alerts(tenantId).filter((a) => stored.has(`${a.id}@${a.lastUpdateTime}`));
        for (let i = 0; i < 5 && current.length > 0; i++) {
          const pick = current.splice(Math.floor(random() * current.length), 1)[0];
          if (pick) env.defender.updateAlert(tenantId, pick.id, { status: "InProgress", lastUpdateTime: toMdeTimestamp(Date.now() - i) });
        }
        const late = Array.from({ length: 40 }, (_, i) =>
          makeAlert({ id: `late-${round}-${i}`, lastUpdateTime: toMdeTimestamp(Date.now() - 1000 - Math.floor(random() * 300_000)) }),
        );
        env.defender.addAlerts(tenantId, late);
        added += late.length;
      }
      const delay = Math.floor(random() * runMs * 0.9);
      const run = await children.run(tenantId, { killAfterMs: delay });
      const killed = run.signal === "SIGKILL";
      if (killed) kills++;
      else {
        expect(run.code, run.stderr).toBe(0);
        if (run.outcome?.["complete"] === true) runMs = run.ms;
      }
      await lapseLease(tenantId);
      const t = await tally(tenantId);
      const writes = run.events.filter((e) => e.event === "write");
      const last = run.events.filter((e) => e.event === "write" || e.event === "save").at(-1);
      console.log(
        `[random round ${round}] kill after ${delay} ms: ${killed ? "killed" : `exited first (${JSON.stringify(run.outcome ?? null)})`}; ` +
          `${writes.length} sink write(s), ${run.events.filter((e) => e.event === "save").length} save(s), ` +
          `last ${last ? `${last.event} #${String(last.n)}` : "none"}; served ${t.served}, delivered ${t.delivered}, duplicates ${t.duplicates}`,
      );
    }

    await pullToCompletion(tenantId);
    expect(await inProcessPull(tenantId)).toMatchObject({ outcome: "pulled", complete: true });
    env.defender.setLatency(0, tenantId);

    const t = await tally(tenantId);
    record(t);
    totals.kills += kills;
    console.log(
      `[random] seed ${seed}, typical pull ${typicalMs} ms, ${kills}/${rounds} rounds killed, ${alerts + added} alerts: ` +
        `served ${t.served}, delivered ${t.delivered}, unique ${t.unique}, duplicates ${t.duplicates}, missing ${t.missing.length}, missing final ${t.missingFinal.length}` +
        (t.duplicated.length ? `; duplicated ${t.duplicated.slice(0, 5).join(", ")}` : ""),
    );
    expect(kills).toBeGreaterThanOrEqual(3);
    expect(t.missing).toEqual([]);
    expect(t.missingFinal).toEqual([]);
    expect(t.duplicated).toEqual([]);
    expect(t.duplicates).toBe(0);
  }, 60_000);

  afterAll(() => {
    console.log(
      `[crash totals] kills ${totals.kills}, served ${totals.served}, delivered ${totals.delivered}, duplicates ${totals.duplicates}, missing ${totals.missing}`,
    );
  });
});
