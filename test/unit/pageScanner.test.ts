import { describe, expect, it } from "vitest";
import { PageFormatError, scanPage } from "../../shared/defender/pageScanner";

describe("scanPage", () => {
  it("returns each alert's JSON exactly as sent, with its id and lastUpdateTime", () => {
    const alert = '{"id":"da1","title":"He said \\"hi\\" \\\\","evidence":[{"id":"nested","x":[1,{"y":"}"}]}],"lastUpdateTime":"2026-11-23T10:00:00.1234567Z","n":-1.5e3,"b":true,"z":null}';
    const page = scanPage(`{"@odata.context":"https://api/$metadata#Alerts","value":[${alert},{"lastUpdateTime":"2026-11-23T10:00:01Z","id":"da2"}],"@odata.nextLink":"https://api/api/alerts?$skip=2"}`);
    expect(page.alerts.map((a) => [a.id, a.lastUpdateTime])).toEqual([
      ["da1", "2026-11-23T10:00:00.1234567Z"],
      ["da2", "2026-11-23T10:00:01Z"],
    ]);
    expect(page.alerts[0]?.json).toBe(alert);
    expect(JSON.parse(page.alerts[0]?.json ?? "")).toMatchObject({ title: 'He said "hi" \\' });
    expect(page.nextLink).toBe("https://api/api/alerts?$skip=2");
  });

  it("keeps each alert on one line when the service pretty-prints", () => {
    const page = scanPage('{\n  "value": [\n    {\n      "id": "da1",\n      "lastUpdateTime": "2026-11-23T10:00:00Z",\n      "title": "a\\nb"\n    }\n  ]\n}\n');
    expect(page.alerts[0]?.json).not.toMatch(/[\r\n]/);
    expect(JSON.parse(page.alerts[0]?.json ?? "")).toEqual({ id: "da1", lastUpdateTime: "2026-11-23T10:00:00Z", title: "a\nb" });
    expect(page.nextLink).toBeUndefined();
  });

  it("reads an empty page", () => {
    expect(scanPage('{"value":[]}')).toEqual({ alerts: [], nextLink: undefined });
  });

  it.each([
    ['{"value":[{"lastUpdateTime":"2026-11-23T10:00:00Z"}]}', "no string id"],
    ['{"value":[{"id":"da1"}]}', "no string lastUpdateTime"],
    ['{"value":[{"id":"da1","lastUpdateTime":"x"}', "unbalanced"],
    ['{"value":{"id":"da1"}}', "not an array"],
    ['{"odata":1}', 'no "value"'],
    ['{"value":[]} trailing', "trailing data"],
    ['{"value":[1]}', "not an object"],
    ['{"value":[],"@odata.nextLink":5}', "not a string"],
  ])("refuses %s", (text, message) => {
    expect(() => scanPage(text)).toThrow(PageFormatError);
    expect(() => scanPage(text)).toThrow(message);
  });
});
