import { existsSync, readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { QueueServiceClient, type QueueClient, type ReceivedMessageItem } from "@azure/storage-queue";
import type { Cookie } from "@azure/functions";
import {
  findRepoRoot,
  subscribeToLogs,
  type HttpResult,
  type LogEntry,
  type QueueInvocationOptions,
  type RegisteredApp,
  type RegisteredFunction,
  workerQueueInput,
} from "./functionsHost";

/**
 * A small local stand-in for the Functions host, for machines where `func` cannot be installed.
 * It serves the functions that functionsHost.ts captured from the real compiled app (the same
 * capture the test suite uses): HTTP triggers over node:http, timer triggers on an interval (or
 * their NCRONTAB schedule), and queue triggers by polling Azure Storage (Azurite) with the
 * host's receive / retry / poison-queue rules. Invocations go through RegisteredApp's
 * http/timer/queue methods, so request/response and trigger-input mapping exist in one place.
 *
 * Deliberately no vitest import: the sandbox runs the compiled copy in dist-bench/ under plain node.
 */

export interface LocalDispatcherOptions {
  app: RegisteredApp; // from loadApp()
  port: number; // e.g. 7071; 0 picks a free port (see `url`)
  host?: string; // default "127.0.0.1"
  routePrefix?: string; // default from host.json extensions.http.routePrefix ("api")
  /** Storage connection string for queue triggers (Azurite). */
  storageConnectionString: string;
  /** Run every timer trigger this often instead of its NCRONTAB schedule (the sandbox uses ~20 s). */
  timerIntervalMs?: number;
  /**
   * host.json queues settings; defaults read from host.json: batchSize 16, newBatchThreshold 8, maxDequeueCount 5,
   * visibilityTimeout 30 s, maxPollingInterval 10 s, messageEncoding base64.
   * processingVisibilityMs: how long a received message stays invisible while its handler runs,
   * renewed at half that while it still runs (the host's fixed 10 minutes; tests shorten it).
   */
  queues?: Partial<{
    batchSize: number;
    newBatchThreshold: number;
    maxDequeueCount: number;
    visibilityTimeoutMs: number;
    maxPollingIntervalMs: number;
    processingVisibilityMs: number;
  }>;
  log?: (line: string) => void; // one line per invocation: time, function, outcome/status, duration
  /** Every line a handler logs through its InvocationContext, as `func start` prints them. */
  functionLog?: (entry: LogEntry) => void;
  /** Larger request bodies are answered 413 without invoking anything. Default 1 MiB. */
  maxRequestBodyBytes?: number;
  /** Where `GET /` sends a browser (the sandbox: its console), instead of a 404. */
  rootRedirect?: string;
  /**
   * Answer only requests addressed to a loopback name (localhost, 127.0.0.1, [::1]): a web page
   * that rebinds its own host name to 127.0.0.1 cannot then reach the keyless sandbox.
   */
  loopbackHostsOnly?: boolean;
  /** `app.logs` keeps at most this many entries while the dispatcher runs (it runs for hours). Default 10 000. */
  maxRetainedLogs?: number;
  /**
   * Test-only queue functions served beside the app's (whose registrations are fixed), e.g. one
   * that always throws to watch the retry and poison handling. The handler gets the message as
   * the worker would pass it (JSON-parsed when it parses) and the trigger metadata.
   */
  extraQueueHandlers?: ExtraQueueHandler[];
}

export interface ExtraQueueHandler {
  name: string;
  queueName: string;
  handler: (message: unknown, metadata: QueueInvocationOptions) => unknown;
}

export interface LocalDispatcher {
  url: string;
  close(): Promise<void>;
}

const DEFAULT_HOST = "127.0.0.1";
const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
const DEFAULT_MAX_RETAINED_LOGS = 10_000;
/** close() waits this long for running invocations before closing the server anyway. */
const CLOSE_GRACE_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// host.json
// ---------------------------------------------------------------------------------------------

interface QueueSettings {
  batchSize: number;
  newBatchThreshold: number;
  maxDequeueCount: number;
  visibilityTimeoutMs: number;
  maxPollingIntervalMs: number;
  processingVisibilityMs: number;
  messageEncoding: "base64" | "none";
}

interface HostSettings {
  routePrefix: string;
  queues: QueueSettings;
}

/** The Functions host's own defaults, for settings host.json leaves out. */
const HOST_QUEUE_DEFAULTS: QueueSettings = {
  batchSize: 16,
  newBatchThreshold: 8,
  maxDequeueCount: 5,
  visibilityTimeoutMs: 0,
  maxPollingIntervalMs: 60_000,
  // The queue listener's message lease (not configurable in the host).
  processingVisibilityMs: 10 * 60_000,
  messageEncoding: "base64",
};

interface HostJson {
  extensions?: {
    http?: { routePrefix?: unknown };
    queues?: Record<string, unknown>;
  };
}

/** host.json next to the app: the nearest one above the compiled entry, else at the repo root. */
function readHostJson(app: RegisteredApp): HostJson {
  for (let dir = dirname(app.entry); ; dir = dirname(dir)) {
    const candidate = join(dir, "host.json");
    if (existsSync(candidate)) return parseHostJson(candidate);
    if (dirname(dir) === dir) break;
  }
  const atRoot = join(findRepoRoot(), "host.json");
  return existsSync(atRoot) ? parseHostJson(atRoot) : {};
}

function parseHostJson(path: string): HostJson {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as HostJson;
  } catch (error) {
    throw new Error(`${path} is not valid JSON (${errorMessage(error)})`);
  }
}

/** A .NET TimeSpan as host.json writes it: "[d.]hh:mm:ss[.fff]". */
function parseTimeSpan(text: string): number | undefined {
  const m = /^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$/.exec(text.trim());
  if (!m) return undefined;
  const [days, hours, minutes, seconds] = [m[1], m[2], m[3], m[4]].map((v) => Number(v ?? 0)) as [number, number, number, number];
  const fraction = m[5] === undefined ? 0 : Number(`0.${m[5]}`);
  return (((days * 24 + hours) * 60 + minutes) * 60 + seconds + fraction) * 1000;
}

