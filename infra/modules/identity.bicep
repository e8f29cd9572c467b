// User-assigned managed identity for the function app.
// It is created (and granted its roles) before the app exists, so the app can resolve its
// Key Vault reference and reach Storage from its very first start.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id (used in the site identity block, keyVaultReferenceIdentity and deployment storage).')
output id string = identity.id
output name string = identity.name
@description('Object id of the service principal of the identity (the principal in role assignments).')
output principalId string = identity.properties.principalId
@description('Client id (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId, App Insights AAD auth).')
output clientId string = identity.properties.clientId
