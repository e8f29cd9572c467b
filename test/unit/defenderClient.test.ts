import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DefenderApiError, DefenderClient, httpDate, InvalidPageError, retryAfterMs } from "../../shared/defender/defenderClient";
import { defenderBaseUrl } from "../../shared/defender/regions";
import type { FetchedPage } from "../../shared/defender/types";
import { createHttpClient, type HttpClient } from "../../shared/http/httpClient";
import { canonicalTimestamp } from "../../shared/time/timestamps";
import { generateAlerts } from "../fakes/alerts";
import { FakeDefender, FOREIGN_NEXT_LINK_ORIGIN, type DefenderTokenClaims } from "../fakes/fakeDefender";
import { createTestCertificate, type TestCertificate } from "../fakes/tls";
import { clientRig, expectFailure, idsOf, tinyHttpsServer, type ClientRig, type TinyServer } from "../harness/alertClientFixture";

const UA = "MdePartner-Contoso-AlertCollector/1.2.3";
const FROM = "2025-01-01T00:00:00.000Z";
const TO = "2025-01-01T01:00:00.000Z";
const FILTER = `lastUpdateTime ge ${FROM} and lastUpdateTime lt ${TO}`;

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

type Rig = ClientRig<DefenderClient>;

/** A DefenderClient on the real HTTP stack with a fake clock that only the injected sleep moves. */
function rig(options: { requestTimeoutMs?: number; maxAttempts?: number; perMinute?: number; perHour?: number; baseUrl?: string } = {}): Rig {
  return clientRig({
    budget: {
      ...(options.perMinute ? { perMinute: options.perMinute } : {}),
      ...(options.perHour ? { perHour: options.perHour } : {}),
    },
    client: (deps) =>
      new DefenderClient({
        http,
        userAgent: UA,
        requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
        ...deps,
        ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}),
      }),
    from: FROM,
    to: TO,
    baseUrl: options.baseUrl ?? fake.url,
    issuedTokens,
  });
}

/** The DefenderApiError a page request fails with (recorded for the secrecy check at the end). */
const failure = (pending: Promise<FetchedPage>): Promise<DefenderApiError> => expectFailure(pending, seenErrors);

function seeded(count: number, target: FakeDefender = fake): { tenantId: string; ids: string[] } {
  const tenantId = randomUUID();
  const alerts = generateAlerts(tenantId, count, { start: new Date(FROM), spacingMs: 1000 });
  target.addAlerts(tenantId, alerts);
  return { tenantId, ids: alerts.map((a) => a.id) };
}

/** A tiny HTTPS server for what the fake cannot do (exact headers, hand-written bodies). */
const tinyServer = (handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<TinyServer> => tinyHttpsServer(cert, handler);

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(body);
}

