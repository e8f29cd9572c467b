import type { TokenCredential } from "@azure/identity";
import { TableClient, type TableServiceClientOptions } from "@azure/data-tables";
import type { StorageConnection } from "../config";

/** A policy as the SDK's options take it (the pipeline package itself is the SDK's dependency, not ours). */
type PipelinePolicy = NonNullable<TableServiceClientOptions["additionalPolicies"]>[number]["policy"];

/** Each try of a Table call is abandoned after this long: a stalled account cannot hold a pull or a page open. */
export const TABLE_TRY_TIMEOUT_MS = 20_000;
/** Retries after a throttled or failed try (a try that timed out is not retried by the SDK). */
const TABLE_MAX_RETRIES = 2;

/**
 * Sets a timeout on every request that has none. The Tables SDK has no per-call timeout option
 * of its own, and the HTTP client waits forever without one.
 */
export function requestTimeoutPolicy(timeoutMs: number): PipelinePolicy {
  return {
    name: "mssp-request-timeout",
    sendRequest(request, next) {
      // Stryker disable next-line EqualityOperator: `>=` sets the same timeout at equality (this also ignores the line's `<=` mutant, which the tests kill)
      if (!request.timeout || request.timeout > timeoutMs) request.timeout = timeoutMs;
      return next(request);
    },
  };
}

export function tableClientOptions(tryTimeoutMs: number = TABLE_TRY_TIMEOUT_MS): TableServiceClientOptions {
  return {
    retryOptions: { maxRetries: TABLE_MAX_RETRIES },
    additionalPolicies: [{ policy: requestTimeoutPolicy(tryTimeoutMs), position: "perRetry" }],
  };
}

/** Opens tables from either a connection string (Azurite, local) or a managed identity (Azure). */
export interface TableFactory {
  /** The client for `tableName`, creating the table on first use in this process. */
  open(tableName: string): Promise<TableClient>;
}

export function createTableFactory(
  storage: StorageConnection,
  credential: () => TokenCredential,
  options: { tryTimeoutMs?: number } = {},
): TableFactory {
  const opened = new Map<string, Promise<TableClient>>();
  const clientOptions = tableClientOptions(options.tryTimeoutMs);
  const build = (tableName: string): TableClient => {
    if (storage.kind === "identity") return new TableClient(storage.tableServiceUri, tableName, credential(), clientOptions);
    // Azurite speaks plain http on loopback; the SDK refuses http unless told.
    const insecure = /UseDevelopmentStorage=true|TableEndpoint=http:\/\/|DefaultEndpointsProtocol=http;/i.test(
      storage.connectionString,
    );
    return TableClient.fromConnectionString(storage.connectionString, tableName, { ...clientOptions, allowInsecureConnection: insecure });
  };
  return {
    open(tableName) {
      let client = opened.get(tableName);
      if (!client) {
        const table = build(tableName);
        client = table.createTable().then(() => table);
        // A failed create must not poison the cache for the rest of the process.
        client.catch(() => opened.delete(tableName));
        opened.set(tableName, client);
      }
      return client;
    },
  };
}

/** True for the 412 an ETag-conditioned write gets when someone else wrote first. */
export function isConcurrencyConflict(error: unknown): boolean {
  return typeof error === "object" && error !== null && (error as { statusCode?: unknown }).statusCode === 412;
}
