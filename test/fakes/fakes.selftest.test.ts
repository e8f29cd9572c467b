import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { SecretClient, type SecretProperties } from "@azure/keyvault-secrets";
import {
  ConfidentialClientApplication,
  CryptoProvider,
  ServerError,
  type INetworkModule,
  type NetworkRequestOptions,
  type NetworkResponse,
} from "@azure/msal-node";
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from "jose";
import { Agent, fetch } from "undici";
import { generateAlerts, makeAlert, type MdeAlert } from "./alerts";
import { DEFENDER_AUDIENCES, FakeDefender, type PageInfo } from "./fakeDefender";
import { FakeEntra, signInFormSubmission } from "./fakeEntra";
import { FakeKeyVault, type SecretRequestInfo } from "./fakeKeyVault";
import { createTestCertificate, type TestCertificate } from "./tls";

/** Proves the fakes speak the protocols the real SDK clients expect; the app's own tests build on that. */

const TENANT = "11111111-2222-4333-8444-555555555555";
const OTHER_TENANT = "99999999-8888-4777-8666-555555555555";
const CLIENT_ID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
const CLIENT_SECRET = "s3cret~value";
const REDIRECT_URI = "https://app.example.test/api/consent/callback";
const SCOPES = ["https://api.securitycenter.microsoft.com/Alert.Read"];
const VAULT_TOKEN = "vault-token-for-tests";

let cert: TestCertificate;
let entra: FakeEntra;
let vault: FakeKeyVault;
let dispatcher: Agent;

beforeAll(async () => {
  cert = await createTestCertificate();
  dispatcher = new Agent({ connect: { ca: cert.certPem } });
  entra = new FakeEntra({
    certPem: cert.certPem,
    keyPem: cert.keyPem,
    clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [REDIRECT_URI] }],
  });
  vault = new FakeKeyVault({ certPem: cert.certPem, keyPem: cert.keyPem, acceptedToken: VAULT_TOKEN, tenantId: TENANT });
  await Promise.all([entra.start(), vault.start()]);
});

afterAll(async () => {
  await Promise.all([entra?.stop(), vault?.stop()]);
  await dispatcher?.close();
});

function secretClient(maxRetries?: number): SecretClient {
  return new SecretClient(
    vault.url,
    { getToken: async () => ({ token: VAULT_TOKEN, expiresOnTimestamp: Date.now() + 3600e3 }) },
    {
      tlsOptions: { ca: cert.certPem },
      disableChallengeResourceVerification: true,
      ...(maxRetries !== undefined ? { retryOptions: { maxRetries } } : {}),
    },
  );
}

/** Duck-typed so the test does not depend on which copy of @azure/core-rest-pipeline the SDK resolved. */
async function restError(promise: Promise<unknown>): Promise<{ statusCode: number; code?: string }> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof Error) || err.name !== "RestError" || !("statusCode" in err) || typeof err.statusCode !== "number") {
    throw new Error(`expected a RestError, got ${String(err)}`);
  }
  return { statusCode: err.statusCode, ...("code" in err && typeof err.code === "string" ? { code: err.code } : {}) };
}

describe("FakeKeyVault with the real SecretClient", () => {
  it("sets, reads, disables, lists, deletes and purges a secret", async () => {
    const client = secretClient();
    const set = await client.setSecret("rt-one", "v1", { contentType: "text/plain", tags: { tenant: TENANT } });
    expect(set.properties.version).toMatch(/^[0-9a-f]{32}$/);
    expect(set.properties.vaultUrl).toBe(vault.url);
    await client.setSecret("rt-one", "v2");

    const latest = await client.getSecret("rt-one");
    expect(latest.value).toBe("v2");
    expect(latest.properties.enabled).toBe(true);
    expect((await client.getSecret("rt-one", { version: set.properties.version ?? "" })).value).toBe("v1");
    expect(vault.peekLatest("rt-one")).toMatchObject({ value: "v2", enabled: true, versions: 2 });

    const names: string[] = [];
    for await (const p of client.listPropertiesOfSecrets()) names.push(p.name);
    expect(names).toContain("rt-one");
    let versions = 0;
    for await (const p of client.listPropertiesOfSecretVersions("rt-one")) {
      expect(p.version).toMatch(/^[0-9a-f]{32}$/);
      versions += 1;
    }
    expect(versions).toBe(2);

    const updated = await client.updateSecretProperties("rt-one", latest.properties.version ?? "", { enabled: false });
    expect(updated.enabled).toBe(false);
    const forbidden = await restError(client.getSecret("rt-one"));
    expect(forbidden.statusCode).toBe(403);
    expect(forbidden.code).toBe("Forbidden");

    const poller = await client.beginDeleteSecret("rt-one");
    const deleted = await poller.pollUntilDone();
    expect(deleted.properties.recoveryId).toBe(`${vault.url}/deletedsecrets/rt-one`);
    expect((await restError(client.getSecret("rt-one"))).statusCode).toBe(404);
    expect((await restError(client.setSecret("rt-one", "v3"))).statusCode).toBe(409);
    await client.purgeDeletedSecret("rt-one");
    expect((await client.setSecret("rt-one", "v4")).value).toBe("v4");
    expect(vault.allValues()).toEqual(expect.arrayContaining(["v4"]));
  });

  it("answers 404 as a RestError and challenges unauthenticated calls", async () => {
    const missing = await restError(secretClient().getSecret("does-not-exist"));
    expect(missing.statusCode).toBe(404);
    expect(missing.code).toBe("SecretNotFound");

    const anonymous = await fetch(`${vault.url}/secrets/x?api-version=2025-07-01`, { dispatcher });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toContain(`login.microsoftonline.com/${TENANT}`);
    const noVersion = await fetch(`${vault.url}/secrets/x`, { dispatcher, headers: { authorization: `Bearer ${VAULT_TOKEN}` } });
    expect(noVersion.status).toBe(400);
  });

  it("injects HTTP failures and network failures", async () => {
    const client = secretClient(0);
    await client.setSecret("flaky", "x");
    vault.setFailure({ status: 503, times: 1 });
    expect((await restError(client.getSecret("flaky"))).statusCode).toBe(503);
    expect((await client.getSecret("flaky")).value).toBe("x");

    vault.setDown(true);
    await expect(client.getSecret("flaky")).rejects.toThrow();
    vault.setDown(false);
    expect((await client.getSecret("flaky")).value).toBe("x");

    vault.resetStats();
    await client.getSecret("flaky");
    const stats = await fetch(`${vault.url}/_fake/stats`, { dispatcher });
    expect(await stats.json()).toMatchObject({ get: 1, set: 0 });
  });
});

