/**
 * Drift between the app settings Bicep deploys and the settings the config module reads
 * (APP_SETTING_NAMES in shared/config.ts), in both directions.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { REQUIRED_SETTINGS } from "./requiredSettings";
import {
  APP_SETTING_NAMES,
  DEFAULT_NOTIFY_FORMAT,
  DEFAULT_NOTIFY_MIN_SEVERITY,
  LOCAL_DEV_SETTING_NAMES,
  loadConfig,
} from "../../shared/config";
import { type ScannedBicep, INFRA_DIR, listBicepFiles, listInfraFiles, literal, modules, params, readBicep } from "./bicepText";
import { credentialBranches, extractAppSettings, settingsFor } from "./appSettingsText";

/**
 * Settings Bicep sets that the config module does not read: platform settings consumed by the
 * Functions host / Application Insights agent, not by app code.
 */
const PLATFORM_SETTINGS = [
  "APPLICATIONINSIGHTS_CONNECTION_STRING",
  "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
  // App Service authentication (the console's sign-in) redeems its code with this managed
  // identity's assertion instead of a client secret (infra/modules/consoleAuth.bicep).
  "OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID",
  // Read by glibc's malloc when the Node worker starts (docs/performance.md; the bench's backlog
  // children get the same value from the Bicep).
  "MALLOC_MMAP_THRESHOLD_",
] as const;

/**
 * Settings the config module reads that Bicep deliberately does NOT set. Keep this minimal: a
 * deployment replaces all app settings, so anything missing here can't be tuned durably in Azure.
 */
const CONFIG_SETTINGS_NOT_IN_BICEP: Record<string, string> = {
  // Connection-string form of the host storage: local development (Azurite) only. In Azure the
  // app is keyless (allowSharedKeyAccess: false), so a connection string could not work anyway.
  AzureWebJobsStorage: "connection-string form; local development only",
  // Alternatives to AzureWebJobsStorage__accountName, which Bicep sets; explicit endpoints are only
  // needed for non-default storage endpoints (custom domains, private DNS setups).
  AzureWebJobsStorage__blobServiceUri: "alternative to AzureWebJobsStorage__accountName",
  AzureWebJobsStorage__queueServiceUri: "alternative to AzureWebJobsStorage__accountName",
  AzureWebJobsStorage__tableServiceUri: "alternative to AzureWebJobsStorage__accountName",
  // The federated credential infra/register-app.sh creates trusts the app's own identity, which
  // AZURE_CLIENT_ID names; another identity would have to be attached to the site and trusted by hand.
  MSSP_FIC_IDENTITY_CLIENT_ID: "alternative to AZURE_CLIENT_ID for the client assertion",
};

/** Settings Flex Consumption rejects or ignores ("Flex Consumption plan deprecations"). */
const FLEX_DEPRECATED = [
  "FUNCTIONS_WORKER_RUNTIME",
  "FUNCTIONS_EXTENSION_VERSION",
  "WEBSITE_NODE_DEFAULT_VERSION",
  "WEBSITE_RUN_FROM_PACKAGE",
  "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
  "WEBSITE_CONTENTSHARE",
  "WEBSITE_CONTENTOVERVNET",
  "WEBSITE_TIME_ZONE",
  "SCM_DO_BUILD_DURING_DEPLOYMENT",
];

const settings = extractAppSettings();
const settingNames = settings.map((setting) => setting.key);
const byName = new Map(settings.map((setting) => [setting.key, setting]));
const configNames: readonly string[] = APP_SETTING_NAMES;

