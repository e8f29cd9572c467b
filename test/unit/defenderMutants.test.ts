import type { ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFENDER_MAX_TOP, DefenderApiError, DefenderClient, maxPageBytes } from "../../shared/defender/defenderClient";
import { PageFormatError, scanPage } from "../../shared/defender/pageScanner";
import { RateBudget } from "../../shared/defender/rateBudget";
import { defenderBaseUrl } from "../../shared/defender/regions";
import type { PageQuery } from "../../shared/defender/types";
import { createHttpClient, type HttpClient } from "../../shared/http/httpClient";
import { createTestCertificate, type TestCertificate } from "../fakes/tls";
import { clientRig, tinyHttpsServer, type ClientRig, type TinyServer } from "../harness/alertClientFixture";
import { fakeTime as fakeTimeFrom } from "../harness/fakeTime";

/**
 * shared/defender details the other unit tests leave open (issue 15, mutation testing): the
 * messages an operator reads when a client or budget is misconfigured, the size a page may take,
 * the budget's limits at their edges, and the regional hosts.
 */

const T0 = Date.parse("2025-06-01T12:00:00Z");
const FAR = T0 + 24 * 3_600_000;

const fakeTime = (start = T0) => fakeTimeFrom(start);

describe("DefenderClient's refusals", () => {
  const noHttp: HttpClient = {
    request: () => {
      throw new Error("no request may be sent");
    },
  } as unknown as HttpClient;
  const client = new DefenderClient({
    http: noHttp,
    userAgent: "MdePartner-Contoso-Test/1.0",
    requestTimeoutMs: 1_000,
    budget: new RateBudget({ clock: () => T0 }),
    clock: () => T0,
    sleep: async () => undefined,
  });
  const query = (overrides: Partial<PageQuery>): PageQuery => ({
    tenantId: "t",
    from: "2025-01-01T00:00:00.000Z",
    to: "2025-01-01T01:00:00.000Z",
    top: 100,
    skip: 0,
    expandEvidence: false,
    baseUrl: "https://127.0.0.1:1",
    accessToken: async () => "not-sent",
    deadline: FAR,
    ...overrides,
  });

  it("names the bound a $top or $skip breaks, and why a nextLink is refused", async () => {
    expect(DEFENDER_MAX_TOP).toBe(10_000);
    for (const top of [0, 10_001, 2.5, Number.NaN]) {
      await expect(client.fetchPage(query({ top }))).rejects.toThrow(new RangeError("DefenderClient: top must be an integer between 1 and 10000"));
    }
    for (const skip of [-1, 0.5]) {
      await expect(client.fetchPage(query({ skip }))).rejects.toThrow(new RangeError("DefenderClient: skip must be a non-negative integer"));
    }
    await expect(client.fetchPage(query({ nextLink: "https://127.0.0.1:1/api/alerts?$skip=100" }))).rejects.toThrow(
      new RangeError("DefenderClient: nextLink is not followed; the Defender API pages by $skip"),
    );
  });

  it("lets a page take 16 KiB an alert, 64 KiB with evidence, and never less than 4 MiB", () => {
    expect(maxPageBytes({ top: 1, expandEvidence: false })).toBe(4 * 1024 * 1024);
    expect(maxPageBytes({ top: 1, expandEvidence: true })).toBe(4 * 1024 * 1024);
    expect(maxPageBytes({ top: 256, expandEvidence: false })).toBe(4 * 1024 * 1024);
    expect(maxPageBytes({ top: 257, expandEvidence: false })).toBe(257 * 16 * 1024);
    expect(maxPageBytes({ top: 64, expandEvidence: true })).toBe(4 * 1024 * 1024);
    expect(maxPageBytes({ top: 65, expandEvidence: true })).toBe(65 * 64 * 1024);
    expect(maxPageBytes({ top: 10_000, expandEvidence: true })).toBe(10_000 * 64 * 1024);
  });
});