describe("FakeKeyVault hangs and hooks", () => {
  const auth = { authorization: `Bearer ${VAULT_TOKEN}` };

  it("hangs the next secret requests, or all until hang(0), and stop() still closes promptly", async () => {
    const client = secretClient(0);
    await client.setSecret("hung", "x");
    vault.hang(1);
    const hung = fetch(`${vault.url}/secrets/hung?api-version=7.5`, { dispatcher, headers: auth, signal: AbortSignal.timeout(300) });
    await expect(hung).rejects.toThrow(/abort|timeout/i);
    expect((await client.getSecret("hung")).value).toBe("x");

    const own = new FakeKeyVault({ certPem: cert.certPem, keyPem: cert.keyPem, acceptedToken: VAULT_TOKEN, tenantId: TENANT });
    await own.start();
    const ownAgent = new Agent({ connect: { ca: cert.certPem } });
    try {
      own.hang("all");
      const get = () => fetch(`${own.url}/secrets/a?api-version=7.5`, { dispatcher: ownAgent, headers: auth });
      const pending = [get(), get()].map((p) => p.then(() => "answered", () => "closed"));
      await expect.poll(() => own.hanging).toBe(2);
      own.hang(0);
      expect((await get()).status).toBe(404);

      const started = Date.now();
      await own.stop();
      expect(Date.now() - started).toBeLessThan(1000);
      expect(await Promise.all(pending)).toEqual(["closed", "closed"]);
      expect(own.hanging).toBe(0);
    } finally {
      await own.stop();
      await ownAgent.close();
    }
  });

  it("awaits onRequest between a client's requests, where putSecret can race the client's write", async () => {
    const client = secretClient(0);
    await client.setSecret("raced", "v1", { tags: { writer: "seed" } });
    const seen: SecretRequestInfo[] = [];
    let raced = false;
    // A fresh client's first request carries no token; only authenticated requests reach the hook.
    const racer = secretClient(0);
    vault.onRequest(async (info) => {
      seen.push(info);
      // Yielding first proves the fake waits: otherwise the client's PUT would land before "theirs".
      await sleep(20);
      if (info.method === "PUT" && info.name === "raced" && !raced) {
        raced = true;
        vault.putSecret("raced", "theirs", { tags: { writer: "other" }, contentType: "text/plain" });
      }
    });
    let readVersion: string | undefined;
    try {
      readVersion = (await racer.getSecret("raced")).properties.version;
      await racer.setSecret("raced", "mine", { tags: { writer: "me" } });
      await racer.getSecret("raced", { version: readVersion ?? "" });
    } finally {
      vault.onRequest(null);
    }
    expect(seen).toEqual([
      { method: "GET", name: "raced", version: undefined },
      { method: "PUT", name: "raced", version: undefined },
      { method: "GET", name: "raced", version: readVersion },
    ]);

    const versions: SecretProperties[] = [];
    for await (const p of client.listPropertiesOfSecretVersions("raced")) versions.push(p);
    expect(versions.map((v) => v.tags?.writer)).toEqual(["seed", "other", "me"]);
    expect(versions.map((v) => v.contentType)).toEqual([undefined, "text/plain", undefined]);
    const created = versions.map((v) => v.createdOn?.getTime() ?? Number.NaN);
    expect(created.every((t, i) => i === 0 || t >= (created[i - 1] ?? Number.NaN))).toBe(true);
    expect(vault.peekLatest("raced")).toMatchObject({ value: "mine", versions: 3 });
  });

  it("putSecret creates or adds a version without stats, and never recovers a deleted secret", async () => {
    vault.resetStats();
    const version = vault.putSecret("direct", "one", { tags: { a: "b" } });
    expect(version).toMatch(/^[0-9a-f]{32}$/);
    vault.putSecret("DIRECT", "two");
    expect(vault.peekLatest("direct")).toMatchObject({ value: "two", versions: 2 });
    expect(vault.stats.set).toBe(0);
    expect(() => vault.putSecret("bad_name", "x")).toThrow(/invalid name/);

    const client = secretClient(0);
    expect((await client.getSecret("direct", { version })).value).toBe("one");
    await (await client.beginDeleteSecret("direct")).pollUntilDone();
    expect(() => vault.putSecret("direct", "three")).toThrow(/deleted but recoverable/);
    expect(vault.peekLatest("direct")).toBeUndefined();
  });
});

const T0 = Date.parse("2026-06-01T12:00:00.700Z");

