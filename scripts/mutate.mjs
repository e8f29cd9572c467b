#!/usr/bin/env node
// Mutation testing of shared/ with Stryker (scripts/stryker.config.mjs), score per folder.
//
//   npm run mutate                          the folders the mutation target covers (FOLDERS below)
//   npm run mutate -- shared/consent        one folder (or several: shared/consent shared/identity)
//   npm run mutate -- consent --concurrency 1   a bare name means shared/<name>; --options go to Stryker
//   npm run mutate -- identity --whole-suite    every test file, not the folder's list (TEST_FILES below)
//   npm run mutate -- pull --tests test/unit/compactVersionSet.test.ts --mutate shared/pull/compactVersionSet.ts
//                                           these test files instead of the folder's list: for a file whose
//                                           own tests cover it and whom the list's slow tests only slow down
//
// One Stryker run covers every chosen folder (one dry run, one build of the sandbox); the scores
// are then read from its JSON report (test-artifacts/mutation/mutation.json, beside the HTML one):
//
//   score = (killed + timeout) / (killed + timeout + survived + no coverage)
//
// which is Stryker's own mutation score. A mutant that is equivalent (no test can tell it from the
// original) is disabled in the source with a reason, `// Stryker disable next-line <mutator>: why`,
// so it counts as ignored and leaves the denominator; this script lists those reasons. Mutants
// that do not compile or crash on load (compile/runtime errors) do not count either.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const CONFIG = "scripts/stryker.config.mjs";
const REPORT = path.join(ROOT, "test-artifacts", "mutation", "mutation.json");
const FOLDERS = ["identity", "consent", "pull", "defender", "secrets", "state", "sinks"].map((name) => `shared/${name}`);

