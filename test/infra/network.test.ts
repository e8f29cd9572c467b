/**
 * Network isolation (main.bicep vnetEnabled, infra/modules/network.bicep): off by default, with
 * today's public endpoints; on, a VNet whose app subnet is delegated to Flex Consumption, the
 * function app integrated with it, private endpoints and linked private DNS zones for blob, queue,
 * table and both key vaults, and public network access off on the storage account and the vaults.
 *
 * Without a Bicep compiler the ternaries on the mode are evaluated here for both values of the
 * parameter, so each assertion names the value Azure receives in that mode.
 */
import { describe, expect, it } from "vitest";
import {
  type ObjectEntry,
  type ScannedBicep,
  arrayObjects,
  arrayStrings,
  literal,
  modules,
  objectEntries,
  outputs,
  params,
  readBicep,
  resourceBody,
  varValueIndex,
} from "./bicepText";

const main = readBicep("main.bicep");
const network = readBicep("modules/network.bicep");
const storage = readBicep("modules/storage.bicep");
const keyVault = readBicep("modules/keyvault.bicep");
const functionApp = readBicep("modules/functionapp.bicep");

/** The entry at a dotted path inside an object literal's entries (`properties.subnet.id`). */
function entryAt(scanned: ScannedBicep, entries: ObjectEntry[], dottedPath: string): ObjectEntry | undefined {
  let current = entries;
  const parts = dottedPath.split(".");
  for (const [index, part] of parts.entries()) {
    const entry = current.find((e) => e.key === part);
    if (!entry) return undefined;
    if (index === parts.length - 1) return entry;
    if (scanned.masked[entry.valueIndex] !== "{") return undefined;
    current = objectEntries(scanned, entry.valueIndex);
  }
  return undefined;
}

const at = (scanned: ScannedBicep, entries: ObjectEntry[], dottedPath: string): string | undefined =>
  entryAt(scanned, entries, dottedPath)?.value;

/** The object elements of the array literal at a dotted path. */
function objectsAt(scanned: ScannedBicep, entries: ObjectEntry[], dottedPath: string): ObjectEntry[][] {
  const entry = entryAt(scanned, entries, dottedPath);
  if (!entry || scanned.masked[entry.valueIndex] !== "[") return [];
  return arrayObjects(scanned, entry.valueIndex);
}

/**
 * The value Azure receives for an expression that is a literal, or `flag ? 'a' : 'b'` /
 * `flag ? null : x` over one boolean: undefined for any other shape, so a test fails on it.
 */
function evaluate(expression: string | undefined, flag: string, on: boolean): string | null | undefined {
  if (expression === undefined) return undefined;
  const plain = literal(expression);
  if (plain !== undefined) return plain;
  const match = new RegExp(`^${flag} \\? ('[^']*'|null) : ('[^']*'|null)$`).exec(expression.trim());
  if (!match) return undefined;
  const chosen = (on ? match[1] : match[2]) as string;
  return chosen === "null" ? null : (literal(chosen) as string);
}

function moduleDecl(symbol: string) {
  const mod = modules(main).find((m) => m.symbol === symbol);
  if (!mod) throw new Error(`main.bicep: no module ${symbol}`);
  return mod;
}
const passed = (symbol: string, key: string): string | undefined => moduleDecl(symbol).params.find((e) => e.key === key)?.value;

/** The network settings each module applies, with its privateOnly flag set as main.bicep sets it for vnetEnabled. */
function networkSettings(scanned: ScannedBicep, symbol: string, vnetEnabled: boolean) {
  const props = resourceBody(scanned, symbol).body;
  return {
    publicNetworkAccess: evaluate(at(scanned, props, "properties.publicNetworkAccess"), "privateOnly", vnetEnabled),
    defaultAction: evaluate(at(scanned, props, "properties.networkAcls.defaultAction"), "privateOnly", vnetEnabled),
    bypass: evaluate(at(scanned, props, "properties.networkAcls.bypass"), "privateOnly", vnetEnabled),
  };
}

