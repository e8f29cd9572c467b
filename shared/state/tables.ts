import type { TokenCredential } from "@azure/identity";
import { TableClient } from "@azure/data-tables";
import type { StorageConnection } from "../config";

/** Opens tables from either a connection string (Azurite, local) or a managed identity (Azure). */
export interface TableFactory {
  /** The client for `tableName`, creating the table on first use in this process. */
  open(tableName: string): Promise<TableClient>;
}

export function createTableFactory(storage: StorageConnection, credential: () => TokenCredential): TableFactory {
  const opened = new Map<string, Promise<TableClient>>();
  const build = (tableName: string): TableClient => {
    if (storage.kind === "identity") return new TableClient(storage.tableServiceUri, tableName, credential());
    // Azurite speaks plain http on loopback; the SDK refuses http unless told.
    const insecure = /UseDevelopmentStorage=true|TableEndpoint=http:\/\/|DefaultEndpointsProtocol=http;/i.test(
      storage.connectionString,
    );
    return TableClient.fromConnectionString(storage.connectionString, tableName, { allowInsecureConnection: insecure });
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
