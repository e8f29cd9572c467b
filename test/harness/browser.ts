import { createHash, X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { connect, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { createServer as createTlsServer } from "node:tls";
import { fileURLToPath } from "node:url";
import type { AxeResults, ImpactValue, Result as AxeViolation, RunOptions as AxeRunOptions } from "axe-core";
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from "playwright-core";
import { generate } from "selfsigned";
import { afterAll, beforeAll, inject } from "vitest";

/**
 * Headless Chromium for the browser tests (test/browser/), driven by playwright-core.
 *
 * Playwright's own browser download cannot work on this project's machines (only the npm registry
 * and Debian's packages are reachable), so the browser is Debian's `chromium` package, which the
 * test setup installs with apt-get when it is missing (test/harness/chromiumInstall.ts, called
 * from globalSetup). When it could not be installed, launchBrowser() throws that reason: browser
 * tests fail, they are never skipped.
 */

export type { AxeViolation, Browser, BrowserContext, Page };

/** Where screenshots and the apt log go; git-ignored. */
export const ARTIFACTS_DIR = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));
export const SCREENSHOTS_DIR = join(ARTIFACTS_DIR, "screenshots");

/**
 * The flags this machine needs (see the machine notes): without the background-networking ones,
 * Chromium's own connections to Google's services are refused by the closed network at every start.
 * Playwright adds a fresh, empty --user-data-dir of its own to every launch (and deletes it on close).
 */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Chromium's path from the test setup, or the setup's reason for not having it, as an Error. */
export function chromiumExecutablePath(): string {
  const status = inject("chromium");
  if (status === undefined) {
    throw new Error("Browser tests need Chromium, but the test setup reported nothing about it: is test/harness/globalSetup.ts in vitest.config.mts's globalSetup?");
  }
  if (!status.ok) throw new Error(`Browser tests need Chromium, which the test setup could not provide: ${status.error}`);
  return status.executablePath;
}

export interface LaunchOptions {
  /**
   * Public origins the browser should reach on a local server, e.g.
   * `{ "https://connector.example.test": dispatcher.url }`: the app puts its public origin
   * (MSSP_PUBLIC_BASE_URL) in consent links and redirect URIs, and that name resolves nowhere.
   * Chromium resolves the origin's host name to loopback (--host-resolver-rules); for an https
   * origin, a TLS front on loopback with a certificate for that name, which this browser alone
   * trusts, passes the bytes through to the local server. So every hop of a redirect chain gets
   * there, over real connections, and page URLs keep showing the public origin. (Playwright's
   * page.route cannot do this: it only sees the first request of a redirect chain.)
   */
  publicOrigins?: Record<string, string>;
  /** Chromium's start-up timeout. Default 30 s. */
  timeoutMs?: number;
}

export interface TestBrowser {
  browser: Browser;
  /** A new isolated context (cookies, storage); closed with the browser. */
  newContext(options?: BrowserContextOptions): Promise<BrowserContext>;
  /** A page in a new context of its own. */
  newPage(options?: BrowserContextOptions): Promise<Page>;
  /** Closes the browser and the TLS fronts of `publicOrigins`. */
  close(): Promise<void>;
}

/** Defaults for every context: a fixed viewport and locale so screenshots and text compare run to run. */
const CONTEXT_DEFAULTS: BrowserContextOptions = { viewport: { width: 1024, height: 768 }, locale: "en-US", timezoneId: "UTC" };

/** Starts headless Chromium (Debian's, at the path the test setup checked). Close it in afterAll. */
export async function launchBrowser(options: LaunchOptions = {}): Promise<TestBrowser> {
  const executablePath = chromiumExecutablePath();
  const fronts: TlsFront[] = [];
  const rules: string[] = [];
  const trusted: string[] = [];
  let browser: Browser;
  try {
    for (const [publicOrigin, localUrl] of Object.entries(options.publicOrigins ?? {})) {
      const from = new URL(publicOrigin);
      const to = new URL(localUrl);
      const localPort = Number(to.port || (to.protocol === "https:" ? 443 : 80));
      if (to.protocol !== "http:") throw new Error(`launchBrowser: publicOrigins wants a plain-http local server, not ${localUrl}`);
      if (from.protocol === "https:") {
        const front = await startTlsFront(from.hostname, to.hostname, localPort);
        fronts.push(front);
        rules.push(`MAP ${from.hostname} 127.0.0.1:${front.port}`);
        trusted.push(front.spkiSha256);
      } else {
        rules.push(`MAP ${from.hostname} ${to.hostname}:${localPort}`);
      }
    }
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: [
        ...CHROMIUM_ARGS,
        ...(rules.length ? [`--host-resolver-rules=${rules.join(", ")}`] : []),
        ...(trusted.length ? [`--ignore-certificate-errors-spki-list=${trusted.join(",")}`] : []),
      ],
      timeout: options.timeoutMs ?? 30_000,
    });
  } catch (error) {
    await Promise.all(fronts.map((f) => f.close()));
    throw error;
  }
  const newContext = async (contextOptions: BrowserContextOptions = {}): Promise<BrowserContext> => {
    const context = await browser.newContext({ ...CONTEXT_DEFAULTS, ...contextOptions });
    context.setDefaultTimeout(10_000);
    context.setDefaultNavigationTimeout(15_000);
    return context;
  };
  return {
    browser,
    newContext,
    async newPage(contextOptions) {
      return (await newContext(contextOptions)).newPage();
    },
    async close() {
      try {
        await browser.close();
      } finally {
        await Promise.all(fronts.map((f) => f.close()));
      }
    },
  };
}

