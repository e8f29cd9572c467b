/**
 * Structural sanity of infra/ without a Bicep compiler: modules resolve, module params and
 * outputs line up, brackets balance, API versions are the documented ones (and match the table in
 * docs/deploy.md), outputs are what the deployment docs and scripts use.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { FUNCTION_TIMEOUT_SECONDS, loadConfig } from "../../shared/config";
import { REQUIRED_SETTINGS } from "./requiredSettings";
import {
  INFRA_DIR,
  REPO_ROOT,
  bracketProblems,
  listBicepFiles,
  literal,
  modules,
  outputs,
  params,
  readBicep,
  resourceTypes,
  scanBicep,
} from "./bicepText";

/** Resource API versions allowed by the issue / ../shared/reference/protocol.md §8. */
const ALLOWED_API_VERSIONS: Record<string, string[]> = {
  "Microsoft.Web/sites": ["2024-04-01"],
  "Microsoft.Web/sites/config": ["2024-04-01"],
  "Microsoft.Web/sites/basicPublishingCredentialsPolicies": ["2024-04-01"],
  "Microsoft.Web/serverfarms": ["2024-04-01"],
  "Microsoft.Storage/storageAccounts": ["2024-01-01"],
  "Microsoft.Storage/storageAccounts/blobServices": ["2024-01-01"],
  "Microsoft.Storage/storageAccounts/blobServices/containers": ["2024-01-01"],
  "Microsoft.Storage/storageAccounts/queueServices": ["2024-01-01"],
  "Microsoft.Storage/storageAccounts/queueServices/queues": ["2024-01-01"],
  "Microsoft.Storage/storageAccounts/tableServices": ["2024-01-01"],
  "Microsoft.Storage/storageAccounts/tableServices/tables": ["2024-01-01"],
  "Microsoft.KeyVault/vaults": ["2023-07-01", "2024-11-01"],
  "Microsoft.Insights/components": ["2020-02-02"],
  "Microsoft.Insights/scheduledQueryRules": ["2023-12-01"],
  "Microsoft.Insights/actionGroups": ["2023-01-01"],
  "Microsoft.Insights/workbooks": ["2023-06-01"],
  "Microsoft.OperationalInsights/workspaces": ["2025-02-01", "2023-09-01"],
  "Microsoft.Authorization/roleAssignments": ["2022-04-01"],
  "Microsoft.ManagedIdentity/userAssignedIdentities": ["2023-01-31"],
  "Microsoft.OperationalInsights/workspaces/tables": ["2025-02-01"],
  "Microsoft.Insights/dataCollectionRules": ["2023-03-11"],
  "Microsoft.EventHub/namespaces": ["2024-01-01"],
  "Microsoft.EventHub/namespaces/eventhubs": ["2024-01-01"],
  // vnetEnabled (infra/modules/network.bicep)
  "Microsoft.Network/virtualNetworks": ["2024-05-01"],
  "Microsoft.Network/privateEndpoints": ["2024-05-01"],
  "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": ["2024-05-01"],
  "Microsoft.Network/privateDnsZones": ["2024-06-01"],
  "Microsoft.Network/privateDnsZones/virtualNetworkLinks": ["2024-06-01"],
};

const bicepFiles = listBicepFiles();
const main = readBicep("main.bicep");

describe("scanner self-check", () => {
  it("keeps '//' inside strings and ignores braces in strings and comments", () => {
    const scanned = scanBicep("var a = 'https://x/{y}' // {\nvar b = '${c ? 'd}' : '{'}' /* ] */\n");
    expect(scanned.code).toContain("'https://x/{y}'");
    expect(scanned.code).not.toContain("// {");
    expect(bracketProblems(scanned)).toEqual([]);
    expect(bracketProblems(scanBicep("var a = {\n"))).not.toEqual([]);
  });
});

