import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Agent, request } from "undici";
import type { FetchedPage } from "../../shared/defender/types";
import { GRAPH_BUDGET_LIMITS, GRAPH_MAX_TOP, GraphClient, graphMaxPageBytes } from "../../shared/graph/graphClient";
import { createHttpClient, type HttpClient } from "../../shared/http/httpClient";
import { DefenderApiError, InvalidPageError } from "../../shared/sources/sourceErrors";
import { FakeEntra, GRAPH_RESOURCE } from "../fakes/fakeEntra";
import { FakeGraph, FOREIGN_NEXT_LINK_ORIGIN, GRAPH_ALERTS_ROUTE, type GraphTokenClaims } from "../fakes/fakeGraph";
import { generateGraphAlerts, makeGraphAlert, type GraphServiceSource } from "../fakes/graphAlerts";
import { createTestCertificate, type TestCertificate } from "../fakes/tls";
import { clientRig, expectFailure, idsOf, tinyHttpsServer, type ClientRig, type TinyServer } from "../harness/alertClientFixture";

/**
 * The production Graph client on the app's real HTTP client, against the fake Graph over HTTPS
 * (and, for exact bytes on the wire, a tiny HTTPS server).
 */

const UA = "MdePartner-Contoso-AlertCollector/1.2.3";
const FROM = "2025-01-01T00:00:00.000Z";
const TO = "2025-01-01T01:00:00.000Z";
const FILTER = `lastUpdateDateTime ge ${FROM} and lastUpdateDateTime lt ${TO}`;
const XDR: readonly GraphServiceSource[] = ["microsoftDefenderForEndpoint", "microsoftDefenderForIdentity", "microsoftDefenderForOffice365", "microsoftDefenderForCloudApps"];

let cert: TestCertificate;
let fake: FakeGraph;
let http: HttpClient;
/** Every DefenderApiError the tests saw, checked at the end for leaked tokens and queries. */
const seenErrors: DefenderApiError[] = [];
const issuedTokens = new Set<string>();

/** `tok-<tid>`: a delegated Graph token with SecurityAlert.Read.All; `noperm-<tid>`: User.Read only; `mde-<tid>`: a Defender token; `expired-<tid>`. */
async function verifyAccessToken(token: string): Promise<GraphTokenClaims | null> {
  const match = /^(tok|noperm|mde|expired)-(.+)$/.exec(token);
  if (!match?.[2]) return null;
  const exp = Math.floor(Date.now() / 1000) + (match[1] === "expired" ? -10 : 3600);
  const aud = match[1] === "mde" ? "https://api.securitycenter.microsoft.com" : "https://graph.microsoft.com";
  return { tid: match[2], aud, scp: match[1] === "noperm" ? "User.Read" : "SecurityAlert.Read.All", exp };
}

beforeAll(async () => {
  cert = await createTestCertificate();
  fake = new FakeGraph({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken });
  await fake.start();
  http = createHttpClient({ extraCaPem: cert.certPem });
});
afterAll(async () => {
  await fake?.stop();
});
beforeEach(() => {
  fake.setNextLinkMode("normal");
});

type Rig = ClientRig<GraphClient>;

/** A GraphClient on the real HTTP stack with a fake clock that only the injected sleep moves. */
function rig(options: { requestTimeoutMs?: number; maxAttempts?: number; maxRetryAfterMs?: number; perMinute?: number; perHour?: number; baseUrl?: string } = {}): Rig {
  return clientRig({
    budget: {
      source: "graph",
      perMinute: options.perMinute ?? GRAPH_BUDGET_LIMITS.perMinute,
      perHour: options.perHour ?? GRAPH_BUDGET_LIMITS.perHour,
    },
    client: (deps) =>
      new GraphClient({
        http,
        userAgent: UA,
        requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
        ...deps,
        ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}),
        ...(options.maxRetryAfterMs ? { maxRetryAfterMs: options.maxRetryAfterMs } : {}),
      }),
    from: FROM,
    to: TO,
    baseUrl: options.baseUrl ?? fake.url,
    issuedTokens,
  });
}

/** The DefenderApiError a page request fails with (recorded for the secrecy check at the end). */
const failure = (pending: Promise<FetchedPage>): Promise<DefenderApiError> => expectFailure(pending, seenErrors);

