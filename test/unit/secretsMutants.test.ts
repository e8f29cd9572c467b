import { randomBytes, randomUUID } from "node:crypto";
import { Agent as HttpsAgent } from "node:https";
import type { GetTokenOptions, TokenCredential } from "@azure/identity";
import { SecretClient } from "@azure/keyvault-secrets";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeyVaultSecretStore, SecretStoreError, type KeyVaultSecretStoreOptions, type SecretStore } from "../../shared/secrets/secretStore";
import {
  generationTime,
  newAccessTokenKey,
  newGeneration,
  TENANT_TOKEN_CONTENT_TYPE,
  tenantTokenSecretName,
  TenantTokenStore,
  type TenantTokenBundle,
} from "../../shared/secrets/tenantTokens";
import { FakeKeyVault, KvError } from "../fakes/fakeKeyVault";
import { createTestCertificate, type TestCertificate } from "../fakes/tls";

/**
 * shared/secrets through the real @azure/keyvault-secrets client against the HTTPS fake Key
 * Vault, without the app (issue 15, mutation testing): what is stored and with which tags and
 * content type, what is refused and with which message, how a name in transit is waited for and
 * where that wait ends, and which bundle wins when consents and rotations race.
 */

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let cert: TestCertificate;
let vault: FakeKeyVault;
const vaultTenant = randomUUID();
const vaultToken = `kv-${randomBytes(18).toString("base64url")}`;

beforeAll(async () => {
  cert = await createTestCertificate();
  vault = new FakeKeyVault({ certPem: cert.certPem, keyPem: cert.keyPem, acceptedToken: vaultToken, tenantId: vaultTenant });
  await vault.start();
});
afterAll(async () => {
  await vault?.stop();
});

function credential(): TokenCredential & { asked: (string | undefined)[] } {
  const asked: (string | undefined)[] = [];
  return {
    asked,
    async getToken(_scopes: string | string[], options?: GetTokenOptions) {
      asked.push(options?.tenantId);
      return { token: vaultToken, expiresOnTimestamp: Date.now() + 3_600_000 };
    },
  };
}

/** The options of a store as local development builds it (the test CA trusted, the challenge-resource check off), with short waits. */
function storeDefaults(): KeyVaultSecretStoreOptions {
  return {
    vaultUrl: vault.url,
    credential: credential(),
    localDevCaPem: cert.certPem,
    timeoutMs: 5_000,
    pollIntervalMs: 40,
    deleteWaitMs: 2_000,
    transitionWaitMs: 2_000,
  };
}

function store(overrides: Partial<KeyVaultSecretStoreOptions> = {}): SecretStore {
  return createKeyVaultSecretStore({ ...storeDefaults(), ...overrides });
}

const unique = (prefix: string) => `${prefix}-${randomBytes(5).toString("hex")}`;
const plain = { contentType: "text/plain", tags: {} };
const failureOf = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (error: unknown) => error,
  );

describe("SecretStoreError", () => {
  it("names the operation and the status, or why there is none, and nothing else", () => {
    const withStatus = new SecretStoreError("get", 503);
    expect(withStatus).toMatchObject({ name: "SecretStoreError", message: "Key Vault get failed with HTTP 503", operation: "get", status: 503, timedOut: false });
    expect("cause" in withStatus).toBe(false);
    const stalled = new SecretStoreError("set", undefined, { timedOut: true });
    expect(stalled.message).toBe("Key Vault set failed (no answer in time)");
    expect(stalled.timedOut).toBe(true);
    const cause = new Error("socket hang up");
    const dropped = new SecretStoreError("delete", undefined, { cause });
    expect(dropped.message).toBe("Key Vault delete failed (no response)");
    expect(dropped.timedOut).toBe(false);
    expect(dropped.cause).toBe(cause);
    expect(new SecretStoreError("list", undefined, { timedOut: false }).message).toBe("Key Vault list failed (no response)");
    expect(new SecretStoreError("get", undefined).message).toBe("Key Vault get failed (no response)");
  });
});

