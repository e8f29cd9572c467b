/**
 * The few HTML pages a customer's admin sees, on the app's one page template (shared/ui/page.ts).
 * Every value is escaped, and the headers keep the page from being framed, cached, or leaking
 * the callback URL (with its code) as a Referer. Every page names the MSSP (MSSP_DISPLAY_NAME),
 * so the admin knows who asked for the consent.
 */
import { DEFAULT_MSSP_DISPLAY_NAME } from "../config";
import { CONSENT_SCRIPT_PATH, CONSENT_STYLESHEET_PATH } from "../ui/assets";
import { CONSENT_PAGE_HEADERS, copyField, html, renderDocument, type HtmlPage, SANDBOX_BANNER } from "../ui/page";

export { escapeHtml, PAGE_HEADERS, type HtmlPage } from "../ui/page";

export interface PageContent {
  title: string;
  paragraphs: readonly string[];
  /** Label/value rows shown as a definition list, e.g. for reference. */
  details?: ReadonlyArray<readonly [string, string]>;
  steps?: readonly string[];
  /** Values the admin must enter elsewhere: each in a read-only field with a Copy button. */
  copyable?: ReadonlyArray<readonly [string, string]>;
}

export interface ConsentPageOptions {
  /** MSSP_DISPLAY_NAME. */
  msspName?: string;
  /** The local sandbox: say that the Microsoft cloud is simulated. */
  sandbox?: boolean;
}

export function renderPage(status: number, content: PageContent, options: ConsentPageOptions = {}): HtmlPage {
  const msspName = options.msspName ?? DEFAULT_MSSP_DISPLAY_NAME;
  const main = html`${content.paragraphs.map((p) => html`<p>${p}</p>`)}
${content.steps?.length ? html`<ol class="steps">${content.steps.map((s) => html`<li>${s}</li>`)}</ol>` : ""}
${content.copyable?.length ? html`<div class="copy-values">${content.copyable.map(([label, value], i) => copyField(`value-${i + 1}`, label, value))}</div>` : ""}
${content.details?.length ? html`<dl class="facts">${content.details.map(([k, v]) => html`<dt>${k}</dt><dd><code>${v}</code></dd>`)}</dl>` : ""}`;
  const body = renderDocument({
    title: content.title,
    site: { name: `Connecting Microsoft Defender for Endpoint to ${msspName}` },
    ...(options.sandbox ? { banner: SANDBOX_BANNER } : {}),
    main,
    footer: `This consent was requested by ${msspName}. You sign in on Microsoft's own pages; this service never sees your password.`,
    stylesheet: CONSENT_STYLESHEET_PATH,
    scripts: content.copyable?.length ? [CONSENT_SCRIPT_PATH] : [],
    bodyClass: "consent",
  });
  return { status, headers: { ...CONSENT_PAGE_HEADERS }, body };
}

/** The page for a failure nobody anticipated: only a reference for the MSSP, never a detail. */
export function unexpectedFailurePage(reference: string, options: ConsentPageOptions = {}): HtmlPage {
  const msspName = options.msspName ?? DEFAULT_MSSP_DISPLAY_NAME;
  return renderPage(
    503,
    {
      title: "Something went wrong",
      paragraphs: [
        "The consent service could not complete this step, so the consent may not have taken effect.",
        `Please open your consent link again in a few minutes. If it keeps failing, give ${msspName} this reference:`,
      ],
      details: [["Reference", reference]],
    },
    options,
  );
}
