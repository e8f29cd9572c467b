import { describe, expect, it } from "vitest";
import { DEFAULT_SENTINEL_STREAM, parseSentinelSettings, SentinelSettingsError } from "../../shared/sinks/sentinel/settings";

const VALID = {
  SENTINEL_INGESTION_ENDPOINT: "https://mssp-dcr-abcd.westeurope-1.ingest.monitor.azure.com",
  SENTINEL_DCR_IMMUTABLE_ID: "dcr-0123456789abcdef0123456789abcdef",
};

/** The problems reported for these settings (none: an empty list). */
function problemsOf(env: Record<string, string | undefined>): readonly string[] {
  try {
    parseSentinelSettings(env);
    return [];
  } catch (error) {
    if (!(error instanceof SentinelSettingsError)) throw error;
    return error.problems;
  }
}

describe("parseSentinelSettings", () => {
  it("reads the three settings, defaulting the stream", () => {
    expect(parseSentinelSettings(VALID)).toEqual({
      ingestionEndpoint: VALID.SENTINEL_INGESTION_ENDPOINT,
      dcrImmutableId: VALID.SENTINEL_DCR_IMMUTABLE_ID,
      streamName: DEFAULT_SENTINEL_STREAM,
    });
    expect(DEFAULT_SENTINEL_STREAM).toBe("Custom-DefenderAlerts_CL");
    expect(parseSentinelSettings({ ...VALID, SENTINEL_STREAM_NAME: " Custom-Other_CL " }).streamName).toBe("Custom-Other_CL");
    expect(parseSentinelSettings({ ...VALID, SENTINEL_STREAM_NAME: "" }).streamName).toBe(DEFAULT_SENTINEL_STREAM);
  });

  it("keeps only the endpoint's origin (a trailing slash, an explicit port)", () => {
    expect(parseSentinelSettings({ ...VALID, SENTINEL_INGESTION_ENDPOINT: `${VALID.SENTINEL_INGESTION_ENDPOINT}/` }).ingestionEndpoint).toBe(
      VALID.SENTINEL_INGESTION_ENDPOINT,
    );
    expect(parseSentinelSettings({ ...VALID, SENTINEL_INGESTION_ENDPOINT: "https://127.0.0.1:8443" }).ingestionEndpoint).toBe("https://127.0.0.1:8443");
  });

  it("reports every missing setting at once, by name", () => {
    expect(problemsOf({})).toEqual([
      expect.stringMatching(/^SENTINEL_INGESTION_ENDPOINT is required/),
      expect.stringMatching(/^SENTINEL_DCR_IMMUTABLE_ID is required/),
    ]);
    expect(problemsOf({ SENTINEL_INGESTION_ENDPOINT: "  ", SENTINEL_DCR_IMMUTABLE_ID: "" })).toHaveLength(2);
  });

  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ["a plain-HTTP endpoint", { SENTINEL_INGESTION_ENDPOINT: "http://dce.example.com" }, /^SENTINEL_INGESTION_ENDPOINT must use https$/],
    ["an endpoint that is no URL", { SENTINEL_INGESTION_ENDPOINT: "dce.ingest.monitor.azure.com" }, /^SENTINEL_INGESTION_ENDPOINT must be an absolute https URL$/],
    ["an endpoint with credentials", { SENTINEL_INGESTION_ENDPOINT: "https://user:pw@dce.example.com" }, /^SENTINEL_INGESTION_ENDPOINT must not carry/],
    ["an endpoint with a query", { SENTINEL_INGESTION_ENDPOINT: "https://dce.example.com/?api-version=2023-01-01" }, /^SENTINEL_INGESTION_ENDPOINT must not carry/],
    [
      "the full request URL instead of the endpoint",
      { SENTINEL_INGESTION_ENDPOINT: "https://dce.example.com/dataCollectionRules/dcr-0123456789abcdef0123456789abcdef/streams/Custom-X" },
      /^SENTINEL_INGESTION_ENDPOINT must be the endpoint's origin only/,
    ],
    [
      "the DCR's resource id instead of its immutable id",
      { SENTINEL_DCR_IMMUTABLE_ID: "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Insights/dataCollectionRules/dcr" },
      /^SENTINEL_DCR_IMMUTABLE_ID must be dcr- and 32 hex digits/,
    ],
    ["an immutable id of the wrong length", { SENTINEL_DCR_IMMUTABLE_ID: "dcr-0123456789abcdef" }, /^SENTINEL_DCR_IMMUTABLE_ID must be dcr- and 32 hex digits/],
    ["an immutable id with other characters", { SENTINEL_DCR_IMMUTABLE_ID: "dcr-0123456789abcdef0123456789abcdeg" }, /^SENTINEL_DCR_IMMUTABLE_ID must be/],
    ["a stream without Custom-", { SENTINEL_STREAM_NAME: "DefenderAlerts_CL" }, /^SENTINEL_STREAM_NAME must start with Custom-/],
    ["a Microsoft- stream", { SENTINEL_STREAM_NAME: "Microsoft-SecurityEvent" }, /^SENTINEL_STREAM_NAME must start with Custom-/],
    ["a stream with spaces", { SENTINEL_STREAM_NAME: "Custom-Defender Alerts" }, /^SENTINEL_STREAM_NAME must be Custom- followed by/],
  ];
  for (const [what, change, message] of cases) {
    it(`refuses ${what}, naming the setting and never its value`, () => {
      const env = { ...VALID, ...change };
      const problems = problemsOf(env);
      expect(problems).toEqual([expect.stringMatching(message)]);
      for (const value of Object.values(change)) expect(problems.join("\n")).not.toContain(value);
      expect(() => parseSentinelSettings(env)).toThrow(SentinelSettingsError);
    });
  }

  it("reports problems with several settings together", () => {
    const problems = problemsOf({ SENTINEL_INGESTION_ENDPOINT: "http://x", SENTINEL_DCR_IMMUTABLE_ID: "nope", SENTINEL_STREAM_NAME: "Alerts" });
    expect(problems.map((problem) => problem.split(" ")[0])).toEqual(["SENTINEL_INGESTION_ENDPOINT", "SENTINEL_DCR_IMMUTABLE_ID", "SENTINEL_STREAM_NAME"]);
  });

  it("carries the problems in the error's message, one a line", () => {
    expect(() => parseSentinelSettings({})).toThrow(/Invalid Microsoft Sentinel settings:\n- SENTINEL_INGESTION_ENDPOINT is required/);
  });
});
