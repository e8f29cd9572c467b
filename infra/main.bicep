// MSSP Defender connector: Azure Functions (Flex Consumption) + Storage + two Key Vaults +
// Application Insights, all keyless (managed identity / Entra ID everywhere), each identity with
// the narrowest role that works (docs/deploy.md "Identities and roles"), optionally behind a VNet
// with private endpoints (vnetEnabled). Deploy into an existing resource group; see docs/deploy.md
// for the full order (deployment, app registration, publish).
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

@description('The MSSP app registration\'s own credential (MSSP_CLIENT_CREDENTIAL): managedIdentity (default, no secret anywhere: the app\'s user-assigned identity signs a client assertion that the registration\'s federated credential trusts), certificate (a Key Vault certificate in the credential vault, MSSP_CLIENT_CERTIFICATE_NAME) or secret (a client secret in the credential vault, MSSP_CLIENT_SECRET). infra/register-app.sh creates the matching credential on the registration.')
@allowed([
  'managedIdentity'
  'certificate'
  'secret'
])
param clientCredentialType string = 'managedIdentity'

@description('clientCredentialType certificate: name of the Key Vault certificate in the credential vault (MSSP_CLIENT_CERTIFICATE_NAME) that infra/register-app.sh creates; letters, digits and hyphens.')
@minLength(1)
@maxLength(127)
param clientCertificateName string = 'mssp-client-certificate'

@description('Consent model of a tenant registered without one (DEFAULT_CONSENT_MODEL): delegated (an administrator\'s refresh token) or application (admin consent to application permissions, client-credential tokens).')
@allowed([
  'delegated'
  'application'
])
param defaultConsentModel string = 'delegated'

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

@description('Where a tenant registered without a source reads its alerts: mde (Defender for Endpoint API) or graph (Microsoft Graph security alerts_v2, Defender XDR).')
@allowed([
  'mde'
  'graph'
])
param defaultAlertSource string = 'mde'

@description('Microsoft Graph base URL; change it only for a national cloud (e.g. https://graph.microsoft.us).')
param graphApiBaseUrl string = 'https://graph.microsoft.com'

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

@description('Name of the Key Vault secret, in this deployment\'s credential vault (output CREDENTIAL_VAULT_NAME), that holds the notification webhook URL (NOTIFY_WEBHOOK_URL, referenced, never copied). Empty: notifications off. Store the secret before deploying with it (docs/notifications.md).')
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

@description('Splunk sink: name of the Key Vault secret, in this deployment\'s credential vault (output CREDENTIAL_VAULT_NAME), that holds the HEC token (SPLUNK_HEC_TOKEN, referenced, never copied). Store the secret before deploying with it (docs/sinks/splunk.md).')
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

@description('Quiet tenants that may share one pull queue message (1: one message per tenant).')
@minValue(1)
@maxValue(32)
param pullTenantsPerMessage int = 8

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

@description('Optional object id of the person or pipeline that runs infra/register-app.sh. Used only with grantDeployerVaultAccess.')
param deployerPrincipalId string = ''

@description('Grant deployerPrincipalId the role infra/register-app.sh needs on the credential vault (never on the tokens vault) for the chosen clientCredentialType: Key Vault Secrets Officer to store the client secret (secret), Key Vault Certificates Officer to create the certificate (certificate), nothing with managedIdentity (no credential is stored). Turn it on for the run that needs it only: a later deployment without it does not remove the assignment, delete it afterwards or use PIM (docs/deploy.md "No standing access").')
param grantDeployerVaultAccess bool = false