function seeded(count: number, sources: readonly GraphServiceSource[] = XDR): { tenantId: string; ids: string[] } {
  const tenantId = randomUUID();
  const alerts = generateGraphAlerts(tenantId, count, { start: new Date(FROM), spacingMs: 1000, serviceSources: sources });
  fake.addAlerts(tenantId, alerts);
  // Oldest first: the tests compare with generation order.
  fake.setOrder(tenantId, "oldest");
  return { tenantId, ids: alerts.map((a) => a.id) };
}

/** A tiny HTTPS server for what the fake cannot do (exact request bytes, hand-written bodies). */
const tinyServer = (handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<TinyServer> => tinyHttpsServer(cert, handler);

describe("GraphClient.fetchPage: the request", () => {
  it("sends the documented URL with $filter and $top only, the bearer token, Accept, Prefer and the User-Agent", async () => {
    const server = await tinyServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ "@odata.context": "x", value: [] }));
    });
    try {
      const tenantId = randomUUID();
      // A trailing slash on the base is not doubled, and a path prefix (a proxy) is kept.
      for (const base of [`${server.url}/`, `${server.url}/graph-proxy`]) {
        const r = rig({ baseUrl: base });
        await r.client.fetchPage(r.query(tenantId, { top: 1000, expandEvidence: true }));
      }
      const [plain, prefixed] = server.requests;
      const filter = "$filter=lastUpdateDateTime%20ge%202025-01-01T00%3A00%3A00.000Z%20and%20lastUpdateDateTime%20lt%202025-01-01T01%3A00%3A00.000Z";
      expect(plain?.url).toBe(`${GRAPH_ALERTS_ROUTE}?${filter}&$top=1000`);
      expect(prefixed?.url).toBe(`/graph-proxy${GRAPH_ALERTS_ROUTE}?${filter}&$top=1000`);
      for (const req of [plain, prefixed]) {
        expect(req?.method).toBe("GET");
        expect(req?.headers["authorization"]).toBe(`Bearer tok-${tenantId}`);
        expect(req?.headers["accept"]).toBe("application/json");
        expect(req?.headers["prefer"]).toBe("include-unknown-enum-members");
        expect(req?.headers["user-agent"]).toBe(UA);
      }
    } finally {
      await server.close();
    }
  });

  it("refuses a $top outside 1…1000 and a $skip, without a request", async () => {
    const { tenantId } = seeded(1);
    const r = rig();
    expect(GRAPH_MAX_TOP).toBe(1000);
    for (const bad of [{ top: 0 }, { top: 1001 }, { top: 1.5 }, { skip: 50 }, { skip: -1 }]) {
      await expect(r.client.fetchPage(r.query(tenantId, bad)), JSON.stringify(bad)).rejects.toThrow(RangeError);
    }
    expect(fake.requests(tenantId)).toHaveLength(0);
    expect(r.acquires).toBe(0);
    expect(r.tokenCalls).toEqual([]);
  });

  it("reads one span over several pages by following @odata.nextLink, each alert once, one budget slot a page", async () => {
    const { tenantId, ids } = seeded(120);
    const r = rig();
    const seen: string[] = [];
    const links: Array<string | undefined> = [];
    let page = await r.client.fetchPage(r.query(tenantId));
    for (;;) {
      seen.push(...idsOf(page));
      links.push(page.nextLink);
      if (page.nextLink === undefined) break;
      // skip is not consulted with a link: the link carries the position.
      page = await r.client.fetchPage(r.query(tenantId, { nextLink: page.nextLink, skip: seen.length }));
    }
    expect(seen).toEqual(ids);
    expect(links.map((l) => l !== undefined)).toEqual([true, true, false]);
    const requests = fake.requests(tenantId);
    expect(requests.map((q) => [q.status, q.followedLink, q.served])).toEqual([
      [200, false, 50],
      [200, true, 50],
      [200, true, 20],
    ]);
    expect(requests[0]?.query.get("$filter")).toBe(FILTER);
    expect(requests.every((q) => q.prefer === "include-unknown-enum-members" && q.userAgent === UA)).toBe(true);
    expect(r.acquires).toBe(3);
    expect(r.budget.snapshot(tenantId)).toHaveLength(3);
    expect(r.sleeps).toEqual([]);
  });

  it("returns each alert's raw JSON with its id, lastUpdateDateTime as sent (7 digits), canonical key and ms, plus the Date header", async () => {
    const { tenantId } = seeded(6);
    const r = rig();
    fake.setClockOffset(-3_600_000);
    let page: FetchedPage;
    try {
      page = await r.client.fetchPage(r.query(tenantId));
    } finally {
      fake.setClockOffset(0);
    }
    expect(page.alerts).toHaveLength(6);
    for (const alert of page.alerts) {
      const parsed = JSON.parse(alert.json) as { id: string; lastUpdateDateTime: string; evidence: unknown[] };
      expect(alert.id).toBe(parsed.id);
      expect(alert.lastUpdateTime).toBe(parsed.lastUpdateDateTime);
      expect(alert.updatedAtMs).toBe(Date.parse(parsed.lastUpdateDateTime.replace(/(\.\d{3})\d+Z$/, "$1Z")));
      expect(parsed.evidence.length).toBeGreaterThan(0);
    }
    expect(page.alerts.some((a) => /\.\d{7}Z$/.test(a.lastUpdateTime))).toBe(true);
    expect(page.alerts[0]?.updatedAtKey).toMatch(/\.\d{7}Z$/);
    expect(Math.abs((page.apiDate ?? 0) - (Date.now() - 3_600_000))).toBeLessThan(5_000);
  });

  it("with the Prefer header sees Defender for Cloud alerts that a request without it does not get", async () => {
    const { tenantId, ids } = seeded(10, ["microsoftDefenderForEndpoint", "microsoftDefenderForCloud"]);
    const r = rig();
    const page = await r.client.fetchPage(r.query(tenantId));
    expect(idsOf(page)).toEqual(ids);
    expect(page.alerts.filter((a) => a.json.includes('"serviceSource":"microsoftDefenderForCloud"'))).toHaveLength(5);
    // The same request without the header, as a client that forgot it would send it.
    const dispatcher = new Agent({ connect: { ca: cert.certPem } });
    try {
      const bare = await request(`${fake.url}${GRAPH_ALERTS_ROUTE}?$filter=${encodeURIComponent(FILTER)}`, { dispatcher, headers: { authorization: `Bearer tok-${tenantId}` } });
      const body = (await bare.body.json()) as { value: Array<{ serviceSource: string }> };
      expect(body.value.map((a) => a.serviceSource)).toEqual(Array(5).fill("microsoftDefenderForEndpoint"));
    } finally {
      await dispatcher.close();
    }
  });
});

