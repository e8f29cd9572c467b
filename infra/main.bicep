// MSSP Defender connector: Azure Functions (Flex Consumption) + Storage + Key Vault + Application
// Insights, all keyless (managed identity / Entra ID everywhere). Deploy into an existing resource
// group; see docs/deploy.md for the full order (deployment, app registration, publish).
targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@description('Short prefix for resource names: 2-10 lowercase letters or digits, starting with a letter. A unique suffix derived from the subscription and resource group is appended.')
@minLength(2)
@maxLength(10)
param namePrefix string = 'mssp'

@description('Azure region for all resources (Flex Consumption must be available there).')
param location string = resourceGroup().location

@description('Application (client) id of the multi-tenant Entra app registration. Empty on the very first deployment (the registration needs this deployment\'s callback URL); infra/register-app.sh then sets the app setting. Pass it on every later deployment, because a deployment replaces all app settings.')
param clientId string = ''

@description('Tenant id of the MSSP (home tenant of the app registration).')
param msspTenantId string = tenant().tenantId

@description('Defender for Endpoint API geography: empty for the global endpoint https://api.security.microsoft.com, or us, eu, uk, au, swa, ina for https://<region>.api.security.microsoft.com.')
@allowed([
  ''
  'us'
  'eu'
  'uk'
  'au'
  'swa'
  'ina'
])
param defenderRegion string = ''

@description('NCRONTAB schedule (six fields, UTC) of the timer that enqueues one pull per connected tenant.')
param pullSchedule string = '0 */5 * * * *'

@description('Blob container receiving the pulled alerts (3-63 lowercase letters, digits and single hyphens).')
@minLength(3)
@maxLength(63)
param alertsContainer string = 'alerts'

@description('Company name sent in the MDE partner User-Agent (1-64 letters or digits).')
@minLength(1)
@maxLength(64)
param partnerCompany string = 'MSSP'

@description('Product name sent in the MDE partner User-Agent (1-64 letters or digits).')
@minLength(1)
@maxLength(64)
param partnerProduct string = 'DefenderConnector'

@description('Name of the MSSP as the customer\'s admin sees it on the consent pages (and operators in the console), e.g. Contoso Security; at most 100 characters. Empty: the pages say "your managed security provider".')
@maxLength(100)
param msspDisplayName string = ''

@description('Name of the Key Vault secret, in this deployment\'s vault, that holds the notification webhook URL (NOTIFY_WEBHOOK_URL, referenced, never copied). Empty: notifications off. Store the secret before deploying with it (docs/notifications.md).')
@maxLength(127)
param notifyWebhookUrlVaultEntry string = ''

@description('Format of the notification messages: json, slack (incoming webhook) or teams (Workflows webhook with an Adaptive Card).')
@allowed([
  'json'
  'slack'
  'teams'
])
param notifyWebhookFormat string = 'json'

@description('New alerts at or above this severity are notified.')
@allowed([
  'Informational'
  'Low'
  'Medium'
  'High'
])
param notifyMinSeverity string = 'High'

@description('Sinks the alerts go to (ALERT_SINKS): a comma-separated list of blob, sentinel, splunk and eventhubs (docs/sinks.md). Sentinel and Event Hubs get their resources from this template; Splunk needs splunkHecUrl and splunkHecTokenVaultEntry.')
@maxLength(200)
param alertSinks string = 'blob'

@description('Sentinel sink: resource id of the Log Analytics workspace Microsoft Sentinel runs on (the table and the data collection rule go into its resource group). Empty: a workspace of its own is created in this resource group.')
param sentinelWorkspaceId string = ''

@description('Sentinel sink: region of that workspace (a data collection rule must be in its workspace\'s region).')
param sentinelLocation string = resourceGroup().location

@description('Splunk sink: the HTTP Event Collector origin, e.g. https://splunk.example.com:8088 (SPLUNK_HEC_URL).')
param splunkHecUrl string = ''

@description('Splunk sink: name of the Key Vault secret, in this deployment\'s vault, that holds the HEC token (SPLUNK_HEC_TOKEN, referenced, never copied). Store the secret before deploying with it (docs/sinks/splunk.md).')
@maxLength(127)
param splunkHecTokenVaultEntry string = ''

