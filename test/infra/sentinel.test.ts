/**
 * The Microsoft Sentinel sink's resources (infra/modules/sentinel.bicep): the custom table and the
 * DCR's stream declare exactly the sink's record, the DCR is `kind: 'Direct'` with a data flow into
 * the table, the app's identity gets Monitoring Metrics Publisher on the DCR, and the outputs are
 * the values of the sink's app settings.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { SENTINEL_COLUMNS } from "../../shared/sinks/sentinel/records";
import { DEFAULT_SENTINEL_STREAM, SENTINEL_SETTING_NAMES } from "../../shared/sinks/sentinel/settings";
import { arrayObjects, arrayStrings, literal, objectEntries, outputs, params, readBicep, resourceBody, varValueIndex, type ObjectEntry } from "./bicepText";

const sentinel = readBicep("modules/sentinel.bicep");
const roles = (JSON.parse(readFileSync(path.join(__dirname, "builtInRoles.json"), "utf8")) as { roles: Record<string, string> }).roles;
const RESERVED = ["TenantId", "Title", "Type", "id", "_ResourceId", "_SubscriptionId", "UniqueId"];

/** The value of `key` in an object's entries, following nested objects (`properties.schema.name`). */
function at(entries: readonly ObjectEntry[], dotted: string): ObjectEntry | undefined {
  const [first, ...rest] = dotted.split(".");
  const entry = entries.find((e) => e.key === first);
  if (!entry || rest.length === 0) return entry;
  return sentinel.masked[entry.valueIndex] === "{" ? at(objectEntries(sentinel, entry.valueIndex), rest.join(".")) : undefined;
}

const value = (entries: readonly ObjectEntry[], dotted: string): string | undefined => at(entries, dotted)?.value;
const varValue = (name: string): string => new RegExp(`^var ${name} = (.+)$`, "m").exec(sentinel.code)?.[1]?.trim() ?? "";

