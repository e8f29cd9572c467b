import { describe, expect, it } from "vitest";
import type { AlertEnvelope } from "../../shared/sinks/alertSink";
import { eventHubsFailure } from "../../shared/sinks/eventhubs/failure";
import { EventHubsSettingsError, parseEventHubsSettings } from "../../shared/sinks/eventhubs/settings";
import { retryAfterOf, uploadFailure } from "../../shared/sinks/sentinel/failures";
import { parseSentinelSettings, SentinelSettingsError } from "../../shared/sinks/sentinel/settings";
import { describeAnswer, HEC_HEALTHY, HEC_INVALID_DATA_FORMAT, HEC_SUCCESS, isRetryable } from "../../shared/sinks/splunk/hecCodes";
import { EventWriter, GRAPH_SPLUNK_SOURCETYPE, jsonValueEnd, withoutMember } from "../../shared/sinks/splunk/hecEvents";
import { parseRetryAfter } from "../../shared/sinks/splunk/hecTransport";
import { DEFAULT_SPLUNK_SOURCETYPE, parseSplunkSettings, splunkSettingsProblems, SplunkSettingsError } from "../../shared/sinks/splunk/settings";

/**
 * The edges of the sinks' settings, codes and failure mapping (issue 15, mutation testing): the
 * exact words an operator reads for each refused setting and each collector or service answer,
 * and the boundaries of every size and time rule. Pure functions: no fakes, no app.
 */

const HEC_TOKEN = "0f6c3a7e-41d2-4b8e-9a55-7c2d1e9b3f10";
const SPLUNK = { SPLUNK_HEC_URL: "https://splunk.example:8088", SPLUNK_HEC_TOKEN: HEC_TOKEN };

describe("Splunk HEC codes: what the operator reads for each answer", () => {
  it("names every documented code with its text and, where one helps, the setting to check", () => {
    const expected: Record<number, string> = {
      0: "code 0 (Success), HTTP 200",
      1: "code 1 (Token disabled), HTTP 200; enable the HEC token or set SPLUNK_HEC_TOKEN to an enabled one",
      2: "code 2 (Token is required), HTTP 200; check SPLUNK_HEC_TOKEN",
      3: "code 3 (Invalid authorization), HTTP 200; check SPLUNK_HEC_TOKEN",
      4: "code 4 (Invalid token), HTTP 200; check SPLUNK_HEC_TOKEN",
      5: "code 5 (No data), HTTP 200",
      6: "code 6 (Invalid data format), HTTP 200",
      7: "code 7 (Incorrect index), HTTP 200; add SPLUNK_INDEX to the token's allowed indexes, or change SPLUNK_INDEX",
      8: "code 8 (Internal server error), HTTP 200",
      9: "code 9 (Server is busy), HTTP 200",
      10: "code 10 (Data channel is missing), HTTP 200; the token has indexer acknowledgement on: set SPLUNK_HEC_ACK=true",
      11: "code 11 (Invalid data channel), HTTP 200",
      12: "code 12 (Event field is required), HTTP 200",
      13: "code 13 (Event field cannot be blank), HTTP 200",
      14: "code 14 (ACK is disabled), HTTP 200; the token has indexer acknowledgement off (always on Splunk Cloud): set SPLUNK_HEC_ACK=false",
      15: "code 15 (Error in handling indexed fields), HTTP 200",
      16: "code 16 (Query string authorization is not enabled), HTTP 200",
      17: "code 17 (HEC is healthy), HTTP 200",
      18: "code 18 (HEC is unhealthy, queues are full), HTTP 200",
      19: "code 19 (HEC is unhealthy, ack service unavailable), HTTP 200",
      20: "code 20 (HEC is unhealthy, queues are full, ack service unavailable), HTTP 200",
    };
    for (let code = 0; code <= 20; code++) expect(describeAnswer(200, code)).toBe(expected[code]);
    expect(describeAnswer(503, 21)).toBe("code 21, HTTP 503");
    expect(describeAnswer(502, undefined)).toBe("HTTP 502");
    expect([HEC_SUCCESS, HEC_HEALTHY, HEC_INVALID_DATA_FORMAT]).toEqual([0, 17, 6]);
  });

  it("retries exactly the busy and unhealthy codes and the busy statuses", () => {
    const retried = Array.from({ length: 21 }, (_, code) => code).filter((code) => isRetryable(400, code));
    expect(retried).toEqual([8, 9, 18, 19, 20]);
    expect([407, 408, 409, 428, 429, 430, 499, 500, 599].filter((status) => isRetryable(status, undefined))).toEqual([408, 429, 500, 599]);
    // A busy status is retried whatever code came with it.
    expect(isRetryable(503, 4)).toBe(true);
  });

  it("reads Retry-After as whole seconds of any length, at most ten minutes, a date counted from now", () => {
    expect(parseRetryAfter("0")).toBe(0);
    expect(parseRetryAfter("120")).toBe(120_000);
    expect(parseRetryAfter("600")).toBe(600_000);
    expect(parseRetryAfter([])).toBeUndefined();
    // Neither seconds nor a date: no wait at all rather than a guess.
    expect(parseRetryAfter("7s")).toBeUndefined();
    expect(parseRetryAfter("a7")).toBeUndefined();
    expect(parseRetryAfter(new Date(Date.now() + 3_600_000).toUTCString())).toBe(600_000);
  });
});

