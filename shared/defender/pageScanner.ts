import { canonicalTimestamp } from "../time/timestamps";

/**
 * Splits an OData page (`{"@odata.context":…,"value":[…],"@odata.nextLink":…}`) into the raw JSON
 * text of each alert without building an object graph for it, and validates every alert as strict
 * JSON (RFC 8259, exactly what `JSON.parse` accepts) on the way. The pipeline only needs each
 * alert's `id` and version time; the sink stores the alert exactly as the API sent it. On a
 * 100,000-alert backlog this removes a parse-and-reserialise round trip per alert and most of the
 * memory a parsed page would hold.
 *
 * Two levels of failure:
 *   - the page itself cannot be delimited (not an object, no `value` array, unbalanced brackets,
 *     an unterminated string, trailing data, a page member that is not JSON): PageFormatError,
 *     nothing on the page is trusted;
 *   - one element of `value` is bad (not JSON, not an object, no usable id or time): it is
 *     returned in `rejected` with its index and raw text, and the rest of the page still counts.
 *
 * Elements are delimited structurally, the way a reader who only knows about strings and
 * brackets would: an element runs from after the `[` or `,` to the next `,` or `]` that is not
 * inside a string or a nested object or array. So `{"id":"a"} x` is one (invalid) element, not
 * a broken page. Valid JSON always delimits to itself, so the common path validates and
 * delimits in a single pass; the structural rescan only runs for elements that fail validation.
 *
 * Nothing that is skipped is parsed: member names are compared in place (decoded only when they
 * contain a backslash), and runs of simple members are validated by one regex call each (see
 * "Runs" below). test/unit/pageScannerProperty.test.ts holds the scanner to JSON.parse on
 * generated and real-shaped pages and their broken copies; scripts/scanner-bench.mjs times it.
 */
export interface ScannedAlert {
  id: string;
  /** The time field exactly as the API sent it. */
  lastUpdateTime: string;
  /** canonicalTimestamp(lastUpdateTime).key */
  updatedAtKey: string;
  /** canonicalTimestamp(lastUpdateTime).ms */
  updatedAtMs: number;
  /** The alert's JSON exactly as received, on one line (raw CR/LF whitespace between tokens replaced by a space, as today). */
  json: string;
}

export type RejectReason = "invalid_json" | "not_an_object" | "missing_id" | "missing_time" | "invalid_time";

export interface RejectedAlert {
  index: number;
  reason: RejectReason;
  /** the element's raw text (may be invalid JSON), capped at 1 MiB */
  raw: string;
}

export interface ScannedPage {
  alerts: ScannedAlert[];
  rejected: RejectedAlert[];
  nextLink: string | undefined;
}

export interface ScanOptions {
  /** Name of the member that holds the version time: "lastUpdateTime" (Defender for Endpoint, the default) or "lastUpdateDateTime" (Microsoft Graph alerts_v2). */
  timeField?: string;
}

export class PageFormatError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "PageFormatError";
  }
}

/** codeAt past the end of the text. */
const END = -1;
const TAB = 9;
const LF = 10;
const CR = 13;
const SPACE = 32;
const QUOTE = 34;
const PLUS = 43;
const COMMA = 44;
const MINUS = 45;
const DOT = 46;
const ZERO = 48;
const ONE = 49;
const NINE = 57;
const COLON = 58;
const UPPER_E = 69;
const OPEN_BRACKET = 91;
const BACKSLASH = 92;
const CLOSE_BRACKET = 93;
const LOWER_E = 101;
const LOWER_F = 102;
const LOWER_N = 110;
const LOWER_T = 116;
const LOWER_U = 117;
const OPEN_BRACE = 123;
const CLOSE_BRACE = 125;

/** Longest raw text kept for a rejected element, in UTF-8 bytes. */
const MAX_RAW_BYTES = 1024 * 1024;

/** 1 for the characters that may follow a backslash other than `u`: `" \ / b f n r t`. */
const SIMPLE_ESCAPE = new Uint8Array(128);
for (const c of '"\\/bfnrt') SIMPLE_ESCAPE[c.charCodeAt(0)] = 1;
/** 1 for hexadecimal digits. */
const HEX = new Uint8Array(128);
for (const c of "0123456789abcdefABCDEF") HEX[c.charCodeAt(0)] = 1;

