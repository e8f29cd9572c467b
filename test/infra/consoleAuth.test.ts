/**
 * The console's sign-in in Azure (infra/modules/consoleAuth.bicep): App Service authentication with
 * Entra ID, limited to the MSSP's own tenant, leaving consent links and the function-key operator
 * API reachable, and wired from main.bicep with the app registration's client id.
 */
import { describe, expect, it } from "vitest";
import { modules, readBicep, resourceBody } from "./bicepText";

const main = readBicep("main.bicep");
const auth = readBicep("modules/consoleAuth.bicep");
const code = auth.code;

describe("console sign-in (App Service authentication)", () => {
  it("is configured by main.bicep for the function app with the MSSP app registration", () => {
    const mod = modules(main).find((m) => m.path === "modules/consoleAuth.bicep");
    expect(mod).toBeDefined();
    const param = (key: string) => mod?.params.find((entry) => entry.key === key)?.value;
    expect(param("functionAppName")).toBe("functionApp.outputs.name");
    expect(param("clientId")).toBe("clientId");
    expect(param("msspTenantId")).toBe("tenant().tenantId");
  });

  it("signs staff in with Entra ID of the MSSP tenant only, and lets anonymous consent and key-based API calls through", () => {
    expect(resourceBody(auth, "auth").type).toBe("Microsoft.Web/sites/config@2024-04-01");
    expect(code).toMatch(/name: 'authsettingsV2'/);
    // Only when an app registration exists: without one the app refuses to serve the console.
    expect(code).toMatch(/resource auth 'Microsoft\.Web\/sites\/config@2024-04-01' = if \(!empty\(clientId\)\)/);
    expect(code).toMatch(/openIdIssuer: '\$\{environment\(\)\.authentication\.loginEndpoint\}\$\{msspTenantId\}\/v2\.0'/);
    expect(code).toMatch(/requireAuthentication: false/);
    expect(code).toMatch(/unauthenticatedClientAction: 'AllowAnonymous'/);
    expect(code).toMatch(/requireHttps: true/);
    // The secret stays a Key Vault reference behind the existing app setting; never a literal.
    expect(code).toMatch(/clientSecretSettingName: 'MSSP_CLIENT_SECRET'/);
    expect(code).not.toMatch(/clientSecret:/);
  });
});
