/**
 * The one page template of the app, shared by the customer-facing consent pages and the
 * operator console: escaping, the document chrome (language, landmarks, banner, header) and the
 * security headers. No external asset: the stylesheet and the small scripts are served by the
 * app itself (shared/ui/assets.ts), so a `'self'` Content-Security-Policy covers them.
 */

/** An HTML response, independent of the Functions runtime (functions/ maps it). */
export interface HtmlPage {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Cookies to set; the Functions host turns these into Set-Cookie headers. */
  cookies?: PageCookie[];
}

/** Structurally the @azure/functions Cookie, which shared/ must not import. */
export interface PageCookie {
  name: string;
  value: string;
  path?: string;
  secure?: boolean;
  httpOnly?: boolean;
  sameSite?: "Strict" | "Lax" | "None";
  maxAge?: number;
}

export function escapeHtml(value: string): string {
  return value
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

/** Markup that is already safe: built by `html` from escaped values, never from raw input. */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

type HtmlValue = SafeHtml | string | number | boolean | null | undefined | readonly HtmlValue[];

function render(value: HtmlValue): string {
  if (value === null || value === undefined || value === false) return "";
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map((item: HtmlValue) => render(item)).join("");
  return escapeHtml(String(value));
}

/**
 * Template tag: every interpolated value is escaped unless it is SafeHtml (the result of another
 * `html` template). Markup therefore only ever comes from template literals in the source.
 */
export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): SafeHtml {
  let out = strings[0] ?? "";
  for (let i = 0; i < values.length; i++) out += render(values[i]) + (strings[i + 1] ?? "");
  return new SafeHtml(out);
}

/** On every response the app writes, pages, JSON, redirects and assets alike: HTTPS only, for a year. */
export const HSTS_HEADER: Readonly<Record<string, string>> = { "Strict-Transport-Security": "max-age=31536000; includeSubDomains" };

const COMMON_HEADERS: Readonly<Record<string, string>> = {
  "Content-Type": "text/html; charset=utf-8",
  "Cache-Control": "no-store",
  "Referrer-Policy": "no-referrer",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  ...HSTS_HEADER,
  "Cross-Origin-Opener-Policy": "same-origin",
};

/**
 * Consent pages: only the app's own stylesheet and copy script; no form may post anywhere (the
 * pages have none), nothing may frame them, and the callback URL (with its code) never leaves
 * as a Referer.
 */
export const CONSENT_PAGE_HEADERS: Readonly<Record<string, string>> = {
  ...COMMON_HEADERS,
  "Content-Security-Policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
};

/** Console pages: same-origin assets and forms only. */
export const CONSOLE_PAGE_HEADERS: Readonly<Record<string, string>> = {
  ...COMMON_HEADERS,
  "Content-Security-Policy":
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
};

/** Kept for existing imports: the consent pages' headers. */
export const PAGE_HEADERS = CONSENT_PAGE_HEADERS;

export interface Layout {
  /** The document title and the page's only h1. */
  title: string;
  /** Shown above the header, e.g. that the sandbox simulates the Microsoft cloud. */
  banner?: string;
  /** Left of the header: the product or the MSSP's name; `href` makes it a link home. */
  site: { name: string; href?: string };
  /** Right of the header, e.g. the signed-in operator. */
  headerExtra?: SafeHtml;
  /** The main landmark's content after the h1. */
  main: SafeHtml;
  /** Text of the footer. */
  footer?: string;
  stylesheet: string;
  scripts?: readonly string[];
  /** A class on body, e.g. the narrower consent layout. */
  bodyClass?: string;
}

export function renderDocument(layout: Layout): string {
  const site = layout.site.href ? html`<a class="site-name" href="${layout.site.href}">${layout.site.name}</a>` : html`<span class="site-name">${layout.site.name}</span>`;
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${layout.title}</title>
<link rel="stylesheet" href="${layout.stylesheet}">
${(layout.scripts ?? []).map((src) => html`<script src="${src}" defer></script>`)}
</head>
<body${layout.bodyClass ? html` class="${layout.bodyClass}"` : ""}>
<a class="skip-link" href="#main">Skip to main content</a>
<header>
${layout.banner ? html`<div class="banner" role="note"><strong>${layout.banner}</strong></div>` : ""}
<div class="site-header">${site}${layout.headerExtra ?? ""}</div>
</header>
<main id="main" tabindex="-1">
<h1>${layout.title}</h1>
${layout.main}
</main>
${layout.footer ? html`<footer class="site-footer"><p>${layout.footer}</p></footer>` : ""}
</body></html>`.value;
}

/** A value shown in a read-only field with a Copy button (the script unhides the button). */
export function copyField(id: string, label: string, value: string): SafeHtml {
  return html`<div class="copy-field">
<label for="${id}">${label}</label>
<div class="copy-row"><input id="${id}" type="text" readonly value="${value}" data-select-on-focus spellcheck="false" autocomplete="off">
<button type="button" class="button" data-copy-target="${id}" hidden>Copy<span class="visually-hidden"> ${label}</span></button></div>
<p class="copy-status" role="status" aria-live="polite" data-copy-status-for="${id}"></p>
</div>`;
}

/** Every page the sandbox serves says so. */
export const SANDBOX_BANNER = "Simulated Microsoft cloud (sandbox)";
