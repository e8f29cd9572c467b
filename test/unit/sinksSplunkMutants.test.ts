import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { AlertEnvelope } from "../../shared/sinks/alertSink";
import { SplunkHecSink } from "../../shared/sinks/splunk/splunkHecSink";
import { scanPage } from "../../shared/defender/pageScanner";
import { makeAlert, type MdeAlert } from "../fakes/alerts";
import type { FakeSplunkHec } from "../fakes/fakeSplunkHec";
import { sinkFailure, splunkSinkMaker, startFakeHec } from "../harness/splunkSinkFixture";
import { createTestCertificate, type TestCertificate } from "../fakes/tls";

/**
 * shared/sinks/splunk/splunkHecSink.ts (issue 15, mutation testing): the survivors of its clean
 * Stryker run. What the sink logs about a refused alert, that an empty write in ack mode makes
 * no request at all, which header a request without acknowledgement carries, how a reply that is
 * not a plain success or a code-6 partial indexing is read (a code 0 on an error status, an
 * invalid-event-number on another code or past the batch), which ack ids a partly indexed
 * request contributes, the acknowledgement probe's own request, the bound on a retry's wait,
 * the jitter of the backoff, and a sleep that fails. The sink runs against the HTTPS fake
 * collector (test/fakes/fakeSplunkHec.ts) or a per-test scripted HTTPS endpoint through its
 * real transport (undici), without the app, as in sinksMutants.test.ts.
 */

const TENANT = "0d9c8b7a-6f5e-4d3c-8b2a-1f0e9d8c7b6a";
const TOKEN = randomUUID();
const ACK_TOKEN = randomUUID();

let cert: TestCertificate;
let hec: FakeSplunkHec;
const opened: SplunkHecSink[] = [];

beforeAll(async () => {
  cert = await createTestCertificate();
  hec = await startFakeHec(cert, { plain: TOKEN, ack: ACK_TOKEN });
});
afterAll(async () => {
  await Promise.allSettled(opened.map((sink) => sink.close()));
  await hec?.stop();
});
afterEach(() => {
  vi.restoreAllMocks();
  hec.rejectEvents(null);
  hec.storm(null);
  hec.setMaxContentLength(1_000_000);
});

function envelope(alert: MdeAlert): AlertEnvelope {
  const [scanned] = scanPage(JSON.stringify({ value: [alert] })).alerts;
  if (!scanned) throw new Error("the scanner refused the alert");
  return { tenantId: TENANT, tenantName: "Contoso", source: "mde", pulledAt: "2026-11-30T05:01:00.123Z", alert: scanned };
}

function alertOf(id: string, evidenceBytes = 0): MdeAlert {
  const alert = makeAlert({ id, lastUpdateTime: "2026-11-30T04:59:30.5166667Z" });
  if (evidenceBytes > 0) {
    const template = alert.evidence[0];
    if (!template) throw new Error("makeAlert gave no evidence");
    const entry = { ...template, processCommandLine: "x".repeat(1000) };
    alert.evidence = Array.from({ length: Math.ceil(evidenceBytes / Buffer.byteLength(JSON.stringify(entry))) }, () => entry);
  }
  return alert;
}

const key = () => ({ tenantId: TENANT, pageFrom: "2026-11-30T04:00:00.000Z", pageTo: "2026-11-30T05:00:00.000Z", skip: 0 });

const splunk = splunkSinkMaker(() => ({ url: hec.url, token: TOKEN, caPem: cert.certPem }), opened);
const failure = sinkFailure;

const idOf = (e: { event: unknown }) => (e.event as { id: string }).id;