function resolveSettings(options: LocalDispatcherOptions, hostJson: HostJson): HostSettings {
  const json = hostJson.extensions?.queues ?? {};
  const number = (key: string, fallback: number): number => {
    const value = json[key];
    if (value === undefined) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value)) throw new Error(`host.json extensions.queues.${key} must be a number`);
    return value;
  };
  const timeSpan = (key: string, fallback: number): number => {
    const value = json[key];
    if (value === undefined) return fallback;
    const ms = typeof value === "string" ? parseTimeSpan(value) : undefined;
    if (ms === undefined) throw new Error(`host.json extensions.queues.${key} must be a TimeSpan such as "00:00:30"`);
    return ms;
  };
  const encoding = json["messageEncoding"] ?? HOST_QUEUE_DEFAULTS.messageEncoding;
  if (encoding !== "base64" && encoding !== "none") throw new Error(`host.json extensions.queues.messageEncoding must be "base64" or "none"`);
  const own = options.queues ?? {};
  const queues: QueueSettings = {
    batchSize: own.batchSize ?? number("batchSize", HOST_QUEUE_DEFAULTS.batchSize),
    newBatchThreshold: own.newBatchThreshold ?? number("newBatchThreshold", HOST_QUEUE_DEFAULTS.newBatchThreshold),
    maxDequeueCount: own.maxDequeueCount ?? number("maxDequeueCount", HOST_QUEUE_DEFAULTS.maxDequeueCount),
    visibilityTimeoutMs: own.visibilityTimeoutMs ?? timeSpan("visibilityTimeout", HOST_QUEUE_DEFAULTS.visibilityTimeoutMs),
    maxPollingIntervalMs: own.maxPollingIntervalMs ?? timeSpan("maxPollingInterval", HOST_QUEUE_DEFAULTS.maxPollingIntervalMs),
    processingVisibilityMs: own.processingVisibilityMs ?? HOST_QUEUE_DEFAULTS.processingVisibilityMs,
    messageEncoding: encoding,
  };
  // Storage returns at most 32 messages per receive; visibility is in whole seconds.
  if (!Number.isInteger(queues.batchSize) || queues.batchSize < 1 || queues.batchSize > 32) throw new Error("queues.batchSize must be 1-32");
  if (!Number.isInteger(queues.newBatchThreshold) || queues.newBatchThreshold < 0) throw new Error("queues.newBatchThreshold must be >= 0");
  if (!Number.isInteger(queues.maxDequeueCount) || queues.maxDequeueCount < 1) throw new Error("queues.maxDequeueCount must be >= 1");
  if (queues.visibilityTimeoutMs < 0) throw new Error("queues.visibilityTimeoutMs must be >= 0");
  if (queues.maxPollingIntervalMs < MIN_POLL_MS) throw new Error(`queues.maxPollingIntervalMs must be >= ${MIN_POLL_MS}`);
  if (queues.processingVisibilityMs < 1000) throw new Error("queues.processingVisibilityMs must be >= 1000");
  const prefix = options.routePrefix ?? hostJson.extensions?.http?.routePrefix ?? "api";
  if (typeof prefix !== "string") throw new Error("host.json extensions.http.routePrefix must be a string");
  return { routePrefix: prefix, queues };
}

/** Binding expressions such as "%PULL_QUEUE%" name app settings; the host substitutes them. */
function resolveAppSettings(text: string, what: string): string {
  return text.replace(/%([^%]+)%/g, (_, name: string) => {
    const value = process.env[name];
    if (value === undefined) throw new Error(`${what} refers to app setting ${name}, which is not set`);
    return value;
  });
}

// ---------------------------------------------------------------------------------------------
// Routing: Functions route templates (ASP.NET Core syntax) with constraints and precedence
// ---------------------------------------------------------------------------------------------

type Constraint = (value: string) => boolean;

type Segment =
  | { kind: "literal"; text: string }
  | { kind: "param"; name: string; optional: boolean; catchAll: boolean; defaultValue?: string; constraints: Constraint[] };

interface CompiledRoute {
  fn: RegisteredFunction;
  /** Upper case; undefined accepts every method. */
  methods?: readonly string[];
  segments: Segment[];
  /** Per segment, lower ranks first: literal, constrained, plain, optional, catch-all (ASP.NET precedence). */
  rank: number[];
}

type RouteMatch =
  | { kind: "found"; fn: RegisteredFunction; params: Record<string, string> }
  | { kind: "methodNotAllowed"; allowed: string[] }
  | { kind: "notFound" };

const GUID = /^(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}|\([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\))$/i;
const INTEGER = /^-?\d+$/;
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

function integerArgs(name: string, arg: string | undefined, count: number[]): number[] {
  const values = (arg ?? "").split(",").map((v) => v.trim());
  if (!count.includes(values.length) || values.some((v) => !INTEGER.test(v))) throw new Error(`constraint ${name}(${arg ?? ""}) needs ${count.join(" or ")} integer(s)`);
  return values.map(Number);
}

const inInt64 = (value: string): boolean => INTEGER.test(value) && BigInt(value) >= -(2n ** 63n) && BigInt(value) < 2n ** 63n;