/**
 * One browser for the test file: registers a beforeAll that launches it (after the file's earlier
 * beforeAll hooks, so `options` may use what they started) and an afterAll that closes it. Each test
 * gets it from the returned function, which throws the launch error (e.g. the test setup's reason
 * for having no Chromium) inside that test: every test fails with it, none is reported skipped.
 */
export function useBrowser(options: () => LaunchOptions | Promise<LaunchOptions> = () => ({})): () => TestBrowser {
  let browser: TestBrowser | undefined;
  let failure: unknown;
  beforeAll(async () => {
    try {
      browser = await launchBrowser(await options());
    } catch (error) {
      failure = error;
    }
  });
  afterAll(async () => {
    await browser?.close();
  });
  return () => {
    if (failure !== undefined) throw failure;
    if (browser === undefined) throw new Error("useBrowser: the browser is only there inside tests (its beforeAll has not run)");
    return browser;
  };
}

interface TlsFront {
  port: number;
  /** base64 SHA-256 of the certificate's public key, for --ignore-certificate-errors-spki-list. */
  spkiSha256: string;
  close(): Promise<void>;
}

/** A TLS listener on loopback that passes each connection's plaintext on to host:port unchanged. */
async function startTlsFront(serverName: string, host: string, port: number): Promise<TlsFront> {
  const pems = await generate([{ name: "commonName", value: serverName }], {
    keySize: 2048,
    algorithm: "sha256",
    notBeforeDate: new Date(Date.now() - 60_000),
    notAfterDate: new Date(Date.now() + 24 * 3600_000),
    extensions: [{ name: "subjectAltName", altNames: [{ type: 2, value: serverName }] }],
  });
  const spki = new X509Certificate(pems.cert).publicKey.export({ type: "spki", format: "der" });
  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };
  const server: Server = createTlsServer({ cert: pems.cert, key: pems.private }, (client) => {
    const upstream = connect(port, host);
    track(client);
    track(upstream);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as { port: number }).port,
    spkiSha256: createHash("sha256").update(spki).digest("base64"),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// Watching a page
// ---------------------------------------------------------------------------------------------

export interface PageWatch {
  /** Every alert/confirm/prompt the page opened (each is dismissed at once). */
  dialogs: string[];
  /** Uncaught exceptions in the page's scripts. */
  pageErrors: string[];
  /** console.error lines, CSP violations and failed loads among them, with the URL concerned in brackets when Chromium gives one. */
  consoleErrors: string[];
}

/** Records what a page does that a test usually wants none of: dialogs (e.g. an XSS alert), errors. */
export function watchPage(page: Page): PageWatch {
  const watch: PageWatch = { dialogs: [], pageErrors: [], consoleErrors: [] };
  page.on("dialog", (dialog) => {
    watch.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    void dialog.dismiss().catch(() => undefined);
  });
  page.on("pageerror", (error) => watch.pageErrors.push(error.message));
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    // "Failed to load resource" names no URL; its location does.
    const where = message.location().url;
    // Chromium's own request for /favicon.ico (not one a page makes): the app serves none.
    if (where && new URL(where, "http://x").pathname === "/favicon.ico" && message.text().startsWith("Failed to load resource")) return;
    watch.consoleErrors.push(where && !message.text().includes(where) ? `${message.text()} [${where}]` : message.text());
  });
  return watch;
}

// ---------------------------------------------------------------------------------------------
// Accessibility (axe-core)
// ---------------------------------------------------------------------------------------------

export interface AccessibilityOptions {
  /** CSS selector of the part to check; default the whole document. */
  include?: string;
  /** axe rule ids to leave out, each with a reason in the calling test. */
  disableRules?: string[];
  /** Impacts that make `failing` non-empty. Default serious and critical. */
  failOn?: ImpactValue[];
  /** Tags of the rules to run. Default WCAG 2.0/2.1/2.2 A and AA plus axe's best practices. */
  tags?: string[];
}

