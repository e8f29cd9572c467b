import type { TokenCredential } from "@azure/identity";
import { QueueClient, QueueServiceClient } from "@azure/storage-queue";
import type { StorageConnection } from "../config";

/** Opens a queue from a connection string (Azurite) or with a managed identity (Azure). */
export function openQueue(storage: StorageConnection, queueName: string, credential: () => TokenCredential): QueueClient {
  if (storage.kind === "identity") return new QueueClient(`${storage.queueServiceUri}/${queueName}`, credential());
  return QueueServiceClient.fromConnectionString(storage.connectionString).getQueueClient(queueName);
}

/**
 * The Functions queue trigger decodes base64 by default (host.json messageEncoding), so
 * messages are encoded to match rather than relying on a non-default host setting.
 */
export function encodeQueueMessage(message: unknown): string {
  // Stryker disable next-line StringLiteral: "" as an encoding reads as Buffer.from's default, utf8 (this also ignores the line's "base64" mutant, which the tests kill)
  return Buffer.from(JSON.stringify(message), "utf8").toString("base64");
}