describe("DefenderClient on the wire", () => {
  let cert: TestCertificate;
  let http: HttpClient;
  const servers: TinyServer[] = [];
  beforeAll(async () => {
    cert = await createTestCertificate();
    http = createHttpClient({ extraCaPem: cert.certPem });
  });
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.close()));
  });

  /** A server that answers each request with the next scripted answer (the last one repeats). */
  async function scripted(...answers: ((res: ServerResponse) => void)[]): Promise<TinyServer> {
    let next = 0;
    const server = await tinyHttpsServer(cert, (_req, res) => {
      const answer = answers[Math.min(next++, answers.length - 1)];
      answer?.(res);
    });
    servers.push(server);
    return server;
  }
  const answer =
    (status: number, body: unknown, headers: Record<string, string> = {}) =>
    (res: ServerResponse): void => {
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(typeof body === "string" ? body : JSON.stringify(body));
    };
  const alert = { id: "da1", lastUpdateTime: "2025-01-01T00:10:00.1234567Z", title: "Suspicious PowerShell" };

  function rig(baseUrl: string, options: { maxAttempts?: number; requestTimeoutMs?: number } = {}): ClientRig<DefenderClient> {
    return clientRig({
      budget: {},
      client: (deps) => new DefenderClient({ http, userAgent: "MdePartner-Contoso-Test/1.0", requestTimeoutMs: 5_000, ...deps, ...options }),
      from: "2025-01-01T00:00:00.000Z",
      to: "2025-01-01T01:00:00.000Z",
      baseUrl,
      issuedTokens: new Set<string>(),
    });
  }

  it("names DefenderClient when it is configured with no attempts or no request timeout", () => {
    expect(() => rig("https://127.0.0.1:1", { maxAttempts: 0 })).toThrow(new RangeError("DefenderClient: maxAttempts must be a positive integer"));
    expect(() => rig("https://127.0.0.1:1", { requestTimeoutMs: 0 })).toThrow(new RangeError("DefenderClient: requestTimeoutMs must be a positive integer"));
  });

  it("asks for a page of one alert and for the documented maximum of 10,000", async () => {
    const server = await scripted(answer(200, { value: [alert] }));
    const r = rig(server.url);
    expect((await r.client.fetchPage(r.query("t1", { top: 1 }))).alerts.map((a) => a.id)).toEqual(["da1"]);
    await r.client.fetchPage(r.query("t1", { top: DEFENDER_MAX_TOP, skip: 20_000 }));
    expect(server.requests.map((req) => new URL(req.url ?? "", server.url).searchParams.get("$top"))).toEqual(["1", "10000"]);
  });

  it("passes an alert through byte for byte, its version time read from lastUpdateTime", async () => {
    const raw = '{"id":"da1","lastUpdateDateTime":"2025-01-01T00:09:00Z","lastUpdateTime":"2025-01-01T00:10:00.1234567Z","severity":"High"}';
    const server = await scripted(answer(200, `{"value":[${raw},{"id":"da2","lastUpdateDateTime":"2025-01-01T00:11:00Z"}]}`));
    const r = rig(server.url);
    const page = await r.client.fetchPage(r.query("t1"));
    expect(page.alerts).toEqual([
      { id: "da1", lastUpdateTime: "2025-01-01T00:10:00.1234567Z", updatedAtKey: expect.any(String), updatedAtMs: Date.parse("2025-01-01T00:10:00.123Z"), json: raw },
    ]);
    expect(page.rejected).toEqual([{ index: 1, reason: "missing_time", raw: '{"id":"da2","lastUpdateDateTime":"2025-01-01T00:11:00Z"}' }]);
  });

  it("backs off a 503 like any server error, even with Retry-After (MDE documents Retry-After on 429 only)", async () => {
    const server = await scripted(answer(503, { error: { code: "ServiceUnavailable" } }, { "retry-after": "30" }), answer(200, { value: [alert] }));
    const r = rig(server.url);
    const page = await r.client.fetchPage(r.query("t1"));
    expect(page.alerts.map((a) => a.id)).toEqual(["da1"]);
    // The first back-off step (1 s with equal jitter at 0.5), not the 30 s asked for.
    expect(r.sleeps).toEqual([750]);
    expect(server.requests).toHaveLength(2);
  });

  it("tells the operator which service and host refused a 403, and what to do about it", async () => {
    const server = await scripted(answer(403, { error: { code: "Forbidden" } }));
    const r = rig(server.url);
    const error = await r.client.fetchPage(r.query("t1")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DefenderApiError);
    expect(error).toMatchObject({
      code: "forbidden",
      source: "mde",
      status: 403,
      message: `Defender API GET ${new URL(server.url).host}/api/alerts returned HTTP 403 (Forbidden): the customer has not authorized the application in the Defender portal, or the consenting user lacks the View Data role`,
    });
  });
});

