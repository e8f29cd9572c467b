import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

/**
 * Several tests run the compiled app (the Functions entry point, the crash children, the local
 * dispatcher), not the TypeScript beside them. A test file started on its own after an edit would
 * silently exercise the old code; this builds first whenever a source is newer than its output.
 */

/** Newest modification time (ms) of the `.ts` files under `dirs`, skipping tests. */
function newestSource(root: string, dirs: readonly string[]): number {
  let newest = 0;
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".test.ts")) newest = Math.max(newest, statSync(path).mtimeMs);
    }
  };
  for (const dir of dirs) if (existsSync(join(root, dir))) walk(join(root, dir));
  return newest;
}

const outputTime = (path: string): number => (existsSync(path) ? statSync(path).mtimeMs : 0);

export interface Build {
  /** What `npm run` calls it, for the log line. */
  name: string;
  tsconfig: string;
  sources: readonly string[];
  /** A file every build of it writes. */
  output: string;
}

const BUILDS: readonly Build[] = [
  { name: "build", tsconfig: "tsconfig.json", sources: ["shared", "functions"], output: "dist/functions/index.js" },
  {
    name: "build:local",
    tsconfig: "test/fakes/tsconfig.bench.json",
    sources: ["shared", "functions", "test/fakes", "test/harness"],
    output: "dist-bench/test/harness/localDispatcher.js",
  },
];

function runTsc(root: string, tsconfig: string): void {
  execFileSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", tsconfig], { cwd: root, stdio: "inherit" });
}

/** Builds what is stale (a failing build throws, so no test runs on it); returns the builds it ran. */
export function ensureFreshBuild(root: string, builds: readonly Build[] = BUILDS, compile: (root: string, tsconfig: string) => void = runTsc): string[] {
  const ran: string[] = [];
  for (const build of builds) {
    if (outputTime(join(root, build.output)) >= newestSource(root, build.sources)) continue;
    compile(root, build.tsconfig);
    ran.push(build.name);
  }
  return ran;
}