describe("FakeDefender over HTTPS", () => {
  let clockMs = T0;
  let defender: FakeDefender;

  beforeAll(async () => {
    defender = new FakeDefender({
      certPem: cert.certPem,
      keyPem: cert.keyPem,
      clock: () => clockMs,
      // "tok:<tenant>" stands for a valid token of that tenant.
      verifyAccessToken: async (token) =>
        token.startsWith("tok:") ? { tid: token.slice(4), aud: DEFENDER_AUDIENCES[0] ?? "", exp: Math.floor(Date.now() / 1000) + 3600 } : null,
    });
    await defender.start();
  });
  afterAll(async () => {
    await defender?.stop();
  });
  beforeEach(() => {
    clockMs = T0;
    defender.setClockOffset(0);
    defender.setNextLinkPaging(false);
  });

  interface Answer {
    status: number;
    header(name: string): string | null;
    text: string;
  }
  async function call(tenant: string, pathOrUrl: string): Promise<Answer> {
    const url = pathOrUrl.startsWith("https://") ? pathOrUrl : `${defender.url}${pathOrUrl}`;
    const res = await fetch(url, { dispatcher, headers: { authorization: `Bearer tok:${tenant}` } });
    return { status: res.status, header: (name) => res.headers.get(name), text: await res.text() };
  }
  type Page = { value: MdeAlert[]; "@odata.nextLink"?: string };
  const page = (a: Answer): Page => JSON.parse(a.text) as Page;
  const ids = (a: Answer): string[] => page(a).value.map((x) => x.id);
  const alertAt = (id: string, lastUpdateTime: string): MdeAlert => makeAlert({ id, lastUpdateTime });
  const versionKey = (a: MdeAlert): string => `${a.id}@${a.lastUpdateTime}`;
  const backlog = (tenant: string, count: number): MdeAlert[] => {
    const alerts = generateAlerts(tenant, count, { start: new Date("2026-06-01T10:00:00Z"), spacingMs: 1000 });
    defender.addAlerts(tenant, alerts);
    return defender.alerts(tenant);
  };
  /** Reads every page of a query by $skip, as a client that ignores nextLink does. */
  async function readBySkip(tenant: string, filter: string | null, top: number): Promise<string[]> {
    const got: string[] = [];
    for (let skip = 0; ; skip += top) {
      const q = new URLSearchParams({ $top: String(top), $skip: String(skip) });
      if (filter !== null) q.set("$filter", filter);
      const batch = ids(await call(tenant, `/api/alerts?${q.toString()}`));
      got.push(...batch);
      if (batch.length < top) return got;
    }
  }

  it("dates every response, errors included, from its own skewable clock", async () => {
    const tenant = randomUUID();
    expect(defender.now()).toBe(T0);
    const ok = await call(tenant, "/api/alerts");
    expect(ok.status).toBe(200);
    expect(ok.header("date")).toBe("Mon, 01 Jun 2026 12:00:00 GMT");
    expect(defender.requests(tenant).at(-1)?.at).toBe(T0);

    defender.setClockOffset(-3_600_000);
    expect(defender.now()).toBe(T0 - 3_600_000);
    const answers = [
      await call(tenant, "/api/alerts?$orderby=x"),
      await fetch(`${defender.url}/api/alerts`, { dispatcher }),
      await fetch(`${defender.url}/nowhere`, { dispatcher }),
      await fetch(`${defender.url}/_fake/stats`, { dispatcher }),
    ];
    expect(answers.map((a) => a.status)).toEqual([400, 401, 404, 200]);
    for (const a of answers) {
      const date = "header" in a ? a.header("date") : a.headers.get("date");
      expect(date).toBe("Mon, 01 Jun 2026 11:00:00 GMT");
    }

    const set = await fetch(`${defender.url}/_fake/clock-offset`, { dispatcher, method: "POST", body: JSON.stringify({ ms: 90_000 }) });
    expect(await set.json()).toEqual({ now: T0 + 90_000 });
    expect(defender.now()).toBe(T0 + 90_000);
    const bad = await fetch(`${defender.url}/_fake/clock-offset`, { dispatcher, method: "POST", body: JSON.stringify({ ms: "soon" }) });
    expect(bad.status).toBe(400);

    const realTime = new FakeDefender({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken: async () => null });
    const before = Date.now();
    const now = realTime.now();
    expect(now).toBeGreaterThanOrEqual(before);
    expect(now).toBeLessThanOrEqual(Date.now());
  });

  it("hides alerts until their ingestion time, serving the previous version of an updated alert meanwhile", async () => {
    const tenant = randomUUID();
    const window = "/api/alerts?$filter=lastUpdateTime ge 2026-06-01T11:00:00Z";
    defender.addAlerts(tenant, [alertAt("early", "2026-06-01T11:00:00Z")]);
    defender.addAlerts(tenant, [alertAt("late", "2026-06-01T11:00:01Z"), alertAt("later", "2026-06-01T11:00:02Z")], {
      visibleAt: (a) => (a.id === "late" ? T0 + 60_000 : T0 + 120_000),
    });
    defender.addAlerts(tenant, [alertAt("fixed", "2026-06-01T11:00:03Z")], { visibleAt: T0 + 30_000 });
    expect(defender.alerts(tenant).map((a) => a.id)).toEqual(["early", "late", "later", "fixed"]);

    expect(ids(await call(tenant, window))).toEqual(["early"]);
    clockMs = T0 + 60_000;
    expect(ids(await call(tenant, window))).toEqual(["early", "late", "fixed"]);
    defender.setClockOffset(60_000);
    expect(ids(await call(tenant, window))).toEqual(["early", "late", "later", "fixed"]);
    expect(ids(await call(tenant, "/api/alerts?$filter=lastUpdateTime gt 2026-06-01T11:00:00Z and lastUpdateTime lt 2026-06-01T11:00:02Z"))).toEqual(["late"]);

    defender.setClockOffset(0);
    clockMs = T0 + 200_000;
    defender.updateAlert(tenant, "early", { lastUpdateTime: "2026-06-01T11:05:00Z", status: "Resolved" }, { visibleAt: T0 + 260_000 });
    const before = page(await call(tenant, window)).value;
    expect(before.map((a) => [a.id, a.lastUpdateTime])).toEqual([
      ["early", "2026-06-01T11:00:00Z"],
      ["late", "2026-06-01T11:00:01Z"],
      ["later", "2026-06-01T11:00:02Z"],
      ["fixed", "2026-06-01T11:00:03Z"],
    ]);
    clockMs = T0 + 260_000;
    const after = page(await call(tenant, window)).value;
    expect(after.map((a) => [a.id, a.lastUpdateTime, a.status])).toEqual([
      ["late", "2026-06-01T11:00:01Z", expect.any(String)],
      ["later", "2026-06-01T11:00:02Z", expect.any(String)],
      ["fixed", "2026-06-01T11:00:03Z", expect.any(String)],
      ["early", "2026-06-01T11:05:00Z", "Resolved"],
    ]);

    // Without visibleAt an update is served at once, and retires every older version.
    defender.updateAlert(tenant, "early", { lastUpdateTime: "2026-06-01T11:06:00Z", status: "InProgress" });
    clockMs = T0 + 200_000;
    expect(page(await call(tenant, window)).value.filter((a) => a.id === "early").map((a) => a.lastUpdateTime)).toEqual(["2026-06-01T11:06:00Z"]);
  });

  it("counts the alert versions it served and the pages it answered, also over the control API", async () => {
    const tenant = randomUUID();
    const [a0, a1, a2] = backlog(tenant, 3);
    if (a0 === undefined || a1 === undefined || a2 === undefined) throw new Error("backlog");
    await call(tenant, "/api/alerts?$top=2");
    await call(tenant, "/api/alerts?$top=2&$skip=1");
    expect((await call(tenant, "/api/alerts?$top=0")).status).toBe(400);
    expect(defender.pageRequests(tenant)).toBe(2);
    expect(defender.served(tenant)).toEqual(new Map([[versionKey(a0), 1], [versionKey(a1), 2], [versionKey(a2), 1]]));

    const moved = defender.updateAlert(tenant, a0.id, { lastUpdateTime: "2026-06-01T10:10:00Z" });
    await call(tenant, "/api/alerts");
    const served = defender.served(tenant);
    expect([served.get(versionKey(a0)), served.get(versionKey(moved)), served.get(versionKey(a2))]).toEqual([1, 1, 2]);

    const remote = await fetch(`${defender.url}/_fake/served?tenantId=${tenant}`, { dispatcher });
    expect(await remote.json()).toEqual({ served: Object.fromEntries(served), pageRequests: 3 });
    expect((await fetch(`${defender.url}/_fake/served`, { dispatcher })).status).toBe(400);
    expect(await (await fetch(`${defender.url}/_fake/served?tenantId=${randomUUID()}`, { dispatcher })).json()).toEqual({ served: {}, pageRequests: 0 });

    defender.resetStats();
    expect(defender.served(tenant).size).toBe(0);
    expect(defender.pageRequests(tenant)).toBe(0);
  });

  it("calls afterPage between reads, so a test can change the window while it is paged", async () => {
    const tenant = randomUUID();
    const [a, b, c, d] = backlog(tenant, 4).map((x) => x.id);
    const seen: PageInfo[] = [];
    defender.afterPage(tenant, (info) => {
      seen.push(info);
      if (info.index !== 0) return;
      // a moves to the end, b disappears, e arrives in between.
      defender.updateAlert(tenant, a ?? "", { lastUpdateTime: "2026-06-01T10:30:00Z" });
      expect(defender.removeAlert(tenant, b ?? "")).toBe(true);
      defender.addAlerts(tenant, [alertAt("e", "2026-06-01T10:20:00Z")]);
    });
    try {
      expect(ids(await call(tenant, "/api/alerts?$top=2"))).toEqual([a, b]);
      expect(ids(await call(tenant, "/api/alerts?$top=2&$skip=2"))).toEqual(["e", a]);
      expect(ids(await call(tenant, "/api/alerts"))).toEqual([c, d, "e", a]);
      expect(seen.map((i) => [i.index, i.query.get("$skip"), i.served])).toEqual([
        [0, null, 2],
        [1, "2", 2],
        [2, null, 4],
      ]);
      expect(defender.removeAlert(tenant, b ?? "")).toBe(false);

      defender.afterPage(tenant, () => {
        throw new Error("hook failed");
      });
      expect((await call(tenant, "/api/alerts")).status).toBe(500);
      expect(defender.pageRequests(tenant)).toBe(3);
    } finally {
      defender.afterPage(tenant, null);
    }
    await call(tenant, "/api/alerts");
    expect(seen).toHaveLength(3);
  });

  it("serves a shuffled order that is stable for $skip paging yet filters by time exactly", async () => {
    const tenant = randomUUID();
    const sorted = backlog(tenant, 40).map((a) => a.id);
    defender.setOrder(tenant, "shuffled");
    const pass1 = await readBySkip(tenant, null, 7);
    expect(await readBySkip(tenant, null, 7)).toEqual(pass1);
    expect(pass1).not.toEqual(sorted);
    expect([...pass1].sort()).toEqual([...sorted].sort());

    const all = defender.alerts(tenant);
    const filter = `lastUpdateTime ge ${all[10]?.lastUpdateTime} and lastUpdateTime lt ${all[20]?.lastUpdateTime}`;
    const window = await readBySkip(tenant, filter, 3);
    expect(window).not.toEqual(sorted.slice(10, 20));
    expect([...window].sort()).toEqual(sorted.slice(10, 20).sort());

    defender.setOrder(tenant, "sorted");
    expect(await readBySkip(tenant, null, 7)).toEqual(sorted);
  });

  it("hands out looping and foreign nextLinks on demand", async () => {
    const tenant = randomUUID();
    backlog(tenant, 5);
    expect((await call(tenant, "/api/alerts?$skiptoken=B")).status).toBe(400);

    defender.setNextLinkPaging("loop");
    const a = await call(tenant, "/api/alerts?$top=2");
    const toB = page(a)["@odata.nextLink"] ?? "";
    expect(new URL(toB).origin).toBe(defender.url);
    expect([...new URL(toB).searchParams]).toEqual([["$top", "2"], ["$skiptoken", "B"]]);
    const b = await call(tenant, toB);
    expect(ids(b)).toEqual(ids(a));
    const toA = page(b)["@odata.nextLink"] ?? "";
    expect([...new URL(toA).searchParams]).toEqual([["$top", "2"]]);
    const again = await call(tenant, toA);
    expect(ids(again)).toEqual(ids(a));
    expect(page(again)["@odata.nextLink"]).toBe(toB);

    defender.setNextLinkPaging("foreign");
    expect(page(await call(tenant, "/api/alerts?$top=2&$skip=2"))["@odata.nextLink"]).toBe("https://attacker.example.test/api/alerts?$skip=4");
    expect((await call(tenant, "/api/alerts?$skiptoken=B")).status).toBe(400);

    defender.setNextLinkPaging(true);
    expect(new URL(page(await call(tenant, "/api/alerts?$top=2"))["@odata.nextLink"] ?? "").searchParams.get("$skip")).toBe("2");
  });

  it("injects short pages, corrupt pages and poisoned alerts", async () => {
    const tenant = randomUUID();
    const [a0, a1, a2] = backlog(tenant, 5);
    if (a0 === undefined || a1 === undefined || a2 === undefined) throw new Error("backlog");
    defender.setNextLinkPaging(true);

    defender.shortPages(tenant, { times: 1, size: 1 });
    const short = await call(tenant, "/api/alerts?$top=3");
    expect(ids(short)).toEqual([a0.id]);
    expect(page(short)).not.toHaveProperty("@odata.nextLink");
    const normal = await call(tenant, "/api/alerts?$top=3");
    expect(ids(normal)).toEqual([a0.id, a1.id, a2.id]);
    expect(page(normal)).toHaveProperty("@odata.nextLink");
    // A service that caps its pages below $top links on from a short page while more match, to just past what it served.
    defender.shortPages(tenant, { times: 2, size: 2, linked: true });
    const capped = await call(tenant, "/api/alerts?$top=3");
    expect(ids(capped)).toEqual([a0.id, a1.id]);
    expect(new URL(page(capped)["@odata.nextLink"] ?? "").searchParams.get("$skip")).toBe("2");
    const end = await call(tenant, "/api/alerts?$top=3&$skip=3");
    expect(ids(end)).toHaveLength(2);
    expect(page(end)).not.toHaveProperty("@odata.nextLink");

    defender.resetStats();
    defender.corruptPages(tenant, { times: 1 });
    const corrupt = await call(tenant, "/api/alerts?$top=3");
    expect(corrupt.status).toBe(200);
    expect(corrupt.header("content-type")).toContain("application/json");
    expect(() => JSON.parse(corrupt.text) as unknown).toThrow();
    expect(defender.pageRequests(tenant)).toBe(1);
    expect(defender.served(tenant).size).toBe(0);
    expect(ids(await call(tenant, "/api/alerts?$top=3"))).toEqual([a0.id, a1.id, a2.id]);

    defender.resetStats();
    defender.poisonAlert(tenant, a1.id, '{"title":"no id"}');
    const poisoned = await call(tenant, "/api/alerts?$top=3");
    expect(poisoned.text).toContain(`,{"title":"no id"},`);
    expect(page(poisoned).value[1]).toEqual({ title: "no id" });
    expect(defender.served(tenant).has(versionKey(a1))).toBe(false);
    expect(defender.served(tenant).get(versionKey(a0))).toBe(1);

    const broken = '{"id":"x","lastUpdateTime":"2026-01-01T00:00:00Z","n":tru}';
    defender.poisonAlert(tenant, a1.id, broken);
    const unparsable = await call(tenant, "/api/alerts?$top=3");
    expect(unparsable.text).toContain(broken);
    expect(() => JSON.parse(unparsable.text) as unknown).toThrow();
    // Filtering still uses the stored lastUpdateTime, not the poisoned text's.
    expect((await call(tenant, "/api/alerts?$filter=lastUpdateTime lt 2026-06-01T00:00:00Z")).text).not.toContain(broken);
    expect((await call(tenant, `/api/alerts?$filter=lastUpdateTime ge ${a1.lastUpdateTime}&$top=1`)).text).toContain(broken);

    defender.poisonAlert(tenant, a1.id, null);
    expect(ids(await call(tenant, "/api/alerts?$top=3"))).toEqual([a0.id, a1.id, a2.id]);
  });

  it("claims page faults in arrival order, whatever the latency", async () => {
    const tenant = randomUUID();
    backlog(tenant, 3);
    defender.setLatency(150, tenant);
    try {
      defender.corruptPages(tenant, { times: 1 });
      const first = call(tenant, "/api/alerts");
      await expect.poll(() => defender.stats.byTenant[tenant]).toBe(1);
      defender.setLatency(0, tenant);
      const second = await call(tenant, "/api/alerts");
      expect(ids(second)).toHaveLength(3);
      const firstText = (await first).text;
      expect(() => JSON.parse(firstText) as unknown).toThrow();
    } finally {
      defender.setLatency(0, tenant);
    }
  });

  it("enforces a sliding per-minute and per-hour quota on its own clock", async () => {
    const tenant = randomUUID();
    const status = async (): Promise<[number, string | null]> => {
      const res = await call(tenant, "/api/alerts");
      return [res.status, res.header("retry-after")];
    };
    defender.enforceQuota(tenant, { perMinute: 2 });
    expect(await status()).toEqual([200, null]);
    clockMs = T0 + 10_000;
    expect(await status()).toEqual([200, null]);
    clockMs = T0 + 20_000;
    const rejected = await call(tenant, "/api/alerts");
    expect([rejected.status, rejected.header("retry-after")]).toEqual([429, "40"]);
    expect(JSON.parse(rejected.text)).toMatchObject({ error: { code: "TooManyRequests" } });
    clockMs = T0 + 59_500;
    expect(await status()).toEqual([429, "1"]);
    clockMs = T0 + 60_000;
    expect(await status()).toEqual([200, null]);
    // Rejected requests took no slot: the next one frees when the T0+10s request ages out.
    expect(await status()).toEqual([429, "10"]);

    defender.enforceQuota(tenant, { perMinute: 10, perHour: 3 });
    clockMs = T0;
    for (let i = 0; i < 3; i++) expect(await status()).toEqual([200, null]);
    clockMs = T0 + 120_000;
    expect(await status()).toEqual([429, "3480"]);
    expect(() => defender.enforceQuota(tenant, { perMinute: 0 })).toThrow();

    defender.enforceQuota(tenant, null);
    expect(await status()).toEqual([200, null]);
  });
});