describe("Splunk HEC events: sizes at the request cap", () => {
  const envelope = (json: string, source: AlertEnvelope["source"] = "mde"): AlertEnvelope => ({
    tenantId: "t-1",
    tenantName: "Contoso",
    source,
    pulledAt: "2026-11-30T05:01:00.000Z",
    alert: { id: "a-1", lastUpdateTime: "2026-11-30T04:59:30.5166667Z", updatedAtKey: "k", updatedAtMs: 1_796_014_770_516, json },
  });
  const writer = new EventWriter({ source: "mssp-defender-connector", sourcetype: "mde:alert", index: "mssp" });

  it("writes the event text the collector parses, byte for byte", () => {
    const event = writer.event(envelope('{"id":"a-1","evidence":[]}'));
    expect(event.text).toBe(
      '{"time":1796014770.516,"source":"mssp-defender-connector","sourcetype":"mde:alert","index":"mssp","fields":{"tenant_id":"t-1","tenant_name":"Contoso","source":"mde"},"event":{"id":"a-1","evidence":[]}}',
    );
    expect(event.bytes).toBe(event.text.length);
    const graph = new EventWriter({ source: "s", sourcetype: "mde:alert" }).event(envelope('{"id":"g"}', "graph"), { alertJson: '{"id":"g2"}', member: "evidence" });
    expect(graph.text).toBe(
      `{"time":1796014770.516,"source":"s","sourcetype":"${GRAPH_SPLUNK_SOURCETYPE}","fields":{"tenant_id":"t-1","tenant_name":"Contoso","source":"graph","truncated":"evidence"},"event":{"id":"g2"}}`,
    );
    // Bytes, not characters: the request cap counts bytes.
    expect(writer.event(envelope('{"id":"é"}')).bytes).toBe(writer.event(envelope('{"id":"e"}')).bytes + 1);
  });

  it("keeps an event of exactly the cap whole, trims one a byte over, and names the size it refuses", () => {
    const json = `{"id":"a-1","title":"${"t".repeat(300)}","evidence":[{"x":"${"e".repeat(200)}"}]}`;
    const whole = writer.event(envelope(json)).bytes;
    const exact = writer.prepare([envelope(json)], whole);
    expect(exact.refused).toEqual([]);
    expect(exact.events[0]?.text).toContain('"evidence":[');
    const over = writer.prepare([envelope(json)], whole - 1);
    expect(over.refused).toEqual([]);
    expect(over.events[0]?.text).toContain('"truncated":"evidence"');
    expect(over.events[0]?.text).not.toContain('"evidence":[');
    const trimmedBytes = over.events[0]?.bytes as number;
    expect(writer.prepare([envelope(json)], trimmedBytes).events).toHaveLength(1);
    const refused = writer.prepare([envelope(json)], trimmedBytes - 1);
    expect(refused.events).toEqual([]);
    expect(refused.refused).toEqual([
      {
        alert: envelope(json).alert,
        reason: "oversized",
        detail: `${trimmedBytes} bytes as a Splunk HEC event even without its evidence, over the ${trimmedBytes - 1}-byte request cap`,
      },
    ]);
    const bare = `{"id":"a-1","title":"${"t".repeat(300)}"}`;
    const bareBytes = writer.event(envelope(bare)).bytes;
    expect(writer.prepare([envelope(bare)], bareBytes - 1).refused[0]?.detail).toBe(`${bareBytes} bytes as a Splunk HEC event, over the ${bareBytes - 1}-byte request cap`);
  });
});

