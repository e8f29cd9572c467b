import { TableClient } from "@azure/data-tables";
import { QueueServiceClient } from "@azure/storage-queue";
import { join } from "node:path";
import { Agent, fetch } from "undici";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { generateAlerts, makeAlert, type MdeAlert } from "../fakes/alerts";
import { FakeDefender, type DefenderTokenClaims } from "../fakes/fakeDefender";
import { createTestCertificate, type TestCertificate } from "../fakes/tls";
import { captureConsole, loadApp } from "./functionsHost";

describe("Azurite from globalSetup", () => {
  const conn = inject("storageConnectionString");

  it("serves tables", async () => {
    const table = TableClient.fromConnectionString(conn, "SelfTest", { allowInsecureConnection: true });
    await table.createTable();
    await table.upsertEntity({ partitionKey: "p", rowKey: "r", value: 42 }, "Replace");
    const entity = await table.getEntity<{ value: number }>("p", "r");
    expect(entity.value).toBe(42);
  });

  it("serves queues", async () => {
    const queue = QueueServiceClient.fromConnectionString(conn).getQueueClient(`selftest-${process.pid}`);
    await queue.createIfNotExists();
    await queue.sendMessage("hello");
    const { receivedMessageItems } = await queue.receiveMessages({ numberOfMessages: 1 });
    expect(receivedMessageItems[0]?.messageText).toBe("hello");
  });
});

describe("loadApp on the fixture app", () => {
  const entry = join(__dirname, "fixture", "index.js");
  const fixtureLoads = (): number | undefined => (globalThis as { __harnessFixtureLoads?: number }).__harnessFixtureLoads;
  // Undefined unless an earlier test file in this process loaded it, i.e. unless isolation is off.
  const loadsBefore = fixtureLoads();
  const app = loadApp(entry);

  it("captures every registration with its trigger options", () => {
    expect(loadsBefore).toBeUndefined();
    expect(loadApp(entry)).toBe(app);
    expect(fixtureLoads()).toBe(1);
    expect([...app.functions.keys()].sort()).toEqual(["hello", "login", "tick", "work"]);
    expect(app.functions.get("hello")?.trigger).toMatchObject({ type: "httpTrigger", route: "hello/{name}", methods: ["GET", "POST"], authLevel: "function" });
    expect(app.functions.get("login")?.trigger).toMatchObject({ type: "httpTrigger", route: "auth/login", methods: ["GET"], authLevel: "anonymous" });
    expect(app.functions.get("tick")?.trigger).toMatchObject({ type: "timerTrigger", schedule: "0 */5 * * * *" });
    expect(app.functions.get("work")?.trigger).toMatchObject({ type: "queueTrigger", queueName: "jobs", connection: "AzureWebJobsStorage" });
  });

  it("invokes http handlers with params parsed from the route, and records logs", async () => {
    const res = await app.http("hello", { method: "POST", url: "/api/hello/ada?q=1", headers: { "x-secret": "s3cr3t" }, body: "payload" });
    expect(res.status).toBe(201);
    expect(res.headers.get("x-custom")).toBe("yes");
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.json()).toEqual({ name: "ada", q: "1", body: "payload" });
    expect(app.logs.at(-1)).toMatchObject({ level: "information", functionName: "hello", message: 'hello called {"name":"ada","secretHeader":"s3cr3t"}' });

    const redirect = await app.http("login", { url: "/api/auth/login" });
    expect(redirect.status).toBe(302);
    expect(redirect.location).toBe("https://login.example.test/authorize?x=1");
    expect(redirect.cookies).toEqual([{ name: "pre", value: "1", httpOnly: true, path: "/api/auth" }]);
    expect(app.logs.at(-1)).toMatchObject({ level: "trace", message: "redirecting" });
    await expect(app.http("login", { method: "POST", url: "/api/auth/login" })).rejects.toThrow(/not POST/);
  });

  it("invokes timer and queue handlers", async () => {
    expect(await app.timer("tick")).toBe("ticked");
    expect(app.logs.at(-1)).toMatchObject({ level: "warning", message: "tick false true" });
    expect(await app.queue("work", '{"tenantId":"t1"}', { dequeueCount: 3 })).toEqual({ got: { tenantId: "t1" }, dequeueCount: 3 });
    expect(app.logs.at(-1)).toMatchObject({ level: "error", message: 'work item {"tenantId":"t1"} dequeue 3' });
    await expect(app.timer("work")).rejects.toThrow(/queueTrigger, not a timerTrigger/);
  });

  it("captures console output", () => {
    const capture = captureConsole();
    try {
      console.log("leak?", { token: "abc" });
      process.stderr.write("raw\n");
    } finally {
      capture.restore();
    }
    expect(capture.lines).toEqual(['leak? {"token":"abc"}', "raw\n"]);
  });
});

