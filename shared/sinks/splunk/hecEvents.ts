import type { AlertEnvelope, RefusedVersion } from "../alertSink";

/**
 * HEC events for alert envelopes, and their grouping into requests.
 *
 * Each event is written as text around the alert's raw JSON (`envelope.alert.json`), which goes
 * in unchanged: re-serialising would round numbers and reorder nothing useful, and the Splunk
 * Add-on for Microsoft Security expects the API's own shape.
 */

/** What every event of one sink carries besides the alert. */
export interface EventMetadata {
  source: string;
  /** For Defender for Endpoint alerts (SPLUNK_SOURCETYPE). */
  sourcetype: string;
  index?: string;
}

/**
 * The sourcetype of Microsoft Graph alerts_v2 events. The add-on's Defender sourcetypes parse the
 * MDE API's shape, which Graph alerts do not have; `_json` is Splunk's own JSON sourcetype, so the
 * fields are extracted at search time without any add-on (CIM aliases are the MSSP's own).
 */
export const GRAPH_SPLUNK_SOURCETYPE = "_json";

/** One event ready to send: its text and its size in bytes (the request cap counts bytes). */
export interface HecEvent {
  text: string;
  bytes: number;
  envelope: AlertEnvelope;
}

/** Bytes between two events of a request: a newline, which the collector reads as whitespace. */
const SEPARATOR_BYTES = 1;

/** Epoch seconds with exactly three decimals: `1733000000.123`. */
export function epochSeconds(ms: number): string {
  const whole = Math.floor(ms);
  const seconds = Math.floor(whole / 1000);
  return `${seconds}.${String(whole - seconds * 1000).padStart(3, "0")}`;
}

/** Builds event texts for one sink; the constant metadata is encoded once per alert source. */
export class EventWriter {
  private readonly heads: Readonly<Record<AlertEnvelope["source"], string>>;

  constructor(metadata: EventMetadata) {
    const index = metadata.index === undefined ? "" : `,"index":${JSON.stringify(metadata.index)}`;
    const head = (sourcetype: string) => `"source":${JSON.stringify(metadata.source)},"sourcetype":${JSON.stringify(sourcetype)}${index}`;
    this.heads = { mde: head(metadata.sourcetype), graph: head(GRAPH_SPLUNK_SOURCETYPE) };
  }

  /** The event for an envelope; `alertJson` replaces the alert's own text when it was trimmed. */
  event(envelope: AlertEnvelope, trimmed?: { alertJson: string; member: string }): HecEvent {
    const fields =
      `{"tenant_id":${JSON.stringify(envelope.tenantId)},"tenant_name":${JSON.stringify(envelope.tenantName)},` +
      `"source":${JSON.stringify(envelope.source)}${trimmed ? `,"truncated":${JSON.stringify(trimmed.member)}` : ""}}`;
    const text = `{"time":${epochSeconds(envelope.alert.updatedAtMs)},${this.heads[envelope.source]},"fields":${fields},"event":${trimmed?.alertJson ?? envelope.alert.json}}`;
    // Stryker disable next-line StringLiteral: Buffer.byteLength reads an empty encoding name as utf8, its default
    return { text, bytes: Buffer.byteLength(text, "utf8"), envelope };
  }

  /**
   * The events of a batch, each under `maxBytes`: an alert too large is sent without its
   * `evidence` (marked in `fields.truncated`), and one still too large is refused, never dropped.
   */
  prepare(envelopes: readonly AlertEnvelope[], maxBytes: number): { events: HecEvent[]; refused: RefusedVersion[] } {
    const events: HecEvent[] = [];
    const refused: RefusedVersion[] = [];
    for (const envelope of envelopes) {
      const whole = this.event(envelope);
      if (whole.bytes <= maxBytes) {
        events.push(whole);
        continue;
      }
      const alertJson = withoutMember(envelope.alert.json, "evidence");
      const trimmed = alertJson === undefined ? undefined : this.event(envelope, { alertJson, member: "evidence" });
      if (trimmed && trimmed.bytes <= maxBytes) {
        events.push(trimmed);
        continue;
      }
      refused.push({
        alert: envelope.alert,
        reason: "oversized",
        detail: `${(trimmed ?? whole).bytes} bytes as a Splunk HEC event${trimmed ? " even without its evidence" : ""}, over the ${maxBytes}-byte request cap`,
      });
    }
    return { events, refused };
  }
}