@description('Splunk sink: index for the events (SPLUNK_INDEX); empty: the token\'s default index.')
param splunkIndex string = ''

@description('Splunk sink: sourcetype of the events (SPLUNK_SOURCETYPE).')
param splunkSourcetype string = 'ms:defender:atp:alerts'

@description('Splunk sink: count an event delivered only once the indexers acknowledge it (SPLUNK_HEC_ACK; Splunk Enterprise only, the token must have indexer acknowledgement on).')
param splunkHecAck bool = false

@description('Hours a consent link stays valid.')
@minValue(1)
@maxValue(720)
param consentLinkTtlHours int = 168

@description('Minutes each pull re-reads before the last checkpoint (late-arriving updates).')
@minValue(0)
@maxValue(1440)
param pullOverlapMinutes int = 10

@description('Seconds before now that a pull stops at, letting recent updates settle.')
@minValue(0)
@maxValue(3600)
param pullSettleSeconds int = 60

@description('Hours of history fetched on a tenant\'s first pull.')
@minValue(1)
@maxValue(4320)
param pullFirstRunLookbackHours int = 24

@description('Alerts requested per page ($top).')
@minValue(1)
@maxValue(10000)
param pullPageSize int = 2500

@description('Request alert evidence ($expand=evidence); larger responses.')
param pullExpandEvidence bool = false

@description('Hours after which a still-valid refresh token is rewritten to Key Vault anyway.')
@minValue(0)
@maxValue(720)
param refreshTokenPersistAgeHours int = 24

@description('Timeout of a single Defender API request, in seconds (with pullMaxRunSeconds and a 60 s margin, at most host.json functionTimeout of 600 s).')
@minValue(1)
@maxValue(60)
param defenderRequestTimeoutSeconds int = 60

@description('Time budget of one tenant pull, in seconds; with the request timeout and a 60 s margin it stays within host.json functionTimeout (10 minutes).')
@minValue(10)
@maxValue(480)
param pullMaxRunSeconds int = 480

@description('Memory per Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of Flex Consumption scale-out (instances).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Days a deleted vault or secret is retained (7-90). Fixed when the vault is created.')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 90

