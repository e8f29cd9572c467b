/**
 * Text-level helpers for checking Bicep files without a Bicep compiler (none is installable on
 * the build machines, see ../shared/reference/protocol.md §8 "Offline Bicep tooling").
 *
 * The core is `scanBicep`, a small lexer that knows just enough Bicep to tell code from comments
 * and string literals (single-quoted, `\` escapes, `${...}` interpolation with nested strings, and
 * `'''` multi-line strings). It returns two views of the file with the same length as the input, so
 * an index found in one view is valid in the other and in the original:
 *   - `code`: comments blanked, strings intact (read values from here);
 *   - `masked`: comments AND everything inside string literals blanked, quotes kept (find
 *     structure here: braces, keywords and `key:` positions can't be faked by text in strings).
 * Newlines are always kept, so line-based regexes work on both views.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";

export const REPO_ROOT = path.resolve(__dirname, "..", "..");
export const INFRA_DIR = path.join(REPO_ROOT, "infra");

export interface ScannedBicep {
  readonly file: string;
  readonly source: string;
  readonly code: string;
  readonly masked: string;
}

type Frame = { kind: "string" } | { kind: "interpolation"; braces: number };

export function scanBicep(source: string, file = "<inline>"): ScannedBicep {
  const code: string[] = [];
  const masked: string[] = [];
  const blank = (ch: string): string => (ch === "\n" ? "\n" : " ");
  const stack: Frame[] = [];
  const inString = (): boolean => stack.some((frame) => frame.kind === "string");
  let i = 0;
  while (i < source.length) {
    const ch = source[i] as string;
    const top = stack[stack.length - 1];
    if (top?.kind === "string") {
      if (ch === "\\") {
        // escape: copy two characters verbatim into `code`, blank both in `masked`
        const pair = source.slice(i, i + 2);
        for (const c of pair) {
          code.push(c);
          masked.push(blank(c));
        }
        i += pair.length;
      } else if (source.startsWith("${", i)) {
        stack.push({ kind: "interpolation", braces: 0 });
        code.push("$", "{");
        masked.push(" ", " ");
        i += 2;
      } else if (ch === "'") {
        stack.pop();
        code.push(ch);
        masked.push(inString() ? " " : "'");
        i += 1;
      } else {
        code.push(ch);
        masked.push(blank(ch));
        i += 1;
      }
      continue;
    }
    // code, or the code inside an interpolation
    const insideString = inString();
    if (source.startsWith("//", i)) {
      while (i < source.length && source[i] !== "\n") {
        code.push(" ");
        masked.push(" ");
        i += 1;
      }
    } else if (source.startsWith("/*", i)) {
      const end = source.indexOf("*/", i + 2);
      const stop = end === -1 ? source.length : end + 2;
      for (; i < stop; i += 1) {
        const c = source[i] as string;
        code.push(blank(c));
        masked.push(blank(c));
      }
    } else if (source.startsWith("'''", i)) {
      const end = source.indexOf("'''", i + 3);
      const stop = end === -1 ? source.length : end + 3;
      for (let j = i; j < stop; j += 1) {
        const c = source[j] as string;
        code.push(c);
        const isQuote = !insideString && (j < i + 3 || j >= stop - 3);
        masked.push(isQuote ? "'" : blank(c));
      }
      i = stop;
    } else if (ch === "'") {
      stack.push({ kind: "string" });
      code.push(ch);
      masked.push(insideString ? " " : "'");
      i += 1;
    } else {
      if (top?.kind === "interpolation") {
        if (ch === "{") top.braces += 1;
        if (ch === "}") {
          if (top.braces === 0) stack.pop();
          else top.braces -= 1;
        }
      }
      code.push(ch);
      masked.push(insideString ? blank(ch) : ch);
      i += 1;
    }
  }
  return { file, source, code: code.join(""), masked: masked.join("") };
}

export function readBicep(relativePath: string): ScannedBicep {
  const file = path.join(INFRA_DIR, relativePath);
  return scanBicep(readFileSync(file, "utf8"), relativePath);
}