const IN_OBJECT = 1;
const IN_ARRAY = 2;
/** Open containers of the value being validated (IN_OBJECT / IN_ARRAY); grows for deep nesting. */
let containers = new Uint8Array(64);

// Results of the last call of the functions below. Module state instead of returned objects
// keeps the per-string and per-alert paths free of allocations; scanning is synchronous, so no
// two scans ever interleave.
// Stryker disable BooleanLiteral,UnaryOperator: each is written before it is read (validateValue resets the starts; the ends and flags are read only with their start; stringEscaped only after a scanString that succeeded; sawLineBreak is cleared before each element)
/** scanString: whether the string just scanned contains a backslash escape. */
let stringEscaped = false;
/** skipWhitespace: whether a raw CR or LF has been skipped since the flag was last cleared. */
let sawLineBreak = false;
/** validateValue: where the value of the element's last top-level `id` member lies (its quotes included), or -1 when absent or not a string. */
let idStart = -1;
let idEnd = -1;
let idEscaped = false;
/** validateValue: the same for the time member. */
let timeStart = -1;
let timeEnd = -1;
let timeEscaped = false;
// Stryker restore BooleanLiteral,UnaryOperator

const MEMBER_OTHER = 0;
const MEMBER_ID = 1;
const MEMBER_TIME = 2;

/**
 * The character code at `i`, or END past the end of the text. Hot loops never read past the end
 * with charCodeAt: a single NaN result makes V8 treat that read as returning a double from then on,
 * which halves the speed of the per-character loops.
 */
function codeAt(text: string, i: number): number {
  return i < text.length ? text.charCodeAt(i) : END;
}

function isWhitespace(c: number): boolean {
  return c === SPACE || c === TAB || c === LF || c === CR;
}

function skipWhitespace(text: string, i: number): number {
  for (const length = text.length; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c === SPACE || c === TAB) continue;
    if (c !== LF && c !== CR) break;
    sawLineBreak = true;
  }
  return i;
}

/**
 * Validates the string literal whose opening quote is at `i`: only the RFC 8259 escapes, no raw
 * control characters. Returns the index just past its closing quote, or -1 when invalid or
 * unterminated. Sets `stringEscaped`.
 */
function scanString(text: string, i: number): number {
  const length = text.length;
  // Stryker disable next-line BooleanLiteral: JSON.parse of a validated plain string gives back its text; only the cost changes
  let escaped = false;
  i++;
  for (;;) {
    // The plain run: everything but a quote, a backslash or a control character.
    let c = 0;
    for (; i < length; i++) {
      c = text.charCodeAt(i);
      if (c < SPACE || c === QUOTE || c === BACKSLASH) break;
    }
    if (i === length) return -1;
    if (c === QUOTE) {
      stringEscaped = escaped;
      return i + 1;
    }
    if (c !== BACKSLASH) return -1;
    escaped = true;
    c = codeAt(text, i + 1);
    if (c === LOWER_U) {
      if (
        HEX[codeAt(text, i + 2)] !== 1 ||
        HEX[codeAt(text, i + 3)] !== 1 ||
        HEX[codeAt(text, i + 4)] !== 1 ||
        HEX[codeAt(text, i + 5)] !== 1
      ) {
        return -1;
      }
      i += 6;
    } else if (SIMPLE_ESCAPE[c] === 1) i += 2;
    else return -1;
  }
}

/** Validates the number that starts at `i` (`-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`); returns the index past it or -1. */
function scanNumber(text: string, i: number): number {
  let c = codeAt(text, i);
  if (c === MINUS) c = codeAt(text, ++i);
  if (c === ZERO) c = codeAt(text, ++i);
  else if (c >= ONE && c <= NINE) {
    do c = codeAt(text, ++i);
    while (c >= ZERO && c <= NINE);
  } else return -1;
  if (c === DOT) {
    c = codeAt(text, ++i);
    if (!(c >= ZERO && c <= NINE)) return -1;
    do c = codeAt(text, ++i);
    while (c >= ZERO && c <= NINE);
  }
  if (c === LOWER_E || c === UPPER_E) {
    c = codeAt(text, ++i);
    if (c === PLUS || c === MINUS) c = codeAt(text, ++i);
    if (!(c >= ZERO && c <= NINE)) return -1;
    do c = codeAt(text, ++i);
    while (c >= ZERO && c <= NINE);
  }
  return i;
}

