/**
 * The capture and scan behind the suite-wide secrecy check (issue 15, item 4); the vitest hooks
 * that run it after every test are in secrecy.setup.ts, the secret registry and the matcher in
 * secrecy.ts. See secrecy.setup.ts for what is scanned and what is not, and why.
 *
 * `installSecrecyCapture()` wraps, for the life of this test file's process (restored by
 * `uninstallSecrecyCapture()`):
 * - process.stdout/stderr.write and console.* (the app runs in-process);
 * - http.ClientRequest write/end, keeping the bodies of write requests to a local Azurite (the
 *   suite's, or one a test started itself): table entities, queue messages (their base64 text
 *   decoded too), blobs, as they go out;
 * - child_process spawning (ChildProcess.prototype.spawn), to know when something this process
 *   cannot see may have written to storage.
 * `checkSecrecy(label)` then scans everything recorded since the previous check (and, when a
 * child process ran, what Azurite holds that changed since then) and throws if a registered
 * secret is anywhere in it.
 */
import { ChildProcess } from "node:child_process";
import { ClientRequest } from "node:http";
import { inject } from "vitest";
import { CONTAINERS, QUEUES, TABLES } from "../../shared/storage/names";
import {
  describeFindings,
  drainOutputs,
  findSecrets,
  hasRegisteredSecrets,
  knownSecrets,
  recordOutput,
  setRecording,
  type CapturedOutput,
} from "./secrecy";

/** Captured before any test can install fake timers: storage timestamps are real time. */
const RealDate = Date;
const realNow = (): number => RealDate.now();

/** Blobs larger than this are scanned only in their first bytes (alert pages are far smaller). */
const MAX_BLOB_BYTES = 4 * 1024 * 1024;
/** Read-back budget per check: blobs beyond it are left unread (counted in the stats). */
const MAX_READ_BACK_BYTES = 64 * 1024 * 1024;
/** Clock granularity between this process and Azurite's timestamps. */
const WINDOW_MARGIN_MS = 2_000;

// --- stdout / stderr / console ------------------------------------------------------------------

type Write = NodeJS.WriteStream["write"];
const originalStdout = process.stdout.write;
const originalStderr = process.stderr.write;
const consoleMethods = ["log", "info", "warn", "error", "debug", "trace"] as const;
const originalConsole = consoleMethods.map((m) => [m, console[m]] as const);
let insideConsole = false;

function chunkText(chunk: unknown): string {
  if (typeof chunk === "string") return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("utf8");
  return String(chunk);
}

