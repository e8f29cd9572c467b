#!/usr/bin/env node
// `npm start`: run the app locally against Azurite. Starts Azurite from the project's own
// dependency when nothing is listening on the development-storage ports, then runs the
// Functions host (`func start`, or Core Tools through npx when `func` is not installed).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { connect } from "node:net";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

function portOpen(port) {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
  });
}

async function ensureAzurite() {
  const open = await Promise.all([10000, 10001, 10002].map(portOpen));
  if (open.every(Boolean)) {
    console.log("Azurite (or another storage emulator) is already listening on 10000-10002.");
    return undefined;
  }
  if (open.some(Boolean)) {
    throw new Error("Some of ports 10000-10002 are taken by something that is not a complete storage emulator; free them first.");
  }
  const location = join(root, ".azurite");
  mkdirSync(location, { recursive: true });
  const script = join(dirname(require.resolve("azurite/package.json")), "dist", "src", "azurite.js");
  const child = spawn(
    process.execPath,
    [script, "--location", location, "--skipApiVersionCheck", "--disableTelemetry", "--silent",
      "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1"],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  for (let i = 0; i < 100; i++) {
    if ((await Promise.all([10000, 10001, 10002].map(portOpen))).every(Boolean)) {
      console.log(`Azurite started (data in ${location}).`);
      return child;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error("Azurite did not start within 10 s");
}

function funcCommand() {
  const probe = spawnSync("func", ["--version"], { stdio: "ignore" });
  if (probe.status === 0) return ["func", ["start"]];
  return ["npx", ["--yes", "azure-functions-core-tools@4", "start"]];
}

if (!existsSync(join(root, "local.settings.json"))) {
  console.error("local.settings.json is missing: copy local.settings.example.json and fill in your values (see README).");
  process.exit(2);
}
const azurite = await ensureAzurite();
const [command, args] = funcCommand();
console.log(`Starting the Functions host: ${command} ${args.join(" ")}`);
const host = spawn(command, args, { cwd: root, stdio: "inherit" });
const stop = () => {
  host.kill("SIGINT");
  azurite?.kill("SIGTERM");
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
host.on("error", (error) => {
  console.error(`Could not run the Functions host (${error.message}).`);
});
host.on("exit", (code) => {
  azurite?.kill("SIGTERM");
  if (code) {
    console.error(
      `The Functions host exited with code ${code}. It needs Azure Functions Core Tools v4: install \`func\`, ` +
        "or let npx download it (needs internet access). See README, Local development.",
    );
  }
  process.exit(code ?? 0);
});
