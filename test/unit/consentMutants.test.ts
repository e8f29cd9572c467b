import { createHash, createHmac, randomBytes, randomUUID } from "node:crypto";
import type { TokenCredential } from "@azure/identity";
import { TableClient, type TransactionAction } from "@azure/data-tables";
import type { Agent } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { recordingLog } from "../harness/recordingLog";
import { ApplicationConsentVerifier, DEFAULT_PROPAGATION_DELAYS_MS, type SourceProbe } from "../../shared/consent/applicationConsent";
import type { ConsentResponse } from "../../shared/consent/consentFlow";
import { buildConsentUrl, verifyConsentLink } from "../../shared/consent/consentLink";
import { ConsentLinkStore, linkRefusal, type ConsentLinkRecord } from "../../shared/consent/consentLinks";
import { APPLICATION_PERMISSIONS, carriesRole, CONSENT_MODEL_SUMMARIES, consentModelOf, isConsentModel, permissionLabel, tokenScope } from "../../shared/consent/consentModel";
import {
  ConsentSessionLimitError,
  ConsentSessionStore,
  DEFAULT_MAX_OPEN_PER_LINK,
  DEFAULT_MAX_OPEN_PER_TENANT,
  LEGACY_LINK_ID,
  PURGE_GRACE_MS,
  PURGE_PARTITIONS,
  SESSION_LIFETIME_MS,
  sessionPartition,
} from "../../shared/consent/consentSessions";
import { escapeHtml, renderPage, unexpectedFailurePage } from "../../shared/consent/pages";
import { SIGNING_KEY_SECRET_NAME, SigningKeyProvider } from "../../shared/consent/signingKey";
import { createSourceProbe } from "../../shared/consent/sourceProbe";
import type { SecretStore } from "../../shared/secrets/secretStore";
import { tenantTokenSecretName } from "../../shared/secrets/tenantTokens";
import type { Services } from "../../shared/services";
import { DefenderApiError } from "../../shared/sources/sourceErrors";
import { createTableFactory, type TableFactory } from "../../shared/state/tables";
import { TABLES } from "../../shared/storage/names";
import type { FakeStack } from "../fakes/fakeStack";
import { AZURITE_ACCOUNT, AZURITE_KEY } from "../harness/azurite";
import { registerSecrets } from "../harness/secrecy";

/**
 * shared/consent without the Functions app (issue 15, mutation testing): the consent flow, its
 * sessions, links, signing key, pages and the application-consent proof, wired as
 * shared/services.ts wires them, through MSAL and the Key Vault SDK against the HTTPS fakes and
 * the run's Azurite, on a clock the tests move. Each test asserts what a customer's admin sees
 * (the page's status and title) or what an operator finds afterwards (tenant record, Key Vault,
 * links, audit trail, logs).
 */

// Set by setup(), which only the describes that drive the fakes or the whole flow run: a mutant
// that only the pure or table-level tests reach (Stryker reruns the covering tests) pays neither
// for importing the app's whole service graph nor for starting the fakes.
let stack: FakeStack;
let services: Services;
let agent: Agent;
let flow: typeof import("../../shared/consent/consentFlow");
let fetch: typeof import("undici").fetch;
let ready: Promise<void> | undefined;
/** The app's clock: real time plus what a test adds (tokens from the fakes carry real times). */
let offsetMs = 0;
const clock = () => Date.now() + offsetMs;
/** Waits the app asked for (the application proof's propagation delays), answered at once. */
const sleeps: number[] = [];

const { lines, log } = recordingLog();
const operator = { kind: "user", id: "op-1", name: "Olivia Operator" };

const noCredential = (): TokenCredential => {
  throw new Error("no credential for a connection string");
};

/** The fakes and the services as shared/services.ts wires them, once per file. */
function setup(): Promise<void> {
  ready ??= (async () => {
    const [{ startFakeStack, stackSettings }, { loadConfig }, { createServices }, consentFlow, undici] = await Promise.all([
      import("../fakes/fakeStack"),
      import("../../shared/config"),
      import("../../shared/services"),
      import("../../shared/consent/consentFlow"),
      import("undici"),
    ]);
    flow = consentFlow;
    fetch = undici.fetch;
    stack = await startFakeStack();
    registerSecrets(() => [stack.clientSecret, stack.vaultToken], "consentMutants fake stack credentials");
    stack.entra.setClock(clock);
    const config = loadConfig({
      ...stackSettings(stack),
      MSSP_DISPLAY_NAME: "Contoso Security",
      AzureWebJobsStorage: inject("storageConnectionString"),
    });
    services = createServices(config, {
      clock,
      sleep: async (ms) => void sleeps.push(ms),
      storageTimeoutMs: 10_000,
    });
    agent = new undici.Agent({ connect: { ca: stack.certPem } });
  })();
  return ready;
}

afterAll(async () => {
  await agent?.close();
  await stack?.stop();
});

afterEach(() => {
  offsetMs = 0;
  sleeps.length = 0;
  lines.length = 0;
  if (!stack) return;
  stack.entra.clearFailures();
  stack.entra.setAppConsentPropagation(0);
  stack.vault.setFailure(null);
});

// ---- helpers ------------------------------------------------------------------------------

function titleOf(body: string): string {
  return /<title>([^<]*)<\/title>/.exec(body)?.[1] ?? "";
}

function page(response: ConsentResponse): { status: number; title: string; body: string; headers: Record<string, string>; cookies: NonNullable<import("../../shared/ui/page").PageCookie[]> } {
  if (response.kind !== "page") throw new Error(`expected a page, got a redirect to ${response.location}`);
  return { status: response.page.status, title: titleOf(response.page.body), body: response.page.body, headers: response.page.headers, cookies: response.page.cookies ?? [] };
}

function linkQuery(consentUrl: string): { tenantId: string; query: { link: string | null; exp: string | null; sig: string | null } } {
  const url = new URL(consentUrl);
  return {
    tenantId: url.pathname.split("/").pop() ?? "",
    query: { link: url.searchParams.get("link"), exp: url.searchParams.get("exp"), sig: url.searchParams.get("sig") },
  };
}

async function register(extra: Record<string, unknown> = {}, tenantId = randomUUID()): Promise<{ tenantId: string; consentUrl: string; linkId: string; createdAt: string }> {
  const view = await services.tenantAdmin.register({ tenantId, displayName: "Fabrikam Ltd", ...extra }, operator, log);
  return { tenantId, consentUrl: view.consentUrl ?? "", linkId: view.linkId ?? "", createdAt: view.createdAt };
}

async function start(consentUrl: string): Promise<ConsentResponse> {
  const { tenantId, query } = linkQuery(consentUrl);
  return services.consent.start(tenantId, query, log);
}

function cookieHeader(response: ConsentResponse): string {
  if (response.kind !== "redirect") throw new Error(`expected a redirect, got ${response.page.status} ${titleOf(response.page.body)}`);
  return (response.cookies ?? []).map((cookie) => `${cookie.name}=${cookie.value}`).join("; ");
}

/** The browser's hop through the fake Entra ID: its redirect back to the app's callback. */
async function authorize(location: string): Promise<URL> {
  const answer = await fetch(location, { dispatcher: agent, redirect: "manual" });
  await answer.text();
  const back = answer.headers.get("location");
  if (answer.status !== 302 || !back) throw new Error(`authorize answered ${answer.status}`);
  return new URL(back);
}

/** Link to callback, as the admin's browser does it. */
async function consent(consentUrl: string): Promise<{ started: ConsentResponse; callbackUrl: URL; cookie: string; finished: ConsentResponse }> {
  const started = await start(consentUrl);
  if (started.kind !== "redirect") throw new Error(`start answered ${started.page.status} ${titleOf(started.page.body)}`);
  const callbackUrl = await authorize(started.location);
  const cookie = cookieHeader(started);
  const finished = await services.consent.callback(callbackUrl.searchParams, cookie, log);
  return { started, callbackUrl, cookie, finished };
}

const tenantRecord = async (tenantId: string) => services.tenants.get(tenantId);
const storedBundle = (tenantId: string) => stack.vault.peekLatest(tenantTokenSecretName(tenantId));
const auditOf = async (tenantId: string) => (await services.audit.list({ tenantId, limit: 50 })).map((entry) => `${entry.action}: ${entry.detail}`);
const linkOf = async (tenantId: string, linkId: string, createdAt: string) => services.tenantAdmin.links(tenantId).then(() => new ConsentLinkStore(services.tables, clock).get(tenantId, linkId, createdAt));

/** A table factory with tables of this test's own (the purge and the counts see only its rows). */
function ownTables(): { factory: TableFactory; raw: (name: string) => TableClient } {
  const connectionString = inject("storageConnectionString");
  const suffix = randomBytes(5).toString("hex");
  const inner = createTableFactory({ kind: "connectionString", connectionString }, noCredential);
  const nameOf = (name: string) => `${name.replace(/^Mssp/, "M")}${suffix}`;
  return {
    factory: { open: (name: string) => inner.open(nameOf(name)) },
    raw: (name) => TableClient.fromConnectionString(connectionString, nameOf(name), { allowInsecureConnection: true }),
  };
}

const sha256hex = (text: string) => createHash("sha256").update(text).digest("hex");

/**
 * Tables whose next ETag-conditioned writes (updateEntity with an etag) each lose a race: just
 * before each, another instance writes the same entity (a plain merge) or deletes it, so Azurite
 * answers a real 412 or 404. `beforeSubmit` runs before a transaction is sent (another purge
 * deleting one of its rows meanwhile).
 */
function racingTables(factory: TableFactory): {
  factory: TableFactory;
  race: (times: number, how?: "write" | "delete") => void;
  beforeSubmit: (hook: ((table: TableClient, actions: TransactionAction[]) => Promise<void>) | undefined) => void;
} {
  let left = 0;
  let kind: "write" | "delete" = "write";
  let submitHook: ((table: TableClient, actions: TransactionAction[]) => Promise<void>) | undefined;
  return {
    race: (times, how = "write") => {
      left = times;
      kind = how;
    },
    beforeSubmit: (hook) => void (submitHook = hook),
    factory: {
      open: async (name) => {
        const table = await factory.open(name);
        return new Proxy(table, {
          get(target, property, receiver) {
            if (property === "submitTransaction") {
              return async (actions: TransactionAction[]) => {
                const hook = submitHook;
                submitHook = undefined;
                if (hook) await hook(target, actions);
                return target.submitTransaction(actions);
              };
            }
            if (property !== "updateEntity") return Reflect.get(target, property, receiver) as unknown;
            return async (...args: Parameters<TableClient["updateEntity"]>) => {
              const [entity, , options] = args;
              if (left > 0 && options?.etag !== undefined) {
                left--;
                if (kind === "delete") await target.deleteEntity(entity.partitionKey, entity.rowKey);
                else await target.updateEntity({ partitionKey: entity.partitionKey, rowKey: entity.rowKey, otherWriter: randomUUID() }, "Merge");
              }
              return target.updateEntity(...args);
            };
          },
        });
      },
    },
  };
}

/** A table on a port where nothing listens: every request fails without an HTTP status. */
const deadTables: TableFactory = {
  open: async (name) =>
    TableClient.fromConnectionString(
      `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};TableEndpoint=http://127.0.0.1:9/${AZURITE_ACCOUNT};`,
      name,
      { allowInsecureConnection: true, retryOptions: { maxRetries: 0 } },
    ),
};

// ---- consent links: signature ---------------------------------------------------------------

describe("a consent link's signature", () => {
  const key = randomBytes(32);
  const tenantId = "0b0c4d1e-1111-4222-8333-944445555666";
  const registeredAt = "2026-11-20T09:00:00.000Z";
  const linkId = "Ab3_-Ab3_-Ab3_-Ab3_-Ab";
  const now = Date.UTC(2026, 10, 23, 12);
  const parts = (url: string) => linkQuery(url).query;

  it("is valid until the second it names, whatever the case of the tenant id and the milliseconds", () => {
    const url = buildConsentUrl("https://mssp.example", key, { tenantId: tenantId.toUpperCase(), registeredAt, linkId, expiresAt: now + 60_999 });
    expect(new URL(url).pathname).toBe(`/api/consent/${tenantId.toUpperCase()}`);
    expect(parts(url).exp).toBe(String(Math.floor((now + 60_000) / 1000)));
    expect(verifyConsentLink(key, { tenantId, registeredAt }, parts(url), now + 59_999)).toBe("valid");
    expect(verifyConsentLink(key, { tenantId, registeredAt }, parts(url), now + 60_000)).toBe("expired");
    expect(parts(url).sig).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // The signed text is a format: links already sent out must keep verifying after an upgrade.
    const signed = `consent-link:v3:${tenantId}:${registeredAt}:${linkId}:${Math.floor((now + 60_000) / 1000)}`;
    expect(parts(url).sig).toBe(createHmac("sha256", key).update(signed).digest("base64url"));
  });

  it("checks the signature before the expiry, and refuses parts of the wrong shape as malformed", () => {
    const url = buildConsentUrl("https://mssp.example", key, { tenantId, registeredAt, linkId, expiresAt: now - 1000 });
    const query = parts(url);
    expect(verifyConsentLink(randomBytes(32), { tenantId, registeredAt }, query, now)).toBe("bad_signature");
    expect(verifyConsentLink(key, { tenantId, registeredAt }, query, now)).toBe("expired");
    const sig = query.sig ?? "";
    const flipped = `${sig.slice(0, 42)}${sig.endsWith("A") ? "B" : "A"}`;
    expect(verifyConsentLink(key, { tenantId, registeredAt }, { ...query, sig: flipped }, now)).toBe("bad_signature");
    for (const bad of [
      { ...query, link: `${linkId}x` },
      { ...query, link: `x${linkId}`.slice(0, 22).replace(/^./, "!") },
      { ...query, exp: "1234567890123" },
      { ...query, exp: "" },
      { ...query, exp: `x${query.exp}` },
      { ...query, sig: `${sig}A` },
      { ...query, sig: `!${sig.slice(1)}` },
      { ...query, sig: sig.slice(1) },
    ]) {
      expect(verifyConsentLink(key, { tenantId, registeredAt }, bad, now)).toBe("malformed");
    }
  });
});

// ---- consent links: records -----------------------------------------------------------------