export interface AccessibilityReport {
  url: string;
  /** Every violation axe found, whatever its impact. */
  violations: AxeViolation[];
  /** The violations whose impact is in `failOn`: a test expects this to be empty. */
  failing: AxeViolation[];
  /** Rules that passed, by id (to see that the check ran at all). */
  passes: string[];
  /** One readable line per violation and the elements it concerns, for assertion messages. */
  summary: string;
}

const DEFAULT_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"];
const DEFAULT_FAIL_ON: ImpactValue[] = ["serious", "critical"];

let axeSource: string | undefined;
function readAxeSource(): string {
  axeSource ??= readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
  return axeSource;
}

/**
 * Runs axe-core on the page as it is now, without reloading it.
 *
 * The product's pages send a strict Content-Security-Policy (`default-src 'none'`): a script tag
 * (page.addScriptTag) is refused, and so is anything that compiles a string inside the page
 * (eval, new Function). axe's source is therefore compiled by DevTools itself (CDP
 * `Runtime.evaluate`), which CSP does not govern, in an isolated world of the main frame: it shares
 * the DOM and computed styles with the page, but not its globals, so the page's own scripts
 * neither see axe nor can tamper with it. The page's CSP stays in force throughout (no bypassCSP),
 * so the check cannot hide a CSP problem either. Frames are not checked (the product's pages have
 * none and forbid being framed).
 */
export async function checkAccessibility(page: Page, options: AccessibilityOptions = {}): Promise<AccessibilityReport> {
  const cdp = await page.context().newCDPSession(page);
  try {
    const { frameTree } = (await cdp.send("Page.getFrameTree")) as { frameTree: { frame: { id: string } } };
    const { executionContextId } = (await cdp.send("Page.createIsolatedWorld", {
      frameId: frameTree.frame.id,
      worldName: "axe-core",
      grantUniveralAccess: false,
    })) as { executionContextId: number };
    const evaluate = async (expression: string): Promise<unknown> => {
      const result = (await cdp.send("Runtime.evaluate", {
        expression,
        contextId: executionContextId,
        awaitPromise: true,
        returnByValue: true,
      })) as { result: { value?: unknown }; exceptionDetails?: { text: string; exception?: { description?: string } } };
      if (result.exceptionDetails) {
        throw new Error(`checkAccessibility: ${result.exceptionDetails.exception?.description ?? result.exceptionDetails.text}`);
      }
      return result.result.value;
    };
    await evaluate(readAxeSource());
    const runOptions: AxeRunOptions = {
      runOnly: { type: "tag", values: options.tags ?? DEFAULT_TAGS },
      resultTypes: ["violations"],
      ...(options.disableRules?.length ? { rules: Object.fromEntries(options.disableRules.map((id) => [id, { enabled: false }])) } : {}),
    };
    const context = options.include === undefined ? "document" : `{ include: [${JSON.stringify(options.include)}] }`;
    const results = (await evaluate(
      `axe.run(${context}, ${JSON.stringify(runOptions)}).then((r) => JSON.parse(JSON.stringify({ url: r.url, violations: r.violations, passes: r.passes.map((p) => ({ id: p.id })) })))`,
    )) as Pick<AxeResults, "url" | "violations"> & { passes: Array<{ id: string }> };
    const failOn = options.failOn ?? DEFAULT_FAIL_ON;
    const failing = results.violations.filter((v) => v.impact != null && failOn.includes(v.impact));
    return {
      url: results.url,
      violations: results.violations,
      failing,
      passes: results.passes.map((p) => p.id),
      summary: formatViolations(results.violations),
    };
  } finally {
    await cdp.detach().catch(() => undefined);
  }
}

/** Throws with a readable list when the page has violations of the failing impacts. */
export async function assertAccessible(page: Page, options: AccessibilityOptions = {}): Promise<AccessibilityReport> {
  const report = await checkAccessibility(page, options);
  if (report.failing.length > 0) {
    throw new Error(`${report.failing.length} accessibility violation(s) on ${report.url}:\n${formatViolations(report.failing)}`);
  }
  return report;
}

export function formatViolations(violations: readonly AxeViolation[]): string {
  return violations
    .map((v) => {
      const targets = v.nodes.slice(0, 5).map((n) => `    at ${n.target.join(" ")}: ${n.failureSummary?.replace(/\s+/g, " ") ?? ""}`);
      return [`[${v.impact ?? "?"}] ${v.id}: ${v.help} (${v.helpUrl})`, ...targets].join("\n");
    })
    .join("\n");
}

// ---------------------------------------------------------------------------------------------
// Screenshots
// ---------------------------------------------------------------------------------------------

/** Writes a full-page PNG to test-artifacts/screenshots/<name>.png (name made file-safe); returns its path. */
export async function saveScreenshot(page: Page, name: string): Promise<string> {
  const safe = name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "") || "screenshot";
  mkdirSync(SCREENSHOTS_DIR, { recursive: true });
  const path = join(SCREENSHOTS_DIR, safe.endsWith(".png") ? safe : `${safe}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
