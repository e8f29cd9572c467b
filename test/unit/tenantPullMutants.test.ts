import { randomUUID } from "node:crypto";
import type { Agent } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { recordingLog } from "../harness/recordingLog";
import type { ConsentResponse } from "../../shared/consent/consentFlow";
import { AccessTokenSource, classifyApplicationFailure, TokenUnavailableError } from "../../shared/pull/accessTokens";
import { DeadLetterRedrive } from "../../shared/pull/redrive";
import type { DeadLetter, DeadLetterStore } from "../../shared/sinks/deadLetters";
import { DefenderApiError } from "../../shared/sources/sourceErrors";
import type { PullReport } from "../../shared/pull/observer";
import type { PullLease, PullState, PullStateStore } from "../../shared/pull/pullState";
import { TenantPull, type PullOutcome, type TenantPullDeps } from "../../shared/pull/tenantPull";
import { DefenderClient } from "../../shared/defender/defenderClient";
import { RateBudget } from "../../shared/defender/rateBudget";
import { followableNextLink, GRAPH_MAX_TOP, GraphClient } from "../../shared/graph/graphClient";
import type { AppConfig } from "../../shared/config";
import type { TenantRecord, TenantRegistry } from "../../shared/state/tenantRegistry";
import type { PullHistoryStore } from "../../shared/pull/pullHistory";
import { tenantTokenSecretName } from "../../shared/secrets/tenantTokens";
import type { Services } from "../../shared/services";
import { SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink, type SinkWriteResult, type StoredVersion } from "../../shared/sinks/alertSink";
import { generateAlerts, makeAlert, toMdeTimestamp } from "../fakes/alerts";
import { makeGraphAlert, toGraphTimestamp } from "../fakes/graphAlerts";
import type { FakeStack } from "../fakes/fakeStack";
import { registerSecrets } from "../harness/secrecy";
import { hangingSink } from "../harness/hangingSink";

/**
 * shared/pull/tenantPull.ts, accessTokens.ts and redrive.ts without the Functions app (issue 15,
 * mutation testing): the pull wired as shared/services.ts wires it, through MSAL, the Key Vault
 * SDK and the Defender client against the in-process HTTPS fakes and the run's Azurite, on a
 * clock the tests move and with instant sleeps. Tenants are connected through the consent flow's
 * own handlers (no HTTP host). Each test asserts what an operator sees: alerts served vs
 * delivered vs duplicated, the pull state and health fields, the tenant's status, dead letters,
 * Key Vault writes and the waits the pull asked for.
 */

let stack: FakeStack;
let services: Services;
/** The pull state as another instance of the app sees it: the same storage, none of this process's memory. */
let otherInstance: PullStateStore;
let config: AppConfig;
let agent: Agent;
let fetch: typeof import("undici").fetch;
/** The app's clock: real time plus what a test adds (tokens from the fakes carry real times). */
let offsetMs = 0;
const clock = () => Date.now() + offsetMs;
/** What the pull told its observers, run by run. */
const reports: PullReport[] = [];
/** Waits the app asked for (backoffs, Retry-After), answered at once. */
const sleeps: number[] = [];

/** Page size 5: a dozen alerts already need several pages, sub-windows and `$skip` pages. */
const PAGE = 5;

const { lines, log } = recordingLog();
const operator = { kind: "user", id: "op-1", name: "Olivia Operator" };

/** An in-memory sink the test controls: every write kept, failures on demand, what it holds by page. */
class MemorySink implements AlertSink {
  readonly writes: Array<{ key: AlertBatchKey; versions: string[]; envelopes: AlertEnvelope[] }> = [];
  /** Versions (by id) the sink refuses as too large, every time. */
  readonly refuse = new Set<string>();
  /** The next this many writes fail (after `okBefore` more succeed). */
  failures = 0;
  okBefore = 0;
  /** Whether the sink can say what it holds for a page (as the blob sink can). */
  tellsStored = false;
  readonly storedVersions?: AlertSink["storedVersions"];
  private readonly held: Array<{ key: AlertBatchKey; alerts: AlertEnvelope["alert"][] }> = [];

  constructor(tellsStored = false) {
    this.tellsStored = tellsStored;
    if (tellsStored) {
      this.storedVersions = async (page) =>
        this.held
          .filter((w) => w.key.pageFrom === page.pageFrom && w.key.pageTo === page.pageTo)
          .flatMap((w) => w.alerts.map((a): StoredVersion => ({ id: a.id, updatedAtKey: a.updatedAtKey, updatedAtMs: a.updatedAtMs })));
    }
  }

  async write(key: AlertBatchKey, all: readonly AlertEnvelope[]): Promise<SinkWriteResult | void> {
    if (this.okBefore > 0) this.okBefore--;
    else if (this.failures > 0) {
      this.failures--;
      throw new SinkError("Uploading the alert batch failed (HTTP 503)", 503);
    }
    const alerts = all.filter((e) => !this.refuse.has(e.alert.id));
    this.writes.push({ key, versions: alerts.map((e) => `${e.alert.id}@${e.alert.lastUpdateTime}`), envelopes: [...alerts] });
    this.held.push({ key, alerts: alerts.map((e) => e.alert) });
    // A sink that refused nothing may answer nothing at all.
    if (alerts.length === all.length) return undefined;
    return { refused: all.filter((e) => this.refuse.has(e.alert.id)).map((e) => ({ alert: e.alert, reason: "oversized" as const, detail: "over 1 MB" })) };
  }

  versions(): string[] {
    return this.writes.flatMap((w) => w.versions);
  }
}

/** The sink of the current test (createServices takes one sink, once). */
let sink = new MemorySink();
const switchingSink: AlertSink = {
  write: (key, alerts) => sink.write(key, alerts),
  storedVersions: async (page, options) => (sink.storedVersions ? sink.storedVersions(page, options) : []),
};

beforeAll(async () => {
  const [{ startFakeStack, stackSettings }, { loadConfig }, { createServices }, undici] = await Promise.all([
    import("../fakes/fakeStack"),
    import("../../shared/config"),
    import("../../shared/services"),
    import("undici"),
  ]);
  fetch = undici.fetch;
  stack = await startFakeStack();
  registerSecrets(() => [stack.clientSecret, stack.vaultToken], "tenantPullMutants fake stack credentials");
  stack.entra.setClock(clock);
  config = loadConfig({
    ...stackSettings(stack),
    MSSP_DISPLAY_NAME: "Contoso Security",
    AzureWebJobsStorage: inject("storageConnectionString"),
    PULL_SETTLE_SECONDS: "0",
    PULL_PAGE_SIZE: String(PAGE),
    PULL_OVERLAP_MINUTES: "10",
    MDE_PARTNER_COMPANY: "TestMssp",
    MDE_PARTNER_PRODUCT: "Connector",
  });
  services = createServices(config, {
    clock,
    sleep: async (ms) => void sleeps.push(ms),
    storageTimeoutMs: 10_000,
    sink: switchingSink,
    pullObservers: [{ pulled: async (report) => void reports.push(report) }],
  });
  otherInstance = createServices(config, { clock, storageTimeoutMs: 10_000 }).pullState;
  agent = new undici.Agent({ connect: { ca: stack.certPem } });
});

afterAll(async () => {
  await agent?.close();
  await stack?.stop();
});

afterEach(() => {
  offsetMs = 0;
  sleeps.length = 0;
  lines.length = 0;
  reports.length = 0;
  sink = new MemorySink();
  if (!stack) return;
  stack.entra.clearFailures();
  stack.vault.setFailure(null);
  stack.defender.setClockOffset(0);
});

// ---- helpers ------------------------------------------------------------------------------

function titleOf(body: string): string {
  return /<title>([^<]*)<\/title>/.exec(body)?.[1] ?? "";
}

/** Registers a tenant and consents through the flow's handlers, as the admin's browser would. */
async function connected(displayName = "Fabrikam Ltd", source: "mde" | "graph" = "mde"): Promise<string> {
  const tenantId = randomUUID();
  const view = await services.tenantAdmin.register({ tenantId, displayName, ...(source === "graph" ? { source } : {}) }, operator, log);
  const url = new URL(view.consentUrl ?? "");
  const query = { link: url.searchParams.get("link"), exp: url.searchParams.get("exp"), sig: url.searchParams.get("sig") };
  const started: ConsentResponse = await services.consent.start(tenantId, query, log);
  if (started.kind !== "redirect") throw new Error(`start answered ${started.page.status} ${titleOf(started.page.body)}`);
  const answer = await fetch(started.location, { dispatcher: agent, redirect: "manual" });
  await answer.text();
  const back = answer.headers.get("location");
  if (answer.status !== 302 || !back) throw new Error(`authorize answered ${answer.status}`);
  const cookie = (started.cookies ?? []).map((c) => `${c.name}=${c.value}`).join("; ");
  const finished = await services.consent.callback(new URL(back).searchParams, cookie, log);
  if (finished.kind !== "page" || finished.page.status !== 200) throw new Error("consent did not finish");
  lines.length = 0;
  return tenantId;
}

/** Moves the test's clock and the Defender API's together. */
function advance(ms: number): void {
  offsetMs += ms;
  stack.defender.setClockOffset(offsetMs);
}

const minutesAgo = (minutes: number): Date => new Date(clock() - minutes * 60_000);

/** `count` alerts, 20 s apart, starting `minutes` ago. */
function seed(tenantId: string, count: number, minutes = 30): string[] {
  const alerts = generateAlerts(tenantId, count, { start: minutesAgo(minutes), spacingMs: 20_000 });
  stack.defender.addAlerts(tenantId, alerts);
  return alerts.map((a) => `${a.id}@${a.lastUpdateTime}`);
}

/** Runs `work` while the alert of `version` takes 5 MiB: a page of 5 may take 4 MiB, so every page that holds it is refused unread. */
async function whileHuge(tenantId: string, version: string, work: () => Promise<void>): Promise<void> {
  const id = version.split("@")[0];
  const [huge] = stack.defender.alerts(tenantId).filter((a) => a.id === id);
  stack.defender.poisonAlert(tenantId, huge!.id, JSON.stringify({ ...huge, description: "x".repeat(5 * 1024 * 1024) }));
  try {
    await work();
  } finally {
    stack.defender.poisonAlert(tenantId, huge!.id, null);
  }
}

/** Served vs delivered vs duplicated, by version. */
function tally(tenantId: string): { served: number; delivered: number; duplicates: number; missing: string[] } {
  const served = [...stack.defender.served(tenantId).keys()];
  const delivered = sink.versions();
  const unique = new Set(delivered);
  return { served: served.length, delivered: delivered.length, duplicates: delivered.length - unique.size, missing: served.filter((v) => !unique.has(v)) };
}

const stateOf = async (tenantId: string): Promise<PullState & { leaseOwner?: string }> => {
  const state = await services.pullState.read(tenantId);
  if (!state) throw new Error("no pull state");
  return state;
};

/** A TenantPull of its own (own Defender client and budget), for what createServices does not let a test set. */
function customPull(extra: Partial<TenantPullDeps> = {}, limits: { perMinute?: number; perHour?: number } = {}): TenantPull {
  const sleep = async (ms: number) => void sleeps.push(ms);
  const budget = new RateBudget({ clock, sleep, ...limits });
  const defender = new DefenderClient({ http: services.http, userAgent: "MdePartner-TestMssp-Connector/1.0", requestTimeoutMs: 30_000, budget, clock, sleep });
  return new TenantPull({
    settings: config.pull,
    defenderApiBaseUrl: config.defenderApiBaseUrl,
    tenants: services.tenants,
    pullState: services.pullState,
    tokens: services.accessTokens,
    defender,
    budget,
    sink: switchingSink,
    sinkName: "blob",
    deadLetters: services.deadLetters,
    clock,
    history: services.pullHistory,
    observers: [{ pulled: async (report) => void reports.push(report) }],
    ...extra,
  });
}

/** A registry whose point read fails as given (the rest is the real one). */
function failingRegistry(error: unknown): TenantRegistry {
  return Object.assign(Object.create(services.tenants) as TenantRegistry, {
    get: async () => {
      throw error;
    },
  });
}

/**
 * The real pull-state store, except that a rival pull ("rival-pull") of another instance takes
 * the lease just after a pull read the state. Another instance pulled the tenant just before, so
 * this process holds no row of its own to claim at open and reads it.
 */
function rivalTakesLeaseAfterRead(tenantId: string): PullStateStore {
  return Object.assign(Object.create(services.pullState) as PullStateStore, {
    open: async (...args: Parameters<PullStateStore["open"]>) => {
      await (await otherInstance.acquire(tenantId, "earlier-pull", 600_000))!.release();
      const lease = await services.pullState.open(...args);
      expect(lease?.openedFromMemory).toBe(false);
      expect(await otherInstance.acquire(tenantId, "rival-pull", 600_000)).toBeDefined();
      return lease;
    },
  });
}

/** Two sinks the test controls, blob and splunk, behind a real SinkSet with parking in a container of their own. */
async function twoSinks() {
  const { SinkSet } = await import("../../shared/sinks/sinkSet");
  const { BlobParkingStore } = await import("../../shared/sinks/parking");
  const { BlobServiceClient } = await import("@azure/storage-blob");
  const parking = new BlobParkingStore(BlobServiceClient.fromConnectionString(inject("storageConnectionString")).getContainerClient(`parked-${randomUUID()}`));
  const blob = new MemorySink();
  const splunk = new MemorySink();
  return { blob, splunk, sinkSet: new SinkSet([{ name: "blob", sink: blob }, { name: "splunk", sink: splunk }], parking, clock) };
}

/**
 * The test's sink becomes one that can say what it holds, stores its first page and answers it
 * with a failure (a pull that died before its checkpoint), and counts the questions it was asked.
 */
function storesThenFails(): { asked: () => number } {
  sink = new MemorySink(true);
  const storing = sink;
  const original = storing.write.bind(storing);
  const ask = storing.storedVersions!;
  let asked = 0;
  let once = true;
  storing.write = async (key, alerts) => {
    await original(key, alerts);
    if (once) {
      once = false;
      throw new SinkError("Uploading the alert batch failed (no HTTP response)");
    }
  };
  Object.assign(storing, { storedVersions: (...args: Parameters<typeof ask>) => (asked++, ask(...args)) });
  return { asked: () => asked };
}

const warnings = () => lines.filter((l) => l.level === "warn").map((l) => l.message);

// ---- the pull ------------------------------------------------------------------------------

describe("a pull of one tenant", () => {
  it("delivers every alert once across pages and sub-windows, then records success, the checkpoint and the run", async () => {
    const tenantId = await connected();
    // Inside the 10-minute overlap, so the dedupe set keeps them for the next run.
    const versions = seed(tenantId, 12, 8);
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "pulled", alerts: 12, complete: true, deadLetters: 0 });
    expect(tally(tenantId)).toEqual({ served: 12, delivered: 12, duplicates: 0, missing: [] });
    expect(new Set(sink.versions())).toEqual(new Set(versions));
    // A full page of 5 is never trusted to be the whole sub-window: it is split, so no page is full-and-final.
    expect(sink.writes.every((w) => w.versions.length <= PAGE)).toBe(true);
    expect(sink.writes.every((w) => w.key.tenantId === tenantId && w.key.skip === 0)).toBe(true);
    const state = await stateOf(tenantId);
    expect(state.window).toBeUndefined();
    expect(state.watermark).toBeDefined();
    expect(Date.parse(state.watermark ?? "")).toBeGreaterThan(clock() - 60_000);
    expect(state.consecutiveFailures).toBe(0);
    expect(state.lastAlertCount).toBe(12);
    expect(state.lastErrorCode).toBeUndefined();
    expect(state.lastSuccessAt).toBeDefined();
    expect(state.lastRunAt).toBeDefined();
    expect(state.leaseOwner).toBeUndefined();
    expect(state.apiCalls?.length ?? 0).toBeGreaterThan(0);
    expect(state.delivered.size).toBe(12);
    const [run] = await services.pullHistory.recent(tenantId);
    expect(run).toMatchObject({ outcome: "succeeded", alerts: 12 });
    expect(lines.some((l) => l.message === "pull finished" && l.fields["alerts"] === 12)).toBe(true);
    // Host and service agree within the Date header's second: nothing to warn about.
    expect(lines.some((l) => l.message === "host clock and Defender API clock differ")).toBe(false);

    // The next run reads the overlap again and delivers nothing twice; a new version is news.
    const [first] = stack.defender.alerts(tenantId);
    stack.defender.updateAlert(tenantId, first?.id ?? "", { lastUpdateTime: toMdeTimestamp(clock() - 60_000) });
    const again = await services.tenantPull.run(tenantId, log);
    expect(again).toEqual({ outcome: "pulled", alerts: 1, complete: true, deadLetters: 0 });
    expect(tally(tenantId).duplicates).toBe(0);
    expect(sink.versions()).toHaveLength(13);
  });

  it("skips a tenant that is not registered or not connected, recording no run", async () => {
    const unknown = randomUUID();
    expect(await services.tenantPull.run(unknown, log)).toEqual({ outcome: "skipped", reason: "not_registered" });
    expect(await services.pullHistory.recent(unknown)).toEqual([]);
    const pending = randomUUID();
    await services.tenantAdmin.register({ tenantId: pending, displayName: "Pending Co" }, operator, log);
    expect(await services.tenantPull.run(pending, log)).toEqual({ outcome: "skipped", reason: "not_connected" });
    expect(await services.pullState.read(pending)).toBeUndefined();
    expect(stack.defender.requests(pending)).toEqual([]);
  });

  it("exits busy while another pull holds the lease, touching nothing, and records a busy run", async () => {
    const tenantId = await connected();
    seed(tenantId, 3);
    // A first run creates the row; then another owner holds the lease.
    await services.tenantPull.run(tenantId, log);
    const held = await services.pullState.acquire(tenantId, "other-pull", 60_000);
    expect(held).toBeDefined();
    const requests = stack.defender.requests(tenantId).length;
    seed(tenantId, 2, 5);
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "busy" });
    expect(stack.defender.requests(tenantId)).toHaveLength(requests);
    expect(sink.versions()).toHaveLength(3);
    expect((await services.pullHistory.recent(tenantId))[0]).toMatchObject({ outcome: "busy", alerts: 0 });
    expect(lines.filter((l) => l.message === "pull skipped: another pull of this tenant holds the lease").map((l) => l.fields)).toEqual([{ tenantId }]);
    await held?.release();
    const after = await services.tenantPull.run(tenantId, log);
    expect(after).toMatchObject({ outcome: "pulled", alerts: 2 });
  });
});

describe("a page that is full though it holds fewer alerts than asked for", () => {
  it("is split when elements the pipeline rejected fill it: no alert beyond it is skipped", async () => {
    const tenantId = await connected();
    const versions = seed(tenantId, 12, 8);
    // The two oldest come back unreadable, so the first page holds 3 alerts and 2 rejected elements.
    const bad = stack.defender.alerts(tenantId).slice(0, 2).map((a) => a.id);
    for (const id of bad) stack.defender.poisonAlert(tenantId, id, `{"id":"${id}","lastUpdateTime":"not a time"}`);
    try {
      const outcome = await services.tenantPull.run(tenantId, log);
      expect(outcome).toEqual({ outcome: "pulled", alerts: 10, complete: true, deadLetters: 2 });
    } finally {
      for (const id of bad) stack.defender.poisonAlert(tenantId, id, null);
    }
    expect(new Set(sink.versions())).toEqual(new Set(versions.filter((v) => !bad.includes(v.split("@")[0] ?? ""))));
    expect(tally(tenantId).duplicates).toBe(0);
    expect((await services.deadLetters.list(tenantId)).map((l) => l.reason)).toEqual(["invalid_time", "invalid_time"]);
  });

  it("is split when the service caps it below the page size and links on: no alert beyond it is skipped", async () => {
    const tenantId = await connected();
    const versions = seed(tenantId, 12, 8);
    // Every page holds at most 3 and links on while more match, as a service paging on its own terms does.
    stack.defender.setNextLinkPaging(true);
    stack.defender.shortPages(tenantId, { times: 1_000, size: 3, linked: true });
    try {
      const outcome = await services.tenantPull.run(tenantId, log);
      expect(outcome).toEqual({ outcome: "pulled", alerts: 12, complete: true, deadLetters: 0 });
    } finally {
      stack.defender.setNextLinkPaging(false);
      stack.defender.shortPages(tenantId, { times: 0, size: 0 });
    }
    expect(tally(tenantId)).toEqual({ served: 12, delivered: 12, duplicates: 0, missing: [] });
    expect(new Set(sink.versions())).toEqual(new Set(versions));
  });
});

