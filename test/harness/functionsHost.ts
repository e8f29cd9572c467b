import { existsSync, readFileSync } from "node:fs";
import Module, { createRequire } from "node:module";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { inspect } from "node:util";
import type * as AzureFunctions from "@azure/functions";
import { recordOutput } from "./secrecy";

/**
 * Runs the real, compiled app in-process without the Functions host (whose
 * `func` CLI cannot be installed offline).
 *
 * @azure/functions only registers triggers when `require("@azure/functions-core")`
 * succeeds; otherwise it silently switches to "test mode" and registers
 * nothing. The host worker injects that module through Module._load, and so
 * does this file. The app is loaded with a native `require`, not vitest's
 * import, so it and @azure/functions share one module instance with the
 * HttpRequest/InvocationContext classes used here.
 */

type AzureFunctionsModule = typeof AzureFunctions;

export interface BindingInfo {
  type: string;
  direction: "in" | "out" | "inout";
  name?: string;
  [key: string]: unknown;
}

export interface FunctionMetadata {
  name: string;
  bindings: Record<string, BindingInfo>;
  retryOptions?: unknown;
  [key: string]: unknown;
}

export type FunctionCallback = (triggerInput: unknown, context: AzureFunctions.InvocationContext) => unknown;

export interface RegisteredFunction {
  name: string;
  metadata: FunctionMetadata;
  /** The binding with direction "in": httpTrigger (route, methods, authLevel), timerTrigger (schedule), queueTrigger (queueName). */
  trigger: BindingInfo;
  callback: FunctionCallback;
}

interface CoreState {
  registered: Map<string, { metadata: FunctionMetadata; callback: FunctionCallback }>;
  hooks: Array<{ hookName: string; callback: unknown }>;
  programmingModel: unknown;
  systemLogs: Array<{ level: string; category: string; message: string }>;
  hookInstalled: boolean;
  apps: Map<string, RegisteredApp>;
  /** Per app entry: listeners for handler log lines (see subscribeToLogs). */
  logListeners?: Map<string, Set<LogListener>>;
}

const STATE_KEY = Symbol.for("mssp-defender-connector.test.functionsCore");

// On globalThis because vitest may evaluate this file more than once per
// process (its own module graph vs. native require); the registry must be one.
function coreState(): CoreState {
  const holder = globalThis as unknown as Record<symbol, CoreState | undefined>;
  let state = holder[STATE_KEY];
  if (state === undefined) {
    state = { registered: new Map(), hooks: [], programmingModel: undefined, systemLogs: [], hookInstalled: false, apps: new Map() };
    holder[STATE_KEY] = state;
  }
  return state;
}

function createFakeCore(): Record<string, unknown> {
  const state = coreState();
  return {
    version: "3.10.1-harness",
    setProgrammingModel(model: unknown): void {
      state.programmingModel = model;
    },
    getProgrammingModel(): unknown {
      return state.programmingModel;
    },
    registerFunction(metadata: FunctionMetadata, callback: FunctionCallback): { dispose(): void } {
      if (state.registered.has(metadata.name)) throw new Error(`A function named "${metadata.name}" is already registered.`);
      state.registered.set(metadata.name, { metadata, callback });
      return { dispose: () => void state.registered.delete(metadata.name) };
    },
    registerHook(hookName: string, callback: unknown): { dispose(): void } {
      const entry = { hookName, callback };
      state.hooks.push(entry);
      return { dispose: () => void state.hooks.splice(state.hooks.indexOf(entry), 1) };
    },
    // Its presence also tells @azure/functions the "host" supports HTTP streaming checks.
    log(level: string, category: string, message: string): void {
      state.systemLogs.push({ level, category, message });
      recordOutput("host system log", `${level} ${category}`, message);
    },
  };
}

type ModuleLoad = (request: string, parent: unknown, isMain: boolean) => unknown;

/** Idempotent; installed on import so @azure/functions can never see a missing core first. */
export function installFunctionsCoreHook(): void {
  const state = coreState();
  if (state.hookInstalled) return;
  const internals = Module as unknown as { _load: ModuleLoad };
  const original = internals._load;
  const fakeCore = createFakeCore();
  internals._load = function (this: unknown, request: string, parent: unknown, isMain: boolean): unknown {
    if (request === "@azure/functions-core") return fakeCore;
    return original.call(this, request, parent, isMain);
  };
  state.hookInstalled = true;
}

installFunctionsCoreHook();

export interface LogEntry {
  level: string;
  message: string;
  functionName: string;
  invocationId: string;
}

export interface HttpInvocation {
  method?: string;
  /** Absolute, or a path such as "/api/auth/login?x=1" (prefixed with http://localhost:7071). */
  url: string;
  headers?: Record<string, string>;
  /** Text, or raw bytes (e.g. a local HTTP server passing a request body through unchanged). */
  body?: string | Uint8Array;
  /** Route parameters; when omitted they are parsed from the URL against the function's route. */
  params?: Record<string, string>;
}

