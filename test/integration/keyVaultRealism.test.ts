import { randomBytes, randomUUID } from "node:crypto";
import type { LookupAddress, LookupOptions } from "node:dns";
import { Agent as HttpsAgent } from "node:https";
import type { GetTokenOptions, TokenCredential } from "@azure/identity";
import { generate } from "selfsigned";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeyVaultSecretStore, SecretStoreError, type KeyVaultSecretStoreOptions, type SecretStore } from "../../shared/secrets/secretStore";
import { newAccessTokenKey, newGeneration, TENANT_TOKEN_CONTENT_TYPE, tenantTokenSecretName, TenantTokenStore, type TenantTokenBundle } from "../../shared/secrets/tenantTokens";
import { FakeKeyVault } from "../fakes/fakeKeyVault";
import { completeConsent, registerTenant, startTestEnvironment, type TestEnvironment } from "../harness/testEnvironment";

/**
 * Issue 15 item 3: a Key Vault fake as unkind as the service. Deletes and recovers take time and
 * answer 409 meanwhile, lists page with nextLink, and the SDK's challenge-based authentication
 * runs with the resource check on. Everything goes through the real @azure/keyvault-secrets
 * client: the app's own store (createKeyVaultSecretStore) directly, or the whole app.
 */

/** A name under *.vault.azure.net, so the SDK's challenge-resource check can stay on; resolved to loopback by the agent below. */
const VAULT_HOST = "kvrealism.vault.azure.net";
const VAULT_SCOPE = "https://vault.azure.net/.default";

interface TokenRequest {
  scopes: string[];
  tenantId: string | undefined;
}

/**
 * Stands in for Entra ID: records what the SDK asks for, and hands out the vault's token only
 * for the vault scope in the challenged tenant (any other ask gets a token the vault refuses),
 * so a wrong scope or tenant would fail the call, not just an assertion.
 */
function recordingCredential(vaultToken: string, tenantId: string): TokenCredential & { requests: TokenRequest[] } {
  const requests: TokenRequest[] = [];
  return {
    requests,
    async getToken(scopes: string | string[], options?: GetTokenOptions) {
      const asked = Array.isArray(scopes) ? [...scopes] : [scopes];
      requests.push({ scopes: asked, tenantId: options?.tenantId });
      const right = asked.length === 1 && asked[0] === VAULT_SCOPE && options?.tenantId === tenantId;
      return { token: right ? vaultToken : "token-for-something-else", expiresOnTimestamp: Date.now() + 3600_000 };
    },
  };
}

