// Azurite for `npm start`: reuse one that already listens on the development-storage ports, else
// start the project's own dependency with its data in a git-ignored folder under the checkout.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { connect } from "node:net";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
const PORTS = [10000, 10001, 10002];

/** Stops an Azurite this module started and waits (at most 5 s) until it has exited. */
export function stopAzurite(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve();
    }, 5_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

export function portOpen(port, host = "127.0.0.1") {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}

/**
 * @param {string} root the checkout
 * @param {{ inMemory?: boolean }} options inMemory: keep nothing on disk (the sandbox's simulated
 *   cloud is in memory too, so stored tenants would outlive the tokens of their consent)
 * @returns {Promise<{ child?: import("node:child_process").ChildProcess, reused: boolean, location?: string, connectionString: string }>}
 */
export async function ensureAzurite(root, options = {}) {
  const connectionString = "UseDevelopmentStorage=true";
  const open = await Promise.all(PORTS.map((port) => portOpen(port)));
  if (open.every(Boolean)) {
    console.log("Azurite (or another storage emulator) is already listening on 10000-10002: using it.");
    return { reused: true, connectionString };
  }
  if (open.some(Boolean)) {
    throw new Error("Some of ports 10000-10002 are taken by something that is not a complete storage emulator; free them first.");
  }
  const location = join(root, ".azurite");
  mkdirSync(location, { recursive: true });
  const script = join(dirname(require.resolve("azurite/package.json")), "dist", "src", "azurite.js");
  const child = spawn(
    process.execPath,
    [script, ...(options.inMemory ? ["--inMemoryPersistence", "--extentMemoryLimit", "512"] : ["--location", location]),
      "--skipApiVersionCheck", "--disableTelemetry", "--silent",
      "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1"],
    // Its own process group: a terminal's Ctrl-C reaches only the parent, which stops Azurite once
    // (two signals make Azurite throw while closing). Its start-up chatter is not shown.
    { stdio: ["ignore", "pipe", "inherit"], detached: true },
  );
  // Kept to explain a failed start (Azurite reports its errors on stdout).
  let said = "";
  child.stdout.on("data", (chunk) => (said = (said + chunk.toString("utf8")).slice(-2000)));
  for (let i = 0; i < 100; i++) {
    if ((await Promise.all(PORTS.map((port) => portOpen(port)))).every(Boolean)) {
      console.log(options.inMemory ? "Azurite started (in memory)." : `Azurite started (data in ${location}).`);
      return { child, reused: false, ...(options.inMemory ? {} : { location }), connectionString };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error(`Azurite did not start within 10 s${said.trim() ? `: ${said.trim().split("\n").pop()}` : ""}`);
}