/** Consecutive runs of events whose request body (events plus separators) stays within `maxBytes`. */
export function batches(events: readonly HecEvent[], maxBytes: number): HecEvent[][] {
  const out: HecEvent[][] = [];
  let current: HecEvent[] = [];
  let size = 0;
  for (const event of events) {
    const added = (current.length > 0 ? SEPARATOR_BYTES : 0) + event.bytes;
    if (current.length > 0 && size + added > maxBytes) {
      out.push(current);
      current = [];
      size = 0;
    }
    size += current.length > 0 ? SEPARATOR_BYTES + event.bytes : event.bytes;
    current.push(event);
  }
  if (current.length > 0) out.push(current);
  return out;
}

/** One request body: the events' texts separated by newlines. */
export function requestBody(events: readonly HecEvent[]): Buffer {
  return Buffer.from(events.map((e) => e.text).join("\n"), "utf8");
}

/**
 * The JSON object `json` without its top-level members named `name`, every other member's text
 * kept byte for byte; undefined when `json` is not an object this scanner can delimit. The alert
 * was validated as strict JSON when its page was read, so this only needs to find boundaries.
 */
export function withoutMember(json: string, name: string): string | undefined {
  let at = skipSpace(json, 0);
  if (json[at] !== "{") return undefined;
  at = skipSpace(json, at + 1);
  const kept: string[] = [];
  let removed = false;
  // Stryker disable next-line StringLiteral: with "" no character matches, and `{}` is refused just below anyway (a key must start with `"`)
  if (json[at] === "}") return undefined;
  for (;;) {
    const keyEnd = json[at] === '"' ? stringEnd(json, at) : undefined;
    if (keyEnd === undefined) return undefined;
    let key: unknown;
    try {
      key = JSON.parse(json.slice(at, keyEnd));
    } catch {
      return undefined;
    }
    const colon = skipSpace(json, keyEnd);
    if (json[colon] !== ":") return undefined;
    const valueEnd = jsonValueEnd(json, skipSpace(json, colon + 1));
    if (valueEnd === undefined) return undefined;
    if (key === name) removed = true;
    else kept.push(json.slice(at, valueEnd));
    const next = skipSpace(json, valueEnd);
    if (json[next] === "}") break;
    if (json[next] !== ",") return undefined;
    at = skipSpace(json, next + 1);
  }
  return removed ? `{${kept.join(",")}}` : undefined;
}

function skipSpace(text: string, at: number): number {
  while (at < text.length && (text[at] === " " || text[at] === "\t" || text[at] === "\n" || text[at] === "\r")) at++;
  return at;
}

/** Index just past the string that starts at `at` (a `"`), or undefined if it never ends. */
function stringEnd(text: string, at: number): number | undefined {
  for (let i = at + 1; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === '"') return i + 1;
  }
  return undefined;
}

/**
 * Index just past the JSON value that starts at `at`, found by strings and brackets alone (the
 * value is not validated), or undefined when it does not end.
 */
export function jsonValueEnd(text: string, at: number): number | undefined {
  const first = text[at];
  if (first === '"') return stringEnd(text, at);
  if (first === "{" || first === "[") {
    let depth = 0;
    for (let i = at; i < text.length; i++) {
      const c = text[i];
      if (c === '"') {
        const end = stringEnd(text, i);
        if (end === undefined) return undefined;
        i = end - 1;
      } else if (c === "{" || c === "[") depth++;
      else if (c === "}" || c === "]") {
        depth--;
        if (depth === 0) return i + 1;
      }
    }
    return undefined;
  }
  // A number, true, false or null: up to the next delimiter.
  let i = at;
  while (i < text.length && !",}] \t\n\r".includes(text[i] as string)) i++;
  return i > at ? i : undefined;
}
