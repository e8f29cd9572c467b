import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../shared/config";
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

  it("keeps APP_VERSION equal to package.json", () => {
    const pkg = JSON.parse(readFileSync(join(__dirname, "..", "..", "package.json"), "utf8")) as { version: string };
    expect(APP_VERSION).toBe(pkg.version);
  });
});
