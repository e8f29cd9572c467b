import { parseEventHubsSettings, EventHubsSettingsError, EVENTHUB_SETTING_NAMES, type EventHubsSettings } from "./eventhubs/settings";
import { parseSentinelSettings, SentinelSettingsError, SENTINEL_SETTING_NAMES, type SentinelSettings } from "./sentinel/settings";
import { parseAlertSinks } from "./sinkSettings";
import type { SinkName } from "./sinkSet";
import { parseSplunkSettings, SplunkSettingsError, SPLUNK_SETTING_NAMES, type SplunkSettings } from "./splunk/settings";

/** Which sinks the app delivers to, with the settings of each chosen one. */
export interface SinkConfig {
  names: SinkName[];
  sentinel?: SentinelSettings;
  splunk?: SplunkSettings;
  eventHubs?: EventHubsSettings;
}

/** Every app setting the sinks read (for the settings inventory and the infra drift tests). */
export const SINK_SETTING_NAMES = ["ALERT_SINKS", ...SENTINEL_SETTING_NAMES, ...SPLUNK_SETTING_NAMES, ...EVENTHUB_SETTING_NAMES] as const;

type Env = Readonly<Record<string, string | undefined>>;

/** Settings errors of the sink modules carry one problem per line, each naming its setting. */
function problemsOf(error: unknown): readonly string[] {
  if (error instanceof SentinelSettingsError || error instanceof SplunkSettingsError || error instanceof EventHubsSettingsError) return error.problems;
  throw error;
}

/**
 * Reads ALERT_SINKS and the settings of each sink it names; a sink that is not chosen is not
 * read at all, so its settings may stay empty. Returns every problem instead of throwing, for
 * the app's one list of configuration problems.
 */
export function readSinkConfig(env: Env): { sinks: SinkConfig; problems: string[] } {
  const problems: string[] = [];
  let names: SinkName[];
  try {
    names = parseAlertSinks(env["ALERT_SINKS"]);
  } catch (error) {
    problems.push((error as Error).message);
    names = ["blob"];
  }
  const sinks: SinkConfig = { names };
  const read = <T>(parse: (env: Env) => T): T | undefined => {
    try {
      return parse(env);
    } catch (error) {
      problems.push(...problemsOf(error));
      return undefined;
    }
  };
  if (names.includes("sentinel")) {
    const sentinel = read(parseSentinelSettings);
    if (sentinel) sinks.sentinel = sentinel;
  }
  if (names.includes("splunk")) {
    const splunk = read(parseSplunkSettings);
    if (splunk) sinks.splunk = splunk;
  }
  if (names.includes("eventhubs")) {
    const eventHubs = read(parseEventHubsSettings);
    if (eventHubs) sinks.eventHubs = eventHubs;
  }
  return { sinks, problems };
}
