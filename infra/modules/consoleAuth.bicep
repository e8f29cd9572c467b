// App Service built-in authentication (Easy Auth) for the operator console: staff of the MSSP's own
// tenant sign in with Entra ID. Anonymous requests still pass (customers' admins open consent links,
// automation calls the operator API with function keys); the app itself sends a console request
// without a signed-in principal to /.auth/login/aad and requires the Console.Operator app role.

@description('Name of the function app.')
param functionAppName string

@description('Application (client) id of the MSSP app registration, which also signs staff in to the console. Empty: no sign-in is configured and the app refuses to serve the console.')
param clientId string

@description('The MSSP tenant: only its accounts can sign in to the console.')
param msspTenantId string

@description('App setting holding the credential the sign-in redeems its code with: MSSP_CLIENT_SECRET (a Key Vault reference to the client secret), or OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID (the client id of the managed identity whose assertion the registration\'s federated credential trusts: no secret).')
@allowed([
  'MSSP_CLIENT_SECRET'
  'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
])
param credentialSettingName string

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(clientId)) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          // A single-tenant issuer: a multi-tenant app registration, but only MSSP staff sign in here.
          openIdIssuer: '${environment().authentication.loginEndpoint}${msspTenantId}/v2.0'
          clientId: clientId
          // Never a secret value here: the name of the app setting holding a Key Vault reference
          // to the client secret, or the managed identity's client id for a federated assertion.
          clientSecretSettingName: credentialSettingName
        }
        validation: {
          allowedAudiences: [
            clientId
            'api://${clientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}