@description('Principal type of deployerPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

@description('Network isolation: a VNet with Flex Consumption VNet integration, private endpoints for the storage account and both key vaults, and public network access disabled on them (docs/deploy.md "Network isolation"). false: public endpoints, protected by Entra ID and RBAC only.')
param vnetEnabled bool = false

@description('vnetEnabled: address space of the VNet.')
param vnetAddressPrefix string = '10.0.0.0/16'

@description('vnetEnabled: address range of the subnet delegated to Flex Consumption (/27 or larger), inside vnetAddressPrefix.')
param appSubnetPrefix string = '10.0.1.0/24'

@description('vnetEnabled: address range of the private endpoint subnet, inside vnetAddressPrefix.')
param privateEndpointSubnetPrefix string = '10.0.2.0/24'

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
var deploymentIdentityName = '${namePrefix}-id-deploy-${resourceToken}'
var functionAppName = '${namePrefix}-func-${resourceToken}'
var planName = '${namePrefix}-plan-${resourceToken}'
var logAnalyticsName = '${namePrefix}-log-${resourceToken}'
var appInsightsName = '${namePrefix}-appi-${resourceToken}'
var storageAccountName = take(toLower('st${replace(namePrefix, '-', '')}${resourceToken}'), 24)
// Tokens vault: the name of the single vault of earlier versions, so its tokens stay where they are.
var keyVaultName = take('kv-${namePrefix}-${resourceToken}', 24)
var credentialVaultName = take('kvc-${namePrefix}-${resourceToken}', 24)
var vnetName = '${namePrefix}-vnet-${resourceToken}'
var deploymentContainerName = 'app-package'
// The app's own containers besides the alerts (shared/storage/names.ts CONTAINERS): data the
// pipeline could not accept, dedupe sets too large for a table row, and pages waiting for a sink
// that was down (with several sinks).
var appContainerNames = [
  'alerts-dead-letters'
  'pull-state'
  'alerts-parked'
]
// The Functions host's containers (AzureWebJobsStorage): host and timer locks, and the function
// keys. Created here because the host's blob role is granted on them only.
var hostContainerNames = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]
// Every container the app identity writes to; its blob write role is granted on each of these only.
var appBlobContainers = concat([alertsContainer], appContainerNames, hostContainerNames)

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
  'MsspConsentLinks'
  'MsspAudit'
]

var defenderApiBaseUrl = empty(defenderRegion) ? 'https://api.security.microsoft.com' : 'https://${defenderRegion}.api.security.microsoft.com'

// environment() keeps sovereign clouds right; the app strips the trailing slash.
var entraAuthorityHost = environment().authentication.loginEndpoint

// ---------------------------------------------------------------------------------------------
// Role table: every role assignment of this template, deployed by ONE loop below.
// principal 'app' = the function app's user-assigned identity; 'deployment' = the identity the
// platform uses for the package container; 'deployer' = deployerPrincipalId.
// scope: 'storage' (the whole account), 'tokensVault', 'credentialVault', 'appInsights', or
// 'container:<name>' (one blob container of the account).
// Ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
// ---------------------------------------------------------------------------------------------

var appRoleTable = [
  {
    // Read-only on the whole account: the host lists containers and reads service properties at
    // account level. Writes happen only in the containers of containerRoleTable.
    role: 'Storage Blob Data Reader'
    roleId: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
    scope: 'storage'
    principal: 'app'
  }
  {
    role: 'Storage Queue Data Contributor' // tenant-pulls queue trigger and fan-out, its poison queue
    roleId: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
    scope: 'storage'
    principal: 'app'
  }
  {
    role: 'Storage Table Data Contributor' // tenants, consent sessions, pull state; the host's diagnostics table
    roleId: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
    scope: 'storage'
    principal: 'app'
  }
  {
    role: 'Key Vault Secrets Officer' // writes refresh tokens and the consent-link signing key
    roleId: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
    scope: 'tokensVault'
    principal: 'app'
  }
  {
    // Reads mssp-client-secret, or the certificate's private key through its backing secret (and the
    // webhook URL, HEC token): read only.
    role: 'Key Vault Secrets User'
    roleId: '4633458b-17de-408a-b874-0445c86b69e6'
    scope: 'credentialVault'
    principal: 'app'
  }
  {
    role: 'Monitoring Metrics Publisher' // telemetry to App Insights with local auth disabled
    roleId: '3913510d-42f4-4e42-8a64-420c390055eb'
    scope: 'appInsights'
    principal: 'app'
  }
]