/** The inline route constraints of ASP.NET Core that a Functions route may use. */
function makeConstraint(name: string, arg: string | undefined): Constraint {
  switch (name.toLowerCase()) {
    case "int":
      return (v) => INTEGER.test(v) && Number(v) >= -(2 ** 31) && Number(v) < 2 ** 31;
    case "long":
      return inInt64;
    case "bool":
      return (v) => /^(?:true|false)$/i.test(v);
    case "guid":
      return (v) => GUID.test(v);
    case "alpha":
      return (v) => /^[a-z]+$/i.test(v);
    case "decimal":
    case "double":
    case "float":
      return (v) => DECIMAL.test(v);
    case "datetime":
      return (v) => !Number.isNaN(Date.parse(v));
    case "required":
      return (v) => v !== "";
    case "minlength": {
      const [min = 0] = integerArgs(name, arg, [1]);
      return (v) => v.length >= min;
    }
    case "maxlength": {
      const [max = 0] = integerArgs(name, arg, [1]);
      return (v) => v.length <= max;
    }
    case "length": {
      const [a = 0, b] = integerArgs(name, arg, [1, 2]);
      return (v) => (b === undefined ? v.length === a : v.length >= a && v.length <= b);
    }
    case "min": {
      const [min = 0] = integerArgs(name, arg, [1]);
      return (v) => inInt64(v) && Number(v) >= min;
    }
    case "max": {
      const [max = 0] = integerArgs(name, arg, [1]);
      return (v) => inInt64(v) && Number(v) <= max;
    }
    case "range": {
      const [min = 0, max = 0] = integerArgs(name, arg, [2]);
      return (v) => inInt64(v) && Number(v) >= min && Number(v) <= max;
    }
    case "regex": {
      // Templates escape braces by doubling them; ASP.NET matches case-insensitively and unanchored.
      const pattern = new RegExp((arg ?? "").replace(/\{\{/g, "{").replace(/\}\}/g, "}"), "i");
      return (v) => pattern.test(v);
    }
    default:
      throw new Error(`unsupported route constraint "${name}"`);
  }
}

/** "{name}", "{name?}", "{name=default}", "{*rest}", "{id:int:min(1)}", "{code:regex(^\\d{{3}}$)}". */
function parseParameter(segment: string): Segment {
  const body = segment.slice(1, -1);
  let i = 0;
  let catchAll = false;
  while (body[i] === "*") {
    catchAll = true;
    i++;
  }
  const name = /^[A-Za-z_][A-Za-z0-9_]*/.exec(body.slice(i))?.[0];
  if (name === undefined) throw new Error(`"${segment}" has no parameter name`);
  i += name.length;
  const constraints: Constraint[] = [];
  while (body[i] === ":") {
    i++;
    const constraintName = /^[A-Za-z]+/.exec(body.slice(i))?.[0];
    if (constraintName === undefined) throw new Error(`"${segment}" has an empty constraint`);
    i += constraintName.length;
    let arg: string | undefined;
    if (body[i] === "(") {
      const start = i + 1;
      for (let depth = 0; i < body.length; i++) {
        if (body[i] === "(") depth++;
        else if (body[i] === ")" && --depth === 0) break;
      }
      if (i >= body.length) throw new Error(`"${segment}" has an unclosed constraint argument`);
      arg = body.slice(start, i);
      i++;
    }
    constraints.push(makeConstraint(constraintName, arg));
  }
  let optional = false;
  let defaultValue: string | undefined;
  if (body[i] === "?") {
    optional = true;
    i++;
  } else if (body[i] === "=") {
    defaultValue = body.slice(i + 1);
    i = body.length;
  }
  // Anything left is a complex segment such as "{name}.{ext}", which no function here uses.
  if (i !== body.length) throw new Error(`"${segment}" is not supported (one parameter per segment)`);
  return { kind: "param", name, optional, catchAll, ...(defaultValue !== undefined ? { defaultValue } : {}), constraints };
}

