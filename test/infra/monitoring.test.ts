/**
 * The monitoring the Bicep deploys reads what the app writes: the alert rules and the fleet-health
 * workbook query the metric names, the pull-run record and the attribute keys of
 * shared/telemetry/names.ts, the log messages they match exist in the code, thresholds are
 * parameters, and host.json turns on the host's OpenTelemetry mode the app's exporter relies on.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { pullRunFields } from "../../shared/telemetry/openTelemetry";
import { METRICS, PULL_RUN_EVENT } from "../../shared/telemetry/names";
import type { PullReport } from "../../shared/pull/observer";
import { INFRA_DIR, REPO_ROOT, arrayObjects, literal, modules, params, readBicep, resourceBody, varValueIndex, type ObjectEntry } from "./bicepText";

const alerts = readBicep("modules/alerts.bicep");
const main = readBicep("main.bicep");
const workbook = JSON.parse(readFileSync(path.join(INFRA_DIR, "modules", "fleetHealth.workbook.json"), "utf8")) as {
  version: string;
  items: Array<{ type: number; name: string; content: { query?: string; resourceType?: string; crossComponentResources?: string[] } }>;
  fallbackResourceIds: string[];
};
const source = (file: string): string => readFileSync(path.join(REPO_ROOT, file), "utf8");

/** The KQL text of `var <name> = '''...'''` (or `replace('''...''', ...)`). */
function queryVar(name: string): string {
  const start = varValueIndex(alerts, name);
  const open = alerts.code.indexOf("'''", start);
  return alerts.code.slice(open + 3, alerts.code.indexOf("'''", open + 3));
}

interface Rule {
  key: string;
  severity: number;
  query: string;
  dimensions: string;
}
const value = (entries: ObjectEntry[], key: string): string => entries.find((e) => e.key === key)?.value ?? "";
const rules: Rule[] = arrayObjects(alerts, varValueIndex(alerts, "alertRules")).map((entries) => ({
  key: literal(value(entries, "key")) ?? "",
  severity: Number(value(entries, "severity")),
  query: queryVar(value(entries, "query")),
  dimensions: value(entries, "dimensions"),
}));
const rule = (key: string): Rule => {
  const found = rules.find((r) => r.key === key);
  if (!found) throw new Error(`no alert rule ${key}`);
  return found;
};

/** Every `Properties.<key>` a query reads. */
const propertyKeys = (kql: string): string[] => [...kql.matchAll(/Properties\.([A-Za-z]+)/g)].map((m) => m[1] as string);
/** Every quoted `mssp.*` name a query reads. */
const metricNames = (kql: string): string[] => [...kql.matchAll(/"(mssp\.[a-z_.]+)"/g)].map((m) => m[1] as string);

const sampleReport: PullReport = {
  tenantId: "t",
  tenantName: "n",
  invocationId: "i",
  startedAt: "2026-01-01T00:00:00.000Z",
  durationMs: 1,
  outcome: "failed",
  errorCode: "e",
  category: "transient",
  alerts: 0,
  deadLetters: 0,
  lagSeconds: 1,
  tokenRefreshed: false,
  health: { before: "healthy", after: "degraded" },
  notable: { alerts: [], total: 0 },
  sinksBehind: [{ sink: "splunk", parkedPages: 3, behindSince: "2026-01-01T00:00:00.000Z" }],
};
/** Attribute keys the app writes: the pull-run record's, plus those of log lines the rules match. */
const writtenKeys = new Set([...Object.keys(pullRunFields(sampleReport)), "error"]);

describe("host.json", () => {
  const host = JSON.parse(source("host.json")) as { telemetryMode?: string; logging?: Record<string, unknown> };

  it("runs the host in OpenTelemetry mode, as Microsoft documents for worker-side OpenTelemetry", () => {
    expect(host.telemetryMode).toBe("OpenTelemetry");
  });

  it("carries no Application Insights SDK section (it does not apply in OpenTelemetry mode)", () => {
    expect(host.logging?.["applicationInsights"]).toBeUndefined();
  });
});