describe("the tenant's record during a run", () => {
  it("is read once at the start of a run and once more for each page after the first, no more", async () => {
    const tenantId = await connected();
    seed(tenantId, 3, 8);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 3 });
    let reads = 0;
    const tenants = Object.assign(Object.create(services.tenants) as TenantRegistry, {
      get: (...args: Parameters<TenantRegistry["get"]>) => (reads++, services.tenants.get(...args)),
    });
    const requests = stack.defender.requests(tenantId).length;
    seed(tenantId, 12, 4);
    expect(await customPull({ tenants }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 12, complete: true });
    const pages = stack.defender.requests(tenantId).length - requests;
    expect(pages).toBeGreaterThan(2);
    expect(reads).toBe(pages);
  });
});

describe("a sink that fails", () => {
  it("keeps the checkpoint, records the failure, and the next run delivers the rest exactly once", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    sink.okBefore = 1;
    sink.failures = 1;
    const failed = await services.tenantPull.run(tenantId, log);
    expect(failed).toEqual({ outcome: "failed", code: "sink_failed", category: "transient" });
    const delivered = sink.versions().length;
    expect(delivered).toBeGreaterThan(0);
    expect(delivered).toBeLessThan(12);
    const state = await stateOf(tenantId);
    expect(state.consecutiveFailures).toBe(1);
    expect(state.lastErrorCode).toBe("sink_failed");
    expect(state.lastErrorMessage).toBe("Writing alerts to the sink failed; the checkpoint did not move and the next cycle retries");
    expect(state.window).toBeDefined();
    expect(state.leaseOwner).toBeUndefined();
    expect(state.watermark).toBeUndefined();
    // Every call the failed run made is in the state, so another process's budget counts it too.
    expect(state.apiCalls).toHaveLength(stack.defender.pageRequests(tenantId));
    expect((await services.pullHistory.recent(tenantId))[0]).toMatchObject({ outcome: "failed", errorCode: "sink_failed" });
    expect(lines.some((l) => l.level === "warn" && l.message === "pull failed" && l.fields["error"] === "sink_failed")).toBe(true);

    const resumed = await services.tenantPull.run(tenantId, log);
    expect(resumed).toEqual({ outcome: "pulled", alerts: 12 - delivered, complete: true, deadLetters: 0 });
    const t = tally(tenantId);
    expect(t.missing).toEqual([]);
    expect(t.duplicates).toBe(0);
    const after = await stateOf(tenantId);
    expect(after.consecutiveFailures).toBe(0);
    expect(after.lastErrorCode).toBeUndefined();
    expect(after.lastErrorMessage).toBeUndefined();
  });

  it("on resume, asks the sink what it holds of the page in flight and stores nothing twice", async () => {
    const tenantId = await connected();
    storesThenFails();
    seed(tenantId, 3);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    expect(sink.versions()).toHaveLength(3);
    // The service orders the page differently now; without the sink's answer the resume would store it again.
    stack.defender.setOrder(tenantId, "shuffled");
    const resumed = await services.tenantPull.run(tenantId, log);
    expect(resumed).toEqual({ outcome: "pulled", alerts: 0, complete: true, deadLetters: 0 });
    expect(tally(tenantId).duplicates).toBe(0);
    expect(sink.versions()).toHaveLength(3);
  });

  it("remembers what the sink held on resume with its time in seconds, keeps it across runs, and asks only when resuming", async () => {
    const tenantId = await connected();
    const { asked } = storesThenFails();
    // Inside the 10-minute overlap: the next window reads them again.
    const versions = seed(tenantId, 3, 8);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    // A window this run opened holds nothing an earlier attempt stored: the sink is not asked.
    expect(asked()).toBe(0);
    expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "pulled", alerts: 0, complete: true, deadLetters: 0 });
    expect(asked()).toBe(1);
    const seconds = stack.defender
      .alerts(tenantId)
      .map((a) => Math.floor(Date.parse(a.lastUpdateTime) / 1000))
      .sort();
    expect([...(await stateOf(tenantId)).delivered.values()].sort()).toEqual(seconds);
    // What the resume learnt was stored with the state: the overlap's next read stores nothing twice.
    advance(60_000);
    expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "pulled", alerts: 0, complete: true, deadLetters: 0 });
    expect(asked()).toBe(1);
    expect(sink.versions().sort()).toEqual([...versions].sort());
  });

  it("resumes with a sink that cannot say what it holds, without asking it", async () => {
    const tenantId = await connected();
    seed(tenantId, 3, 8);
    sink.failures = 1;
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    const plain: AlertSink = { write: (key, alerts) => sink.write(key, alerts) };
    expect(await customPull({ sink: plain }).run(tenantId, log)).toEqual({ outcome: "pulled", alerts: 3, complete: true, deadLetters: 0 });
    expect(tally(tenantId)).toMatchObject({ delivered: 3, duplicates: 0, missing: [] });
  });

  it("does not ask one sink what it holds when several sinks are told `resumed` instead", async () => {
    const tenantId = await connected();
    const { asked } = storesThenFails();
    seed(tenantId, 3, 8);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    const { blob, splunk, sinkSet } = await twoSinks();
    expect(await customPull({ sinkSet }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 3, complete: true });
    expect(asked()).toBe(0);
    expect(blob.writes.map((w) => w.key.resumed)).toEqual([true]);
    expect(splunk.writes.map((w) => w.key.resumed)).toEqual([true]);
  });
});

describe("a crowded millisecond", () => {
  it("pages one millisecond by $skip to an empty page, reads it again until a pass finds nothing new, and delivers each version once", async () => {
    const tenantId = await connected();
    const at = clock() - 20 * 60_000;
    const alerts = Array.from({ length: 12 }, (_, i) =>
      makeAlert({ id: `da${at}_${String(i).padStart(3, "0")}`, lastUpdateTime: toMdeTimestamp(at, String(i).padStart(4, "0")), aadTenantId: tenantId }),
    );
    // The same millisecond, 12 alerts, pages of 5: no split can separate them.
    const sameMs = alerts.map((a) => ({ ...a, lastUpdateTime: toMdeTimestamp(at, "0000") }));
    stack.defender.addAlerts(tenantId, sameMs);
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "pulled", alerts: 12, complete: true, deadLetters: 0 });
    expect(tally(tenantId)).toMatchObject({ delivered: 12, duplicates: 0, missing: [] });
    // The full page of the 1 ms sub-window, then two passes of $skip 0, 5, 10 and the empty 12
    // (skip advances by what each page returned): the second pass finds nothing new.
    const instant = stack.defender
      .requests(tenantId)
      .filter((r) => {
        const m = /ge (\S+) and lastUpdateTime lt (\S+)/.exec(r.query.get("$filter") ?? "");
        return m !== null && Date.parse(m[2] ?? "") - Date.parse(m[1] ?? "") === 1 && Date.parse(m[1] ?? "") === at;
      })
      .map((r) => Number(r.query.get("$skip")));
    expect(instant).toEqual([0, 0, 5, 10, 12, 0, 5, 10, 12]);
    const keyed = sink.writes.filter((w) => w.key.skip > 0);
    expect(keyed.length).toBeGreaterThan(0);
    expect(keyed.every((w) => Date.parse(w.key.pageTo) - Date.parse(w.key.pageFrom) === 1)).toBe(true);
    expect((await stateOf(tenantId)).lastWarningCode).toBeUndefined();
  });

  it("warns unstable_order when every pass over the millisecond finds something new, having delivered every version read", async () => {
    const tenantId = await connected();
    const at = clock() - 20 * 60_000;
    let n = 0;
    const add = () => {
      const i = n++;
      stack.defender.addAlerts(tenantId, [makeAlert({ id: `da${at}_x${String(i).padStart(4, "0")}`, lastUpdateTime: toMdeTimestamp(at, "0000"), aadTenantId: tenantId })]);
    };
    for (let i = 0; i < 7; i++) add();
    // A new alert lands in that millisecond whenever a pass reaches its end (an empty page).
    stack.defender.afterPage(tenantId, (info) => {
      if (info.served === 0) add();
    });
    try {
      const outcome = await services.tenantPull.run(tenantId, log);
      expect(outcome).toMatchObject({ outcome: "pulled", complete: true });
    } finally {
      stack.defender.afterPage(tenantId, null);
    }
    const state = await stateOf(tenantId);
    expect(state.lastWarningCode).toBe("unstable_order");
    expect(state.lastWarningMessage).toContain("kept changing between reads");
    expect(state.lastWarningAt).toBeDefined();
    expect(warnings().some((w) => w.includes("kept changing between reads"))).toBe(true);
    expect(tally(tenantId)).toMatchObject({ duplicates: 0, missing: [] });
  });
});

describe("a crowded millisecond, at its limits", () => {
  /** `count` alerts all in the millisecond `at`, ids in the fake's order. */
  function crowd(tenantId: string, at: number, count: number, prefix: string): string[] {
    const alerts = Array.from({ length: count }, (_, i) =>
      makeAlert({ id: `da${at}_${prefix}${String(i).padStart(4, "0")}`, lastUpdateTime: toMdeTimestamp(at, "0000"), aadTenantId: tenantId }),
    );
    stack.defender.addAlerts(tenantId, alerts);
    return alerts.map((a) => `${a.id}@${a.lastUpdateTime}`);
  }
  /** The `$skip` of each request for exactly the millisecond `at` (the bounds read as instants, whatever their digits). */
  const instantSkips = (tenantId: string, at: number) =>
    stack.defender
      .requests(tenantId)
      .filter((r) => {
        const m = /ge (\S+) and lastUpdateTime lt (\S+)/.exec(r.query.get("$filter") ?? "");
        return m !== null && Date.parse(m[1] ?? "") === at && Date.parse(m[2] ?? "") === at + 1;
      })
      .map((r) => Number(r.query.get("$skip")));

  it("reads at most 200 pages of one millisecond per pass, then moves on and says so", async () => {
    const tenantId = await connected();
    const at = clock() - 20 * 60_000;
    const versions = crowd(tenantId, at, 402, "p");
    // Pages of 2: the limit is 400 alerts a pass.
    const pull = customPull({ settings: { ...config.pull, pageSize: 2 } }, { perMinute: 1_000_000, perHour: 1_000_000 });
    const outcome = await pull.run(tenantId, log);
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 400, complete: true });
    expect(sink.versions().sort()).toEqual(versions.slice(0, 400).sort());
    const skips = instantSkips(tenantId, at);
    // Each pass: $skip 0, 2, …, 398 (200 pages), never 400.
    expect(Math.max(...skips)).toBe(398);
    expect(skips.filter((skip) => skip === 398).length).toBeGreaterThanOrEqual(2);
    // Said where the operator sees it, each pass that hit the limit (a later warning may take health's last slot).
    const said = lines.filter((l) => l.fields["warning"] === "instant_page_limit");
    expect(said.length).toBeGreaterThanOrEqual(1);
    expect(said.every((l) => l.level === "warn" && l.message === "One millisecond held more than 200 pages; the pull moved on after reading that many")).toBe(true);
  });

  it("stores where a run stopped inside the millisecond, and the next run carries on from there", async () => {
    const tenantId = await connected();
    const at = clock() - 20 * 60_000;
    const versions = crowd(tenantId, at, 12, "r");
    // The budget runs out inside the millisecond's first pass.
    const stopped = await customPull({}, { perMinute: 8, perHour: 8 }).run(tenantId, log);
    expect(stopped).toMatchObject({ outcome: "pulled", complete: false });
    // The sub-window's own full page, then the pass's pages at $skip 0 and 5: the eighth call.
    const skipsBefore = instantSkips(tenantId, at);
    expect(skipsBefore).toEqual([0, 0, 5]);
    // Stored with the window: the millisecond, its density (a page of 5 in it), and the pass's place.
    expect((await stateOf(tenantId)).window).toMatchObject({
      position: new Date(at).toISOString(),
      nextEnd: new Date(at + 1).toISOString(),
      density: 5,
      instant: { pass: 0, skip: 10, foundNew: true },
    });
    advance(61 * 60_000);
    expect(await customPull({}, { perMinute: 1000, perHour: 1000 }).run(tenantId, log)).toMatchObject({ outcome: "pulled", complete: true });
    // The first pass goes on at $skip 10, then one whole pass finds nothing new.
    expect(instantSkips(tenantId, at).slice(skipsBefore.length)).toEqual([10, 12, 0, 5, 10, 12]);
    expect(tally(tenantId)).toEqual({ served: 12, delivered: 12, duplicates: 0, missing: [] });
    expect(new Set(sink.versions())).toEqual(new Set(versions));
  });

  it("stores the next pass when a run stops between two passes over the millisecond, and the next run starts that pass", async () => {
    const tenantId = await connected();
    const at = clock() - 20 * 60_000;
    const versions = crowd(tenantId, at, 12, "p");
    // Ten calls: the sub-window's pages, then the first pass's $skip 0, 5, 10 and 12; the eleventh would start the second pass.
    expect(await customPull({}, { perMinute: 10, perHour: 10 }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 12, complete: false });
    const skipsBefore = instantSkips(tenantId, at);
    expect(skipsBefore).toEqual([0, 0, 5, 10, 12]);
    expect((await stateOf(tenantId)).window?.instant).toEqual({ pass: 1, skip: 0, foundNew: false });
    advance(61 * 60_000);
    expect(await customPull({}, { perMinute: 1000, perHour: 1000 }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 0, complete: true });
    // The second pass from its start, which finds nothing new: the millisecond is done.
    expect(instantSkips(tenantId, at).slice(skipsBefore.length)).toEqual([0, 5, 10, 12]);
    expect(tally(tenantId)).toEqual({ served: 12, delivered: 12, duplicates: 0, missing: [] });
    expect(new Set(sink.versions())).toEqual(new Set(versions));
  });

  it("dead-letters a page of the millisecond too large to read at once, without holding, and reads the pages after it", async () => {
    const tenantId = await connected();
    const at = clock() - 20 * 60_000;
    const versions = crowd(tenantId, at, 12, "t");
    // The seventh alert is on the page at $skip 5 of the millisecond (pages of 5).
    await whileHuge(tenantId, versions[6]!, async () => {
      expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 7, complete: true, deadLetters: 1 });
    });
    expect(sink.versions().sort()).toEqual([...versions.slice(0, 5), ...versions.slice(10)].sort());
    expect(tally(tenantId).duplicates).toBe(0);
    const letters = await services.deadLetters.list(tenantId);
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ reason: "page_too_large", pageFrom: new Date(at).toISOString(), pageTo: new Date(at + 1).toISOString(), skip: 5 });
    const state = await stateOf(tenantId);
    expect(state.lastDeadLetterReason).toBe("page_too_large");
    expect(state.lastWarningCode).not.toBe("invalid_page_held");
    expect(state.invalidSpan).toBeUndefined();
    // The sub-window's own full page, then two passes: $skip 0, 5 (refused: the next is 5 on), 10
    // (2 alerts) and 12 (empty); the second found nothing new, which ends it.
    expect(instantSkips(tenantId, at)).toEqual([0, 0, 5, 10, 12, 0, 5, 10, 12]);
  });

  it("fails on a server error inside the millisecond as anywhere else, keeping its place in the pass, and dead-letters nothing", async () => {
    const tenantId = await connected();
    const at = clock() - 20 * 60_000;
    const versions = crowd(tenantId, at, 12, "e");
    // After the pass's first page (the millisecond's second read at $skip 0: the first is the
    // sub-window's own full page), the service fails every request until the test lifts it.
    let firsts = 0;
    stack.defender.afterPage(tenantId, (info) => {
      if (info.query.get("$filter")?.includes(`lt ${new Date(at + 1).toISOString()}`) && info.query.get("$skip") === "0" && ++firsts === 2) {
        stack.defender.afterPage(tenantId, null);
        stack.defender.fail(tenantId, { status: 500, times: 1000 });
      }
    });
    try {
      expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "failed", code: "defender_server_error" });
    } finally {
      stack.defender.afterPage(tenantId, null);
      stack.defender.fail(tenantId, { status: 500, times: 0 });
    }
    expect(await services.deadLetters.list(tenantId)).toEqual([]);
    const state = await stateOf(tenantId);
    expect(state.invalidSpan).toBeUndefined();
    expect(state.lastWarningCode).toBeUndefined();
    // Its first page held only what the sub-window's own page had delivered.
    expect(state.window?.instant).toEqual({ pass: 0, skip: 5, foundNew: false });
    advance(5 * 60_000);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", complete: true, deadLetters: 0 });
    expect(tally(tenantId)).toEqual({ served: 12, delivered: 12, duplicates: 0, missing: [] });
    expect(new Set(sink.versions())).toEqual(new Set(versions));
  });

  it("counts an alert it refused inside the millisecond as read, so $skip steps over it and the passes agree", async () => {
    const tenantId = await connected();
    const at = clock() - 20 * 60_000;
    const versions = crowd(tenantId, at, 12, "v");
    const bad = versions[6]!.split("@")[0]!;
    stack.defender.poisonAlert(tenantId, bad, `{"id":"${bad}","lastUpdateTime":"not a time"}`);
    try {
      expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 11, complete: true });
    } finally {
      stack.defender.poisonAlert(tenantId, bad, null);
    }
    expect(sink.versions().sort()).toEqual(versions.filter((_, i) => i !== 6).sort());
    expect(tally(tenantId).duplicates).toBe(0);
    // The refused element fills its place on the page like any alert: $skip 10 after the page at 5.
    expect(instantSkips(tenantId, at)).toEqual([0, 0, 5, 10, 12, 0, 5, 10, 12]);
    expect((await services.deadLetters.list(tenantId)).map((l) => l.reason)).toContain("invalid_time");
    expect((await stateOf(tenantId)).lastWarningCode).toBeUndefined();
  });

  it("narrows a page too large to read down to its millisecond and dead-letters that in the same run, without holding", async () => {
    const tenantId = await connected();
    const versions = seed(tenantId, 6, 20);
    await whileHuge(tenantId, versions[2]!, async () => {
      expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 5, complete: true, deadLetters: 1 });
    });
    expect(sink.versions().sort()).toEqual(versions.filter((_, i) => i !== 2).sort());
    const letters = await services.deadLetters.list(tenantId);
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ reason: "page_too_large", pageFrom: new Date(versions[2]!.split("@")[1]!).toISOString() });
    expect(Date.parse(letters[0]!.pageTo) - Date.parse(letters[0]!.pageFrom)).toBe(1);
    const state = await stateOf(tenantId);
    expect(state.lastWarningCode).not.toBe("invalid_page_held");
    expect(state.invalidSpan).toBeUndefined();
  });

  it("dead-letters a page of the millisecond that never parses, after holding two runs, and reads the pages after it", async () => {
    const tenantId = await connected();
    const at = clock() - 20 * 60_000;
    const versions = crowd(tenantId, at, 12, "c");
    // The seventh alert: on the page at $skip 5 of the millisecond (pages of 5), on no page of the window before it.
    const poison = versions[6]!.split("@")[0]!;
    stack.defender.corruptPagesHolding(tenantId, poison);
    try {
      expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", complete: false });
      expect((await stateOf(tenantId)).lastWarningCode).toBe("invalid_page_held");
      expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", complete: false });
      const third = await services.tenantPull.run(tenantId, log);
      expect(third).toMatchObject({ outcome: "pulled", complete: true, deadLetters: 1 });
    } finally {
      stack.defender.corruptPagesHolding(tenantId, null);
    }
    // The page at $skip 5 (alerts 6 to 10) is the letter; the pages before and after it were delivered, once.
    expect(sink.versions().sort()).toEqual([...versions.slice(0, 5), ...versions.slice(10)].sort());
    expect(tally(tenantId).duplicates).toBe(0);
    const letters = await services.deadLetters.list(tenantId);
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ reason: "invalid_page", pageFrom: new Date(at).toISOString(), pageTo: new Date(at + 1).toISOString(), skip: 5 });
    expect((await stateOf(tenantId)).lastDeadLetterReason).toBe("invalid_page");
  });
});

