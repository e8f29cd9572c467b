import type { TokenCredential } from "@azure/identity";
import { BlobServiceClient, ContainerClient } from "@azure/storage-blob";
import type { StorageConnection } from "../config";
import { timeoutSignal } from "../time/timeoutSignal";

/** Opens a blob container from a connection string (Azurite) or with a managed identity (Azure). */
export function openContainer(storage: StorageConnection, name: string, credential: () => TokenCredential): ContainerClient {
  if (storage.kind === "identity") return new ContainerClient(`${storage.blobServiceUri}/${name}`, credential());
  return BlobServiceClient.fromConnectionString(storage.connectionString).getContainerClient(name);
}

/**
 * Creates the container on first use and remembers success; a failure is not cached, so the
 * next call tries again. The creation is abandoned after `timeoutMs`: the SDK has no timeout of
 * its own, and a storage account that accepts connections and never answers would hold every
 * write behind it.
 */
export function containerCreator(container: ContainerClient, onFailure: (error: unknown) => Error, timeoutMs = 30_000): () => Promise<void> {
  let ready: Promise<void> | undefined;
  return () => {
    ready ??= container.createIfNotExists({ abortSignal: timeoutSignal(timeoutMs) }).then(
      () => undefined,
      (error: unknown) => {
        ready = undefined;
        throw onFailure(error);
      },
    );
    return ready;
  };
}
