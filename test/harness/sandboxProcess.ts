import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect } from "vitest";
import { startAzurite, type AzuriteInstance } from "./azurite";
import { checkAccessibility, watchPage, type AccessibilityReport, type BrowserContext, type Page, type PageWatch, type TestBrowser } from "./browser";

/**
 * `scripts/sandbox.mjs` as a child process for the browser tests: its own Azurite (the sandbox's
 * pull loop would otherwise take other test files' queue messages), a free port, its output kept
 * for the assertions and for every failure message. Registers its own beforeAll/afterAll.
 */

const SANDBOX = fileURLToPath(new URL("../../scripts/sandbox.mjs", import.meta.url));
const VIEWPORT = { width: 1280, height: 800 };

export interface SandboxProcess {
  /** `http://localhost:{port}`, where the console and the API answer. */
  readonly base: string;
  /** Everything the sandbox printed so far. */
  readonly output: string;
  /** Polls `probe` until it gives a value, failing with the sandbox's output if the sandbox exits or time runs out. */
  until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, intervalMs?: number): Promise<T>;
  /** Ctrl-C: sends SIGINT and resolves with the exit code (null when it was still running: a failed test). */
  interrupt(): Promise<number | null>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Starts the sandbox with `args` before the file's tests, and stops it (Ctrl-C, then a kill after 15 s) after them. */
export function useSandboxProcess(args: readonly string[]): SandboxProcess {
  let azurite: AzuriteInstance | undefined;
  let child: ChildProcess | undefined;
  let output = "";
  let base = "";

  const sandbox: SandboxProcess = {
    get base() {
      return base;
    },
    get output() {
      return output;
    },
    async until(what, probe, timeoutMs, intervalMs = 250) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (child && child.exitCode !== null) throw new Error(`the sandbox exited (code ${child.exitCode}) while waiting for ${what}; its output:\n${output}`);
        const value = await probe().catch(() => undefined);
        if (value !== undefined) return value;
        if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms; sandbox output:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    },
    async interrupt() {
      const running = child;
      if (!running || running.exitCode !== null) throw new Error("the sandbox is not running");
      const exited = new Promise<number | null>((resolve) => running.once("exit", (code) => resolve(code)));
      running.kill("SIGINT");
      return exited;
    },
  };

  beforeAll(async () => {
    azurite = await startAzurite();
    const port = await freePort();
    base = `http://localhost:${port}`;
    child = spawn(process.execPath, [SANDBOX, ...args], {
      env: { ...process.env, PORT: String(port), SANDBOX_STORAGE_CONNECTION_STRING: azurite.connectionString },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
    child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
    await sandbox.until("the sandbox banner", async () => (output.includes("Sandbox running") ? true : undefined), 150_000);
    expect(output).toContain(`${base}/api/console`);
  });

  afterAll(async () => {
    const running = child;
    if (running && running.exitCode === null && running.signalCode === null) {
      const exited = new Promise<void>((resolve) => running.once("exit", () => resolve()));
      running.kill("SIGINT");
      const stopped = await Promise.race([exited.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 15_000))]);
      if (!stopped) running.kill("SIGKILL");
    }
    await azurite?.stop();
  });

  return sandbox;
}

/**
 * The two people of a consent: the operator (one profile, its console cookies kept from test to
 * test) and a customer's admin (a fresh profile each time, without the console's cookies).
 */
export function consoleProfiles(browser: () => TestBrowser): {
  operatorPage(): Promise<{ page: Page; watch: PageWatch }>;
  adminPage(): Promise<{ page: Page; watch: PageWatch }>;
  /** After the browser's contexts were closed: the next operatorPage() opens a new profile. */
  forgetOperator(): void;
} {
  let operator: { context: BrowserContext; page: Page; watch: PageWatch } | undefined;
  return {
    async operatorPage() {
      if (!operator) {
        const context = await browser().newContext({ viewport: VIEWPORT });
        const page = await context.newPage();
        operator = { context, page, watch: watchPage(page) };
      }
      return operator;
    },
    async adminPage() {
      const page = await (await browser().newContext({ viewport: VIEWPORT })).newPage();
      return { page, watch: watchPage(page) };
    },
    forgetOperator() {
      operator = undefined;
    },
  };
}

/** axe finds nothing failing on the page, and did run. */
export async function expectAccessible(page: Page): Promise<AccessibilityReport> {
  const report = await checkAccessibility(page);
  expect(report.failing, `${report.url}\n${report.summary}`).toEqual([]);
  expect(report.passes.length).toBeGreaterThan(5); // axe did run
  return report;
}

/** Runs an action that submits a form or follows a link, and returns the response of the new document. */
export async function navigateBy(page: Page, action: () => Promise<void>) {
  const [response] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), action()]);
  return response;
}

/** One row of the console's tenants table, as shown. */
export interface Row {
  name: string;
  tenantId: string;
  status: string;
  source: string;
  alertsInLastPull: string;
}

/** The console's tenants table as shown. */
export async function tableRows(page: Page): Promise<Row[]> {
  return page.locator("main table tbody tr").evaluateAll((rows) =>
    rows
      .filter((row) => row.querySelector("th"))
      .map((row) => {
        const cells = row.querySelectorAll("td");
        return {
          name: row.querySelector("th")?.textContent?.trim() ?? "",
          tenantId: cells[0]?.textContent?.trim() ?? "",
          status: cells[1]?.textContent?.trim() ?? "",
          source: cells[2]?.textContent?.trim() ?? "",
          alertsInLastPull: cells[4]?.textContent?.trim() ?? "",
        };
      }),
  );
}
