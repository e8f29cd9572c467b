import { describe, expect, it } from "vitest";
import { PageFormatError, scanPage } from "../../shared/defender/pageScanner";

/**
 * shared/defender/pageScanner.ts lines 1 to 421 (issue 15, mutation testing): the JSON validator,
 * scanString, scanNumber, the regex runs and delimit, at the edges the other scanner tests leave
 * open. Every case is held to JSON.parse: an element JSON.parse accepts comes back as an alert
 * with its raw text unchanged, one it refuses comes back rejected as invalid_json with its raw
 * text, and the rest of the page still counts. Each value is read both by the token loop (after a
 * line break, which ends a regex run) and by a regex run (on one line).
 */

const T = "2026-11-23T10:00:00Z";
const head = `"id":"a","lastUpdateTime":"${T}"`;

/** Scans `element` between two good alerts and checks it against JSON.parse. */
function agrees(element: string): void {
  let valid = true;
  try {
    JSON.parse(element);
  } catch {
    valid = false;
  }
  const scanned = scanPage(`{"value":[{"id":"before","lastUpdateTime":"${T}"},${element},{"id":"after","lastUpdateTime":"${T}"}]}`);
  if (valid) {
    expect(scanned.rejected, element).toEqual([]);
    expect(scanned.alerts.map((a) => a.json), element).toEqual([`{"id":"before","lastUpdateTime":"${T}"}`, element.replace(/[\r\n]+/g, " "), `{"id":"after","lastUpdateTime":"${T}"}`]);
  } else {
    expect(scanned.alerts.map((a) => a.id), element).toEqual(["before", "after"]);
    expect(scanned.rejected, element).toEqual([{ index: 1, reason: "invalid_json", raw: element }]);
  }
}

/** The value as a top-level member's, a nested member's and an array item's, each read by the token loop and by a run. */
function agreesAsValue(value: string): void {
  for (const sep of ["", "\n"]) {
    agrees(`{${head},"x":${sep}${value}}`);
    agrees(`{${head},"x":${sep}${value},"y":1}`);
    agrees(`{${head},"n":{"x":${sep}${value}}}`);
    agrees(`{${head},"n":{"z":{},"x":${sep}${value}}}`);
    agrees(`{${head},"l":[${sep}${value}]}`);
    agrees(`{${head},"l":[1,${sep}${value}]}`);
    agrees(`{"x":${sep}${value},${head}}`);
  }
  // A page member is validated the same way (its exact message: see "page members that are not JSON").
  let valid = true;
  try {
    JSON.parse(value);
  } catch {
    valid = false;
  }
  for (const text of [`{"a":${value},"value":[]}`, `{"value":[],"a":\n${value}}`]) {
    if (valid) expect(scanPage(text), text).toEqual({ alerts: [], rejected: [], nextLink: undefined });
    else expect(() => scanPage(text), text).toThrow(PageFormatError);
  }
}

describe("scanNumber, against JSON.parse", () => {
  it.each([
    "0", "-0", "1", "9", "10", "19", "90", "-9", "1234567890",
    "0.0", "0.9", "1.0", "9.09", "-0.5", "1e0", "1e9", "1E5", "1e+0", "1e-9", "1E-09", "1.5e+10", "9.9E9",
    "01", "09", "-01", "00", "-", "-a", "+1", "1.", "1.e5", ".5", "-.5", "1e", "1e+", "1e-", "1E", "1e+a", "1.a", "1..2",
    "1ee2", "1e5.0", "1.5.5", "0x10", "1/", "1:", "/", ":", "0/", "1e/", "1e:", "1./", "1.:", "-/", "-:",
  ])("reads %s as JSON.parse does", (value) => {
    agreesAsValue(value);
  });
});

