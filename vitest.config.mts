import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/harness/globalSetup.ts"],
    // After every test: no registered secret in its output, responses or storage writes (issue 15).
    setupFiles: ["test/harness/secrecy.setup.ts"],
    // Child processes, one per test file (isolate): the app is loaded with a
    // native require and patches Module._load, so its module state must not
    // leak from one file into the next.
    pool: "forks",
    isolate: true,
    fileParallelism: true,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