// The test files that can kill a folder's mutants: its unit tests and the integration files that
// drive it through the fakes. With a list for every chosen folder, the dry run and each mutant run
// those files only (minutes instead of the whole suite's ~10 min dry run and hours of mutants); a
// folder without a list, or --whole-suite, runs every test file. A list that misses a test only
// lowers the score (a mutant that test would kill shows as survived), it never raises it.
const TEST_FILES = {
  // Unit tests only: EntraClient runs the real MSAL against a scripted token endpoint there. The
  // integration files that reach identity (appCredential, consent) start the app in beforeAll, so
  // each mutant they reach re-ran a whole file: 1 h 30 min estimated instead of minutes.
  "shared/identity": [
    "test/unit/idTokenValidator.test.ts",
    "test/unit/tokenErrors.test.ts",
    "test/unit/appCredentialConfig.test.ts",
    "test/unit/identityMutants.test.ts",
    "test/unit/entraClient.test.ts",
  ],
  // Unit tests only, for the same reason. TenantRegistry and the table factory run against the
  // run's Azurite (globalSetup) through the real @azure/data-tables client; tableTimeouts against
  // a socket that never answers. The integration files that reach state start the app.
  "shared/state": ["test/unit/tableTimeouts.test.ts", "test/unit/stateMutants.test.ts"],
  // Unit tests only: consentMutants.test.ts wires the flow, its sessions, links, signing key and
  // the application-consent proof as shared/services.ts does, through MSAL and the Key Vault SDK
  // against the HTTPS fakes and the run's Azurite, without the app. The consent integration files
  // start the app in beforeAll, which every mutant they reach would pay for.
  "shared/consent": ["test/unit/consentLink.test.ts", "test/unit/consentMutants.test.ts"],
  // Unit tests that run the real @azure/keyvault-secrets client against the HTTPS fake Key Vault
  // (test/fakes/fakeKeyVault.ts), its slow deletes, recovers and paged lists included, without
  // starting the app: keyVaultRealism.test.ts covers the same ground but its second half starts
  // the app in beforeAll, which every mutant it reaches would pay for.
  "shared/secrets": ["test/unit/appCredentialConfig.test.ts", "test/unit/secretsMutants.test.ts"],
  // Unit tests only. The pull's integration files (pull*.test.ts, leaseRace, unstableOrder,
  // graphPull, hundredDays, ...) start the app and the fakes in beforeAll, which every mutant they
  // reach would re-run: pullMutants.test.ts drives the pull's modules against the run's Azurite
  // (queues, tables, blobs) without the app instead, and tenantPullMutants.test.ts runs TenantPull,
  // AccessTokenSource and DeadLetterRedrive as createServices wires them, against the in-process
  // HTTPS fakes and Azurite (one beforeAll that starts the fakes, no app).
  "shared/pull": [
    "test/unit/subWindows.test.ts",
    "test/unit/compactVersionSet.test.ts",
    "test/unit/instantCensus.test.ts",
    "test/unit/pullHealth.test.ts",
    "test/unit/pullWindow.test.ts",
    "test/unit/pullMutants.test.ts",
    "test/unit/pullLeaseMutants.test.ts",
    "test/unit/pullSpillMutants.test.ts",
    "test/unit/tenantPullMutants.test.ts",
    "test/unit/writtenRows.test.ts",
  ],
  // The client, the page scanner and the budget are pure or talk to a scripted HTTPS endpoint.
  // The whole folder is slow (about 4 h at --concurrency 1): every file here pushes pages, some
  // of megabytes, through pageScanner.ts's instrumented per-character loops, and its static
  // mutants run all of them. docs/mutation.md measures it a file or a line range at a time.
  "shared/defender": [
    "test/unit/defenderClient.test.ts",
    "test/unit/pageScanner.test.ts",
    "test/unit/pageScannerProperty.test.ts",
    "test/unit/rateBudget.test.ts",
    "test/unit/pullWindow.test.ts",
    "test/unit/sentinelRecords.test.ts",
    "test/unit/defenderMutants.test.ts",
    "test/unit/pageScannerMutants.test.ts",
  ],
  // Unit tests, plus blobAlertSink.test.ts, which runs the real @azure/storage-blob client against
  // the run's Azurite without starting the app. The Splunk, Sentinel and Event Hubs integration
  // files start the app in beforeAll (every mutant they reach would re-run a whole file):
  // sinksMutants.test.ts drives those sinks against the HTTPS fakes directly instead, and
  // sinksEventHubsMutants.test.ts the Event Hubs sink against the AMQP fake hub (a file of its
  // own: it trusts the fake's self-signed certificate process-wide); sinksCommonMutants.test.ts
  // runs the dead-letter and parking stores, the settings and the sink factory the same way.
  "shared/sinks": [
    "test/unit/sinkSet.test.ts",
    "test/unit/sinkSettings.test.ts",
    "test/unit/splunkSettings.test.ts",
    "test/unit/eventHubsSettings.test.ts",
    "test/unit/sentinelSettings.test.ts",
    "test/unit/sentinelRecords.test.ts",
    "test/unit/envelopeEvidence.test.ts",
    "test/unit/blobNamesDocumented.test.ts",
    "test/integration/blobAlertSink.test.ts",
    "test/unit/sinksMutants.test.ts",
    "test/unit/sinksEventHubsMutants.test.ts",
    "test/unit/sinksCommonMutants.test.ts",
    "test/unit/sinksCommonEdges.test.ts",
    "test/unit/sinksEdge.test.ts",
    "test/unit/sinksHecEventsMutants.test.ts",
    "test/unit/sinksTransportMutants.test.ts",
    "test/unit/sinksBlobMutants.test.ts",
    "test/unit/sinksSplunkMutants.test.ts",
  ],
};

function usage(message) {
  console.error(`${message}\nusage: npm run mutate [-- [shared/<folder> ...] [--whole-suite | --tests <file,...>] [--<stryker option> <value> ...]]`);
  process.exit(2);
}

// Stryker's buildCommand (no shell, so no `&&`): in the sandbox, compile the instrumented sources
// as `npm test` does, so that the tests that run the compiled app run the mutants too.
if (process.argv[2] === "--build-sandbox") {
  for (const script of ["build", "build:local"]) {
    const build = spawnSync("npm", ["run", script], { stdio: "inherit", shell: process.platform === "win32" });
    if (build.status !== 0) process.exit(build.status ?? 1);
  }
  process.exit(0);
}

const args = process.argv.slice(2);
const folders = [];
const strykerArgs = [];
let wholeSuite = false;
let ownTests;
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  if (arg === "--whole-suite") {
    wholeSuite = true;
    continue;
  }
  if (arg === "--tests") {
    ownTests = (args[++i] ?? "").split(",").filter(Boolean);
    if (ownTests.length === 0 || ownTests.some((file) => !existsSync(path.join(ROOT, file)))) usage(`--tests needs existing test files, comma-separated: ${args[i] ?? ""}`);
    continue;
  }
  if (arg.startsWith("-")) {
    strykerArgs.push(arg);
    if (!arg.includes("=") && args[i + 1] !== undefined && !args[i + 1].startsWith("-")) strykerArgs.push(args[++i]);
    continue;
  }
  const folder = (arg.includes("/") ? arg : `shared/${arg}`).replace(/\\/g, "/").replace(/\/+$/, "");
  if (!folder.startsWith("shared/") || !existsSync(path.join(ROOT, folder))) usage(`not a folder under shared/: ${arg}`);
  folders.push(folder);
}
const chosen = folders.length > 0 ? folders : FOLDERS;

