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
import { FakeKeyVault } from "../fakes/fakeKeyVault";
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

/** The store as local development builds it (the test CA trusted, the challenge-resource check off), with short waits. */
function store(overrides: Partial<KeyVaultSecretStoreOptions> = {}): SecretStore {
  return createKeyVaultSecretStore({
    vaultUrl: vault.url,
    credential: credential(),
    localDevCaPem: cert.certPem,
    timeoutMs: 5_000,
    pollIntervalMs: 40,
    deleteWaitMs: 2_000,
    transitionWaitMs: 2_000,
    ...overrides,
  });
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
});