describe("DefenderClient.fetchPage", () => {
  it("reads one page of [from, to) with $filter, $top and $skip, and nothing more", async () => {
    const { tenantId, ids } = seeded(120);
    const r = rig();
    const page = await r.client.fetchPage(r.query(tenantId));
    expect(idsOf(page)).toEqual(ids.slice(0, 50));
    expect(page.rejected).toEqual([]);
    expect(page.nextLink).toBeUndefined();
    // A full page is the caller's business: exactly one request, however much more matches.
    const requests = fake.requests(tenantId);
    expect(requests).toHaveLength(1);
    const query = requests[0]?.query;
    expect([...(query?.keys() ?? [])]).toEqual(["$filter", "$top", "$skip"]);
    expect(query?.get("$filter")).toBe(FILTER);
    expect(query?.get("$top")).toBe("50");
    expect(query?.get("$skip")).toBe("0");
    expect(JSON.parse(page.alerts[0]?.json ?? "{}")).not.toHaveProperty("evidence");
    // One budget slot per HTTP attempt, and no waiting on the happy path.
    expect(r.acquires).toBe(1);
    expect(r.sleeps).toEqual([]);
    expect(r.budget.snapshot(tenantId)).toHaveLength(1);
    expect(r.tokenCalls).toEqual([false]);
  });

  it("returns each alert's raw JSON with its id, time as sent, canonical key and epoch ms", async () => {
    const { tenantId } = seeded(3);
    const r = rig();
    const page = await r.client.fetchPage(r.query(tenantId));
    expect(page.alerts).toHaveLength(3);
    for (const alert of page.alerts) {
      const parsed = JSON.parse(alert.json) as { id: string; lastUpdateTime: string };
      expect(alert.id).toBe(parsed.id);
      expect(alert.lastUpdateTime).toBe(parsed.lastUpdateTime);
      const canonical = canonicalTimestamp(parsed.lastUpdateTime);
      expect(alert.updatedAtKey).toBe(canonical?.key);
      expect(alert.updatedAtMs).toBe(canonical?.ms);
      expect(alert.json).not.toMatch(/[\r\n]/);
    }
  });

  it("starts at $skip and answers a short or empty page past the end", async () => {
    const { tenantId, ids } = seeded(120);
    const r = rig();
    const middle = await r.client.fetchPage(r.query(tenantId, { top: 30, skip: 40 }));
    expect(idsOf(middle)).toEqual(ids.slice(40, 70));
    const tail = await r.client.fetchPage(r.query(tenantId, { skip: 100 }));
    expect(idsOf(tail)).toEqual(ids.slice(100));
    const past = await r.client.fetchPage(r.query(tenantId, { skip: 120 }));
    expect(past).toMatchObject({ alerts: [], rejected: [], nextLink: undefined });
    expect(fake.requests(tenantId).map((q) => [q.query.get("$top"), q.query.get("$skip")])).toEqual([
      ["30", "40"],
      ["50", "100"],
      ["50", "120"],
    ]);
  });

  it("filters by the window it is given, to the 100 ns the service keeps", async () => {
    const { tenantId, ids } = seeded(120);
    const r = rig();
    // Alert i is at FROM + i s (plus sub-ms digits): [10 s, 20 s) holds alerts 10 … 19.
    const page = await r.client.fetchPage(r.query(tenantId, { from: "2025-01-01T00:00:10.000Z", to: "2025-01-01T00:00:20.000Z" }));
    expect(idsOf(page)).toEqual(ids.slice(10, 20));
    expect(fake.requests(tenantId)[0]?.query.get("$filter")).toBe(
      "lastUpdateTime ge 2025-01-01T00:00:10.000Z and lastUpdateTime lt 2025-01-01T00:00:20.000Z",
    );
  });

  it("asks for $expand=evidence only when configured", async () => {
    const { tenantId } = seeded(3);
    const r = rig();
    const page = await r.client.fetchPage(r.query(tenantId, { expandEvidence: true }));
    expect(fake.requests(tenantId)[0]?.query.get("$expand")).toBe("evidence");
    expect(Array.isArray((JSON.parse(page.alerts[0]?.json ?? "{}") as { evidence?: unknown }).evidence)).toBe(true);
  });

  it("sends exactly the documented URL, with OData names unescaped, the partner User-Agent, the bearer token and Accept", async () => {
    const server = await tinyServer((_req, res) => json(res, 200, { value: [] }));
    try {
      // A trailing slash on the base is not doubled.
      const r = rig({ baseUrl: `${server.url}/` });
      const tenantId = randomUUID();
      await r.client.fetchPage(r.query(tenantId, { top: 500, skip: 1500, expandEvidence: true }));
      await r.client.fetchPage(r.query(tenantId, { top: 7, skip: 0 }));
      const [expanded, plain] = server.requests;
      const filter = "$filter=lastUpdateTime+ge+2025-01-01T00%3A00%3A00.000Z+and+lastUpdateTime+lt+2025-01-01T01%3A00%3A00.000Z";
      expect(expanded?.url).toBe(`/api/alerts?${filter}&$top=500&$skip=1500&$expand=evidence`);
      expect(plain?.url).toBe(`/api/alerts?${filter}&$top=7&$skip=0`);
      for (const req of [expanded, plain]) {
        expect(req?.method).toBe("GET");
        expect(req?.headers["user-agent"]).toBe(UA);
        expect(req?.headers["authorization"]).toBe(`Bearer tok-${tenantId}`);
        expect(req?.headers["accept"]).toBe("application/json");
      }
      expect(server.requests).toHaveLength(2);
    } finally {
      await server.close();
    }
  });

  it("refuses a $top or $skip the API cannot take, and a nextLink (MDE pages by $skip), without a request", async () => {
    const { tenantId } = seeded(1);
    const r = rig();
    for (const bad of [{ top: 0 }, { top: 10_001 }, { top: 1.5 }, { skip: -1 }, { skip: 0.5 }, { nextLink: `${fake.url}/api/alerts?$skip=50` }]) {
      await expect(r.client.fetchPage(r.query(tenantId, bad)), JSON.stringify(bad)).rejects.toThrow(RangeError);
    }
    expect(fake.requests(tenantId)).toHaveLength(0);
    expect(r.acquires).toBe(0);
  });

  it("returns @odata.nextLink as a hint and never requests it", async () => {
    const { tenantId } = seeded(120);
    const r = rig();
    fake.setNextLinkPaging(true);
    try {
      const page = await r.client.fetchPage(r.query(tenantId));
      expect(page.alerts).toHaveLength(50);
      expect(page.nextLink).toBeDefined();
      const link = new URL(page.nextLink ?? "");
      expect(link.origin).toBe(fake.url);
      expect(link.searchParams.get("$skip")).toBe("50");
      // A short page carries no link.
      const last = await r.client.fetchPage(r.query(tenantId, { skip: 100 }));
      expect(last.nextLink).toBeUndefined();
    } finally {
      fake.setNextLinkPaging(false);
    }
    expect(fake.requests(tenantId).map((q) => q.query.get("$skip"))).toEqual(["0", "100"]);
  });

  it("returns a nextLink to another origin or a looping one without following either", async () => {
    const { tenantId } = seeded(120);
    const r = rig();
    try {
      fake.setNextLinkPaging("foreign");
      const foreign = await r.client.fetchPage(r.query(tenantId));
      expect(foreign.nextLink?.startsWith(`${FOREIGN_NEXT_LINK_ORIGIN}/`)).toBe(true);
      expect(foreign.alerts).toHaveLength(50);
      fake.setNextLinkPaging("loop");
      const loop = await r.client.fetchPage(r.query(tenantId));
      expect(new URL(loop.nextLink ?? "").searchParams.get("$skiptoken")).toBe("B");
    } finally {
      fake.setNextLinkPaging(false);
    }
    expect(fake.requests(tenantId)).toHaveLength(2);
    expect(r.tokenCalls).toEqual([false, false]);

    // And from a server that is not the fake: the attacker's host is handed back, never called.
    const server = await tinyServer((_req, res) =>
      json(res, 200, {
        value: [{ id: "a1", lastUpdateTime: "2025-01-01T00:00:01Z" }],
        "@odata.nextLink": "https://attacker.example/api/alerts?$skip=1&$top=1",
      }),
    );
    try {
      const s = rig({ baseUrl: server.url });
      const page = await s.client.fetchPage(s.query(randomUUID(), { top: 1 }));
      expect(idsOf(page)).toEqual(["a1"]);
      expect(page.nextLink).toBe("https://attacker.example/api/alerts?$skip=1&$top=1");
      expect(server.requests).toHaveLength(1);
    } finally {
      await server.close();
    }
  });

  it("reports the response's Date header as apiDate: the fake's clock, not the host's", async () => {
    // A fake with its own frozen clock, so the Date header it sends is known to the second.
    const at = Date.parse("2025-01-01T00:30:00.700Z");
    const skewed = new FakeDefender({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken, clock: () => at });
    await skewed.start();
    try {
      const { tenantId } = seeded(3, skewed);
      const r = rig({ baseUrl: skewed.url });
      const page = await r.client.fetchPage(r.query(tenantId));
      expect(page.alerts).toHaveLength(3);
      // HTTP dates have whole seconds.
      expect(page.apiDate).toBe(Date.parse("2025-01-01T00:30:00Z"));
      skewed.setClockOffset(-3_600_000);
      const behind = await r.client.fetchPage(r.query(tenantId));
      expect(behind.apiDate).toBe(Date.parse("2024-12-31T23:30:00Z"));
    } finally {
      await skewed.stop();
    }

    // And from a server that says exactly what Date it sends, or none at all.
    let sendDate: string | undefined = "Wed, 01 Jan 2025 00:00:30 GMT";
    const server = await tinyServer((_req, res) => {
      if (sendDate === undefined) res.sendDate = false;
      json(res, 200, { value: [] }, sendDate === undefined ? {} : { Date: sendDate });
    });
    try {
      const r = rig({ baseUrl: server.url });
      expect((await r.client.fetchPage(r.query(randomUUID()))).apiDate).toBe(Date.UTC(2025, 0, 1, 0, 0, 30));
      sendDate = undefined;
      const undated = await r.client.fetchPage(r.query(randomUUID()));
      expect(undated.apiDate).toBeUndefined();
      expect("apiDate" in undated).toBe(false);
    } finally {
      await server.close();
    }
  });

  it("returns unusable elements in `rejected` without failing the page", async () => {
    const { tenantId, ids } = seeded(6);
    const poison: Record<number, string> = {
      1: '{"id":"da-bad-json","lastUpdateTime": tru}',
      2: '{"lastUpdateTime":"2025-01-01T00:00:02Z","title":"no id"}',
      3: '{"id":"da-no-time","title":"no time"}',
      4: '{"id":"da-bad-time","lastUpdateTime":"yesterday"}',
    };
    for (const [index, raw] of Object.entries(poison)) fake.poisonAlert(tenantId, ids[Number(index)] as string, raw);
    const r = rig();
    const page = await r.client.fetchPage(r.query(tenantId));
    expect(idsOf(page)).toEqual([ids[0], ids[5]]);
    expect(page.rejected).toEqual([
      { index: 1, reason: "invalid_json", raw: poison[1] },
      { index: 2, reason: "missing_id", raw: poison[2] },
      { index: 3, reason: "missing_time", raw: poison[3] },
      { index: 4, reason: "invalid_time", raw: poison[4] },
    ]);
    // One read: a bad element is not a reason to ask again.
    expect(fake.requests(tenantId)).toHaveLength(1);
  });

  it("rejects an alert whose id or time is not a string, keeping the rest", async () => {
    const server = await tinyServer((_req, res) =>
      json(res, 200, {
        value: [
          { id: 7, lastUpdateTime: "2025-01-01T00:00:01Z" },
          { id: "da-ok", lastUpdateTime: "2025-01-01T00:00:02+00:00" },
          { id: "da-num-time", lastUpdateTime: 1735689600000 },
          42,
        ],
      }),
    );
    try {
      const r = rig({ baseUrl: server.url });
      const page = await r.client.fetchPage(r.query(randomUUID()));
      expect(page.alerts.map((a) => [a.id, a.lastUpdateTime, a.updatedAtKey])).toEqual([
        ["da-ok", "2025-01-01T00:00:02+00:00", "2025-01-01T00:00:02.0000000Z"],
      ]);
      expect(page.rejected.map((x) => [x.index, x.reason])).toEqual([
        [0, "missing_id"],
        [2, "missing_time"],
        [3, "not_an_object"],
      ]);
    } finally {
      await server.close();
    }
  });

  it("reads a page again when its body arrives cut short, and returns the good copy", async () => {
    const { tenantId, ids } = seeded(30);
    fake.corruptPages(tenantId, { times: 2 });
    const r = rig();
    const page = await r.client.fetchPage(r.query(tenantId));
    expect(idsOf(page)).toEqual(ids);
    expect(page.rejected).toEqual([]);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([200, 200, 200]);
    expect(r.acquires).toBe(3);
  });

  it("gives up after 3 unreadable bodies with a non-retryable InvalidPageError carrying the body, not quoting it", async () => {
    const { tenantId, ids } = seeded(30);
    fake.corruptPages(tenantId, { times: 100 });
    const r = rig();
    let error: DefenderApiError;
    try {
      error = await failure(r.client.fetchPage(r.query(tenantId)));
    } finally {
      fake.corruptPages(tenantId, { times: 0 });
    }
    expect(error).toBeInstanceOf(InvalidPageError);
    expect(error).toMatchObject({ name: "InvalidPageError", code: "invalid_response", retryable: false });
    expect(error.status).toBeUndefined();
    const raw = (error as InvalidPageError).raw;
    // The fake cuts the page in half: the body as received, which no parser accepts.
    expect(raw.startsWith('{"@odata.context":')).toBe(true);
    expect(raw).toContain(ids[0]);
    expect(() => JSON.parse(raw) as unknown).toThrow();
    expect(error.message).not.toContain(raw);
    expect(error.message).not.toContain(ids[0]);
    expect(error.message).not.toContain("@odata");
    expect(fake.requests(tenantId)).toHaveLength(3);
    expect(r.acquires).toBe(3);
  });

  it("treats a body that is no page at all (HTML, an array, no value) the same way", async () => {
    const bodies = ["<html><body>Service Unavailable</body></html>", '[{"id":"da1"}]', '{"error":"none"}'];
    let next = 0;
    const server = await tinyServer((_req, res) => text(res, 200, bodies[next] ?? ""));
    try {
      const r = rig({ baseUrl: server.url });
      for (next = 0; next < bodies.length; next++) {
        const before = server.requests.length;
        const error = await failure(r.client.fetchPage(r.query(randomUUID())));
        expect(error).toBeInstanceOf(InvalidPageError);
        expect((error as InvalidPageError).raw).toBe(bodies[next]);
        expect(error.message).not.toContain(bodies[next]);
        expect(server.requests.length - before).toBe(3);
      }
    } finally {
      await server.close();
    }
  });

  // BUG in shared/defender/pageScanner.ts: a page member whose value is not JSON is reported as
  // `page member ${name} is not valid JSON`, quoting the member name from the body, and
  // fetchPage embeds that reason in InvalidPageError's message. Flip to `it` once fixed.
  it("never quotes any part of an unreadable body in the message, not even a member name", async () => {
    const body = '{"value":[],"SECRET-FROM-THE-BODY": nope}';
    const server = await tinyServer((_req, res) => text(res, 200, body));
    try {
      const r = rig({ baseUrl: server.url });
      const error = await r.client.fetchPage(r.query(randomUUID())).catch((e: unknown) => e as InvalidPageError);
      expect(error).toBeInstanceOf(InvalidPageError);
      expect((error as InvalidPageError).raw).toBe(body);
      expect((error as InvalidPageError).message).not.toContain("SECRET-FROM-THE-BODY");
    } finally {
      await server.close();
    }
  });

  it("stops with a retryable 'deadline' before the request once the deadline has passed", async () => {
    const { tenantId } = seeded(10);
    const r = rig();
    const error = await failure(r.client.fetchPage(r.query(tenantId, { deadline: r.now() - 1 })));
    expect(error).toMatchObject({ code: "deadline", retryable: true });
    expect(fake.requests(tenantId)).toHaveLength(0);
    expect(r.acquires).toBe(0);
  });

  it("stops with budget_exhausted when the call budget would outlast the deadline", async () => {
    const { tenantId, ids } = seeded(120);
    const r = rig({ perMinute: 2, perHour: 10 });
    const deadline = r.now() + 30_000;
    expect(idsOf(await r.client.fetchPage(r.query(tenantId, { deadline })))).toEqual(ids.slice(0, 50));
    expect(idsOf(await r.client.fetchPage(r.query(tenantId, { skip: 50, deadline })))).toEqual(ids.slice(50, 100));
    const error = await failure(r.client.fetchPage(r.query(tenantId, { skip: 100, deadline })));
    expect(error).toMatchObject({ code: "budget_exhausted", retryable: true });
    expect(fake.requests(tenantId)).toHaveLength(2);
    expect(r.sleeps).toEqual([]);
  });

  it("waits for the call budget when a slot frees up before the deadline", async () => {
    const { tenantId } = seeded(10);
    const r = rig({ perMinute: 1, perHour: 10 });
    await r.client.fetchPage(r.query(tenantId));
    await r.client.fetchPage(r.query(tenantId));
    expect(r.sleeps).toEqual([60_000]);
    expect(fake.requests(tenantId)).toHaveLength(2);
  });
});

