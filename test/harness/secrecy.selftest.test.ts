import { TableClient } from "@azure/data-tables";
import { BlobServiceClient } from "@azure/storage-blob";
import { QueueServiceClient } from "@azure/storage-queue";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { describe, expect, inject, it } from "vitest";
import { FakeEntra } from "../fakes/fakeEntra";
import { FakeEventHubs } from "../fakes/fakeEventHubs";
import { FakeKeyVault } from "../fakes/fakeKeyVault";
import { FakeLogsIngestion } from "../fakes/fakeLogsIngestion";
import { FakeSplunkHec } from "../fakes/fakeSplunkHec";
import { captureConsole, findRepoRoot, loadApp } from "./functionsHost";
import { describeFindings, drainOutputs, findSecrets, fingerprint, knownSecrets, registerSecrets, type CapturedOutput } from "./secrecy";
import { checkSecrecy, installSecrecyCapture } from "./secrecyCapture";

/**
 * Proves the after-each secrecy check (secrecy.setup.ts) catches a leak in each place it scans.
 * Each test registers a fresh secret, leaks it, and calls the same `checkSecrecy` the hook calls;
 * the secret is unregistered before the hook runs, so the hook itself passes. The last test
 * lets the real hook fail it and checks that failure.
 */

// Already done by the setup file; idempotent, so the direct checks also work without it.
installSecrecyCapture();

const newSecret = (): string => `selftest-${randomBytes(18).toString("base64url")}`;

/** Runs `leak` with `secret` registered and returns the message checkSecrecy failed with (or undefined). */
async function leakAndCheck(secret: string, leak: () => unknown, storage: "auto" | "always" = "always"): Promise<string | undefined> {
  // Whatever earlier tests left is not this test's business.
  drainOutputs();
  const unregister = registerSecrets(() => [secret], "self-test secret");
  try {
    await leak();
    return await checkSecrecy("the self-test", { storage }).then(
      () => undefined,
      (error: unknown) => (error instanceof Error ? error.message : String(error)),
    );
  } finally {
    unregister();
  }
}

function expectReported(message: string | undefined, secret: string, source: RegExp): void {
  expect(message, "checkSecrecy found nothing").toBeDefined();
  expect(message).toContain('in output of "the self-test"');
  expect(message).toMatch(source);
  expect(message).toContain(fingerprint(secret));
  expect(message?.includes(secret), "the failure must not print the secret").toBe(false);
}

describe("the matcher", () => {
  it("finds a secret as is, URL-encoded and JSON-escaped, with its source, location and line, redacted", () => {
    const plain = newSecret();
    const url = `https://hooks.example.test/run?sig=${randomBytes(12).toString("hex")}&x=${randomBytes(6).toString("hex")}`;
    const secrets = [
      { value: plain, label: "plain" },
      { value: url, label: "url" },
    ];
    const outputs: CapturedOutput[] = [
      { source: "stdout", where: "", text: `first line\nsecond has ${plain} in it`, phase: "test" },
      { source: "http response headers", where: "consent: GET /x -> 302", text: `location: /next?u=${encodeURIComponent(url)}`, phase: "test" },
      { source: "context.log", where: "f 1 [information]", text: "nothing here", phase: "test" },
    ];
    const findings = findSecrets(secrets, outputs);
    expect(findings.map((f) => [f.secret.label, f.output.source, f.form, f.line])).toEqual([
      ["plain", "stdout", "as is", 2],
      ["url", "http response headers", "URL-encoded", 1],
    ]);
    const message = describeFindings("file.test.ts > suite > test", findings, secrets);
    expect(message).toContain('output of "file.test.ts > suite > test"');
    expect(message).toContain(fingerprint(plain));
    expect(message).toContain("in stdout");
    expect(message).toContain("[consent: GET /x -> 302]");
    expect(message.includes(plain) || message.includes(url) || message.includes(encodeURIComponent(url))).toBe(false);
  });

  it("ignores secrets shorter than 8 characters and deduplicates providers", () => {
    const value = newSecret();
    const off = [registerSecrets(() => ["short", value], "a"), registerSecrets(() => [value], "b")];
    try {
      const mine = knownSecrets().filter((s) => s.value === value || s.value === "short");
      expect(mine).toEqual([{ value, label: "a, b" }]);
    } finally {
      for (const unregister of off) unregister();
    }
  });
});

