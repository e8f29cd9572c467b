/**
 * The bundled deployment (issue 14, scripts/bundle.mjs): deploy/ is an app the Functions host can
 * run as it is. The bundle is built into a temporary folder outside the repository, so nothing it
 * needs can come from the repository's node_modules, and loaded the way the Node.js worker loads
 * an app: a fresh process requires package.json `main` with `@azure/functions-core` injected (the
 * harness's stand-in, test/harness/functionsHost.ts, compiled in dist-bench/). Every function the
 * unbundled build registers must be registered by the bundle alike, and handlers must answer alike.
 * The rest of the suite keeps running against the unbundled dist/.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateAlerts } from "../fakes/alerts";
import { connectedTenant, deliveredEnvelopes, deliveredIds, minutesAgo } from "../harness/pullFixture";
import { recordOutput } from "../harness/secrecy";
import { startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const BUNDLE_SCRIPT = join(ROOT, "scripts", "bundle.mjs");
const HARNESS = join(ROOT, "dist-bench", "test", "harness", "functionsHost.js");
const PLAIN_ENTRY = join(ROOT, "dist", "functions", "index.js");
const BOUND_MS = 180_000;

/**
 * Runs in the child: loads `entry` as the worker would, then reports what it registered, which
 * copies of @azure/functions it loaded, and two answers: GET /api/health and a static consent
 * asset. With a tenant id (third argument), it first runs that tenant's pull as the queue
 * trigger would, so that the health check and the pull go through the bundled SDKs.
 */
const CHILD = `
const [harness, entry, pullTenantId] = process.argv.slice(1);
const { loadApp } = require(harness);
(async () => {
  const app = loadApp(entry);
  const functions = [...app.functions.values()].map((f) => ({ name: f.name, metadata: f.metadata }));
  let pull;
  if (pullTenantId) {
    await app.queue("pullTenant", JSON.stringify({ tenantId: pullTenantId, enqueuedAt: new Date().toISOString() }));
    pull = app.logs.filter((l) => l.level === "error").map((l) => l.message);
  }
  let health = await app.http("health", { url: "/api/health" });
  // With settings, as a platform probe would: a check that timed out on a loaded machine (5 s per
  // dependency) is asked again, at most twice.
  for (let retry = 0; pullTenantId && health.status !== 200 && retry < 2; retry++) health = await app.http("health", { url: "/api/health" });
  const asset = await app.http("consentAssets", { url: "/api/consent/assets/consent.css" });
  const marker = "@azure/functions/";
  const copies = [...new Set(Object.keys(require.cache).filter((f) => f.includes(marker)).map((f) => f.slice(0, f.indexOf(marker) + marker.length)))];
  process.stdout.write(JSON.stringify({
    functions,
    hooks: app.hooks.map((h) => h.hookName),
    systemLogs: app.systemLogs.map((l) => l.message),
    copies,
    pullErrors: pull,
    logs: app.logs.map((l) => l.level + " " + l.message),
    health: { status: health.status, body: health.json() },
    asset: { status: asset.status, contentType: asset.headers.get("content-type"), body: asset.body },
  }));
  process.exit(0);
})().catch((error) => {
  process.stderr.write(String(error && error.stack || error));
  process.exit(1);
});
`;

interface Loaded {
  functions: Array<{ name: string; metadata: { bindings: Record<string, { direction: string; type: string; route?: string }> } }>;
  hooks: string[];
  systemLogs: string[];
  copies: string[];
  pullErrors?: string[];
  /** Every line the handlers logged: only for the secrecy scan. */
  logs: string[];
  health: { status: number; body: { status: string; checks: Record<string, { status: string }> } };
  asset: { status: number; contentType: string | null; body: string };
}