describe("the consent link records", () => {
  const actor = { kind: "user", id: "u", name: `N${"x".repeat(200)}` };
  const tenant = (over: Partial<{ status: string; consentedAt: string; createdAt: string }> = {}) => ({ status: "pending_consent", createdAt: "r1", ...over });

  it("issue whole-second expiries, name who issued them (128 characters at most) and are found only for their registration", async () => {
    const { factory } = ownTables();
    let now = Date.parse("2026-03-01T10:00:00.250Z");
    const links = new ConsentLinkStore(factory, () => now);
    const tenantId = randomUUID();
    const issued = await links.issue({ tenantId, registeredAt: "r1", purpose: "reconsent", ttlMs: 3_600_500, issuedBy: actor, source: "graph", consentModel: "application" });
    expect(issued.linkId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(issued).toMatchObject({ tenantId, purpose: "reconsent", source: "graph", consentModel: "application", createdAt: "2026-03-01T10:00:00.250Z", expiresAt: "2026-03-01T11:00:00.000Z", expiresAtMs: Date.parse("2026-03-01T11:00:00.000Z") });
    expect(issued.issuedBy).toBe(actor.name.slice(0, 128));
    expect(issued.usedAt).toBeUndefined();
    expect(await links.get(tenantId, issued.linkId, "r1")).toMatchObject({ linkId: issued.linkId, source: "graph", consentModel: "application" });
    expect(await links.get(tenantId, issued.linkId, "r0")).toBeUndefined();
    expect(await links.get(tenantId, "not-a-link-id", "r1")).toBeUndefined();
    expect(await links.get(tenantId, "Ab3_-Ab3_-Ab3_-Ab3_-Ab", "r1")).toBeUndefined();
    now += 1000;
    const plain = await links.issue({ tenantId, registeredAt: "r1", purpose: "registration", ttlMs: 1000, issuedBy: { kind: "k", id: "i", name: "Bob" } });
    expect(plain).not.toHaveProperty("source");
    expect(plain).not.toHaveProperty("consentModel");
    expect(plain.purpose).toBe("registration");
    await links.issue({ tenantId, registeredAt: "r0", purpose: "registration", ttlMs: 1000, issuedBy: actor });
    const listed = await links.list(tenantId, "r1");
    expect(listed.map((link) => link.linkId)).toEqual([plain.linkId, issued.linkId]);
  });

  it("revoke once (again changes nothing), refuse another registration's link and never forget who revoked", async () => {
    const { factory } = ownTables();
    let now = Date.parse("2026-03-01T10:00:00.000Z");
    const links = new ConsentLinkStore(factory, () => now);
    const tenantId = randomUUID();
    const issued = await links.issue({ tenantId, registeredAt: "r1", purpose: "registration", ttlMs: 60_000, issuedBy: actor });
    expect(await links.revoke(tenantId, issued.linkId, "r2", actor)).toBeUndefined();
    expect(await links.revokedSince(tenantId, issued.linkId)).toBe(false);
    now += 5000;
    const revoked = await links.revoke(tenantId, issued.linkId, "r1", actor);
    expect(revoked).toMatchObject({ revokedAt: "2026-03-01T10:00:05.000Z", revokedBy: actor.name.slice(0, 128) });
    now += 5000;
    expect(await links.revoke(tenantId, issued.linkId, "r1", { kind: "k", id: "i", name: "Someone else" })).toMatchObject({ revokedAt: "2026-03-01T10:00:05.000Z", revokedBy: actor.name.slice(0, 128) });
    expect(await links.revokedSince(tenantId, issued.linkId)).toBe(true);
    expect(await links.revokedSince(tenantId, "Ab3_-Ab3_-Ab3_-Ab3_-Ab")).toBe(true);
    expect(await links.claim(tenantId, issued.linkId, tenant(), "c1")).toBe("revoked");
  });

  it("let one sign-in claim a link at a time, until it gives it back or 15 minutes pass; spent links stay spent", async () => {
    const { factory } = ownTables();
    let now = Date.parse("2026-03-01T10:00:00.000Z");
    const links = new ConsentLinkStore(factory, () => now);
    const tenantId = randomUUID();
    const issued = await links.issue({ tenantId, registeredAt: "r1", purpose: "registration", ttlMs: 3_600_000, issuedBy: actor });
    expect(await links.claim(tenantId, issued.linkId, tenant({ createdAt: "r0" }), "a")).toBe("unknown_link");
    expect(await links.claim(tenantId, issued.linkId, tenant(), "a")).toBeUndefined();
    expect(await links.claim(tenantId, issued.linkId, tenant(), "a")).toBeUndefined();
    expect(await links.claim(tenantId, issued.linkId, tenant(), "b")).toBe("in_use");
    now += 15 * 60_000 - 1;
    expect(await links.claim(tenantId, issued.linkId, tenant(), "b")).toBe("in_use");
    await links.release(tenantId, issued.linkId, "b");
    expect(await links.claim(tenantId, issued.linkId, tenant(), "b")).toBe("in_use");
    now += 1;
    expect(await links.claim(tenantId, issued.linkId, tenant(), "b")).toBeUndefined();
    await links.release(tenantId, issued.linkId, "b");
    expect(await links.claim(tenantId, issued.linkId, tenant(), "c")).toBeUndefined();
    now += 1000;
    await links.markUsed(tenantId, issued.linkId);
    const used = await links.get(tenantId, issued.linkId, "r1");
    expect(used?.usedAt).toBe(new Date(now).toISOString());
    expect(await links.claim(tenantId, issued.linkId, tenant(), "c")).toBe("spent");
    await links.release(tenantId, "Ab3_-Ab3_-Ab3_-Ab3_-Ab", "c");
  });

  it("revoke and claim again after another instance wrote the link first, four times at most, and a release that loses such a race leaves the claim to lapse", async () => {
    const own = ownTables();
    const { factory, race } = racingTables(own.factory);
    const now = Date.parse("2026-03-01T10:00:00.000Z");
    const links = new ConsentLinkStore(factory, () => now);
    const tenantId = randomUUID();
    const issue = () => links.issue({ tenantId, registeredAt: "r1", purpose: "registration", ttlMs: 3_600_000, issuedBy: actor });
    const a = await issue();
    race(4);
    expect(await links.revoke(tenantId, a.linkId, "r1", actor)).toMatchObject({ revokedAt: "2026-03-01T10:00:00.000Z" });
    const b = await issue();
    race(5);
    await expect(links.revoke(tenantId, b.linkId, "r1", actor)).rejects.toMatchObject({ statusCode: 412 });
    expect((await links.get(tenantId, b.linkId, "r1"))?.revokedAt).toBeUndefined();
    race(4);
    expect(await links.claim(tenantId, b.linkId, tenant(), "first")).toBeUndefined();
    expect(await links.claim(tenantId, b.linkId, tenant(), "second")).toBe("in_use");
    const c = await issue();
    race(5);
    await expect(links.claim(tenantId, c.linkId, tenant(), "first")).rejects.toMatchObject({ statusCode: 412 });
    expect(await links.claim(tenantId, c.linkId, tenant(), "second")).toBeUndefined();
    race(1);
    await links.release(tenantId, b.linkId, "first");
    expect(await links.claim(tenantId, b.linkId, tenant(), "second")).toBe("in_use");
    await links.release(tenantId, b.linkId, "first");
    expect(await links.claim(tenantId, b.linkId, tenant(), "second")).toBeUndefined();
    // Any other failure of the release's write is passed on: here the row vanished meanwhile.
    race(1, "delete");
    await expect(links.release(tenantId, b.linkId, "second")).rejects.toMatchObject({ statusCode: 404 });
  });

  it("list the newest 200 links, the same second's by id, and fail rather than call a link unknown when the table cannot be read", async () => {
    const { factory, raw } = ownTables();
    const links = new ConsentLinkStore(factory, () => Date.parse("2026-03-01T10:00:00.000Z"));
    const tenantId = randomUUID();
    const twins = [
      await links.issue({ tenantId, registeredAt: "r1", purpose: "registration", ttlMs: 1000, issuedBy: actor }),
      await links.issue({ tenantId, registeredAt: "r1", purpose: "registration", ttlMs: 1000, issuedBy: actor }),
    ];
    expect((await links.list(tenantId, "r1")).map((link) => link.linkId)).toEqual(twins.map((link) => link.linkId).sort((a, b) => a.localeCompare(b)));
    const table = raw(TABLES.consentLinks);
    const older = Array.from({ length: 200 }, (_, i) => ({
      partitionKey: tenantId,
      rowKey: `old${String(i).padStart(19, "0")}`,
      registeredAt: "r1",
      purpose: "registration",
      source: "",
      createdAt: new Date(Date.parse("2026-02-01T00:00:00.000Z") + i * 1000).toISOString(),
      expiresAt: "2026-02-08T00:00:00.000Z",
      issuedBy: "o",
      usedAt: "",
      revokedAt: "",
      revokedBy: "",
    }));
    for (let i = 0; i < older.length; i += 100) await table.submitTransaction(older.slice(i, i + 100).map((entity) => ["create", entity] as ["create", typeof entity]));
    const listed = await links.list(tenantId, "r1");
    expect(listed).toHaveLength(200);
    expect(listed.slice(0, 2).map((link) => link.linkId)).toEqual(twins.map((link) => link.linkId).sort((a, b) => a.localeCompare(b)));
    expect(listed.at(-1)?.linkId).toBe(older[2]?.rowKey);
    // An id no link can have (the signed link's format) is not looked up: Table keys forbid some of its characters.
    for (const bad of ["a/b", "a#b", "a?b", "a\\b"]) {
      expect(await links.get(tenantId, bad, "r1")).toBeUndefined();
      expect(await links.revokedSince(tenantId, bad)).toBe(true);
    }
    const dead = new ConsentLinkStore(deadTables, () => 0);
    await expect(dead.get(tenantId, twins[0]?.linkId ?? "", "r1")).rejects.toBeDefined();
    await expect(dead.revokedSince(tenantId, twins[0]?.linkId ?? "")).rejects.toBeDefined();
  });

  it("decide by the tenant's state which links may still start a sign-in", () => {
    const link = (over: Partial<ConsentLinkRecord> = {}): ConsentLinkRecord => ({
      linkId: "l",
      tenantId: "t",
      purpose: "registration",
      createdAt: "2026-03-02T00:00:00.000Z",
      expiresAt: "2026-03-09T00:00:00.000Z",
      issuedBy: "o",
      ...over,
    });
    expect(linkRefusal(undefined, { status: "pending_consent" })).toBe("unknown_link");
    expect(linkRefusal(link({ revokedAt: "x", usedAt: "y" }), { status: "pending_consent" })).toBe("revoked");
    expect(linkRefusal(link({ usedAt: "y" }), { status: "pending_consent" })).toBe("spent");
    expect(linkRefusal(link(), { status: "pending_consent" })).toBeUndefined();
    expect(linkRefusal(link(), { status: "reconsent_required" })).toBeUndefined();
    expect(linkRefusal(link(), { status: "connected", consentedAt: "2026-03-01T00:00:00.000Z" })).toBe("spent");
    expect(linkRefusal(link({ purpose: "reconsent" }), { status: "connected", consentedAt: "2026-03-01T00:00:00.000Z" })).toBeUndefined();
    expect(linkRefusal(link({ purpose: "reconsent" }), { status: "connected" })).toBeUndefined();
    expect(linkRefusal(link({ purpose: "reconsent" }), { status: "connected", consentedAt: "2026-03-02T00:00:00.000Z" })).toBe("spent");
    expect(linkRefusal(link({ purpose: "reconsent" }), { status: "connected", consentedAt: "2026-03-03T00:00:00.000Z" })).toBe("spent");
  });
});

// ---- signing key ----------------------------------------------------------------------------

describe("the signing key", () => {
  beforeAll(setup);

  let createKeyVaultSecretStore: typeof import("../../shared/secrets/secretStore").createKeyVaultSecretStore;
  beforeAll(async () => {
    ({ createKeyVaultSecretStore } = await import("../../shared/secrets/secretStore"));
  });
  function vaultStore(): SecretStore {
    return createKeyVaultSecretStore({
      vaultUrl: stack.vault.url,
      credential: { getToken: async () => ({ token: stack.vaultToken, expiresOnTimestamp: Date.now() + 3_600_000 }) },
      localDevCaPem: stack.certPem,
      timeoutMs: 5_000,
    });
  }
  /** The same vault under a name of this test's own (the key's name is fixed). */
  function renamed(store: SecretStore, name: string, writes: string[]): SecretStore {
    const map = (n: string) => (n === SIGNING_KEY_SECRET_NAME ? name : n);
    return {
      ...store,
      getOldest: (n) => store.getOldest(map(n)),
      set: (n, value, options) => {
        writes.push(n);
        return store.set(map(n), value, options);
      },
    } as SecretStore;
  }

  it("is made once (32 random bytes, tagged), kept ten minutes, then read again; concurrent callers share one load", async () => {
    const name = `signing-${randomBytes(4).toString("hex")}`;
    const writes: string[] = [];
    let now = 1_000_000;
    const provider = new SigningKeyProvider(renamed(vaultStore(), name, writes), () => now);
    const [a, b] = await Promise.all([provider.get(), provider.get()]);
    expect(writes).toEqual([SIGNING_KEY_SECRET_NAME]);
    expect(a.length).toBe(32);
    expect(b.equals(a)).toBe(true);
    expect(stack.vault.peekLatest(name)).toMatchObject({ contentType: "application/vnd.mssp.hmac-key", tags: { purpose: "consent-link-signing" } });
    expect(Buffer.from(stack.vault.peekLatest(name)?.value ?? "", "base64").equals(a)).toBe(true);
    // A newer version appears: the cached key is used until ten minutes pass, and the oldest after.
    stack.vault.putSecret(name, randomBytes(32).toString("base64"));
    stack.vault.setFailure({ status: 500, times: 1 });
    now += 10 * 60_000 - 1;
    expect((await provider.get()).equals(a)).toBe(true);
    stack.vault.setFailure(null);
    now += 1;
    expect((await provider.get()).equals(a)).toBe(true);
    expect(writes).toHaveLength(1);
  });

  it("refuses a key shorter than 32 bytes", async () => {
    const name = `signing-${randomBytes(4).toString("hex")}`;
    stack.vault.putSecret(name, randomBytes(31).toString("base64"));
    const provider = new SigningKeyProvider(renamed(vaultStore(), name, []), () => 0);
    await expect(provider.get()).rejects.toThrow("consent link signing key in Key Vault is missing or shorter than 32 bytes");
    const exact = `signing-${randomBytes(4).toString("hex")}`;
    stack.vault.putSecret(exact, randomBytes(32).toString("base64"));
    expect((await new SigningKeyProvider(renamed(vaultStore(), exact, []), () => 0).get()).length).toBe(32);
  });

  it("takes a key replaced in Key Vault (its old version disabled) exactly ten minutes after it last read it, not before", async () => {
    const name = `signing-${randomBytes(4).toString("hex")}`;
    const first = randomBytes(32);
    const second = randomBytes(32);
    const firstVersion = stack.vault.putSecret(name, first.toString("base64"));
    stack.vault.putSecret(name, second.toString("base64"));
    let now = 5_000_000;
    const provider = new SigningKeyProvider(renamed(vaultStore(), name, []), () => now);
    expect((await provider.get()).equals(first)).toBe(true);
    stack.vault.setEnabled(name, firstVersion, false);
    now += 10 * 60_000 - 1;
    expect((await provider.get()).equals(first)).toBe(true);
    now += 1;
    expect((await provider.get()).equals(second)).toBe(true);
    now += 10 * 60_000 - 1;
    stack.vault.setEnabled(name, firstVersion, true);
    expect((await provider.get()).equals(second)).toBe(true);
  });

  it("refuses to sign with nothing when Key Vault keeps no key after the write", async () => {
    const forgetful = { getOldest: async () => undefined, set: async () => undefined } as unknown as SecretStore;
    await expect(new SigningKeyProvider(forgetful, () => 0).get()).rejects.toThrow("consent link signing key in Key Vault is missing or shorter than 32 bytes");
  });
});

// ---- pages and models -----------------------------------------------------------------------

describe("the pages", () => {
  it("carry the title, the MSSP's name, the safety headers, and the copy script only with copyable values", () => {
    const plain = renderPage(418, { title: "A title", paragraphs: ["First <b>", "Second"] }, { msspName: "Tailspin" });
    expect(plain.status).toBe(418);
    expect(titleOf(plain.body)).toBe("A title");
    expect(plain.body).toContain("<p>First &lt;b&gt;</p>");
    expect(plain.body).toContain("Connecting Microsoft Defender for Endpoint to Tailspin");
    expect(plain.body).toContain("This consent was requested by Tailspin.");
    expect(plain.body).not.toContain("copy.js");
    expect(plain.body).not.toContain("<script");
    expect(plain.body).toContain('<body class="consent">');
    // Nothing in the page's main part but its title and paragraphs.
    const mainText = (body: string) => (/<main[^>]*>([\s\S]*)<\/main>/.exec(body)?.[1] ?? "").replace(/<[^>]*>/g, "").replace(/\s+/g, " ").trim();
    expect(mainText(plain.body)).toBe("A title First &lt;b&gt;Second");
    expect(plain.body).not.toContain("<ol");
    expect(plain.body).not.toContain("<dl");
    expect(plain.body).not.toContain("Simulated Microsoft cloud");
    expect(plain.headers["Content-Security-Policy"]).toContain("frame-ancestors 'none'");
    expect(plain.headers["Cache-Control"]).toBe("no-store");
    const full = renderPage(
      200,
      { title: "T", paragraphs: [], steps: ["one"], copyable: [["Application ID", "app-1"]], details: [["Ref", "r-9"]] },
      { sandbox: true },
    );
    expect(full.body).toContain('<ol class="steps"><li>one</li></ol>');
    expect(full.body).toContain("app-1");
    expect(full.body).toContain('<div class="copy-values">');
    expect(full.body).toContain('<input id="value-1"');
    expect(full.body).toContain('<dl class="facts">');
    expect(full.body).toContain("copy.js");
    expect(full.body).toContain("<dt>Ref</dt><dd><code>r-9</code></dd>");
    expect(full.body).toContain("Simulated Microsoft cloud (sandbox)");
    expect(full.body).toMatch(/Connecting Microsoft Defender for Endpoint to (?!Tailspin)\S/);
    const empty = renderPage(200, { title: "T", paragraphs: [], steps: [], copyable: [], details: [] });
    expect(mainText(empty.body)).toBe("T");
    expect(empty.body).not.toContain("<ol");
    expect(empty.body).not.toContain("copy-values");
    expect(empty.body).not.toContain("<dl");
  });

  it("answer an unexpected failure with 503 and only a reference", () => {
    const failure = unexpectedFailurePage("ref-123", { msspName: "Tailspin" });
    expect(failure.status).toBe(503);
    expect(titleOf(failure.body)).toBe("Something went wrong");
    expect(failure.body).toContain("give Tailspin this reference:");
    expect(failure.body).toContain("<dt>Reference</dt><dd><code>ref-123</code></dd>");
    expect(failure.body).toContain("consent may not have taken effect");
    expect(unexpectedFailurePage("r").body).toMatch(/give \S+/);
    expect(unexpectedFailurePage("r").body).not.toContain("give  this");
  });
});

describe("the consent models", () => {
  it("name the permission and scope of each model and source", () => {
    expect(isConsentModel("delegated")).toBe(true);
    expect(isConsentModel("application")).toBe(true);
    expect(isConsentModel("Application")).toBe(false);
    expect(isConsentModel(1)).toBe(false);
    expect(consentModelOf({})).toBe("delegated");
    expect(consentModelOf({ consentModel: "application" })).toBe("application");
    expect(tokenScope("application", "mde")).toBe("https://api.securitycenter.microsoft.com/.default");
    expect(tokenScope("application", "graph")).toBe("https://graph.microsoft.com/.default");
    expect(tokenScope("delegated", "mde")).toBe("https://api.securitycenter.microsoft.com/Alert.Read");
    expect(tokenScope("delegated", "graph")).toBe("https://graph.microsoft.com/SecurityAlert.Read.All");
    expect(permissionLabel("application", "mde")).toBe("WindowsDefenderATP Alert.Read.All (application)");
    expect(permissionLabel("application", "graph")).toBe("Microsoft Graph SecurityAlert.Read.All (application)");
    expect(permissionLabel("delegated", "mde")).not.toContain("(application)");
    expect(APPLICATION_PERMISSIONS.mde.resource).toBe("https://api.securitycenter.microsoft.com");
    expect(APPLICATION_PERMISSIONS.graph.resource).toBe("https://graph.microsoft.com");
    expect(CONSENT_MODEL_SUMMARIES.delegated).toContain("refresh token in Key Vault");
    expect(CONSENT_MODEL_SUMMARIES.application).toContain("stores no token at all");
  });

  it("accept a token's roles only when they carry the source's read permission or its ReadWrite form", () => {
    expect(carriesRole(["Alert.Read.All"], "mde")).toBe(true);
    expect(carriesRole(["x", "Alert.ReadWrite.All"], "mde")).toBe(true);
    expect(carriesRole(["SecurityAlert.Read.All"], "mde")).toBe(false);
    expect(carriesRole([], "mde")).toBe(false);
    expect(carriesRole(["SecurityAlert.Read.All"], "graph")).toBe(true);
    expect(carriesRole(["SecurityAlert.ReadWrite.All"], "graph")).toBe(true);
    expect(carriesRole(["Alert.Read.All"], "graph")).toBe(false);
  });
});

// ---- sessions -------------------------------------------------------------------------------

describe("the sign-in sessions", () => {
  const key = randomBytes(32);

  it("derive verifier, S256 challenge and nonce from the state and keep only the state's hash", async () => {
    const { factory, raw } = ownTables();
    const sessions = new ConsentSessionStore(factory, () => Date.parse("2026-03-01T10:00:00.000Z"));
    const tenantId = randomUUID();
    const session = await sessions.begin(key, tenantId, "link-1");
    expect(session.state).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(session.codeChallenge).toBe(createHash("sha256").update(session.codeVerifier).digest("base64url"));
    expect(session.codeVerifier).not.toBe(session.nonce);
    const hash = sha256hex(session.state);
    const row = await raw(TABLES.consentSessions).getEntity<Record<string, unknown>>(sessionPartition(hash), hash);
    expect(row).toMatchObject({ kind: "session", tenantId, linkId: "link-1", createdAt: "2026-03-01T10:00:00.000Z", expiresAt: "2026-03-01T10:15:00.000Z", usedAt: "" });
    expect(JSON.stringify(row)).not.toContain(session.state);
    expect(JSON.stringify(row)).not.toContain(session.codeVerifier);
    const claimed = await sessions.claim(key, session.state);
    expect(claimed).toEqual({ outcome: "claimed", session });
    expect(await sessions.claim(key, session.state)).toEqual({ outcome: "replayed" });
    expect(await sessions.claim(key, "x".repeat(43))).toEqual({ outcome: "unknown" });
    expect(await sessions.claim(key, `${session.state}x`)).toEqual({ outcome: "unknown" });
    expect((await sessions.begin(key, tenantId)).linkId).toBe(LEGACY_LINK_ID);
    await expect(sessions.begin(key, tenantId, "bad link")).rejects.toThrow("consent link id must be 1-64 characters of A-Z a-z 0-9 _ -");
    await expect(sessions.begin(key, "tenant/1", "l")).rejects.toThrow("tenant id is not usable as a table key");
  });

  it("expire at exactly 15 minutes", async () => {
    const { factory } = ownTables();
    let now = Date.parse("2026-03-01T10:00:00.000Z");
    const sessions = new ConsentSessionStore(factory, () => now);
    const first = await sessions.begin(key, randomUUID(), "l");
    const second = await sessions.begin(key, randomUUID(), "l");
    now += SESSION_LIFETIME_MS - 1;
    expect((await sessions.claim(key, first.state)).outcome).toBe("claimed");
    now += 1;
    expect(await sessions.claim(key, second.state)).toEqual({ outcome: "expired" });
  });

  it("cap open sign-ins per link and per tenant, say when to retry, and free a place when one is claimed or its link revoked", async () => {
    const { factory } = ownTables();
    let now = Date.parse("2026-03-01T10:00:00.000Z");
    const sessions = new ConsentSessionStore(factory, () => now, { maxOpenPerTenant: 3, maxOpenPerLink: 2 });
    const tenantId = randomUUID();
    const a = await sessions.begin(key, tenantId, "la");
    now += 10_500;
    await sessions.begin(key, tenantId, "la");
    const refused = await sessions.begin(key, tenantId, "la").then(() => undefined, (error: unknown) => error);
    expect(refused).toBeInstanceOf(ConsentSessionLimitError);
    expect(refused).toMatchObject({ scope: "link", retryAfterSeconds: 890, name: "ConsentSessionLimitError", message: "too many open consent sessions for this link; retry in 890 s" });
    await sessions.begin(key, tenantId, "lb");
    await expect(sessions.begin(key, tenantId, "lc")).rejects.toMatchObject({ scope: "tenant", retryAfterSeconds: 890 });
    expect((await sessions.claim(key, a.state)).outcome).toBe("claimed");
    await sessions.begin(key, tenantId, "la");
    await expect(sessions.begin(key, tenantId, "lc")).rejects.toMatchObject({ scope: "tenant" });
    await sessions.releaseLink(tenantId, "la");
    await sessions.begin(key, tenantId, "lc");
    await sessions.releaseLink(tenantId, "unknown-link");
    await sessions.releaseLink(randomUUID(), "la");
    // Expired places count no more.
    now += SESSION_LIFETIME_MS;
    await sessions.begin(key, tenantId, "la");
    await sessions.begin(key, tenantId, "la");
    // Another tenant has its own places.
    await sessions.begin(key, randomUUID(), "la");
    expect(DEFAULT_MAX_OPEN_PER_TENANT).toBe(30);
    expect(DEFAULT_MAX_OPEN_PER_LINK).toBe(10);
  });

  it("refuse with at least one second to wait, and by default ten per link", async () => {
    const { factory } = ownTables();
    let now = Date.parse("2026-03-01T10:00:00.000Z");
    const sessions = new ConsentSessionStore(factory, () => now);
    const tenantId = randomUUID();
    for (let i = 0; i < 10; i++) await sessions.begin(key, tenantId, "l");
    now += SESSION_LIFETIME_MS - 1;
    await expect(sessions.begin(key, tenantId, "l")).rejects.toMatchObject({ scope: "link", retryAfterSeconds: 1 });
  });

  it("read a limit row that was edited by hand as empty rather than refusing starts", async () => {
    const { factory, raw } = ownTables();
    const sessions = new ConsentSessionStore(factory, () => Date.parse("2026-03-01T10:00:00.000Z"), { maxOpenPerTenant: 1 });
    const tenantId = randomUUID();
    await sessions.begin(key, tenantId, "l");
    const table = raw(TABLES.consentSessions);
    const partition = sessionPartition(sha256hex(tenantId));
    for (const open of ["not json", "{}", JSON.stringify([{ h: 1, l: "l", e: 9e15 }, { h: "x", l: 2, e: 9e15 }, { h: "x", l: "l", e: "9" }, { h: "x", l: "l", e: "9000000000000000" }, null, 7])]) {
      await table.updateEntity({ partitionKey: partition, rowKey: `limit_${tenantId}`, open }, "Merge");
      await sessions.begin(key, tenantId, "l");
    }
    await expect(sessions.begin(key, tenantId, "l")).rejects.toMatchObject({ scope: "tenant" });
  });

  it("purge what expired more than an hour ago, within its bounds, and resume where it stopped", async () => {
    const { factory, raw } = ownTables();
    let now = Date.parse("2026-03-01T10:00:00.000Z");
    const sessions = new ConsentSessionStore(factory, () => now, { maxOpenPerTenant: 100, maxOpenPerLink: 100 });
    const tenants = [randomUUID(), randomUUID()];
    const old: string[] = [];
    for (let i = 0; i < 6; i++) old.push((await sessions.begin(key, tenants[i % 2] as string, "l")).state);
    now += SESSION_LIFETIME_MS + PURGE_GRACE_MS;
    const fresh = await sessions.begin(key, randomUUID(), "l");
    // Exactly at the grace's end: kept.
    expect(await sessions.purge()).toMatchObject({ deletedSessions: 0, deletedLimitRows: 0, complete: true, partitionsVisited: PURGE_PARTITIONS.length });
    now += 1;
    const bounded = await sessions.purge({ maxDeletes: 2 });
    expect(bounded.complete).toBe(false);
    expect(bounded.deletedSessions + bounded.deletedLimitRows).toBe(2);
    expect(PURGE_PARTITIONS).toContain(bounded.nextPartition);
    const cursor = await raw(TABLES.consentSessions).getEntity<{ nextPartition: string }>("housekeeping", "purgeCursor");
    expect(cursor.nextPartition).toBe(bounded.nextPartition);
    const rest = await sessions.purge();
    expect(rest.complete).toBe(true);
    expect(bounded.deletedSessions + rest.deletedSessions).toBe(6);
    expect(bounded.deletedLimitRows + rest.deletedLimitRows).toBe(2);
    expect(rest.transactions).toBeGreaterThan(0);
    expect(await sessions.claim(key, old[0] as string)).toEqual({ outcome: "unknown" });
    expect((await sessions.claim(key, fresh.state)).outcome).toBe("claimed");
    const timedOut = await sessions.purge({ maxMillis: 0 });
    expect(timedOut).toMatchObject({ complete: false, deletedSessions: 0, partitionsVisited: 1 });
  });

  it("derive the verifier and nonce from the state with the signing key, so a sign-in begun before a deployment still redeems after it", async () => {
    const { factory } = ownTables();
    const sessions = new ConsentSessionStore(factory, () => Date.parse("2026-03-01T10:00:00.000Z"));
    const session = await sessions.begin(key, randomUUID(), "l");
    const mac = (label: string) => createHmac("sha256", key).update(`${label}:${session.state}`).digest("base64url");
    expect(session.codeVerifier).toBe(mac("pkce-verifier"));
    expect(session.nonce).toBe(mac("oidc-nonce"));
    const hash = sha256hex(session.state);
    expect(sessionPartition(hash)).toBe(`s${hash[0]}`);
  });

  it("hold the caps when starts race: another start's write or create, or the purge deleting the row, makes a start read again, eight tries at most", async () => {
    const own = ownTables();
    const { factory, race } = racingTables(own.factory);
    const now = Date.parse("2026-03-01T10:00:00.000Z");
    const sessions = new ConsentSessionStore(factory, () => now, { maxOpenPerTenant: 2, maxOpenPerLink: 5 });
    // A burst on a fresh tenant: every start but one loses the create (409) or the update (412).
    const burst = randomUUID();
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => sessions.begin(key, burst, "l")));
    expect(results.filter((result) => result.status === "fulfilled")).toHaveLength(2);
    for (const result of results) if (result.status === "rejected") expect(result.reason).toMatchObject({ name: "ConsentSessionLimitError", scope: "tenant" });
    // Seven lost updates in a row: the eighth try wins. Eight: refused for a second.
    const tenantId = randomUUID();
    await sessions.begin(key, tenantId, "l");
    race(7);
    await sessions.begin(key, tenantId, "l");
    const other = randomUUID();
    await sessions.begin(key, other, "l");
    race(8);
    await expect(sessions.begin(key, other, "l")).rejects.toMatchObject({ name: "ConsentSessionLimitError", scope: "tenant", retryAfterSeconds: 1 });
    // The purge removed the row between the read and the write: the next try creates it again.
    race(1, "delete");
    await sessions.begin(key, other, "l");
    await sessions.begin(key, other, "l");
    await expect(sessions.begin(key, other, "l")).rejects.toMatchObject({ scope: "tenant", retryAfterSeconds: 900 });
  }, 30_000);

  it("free a revoked link's places even when the row changes meanwhile, and count a claim lost to another callback as replayed", async () => {
    const own = ownTables();
    const { factory, race } = racingTables(own.factory);
    const now = Date.parse("2026-03-01T10:00:00.000Z");
    const sessions = new ConsentSessionStore(factory, () => now, { maxOpenPerTenant: 1 });
    const tenantId = randomUUID();
    await sessions.begin(key, tenantId, "la");
    race(2);
    await sessions.releaseLink(tenantId, "la");
    const b = await sessions.begin(key, tenantId, "lb");
    // Three lost writes: the release gives up, and the place stays taken until it expires.
    race(3);
    await sessions.releaseLink(tenantId, "lb");
    await expect(sessions.begin(key, tenantId, "lc")).rejects.toMatchObject({ scope: "tenant" });
    // The purge deleted the row meanwhile: nothing left to free, no error.
    race(1, "delete");
    await sessions.releaseLink(tenantId, "lb");
    await sessions.begin(key, tenantId, "lc");
    // Another callback claimed the session between this one's read and write.
    race(1);
    expect(await sessions.claim(key, b.state)).toEqual({ outcome: "replayed" });
    // Any other failure of that write is passed on: here the purge deleted the session meanwhile.
    const c = await sessions.begin(key, randomUUID(), "l");
    race(1, "delete");
    await expect(sessions.claim(key, c.state)).rejects.toMatchObject({ statusCode: 404 });
  }, 30_000);

  it("free only the revoked link's places", async () => {
    const { factory } = ownTables();
    const sessions = new ConsentSessionStore(factory, () => Date.parse("2026-03-01T10:00:00.000Z"), { maxOpenPerTenant: 2 });
    const tenantId = randomUUID();
    await sessions.begin(key, tenantId, "la");
    await sessions.begin(key, tenantId, "lb");
    await sessions.releaseLink(tenantId, "la");
    await sessions.begin(key, tenantId, "lc");
    await expect(sessions.begin(key, tenantId, "ld")).rejects.toMatchObject({ scope: "tenant" });
  });

  it("purge from the partition the last run stopped in onwards, in transactions of 100, and count a row another purge deleted meanwhile once", async () => {
    const own = ownTables();
    const { factory, beforeSubmit } = racingTables(own.factory);
    const now = Date.parse("2026-03-01T10:00:00.000Z");
    const sessions = new ConsentSessionStore(factory, () => now);
    await sessions.begin(key, randomUUID(), "l"); // creates the table
    const table = own.raw(TABLES.consentSessions);
    const expired = new Date(now - 2 * 3_600_000).toISOString();
    const row = (partitionKey: string, rowKey: string) => ({ partitionKey, rowKey, kind: "session", tenantId: "t", linkId: "l", createdAt: expired, expiresAt: expired, usedAt: "" });
    const exists = (partitionKey: string, rowKey: string) => table.getEntity(partitionKey, rowKey).then(() => true, () => false);
    await table.createEntity(row("s4", "a4"));
    await table.createEntity(row("s6", "a6"));
    await table.upsertEntity({ partitionKey: "housekeeping", rowKey: "purgeCursor", nextPartition: "s5" }, "Replace");
    const one = await sessions.purge({ maxDeletes: 1 });
    expect(one).toMatchObject({ deletedSessions: 1, complete: false, nextPartition: "s7" });
    expect([await exists("s6", "a6"), await exists("s4", "a4")]).toEqual([false, true]);
    // Wraps round: from s7 to sf, then the legacy partition, then s0 on.
    const rest = await sessions.purge();
    expect(rest).toMatchObject({ deletedSessions: 1, complete: true, nextPartition: "s7", partitionsVisited: 17 });
    expect(await exists("s4", "a4")).toBe(false);
    // A limit row counts against the bound as much as a session does.
    await table.createEntity({ ...row("s2", "limit_t"), kind: "limit" });
    await table.createEntity(row("s2", "b2"));
    await table.upsertEntity({ partitionKey: "housekeeping", rowKey: "purgeCursor", nextPartition: "s2" }, "Replace");
    expect(await sessions.purge({ maxDeletes: 1 })).toMatchObject({ deletedLimitRows: 1, deletedSessions: 0, complete: false, nextPartition: "s2" });
    expect(await sessions.purge()).toMatchObject({ deletedSessions: 1, complete: true });
    // A time bound given stops the run once it has passed (two table requests take longer than 1 ms).
    expect(await sessions.purge({ maxMillis: 1 })).toMatchObject({ complete: false, partitionsVisited: 1 });
    // 101 expired sessions in one partition: two transactions.
    const many = Array.from({ length: 101 }, (_, i) => row("s9", `m${String(i).padStart(3, "0")}`));
    for (let i = 0; i < many.length; i += 100) await table.submitTransaction(many.slice(i, i + 100).map((entity) => ["create", entity] as TransactionAction));
    const big = await sessions.purge();
    expect(big).toMatchObject({ deletedSessions: 101, transactions: 2, complete: true });
    // Another purge deletes one row of the batch first: the batch fails as a whole, the rest go one by one.
    for (const entity of many.slice(0, 3)) await table.createEntity(entity);
    beforeSubmit(async (target, actions) => {
      const [, first] = actions[0] as ["delete", { partitionKey: string; rowKey: string }];
      await target.deleteEntity(first.partitionKey, first.rowKey);
    });
    const raced = await sessions.purge();
    expect(raced).toMatchObject({ deletedSessions: 2, transactions: 1, complete: true });
    for (const entity of many.slice(0, 3)) expect(await exists(entity.partitionKey, entity.rowKey)).toBe(false);
  }, 30_000);

  it("still completes a sign-in begun in the old single partition, and the purge empties that partition too", async () => {
    const { factory, raw } = ownTables();
    let now = Date.parse("2026-03-01T10:00:00.000Z");
    const sessions = new ConsentSessionStore(factory, () => now);
    await sessions.begin(key, randomUUID(), "l"); // creates the table
    const state = randomBytes(32).toString("base64url");
    const hash = sha256hex(state);
    const tenantId = randomUUID();
    const table = raw(TABLES.consentSessions);
    await table.createEntity({ partitionKey: "session", rowKey: hash, kind: "session", tenantId, linkId: "", createdAt: new Date(now).toISOString(), expiresAt: new Date(now + 60_000).toISOString(), usedAt: "" });
    const claimed = await sessions.claim(key, state);
    expect(claimed).toMatchObject({ outcome: "claimed", session: { tenantId, linkId: LEGACY_LINK_ID, state } });
    now += 2 * 3_600_000;
    const report = await sessions.purge();
    expect(report.deletedSessions).toBeGreaterThanOrEqual(2);
    await expect(table.getEntity("session", hash)).rejects.toMatchObject({ statusCode: 404 });
  });

  /**
   * Tables whose next call of `method` first runs `hook` (another instance acting between the
   * purge's read and its write) and may then fail as the table service can: the RestError shape
   * the Tables SDK throws, with or without an HTTP status.
   */
  function scriptedTables(factory: TableFactory): {
    factory: TableFactory;
    next: (method: "deleteEntity" | "submitTransaction" | "getEntity", hook: (table: TableClient, args: unknown[]) => Promise<void>) => void;
  } {
    const hooks = new Map<string, (table: TableClient, args: unknown[]) => Promise<void>>();
    return {
      next: (method, hook) => void hooks.set(method, hook),
      factory: {
        open: async (name) => {
          const table = await factory.open(name);
          return new Proxy(table, {
            get(target, property, receiver) {
              const value = Reflect.get(target, property, receiver) as unknown;
              const hook = typeof property === "string" ? hooks.get(property) : undefined;
              if (!hook || typeof value !== "function") return value;
              return async (...args: unknown[]) => {
                hooks.delete(property as string);
                await hook(target, args);
                return (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
              };
            },
          });
        },
      },
    };
  }
  const tableError = (statusCode?: number) => Object.assign(new Error(statusCode ? `status ${statusCode}` : "socket hang up"), { name: "RestError", ...(statusCode ? { statusCode } : {}) });

  it("keep an expired sign-in for an hour, so a late callback hears it took too long rather than that it is unknown", async () => {
    const { factory } = ownTables();
    const begun = Date.parse("2026-03-01T10:00:00.000Z");
    let now = begun;
    const sessions = new ConsentSessionStore(factory, () => now);
    const late = await sessions.begin(key, randomUUID(), "l");
    // Fifteen minutes to finish, then an hour of grace.
    now = begun + 15 * 60_000 + 60 * 60_000;
    expect(await sessions.purge()).toMatchObject({ deletedSessions: 0, complete: true });
    expect(await sessions.claim(key, late.state)).toEqual({ outcome: "expired" });
    now += 1;
    expect((await sessions.purge()).deletedSessions).toBe(1);
    expect(await sessions.claim(key, late.state)).toEqual({ outcome: "unknown" });
  });

  it("start the first purge, or one whose cursor names no partition, at the legacy partition", async () => {
    const { factory, raw } = ownTables();
    const sessions = new ConsentSessionStore(factory, () => Date.parse("2026-03-01T10:00:00.000Z"));
    await sessions.begin(key, randomUUID(), "l"); // creates the table
    expect(await sessions.purge({ maxMillis: 0 })).toMatchObject({ complete: false, partitionsVisited: 1, nextPartition: "session" });
    await raw(TABLES.consentSessions).upsertEntity({ partitionKey: "housekeeping", rowKey: "purgeCursor", nextPartition: "s3" }, "Replace");
    expect(await sessions.purge({ maxMillis: 0 })).toMatchObject({ nextPartition: "s3" });
    await raw(TABLES.consentSessions).upsertEntity({ partitionKey: "housekeeping", rowKey: "purgeCursor", nextPartition: "nowhere" }, "Replace");
    expect(await sessions.purge({ maxMillis: 0 })).toMatchObject({ nextPartition: "session" });
  });

  it("purge limit rows within the bound, keep one a start reused meanwhile, and count one another purge deleted once", async () => {
    const own = ownTables();
    const { factory, next } = scriptedTables(own.factory);
    const now = Date.parse("2026-03-01T10:00:00.000Z");
    const sessions = new ConsentSessionStore(factory, () => now);
    await sessions.begin(key, randomUUID(), "l"); // creates the table, and a session and limit row that are not expired
    const table = own.raw(TABLES.consentSessions);
    const expired = new Date(now - 2 * 3_600_000).toISOString();
    const limitRow = (rowKey: string) => ({ partitionKey: "s2", rowKey, kind: "limit", tenantId: rowKey, open: "[]", expiresAt: expired });
    const exists = (rowKey: string) => table.getEntity("s2", rowKey).then(() => true, () => false);
    const fromS2 = () => table.upsertEntity({ partitionKey: "housekeeping", rowKey: "purgeCursor", nextPartition: "s2" }, "Replace");
    await table.createEntity(limitRow("limit_a"));
    await table.createEntity(limitRow("limit_b"));
    await fromS2();
    // Two expired limit rows in one page, one delete allowed: one goes, the run stops in s2.
    expect(await sessions.purge({ maxDeletes: 1 })).toMatchObject({ deletedLimitRows: 1, deletedSessions: 0, complete: false, nextPartition: "s2" });
    expect([await exists("limit_a"), await exists("limit_b")].filter(Boolean)).toHaveLength(1);
    await table.deleteEntity("s2", (await exists("limit_a")) ? "limit_a" : "limit_b");

    // A start writes the row between the purge's listing and its delete: the row stays.
    await table.createEntity(limitRow("limit_c"));
    await fromS2();
    next("deleteEntity", async (target, [partitionKey, rowKey]) => {
      await target.updateEntity({ partitionKey: partitionKey as string, rowKey: rowKey as string, open: "[]" }, "Merge");
    });
    expect(await sessions.purge()).toMatchObject({ deletedLimitRows: 0, complete: true });
    expect(await exists("limit_c")).toBe(true);

    // Another purge deleted it first: not counted, nothing fails.
    await fromS2();
    next("deleteEntity", async (target, [partitionKey, rowKey]) => void (await target.deleteEntity(partitionKey as string, rowKey as string)));
    expect(await sessions.purge()).toMatchObject({ deletedLimitRows: 0, complete: true });
    expect(await exists("limit_c")).toBe(false);

    // The table service failing the delete otherwise: the run fails, the row stays for the next.
    await table.createEntity(limitRow("limit_d"));
    await fromS2();
    next("deleteEntity", async () => Promise.reject(tableError(503)));
    await expect(sessions.purge()).rejects.toMatchObject({ statusCode: 503 });
    expect(await exists("limit_d")).toBe(true);
    expect(await sessions.purge()).toMatchObject({ deletedLimitRows: 1, complete: true });
  });

  it("fail a purge whose transaction gets no answer or whose one-by-one delete fails otherwise than 404, and a read the table refuses", async () => {
    const own = ownTables();
    const { factory, next } = scriptedTables(own.factory);
    const now = Date.parse("2026-03-01T10:00:00.000Z");
    const sessions = new ConsentSessionStore(factory, () => now);
    const open = await sessions.begin(key, randomUUID(), "l"); // creates the table
    const table = own.raw(TABLES.consentSessions);
    const expired = new Date(now - 2 * 3_600_000).toISOString();
    const row = (rowKey: string) => ({ partitionKey: "s5", rowKey, kind: "session", tenantId: "t", linkId: "l", createdAt: expired, expiresAt: expired, usedAt: "" });
    const exists = (rowKey: string) => table.getEntity("s5", rowKey).then(() => true, () => false);
    await table.createEntity(row("x1"));
    await table.createEntity(row("x2"));
    const fromS5 = () => table.upsertEntity({ partitionKey: "housekeeping", rowKey: "purgeCursor", nextPartition: "s5" }, "Replace");

    // No answer at all: nothing is known about the batch, so nothing is retried one by one.
    await fromS5();
    next("submitTransaction", async () => Promise.reject(tableError()));
    await expect(sessions.purge()).rejects.toThrow("socket hang up");
    expect([await exists("x1"), await exists("x2")]).toEqual([true, true]);

    // The batch refused, then a single delete answered 503: the run fails there.
    await fromS5();
    next("submitTransaction", async () => Promise.reject(tableError(400)));
    next("deleteEntity", async () => Promise.reject(tableError(503)));
    await expect(sessions.purge()).rejects.toMatchObject({ statusCode: 503 });
    expect(await exists("x1") || await exists("x2")).toBe(true);
    expect((await sessions.purge()).deletedSessions).toBeGreaterThanOrEqual(1);

    // A read refused with 503 is not "no such sign-in" nor "no cursor".
    next("getEntity", async () => Promise.reject(tableError(503)));
    await expect(sessions.claim(key, open.state)).rejects.toMatchObject({ statusCode: 503 });
    next("getEntity", async () => Promise.reject(tableError(503)));
    await expect(sessions.purge()).rejects.toMatchObject({ statusCode: 503 });
    expect((await sessions.claim(key, open.state)).outcome).toBe("claimed");
  });
});