function undiciNetworkClient(): INetworkModule {
  const send = async <T>(url: string, method: "GET" | "POST", options?: NetworkRequestOptions): Promise<NetworkResponse<T>> => {
    const res = await fetch(url, { method, headers: options?.headers ?? {}, body: options?.body ?? null, dispatcher });
    const headers: Record<string, string> = {};
    res.headers.forEach((value, key) => {
      headers[key] = value;
    });
    const text = await res.text();
    return { status: res.status, headers, body: (text ? JSON.parse(text) : {}) as T };
  };
  return {
    sendGetRequestAsync: <T>(url: string, options?: NetworkRequestOptions) => send<T>(url, "GET", options),
    sendPostRequestAsync: <T>(url: string, options?: NetworkRequestOptions) => send<T>(url, "POST", options),
  };
}

function msalApp(tenant: string, clientSecret = CLIENT_SECRET): ConfidentialClientApplication {
  return new ConfidentialClientApplication({
    auth: { clientId: CLIENT_ID, clientSecret, authority: `${entra.url}/${tenant}`, knownAuthorities: [entra.host] },
    system: { networkClient: undiciNetworkClient() },
  });
}

/** Drives /authorize like a browser would and returns the redirect's query. */
async function consent(cca: ConfidentialClientApplication, nonce?: string) {
  const { verifier, challenge } = await new CryptoProvider().generatePkceCodes();
  const state = "st-" + Math.random().toString(36).slice(2);
  const url = await cca.getAuthCodeUrl({
    scopes: SCOPES,
    redirectUri: REDIRECT_URI,
    codeChallenge: challenge,
    codeChallengeMethod: "S256",
    state,
    prompt: "consent",
    ...(nonce !== undefined ? { nonce } : {}),
  });
  const res = await fetch(url, { redirect: "manual", dispatcher });
  expect(res.status).toBe(302);
  const location = new URL(res.headers.get("location") ?? "");
  expect(`${location.origin}${location.pathname}`).toBe(REDIRECT_URI);
  expect(location.searchParams.get("state")).toBe(state);
  return { query: location.searchParams, verifier };
}

