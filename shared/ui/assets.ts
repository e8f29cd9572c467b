import { HSTS_HEADER } from "./page";
/**
 * The only assets the pages load, served by the app itself (no CDN, no external request): one
 * stylesheet for the consent pages and the console, and one small script that adds Copy buttons.
 * Without the script everything still works: the values stay in read-only fields that select
 * themselves on focus.
 */

export const STYLESHEET = `:root{--fg:#1b1b1b;--muted:#4a4a4a;--bg:#fff;--line:#c4c4c4;--accent:#0b57a4;--focus:#b35c00;
--ok-bg:#e6f4ea;--ok-fg:#0d5224;--warn-bg:#fff4e0;--warn-fg:#6b3d00;--bad-bg:#fde8e8;--bad-fg:#8a1111;--info-bg:#e8f0fb;--info-fg:#0b3d73;--off-bg:#eeeeee;--off-fg:#3a3a3a}
*{box-sizing:border-box}
[hidden]{display:none!important}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0;line-height:1.5}
main{max-width:72rem;margin:0 auto;padding:1rem 1.25rem 3rem}
main:focus{outline:none}
.consent main{max-width:42rem}
a{color:var(--accent)}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.skip-link{position:absolute;left:-999px;top:0;background:#fff;padding:.5rem 1rem;z-index:10}
.skip-link:focus{left:1rem}
.banner{background:#3d2a00;color:#fff;padding:.4rem 1.25rem;text-align:center}
.site-header{display:flex;flex-wrap:wrap;gap:1rem;justify-content:space-between;align-items:center;padding:.75rem 1.25rem;border-bottom:1px solid var(--line);background:#f6f8fa}
.site-name{font-weight:700;color:var(--fg);text-decoration:none}
a.site-name:hover{text-decoration:underline}
.operator{color:var(--muted)}
.site-footer{max-width:72rem;margin:0 auto;padding:1rem 1.25rem;color:var(--muted);border-top:1px solid var(--line)}
h1{font-size:1.6rem;margin:.5rem 0 1rem}
h2{font-size:1.25rem;margin:2rem 0 .75rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1.25rem;margin:0}
dl.facts dt{font-weight:600}
dl.facts dd{margin:0}
code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:.95rem}
caption{text-align:left;font-weight:600;padding:.25rem 0 .5rem}
th,td{border-bottom:1px solid var(--line);padding:.45rem .5rem;text-align:left;vertical-align:top}
thead th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.table-wrap{overflow-x:auto}
.badge{display:inline-block;border:1px solid currentColor;border-radius:1rem;padding:0 .6rem;font-size:.85rem;font-weight:600;white-space:nowrap}
.badge-healthy{background:var(--ok-bg);color:var(--ok-fg)}
.badge-degraded{background:var(--warn-bg);color:var(--warn-fg)}
.badge-reconsent_required{background:var(--bad-bg);color:var(--bad-fg)}
.badge-pending_consent{background:var(--info-bg);color:var(--info-fg)}
.badge-offboarded{background:var(--off-bg);color:var(--off-fg)}
.muted{color:var(--muted)}
.notice{border:1px solid var(--line);border-left:6px solid var(--accent);padding:.75rem 1rem;margin:1rem 0;background:#f8fbff}
.notice-error{border-left-color:var(--bad-fg);background:#fff8f8}
.notice-ok{border-left-color:var(--ok-fg);background:#f6fcf8}
form.filters{display:flex;flex-wrap:wrap;gap:.75rem 1rem;align-items:flex-end;margin:0 0 1rem}
.field{display:flex;flex-direction:column;gap:.25rem;margin:0 0 1rem}
form.filters .field{margin:0}
label{font-weight:600}
.hint{color:var(--muted);font-size:.9rem;margin:0}
.field-error{color:var(--bad-fg);font-weight:600;margin:0}
input[type=text],input[type=search],select{font:inherit;padding:.4rem .5rem;border:1px solid #767676;border-radius:4px;min-width:14rem;max-width:100%}
input[aria-invalid=true]{border:2px solid var(--bad-fg)}
.button{font:inherit;padding:.4rem .9rem;border:1px solid var(--accent);border-radius:4px;background:var(--accent);color:#fff;cursor:pointer;text-decoration:none;display:inline-block}
.button-secondary{background:#fff;color:var(--accent)}
.button-danger{background:var(--bad-fg);border-color:var(--bad-fg)}
.copy-field{margin:0 0 1rem}
.copy-row{display:flex;gap:.5rem;flex-wrap:wrap}
.copy-row input{flex:1 1 24rem;font-family:ui-monospace,Consolas,monospace}
.copy-status{min-height:1.5rem;margin:.25rem 0 0;color:var(--ok-fg)}
nav.pager{display:flex;gap:1rem;align-items:center;margin:1rem 0}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
ol.steps li{margin:.25rem 0}
section.danger{border:1px solid var(--bad-fg);border-radius:4px;padding:0 1rem 1rem;margin-top:2rem}
`;