// ---- application consent proof and source probe ---------------------------------------------

describe("the proof of an application consent", () => {
  beforeAll(setup);

  const noProbe: SourceProbe = async () => undefined;

  it("is proven by a token with the tenant, the role and a source that answers; the service principal is the token's oid", async () => {
    const tenantId = randomUUID();
    stack.entra.grantAppConsent(tenantId, stack.clientId, [`${APPLICATION_PERMISSIONS.mde.resource}/Alert.Read.All`]);
    const probed: unknown[] = [];
    const verifier = new ApplicationConsentVerifier({ entra: services.entra, clock, sleep: async () => undefined, probe: async (input) => void probed.push(input) });
    const proof = await verifier.prove({ tenantId: tenantId.toUpperCase(), source: "mde", defenderRegion: "eu" });
    expect(proof.kind).toBe("proven");
    expect(proof.kind === "proven" ? proof.servicePrincipalId : undefined).toMatch(/^[0-9a-f-]{36}$/);
    expect(probed).toEqual([{ tenantId: tenantId.toUpperCase(), source: "mde", defenderRegion: "eu", accessToken: expect.any(String) }]);
    await verifier.prove({ tenantId, source: "mde" });
    expect(probed[1]).not.toHaveProperty("defenderRegion");
  });

  it("waits 1, 2 and 3 s for a consent still spreading, then reports it pending with Entra's code", async () => {
    const tenantId = randomUUID();
    const waited: number[] = [];
    const verifier = new ApplicationConsentVerifier({ entra: services.entra, clock, sleep: async (ms) => void waited.push(ms), probe: noProbe });
    expect(await verifier.prove({ tenantId, source: "graph" })).toEqual({ kind: "pending", reason: "AADSTS7000229" });
    expect(waited).toEqual([1000, 2000, 3000]);
    expect(DEFAULT_PROPAGATION_DELAYS_MS).toEqual([1000, 2000, 3000]);
    // Granted while it waits: proven at the next attempt, no more waiting.
    waited.length = 0;
    const later = new ApplicationConsentVerifier({
      entra: services.entra,
      clock,
      sleep: async (ms) => {
        waited.push(ms);
        stack.entra.grantAppConsent(tenantId, stack.clientId, [`${APPLICATION_PERMISSIONS.graph.resource}/SecurityAlert.Read.All`]);
      },
      probe: noProbe,
      propagationDelaysMs: [5, 7],
    });
    expect((await later.prove({ tenantId, source: "graph" })).kind).toBe("proven");
    expect(waited).toEqual([5]);
    const none = new ApplicationConsentVerifier({ entra: services.entra, clock, sleep: async () => undefined, probe: noProbe, propagationDelaysMs: [] });
    expect(await none.prove({ tenantId: randomUUID(), source: "mde" })).toEqual({ kind: "pending", reason: "AADSTS7000229" });
  });

  it("tells a missing role, another tenant's token, Entra's refusal and the source's answers apart", async () => {
    const tenantId = randomUUID();
    stack.entra.grantAppConsent(tenantId, stack.clientId, [`${APPLICATION_PERMISSIONS.graph.resource}/SecurityAlert.Read.All`]);
    const prove = (probe: SourceProbe, source: "mde" | "graph" = "graph", entra = services.entra) =>
      new ApplicationConsentVerifier({ entra, clock, sleep: async () => undefined, probe, propagationDelaysMs: [] }).prove({ tenantId, source });
    expect(await prove(noProbe, "mde")).toEqual({ kind: "pending", reason: "role_missing" });
    const other = randomUUID();
    stack.entra.grantAppConsent(other, stack.clientId, [`${APPLICATION_PERMISSIONS.graph.resource}/SecurityAlert.Read.All`]);
    expect(await prove(noProbe, "graph", { acquireAppToken: (input) => services.entra.acquireAppToken({ ...input, tenantId: other }) } as typeof services.entra)).toEqual({ kind: "wrong_tenant" });
    stack.entra.removeAppRole(tenantId);
    expect(await prove(noProbe)).toEqual({ kind: "pending", reason: "role_missing" });
    stack.entra.grantAppConsent(tenantId, stack.clientId, [`${APPLICATION_PERMISSIONS.graph.resource}/SecurityAlert.ReadWrite.All`]);
    const fail = (code: "unauthorized" | "forbidden" | "server_error") => async () => {
      throw new DefenderApiError(code, `source said ${code}`);
    };
    expect(await prove(fail("unauthorized"))).toEqual({ kind: "pending", reason: "source_unauthorized" });
    expect(await prove(fail("forbidden"))).toEqual({ kind: "source_unavailable", code: "source_forbidden" });
    expect(await prove(fail("server_error"))).toEqual({ kind: "source_unavailable", code: "source_server_error" });
    expect(
      await prove(async () => {
        throw new Error("socket");
      }),
    ).toEqual({ kind: "source_unavailable", code: "source_unavailable" });
    stack.entra.failAllTokenRequests({ status: 401, error: "invalid_client", errorCode: 7000215 }, 1);
    expect(await prove(noProbe)).toMatchObject({ kind: "token_failed", failure: { category: "app_credential", aadsts: "AADSTS7000215" } });
  });

  it("reports as pending each answer Entra ID gives while a consent spreads, and any other refusal as a token failure", async () => {
    const once = (errorCode: number, error = "invalid_client") => {
      stack.entra.failAllTokenRequests({ status: 400, error, errorCode }, 1);
      return new ApplicationConsentVerifier({ entra: services.entra, clock, sleep: async () => undefined, probe: noProbe, propagationDelaysMs: [] }).prove({ tenantId: randomUUID(), source: "mde" });
    };
    for (const code of [7000229, 700016, 500011, 65001]) expect(await once(code)).toEqual({ kind: "pending", reason: `AADSTS${code}` });
    expect(await once(70011, "invalid_scope")).toMatchObject({ kind: "token_failed", failure: { aadsts: "AADSTS70011" } });
  });

  it("counts only the source client's 401 as not yet accepted: another error that says unauthorized is the source being unreachable", async () => {
    const tenantId = randomUUID();
    stack.entra.grantAppConsent(tenantId, stack.clientId, [`${APPLICATION_PERMISSIONS.mde.resource}/Alert.Read.All`]);
    const verifier = new ApplicationConsentVerifier({
      entra: services.entra,
      clock,
      sleep: async () => undefined,
      propagationDelaysMs: [],
      probe: async () => {
        throw Object.assign(new Error("proxy said no"), { code: "unauthorized" });
      },
    });
    expect(await verifier.prove({ tenantId, source: "mde" })).toEqual({ kind: "source_unavailable", code: "source_unavailable" });
  });

  it("reads one alert of the last 24 hours from the tenant's source, through the app's clients", async () => {
    const [{ createHttpClient }, { RateBudget }, { DefenderClient }, { GraphClient }] = await Promise.all([
      import("../../shared/http/httpClient"),
      import("../../shared/defender/rateBudget"),
      import("../../shared/defender/defenderClient"),
      import("../../shared/graph/graphClient"),
    ]);
    const http = createHttpClient({ extraCaPem: stack.certPem });
    const budget = () => new RateBudget({ clock, sleep: async () => undefined });
    const deps = { http, userAgent: "test", requestTimeoutMs: 5000, clock, sleep: async () => undefined };
    const probe = createSourceProbe({
      defender: new DefenderClient({ ...deps, budget: budget() }),
      graph: new GraphClient({ ...deps, budget: budget() }),
      defenderApiBaseUrl: stack.defender.url,
      graphApiBaseUrl: stack.graph.url,
      clock,
    });
    const tenantId = randomUUID();
    stack.entra.grantAppConsent(tenantId, stack.clientId, [
      `${APPLICATION_PERMISSIONS.mde.resource}/Alert.Read.All`,
      `${APPLICATION_PERMISSIONS.graph.resource}/SecurityAlert.Read.All`,
    ]);
    const mde = await services.entra.acquireAppToken({ tenantId, scope: APPLICATION_PERMISSIONS.mde.scope });
    const before = clock();
    await probe({ tenantId, source: "mde", defenderRegion: "eu", accessToken: mde.accessToken });
    const [request] = stack.defender.requests(tenantId);
    expect(request?.query.get("$top")).toBe("1");
    // Only whether the source answers matters: no evidence is asked for.
    expect(request?.query.get("$expand")).toBeNull();
    const filter = request?.query.get("$filter") ?? "";
    const times = [...filter.matchAll(/(\d{4}-\d\d-\d\dT[\d:.]+Z)/g)].map((m) => Date.parse(m[1] as string));
    expect(times).toHaveLength(2);
    expect(Math.max(...times) - Math.min(...times)).toBe(24 * 3_600_000);
    expect(Math.max(...times)).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(Math.max(...times)).toBeLessThanOrEqual(Date.now());
    const graph = await services.entra.acquireAppToken({ tenantId, scope: APPLICATION_PERMISSIONS.graph.scope });
    await probe({ tenantId, source: "graph", accessToken: graph.accessToken });
    await expect(probe({ tenantId, source: "graph", accessToken: mde.accessToken })).rejects.toBeInstanceOf(DefenderApiError);
    await expect(probe({ tenantId, source: "mde", accessToken: graph.accessToken })).rejects.toBeInstanceOf(DefenderApiError);
  });
});