function cachedRefreshTokens(cca: ConfidentialClientApplication): string[] {
  const cache = JSON.parse(cca.getTokenCache().serialize()) as { RefreshToken?: Record<string, { secret: string }> };
  return Object.values(cache.RefreshToken ?? {}).map((t) => t.secret);
}

/** MSAL types errorNo as string but copies error_codes[0] through unchanged, so at run time it is a number. */
async function serverError(promise: Promise<unknown>): Promise<ServerError> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof ServerError)) throw new Error(`expected a ServerError, got ${String(err)}`);
  return err;
}

describe("FakeEntra with the real MSAL ConfidentialClientApplication", () => {
  it("runs auth code + PKCE, then rotates the refresh token", async () => {
    entra.resetStats();
    const cca = msalApp(TENANT);
    const { query, verifier } = await consent(cca, "n-123");
    expect(entra.lastAuthorizeParams()?.get("code_challenge_method")).toBe("S256");
    const code = query.get("code") ?? "";

    const result = await cca.acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier, nonce: "n-123" });
    expect(result.tenantId).toBe(TENANT);
    expect(result.idTokenClaims).toMatchObject({ aud: CLIENT_ID, tid: TENANT, nonce: "n-123" });
    expect(await entra.verifyAccessToken(result.accessToken)).toMatchObject({
      tid: TENANT,
      aud: "https://api.securitycenter.microsoft.com",
      scp: "Alert.Read",
    });

    const [first] = cachedRefreshTokens(cca);
    expect(first).toBeDefined();
    const fresh = msalApp(TENANT);
    const refreshed = await fresh.acquireTokenByRefreshToken({ refreshToken: first ?? "", scopes: SCOPES, forceCache: true });
    expect(refreshed?.idTokenClaims).not.toHaveProperty("nonce");
    const [second] = cachedRefreshTokens(fresh);
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
    // Entra keeps the old refresh token valid after rotation.
    expect(await msalApp(TENANT).acquireTokenByRefreshToken({ refreshToken: first ?? "", scopes: SCOPES })).not.toBeNull();

    const replay = await serverError(cca.acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier }));
    expect(String(replay.errorNo)).toBe("54005");
    expect(entra.stats).toEqual({ authorizeRequests: 1, tokenRequests: { authorization_code: 2, refresh_token: 2 } });
    expect(entra.issuedSecrets()).toEqual(expect.arrayContaining([code, first, second, result.accessToken]));

    entra.failRefresh(TENANT, { status: 400, error: "invalid_grant", errorCode: 700082 }, 1);
    const expired = await serverError(msalApp(TENANT).acquireTokenByRefreshToken({ refreshToken: second ?? "", scopes: SCOPES }));
    expect(expired.errorCode).toBe("invalid_grant");
    expect(String(expired.errorNo)).toBe("700082");

    entra.revokeRefreshTokens(TENANT);
    const revoked = await serverError(msalApp(TENANT).acquireTokenByRefreshToken({ refreshToken: second ?? "", scopes: SCOPES }));
    expect(String(revoked.errorNo)).toBe("50173");
  });

  it("rejects a wrong PKCE verifier, a bad client secret and a code redeemed at another tenant", async () => {
    const cca = msalApp(TENANT);
    const { query, verifier } = await consent(cca);
    const code = query.get("code") ?? "";
    const pkce = await serverError(
      cca.acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier.slice(1) + "x" }),
    );
    expect(pkce.errorCode).toBe("invalid_grant");
    expect(String(pkce.errorNo)).toBe("501481");

    const badSecret = await serverError(
      msalApp(TENANT, "wrong").acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier }),
    );
    expect(badSecret.errorCode).toBe("invalid_client");
    expect(String(badSecret.errorNo)).toBe("7000215");

    const wrongTenant = await serverError(
      msalApp(OTHER_TENANT).acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier }),
    );
    expect(String(wrongTenant.errorNo)).toBe("700005");
  });

  it("lets a test choose who consents, deny consent, and refuses unregistered redirect URIs", async () => {
    const cca = msalApp("organizations");
    entra.setConsentBehaviour("organizations", { kind: "approve", user: { homeTenantId: OTHER_TENANT } });
    const { query, verifier } = await consent(cca);
    const result = await cca.acquireTokenByCode({ code: query.get("code") ?? "", scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier });
    expect(result.tenantId).toBe(OTHER_TENANT);

    entra.setConsentBehaviour("organizations", { kind: "deny", error: "access_denied" });
    const denied = await consent(cca);
    expect(denied.query.get("error")).toBe("access_denied");
    expect(denied.query.get("code")).toBeNull();

    const bad = new URL(`${entra.url}/${TENANT}/oauth2/v2.0/authorize`);
    bad.search = new URLSearchParams({ client_id: CLIENT_ID, redirect_uri: "https://evil.example/cb", response_type: "code" }).toString();
    const res = await fetch(bad, { redirect: "manual", dispatcher });
    expect(res.status).toBe(400);
    expect(res.headers.get("location")).toBeNull();
    expect(await res.text()).toContain("AADSTS50011");
  });

  it("publishes metadata and keys, tampers id tokens, expires codes by the fake clock and fails on demand", async () => {
    const metadata = (await (await fetch(`${entra.url}/${TENANT}/v2.0/.well-known/openid-configuration`, { dispatcher })).json()) as {
      issuer: string;
      jwks_uri: string;
    };
    expect(metadata.issuer).toBe(`${entra.url}/${TENANT}/v2.0`);
    const jwks = createLocalJWKSet((await (await fetch(metadata.jwks_uri, { dispatcher })).json()) as JSONWebKeySet);

    const redeem = async (cca: ConfidentialClientApplication) => {
      const { query, verifier } = await consent(cca);
      return cca.acquireTokenByCode({ code: query.get("code") ?? "", scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier });
    };
    const good = await redeem(msalApp(TENANT));
    expect((await jwtVerify(good.idToken, jwks, { issuer: metadata.issuer, audience: CLIENT_ID })).payload.tid).toBe(TENANT);

    entra.idTokenOverrides(TENANT, { badSignature: true }, 1);
    const forged = await redeem(msalApp(TENANT));
    await expect(jwtVerify(forged.idToken, jwks)).rejects.toThrow();
    entra.idTokenOverrides(TENANT, { aud: "someone-else" }, 1);
    expect((await redeem(msalApp(TENANT))).idTokenClaims).toMatchObject({ aud: "someone-else" });

    const start = Date.now();
    try {
      const cca = msalApp(TENANT);
      const { query, verifier } = await consent(cca);
      entra.setClock(() => start + 11 * 60_000);
      const late = await serverError(
        cca.acquireTokenByCode({ code: query.get("code") ?? "", scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier }),
      );
      expect(String(late.errorNo)).toBe("70008");
    } finally {
      entra.setClock(Date.now);
    }

    entra.failAllTokenRequests({ status: 503, error: "temporarily_unavailable" }, 1);
    const outage = await serverError(redeem(msalApp(TENANT)));
    expect(outage.errorCode).toBe("temporarily_unavailable");
    // ServerError.status stays undefined: MSAL reads it from the JSON body, where Entra never puts it.
    expect(outage.status).toBeUndefined();
    entra.clearFailures();

    const stats = (await (await fetch(`${entra.url}/_fake/stats`, { dispatcher })).json()) as { authorizeRequests: number };
    expect(stats.authorizeRequests).toBeGreaterThan(0);
  });
});