describe("Splunk HEC events: cutting the evidence out of raw JSON", () => {
  it("refuses a member name that is no valid JSON string, and finds a value that runs to the end", () => {
    expect(withoutMember('{"\\q":1,"evidence":2}', "evidence")).toBeUndefined();
    expect(withoutMember('{"a":1,"evidence":[2]}', "evidence")).toBe('{"a":1}');
    expect(jsonValueEnd("12", 0)).toBe(2);
    expect(jsonValueEnd('[{"a":1},{"b":[2]}]', 0)).toBe(19);
    expect(jsonValueEnd("x:true", 2)).toBe(6);
  });
});

describe("Splunk settings: the edges", () => {
  it("defaults the sourcetype to the Microsoft Security add-on's alerts sourcetype", () => {
    expect(parseSplunkSettings(SPLUNK).sourcetype).toBe("ms:defender:atp:alerts");
    expect(DEFAULT_SPLUNK_SOURCETYPE).toBe("ms:defender:atp:alerts");
  });

  it("takes an index of 80 characters and a sourcetype of 256, one more of either is refused", () => {
    expect(parseSplunkSettings({ ...SPLUNK, SPLUNK_INDEX: "i".repeat(80), SPLUNK_SOURCETYPE: "s".repeat(256) })).toMatchObject({ index: "i".repeat(80), sourcetype: "s".repeat(256) });
    expect(splunkSettingsProblems({ ...SPLUNK, SPLUNK_INDEX: "i".repeat(81) })).toEqual([
      "SPLUNK_INDEX must be a Splunk index name: lower-case letters, digits, _ and -, not starting with _ or -, at most 80 characters",
    ]);
    expect(splunkSettingsProblems({ ...SPLUNK, SPLUNK_SOURCETYPE: "mde\talerts" })).toEqual(["SPLUNK_SOURCETYPE must be at most 256 characters without control characters"]);
  });

  it("refuses a URL with a user, a password, a query or a fragment, each alone", () => {
    for (const url of ["https://user@splunk.example", "https://:pw@splunk.example", "https://splunk.example/?q=1", "https://splunk.example/#x"]) {
      expect(splunkSettingsProblems({ ...SPLUNK, SPLUNK_HEC_URL: url }), url).toEqual(["SPLUNK_HEC_URL must not carry credentials, a query or a fragment"]);
    }
    expect(splunkSettingsProblems({ ...SPLUNK, SPLUNK_HEC_URL: "ftp://splunk.example" })).toEqual(["SPLUNK_HEC_URL must be an absolute https URL"]);
    expect(parseSplunkSettings({ ...SPLUNK, SPLUNK_HEC_URL: "https://Splunk.Example:443/" }).url).toBe("https://splunk.example");
  });

  it("recognises an unresolved Key Vault reference in any case, and only at the start", () => {
    expect(splunkSettingsProblems({ ...SPLUNK, SPLUNK_HEC_TOKEN: "@microsoft.keyvault(VaultName=kv;SecretName=hec)" })).toEqual([
      "SPLUNK_HEC_TOKEN is a Key Vault reference App Service could not resolve; check the reference's status and the identity's access to the vault",
    ]);
    expect(splunkSettingsProblems({ ...SPLUNK, SPLUNK_HEC_TOKEN: "x@Microsoft.KeyVault(VaultName=kv;SecretName=hec)" })).toEqual(["SPLUNK_HEC_TOKEN must be a HEC token (a GUID)"]);
  });

  it("takes a token only as a whole GUID", () => {
    for (const token of [`{${HEC_TOKEN}}`, `${HEC_TOKEN}0`, `0${HEC_TOKEN}`, HEC_TOKEN.replace(/-/g, ""), HEC_TOKEN.replace("0f6c3a7e", "0f6c3a7"), HEC_TOKEN.replace("7c2d1e9b3f10", "7c2d1e9b3f1g")]) {
      expect(splunkSettingsProblems({ ...SPLUNK, SPLUNK_HEC_TOKEN: token }), token).toEqual(["SPLUNK_HEC_TOKEN must be a HEC token (a GUID)"]);
    }
    const settings = parseSplunkSettings({ ...SPLUNK, SPLUNK_HEC_TOKEN: ` ${HEC_TOKEN} ` });
    expect(settings.token).toBe(HEC_TOKEN);
  });

  it("reads SPLUNK_HEC_ACK in any case and refuses anything else, naming the error", () => {
    expect(parseSplunkSettings({ ...SPLUNK, SPLUNK_HEC_ACK: "False" }).ack).toBe(false);
    expect(parseSplunkSettings({ ...SPLUNK, SPLUNK_HEC_ACK: " True " }).ack).toBe(true);
    for (const ack of ["yes", "2", "on"]) expect(splunkSettingsProblems({ ...SPLUNK, SPLUNK_HEC_ACK: ack })).toEqual(["SPLUNK_HEC_ACK must be true or false"]);
    let thrown: unknown;
    try {
      parseSplunkSettings({});
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(SplunkSettingsError);
    expect((thrown as Error).name).toBe("SplunkSettingsError");
    expect((thrown as Error).message).toBe(
      "Invalid Splunk HEC settings:\n- SPLUNK_HEC_URL is required (the collector's https origin, e.g. https://splunk.example:8088)\n- SPLUNK_HEC_TOKEN is required (a Key Vault reference to the HEC token in Azure)",
    );
  });
});

describe("Event Hubs settings: the edges", () => {
  const VALID = { EVENTHUB_FULLY_QUALIFIED_NAMESPACE: "contoso-siem.servicebus.windows.net", EVENTHUB_NAME: "mssp-defender-alerts" };
  const problemsOf = (env: Record<string, string>): readonly string[] => {
    try {
      parseEventHubsSettings({ ...VALID, ...env });
      return [];
    } catch (error) {
      if (!(error instanceof EventHubsSettingsError)) throw error;
      return error.problems;
    }
  };
  const NOT_A_HOST = "EVENTHUB_FULLY_QUALIFIED_NAMESPACE must be a host name such as contoso.servicebus.windows.net";
  const NOT_BARE = "EVENTHUB_FULLY_QUALIFIED_NAMESPACE must be a host name such as contoso.servicebus.windows.net, without scheme, port or path";
  const CONNECTION_STRING = "EVENTHUB_FULLY_QUALIFIED_NAMESPACE must be the namespace's host name only, not a connection string: the app signs in with its managed identity";

  it("takes any host of two or more labels, a label of one character, digits anywhere", () => {
    for (const host of ["a.b", "ns1.servicebus.windows.net", "1ns.servicebus.windows.net", "x-1.servicebus.usgovcloudapi.net"]) {
      expect(parseEventHubsSettings({ ...VALID, EVENTHUB_FULLY_QUALIFIED_NAMESPACE: host }).fullyQualifiedNamespace).toBe(host);
    }
  });

  it("says which part of a namespace is wrong, in its exact words", () => {
    for (const host of ["contoso-.servicebus.windows.net", "contoso_siem.servicebus.windows.net", "contoso.", ".contoso", "xEndpoint=abc"]) {
      expect(problemsOf({ EVENTHUB_FULLY_QUALIFIED_NAMESPACE: host }), host).toEqual([NOT_A_HOST]);
    }
    for (const host of ["contoso.servicebus.windows.net?x", "contoso.servicebus.windows.net#x", "user@contoso.servicebus.windows.net", "contoso servicebus.windows.net", "amqps://contoso.servicebus.windows.net"]) {
      expect(problemsOf({ EVENTHUB_FULLY_QUALIFIED_NAMESPACE: host }), host).toEqual([NOT_BARE]);
    }
  });

  it("recognises each part of a connection string, in any case, at the start or after a ;", () => {
    for (const value of ["SharedAccessKeyName=send;SharedAccessKey=abc", "EntityPath=alerts", " endpoint = sb://contoso/", "contoso.servicebus.windows.net;SharedAccessSignature=sig", "sharedaccesskey=abc"]) {
      expect(problemsOf({ EVENTHUB_FULLY_QUALIFIED_NAMESPACE: value }), value).toEqual([CONNECTION_STRING]);
    }
  });

  it("takes hub names of letters, digits, periods, hyphens and underscores, starting and ending alphanumeric", () => {
    for (const hub of ["Alerts", "123", "a.b_c-d", "a1"]) expect(problemsOf({ EVENTHUB_NAME: hub }), hub).toEqual([]);
    for (const hub of ["_alerts", ".alerts", "alerts.", "alerts_"]) {
      expect(problemsOf({ EVENTHUB_NAME: hub }), hub).toEqual([
        "EVENTHUB_NAME must be 1-256 letters, digits, periods, hyphens or underscores, starting and ending with a letter or digit",
      ]);
    }
  });

  it("names its error and lists every problem in its message", () => {
    let thrown: unknown;
    try {
      parseEventHubsSettings({});
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(EventHubsSettingsError);
    expect((thrown as Error).name).toBe("EventHubsSettingsError");
    expect((thrown as Error).message).toBe(
      "Invalid Event Hubs settings:\n- EVENTHUB_FULLY_QUALIFIED_NAMESPACE is required (the namespace's host name, e.g. contoso.servicebus.windows.net)\n- EVENTHUB_NAME is required (the event hub's name inside the namespace)",
    );
  });
});

describe("Event Hubs failures: the edges", () => {
  it("reads the throttling wait only from a text message of a ServerBusyError", () => {
    const busy = (message: unknown) => eventHubsFailure("x", Object.assign(new Error(), { name: "ServerBusyError", message })).details;
    expect(busy(["Please wait 4 seconds"])).toEqual({ code: "ServerBusyError" });
    expect(busy("Please wait 4 seconds")).toEqual({ code: "ServerBusyError", retryAfterMs: 4000 });
  });

  it("keeps only a code that is a string, with digits anywhere after its first letter", () => {
    const of = (error: object) => eventHubsFailure("x", error).details;
    expect(of({ name: "ServerBusyError", code: true })).toEqual({ code: "ServerBusyError" });
    expect(of({ name: "Error", code: "amqp:link:stolen2" })).toEqual({ code: "amqp:link:stolen2" });
    expect(of({ name: "Error", code: "E42" })).toEqual({ code: "E42" });
  });

  it("reads a name or code only from an object", () => {
    class ServerBusyError {}
    expect(eventHubsFailure("x", ServerBusyError).message).toBe("x (no error code)");
  });
});

describe("Sentinel upload failures: the edges", () => {
  const answered = (status: number, response: object | undefined, code?: unknown) => ({ statusCode: status, ...(code === undefined ? {} : { code }), ...(response ? { response } : {}) });
  const headers = (values: Record<string, string>) => ({ get: (name: string) => values[name] });
  const progress = { ingested: 0, total: 2 };

  it("reads Retry-After of several digits, and a date ahead as the time until it", () => {
    const now = Date.parse("2026-11-30T05:00:00Z");
    expect(retryAfterOf(answered(429, { headers: headers({ "retry-after": "120" }) }), now)).toBe(120_000);
    expect(retryAfterOf(answered(429, { headers: headers({ "retry-after": "Mon, 30 Nov 2026 05:00:30 GMT" }) }), now)).toBe(30_000);
    expect(retryAfterOf(answered(429, { headers: headers({ "x-ms-retry-after-ms": "1500" }) }), now)).toBe(1500);
    expect(retryAfterOf(answered(429, {}), now)).toBeUndefined();
  });

  it("takes the code from the body when the response has no headers, and only a string", () => {
    expect(uploadFailure(answered(400, { bodyAsText: '{"error":{"code":"InvalidStream"}}' }), false, progress).details).toEqual({ permanent: true, code: "InvalidStream" });
    expect(uploadFailure(answered(400, { bodyAsText: '{"error":{"code":true}}' }), false, progress).details).toEqual({ permanent: true });
    expect(uploadFailure(answered(400, { bodyAsText: '{"error":{"code":["Abc"]}}' }), false, progress).details).toEqual({ permanent: true });
    expect(uploadFailure(answered(400, { headers: headers({}), bodyAsText: "null" }), false, progress).details).toEqual({ permanent: true });
    expect(uploadFailure(answered(400, undefined, "Http429.Too_Many"), false, progress).details).toEqual({ permanent: true, code: "Http429.Too_Many" });
  });

  it("says what was stopped and what was kept when the call's time ran out", () => {
    expect(uploadFailure(answered(500, undefined), true, { ingested: 2, total: 5 }).message).toBe(
      "Sending alerts to Log Analytics was stopped: the call's time was up or it was cancelled; 2 of 5 records were ingested and are not sent again by this instance",
    );
  });
});

describe("Sentinel settings: what is kept", () => {
  it("refuses a stream whose name holds another stream name after a bad character", () => {
    expect(() => parseSentinelSettings({ SENTINEL_INGESTION_ENDPOINT: "https://dce.example.com", SENTINEL_DCR_IMMUTABLE_ID: `dcr-${"ab".repeat(16)}`, SENTINEL_STREAM_NAME: "Custom-Bad/Custom-Ok" })).toThrow(
      "SENTINEL_STREAM_NAME must be Custom- followed by letters, digits, _ or - (at most 100)",
    );
  });

  it("keeps an endpoint's origin, lower-cased, and names its error", () => {
    expect(
      parseSentinelSettings({ SENTINEL_INGESTION_ENDPOINT: "https://DCE.Example.com:443", SENTINEL_DCR_IMMUTABLE_ID: `dcr-${"ab".repeat(16)}` }).ingestionEndpoint,
    ).toBe("https://dce.example.com");
    let thrown: unknown;
    try {
      parseSentinelSettings({ SENTINEL_INGESTION_ENDPOINT: "https://dce.example.com" });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(SentinelSettingsError);
    expect((thrown as Error).name).toBe("SentinelSettingsError");
  });
});