/** Which tracked member the member name text[start, end) (quotes included, already validated) names; compared in place. */
function memberKind(text: string, start: number, end: number, escaped: boolean, timeField: string): number {
  if (escaped) {
    // Rare: a name spelled with escapes (`"\u0069d"` is `id`). Decode it the standard way.
    const name = JSON.parse(text.slice(start, end)) as string;
    return name === "id" ? MEMBER_ID : name === timeField ? MEMBER_TIME : MEMBER_OTHER;
  }
  const length = end - start - 2;
  if (length === 2 && text.charCodeAt(start + 1) === 105 /* i */ && text.charCodeAt(start + 2) === 100 /* d */) return MEMBER_ID;
  if (length === timeField.length && text.startsWith(timeField, start + 1)) return MEMBER_TIME;
  return MEMBER_OTHER;
}

// Runs: a run of simple members or array items (a string, a number, a literal, `{}` or a short
// array of those) is validated by one native regex call instead of token by token; most members
// of an alert are such values. A run consumes only complete, valid pieces separated by commas and
// ends after a piece, so the token loop resumes in exactly the state it would have reached reading
// them itself (a value has just ended). Anything else (a nested object or a larger array, a line
// break, a top-level `id` or time member, an alert's own member name with an escape, invalid text)
// ends the run and is read by the token loop.
/** A string with at most 16 escapes (bounded for the same reason as RUN_PIECES; a longer one ends the run). */
const STRING = String.raw`"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*){0,16}"`;
const NUMBER = String.raw`-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?`;
const SCALAR = `(?:${STRING}|${NUMBER}|true|false|null)`;
// Stryker disable next-line StringLiteral: a run then takes less or nothing, and the token loop validates what a run does not take the same way
const BLANKS = "[ \\t]*";
/** Pieces per regex call at most: each repetition holds backtracking state, so an unbounded run overflows the regex stack. */
const RUN_PIECES = 64;

function run(piece: string): RegExp {
  // Stryker disable next-line StringLiteral,ArithmeticOperator: a run that takes less (or, without "y", nothing: lastIndex is then ignored) leaves the rest to the token loop, which validates it the same way
  return new RegExp(`${piece}(?:${BLANKS},${BLANKS}${piece}){0,${RUN_PIECES - 1}}`, "y");
}

/** A value a run takes whole: a scalar, `{}`, or an array of at most 16 scalars (alerts have many such: tags, roles, techniques). */
const VALUE = `(?:${SCALAR}|\\{${BLANKS}\\}|\\[${BLANKS}(?:${SCALAR}(?:${BLANKS},${BLANKS}${SCALAR}){0,15}${BLANKS})?\\])`;
const memberPiece = (name: string): string => `${name}${BLANKS}:${BLANKS}${VALUE}`;
const ITEM_RUN = run(VALUE);
const NESTED_MEMBER_RUN = run(memberPiece(STRING));
/** Member runs for the alert's own members, by time field: they stop before `id` and the time member, which the token loop records. */
const TOP_MEMBER_RUNS = new Map<string, RegExp>();

function topMemberRun(timeField: string): RegExp {
  let members = TOP_MEMBER_RUNS.get(timeField);
  if (members === undefined) {
    const quoted = timeField.replace(/[\\^$.*+?()[\]{}|]/g, "\\$&");
    members = run(memberPiece(String.raw`"(?!(?:id|${quoted})")[^"\\\x00-\x1f]*"`));
    TOP_MEMBER_RUNS.set(timeField, members);
  }
  return members;
}

/** Index past the run of simple pieces that `pieces` matches at `i`, or `i` when there is none. */
function skipRun(text: string, i: number, pieces: RegExp): number {
  pieces.lastIndex = i;
  return pieces.test(text) ? pieces.lastIndex : i;
}

/**
 * Validates the JSON value that starts at `start` (no leading whitespace) as strict RFC 8259 JSON,
 * without building it; iterative, so deep nesting cannot overflow the call stack. Returns the index
 * just past the value, or -1 when it is not valid JSON. What follows the value is not examined.
 * Records the top-level `id` and `timeField` members (last one wins, as in JSON.parse) in the
 * module state above; pass an empty `timeField` when not scanning an alert.
 */
