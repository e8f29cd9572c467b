/** Keyless, secret-free infrastructure and the hardening settings the issue asks for. */
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  INFRA_DIR,
  REPO_ROOT,
  type ObjectEntry,
  type ScannedBicep,
  listBicepFiles,
  listInfraFiles,
  objectEntries,
  outputs,
  params,
  readBicep,
  resourceBody,
} from "./bicepText";

/** Patterns that mean a key, SAS or key-bearing connection string is handled somewhere. */
const FORBIDDEN: Array<[RegExp, string]> = [
  [/listKeys\s*\(/i, "listKeys()"],
  [/listkeys/i, "listkeys"],
  [/\blist(AccountSas|ServiceSas|ConnectionStrings|Secrets)\s*\(/i, "list*() of secrets"],
  [/AccountKey=/i, "AccountKey="],
  [/SharedAccessSignature/i, "SharedAccessSignature"],
  [/SharedAccessKey/i, "SharedAccessKey"],
  [/DefaultEndpointsProtocol=/i, "storage connection string"],
  [/InstrumentationKey=/i, "instrumentation-key connection string"],
  [/\bsig=[A-Za-z0-9%]{20,}/, "SAS signature"],
  // Entra ID client secret format (3 chars, digit, 'Q~', 31-34 chars)
  [/[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}/, "client-secret-looking literal"],
  // padded base64 of 32+ bytes, like a storage account key
  [/(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{43,}={1,2}/, "key-looking base64 literal"],
];

const SECRET_PARAM_NAME = /(secret|password|connectionString|accessKey|sasToken|apiKey)/i;

function at(scanned: ScannedBicep, entries: ObjectEntry[], dottedPath: string): string | undefined {
  let current = entries;
  const parts = dottedPath.split(".");
  for (const [index, part] of parts.entries()) {
    const entry = current.find((e) => e.key === part);
    if (!entry) return undefined;
    if (index === parts.length - 1) return entry.value;
    if (scanned.masked[entry.valueIndex] !== "{") return undefined;
    current = objectEntries(scanned, entry.valueIndex);
  }
  return undefined;
}

describe("no keys or secrets in infra/", () => {
  for (const file of listInfraFiles()) {
    it(`${file} contains no key, SAS, connection string or secret-looking literal`, () => {
      const text = readFileSync(path.join(INFRA_DIR, file), "utf8");
      for (const [pattern, what] of FORBIDDEN) expect(pattern.test(text), `${file}: ${what}`).toBe(false);
    });
  }

  it("declares secret-like parameters @secure() without a default, and no @secure() default anywhere", () => {
    for (const file of listBicepFiles()) {
      for (const decl of params(readBicep(file))) {
        const secure = decl.decorators.some((d) => d.name === "secure");
        if (SECRET_PARAM_NAME.test(decl.name)) {
          expect(secure, `${file}: ${decl.name} must be @secure()`).toBe(true);
        }
        if (secure) expect(decl.defaultValue, `${file}: @secure() ${decl.name} must not have a default`).toBeUndefined();
      }
    }
  });

  it("outputs no secret", () => {
    for (const file of listBicepFiles()) {
      const scanned = readBicep(file);
      for (const name of outputs(scanned)) expect(name, file).not.toMatch(/(secret|password|key$|keys$|sas)/i);
      expect(scanned.code, file).not.toMatch(/^output\b.*\blist\w*\(/m);
    }
  });

  it("keeps example parameters free of secrets", () => {
    const example = JSON.parse(readFileSync(path.join(INFRA_DIR, "main.parameters.example.json"), "utf8")) as {
      parameters: Record<string, { value?: unknown; reference?: unknown }>;
    };
    for (const name of Object.keys(example.parameters)) expect(name).not.toMatch(SECRET_PARAM_NAME);
  });
});

describe("hardening", () => {
  it("function app: Flex FC1, Node 22, https only, TLS 1.2, no FTP, no basic publishing auth, user-assigned identity", () => {
    const fn = readBicep("modules/functionapp.bicep");
    const plan = resourceBody(fn, "plan");
    expect(plan.type).toBe("Microsoft.Web/serverfarms@2024-04-01");
    expect(at(fn, plan.body, "sku.name")).toBe("'FC1'");
    expect(at(fn, plan.body, "sku.tier")).toBe("'FlexConsumption'");
    expect(at(fn, plan.body, "properties.reserved")).toBe("true");

    const site = resourceBody(fn, "site");
    expect(site.type).toBe("Microsoft.Web/sites@2024-04-01");
    expect(at(fn, site.body, "kind")).toBe("'functionapp,linux'");
    expect(at(fn, site.body, "identity.type")).toBe("'UserAssigned'");
    expect(at(fn, site.body, "properties.httpsOnly")).toBe("true");
    expect(at(fn, site.body, "properties.keyVaultReferenceIdentity")).toBe("identityId");
    expect(at(fn, site.body, "properties.siteConfig.minTlsVersion")).toBe("'1.2'");
    expect(at(fn, site.body, "properties.siteConfig.ftpsState")).toBe("'Disabled'");
    expect(at(fn, site.body, "properties.functionAppConfig.runtime.name")).toBe("'node'");
    expect(at(fn, site.body, "properties.functionAppConfig.runtime.version")).toBe("'22'");
    expect(at(fn, site.body, "properties.functionAppConfig.deployment.storage.type")).toBe("'blobContainer'");
    expect(at(fn, site.body, "properties.functionAppConfig.deployment.storage.authentication.type")).toBe("'UserAssignedIdentity'");
    // The deployment identity, not the app's runtime identity (test/infra/roles.test.ts).
    expect(at(fn, site.body, "properties.functionAppConfig.deployment.storage.authentication.userAssignedIdentityResourceId")).toBe(
      "deploymentIdentityId",
    );

    const policies = resourceBody(fn, "publishingPolicies");
    expect(policies.type).toBe("Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01");
    expect(fn.code).toMatch(/for policyName in \[\s*'ftp'\s*'scm'\s*\]:/);
    expect(fn.code).toMatch(/name: policyName\s*properties: \{\s*allow: false\s*\}/);
  });

  it("function app: the runtime's Node major is one package.json engines admits and .ci/run tests", () => {
    const fn = readBicep("modules/functionapp.bicep");
    const version = at(fn, resourceBody(fn, "site").body, "properties.functionAppConfig.runtime.version");
    const major = /^'(\d+)'$/.exec(version ?? "")?.[1];
    expect(major, `runtime.version ${version}`).toBeDefined();
    const engines = (JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as { engines: { node: string } })
      .engines.node;
    const admitted = engines.split("||").map((range) => /^\^(\d+)\.\d+\.\d+$/.exec(range.trim())?.[1]);
    expect(admitted, `engines.node ${engines}`).toContain(major);
    const ciRun = readFileSync(path.join(REPO_ROOT, ".ci", "run"), "utf8");
    expect(ciRun).toMatch(new RegExp(`^NODE${major}_VERSION=${major}\\.\\d+\\.\\d+\\b`, "m"));
  });

  it("storage: no shared key, no public blobs, TLS 1.2, https only", () => {
    const st = readBicep("modules/storage.bicep");
    const account = resourceBody(st, "storage");
    expect(at(st, account.body, "properties.allowSharedKeyAccess")).toBe("false");
    expect(at(st, account.body, "properties.allowBlobPublicAccess")).toBe("false");
    expect(at(st, account.body, "properties.minimumTlsVersion")).toBe("'TLS1_2'");
    expect(at(st, account.body, "properties.supportsHttpsTrafficOnly")).toBe("true");
    expect(at(st, account.body, "properties.defaultToOAuthAuthentication")).toBe("true");
    expect(st.code).toMatch(/publicAccess: 'None'/);
  });

  it("key vault: RBAC, soft delete with retention parameter, purge protection", () => {
    const kv = readBicep("modules/keyvault.bicep");
    const vault = resourceBody(kv, "vault");
    expect(at(kv, vault.body, "properties.enableRbacAuthorization")).toBe("true");
    expect(at(kv, vault.body, "properties.enableSoftDelete")).toBe("true");
    expect(at(kv, vault.body, "properties.softDeleteRetentionInDays")).toBe("softDeleteRetentionInDays");
    expect(at(kv, vault.body, "properties.enablePurgeProtection")).toBe("true");
    expect(at(kv, vault.body, "properties.accessPolicies")).toBeUndefined();
  });

  it("application insights: workspace-based with local auth disabled", () => {
    const mon = readBicep("modules/monitoring.bicep");
    const ai = resourceBody(mon, "appInsights");
    expect(at(mon, ai.body, "properties.DisableLocalAuth")).toBe("true");
    expect(at(mon, ai.body, "properties.WorkspaceResourceId")).toBe("workspace.id");
  });

  it("never disables a protection elsewhere", () => {
    for (const file of listBicepFiles()) {
      const { code } = readBicep(file);
      expect(code, file).not.toMatch(/httpsOnly:\s*false/);
      expect(code, file).not.toMatch(/enablePurgeProtection:\s*false/);
      expect(code, file).not.toMatch(/allowSharedKeyAccess:\s*true/);
      expect(code, file).not.toMatch(/allowBlobPublicAccess:\s*true/);
      expect(code, file).not.toMatch(/DisableLocalAuth:\s*false/);
      expect(code, file).not.toMatch(/allow:\s*true/);
    }
  });
});