function parseSegment(segment: string): Segment {
  if (segment.startsWith("{") && segment.endsWith("}") && !segment.startsWith("{{")) return parseParameter(segment);
  if (/(?<!\{)\{(?!\{)/.test(segment)) throw new Error(`"${segment}" is not supported (one parameter per segment)`);
  return { kind: "literal", text: segment.replace(/\{\{/g, "{").replace(/\}\}/g, "}").toLowerCase() };
}

function segmentRank(segment: Segment): number {
  if (segment.kind === "literal") return 0;
  if (segment.catchAll) return 4;
  if (segment.optional || segment.defaultValue !== undefined) return 3;
  return segment.constraints.length > 0 ? 1 : 2;
}

function compareRanks(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const diff = (a[i] ?? -1) - (b[i] ?? -1);
    if (diff !== 0) return diff;
  }
  return 0;
}

function splitPath(path: string): string[] {
  const parts = path.replace(/^\/+/, "").split("/");
  if (parts.length > 0 && parts[parts.length - 1] === "") parts.pop();
  return parts;
}

function decodeSegment(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

function matchSegments(segments: Segment[], parts: string[]): Record<string, string> | undefined {
  if (parts.length > segments.length && !segments.some((s) => s.kind === "param" && s.catchAll)) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as Segment;
    if (segment.kind === "param" && segment.catchAll) {
      const decoded = parts.slice(i).map(decodeSegment);
      if (decoded.some((d) => d === undefined)) return undefined;
      const value = decoded.join("/");
      if (value === "" && segment.defaultValue !== undefined) params[segment.name] = segment.defaultValue;
      else if (value !== "" && !segment.constraints.every((c) => c(value))) return undefined;
      else if (value !== "") params[segment.name] = value;
      return params;
    }
    const raw = parts[i];
    if (raw === undefined) {
      if (segment.kind === "literal" || (!segment.optional && segment.defaultValue === undefined)) return undefined;
      if (segment.defaultValue !== undefined) params[segment.name] = segment.defaultValue;
      continue;
    }
    const value = decodeSegment(raw);
    if (value === undefined || value === "") return undefined;
    if (segment.kind === "literal") {
      if (value.toLowerCase() !== segment.text) return undefined;
    } else {
      if (!segment.constraints.every((c) => c(value))) return undefined;
      params[segment.name] = value;
    }
  }
  return params;
}

class Router {
  private readonly routes: CompiledRoute[];
  private readonly prefix: string[];

  constructor(functions: RegisteredFunction[], routePrefix: string) {
    this.prefix = splitPath(routePrefix).map((p) => p.toLowerCase());
    this.routes = functions.map(compileRoute).sort((a, b) => compareRanks(a.rank, b.rank));
  }

  match(method: string, pathname: string): RouteMatch {
    const parts = splitPath(pathname);
    const head = parts.slice(0, this.prefix.length).map((p) => decodeSegment(p)?.toLowerCase());
    if (head.length < this.prefix.length || head.some((p, i) => p !== this.prefix[i])) return { kind: "notFound" };
    const rest = parts.slice(this.prefix.length);
    const allowed = new Set<string>();
    for (const route of this.routes) {
      const params = matchSegments(route.segments, rest);
      if (params === undefined) continue;
      if (route.methods === undefined || route.methods.includes(method)) return { kind: "found", fn: route.fn, params };
      for (const m of route.methods) allowed.add(m);
    }
    return allowed.size > 0 ? { kind: "methodNotAllowed", allowed: [...allowed].sort() } : { kind: "notFound" };
  }
}

function compileRoute(fn: RegisteredFunction): CompiledRoute {
  const template = typeof fn.trigger.route === "string" && fn.trigger.route !== "" ? fn.trigger.route : fn.name;
  let segments: Segment[];
  try {
    segments = splitPath(resolveAppSettings(template, `route of ${fn.name}`)).map(parseSegment);
  } catch (error) {
    // Failing at start beats silently serving a route differently from the host.
    throw new Error(`function ${fn.name}: route "${template}": ${errorMessage(error)}`);
  }
  const methods = Array.isArray(fn.trigger.methods) ? (fn.trigger.methods as unknown[]).map((m) => String(m).toUpperCase()) : undefined;
  return { fn, ...(methods !== undefined ? { methods } : {}), segments, rank: segments.map(segmentRank) };
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/** Connection-level headers are the server's business, and Content-Length follows the bytes written. */
const NOT_RELAYED = new Set(["connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "proxy-connection", "te", "trailer", "set-cookie"]);
/** A body over the limit is still drained (so the client reads the 413) up to this much, then the socket is dropped. */
const DRAIN_LIMIT_FACTOR = 16;

interface HttpContext {
  app: RegisteredApp;
  rootRedirect: string | undefined;
  loopbackHostsOnly: boolean;
  router: Router;
  maxBodyBytes: number;
  tracker: InvocationTracker;
  isClosing(): boolean;
  /** For a request without a Host header. */
  fallbackHost(): string;
  log(fn: string, outcome: string, started: number, detail: string): void;
}

/** Repeated request headers joined as fetch does (cookies with "; "), names lower case. */
function requestHeaders(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = (req.rawHeaders[i] as string).toLowerCase();
    const value = req.rawHeaders[i + 1] as string;
    const existing = headers[name];
    headers[name] = existing === undefined ? value : `${existing}${name === "cookie" ? "; " : ", "}${value}`;
  }
  return headers;
}

/** The body, or "tooLarge" once it passes the limit (after draining it so the client gets the 413). */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | "tooLarge"> {
  const declared = Number(req.headers["content-length"]);
  let tooLarge = Number.isFinite(declared) && declared > limit;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit * DRAIN_LIMIT_FACTOR) {
      req.destroy();
      return "tooLarge";
    }
    if (size > limit) tooLarge = true;
    if (!tooLarge) chunks.push(chunk);
  }
  return tooLarge ? "tooLarge" : Buffer.concat(chunks);
}

/** A cookie as the Functions host writes it into Set-Cookie. */
function serializeCookie(cookie: Cookie): string {
  const parts = [`${cookie.name}=${cookie.value}`];
  if (cookie.expires !== undefined) parts.push(`expires=${new Date(cookie.expires).toUTCString()}`);
  if (cookie.maxAge !== undefined) parts.push(`max-age=${Math.trunc(cookie.maxAge)}`);
  if (cookie.domain) parts.push(`domain=${cookie.domain}`);
  if (cookie.path) parts.push(`path=${cookie.path}`);
  if (cookie.secure) parts.push("secure");
  if (cookie.sameSite) parts.push(`samesite=${cookie.sameSite.toLowerCase()}`);
  if (cookie.httpOnly) parts.push("httponly");
  return parts.join("; ");
}

function writeHttpResult(res: ServerResponse, result: HttpResult): void {
  result.headers.forEach((value, name) => {
    if (!NOT_RELAYED.has(name.toLowerCase())) res.setHeader(name, value);
  });
  const headers = result.headers as Headers & { getSetCookie?: () => string[] };
  const setCookies = [...(typeof headers.getSetCookie === "function" ? headers.getSetCookie() : []), ...result.cookies.map(serializeCookie)];
  if (setCookies.length > 0) res.setHeader("Set-Cookie", setCookies);
  res.statusCode = result.status;
  res.end(result.bodyBytes !== undefined ? Buffer.from(result.bodyBytes) : result.body);
}

function replyPlain(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store", ...headers });
  res.end(text);
}

async function serveHttp(ctx: HttpContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = Date.now();
  const method = (req.method ?? "GET").toUpperCase();
  let url: URL;
  try {
    url = new URL(req.url ?? "/", `http://${req.headers.host ?? ctx.fallbackHost()}`);
  } catch {
    replyPlain(res, 400, "Bad Request");
    return;
  }
  // Never the query: consent links and callbacks carry signatures and codes in it.
  const request = `${method} ${url.pathname}`;
  if (ctx.isClosing()) {
    replyPlain(res, 503, "Service Unavailable", { Connection: "close" });
    return;
  }
  if (ctx.loopbackHostsOnly && !["localhost", "127.0.0.1", "[::1]"].includes(url.hostname)) {
    replyPlain(res, 421, "Misdirected Request");
    ctx.log("(foreign host)", "421", started, request);
    return;
  }
  if (ctx.rootRedirect && url.pathname === "/" && (method === "GET" || method === "HEAD")) {
    res.writeHead(302, { Location: ctx.rootRedirect, "Content-Length": "0" });
    res.end();
    ctx.log("(root)", "302", started, request);
    return;
  }
  const match = ctx.router.match(method, url.pathname);
  if (match.kind === "notFound") {
    replyPlain(res, 404, "Not Found");
    ctx.log("(no route)", "404", started, request);
    return;
  }
  if (match.kind === "methodNotAllowed") {
    replyPlain(res, 405, "Method Not Allowed", { Allow: match.allowed.join(", ") });
    ctx.log("(no route)", "405", started, request);
    return;
  }
  const body = await readBody(req, ctx.maxBodyBytes);
  if (body === "tooLarge") {
    if (!res.destroyed) replyPlain(res, 413, `Payload Too Large (limit ${ctx.maxBodyBytes} bytes)`, { Connection: "close" });
    ctx.log(match.fn.name, "413", started, request);
    return;
  }
  let result: HttpResult;
  try {
    result = await ctx.tracker.track(
      ctx.app.http(match.fn.name, {
        method,
        url: url.href,
        headers: requestHeaders(req),
        ...(body.length > 0 ? { body: new Uint8Array(body.buffer, body.byteOffset, body.length) } : {}),
        params: match.params,
      }),
    );
  } catch (error) {
    // As the host: a generic 500, the detail only in the log.
    replyPlain(res, 500, "Internal Server Error");
    ctx.log(match.fn.name, "500", started, `${request}: ${errorMessage(error)}`);
    return;
  }
  writeHttpResult(res, result);
  ctx.log(match.fn.name, String(result.status), started, request);
}

function describeListenError(error: NodeJS.ErrnoException, port: number, host: string): string {
  switch (error.code) {
    case "EADDRINUSE":
      return `port ${port} is already in use on ${host}; stop the program using it or choose another port`;
    case "EACCES":
      return `permission denied to listen on port ${port}; choose a port above 1023`;
    case "EADDRNOTAVAIL":
      return `address ${host} is not available on this machine`;
    default:
      return `could not listen on ${host}:${port} (${error.code ?? error.message})`;
  }
}

function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      server.off("listening", onListening);
      reject(new Error(describeListenError(error, port, host)));
    };
    const onListening = (): void => {
      server.off("error", onError);
      resolve(server.address() as AddressInfo);
    };
    server.once("error", onError);
    server.once("listening", onListening);
    try {
      server.listen(port, host);
    } catch (error) {
      // An out-of-range port throws synchronously.
      server.off("error", onError);
      server.off("listening", onListening);
      reject(new Error(`could not listen on ${host}:${port} (${errorMessage(error)})`));
    }
  });
}