describe("GraphClient.fetchPage: nextLink safety", () => {
  it("refuses a nextLink to another origin or path, or a malformed one, without sending anything or asking for a token", async () => {
    const { tenantId } = seeded(120);
    const r = rig();
    fake.setNextLinkMode("foreign");
    const first = await r.client.fetchPage(r.query(tenantId));
    expect(first.nextLink?.startsWith(`${FOREIGN_NEXT_LINK_ORIGIN}/`)).toBe(true);
    fake.setNextLinkMode("otherPath");
    const other = await r.client.fetchPage(r.query(tenantId));
    expect(new URL(other.nextLink ?? "").pathname).toBe("/v1.0/users");
    const before = { requests: fake.requests(tenantId).length, tokens: r.tokenCalls.length, acquires: r.acquires };
    const port = new URL(fake.url).port;
    const links = [
      first.nextLink ?? "",
      other.nextLink ?? "",
      `http://127.0.0.1:${port}${GRAPH_ALERTS_ROUTE}?$skiptoken=x`,
      `https://localhost:${port}${GRAPH_ALERTS_ROUTE}?$skiptoken=x`,
      `https://127.0.0.1:${port}@attacker.example.test${GRAPH_ALERTS_ROUTE}?$skiptoken=x`,
      `${fake.url}${GRAPH_ALERTS_ROUTE}/../../v1.0/me/messages`,
      "not a url",
    ];
    for (const nextLink of links) {
      const error = await failure(r.client.fetchPage(r.query(tenantId, { nextLink })));
      expect(error, nextLink).toMatchObject({ code: "invalid_response", retryable: false, source: "graph" });
      expect(error.message).toContain(`${new URL(fake.url).host}${GRAPH_ALERTS_ROUTE}`);
      expect(error.message).not.toContain("attacker");
      expect(error.message).not.toContain("skiptoken");
    }
    expect(fake.requests(tenantId)).toHaveLength(before.requests);
    expect(r.tokenCalls).toHaveLength(before.tokens);
    expect(r.acquires).toBe(before.acquires);
  });
});

