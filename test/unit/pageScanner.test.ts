import { describe, expect, it } from "vitest";
import { PageFormatError, scanPage, type RejectReason, type ScannedAlert, type ScannedPage } from "../../shared/defender/pageScanner";
import { canonicalTimestamp } from "../../shared/time/timestamps";

const T = "2026-11-23T10:00:00Z";
const alertText = (id: string, time = T): string => `{"id":${JSON.stringify(id)},"lastUpdateTime":${JSON.stringify(time)}}`;
const page = (...elements: string[]): string => `{"value":[${elements.join(",")}]}`;

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
    expect(page.rejected).toEqual([]);
  });

  it("gives each alert the canonical key and epoch ms of its time", () => {
    const { alerts } = scanPage(page(alertText("a", "2026-11-23T10:00:00.1234567Z"), alertText("b", "2026-11-23T11:30:01.5+01:30")));
    expect(alerts.map((a) => [a.updatedAtKey, a.updatedAtMs])).toEqual([
      ["2026-11-23T10:00:00.1234567Z", Date.UTC(2026, 10, 23, 10, 0, 0, 123)],
      ["2026-11-23T10:00:01.5000000Z", Date.UTC(2026, 10, 23, 10, 0, 1, 500)],
    ]);
  });

  it("reads a zone-less time as UTC", () => {
    const [alert] = scanPage(page(alertText("a", "2026-11-23T10:00:00.25"))).alerts;
    expect(alert).toMatchObject({ lastUpdateTime: "2026-11-23T10:00:00.25", updatedAtKey: "2026-11-23T10:00:00.2500000Z", updatedAtMs: Date.UTC(2026, 10, 23, 10, 0, 0, 250) });
  });

  it("takes the time from lastUpdateDateTime when told to (Microsoft Graph alerts_v2)", () => {
    const graph = '{"id":"g1","lastUpdateTime":"2020-01-01T00:00:00Z","lastUpdateDateTime":"2026-11-23T10:00:00.1234567Z","createdDateTime":"2026-11-23T09:00:00Z"}';
    const scanned = scanPage(page(graph, '{"id":"g2","lastUpdateTime":"2026-11-23T10:00:00Z"}'), { timeField: "lastUpdateDateTime" });
    expect(scanned.alerts).toEqual([
      { id: "g1", lastUpdateTime: "2026-11-23T10:00:00.1234567Z", updatedAtKey: "2026-11-23T10:00:00.1234567Z", updatedAtMs: Date.UTC(2026, 10, 23, 10, 0, 0, 123), json: graph },
    ]);
    expect(scanned.rejected).toEqual([{ index: 1, reason: "missing_time", raw: '{"id":"g2","lastUpdateTime":"2026-11-23T10:00:00Z"}' }]);
    // The default is Defender for Endpoint's field.
    expect(scanPage(page(graph)).alerts[0]?.updatedAtKey).toBe("2020-01-01T00:00:00.0000000Z");
  });

  it("keeps each alert on one line when the service pretty-prints", () => {
    const page = scanPage('{\n  "value": [\n    {\n      "id": "da1",\r\n      "lastUpdateTime": "2026-11-23T10:00:00Z",\n      "title": "a\\nb"\n    }\n  ]\n}\n');
    expect(page.alerts[0]?.json).not.toMatch(/[\r\n]/);
    expect(page.alerts[0]?.json).toBe('{       "id": "da1",       "lastUpdateTime": "2026-11-23T10:00:00Z",       "title": "a\\nb"     }');
    expect(JSON.parse(page.alerts[0]?.json ?? "")).toEqual({ id: "da1", lastUpdateTime: "2026-11-23T10:00:00Z", title: "a\nb" });
    expect(page.nextLink).toBeUndefined();
  });

  it("reads an empty page", () => {
    expect(scanPage('{"value":[]}')).toEqual({ alerts: [], rejected: [], nextLink: undefined });
    expect(scanPage(' {\t"value" : [ \n ] } ')).toEqual({ alerts: [], rejected: [], nextLink: undefined });
  });

  it.each([
    ['{"value":[],"@odata.nextLink":null}', undefined],
    ['{"value":[],"@odata.nextLink":""}', undefined],
    ['{"@odata.nextLink":"https://x/a?$skip=1\\u0026b=\\/c","value":[]}', "https://x/a?$skip=1&b=/c"],
    ['{"value":[],"@odata.next\\u004cink":"https://x"}', "https://x"],
    ['{"value":[],"@odata.count":2,"@odata.nextLink":"https://x","other":{"value":5}}', "https://x"],
  ])("reads the nextLink of %s", (text, nextLink) => {
    expect(scanPage(text).nextLink).toBe(nextLink);
  });

  it("returns the valid alerts around an invalid one, and the invalid one as a reject", () => {
    const bad = '{"id":"da2","lastUpdateTime":"2026-11-23T10:00:00Z","n":01}';
    const scanned = scanPage(page(alertText("da1"), bad, alertText("da3")));
    expect(scanned.alerts.map((a) => a.id)).toEqual(["da1", "da3"]);
    expect(scanned.rejected).toEqual([{ index: 1, reason: "invalid_json", raw: bad }]);
  });

  it.each<[string, RejectReason]>([
    ['{"id":"a","lastUpdateTime":"2026-11-23T10:00:00Z",}', "invalid_json"],
    ['{"id":"a","lastUpdateTime":"2026-11-23T10:00:00Z"} x', "invalid_json"],
    ['{"id":"a","lastUpdateTime":"2026-11-23T10:00:00Z","t":"tab\there"}', "invalid_json"],
    ['{"id":"a","lastUpdateTime":"2026-11-23T10:00:00Z","e":"\\x41"}', "invalid_json"],
    ['{"id":"a","lastUpdateTime":"2026-11-23T10:00:00Z","f":tru}', "invalid_json"],
    ['{"id":"a","lastUpdateTime":"2026-11-23T10:00:00Z","g":[1 2]}', "invalid_json"],
    ['{"id":"a" "lastUpdateTime":"2026-11-23T10:00:00Z"}', "invalid_json"],
    ["{'id':'a'}", "invalid_json"],
    ["1", "not_an_object"],
    ['"text"', "not_an_object"],
    ["null", "not_an_object"],
    ['[{"id":"a","lastUpdateTime":"2026-11-23T10:00:00Z"}]', "not_an_object"],
    ['{"lastUpdateTime":"2026-11-23T10:00:00Z"}', "missing_id"],
    ['{"id":"","lastUpdateTime":"2026-11-23T10:00:00Z"}', "missing_id"],
    ['{"id":7,"lastUpdateTime":"2026-11-23T10:00:00Z"}', "missing_id"],
    ['{"id":"a","lastUpdateTime":"2026-11-23T10:00:00Z","id":null}', "missing_id"],
    ['{"x":{"id":"nested"},"lastUpdateTime":"2026-11-23T10:00:00Z"}', "missing_id"],
    ['{"id":"da1"}', "missing_time"],
    ['{"id":"da1","lastUpdateTime":""}', "missing_time"],
    ['{"id":"da1","lastUpdateTime":1700000000}', "missing_time"],
    ['{"id":"da1","e":[{"lastUpdateTime":"2026-11-23T10:00:00Z"}]}', "missing_time"],
    ['{"id":"da1","lastUpdateTime":"x"}', "invalid_time"],
    ['{"id":"da1","lastUpdateTime":"2026-02-30T10:00:00Z"}', "invalid_time"],
    ['{"id":"da1","lastUpdateTime":"2026-11-23T10:00:00.12345678Z"}', "invalid_time"],
  ])("rejects the element %s as %s and keeps the rest of the page", (element, reason) => {
    const scanned = scanPage(`{"value":[${alertText("before")}, ${element}\n,${alertText("after")}]}`);
    expect(scanned.alerts.map((a) => a.id)).toEqual(["before", "after"]);
    expect(scanned.rejected).toEqual([{ index: 1, reason, raw: element }]);
  });

  it("treats an empty slot between commas as an invalid element", () => {
    const scanned = scanPage(`{"value":[${alertText("a")}, ,${alertText("b")},]}`);
    expect(scanned.alerts.map((a) => a.id)).toEqual(["a", "b"]);
    expect(scanned.rejected).toEqual([
      { index: 1, reason: "invalid_json", raw: "" },
      { index: 3, reason: "invalid_json", raw: "" },
    ]);
  });

  it("decodes escaped ids and times, and recognises member names written with escapes", () => {
    const scanned = scanPage(page('{"\\u0069d":"da\\u00e9\\"1","lastUpdate\\u0054ime":"2026-11-23T10:00:00\\u005a"}', '{"id":"x","id":"last wins","lastUpdateTime":"2020-01-01T00:00:00Z","lastUpdateTime":"2026-11-23T10:00:00Z"}'));
    expect(scanned.rejected).toEqual([]);
    expect(scanned.alerts.map((a) => [a.id, a.lastUpdateTime, a.updatedAtKey])).toEqual([
      ['daé"1', "2026-11-23T10:00:00Z", "2026-11-23T10:00:00.0000000Z"],
      ["last wins", "2026-11-23T10:00:00Z", "2026-11-23T10:00:00.0000000Z"],
    ]);
    // Near misses are other members.
    expect(scanPage(page('{"Id":"a","ids":"b","i":"c","lastUpdateTime":"2026-11-23T10:00:00Z"}')).rejected[0]?.reason).toBe("missing_id");
    expect(scanPage(page('{"id":"a","lastUpdateTimes":"2026-11-23T10:00:00Z","lastupdatetime":"2026-11-23T10:00:00Z"}')).rejected[0]?.reason).toBe("missing_time");
  });

  it("caps a rejected element's raw text at 1 MiB of UTF-8", () => {
    const prefix = '{"id":"a","lastUpdateTime":"2026-11-23T10:00:00Z","big":"';
    const ascii = `${prefix}${"a".repeat(1_500_000)}",}`;
    const [rejectedAscii] = scanPage(page(ascii)).rejected;
    expect(rejectedAscii?.raw).toBe(ascii.slice(0, 1024 * 1024));
    // é is 2 bytes, 😀 (a surrogate pair) is 4: the cut never splits a pair.
    const wide = `${prefix}${"é😀".repeat(200_000)}",}`;
    const raw = scanPage(page(wide)).rejected[0]?.raw ?? "";
    expect(Buffer.byteLength(raw)).toBeLessThanOrEqual(1024 * 1024);
    expect(Buffer.byteLength(raw)).toBeGreaterThan(1024 * 1024 - 6);
    expect(wide.startsWith(raw)).toBe(true);
    expect(raw.charCodeAt(raw.length - 1)).not.toBe(0xd83d);
  });

  it("validates deeply nested alerts without overflowing the stack", () => {
    const depth = 50_000;
    const deep = `{"id":"deep","lastUpdateTime":"${T}","e":${"[{\"a\":".repeat(depth)}1${"}]".repeat(depth)}}`;
    const scanned = scanPage(page(deep, deep.replace(/1}]/, "1]]")));
    expect(scanned.alerts.map((a) => a.json)).toEqual([deep]);
    expect(scanned.rejected.map((r) => [r.index, r.reason])).toEqual([[1, "invalid_json"]]);
  });

  it("validates long runs of simple members and items, finds an error deep inside one, and sees an id after thousands of members", () => {
    const items = Array.from({ length: 100_000 }, (_, n) => ['"s"', String(n), "true", "null", "-1.5e3", '"é😀\\"\\u00e9"', `"${"\\n".repeat(40)}"`][n % 7] ?? "0");
    const members = Array.from({ length: 5_000 }, (_, n) => `"m${n}":${n % 2 === 0 ? n : '"v"'}`);
    const alert = (list: string[], ms = members): string => `{"id":"first","lastUpdateTime":"${T}",${ms.join(",")},"list":[${list.join(", ")}],"id":"last"}`;
    const good = alert(items);
    const leadingZero = [...items];
    leadingZero[77_777] = "01";
    const rawTab = [...items];
    rawTab[88_888] = '"a\tb"';
    const badEscape = [...items];
    badEscape[99_999] = `"${"\\t".repeat(20)}\\x"`;
    const withoutComma = [...members];
    withoutComma[4_000] = '"m4000":1 "x":2';
    const scanned = scanPage(page(good, alert(leadingZero), alert(rawTab), alert(items, withoutComma), alert(badEscape)));
    expect(scanned.alerts.map((a) => [a.id, a.json === good])).toEqual([["last", true]]);
    expect(scanned.rejected.map((r) => [r.index, r.reason])).toEqual([
      [1, "invalid_json"],
      [2, "invalid_json"],
      [3, "invalid_json"],
      [4, "invalid_json"],
    ]);
  });

  it.each([
    ['{"value":[{"id":"da1","lastUpdateTime":"x"}', "unbalanced"],
    ['{"value":[{"id":"da1","lastUpdateTime":"x"}]', "unbalanced"],
    ['{"value":[{"id":"da1","lastUpdateTime":"x]}', "unterminated"],
    ['{"value":[{"id":"da1"}}]}', "unbalanced"],
    ['{"value":{"id":"da1"}}', "not an array"],
    ['{"value":null}', "not an array"],
    ['{"odata":1}', 'no "value"'],
    ["{}", 'no "value"'],
    ['{"value":[]} trailing', "trailing data"],
    ['{"value":[]}{}', "trailing data"],
    ['{"value":[],"@odata.nextLink":5}', "not a string"],
    ['{"value":[],"@odata.nextLink":{"a":1}}', "not a string"],
    ['{"value":[],"@odata.context":tru}', "not valid JSON"],
    ['{"value":[],"x":[1,]}', "not valid JSON"],
    ['{"value":[],}', "member name"],
    ['{"value":[] "x":1}', "expected a comma"],
    ['{"value":[],"value":[]}', 'two "value"'],
    ['[{"id":"da1"}]', "not a JSON object"],
    ["", "not a JSON object"],
  ])("refuses %s", (text, message) => {
    expect(() => scanPage(text)).toThrow(PageFormatError);
    expect(() => scanPage(text)).toThrow(message);
  });
});

