import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DefenderApiError, DefenderClient, retryAfterMs } from "../../shared/defender/defenderClient";
import { RateBudget } from "../../shared/defender/rateBudget";
import { defenderBaseUrl } from "../../shared/defender/regions";
import type { AlertPage, AlertWindowQuery } from "../../shared/defender/types";
import { createHttpClient, type HttpClient } from "../../shared/http/httpClient";
import { generateAlerts } from "../fakes/alerts";
import { FakeDefender, type DefenderTokenClaims } from "../fakes/fakeDefender";
import { createTestCertificate, type TestCertificate } from "../fakes/tls";

const UA = "MdePartner-Contoso-AlertCollector/1.2.3";
const FROM = "2025-01-01T00:00:00.000Z";
const TO = "2025-01-01T01:00:00.000Z";

let cert: TestCertificate;
let fake: FakeDefender;
let http: HttpClient;
/** Every DefenderApiError the tests saw, checked at the end for leaked tokens and queries. */
const seenErrors: DefenderApiError[] = [];
const issuedTokens = new Set<string>();

/** `tok-<tid>` is a valid app token; `noperm-<tid>` lacks Alert.Read.All; anything else is rejected. */
async function verifyAccessToken(token: string): Promise<DefenderTokenClaims | null> {
  const match = /^(tok|noperm)-(.+)$/.exec(token);
  if (!match?.[2]) return null;
  const claims: DefenderTokenClaims = {
    tid: match[2],
    aud: "https://api.securitycenter.microsoft.com",
    exp: Math.floor(Date.now() / 1000) + 3600,
  };
  if (match[1] === "noperm") claims.roles = ["Machine.Read.All"];
  return claims;
}

beforeAll(async () => {
  cert = await createTestCertificate();
  fake = new FakeDefender({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken });
  await fake.start();
  http = createHttpClient({ extraCaPem: cert.certPem });
});
afterAll(async () => {
  await fake?.stop();
});

interface Rig {
  client: DefenderClient;
  budget: RateBudget;
  sleeps: number[];
  acquires: number;
  now: () => number;
  query: (tenantId: string, overrides?: Partial<AlertWindowQuery>) => AlertWindowQuery;
  tokenCalls: boolean[];
}

/** A client on the real HTTP stack with a fake clock that only the injected sleep moves. */
function rig(options: { requestTimeoutMs?: number; maxAttempts?: number; perMinute?: number; perHour?: number; baseUrl?: string } = {}): Rig {
  let now = Date.now();
  const sleeps: number[] = [];
  const clock = () => now;
  const sleep = async (ms: number) => {
    sleeps.push(ms);
    now += ms;
  };
  const state = { acquires: 0 };
  class CountingBudget extends RateBudget {
    override async acquire(tenantId: string, deadline: number): Promise<void> {
      state.acquires++;
      return super.acquire(tenantId, deadline);
    }
  }
  const budget = new CountingBudget({
    clock,
    sleep,
    ...(options.perMinute ? { perMinute: options.perMinute } : {}),
    ...(options.perHour ? { perHour: options.perHour } : {}),
  });
  const client = new DefenderClient({
    http,
    userAgent: UA,
    requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
    budget,
    clock,
    sleep,
    random: () => 0.5,
    ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}),
  });
  const tokenCalls: boolean[] = [];
  const r: Rig = {
    client,
    budget,
    sleeps,
    get acquires() {
      return state.acquires;
    },
    now: clock,
    tokenCalls,
    query: (tenantId, overrides = {}) => ({
      tenantId,
      from: FROM,
      to: TO,
      startSkip: 0,
      pageSize: 50,
      pageOverlap: 0,
      expandEvidence: false,
      baseUrl: options.baseUrl ?? fake.url,
      accessToken: async (force) => {
        tokenCalls.push(force);
        const token = `tok-${tenantId}`;
        issuedTokens.add(token);
        return token;
      },
      deadline: now + 10 * 60_000,
      ...overrides,
    }),
  };
  return r;
}

async function collect(pages: AsyncIterable<AlertPage>): Promise<AlertPage[]> {
  const out: AlertPage[] = [];
  for await (const page of pages) out.push(page);
  return out;
}

async function failure(pages: AsyncIterable<AlertPage>, yielded: AlertPage[] = []): Promise<DefenderApiError> {
  try {
    for await (const page of pages) yielded.push(page);
  } catch (error) {
    expect(error).toBeInstanceOf(DefenderApiError);
    seenErrors.push(error as DefenderApiError);
    return error as DefenderApiError;
  }
  throw new Error("expected the pages to fail");
}

