/** Every Storage name the app uses (shared/storage/names.ts) is created by infra/. */
import { describe, expect, it } from "vitest";
import { CONTAINERS, DEFAULT_ALERTS_CONTAINER, QUEUES, TABLES } from "../../shared/storage/names";
import { arrayStrings, literal, modules, params, readBicep, resourceBody, varValueIndex } from "./bicepText";

const main = readBicep("main.bicep");
const storage = readBicep("modules/storage.bicep");
const storageModule = modules(main).find((mod) => mod.path === "modules/storage.bicep");
const passed = (key: string): string | undefined => storageModule?.params.find((entry) => entry.key === key)?.value;

/** Strings of the array literal assigned to `var name` in main.bicep. */
function mainVarStrings(name: string): string[] {
  return arrayStrings(main, varValueIndex(main, name));
}

/** The array expression a storage-module resource loops over: `[for x in <array>: {...}]`. */
function loopSource(symbol: string): string | undefined {
  const match = new RegExp(`^resource[ \\t]+${symbol}[ \\t]+'[^']+'[ \\t]*=[ \\t]*\\[\\s*for[ \\t]+\\w+[ \\t]+in[ \\t]+(\\w+)[ \\t]*:`, "m").exec(
    storage.code,
  );
  return match?.[1];
}

describe("storage names", () => {
  it("creates every queue in QUEUES", () => {
    expect(mainVarStrings("queueNames").sort()).toEqual(Object.values(QUEUES).sort());
    expect(passed("queueNames")).toBe("queueNames");
    expect(loopSource("queues")).toBe("queueNames");
    expect(resourceBody(storage, "queues").type).toBe("Microsoft.Storage/storageAccounts/queueServices/queues@2024-01-01");
  });

  it("creates the poison queue the Functions runtime uses for tenant-pulls", () => {
    expect(mainVarStrings("queueNames")).toContain(`${QUEUES.tenantPulls}-poison`);
  });

  it("creates every table in TABLES", () => {
    expect(mainVarStrings("tableNames").sort()).toEqual(Object.values(TABLES).sort());
    expect(passed("tableNames")).toBe("tableNames");
    expect(loopSource("tables")).toBe("tableNames");
    expect(resourceBody(storage, "tables").type).toBe("Microsoft.Storage/storageAccounts/tableServices/tables@2024-01-01");
  });

  it("creates the alerts container from the same parameter that feeds ALERTS_CONTAINER, defaulting to DEFAULT_ALERTS_CONTAINER", () => {
    const alerts = params(main).find((p) => p.name === "alertsContainer");
    expect(literal(alerts?.defaultValue)).toBe(DEFAULT_ALERTS_CONTAINER);
    const containers = passed("containerNames") ?? "";
    expect(containers.replace(/\s+/g, " ")).toBe("concat([ deploymentContainerName alertsContainer ], appContainerNames, hostContainerNames)");
    expect(loopSource("containers")).toBe("containerNames");
    const fnModule = modules(main).find((mod) => mod.path === "modules/functionapp.bicep");
    expect(fnModule?.params.find((entry) => entry.key === "alertsContainer")?.value).toBe("alertsContainer");
    expect(fnModule?.params.find((entry) => entry.key === "deploymentContainerName")?.value).toBe("deploymentContainerName");
  });

  it("creates every container in CONTAINERS", () => {
    expect(mainVarStrings("appContainerNames").sort()).toEqual(Object.values(CONTAINERS).sort());
  });

  it("creates the Functions host's containers, on which alone its blob write role is granted", () => {
    // azure-webjobs-hosts: host and timer locks; azure-webjobs-secrets: function and host keys.
    expect(mainVarStrings("hostContainerNames").sort()).toEqual(["azure-webjobs-hosts", "azure-webjobs-secrets"]);
    for (const name of mainVarStrings("hostContainerNames")) expect(Object.values(CONTAINERS)).not.toContain(name);
  });

  it("uses names Storage accepts", () => {
    for (const container of Object.values(CONTAINERS)) expect(container).toMatch(/^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/);
    for (const queue of Object.values(QUEUES)) expect(queue).toMatch(/^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/);
    for (const table of Object.values(TABLES)) expect(table).toMatch(/^[A-Za-z][A-Za-z0-9]{2,62}$/);
    const deployment = /^var deploymentContainerName = '([^']+)'$/m.exec(main.code)?.[1];
    expect(deployment).toMatch(/^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/);
    expect(deployment).not.toBe(DEFAULT_ALERTS_CONTAINER);
  });
});