describe("the registry", () => {
  it("holds the credentials the fakes are made with, as soon as they are made", () => {
    const tls = { certPem: "unused", keyPem: "unused" };
    const [clientSecret, vaultToken, hecToken, hubToken, ingestionToken] = [newSecret(), newSecret(), newSecret(), newSecret(), newSecret()];
    new FakeEntra({ ...tls, clients: [{ clientId: "client", clientSecret, redirectUris: [] }] });
    new FakeKeyVault({ ...tls, acceptedToken: vaultToken, tenantId: "tenant" });
    new FakeSplunkHec({ ...tls, tokens: [{ token: hecToken }] });
    new FakeEventHubs({ namespace: "ns.example.test", hubName: "hub", acceptedToken: hubToken });
    new FakeLogsIngestion({ ...tls, acceptedToken: ingestionToken, dcrImmutableId: "dcr", streamName: "Custom-X", columns: [] });
    const labels = new Map(knownSecrets().map((s) => [s.value, s.label]));
    expect(labels.get(clientSecret)).toMatch(/fake Entra/);
    expect(labels.get(vaultToken)).toMatch(/fake Key Vault/);
    expect(labels.get(hecToken)).toMatch(/Splunk HEC/);
    expect(labels.get(hubToken)).toMatch(/Event Hubs/);
    expect(labels.get(ingestionToken)).toMatch(/Logs Ingestion/);
  });
});

