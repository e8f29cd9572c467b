import type { RejectedAlert, ScannedAlert } from "./pageScanner";

/**
 * An alert as the Defender API returned it: its raw JSON, kept byte for byte (timestamps keep
 * their 7 fractional digits), plus the fields the pipeline decides on.
 */
export type DefenderAlert = ScannedAlert;

/** One request for alerts whose `lastUpdateTime` lies in `[from, to)`. */
export interface PageQuery {
  tenantId: string;
  /** Inclusive lower bound (ISO-8601 UTC). */
  from: string;
  /** Exclusive upper bound (ISO-8601 UTC). */
  to: string;
  top: number;
  skip: number;
  expandEvidence: boolean;
  /** Base URL for this tenant (regional). */
  baseUrl: string;
  /** Returns a valid access token; called again with `forceRefresh` after a 401. */
  accessToken: (forceRefresh: boolean) => Promise<string>;
  /** Stop (throw DefenderApiError code "deadline") once this epoch-ms passes. */
  deadline: number;
}

/** What one page request answered. */
export interface FetchedPage {
  alerts: DefenderAlert[];
  /** Elements of `value` the pipeline cannot accept (invalid JSON, no id, no time): dead-lettered, never dropped. */
  rejected: RejectedAlert[];
  /** Present when the service says there is more; a hint only, never followed. */
  nextLink: string | undefined;
  /** The response's `Date` header (epoch ms): the service's clock, to one second. */
  apiDate?: number;
}
