// Stryker (mutation testing) for shared/. Run it through `npm run mutate` (scripts/mutate.mjs),
// which chooses the folders, runs Stryker from the repository root and prints the score per
// folder; docs/mutation.md has the scores, timings and what counts.
//
// Lives under scripts/ so that .funcignore already keeps it out of the deployment package;
// everything Stryker writes (sandboxes, reports) goes under test-artifacts/, which git, the
// deployment package, tsc and vitest all leave alone.

/** @type {import("@stryker-mutator/api/core").PartialStrykerOptions} */
export default {
  packageManager: "npm",
  plugins: ["@stryker-mutator/vitest-runner"],
  testRunner: "vitest",
  vitest: {
    // vitest.config.mts with its forks pool restored (the runner would use worker threads).
    configFile: "scripts/vitest.stryker.config.mts",
    // Many tests run the compiled app (dist/, loaded with a native require) rather than
    // importing shared/*.ts, so vite's import graph cannot tell which tests reach a file:
    // every test file takes part in the dry run, and per-test coverage narrows each mutant's run.
    related: false,
  },
  coverageAnalysis: "perTest",
  // scripts/mutate.mjs replaces this with the chosen folders.
  mutate: ["shared/**/*.ts", "!shared/**/types.ts"],
  // The sandbox compiles the instrumented sources itself (buildCommand); copying build output,
  // artifacts and local storage in would only cost time.
  ignorePatterns: [
    "/dist",
    "/dist-bench",
    "/test-artifacts",
    "/coverage",
    "/.bench",
    "/.azurite",
    "/__azurite_db*",
    "/__blobstorage__",
    "/__queuestorage__",
    "/local.settings.json",
  ],
  // The tests that run the compiled app must run the mutated code: compile the instrumented
  // shared/ (every mutant is switched in at run time) into the sandbox's dist/ and dist-bench/
  // (`npm run build` and `npm run build:local`; Stryker runs this without a shell).
  buildCommand: "node scripts/mutate.mjs --build-sandbox",
  // Instrumented sources do not type-check; tsc must still emit them.
  disableTypeChecks: "{shared,functions}/**/*.ts",
  // Two cores: two test-runner processes, each running vitest with one worker.
  concurrency: 2,
  // Integration tests start HTTPS fakes and talk to Azurite: be generous before calling a
  // mutant's run a timeout (timeout = the test's dry-run time * timeoutFactor + timeoutMS).
  timeoutMS: 60_000,
  timeoutFactor: 2,
  dryRunTimeoutMinutes: 60,
  // With --incremental (scripts/mutate.mjs passes it), a run keeps the result of every mutant
  // whose code and covering tests did not change since the last one: after a new test only the
  // mutants that test reaches run again. Delete the file for a clean measurement.
  incrementalFile: "test-artifacts/mutation/stryker-incremental.json",
  tempDirName: "test-artifacts/stryker-tmp",
  cleanTempDir: "always",
  reporters: ["progress", "clear-text", "json", "html"],
  clearTextReporter: { allowColor: false, logTests: false, reportTests: false, reportMutants: false, reportScoreTable: true },
  jsonReporter: { fileName: "test-artifacts/mutation/mutation.json" },
  htmlReporter: { fileName: "test-artifacts/mutation/mutation.html" },
  thresholds: { high: 85, low: 70, break: null },
};