describe("data the pipeline cannot accept", () => {
  it("dead-letters an invalid alert, delivers the rest, and shows the count and reason in health", async () => {
    const tenantId = await connected();
    seed(tenantId, 4);
    const [bad] = stack.defender.alerts(tenantId);
    stack.defender.poisonAlert(tenantId, bad?.id ?? "", `{"id":"${bad?.id}","lastUpdateTime":"not a time"}`);
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "pulled", alerts: 3, complete: true, deadLetters: 1 });
    const state = await stateOf(tenantId);
    expect(state.deadLetters).toBe(1);
    expect(state.lastDeadLetterReason).toBe("invalid_time");
    expect(state.lastDeadLetterAt).toBeDefined();
    const letters = await services.deadLetters.list(tenantId);
    expect(letters).toHaveLength(1);
    expect(letters[0]?.reason).toBe("invalid_time");
    expect(lines.some((l) => l.message === "data the pipeline cannot accept was dead-lettered" && l.fields["reason"] === "invalid_time")).toBe(true);

    // A re-drive with the cause unfixed keeps the letter.
    const kept = await services.redrive.redrive(tenantId, log);
    expect(kept).toEqual({ examined: 1, redriven: 0, delivered: 0, remaining: 1 });
    expect(await services.deadLetters.list(tenantId)).toHaveLength(1);
    expect((await stateOf(tenantId)).deadLetters).toBe(1);
    expect((await stateOf(tenantId)).lastDeadLetterReason).toBe("invalid_time");
    expect((await stateOf(tenantId)).lastDeadLetterAt).toBeDefined();
  });
});

describe("throttling and tokens", () => {
  it("waits the Retry-After of a 429 and then delivers", async () => {
    const tenantId = await connected();
    seed(tenantId, 3);
    stack.defender.throttle(tenantId, { times: 1, retryAfterSeconds: 7 });
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 3, complete: true });
    expect(sleeps).toContain(7_000);
  });

  it("marks the tenant reconsent_required when Entra refuses its refresh token, and stops there", async () => {
    const tenantId = await connected();
    seed(tenantId, 3);
    // A new token is needed: the consent's access token is not in this process's memory or the state.
    services.accessTokens.forget(tenantId);
    stack.entra.failRefresh(tenantId, { status: 400, error: "invalid_grant", errorCode: 700082 });
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "failed", code: "AADSTS700082", category: "reconsent" });
    const tenant = await services.tenants.get(tenantId);
    expect(tenant?.status).toBe("reconsent_required");
    expect(tenant?.lastErrorCode).toBe("AADSTS700082");
    expect(tenant?.lastErrorMessage).toContain("the customer must consent again");
    expect(tenant?.lastErrorAt).toBeDefined();
    const state = await stateOf(tenantId);
    expect(state.consecutiveFailures).toBe(1);
    expect(state.lastErrorCode).toBe("AADSTS700082");
    expect(sink.versions()).toEqual([]);
    // No retry of a refusal: one token request, no backoff.
    expect(sleeps).toEqual([]);
    expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "skipped", reason: "not_connected" });
  });

  it("leaves a tenant re-consented or offboarded while the refused pull ran as it now is, not reconsent_required", async () => {
    /** The pull reads the tenant as it was before the change; the registry holds the change. */
    const readAsBefore = (before: TenantRecord): TenantRegistry =>
      Object.assign(Object.create(services.tenants) as TenantRegistry, { get: async () => before });
    for (const change of ["re-consented", "offboarded"] as const) {
      const tenantId = await connected();
      seed(tenantId, 3);
      const before = await services.tenants.get(tenantId);
      if (!before) throw new Error("not registered");
      const changed: Partial<TenantRecord> = change === "offboarded" ? { status: "offboarded" } : { consentedAt: new Date(clock() + 1_000).toISOString() };
      await services.tenants.update(tenantId, () => changed);
      services.accessTokens.forget(tenantId);
      stack.entra.failRefresh(tenantId, { status: 400, error: "invalid_grant", errorCode: 700082 });
      const outcome = await customPull({ tenants: readAsBefore(before) }).run(tenantId, log);
      expect(outcome, change).toEqual({ outcome: "failed", code: "AADSTS700082", category: "reconsent" });
      const after = await services.tenants.get(tenantId);
      expect(after?.status, change).toBe(change === "offboarded" ? "offboarded" : "connected");
      expect(after?.lastErrorCode, change).toBeUndefined();
    }
  });

  it("retries a transient token failure with backoff and delivers; past its retries it fails transient and the tenant stays connected", async () => {
    const tenantId = await connected();
    seed(tenantId, 2);
    services.accessTokens.forget(tenantId);
    stack.entra.failRefresh(tenantId, { status: 503, error: "temporarily_unavailable", errorCode: 50033 }, 2);
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 2, complete: true });
    // Two backoffs: about 1 s then about 2 s (half to all of it, by jitter).
    expect(sleeps).toHaveLength(2);
    expect(sleeps[0]).toBeGreaterThanOrEqual(500);
    expect(sleeps[0]).toBeLessThanOrEqual(1_000);
    expect(sleeps[1]).toBeGreaterThanOrEqual(1_000);
    expect(sleeps[1]).toBeLessThanOrEqual(2_000);

    const other = await connected();
    seed(other, 2);
    services.accessTokens.forget(other);
    sleeps.length = 0;
    stack.entra.failRefresh(other, { status: 503, error: "temporarily_unavailable", errorCode: 50033 }, 10);
    const failed = await services.tenantPull.run(other, log);
    expect(failed).toEqual({ outcome: "failed", code: "AADSTS50033", category: "transient" });
    expect(sleeps).toHaveLength(3);
    expect((await services.tenants.get(other))?.status).toBe("connected");
    const state = await stateOf(other);
    expect(state.lastErrorCode).toBe("AADSTS50033");
    expect(state.lastErrorMessage).toBe("Entra ID was unavailable");
  });
});

describe("a run that runs out of time", () => {
  it("stops at the deadline with the page not delivered, keeps its position, and the next run delivers it once", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    stack.defender.afterPage(tenantId, () => {
      advance(3_600_000);
    });
    let outcome;
    try {
      outcome = await services.tenantPull.run(tenantId, log);
    } finally {
      stack.defender.afterPage(tenantId, null);
    }
    expect(outcome).toEqual({ outcome: "pulled", alerts: 0, complete: false, deadLetters: 0 });
    expect(sink.versions()).toEqual([]);
    const state = await stateOf(tenantId);
    expect(state.window).toBeDefined();
    expect(state.window?.position).toBe(state.window?.from);
    expect((await services.pullHistory.recent(tenantId))[0]).toMatchObject({ outcome: "partial" });
    const next = await services.tenantPull.run(tenantId, log);
    expect(next).toMatchObject({ outcome: "pulled", complete: true });
    expect(tally(tenantId)).toMatchObject({ duplicates: 0, missing: [] });
    expect(sink.versions()).toHaveLength(12);
  });
});

// ---- access tokens -------------------------------------------------------------------------

describe("access tokens", () => {
  const emptyState = (): PullState => ({ delivered: new Map(), deadLetters: 0, consecutiveFailures: 0, apiCalls: [] });

  function source(persistHours = 24, retries?: number): AccessTokenSource {
    return new AccessTokenSource({
      tokens: services.tokens,
      entra: services.entra,
      clock,
      sleep: async (ms) => void sleeps.push(ms),
      refreshTokenPersistAgeMs: persistHours * 3600_000,
      ...(retries === undefined ? {} : { transientRetries: retries }),
    });
  }

  it("serves a token from memory, then the state's encrypted copy, then Entra; writes the rotated refresh token back only when old", async () => {
    const tenantId = await connected();
    const name = tenantTokenSecretName(tenantId);
    const consented = stack.vault.peekLatest(name);
    const tokens = source();
    const state = emptyState();
    const get = tokens.forPull(tenantId, state);
    const first = await get(false);
    expect(first).toMatch(/^ey/);
    expect(tokens.stats).toMatchObject({ tokenRequests: 1, vaultReads: 1, vaultWrites: 0, memoryHits: 0 });
    expect(state.accessTokenCipher).toBeDefined();
    expect(state.accessTokenCipher).not.toContain(first);
    expect(state.accessTokenExpiresAt).toBeGreaterThan(clock());
    expect(state.refreshTokenObtainedAt).toBeDefined();
    // Young refresh token: nothing written.
    expect(stack.vault.peekLatest(name)?.versions).toBe(consented?.versions);
    expect(await get(false)).toBe(first);
    expect(tokens.stats.memoryHits).toBe(1);

    // Another process (no memory) reads the state's encrypted copy: one vault read for the key, no token request.
    const other = source();
    const otherGet = other.forPull(tenantId, state);
    expect(await otherGet(false)).toBe(first);
    expect(other.stats).toMatchObject({ tokenRequests: 0, vaultReads: 1, memoryHits: 0 });
    // ...and keeps it in memory from then on.
    expect(await other.forPull(tenantId, emptyState())(false)).toBe(first);
    expect(other.stats).toMatchObject({ tokenRequests: 0, vaultReads: 1, memoryHits: 1 });

    // A forced refresh goes to Entra; a day later the rotated token is written back, with its time.
    offsetMs = 25 * 3600_000;
    const later = source();
    const laterState = emptyState();
    const refreshed = await later.forPull(tenantId, laterState)(true);
    expect(refreshed).not.toBe(first);
    expect(later.stats).toMatchObject({ tokenRequests: 1, vaultReads: 2, vaultWrites: 1, vaultWriteFailures: 0 });
    expect(stack.vault.peekLatest(name)?.versions).toBe((consented?.versions ?? 0) + 1);
    expect(laterState.refreshTokenObtainedAt).toBeGreaterThanOrEqual(clock() - 60_000);
    expect(laterState.refreshTokenObtainedAt).toBeLessThanOrEqual(clock());
    const bundle = await services.tokens.read(tenantId);
    expect(bundle?.refreshTokenObtainedAt).toBe(laterState.refreshTokenObtainedAt);
    // The written bundle is now the current one: a second refresh in the same pull writes nothing.
    await later.forPull(tenantId, laterState)(true);
    const sameRun = later.forPull(tenantId, laterState);
    await sameRun(true);
    await sameRun(true);
    expect(later.stats.vaultWrites).toBe(1);
    expect(stack.vault.peekLatest(name)?.versions).toBe((consented?.versions ?? 0) + 1);
  });

  it("never serves a token within two minutes of its expiry, from memory or from the state, and refreshes a copy it cannot decrypt", async () => {
    const tenantId = await connected();
    const tokens = source();
    const state = emptyState();
    const get = tokens.forPull(tenantId, state);
    const first = await get(false);
    const expiresAt = state.accessTokenExpiresAt ?? 0;
    // 2 min 30 s before expiry: still served from memory.
    offsetMs = expiresAt - Date.now() - 150_000;
    expect(await get(false)).toBe(first);
    expect(tokens.stats.tokenRequests).toBe(1);
    // Another process with only the state: the encrypted copy is still good too.
    const reader = source();
    expect(await reader.forPull(tenantId, state)(false)).toBe(first);
    expect(reader.stats.tokenRequests).toBe(0);
    // 1 min 30 s before expiry: neither memory nor the state's copy; a new token.
    offsetMs = expiresAt - Date.now() - 90_000;
    const fresh = await get(false);
    expect(fresh).not.toBe(first);
    expect(tokens.stats.tokenRequests).toBe(2);
    const late = source();
    const lateState: PullState = { ...emptyState(), accessTokenCipher: state.accessTokenCipher, accessTokenExpiresAt: expiresAt };
    await late.forPull(tenantId, lateState)(false);
    expect(late.stats.tokenRequests).toBe(1);

    // A copy that does not decrypt (another key) is not served: a new token instead.
    offsetMs = 0;
    const garbled = source();
    const garbledState: PullState = { ...emptyState(), accessTokenCipher: "v1.AAAA.BBBB.CCCC", accessTokenExpiresAt: clock() + 3_000_000 };
    const token = await garbled.forPull(tenantId, garbledState)(false);
    expect(token).toMatch(/^ey/);
    expect(garbled.stats.tokenRequests).toBe(1);
  });

  it("serves a token from memory until two minutes before its expiry, not at that instant, and forgets only the tenant it is told to", async () => {
    const [tenantId, other] = [await connected(), await connected()];
    let at = clock();
    const tokens = new AccessTokenSource({ tokens: services.tokens, entra: services.entra, clock: () => at, sleep: async () => undefined, refreshTokenPersistAgeMs: 24 * 3600_000 });
    const first = emptyState();
    await tokens.forPull(tenantId, first)(false);
    await tokens.forPull(other, emptyState())(false);
    const expiresAt = first.accessTokenExpiresAt ?? 0;
    at = expiresAt - 120_001;
    await tokens.forPull(tenantId, emptyState())(false);
    expect(tokens.stats).toMatchObject({ memoryHits: 1, tokenRequests: 2 });
    at = expiresAt - 120_000;
    await tokens.forPull(tenantId, emptyState())(false);
    expect(tokens.stats).toMatchObject({ memoryHits: 1, tokenRequests: 3 });

    at = clock();
    tokens.forget(tenantId);
    await tokens.forPull(other, emptyState())(false);
    expect(tokens.stats).toMatchObject({ memoryHits: 2, tokenRequests: 3 });
    await tokens.forPull(tenantId, emptyState())(false);
    expect(tokens.stats).toMatchObject({ memoryHits: 2, tokenRequests: 4 });
  });

  it("at exactly two minutes before expiry the state's copy is no longer served; at exactly the persist age the rotation is written", async () => {
    const tenantId = await connected();
    const state = emptyState();
    await source().forPull(tenantId, state)(false);
    const expiresAt = state.accessTokenExpiresAt ?? 0;
    const frozen = (at: number) =>
      new AccessTokenSource({ tokens: services.tokens, entra: services.entra, clock: () => at, sleep: async () => undefined, refreshTokenPersistAgeMs: 24 * 3600_000 });
    const atEdge = frozen(expiresAt - 120_000);
    await atEdge.forPull(tenantId, { ...state })(false);
    expect(atEdge.stats.tokenRequests).toBe(1);
    const justBefore = frozen(expiresAt - 120_001);
    await justBefore.forPull(tenantId, { ...state })(false);
    expect(justBefore.stats.tokenRequests).toBe(0);
    // A forced refresh (after a 401) never takes the state's copy, however valid.
    const forced = frozen(expiresAt - 120_001);
    await forced.forPull(tenantId, { ...state })(true);
    expect(forced.stats.tokenRequests).toBe(1);

    const obtainedAt = (await services.tokens.read(tenantId))?.refreshTokenObtainedAt ?? 0;
    const young = frozen(obtainedAt + 24 * 3600_000 - 1);
    await young.forPull(tenantId, emptyState())(true);
    expect(young.stats.vaultWrites).toBe(0);
    const old = frozen(obtainedAt + 24 * 3600_000);
    await old.forPull(tenantId, emptyState())(true);
    expect(old.stats.vaultWrites).toBe(1);
  });

  it("refuses with reconsent when the vault holds no refresh token", async () => {
    const tokens = source();
    const error = await tokens.forPull(randomUUID(), emptyState())(false).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TokenUnavailableError);
    expect((error as TokenUnavailableError).failure).toEqual({ category: "reconsent", error: "no_refresh_token" });
    expect((error as Error).message).toBe("access token unavailable: no_refresh_token (reconsent)");
  });

  it("retries transient failures as many times as told, never past the deadline", async () => {
    const tenantId = await connected();
    stack.entra.failRefresh(tenantId, { status: 503, error: "temporarily_unavailable", errorCode: 50033 }, 1);
    const none = source(24, 0);
    await expect(none.forPull(tenantId, emptyState())(true)).rejects.toThrow("access token unavailable: AADSTS50033 (transient)");
    expect(none.stats.tokenRequests).toBe(1);
    expect(sleeps).toEqual([]);

    stack.entra.failRefresh(tenantId, { status: 503, error: "temporarily_unavailable", errorCode: 50033 }, 1);
    // A deadline closer than the first backoff: no wait, the failure at once.
    const hurried = source();
    await expect(hurried.forPull(tenantId, emptyState(), clock() + 100)(true)).rejects.toBeInstanceOf(TokenUnavailableError);
    expect(sleeps).toEqual([]);

    stack.entra.failRefresh(tenantId, { status: 503, error: "temporarily_unavailable", errorCode: 50033 }, 1);
    const patient = source();
    await expect(patient.forPull(tenantId, emptyState(), clock() + 60_000)(true)).resolves.toMatch(/^ey/);
    expect(sleeps).toHaveLength(1);
    expect(patient.stats.tokenRequests).toBe(2);
  });

  it("keeps the stored bundle when the write-back fails, counting the failure", async () => {
    const tenantId = await connected();
    const name = tenantTokenSecretName(tenantId);
    const before = stack.vault.peekLatest(name);
    const tokens = source();
    const state = emptyState();
    const get = tokens.forPull(tenantId, state);
    const first = await get(false);
    offsetMs = 25 * 3600_000;
    stack.vault.setFailure({ status: 403, code: "Forbidden" });
    // Forced: neither memory nor the state's (still valid) encrypted copy, a new token.
    const token = await get(true);
    expect(token).toMatch(/^ey/);
    expect(token).not.toBe(first);
    expect(tokens.stats.tokenRequests).toBe(2);
    expect(tokens.stats.vaultWriteFailures).toBe(1);
    stack.vault.setFailure(null);
    expect(stack.vault.peekLatest(name)?.value).toBe(before?.value);
  });
});

// ---- re-drive ------------------------------------------------------------------------------

