import dns from "node:dns";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { createServices } from "../../shared/services";
import { capturingLogger } from "../harness/pullFixture";
import { completeConsent, registerTenant, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * A tenant registered with a Defender region is read from that region's host. The fakes listen
 * on loopback, where the app keeps the configured base unchanged, so this test points the app at
 * Microsoft's global host and watches which host name the pull resolves; the lookup is refused,
 * so no request leaves the machine.
 */

const GLOBAL_HOST = "api.security.microsoft.com";

let env: TestEnvironment;
const looked: string[] = [];
const realLookup = dns.lookup;

beforeAll(async () => {
  env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0" });
  const refuseDefenderHosts = function (this: unknown, hostname: string, ...rest: unknown[]): void {
    if (hostname !== GLOBAL_HOST && !hostname.endsWith(`.${GLOBAL_HOST}`)) {
      (realLookup as (...args: unknown[]) => void).call(dns, hostname, ...rest);
      return;
    }
    looked.push(hostname);
    const callback = rest[rest.length - 1] as (error: Error) => void;
    process.nextTick(() => callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND", hostname })));
  };
  (dns as { lookup: unknown }).lookup = refuseDefenderHosts;
});
afterAll(async () => {
  (dns as { lookup: unknown }).lookup = realLookup;
  await env?.stop();
});

describe("a tenant's Defender region", () => {
  it.each(["eu", "ina"])("pulls a tenant registered in region %s from that region's host, never the global one", async (region) => {
    const { tenantId, consentUrl, result } = await registerTenant(env, undefined, "Regional Ltd", { defenderRegion: region });
    expect(result.status).toBe(201);
    expect((await completeConsent(env, consentUrl)).callback.status).toBe(200);
    const services = createServices(loadConfig({ ...process.env, ...env.env, DEFENDER_API_BASE_URL: `https://${GLOBAL_HOST}` }), {
      sleep: async () => undefined,
    });
    looked.length = 0;
    const outcome = await services.tenantPull.run(tenantId, capturingLogger());
    // The host cannot be reached from here; what matters is which one the pull asked for.
    expect(outcome.outcome).toBe("failed");
    expect(looked.length).toBeGreaterThan(0);
    expect(new Set(looked)).toEqual(new Set([`${region}.${GLOBAL_HOST}`]));
  });
});
