import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { fetch, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAzurite, type AzuriteInstance } from "../harness/azurite";

/**
 * The README's first command, minus `npm ci`: the sandbox script as a user starts it, with the
 * app, the simulated Microsoft cloud and the pull loop, checked from outside over HTTP.
 */

const SANDBOX = fileURLToPath(new URL("../../scripts/sandbox.mjs", import.meta.url));
let child: ChildProcess | undefined;
let output = "";
// Its own storage: the sandbox's queue loop would otherwise take other test files' pull messages.
let azurite: AzuriteInstance;

beforeAll(async () => {
  azurite = await startAzurite();
});
afterAll(async () => {
  child?.kill("SIGKILL");
  await azurite?.stop();
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function start(port: number, extraArgs: string[] = []): ChildProcess {
  output = "";
  const process_ = spawn(process.execPath, [SANDBOX, "--tenants", "3", "--timer-seconds", "2", "--alerts-per-minute", "60", ...extraArgs], {
    env: { ...process.env, PORT: String(port), SANDBOX_STORAGE_CONNECTION_STRING: azurite.connectionString },
    stdio: ["ignore", "pipe", "pipe"],
  });
  process_.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
  process_.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")));
  return process_;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms; sandbox output:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

interface TenantView {
  tenantId: string;
  status: string;
  source: string;
  health: { lastSuccessfulPullAt: string | null; alertsInLastPull: number | null };
}

describe("sandbox", () => {
  it("brings up the app with simulated customers whose alerts are pulled, says the cloud is simulated, and stops on Ctrl-C", async () => {
    const port = await freePort();
    child = start(port);
    // Generous bounds: on a 2-core CI machine the rest of the suite runs beside it.
    await until("the sandbox banner", async () => (output.includes("Sandbox running") ? true : undefined), 90_000);
    expect(output).toContain("simulated");
    expect(output).toContain(`http://localhost:${port}/api/tenants`);
    expect(output).toContain(`http://localhost:${port}/api/console`);
    const tenants = await until(
      "a pull of every simulated tenant",
      async () => {
        const response = await fetch(`http://127.0.0.1:${port}/api/tenants`);
        const body = (await response.json()) as { tenants: TenantView[] };
        const pulled = body.tenants.filter((t) => t.status === "connected" && (t.health.alertsInLastPull ?? 0) > 0);
        return body.tenants.length === 3 && pulled.length === 3 ? body.tenants : undefined;
      },
      90_000,
    );
    expect(tenants.every((t) => t.health.lastSuccessfulPullAt !== null)).toBe(true);
    // One simulated customer reads Defender XDR alerts through Microsoft Graph, and is pulled like the others.
    expect(tenants.map((t) => t.source).sort()).toEqual(["graph", "mde", "mde"]);
    // The console is served without sign-in in the sandbox, and says the cloud is simulated.
    // A page that rebinds its own name to 127.0.0.1 does not reach the keyless sandbox.
    // (undici's request, not fetch: fetch does not let a caller choose the Host header.)
    const rebound = await request(`http://127.0.0.1:${port}/api/tenants`, { headers: { host: `attacker.example:${port}` } });
    await rebound.body.text();
    expect(rebound.statusCode).toBe(421);
    const root = await fetch(`http://127.0.0.1:${port}/`, { redirect: "manual" });
    expect([root.status, root.headers.get("location")]).toEqual([302, "/api/console"]);
    const console = await fetch(`http://127.0.0.1:${port}/api/console`);
    expect(console.status).toBe(200);
    const page = await console.text();
    expect(page).toMatch(/simulated/i);
    for (const tenant of tenants) expect(page).toContain(tenant.tenantId);

    const exited = new Promise<number | null>((resolve) => child?.once("exit", (code) => resolve(code)));
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    // Nothing listens on the port any more.
    await expect(fetch(`http://127.0.0.1:${port}/api/tenants`)).rejects.toThrow();
  }, 240_000);

  it("says plainly when its port is taken, without a stack trace", async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", () => resolve()));
    const port = (blocker.address() as { port: number }).port;
    try {
      const second = start(port);
      const code = await new Promise<number | null>((resolve) => second.once("exit", (c) => resolve(c)));
      expect(code).not.toBe(0);
      expect(output).toContain(`Port ${port} is already in use`);
      expect(output).not.toMatch(/\n\s+at /);
    } finally {
      blocker.close();
    }
  }, 60_000);
});
