import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { buildConsentUrl, verifyConsentLink } from "../../shared/consent/consentLink";

const key = randomBytes(32);
const tenantId = "0b0c4d1e-1111-4222-8333-944445555666";
const now = Date.UTC(2026, 10, 23, 12);
const registeredAt = "2026-11-20T09:00:00.000Z";
const linkId = "Ab3_-Ab3_-Ab3_-Ab3_-Ab";
const registration = { tenantId, registeredAt };

function parts(url: string) {
  const u = new URL(url);
  return { link: u.searchParams.get("link"), exp: u.searchParams.get("exp"), sig: u.searchParams.get("sig") };
}

describe("consent links", () => {
  const url = buildConsentUrl("https://mssp.example", key, { tenantId, registeredAt, linkId, expiresAt: now + 3600_000 });

  it("names the link it was issued as and verifies until it expires", () => {
    expect(parts(url).link).toBe(linkId);
    expect(verifyConsentLink(key, registration, parts(url), now)).toBe("valid");
    expect(verifyConsentLink(key, registration, parts(url), now + 3600_000)).toBe("expired");
  });

  it("rejects another key, tenant, registration or link id, a moved expiry and garbage", () => {
    const query = parts(url);
    expect(verifyConsentLink(key, { ...registration, registeredAt: "2026-11-22T09:00:00.000Z" }, query, now)).toBe("bad_signature");
    expect(verifyConsentLink(randomBytes(32), registration, query, now)).toBe("bad_signature");
    expect(verifyConsentLink(key, { ...registration, tenantId: "0b0c4d1e-1111-4222-8333-944445555667" }, query, now)).toBe("bad_signature");
    expect(verifyConsentLink(key, registration, { ...query, link: "Zb3_-Ab3_-Ab3_-Ab3_-Ab" }, now)).toBe("bad_signature");
    expect(verifyConsentLink(key, registration, { ...query, exp: String(Number(query.exp) + 86400) }, now)).toBe("bad_signature");
    expect(verifyConsentLink(key, registration, { ...query, sig: null }, now)).toBe("malformed");
    expect(verifyConsentLink(key, registration, { ...query, link: null }, now)).toBe("malformed");
    expect(verifyConsentLink(key, registration, { ...query, link: "short" }, now)).toBe("malformed");
    expect(verifyConsentLink(key, registration, { ...query, exp: "12abc" }, now)).toBe("malformed");
    expect(verifyConsentLink(key, registration, { ...query, sig: "%%%" }, now)).toBe("malformed");
  });
});
