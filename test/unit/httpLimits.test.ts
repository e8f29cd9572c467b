import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpClient, HttpResponseTooLargeError } from "../../shared/http/httpClient";

/** The app's HTTP client never holds an answer larger than the caller accepts. */

let server: Server;
let base = "";
let closedEarly = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    const size = Number(new URL(req.url ?? "/", "http://x").searchParams.get("size") ?? 0);
    const chunked = req.url?.includes("chunked") ?? false;
    res.on("close", () => {
      if (!res.writableFinished) closedEarly++;
    });
    res.writeHead(200, chunked ? { "Content-Type": "application/json" } : { "Content-Type": "application/json", "Content-Length": String(size) });
    // Written in 64 KiB pieces, as a large page arrives.
    let sent = 0;
    const piece = Buffer.alloc(64 * 1024, 0x61);
    const next = (): void => {
      while (sent < size) {
        const n = Math.min(piece.length, size - sent);
        sent += n;
        if (!res.write(piece.subarray(0, n))) {
          res.once("drain", next);
          return;
        }
      }
      res.end();
    };
    next();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe("bounded answers", () => {
  const client = createHttpClient();

  it("reads an answer within the limit whole", async () => {
    const response = await client.send(`${base}/?size=100000`, { method: "GET", maxResponseBytes: 100_000 });
    expect(response.body).toHaveLength(100_000);
  });

  it("refuses by Content-Length before reading, and mid-stream when the length is not declared", async () => {
    const before = closedEarly;
    await expect(client.send(`${base}/?size=${64 * 1024 * 1024}`, { method: "GET", maxResponseBytes: 1024 * 1024 })).rejects.toBeInstanceOf(HttpResponseTooLargeError);
    await expect(client.send(`${base}/chunked?size=${64 * 1024 * 1024}`, { method: "GET", maxResponseBytes: 1024 * 1024 })).rejects.toThrow(
      /larger than 1048576 bytes/,
    );
    // Both connections were cut: the 64 MiB were never read.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(closedEarly - before).toBe(2);
  });

  it("applies a 16 MiB limit when the caller names none", async () => {
    await expect(client.send(`${base}/?size=${17 * 1024 * 1024}`, { method: "GET" })).rejects.toBeInstanceOf(HttpResponseTooLargeError);
  });
});
