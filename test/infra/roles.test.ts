/**
 * Role assignments: every role-definition GUID in infra/ is a documented built-in role, each role
 * in the role tables is the one its name says, and each identity gets exactly the intended roles on
 * the narrowest scope that works (docs/deploy.md "Identities and roles"): the tokens vault writable
 * by the app alone, the credential vault read-only for it, blob writes per container, the package
 * container writable only by the deployment identity, the deployer's vault role only on request.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { CONTAINERS, DEFAULT_ALERTS_CONTAINER } from "../../shared/storage/names";
import {
  INFRA_DIR,
  type ObjectEntry,
  type ScannedBicep,
  arrayObjects,
  arrayStrings,
  listBicepFiles,
  literal,
  modules,
  objectEntries,
  params,
  readBicep,
  resourceBody,
  varValueIndex,
} from "./bicepText";

/** Microsoft Graph's application id, the same in every tenant (the Graph source's permission). */
const MICROSOFT_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000";
const GUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;
const WINDOWS_DEFENDER_ATP_APP_ID = "fc780465-2017-40d4-a0c5-307022471b92";

interface RoleFixture {
  source: string;
  note: string;
  roles: Record<string, string>;
}
const fixture = JSON.parse(readFileSync(path.join(__dirname, "builtInRoles.json"), "utf8")) as RoleFixture;
const roles = fixture.roles;
const roleIds = new Set(Object.values(roles));

const main = readBicep("main.bicep");
const functionAppBicep = readBicep("modules/functionapp.bicep");

interface RoleRow {
  role: string;
  roleId: string;
  /** A literal scope ('storage', 'tokensVault', ...) or, for a container, the expression as written. */
  scope: string;
  principal: string;
}

/** The rows of a role table in main.bicep (a literal array, or the body of a `for` expression). */
function roleTable(name: string): RoleRow[] {
  return arrayObjects(main, varValueIndex(main, name)).map((entries) => {
    const raw = (key: string): string => entries.find((entry) => entry.key === key)?.value ?? "";
    const get = (key: string): string => literal(raw(key)) ?? "";
    return { role: get("role"), roleId: get("roleId"), scope: literal(raw("scope")) ?? raw("scope"), principal: get("principal") };
  });
}

/** The right-hand side of `var name = ...` in main.bicep, as written on one line. */
function mainVar(name: string): string | undefined {
  return new RegExp(`^var ${name} = (.+)$`, "m").exec(main.code)?.[1]?.trim();
}

function mainVarStrings(name: string): string[] {
  return arrayStrings(main, varValueIndex(main, name));
}

const paramDefault = (name: string): string | undefined => params(main).find((p) => p.name === name)?.defaultValue;

/**
 * The containers the app identity may write, as main.bicep computes them for the default
 * parameters: `concat([alertsContainer], appContainerNames, hostContainerNames)`.
 */
function appBlobContainers(): string[] {
  expect(mainVar("appBlobContainers")).toBe("concat([alertsContainer], appContainerNames, hostContainerNames)");
  return [literal(paramDefault("alertsContainer")) ?? "", ...mainVarStrings("appContainerNames"), ...mainVarStrings("hostContainerNames")];
}

/** Every (principal, role, scope) main.bicep deploys, container rows expanded; deployer rows when asked for. */
function effectiveRows(withDeployer: boolean): string[] {
  const containerTable = roleTable("containerRoleTable");
  expect(containerTable).toHaveLength(1);
  expect(containerTable[0]?.scope).toBe("'container:${container}'");
  expect(main.code).toMatch(/^var containerRoleTable = \[\s*for container in appBlobContainers: \{/m);
  const containerRows = appBlobContainers().map((container) => ({ ...containerTable[0], scope: `container:${container}` }) as RoleRow);
  const deploymentRows = roleTable("deploymentRoleTable").map((row) => ({
    ...row,
    scope: row.scope === "'container:${deploymentContainerName}'" ? `container:${deploymentContainerName()}` : row.scope,
  }));
  const deployerRows = withDeployer ? [...roleTable("deployerRoleTable"), ...roleTable("deployerCertificateRoleTable")] : [];
  return [...roleTable("appRoleTable"), ...containerRows, ...deploymentRows, ...deployerRows].map(
    (row) => `${row.principal}: ${row.role} @ ${row.scope}`,
  );
}

/** The deployer's role table for each clientCredentialType (deployerRolesByCredential in main.bicep). */
function deployerTablesByCredential(): Record<string, string> {
  return Object.fromEntries(objectEntries(main, varValueIndex(main, "deployerRolesByCredential")).map((e) => [e.key, e.value]));
}

function deploymentContainerName(): string {
  return /^var deploymentContainerName = '([^']+)'$/m.exec(main.code)?.[1] ?? "";
}

