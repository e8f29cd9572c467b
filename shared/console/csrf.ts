import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { PageCookie } from "../ui/page";
import type { HeaderReader } from "./access";

/**
 * Cross-site request forgery protection for the console's POST forms, two independent checks:
 *
 * 1. Double-submit token: GET pages set a random token in the `__Host-console-csrf` cookie
 *    (Secure, Path=/, no Domain, SameSite=Strict) and put the same token in a hidden field of
 *    every form; a POST must carry both and they must match (compared in constant time). Another
 *    site can neither read the cookie nor set a `__Host-` cookie for this host.
 * 2. Origin: the request's `Origin` (or, without one, its `Referer`) must be the app's public
 *    origin (MSSP_PUBLIC_BASE_URL). Console pages send `Referrer-Policy: no-referrer`, under
 *    which browsers send `Origin: null` on a form POST (Fetch standard) and no Referer; such a
 *    request is accepted only when the browser's own `Sec-Fetch-Site` says `same-origin`.
 */

export const CSRF_COOKIE = "__Host-console-csrf";
export const CSRF_FIELD = "csrf";
const TOKEN = /^[A-Za-z0-9_-]{43}$/;

export function readCookie(header: string | null, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function csrfCookie(token: string): PageCookie {
  return { name: CSRF_COOKIE, value: token, path: "/", secure: true, httpOnly: true, sameSite: "Strict" };
}

/** The token of this browser: the one in its cookie if well-formed, else a new one to set. */
export function csrfTokenFor(headers: HeaderReader): { token: string; cookie?: PageCookie } {
  const existing = readCookie(headers.get("cookie"), CSRF_COOKIE);
  if (existing && TOKEN.test(existing)) return { token: existing };
  const token = randomBytes(32).toString("base64url");
  return { token, cookie: csrfCookie(token) };
}

function sameToken(a: string, b: string): boolean {
  // Hashing first gives equal lengths, so the comparison time says nothing about either value.
  return timingSafeEqual(createHash("sha256").update(a).digest(), createHash("sha256").update(b).digest());
}

function originOf(value: string): string | undefined {
  try {
    return new URL(value).origin;
  } catch {
    return undefined;
  }
}

export type CsrfVerdict = { ok: true; token: string } | { ok: false; reason: "origin" | "token" };

export function verifyCsrf(headers: HeaderReader, form: URLSearchParams, expectedOrigin: string): CsrfVerdict {
  const fetchSite = headers.get("sec-fetch-site");
  if (fetchSite !== null && fetchSite !== "same-origin") return { ok: false, reason: "origin" };
  const origin = headers.get("origin");
  const referer = headers.get("referer");
  if (origin !== null && origin !== "null") {
    if (origin !== expectedOrigin) return { ok: false, reason: "origin" };
  } else if (referer) {
    if (originOf(referer) !== expectedOrigin) return { ok: false, reason: "origin" };
  } else if (fetchSite !== "same-origin") {
    return { ok: false, reason: "origin" };
  }
  const cookie = readCookie(headers.get("cookie"), CSRF_COOKIE);
  const field = form.get(CSRF_FIELD);
  if (!cookie || !field || !TOKEN.test(cookie) || !sameToken(cookie, field)) return { ok: false, reason: "token" };
  return { ok: true, token: cookie };
}