export interface HttpResult {
  status: number;
  /** Case-insensitive (`get("location")`). */
  headers: Headers;
  body: string;
  /** The body's exact bytes (`body` is their UTF-8 decoding), for relaying a response unchanged. */
  bodyBytes?: Uint8Array;
  json<T>(): T;
  location: string | null;
  /** Cookies the handler set; the Functions host turns these into Set-Cookie headers, so they are not in `headers`. */
  cookies: AzureFunctions.Cookie[];
}

/** Trigger metadata of a queue invocation; anything omitted is made up as before. */
export interface QueueInvocationOptions {
  dequeueCount?: number;
  id?: string;
  popReceipt?: string;
  insertionTime?: Date;
  expirationTime?: Date;
  nextVisibleTime?: Date;
}

export type LogListener = (entry: LogEntry) => void;

export interface RegisteredApp {
  entry: string;
  functions: Map<string, RegisteredFunction>;
  http(name: string, init: HttpInvocation): Promise<HttpResult>;
  timer(name: string, opts?: { isPastDue?: boolean }): Promise<unknown>;
  queue(name: string, message: unknown, opts?: QueueInvocationOptions): Promise<unknown>;
  /** Any trigger type, with full control of the trigger input and context. */
  invoke(name: string, triggerInput: unknown, contextInit?: AzureFunctions.InvocationContextInit): Promise<unknown>;
  /** Everything the handlers logged through context.log/trace/debug/info/warn/error, in order. */
  logs: LogEntry[];
  /** Messages @azure/functions itself sent to the host (category "system"). */
  systemLogs: Array<{ level: string; category: string; message: string }>;
  hooks: Array<{ hookName: string; callback: unknown }>;
  /** Context of the most recent invocation, e.g. to read `extraOutputs`. */
  lastContext: AzureFunctions.InvocationContext | undefined;
  clearLogs(): void;
}

export function stringifyLogArg(arg: unknown): string {
  if (typeof arg === "string") return arg;
  if (arg instanceof Error) return inspect(arg, { depth: 10, breakLength: Infinity });
  if (arg === undefined || typeof arg === "function" || typeof arg === "symbol" || typeof arg === "bigint") return String(arg);
  try {
    return JSON.stringify(arg) ?? String(arg);
  } catch {
    return inspect(arg, { depth: 10, breakLength: Infinity });
  }
}

/** Walks up from this file (or the cwd) to the project's package.json. */
export function findRepoRoot(): string {
  const starts = [typeof __dirname === "string" ? __dirname : undefined, process.cwd()];
  for (const start of starts) {
    if (start === undefined) continue;
    for (let dir = start; ; dir = dirname(dir)) {
      const pkg = join(dir, "package.json");
      if (existsSync(pkg) && !dir.split(/[\\/]/).includes("node_modules")) {
        const parsed = JSON.parse(readFileSync(pkg, "utf8")) as { main?: unknown };
        if (typeof parsed.main === "string") return dir;
      }
      if (dirname(dir) === dir) break;
    }
  }
  throw new Error("functionsHost: no package.json with a `main` field above " + process.cwd());
}

function defaultEntry(): string {
  const root = findRepoRoot();
  const { main } = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { main: string };
  return join(root, main);
}

function tryJsonParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * A queue message as the Node.js worker hands it to the handler: the (decoded) text
 * JSON-parsed when it parses (@azure/functions fromRpcTypedData's tryJsonParse), else the text.
 */
export function workerQueueInput(message: unknown): unknown {
  return typeof message === "string" ? tryJsonParse(message) : message;
}

/** Matches a Functions route template ("items/{id}", "{name?}", "{id:int}") against a URL path after /api/. */
function matchRoute(route: string, pathname: string): Record<string, string> | undefined {
  const templateParts = route.replace(/^\/+|\/+$/g, "").split("/");
  const pathParts = pathname.replace(/^\/+|\/+$/g, "").split("/");
  if (pathParts[0] === "api") pathParts.shift();
  const params: Record<string, string> = {};
  for (let i = 0; i < templateParts.length; i++) {
    const template = templateParts[i] ?? "";
    const actual = pathParts[i];
    const param = /^\{\*?([A-Za-z0-9_]+)(\?)?(?::[^}]*)?\}$/.exec(template);
    if (param?.[1] !== undefined) {
      if (actual === undefined || actual === "") {
        if (param[2] === "?") continue;
        return undefined;
      }
      params[param[1]] = decodeURIComponent(actual);
    } else if (template.toLowerCase() !== (actual ?? "").toLowerCase()) {
      return undefined;
    }
  }
  return pathParts.length <= templateParts.length ? params : undefined;
}

