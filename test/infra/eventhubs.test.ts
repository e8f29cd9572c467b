/**
 * The Event Hubs sink's infrastructure (infra/modules/eventhubs.bicep): a Standard namespace that
 * accepts Entra ID only, one hub with a partition parameter, the Data Sender role for the app on
 * that hub alone, and outputs that are exactly the settings the sink reads.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { EVENTHUB_SETTING_NAMES } from "../../shared/sinks/eventhubs/settings";
import { bracketProblems, literal, outputs, params, readBicep, resourceBody, resourceTypes } from "./bicepText";

const FILE = "modules/eventhubs.bicep";
const bicep = readBicep(FILE);
const roles = (JSON.parse(readFileSync(path.join(__dirname, "builtInRoles.json"), "utf8")) as { roles: Record<string, string> }).roles;

/** The value of a top-level entry of a resource, as written. */
function entry(symbol: string, key: string): string | undefined {
  return resourceBody(bicep, symbol).body.find((e) => e.key === key)?.value;
}

describe("infra/modules/eventhubs.bicep", () => {
  it("parses: brackets balance and only the expected resource types appear", () => {
    expect(bracketProblems(bicep)).toEqual([]);
    expect(resourceTypes(bicep)).toEqual([
      "Microsoft.EventHub/namespaces@2024-01-01",
      "Microsoft.EventHub/namespaces/eventhubs@2024-01-01",
      "Microsoft.Authorization/roleAssignments@2022-04-01",
    ]);
  });

  it("creates a Standard namespace that refuses keys and old TLS", () => {
    expect(resourceBody(bicep, "namespace").type).toBe("Microsoft.EventHub/namespaces@2024-01-01");
    expect(entry("namespace", "sku")).toMatch(/name: 'Standard'/);
    const properties = entry("namespace", "properties") ?? "";
    expect(properties).toMatch(/^\s*disableLocalAuth: true$/m);
    expect(properties).toMatch(/^\s*minimumTlsVersion: '1\.2'$/m);
    // No shared access policy anywhere, so no key to leak or rotate.
    expect(bicep.code).not.toMatch(/authorizationRules|listKeys|RootManage/i);
  });

  it("creates the hub in that namespace with a bounded partitions parameter", () => {
    expect(entry("hub", "parent")).toBe("namespace");
    expect(entry("hub", "name")).toBe("eventHubName");
    expect(entry("hub", "properties")).toMatch(/^\s*partitionCount: partitionCount$/m);
    const partitions = params(bicep).find((p) => p.name === "partitionCount");
    expect(partitions?.type).toBe("int");
    expect(partitions?.decorators.find((d) => d.name === "minValue")?.args).toBe("1");
    expect(partitions?.decorators.find((d) => d.name === "maxValue")?.args).toBe("32");
    const retention = params(bicep).find((p) => p.name === "messageRetentionInDays");
    expect(retention?.decorators.find((d) => d.name === "maxValue")?.args).toBe("7");
  });

  it("grants Azure Event Hubs Data Sender to the given principal on the hub only", () => {
    const roleId = literal(/^var dataSenderRoleId = (.*)$/m.exec(bicep.code)?.[1]);
    expect(roleId).toBe(roles["Azure Event Hubs Data Sender"]);
    expect(roleId).toBe("2b629674-e913-4c01-ae53-ef4638d8f975");
    expect(entry("sender", "scope")).toBe("hub");
    expect(entry("sender", "name")).toBe("guid(hub.id, senderPrincipalId, dataSenderRoleId)");
    const properties = entry("sender", "properties") ?? "";
    expect(properties).toContain("roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataSenderRoleId)");
    expect(properties).toMatch(/^\s*principalId: senderPrincipalId$/m);
    expect(params(bicep).find((p) => p.name === "senderPrincipalId")?.defaultValue).toBeUndefined();
  });

  it("outputs the namespace host and the hub name, and names the settings they feed", () => {
    expect(outputs(bicep)).toEqual(expect.arrayContaining(["fullyQualifiedNamespace", "eventHubName"]));
    expect(bicep.code).toMatch(/^output fullyQualifiedNamespace string = split\(replace\(namespace\.properties\.serviceBusEndpoint, 'https:\/\/', ''\), ':'\)\[0\]$/m);
    expect(bicep.code).toMatch(/^output eventHubName string = hub\.name$/m);
    // The header tells main.bicep which app setting each output feeds: the names the sink parses.
    expect(bicep.source).toMatch(/^\/\/\s+EVENTHUB_FULLY_QUALIFIED_NAMESPACE = .*eventHubs\.outputs\.fullyQualifiedNamespace$/m);
    expect(bicep.source).toMatch(/^\/\/\s+EVENTHUB_NAME += .*eventHubs\.outputs\.eventHubName$/m);
    for (const name of EVENTHUB_SETTING_NAMES) expect(bicep.source).toContain(name);
  });

  it("describes every parameter", () => {
    for (const p of params(bicep)) expect(p.decorators.map((d) => d.name), p.name).toContain("description");
  });
});
