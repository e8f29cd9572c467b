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
  /** Every enabled version's id, creation time and tags (never a value), oldest first. */
  versions(name: string): Promise<SecretVersionInfo[]>;
  /** One version's value, or undefined when it is gone or disabled. */
  getVersion(name: string, version: string): Promise<string | undefined>;
}

export interface SecretVersionInfo {
  version: string;
  createdOn: number;
  tags: Readonly<Record<string, string>>;
}

/** A Key Vault failure, described by status and service error code only. */
export class SecretStoreError extends Error {
  constructor(
    readonly operation: string,
    readonly status: number | undefined,
    options?: { cause?: unknown; timedOut?: boolean },
  ) {
    super(
      `Key Vault ${operation} failed${status ? ` with HTTP ${status}` : options?.timedOut ? " (no answer in time)" : " (no response)"}`,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "SecretStoreError";
    this.timedOut = options?.timedOut === true;
  }

  /** The vault did not answer within the client's timeout (a stall, not a refusal). */
  readonly timedOut: boolean;
}

export interface KeyVaultSecretStoreOptions {
  vaultUrl: string;
  credential: TokenCredential;
  /** Local development only: trust this CA and skip the *.vault.azure.net challenge-resource check. */
  localDevCaPem?: string;
  /** Each operation, retries included, is abandoned after this long (default 30 s). */
  timeoutMs?: number;
}

export function createKeyVaultSecretStore(options: KeyVaultSecretStoreOptions): SecretStore {
  const client = new SecretClient(options.vaultUrl, options.credential, {
    retryOptions: { maxRetries: 2, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 },
    ...(options.localDevCaPem
      ? { tlsOptions: { ca: options.localDevCaPem }, disableChallengeResourceVerification: true }
      : {}),
  });

  const timeoutMs = options.timeoutMs ?? 30_000;
  const bounded = () => ({ abortSignal: AbortSignal.timeout(timeoutMs) });
  // Drop the SDK's message: a RestError can echo the request body, which is the secret.
  const failure = (operation: string, error: unknown): SecretStoreError =>
    new SecretStoreError(operation, statusOf(error), { timedOut: isAbort(error) });
  const guarded = async <T>(operation: string, run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (error) {
      throw failure(operation, error);
    }
  };

  const isDeletedButRecoverable = (error: unknown): boolean => statusOf(error) === 409;

  return {
    async get(name) {
      try {
        const secret = await client.getSecret(name, bounded());
        if (secret.value === undefined) return undefined;
        return { value: secret.value, updatedOn: secret.properties.updatedOn, tags: secret.properties.tags ?? {} };
      } catch (error) {
        // 404: never written or deleted.
        if (statusOf(error) === 404) return undefined;
        throw failure("get", error);
      }
    },

    async set(name, value, writeOptions) {
      const write = () => client.setSecret(name, value, { contentType: writeOptions.contentType, tags: writeOptions.tags, ...bounded() });
      try {
        await write();
      } catch (error) {
        if (!isDeletedButRecoverable(error)) throw failure("set", error);
        await guarded("recover", async () => {
          const poller = await client.beginRecoverDeletedSecret(name, { intervalInMs: 500, ...bounded() });
          await poller.pollUntilDone(bounded());
        });
        await guarded("set", write);
      }
    },

    async delete(name) {
      try {
        await client.beginDeleteSecret(name, bounded());
      } catch (error) {
        if (statusOf(error) === 404) return;
        throw failure("delete", error);
      }
    },

    async getOldest(name) {
      return guarded("get", async () => {
        const oldest = (await listVersions(name))[0];
        if (!oldest) return undefined;
        const secret = await client.getSecret(name, { version: oldest.version, ...bounded() });
        return secret.value;
      });
    },

    async versions(name) {
      return guarded("list", () => listVersions(name));
    },

    async getVersion(name, version) {
      try {
        return (await client.getSecret(name, { version, ...bounded() })).value;
      } catch (error) {
        if (statusOf(error) === 404) return undefined;
        throw failure("get", error);
      }
    },
  };

  async function listVersions(name: string): Promise<SecretVersionInfo[]> {
    const found: SecretVersionInfo[] = [];
    try {
      for await (const properties of client.listPropertiesOfSecretVersions(name, bounded())) {
        if (properties.enabled === false || !properties.version) continue;
        found.push({ version: properties.version, createdOn: properties.createdOn?.getTime() ?? Number.MAX_SAFE_INTEGER, tags: properties.tags ?? {} });
      }
    } catch (error) {
      if (statusOf(error) === 404) return [];
      throw error;
    }
    return found.sort((a, b) => a.createdOn - b.createdOn);
  }
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError");
}