describe("FakeEntra interactive sign-in page", () => {
  afterAll(() => {
    entra.setInteractive(false);
  });

  /** An authorize URL as MSAL builds it, plus the PKCE verifier and state that go with it. */
  async function authorizeUrl(cca: ConfidentialClientApplication, state: string) {
    const { verifier, challenge } = await new CryptoProvider().generatePkceCodes();
    const url = await cca.getAuthCodeUrl({
      scopes: SCOPES,
      redirectUri: REDIRECT_URI,
      codeChallenge: challenge,
      codeChallengeMethod: "S256",
      state,
      prompt: "consent",
      responseMode: "query",
    });
    return { url, verifier };
  }

  async function get(url: string) {
    const res = await fetch(url, { redirect: "manual", dispatcher });
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  async function post(action: string, body: URLSearchParams) {
    const res = await fetch(action, { method: "POST", body, redirect: "manual", dispatcher });
    return { status: res.status, location: res.headers.get("location"), text: await res.text() };
  }

  it("shows an escaped, self-contained page instead of redirecting, and Accept issues a redeemable code", async () => {
    entra.setInteractive(true);
    const cca = msalApp(TENANT);
    const state = `st-"><script>alert(1)</script>&'`;
    const { url, verifier } = await authorizeUrl(cca, state);
    const page = await get(url);
    expect(page.status).toBe(200);
    expect(page.headers.get("location")).toBeNull();
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("content-security-policy")).toBe(
      "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https://app.example.test; frame-ancestors 'none'; base-uri 'none'",
    );
    expect(page.text).toContain("<title>Sign in (simulated Microsoft Entra ID)</title>");
    expect(page.text).toContain("Simulated Microsoft cloud for local testing");
    for (const shown of [TENANT, CLIENT_ID, "https://api.securitycenter.microsoft.com/Alert.Read", "offline_access", ">Accept<", ">Decline<"]) {
      expect(page.text).toContain(shown);
    }
    expect(page.text).not.toContain("<script>");
    expect(page.text).toContain("&#60;script&#62;");
    // No external assets: nothing to fetch, nothing to run.
    expect(page.text).not.toMatch(/<(script|link|img|iframe)\b|\b(src|href)=/i);

    const { action, body } = signInFormSubmission(url, page.text, "accept");
    expect(action).toBe(`${entra.url}/${TENANT}/oauth2/v2.0/authorize`);
    expect(body.get("state")).toBe(state);
    const accepted = await post(action, body);
    expect(accepted.status).toBe(302);
    const callback = new URL(accepted.location ?? "");
    expect(`${callback.origin}${callback.pathname}`).toBe(REDIRECT_URI);
    expect(callback.searchParams.get("state")).toBe(state);
    const code = callback.searchParams.get("code") ?? "";
    const result = await cca.acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier });
    expect(result.tenantId).toBe(TENANT);
  });

  it("Decline redirects with access_denied (AADSTS65004) and the state, and issues no code", async () => {
    entra.setInteractive(true);
    const { url } = await authorizeUrl(msalApp(TENANT), "st-decline");
    const page = await get(url);
    const secretsBefore = entra.issuedSecrets().length;
    const { action, body } = signInFormSubmission(url, page.text, "decline");
    const declined = await post(action, body);
    expect(declined.status).toBe(302);
    const callback = new URL(declined.location ?? "");
    expect(`${callback.origin}${callback.pathname}`).toBe(REDIRECT_URI);
    expect(Object.fromEntries(callback.searchParams)).toEqual({
      error: "access_denied",
      error_description: "AADSTS65004: User declined to consent to access the app.",
      state: "st-decline",
    });
    expect(entra.issuedSecrets()).toHaveLength(secretsBefore);
  });

  it("re-validates the POST: tampered parameters meet the same error page or error redirect as a GET", async () => {
    entra.setInteractive(true);
    const { url } = await authorizeUrl(msalApp(TENANT), "st-tamper");
    const page = await get(url);
    const { action, body } = signInFormSubmission(url, page.text, "accept");

    const evil = new URLSearchParams(body);
    evil.set("redirect_uri", "https://evil.example/cb");
    const tampered = await post(action, evil);
    expect(tampered.status).toBe(400);
    expect(tampered.location).toBeNull();
    expect(tampered.text).toContain("AADSTS50011");

    const noPkce = new URLSearchParams(body);
    noPkce.delete("code_challenge");
    const pkce = await post(action, noPkce);
    expect(pkce.status).toBe(302);
    expect(new URL(pkce.location ?? "").searchParams.get("error")).toBe("invalid_request");

    const undecided = new URLSearchParams(body);
    undecided.delete("fake_consent_decision");
    expect((await post(action, undecided)).status).toBe(400);
    const json = await fetch(action, { method: "POST", body: JSON.stringify(Object.fromEntries(body)), headers: { "content-type": "application/json" }, redirect: "manual", dispatcher });
    expect(json.status).toBe(400);
    expect(json.headers.get("location")).toBeNull();
  });

  it("Accept still follows setConsentBehaviour, and interactive off redirects at once again", async () => {
    entra.setInteractive(true);
    entra.setConsentBehaviour(OTHER_TENANT, { kind: "approve", user: { preferredUsername: "alice@fabrikam.example" } });
    const { url } = await authorizeUrl(msalApp(OTHER_TENANT), "st-user");
    const page = await get(url);
    expect(page.text).toContain("alice@fabrikam.example");

    entra.setInteractive(false);
    const auto = await get(url);
    expect(auto.status).toBe(302);
    expect(new URL(auto.headers.get("location") ?? "").searchParams.get("code")).toBeTruthy();

    const control = await fetch(`${entra.url}/_fake/interactive`, { method: "POST", body: JSON.stringify({ enabled: true }), dispatcher });
    expect(control.status).toBe(204);
    expect((await get(url)).status).toBe(200);
    entra.setInteractive(false);
  });

  it("serves only the authorize routes over plain HTTP on loopback, and stop() closes that listener", async () => {
    const own = new FakeEntra({
      certPem: cert.certPem,
      keyPem: cert.keyPem,
      clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris: [REDIRECT_URI] }],
    });
    await own.start();
    try {
      own.setInteractive(true);
      const signIn = await own.startBrowserListener();
      expect(signIn).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(await own.startBrowserListener()).toBe(signIn);
      expect(own.browserUrl).toBe(signIn);

      const cca = new ConfidentialClientApplication({
        auth: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, authority: `${own.url}/${TENANT}`, knownAuthorities: [own.host] },
        system: { networkClient: undiciNetworkClient() },
      });
      const { url: httpsUrl, verifier } = await authorizeUrl(cca, "st-http");
      const built = new URL(httpsUrl);
      const pageUrl = `${signIn}${built.pathname}${built.search}`;
      const page = await fetch(pageUrl, { redirect: "manual" });
      expect(page.status).toBe(200);
      const { action, body } = signInFormSubmission(pageUrl, await page.text(), "accept");
      expect(action.startsWith(`${signIn}/`)).toBe(true);
      const accepted = await fetch(action, { method: "POST", body, redirect: "manual" });
      expect(accepted.status).toBe(302);
      const code = new URL(accepted.headers.get("location") ?? "").searchParams.get("code") ?? "";
      // The code from the HTTP page is redeemed at the HTTPS token endpoint, as MSAL does.
      expect((await cca.acquireTokenByCode({ code, scopes: SCOPES, redirectUri: REDIRECT_URI, codeVerifier: verifier })).tenantId).toBe(TENANT);

      for (const path of [
        `/${TENANT}/oauth2/v2.0/token`,
        `/${TENANT}/discovery/v2.0/keys`,
        `/${TENANT}/v2.0/.well-known/openid-configuration`,
        `/${TENANT}/oauth2/v2.0/logout`,
        "/_fake/stats",
        "/_fake/oauth2/v2.0/authorize",
      ]) {
        const res = await fetch(`${signIn}${path}`, { method: path.endsWith("token") ? "POST" : "GET" });
        expect(res.status, path).toBe(404);
        expect(await res.text(), path).not.toContain("keys");
      }
      const badTenant = await fetch(`${signIn}/not-a-tenant/oauth2/v2.0/authorize`);
      expect(badTenant.status).toBe(400);
      expect(await badTenant.text()).toContain("AADSTS90002");
    } finally {
      await own.stop();
    }
    expect(own.browserUrl).toBeUndefined();
  });
});

