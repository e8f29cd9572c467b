import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { DEFAULT_SPLUNK_SOURCETYPE, parseSplunkSettings, SPLUNK_SETTING_NAMES, splunkSettingsProblems, SplunkSettingsError } from "../../shared/sinks/splunk/settings";

const TOKEN = "0f6c3a7e-41d2-4b8e-9a55-7c2d1e9b3f10";
const valid = { SPLUNK_HEC_URL: "https://splunk.example:8088", SPLUNK_HEC_TOKEN: TOKEN };

/** The problems loadConfig will merge into its own list; parseSplunkSettings throws exactly these. */
const problemsOf = splunkSettingsProblems;

describe("parseSplunkSettings", () => {
  it("reads a minimal valid set with the documented defaults", () => {
    const settings = parseSplunkSettings(valid);
    expect(settings).toEqual({ url: "https://splunk.example:8088", sourcetype: DEFAULT_SPLUNK_SOURCETYPE, ack: false });
    expect(settings.token).toBe(TOKEN);
    expect(settings.index).toBeUndefined();
  });

  it("reads every setting, trimming whitespace and a trailing slash", () => {
    const settings = parseSplunkSettings({
      SPLUNK_HEC_URL: " https://http-inputs-acme.splunkcloud.com/ ",
      SPLUNK_HEC_TOKEN: ` ${TOKEN.toUpperCase()} `,
      SPLUNK_INDEX: "mssp_defender-1",
      SPLUNK_SOURCETYPE: "mssp:defender:alert",
      SPLUNK_HEC_ACK: "TRUE",
    });
    expect(settings).toMatchObject({ url: "https://http-inputs-acme.splunkcloud.com", index: "mssp_defender-1", sourcetype: "mssp:defender:alert", ack: true });
    expect(settings.token).toBe(TOKEN.toUpperCase());
  });

  it("keeps the token out of anything that serialises or prints the settings", () => {
    const settings = parseSplunkSettings(valid);
    expect(JSON.stringify(settings)).not.toContain(TOKEN);
    expect(Object.keys(settings)).not.toContain("token");
    expect(inspect(settings)).not.toContain(TOKEN);
  });

  it("accepts 0/1 and false for SPLUNK_HEC_ACK, and treats blank optional settings as absent", () => {
    expect(parseSplunkSettings({ ...valid, SPLUNK_HEC_ACK: "1" }).ack).toBe(true);
    expect(parseSplunkSettings({ ...valid, SPLUNK_HEC_ACK: "0" }).ack).toBe(false);
    expect(parseSplunkSettings({ ...valid, SPLUNK_HEC_ACK: "false" }).ack).toBe(false);
    const blank = parseSplunkSettings({ ...valid, SPLUNK_INDEX: "  ", SPLUNK_SOURCETYPE: "", SPLUNK_HEC_ACK: " " });
    expect(blank).toEqual({ url: "https://splunk.example:8088", sourcetype: DEFAULT_SPLUNK_SOURCETYPE, ack: false });
  });

  it("reports every problem at once, each naming its setting and never its value", () => {
    const env = {
      SPLUNK_HEC_URL: "http://splunk.example:8088/services/collector?token=abc#x",
      SPLUNK_HEC_TOKEN: "not-a-guid-secret-value",
      SPLUNK_INDEX: "_Internal",
      SPLUNK_SOURCETYPE: "bad\nsourcetype",
      SPLUNK_HEC_ACK: "yes-please",
    };
    const problems = problemsOf(env);
    expect(problems).toHaveLength(7);
    for (const problem of problems) {
      expect(SPLUNK_SETTING_NAMES.some((name) => problem.startsWith(name)), problem).toBe(true);
      for (const value of Object.values(env)) expect(problem).not.toContain(value);
      expect(problem).not.toContain("abc");
    }
    expect(problems.filter((p) => p.startsWith("SPLUNK_HEC_URL"))).toEqual([
      "SPLUNK_HEC_URL must use https",
      "SPLUNK_HEC_URL must not carry credentials, a query or a fragment",
      "SPLUNK_HEC_URL must be an origin only (the app appends /services/collector/...)",
    ]);
    let thrown: unknown;
    try {
      parseSplunkSettings(env);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(SplunkSettingsError);
    expect((thrown as SplunkSettingsError).problems).toEqual(problems);
    expect((thrown as SplunkSettingsError).message).toMatch(/^Invalid Splunk HEC settings:\n- SPLUNK_HEC_URL/);
  });

  it("requires the URL and the token", () => {
    expect(problemsOf({})).toEqual([
      "SPLUNK_HEC_URL is required (the collector's https origin, e.g. https://splunk.example:8088)",
      "SPLUNK_HEC_TOKEN is required (a Key Vault reference to the HEC token in Azure)",
    ]);
    expect(problemsOf({ SPLUNK_HEC_URL: "splunk.example:8088", SPLUNK_HEC_TOKEN: TOKEN })).toEqual(["SPLUNK_HEC_URL must be an absolute https URL"]);
    expect(problemsOf({ SPLUNK_HEC_URL: "http://splunk.example:8088", SPLUNK_HEC_TOKEN: TOKEN })).toEqual(["SPLUNK_HEC_URL must use https"]);
    expect(problemsOf({ SPLUNK_HEC_URL: "not a url", SPLUNK_HEC_TOKEN: TOKEN })).toEqual(["SPLUNK_HEC_URL must be an absolute https URL"]);
    expect(problemsOf({ SPLUNK_HEC_URL: "https://user:pw@splunk.example", SPLUNK_HEC_TOKEN: TOKEN })).toEqual([
      "SPLUNK_HEC_URL must not carry credentials, a query or a fragment",
    ]);
  });

  it("says when App Service left the token's Key Vault reference unresolved, without quoting it", () => {
    const reference = "@Microsoft.KeyVault(SecretUri=https://kv-mssp.vault.azure.net/secrets/splunk-hec-token/)";
    const problems = problemsOf({ ...valid, SPLUNK_HEC_TOKEN: reference });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^SPLUNK_HEC_TOKEN is a Key Vault reference App Service could not resolve/);
    expect(problems[0]).not.toContain("kv-mssp");
  });

  it.each([
    ["main", true],
    ["mssp_defender", true],
    ["0day-alerts", true],
    ["_internal", false],
    ["-x", false],
    ["Main", false],
    ["has space", false],
    ["my_kvstore", false],
    ["a".repeat(81), false],
  ])("SPLUNK_INDEX %s valid: %s", (index, ok) => {
    expect(problemsOf({ ...valid, SPLUNK_INDEX: index }).length === 0).toBe(ok);
  });

  it("refuses an overlong sourcetype", () => {
    expect(problemsOf({ ...valid, SPLUNK_SOURCETYPE: "s".repeat(257) })).toEqual([
      "SPLUNK_SOURCETYPE must be at most 256 characters without control characters",
    ]);
  });
});