function urlHost(host: string): string {
  if (host === "0.0.0.0" || host === "::") return DEFAULT_HOST;
  return host.includes(":") ? `[${host}]` : host;
}

// ---------------------------------------------------------------------------------------------
// Timers
// ---------------------------------------------------------------------------------------------

interface TimerSchedule {
  /** The next due time (epoch ms) after `from`. */
  nextAfter(from: number): number;
}

interface CronField {
  min: number;
  max: number;
  names?: readonly string[];
}

const CRON_FIELDS: readonly CronField[] = [
  { min: 0, max: 59 },
  { min: 0, max: 59 },
  { min: 0, max: 23 },
  { min: 1, max: 31 },
  { min: 1, max: 12, names: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"] },
  { min: 0, max: 7, names: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"] },
];

function cronValue(text: string, field: CronField): number {
  const named = field.names?.indexOf(text.toUpperCase()) ?? -1;
  const value = named >= 0 ? named + field.min : /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(value >= field.min && value <= field.max)) throw new Error(`"${text}" is out of range ${field.min}-${field.max}`);
  return value;
}

/** One NCRONTAB field: "*", "5", "1-5", "*\/10", "0-30/5", "5/15", lists of those, month and day names. */
function parseCronField(text: string, field: CronField): number[] {
  const values = new Set<number>();
  for (const item of text.split(",")) {
    const [range = "", stepText] = item.split("/");
    const step = stepText === undefined ? 1 : Number(stepText);
    if (!Number.isInteger(step) || step < 1) throw new Error(`bad step in "${item}"`);
    let [from, to] = [field.min, field.max];
    if (range !== "*") {
      const [a = "", b] = range.split("-");
      from = cronValue(a, field);
      to = b !== undefined ? cronValue(b, field) : stepText !== undefined ? field.max : from;
    }
    for (let v = from; v <= to; v += step) values.add(v);
  }
  return [...values].sort((a, b) => a - b);
}

/** A six-field NCRONTAB schedule in UTC (as the host runs without WEBSITE_TIME_ZONE); day and weekday must both match. */
function cronSchedule(expression: string): TimerSchedule {
  const texts = expression.trim().split(/\s+/);
  if (texts.length !== 6) throw new Error(`"${expression}" is not a six-field NCRONTAB expression`);
  const [seconds, minutes, hours, days, months, weekdays] = texts.map((t, i) => parseCronField(t, CRON_FIELDS[i] as CronField)) as [
    number[], number[], number[], number[], number[], number[],
  ];
  const weekdaySet = new Set(weekdays.map((d) => d % 7));
  return {
    nextAfter(from) {
      const earliest = Math.floor(from / 1000) * 1000 + 1000;
      const firstDay = new Date(earliest);
      const dayStart = Date.UTC(firstDay.getUTCFullYear(), firstDay.getUTCMonth(), firstDay.getUTCDate());
      // Four years covers every satisfiable day/month/weekday combination, leap days included.
      for (let offset = 0; offset <= 4 * 366; offset++) {
        const day = new Date(dayStart + offset * 86_400_000);
        if (!months.includes(day.getUTCMonth() + 1) || !days.includes(day.getUTCDate()) || !weekdaySet.has(day.getUTCDay())) continue;
        for (const h of hours) for (const m of minutes) for (const s of seconds) {
          const at = day.getTime() + ((h * 60 + m) * 60 + s) * 1000;
          if (at >= earliest) return at;
        }
      }
      throw new Error(`"${expression}" never fires`);
    },
  };
}

/** When a timer with this NCRONTAB (or TimeSpan) schedule next fires after `after`, as this dispatcher runs it without timerIntervalMs. */
export function nextTimerOccurrence(schedule: string, after: Date): Date {
  const span = parseTimeSpan(schedule);
  if (span !== undefined && span > 0) return new Date(after.getTime() + span);
  return new Date(cronSchedule(schedule).nextAfter(after.getTime()));
}

function timerSchedule(fn: RegisteredFunction, intervalMs: number | undefined): TimerSchedule {
  if (intervalMs !== undefined) return { nextAfter: (from) => from + intervalMs };
  const expression = resolveAppSettings(String(fn.trigger.schedule ?? ""), `schedule of ${fn.name}`);
  // The host also accepts a TimeSpan ("00:05:00"): an interval.
  const span = parseTimeSpan(expression);
  if (span !== undefined && span > 0) return { nextAfter: (from) => from + span };
  try {
    return cronSchedule(expression);
  } catch (error) {
    throw new Error(`function ${fn.name}: schedule ${errorMessage(error)}`);
  }
}

/** setTimeout overflows past ~24.8 days and would fire at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/** A run starting later than this after its due time is reported to the handler as isPastDue. */
const PAST_DUE_MS = 1_000;

/** Runs one timer function on its schedule; the next run is scheduled only after the current one ends, so runs never overlap. */
class TimerRunner {
  private handle: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly fn: RegisteredFunction,
    private readonly ctx: DispatchContext,
    private readonly schedule: TimerSchedule,
  ) {
    if (fn.trigger.runOnStartup === true) void this.fire(Date.now());
    else this.arm(schedule.nextAfter(Date.now()));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.handle);
  }

  private arm(due: number): void {
    if (this.stopped) return;
    const delay = due - Date.now();
    this.handle = delay > MAX_TIMEOUT_MS ? setTimeout(() => this.arm(due), MAX_TIMEOUT_MS) : setTimeout(() => void this.fire(due), Math.max(0, delay));
  }

  private async fire(due: number): Promise<void> {
    if (this.stopped) return;
    const started = Date.now();
    try {
      await this.ctx.tracker.track(this.ctx.app.timer(this.fn.name, { isPastDue: started - due > PAST_DUE_MS }));
      this.ctx.log(this.fn.name, "succeeded", started, "timer");
    } catch (error) {
      // A failed run is the handler's problem to report; the schedule carries on, as in the host.
      this.ctx.log(this.fn.name, "failed", started, `timer: ${errorMessage(error)}`);
    }
    this.arm(this.schedule.nextAfter(Date.now()));
  }
}