describe("RateBudget's limits", () => {
  it("refuses limits that are not positive integers, or an hour smaller than a minute, by name", () => {
    const clock = () => T0;
    expect(() => new RateBudget({ clock, perMinute: 0 })).toThrow(new RangeError("RateBudget: perMinute must be a positive integer"));
    expect(() => new RateBudget({ clock, perMinute: 1.5 })).toThrow(new RangeError("RateBudget: perMinute must be a positive integer"));
    expect(() => new RateBudget({ clock, perHour: -3 })).toThrow(new RangeError("RateBudget: perHour must be a positive integer"));
    expect(() => new RateBudget({ clock, perMinute: 10, perHour: 9 })).toThrow(new RangeError("RateBudget: perHour must be at least perMinute"));
    const equal = new RateBudget({ clock, perMinute: 1, perHour: 1 });
    expect([equal.perMinute, equal.perHour]).toEqual([1, 1]);
    const defaults = new RateBudget({ clock });
    expect([defaults.perMinute, defaults.perHour]).toEqual([90, 1_470]);
  });

  it("names the service and the time the budget frees up in budget_exhausted", async () => {
    const time = fakeTime();
    const mde = new RateBudget({ ...time, perMinute: 1 });
    await mde.acquire("t", FAR);
    const error = await mde.acquire("t", T0 + 1_000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DefenderApiError);
    expect(error).toMatchObject({
      code: "budget_exhausted",
      retryable: true,
      source: "mde",
      message: "Defender API call budget for the tenant is spent until 2025-06-01T12:01:00.000Z, after this run's deadline",
    });
    const graph = new RateBudget({ ...time, perMinute: 1, source: "graph" });
    await graph.acquire("t", FAR);
    const graphError = await graph.acquire("t", T0 + 1_000).catch((e: unknown) => e);
    expect(graphError).toMatchObject({
      source: "graph",
      message: "Microsoft Graph call budget for the tenant is spent until 2025-06-01T12:01:00.000Z, after this run's deadline",
    });
  });

  it("frees a minute slot exactly 60 s after the call and an hour slot exactly an hour after", async () => {
    const time = fakeTime();
    const budget = new RateBudget({ ...time, perMinute: 2, perHour: 3 });
    await budget.acquire("t", FAR);
    time.state.now = T0 + 10;
    await budget.acquire("t", FAR);
    // The third waits for the first call to leave the minute: exactly 60 s after it.
    await budget.acquire("t", FAR);
    expect(time.state.sleeps).toEqual([59_990]);
    expect(budget.snapshot("t")).toEqual([T0, T0 + 10, T0 + 60_000]);
    // The fourth: the hour is full (3 calls); the first leaves it at T0 + 1 h.
    await budget.acquire("t", FAR);
    expect(time.state.sleeps).toEqual([59_990, 3_600_000 - 60_000]);
    expect(budget.snapshot("t")).toEqual([T0 + 10, T0 + 60_000, T0 + 3_600_000]);
  });

  it("forgets a call exactly an hour old, and keeps one a millisecond younger", async () => {
    const time = fakeTime();
    const budget = new RateBudget({ ...time, perMinute: 5, perHour: 5 });
    await budget.acquire("t", FAR);
    time.state.now = T0 + 1;
    await budget.acquire("t", FAR);
    time.state.now = T0 + 3_600_000;
    expect(budget.snapshot("t")).toEqual([T0 + 1]);
    time.state.now = T0 + 3_600_001;
    expect(budget.snapshot("t")).toEqual([]);
    expect(budget.trackedTenants).toBe(0);
  });

  it("restores calls in order, each distinct time counted by the larger side, dropping what is an hour old", async () => {
    const time = fakeTime(T0 + 7_200_000);
    const now = time.state.now;
    const budget = new RateBudget({ ...time, perMinute: 10, perHour: 20 });
    await budget.acquire("t", FAR);
    budget.restore("t", [now - 5_000, now - 5_000, now - 9_000.7, now - 3_600_000, now - 3_599_999, "x" as unknown as number, Number.POSITIVE_INFINITY, now]);
    expect(budget.snapshot("t")).toEqual([now - 3_599_999, now - 9_001, now - 5_000, now - 5_000, now]);
    // The same again changes nothing; one more at an already known time counts only if there are more of it.
    budget.restore("t", [now - 5_000, now - 5_000, now - 5_000]);
    expect(budget.snapshot("t")).toEqual([now - 3_599_999, now - 9_001, now - 5_000, now - 5_000, now - 5_000, now]);
    // Restored calls count against the budget like the process's own.
    const full = new RateBudget({ ...time, perMinute: 2, perHour: 20 });
    full.restore("t", [now - 1_000, now - 500]);
    await full.acquire("t", FAR);
    expect(time.state.sleeps).toEqual([59_000]);
  });

  it("sweeps idle tenants at most once a minute, and only those whose newest call is an hour old", async () => {
    const time = fakeTime();
    const budget = new RateBudget({ ...time, perMinute: 5, perHour: 10 });
    await budget.acquire("old", FAR);
    time.state.now = T0 + 1_000;
    await budget.acquire("recent", FAR);
    // An hour after "old" but within a minute of the last sweep: nobody is swept yet.
    time.state.now = T0 + 30_000;
    await budget.acquire("third", FAR);
    expect(budget.trackedTenants).toBe(3);
    time.state.now = T0 + 3_600_000;
    await budget.acquire("third", FAR);
    // "old" is exactly an hour old: gone; "recent" is not.
    expect(budget.trackedTenants).toBe(2);
    time.state.now = T0 + 3_600_000 + 30_000;
    await budget.acquire("third", FAR);
    // Less than a minute since the last sweep: "recent" (now an hour old) stays tracked until the next sweep.
    expect(budget.trackedTenants).toBe(2);
    time.state.now = T0 + 3_600_000 + 60_000;
    await budget.acquire("third", FAR);
    expect(budget.trackedTenants).toBe(1);
  });
});

