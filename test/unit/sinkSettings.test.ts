import { describe, expect, it } from "vitest";
import { parseAlertSinks } from "../../shared/sinks/sinkSettings";

describe("ALERT_SINKS", () => {
  it("defaults to the blob sink", () => {
    expect(parseAlertSinks(undefined)).toEqual(["blob"]);
    expect(parseAlertSinks("  ")).toEqual(["blob"]);
  });

  it("reads several sinks in any order and case, each once, in the documented order", () => {
    expect(parseAlertSinks("Splunk, blob,sentinel ,splunk")).toEqual(["blob", "sentinel", "splunk"]);
    expect(parseAlertSinks("eventhubs")).toEqual(["eventhubs"]);
  });

  it("refuses an unknown or empty name, naming the setting and never echoing the value", () => {
    for (const value of ["blob,elastic", "blob,,splunk", "sentinal", "x".repeat(300)]) {
      let message = "";
      try {
        parseAlertSinks(value);
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toMatch(/^ALERT_SINKS /);
      expect(message).not.toMatch(/elastic|sentinal|xxxx/);
    }
  });
});
