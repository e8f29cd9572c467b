import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { loadConfig } from "../../shared/config";
import { tenantTokenSecretName } from "../../shared/secrets/tenantTokens";
import { createServices } from "../../shared/services";
import { TABLES } from "../../shared/storage/names";
import type { HttpResult } from "../harness/functionsHost";
import {
  completeConsent,
  cookieHeaderFrom,
  openConsentLink,
  registerTenant,
  requestReconsent,
  secretsOf,
  startTestEnvironment,
  type TestEnvironment,
} from "../harness/testEnvironment";

/**
 * Consent integrity (issue 11): a link is recorded when issued, starts a sign-in only while the
 * tenant waits for consent or after an operator asked for a re-consent, is spent once it connects
 * the tenant, can be revoked; the sign-in must finish in the browser that started it; and every
 * change is in the audit trail with who made it.
 */

let env: TestEnvironment;
const responses: HttpResult[] = [];
const track = (result: HttpResult): HttpResult => {
  responses.push(result);
  return result;
};

beforeAll(async () => {
  env = await startTestEnvironment();
});
afterAll(async () => {
  await env?.stop();
});

interface LinkJson {
  id: string;
  purpose: string;
  created: string;
  expires: string;
  expired: boolean;
  used: boolean;
  revoked: boolean;
  revokedBy: string | null;
  issuedBy: string;
}

interface AuditJson {
  at: string;
  tenantId: string;
  action: string;
  actor: { kind: string; id: string; name: string };
  detail: string;
}

async function links(tenantId: string): Promise<LinkJson[]> {
  const result = track(await env.app.http("listConsentLinks", { method: "GET", url: `/api/tenants/${tenantId}/links`, params: { tenantId } }));
  expect(result.status).toBe(200);
  return result.json<{ links: LinkJson[] }>().links;
}

async function audit(query = ""): Promise<{ status: number; entries: AuditJson[] }> {
  const result = track(await env.app.http("listAudit", { method: "GET", url: `/api/audit${query}` }));
  return { status: result.status, entries: result.status === 200 ? result.json<{ entries: AuditJson[] }>().entries : [] };
}

async function tenantView(tenantId: string): Promise<Record<string, unknown>> {
  return track(await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } })).json<Record<string, unknown>>();
}

function tokenVersions(tenantId: string): number {
  return env.vault.peekLatest(tenantTokenSecretName(tenantId))?.versions ?? 0;
}

function linkIdOf(consentUrl: string): string {
  return new URL(consentUrl).searchParams.get("link") ?? "";
}

async function revoke(tenantId: string, linkId: string): Promise<HttpResult> {
  return track(
    await env.app.http("revokeConsentLink", { method: "DELETE", url: `/api/tenants/${tenantId}/links/${linkId}`, params: { tenantId, linkId } }),
  );
}

