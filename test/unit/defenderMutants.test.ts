import { describe, expect, it } from "vitest";
import { DEFENDER_MAX_TOP, DefenderApiError, DefenderClient, maxPageBytes } from "../../shared/defender/defenderClient";
import { PageFormatError, scanPage } from "../../shared/defender/pageScanner";
import { RateBudget } from "../../shared/defender/rateBudget";
import { defenderBaseUrl } from "../../shared/defender/regions";
import type { PageQuery } from "../../shared/defender/types";
import type { HttpClient } from "../../shared/http/httpClient";
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
    expect([defaults.perMinute, defaults.perHour]).toEqual([90, 1_400]);
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

describe("the page scanner's refusals", () => {
  it.each([
    ['{"value":[{"id":"da1","lastUpdateTime":"x"}', "unbalanced object or array"],
    ['{"value":[{"id":"da1"}}]}', "unbalanced object or array"],
    ['{"value":[],"x":[1}', "unbalanced object or array"],
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