// ---------------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------------

/** The host's polling: 100 ms after a non-empty receive; from 200 ms doubling to maxPollingInterval while empty. */
const MIN_POLL_MS = 100;
const FIRST_EMPTY_POLL_MS = 200;

const seconds = (ms: number): number => Math.ceil(ms / 1000);

/** The message text as the handler sees it (host.json messageEncoding); undefined if it cannot be decoded. */
function decodeMessageText(text: string, encoding: QueueSettings["messageEncoding"]): string | undefined {
  if (encoding === "none") return text;
  const compact = text.replace(/\s+/g, "");
  if (compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) return undefined;
  return Buffer.from(compact, "base64").toString("utf8");
}

/** Keeps a message invisible while its handler runs, renewing at half the visibility, as the host's queue listener does. */
class MessageLease {
  private popReceipt: string;
  private renewing: Promise<void> = Promise.resolve();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly queue: QueueClient,
    private readonly message: ReceivedMessageItem,
    private readonly visibilityMs: number,
    private readonly onError: (error: unknown) => void,
  ) {
    this.popReceipt = message.popReceipt;
    this.timer = setInterval(() => {
      this.renewing = this.renewing.then(() => this.renew());
    }, visibilityMs / 2);
  }

  get receipt(): string {
    return this.popReceipt;
  }

  /** Stops renewing; returns the pop receipt of the latest renewal, which the delete or release needs. */
  async end(): Promise<string> {
    clearInterval(this.timer);
    await this.renewing;
    return this.popReceipt;
  }

  private async renew(): Promise<void> {
    try {
      const renewed = await this.queue.updateMessage(this.message.messageId, this.popReceipt, undefined, seconds(this.visibilityMs));
      if (renewed.popReceipt) this.popReceipt = renewed.popReceipt;
    } catch (error) {
      this.onError(error);
    }
  }
}

/** Polls one queue for one queue-triggered function and applies the host's completion rules to each message. */
class QueuePoller {
  private active = 0;
  private wake: (() => void) | undefined;
  private readonly abort = new AbortController();
  private readonly loop: Promise<void>;
  private receiveFailing = false;
  private poisonQueueReady: Promise<unknown> | undefined;

  private readonly queue: QueueClient;
  private readonly poisonQueue: QueueClient;

  constructor(
    private readonly target: QueueTarget,
    private readonly settings: QueueSettings,
    private readonly ctx: DispatchContext,
  ) {
    this.queue = target.queue;
    this.poisonQueue = target.poisonQueue;
    this.loop = this.run();
  }

  /** Stops receiving; messages already received finish through the invocation tracker. */
  async stop(): Promise<void> {
    this.abort.abort();
    this.wake?.();
    await this.loop;
  }

  private get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  private async run(): Promise<void> {
    let delay = Math.min(FIRST_EMPTY_POLL_MS, this.settings.maxPollingIntervalMs);
    while (!this.stopped) {
      // A new batch only once the in-flight count is down to newBatchThreshold.
      if (this.active > this.settings.newBatchThreshold) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      const batch = await this.receive();
      // Dispatched even when stopping: received messages must be completed, not stranded invisible.
      for (const message of batch ?? []) this.dispatch(message);
      if (batch === undefined) {
        await sleep(this.settings.maxPollingIntervalMs, this.abort.signal);
      } else if (batch.length > 0) {
        delay = Math.min(FIRST_EMPTY_POLL_MS, this.settings.maxPollingIntervalMs);
        await sleep(MIN_POLL_MS, this.abort.signal);
      } else {
        await sleep(delay, this.abort.signal);
        delay = Math.min(this.settings.maxPollingIntervalMs, delay * 2);
      }
    }
  }

