import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HecAbortedError, HecNoAnswerError, HecTransport, noAnswerReason } from "../../shared/sinks/splunk/hecTransport";
import { createTestCertificate, type TestCertificate } from "../fakes/tls";

/**
 * The sinks' transports at their edges (issue 15, mutation testing), without the app: the Splunk
 * sink's HTTPS transport (shared/sinks/splunk/hecTransport.ts) on its own against a collector
 * scripted per request, with the error a caller gets for a fired signal, a timeout, a refused
 * connection and a failed TLS handshake. The blob sink's own tests are in sinksBlobMutants.test.ts.
 */

const TOKEN = randomUUID();
let cert: TestCertificate;

beforeAll(async () => {
  cert = await createTestCertificate();
});

interface Received {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: Buffer;
}

interface Collector {
  origin: string;
  received: Received[];
  close: () => Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse, received: Received) => void;

const servers: Collector[] = [];
const transports: HecTransport[] = [];
afterAll(async () => {
  await Promise.allSettled(transports.map((transport) => Promise.race([transport.close(), new Promise((resolve) => setTimeout(resolve, 1000))])));
  await Promise.allSettled(servers.map((server) => server.close()));
});

async function collector(handler: Handler): Promise<Collector> {
  const received: Received[] = [];
  const server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const entry = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks) };
      received.push(entry);
      handler(req, res, entry);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const made: Collector = {
    origin: `https://127.0.0.1:${port}`,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  servers.push(made);
  return made;
}

/** Answers every request with `status`, `body` and the given headers. */
const answering =
  (status: number, body: string | Buffer, headers: Record<string, string> = {}): Handler =>
  (_req, res) => {
    res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)), ...headers });
    res.end(body);
  };

function transport(origin: string, options: { caPem?: string | undefined; requestTimeoutMs?: number } = {}): HecTransport {
  const made = new HecTransport({
    origin,
    token: TOKEN,
    userAgent: "MsspDefenderConnector/test",
    requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
    ...("caPem" in options ? (options.caPem === undefined ? {} : { caPem: options.caPem }) : { caPem: cert.certPem }),
  });
  transports.push(made);
  return made;
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(Error);
  return error as Error;
}

const never = () => new AbortController().signal;

describe("Splunk HEC transport: what a caller gets when no answer comes", () => {
  it("throws HecAbortedError, named and worded, when the caller's signal fires before or during the call", async () => {
    const held: ServerResponse[] = [];
    const hanging = await collector((_req, res) => held.push(res));
    const hec = transport(hanging.origin);

    const before = await rejection(hec.send("/services/collector/event", "{}", AbortSignal.abort()));
    expect(before).toBeInstanceOf(HecAbortedError);
    expect(before.name).toBe("HecAbortedError");
    expect(before.message).toBe("the call was abandoned");

    const controller = new AbortController();
    const during = hec.send("/services/collector/event", "{}", controller.signal);
    await expect.poll(() => held.length, { timeout: 5000 }).toBeGreaterThan(0);
    controller.abort();
    const error = await rejection(during);
    expect(error).toBeInstanceOf(HecAbortedError);
    expect(`${error.name}: ${error.message}`).toBe("HecAbortedError: the call was abandoned");
  });

  it("throws HecNoAnswerError with reason timeout when the collector holds the request past the request timeout", async () => {
    const hanging = await collector(() => undefined);
    const started = Date.now();
    const error = await rejection(transport(hanging.origin, { requestTimeoutMs: 300 }).send("/services/collector/health", undefined, never()));
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(error).toBeInstanceOf(HecNoAnswerError);
    expect(error.name).toBe("HecNoAnswerError");
    expect(error.message).toBe("no answer from the collector (timeout)");
    expect((error as HecNoAnswerError).reason).toBe("timeout");
    expect(hanging.received).toHaveLength(1);
  });

  it("names an errno code as the reason, as in a refused connection", async () => {
    const gone = await collector(answering(200, '{"code":0}'));
    await gone.close();
    const error = await rejection(transport(gone.origin).send("/services/collector/event", "{}", never()));
    expect(error).toBeInstanceOf(HecNoAnswerError);
    expect(`${error.name}: ${error.message}`).toBe("HecNoAnswerError: no answer from the collector (ECONNREFUSED)");
    expect((error as HecNoAnswerError).reason).toBe("ECONNREFUSED");
  });

  it("names a refused TLS handshake by OpenSSL's alert code, digits and all", async () => {
    // A collector whose only cipher suite needs an ECDSA key it does not have: the handshake fails
    // with OpenSSL's alert code, which holds digits; "network" alone would hide that it was TLS.
    const server = createServer({ cert: cert.certPem, key: cert.keyPem, maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256" }, (_req, res) => res.end());
    server.on("tlsClientError", () => undefined);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const error = await rejection(transport(`https://127.0.0.1:${port}`).send("/services/collector/event", "{}", never()));
      expect(error).toBeInstanceOf(HecNoAnswerError);
      // OpenSSL 1.1 (Node 20) and 3 (Node 22) spell it differently.
      expect(error.message).toMatch(/^no answer from the collector \(ERR_SSL_SSL(V3|\/TLS)_ALERT_HANDSHAKE_FAILURE\)$/);
      expect((error as HecNoAnswerError).reason).toMatch(/^ERR_SSL_SSL(V3|\/TLS)_ALERT_HANDSHAKE_FAILURE$/);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe("Splunk HEC transport: the reason a failed call gives", () => {
  const failure = (code: unknown, viaCause = false): Error => {
    const inner = Object.assign(new Error("connect to https://hec.example/services/collector?token=abc failed"), { code });
    return viaCause ? new Error("fetch failed", { cause: inner }) : inner;
  };

  it("gives the error's code, or its cause's, when it is a code", () => {
    expect(noAnswerReason(failure("ECONNRESET"))).toBe("ECONNRESET");
    expect(noAnswerReason(failure("UND_ERR_SOCKET", true))).toBe("UND_ERR_SOCKET");
    expect(noAnswerReason(failure("ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION"))).toBe("ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION");
  });

  it("says network for anything that is not a code, so no message, URL or token reaches the operator", () => {
    // Only a string: an array or object whose text reads as a code is not one.
    for (const code of [undefined, 42, "", "econnreset", "1BAD", "ERR SSL", "https://hec.example/?token=abc", `E${"X".repeat(64)}`, ["ECONNRESET"], { toString: () => "ECONNRESET" }]) {
      expect(noAnswerReason(failure(code)), String(code)).toBe("network");
      expect(noAnswerReason(failure(code, true)), String(code)).toBe("network");
    }
    expect(noAnswerReason("ECONNRESET")).toBe("network");
    expect(noAnswerReason(undefined)).toBe("network");
    // The longest code still given: 64 characters.
    expect(noAnswerReason(failure(`E${"X".repeat(63)}`))).toBe(`E${"X".repeat(63)}`);
  });
});