describe("consent links after connect", () => {
  it("refuses a link reused after the tenant connected, and keeps the stored consent", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    expect((await completeConsent(env, consentUrl)).callback.status).toBe(200);
    const versions = tokenVersions(tenantId);
    expect(versions).toBeGreaterThan(0);

    const reused = track(await openConsentLink(env, consentUrl));
    expect(reused.status).toBe(410);
    expect(reused.location).toBeNull();
    expect(reused.body).toContain("already been used");
    expect(tokenVersions(tenantId)).toBe(versions);
    expect((await tenantView(tenantId))["status"]).toBe("connected");
    expect((await links(tenantId))[0]).toMatchObject({ used: true, revoked: false, purpose: "registration" });
  });

  it("mints no link when a tenant is read; only registration and a re-consent request return one", async () => {
    const { tenantId, result } = await registerTenant(env);
    expect(result.json<Record<string, unknown>>()).toMatchObject({ consentUrl: expect.any(String), consentUrlExpiresAt: expect.any(String), source: "mde" });
    const view = await tenantView(tenantId);
    expect(view).not.toHaveProperty("consentUrl");
    const listed = track(await env.app.http("listTenants", { method: "GET", url: "/api/tenants" }));
    expect(listed.body).not.toContain("consentUrl");
    expect(await links(tenantId)).toHaveLength(1);

    const reconsent = track(
      await env.app.http("requestReconsent", { method: "POST", url: `/api/tenants/${tenantId}/reconsent`, params: { tenantId }, body: "" }),
    );
    expect(reconsent.status).toBe(201);
    const body = reconsent.json<{ consentUrl: string; consentUrlExpiresAt: string; linkId: string }>();
    expect(body.consentUrl).toContain(`/api/consent/${tenantId}?link=${body.linkId}`);
    expect(Date.parse(body.consentUrlExpiresAt)).toBeGreaterThan(Date.now() + 6 * 24 * 3600_000);
    expect((await links(tenantId)).map((link) => link.id)).toContain(body.linkId);
    expect(await links(tenantId)).toHaveLength(2);
  });

  it("lets a re-consent link connect once, and flags a consent by a different user in health and in the audit trail", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    env.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { preferredUsername: "alice@customer.test", name: "Alice" } });
    expect((await completeConsent(env, consentUrl)).callback.status).toBe(200);
    expect(((await tenantView(tenantId))["health"] as { warnings: Array<{ code: string }> }).warnings.map((w) => w.code)).not.toContain("consenter_changed");

    const reconsentUrl = await requestReconsent(env, tenantId);
    env.entra.setConsentBehaviour(tenantId, { kind: "approve", user: { preferredUsername: "mallory@customer.test", name: "Mallory" } });
    const versions = tokenVersions(tenantId);
    expect((await completeConsent(env, reconsentUrl)).callback.status).toBe(200);
    expect(tokenVersions(tenantId)).toBe(versions + 1);

    const view = await tenantView(tenantId);
    expect(view).toMatchObject({ status: "connected", consentedBy: "mallory@customer.test", previousConsentedBy: "alice@customer.test" });
    const warning = (view["health"] as { warnings: Array<{ code: string; message: string }> }).warnings.find((w) => w.code === "consenter_changed");
    expect(warning?.message).toContain("mallory@customer.test");
    expect(warning?.message).toContain("alice@customer.test");

    const trail = (await audit(`?tenantId=${tenantId}`)).entries;
    expect(trail.map((entry) => entry.action)).toEqual(["consenter_changed", "consent_completed", "reconsent_requested", "consent_completed", "tenant_registered"]);
    expect(trail[0]?.actor).toMatchObject({ kind: "customer_admin", name: "mallory@customer.test" });
    expect(trail[2]?.actor.kind).toBe("function_key");

    // Spent: the same re-consent link cannot replace the consent again.
    const reused = track(await openConsentLink(env, reconsentUrl));
    expect(reused.status).toBe(410);
    expect(tokenVersions(tenantId)).toBe(versions + 1);
  });

  it("lists issued links with id, created, expires, used and revoked, never the signature", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const second = await requestReconsent(env, tenantId);
    const result = track(await env.app.http("listConsentLinks", { method: "GET", url: `/api/tenants/${tenantId}/links`, params: { tenantId } }));
    const listed = result.json<{ links: Array<Record<string, unknown>> }>().links;
    expect(listed).toHaveLength(2);
    for (const link of listed) {
      expect(Object.keys(link).sort()).toEqual(
        ["created", "expired", "expires", "id", "issuedBy", "purpose", "revoked", "revokedAt", "revokedBy", "source", "used", "usedAt"].sort(),
      );
      expect(link).toMatchObject({ used: false, revoked: false, expired: false, issuedBy: "Function key holder" });
    }
    for (const url of [consentUrl, second]) {
      const sig = new URL(url).searchParams.get("sig") ?? "";
      expect(sig).toHaveLength(43);
      expect(result.body).not.toContain(sig);
    }
    expect(result.body).not.toContain("consentUrl");
  });
});

