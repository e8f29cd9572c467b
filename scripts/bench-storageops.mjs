// Storage operations counted for `npm run bench` (issue 14): every HTTP request this process makes
// to Azurite, by service and kind. The Azure Storage SDKs send through node:http(s), which publishes
// each request on the `http.client.request.start` diagnostics channel (Node ≥ 19.6) before it is
// written: nothing in the app is wrapped or changed. The bench's own control calls to the fakes go
// through undici, which does not publish there, and would not match Azurite's ports anyway.
//
// A request is classified by the port of Azurite it goes to (blob, queue, table, each on its own port)
// and, for tables, by method: GET (and HEAD) read; POST, PUT, MERGE, PATCH, DELETE write. A table
// `$batch` is one POST and counts as one write: one HTTP request, one transaction.
import dc from "node:diagnostics_channel";

const CHANNEL = "http.client.request.start";
const READ_METHODS = new Set(["GET", "HEAD"]);

/** The port of each Azurite service named in a connection string (BlobEndpoint=http://127.0.0.1:10000/…). */
function servicePorts(connectionString) {
  const ports = new Map();
  for (const part of connectionString.split(";")) {
    const m = /^(Blob|Queue|Table)Endpoint=(.+)$/.exec(part.trim());
    if (!m) continue;
    const url = new URL(m[2]);
    ports.set(url.port || (url.protocol === "https:" ? "443" : "80"), m[1].toLowerCase());
  }
  return ports;
}

const empty = () => ({ tableReads: 0, tableWrites: 0, queue: 0, blob: 0 });
const KINDS = Object.keys(empty());

/** "table MsspPullState GET": the service, the table, queue or container (from the path after the account), the method. */
function resourceOf(service, method, path) {
  const [, , name = ""] = String(path).split("?")[0].split("/");
  return `${service} ${name.replace(/\(.*$/, "")} ${method}`;
}

/**
 * Starts counting the storage requests of this process to the Azurite behind `connectionString`.
 * `snapshot()` returns the counts so far; `stop()` unsubscribes. Counting costs one Map lookup per
 * HTTP request.
 */
export function countStorageOps(connectionString) {
  const ports = servicePorts(connectionString);
  const counts = { ...empty(), byResource: {} };
  // BENCH_STORAGE_TRACE=1 prints each counted request (service, method, path without its query) to stderr.
  const trace = process.env.BENCH_STORAGE_TRACE === "1";
  const onStart = ({ request }) => {
    const host = String(request.getHeader?.("host") ?? "");
    const service = ports.get(host.slice(host.lastIndexOf(":") + 1));
    if (trace && service) process.stderr.write(`storage ${service} ${request.method} ${String(request.path).split("?")[0]}\n`);
    if (service) {
      const key = resourceOf(service, request.method, request.path);
      counts.byResource[key] = (counts.byResource[key] ?? 0) + 1;
    }
    if (service === "table") {
      if (READ_METHODS.has(request.method)) counts.tableReads++;
      else counts.tableWrites++;
    } else if (service === "queue") counts.queue++;
    else if (service === "blob") counts.blob++;
  };
  dc.subscribe(CHANNEL, onStart);
  return {
    snapshot: () => ({ ...counts, byResource: { ...counts.byResource } }),
    stop: () => dc.unsubscribe(CHANNEL, onStart),
  };
}

/** after − before, per kind, plus `total` and `byResource` (the requests per "service resource METHOD"). */
export function storageOpsDelta(before, after) {
  const out = empty();
  for (const k of KINDS) out[k] = after[k] - before[k];
  out.total = out.tableReads + out.tableWrites + out.queue + out.blob;
  out.byResource = {};
  for (const [key, n] of Object.entries(after.byResource)) {
    const d = n - (before.byResource[key] ?? 0);
    if (d > 0) out.byResource[key] = d;
  }
  return out;
}

/** Sums several deltas (each with `total` and `byResource`). */
export function sumStorageOps(deltas) {
  const out = { ...empty(), total: 0, byResource: {} };
  for (const d of deltas) {
    for (const k of [...KINDS, "total"]) out[k] += d[k];
    for (const [key, n] of Object.entries(d.byResource ?? {})) out.byResource[key] = (out.byResource[key] ?? 0) + n;
  }
  return out;
}

/** "table MsspPullState GET 1.00, …" per `per` units, most frequent first. */
export function storageResourcesLine(ops, per, fmt) {
  return Object.entries(ops.byResource ?? {})
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([key, n]) => `${key} ${fmt(n / per, 2)}`)
    .join(", ");
}

/** "1.00 table reads + 1.00 writes + 0 queue + 0 blob = 2.00" per `per` units. */
export function storageOpsLine(ops, per, fmt) {
  const f = (n) => fmt(n / per, 2);
  return `${f(ops.tableReads)} table reads + ${f(ops.tableWrites)} table writes + ${f(ops.queue)} queue + ${f(ops.blob)} blob = ${f(ops.total)}`;
}