describe("re-drive of dead letters", () => {
  async function letter(tenantId: string, raw: string, reason: "invalid_time" | "foreign_next_link" | "invalid_page" = "invalid_time", extra: { sink?: string } = {}) {
    const from = new Date(clock() - 30 * 60_000).toISOString();
    const to = new Date(clock() - 20 * 60_000).toISOString();
    await services.deadLetters.write({ tenantId, source: "mde", reason, window: { from, to }, page: { from, to, skip: 0 }, raw, at: new Date(clock()).toISOString(), ...extra });
    return { from, to };
  }

  it("delivers what the pipeline now accepts, removes those letters, keeps the rest, and clears health when none is left", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    await services.tenantPull.run(tenantId, log);
    sink = new MemorySink();
    const good = makeAlert({ id: "da-redrive-1", lastUpdateTime: toMdeTimestamp(clock() - 25 * 60_000), aadTenantId: tenantId });
    const page = await letter(tenantId, JSON.stringify(good));
    await letter(tenantId, "https://attacker.example.test/next", "foreign_next_link");
    await letter(tenantId, JSON.stringify({ ...good, id: "da-redrive-2" }), "invalid_time", { sink: "splunk" });
    const result = await services.redrive.redrive(tenantId, log);
    expect(result).toEqual({ examined: 3, redriven: 1, delivered: 1, remaining: 2 });
    expect(sink.versions()).toEqual([`da-redrive-1@${good.lastUpdateTime}`]);
    // Keyed as the page it came from, flagged as a resume (a sink that can tell skips what it holds).
    expect(sink.writes[0]?.key).toEqual({ tenantId, pageFrom: page.from, pageTo: page.to, skip: 0, resumed: true });
    expect(sink.writes[0]?.envelopes[0]).toMatchObject({ tenantId, tenantName: "Fabrikam Ltd", source: "mde" });
    expect(Math.abs(Date.parse(sink.writes[0]?.envelopes[0]?.pulledAt ?? "") - clock())).toBeLessThan(60_000);
    expect(await services.deadLetters.list(tenantId)).toHaveLength(2);
    expect((await stateOf(tenantId)).deadLetters).toBe(2);
    expect((await stateOf(tenantId)).leaseOwner).toBeUndefined();
    expect(lines.some((l) => l.message === "dead letters re-driven" && l.fields["redriven"] === 1)).toBe(true);

    // Re-driving the same version again delivers nothing (remembered as delivered) but removes the letter.
    await letter(tenantId, JSON.stringify(good));
    expect(await services.redrive.redrive(tenantId, log)).toEqual({ examined: 3, redriven: 1, delivered: 0, remaining: 2 });
    expect(sink.writes).toHaveLength(1);

    // A whole page kept as invalid_page is scanned as a page; a Graph letter by Graph's time field.
    const paged = makeAlert({ id: "da-redrive-3", lastUpdateTime: toMdeTimestamp(clock() - 24 * 60_000), aadTenantId: tenantId });
    await letter(tenantId, JSON.stringify({ value: [paged] }), "invalid_page");
    const graphAlert = makeGraphAlert({ id: "g-redrive-1", tenantId, lastUpdateDateTime: toGraphTimestamp(clock() - 23 * 60_000) });
    const from = new Date(clock() - 30 * 60_000).toISOString();
    await services.deadLetters.write({ tenantId, source: "graph", reason: "invalid_time", window: { from, to: from }, page: { from, to: from, skip: 0 }, raw: JSON.stringify(graphAlert), at: from });
    expect(await services.redrive.redrive(tenantId, log)).toEqual({ examined: 4, redriven: 2, delivered: 2, remaining: 2 });
    expect(sink.versions()).toEqual([`da-redrive-1@${good.lastUpdateTime}`, `da-redrive-3@${paged.lastUpdateTime}`, `g-redrive-1@${graphAlert.lastUpdateDateTime}`]);
    expect(sink.writes[2]?.envelopes[0]?.source).toBe("graph");
    // Remembered by the second of its time like any delivery: the next pull forgets it once it is
    // behind the overlap, as it forgets what it delivered itself.
    expect((await stateOf(tenantId)).delivered.size).toBe(3);
    await services.tenantPull.run(tenantId, log);
    expect((await stateOf(tenantId)).delivered.size).toBe(0);
  });

  it("clears the dead-letter reason from health once nothing remains; refuses unknown, offboarded and busy tenants", async () => {
    const tenantId = await connected();
    seed(tenantId, 2);
    const [bad] = stack.defender.alerts(tenantId);
    stack.defender.poisonAlert(tenantId, bad?.id ?? "", `{"id":"${bad?.id}","lastUpdateTime":"not a time"}`);
    await services.tenantPull.run(tenantId, log);
    expect((await stateOf(tenantId)).lastDeadLetterReason).toBe("invalid_time");
    const [info] = await services.deadLetters.list(tenantId);
    await services.deadLetters.remove(info?.name ?? "");
    expect(await services.redrive.redrive(tenantId, log)).toEqual({ examined: 0, redriven: 0, delivered: 0, remaining: 0 });
    const state = await stateOf(tenantId);
    expect(state.deadLetters).toBe(0);
    expect(state.lastDeadLetterReason).toBeUndefined();
    expect(state.lastDeadLetterAt).toBeUndefined();

    await expect(services.redrive.redrive(randomUUID(), log)).rejects.toMatchObject({ status: 404, code: "tenant_not_found", message: "No tenant with this id is registered." });
    const held = await services.pullState.acquire(tenantId, "other-pull", 60_000);
    await expect(services.redrive.redrive(tenantId, log)).rejects.toMatchObject({ status: 409, code: "pull_running", message: "A pull of this tenant is running; try again in a minute." });
    await held?.release();
  });

  it("holds the tenant's lease while it runs, and gives a version the sink refuses a letter of its own", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    await services.tenantPull.run(tenantId, log);
    const big = makeAlert({ id: "da-redrive-big", lastUpdateTime: toMdeTimestamp(clock() - 25 * 60_000), aadTenantId: tenantId });
    await letter(tenantId, JSON.stringify(big));
    sink = new MemorySink();
    sink.refuse.add("da-redrive-big");
    const storing = sink;
    const original = storing.write.bind(storing);
    let rival: unknown = "not tried";
    storing.write = async (key, alerts) => {
      // A pull that starts meanwhile finds the tenant taken, even ten minutes on.
      offsetMs += 150_000;
      rival = await services.pullState.acquire(tenantId, "pull-meanwhile", 60_000);
      offsetMs -= 150_000;
      return original(key, alerts);
    };
    const result = await services.redrive.redrive(tenantId, log);
    expect(rival).toBeUndefined();
    expect(result).toEqual({ examined: 1, redriven: 1, delivered: 1, remaining: 1 });
    const letters = await services.deadLetters.list(tenantId);
    expect(letters.map((l) => l.reason)).toEqual(["oversized"]);
    const kept = await services.deadLetters.read(letters[0]?.name ?? "");
    expect(kept).toMatchObject({ tenantId, reason: "oversized", sink: "blob", raw: JSON.stringify(big) });
    expect((await stateOf(tenantId)).deadLetters).toBe(1);
  });
});

// ---- what the operator is told ------------------------------------------------------------

describe("the run's report and health", () => {
  it("reports a run to its observers: outcome, counts, lag, token refresh, health and notable alerts", async () => {
    const tenantId = await connected("Northwind Traders");
    const alerts = generateAlerts(tenantId, 4, { start: minutesAgo(8), spacingMs: 20_000 }).map((a, i) => ({
      ...a,
      severity: (["Low", "High", "Medium", "High"] as const)[i] ?? "Low",
      title: `Alert ${i}`,
      category: "Malware",
    }));
    stack.defender.addAlerts(tenantId, alerts);
    const pull = customPull({ notableSeverity: "Medium" });
    const outcome = await pull.run(tenantId, log, "invocation-1");
    expect(outcome).toEqual({ outcome: "pulled", alerts: 4, complete: true, deadLetters: 0 });
    expect(reports).toHaveLength(1);
    const [report] = reports;
    expect(report).toMatchObject({
      tenantId,
      tenantName: "Northwind Traders",
      invocationId: "invocation-1",
      outcome: "succeeded",
      alerts: 4,
      deadLetters: 0,
      tokenRefreshed: true,
      health: { before: "healthy", after: "healthy" },
      sinksBehind: [],
    });
    expect(report?.errorCode).toBeUndefined();
    expect(report?.lagSeconds).toBeGreaterThanOrEqual(0);
    expect(report?.lagSeconds).toBeLessThan(60);
    expect(report?.durationMs).toBeGreaterThanOrEqual(0);
    expect(Date.parse(report?.startedAt ?? "")).toBeLessThanOrEqual(clock());
    expect(report?.notable.total).toBe(3);
    expect(report?.notable.alerts.map((a) => [a.title, a.severity, a.category])).toEqual([
      ["Alert 1", "High", "Malware"],
      ["Alert 2", "Medium", "Malware"],
      ["Alert 3", "High", "Malware"],
    ]);
    expect(report?.notable.alerts[0]?.id).toBe(alerts[1]?.id);
    expect(report?.notable.alerts[0]?.lastUpdateTime).toBe(alerts[1]?.lastUpdateTime);

    // The next run uses the cached token and has nothing new to note.
    reports.length = 0;
    await pull.run(tenantId, log, "invocation-2");
    expect(reports[0]).toMatchObject({ invocationId: "invocation-2", alerts: 0, tokenRefreshed: false, notable: { alerts: [], total: 0 } });
  });

  it("reports a failure with its code and category, and an observer that fails leaves the pull unaffected", async () => {
    const tenantId = await connected();
    seed(tenantId, 2);
    sink.failures = 5;
    const pull = customPull({
      observers: [
        { pulled: async (report) => void reports.push(report) },
        {
          pulled: async () => {
            throw new Error("observer down");
          },
        },
      ],
    });
    const outcome = await pull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "failed", code: "sink_failed", category: "transient" });
    expect(reports[0]).toMatchObject({ outcome: "failed", errorCode: "sink_failed", category: "transient", alerts: 0, deadLetters: 0, tokenRefreshed: true });
    // The window is stored before the first sink write: the lag counts from its start, a day back.
    expect(reports[0]?.lagSeconds).toBeGreaterThan(23 * 3600);
    expect(lines.some((l) => l.message === "a pull observer failed; the pull is unaffected" && l.fields["tenantId"] === tenantId)).toBe(true);
    // Three failures in a row make the tenant degraded.
    await pull.run(tenantId, log);
    reports.length = 0;
    await pull.run(tenantId, log);
    expect(reports[0]?.health).toEqual({ before: "healthy", after: "degraded" });
    reports.length = 0;
    await pull.run(tenantId, log);
    expect(reports[0]?.health).toEqual({ before: "degraded", after: "degraded" });
    expect((await stateOf(tenantId)).consecutiveFailures).toBe(4);
  });

  it("reports a reconsent failure as reconsent_required health", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    services.accessTokens.forget(tenantId);
    stack.entra.failRefresh(tenantId, { status: 400, error: "invalid_grant", errorCode: 50173 });
    await services.tenantPull.run(tenantId, log);
    expect(reports[0]).toMatchObject({ outcome: "failed", category: "reconsent", errorCode: "AADSTS50173", health: { before: "healthy", after: "reconsent_required" } });
  });
});

describe("what a run writes and tells, beyond its alerts", () => {
  it("a later run of the process that wrote the row last: its claim at open stores the new window, so one more write releases it and nothing else is written", async () => {
    const { stateStore, recordingCalls } = await import("../harness/pullStateFixture");
    const calls: string[] = [];
    const { store } = stateStore(clock, (client) => recordingCalls(client, calls));
    const tenantId = await connected();
    seed(tenantId, 2);
    const pull = customPull({ pullState: store });
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    advance(60_000);
    seed(tenantId, 1, 1);
    calls.length = 0;
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 1, complete: true });
    // The claim at open (under the ETag this process wrote) and the release: no read, no save between.
    expect(calls).toEqual(["updateEntity", "updateEntity"]);
    expect(sink.writes).toHaveLength(2);
  });

  it("with several sinks, a window this run opened is not flagged as resumed to them", async () => {
    const { blob, splunk, sinkSet } = await twoSinks();
    const tenantId = await connected();
    seed(tenantId, 3, 20);
    expect(await customPull({ sinkSet }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 3 });
    expect(blob.writes.length).toBeGreaterThan(0);
    expect([...blob.writes, ...splunk.writes].map((w) => w.key.resumed)).toEqual([...blob.writes, ...splunk.writes].map(() => undefined));
  });

  it("names no alert notable when no notable severity is set", async () => {
    const tenantId = await connected();
    const alerts = generateAlerts(tenantId, 2, { start: minutesAgo(8), spacingMs: 20_000 }).map((a) => ({ ...a, severity: "High" as const }));
    stack.defender.addAlerts(tenantId, alerts);
    expect(await customPull().run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    expect(reports.at(-1)?.notable).toEqual({ alerts: [], total: 0 });
  });
});

describe("a token the API refused", () => {
  it("is served by no later run, from memory or from the state's encrypted copy, even when the refresh that should replace it failed", async () => {
    const tenantId = await connected();
    seed(tenantId, 2);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    expect((await stateOf(tenantId)).accessTokenCipher).toBeDefined();
    advance(60_000);
    seed(tenantId, 1, 1);
    stack.defender.fail(tenantId, { status: 401, times: 1 });
    stack.entra.failRefresh(tenantId, { status: 503, error: "temporarily_unavailable" });
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "failed", category: "transient" });
    expect((await stateOf(tenantId)).accessTokenCipher).toBeUndefined();
    stack.entra.clearFailures();
    const redeemed = stack.entra.stats.tokenRequests.refresh_token;
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 1 });
    expect(stack.entra.stats.tokenRequests.refresh_token).toBe(redeemed + 1);
  });

  it("app-only: is not served from memory after a forced refresh failed", async () => {
    const tenantId = randomUUID();
    stack.entra.grantAppConsent(tenantId, stack.clientId, ["https://api.securitycenter.microsoft.com/Alert.Read.All"]);
    const tokens = new AccessTokenSource({ tokens: services.tokens, entra: services.entra, clock, sleep: async () => undefined, refreshTokenPersistAgeMs: 24 * 3600_000, transientRetries: 0 });
    const state: PullState = { delivered: new Map(), deadLetters: 0, consecutiveFailures: 0, apiCalls: [] };
    const get = tokens.forPull(tenantId, state, Number.POSITIVE_INFINITY, "https://api.securitycenter.microsoft.com/.default", "application");
    const refused = await get(false);
    stack.entra.failAllTokenRequests({ status: 503, error: "temporarily_unavailable" }, 1);
    await expect(get(true)).rejects.toBeInstanceOf(TokenUnavailableError);
    const fresh = await get(false);
    expect(fresh).not.toBe(refused);
    expect(tokens.stats).toMatchObject({ tokenRequests: 3, memoryHits: 0 });
  });
});

describe("pages read ahead", () => {
  /** A Defender client for customPull that counts the page requests in flight at once. */
  function countingDefender(): { defender: DefenderClient; budget: RateBudget; seen: { now: number; max: number; beforeFirstAnswer: number; answered: boolean } } {
    const sleep = async (ms: number) => void sleeps.push(ms);
    const budget = new RateBudget({ clock, sleep });
    const defender = new DefenderClient({ http: services.http, userAgent: "MdePartner-TestMssp-Connector/1.0", requestTimeoutMs: 30_000, budget, clock, sleep });
    const seen = { now: 0, max: 0, beforeFirstAnswer: 0, answered: false };
    const fetchPage = defender.fetchPage.bind(defender);
    defender.fetchPage = async (request) => {
      seen.now++;
      seen.max = Math.max(seen.max, seen.now);
      if (!seen.answered) seen.beforeFirstAnswer++;
      try {
        return await fetchPage(request);
      } finally {
        seen.now--;
        seen.answered = true;
      }
    };
    return { defender, budget, seen };
  }

  /** Adds `alerts` and pulls them (and `more` already there) with pages 60 ms away. */
  async function readWith(alerts: ReturnType<typeof makeAlert>[], tenantId: string, more = 0) {
    stack.defender.addAlerts(tenantId, alerts);
    const { defender, budget, seen } = countingDefender();
    stack.defender.setLatency(60, tenantId);
    try {
      expect(await customPull({ defender, budget }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: alerts.length + more, complete: true });
    } finally {
      stack.defender.setLatency(0, tenantId);
    }
    expect(tally(tenantId)).toMatchObject({ duplicates: 0, missing: [] });
    return seen;
  }

  it("one page until a page shows how large alerts are, then three while three fit in 24 MiB", async () => {
    const tenantId = await connected();
    // About 200 kB an alert: a page of 5 is 1 MB.
    const alerts = generateAlerts(tenantId, 40, { start: minutesAgo(30), spacingMs: 40_000 }).map((a) => ({ ...a, description: "x".repeat(200_000) }));
    const seen = await readWith(alerts, tenantId);
    expect(seen.beforeFirstAnswer).toBe(1);
    expect(seen.max).toBe(3);
  });

  it("one page first in a resumed window too, whose stored density already plans several", async () => {
    const tenantId = await connected();
    stack.defender.addAlerts(tenantId, generateAlerts(tenantId, 40, { start: minutesAgo(30), spacingMs: 40_000 }));
    expect(await customPull({}, { perMinute: 3, perHour: 3 }).run(tenantId, log)).toMatchObject({ outcome: "pulled", complete: false });
    expect((await stateOf(tenantId)).window?.density).toBeGreaterThan(0);
    const delivered = sink.versions().length;
    const seen = await readWith([], tenantId, 40 - delivered);
    expect(seen.beforeFirstAnswer).toBe(1);
    expect(seen.max).toBe(3);
  });

  it("only as many pages as 24 MiB hold of large alerts", async () => {
    const tenantId = await connected();
    // About 1.7 MB an alert: a page of 5 is 8.5 MB, so two fit in 24 MiB.
    const large = generateAlerts(tenantId, 16, { start: minutesAgo(30), spacingMs: 90_000 }).map((a) => ({ ...a, description: "x".repeat(1_700_000) }));
    const seen = await readWith(large, tenantId);
    expect(seen.max).toBe(2);
  });
});

describe("failures the pull classifies", () => {
  it("app credential rejected: logged as an error for every tenant, the tenant stays connected", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    services.accessTokens.forget(tenantId);
    stack.entra.failAllTokenRequests({ status: 401, error: "invalid_client", errorCode: 7000215 });
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "failed", code: "AADSTS7000215", category: "app_credential" });
    const logged = lines.find((l) => l.level === "error" && l.message.startsWith("MSSP application credential rejected by Entra ID: every tenant is affected"));
    // Which tenant met it and Entra's code, so the operator can match it to the credential's change.
    expect(logged?.fields).toMatchObject({ tenantId, error: "AADSTS7000215" });
    expect((await services.tenants.get(tenantId))?.status).toBe("connected");
    expect((await stateOf(tenantId)).lastErrorMessage).toBe("Entra ID rejected the MSSP application's own credential");
  });

  it("Defender refusing access: defender_forbidden with what the customer must do; a server error: defender_server_error", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    stack.defender.fail(tenantId, { status: 403, times: 1 });
    expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "failed", code: "defender_forbidden", category: "transient" });
    expect((await stateOf(tenantId)).lastErrorMessage).toBe("The Defender API refused access: the customer must authorize the MSSP application in the Defender portal");
    stack.defender.fail(tenantId, { status: 500, times: 10 });
    expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "failed", code: "defender_server_error", category: "transient" });
    expect((await stateOf(tenantId)).lastErrorMessage).toBe("The Defender API call failed (server_error)");
    stack.defender.fail(tenantId, { status: 500, times: 0 });
  });

  it("Key Vault refusing the token read: secret_store_unavailable", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    services.accessTokens.forget(tenantId);
    stack.vault.setFailure({ status: 403, code: "Forbidden" });
    expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "failed", code: "secret_store_unavailable", category: "transient" });
    expect((await stateOf(tenantId)).lastErrorMessage).toBe("Key Vault could not be reached for the tenant's token; the next cycle retries");
  });

  it("storage failing before the lease: storage_unavailable or storage_timeout, nothing recorded; anything else is thrown and recorded as pull_failed", async () => {
    const tenantId = await connected();
    const outage = Object.assign(new Error("Service Unavailable"), { name: "RestError", statusCode: 503 });
    expect(await customPull({ tenants: failingRegistry(outage) }).run(tenantId, log)).toEqual({ outcome: "failed", code: "storage_unavailable", category: "transient" });
    expect(lines.filter((l) => l.message === "pull not started: storage did not answer").map((l) => l.fields)).toEqual([
      { tenantId, error: "storage_unavailable", detail: "RestError HTTP 503" },
    ]);
    const throttled = Object.assign(new Error("Too Many Requests"), { name: "RestError", statusCode: 429 });
    expect(await customPull({ tenants: failingRegistry(throttled) }).run(tenantId, log)).toMatchObject({ code: "storage_unavailable" });
    const noAnswer = Object.assign(new Error("socket hang up"), { name: "RestError" });
    expect(await customPull({ tenants: failingRegistry(noAnswer) }).run(tenantId, log)).toMatchObject({ code: "storage_unavailable" });
    const timeout = Object.assign(new Error("The operation was aborted"), { name: "AbortError" });
    expect(await customPull({ tenants: failingRegistry(timeout) }).run(tenantId, log)).toEqual({ outcome: "failed", code: "storage_timeout", category: "transient" });
    const timedOut = Object.assign(new Error("timed out"), { name: "TimeoutError" });
    expect(await customPull({ tenants: failingRegistry(timedOut) }).run(tenantId, log)).toMatchObject({ code: "storage_timeout" });
    const refused = Object.assign(new Error("Bad Request"), { name: "RestError", statusCode: 400 });
    await expect(customPull({ tenants: failingRegistry(refused) }).run(tenantId, log)).rejects.toThrow("Bad Request");
    expect(await services.pullState.read(tenantId)).toBeUndefined();
    const runs = await services.pullHistory.recent(tenantId);
    expect(runs.map((r) => [r.outcome, r.errorCode])).toEqual([["failed", "pull_failed"], ...Array.from({ length: 5 }, () => ["failed", expect.stringMatching(/^storage_/)])]);
  });
});

