import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/**
 * Starts Azurite (blob, queue, table) as a child process on free ports, in
 * memory. A child process rather than Azurite's in-process classes, because
 * their constructor signatures are internal and change between versions.
 * No dependencies beyond Node and the azurite package, so local-run scripts
 * can reuse it.
 */

export const AZURITE_ACCOUNT = "devstoreaccount1";
/** Azurite's published development key; not a secret. */
export const AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export interface AzuriteInstance {
  connectionString: string;
  blobUrl: string;
  queueUrl: string;
  tableUrl: string;
  pid: number;
  stop(): Promise<void>;
}

export interface StartAzuriteOptions {
  startupTimeoutMs?: number;
  /** Cap on in-memory blob/queue content; Azurite defaults to half of the machine's RAM. */
  extentMemoryLimitMb?: number;
  /** Fixed ports for a long-running local instance; 0 (default) picks free ones. */
  ports?: { blob?: number; queue?: number; table?: number };
}

const LISTENING = /Azurite (Blob|Queue|Table) service is successfully listening at (http:\/\/127\.0\.0\.1:(\d+))/g;

export function buildConnectionString(blobUrl: string, queueUrl: string, tableUrl: string): string {
  return [
    "DefaultEndpointsProtocol=http",
    `AccountName=${AZURITE_ACCOUNT}`,
    `AccountKey=${AZURITE_KEY}`,
    `BlobEndpoint=${blobUrl}`,
    `QueueEndpoint=${queueUrl}`,
    `TableEndpoint=${tableUrl}`,
    "",
  ].join(";");
}

function azuriteEntry(): string {
  // `require` is absent when vitest runs this file as ESM (globalSetup), so resolve from the working directory then.
  const resolve = typeof require === "function" ? require.resolve : createRequire(join(process.cwd(), "package.json")).resolve;
  return join(dirname(resolve("azurite/package.json")), "dist", "src", "azurite.js");
}

function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off("exit", onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once("exit", onExit);
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  // SIGTERM runs Azurite's own handler, which closes its servers (~25 ms).
  child.kill("SIGTERM");
  if (await waitForExit(child, 5_000)) return;
  child.kill("SIGKILL");
  await waitForExit(child, 5_000);
}

export async function startAzurite(options: StartAzuriteOptions = {}): Promise<AzuriteInstance> {
  const timeoutMs = options.startupTimeoutMs ?? 30_000;
  const port = (p: number | undefined): string => String(p ?? 0);
  const args = [
    azuriteEntry(),
    "--blobHost", "127.0.0.1", "--blobPort", port(options.ports?.blob),
    "--queueHost", "127.0.0.1", "--queuePort", port(options.ports?.queue),
    "--tableHost", "127.0.0.1", "--tablePort", port(options.ports?.table),
    "--inMemoryPersistence",
    "--skipApiVersionCheck",
    "--disableTelemetry",
    // --silent only turns off the per-request access log; the "listening" lines
    // parsed below are still printed (azurite.js logs them unconditionally).
    "--silent",
    "--extentMemoryLimit", String(options.extentMemoryLimitMb ?? 512),
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], windowsHide: true });
  // A test run that exits without calling stop() must not leave Azurite behind.
  const killOnExit = (): void => {
    child.kill("SIGKILL");
  };
  process.once("exit", killOnExit);
  child.once("exit", () => process.off("exit", killOnExit));
  let stdout = "";
  let stderr = "";
  const urls: Partial<Record<"Blob" | "Queue" | "Table", string>> = {};

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`Azurite did not start within ${timeoutMs} ms.`)), timeoutMs);
      function fail(err: Error): void {
        clearTimeout(timer);
        reject(new Error(`${err.message}\nstdout:\n${stdout}\nstderr:\n${stderr}`));
      }
      child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
        // Only the startup banner matters; after it, data is discarded but
        // still read so a full pipe can't block Azurite.
        if (urls.Blob !== undefined && urls.Queue !== undefined && urls.Table !== undefined) return;
        stdout += chunk;
        for (const m of stdout.matchAll(LISTENING)) {
          const service = m[1] as "Blob" | "Queue" | "Table";
          urls[service] = `${String(m[2])}/${AZURITE_ACCOUNT}`;
        }
        if (urls.Blob !== undefined && urls.Queue !== undefined && urls.Table !== undefined) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
        if (stderr.length < 64_000) stderr += chunk;
      });
      child.once("error", (err) => fail(err));
      child.once("exit", (code, signal) => fail(new Error(`Azurite exited during startup (code ${String(code)}, signal ${String(signal)}).`)));
    });
  } catch (err) {
    await stopChild(child);
    throw err;
  }

  const blobUrl = urls.Blob as string;
  const queueUrl = urls.Queue as string;
  const tableUrl = urls.Table as string;
  return {
    connectionString: buildConnectionString(blobUrl, queueUrl, tableUrl),
    blobUrl,
    queueUrl,
    tableUrl,
    pid: child.pid ?? -1,
    stop: () => stopChild(child),
  };
}

/**
 * Runs Azurite until SIGINT/SIGTERM, printing the connection string, for
 * scripts such as a local `npm start`:
 *   node -e "require('./dist/test/harness/azurite').runAzuriteCli()"
 */
export async function runAzuriteCli(options: StartAzuriteOptions = {}): Promise<AzuriteInstance> {
  const azurite = await startAzurite(options);
  process.stdout.write(`AzureWebJobsStorage=${azurite.connectionString}\n`);
  const shutdown = (): void => {
    void azurite.stop().then(() => process.exit(0));
  };
  process.once("SIGINT", shutdown);
  process.once("SIGTERM", shutdown);
  return azurite;
}

// `node azurite.js` (after compilation) runs it directly; the typeof guards keep
// this inert when vitest evaluates the file as ESM.
if (typeof require === "function" && typeof module === "object" && require.main === module) {
  runAzuriteCli().catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