describe("FakeDefender", () => {
  const A = "11111111-1111-4111-8111-111111111111";
  const B = "22222222-2222-4222-8222-222222222222";
  const tokens: Record<string, Omit<DefenderTokenClaims, "exp">> = {
    "tok-a": { tid: A, aud: "https://api.securitycenter.microsoft.com", roles: ["Alert.Read.All"] },
    "tok-b": { tid: B, aud: "https://securitycenter.onmicrosoft.com/windowsatpservice" },
    "tok-graph": { tid: A, aud: "https://graph.microsoft.com" },
  };
  let fake: FakeDefender;
  let agent: Agent;
  let cert: TestCertificate;

  beforeAll(async () => {
    cert = await createTestCertificate();
    fake = new FakeDefender({
      certPem: cert.certPem,
      keyPem: cert.keyPem,
      verifyAccessToken: async (token) => {
        const claims = tokens[token];
        return claims === undefined ? null : { ...claims, exp: Math.floor(Date.now() / 1000) + 3600 };
      },
    });
    await fake.start();
    agent = new Agent({ connect: { ca: cert.certPem } });
  });
  afterAll(async () => {
    await agent?.close();
    await fake?.stop();
  });

  async function get(path: string, token = "tok-a"): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
    const res = await fetch(`${fake.url}${path}`, { dispatcher: agent, headers: { Authorization: `Bearer ${token}` } });
    return { status: res.status, headers: res.headers as unknown as Headers, body: (await res.json()) as Record<string, unknown> };
  }
  const values = (body: Record<string, unknown>): MdeAlert[] => body.value as MdeAlert[];

  it("filters at full timestamp precision, per tenant, without evidence unless expanded", async () => {
    fake.addAlerts(A, [
      makeAlert({ id: "x3", lastUpdateTime: "2026-11-23T10:00:00.1234568Z" }),
      makeAlert({ id: "x1", lastUpdateTime: "2026-11-23T10:00:00.123Z" }),
      makeAlert({ id: "x2", lastUpdateTime: "2026-11-23T10:00:00.1234567Z" }),
      makeAlert({ id: "x4", lastUpdateTime: "2026-11-23T10:00:01Z" }),
    ]);
    const res = await get("/api/alerts?$filter=lastUpdateTime+ge+2026-11-23T10:00:00.1234567Z+and+lastUpdateTime+lt+2026-11-23T10:00:01Z");
    expect(res.status).toBe(200);
    expect(res.body["@odata.context"]).toBe("https://api.security.microsoft.com/api/$metadata#Alerts");
    expect(values(res.body).map((a) => a.id)).toEqual(["x2", "x3"]);
    expect(values(res.body)[0]).not.toHaveProperty("evidence");

    const expanded = await get("/api/v1.0/alerts?$filter=lastUpdateTime gt 2026-11-23T10:00:00.1234567Z&$expand=evidence");
    expect(values(expanded.body).map((a) => a.id)).toEqual(["x3", "x4"]);
    expect(values(expanded.body)[0]?.evidence.map((e) => e.entityType)).toEqual(["File", "Process"]);

    expect(values((await get("/api/alerts", "tok-b")).body)).toEqual([]);
    expect(fake.requests(A).map((r) => r.status)).toEqual([200, 200]);
  });

  it("pages with $top/$skip in (lastUpdateTime, id) order, and reflects in-place updates", async () => {
    fake.addAlerts(B, generateAlerts(B, 25, { start: new Date("2026-11-20T00:00:00Z"), spacingMs: 1000 }));
    const ids: string[] = [];
    for (let skip = 0; ; skip += 10) {
      const page = values((await get(`/api/alerts?$top=10&$skip=${skip}`, "tok-b")).body);
      ids.push(...page.map((a) => a.id));
      if (page.length < 10) break;
    }
    expect(ids).toEqual(fake.alerts(B).map((a) => a.id));
    expect(ids).toHaveLength(25);

    const first = ids[0] ?? "";
    fake.updateAlert(B, first, { lastUpdateTime: "2026-11-21T00:00:00.0000001Z", status: "Resolved" });
    const late = values((await get("/api/alerts?$filter=lastUpdateTime ge 2026-11-21T00:00:00Z", "tok-b")).body);
    expect(late.map((a) => [a.id, a.status])).toEqual([[first, "Resolved"]]);
    expect(fake.stats.byTenant[B]).toBe(5);
  });

  it("rejects bad tokens and unsupported queries with documented error bodies", async () => {
    for (const token of ["nope", "tok-graph"]) {
      const res = await get("/api/alerts", token);
      expect(res.status).toBe(401);
      expect(res.body).toMatchObject({ error: { code: "Unauthorized", target: expect.stringMatching(/^[0-9a-f-]{36}$/) } });
    }
    for (const query of ["$filter=status eq 'New'", "$filter=lastUpdateTime ge '2026-11-23T10:00:00Z'", "$top=10001", "$orderby=lastUpdateTime", "$expand=machine"]) {
      const res = await get(`/api/alerts?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.body).toMatchObject({ error: { code: "InvalidInput" } });
    }
  });

  it("throttles with Retry-After, injects failures and hangs", async () => {
    fake.throttle(A, { times: 1, retryAfterSeconds: 7 });
    const throttled = await get("/api/alerts?$top=1");
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get("retry-after")).toBe("7");
    expect(throttled.body).toMatchObject({ error: { code: "TooManyRequests" } });
    fake.fail(A, { status: 503, times: 1 });
    expect((await get("/api/alerts?$top=1")).status).toBe(503);
    expect((await get("/api/alerts?$top=1")).status).toBe(200);

    fake.hang(A, 1);
    const hung = fetch(`${fake.url}/api/alerts`, { dispatcher: agent, headers: { Authorization: "Bearer tok-a" }, signal: AbortSignal.timeout(300) });
    await expect(hung).rejects.toThrow(/abort|timeout/i);
    expect(fake.requests(A).at(-1)?.status).toBe(0);
  });

  it("stop() closes connections that are still hanging", async () => {
    const own = new FakeDefender({ certPem: cert.certPem, keyPem: cert.keyPem, verifyAccessToken: async () => ({ tid: A, aud: "https://api.securitycenter.microsoft.com", exp: 2e9 }) });
    await own.start();
    own.hang(A, 1);
    const ownAgent = new Agent({ connect: { ca: cert.certPem } });
    const pending = fetch(`${own.url}/api/alerts`, { dispatcher: ownAgent, headers: { Authorization: "Bearer x" } }).then(
      () => "answered",
      () => "closed",
    );
    await expect.poll(() => own.requests(A).length).toBe(1);
    const started = Date.now();
    await own.stop();
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await pending).toBe("closed");
    await ownAgent.close();
  });

  it("follows @odata.nextLink when enabled, and exposes the control API", async () => {
    const tenant = "33333333-3333-4333-8333-333333333333";
    const seeded = await fetch(`${fake.url}/_fake/seed`, {
      dispatcher: agent,
      method: "POST",
      body: JSON.stringify({ tenantId: tenant, count: 7, start: "2026-11-01T00:00:00Z", spacingMs: 10 }),
    });
    expect(await seeded.json()).toEqual({ tenantId: tenant, added: 7, total: 7 });
    tokens["tok-c"] = { tid: tenant, aud: "https://api.securitycenter.microsoft.com" };

    fake.setNextLinkPaging(true);
    try {
      let next: string | undefined = `${fake.url}/api/alerts?$filter=lastUpdateTime ge 2026-11-01T00:00:00Z&$top=3`;
      const got: string[] = [];
      while (next !== undefined) {
        const res = await fetch(next, { dispatcher: agent, headers: { Authorization: "Bearer tok-c" } });
        const body = (await res.json()) as { value: MdeAlert[]; "@odata.nextLink"?: string };
        got.push(...body.value.map((a) => a.id));
        next = body["@odata.nextLink"];
      }
      expect(got).toEqual(fake.alerts(tenant).map((a) => a.id));
      expect(fake.requests(tenant).map((r) => r.query.get("$skip"))).toEqual([null, "3", "6"]);
    } finally {
      fake.setNextLinkPaging(false);
    }

    const stats = (await (await fetch(`${fake.url}/_fake/stats`, { dispatcher: agent })).json()) as { byTenant: Record<string, number> };
    expect(stats.byTenant[tenant]).toBe(3);
    await fetch(`${fake.url}/_fake/reset-stats`, { dispatcher: agent, method: "POST" });
    expect(fake.stats.requests).toBe(0);
  });
});
