// Flex Consumption (FC1) plan + Linux function app (Node 22) running as a user-assigned identity,
// and the complete app-settings set. Bicep owns the app settings: every deployment replaces them,
// so every setting the app reads in Azure is declared here (test/infra/appSettings.test.ts checks
// this list against APP_SETTING_NAMES in shared/config.ts).

@description('Function app name (globally unique host name label).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags applied to the plan and the app.')
param tags object = {}

@description('Resource id of the app\'s user-assigned managed identity (runtime, Key Vault references, host storage).')
param identityId string

@description('Resource id of the deployment identity: the only one that may write the package container.')
param deploymentIdentityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Storage account for AzureWebJobsStorage and the deployment package.')
param storageAccountName string

@description('Blob endpoint of that account, with trailing slash.')
param storageBlobEndpoint string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Application Insights component (its connection string is read here, not passed around).')
param appInsightsName string

@description('Credential vault name: the app\'s own secrets, read through Key Vault references (MSSP_CLIENT_SECRET with clientCredentialType secret, NOTIFY_WEBHOOK_URL, SPLUNK_HEC_TOKEN), and the certificate the app loads itself with clientCredentialType certificate.')
param credentialVaultName string

@description('Tokens vault URI (KEY_VAULT_URL): refresh tokens and the consent-link signing key, written at runtime.')
param tokensVaultUri string

@description('Subnet for VNet integration (delegated to Microsoft.App/environments); empty: no VNet integration.')
param virtualNetworkSubnetId string = ''

@description('Flex instance memory in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Flex maximum instance count.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('azd service name this app is deployed as (tag azd-service-name, on the site only: azd looks the target up by it); empty: no tag.')
param azdServiceName string = ''

// ---- values of the app's own settings (defaults live in main.bicep) ----
param clientId string
@description('MSSP_CLIENT_CREDENTIAL: managedIdentity, certificate or secret.')
@allowed([
  'managedIdentity'
  'certificate'
  'secret'
])
param clientCredentialType string
@description('MSSP_CLIENT_CERTIFICATE_NAME with clientCredentialType certificate.')
param clientCertificateName string
param defaultConsentModel string
param msspTenantId string
param entraAuthorityHost string
param defenderApiBaseUrl string
param graphApiBaseUrl string
param defaultAlertSource string
param consentLinkTtlHours int
param pullSchedule string
param alertsContainer string
param pullOverlapMinutes int
param pullSettleSeconds int
param pullFirstRunLookbackHours int
param pullPageSize int
param pullTenantsPerMessage int
param pullExpandEvidence bool
param refreshTokenPersistAgeHours int
param defenderRequestTimeoutSeconds int
param pullMaxRunSeconds int
param partnerCompany string
param partnerProduct string
param msspDisplayName string
@description('Key Vault secret holding the notification webhook URL; empty: notifications off.')
param notifyWebhookUrlVaultEntry string
param notifyWebhookFormat string
param notifyMinSeverity string
@description('ALERT_SINKS and the settings of each sink (docs/sinks.md); those of a sink not chosen stay empty.')
param alertSinks string
param sentinelIngestionEndpoint string
param sentinelDcrImmutableId string
param sentinelStreamName string
param splunkHecUrl string
@description('Key Vault secret holding the Splunk HEC token; empty when the Splunk sink is off.')
param splunkHecTokenVaultEntry string
param splunkIndex string
param splunkSourcetype string
param splunkHecAck bool
param eventHubNamespace string
param eventHubName string

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: empty(azdServiceName) ? tags : union(tags, { 'azd-service-name': azdServiceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
      '${deploymentIdentityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    // Key Vault references (MSSP_CLIENT_SECRET) resolve with this identity, not a system-assigned one.
    keyVaultReferenceIdentity: identityId
    // Flex Consumption routes all outbound traffic through the integrated subnet (no vnetRouteAllEnabled).
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          // The platform writes the published package with this identity and reads it at start;
          // the app's runtime identity has no role on the container, so app code cannot replace it.
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: deploymentIdentityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'node'
        version: '22'
      }
    }
  }
}

// No FTP and no basic-auth (publishing profile) access to the SCM site; deploy with Entra ID.
resource publishingPolicies 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = [
  for policyName in [
    'ftp'
    'scm'
  ]: {
    parent: site
    name: policyName
    properties: {
      allow: false
    }
  }
]

// The app credential's settings, by clientCredentialType: only the chosen type's exist, so with
// managedIdentity there is no secret setting and no Key Vault reference to one at all.
// OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID is App Service authentication's (console sign-in) way to
// redeem its code with the identity's assertion instead of a secret (consoleAuth.bicep).
var credentialSettings = {
  secret: {
    MSSP_CLIENT_SECRET: '@Microsoft.KeyVault(VaultName=${credentialVaultName};SecretName=mssp-client-secret)'
  }
  certificate: {
    MSSP_CLIENT_CERTIFICATE_NAME: clientCertificateName
    // The certificate is in the credential vault, which the app reads itself (KEY_VAULT_URL is the tokens vault).
    MSSP_CLIENT_CERTIFICATE_VAULT_URL: 'https://${credentialVaultName}${environment().suffixes.keyvaultDns}/'
    OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID: identityClientId
  }
  managedIdentity: {
    OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID: identityClientId
  }
}