describe("network isolation: vnetEnabled", () => {
  it("is a bool parameter that defaults to false, with the VNet ranges as parameters", () => {
    const vnetEnabled = params(main).find((p) => p.name === "vnetEnabled");
    expect(vnetEnabled?.type).toBe("bool");
    expect(vnetEnabled?.defaultValue).toBe("false");
    for (const name of ["vnetAddressPrefix", "appSubnetPrefix", "privateEndpointSubnetPrefix"]) {
      expect(literal(params(main).find((p) => p.name === name)?.defaultValue), name).toMatch(/^10\.0\.\d+\.0\/(16|24)$/);
      expect(passed("network", name === "vnetAddressPrefix" ? "addressPrefix" : name), name).toBe(name);
    }
  });

  it("deploys the network module only when vnetEnabled, and passes the mode to storage and both vaults", () => {
    expect(main.code).toMatch(/^module network 'modules\/network\.bicep' = if \(vnetEnabled\) \{$/m);
    for (const symbol of ["storage", "tokensVault", "credentialVault"]) expect(passed(symbol, "privateOnly"), symbol).toBe("vnetEnabled");
    expect(params(storage).find((p) => p.name === "privateOnly")?.defaultValue).toBe("false");
    expect(params(keyVault).find((p) => p.name === "privateOnly")?.defaultValue).toBe("false");
  });

  it("vnetEnabled false: storage and both key vaults keep public network access, firewall Allow, trusted services", () => {
    for (const [scanned, symbol] of [
      [storage, "storage"],
      [keyVault, "vault"],
    ] as const) {
      expect(networkSettings(scanned, symbol, false), scanned.file).toEqual({
        publicNetworkAccess: "Enabled",
        defaultAction: "Allow",
        bypass: "AzureServices",
      });
    }
    // no subnet reaches the site, which then has no VNet integration (virtualNetworkSubnetId null)
    expect(passed("functionApp", "virtualNetworkSubnetId")).toBe("vnetEnabled ? network.outputs.appSubnetId : ''");
    expect(at(functionApp, resourceBody(functionApp, "site").body, "properties.virtualNetworkSubnetId")).toBe(
      "empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId",
    );
  });

  it("vnetEnabled true: publicNetworkAccess Disabled and network ACL default Deny, no bypass, on storage and both key vaults", () => {
    for (const [scanned, symbol] of [
      [storage, "storage"],
      [keyVault, "vault"],
    ] as const) {
      expect(networkSettings(scanned, symbol, true), scanned.file).toEqual({
        publicNetworkAccess: "Disabled",
        defaultAction: "Deny",
        bypass: "None",
      });
    }
    // Shared keys stay off in both modes: the private mode adds to, never replaces, identity auth.
    expect(at(storage, resourceBody(storage, "storage").body, "properties.allowSharedKeyAccess")).toBe("false");
  });

  it("vnetEnabled true: the app subnet is delegated to Microsoft.App/environments and the function app integrates with it", () => {
    const vnet = resourceBody(network, "vnet");
    expect(vnet.type).toBe("Microsoft.Network/virtualNetworks@2024-05-01");
    const subnets = objectsAt(network, vnet.body, "properties.subnets");
    const byName = new Map(subnets.map((s) => [s.find((e) => e.key === "name")?.value, s]));
    expect([...byName.keys()].sort()).toEqual(["appSubnetName", "privateEndpointSubnetName"]);
    expect(/^var appSubnetName = '([^']+)'$/m.exec(network.code)?.[1]).toBe("app");
    const app = byName.get("appSubnetName") ?? [];
    expect(at(network, app, "properties.addressPrefix")).toBe("appSubnetPrefix");
    const delegations = objectsAt(network, app, "properties.delegations");
    expect(delegations).toHaveLength(1);
    const [delegation] = delegations;
    expect(at(network, delegation ?? [], "properties.serviceName")).toBe("'Microsoft.App/environments'");
    const pe = byName.get("privateEndpointSubnetName") ?? [];
    expect(at(network, pe, "properties.privateEndpointNetworkPolicies")).toBe("'Disabled'");
    expect(at(network, pe, "properties.delegations")).toBeUndefined();
    // The app subnet's id reaches the site's virtualNetworkSubnetId.
    expect(outputs(network)).toContain("appSubnetId");
    expect(network.code).toMatch(
      /^output appSubnetId string = resourceId\('Microsoft\.Network\/virtualNetworks\/subnets', vnet\.name, appSubnetName\)$/m,
    );
    expect(passed("functionApp", "virtualNetworkSubnetId")).toBe("vnetEnabled ? network.outputs.appSubnetId : ''");
    const site = resourceBody(functionApp, "site");
    expect(at(functionApp, site.body, "properties.virtualNetworkSubnetId")).toBe("empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId");
  });

  it("vnetEnabled true: private endpoints for blob, queue, table and both key vaults", () => {
    // storage: one endpoint per service, on the account the app uses
    expect(arrayStrings(network, network.code.indexOf("[", varValueIndex(network, "storageEndpoints") + 1))).toEqual(["blob", "queue", "table"]);
    const [storageEndpoint] = arrayObjects(network, varValueIndex(network, "storageEndpoints"));
    expect(at(network, storageEndpoint ?? [], "resourceId")).toBe("storageAccountId");
    expect(at(network, storageEndpoint ?? [], "groupId")).toBe("service");
    expect(passed("network", "storageAccountId")).toBe("storage.outputs.id");
    // vaults: one endpoint each, group 'vault', for the tokens vault and the credential vault
    expect(network.code).toMatch(/^var vaultEndpoints = \[\s*for vaultId in keyVaultIds: \{/m);
    const [vaultEndpoint] = arrayObjects(network, varValueIndex(network, "vaultEndpoints"));
    expect(at(network, vaultEndpoint ?? [], "resourceId")).toBe("vaultId");
    expect(at(network, vaultEndpoint ?? [], "groupId")).toBe("'vault'");
    expect(passed("network", "keyVaultIds")?.replace(/\s+/g, " ")).toBe("[ tokensVault.outputs.id credentialVault.outputs.id ]");
    expect(/^var endpoints = (.+)$/m.exec(network.code)?.[1]).toBe("concat(storageEndpoints, vaultEndpoints)");
    // each becomes a private endpoint in the private endpoint subnet
    expect(network.code).toMatch(/^resource privateEndpoints 'Microsoft\.Network\/privateEndpoints@2024-05-01' = \[\s*for endpoint in endpoints: \{/m);
    const endpoint = resourceBody(network, "privateEndpoints").body;
    expect(at(network, endpoint, "properties.subnet.id")).toBe("'${vnet.id}/subnets/${privateEndpointSubnetName}'");
    const connections = objectsAt(network, endpoint, "properties.privateLinkServiceConnections");
    expect(connections).toHaveLength(1);
    const [connection] = connections;
    expect(at(network, connection ?? [], "properties.privateLinkServiceId")).toBe("endpoint.resourceId");
    expect(at(network, connection ?? [], "properties.groupIds")?.replace(/\s+/g, " ")).toBe("[ endpoint.groupId ]");
  });

  it("vnetEnabled true: each endpoint registers in its private DNS zone, and every zone is linked to the VNet", () => {
    const zones = Object.fromEntries(objectEntries(network, varValueIndex(network, "zoneNames")).map((e) => [e.key, e.value]));
    expect(zones).toEqual({
      blob: "'privatelink.blob.${environment().suffixes.storage}'",
      queue: "'privatelink.queue.${environment().suffixes.storage}'",
      table: "'privatelink.table.${environment().suffixes.storage}'",
      vault: "replace(environment().suffixes.keyvaultDns, '.vault.', 'privatelink.vaultcore.')",
    });
    // the public cloud's keyvaultDns is '.vault.azure.net'
    expect(".vault.azure.net".replace(".vault.", "privatelink.vaultcore.")).toBe("privatelink.vaultcore.azure.net");
    expect(network.code).toMatch(/^resource zones 'Microsoft\.Network\/privateDnsZones@2024-06-01' = \[\s*for zone in items\(zoneNames\): \{/m);
    expect(resourceBody(network, "zones").body.find((e) => e.key === "location")?.value).toBe("'global'");
    expect(network.code).toMatch(
      /^resource zoneLinks 'Microsoft\.Network\/privateDnsZones\/virtualNetworkLinks@2024-06-01' = \[\s*for \(zone, i\) in items\(zoneNames\): \{/m,
    );
    const link = resourceBody(network, "zoneLinks").body;
    expect(at(network, link, "parent")).toBe("zones[i]");
    expect(at(network, link, "properties.virtualNetwork.id")).toBe("vnet.id");
    expect(at(network, link, "properties.registrationEnabled")).toBe("false");
    expect(network.code).toMatch(
      /^resource endpointDns 'Microsoft\.Network\/privateEndpoints\/privateDnsZoneGroups@2024-05-01' = \[\s*for \(endpoint, i\) in endpoints: \{/m,
    );
    const group = resourceBody(network, "endpointDns").body;
    expect(at(network, group, "parent")).toBe("privateEndpoints[i]");
    const configs = objectsAt(network, group, "properties.privateDnsZoneConfigs");
    expect(configs).toHaveLength(1);
    const [config] = configs;
    expect(at(network, config ?? [], "properties.privateDnsZoneId")).toBe(
      "resourceId('Microsoft.Network/privateDnsZones', zoneNames[endpoint.groupId])",
    );
    // every endpoint's group id has a zone
    for (const groupId of ["blob", "queue", "table", "vault"]) expect(Object.keys(zones)).toContain(groupId);
  });

  it("vnetEnabled true: the function app starts only after the network exists", () => {
    // The subnet id is a module output, so the app waits for the whole network module (endpoints included).
    expect(passed("functionApp", "virtualNetworkSubnetId")).toContain("network.outputs.appSubnetId");
    expect(main.code).toMatch(/^output VIRTUAL_NETWORK_NAME string = vnetEnabled \? network\.outputs\.name : ''$/m);
  });
});
