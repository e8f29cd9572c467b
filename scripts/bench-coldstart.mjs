// The cold-start part of `npm run bench` (issue 14): how long a fresh Node.js process takes to load
// the app's entry point: the bundle (deploy/, `npm run bundle`), the same bundle built with --eager,
// and the plain build (dist/).
// Flex Consumption scales from zero, so every new instance pays this before its first invocation.
//
// Each run is a new `node -e` process that injects `@azure/functions-core` the way the Functions
// worker does (a minimal stand-in, the same for both entries, so that the functions really
// register), then times `require(entry)`: wall time and the process's CPU time. No app settings
// are passed (telemetry stays off in all). One discarded warm-up run per entry fills the page
// cache; the measured runs alternate between the entries so all see the same machine load.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { bundle } from "./bundle.mjs";

export const COLD_START_TARGET_MS = 200;

const LOADER = `
const Module = require("node:module");
let functions = 0;
const core = {
  version: "bench", setProgrammingModel() {}, getProgrammingModel() {}, log() {},
  registerFunction() { functions++; return { dispose() {} }; },
  registerHook() { return { dispose() {} }; },
};
const load = Module._load;
Module._load = function (request, parent, isMain) { return request === "@azure/functions-core" ? core : load.call(this, request, parent, isMain); };
const cpu = process.cpuUsage();
const t0 = performance.now();
require(process.argv[1]);
const wallMs = performance.now() - t0;
const used = process.cpuUsage(cpu);
process.stdout.write(JSON.stringify({ wallMs, cpuMs: (used.user + used.system) / 1000, modules: Object.keys(require.cache).length, functions }));
process.exit(0);
`;

/**
 * The settings that turn telemetry on, as infra/ deploys the app (APPLICATIONINSIGHTS_CONNECTION_STRING
 * is always set there): the entry then starts the OpenTelemetry SDK and the Azure Monitor exporters,
 * which load with it. The endpoint is never reached: the process exits before the first export
 * (a minute away), and statsbeat is off.
 */
const TELEMETRY_ENV = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: "InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://ingestion.invalid/",
  APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL: "true",
};

function loadOnce(entry, extraEnv = {}) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    execFile(process.execPath, ["-e", LOADER, entry], { env: { PATH: process.env.PATH ?? "", ...extraEnv }, timeout: 60_000 }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`loading ${entry} failed: ${error.message}\n${stderr}`));
      const processMs = Number(process.hrtime.bigint() - started) / 1e6;
      resolve({ ...JSON.parse(stdout), processMs });
    });
  });
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

function summarise(samples) {
  const pick = (k) => samples.map((s) => s[k]);
  return {
    wallMs: median(pick("wallMs")),
    minWallMs: Math.min(...pick("wallMs")),
    maxWallMs: Math.max(...pick("wallMs")),
    cpuMs: median(pick("cpuMs")),
    processMs: median(pick("processMs")),
    modules: samples[0].modules,
    functions: samples[0].functions,
  };
}

/**
 * Bundles dist/ into deploy/ (as `npm run bundle` without its tsc step; the bench has just built
 * dist/), and the same with `--eager` into a temporary folder (what deferring the app's imports
 * buys), and times the three entries.
 */
export async function coldStartPart({ root, mainEntry, runs, say }) {
  const made = await bundle({ root, build: false, log: say });
  const eagerDir = mkdtempSync(join(tmpdir(), "bench-eager-bundle-"));
  try {
    const eager = await bundle({ root, outDir: join(eagerDir, "deploy"), build: false, defer: false, log: say });
    const entries = {
      plain: [join(root, mainEntry)],
      eager: [eager.main],
      bundle: [made.main],
      telemetry: [made.main, TELEMETRY_ENV],
    };
    const samples = { plain: [], eager: [], bundle: [], telemetry: [] };
    for (const args of Object.values(entries)) await loadOnce(...args);
    const loadBefore = loadavg()[0];
    for (let i = 0; i < runs; i++) {
      for (const [name, args] of Object.entries(entries)) samples[name].push(await loadOnce(...args));
    }
    return {
      runs,
      made,
      plain: summarise(samples.plain),
      eager: summarise(samples.eager),
      bundle: summarise(samples.bundle),
      telemetry: summarise(samples.telemetry),
      load: [loadBefore, loadavg()[0]],
    };
  } finally {
    rmSync(eagerDir, { recursive: true, force: true });
  }
}