describe("GraphClient errors and retries", () => {
  it("refreshes the token once after a 401 and carries on", async () => {
    const { tenantId, ids } = seeded(30);
    const r = rig();
    const calls: boolean[] = [];
    issuedTokens.add(`expired-${tenantId}`);
    const page = await r.client.fetchPage(
      r.query(tenantId, {
        accessToken: async (force) => {
          calls.push(force);
          return force ? `tok-${tenantId}` : `expired-${tenantId}`;
        },
      }),
    );
    expect(idsOf(page)).toEqual(ids);
    expect(calls).toEqual([false, true]);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([401, 200]);
    expect(r.acquires).toBe(2);
  });

  it("fails 'unauthorized' (not retryable, source graph) when a Defender token is refused twice", async () => {
    const { tenantId } = seeded(5);
    const r = rig();
    const token = `mde-${tenantId}`;
    issuedTokens.add(token);
    const calls: boolean[] = [];
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
    expect(error).toMatchObject({ code: "unauthorized", status: 401, apiCode: "InvalidAuthenticationToken", retryable: false, source: "graph" });
    expect(error.message).toContain("Microsoft Graph GET");
    expect(calls).toEqual([false, true]);
  });

  it("fails 'forbidden' on 403 with what the customer must grant", async () => {
    const { tenantId } = seeded(5);
    const r = rig();
    const token = `noperm-${tenantId}`;
    issuedTokens.add(token);
    const error = await failure(r.client.fetchPage(r.query(tenantId, { accessToken: async () => token })));
    expect(error).toMatchObject({ code: "forbidden", status: 403, apiCode: "Forbidden", retryable: false, source: "graph" });
    expect(error.message).toContain("Security Reader");
    expect(error.message).toContain("SecurityAlert.Read.All");
    expect(error.message).toContain("Defender XDR");
    expect(fake.requests(tenantId)).toHaveLength(1);
  });

  it("waits out 429s for exactly Retry-After, and a 503's Retry-After too", async () => {
    const { tenantId, ids } = seeded(30);
    fake.throttle(tenantId, { times: 2, retryAfterSeconds: 7 });
    const r = rig();
    expect(idsOf(await r.client.fetchPage(r.query(tenantId)))).toEqual(ids);
    expect(r.sleeps).toEqual([7000, 7000]);
    fake.throttle(tenantId, { times: 1, retryAfterSeconds: 3, status: 503 });
    expect(idsOf(await r.client.fetchPage(r.query(tenantId)))).toEqual(ids);
    expect(r.sleeps).toEqual([7000, 7000, 3000]);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([429, 429, 200, 503, 200]);
    expect(r.acquires).toBe(5);
  });

  it("caps a long Retry-After, and gives up 'throttled' when the wait would pass the deadline", async () => {
    const { tenantId } = seeded(10);
    fake.throttle(tenantId, { times: 1, retryAfterSeconds: 600 });
    const capped = rig({ maxRetryAfterMs: 5_000 });
    await capped.client.fetchPage(capped.query(tenantId));
    expect(capped.sleeps).toEqual([5_000]);

    fake.throttle(tenantId, { times: 100, retryAfterSeconds: 60 });
    const r = rig();
    const error = await failure(r.client.fetchPage(r.query(tenantId, { deadline: r.now() + 90_000 })));
    fake.throttle(tenantId, { times: 0, retryAfterSeconds: 0 });
    expect(error).toMatchObject({ code: "throttled", status: 429, apiCode: "TooManyRequests", retryable: true, source: "graph" });
    expect(r.sleeps).toEqual([60_000]);
  });

  it("retries a 5xx in the middle of paging with backoff and reads on", async () => {
    const { tenantId, ids } = seeded(80);
    fake.fail(tenantId, { status: 502, times: 2, onlyFollowedLinks: true });
    const r = rig();
    const first = await r.client.fetchPage(r.query(tenantId));
    const second = await r.client.fetchPage(r.query(tenantId, { nextLink: first.nextLink ?? "" }));
    expect([...idsOf(first), ...idsOf(second)]).toEqual(ids);
    expect(second.nextLink).toBeUndefined();
    // Equal jitter: 500 + 0.5 × 500 ms, then 1000 + 0.5 × 1000 ms.
    expect(r.sleeps).toEqual([750, 1500]);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([200, 502, 502, 200]);
  });

  it("times out a hung request and retries it", async () => {
    const { tenantId, ids } = seeded(10);
    fake.hang(tenantId, 1);
    const r = rig({ requestTimeoutMs: 300 });
    expect(idsOf(await r.client.fetchPage(r.query(tenantId)))).toEqual(ids);
    expect(r.sleeps).toEqual([750]);
  });

  it("reads a page again when its body arrives cut short; gives up after 3 with an InvalidPageError that keeps the body", async () => {
    const { tenantId, ids } = seeded(30);
    fake.corruptPages(tenantId, { times: 2 });
    const r = rig();
    expect(idsOf(await r.client.fetchPage(r.query(tenantId)))).toEqual(ids);
    expect(fake.requests(tenantId).map((q) => q.status)).toEqual([200, 200, 200]);

    fake.corruptPages(tenantId, { times: 100 });
    let error: DefenderApiError;
    try {
      error = await failure(r.client.fetchPage(r.query(tenantId)));
    } finally {
      fake.corruptPages(tenantId, { times: 0 });
    }
    expect(error).toBeInstanceOf(InvalidPageError);
    expect(error).toMatchObject({ code: "invalid_response", retryable: false, tooLarge: false, source: "graph" });
    const raw = (error as InvalidPageError).raw;
    expect(raw).toContain(ids[0]);
    expect(() => JSON.parse(raw) as unknown).toThrow();
    expect(error.message).not.toContain(ids[0]);
    expect(error.message).toContain("Microsoft Graph GET");
  });

  it("refuses a page larger than its $top allows (4 MiB at least, 64 KiB an alert), unread and not retried", async () => {
    expect(graphMaxPageBytes(1)).toBe(4 * 1024 * 1024);
    expect(graphMaxPageBytes(1000)).toBe(1000 * 64 * 1024);
    const tenantId = randomUUID();
    fake.addAlerts(tenantId, [makeGraphAlert({ id: "huge", lastUpdateDateTime: "2025-01-01T00:00:01Z", tenantId, description: "x".repeat(5 * 1024 * 1024) })]);
    const r = rig();
    const error = await failure(r.client.fetchPage(r.query(tenantId, { top: 1 })));
    expect(error).toBeInstanceOf(InvalidPageError);
    expect(error).toMatchObject({ tooLarge: true, retryable: false, source: "graph" });
    expect(error.message).toContain(`more than ${4 * 1024 * 1024} bytes`);
    expect(fake.requests(tenantId)).toHaveLength(1);
    // A $top of 100 allows 6.25 MiB: the same page is read.
    expect(idsOf(await r.client.fetchPage(r.query(tenantId, { top: 100 })))).toEqual(["huge"]);
  });

  it("maps a 400 to bad_request with Graph's error code, and stops at the deadline and the Graph budget", async () => {
    const { tenantId } = seeded(5);
    const r = rig({ perMinute: 2, perHour: 10 });
    const bad = await failure(r.client.fetchPage(r.query(tenantId, { from: "yesterday" })));
    expect(bad).toMatchObject({ code: "bad_request", status: 400, apiCode: "BadRequest", retryable: false, source: "graph" });

    const late = await failure(r.client.fetchPage(r.query(tenantId, { deadline: r.now() - 1 })));
    expect(late).toMatchObject({ code: "deadline", retryable: true, source: "graph" });

    await r.client.fetchPage(r.query(tenantId));
    const spent = await failure(r.client.fetchPage(r.query(tenantId, { deadline: r.now() + 30_000 })));
    expect(spent).toMatchObject({ code: "budget_exhausted", retryable: true, source: "graph" });
    expect(spent.message).toContain("Microsoft Graph call budget");
    expect(GRAPH_BUDGET_LIMITS.perMinute).toBeLessThan(150);
  });

  it("never puts a token, the query or the response body in an error message", () => {
    expect(seenErrors.length).toBeGreaterThanOrEqual(15);
    for (const error of seenErrors) {
      expect(error.source).toBe("graph");
      const { raw: _raw, ...fields } = error as Partial<InvalidPageError>;
      const text = `${error.message} ${JSON.stringify(fields)} ${String(error.stack)}`;
      for (const token of issuedTokens) expect(text).not.toContain(token);
      expect(error.message).not.toMatch(/\$filter|\$top=|\$skiptoken|lastUpdateDateTime ge|\?/);
      expect(error.message).not.toContain("Too many requests");
      expect(error.message).not.toContain("Injected failure");
      expect(error.message).not.toContain("Missing scope");
      if (error instanceof InvalidPageError) expect(error.message).not.toContain(error.raw);
    }
  });
});