describe("what a failure is called where the operator reads it", () => {
  it("a refresh token Entra ID refuses: the customer must consent again, told which API and which permission", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    services.accessTokens.forget(tenantId);
    stack.entra.failRefresh(tenantId, { status: 400, error: "invalid_grant", errorCode: 70008 });
    expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "failed", code: "AADSTS70008", category: "reconsent" });
    const message =
      "Entra ID refused the refresh token for the Microsoft Defender for Endpoint API; the customer must consent again (permission needed: WindowsDefenderATP Alert.Read (delegated))";
    expect((await stateOf(tenantId)).lastErrorMessage).toBe(message);
    expect(await services.tenants.get(tenantId)).toMatchObject({ status: "reconsent_required", lastErrorCode: "AADSTS70008", lastErrorMessage: message });
  });

  it("Entra ID down: entra unavailable, the tenant stays connected", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    services.accessTokens.forget(tenantId);
    stack.entra.failRefresh(tenantId, { status: 503, error: "temporarily_unavailable" });
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "failed", category: "transient" });
    expect((await stateOf(tenantId)).lastErrorMessage).toBe("Entra ID was unavailable");
    expect((await services.tenants.get(tenantId))?.status).toBe("connected");
  });

  it("Graph refusing a delegated tenant: graph_forbidden naming the role the user needs; a Graph server error: graph_server_error", async () => {
    const tenantId = await connected("Graph Customer", "graph");
    stack.graph.fail(tenantId, { status: 403, times: 1 });
    expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "failed", code: "graph_forbidden", category: "transient" });
    expect((await stateOf(tenantId)).lastErrorMessage).toBe(
      "Microsoft Graph refused access to security alerts: the consenting user needs a role that can read Defender XDR alerts (e.g. Security Reader), and the app Microsoft Graph SecurityAlert.Read.All (delegated)",
    );
    stack.graph.fail(tenantId, { status: 500, times: 10 });
    expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "failed", code: "graph_server_error", category: "transient" });
    expect((await stateOf(tenantId)).lastErrorMessage).toBe("The Microsoft Graph call failed (server_error)");
    stack.graph.fail(tenantId, { status: 500, times: 0 });
    expect((await services.tenants.get(tenantId))?.status).toBe("connected");
  });

  it("Key Vault not answering for the token: secret_store_timeout, apart from a refusal", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    const { SecretStoreError } = await import("../../shared/secrets/secretStore");
    const stalled = Object.assign(Object.create(services.accessTokens) as typeof services.accessTokens, {
      forPull: () => async () => {
        throw new SecretStoreError("get", undefined, { timedOut: true });
      },
    });
    expect(await customPull({ tokens: stalled }).run(tenantId, log)).toEqual({ outcome: "failed", code: "secret_store_timeout", category: "transient" });
    expect((await stateOf(tenantId)).lastErrorMessage).toBe("Key Vault did not answer in time for the tenant's token; the next cycle retries");
  });

  it("parking or dead-lettering that fails: parking_failed and dead_letter_failed, the checkpoint where it was", async () => {
    const { BlobParkingStore } = await import("../../shared/sinks/parking");
    const { BlobDeadLetterStore } = await import("../../shared/sinks/deadLetters");
    const { SinkSet } = await import("../../shared/sinks/sinkSet");
    const { BlobServiceClient } = await import("@azure/storage-blob");
    // Azurite's own account with a key that is not its key: every request is refused (403).
    const wrongKey = inject("storageConnectionString").replace(/AccountKey=[^;]+/, `AccountKey=${Buffer.alloc(64).toString("base64")}`);
    const refusing = (name: string) => BlobServiceClient.fromConnectionString(wrongKey).getContainerClient(`${name}-${randomUUID()}`);

    const tenantId = await connected();
    seed(tenantId, 2);
    const blob = new MemorySink();
    const splunk = new MemorySink();
    splunk.failures = 1;
    const sinkSet = new SinkSet([{ name: "blob", sink: blob }, { name: "splunk", sink: splunk }], new BlobParkingStore(refusing("parked"), 5_000), clock);
    expect(await customPull({ sinkSet }).run(tenantId, log)).toEqual({ outcome: "failed", code: "parking_failed", category: "transient" });
    let state = await stateOf(tenantId);
    expect(state.lastErrorMessage).toBe("Parking a page for a sink that was down failed; the checkpoint did not move and the next cycle retries");
    expect(state.watermark).toBeUndefined();

    const other = await connected();
    const [refused] = seed(other, 2);
    sink.refuse.add(refused!.split("@")[0]!);
    const deadLetters = new BlobDeadLetterStore(refusing("dead"), 5_000);
    expect(await customPull({ deadLetters }).run(other, log)).toEqual({ outcome: "failed", code: "dead_letter_failed", category: "transient" });
    state = await stateOf(other);
    expect(state.lastErrorMessage).toBe("Storing data the pipeline could not accept failed; the checkpoint did not move");
    expect(state.watermark).toBeUndefined();
  });

  it("storage failing before the lease: 408 and every 5xx are an outage; a 499, or a failure that is no RestError, is thrown", async () => {
    const tenantId = await connected();
    const restError = (statusCode: number) => Object.assign(new Error(`HTTP ${statusCode}`), { name: "RestError", statusCode });
    for (const status of [408, 500, 502]) {
      expect(await customPull({ tenants: failingRegistry(restError(status)) }).run(tenantId, log)).toEqual({ outcome: "failed", code: "storage_unavailable", category: "transient" });
    }
    await expect(customPull({ tenants: failingRegistry(restError(499)) }).run(tenantId, log)).rejects.toThrow("HTTP 499");
    // Named like one but not an Error, or an Error with a status but another name: not the SDK's.
    const lookalike = { name: "RestError", statusCode: 503, message: "lookalike" };
    await expect(customPull({ tenants: failingRegistry(lookalike) }).run(tenantId, log)).rejects.toBe(lookalike);
    const other = Object.assign(new Error("plain 503"), { statusCode: 503 });
    await expect(customPull({ tenants: failingRegistry(other) }).run(tenantId, log)).rejects.toThrow("plain 503");
    const abortLike = { name: "AbortError", message: "not an Error" };
    await expect(customPull({ tenants: failingRegistry(abortLike) }).run(tenantId, log)).rejects.toBe(abortLike);
  });
});

describe("how long a sink has been behind, as the run's report judges it", () => {
  /** The tenant's stored sink progress replaced, as the run opens, by `sinks` (times in minutes ago). */
  function withSinks(sinks: Record<string, { parkedFrom: number; parkedTo: number; behindMinutes?: number }>): PullStateStore {
    return changingLeases((lease) => {
      lease.state.sinks = Object.fromEntries(
        Object.entries(sinks).map(([name, s]) => [
          name,
          { parkedFrom: s.parkedFrom, parkedTo: s.parkedTo, ...(s.behindMinutes === undefined ? {} : { behindSince: new Date(clock() - s.behindMinutes * 60_000).toISOString() }) },
        ]),
      ) as PullState["sinks"];
    });
  }

  it.each([
    ["one sink 20 minutes behind beside one 1 minute behind", "degraded", { a: { parkedFrom: 0, parkedTo: 2, behindMinutes: 20 }, b: { parkedFrom: 4, parkedTo: 5, behindMinutes: 1 } }],
    ["one sink 1 minute behind", "healthy", { b: { parkedFrom: 4, parkedTo: 5, behindMinutes: 1 } }],
    ["a sink caught up since it fell behind an hour ago", "healthy", { c: { parkedFrom: 3, parkedTo: 3, behindMinutes: 60 } }],
    ["a sink with pages parked but no time it fell behind", "healthy", { d: { parkedFrom: 0, parkedTo: 1 } }],
  ] as const)("%s: %s", async (_, level, sinks) => {
    const tenantId = await connected();
    seed(tenantId, 1);
    expect(await customPull({ pullState: withSinks(sinks) }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 1 });
    expect(reports.at(-1)?.health).toEqual({ before: level, after: level });
  });
});

/** A tenant this process pulled once (so its row is remembered), five minutes on, with two new alerts. */
async function pulledOnceThenTwoNew(): Promise<string> {
  const tenantId = await connected();
  seed(tenantId, 2);
  expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
  advance(5 * 60_000);
  seed(tenantId, 2, 3);
  return tenantId;
}

describe("the lease and the tenant during a run", () => {
  it("claims a tenant it wrote last at once, with no read, and its first sink write needs no save before it", async () => {
    const tenantId = await pulledOnceThenTwoNew();
    const calls: string[] = [];
    const pullState = Object.assign(Object.create(services.pullState) as PullStateStore, {
      open: async (...args: Parameters<PullStateStore["open"]>) => {
        const lease = await services.pullState.open(...args);
        calls.push(`open:${String(lease?.openedFromMemory)}`);
        return lease;
      },
    });
    const states: string[] = [];
    sink = new MemorySink();
    const original = sink.write.bind(sink);
    sink.write = async (key, alerts) => {
      // What another instance would find in storage while the alerts are on their way.
      const stored = await otherInstance.read(tenantId);
      states.push(`${stored?.leaseOwner ?? ""}:${stored?.window?.from ?? ""}`);
      return original(key, alerts);
    };
    expect(await customPull({ pullState }).run(tenantId, log, "warm-pull")).toMatchObject({ outcome: "pulled", alerts: 2 });
    expect(calls).toEqual(["open:true"]);
    // Claimed, with the window the run reads, before anything left it: a crash here resumes that window.
    expect(states).toEqual([`warm-pull:${sink.writes[0]?.key.pageFrom}`]);
    expect(sink.writes[0]?.key.resumed).toBeUndefined();
    expect(await stateOf(tenantId)).toMatchObject({ consecutiveFailures: 0, lastAlertCount: 2 });
    expect((await stateOf(tenantId)).leaseOwner).toBeUndefined();
  });

  it("writes a lease claimed at open again before its first sink write once it lapsed, and stops if another pull took it", async () => {
    const tenantId = await pulledOnceThenTwoNew();
    // Claimed at open; then its renewals fail until it lapses, and another instance takes the tenant over.
    const pullState = Object.assign(Object.create(services.pullState) as PullStateStore, {
      open: async (...args: Parameters<PullStateStore["open"]>) => {
        const lease = await services.pullState.open(...args);
        expect(lease?.openedFromMemory).toBe(true);
        // Past the lease (3 min), not past the run's deadline.
        advance(181_000);
        expect(await otherInstance.acquire(tenantId, "rival-pull", 600_000)).toBeDefined();
        return lease;
      },
    });
    sink = new MemorySink();
    expect(await customPull({ pullState }).run(tenantId, log)).toMatchObject({ outcome: "failed", code: "lease_lost" });
    expect(sink.writes).toEqual([]);
    expect((await stateOf(tenantId)).leaseOwner).toBe("rival-pull");
  });

  it("checks the end of a window claimed at open against the API's clock when another instance resumes it", async () => {
    const tenantId = await connected();
    seed(tenantId, 2);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    // The service's clock falls 5 minutes behind, more than the skew the first run measured.
    offsetMs += 5 * 60_000;
    stack.defender.setClockOffset(offsetMs - 300_000);
    // This pull claims at open, storing its window, and dies before its first page.
    const dying = Object.assign(Object.create(services.pullState) as PullStateStore, {
      open: async (...args: Parameters<PullStateStore["open"]>) => {
        const lease = await services.pullState.open(...args);
        expect(lease?.openedFromMemory).toBe(true);
        throw new Error("killed");
      },
    });
    await expect(customPull({ pullState: dying }).run(tenantId, log)).rejects.toThrow("killed");
    const stored = (await stateOf(tenantId)).window;
    expect(stored?.settled).toBe(false);
    expect(Date.parse(stored?.to ?? "")).toBeGreaterThan(clock() - 60_000);
    // Its lease lapses; another instance resumes the window and ends it by the service's clock.
    offsetMs += 181_000;
    stack.defender.setClockOffset(offsetMs - 300_000);
    expect(await customPull({ pullState: otherInstance }).run(tenantId, log)).toMatchObject({ outcome: "pulled", complete: true });
    const watermark = Date.parse((await stateOf(tenantId)).watermark ?? "");
    expect(watermark).toBeLessThanOrEqual(stack.defender.now() + 1000);
    expect(watermark).toBeLessThan(Date.parse(stored?.to ?? ""));
  });

  it("resumes a window another instance left unfinished, though this process wrote the tenant's row before it", async () => {
    const tenantId = await connected();
    seed(tenantId, 2);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    const from = (await stateOf(tenantId)).watermark ?? "";
    advance(5 * 60_000);
    const versions = seed(tenantId, 2, 3);
    const to = new Date(clock() - 60_000).toISOString();
    // Another instance opened [from, to), and stopped before it wrote anything to a sink.
    const other = await otherInstance.acquire(tenantId, "other-instance", 600_000, (state) => {
      state.window = { from, to, position: from, nextEnd: to };
    });
    await other!.release();
    sink = new MemorySink(true);
    const holds = sink.storedVersions!;
    const asked: string[] = [];
    Object.assign(sink, { storedVersions: async (...args: Parameters<typeof holds>) => (asked.push(args[0].pageFrom), holds(...args)) });
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    expect(sink.versions()).toEqual(versions);
    // A resume: the sink is asked what it holds of that page first, as after a crash.
    expect(asked).toEqual([from]);
    expect(sink.writes[0]?.key.pageFrom).toBe(from);
    expect((await stateOf(tenantId)).watermark).toBe(to);
  });

  it("ends lease_lost when another pull takes the lapsed lease mid-run, writes nothing more, and counts the incident", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    const pull = customPull({ timings: { leaseMs: 60_000 } });
    const storing = sink;
    const original = storing.write.bind(storing);
    let taken = false;
    storing.write = async (key, alerts) => {
      await original(key, alerts);
      if (!taken) {
        taken = true;
        advance(5 * 60_000);
        const rival = await services.pullState.acquire(tenantId, "rival-pull", 600_000);
        expect(rival).toBeDefined();
      }
    };
    const outcome = await pull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "failed", code: "lease_lost", category: "lease_lost" });
    expect(sink.writes).toHaveLength(1);
    const state = await services.pullState.read(tenantId);
    expect(state?.leaseOwner).toBe("rival-pull");
    expect(state?.consecutiveFailures).toBe(0);
    expect((await services.pullState.readAll()).get(tenantId)?.incidents?.leaseLost).toBe(1);
    expect(lines.some((l) => l.message === "pull stopped: lease lost to another pull" && l.fields["reason"] === "taken")).toBe(true);
    expect(reports[0]).toMatchObject({ outcome: "failed", errorCode: "lease_lost", category: "lease_lost" });
  });

  it("ends failed with the pull's own code when storage refuses the closing write too, and counts a failed release", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    sink.okBefore = 1;
    sink.failures = 1;
    // The real store, except that the closing write (the release: no owner) meets a storage outage.
    const pullState = Object.assign(Object.create(services.pullState) as PullStateStore, {
      write: (...args: Parameters<PullStateStore["write"]>) =>
        args[2].owner === "" ? Promise.reject(Object.assign(new Error("Server busy"), { statusCode: 503 })) : services.pullState.write(...args),
    });
    const outcome = await customPull({ pullState }).run(tenantId, log);
    expect(outcome).toEqual({ outcome: "failed", code: "sink_failed", category: "transient" });
    expect(lines.some((l) => l.level === "warn" && l.message === "could not release the pull lease" && l.fields["tenantId"] === tenantId)).toBe(true);
    expect((await services.pullState.readAll()).get(tenantId)?.incidents?.releaseFailed).toBe(1);
    // The row still holds the lease the run took, which lapses on its own.
    expect((await stateOf(tenantId)).leaseOwner).toBeTruthy();
  });

  it("ends failed with the pull's own code when a rival took the lease before the failure was written, and says it went unrecorded", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    const pull = customPull({ timings: { leaseMs: 60_000 } });
    const storing = sink;
    const original = storing.write.bind(storing);
    let writes = 0;
    storing.write = async (key, alerts) => {
      if (++writes === 1) return original(key, alerts);
      // The lease lapses while the sink stalls; a rival takes it; then the sink fails.
      advance(5 * 60_000);
      expect(await services.pullState.acquire(tenantId, "rival-pull", 600_000)).toBeDefined();
      throw new SinkError("the sink refused the page");
    };
    const outcome = await pull.run(tenantId, log);
    expect(outcome).toMatchObject({ outcome: "failed", code: "sink_failed" });
    expect(lines.some((l) => l.level === "warn" && l.message === "could not record the pull failure" && l.fields["tenantId"] === tenantId)).toBe(true);
    // The rival's row is untouched: no failure counted over its lease.
    const state = await stateOf(tenantId);
    expect(state.leaseOwner).toBe("rival-pull");
    expect(state.consecutiveFailures).toBe(0);
  });

  it("ends busy, delivering nothing, when a rival takes the lease between its read and its first write", async () => {
    const tenantId = await connected();
    seed(tenantId, 4);
    const pullState = rivalTakesLeaseAfterRead(tenantId);
    const outcome = await customPull({ pullState }).run(tenantId, log);
    expect(outcome).toEqual({ outcome: "busy" });
    expect(sink.writes).toEqual([]);
    expect(lines.some((l) => l.level === "info" && l.message === "pull skipped: another pull of this tenant took the lease first" && l.fields["tenantId"] === tenantId)).toBe(true);
    const state = await stateOf(tenantId);
    expect(state.leaseOwner).toBe("rival-pull");
    expect(state.consecutiveFailures).toBe(0);
    expect((await services.pullState.readAll()).get(tenantId)?.incidents).toBeUndefined();
    expect((await services.pullHistory.recent(tenantId))[0]).toMatchObject({ outcome: "busy", alerts: 0 });
  });

  it("a run that failed before writing anything ends busy when a rival wrote meanwhile, recording nothing over the rival's lease", async () => {
    const tenantId = await connected();
    seed(tenantId, 4);
    // A first run delivers all and opens no window: the next run writes nothing before it reads.
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 4 });
    advance(5 * 60_000);
    stack.defender.fail(tenantId, { status: 403, times: 1 });
    const pullState = rivalTakesLeaseAfterRead(tenantId);
    const writesBefore = sink.writes.length;
    lines.length = 0;
    expect(await customPull({ pullState }).run(tenantId, log)).toEqual({ outcome: "busy" });
    expect(sink.writes).toHaveLength(writesBefore);
    expect(lines.some((l) => l.message === "could not record the pull failure")).toBe(false);
    expect(await stateOf(tenantId)).toMatchObject({ leaseOwner: "rival-pull", consecutiveFailures: 0 });
    // A run that ended busy did nothing to report: the observers hear only of the first run.
    expect(reports.map((r) => r.outcome)).toEqual(["succeeded"]);
  });

  /** How a write reads in the tests below: its owner and the window it stores. */
  const windowWritten = (state: PullState, lease: { owner: string }): string => {
    const window = state.window;
    return `${lease.owner || "released"}: ${window ? `window ${window.position === window.from ? "unread" : "read"}${window.settled === false ? ", unsettled" : ""}` : "no window"}`;
  };

  /** `store` (the real one by default), recording each write of a tenant's state into `events` as `describe` puts it. */
  function recordingWrites(events: string[], store: PullStateStore = services.pullState, describe = windowWritten): PullStateStore {
    return Object.assign(Object.create(store) as PullStateStore, {
      write: async (...args: Parameters<PullStateStore["write"]>) => {
        events.push(describe(args[1], args[2]));
        return store.write(...args);
      },
    });
  }

  it("writes the tenant's state only where a crash would need it: the lease before the token, the window before the sink, the end", async () => {
    const tenantId = await connected();
    seed(tenantId, 4);
    const writes: string[] = [];
    expect(await customPull({ pullState: recordingWrites(writes) }).run(tenantId, log, "first-pull")).toMatchObject({ outcome: "pulled", alerts: 4, complete: true });
    expect(writes).toEqual([
      // The lease, before the refresh token is redeemed (its rotation must not race another pull's).
      "first-pull: window unread, unsettled",
      // Before the first sink write: the window as checked against the API's clock, for a resume.
      "first-pull: window unread",
      // The end: checkpoint, dedupe set, lease released. The last page's acknowledgement writes nothing of its own.
      "released: no window",
    ]);
  });

  it("never writes the same progress twice in a row: a page's acknowledgement is what the next page's sink write goes out under", async () => {
    const tenantId = await connected();
    seed(tenantId, 23);
    const windows: string[] = [];
    const pullState = recordingWrites(windows, services.pullState, (state) => JSON.stringify(state.window ?? null));
    const pages = sink.writes.length;
    expect(await customPull({ pullState }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 23, complete: true });
    expect(sink.writes.length - pages).toBeGreaterThanOrEqual(5);
    // The first write (the lease, before the token) stores the window as opened; the second, the
    // same window checked against the API's clock. From there each write records new progress.
    expect(windows.length).toBeGreaterThan(sink.writes.length - pages);
    const repeated = windows.slice(1).filter((window, i) => window === windows[i]);
    expect(repeated).toEqual([]);
  });

  it("with several sinks and nothing parked, a quiet run that read the state writes only its end", async () => {
    const { blob, sinkSet } = await twoSinks();
    const tenantId = await connected();
    seed(tenantId, 2);
    expect(await customPull({ sinkSet }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    advance(5 * 60_000);
    const writes: string[] = [];
    // Another instance: no row of its own to claim at open, so it reads, and claims only before a write that needs it.
    expect(await customPull({ sinkSet, pullState: recordingWrites(writes, otherInstance) }).run(tenantId, log, "quiet-pull")).toMatchObject({ outcome: "pulled", alerts: 0 });
    expect(blob.writes).toHaveLength(1);
    expect(writes).toEqual(["released: no window"]);
  });

  it("ends lease_lost when an operator resets the pull state mid-run, writes nothing back, and counts no incident", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    const storing = sink;
    const original = storing.write.bind(storing);
    let reset = false;
    storing.write = async (key, alerts) => {
      await original(key, alerts);
      if (!reset) {
        reset = true;
        await services.pullState.reset(tenantId);
      }
    };
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "failed", code: "lease_lost", category: "lease_lost" });
    expect(sink.writes).toHaveLength(1);
    // The reset stands: no row written back, and a reset is the operator's doing, not a rival pull's.
    expect(await services.pullState.read(tenantId)).toBeUndefined();
    expect((await services.pullState.readAll()).get(tenantId)).toBeUndefined();
    expect(lines.some((l) => l.level === "warn" && l.message === "pull stopped: lease lost to another pull" && l.fields["reason"] === "reset")).toBe(true);
    // The next pull starts afresh, and health shows no lost lease for it.
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", complete: true });
    expect((await services.pullState.readAll()).get(tenantId)?.incidents).toBeUndefined();
  });

  it("stops without writing when the tenant is offboarded between pages", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    const storing = sink;
    const original = storing.write.bind(storing);
    storing.write = async (key, alerts) => {
      await original(key, alerts);
      await services.tenants.update(tenantId, () => ({ status: "offboarded" }));
    };
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "skipped", reason: "not_connected" });
    expect(sink.writes).toHaveLength(1);
    expect(lines.some((l) => l.message === "pull stopped: the tenant is no longer connected")).toBe(true);
    expect(await services.pullHistory.recent(tenantId)).toEqual([]);
    await expect(services.redrive.redrive(tenantId, log)).rejects.toMatchObject({
      status: 409,
      code: "tenant_offboarded",
      message: "The tenant is offboarded; its data is not delivered any more.",
    });
  });
});

