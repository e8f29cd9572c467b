import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { startAzurite } from "./azurite";
import { ensureChromium, type ChromiumStatus } from "./chromiumInstall";
import { ensureFreshBuild } from "./freshBuild";

declare module "vitest" {
  export interface ProvidedContext {
    storageConnectionString: string;
    /** For the browser tests (test/harness/browser.ts): Chromium's path, or why there is none. */
    chromium: ChromiumStatus;
  }
}

/** True when this run includes a browser test, or when that cannot be told (then install, to be safe). */
function runIncludesBrowserTests(project: Pick<TestProject, "vitest">): boolean {
  const paths = (project.vitest as { state?: { getPaths?: () => string[] } } | undefined)?.state?.getPaths?.();
  if (!Array.isArray(paths) || paths.length === 0) return true;
  return paths.some((path) => /[\\/]test[\\/]browser[\\/]/.test(path));
}

/** One Azurite for the whole run: starting it takes about a second, and tests isolate themselves by table/queue name. */
export default async function setup(project: Pick<TestProject, "provide" | "vitest">): Promise<() => Promise<void>> {
  const { provide } = project;
  const root = project.vitest?.config?.root ?? process.cwd();
  // Tests that run the compiled app must never run an older build than the sources.
  const built = ensureFreshBuild(root);
  if (built.length > 0) console.log(`test setup: sources were newer than their build; ran npm run ${built.join(" and ")}`);
  // Chromium first: a first run on a fresh machine installs it with apt-get (about a minute),
  // and nothing else is running yet. Runs without browser tests don't pay for it.
  if (runIncludesBrowserTests(project)) {
    provide("chromium", await ensureChromium({ logFile: join(root, "test-artifacts", "chromium-install.log") }));
  } else {
    provide("chromium", {
      ok: false,
      error: "this run's files did not include test/browser/ when it started, so the test setup did not check for Chromium; start vitest again with the browser tests included",
    });
  }
  const azurite = await startAzurite();
  provide("storageConnectionString", azurite.connectionString);
  return () => azurite.stop();
}