// Blob writes of the app and its host: the alerts, dead letters, dedupe spill and parked pages,
// the host's locks and keys. Not the package container, and no Owner anywhere.
var containerRoleTable = [
  for container in appBlobContainers: {
    role: 'Storage Blob Data Contributor'
    roleId: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
    scope: 'container:${container}'
    principal: 'app'
  }
]

var deploymentRoleTable = [
  {
    role: 'Storage Blob Data Contributor' // the platform uploads the published package and reads it at start
    roleId: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
    scope: 'container:${deploymentContainerName}'
    principal: 'deployment'
  }
]

// The deployer's role, by clientCredentialType: what infra/register-app.sh needs to put the app's
// credential into the credential vault. With managedIdentity there is nothing to store, so no role.
var deployerRoleTable = [
  {
    role: 'Key Vault Secrets Officer' // secret: lets infra/register-app.sh store mssp-client-secret; never the tokens vault
    roleId: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
    scope: 'credentialVault'
    principal: 'deployer'
  }
]
var deployerCertificateRoleTable = [
  {
    role: 'Key Vault Certificates Officer' // certificate: lets infra/register-app.sh create the certificate; never the tokens vault
    roleId: 'a4417e6f-fecd-4de8-b567-7b0420556985'
    scope: 'credentialVault'
    principal: 'deployer'
  }
]
var deployerRolesByCredential = {
  secret: deployerRoleTable
  certificate: deployerCertificateRoleTable
  managedIdentity: []
}

// Known at the start of the deployment (required for a `for` loop): no module outputs in here.
var deployerGranted = grantDeployerVaultAccess && !empty(deployerPrincipalId)
var roleTable = concat(appRoleTable, containerRoleTable, deploymentRoleTable, deployerGranted ? deployerRolesByCredential[clientCredentialType] : [])

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

// A second identity, attached to the app only for functionAppConfig.deployment: it alone may
// write the package container, so the app's runtime credential cannot replace its own code.
module deploymentIdentity 'modules/identity.bicep' = {
  name: 'deploymentIdentity'
  params: {
    name: deploymentIdentityName
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
    ], appContainerNames, hostContainerNames)
    queueNames: queueNames
    tableNames: tableNames
    privateOnly: vnetEnabled
  }
}

// Customers' refresh tokens and the consent-link signing key: the app writes here (KEY_VAULT_URL).
module tokensVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: keyVaultName
    location: location
    tags: allTags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    privateOnly: vnetEnabled
  }
}

// The app's own credential (mssp-client-secret) and other static secrets: the app only reads
// here, through Key Vault references, so a flaw in the app cannot overwrite its credential.
module credentialVault 'modules/keyvault.bicep' = {
  name: 'credentialvault'
  params: {
    name: credentialVaultName
    location: location
    tags: allTags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    privateOnly: vnetEnabled
  }
}

