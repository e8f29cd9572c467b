import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { TokenCredential } from "@azure/identity";
import { TableClient } from "@azure/data-tables";
import { afterAll, describe, expect, inject, it } from "vitest";
import { encodeQueueMessage, openQueue } from "../../shared/state/queues";
import { createTableFactory, isConcurrencyConflict, requestTimeoutPolicy, TABLE_TRY_TIMEOUT_MS, tableClientOptions, type TableFactory } from "../../shared/state/tables";
import { TenantAlreadyExistsError, TenantNotFoundError, TenantRegistry, type TenantRecord } from "../../shared/state/tenantRegistry";
import { AZURITE_ACCOUNT, AZURITE_KEY } from "../harness/azurite";

/**
 * shared/state against the run's Azurite through the real @azure/data-tables client, and against
 * a scripted Table endpoint where the number of requests is the point (issue 15, mutation
 * testing): what the tenant table holds and returns, what is refused, how a lost race is retried
 * and where that stops.
 */

/** What a pipeline policy is handed (the pipeline package is the SDK's dependency, not ours). */
type PipelineRequest = Parameters<ReturnType<typeof requestTimeoutPolicy>["sendRequest"]>[0];

const noCredential = (): TokenCredential => {
  throw new Error("no credential for a connection string");
};

const T0 = Date.parse("2026-03-01T10:00:00.000Z");

/** A clock the test moves by hand. */
function manualClock(start = T0): { now: number; clock: () => number } {
  const time = { now: start, clock: () => time.now };
  return time;
}

/** The run's Azurite, with this test's own tenants table so that list() sees only what the test wrote. */
function azuriteTables(): { factory: TableFactory; raw: () => TableClient; tableName: string } {
  const connectionString = inject("storageConnectionString");
  const tableName = `StateMut${randomBytes(6).toString("hex")}`;
  const inner = createTableFactory({ kind: "connectionString", connectionString }, noCredential);
  return {
    tableName,
    factory: { open: () => inner.open(tableName) },
    raw: () => TableClient.fromConnectionString(connectionString, tableName, { allowInsecureConnection: true }),
  };
}

type Interfere = (client: TableClient, method: string) => Promise<void>;

/** The same tables, with a hook that runs before each write: lets a test lose a race on purpose. */
function interfering(factory: TableFactory, before: Interfere): TableFactory {
  return {
    async open(name) {
      const client = await factory.open(name);
      return new Proxy(client, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver) as unknown;
          if ((property === "updateEntity" || property === "createEntity") && typeof value === "function") {
            return async (...args: unknown[]) => {
              await before(target, property);
              return (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
            };
          }
          return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      });
    },
  };
}

