import type { Agent } from "node:https";
import type { TokenCredential } from "@azure/identity";
import { SecretClient, type PollerLike, type PollOperationState } from "@azure/keyvault-secrets";
import { statusOf } from "../errors";
import { timeoutSignal } from "../time/timeoutSignal";

export interface StoredSecret {
  value: string;
  updatedOn: Date | undefined;
  tags: Readonly<Record<string, string>>;
}

export interface SecretWriteOptions {
  contentType: string;
  /** Tags are readable by anyone who can list secrets: never put a secret in one. */
  tags: Record<string, string>;
  /**
   * Only a new version of a live secret: a name that is deleted or being deleted is refused with
   * its 409, never recovered. For writers that must not bring back what someone deleted.
   */
  existingOnly?: boolean;
}

/** Key Vault, narrowed to what the app needs. Values never appear in errors or logs. */
export interface SecretStore {
  /** The latest enabled version, or undefined when the secret is absent, deleted or disabled. */
  get(name: string): Promise<StoredSecret | undefined>;
  /**
   * Writes a new version. A name that is soft-deleted is recovered first (the vault has purge
   * protection, so recovering is the only way to use the name again); one whose delete or
   * recovery is still running is waited for, up to a bound, and then refused with a 409.
   */
  set(name: string, value: string, options: SecretWriteOptions): Promise<void>;
  /**
   * Soft-deletes every version and waits, up to a bound, until the vault has finished. Resolves
   * once the secret can no longer be read: finished, or accepted and still running past the
   * bound (a later `set` copes with that). Throws when the secret could not be deleted.
   */
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
  /**
   * How long `delete` waits for the soft delete to finish (default 5 s): long enough for the
   * usual case, so a re-registration right after an offboarding finds the name settled, short
   * enough for an operator's request. Past it the delete still completes on the service's side.
   */
  deleteWaitMs?: number;
  /**
   * How long `set` waits for a delete or a recovery of the same name that is still running
   * (default 20 s, within what a consent page load can take). Past it, `set` fails with 409.
   */
  transitionWaitMs?: number;
  /** Pause between two looks at a running delete or recovery (default 500 ms; the SDK's own is 2 s). */
  pollIntervalMs?: number;
  /**
   * The connection agent, for a proxy; tests use it to reach a `*.vault.azure.net` name on
   * loopback, so the challenge-resource check can stay on. Without `localDevCaPem` it must trust
   * the vault's certificate itself.
   */
  agent?: Agent;
}

/**
 * The innererror codes Key Vault sends with a 409 on a name that is not live (the error's `code`
 * is only "Conflict"). `ObjectIsBeingRecovered` or any other code means "in transit, look again
 * shortly"; with no code at all, a look at the deleted secrets decides.
 */
const DELETED_BUT_RECOVERABLE = "ObjectIsDeletedButRecoverable";
const BEING_DELETED = "ObjectIsBeingDeleted";
/** A GET of a disabled version is refused with 403 and this innererror code; any other 403 is a refusal to us. */
const SECRET_DISABLED = "SecretDisabled";

