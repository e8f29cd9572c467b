#!/usr/bin/env node
// `npm run bench`: the pull pipeline against the HTTPS fakes and Azurite, each in its own process.
// Not a test: it prints figures and PASS/FAIL per target and always exits 0 unless it crashes.
//
//   node --expose-gc scripts/bench.mjs [--tenants 1000] [--latency-ms 100] [--alerts-per-tenant 20]
//     [--baseline-tenants 100] [--steady-tenants 200] [--warm-cycles 12] [--backlog 100000] [--backlog-page-size <app default>]
//     [--concurrency <host.json batchSize+newBatchThreshold>] [--setup-concurrency 32]
//     [--skip-baseline] [--skip-warm] [--skip-backlog] [--skip-backlog-other-page] [--cpu-prof-dir DIR]
//     [--quota-run | --no-quota-run] [--quota-backlog 1000000]
//     [--sinks | --no-sinks] [--sink-runs blob,sentinel,splunk,eventhubs,multi]
//     [--source mde|graph|all] [--graph-tenants <--tenants>] [--graph-backlog 20000]
//     [--coldstart | --no-coldstart] [--coldstart-runs 7] [--pin[=apart|together]]
//   --pin (Linux): this process and its backlog and cold-start children on CPU 0; the fakes, Azurite and the sink
//   fakes on the other CPUs (--pin=apart, the default) or on CPU 0 too (--pin=together: nothing runs beside the
//   app, so its CPU figures are its own work alone; the rates then include the services' time). The header says
//   which (scripts/bench-pin.mjs).
//   --cpu-prof-dir DIR writes CPU profiles of the cold cycle and the first warm one (this process), the fakes and the backlog child.
//   Warm cycles (Defender part): besides Key Vault and token calls, this process's CPU (the app's; the fakes and
//   Azurite are other processes) and its HTTP requests to Azurite (table reads/writes, queue, blob; counted on
//   the http.client.request.start diagnostics channel, scripts/bench-storageops.mjs) per tenant-cycle: the
//   pull plus its share of one schedule fan-out (a queue message per tenant, quiet ones grouped), one more warm cycle with no
//   new alert (an idle tenant), and the fleet one instance can pull every 5 minutes at that CPU on one core.
//   Backlog (Defender part): the child runs twice, at the page size given (default: the app's PULL_PAGE_SIZE)
//   and at the other of issue 14's two (10,000, the API's largest, or 2,500 if the first is 10,000);
//   --skip-backlog-other-page leaves out the second. Each reports alerts/s, peak RSS, the child's CPU µs per
//   alert and Defender requests per alert.
//   Quota run (on by default with the Defender backlog; --no-quota-run leaves it out, --quota-run asks for it
//   where the defaults would not): one more backlog child, of the issue's 1,000,000-alert first pull at 10,000-alert
//   pages, with the Defender fake enforcing the API's quota (100 calls/min, 1,500/h per tenant; 429 +
//   Retry-After) and the tenant's past hour already spent at the app's budget (in its pull state and in the
//   fake's count), so the hourly limit (1,500 × 10,000 / 3,600 s = 4,167 alerts/s) binds from the first request;
//   it measures the sustained rate against that limit. It adds about 4.5 minutes (the pace is the quota's), the
//   alerts held in the Defender fake's memory (2.2 GB measured at 500,000) and about 30 s of CPU in the child.
//   Without it the bench computes that rate from the 10,000-page backlog, whose fixed costs weigh on 10 pages.
//   --quota-backlog sets its size (at least 2 minutes of the budget: about 8,000 alerts per 2.6 s).
//   --source (default all: both parts, each against fakes and an Azurite of its own): mde runs the Defender
//   part (every section but the Graph part, the per-sink runs included), graph only the Graph part: the same
//   cold cycle for --graph-tenants tenants registered with source "graph" (one pull each, a fresh services
//   instance, alerts seeded in the fake Microsoft Graph) and the same backlog in a child, of --graph-backlog
//   alerts: few enough that its requests (1,000-alert pages) stay inside one minute of the app's Graph call
//   budget (120), so it times the pipeline, not the budget's wait; the report adds what the budget and
//   Graph's quota allow over minutes at the requests per page measured (docs/performance.md#graph-source).
//   Per-sink backlog (on by default, after the other sections): the backlog once per sink, each run in a
//   child with fresh fakes; --sinks runs only that section (`npm run bench -- --sinks`), --no-sinks skips it,
//   --sink-runs picks runs (multi = ALERT_SINKS=blob,sentinel,splunk; splunk-ack = HEC with indexer
//   acknowledgement, not in the default list). In the full bench the blob row is the backlog section's run.
//   Cold start (on by default, first, before any fake or Azurite runs): bundles dist/ into deploy/ (`npm run
//   bundle` without its tsc step) and times require() of the bundle and of the plain entry in fresh node
//   processes, median of --coldstart-runs each (scripts/bench-coldstart.mjs); --coldstart runs only that part,
//   --no-coldstart skips it, --sinks and --source graph leave it out.
// Needs `npm run build` (dist/) and `tsc -p test/fakes/tsconfig.bench.json` (dist-bench/).
import { fork, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { Agent, fetch } from "undici";
import {
  blobIds, combinedCaFile, DEFAULT_SINK_RUNS, eventHubsSinks, exactlyOnce, expectedIds, fakeManagedIdentity, runLabel, SINK_RUNS,
  sinkFakeCertificate, sinkRunEnv, startSinkFake, timeSinkWrites,
} from "./bench-sinks.mjs";
import { coldStartChecks, coldStartPart, reportColdStart } from "./bench-coldstart.mjs";
import { PIN_MODES, pinService, pinThisProcess } from "./bench-pin.mjs";
import { countStorageOps, storageOpsDelta, storageOpsLine, storageResourcesLine, sumStorageOps } from "./bench-storageops.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const SELF = fileURLToPath(import.meta.url);

// ---- options -----------------------------------------------------------------------------------

function parseArgs(argv) {
  const opts = {
    tenants: 1000,
    latencyMs: 100,
    alertsPerTenant: 20,
    baselineTenants: 100,
    steadyTenants: 200,
    backlog: 100_000,
    backlogPageSize: undefined, // the app's PULL_PAGE_SIZE default unless given
    warmCycles: 12,
    concurrency: undefined,
    setupConcurrency: 32,
    skipBaseline: false,
    skipWarm: false,
    skipBacklog: false,
    skipBacklogOther: false,
    quotaRun: undefined, // true with --quota-run, false with --no-quota-run; by default with the Defender backlog
    pin: undefined, // "apart" or "together" with --pin
    quotaBacklog: 1_000_000,
    backlogQuota: false, // in a backlog child: the fake enforces API_QUOTA on its tenant
    sinks: "also", // "also" (after the other sections), "only" (--sinks) or "no" (--no-sinks)
    coldstart: "also", // "also" (before the other sections), "only" (--coldstart) or "no" (--no-coldstart)
    coldstartRuns: 7,
    sinkRuns: DEFAULT_SINK_RUNS,
    source: "all", // "mde", "graph" or "all": which sources' parts run
    graphTenants: undefined, // --tenants unless given
    graphBacklog: 20_000,
    backlogSink: undefined, // in a backlog child: the per-sink run it is
    backlogSource: "mde", // in a backlog child: the source its tenant reads
    scenario: "main",
    cpuProfDir: undefined,
  };
  const numeric = {
    "--tenants": "tenants",
    "--latency-ms": "latencyMs",
    "--alerts-per-tenant": "alertsPerTenant",
    "--baseline-tenants": "baselineTenants",
    "--steady-tenants": "steadyTenants",
    "--backlog": "backlog",
    "--backlog-page-size": "backlogPageSize",
    "--warm-cycles": "warmCycles",
    "--concurrency": "concurrency",
    "--setup-concurrency": "setupConcurrency",
    "--graph-tenants": "graphTenants",
    "--graph-backlog": "graphBacklog",
    "--coldstart-runs": "coldstartRuns",
    "--quota-backlog": "quotaBacklog",
  };
  const flags = {
    "--skip-baseline": "skipBaseline",
    "--skip-warm": "skipWarm",
    "--skip-backlog": "skipBacklog",
    "--skip-backlog-other-page": "skipBacklogOther",
    "--quota-run": "quotaRun",
    "--backlog-quota": "backlogQuota",
  };
  for (let i = 0; i < argv.length; i++) {
    let [name, value] = argv[i].split("=", 2);
    if (flags[name]) {
      if (name === "--quota-run" && opts.quotaRun === false) usage("--quota-run and --no-quota-run exclude each other");
      opts[flags[name]] = true;
    } else if (name === "--no-quota-run") {
      if (opts.quotaRun === true) usage("--quota-run and --no-quota-run exclude each other");
      opts.quotaRun = false;
    } else if (name === "--coldstart" || name === "--no-coldstart") {
      const mode = name === "--coldstart" ? "only" : "no";
      if (opts.coldstart !== "also" && opts.coldstart !== mode) usage("--coldstart and --no-coldstart exclude each other");
      opts.coldstart = mode;
    } else if (name === "--sinks" || name === "--no-sinks") {
      const mode = name === "--sinks" ? "only" : "no";
      if (opts.sinks !== "also" && opts.sinks !== mode) usage("--sinks and --no-sinks exclude each other");
      opts.sinks = mode;
    } else if (numeric[name] || ["--scenario", "--cpu-prof-dir", "--sink-runs", "--backlog-sink", "--source", "--backlog-source"].includes(name)) {
      if (value === undefined) value = argv[++i];
      if (name === "--scenario") opts.scenario = value;
      else if (name === "--cpu-prof-dir") opts.cpuProfDir = value;
      else if (name === "--source") {
        if (value !== "all" && !SOURCES[value]) usage(`--source takes ${Object.keys(SOURCES).join(", ")} or all`);
        opts.source = value;
      } else if (name === "--backlog-source") {
        if (!SOURCES[value]) usage(`--backlog-source takes ${Object.keys(SOURCES).join(", ")}`);
        opts.backlogSource = value;
      }
      else if (name === "--sink-runs" || name === "--backlog-sink") {
        const runs = String(value ?? "").split(",").map((r) => r.trim()).filter(Boolean);
        const unknown = runs.filter((r) => !SINK_RUNS[r]);
        if (runs.length === 0 || unknown.length) usage(`${name} takes runs among ${Object.keys(SINK_RUNS).join(", ")}`);
        if (name === "--sink-runs") opts.sinkRuns = [...new Set(runs)];
        else opts.backlogSink = runs[0];
      }
      else {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 0) usage(`${name} needs a non-negative integer`);
        opts[numeric[name]] = n;
      }
    } else if (name === "--pin") {
      opts.pin = value ?? "apart";
      if (!PIN_MODES.includes(opts.pin)) usage(`--pin takes ${PIN_MODES.join(" or ")}, not ${opts.pin}`);
    } else if (name === "--help" || name === "-h") {
      usage();
    } else {
      usage(`unknown option ${name}`);
    }
  }
  if (opts.tenants < 1) usage("--tenants must be at least 1");
  opts.graphTenants ??= opts.tenants;
  if (opts.graphTenants < 1) usage("--graph-tenants must be at least 1");
  // The per-sink runs are backlogs of the Defender source: they belong to its part.
  if (opts.source === "graph" && opts.sinks === "only") usage("--sinks runs the Defender backlog per sink; it does not go with --source graph");
  if (opts.source === "graph") opts.sinks = "no";
  if (opts.sinks === "only" && opts.backlog < 1) usage("--sinks needs a --backlog of at least 1");
  if (opts.coldstartRuns < 1) usage("--coldstart-runs must be at least 1");
  // By default the cold start goes with the full bench and --source mde, not with a run of one other part.
  if (opts.coldstart === "also" && (opts.sinks === "only" || opts.source === "graph")) opts.coldstart = "no";
  if (opts.backlogPageSize !== undefined && (opts.backlogPageSize < 1 || opts.backlogPageSize > 10_000)) usage("--backlog-page-size must be 1..10000");
  if (opts.quotaRun && opts.quotaBacklog < 1) usage("--quota-run needs a --quota-backlog of at least 1");
  // The quota run is a backlog of the Defender source: it belongs to its part.
  if (opts.quotaRun && (opts.source === "graph" || opts.sinks === "only" || opts.coldstart === "only")) usage("--quota-run goes with the Defender part (--source mde or all, not --sinks or --coldstart)");
  // By default it runs with the Defender part's backlog, which it extends to the issue's 1,000,000-alert first pull.
  opts.quotaRun ??= !opts.skipBacklog && opts.source !== "graph" && opts.sinks !== "only" && opts.coldstart !== "only";
  return opts;
}

