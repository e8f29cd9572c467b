import { describe, expect, it } from "vitest";
import type { AlertEnvelope } from "../../shared/sinks/alertSink";
import { batches, EventWriter, requestBody, withoutMember, type HecEvent } from "../../shared/sinks/splunk/hecEvents";

/**
 * shared/sinks/splunk/hecEvents.ts (issue 15, mutation testing): the request bodies the Splunk
 * sink sends stay within the request cap however the separators add up, and an alert's evidence
 * is cut out of its raw JSON only when the text is an object whose members can be delimited.
 * Pure functions: no fakes, no app.
 */

const envelope = (json: string): AlertEnvelope => ({
  tenantId: "t-1",
  tenantName: "Contoso",
  source: "mde",
  pulledAt: "2026-11-30T05:01:00.000Z",
  alert: { id: "a-1", lastUpdateTime: "2026-11-30T04:59:30.5166667Z", updatedAtKey: "k", updatedAtMs: 1_796_014_770_516, json },
});

describe("Splunk HEC requests: the separators count against the cap", () => {
  const event = (text: string): HecEvent => ({ text, bytes: Buffer.byteLength(text), envelope: envelope('{"id":"a-1"}') });

  it("starts a new request when the third event's separator would cross the cap, and never sends a body over it", () => {
    const events = [event("aa"), event("bb"), event("cc")];
    // "aa\nbb\ncc" is 8 bytes: one byte over a 7-byte cap, exactly a cap of 8.
    const at7 = batches(events, 7);
    expect(at7.map((group) => requestBody(group).toString())).toEqual(["aa\nbb", "cc"]);
    const at8 = batches(events, 8);
    expect(at8.map((group) => requestBody(group).toString())).toEqual(["aa\nbb\ncc"]);
    for (const [cap, groups] of [[7, at7], [8, at8]] as const) {
      for (const group of groups) expect(requestBody(group).length).toBeLessThanOrEqual(cap);
    }
    // Four events of 1 byte in a 5-byte cap: "a\nb\nc" (5 bytes), then "d".
    const ones = ["a", "b", "c", "d"].map(event);
    expect(batches(ones, 5).map((group) => requestBody(group).toString())).toEqual(["a\nb\nc", "d"]);
  });
});

describe("Splunk HEC events: what the evidence cut accepts", () => {
  it("reads members separated by tabs, as by any other JSON whitespace", () => {
    expect(withoutMember('{\t"a"\t:\t1\t,\t"evidence"\t:\t[]\t}', "evidence")).toBe('{"a"\t:\t1}');
    expect(withoutMember('\t{"evidence":[],"a":1}', "evidence")).toBe('{"a":1}');
    expect(withoutMember('{"a":1,\t"evidence":{"x":1}}', "evidence")).toBe('{"a":1}');
  });

  it("refuses text that does not open with a brace even when the rest reads as members", () => {
    expect(withoutMember('["evidence":[1],"a":2}', "evidence")).toBeUndefined();
    expect(withoutMember('x"evidence":[1],"a":2}', "evidence")).toBeUndefined();
  });

  it("refuses a key followed by anything but a colon", () => {
    expect(withoutMember('{"a"=1,"evidence":2}', "evidence")).toBeUndefined();
    expect(withoutMember('{"evidence";[1],"a":2}', "evidence")).toBeUndefined();
  });

  it("refuses members joined by anything but a comma", () => {
    expect(withoutMember('{"a":1;"evidence":2}', "evidence")).toBeUndefined();
    expect(withoutMember('{"a":1 x"evidence":2}', "evidence")).toBeUndefined();
  });

  it("sends an alert whose evidence is tab-separated without it, and refuses one whose text is no object", () => {
    const writer = new EventWriter({ source: "s", sourcetype: "t" });
    const json = `{"id":"a-1",\t"evidence":[{"x":"${"e".repeat(200)}"}]}`;
    const whole = writer.event(envelope(json)).bytes;
    const cut = writer.prepare([envelope(json)], whole - 1);
    expect(cut.refused).toEqual([]);
    expect(cut.events.map((e) => e.text)).toEqual([
      '{"time":1796014770.516,"source":"s","sourcetype":"t","fields":{"tenant_id":"t-1","tenant_name":"Contoso","source":"mde","truncated":"evidence"},"event":{"id":"a-1"}}',
    ]);
    const odd = `["evidence":[{"x":"${"e".repeat(200)}"}],"id":"a-1"}`;
    const oddBytes = writer.event(envelope(odd)).bytes;
    expect(writer.prepare([envelope(odd)], oddBytes - 1).refused.map((r) => r.detail)).toEqual([
      `${oddBytes} bytes as a Splunk HEC event, over the ${oddBytes - 1}-byte request cap`,
    ]);
  });
});
