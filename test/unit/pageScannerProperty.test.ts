import { describe, expect, it } from "vitest";
import { PageFormatError, scanPage, type ScannedPage } from "../../shared/defender/pageScanner";
import { canonicalTimestamp } from "../../shared/time/timestamps";
import { generateAlerts } from "../fakes/alerts";
import { generateGraphAlerts } from "../fakes/graphAlerts";
import { seededRandom } from "../harness/random";

// Whole pages against JSON.parse: the scanner must read a page JSON.parse accepts exactly as
// JSON.parse reads it (each alert's raw text parses to the same object as that element of the
// parsed page, with the same id and time), and must refuse, by a PageFormatError or an element
// rejected as invalid_json, exactly the pages JSON.parse refuses. Pages are generated from a
// seed (a failure names its seed and page) and from the fakes' real-shaped alerts, then mutated.

class Gen {
  private readonly random: () => number;

  constructor(seed: number) {
    this.random = seededRandom(seed);
  }

  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  chance(p: number): boolean {
    return this.random() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }

  ws(): string {
    return this.chance(0.8) ? "" : this.pick([" ", "\t", "\n", "\r\n", "  ", " \n\t"]);
  }

  /** A member name spelled as JSON text, sometimes with some characters written as \u escapes. */
  spell(name: string): string {
    if (!this.chance(0.25)) return JSON.stringify(name);
    let out = '"';
    for (const ch of name) {
      const code = ch.charCodeAt(0);
      if (ch.length === 1 && this.chance(0.5)) {
        const hex = code.toString(16).padStart(4, "0");
        out += `\\u${this.chance(0.5) ? hex : hex.toUpperCase()}`;
      } else out += JSON.stringify(ch).slice(1, -1);
    }
    return `${out}"`;
  }

  stringText(): string {
    let s = '"';
    for (let n = this.int(6); n > 0; n--) {
      s += this.pick([
        "plain",
        "C:/Windows",
        '\\"',
        "\\\\",
        "\\/",
        "\\n",
        "\\t",
        "\\u00e9",
        "\\u00E9",
        "\\ud83d\\ude00",
        "é",
        "😀",
        "日本",
        "\u2028",
        " ,:{}[] ",
        "\\u0000",
        "\\b\\f\\r",
      ]);
    }
    return `${s}"`;
  }

  numberText(): string {
    return this.pick(["0", "-0", "7", "-12", "3.25", "1e-7", "1E+2", "6.02e23", "123456789012345678901234567890", "-0.0"]);
  }

  nameText(): string {
    return this.pick([
      () => this.spell(this.pick(["title", "severity", "evidence", "é名前", "emoji😀", "", "ids", "Id", "i", "__proto__", "value"])),
      () => this.stringText(),
      () => this.spell("id"),
      () => this.spell("lastUpdateTime"),
    ])();
  }

  value(depth: number): string {
    const kind = depth >= 4 ? 2 + this.int(3) : this.int(5);
    if (kind === 0) return this.object(depth + 1);
    if (kind === 1) {
      const items: string[] = [];
      for (let n = this.int(4); n > 0; n--) items.push(this.value(depth + 1));
      return `[${this.ws()}${items.join(`${this.ws()},${this.ws()}`)}${this.ws()}]`;
    }
    if (kind === 2) return this.stringText();
    if (kind === 3) return this.numberText();
    return this.pick(["true", "false", "null"]);
  }

  object(depth: number): string {
    const members: string[] = [];
    for (let n = this.int(4); n > 0; n--) members.push(`${this.nameText()}${this.ws()}:${this.ws()}${this.value(depth)}`);
    return `{${this.ws()}${members.join(`${this.ws()},${this.ws()}`)}${this.ws()}}`;
  }

  time(): string {
    if (this.chance(0.08)) return this.pick(["", "soon", "2026-02-30T00:00:00Z", "2026-11-23T10:00:00.12345678Z"]);
    return `2026-11-${this.pick(["01", "23", "30"])}T${this.pick(["00", "10", "23"])}:${this.pick(["00", "59"])}:0${this.int(10)}${this.pick(["", ".5", ".1234567"])}${this.pick(["Z", "", "+01:30"])}`;
  }

