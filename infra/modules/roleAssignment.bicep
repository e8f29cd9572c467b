// One role assignment on one resource of this resource group. main.bicep calls this module once
// per row of its role table (a single `for` loop). A role assignment's `scope` must be a resource
// symbol of a fixed type, so the scope kind picks one of four conditional declarations here;
// exactly one of them is deployed per call.

@description('Kind of resource the role is granted on.')
@allowed([
  'storage'
  'blobContainer'
  'keyVault'
  'appInsights'
])
param scopeKind string

@description('Name of the storage account, key vault or Application Insights component (per scopeKind); for blobContainer, <storage account>/<container>.')
param scopeName string

@description('Built-in role definition id (a GUID).')
param roleDefinitionId string

@description('Human-readable role name, stored as the assignment description.')
param roleName string

@description('Object id of the principal receiving the role.')
param principalId string

@description('Kind of principal.')
@allowed([
  'ServicePrincipal'
  'User'
  'Group'
])
param principalType string = 'ServicePrincipal'

// Resource type per scope kind; the scope's resource id is computed without touching the
// conditional resources below.
var scopeTypes = {
  storage: 'Microsoft.Storage/storageAccounts'
  blobContainer: 'Microsoft.Storage/storageAccounts/blobServices/containers'
  keyVault: 'Microsoft.KeyVault/vaults'
  appInsights: 'Microsoft.Insights/components'
}
var nameParts = split(scopeName, '/')
var scopeResourceId = scopeKind == 'blobContainer' ? resourceId(scopeTypes.blobContainer, first(nameParts), 'default', last(nameParts)) : resourceId(scopeTypes[scopeKind], scopeName)

// guid(scope, principal, role): stable across redeployments, unique per scope/principal/role.
var assignmentName = guid(scopeResourceId, principalId, roleDefinitionId)

var assignmentProperties = {
  roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
  principalId: principalId
  principalType: principalType
  description: 'MSSP Defender connector: ${roleName}'
}

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = if (scopeKind == 'storage') {
  name: scopeName
}

resource containerAccount 'Microsoft.Storage/storageAccounts@2024-01-01' existing = if (scopeKind == 'blobContainer') {
  name: first(nameParts)

  resource blobService 'blobServices' existing = {
    name: 'default'

    resource container 'containers' existing = {
      name: last(nameParts)
    }
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = if (scopeKind == 'keyVault') {
  name: scopeName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = if (scopeKind == 'appInsights') {
  name: scopeName
}

resource onStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (scopeKind == 'storage') {
  name: assignmentName
  scope: storage
  properties: assignmentProperties
}

resource onBlobContainer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (scopeKind == 'blobContainer') {
  name: assignmentName
  scope: containerAccount::blobService::container
  properties: assignmentProperties
}

resource onVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (scopeKind == 'keyVault') {
  name: assignmentName
  scope: vault
  properties: assignmentProperties
}

resource onAppInsights 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (scopeKind == 'appInsights') {
  name: assignmentName
  scope: appInsights
  properties: assignmentProperties
}

output roleAssignmentName string = assignmentName