/** A collector scripted per request: the answers the fake collector never gives. */
interface Seen {
  path: string;
  query: string;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

async function scripted(answer: (path: string, body: string, index: number) => { status: number; body: string }): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const [path = "", query = ""] = (req.url ?? "").split("?");
      const body = Buffer.concat(chunks).toString("utf8");
      seen.push({ path, query, body, headers: req.headers });
      const reply = answer(path, body, seen.filter((s) => s.path === path).length);
      res.writeHead(reply.status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(reply.body)) });
      res.end(reply.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const EVENT_PATH = "/services/collector/event";
const ACK_PATH = "/services/collector/ack";

describe("Splunk HEC sink: what it logs and sends", () => {
  it("logs the tenant and the alert of an alert refused as too large", async () => {
    const id = `ml-${randomUUID()}`;
    const huge = alertOf(id);
    huge.title = "t".repeat(5_000);
    const { sink, warnings } = splunk({}, { maxRequestBytes: 3_000 });
    const result = await sink.write(key(), [envelope(huge)]);
    expect(result.refused).toHaveLength(1);
    expect(warnings).toEqual([
      { message: "An alert is too large for a Splunk HEC request even without its evidence; it is returned as refused", fields: { tenantId: TENANT, alertId: id } },
    ]);
  });

  it("makes no request at all in ack mode when nothing is left to send, not even the acknowledgement check", async () => {
    const huge = alertOf(`me-${randomUUID()}`);
    huge.title = "t".repeat(5_000);
    const before = hec.requests().length;
    const { sink } = splunk({ SPLUNK_HEC_TOKEN: ACK_TOKEN, SPLUNK_HEC_ACK: "true" }, { maxRequestBytes: 3_000 });
    expect(await sink.write(key(), [])).toEqual({});
    const result = await sink.write(key(), [envelope(huge)]);
    expect(result.refused?.[0]).toMatchObject({ reason: "oversized" });
    expect(hec.requests().length).toBe(before);
  });

  it("sends no channel header without acknowledgement", async () => {
    const id = `mc-${randomUUID()}`;
    const before = hec.requests().length;
    const { sink } = splunk();
    await sink.write(key(), [envelope(alertOf(id))]);
    const sent = hec.requests().slice(before);
    expect(sent.map((r) => [r.path, r.status, r.channel])).toEqual([[EVENT_PATH, 200, false]]);
  });

  it("polls no acknowledgement when every event was refused by the collector", async () => {
    const id = `mo-${randomUUID()}`;
    const before = hec.requests().length;
    hec.setMaxContentLength(2_000);
    const { sink } = splunk({ SPLUNK_HEC_TOKEN: ACK_TOKEN, SPLUNK_HEC_ACK: "true" });
    const result = await sink.write(key(), [envelope(alertOf(id, 4_000))]);
    expect(result.refused).toEqual([expect.objectContaining({ alert: expect.objectContaining({ id }), reason: "oversized" })]);
    // The acknowledgement check, then the event the collector found too large; no poll.
    expect(hec.requests().slice(before).map((r) => [r.path, r.status])).toEqual([
      [ACK_PATH, 200],
      [EVENT_PATH, 413],
    ]);
  });
});

describe("Splunk HEC sink: replies that are neither a success nor a partial indexing", () => {
  it("refuses a code 0 that comes with an error status", async () => {
    const server = await scripted(() => ({ status: 400, body: '{"text":"Success","code":0}' }));
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url });
      const error = await failure(sink.write(key(), [envelope(alertOf(`ms-${randomUUID()}`))]));
      expect(error.message).toBe("Splunk HEC refused the events (code 0 (Success), HTTP 400)");
      expect(error.details).toEqual({ permanent: true, code: "0" });
    } finally {
      await server.close();
    }
  });

  it("refuses a request whose reply names an event but is not code 6, without resending", async () => {
    const server = await scripted(() => ({ status: 400, body: '{"text":"Event field is required","code":12,"invalid-event-number":1}' }));
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url });
      const error = await failure(sink.write(key(), [envelope(alertOf(`mv-${randomUUID()}`)), envelope(alertOf(`mv-${randomUUID()}`))]));
      expect(error.message).toMatch(/^Splunk HEC refused the events \(code 12 /);
      expect(error.details).toMatchObject({ permanent: true, code: "12" });
      expect(server.seen.filter((s) => s.path === EVENT_PATH)).toHaveLength(1);
    } finally {
      await server.close();
    }
  });

  it("refuses a code 6 whose invalid event is past the request, without resending", async () => {
    const server = await scripted(() => ({ status: 400, body: '{"text":"Invalid data format","code":6,"invalid-event-number":5}' }));
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url });
      const error = await failure(sink.write(key(), [envelope(alertOf(`mp-${randomUUID()}`)), envelope(alertOf(`mp-${randomUUID()}`))]));
      expect(error.message).toBe("Splunk HEC refused the events (code 6 (Invalid data format), HTTP 400)");
      expect(server.seen.filter((s) => s.path === EVENT_PATH)).toHaveLength(1);
    } finally {
      await server.close();
    }
  });

  it("after a partial indexing, refuses the resend's other refusal at once", async () => {
    const server = await scripted((_path, _body, n) =>
      n === 1 ? { status: 400, body: '{"text":"Invalid data format","code":6,"invalid-event-number":1}' } : { status: 400, body: '{"text":"Incorrect index","code":7}' },
    );
    try {
      const { sink, warnings } = splunk({ SPLUNK_HEC_URL: server.url });
      const error = await failure(sink.write(key(), [envelope(alertOf(`mr-${randomUUID()}`)), envelope(alertOf(`mr-${randomUUID()}`))]));
      expect(error.message).toMatch(/^Splunk HEC refused the events \(code 7 /);
      expect(server.seen.filter((s) => s.path === EVENT_PATH)).toHaveLength(2);
      expect(warnings.map((w) => w.fields)).toEqual([{ tenantId: TENANT, indexed: 1, remaining: 1 }]);
    } finally {
      await server.close();
    }
  });

  it("polls only the ack ids Splunk gave: none for a partly indexed request without one", async () => {
    const server = await scripted((path, _body, n) => {
      if (path === ACK_PATH) return { status: 200, body: n === 1 ? '{"acks":{"0":false}}' : '{"acks":{"6":true}}' };
      return n === 1 ? { status: 400, body: '{"text":"Invalid data format","code":6,"invalid-event-number":1}' } : { status: 200, body: '{"text":"Success","code":0,"ackId":6}' };
    });
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url, SPLUNK_HEC_ACK: "true" });
      expect(await sink.write(key(), [envelope(alertOf(`mk-${randomUUID()}`)), envelope(alertOf(`mk-${randomUUID()}`))])).toEqual({});
      const polls = server.seen.filter((s) => s.path === ACK_PATH).map((s) => JSON.parse(s.body) as unknown);
      expect(polls).toEqual([{ acks: [0] }, { acks: [6] }]);
    } finally {
      await server.close();
    }
  });

  it("takes acknowledgements only from a 200, and refuses a poll answered with no HEC reply", async () => {
    for (const [status, body, message] of [
      [400, '{"acks":{"0":true}}', "Splunk HEC refused the acknowledgement poll (HTTP 400)"],
      [200, "", "Splunk HEC refused the acknowledgement poll (HTTP 200); the URL answered, but not as a Splunk HEC (check SPLUNK_HEC_URL)"],
      // A poll of many ack ids past a lowered limit: the request is too large, not an event.
      [413, "Content-Length of request exceeds max_content_length", "Splunk HEC refused the acknowledgement poll (HTTP 413); the request is larger than the collector's max_content_length"],
    ] as const) {
      const server = await scripted((path, _body, n) => {
        if (path !== ACK_PATH) return { status: 200, body: '{"text":"Success","code":0,"ackId":0}' };
        return n === 1 ? { status: 200, body: '{"acks":{"0":false}}' } : { status, body };
      });
      try {
        const { sink } = splunk({ SPLUNK_HEC_URL: server.url, SPLUNK_HEC_ACK: "true" });
        const error = await failure(sink.write(key(), [envelope(alertOf(`mt-${randomUUID()}`))]));
        expect(error.message).toBe(message);
      } finally {
        await server.close();
      }
    }
  });

  it("reports a collector that answers 503 with code 17 as unhealthy", async () => {
    const server = await scripted(() => ({ status: 503, body: '{"text":"HEC is healthy","code":17}' }));
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url });
      expect(await sink.checkHealth()).toEqual({ healthy: false, status: 503, code: 17 });
    } finally {
      await server.close();
    }
  });

  it("gives the URL hint only to a 2xx answer that is no HEC reply", async () => {
    for (const [status, hint] of [
      [204, true],
      [300, false],
      [404, false],
    ] as const) {
      const server = await scripted(() => ({ status, body: "" }));
      try {
        const { sink } = splunk({ SPLUNK_HEC_URL: server.url });
        const error = await failure(sink.write(key(), [envelope(alertOf(`mu-${randomUUID()}`))]));
        expect(error.message).toBe(`Splunk HEC refused the events (HTTP ${status})${hint ? "; the URL answered, but not as a Splunk HEC (check SPLUNK_HEC_URL)" : ""}`);
      } finally {
        await server.close();
      }
    }
  });
});