@description('Days the Log Analytics workspace keeps data.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('E-mail address the alert rules notify (an action group is created for it). Empty: the rules still fire and show in Azure Monitor, with no notification.')
param alertEmail string = ''

@description('Consecutive failed pull runs of one tenant that raise the "tenant failing" alert.')
@minValue(2)
@maxValue(50)
param alertFailingCycles int = 3

@description('Optional object id of the person or pipeline running the deployment, granted Key Vault Secrets Officer so infra/register-app.sh can store the client secret. Empty: no assignment.')
param deployerPrincipalId string = ''

@description('Principal type of deployerPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

@description('Extra tags for every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Names and derived values
// ---------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, namePrefix))
// The sinks that need resources of their own (docs/sinks.md).
var sinkList = split(replace(toLower(alertSinks), ' ', ''), ',')
var sentinelEnabled = contains(sinkList, 'sentinel')
var eventHubsEnabled = contains(sinkList, 'eventhubs')
var defaultTags = {
  'app-name': 'mssp-defender-connector'
}
var allTags = union(defaultTags, tags)

var identityName = '${namePrefix}-id-${resourceToken}'
var functionAppName = '${namePrefix}-func-${resourceToken}'
var planName = '${namePrefix}-plan-${resourceToken}'
var logAnalyticsName = '${namePrefix}-log-${resourceToken}'
var appInsightsName = '${namePrefix}-appi-${resourceToken}'
var storageAccountName = take(toLower('st${replace(namePrefix, '-', '')}${resourceToken}'), 24)
var keyVaultName = take('kv-${namePrefix}-${resourceToken}', 24)
var deploymentContainerName = 'app-package'
// The app's own containers besides the alerts (shared/storage/names.ts CONTAINERS): data the
// pipeline could not accept, dedupe sets too large for a table row, and pages waiting for a sink
// that was down (with several sinks).
var appContainerNames = [
  'alerts-dead-letters'
  'pull-state'
  'alerts-parked'
]

// Storage names the app uses; must match shared/storage/names.ts (checked by test/infra).
var queueNames = [
  'tenant-pulls'
  'tenant-pulls-poison'
]
var tableNames = [
  'MsspTenants'
  'MsspConsentSessions'
  'MsspPullState'
  'MsspPullHistory'
  'MsspNotifications'
]

var defenderApiBaseUrl = empty(defenderRegion) ? 'https://api.security.microsoft.com' : 'https://${defenderRegion}.api.security.microsoft.com'

// environment() keeps sovereign clouds right; the app strips the trailing slash.
var entraAuthorityHost = environment().authentication.loginEndpoint

// ---------------------------------------------------------------------------------------------
// Role table: every role assignment of this template, deployed by ONE loop below.
// principal 'app' = the function app's user-assigned identity; 'deployer' = deployerPrincipalId.
// Ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
// ---------------------------------------------------------------------------------------------

var appRoleTable = [
  {
    role: 'Storage Blob Data Owner' // host storage, timer locks, Flex deployment package, alerts blobs
    roleId: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
    scope: 'storage'
    principal: 'app'
  }
  {
    role: 'Storage Queue Data Contributor' // tenant-pulls queue trigger and fan-out
    roleId: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
    scope: 'storage'
    principal: 'app'
  }
  {
    role: 'Storage Table Data Contributor' // tenants, consent sessions, pull state
    roleId: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
    scope: 'storage'
    principal: 'app'
  }
  {
    role: 'Key Vault Secrets Officer' // writes refresh tokens and the signing key; reads the client secret
    roleId: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
    scope: 'keyVault'
    principal: 'app'
  }
  {
    role: 'Monitoring Metrics Publisher' // telemetry to App Insights with local auth disabled
    roleId: '3913510d-42f4-4e42-8a64-420c390055eb'
    scope: 'appInsights'
    principal: 'app'
  }
]

var deployerRoleTable = [
  {
    role: 'Key Vault Secrets Officer' // lets infra/register-app.sh store mssp-client-secret
    roleId: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
    scope: 'keyVault'
    principal: 'deployer'
  }
]

// Known at the start of the deployment (required for a `for` loop): no module outputs in here.
var roleTable = concat(appRoleTable, empty(deployerPrincipalId) ? [] : deployerRoleTable)

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: identityName
    location: location
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: storageAccountName
    location: location
    tags: allTags
    containerNames: concat([
      deploymentContainerName
      alertsContainer
    ], appContainerNames)
    queueNames: queueNames
    tableNames: tableNames
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: keyVaultName
    location: location
    tags: allTags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: logAnalyticsName
    appInsightsName: appInsightsName
    location: location
    tags: allTags
    retentionInDays: logRetentionInDays
  }
}

// Alert rules (a tenant failing, re-consent, the app credential, poison messages) and the
// fleet-health workbook, over the telemetry the app sends (docs/operations.md, "Telemetry").
module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    location: location
    namePrefix: '${namePrefix}-${resourceToken}'
    tags: allTags
    alertEmail: alertEmail
    failingCycles: alertFailingCycles
  }
}

// Scope resource per scope kind. Module outputs (not the name variables) so that each role
// assignment waits for the resource it is granted on.
var scopeNames = {
  storage: storage.outputs.name
  keyVault: keyVault.outputs.name
  appInsights: monitoring.outputs.appInsightsName
}