/** Counts the registry's whole-table queries. */
function countingLists(factory: TableFactory): { factory: TableFactory; lists: () => number } {
  let lists = 0;
  return {
    lists: () => lists,
    factory: {
      async open(name) {
        const client = await factory.open(name);
        return new Proxy(client, {
          get(target, property, receiver) {
            const value = Reflect.get(target, property, receiver) as unknown;
            if (property === "listEntities" && typeof value === "function") {
              return (...args: unknown[]) => {
                lists++;
                return (value as (...a: unknown[]) => unknown).apply(target, args);
              };
            }
            return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        });
      },
    },
  };
}

describe("the tenant registry in Table Storage", () => {
  it("registers a tenant as pending consent, with only the fields it was given, and stores cleared fields as empty strings", async () => {
    const { factory, raw } = azuriteTables();
    const time = manualClock();
    const registry = new TenantRegistry(factory, time.clock);
    const bare = await registry.create({ tenantId: randomUUID(), displayName: "Contoso" });
    expect(bare).toStrictEqual({ tenantId: bare.tenantId, displayName: "Contoso", status: "pending_consent", createdAt: "2026-03-01T10:00:00.000Z", updatedAt: "2026-03-01T10:00:00.000Z" });
    expect(await registry.get(bare.tenantId)).toStrictEqual(bare);

    const full = await registry.create({ tenantId: randomUUID(), displayName: "Fabrikam", defenderRegion: "eu", source: "graph", consentModel: "application" });
    expect(full).toMatchObject({ defenderRegion: "eu", source: "graph", consentModel: "application", status: "pending_consent" });
    expect(await registry.get(full.tenantId)).toEqual(full);

    // The row itself: partition "tenant", row key the tenant id, every optional field present (empty when unset).
    const row = await raw().getEntity<Record<string, unknown>>("tenant", bare.tenantId);
    expect(row).toMatchObject({ partitionKey: "tenant", rowKey: bare.tenantId, displayName: "Contoso", status: "pending_consent", defenderRegion: "", source: "", consentModel: "", consentedBy: "", lastErrorCode: "", lastErrorAt: "" });
  });

  it("reads back an unknown status as pending consent, and an unknown source or consent model as the original one", async () => {
    const { factory, raw } = azuriteTables();
    const registry = new TenantRegistry(factory, manualClock().clock);
    await factory.open("ignored");
    const tenantId = randomUUID();
    await raw().createEntity({
      partitionKey: "tenant",
      rowKey: tenantId,
      displayName: "From a newer version",
      status: "suspended",
      source: "sentinel",
      consentModel: "certificate",
      defenderRegion: "uk",
      consentedBy: "",
      createdAt: "2026-01-01T00:00:00.000Z",
      updatedAt: "2026-01-02T00:00:00.000Z",
    });
    const record = await registry.get(tenantId);
    expect(record).toEqual({
      tenantId,
      displayName: "From a newer version",
      status: "pending_consent",
      defenderRegion: "uk",
      createdAt: "2026-01-01T00:00:00.000Z",
      updatedAt: "2026-01-02T00:00:00.000Z",
    });
    // Only the fields that hold a value: nothing read as present-but-undefined.
    expect(Object.keys(record ?? {}).sort()).toEqual(["createdAt", "defenderRegion", "displayName", "status", "tenantId", "updatedAt"]);
    expect(record).not.toHaveProperty("source");
    expect(record).not.toHaveProperty("consentModel");
    expect(record).not.toHaveProperty("consentedBy");

    for (const status of ["connected", "reconsent_required", "offboarded"] as const) {
      await raw().updateEntity({ partitionKey: "tenant", rowKey: tenantId, status, source: "mde", consentModel: "delegated" }, "Merge");
      expect(await registry.get(tenantId)).toMatchObject({ status, source: "mde", consentModel: "delegated" });
    }
  });

  it("answers undefined for a tenant never registered, and passes on any other failure, an abandoned read included", async () => {
    const { factory } = azuriteTables();
    const registry = new TenantRegistry(factory, manualClock().clock);
    expect(await registry.get(randomUUID())).toBeUndefined();
    const registered = await registry.create({ tenantId: randomUUID(), displayName: "Contoso" });
    const aborted = AbortSignal.abort();
    await expect(registry.get(registered.tenantId, { signal: aborted })).rejects.toThrow();
    // A key Table Storage refuses is a 400, not "already registered".
    const refused = await registry.create({ tenantId: "bad/key", displayName: "x" }).catch((error: unknown) => error);
    expect(refused).not.toBeInstanceOf(TenantAlreadyExistsError);
    expect((refused as { statusCode?: number }).statusCode).toBe(400);
  });

  it("lists every tenant, or only those in the asked status", async () => {
    const { factory, raw } = azuriteTables();
    const registry = new TenantRegistry(factory, manualClock().clock);
    const a = await registry.create({ tenantId: randomUUID(), displayName: "A" });
    const b = await registry.create({ tenantId: randomUUID(), displayName: "B" });
    await registry.update(b.tenantId, () => ({ status: "connected" }));
    expect((await registry.list()).map((r) => r.tenantId).sort()).toEqual([a.tenantId, b.tenantId].sort());
    expect((await registry.list("connected")).map((r) => r.tenantId)).toEqual([b.tenantId]);
    expect((await registry.list("pending_consent")).map((r) => r.tenantId)).toEqual([a.tenantId]);
    expect(await registry.list("offboarded")).toEqual([]);
    // A row outside the tenants' partition is not a tenant.
    await raw().createEntity({ partitionKey: "other", rowKey: randomUUID(), displayName: "Not a tenant", status: "connected", createdAt: "x", updatedAt: "x" });
    expect((await registry.list()).map((r) => r.displayName).sort()).toEqual(["A", "B"]);
    expect((await registry.list("connected")).map((r) => r.displayName)).toEqual(["B"]);
  });

  it("refuses to register a tenant twice, but registers an offboarded one again from scratch", async () => {
    const { factory } = azuriteTables();
    const time = manualClock();
    const registry = new TenantRegistry(factory, time.clock);
    const tenantId = randomUUID();
    await registry.create({ tenantId, displayName: "First", defenderRegion: "au" });
    const twice = await registry.create({ tenantId, displayName: "Second" }).catch((error: unknown) => error);
    expect(twice).toBeInstanceOf(TenantAlreadyExistsError);
    expect(twice).toMatchObject({ name: "TenantAlreadyExistsError", message: "tenant already registered" });
    expect((await registry.get(tenantId))?.displayName).toBe("First");

    await registry.update(tenantId, () => ({ status: "offboarded", consentedBy: "admin@contoso.example" }));
    time.now = T0 + 86_400_000;
    const again = await registry.create({ tenantId, displayName: "Again" });
    expect(again).toEqual({ tenantId, displayName: "Again", status: "pending_consent", createdAt: "2026-03-02T10:00:00.000Z", updatedAt: "2026-03-02T10:00:00.000Z" });
    // Replaced, not merged: nothing of the old record survives.
    expect(await registry.get(tenantId)).toStrictEqual(again);
  });

  it("refuses a re-registration whose conflicting record vanished before it could be read", async () => {
    const { factory } = azuriteTables();
    const registry = new TenantRegistry(factory, manualClock().clock);
    const tenantId = randomUUID();
    await registry.create({ tenantId, displayName: "Old" });
    // The 409 is real; the record is deleted right after it, before the registry reads it.
    const vanishing: TableFactory = {
      async open(name) {
        const client = await factory.open(name);
        return new Proxy(client, {
          get(target, property, receiver) {
            const value = Reflect.get(target, property, receiver) as unknown;
            if (property === "createEntity" && typeof value === "function") {
              return async (...args: unknown[]) => {
                try {
                  return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
                } catch (error) {
                  await target.deleteEntity("tenant", tenantId);
                  throw error;
                }
              };
            }
            return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          },
        });
      },
    };
    await expect(new TenantRegistry(vanishing, manualClock().clock).create({ tenantId, displayName: "New" })).rejects.toBeInstanceOf(TenantAlreadyExistsError);
    expect(await registry.get(tenantId)).toBeUndefined();
  });

  it("refuses a re-registration that loses the race against another write to the offboarded record", async () => {
    const { factory } = azuriteTables();
    const registry = new TenantRegistry(factory, manualClock().clock);
    const tenantId = randomUUID();
    await registry.create({ tenantId, displayName: "Old" });
    await registry.update(tenantId, () => ({ status: "offboarded" }));
    const racing = new TenantRegistry(
      interfering(factory, async (client, method) => {
        if (method === "updateEntity") await client.updateEntity({ partitionKey: "tenant", rowKey: tenantId, displayName: "Someone else" }, "Merge");
      }),
      manualClock().clock,
    );
    await expect(racing.create({ tenantId, displayName: "New" })).rejects.toBeInstanceOf(TenantAlreadyExistsError);
    expect((await registry.get(tenantId))?.displayName).toBe("Someone else");
  });

  it("passes on a failure of the re-registration's write that is not a lost race", async () => {
    const { factory } = azuriteTables();
    const registry = new TenantRegistry(factory, manualClock().clock);
    const tenantId = randomUUID();
    await registry.create({ tenantId, displayName: "Old" });
    await registry.update(tenantId, () => ({ status: "offboarded" }));
    // The offboarded row is deleted just before the write: a 404, which is no "already registered".
    const deleting = interfering(factory, async (client, method) => {
      if (method === "updateEntity") await client.deleteEntity("tenant", tenantId);
    });
    const error = await new TenantRegistry(deleting, manualClock().clock).create({ tenantId, displayName: "New" }).catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(TenantAlreadyExistsError);
    expect((error as { statusCode?: number }).statusCode).toBe(404);
  });

  it("updates on fresh state: a lost race is re-read and re-applied, four times at most after the first", async () => {
    const { factory } = azuriteTables();
    const time = manualClock();
    const registry = new TenantRegistry(factory, time.clock);
    const tenantId = randomUUID();
    await registry.create({ tenantId, displayName: "Contoso" });
    let interferences = 0;
    let budget = 4;
    const racing = new TenantRegistry(
      interfering(factory, async (client, method) => {
        if (method !== "updateEntity" || budget === 0) return;
        budget--;
        interferences++;
        await client.updateEntity({ partitionKey: "tenant", rowKey: tenantId, lastErrorCode: `race-${interferences}` }, "Merge");
      }),
      time.clock,
    );
    const seen: (string | undefined)[] = [];
    time.now = T0 + 5_000;
    const updated = await racing.update(tenantId, (current) => {
      seen.push(current.lastErrorCode);
      return { status: "connected", tenantId: "someone-else" } as Partial<TenantRecord>;
    });
    // Each attempt saw the write that beat the one before.
    expect(seen).toEqual([undefined, "race-1", "race-2", "race-3", "race-4"]);
    expect(updated).toMatchObject({ tenantId, status: "connected", lastErrorCode: "race-4", updatedAt: "2026-03-01T10:00:05.000Z", createdAt: "2026-03-01T10:00:00.000Z" });
    expect(await registry.get(tenantId)).toEqual(updated);

    // A fifth lost race in a row is passed on as the 412 it is.
    budget = 5;
    const error = await racing.update(tenantId, () => ({ status: "reconsent_required" })).catch((e: unknown) => e);
    expect(isConcurrencyConflict(error)).toBe(true);
    expect((await registry.get(tenantId))?.status).toBe("connected");
  });

  it("leaves a record untouched when the change is nothing, and refuses a tenant that is not registered", async () => {
    const { factory } = azuriteTables();
    const time = manualClock();
    const registry = new TenantRegistry(factory, time.clock);
    const created = await registry.create({ tenantId: randomUUID(), displayName: "Contoso" });
    time.now = T0 + 60_000;
    expect(await registry.update(created.tenantId, () => undefined)).toEqual(created);
    expect(await registry.get(created.tenantId)).toEqual(created);
    const missing = await registry.update(randomUUID(), () => ({ status: "connected" })).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(TenantNotFoundError);
    expect(missing).toMatchObject({ name: "TenantNotFoundError", message: "tenant not registered" });
    // A field cleared by an update reads back as absent.
    await registry.update(created.tenantId, () => ({ lastErrorCode: "boom" }));
    await registry.update(created.tenantId, () => ({ lastErrorCode: undefined }));
    expect(await registry.get(created.tenantId)).not.toHaveProperty("lastErrorCode");
  });

  it("answers the hot path from one query per interval, reads a tenant missing from it directly, and shares a load in flight", async () => {
    const { factory } = azuriteTables();
    const counted = countingLists(factory);
    const time = manualClock();
    const writer = new TenantRegistry(factory, time.clock);
    const registry = new TenantRegistry(counted.factory, time.clock);
    const a = await writer.create({ tenantId: randomUUID(), displayName: "A" });

    const [first, same] = await Promise.all([registry.getRecent(a.tenantId, 10_000), registry.getRecent(a.tenantId, 10_000)]);
    expect(first?.displayName).toBe("A");
    expect(same?.displayName).toBe("A");
    expect(counted.lists()).toBe(1);

    await writer.update(a.tenantId, () => ({ displayName: "A renamed" }));
    const b = await writer.create({ tenantId: randomUUID(), displayName: "B" });
    // Exactly maxAge later the snapshot still serves (stale by design); a tenant it lacks is read directly.
    time.now = T0 + 10_000;
    expect((await registry.getRecent(a.tenantId, 10_000))?.displayName).toBe("A");
    expect((await registry.getRecent(b.tenantId, 10_000))?.displayName).toBe("B");
    expect(await registry.getRecent(randomUUID(), 10_000)).toBeUndefined();
    expect(counted.lists()).toBe(1);
    // One millisecond more and it is reloaded.
    time.now = T0 + 10_001;
    expect((await registry.getRecent(a.tenantId, 10_000))?.displayName).toBe("A renamed");
    expect(counted.lists()).toBe(2);
    expect((await registry.getRecent(a.tenantId, 10_000))?.displayName).toBe("A renamed");
    expect(counted.lists()).toBe(2);
    // After a finished load the next reload starts a new query rather than reusing the old one.
    time.now = T0 + 30_000;
    await registry.getRecent(a.tenantId, 10_000);
    expect(counted.lists()).toBe(3);
  });
});

/** A Table endpoint that records requests and answers from a script (no Azurite): the number of requests is the point. */
async function scriptedTableEndpoint(answer: (req: IncomingMessage, index: number) => number): Promise<{ server: Server; url: string; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const status = answer(req, requests.length);
      requests.push(`${req.method} ${req.url}`);
      if (status === 204) {
        res.writeHead(204).end();
        return;
      }
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ "odata.error": { code: "Scripted", message: { lang: "en-US", value: "scripted failure" } } }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return { server, url: `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`, requests };
}

