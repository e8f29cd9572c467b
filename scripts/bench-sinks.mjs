// Helpers for the per-sink backlog section of `npm run bench` (scripts/bench.mjs): the runs, the
// sink fakes each in a process of its own, the settings a run's child gets, the timing of sink
// writes, and the exactly-once tallies. Not run by hand: bench.mjs forks this file with
// `--serve-sink-fake <kind>` to host one fake (test/fakes/, compiled into dist-bench/).
import { fork } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const SELF = fileURLToPath(import.meta.url);
const need = (p) => require(join(root, p));

/**
 * The runs, each one backlog pull in a child of its own: which sinks ALERT_SINKS names and which
 * fakes it needs. `splunk-ack` (indexer acknowledgement on) is not in the default list.
 */
export const SINK_RUNS = {
  blob: { sinks: ["blob"], fakes: [] },
  sentinel: { sinks: ["sentinel"], fakes: ["sentinel"] },
  splunk: { sinks: ["splunk"], fakes: ["splunk"] },
  "splunk-ack": { sinks: ["splunk"], fakes: ["splunk-ack"] },
  eventhubs: { sinks: ["eventhubs"], fakes: ["eventhubs"] },
  multi: { sinks: ["blob", "sentinel", "splunk"], fakes: ["sentinel", "splunk"] },
};
export const DEFAULT_SINK_RUNS = ["blob", "sentinel", "splunk", "eventhubs", "multi"];
export const runLabel = (run) => (run === "multi" ? "blob,sentinel,splunk" : run);

const EVENTHUB_NAMESPACE = "bench-siem.servicebus.windows.net";
const EVENTHUB_NAME = "mssp-defender-alerts";

// ---- sink fakes, in processes of their own ----------------------------------------------------

/**
 * The HTTPS sink fakes' certificate, made once per bench. Self-signed like the other fakes' (whose
 * key stays in their process) but with a subject of its own: two self-signed CAs both named
 * CN=localhost in one trust list make OpenSSL pick the wrong one (DEPTH_ZERO_SELF_SIGNED_CERT).
 */
export async function sinkFakeCertificate() {
  const { generate } = require("selfsigned");
  const notBeforeDate = new Date(Date.now() - 60_000);
  const pems = await generate([{ name: "commonName", value: "bench-sink-fakes" }], {
    keySize: 2048,
    algorithm: "sha256",
    notBeforeDate,
    notAfterDate: new Date(notBeforeDate.getTime() + 7 * 24 * 3600 * 1000),
    extensions: [
      { name: "basicConstraints", cA: true },
      { name: "subjectAltName", altNames: [{ type: 2, value: "localhost" }, { type: 7, ip: "127.0.0.1" }] },
    ],
  });
  return { certPem: pems.cert, keyPem: pems.private };
}

/**
 * Starts one sink fake in its own process (its CPU and the rows it keeps stay out of the app's
 * figures). Resolves with its connection details, `tally(tenantId)` (the alert ids the fake holds
 * for the tenant, from its own introspection) and `stop()`.
 */