function validateValue(text: string, start: number, timeField: string): number {
  idStart = -1;
  timeStart = -1;
  let i = start;
  let depth = 0;
  /** The member whose value comes next, when that member is a top-level `id` or time member. */
  let pending = MEMBER_OTHER;
  const topMembers = topMemberRun(timeField);
  for (;;) {
    // A value starts at i.
    let c = codeAt(text, i);
    if (c === QUOTE) {
      const end = scanString(text, i);
      if (end < 0) return -1;
      if (pending === MEMBER_ID) {
        idStart = i;
        idEnd = end;
        idEscaped = stringEscaped;
      } else if (pending === MEMBER_TIME) {
        timeStart = i;
        timeEnd = end;
        timeEscaped = stringEscaped;
      }
      i = end;
    } else {
      if (pending === MEMBER_ID) idStart = -1;
      else if (pending === MEMBER_TIME) timeStart = -1;
      if (c === OPEN_BRACE || c === OPEN_BRACKET) {
        if (depth === containers.length) {
          const grown = new Uint8Array(depth * 2);
          grown.set(containers);
          containers = grown;
        }
        const isObject = c === OPEN_BRACE;
        containers[depth++] = isObject ? IN_OBJECT : IN_ARRAY;
        i = skipWhitespace(text, i + 1);
        c = codeAt(text, i);
        // Stryker disable next-line BlockStatement: the closing loop then closes the empty container itself
        if (isObject ? c === CLOSE_BRACE : c === CLOSE_BRACKET) {
          depth--;
          i++;
        } else {
          pending = MEMBER_OTHER;
          const runEnd = skipRun(text, i, isObject ? (depth === 1 ? topMembers : NESTED_MEMBER_RUN) : ITEM_RUN);
          if (runEnd !== i) i = runEnd;
          else {
            if (isObject) {
              // The first member's name and colon.
              if (c !== QUOTE) return -1;
              const nameEnd = scanString(text, i);
              if (nameEnd < 0) return -1;
              if (depth === 1) pending = memberKind(text, i, nameEnd, stringEscaped, timeField);
              i = skipWhitespace(text, nameEnd);
              if (codeAt(text, i) !== COLON) return -1;
              i = skipWhitespace(text, i + 1);
            }
            continue;
          }
        }
      } else if (c === MINUS || (c >= ZERO && c <= NINE)) {
        i = scanNumber(text, i);
        if (i < 0) return -1;
      } else if (c === LOWER_T) {
        if (!text.startsWith("true", i)) return -1;
        i += 4;
      } else if (c === LOWER_F) {
        if (!text.startsWith("false", i)) return -1;
        i += 5;
      } else if (c === LOWER_N) {
        if (!text.startsWith("null", i)) return -1;
        i += 4;
      } else return -1;
    }
    pending = MEMBER_OTHER;

    // A value ended at i: close containers until another value is due.
    for (;;) {
      if (depth === 0) return i;
      i = skipWhitespace(text, i);
      c = codeAt(text, i);
      const container = containers[depth - 1];
      if (c === COMMA) {
        i = skipWhitespace(text, i + 1);
        const runEnd = skipRun(text, i, container === IN_OBJECT ? (depth === 1 ? topMembers : NESTED_MEMBER_RUN) : ITEM_RUN);
        if (runEnd !== i) {
          i = runEnd;
          continue;
        }
        if (container === IN_OBJECT) {
          if (codeAt(text, i) !== QUOTE) return -1;
          const nameEnd = scanString(text, i);
          if (nameEnd < 0) return -1;
          if (depth === 1) pending = memberKind(text, i, nameEnd, stringEscaped, timeField);
          i = skipWhitespace(text, nameEnd);
          if (codeAt(text, i) !== COLON) return -1;
          i = skipWhitespace(text, i + 1);
        }
        break;
      }
      if (container === IN_OBJECT ? c !== CLOSE_BRACE : c !== CLOSE_BRACKET) return -1;
      depth--;
      i++;
    }
  }
}