describe("pages that never parse", () => {
  it("holds its position for two runs, then narrows the span down and dead-letters the page, delivering the rest", async () => {
    const tenantId = await connected();
    const versions = seed(tenantId, 6);
    const [, poison] = stack.defender.alerts(tenantId);
    stack.defender.corruptPagesHolding(tenantId, poison?.id ?? "");
    try {
      const first = await services.tenantPull.run(tenantId, log);
      expect(first).toEqual({ outcome: "pulled", alerts: 0, complete: false, deadLetters: 0 });
      let state = await stateOf(tenantId);
      expect(state.lastWarningCode).toBe("invalid_page_held");
      expect(state.lastWarningMessage).toContain("was not valid JSON in 1 run(s)");
      expect(state.invalidSpan?.runs).toBe(1);
      expect(state.window?.position).toBe(state.window?.from);

      expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ complete: false });
      state = await stateOf(tenantId);
      expect(state.invalidSpan?.runs).toBe(2);
      expect(state.lastWarningMessage).toContain("in 2 run(s)");

      const third = await services.tenantPull.run(tenantId, log);
      expect(third).toMatchObject({ outcome: "pulled", complete: true, deadLetters: 1 });
      state = await stateOf(tenantId);
      expect(state.invalidSpan).toBeUndefined();
      expect(state.lastDeadLetterReason).toBe("invalid_page");
      const letters = await services.deadLetters.list(tenantId);
      expect(letters.map((l) => l.reason)).toEqual(["invalid_page"]);
      expect(Date.parse(letters[0]?.pageTo ?? "") - Date.parse(letters[0]?.pageFrom ?? "")).toBe(1);
      expect(new Set(sink.versions())).toEqual(new Set(versions.filter((v) => !v.startsWith(`${poison?.id}@`))));
      expect(tally(tenantId).duplicates).toBe(0);
    } finally {
      stack.defender.corruptPagesHolding(tenantId, null);
    }
  });

  it.each(["foreign", "unparseable"] as const)("dead-letters a nextLink that does not stay on the API's host (%s) and never follows it", async (mode) => {
    const tenantId = await connected();
    seed(tenantId, 7);
    stack.defender.setNextLinkPaging(mode);
    try {
      const outcome = await services.tenantPull.run(tenantId, log);
      expect(outcome).toMatchObject({ outcome: "pulled", alerts: 7, complete: true });
      expect((outcome as { deadLetters: number }).deadLetters).toBeGreaterThan(0);
    } finally {
      stack.defender.setNextLinkPaging(false);
    }
    const letters = await services.deadLetters.list(tenantId);
    expect(letters.length).toBeGreaterThan(0);
    expect(letters.every((l) => l.reason === "foreign_next_link")).toBe(true);
    expect((await stateOf(tenantId)).lastDeadLetterReason).toBe("foreign_next_link");
  });
});

describe("a page handed to the sinks", () => {
  it("delivers of a page cut by the service's clock only what lies before the cut; later runs the rest, each once", async () => {
    const tenantId = await connected();
    const behind = 5 * 60_000;
    // The cut falls on a whole second (the API's Date + 1 s): an alert sits on each second around it.
    const base = Math.floor((clock() - behind) / 1000) * 1000;
    const times = [clock() - 9 * 60_000, base - 1000, base, base + 1000, base + 2000];
    const alerts = times.map((ms, i) => makeAlert({ id: `clip-${tenantId}-${i}`, lastUpdateTime: toMdeTimestamp(ms), aadTenantId: tenantId }));
    stack.defender.addAlerts(tenantId, alerts);
    stack.defender.setClockOffset(offsetMs - behind);
    await services.tenantPull.run(tenantId, log);
    const cut = Date.parse((await stateOf(tenantId)).watermark ?? "");
    expect(cut - base).toBeGreaterThanOrEqual(1000);
    expect(cut - base).toBeLessThanOrEqual(2000);
    const before = alerts.filter((a) => Date.parse(a.lastUpdateTime) < cut).map((a) => `${a.id}@${a.lastUpdateTime}`);
    expect(sink.versions().sort()).toEqual(before.sort());
    expect(sink.writes[0]?.key.pageTo).toBe(new Date(cut).toISOString());
    stack.defender.setClockOffset(offsetMs);
    for (let run = 0; run < 3; run++) await services.tenantPull.run(tenantId, log);
    expect(tally(tenantId)).toMatchObject({ duplicates: 0, missing: [] });
    expect(sink.versions()).toHaveLength(5);
  });

  it("dead-letters what the one sink refused, named by that sink and keyed by its page", async () => {
    const tenantId = await connected();
    const versions = seed(tenantId, 3);
    const refusedId = versions[1]!.split("@")[0]!;
    sink.refuse.add(refusedId);
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 3, deadLetters: 1 });
    expect(sink.versions()).toEqual([versions[0], versions[2]]);
    const letters = await services.deadLetters.list(tenantId);
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ reason: "oversized", pageFrom: sink.writes[0]?.key.pageFrom, pageTo: sink.writes[0]?.key.pageTo, skip: 0 });
    const letter = await services.deadLetters.read(letters[0]!.name);
    expect(letter?.sink).toBe("blob");
    expect(JSON.parse(letter?.raw ?? "{}")).toMatchObject({ id: refusedId });
    // The window the page was read in: the first run's whole lookback, ending at the new checkpoint.
    const watermark = Date.parse((await stateOf(tenantId)).watermark ?? "");
    expect(letter?.window).toEqual({ from: new Date(watermark - 24 * 3600_000).toISOString(), to: new Date(watermark).toISOString() });
  });

  it("with several sinks: each gets every page, a resumed window's first write says so and only that one, refusals name their sink", async () => {
    const { blob, splunk, sinkSet } = await twoSinks();
    const tenantId = await connected();
    const versions = seed(tenantId, 8, 20);
    splunk.refuse.add(versions[6]!.split("@")[0]!);
    // Another instance opened the window and stopped before any sink write: this run resumes it.
    const from = new Date(clock() - 25 * 60_000).toISOString();
    const to = new Date(clock() - 60_000).toISOString();
    const other = await otherInstance.acquire(tenantId, "other-instance", 600_000, (state) => {
      state.window = { from, to, position: from, nextEnd: to };
    });
    await other!.release();
    const outcome = await customPull({ sinkSet }).run(tenantId, log);
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 8, complete: true, deadLetters: 1 });
    expect(blob.versions().sort()).toEqual([...versions].sort());
    expect(splunk.versions().sort()).toEqual(versions.filter((_, i) => i !== 6).sort());
    expect(blob.writes.length).toBeGreaterThan(1);
    expect(blob.writes.map((w) => w.key.resumed)).toEqual([true, ...blob.writes.slice(1).map(() => undefined)]);
    expect(splunk.writes.map((w) => w.key)).toEqual(blob.writes.map((w) => w.key));
    const letters = await services.deadLetters.list(tenantId);
    expect(letters).toHaveLength(1);
    expect((await services.deadLetters.read(letters[0]!.name))?.sink).toBe("splunk");
    const state = await stateOf(tenantId);
    expect(Object.keys(state.sinks ?? {}).sort()).toEqual(["blob", "splunk"]);
    expect(state.sinks?.["splunk"]).toMatchObject({ parkedFrom: 0, parkedTo: 0 });
  });

  it("adds a page's new versions to a dedupe set spilled to a blob, so the overlap read next is not delivered twice", async () => {
    const tenantId = await connected();
    // More versions inside the overlap than the row holds (15 × 1,250): the set goes to a blob.
    const many = generateAlerts(tenantId, 19_500, { start: minutesAgo(4), spacingMs: 10 });
    stack.defender.addAlerts(tenantId, many);
    const pull = customPull({ settings: { ...config.pull, pageSize: 10_000 } });
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 19_500, complete: true });
    const fresh = seed(tenantId, 2, 1);
    advance(60_000);
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    advance(60_000);
    // Its window reaches back over the two (the overlap): they are in the stored set, not sent again.
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 0 });
    expect(sink.versions().filter((v) => fresh.includes(v))).toEqual(fresh);
    expect((await stateOf(tenantId)).delivered.size).toBe(19_502);
  });

  it("keeps what a resume learnt from the sink in a dedupe set spilled to a blob, so the overlap read next sends none of it twice", async () => {
    const tenantId = await connected();
    stack.defender.addAlerts(tenantId, generateAlerts(tenantId, 19_500, { start: minutesAgo(4), spacingMs: 10 }));
    const pull = customPull({ settings: { ...config.pull, pageSize: 10_000 } });
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 19_500, complete: true });
    // Two alerts reach the API late, older than the rest: the next window's first page holds them.
    // Six minutes back: still inside the 10-minute overlap two minutes later, when the last run reads them.
    const late = generateAlerts(tenantId, 2, { start: minutesAgo(6), spacingMs: 1_000 });
    stack.defender.addAlerts(tenantId, late);
    const lateVersions = late.map((a) => `${a.id}@${a.lastUpdateTime}`);
    // The sink stores that page, then the pull dies before its checkpoint.
    storesThenFails();
    advance(60_000);
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    // The resume learns the two are stored; nothing is sent again.
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 0, complete: true });
    advance(60_000);
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 0, complete: true });
    expect(sink.versions().filter((v) => lateVersions.includes(v)).sort()).toEqual([...lateVersions].sort());
    expect((await stateOf(tenantId)).delivered.size).toBe(19_502);
  });

  it("adds late versions to a dedupe set spilled to a blob when every page of the run holds some, so the next overlap sends none twice", async () => {
    const tenantId = await connected();
    const start = clock() - 4 * 60_000;
    stack.defender.addAlerts(tenantId, generateAlerts(tenantId, 19_500, { start: new Date(start), spacingMs: 10 }));
    const pull = customPull({ settings: { ...config.pull, pageSize: 10_000 } });
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 19_500, complete: true });
    const overlapFrom = Date.parse((await stateOf(tenantId)).watermark ?? "") - 10 * 60_000;
    advance(60_000);
    // Alerts that reach the API late, one a second over the whole of the next run's window (among
    // those delivered too): no page of that run, not even an empty-looking stretch, is without a new version.
    const lateCount = Math.floor((clock() - 1_000 - overlapFrom) / 1_000);
    stack.defender.addAlerts(tenantId, generateAlerts(tenantId, lateCount, { start: new Date(overlapFrom + 5), spacingMs: 1_000 }));
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: lateCount, complete: true });
    advance(60_000);
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 0 });
    expect(tally(tenantId)).toEqual({ served: 19_500 + lateCount, delivered: 19_500 + lateCount, duplicates: 0, missing: [] });
  });

  it("with several sinks: a page parked for a sink that was down reaches it first at the next run, and what it refuses then is dead-lettered under it", async () => {
    const { blob, splunk, sinkSet } = await twoSinks();
    const tenantId = await connected();
    const first = seed(tenantId, 3, 20);
    const pull = customPull({ sinkSet });
    splunk.failures = 1;
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 3 });
    expect(splunk.versions()).toEqual([]);
    const parked = (await stateOf(tenantId)).sinks?.["splunk"];
    expect((parked?.parkedTo ?? 0) - (parked?.parkedFrom ?? 0)).toBe(1);
    expect(parked?.behindSince).toEqual(expect.any(String));
    expect(reports.at(-1)?.sinksBehind).toEqual([{ sink: "splunk", parkedPages: 1, behindSince: parked?.behindSince }]);
    advance(5 * 60_000);
    const later = seed(tenantId, 2, 3);
    splunk.refuse.add(first[1]!.split("@")[0]!);
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    // The parked page first, then this run's: the sink catches up in order.
    expect(splunk.versions()).toEqual([first[0], first[2], ...later]);
    expect(blob.versions()).toEqual([...first, ...later]);
    const letters = await services.deadLetters.list(tenantId);
    expect(letters).toHaveLength(1);
    const letter = await services.deadLetters.read(letters[0]!.name);
    expect(letter).toMatchObject({ sink: "splunk", reason: "oversized" });
    // Drained before this run planned its window: the letter's window is its own page's span.
    expect(letter?.window).toEqual({ from: letter?.page.from, to: letter?.page.to });
    expect(letter?.page.from).toBe(blob.writes[0]?.key.pageFrom);
    const state = await stateOf(tenantId);
    expect(state.sinks?.["splunk"]?.parkedTo).toBe(state.sinks?.["splunk"]?.parkedFrom);
    expect(reports.at(-1)?.sinksBehind).toEqual([]);

    // Down again: one page behind, counted from where the drained ones end.
    advance(5 * 60_000);
    seed(tenantId, 1, 3);
    splunk.failures = 1;
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 1 });
    const again = (await stateOf(tenantId)).sinks?.["splunk"];
    expect(again?.parkedFrom).toBeGreaterThan(0);
    expect(reports.at(-1)?.sinksBehind).toEqual([{ sink: "splunk", parkedPages: 1, behindSince: again?.behindSince }]);
  });

  /** A first run with splunk down parks every page for it; returns how many. */
  async function parkedForSplunk(tenantId: string, pull: TenantPull, splunk: MemorySink, alerts: number): Promise<number> {
    seed(tenantId, alerts, 20);
    splunk.failures = 1;
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts });
    expect(splunk.writes).toEqual([]);
    const parked = (await stateOf(tenantId)).sinks?.["splunk"];
    return (parked?.parkedTo ?? 0) - (parked?.parkedFrom ?? 0);
  }

  it("with several sinks: a run whose lease a rival took before it wrote drains nothing parked to the sink", async () => {
    const { splunk, sinkSet } = await twoSinks();
    const tenantId = await connected();
    expect(await parkedForSplunk(tenantId, customPull({ sinkSet }), splunk, 3)).toBe(1);
    advance(5 * 60_000);
    // The lease is claimed before a parked page leaves: otherwise the rival's run and this one could both send it.
    expect(await customPull({ sinkSet, pullState: rivalTakesLeaseAfterRead(tenantId) }).run(tenantId, log)).toEqual({ outcome: "busy" });
    expect(splunk.writes).toEqual([]);
    const state = await stateOf(tenantId);
    expect(state.leaseOwner).toBe("rival-pull");
    expect((state.sinks?.["splunk"]?.parkedTo ?? 0) - (state.sinks?.["splunk"]?.parkedFrom ?? 0)).toBe(1);
  });

  it("with several sinks: parked pages are drained for a third of the run at most, then the run reads its new pages", async () => {
    const { blob, splunk, sinkSet } = await twoSinks();
    const tenantId = await connected();
    const pull = customPull({ sinkSet });
    const parked = await parkedForSplunk(tenantId, pull, splunk, 15);
    expect(parked).toBeGreaterThanOrEqual(3);
    advance(5 * 60_000);
    const later = seed(tenantId, 2, 3);
    const blobWrites = blob.writes.length;
    // Each parked page takes the slow sink 100 s: the run (480 s) gives the drain 160 s, so two pages.
    const write = splunk.write.bind(splunk);
    splunk.write = async (key, alerts) => {
      advance(100_000);
      return write(key, alerts);
    };
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    expect(splunk.writes).toHaveLength(2);
    expect(blob.writes.slice(blobWrites).flatMap((w) => w.versions)).toEqual(later);
    const state = await stateOf(tenantId);
    // The rest stays parked, with this run's page behind it, in order.
    expect((state.sinks?.["splunk"]?.parkedTo ?? 0) - (state.sinks?.["splunk"]?.parkedFrom ?? 0)).toBe(parked - 2 + 1);
  });

  it("fails a Graph tenant's pull as source_not_configured, reading and writing nothing, when this deployment has no Graph client", async () => {
    const tenantId = await connected("Graph Customer", "graph");
    const outcome = await customPull({ graph: undefined }).run(tenantId, log);
    expect(outcome).toEqual({ outcome: "failed", code: "source_not_configured", category: "transient" });
    const line = lines.find((l) => l.message === "pull not started: the tenant's alert source has no client in this deployment");
    expect(line).toMatchObject({ level: "error", fields: { tenantId, source: "graph" } });
    expect(stack.graph.requests(tenantId)).toEqual([]);
    expect(await services.pullState.read(tenantId)).toBeUndefined();
  });

  it("notes notable alerts with their title and category cut to size, and lists at most 20 of them", async () => {
    const tenantId = await connected();
    const start = minutesAgo(15).getTime();
    const at = (i: number) => toMdeTimestamp(start + i * 10_000);
    const special = [
      makeAlert({ id: `n-${tenantId}-long`, lastUpdateTime: at(0), aadTenantId: tenantId, severity: "High", title: "T".repeat(300), category: "C".repeat(200) }),
      { ...makeAlert({ id: `n-${tenantId}-odd`, lastUpdateTime: at(1), aadTenantId: tenantId, severity: "High" }), title: 42 as unknown as string, category: 7 as unknown as string },
    ];
    const plain = Array.from({ length: 20 }, (_, i) =>
      makeAlert({ id: `n-${tenantId}-${String(i).padStart(2, "0")}`, lastUpdateTime: at(2 + i), aadTenantId: tenantId, severity: "Medium", title: `Plain ${i}`, category: "Malware" }),
    );
    stack.defender.addAlerts(tenantId, [...special, ...plain]);
    await customPull({ notableSeverity: "Medium" }).run(tenantId, log);
    const notable = reports.at(-1)?.notable;
    expect(notable?.total).toBe(22);
    expect(notable?.alerts).toHaveLength(20);
    expect(notable?.alerts[0]).toMatchObject({ title: "T".repeat(256), category: "C".repeat(128), severity: "High" });
    expect(notable?.alerts[1]).toMatchObject({ title: "", category: null, severity: "High" });
    expect(notable?.alerts.at(-1)?.title).toBe("Plain 17");
  });
});

