#!/usr/bin/env node
// The sandbox: the whole product on this machine with no Azure account. Azurite for storage, the
// project's protocol fakes for Entra ID, Key Vault and the Defender API (a simulated Microsoft
// cloud), a few simulated customers whose alerts keep arriving, and the app's own registered
// functions served on http://localhost:7071/api by the local dispatcher the tests use too.
//
//   node scripts/sandbox.mjs [--tenants 3] [--alerts-per-minute 6] [--timer-seconds 20] [--reconsent-after-minutes 3]
//   PORT overrides 7071. Needs `npm run build` (dist/) and `npm run build:local` (the fakes and the local host, dist-bench/).
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Agent, fetch } from "undici";
import { ensureAzurite, portOpen, stopAzurite } from "./azurite.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const SIMULATED = "The Microsoft cloud here is simulated: no Azure account, no real customer data.";

function parseArgs(argv) {
  const opts = { tenants: 3, alertsPerMinute: 6, timerSeconds: 20, reconsentAfterMinutes: 3 };
  const names = { "--tenants": "tenants", "--alerts-per-minute": "alertsPerMinute", "--timer-seconds": "timerSeconds", "--reconsent-after-minutes": "reconsentAfterMinutes" };
  for (let i = 0; i < argv.length; i++) {
    const key = names[argv[i]];
    const value = Number(argv[i + 1]);
    if (argv[i] === "--help") {
      console.log("npm start -- [--tenants 3] [--alerts-per-minute 6] [--timer-seconds 20] [--reconsent-after-minutes 3]   (PORT overrides 7071)");
      process.exit(0);
    }
    if (!key || !Number.isFinite(value) || value < 0) {
      console.error(`Unknown or invalid option ${argv[i]} ${argv[i + 1] ?? ""}; try --help.`);
      process.exit(2);
    }
    opts[key] = value;
    i++;
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const port = Number(process.env.PORT || 7071);
const baseUrl = `http://localhost:${port}`;
const cleanups = [];
let stopping = false;

async function stopAll(code) {
  if (stopping) return;
  stopping = true;
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  process.exit(code);
}
process.on("SIGINT", () => {
  console.log("\nStopping the sandbox…");
  void stopAll(0);
});
process.on("SIGTERM", () => void stopAll(0));

function fail(message) {
  console.error(message);
  void stopAll(1);
}

async function main() {
  if (await portOpen(port)) {
    fail(`Port ${port} is already in use (another sandbox or Functions host?). Stop it, or run with PORT=<another port>.`);
    return;
  }
  // A storage emulator of the caller's choosing (the test suite's), else Azurite on its usual ports.
  const azurite = process.env.SANDBOX_STORAGE_CONNECTION_STRING
    ? { reused: true, connectionString: process.env.SANDBOX_STORAGE_CONNECTION_STRING }
    : await ensureAzurite(root, { inMemory: true });
  if (azurite.child) cleanups.push(() => stopAzurite(azurite.child));

  const fakesDir = join(root, "dist-bench", "test", "fakes");
  if (!existsSync(join(fakesDir, "fakeStack.js")) || !existsSync(join(root, "dist", "functions", "index.js"))) {
    fail("The sandbox runs the compiled app and fakes: start it with `npm start` (which builds both), or run `npm run build && npm run build:local` first.");
    return;
  }
  const { createTestCertificate } = require(join(fakesDir, "tls.js"));
  const { FakeEntra } = require(join(fakesDir, "fakeEntra.js"));
  const { FakeKeyVault } = require(join(fakesDir, "fakeKeyVault.js"));
  const { FakeDefender } = require(join(fakesDir, "fakeDefender.js"));
  const { FakeGraph } = require(join(fakesDir, "fakeGraph.js"));
  const { generateAlerts } = require(join(fakesDir, "alerts.js"));
  const { generateGraphAlerts } = require(join(fakesDir, "graphAlerts.js"));

  // A simulated Microsoft cloud: one MSSP app registration, a vault, the Defender API, Microsoft Graph.
  const tls = await createTestCertificate();
  const clientId = randomUUID();
  const clientSecret = `sandbox-${randomBytes(18).toString("base64url")}`;
  const msspTenantId = randomUUID();
  const vaultToken = `sandbox-vault-${randomBytes(18).toString("base64url")}`;
  const msspDisplayName = process.env.MSSP_DISPLAY_NAME || "Sandbox MSSP";
  const entra = new FakeEntra({
    certPem: tls.certPem,
    keyPem: tls.keyPem,
    // Named as the admin-consent prompt shows an app registration: its name and its publisher, the MSSP.
    clients: [{ clientId, clientSecret, redirectUris: [`${baseUrl}/api/consent/callback`], displayName: "MSSP Defender connector", publisherName: msspDisplayName }],
  });
  const vault = new FakeKeyVault({ certPem: tls.certPem, keyPem: tls.keyPem, acceptedToken: vaultToken, tenantId: msspTenantId });
  const defender = new FakeDefender({ certPem: tls.certPem, keyPem: tls.keyPem, verifyAccessToken: (token) => entra.verifyAccessToken(token), latencyMs: 50 });
  const graph = new FakeGraph({ certPem: tls.certPem, keyPem: tls.keyPem, verifyAccessToken: (token) => entra.verifyAccessToken(token), latencyMs: 50 });
  await Promise.all([entra.start(), vault.start(), defender.start(), graph.start()]);
  cleanups.push(() => Promise.allSettled([entra.stop(), vault.stop(), defender.stop(), graph.stop()]));
  // The consent page a person opens in their browser: plain http on loopback, so no certificate warning.
  const signInUrl = await entra.startBrowserListener(0, "localhost");

  Object.assign(process.env, {
    FUNCTIONS_WORKER_RUNTIME: "node",
    AzureWebJobsStorage: azurite.connectionString,
    MSSP_CLIENT_ID: clientId,
    MSSP_CLIENT_SECRET: clientSecret,
    MSSP_TENANT_ID: msspTenantId,
    MSSP_PUBLIC_BASE_URL: baseUrl,
    KEY_VAULT_URL: vault.url,
    ENTRA_AUTHORITY_HOST: entra.url,
    DEFENDER_API_BASE_URL: defender.url,
    GRAPH_API_BASE_URL: graph.url,
    LOCAL_DEV_CA_CERT_FILE: tls.certFile,
    LOCAL_DEV_VAULT_TOKEN: vaultToken,
    LOCAL_DEV_SIGN_IN_BASE_URL: signInUrl,
    // The console needs no sign-in here (in Azure it requires App Service authentication).
    LOCAL_DEV_SANDBOX: "true",
    MSSP_DISPLAY_NAME: msspDisplayName,
    // Alerts of a sandbox are seconds old; a short settle shows them on the next pull.
    PULL_SETTLE_SECONDS: "5",
    MDE_PARTNER_COMPANY: "Sandbox",
  });

  const harness = join(root, "dist-bench", "test", "harness");
  const { loadApp } = require(join(harness, "functionsHost.js"));
  const { startLocalDispatcher } = require(join(harness, "localDispatcher.js"));
  const app = loadApp(join(root, "dist", "functions", "index.js"));
  let dispatcher;
  try {
    dispatcher = await startLocalDispatcher({
      app,
      port,
      host: "127.0.0.1",
      storageConnectionString: azurite.connectionString,
      timerIntervalMs: opts.timerSeconds * 1000,
      rootRedirect: "/api/console",
      loopbackHostsOnly: true,
      log: (line) => console.log(`  ${line}`),
    });
  } catch (error) {
    fail(error instanceof Error ? error.message : String(error));
    return;
  }
  cleanups.push(() => dispatcher.close());

  // Simulated customers: registered and consented through the app's own routes, alerts arriving.
  const agent = new Agent({ connect: { ca: tls.certPem } });
  cleanups.push(() => agent.close());
  const api = async (method, path, body) => {
    const response = await fetch(`${baseUrl}${path}`, {
      method,
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
    });
    const text = await response.text();
    return { status: response.status, json: text ? JSON.parse(text) : undefined };
  };
  // One browser hop; `jar` keeps the cookies the app sets (the consent start binds the sign-in to them).
  const hop = async (url, jar) => {
    const cookie = [...jar].map(([name, value]) => `${name}=${value}`).join("; ");
    const response = await fetch(url, { redirect: "manual", dispatcher: agent, ...(cookie ? { headers: { cookie } } : {}) });
    await response.text();
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const eq = pair.indexOf("=");
      if (eq > 0) jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    return response.headers.get("location");
  };
  // Either model: the sign-in (delegated) or the admin-consent prompt (application), then the callback.
  const consentAutomatically = async (consentUrl) => {
    // The simulated admin approves without a page; people get the page (interactive) later.
    entra.setInteractive(false);
    try {
      const jar = new Map();
      const signIn = await hop(consentUrl, jar);
      const callback = signIn && (await hop(signIn, new Map()));
      if (callback) await hop(callback, jar);
    } finally {
      entra.setInteractive(true);
    }
  };
  const names = ["Contoso Ltd", "Northwind Traders", "Fabrikam Inc", "Tailspin Toys", "Woodgrove Bank", "Adatum Corp"];
  const streaming = new Set();
  // Each tenant's alerts arrive at the API its source reads.
  const stream = (tenantId, source) => {
    if (streaming.has(tenantId)) return;
    streaming.add(tenantId);
    if (source === "graph") graph.streamAlerts(tenantId, { perMinute: opts.alertsPerMinute });
    else defender.streamAlerts(tenantId, { perMinute: opts.alertsPerMinute });
  };
  let reconsentTenant;
  let applicationTenant;
  for (let i = 0; i < opts.tenants; i++) {
    const tenantId = randomUUID();
    const displayName = i < names.length ? names[i] : `Customer ${i + 1}`;
    // The second customer reads Defender XDR alerts through Microsoft Graph; the others the Defender for Endpoint API.
    const source = i === 1 ? "graph" : "mde";
    // The first was connected by admin consent to an application permission (no refresh token);
    // the others by an administrator's sign-in. A lone customer stays delegated: the re-consent
    // demo revokes a refresh token, which an application-model tenant does not have.
    const consentModel = i === 0 && opts.tenants > 1 ? "application" : "delegated";
    const registered = await api("POST", "/api/tenants", { tenantId, displayName, source, consentModel });
    if (registered.status !== 201) throw new Error(`registering a simulated tenant failed: HTTP ${registered.status}`);
    const backlog = { start: new Date(Date.now() - 2 * 3600_000), spacingMs: 5 * 60_000 };
    if (source === "graph") graph.addAlerts(tenantId, generateGraphAlerts(tenantId, 20 + 10 * i, backlog));
    else defender.addAlerts(tenantId, generateAlerts(tenantId, 20 + 10 * i, backlog));
    await consentAutomatically(registered.json.consentUrl);
    const connected = await api("GET", `/api/tenants/${tenantId}`);
    if (connected.json?.status !== "connected") throw new Error(`the simulated consent of ${displayName} (${consentModel}) did not connect it: ${connected.json?.status}`);
    stream(tenantId, source);
    if (consentModel === "application") applicationTenant = displayName;
    if (i === Math.min(2, opts.tenants - 1)) reconsentTenant = { tenantId, displayName };
  }
  // A tenant registered while the sandbox runs gets simulated alerts too.
  const watch = setInterval(async () => {
    try {
      const listed = await api("GET", "/api/tenants");
      for (const tenant of listed.json?.tenants ?? []) stream(tenant.tenantId, tenant.source);
    } catch {
      // The next tick tries again.
    }
  }, 15_000);
  watch.unref();
  cleanups.push(async () => clearInterval(watch));
  if (reconsentTenant && opts.reconsentAfterMinutes > 0) {
    // Every status can be seen: one customer's refresh token is revoked after a while.
    const timer = setTimeout(() => {
      entra.revokeRefreshTokens(reconsentTenant.tenantId);
      console.log(`  [sandbox] revoked ${reconsentTenant.displayName}'s refresh token: its next pull asks for re-consent`);
    }, opts.reconsentAfterMinutes * 60_000);
    timer.unref();
    cleanups.push(async () => clearTimeout(timer));
  }

  console.log(`
Sandbox running. ${SIMULATED}

  console           ${baseUrl}  (${baseUrl}/api/console: register a tenant, copy its consent link, open it, Accept)
  operator API      ${baseUrl}/api/tenants            (no key needed in the sandbox)
  sign-in page      ${signInUrl}  (simulated Microsoft Entra ID: sign-in and admin-consent prompts)
  storage           Azurite ${azurite.reused ? "(already running: tenants of earlier runs show as needing re-consent)" : "(in memory, gone at exit)"} on 127.0.0.1:10000-10002
  fakes (HTTPS)     Entra ${entra.url}, Key Vault ${vault.url}, Defender ${defender.url}, Graph ${graph.url}
  simulated tenants ${opts.tenants}, ${opts.alertsPerMinute} alerts/min each; pulls every ${opts.timerSeconds} s
${applicationTenant ? `  consent models    ${applicationTenant} by admin consent (application permission), the others by an admin's sign-in (delegated)\n` : ""}${reconsentTenant ? `  re-consent demo   ${reconsentTenant.displayName} needs re-consent after ${opts.reconsentAfterMinutes} min\n` : ""}
Stop with Ctrl-C.
`);
}

main().catch((error) => fail(`The sandbox could not start: ${error instanceof Error ? error.message : String(error)}`));