export function createKeyVaultSecretStore(options: KeyVaultSecretStoreOptions): SecretStore {
  const client = new SecretClient(options.vaultUrl, options.credential, {
    retryOptions: { maxRetries: 2, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 },
    ...(options.agent ? { agent: options.agent } : {}),
    ...(options.localDevCaPem
      ? { tlsOptions: { ca: options.localDevCaPem }, disableChallengeResourceVerification: true }
      : {}),
  });

  const timeoutMs = options.timeoutMs ?? 30_000;
  const deleteWaitMs = options.deleteWaitMs ?? 5_000;
  const transitionWaitMs = options.transitionWaitMs ?? 20_000;
  const pollIntervalMs = options.pollIntervalMs ?? 500;
  const bounded = () => ({ abortSignal: timeoutSignal(timeoutMs) });
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

  /**
   * Polls a delete or recover poller until it is done or the deadline passes. Each poll is one
   * request with the client's timeout; the SDK's pollUntilDone is not used because its loop
   * cannot be stopped from outside and would keep polling after we gave up.
   */
  const pollUntil = async <T>(poller: PollerLike<PollOperationState<T>, T>, deadline: number): Promise<void> => {
    while (!poller.isDone()) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      await sleep(Math.min(pollIntervalMs, left));
      await poller.poll(bounded());
    }
  };

  /** Waits for a running delete (ours or another caller's) until the name is listed as deleted, or the deadline. */
  const awaitDeleted = async (name: string, deadline: number): Promise<void> => {
    for (;;) {
      try {
        await client.getDeletedSecret(name, bounded());
        return;
      } catch (error) {
        if (statusOf(error) !== 404) throw error;
      }
      const left = deadline - Date.now();
      if (left <= 0) return;
      await sleep(Math.min(pollIntervalMs, left));
    }
  };

  /**
   * Recovers a soft-deleted name and waits for the recovery, up to the deadline. A 409 or 404
   * from the recover means another caller's delete or recovery is under way or has just ended:
   * the caller's loop looks again rather than failing.
   */
  const recover = async (name: string, deadline: number): Promise<void> => {
    let poller: PollerLike<PollOperationState<unknown>, unknown>;
    try {
      poller = await client.beginRecoverDeletedSecret(name, { intervalInMs: pollIntervalMs, ...bounded() });
    } catch (error) {
      const status = statusOf(error);
      if (status !== 409 && status !== 404) throw error;
      // Pause before the caller's next write, so a name stuck between states is not hammered.
      await sleep(Math.min(pollIntervalMs, deadline - Date.now()));
      return;
    }
    await pollUntil(poller, deadline);
  };

  return {
    async get(name) {
      try {
        const secret = await client.getSecret(name, bounded());
        if (secret.value === undefined) return undefined;
        return { value: secret.value, updatedOn: secret.properties.updatedOn, tags: secret.properties.tags ?? {} };
      } catch (error) {
        // 404: never written or deleted; 403 SecretDisabled: disabled, which reads as absent too.
        if (statusOf(error) === 404 || innerErrorCode(error) === SECRET_DISABLED) return undefined;
        throw failure("get", error);
      }
    },

    async set(name, value, writeOptions) {
      const write = () => client.setSecret(name, value, { contentType: writeOptions.contentType, tags: writeOptions.tags, ...bounded() });
      // One deadline for the whole wait, however the name moves between states meanwhile.
      const deadline = Date.now() + transitionWaitMs;
      for (;;) {
        let conflict: unknown;
        try {
          await write();
          return;
        } catch (error) {
          if (statusOf(error) !== 409 || writeOptions.existingOnly) throw failure("set", error);
          conflict = error;
        }
        const code = innerErrorCode(conflict);
        // Deleted and settled: only a recover frees the name (purge protection forbids a purge).
        // Without a known code, a look at the deleted secrets tells the same.
        const deleted =
          code === DELETED_BUT_RECOVERABLE || (code === undefined && (await guarded("recover", () => isDeleted(name))));
        if (deleted) await guarded("recover", () => recover(name, deadline));
        else if (code === BEING_DELETED) await guarded("recover", () => awaitDeleted(name, deadline));
        // Being recovered, or unknown: another writer is moving the name; look again shortly.
        else if (Date.now() < deadline) await sleep(Math.min(pollIntervalMs, deadline - Date.now()));
        if (Date.now() >= deadline) {
          // One last write: the transition may have ended just now. Its 409 is the answer.
          try {
            await write();
            return;
          } catch (error) {
            throw failure("set", error);
          }
        }
      }
    },

    async delete(name) {
      const deadline = Date.now() + deleteWaitMs;
      for (;;) {
        let poller: PollerLike<PollOperationState<unknown>, unknown>;
        try {
          poller = await client.beginDeleteSecret(name, { intervalInMs: pollIntervalMs, ...bounded() });
        } catch (error) {
          const status = statusOf(error);
          // Nothing live: never written, or deleted already.
          if (status === 404) return;
          if (status !== 409) throw failure("delete", error);
          // Another delete of it is running: same outcome, so wait for that one as for our own.
          if (innerErrorCode(error) === BEING_DELETED) {
            await awaitDeleted(name, deadline).catch(() => undefined);
            return;
          }
          // Being recovered (a consent re-creating it): the token must still go, so wait and delete
          // what the recovery brings back. Past the deadline that is a failure, never a silent success.
          if (Date.now() >= deadline) throw new SecretStoreError("delete", 409);
          await sleep(Math.min(pollIntervalMs, deadline - Date.now()));
          continue;
        }
        // The delete is accepted and the secret unreadable from here on. Waiting for it to settle
        // is a courtesy to the next set of the name (which copes anyway), so a failed or slow poll
        // ends the wait rather than failing an offboarding that has already happened.
        await pollUntil(poller, deadline).catch(() => undefined);
        return;
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
        if (statusOf(error) === 404 || innerErrorCode(error) === SECRET_DISABLED) return undefined;
        throw failure("get", error);
      }
    },
  };

  async function isDeleted(name: string): Promise<boolean> {
    try {
      await client.getDeletedSecret(name, bounded());
      return true;
    } catch (error) {
      if (statusOf(error) === 404) return false;
      throw error;
    }
  }

  /** Every page: the SDK follows the service's nextLink itself (lists page at 25 items). */
  async function listVersions(name: string): Promise<SecretVersionInfo[]> {
    const found: SecretVersionInfo[] = [];
    try {
      for await (const properties of client.listPropertiesOfSecretVersions(name, bounded())) {
        if (properties.enabled === false || !properties.version) continue;
        // Stryker disable next-line OptionalChaining: the service sends every version's creation time
        found.push({ version: properties.version, createdOn: properties.createdOn?.getTime() ?? Number.MAX_SAFE_INTEGER, tags: properties.tags ?? {} });
      }
    } catch (error) {
      if (statusOf(error) === 404) return [];
      throw error;
    }
    return found.sort((a, b) => a.createdOn - b.createdOn);
  }
}

/** The `innererror.code` of a Key Vault error, as the SDK parses it into `details`. */
function innerErrorCode(error: unknown): string | undefined {
  const details = typeof error === "object" && error !== null ? (error as { details?: unknown }).details : undefined;
  const code = (details as { error?: { innerError?: { code?: unknown } } } | undefined)?.error?.innerError?.code;
  return typeof code === "string" ? code : undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

function isAbort(error: unknown): boolean {
  return error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError");
}