// ---------------------------------------------------------------------------------------------
// Property test: the scanner accepts an element iff JSON.parse does, and agrees with it on the
// element's content, over generated valid JSON and generated invalid mutations of it.

/** mulberry32: a small seeded PRNG, so that a failure reproduces. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Generator {
  constructor(readonly random: () => number) {}

  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  chance(p: number): boolean {
    return this.random() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }

  /** JSON whitespace, usually none. */
  ws(): string {
    if (!this.chance(0.15)) return "";
    let s = "";
    for (let n = 1 + this.int(3); n > 0; n--) s += this.pick([" ", "\t", "\n", "\r", "\r\n", "  "]);
    return s;
  }

  hex4(code: number): string {
    const hex = code.toString(16).padStart(4, "0");
    return this.chance(0.5) ? hex : hex.toUpperCase();
  }

  /** A string literal using every kind of escape and raw character JSON allows. */
  string(maxPieces = 6): string {
    let s = '"';
    for (let n = this.int(maxPieces + 1); n > 0; n--) {
      switch (this.int(12)) {
        case 0:
        case 1:
          s += this.pick(["alert", "Ab9", "C:/Temp", " spaced out ", "{[,:]}", "true", "-1.5e3", "'single'"]);
          break;
        case 2:
          s += this.pick(['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"]);
          break;
        case 3:
          s += `\\u${this.hex4(this.int(0x10000))}`;
          break;
        case 4: {
          // A surrogate pair, escaped.
          const code = 0x10000 + this.int(0x100000);
          s += `\\u${this.hex4(0xd800 + ((code - 0x10000) >> 10))}\\u${this.hex4(0xdc00 + ((code - 0x10000) & 0x3ff))}`;
          break;
        }
        case 5:
          s += this.pick(["é", "日本語", "Ünïcödé", "\u2028\u2029", "\u00a0\ufeff", "\u007f", "\uffff", "—"]);
          break;
        case 6:
          s += this.pick(["😀", "𝄞", "\u{10ffff}", "🏳️‍🌈"]); // non-BMP: raw surrogate pairs
          break;
        case 7:
          s += this.pick(["\\ud800", "\\uDFFF", "\ud800", "\udc00x"]); // lone surrogates: JSON.parse takes them
          break;
        case 8:
          s += `\\u00${this.hex4(this.int(0x20)).slice(2)}`; // escaped control characters
          break;
        default:
          s += String.fromCharCode(0x20 + this.int(0x5f)).replace(/["\\]/, "x");
      }
    }
    return `${s}"`;
  }

  number(): string {
    let s = this.chance(0.3) ? "-" : "";
    s += this.chance(0.3) ? "0" : `${1 + this.int(9)}${"0123456789".slice(0, this.int(6))}${this.chance(0.1) ? "12345678901234567890" : ""}`;
    if (this.chance(0.4)) s += `.${this.int(1000)}${this.chance(0.3) ? "000" : ""}`;
    if (this.chance(0.3)) s += `${this.pick(["e", "E"])}${this.pick(["", "+", "-"])}${this.pick(["0", "1", "05", "308", "400", "17"])}`;
    return s;
  }

  value(depth: number): string {
    const kind = depth > 6 ? 2 + this.int(4) : this.int(depth === 0 ? 2 : 7);
    switch (kind) {
      case 0:
        return this.object(depth);
      case 1:
        return this.array(depth);
      case 2:
        return this.string();
      case 3:
        return this.number();
      case 4:
        return this.pick(["true", "false", "null"]);
      default:
        return this.chance(0.5) ? this.string() : this.number();
    }
  }

  name(): string {
    return this.chance(0.6) ? JSON.stringify(this.pick(["title", "severity", "evidence", "a", "", "id", "lastUpdateTime", "ids", "Id", "__x"])) : this.string(3);
  }

  member(depth: number): string {
    return `${this.name()}${this.ws()}:${this.ws()}${this.value(depth + 1)}`;
  }

  object(depth: number): string {
    const members: string[] = [];
    for (let n = this.int(depth === 0 ? 5 : 4); n > 0; n--) members.push(this.member(depth));
    return `{${this.ws()}${members.join(`${this.ws()},${this.ws()}`)}${this.ws()}}`;
  }

  array(depth: number): string {
    const items: string[] = [];
    for (let n = this.int(4); n > 0; n--) items.push(this.value(depth + 1));
    return `[${this.ws()}${items.join(`${this.ws()},${this.ws()}`)}${this.ws()}]`;
  }

  time(): string {
    const good = `2026-${this.pick(["01", "02", "11", "12"])}-${this.pick(["01", "09", "28", "29", "31"])}T${this.pick(["00", "13", "23"])}:${this.pick(["00", "59"])}:${this.pick(["00", "30", "59"])}`;
    const fraction = this.pick(["", ".1", ".123", ".1234567", ".0000001"]);
    const zone = this.pick(["Z", "", "+05:30", "-0800", "z"]);
    if (this.chance(0.1)) return this.pick(["yesterday", "2026-13-01T00:00:00Z", `${good}.12345678Z`, "", "2026-11-23 10:00:00Z"]);
    return good + fraction + zone;
  }

  /** An alert-like object: top-level id and time (with the occasional gap, duplicate or escape), members in random order. */
  alert(timeField: string): string {
    const members: string[] = [];
    for (let n = this.int(6); n > 0; n--) members.push(this.member(0));
    const at = (s: string): void => void members.splice(this.int(members.length + 1), 0, s);
    const idName = this.chance(0.1) ? '"\\u0069d"' : '"id"';
    const timeName = this.chance(0.1) ? JSON.stringify(timeField).replace("T", "\\u0054") : JSON.stringify(timeField);
    if (!this.chance(0.05)) at(`${idName}${this.ws()}:${this.ws()}${this.chance(0.05) ? this.value(1) : this.string(4).replace(/^""$/, '"x"')}`);
    if (!this.chance(0.05)) at(`${timeName}${this.ws()}:${this.ws()}${this.chance(0.03) ? this.number() : JSON.stringify(this.time())}`);
    if (this.chance(0.1)) at(`"evidence":[{"id":${this.string()},${JSON.stringify(timeField)}:"${this.time()}"}]`);
    // Anchors for the targeted mutations below.
    at(`"count":${this.number()}`);
    at(`"flag":${this.pick(["true", "false", "null"])}`);
    at(`"tags":[${this.chance(0.7) ? `${this.string()},${this.number()}` : ""}]`);
    return `{${this.ws()}${members.join(`${this.ws()},${this.ws()}`)}${this.ws()}}`;
  }

  /** One or more edits that (usually) make a valid alert invalid; all strictly inside its outer braces. */
  mutate(text: string): string {
    for (let edits = 1 + (this.chance(0.2) ? this.int(3) : 0); edits > 0; edits--) {
      const inside = 1 + this.int(Math.max(1, text.length - 2)); // 1 … length-2 (or 1)
      switch (this.int(10)) {
        case 0: // delete a character
          text = text.slice(0, inside) + text.slice(inside + 1);
          break;
        case 1: // insert a character
          text = text.slice(0, inside) + this.pick(['"', "\\", ",", ":", "{", "}", "[", "]", " ", "0", "a", "e", "-", ".", "+", "\u0001", "\n", "\t", "\u001f", "\u2028"]) + text.slice(inside);
          break;
        case 2: // truncate a literal
          text = text.replace(/"flag":(true|false|null)/, (_, literal: string) => `"flag":${literal.slice(0, 1 + this.int(literal.length - 1))}`);
          break;
        case 3: // a bad escape
          text = text.slice(0, inside) + this.pick(["\\x", "\\u12G4", "\\u12", "\\a", "\\'", "\\U0041", "\\\u0000"]) + text.slice(inside);
          break;
        case 4: {
          // a raw control character inside a string
          const quote = text.indexOf('"', inside);
          const at = quote < 0 ? inside : quote + 1;
          text = text.slice(0, at) + String.fromCharCode(this.int(0x20)) + text.slice(at);
          break;
        }
        case 5: // a leading zero
          text = text.replace(/"count":(-?)/, `"count":$10`);
          break;
        case 6: // a trailing comma in an array or the object
          text = this.chance(0.5) ? text.replace(/"tags":\[([^\]]*)\]/, '"tags":[$1,]') : `${text.slice(0, -1)},}`;
          break;
        case 7: // a missing or doubled comma/colon
          text = this.chance(0.5) ? text.replace(/,(?="count")/, this.pick(["", ",,", ":"])) : text.replace(/"count":/, this.pick(['"count"', '"count"::', '"count",']));
          break;
        case 8: {
          // a bracket of the wrong kind (depth-neutral, so the page still delimits)
          const swap: Record<string, string> = { "[": "{", "{": "[", "]": "}", "}": "]" };
          const brackets = [...text.slice(1, -1).matchAll(/[[\]{}]/g)].map((match) => (match.index ?? 0) + 1);
          const at = brackets.length > 0 ? this.pick(brackets) : -1;
          if (at > 0) text = text.slice(0, at) + (swap[text.charAt(at)] ?? "") + text.slice(at + 1);
          break;
        }
        default: // a number that is not one
          text = text.replace(/"count":-?[\d.eE+-]+/, `"count":${this.pick(["-", "1.", ".5", "1e", "1e+", "+1", "0x10", "1.e5", "--1", "Infinity", "NaN", "1_000"])}`);
      }
    }
    return text;
  }
}

const JSON_WHITESPACE = /^[ \t\n\r]+|[ \t\n\r]+$/g;

interface Expected {
  reason?: RejectReason;
  alert?: Omit<ScannedAlert, "json">;
  value?: unknown;
}

/** What the scanner must say about an element, by JSON.parse. */
function oracle(text: string, timeField: string): Expected {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { reason: "invalid_json" };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return { reason: "not_an_object" };
  const record = value as Record<string, unknown>;
  const id = Object.hasOwn(record, "id") ? record.id : undefined;
  const time = Object.hasOwn(record, timeField) ? record[timeField] : undefined;
  if (typeof id !== "string" || id === "") return { reason: "missing_id" };
  if (typeof time !== "string" || time === "") return { reason: "missing_time" };
  const canonical = canonicalTimestamp(time);
  if (canonical === undefined) return { reason: "invalid_time" };
  return { alert: { id, lastUpdateTime: time, updatedAtKey: canonical.key, updatedAtMs: canonical.ms }, value };
}

/**
 * The elements of the array whose `[` is at `open`, split where a reader that knows only strings
 * (with escapes) and brackets would split them, whitespace-trimmed; undefined when the text ends
 * first or a `}` closes the array. A second implementation of the delimiting rule, written
 * differently on purpose (a tokenising regex).
 */
function referenceSplit(text: string, open: number): string[] | undefined {
  const token = /"(?:[^"\\]|\\[\s\S])*"|[{}[\],]|[^"{}[\],]+/y;
  token.lastIndex = open + 1;
  const pieces: string[] = [];
  let pieceStart = open + 1;
  let depth = 0;
  for (;;) {
    const match = token.exec(text);
    if (match === null) return undefined;
    const t = match[0];
    if (t === "{" || t === "[") depth++;
    else if (t === "}" || t === "]") {
      if (depth === 0) {
        if (t === "}") return undefined;
        pieces.push(text.slice(pieceStart, match.index));
        break;
      }
      depth--;
    } else if (t === "," && depth === 0) {
      pieces.push(text.slice(pieceStart, match.index));
      pieceStart = token.lastIndex;
    }
  }
  const trimmed = pieces.map((piece) => piece.replace(JSON_WHITESPACE, ""));
  return trimmed.length === 1 && trimmed[0] === "" ? [] : trimmed;
}