module network 'modules/network.bicep' = if (vnetEnabled) {
  name: 'network'
  params: {
    name: vnetName
    location: location
    tags: allTags
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
    storageAccountId: storage.outputs.id
    keyVaultIds: [
      tokensVault.outputs.id
      credentialVault.outputs.id
    ]
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

// Scope resource per scope. Module outputs (not the name variables) so that each role
// assignment waits for the resource it is granted on; a 'container:<name>' scope is a container
// of the storage module, which creates them all.
var scopeNames = {
  storage: storage.outputs.name
  tokensVault: tokensVault.outputs.name
  credentialVault: credentialVault.outputs.name
  appInsights: monitoring.outputs.appInsightsName
}
var scopeKinds = {
  storage: 'storage'
  tokensVault: 'keyVault'
  credentialVault: 'keyVault'
  appInsights: 'appInsights'
}
var principalIds = {
  app: identity.outputs.principalId
  deployment: deploymentIdentity.outputs.principalId
  deployer: deployerPrincipalId
}

module roleAssignments 'modules/roleAssignment.bicep' = [
  for (row, i) in roleTable: {
    name: take('role-${i}-${row.principal}-${replace(row.scope, ':', '-')}', 64)
    params: {
      scopeKind: startsWith(row.scope, 'container:') ? 'blobContainer' : scopeKinds[row.scope]
      scopeName: startsWith(row.scope, 'container:') ? '${storage.outputs.name}/${substring(row.scope, 10)}' : scopeNames[row.scope]
      roleDefinitionId: row.roleId
      roleName: row.role
      principalId: principalIds[row.principal]
      principalType: row.principal == 'deployer' ? deployerPrincipalType : 'ServicePrincipal'
    }
  }
]

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  // The app starts only after its identity can read Key Vault and Storage (and, with vnetEnabled,
  // after the private endpoints exist: virtualNetworkSubnetId waits for the whole network module).
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
    deploymentIdentityId: deploymentIdentity.outputs.id
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    credentialVaultName: credentialVault.outputs.name
    tokensVaultUri: tokensVault.outputs.uri
    virtualNetworkSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    clientId: clientId
    clientCredentialType: clientCredentialType
    clientCertificateName: clientCertificateName
    defaultConsentModel: defaultConsentModel
    azdServiceName: 'api'
    msspTenantId: msspTenantId
    entraAuthorityHost: entraAuthorityHost
    defenderApiBaseUrl: defenderApiBaseUrl
    graphApiBaseUrl: graphApiBaseUrl
    defaultAlertSource: defaultAlertSource
    consentLinkTtlHours: consentLinkTtlHours
    pullSchedule: pullSchedule
    alertsContainer: alertsContainer
    pullOverlapMinutes: pullOverlapMinutes
    pullSettleSeconds: pullSettleSeconds
    pullFirstRunLookbackHours: pullFirstRunLookbackHours
    pullPageSize: pullPageSize
    pullTenantsPerMessage: pullTenantsPerMessage
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
    // Staff sign-in redeems its code with the app's credential: the client secret, or (certificate
    // and managedIdentity) the managed identity's assertion through the registration's federated
    // credential, so no secret exists for the console either.
    credentialSettingName: clientCredentialType == 'secret' ? 'MSSP_CLIENT_SECRET' : 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
  }
}

// Outputs (UPPER_SNAKE; read by infra/register-app.sh and docs/deploy.md)
// ---------------------------------------------------------------------------------------------

output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_HOST_NAME string = functionApp.outputs.defaultHostName
@description('Redirect URI to register (Web platform) on the Entra app registration.')
output CONSENT_CALLBACK_URL string = 'https://${functionApp.outputs.defaultHostName}/api/consent/callback'
@description('The tokens vault (KEY_VAULT_URL): refresh tokens and the consent-link signing key.')
output KEY_VAULT_NAME string = tokensVault.outputs.name
output KEY_VAULT_URL string = tokensVault.outputs.uri
@description('The credential vault: the app\'s credential (mssp-client-secret or the certificate; none with managedIdentity) and the other secrets app settings reference (infra/register-app.sh writes here).')
output CREDENTIAL_VAULT_NAME string = credentialVault.outputs.name
@description('The app credential type (MSSP_CLIENT_CREDENTIAL); infra/register-app.sh creates the matching credential.')
output MSSP_CLIENT_CREDENTIAL string = clientCredentialType
@description('clientCredentialType certificate: the Key Vault certificate to create; empty otherwise.')
output MSSP_CLIENT_CERTIFICATE_NAME string = clientCredentialType == 'certificate' ? clientCertificateName : ''
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output ALERTS_CONTAINER string = alertsContainer
output MSSP_TENANT_ID string = msspTenantId
output DEFENDER_API_BASE_URL string = defenderApiBaseUrl
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output VIRTUAL_NETWORK_NAME string = vnetEnabled ? network.outputs.name : ''
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