/** Resolves every name to 127.0.0.1, in both callback shapes Node uses (autoSelectFamily asks for `all`). */
function loopbackLookup(
  _hostname: string,
  options: LookupOptions,
  callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
): void {
  if (options.all) callback(null, [{ address: "127.0.0.1", family: 4 }]);
  else callback(null, "127.0.0.1", 4);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe("the secret store against an unkind vault", () => {
  const tenantId = randomUUID();
  const vaultToken = `kv-${randomBytes(18).toString("base64url")}`;
  let vault: FakeKeyVault;
  let agent: HttpsAgent;
  let vaultUrl: string;

  beforeAll(async () => {
    // Its own certificate: the shared test one does not name a *.vault.azure.net host.
    const pems = await generate([{ name: "commonName", value: VAULT_HOST }], {
      keySize: 2048,
      algorithm: "sha256",
      notBeforeDate: new Date(Date.now() - 60_000),
      notAfterDate: new Date(Date.now() + 24 * 3600_000),
      extensions: [
        { name: "basicConstraints", cA: true },
        {
          name: "subjectAltName",
          altNames: [
            { type: 2, value: VAULT_HOST },
            { type: 7, ip: "127.0.0.1" },
          ],
        },
      ],
    });
    vault = new FakeKeyVault({ certPem: pems.cert, keyPem: pems.private, acceptedToken: vaultToken, tenantId });
    await vault.start();
    agent = new HttpsAgent({ ca: pems.cert, lookup: loopbackLookup });
    vaultUrl = `https://${VAULT_HOST}:${new URL(vault.url).port}`;
  });

  afterAll(async () => {
    await vault?.stop();
    agent?.destroy();
  });

  /** The app's store as production builds it (no local-dev CA, so the challenge-resource check is on), with short waits. */
  function store(overrides: Partial<KeyVaultSecretStoreOptions> = {}): { secrets: SecretStore; credential: ReturnType<typeof recordingCredential> } {
    const credential = recordingCredential(vaultToken, tenantId);
    const secrets = createKeyVaultSecretStore({
      vaultUrl,
      credential,
      agent,
      timeoutMs: 5_000,
      pollIntervalMs: 50,
      deleteWaitMs: 2_000,
      transitionWaitMs: 3_000,
      ...overrides,
    });
    return { secrets, credential };
  }

  const write = (secrets: SecretStore, name: string, value: string) => secrets.set(name, value, { contentType: "text/plain", tags: {} });

  describe("challenge-based authentication", () => {
    it("answers the vault's 401 challenge with a token for the challenged scope and tenant, the resource check on", async () => {
      vault.resetStats();
      const { secrets, credential } = store();
      await write(secrets, "challenge-probe", "challenge-value-1");
      // The first request went out without a token and was challenged; the SDK then asked for exactly one token.
      expect(vault.challenges.withoutToken).toBeGreaterThanOrEqual(1);
      expect(credential.requests).toEqual([{ scopes: [VAULT_SCOPE], tenantId }]);
      expect(vault.peekLatest("challenge-probe")?.value).toBe("challenge-value-1");
      // Later calls reuse the token: no new challenge, no new token request.
      const before = vault.challenges.total;
      expect((await secrets.get("challenge-probe"))?.value).toBe("challenge-value-1");
      expect(vault.challenges.total).toBe(before);
      expect(credential.requests).toHaveLength(1);
    });

    it("refuses, without asking for a token, a challenge from a host outside the challenged resource", async () => {
      // The same vault at 127.0.0.1: its challenge names vault.azure.net, which that host is not.
      // The production store keeps the SDK's check on, so no vault token is requested for it.
      const { secrets, credential } = store({ vaultUrl: vault.url });
      const error = await secrets.get("challenge-probe").then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(SecretStoreError);
      expect(credential.requests).toEqual([]);
    });
  });

  describe("deletes and recovers that take time", () => {
    afterAll(() => vault.setRealism({ deleteDelayMs: 0, recoverDelayMs: 0 }));

    it("waits for the soft delete to finish, then recovers the name for the next write", async () => {
      vault.setRealism({ deleteDelayMs: 600, recoverDelayMs: 300 });
      vault.resetStats();
      const { secrets } = store();
      await write(secrets, "slow-delete", "first-value-xyz");
      const started = Date.now();
      await secrets.delete("slow-delete");
      // The delete poller was awaited: the vault lists it as deleted, not as being deleted.
      expect(Date.now() - started).toBeGreaterThanOrEqual(550);
      expect(vault.stateOf("slow-delete")).toBe("deleted");
      expect(await secrets.get("slow-delete")).toBeUndefined();

      await write(secrets, "slow-delete", "second-value-xyz");
      expect(vault.peekLatest("slow-delete")).toMatchObject({ value: "second-value-xyz", versions: 2 });
      expect(vault.conflicts.map((c) => `${c.method} ${c.innerCode}`)).toEqual(["PUT ObjectIsDeletedButRecoverable"]);
    });

    it("a write during a delete that outlasts the delete's wait waits for it, recovers and lands", async () => {
      vault.setRealism({ deleteDelayMs: 1_000, recoverDelayMs: 300 });
      vault.resetStats();
      const { secrets } = store({ deleteWaitMs: 100 });
      await write(secrets, "in-transit", "old-token-value");
      await secrets.delete("in-transit");
      expect(vault.stateOf("in-transit")).toBe("deleting");
      const started = Date.now();
      await write(secrets, "in-transit", "new-token-value");
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(vault.peekLatest("in-transit")?.value).toBe("new-token-value");
      const codes = vault.conflicts.map((c) => `${c.method} ${c.innerCode}`);
      expect(codes[0]).toBe("PUT ObjectIsBeingDeleted");
      expect(codes).toContain("PUT ObjectIsDeletedButRecoverable");
    });

    it("a write that cannot wait long enough fails with 409 within its bound, and succeeds on retry", async () => {
      vault.setRealism({ deleteDelayMs: 1_500, recoverDelayMs: 0 });
      const { secrets } = store({ deleteWaitMs: 50, transitionWaitMs: 300 });
      await write(secrets, "too-slow", "before-offboard-1");
      await secrets.delete("too-slow");
      const started = Date.now();
      const error = await write(secrets, "too-slow", "after-offboard-1").then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(Date.now() - started).toBeLessThan(1_200);
      expect(error).toBeInstanceOf(SecretStoreError);
      expect((error as SecretStoreError).status).toBe(409);
      // The message names the operation and status only, never the value.
      expect((error as SecretStoreError).message).toBe("Key Vault set failed with HTTP 409");
      expect(vault.peekLatest("too-slow")).toBeUndefined();
      // Once the vault has finished, the same write (a consent page reopened) goes through.
      while (vault.stateOf("too-slow") === "deleting") await sleep(50);
      await write(secrets, "too-slow", "after-offboard-1");
      expect(vault.peekLatest("too-slow")?.value).toBe("after-offboard-1");
    });

    it("an offboarding during a recovery still deletes what the recovery brings back", async () => {
      vault.setRealism({ deleteDelayMs: 0, recoverDelayMs: 400 });
      vault.resetStats();
      const { secrets } = store();
      await write(secrets, "recover-race", "kept-token-aaa");
      await secrets.delete("recover-race");
      // A consent starts re-creating the name (recover, then write) while the operator offboards again.
      const consent = write(secrets, "recover-race", "consent-token-bbb");
      while (vault.stateOf("recover-race") !== "recovering") await sleep(10);
      await secrets.delete("recover-race");
      await consent.catch(() => undefined);
      expect(vault.conflicts.some((c) => c.method === "DELETE" && c.innerCode === "ObjectIsBeingRecovered")).toBe(true);
      // The delete waited out the recovery and then deleted: the recovered old token is never left
      // live by an offboarding that reported success.
      const state = vault.stateOf("recover-race");
      if (state === "live") {
        // Only if the consent's own write landed after that delete (it recovers again and writes):
        // a newer consent, which the app's callback then checks against the tenant's status.
        expect(vault.peekLatest("recover-race")?.value).toBe("consent-token-bbb");
      } else {
        expect(state).toBe("deleted");
      }
      expect(vault.peekLatest("recover-race")?.value).not.toBe("kept-token-aaa");
    });
  });

  describe("a rotation never brings back a deleted token", () => {
    const rotationBundle = (refreshToken: string): TenantTokenBundle => ({ refreshToken, refreshTokenObtainedAt: 5_000, accessTokenKey: newAccessTokenKey(), generation: newGeneration(1_000) });

    it("leaves a token deleted before the rotation read it deleted, and writes nothing", async () => {
      const { secrets } = store();
      const tokens = new TenantTokenStore(secrets);
      const customer = randomUUID();
      await tokens.write(customer, rotationBundle(`rt-consent-${randomBytes(6).toString("hex")}`));
      await tokens.remove(customer);
      vault.resetStats();
      await tokens.writeRotation(customer, rotationBundle(`rt-rotated-${randomBytes(6).toString("hex")}`));
      expect(vault.stateOf(tenantTokenSecretName(customer))).toBe("deleted");
      expect(vault.stats.set).toBe(0);
      expect(await tokens.read(customer)).toBeUndefined();
    });

    it("refuses the write, without recovering the name, when the delete lands between the rotation's read and its write", async () => {
      const { secrets } = store();
      const tokens = new TenantTokenStore(secrets);
      const customer = randomUUID();
      const name = tenantTokenSecretName(customer);
      await tokens.write(customer, rotationBundle(`rt-consent-${randomBytes(6).toString("hex")}`));
      // The operator offboards (or the tenant moves to the application model) just before the PUT.
      const disarm = vault.softDeleteBeforeNextPut(name);
      try {
        await expect(tokens.writeRotation(customer, rotationBundle(`rt-rotated-${randomBytes(6).toString("hex")}`))).rejects.toThrow();
      } finally {
        disarm();
      }
      expect(vault.stateOf(name)).toBe("deleted");
      expect(await tokens.read(customer)).toBeUndefined();
    });
  });

  describe("lists that page", () => {
    afterAll(() => vault.setRealism({ pageSize: 0 }));

    it("reads every version across nextLink pages of two", async () => {
      vault.setRealism({ pageSize: 2 });
      const { secrets } = store();
      const values = ["page-value-1", "page-value-2", "page-value-3", "page-value-4", "page-value-5"];
      for (const value of values) await write(secrets, "paged-secret", value);
      vault.resetStats();
      const versions = await secrets.versions("paged-secret");
      expect(versions).toHaveLength(5);
      // Three requests: the first page and two nextLinks.
      expect(vault.stats.list).toBe(3);
      expect(await secrets.getOldest("paged-secret")).toBe("page-value-1");
    });

    it("finds a newer consent on the third page when a rotation writes over it", async () => {
      vault.setRealism({ pageSize: 2 });
      const { secrets } = store();
      const tokens = new TenantTokenStore(secrets);
      const customer = randomUUID();
      const name = tenantTokenSecretName(customer);
      const oldGeneration = newGeneration(1_000);
      const bundle = (refreshToken: string, generation: string): TenantTokenBundle => ({
        refreshToken,
        refreshTokenObtainedAt: generation === oldGeneration ? 1_000 : 2_000,
        accessTokenKey: newAccessTokenKey(),
        generation,
      });
      // Four rotations of the old consent: pages 1 and 2.
      for (let i = 1; i <= 4; i += 1) await tokens.write(customer, bundle(`rt-old-rotation-${i}-${randomBytes(6).toString("hex")}`, oldGeneration));
      // A newer consent lands just before the next rotation's write (page 3), which then writes over it.
      const consent = bundle(`rt-new-consent-${randomBytes(6).toString("hex")}`, newGeneration(2_000));
      let landed = false;
      vault.onRequest((request) => {
        if (landed || request.method !== "PUT" || request.name !== name) return;
        landed = true;
        vault.putSecret(name, JSON.stringify(consent), {
          contentType: TENANT_TOKEN_CONTENT_TYPE,
          tags: { tenantId: customer, kind: "defender-delegated-refresh-token", obtainedAt: new Date(2_000).toISOString(), generation: consent.generation },
        });
      });
      try {
        const rotated = bundle(`rt-old-rotation-5-${randomBytes(6).toString("hex")}`, oldGeneration);
        vault.resetStats();
        const current = await tokens.writeRotation(customer, rotated);
        expect(current.generation).toBe(consent.generation);
        expect(vault.stats.list).toBeGreaterThanOrEqual(3);
      } finally {
        vault.onRequest(null);
      }
      expect((await tokens.read(customer))?.refreshToken).toBe(consent.refreshToken);
    });
  });
});

describe("the app against an unkind vault", () => {
  let env: TestEnvironment;

  beforeAll(async () => {
    env = await startTestEnvironment();
    env.vault.setRealism({ pageSize: 2 });
  });
  afterAll(async () => {
    await env?.stop();
  });

  const storedToken = (tenantId: string): { refreshToken: string; generation: string } | undefined => {
    const secret = env.vault.peekLatest(tenantTokenSecretName(tenantId));
    return secret ? (JSON.parse(secret.value) as { refreshToken: string; generation: string }) : undefined;
  };

  async function connectedTenant(): Promise<{ tenantId: string; refreshToken: string }> {
    const { tenantId, consentUrl } = await registerTenant(env);
    const { callback } = await completeConsent(env, consentUrl);
    expect(callback.status).toBe(200);
    const stored = storedToken(tenantId);
    if (!stored) throw new Error("the consent stored no token");
    return { tenantId, refreshToken: stored.refreshToken };
  }

  const offboard = (tenantId: string) =>
    env.app.http("offboardTenant", { method: "DELETE", url: `/api/tenants/${tenantId}`, params: { tenantId } });

  async function tenantStatus(tenantId: string): Promise<string> {
    const result = await env.app.http("getTenant", { method: "GET", url: `/api/tenants/${tenantId}`, params: { tenantId } });
    return result.json<{ status: string }>().status;
  }

  it("offboarding awaits the vault's soft delete, and the re-registration's consent recovers the name and stores the new token", async () => {
    env.vault.setRealism({ deleteDelayMs: 1_500, recoverDelayMs: 800 });
    const { tenantId, refreshToken: old } = await connectedTenant();
    const name = tenantTokenSecretName(tenantId);
    env.vault.resetStats();

    const started = Date.now();
    const offboarded = await offboard(tenantId);
    expect(offboarded.status).toBe(200);
    // Within the app's 5 s wait: it returned only once the vault had finished the delete.
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_400);
    expect(env.vault.stateOf(name)).toBe("deleted");

    const again = await registerTenant(env, tenantId, "Contoso again");
    expect(again.result.status).toBe(201);
    const { callback } = await completeConsent(env, again.consentUrl);
    expect(callback.status).toBe(200);
    const stored = storedToken(tenantId);
    expect(stored?.refreshToken).toBeDefined();
    expect(stored?.refreshToken).not.toBe(old);
    expect(await tenantStatus(tenantId)).toBe("connected");
    expect(env.vault.conflicts.map((c) => `${c.method} ${c.innerCode}`)).toEqual(["PUT ObjectIsDeletedButRecoverable"]);
  }, 30_000);

  /**
   * The choice the issue asks for: the consent waits (up to 20 s) and succeeds, rather than failing
   * and asking the admin to come back. The admin is on the consent page right then, and a delete
   * normally finishes within seconds; the 503 "open the link again" page stays for a longer one.
   */
  it("a consent right after an offboarding whose delete is still running waits for it and stores the token within the bound", async () => {
    // Longer than the offboarding's 5 s wait, so it returns while the vault is still deleting.
    env.vault.setRealism({ deleteDelayMs: 8_000, recoverDelayMs: 800 });
    const { tenantId, refreshToken: old } = await connectedTenant();
    const name = tenantTokenSecretName(tenantId);
    env.vault.resetStats();

    const offboarded = await offboard(tenantId);
    expect(offboarded.status).toBe(200);
    expect(offboarded.json<{ status: string }>().status).toBe("offboarded");
    expect(env.vault.stateOf(name)).toBe("deleting");
    // The token is unreadable the moment the delete is accepted.
    expect(storedToken(tenantId)).toBeUndefined();

    const again = await registerTenant(env, tenantId, "Contoso again");
    expect(again.result.status).toBe(201);
    const started = Date.now();
    const { callback } = await completeConsent(env, again.consentUrl);
    expect(callback.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(20_000);
    const stored = storedToken(tenantId);
    expect(stored?.refreshToken).toBeDefined();
    expect(stored?.refreshToken).not.toBe(old);
    expect(await tenantStatus(tenantId)).toBe("connected");
    const codes = env.vault.conflicts.map((c) => `${c.method} ${c.innerCode}`);
    expect(codes[0]).toBe("PUT ObjectIsBeingDeleted");
    expect(codes).toContain("PUT ObjectIsDeletedButRecoverable");
  }, 45_000);
});