export function reportColdStart(say, part, fmt) {
  const row = (label, s) =>
    `  ${label.padEnd(21)} ${`${fmt(s.wallMs)} ms`.padStart(9)}  ${`${fmt(s.minWallMs)}–${fmt(s.maxWallMs)}`.padEnd(13)} ${`${fmt(s.cpuMs)} ms`.padStart(9)}  ` +
    `${`${fmt(s.processMs)} ms`.padStart(9)}  ${fmt(s.modules).padStart(7)}  ${String(s.functions).padStart(9)}`;
  say(`── cold start: require() of the entry in a fresh node process, median of ${part.runs} runs each ──────────`);
  say(`  entry                      wall  range               CPU    process    files  functions`);
  say(row("plain build (dist/)", part.plain));
  say(row("bundle, --eager", part.eager));
  say(row("bundle (deploy/)", part.bundle));
  say(row("bundle, telemetry on", part.telemetry));
  say(`  the bundle loads in ${fmt((100 * part.bundle.wallMs) / part.plain.wallMs)} % of the plain build's time; ` +
    `bundle ${fmt(part.made.bytes / 1024 / 1024, 2)} MB (${fmt(part.made.gzipBytes / 1024 / 1024, 2)} MB gzipped), ${fmt(part.made.modules)} modules inlined; ` +
    `files = entries of require.cache after the load`);
  const cores = cpus().length;
  say(`  load average ${fmt(part.load[0], 1)} before, ${fmt(part.load[1], 1)} after (${cores} cores: above ${cores}, wall times include waiting for a core; CPU does not)`);
  say(`  --eager: the same bundle with every import evaluated with the entry, as in the plain build (npm run bundle defers the app's imports to their first use)`);
  say(`  telemetry on: the bundle with APPLICATIONINSIGHTS_CONNECTION_STRING set, as infra/ deploys it: the OpenTelemetry SDK and the exporters start with the entry`);
  for (const [label, s] of [["bundle", part.bundle], ["--eager bundle", part.eager], ["telemetry-on bundle", part.telemetry]]) {
    if (s.functions !== part.plain.functions) say(`  !!!!! FAIL the ${label} registered ${s.functions} functions, the plain build ${part.plain.functions}`);
  }
}

/** `check` and `previous` are bench.mjs's: a PASS/FAIL line, and the figures recorded before. */
export function coldStartChecks(part, check, previous, fmt) {
  return [
    check(`bundle entry load < ${COLD_START_TARGET_MS} ms`, part.bundle.wallMs < COLD_START_TARGET_MS && part.bundle.functions === part.plain.functions,
      `${fmt(part.bundle.wallMs)} ms median wall (CPU ${fmt(part.bundle.cpuMs)} ms); plain build ${fmt(part.plain.wallMs)} ms (CPU ${fmt(part.plain.cpuMs)} ms)`,
      previous.bundle),
    `info  bundle entry load with telemetry on (as deployed): ${fmt(part.telemetry.wallMs)} ms (CPU ${fmt(part.telemetry.cpuMs)} ms)   (previous: ${previous.telemetry})`,
    `info  eager bundle entry load (every import with the entry): ${fmt(part.eager.wallMs)} ms (CPU ${fmt(part.eager.cpuMs)} ms)   (previous: ${previous.bundle})`,
    `info  plain entry load: ${fmt(part.plain.wallMs)} ms (CPU ${fmt(part.plain.cpuMs)} ms), ${fmt(part.plain.modules)} modules   (previous: ${previous.plain})`,
  ];
}
