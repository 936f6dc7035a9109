// The Flex Consumption plan and the Linux function app running the Go custom handler
// (runtime 'custom'; host.json starts `oathpipe serve`). Every setting the Go code reads is set
// here, storage is reached through the user-assigned identity (the `__` settings), and nothing
// holds a key. infra_test.go checks these settings against shared/config.Settings.

param name string
param planName string
param location string
param tags object

@description('Resource id of the app\'s user-assigned identity.')
param identityId string

@description('Client id of the app\'s user-assigned identity.')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param appInsightsName string
param keyVaultName string
param keyVaultUri string

param activation string
param requiredRole string
param graphUrl string
param vaultConcurrency int
param httpBudget string
param importBudget string
param throttleMaxWait string
param logLevel string
param reconcileSchedule string
param notifyUrlSecretName string
param reconcileTakeBack string
param reconcileStuckDays int
param pskcKeySecretName string
param pskcPasswordSecretName string
param pgpKeySecretName string
param zipPasswordsSecretName string

@description('Client id of the app registration App Service authentication validates tokens for; set exactly when requiredRole is.')
param authClientId string
param maximumInstanceCount int
param instanceMemoryMB int

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Key Vault references resolve with the identity named in keyVaultReferenceIdentity below.
var pskcKeyReference = empty(pskcKeySecretName) ? '' : '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${pskcKeySecretName})'
var notifyUrlReference = empty(notifyUrlSecretName) ? '' : '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${notifyUrlSecretName})'
var pskcPasswordReference = empty(pskcPasswordSecretName) ? '' : '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${pskcPasswordSecretName})'

// Flex Consumption sets the runtime in functionAppConfig: FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE and WEBSITE_CONTENT* must not be set.
// FUNCTIONS_CUSTOMHANDLER_PORT is set by the host. OATHPIPE_CA_FILE and OATHPIPE_OFFLINE_TOKEN are
// for the local stand-ins only and never belong here.
var appSettings = {
  // The host's own storage (triggers' bookkeeping, keys), through the identity.
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId

  // The SeedStorage connection named in function.json and read by the app (shared/config).
  SeedStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  SeedStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  SeedStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  SeedStorage__credential: 'managedidentity'
  SeedStorage__clientId: identityClientId

  // Telemetry with Entra ID authentication (local auth is off on the component).
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'

  OATHPIPE_KEYVAULT_URL: keyVaultUri
  OATHPIPE_GRAPH_URL: graphUrl
  OATHPIPE_MANAGED_IDENTITY_CLIENT_ID: identityClientId
  OATHPIPE_ACTIVATION: activation
  OATHPIPE_REQUIRED_ROLE: requiredRole
  OATHPIPE_VAULT_CONCURRENCY: string(vaultConcurrency)
  OATHPIPE_HTTP_BUDGET: httpBudget
  OATHPIPE_IMPORT_BUDGET: importBudget
  OATHPIPE_THROTTLE_MAX_WAIT: throttleMaxWait
  OATHPIPE_PSKC_KEY: pskcKeyReference
  OATHPIPE_PSKC_PASSWORD: pskcPasswordReference
  OATHPIPE_PGP_KEY_SECRET: pgpKeySecretName
  OATHPIPE_ZIP_PASSWORDS_SECRET: zipPasswordsSecretName
  OATHPIPE_LOG_LEVEL: logLevel
  OATHPIPE_RECONCILE_SCHEDULE: reconcileSchedule
  OATHPIPE_NOTIFY_URL: notifyUrlReference
  OATHPIPE_RECONCILE_TAKE_BACK: reconcileTakeBack
  OATHPIPE_RECONCILE_STUCK_DAYS: string(reconcileStuckDays)
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
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    // Only what Microsoft's Flex samples set. Flex rejects ftpsState, use32BitWorkerProcess,
    // netFrameworkVersion, preWarmedInstanceCount, functionsRuntimeScaleMonitoringEnabled,
    // linuxFxVersion and functionAppScaleLimit (ARM 51021; infra_test.go refuses them). FTP is
    // off anyway: Flex has none, and the ftp publishing credentials below are disabled.
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
}

// App Service authentication, deployed exactly when requiredRole is set: only then does the app
// trust X-MS-CLIENT-PRINCIPAL (handlers/auth.go), and only App Service authentication strips a
// caller's own copy of that header and puts the validated one in. Unauthenticated requests are
// let through (the function key still guards every route, and the app refuses a request without
// the role); a request with a bad token is refused by the platform. main.bicep refuses
// requiredRole without authClientId.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(requiredRole)) {
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
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            authClientId
            'api://${authClientId}'
          ]
        }
      }
    }
  }
  // One config write at a time on the site.
  dependsOn: [
    siteAppSettings
  ]
}

resource siteAppSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: appSettings
}

// Deployment uses Entra ID (az functionapp deployment source config-zip); no publishing
// passwords exist to leak.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