describe("scanNumber in a page member", () => {
  it.each(["-x", "-", "1.x", "1.", "1ex", "1e+", "-.5", "0.e1"])("refuses the page member %j as not JSON, with the member's own message", (number) => {
    for (const text of [`{"a":${number},"value":[]}`, `{"value":[],"a":${number}}`, `{ "a" : ${number} , "value" : [ ] }`]) {
      expect(() => JSON.parse(text)).toThrow(SyntaxError);
      expect(() => scanPage(text), text).toThrow(new PageFormatError("a page member is not valid JSON"));
    }
  });
});

describe("page members that are not JSON", () => {
  // validateValue refuses each of these outright (no valid JSON value starts them), so the page is
  // refused for the member itself, not for what follows a value read from its start.
  it.each([
    '"\\x"', '"\t"', "-a", "+1", "tru", "fals", "nul", "trux", "x", "{a:1}", '{"\\x":1}', '{"a" 1}', '{"a"}', '{"a":}',
    '{"a":1,b:2}', '{"a":1,"\\x":2}', '{"a":1,"b" 2}', '{"a":1,"b"}', '{"a":1]', "[1}", "{]", "[}", "[1,]", "[,1]", '["a":1]',
    '{"a":1,}', '{,"a":1}', "{undefined}", "{:1}", '{"n":{"a":1]}', "[[1}]",
  ])("refuses the page member %j with the member's own message", (value) => {
    for (const text of [`{"a":${value},"value":[]}`, `{"value":[],"a":\n${value}}`]) {
      expect(() => JSON.parse(text)).toThrow(SyntaxError);
      expect(() => scanPage(text), text).toThrow(new PageFormatError("a page member is not valid JSON"));
    }
  });
});

describe("scanString, against JSON.parse", () => {
  it.each([
    '""', '"a"', '" "', '"~\u007f"', '"\\""', '"\\\\"', '"\\/"', '"\\b\\f\\n\\r\\t"', '"\\u0041"', '"\\u00e9\\u00E9"',
    '"\\uabcd\\uABCD\\u0123\\u4567\\u89aF"', '"\\u12345"', '"a\\u0041b"', '"\\u0000"', '"\\u001f"',
    '"\\u004"', '"\\u00G1"', '"\\uG041"', '"\\u0G41"', '"\\u004G"', '"\\u 041"', '"\\u00 1"', '"\\u004 "', '"\\u"', '"\\u0"', '"\\u00"',
    '"\\x41"', '"\\a"', '"\\\'"', '"\\U0041"', '"\\0"', '"\\ "',
    '"\t"', '"\u0000"', '"\u001f"', '"a\nb"', '"\u0001"',
    '"\\u0041\\u"', '"\\n\\x"', '"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041"',
  ])("reads %s as JSON.parse does", (value) => {
    agreesAsValue(value);
  });
});