function wrapStream(stream: NodeJS.WriteStream, original: Write, name: string): void {
  stream.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
    if (!insideConsole) recordOutput(name, "", chunkText(chunk));
    return (original as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as Write;
}

function formatArgs(args: unknown[]): string {
  return args
    .map((arg) => {
      if (typeof arg === "string") return arg;
      try {
        return JSON.stringify(arg) ?? String(arg);
      } catch {
        return String(arg);
      }
    })
    .join(" ");
}

function wrapStdio(): void {
  wrapStream(process.stdout, originalStdout, "stdout");
  wrapStream(process.stderr, originalStderr, "stderr");
  for (const [m, original] of originalConsole) {
    console[m] = (...args: unknown[]): void => {
      recordOutput(`console.${m}`, "", formatArgs(args));
      insideConsole = true;
      try {
        original.apply(console, args);
      } finally {
        insideConsole = false;
      }
    };
  }
}

// --- what this process writes to Azurite ----------------------------------------------------------

type Service = "blob" | "queue" | "table";

/** The suite's Azurite (globalSetup), or undefined outside vitest. */
function suiteConnectionString(): string | undefined {
  try {
    const value = inject("storageConnectionString");
    return typeof value === "string" && value !== "" ? value : undefined;
  } catch {
    return undefined;
  }
}

const suiteStorage = suiteConnectionString();

function isLoopbackAzurite(connectionString: string): boolean {
  return /TableEndpoint=http:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/i.test(connectionString) || /UseDevelopmentStorage=true/i.test(connectionString);
}

/**
 * The Azurite accounts to read back: the suite's, and the one the app is configured with when a
 * test started its own (notifications.test.ts does). Never a real account: loopback only.
 */
function storageAccounts(): string[] {
  const accounts = new Set<string>();
  if (suiteStorage !== undefined) accounts.add(suiteStorage);
  const appStorage = process.env["AzureWebJobsStorage"];
  if (appStorage !== undefined && isLoopbackAzurite(appStorage)) accounts.add(appStorage);
  return [...accounts];
}

/** "127.0.0.1:port" → service, for every account in use. */
function knownHosts(): Map<string, Service> {
  const hosts = new Map<string, Service>();
  for (const connectionString of storageAccounts()) {
    for (const [key, service] of [["BlobEndpoint", "blob"], ["QueueEndpoint", "queue"], ["TableEndpoint", "table"]] as const) {
      const match = new RegExp(`${key}=([^;]+)`).exec(connectionString);
      if (match?.[1] !== undefined) hosts.set(new URL(match[1]).host, service);
    }
  }
  return hosts;
}

/** Which Azurite service a request goes to: by its known port, else by its shape (path-style account URL on loopback). */
function serviceOf(req: ClientRequest): Service | undefined {
  const host = req.getHeader("host");
  if (typeof host !== "string") return undefined;
  const known = knownHosts().get(host);
  if (known !== undefined) return known;
  if (!/^(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/i.test(host) || !req.path.startsWith("/devstoreaccount1/")) return undefined;
  if (req.getHeader("x-ms-blob-type") !== undefined || /[?&]comp=(block|blocklist|appendblock|page)\b/.test(req.path)) return "blob";
  if (/^\/devstoreaccount1\/[^/?]+\/messages\b/.test(req.path)) return "queue";
  if (req.getHeader("dataserviceversion") !== undefined || /^\/devstoreaccount1\/(\$batch|Tables\b|[A-Za-z][A-Za-z0-9]*\()/.test(req.path)) return "table";
  return undefined;
}

/** Tables, queues and containers this process wrote to (besides the app's own, always read back). */
const touched = { table: new Set<string>(), queue: new Set<string>(), blob: new Set<string>() };

interface PendingRequest {
  service: Service;
  chunks: Buffer[];
  size: number;
}
const pending = new WeakMap<ClientRequest, PendingRequest | null>();

function pendingOf(req: ClientRequest): PendingRequest | null {
  let entry = pending.get(req);
  if (entry !== undefined) return entry;
  entry = null;
  // Only writes: a read or a delete carries no content.
  const service = req.method === "GET" || req.method === "HEAD" || req.method === "DELETE" ? undefined : serviceOf(req);
  if (service !== undefined) entry = { service, chunks: [], size: 0 };
  pending.set(req, entry);
  return entry;
}

function keep(entry: PendingRequest, chunk: unknown, encoding: unknown): void {
  if (chunk === undefined || chunk === null || typeof chunk === "function" || entry.size >= MAX_BLOB_BYTES) return;
  const buffer =
    typeof chunk === "string" ? Buffer.from(chunk, typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8") : Buffer.from(chunk as Uint8Array);
  entry.chunks.push(buffer);
  entry.size += buffer.length;
}

function resourceOf(path: string): string {
  // /devstoreaccount1/<table>(…) | /devstoreaccount1/<queue>/messages | /devstoreaccount1/<container>/<blob>
  const segment = path.split("?")[0]?.split("/")[2] ?? "";
  return decodeURIComponent(segment.replace(/\(.*$/, ""));
}

function queueMessageTexts(xml: string): string[] {
  const texts: string[] = [];
  for (const match of xml.matchAll(/<MessageText>([\s\S]*?)<\/MessageText>/g)) {
    const text = (match[1] ?? "").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, "&");
    texts.push(text, ...decodedBase64(text));
  }
  return texts;
}

function decodedBase64(text: string): string[] {
  const trimmed = text.trim();
  if (trimmed.length < 8 || !/^[A-Za-z0-9+/=_-]+$/.test(trimmed)) return [];
  return [Buffer.from(trimmed, "base64").toString("utf8")];
}

function finish(req: ClientRequest, entry: PendingRequest): void {
  const path = req.path;
  const resource = resourceOf(path);
  if (resource !== "" && !/^\?|^Tables$|^\$batch$/i.test(resource)) touched[entry.service].add(resource);
  const body = Buffer.concat(entry.chunks).toString("utf8");
  const where = `${req.method} ${path.split("?")[0] ?? path}`;
  if (entry.service === "queue") {
    recordOutput("queue message (written)", where, [body, ...queueMessageTexts(body)].join("\n"));
  } else {
    recordOutput(entry.service === "table" ? "table entity (written)" : "blob (written)", where, body);
  }
}

const originalWrite = ClientRequest.prototype.write;
const originalEnd = ClientRequest.prototype.end;

function wrapClientRequests(): void {
  ClientRequest.prototype.write = function (this: ClientRequest, chunk: unknown, ...rest: unknown[]): boolean {
    try {
      const entry = pendingOf(this);
      if (entry) keep(entry, chunk, rest[0]);
    } catch {
      /* capture must never break a request */
    }
    return (originalWrite as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof ClientRequest.prototype.write;
  ClientRequest.prototype.end = function (this: ClientRequest, ...args: unknown[]): ClientRequest {
    try {
      const entry = pendingOf(this);
      if (entry) {
        if (typeof args[0] !== "function") keep(entry, args[0], args[1]);
        pending.set(this, null);
        finish(this, entry);
      }
    } catch {
      /* capture must never break a request */
    }
    return (originalEnd as (...a: unknown[]) => ClientRequest).apply(this, args);
  } as typeof ClientRequest.prototype.end;
}

// --- what Azurite holds that changed since the previous scan -------------------------------------

let scannedUpTo = realNow();
let fileStartedAt = realNow();

// --- child processes (what they write to Azurite is only seen by reading it back) -------------

let childSpawnedSinceCheck = false;
const children = new Set<ChildProcess>();
/** A child that failed to start has no pid (and may never emit "exit"). */
const anyChildRunning = (): boolean =>
  [...children].some((child) => child.pid !== undefined && child.exitCode === null && child.signalCode === null);
/** `spawn` is internal (untyped), but every way of starting a child goes through it. */
const childProto = ChildProcess.prototype as unknown as { spawn: (this: ChildProcess, ...args: unknown[]) => unknown };
const originalSpawn = childProto.spawn;

/** spawn, fork, exec and execFile all go through ChildProcess.prototype.spawn. */
function wrapChildProcesses(): void {
  childProto.spawn = function (this: ChildProcess, ...args: unknown[]): unknown {
    const options = args[0] as { file?: unknown; args?: unknown } | undefined;
    const commandLine = [options?.file, ...(Array.isArray(options?.args) ? options.args : [])].map(String).join(" ");
    // A test's own Azurite is the storage (read back itself), not a writer to it.
    if (!/[\\/]azurite[\\/]/i.test(commandLine)) {
      childSpawnedSinceCheck = true;
      children.add(this);
      this.once("exit", () => children.delete(this));
      const name = commandLine.split(" ").slice(0, 2).join(" ").slice(0, 120);
      if (!secrecyStats.spawned.includes(name)) secrecyStats.spawned.push(name);
    }
    return originalSpawn.apply(this, args);
  };
}

async function scanStorage(since: number): Promise<CapturedOutput[]> {
  const found: CapturedOutput[] = [];
  // Loaded on first use: files without any registered secret (most unit tests) never pay for them.
  const [tables, queues, blobs] = await Promise.all([import("@azure/data-tables"), import("@azure/storage-queue"), import("@azure/storage-blob")]);
  const budget = { bytes: MAX_READ_BACK_BYTES };
  await Promise.all(storageAccounts().map((connectionString) => scanAccount(connectionString, since, found, budget, { tables, queues, blobs })));
  return found;
}

interface StorageSdks {
  tables: typeof import("@azure/data-tables");
  queues: typeof import("@azure/storage-queue");
  blobs: typeof import("@azure/storage-blob");
}

async function scanAccount(connectionString: string, since: number, found: CapturedOutput[], budget: { bytes: number }, sdk: StorageSdks): Promise<void> {
  const sinceDate = new RealDate(since - WINDOW_MARGIN_MS);
  const account = connectionString === suiteStorage ? "" : " (the test's own Azurite)";
  const tableNames = new Set<string>([...Object.values(TABLES), ...touched.table]);
  const queueNames = new Set<string>([...Object.values(QUEUES), ...touched.queue]);
  const containerNames = new Set<string>([...Object.values(CONTAINERS), ...touched.blob]);
  const alerts = process.env["ALERTS_CONTAINER"];
  if (alerts) containerNames.add(alerts);
  const add = (source: string, where: string, text: string): void => {
    if (text.length > 0) found.push({ source, where: `${where}${account}`, text, phase: "test" });
  };
  // Absent resources, and an Azurite a test already stopped (its afterAll runs before ours).
  const tolerated = (error: unknown): boolean => {
    const { statusCode, code } = error as { statusCode?: number; code?: string };
    return statusCode === 404 || code === "ECONNREFUSED" || code === "ECONNRESET";
  };
  // One try each: a read-back must not sit in retry backoff.
  const tableOptions = { allowInsecureConnection: true, retryOptions: { maxRetries: 0 } };
  const storageOptions = { retryOptions: { maxTries: 1 } };

  const tableScans = [...tableNames].map(async (name) => {
    const client = sdk.tables.TableClient.fromConnectionString(connectionString, name, tableOptions);
    try {
      const filter = `Timestamp ge datetime'${sinceDate.toISOString()}'`;
      for await (const entity of client.listEntities({ queryOptions: { filter } })) {
        add("table entity (stored)", `${name} (${String(entity.partitionKey)}, ${String(entity.rowKey)})`, JSON.stringify(entity));
      }
    } catch (error) {
      if (!tolerated(error)) throw error;
    }
  });
  const queueService = sdk.queues.QueueServiceClient.fromConnectionString(connectionString, storageOptions);
  const queueScans = [...queueNames].map(async (name) => {
    try {
      const { peekedMessageItems } = await queueService.getQueueClient(name).peekMessages({ numberOfMessages: 32 });
      for (const message of peekedMessageItems) {
        if (message.insertedOn.getTime() < sinceDate.getTime()) continue;
        add("queue message (stored)", `${name} ${message.messageId}`, [message.messageText, ...decodedBase64(message.messageText)].join("\n"));
      }
    } catch (error) {
      if (!tolerated(error)) throw error;
    }
  });
  const blobService = sdk.blobs.BlobServiceClient.fromConnectionString(connectionString, storageOptions);
  const blobScans = [...containerNames].map(async (name) => {
    const container = blobService.getContainerClient(name);
    try {
      for await (const blob of container.listBlobsFlat()) {
        const modified = blob.properties.lastModified;
        if (modified !== undefined && modified.getTime() < sinceDate.getTime()) continue;
        const size = blob.properties.contentLength ?? 0;
        if (budget.bytes <= 0) {
          secrecyStats.blobsUnread += 1;
          continue;
        }
        budget.bytes -= Math.min(size, MAX_BLOB_BYTES);
        const content = await container.getBlobClient(blob.name).downloadToBuffer(0, Math.min(size, MAX_BLOB_BYTES) || undefined);
        add("blob (stored)", `${name}/${blob.name}`, content.toString("utf8"));
      }
    } catch (error) {
      if (!tolerated(error)) throw error;
    }
  });
  await Promise.all([...tableScans, ...queueScans, ...blobScans]);
}

// --- the check ------------------------------------------------------------------------------------

/** Time the checks took in this process, for SECRECY_STATS (see secrecy.setup.ts). */
export const secrecyStats = { file: "", scans: 0, scanMs: 0, storageScans: 0, storageMs: 0, blobsUnread: 0, spawned: [] as string[], outputs: 0, outputChars: 0, stored: 0, secretsMax: 0 };

let installed = false;

/** Starts recording (idempotent). Outputs before this are not seen. */
export function installSecrecyCapture(): void {
  if (installed) return;
  installed = true;
  wrapStdio();
  wrapClientRequests();
  wrapChildProcesses();
  scannedUpTo = fileStartedAt = realNow();
  setRecording(true);
}

/** Puts every wrapped function back and stops recording. */
export function uninstallSecrecyCapture(): void {
  if (!installed) return;
  installed = false;
  process.stdout.write = originalStdout;
  process.stderr.write = originalStderr;
  for (const [m, original] of originalConsole) console[m] = original;
  ClientRequest.prototype.write = originalWrite;
  ClientRequest.prototype.end = originalEnd;
  childProto.spawn = originalSpawn;
  setRecording(false);
}

/**
 * Scans everything recorded since the previous check for every registered secret; throws a
 * message naming `label` (the test) on a leak. Does nothing (but forget the outputs) while no
 * secret is registered.
 *
 * What Azurite holds is read back (the app's tables, queues and containers and any other this
 * process wrote to, changed since the previous check) only when it can hold something the
 * in-process capture did not see: `storage: "always"`, or a child process was started since
 * the previous check or is still running (the crash tests' pull children). `storage: "file"`
 * reads back everything changed since the file started: the setup file does that once at the
 * end of each file, a backstop for writes that bypass http.ClientRequest.
 */
export async function checkSecrecy(label: string, options: { storage?: "auto" | "always" | "file" } = {}): Promise<void> {
  const started = performance.now();
  const outputs = drainOutputs();
  const mode = options.storage ?? "auto";
  const since = mode === "file" ? fileStartedAt : scannedUpTo;
  const childWrites = childSpawnedSinceCheck || anyChildRunning();
  scannedUpTo = realNow();
  childSpawnedSinceCheck = false;
  if (!hasRegisteredSecrets()) return;
  const secrets = knownSecrets();
  if (secrets.length === 0) return;
  let stored: CapturedOutput[] = [];
  if (mode !== "auto" || childWrites) {
    const storageStarted = performance.now();
    stored = await scanStorage(since);
    secrecyStats.storageMs += performance.now() - storageStarted;
    secrecyStats.storageScans += 1;
  }
  const findings = findSecrets(secrets, [...outputs, ...stored]);
  secrecyStats.scans += 1;
  secrecyStats.scanMs += performance.now() - started;
  secrecyStats.outputs += outputs.length;
  secrecyStats.outputChars += outputs.reduce((n, o) => n + o.text.length, 0) + stored.reduce((n, o) => n + o.text.length, 0);
  secrecyStats.stored += stored.length;
  secrecyStats.secretsMax = Math.max(secrecyStats.secretsMax, secrets.length);
  if (findings.length > 0) throw new Error(describeFindings(label, findings, secrets));
}