describe("the service's clock", () => {
  it("ends a new window by the API's Date when the service is behind, remembers the skew, and the next run reads the rest", async () => {
    const tenantId = await connected();
    // Alerts 8 to about 4 minutes ago; the service's clock is 6 minutes behind the host's.
    seed(tenantId, 12, 8);
    stack.defender.setClockOffset(-6 * 60_000);
    await services.tenantPull.run(tenantId, log);
    const state = await stateOf(tenantId);
    expect(state.clockSkewMs).toBeGreaterThan(-6 * 60_000 - 2_000);
    expect(state.clockSkewMs).toBeLessThan(-6 * 60_000 + 2_000);
    expect(Date.parse(state.watermark ?? "")).toBeLessThan(clock() - 5 * 60_000);
    const skewLine = lines.find((l) => l.message === "host clock and Defender API clock differ");
    // The Date header names whole seconds: 6 minutes, give or take the second.
    expect(Math.abs(Number(skewLine?.fields["skewSeconds"]) + 360)).toBeLessThanOrEqual(1);
    const early = sink.versions().length;
    expect(early).toBeLessThan(12);
    stack.defender.setClockOffset(0);
    // The next window still ends by the remembered skew; its first page measures it afresh.
    await services.tenantPull.run(tenantId, log);
    expect(sink.versions()).toHaveLength(early);
    expect(Math.abs((await stateOf(tenantId)).clockSkewMs ?? Number.NaN)).toBeLessThan(2_000);
    await services.tenantPull.run(tenantId, log);
    expect(tally(tenantId)).toMatchObject({ duplicates: 0, missing: [] });
    expect(sink.versions()).toHaveLength(12);
  });

  /** A tenant whose new window was held before any Date was read; the service's clock is 6 minutes behind. */
  async function heldBeforeItsFirstDate(): Promise<string> {
    const tenantId = await connected();
    seed(tenantId, 12, 8);
    stack.defender.setClockOffset(-6 * 60_000);
    // The window's first page never parses (each of its attempts): the run holds before any Date was read.
    stack.defender.corruptPages(tenantId, { times: 3 });
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 0, complete: false });
    return tenantId;
  }

  it("checks a window held before its first page came back against the API's clock when the next run resumes it", async () => {
    const tenantId = await heldBeforeItsFirstDate();
    const held = await stateOf(tenantId);
    expect(held.lastWarningCode).toBe("invalid_page_held");
    expect(held.window?.settled).toBe(false);
    expect(held.clockSkewMs).toBeUndefined();
    // The resumed window ends by the service's Date, 6 minutes behind, as a new one would.
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled" });
    const resumed = await stateOf(tenantId);
    expect(resumed.clockSkewMs).toBeGreaterThan(-6 * 60_000 - 2_000);
    expect(resumed.clockSkewMs).toBeLessThan(-6 * 60_000 + 2_000);
    expect(Date.parse(resumed.watermark ?? "")).toBeLessThan(clock() - 5 * 60_000);
    expect(sink.versions().length).toBeLessThan(12);
  });

  it("stores a resumed window's cut by the API's clock before the first page of it reaches the sink", async () => {
    const tenantId = await heldBeforeItsFirstDate();
    const heldTo = Date.parse((await stateOf(tenantId)).window?.to ?? "");
    expect(heldTo).toBeGreaterThan(clock() - 60_000);
    // What another instance would find in storage while the resumed run's first page is on its way to the sink.
    const storedEnds: number[] = [];
    const original = sink.write.bind(sink);
    sink.write = async (key, alerts) => {
      storedEnds.push(Date.parse((await otherInstance.read(tenantId))?.window?.to ?? ""));
      return original(key, alerts);
    };
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled" });
    expect(storedEnds.length).toBeGreaterThan(0);
    expect(storedEnds[0]).toBeLessThan(clock() - 5 * 60_000);
  });

  it("keeps the host's clock for a page without a Date header, and remembers no skew", async () => {
    const tenantId = await connected();
    seed(tenantId, 3, 8);
    stack.defender.setSendDate(false);
    try {
      expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 3, complete: true });
    } finally {
      stack.defender.setSendDate(true);
    }
    const state = await stateOf(tenantId);
    expect(state.clockSkewMs).toBeUndefined();
    expect(Date.parse(state.watermark ?? "")).toBeGreaterThan(clock() - 5_000);
  });

  it("ends a window the settle time before the service's clock, as before the host's", async () => {
    const tenantId = await connected();
    seed(tenantId, 12, 8);
    stack.defender.setClockOffset(-6 * 60_000);
    const pull = customPull({ settings: { ...config.pull, settleSeconds: 30 } });
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", complete: true });
    // The Date header's whole second, plus its second of resolution, less the 30 s settle time.
    const behind = clock() - Date.parse((await stateOf(tenantId)).watermark ?? "");
    expect(behind).toBeGreaterThan(6 * 60_000 + 28_000);
    expect(behind).toBeLessThan(6 * 60_000 + 31_000);
  });

  it("checks a window against the service's clock at its first answer only: a later page's Date does not cut it again", async () => {
    const tenantId = await connected();
    const versions = seed(tenantId, 12, 8);
    // From the second page on, the service answers with a Date 6 minutes behind.
    stack.defender.afterPage(tenantId, (info) => {
      if (info.index === 1) stack.defender.setClockOffset(offsetMs - 6 * 60_000);
    });
    try {
      expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "pulled", alerts: 12, complete: true, deadLetters: 0 });
    } finally {
      stack.defender.afterPage(tenantId, null);
    }
    expect(stack.defender.pageRequests(tenantId)).toBeGreaterThan(2);
    expect(new Set(sink.versions())).toEqual(new Set(versions));
    expect(Math.abs((await stateOf(tenantId)).clockSkewMs ?? Number.NaN)).toBeLessThan(2_000);
  });

  it("reads nothing more of a window the service's clock ends before its first sub-window: one request, and the run is done", async () => {
    const tenantId = await connected();
    seed(tenantId, 12, 8);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 12, complete: true });
    const requests = stack.defender.requests(tenantId).length;
    advance(60_000);
    // The service is now half an hour behind: its Date lies before the new window's start (the 10-minute overlap).
    stack.defender.setClockOffset(offsetMs - 30 * 60_000);
    expect(await services.tenantPull.run(tenantId, log)).toEqual({ outcome: "pulled", alerts: 0, complete: true, deadLetters: 0 });
    expect(stack.defender.requests(tenantId)).toHaveLength(requests + 1);
    const state = await stateOf(tenantId);
    expect(state.clockSkewMs).toBeLessThan(-29 * 60_000);
    expect(state.window).toBeUndefined();
    expect(tally(tenantId)).toMatchObject({ duplicates: 0, missing: [] });
  });

  it("ignores a Date hours behind as it ignores one hours ahead", async () => {
    const tenantId = await connected();
    seed(tenantId, 2, 3 * 60);
    stack.defender.setClockOffset(-2 * 3600_000);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2, complete: true });
    const state = await stateOf(tenantId);
    expect(state.clockSkewMs).toBeUndefined();
    expect(state.lastWarningMessage).toBe("The Defender API answered with a Date -120 min from this host's clock; it was ignored");
  });

  it("ignores an implausible Date (hours off) and says so in health", async () => {
    const tenantId = await connected();
    seed(tenantId, 2);
    stack.defender.setClockOffset(2 * 3600_000);
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 2, complete: true });
    const state = await stateOf(tenantId);
    expect(state.clockSkewMs).toBeUndefined();
    expect(state.lastWarningCode).toBe("implausible_clock");
    expect(state.lastWarningMessage).toBe("The Defender API answered with a Date 120 min from this host's clock; it was ignored");
  });
});

/** Graph's `$filter` for exactly the millisecond `at`, as the pull asks for a crowded one. */
const filterOf = (at: number) => `lastUpdateDateTime ge ${new Date(at).toISOString()} and lastUpdateDateTime lt ${new Date(at + 1).toISOString()}`;

describe("a crowded millisecond on Graph", () => {

  it("pages it by the service's nextLinks, never by $skip, and delivers each version once", async () => {
    const tenantId = await connected("Graph Customer", "graph");
    const at = clock() - 20 * 60_000;
    const crowd = Array.from({ length: 12 }, (_, i) => makeGraphAlert({ id: `g-${tenantId}-${String(i).padStart(3, "0")}`, tenantId, lastUpdateDateTime: toGraphTimestamp(at) }));
    stack.graph.addAlerts(tenantId, crowd);
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "pulled", alerts: 12, complete: true, deadLetters: 0 });
    const delivered = sink.versions();
    expect(new Set(delivered).size).toBe(12);
    expect(delivered).toHaveLength(12);
    const instant = stack.graph.requests(tenantId).filter((r) => r.query.get("$filter") === filterOf(at));
    expect(instant.some((r) => r.followedLink)).toBe(true);
    expect(instant.every((r) => r.query.get("$skip") === null)).toBe(true);
    // Writes inside the millisecond are keyed by how many the pass had read before them.
    expect(sink.writes.filter((w) => w.key.skip > 0).map((w) => w.key.skip).sort((a, b) => a - b)).toEqual([5, 10]);
    expect((await stateOf(tenantId)).lastWarningCode).toBeUndefined();
  });

  it("warns unstable_order with the millisecond's count when the order flips and the passes never read all of it", async () => {
    const tenantId = await connected("Graph Customer", "graph");
    const at = clock() - 20 * 60_000;
    const crowd = Array.from({ length: 12 }, (_, i) => makeGraphAlert({ id: `f-${tenantId}-${String(i).padStart(3, "0")}`, tenantId, lastUpdateDateTime: toGraphTimestamp(at) }));
    stack.graph.addAlerts(tenantId, crowd);
    stack.graph.setOrder(tenantId, "flipping");
    const outcome = await services.tenantPull.run(tenantId, log);
    expect(outcome).toEqual({ outcome: "pulled", alerts: 7, complete: true, deadLetters: 0 });
    const state = await stateOf(tenantId);
    expect(state.lastWarningCode).toBe("unstable_order");
    expect(state.lastWarningMessage).toBe(
      `The alert API's order inside the millisecond ${new Date(at).toISOString()} kept changing between reads: it holds 12 alerts and its passes read 7 of them; every version read was delivered`,
    );
    expect(sink.versions()).toHaveLength(7);
    // Twelve passes of three pages each (5, 5, 2), after the sub-window's own full page: no more.
    expect(stack.graph.requests(tenantId).filter((r) => r.query.get("$filter") === filterOf(at))).toHaveLength(37);
  });
});

describe("a crowded millisecond on Graph, at its limits", () => {
  const crowdOf = (tenantId: string, at: number, count: number, prefix: string) =>
    Array.from({ length: count }, (_, i) => makeGraphAlert({ id: `${prefix}-${tenantId}-${String(i).padStart(4, "0")}`, tenantId, lastUpdateDateTime: toGraphTimestamp(at) }));

  /** A pull whose Graph reader pages by `pageSize` with a budget that never waits. */
  function graphPull(pageSize: number): TenantPull {
    const sleep = async (ms: number) => void sleeps.push(ms);
    const budget = new RateBudget({ clock, sleep, source: "graph", perMinute: 1_000_000, perHour: 1_000_000 });
    const client = new GraphClient({ http: services.http, userAgent: "TestMssp-Connector/1.0", requestTimeoutMs: 30_000, budget, clock, sleep });
    return customPull({
      settings: { ...config.pull, pageSize },
      graph: { client, budget, baseUrl: config.graphApiBaseUrl, maxTop: GRAPH_MAX_TOP, followable: (link) => followableNextLink(config.graphApiBaseUrl, link) },
    });
  }

  /** A Graph tenant's 12 alerts in one millisecond, pulled at pages of 5 while the service links as `mode` says. */
  async function crowdWithLinks(mode: "loop" | "emptyChain" | "otherPath"): Promise<{ tenantId: string; at: number; outcome: PullOutcome }> {
    const tenantId = await connected("Graph Customer", "graph");
    const at = clock() - 20 * 60_000;
    stack.graph.addAlerts(tenantId, crowdOf(tenantId, at, 12, mode));
    stack.graph.setNextLinkMode(mode);
    try {
      return { tenantId, at, outcome: await graphPull(5).run(tenantId, log) };
    } finally {
      stack.graph.setNextLinkMode("normal");
    }
  }

  it("follows at most 200 links of one millisecond a pass when they answer nothing but another link, and needs two quiet passes to move on", async () => {
    const { tenantId, at, outcome } = await crowdWithLinks("emptyChain");
    expect(outcome).toMatchObject({ outcome: "pulled", complete: true });
    // Three passes (one that found the 5, two quiet ones, as a census cut short asks), each the
    // first page and 199 empty links: all it may follow, counted by pages since the alerts read
    // (and so the offset) stop growing.
    const instant = stack.graph.requests(tenantId).filter((r) => r.query.get("$filter") === filterOf(at));
    expect(instant).toHaveLength(1 + 3 * 200);
    expect(instant.filter((r) => r.followedLink)).toHaveLength(3 * 199);
    expect(sink.versions()).toHaveLength(5);
    expect((await stateOf(tenantId)).lastWarningCode).toBe("instant_page_limit");
  });

  it("dead-letters a nextLink on the API's host but off its alerts path, and never follows it", async () => {
    const { tenantId, at, outcome } = await crowdWithLinks("otherPath");
    expect(outcome).toMatchObject({ outcome: "pulled", complete: true });
    const instant = stack.graph.requests(tenantId).filter((r) => r.query.get("$filter") === filterOf(at));
    expect(instant.length).toBeGreaterThan(0);
    expect(instant.some((r) => r.followedLink)).toBe(false);
    const letters = await services.deadLetters.list(tenantId);
    expect(letters.length).toBeGreaterThan(0);
    expect(letters.every((l) => l.reason === "foreign_next_link")).toBe(true);
  });

  it("ends a pass at a page of the millisecond it dead-lettered, since only that page links to the rest, and says alerts may be missing", async () => {
    const tenantId = await connected("Graph Customer", "graph");
    const at = clock() - 20 * 60_000;
    const crowd = crowdOf(tenantId, at, 12, "huge");
    stack.graph.addAlerts(tenantId, crowd);
    // The seventh alert, on the pass's second page, takes 5 MiB: a page of 5 may take 4 MiB.
    const huge = crowd[6]!;
    stack.graph.poisonAlert(tenantId, huge.id, JSON.stringify({ ...huge, description: "x".repeat(5 * 1024 * 1024) }));
    let outcome: PullOutcome;
    try {
      outcome = await graphPull(5).run(tenantId, log);
    } finally {
      stack.graph.poisonAlert(tenantId, huge.id, null);
    }
    expect(outcome).toMatchObject({ outcome: "pulled", alerts: 5, complete: true, deadLetters: 1 });
    // What lies behind the refused page is out of reach: the first page's five only (Graph serves
    // newest first, so ids 11 down to 7; the refused page holds 6 down to 2).
    expect(sink.versions().map((v) => v.split("@")[0]).sort()).toEqual(crowd.slice(7).map((a) => a.id));
    // The sub-window's own page, then three passes (a census cut short asks two quiet ones) of the
    // first page and its link: no pass follows anything past the refused page.
    const instant = stack.graph.requests(tenantId).filter((r) => r.query.get("$filter") === filterOf(at));
    expect(instant).toHaveLength(1 + 3 * 2);
    const letters = await services.deadLetters.list(tenantId);
    expect(letters.map((l) => l.reason)).toEqual(["page_too_large"]);
    const state = await stateOf(tenantId);
    expect(state.lastWarningCode).toBe("instant_pages_unreachable");
    expect(state.lastWarningMessage).toBe(
      `A page inside the crowded millisecond ${new Date(at).toISOString()} was dead-lettered; the alert API links its later pages only from it, so alerts behind it in that millisecond may be missing`,
    );
  });

  it("ends a pass whose nextLink inside the millisecond comes back again, dead-letters the link and says so", async () => {
    const { tenantId, at, outcome } = await crowdWithLinks("loop");
    expect(outcome).toMatchObject({ outcome: "pulled", complete: true, deadLetters: 1 });
    // Only the first page's 5 alerts are read: its link answers an empty page that links to itself.
    expect(sink.versions()).toHaveLength(5);
    const instant = stack.graph.requests(tenantId).filter((r) => r.query.get("$filter") === filterOf(at));
    // The sub-window's own full page, then three passes of two requests (the first page, its
    // link): one that found the 5, and two quiet ones, as a census cut short by the loop asks.
    expect(instant).toHaveLength(1 + 3 * 2);
    expect(instant.filter((r) => r.followedLink)).toHaveLength(3);
    const state = await stateOf(tenantId);
    expect(state.lastWarningCode).toBe("next_link_loop");
    expect(state.lastWarningMessage).toBe("The alert API answered a nextLink it had already given inside one millisecond; the pass ended there instead of looping");
    const letters = await services.deadLetters.list(tenantId);
    // One letter, though each pass met the loop: the same page of the same millisecond.
    expect(letters.filter((l) => l.reason === "next_link_loop")).toHaveLength(1);
    expect(letters.find((l) => l.reason === "next_link_loop")).toMatchObject({ pageFrom: new Date(at).toISOString(), pageTo: new Date(at + 1).toISOString(), skip: 5 });
  });
});

describe("the dedupe set across runs", () => {
  it("remembers every version the next run's overlap serves again, to the second, and forgets those before it", async () => {
    const tenantId = await connected();
    // One alert every 100 ms around where the second run's overlap will begin (its end, 5 minutes
    // from now, less the 10-minute overlap), so some sit in the very second that overlap starts in.
    const around = clock() - 5 * 60_000;
    const dense = generateAlerts(tenantId, 100, { start: new Date(around - 2_000), spacingMs: 100 });
    stack.defender.addAlerts(tenantId, dense);
    const old = seed(tenantId, 3, 40);
    const pull = customPull({ settings: { ...config.pull, pageSize: 50 } });
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 103, complete: true });
    // Versions older than the next run's overlap (40 minutes ago) are forgotten at once.
    expect([...(await stateOf(tenantId)).delivered.keys()]).toHaveLength(100);
    for (let run = 0; run < 2; run++) {
      advance(5 * 60_000);
      expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 0, complete: true });
    }
    expect(tally(tenantId)).toMatchObject({ served: 103, delivered: 103, duplicates: 0, missing: [] });
    expect(old.every((v) => sink.versions().includes(v))).toBe(true);
  });
});

describe("budget, history and an empty window", () => {
  it("stops at its call budget keeping its position; a new process restores the budget from the state and waits for it", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    const limits = { perMinute: 3, perHour: 3 };
    const first = await customPull({}, limits).run(tenantId, log);
    expect(first).toMatchObject({ outcome: "pulled", complete: false });
    expect(stack.defender.requests(tenantId)).toHaveLength(3);
    const state = await stateOf(tenantId);
    expect(state.apiCalls).toHaveLength(3);
    expect(state.window).toBeDefined();
    const delivered = sink.versions().length;

    // Another process: its budget starts from the state's call times, so nothing is asked.
    const second = await customPull({}, limits).run(tenantId, log);
    expect(second).toEqual({ outcome: "pulled", alerts: 0, complete: false, deadLetters: 0 });
    expect(stack.defender.requests(tenantId)).toHaveLength(3);
    expect(sink.versions()).toHaveLength(delivered);

    // An hour later the calls have left the window.
    advance(61 * 60_000);
    const third = await customPull({}, limits).run(tenantId, log);
    expect(third.outcome).toBe("pulled");
    expect(stack.defender.requests(tenantId)).toHaveLength(6);
    expect(tally(tenantId).duplicates).toBe(0);
  });

  it("a pull history that fails is logged and never fails the pull", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    const history = Object.assign(Object.create(services.pullHistory) as PullHistoryStore, {
      record: async () => {
        throw Object.assign(new Error("Service Unavailable"), { name: "RestError", statusCode: 503 });
      },
    });
    expect(await customPull({ history }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 1 });
    expect(lines.some((l) => l.message === "could not record the pull in the pull history" && l.fields["tenantId"] === tenantId)).toBe(true);
  });

  it("with nothing to read yet, still redeems the refresh token so it never idles out, and writes no window", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    services.accessTokens.forget(tenantId);
    const before = stack.entra.stats.tokenRequests.refresh_token;
    // A window would end an hour back and start an hour back: nothing to read.
    const pull = customPull({ settings: { ...config.pull, settleSeconds: 3600, firstRunLookbackHours: 1 } });
    expect(await pull.run(tenantId, log)).toEqual({ outcome: "pulled", alerts: 0, complete: true, deadLetters: 0 });
    expect(stack.entra.stats.tokenRequests.refresh_token).toBe(before + 1);
    expect(stack.defender.requests(tenantId)).toEqual([]);
    const state = await stateOf(tenantId);
    expect(state.window).toBeUndefined();
    expect(state.watermark).toBeUndefined();
    // Nothing delivered yet, ever: no lag to report (rather than one counted from nothing).
    expect(reports[0]).toMatchObject({ outcome: "succeeded", lagSeconds: null });
    expect(state.accessTokenCipher).toBeDefined();
    expect(sink.writes).toEqual([]);
  });
});