let invocationCounter = 0;

/**
 * Loads the app once per process (later calls for the same entry return the
 * same object, as re-requiring a cached module registers nothing).
 * `entry` defaults to package.json `main`, which needs `npm run build` first.
 */
export function loadApp(entry?: string): RegisteredApp {
  installFunctionsCoreHook();
  const state = coreState();
  const entryPath = entry === undefined ? defaultEntry() : isAbsolute(entry) ? entry : resolve(findRepoRoot(), entry);
  const existing = state.apps.get(entryPath);
  if (existing !== undefined) return existing;
  if (!existsSync(entryPath)) throw new Error(`functionsHost: app entry ${entryPath} does not exist; run \`npm run build\` first.`);

  const nativeRequire = createRequire(entryPath);
  const azf = nativeRequire("@azure/functions") as AzureFunctionsModule;
  const before = new Set(state.registered.keys());
  nativeRequire(entryPath);

  const functions = new Map<string, RegisteredFunction>();
  for (const [name, { metadata, callback }] of state.registered) {
    if (before.has(name)) continue;
    const trigger = Object.values(metadata.bindings).find((b) => b.direction === "in");
    if (trigger === undefined) throw new Error(`functionsHost: function ${name} has no input (trigger) binding.`);
    functions.set(name, { name, metadata, trigger, callback });
  }
  if (functions.size === 0) {
    throw new Error(
      `functionsHost: ${entryPath} registered no functions. If @azure/functions was loaded before this harness it may be in "test mode".`,
    );
  }

  const app: RegisteredApp = {
    entry: entryPath,
    functions,
    logs: [],
    systemLogs: state.systemLogs,
    hooks: state.hooks,
    lastContext: undefined,
    clearLogs() {
      app.logs.length = 0;
    },

    async invoke(name, triggerInput, contextInit = {}) {
      const fn = lookup(name);
      const functionName = contextInit.functionName ?? name;
      const invocationId = contextInit.invocationId ?? `harness-${++invocationCounter}`;
      const context = new azf.InvocationContext({
        ...contextInit,
        functionName,
        invocationId,
        options: { trigger: { ...fn.trigger, name: fn.trigger.name ?? "trigger" }, ...contextInit.options },
        logHandler: (level, ...args) => {
          const entry: LogEntry = { level, message: args.map(stringifyLogArg).join(" "), functionName, invocationId };
          app.logs.push(entry);
          recordOutput("context.log", `${functionName} ${invocationId} [${level}]`, entry.message);
          notifyLogListeners(entryPath, entry);
        },
      });
      app.lastContext = context;
      return await fn.callback(triggerInput, context);
    },

    async http(name, init) {
      const fn = lookup(name, "httpTrigger");
      const method = (init.method ?? "GET").toUpperCase();
      const methods = Array.isArray(fn.trigger.methods) ? (fn.trigger.methods as string[]) : undefined;
      if (methods !== undefined && !methods.includes(method)) {
        throw new Error(`functionsHost: ${name} is registered for ${methods.join(",")}, not ${method}.`);
      }
      const url = /^https?:\/\//.test(init.url) ? init.url : `http://localhost:7071${init.url.startsWith("/") ? "" : "/"}${init.url}`;
      const route = typeof fn.trigger.route === "string" ? fn.trigger.route : name;
      const params = init.params ?? matchRoute(route, new URL(url).pathname) ?? {};
      const request = new azf.HttpRequest({
        method,
        url,
        headers: init.headers ?? {},
        body: init.body === undefined ? undefined : typeof init.body === "string" ? { string: init.body } : { bytes: init.body },
        params,
      });
      const result = await app.invoke(name, request);
      const response = result instanceof azf.HttpResponse ? result : new azf.HttpResponse((result ?? {}) as AzureFunctions.HttpResponseInit);
      const bodyBytes = new Uint8Array(await response.arrayBuffer());
      // What response.text() returns: UTF-8 with a leading BOM dropped.
      const body = new TextDecoder().decode(bodyBytes);
      // For the after-each secrecy scan (test/harness/secrecy.setup.ts): everything a client would see.
      const requestLine = `${name}: ${method} ${new URL(url).pathname} -> ${response.status}`;
      recordOutput("http response body", requestLine, body);
      recordOutput("http response headers", requestLine, [...response.headers].map(([k, v]) => `${k}: ${v}`).join("\n"));
      if (response.cookies.length > 0) recordOutput("http response cookies", requestLine, JSON.stringify(response.cookies));
      return {
        status: response.status,
        headers: response.headers,
        body,
        bodyBytes,
        json: <T>() => JSON.parse(body) as T,
        location: response.headers.get("location"),
        cookies: response.cookies,
      };
    },

    async timer(name, opts = {}) {
      lookup(name, "timerTrigger");
      const now = new Date();
      return app.invoke(name, {
        isPastDue: opts.isPastDue ?? false,
        schedule: { adjustForDST: true },
        scheduleStatus: {
          last: new Date(now.getTime() - 300_000).toISOString(),
          next: new Date(now.getTime() + 300_000).toISOString(),
          lastUpdated: now.toISOString(),
        },
      });
    },

    async queue(name, message, opts = {}) {
      lookup(name, "queueTrigger");
      const now = Date.now();
      // The worker JSON-parses string payloads when it can; mirror that.
      const input = workerQueueInput(message);
      return app.invoke(name, input, {
        triggerMetadata: {
          dequeueCount: opts.dequeueCount ?? 1,
          id: opts.id ?? `msg-${++invocationCounter}`,
          insertionTime: (opts.insertionTime ?? new Date(now)).toISOString(),
          expirationTime: (opts.expirationTime ?? new Date(now + 7 * 24 * 3600_000)).toISOString(),
          nextVisibleTime: (opts.nextVisibleTime ?? new Date(now + 30_000)).toISOString(),
          popReceipt: opts.popReceipt ?? "harness-pop-receipt",
        },
      });
    },
  };

  function lookup(name: string, type?: string): RegisteredFunction {
    const fn = functions.get(name);
    if (fn === undefined) throw new Error(`functionsHost: no function "${name}"; registered: ${[...functions.keys()].join(", ")}`);
    if (type !== undefined && fn.trigger.type !== type) throw new Error(`functionsHost: ${name} is a ${fn.trigger.type}, not a ${type}.`);
    return fn;
  }

  state.apps.set(entryPath, app);
  return app;
}

