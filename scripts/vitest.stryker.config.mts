// The vitest configuration that Stryker's vitest runner loads (scripts/stryker.config.mjs): the
// project's own, except for the pool. The runner asks vitest for worker threads, but the tests
// need child processes as in vitest.config.mts: the app is loaded with a native require and
// patches Module._load, and some tests change the time zone through process.env.TZ, which a worker
// thread ignores. A plugin puts the pool back once vitest has resolved the runner's options.
// Left out: the tests that read the sources' text or check the repository, Bicep and docs
// (test/infra/, test/unit/layout.test.ts), which fail on instrumented sources and test no behaviour.
// STRYKER_TEST_FILES (set by scripts/mutate.mjs from its per-folder lists): the only test files
// that take part, in the dry run and in every mutant's run.
import { defineConfig, mergeConfig } from "vitest/config";
import base from "../vitest.config.mts";

const listed = (process.env.STRYKER_TEST_FILES ?? "").split(",").filter((file) => file.length > 0);

const config = mergeConfig(
  base,
  defineConfig({
    test: {
      exclude: ["**/node_modules/**", "test/infra/**", "test/unit/layout.test.ts"],
      // What a test file's beforeAll/afterAll reach counts for that file's tests, not as static.
      setupFiles: ["scripts/stryker-hook-coverage.mjs"],
      // Instrumented code runs several times slower: a test that fills an 18,751-entry dedupe set
      // through the instrumented compactVersionSet.ts took over the suite's 30 s in the dry run.
      testTimeout: 120_000,
    },
    plugins: [
      {
        name: "stryker-forks-pool",
        configureVitest({ vitest, project }: { vitest: { config: { pool: string } }; project: { config: { pool: string } } }) {
          vitest.config.pool = "forks";
          project.config.pool = "forks";
        },
      },
    ],
  }),
);
// Set after the merge, which would append the list to the project's include instead of replacing it.
if (listed.length > 0 && config.test) config.test.include = listed;

export default config;