describe("GraphClient with tokens from the fake Entra", () => {
  const CLIENT_ID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
  const CLIENT_SECRET = "s3cret~value";
  const REDIRECT_URI = "https://app.example.test/api/consent/callback";

  it("reads with a refresh token redeemed for Graph, and gets 401 twice for one redeemed for MDE", async () => {
    const entra = new FakeEntra({ certPem: cert.certPem, keyPem: cert.keyPem, clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [REDIRECT_URI] }] });
    await entra.start();
    const linked = new FakeGraph({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken: (t) => entra.verifyAccessToken(t) });
    await linked.start();
    const dispatcher = new Agent({ connect: { ca: cert.certPem } });
    const post = async (tenantId: string, form: Record<string, string>): Promise<Record<string, unknown>> => {
      const answer = await request(`${entra.url}/${tenantId}/oauth2/v2.0/token`, {
        dispatcher,
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, ...form }).toString(),
      });
      return (await answer.body.json()) as Record<string, unknown>;
    };
    try {
      const tenantId = randomUUID();
      linked.addAlerts(tenantId, generateGraphAlerts(tenantId, 7, { start: new Date(FROM), spacingMs: 1000 }));
      // The consent a graph tenant gives: the Graph permission plus the OIDC scopes.
      const verifier = randomBytes(32).toString("base64url");
      const authorize = new URL(`${entra.url}/${tenantId}/oauth2/v2.0/authorize`);
      authorize.search = new URLSearchParams({
        client_id: CLIENT_ID,
        redirect_uri: REDIRECT_URI,
        response_type: "code",
        scope: `${GRAPH_RESOURCE}/SecurityAlert.Read.All offline_access openid profile`,
        code_challenge: createHash("sha256").update(verifier).digest("base64url"),
        code_challenge_method: "S256",
      }).toString();
      const redirect = await request(authorize, { dispatcher });
      await redirect.body.text();
      const code = new URL(String(redirect.headers.location)).searchParams.get("code") ?? "";
      const consented = await post(tenantId, { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, code_verifier: verifier, scope: `${GRAPH_RESOURCE}/SecurityAlert.Read.All offline_access openid` });
      const refreshToken = String(consented.refresh_token);
      const redeem = async (scope: string): Promise<string> => {
        const token = String((await post(tenantId, { grant_type: "refresh_token", refresh_token: refreshToken, scope: `${scope} offline_access openid` })).access_token);
        issuedTokens.add(token);
        return token;
      };

      const r = rig({ baseUrl: linked.url });
      const graphToken = await redeem(`${GRAPH_RESOURCE}/.default`);
      const page = await r.client.fetchPage(r.query(tenantId, { accessToken: async () => graphToken }));
      expect(page.alerts).toHaveLength(7);

      const mdeToken = await redeem("https://api.securitycenter.microsoft.com/Alert.Read");
      const error = await failure(r.client.fetchPage(r.query(tenantId, { accessToken: async () => mdeToken })));
      expect(error).toMatchObject({ code: "unauthorized", status: 401, source: "graph" });
      expect(linked.requests(tenantId).map((q) => q.status)).toEqual([200, 401, 401]);
    } finally {
      await dispatcher.close();
      await Promise.all([linked.stop(), entra.stop()]);
    }
  });
});
