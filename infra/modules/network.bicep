// Network isolation (main.bicep vnetEnabled), after the azd Functions Flex templates
// (Azure-Samples/functions-quickstart-javascript-azd, infra/app/vnet.bicep and
// storage-PrivateEndpoint.bicep): a VNet whose `app` subnet is delegated to Microsoft.App/environments
// for Flex Consumption VNet integration, and private endpoints with private DNS zones for the
// storage account (blob, queue, table) and both key vaults. main.bicep turns public network access
// off on those resources in the same mode, so the app's own traffic to them never leaves the VNet.
// Outbound internet traffic (Entra ID, the Defender API, the sinks, Application Insights) still
// leaves through the app's VNet integration; add a NAT gateway or firewall on the app subnet when
// egress must use a fixed address or be filtered (docs/deploy.md).

@description('Name of the virtual network.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the network resources.')
param tags object = {}

@description('Address space of the virtual network.')
param addressPrefix string

@description('Address range of the app subnet (Flex Consumption VNet integration; /27 or larger).')
param appSubnetPrefix string

@description('Address range of the private endpoint subnet.')
param privateEndpointSubnetPrefix string

@description('Resource id of the storage account that gets blob, queue and table endpoints.')
param storageAccountId string

@description('Resource ids of the key vaults that each get an endpoint.')
param keyVaultIds array

var appSubnetName = 'app'
var privateEndpointSubnetName = 'private-endpoints'

// Private DNS zone per endpoint kind (sub-resource group id). environment() keeps sovereign
// clouds right: keyvaultDns is '.vault.azure.net' in the public cloud.
var zoneNames = {
  blob: 'privatelink.blob.${environment().suffixes.storage}'
  queue: 'privatelink.queue.${environment().suffixes.storage}'
  table: 'privatelink.table.${environment().suffixes.storage}'
  vault: replace(environment().suffixes.keyvaultDns, '.vault.', 'privatelink.vaultcore.')
}

var storageEndpoints = [
  for service in [
    'blob'
    'queue'
    'table'
  ]: {
    name: '${last(split(storageAccountId, '/'))}-${service}'
    resourceId: storageAccountId
    groupId: service
  }
]
var vaultEndpoints = [
  for vaultId in keyVaultIds: {
    name: '${last(split(vaultId, '/'))}-vault'
    resourceId: vaultId
    groupId: 'vault'
  }
]
var endpoints = concat(storageEndpoints, vaultEndpoints)

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          // Flex Consumption integrates only with a subnet delegated to Container Apps environments.
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [
  for zone in items(zoneNames): {
    name: zone.value
    location: 'global'
    tags: tags
  }
]

// Without the link the VNet would still resolve the public names to public addresses.
resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (zone, i) in items(zoneNames): {
    parent: zones[i]
    name: '${name}-link'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnet.id
      }
    }
  }
]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [
  for endpoint in endpoints: {
    name: 'pe-${endpoint.name}'
    location: location
    tags: tags
    properties: {
      subnet: {
        id: '${vnet.id}/subnets/${privateEndpointSubnetName}'
      }
      privateLinkServiceConnections: [
        {
          name: endpoint.name
          properties: {
            privateLinkServiceId: endpoint.resourceId
            groupIds: [
              endpoint.groupId
            ]
          }
        }
      ]
    }
  }
]

// The zone group writes the endpoint's A record into its zone.
resource endpointDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [
  for (endpoint, i) in endpoints: {
    parent: privateEndpoints[i]
    name: 'default'
    properties: {
      privateDnsZoneConfigs: [
        {
          name: endpoint.groupId
          properties: {
            privateDnsZoneId: resourceId('Microsoft.Network/privateDnsZones', zoneNames[endpoint.groupId])
          }
        }
      ]
    }
    dependsOn: [
      zones
    ]
  }
]

output name string = vnet.name
@description('Subnet the function app integrates with (functionAppConfig VNet integration: site virtualNetworkSubnetId).')
output appSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, appSubnetName)
output privateEndpointSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, privateEndpointSubnetName)
