import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { checkAccessibility, saveScreenshot, useBrowser, watchPage } from "../harness/browser";
import { ensureChromium } from "../harness/chromiumInstall";

/** The browser harness itself, against pages served here: that each helper finds what it should. */

vi.setConfig({ testTimeout: 60_000, hookTimeout: 120_000 });

const STRICT_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const PAGES: Record<string, { status?: number; headers?: Record<string, string>; body: string }> = {
  // Served with the product's CSP: the inline script must stay blocked while axe still runs.
  "/inaccessible": {
    headers: { "content-security-policy": STRICT_CSP },
    body: `<!doctype html><html><head><title>Bad page</title></head><body>
<main><h1>Bad page</h1>
<p style="color:#bbb;background:#fff">Low-contrast text that nobody can read.</p>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
<script>window.inlineScriptRan = true</script>
</main></body></html>`,
  },
  "/alert": { body: `<!doctype html><html lang="en"><head><title>Alert</title></head><body><script>alert("hello")</script></body></html>` },
  "/to-public": { status: 302, headers: { location: "https://public.example.test/landed?x=1" }, body: "" },
};

let server: Server;
let localUrl: string;
const seen: Array<{ url: string; host: string | undefined }> = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push({ url: req.url ?? "", host: req.headers.host });
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const page = PAGES[path] ?? { body: `<!doctype html><html lang="en"><head><title>Echo</title></head><body><h1>${path}</h1></body></html>` };
    res.writeHead(page.status ?? 200, { "content-type": "text/html; charset=utf-8", ...page.headers });
    res.end(page.body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  localUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
});

const browser = useBrowser(() => ({ publicOrigins: { "https://public.example.test": localUrl } }));

describe("browser harness", () => {
  it("checkAccessibility reports serious and critical violations under a strict CSP, which stays in force", async () => {
    const page = await browser().newPage();
    const response = await page.goto(`${localUrl}/inaccessible`);
    expect(response?.headers()["content-security-policy"]).toBe(STRICT_CSP);

    const report = await checkAccessibility(page);
    const ids = report.failing.map((v) => v.id).sort();
    expect(ids).toEqual(expect.arrayContaining(["color-contrast", "html-has-lang", "image-alt"]));
    expect(report.failing.every((v) => v.impact === "serious" || v.impact === "critical")).toBe(true);
    expect(report.summary).toContain("image-alt");
    // Nothing was weakened to run axe: the page's inline script stayed blocked, and axe lived in
    // its own world, invisible to the page's scripts.
    expect(await page.evaluate(() => (globalThis as { inlineScriptRan?: boolean }).inlineScriptRan)).toBeUndefined();
    expect(await page.evaluate(() => typeof (globalThis as { axe?: unknown }).axe)).toBe("undefined");

    const lenient = await checkAccessibility(page, { disableRules: ["color-contrast", "html-has-lang", "image-alt"] });
    expect(lenient.failing.map((v) => v.id)).not.toContain("image-alt");
    await page.context().close();
  });

  it("watchPage records dialogs (and dismisses them)", async () => {
    const page = await browser().newPage();
    const watch = watchPage(page);
    await page.goto(`${localUrl}/alert`);
    expect(watch.dialogs).toEqual(["alert: hello"]);
    await page.context().close();
  });

  it("publicOrigins: every hop to the public https origin reaches the local server, without certificate errors", async () => {
    // No ignoreHTTPSErrors: the TLS front's certificate is trusted by this browser alone.
    const page = await browser().newPage();
    seen.length = 0;
    const response = await page.goto("https://public.example.test/start");
    expect(response?.status()).toBe(200);
    expect(page.url()).toBe("https://public.example.test/start");

    // A redirect from another origin back to the public one (as the sign-in's redirect to the callback).
    const redirected = await page.goto(`${localUrl}/to-public`);
    expect(redirected?.status()).toBe(200);
    expect(page.url()).toBe("https://public.example.test/landed?x=1");
    expect(await page.locator("h1").innerText()).toBe("/landed");
    // Chromium also asks each origin for /favicon.ico; that is not what is checked here.
    expect(seen.filter((s) => s.url !== "/favicon.ico")).toEqual([
      { url: "/start", host: "public.example.test" },
      { url: "/to-public", host: expect.stringMatching(/^127\.0\.0\.1:\d+$/) as unknown as string },
      { url: "/landed?x=1", host: "public.example.test" },
    ]);
    await page.context().close();
  });

  it("saveScreenshot writes a PNG under test-artifacts/screenshots", async () => {
    const page = await browser().newPage();
    await page.goto(`${localUrl}/shot`);
    const path = await saveScreenshot(page, "harness/self test");
    expect(path).toMatch(/test-artifacts\/screenshots\/harness-self-test\.png$/);
    expect(readFileSync(path).subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    await page.context().close();
  });

  it("ensureChromium says why it cannot install when not root (and does not try)", async () => {
    const getuid = vi.spyOn(process, "getuid").mockReturnValue(1000);
    try {
      const status = await ensureChromium({ executablePath: "/nonexistent/chromium", log: () => undefined });
      expect(status).toEqual({ ok: false, error: expect.stringContaining("can only install it as root") as unknown as string });
      expect(status.ok ? "" : status.error).toContain("uid 1000");
    } finally {
      getuid.mockRestore();
    }
  });
});
