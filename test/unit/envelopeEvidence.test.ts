import { describe, expect, it } from "vitest";
import type { AlertEnvelope } from "../../shared/sinks/alertSink";
import { envelopeLine, withoutEvidence } from "../../shared/sinks/envelope";

describe("withoutEvidence", () => {
  it.each([
    ['{"id":"a","evidence":[{"x":1}],"title":"t"}', '{"id":"a","title":"t"}'],
    ['{"evidence":[{"x":1}],"id":"a"}', '{"id":"a"}'],
    ['{"id":"a","evidence":[]}', '{"id":"a"}'],
    ['{"evidence":[1,2]}', "{}"],
    ['{ "id" : "a" , "evidence" : [ {"y":"]}\\"evidence\\""} ] , "n" : 1.50 }', '{ "id" : "a" , "n" : 1.50 }'],
    ['{"id":"a","title":"has \\"evidence\\": [] inside","evidence":null,"t":true}', '{"id":"a","title":"has \\"evidence\\": [] inside","t":true}'],
    // An escaped key is still the member `evidence`.
    ['{"id":"a","\\u0065vidence":[1]}', '{"id":"a"}'],
  ])("drops the top-level member from %s", (json, expected) => {
    expect(withoutEvidence(json)).toBe(expected);
    expect(JSON.parse(expected)).toEqual(Object.fromEntries(Object.entries(JSON.parse(json) as object).filter(([k]) => k !== "evidence")));
  });

  it("keeps every other byte as it was (numbers and escapes are not rewritten)", () => {
    const json = '{"incidentId":12345678901234567890,"score":1.0,"title":"\\u00e9t\\u00e9","evidence":[{"a":1}],"z":-0}';
    expect(withoutEvidence(json)).toBe('{"incidentId":12345678901234567890,"score":1.0,"title":"\\u00e9t\\u00e9","z":-0}');
  });

  it("says when there is nothing to drop: no top-level evidence", () => {
    expect(withoutEvidence('{"id":"a","nested":{"evidence":[1]}}')).toBeUndefined();
    expect(withoutEvidence('{"id":"a"}')).toBeUndefined();
    expect(withoutEvidence("{}")).toBeUndefined();
    expect(withoutEvidence("[]")).toBeUndefined();
  });
});

describe("envelopeLine", () => {
  const envelope: AlertEnvelope = {
    tenantId: "t1",
    tenantName: 'Contoso "East"\nLtd',
    source: "mde",
    pulledAt: "2026-11-30T05:01:00.123Z",
    alert: { id: "da1", lastUpdateTime: "2026-11-30T05:00:00.1234567Z", updatedAtKey: "", updatedAtMs: 0, json: '{"id":"da1","evidence":[]}' },
  };

  it("is the envelope's fields in order, then the alert's JSON as received", () => {
    expect(envelopeLine(envelope)).toBe(
      '{"tenantId":"t1","tenantName":"Contoso \\"East\\"\\nLtd","source":"mde","pulledAt":"2026-11-30T05:01:00.123Z","alert":{"id":"da1","evidence":[]}}',
    );
  });

  it("takes a replacement for the alert's JSON", () => {
    expect(envelopeLine(envelope, '{"id":"da1"}')).toMatch(/,"alert":\{"id":"da1"\}\}$/);
  });
});