// ---- the consent flow: start ----------------------------------------------------------------

describe("opening a consent link", () => {
  beforeAll(setup);

  it("sends the admin to Entra ID with PKCE, a fresh state and nonce, consent prompt and the source's scopes, bound to this browser", async () => {
    const { tenantId, consentUrl } = await register();
    const started = await start(consentUrl);
    if (started.kind !== "redirect") throw new Error("expected a redirect");
    const location = new URL(started.location);
    expect(`${location.origin}${location.pathname}`).toBe(`${stack.entra.url}/${tenantId}/oauth2/v2.0/authorize`);
    const q = location.searchParams;
    expect(q.get("code_challenge_method")).toBe("S256");
    expect(q.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get("prompt")).toBe("consent");
    expect(q.get("scope")?.split(" ").sort()).toEqual(["https://api.securitycenter.microsoft.com/Alert.Read", "offline_access", "openid", "profile"]);
    const state = q.get("state") ?? "";
    expect(state).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get("nonce")).toMatch(/.{20,}/);
    expect(started.cookies).toEqual([flow.stateCookie(state)]);
    const [cookie] = started.cookies ?? [];
    expect(cookie).toMatchObject({ path: "/", secure: true, httpOnly: true, sameSite: "Lax", maxAge: 900 });
    expect(cookie?.name).toMatch(/^__Host-consent-[A-Za-z0-9]{16}$/);
    expect(cookie?.value).toBe(createHash("sha256").update(`consent-state:${state}`).digest("base64url"));
    expect(cookie?.value).not.toContain(state);
    // A second start: another state, nonce and challenge.
    const again = await start(consentUrl);
    const q2 = new URL(again.kind === "redirect" ? again.location : "https://x").searchParams;
    expect(q2.get("state")).not.toBe(state);
    expect(q2.get("nonce")).not.toBe(q.get("nonce"));
    expect(q2.get("code_challenge")).not.toBe(q.get("code_challenge"));
    expect(lines.filter((line) => line.message === "consent started")).toHaveLength(2);
    expect(lines.find((line) => line.message === "consent started")?.fields).toMatchObject({ tenantId, source: "mde", consentStep: "start", outcome: "started" });
  });

  it("asks a graph tenant for Graph's scope, and moves only the sign-in page's origin for local development", async () => {
    const { tenantId, consentUrl } = await register({ source: "graph" });
    const started = await start(consentUrl);
    const location = new URL(started.kind === "redirect" ? started.location : "https://x");
    expect(location.searchParams.get("scope")).toContain("https://graph.microsoft.com/SecurityAlert.Read.All");
    expect(flow.signInRedirect(location.toString(), undefined)).toBe(location.toString());
    expect(flow.signInRedirect(`${location.toString()}#frag`, "http://127.0.0.1:9999/ignored?x=1")).toBe(`http://127.0.0.1:9999/${tenantId}/oauth2/v2.0/authorize${location.search}#frag`);
  });

  it.each<[string, (url: string, tenantId: string) => string | Promise<string>, number, string]>([
    ["a tenant id that is not a GUID", (url) => url.replace(/consent\/[^?]+/, "consent/not-a-guid"), 400, "This consent link is not valid"],
    ["an unknown tenant", (url) => url.replace(/consent\/[^?]+/, `consent/${randomUUID()}`), 400, "This consent link is not valid"],
    ["a tampered signature", (url) => url.replace(/sig=./, (m) => (m.endsWith("A") ? "sig=B" : "sig=A")), 400, "This consent link is not valid"],
    ["a missing signature", (url) => url.replace(/&sig=[^&]+/, ""), 400, "This consent link is not valid"],
  ])("refuses %s with %i", async (_name, alter, status, title) => {
    const { tenantId, consentUrl } = await register();
    const refused = page(await start(await alter(consentUrl, tenantId)));
    expect([refused.status, refused.title]).toEqual([status, title]);
    expect(refused.body).toContain("Ask Contoso Security for a new consent link.");
  });

  it("refuses an expired link (410) and logs why without the link", async () => {
    const { consentUrl } = await register();
    offsetMs = 7 * 24 * 3_600_000 + 1000;
    const refused = page(await start(consentUrl));
    expect([refused.status, refused.title]).toEqual([410, "This consent link has expired"]);
    const line = lines.find((entry) => entry.message === "consent link refused");
    expect(line?.fields).toMatchObject({ reason: "expired", errorCode: "link_expired", outcome: "refused" });
    expect(JSON.stringify(lines)).not.toContain(linkQuery(consentUrl).query.sig ?? "-");
  });

  it("refuses a link of an offboarded tenant, a withdrawn link, a spent one and one superseded by a consent", async () => {
    const off = await register();
    await services.tenantAdmin.offboard(off.tenantId, operator, log);
    expect(page(await start(off.consentUrl))).toMatchObject({ status: 410, title: "This consent link is no longer active" });

    const revoked = await register();
    await services.tenantAdmin.revokeLink(revoked.tenantId, revoked.linkId, operator, log);
    expect(page(await start(revoked.consentUrl))).toMatchObject({ status: 410, title: "This consent link was withdrawn" });

    const done = await register();
    const extra = await services.tenantAdmin.requestReconsent(done.tenantId, undefined, operator, log);
    expect(page((await consent(done.consentUrl)).finished).status).toBe(200);
    const spent = page(await start(done.consentUrl));
    expect(spent).toMatchObject({ status: 410, title: "This consent link has already been used" });
    expect(spent.body).toContain("If Contoso Security asked you to consent again");
    // A registration link issued before the consent: superseded by it.
    expect(page(await start(extra.consentUrl))).toMatchObject({ status: 410, title: "This consent link has already been used" });
    // A re-consent link issued after it works.
    offsetMs = 1000;
    const reconsent = await services.tenantAdmin.requestReconsent(done.tenantId, undefined, operator, log);
    expect((await start(reconsent.consentUrl)).kind).toBe("redirect");
    const refusals = lines.filter((line) => line.message === "consent link refused by its record").map((line) => [line.fields["reason"], line.fields["errorCode"]]);
    expect(refusals).toEqual([
      ["revoked", "link_revoked"],
      ["spent", "link_spent"],
      ["spent", "link_spent"],
    ]);
  });

  it("refuses the eleventh open sign-in of one link with 429 and Retry-After", async () => {
    const { consentUrl } = await register();
    for (let i = 0; i < 10; i++) expect((await start(consentUrl)).kind).toBe("redirect");
    offsetMs = 5 * 60_000;
    const refused = page(await start(consentUrl));
    expect([refused.status, refused.title]).toEqual([429, "Too many sign-ins in progress"]);
    const retry = Number(refused.headers["Retry-After"]);
    expect(retry).toBeGreaterThan(595);
    expect(retry).toBeLessThanOrEqual(601);
    expect(refused.body).toContain("Please try again in 10 minute(s)");
    expect(lines.find((line) => line.fields["errorCode"] === "too_many_sign_ins")?.fields).toMatchObject({ scope: "link" });
  });
});