function usage(problem) {
  const lines = readFileSync(SELF, "utf8").split("\n");
  const end = lines.findIndex((l, i) => i > 0 && !l.startsWith("//"));
  const text = lines.slice(1, end).map((l) => l.replace(/^\/\/ ?/, "")).join("\n");
  console.error(`${problem ? `${problem}\n\n` : ""}${text}`);
  process.exit(problem ? 2 : 0);
}

/**
 * The C allocator setting the deployed worker starts with (infra/modules/functionapp.bicep): the
 * backlog children are the app pulling a backlog, so they run with it too.
 */
function deployedAllocatorEnv() {
  const bicep = readFileSync(join(root, "infra/modules/functionapp.bicep"), "utf8");
  const threshold = /^\s*MALLOC_MMAP_THRESHOLD_: '(\d+)'/m.exec(bicep)?.[1];
  if (!threshold) throw new Error("infra/modules/functionapp.bicep no longer sets MALLOC_MMAP_THRESHOLD_: update the bench with it");
  return { MALLOC_MMAP_THRESHOLD_: threshold };
}

function hostConcurrency() {
  const host = JSON.parse(readFileSync(join(root, "host.json"), "utf8"));
  const q = host?.extensions?.queues ?? {};
  // Functions host defaults when unset: batchSize 16, newBatchThreshold batchSize / 2.
  const batchSize = q.batchSize ?? 16;
  const newBatchThreshold = q.newBatchThreshold ?? Math.floor(batchSize / 2);
  return { batchSize, newBatchThreshold, concurrency: batchSize + newBatchThreshold };
}

// ---- alert sources -------------------------------------------------------------------------------

/**
 * What differs between a tenant's two alert sources in the bench: the fake that serves them (its
 * URL and stats in the fakes' JSON line) and their backlog targets (docs/performance.md says why).
 * Everything else, from the consent to the cycle and the backlog child, is the same code.
 */
const SOURCES = {
  mde: {
    name: "mde",
    api: "Defender",
    /** Before every label of its checks ("" keeps the Defender part's labels as they always were). */
    prefix: "",
    /** Before its section headings. */
    heading: "",
    /** How its checks name the requests made to it. */
    requests: "Defender requests",
    urlKey: "defenderUrl",
    statsKey: "defender",
    backlogAlertsPerSec: 20_000,
    /** The most requests a backlog may take per alert, and how the target reads. */
    backlogRequests: (pageSize) => ({ label: "≤ 2× one per page", perAlert: 2 / pageSize }),
    /** The service's documented requests per minute per tenant, and the app's own budget (per minute) under it. */
    quotaPerMinute: 100,
    budgetPerMinute: (app) => new app.RateBudget({ clock: Date.now }).perMinute,
  },
  graph: {
    name: "graph",
    api: "Graph",
    prefix: "Graph ",
    heading: "Graph source: ",
    requests: "requests",
    urlKey: "graphUrl",
    statsKey: "graph",
    // Graph's quota lets any client read one tenant at 150 requests/min × 1,000 alerts = 2,500 alerts/s.
    backlogAlertsPerSec: 2_500,
    backlogRequests: () => ({ label: "≤ 110 per 100,000 alerts", perAlert: 110 / 100_000 }),
    quotaPerMinute: 150,
    budgetPerMinute: (app) => app.GRAPH_BUDGET_LIMITS.perMinute,
  },
};
const sourcesOf = (opts) => (opts.source === "all" ? Object.keys(SOURCES) : [opts.source]);

// ---- app code (CommonJS from dist/) ------------------------------------------------------------

function loadApp() {
  const need = (p) => {
    const file = join(root, p);
    if (!existsSync(file)) throw new Error(`${p} is missing: run \`npm run build && tsc -p test/fakes/tsconfig.bench.json\` first`);
    return require(file);
  };
  return {
    ...need("dist/shared/services.js"),
    ...need("dist/shared/config.js"),
    ...need("dist/shared/logging.js"),
    ...need("dist/shared/sinks/blobAlertSink.js"),
    ...need("dist/shared/sinks/containers.js"),
    ...need("dist/shared/http/bufferPool.js"),
    ...need("dist/shared/graph/graphClient.js"),
    ...need("dist/shared/defender/rateBudget.js"),
    ...need("dist/shared/pull/scheduler.js"),
    azurite: need("dist-bench/test/harness/azurite.js"),
  };
}

// ---- child processes ---------------------------------------------------------------------------

const children = new Set();
let cleanedUp = false;
function killChildren() {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const kill of children) {
    try {
      kill();
    } catch {
      // already gone
    }
  }
}
process.on("exit", killChildren);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping the fakes and Azurite`);
    killChildren();
    process.exit(130);
  });
}

const profArgs = (dir) => (dir ? ["--cpu-prof", "--cpu-prof-dir", dir] : []);

async function startFakes(latencyMs, cpuProfDir) {
  const script = join(root, "dist-bench/test/fakes/serveFakes.js");
  // stdin stays a pipe: if this process dies, even by SIGKILL, the fakes see EOF and exit.
  const child = spawn(process.execPath, [...profArgs(cpuProfDir), script, "--latency-ms", String(latencyMs)], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  children.add(() => child.kill("SIGKILL"));
  pinService(child.pid);
  const info = await new Promise((resolve, reject) => {
    let buffered = "";
    const timer = setTimeout(() => reject(new Error("the fakes did not start within 30 s")), 30_000);
    child.stdout.setEncoding("utf8").on("data", (chunk) => {
      buffered += chunk;
      const nl = buffered.indexOf("\n");
      if (nl >= 0) {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(buffered.slice(0, nl)));
        } catch (err) {
          reject(err);
        }
      }
    });
    child.once("exit", (code) => reject(new Error(`the fakes exited during startup (code ${code})`)));
  });
  if (!info.graphUrl) throw new Error("the fakes serve no Microsoft Graph: dist-bench/ is older than test/fakes/, run `npm run build:local`");
  children.add(() => rmSync(dirname(info.certFile), { recursive: true, force: true }));
  /** Graceful stop (lets a --cpu-prof profile be written): EOF on stdin, then wait for the exit. */
  info.stop = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const timer = setTimeout(resolve, 5_000);
      child.once("exit", () => (clearTimeout(timer), resolve()));
      child.stdin.end();
    });
  return info;
}

async function startAzurite(azuriteModule) {
  // In-memory blobs: room for the cycles plus the 100k-alert backlog.
  const azurite = await azuriteModule.startAzurite({ extentMemoryLimitMb: 4096, startupTimeoutMs: 60_000 });
  children.add(() => process.kill(azurite.pid, "SIGKILL"));
  pinService(azurite.pid);
  // Azurite's stdin is not ours to watch, so a tiny watchdog kills it if this process is SIGKILLed.
  const watchdog = spawn(
    process.execPath,
    ["-e", `process.stdin.on("end",()=>{try{process.kill(${azurite.pid},"SIGKILL")}catch{}process.exit(0)});process.stdin.resume()`],
    { stdio: ["pipe", "ignore", "ignore"] },
  );
  children.add(() => watchdog.kill("SIGKILL"));
  return azurite;
}

// ---- helpers -----------------------------------------------------------------------------------

const MIN = 60_000;
/** The Defender API's largest page, and the app's default PULL_PAGE_SIZE when issue 14 set its targets. */
const MAX_PAGE = 10_000;
const DEFAULT_PAGE = 2_500;
/** The Defender API's documented call quota per tenant (the fake enforces it in the --quota-run). */
const API_QUOTA = { perMinute: 100, perHour: 1_500 };
const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }) : "n/a");
const mb = (bytes) => `${fmt(bytes / 1024 / 1024)} MB`;
const secs = (ms) => `${fmt(ms / 1000, 2)} s`;

async function pool(items, concurrency, work) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      try {
        results[i] = await work(items[i], i);
      } catch (error) {
        results[i] = { outcome: "threw", error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
  return results;
}

// process.memoryUsage.rss(), not memoryUsage(): the full call walks the heap's spaces and cost
// about 2 ms a sample on a backlog, which the app's CPU per alert then counted as its own.
function rssSampler() {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 50);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, process.memoryUsage.rss());
    },
  };
}

const gc = () => globalThis.gc?.();

/** CPU time (user + system, ms) of another process from /proc; undefined where there is no /proc. */
const CLK_TCK = 100;
function procCpuMs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}
const watchedPids = {};
/** Counts this process's requests to the current part's Azurite (scripts/bench-storageops.mjs); set with it. */
let storageCounter;
function cpuSnapshot() {
  const u = process.cpuUsage();
  const snap = { bench: (u.user + u.system) / 1000 };
  for (const [name, pid] of Object.entries(watchedPids)) snap[name] = procCpuMs(pid);
  return snap;
}
function cpuDelta(before, after) {
  const out = {};
  for (const k of Object.keys(after)) out[k] = after[k] === undefined || before[k] === undefined ? undefined : after[k] - before[k];
  return out;
}

// A shared, controllable clock for the app: real time plus an offset the warm cycles move.
let clockOffsetMs = 0;
const clock = () => Date.now() + clockOffsetMs;

function makeEnv(fakes, connectionString, extra = {}) {
  return {
    MSSP_CLIENT_ID: fakes.clientId,
    MSSP_CLIENT_SECRET: fakes.clientSecret,
    MSSP_TENANT_ID: fakes.msspTenantId,
    MSSP_PUBLIC_BASE_URL: fakes.publicBaseUrl,
    KEY_VAULT_URL: fakes.vaultUrl,
    AzureWebJobsStorage: connectionString,
    ENTRA_AUTHORITY_HOST: fakes.entraUrl,
    DEFENDER_API_BASE_URL: fakes.defenderUrl,
    GRAPH_API_BASE_URL: fakes.graphUrl,
    ALERTS_CONTAINER: "bench-alerts",
    MDE_PARTNER_COMPANY: "BenchMssp",
    MDE_PARTNER_PRODUCT: "Connector",
    LOCAL_DEV_CA_CERT_FILE: fakes.certFile,
    LOCAL_DEV_VAULT_TOKEN: fakes.vaultToken,
    PULL_SETTLE_SECONDS: "60",
    ...extra,
  };
}

class Control {
  constructor(fakes) {
    this.fakes = fakes;
    this.agent = new Agent({ connect: { ca: readFileSync(fakes.certFile, "utf8") }, connections: 64 });
  }
  async call(base, path, body) {
    const response = await fetch(`${base}${path}`, {
      method: body === undefined ? "GET" : "POST",
      dispatcher: this.agent,
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${path} answered ${response.status}: ${text.slice(0, 200)}`);
    return text ? JSON.parse(text) : undefined;
  }
  /** Moves the Defender fake's clock (its Date header and what it serves) with the app's. */
  clockOffset(ms) {
    return this.call(this.fakes.defenderUrl, "/_fake/clock-offset", { ms });
  }
  /** Seeds generated alerts in the fake of the tenant's source (Defender or Graph, same control route). */
  seed(tenantId, count, startMs, spacingMs, source = "mde") {
    return this.call(this.fakes[SOURCES[source].urlKey], "/_fake/seed", { tenantId, count, start: new Date(startMs).toISOString(), spacingMs });
  }
  get urls() {
    return [this.fakes.entraUrl, this.fakes.vaultUrl, this.fakes.defenderUrl, this.fakes.graphUrl];
  }
  async resetStats() {
    await Promise.all(this.urls.map((u) => this.call(u, "/_fake/reset-stats", {})));
  }
  async stats() {
    const [entra, vault, defender, graph] = await Promise.all(this.urls.map((u) => this.call(u, "/_fake/stats")));
    return { entra, vault, defender, graph };
  }
  /** The admin's browser at the fake Entra authorize endpoint: one hop, no redirect following. */
  async authorize(url) {
    const response = await fetch(url, { dispatcher: this.agent, redirect: "manual" });
    await response.text();
    return { status: response.status, location: response.headers.get("location") };
  }
  close() {
    return this.agent.close();
  }
}

