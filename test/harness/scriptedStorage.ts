import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ContainerClient } from "@azure/storage-blob";

/** A request the scripted endpoint answered: its method, path and query string, and both as one line. */
export interface ScriptedRequest {
  method: string;
  path: string;
  query: string;
  /** `${method} ${path}${query}`. */
  line: string;
}

export interface ScriptedStorage {
  /** The container `scripted` of the endpoint, anonymous over plain HTTP. */
  container: ContainerClient;
  requests: ScriptedRequest[];
  close: () => Promise<void>;
}

/**
 * A blob endpoint scripted per request, counting what it was asked: for a store's refusals,
 * failures and timeouts, which Azurite cannot be made to give. `delayMs` holds an answer back.
 */
export async function scriptedStorage(
  answer: (request: IncomingMessage, index: number) => { status: number; headers?: Record<string, string>; body?: string },
  delayMs: number | ((request: IncomingMessage) => number) = 0,
): Promise<ScriptedStorage> {
  const requests: ScriptedRequest[] = [];
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://localhost");
      const method = req.method ?? "";
      requests.push({ method, path: url.pathname, query: url.search, line: `${method} ${url.pathname}${url.search}` });
      const { status, headers = {}, body = "" } = answer(req, requests.length - 1);
      const reply = (): void => {
        if (res.destroyed) return;
        res.writeHead(status, { "content-length": String(Buffer.byteLength(body)), "x-ms-request-id": randomUUID(), "x-ms-version": "2025-01-05", ...headers });
        res.end(body);
      };
      const delay = typeof delayMs === "number" ? delayMs : delayMs(req);
      if (delay > 0) setTimeout(reply, delay);
      else reply();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    container: new ContainerClient(`http://127.0.0.1:${port}/devstoreaccount1/scripted`),
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A List Blobs answer naming these block blobs, each `contentLength` bytes long, for a scripted endpoint to give. */
export function blobListing(names: readonly string[], contentLength = 0): { status: number; headers: Record<string, string>; body: string } {
  const blobs = names
    .map(
      (name) =>
        `<Blob><Name>${name}</Name><Properties><Last-Modified>Tue, 01 Dec 2026 00:00:00 GMT</Last-Modified><Etag>0x1</Etag><Content-Length>${contentLength}</Content-Length><BlobType>BlockBlob</BlobType></Properties></Blob>`,
    )
    .join("");
  return {
    status: 200,
    headers: { "content-type": "application/xml" },
    body: `<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1/devstoreaccount1/" ContainerName="scripted"><Blobs>${blobs}</Blobs><NextMarker/></EnumerationResults>`,
  };
}