export function startSinkFake(kind, token, tls) {
  return new Promise((resolve, reject) => {
    // The fakes keep every row they take (100,000 alerts, more than once in a multi-sink run).
    const child = fork(SELF, ["--serve-sink-fake", kind], {
      env: { ...process.env, BENCH_SINK_TOKEN: token, BENCH_SINK_TLS: JSON.stringify(tls) },
      execArgv: ["--max-old-space-size=8192"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const pending = new Map();
    let next = 0;
    let ready = false;
    const timer = setTimeout(() => reject(new Error(`the ${kind} fake did not start within 30 s`)), 30_000);
    child.on("message", (m) => {
      if (m.ready) {
        ready = true;
        clearTimeout(timer);
        resolve({
          ...m.ready,
          pid: child.pid,
          kill: () => child.kill("SIGKILL"),
          tally(tenantId) {
            const id = next++;
            child.send({ op: "tally", id, tenantId });
            return new Promise((res, rej) => pending.set(id, { res, rej }));
          },
          stop() {
            return new Promise((res) => {
              if (child.exitCode !== null || child.signalCode !== null) return res();
              const force = setTimeout(() => (child.kill("SIGKILL"), res()), 5_000);
              child.once("exit", () => (clearTimeout(force), res()));
              child.send({ op: "stop" });
            });
          },
        });
      } else if (m.id !== undefined) {
        const p = pending.get(m.id);
        pending.delete(m.id);
        if (m.error) p?.rej(new Error(`${kind} fake: ${m.error}`));
        else p?.res(m.value);
      }
    });
    child.once("exit", (code) => {
      for (const p of pending.values()) p.rej(new Error(`the ${kind} fake exited (code ${code})`));
      if (!ready) reject(new Error(`the ${kind} fake exited during startup (code ${code})`));
    });
  });
}

/** In the fake's process: start it, answer tallies, stop on request or when the bench goes away. */
async function serveSinkFake(kind) {
  const token = process.env.BENCH_SINK_TOKEN ?? "";
  const tls = JSON.parse(process.env.BENCH_SINK_TLS ?? "{}");
  let info;
  let tally;
  let stop;
  if (kind === "sentinel") {
    const { FakeLogsIngestion } = need("dist-bench/test/fakes/fakeLogsIngestion.js");
    const { SENTINEL_COLUMNS } = need("dist/shared/sinks/sentinel/records.js");
    const { DEFAULT_SENTINEL_STREAM } = need("dist/shared/sinks/sentinel/settings.js");
    const dcr = `dcr-${randomBytes(16).toString("hex")}`;
    const fake = new FakeLogsIngestion({ ...tls, acceptedToken: token, dcrImmutableId: dcr, streamName: DEFAULT_SENTINEL_STREAM, columns: SENTINEL_COLUMNS });
    await fake.start();
    info = { url: fake.url, dcr };
    tally = (tenantId) => {
      const rows = fake.rows();
      const requests = fake.requests();
      return {
        ids: rows.filter((r) => r.CustomerTenantId === tenantId).map((r) => String(r.AlertId)),
        total: rows.length,
        calls: requests.length,
        failedCalls: requests.filter((r) => r.status !== 204).length,
        bytes: requests.reduce((a, r) => a + r.compressedBytes, 0),
        truncatedFields: fake.truncatedFields,
      };
    };
    stop = () => fake.stop();
  } else if (kind === "splunk" || kind === "splunk-ack") {
    const { FakeSplunkHec } = need("dist-bench/test/fakes/fakeSplunkHec.js");
    const hecToken = randomUUID();
    const ack = kind === "splunk-ack";
    const fake = new FakeSplunkHec({ ...tls, tokens: [{ token: hecToken, ack }] });
    await fake.start();
    info = { url: fake.url, hecToken, ack };
    tally = (tenantId) => {
      const events = fake.indexed();
      const requests = fake.requests().filter((r) => r.path !== "/services/collector/ack" && !r.path.startsWith("/services/collector/health"));
      return {
        ids: events.filter((e) => e.fields?.tenant_id === tenantId).map((e) => String(e.event?.id)),
        total: events.length,
        calls: requests.length,
        failedCalls: requests.filter((r) => r.status !== 200).length,
        bytes: requests.reduce((a, r) => a + r.bytes, 0),
        acksRead: fake.acksReadTrue().length,
      };
    };
    stop = () => fake.stop();
  } else if (kind === "eventhubs") {
    const { FakeEventHubs } = need("dist-bench/test/fakes/fakeEventHubs.js");
    const fake = new FakeEventHubs({ namespace: EVENTHUB_NAMESPACE, hubName: EVENTHUB_NAME, acceptedToken: token });
    await fake.start();
    info = { endpoint: fake.endpoint, namespace: EVENTHUB_NAMESPACE, hubName: EVENTHUB_NAME };
    tally = (tenantId) => ({
      ids: fake.events.filter((e) => e.partitionKey === tenantId).map((e) => String(JSON.parse(e.body.toString("utf8")).alert?.id)),
      total: fake.events.length,
      calls: fake.transfers + fake.rejectedTransfers,
      failedCalls: fake.rejectedTransfers,
      largestTransfer: fake.largestTransfer,
    });
    stop = () => fake.stop();
  } else {
    throw new Error(`unknown sink fake ${kind}`);
  }
  const quit = () => {
    const force = setTimeout(() => process.exit(0), 3_000);
    force.unref();
    void Promise.resolve(stop()).finally(() => process.exit(0));
  };
  process.on("disconnect", quit);
  process.on("message", (m) => {
    if (m.op === "stop") quit();
    else if (m.op === "tally") {
      try {
        process.send({ id: m.id, value: tally(m.tenantId) });
      } catch (error) {
        process.send({ id: m.id, error: error?.stack ?? String(error) });
      }
    }
  });
  process.send({ ready: { kind, ...info } });
}

/**
 * One file with both certificates the run's child must trust: the HTTPS fakes' and the sink
 * fakes' (LOCAL_DEV_CA_CERT_FILE takes concatenated PEMs). Returns its path and a cleanup.
 */
export function combinedCaFile(certFile, sinkCertPem) {
  const dir = mkdtempSync(join(tmpdir(), "bench-sinks-ca-"));
  const file = join(dir, "ca.pem");
  const pems = [readFileSync(certFile, "utf8"), sinkCertPem];
  writeFileSync(file, pems.map((p) => p.trim()).join("\n") + "\n", { mode: 0o600 });
  return { file, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The app settings of a run beyond the common ones: ALERT_SINKS and each chosen sink's own. */
export function sinkRunEnv(run, sinkFakes) {
  const env = { ALERT_SINKS: SINK_RUNS[run].sinks.join(",") };
  const sentinel = sinkFakes.sentinel;
  if (sentinel) Object.assign(env, { SENTINEL_INGESTION_ENDPOINT: sentinel.url, SENTINEL_DCR_IMMUTABLE_ID: sentinel.dcr });
  const splunk = sinkFakes.splunk ?? sinkFakes["splunk-ack"];
  if (splunk) Object.assign(env, { SPLUNK_HEC_URL: splunk.url, SPLUNK_HEC_TOKEN: splunk.hecToken, ...(splunk.ack ? { SPLUNK_HEC_ACK: "true" } : {}) });
  const hub = sinkFakes.eventhubs;
  if (hub) Object.assign(env, { EVENTHUB_FULLY_QUALIFIED_NAMESPACE: hub.namespace, EVENTHUB_NAME: hub.hubName });
  return env;
}

// ---- in the run's child -------------------------------------------------------------------------

/**
 * Times every `write` of the app's sink classes by wrapping their prototypes: the sinks are still
 * built by createServices from the settings, unchanged. Returns the running totals per sink.
 */
export function timeSinkWrites() {
  const classes = [
    ["blob", "dist/shared/sinks/blobAlertSink.js", "BlobAlertSink"],
    ["sentinel", "dist/shared/sinks/sentinel/sentinelSink.js", "SentinelAlertSink"],
    ["splunk", "dist/shared/sinks/splunk/splunkHecSink.js", "SplunkHecSink"],
    ["eventhubs", "dist/shared/sinks/eventhubs/eventHubsSink.js", "EventHubsAlertSink"],
  ];
  const stats = {};
  for (const [name, file, className] of classes) {
    const cls = need(file)[className];
    const original = cls.prototype.write;
    const s = { writes: 0, ms: 0, alerts: 0 };
    stats[name] = s;
    cls.prototype.write = async function timedWrite(key, alerts, options) {
      const t = performance.now();
      try {
        return await original.call(this, key, alerts, options);
      } finally {
        s.writes++;
        s.alerts += alerts.length;
        s.ms += performance.now() - t;
      }
    };
  }
  return stats;
}

/** The credential override (ServiceOverrides.credential): the fakes' accepted token, as a managed identity would give it. */
export function fakeManagedIdentity(token) {
  return { getToken: async () => ({ token, expiresOnTimestamp: Date.now() + 3600_000 }) };
}

/**
 * The sinks override for an Event Hubs run: the sink buildSinks makes from the same settings, with
 * only the AMQP endpoint moved to the fake (as test/integration/eventHubsSink.test.ts does).
 */
export function eventHubsSinks(config, credential, endpoint) {
  const { createEventHubsProducer, EventHubsAlertSink } = need("dist/shared/sinks/eventhubs/eventHubsSink.js");
  const producer = createEventHubsProducer(config.sinks.eventHubs, credential, { customEndpointAddress: endpoint });
  return { sinks: [{ name: "eventhubs", sink: new EventHubsAlertSink(producer) }], close: () => producer.close() };
}

// ---- tallies (in the bench's main process, after the run) ---------------------------------------

/** The ids the Defender fake's /_fake/seed generated for the tenant: the same generator, same arguments. */
export function expectedIds(tenantId, seeds) {
  const { generateAlerts } = need("dist-bench/test/fakes/alerts.js");
  return seeds.flatMap((s) => generateAlerts(tenantId, s.count, { start: new Date(s.start), spacingMs: s.spacingMs }).map((a) => a.id));
}

/** The alert ids of every NDJSON line the blob sink stored for the tenant in `container`. */
export async function blobIds(connectionString, container, tenantId) {
  const { BlobServiceClient } = require("@azure/storage-blob");
  const client = BlobServiceClient.fromConnectionString(connectionString).getContainerClient(container);
  const ids = [];
  let blobs = 0;
  for await (const item of client.listBlobsFlat({ prefix: `${tenantId}/` })) {
    blobs++;
    const text = (await client.getBlobClient(item.name).downloadToBuffer()).toString("utf8");
    for (const line of text.split("\n")) if (line) ids.push(String(JSON.parse(line).alert?.id));
  }
  return { ids, total: ids.length, calls: blobs };
}

/** Exactly once: every expected id delivered, none twice, nothing else. */
export function exactlyOnce(expected, delivered) {
  const counts = new Map();
  for (const id of delivered) counts.set(id, (counts.get(id) ?? 0) + 1);
  const want = new Set(expected);
  let missing = 0;
  for (const id of want) if (!counts.has(id)) missing++;
  let unexpected = 0;
  for (const id of counts.keys()) if (!want.has(id)) unexpected++;
  const duplicates = delivered.length - counts.size;
  return { expected: want.size, delivered: delivered.length, distinct: counts.size, duplicates, missing, unexpected, ok: duplicates === 0 && missing === 0 && unexpected === 0 };
}

if (process.argv[1] === SELF && process.argv[2] === "--serve-sink-fake") {
  serveSinkFake(process.argv[3]).catch((error) => {
    process.stderr.write(`bench sink fake: ${error?.stack ?? error}\n`);
    process.exit(1);
  });
}