export const COPY_SCRIPT = `(function () {
  "use strict";
  function statusFor(id) {
    var all = document.querySelectorAll("[data-copy-status-for]");
    for (var i = 0; i < all.length; i++) if (all[i].getAttribute("data-copy-status-for") === id) return all[i];
    return null;
  }
  function say(id, text) {
    var el = statusFor(id);
    if (el) el.textContent = text;
  }
  function init() {
    var fields = document.querySelectorAll("input[data-select-on-focus]");
    for (var i = 0; i < fields.length; i++) {
      fields[i].addEventListener("focus", function (event) { event.target.select(); });
      fields[i].addEventListener("click", function (event) { event.target.select(); });
    }
    var buttons = document.querySelectorAll("button[data-copy-target]");
    for (var j = 0; j < buttons.length; j++) {
      (function (button) {
        var id = button.getAttribute("data-copy-target");
        var input = document.getElementById(id);
        if (!input) return;
        button.hidden = false;
        button.addEventListener("click", function () {
          function fallback() {
            input.focus();
            input.select();
            say(id, "Selected: press Ctrl+C (or Cmd+C) to copy.");
          }
          if (navigator.clipboard && window.isSecureContext) {
            navigator.clipboard.writeText(input.value).then(function () { say(id, "Copied to the clipboard."); }, fallback);
          } else {
            fallback();
          }
        });
      })(buttons[j]);
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
`;

export interface Asset {
  contentType: string;
  body: string;
}

const CSS = "text/css; charset=utf-8";
const JS = "text/javascript; charset=utf-8";

/** What `/api/console/assets/{name}` serves. */
export const CONSOLE_ASSETS: Readonly<Record<string, Asset>> = {
  "console.css": { contentType: CSS, body: STYLESHEET },
  "console.js": { contentType: JS, body: COPY_SCRIPT },
};

/** What `/api/consent/assets/{name}` serves (public: the customer's admin has no sign-in to the console). */
export const CONSENT_ASSETS: Readonly<Record<string, Asset>> = {
  "consent.css": { contentType: CSS, body: STYLESHEET },
  "copy.js": { contentType: JS, body: COPY_SCRIPT },
};

export const CONSOLE_STYLESHEET_PATH = "/api/console/assets/console.css";
export const CONSOLE_SCRIPT_PATH = "/api/console/assets/console.js";
export const CONSENT_STYLESHEET_PATH = "/api/consent/assets/consent.css";
export const CONSENT_SCRIPT_PATH = "/api/consent/assets/copy.js";

/** The response for an asset request: static, public, cacheable for a short while. */
export function assetResponse(assets: Readonly<Record<string, Asset>>, name: string): { status: number; headers: Record<string, string>; body: string } {
  const asset = Object.prototype.hasOwnProperty.call(assets, name) ? assets[name] : undefined;
  if (!asset) {
    return { status: 404, headers: { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", ...HSTS_HEADER }, body: "Not found" };
  }
  return {
    status: 200,
    headers: {
      "Content-Type": asset.contentType,
      "Cache-Control": "public, max-age=300",
      "X-Content-Type-Options": "nosniff",
      "Cross-Origin-Resource-Policy": "same-origin",
      ...HSTS_HEADER,
    },
    body: asset.body,
  };
}