/** A dotted path inside an object literal's entries (`properties.functionAppConfig.deployment`). */
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

function moduleParam(modulePath: string, key: string, symbol?: string): string | undefined {
  const mod = modules(main).find((m) => m.path === modulePath && (symbol === undefined || m.symbol === symbol));
  return mod?.params.find((entry) => entry.key === key)?.value;
}

describe("built-in role fixture", () => {
  it("cites its source and holds well-formed ids", () => {
    expect(fixture.source).toBe("https://learn.microsoft.com/azure/role-based-access-control/built-in-roles");
    for (const [name, id] of Object.entries(roles)) expect(id, name).toMatch(/^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$/);
  });
});

describe("role assignments in infra/", () => {
  it("uses only documented role ids in Bicep", () => {
    for (const file of listBicepFiles()) {
      for (const guid of readBicep(file).code.match(GUID) ?? []) {
        expect(roleIds.has(guid.toLowerCase()), `${file}: ${guid} is not in builtInRoles.json`).toBe(true);
      }
    }
  });

  it("uses no GUID in register-app.sh but the WindowsDefenderATP and Microsoft Graph application ids and the console's own app role id", () => {
    const script = readFileSync(path.join(INFRA_DIR, "register-app.sh"), "utf8");
    // The console role's id is this project's own (fixed so reruns are idempotent), not a built-in role.
    const consoleRoleId = "5b0f0c1e-4f3a-4b8e-9a7d-2c6e1f0a9b31";
    expect(new Set((script.match(GUID) ?? []).map((g) => g.toLowerCase()))).toEqual(new Set([WINDOWS_DEFENDER_ATP_APP_ID, MICROSOFT_GRAPH_APP_ID, consoleRoleId]));
    expect(script).toContain(`"id":"${consoleRoleId}","isEnabled":true,"value":"Console.Operator"`);
  });

  it("names each role id correctly in the role tables", () => {
    const all = ["appRoleTable", "containerRoleTable", "deploymentRoleTable", "deployerRoleTable", "deployerCertificateRoleTable"].flatMap(roleTable);
    expect(all.length).toBeGreaterThanOrEqual(9);
    for (const row of all) {
      expect(roles[row.role], `unknown role name '${row.role}'`).toBeDefined();
      expect(row.roleId, row.role).toBe(roles[row.role]);
    }
  });

  it("grants the app identity exactly the intended roles on the intended scopes", () => {
    const app = effectiveRows(true).filter((row) => row.startsWith("app: "));
    expect(app.sort()).toEqual(
      [
        "app: Storage Blob Data Reader @ storage", // the host lists containers; no write on the account
        "app: Storage Queue Data Contributor @ storage",
        "app: Storage Table Data Contributor @ storage",
        "app: Key Vault Secrets Officer @ tokensVault", // writes refresh tokens and the signing key
        "app: Key Vault Secrets User @ credentialVault", // reads mssp-client-secret, nothing more
        "app: Monitoring Metrics Publisher @ appInsights",
        ...[DEFAULT_ALERTS_CONTAINER, ...Object.values(CONTAINERS), "azure-webjobs-hosts", "azure-webjobs-secrets"].map(
          (container) => `app: Storage Blob Data Contributor @ container:${container}`,
        ),
      ].sort(),
    );
  });

  it("tokens vault: only the app holds a role there, Key Vault Secrets Officer", () => {
    const onTokens = effectiveRows(true).filter((row) => row.endsWith(" @ tokensVault"));
    expect(onTokens).toEqual(["app: Key Vault Secrets Officer @ tokensVault"]);
    // KEY_VAULT_URL (tokens and the consent-link signing key) is that vault.
    expect(moduleParam("modules/functionapp.bicep", "tokensVaultUri")).toBe("tokensVault.outputs.uri");
    expect(functionAppBicep.code).toMatch(/^\s*KEY_VAULT_URL: tokensVaultUri$/m);
    expect(moduleParam("modules/keyvault.bicep", "name", "tokensVault")).toBe("keyVaultName");
  });

  it("credential vault: the app reads it with Key Vault Secrets User and cannot write it", () => {
    const appOnCredential = effectiveRows(false).filter((row) => row.endsWith(" @ credentialVault"));
    expect(appOnCredential).toEqual(["app: Key Vault Secrets User @ credentialVault"]);
    // Key Vault Secrets User carries no write action; Officer and Administrator would.
    expect(appOnCredential.join()).not.toMatch(/Officer|Administrator|Contributor/);
    // It is a vault of its own, and the app's client secret is referenced from it (read at the
    // platform, with the app identity, through keyVaultReferenceIdentity).
    expect(moduleParam("modules/keyvault.bicep", "name", "credentialVault")).toBe("credentialVaultName");
    expect(mainVar("credentialVaultName")).toBe("take('kvc-${namePrefix}-${resourceToken}', 24)");
    expect(mainVar("keyVaultName")).toBe("take('kv-${namePrefix}-${resourceToken}', 24)");
    expect(moduleParam("modules/functionapp.bicep", "credentialVaultName")).toBe("credentialVault.outputs.name");
    expect(functionAppBicep.code).toContain("MSSP_CLIENT_SECRET: '@Microsoft.KeyVault(VaultName=${credentialVaultName};SecretName=mssp-client-secret)'");
    expect(at(functionAppBicep, resourceBody(functionAppBicep, "site").body, "properties.keyVaultReferenceIdentity")).toBe("identityId");
    // No setting reaches the tokens vault through a reference: the app reads those at runtime.
    expect(functionAppBicep.code).not.toMatch(/@Microsoft\.KeyVault\(VaultName=\$\{(?!credentialVaultName\})/);
  });

  it("storage account: no Owner, Contributor or blob write role on the whole account for any identity", () => {
    const onAccount = effectiveRows(true).filter((row) => row.endsWith(" @ storage"));
    expect(onAccount.length).toBeGreaterThan(0);
    for (const row of onAccount) {
      expect(row).not.toMatch(/: (Owner|Contributor|Storage Account Contributor|Storage Blob Data Owner|Storage Blob Data Contributor) @/);
    }
    expect(onAccount.filter((row) => row.includes("Blob"))).toEqual(["app: Storage Blob Data Reader @ storage"]);
    // ...and no Blob Data Owner anywhere, on any scope.
    expect(effectiveRows(true).filter((row) => row.includes("Storage Blob Data Owner"))).toEqual([]);
  });

  it("blob writes are scoped to containers: the app's and the host's, never the package container", () => {
    const containers = appBlobContainers();
    expect(new Set(containers)).toEqual(new Set([DEFAULT_ALERTS_CONTAINER, ...Object.values(CONTAINERS), "azure-webjobs-hosts", "azure-webjobs-secrets"]));
    expect(containers).not.toContain(deploymentContainerName());
    // ALERTS_CONTAINER is the same parameter, so a renamed alerts container keeps its role.
    expect(moduleParam("modules/functionapp.bicep", "alertsContainer")).toBe("alertsContainer");
    const [row] = roleTable("containerRoleTable");
    expect(row).toEqual({
      role: "Storage Blob Data Contributor",
      roleId: roles["Storage Blob Data Contributor"],
      scope: "'container:${container}'",
      principal: "app",
    });
    // The loop turns 'container:<name>' into the blobContainer scope kind on that account.
    const passed = Object.fromEntries(modules(main).find((m) => m.symbol === "roleAssignments")?.params.map((e) => [e.key, e.value]) ?? []);
    expect(passed["scopeKind"]).toBe("startsWith(row.scope, 'container:') ? 'blobContainer' : scopeKinds[row.scope]");
    expect(passed["scopeName"]).toBe(
      "startsWith(row.scope, 'container:') ? '${storage.outputs.name}/${substring(row.scope, 10)}' : scopeNames[row.scope]",
    );
    expect("container:".length).toBe(10);
    const module = readBicep("modules/roleAssignment.bicep");
    expect(module.code).toContain(
      "resourceId(scopeTypes.blobContainer, first(nameParts), 'default', last(nameParts))",
    );
    expect(resourceBody(module, "onBlobContainer").body.find((e) => e.key === "scope")?.value).toBe("containerAccount::blobService::container");
  });

  it("the package container is writable only by the deployment identity, which functionAppConfig.deployment uses", () => {
    const onPackage = effectiveRows(true).filter((row) => row.endsWith(` @ container:${deploymentContainerName()}`));
    expect(onPackage).toEqual([`deployment: Storage Blob Data Contributor @ container:${deploymentContainerName()}`]);
    expect(effectiveRows(true).filter((row) => row.startsWith("deployment: "))).toEqual(onPackage);
    // A second identity, created apart from the app's.
    expect(moduleParam("modules/identity.bicep", "name", "deploymentIdentity")).toBe("deploymentIdentityName");
    expect(moduleParam("modules/identity.bicep", "name", "identity")).toBe("identityName");
    expect(mainVar("deploymentIdentityName")).not.toBe(mainVar("identityName"));
    expect(moduleParam("modules/functionapp.bicep", "deploymentIdentityId")).toBe("deploymentIdentity.outputs.id");
    expect(moduleParam("modules/functionapp.bicep", "identityId")).toBe("identity.outputs.id");
    const site = resourceBody(functionAppBicep, "site").body;
    expect(at(functionAppBicep, site, "properties.functionAppConfig.deployment.storage.authentication.type")).toBe("'UserAssignedIdentity'");
    expect(at(functionAppBicep, site, "properties.functionAppConfig.deployment.storage.authentication.userAssignedIdentityResourceId")).toBe(
      "deploymentIdentityId",
    );
    // The app's own credentials stay on the runtime identity.
    expect(functionAppBicep.code).toMatch(/^\s*AZURE_CLIENT_ID: identityClientId$/m);
    expect(functionAppBicep.code).toMatch(/^\s*AzureWebJobsStorage__clientId: identityClientId$/m);
  });

  it("grants the deployer one role on the credential vault only, the one its credential type needs, and only when grantDeployerVaultAccess is on", () => {
    expect(roleTable("deployerRoleTable").map((row) => `${row.principal}: ${row.role} @ ${row.scope}`)).toEqual([
      "deployer: Key Vault Secrets Officer @ credentialVault",
    ]);
    expect(roleTable("deployerCertificateRoleTable").map((row) => `${row.principal}: ${row.role} @ ${row.scope}`)).toEqual([
      "deployer: Key Vault Certificates Officer @ credentialVault",
    ]);
    // secret: store the client secret; certificate: create the certificate; managedIdentity:
    // nothing is stored anywhere, so no role at all.
    expect(deployerTablesByCredential()).toEqual({
      secret: "deployerRoleTable",
      certificate: "deployerCertificateRoleTable",
      managedIdentity: "[]",
    });
    expect(effectiveRows(true).filter((row) => row.startsWith("deployer: ") && !row.endsWith("@ credentialVault"))).toEqual([]);
    expect(mainVar("deployerGranted")).toBe("grantDeployerVaultAccess && !empty(deployerPrincipalId)");
    expect(mainVar("roleTable")).toBe(
      "concat(appRoleTable, containerRoleTable, deploymentRoleTable, deployerGranted ? deployerRolesByCredential[clientCredentialType] : [])",
    );
    const grant = params(main).find((p) => p.name === "grantDeployerVaultAccess");
    expect(grant?.type).toBe("bool");
    expect(grant?.defaultValue).toBe("false");
    expect(literal(paramDefault("deployerPrincipalId"))).toBe("");
  });

  it("creates role assignments in ONE loop over the role table", () => {
    const roleModules = modules(main).filter((mod) => mod.path === "modules/roleAssignment.bicep");
    expect(roleModules).toHaveLength(1);
    expect(main.code).toMatch(/^module roleAssignments 'modules\/roleAssignment\.bicep' = \[\s*for \(row, i\) in roleTable:/m);
    const passed = Object.fromEntries(roleModules[0]?.params.map((entry) => [entry.key, entry.value]) ?? []);
    expect(passed["principalType"]).toBe("row.principal == 'deployer' ? deployerPrincipalType : 'ServicePrincipal'");
    expect(passed["principalId"]).toBe("principalIds[row.principal]");
    const principalIds = Object.fromEntries(objectEntries(main, varValueIndex(main, "principalIds")).map((e) => [e.key, e.value]));
    expect(principalIds).toEqual({
      app: "identity.outputs.principalId",
      deployment: "deploymentIdentity.outputs.principalId",
      deployer: "deployerPrincipalId",
    });
    // Every literal scope of the tables has a resource and a scope kind the module accepts.
    const scopeNames = Object.fromEntries(objectEntries(main, varValueIndex(main, "scopeNames")).map((e) => [e.key, e.value]));
    const scopeKinds = Object.fromEntries(objectEntries(main, varValueIndex(main, "scopeKinds")).map((e) => [e.key, literal(e.value)]));
    expect(scopeNames).toEqual({
      storage: "storage.outputs.name",
      tokensVault: "tokensVault.outputs.name",
      credentialVault: "credentialVault.outputs.name",
      appInsights: "monitoring.outputs.appInsightsName",
    });
    expect(scopeKinds).toEqual({ storage: "storage", tokensVault: "keyVault", credentialVault: "keyVault", appInsights: "appInsights" });
    for (const row of ["appRoleTable", "deployerRoleTable", "deployerCertificateRoleTable"].flatMap(roleTable)) expect(Object.keys(scopeNames), row.role).toContain(row.scope);
    // No role assignment is declared anywhere but in the roleAssignment module, except the one
    // each sink module grants on the resource it creates itself (a workspace may be in another
    // resource group, out of the role table's reach).
    const SINK_MODULE_ROLES: Record<string, string> = {
      "modules/sentinel.bicep": roles["Monitoring Metrics Publisher"] ?? "",
      "modules/eventhubs.bicep": roles["Azure Event Hubs Data Sender"] ?? "",
    };
    for (const file of listBicepFiles()) {
      const code = readBicep(file).code;
      const count = (code.match(/'Microsoft\.Authorization\/roleAssignments@/g) ?? []).length;
      if (file === "modules/roleAssignment.bicep") expect(count).toBe(4); // one per scope kind
      else if (file in SINK_MODULE_ROLES) {
        expect(count, file).toBe(1);
        expect(code, file).toContain(SINK_MODULE_ROLES[file]);
        expect(code, file).toMatch(/name: guid\((dataCollectionRule|hub)\.id, \w+, \w+\)/);
      } else expect(count, file).toBe(0);
    }
  });

  it("names assignments guid(scope, principal, role) and uses subscription-level role definition ids", () => {
    const module = readBicep("modules/roleAssignment.bicep");
    expect(module.code).toMatch(/^var assignmentName = guid\(scopeResourceId, principalId, roleDefinitionId\)$/m);
    expect(module.code).toContain("roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)");
    expect((module.code.match(/^\s*name: assignmentName$/gm) ?? []).length).toBe(4);
    const kinds = params(module).find((p) => p.name === "scopeKind")?.decorators.find((d) => d.name === "allowed")?.args ?? "";
    expect([...kinds.matchAll(/'([^']+)'/g)].map((m) => m[1]).sort()).toEqual(["appInsights", "blobContainer", "keyVault", "storage"]);
  });
});
