import type { TokenCredential } from "@azure/identity";
import { SecretClient } from "@azure/keyvault-secrets";
import { statusOf } from "../errors";

export interface StoredSecret {
  value: string;
  updatedOn: Date | undefined;
  tags: Readonly<Record<string, string>>;
}

export interface SecretWriteOptions {
  contentType: string;
  /** Tags are readable by anyone who can list secrets: never put a secret in one. */
  tags: Record<string, string>;
}

/** Key Vault, narrowed to what the app needs. Values never appear in errors or logs. */
export interface SecretStore {
  /** The latest enabled version, or undefined when the secret is absent, deleted or disabled. */
  get(name: string): Promise<StoredSecret | undefined>;
  set(name: string, value: string, options: SecretWriteOptions): Promise<void>;
  /** Soft-deletes every version; a later `set` of the same name recovers the name first. */
  delete(name: string): Promise<void>;
  /** Value of the oldest enabled version: lets racing writers of a generated secret agree on one. */
  getOldest(name: string): Promise<string | undefined>;
}

/** A Key Vault failure, described by status and service error code only. */
export class SecretStoreError extends Error {
  constructor(
    readonly operation: string,
    readonly status: number | undefined,
    options?: { cause?: unknown },
  ) {
    super(`Key Vault ${operation} failed${status ? ` with HTTP ${status}` : " (no response)"}`, options);
    this.name = "SecretStoreError";
  }
}

export interface KeyVaultSecretStoreOptions {
  vaultUrl: string;
  credential: TokenCredential;
  /** Local development only: trust this CA and skip the *.vault.azure.net challenge-resource check. */
  localDevCaPem?: string;
}

export function createKeyVaultSecretStore(options: KeyVaultSecretStoreOptions): SecretStore {
  const client = new SecretClient(options.vaultUrl, options.credential, {
    retryOptions: { maxRetries: 2, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 },
    ...(options.localDevCaPem
      ? { tlsOptions: { ca: options.localDevCaPem }, disableChallengeResourceVerification: true }
      : {}),
  });

  const guarded = async <T>(operation: string, run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      // Drop the SDK's message: a RestError can echo the request body, which is the secret.
      throw new SecretStoreError(operation, statusOf(error));
    }
  };

  const isDeletedButRecoverable = (error: unknown): boolean => statusOf(error) === 409;

  return {
    async get(name) {
      try {
        const secret = await client.getSecret(name);
        if (secret.value === undefined) return undefined;
        return { value: secret.value, updatedOn: secret.properties.updatedOn, tags: secret.properties.tags ?? {} };
      } catch (error) {
        const status = statusOf(error);
        // 404: never written or deleted; 403 on a disabled secret: treat as absent, not as an outage.
        if (status === 404) return undefined;
        throw new SecretStoreError("get", status);
      }
    },

    async set(name, value, writeOptions) {
      const write = () => client.setSecret(name, value, { contentType: writeOptions.contentType, tags: writeOptions.tags });
      try {
        await write();
      } catch (error) {
        if (!isDeletedButRecoverable(error)) throw new SecretStoreError("set", statusOf(error));
        await guarded("recover", async () => {
          const poller = await client.beginRecoverDeletedSecret(name, { intervalInMs: 500 });
          await poller.pollUntilDone();
        });
        await guarded("set", write);
      }
    },

    async delete(name) {
      try {
        await client.beginDeleteSecret(name);
      } catch (error) {
        if (statusOf(error) === 404) return;
        throw new SecretStoreError("delete", statusOf(error));
      }
    },

    async getOldest(name) {
      return guarded("get", async () => {
        let oldest: { version: string; createdOn: number } | undefined;
        for await (const properties of client.listPropertiesOfSecretVersions(name)) {
          if (properties.enabled === false || !properties.version) continue;
          const createdOn = properties.createdOn?.getTime() ?? Number.MAX_SAFE_INTEGER;
          if (!oldest || createdOn < oldest.createdOn) oldest = { version: properties.version, createdOn };
        }
        if (!oldest) return undefined;
        const secret = await client.getSecret(name, { version: oldest.version });
        return secret.value;
      });
    },
  };
}
