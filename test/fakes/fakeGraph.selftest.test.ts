import { createHash, randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Agent, request } from "undici";
import { FakeDefender } from "./fakeDefender";
import { FakeEntra, GRAPH_RESOURCE } from "./fakeEntra";
import {
  FakeGraph,
  GRAPH_ALERTS_ROUTE,
  GRAPH_ODATA_CONTEXT,
  PREFER_UNKNOWN_ENUM_MEMBERS,
  type GraphTokenClaims,
} from "./fakeGraph";
import { generateGraphAlerts, makeGraphAlert, type GraphAlert, type GraphEvidence } from "./graphAlerts";
import { createTestCertificate, type TestCertificate } from "./tls";

/** Proves the fake Graph speaks alerts_v2 the way the Graph client (and the pull) will rely on. */

const T0 = Date.parse("2025-03-01T00:00:00Z");
const FROM = "2025-03-01T00:00:00.000Z";
const TO = "2025-03-01T01:00:00.000Z";
const CLIENT_ID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
const CLIENT_SECRET = "s3cret~value";
const REDIRECT_URI = "https://app.example.test/api/consent/callback";

let cert: TestCertificate;
let graph: FakeGraph;
let dispatcher: Agent;

/**
 * `graph-<tid>`: a delegated Graph token with SecurityAlert.Read.All; `app-<tid>`: an app token
 * with the role; `user-<tid>`: Graph audience with User.Read only; `mde-<tid>`: a Defender token.
 */
async function verifyAccessToken(token: string): Promise<GraphTokenClaims | null> {
  const match = /^(graph|app|user|mde|expired)-(.+)$/.exec(token);
  if (!match?.[2]) return null;
  const tid = match[2];
  const exp = Math.floor(Date.now() / 1000) + (match[1] === "expired" ? -60 : 3600);
  switch (match[1]) {
    case "graph":
      return { tid, aud: "https://graph.microsoft.com", scp: "SecurityAlert.Read.All User.Read", exp };
    case "app":
      return { tid, aud: "00000003-0000-0000-c000-000000000000", roles: ["SecurityAlert.Read.All"], exp };
    case "user":
      return { tid, aud: "https://graph.microsoft.com", scp: "User.Read", exp };
    case "expired":
      return { tid, aud: "https://graph.microsoft.com", scp: "SecurityAlert.Read.All", exp };
    default:
      return { tid, aud: "https://api.securitycenter.microsoft.com", scp: "Alert.Read", exp };
  }
}

beforeAll(async () => {
  cert = await createTestCertificate();
  dispatcher = new Agent({ connect: { ca: cert.certPem } });
  graph = new FakeGraph({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken });
  await graph.start();
});

afterAll(async () => {
  await graph?.stop();
  await dispatcher?.close();
});

interface Answer {
  status: number;
  headers: Record<string, string>;
  text: string;
  json: { value?: Record<string, unknown>[]; "@odata.nextLink"?: string; "@odata.context"?: string; error?: { code: string; message: string } };
}

async function get(url: string, options: { token?: string; prefer?: boolean; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  if (options.prefer !== false) headers.prefer = PREFER_UNKNOWN_ENUM_MEMBERS;
  const response = await request(url, { dispatcher, headers });
  const text = await response.body.text();
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(response.headers)) if (v !== undefined) flat[k] = Array.isArray(v) ? v.join(", ") : v;
  let json: Answer["json"] = {};
  try {
    json = JSON.parse(text) as Answer["json"];
  } catch {
    // Left empty: the test looks at `text`.
  }
  return { status: response.statusCode, headers: flat, text, json };
}

/** The alerts URL with `$filter` (spaces as %20) and optional `$top`. */
function alertsUrl(filter: string | undefined, top?: number, base = graph.url): string {
  const parts: string[] = [];
  if (filter !== undefined) parts.push(`$filter=${encodeURIComponent(filter)}`);
  if (top !== undefined) parts.push(`$top=${top}`);
  return `${base}${GRAPH_ALERTS_ROUTE}${parts.length > 0 ? `?${parts.join("&")}` : ""}`;
}

const windowFilter = (from = FROM, to = TO): string => `lastUpdateDateTime ge ${from} and lastUpdateDateTime lt ${to}`;

/** Every page from `url` on, following nextLink; the ids in serving order and the number of requests. */
async function pageAll(url: string, token: string, between?: (page: number) => void): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let next: string | undefined = url;
  let pages = 0;
  while (next !== undefined) {
    const answer = await get(next, { token });
    expect(answer.status, answer.text).toBe(200);
    for (const alert of answer.json.value ?? []) ids.push(String(alert.id));
    next = answer.json["@odata.nextLink"];
    between?.(pages);
    pages++;
  }
  return { ids, pages };
}