// ---- the consent flow: callback -------------------------------------------------------------

describe("finishing a delegated consent", () => {
  beforeAll(setup);

  it("stores the refresh token in Key Vault only, connects the tenant, spends the link, audits and clears the cookie", async () => {
    const { tenantId, consentUrl, linkId, createdAt } = await register();
    stack.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { preferredUsername: "alice@fabrikam.test" } });
    const { finished, cookie } = await consent(consentUrl);
    const done = page(finished);
    expect([done.status, done.title]).toEqual([200, "Consent complete"]);
    expect(done.body).toContain("Thank you. Fabrikam Ltd is now connected, signed in as alice@fabrikam.test.");
    expect(done.body).toContain(stack.clientId);
    expect(done.body).toContain(stack.msspTenantId);
    expect(done.body).toContain("Settings &gt; Endpoints &gt; APIs &gt; SIEM");
    expect(done.cookies).toEqual([{ ...flow.stateCookie("x"), name: cookie.split("=")[0] ?? "", value: "", maxAge: 0 }]);
    const bundle = storedBundle(tenantId);
    const stored = JSON.parse(bundle?.value ?? "{}") as { refreshToken?: string; refreshTokenObtainedAt?: number };
    expect(stored.refreshToken).toMatch(/.{16,}/);
    expect(stack.entra.issuedSecrets()).toContain(stored.refreshToken);
    expect(Math.abs((stored.refreshTokenObtainedAt ?? 0) - Date.now())).toBeLessThan(60_000);
    expect(done.body).not.toContain(stored.refreshToken);
    const record = await tenantRecord(tenantId);
    expect(record).toMatchObject({ status: "connected", consentModel: "delegated", source: "mde", consentedBy: "alice@fabrikam.test" });
    expect(record?.consentedByObjectId).toMatch(/^[0-9a-f-]{36}$/);
    expect((await linkOf(tenantId, linkId, createdAt))?.usedAt).toBeDefined();
    expect(await auditOf(tenantId)).toContain(`consent_completed: Consent given through link ${linkId} for source mde`);
    const [given] = (await services.audit.list({ tenantId, limit: 50 })).filter((e) => e.detail.startsWith("Consent given"));
    expect(given?.actor).toEqual({ kind: "customer_admin", id: record?.consentedByObjectId, name: "alice@fabrikam.test" });
    // Each value the admin copies into the Defender portal is labelled for what it is.
    expect(done.body).toContain(`<label for="value-1">Application ID</label>`);
    expect(done.body).toContain(`<label for="value-2">Tenant ID</label>`);
    expect(lines.find((line) => line.message === "tenant connected")?.fields).toMatchObject({ tenantId, source: "mde", consentStep: "callback", outcome: "connected" });
    expect(JSON.stringify(lines)).not.toContain(stored.refreshToken);
  });

  it("shows Graph's page, and records a new consenter and a new source on a re-consent", async () => {
    const { tenantId, consentUrl } = await register();
    stack.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { preferredUsername: "alice@fabrikam.test" } });
    await consent(consentUrl);
    offsetMs = 2000;
    const again = await services.tenantAdmin.requestReconsent(tenantId, { source: "graph" }, operator, log);
    stack.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { preferredUsername: "bob@fabrikam.test" } });
    const done = page((await consent(again.consentUrl)).finished);
    expect([done.status, done.title]).toEqual([200, "Consent complete"]);
    expect(done.body).toContain("through Microsoft Graph");
    expect(done.body).not.toContain("Settings &gt; Endpoints");
    expect(await tenantRecord(tenantId)).toMatchObject({ source: "graph", consentedBy: "bob@fabrikam.test", previousConsentedBy: "alice@fabrikam.test" });
    const audit = await auditOf(tenantId);
    expect(audit).toContain("source_changed: Alert source changed from mde to graph");
    expect(audit).toContain("consenter_changed: The consent was given by a different user than before (was alice@fabrikam.test)");
    expect(lines.some((line) => line.fields["errorCode"] === "consenter_changed")).toBe(true);
    // The same person again: no new consenter.
    offsetMs = 4000;
    const third = await services.tenantAdmin.requestReconsent(tenantId, undefined, operator, log);
    await consent(third.consentUrl);
    expect((await auditOf(tenantId)).filter((entry) => entry.startsWith("consenter_changed"))).toHaveLength(1);
    expect((await auditOf(tenantId)).filter((entry) => entry.startsWith("source_changed"))).toHaveLength(1);
    // Delegated each time: no change of consent model to tell.
    expect((await auditOf(tenantId)).filter((entry) => entry.includes("Consent model changed"))).toEqual([]);
  });

  it.each<[string, string, (tenantId: string) => void, number, string, string | undefined]>([
    ["an admin of another tenant", "tenant_mismatch", (t) => stack.entra.setConsentBehaviour(t, { kind: "approve", user: { homeTenantId: randomUUID() } }), 403, "Signed in to a different organization", "tenant_mismatch"],
    // MSAL compares the nonce first (ClientAuthError nonce_mismatch): a refused sign-in, recorded.
    ["a nonce of another sign-in", "nonce_mismatch", (t) => stack.entra.idTokenOverrides(t, { nonce: randomUUID() }, 1), 400, "Consent could not be completed", "nonce_mismatch"],
    ["another issuer", "wrong_issuer", (t) => stack.entra.idTokenOverrides(t, { iss: `https://sts.windows.net/${t}/` }, 1), 400, "The sign-in could not be verified", undefined],
    ["a declined consent", "access_denied", (t) => stack.entra.setConsentBehaviour(t, { kind: "deny", error: "access_denied" }), 403, "Consent was declined", "access_denied"],
    ["a cancelled admin consent", "permission_denied", (t) => stack.entra.setConsentBehaviour(t, { kind: "deny", error: "permission_denied" }), 403, "Consent was declined", "permission_denied"],
    ["an error OAuth does not define", "authorization_error", (t) => stack.entra.setConsentBehaviour(t, { kind: "deny", error: "call_evil_example" }), 400, "Consent was not completed", "authorization_error"],
    ["another OAuth error", "consent_required", (t) => stack.entra.setConsentBehaviour(t, { kind: "deny", error: "consent_required" }), 400, "Consent was not completed", "consent_required"],
    ["Entra ID down", "AADSTS50033", () => stack.entra.failAllTokenRequests({ status: 503, error: "temporarily_unavailable", errorCode: 50033 }, 1), 503, "Consent could not be completed", undefined],
    ["the app's credential refused", "AADSTS7000215", () => stack.entra.failAllTokenRequests({ status: 401, error: "invalid_client", errorCode: 7000215 }, 1), 502, "Consent could not be completed", undefined],
    ["the code refused", "AADSTS70008", () => stack.entra.failAllTokenRequests({ status: 400, error: "invalid_grant", errorCode: 70008 }, 1), 400, "Consent could not be completed", "AADSTS70008"],
  ])("refuses %s, stores no token and gives the link back", async (_name, reason, arrange, status, title, recorded) => {
    const { tenantId, consentUrl } = await register();
    arrange(tenantId);
    const result = page((await consent(consentUrl)).finished);
    expect([result.status, result.title]).toEqual([status, title]);
    expect(result.body).toMatch(/Nothing was saved|no access was granted|Microsoft Entra ID answered|open the consent link again/i);
    expect(storedBundle(tenantId)).toBeUndefined();
    const record = await tenantRecord(tenantId);
    expect(record?.status).toBe("pending_consent");
    expect(record?.lastErrorCode).toBe(recorded);
    if (recorded) expect(record?.lastErrorAt).toBeDefined();
    expect(lines.some((line) => JSON.stringify(line.fields).includes(reason))).toBe(true);
    if (reason === "AADSTS7000215") expect(lines.some((line) => line.level === "error" && line.message.startsWith("the MSSP application's credential was rejected"))).toBe(true);
    stack.entra.clearFailures();
    stack.entra.setConsentBehaviour(tenantId, { kind: "approve" });
    expect(page((await consent(consentUrl)).finished).status).toBe(200);
  });

  it("refuses a callback without state, from another browser, with a forged state, replayed or too late", async () => {
    const bad = (query: string, cookie: string | null) => services.consent.callback(new URLSearchParams(query), cookie, log).then(page);
    expect(await bad("code=x", null)).toMatchObject({ status: 400, title: "This sign-in response is not valid" });
    expect(await bad(`state=${"a".repeat(257)}`, null)).toMatchObject({ status: 400, title: "This sign-in response is not valid" });
    const { tenantId, consentUrl } = await register();
    const started = await start(consentUrl);
    const cookie = cookieHeader(started);
    const callbackUrl = await authorize(started.kind === "redirect" ? started.location : "");
    const state = callbackUrl.searchParams.get("state") ?? "";
    const other = await bad(callbackUrl.search.slice(1), null);
    expect(other).toMatchObject({ status: 400, title: "Finish the sign-in in the browser that started it" });
    expect(other.cookies).toEqual([]);
    const wrong = cookie.replace(/=(.)/, (_m, c: string) => `=${c === "A" ? "B" : "A"}`);
    expect(await bad(callbackUrl.search.slice(1), wrong)).toMatchObject({ title: "Finish the sign-in in the browser that started it" });
    expect(await bad(callbackUrl.search.slice(1), `${cookie}x`)).toMatchObject({ title: "Finish the sign-in in the browser that started it" });
    // A state this app never issued, with its own matching cookie (an attacker's browser).
    const forged = randomBytes(32).toString("base64url");
    const forgedCookie = flow.stateCookie(forged);
    const unknown = await bad(`state=${forged}&code=x`, `${forgedCookie.name}=${forgedCookie.value}`);
    expect(unknown).toMatchObject({ status: 400, title: "This sign-in response is not valid" });
    expect(unknown.cookies).toMatchObject([{ name: forgedCookie.name, value: "", maxAge: 0 }]);
    expect(lines.find((line) => line.fields["reason"] === "state_unknown")).toBeDefined();
    // The real one, too late: nothing stored; in time it connects, and once only.
    offsetMs = SESSION_LIFETIME_MS;
    const late = await bad(callbackUrl.search.slice(1), cookie);
    expect(late).toMatchObject({ status: 400, title: "This sign-in took too long" });
    expect(late.body).toContain("Sign-ins must finish within 15 minutes.");
    expect(storedBundle(tenantId)).toBeUndefined();
    offsetMs = 0;
    expect(await bad(callbackUrl.search.slice(1), cookie)).toMatchObject({ status: 200, title: "Consent complete" });
    expect(await bad(callbackUrl.search.slice(1), cookie)).toMatchObject({ status: 400, title: "This sign-in response was already used" });
    expect(lines.filter((line) => line.message === "consent callback refused").map((line) => line.fields["errorCode"])).toEqual([
      "state_other_browser",
      "state_other_browser",
      "state_other_browser",
      "state_unknown",
      "state_expired",
      "state_replayed",
    ]);
    expect(state).not.toBe("");
    offsetMs = 1000;
    const { consentUrl: nextUrl } = await services.tenantAdmin.requestReconsent(tenantId, undefined, operator, log);
    // A good callback that carries no code.
    const second = await start(nextUrl);
    const back = await authorize(second.kind === "redirect" ? second.location : "");
    back.searchParams.delete("code");
    expect(await bad(back.search.slice(1), cookieHeader(second))).toMatchObject({ status: 400, title: "This sign-in response is not valid" });
    const third = await start(nextUrl);
    const backLong = await authorize(third.kind === "redirect" ? third.location : "");
    backLong.searchParams.set("code", "c".repeat(4097));
    const long = await bad(backLong.search.slice(1), cookieHeader(third));
    expect(long).toMatchObject({ status: 400, title: "This sign-in response is not valid" });
    expect(long.body).toContain("It carried no authorization code.");
  });

  it("refuses a sign-in whose tenant was offboarded or whose link was revoked or spent meanwhile", async () => {
    const run = async (between: (r: { tenantId: string; linkId: string; consentUrl: string }) => Promise<void>) => {
      const registered = await register();
      const started = await start(registered.consentUrl);
      const back = await authorize(started.kind === "redirect" ? started.location : "");
      await between(registered);
      const finished = page(await services.consent.callback(back.searchParams, cookieHeader(started), log));
      return { ...registered, finished };
    };
    const off = await run(async ({ tenantId }) => void (await services.tenantAdmin.offboard(tenantId, operator, log)));
    expect(off.finished).toMatchObject({ status: 410, title: "This consent link is no longer active" });
    const revoked = await run(async ({ tenantId, linkId }) => void (await services.tenantAdmin.revokeLink(tenantId, linkId, operator, log)));
    expect(revoked.finished).toMatchObject({ status: 410, title: "This consent link was withdrawn" });
    expect(storedBundle(revoked.tenantId)).toBeUndefined();
    const spent = await run(async ({ consentUrl }) => void (await consent(consentUrl)));
    expect(spent.finished).toMatchObject({ status: 410, title: "This consent link has already been used" });
  });

  it("lets one of two sign-ins through one link finish at a time, and a revocation during the redemption wins", async () => {
    const { tenantId, consentUrl, linkId } = await register();
    const first = await start(consentUrl);
    const second = await start(consentUrl);
    const firstBack = await authorize(first.kind === "redirect" ? first.location : "");
    const secondBack = await authorize(second.kind === "redirect" ? second.location : "");
    const hold = stack.entra.holdCodeRedemptions();
    const pending = services.consent.callback(firstBack.searchParams, cookieHeader(first), log);
    for (let i = 0; i < 200 && hold.waiting() === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(hold.waiting()).toBe(1);
    const busy = page(await services.consent.callback(secondBack.searchParams, cookieHeader(second), log));
    expect([busy.status, busy.title]).toEqual([409, "This consent link is being used right now"]);
    await services.tenantAdmin.revokeLink(tenantId, linkId, operator, log);
    hold.release();
    expect(page(await pending)).toMatchObject({ status: 410, title: "This consent link was withdrawn" });
    expect(storedBundle(tenantId)).toBeUndefined();
    expect((await tenantRecord(tenantId))?.status).toBe("pending_consent");
    expect(lines.find((line) => line.message === "consent link revoked while its sign-in finished; nothing stored")?.fields).toEqual({
      tenantId,
      consentStep: "callback",
      outcome: "refused",
      errorCode: "link_revoked",
    });
  });

  it("answers 503 when Key Vault cannot store the token, records why, and lets the link be used again", async () => {
    const { tenantId, consentUrl } = await register();
    const started = await start(consentUrl);
    const back = await authorize(started.kind === "redirect" ? started.location : "");
    stack.vault.setFailure({ status: 403 });
    const failed = page(await services.consent.callback(back.searchParams, cookieHeader(started), log));
    stack.vault.setFailure(null);
    expect([failed.status, failed.title]).toEqual([503, "Consent could not be saved"]);
    expect(await tenantRecord(tenantId)).toMatchObject({ status: "pending_consent", lastErrorCode: "secret_store_unavailable", lastErrorMessage: "The refresh token could not be stored in Key Vault" });
    expect(lines.find((line) => line.message === "could not store the refresh token")?.level).toBe("error");
    expect(page((await consent(consentUrl)).finished).status).toBe(200);
  });
});