function seeded(count: number): { tenantId: string; ids: string[] } {
  const tenantId = randomUUID();
  const alerts = generateAlerts(tenantId, count, { start: new Date(FROM), spacingMs: 1000 });
  fake.addAlerts(tenantId, alerts);
  return { tenantId, ids: alerts.map((a) => a.id) };
}

const skipsOf = (tenantId: string) => fake.requests(tenantId).map((r) => r.query.get("$skip"));

/** A tiny HTTPS server for what the fake cannot do (headers, foreign nextLinks, malformed bodies). */
async function tinyServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; requests: IncomingMessage[]; close: () => Promise<void> }> {
  const requests: IncomingMessage[] = [];
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    requests.push(req);
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

describe("DefenderClient paging", () => {
  it("reads a multi-page window with $top/$skip, yielding every alert once", async () => {
    const { tenantId, ids } = seeded(230);
    const r = rig();
    const pages = await collect(r.client.pages(r.query(tenantId)));
    expect(pages.map((p) => [p.skip, p.alerts.length, p.nextSkip])).toEqual([
      [0, 50, 50],
      [50, 50, 100],
      [100, 50, 150],
      [150, 50, 200],
      [200, 30, undefined],
    ]);
    const got = pages.flatMap((p) => p.alerts.map((a) => a.id));
    expect(got).toEqual(ids);
    expect(new Set(got).size).toBe(230);
    expect(skipsOf(tenantId)).toEqual(["0", "50", "100", "150", "200"]);
    const first = fake.requests(tenantId)[0]?.query;
    expect(first?.get("$filter")).toBe(`lastUpdateTime ge ${FROM} and lastUpdateTime lt ${TO}`);
    expect(first?.get("$top")).toBe("50");
    expect(first?.has("$expand")).toBe(false);
    expect(JSON.parse(pages[0]?.alerts[0]?.json ?? "{}")).not.toHaveProperty("evidence");
    // One budget slot per HTTP attempt, and no waiting on the happy path.
    expect(r.acquires).toBe(5);
    expect(r.sleeps).toEqual([]);
    expect(r.budget.snapshot(tenantId)).toHaveLength(5);
  });

  it("overlaps consecutive pages so an alert that moves up one place is not skipped", async () => {
    const { tenantId, ids } = seeded(120);
    const r = rig();
    const pages: Array<{ skip: number; ids: string[] }> = [];
    for await (const page of r.client.pages(r.query(tenantId, { pageOverlap: 2 }))) {
      pages.push({ skip: page.skip, ids: page.alerts.map((a) => a.id) });
      // An analyst resolves the first alert while the window is being read: everything after it moves up.
      if (pages.length === 1) fake.updateAlert(tenantId, ids[0] as string, { lastUpdateTime: "2099-01-01T00:00:00Z" });
    }
    expect(pages.map((p) => p.skip)).toEqual([0, 48, 96]);
    const seen = new Set(pages.flatMap((p) => p.ids));
    // ids[50] moved to position 49: without the overlap it would fall between the pages.
    for (const id of ids) expect(seen.has(id), id).toBe(true);
  });

  it("ends on an empty page when the window is an exact multiple of the page size", async () => {
    const { tenantId } = seeded(100);
    const r = rig();
    const pages = await collect(r.client.pages(r.query(tenantId)));
    expect(pages.map((p) => [p.skip, p.alerts.length, p.nextSkip])).toEqual([
      [0, 50, 50],
      [50, 50, 100],
      [100, 0, undefined],
    ]);
  });

  it("ends on a short first page and resumes inside a window at startSkip", async () => {
    const { tenantId, ids } = seeded(120);
    const r = rig();
    const short = await collect(r.client.pages(r.query(tenantId, { pageSize: 500 })));
    expect(short.map((p) => [p.skip, p.alerts.length, p.nextSkip])).toEqual([[0, 120, undefined]]);
    const resumed = await collect(r.client.pages(r.query(tenantId, { startSkip: 100 })));
    expect(resumed.map((p) => p.skip)).toEqual([100]);
    expect(resumed.flatMap((p) => p.alerts.map((a) => a.id))).toEqual(ids.slice(100));
  });

  it("asks for $expand=evidence only when configured", async () => {
    const { tenantId } = seeded(3);
    const r = rig();
    const [page] = await collect(r.client.pages(r.query(tenantId, { expandEvidence: true })));
    expect(fake.requests(tenantId)[0]?.query.get("$expand")).toBe("evidence");
    expect(Array.isArray((JSON.parse(page?.alerts[0]?.json ?? "{}") as { evidence?: unknown }).evidence)).toBe(true);
  });

  it("follows @odata.nextLink and takes nextSkip from it", async () => {
    const { tenantId, ids } = seeded(120);
    const r = rig();
    fake.setNextLinkPaging(true);
    try {
      const pages = await collect(r.client.pages(r.query(tenantId)));
      expect(pages.map((p) => [p.skip, p.alerts.length, p.nextSkip])).toEqual([
        [0, 50, 50],
        [50, 50, 100],
        [100, 20, undefined],
      ]);
      expect(pages.flatMap((p) => p.alerts.map((a) => a.id))).toEqual(ids);
    } finally {
      fake.setNextLinkPaging(false);
    }
    expect(skipsOf(tenantId)).toEqual(["0", "50", "100"]);
    for (const request of fake.requests(tenantId)) {
      expect(request.query.get("$filter")).toBe(`lastUpdateTime ge ${FROM} and lastUpdateTime lt ${TO}`);
    }
  });

  it("refuses a nextLink to another origin without calling it", async () => {
    const server = await tinyServer((_req, res) =>
      json(res, 200, {
        value: [{ id: "a1", lastUpdateTime: "2025-01-01T00:00:01Z" }],
        "@odata.nextLink": "https://attacker.example/api/alerts?$skip=1&$top=50",
      }),
    );
    try {
      const r = rig({ baseUrl: server.url });
      const error = await failure(r.client.pages(r.query(randomUUID(), { pageSize: 1 })));
      expect(error.code).toBe("invalid_response");
      expect(error.retryable).toBe(false);
      expect(error.message).toContain("another origin");
      expect(server.requests).toHaveLength(1);
    } finally {
      await server.close();
    }
  });

  it("sends the partner User-Agent, the bearer token and Accept, with OData names unescaped", async () => {
    const server = await tinyServer((_req, res) => json(res, 200, { value: [] }));
    try {
      const r = rig({ baseUrl: `${server.url}/` });
      const tenantId = randomUUID();
      await collect(r.client.pages(r.query(tenantId, { expandEvidence: true })));
      const req = server.requests[0];
      expect(req?.headers["user-agent"]).toBe(UA);
      expect(req?.headers["authorization"]).toBe(`Bearer tok-${tenantId}`);
      expect(req?.headers["accept"]).toBe("application/json");
      expect(req?.url).toMatch(/^\/api\/alerts\?\$filter=lastUpdateTime\+ge\+2025-01-01T00%3A00%3A00\.000Z\+and\+/);
      expect(req?.url).toContain("&$top=50&$skip=0&$expand=evidence");
    } finally {
      await server.close();
    }
  });

  it("rejects alerts without a string id or lastUpdateTime", async () => {
    const server = await tinyServer((_req, res) => json(res, 200, { value: [{ id: 7, lastUpdateTime: "2025-01-01T00:00:01Z" }] }));
    try {
      const r = rig({ baseUrl: server.url });
      const error = await failure(r.client.pages(r.query(randomUUID())));
      expect(error.code).toBe("invalid_response");
      expect(error.message).toContain("alert #0 has no string id");
    } finally {
      await server.close();
    }
  });

  it("stops with a retryable 'deadline' before a page once the deadline has passed", async () => {
    const { tenantId } = seeded(120);
    const r = rig();
    const query = r.query(tenantId, { deadline: r.now() - 1 });
    const error = await failure(r.client.pages(query));
    expect(error.code).toBe("deadline");
    expect(error.retryable).toBe(true);
    expect(fake.requests(tenantId)).toHaveLength(0);
  });

  it("stops with budget_exhausted when the call budget would outlast the deadline, after yielding what it read", async () => {
    const { tenantId } = seeded(120);
    const r = rig({ perMinute: 2, perHour: 10 });
    const yielded: AlertPage[] = [];
    const error = await failure(r.client.pages(r.query(tenantId, { deadline: r.now() + 30_000 })), yielded);
    expect(error.code).toBe("budget_exhausted");
    expect(yielded.map((p) => p.skip)).toEqual([0, 50]);
    expect(fake.requests(tenantId)).toHaveLength(2);
  });
});

describe("DefenderClient errors and retries", () => {
  it("waits out 429s for exactly Retry-After seconds", async () => {
    const { tenantId, ids } = seeded(30);
    fake.throttle(tenantId, { times: 2, retryAfterSeconds: 7 });
    const r = rig();
    const pages = await collect(r.client.pages(r.query(tenantId)));
    expect(pages.flatMap((p) => p.alerts.map((a) => a.id))).toEqual(ids);
    expect(r.sleeps).toEqual([7000, 7000]);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([429, 429, 200]);
    // Every attempt, throttled or not, took a budget slot first.
    expect(r.acquires).toBe(3);
  });

  it("gives up with 'throttled' when Retry-After would pass the deadline", async () => {
    const { tenantId } = seeded(30);
    fake.throttle(tenantId, { times: 100, retryAfterSeconds: 60 });
    const r = rig();
    const error = await failure(r.client.pages(r.query(tenantId, { deadline: r.now() + 90_000 })));
    fake.throttle(tenantId, { times: 0, retryAfterSeconds: 0 });
    expect(error).toMatchObject({ code: "throttled", status: 429, retryable: true, apiCode: "TooManyRequests" });
    expect(error.message).toContain("HTTP 429 (TooManyRequests)");
    expect(r.sleeps).toEqual([60_000]);
    expect(fake.requests(tenantId)).toHaveLength(2);
  });

  it("gives up with 'throttled' after maxAttempts 429s", async () => {
    const { tenantId } = seeded(30);
    fake.throttle(tenantId, { times: 100, retryAfterSeconds: 1 });
    const r = rig({ maxAttempts: 3 });
    const error = await failure(r.client.pages(r.query(tenantId)));
    fake.throttle(tenantId, { times: 0, retryAfterSeconds: 0 });
    expect(error.code).toBe("throttled");
    expect(r.sleeps).toEqual([1000, 1000]);
    expect(fake.requests(tenantId)).toHaveLength(3);
  });

  it("retries a 500 with backoff and then succeeds", async () => {
    const { tenantId, ids } = seeded(30);
    fake.fail(tenantId, { status: 500, times: 1 });
    const r = rig();
    const pages = await collect(r.client.pages(r.query(tenantId)));
    expect(pages.flatMap((p) => p.alerts.map((a) => a.id))).toEqual(ids);
    // First backoff step is 1 s with equal jitter: 500 ms + random(0.5) × 500 ms.
    expect(r.sleeps).toEqual([750]);
  });

  it("backs off exponentially and gives up on persistent 503s with a retryable server_error", async () => {
    const { tenantId } = seeded(30);
    fake.fail(tenantId, { status: 503, times: 100 });
    const r = rig();
    const error = await failure(r.client.pages(r.query(tenantId)));
    fake.fail(tenantId, { status: 503, times: 0 });
    expect(error).toMatchObject({ code: "server_error", status: 503, retryable: true });
    expect(r.sleeps).toEqual([750, 1500, 3000, 6000]);
    expect(fake.requests(tenantId)).toHaveLength(5);
  });

  it("times out a hung request and retries it", async () => {
    const { tenantId, ids } = seeded(30);
    fake.hang(tenantId, 1);
    const r = rig({ requestTimeoutMs: 300 });
    const pages = await collect(r.client.pages(r.query(tenantId)));
    expect(pages.flatMap((p) => p.alerts.map((a) => a.id))).toEqual(ids);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([0, 200]);
    expect(r.sleeps).toEqual([750]);
  });

  it("reports 'timeout' when every attempt hangs", async () => {
    const { tenantId } = seeded(5);
    fake.hang(tenantId, 2);
    const r = rig({ requestTimeoutMs: 200, maxAttempts: 2 });
    const error = await failure(r.client.pages(r.query(tenantId)));
    expect(error).toMatchObject({ code: "timeout", retryable: true });
  });

  it("refreshes the token once after a 401 and carries on", async () => {
    const { tenantId, ids } = seeded(30);
    const r = rig();
    const calls: boolean[] = [];
    const query = r.query(tenantId, {
      accessToken: async (force) => {
        calls.push(force);
        return force ? `tok-${tenantId}` : `expired-${tenantId}`;
      },
    });
    issuedTokens.add(`expired-${tenantId}`);
    const pages = await collect(r.client.pages(query));
    expect(pages.flatMap((p) => p.alerts.map((a) => a.id))).toEqual(ids);
    expect(calls).toEqual([false, true]);
  });

  it("fails with a non-retryable 'unauthorized' when the refreshed token is refused too", async () => {
    const { tenantId } = seeded(5);
    const r = rig();
    const calls: boolean[] = [];
    const token = `revoked-${tenantId}`;
    issuedTokens.add(token);
    const error = await failure(
      r.client.pages(
        r.query(tenantId, {
          accessToken: async (force) => {
            calls.push(force);
            return token;
          },
        }),
      ),
    );
    expect(error).toMatchObject({ code: "unauthorized", status: 401, retryable: false });
    expect(calls).toEqual([false, true]);
  });

  it("fails with a non-retryable 'forbidden' on 403", async () => {
    const { tenantId } = seeded(5);
    const r = rig();
    const token = `noperm-${tenantId}`;
    issuedTokens.add(token);
    const error = await failure(r.client.pages(r.query(tenantId, { accessToken: async () => token })));
    expect(error).toMatchObject({ code: "forbidden", status: 403, retryable: false });
    expect(error.message).toContain("Defender portal");
  });

  it("maps 400 to bad_request with the API's error code", async () => {
    const { tenantId } = seeded(5);
    const r = rig();
    const error = await failure(r.client.pages(r.query(tenantId, { from: "yesterday" })));
    expect(error).toMatchObject({ code: "bad_request", status: 400, apiCode: "InvalidInput", retryable: false });
    expect(error.message).toContain("HTTP 400 (InvalidInput)");
  });

  it("maps 404 to not_found", async () => {
    const { tenantId } = seeded(5);
    const r = rig({ baseUrl: `${fake.url}/nowhere` });
    const error = await failure(r.client.pages(r.query(tenantId)));
    expect(error).toMatchObject({ code: "not_found", status: 404 });
  });

  it("does not repeat an error code that echoes the token", async () => {
    const tenantId = randomUUID();
    const token = `tok-${tenantId}`;
    const server = await tinyServer((req, res) => {
      const sent = String(req.headers["authorization"]).replace(/^Bearer /, "");
      json(res, 400, { error: { code: sent.replace(/-/g, ""), message: `bad token ${sent}` } });
    });
    try {
      const r = rig({ baseUrl: server.url });
      const error = await failure(r.client.pages(r.query(tenantId, { accessToken: async () => token.replace(/-/g, "") })));
      issuedTokens.add(token.replace(/-/g, ""));
      expect(error.code).toBe("bad_request");
      expect(error.apiCode).toBeUndefined();
    } finally {
      await server.close();
    }
  });

  it("never puts a token, the query or the response body in an error message", () => {
    expect(seenErrors.length).toBeGreaterThan(10);
    for (const error of seenErrors) {
      const text = `${error.message} ${JSON.stringify(error)} ${String(error.stack)}`;
      for (const token of issuedTokens) expect(text).not.toContain(token);
      expect(error.message).not.toMatch(/\$filter|\$skip=|lastUpdateTime ge|\?/);
      expect(error.message).not.toContain("Rate limit is exceeded");
      expect(error.message).not.toContain("bad token");
    }
  });
});

describe("retryAfterMs", () => {
  it("reads delay-seconds and HTTP dates, and ignores garbage", () => {
    const now = Date.parse("2025-01-01T00:00:00Z");
    expect(retryAfterMs("7", now)).toBe(7000);
    expect(retryAfterMs(" 1.5 ", now)).toBe(1500);
    expect(retryAfterMs("Wed, 01 Jan 2025 00:00:30 GMT", now)).toBe(30_000);
    expect(retryAfterMs("Tue, 31 Dec 2024 23:00:00 GMT", now)).toBe(0);
    expect(retryAfterMs("soon", now)).toBeUndefined();
    expect(retryAfterMs("-5", now)).toBeUndefined();
    expect(retryAfterMs(undefined, now)).toBeUndefined();
  });
});

describe("defenderBaseUrl", () => {
  it("maps a region to its geo host only for Microsoft's global hosts", () => {
    expect(defenderBaseUrl("https://api.security.microsoft.com", "eu")).toBe("https://eu.api.security.microsoft.com");
    expect(defenderBaseUrl("https://api.securitycenter.microsoft.com/", "swa")).toBe("https://swa.api.security.microsoft.com");
    expect(defenderBaseUrl("https://api.security.microsoft.com")).toBe("https://api.security.microsoft.com");
    expect(defenderBaseUrl("https://127.0.0.1:4443", "us")).toBe("https://127.0.0.1:4443");
    expect(defenderBaseUrl("https://mde-proxy.contoso.net/defender", "uk")).toBe("https://mde-proxy.contoso.net/defender");
    expect(defenderBaseUrl("https://api.security.microsoft.com", "mars" as never)).toBe("https://api.security.microsoft.com");
  });
});