describe("DefenderClient errors and retries", () => {
  it("waits out 429s for exactly Retry-After seconds", async () => {
    const { tenantId, ids } = seeded(30);
    fake.throttle(tenantId, { times: 2, retryAfterSeconds: 7 });
    const r = rig();
    const page = await r.client.fetchPage(r.query(tenantId));
    expect(idsOf(page)).toEqual(ids);
    expect(r.sleeps).toEqual([7000, 7000]);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([429, 429, 200]);
    // Every attempt, throttled or not, took a budget slot first.
    expect(r.acquires).toBe(3);
  });

  it("gives up with 'throttled' when Retry-After would pass the deadline", async () => {
    const { tenantId } = seeded(30);
    fake.throttle(tenantId, { times: 100, retryAfterSeconds: 60 });
    const r = rig();
    const error = await failure(r.client.fetchPage(r.query(tenantId, { deadline: r.now() + 90_000 })));
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
    const error = await failure(r.client.fetchPage(r.query(tenantId)));
    fake.throttle(tenantId, { times: 0, retryAfterSeconds: 0 });
    expect(error.code).toBe("throttled");
    expect(r.sleeps).toEqual([1000, 1000]);
    expect(fake.requests(tenantId)).toHaveLength(3);
  });

  it("retries a 500 with backoff and then succeeds", async () => {
    const { tenantId, ids } = seeded(30);
    fake.fail(tenantId, { status: 500, times: 1 });
    const r = rig();
    const page = await r.client.fetchPage(r.query(tenantId));
    expect(idsOf(page)).toEqual(ids);
    // First backoff step is 1 s with equal jitter: 500 ms + random(0.5) × 500 ms.
    expect(r.sleeps).toEqual([750]);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([500, 200]);
  });

  it("backs off exponentially and gives up on persistent 503s with a retryable server_error", async () => {
    const { tenantId } = seeded(30);
    fake.fail(tenantId, { status: 503, times: 100 });
    const r = rig();
    const error = await failure(r.client.fetchPage(r.query(tenantId)));
    fake.fail(tenantId, { status: 503, times: 0 });
    expect(error).toMatchObject({ code: "server_error", status: 503, retryable: true });
    expect(r.sleeps).toEqual([750, 1500, 3000, 6000]);
    expect(fake.requests(tenantId)).toHaveLength(5);
  });

  it("gives up a 5xx early when the next backoff would pass the deadline", async () => {
    const { tenantId } = seeded(30);
    fake.fail(tenantId, { status: 502, times: 100 });
    const r = rig();
    const error = await failure(r.client.fetchPage(r.query(tenantId, { deadline: r.now() + 2000 })));
    fake.fail(tenantId, { status: 502, times: 0 });
    expect(error).toMatchObject({ code: "server_error", status: 502, retryable: true });
    // 750 ms fits, 1500 ms more would not.
    expect(r.sleeps).toEqual([750]);
    expect(fake.requests(tenantId)).toHaveLength(2);
  });

  it("times out a hung request and retries it", async () => {
    const { tenantId, ids } = seeded(30);
    fake.hang(tenantId, 1);
    const r = rig({ requestTimeoutMs: 300 });
    const page = await r.client.fetchPage(r.query(tenantId));
    expect(idsOf(page)).toEqual(ids);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([0, 200]);
    expect(r.sleeps).toEqual([750]);
  });

  it("reports 'timeout' when every attempt hangs", async () => {
    const { tenantId } = seeded(5);
    fake.hang(tenantId, 2);
    const r = rig({ requestTimeoutMs: 200, maxAttempts: 2 });
    const error = await failure(r.client.fetchPage(r.query(tenantId)));
    expect(error).toMatchObject({ code: "timeout", retryable: true });
    expect(fake.requests(tenantId)).toHaveLength(2);
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
    const page = await r.client.fetchPage(query);
    expect(idsOf(page)).toEqual(ids);
    expect(calls).toEqual([false, true]);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([200]);
    // The 401 was answered before the fake knew the tenant; both attempts took a slot.
    expect(r.acquires).toBe(2);
    expect(r.sleeps).toEqual([]);
  });

  it("fails with a non-retryable 'unauthorized' when the refreshed token is refused too", async () => {
    const { tenantId } = seeded(5);
    const r = rig();
    const calls: boolean[] = [];
    const token = `revoked-${tenantId}`;
    issuedTokens.add(token);
    const error = await failure(
      r.client.fetchPage(
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
    const error = await failure(r.client.fetchPage(r.query(tenantId, { accessToken: async () => token })));
    expect(error).toMatchObject({ code: "forbidden", status: 403, retryable: false });
    expect(error.message).toContain("Defender portal");
    expect(fake.requests(tenantId)).toHaveLength(1);
  });

  it("maps 400 to bad_request with the API's error code", async () => {
    const { tenantId } = seeded(5);
    const r = rig();
    const error = await failure(r.client.fetchPage(r.query(tenantId, { from: "yesterday" })));
    expect(error).toMatchObject({ code: "bad_request", status: 400, apiCode: "InvalidInput", retryable: false });
    expect(error.message).toContain("HTTP 400 (InvalidInput)");
    expect(fake.requests(tenantId)).toHaveLength(1);
  });

  it("maps 404 to not_found", async () => {
    const { tenantId } = seeded(5);
    const r = rig({ baseUrl: `${fake.url}/nowhere` });
    const error = await failure(r.client.fetchPage(r.query(tenantId)));
    expect(error).toMatchObject({ code: "not_found", status: 404, retryable: false });
  });

  it("does not repeat an error code that echoes the token", async () => {
    const tenantId = randomUUID();
    const token = `tok-${tenantId}`.replace(/-/g, "");
    issuedTokens.add(token);
    const server = await tinyServer((req, res) => {
      const sent = String(req.headers["authorization"]).replace(/^Bearer /, "");
      json(res, 400, { error: { code: sent, message: `bad token ${sent}` } });
    });
    try {
      const r = rig({ baseUrl: server.url });
      const error = await failure(r.client.fetchPage(r.query(tenantId, { accessToken: async () => token })));
      expect(error.code).toBe("bad_request");
      expect(error.apiCode).toBeUndefined();
      expect(error.message).not.toContain(token);
    } finally {
      await server.close();
    }
  });

  it("never puts a token, the query or the response body in an error message", () => {
    expect(seenErrors.length).toBeGreaterThan(15);
    for (const error of seenErrors) {
      // Every Defender failure says so: the pull names failures by source.
      expect(error.source).toBe("mde");
      // InvalidPageError carries the body in `raw` on purpose (for the dead-letter store).
      const { raw: _raw, ...fields } = error as Partial<InvalidPageError>;
      const text = `${error.message} ${JSON.stringify(fields)} ${String(error.stack)}`;
      for (const token of issuedTokens) expect(text).not.toContain(token);
      expect(error.message).not.toMatch(/\$filter|\$skip=|\$top=|lastUpdateTime ge|\?/);
      expect(error.message).not.toContain("Rate limit is exceeded");
      expect(error.message).not.toContain("Injected failure");
      expect(error.message).not.toContain("bad token");
      if (error instanceof InvalidPageError) expect(error.message).not.toContain(error.raw);
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

describe("httpDate", () => {
  it("reads an HTTP date to the second and ignores what is absent or unreadable", () => {
    expect(httpDate("Wed, 01 Jan 2025 00:00:30 GMT")).toBe(Date.UTC(2025, 0, 1, 0, 0, 30));
    // The obsolete forms RFC 9110 still asks recipients to accept.
    expect(httpDate("Wednesday, 01-Jan-25 00:00:30 GMT")).toBe(Date.UTC(2025, 0, 1, 0, 0, 30));
    expect(httpDate("Wed Jan  1 00:00:30 2025")).toBeDefined();
    expect(httpDate(undefined)).toBeUndefined();
    expect(httpDate("")).toBeUndefined();
    expect(httpDate("soon")).toBeUndefined();
    expect(httpDate("Wed, 32 Jan 2025 00:00:30 GMT")).toBeUndefined();
    // A bare number is not a date (Date.parse would read "2025" as a year).
    expect(httpDate("2025")).toBeUndefined();
    expect(httpDate("1735689630")).toBeUndefined();
  });
});

describe("defenderBaseUrl", () => {
  it("maps a region to its geo host only for Microsoft's global hosts", () => {
    expect(defenderBaseUrl("https://api.security.microsoft.com", "eu")).toBe("https://eu.api.security.microsoft.com");
    expect(defenderBaseUrl("https://api.securitycenter.microsoft.com/", "swa")).toBe("https://swa.api.security.microsoft.com");
    // India, listed by Microsoft since 2025.
    expect(defenderBaseUrl("https://api.security.microsoft.com", "ina")).toBe("https://ina.api.security.microsoft.com");
    expect(defenderBaseUrl("https://api.security.microsoft.com")).toBe("https://api.security.microsoft.com");
    expect(defenderBaseUrl("https://127.0.0.1:4443", "us")).toBe("https://127.0.0.1:4443");
    expect(defenderBaseUrl("https://mde-proxy.contoso.net/defender", "uk")).toBe("https://mde-proxy.contoso.net/defender");
    expect(defenderBaseUrl("https://api.security.microsoft.com", "mars" as never)).toBe("https://api.security.microsoft.com");
  });
});