describe("RateBudget's edges", () => {
  it("really waits when no sleep is injected, for as long as the budget asks and no longer", async () => {
    let now = T0;
    const budget = new RateBudget({ clock: () => now, perMinute: 1 });
    await budget.acquire("t", FAR);
    // The slot frees up 60 s after the first call: 80 ms from this clock's point of view.
    now = T0 + 60_000 - 80;
    const started = performance.now();
    await budget.acquire("t", FAR);
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThanOrEqual(70);
    expect(waited).toBeLessThan(5_000);
    expect(budget.snapshot("t")).toEqual([T0, T0 + 60_000]);
  });

  it("forgets a tenant whose restored calls are all an hour old, without a read first", () => {
    const budget = new RateBudget({ clock: () => T0 });
    budget.restore("stale", [T0 - 3_600_000, T0 - 4_000_000]);
    expect(budget.trackedTenants).toBe(0);
    budget.restore("fresh", [T0 - 1_000]);
    expect(budget.trackedTenants).toBe(1);
  });

  it("keeps calls in time order when the host clock steps back", async () => {
    const time = fakeTime(T0 + 10);
    const budget = new RateBudget({ ...time, perMinute: 3, perHour: 10 });
    await budget.acquire("t", FAR);
    time.state.now = T0;
    await budget.acquire("t", FAR);
    time.state.now = T0 + 5;
    await budget.acquire("t", FAR);
    expect(budget.snapshot("t")).toEqual([T0, T0 + 5, T0 + 10]);
    // The minute frees up 60 s after the oldest call, not after the first one taken.
    await budget.acquire("t", FAR);
    expect(time.state.sleeps).toEqual([59_995]);
  });
});

describe("defenderBaseUrl", () => {
  it("keeps any base that is not Microsoft's global host over plain https on the default port", () => {
    expect(defenderBaseUrl("https://API.Security.Microsoft.com", "eu")).toBe("https://eu.api.security.microsoft.com");
    expect(defenderBaseUrl("http://api.security.microsoft.com", "eu")).toBe("http://api.security.microsoft.com");
    expect(defenderBaseUrl("https://api.security.microsoft.com:8443", "eu")).toBe("https://api.security.microsoft.com:8443");
    expect(defenderBaseUrl("not a url", "eu")).toBe("not a url");
    expect(defenderBaseUrl("https://api.securitycenter.microsoft.com", "us")).toBe("https://us.api.security.microsoft.com");
    for (const region of ["us", "eu", "uk", "au", "swa", "ina"] as const) {
      expect(defenderBaseUrl("https://api.security.microsoft.com", region)).toBe(`https://${region}.api.security.microsoft.com`);
    }
  });
});

