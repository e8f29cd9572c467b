// Key Vault in RBAC mode. The app writes secrets at runtime (per-tenant refresh tokens and the
// consent-link signing key), and the app setting MSSP_CLIENT_SECRET is a Key Vault reference.
// Soft delete is always on for new vaults; purge protection is enabled and is irreversible.

@description('Key Vault name (3-24 letters, digits and single hyphens, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the vault.')
param tags object = {}

@description('Days a deleted vault or secret is kept (7-90). Fixed at creation: later changes are ignored by Azure.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output name string = vault.name
output id string = vault.id
@description('Vault URI, e.g. https://<name>.vault.azure.net/ (the app strips the trailing slash).')
output uri string = vault.properties.vaultUri