describe("the table factory", () => {
  const servers: Server[] = [];
  afterAll(async () => {
    for (const server of servers) await new Promise((resolve) => server.close(resolve));
  });

  const withEndpoint = async (answer: (req: IncomingMessage, index: number) => number) => {
    const endpoint = await scriptedTableEndpoint(answer);
    servers.push(endpoint.server);
    return { ...endpoint, connectionString: `DefaultEndpointsProtocol=https;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};TableEndpoint=${endpoint.url};` };
  };

  it("creates each table once per process, and tries again after a failed create", async () => {
    let failNext = false;
    const endpoint = await withEndpoint(() => (failNext ? 400 : 204));
    const tables = createTableFactory({ kind: "connectionString", connectionString: endpoint.connectionString }, noCredential);
    const [one, two] = await Promise.all([tables.open("Alpha"), tables.open("Alpha")]);
    expect(one).toBe(two);
    expect(await tables.open("Alpha")).toBe(one);
    expect(one.tableName).toBe("Alpha");
    expect(endpoint.requests).toEqual([`POST /${AZURITE_ACCOUNT}/Tables`]);
    failNext = true;
    await expect(tables.open("Beta")).rejects.toMatchObject({ statusCode: 400 });
    failNext = false;
    const beta = await tables.open("Beta");
    expect(beta.tableName).toBe("Beta");
    expect(endpoint.requests).toHaveLength(3);
  });

  it("retries a failing call twice, then passes the failure on", async () => {
    const endpoint = await withEndpoint(() => 503);
    const tables = createTableFactory({ kind: "connectionString", connectionString: endpoint.connectionString }, noCredential);
    await expect(tables.open("Gamma")).rejects.toMatchObject({ statusCode: 503 });
    expect(endpoint.requests).toHaveLength(3);
  }, 20_000);

  it("allows plain http only where the connection string names it (Azurite), by any of its spellings", async () => {
    const endpoint = await withEndpoint(() => 204);
    // Only the table endpoint says http (the default protocol is https): allowed.
    await expect(createTableFactory({ kind: "connectionString", connectionString: endpoint.connectionString }, noCredential).open("Delta")).resolves.toBeDefined();
    // Only the default protocol says http: allowed too (the endpoint is derived from the account, which no test can reach, so the failure is a network one).
    const derived = await createTableFactory(
      { kind: "connectionString", connectionString: `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};TableEndpoint=HTTP://127.0.0.1:1/${AZURITE_ACCOUNT};` },
      noCredential,
    )
      .open("Epsilon")
      .catch((error: unknown) => error);
    expect(String((derived as Error).message)).not.toMatch(/allowInsecureConnection/);
    // The development-storage shorthand is Azurite's fixed loopback ports, which speak http.
    const shorthand = await createTableFactory({ kind: "connectionString", connectionString: "UseDevelopmentStorage=true" }, noCredential)
      .open("Zeta")
      .catch((error: unknown) => error);
    expect(String((shorthand as Error).message)).not.toMatch(/allowInsecureConnection/);
  }, 30_000);

  it("opens tables with the managed identity when the storage is given by URI, never reading a connection string", async () => {
    let asked = 0;
    const credential: TokenCredential = { getToken: async () => ({ token: "storage-token", expiresOnTimestamp: Date.now() + 3_600_000 }) };
    const tables = createTableFactory({ kind: "identity", blobServiceUri: "http://127.0.0.1:1/b", tableServiceUri: "http://127.0.0.1:1/mssp", queueServiceUri: "http://127.0.0.1:1/q" }, () => {
      asked++;
      return credential;
    });
    // The SDK refuses a bearer token over http: proof that the token credential, not a key, is in use.
    const error = await tables.open("Eta").catch((e: unknown) => e);
    expect(asked).toBe(1);
    expect(String((error as Error).message)).toMatch(/https|TLS/i);
  });

  it("sets a timeout on every try that has none or a longer one, 20 s unless told", async () => {
    const policy = requestTimeoutPolicy(1_000);
    expect(policy.name).toBe("mssp-request-timeout");
    const sent: number[] = [];
    const next = async (request: PipelineRequest) => {
      sent.push(request.timeout);
      return { request, status: 204, headers: {} } as never;
    };
    for (const timeout of [0, 500, 1_000, 5_000]) await policy.sendRequest({ timeout } as PipelineRequest, next);
    expect(sent).toEqual([1_000, 500, 1_000, 1_000]);

    expect(TABLE_TRY_TIMEOUT_MS).toBe(20_000);
    const options = tableClientOptions();
    expect(options.retryOptions).toEqual({ maxRetries: 2 });
    expect(options.additionalPolicies).toHaveLength(1);
    expect(options.additionalPolicies?.[0]?.position).toBe("perRetry");
    const defaults: number[] = [];
    await options.additionalPolicies?.[0]?.policy.sendRequest({ timeout: 0 } as PipelineRequest, async (request) => {
      defaults.push(request.timeout);
      return { request, status: 204, headers: {} } as never;
    });
    expect(defaults).toEqual([20_000]);
  });

  it("tells a lost ETag race (412) from every other failure", () => {
    expect(isConcurrencyConflict({ statusCode: 412 })).toBe(true);
    expect(isConcurrencyConflict({ statusCode: 409 })).toBe(false);
    expect(isConcurrencyConflict({ statusCode: "412" })).toBe(false);
    expect(isConcurrencyConflict(null)).toBe(false);
    expect(isConcurrencyConflict(undefined)).toBe(false);
    expect(isConcurrencyConflict(412)).toBe(false);
  });
});