/** Who the audit trail names for the benchmark's registrations. */
const BENCH_OPERATOR = { kind: "benchmark", id: "bench", name: "Benchmark" };

/** Registers a tenant and walks its consent link through the real flow, like the admin's browser. */
async function onboard(services, control, log, tenantId, displayName, source = "mde") {
  // The source decides the consent's scope (Defender's or Graph's) and what the pull reads.
  const view = await services.tenantAdmin.register({ tenantId, displayName, source }, BENCH_OPERATOR, log);
  const link = new URL(view.consentUrl);
  const query = { link: link.searchParams.get("link"), exp: link.searchParams.get("exp"), sig: link.searchParams.get("sig") };
  const start = await services.consent.start(tenantId, query, log);
  if (start.kind !== "redirect") throw new Error(`consent start for ${tenantId} answered a page (${start.page.status})`);
  const authorize = await control.authorize(start.location);
  if (authorize.status !== 302 || !authorize.location) throw new Error(`authorize for ${tenantId} answered ${authorize.status}`);
  // The admin's browser sends back the cookie the start set: the sign-in is bound to it.
  const cookie = (start.cookies ?? []).map((c) => `${c.name}=${c.value}`).join("; ");
  const done = await services.consent.callback(new URL(authorize.location).searchParams, cookie, log);
  if (done.kind !== "page" || done.page.status !== 200) throw new Error(`consent callback for ${tenantId} answered ${done.page?.status}`);
}

function summarise(outcomes) {
  let pulled = 0;
  let alerts = 0;
  let incomplete = 0;
  const other = {};
  for (const o of outcomes) {
    if (o?.outcome === "pulled") {
      pulled++;
      alerts += o.alerts;
      if (!o.complete) incomplete++;
    } else {
      const key = o?.outcome === "failed" ? `failed:${o.code}` : o?.outcome === "threw" ? `threw:${o.error?.message ?? o.error}` : String(o?.outcome);
      other[key] = (other[key] ?? 0) + 1;
    }
  }
  return { pulled, alerts, incomplete, other };
}

/** CPU profile of this process between start() and stop(file), through the inspector. */
async function profiler(dir) {
  if (!dir) return { stop: async () => undefined };
  const { Session } = await import("node:inspector/promises");
  const { mkdirSync, writeFileSync } = await import("node:fs");
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 200 });
  await session.post("Profiler.start");
  return {
    async stop(name) {
      const { profile } = await session.post("Profiler.stop");
      session.disconnect();
      mkdirSync(dir, { recursive: true });
      const file = join(dir, name);
      writeFileSync(file, JSON.stringify(profile));
      return file;
    },
  };
}

/** One cycle over `tenants` at `concurrency`, with the fakes' operation counts. */
async function runCycle({ services, control, log, tenants, concurrency, profileDir, profileName, source = "mde" }) {
  const statsBefore = { ...services.accessTokens.stats };
  await control.resetStats();
  gc();
  const sampler = rssSampler();
  const prof = await profiler(profileDir);
  const opsBefore = storageCounter?.snapshot();
  const cpuBefore = cpuSnapshot();
  const t0 = performance.now();
  const outcomes = await pool(tenants, concurrency, (tenantId) => services.tenantPull.run(tenantId, log));
  const wallMs = performance.now() - t0;
  const cpu = cpuDelta(cpuBefore, cpuSnapshot());
  const storage = storageCounter ? storageOpsDelta(opsBefore, storageCounter.snapshot()) : undefined;
  const profileFile = await prof.stop(profileName ?? "bench-cycle.cpuprofile");
  const peakRss = sampler.stop();
  const fake = await control.stats();
  const s = services.accessTokens.stats;
  return {
    wallMs,
    peakRss,
    cpu,
    storage,
    profileFile,
    ...summarise(outcomes),
    tenants: tenants.length,
    kvGet: fake.vault.get,
    kvSet: fake.vault.set + fake.vault.update,
    tokenCalls: fake.entra.tokenRequests.refresh_token + fake.entra.tokenRequests.authorization_code,
    apiRequests: fake[SOURCES[source].statsKey].requests,
    app: {
      memoryHits: s.memoryHits - statsBefore.memoryHits,
      vaultReads: s.vaultReads - statsBefore.vaultReads,
      vaultWrites: s.vaultWrites - statsBefore.vaultWrites,
      tokenRequests: s.tokenRequests - statsBefore.tokenRequests,
    },
  };
}

function cpuLine(cpu, tenants) {
  return Object.entries(cpu)
    .filter(([, ms]) => ms !== undefined)
    .map(([name, ms]) => `${name} ${secs(ms)} (${fmt(ms / tenants, 1)} ms/tenant)`)
    .join(", ");
}

const fails = [];
function check(label, ok, detail, previous) {
  const line = `${ok ? "PASS" : "FAIL"}  ${label}: ${detail}${previous === undefined ? "" : `   (previous: ${previous})`}`;
  if (!ok) fails.push(line);
  return line;
}

/**
 * Earlier figures, printed beside today's so a change shows its cost. Per source:
 * - mde: the run recorded before the current pull design (README, $skip paging with overlapping
 *   pages, 2,500-alert pages).
 * - graph: the first run of the Graph part (docs/performance.md#graph-source).
 * - coldStart: issue 14's figures, before the bundle existed (docs/performance.md#cold-start).
 */
const PREVIOUS = {
  coldStart: {
    bundle: "181–194 ms (a trial esbuild bundle, issue 14, quiet machine); 176 ms on 2026-11-30 (load 2)",
    plain: "≈510 ms, 674 modules (issue 14, quiet machine)",
    telemetry: "231 ms (load 2, 2026-11-30, exporters built at first export); 416–580 ms before that change, on a loaded machine",
  },
  mde: {
    coldCycle: "11.7 s",
    speedUp: "11.1×",
    backlogRate: "22,453 alerts/s",
    backlogRss: "282 MB",
    backlogCalls: "47 requests, 0.00047 per alert (2026-11-30 evening; 54 before the fuller sub-windows)",
    coldCalls: "1.00 per tenant (0.050 per alert)",
    steadyKvReads: { "warm process": "0.083", "fresh process": "1.000" },
    steadyKvWrites: { "warm process": "0", "fresh process": "0" },
    steadyTokenCalls: { "warm process": "0.083", "fresh process": "0.083" },
    // Issue 14's figures (measured before its changes).
    backlogRssByPage: { default: "259–307 MB at 2,500 (issue 14)", max: "365–423 MB at 10,000 (issue 14)" },
    backlogCpu: { default: "43–45 µs (4.3–4.5 s per 100,000 alerts, docs/performance.md)", max: "(new)" },
    tenantCycleCpu: "6.48 ms before the claim at open (ce37b9e, same machine, 2026-12-02); issue 14: 4.3–6.1 ms",
    tenantCycleStorage: "6.30 before the claim at open (2.09 reads + 3.08 writes + 0.13 queue + 1.00 blob, ce37b9e); issue 14: 1 table read + 2 writes + 1 queue message",
    fleet: "≈ 46,300 before the claim at open (ce37b9e); issue 14: ≈ 49,000–70,000 (from 4.3–6.1 ms)",
    sustainedRate: "3,444 alerts/s at 1.14 requests per page (500,000-alert quota run at a budget of 1,400 calls/h, 2026-12-02; issue 14: ≈ 953 at 2,500-alert pages)",
  },
  graph: {
    coldCycle: "22.67 s (2026-11-30 evening, load 2.3–2.7)",
    coldCalls: "1.00 per tenant (0.050 per alert)",
    backlogRate: "3,458 alerts/s (2026-11-30 evening, load 2.3–2.7)",
    backlogRss: "247 MB",
    backlogCalls: "36 requests for 20,000 alerts = 180 per 100,000 (2026-11-30 evening; 66–67 before the fuller sub-windows)",
  },
};

// ---- backlog scenario (runs in a forked child so its RSS is its own) ---------------------------

async function backlogScenario(opts) {
  const shared = JSON.parse(process.env.BENCH_SHARED ?? "{}");
  const app = loadApp();
  const log = app.silentLogger;
  const source = opts.backlogSource;
  // A per-sink run (--backlog-sink) chooses its sinks by app settings, like a deployment.
  const run = opts.backlogSink;
  const env = makeEnv(shared.fakes, shared.connectionString, {
    ALERTS_CONTAINER: "bench-backlog",
    ...(opts.backlogPageSize === undefined ? {} : { PULL_PAGE_SIZE: String(opts.backlogPageSize) }),
    ...(run ? sinkRunEnv(run, shared.sinkFakes ?? {}) : {}),
  });
  const config = app.loadConfig(env);
  let services;
  let sinkStats;
  let pullStarted = performance.now();
  let sinkTimes;
  let closeSinks = async () => undefined;
  if (!run) {
    // The same blob sink createServices builds, wrapped only to time its writes.
    // With the services' buffer pool, as createServices gives its own blob sink.
    const buffers = app.largeBufferPool();
    const blobSink = new app.BlobAlertSink(
      app.openContainer(config.storage, config.pull.alertsContainer, () => {
        throw new Error("no Azure credential in the benchmark");
      }),
      undefined,
      buffers,
    );
    sinkStats = { writes: 0, ms: 0, alerts: 0, timeline: [] };
    const sink = {
      async write(key, alerts) {
        const t = performance.now();
        try {
          return await blobSink.write(key, alerts);
        } finally {
          sinkStats.writes++;
          sinkStats.alerts += alerts.length;
          sinkStats.ms += performance.now() - t;
          // [ms since the pull started, alerts delivered so far]: the quota run's sustained rate is read from it.
          sinkStats.timeline.push([performance.now() - pullStarted, sinkStats.alerts]);
        }
      },
    };
    services = app.createServices(config, { clock, sink, buffers });
  } else {
    // The sinks createServices builds from ALERT_SINKS and their settings; only their writes are timed.
    sinkTimes = timeSinkWrites();
    // The managed identity the app would use, standing in with the token the fakes accept.
    const credential = fakeManagedIdentity(shared.sinkToken);
    const overrides = { clock, credential };
    if (SINK_RUNS[run].sinks.includes("eventhubs")) {
      const hub = eventHubsSinks(config, credential, shared.sinkFakes.eventhubs.endpoint);
      overrides.sinks = hub.sinks;
      closeSinks = hub.close;
    }
    services = app.createServices(config, overrides);
  }
  Object.assign(watchedPids, shared.pids);
  const control = new Control(shared.fakes);
  const tenantId = randomUUID();
  await onboard(services, control, log, tenantId, "Backlog Ltd", source);
  // The whole backlog inside the first window (the last 3 hours, newest ~13 min ago).
  const spacingMs = Math.max(1, Math.floor((170 * MIN) / Math.max(1, opts.backlog)));
  const seedStart = Date.now() - 3 * 60 * MIN;
  let remaining = opts.backlog;
  const seeds = [];
  for (let at = seedStart; remaining > 0; ) {
    const count = Math.min(remaining, 50_000);
    await control.seed(tenantId, count, at, spacingMs, source);
    seeds.push({ count, start: new Date(at).toISOString(), spacingMs });
    at += count * spacingMs;
    remaining -= count;
  }
  await control.resetStats();
  let spentHour;
  if (opts.backlogQuota) {
    // The tenant has pulled at the app's budget for the past hour (a long backlog's earlier runs):
    // its pull state holds those calls, as each run leaves them for the next, and the fake counts
    // them against the API's documented quota, enforced with 429 + Retry-After from here on. So
    // the run meets the hourly limit at once instead of after 15 minutes.
    spentHour = pastHourAtBudget(clock(), new app.RateBudget({ clock }).perHour);
    const lease = await services.pullState.acquire(tenantId, "bench-quota-run", MIN, (state) => {
      state.apiCalls = spentHour;
    });
    if (!lease) throw new Error("quota run: the tenant's pull state is leased by another pull");
    await lease.release();
    await control.call(shared.fakes.defenderUrl, "/_fake/quota", { tenantId, ...API_QUOTA, admitted: spentHour });
  }
  gc();
  const rssBefore = process.memoryUsage().rss;
  const sampler = rssSampler();
  const cpuBefore = cpuSnapshot();
  const t0 = performance.now();
  pullStarted = t0;
  const outcome = await services.tenantPull.run(tenantId, log);
  const wallMs = performance.now() - t0;
  const cpu = cpuDelta(cpuBefore, cpuSnapshot());
  const peakRss = sampler.stop();
  const maxRss = process.resourceUsage().maxRSS * 1024;
  const fake = await control.stats();
  await control.close();
  // Each sink's own progress (several sinks): parked pages would mean one was down during the run.
  let sinkHealth;
  if (SINK_RUNS[run]?.sinks.length > 1) {
    const { pullHealthOf } = require(join(root, "dist/shared/pull/health.js"));
    sinkHealth = pullHealthOf(await services.pullState.read(tenantId), clock).sinks ?? undefined;
  }
  await closeSinks().catch(() => undefined);
  return {
    outcome,
    wallMs,
    rssBefore,
    peakRss,
    maxRss,
    apiRequests: fake[SOURCES[source].statsKey].requests,
    apiByStatus: fake[SOURCES[source].statsKey].byStatus,
    quota: opts.backlogQuota ? API_QUOTA : undefined,
    spentCalls: spentHour?.length,
    // The `$top` the pull asks for: PULL_PAGE_SIZE, at most what the source serves (Graph: 1,000).
    pageSize: source === "graph" ? Math.min(config.pull.pageSize, app.GRAPH_MAX_TOP) : config.pull.pageSize,
    source,
    cpu,
    sink: sinkStats,
    sinkTimes,
    sinkHealth,
    tenantId,
    seeds,
    container: config.pull.alertsContainer,
  };
}

