import type { ContainerClient } from "@azure/storage-blob";
import { statusOf } from "../errors";
import { containerCreator } from "../sinks/containers";
import type { DedupeSpillStore } from "./pullState";

/** Dedupe sets too large for a table row, one blob per save (`{tenantId}/{writeId}.versions`). */
export function blobDedupeSpill(container: ContainerClient): DedupeSpillStore {
  const ensure = containerCreator(container, (error) => new Error(`Creating the pull-state container failed (HTTP ${statusOf(error) ?? "none"})`));
  return {
    async write(_tenantId, name, body, abortSignal) {
      await ensure();
      const bytes = Buffer.from(body, "utf8");
      await container.getBlockBlobClient(name).upload(bytes, bytes.length, { abortSignal });
    },
    async read(name, abortSignal) {
      try {
        return (await container.getBlobClient(name).downloadToBuffer(0, undefined, { abortSignal })).toString("utf8");
      } catch (error) {
        if (statusOf(error) === 404) return undefined;
        throw error;
      }
    },
    async remove(name, abortSignal) {
      await container.getBlobClient(name).deleteIfExists({ abortSignal });
    },
    async removeAll(tenantId, abortSignal) {
      if (!(await container.exists({ abortSignal }))) return;
      for await (const blob of container.listBlobsFlat({ prefix: `${tenantId}/`, abortSignal })) {
        await container.getBlobClient(blob.name).deleteIfExists({ abortSignal });
      }
    },
  };
}
