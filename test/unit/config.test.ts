import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  APP_SETTING_NAMES,
  ConfigError,
  DEFAULT_PULL_SCHEDULE,
  LOCAL_DEV_SETTING_NAMES,
  loadConfig,
  pullScheduleForRegistration,
} from "../../shared/config";
import { checkSettingsAtStart, misconfiguredBody } from "../../shared/health/misconfiguration";
import { ncrontabProblem, parseNcrontab } from "../../shared/health/ncrontab";
import { APP_VERSION } from "../../shared/version";

const valid = {
  MSSP_CLIENT_ID: "11111111-2222-3333-4444-555555555555",
  MSSP_CLIENT_SECRET: "s3cret-value",
  MSSP_TENANT_ID: "66666666-7777-8888-9999-000000000000",
  MSSP_PUBLIC_BASE_URL: "https://mssp-connector.azurewebsites.net/",
  KEY_VAULT_URL: "https://kv-mssp.vault.azure.net",
  AzureWebJobsStorage: "UseDevelopmentStorage=true",
};

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  return [];
}

describe("loadConfig", () => {
  it("reads a minimal valid set with documented defaults", () => {
    const config = loadConfig(valid);
    expect(config.redirectUri).toBe("https://mssp-connector.azurewebsites.net/api/consent/callback");
    expect(config.entraAuthorityHost).toBe("https://login.microsoftonline.com");
    expect(config.defenderApiBaseUrl).toBe("https://api.security.microsoft.com");
    expect(config.pull).toMatchObject({ schedule: "0 */5 * * * *", alertsContainer: "alerts", overlapMinutes: 10, refreshTokenPersistAgeHours: 24 });
  });

  it("reports every missing or invalid setting at once, by name, without echoing values", () => {
    const problems = problemsOf({
      MSSP_CLIENT_ID: "not-a-guid",
      MSSP_PUBLIC_BASE_URL: "http://evil.example",
      KEY_VAULT_URL: "https://kv.vault.azure.net?x=1",
      PULL_OVERLAP_MINUTES: "-3",
      ALERTS_CONTAINER: "Bad_Name",
    });
    const text = problems.join("\n");
    for (const name of ["MSSP_CLIENT_ID", "MSSP_CLIENT_SECRET", "MSSP_TENANT_ID", "MSSP_PUBLIC_BASE_URL", "KEY_VAULT_URL", "AzureWebJobsStorage", "PULL_OVERLAP_MINUTES", "ALERTS_CONTAINER"]) {
      expect(text).toContain(name);
    }
    expect(text).not.toContain("evil.example");
    expect(problems.length).toBeGreaterThanOrEqual(8);
  });

  it("accepts the identity-based storage form used in Azure", () => {
    const { AzureWebJobsStorage: _omit, ...rest } = valid;
    const config = loadConfig({ ...rest, AzureWebJobsStorage__accountName: "stmssp", AzureWebJobsStorage__credential: "managedidentity", AZURE_CLIENT_ID: "abc" });
    expect(config.storage).toEqual({
      kind: "identity",
      blobServiceUri: "https://stmssp.blob.core.windows.net",
      queueServiceUri: "https://stmssp.queue.core.windows.net",
      tableServiceUri: "https://stmssp.table.core.windows.net",
      managedIdentityClientId: "abc",
    });
  });

  it("refuses local-development settings when running in Azure", () => {
    const problems = problemsOf({ ...valid, LOCAL_DEV_VAULT_TOKEN: "x", WEBSITE_INSTANCE_ID: "abc" });
    expect(problems.join()).toContain("LOCAL_DEV_");
  });

  describe("LOCAL_DEV_SIGN_IN_BASE_URL", () => {
    const setting = "LOCAL_DEV_SIGN_IN_BASE_URL";

    it("is absent unless set, and listed among the local-development settings", () => {
      expect(loadConfig(valid).localDev.signInBaseUrl).toBeUndefined();
      expect(LOCAL_DEV_SETTING_NAMES).toContain(setting);
      expect(APP_SETTING_NAMES as readonly string[]).not.toContain(setting);
    });

    it("accepts http on loopback and any https origin, without a trailing slash", () => {
      expect(loadConfig({ ...valid, [setting]: "http://127.0.0.1:53123/" }).localDev.signInBaseUrl).toBe("http://127.0.0.1:53123");
      expect(loadConfig({ ...valid, [setting]: "http://localhost:8080" }).localDev.signInBaseUrl).toBe("http://localhost:8080");
      expect(loadConfig({ ...valid, [setting]: "https://login.sandbox.example" }).localDev.signInBaseUrl).toBe("https://login.sandbox.example");
    });

    it("must be http on loopback or https, an origin without path, query or credentials", () => {
      for (const bad of ["http://login.sandbox.example:8080", "ftp://127.0.0.1", "127.0.0.1:8080", "http://127.0.0.1:8080/common", "http://127.0.0.1:8080/?x=1", "https://u:p@login.example"]) {
        const problems = problemsOf({ ...valid, [setting]: bad });
        expect(problems.join("\n"), bad).toContain(setting);
        expect(problems.join("\n"), bad).not.toContain(bad);
      }
    });

    it("is refused when running in Azure", () => {
      const problems = problemsOf({ ...valid, [setting]: "http://127.0.0.1:53123", WEBSITE_INSTANCE_ID: "abc" });
      expect(problems).toHaveLength(1);
      expect(problems[0]).toContain("must not be set in Azure");
      expect(problems[0]).toContain(setting);
    });
  });

  it("keeps APP_VERSION equal to package.json", () => {
    const pkg = JSON.parse(readFileSync(join(__dirname, "..", "..", "package.json"), "utf8")) as { version: string };
    expect(APP_VERSION).toBe(pkg.version);
  });
});

