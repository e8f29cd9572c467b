/**
 * The Splunk HTTP Event Collector sink's app settings, validated in one pass. Problems name the
 * setting and never its value: SPLUNK_HEC_TOKEN is a credential, and an unresolved Key Vault
 * reference or a mistyped URL is still something an operator would not want in a log.
 */

export const SPLUNK_SETTING_NAMES = ["SPLUNK_HEC_URL", "SPLUNK_HEC_TOKEN", "SPLUNK_INDEX", "SPLUNK_SOURCETYPE", "SPLUNK_HEC_ACK"] as const;

/**
 * The sourcetype of the Splunk Add-on for Microsoft Security for Defender for Endpoint
 * `/api/alerts` data: the events carry exactly that JSON, so the add-on's search-time field
 * extractions and CIM mappings apply unchanged.
 */
export const DEFAULT_SPLUNK_SOURCETYPE = "ms:defender:atp:alerts";

export interface SplunkSettings {
  /** SPLUNK_HEC_URL: the collector's https origin (`https://host:8088`), no trailing slash. */
  url: string;
  /**
   * SPLUNK_HEC_TOKEN: the HEC token (a GUID). Non-enumerable on the object parseSplunkSettings
   * returns, so serialising or printing the settings leaves it out; read it by name only.
   */
  readonly token: string;
  /** SPLUNK_INDEX; absent: the token's default index. */
  index?: string;
  /** SPLUNK_SOURCETYPE. */
  sourcetype: string;
  /** SPLUNK_HEC_ACK: count an event delivered only once the indexers acknowledge it. */
  ack: boolean;
}

type Env = Readonly<Record<string, string | undefined>>;

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Splunk's rule for index names: lower-case letters, digits, `_` and `-`, not starting with `_` or `-`. */
const INDEX_NAME = /^[a-z0-9][a-z0-9_-]*$/;
const MAX_INDEX_LENGTH = 80;
const MAX_SOURCETYPE_LENGTH = 256;
const CONTROL_CHARACTER = /\p{Cc}/u;

/** App Service leaves a Key Vault reference it could not resolve in place, as literal text. */
const isUnresolvedReference = (value: string): boolean => /^@Microsoft\.KeyVault\(/i.test(value);

function readUrl(value: string | undefined, problems: string[]): string {
  if (value === undefined) {
    problems.push("SPLUNK_HEC_URL is required (the collector's https origin, e.g. https://splunk.example:8088)");
    // Stryker disable next-line StringLiteral: the settings read alongside a problem are never used (parseSplunkSettings throws, splunkSettingsProblems returns only the problems)
    return "";
  }
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  // `splunk.example:8088` parses with `splunk.example:` as its scheme: say what is missing.
  if (url === undefined || (url.protocol !== "https:" && url.protocol !== "http:")) {
    problems.push("SPLUNK_HEC_URL must be an absolute https URL");
    // Stryker disable next-line StringLiteral: the settings read alongside a problem are never used (parseSplunkSettings throws, splunkSettingsProblems returns only the problems)
    return "";
  }
  // The token travels in a header on every request: never in clear text.
  if (url.protocol !== "https:") problems.push("SPLUNK_HEC_URL must use https");
  if (url.username || url.password || url.search || url.hash) {
    problems.push("SPLUNK_HEC_URL must not carry credentials, a query or a fragment");
  }
  if (url.pathname !== "/") problems.push("SPLUNK_HEC_URL must be an origin only (the app appends /services/collector/...)");
  return url.origin;
}

function readToken(value: string | undefined, problems: string[]): string {
  if (value === undefined) problems.push("SPLUNK_HEC_TOKEN is required (a Key Vault reference to the HEC token in Azure)");
  else if (isUnresolvedReference(value)) {
    problems.push("SPLUNK_HEC_TOKEN is a Key Vault reference App Service could not resolve; check the reference's status and the identity's access to the vault");
  } else if (!GUID.test(value)) problems.push("SPLUNK_HEC_TOKEN must be a HEC token (a GUID)");
  // Stryker disable next-line StringLiteral: the settings read alongside a problem are never used (parseSplunkSettings throws, splunkSettingsProblems returns only the problems)
  return value ?? "";
}

function readIndex(value: string | undefined, problems: string[]): string | undefined {
  if (value === undefined) return undefined;
  if (value.length > MAX_INDEX_LENGTH || !INDEX_NAME.test(value) || value.includes("kvstore")) {
    problems.push(`SPLUNK_INDEX must be a Splunk index name: lower-case letters, digits, _ and -, not starting with _ or -, at most ${MAX_INDEX_LENGTH} characters`);
    return undefined;
  }
  return value;
}

function readSourcetype(value: string | undefined, problems: string[]): string {
  const sourcetype = value ?? DEFAULT_SPLUNK_SOURCETYPE;
  if (sourcetype.length > MAX_SOURCETYPE_LENGTH || CONTROL_CHARACTER.test(sourcetype)) {
    problems.push(`SPLUNK_SOURCETYPE must be at most ${MAX_SOURCETYPE_LENGTH} characters without control characters`);
  }
  return sourcetype;
}

function readAck(value: string | undefined, problems: string[]): boolean {
  const text = value?.toLowerCase();
  if (text === undefined || text === "false" || text === "0") return false;
  if (text === "true" || text === "1") return true;
  problems.push("SPLUNK_HEC_ACK must be true or false");
  // Stryker disable next-line BooleanLiteral: the settings read alongside a problem are never used (parseSplunkSettings throws, splunkSettingsProblems returns only the problems)
  return false;
}

/** Every problem with the Splunk settings (empty when they are valid), for a caller that reports all settings at once. */
export function splunkSettingsProblems(env: Env): string[] {
  return read(env).problems;
}

/**
 * Invalid Splunk settings: one line per problem, each starting with the setting it is about.
 * Its own class rather than config.ts's ConfigError, so that config.ts can import this module
 * without a cycle; loadConfig merges `splunkSettingsProblems` into its own list instead.
 */
export class SplunkSettingsError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid Splunk HEC settings:\n- ${problems.join("\n- ")}`);
    this.name = "SplunkSettingsError";
  }
}

/** The Splunk sink's settings; throws a SplunkSettingsError listing every problem, each naming its setting. */
export function parseSplunkSettings(env: Env): SplunkSettings {
  const { settings, problems } = read(env);
  if (problems.length > 0) throw new SplunkSettingsError(problems);
  return settings;
}

function read(env: Env): { settings: SplunkSettings; problems: string[] } {
  const value = (name: (typeof SPLUNK_SETTING_NAMES)[number]): string | undefined => env[name]?.trim() || undefined;
  const problems: string[] = [];
  const url = readUrl(value("SPLUNK_HEC_URL"), problems);
  const token = readToken(value("SPLUNK_HEC_TOKEN"), problems);
  const index = readIndex(value("SPLUNK_INDEX"), problems);
  const settings: SplunkSettings = Object.defineProperty(
    { url, sourcetype: readSourcetype(value("SPLUNK_SOURCETYPE"), problems), ack: readAck(value("SPLUNK_HEC_ACK"), problems), ...(index ? { index } : {}) },
    "token",
    { value: token, enumerable: false },
  ) as SplunkSettings;
  return { settings, problems };
}