  /** An alert-like element: id and time members (escaped names, duplicates, gaps), random members, nested values. */
  alert(timeField: string): string {
    const members: string[] = [];
    for (let n = this.int(6); n > 0; n--) members.push(`${this.nameText()}${this.ws()}:${this.ws()}${this.value(1)}`);
    const insert = (member: string): void => void members.splice(this.int(members.length + 1), 0, member);
    const idValue = (): string => (this.chance(0.05) ? this.value(2) : this.chance(0.3) ? this.stringText().replace(/^""$/, '"x"') : JSON.stringify(`da${this.int(1e9)}_${this.int(1e6)}`));
    if (!this.chance(0.05)) insert(`${this.spell("id")}${this.ws()}:${this.ws()}${idValue()}`);
    if (this.chance(0.1)) insert(`${this.spell("id")}:${idValue()}`); // a duplicate: the last one counts
    const timeValue = (): string => (this.chance(0.03) ? this.numberText() : JSON.stringify(this.time()));
    if (!this.chance(0.05)) insert(`${this.spell(timeField)}${this.ws()}:${this.ws()}${timeValue()}`);
    if (this.chance(0.1)) insert(`${this.spell(timeField)}:${timeValue()}`);
    if (this.chance(0.1)) insert(`"evidence":[{"id":"nested",${JSON.stringify(timeField)}:"2026-11-23T10:00:00Z"}]`);
    return `{${this.ws()}${members.join(`${this.ws()},${this.ws()}`)}${this.ws()}}`;
  }

  /** A page around `elements`: its members in either order, names sometimes escaped, optional nextLink. */
  page(elements: readonly string[]): string {
    const value = `${this.spell("value")}${this.ws()}:${this.ws()}[${this.ws()}${elements.join(`${this.ws()},${this.ws()}`)}${this.ws()}]`;
    const members = [`"@odata.context"${this.ws()}:${this.ws()}"https://api/$metadata#Alerts"`, value];
    const link = this.pick(['"https://api/alerts?$skip=2"', '"https://api/alerts?$skip=2\\u0026$top=5"', '""', "null", ""]);
    if (link !== "") members.splice(this.int(3), 0, `${this.spell("@odata.nextLink")}${this.ws()}:${this.ws()}${link}`);
    return `${this.ws()}{${this.ws()}${members.join(`${this.ws()},${this.ws()}`)}${this.ws()}}${this.ws()}`;
  }