describe("Splunk HEC sink: the acknowledgement check", () => {
  it("asks this channel's ack endpoint about id 0, and goes on after an answer that is no HEC reply", async () => {
    const server = await scripted((path, _body, n) => {
      if (path === ACK_PATH) return n === 1 ? { status: 200, body: "" } : { status: 200, body: '{"acks":{"0":true}}' };
      return { status: 200, body: '{"text":"Success","code":0,"ackId":0}' };
    });
    try {
      const { sink } = splunk({ SPLUNK_HEC_URL: server.url, SPLUNK_HEC_ACK: "true" });
      expect(await sink.write(key(), [envelope(alertOf(`mq-${randomUUID()}`))])).toEqual({});
      expect(server.seen.map((s) => [s.path, s.query, s.body.startsWith("{\"acks\"") ? s.body : "events"])).toEqual([
        [ACK_PATH, `channel=${sink.channel}`, '{"acks":[0]}'],
        [EVENT_PATH, "", "events"],
        [ACK_PATH, `channel=${sink.channel}`, '{"acks":[0]}'],
      ]);
    } finally {
      await server.close();
    }
  });
});

describe("Splunk HEC sink: waits", () => {
  it("gives up when a retry's wait would end exactly at its own deadline", async () => {
    const now = Date.now();
    vi.spyOn(Date, "now").mockReturnValue(now);
    hec.storm({ times: 1, retryAfterSeconds: 3 });
    const { sink, sleeps } = splunk({}, { timeoutMs: 3_000 });
    const error = await failure(sink.write(key(), [envelope(alertOf(`mw-${randomUUID()}`))]));
    expect(error.message).toBe("Splunk HEC stayed busy or unreachable while sending events, after 1 attempt(s) (code 9 (Server is busy), HTTP 503)");
    expect(sleeps).toEqual([]);
  });

  it("spreads each backoff between half its ceiling and the ceiling, by the random draw", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.5);
    hec.storm({ times: 3, bare: true });
    const id = `mj-${randomUUID()}`;
    const { sink, sleeps } = splunk();
    expect(await sink.write(key(), [envelope(alertOf(id))])).toEqual({});
    // Ceilings 100, 200, 400: half of each plus a half of it times 0.5.
    expect(sleeps).toEqual([75, 150, 300]);
    expect(hec.indexed().filter((e) => idOf(e) === id)).toHaveLength(1);
  });

  it("passes on a sleep's own failure rather than calling it abandoned", async () => {
    hec.storm({ times: 1, bare: true });
    const broken = new Error("the clock broke");
    const { sink } = splunk({}, { sleep: () => Promise.reject(broken) });
    const error = await sink.write(key(), [envelope(alertOf(`mb-${randomUUID()}`))]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBe(broken);
  });
});

describe("Splunk HEC sink: an event refused twice", () => {
  it("hands back the last event of a request refused twice and sends no empty request after it", async () => {
    const ids = Array.from({ length: 3 }, () => `mz-${randomUUID()}`);
    const bad = ids[2] as string;
    hec.rejectEvents((e) => (e["event"] as { id?: string } | undefined)?.id === bad, 2);
    const before = hec.requests().length;
    const { sink } = splunk();
    const result = await sink.write(key(), ids.map((id) => envelope(alertOf(id))));
    expect(result.refused).toEqual([{ alert: expect.objectContaining({ id: bad }), reason: "rejected", detail: "the collector refused the event as invalid data (HEC code 6)" }]);
    expect(hec.indexed().filter((e) => ids.includes(idOf(e))).map(idOf).sort()).toEqual(ids.slice(0, 2).sort());
    expect(hec.requests().slice(before).map((r) => r.status)).toEqual([400, 400]);
  });
});