describe("the Key Vault secret store", () => {
  it("authenticates in the vault's tenant, stores value, content type and tags, and reads them back", async () => {
    const cred = credential();
    const secrets = store({ credential: cred });
    const name = unique("roundtrip");
    const before = Date.now();
    await secrets.set(name, "value-one-abc", { contentType: "application/x-test", tags: { kind: "probe", tenantId: "t1" } });
    expect(cred.asked).toEqual([vaultTenant]);
    expect(vault.peekLatest(name)).toMatchObject({ value: "value-one-abc", contentType: "application/x-test", tags: { kind: "probe", tenantId: "t1" } });
    const read = await secrets.get(name);
    expect(read).toMatchObject({ value: "value-one-abc", tags: { kind: "probe", tenantId: "t1" } });
    expect(read?.updatedOn?.getTime()).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(await secrets.get(unique("never-written"))).toBeUndefined();
    // A secret written without tags reads back with none, not undefined.
    const bare = unique("bare");
    vault.putSecret(bare, "bare-value-xyz");
    expect((await secrets.get(bare))?.tags).toEqual({});
  });

  it("reaches a vault through the given agent, which keeps the challenge-resource check on", async () => {
    const agent = new HttpsAgent({ ca: cert.certPem });
    try {
      const cred = credential();
      vault.resetStats();
      // 127.0.0.1 is not under vault.azure.net: the SDK refuses the challenge before asking for a token.
      const error = await failureOf(store({ credential: cred, localDevCaPem: undefined, agent }).get(unique("agent")));
      expect(error).toBeInstanceOf(SecretStoreError);
      expect(vault.challenges.withoutToken).toBeGreaterThanOrEqual(1);
      expect(cred.asked).toEqual([]);
      // Without the agent nor the local CA, the vault's certificate is not trusted: no request arrives.
      vault.resetStats();
      const untrusted = await failureOf(store({ credential: cred, localDevCaPem: undefined }).get(unique("untrusted")));
      expect(untrusted).toMatchObject({ name: "SecretStoreError", status: undefined, message: "Key Vault get failed (no response)" });
      expect(vault.challenges.total).toBe(0);
    } finally {
      agent.destroy();
    }
  });

  it("retries a failing vault twice, then fails with the status and never the value", async () => {
    const secrets = store();
    const name = unique("retried");
    await secrets.set(name, "retried-value-1", plain);
    vault.setFailure({ status: 500, times: 2 });
    expect((await secrets.get(name))?.value).toBe("retried-value-1");
    vault.setFailure({ status: 500, times: 3 });
    const error = await failureOf(secrets.get(name));
    vault.setFailure(null);
    expect(error).toMatchObject({ name: "SecretStoreError", status: 500, message: "Key Vault get failed with HTTP 500", timedOut: false });
    vault.setFailure({ status: 403, times: 1 });
    const refused = await failureOf(secrets.set(name, "secret-in-flight-999", plain));
    expect(refused).toMatchObject({ status: 403, message: "Key Vault set failed with HTTP 403" });
    expect(String((refused as Error).message)).not.toContain("secret-in-flight-999");
    expect(vault.peekLatest(name)?.value).toBe("retried-value-1");
  }, 20_000);

  it("abandons a call the vault never answers after its timeout, and says so", async () => {
    const secrets = store({ timeoutMs: 400 });
    const name = unique("stall");
    await secrets.set(name, "stall-value-1", plain);
    vault.hang(1);
    const started = Date.now();
    const error = await failureOf(secrets.get(name));
    vault.hang(0);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(error).toMatchObject({ name: "SecretStoreError", timedOut: true, message: "Key Vault get failed (no answer in time)" });
  });

  it("recovers a soft-deleted name before writing it again, unless told to write only over a live secret", async () => {
    const secrets = store();
    const name = unique("recover");
    await secrets.set(name, "first-value-1", plain);
    await secrets.delete(name);
    expect(vault.stateOf(name)).toBe("deleted");
    expect(await secrets.get(name)).toBeUndefined();

    vault.resetStats();
    const refused = await failureOf(secrets.set(name, "rotated-value-2", { ...plain, existingOnly: true }));
    expect(refused).toMatchObject({ name: "SecretStoreError", status: 409, message: "Key Vault set failed with HTTP 409" });
    expect(vault.stateOf(name)).toBe("deleted");
    expect(vault.conflicts.map((c) => `${c.method} ${c.innerCode}`)).toEqual(["PUT ObjectIsDeletedButRecoverable"]);

    await secrets.set(name, "consent-value-3", plain);
    expect(vault.peekLatest(name)).toMatchObject({ value: "consent-value-3", versions: 2 });
  });

  it("looks at the deleted secrets when a 409 names no reason, and writes once the name is free", async () => {
    const secrets = store();
    const deleted = unique("nocode-deleted");
    await secrets.set(deleted, "nocode-value-1", plain);
    await secrets.delete(deleted);
    vault.resetStats();
    vault.setFailure({ status: 409, code: "Conflict", times: 1 });
    await secrets.set(deleted, "nocode-value-2", plain);
    expect(vault.peekLatest(deleted)).toMatchObject({ value: "nocode-value-2", versions: 2 });
    // The look at the deleted secrets found it: recovered at once, without a second refused write.
    expect(vault.conflicts).toEqual([]);

    // A live name whose write got a bare 409 once: not deleted, so nothing is recovered; the next try lands.
    const live = unique("nocode-live");
    await secrets.set(live, "live-value-1", plain);
    vault.resetStats();
    vault.setFailure({ status: 409, code: "Conflict", times: 1 });
    await secrets.set(live, "live-value-2", plain);
    expect(vault.peekLatest(live)).toMatchObject({ value: "live-value-2", versions: 2 });
    expect(vault.conflicts).toEqual([]);

    // A look at the deleted secrets that itself fails is reported as the recovery's failure.
    vault.setFailure({ status: 409, code: "Conflict", times: 2 });
    const error = await failureOf(secrets.set(live, "live-value-3", plain));
    vault.setFailure(null);
    expect(error).toMatchObject({ name: "SecretStoreError", status: 409, message: "Key Vault recover failed with HTTP 409" });
  });

  it("gives up on a name that stays in transit past its wait with the 409, within the bound", async () => {
    const secrets = store({ transitionWaitMs: 300, deleteWaitMs: 50 });
    const name = unique("stuck");
    await secrets.set(name, "stuck-value-1", plain);
    vault.setFailure({ status: 409, code: "Conflict" });
    const started = Date.now();
    const error = await failureOf(secrets.set(name, "stuck-value-2", plain));
    vault.setFailure(null);
    const took = Date.now() - started;
    expect(error).toBeInstanceOf(SecretStoreError);
    expect(took).toBeLessThan(2_000);
    expect(vault.peekLatest(name)?.value).toBe("stuck-value-1");
  });

  it("waits for a delete still running before recovering and writing, and for a recovery before deleting again", async () => {
    vault.setRealism({ deleteDelayMs: 400, recoverDelayMs: 300 });
    try {
      const secrets = store({ deleteWaitMs: 50, transitionWaitMs: 3_000 });
      const name = unique("transit");
      await secrets.set(name, "transit-value-1", plain);
      vault.resetStats();
      const started = Date.now();
      await secrets.delete(name);
      // The delete's own wait is its bound: it returns while the vault is still deleting.
      expect(Date.now() - started).toBeLessThan(350);
      expect(vault.stateOf(name)).toBe("deleting");
      // A second delete while the first runs waits for it like for its own, looking again every poll interval.
      const second = Date.now();
      await store({ deleteWaitMs: 4_000 }).delete(name);
      expect(vault.stateOf(name)).toBe("deleted");
      expect(Date.now() - second).toBeLessThan(2_500);
      expect(vault.conflicts.map((c) => `${c.method} ${c.innerCode}`)).toEqual(["DELETE ObjectIsBeingDeleted"]);

      const other = unique("transit-put");
      await secrets.set(other, "transit-put-1", plain);
      await secrets.delete(other);
      vault.resetStats();
      const putStarted = Date.now();
      await store({ transitionWaitMs: 6_000 }).set(other, "transit-put-2", plain);
      expect(Date.now() - putStarted).toBeLessThan(3_500);
      expect(vault.peekLatest(other)?.value).toBe("transit-put-2");
      const codes = vault.conflicts.map((c) => `${c.method} ${c.innerCode}`);
      expect(codes[0]).toBe("PUT ObjectIsBeingDeleted");
      // It waited for the delete by looking at the deleted secrets, not by writing again and again.
      expect(codes.filter((c) => c === "PUT ObjectIsBeingDeleted")).toHaveLength(1);
      expect(codes).toContain("PUT ObjectIsDeletedButRecoverable");
    } finally {
      vault.setRealism({ deleteDelayMs: 0, recoverDelayMs: 0 });
    }
  });

  it("waits for its own slow delete to finish, and for a slow recovery before writing", async () => {
    vault.setRealism({ deleteDelayMs: 300, recoverDelayMs: 300 });
    try {
      const secrets = store();
      const name = unique("own-delete");
      await secrets.set(name, "own-1", plain);
      const started = Date.now();
      await secrets.delete(name);
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      expect(Date.now() - started).toBeLessThan(1_500);
      expect(vault.stateOf(name)).toBe("deleted");
      vault.resetStats();
      await secrets.set(name, "own-2", plain);
      expect(vault.peekLatest(name)?.value).toBe("own-2");
      // The recovery was awaited: the write after it was not refused.
      expect(vault.conflicts.map((c) => `${c.method} ${c.innerCode}`)).toEqual(["PUT ObjectIsDeletedButRecoverable"]);
    } finally {
      vault.setRealism({ deleteDelayMs: 0, recoverDelayMs: 0 });
    }
  });

  it("an offboarding during a short recovery waits for it and deletes what it brought back", async () => {
    vault.setRealism({ recoverDelayMs: 300 });
    try {
      const secrets = store();
      const name = unique("short-recovery");
      await secrets.set(name, "short-1", plain);
      await secrets.delete(name);
      const consent = secrets.set(name, "short-2", plain).catch(() => undefined);
      while (vault.stateOf(name) !== "recovering") await sleep(10);
      const started = Date.now();
      await store({ deleteWaitMs: 3_000 }).delete(name);
      expect(Date.now() - started).toBeLessThan(1_500);
      await consent;
      expect(vault.peekLatest(name)?.value).not.toBe("short-1");
    } finally {
      vault.setRealism({ recoverDelayMs: 0 });
    }
  });

  it("gives up a delete whose first request the vault never answers, after its timeout", async () => {
    const secrets = store({ timeoutMs: 400 });
    const name = unique("delete-stall");
    await secrets.set(name, "stall-1", plain);
    vault.hang(1);
    const error = await failureOf(secrets.delete(name));
    vault.hang(0);
    expect(error).toMatchObject({ name: "SecretStoreError", timedOut: true, message: "Key Vault delete failed (no answer in time)" });
  });

  it("a write to a name another writer is recovering waits for the recovery, and past its bound fails with the 409", async () => {
    vault.setRealism({ recoverDelayMs: 1_200 });
    try {
      const secrets = store();
      const name = unique("being-recovered");
      await secrets.set(name, "recovered-1", plain);
      await secrets.delete(name);
      const first = secrets.set(name, "recovered-2", plain);
      while (vault.stateOf(name) !== "recovering") await sleep(10);
      vault.resetStats();
      const started = Date.now();
      const error = await failureOf(store({ transitionWaitMs: 300 }).set(name, "impatient-3", plain));
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(error).toMatchObject({ name: "SecretStoreError", status: 409, message: "Key Vault set failed with HTTP 409" });
      // It looked more than once, then made one last write, whose 409 is the answer.
      const looks = vault.conflicts.filter((c) => c.method === "PUT" && c.innerCode === "ObjectIsBeingRecovered").length;
      expect(looks).toBeGreaterThanOrEqual(3);
      // One look per poll interval (40 ms) over 300 ms, not a busy loop.
      expect(looks).toBeLessThanOrEqual(15);
      const patient = store({ transitionWaitMs: 4_000 }).set(name, "patient-4", plain);
      // Both writers land once the recovery is over (in either order).
      await first;
      await patient;
      expect(vault.peekLatest(name)?.versions).toBe(3);
      expect(["recovered-2", "patient-4"]).toContain(vault.peekLatest(name)?.value);
    } finally {
      vault.setRealism({ recoverDelayMs: 0 });
    }
  });

  it("an offboarding during a recovery that outlasts its wait fails with 409 rather than claiming success", async () => {
    vault.setRealism({ recoverDelayMs: 1_500 });
    try {
      const secrets = store();
      const name = unique("recovering");
      await secrets.set(name, "recovering-1", plain);
      await secrets.delete(name);
      const consent = secrets.set(name, "recovering-2", plain).catch(() => undefined);
      while (vault.stateOf(name) !== "recovering") await sleep(10);
      const started = Date.now();
      const error = await failureOf(store({ deleteWaitMs: 200 }).delete(name));
      expect(Date.now() - started).toBeLessThan(1_200);
      expect(error).toMatchObject({ name: "SecretStoreError", status: 409, message: "Key Vault delete failed with HTTP 409" });
      await consent;
    } finally {
      vault.setRealism({ recoverDelayMs: 0 });
    }
  });

  it("deletes quietly what is not there, and reports a vault that refuses the delete", async () => {
    const secrets = store();
    await expect(secrets.delete(unique("absent"))).resolves.toBeUndefined();
    const name = unique("refused");
    await secrets.set(name, "refused-value-1", plain);
    vault.setFailure({ status: 403, times: 1 });
    const error = await failureOf(secrets.delete(name));
    expect(error).toMatchObject({ name: "SecretStoreError", status: 403, message: "Key Vault delete failed with HTTP 403" });
    expect(vault.stateOf(name)).toBe("live");
  });

  it("lists enabled versions oldest first with their tags, and reads the oldest or any one of them", async () => {
    vault.setRealism({ pageSize: 2 });
    try {
      const secrets = store();
      const name = unique("versions");
      expect(await secrets.versions(name)).toEqual([]);
      expect(await secrets.getOldest(name)).toBeUndefined();
      for (const [i, value] of ["v-one-111", "v-two-222", "v-three-333"].entries()) await secrets.set(name, value, { contentType: "text/plain", tags: { n: String(i) } });
      const versions = await secrets.versions(name);
      expect(versions.map((v) => v.tags)).toEqual([{ n: "0" }, { n: "1" }, { n: "2" }]);
      expect(versions.every((v) => v.version.length > 0 && v.createdOn > 0 && v.createdOn < Number.MAX_SAFE_INTEGER)).toBe(true);
      expect(await secrets.getOldest(name)).toBe("v-one-111");
      expect(await secrets.getVersion(name, versions[1]?.version ?? "")).toBe("v-two-222");
      expect(await secrets.getVersion(name, "0123456789abcdef0123456789abcdef")).toBeUndefined();

      // A disabled version is neither listed nor the oldest.
      const client = new SecretClient(vault.url, credential(), { tlsOptions: { ca: cert.certPem }, disableChallengeResourceVerification: true });
      await client.updateSecretProperties(name, versions[0]?.version ?? "", { enabled: false });
      expect((await secrets.versions(name)).map((v) => v.tags["n"])).toEqual(["1", "2"]);
      expect(await secrets.getOldest(name)).toBe("v-two-222");

      // A version written without tags lists with none.
      vault.putSecret(name, "v-four-444");
      expect((await secrets.versions(name)).at(-1)?.tags).toEqual({});
      // A vault that answers the listing with 404 has no versions to list.
      vault.setFailure({ status: 404, times: 1 });
      expect(await secrets.versions(name)).toEqual([]);

      vault.setFailure({ status: 403, times: 1 });
      await expect(secrets.versions(name)).rejects.toMatchObject({ message: "Key Vault list failed with HTTP 403" });
      vault.setFailure({ status: 403, times: 1 });
      await expect(secrets.getOldest(name)).rejects.toMatchObject({ message: "Key Vault get failed with HTTP 403" });
      vault.setFailure({ status: 403, times: 1 });
      await expect(secrets.getVersion(name, versions[1]?.version ?? "")).rejects.toMatchObject({ message: "Key Vault get failed with HTTP 403" });
    } finally {
      vault.setRealism({ pageSize: 0 });
      vault.setFailure(null);
    }
  });
});

