/**
 * The Microsoft Sentinel sink's app settings. The lead's `loadConfig` calls
 * `parseSentinelSettings` when the sink is turned on and folds `SentinelSettingsError.problems`
 * into its own list, so every problem is reported in one pass.
 */

export const SENTINEL_SETTING_NAMES = ["SENTINEL_INGESTION_ENDPOINT", "SENTINEL_DCR_IMMUTABLE_ID", "SENTINEL_STREAM_NAME"] as const;

/** The stream infra/modules/sentinel.bicep declares. */
export const DEFAULT_SENTINEL_STREAM = "Custom-DefenderAlerts_CL";

export interface SentinelSettings {
  /**
   * SENTINEL_INGESTION_ENDPOINT: the data collection endpoint, or the `logsIngestion` endpoint of
   * a `kind: 'Direct'` DCR. An https origin without a trailing slash; the SDK adds the path.
   */
  ingestionEndpoint: string;
  /** SENTINEL_DCR_IMMUTABLE_ID: `dcr-` and 32 hex digits (the DCR's `properties.immutableId`, not its resource id). */
  dcrImmutableId: string;
  /** SENTINEL_STREAM_NAME: the DCR's stream declaration the records match. */
  streamName: string;
}

/** Every problem found, each message starting with the setting it is about and never quoting a value. */
export class SentinelSettingsError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid Microsoft Sentinel settings:\n- ${problems.join("\n- ")}`);
    this.name = "SentinelSettingsError";
  }
}

type Env = Readonly<Record<string, string | undefined>>;

const DCR_IMMUTABLE_ID = /^dcr-[0-9a-f]{32}$/i;
/** `Custom-` then what a custom table or stream name may hold; the service refuses other names. */
const STREAM_NAME = /^Custom-[A-Za-z][A-Za-z0-9_-]{0,99}$/;

export function parseSentinelSettings(env: Env): SentinelSettings {
  const problems: string[] = [];
  const ingestionEndpoint = readEndpoint(env["SENTINEL_INGESTION_ENDPOINT"]?.trim(), problems);

  const dcrImmutableId = env["SENTINEL_DCR_IMMUTABLE_ID"]?.trim() ?? "";
  if (!dcrImmutableId) problems.push("SENTINEL_DCR_IMMUTABLE_ID is required (the DCR's immutableId, dcr- and 32 hex digits)");
  else if (!DCR_IMMUTABLE_ID.test(dcrImmutableId)) {
    // The resource id (/subscriptions/…) is the usual mistake; say which value is wanted.
    problems.push("SENTINEL_DCR_IMMUTABLE_ID must be dcr- and 32 hex digits (the DCR's properties.immutableId, not its resource id)");
  }

  const streamName = env["SENTINEL_STREAM_NAME"]?.trim() || DEFAULT_SENTINEL_STREAM;
  if (!streamName.startsWith("Custom-")) problems.push("SENTINEL_STREAM_NAME must start with Custom- (a custom stream of the DCR)");
  else if (!STREAM_NAME.test(streamName)) problems.push("SENTINEL_STREAM_NAME must be Custom- followed by letters, digits, _ or - (at most 100)");

  if (problems.length > 0) throw new SentinelSettingsError(problems);
  return { ingestionEndpoint, dcrImmutableId, streamName };
}

function readEndpoint(value: string | undefined, problems: string[]): string {
  const name = "SENTINEL_INGESTION_ENDPOINT";
  if (!value) {
    problems.push(`${name} is required (the https logs-ingestion endpoint of the DCR or its data collection endpoint)`);
    // Stryker disable next-line StringLiteral: the settings read alongside a problem are never returned (parseSentinelSettings throws)
    return "";
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    problems.push(`${name} must be an absolute https URL`);
    // Stryker disable next-line StringLiteral: the settings read alongside a problem are never returned (parseSentinelSettings throws)
    return "";
  }
  const before = problems.length;
  // The bearer token goes wherever this points: never over plain HTTP.
  if (url.protocol !== "https:") problems.push(`${name} must use https`);
  if (url.username || url.password || url.search || url.hash) problems.push(`${name} must not carry credentials, a query or a fragment`);
  // The SDK appends /dataCollectionRules/…; a pasted full request URL would be sent twice over.
  if (url.pathname !== "/") problems.push(`${name} must be the endpoint's origin only, without a path`);
  // Stryker disable next-line StringLiteral: the settings read alongside a problem are never returned (parseSentinelSettings throws)
  return problems.length === before ? url.origin : "";
}