function seeded(count: number, options: { spacingMs?: number; tenantId?: string; sources?: GraphAlert["serviceSource"][] } = {}): { tenantId: string; alerts: GraphAlert[] } {
  const tenantId = options.tenantId ?? randomUUID();
  const alerts = generateGraphAlerts(tenantId, count, {
    start: new Date(T0),
    spacingMs: options.spacingMs ?? 1000,
    // Without Defender for Cloud unless asked: most tests are not about the Prefer header.
    serviceSources: options.sources ?? ["microsoftDefenderForEndpoint", "microsoftDefenderForIdentity", "microsoftDefenderForOffice365", "microsoftDefenderForCloudApps"],
  });
  graph.addAlerts(tenantId, alerts);
  return { tenantId, alerts };
}

const newestFirst = (alerts: readonly GraphAlert[]): string[] => [...alerts].reverse().map((a) => a.id);

beforeEach(() => {
  graph.setNextLinkMode("normal");
  graph.setClockOffset(0);
});

describe("FakeGraph alerts_v2: $filter", () => {
  it("selects [ge, lt) on lastUpdateDateTime at 100 ns, and serves Graph's page shape", async () => {
    const { tenantId, alerts } = seeded(30);
    const all = await get(alertsUrl(windowFilter()), { token: `graph-${tenantId}` });
    expect(all.status).toBe(200);
    expect(all.json["@odata.context"]).toBe(GRAPH_ODATA_CONTEXT);
    expect(all.headers["content-type"]).toContain("application/json");
    expect(all.headers["date"]).toBeDefined();
    // Most recently updated first, as Graph's documentation describes.
    expect((all.json.value ?? []).map((a) => a.id)).toEqual(newestFirst(alerts));
    // The page's raw JSON is exactly the alert stored.
    expect(all.json.value?.[0]).toEqual(JSON.parse(JSON.stringify(alerts[29])));

    // Alert 10 sits at T0 + 10 s plus sub-ms digits: `ge` at the whole second takes it, `lt` just above it excludes 11.
    const t10 = alerts[10]?.lastUpdateDateTime ?? "";
    const inner = await get(alertsUrl(`lastUpdateDateTime ge ${t10} and lastUpdateDateTime lt 2025-03-01T00:00:12.000Z`), { token: `graph-${tenantId}` });
    expect((inner.json.value ?? []).map((a) => a.id)).toEqual([alerts[11]?.id, alerts[10]?.id]);
    const gt = await get(alertsUrl(`lastUpdateDateTime gt ${t10} and lastUpdateDateTime le 2025-03-01T00:00:12.000Z`), { token: `graph-${tenantId}` });
    expect((gt.json.value ?? []).map((a) => a.id)).toEqual([alerts[11]?.id]);
    // One comparison alone, and none at all.
    const single = await get(alertsUrl("lastUpdateDateTime ge 2025-03-01T00:00:28.000Z"), { token: `graph-${tenantId}` });
    expect((single.json.value ?? []).map((a) => a.id)).toEqual([alerts[29]?.id, alerts[28]?.id]);
    const none = await get(alertsUrl(undefined), { token: `graph-${tenantId}` });
    expect(none.json.value).toHaveLength(30);
    // "+" for spaces decodes the same as %20.
    const plus = await get(`${graph.url}${GRAPH_ALERTS_ROUTE}?$filter=lastUpdateDateTime+ge+2025-03-01T00:00:28.000Z`, { token: `graph-${tenantId}` });
    expect(plus.json.value).toHaveLength(2);
  });

  it("answers anything else with a Graph-shaped 400", async () => {
    const { tenantId } = seeded(3);
    for (const filter of [
      "createdDateTime ge 2025-03-01T00:00:00Z",
      "lastUpdateDateTime eq 2025-03-01T00:00:00Z",
      "lastUpdateDateTime ge yesterday",
      `lastUpdateDateTime ge ${FROM} or lastUpdateDateTime lt ${TO}`,
      "severity eq 'high'",
    ]) {
      const answer = await get(alertsUrl(filter), { token: `graph-${tenantId}` });
      expect(answer.status, filter).toBe(400);
      expect(answer.json.error?.code).toBe("BadRequest");
      expect(answer.json.error).toHaveProperty("innerError.request-id");
    }
  });
});