describe("the Key Vault secret store, at the edges of its waits and refusals", () => {
  // A poll interval longer than the wait itself: every pause must end at the wait's bound, not a whole interval later.
  const slowPolls = { pollIntervalMs: 5_000 };

  it("waits out a name in transit by writing again once per poll interval (500 ms unless told), and by nothing else", async () => {
    const name = unique("cadence");
    await store().set(name, "cadence-1", plain);
    const seen: string[] = [];
    // Every write finds the name being recovered (by another caller, say): the store can only look again later.
    vault.onRequest((request) => {
      if (request.name !== name) return;
      seen.push(request.method);
      if (request.method === "PUT") throw new KvError(409, "Conflict", `Secret ${name} is currently being recovered.`, "ObjectIsBeingRecovered");
    });
    try {
      const byDefault = createKeyVaultSecretStore({ ...storeDefaults(), pollIntervalMs: undefined, transitionWaitMs: 1_200 });
      await expect(byDefault.set(name, "cadence-2", plain)).rejects.toMatchObject({ status: 409, message: "Key Vault set failed with HTTP 409" });
      // Writes at 0, 500 and 1,000 ms and a last one at the 1,200 ms bound; no look at the deleted secrets between them.
      expect(seen.every((method) => method === "PUT")).toBe(true);
      expect(seen.length).toBeGreaterThanOrEqual(3);
      expect(seen.length).toBeLessThanOrEqual(5);

      seen.length = 0;
      await expect(store({ pollIntervalMs: 100, transitionWaitMs: 1_000 }).set(name, "cadence-3", plain)).rejects.toMatchObject({ status: 409 });
      // About ten writes 100 ms apart, not two or three 500 ms apart.
      expect(seen.every((method) => method === "PUT")).toBe(true);
      expect(seen.length).toBeGreaterThanOrEqual(5);
      expect(seen.length).toBeLessThanOrEqual(12);
    } finally {
      vault.onRequest(null);
    }
    expect(vault.peekLatest(name)).toMatchObject({ value: "cadence-1", versions: 1 });
  });

  it("reads a disabled secret or version as absent, and still fails on any other refusal", async () => {
    const secrets = store();
    const name = unique("disabled");
    const first = vault.putSecret(name, "dis-one-111");
    const second = vault.putSecret(name, "dis-two-222");
    // The vault answers a disabled version's GET with 403 SecretDisabled: absent, as documented.
    vault.setEnabled(name, second, false);
    expect(await secrets.get(name)).toBeUndefined();
    expect(await secrets.getVersion(name, second)).toBeUndefined();
    expect(await secrets.getVersion(name, first)).toBe("dis-one-111");
    // A 403 for any other reason (a missing role) is a failure, never a silent "absent".
    vault.setFailure({ status: 403, times: 1 });
    const refused = await failureOf(secrets.get(name));
    expect(refused).toMatchObject({ name: "SecretStoreError", status: 403, message: "Key Vault get failed with HTTP 403" });
    vault.setFailure({ status: 403, times: 1 });
    await expect(secrets.getVersion(name, first)).rejects.toMatchObject({ status: 403, message: "Key Vault get failed with HTTP 403" });
  });

  it("orders versions by their creation time, not by the order the vault lists them in", async () => {
    const secrets = store();
    const name = unique("age-order");
    const now = Date.now();
    const ages = { middle: now - 100_000, newest: now, oldest: now - 200_000 };
    for (const [age, at] of Object.entries(ages)) vault.putSecret(name, `${age}-value-${at}`, { tags: { age }, createdOn: new Date(at) });
    const versions = await secrets.versions(name);
    expect(versions.map((v) => v.tags["age"])).toEqual(["oldest", "middle", "newest"]);
    expect(versions.map((v) => v.createdOn)).toEqual([ages.oldest, ages.middle, ages.newest].map((at) => Math.floor(at / 1000) * 1000));
    expect(await secrets.getOldest(name)).toBe(`oldest-value-${ages.oldest}`);
  });

  it("recovers nothing when a bare 409 comes from a live name: one look at the deleted secrets, then the write", async () => {
    const secrets = store();
    const name = unique("bare-live");
    await secrets.set(name, "bare-live-1", plain);
    const seen: string[] = [];
    vault.onRequest((request) => {
      if (request.name === name) seen.push(request.method);
    });
    // The injected 409 is answered before the hook: the hook sees what follows it.
    vault.setFailure({ status: 409, code: "Conflict", times: 1 });
    try {
      await secrets.set(name, "bare-live-2", plain);
    } finally {
      vault.onRequest(null);
    }
    expect(seen).toEqual(["GET", "PUT"]);
    expect(vault.peekLatest(name)).toMatchObject({ value: "bare-live-2", versions: 2 });
  });

  it("looks again after a recovery refused with 409 or 404, and reports any other refusal as the recovery's", async () => {
    const refusals = {
      409: (name: string) => new KvError(409, "Conflict", `Secret ${name} is currently being recovered.`, "ObjectIsBeingRecovered"),
      404: (name: string) => new KvError(404, "SecretNotFound", `Deleted Secret not found: ${name}`),
    };
    for (const [status, refusal] of Object.entries(refusals)) {
      const secrets = store();
      const name = unique(`recover-${status}`);
      await secrets.set(name, "recover-refused-1", plain);
      await secrets.delete(name);
      let refused = 0;
      vault.onRequest((request) => {
        if (request.method !== "POST" || request.name !== name || refused > 0) return;
        refused += 1;
        throw refusal(name);
      });
      try {
        await secrets.set(name, "recover-refused-2", plain);
      } finally {
        vault.onRequest(null);
      }
      expect(refused).toBe(1);
      expect(vault.peekLatest(name)).toMatchObject({ value: "recover-refused-2", versions: 2 });
    }

    const secrets = store();
    const name = unique("recover-403");
    await secrets.set(name, "recover-forbidden-1", plain);
    await secrets.delete(name);
    vault.onRequest((request) => {
      if (request.method === "POST" && request.name === name) throw new KvError(403, "Forbidden", "The caller does not have secrets/recover permission.");
    });
    let error: unknown;
    try {
      error = await failureOf(secrets.set(name, "recover-forbidden-2", plain));
    } finally {
      vault.onRequest(null);
    }
    expect(error).toMatchObject({ name: "SecretStoreError", status: 403, message: "Key Vault recover failed with HTTP 403" });
    expect(vault.stateOf(name)).toBe("deleted");
  });

  it("reports a refused look at another caller's running delete as the recovery's failure, and writes nothing", async () => {
    vault.setRealism({ deleteDelayMs: 1_000 });
    try {
      const name = unique("look-refused");
      await store().set(name, "look-refused-1", plain);
      await store({ deleteWaitMs: 50 }).delete(name);
      expect(vault.stateOf(name)).toBe("deleting");
      let written = false;
      let refused = 0;
      vault.onRequest((request) => {
        if (request.name !== name) return;
        if (request.method === "PUT") written = true;
        else if (written && request.method === "GET") {
          refused += 1;
          throw new KvError(403, "Forbidden", "The caller does not have secrets/get permission on deleted secrets.");
        }
      });
      let error: unknown;
      try {
        error = await failureOf(store({ transitionWaitMs: 3_000 }).set(name, "look-refused-2", plain));
      } finally {
        vault.onRequest(null);
      }
      expect(error).toMatchObject({ name: "SecretStoreError", status: 403, message: "Key Vault recover failed with HTTP 403" });
      expect(refused).toBe(1);
      expect(vault.allValues()).not.toContain("look-refused-2");
    } finally {
      vault.setRealism({ deleteDelayMs: 0 });
    }
  });

  it("gives up a recovery the vault never answers, after its timeout, and says so", async () => {
    const secrets = store({ timeoutMs: 400 });
    const name = unique("recover-stall");
    await secrets.set(name, "recover-stall-1", plain);
    await secrets.delete(name);
    // The write's 409 comes back; the recovery's first request (the SDK looks at the live secret first) never does.
    vault.onRequest((request) => {
      if (request.method !== "PUT" || request.name !== name) return;
      vault.onRequest(null);
      vault.hang(1);
    });
    const started = Date.now();
    let error: unknown;
    try {
      error = await failureOf(secrets.set(name, "recover-stall-2", plain));
    } finally {
      vault.onRequest(null);
      vault.hang(0);
    }
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(error).toMatchObject({ name: "SecretStoreError", status: undefined, timedOut: true, message: "Key Vault recover failed (no answer in time)" });
    expect(vault.stateOf(name)).toBe("deleted");
  });

  it("a write or a delete waiting out another caller's recovery stops at its bound, not a poll interval later", async () => {
    vault.setRealism({ recoverDelayMs: 1_500 });
    try {
      const name = unique("bound-recovering");
      const secrets = store({ transitionWaitMs: 5_000 });
      await secrets.set(name, "bound-recovering-1", plain);
      await secrets.delete(name);
      const first = secrets.set(name, "bound-recovering-2", plain);
      while (vault.stateOf(name) !== "recovering") await sleep(10);

      let started = Date.now();
      const refused = await failureOf(store({ ...slowPolls, transitionWaitMs: 300 }).set(name, "bound-recovering-3", plain));
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(refused).toMatchObject({ name: "SecretStoreError", status: 409, message: "Key Vault set failed with HTTP 409" });

      started = Date.now();
      const undeleted = await failureOf(store({ ...slowPolls, deleteWaitMs: 300 }).delete(name));
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(undeleted).toMatchObject({ name: "SecretStoreError", status: 409, message: "Key Vault delete failed with HTTP 409" });

      await first;
      expect(vault.peekLatest(name)?.value).toBe("bound-recovering-2");
    } finally {
      vault.setRealism({ recoverDelayMs: 0 });
    }
  });

  it("a write or a delete waiting out another caller's delete stops looking at its bound", async () => {
    vault.setRealism({ deleteDelayMs: 3_000 });
    try {
      const name = unique("bound-deleting");
      await store().set(name, "bound-deleting-1", plain);
      await store({ deleteWaitMs: 50 }).delete(name);
      expect(vault.stateOf(name)).toBe("deleting");

      let started = Date.now();
      await store({ ...slowPolls, deleteWaitMs: 300 }).delete(name);
      expect(Date.now() - started).toBeLessThan(1_500);
      expect(vault.stateOf(name)).toBe("deleting");

      started = Date.now();
      const refused = await failureOf(store({ ...slowPolls, transitionWaitMs: 300 }).set(name, "bound-deleting-2", plain));
      expect(Date.now() - started).toBeLessThan(1_500);
      expect(refused).toMatchObject({ name: "SecretStoreError", status: 409, message: "Key Vault set failed with HTTP 409" });
      expect(vault.stateOf(name)).toBe("deleting");
    } finally {
      vault.setRealism({ deleteDelayMs: 0 });
    }
  });

  it("after a refused recovery, pauses at most until its bound before the last write", async () => {
    const name = unique("bound-recover-refused");
    await store().set(name, "bound-refused-1", plain);
    await store().delete(name);
    vault.onRequest((request) => {
      if (request.method === "POST" && request.name === name) throw new KvError(409, "Conflict", `Secret ${name} is currently being recovered.`, "ObjectIsBeingRecovered");
    });
    const started = Date.now();
    let error: unknown;
    try {
      error = await failureOf(store({ ...slowPolls, transitionWaitMs: 300 }).set(name, "bound-refused-2", plain));
    } finally {
      vault.onRequest(null);
    }
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(error).toMatchObject({ name: "SecretStoreError", status: 409, message: "Key Vault set failed with HTTP 409" });
    expect(vault.stateOf(name)).toBe("deleted");
  });
});