/** Settings-free, as a cold worker with none of the app's settings: only PATH is passed on. */
const BARE_ENV = { PATH: process.env["PATH"] ?? "" };
const TELEMETRY_ENV = {
  ...BARE_ENV,
  // Never reached: the child exits before the first export (a minute away), and statsbeat is off.
  APPLICATIONINSIGHTS_CONNECTION_STRING: "InstrumentationKey=00000000-0000-4000-8000-000000000000;IngestionEndpoint=https://ingestion.invalid/",
  APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL: "true",
};

function run(args: string[], env: Record<string, string>, cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { env, cwd, timeout: BOUND_MS, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      // For `-e <script>`, its arguments name the run (the script itself is in this file).
      const label = args[0] === "-e" ? `node -e <script> ${args.slice(2).join(" ")}` : `node ${args.join(" ")}`;
      if (error) reject(new Error(`${label} failed (${error.code ?? error.signal ?? "?"}):\n${stderr}`));
      else resolve(stdout);
    });
  });
}

const loads = new Map<string, Promise<Loaded>>();

/** One child per entry and environment, shared by the tests that read it. */
function load(entry: string, env: Record<string, string>, cwd: string, pullTenantId?: string): Promise<Loaded> {
  const key = JSON.stringify([entry, env, pullTenantId]);
  let loaded = loads.get(key);
  if (loaded === undefined) {
    const args = ["-e", CHILD, HARNESS, entry, ...(pullTenantId === undefined ? [] : [pullTenantId])];
    loaded = run(args, env, cwd).then((stdout) => {
      // What the child's handlers answered and logged goes through the after-each secrecy scan too.
      recordOutput("bundle smoke child stdout", entry, stdout);
      return JSON.parse(stdout) as Loaded;
    });
    loads.set(key, loaded);
  }
  return loaded;
}

let work: string;
let deploy: string;
let main: string;
let bundleLog: string;

