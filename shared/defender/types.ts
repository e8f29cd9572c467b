import type { ScannedAlert } from "./pageScanner";

/**
 * An alert as the Defender API returned it: its raw JSON, kept byte for byte (timestamps keep
 * their 7 fractional digits), plus the two fields the pipeline decides on.
 */
export type DefenderAlert = ScannedAlert;

/** One page of alerts inside a closed `lastUpdateTime` window. */
export interface AlertPage {
  alerts: DefenderAlert[];
  /** The `$skip` this page was read at (for deterministic sink names and resume). */
  skip: number;
  /** The `$skip` of the next page, or undefined when the window is exhausted. */
  nextSkip: number | undefined;
}

export interface AlertWindowQuery {
  tenantId: string;
  /** Inclusive lower bound (ISO-8601 UTC). */
  from: string;
  /** Exclusive upper bound (ISO-8601 UTC). */
  to: string;
  /** Resume inside the window at this `$skip`. */
  startSkip: number;
  pageSize: number;
  /**
   * Without a nextLink, each next page starts this many positions before the end of the last
   * one. The API promises no order; if an alert leaves the window while it is paged (updated in
   * place), later alerts move up and one would fall between two pages. The overlap catches such
   * shifts; the repeated alerts are deduplicated by the caller.
   */
  pageOverlap: number;
  /** How many pages may be requested at once when their positions are known (default 1). */
  readAhead?: number;
  expandEvidence: boolean;
  /** Base URL for this tenant (regional). */
  baseUrl: string;
  /** Returns a valid access token; called again with `forceRefresh` after a 401. */
  accessToken: (forceRefresh: boolean) => Promise<string>;
  /** Stop paging (throw DefenderApiError code "deadline") once this epoch-ms passes. */
  deadline: number;
}
