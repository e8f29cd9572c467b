import type { Clock } from "../clock";
import type { FetchedPage, PageQuery } from "../defender/types";
import { defenderBaseUrl, type DefenderApiRegion } from "../defender/regions";
import type { SourceProbe } from "./applicationConsent";

/** Bound of the one confirming call: a consent page must answer while the admin waits. */
const PROBE_TIMEOUT_MS = 20_000;
/** The window the one alert is asked from: any will do, none is fine too (an empty answer is access). */
const PROBE_WINDOW_MS = 24 * 3600_000;

interface PageReader {
  fetchPage(query: PageQuery): Promise<FetchedPage>;
}

/**
 * The consent's last check, through the same clients the pull reads with: one page of at most
 * one alert (`$top=1`). Its content is dropped; only whether the source answered matters.
 */
export function createSourceProbe(deps: {
  defender: PageReader;
  graph: PageReader;
  defenderApiBaseUrl: string;
  graphApiBaseUrl: string;
  clock: Clock;
}): SourceProbe {
  return async ({ tenantId, source, defenderRegion, accessToken }) => {
    const now = deps.clock();
    const client = source === "graph" ? deps.graph : deps.defender;
    await client.fetchPage({
      tenantId,
      from: new Date(now - PROBE_WINDOW_MS).toISOString(),
      to: new Date(now).toISOString(),
      top: 1,
      skip: 0,
      expandEvidence: false,
      baseUrl: source === "graph" ? deps.graphApiBaseUrl : defenderBaseUrl(deps.defenderApiBaseUrl, defenderRegion as DefenderApiRegion | undefined),
      accessToken: async () => accessToken,
      deadline: now + PROBE_TIMEOUT_MS,
    });
  };
}
