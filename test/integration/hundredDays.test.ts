import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent, fetch } from "undici";
import { loadConfig } from "../../shared/config";
import { DEFENDER_ALERT_SCOPE } from "../../shared/identity/entraClient";
import { createServices, type Services } from "../../shared/services";
import { tenantTokenSecretName } from "../../shared/secrets/tenantTokens";
import { makeAlert, toMdeTimestamp } from "../fakes/alerts";
import { capturingLogger, connectedTenant, deliveryTally } from "../harness/pullFixture";
import { completeConsent, requestReconsent, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * A hundred days of one tenant on the injected clock, through the real MSAL and Key Vault
 * clients against the fakes. Entra's refresh tokens die 90 days after they are issued and
 * rotate on every use (test/fakes/fakeEntra.ts), so the run only stays connected if the app
 * writes the rotated token back.
 *
 * Pulls run every 12 simulated hours, not every 5 minutes: a pull is a dozen Table, Blob, Key
 * Vault and HTTPS round trips (0.13 s on the 2-core machine, 0.5 s when it is busy), so 28,800
 * pulls would take an hour or more and 600 (every 4 hours) took over three minutes; these 200
 * take about 27 s (100 s busy). They keep every property under test:
 * the cached access token (one hour) has expired at every pull, so each pull redeems and rotates
 * the refresh token, and the 24-hour write-back rule falls on every second pull. Five-minute
 * spacing matters only inside the hour, where the call budget lives: that day has two pulls two
 * minutes apart. A new Services instance (a process restart) starts every day.
 */

const DAYS = 100;
const STEP_HOURS = 12;
const HOUR = 3600_000;
const DAY = 24 * HOUR;
/** Days whose first pull meets a transient token failure (twice, then the endpoint answers). */
const TRANSIENT_DAYS = new Set([10, 40, 70, 95]);
/** The Defender API fails that day's first pull and a retry five minutes later in another process; the next pull succeeds. */
const OUTAGE_DAY = 20;
/** Two pulls two minutes apart in two processes: the second must count the first's calls. */
const BUDGET_DAY = 30;
/** A re-consent lands in the middle of the pull's token write-back. */
const CONSENT_DAY = 50;

let env: TestEnvironment;
let offset = 0;
const simNow = (): number => Date.now() + offset;

beforeAll(async () => {
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0", PULL_PAGE_SIZE: "100", PULL_OVERLAP_MINUTES: "10" });
  env.entra.setClock(simNow);
});
afterAll(async () => {
  env?.entra.setClock(Date.now);
  env?.vault.onRequest(null);
  await env?.stop();
});

function newProcess(): Services {
  return createServices(loadConfig({ ...process.env, ...env.env }), { clock: simNow, sleep: async () => undefined });
}

function advance(ms: number): void {
  offset += ms;
  env.defender.setClockOffset(offset);
}

interface StoredBundle {
  refreshToken: string;
  refreshTokenObtainedAt: number;
  generation: string;
}

async function tenantStatus(tenantId: string): Promise<string> {
  const res = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
  return res.json<{ status: string }>().status;
}

/** Redeems a refresh token at the fake Entra directly, as the app would: the error code, or "ok". */
async function redeem(tenantId: string, refreshToken: string): Promise<string> {
  const agent = new Agent({ connect: { ca: env.certPem } });
  try {
    const response = await fetch(`${env.entra.url}/${tenantId}/oauth2/v2.0/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: refreshToken,
        client_id: env.clientId,
        client_secret: env.clientSecret,
        scope: `${DEFENDER_ALERT_SCOPE} offline_access`,
      }),
      dispatcher: agent,
    });
    if (response.ok) return "ok";
    const body = (await response.json()) as { error_codes?: number[] };
    return String(body.error_codes?.[0] ?? response.status);
  } finally {
    await agent.close();
  }
}

describe("a hundred days on the injected clock", () => {
  it("stays connected with one Key Vault write a day, retries transient token failures, keeps a newer consent and persists its counters", async () => {
    const started = Date.now();
    const tenantId = await connectedTenant(env, "Hundred Days Ltd");
    const secretName = tenantTokenSecretName(tenantId);
    const bundle = (): StoredBundle => JSON.parse(env.vault.peekLatest(secretName)?.value ?? "{}") as StoredBundle;
    const firstConsent = bundle();

    // Every PUT of the tenant's secret, by simulated day; the consent's own writes are kept apart.
    const pullWrites = new Array<number>(DAYS).fill(0);
    let day = 0;
    let consentInFlight = false;
    let consentArmed = false;
    let consentBundle: StoredBundle | undefined;
    let consentStatus = 0;
    let reconsentUrl = "";
    env.vault.onRequest(async ({ method, name, version }) => {
      if (method !== "PUT" || name !== secretName || version !== undefined || consentInFlight) return;
      pullWrites[day] = (pullWrites[day] ?? 0) + 1;
      if (!consentArmed) return;
      // The write-back has checked the stored generation and is about to write: the admin's
      // new consent lands first. Key Vault has no conditional write, so only the version
      // history can tell the write-back that it just buried a newer consent.
      consentArmed = false;
      consentInFlight = true;
      // The app under test runs on the real clock (only the pulls take the simulated one), so
      // Entra signs this sign-in's id token on the real clock too, or the app would refuse it.
      env.entra.setClock(Date.now);
      try {
        const { callback } = await completeConsent(env, reconsentUrl);
        consentStatus = callback.status;
        consentBundle = bundle();
      } finally {
        env.entra.setClock(simNow);
        consentInFlight = false;
      }
    });

    let alertSeq = 0;
    let transientRefused = 0;
    for (day = 0; day < DAYS; day++) {
      const svc = newProcess();
      if (day % 25 === 0) console.log(`hundred days: day ${day} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
      for (let step = 0; step < 24 / STEP_HOURS; step++) {
        advance(STEP_HOURS * HOUR);
        const now = env.defender.now();
        // Two alerts since the last pull, one of them updated again later in the interval.
        const a = makeAlert({ id: `hd-${alertSeq++}`, lastUpdateTime: toMdeTimestamp(now - 3 * HOUR) });
        const b = makeAlert({ id: `hd-${alertSeq++}`, lastUpdateTime: toMdeTimestamp(now - 2 * HOUR) });
        env.defender.addAlerts(tenantId, [a, b]);
        env.defender.updateAlert(tenantId, a.id, { status: "Resolved", lastUpdateTime: toMdeTimestamp(now - 30 * 60_000) });

        const firstOfDay = step === 0;
        if (firstOfDay && TRANSIENT_DAYS.has(day)) {
          env.entra.failRefresh(tenantId, { status: 503, error: "temporarily_unavailable", errorCode: 50033 }, 2);
        }
        if (firstOfDay && day === OUTAGE_DAY) env.defender.fail(tenantId, { status: 503, times: 1_000 });
        if (firstOfDay && day === CONSENT_DAY) {
          reconsentUrl = await requestReconsent(env, tenantId);
          consentArmed = true;
        }
        const refreshesBefore = env.entra.stats.tokenRequests.refresh_token;
        const outcome = await svc.tenantPull.run(tenantId, capturingLogger());
        const state = await svc.pullState.read(tenantId);

        if (firstOfDay && day === OUTAGE_DAY) {
          expect(outcome, `day ${day}`).toMatchObject({ outcome: "failed", category: "transient" });
          expect(state?.consecutiveFailures).toBe(1);
          // The next process, still in the outage, counts on from what the first one stored.
          advance(5 * 60_000);
          const next = newProcess();
          expect(await next.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "failed" });
          expect((await next.pullState.read(tenantId))?.consecutiveFailures).toBe(2);
          env.defender.fail(tenantId, { status: 503, times: 0 });
          continue;
        }
        expect(outcome, `day ${day} step ${step}: ${JSON.stringify(outcome)}`).toMatchObject({ outcome: "pulled", complete: true });
        // A success resets the failure counter (docs/pull.md: health counts consecutive failures).
        expect(state?.consecutiveFailures, `day ${day}`).toBe(0);
        expect(state?.lastErrorCode).toBeUndefined();
        if (firstOfDay && TRANSIENT_DAYS.has(day)) {
          // Two refused requests and the one that worked: retried inside the same pull.
          expect(env.entra.stats.tokenRequests.refresh_token - refreshesBefore).toBeGreaterThanOrEqual(3);
          transientRefused += 2;
          expect(await tenantStatus(tenantId)).toBe("connected");
        }
        if (day === BUDGET_DAY && step === 0) {
          // Another process two minutes later: the calls of the first are still in the hour.
          const first = state?.apiCalls ?? [];
          expect(first.length).toBeGreaterThan(0);
          advance(2 * 60_000);
          const other = newProcess();
          expect(await other.tenantPull.run(tenantId, capturingLogger())).toMatchObject({ outcome: "pulled" });
          const both = (await other.pullState.read(tenantId))?.apiCalls ?? [];
          expect(both.length).toBeGreaterThan(first.length);
          expect(both.slice(0, first.length)).toEqual(first);
        }
        if (day === BUDGET_DAY && step === 1) {
          // Twelve hours on, the calls of an hour ago have left the budget's window.
          expect((state?.apiCalls ?? []).every((t) => t > simNow() - HOUR)).toBe(true);
        }
      }
    }
    env.vault.onRequest(null);
    const elapsed = Date.now() - started;

    // Never a re-consent: still connected, and the stored token still redeems.
    expect(await tenantStatus(tenantId)).toBe("connected");
    const last = bundle();
    expect(await redeem(tenantId, last.refreshToken)).toBe("ok");
    // The control: the consent's own refresh token, redeemed once on day 0 and never stored
    // again, died 90 days after it was issued; without the write-back this tenant would have
    // needed a re-consent.
    expect(await redeem(tenantId, firstConsent.refreshToken)).toBe("700082");

    // One write a day (the day's last pull is the first 24 hours after the previous write). On
    // the consent's day two: the write-back and its repair, which puts the consent back on top.
    const expected = pullWrites.map((_, d) => (d === CONSENT_DAY ? 2 : 1));
    expect(pullWrites).toEqual(expected);

    // The newer consent was never overwritten: every token since descends from it.
    expect(consentStatus).toBe(200);
    expect(consentBundle).toBeDefined();
    expect(consentBundle?.generation).not.toBe(firstConsent.generation);
    expect(last.generation).toBe(consentBundle?.generation);
    expect(last.refreshTokenObtainedAt).toBeGreaterThan(simNow() - DAY);

    const t = await deliveryTally(env, tenantId);
    console.log(
      `hundred days: ${DAYS * (24 / STEP_HOURS) + 2} pulls (one more on the budget and the outage day) in ${(elapsed / 1000).toFixed(1)} s; ` +
        `served ${t.served}, delivered ${t.delivered}, duplicates ${t.duplicates}; ` +
        `Key Vault writes by pulls ${pullWrites.reduce((s, n) => s + n, 0)}; transient token refusals retried ${transientRefused}`,
    );
    expect(t.finalVersions).toBe(alertSeq);
    expect(t.missing).toEqual([]);
    expect(t.missingFinal).toEqual([]);
    expect(t.duplicates).toBe(0);
  }, 300_000);
});
