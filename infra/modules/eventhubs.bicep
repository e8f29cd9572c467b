// Event Hubs sink (docs/sinks/eventhubs.md): a Standard namespace with local (key) auth disabled,
// one hub, and Azure Event Hubs Data Sender for the function app's identity on that hub only.
// The app signs in with its managed identity; no key, policy or connection string exists.
//
// How main.bicep calls it (only when the Event Hubs sink is chosen), after the identity module:
//
//   module eventHubs 'modules/eventhubs.bicep' = if (!empty(eventHubNamespaceName)) {
//     name: 'eventhubs'
//     params: {
//       namespaceName: eventHubNamespaceName      // e.g. '${namePrefix}-evhns-${resourceToken}'
//       location: location
//       tags: allTags
//       senderPrincipalId: identity.outputs.principalId
//     }
//   }
//
// and feeds its outputs to the function app's settings (functionapp.bicep), empty when it is off:
//   EVENTHUB_FULLY_QUALIFIED_NAMESPACE = empty(eventHubNamespaceName) ? '' : eventHubs.outputs.fullyQualifiedNamespace
//   EVENTHUB_NAME                      = empty(eventHubNamespaceName) ? '' : eventHubs.outputs.eventHubName
// The function app should depend on this module, so the role exists before the first pull.
// A SIEM that reads the hub needs its own consumer group and Azure Event Hubs Data Receiver,
// granted outside this template (docs/sinks/eventhubs.md).

@description('Event Hubs namespace name: 6-50 letters, digits and hyphens, starting with a letter, ending with a letter or digit; globally unique.')
@minLength(6)
@maxLength(50)
param namespaceName string

@description('Azure region.')
param location string

@description('Tags applied to the namespace.')
param tags object = {}

@description('Name of the event hub the alerts go to.')
@minLength(1)
@maxLength(256)
param eventHubName string = 'mssp-defender-alerts'

@description('Partitions of the hub. Each tenant\'s alerts go to one partition (the partition key is the tenant id); more partitions spread tenants over more readers. Fixed once created on Standard.')
@minValue(1)
@maxValue(32)
param partitionCount int = 4

@description('Days the hub keeps events (Standard: 1-7). Readers that fall further behind lose events.')
@minValue(1)
@maxValue(7)
param messageRetentionInDays int = 7

@description('Throughput units (Standard: 1-40). One unit takes 1 MB/s or 1,000 events/s in.')
@minValue(1)
@maxValue(40)
param capacity int = 1

@description('Object id of the identity that publishes (the function app\'s user-assigned identity).')
param senderPrincipalId string

@description('Kind of that principal.')
@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
param senderPrincipalType string = 'ServicePrincipal'

// Azure Event Hubs Data Sender: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
var dataSenderRoleId = '2b629674-e913-4c01-ae53-ef4638d8f975'

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: capacity
  }
  properties: {
    // Entra ID only: keys and shared access policies are refused by the service.
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    // The alerts are read by SIEM connectors over the network; restrict with private endpoints
    // or IP rules outside this template if your SIEM allows it.
    publicNetworkAccess: 'Enabled'
    isAutoInflateEnabled: false
  }
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: namespace
  name: eventHubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: messageRetentionInDays
  }
}

// Scoped to the hub, not the namespace: the identity can publish here and nowhere else.
resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hub.id, senderPrincipalId, dataSenderRoleId)
  scope: hub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataSenderRoleId)
    principalId: senderPrincipalId
    principalType: senderPrincipalType
    description: 'MSSP Defender connector: Azure Event Hubs Data Sender'
  }
}

// serviceBusEndpoint is https://{namespace}.servicebus.windows.net:443/ (another suffix in
// sovereign clouds): the host part is what the app's setting wants.
output fullyQualifiedNamespace string = split(replace(namespace.properties.serviceBusEndpoint, 'https://', ''), ':')[0]
output eventHubName string = hub.name
output namespaceName string = namespace.name