// A separate config resource (not siteConfig.appSettings) so MSSP_PUBLIC_BASE_URL can use the
// site's real default host name without a self-reference cycle.
// Flex deprecations: no FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION /
// WEBSITE_RUN_FROM_PACKAGE / WEBSITE_CONTENT* / WEBSITE_NODE_DEFAULT_VERSION here.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union({
    // Functions host storage, identity-based (no connection string, no key).
    AzureWebJobsStorage__accountName: storageAccountName
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    // DefaultAzureCredential (Key Vault, Tables, Queues, Blobs in app code) picks the user-assigned identity.
    AZURE_CLIENT_ID: identityClientId
    // The worker's C allocator (glibc malloc): a fixed mmap threshold instead of its sliding one.
    // A page's text (~27 MB at 10,000 alerts) then goes back to the system when freed rather than
    // leaving fragments in the heap: about 20 MB less peak memory on a backlog (docs/performance.md).
    MALLOC_MMAP_THRESHOLD_: '1048576'
    // Platform: Application Insights with Entra ID (local auth is disabled on the component).
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=${identityClientId}'
    // The multi-tenant Entra app registration (infra/register-app.sh) and how the app proves it is
    // that registration (credentialSettings above); AZURE_CLIENT_ID's identity signs the assertion.
    MSSP_CLIENT_ID: clientId
    MSSP_CLIENT_CREDENTIAL: clientCredentialType
    DEFAULT_CONSENT_MODEL: defaultConsentModel
    MSSP_TENANT_ID: msspTenantId
    MSSP_PUBLIC_BASE_URL: 'https://${site.properties.defaultHostName}'
    KEY_VAULT_URL: tokensVaultUri
    ENTRA_AUTHORITY_HOST: entraAuthorityHost
    DEFENDER_API_BASE_URL: defenderApiBaseUrl
    GRAPH_API_BASE_URL: graphApiBaseUrl
    DEFAULT_ALERT_SOURCE: defaultAlertSource
    CONSENT_LINK_TTL_HOURS: string(consentLinkTtlHours)
    // Pull tunables (ranges and meaning: shared/config.ts).
    PULL_SCHEDULE: pullSchedule
    ALERTS_CONTAINER: alertsContainer
    PULL_OVERLAP_MINUTES: string(pullOverlapMinutes)
    PULL_SETTLE_SECONDS: string(pullSettleSeconds)
    PULL_FIRST_RUN_LOOKBACK_HOURS: string(pullFirstRunLookbackHours)
    PULL_PAGE_SIZE: string(pullPageSize)
    PULL_TENANTS_PER_MESSAGE: string(pullTenantsPerMessage)
    PULL_EXPAND_EVIDENCE: pullExpandEvidence ? 'true' : 'false'
    REFRESH_TOKEN_PERSIST_AGE_HOURS: string(refreshTokenPersistAgeHours)
    DEFENDER_REQUEST_TIMEOUT_SECONDS: string(defenderRequestTimeoutSeconds)
    PULL_MAX_RUN_SECONDS: string(pullMaxRunSeconds)
    MDE_PARTNER_COMPANY: partnerCompany
    MDE_PARTNER_PRODUCT: partnerProduct
    // How the consent pages and the console name the MSSP (empty: a neutral default).
    MSSP_DISPLAY_NAME: msspDisplayName
    // Notifications (docs/notifications.md). The webhook URL carries its own signature, so it is a
    // secret: only ever a Key Vault reference. Empty: notifications off.
    NOTIFY_WEBHOOK_URL: empty(notifyWebhookUrlVaultEntry) ? '' : '@Microsoft.KeyVault(VaultName=${credentialVaultName};SecretName=${notifyWebhookUrlVaultEntry})'
    NOTIFY_WEBHOOK_FORMAT: notifyWebhookFormat
    NOTIFY_MIN_SEVERITY: notifyMinSeverity
    // Sinks (docs/sinks.md). The HEC token is a secret: only ever a Key Vault reference.
    ALERT_SINKS: alertSinks
    SENTINEL_INGESTION_ENDPOINT: sentinelIngestionEndpoint
    SENTINEL_DCR_IMMUTABLE_ID: sentinelDcrImmutableId
    SENTINEL_STREAM_NAME: sentinelStreamName
    SPLUNK_HEC_URL: splunkHecUrl
    SPLUNK_HEC_TOKEN: empty(splunkHecTokenVaultEntry) ? '' : '@Microsoft.KeyVault(VaultName=${credentialVaultName};SecretName=${splunkHecTokenVaultEntry})'
    SPLUNK_INDEX: splunkIndex
    SPLUNK_SOURCETYPE: splunkSourcetype
    SPLUNK_HEC_ACK: splunkHecAck ? 'true' : 'false'
    EVENTHUB_FULLY_QUALIFIED_NAMESPACE: eventHubNamespace
    EVENTHUB_NAME: eventHubName
  }, credentialSettings[clientCredentialType])
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