/** Index just past the string literal whose quote is at `i`, honouring backslashes but validating nothing. */
function skipStringLoosely(text: string, i: number): number {
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

/**
 * Structural delimiting, for text that failed validation: from `i`, skips strings and balanced
 * brackets and returns the index of the first `,`, `]` or `}` outside them. Throws PageFormatError
 * when the text ends first.
 */
function delimit(text: string, i: number): number {
  let depth = 0;
  for (;;) {
    const c = codeAt(text, i);
    if (c === QUOTE) {
      i = skipStringLoosely(text, i);
      continue;
    }
    if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++;
    else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      if (depth === 0) return i;
      depth--;
    } else if (c === COMMA) {
      if (depth === 0) return i;
    } else if (c === END) throw new PageFormatError("unbalanced object or array");
    i++;
  }
}

/** The raw text of a rejected element, cut to at most MAX_RAW_BYTES of UTF-8 (never inside a surrogate pair). */
function rawText(text: string, start: number, end: number): string {
  if ((end - start) * 3 <= MAX_RAW_BYTES) return text.slice(start, end);
  let bytes = 0;
  let i = start;
  for (; i < end; i++) {
    const c = text.charCodeAt(i);
    let size = c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
    // A surrogate pair is 4 bytes of UTF-8 and must stay whole.
    // Stryker disable next-line LogicalOperator: each variant differs only for a low surrogate after a character that is not a high one, which text decoded from UTF-8 never holds
    const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < end && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
    if (pair) size = 4;
    if (bytes + size > MAX_RAW_BYTES) break;
    bytes += size;
    if (pair) i++;
  }
  return text.slice(start, i);
}

/** The text of the string literal text[start, end) (quotes included), decoded. */
function stringValue(text: string, start: number, end: number, escaped: boolean): string {
  return escaped ? (JSON.parse(text.slice(start, end)) as string) : text.slice(start + 1, end - 1);
}

/** Classifies the element text[start, end), which validateValue has just accepted. */
function takeElement(
  text: string,
  start: number,
  end: number,
  index: number,
  lineBreak: boolean,
  alerts: ScannedAlert[],
  rejected: RejectedAlert[],
): void {
  let reason: RejectReason;
  if (codeAt(text, start) !== OPEN_BRACE) reason = "not_an_object";
  else if (idStart < 0 || idEnd - idStart === 2) reason = "missing_id";
  else if (timeStart < 0 || timeEnd - timeStart === 2) reason = "missing_time";
  else {
    const lastUpdateTime = stringValue(text, timeStart, timeEnd, timeEscaped);
    const canonical = canonicalTimestamp(lastUpdateTime);
    if (canonical === undefined) reason = "invalid_time";
    else {
      let json = text.slice(start, end);
      // Validated JSON has raw line breaks only as whitespace between tokens; NDJSON needs one line per alert.
      if (lineBreak) json = json.replace(/[\r\n]+/g, " ");
      alerts.push({
        id: stringValue(text, idStart, idEnd, idEscaped),
        lastUpdateTime,
        updatedAtKey: canonical.key,
        updatedAtMs: canonical.ms,
        json,
      });
      return;
    }
  }
  rejected.push({ index, reason, raw: rawText(text, start, end) });
}

/** Scans the elements of the `value` array whose `[` is at `i`; returns the index just past its `]`. */
function scanValueArray(text: string, i: number, timeField: string, alerts: ScannedAlert[], rejected: RejectedAlert[]): number {
  let at = skipWhitespace(text, i + 1);
  if (codeAt(text, at) === CLOSE_BRACKET) return at + 1;
  for (let index = 0; ; index++) {
    const start = at;
    // Stryker disable next-line BooleanLiteral: a flag left set only replaces line breaks in an element that has none, which changes nothing
    sawLineBreak = false;
    const end = validateValue(text, start, timeField);
    const lineBreak = sawLineBreak;
    // Stryker disable next-line UnaryOperator: +1 reads the page's second character, which is never a comma or a bracket while a value array is scanned (the page opens with "{" and a member name)
    let next = end < 0 ? -1 : skipWhitespace(text, end);
    let c = next < 0 ? END : codeAt(text, next);
    if (c === COMMA || c === CLOSE_BRACKET) {
      takeElement(text, start, end, index, lineBreak, alerts, rejected);
    } else {
      // Not valid JSON, or valid JSON followed by more than whitespace: the element runs to the
      // next `,` or `]` outside strings and brackets.
      next = delimit(text, start);
      c = codeAt(text, next);
      if (c === CLOSE_BRACE) throw new PageFormatError("unbalanced object or array");
      let rawEnd = next;
      while (rawEnd > start && isWhitespace(codeAt(text, rawEnd - 1))) rawEnd--;
      rejected.push({ index, reason: "invalid_json", raw: rawText(text, start, rawEnd) });
    }
    if (c === CLOSE_BRACKET) return next + 1;
    at = skipWhitespace(text, next + 1);
  }
}