describe("FakeGraph alerts_v2: $top and paging", () => {
  it("takes $top from 1 to 1000, defaults to 100, and refuses $skip and other options", async () => {
    const { tenantId } = seeded(150, { spacingMs: 10 });
    const token = `graph-${tenantId}`;
    expect((await get(alertsUrl(windowFilter()), { token })).json.value).toHaveLength(100);
    expect((await get(alertsUrl(windowFilter(), 1000), { token })).json.value).toHaveLength(150);
    expect((await get(alertsUrl(windowFilter(), 7), { token })).json.value).toHaveLength(7);
    for (const top of [0, 1001, 5000]) {
      const answer = await get(alertsUrl(windowFilter(), top), { token });
      expect(answer.status, String(top)).toBe(400);
      expect(answer.json.error?.code).toBe("BadRequest");
    }
    for (const extra of ["$skip=10", "$orderby=lastUpdateDateTime%20desc", "$count=true", "$expand=evidence", "$top=5"]) {
      const answer = await get(`${alertsUrl(windowFilter(), 5)}&${extra}`, { token });
      expect(answer.status, extra).toBe(400);
    }
  });

  it("pages by an opaque $skiptoken on the same origin and path, every alert once, the last page without a link", async () => {
    const { tenantId, alerts } = seeded(45);
    const token = `graph-${tenantId}`;
    const first = await get(alertsUrl(windowFilter(), 20), { token });
    const link = new URL(first.json["@odata.nextLink"] ?? "");
    expect(link.origin).toBe(graph.url);
    expect(link.pathname).toBe(GRAPH_ALERTS_ROUTE);
    expect(link.searchParams.get("$filter")).toBe(windowFilter());
    expect(link.searchParams.get("$top")).toBe("20");
    expect(link.searchParams.get("$skiptoken")).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(link.searchParams.has("$skip")).toBe(false);
    // The link comes before `value`, as Graph writes it.
    expect(first.text.indexOf("@odata.nextLink")).toBeLessThan(first.text.indexOf('"value"'));

    const { ids, pages } = await pageAll(alertsUrl(windowFilter(), 20), token);
    expect(pages).toBe(3);
    expect(ids).toEqual(newestFirst(alerts));
    const followed = graph.requests(tenantId).slice(-3).map((r) => r.followedLink);
    expect(followed).toEqual([false, true, true]);

    // Exactly one full page: no link, since nothing remains.
    const exact = await get(alertsUrl(windowFilter(), 45), { token });
    expect(exact.json["@odata.nextLink"]).toBeUndefined();

    // A link whose $top was edited, or a made-up token, is refused.
    link.searchParams.set("$top", "21");
    expect((await get(link.toString(), { token })).status).toBe(400);
    expect((await get(`${alertsUrl(windowFilter(), 20)}&$skiptoken=bm90LWEtdG9rZW4`, { token })).status).toBe(400);
  });

  it("loop and emptyChain: a followed link answers an empty page linking to itself, or to a new link every time", async () => {
    const { tenantId } = seeded(10);
    const token = `graph-${tenantId}`;
    graph.setNextLinkMode("loop");
    const first = await get(alertsUrl(windowFilter(), 4), { token });
    expect(first.json.value).toHaveLength(4);
    const link = first.json["@odata.nextLink"] ?? "";
    const looped = await get(link, { token });
    expect(looped.json.value).toEqual([]);
    expect(looped.json["@odata.nextLink"]).toBe(link);
    graph.setNextLinkMode("emptyChain");
    const links = new Set<string>();
    let next: string = link;
    for (let hop = 0; hop < 5; hop++) {
      const answer = await get(next, { token });
      expect(answer.status).toBe(200);
      expect(answer.json.value).toEqual([]);
      next = answer.json["@odata.nextLink"] ?? "";
      expect(new URL(next).searchParams.get("$filter")).toBe(windowFilter());
      links.add(next);
    }
    expect(links.size).toBe(5);
    // A first page is served as in the normal mode.
    expect((await get(alertsUrl(windowFilter(), 4), { token })).json.value).toHaveLength(4);
  });

  it("offset paging evaluates again per request: an alert updated while a span is paged is missed, a late one repeats another", async () => {
    const { tenantId, alerts } = seeded(30);
    graph.setOrder(tenantId, "oldest");
    const token = `graph-${tenantId}`;
    // After the first page, alert 3 (already served) is updated: it leaves the span and every later one moves up by one.
    const { ids } = await pageAll(alertsUrl(windowFilter("2025-03-01T00:00:00.000Z", "2025-03-01T00:00:30.000Z"), 10), token, (page) => {
      if (page === 0) graph.updateAlert(tenantId, alerts[3]?.id ?? "", { status: "inProgress", lastUpdateDateTime: "2025-03-01T02:00:00.0000001Z" });
    });
    expect(ids).toHaveLength(29);
    expect(new Set(ids).size).toBe(29);
    expect(ids).not.toContain(alerts[10]?.id);

    // A version that becomes visible inside the span while it is paged pushes one alert back onto the next page.
    const late = seeded(30);
    graph.setOrder(late.tenantId, "oldest");
    const lateAlert = makeGraphAlert({ id: "late-1", lastUpdateDateTime: "2025-03-01T00:00:00.5Z", tenantId: late.tenantId });
    graph.addAlerts(late.tenantId, [lateAlert], { visibleAt: graph.now() + 60_000 });
    const repeated = await pageAll(alertsUrl(windowFilter(), 10), `graph-${late.tenantId}`, (page) => {
      if (page === 0) graph.setClockOffset(120_000);
    });
    expect(repeated.ids).toHaveLength(31);
    expect(new Set(repeated.ids).size).toBe(30);
    // The late alert landed before the offset: it was never served.
    expect(repeated.ids).not.toContain("late-1");
  });

  it("snapshot paging serves the span as the first page saw it, until the skip token expires", async () => {
    const { tenantId, alerts } = seeded(30);
    graph.setPaging(tenantId, "snapshot");
    graph.setOrder(tenantId, "oldest");
    const token = `graph-${tenantId}`;
    const { ids } = await pageAll(alertsUrl(windowFilter(), 10), token, (page) => {
      if (page === 0) graph.updateAlert(tenantId, alerts[3]?.id ?? "", { status: "inProgress", lastUpdateDateTime: "2025-03-01T02:00:00Z" });
    });
    expect(ids).toEqual(alerts.map((a) => a.id));

    const first = await get(alertsUrl(windowFilter(), 10), { token });
    graph.setClockOffset(11 * 60_000);
    const stale = await get(first.json["@odata.nextLink"] ?? "", { token });
    expect(stale.status).toBe(400);
    expect(stale.json.error?.message).toMatch(/expired/);
  });

  it("shuffled: every request orders differently, so offset paging repeats and misses alerts; a snapshot holds one order", async () => {
    const tenantId = "5a5a5a5a-0000-4000-8000-000000000001";
    graph.removeAll(tenantId);
    const { alerts } = seeded(60, { tenantId });
    graph.setOrder(tenantId, "shuffled");
    const token = `graph-${tenantId}`;
    const a = await get(alertsUrl(windowFilter(), 1000), { token });
    const b = await get(alertsUrl(windowFilter(), 1000), { token });
    const orderA = (a.json.value ?? []).map((x) => x.id);
    const orderB = (b.json.value ?? []).map((x) => x.id);
    expect(new Set(orderA)).toEqual(new Set(alerts.map((x) => x.id)));
    expect(orderA).not.toEqual(orderB);
    expect(orderA).not.toEqual(newestFirst(alerts));

    const offset = await pageAll(alertsUrl(windowFilter(), 10), token);
    expect(offset.ids).toHaveLength(60);
    expect(new Set(offset.ids).size).toBeLessThan(60);

    graph.setPaging(tenantId, "snapshot");
    const snapshot = await pageAll(alertsUrl(windowFilter(), 10), token);
    expect(new Set(snapshot.ids).size).toBe(60);
    expect(snapshot.ids).toHaveLength(60);
  });

  it("flipping: offset paging reads the newest end of a span twice and never the oldest, pass after pass", async () => {
    const tenantId = "5a5a5a5a-0000-4000-8000-000000000002";
    graph.removeAll(tenantId);
    const { alerts } = seeded(30, { tenantId });
    graph.setOrder(tenantId, "flipping");
    const token = `graph-${tenantId}`;
    const whole = await get(alertsUrl(windowFilter(), 1000), { token });
    expect((whole.json.value ?? []).map((x) => x.id)).toEqual(newestFirst(alerts));
    const oldestTen = newestFirst(alerts).slice(20);
    for (let pass = 0; pass < 2; pass++) {
      const offset = await pageAll(alertsUrl(windowFilter(), 20), token);
      expect(offset.pages).toBe(2);
      expect(offset.ids).toHaveLength(30);
      // The linked page is the oldest order's last ten: the newest ten again.
      expect(offset.ids.slice(20)).toEqual([...newestFirst(alerts).slice(0, 10)].reverse());
      expect(offset.ids.filter((id) => oldestTen.includes(id))).toEqual([]);
    }
  });
});