beforeAll(async () => {
  // A folder with no node_modules above it: the bundle finds @azure/functions in deploy/ or nowhere.
  work = mkdtempSync(join(tmpdir(), "bundle-smoke-"));
  deploy = join(work, "deploy");
  // dist/ is fresh (the global setup builds it); this is `npm run bundle` without its tsc step.
  bundleLog = await run([BUNDLE_SCRIPT, "--no-build", "--out", deploy], BARE_ENV, ROOT);
  const pkg = JSON.parse(readFileSync(join(deploy, "package.json"), "utf8")) as { main: string };
  main = join(deploy, pkg.main);
}, BOUND_MS);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("npm run bundle", () => {
  it("makes a publishable folder: host.json, a package.json whose main is the bundle and whose only dependency is @azure/functions, installed", () => {
    const root = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as Record<string, unknown> & { dependencies: Record<string, string> };
    const pkg = JSON.parse(readFileSync(join(deploy, "package.json"), "utf8")) as Record<string, unknown>;
    expect(pkg).toMatchObject({ name: root["name"], version: root["version"], engines: root["engines"], main: "index.js" });
    expect(pkg["dependencies"]).toEqual({ "@azure/functions": root.dependencies["@azure/functions"] });
    expect(existsSync(main)).toBe(true);
    expect(existsSync(`${main}.map`)).toBe(true);
    expect(readFileSync(join(deploy, "host.json"), "utf8")).toBe(readFileSync(join(ROOT, "host.json"), "utf8"));
    const installed = JSON.parse(readFileSync(join(deploy, "node_modules", "@azure", "functions", "package.json"), "utf8")) as { version: string };
    expect(installed.version).toBe(root.dependencies["@azure/functions"]);
    // Only @azure/functions and its own dependencies; everything else is inside the bundle.
    expect(readdirSync(join(deploy, "node_modules")).sort()).toEqual(["@azure", "cookie"]);
    expect(readdirSync(join(deploy, "node_modules", "@azure")).sort()).toEqual(["functions", "functions-extensions-base"]);
    expect(readFileSync(join(deploy, ".funcignore"), "utf8")).toMatch(/^\*\.map$/m);
    // The bundled packages' licences travel with their code.
    const notices = readFileSync(join(deploy, "THIRD-PARTY-NOTICES.txt"), "utf8");
    for (const name of ["@azure/data-tables", "@azure/identity", "@azure/msal-node", "undici", "jose"]) expect(notices).toContain(`\n${name}@`);
    expect(bundleLog).toMatch(/bundle: .*index\.js \d+\.\d\d MB/);
  });

  it("leaves nothing to require at run time but Node.js built-ins and @azure/functions", () => {
    const text = readFileSync(main, "utf8");
    const required = new Set([...text.matchAll(/\brequire\("([^"]+)"\)/g)].map((m) => m[1] ?? ""));
    expect(required.has("@azure/functions")).toBe(true);
    const builtins = new Set(builtinModules);
    const other = [...required].filter((name) => name !== "@azure/functions" && !name.startsWith("node:") && !builtins.has(name));
    expect(other).toEqual([]);
  });
});

describe("the bundle, loaded as the host loads it", () => {
  it("registers every function of the unbundled build with the same names, triggers, routes and bindings, through its own single @azure/functions", async () => {
    const [bundled, plain] = await Promise.all([load(main, BARE_ENV, work), load(PLAIN_ENTRY, BARE_ENV, ROOT)]);
    expect(plain.functions.length).toBeGreaterThan(20);
    expect(bundled.functions).toEqual(plain.functions);
    expect(bundled.functions.map((f) => f.name)).toContain("health");
    expect(bundled.hooks).toEqual(plain.hooks);
    expect(bundled.copies).toEqual([join(deploy, "node_modules", "@azure", "functions") + "/"]);
  }, BOUND_MS);

  it("answers HTTP requests as the unbundled build does: a 503 health report naming the settings, a static asset", async () => {
    const [bundled, plain] = await Promise.all([load(main, BARE_ENV, work), load(PLAIN_ENTRY, BARE_ENV, ROOT)]);
    expect(bundled.health.status).toBe(503);
    expect(bundled.health.body.checks["settings"]?.status).toBe("unhealthy");
    expect(bundled.health.body.checks["storage"]?.status).toBe("skipped");
    expect(bundled.health).toEqual(plain.health);
    expect(bundled.asset.status).toBe(200);
    expect(bundled.asset.contentType).toMatch(/^text\/css/);
    expect(bundled.asset).toEqual(plain.asset);
  }, BOUND_MS);

  it("with telemetry on, hands the bundled OpenTelemetry instrumentation the same @azure/functions the host uses", async () => {
    const [bundled, plain] = await Promise.all([load(main, TELEMETRY_ENV, work), load(PLAIN_ENTRY, TELEMETRY_ENV, ROOT)]);
    // The instrumentation's hooks and the capability it sets tell the host that the worker exports its own logs.
    expect(bundled.hooks).toEqual(expect.arrayContaining(["log", "preInvocation", "appTerminate", "appStart"]));
    expect(bundled.systemLogs).toContain("Capability WorkerOpenTelemetryEnabled set to true.");
    expect(bundled.hooks).toEqual(plain.hooks);
    expect(bundled.systemLogs).toEqual(plain.systemLogs);
    expect(bundled.functions).toEqual(plain.functions);
    expect(bundled.copies).toHaveLength(1);
  }, BOUND_MS);
});

describe("the bundle, with the app's settings, against the fakes and Azurite", () => {
  let env: TestEnvironment | undefined;

  afterAll(async () => {
    await env?.stop();
  });

  it("pulls a consented tenant's alerts into the blob sink through the bundled SDKs, and reports healthy", async () => {
    // The consent runs in this process (the unbundled app); storage and the fakes are shared with the child.
    env = await startTestEnvironment({ PULL_SETTLE_SECONDS: "0" });
    const tenantId = await connectedTenant(env, "Bundled Ltd");
    const alerts = generateAlerts(tenantId, 30, { start: minutesAgo(60), spacingMs: 60_000 });
    env.defender.addAlerts(tenantId, alerts);
    const bundled = await load(main, { ...BARE_ENV, ...env.env }, work, tenantId);
    expect(bundled.pullErrors).toEqual([]);
    const delivered = deliveredIds(await deliveredEnvelopes(env, tenantId)).sort();
    expect(delivered).toEqual(alerts.map((a) => `${a.id}@${a.lastUpdateTime}`).sort());
    // The whole report on failure: which dependency, and why.
    expect(bundled.health).toMatchObject({ status: 200, body: { status: "healthy" } });
    expect(bundled.copies).toEqual([join(deploy, "node_modules", "@azure", "functions") + "/"]);
  }, BOUND_MS);
});

/**
 * In the child: bundles a two-file app (dist/functions/index.js importing the package fake-lib,
 * which counts its evaluations on globalThis) with scripts/bundle.mjs's esbuild options, deferred
 * and --eager, and reports what loading each bundle evaluated and how the import behaves.
 * (bundle.mjs runs as a command when it is process.argv[1], so it is not the first argument.)
 */
const DEFER_CHILD = `
const [esbuildMain, bundleScript, app] = process.argv.slice(1);
const path = require("node:path");
(async () => {
  const { esbuildOptions } = await import(bundleScript);
  const { build } = require(esbuildMain);
  const report = {};
  for (const defer of [true, false]) {
    const outfile = path.join(app, defer ? "deferred" : "eager", "index.js");
    const entry = path.join(app, "dist", "functions", "index.js");
    await build({ ...esbuildOptions(entry, outfile, { appDir: path.join(app, "dist"), defer }), absWorkingDir: app });
    globalThis.evaluations = 0;
    const m = require(outfile);
    const atLoad = globalThis.evaluations;
    const made = m.use();
    report[defer ? "deferred" : "eager"] = {
      atLoad,
      afterUse: globalThis.evaluations,
      instance: made instanceof m.lib.Thing,
      has: "value" in m.lib && !("missing" in m.lib),
      keys: Object.keys(m.lib).sort(),
      value: m.lib.value,
      afterMore: (m.use(), m.lib.value, globalThis.evaluations),
    };
  }
  process.stdout.write(JSON.stringify(report));
})().catch((error) => {
  process.stderr.write(String(error && error.stack || error));
  process.exit(1);
});
`;

describe("imports deferred to their first use", () => {
  it("evaluates a package the app imports on its first use, once, and forwards to it unchanged; --eager at load", async () => {
    const app = join(work, "defer-fixture");
    const write = (file: string, text: string): void => {
      mkdirSync(join(app, file, ".."), { recursive: true });
      writeFileSync(join(app, file), text);
    };
    write("node_modules/fake-lib/package.json", JSON.stringify({ name: "fake-lib", version: "1.0.0", main: "index.js" }));
    write(
      "node_modules/fake-lib/index.js",
      "globalThis.evaluations++;\nclass Thing {}\nexports.Thing = Thing;\nexports.make = () => new Thing();\nexports.value = 42;\n",
    );
    // What tsc emits for `import { make } from "fake-lib"`: the namespace is read only when called.
    write("dist/functions/index.js", 'const fake_lib_1 = require("fake-lib");\nexports.use = () => (0, fake_lib_1.make)();\nexports.lib = fake_lib_1;\n');
    const esbuildMain = join(ROOT, "node_modules", "esbuild", "lib", "main.js");
    const report = JSON.parse(await run(["-e", DEFER_CHILD, esbuildMain, BUNDLE_SCRIPT, app], BARE_ENV, app)) as Record<
      "deferred" | "eager",
      { atLoad: number; afterUse: number; instance: boolean; has: boolean; keys: string[]; value: number; afterMore: number }
    >;
    const behaviour = { instance: true, has: true, keys: ["Thing", "make", "value"], value: 42 };
    expect(report.deferred).toEqual({ atLoad: 0, afterUse: 1, afterMore: 1, ...behaviour });
    expect(report.eager).toEqual({ atLoad: 1, afterUse: 1, afterMore: 1, ...behaviour });
  }, BOUND_MS);
});