module roleAssignments 'modules/roleAssignment.bicep' = [
  for (row, i) in roleTable: {
    name: 'role-${i}-${row.principal}-${row.scope}'
    params: {
      scopeKind: row.scope
      scopeName: scopeNames[row.scope]
      roleDefinitionId: row.roleId
      roleName: row.role
      principalId: row.principal == 'app' ? identity.outputs.principalId : deployerPrincipalId
      principalType: row.principal == 'app' ? 'ServicePrincipal' : deployerPrincipalType
    }
  }
]

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  // The app starts only after its identity can read Key Vault and Storage.
  dependsOn: [
    roleAssignments
  ]
  params: {
    name: functionAppName
    planName: planName
    location: location
    tags: allTags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    keyVaultUri: keyVault.outputs.uri
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    clientId: clientId
    msspTenantId: msspTenantId
    entraAuthorityHost: entraAuthorityHost
    defenderApiBaseUrl: defenderApiBaseUrl
    consentLinkTtlHours: consentLinkTtlHours
    pullSchedule: pullSchedule
    alertsContainer: alertsContainer
    pullOverlapMinutes: pullOverlapMinutes
    pullSettleSeconds: pullSettleSeconds
    pullFirstRunLookbackHours: pullFirstRunLookbackHours
    pullPageSize: pullPageSize
    pullExpandEvidence: pullExpandEvidence
    refreshTokenPersistAgeHours: refreshTokenPersistAgeHours
    defenderRequestTimeoutSeconds: defenderRequestTimeoutSeconds
    pullMaxRunSeconds: pullMaxRunSeconds
    partnerCompany: partnerCompany
    partnerProduct: partnerProduct
    msspDisplayName: msspDisplayName
    notifyWebhookUrlVaultEntry: notifyWebhookUrlVaultEntry
    notifyWebhookFormat: notifyWebhookFormat
    notifyMinSeverity: notifyMinSeverity
    alertSinks: alertSinks
    sentinelIngestionEndpoint: sentinelEnabled ? sentinel.outputs.ingestionEndpoint : ''
    sentinelDcrImmutableId: sentinelEnabled ? sentinel.outputs.dcrImmutableId : ''
    sentinelStreamName: sentinelEnabled ? sentinel.outputs.streamName : ''
    splunkHecUrl: splunkHecUrl
    splunkHecTokenVaultEntry: splunkHecTokenVaultEntry
    splunkIndex: splunkIndex
    splunkSourcetype: splunkSourcetype
    splunkHecAck: splunkHecAck
    eventHubNamespace: eventHubsEnabled ? eventHubs.outputs.fullyQualifiedNamespace : ''
    eventHubName: eventHubsEnabled ? eventHubs.outputs.eventHubName : ''
  }
}

// ---------------------------------------------------------------------------------------------
// SIEM sinks chosen in alertSinks (docs/sinks.md). Each module grants the app's identity the one
// role it needs on the one resource it creates (Monitoring Metrics Publisher on the data
// collection rule, Azure Event Hubs Data Sender on the hub), scoped where the role table's
// storage, vault and component scopes cannot reach (the workspace may be in another group).
module sentinel 'modules/sentinel.bicep' = if (sentinelEnabled) {
  name: 'sentinel'
  scope: empty(sentinelWorkspaceId) ? resourceGroup() : resourceGroup(split(sentinelWorkspaceId, '/')[2], split(sentinelWorkspaceId, '/')[4])
  params: {
    location: sentinelLocation
    workspaceId: sentinelWorkspaceId
    workspaceName: '${namePrefix}-sentinel-${resourceToken}'
    dataCollectionRuleName: '${namePrefix}-alerts-dcr-${resourceToken}'
    principalId: identity.outputs.principalId
    tags: allTags
  }
}

module eventHubs 'modules/eventhubs.bicep' = if (eventHubsEnabled) {
  name: 'eventhubs'
  params: {
    namespaceName: '${namePrefix}-evhns-${resourceToken}'
    location: location
    tags: allTags
    senderPrincipalId: identity.outputs.principalId
  }
}

// ---------------------------------------------------------------------------------------------
// The operator console's sign-in: MSSP staff through Entra ID (App Service authentication).
module consoleAuth 'modules/consoleAuth.bicep' = {
  name: 'consoleAuth'
  params: {
    functionAppName: functionApp.outputs.name
    clientId: clientId
    msspTenantId: tenant().tenantId
  }
}

// Outputs (UPPER_SNAKE; read by infra/register-app.sh and docs/deploy.md)
// ---------------------------------------------------------------------------------------------

output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_HOST_NAME string = functionApp.outputs.defaultHostName
@description('Redirect URI to register (Web platform) on the Entra app registration.')
output CONSENT_CALLBACK_URL string = 'https://${functionApp.outputs.defaultHostName}/api/consent/callback'
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output ALERTS_CONTAINER string = alertsContainer
output MSSP_TENANT_ID string = msspTenantId
output DEFENDER_API_BASE_URL string = defenderApiBaseUrl
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