describe("one link, two sign-ins at once", () => {
  it("lets only one of two concurrent callbacks through one re-consent link replace the consent", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    expect((await completeConsent(env, consentUrl)).callback.status).toBe(200);
    const reconsentUrl = await requestReconsent(env, tenantId);
    const versions = tokenVersions(tenantId);
    // Two browsers open the same link and both finish signing in; the first callback is still
    // redeeming its code (the token endpoint holds it) when the second arrives.
    const starts = [track(await openConsentLink(env, reconsentUrl)), track(await openConsentLink(env, reconsentUrl))];
    const callbacks = await Promise.all(starts.map(async (start) => (await env.browserGet(start.location ?? "")).location ?? ""));
    const hold = env.entra.holdCodeRedemptions();
    const callback = (i: number) =>
      env.app.http("consentCallback", { method: "GET", url: callbacks[i] ?? "", params: {}, headers: { cookie: cookieHeaderFrom(starts[i] as HttpResult) } });
    const first = callback(0);
    const second = (async () => {
      try {
        await vi.waitFor(() => expect(hold.waiting()).toBe(1), { timeout: 10_000, interval: 5 });
        return await callback(1);
      } finally {
        hold.release();
      }
    })();
    const answers = await Promise.all([first, second]);
    answers.forEach(track);
    expect(answers.map((a) => a.status)).toEqual([200, 409]);
    expect(answers.find((a) => a.status === 409)?.body).toContain("being used right now");
    expect(tokenVersions(tenantId)).toBe(versions + 1);
    const completed = (await audit(`?tenantId=${tenantId}`)).entries.filter((entry) => entry.action === "consent_completed");
    expect(completed).toHaveLength(2);
  });

  it("refuses a link spent by a consent even after the tenant comes to need a new one, and one superseded by a later consent", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    expect((await completeConsent(env, consentUrl)).callback.status).toBe(200);
    const older = await requestReconsent(env, tenantId);
    const newer = await requestReconsent(env, tenantId);
    expect((await completeConsent(env, newer)).callback.status).toBe(200);
    // The older link was issued before the consent that is now current: superseded.
    const superseded = track(await openConsentLink(env, older));
    expect(superseded.status).toBe(410);
    // The tenant loses its consent; the link that once connected it still starts nothing.
    const svc = await import("../../shared/services");
    const { loadConfig } = await import("../../shared/config");
    const services = svc.createServices(loadConfig({ ...process.env, ...env.env }));
    await services.tenants.update(tenantId, () => ({ status: "reconsent_required" }));
    expect(track(await openConsentLink(env, consentUrl)).status).toBe(410);
    expect(track(await openConsentLink(env, newer)).status).toBe(410);
    // An unused link of the registration (the superseded one) works again while a consent is needed.
    expect(track(await openConsentLink(env, older)).status).toBe(302);
  });
});

describe("revoking a link", () => {
  it("stops a revoked link from starting a sign-in, and a sign-in started before the revocation from finishing", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const start = track(await openConsentLink(env, consentUrl));
    expect(start.status).toBe(302);
    const authorize = await env.browserGet(start.location ?? "");

    const revoked = await revoke(tenantId, linkIdOf(consentUrl));
    expect(revoked.status).toBe(200);
    expect(revoked.json<LinkJson>()).toMatchObject({ id: linkIdOf(consentUrl), revoked: true, revokedBy: "Function key holder" });
    // Again: nothing changes and the audit trail does not count it twice.
    expect((await revoke(tenantId, linkIdOf(consentUrl))).status).toBe(200);

    const redeemed = env.entra.stats.tokenRequests.authorization_code;
    const callback = track(
      await env.app.http("consentCallback", { method: "GET", url: authorize.location ?? "", params: {}, headers: { cookie: cookieHeaderFrom(start) } }),
    );
    expect(callback.status).toBe(410);
    expect(callback.body).toContain("withdrawn");
    expect(env.entra.stats.tokenRequests.authorization_code).toBe(redeemed);
    expect(tokenVersions(tenantId)).toBe(0);
    expect((await tenantView(tenantId))["status"]).toBe("pending_consent");

    const again = track(await openConsentLink(env, consentUrl));
    expect(again.status).toBe(410);
    expect(again.location).toBeNull();
    const actions = (await audit(`?tenantId=${tenantId}`)).entries.map((entry) => entry.action);
    expect(actions.filter((action) => action === "consent_link_revoked")).toHaveLength(1);
  });

  it("frees the sign-in places a revoked link's holder filled, so the customer's new link starts at once", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const second = await requestReconsent(env, tenantId);
    const third = await requestReconsent(env, tenantId);
    // Someone with the leaked links opens each ten times: the tenant's 30 places are taken.
    for (const url of [consentUrl, second, third]) {
      for (let i = 0; i < 10; i++) expect((await openConsentLink(env, url)).status).toBe(302);
    }
    const fresh = await requestReconsent(env, tenantId);
    expect((await openConsentLink(env, fresh)).status).toBe(429);
    expect((await revoke(tenantId, linkIdOf(consentUrl))).status).toBe(200);
    expect(track(await openConsentLink(env, fresh)).status).toBe(302);
  });

  it("answers 404 for a link the tenant never had, or a malformed link id, and changes nothing", async () => {
    const { tenantId } = await registerTenant(env);
    expect((await revoke(tenantId, "AAAAAAAAAAAAAAAAAAAAAA")).status).toBe(404);
    expect((await revoke(tenantId, "../../x")).status).toBe(404);
    expect((await revoke(randomUUID(), "AAAAAAAAAAAAAAAAAAAAAA")).status).toBe(404);
    expect((await links(tenantId)).every((link) => !link.revoked)).toBe(true);
  });
});