describe("infra structure", () => {
  it("has the expected files", () => {
    expect(bicepFiles).toEqual(
      expect.arrayContaining([
        "main.bicep",
        "modules/functionapp.bicep",
        "modules/identity.bicep",
        "modules/keyvault.bicep",
        "modules/monitoring.bicep",
        "modules/network.bicep",
        "modules/roleAssignment.bicep",
        "modules/storage.bicep",
      ]),
    );
    expect(existsSync(path.join(INFRA_DIR, "main.parameters.example.json"))).toBe(true);
    expect(existsSync(path.join(INFRA_DIR, "register-app.sh"))).toBe(true);
  });

  for (const file of bicepFiles) {
    it(`${file}: brackets, braces and quotes balance`, () => {
      expect(bracketProblems(readBicep(file))).toEqual([]);
    });
  }

  it("main.bicep deploys at resource-group scope", () => {
    expect(main.code).toMatch(/^targetScope = 'resourceGroup'$/m);
  });

  for (const file of bicepFiles) {
    it(`${file}: every module path exists, params line up, outputs read exist`, () => {
      const scanned = readBicep(file);
      const declared = modules(scanned);
      for (const mod of declared) {
        const target = path.join(path.dirname(path.join(INFRA_DIR, file)), mod.path);
        expect(existsSync(target), `${file}: module ${mod.symbol} -> ${mod.path}`).toBe(true);
        const targetScanned = readBicep(path.relative(INFRA_DIR, target));
        const targetParams = params(targetScanned);
        const passed = new Set(mod.params.map((entry) => entry.key));
        for (const p of targetParams) {
          if (p.defaultValue === undefined) expect(passed.has(p.name), `${mod.symbol}: required param ${p.name} not passed`).toBe(true);
        }
        const known = new Set(targetParams.map((p) => p.name));
        for (const key of passed) expect(known.has(key), `${mod.symbol}: passes undeclared param ${key}`).toBe(true);
      }
      // every `<module>.outputs.<name>` refers to an output the module declares
      const bySymbol = new Map(declared.map((mod) => [mod.symbol, mod]));
      for (const match of scanned.code.matchAll(/\b([A-Za-z_]\w*)(?:\[[^\]]*\])?\.outputs\.([A-Za-z_]\w*)/g)) {
        const mod = bySymbol.get(match[1] as string);
        expect(mod, `${file}: ${match[0]} is not a module`).toBeDefined();
        const targetOutputs = outputs(readBicep(path.join(path.dirname(file), mod?.path ?? "")));
        expect(targetOutputs, `${file}: ${match[0]}`).toContain(match[2]);
      }
    });
  }

  it("every main.bicep parameter has a description; Flex limits are enforced", () => {
    for (const p of params(main)) {
      expect(p.decorators.map((d) => d.name), p.name).toContain("description");
    }
    const memory = params(main).find((p) => p.name === "instanceMemoryMB");
    expect(memory?.decorators.find((d) => d.name === "allowed")?.args.replace(/\s+/g, " ")).toBe("[ 512 2048 4096 ]");
    const maxInstances = params(main).find((p) => p.name === "maximumInstanceCount");
    expect(maxInstances?.decorators.find((d) => d.name === "minValue")?.args).toBe("40");
    expect(maxInstances?.decorators.find((d) => d.name === "maxValue")?.args).toBe("1000");
  });

  it("has the parameters the issue asks for, with safe defaults", () => {
    const byName = new Map(params(main).map((p) => [p.name, p]));
    expect(byName.get("location")?.defaultValue).toBe("resourceGroup().location");
    expect(byName.get("msspTenantId")?.defaultValue).toBe("tenant().tenantId");
    expect(literal(byName.get("clientId")?.defaultValue)).toBe("");
    expect(literal(byName.get("deployerPrincipalId")?.defaultValue)).toBe("");
    // Least privilege by default: no deployer vault role, no change of network mode.
    expect(byName.get("grantDeployerVaultAccess")?.defaultValue).toBe("false");
    expect(byName.get("vnetEnabled")?.defaultValue).toBe("false");
    for (const name of ["namePrefix", "defenderRegion", "pullSchedule", "partnerCompany", "instanceMemoryMB", "maximumInstanceCount"]) {
      expect(byName.get(name)?.defaultValue, name).toBeDefined();
    }
  });

  it("main.parameters.example.json only sets declared parameters, with allowed values", () => {
    const example = JSON.parse(readFileSync(path.join(INFRA_DIR, "main.parameters.example.json"), "utf8")) as {
      $schema: string;
      parameters: Record<string, { value: unknown }>;
    };
    expect(example.$schema).toContain("deploymentParameters.json");
    const declared = new Map(params(main).map((p) => [p.name, p]));
    for (const [name, { value }] of Object.entries(example.parameters)) {
      const decl = declared.get(name);
      expect(decl, `example sets undeclared parameter ${name}`).toBeDefined();
      const allowed = decl?.decorators.find((d) => d.name === "allowed")?.args;
      if (allowed) {
        const options = [...allowed.matchAll(/'([^']*)'|(\d+)/g)].map((m) => (m[1] !== undefined ? m[1] : Number(m[2])));
        expect(options, name).toContain(value);
      }
    }
  });

  it("outputs what the deployment docs and register-app.sh need, in UPPER_SNAKE", () => {
    const names = outputs(main);
    for (const name of names) expect(name).toMatch(/^[A-Z][A-Z0-9_]*$/);
    for (const name of ["FUNCTION_APP_NAME", "FUNCTION_APP_HOST_NAME", "CONSENT_CALLBACK_URL", "KEY_VAULT_NAME", "CREDENTIAL_VAULT_NAME", "MSSP_TENANT_ID"]) {
      expect(names).toContain(name);
    }
    const docs = readFileSync(path.join(REPO_ROOT, "docs", "deploy.md"), "utf8");
    for (const match of docs.matchAll(/properties\.outputs\.([A-Z_]+)\.value/g)) expect(names).toContain(match[1]);
  });

  it("CONSENT_CALLBACK_URL matches host.json's route prefix and the consent callback route", () => {
    const host = JSON.parse(readFileSync(path.join(REPO_ROOT, "host.json"), "utf8")) as {
      functionTimeout?: string;
      extensions?: { http?: { routePrefix?: string } };
    };
    const prefix = host.extensions?.http?.routePrefix ?? "api";
    expect(main.code).toContain(
      `output CONSENT_CALLBACK_URL string = 'https://\${functionApp.outputs.defaultHostName}/${prefix}/consent/callback'`,
    );
  });

  it("keeps the pull time budget below host.json functionTimeout", () => {
    const host = JSON.parse(readFileSync(path.join(REPO_ROOT, "host.json"), "utf8")) as { functionTimeout?: string };
    const [h, m, s] = (host.functionTimeout ?? "00:30:00").split(":").map(Number) as [number, number, number];
    const timeoutSeconds = h * 3600 + m * 60 + s;
    const budget = params(main).find((p) => p.name === "pullMaxRunSeconds");
    const requestTimeout = params(main).find((p) => p.name === "defenderRequestTimeoutSeconds");
    expect(Number(budget?.defaultValue)).toBeLessThan(timeoutSeconds);
    // The code checks settings against its own copy of the host's timeout: keep the two equal.
    expect(FUNCTION_TIMEOUT_SECONDS).toBe(timeoutSeconds);
    // The largest run the Bicep allows, plus its largest request and the shutdown margin, still fits.
    const maxRun = Number(budget?.decorators.find((d) => d.name === "maxValue")?.args);
    const maxRequest = Number(requestTimeout?.decorators.find((d) => d.name === "maxValue")?.args);
    expect(maxRun + maxRequest + 60).toBeLessThanOrEqual(timeoutSeconds);
    expect(() => loadConfig({ ...REQUIRED_SETTINGS, PULL_MAX_RUN_SECONDS: String(maxRun), DEFENDER_REQUEST_TIMEOUT_SECONDS: String(maxRequest) })).not.toThrow();
  });

  it("the function app waits for its role assignments", () => {
    expect(main.code).toMatch(/module functionApp 'modules\/functionapp\.bicep' = \{[\s\S]*?dependsOn: \[\s*roleAssignments\s*\]/);
  });
});