describe("literals, containers and member names, against JSON.parse", () => {
  it.each([
    "true", "false", "null", "tru", "fals", "nul", "trux", "falsx", "nulx", "True", "nULL", "t", "f", "n", "x",
    "{}", "[]", "{ }", "[ ]", "{\n}", "[\n]", "{]", "[}", "{\n]", "[\n}", "[\n1\n]", "[1,\n2]", "[\n1,\n{}]",
    '{\n"a":1\n}', '{"a":1,\n"b":2}', '{"a":1]', "[1}", '{"a":[1}}', '{"a":{"b":1]}', "[[1]}", "[{}}",
    '{a:1}', '{"a" 1}', '{"a"}', '{"a":1,"b" 2}', '{"a":1,"b"}', '{"a":}', '{"a":1,"b":}',
    '["a":1]', '["a":1,"b":2]', '[1,"a":2]', '[{"x":1},"a":2]', '[{"x":1},"a":2,"b":3]', '[{},"a":2]', "[1,,]", "[1,]", "[,1]", '{"a":1,,}', '{"a":1,}', '{,"a":1}',
    '{"a":1,,"b":2}', "[1,,2]", "{undefined}", '{"a":1,undefined}', "{:1}", '{"a":1,:2}', "[:1]", "{ :1}", '{"\\x":1}', '{"a":1,"\\x":2}', '{"\\u0061":1}', '{"a":1,"\\u0062":2}',
  ])("reads %j as JSON.parse does", (value) => {
    agreesAsValue(value);
  });

  it.each([
    `{${head},"a":1,,}`,
    `{${head},"a":1,}`,
    `{${head},,"a":1}`,
    `{${head},"a" 1}`,
    `{"a" :\n1,${head}}`,
    `{"\\x":1,${head}}`,
    `{undefined,${head}}`,
    `{${head},undefined}`,
    `{:1,${head}}`,
    `{${head},:1}`,
    `{${head}, :1}`,
  ])("reads the alert %j as JSON.parse does", (element) => {
    agrees(element);
  });

  it.each([`{x":1,${head}}`, `{${head},x":1}`, `{${head},"n":{x":1}}`, `{${head},"n":{"a":1,x":2}}`, `{${head},"n":{"a":1,\nx":2}}`])(
    "refuses the alert %j, whose member name does not start with a quote",
    (element) => {
      const text = `{"value":[${element}]}`;
      expect(() => JSON.parse(text)).toThrow(SyntaxError);
      // Its odd quote leaves a string open for the structural rescan that follows the refusal.
      expect(() => scanPage(text)).toThrow(new PageFormatError("unterminated string"));
    },
  );

  it("refuses a member name with a bad escape after an escaped string, without throwing", () => {
    // The last string scanned before the bad name had an escape: the bad name must not be decoded.
    agrees(`{"lastUpdateTime":"${T}","id":"\\u0061","\\x":1}`);
    const scanned = scanPage(`{"value":[{"lastUpdateTime":"${T}","id":"\\u0062"},{"\\x":1},{"id":"c","lastUpdateTime":"${T}"}]}`);
    expect(scanned.alerts.map((a) => a.id)).toEqual(["b", "c"]);
    expect(scanned.rejected).toEqual([{ index: 1, reason: "invalid_json", raw: '{"\\x":1}' }]);
  });

  it("records only the alert's own id and time members, not members of the same name inside a nested object", () => {
    const reasons = (...elements: string[]): string[] => scanPage(`{"value":[${elements.join(",")}]}`).rejected.map((r) => r.reason);
    expect(reasons(`{"x":{"id":\n"n"},"lastUpdateTime":"${T}"}`, `{"x":{"y":1,"id":\n"n"},"lastUpdateTime":"${T}"}`, `{"id":{"x":\n"b"},"lastUpdateTime":"${T}"}`)).toEqual(["missing_id", "missing_id", "missing_id"]);
    expect(reasons(`{"id":"a","x":{"lastUpdateTime":\n"${T}"}}`, `{"id":"a","x":{"y":1,"lastUpdateTime":\n"${T}"}}`, `{"lastUpdateTime":{"x":\n"${T}"},"id":"a"}`)).toEqual(["missing_time", "missing_time", "missing_time"]);
    expect(reasons(`{"id":"a","lastUpdateTime":"${T}","lastUpdateTime":null}`, `{"id":"a","lastUpdateTime":"${T}","lastUpdateTime":\n[]}`, `{"id":"a","lastUpdateTime":"${T}","id":\n{}}`)).toEqual(["missing_time", "missing_time", "missing_id"]);
  });

  it("tells the id and time members from names that only resemble them, spelled plainly or with escapes", () => {
    const other = "2020-01-01T00:00:00Z";
    for (const name of ["Id", "ix", "xd", "i", "d", "ids", "idd", "xid", "lastUpdateTimes", "lastUpdateTim", "lastUpdateTimX", "LastUpdateTime", "xlastUpdateTime", "\\u0069x", "\\u0078d", "\\u0078", "lastUpdate\\u0054imes", "lastUpdate\\u0074ime"]) {
      const element = `{"id":"a","lastUpdateTime":"${T}","${name}":\n"${other}"}`;
      const scanned = scanPage(`{"value":[${element}]}`);
      expect(scanned.alerts.map((a) => [a.id, a.lastUpdateTime]), name).toEqual([["a", T]]);
    }
    // The same names before the real members are not taken for them either.
    for (const name of ["ix", "xd", "lastUpdateTimX", "\\u0078"]) {
      const scanned = scanPage(`{"value":[{"${name}":\n"b","id":"a","lastUpdateTime":"${T}"}]}`);
      expect(scanned.alerts.map((a) => [a.id, a.lastUpdateTime]), name).toEqual([["a", T]]);
    }
  });

  it.each(["t\\\\", "t^", "t$", "t.", "t*", "t+", "t?", "t(", "t)", "t[", "t]", "t{", "t}", "t|", "t-", "(t)", "[t]", "t{2}", "^t$", "t.*"])(
    "reads the time from a member named %j when told to, after other members on one line",
    (name) => {
      const timeField = JSON.parse(`"${name}"`) as string;
      const element = `{"id":"a","x":1,"y":"z",${JSON.stringify(timeField)}:"${T}","w":2}`;
      const scanned = scanPage(`{"value":[${element}]}`, { timeField });
      expect(scanned.rejected).toEqual([]);
      expect(scanned.alerts.map((a) => [a.id, a.lastUpdateTime, a.json])).toEqual([["a", T, element]]);
    },
  );
});

