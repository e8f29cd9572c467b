import type { AlertEnvelope } from "./alertSink";

/**
 * One alert version as every sink writes it: the envelope's fields in a fixed order, then the
 * alert's JSON exactly as the API sent it (never re-serialised, so timestamps keep their digits).
 * The blob sink stores it as an NDJSON line, the Event Hubs sink as an event body: a reader that
 * parses one parses the other. `alertJson` replaces the alert's text (a sink that had to trim it).
 */
export function envelopeLine(envelope: AlertEnvelope, alertJson: string = envelope.alert.json): string {
  return `${envelopePrefix(envelope)}${alertJson}${ENVELOPE_SUFFIX}`;
}

/** The envelope's fields up to the alert's JSON: a line is this, the alert's JSON, then ENVELOPE_SUFFIX. */
export function envelopePrefix(envelope: AlertEnvelope): string {
  return `{"tenantId":${JSON.stringify(envelope.tenantId)},"tenantName":${JSON.stringify(envelope.tenantName)},"source":${JSON.stringify(envelope.source)},"pulledAt":${JSON.stringify(envelope.pulledAt)},"alert":`;
}

export const ENVELOPE_SUFFIX = "}";

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Index just past the JSON value that starts at `start` in valid JSON text (after any whitespace). */
function valueEnd(text: string, start: number): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) {
        inString = false;
        if (depth === 0) return i + 1;
      }
      continue;
    }
    if (c === QUOTE) inString = true;
    else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) {
      // A closer at depth 0 ends a scalar (the object's own brace).
      if (depth === 0) return i;
      if (--depth === 0) return i + 1;
    } else if (depth === 0 && (c === 0x2c || c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) && i > start) return i;
  }
  return text.length;
}

function skipSpace(text: string, at: number): number {
  while (at < text.length && /\s/.test(text.charAt(at))) at++;
  return at;
}

/**
 * The alert's JSON without its top-level `evidence` member, every other byte as the API sent it
 * (a parse and re-serialise would rewrite numbers and escapes); undefined when it has none, so a
 * sink knows trimming cannot help. Evidence is the one member that grows without bound (files,
 * processes, IPs of the alert); the rest of an alert is a few KB. `json` must be a valid JSON
 * object, as the page scanner guarantees.
 */
export function withoutEvidence(json: string): string | undefined {
  let at = skipSpace(json, 0);
  if (json.charAt(at) !== "{") return undefined;
  /** Where the previous member's value ended, or just after the `{`. */
  let previousEnd = at + 1;
  at = skipSpace(json, previousEnd);
  for (let first = true; json.charAt(at) === '"'; first = false) {
    const keyEnd = valueEnd(json, at);
    const key: unknown = JSON.parse(json.slice(at, keyEnd));
    const end = valueEnd(json, skipSpace(json, skipSpace(json, keyEnd) + 1));
    const next = skipSpace(json, end);
    if (key === "evidence") {
      // The comma before the member goes with it; the first member takes the one after it.
      if (!first) return json.slice(0, previousEnd) + json.slice(end);
      return json.slice(0, previousEnd) + json.slice(json.charAt(next) === "," ? skipSpace(json, next + 1) : next);
    }
    if (json.charAt(next) !== ",") return undefined;
    previousEnd = end;
    at = skipSpace(json, next + 1);
  }
  return undefined;
}
