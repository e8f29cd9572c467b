import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * Consent links are `/api/consent/{tenantId}?exp=…&sig=…`: an HMAC over the tenant, its
 * registration time and the expiry, so they cannot be guessed or re-pointed at another tenant,
 * stop working on their own, and die with the registration they were issued for (a tenant that
 * is offboarded and registered again does not revive its old links).
 */
export interface ConsentLinkParts {
  tenantId: string;
  /** The tenant record's createdAt. */
  registeredAt: string;
  expiresAt: number;
}

const SIGNATURE = /^[A-Za-z0-9_-]{43}$/;
const EXPIRY = /^[0-9]{1,12}$/;

function sign(key: Buffer, parts: ConsentLinkParts): string {
  const expSeconds = Math.floor(parts.expiresAt / 1000);
  return createHmac("sha256", key)
    .update(`consent-link:v2:${parts.tenantId.toLowerCase()}:${parts.registeredAt}:${expSeconds}`)
    .digest("base64url");
}

export function buildConsentUrl(publicBaseUrl: string, key: Buffer, parts: ConsentLinkParts): string {
  const url = new URL(`${publicBaseUrl}/api/consent/${parts.tenantId}`);
  url.searchParams.set("exp", String(Math.floor(parts.expiresAt / 1000)));
  url.searchParams.set("sig", sign(key, parts));
  return url.toString();
}

export type ConsentLinkVerdict = "valid" | "malformed" | "bad_signature" | "expired";

export function verifyConsentLink(
  key: Buffer,
  registration: { tenantId: string; registeredAt: string },
  exp: string | null,
  sig: string | null,
  now: number,
): ConsentLinkVerdict {
  if (!exp || !sig || !EXPIRY.test(exp) || !SIGNATURE.test(sig)) return "malformed";
  const expected = Buffer.from(sign(key, { ...registration, expiresAt: Number(exp) * 1000 }));
  const given = Buffer.from(sig);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return "bad_signature";
  // Checked after the signature so an attacker learns nothing from the expiry answer.
  if (Number(exp) * 1000 <= now) return "expired";
  return "valid";
}
