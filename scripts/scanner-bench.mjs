// Micro-benchmark of the page scanner: `node scripts/scanner-bench.mjs [--compare DIR] [--rounds N]`.
//
// Times scanPage (dist/shared/defender/pageScanner.js) on real-shaped pages of 2,500 and 10,000
// alerts (Defender for Endpoint from dist-bench's alert generator, and Microsoft Graph alerts_v2),
// serialised the way the Defender fake and the API send them and decoded from bytes as the app
// does. Prints CPU ms per page and µs per alert (median of N rounds after warm-up). --compare DIR
// also times another build of the scanner (DIR/shared/defender/pageScanner.js, e.g. a copy of an
// older dist/) on the same pages, after checking that both produce the same output.
// Single-threaded and short: safe to run beside tests.
// Needs `npm run build` (dist/) and `npm run build:local` (dist-bench/).
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at < 0 ? fallback : process.argv[at + 1];
}
const rounds = Number(option("--rounds", "15"));
const compareDir = option("--compare", undefined);

function load(file) {
  if (!existsSync(file)) throw new Error(`${file} is missing: run \`npm run build && npm run build:local\` first`);
  return require(file);
}
const current = load(join(root, "dist/shared/defender/pageScanner.js"));
const previous = compareDir === undefined ? undefined : load(resolve(compareDir, "shared/defender/pageScanner.js"));
const { generateAlerts } = load(join(root, "dist-bench/test/fakes/alerts.js"));
const { generateGraphAlerts } = load(join(root, "dist-bench/test/fakes/graphAlerts.js"));

const TENANT = "4d3c2b1a-0000-4000-8000-00000000a1e7";
const start = new Date("2026-11-01T00:00:00Z");

/** The page as the app holds it: decoded from the response's bytes (httpClient), so one flat string. */
function page(alerts, context) {
  const json = JSON.stringify({ "@odata.context": context, value: alerts, "@odata.nextLink": "https://api.securitycenter.microsoft.com/api/alerts?$skip=2500" });
  return Buffer.from(json, "utf8").toString("utf8");
}

const cases = [];
for (const size of [2500, 10000]) {
  cases.push({ name: `mde ${size}`, size, timeField: "lastUpdateTime", text: page(generateAlerts(TENANT, size, { start, spacingMs: 7 }), "https://api.securitycenter.microsoft.com/api/$metadata#Alerts") });
  cases.push({ name: `graph ${size}`, size, timeField: "lastUpdateDateTime", text: page(generateGraphAlerts(TENANT, size, { start, spacingMs: 7 }), "https://graph.microsoft.com/v1.0/$metadata#security/alerts_v2") });
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Median CPU ms per scan of each scanner (CPU time, not wall time: on a shared machine the wall
 * clock also counts other processes). Rounds alternate between the scanners, so a change of load
 * hits both alike.
 */
function time(scanners, c) {
  const options = { timeField: c.timeField };
  for (const scanner of scanners) for (let n = 0; n < 5; n++) scanner.scanPage(c.text, options); // warm-up: let V8 optimise
  const samples = scanners.map(() => []);
  for (let n = 0; n < rounds; n++) {
    scanners.forEach((scanner, k) => {
      const t0 = process.cpuUsage();
      const result = scanner.scanPage(c.text, options);
      const used = process.cpuUsage(t0);
      samples[k].push((used.user + used.system) / 1000);
      if (result.alerts.length !== c.size) throw new Error(`${c.name}: ${result.alerts.length} alerts scanned, ${result.rejected.length} rejected`);
    });
  }
  return samples.map(median);
}

function sameOutput(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

console.log(`node ${process.version}, CPU time, median of ${rounds} rounds`);
console.log(["page", "MB", compareDir === undefined ? "" : "before ms/page (µs/alert)", "now ms/page (µs/alert)", compareDir === undefined ? "" : "speed-up"].filter(Boolean).join(" | "));
for (const c of cases) {
  const mb = (Buffer.byteLength(c.text) / 1e6).toFixed(1);
  const cell = (ms) => `${ms.toFixed(2)} (${((ms * 1000) / c.size).toFixed(2)})`;
  if (previous === undefined) {
    const [now] = time([current], c);
    console.log(`${c.name} | ${mb} | ${cell(now)}`);
    continue;
  }
  const options = { timeField: c.timeField };
  if (!sameOutput(previous.scanPage(c.text, options), current.scanPage(c.text, options))) throw new Error(`${c.name}: the two scanners disagree`);
  const [before, now] = time([previous, current], c);
  console.log(`${c.name} | ${mb} | ${cell(before)} | ${cell(now)} | ${(before / now).toFixed(2)}×`);
}
