import { createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TenantRegistry } from "../../shared/state/tenantRegistry";
import { createTableFactory } from "../../shared/state/tables";
import { AZURITE_ACCOUNT, AZURITE_KEY } from "../harness/azurite";

/**
 * A Table endpoint that accepts connections and never answers: every call must still end,
 * because the Tables SDK has no timeout of its own.
 */

let server: Server;
let port = 0;
const sockets = new Set<Socket>();
let connections = 0;

beforeAll(async () => {
  server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as { port: number }).port;
});
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => server.close(resolve));
});

const connectionString = (): string =>
  `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};TableEndpoint=http://127.0.0.1:${port}/${AZURITE_ACCOUNT};`;

describe("Table calls against storage that never answers", () => {
  it("give up after the per-try timeout, never hang", async () => {
    const tables = createTableFactory({ kind: "connectionString", connectionString: connectionString() }, () => {
      throw new Error("no credential for a connection string");
    }, { tryTimeoutMs: 300 });
    const before = connections;
    const started = Date.now();
    await expect(new TenantRegistry(tables, Date.now).get("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")).rejects.toThrow();
    const took = Date.now() - started;
    // The SDK does not retry a try that timed out: one connection, abandoned after 0.3 s.
    expect(connections - before).toBe(1);
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(5_000);
  }, 20_000);
});