  /** One edit of the kinds a broken response shows: most make the page invalid, some (inside a string) do not. */
  mutate(text: string): { kind: string; text: string } {
    const at = this.int(text.length);
    const insert = (s: string, where = at): string => text.slice(0, where) + s + text.slice(where);
    const quotes = [...text.matchAll(/"/g)].map((m) => m.index ?? 0);
    const kind = this.pick(["truncated", "stray comma", "unclosed string", "bad escape", "control character", "trailing garbage", "deleted character", "inserted character", "swapped bracket"]);
    switch (kind) {
      case "truncated":
        return { kind, text: text.slice(0, at) };
      case "stray comma": {
        // Half the time next to a bracket or another comma, where a lenient reader would let it pass.
        const beforeClose = [...text.matchAll(/[\]}]/g)].map((m) => m.index ?? 0);
        const afterOpenOrComma = [...text.matchAll(/[[{,]/g)].map((m) => (m.index ?? 0) + 1);
        return { kind, text: insert(",", this.chance(0.5) ? at : this.pick(this.chance(0.5) ? beforeClose : afterOpenOrComma)) };
      }
      case "unclosed string": {
        const quote = this.pick(quotes);
        return { kind, text: text.slice(0, quote) + text.slice(quote + 1) };
      }
      case "bad escape":
        return { kind, text: insert(this.pick(["\\x", "\\u12G4", "\\u12", "\\a", "\\'", "\\U0041", "\\\u0001"]), this.pick(quotes) + 1) };
      case "control character":
        return { kind, text: insert(String.fromCharCode(this.int(0x20)), this.pick(quotes) + 1) };
      case "trailing garbage":
        return { kind, text: text + this.pick(["x", "}", ",", "{}", "[]", "\u0000", '"', "0"]) };
      case "deleted character":
        return { kind, text: text.slice(0, at) + text.slice(at + 1) };
      case "inserted character": {
        // Often at the start or end of a number, where a digit, sign, point or exponent makes one JSON does not allow (01, 1., -+1, 1e).
        const numbers = [...text.matchAll(/("\s*:\s*|[[,]\s*)(-?\d[\d.eE+-]*)/g)].map((m) => (m.index ?? 0) + (m[1]?.length ?? 0) + (this.chance(0.5) ? 0 : (m[2]?.length ?? 0)));
        const where = numbers.length > 0 && this.chance(0.7) ? this.pick(numbers) : at;
        return { kind, text: insert(this.pick(["0", "0", "1", "-", "+", ".", "e", "E", " ", ":", "{", "]", "\\", "t", "n"]), where) };
      }
      default: {
        const brackets = [...text.matchAll(/[[\]{}]/g)].map((m) => m.index ?? 0);
        const swap: Record<string, string> = { "[": "{", "{": "[", "]": "}", "}": "]" };
        const b = this.pick(brackets);
        return { kind, text: text.slice(0, b) + (swap[text.charAt(b)] ?? "") + text.slice(b + 1) };
      }
    }
  }
}

/** Equality of two JSON.parse results: member order ignored, -0 distinct from 0. */
function deepEqual(a: unknown, b: unknown): boolean {
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return Object.is(a, b);
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.hasOwn(b, key) && deepEqual((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]));
}

type Outcome = { refused: true; how: string } | { refused: false; page: ScannedPage };

function scan(text: string, timeField: string): Outcome {
  try {
    const page = scanPage(text, { timeField });
    const invalid = page.rejected.find((r) => r.reason === "invalid_json");
    return invalid === undefined ? { refused: false, page } : { refused: true, how: `element ${invalid.index} rejected as invalid_json` };
  } catch (error) {
    if (error instanceof PageFormatError) return { refused: true, how: `PageFormatError: ${error.message}` };
    throw error;
  }
}

/** What JSON.parse says the page holds, or why the scanner may refuse a page JSON.parse accepts. */
function parsePage(text: string): { ok: true; value: unknown[]; nextLink: string | undefined } | { ok: false; why: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, why: "not JSON" };
  }
  const page = parsed as Record<string, unknown>;
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return { ok: false, why: "not an object" };
  if (!Array.isArray(page.value)) return { ok: false, why: "no value array" };
  const link = page["@odata.nextLink"];
  if (link !== undefined && link !== null && typeof link !== "string") return { ok: false, why: "nextLink not a string" };
  return { ok: true, value: page.value as unknown[], nextLink: typeof link === "string" && link !== "" ? link : undefined };
}

/**
 * Differences between the scan of a page JSON.parse accepts and JSON.parse's reading of it. When
 * the element texts are known, each alert's json must also be its element exactly (raw line
 * breaks between tokens turned into spaces, so that it stays one NDJSON line).
 */
function compare(page: ScannedPage, value: unknown[], nextLink: string | undefined, timeField: string, elements?: readonly string[]): string[] {
  const problems: string[] = [];
  if (page.nextLink !== nextLink) problems.push(`nextLink ${String(page.nextLink)}, JSON.parse says ${String(nextLink)}`);
  const alerts = [...page.alerts];
  const rejected = new Map(page.rejected.map((r) => [r.index, r]));
  if (page.alerts.length + page.rejected.length !== value.length) return [...problems, `${value.length} elements, scanned ${page.alerts.length} + ${page.rejected.length}`];
  value.forEach((element, index) => {
    let expected: string;
    let fields: { id: string; time: string } | undefined;
    if (element === null || typeof element !== "object" || Array.isArray(element)) expected = "not_an_object";
    else {
      const record = element as Record<string, unknown>;
      const id = Object.hasOwn(record, "id") ? record.id : undefined;
      const time = Object.hasOwn(record, timeField) ? record[timeField] : undefined;
      if (typeof id !== "string" || id === "") expected = "missing_id";
      else if (typeof time !== "string" || time === "") expected = "missing_time";
      else if (canonicalTimestamp(time) === undefined) expected = "invalid_time";
      else {
        expected = "alert";
        fields = { id, time };
      }
    }
    const reject = rejected.get(index);
    if (expected !== "alert" || fields === undefined) {
      if (reject?.reason !== expected) problems.push(`#${index}: expected ${expected}, got ${reject?.reason ?? "an alert"}`);
      return;
    }
    if (reject !== undefined) {
      problems.push(`#${index}: expected an alert, got ${reject.reason}`);
      return;
    }
    const alert = alerts.shift();
    if (alert === undefined) return;
    const canonical = canonicalTimestamp(fields.time);
    if (alert.id !== fields.id || alert.lastUpdateTime !== fields.time || alert.updatedAtKey !== canonical?.key || alert.updatedAtMs !== canonical.ms) {
      problems.push(`#${index}: fields ${JSON.stringify([alert.id, alert.lastUpdateTime, alert.updatedAtKey, alert.updatedAtMs])}, JSON.parse says ${JSON.stringify(fields)}`);
    }
    if (/[\r\n]/.test(alert.json)) problems.push(`#${index}: json has a line break`);
    if (!deepEqual(JSON.parse(alert.json), element)) problems.push(`#${index}: json ${alert.json} does not parse to the element`);
    const text = elements?.[index];
    if (text !== undefined && alert.json !== text.replace(/[\r\n]+/g, " ")) problems.push(`#${index}: json ${JSON.stringify(alert.json)} is not the element as sent ${JSON.stringify(text)}`);
  });
  return problems;
}

interface Tally {
  pages: number;
  mutations: number;
  refusedByBoth: number;
  acceptedByBoth: number;
  kinds: Map<string, number>;
}

/** Checks a valid page and `mutations` mutations of it; returns the failures. */
function check(gen: Gen, label: string, text: string, elements: readonly string[], timeField: string, mutations: number, tally: Tally): string[] {
  const failures: string[] = [];
  const show = (t: string): string => JSON.stringify(t.length > 600 ? `${t.slice(0, 600)}…` : t);
  const expected = parsePage(text);
  if (!expected.ok) return [`${label}: the generator made an invalid page (${expected.why}) ${show(text)}`];
  const outcome = scan(text, timeField);
  if (outcome.refused) failures.push(`${label}: refused a valid page (${outcome.how}) ${show(text)}`);
  else failures.push(...compare(outcome.page, expected.value, expected.nextLink, timeField, elements).map((p) => `${label}: ${p} in ${show(text)}`));
  tally.pages++;
  for (let m = 0; m < mutations; m++) {
    const mutation = gen.mutate(text);
    const parsed = parsePage(mutation.text);
    const got = scan(mutation.text, timeField);
    const where = `${label} mutation ${m} (${mutation.kind})`;
    tally.mutations++;
    tally.kinds.set(mutation.kind, (tally.kinds.get(mutation.kind) ?? 0) + 1);
    if (!parsed.ok && parsed.why === "not JSON") {
      if (!got.refused) failures.push(`${where}: JSON.parse refuses it, the scanner read it ${show(mutation.text)}`);
      else tally.refusedByBoth++;
      if (!got.refused) continue;
      continue;
    }
    if (!parsed.ok) {
      // Valid JSON but not a page (an edit inside a name turned "value" into another member): refused by the scanner too.
      if (!got.refused) failures.push(`${where}: read a page without a usable value array (${parsed.why}) ${show(mutation.text)}`);
      continue;
    }
    if (got.refused) {
      failures.push(`${where}: JSON.parse accepts it, the scanner refused it (${got.how}) ${show(mutation.text)}`);
      continue;
    }
    tally.acceptedByBoth++;
    failures.push(...compare(got.page, parsed.value, parsed.nextLink, timeField).map((p) => `${where}: ${p} in ${show(mutation.text)}`));
  }
  return failures;
}

const newTally = (): Tally => ({ pages: 0, mutations: 0, refusedByBoth: 0, acceptedByBoth: 0, kinds: new Map() });

describe("scanPage on whole pages, against JSON.parse", () => {
  it("reads generated pages as JSON.parse does and refuses exactly the mutations JSON.parse refuses", () => {
    const seed = 14_2;
    const gen = new Gen(seed);
    const tally = newTally();
    const failures: string[] = [];
    for (let n = 0; n < 400 && failures.length < 10; n++) {
      const timeField = n % 4 === 0 ? "lastUpdateDateTime" : "lastUpdateTime";
      const elements: string[] = [];
      for (let k = gen.int(6); k > 0; k--) elements.push(gen.chance(0.85) ? gen.alert(timeField) : gen.value(1));
      failures.push(...check(gen, `seed ${seed} page ${n}`, gen.page(elements), elements, timeField, 4, tally));
    }
    expect(failures).toEqual([]);
    // The generator must reach both sides of every question, or the test proves little.
    expect(tally.pages).toBe(400);
    expect(tally.refusedByBoth).toBeGreaterThan(800);
    expect(tally.acceptedByBoth).toBeGreaterThan(100);
    expect([...tally.kinds.values()].every((count) => count > 100)).toBe(true);
  });

  it("reads real-shaped Defender and Graph alert pages as JSON.parse does, compact or pretty-printed, and refuses their broken copies as JSON.parse does", () => {
    const seed = 2026;
    const gen = new Gen(seed);
    const tally = newTally();
    const failures: string[] = [];
    const start = new Date("2026-11-01T00:00:00Z");
    const sources = [
      { timeField: "lastUpdateTime", alerts: generateAlerts("4d3c2b1a-0000-4000-8000-00000000a1e7", 240, { start, spacingMs: 7 }) as unknown[] },
      { timeField: "lastUpdateDateTime", alerts: generateGraphAlerts("4d3c2b1a-0000-4000-8000-00000000a1e7", 240, { start, spacingMs: 7 }) as unknown[] },
    ];
    for (const { timeField, alerts } of sources) {
      for (let n = 0; n < alerts.length && failures.length < 10; n += 12) {
        const indent = gen.pick([undefined, undefined, 2, "\t"]);
        const lineBreak = gen.pick(["\n", "\r\n"]);
        const elements = alerts.slice(n, n + 12).map((alert) => JSON.stringify(alert, null, indent).replace(/\n/g, lineBreak));
        failures.push(...check(gen, `seed ${seed} ${timeField} page ${n / 12}`, gen.page(elements), elements, timeField, 12, tally));
      }
    }
    expect(failures).toEqual([]);
    expect(tally.pages).toBe(40);
    expect(tally.refusedByBoth).toBeGreaterThan(200);
    expect(tally.acceptedByBoth).toBeGreaterThan(20);
  });

  it("recognises escaped spellings of id, the time member, value and @odata.nextLink, and lets the last duplicate win", () => {
    const alert = '{"\\u0069d":"first","lastUpdateTime":"2020-01-01T00:00:00Z","i\\u0064":"da\\u00e9\\ud83d\\ude00","\\u006castUpdate\\u0054ime":"2026-11-23T10:00:00\\u005A","na\\"me":"\\\\"}';
    const text = `{"\\u0076alue":[${alert}],"@odata.next\\u004Cink":"https://api/next?a=1\\u0026b=2"}`;
    const page = scanPage(text);
    expect(page.rejected).toEqual([]);
    expect(page.alerts).toEqual([{ id: "daé😀", lastUpdateTime: "2026-11-23T10:00:00Z", updatedAtKey: "2026-11-23T10:00:00.0000000Z", updatedAtMs: Date.UTC(2026, 10, 23, 10), json: alert }]);
    expect(page.nextLink).toBe("https://api/next?a=1&b=2");
    const parsed = JSON.parse(text) as { value: unknown[] };
    expect(JSON.parse(page.alerts[0]?.json ?? "")).toEqual(parsed.value[0]);
  });
});