// ---- the consent flow: application model ----------------------------------------------------

describe("finishing an application consent", () => {
  beforeAll(setup);

  it("sends the admin to the admin-consent endpoint, proves the consent, stores no token and audits the admin", async () => {
    const { tenantId, consentUrl, linkId, createdAt } = await register({ consentModel: "application" });
    const started = await start(consentUrl);
    if (started.kind !== "redirect") throw new Error("expected a redirect");
    const location = new URL(started.location);
    expect(`${location.origin}${location.pathname}`).toBe(`${stack.entra.url}/${tenantId}/v2.0/adminconsent`);
    expect(location.searchParams.get("scope")).toBe("https://api.securitycenter.microsoft.com/.default");
    expect(location.searchParams.get("code_challenge")).toBeNull();
    expect(started.cookies).toEqual([flow.stateCookie(location.searchParams.get("state") ?? "")]);
    const back = await authorize(started.location);
    const done = page(await services.consent.callback(back.searchParams, cookieHeader(started), log));
    expect([done.status, done.title]).toEqual([200, "Consent complete"]);
    expect(done.body).toContain("with the application permission WindowsDefenderATP Alert.Read.All (application)");
    expect(done.body).toContain("Microsoft Defender for Endpoint alerts");
    expect(storedBundle(tenantId)).toBeUndefined();
    expect(await tenantRecord(tenantId)).toMatchObject({ status: "connected", consentModel: "application", consentedBy: "Tenant administrator (admin consent)" });
    // The link is spent: it connects no second time.
    expect((await linkOf(tenantId, linkId, createdAt))?.usedAt).toBeDefined();
    const [entry] = (await services.audit.list({ tenantId, limit: 50 })).filter((e) => e.action === "consent_completed");
    expect(entry?.actor).toMatchObject({ kind: "customer_admin", name: "Tenant administrator (admin consent)" });
    expect(entry?.actor.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(entry?.detail).toBe(`Admin consent given through link ${linkId} for source mde (application permission Alert.Read.All)`);
    expect(page(await start(consentUrl))).toMatchObject({ status: 410, title: "This consent link has already been used" });
  });

  it("moves a delegated tenant to the application model, deleting its refresh token", async () => {
    const { tenantId, consentUrl } = await register();
    await consent(consentUrl);
    expect(storedBundle(tenantId)).toBeDefined();
    offsetMs = 2000;
    const move = await services.tenantAdmin.requestReconsent(tenantId, { consentModel: "application", source: "graph" }, operator, log);
    const done = page((await consent(move.consentUrl)).finished);
    expect(done.body).toContain("Microsoft Defender XDR alerts through Microsoft Graph");
    expect(storedBundle(tenantId)).toBeUndefined();
    const audit = await auditOf(tenantId);
    expect(audit).toContain("consent_completed: Consent model changed from delegated to application; the stored refresh token was deleted");
    expect(audit).toContain("source_changed: Alert source changed from mde to graph");
    expect(await tenantRecord(tenantId)).toMatchObject({ consentModel: "application", source: "graph" });
    // And back: delegated again stores a token and says so.
    offsetMs = 4000;
    const back = await services.tenantAdmin.requestReconsent(tenantId, { consentModel: "delegated" }, operator, log);
    expect(page((await consent(back.consentUrl)).finished).status).toBe(200);
    expect(storedBundle(tenantId)).toBeDefined();
    expect(await auditOf(tenantId)).toContain("consent_completed: Consent model changed from application to delegated; a refresh token is stored from now on");
    expect((await auditOf(tenantId)).filter((entry) => entry.startsWith("consenter_changed"))).toHaveLength(0);
  });

  it("refuses an answer naming another tenant, and shows pending, refused and unreachable sources without connecting", async () => {
    const { tenantId, consentUrl } = await register({ consentModel: "application" });
    const finishWith = async (alter: (back: URL) => void = () => undefined) => {
      const started = await start(consentUrl);
      const back = await authorize(started.kind === "redirect" ? started.location : "");
      alter(back);
      return page(await services.consent.callback(back.searchParams, cookieHeader(started), log));
    };
    const other = await finishWith((back) => back.searchParams.set("tenant", randomUUID()));
    expect([other.status, other.title]).toEqual([403, "Consent was given for a different organization"]);
    stack.entra.setAppConsentPropagation(10 * 60_000);
    const pending = await finishWith();
    expect([pending.status, pending.title]).toEqual([202, "Almost done: the consent is not active yet"]);
    expect(sleeps).toEqual([1000, 2000, 3000]);
    stack.entra.setAppConsentPropagation(0);
    stack.defender.fail(tenantId, { status: 403, times: 1 });
    expect(await finishWith()).toMatchObject({ status: 403, title: "Consent could not be confirmed" });
    stack.defender.fail(tenantId, { status: 400, times: 1 });
    expect(await finishWith()).toMatchObject({ status: 503, title: "Consent could not be confirmed" });
    stack.entra.failAllTokenRequests({ status: 401, error: "invalid_client", errorCode: 7000215 }, 1);
    expect(await finishWith()).toMatchObject({ status: 502, title: "Consent could not be completed" });
    stack.entra.failAllTokenRequests({ status: 503, error: "temporarily_unavailable", errorCode: 50033 }, 4);
    expect(await finishWith()).toMatchObject({ status: 503, title: "Consent could not be completed" });
    stack.entra.failAllTokenRequests({ status: 400, error: "invalid_grant", errorCode: 70008 }, 4);
    expect(await finishWith()).toMatchObject({ status: 400, title: "Consent could not be completed" });
    expect(await tenantRecord(tenantId)).toMatchObject({ status: "pending_consent", lastErrorCode: "AADSTS70008", lastErrorMessage: "The admin consent could not be verified" });
    stack.entra.clearFailures();
    expect(await finishWith()).toMatchObject({ status: 200, title: "Consent complete" });
  });
});

/** The app's flow with one dependency replaced (a proof or a token store that behaves as a test needs). */
function flowWith(over: Partial<ConstructorParameters<typeof flow.ConsentFlow>[0]>) {
  return new flow.ConsentFlow({
    config: services.config,
    tenants: services.tenants,
    sessions: services.consentSessions,
    signingKey: services.signingKey,
    entra: services.entra,
    tokens: services.tokens,
    links: new ConsentLinkStore(services.tables, clock),
    audit: services.audit,
    clock,
    application: { prove: async () => ({ kind: "proven", servicePrincipalId: undefined }) } as unknown as ApplicationConsentVerifier,
    ...over,
  });
}

// ---- the consent flow: edges ----------------------------------------------------------------

describe("the consent flow's edges", () => {
  beforeAll(setup);

  /** Starts a sign-in through `consentUrl` and answers its callback with `extra` instead of a real answer. */
  async function answer(consentFlow: { start: typeof services.consent.start; callback: typeof services.consent.callback }, consentUrl: string, extra: Record<string, string>) {
    const { tenantId, query } = linkQuery(consentUrl);
    const started = await consentFlow.start(tenantId, query, log);
    const state = started.kind === "redirect" ? (new URL(started.location).searchParams.get("state") ?? "") : "";
    return page(await consentFlow.callback(new URLSearchParams({ state, ...extra }), cookieHeader(started), log));
  }

  it("names each error OAuth and OpenID Connect define, records it and keeps the link usable; a declined one is logged as declined", async () => {
    const { tenantId, consentUrl } = await register();
    const codes = [
      "invalid_request",
      "unauthorized_client",
      "access_denied",
      "permission_denied",
      "unsupported_response_type",
      "invalid_scope",
      "server_error",
      "temporarily_unavailable",
      "interaction_required",
      "login_required",
      "account_selection_required",
      "consent_required",
      "invalid_request_uri",
      "invalid_request_object",
      "request_not_supported",
      "request_uri_not_supported",
      "registration_not_supported",
    ];
    for (const code of codes) {
      lines.length = 0;
      const refused = await answer(services.consent, consentUrl, { error: code });
      const declined = code === "access_denied" || code === "permission_denied";
      expect([refused.status, refused.title]).toEqual(declined ? [403, "Consent was declined"] : [400, "Consent was not completed"]);
      if (!declined) expect(refused.body).toContain(`Microsoft Entra ID answered: ${code}.`);
      expect(await tenantRecord(tenantId)).toMatchObject({ status: "pending_consent", lastErrorCode: code, lastErrorMessage: "The consent sign-in was not completed" });
      expect(lines.find((line) => line.message === "consent answered with an error")?.fields).toMatchObject({ tenantId, error: code, consentStep: "callback", outcome: declined ? "declined" : "failed", errorCode: code });
    }
    expect(page((await consent(consentUrl)).finished).status).toBe(200);
  });

  it("tells a state of 256 characters from another browser and refuses a longer one as not valid", async () => {
    const answerState = (state: string) => services.consent.callback(new URLSearchParams({ state, code: "x" }), null, log).then(page);
    expect(await answerState("a".repeat(256))).toMatchObject({ status: 400, title: "Finish the sign-in in the browser that started it" });
    expect(await answerState("a".repeat(257))).toMatchObject({ status: 400, title: "This sign-in response is not valid" });
  });

  it("takes an admin-consent answer naming the tenant in capitals, or not naming it, as the link's tenant", async () => {
    for (const alter of [(back: URL) => back.searchParams.set("tenant", (back.searchParams.get("tenant") ?? "").toUpperCase()), (back: URL) => back.searchParams.delete("tenant")]) {
      const { tenantId, consentUrl } = await register({ consentModel: "application" });
      const started = await start(consentUrl);
      const back = await authorize(started.kind === "redirect" ? started.location : "");
      expect(back.searchParams.get("tenant")).toBe(tenantId);
      alter(back);
      const done = page(await services.consent.callback(back.searchParams, cookieHeader(started), log));
      expect([done.status, done.title]).toEqual([200, "Consent complete"]);
      expect((await tenantRecord(tenantId))?.status).toBe("connected");
    }
  });

  /** A flow whose proof of the application consent succeeds once `meanwhile` is done. */
  const provenAfter = (meanwhile: () => Promise<unknown>) =>
    flowWith({
      application: {
        prove: async () => {
          await meanwhile();
          return { kind: "proven", servicePrincipalId: undefined };
        },
      } as unknown as ApplicationConsentVerifier,
    });

  it("connects nothing on a proof for another tenant, a link revoked or a tenant offboarded during the proof", async () => {
    const wrong = await register({ consentModel: "application" });
    const wrongFlow = flowWith({ application: { prove: async () => ({ kind: "wrong_tenant" }) } as unknown as ApplicationConsentVerifier });
    const refused = await answer(wrongFlow, wrong.consentUrl, {});
    expect([refused.status, refused.title]).toEqual([403, "Consent could not be verified"]);
    expect(refused.body).toContain("Microsoft Entra ID answered for a different organization. Nothing was saved. Open the consent link again.");
    expect(lines.find((line) => line.message === "app-only token was for another tenant; nothing stored")?.fields).toMatchObject({
      tenantId: wrong.tenantId,
      consentStep: "callback",
      errorCode: "tenant_mismatch",
      outcome: "failed",
    });
    expect((await tenantRecord(wrong.tenantId))?.status).toBe("pending_consent");
    // The link was given back: the real proof then connects through it.
    const again = await start(wrong.consentUrl);
    const back = await authorize(again.kind === "redirect" ? again.location : "");
    expect(page(await services.consent.callback(back.searchParams, cookieHeader(again), log)).status).toBe(200);

    const revoked = await register({ consentModel: "application" });
    const revokingFlow = provenAfter(() => services.tenantAdmin.revokeLink(revoked.tenantId, revoked.linkId, operator, log));
    expect(await answer(revokingFlow, revoked.consentUrl, {})).toMatchObject({ status: 410, title: "This consent link was withdrawn" });
    expect((await tenantRecord(revoked.tenantId))?.status).toBe("pending_consent");
    expect(lines.find((line) => line.message === "consent link revoked while its consent finished; nothing stored")?.fields).toEqual({
      tenantId: revoked.tenantId,
      source: "mde",
      consentModel: "application",
      consentStep: "callback",
      outcome: "refused",
      errorCode: "link_revoked",
    });

    const gone = await register({ consentModel: "application" });
    const offboardingFlow = provenAfter(() => services.tenantAdmin.offboard(gone.tenantId, operator, log));
    expect(await answer(offboardingFlow, gone.consentUrl, {})).toMatchObject({ status: 410, title: "This consent link is no longer active" });
    expect((await tenantRecord(gone.tenantId))?.status).toBe("offboarded");
    expect((await auditOf(gone.tenantId)).filter((entry) => entry.startsWith("consent_completed"))).toEqual([]);
    expect(lines.find((line) => line.message === "admin consent completed for a tenant offboarded meanwhile")?.fields).toEqual({
      tenantId: gone.tenantId,
      source: "mde",
      consentModel: "application",
      consentStep: "callback",
      outcome: "refused",
      errorCode: "tenant_offboarded",
    });

    // Offboarded and registered again during the proof: the consent belongs to the old registration.
    const again2 = await register({ consentModel: "application" });
    const reregisteringFlow = provenAfter(async () => {
      await services.tenantAdmin.offboard(again2.tenantId, operator, log);
      offsetMs += 1000;
      await services.tenantAdmin.register({ tenantId: again2.tenantId, displayName: "Fabrikam Ltd (again)" }, operator, log);
    });
    expect(await answer(reregisteringFlow, again2.consentUrl, {})).toMatchObject({ status: 410, title: "This consent link is no longer active" });
    expect(await tenantRecord(again2.tenantId)).toMatchObject({ status: "pending_consent", displayName: "Fabrikam Ltd (again)" });
  });

  it("says so in the audit when the former refresh token could not be deleted on a move to the application model", async () => {
    const { tenantId, consentUrl } = await register();
    await consent(consentUrl);
    offsetMs = 2000;
    const move = await services.tenantAdmin.requestReconsent(tenantId, { consentModel: "application" }, operator, log);
    const stuck = new Proxy(services.tokens, {
      get(target, property, receiver) {
        if (property === "remove") return async () => Promise.reject(new Error("vault busy"));
        return Reflect.get(target, property, receiver) as unknown;
      },
    });
    const done = await answer(flowWith({ tokens: stuck }), move.consentUrl, {});
    expect([done.status, done.title]).toEqual([200, "Consent complete"]);
    expect(await auditOf(tenantId)).toContain("consent_completed: Consent model changed from delegated to application; the stored refresh token could not be deleted yet");
    const notDeleted = lines.find((line) => line.message === "could not delete the tenant's former refresh token");
    expect(notDeleted?.level).toBe("warn");
    expect(notDeleted?.fields).toMatchObject({ tenantId, source: "mde", consentModel: "application", error: expect.any(String) });
    const [entry] = (await services.audit.list({ tenantId, limit: 50 })).filter((e) => e.detail.startsWith("Admin consent given"));
    expect(entry?.actor).toMatchObject({ kind: "customer_admin", id: "", name: "Tenant administrator (admin consent)" });
  });

  it("tells no new consenter on a delegated consent after an application one, which had no user", async () => {
    const { tenantId, consentUrl } = await register();
    stack.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { preferredUsername: "alice@fabrikam.test" } });
    await consent(consentUrl);
    offsetMs = 2000;
    const move = await services.tenantAdmin.requestReconsent(tenantId, { consentModel: "application" }, operator, log);
    expect((await answer(flowWith({}), move.consentUrl, {})).status).toBe(200);
    offsetMs = 4000;
    const back = await services.tenantAdmin.requestReconsent(tenantId, { consentModel: "delegated" }, operator, log);
    stack.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { preferredUsername: "bob@fabrikam.test" } });
    expect(page((await consent(back.consentUrl)).finished).status).toBe(200);
    const audit = await auditOf(tenantId);
    expect(audit).toContain("consent_completed: Consent model changed from application to delegated; a refresh token is stored from now on");
    expect(audit.filter((entry) => entry.startsWith("consenter_changed"))).toEqual([]);
    const record = await tenantRecord(tenantId);
    expect(record).toMatchObject({ consentModel: "delegated", consentedBy: "bob@fabrikam.test" });
    expect(record?.previousConsentedBy).toBeUndefined();
  });

  it("names a generic provider without a display name, marks sandbox pages, and moves only the sign-in page's origin in both models", async () => {
    const local = flowWith({ config: { clientId: services.config.clientId, msspTenantId: services.config.msspTenantId, localDev: { sandbox: true, signInBaseUrl: "http://127.0.0.1:9999/x" } } });
    const refused = page(await local.start("not-a-guid", { link: null, exp: null, sig: null }, log));
    expect(refused.body).toContain("Ask your managed security provider for a new consent link.");
    expect(refused.body).toContain("Simulated Microsoft cloud (sandbox)");
    expect(page(await services.consent.start("not-a-guid", { link: null, exp: null, sig: null }, log)).body).not.toContain("Simulated Microsoft cloud");
    // As deployed (no local development settings at all); a tenant id that is no GUID is refused before any lookup.
    let reads = 0;
    const tenants = Object.assign(Object.create(services.tenants) as typeof services.tenants, {
      get: (...args: Parameters<typeof services.tenants.get>) => (reads++, services.tenants.get(...args)),
    });
    const bare = flowWith({ config: { clientId: services.config.clientId, msspTenantId: services.config.msspTenantId }, tenants });
    const plain = page(await bare.start("not-a-guid", { link: null, exp: null, sig: null }, log));
    expect([plain.status, plain.body.includes("Simulated Microsoft cloud")]).toEqual([400, false]);
    expect(reads).toBe(0);
    for (const consentModel of ["delegated", "application"]) {
      const { tenantId, consentUrl } = await register({ consentModel });
      const { query } = linkQuery(consentUrl);
      // The tenant id in capitals: the same link.
      const started = await local.start(tenantId.toUpperCase(), query, log);
      if (started.kind !== "redirect") throw new Error(`expected a redirect, got ${started.page.status}`);
      const location = new URL(started.location);
      expect(location.origin).toBe("http://127.0.0.1:9999");
      expect(location.pathname).toBe(consentModel === "application" ? `/${tenantId}/v2.0/adminconsent` : `/${tenantId}/oauth2/v2.0/authorize`);
      expect(lines.filter((line) => line.message === "consent started").at(-1)?.fields).toMatchObject({
        tenantId,
        ...(consentModel === "application" ? { consentModel } : {}),
        consentStep: "start",
        outcome: "started",
      });
      // Without local development settings (as deployed), the sign-in stays on Entra ID's own origin.
      const deployed = await bare.start(tenantId, query, log);
      if (deployed.kind !== "redirect") throw new Error(`expected a redirect, got ${deployed.page.status}`);
      expect(new URL(deployed.location).origin).toBe(new URL(services.config.entraAuthorityHost).origin);
      expect(new URL(deployed.location).pathname).toBe(location.pathname);
    }
    const off = await register();
    await services.tenantAdmin.offboard(off.tenantId, operator, log);
    await start(off.consentUrl);
    expect(lines.find((line) => line.message === "consent link for an offboarded tenant")?.fields).toMatchObject({ tenantId: off.tenantId, consentStep: "start", errorCode: "tenant_offboarded", outcome: "refused" });
  });

  /** Signs in through the link and finishes the sign-in while Entra ID holds the code's redemption until `meanwhile` is done. */
  async function finishedAfter(consentUrl: string, meanwhile: () => Promise<unknown>) {
    const started = await start(consentUrl);
    const back = await authorize(started.kind === "redirect" ? started.location : "");
    const hold = stack.entra.holdCodeRedemptions();
    const pending = services.consent.callback(back.searchParams, cookieHeader(started), log);
    for (let i = 0; i < 200 && hold.waiting() === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    await meanwhile();
    hold.release();
    return page(await pending);
  }

  it("deletes the token and answers 410 when the tenant is offboarded while the code is redeemed", async () => {
    const { tenantId, consentUrl } = await register();
    const finished = await finishedAfter(consentUrl, () => services.tenantAdmin.offboard(tenantId, operator, log));
    expect(finished).toMatchObject({ status: 410, title: "This consent link is no longer active" });
    expect(storedBundle(tenantId)).toBeUndefined();
    expect((await tenantRecord(tenantId))?.status).toBe("offboarded");
    expect(lines.find((line) => line.message === "consent completed for a tenant offboarded meanwhile; token removed")?.fields).toMatchObject({
      tenantId,
      consentStep: "callback",
      outcome: "refused",
      errorCode: "tenant_offboarded",
    });
  });

  it("connects nothing when the tenant is offboarded and registered again while the code is redeemed: the sign-in belongs to the old registration", async () => {
    const { tenantId, consentUrl } = await register();
    const finished = await finishedAfter(consentUrl, async () => {
      await services.tenantAdmin.offboard(tenantId, operator, log);
      offsetMs += 1000;
      await services.tenantAdmin.register({ tenantId, displayName: "Fabrikam Ltd (again)" }, operator, log);
    });
    expect(finished).toMatchObject({ status: 410, title: "This consent link is no longer active" });
    expect(storedBundle(tenantId)).toBeUndefined();
    expect(await tenantRecord(tenantId)).toMatchObject({ status: "pending_consent", displayName: "Fabrikam Ltd (again)" });
  });
});

