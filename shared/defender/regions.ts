export type DefenderApiRegion = "us" | "eu" | "uk" | "au" | "swa" | "ina";

const REGIONS: ReadonlySet<string> = new Set<DefenderApiRegion>(["us", "eu", "uk", "au", "swa", "ina"]);

/** Microsoft's global Defender API hosts; only these have the documented regional siblings. */
const GLOBAL_HOSTS: ReadonlySet<string> = new Set(["api.security.microsoft.com", "api.securitycenter.microsoft.com"]);

/**
 * The Defender API base URL for a tenant. A region pins the tenant to the documented geo
 * endpoint (`https://<region>.api.security.microsoft.com`, "for better performance") but only
 * when the configured base is Microsoft's global host: any other host (a test fake, a proxy,
 * a sovereign cloud) is used unchanged, as is the global host for tenants without a region.
 * An unrecognised region value also keeps the configured base: the global host serves every
 * tenant, just less directly.
 */
export function defenderBaseUrl(configuredBase: string, region?: DefenderApiRegion): string {
  if (region === undefined || !REGIONS.has(region)) return configuredBase;
  let url: URL;
  try {
    url = new URL(configuredBase);
  } catch {
    return configuredBase;
  }
  if (url.protocol !== "https:" || !GLOBAL_HOSTS.has(url.hostname.toLowerCase()) || url.port !== "") return configuredBase;
  return `https://${region}.api.security.microsoft.com`;
}