/** Structural equality of two JSON.parse results (member order ignored, -0 distinct from 0). */
function deepEqual(a: unknown, b: unknown): boolean {
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return Object.is(a, b);
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.hasOwn(b, key) && deepEqual((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]));
}

/** Differences between the scan of `elements` and what JSON.parse says about each; empty when they agree. */
function disagreements(scanned: ScannedPage, elements: string[], timeField: string): string[] {
  const problems: string[] = [];
  const alerts = [...scanned.alerts];
  const rejected = new Map(scanned.rejected.map((r) => [r.index, r]));
  if (alerts.length + rejected.size !== elements.length || rejected.size !== scanned.rejected.length) {
    return [`${elements.length} elements ${JSON.stringify(elements)}, scanned as ${JSON.stringify(scanned)}`];
  }
  elements.forEach((element, index) => {
    const expected = oracle(element, timeField);
    const reject = rejected.get(index);
    if (expected.reason !== undefined) {
      if (reject?.reason !== expected.reason) problems.push(`#${index} ${JSON.stringify(element)}: expected ${expected.reason}, got ${reject?.reason ?? "an alert"}`);
      else if (reject.raw !== element.replace(JSON_WHITESPACE, "")) problems.push(`#${index} raw ${JSON.stringify(reject.raw)} is not the element ${JSON.stringify(element)}`);
      return;
    }
    if (reject !== undefined) {
      problems.push(`#${index} ${JSON.stringify(element)}: JSON.parse accepts it, the scanner rejected it as ${reject.reason}`);
      return;
    }
    const alert = alerts.shift();
    const { json, ...fields } = alert ?? { json: "" };
    if (JSON.stringify(fields) !== JSON.stringify(expected.alert)) problems.push(`#${index} ${JSON.stringify(element)}: fields ${JSON.stringify(fields)}`);
    if (json !== element.replace(/[\r\n]+/g, " ")) problems.push(`#${index} json ${JSON.stringify(json)} is not the element as sent`);
    if (!deepEqual(JSON.parse(json), expected.value)) problems.push(`#${index} ${JSON.stringify(element)}: content differs`);
  });
  return problems;
}

