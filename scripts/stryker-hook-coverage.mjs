// A vitest setup file for Stryker's dry run (scripts/vitest.stryker.config.mts), after the vitest
// runner's own. Stryker records which tests reach each mutant; code reached outside a test, in a
// beforeAll or afterAll, counts as "static" and Stryker then runs every test file against that
// mutant, reloading them all. Here most of the app's work happens in the integration tests'
// beforeAll (start the app and the fakes, register and consent tenants), so half the mutants were
// static and a folder took hours. Instead, what a test file's hooks reach is credited to every
// test of that file: the mutant then runs that file only. That is sound because the runner
// switches the mutant on in its own beforeAll, which runs before the file's. Code run while the
// test file is imported stays static (it runs before any hook, so only a reload can test it).
import { afterAll, beforeAll, inject } from "vitest";

const HOOKS = "stryker-hook-coverage:hooks";

if (inject("mode") === "dry-run") {
  const ns = globalThis[inject("globalNamespace")];
  let current;
  let inFile = false;
  Object.defineProperty(ns, "currentTestId", {
    configurable: true,
    enumerable: true,
    get: () => current ?? (inFile ? HOOKS : undefined),
    set: (value) => {
      current = value;
    },
  });

  beforeAll(() => {
    inFile = true;
  });

  // After hooks run in reverse order: this one runs after the file's own afterAll hooks and
  // before the runner's, which hands the coverage to Stryker.
  afterAll((_context, suite) => {
    inFile = false;
    const coverage = ns.mutantCoverage;
    const reached = coverage?.perTest?.[HOOKS];
    if (reached === undefined) return;
    delete coverage.perTest[HOOKS];
    for (const id of testIds(suite)) {
      const perTest = (coverage.perTest[id] ??= {});
      for (const [mutant, hits] of Object.entries(reached)) perTest[mutant] = (perTest[mutant] ?? 0) + hits;
    }
  });
}

/** The ids the vitest runner gives the tests of a file that ran: `<file>#<suite names> <test name>`. */
function testIds(file) {
  const ids = [];
  const walk = (task) => {
    if (task.type === "test") {
      if (task.mode === "run") ids.push(`${task.file?.filepath ?? "unknown.js"}#${fullName(task)}`);
    } else for (const child of task.tasks ?? []) walk(child);
  };
  walk(file);
  return ids;
}

function fullName(test) {
  const parts = [test.name];
  for (let suite = test.suite; suite; suite = suite.suite) parts.unshift(suite.name);
  return parts.join(" ").trim();
}
