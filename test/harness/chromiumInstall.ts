import { spawn } from "node:child_process";
import { accessSync, constants, createWriteStream, mkdirSync } from "node:fs";
import { join } from "node:path";

/**
 * Makes Debian's Chromium available for the browser tests (test/browser/), once per test run,
 * from vitest's globalSetup. The machines this project runs on (developers' and CI alike) reach
 * the npm registry and Debian's packages only, so Playwright's own browser download cannot work;
 * Debian's `chromium` package, driven by playwright-core with `executablePath`, does.
 *
 * Deliberately no vitest import: this runs in the main vitest process, not in a test worker.
 */

export const CHROMIUM_PATH = "/usr/bin/chromium";

/** What globalSetup hands the browser tests: where Chromium is, or why it is not there. */
export type ChromiumStatus =
  | { ok: true; executablePath: string; installedMs?: number }
  | { ok: false; error: string };

export interface EnsureChromiumOptions {
  executablePath?: string;
  /** For `apt-get update` and `apt-get install` together. Default 5 minutes. */
  timeoutMs?: number;
  /** Where apt's full output goes (the console only gets a few lines). */
  logFile?: string;
  log?: (line: string) => void;
}

const DEFAULT_TIMEOUT_MS = 5 * 60_000;

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Returns at once when Chromium is installed; otherwise, as root, runs
 * `apt-get update` and `apt-get install -y --no-install-recommends chromium` within the timeout.
 * Never throws: a failure comes back as `{ ok: false, error }` so that every browser test can fail
 * with that message (and the rest of the suite still runs).
 */
export async function ensureChromium(options: EnsureChromiumOptions = {}): Promise<ChromiumStatus> {
  const executablePath = options.executablePath ?? CHROMIUM_PATH;
  const log = options.log ?? ((line: string) => console.log(line));
  if (isExecutable(executablePath)) return { ok: true, executablePath };

  const how = "apt-get update && apt-get install -y --no-install-recommends chromium";
  if (process.platform !== "linux") {
    return { ok: false, error: `Chromium is not installed at ${executablePath}, and this is not Linux (${process.platform}), so the test setup cannot install it with apt-get. Install Chromium there, or run the browser tests on the project's Debian machine.` };
  }
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    return {
      ok: false,
      error: `Chromium is not installed at ${executablePath}, and the test setup can only install it as root (it runs \`${how}\`), but this run is uid ${process.getuid()}. Install it once with \`sudo ${how.replace("&& apt-get", "&& sudo apt-get")}\`.`,
    };
  }

  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const logFile = options.logFile;
  let out: NodeJS.WritableStream | undefined;
  if (logFile !== undefined) {
    mkdirSync(join(logFile, ".."), { recursive: true });
    out = createWriteStream(logFile, { flags: "a" });
  }
  const started = Date.now();
  log(`[chromium] ${executablePath} is missing; installing Debian's chromium package (${how}), at most ${Math.round(timeoutMs / 1000)} s${logFile ? `; apt output in ${logFile}` : ""}`);
  try {
    for (const args of [
      ["update"],
      // A lock held by another apt/dpkg (e.g. a periodic update) is waited for, within the deadline.
      ["install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120", "chromium"],
    ]) {
      const stepStarted = Date.now();
      const result = await run("apt-get", args, deadline - Date.now(), out);
      const seconds = ((Date.now() - stepStarted) / 1000).toFixed(1);
      if (result.timedOut) {
        return { ok: false, error: `Chromium install: \`apt-get ${args.join(" ")}\` did not finish within the ${Math.round(timeoutMs / 1000)} s the test setup allows (killed after ${seconds} s). Last output:\n${result.tail}` };
      }
      if (result.code !== 0) {
        return { ok: false, error: `Chromium install: \`apt-get ${args.join(" ")}\` failed (${result.signal ?? `exit code ${result.code}`}) after ${seconds} s. Last output:\n${result.tail}` };
      }
      log(`[chromium] apt-get ${args[0]} done in ${seconds} s`);
    }
  } finally {
    await new Promise<void>((resolve) => (out ? out.end(resolve) : resolve()));
  }
  if (!isExecutable(executablePath)) {
    return { ok: false, error: `Chromium install: apt-get reported success, but ${executablePath} is still missing or not executable.` };
  }
  const installedMs = Date.now() - started;
  log(`[chromium] installed ${executablePath} in ${(installedMs / 1000).toFixed(1)} s`);
  return { ok: true, executablePath, installedMs };
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** The last lines of stdout and stderr, for the error message. */
  tail: string;
}

function run(command: string, args: string[], timeoutMs: number, out: NodeJS.WritableStream | undefined): Promise<RunResult> {
  return new Promise((resolve) => {
    let tail = "";
    const keep = (chunk: Buffer): void => {
      out?.write(chunk);
      tail = (tail + chunk.toString("utf8")).slice(-2000);
    };
    if (timeoutMs <= 0) return resolve({ code: null, signal: null, timedOut: true, tail: "" });
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGTERM");
      setTimeout(() => child.kill("SIGKILL"), 5000).unref();
    }, timeoutMs);
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.on("error", (error) => {
      clearTimeout(timer);
      resolve({ code: -1, signal: null, timedOut: false, tail: `${tail}\n${error.message}` });
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, timedOut, tail: tail.trim().split("\n").slice(-15).join("\n") });
    });
  });
}