describe("resource API versions", () => {
  const used = new Map<string, Set<string>>();
  for (const file of bicepFiles) {
    for (const typeAtVersion of resourceTypes(readBicep(file))) {
      const [type, version] = typeAtVersion.split("@") as [string, string];
      if (!used.has(type)) used.set(type, new Set());
      used.get(type)?.add(version);
    }
  }

  it("uses only documented API versions, one per resource type", () => {
    expect(used.size).toBeGreaterThan(10);
    for (const [type, versions] of used) {
      expect(ALLOWED_API_VERSIONS[type], `${type} is not in the allowed table`).toBeDefined();
      expect(versions.size, `${type} uses several versions`).toBe(1);
      for (const version of versions) expect(ALLOWED_API_VERSIONS[type], type).toContain(version);
    }
  });

  it("matches the table in docs/deploy.md", () => {
    const docs = readFileSync(path.join(REPO_ROOT, "docs", "deploy.md"), "utf8");
    const section = docs.split(/^## Resource API versions$/m)[1]?.split(/^## /m)[0] ?? "";
    const documented = new Map(
      [...section.matchAll(/^\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|$/gm)].map((m) => [m[1] as string, m[2] as string]),
    );
    const actual = new Map([...used].map(([type, versions]) => [type, [...versions][0] as string]));
    expect(Object.fromEntries(documented)).toEqual(Object.fromEntries(actual));
  });

  it("docs/deploy.md shows the cost shape per tenant per month", () => {
    const docs = readFileSync(path.join(REPO_ROOT, "docs", "deploy.md"), "utf8");
    const section = docs.split(/^## Cost shape$/m)[1]?.split(/^##+ /m)[0] ?? "";
    for (const item of ["Function executions", "Table transactions", "Queue transactions", "Key Vault operations"]) {
      expect(section).toContain(item);
    }
    expect(section).toContain("8,640");
    expect(section).not.toContain("TODO");
  });
});
