import type { RejectedAlert, ScannedAlert } from "./pageScanner";

/**
 * An alert as the Defender API returned it: its raw JSON, kept byte for byte (timestamps keep
 * their 7 fractional digits), plus the fields the pipeline decides on.
 */
export type DefenderAlert = ScannedAlert;

/** One request for alerts whose version time (`lastUpdateTime`, Graph: `lastUpdateDateTime`) lies in `[from, to)`. */
export interface PageQuery {
  tenantId: string;
  /** Inclusive lower bound (ISO-8601 UTC). */
  from: string;
  /** Exclusive upper bound (ISO-8601 UTC). */
  to: string;
  top: number;
  /** MDE pages by `$skip`; Graph pages by `nextLink` only, so it must be 0 there. */
  skip: number;
  /** Ignored by Graph, whose alerts always carry their evidence. */
  expandEvidence: boolean;
  /** Base URL for this tenant (MDE: regional; Graph: the cloud's Graph host). */
  baseUrl: string;
  /**
   * Graph only: the previous page's `@odata.nextLink`, to read the page after it (`from`, `to`
   * and `top` are then carried by the link itself). Followed only on baseUrl's origin and the
   * alerts path; MDE ignores it.
   */
  nextLink?: string;
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
  /** Present when the service says there is more. MDE: a hint only, never followed; Graph: the next page's query (PageQuery.nextLink). */
  nextLink: string | undefined;
  /** The response's `Date` header (epoch ms): the service's clock, to one second. */
  apiDate?: number;
}