describe("FakeGraph alerts_v2: versions, Prefer header and faults", () => {
  it("serves a late alert only once visible, and the previous version of an updated one until the new one is", async () => {
    const { tenantId, alerts } = seeded(5);
    const token = `graph-${tenantId}`;
    const late = makeGraphAlert({ id: "late-2", lastUpdateDateTime: "2025-03-01T00:00:30.1234567Z", tenantId });
    graph.addAlerts(tenantId, [late], { visibleAt: graph.now() + 60_000 });
    const target = alerts[2]?.id ?? "";
    graph.updateAlert(tenantId, target, { status: "resolved", lastUpdateDateTime: "2025-03-01T00:00:40Z" }, { visibleAt: graph.now() + 60_000 });
    const before = await get(alertsUrl(windowFilter()), { token });
    expect((before.json.value ?? []).map((a) => a.id)).not.toContain("late-2");
    expect((before.json.value ?? []).find((a) => a.id === target)?.lastUpdateDateTime).toBe(alerts[2]?.lastUpdateDateTime);

    graph.setClockOffset(61_000);
    const after = await get(alertsUrl(windowFilter()), { token });
    const values = after.json.value ?? [];
    expect(values.map((a) => a.id)).toContain("late-2");
    expect(values.filter((a) => a.id === target).map((a) => [a.status, a.lastUpdateDateTime])).toEqual([["resolved", "2025-03-01T00:00:40Z"]]);
    expect(graph.served(tenantId).get(`late-2@${late.lastUpdateDateTime}`)).toBe(1);
    // updateAlert without a time stamps the fake's now, with 7 digits.
    const updated = graph.updateAlert(tenantId, target, { status: "inProgress" });
    expect(updated.lastUpdateDateTime).toMatch(/\.\d{7}Z$/);
  });

  it("hides evolvable-enum sources (Defender for Cloud) without Prefer: include-unknown-enum-members", async () => {
    const { tenantId, alerts } = seeded(10, { sources: ["microsoftDefenderForEndpoint", "microsoftDefenderForCloud"] });
    const token = `graph-${tenantId}`;
    const withHeader = await get(alertsUrl(windowFilter()), { token });
    const without = await get(alertsUrl(windowFilter()), { token, prefer: false });
    expect(withHeader.json.value).toHaveLength(10);
    expect((without.json.value ?? []).map((a) => a.serviceSource)).toEqual(Array(5).fill("microsoftDefenderForEndpoint"));
    // Another preference beside it still counts.
    const combined = await get(alertsUrl(windowFilter()), { token, prefer: false, headers: { prefer: `odata.maxpagesize=50, ${PREFER_UNKNOWN_ENUM_MEMBERS}` } });
    expect(combined.json.value).toHaveLength(10);
    expect(graph.requests(tenantId).map((r) => r.prefer)).toEqual([PREFER_UNKNOWN_ENUM_MEMBERS, undefined, `odata.maxpagesize=50, ${PREFER_UNKNOWN_ENUM_MEMBERS}`]);
    expect(alerts.filter((a) => a.serviceSource === "microsoftDefenderForCloud")).toHaveLength(5);

    const masking = new FakeGraph({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken, unknownEnumMembers: "mask" });
    await masking.start();
    try {
      masking.addAlerts(tenantId, alerts);
      const masked = await get(alertsUrl(windowFilter(), undefined, masking.url), { token, prefer: false });
      const sources = (masked.json.value ?? []).map((a) => a.serviceSource);
      expect(sources.filter((s) => s === "unknownFutureValue")).toHaveLength(5);
      expect(sources).not.toContain("microsoftDefenderForCloud");
    } finally {
      await masking.stop();
    }
  });

  it("throttles with Retry-After, fails mid-paging only, hangs, cuts pages short and enforces a quota", async () => {
    const { tenantId } = seeded(30);
    const token = `graph-${tenantId}`;
    graph.throttle(tenantId, { times: 1, retryAfterSeconds: 7 });
    const throttled = await get(alertsUrl(windowFilter(), 10), { token });
    expect(throttled.status).toBe(429);
    expect(throttled.headers["retry-after"]).toBe("7");
    expect(throttled.json.error?.code).toBe("TooManyRequests");
    graph.throttle(tenantId, { times: 1, retryAfterSeconds: 3, status: 503 });
    const unavailable = await get(alertsUrl(windowFilter(), 10), { token });
    expect([unavailable.status, unavailable.headers["retry-after"]]).toEqual([503, "3"]);

    graph.fail(tenantId, { status: 502, times: 1, onlyFollowedLinks: true });
    const first = await get(alertsUrl(windowFilter(), 10), { token });
    expect(first.status).toBe(200);
    const link = first.json["@odata.nextLink"] ?? "";
    expect((await get(link, { token })).status).toBe(502);
    expect((await get(link, { token })).status).toBe(200);

    graph.corruptPages(tenantId, { times: 1 });
    const cut = await get(alertsUrl(windowFilter(), 10), { token });
    expect(cut.status).toBe(200);
    expect(() => JSON.parse(cut.text) as unknown).toThrow();

    graph.hang(tenantId, 1);
    await expect(request(alertsUrl(windowFilter(), 10), { dispatcher, headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(300) })).rejects.toThrow();

    graph.enforceQuota(tenantId, { perMinute: 2 });
    expect((await get(alertsUrl(windowFilter(), 10), { token })).status).toBe(200);
    expect((await get(alertsUrl(windowFilter(), 10), { token })).status).toBe(200);
    const over = await get(alertsUrl(windowFilter(), 10), { token });
    expect(over.status).toBe(429);
    expect(Number(over.headers["retry-after"])).toBeGreaterThan(50);
    graph.enforceQuota(tenantId, null);

    expect(graph.requests(tenantId).map((r) => r.status)).toEqual([429, 503, 200, 502, 200, 200, 0, 200, 200, 429]);
  });
});