describe("scanPage against JSON.parse (property test)", () => {
  it("accepts exactly the elements JSON.parse accepts, and reads them the same way", () => {
    const generator = new Generator(prng(20261123));
    const failures: string[] = [];
    let elementsChecked = 0;
    let mutatedChecked = 0;
    let pagesRefused = 0;
    let pagesRedelimited = 0;
    const reasons = new Map<string, number>();
    for (let pageNumber = 0; pageNumber < 3000; pageNumber++) {
      const timeField = pageNumber % 5 === 0 ? "lastUpdateDateTime" : "lastUpdateTime";
      const elements: string[] = [];
      let mutated = 0;
      for (let n = 1 + generator.int(5); n > 0; n--) {
        const roll = generator.random();
        if (roll < 0.45) {
          elements.push(generator.mutate(generator.alert(timeField)));
          mutated++;
        } else if (roll < 0.85) elements.push(generator.alert(timeField));
        else elements.push(generator.value(generator.int(3)));
      }
      const head = `${generator.ws()}{"@odata.context":"https://api/$metadata#Alerts",${generator.ws()}"value"${generator.ws()}:${generator.ws()}`;
      const text = `${head}[${generator.ws()}${elements.join(`${generator.ws()},${generator.ws()}`)}${generator.ws()}]${generator.chance(0.5) ? ',"@odata.nextLink":"https://api/next"' : ""}}${generator.ws()}`;
      // Where an independent structural reader puts the element boundaries. Edits that add or
      // remove an unescaped quote or a bracket can move them (two such edits can even cancel out):
      // then the page is no longer the one generated, and the scanner must either refuse it or
      // split it where the reader does.
      const delimited = referenceSplit(text, head.length);
      const intact = delimited !== undefined && delimited.length === elements.length && delimited.every((piece, n) => piece === elements[n]);
      let scanned: ScannedPage;
      try {
        scanned = scanPage(text, { timeField });
      } catch (error) {
        if (!(error instanceof PageFormatError) || intact) failures.push(`page ${pageNumber} ${JSON.stringify(text)}: threw ${String(error)}`);
        pagesRefused++;
        continue;
      }
      if (delimited === undefined) {
        failures.push(`page ${pageNumber} ${JSON.stringify(text)}: cannot be delimited, yet the scanner read it`);
        continue;
      }
      if (!intact) {
        for (const problem of disagreements(scanned, delimited, timeField)) failures.push(`page ${pageNumber} (re-delimited): ${problem}`);
        pagesRedelimited++;
        continue;
      }
      for (const problem of disagreements(scanned, elements, timeField)) failures.push(`page ${pageNumber}: ${problem}`);
      for (const element of elements) {
        const reason = oracle(element, timeField).reason ?? "accepted";
        reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
      }
      elementsChecked += elements.length;
      mutatedChecked += mutated;
      if (failures.length > 20) break;
    }
    expect(failures).toEqual([]);
    // The generator must exercise both sides, and most mutations must leave the page delimitable.
    expect(elementsChecked).toBeGreaterThan(6000);
    expect(mutatedChecked).toBeGreaterThan(2000);
    expect(pagesRefused + pagesRedelimited).toBeLessThan(1000);
    for (const reason of ["accepted", "invalid_json", "not_an_object", "missing_id", "missing_time", "invalid_time"]) {
      expect(reasons.get(reason) ?? 0, reason).toBeGreaterThan(30);
    }
  });

  it("agrees with JSON.parse on arbitrary values as whole elements, including non-objects", () => {
    const generator = new Generator(prng(7));
    const failures: string[] = [];
    for (let n = 0; n < 2000 && failures.length < 20; n++) {
      const elements = [generator.value(0), generator.value(generator.int(4)), generator.alert("lastUpdateTime")];
      const scanned = scanPage(`{"value":[${elements.join(",")}]}`);
      failures.push(...disagreements(scanned, elements, "lastUpdateTime"));
    }
    expect(failures).toEqual([]);
  });
});