/** Every .bicep file under infra/, as paths relative to infra/ (e.g. `modules/storage.bicep`). */
export function listBicepFiles(dir = INFRA_DIR): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...listBicepFiles(full));
    else if (entry.name.endsWith(".bicep")) found.push(path.relative(INFRA_DIR, full).split(path.sep).join("/"));
  }
  return found.sort();
}

/** Every file under infra/ (any extension), relative to infra/. */
export function listInfraFiles(dir = INFRA_DIR): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...listInfraFiles(full));
    else found.push(path.relative(INFRA_DIR, full).split(path.sep).join("/"));
  }
  return found.sort();
}

const OPENERS: Record<string, string> = { "{": "}", "[": "]", "(": ")" };
const CLOSERS = new Set(Object.values(OPENERS));

/** Problems with (), [] and {} nesting in the masked view; empty when balanced. */
export function bracketProblems(scanned: ScannedBicep): string[] {
  const problems: string[] = [];
  const stack: Array<{ ch: string; index: number }> = [];
  const { masked } = scanned;
  for (let i = 0; i < masked.length; i += 1) {
    const ch = masked[i] as string;
    if (ch in OPENERS) stack.push({ ch, index: i });
    else if (CLOSERS.has(ch)) {
      const open = stack.pop();
      if (!open || OPENERS[open.ch] !== ch) {
        problems.push(`${scanned.file}:${lineOf(masked, i)} unexpected '${ch}'`);
        if (open) stack.push(open);
      }
    }
  }
  for (const open of stack) problems.push(`${scanned.file}:${lineOf(masked, open.index)} unclosed '${open.ch}'`);
  const quotes = (masked.match(/'/g) ?? []).length;
  if (quotes % 2 !== 0) problems.push(`${scanned.file}: unterminated string literal`);
  return problems;
}

export function lineOf(text: string, index: number): number {
  return text.slice(0, index).split("\n").length;
}

/** Index of the bracket closing the one at `openIndex` (masked view). */
export function matchingClose(masked: string, openIndex: number): number {
  let depth = 0;
  for (let i = openIndex; i < masked.length; i += 1) {
    const ch = masked[i] as string;
    if (ch in OPENERS) depth += 1;
    else if (CLOSERS.has(ch)) {
      depth -= 1;
      if (depth === 0) return i;
    }
  }
  throw new Error(`no matching close for bracket at ${openIndex}`);
}

export interface ObjectEntry {
  readonly key: string;
  /** The value expression as written (comments removed, trimmed). */
  readonly value: string;
  /** Index of the value's first character (masked/code/source views). */
  readonly valueIndex: number;
}

/**
 * Top-level `key: value` entries of the object literal whose `{` is at `openIndex`.
 * Bicep object properties are newline-separated; a value ends at the first newline (or the
 * closing brace) found at nesting depth 0, so multi-line values (`{...}`, `[...]`) are included.
 */
export function objectEntries(scanned: ScannedBicep, openIndex: number): ObjectEntry[] {
  const { masked, code } = scanned;
  if (masked[openIndex] !== "{") throw new Error(`${scanned.file}: no object at ${openIndex}`);
  const close = matchingClose(masked, openIndex);
  const entries: ObjectEntry[] = [];
  const keyRe = /^[ \t]*([A-Za-z_][A-Za-z0-9_]*|'[^'\n]*')[ \t]*:/;
  let i = openIndex + 1;
  while (i < close) {
    const lineEnd = masked.indexOf("\n", i);
    const restOfLine = code.slice(i, lineEnd === -1 || lineEnd > close ? close : lineEnd);
    const match = keyRe.exec(restOfLine);
    if (!match) {
      i = lineEnd === -1 ? close : lineEnd + 1;
      continue;
    }
    const rawKey = match[1] as string;
    const key = rawKey.startsWith("'") ? rawKey.slice(1, -1) : rawKey;
    const valueIndex = i + match[0].length;
    // walk to the end of the value: newline at depth 0, or the object's closing brace
    let depth = 0;
    let j = valueIndex;
    for (; j < close; j += 1) {
      const ch = masked[j] as string;
      if (ch in OPENERS) depth += 1;
      else if (CLOSERS.has(ch)) depth -= 1;
      else if (ch === "\n" && depth === 0) break;
    }
    const rawValue = code.slice(valueIndex, j);
    const leading = rawValue.length - rawValue.trimStart().length;
    entries.push({ key, value: rawValue.trim(), valueIndex: valueIndex + leading });
    i = j + 1;
  }
  return entries;
}

/** Index of the first `{` at or after `from` (masked view). */
export function nextBrace(scanned: ScannedBicep, from: number, brace: "{" | "[" = "{"): number {
  const index = scanned.masked.indexOf(brace, from);
  if (index === -1) throw new Error(`${scanned.file}: no '${brace}' after ${from}`);
  return index;
}

/** Elements of the array literal whose `[` is at `openIndex` that are object literals. */
export function arrayObjects(scanned: ScannedBicep, openIndex: number): ObjectEntry[][] {
  const { masked } = scanned;
  const close = matchingClose(masked, openIndex);
  const objects: ObjectEntry[][] = [];
  let i = openIndex + 1;
  while (i < close) {
    const ch = masked[i] as string;
    if (ch === "{") {
      objects.push(objectEntries(scanned, i));
      i = matchingClose(masked, i) + 1;
    } else if (ch in OPENERS) {
      i = matchingClose(masked, i) + 1;
    } else {
      i += 1;
    }
  }
  return objects;
}

/** Single-quoted string literals (without interpolation) that are elements of the array at `openIndex`. */
export function arrayStrings(scanned: ScannedBicep, openIndex: number): string[] {
  const close = matchingClose(scanned.masked, openIndex);
  const body = scanned.code.slice(openIndex + 1, close);
  return [...body.matchAll(/^[ \t]*'([^'$\\\n]*)'[ \t]*$/gm)].map((m) => m[1] as string);
}

export interface Decorator {
  readonly name: string;
  /** Argument text as written (comments removed). */
  readonly args: string;
}

export interface ParamDecl {
  readonly name: string;
  readonly type: string;
  /** Default value expression, or undefined when the parameter is required. */
  readonly defaultValue: string | undefined;
  /** Decorators directly above, e.g. [{ name: 'minValue', args: '40' }, { name: 'secure', args: '' }]. */
  readonly decorators: Decorator[];
  readonly index: number;
}

/** `param` declarations, with their decorators (decorators are found in the masked view). */
export function params(scanned: ScannedBicep): ParamDecl[] {
  const decls: ParamDecl[] = [];
  const re = /^param[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]+([A-Za-z_][A-Za-z0-9_.]*(?:\[\])?)([ \t]*=[ \t]*(.*))?$/gm;
  for (const match of scanned.masked.matchAll(re)) {
    const index = match.index ?? 0;
    const name = match[1] as string;
    const type = match[2] as string;
    let defaultValue: string | undefined;
    if (match[3] !== undefined) {
      const valueStart = index + match[0].indexOf("=", (match[1] as string).length) + 1;
      defaultValue = valueExpression(scanned, valueStart);
    }
    decls.push({ name, type, defaultValue, decorators: decoratorsBefore(scanned, index), index });
  }
  return decls;
}

/** A value expression starting at `start` that may span lines while brackets are open. */
function valueExpression(scanned: ScannedBicep, start: number): string {
  let depth = 0;
  let j = start;
  for (; j < scanned.masked.length; j += 1) {
    const ch = scanned.masked[j] as string;
    if (ch in OPENERS) depth += 1;
    else if (CLOSERS.has(ch)) depth -= 1;
    else if (ch === "\n" && depth === 0) break;
  }
  return scanned.code.slice(start, j).trim();
}

/** The decorators (`@name(...)`) directly above the declaration at `index`. */
function decoratorsBefore(scanned: ScannedBicep, index: number): Decorator[] {
  const names: Decorator[] = [];
  let end = index;
  for (;;) {
    const before = scanned.masked.slice(0, end).replace(/\s+$/, "");
    if (!before.endsWith(")")) break;
    const closeIndex = before.length - 1;
    // find the matching '(' backwards
    let depth = 0;
    let openIndex = -1;
    for (let k = closeIndex; k >= 0; k -= 1) {
      const ch = before[k];
      if (ch === ")" || ch === "]" || ch === "}") depth += 1;
      else if (ch === "(" || ch === "[" || ch === "{") {
        depth -= 1;
        if (depth === 0) {
          openIndex = k;
          break;
        }
      }
    }
    if (openIndex === -1) break;
    const nameMatch = /@([A-Za-z_][A-Za-z0-9_.]*)$/.exec(before.slice(0, openIndex));
    if (!nameMatch) break;
    names.unshift({ name: nameMatch[1] as string, args: scanned.code.slice(openIndex + 1, closeIndex).trim() });
    end = openIndex - nameMatch[0].length;
  }
  return names;
}

export interface ModuleDecl {
  readonly symbol: string;
  readonly path: string;
  /** Keys of the module's `params: { ... }` object. */
  readonly params: ObjectEntry[];
}

/** `module symbol 'path' = ...` declarations with their params (plain, conditional or loop). */
export function modules(scanned: ScannedBicep): ModuleDecl[] {
  const decls: ModuleDecl[] = [];
  const re = /^module[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]+'([^']+)'[ \t]*=/gm;
  for (const match of scanned.code.matchAll(re)) {
    const index = match.index ?? 0;
    const bodyOpen = nextBrace(scanned, index + match[0].length);
    const body = objectEntries(scanned, bodyOpen);
    const paramsEntry = body.find((entry) => entry.key === "params");
    const paramEntries =
      paramsEntry && scanned.masked[paramsEntry.valueIndex] === "{" ? objectEntries(scanned, paramsEntry.valueIndex) : [];
    decls.push({ symbol: match[1] as string, path: match[2] as string, params: paramEntries });
  }
  return decls;
}