describe("the page scanner's rejected elements", () => {
  const MiB = 1024 * 1024;
  const prefix = '{"id":"a","lastUpdateTime":"2026-11-23T10:00:00Z","big":"';
  /** The raw text kept for a rejected (trailing comma) alert whose string is `filler` repeated. */
  const rawOf = (filler: string, times: number): { raw: string; element: string } => {
    const element = `${prefix}${filler.repeat(times)}",}`;
    const rejected = scanPage(`{"value":[${element}]}`).rejected;
    expect(rejected.map((r) => [r.index, r.reason])).toEqual([[0, "invalid_json"]]);
    return { raw: rejected[0]?.raw ?? "", element };
  };

  it.each([
    ["U+0080, 2 bytes", "\u0080"],
    ["U+07FF, 2 bytes", "\u07ff"],
    ["U+0800, 3 bytes", "\u0800"],
    ["U+10000, a surrogate pair of 4 bytes", "\u{10000}"],
    ["U+10FFFF, a surrogate pair of 4 bytes", "\u{10ffff}"],
  ])("keeps 1 MiB of UTF-8 of an element of %s characters, to the last whole character", (_name, filler) => {
    const { raw, element } = rawOf(filler, 600_000);
    expect(element.startsWith(raw)).toBe(true);
    const bytes = Buffer.byteLength(raw);
    expect(bytes).toBeLessThanOrEqual(MiB);
    // The next whole character would not have fitted.
    expect(bytes + Buffer.byteLength(filler)).toBeGreaterThan(MiB);
    // Never half of a surrogate pair at the cut.
    expect(raw).not.toMatch(/[\uD800-\uDBFF]$/);
  });

  it("keeps a long element that fits in 1 MiB whole, up to its last character and no further", () => {
    // 500,000 characters: too long to take whole unmeasured (3 bytes a character at most), short enough to fit.
    const { raw, element } = rawOf("a", 500_000);
    expect(raw).toBe(element);
  });

  it("keeps an element of exactly 1 MiB whole, and cuts one a byte longer", () => {
    const fit = MiB - prefix.length - 3;
    expect(rawOf("a", fit).raw).toHaveLength(MiB);
    const { raw, element } = rawOf("a", fit + 1);
    expect(raw).toBe(element.slice(0, MiB));
  });
});

describe("the page scanner's page members", () => {
  it("reads only the member named exactly value as the alerts, and only @odata.nextLink as the next link", () => {
    const alert = '{"id":"da1","lastUpdateTime":"2026-11-23T10:00:00Z"}';
    const scanned = scanPage(`{"valueCount":[{"id":"x"}],"values":[],"value":[${alert}],"@odata.nextLinks":"https://x","@odata.nextLin":"https://y"}`);
    expect(scanned).toEqual({
      alerts: [{ id: "da1", lastUpdateTime: "2026-11-23T10:00:00Z", updatedAtKey: "2026-11-23T10:00:00.0000000Z", updatedAtMs: Date.parse("2026-11-23T10:00:00Z"), json: alert }],
      rejected: [],
      nextLink: undefined,
    });
  });
});

describe("the page scanner's refusals", () => {
  it.each([
    ['{"value":[{"id":"da1","lastUpdateTime":"x"}', "unbalanced object or array"],
    ['{"value":[{"id":"da1"}}]}', "unbalanced object or array"],
    ['{"value":[],"x":[1}', "unbalanced object or array"],
    ['{"value":[],"x":tru]}', "unbalanced object or array"],
    ['{"value":[]', "unbalanced object or array"],
    ['{"value":[{"id":"da1","lastUpdateTime":"x]}', "unterminated string"],
    ['{"value":{"id":"da1"}}', '"value" is not an array'],
    ["{}", 'response has no "value" array'],
    ['{"value":[]} x', "trailing data after the page"],
    ['{"value":[],"@odata.nextLink":5}', "@odata.nextLink is not a string"],
    ['{"value":[],"@odata.context":tru}', "a page member is not valid JSON"],
    ['{"value":[],}', "expected a member name in the page object"],
    ['{"va\\lue":[]}', "invalid member name in the page object"],
    ['{"value" []}', "expected a colon in the page object"],
    ['{"value":[] "x":1}', "expected a comma or the end of the page object"],
    ['{"value":[],"value":[]}', 'the page has two "value" members'],
    ["[]", "the page is not a JSON object"],
  ])("refuses %s with exactly: %s", (text, message) => {
    let thrown: unknown;
    try {
      scanPage(text);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(PageFormatError);
    expect(thrown).toMatchObject({ name: "PageFormatError", message });
  });
});
