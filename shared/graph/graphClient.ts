import type { FetchedPage, PageQuery } from "../defender/types";
import { PagedFetch, type PagedFetchOptions, type SourceProfile } from "../sources/pagedFetch";
import { DefenderApiError } from "../sources/sourceErrors";

/**
 * The largest `$top` this client asks Graph for. alerts_v2 documents no maximum; the Graph
 * security API's error constraints name 1,000 (as the legacy /security/alerts enforced), so
 * nothing larger is ever sent.
 */
export const GRAPH_MAX_TOP = 1000;

/** The alerts collection, below the configured base URL (national clouds differ only in the host). */
export const GRAPH_ALERTS_PATH = "/v1.0/security/alerts_v2";

/**
 * Limits for the separate RateBudget instance of Graph calls.
 *
 * Graph documents 150 requests a minute per app per tenant for the security alert APIs
 * (throttling-limits, "Security detections and incidents service limits"); 120 keeps a 20 %
 * margin for clock differences between this sliding window and Graph's and for calls of the
 * same app in that tenant that this budget does not see. Graph names no hourly limit: the hourly
 * cap only bounds what the budget remembers. Each remembered call is persisted with the
 * tenant's pull state as ~14 characters of one Table property (at most 32K characters), so
 * 2,000 (28K characters) fits with room to spare; 2,000 pages of up to 1,000 alerts an hour is
 * far beyond any tenant.
 */
export const GRAPH_BUDGET_LIMITS = { perMinute: 120, perHour: 2_000 } as const;

export type GraphClientOptions = PagedFetchOptions;

const GRAPH_PROFILE: SourceProfile = {
  source: "graph",
  clientName: "GraphClient",
  serviceName: "Microsoft Graph",
  timeField: "lastUpdateDateTime",
  // Without it Graph hides the alerts of newer sources (serviceSource values such as
  // microsoftDefenderForCloud are "evolvable enum" members past unknownFutureValue).
  headers: { Prefer: "include-unknown-enum-members" },
  forbiddenReason:
    "the consenting user lacks access to Defender XDR alerts in Microsoft Graph (the Security Reader role or a Defender XDR role), or the SecurityAlert.Read.All permission is missing from the consent",
  retryAfterOn503: true,
};

/**
 * Reads Microsoft Graph `security/alerts_v2` one closed `lastUpdateDateTime` window at a time,
 * page by page through `@odata.nextLink`, with the same budget, token refresh, retries and
 * limits as the Defender client (shared/sources/pagedFetch.ts).
 */
export class GraphClient {
  private readonly transport: PagedFetch;

  constructor(options: GraphClientOptions) {
    this.transport = new PagedFetch(options, GRAPH_PROFILE);
  }

  /**
   * One page of alerts whose `lastUpdateDateTime` lies in `[from, to)`.
   *
   * Without `query.nextLink` this is the span's first page: `$filter` and `$top` on the alerts
   * collection (alerts_v2 pages by skip token; this client never sends `$skip`, so `skip` must
   * be 0). With it, exactly that link is read, and only when it stays on the base URL's origin
   * and the alerts path: a link anywhere else is refused before anything is sent, so the bearer
   * token never leaves for another host. `expandEvidence` does not apply: Graph alerts always
   * carry their evidence.
   */
  async fetchPage(query: PageQuery): Promise<FetchedPage> {
    if (!Number.isInteger(query.top) || query.top < 1 || query.top > GRAPH_MAX_TOP) {
      throw new RangeError(`GraphClient: top must be an integer between 1 and ${GRAPH_MAX_TOP}`);
    }
    let url: string;
    if (query.nextLink === undefined) {
      if (query.skip !== 0) throw new RangeError("GraphClient: skip must be 0; Graph pages by @odata.nextLink");
      url = firstPageUrl(query);
    } else {
      url = this.checkedNextLink(query.baseUrl, query.nextLink);
    }
    return this.transport.fetchPage({
      url,
      tenantId: query.tenantId,
      accessToken: query.accessToken,
      deadline: query.deadline,
      maxResponseBytes: graphMaxPageBytes(query.top),
    });
  }

  /** The link as given, when it may be followed; otherwise a non-retryable error naming only the expected host and path. */
  private checkedNextLink(baseUrl: string, link: string): string {
    const expected = alertsCollection(baseUrl);
    if (!followableNextLink(baseUrl, link)) {
      // The link itself is never quoted: it is service data and may carry a skip token.
      throw new DefenderApiError(
        "invalid_response",
        `Microsoft Graph answered an @odata.nextLink outside ${expected.host}${expected.pathname}; it was not followed`,
        { retryable: false, source: "graph" },
      );
    }
    return link;
  }
}

/**
 * Whether a nextLink stays on the base URL's origin and the alerts path, the only links this
 * client follows. The pull asks before following one, so a link elsewhere is reported (dead-
 * lettered) and the pass ends, instead of failing the run every time.
 */
export function followableNextLink(baseUrl: string, link: string): boolean {
  const expected = alertsCollection(baseUrl);
  let parsed: URL;
  try {
    parsed = new URL(link);
  } catch {
    return false;
  }
  // Paths compare without case (Graph's own are case-insensitive); the origin is what guards the token.
  return parsed.origin === expected.origin && parsed.pathname.toLowerCase() === expected.pathname.toLowerCase();
}

/**
 * The most a page of `top` alerts may take. Graph alerts always include their evidence, so
 * every alert is allowed 64 KiB (as MDE alerts with evidence are), and never less than 4 MiB.
 */
export function graphMaxPageBytes(top: number): number {
  return Math.max(4 * 1024 * 1024, top * 64 * 1024);
}

function alertsCollection(baseUrl: string): URL {
  const base = new URL(baseUrl);
  return new URL(`${base.origin}${base.pathname.replace(/\/+$/, "")}${GRAPH_ALERTS_PATH}`);
}

function firstPageUrl(query: PageQuery): string {
  const filter = `lastUpdateDateTime ge ${query.from} and lastUpdateDateTime lt ${query.to}`;
  // Spaces as %20, not "+": Graph reads both, but %20 is what its own SDKs send. "$" stays literal, as OData documents it.
  return `${alertsCollection(query.baseUrl).href}?$filter=${encodeURIComponent(filter)}&$top=${query.top}`;
}