/** Names of `output` declarations. */
export function outputs(scanned: ScannedBicep): string[] {
  return [...scanned.masked.matchAll(/^output[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]+/gm)].map((m) => m[1] as string);
}

/** Index of the `{`/`[` that starts the value of `var name = ...`. */
export function varValueIndex(scanned: ScannedBicep, name: string): number {
  const match = new RegExp(`^var[ \\t]+${name}[ \\t]*=[ \\t]*`, "m").exec(scanned.masked);
  if (!match) throw new Error(`${scanned.file}: no var ${name}`);
  return (match.index ?? 0) + match[0].length;
}

/**
 * Object entries of the `properties` of the resource with the given symbol name, e.g. the
 * app settings in `resource appSettings 'Microsoft.Web/sites/config@...' = { name: 'appsettings'
 * properties: { KEY: value ... } }`.
 */
export function resourceBody(scanned: ScannedBicep, symbol: string): { type: string; body: ObjectEntry[] } {
  const match = new RegExp(`^resource[ \\t]+${symbol}[ \\t]+'([^']+)'[^\\n]*=`, "m").exec(scanned.code);
  if (!match) throw new Error(`${scanned.file}: no resource ${symbol}`);
  const open = nextBrace(scanned, (match.index ?? 0) + match[0].length);
  return { type: match[1] as string, body: objectEntries(scanned, open) };
}

/** All `'Provider/type@version'` resource type references in a file (resource and existing). */
export function resourceTypes(scanned: ScannedBicep): string[] {
  return [...scanned.code.matchAll(/^[ \t]*resource[ \t]+[A-Za-z_][A-Za-z0-9_]*[ \t]+'([^'@]+@[^']+)'/gm)].map(
    (m) => m[1] as string,
  );
}

/** Unquote a plain single-quoted Bicep literal (`'abc'` → `abc`); undefined for expressions. */
export function literal(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const match = /^'([^'$\\]*)'$/.exec(value.trim());
  return match ? (match[1] as string) : undefined;
}