describe("delimit", () => {
  it("treats a raw control character outside strings as part of an invalid element, not as the end of the page", () => {
    const element = "\u0001";
    const scanned = scanPage(`{"value":[{"id":"before","lastUpdateTime":"${T}"},${element},{"id":"after","lastUpdateTime":"${T}"}]}`);
    expect(scanned.alerts.map((a) => a.id)).toEqual(["before", "after"]);
    expect(scanned.rejected).toEqual([{ index: 1, reason: "invalid_json", raw: element }]);
  });

  it.each([
    '{"s":"a,b" x}',
    '{"s":"a]b" x}',
    '{"s":"a}b" x}',
    '{"s":"q\\",x]" y}',
    '{"s":"q\\\\" y,"t":"]"}',
    '{"s":"q\\\\\\",]" y}',
    '{"a":{"b":1 x,"c":2}}',
    '{"a":[1 x,2]}',
    '[1 x,[2,{"c":3}],4]',
    '{"a":[{"b":[1,2]} x,{"c":"]"}]}',
    "x",
    "01",
    '{"a":1} {"b":2}',
  ])("delimits the invalid element %j whole", (element) => {
    agrees(element);
  });

  it.each([" ", "\t", "\n", "\r", " \t\r\n "])("leaves the whitespace %j after an invalid element out of its raw text", (blank) => {
    for (const element of ["x", '{"id":"a" x}', "[1 2]"]) {
      const scanned = scanPage(`{"value":[{"id":"before","lastUpdateTime":"${T}"},${element}${blank},{"id":"after","lastUpdateTime":"${T}"}]}`);
      expect(scanned.alerts.map((a) => a.id)).toEqual(["before", "after"]);
      expect(scanned.rejected).toEqual([{ index: 1, reason: "invalid_json", raw: element }]);
      const last = scanPage(`{"value":[${element}${blank}]}`);
      expect(last.rejected).toEqual([{ index: 0, reason: "invalid_json", raw: element }]);
    }
  });

  it("refuses a page whose invalid element has an unterminated string", () => {
    expect(() => scanPage('{"value":[{"id":"a" x "open]}')).toThrow(new PageFormatError("unterminated string"));
    expect(() => scanPage('{"value":[{"id":"a" x "open\\"]}')).toThrow(new PageFormatError("unterminated string"));
  });

  it("refuses a page whose invalid element closes the page object", () => {
    expect(() => scanPage('{"value":[{"id":"a" x}}')).toThrow(new PageFormatError("unbalanced object or array"));
    expect(() => scanPage('{"value":[1 x}')).toThrow(new PageFormatError("unbalanced object or array"));
  });

  it("refuses a page that ends inside an invalid element as unbalanced", () => {
    expect(() => scanPage('{"value":[{"id":"a" x')).toThrow(new PageFormatError("unbalanced object or array"));
  });
});