describe("FakeGraph alerts_v2: tokens", () => {
  it("reads the token's tenant; 401 for no token, a bad, expired or MDE token and a blocked tenant; 403 without the permission or the user's role", async () => {
    const a = seeded(3);
    const b = seeded(4);
    expect((await get(alertsUrl(windowFilter()), { token: `graph-${a.tenantId}` })).json.value).toHaveLength(3);
    expect((await get(alertsUrl(windowFilter()), { token: `app-${b.tenantId}` })).json.value).toHaveLength(4);
    const values = (await get(alertsUrl(windowFilter()), { token: `graph-${b.tenantId}` })).json.value ?? [];
    expect(new Set(values.map((v) => v.tenantId))).toEqual(new Set([b.tenantId]));

    for (const token of [undefined, "nonsense", `expired-${a.tenantId}`, `mde-${a.tenantId}`]) {
      const answer = await get(alertsUrl(windowFilter()), token === undefined ? {} : { token });
      expect(answer.status, String(token)).toBe(401);
      expect(answer.json.error?.code).toBe("InvalidAuthenticationToken");
      expect(answer.headers["www-authenticate"]).toMatch(/^Bearer /);
    }
    // The MDE token's refusal is recorded under its tenant.
    expect(graph.requests(a.tenantId).at(-1)).toMatchObject({ status: 401 });

    const noScope = await get(alertsUrl(windowFilter()), { token: `user-${a.tenantId}` });
    expect([noScope.status, noScope.json.error?.code]).toEqual([403, "Forbidden"]);
    expect(noScope.json.error?.message).toContain("SecurityAlert.Read.All");

    graph.denyUserAccess(a.tenantId);
    expect((await get(alertsUrl(windowFilter()), { token: `graph-${a.tenantId}` })).status).toBe(403);
    // An app token has no user whose role could be missing.
    expect((await get(alertsUrl(windowFilter()), { token: `app-${a.tenantId}` })).status).toBe(200);
    graph.denyUserAccess(a.tenantId, false);

    graph.blockTenant(a.tenantId);
    expect((await get(alertsUrl(windowFilter()), { token: `graph-${a.tenantId}` })).status).toBe(401);
    graph.blockTenant(a.tenantId, false);
    expect((await get(alertsUrl(windowFilter()), { token: `graph-${a.tenantId}` })).status).toBe(200);
  });

  it("accepts the fake Entra's Graph tokens (refresh token redeemed for Graph) and refuses its MDE tokens; FakeDefender does the opposite", async () => {
    const entra = new FakeEntra({ certPem: cert.certPem, keyPem: cert.keyPem, clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [REDIRECT_URI] }] });
    await entra.start();
    const linked = new FakeGraph({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken: (t) => entra.verifyAccessToken(t) });
    const defender = new FakeDefender({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken: (t) => entra.verifyAccessToken(t) });
    await Promise.all([linked.start(), defender.start()]);
    try {
      const tenantId = randomUUID();
      linked.addAlerts(tenantId, generateGraphAlerts(tenantId, 3, { start: new Date(T0), spacingMs: 1000 }));
      const scopes = ["https://api.securitycenter.microsoft.com/Alert.Read", `${GRAPH_RESOURCE}/SecurityAlert.Read.All`, "offline_access", "openid", "profile"];
      const refreshToken = await consentedRefreshToken(entra, tenantId, scopes);
      expect(entra.consentedScopes(tenantId, CLIENT_ID)).toEqual(["https://api.securitycenter.microsoft.com/Alert.Read", `${GRAPH_RESOURCE}/SecurityAlert.Read.All`]);

      for (const scope of [`${GRAPH_RESOURCE}/.default`, `${GRAPH_RESOURCE}/SecurityAlert.Read.All`]) {
        const graphToken = await redeem(entra, tenantId, refreshToken, scope);
        expect(graphToken.status, JSON.stringify(graphToken.json)).toBe(200);
        const access = String(graphToken.json.access_token);
        expect(await entra.verifyAccessToken(access)).toMatchObject({ tid: tenantId, aud: GRAPH_RESOURCE, scp: "SecurityAlert.Read.All" });
        expect(graphToken.json.scope).toBe(`${GRAPH_RESOURCE}/SecurityAlert.Read.All`);
        expect((await get(alertsUrl(windowFilter(), undefined, linked.url), { token: access })).json.value).toHaveLength(3);
        expect((await request(`${defender.url}/api/alerts`, { dispatcher, headers: { authorization: `Bearer ${access}` } })).statusCode).toBe(401);
      }
      const mde = await redeem(entra, tenantId, refreshToken, "https://api.securitycenter.microsoft.com/.default");
      const mdeToken = String(mde.json.access_token);
      expect(await entra.verifyAccessToken(mdeToken)).toMatchObject({ aud: "https://api.securitycenter.microsoft.com", scp: "Alert.Read" });
      expect((await get(alertsUrl(windowFilter(), undefined, linked.url), { token: mdeToken })).status).toBe(401);
      expect((await request(`${defender.url}/api/alerts`, { dispatcher, headers: { authorization: `Bearer ${mdeToken}` } })).statusCode).toBe(200);

      // A consent without the Graph permission: Graph tokens are refused (AADSTS65001), MDE ones still issued.
      const mdeOnly = randomUUID();
      const mdeOnlyToken = await consentedRefreshToken(entra, mdeOnly, ["https://api.securitycenter.microsoft.com/Alert.Read", "offline_access", "openid"]);
      const refused = await redeem(entra, mdeOnly, mdeOnlyToken, `${GRAPH_RESOURCE}/.default`);
      expect(refused.status).toBe(400);
      expect(refused.json).toMatchObject({ error: "invalid_grant", error_codes: [65001], suberror: "consent_required" });
      expect((await redeem(entra, mdeOnly, mdeOnlyToken, "https://api.securitycenter.microsoft.com/Alert.Read")).status).toBe(200);

      // An admin removing the Graph grant has the same effect on the first tenant.
      entra.revokeConsent(tenantId, GRAPH_RESOURCE);
      expect((await redeem(entra, tenantId, refreshToken, `${GRAPH_RESOURCE}/.default`)).status).toBe(400);
    } finally {
      await Promise.all([linked.stop(), defender.stop(), entra.stop()]);
    }
  });
});