describe("the capture", () => {
  it("catches a secret written to stdout, stderr or the console, even when a test swallowed it", async () => {
    const secret = newSecret();
    expectReported(await leakAndCheck(secret, () => process.stdout.write(`token ${secret}\n`)), secret, /in stdout/);
    expectReported(await leakAndCheck(secret, () => process.stderr.write(Buffer.from(`token ${secret}\n`))), secret, /in stderr/);
    expectReported(await leakAndCheck(secret, () => console.log("refresh token", { secret })), secret, /in console\.log/);
    const swallowed = await leakAndCheck(secret, () => {
      const capture = captureConsole();
      try {
        console.error("oops", secret);
      } finally {
        capture.restore();
      }
    });
    expectReported(swallowed, secret, /in console\.error \(captureConsole\)/);
  });

  it("catches a secret in context.log and in an HTTP response of app.http", async () => {
    const app = loadApp(join(__dirname, "fixture", "index.js"));
    const secret = newSecret();
    const message = await leakAndCheck(secret, () => app.http("hello", { url: `/api/hello/${secret}` }));
    expectReported(message, secret, /in context\.log \[hello harness-\d+ \[information\]\]/);
    expect(message).toMatch(/in http response body \[hello: GET \/api\/hello\/«self… 33 chars» -> 201\] line 1: \{"name":"«self… 33 chars»"/);
  });

  it("catches a secret in a table entity, a queue message (base64) and a blob written to Azurite", async () => {
    const conn = inject("storageConnectionString");
    const suffix = randomBytes(4).toString("hex");
    const table = TableClient.fromConnectionString(conn, `SecrecySelfTest${suffix}`, { allowInsecureConnection: true });
    const queue = QueueServiceClient.fromConnectionString(conn).getQueueClient(`secrecy-selftest-${suffix}`);
    const container = BlobServiceClient.fromConnectionString(conn).getContainerClient(`secrecy-selftest-${suffix}`);
    await Promise.all([table.createTable(), queue.create(), container.create()]);
    try {
      const inTable = newSecret();
      const tableMessage = await leakAndCheck(inTable, () => table.upsertEntity({ partitionKey: "p", rowKey: "r", token: inTable }));
      expectReported(tableMessage, inTable, /in table entity \(written\) \[(PUT|PATCH|MERGE) \/devstoreaccount1\/SecrecySelfTest\w+\(PartitionKey='p',RowKey='r'\)\] line 1/);
      // Also found in what Azurite holds: what a child process writes is caught the same way.
      expect(tableMessage).toMatch(/in table entity \(stored\) \[SecrecySelfTest\w+ \(p, r\)\]/);

      const inQueue = newSecret();
      const encoded = Buffer.from(JSON.stringify({ tenantId: "t", token: inQueue })).toString("base64");
      const queueMessage = await leakAndCheck(inQueue, () => queue.sendMessage(encoded));
      expectReported(queueMessage, inQueue, /in queue message \(written\) \[POST \/devstoreaccount1\/secrecy-selftest-\w+\/messages\]/);
      expect(queueMessage).toMatch(/in queue message \(stored\)/);

      const inBlob = newSecret();
      const blobText = `{"alerts":[]}\n{"note":"${inBlob}"}\n`;
      const blobMessage = await leakAndCheck(inBlob, () => container.getBlockBlobClient("tenant/page-1.json").upload(blobText, blobText.length));
      expectReported(blobMessage, inBlob, /in blob \(written\) \[PUT \/devstoreaccount1\/secrecy-selftest-\w+\/tenant\/page-1\.json\] line 2/);
      expect(blobMessage).toMatch(/in blob \(stored\) \[secrecy-selftest-\w+\/tenant\/page-1\.json\]/);
    } finally {
      await Promise.allSettled([table.deleteTable(), queue.delete(), container.delete()]);
    }
  });

  it("reads back what a child process wrote to the app's tables, which this process cannot see", async () => {
    const conn = inject("storageConnectionString");
    const secret = newSecret();
    const partitionKey = `secrecy-selftest-${randomBytes(4).toString("hex")}`;
    const script = [
      'const { TableClient } = require("@azure/data-tables");',
      'const table = TableClient.fromConnectionString(process.env.CONN, "MsspTenants", { allowInsecureConnection: true });',
      "table.createTable().then(() => table.upsertEntity({ partitionKey: process.env.PK, rowKey: 'r', note: process.env.SECRET }))",
      "  .catch((error) => { console.error(error); process.exit(1); });",
    ].join("\n");
    const runChild = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ["-e", script], {
          cwd: findRepoRoot(),
          env: { ...process.env, CONN: conn, PK: partitionKey, SECRET: secret },
          stdio: "ignore",
        });
        child.once("error", reject);
        child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`the child exited with ${String(code)}`))));
      });
    try {
      // "auto", as after every test: the read-back happens because a child was started.
      const message = await leakAndCheck(secret, runChild, "auto");
      expectReported(message, secret, new RegExp(`in table entity \\(stored\\) \\[MsspTenants \\(${partitionKey}, r\\)\\]`));
      expect(message).not.toMatch(/\(written\)/);
    } finally {
      await TableClient.fromConnectionString(conn, "MsspTenants", { allowInsecureConnection: true }).deleteEntity(partitionKey, "r").catch(() => undefined);
    }
  });

  it("finds nothing when nothing leaked", async () => {
    const secret = newSecret();
    expect(await leakAndCheck(secret, () => process.stdout.write(`token ${secret.slice(0, 12)}…\n`))).toBeUndefined();
  });
});

describe("the after-each hook", () => {
  it("fails the test that leaked, naming it and where, without printing the secret", (context) => {
    const secret = newSecret();
    const unregister = registerSecrets(() => [secret], "self-test secret");
    // Runs after every afterEach hook: the secrecy hook must have failed this test, and only it.
    // Then this test is turned back to passed (the only way to observe an afterEach failure).
    context.onTestFinished(({ task }) => {
      unregister();
      const result = task.result as { state: string; errors?: Array<{ message?: string }> } | undefined;
      const messages = (result?.errors ?? []).map((e) => String(e.message));
      const [message] = messages;
      const expected =
        messages.length === 1 &&
        message !== undefined &&
        message.includes(`output of "test/harness/secrecy.selftest.test.ts > the after-each hook > ${task.name}"`) &&
        message.includes(`${fingerprint(secret)} (self-test secret) in stdout`) &&
        !message.includes(secret);
      if (!expected || result === undefined) {
        throw new Error(`expected exactly the secrecy hook's failure; got ${JSON.stringify(messages).split(secret).join("<secret>")}`);
      }
      result.state = "pass";
      result.errors = undefined;
    });
    process.stdout.write(`leaking ${secret}\n`);
  });
});