// A folder's .ts files and its subfolders'; type-only files (types.ts) have nothing to mutate.
const mutate = [...chosen.map((folder) => `${folder}/**/*.ts`), "!shared/**/types.ts"];

// The package exports no bin path: find it beside its package.json.
const corePackage = createRequire(import.meta.url).resolve("@stryker-mutator/core/package.json");
const stryker = path.join(path.dirname(corePackage), "bin", "stryker.js");
// scripts/vitest.stryker.config.mts reads the list from the environment (Stryker's test-runner
// processes inherit it), so that even a mutant reached while a file loads runs only these files.
const listed = !wholeSuite && chosen.every((folder) => TEST_FILES[folder] !== undefined);
const testFiles = ownTests ?? (listed ? [...new Set(chosen.flatMap((folder) => TEST_FILES[folder]))].filter((file) => existsSync(path.join(ROOT, file))) : []);
const env = { ...process.env };
if (testFiles.length > 0) env.STRYKER_TEST_FILES = testFiles.join(",");
else delete env.STRYKER_TEST_FILES;
console.log(`mutate: ${chosen.join(" ")}`);
console.log(testFiles.length > 0 ? `tests: ${testFiles.join(" ")}` : "tests: the whole suite (no test list for every chosen folder, or --whole-suite)");
const started = Date.now();
const run = spawnSync(process.execPath, [stryker, "run", CONFIG, "--mutate", mutate.join(","), ...strykerArgs], { cwd: ROOT, stdio: "inherit", env });
const seconds = Math.round((Date.now() - started) / 1000);
if (run.error) throw run.error;

if (!existsSync(REPORT)) {
  console.error(`mutate: Stryker wrote no report (${path.relative(ROOT, REPORT)}); exit code ${run.status}`);
  process.exit(run.status || 1);
}

const report = JSON.parse(readFileSync(REPORT, "utf8"));
const STATUSES = ["Killed", "Timeout", "Survived", "NoCoverage", "Ignored", "CompileError", "RuntimeError"];
const rows = new Map(chosen.map((folder) => [folder, Object.fromEntries(STATUSES.map((status) => [status, 0]))]));
const ignored = [];
for (const [file, { mutants }] of Object.entries(report.files)) {
  const relative = path.relative(ROOT, path.resolve(ROOT, file)).replace(/\\/g, "/");
  const folder = chosen.find((candidate) => relative.startsWith(`${candidate}/`));
  if (folder === undefined) continue;
  for (const mutant of mutants) {
    const row = rows.get(folder);
    row[mutant.status] = (row[mutant.status] ?? 0) + 1;
    if (mutant.status === "Ignored") ignored.push(`${relative}:${mutant.location.start.line} ${mutant.mutatorName}: ${mutant.statusReason ?? "(no reason)"}`);
  }
}

const percent = (part, whole) => (whole === 0 ? "n/a" : `${((100 * part) / whole).toFixed(1)} %`);
const table = [["folder", "score", "killed", "timeout", "survived", "no cov.", "ignored", "errors"]];
const total = Object.fromEntries(STATUSES.map((status) => [status, 0]));
for (const [folder, row] of [...rows, ["all", total]]) {
  if (folder !== "all") for (const status of STATUSES) total[status] += row[status];
  const detected = row.Killed + row.Timeout;
  const valid = detected + row.Survived + row.NoCoverage;
  table.push([folder, percent(detected, valid), row.Killed, row.Timeout, row.Survived, row.NoCoverage, row.Ignored, row.CompileError + row.RuntimeError].map(String));
}
const widths = table[0].map((_, column) => Math.max(...table.map((line) => line[column].length)));
console.log("\nMutation score per folder: (killed + timeout) / (killed + timeout + survived + no coverage)");
for (const line of table) console.log(line.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column]))).join("  "));
if (ignored.length > 0) {
  console.log(`\nIgnored (disabled in the source as equivalent), ${ignored.length}:`);
  for (const line of ignored) console.log(`  ${line}`);
}
console.log(`\nStryker took ${Math.floor(seconds / 60)} min ${seconds % 60} s; report: test-artifacts/mutation/mutation.html`);
process.exit(run.status ?? 1);
