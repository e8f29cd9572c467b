/**
 * The console's sign-in in Azure (infra/modules/consoleAuth.bicep): App Service authentication with
 * Entra ID, limited to the MSSP's own tenant, leaving consent links and the function-key operator
 * API reachable, and wired from main.bicep with the app registration's client id.
 */
import { describe, expect, it } from "vitest";
import { extractAppSettings } from "./appSettingsText";
import { modules, params, readBicep, resourceBody } from "./bicepText";

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
    // Only ever the NAME of an app setting, never a secret value.
    expect(code).toMatch(/clientSecretSettingName: credentialSettingName$/m);
    expect(code).not.toMatch(/clientSecret:/);
    const allowed = params(auth).find((p) => p.name === "credentialSettingName")?.decorators.find((d) => d.name === "allowed")?.args ?? "";
    expect([...allowed.matchAll(/'([^']*)'/g)].map((m) => m[1]).sort()).toEqual(["MSSP_CLIENT_SECRET", "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID"]);
  });

  it("redeems the sign-in code with the client secret only for the secret credential, else with the managed identity's assertion", () => {
    const mod = modules(main).find((m) => m.path === "modules/consoleAuth.bicep");
    expect(mod?.params.find((entry) => entry.key === "credentialSettingName")?.value).toBe(
      "clientCredentialType == 'secret' ? 'MSSP_CLIENT_SECRET' : 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'",
    );
    // Each setting the sign-in may name exists exactly for the credential types that name it.
    const settings = extractAppSettings();
    const only = (key: string) => settings.find((s) => s.key === key)?.only;
    expect(only("MSSP_CLIENT_SECRET")).toEqual(["secret"]);
    expect([...(only("OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID") ?? [])].sort()).toEqual(["certificate", "managedIdentity"]);
    // The managed identity is the app's own, the one the registration's federated credential trusts.
    expect(settings.find((s) => s.key === "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID")?.value).toBe("identityClientId");
  });
});
