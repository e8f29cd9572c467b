import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { APP_SETTING_NAMES, ConfigError, LOCAL_DEV_SETTING_NAMES, loadConfig } from "../../shared/config";
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