/** `calls` call times (epoch ms) spread evenly over the hour before `now`, oldest first. */
function pastHourAtBudget(now, calls) {
  const step = (60 * MIN) / calls;
  return Array.from({ length: calls }, (_, i) => Math.floor(now - 60 * MIN + (i + 0.5) * step));
}

/** The backlog scenario in a child of its own: `opts.backlog` alerts from the Defender fake, or for `source` "graph" `opts.graphBacklog` from Graph. */
function runBacklogChild(opts, shared, run, extraEnv = {}, source = "mde") {
  return new Promise((resolve, reject) => {
    const size = source === "graph" ? opts.graphBacklog : opts.backlog;
    const args = ["--scenario", "backlog", "--backlog", String(size), "--backlog-source", source];
    if (opts.backlogPageSize !== undefined) args.push("--backlog-page-size", String(opts.backlogPageSize));
    if (run) args.push("--backlog-sink", run);
    if (opts.backlogQuota) args.push("--backlog-quota");
    const child = fork(SELF, args, {
      env: { ...process.env, ...deployedAllocatorEnv(), ...extraEnv, BENCH_SHARED: JSON.stringify(shared) },
      execArgv: ["--expose-gc", ...profArgs(opts.cpuProfDir)],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const kill = () => child.kill("SIGKILL");
    children.add(kill);
    let result;
    child.on("message", (m) => {
      result = m;
    });
    child.once("error", reject);
    child.once("exit", (code) => {
      children.delete(kill);
      if (result?.error) reject(new Error(`backlog child: ${result.error}`));
      else if (result) resolve(result.value);
      else reject(new Error(`backlog child exited with code ${code} and no result`));
    });
  });
}

// ---- backlog per sink --------------------------------------------------------------------------

/**
 * Targets of the per-sink backlog runs (docs/performance.md#backlog-per-sink says why these). The
 * blob run keeps the backlog section's own targets.
 */
const SINK_TARGETS = {
  alertsPerSec: { sentinel: 5_000, splunk: 5_000, "splunk-ack": 5_000, eventhubs: 5_000, multi: 5_000 },
  rssMb: 300,
};

/**
 * The backlog once per run in opts.sinkRuns, each in a child of its own against fresh fakes (the
 * HTTPS fakes, and each sink fake in a process of its own), then each sink's deliveries counted
 * from its fake (or Azurite) against the ids the Defender fake was seeded with. `blobRun`: the
 * backlog section's result, reused as the blob row instead of running it again.
 */
async function runSinkBacklogs(opts, azurite, blobRun, say) {
  const runs = [];
  const sinkTls = await sinkFakeCertificate();
  for (const run of opts.sinkRuns) {
    const t0 = performance.now();
    const sinks = SINK_RUNS[run].sinks;
    const result = { run, sinks };
    runs.push(result);
    let fakes;
    const sinkFakes = {};
    let ca;
    const phases = {};
    try {
      let r;
      if (run === "blob" && blobRun) {
        r = { ...blobRun, reused: true };
      } else {
        await gc();
        fakes = await startFakes(opts.latencyMs);
        const token = `bench-mi-${randomUUID()}`;
        for (const kind of SINK_RUNS[run].fakes) {
          const fake = await startSinkFake(kind, token, sinkTls);
          pinService(fake.pid);
          children.add(fake.kill);
          sinkFakes[kind] = fake;
        }
        ca = combinedCaFile(fakes.certFile, sinkTls.certPem);
        children.add(ca.cleanup);
        const pids = { fakes: fakes.pid, azurite: azurite.pid };
        for (const [kind, fake] of Object.entries(sinkFakes)) pids[`${kind} fake`] = fake.pid;
        // Event Hubs: the SDK has no option to trust a CA, so that child (and only it) skips the check.
        const tlsEnv = sinks.includes("eventhubs") ? { NODE_TLS_REJECT_UNAUTHORIZED: "0" } : {};
        phases.fakes = performance.now() - t0;
        r = await runBacklogChild(
          opts,
          { fakes: { ...fakes, certFile: ca.file }, connectionString: azurite.connectionString, pids, sinkToken: token, sinkFakes },
          run === "blob" ? undefined : run,
          tlsEnv,
        );
        r.tlsInsecure = Object.keys(tlsEnv).length > 0;
        phases.child = performance.now() - t0 - phases.fakes;
      }
      const tallyStart = performance.now();
      Object.assign(result, r);
      const o = r.outcome;
      result.alertsPerSec = (o.alerts ?? 0) / (r.wallMs / 1000);
      result.pulledOk = o.outcome === "pulled" && o.complete && o.alerts === opts.backlog;
      const expected = expectedIds(r.tenantId, r.seeds);
      result.tallies = {};
      for (const sink of sinks) {
        const fake = sinkFakes[sink] ?? (sink === "splunk" ? sinkFakes["splunk-ack"] : undefined);
        const { ids, ...rest } = sink === "blob" ? await blobIds(azurite.connectionString, r.container, r.tenantId) : await fake.tally(r.tenantId);
        result.tallies[sink] = { ...rest, ...exactlyOnce(expected, ids) };
      }
      result.ok = result.pulledOk && Object.values(result.tallies).every((t) => t.ok);
      phases.tally = performance.now() - tallyStart;
    } catch (error) {
      result.error = error?.message ?? String(error);
      result.ok = false;
    } finally {
      for (const fake of Object.values(sinkFakes)) await fake.stop();
      await fakes?.stop();
      ca?.cleanup();
    }
    const split = Object.entries(phases).map(([k, ms]) => `${k} ${secs(ms)}`).join(", ");
    say(`  per-sink backlog ${runLabel(run)}: ${result.error ? `failed (${result.error.split("\n")[0]})` : `pull ${secs(result.wallMs)}`}${result.reused ? " (the backlog section's run)" : ""}; ` +
      `${secs(performance.now() - t0)} in all (${split}${phases.child ? "; the child's includes consent and seeding" : ""})`);
  }
  return runs;
}

function reportSinkBacklogs(say, opts, runs) {
  const pageSize = runs.find((r) => r.pageSize)?.pageSize;
  say(`── backlog per sink: 1 tenant, ${fmt(opts.backlog)} alerts in its first window, page size ${fmt(pageSize)}, each run a child with fresh fakes ──`);
  say("  sinks (ALERT_SINKS)    wall       alerts/s   peak RSS  maxRSS   Defender req   each alert exactly once (from the sink's fake)");
  for (const r of runs) {
    if (r.error) {
      say(`  ${runLabel(r.run).padEnd(21)}  FAILED: ${r.error.split("\n")[0]}`);
      continue;
    }
    const once = Object.entries(r.tallies)
      .map(([sink, t]) => `${sink} ${t.ok ? "yes" : "NO"} (${fmt(t.distinct)}/${fmt(t.expected)}${t.duplicates ? `, ${fmt(t.duplicates)} twice` : ""}${t.missing ? `, ${fmt(t.missing)} missing` : ""}${t.unexpected ? `, ${fmt(t.unexpected)} unexpected` : ""})`)
      .join(", ");
    say(`  ${runLabel(r.run).padEnd(21)}  ${secs(r.wallMs).padStart(8)}  ${fmt(r.alertsPerSec).padStart(9)}  ${mb(r.peakRss).padStart(8)}  ${mb(r.maxRss).padStart(7)}  ${String(r.apiRequests).padStart(12)}   ${once}`);
  }
  for (const r of runs) {
    if (r.error) continue;
    const label = runLabel(r.run);
    if (r.reused) say(`  ${label}: the backlog section's run above (same scenario), counted again from Azurite`);
    const times = r.sinkTimes
      ? Object.entries(r.sinkTimes).filter(([, s]) => s.writes > 0)
      : [["blob", r.sink]];
    const tally = (sink) => {
      const t = r.tallies[sink];
      if (!t) return "";
      const bits = [`${fmt(t.calls)} ${sink === "blob" ? "blobs" : sink === "eventhubs" ? "transfers" : "calls"}`];
      if (t.failedCalls) bits.push(`${fmt(t.failedCalls)} refused`);
      if (t.bytes) bits.push(`${mb(t.bytes)} sent${sink === "sentinel" ? " gzipped" : ""}`);
      if (t.acksRead) bits.push(`${fmt(t.acksRead)} acks`);
      return ` [${bits.join(", ")}]`;
    };
    say(`  ${label}: sink writes ${times.map(([sink, s]) => `${sink} ${s.writes} × ${fmt(s.ms / Math.max(1, s.writes))} ms = ${secs(s.ms)}${tally(sink)}`).join("; ")}`);
    say(`  ${" ".repeat(label.length)}  CPU ${cpuLine(r.cpu, 1).replace(/ \([^)]*\)/g, "")}; RSS before the pull ${mb(r.rssBefore)}`);
    if (r.sinkHealth) say(`  ${" ".repeat(label.length)}  parked pages after the run: ${Object.entries(r.sinkHealth).map(([s, h]) => `${s} ${h.parkedPages}`).join(", ")}`);
    if (r.tlsInsecure) say(`  ${label}: this run's child ran with NODE_TLS_REJECT_UNAUTHORIZED=0 (the fake hub's certificate is self-signed and the Event Hubs SDK takes no CA); no other process did`);
    if (!r.pulledOk) say(`  !!!!! FAIL correctness (${label}): outcome ${JSON.stringify(r.outcome)}`);
  }
}

function sinkBacklogChecks(opts, runs) {
  const lines = [];
  for (const r of runs) {
    const label = runLabel(r.run);
    if (r.error) {
      lines.push(check(`backlog to ${label}`, false, `run failed: ${r.error.split("\n")[0]}`));
      continue;
    }
    if (r.run === "blob") {
      // The blob row has the backlog section's targets (and its checks, when it is that run).
      if (!r.reused) {
        lines.push(check(`backlog to blob ≥ ${fmt(SOURCES.mde.backlogAlertsPerSec)} alerts/s`, r.pulledOk && r.alertsPerSec >= SOURCES.mde.backlogAlertsPerSec, `${fmt(r.alertsPerSec)} alerts/s`, PREVIOUS.mde.backlogRate));
        lines.push(check(`backlog to blob peak RSS < 300 MB`, r.maxRss < 300 * 1024 * 1024, `maxRSS ${mb(r.maxRss)}`, PREVIOUS.mde.backlogRss));
      }
    } else {
      const target = SINK_TARGETS.alertsPerSec[r.run];
      lines.push(check(`backlog to ${label} ≥ ${fmt(target)} alerts/s`, r.pulledOk && r.alertsPerSec >= target, `${fmt(r.alertsPerSec)} alerts/s (${secs(r.wallMs)})`, "(new)"));
      lines.push(check(`backlog to ${label} peak RSS < ${SINK_TARGETS.rssMb} MB`, r.maxRss < SINK_TARGETS.rssMb * 1024 * 1024, `maxRSS ${mb(r.maxRss)}`, "(new)"));
      const perAlert = r.apiRequests / Math.max(1, opts.backlog);
      lines.push(check(`backlog to ${label} Defender requests ≤ 2× one per page`, perAlert <= 2 / r.pageSize, `${r.apiRequests} requests`, "(new)"));
    }
    const bad = Object.entries(r.tallies).filter(([, t]) => !t.ok);
    lines.push(check(`backlog to ${label} correctness (every alert exactly once${r.sinks.length > 1 ? " to each sink" : ""}, counted by the sink's fake)`, r.pulledOk && bad.length === 0,
      bad.length ? bad.map(([s, t]) => `${s}: ${fmt(t.distinct)}/${fmt(t.expected)} distinct, ${fmt(t.duplicates)} twice, ${fmt(t.missing)} missing, ${fmt(t.unexpected)} unexpected`).join("; ")
        : `${Object.keys(r.tallies).join(", ")}: ${fmt(opts.backlog)} of ${fmt(opts.backlog)}, none twice`));
  }
  return lines;
}

/** `--sinks`: only the per-sink backlog section (Azurite here; each run starts its own fakes). */
async function sinksOnly(opts, app, say, started) {
  say(`bench --sinks: backlog per sink (${opts.sinkRuns.map(runLabel).join(" | ")}), ${fmt(opts.backlog)} alerts, Defender latency ${opts.latencyMs} ms, ` +
    `Node ${process.version}, ${(await import("node:os")).cpus().length} CPUs`);
  const azurite = await startAzurite(app.azurite);
  watchedPids.azurite = azurite.pid;
  const runs = await runSinkBacklogs(opts, azurite, undefined, say);
  await azurite.stop();
  say("");
  reportSinkBacklogs(say, opts, runs);
  say("── targets ──────────────────────────────────────────────────────────────────────────────────");
  for (const l of sinkBacklogChecks(opts, runs)) say(`  ${l}`);
  say("");
  sayVerdict(say, started);
}

/** `--coldstart`: only the cold-start part. */
function coldStartOnly(say, coldStart, started) {
  say("");
  reportColdStart(say, coldStart, fmt);
  say("── targets ──────────────────────────────────────────────────────────────────────────────────");
  for (const l of coldStartChecks(coldStart, check, PREVIOUS.coldStart, fmt)) say(`  ${l}`);
  say("");
  sayVerdict(say, started);
}

/** The closing lines of a bench run: the missed targets, or that all were met, and the run's time. */
function sayVerdict(say, started) {
  if (fails.length) {
    say(`!!!!! ${fails.length} TARGET(S) MISSED !!!!!`);
    for (const f of fails) say(`!!!!! ${f}`);
  } else {
    say("All targets met.");
  }
  say(`bench finished in ${secs(performance.now() - started)}`);
}

// ---- the cold cycle and the backlog, for either source --------------------------------------------

/** Setup (not timed in the figures): registers and consents every tenant for `source`, seeds its alerts. Returns the ms it took. */
async function setupTenants({ app, config, control, log, opts, ids, source }) {
  const services = app.createServices(config, { clock });
  const t = performance.now();
  const results = await pool(ids, opts.setupConcurrency, (id, i) => onboard(services, control, log, id, `Customer ${i}`, source).then(() => ({ outcome: "ok" })));
  const bad = results.filter((r) => r.outcome !== "ok");
  if (bad.length) throw new Error(`${bad.length} consents failed, first: ${bad[0].error?.stack ?? bad[0].error}`);
  const seedStart = Date.now() - 2 * 60 * MIN;
  const seedSpacing = Math.max(1, Math.floor((90 * MIN) / Math.max(1, opts.alertsPerTenant)));
  if (opts.alertsPerTenant > 0) {
    await pool(ids, opts.setupConcurrency, (id) => control.seed(id, opts.alertsPerTenant, seedStart, seedSpacing, source));
  }
  return performance.now() - t;
}

/** Cycle 1, cold: a fresh services instance, nothing cached anywhere; one pull per tenant. */
async function coldCycle({ app, config, control, log, opts, tenants, concurrency, source, profileName }) {
  const services = app.createServices(config, { clock });
  const cold = await runCycle({ services, control, log, tenants, concurrency, source, profileDir: opts.cpuProfDir, profileName });
  cold.services = services;
  cold.expected = tenants.length * opts.alertsPerTenant;
  cold.ok = cold.pulled === tenants.length && cold.alerts === cold.expected;
  return cold;
}

function reportCold(say, src, cold, concurrency) {
  const n = cold.tenants;
  say(`── ${src.heading}cycle 1 (cold: empty caches, every tenant needs Key Vault + token endpoint) ──────────────`);
  say(`  wall time          ${secs(cold.wallMs)}   (${n} tenants${src.name === "mde" ? "" : ` registered with source ${src.name}`}, concurrency ${concurrency})`);
  say(`  throughput         ${fmt(n / (cold.wallMs / 1000), 1)} tenants/s   ${fmt(cold.alerts / (cold.wallMs / 1000))} alerts/s`);
  say(`  alerts delivered   ${fmt(cold.alerts)} / ${fmt(cold.expected)}   outcomes: ${cold.pulled} pulled${cold.incomplete ? `, ${cold.incomplete} incomplete` : ""}${Object.keys(cold.other).length ? `, ${JSON.stringify(cold.other)}` : ""}`);
  say(`  peak RSS (bench)   ${mb(cold.peakRss)} sampled every 50 ms; process maxRSS ${mb(process.resourceUsage().maxRSS * 1024)} (includes setup)`);
  say(`  CPU time           ${cpuLine(cold.cpu, n)}`);
  if (cold.profileFile) say(`  CPU profile        ${cold.profileFile}`);
  say(`  per tenant         Key Vault reads ${fmt(cold.kvGet / n, 2)}, writes ${fmt(cold.kvSet / n, 2)}, token endpoint calls ${fmt(cold.tokenCalls / n, 2)}, ${src.api} requests ${fmt(cold.apiRequests / n, 2)}`);
  if (!cold.ok) say(`  !!!!! FAIL correctness: expected ${n} pulled and ${cold.expected} alerts, got ${cold.pulled} pulled and ${cold.alerts} alerts ${JSON.stringify(cold.other)}`);
}

function coldChecks(src, cold, opts) {
  const n = cold.tenants;
  const p = src.prefix;
  const previous = PREVIOUS[src.name];
  const headline = n === 1000 && opts.alertsPerTenant === 20 && opts.latencyMs === 100;
  return [
    check(`${p}cycle of ${n} tenants × ${opts.alertsPerTenant} alerts at ${opts.latencyMs} ms${headline ? "" : " (non-default size)"} < 20 s`, cold.wallMs < 20_000, secs(cold.wallMs), previous.coldCycle),
    // Reading by time sub-windows costs requests where a window holds more than a page; a
    // tenant's budget is 90 (Graph: 120) a minute, so more than ~2 per cycle would matter.
    check(`${p}cycle ${src.requests} ≤ 2 per tenant`, cold.apiRequests / n <= 2,
      `${fmt(cold.apiRequests / n, 2)} per tenant (${fmt(cold.apiRequests / Math.max(1, cold.alerts), 3)} per alert)`, previous.coldCalls),
    check(`${p}cycle correctness (all pulled, all alerts delivered)`, cold.ok, `${cold.pulled}/${n} pulled, ${fmt(cold.alerts)}/${fmt(cold.expected)} alerts`),
  ];
}

function reportBacklog(say, src, backlog, opts, app) {
  const o = backlog.outcome;
  const size = backlog.size;
  backlog.alertsPerSec = (o.alerts ?? 0) / (backlog.wallMs / 1000);
  backlog.ok = o.outcome === "pulled" && o.complete && o.alerts === size;
  const pageNote = src.name === "graph"
    ? `$top: PULL_PAGE_SIZE${opts.backlogPageSize === undefined ? " (the app default)" : ""}, at most Graph's ${fmt(app.GRAPH_MAX_TOP)}`
    : `PULL_PAGE_SIZE${opts.backlogPageSize === undefined ? ", the app default" : ""}`;
  say(`── ${src.heading}backlog: 1 tenant, ${fmt(size)} alerts in its first window, page size ${fmt(backlog.pageSize)} (${pageNote}) ──`);
  say(`  wall time          ${secs(backlog.wallMs)}   ${fmt(backlog.alertsPerSec)} alerts/s   ${backlog.apiRequests} ${src.api} requests`);
  say(`  peak RSS (child)   ${mb(backlog.peakRss)} sampled during the pull (${mb(backlog.rssBefore)} before it); process maxRSS ${mb(backlog.maxRss)}`);
  say(`  time split         ${secs(backlog.sink.ms)} in ${backlog.sink.writes} blob sink writes (${fmt(backlog.sink.ms / Math.max(1, backlog.sink.writes))} ms each), ${secs(backlog.wallMs - backlog.sink.ms)} reading pages from ${src.api} (${opts.latencyMs} ms latency each) and the rest`);
  // What the service lets a tenant's backlog move at over minutes, and what the app's own budget does at this request rate.
  const perAlert = backlog.apiRequests / Math.max(1, size);
  const budget = src.budgetPerMinute(app);
  say(`  sustained          ${src.api} allows ≤ ${fmt((src.quotaPerMinute * backlog.pageSize) / 60)} alerts/s per tenant (${src.quotaPerMinute} requests/min × ${fmt(backlog.pageSize)}-alert pages); ` +
    `at ${fmt(perAlert * backlog.pageSize, 2)} requests per page the app's budget (${budget}/min) reads ≈ ${fmt(budget / 60 / Math.max(perAlert, 1e-9))} alerts/s over minutes`);
  say(`  CPU time           ${cpuLine(backlog.cpu, 1).replace(/ \([^)]*\)/g, "")}`);
  if (src.name === "mde") say(`  app CPU per alert  ${fmt(appCpuUsPerAlert(backlog), 1)} µs (the child's own CPU ÷ alerts delivered); ${fmt(perAlert, 5)} ${src.api} requests per alert`);
  say(`  outcome            ${JSON.stringify(o)}`);
  if (!backlog.ok) say(`  !!!!! FAIL correctness: expected a complete pull of ${size} alerts`);
}

/** The backlog child's own CPU (user + system) per alert delivered, in µs. */
function appCpuUsPerAlert(run) {
  return (run.cpu.bench * 1000) / Math.max(1, run.outcome.alerts ?? 0);
}

/**
 * Issue 14's backlog targets for the Defender source, per page size: peak RSS under 150 MB at the
 * 2,500-alert pages and under 200 MB at 10,000, app CPU under 15 µs per alert at both.
 */
const DEFENDER_BACKLOG_TARGETS = { rssMb: (pageSize) => (pageSize >= MAX_PAGE ? 200 : 150), cpuUsPerAlert: 15 };

/** Issue 14's per-tenant-cycle targets: app CPU under 3 ms (so ≥ 100,000 tenants per core every 5 min), fewer storage operations than its 4. */
const TENANT_CYCLE_TARGETS = { cpuMs: 3, storageOps: 4 };

/**
 * The sustained per-tenant rate under the API's quota, over an hour: the tenant's 1,500 calls an
 * hour at 10,000-alert pages allow 4,167 alerts/s; the target is within 10 % of that. An hour at
 * the quota (15,000,000 alerts) is not run here; without --quota-run (which measures it, see
 * quotaRunChecks) the figure is the app's hourly budget at the requests per alert of the
 * 10,000-page backlog, capped by that backlog's own rate.
 */
function sustainedRateCheck(run, app) {
  const limit = (API_QUOTA.perHour * run.pageSize) / 3600;
  const budget = new app.RateBudget({ clock: Date.now });
  const rate = Math.min(budgetRate(budget.perHour, 60 * MIN, run), run.alertsPerSec);
  const perPage = (run.apiRequests / Math.max(1, run.size)) * run.pageSize;
  return check(`sustained per-tenant rate at ${fmt(run.pageSize)}-alert pages within 10 % of the quota's ${fmt(limit)} alerts/s (computed; the quota run, left out here, measures it)`, rate >= 0.9 * limit,
    `${fmt(rate)} alerts/s = the app's ${fmt(budget.perHour)} calls/h at ${fmt(perPage, 2)} requests per page (backlog run), capped by the pipeline's ${fmt(run.alertsPerSec)}/s`,
    PREVIOUS.mde.sustainedRate);
}

/**
 * The quota run's checks: its rate, measured over the whole pull with the hour's quota already
 * binding, within 10 % of the hourly limit (1,500 calls × 10,000 alerts / 3,600 s = 4,167 alerts/s);
 * no 429 (the app's budget keeps under the quota) and every alert delivered.
 */
function quotaRunChecks(q) {
  const limit = (API_QUOTA.perHour * q.pageSize) / 3600;
  const throttled = q.apiByStatus?.["429"] ?? 0;
  const minutes = q.wallMs / MIN;
  return [
    check(`quota run: sustained per-tenant rate at ${fmt(q.pageSize)}-alert pages within 10 % of the quota's ${fmt(limit)} alerts/s (measured over ${fmt(minutes, 1)} min${minutes < 2 ? ", under the 2 wanted: raise --quota-backlog" : ""})`,
      q.ok && q.alertsPerSec >= 0.9 * limit && q.alertsPerSec <= 1.1 * limit,
      `${fmt(q.alertsPerSec)} alerts/s (${fmt((q.apiRequests / Math.max(1, q.size)) * q.pageSize, 2)} requests per page)`, PREVIOUS.mde.sustainedRate),
    check("quota run: the app's budget keeps it under the quota (no 429) and delivers every alert", q.ok && throttled === 0,
      `${throttled} requests answered 429; ${fmt(q.outcome.alerts ?? 0)}/${fmt(q.size)} alerts`, "(new)"),
  ];
}

function defenderBacklogChecks(backlog) {
  const src = SOURCES.mde;
  const previous = PREVIOUS.mde;
  const pages = `(${fmt(backlog.pageSize)}-alert pages)`;
  const atMax = backlog.pageSize >= MAX_PAGE;
  const known = atMax || backlog.pageSize === DEFAULT_PAGE;
  const perAlert = backlog.apiRequests / Math.max(1, backlog.size);
  const limit = src.backlogRequests(backlog.pageSize);
  const rssMb = DEFENDER_BACKLOG_TARGETS.rssMb(backlog.pageSize);
  const us = appCpuUsPerAlert(backlog);
  return [
    check(`backlog ${pages} ≥ ${fmt(src.backlogAlertsPerSec)} alerts/s`, backlog.ok && backlog.alertsPerSec >= src.backlogAlertsPerSec, `${fmt(backlog.alertsPerSec)} alerts/s`,
      atMax ? "(new)" : previous.backlogRate),
    check(`backlog ${pages} peak RSS < ${rssMb} MB`, backlog.maxRss < rssMb * 1024 * 1024, `maxRSS ${mb(backlog.maxRss)}`,
      known ? previous.backlogRssByPage[atMax ? "max" : "default"] : undefined),
    check(`backlog ${pages} app CPU < ${DEFENDER_BACKLOG_TARGETS.cpuUsPerAlert} µs per alert`, us < DEFENDER_BACKLOG_TARGETS.cpuUsPerAlert,
      `${fmt(us, 1)} µs (${secs(backlog.cpu.bench)} for ${fmt(backlog.outcome.alerts ?? 0)} alerts)`, known ? previous.backlogCpu[atMax ? "max" : "default"] : undefined),
    check(`backlog ${pages} ${src.requests} ${limit.label}`, perAlert <= limit.perAlert,
      `${backlog.apiRequests} requests, ${fmt(perAlert, 5)} per alert = ${fmt(perAlert * 100_000, 1)} per 100,000 (floor ${fmt(1 / backlog.pageSize, 5)} per alert)`,
      atMax ? "(new)" : previous.backlogCalls),
  ];
}

function backlogChecks(src, backlog) {
  const p = src.prefix;
  const previous = PREVIOUS[src.name];
  const perAlert = backlog.apiRequests / Math.max(1, backlog.size);
  // The floor is one request per full page; sub-window reads aim at 80 % of a page.
  const limit = src.backlogRequests(backlog.pageSize);
  return [
    check(`${p}backlog ≥ ${fmt(src.backlogAlertsPerSec)} alerts/s`, backlog.ok && backlog.alertsPerSec >= src.backlogAlertsPerSec, `${fmt(backlog.alertsPerSec)} alerts/s`, previous.backlogRate),
    check(`${p}backlog peak RSS < 300 MB`, backlog.maxRss < 300 * 1024 * 1024, `maxRSS ${mb(backlog.maxRss)}`, previous.backlogRss),
    check(`${p}backlog ${src.requests} ${limit.label}`, perAlert <= limit.perAlert,
      `${backlog.apiRequests} requests, ${fmt(perAlert, 5)} per alert = ${fmt(perAlert * 100_000, 1)} per 100,000 (floor ${fmt(1 / backlog.pageSize, 5)} per alert)`, previous.backlogCalls),
  ];
}

// ---- the Defender part: cold cycle, concurrency-1 baseline, steady state, backlog ----------------

async function defenderPart({ app, config, control, log, opts, say, concurrency, fakes, azurite }) {
  const baselineCount = opts.skipBaseline ? 0 : Math.min(opts.tenants, opts.baselineTenants);
  const tenants = Array.from({ length: opts.tenants }, () => randomUUID());
  const baselineTenants = Array.from({ length: baselineCount }, () => randomUUID());
  const setupMs = await setupTenants({ app, config, control, log, opts, ids: [...tenants, ...baselineTenants], source: "mde" });
  say(`setup: ${tenants.length + baselineTenants.length} tenants registered and consented, ${opts.alertsPerTenant} alerts each, in ${secs(setupMs)}`);

  const cold = await coldCycle({ app, config, control, log, opts, tenants, concurrency, source: "mde", profileName: "bench-cold-cycle.cpuprofile" });

  // Baseline: the same cold cycle at concurrency 1, on a sample of separate fresh tenants.
  let baseline;
  if (baselineCount > 0) {
    baseline = await runCycle({ services: app.createServices(config, { clock }), control, log, tenants: baselineTenants, concurrency: 1 });
    baseline.ok = baseline.pulled === baselineCount && baseline.alerts === baselineCount * opts.alertsPerTenant;
  }

  // Steady state: warm cycles, each 5 minutes later on the app's clock, with 1–2 new alerts per tenant.
  // Run on a sample of the tenants (the per-tenant counts do not depend on N) to keep the bench short.
  const steadyTenants = tenants.slice(0, Math.max(1, Math.min(tenants.length, opts.steadyTenants)));
  const warmModes = [];
  let idle;
  if (!opts.skipWarm && opts.warmCycles > 0) {
    for (const mode of ["warm process", "fresh process"]) {
      const cycles = [];
      for (let c = 0; c < opts.warmCycles; c++) {
        clockOffsetMs += 5 * MIN;
        // The service's clock moves too: windows end by its Date header.
        await control.clockOffset(clockOffsetMs);
        // Newer than every earlier window's end, older than this cycle's: exactly this window.
        const newest = clock() - config.pull.settleSeconds * 1000 - 4 * MIN;
        let expected = 0;
        await pool(steadyTenants, opts.setupConcurrency, (id, i) => {
          const n = 1 + ((i + c) % 2);
          expected += n;
          return control.seed(id, n, newest, 30_000);
        });
        const services = mode === "warm process" ? cold.services : app.createServices(config, { clock });
        // --cpu-prof-dir: the first warm cycle of the long-lived process too (warm.cpuprofile).
        const profile = mode === "warm process" && c === 0 ? { profileDir: opts.cpuProfDir, profileName: "warm.cpuprofile" } : {};
        const r = await runCycle({ services, control, log, tenants: steadyTenants, concurrency, ...profile });
        r.expected = expected;
        cycles.push(r);
      }
      const sum = (k) => cycles.reduce((a, r) => a + r[k], 0);
      const tenantCycles = steadyTenants.length * cycles.length;
      warmModes.push({
        mode,
        cycles: cycles.length,
        ok: cycles.every((r) => r.pulled === steadyTenants.length && r.alerts === r.expected),
        problems: cycles.flatMap((r, i) => (r.pulled === steadyTenants.length && r.alerts === r.expected ? [] : [`cycle ${i + 2}: pulled ${r.pulled}/${steadyTenants.length}, alerts ${r.alerts}/${r.expected} ${JSON.stringify(r.other)}`])),
        kvGet: sum("kvGet") / tenantCycles,
        kvSet: sum("kvSet") / tenantCycles,
        tokenCalls: sum("tokenCalls") / tenantCycles,
        meanWallMs: sum("wallMs") / cycles.length,
        maxWallMs: Math.max(...cycles.map((r) => r.wallMs)),
        alerts: sum("alerts"),
        perCycleTokenCalls: cycles.map((r) => r.tokenCalls),
        perCycleWall: cycles.map((r) => r.wallMs),
        cpu: Object.fromEntries(Object.keys(cycles[0].cpu).map((k) => [k, cycles.reduce((a, r) => a + (r.cpu[k] ?? NaN), 0)])),
        tenantCycles,
        // This process's CPU (the app's pulls; the fakes and Azurite are other processes) per tenant-cycle.
        appCpuMs: cycles.reduce((a, r) => a + r.cpu.bench, 0) / tenantCycles,
        storage: cycles[0].storage ? sumStorageOps(cycles.map((r) => r.storage)) : undefined,
      });
      if (mode === "warm process") {
        // One more cycle of the same process with nothing new for any tenant: what a quiet tenant costs.
        clockOffsetMs += 5 * MIN;
        await control.clockOffset(clockOffsetMs);
        idle = await runCycle({ services: cold.services, control, log, tenants: steadyTenants, concurrency });
        idle.ok = idle.pulled === steadyTenants.length && idle.alerts === 0;
        idle.appCpuMs = idle.cpu.bench / steadyTenants.length;
      }
    }
  }
  // The schedule's fan-out, once, as the timer runs it every cycle: one queue message per connected tenant.
  const fanOut = warmModes.length ? await measureFanOut(app, cold.services, log) : undefined;
  // Whatever comes next runs on the real clock again, and so does the service it reads.
  clockOffsetMs = 0;
  await control.clockOffset(0);

  // Backlog: one tenant, 100k alerts, in a child process of its own; then the same at the other
  // page size of issue 14's targets (10,000, the API's largest, or 2,500 if that is the first run's).
  let backlog;
  let backlogOther;
  let quotaRun;
  const shared = { fakes, connectionString: azurite.connectionString, pids: watchedPids };
  if (!opts.skipBacklog && opts.backlog > 0) {
    gc();
    backlog = await runBacklogChild(opts, shared);
    backlog.size = opts.backlog;
    if (!opts.skipBacklogOther) {
      gc();
      backlogOther = await runBacklogChild({ ...opts, backlogPageSize: backlog.pageSize >= MAX_PAGE ? DEFAULT_PAGE : MAX_PAGE }, shared);
      backlogOther.size = opts.backlog;
    }
  }
  if (opts.quotaRun) {
    gc();
    quotaRun = await runBacklogChild({ ...opts, backlog: opts.quotaBacklog, backlogPageSize: MAX_PAGE, backlogQuota: true }, shared);
    quotaRun.size = opts.quotaBacklog;
  }
  return { cold, baseline, steadyTenants, warmModes, idle, fanOut, backlog, backlogOther, quotaRun };
}

/** One schedulePulls fan-out (enqueueConnectedTenants) with the warm services: its CPU and storage requests. */
async function measureFanOut(app, services, log) {
  // The queue is created once per process: outside the count, as in every cycle after the first.
  await services.pullQueue();
  const opsBefore = storageCounter?.snapshot();
  const cpuBefore = cpuSnapshot();
  const t0 = performance.now();
  // As schedulePulls calls it (functions/pull.ts): quiet tenants share messages.
  const tenants = await app.enqueueConnectedTenants(
    {
      tenants: services.tenants,
      queue: services.pullQueue,
      now: clock,
      pullStates: () => services.pullState.readAll(),
      tenantsPerMessage: services.config.pull.tenantsPerMessage,
      pageSize: services.config.pull.pageSize,
    },
    log,
  );
  const wallMs = performance.now() - t0;
  const cpu = cpuDelta(cpuBefore, cpuSnapshot());
  const storage = storageCounter ? storageOpsDelta(opsBefore, storageCounter.snapshot()) : undefined;
  return { tenants, wallMs, cpu, storage, appCpuMs: cpu.bench / Math.max(1, tenants) };
}

function reportDefender(say, part, opts, concurrency, app) {
  const { cold, baseline, steadyTenants, warmModes, idle, fanOut, backlog, backlogOther, quotaRun } = part;
  const n = cold.tenants;
  reportCold(say, SOURCES.mde, cold, concurrency);
  if (baseline) {
    const baseTps = baseline.tenants / (baseline.wallMs / 1000);
    part.ratio = n / (cold.wallMs / 1000) / baseTps;
    say("── baseline: the same cold cycle at concurrency 1 ──────────────────────────────────────────");
    say(`  measured on a sample of ${baseline.tenants} separate fresh tenants (not all ${n}); ${n} tenants extrapolated by rate`);
    say(`  wall time          ${secs(baseline.wallMs)} for ${baseline.tenants} → ≈ ${secs((n / baseTps) * 1000)} for ${n}   (${fmt(baseTps, 2)} tenants/s, ${fmt(baseline.wallMs / baseline.tenants)} ms/tenant)`);
    say(`  speed-up           ${fmt(part.ratio, 1)}× (concurrency ${concurrency} vs 1, tenants/s)`);
    if (!baseline.ok) say(`  !!!!! FAIL correctness: baseline pulled ${baseline.pulled}/${baseline.tenants}, alerts ${baseline.alerts} ${JSON.stringify(baseline.other)}`);
  }
  if (warmModes.length) {
    const m = steadyTenants.length;
    say(`── steady state: ${opts.warmCycles} warm cycles per mode, clock +5 min per cycle, 1–2 new alerts per tenant ──`);
    say(`  measured on ${m === n ? `all ${n} tenants` : `a sample of ${m} of the ${n} tenants (--steady-tenants); wall times are for ${m}, ≈ for ${n} by rate`}`);
    say("  mode            KV reads/t/c  KV writes/t/c  token calls/t/c  mean wall   max wall   alerts  ok");
    for (const w of warmModes) {
      say(`  ${w.mode.padEnd(15)} ${fmt(w.kvGet, 3).padStart(12)}  ${fmt(w.kvSet, 3).padStart(13)}  ${fmt(w.tokenCalls, 3).padStart(15)}  ${secs(w.meanWallMs).padStart(9)}  ${secs(w.maxWallMs).padStart(9)}  ${fmt(w.alerts).padStart(7)}  ${w.ok ? "yes" : "NO"}`);
    }
    for (const w of warmModes) {
      if (m !== n) say(`  ${w.mode}: ≈ ${secs((w.meanWallMs * n) / m)} per cycle for all ${n} tenants at the sample's rate`);
      say(`  ${w.mode}: wall per cycle [${w.perCycleWall.map((ms) => fmt(ms / 1000, 1)).join(", ")}] s; token calls per cycle [${w.perCycleTokenCalls.join(",")}]`);
      say(`  ${" ".repeat(w.mode.length)}  CPU ${cpuLine(w.cpu, m * w.cycles)}`);
    }
    say("  warm process = one long-lived services instance; fresh process = createServices() per cycle (no in-memory cache)");
    for (const w of warmModes) for (const p of w.problems) say(`  !!!!! FAIL correctness (${w.mode}) ${p}`);
    reportTenantCycle(say, warmModes, fanOut, idle);
  }
  if (backlog) reportBacklog(say, SOURCES.mde, backlog, opts, app);
  if (backlogOther) reportBacklog(say, SOURCES.mde, backlogOther, { ...opts, backlogPageSize: backlogOther.pageSize }, app);
  if (quotaRun) reportQuotaRun(say, quotaRun, opts, app);
}

/**
 * What one tenant costs per cycle: its pull (the warm cycles) plus its share of the schedule's
 * fan-out (one queue message each), in this process's CPU and in requests to Azurite.
 */
function tenantCycle(w, fanOut) {
  const perFanOut = Math.max(1, fanOut?.tenants ?? 1);
  const share = (k) => (fanOut?.storage ? fanOut.storage[k] / perFanOut : 0);
  let storage;
  if (w.storage) {
    storage = Object.fromEntries(["tableReads", "tableWrites", "queue", "blob", "total"].map((k) => [k, w.storage[k] / w.tenantCycles + share(k)]));
    storage.byResource = {};
    for (const [key, n] of Object.entries(w.storage.byResource)) storage.byResource[key] = n / w.tenantCycles;
    for (const [key, n] of Object.entries(fanOut?.storage?.byResource ?? {})) storage.byResource[key] = (storage.byResource[key] ?? 0) + n / perFanOut;
  }
  const cpuMs = w.appCpuMs + (fanOut?.appCpuMs ?? 0);
  return { cpuMs, storage, fleet: FIVE_MINUTES_MS / cpuMs };
}
const FIVE_MINUTES_MS = 5 * MIN;

function reportTenantCycle(say, warmModes, fanOut, idle) {
  say("  per tenant-cycle (the pull, plus its share of the schedule's fan-out: a queue message per tenant, quiet ones grouped by PULL_TENANTS_PER_MESSAGE):");
  if (fanOut) {
    say(`    fan-out           once for ${fanOut.tenants} connected tenants in ${secs(fanOut.wallMs)}: app CPU ${fmt(fanOut.appCpuMs, 3)} ms per tenant` +
      (fanOut.storage ? `; storage requests per tenant ${storageOpsLine(fanOut.storage, fanOut.tenants, fmt)}` : ""));
  }
  for (const w of warmModes) {
    const t = tenantCycle(w, fanOut);
    say(`    ${w.mode.padEnd(16)}  app CPU ${fmt(t.cpuMs, 2)} ms (pull ${fmt(w.appCpuMs, 2)} + fan-out ${fmt(fanOut?.appCpuMs ?? 0, 2)}; this process only: the fakes and Azurite run in others)`);
    if (w.storage) {
      say(`    ${" ".repeat(16)}  storage requests: pull ${storageOpsLine(w.storage, w.tenantCycles, fmt)}; with the fan-out ${storageOpsLine(t.storage, 1, fmt)}`);
      say(`    ${" ".repeat(16)}  by resource: ${storageResourcesLine(t.storage, 1, fmt)}`);
    }
    say(`    ${" ".repeat(16)}  fleet one instance pulls every 5 min at that CPU: ${fmt(FIVE_MINUTES_MS)} ms ÷ ${fmt(t.cpuMs, 2)} ms ≈ ${fmt(t.fleet)} tenants (one core per instance, the app's CPU the only limit)`);
  }
  if (idle) {
    // Not in the targets: the warm cycles above deliver 1–2 alerts per tenant each (one blob and a checkpoint).
    const w = { appCpuMs: idle.appCpuMs, storage: idle.storage, tenantCycles: idle.tenants };
    const t = tenantCycle(w, fanOut);
    say(`    ${"idle tenant".padEnd(16)}  one more warm-process cycle with no new alert: app CPU ${fmt(t.cpuMs, 2)} ms (pull ${fmt(idle.appCpuMs, 2)} + fan-out ${fmt(fanOut?.appCpuMs ?? 0, 2)})` +
      `${idle.ok ? "" : ` !!!!! pulled ${idle.pulled}/${idle.tenants}, alerts ${idle.alerts} ${JSON.stringify(idle.other)}`}`);
    if (t.storage) {
      say(`    ${" ".repeat(16)}  storage requests: pull ${storageOpsLine(idle.storage, idle.tenants, fmt)}; with the fan-out ${storageOpsLine(t.storage, 1, fmt)}`);
      say(`    ${" ".repeat(16)}  by resource: ${storageResourcesLine(t.storage, 1, fmt)}`);
    }
  }
  say("    storage requests: every HTTP request of this process to Azurite (diagnostics channel http.client.request.start), by port and method; table GET = read, POST/PUT/MERGE/PATCH/DELETE = write");
}

/** The opt-in quota run: one tenant's backlog at 10,000-alert pages with the fake enforcing the API's quota. */
function reportQuotaRun(say, q, opts, app) {
  const o = q.outcome;
  q.alertsPerSec = (o.alerts ?? 0) / (q.wallMs / 1000);
  q.ok = o.outcome === "pulled" && o.complete && o.alerts === q.size;
  q.sustained = sustainedAfter(q.sink.timeline, MIN);
  const budget = new app.RateBudget({ clock: Date.now });
  const throttled = q.apiByStatus?.["429"] ?? 0;
  say(`── quota run: 1 tenant, ${fmt(q.size)} alerts, page size ${fmt(q.pageSize)}, the Defender fake enforcing the API's quota (${API_QUOTA.perMinute} calls/min, ${fmt(API_QUOTA.perHour)}/h per tenant, 429 + Retry-After) ──`);
  say(`  history            ${fmt(q.spentCalls)} calls in the hour before the pull (the app's hourly budget, spent evenly), in its pull state and counted by the fake: the hourly limit holds from the start`);
  say(`  wall time          ${secs(q.wallMs)}   ${fmt(q.alertsPerSec)} alerts/s sustained over the pull   ${q.apiRequests} Defender requests (${throttled} answered 429)`);
  say(`  after 1 min        ${q.sustained ? `${fmt(q.sustained.alertsPerSec)} alerts/s from the first page written after the first minute to the last (${fmt(q.sustained.alerts)} alerts in ${secs(q.sustained.ms)})` : "n/a: no page was written after the first minute but the last"}`);
  say(`  limits             the quota: ${fmt((API_QUOTA.perMinute * q.pageSize) / 60)} alerts/s over a minute, ${fmt((API_QUOTA.perHour * q.pageSize) / 3600)} over an hour; ` +
    `the app's budget (${budget.perMinute}/min, ${fmt(budget.perHour)}/h) at the ${fmt((q.apiRequests / Math.max(1, q.size)) * q.pageSize, 2)} requests per page measured: ` +
    `${fmt(budgetRate(budget.perMinute, MIN, q))} and ${fmt(budgetRate(budget.perHour, 60 * MIN, q))}`);
  say(`  peak RSS (child)   ${mb(q.peakRss)}; CPU ${cpuLine(q.cpu, 1).replace(/ \([^)]*\)/g, "")}`);
  say(`  outcome            ${JSON.stringify(o)}`);
  if (!q.ok) say(`  !!!!! FAIL correctness: expected a complete pull of ${q.size} alerts`);
}

/** Alerts/s a budget of `calls` per `windowMs` sustains at the run's requests per alert. */
function budgetRate(calls, windowMs, run) {
  const perAlert = run.apiRequests / Math.max(1, run.size);
  return calls / (windowMs / 1000) / Math.max(perAlert, 1e-9);
}

/** Delivery rate from the first sink write at or after `fromMs` into the pull to its last write; undefined if none after it. */
function sustainedAfter(timeline, fromMs) {
  const i = timeline.findIndex(([ms]) => ms >= fromMs);
  if (i <= 0 || i === timeline.length - 1) return undefined;
  const [startMs, startAlerts] = timeline[i];
  const [endMs, endAlerts] = timeline[timeline.length - 1];
  return { alerts: endAlerts - startAlerts, ms: endMs - startMs, alertsPerSec: (endAlerts - startAlerts) / ((endMs - startMs) / 1000) };
}

function defenderChecks(part, opts, app) {
  const { cold, baseline, warmModes, fanOut, backlog, backlogOther, quotaRun } = part;
  const previous = PREVIOUS.mde;
  const lines = coldChecks(SOURCES.mde, cold, opts);
  if (baseline) lines.push(check("≥ 10× the concurrency-1 baseline (sampled)", part.ratio >= 10 && baseline.ok, `${fmt(part.ratio, 1)}×`, previous.speedUp));
  for (const b of [backlog, backlogOther]) if (b) lines.push(...defenderBacklogChecks(b));
  const atMax = [backlog, backlogOther].find((b) => b?.pageSize >= MAX_PAGE);
  // Measured when the quota run ran (opt-in), else computed from the 10,000-page backlog.
  if (quotaRun) lines.push(...quotaRunChecks(quotaRun));
  else if (atMax) lines.push(sustainedRateCheck(atMax, app));
  const warm = warmModes.find((w) => w.mode === "warm process");
  if (warm) {
    const t = tenantCycle(warm, fanOut);
    const fresh = warmModes.find((w) => w.mode === "fresh process");
    lines.push(check(`warm tenant-cycle app CPU (warm process) < ${TENANT_CYCLE_TARGETS.cpuMs} ms`, t.cpuMs < TENANT_CYCLE_TARGETS.cpuMs,
      `${fmt(t.cpuMs, 2)} ms (pull ${fmt(warm.appCpuMs, 2)} + fan-out ${fmt(fanOut?.appCpuMs ?? 0, 2)})${fresh ? `; fresh process ${fmt(tenantCycle(fresh, fanOut).cpuMs, 2)} ms` : ""}`,
      previous.tenantCycleCpu));
    if (t.storage) {
      lines.push(check(`storage operations per tenant-cycle (warm process) < ${TENANT_CYCLE_TARGETS.storageOps} (fewer than issue 14's)`, t.storage.total < TENANT_CYCLE_TARGETS.storageOps,
        storageOpsLine(t.storage, 1, fmt), previous.tenantCycleStorage));
    }
    lines.push(check(`fleet one instance pulls every 5 min (one core per instance, app CPU the only limit) ≥ ${fmt(FIVE_MINUTES_MS / TENANT_CYCLE_TARGETS.cpuMs)} tenants`,
      t.fleet >= FIVE_MINUTES_MS / TENANT_CYCLE_TARGETS.cpuMs, `${fmt(t.fleet)} tenants (${fmt(FIVE_MINUTES_MS)} ms ÷ ${fmt(t.cpuMs, 2)} ms)`, previous.fleet));
  }
  for (const w of warmModes) {
    lines.push(check(`steady state (${w.mode}) KV reads ≤ 1 per tenant per cycle`, w.kvGet <= 1, fmt(w.kvGet, 3), previous.steadyKvReads[w.mode]));
    lines.push(check(`steady state (${w.mode}) KV writes ≤ 0.1 per tenant per cycle`, w.kvSet <= 0.1, fmt(w.kvSet, 3), previous.steadyKvWrites[w.mode]));
    lines.push(check(`steady state (${w.mode}) token calls ≤ 0.1 per tenant per cycle`, w.tokenCalls <= 0.1, fmt(w.tokenCalls, 3), previous.steadyTokenCalls[w.mode]));
    lines.push(check(`steady state (${w.mode}) correctness`, w.ok, w.ok ? "all pulled, all new alerts delivered" : `${w.problems.length} bad cycles`));
  }
  return lines;
}

// ---- the Graph part: the same cold cycle and backlog, for tenants whose source is Graph -----------

async function graphPart({ app, config, control, log, opts, say, concurrency, fakes, azurite }) {
  // On the real clock, as the Graph fake's (the Defender part's steady state moved only Defender's).
  clockOffsetMs = 0;
  const tenants = Array.from({ length: opts.graphTenants }, () => randomUUID());
  const setupMs = await setupTenants({ app, config, control, log, opts, ids: tenants, source: "graph" });
  say(`Graph setup: ${tenants.length} tenants registered with source graph and consented, ${opts.alertsPerTenant} alerts each in the Graph fake, in ${secs(setupMs)}`);
  const cold = await coldCycle({ app, config, control, log, opts, tenants, concurrency, source: "graph", profileName: "bench-graph-cold-cycle.cpuprofile" });
  let backlog;
  if (!opts.skipBacklog && opts.graphBacklog > 0) {
    gc();
    backlog = await runBacklogChild(opts, { fakes, connectionString: azurite.connectionString, pids: watchedPids }, undefined, {}, "graph");
    backlog.size = opts.graphBacklog;
  }
  return { cold, backlog };
}

function reportGraph(say, part, opts, concurrency, app) {
  reportCold(say, SOURCES.graph, part.cold, concurrency);
  if (part.backlog) reportBacklog(say, SOURCES.graph, part.backlog, opts, app);
}

function graphChecks(part, opts) {
  const lines = coldChecks(SOURCES.graph, part.cold, opts);
  if (part.backlog) lines.push(...backlogChecks(SOURCES.graph, part.backlog));
  return lines;
}

// ---- main ----------------------------------------------------------------------------------------

async function main(opts) {
  const started = performance.now();
  const host = hostConcurrency();
  const concurrency = opts.concurrency || host.concurrency;
  const app = loadApp();
  const log = app.silentLogger;
  const say = (line) => console.log(line);
  if (opts.pin) {
    const cpus = pinThisProcess(opts.pin);
    say(`pinned (--pin=${cpus.mode}): the app (this process, its backlog and cold-start children) on CPU ${cpus.app}; the fakes, Azurite and the sink fakes on CPU ${cpus.services}. ` +
      "The previous figures beside each target are from unpinned runs.");
  }
  // First, while no fake or Azurite takes CPU from the fresh processes it times.
  const coldStart = opts.coldstart === "no" ? undefined : await coldStartPart({ root, mainEntry: JSON.parse(readFileSync(join(root, "package.json"), "utf8")).main, runs: opts.coldstartRuns, say });
  if (opts.coldstart === "only") return coldStartOnly(say, coldStart, started);
  if (opts.sinks === "only") return sinksOnly(opts, app, say, started);
  const sources = sourcesOf(opts);

  const parts = [];
  if (sources.includes("mde")) parts.push(`${opts.tenants} tenants × ${opts.alertsPerTenant} alerts`);
  if (sources.includes("graph")) parts.push(`Graph: ${opts.graphTenants} tenants × ${opts.alertsPerTenant} alerts${opts.skipBacklog ? "" : `, ${fmt(opts.graphBacklog)}-alert backlog`}`);
  say(`bench: ${parts.join("; ")}, ${sources.includes("mde") ? "Defender" : ""}${sources.length > 1 ? " and " : ""}${sources.includes("graph") ? "Graph" : ""} latency ${opts.latencyMs} ms, concurrency ${concurrency} ` +
    `(host.json batchSize ${host.batchSize} + newBatchThreshold ${host.newBatchThreshold}), Node ${process.version}, ${(await import("node:os")).cpus().length} CPUs`);
  say(`backlog children start as the deployed worker does: ${Object.entries(deployedAllocatorEnv()).map(([k, v]) => `${k}=${v}`).join(" ")} (infra/modules/functionapp.bicep)`);

  // Each part runs against fakes and an Azurite of its own, started fresh, so neither part's figures
  // carry the other's data (Azurite slows down as its tables grow). The Defender part's Azurite stays
  // for the per-sink runs, which start fakes of their own.
  const environment = async () => {
    const [fakes, azurite] = await Promise.all([startFakes(opts.latencyMs, opts.cpuProfDir), startAzurite(app.azurite)]);
    watchedPids.fakes = fakes.pid;
    watchedPids.azurite = azurite.pid;
    storageCounter?.stop();
    storageCounter = countStorageOps(azurite.connectionString);
    const config = app.loadConfig(makeEnv(fakes, azurite.connectionString));
    return { app, config, control: new Control(fakes), log, opts, say, concurrency, fakes, azurite };
  };
  let defender;
  let azurite;
  if (sources.includes("mde")) {
    const t0 = performance.now();
    const context = await environment();
    defender = await defenderPart(context);
    await context.control.close();
    await context.fakes.stop();
    azurite = context.azurite;
    say(`Defender part (without the per-sink runs): ${secs(performance.now() - t0)} in all`);
  }
  let graph;
  if (sources.includes("graph")) {
    const t0 = performance.now();
    const context = await environment();
    graph = await graphPart(context);
    await context.control.close();
    await context.fakes.stop();
    await context.azurite.stop();
    say(`Graph part: ${secs(performance.now() - t0)} in all (fakes and Azurite of its own, setup, cold cycle, backlog child)`);
  }
  // Backlog per sink: the same backlog once per sink (blob: the run above), each with fresh fakes.
  let sinkRuns;
  if (defender && opts.sinks !== "no" && opts.backlog > 0 && opts.sinkRuns.length > 0) {
    gc();
    watchedPids.azurite = azurite.pid;
    sinkRuns = await runSinkBacklogs(opts, azurite, defender.backlog, say);
  }
  await azurite?.stop();

  // ---- report ----
  say("");
  if (defender) reportDefender(say, defender, opts, concurrency, app);
  if (graph) reportGraph(say, graph, opts, concurrency, app);
  if (sinkRuns) reportSinkBacklogs(say, opts, sinkRuns);
  if (coldStart) reportColdStart(say, coldStart, fmt);

  say("── targets ──────────────────────────────────────────────────────────────────────────────────");
  const lines = [];
  if (defender) lines.push(...defenderChecks(defender, opts, app));
  if (graph) lines.push(...graphChecks(graph, opts));
  if (sinkRuns) lines.push(...sinkBacklogChecks(opts, sinkRuns));
  if (coldStart) lines.push(...coldStartChecks(coldStart, check, PREVIOUS.coldStart, fmt));
  for (const l of lines) say(`  ${l}`);
  say("");
  sayVerdict(say, started);
}

const opts = parseArgs(process.argv.slice(2));
if (opts.scenario === "backlog") {
  backlogScenario(opts).then(
    (value) => {
      process.send?.({ value });
      process.exit(0);
    },
    (error) => {
      process.send?.({ error: error?.stack ?? String(error) });
      process.exit(1);
    },
  );
} else if (opts.scenario === "main") {
  main(opts).then(
    () => {
      killChildren();
      process.exit(0);
    },
    (error) => {
      console.error(`bench crashed: ${error?.stack ?? error}`);
      killChildren();
      process.exit(1);
    },
  );
} else {
  usage(`unknown --scenario ${opts.scenario}`);
}
