import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * Consent links are `/api/consent/{tenantId}?link=…&exp=…&sig=…`: an HMAC over the tenant, its
 * registration time, the link's id and the expiry, so they cannot be guessed, re-pointed at
 * another tenant or another issued link, stop working on their own, and die with the
 * registration they were issued for (a tenant offboarded and registered again does not revive
 * its old links). The signature only proves the app issued the link; whether it may still start
 * a sign-in (not revoked, not spent) is the link record's answer (./consentLinks.ts).
 */
export interface ConsentLinkParts {
  tenantId: string;
  /** The tenant record's createdAt. */
  registeredAt: string;
  /** The issued link's id in the link records. */
  linkId: string;
  expiresAt: number;
}

const SIGNATURE = /^[A-Za-z0-9_-]{43}$/;
const EXPIRY = /^[0-9]{1,12}$/;
export const LINK_ID = /^[A-Za-z0-9_-]{22}$/;

function sign(key: Buffer, parts: ConsentLinkParts): string {
  const expSeconds = Math.floor(parts.expiresAt / 1000);
  return createHmac("sha256", key)
    .update(`consent-link:v3:${parts.tenantId.toLowerCase()}:${parts.registeredAt}:${parts.linkId}:${expSeconds}`)
    .digest("base64url");
}

export function buildConsentUrl(publicBaseUrl: string, key: Buffer, parts: ConsentLinkParts): string {
  const url = new URL(`${publicBaseUrl}/api/consent/${parts.tenantId}`);
  url.searchParams.set("link", parts.linkId);
  url.searchParams.set("exp", String(Math.floor(parts.expiresAt / 1000)));
  url.searchParams.set("sig", sign(key, parts));
  return url.toString();
}

export type ConsentLinkVerdict = "valid" | "malformed" | "bad_signature" | "expired";

export interface ConsentLinkQuery {
  link: string | null;
  exp: string | null;
  sig: string | null;
}

export function verifyConsentLink(
  key: Buffer,
  registration: { tenantId: string; registeredAt: string },
  query: ConsentLinkQuery,
  now: number,
): ConsentLinkVerdict {
  const { link, exp, sig } = query;
  if (!link || !exp || !sig || !LINK_ID.test(link) || !EXPIRY.test(exp) || !SIGNATURE.test(sig)) return "malformed";
  const expected = Buffer.from(sign(key, { ...registration, linkId: link, expiresAt: Number(exp) * 1000 }));
  const given = Buffer.from(sig);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) return "bad_signature";
  // Checked after the signature so an attacker learns nothing from the expiry answer.
  if (Number(exp) * 1000 <= now) return "expired";
  return "valid";
}