describe("FakeDefender alert stream", () => {
  let clockMs = T0;
  let defender: FakeDefender;

  beforeAll(async () => {
    defender = new FakeDefender({
      certPem: cert.certPem,
      keyPem: cert.keyPem,
      clock: () => clockMs,
      verifyAccessToken: async (token) =>
        token.startsWith("tok:") ? { tid: token.slice(4), aud: DEFENDER_AUDIENCES[0] ?? "", exp: Math.floor(Date.now() / 1000) + 3600 } : null,
    });
    await defender.start();
  });
  afterAll(async () => {
    await defender?.stop();
  });

  /** Polls until `done` holds; the stream runs on real timers. */
  async function until(done: () => boolean, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (Date.now() > deadline) throw new Error("condition not reached in time");
      await sleep(20);
    }
  }

  it("adds new, realistic alerts stamped with the fake's clock at about the asked rate, until stopped", async () => {
    const tenant = randomUUID();
    clockMs = T0;
    const startedAt = Date.now();
    defender.streamAlerts(tenant, { perMinute: 6_000, updateShare: 0 });
    await sleep(500);
    const elapsedMs = Date.now() - startedAt;
    defender.streamAlerts(tenant, null);
    expect(defender.streamStatus(tenant)).toBeNull();
    const alerts = defender.alerts(tenant);
    // 100 a second: about 50 in half a second; loose bounds for a busy machine.
    expect(alerts.length).toBeGreaterThanOrEqual(10);
    expect(alerts.length).toBeLessThanOrEqual(Math.ceil((6_000 * elapsedMs) / 60_000) + 1);

    expect(new Set(alerts.map((a) => a.id)).size).toBe(alerts.length);
    for (const alert of alerts) {
      expect(alert).toMatchObject({ status: "New", aadTenantId: tenant, assignedTo: null, resolvedTime: null });
      expect(alert.id).toMatch(/^da\d+_\d+$/);
      expect(alert.lastUpdateTime.startsWith("2026-06-01T12:00:00.7")).toBe(true);
      expect(alert.evidence.length).toBeGreaterThan(0);
    }
    // A frozen clock still gives every arrival its own, rising lastUpdateTime (sub-millisecond digits).
    const stamps = alerts.map((a) => a.lastUpdateTime);
    expect(new Set(stamps).size).toBe(stamps.length);
    expect(new Set(alerts.map((a) => a.title)).size).toBeGreaterThan(1);
    expect(new Set(alerts.map((a) => a.severity)).size).toBeGreaterThan(1);

    const stoppedAt = alerts.length;
    await sleep(100);
    expect(defender.alerts(tenant)).toHaveLength(stoppedAt);

    const page = await fetch(`${defender.url}/api/alerts`, { dispatcher, headers: { authorization: `Bearer tok:${tenant}` } });
    expect(((await page.json()) as { value: unknown[] }).value).toHaveLength(stoppedAt);
  });

  it("turns a share of arrivals into status updates New→InProgress→Resolved with a new lastUpdateTime", async () => {
    const tenant = randomUUID();
    clockMs = T0;
    defender.streamAlerts(tenant, { perMinute: 6_000, updateShare: 0 });
    await until(() => (defender.streamStatus(tenant)?.created ?? 0) >= 20);
    const later = T0 + 3_600_000;
    clockMs = later;
    defender.streamAlerts(tenant, { perMinute: 12_000, updateShare: 0.8 });
    // Until both later states are there: the stream may move one alert on twice before any other once.
    await until(() => ["InProgress", "Resolved"].every((status) => defender.alerts(tenant).some((a) => a.status === status)));
    defender.streamAlerts(tenant, null);

    const alerts = defender.alerts(tenant);
    expect(alerts.map((a) => a.status)).toEqual(expect.arrayContaining(["New", "InProgress", "Resolved"]));
    for (const alert of alerts.filter((a) => a.status !== "New")) {
      expect(Date.parse(alert.lastUpdateTime)).toBe(later);
      expect(alert.assignedTo).toBe("secop@contoso.com");
    }
    for (const alert of alerts.filter((a) => a.status === "Resolved")) {
      expect(alert.resolvedTime).toBe(alert.lastUpdateTime);
      expect(alert.classification).toBe("TruePositive");
    }
  });

  it("is driven by POST /_fake/stream, validates its input, and stop() ends every stream", async () => {
    const tenant = randomUUID();
    const control = async (body: unknown) => {
      const res = await fetch(`${defender.url}/_fake/stream`, { method: "POST", body: JSON.stringify(body), dispatcher });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    const started = await control({ tenantId: tenant, perMinute: 6_000 });
    expect(started).toEqual({ status: 200, json: { tenantId: tenant, stream: { perMinute: 6_000, updateShare: 0.1, created: 0, updated: 0 } } });
    await until(() => defender.alerts(tenant).length > 0);

    expect((await control({ tenantId: tenant, perMinute: -1 })).status).toBe(400);
    expect((await control({ tenantId: tenant, perMinute: 60, updateShare: 2 })).status).toBe(400);
    expect((await control({ perMinute: 60 })).status).toBe(400);
    expect(() => defender.streamAlerts(tenant, { perMinute: Number.NaN })).toThrow();
    // A refused change leaves the running stream as it was.
    expect(defender.streamStatus(tenant)?.perMinute).toBe(6_000);

    expect(await control({ tenantId: tenant, perMinute: 0 })).toEqual({ status: 200, json: { tenantId: tenant, stream: null } });

    const own = new FakeDefender({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken: async () => null });
    await own.start();
    own.streamAlerts(tenant, { perMinute: 6_000 });
    await until(() => own.alerts(tenant).length > 0);
    await own.stop();
    expect(own.streamStatus(tenant)).toBeNull();
    const count = own.alerts(tenant).length;
    await sleep(100);
    expect(own.alerts(tenant)).toHaveLength(count);
  });
});
