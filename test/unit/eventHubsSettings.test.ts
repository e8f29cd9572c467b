import { describe, expect, it } from "vitest";
import { EventHubsSettingsError, parseEventHubsSettings } from "../../shared/sinks/eventhubs/settings";

const VALID = { EVENTHUB_FULLY_QUALIFIED_NAMESPACE: "contoso-siem.servicebus.windows.net", EVENTHUB_NAME: "mssp-defender-alerts" };

/** The problems parseEventHubsSettings reports for these settings (none: it returned). */
function problemsOf(env: Record<string, string | undefined>): readonly string[] {
  try {
    parseEventHubsSettings(env);
  } catch (error) {
    if (error instanceof EventHubsSettingsError) return error.problems;
    throw error;
  }
  return [];
}

describe("parseEventHubsSettings", () => {
  it("reads the namespace host and the hub name, trimmed, the host lower-cased", () => {
    expect(parseEventHubsSettings(VALID)).toEqual({ fullyQualifiedNamespace: "contoso-siem.servicebus.windows.net", eventHubName: "mssp-defender-alerts" });
    expect(parseEventHubsSettings({ EVENTHUB_FULLY_QUALIFIED_NAMESPACE: " Contoso-SIEM.servicebus.chinacloudapi.cn ", EVENTHUB_NAME: " a_b.c-1 " })).toEqual({
      fullyQualifiedNamespace: "contoso-siem.servicebus.chinacloudapi.cn",
      eventHubName: "a_b.c-1",
    });
    // A hub name may be a single character.
    expect(parseEventHubsSettings({ ...VALID, EVENTHUB_NAME: "x" }).eventHubName).toBe("x");
  });

  it("reports both missing settings at once, each by name", () => {
    const problems = problemsOf({});
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^EVENTHUB_FULLY_QUALIFIED_NAMESPACE is required/);
    expect(problems[1]).toMatch(/^EVENTHUB_NAME is required/);
    expect(problemsOf({ EVENTHUB_FULLY_QUALIFIED_NAMESPACE: "   ", EVENTHUB_NAME: "" })).toHaveLength(2);
  });

  it.each([
    ["sb://contoso.servicebus.windows.net/", "without scheme"],
    ["https://contoso.servicebus.windows.net", "without scheme"],
    ["contoso.servicebus.windows.net:5671", "without scheme, port or path"],
    ["contoso.servicebus.windows.net/hub", "without scheme, port or path"],
    ["contoso", "host name such as"],
    ["-contoso.servicebus.windows.net", "host name such as"],
    ["contoso..servicebus.windows.net", "host name such as"],
    ["<namespace>.servicebus.windows.net", "host name such as"],
    [`${"a".repeat(64)}.servicebus.windows.net`, "host name such as"],
  ])("refuses the namespace %s", (value, what) => {
    const problems = problemsOf({ ...VALID, EVENTHUB_FULLY_QUALIFIED_NAMESPACE: value });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^EVENTHUB_FULLY_QUALIFIED_NAMESPACE must /);
    expect(problems[0]).toContain(what);
  });

  it("explains that a connection string cannot be used, and never echoes it", () => {
    const key = "c2VjcmV0LWtleS12YWx1ZS10aGF0LW11c3Qtbm90LWxlYWs=";
    const connectionString = `Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=${key};EntityPath=alerts`;
    let thrown: unknown;
    try {
      parseEventHubsSettings({ ...VALID, EVENTHUB_FULLY_QUALIFIED_NAMESPACE: connectionString, EVENTHUB_NAME: connectionString });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(EventHubsSettingsError);
    const error = thrown as EventHubsSettingsError;
    expect(error.problems[0]).toMatch(/^EVENTHUB_FULLY_QUALIFIED_NAMESPACE must be the namespace's host name only, not a connection string/);
    expect(error.problems[1]).toMatch(/^EVENTHUB_NAME must be/);
    for (const text of [error.message, ...error.problems]) {
      expect(text).not.toContain(key);
      expect(text).not.toContain("SharedAccessKeyName=send");
    }
  });

  it.each(["-alerts", "alerts-", "al/erts", "al erts", "a".repeat(257), "alerts$"])("refuses the hub name %s", (value) => {
    const problems = problemsOf({ ...VALID, EVENTHUB_NAME: value });
    expect(problems).toEqual([
      "EVENTHUB_NAME must be 1-256 letters, digits, periods, hyphens or underscores, starting and ending with a letter or digit",
    ]);
  });

  it("accepts a 256-character hub name and a 253-character host", () => {
    const host = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`;
    expect(host).toHaveLength(253);
    expect(problemsOf({ EVENTHUB_FULLY_QUALIFIED_NAMESPACE: host, EVENTHUB_NAME: "h".repeat(256) })).toEqual([]);
    expect(problemsOf({ EVENTHUB_FULLY_QUALIFIED_NAMESPACE: `${host}e`, EVENTHUB_NAME: "h" })).toHaveLength(1);
  });
});