describe("ConfigError", () => {
  it("names the settings of every problem, so a 503 can list them without any value", () => {
    const error = (() => {
      try {
        loadConfig({ ...valid, MSSP_CLIENT_ID: "not-a-guid", PULL_PAGE_SIZE: "0", LOCAL_DEV_VAULT_TOKEN: "tok-value", LOCAL_DEV_SANDBOX: "true", WEBSITE_INSTANCE_ID: "x" });
      } catch (caught) {
        return caught;
      }
      throw new Error("expected a ConfigError");
    })();
    expect(error).toBeInstanceOf(ConfigError);
    const configError = error as ConfigError;
    // The message format is unchanged: one line per problem, each starting with its setting.
    expect(configError.message).toBe(`Invalid app settings:\n- ${configError.problems.join("\n- ")}`);
    expect(configError.details.map((d) => d.setting)).toEqual(["MSSP_CLIENT_ID", "PULL_PAGE_SIZE", "LOCAL_DEV_VAULT_TOKEN"]);
    // One problem about two settings names both.
    expect(configError.details[2]?.settings).toEqual(["LOCAL_DEV_VAULT_TOKEN", "LOCAL_DEV_SANDBOX"]);
    expect(configError.settings).toEqual(["MSSP_CLIENT_ID", "PULL_PAGE_SIZE", "LOCAL_DEV_VAULT_TOKEN", "LOCAL_DEV_SANDBOX"]);
    const body = JSON.stringify(misconfiguredBody(configError, "inv-1"));
    expect(JSON.parse(body)).toMatchObject({ error: { code: "misconfigured", settings: configError.settings } });
    for (const value of ["not-a-guid", "tok-value"]) expect(body).not.toContain(value);
  });

  it("maps every problem of a thoroughly broken environment to at least one setting name", () => {
    const problems = (() => {
      try {
        loadConfig({ PULL_SCHEDULE: "nope", ALERTS_CONTAINER: "A", MDE_PARTNER_COMPANY: "a b", PULL_EXPAND_EVIDENCE: "maybe", MSSP_DISPLAY_NAME: "x".repeat(101) });
      } catch (caught) {
        return (caught as ConfigError).details;
      }
      return [];
    })();
    expect(problems.length).toBeGreaterThan(8);
    for (const problem of problems) expect(problem.setting, problem.message).not.toBe("");
  });

  it("is reported once per process by the start check, naming every problem", () => {
    const lines: string[] = [];
    const broken = { ...valid, MSSP_CLIENT_ID: "not-a-guid", PULL_SCHEDULE: "0 0 */99 * * *" };
    expect(checkSettingsAtStart((line) => lines.push(line), broken)).toBeInstanceOf(ConfigError);
    expect(checkSettingsAtStart((line) => lines.push(line), broken)).toBeInstanceOf(ConfigError);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("MSSP_CLIENT_ID");
    expect(lines[0]).toContain("PULL_SCHEDULE");
    expect(lines[0]).not.toContain("not-a-guid");
    expect(checkSettingsAtStart(() => undefined, valid)).toBeUndefined();
  });
});

