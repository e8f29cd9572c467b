/**
 * The HTTP Event Collector's reply codes (Splunk's "Troubleshoot HEC" table). Error messages
 * quote only the texts below, never the collector's own `text`: a reply body is the service's
 * free text and, behind a proxy, may be anything, including the request's headers.
 */

interface CodeInfo {
  text: string;
  /** Which setting the operator should look at; part of the error message. */
  hint?: string;
}

const CODES: Readonly<Record<number, CodeInfo>> = {
  0: { text: "Success" },
  1: { text: "Token disabled", hint: "enable the HEC token or set SPLUNK_HEC_TOKEN to an enabled one" },
  2: { text: "Token is required", hint: "check SPLUNK_HEC_TOKEN" },
  3: { text: "Invalid authorization", hint: "check SPLUNK_HEC_TOKEN" },
  4: { text: "Invalid token", hint: "check SPLUNK_HEC_TOKEN" },
  5: { text: "No data" },
  6: { text: "Invalid data format" },
  7: { text: "Incorrect index", hint: "add SPLUNK_INDEX to the token's allowed indexes, or change SPLUNK_INDEX" },
  8: { text: "Internal server error" },
  9: { text: "Server is busy" },
  10: { text: "Data channel is missing", hint: "the token has indexer acknowledgement on: set SPLUNK_HEC_ACK=true" },
  11: { text: "Invalid data channel" },
  12: { text: "Event field is required" },
  13: { text: "Event field cannot be blank" },
  14: { text: "ACK is disabled", hint: "the token has indexer acknowledgement off (always on Splunk Cloud): set SPLUNK_HEC_ACK=false" },
  15: { text: "Error in handling indexed fields" },
  16: { text: "Query string authorization is not enabled" },
  17: { text: "HEC is healthy" },
  18: { text: "HEC is unhealthy, queues are full" },
  19: { text: "HEC is unhealthy, ack service unavailable" },
  20: { text: "HEC is unhealthy, queues are full, ack service unavailable" },
};

export const HEC_SUCCESS = 0;
export const HEC_HEALTHY = 17;
export const HEC_INVALID_DATA_FORMAT = 6;

/** Codes the collector uses when it is overloaded or unhealthy: a later attempt may succeed. */
const RETRYABLE_CODES: ReadonlySet<number> = new Set([8, 9, 18, 19, 20]);

/**
 * Whether an answer is worth another attempt: a busy or unhealthy collector (codes 8, 9, 18–20),
 * or an HTTP status that says the same without a HEC code (a load balancer's 502/503/504, 429, 408).
 */
export function isRetryable(status: number, code: number | undefined): boolean {
  if (code !== undefined && RETRYABLE_CODES.has(code)) return true;
  return status >= 500 || status === 429 || status === 408;
}

/** `code 4 (Invalid token), HTTP 403; check SPLUNK_HEC_TOKEN`, or just `HTTP 502` without a known code. */
export function describeAnswer(status: number, code: number | undefined): string {
  const info = code === undefined ? undefined : CODES[code];
  if (!info) return code === undefined ? `HTTP ${status}` : `code ${code}, HTTP ${status}`;
  return `code ${code} (${info.text}), HTTP ${status}${info.hint ? `; ${info.hint}` : ""}`;
}
