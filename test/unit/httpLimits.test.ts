import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpClient, HttpResponseTooLargeError } from "../../shared/http/httpClient";

/** The app's HTTP client never holds an answer larger than the caller accepts. */

let server: Server;
let base = "";
let closedEarly = 0;

const LINE = '{"id":"da1","title":"Suspicious file","user":"CONTOSO\\\\jdoe"},';
const LARGE_ASCII = `{"value":[${LINE.repeat(40_000)}{}]}`;
const LARGE_UNICODE = `{"value":[${LINE.repeat(20_000)}{"title":"Fichier suspect ✓ 東京 🛡 café"},${LINE.repeat(20_000)}{"t":"é"}]}`;

/** A page of `size` characters that differs from every other page at every line. */
function pageText(name: string, size: number): string {
  const line = `{"page":"${name}","n":"`;
  let text = "";
  for (let i = 0; text.length < size; i++) text += `${line}${i}"},\n`;
  return text.slice(0, size);
}

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url?.startsWith("/page/")) {
      // Page n: its own text, of the size asked for; "cut" ends the connection half-way.
      const url = new URL(req.url, "http://x");
      const bytes = Buffer.from(pageText(url.pathname.slice("/page/".length), Number(url.searchParams.get("size"))), "utf8");
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": String(bytes.length) });
      if (url.searchParams.has("cut")) {
        res.write(bytes.subarray(0, bytes.length >> 1), () => res.destroy());
        return;
      }
      for (let at = 0; at < bytes.length; at += 65_536) res.write(bytes.subarray(at, at + 65_536));
      res.end();
      return;
    }
    if (req.url?.startsWith("/text")) {
      // A multi-megabyte page of alerts, its multi-byte characters split across the pieces it is written in.
      const text = req.url.includes("ascii") ? LARGE_ASCII : LARGE_UNICODE;
      const bytes = Buffer.from(text, "utf8");
      const chunked = req.url.includes("chunked");
      res.writeHead(200, chunked ? { "Content-Type": "application/json" } : { "Content-Type": "application/json", "Content-Length": String(bytes.length) });
      for (let at = 0; at < bytes.length; at += 65_537) res.write(bytes.subarray(at, at + 65_537));
      res.end();
      return;
    }
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

describe("answers as text", () => {
  const client = createHttpClient();

  // An ASCII page is decoded as Latin-1 (the same characters, freed sooner; see decodeUtf8): a page
  // with one multi-byte character anywhere must still be decoded as UTF-8, however it arrives.
  for (const transfer of ["", "chunked"]) {
    it(`decodes a large ASCII page and a large UTF-8 page to the text sent (${transfer || "Content-Length"})`, async () => {
      const ascii = await client.send(`${base}/text/ascii/${transfer}`, { method: "GET" });
      expect(ascii.body).toBe(LARGE_ASCII);
      const unicode = await client.send(`${base}/text/unicode/${transfer}`, { method: "GET" });
      expect(unicode.body).toBe(LARGE_UNICODE);
      expect(unicode.body).toContain("✓ 東京 🛡 café");
    });
  }
});

describe("pages read one after another and side by side", () => {
  // The client assembles a large page in a buffer it then reuses for the next one: no page may
  // show another's bytes, whether they overlap, come in turn, shrink, or one breaks off.
  it("returns each page's own text", async () => {
    const client = createHttpClient();
    // Every text is checked again at the end too: a text that still pointed into a reused buffer
    // would have changed since its own read.
    const texts: Array<[string, number, string]> = [];
    const read = async (name: string, size: number): Promise<void> => {
      const response = await client.send(`${base}/page/${name}?size=${size}`, { method: "GET" });
      expect(response.body.length).toBe(size);
      expect(response.body === pageText(name, size), `page ${name}`).toBe(true);
      texts.push([name, size, response.body]);
    };
    await Promise.all([read("a", 2_500_000), read("b", 1_500_000), read("c", 3_000_000)]);
    await read("d", 3_000_000);
    await read("e", 1_200_000);
    await expect(client.send(`${base}/page/f?size=2000000&cut`, { method: "GET" })).rejects.toThrow();
    await Promise.all([read("g", 2_000_000), read("h", 2_000_000)]);
    await read("i", 500_000);
    expect(texts).toHaveLength(8);
    for (const [name, size, text] of texts) expect(text === pageText(name, size), `page ${name} at the end`).toBe(true);
  });
});