// ---- the consent flow: what each refusal says (consentFlow.ts, measured on its own) -----------

describe("the consent flow's refusals, word for word", () => {
  beforeAll(setup);

  const said = (body: string, ...texts: string[]) => {
    for (const text of texts) expect(body).toContain(`<p>${escapeHtml(text)}</p>`);
  };
  const logged = (message: string) => lines.filter((line) => line.message === message).map((line) => ({ level: line.level, ...line.fields }));

  it("names the state cookie after the state's hash, characters other than letters and digits as x", () => {
    // States whose hash's first 16 characters hold two or more "-" or "_" (base64url), found by trying.
    let found = 0;
    for (let i = 0; found < 2 && i < 100_000; i++) {
      const state = `state-${i}`;
      const hash = createHash("sha256").update(`consent-state:${state}`).digest("base64url");
      if ((hash.slice(0, 16).match(/[-_]/g) ?? []).length < 2) continue;
      found++;
      const cookie = flow.stateCookie(state);
      expect(cookie.name).toBe(`__Host-consent-${hash.slice(0, 16).replace(/[-_]/g, "x")}`);
      expect(cookie.value).toBe(hash);
    }
    expect(found).toBe(2);
  });

  it("tells the admin and the operator why a link does not start a sign-in", async () => {
    const unknownTenant = randomUUID();
    const { consentUrl } = await register();
    const { query } = linkQuery(consentUrl);
    const unknown = page(await services.consent.start(unknownTenant.toUpperCase(), query, log));
    expect([unknown.status, unknown.title]).toEqual([400, "This consent link is not valid"]);
    said(unknown.body, "Ask Contoso Security for a new consent link.");
    expect(logged("consent link refused")).toEqual([
      { level: "warn", tenantId: unknownTenant, reason: "bad_signature", consentStep: "start", outcome: "refused", errorCode: "link_bad_signature" },
    ]);
    lines.length = 0;
    const { tenantId } = linkQuery(consentUrl);
    expect(page(await services.consent.start(tenantId, { ...query, sig: null }, log))).toMatchObject({ status: 400, title: "This consent link is not valid" });
    expect(logged("consent link refused")).toEqual([{ level: "warn", tenantId, reason: "malformed", consentStep: "start", outcome: "refused", errorCode: "link_malformed" }]);

    // A link signed with the app's key whose record does not exist (never issued, or deleted).
    lines.length = 0;
    const registered = await tenantRecord(tenantId);
    const key = await services.signingKey.get();
    const forged = buildConsentUrl("https://app.example", key, { tenantId, registeredAt: registered?.createdAt ?? "", linkId: randomBytes(16).toString("base64url"), expiresAt: clock() + 3_600_000 });
    const unissued = page(await services.consent.start(tenantId, linkQuery(forged).query, log));
    expect([unissued.status, unissued.title]).toEqual([400, "This consent link is not valid"]);
    said(unissued.body, "Ask Contoso Security for a new consent link.");
    expect(logged("consent link refused by its record")).toEqual([
      { level: "warn", tenantId, reason: "unknown_link", consentStep: "start", outcome: "refused", errorCode: "link_unknown_link" },
    ]);

    const revoked = await register();
    await services.tenantAdmin.revokeLink(revoked.tenantId, revoked.linkId, operator, log);
    said(page(await start(revoked.consentUrl)).body, "Ask Contoso Security for a new consent link.");

    const done = await register();
    await consent(done.consentUrl);
    const spent = page(await start(done.consentUrl));
    said(spent.body, "Your organization is already connected through it, so it cannot be used again.", "If Contoso Security asked you to consent again, ask them for the new link they issued.");

    const off = await register();
    await services.tenantAdmin.offboard(off.tenantId, operator, log);
    said(page(await start(off.consentUrl)).body, "Ask Contoso Security for a new consent link.");

    lines.length = 0;
    const busy = await register();
    for (let i = 0; i < 10; i++) await start(busy.consentUrl);
    const refused = page(await start(busy.consentUrl));
    said(refused.body, "This link has started many sign-ins in the last few minutes. Please try again in 15 minute(s), in one browser window.");
    expect(refused.headers["Retry-After"]).toMatch(/^(899|900)$/);
    expect(logged("consent start refused: too many open sign-ins")).toEqual([
      { level: "warn", tenantId: busy.tenantId, scope: "link", consentStep: "start", outcome: "refused", errorCode: "too_many_sign_ins" },
    ]);
  });

  it("lets an outage of the sessions table fail the start rather than call it too many sign-ins, and answers 410 for a tenant whose record is gone", async () => {
    const { tenantId, consentUrl } = await register();
    const outage = new flow.ConsentFlow({
      config: services.config,
      tenants: services.tenants,
      sessions: new ConsentSessionStore(deadTables, clock),
      signingKey: services.signingKey,
      entra: services.entra,
      tokens: services.tokens,
      links: new ConsentLinkStore(services.tables, clock),
      audit: services.audit,
      clock,
      application: { prove: async () => ({ kind: "pending", reason: "unused" }) } as unknown as ApplicationConsentVerifier,
    });
    await expect(outage.start(tenantId, linkQuery(consentUrl).query, log)).rejects.toThrow();
    expect(lines.some((line) => line.fields["errorCode"] === "too_many_sign_ins")).toBe(false);

    // The tenant's row deleted by hand while its admin signs in.
    const started = await start(consentUrl);
    const back = await authorize(started.kind === "redirect" ? started.location : "");
    await (await services.tables.open(TABLES.tenants)).deleteEntity("tenant", tenantId);
    lines.length = 0;
    const gone = page(await services.consent.callback(back.searchParams, cookieHeader(started), log));
    expect([gone.status, gone.title]).toEqual([410, "This consent link is no longer active"]);
    expect(logged("consent callback for a tenant that is not registered")).toEqual([
      { level: "warn", tenantId, consentStep: "callback", outcome: "refused", errorCode: "tenant_not_registered" },
    ]);
  });

  it("tells the admin and the operator why a callback is refused", async () => {
    const bad = (query: string, cookie: string | null) => services.consent.callback(new URLSearchParams(query), cookie, log).then(page);
    said((await bad("code=x", null)).body, "It did not come from a consent link. Ask Contoso Security for a new consent link.");

    const { tenantId, consentUrl } = await register();
    const started = await start(consentUrl);
    const cookie = cookieHeader(started);
    const back = await authorize(started.kind === "redirect" ? started.location : "");
    lines.length = 0;
    const elsewhere = await bad(back.search.slice(1), null);
    said(
      elsewhere.body,
      "This sign-in was started in another browser (or this browser's cookies were cleared), so it cannot be completed here. Nothing was saved.",
      "Open the consent link again in this browser.",
    );
    expect(logged("consent callback refused")).toEqual([{ level: "warn", reason: "state_other_browser", consentStep: "callback", outcome: "refused", errorCode: "state_other_browser" }]);

    const forged = randomBytes(32).toString("base64url");
    const forgedCookie = flow.stateCookie(forged);
    lines.length = 0;
    said((await bad(`state=${forged}&code=x`, `${forgedCookie.name}=${forgedCookie.value}`)).body, "Ask Contoso Security for a new consent link.");
    expect(logged("consent callback refused")).toEqual([{ level: "warn", reason: "state_unknown", consentStep: "callback", outcome: "refused", errorCode: "state_unknown" }]);

    expect((await bad(back.search.slice(1), cookie)).status).toBe(200);
    lines.length = 0;
    const replayed = await bad(back.search.slice(1), cookie);
    said(replayed.body, "Open your consent link again if you need to repeat the consent.");
    expect(logged("consent callback refused")).toEqual([{ level: "warn", reason: "state_replayed", consentStep: "callback", outcome: "refused", errorCode: "state_replayed" }]);
    // The replayed answer still clears this browser's cookie.
    expect(replayed.cookies).toEqual([{ ...flow.stateCookie(back.searchParams.get("state") ?? ""), value: "", maxAge: 0 }]);

    // The tenant offboarded during the sign-in.
    const off = await register();
    const offStarted = await start(off.consentUrl);
    const offBack = await authorize(offStarted.kind === "redirect" ? offStarted.location : "");
    await services.tenantAdmin.offboard(off.tenantId, operator, log);
    lines.length = 0;
    const gone = await bad(offBack.search.slice(1), cookieHeader(offStarted));
    expect([gone.status, gone.title]).toEqual([410, "This consent link is no longer active"]);
    said(gone.body, "Ask Contoso Security for a new consent link.");
    expect(logged("consent callback for a tenant that is not registered")).toEqual([
      { level: "warn", tenantId: off.tenantId, consentStep: "callback", outcome: "refused", errorCode: "tenant_not_registered" },
    ]);

    // The link revoked during the sign-in.
    const rev = await register();
    const revStarted = await start(rev.consentUrl);
    const revBack = await authorize(revStarted.kind === "redirect" ? revStarted.location : "");
    await services.tenantAdmin.revokeLink(rev.tenantId, rev.linkId, operator, log);
    lines.length = 0;
    said((await bad(revBack.search.slice(1), cookieHeader(revStarted))).body, "Ask Contoso Security for a new consent link.");
    expect(logged("consent callback refused by the link's record")).toEqual([
      { level: "warn", tenantId: rev.tenantId, reason: "revoked", consentStep: "callback", outcome: "refused", errorCode: "link_revoked" },
    ]);

    // Revoked meanwhile and answered with an error: refused as withdrawn, nothing recorded on the tenant.
    const revErr = await register();
    const revErrStarted = await start(revErr.consentUrl);
    const revErrBack = await authorize(revErrStarted.kind === "redirect" ? revErrStarted.location : "");
    await services.tenantAdmin.revokeLink(revErr.tenantId, revErr.linkId, operator, log);
    const withdrawn = await bad(`state=${revErrBack.searchParams.get("state") ?? ""}&error=access_denied`, cookieHeader(revErrStarted));
    expect([withdrawn.status, withdrawn.title]).toEqual([410, "This consent link was withdrawn"]);
    expect((await tenantRecord(revErr.tenantId))?.lastErrorCode).toBeUndefined();

    // No code, then a declined and an unfinished consent.
    offsetMs = 1000;
    const next = await services.tenantAdmin.requestReconsent(tenantId, undefined, operator, log);
    const noCode = await start(next.consentUrl);
    const noCodeBack = await authorize(noCode.kind === "redirect" ? noCode.location : "");
    noCodeBack.searchParams.delete("code");
    lines.length = 0;
    const missing = await bad(noCodeBack.search.slice(1), cookieHeader(noCode));
    expect([missing.status, missing.title]).toEqual([400, "This sign-in response is not valid"]);
    said(missing.body, "It carried no authorization code.");
    expect(logged("consent callback without a usable authorization code")).toEqual([{ level: "warn", tenantId, consentStep: "callback", outcome: "refused", errorCode: "missing_code" }]);
    // A code of 4,096 characters is still sent to Entra ID (which refuses this one).
    const longest = await start(next.consentUrl);
    const longestBack = await authorize(longest.kind === "redirect" ? longest.location : "");
    longestBack.searchParams.set("code", "c".repeat(4096));
    expect(await bad(longestBack.search.slice(1), cookieHeader(longest))).toMatchObject({ status: 400, title: "Consent could not be completed" });
    expect((await tenantRecord(tenantId))?.lastErrorCode).toBe("AADSTS70000");
    for (const [error, words] of [
      ["access_denied", ["The administrator declined the permission request, so no access was granted. You can open the consent link again to retry."]],
      ["server_error", ["Microsoft Entra ID answered: server_error.", "Open the consent link again to retry."]],
    ] as const) {
      const answered = await start(next.consentUrl);
      const answeredBack = await authorize(answered.kind === "redirect" ? answered.location : "");
      said((await bad(`state=${answeredBack.searchParams.get("state") ?? ""}&error=${error}`, cookieHeader(answered))).body, ...words);
    }
  });

  it("tells the admin a link is busy while another sign-in through it finishes, and that sign-in's code is held meanwhile", async () => {
    const { tenantId, consentUrl } = await register();
    const first = await start(consentUrl);
    const second = await start(consentUrl);
    const firstBack = await authorize(first.kind === "redirect" ? first.location : "");
    const secondBack = await authorize(second.kind === "redirect" ? second.location : "");
    const hold = stack.entra.holdCodeRedemptions();
    const pending = services.consent.callback(firstBack.searchParams, cookieHeader(first), log);
    for (let i = 0; i < 200 && hold.waiting() === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    lines.length = 0;
    const busy = page(await services.consent.callback(secondBack.searchParams, cookieHeader(second), log));
    hold.release();
    expect([busy.status, busy.title]).toEqual([409, "This consent link is being used right now"]);
    said(busy.body, "Another sign-in through this link is finishing at this moment. If that was not you, tell your provider.", "Otherwise wait a minute and open the link again.");
    expect(logged("consent callback refused by the link's record")).toEqual([
      { level: "warn", tenantId, reason: "in_use", consentStep: "callback", outcome: "refused", errorCode: "link_in_use" },
    ]);
    expect(page(await pending).status).toBe(200);
  });

  async function answerWith(consentFlow: InstanceType<typeof flow.ConsentFlow>, consentUrl: string, alter: (back: URL) => void = () => undefined) {
    const { tenantId, query } = linkQuery(consentUrl);
    const started = await consentFlow.start(tenantId, query, log);
    const back = await authorize(started.kind === "redirect" ? started.location : "");
    alter(back);
    return page(await consentFlow.callback(back.searchParams, cookieHeader(started), log));
  }

  it("names the consenter by object id when the sign-in carries no user name, and tells a new consenter by object id first, then by name", async () => {
    const { tenantId, consentUrl } = await register();
    const oid = randomUUID();
    stack.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { oid, preferredUsername: "alice@fabrikam.test" } });
    stack.entra.idTokenOverrides(tenantId, { preferred_username: undefined }, 1);
    const first = page((await consent(consentUrl)).finished);
    expect(first.body).toContain("Thank you. Fabrikam Ltd is now connected, signed in as your administrator.");
    expect(await tenantRecord(tenantId)).toMatchObject({ consentedBy: oid, consentedByObjectId: oid });
    const reconsent = async () => {
      offsetMs += 1000;
      const next = await services.tenantAdmin.requestReconsent(tenantId, undefined, operator, log);
      expect(page((await consent(next.consentUrl)).finished).status).toBe(200);
    };
    const changes = async () => (await auditOf(tenantId)).filter((entry) => entry.startsWith("consenter_changed"));
    // The same object id, now with a name: the same person.
    await reconsent();
    expect(await changes()).toEqual([]);
    expect(await tenantRecord(tenantId)).toMatchObject({ consentedBy: "alice@fabrikam.test", consentedByObjectId: oid });
    expect((await tenantRecord(tenantId))?.previousConsentedBy).toBeUndefined();
    // A record without an object id (written before they were kept): compared by name, in any case.
    await services.tenants.update(tenantId, () => ({ consentedBy: "ALICE@Fabrikam.test", consentedByObjectId: undefined }));
    stack.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { oid: randomUUID(), preferredUsername: "alice@fabrikam.test" } });
    await reconsent();
    expect(await changes()).toEqual([]);
    // ... or named by the object id of the one signing in now.
    const bobOid = randomUUID();
    await services.tenants.update(tenantId, () => ({ consentedBy: bobOid, consentedByObjectId: undefined }));
    stack.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { oid: bobOid, preferredUsername: "bob@fabrikam.test" } });
    await reconsent();
    expect(await changes()).toEqual([]);
    // Another name: a new consenter, the former one named in the record, the audit and the log.
    await services.tenants.update(tenantId, () => ({ consentedBy: "carol@fabrikam.test", consentedByObjectId: undefined }));
    lines.length = 0;
    await reconsent();
    expect(await changes()).toEqual(["consenter_changed: The consent was given by a different user than before (was carol@fabrikam.test)"]);
    expect(await tenantRecord(tenantId)).toMatchObject({ consentedBy: "bob@fabrikam.test", previousConsentedBy: "carol@fabrikam.test" });
    const changed = await tenantRecord(tenantId);
    expect(changed?.consenterChangedAt).toBe(changed?.consentedAt);
    expect(logged("consent given by a different user than the current consenter")).toEqual([
      { level: "warn", tenantId, consentStep: "callback", outcome: "connected", errorCode: "consenter_changed" },
    ]);
    // A different object id: a new consenter even under the same name.
    stack.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { oid: randomUUID(), preferredUsername: "bob@fabrikam.test" } });
    await reconsent();
    expect(await changes()).toHaveLength(2);
    expect((await tenantRecord(tenantId))?.previousConsentedBy).toBe("bob@fabrikam.test");
  });

  it("shows each page of a completed consent in full", async () => {
    const mde = await register();
    stack.entra.setConsentBehaviour(mde.tenantId, { kind: "approve", user: { preferredUsername: "alice@fabrikam.test" } });
    const done = page((await consent(mde.consentUrl)).finished);
    said(done.body, "One step remains so that Contoso Security can read your Microsoft Defender for Endpoint alerts:");
    for (const step of [
      "Open the Microsoft Defender portal (security.microsoft.com) as a Global or Security Administrator.",
      "Go to Settings > Endpoints > APIs > SIEM and open the MSSP tab.",
      "Enter the Application ID and the Tenant ID below (both belong to Contoso Security), then choose Authorize application.",
    ]) expect(done.body).toContain(`<li>${escapeHtml(step)}</li>`);
    expect(done.body).toContain(`<dt>Your tenant ID (for reference)</dt><dd><code>${mde.tenantId}</code></dd>`);
    expect(done.body).toMatch(/Application ID[\s\S]*value-1[\s\S]*Tenant ID[\s\S]*value-2/);

    const graph = await register({ source: "graph" });
    stack.entra.setConsentBehaviour(graph.tenantId, { kind: "approve", user: { preferredUsername: "alice@fabrikam.test" } });
    const graphDone = page((await consent(graph.consentUrl)).finished);
    said(
      graphDone.body,
      "Thank you. Fabrikam Ltd is now connected, signed in as alice@fabrikam.test.",
      "Contoso Security now reads your Microsoft Defender XDR alerts through Microsoft Graph. Nothing else is needed; the access follows the permissions of the account that consented (for example Security Reader).",
    );
    expect(graphDone.body).toContain(`<dt>Your tenant ID (for reference)</dt><dd><code>${graph.tenantId}</code></dd>`);
    expect(graphDone.body).not.toContain("value-1");

    for (const source of ["mde", "graph"] as const) {
      const app = await register({ consentModel: "application", source });
      const appDone = await answerWith(services.consent, app.consentUrl);
      said(
        appDone.body,
        "Thank you. Fabrikam Ltd is now connected.",
        `Contoso Security now reads your ${source === "graph" ? "Microsoft Defender XDR alerts through Microsoft Graph" : "Microsoft Defender for Endpoint alerts"} with the application permission ${APPLICATION_PERMISSIONS[source].label}. No user account is involved and no token of yours is kept. Nothing else is needed.`,
        "To end this access at any time, remove the application under Enterprise applications in the Microsoft Entra admin center.",
      );
      expect(appDone.body).toContain(`<dt>Your tenant ID (for reference)</dt><dd><code>${app.tenantId}</code></dd>`);
    }
  });

  it("tells the admin and the operator why an application consent did not connect, and what the proof was asked", async () => {
    const proofs: unknown[] = [];
    let next: unknown;
    const scripted = flowWith({
      application: {
        prove: async (input: unknown) => {
          proofs.push(input);
          return next;
        },
      } as unknown as ApplicationConsentVerifier,
    });
    const { tenantId, consentUrl } = await register({ consentModel: "application", source: "graph", defenderRegion: "eu" });
    const answerNext = async (proof: unknown) => {
      next = proof;
      lines.length = 0;
      return answerWith(scripted, consentUrl);
    };
    const fields = { tenantId, source: "graph", consentModel: "application" };

    const other = await answerWith(scripted, consentUrl, (back) => back.searchParams.set("tenant", randomUUID()));
    expect([other.status, other.title]).toEqual([403, "Consent was given for a different organization"]);
    said(
      other.body,
      "The consent did not come from the organization this link was issued for, so it was not used. Nothing was saved.",
      "Open the consent link again and consent as an administrator of the organization the link was sent to.",
    );
    expect(logged("admin consent callback names another tenant; nothing changed")).toEqual([
      { level: "warn", tenantId, consentModel: "application", consentStep: "callback", outcome: "refused", errorCode: "tenant_mismatch" },
    ]);
    expect(proofs).toEqual([]);

    const pending = await answerNext({ kind: "pending", reason: "AADSTS7000229" });
    expect(proofs).toEqual([{ tenantId, source: "graph", defenderRegion: "eu" }]);
    expect([pending.status, pending.title]).toEqual([202, "Almost done: the consent is not active yet"]);
    said(
      pending.body,
      "Microsoft Entra ID does not yet let Contoso Security read your alerts with the permission you granted. A new consent can take a minute to take effect. Nothing was saved yet.",
      "Please try again in a minute: open the consent link again. If you did not grant the consent, grant it when Microsoft asks.",
    );
    expect(logged("admin consent not usable yet")).toEqual([{ level: "info", ...fields, reason: "AADSTS7000229", consentStep: "callback", outcome: "refused", errorCode: "consent_pending" }]);

    const forbidden = await answerNext({ kind: "source_unavailable", code: "source_forbidden" });
    expect([forbidden.status, forbidden.title]).toEqual([403, "Consent could not be confirmed"]);
    said(
      forbidden.body,
      "The permission was granted, but the Microsoft Graph security alerts (Defender XDR) refused access with it. Is the product licensed and turned on in your tenant? Nothing was saved.",
      "Once the service is available to your tenant, open the consent link again.",
    );
    expect(logged("the alert source refused an app token that carries the role")).toEqual([{ level: "warn", ...fields, error: "source_forbidden", consentStep: "callback", outcome: "failed", errorCode: "source_forbidden" }]);

    const unreachable = await answerNext({ kind: "source_unavailable", code: "source_throttled" });
    expect([unreachable.status, unreachable.title]).toEqual([503, "Consent could not be confirmed"]);
    said(unreachable.body, "The consent was received, but the alert service could not be reached to confirm the access. Nothing was saved. Please open the consent link again in a few minutes.");
    expect(logged("could not confirm the access at the alert source")).toEqual([{ level: "warn", ...fields, error: "source_throttled", consentStep: "callback", outcome: "failed", errorCode: "source_throttled" }]);

    const misconfigured = await answerNext({ kind: "token_failed", failure: { category: "app_credential", error: "invalid_client", aadsts: "AADSTS7000215" } });
    expect([misconfigured.status, misconfigured.title]).toEqual([502, "Consent could not be completed"]);
    said(misconfigured.body, "The application of Contoso Security is misconfigured. Nothing was saved; the monitoring of Contoso Security reports this failure to them.");
    expect(lines.filter((line) => line.fields["consentStep"] === "callback").map((line) => [line.level, line.message.split(";")[0], line.fields])).toEqual([
      ["error", "the MSSP application's credential was rejected by Entra ID", { tenantId, error: "AADSTS7000215", category: "app_credential", consentStep: "callback", outcome: "failed", errorCode: "AADSTS7000215" }],
    ]);
    expect((await tenantRecord(tenantId))?.lastErrorCode).toBeUndefined();

    const down = await answerNext({ kind: "token_failed", failure: { category: "transient", error: "temporarily_unavailable" } });
    expect([down.status, down.title]).toEqual([503, "Consent could not be completed"]);
    said(down.body, "Microsoft Entra ID is temporarily unavailable. Nothing was saved. Please open the consent link again in a few minutes.");
    expect(logged("client-credential token for the consent refused")).toEqual([
      { level: "warn", tenantId, error: "temporarily_unavailable", aadsts: undefined, category: "transient", consentStep: "callback", outcome: "failed", errorCode: "temporarily_unavailable" },
    ]);
    expect((await tenantRecord(tenantId))?.lastErrorCode).toBeUndefined();

    // An hour ahead of real time: the times written are the app's clock's.
    offsetMs = 3_600_000;
    const near = (iso: string | undefined) => Math.abs(Date.parse(iso ?? "") - clock()) < 5000;
    const refused = await answerNext({ kind: "token_failed", failure: { category: "reconsent", error: "invalid_grant", aadsts: "AADSTS65001" } });
    expect([refused.status, refused.title]).toEqual([400, "Consent could not be completed"]);
    said(refused.body, "Microsoft Entra ID refused access for the consent (AADSTS65001). Nothing was saved. Open the consent link again.");
    expect(await tenantRecord(tenantId)).toMatchObject({ status: "pending_consent", lastErrorCode: "AADSTS65001", lastErrorMessage: "The admin consent could not be verified" });
    expect(near((await tenantRecord(tenantId))?.lastErrorAt)).toBe(true);
    expect(logged("client-credential token for the consent refused")[0]).toMatchObject({ aadsts: "AADSTS65001", error: "invalid_grant", errorCode: "AADSTS65001" });

    // Proven at last: connected, the error cleared, the link spent; no object id for an admin consent.
    const proven = await answerNext({ kind: "proven", servicePrincipalId: "sp-1" });
    expect([proven.status, proven.title]).toEqual([200, "Consent complete"]);
    const record = await tenantRecord(tenantId);
    expect(record).toMatchObject({ status: "connected", consentModel: "application", source: "graph", consentedBy: "Tenant administrator (admin consent)" });
    expect(near(record?.consentedAt)).toBe(true);
    expect([record?.lastErrorCode, record?.lastErrorMessage, record?.lastErrorAt, record?.consentedByObjectId]).toEqual([undefined, undefined, undefined, undefined]);
    expect(logged("tenant connected")).toEqual([{ level: "info", ...fields, consentStep: "callback", outcome: "connected" }]);
    expect(page(await start(consentUrl))).toMatchObject({ status: 410, title: "This consent link has already been used" });
    const audit = await auditOf(tenantId);
    expect(audit.filter((entry) => entry.startsWith("source_changed") || entry.includes("Consent model changed"))).toEqual([]);
  });

  it("stores the consent's bundle with the app's clock and a fresh access-token key, one generation per consent", async () => {
    offsetMs = 3_600_000;
    const { tenantId, consentUrl } = await register();
    await consent(consentUrl);
    const first = JSON.parse(storedBundle(tenantId)?.value ?? "{}") as { refreshTokenObtainedAt?: number; accessTokenKey?: string; generation?: string };
    expect(Math.abs((first.refreshTokenObtainedAt ?? 0) - clock())).toBeLessThan(5000);
    expect(Buffer.from(first.accessTokenKey ?? "", "base64")).toHaveLength(32);
    const [at, random] = (first.generation ?? "").split("-");
    expect(Math.abs(Number(at) - clock())).toBeLessThan(5000);
    expect(random).toMatch(/^[0-9a-f]{12}$/);
    offsetMs += 1000;
    const next = await services.tenantAdmin.requestReconsent(tenantId, undefined, operator, log);
    await consent(next.consentUrl);
    const second = JSON.parse(storedBundle(tenantId)?.value ?? "{}") as { accessTokenKey?: string; generation?: string };
    expect(second.accessTokenKey).not.toBe(first.accessTokenKey);
    expect(second.generation).not.toBe(first.generation);
  });

  it("tells the admin and the operator why a code was not redeemed or its token not stored, and records only what the customer must fix", async () => {
    const run = async (arrange: (tenantId: string) => void) => {
      const registered = await register();
      arrange(registered.tenantId);
      const started = await start(registered.consentUrl);
      const back = await authorize(started.kind === "redirect" ? started.location : "");
      lines.length = 0;
      const finished = page(await services.consent.callback(back.searchParams, cookieHeader(started), log));
      stack.entra.clearFailures();
      stack.vault.setFailure(null);
      return { ...registered, finished, record: await tenantRecord(registered.tenantId) };
    };
    offsetMs = 3_600_000;
    const near = (iso: string | undefined) => Math.abs(Date.parse(iso ?? "") - clock()) < 5000;

    const other = await run((t) => stack.entra.setConsentBehaviour(t, { kind: "approve", user: { homeTenantId: randomUUID() } }));
    said(
      other.finished.body,
      "The account you signed in with belongs to a different Microsoft Entra organization than the one this link was issued for. Nothing was saved.",
      "Sign in with an administrator account of the organization the link was sent to.",
    );
    expect(other.record).toMatchObject({ lastErrorCode: "tenant_mismatch", lastErrorMessage: "An administrator of a different organization signed in" });
    expect(near(other.record?.lastErrorAt)).toBe(true);
    expect(logged("consent rejected: id token did not match the link")).toEqual([
      { level: "warn", tenantId: other.tenantId, reason: "tenant_mismatch", consentStep: "callback", outcome: "failed", errorCode: "tenant_mismatch" },
    ]);

    const issuer = await run((t) => stack.entra.idTokenOverrides(t, { iss: `https://sts.windows.net/${t}/` }, 1));
    expect([issuer.finished.status, issuer.finished.title]).toEqual([400, "The sign-in could not be verified"]);
    said(issuer.finished.body, "Nothing was saved. Open the consent link again.");
    expect(issuer.record?.lastErrorCode).toBeUndefined();
    expect(logged("consent rejected: id token did not match the link")).toEqual([
      { level: "warn", tenantId: issuer.tenantId, reason: "wrong_issuer", consentStep: "callback", outcome: "failed", errorCode: "wrong_issuer" },
    ]);

    const refused = await run(() => stack.entra.failAllTokenRequests({ status: 400, error: "invalid_grant", errorCode: 70008 }, 1));
    said(refused.finished.body, "Microsoft Entra ID refused the sign-in (AADSTS70008). Nothing was saved. Open the consent link again.");
    expect(refused.record).toMatchObject({ lastErrorCode: "AADSTS70008", lastErrorMessage: "The authorization code could not be redeemed" });
    expect(near(refused.record?.lastErrorAt)).toBe(true);
    expect(logged("authorization code redemption failed")).toEqual([
      { level: "warn", tenantId: refused.tenantId, error: "invalid_grant", aadsts: "AADSTS70008", category: "reconsent", consentStep: "callback", outcome: "failed", errorCode: "AADSTS70008" },
    ]);

    const credential = await run(() => stack.entra.failAllTokenRequests({ status: 401, error: "invalid_client", errorCode: 7000215 }, 1));
    said(credential.finished.body, "The application of Contoso Security is misconfigured. Nothing was saved; the monitoring of Contoso Security reports this failure to them.");
    expect(credential.record?.lastErrorCode).toBeUndefined();
    expect(lines.filter((line) => line.level === "error").map((line) => line.fields)).toEqual([
      { tenantId: credential.tenantId, error: "AADSTS7000215", category: "app_credential", consentStep: "callback", outcome: "failed", errorCode: "AADSTS7000215" },
    ]);

    const down = await run(() => stack.entra.failAllTokenRequests({ status: 503, error: "temporarily_unavailable", errorCode: 50033 }, 1));
    said(down.finished.body, "Microsoft Entra ID is temporarily unavailable. Nothing was saved. Please open the consent link again in a few minutes.");
    expect(down.record?.lastErrorCode).toBeUndefined();
    expect(lines.filter((line) => line.level === "error")).toEqual([]);

    const vault = await run(() => stack.vault.setFailure({ status: 403 }));
    expect([vault.finished.status, vault.finished.title]).toEqual([503, "Consent could not be saved"]);
    said(vault.finished.body, "The sign-in worked, but the token could not be stored. Nothing was saved. Please open the consent link again in a few minutes.");
    expect(near(vault.record?.lastErrorAt)).toBe(true);
    expect(logged("could not store the refresh token")).toEqual([
      { level: "error", tenantId: vault.tenantId, error: expect.any(String), consentStep: "callback", outcome: "failed", errorCode: "secret_store_unavailable" },
    ]);
    expect(lines.find((line) => line.message === "could not store the refresh token")?.fields["error"]).not.toBe("");
  });

  it("holds an application consent's link while it is proven, and gives it back when the proof fails", async () => {
    const { tenantId, consentUrl } = await register({ consentModel: "application" });
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let calls = 0;
    const slow = flowWith({
      application: {
        prove: async () => {
          calls++;
          if (calls === 1) {
            await gate;
            return { kind: "pending", reason: "role_missing" };
          }
          return { kind: "proven", servicePrincipalId: "sp-2" };
        },
      } as unknown as ApplicationConsentVerifier,
    });
    const pending = answerWith(slow, consentUrl);
    for (let i = 0; i < 200 && calls === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    lines.length = 0;
    const busy = await answerWith(slow, consentUrl);
    expect([busy.status, busy.title]).toEqual([409, "This consent link is being used right now"]);
    expect(logged("consent callback refused by the link's record")).toEqual([
      { level: "warn", tenantId, reason: "in_use", consentStep: "callback", outcome: "refused", errorCode: "link_in_use" },
    ]);
    release();
    expect((await pending).status).toBe(202);
    // Given back: the next callback through the link proves and connects, and spends the link.
    expect((await answerWith(slow, consentUrl)).status).toBe(200);
    expect(page(await start(consentUrl))).toMatchObject({ status: 410, title: "This consent link has already been used" });
    const [entry] = (await services.audit.list({ tenantId, limit: 50 })).filter((e) => e.action === "consent_completed");
    expect(entry?.actor).toMatchObject({ kind: "customer_admin", id: "sp-2", name: "Tenant administrator (admin consent)" });
  });
});
