#!/usr/bin/env node
// `npm start`. Without local.settings.json: the sandbox (scripts/sandbox.mjs), the whole product
// on this machine with a simulated Microsoft cloud. With it: local development against your own
// Azure resources, through the Functions host (`func start`, or Core Tools through npx).
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureAzurite, stopAzurite } from "./azurite.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

function funcCommand() {
  const probe = spawnSync("func", ["--version"], { stdio: "ignore" });
  if (probe.status === 0) return ["func", ["start"]];
  return ["npx", ["--yes", "azure-functions-core-tools@4", "start"]];
}

if (!existsSync(join(root, "local.settings.json"))) {
  console.log("No local.settings.json: starting the sandbox (simulated Microsoft cloud, no Azure account needed).");
  await import("./sandbox.mjs");
} else {
  await runFunctionsHost();
}

async function runFunctionsHost() {
  console.log("local.settings.json found: local development against your own Azure resources, through the Functions host.");
  const azurite = (await ensureAzurite(root)).child;
  const [command, args] = funcCommand();
  console.log(`Starting the Functions host: ${command} ${args.join(" ")}`);
  const host = spawn(command, args, { cwd: root, stdio: "inherit" });
  const stop = () => {
    host.kill("SIGINT");
    void stopAzurite(azurite);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  host.on("error", (error) => {
    console.error(`Could not run the Functions host (${error.message}).`);
  });
  host.on("exit", async (code) => {
    await stopAzurite(azurite);
    if (code) {
      console.error(
        `The Functions host exited with code ${code}. It needs Azure Functions Core Tools v4: install \`func\`, ` +
          "or let npx download it (needs internet access). See README, Local development.",
      );
    }
    process.exit(code ?? 0);
  });
}
