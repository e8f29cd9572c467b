import { randomBytes } from "node:crypto";
import type { TokenCredential } from "@azure/identity";
import type { TableClient } from "@azure/data-tables";
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { inject } from "vitest";
import { blobDedupeSpill } from "../../shared/pull/dedupeSpill";
import { PullStateStore } from "../../shared/pull/pullState";
import { createTableFactory, type TableFactory } from "../../shared/state/tables";

/**
 * PullStateStore on the run's Azurite (globalSetup), with hooks on the table client for what
 * Azurite cannot be made to do: a rival's write at a chosen moment, an answer lost after the
 * write landed. Shared by the unit files that drive the pull's state and lease.
 */

const noCredential = (): TokenCredential => {
  throw new Error("no credential for a connection string");
};

/** A pull-state store on a table and a container of this test's own in the run's Azurite. */
export function stateStore(
  clock: () => number,
  wrap?: (client: TableClient) => TableClient,
  timeoutMs = 5000,
): { store: PullStateStore; otherInstance: PullStateStore; raw: () => Promise<TableClient>; blobs: ContainerClient } {
  const inner = createTableFactory({ kind: "connectionString", connectionString: inject("storageConnectionString") }, noCredential);
  const name = `PullState${randomBytes(6).toString("hex")}`;
  const blobs = BlobServiceClient.fromConnectionString(inject("storageConnectionString")).getContainerClient(`pullstate-${randomBytes(6).toString("hex")}`);
  const tables: TableFactory = { open: async () => (wrap ? wrap(await inner.open(name)) : inner.open(name)) };
  return {
    store: new PullStateStore({ tables, clock, spill: blobDedupeSpill(blobs), timeoutMs }),
    // The same table and container from another instance of the app (no rows of this process in memory).
    otherInstance: new PullStateStore({ tables: { open: () => inner.open(name) }, clock, spill: blobDedupeSpill(blobs), timeoutMs: 5000 }),
    raw: () => inner.open(name),
    blobs,
  };
}

/** A Table call the pull-state store makes by name, with its arguments as the SDK got them. */
export type TableCall = { method: "getEntity" | "updateEntity" | "createEntity" | "deleteEntity"; args: unknown[] };

/**
 * The same table client, with hooks around each read, conditional write and delete: `before` may fail a
 * call before it reaches storage (or let a rival write first), `after` may lose the answer of one
 * that landed. Both may also just wait.
 */
export function aroundCalls(client: TableClient, hooks: { before?: (call: TableCall) => Promise<void>; after?: (call: TableCall) => Promise<void> }): TableClient {
  return new Proxy(client, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if ((property === "getEntity" || property === "updateEntity" || property === "createEntity" || property === "deleteEntity") && typeof value === "function") {
        return async (...args: unknown[]) => {
          const call: TableCall = { method: property, args };
          await hooks.before?.(call);
          const answer = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          await hooks.after?.(call);
          return answer;
        };
      }
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** The same table client, with a hook before each conditional write (a rival's write, a lost answer). */
export function beforeWrites(client: TableClient, hook: (method: "updateEntity" | "createEntity", entity: Record<string, unknown>) => Promise<void>, after?: (method: string) => Promise<void>): TableClient {
  const writes = (call: TableCall): call is TableCall & { method: "updateEntity" | "createEntity" } => call.method === "updateEntity" || call.method === "createEntity";
  return aroundCalls(client, {
    before: async (call) => (writes(call) ? hook(call.method, call.args[0] as Record<string, unknown>) : undefined),
    after: async (call) => (writes(call) ? after?.(call.method) : undefined),
  });
}

export const LEASE_MS = 60_000;

/** The same table client, recording the name of each call that reaches storage, in order. */
export function recordingCalls(client: TableClient, calls: string[]): TableClient {
  return new Proxy(client, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        if (["getEntity", "updateEntity", "createEntity", "deleteEntity", "listEntities"].includes(String(property))) calls.push(String(property));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}
