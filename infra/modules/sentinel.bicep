// Microsoft Sentinel sink (docs/sinks/sentinel.md): the custom table DefenderAlerts_CL in a Log
// Analytics workspace, a `kind: 'Direct'` data collection rule (it has its own logs-ingestion
// endpoint, so no data collection endpoint is needed) whose stream flows into the table unchanged,
// and Monitoring Metrics Publisher on the rule for the app's identity.
//
// Not wired into main.bicep yet. main.bicep calls it once, in the workspace's resource group (a
// DCR must be in the workspace's region, and the table is a child of the workspace):
//
//   module sentinel 'modules/sentinel.bicep' = if (!empty(sentinelWorkspaceId) || createSentinelWorkspace) {
//     name: 'sentinel'
//     scope: empty(sentinelWorkspaceId) ? resourceGroup() : resourceGroup(split(sentinelWorkspaceId, '/')[2], split(sentinelWorkspaceId, '/')[4])
//     params: {
//       location: sentinelLocation                 // the workspace's region
//       workspaceId: sentinelWorkspaceId           // '' = create workspaceName in this resource group
//       workspaceName: '${namePrefix}-sentinel-${resourceToken}'
//       dataCollectionRuleName: '${namePrefix}-alerts-dcr-${resourceToken}'
//       principalId: identity.outputs.principalId  // the function app's user-assigned identity
//       tags: tags
//     }
//   }
//
// and passes its outputs to modules/functionapp.bicep as app settings:
//
//   SENTINEL_INGESTION_ENDPOINT = sentinel.outputs.ingestionEndpoint
//   SENTINEL_DCR_IMMUTABLE_ID   = sentinel.outputs.dcrImmutableId
//   SENTINEL_STREAM_NAME        = sentinel.outputs.streamName   (the app's default; optional)
//
// The role can take up to 30 minutes to apply: until then uploads answer 403 and the sink's pages
// wait (nothing is acknowledged before Log Analytics accepts it).

@description('Azure region of the data collection rule (and of the workspace when one is created): the workspace\'s region.')
param location string

@description('Resource id of an existing Log Analytics workspace (the one Sentinel is on), in the resource group this module deploys to. Empty: create workspaceName.')
param workspaceId string = ''

@description('Name of the workspace to create when workspaceId is empty.')
param workspaceName string = ''

@description('Name of the data collection rule.')
param dataCollectionRuleName string

@description('Object id of the principal that uploads: the function app\'s managed identity.')
param principalId string

@description('Kind of that principal.')
@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
param principalType string = 'ServicePrincipal'

@description('Days the table keeps rows for interactive queries.')
@minValue(4)
@maxValue(730)
param retentionInDays int = 90

@description('Days the table keeps rows in all, long-term retention included.')
@minValue(4)
@maxValue(4383)
param totalRetentionInDays int = 365

@description('Tags applied to the created resources.')
param tags object = {}

var tableName = 'DefenderAlerts_CL'
// The app's default SENTINEL_STREAM_NAME. Input stream and table have the same columns, so the
// transformation passes records through.
var streamName = 'Custom-${tableName}'
var workspaceResourceName = empty(workspaceId) ? workspaceName : last(split(workspaceId, '/'))
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// The record of shared/sinks/sentinel/records.ts (SENTINEL_COLUMNS; a test compares the two).
// None is named TenantId, Title, Type or id: Log Analytics reserves those.
var columns = [
  {
    name: 'TimeGenerated'
    type: 'datetime'
    description: 'When the pull run that delivered the row started'
  }
  {
    name: 'CustomerTenantId'
    type: 'string'
    description: 'The customer\'s Entra tenant id'
  }
  {
    name: 'CustomerName'
    type: 'string'
    description: 'The name the MSSP registered the customer under'
  }
  {
    name: 'Source'
    type: 'string'
    description: 'mde: Microsoft Defender for Endpoint'
  }
  {
    name: 'AlertId'
    type: 'string'
    description: 'The alert id'
  }
  {
    name: 'AlertLastUpdateTime'
    type: 'datetime'
    description: 'The alert version time (lastUpdateTime)'
  }
  {
    name: 'Severity'
    type: 'string'
    description: 'The alert severity'
  }
  {
    name: 'AlertTitle'
    type: 'string'
    description: 'The alert title'
  }
  {
    name: 'Status'
    type: 'string'
    description: 'The alert status'
  }
  {
    name: 'Alert'
    type: 'dynamic'
    description: 'The alert as the Defender API returned it'
  }
  {
    name: 'AlertTruncated'
    type: 'boolean'
    description: 'True when Alert was over 64 KB and is stored without its evidence'
  }
  {
    name: 'AlertSizeBytes'
    type: 'long'
    description: 'Size of the whole alert as JSON, when AlertTruncated'
  }
]

resource createdWorkspace 'Microsoft.OperationalInsights/workspaces@2025-02-01' = if (empty(workspaceId)) {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 90
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource table 'Microsoft.OperationalInsights/workspaces/tables@2025-02-01' = {
  name: '${workspaceResourceName}/${tableName}'
  properties: {
    plan: 'Analytics'
    retentionInDays: retentionInDays
    totalRetentionInDays: totalRetentionInDays
    schema: {
      name: tableName
      columns: columns
    }
  }
  dependsOn: [
    createdWorkspace
  ]
}

resource dataCollectionRule 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: dataCollectionRuleName
  location: location
  tags: tags
  kind: 'Direct'
  properties: {
    description: 'MSSP Defender connector: Defender alerts into ${tableName}'
    streamDeclarations: {
      '${streamName}': {
        columns: [for column in columns: {
          name: column.name
          type: column.type
        }]
      }
    }
    destinations: {
      logAnalytics: [
        {
          name: 'alertsWorkspace'
          workspaceResourceId: resourceId('Microsoft.OperationalInsights/workspaces', workspaceResourceName)
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          streamName
        ]
        destinations: [
          'alertsWorkspace'
        ]
        transformKql: 'source'
        outputStream: streamName
      }
    ]
  }
  // The table must exist before a data flow can name it.
  dependsOn: [
    table
  ]
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataCollectionRule.id, principalId, monitoringMetricsPublisher)
  scope: dataCollectionRule
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: principalId
    principalType: principalType
    description: 'MSSP Defender connector: Monitoring Metrics Publisher'
  }
}

@description('SENTINEL_INGESTION_ENDPOINT: the rule\'s own logs-ingestion endpoint.')
output ingestionEndpoint string = dataCollectionRule.properties.endpoints.logsIngestion

@description('SENTINEL_DCR_IMMUTABLE_ID.')
output dcrImmutableId string = dataCollectionRule.properties.immutableId

@description('SENTINEL_STREAM_NAME.')
output streamName string = streamName
