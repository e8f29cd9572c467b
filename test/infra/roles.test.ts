/**
 * Role assignments: every role-definition GUID in infra/ is a documented built-in role, each role
 * in the role table is the one its name says, and the app identity gets exactly the intended set.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  INFRA_DIR,
  arrayObjects,
  listBicepFiles,
  literal,
  modules,
  readBicep,
  varValueIndex,
} from "./bicepText";

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

interface RoleRow {
  role: string;
  roleId: string;
  scope: string;
  principal: string;
}

function roleTable(name: string): RoleRow[] {
  const main = readBicep("main.bicep");
  return arrayObjects(main, varValueIndex(main, name)).map((entries) => {
    const get = (key: string): string => literal(entries.find((entry) => entry.key === key)?.value) ?? "";
    return { role: get("role"), roleId: get("roleId"), scope: get("scope"), principal: get("principal") };
  });
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

  it("uses no GUID in register-app.sh but the WindowsDefenderATP application id and the console's own app role id", () => {
    const script = readFileSync(path.join(INFRA_DIR, "register-app.sh"), "utf8");
    // The console role's id is this project's own (fixed so reruns are idempotent), not a built-in role.
    const consoleRoleId = "5b0f0c1e-4f3a-4b8e-9a7d-2c6e1f0a9b31";
    expect(new Set((script.match(GUID) ?? []).map((g) => g.toLowerCase()))).toEqual(new Set([WINDOWS_DEFENDER_ATP_APP_ID, consoleRoleId]));
    expect(script).toContain(`"id":"${consoleRoleId}","isEnabled":true,"value":"Console.Operator"`);
  });

  it("names each role id correctly in the role table", () => {
    for (const row of [...roleTable("appRoleTable"), ...roleTable("deployerRoleTable")]) {
      expect(roles[row.role], `unknown role name '${row.role}'`).toBeDefined();
      expect(row.roleId, row.role).toBe(roles[row.role]);
    }
  });

  it("grants the app identity exactly the intended roles on the intended resources", () => {
    const app = roleTable("appRoleTable").map((row) => `${row.principal}: ${row.role} @ ${row.scope}`);
    expect(app.sort()).toEqual(
      [
        "app: Key Vault Secrets Officer @ keyVault", // writes refresh tokens + signing key, reads the client secret
        "app: Monitoring Metrics Publisher @ appInsights",
        "app: Storage Blob Data Owner @ storage",
        "app: Storage Queue Data Contributor @ storage",
        "app: Storage Table Data Contributor @ storage",
      ].sort(),
    );
  });

  it("grants the optional deployer only Key Vault Secrets Officer, and only when deployerPrincipalId is set", () => {
    expect(roleTable("deployerRoleTable").map((row) => `${row.principal}: ${row.role} @ ${row.scope}`)).toEqual([
      "deployer: Key Vault Secrets Officer @ keyVault",
    ]);
    const main = readBicep("main.bicep");
    expect(main.code).toMatch(
      /^var roleTable = concat\(appRoleTable, empty\(deployerPrincipalId\) \? \[\] : deployerRoleTable\)$/m,
    );
  });

  it("creates role assignments in ONE loop over the role table", () => {
    const main = readBicep("main.bicep");
    const roleModules = modules(main).filter((mod) => mod.path === "modules/roleAssignment.bicep");
    expect(roleModules).toHaveLength(1);
    expect(main.code).toMatch(/^module roleAssignments 'modules\/roleAssignment\.bicep' = \[\s*for \(row, i\) in roleTable:/m);
    const passed = Object.fromEntries(roleModules[0]?.params.map((entry) => [entry.key, entry.value]) ?? []);
    expect(passed["principalType"]).toBe("row.principal == 'app' ? 'ServicePrincipal' : deployerPrincipalType");
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
      if (file === "modules/roleAssignment.bicep") expect(count).toBe(3); // one per scope kind
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
    expect((module.code.match(/^\s*name: assignmentName$/gm) ?? []).length).toBe(3);
  });
});
