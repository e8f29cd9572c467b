/**
 * The suite-wide secrecy check (issue 15, item 4), registered in vitest.config.mts `setupFiles`
 * so it runs in every test file's process.
 *
 * After every test it scans, for every secret registered through test/harness/secrecy.ts
 * (the fakes' issued codes and tokens, client secrets, the vault token and every value stored in
 * the vault, Splunk HEC, Event Hubs and Logs Ingestion tokens, webhook URLs…), everything the
 * test produced (test/harness/secrecyCapture.ts):
 * - stdout, stderr and console.* output of this process (the app runs in-process), including
 *   lines a test swallowed with `captureConsole`;
 * - every `context.log` line and every HTTP response (body, headers, cookies) of `app.http`
 *   (recorded by functionsHost.ts), and the host system log;
 * - every table entity, queue message and blob this process wrote to Azurite, as the request
 *   went out (so rows deleted or messages consumed later still count);
 * - what Azurite holds in the app's tables, queues and containers (and any other this process
 *   wrote to) that changed since the previous check, after a test that started a child process
 *   (the crash tests' pull children, whose writes the in-process capture cannot see), and once
 *   at the end of the file for everything changed during it (a backstop for writes that bypass
 *   http.ClientRequest; a finding there names the file and the entity, message or blob).
 * A leak fails the test with its name, the source and location, and a fingerprint of the
 * secret (first 4 characters and length), never the secret. Output of beforeAll/afterAll hooks
 * is scanned at the next test (or at the end of the file, naming the file) and labelled as such.
 *
 * Not scanned, on purpose:
 * - the fake Key Vault's store: holding secrets is its job (it is where the app must put them);
 * - what a test sends to the app (a callback URL carries the code; a request is not output);
 * - what the fakes record in memory of the requests they received (the app must send them its
 *   tokens); the fakes' own HTTP answers to the app (a token endpoint answers with tokens).
 * The fakes run in this process, so whatever they print to stdout/stderr is scanned with the
 * app's output: a token printed by a fake would end up in the CI log just the same.
 *
 * Nothing is scanned while no secret is registered (most unit tests only pay for the wrappers).
 * SECRECY_STATS=<file> appends one JSON line per test file with the time the checks took.
 */
import { appendFileSync } from "node:fs";
import { afterAll, afterEach, beforeEach, type TestContext } from "vitest";
import { setPhase } from "./secrecy";
import { checkSecrecy, installSecrecyCapture, secrecyStats, uninstallSecrecyCapture } from "./secrecyCapture";

installSecrecyCapture();
setPhase("in the file's beforeAll hooks or module code, before this test");

function testName(context: TestContext): string {
  const names: string[] = [];
  for (let suite = context.task.suite; suite !== undefined && suite.name !== ""; suite = suite.suite) names.unshift(suite.name);
  return `${context.task.file.name} > ${[...names, context.task.name].join(" > ")}`;
}

beforeEach((context) => {
  secrecyStats.file = context.task.file.name;
  setPhase("test");
});

// Registered first, so it runs after the test file's own afterEach hooks (sequence.hooks "stack").
afterEach(async (context) => {
  try {
    await checkSecrecy(testName(context));
  } finally {
    setPhase("in beforeAll/afterAll hooks between tests, before this test");
  }
});

afterAll(async () => {
  setPhase("in the file's afterAll hooks");
  try {
    // Also reads back everything the file's run changed in Azurite (see checkSecrecy).
    await checkSecrecy(`${secrecyStats.file || "this file"} (its afterAll hooks, or Azurite content written during the file)`, { storage: "file" });
  } finally {
    uninstallSecrecyCapture();
    const statsFile = process.env["SECRECY_STATS"];
    if (statsFile) {
      const { scanMs, storageMs } = secrecyStats;
      appendFileSync(statsFile, `${JSON.stringify({ ...secrecyStats, scanMs: Math.round(scanMs), storageMs: Math.round(storageMs) })}\n`);
    }
  }
});