describe("FakeGraph alert stream", () => {
  it("adds new alerts stamped with the fake's clock and moves some along new → inProgress → resolved", async () => {
    const tenantId = randomUUID();
    graph.streamAlerts(tenantId, { perMinute: 6000, updateShare: 0.5 });
    try {
      // Both counts: under load a few updates can land before the third new alert does.
      await expect
        .poll(() => Math.min(graph.streamStatus(tenantId)?.updated ?? 0, graph.streamStatus(tenantId)?.created ?? 0), { timeout: 10_000 })
        .toBeGreaterThan(2);
    } finally {
      graph.streamAlerts(tenantId, null);
    }
    expect(graph.streamStatus(tenantId)).toBeNull();
    const alerts = graph.alerts(tenantId);
    expect(alerts.length).toBeGreaterThan(2);
    expect(alerts.some((a) => a.status !== "new")).toBe(true);
    for (const a of alerts) expect(Math.abs(Date.parse(a.lastUpdateDateTime) - graph.now())).toBeLessThan(60_000);
    const served = await get(alertsUrl(`lastUpdateDateTime ge ${new Date(graph.now() - 60_000).toISOString()}`, 1000), { token: `graph-${tenantId}` });
    expect(served.json.value).toHaveLength(alerts.length);
  });
});

