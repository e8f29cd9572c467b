// Key Vault in RBAC mode. main.bicep deploys two of these: the tokens vault (customers' refresh
// tokens and the consent-link signing key, written by the app at runtime) and the credential vault
// (the app's own static secrets, read only through Key Vault references). Keeping them apart lets
// the app hold a write role on the first and only a read role on the second.
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

@description('Reachable only through its private endpoint (main.bicep vnetEnabled): public network access off, firewall default Deny, no trusted-service bypass.')
param privateOnly bool = false

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
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    // No Microsoft service needs the bypass when private: Key Vault references resolve through
    // the app's VNet integration and the private endpoint.
    networkAcls: {
      bypass: privateOnly ? 'None' : 'AzureServices'
      defaultAction: privateOnly ? 'Deny' : 'Allow'
    }
  }
}

output name string = vault.name
output id string = vault.id
@description('Vault URI, e.g. https://<name>.vault.azure.net/ (the app strips the trailing slash).')
output uri string = vault.properties.vaultUri