describe("placeholders from local.settings.example.json", () => {
  const example = JSON.parse(readFileSync(join(__dirname, "..", "..", "local.settings.example.json"), "utf8")) as { Values: Record<string, string> };

  it("refuses each placeholder by name, once, without echoing it", () => {
    const problems = problemsOf(example.Values);
    const placeholderProblems = problems.filter((p) => p.includes("placeholder"));
    expect(placeholderProblems.map((p) => p.split(" ")[0]).sort()).toEqual(["KEY_VAULT_URL", "MSSP_CLIENT_ID", "MSSP_CLIENT_SECRET", "MSSP_TENANT_ID"]);
    // Nothing else is wrong with the example, and no placeholder is reported twice ("is required").
    expect(problems).toEqual(placeholderProblems);
    const text = problems.join("\n");
    expect(text).not.toContain("<your-vault>");
    expect(text).not.toContain("client secret of the MSSP");
  });

  it("accepts the example once the placeholders are replaced", () => {
    expect(problemsOf({ ...example.Values, ...valid })).toEqual([]);
  });

  it("refuses an all-zero GUID and a <…> placeholder in any setting, but not angle brackets in the display name", () => {
    expect(problemsOf({ ...valid, AZURE_CLIENT_ID: "00000000-0000-0000-0000-000000000000" })[0]).toMatch(/^AZURE_CLIENT_ID .*placeholder/);
    expect(problemsOf({ ...valid, AzureWebJobsStorage: "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=<key>" })).toEqual([
      expect.stringMatching(/^AzureWebJobsStorage .*placeholder/),
    ]);
    expect(problemsOf({ ...valid, MSSP_DISPLAY_NAME: "Contoso <Security>" })).toEqual([]);
  });

  it("refuses a Key Vault reference App Service could not resolve", () => {
    const problems = problemsOf({ ...valid, MSSP_CLIENT_SECRET: "@Microsoft.KeyVault(VaultName=kv-mssp;SecretName=mssp-client-secret)" });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^MSSP_CLIENT_SECRET is a Key Vault reference App Service could not resolve/);
    expect(problems[0]).not.toContain("kv-mssp");
  });
});