describe("FakeGraph alert bodies and bookkeeping", () => {
  it("generates documented alerts from several sources with polymorphic evidence and 7-digit times", () => {
    const tenantId = randomUUID();
    const alerts = generateGraphAlerts(tenantId, 20, { start: new Date(T0), spacingMs: 1000 });
    expect(new Set(alerts.map((a) => a.serviceSource))).toEqual(
      new Set(["microsoftDefenderForEndpoint", "microsoftDefenderForIdentity", "microsoftDefenderForOffice365", "microsoftDefenderForCloudApps", "microsoftDefenderForCloud"]),
    );
    const documented = [
      "id", "providerAlertId", "incidentId", "status", "severity", "classification", "determination", "serviceSource", "detectionSource",
      "detectorId", "tenantId", "title", "description", "recommendedActions", "category", "assignedTo", "alertWebUrl", "incidentWebUrl",
      "actorDisplayName", "threatDisplayName", "threatFamilyName", "mitreTechniques", "createdDateTime", "lastUpdateDateTime",
      "resolvedDateTime", "firstActivityDateTime", "lastActivityDateTime", "comments", "systemTags", "evidence",
    ];
    for (const alert of alerts) {
      for (const field of documented) expect(alert, field).toHaveProperty(field);
      expect(alert.tenantId).toBe(tenantId);
      expect(typeof alert.incidentId).toBe("string");
      expect(alert.evidence.length).toBeGreaterThan(1);
      for (const e of alert.evidence) expect(e["@odata.type"]).toMatch(/^#microsoft\.graph\.security\.[a-zA-Z]+Evidence$/);
    }
    const kinds = new Set(alerts.flatMap((a) => a.evidence.map((e: GraphEvidence) => e["@odata.type"].split(".").pop())));
    for (const kind of ["deviceEvidence", "userEvidence", "fileEvidence", "processEvidence", "ipEvidence", "mailboxEvidence", "urlEvidence", "cloudApplicationEvidence", "azureResourceEvidence"]) {
      expect(kinds).toContain(kind);
    }
    expect(alerts.filter((a) => /\.\d{7}Z$/.test(a.lastUpdateDateTime)).length).toBeGreaterThan(5);
    expect(alerts.filter((a) => /\.\d{3}Z$/.test(a.lastUpdateDateTime) || /:\d{2}Z$/.test(a.lastUpdateDateTime)).length).toBeGreaterThan(3);
    // MDE alerts keep the MDE id form, so providerAlertId matches /api/alerts ids.
    expect(alerts.find((a) => a.serviceSource === "microsoftDefenderForEndpoint")?.id).toMatch(/^da\d+_\d+$/);
    expect(alerts.every((a) => Date.parse(a.createdDateTime) < Date.parse(a.lastUpdateDateTime))).toBe(true);
  });

  it("counts requests, pages, served alerts and throttles, and is driven through /_fake/ routes", async () => {
    graph.resetStats();
    const tenantId = randomUUID();
    const ca = { dispatcher, method: "POST" as const, headers: { "content-type": "application/json" } };
    const seed = await request(`${graph.url}/_fake/seed`, { ...ca, body: JSON.stringify({ tenantId, count: 250, start: FROM, spacingMs: 1000 }) });
    expect(await seed.body.json()).toEqual({ tenantId, added: 250, total: 250 });
    await (await request(`${graph.url}/_fake/throttle`, { ...ca, body: JSON.stringify({ tenantId, times: 1, retryAfterSeconds: 2 }) })).body.text();
    const token = `graph-${tenantId}`;
    expect((await get(alertsUrl(windowFilter(), 100), { token })).status).toBe(429);
    const { ids, pages } = await pageAll(alertsUrl(windowFilter(), 100), token);
    expect([ids.length, new Set(ids).size, pages]).toEqual([250, 250, 3]);
    // Seeded alerts are rebuilt when served: the same body each time.
    const again = await get(alertsUrl(windowFilter(), 1), { token });
    expect(again.json.value?.[0]).toEqual(makeGraphAlert({ id: ids[0] ?? "", lastUpdateDateTime: String(again.json.value?.[0]?.lastUpdateDateTime), tenantId, serviceSource: again.json.value?.[0]?.serviceSource as GraphAlert["serviceSource"] }));

    const stats = (await (await request(`${graph.url}/_fake/stats`, { dispatcher })).body.json()) as Record<string, unknown>;
    expect(stats).toMatchObject({ requests: 5, pages: 4, servedAlerts: 251, throttled: 1, byStatus: { 200: 4, 429: 1 }, byTenant: { [tenantId]: 5 } });
    expect(graph.pageRequests(tenantId)).toBe(4);
    expect(graph.served(tenantId).size).toBe(250);
    const recorded = graph.requests(tenantId);
    expect(recorded.map((r) => [r.status, r.served, r.followedLink])).toEqual([
      [429, 0, false],
      [200, 100, false],
      [200, 100, true],
      [200, 50, true],
      [200, 1, false],
    ]);
  });
});

// ---- a consent walked over plain HTTP against the fake Entra ---------------------------------

async function consentedRefreshToken(entra: FakeEntra, tenantId: string, scopes: string[]): Promise<string> {
  const verifier = randomBytes(32).toString("base64url");
  const challenge = createHash("sha256").update(verifier).digest("base64url");
  const authorize = new URL(`${entra.url}/${tenantId}/oauth2/v2.0/authorize`);
  authorize.search = new URLSearchParams({
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    response_type: "code",
    response_mode: "query",
    scope: scopes.join(" "),
    code_challenge: challenge,
    code_challenge_method: "S256",
    state: "s",
  }).toString();
  const answer = await request(authorize, { dispatcher });
  await answer.body.text();
  const location = new URL(String(answer.headers.location));
  const code = location.searchParams.get("code");
  expect(code, location.toString()).toBeTruthy();
  const firstResource = scopes.find((s) => s.includes("/")) ?? "";
  const token = await postToken(entra, tenantId, {
    grant_type: "authorization_code",
    code: code ?? "",
    redirect_uri: REDIRECT_URI,
    code_verifier: verifier,
    scope: `${firstResource} offline_access openid`,
  });
  expect(token.status, JSON.stringify(token.json)).toBe(200);
  return String(token.json.refresh_token);
}

function redeem(entra: FakeEntra, tenantId: string, refreshToken: string, scope: string): Promise<{ status: number; json: Record<string, unknown> }> {
  return postToken(entra, tenantId, { grant_type: "refresh_token", refresh_token: refreshToken, scope: `${scope} offline_access openid` });
}

async function postToken(entra: FakeEntra, tenantId: string, form: Record<string, string>): Promise<{ status: number; json: Record<string, unknown> }> {
  const answer = await request(`${entra.url}/${tenantId}/oauth2/v2.0/token`, {
    dispatcher,
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, ...form }).toString(),
  });
  return { status: answer.statusCode, json: (await answer.body.json()) as Record<string, unknown> };
}