describe("state bound to the browser", () => {
  it("sets a __Host- cookie holding a hash of the state, Secure, HttpOnly, SameSite=Lax, for the sign-in's lifetime", async () => {
    const { consentUrl } = await registerTenant(env);
    const start = track(await openConsentLink(env, consentUrl));
    const state = new URL(start.location ?? "").searchParams.get("state") ?? "";
    expect(state).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(start.cookies).toHaveLength(1);
    const [cookie] = start.cookies;
    expect(cookie?.name.startsWith("__Host-")).toBe(true);
    expect(cookie).toMatchObject({ path: "/", secure: true, httpOnly: true, sameSite: "Lax", maxAge: 900 });
    expect(cookie?.value).not.toContain(state);
    expect(cookie?.value).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it("refuses a callback from another browser than the one that started the sign-in, without using up the sign-in", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    const start = track(await openConsentLink(env, consentUrl));
    const authorize = await env.browserGet(start.location ?? "");
    const redeemed = env.entra.stats.tokenRequests.authorization_code;

    const otherBrowser = track(await env.app.http("consentCallback", { method: "GET", url: authorize.location ?? "", params: {} }));
    expect(otherBrowser.status).toBe(400);
    expect(otherBrowser.body).toContain("browser that started it");
    const wrongCookie = track(
      await env.app.http("consentCallback", {
        method: "GET",
        url: authorize.location ?? "",
        params: {},
        headers: { cookie: cookieHeaderFrom(start).replace(/=.*/, "=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") },
      }),
    );
    expect(wrongCookie.status).toBe(400);
    expect(env.entra.stats.tokenRequests.authorization_code).toBe(redeemed);
    expect(tokenVersions(tenantId)).toBe(0);
    expect((await tenantView(tenantId))["status"]).toBe("pending_consent");

    // The admin's own browser still finishes the same sign-in, and its cookie is cleared.
    const own = track(
      await env.app.http("consentCallback", { method: "GET", url: authorize.location ?? "", params: {}, headers: { cookie: cookieHeaderFrom(start) } }),
    );
    expect(own.status).toBe(200);
    expect(own.cookies.find((cookie) => cookie.name === start.cookies[0]?.name)).toMatchObject({ value: "", maxAge: 0 });
    expect((await tenantView(tenantId))["status"]).toBe("connected");
  });
});

describe("the audit trail", () => {
  it("records who registered, asked for a re-consent, revoked a link and offboarded, newest first, and filters by tenant", async () => {
    const first = await registerTenant(env, randomUUID(), "Audit One");
    const second = await registerTenant(env, randomUUID(), "Audit Two");
    const reconsentUrl = await requestReconsent(env, first.tenantId);
    expect((await revoke(first.tenantId, linkIdOf(reconsentUrl))).status).toBe(200);
    const offboarded = track(
      await env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${first.tenantId}`, params: { tenantId: first.tenantId } }),
    );
    expect(offboarded.status).toBe(200);

    const mine = await audit(`?tenantId=${first.tenantId}`);
    expect(mine.status).toBe(200);
    expect(mine.entries.map((entry) => entry.action)).toEqual(["tenant_offboarded", "consent_link_revoked", "consent_link_issued", "tenant_registered"]);
    for (const entry of mine.entries) {
      expect(entry.tenantId).toBe(first.tenantId);
      expect(entry.actor).toEqual({ kind: "function_key", id: "function-key", name: "Function key holder" });
      expect(Date.parse(entry.at)).toBeGreaterThan(Date.now() - 60_000);
    }
    const times = mine.entries.map((entry) => Date.parse(entry.at));
    expect([...times].sort((a, b) => b - a)).toEqual(times);

    const all = await audit("?limit=500");
    const tenants = new Set(all.entries.map((entry) => entry.tenantId));
    expect(tenants.has(first.tenantId) && tenants.has(second.tenantId)).toBe(true);
    expect((await audit("?limit=2")).entries).toHaveLength(2);
    expect((await audit("?tenantId=not-a-guid")).status).toBe(400);
    expect((await audit("?limit=0")).status).toBe(400);
    expect((await audit("?limit=100000")).status).toBe(400);
  });
});

describe("an audit entry that did not land", () => {
  it("is written by the retry of an offboarding or a revocation, and only once", async () => {
    const { tenantId, consentUrl } = await registerTenant(env);
    let failNextAuditWrite = false;
    const services = createServices(loadConfig({ ...process.env, ...env.env }), {
      wrapTables: (tables) => ({
        async open(name) {
          const table = await tables.open(name);
          if (name !== TABLES.audit) return table;
          return new Proxy(table, {
            get(target, property, receiver) {
              if (property === "createEntity" && failNextAuditWrite) {
                failNextAuditWrite = false;
                return async () => {
                  throw Object.assign(new Error("storage unavailable"), { name: "RestError", statusCode: 503 });
                };
              }
              const value: unknown = Reflect.get(target, property, receiver);
              return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
            },
          });
        },
      }),
    });
    const actor = { kind: "function_key", id: "function-key", name: "Function key holder" };
    const log = { info: () => undefined, warn: () => undefined, error: () => undefined };

    failNextAuditWrite = true;
    await expect(services.tenantAdmin.revokeLink(tenantId, linkIdOf(consentUrl), actor, log)).rejects.toThrow();
    await services.tenantAdmin.revokeLink(tenantId, linkIdOf(consentUrl), actor, log);
    await services.tenantAdmin.revokeLink(tenantId, linkIdOf(consentUrl), actor, log);

    failNextAuditWrite = true;
    await expect(services.tenantAdmin.offboard(tenantId, actor, log)).rejects.toThrow();
    expect((await tenantView(tenantId))["status"]).toBe("offboarded");
    await services.tenantAdmin.offboard(tenantId, actor, log);
    await services.tenantAdmin.offboard(tenantId, actor, log);

    const actions = (await audit(`?tenantId=${tenantId}`)).entries.map((entry) => entry.action);
    expect(actions.filter((action) => action === "consent_link_revoked")).toHaveLength(1);
    expect(actions.filter((action) => action === "tenant_offboarded")).toHaveLength(1);
  });
});

describe("re-consent requests", () => {
  it("answers 409 for an offboarded tenant, 404 for an unknown one and 400 for a body with an unknown field, issuing nothing", async () => {
    const { tenantId } = await registerTenant(env);
    const post = async (id: string, body: string) =>
      track(await env.app.http("requestReconsent", { method: "POST", url: `/api/tenants/${id}/reconsent`, params: { tenantId: id }, body }));
    expect((await post(tenantId, '{"colour":"red"}')).status).toBe(400);
    expect((await post(tenantId, '{"source":"carrier-pigeon"}')).status).toBe(400);
    expect((await post(randomUUID(), "")).status).toBe(404);
    await env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    expect((await post(tenantId, "")).status).toBe(409);
    expect(await links(tenantId)).toHaveLength(1);
  });
});

describe("the operator API from a browser", () => {
  it("refuses a request another site's page sends (Sec-Fetch-Site: cross-site) with 403, and changes nothing", async () => {
    const tenantId = randomUUID();
    const result = track(
      await env.app.http("registerTenant", {
        method: "POST",
        url: "/api/tenants",
        headers: { "content-type": "text/plain", "sec-fetch-site": "cross-site" },
        body: JSON.stringify({ tenantId, displayName: "Planted" }),
      }),
    );
    expect(result.status).toBe(403);
    expect(result.json<{ error: { code: string } }>().error.code).toBe("cross_site_request");
    expect(track(await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } })).status).toBe(404);
  });
});

describe("secrecy", () => {
  it("puts no token, secret or link signature into any response of these routes", () => {
    const secrets = secretsOf(env);
    for (const response of responses) {
      for (const secret of secrets) expect(response.body).not.toContain(secret);
    }
  });
});