describe("Sentinel module (infra/modules/sentinel.bicep)", () => {
  it("says at its top how main.bicep calls it and which app settings its outputs feed", () => {
    const header = sentinel.source.split("\n").filter((line) => line.startsWith("//")).join("\n");
    expect(header).toMatch(/module sentinel 'modules\/sentinel\.bicep'/);
    for (const name of SENTINEL_SETTING_NAMES) expect(header).toMatch(new RegExp(`${name}\\s+= sentinel\\.outputs\\.`));
    for (const match of header.matchAll(/sentinel\.outputs\.(\w+)/g)) expect(outputs(sentinel)).toContain(match[1]);
  });

  it("takes an existing workspace id or creates one, and describes every parameter", () => {
    const byName = new Map(params(sentinel).map((p) => [p.name, p]));
    expect(literal(byName.get("workspaceId")?.defaultValue)).toBe("");
    expect(literal(byName.get("workspaceName")?.defaultValue)).toBe("");
    for (const name of ["location", "dataCollectionRuleName", "principalId"]) expect(byName.get(name)?.defaultValue, name).toBeUndefined();
    for (const p of byName.values()) expect(p.decorators.map((d) => d.name), p.name).toContain("description");
    expect(sentinel.code).toMatch(/resource createdWorkspace 'Microsoft\.OperationalInsights\/workspaces@[\d-]+' = if \(empty\(workspaceId\)\)/);
    expect(varValue("workspaceResourceName")).toBe("empty(workspaceId) ? workspaceName : last(split(workspaceId, '/'))");
  });

  it("declares the sink's record, column for column, in the table and the stream; no reserved name", () => {
    const declared = arrayObjects(sentinel, varValueIndex(sentinel, "columns")).map((entries) => ({
      name: literal(value(entries, "name")),
      type: literal(value(entries, "type")),
    }));
    expect(declared).toEqual(SENTINEL_COLUMNS.map(({ name, type }) => ({ name, type })));
    for (const reserved of RESERVED) expect(declared.map((c) => c.name)).not.toContain(reserved);

    const table = resourceBody(sentinel, "table");
    expect(table.type).toMatch(/^Microsoft\.OperationalInsights\/workspaces\/tables@/);
    expect(varValue("tableName")).toBe("'DefenderAlerts_CL'");
    expect(value(table.body, "name")).toBe("'${workspaceResourceName}/${tableName}'");
    expect(value(table.body, "properties.plan")).toBe("'Analytics'");
    expect(value(table.body, "properties.schema.name")).toBe("tableName");
    expect(value(table.body, "properties.schema.columns")).toBe("columns");
  });

  it("is a Direct DCR whose stream is the app's default, flowing unchanged into the table after it exists", () => {
    const dcr = resourceBody(sentinel, "dataCollectionRule");
    expect(dcr.type).toMatch(/^Microsoft\.Insights\/dataCollectionRules@/);
    expect(value(dcr.body, "kind")).toBe("'Direct'");
    expect(varValue("streamName")).toBe("'Custom-${tableName}'");
    expect(`Custom-${literal(varValue("tableName"))}`).toBe(DEFAULT_SENTINEL_STREAM);

    const stream = at(dcr.body, "properties.streamDeclarations.${streamName}");
    expect(stream?.value.replace(/\s+/g, " ")).toBe("{ columns: [for column in columns: { name: column.name type: column.type }] }");

    const destination = arrayObjects(sentinel, at(dcr.body, "properties.destinations.logAnalytics")?.valueIndex ?? -1)[0] ?? [];
    expect(value(destination, "workspaceResourceId")).toBe("resourceId('Microsoft.OperationalInsights/workspaces', workspaceResourceName)");
    const [flow] = arrayObjects(sentinel, at(dcr.body, "properties.dataFlows")?.valueIndex ?? -1);
    expect(flow).toBeDefined();
    const list = (key: string) => arrayStrings(sentinel, at(flow ?? [], key)?.valueIndex ?? -1);
    expect(value(flow ?? [], "streams")?.replace(/\s+/g, " ")).toBe("[ streamName ]");
    expect(list("destinations")).toEqual([literal(value(destination, "name"))]);
    expect(value(flow ?? [], "outputStream")).toBe("streamName");
    expect(value(flow ?? [], "transformKql")).toBe("'source'");
    expect(value(dcr.body, "dependsOn")?.replace(/\s+/g, " ")).toBe("[ table ]");
  });

  it("grants the uploading principal Monitoring Metrics Publisher on the DCR only", () => {
    expect(varValue("monitoringMetricsPublisher")).toBe(`'${roles["Monitoring Metrics Publisher"]}'`);
    const assignment = resourceBody(sentinel, "publisher");
    expect(assignment.type).toBe("Microsoft.Authorization/roleAssignments@2022-04-01");
    expect(value(assignment.body, "scope")).toBe("dataCollectionRule");
    expect(value(assignment.body, "name")).toBe("guid(dataCollectionRule.id, principalId, monitoringMetricsPublisher)");
    expect(value(assignment.body, "properties.roleDefinitionId")).toBe("subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)");
    expect(value(assignment.body, "properties.principalId")).toBe("principalId");
    expect(sentinel.code.match(/'Microsoft\.Authorization\/roleAssignments@/g)).toHaveLength(1);
  });

  it("outputs the rule's own ingestion endpoint, its immutable id and the stream", () => {
    const output = (name: string) => new RegExp(`^output ${name} string = (.+)$`, "m").exec(sentinel.code)?.[1]?.trim();
    expect(outputs(sentinel).sort()).toEqual(["dcrImmutableId", "ingestionEndpoint", "streamName"]);
    expect(output("ingestionEndpoint")).toBe("dataCollectionRule.properties.endpoints.logsIngestion");
    expect(output("dcrImmutableId")).toBe("dataCollectionRule.properties.immutableId");
    expect(output("streamName")).toBe("streamName");
  });
});