describe("infra app settings vs shared/config.ts", () => {
  it("finds the app settings block", () => {
    expect(settings.length).toBeGreaterThan(10);
    expect(new Set(settingNames).size, "a setting is declared twice").toBe(settingNames.length);
    // every credential type MSSP_CLIENT_CREDENTIAL accepts in main.bicep has its settings
    const allowed = params(readBicep("main.bicep")).find((p) => p.name === "clientCredentialType")?.decorators.find((d) => d.name === "allowed")?.args ?? "";
    expect(credentialBranches().sort()).toEqual([...allowed.matchAll(/'([^']*)'/g)].map((m) => m[1]).sort());
  });

  it("sets nothing the config module does not read (except platform settings)", () => {
    const allowed = new Set<string>([...configNames, ...PLATFORM_SETTINGS]);
    expect(settingNames.filter((name) => !allowed.has(name))).toEqual([]);
  });

  it("sets every setting the config module reads, except the listed alternatives", () => {
    const missing = configNames.filter((name) => !byName.has(name) && !(name in CONFIG_SETTINGS_NOT_IN_BICEP));
    expect(missing).toEqual([]);
  });

  it("keeps the not-in-Bicep list honest (read by config, really absent from Bicep)", () => {
    for (const name of Object.keys(CONFIG_SETTINGS_NOT_IN_BICEP)) {
      expect(configNames, `${name} is not read by shared/config.ts any more`).toContain(name);
      expect(byName.has(name), `${name} is listed as absent but Bicep sets it`).toBe(false);
    }
  });

  it("sets both platform settings for Application Insights with Entra ID auth", () => {
    for (const name of PLATFORM_SETTINGS) expect(byName.has(name), name).toBe(true);
    expect(byName.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")?.value).toBe(
      "'Authorization=AAD;ClientId=${identityClientId}'",
    );
  });

  it("never sets a LOCAL_DEV_* setting anywhere in infra/", () => {
    expect(settingNames.filter((name) => name.startsWith("LOCAL_DEV_"))).toEqual([]);
    for (const file of listInfraFiles()) {
      const text = readFileSync(path.join(INFRA_DIR, file), "utf8");
      expect(text, file).not.toMatch(/LOCAL_DEV_/);
      for (const name of LOCAL_DEV_SETTING_NAMES) expect(text, file).not.toContain(name);
    }
  });

  it("uses no Flex-deprecated setting", () => {
    expect(settingNames.filter((name) => FLEX_DEPRECATED.includes(name))).toEqual([]);
    for (const file of listBicepFiles()) {
      for (const name of FLEX_DEPRECATED) expect(readBicep(file).code, `${file}: ${name}`).not.toContain(name);
    }
  });

  it("takes MSSP_CLIENT_SECRET from a Key Vault reference, never a literal, and only with the secret credential", () => {
    const secret = byName.get("MSSP_CLIENT_SECRET");
    // From the credential vault, which the app may only read (test/infra/roles.test.ts).
    expect(secret?.value).toMatch(/^'@Microsoft\.KeyVault\(VaultName=\$\{credentialVaultName\};SecretName=mssp-client-secret\)'$/);
    expect(secret?.only).toEqual(["secret"]);
  });

  it("with managedIdentity (the default) deploys no client secret setting and no reference to one", () => {
    expect(literal(params(main).find((p) => p.name === "clientCredentialType")?.defaultValue)).toBe("managedIdentity");
    const deployed = settingsFor(settings, "managedIdentity");
    expect(deployed.map((s) => s.key)).not.toContain("MSSP_CLIENT_SECRET");
    expect(deployed.map((s) => s.key)).not.toContain("MSSP_CLIENT_CERTIFICATE_NAME");
    expect(deployed.filter((s) => /mssp-client-secret|SecretName=mssp/i.test(s.value))).toEqual([]);
    expect(deployed.filter((s) => /@Microsoft\.KeyVault/.test(s.value)).map((s) => s.key).sort()).toEqual(["NOTIFY_WEBHOOK_URL", "SPLUNK_HEC_TOKEN"]);
    const byKey = new Map(deployed.map((s) => [s.key, s.value]));
    expect(byKey.get("MSSP_CLIENT_CREDENTIAL")).toBe("clientCredentialType");
    // The assertion comes from the app's user-assigned identity (AZURE_CLIENT_ID), which the
    // console's sign-in uses too.
    expect(byKey.get("AZURE_CLIENT_ID")).toBe("identityClientId");
    expect(byKey.get("OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID")).toBe("identityClientId");
  });

  it("with certificate names the Key Vault certificate and deploys no client secret setting", () => {
    const deployed = new Map(settingsFor(settings, "certificate").map((s) => [s.key, s.value]));
    expect(deployed.get("MSSP_CLIENT_CERTIFICATE_NAME")).toBe("clientCertificateName");
    // The certificate is read from the credential vault, not from KEY_VAULT_URL's tokens vault.
    expect(deployed.get("MSSP_CLIENT_CERTIFICATE_VAULT_URL")).toContain("credentialVaultName");
    expect(deployed.has("MSSP_CLIENT_SECRET")).toBe(false);
    expect(deployed.get("OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID")).toBe("identityClientId");
    expect(functionAppModule?.params.find((e) => e.key === "clientCertificateName")?.value).toBe("clientCertificateName");
    // A certificate name, which Key Vault restricts to letters, digits and hyphens.
    expect(literal(params(main).find((p) => p.name === "clientCertificateName")?.defaultValue)).toMatch(/^[A-Za-z0-9-]+$/);
  });

  it("with secret keeps today's settings: the secret reference, no certificate, no managed-identity assertion for the sign-in", () => {
    const deployed = new Map(settingsFor(settings, "secret").map((s) => [s.key, s.value]));
    expect(deployed.has("MSSP_CLIENT_SECRET")).toBe(true);
    expect(deployed.has("MSSP_CLIENT_CERTIFICATE_NAME")).toBe(false);
    expect(deployed.has("OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID")).toBe(false);
  });

  it("deploys, for each credential type, exactly what the config module needs to load that credential", () => {
    // Sample values for the settings only some credential types get (Bicep expressions otherwise).
    const samples: Record<string, string> = {
      MSSP_CLIENT_SECRET: "not-a-real-secret",
      MSSP_CLIENT_CERTIFICATE_NAME: literal(params(main).find((p) => p.name === "clientCertificateName")?.defaultValue) ?? "",
      MSSP_CLIENT_CERTIFICATE_VAULT_URL: "https://kvc-sample.vault.azure.net/",
      OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID: REQUIRED_ENV.AZURE_CLIENT_ID,
    };
    const { MSSP_CLIENT_SECRET: _secret, ...withoutSecret } = REQUIRED_ENV;
    for (const type of credentialBranches()) {
      const env: Record<string, string> = { ...withoutSecret, MSSP_CLIENT_CREDENTIAL: type };
      for (const setting of settings.filter((s) => s.only?.includes(type))) {
        expect(samples[setting.key], `${type}: no sample for ${setting.key}`).toBeDefined();
        env[setting.key] = samples[setting.key] as string;
      }
      const credential = loadConfig(env).credential;
      expect(credential.kind, type).toBe(type);
      if (credential.kind === "managedIdentity") {
        // the app's user-assigned identity, which register-app.sh's federated credential trusts
        expect(credential.identitySetting).toBe("AZURE_CLIENT_ID");
        expect(credential.identityClientId).toBe(REQUIRED_ENV.AZURE_CLIENT_ID);
      }
    }
  });

  it("deploys the credential type and default consent model main.bicep allows, and the code accepts each", () => {
    expect(functionAppModule?.params.find((e) => e.key === "clientCredentialType")?.value).toBe("clientCredentialType");
    expect(functionAppModule?.params.find((e) => e.key === "defaultConsentModel")?.value).toBe("defaultConsentModel");
    expect(byName.get("DEFAULT_CONSENT_MODEL")?.value).toBe("defaultConsentModel");
    const consent = params(main).find((p) => p.name === "defaultConsentModel");
    expect(literal(consent?.defaultValue)).toBe("delegated");
    const allowedConsent = [...(consent?.decorators.find((d) => d.name === "allowed")?.args ?? "").matchAll(/'([^']*)'/g)].map((m) => m[1] as string);
    expect(allowedConsent.sort()).toEqual(["application", "delegated"]);
    for (const value of allowedConsent) {
      expect(() => loadConfig({ ...REQUIRED_ENV, DEFAULT_CONSENT_MODEL: value }), `DEFAULT_CONSENT_MODEL=${value}`).not.toThrow();
    }
  });

  it("uses the identity-based host storage connection with the user-assigned identity", () => {
    expect(byName.get("AzureWebJobsStorage__credential")?.value).toBe("'managedidentity'");
    expect(byName.get("AzureWebJobsStorage__clientId")?.value).toBe("identityClientId");
    expect(byName.get("AZURE_CLIENT_ID")?.value).toBe("identityClientId");
    expect(byName.get("AzureWebJobsStorage__accountName")?.value).toBe("storageAccountName");
  });

  it("takes NOTIFY_WEBHOOK_URL only from a Key Vault reference, empty (notifications off) unless a secret is named", () => {
    expect(byName.get("NOTIFY_WEBHOOK_URL")?.value).toBe(
      "empty(notifyWebhookUrlVaultEntry) ? '' : '@Microsoft.KeyVault(VaultName=${credentialVaultName};SecretName=${notifyWebhookUrlVaultEntry})'",
    );
    const entry = params(main).find((p) => p.name === "notifyWebhookUrlVaultEntry");
    expect(literal(entry?.defaultValue)).toBe("");
  });

  it("derives MSSP_PUBLIC_BASE_URL from the site's default host name over https", () => {
    expect(byName.get("MSSP_PUBLIC_BASE_URL")?.value).toBe("'https://${site.properties.defaultHostName}'");
  });
});

// ---- defaults and ranges: what Bicep deploys by default must equal the code defaults ----------

const main = readBicep("main.bicep");
const functionAppModule = modules(main).find((mod) => mod.path === "modules/functionapp.bicep");
const mainParams = params(main);

/** The main.bicep parameter feeding a setting whose module value is `p`, `string(p)` or `p ? 'true' : 'false'`. */
function mainParamFor(settingValue: string): string | undefined {
  const match = /^(?:string\(([A-Za-z_]\w*)\)|([A-Za-z_]\w*)|([A-Za-z_]\w*) \? 'true' : 'false')$/.exec(settingValue);
  const moduleParam = match ? (match[1] ?? match[2] ?? match[3]) : undefined;
  const passed = functionAppModule?.params.find((entry) => entry.key === moduleParam)?.value;
  return passed && /^[A-Za-z_]\w*$/.test(passed) && mainParams.some((p) => p.name === passed) ? passed : undefined;
}

/** A literal default as the string the app would see in its environment. */
function defaultAsSetting(scanned: ScannedBicep, paramName: string): string {
  const decl = params(scanned).find((p) => p.name === paramName);
  const value = decl?.defaultValue;
  if (value === undefined) throw new Error(`main.bicep param ${paramName} has no default`);
  const text = literal(value) ?? (/^(-?\d+|true|false)$/.test(value) ? value : undefined);
  if (text === undefined) throw new Error(`main.bicep param ${paramName} default is not a literal: ${value}`);
  return text;
}

/** Tunables: settings with a code default that Bicep exposes as main.bicep parameters. */
const TUNABLES = [
  "CONSENT_LINK_TTL_HOURS",
  "PULL_SCHEDULE",
  "ALERTS_CONTAINER",
  "PULL_OVERLAP_MINUTES",
  "PULL_SETTLE_SECONDS",
  "PULL_FIRST_RUN_LOOKBACK_HOURS",
  "PULL_PAGE_SIZE",
  "PULL_EXPAND_EVIDENCE",
  "REFRESH_TOKEN_PERSIST_AGE_HOURS",
  "DEFENDER_REQUEST_TIMEOUT_SECONDS",
  "PULL_MAX_RUN_SECONDS",
  "PULL_TENANTS_PER_MESSAGE",
  "MDE_PARTNER_COMPANY",
  "MDE_PARTNER_PRODUCT",
];

const REQUIRED_ENV = REQUIRED_SETTINGS;

describe("infra defaults vs code defaults", () => {
  it("deploys the notification format and threshold the code defaults to, and only values it accepts", () => {
    const webhook = { NOTIFY_WEBHOOK_URL: "https://hooks.example.test/x" };
    for (const [name, code] of [
      ["NOTIFY_WEBHOOK_FORMAT", DEFAULT_NOTIFY_FORMAT],
      ["NOTIFY_MIN_SEVERITY", DEFAULT_NOTIFY_MIN_SEVERITY],
    ] as const) {
      const paramName = mainParamFor(byName.get(name)?.value ?? "");
      expect(paramName, name).toBeDefined();
      expect(defaultAsSetting(main, paramName as string), name).toBe(code);
      const allowed = mainParams.find((p) => p.name === paramName)?.decorators.find((d) => d.name === "allowed")?.args ?? "";
      const values = [...allowed.matchAll(/'([^']*)'/g)].map((m) => m[1] as string);
      expect(values.length, name).toBeGreaterThan(1);
      for (const value of values) expect(() => loadConfig({ ...REQUIRED_ENV, ...webhook, [name]: value }), `${name}=${value}`).not.toThrow();
    }
  });

  it("feeds every tunable from a main.bicep parameter", () => {
    expect(functionAppModule).toBeDefined();
    for (const name of TUNABLES) {
      const setting = byName.get(name);
      expect(setting, name).toBeDefined();
      expect(mainParamFor(setting?.value ?? ""), `${name} = ${setting?.value}`).toBeDefined();
    }
  });

  it("deploys by default exactly what the code uses when a tunable is unset", () => {
    const bicepDefaults: Record<string, string> = {};
    for (const name of TUNABLES) {
      bicepDefaults[name] = defaultAsSetting(main, mainParamFor(byName.get(name)?.value ?? "") as string);
    }
    const withBicepDefaults = loadConfig({ ...REQUIRED_ENV, ...bicepDefaults });
    const withCodeDefaults = loadConfig(REQUIRED_ENV);
    expect(withBicepDefaults.pull).toEqual(withCodeDefaults.pull);
    expect(withBicepDefaults.consentLinkTtlHours).toBe(withCodeDefaults.consentLinkTtlHours);
  });

  it("only allows integer values (@minValue/@maxValue) that the config module accepts", () => {
    for (const name of TUNABLES) {
      const paramName = mainParamFor(byName.get(name)?.value ?? "") as string;
      const decl = mainParams.find((p) => p.name === paramName);
      if (decl?.type !== "int") continue;
      const min = decl.decorators.find((d) => d.name === "minValue")?.args;
      const max = decl.decorators.find((d) => d.name === "maxValue")?.args;
      expect(min, `${paramName} needs @minValue`).toMatch(/^\d+$/);
      expect(max, `${paramName} needs @maxValue`).toMatch(/^\d+$/);
      for (const bound of [min, max]) {
        expect(() => loadConfig({ ...REQUIRED_ENV, [name]: bound as string }), `${name}=${bound}`).not.toThrow();
      }
    }
  });

  it("maps every allowed Defender region to a base URL the config module accepts, '' to the code default", () => {
    const region = mainParams.find((p) => p.name === "defenderRegion");
    const allowed = region?.decorators.find((d) => d.name === "allowed")?.args ?? "";
    const regions = [...allowed.matchAll(/'([^']*)'/g)].map((m) => m[1] as string);
    expect(regions.sort()).toEqual(["", "au", "eu", "ina", "swa", "uk", "us"]);
    expect(literal(region?.defaultValue)).toBe("");
    const expression = /^var defenderApiBaseUrl = (.*)$/m.exec(main.code)?.[1]?.trim();
    expect(expression).toBe(
      "empty(defenderRegion) ? 'https://api.security.microsoft.com' : 'https://${defenderRegion}.api.security.microsoft.com'",
    );
    expect(functionAppModule?.params.find((entry) => entry.key === "defenderApiBaseUrl")?.value).toBe("defenderApiBaseUrl");
    const codeDefault = loadConfig(REQUIRED_ENV).defenderApiBaseUrl;
    expect(codeDefault).toBe("https://api.security.microsoft.com");
    for (const r of regions.filter(Boolean)) {
      const url = `https://${r}.api.security.microsoft.com`;
      expect(loadConfig({ ...REQUIRED_ENV, DEFENDER_API_BASE_URL: url }).defenderApiBaseUrl).toBe(url);
    }
  });

  it("takes ENTRA_AUTHORITY_HOST from the cloud environment, which the config module accepts", () => {
    expect(functionAppModule?.params.find((entry) => entry.key === "entraAuthorityHost")?.value).toBe("entraAuthorityHost");
    expect(main.code).toMatch(/^var entraAuthorityHost = environment\(\)\.authentication\.loginEndpoint$/m);
    // public cloud value of environment().authentication.loginEndpoint (with its trailing slash)
    expect(loadConfig({ ...REQUIRED_ENV, ENTRA_AUTHORITY_HOST: "https://login.microsoftonline.com/" }).entraAuthorityHost).toBe(
      loadConfig(REQUIRED_ENV).entraAuthorityHost,
    );
  });
});
