import type { TokenCredential } from "@azure/identity";
import { BlobServiceClient, ContainerClient } from "@azure/storage-blob";
import type { StorageConnection } from "../config";

/** Opens a blob container from a connection string (Azurite) or with a managed identity (Azure). */
export function openContainer(storage: StorageConnection, name: string, credential: () => TokenCredential): ContainerClient {
  if (storage.kind === "identity") return new ContainerClient(`${storage.blobServiceUri}/${name}`, credential());
  return BlobServiceClient.fromConnectionString(storage.connectionString).getContainerClient(name);
}