const PAGE_OTHER = 0;
const PAGE_VALUE = 1;
const PAGE_NEXT_LINK = 2;

function pageMemberKind(text: string, start: number, end: number, escaped: boolean): number {
  if (escaped) {
    const name = JSON.parse(text.slice(start, end)) as string;
    return name === "value" ? PAGE_VALUE : name === "@odata.nextLink" ? PAGE_NEXT_LINK : PAGE_OTHER;
  }
  const length = end - start - 2;
  if (length === 5 && text.startsWith("value", start + 1)) return PAGE_VALUE;
  if (length === 15 && text.startsWith("@odata.nextLink", start + 1)) return PAGE_NEXT_LINK;
  return PAGE_OTHER;
}

/**
 * Scans one page of alerts. Throws PageFormatError when the page itself is malformed; returns
 * each valid alert in `alerts` and each unusable element of `value` in `rejected`.
 */
export function scanPage(text: string, options?: ScanOptions): ScannedPage {
  const timeField = options?.timeField ?? "lastUpdateTime";
  const alerts: ScannedAlert[] = [];
  const rejected: RejectedAlert[] = [];
  let nextLink: string | undefined;
  let sawValue = false;

  let at = skipWhitespace(text, 0);
  if (codeAt(text, at) !== OPEN_BRACE) throw new PageFormatError("the page is not a JSON object");
  at = skipWhitespace(text, at + 1);
  if (codeAt(text, at) !== CLOSE_BRACE) {
    for (;;) {
      if (codeAt(text, at) !== QUOTE) throw new PageFormatError("expected a member name in the page object");
      const nameEnd = scanString(text, at);
      if (nameEnd < 0) {
        skipStringLoosely(text, at);
        throw new PageFormatError("invalid member name in the page object");
      }
      const kind = pageMemberKind(text, at, nameEnd, stringEscaped);
      at = skipWhitespace(text, nameEnd);
      if (codeAt(text, at) !== COLON) throw new PageFormatError("expected a colon in the page object");
      at = skipWhitespace(text, at + 1);
      if (kind === PAGE_VALUE) {
        if (sawValue) throw new PageFormatError('the page has two "value" members');
        sawValue = true;
        if (codeAt(text, at) !== OPEN_BRACKET) throw new PageFormatError('"value" is not an array');
        at = scanValueArray(text, at, timeField, alerts, rejected);
      } else {
        // Stryker disable next-line StringLiteral: the time field only decides which members of an alert are recorded; a page member is validated the same way whatever it names
        const end = validateValue(text, at, "");
        if (end < 0) {
          // Report an undelimitable page as such; otherwise the member itself is not JSON.
          if (codeAt(text, delimit(text, at)) === CLOSE_BRACKET) throw new PageFormatError("unbalanced object or array");
          // The name is body text: never in a message.
          throw new PageFormatError("a page member is not valid JSON");
        }
        if (kind === PAGE_NEXT_LINK) {
          if (codeAt(text, at) === QUOTE) {
            const link = stringValue(text, at, end, stringEscaped);
            nextLink = link === "" ? undefined : link;
          } else if (codeAt(text, at) === LOWER_N) nextLink = undefined;
          else throw new PageFormatError("@odata.nextLink is not a string");
        }
        at = end;
      }
      at = skipWhitespace(text, at);
      const c = codeAt(text, at);
      if (c === CLOSE_BRACE) break;
      if (c !== COMMA) {
        throw new PageFormatError(c === END ? "unbalanced object or array" : "expected a comma or the end of the page object");
      }
      at = skipWhitespace(text, at + 1);
    }
  }
  if (skipWhitespace(text, at + 1) !== text.length) throw new PageFormatError("trailing data after the page");
  if (!sawValue) throw new PageFormatError('response has no "value" array');
  return { alerts, rejected, nextLink };
}
