/**
 * Splits an OData page (`{"@odata.context":…,"value":[…],"@odata.nextLink":…}`) into the raw JSON
 * text of each alert without building an object graph for it. The pipeline only needs each
 * alert's `id` and `lastUpdateTime`; the sink stores the alert exactly as the API sent it. On a
 * 100,000-alert backlog this removes a parse-and-reserialise round trip per alert and most of
 * the memory a parsed page would hold.
 */
export interface ScannedAlert {
  id: string;
  lastUpdateTime: string;
  /** The alert's JSON exactly as received, on one line. */
  json: string;
}

export interface ScannedPage {
  alerts: ScannedAlert[];
  nextLink: string | undefined;
}

export class PageFormatError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "PageFormatError";
  }
}

const QUOTE = 34;
const BACKSLASH = 92;
const OPEN_BRACE = 123;
const CLOSE_BRACE = 125;
const OPEN_BRACKET = 91;
const CLOSE_BRACKET = 93;
const COMMA = 44;
const COLON = 58;

function skipWhitespace(text: string, i: number): number {
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === 32 || c === 9 || c === 10 || c === 13) i++;
    else return i;
  }
}

/** Index just past the string literal that starts at `i` (which holds a quote). */
function endOfString(text: string, i: number): number {
  let at = i + 1;
  for (;;) {
    const quote = text.indexOf('"', at);
    if (quote < 0) throw new PageFormatError("unterminated string");
    let backslashes = 0;
    for (let j = quote - 1; text.charCodeAt(j) === BACKSLASH; j--) backslashes++;
    if (backslashes % 2 === 0) return quote + 1;
    at = quote + 1;
  }
}

/** Index just past the JSON value that starts at `i`. */
function endOfValue(text: string, i: number): number {
  const first = text.charCodeAt(i);
  if (first === QUOTE) return endOfString(text, i);
  if (first === OPEN_BRACE || first === OPEN_BRACKET) {
    let depth = 0;
    for (let at = i; at < text.length; ) {
      const c = text.charCodeAt(at);
      if (c === QUOTE) {
        at = endOfString(text, at);
        continue;
      }
      if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++;
      else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
        depth--;
        if (depth === 0) return at + 1;
      }
      at++;
    }
    throw new PageFormatError("unbalanced object or array");
  }
  let at = i;
  while (at < text.length) {
    const c = text.charCodeAt(at);
    if (c === COMMA || c === CLOSE_BRACE || c === CLOSE_BRACKET || c === 32 || c === 9 || c === 10 || c === 13) break;
    at++;
  }
  if (at === i) throw new PageFormatError("missing value");
  return at;
}

/** Calls `visit(key, valueStart, valueEnd)` for each member of the object starting at `i`; returns the index past it. */
function forEachMember(text: string, i: number, visit: (key: string, start: number, end: number) => void): number {
  if (text.charCodeAt(i) !== OPEN_BRACE) throw new PageFormatError("expected an object");
  let at = skipWhitespace(text, i + 1);
  if (text.charCodeAt(at) === CLOSE_BRACE) return at + 1;
  for (;;) {
    if (text.charCodeAt(at) !== QUOTE) throw new PageFormatError("expected a member name");
    const keyEnd = endOfString(text, at);
    const key = JSON.parse(text.slice(at, keyEnd)) as string;
    at = skipWhitespace(text, keyEnd);
    if (text.charCodeAt(at) !== COLON) throw new PageFormatError("expected a colon");
    const start = skipWhitespace(text, at + 1);
    const end = endOfValue(text, start);
    visit(key, start, end);
    at = skipWhitespace(text, end);
    const c = text.charCodeAt(at);
    if (c === CLOSE_BRACE) return at + 1;
    if (c !== COMMA) throw new PageFormatError("expected a comma or the end of an object");
    at = skipWhitespace(text, at + 1);
  }
}

function scanAlert(text: string, start: number, end: number, index: number): ScannedAlert {
  let id: unknown;
  let lastUpdateTime: unknown;
  forEachMember(text, start, (key, valueStart, valueEnd) => {
    if (key === "id") id = JSON.parse(text.slice(valueStart, valueEnd));
    else if (key === "lastUpdateTime") lastUpdateTime = JSON.parse(text.slice(valueStart, valueEnd));
  });
  if (typeof id !== "string" || id === "") throw new PageFormatError(`alert #${index} has no string id`);
  if (typeof lastUpdateTime !== "string" || lastUpdateTime === "") {
    throw new PageFormatError(`alert #${index} has no string lastUpdateTime`);
  }
  let json = text.slice(start, end);
  // Raw line breaks can only be insignificant whitespace in JSON; NDJSON needs one line per alert.
  if (json.includes("\n") || json.includes("\r")) json = json.replace(/[\r\n]+/g, " ");
  return { id, lastUpdateTime, json };
}

export function scanPage(text: string): ScannedPage {
  const alerts: ScannedAlert[] = [];
  let nextLink: unknown;
  let sawValue = false;
  const start = skipWhitespace(text, 0);
  const end = forEachMember(text, start, (key, valueStart, valueEnd) => {
    if (key === "value") {
      sawValue = true;
      if (text.charCodeAt(valueStart) !== OPEN_BRACKET) throw new PageFormatError('"value" is not an array');
      let at = skipWhitespace(text, valueStart + 1);
      if (text.charCodeAt(at) === CLOSE_BRACKET) return;
      for (;;) {
        if (text.charCodeAt(at) !== OPEN_BRACE) throw new PageFormatError(`alert #${alerts.length} is not an object`);
        const alertEnd = endOfValue(text, at);
        alerts.push(scanAlert(text, at, alertEnd, alerts.length));
        at = skipWhitespace(text, alertEnd);
        const c = text.charCodeAt(at);
        if (c === CLOSE_BRACKET) break;
        if (c !== COMMA) throw new PageFormatError('expected a comma or the end of "value"');
        at = skipWhitespace(text, at + 1);
      }
      if (skipWhitespace(text, at + 1) !== valueEnd && at + 1 !== valueEnd) throw new PageFormatError('malformed "value"');
    } else if (key === "@odata.nextLink") {
      nextLink = JSON.parse(text.slice(valueStart, valueEnd));
    }
  });
  if (skipWhitespace(text, end) !== text.length) throw new PageFormatError("trailing data after the page");
  if (!sawValue) throw new PageFormatError('response has no "value" array');
  if (nextLink !== undefined && nextLink !== null && typeof nextLink !== "string") {
    throw new PageFormatError("@odata.nextLink is not a string");
  }
  return { alerts, nextLink: typeof nextLink === "string" && nextLink !== "" ? nextLink : undefined };
}