describe("queues", () => {
  it("encodes a message as base64 JSON, as the Functions queue trigger decodes it by default", () => {
    const encoded = encodeQueueMessage({ tenantId: "t1", reason: "ü" });
    expect(encoded).toMatch(/^[A-Za-z0-9+/]+=*$/);
    expect(JSON.parse(Buffer.from(encoded, "base64").toString("utf8"))).toEqual({ tenantId: "t1", reason: "ü" });
  });

  it("opens a queue by connection string (Azurite) or by URI with the managed identity", async () => {
    const connectionString = inject("storageConnectionString");
    const byKey = openQueue({ kind: "connectionString", connectionString }, `statemut${randomBytes(4).toString("hex")}`, noCredential);
    await byKey.create();
    await byKey.sendMessage(encodeQueueMessage({ n: 1 }));
    const [message] = (await byKey.receiveMessages()).receivedMessageItems;
    expect(JSON.parse(Buffer.from(message?.messageText ?? "", "base64").toString("utf8"))).toEqual({ n: 1 });
    await byKey.delete();

    let asked = 0;
    const byIdentity = openQueue({ kind: "identity", blobServiceUri: "https://mssp.blob.core.windows.net", queueServiceUri: "https://mssp.queue.core.windows.net", tableServiceUri: "https://mssp.table.core.windows.net" }, "pulls", () => {
      asked++;
      return { getToken: async () => null };
    });
    expect(asked).toBe(1);
    expect(byIdentity.url).toBe("https://mssp.queue.core.windows.net/pulls");
    expect(byIdentity.name).toBe("pulls");
  });
});
