import { describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";

/**
 * LOCAL_DEV_SANDBOX opens the console without sign-in, so it must never take effect where the app
 * is hosted (found by a security review: an empty WEBSITE_INSTANCE_ID masked WEBSITE_SITE_NAME, and
 * Container Apps / Kubernetes hosts were not recognised).
 */
const HOSTED_LIKE = {
  MSSP_CLIENT_ID: "00000000-0000-4000-8000-000000000001",
  MSSP_CLIENT_SECRET: "not-a-real-secret",
  MSSP_TENANT_ID: "00000000-0000-4000-8000-000000000002",
  MSSP_PUBLIC_BASE_URL: "https://mssp-func.azurewebsites.net",
  KEY_VAULT_URL: "https://kv.vault.azure.net/",
  AzureWebJobsStorage: "UseDevelopmentStorage=true",
  LOCAL_DEV_SANDBOX: "true",
};

describe("LOCAL_DEV_SANDBOX", () => {
  it.each([
    { WEBSITE_SITE_NAME: "mssp-func" },
    { WEBSITE_INSTANCE_ID: "", WEBSITE_SITE_NAME: "mssp-func" },
    { WEBSITE_SKU: "FlexConsumption" },
    { CONTAINER_APP_NAME: "mssp-func" },
  ])("is refused on a hosting platform (%o)", (signals) => {
    expect(() => loadConfig({ ...HOSTED_LIKE, ...signals })).toThrow(/LOCAL_DEV_\* settings are for local development only[^\n]*LOCAL_DEV_SANDBOX/);
  });

  it("is refused whenever the public base URL is not http on loopback, whatever the host says (a container, Kubernetes)", () => {
    for (const signals of [{}, { CONTAINER_NAME: "c1" }, { KUBERNETES_SERVICE_HOST: "10.0.0.1" }]) {
      expect(() => loadConfig({ ...HOSTED_LIKE, ...signals })).toThrow(/LOCAL_DEV_SANDBOX requires MSSP_PUBLIC_BASE_URL to be http on localhost/);
    }
  });

  it("is accepted on a developer machine serving http://localhost", () => {
    expect(loadConfig({ ...HOSTED_LIKE, MSSP_PUBLIC_BASE_URL: "http://localhost:7071" }).localDev.sandbox).toBe(true);
    // Names reserved for testing never resolve publicly (the test suite's connector.example.test).
    expect(loadConfig({ ...HOSTED_LIKE, MSSP_PUBLIC_BASE_URL: "https://connector.example.test" }).localDev.sandbox).toBe(true);
  });
});
