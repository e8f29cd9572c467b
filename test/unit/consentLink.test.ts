import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { buildConsentUrl, verifyConsentLink } from "../../shared/consent/consentLink";

const key = randomBytes(32);
const tenantId = "0b0c4d1e-1111-4222-8333-944445555666";
const now = Date.UTC(2026, 10, 23, 12);
const registeredAt = "2026-11-20T09:00:00.000Z";
const registration = { tenantId, registeredAt };

function parts(url: string) {
  const u = new URL(url);
  return { exp: u.searchParams.get("exp"), sig: u.searchParams.get("sig") };
}

describe("consent links", () => {
  const url = buildConsentUrl("https://mssp.example", key, { tenantId, registeredAt, expiresAt: now + 3600_000 });

  it("verifies its own links until they expire", () => {
    const { exp, sig } = parts(url);
    expect(verifyConsentLink(key, registration, exp, sig, now)).toBe("valid");
    expect(verifyConsentLink(key, registration, exp, sig, now + 3600_000)).toBe("expired");
  });

  it("rejects another key, another tenant, another registration, a moved expiry and garbage", () => {
    const { exp, sig } = parts(url);
    expect(verifyConsentLink(key, { ...registration, registeredAt: "2026-11-22T09:00:00.000Z" }, exp, sig, now)).toBe("bad_signature");
    expect(verifyConsentLink(randomBytes(32), registration, exp, sig, now)).toBe("bad_signature");
    expect(verifyConsentLink(key, { ...registration, tenantId: "0b0c4d1e-1111-4222-8333-944445555667" }, exp, sig, now)).toBe("bad_signature");
    expect(verifyConsentLink(key, registration, String(Number(exp) + 86400), sig, now)).toBe("bad_signature");
    expect(verifyConsentLink(key, registration, exp, null, now)).toBe("malformed");
    expect(verifyConsentLink(key, registration, "12abc", sig, now)).toBe("malformed");
    expect(verifyConsentLink(key, registration, exp, "%%%", now)).toBe("malformed");
  });
});
