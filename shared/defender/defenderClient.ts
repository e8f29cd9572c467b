import { odataUrl, PagedFetch, type PagedFetchOptions, type SourceProfile } from "../sources/pagedFetch";
import type { FetchedPage, PageQuery } from "./types";

// The errors and header helpers moved to shared/sources/ when Graph became a second source;
// they are re-exported here so existing importers keep working unchanged.
export { DefenderApiError, InvalidPageError, type DefenderErrorCode } from "../sources/sourceErrors";
export { httpDate, retryAfterMs } from "../sources/pagedFetch";

export interface DefenderClientOptions extends PagedFetchOptions {
  /** The partner User-Agent Microsoft asks MSSP integrations to send: `MdePartner-{Company}-{Product}/{Version}`. */
  userAgent: string;
}

/** The Defender for Endpoint API's documented maximum `$top`. */
export const DEFENDER_MAX_TOP = 10_000;

const DEFENDER_PROFILE: SourceProfile = {
  source: "mde",
  clientName: "DefenderClient",
  serviceName: "Defender API",
  timeField: "lastUpdateTime",
  forbiddenReason: "the customer has not authorized the application in the Defender portal, or the consenting user lacks the View Data role",
  // The MDE API documents Retry-After on 429 only; a 503 backs off like any server error.
  retryAfterOn503: false,
};

/**
 * Reads the Defender for Endpoint alerts API (`GET /api/alerts`) one closed `lastUpdateTime`
 * window at a time, page by page, with the partner User-Agent, a per-tenant call budget and
 * retries that honour Retry-After (the shared request loop in shared/sources/pagedFetch.ts).
 */
export class DefenderClient {
  private readonly transport: PagedFetch;

  constructor(options: DefenderClientOptions) {
    this.transport = new PagedFetch(options, DEFENDER_PROFILE);
  }

  /**
   * One page of alerts whose version time lies in `[from, to)`: a single `GET /api/alerts` with
   * `$filter`, `$top` and `$skip`, retried through throttling, server errors, timeouts and an
   * unreadable body. The caller decides what a full page means (see the pull's sub-window
   * planner); this client never follows `@odata.nextLink` (and refuses `query.nextLink`: MDE
   * pages by `$skip`), so a link that loops or points at another host can neither stall a pull
   * nor carry the bearer token away.
   */
  async fetchPage(query: PageQuery): Promise<FetchedPage> {
    if (!Number.isInteger(query.top) || query.top < 1 || query.top > DEFENDER_MAX_TOP) {
      throw new RangeError("DefenderClient: top must be an integer between 1 and 10000");
    }
    if (!Number.isInteger(query.skip) || query.skip < 0) throw new RangeError("DefenderClient: skip must be a non-negative integer");
    // A caller that hands MDE a link expects it followed; reading page one again instead would loop.
    if (query.nextLink !== undefined) throw new RangeError("DefenderClient: nextLink is not followed; the Defender API pages by $skip");
    return this.transport.fetchPage({
      url: alertsUrl(query),
      tenantId: query.tenantId,
      accessToken: query.accessToken,
      deadline: query.deadline,
      maxResponseBytes: maxPageBytes(query),
    });
  }
}

/**
 * The most a page of `top` alerts may take: generous per alert (MDE alerts are a few KB, with
 * evidence tens of KB), so only an answer no page could honestly be is refused.
 */
export function maxPageBytes(query: Pick<PageQuery, "top" | "expandEvidence">): number {
  return Math.max(4 * 1024 * 1024, query.top * (query.expandEvidence ? 64 * 1024 : 16 * 1024));
}

function alertsUrl(query: PageQuery): string {
  const params = new URLSearchParams();
  params.set("$filter", `lastUpdateTime ge ${query.from} and lastUpdateTime lt ${query.to}`);
  params.set("$top", String(query.top));
  params.set("$skip", String(query.skip));
  if (query.expandEvidence) params.set("$expand", "evidence");
  return odataUrl(query.baseUrl, "/api/alerts", params);
}