function notifyLogListeners(entry: string, logEntry: LogEntry): void {
  const listeners = coreState().logListeners?.get(entry);
  if (listeners === undefined) return;
  for (const listener of listeners) {
    // A broken listener must not fail the invocation that logged.
    try {
      listener(logEntry);
    } catch {
      /* ignored */
    }
  }
}

/**
 * Calls `listener` with every line a handler of `app` logs from now on (as they are also
 * appended to `app.logs`), e.g. to print them like the Functions host does. Returns the unsubscribe.
 */
export function subscribeToLogs(app: RegisteredApp, listener: LogListener): () => void {
  const state = coreState();
  state.logListeners ??= new Map();
  let listeners = state.logListeners.get(app.entry);
  if (listeners === undefined) {
    listeners = new Set();
    state.logListeners.set(app.entry, listeners);
  }
  const own = listeners;
  own.add(listener);
  return () => void own.delete(listener);
}

export interface ConsoleCapture {
  /** One entry per console call or stream write, in order. */
  lines: string[];
  text(): string;
  restore(): void;
}

/**
 * Records console.* and process.stdout/stderr output, e.g. to assert that a
 * secret never reaches the logs. Output is swallowed unless `passthrough`.
 */
export function captureConsole(opts: { passthrough?: boolean } = {}): ConsoleCapture {
  const lines: string[] = [];
  const methods = ["log", "info", "warn", "error", "debug", "trace"] as const;
  const originalConsole = methods.map((m) => [m, console[m]] as const);
  const originalStdout = process.stdout.write;
  const originalStderr = process.stderr.write;
  // console.* in plain Node writes through process.stdout; don't record it twice.
  let insideConsole = false;

  for (const m of methods) {
    const original = console[m];
    console[m] = (...args: unknown[]): void => {
      lines.push(args.map(stringifyLogArg).join(" "));
      // Swallowed output never reaches the secrecy setup file's own console wrapper.
      if (!opts.passthrough) recordOutput(`console.${m} (captureConsole)`, "", lines.at(-1) ?? "");
      if (!opts.passthrough) return;
      insideConsole = true;
      try {
        original.apply(console, args);
      } finally {
        insideConsole = false;
      }
    };
  }
  const patchStream = (stream: NodeJS.WriteStream, original: NodeJS.WriteStream["write"]): void => {
    stream.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]): boolean {
      if (!insideConsole) lines.push(typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString("utf8"));
      if (!opts.passthrough && !insideConsole) {
        recordOutput(`${stream === process.stderr ? "stderr" : "stdout"} (captureConsole)`, "", lines.at(-1) ?? "");
        const callback = rest.find((r): r is () => void => typeof r === "function");
        if (callback !== undefined) process.nextTick(callback);
        return true;
      }
      return (original as (...a: unknown[]) => boolean).call(stream, chunk, ...rest);
    } as NodeJS.WriteStream["write"];
  };
  patchStream(process.stdout, originalStdout);
  patchStream(process.stderr, originalStderr);

  return {
    lines,
    text: () => lines.join("\n"),
    restore() {
      for (const [m, original] of originalConsole) console[m] = original;
      process.stdout.write = originalStdout;
      process.stderr.write = originalStderr;
    },
  };
}