describe("PULL_SCHEDULE (NCRONTAB, as the Functions host parses it)", () => {
  const accepted = [
    "0 */5 * * * *",
    "0 0 * * * *",
    "*/20 * * * * *",
    "0 30 9 * * Mon-Fri",
    "0 30 9 * * 1-5",
    "0 0 0 1 Jan,Jul *",
    "0 0 12 * * sun",
    "0 0 12 * * Thursday",
    "5,10,15 0 0 * * *",
    "0 5/15 * * * *",
    "0 0 1-23/2 * * *",
    "0 0 */23 * * *",
    "59 59 23 31 12 6",
    "0 0 0 29 2 *",
    "0 0 0 30-31 2,4 *",
    "00 05 * * * *",
    "  0   */5  *  *  *  *  ",
  ];
  const refused: Array<[string, RegExp]> = [
    ["0 0 */99 * * *", /step 99 of the hour field must be from 1 to 23/],
    ["*/0 * * * * *", /step 0 of the second field/],
    ["0 */60 * * * *", /step 60 of the minute field/],
    ["*/5 * * * *", /5 fields, not six/],
    ["0 0 0 * * * *", /7 fields, not six/],
    ["", /0 fields/],
    ["00:05:00", /1 field, not six/],
    ["60 * * * * *", /60 is outside the second field's range \(0-59\)/],
    ["0 0 24 * * *", /24 is outside the hour field's range/],
    ["0 0 0 0 * *", /0 is outside the day field's range \(1-31\)/],
    ["0 0 0 * 13 *", /13 is outside the month field's range/],
    ["0 0 0 * * 7", /7 is outside the day-of-week field's range \(0-6\)/],
    ["0 0 22-2 * * *", /must ascend/],
    ["0 0 0 * * Mo", /at least three letters/],
    ["0 0 0 * * Fun", /unknown name/],
    ["0 0 0 * Mon *", /unknown name/],
    ["0 0 0 Mon * *", /takes numbers 1-31/],
    ["0 0 0 L * *", /takes numbers/],
    ["0 0 0 ? * *", /takes numbers/],
    ["0 0 0 * * 1#2", /takes numbers/],
    ["0 1,,2 * * * *", /empty list element/],
    ["0 /5 * * * *", /malformed step/],
    ["0 */5/2 * * * *", /malformed step/],
    ["0 1-2-3 * * * *", /malformed range/],
    ["0 -1 * * * *", /malformed range/],
    ["0 *-5 * * * *", /takes numbers/],
    ["0 0 0 31 2 *", /never fire/],
    ["0 0 0 31 2,4,6,9,11 *", /never fire/],
    ["0 0 0 30,31 Feb *", /never fire/],
  ];

  it.each(accepted)("accepts %j", (expression) => {
    expect(ncrontabProblem(expression)).toBeUndefined();
    expect(problemsOf({ ...valid, PULL_SCHEDULE: expression })).toEqual([]);
  });

  it.each(refused)("refuses %j", (expression, reason) => {
    expect(ncrontabProblem(expression)).toMatch(reason);
    if (expression.trim() === "") return; // an empty setting is "not set": the default applies
    const problems = problemsOf({ ...valid, PULL_SCHEDULE: expression });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^PULL_SCHEDULE must be a six-field NCRONTAB expression/);
  });

  it("selects what the host selects", () => {
    expect(parseNcrontab("0 5/15 */6 * Feb-Apr Mon-Wed")).toEqual({
      fields: [[0], [5, 20, 35, 50], [0, 6, 12, 18], Array.from({ length: 31 }, (_, i) => i + 1), [2, 3, 4], [1, 2, 3]],
    });
  });

  it("registers the timer with PULL_SCHEDULE only when the host can run it", () => {
    expect(pullScheduleForRegistration({ PULL_SCHEDULE: " 0 0 * * * * " })).toBe("0 0 * * * *");
    expect(pullScheduleForRegistration({ PULL_SCHEDULE: "0 0 */99 * * *" })).toBe(DEFAULT_PULL_SCHEDULE);
    expect(pullScheduleForRegistration({})).toBe(DEFAULT_PULL_SCHEDULE);
  });
});

describe("notification settings (NOTIFY_*)", () => {
  const url = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers&sv=1.0&sig=s1gnature";

  it("are off without NOTIFY_WEBHOOK_URL, whatever the other two say", () => {
    expect(loadConfig(valid).notifications).toBeUndefined();
    expect(loadConfig({ ...valid, NOTIFY_WEBHOOK_FORMAT: "teams", NOTIFY_MIN_SEVERITY: "Low" }).notifications).toBeUndefined();
    expect(loadConfig({ ...valid, NOTIFY_WEBHOOK_URL: "  " }).notifications).toBeUndefined();
  });

  it("default to json and High, read format and severity in any case, and keep the URL's signed query", () => {
    expect(loadConfig({ ...valid, NOTIFY_WEBHOOK_URL: url }).notifications).toEqual({ webhookUrl: url, format: "json", minSeverity: "High" });
    expect(loadConfig({ ...valid, NOTIFY_WEBHOOK_URL: url, NOTIFY_WEBHOOK_FORMAT: "Teams", NOTIFY_MIN_SEVERITY: "medium" }).notifications).toMatchObject({
      format: "teams",
      minSeverity: "Medium",
    });
    expect(loadConfig({ ...valid, NOTIFY_WEBHOOK_URL: "https://hooks.slack.com/services/T0/B0/xyz", NOTIFY_WEBHOOK_FORMAT: "slack" }).notifications?.format).toBe("slack");
  });

  it("refuse a bad format or severity by name, with or without a URL", () => {
    expect(problemsOf({ ...valid, NOTIFY_WEBHOOK_FORMAT: "discord" })).toEqual(["NOTIFY_WEBHOOK_FORMAT must be teams, slack or json"]);
    expect(problemsOf({ ...valid, NOTIFY_WEBHOOK_URL: url, NOTIFY_MIN_SEVERITY: "Critical" })).toEqual([
      "NOTIFY_MIN_SEVERITY must be one of Informational, Low, Medium, High",
    ]);
  });

  it("refuse a webhook URL that is not https, carries credentials or a fragment, is too long or not a URL, never echoing it", () => {
    const cases: Array<[string, RegExp]> = [
      ["http://hooks.example.test/x?sig=leak1", /^NOTIFY_WEBHOOK_URL must use https$/],
      ["https://user:leak2@hooks.example.test/x", /^NOTIFY_WEBHOOK_URL must not carry a user name or password$/],
      ["https://hooks.example.test/x#leak3", /^NOTIFY_WEBHOOK_URL must not carry a fragment$/],
      [`https://hooks.example.test/${"a".repeat(2048)}leak4`, /^NOTIFY_WEBHOOK_URL must be at most 2048 characters$/],
      ["hooks.example.test/leak5", /^NOTIFY_WEBHOOK_URL must be an absolute https URL$/],
      ["@Microsoft.KeyVault(VaultName=kv;SecretName=leak6)", /^NOTIFY_WEBHOOK_URL is a Key Vault reference App Service could not resolve/],
    ];
    for (const [value, expected] of cases) {
      const problems = problemsOf({ ...valid, NOTIFY_WEBHOOK_URL: value });
      expect(problems, value).toEqual([expect.stringMatching(expected)]);
      expect(problems.join("\n")).not.toMatch(/leak\d/);
    }
    const error = (() => {
      try {
        loadConfig({ ...valid, NOTIFY_WEBHOOK_URL: "http://hooks.example.test/x" });
      } catch (caught) {
        return caught as ConfigError;
      }
      throw new Error("expected a ConfigError");
    })();
    expect(error.settings).toEqual(["NOTIFY_WEBHOOK_URL"]);
  });

  it("are listed among the app settings", () => {
    for (const name of ["NOTIFY_WEBHOOK_URL", "NOTIFY_WEBHOOK_FORMAT", "NOTIFY_MIN_SEVERITY"]) {
      expect(APP_SETTING_NAMES as readonly string[]).toContain(name);
    }
  });
});