describe("tenant tokens", () => {
  const bundle = (generationAt: number, overrides: Partial<TenantTokenBundle> = {}): TenantTokenBundle => ({
    refreshToken: `rt-${randomBytes(9).toString("hex")}`,
    refreshTokenObtainedAt: generationAt + 500,
    accessTokenKey: newAccessTokenKey(),
    generation: newGeneration(generationAt),
    ...overrides,
  });

  it("names the secret after the lower-cased tenant and tags it without any secret", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID().toUpperCase();
    const written = bundle(1_700_000_000_000);
    await tokens.write(tenantId, written);
    const name = `tenant-token-${tenantId.toLowerCase()}`;
    expect(tenantTokenSecretName(tenantId)).toBe(name);
    const peek = vault.peekLatest(name);
    expect(peek?.contentType).toBe("application/vnd.mssp.tenant-token+json");
    expect(TENANT_TOKEN_CONTENT_TYPE).toBe("application/vnd.mssp.tenant-token+json");
    expect(peek?.tags).toEqual({
      tenantId: tenantId.toLowerCase(),
      kind: "defender-delegated-refresh-token",
      obtainedAt: new Date(written.refreshTokenObtainedAt).toISOString(),
      generation: written.generation,
    });
    expect(JSON.parse(peek?.value ?? "{}")).toEqual(written);
    expect(await tokens.read(tenantId)).toEqual(written);
    expect(await tokens.read(tenantId.toLowerCase())).toEqual(written);
    await tokens.remove(tenantId);
    expect(vault.stateOf(name)).toBe("deleted");
    expect(await tokens.read(tenantId)).toBeUndefined();
  });

  it("makes generations that compare by their time and differ every time; a bundle without one is the oldest", async () => {
    const a = newGeneration(1_000);
    const b = newGeneration(1_000);
    expect(a).toMatch(/^1000-[0-9a-f]{12}$/);
    expect(a).not.toBe(b);
    expect(generationTime(a)).toBe(1_000);
    expect(generationTime("0-legacy")).toBe(0);
    expect(generationTime("garbage")).toBe(0);
    expect(Buffer.from(newAccessTokenKey(), "base64")).toHaveLength(32);

    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const name = tenantTokenSecretName(tenantId);
    const legacy = { refreshToken: "rt-legacy-abcdef", refreshTokenObtainedAt: 5, accessTokenKey: "a2V5" };
    vault.putSecret(name, JSON.stringify(legacy));
    expect(await tokens.read(tenantId)).toEqual({ ...legacy, generation: "0-legacy" });
    vault.putSecret(name, JSON.stringify({ ...legacy, generation: "" }));
    expect((await tokens.read(tenantId))?.generation).toBe("0-legacy");
    vault.putSecret(name, JSON.stringify({ ...legacy, generation: 7 }));
    expect((await tokens.read(tenantId))?.generation).toBe("0-legacy");
  });

  it("reads an unreadable or incomplete bundle as none", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const name = tenantTokenSecretName(tenantId);
    const complete = { refreshToken: "rt-complete-abc", refreshTokenObtainedAt: 5, accessTokenKey: "a2V5", generation: "7-abc" };
    vault.putSecret(name, JSON.stringify(complete));
    expect(await tokens.read(tenantId)).toEqual(complete);
    for (const broken of [
      "not json at all",
      JSON.stringify({ ...complete, refreshToken: 5 }),
      JSON.stringify({ ...complete, refreshTokenObtainedAt: "5" }),
      JSON.stringify({ ...complete, accessTokenKey: null }),
    ]) {
      vault.putSecret(name, broken);
      expect(await tokens.read(tenantId)).toBeUndefined();
    }
  });

  it("a rotation writes over its own or an older consent, never over a newer one, and never brings a deleted token back", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const name = tenantTokenSecretName(tenantId);
    // Nothing stored: nothing written, the rotation is handed back.
    const orphan = bundle(2_000);
    expect(await tokens.writeRotation(tenantId, orphan)).toBe(orphan);
    expect(vault.stateOf(name)).toBe("absent");

    const consent = bundle(2_000);
    await tokens.write(tenantId, consent);
    const rotated = { ...bundle(2_000), generation: consent.generation };
    expect(await tokens.writeRotation(tenantId, rotated)).toEqual(rotated);
    expect(await tokens.read(tenantId)).toEqual(rotated);
    // The same generation time with another suffix is not "newer": it is written over.
    const sameTime = bundle(2_000);
    expect(await tokens.writeRotation(tenantId, sameTime)).toEqual(sameTime);

    // A newer consent stored: a rotation of the older one is dropped and the consent returned.
    const newer = bundle(3_000);
    await tokens.write(tenantId, newer);
    const stale = bundle(2_500);
    expect(await tokens.writeRotation(tenantId, stale)).toEqual(newer);
    expect(await tokens.read(tenantId)).toEqual(newer);
    expect(vault.peekLatest(name)?.versions).toBe(4);
  });

  it("puts a consent that lands between the rotation's read and write back on top, tags included", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const name = tenantTokenSecretName(tenantId);
    await tokens.write(tenantId, bundle(1_000));
    const consent = bundle(9_000);
    const older = bundle(5_000);
    let landed = false;
    vault.onRequest((request) => {
      if (landed || request.method !== "PUT" || request.name !== name) return;
      landed = true;
      // Two consents land: an older one, then the newest; the newest must end on top.
      vault.putSecret(name, JSON.stringify(consent), { contentType: TENANT_TOKEN_CONTENT_TYPE, tags: { generation: consent.generation, kind: "defender-delegated-refresh-token" } });
      vault.putSecret(name, JSON.stringify(older), { contentType: TENANT_TOKEN_CONTENT_TYPE, tags: { generation: older.generation } });
    });
    try {
      const current = await tokens.writeRotation(tenantId, bundle(2_000));
      expect(current).toEqual(consent);
    } finally {
      vault.onRequest(null);
    }
    expect(await tokens.read(tenantId)).toEqual(consent);
    expect(vault.peekLatest(name)?.tags).toEqual({ generation: consent.generation, kind: "defender-delegated-refresh-token" });
    expect(vault.peekLatest(name)?.contentType).toBe(TENANT_TOKEN_CONTENT_TYPE);
  });

  it("puts back the latest version of the newest consent when it was rotated twice", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const name = tenantTokenSecretName(tenantId);
    await tokens.write(tenantId, bundle(1_000));
    const consent = bundle(9_000);
    const consentRotated = { ...bundle(9_000), generation: consent.generation };
    let landed = false;
    vault.onRequest((request) => {
      if (landed || request.method !== "PUT" || request.name !== name) return;
      landed = true;
      for (const b of [consent, consentRotated]) vault.putSecret(name, JSON.stringify(b), { contentType: TENANT_TOKEN_CONTENT_TYPE, tags: { generation: b.generation } });
    });
    try {
      expect(await tokens.writeRotation(tenantId, bundle(2_000))).toEqual(consentRotated);
    } finally {
      vault.onRequest(null);
    }
    expect(await tokens.read(tenantId)).toEqual(consentRotated);
  });

  it("refuses a rotation, without recovering the name, when the token is deleted between its read and its write", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const name = tenantTokenSecretName(tenantId);
    await tokens.write(tenantId, bundle(1_000));
    const disarm = vault.softDeleteBeforeNextPut(name);
    try {
      await expect(tokens.writeRotation(tenantId, bundle(2_000))).rejects.toMatchObject({ status: 409 });
    } finally {
      disarm();
    }
    expect(vault.stateOf(name)).toBe("deleted");
  });

  it("leaves a newer consent alone when it landed on top after the rotation's write", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const name = tenantTokenSecretName(tenantId);
    await tokens.write(tenantId, bundle(1_000));
    const consent = bundle(9_000);
    let landed = false;
    let written = false;
    // The consent lands after the rotation's write, before the rotation reads the history (its next request).
    vault.onRequest((request) => {
      if (request.name !== name || landed) return;
      if (request.method === "PUT") {
        written = true;
        return;
      }
      if (!written) return;
      landed = true;
      vault.putSecret(name, JSON.stringify(consent), { contentType: TENANT_TOKEN_CONTENT_TYPE, tags: { generation: consent.generation } });
    });
    try {
      expect(await tokens.writeRotation(tenantId, bundle(2_000))).toEqual(consent);
    } finally {
      vault.onRequest(null);
    }
    expect(landed).toBe(true);
    // First consent, the rotation, the new consent: no repair write on top.
    expect(vault.peekLatest(name)?.versions).toBe(3);
    expect(await tokens.read(tenantId)).toEqual(consent);
  });

  it("reads a disabled bundle as none: the tenant has to consent again", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const name = tenantTokenSecretName(tenantId);
    await tokens.write(tenantId, bundle(1_000));
    const [only] = await store().versions(name);
    vault.setEnabled(name, only?.version ?? "", false);
    expect(await tokens.read(tenantId)).toBeUndefined();
  });

  it("a rotation with no newer consent stored costs one read, one write and one listing", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const consent = bundle(4_000);
    await tokens.write(tenantId, consent);
    vault.resetStats();
    const rotated = { ...bundle(4_000), generation: consent.generation };
    expect(await tokens.writeRotation(tenantId, rotated)).toEqual(rotated);
    expect(vault.stats).toEqual({ get: 1, set: 1, update: 0, delete: 0, list: 1 });
    expect(await tokens.read(tenantId)).toEqual(rotated);
  });

  it("keeps what is on top when the newer consent's version is disabled before it can be put back", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const name = tenantTokenSecretName(tenantId);
    await tokens.write(tenantId, bundle(1_000));
    const consent = bundle(9_000);
    const older = bundle(5_000);
    let consentVersion = "";
    let phase: "before-write" | "before-list" | "done" = "before-write";
    vault.onRequest((request) => {
      if (request.name !== name) return;
      if (phase === "before-write" && request.method === "PUT") {
        // The newest consent lands just before the rotation's write...
        consentVersion = vault.putSecret(name, JSON.stringify(consent), { contentType: TENANT_TOKEN_CONTENT_TYPE, tags: { generation: consent.generation } });
        phase = "before-list";
      } else if (phase === "before-list" && request.method === "GET") {
        // ...an older one on top of the rotation, before the history is read...
        vault.putSecret(name, JSON.stringify(older), { contentType: TENANT_TOKEN_CONTENT_TYPE, tags: { generation: older.generation } });
        phase = "done";
      } else if (request.method === "GET" && request.version === consentVersion) {
        // ...and the newest consent's version is disabled before it can be read back.
        vault.setEnabled(name, consentVersion, false);
      }
    });
    try {
      expect(await tokens.writeRotation(tenantId, bundle(2_000))).toEqual(older);
    } finally {
      vault.onRequest(null);
    }
    // Nothing was written over it: first bundle, consent, rotation, older consent.
    expect(vault.peekLatest(name)?.versions).toBe(4);
    expect(await tokens.read(tenantId)).toEqual(older);
  });

  it("does not bring back a token deleted just before the newer consent is put back on top", async () => {
    const tokens = new TenantTokenStore(store());
    const tenantId = randomUUID();
    const name = tenantTokenSecretName(tenantId);
    await tokens.write(tenantId, bundle(1_000));
    const consent = bundle(9_000);
    let puts = 0;
    vault.onRequest((request) => {
      if (request.name !== name || request.method !== "PUT") return;
      puts += 1;
      // The consent lands before the rotation's write; the offboarding before the repair write.
      if (puts === 1) vault.putSecret(name, JSON.stringify(consent), { contentType: TENANT_TOKEN_CONTENT_TYPE, tags: { generation: consent.generation } });
      if (puts === 2) vault.softDelete(name);
    });
    try {
      await expect(tokens.writeRotation(tenantId, bundle(2_000))).rejects.toMatchObject({ name: "SecretStoreError", status: 409 });
    } finally {
      vault.onRequest(null);
    }
    expect(puts).toBe(2);
    expect(vault.stateOf(name)).toBe("deleted");
  });
});
