// One tenant pull in a process of its own, so a crash test can SIGKILL it for real.
//
// Run with `process.execPath`; imports the COMPILED app from dist/ (npm run build). Environment:
//   PULL_CHILD_SETTINGS  JSON of the app settings (the parent's test environment, Azurite included)
//   PULL_CHILD_TENANT    the tenant to pull
//   CRASH_PHASE          before_write | after_write | after_save (absent or empty: run normally)
//   CRASH_AT             n: SIGKILL itself on the n-th sink write (before_write: before the real
//                        BlobAlertSink is called; after_write: once its write resolved) or once the
//                        n-th state save (PullStateStore.write, which PullLease calls) resolved
//   PULL_CHILD_DIST      optional: another compiled shared/ folder (to try a change without rebuilding)
//   PULL_CHILD_WAIT      1: load the app, print {"event":"ready"} and wait for one line on stdin
//                        before pulling. The line is a JSON object whose string fields are set in
//                        the environment first (e.g. {"PULL_CHILD_TENANT":"…","CRASH_PHASE":"…"}),
//                        so a parent can keep children warm (loading the app takes a second or
//                        more) and hand them their tenant and crash plan when it needs them.
//                        Stdin closing without a line exits without pulling.
//
// Prints one JSON line per sink write and per state save ({"event":"write"|"save",...}), a
// {"event":"crash",...} line just before killing itself, and {"event":"outcome",...} (the
// PullOutcome plus counts) if it lives to the end. Backoff and budget waits are instant.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const dist = process.env.PULL_CHILD_DIST || join(dirname(fileURLToPath(import.meta.url)), "..", "..", "dist", "shared");
const require = createRequire(import.meta.url);
const { loadConfig } = require(join(dist, "config.js"));
const { createServices } = require(join(dist, "services.js"));
const { BlobAlertSink } = require(join(dist, "sinks", "blobAlertSink.js"));
const { openContainer } = require(join(dist, "sinks", "containers.js"));

const PHASES = new Set(["before_write", "after_write", "after_save"]);

function emit(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

/** The kill is synchronous: nothing after it runs, exactly like a host that dies mid-page. */
function die(phase, n) {
  emit({ event: "crash", phase, n });
  process.kill(process.pid, "SIGKILL");
}

/** The first line of stdin, or undefined if stdin ends without one. */
function firstLine() {
  return new Promise((resolve) => {
    let buffered = "";
    const done = (line) => {
      process.stdin.off("data", onData);
      process.stdin.pause();
      resolve(line);
    };
    const onData = (chunk) => {
      buffered += chunk;
      const end = buffered.indexOf("\n");
      if (end >= 0) done(buffered.slice(0, end));
    };
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", onData);
    process.stdin.once("end", () => done(undefined));
  });
}

async function main() {
  if (process.env.PULL_CHILD_WAIT === "1") {
    emit({ event: "ready" });
    const line = await firstLine();
    // The parent went away (or discarded this child) without saying go: do not pull.
    if (line === undefined) return;
    const overrides = line.trim() ? JSON.parse(line) : {};
    for (const [name, value] of Object.entries(overrides)) if (typeof value === "string") process.env[name] = value;
    emit({ event: "go" });
  }
  const settings = JSON.parse(process.env.PULL_CHILD_SETTINGS ?? "{}");
  const tenantId = process.env.PULL_CHILD_TENANT;
  if (!tenantId) throw new Error("PULL_CHILD_TENANT is required");
  const phase = process.env.CRASH_PHASE || undefined;
  const crashAt = Number(process.env.CRASH_AT || "0");
  if (phase !== undefined && (!PHASES.has(phase) || !Number.isInteger(crashAt) || crashAt < 1)) {
    throw new Error(`bad crash plan: CRASH_PHASE=${phase} CRASH_AT=${process.env.CRASH_AT}`);
  }

  const config = loadConfig(settings);
  const blob = new BlobAlertSink(
    openContainer(config.storage, config.pull.alertsContainer, () => {
      throw new Error("no credential needed for Azurite");
    }),
  );
  let writes = 0;
  const sink = {
    async write(key, alerts, options) {
      const n = ++writes;
      emit({ event: "write", n, pageFrom: key.pageFrom, pageTo: key.pageTo, skip: key.skip, resumed: key.resumed === true, alerts: alerts.length });
      if (phase === "before_write" && n === crashAt) die(phase, n);
      await blob.write(key, alerts, options);
      if (phase === "after_write" && n === crashAt) die(phase, n);
    },
    storedVersions(page, options) {
      return blob.storedVersions(page, options);
    },
  };
  const services = createServices(config, { sink, sleep: async () => undefined });

  // PullLease saves through PullStateStore.write: count the ones that committed.
  let saves = 0;
  const store = services.pullState;
  const write = store.write.bind(store);
  store.write = async (...args) => {
    const result = await write(...args);
    const n = ++saves;
    emit({ event: "save", n, released: args[2]?.owner === "" });
    if (phase === "after_save" && n === crashAt) die(phase, n);
    return result;
  };

  const logger = {
    info() {},
    warn(message, fields) {
      process.stderr.write(`warn ${message} ${fields ? JSON.stringify(fields) : ""}\n`);
    },
    error(message, fields) {
      process.stderr.write(`error ${message} ${fields ? JSON.stringify(fields) : ""}\n`);
    },
  };
  const outcome = await services.tenantPull.run(tenantId, logger);
  emit({ event: "outcome", writes, saves, ...outcome });
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`pullChild failed: ${error?.stack ?? String(error)}\n`);
    process.exit(2);
  },
);