describe("app-only tokens (application consent model)", () => {
  const MDE_SCOPE = "https://api.securitycenter.microsoft.com/.default";
  const emptyState = (): PullState => ({ delivered: new Map(), deadLetters: 0, consecutiveFailures: 0, apiCalls: [] });
  const source = () =>
    new AccessTokenSource({ tokens: services.tokens, entra: services.entra, clock, sleep: async (ms) => void sleeps.push(ms), refreshTokenPersistAgeMs: 24 * 3600_000 });

  it("gets client-credential tokens, keeps them in memory only, and notes a token without the source's role", async () => {
    const tenantId = randomUUID();
    stack.entra.grantAppConsent(tenantId, stack.clientId, ["https://api.securitycenter.microsoft.com/Alert.Read.All"]);
    const tokens = source();
    const state = emptyState();
    let claims = 0;
    const get = tokens.forPull(tenantId, state, Number.POSITIVE_INFINITY, MDE_SCOPE, "application", async () => void claims++);
    const token = await get(false);
    expect(token).toMatch(/^ey/);
    expect(tokens.issuedWithoutRole(tenantId)).toBe(false);
    expect(await get(false)).toBe(token);
    expect(tokens.stats).toMatchObject({ memoryHits: 1, tokenRequests: 1, vaultReads: 0 });
    expect(state.accessTokenCipher).toBeUndefined();
    // Nothing delegated was left: no delete, no lease claim.
    expect(claims).toBe(0);
    // A forced refresh asks again.
    expect(await get(true)).toMatch(/^ey/);
    expect(tokens.stats.tokenRequests).toBe(2);
    tokens.forget(tenantId);
    await get(false);
    expect(tokens.stats.tokenRequests).toBe(3);

    const without = randomUUID();
    stack.entra.grantAppConsent(without, stack.clientId, ["https://graph.microsoft.com/SecurityAlert.Read.All"]);
    await tokens.forPull(without, emptyState(), Number.POSITIVE_INFINITY, MDE_SCOPE, "application")(false);
    expect(tokens.issuedWithoutRole(without)).toBe(true);
    stack.entra.grantAppConsent(without, stack.clientId, ["https://api.securitycenter.microsoft.com/Alert.ReadWrite.All"]);
    await tokens.forPull(without, emptyState(), Number.POSITIVE_INFINITY, MDE_SCOPE, "application")(true);
    expect(tokens.issuedWithoutRole(without)).toBe(false);
  });

  it("deletes a delegated refresh token left from before the move, under the lease, and forgets its marks only once deleted", async () => {
    const tenantId = await connected();
    const name = tenantTokenSecretName(tenantId);
    expect(stack.vault.peekLatest(name)).toBeDefined();
    stack.entra.grantAppConsent(tenantId, stack.clientId, ["https://api.securitycenter.microsoft.com/Alert.Read.All"]);
    const tokens = source();
    const state: PullState = { ...emptyState(), refreshTokenObtainedAt: clock() - 1000, accessTokenCipher: "old", accessTokenExpiresAt: clock() + 1000 };
    let claims = 0;
    const get = tokens.forPull(tenantId, state, Number.POSITIVE_INFINITY, MDE_SCOPE, "application", async () => void claims++);
    // The delete is refused: the marks stay for the next pull to try again.
    stack.vault.setFailure({ status: 403, code: "Forbidden" });
    await get(false);
    expect(claims).toBe(1);
    expect(state.refreshTokenObtainedAt).toBeDefined();
    expect(state.accessTokenCipher).toBe("old");
    stack.vault.setFailure(null);
    await get(false);
    expect(claims).toBe(2);
    expect(state.refreshTokenObtainedAt).toBeUndefined();
    expect(state.accessTokenCipher).toBeUndefined();
    expect(state.accessTokenExpiresAt).toBeUndefined();
    expect(stack.vault.peekLatest(name)).toBeUndefined();
    await get(false);
    expect(claims).toBe(2);
  });

  it("asks for a new app-only token two minutes before the one in memory expires, not a millisecond sooner", async () => {
    const tenantId = randomUUID();
    stack.entra.grantAppConsent(tenantId, stack.clientId, ["https://api.securitycenter.microsoft.com/Alert.Read.All"]);
    let at = clock();
    const expiresAt = at + 3_600_000;
    // The real client, its answer's expiry set to a known instant.
    const entra = Object.assign(Object.create(services.entra) as typeof services.entra, {
      acquireAppToken: async (...args: Parameters<typeof services.entra.acquireAppToken>) => ({ ...(await services.entra.acquireAppToken(...args)), accessTokenExpiresAt: expiresAt }),
    });
    const tokens = new AccessTokenSource({ tokens: services.tokens, entra, clock: () => at, sleep: async () => undefined, refreshTokenPersistAgeMs: 24 * 3600_000 });
    const get = () => tokens.forPull(tenantId, emptyState(), Number.POSITIVE_INFINITY, MDE_SCOPE, "application")(false);
    await get();
    at = expiresAt - 120_001;
    await get();
    expect(tokens.stats).toMatchObject({ memoryHits: 1, tokenRequests: 1 });
    at = expiresAt - 120_000;
    await get();
    expect(tokens.stats).toMatchObject({ memoryHits: 1, tokenRequests: 2 });
  });

  it("deletes a delegated refresh token left from before the move even when the state kept only its age", async () => {
    const tenantId = await connected();
    const name = tenantTokenSecretName(tenantId);
    stack.entra.grantAppConsent(tenantId, stack.clientId, ["https://api.securitycenter.microsoft.com/Alert.Read.All"]);
    const state: PullState = { ...emptyState(), refreshTokenObtainedAt: clock() - 1000 };
    let claims = 0;
    await source().forPull(tenantId, state, Number.POSITIVE_INFINITY, MDE_SCOPE, "application", async () => void claims++)(false);
    expect(claims).toBe(1);
    expect(stack.vault.peekLatest(name)).toBeUndefined();
    expect(state.refreshTokenObtainedAt).toBeUndefined();
  });

  it("classifies what ends an application consent and what does not", () => {
    const reconsent = new TokenUnavailableError({ category: "reconsent", error: "invalid_client", aadsts: "AADSTS7000229" });
    expect(classifyApplicationFailure(reconsent, "mde", false)).toEqual({
      category: "reconsent",
      code: "AADSTS7000229",
      message:
        "Entra ID no longer issues the app a token for this tenant (the admin consent or the app was removed); the customer's administrator must consent again to WindowsDefenderATP Alert.Read.All (application)",
    });
    expect(classifyApplicationFailure(new TokenUnavailableError({ category: "reconsent", error: "invalid_client" }), "mde", false)?.code).toBe("invalid_client");
    expect(classifyApplicationFailure(new TokenUnavailableError({ category: "transient", error: "temporarily_unavailable" }), "mde", false)).toBeUndefined();
    const forbidden = new DefenderApiError("forbidden", "refused");
    expect(classifyApplicationFailure(forbidden, "mde", false)).toEqual({
      category: "transient",
      code: "defender_forbidden",
      message: "The Microsoft Defender for Endpoint API refused the app's token although it carries Alert.Read.All (is the product licensed and enabled in the tenant?)",
    });
    expect(classifyApplicationFailure(forbidden, "mde", true)).toEqual({
      category: "reconsent",
      code: "defender_forbidden",
      message:
        "The Microsoft Defender for Endpoint API refused the app's token: the application permission Alert.Read.All is missing (removed by the customer); their administrator must consent again",
    });
    const graphForbidden = new DefenderApiError("forbidden", "refused", { source: "graph" });
    expect(classifyApplicationFailure(graphForbidden, "graph", true)?.code).toBe("graph_forbidden");
    expect(classifyApplicationFailure(graphForbidden, "graph", false)?.message).toContain("although it carries SecurityAlert.Read.All");
    expect(classifyApplicationFailure(new DefenderApiError("server_error", "down"), "mde", true)).toBeUndefined();
    expect(classifyApplicationFailure(new Error("other"), "mde", true)).toBeUndefined();
  });
});

describe("re-drive edge cases", () => {
  const from = () => new Date(clock() - 30 * 60_000).toISOString();

  it("reads a letter stored before sources were named as Defender for Endpoint's, and keeps a page that still does not parse", async () => {
    const tenantId = await connected();
    const alert = makeAlert({ id: "da-legacy-1", lastUpdateTime: toMdeTimestamp(clock() - 25 * 60_000), aadTenantId: tenantId });
    const at = from();
    const legacy = { tenantId, reason: "invalid_time", window: { from: at, to: at }, page: { from: at, to: at, skip: 0 }, raw: JSON.stringify(alert), at } as Omit<DeadLetter, "source">;
    await services.deadLetters.write(legacy as DeadLetter);
    await services.deadLetters.write({ ...(legacy as DeadLetter), source: "mde", reason: "invalid_page", raw: '{"value":[{"id":"x"' });
    const result = await services.redrive.redrive(tenantId, log);
    expect(result).toEqual({ examined: 2, redriven: 1, delivered: 1, remaining: 1 });
    expect(sink.writes[0]?.envelopes[0]).toMatchObject({ source: "mde", alert: { id: "da-legacy-1" } });
    expect((await services.deadLetters.list(tenantId)).map((l) => l.reason)).toEqual(["invalid_page"]);
  });

  it("skips a letter that vanished between the listing and its read", async () => {
    const tenantId = await connected();
    const alert = makeAlert({ id: "da-vanished-1", lastUpdateTime: toMdeTimestamp(clock() - 25 * 60_000), aadTenantId: tenantId });
    const at = from();
    await services.deadLetters.write({ tenantId, source: "mde", reason: "invalid_time", window: { from: at, to: at }, page: { from: at, to: at, skip: 0 }, raw: JSON.stringify(alert), at });
    const vanishing = Object.assign(Object.create(services.deadLetters) as DeadLetterStore, { read: async () => undefined });
    const redrive = new DeadLetterRedrive({ tenants: services.tenants, pullState: services.pullState, deadLetters: vanishing, sink: switchingSink, sinkName: "blob", clock });
    expect(await redrive.redrive(tenantId, log)).toEqual({ examined: 1, redriven: 0, delivered: 0, remaining: 0 });
    expect(sink.writes).toEqual([]);
  });
});

// ---- the run's bounds, report and history ---------------------------------------------------

/** The observer warnings of the current test, as their fields. */
const observerWarnings = () => lines.filter((l) => l.message === "a pull observer failed; the pull is unaffected").map((l) => l.fields);

/** The tenant's registry as the pull sees it, except that its point reads answer `during()` once `gone` is set. */
function registryAnswering(during: () => Promise<TenantRecord | undefined>): { tenants: TenantRegistry; goneAfterFirstWrite: () => void } {
  let gone = false;
  const tenants = Object.assign(Object.create(services.tenants) as TenantRegistry, {
    get: async (...args: Parameters<TenantRegistry["get"]>) => (gone ? during() : services.tenants.get(...args)),
  });
  const goneAfterFirstWrite = () => {
    const original = sink.write.bind(sink);
    sink.write = async (key, alerts) => {
      const written = await original(key, alerts);
      gone = true;
      return written;
    };
  };
  return { tenants, goneAfterFirstWrite };
}

describe("the run's time, report and history", () => {
  it("tells its observers and the history how long the run took and what it delivered, partial when its budget stopped it, alerts 0 when it failed", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    const before = clock();
    const first = await customPull({}, { perMinute: 3, perHour: 3 }).run(tenantId, log, "run-partial");
    const elapsed = clock() - before;
    expect(first).toMatchObject({ outcome: "pulled", complete: false });
    const delivered = sink.versions().length;
    expect(delivered).toBeGreaterThan(0);
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({ outcome: "partial", alerts: delivered, invocationId: "run-partial" });
    const [run] = await services.pullHistory.recent(tenantId);
    expect(run).toMatchObject({ outcome: "partial", alerts: delivered });
    // A run that read pages over HTTPS takes milliseconds: never 0, never more than the caller saw.
    for (const durationMs of [reports[0]?.durationMs, run?.durationMs]) {
      expect(durationMs).toBeGreaterThan(0);
      expect(durationMs).toBeLessThanOrEqual(elapsed);
    }
    expect(observerWarnings()).toEqual([]);

    advance(61 * 60_000);
    sink.failures = 5;
    expect(await customPull().run(tenantId, log)).toMatchObject({ outcome: "failed", code: "sink_failed" });
    expect((await services.pullHistory.recent(tenantId))[0]).toMatchObject({ outcome: "failed", alerts: 0, errorCode: "sink_failed" });
  });

  it("runs the same without observers", async () => {
    const tenantId = await connected();
    seed(tenantId, 3);
    expect(await customPull({ observers: undefined }).run(tenantId, log)).toEqual({ outcome: "pulled", alerts: 3, complete: true, deadLetters: 0 });
    expect(reports).toEqual([]);
  });

  it("leaves an observer that does not answer behind after its bound, says so once, and still tells the others", async () => {
    const tenantId = await connected();
    seed(tenantId, 2);
    const silent = { pulled: () => new Promise<void>(() => undefined) };
    const pull = customPull({ timings: { observerTimeoutMs: 50 }, observers: [silent, { pulled: async (report) => void reports.push(report) }] });
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    expect(reports).toHaveLength(1);
    expect(observerWarnings()).toEqual([{ tenantId, detail: "an observer did not finish in 50 ms" }]);
  });

  it("an observer that throws is logged once, by the error's kind", async () => {
    const tenantId = await connected();
    seed(tenantId, 1);
    const failing = {
      pulled: async () => {
        throw new Error("observer down");
      },
    };
    expect(await customPull({ observers: [failing] }).run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 1 });
    const warned = observerWarnings();
    // The error's kind only: an observer's message could quote what it was sending.
    expect(warned).toEqual([{ tenantId, detail: "Error" }]);
  });

  it("takes a wait for its pull slot off its deadline: a run that waited its whole run time reads no page and keeps its position", async () => {
    const tenantId = await connected();
    seed(tenantId, 4);
    const waitedMs = config.pull.maxRunSeconds * 1000;
    expect(await customPull().run(tenantId, log, "late-run", waitedMs)).toEqual({ outcome: "pulled", alerts: 0, complete: false, deadLetters: 0 });
    expect(sink.writes).toEqual([]);
    expect(reports[0]).toMatchObject({ outcome: "partial" });
    const state = await stateOf(tenantId);
    expect(state.window?.position).toBe(state.window?.from);
    expect(await customPull().run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 4, complete: true });
  });

  it("takes a wait for its pull slot off its work bound: a sink that never answers is abandoned that much sooner, and the failure recorded", async () => {
    const tenantId = await connected();
    seed(tenantId, 4);
    const { sink: hanging, abandoned } = hangingSink();
    // Deadline 20 s less the 17 s waited (3 s to reach the sink), request timeout 1 s, 0.5 s of grace: the bound is 4.5 s after the start.
    const pull = customPull({ sink: hanging, settings: { ...config.pull, maxRunSeconds: 20, requestTimeoutSeconds: 1 }, timings: { deliveryGraceMs: 500, releaseGraceMs: 500 } });
    const started = Date.now();
    const outcome = await pull.run(tenantId, log, "waited-run", 17_000);
    const took = Date.now() - started;
    expect(outcome).toEqual({ outcome: "failed", code: "run_out_of_time", category: "transient" });
    expect(abandoned()).toBe(1);
    expect(took).toBeGreaterThanOrEqual(4_450);
    expect(took).toBeLessThan(11_000);
    const state = await stateOf(tenantId);
    expect(state.lastErrorCode).toBe("run_out_of_time");
    expect(state.leaseOwner).toBeUndefined();
  }, 15_000);

  it("reports the dead letters of the run", async () => {
    const tenantId = await connected();
    seed(tenantId, 3);
    const [bad] = stack.defender.alerts(tenantId);
    stack.defender.poisonAlert(tenantId, bad?.id ?? "", `{"id":"${bad?.id}","lastUpdateTime":"not a time"}`);
    expect(await customPull().run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2, deadLetters: 1 });
    expect(reports[0]).toMatchObject({ outcome: "succeeded", alerts: 2, deadLetters: 1 });
  });
});

/** The real pull-state store, with `change` made to each lease it opens before the pull uses it. */
function changingLeases(change: (lease: PullLease) => Promise<void> | void): PullStateStore {
  return Object.assign(Object.create(services.pullState) as PullStateStore, {
    open: async (...args: Parameters<PullStateStore["open"]>) => {
      const lease = await services.pullState.open(...args);
      if (lease) await change(lease);
      return lease;
    },
  });
}

describe("the tenant while its run reads", () => {
  it("stops without writing more when the tenant's row is gone between pages, and says so", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    const { tenants, goneAfterFirstWrite } = registryAnswering(async () => undefined);
    goneAfterFirstWrite();
    expect(await customPull({ tenants }).run(tenantId, log)).toEqual({ outcome: "skipped", reason: "not_connected" });
    expect(sink.writes).toHaveLength(1);
    expect(lines.filter((l) => l.message === "pull stopped: the tenant is no longer connected").map((l) => l.fields)).toEqual([{ tenantId }]);
  });

  it("stops when a new consent moved the tenant to another source between pages", async () => {
    const tenantId = await connected();
    seed(tenantId, 12);
    const { tenants, goneAfterFirstWrite } = registryAnswering(async () => ({ ...(await services.tenants.get(tenantId))!, source: "graph" }));
    goneAfterFirstWrite();
    expect(await customPull({ tenants }).run(tenantId, log)).toEqual({ outcome: "skipped", reason: "not_connected" });
    expect(sink.writes).toHaveLength(1);
  });

  it("creates no pull state for a tenant offboarded after its first run read the state and before it wrote", async () => {
    const tenantId = await connected();
    seed(tenantId, 3);
    const pullState = changingLeases(async () => void (await services.tenants.update(tenantId, () => ({ status: "offboarded" }))));
    expect(await customPull({ pullState }).run(tenantId, log)).toEqual({ outcome: "skipped", reason: "not_connected" });
    expect(await services.pullState.read(tenantId)).toBeUndefined();
    expect(sink.writes).toEqual([]);
  });

  it("starts afresh, saying so, when a new consent moved the tenant to another source: no checkpoint, window or dedupe set carried over", async () => {
    const tenantId = await connected("Fabrikam Ltd", "graph");
    const first = makeGraphAlert({ id: `g-${tenantId}-first`, tenantId, lastUpdateDateTime: toGraphTimestamp(clock() - 20 * 60_000) });
    stack.graph.addAlerts(tenantId, [first]);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 1 });
    advance(5 * 60_000);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 0 });
    const reset = () => lines.filter((l) => l.message === "pull state reset for the tenant's new alert source").map((l) => l.fields);
    expect(reset()).toEqual([]);
    await services.tenants.update(tenantId, () => ({ source: "mde" }));
    // Updated 3 h back: before the Graph checkpoint, inside a first run's lookback.
    const old = seed(tenantId, 1, 180);
    advance(5 * 60_000);
    expect(await services.tenantPull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 1 });
    expect(reset()).toEqual([{ tenantId, source: "mde" }]);
    expect(sink.versions().at(-1)).toBe(old[0]);
    expect((await stateOf(tenantId)).source).toBe("mde");
  });

  it("ends lease_lost, not as if offboarded, when the state was reset just before its closing write", async () => {
    const tenantId = await connected();
    seed(tenantId, 2);
    const pullState = changingLeases((lease) => {
      const release = lease.release.bind(lease);
      lease.release = async (options) => {
        await otherInstance.reset(tenantId);
        return release(options);
      };
    });
    expect(await customPull({ pullState }).run(tenantId, log)).toEqual({ outcome: "failed", code: "lease_lost", category: "lease_lost" });
    expect(sink.versions()).toHaveLength(2);
    expect(await services.pullState.read(tenantId)).toBeUndefined();
  });

  it("gives a closing write storage does not answer up at the run's release bound, and says so", async () => {
    const tenantId = await connected();
    seed(tenantId, 2);
    // Held until the pull's own bound gives it up, as a socket that never answers would be.
    const pullState = changingLeases((lease) => {
      lease.release = (options) => new Promise((_, reject) => options?.signal?.addEventListener("abort", () => reject(options.signal?.reason)));
    });
    // Deadline 1 s, request timeout 1 s, 0.5 s of grace, 0.5 s more to release: the bound is 3 s after the start.
    const pull = customPull({ pullState, settings: { ...config.pull, maxRunSeconds: 1, requestTimeoutSeconds: 1 }, timings: { deliveryGraceMs: 500, releaseGraceMs: 500 } });
    const started = Date.now();
    expect(await pull.run(tenantId, log)).toMatchObject({ outcome: "pulled", alerts: 2 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(2_950);
    expect(lines.filter((l) => l.message === "could not release the pull lease").map((l) => l.fields["tenantId"])).toEqual([tenantId]);
  }, 15_000);

  it("keeps the lease while one page takes longer than the lease, so a rival stays out", async () => {
    const tenantId = await connected();
    seed(tenantId, 4);
    const timings = { leaseMs: 900 };
    stack.defender.setLatency(2_500, tenantId);
    try {
      const slow = customPull({ timings }).run(tenantId, log);
      // Well past the lease's first expiry, while the first page is still on its way.
      await new Promise((resolve) => setTimeout(resolve, 1_800));
      expect(await customPull({ timings }).run(tenantId, log)).toEqual({ outcome: "busy" });
      stack.defender.setLatency(0, tenantId);
      expect(await slow).toMatchObject({ outcome: "pulled", alerts: 4, complete: true });
    } finally {
      stack.defender.setLatency(0, tenantId);
    }
    expect(tally(tenantId)).toMatchObject({ duplicates: 0, missing: [] });
  }, 20_000);
});