describe("alert rules", () => {
  it("deploys the four rules the issue asks for, in one loop, as stateful log alerts on the workspace", () => {
    expect(rules.map((r) => r.key).sort()).toEqual(["app-credential", "pull-poisoned", "reconsent-required", "tenant-failing"]);
    expect(alerts.code).toMatch(/^resource rules 'Microsoft\.Insights\/scheduledQueryRules@2023-12-01' = \[\s*for rule in alertRules:/m);
    expect((alerts.code.match(/'Microsoft\.Insights\/scheduledQueryRules@/g) ?? []).length).toBe(1);
    const body = alerts.code.slice(alerts.code.indexOf("resource rules "));
    expect(body).toContain("kind: 'LogAlert'");
    expect(body).toMatch(/scopes: \[\s*workspace\.id\s*\]/);
    expect(body).toContain("autoMitigate: true");
    expect(body).toContain("timeAggregation: 'Count'");
    expect(body).toContain("threshold: 0");
    expect(rule("app-credential").severity).toBeLessThan(rule("tenant-failing").severity);
  });

  it("queries only what the app writes: pull-run records, documented attributes, real log messages", () => {
    for (const { key, query } of rules) {
      expect(query, key).toMatch(/^\s*(let [^\n]*\n)?AppTraces\b/);
      for (const property of propertyKeys(query)) expect(writtenKeys.has(property), `${key}: Properties.${property}`).toBe(true);
      expect(query, key).not.toMatch(/token|secret|password/i);
    }
    expect(rule("tenant-failing").query).toContain(`tostring(Properties.event) == "${PULL_RUN_EVENT}"`);
    expect(rule("reconsent-required").query).toContain(`tostring(Properties.event) == "${PULL_RUN_EVENT}"`);
    expect(rule("reconsent-required").query).toContain('tostring(Properties.healthAfter) == "reconsent_required"');
    expect(rule("app-credential").query).toContain('tostring(Properties.category) == "app_credential"');
    for (const [message, file] of [
      ["MSSP application credential rejected", "shared/pull/tenantPull.ts"],
      ["the MSSP application's credential was rejected", "shared/consent/consentFlow.ts"],
    ] as const) {
      expect(rule("app-credential").query).toContain(`Message startswith "${message}"`);
      // A plain or template string literal (the remedy the message names may be interpolated).
      expect([`log.error("${message}`, `log.error(\`${message}`].some((call) => source(file).includes(call)), `${file}: log.error("${message}...`).toBe(true);
    }
    expect(rule("pull-poisoned").query).toContain('Message has "moved to the poison queue"');
    expect(source("shared/pull/pullRequests.ts")).toMatch(/log\.error\("[^"]*moved to the poison queue"/);
  });

  it("alerts per tenant where a tenant is concerned, and once for the app credential", () => {
    for (const key of ["tenant-failing", "reconsent-required", "pull-poisoned"]) expect(rule(key).dimensions, key).toContain("'tenantId'");
    expect(rule("app-credential").dimensions).not.toContain("tenantId");
    // Each dimension is a column the query returns.
    for (const { key, query, dimensions } of rules) {
      for (const dimension of [...dimensions.matchAll(/'([A-Za-z]+)'/g)].map((m) => m[1] as string)) {
        expect(query, `${key}: ${dimension}`).toMatch(new RegExp(`\\b${dimension} = `));
      }
    }
  });

  it("takes the number of failed cycles as a parameter, default 3, passed from main.bicep", () => {
    expect(queryVar("failingTenantQuery")).toContain("let cycles = __CYCLES__;");
    expect(alerts.code).toContain("'__CYCLES__', string(failingCycles))");
    expect(rule("tenant-failing").query).toContain("where runs == cycles and failures == cycles");
    const inModule = params(alerts).find((p) => p.name === "failingCycles");
    const inMain = params(main).find((p) => p.name === "alertFailingCycles");
    expect(inMain?.defaultValue).toBe("3");
    for (const decl of [inModule, inMain]) {
      expect(decl?.decorators.find((d) => d.name === "minValue")?.args).toBe("2");
      expect(decl?.decorators.find((d) => d.name === "maxValue")?.args).toBe("50");
    }
    const passed = modules(main).find((m) => m.symbol === "alerts")?.params ?? [];
    expect(Object.fromEntries(passed.map((e) => [e.key, e.value]))).toMatchObject({
      failingCycles: "alertFailingCycles",
      alertEmail: "alertEmail",
      logAnalyticsName: "monitoring.outputs.logAnalyticsName",
    });
  });

  it("notifies an optional e-mail action group, and none when alertEmail is empty", () => {
    expect(literal(params(main).find((p) => p.name === "alertEmail")?.defaultValue)).toBe("");
    expect(alerts.code).toMatch(/^resource actionGroup 'Microsoft\.Insights\/actionGroups@2023-01-01' = if \(!empty\(alertEmail\)\)/m);
    expect(alerts.code).toMatch(/actionGroups: empty\(alertEmail\) \? \[\] : \[\s*actionGroup\.id\s*\]/);
  });
});

describe("fleet-health workbook", () => {
  const queries = workbook.items.flatMap((item) => (item.content.query ? [{ name: item.name, query: item.content.query, item }] : []));

  it("is deployed from the JSON file with the workspace filled in", () => {
    const { body } = resourceBody(alerts, "fleetHealth");
    const properties = body.find((e) => e.key === "properties")?.value ?? "";
    expect(properties).toContain("serializedData: replace(loadTextContent('fleetHealth.workbook.json'), '__WORKSPACE_ID__', workspace.id)");
    expect(properties).toContain("sourceId: workspace.id");
    expect(workbook.fallbackResourceIds).toEqual(["__WORKSPACE_ID__"]);
    for (const { name, item } of queries) {
      expect(item.content.resourceType, name).toBe("microsoft.operationalinsights/workspaces");
      expect(item.content.crossComponentResources, name).toEqual(["__WORKSPACE_ID__"]);
    }
  });

  it("shows tenants by health, failures by code, alerts delivered per tenant and lag", () => {
    expect(queries.map((q) => q.name)).toEqual(expect.arrayContaining(["tenants-by-health", "failures-by-code", "alerts-delivered", "lag"]));
    const byName = new Map(queries.map((q) => [q.name, q.query]));
    expect(byName.get("tenants-by-health")).toContain("Properties.healthAfter");
    expect(byName.get("failures-by-code")).toContain(`"${METRICS.pulls}"`);
    expect(byName.get("alerts-delivered")).toContain(`"${METRICS.alertsDelivered}"`);
    expect(byName.get("lag")).toContain(`"${METRICS.pullLag}"`);
  });

  it("reads only documented metric names and attributes the app writes", () => {
    const documented = new Set<string>(Object.values(METRICS));
    const metricAttributes = new Set(["tenantId", "outcome", "category", "errorCode"]);
    for (const { name, query } of queries) {
      for (const metric of metricNames(query)) expect(documented.has(metric), `${name}: ${metric}`).toBe(true);
      const keys = propertyKeys(query);
      const allowed = query.includes("AppMetrics") ? metricAttributes : writtenKeys;
      for (const key of keys) expect(allowed.has(key), `${name}: Properties.${key}`).toBe(true);
    }
  });
});

describe("telemetry documentation", () => {
  const operations = source("docs/operations.md");
  const section = operations.split(/^## Telemetry$/m)[1]?.split(/^## /m)[0] ?? "";

  it("documents every metric, the pull-run record and every alert rule in docs/operations.md", () => {
    for (const name of Object.values(METRICS)) expect(section, name).toContain(`\`${name}\``);
    expect(section).toContain(`\`${PULL_RUN_EVENT}\``);
    for (const { key } of rules) expect(section, key).toContain(`\`${key}\``);
  });
});
