import { SINK_NAMES, type SinkName } from "./sinkSet";

/**
 * `ALERT_SINKS`: a comma-separated list of sinks, default `blob`. Order does not matter and a
 * name listed twice counts once; an unknown name is an error naming the setting, so a typo is
 * found at start-up, not as alerts that never arrive.
 */
export function parseAlertSinks(value: string | undefined): SinkName[] {
  const raw = (value ?? "").trim();
  if (raw === "") return ["blob"];
  if (raw.length > 200) throw new Error("ALERT_SINKS is longer than any list of the known sinks");
  const names = raw.split(",").map((name) => name.trim().toLowerCase());
  const unknown = names.filter((name) => !(SINK_NAMES as readonly string[]).includes(name));
  if (unknown.length > 0 || names.includes("")) {
    throw new Error(`ALERT_SINKS must list some of ${SINK_NAMES.join(", ")}, separated by commas`);
  }
  // In the documented order, whatever order they were listed in: health and logs read alike everywhere.
  return SINK_NAMES.filter((name) => names.includes(name));
}