  /** A batch, or undefined when Storage failed (reported once per outage). */
  private async receive(): Promise<ReceivedMessageItem[] | undefined> {
    try {
      const { receivedMessageItems } = await this.queue.receiveMessages({
        numberOfMessages: this.settings.batchSize,
        visibilityTimeout: seconds(this.settings.processingVisibilityMs),
        abortSignal: this.abort.signal,
      });
      if (this.receiveFailing) this.ctx.note(`queue ${this.queue.name}: receiving again`);
      this.receiveFailing = false;
      return receivedMessageItems;
    } catch (error) {
      if (this.stopped) return [];
      if (!this.receiveFailing) this.ctx.note(`queue ${this.queue.name}: could not receive messages (${errorMessage(error)}); retrying`);
      this.receiveFailing = true;
      return undefined;
    }
  }

  private dispatch(message: ReceivedMessageItem): void {
    this.active++;
    void this.ctx.tracker.track(
      this.complete(message).finally(() => {
        this.active--;
        this.wake?.();
      }),
    );
  }

  /** Invokes the function for one message and deletes, releases or poisons it; never rejects. */
  private async complete(message: ReceivedMessageItem): Promise<void> {
    const started = Date.now();
    const { maxDequeueCount } = this.settings;
    const attempt = `${this.queue.name} message ${message.messageId} attempt ${message.dequeueCount}/${maxDequeueCount}`;
    // Failed as often as allowed already (e.g. a crash mid-run): the host poisons it without running it.
    if (message.dequeueCount > maxDequeueCount) {
      await this.poison(message, message.popReceipt, started, attempt, "dequeue count over maxDequeueCount");
      return;
    }
    const text = decodeMessageText(message.messageText, this.settings.messageEncoding);
    if (text === undefined) {
      await this.poison(message, message.popReceipt, started, attempt, "not valid base64 (host.json messageEncoding)");
      return;
    }
    const lease = new MessageLease(this.queue, message, this.settings.processingVisibilityMs, (error) =>
      this.ctx.note(`${attempt}: could not renew its visibility (${errorMessage(error)})`),
    );
    let failure: { error: unknown } | undefined;
    try {
      await this.target.invoke(text, this.triggerMetadata(message, lease.receipt));
    } catch (error) {
      failure = { error };
    }
    const popReceipt = await lease.end();
    if (failure === undefined) {
      await this.settle(attempt, "delete it", () => this.queue.deleteMessage(message.messageId, popReceipt));
      this.ctx.log(this.target.name, "succeeded", started, attempt);
    } else if (message.dequeueCount >= maxDequeueCount) {
      this.ctx.log(this.target.name, "failed", started, `${attempt}: ${errorMessage(failure.error)}`);
      await this.poison(message, popReceipt, started, attempt, `failed ${message.dequeueCount} times`);
    } else {
      // Left on the queue: visible again after visibilityTimeout, with a higher dequeue count.
      const retryMs = this.settings.visibilityTimeoutMs;
      await this.settle(attempt, "release it", () => this.queue.updateMessage(message.messageId, popReceipt, undefined, seconds(retryMs)));
      this.ctx.log(this.target.name, "failed", started, `${attempt}: ${errorMessage(failure.error)}; retry in ${seconds(retryMs)} s`);
    }
  }

  private triggerMetadata(message: ReceivedMessageItem, popReceipt: string): QueueInvocationOptions {
    return {
      dequeueCount: message.dequeueCount,
      id: message.messageId,
      popReceipt,
      insertionTime: message.insertedOn,
      expirationTime: message.expiresOn,
      nextVisibleTime: message.nextVisibleOn,
    };
  }

  /** Copies the message text unchanged (still base64) to "{queue}-poison" and deletes the original. */
  private async poison(message: ReceivedMessageItem, popReceipt: string, started: number, attempt: string, reason: string): Promise<void> {
    try {
      this.poisonQueueReady ??= this.poisonQueue.createIfNotExists().catch((error: unknown) => {
        this.poisonQueueReady = undefined;
        throw error;
      });
      await this.poisonQueueReady;
      await this.poisonQueue.sendMessage(message.messageText);
    } catch (error) {
      // Left in place: it comes back and is poisoned on a later receive.
      this.ctx.log(this.target.name, "poison-failed", started, `${attempt}: could not copy to ${this.poisonQueue.name} (${errorMessage(error)})`);
      return;
    }
    await this.settle(attempt, "delete it after poisoning", () => this.queue.deleteMessage(message.messageId, popReceipt));
    this.ctx.log(this.target.name, "poisoned", started, `${attempt}: ${reason}; moved to ${this.poisonQueue.name}`);
  }

  /** A delete or release that fails (lease lost, Storage down) only means the message comes back later. */
  private async settle(attempt: string, what: string, action: () => Promise<unknown>): Promise<void> {
    try {
      await action();
    } catch (error) {
      this.ctx.note(`${attempt}: could not ${what} (${errorMessage(error)}); it will be received again`);
    }
  }
}

interface QueueTarget {
  name: string;
  queue: QueueClient;
  poisonQueue: QueueClient;
  /** Runs the function on the decoded message text. */
  invoke(text: string, metadata: QueueInvocationOptions): Promise<unknown>;
}

function queueClients(connectionString: string, queueName: string): Pick<QueueTarget, "queue" | "poisonQueue"> {
  const service = QueueServiceClient.fromConnectionString(connectionString);
  return { queue: service.getQueueClient(queueName), poisonQueue: service.getQueueClient(`${queueName}-poison`) };
}

