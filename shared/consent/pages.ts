/**
 * The few HTML pages a customer's admin sees. Every value is escaped, and the headers keep the
 * page from being framed, cached, or leaking the callback URL (with its code) as a Referer.
 */
export interface HtmlPage {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export function escapeHtml(value: string): string {
  return value
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  "Content-Type": "text/html; charset=utf-8",
  "Cache-Control": "no-store",
  "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  "Referrer-Policy": "no-referrer",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
};

export interface PageContent {
  title: string;
  paragraphs: readonly string[];
  /** Label/value rows shown as a definition list, e.g. ids the admin must copy. */
  details?: ReadonlyArray<readonly [string, string]>;
  steps?: readonly string[];
}

export function renderPage(status: number, content: PageContent): HtmlPage {
  const paragraphs = content.paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`).join("\n");
  const details = content.details?.length
    ? `<dl>${content.details.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd><code>${escapeHtml(v)}</code></dd>`).join("")}</dl>`
    : "";
  const steps = content.steps?.length ? `<ol>${content.steps.map((s) => `<li>${escapeHtml(s)}</li>`).join("")}</ol>` : "";
  const body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(content.title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}
dt{font-weight:600;margin-top:.5rem}code{background:#f3f3f3;padding:.1rem .3rem}</style></head>
<body><h1>${escapeHtml(content.title)}</h1>
${paragraphs}
${steps}
${details}
</body></html>`;
  return { status, headers: { ...PAGE_HEADERS }, body };
}