function queueTargetsOf(app: RegisteredApp, functions: RegisteredFunction[], connectionString: string, extra: ExtraQueueHandler[]): QueueTarget[] {
  const registered = functions.map((fn): QueueTarget => {
    const connection = typeof fn.trigger.connection === "string" && fn.trigger.connection !== "" ? fn.trigger.connection : "AzureWebJobsStorage";
    const conn = connection === "AzureWebJobsStorage" ? connectionString : process.env[connection];
    if (conn === undefined) throw new Error(`function ${fn.name}: queue connection ${connection} is not set`);
    const queueName = resolveAppSettings(String(fn.trigger.queueName ?? ""), `queueName of ${fn.name}`);
    // Through RegisteredApp.queue: the same input and trigger-metadata mapping the tests use.
    return { name: fn.name, ...queueClients(conn, queueName), invoke: (text, metadata) => app.queue(fn.name, text, metadata) };
  });
  const extras = extra.map(
    (h): QueueTarget => ({
      name: h.name,
      ...queueClients(connectionString, h.queueName),
      invoke: async (text, metadata) => h.handler(workerQueueInput(text), metadata),
    }),
  );
  return [...registered, ...extras];
}

// ---------------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------------

/** Every running invocation, so close() can wait for them. */
class InvocationTracker {
  private readonly running = new Set<Promise<unknown>>();

  constructor(private readonly afterEach: () => void) {}

  get size(): number {
    return this.running.size;
  }

  track<T>(invocation: Promise<T>): Promise<T> {
    this.running.add(invocation);
    const forget = (): void => {
      this.running.delete(invocation);
      this.afterEach();
    };
    invocation.then(forget, forget);
    return invocation;
  }

  /** True if everything finished within `ms`. */
  async drain(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (this.running.size > 0 && Date.now() < deadline) {
      await Promise.race([Promise.allSettled([...this.running]), sleep(deadline - Date.now())]);
    }
    return this.running.size === 0;
  }
}

interface DispatchContext {
  app: RegisteredApp;
  tracker: InvocationTracker;
  /** One line for one invocation. */
  log(fn: string, outcome: string, started: number, detail: string): void;
  /** A line about the dispatcher itself. */
  note(text: string): void;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** One line, no stack: log lines are read by people running the sandbox. */
function errorMessage(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > 500 ? `${line.slice(0, 500)}…` : line;
}

function trimLogs(app: RegisteredApp, max: number): void {
  if (app.logs.length > max) app.logs.splice(0, app.logs.length - max);
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}

export async function startLocalDispatcher(options: LocalDispatcherOptions): Promise<LocalDispatcher> {
  const { app } = options;
  const host = options.host ?? DEFAULT_HOST;
  const settings = resolveSettings(options, readHostJson(app));
  const writeLine = options.log ?? (() => undefined);
  const maxRetainedLogs = options.maxRetainedLogs ?? DEFAULT_MAX_RETAINED_LOGS;
  const tracker = new InvocationTracker(() => trimLogs(app, maxRetainedLogs));
  const ctx: DispatchContext = {
    app,
    tracker,
    log: (fn, outcome, started, detail) => writeLine(`${new Date().toISOString()} ${fn} ${outcome} ${Date.now() - started}ms ${detail}`),
    note: (text) => writeLine(`${new Date().toISOString()} [dispatcher] ${text}`),
  };

  // Everything that can be wrong with the registrations fails here, before a port is taken.
  const functions = [...app.functions.values()];
  const ofType = (type: string): RegisteredFunction[] => functions.filter((fn) => fn.trigger.type === type);
  const router = new Router(ofType("httpTrigger"), settings.routePrefix);
  const timers = ofType("timerTrigger").map((fn) => ({ fn, schedule: timerSchedule(fn, options.timerIntervalMs) }));
  const queues = queueTargetsOf(app, ofType("queueTrigger"), options.storageConnectionString, options.extraQueueHandlers ?? []);

  let closing = false;
  let fallbackHost = `${urlHost(host)}:${options.port}`;
  const httpContext: HttpContext = {
    app,
    router,
    maxBodyBytes: options.maxRequestBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    rootRedirect: options.rootRedirect,
    loopbackHostsOnly: options.loopbackHostsOnly ?? false,
    tracker,
    isClosing: () => closing,
    fallbackHost: () => fallbackHost,
    log: ctx.log,
  };
  const server = createServer((req, res) => {
    serveHttp(httpContext, req, res).catch((error: unknown) => {
      // A client that went away mid-body, typically; nothing useful to answer.
      if (!res.headersSent) replyPlain(res, 500, "Internal Server Error");
      else res.destroy();
      ctx.note(`${req.method ?? "?"} ${req.url?.split("?")[0] ?? ""}: ${errorMessage(error)}`);
    });
  });
  const address = await listen(server, options.port, host);
  fallbackHost = `${urlHost(host)}:${address.port}`;

  // The host creates the queues it listens to; a missing storage account is worth failing on.
  try {
    await Promise.all(queues.map((q) => q.queue.createIfNotExists()));
  } catch (error) {
    await closeServer(server);
    throw new Error(`could not create the trigger queues in the storage account (${errorMessage(error)})`);
  }
  const pollers = queues.map((q) => new QueuePoller(q, settings.queues, ctx));
  const runners = timers.map(({ fn, schedule }) => new TimerRunner(fn, ctx, schedule));
  const unsubscribe = options.functionLog !== undefined ? subscribeToLogs(app, options.functionLog) : undefined;

  let closed: Promise<void> | undefined;
  const shutdown = async (): Promise<void> => {
    closing = true;
    for (const runner of runners) runner.stop();
    await Promise.all(pollers.map((p) => p.stop()));
    const serverClosed = closeServer(server);
    if (!(await tracker.drain(CLOSE_GRACE_MS))) {
      ctx.note(`${tracker.size} invocation(s) still running after ${CLOSE_GRACE_MS / 1000} s; closing anyway`);
    }
    server.closeAllConnections();
    await serverClosed;
    unsubscribe?.();
  };
  return {
    url: `http://${urlHost(host)}:${address.port}`,
    close: () => (closed ??= shutdown()),
  };
}
