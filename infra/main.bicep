// oathpipe: the whole Azure estate for one deployment, in one resource group.
//
//   az group create -n rg-oathpipe -l swedencentral
//   az deployment group create -g rg-oathpipe -n main -f infra/main.bicep -p @infra/main.parameters.json
//   make build package && infra/post-deploy.sh -g rg-oathpipe
//
// docs/deploy.md walks through it. Resource names come from namePrefix and a hash of the resource
// group, so the same template deploys side by side in several groups. Nothing here holds a key or
// a connection string with a key: every service is reached with the app's user-assigned identity.
targetScope = 'resourceGroup'

@description('Short prefix for resource names: 2 to 9 lower-case letters and digits (the deployment refuses anything else, so the storage and vault names derived from it are always legal).')
@minLength(2)
@maxLength(9)
param namePrefix string = 'oathpipe'

@description('Region for every resource. It must offer Flex Consumption: az functionapp list-flexconsumption-locations.')
param location string = resourceGroup().location

@description('Tags put on every resource.')
param tags object = {}

@description('Days a blob left in seed-inbox stays before the lifecycle rule deletes it (and how long an upload event may wait in seed-imports). It can hold seeds, so keep this short.')
@minValue(1)
@maxValue(365)
param seedBlobRetentionDays int = 14

@description('Days a rejected file stays in seed-rejected before the lifecycle rule deletes it. Rejected files hold seeds.')
@minValue(1)
@maxValue(365)
param rejectedRetentionDays int = 30

@description('Days an import report stays in seed-reports before the lifecycle rule deletes it.')
@minValue(1)
@maxValue(3650)
param reportRetentionDays int = 90

@description('Days a deleted blob stays recoverable (blob soft delete). Deleted seed files are recoverable this long too.')
@minValue(1)
@maxValue(365)
param blobSoftDeleteDays int = 1

@description('Public network access to Key Vault. The app is not VNet-integrated, so Disabled needs a private endpoint and VNet integration added by you.')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

@description('Days a deleted Key Vault secret (a seed) stays recoverable; purge protection keeps it that long. Fixed when the vault is created: a later deployment with another value fails.')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteDays int = 90

@description('default: create the vault. recover: the resource group was deleted and re-created with the same name within the retention period, so a soft-deleted vault of the same name exists; recover it (with its seeds) instead. docs/deploy.md, "Roll back".')
@allowed([
  'default'
  'recover'
])
param keyVaultCreateMode string = 'default'

@description('OATHPIPE_ACTIVATION: auto activates with a code computed from the seed; none only assigns.')
@allowed([
  'auto'
  'none'
])
param activation string = 'auto'

@description('OATHPIPE_REQUIRED_ROLE: app role HTTP callers must carry; empty for none. Setting it deploys App Service authentication and needs authClientId.')
param requiredRole string = ''

@description('Client id of the Entra app registration whose tokens carry requiredRole (App Service authentication validates them); required when requiredRole is set, otherwise unused.')
param authClientId string = ''

@description('OATHPIPE_GRAPH_URL: Microsoft Graph root; change only for national clouds.')
param graphUrl string = 'https://graph.microsoft.com'

@description('OATHPIPE_VAULT_CONCURRENCY: seeds an import writes to Key Vault at once.')
@minValue(1)
@maxValue(256)
param vaultConcurrency int = 16

@description('OATHPIPE_HTTP_BUDGET: time budget of one HTTP API request (Go duration, 1s to 200s).')
param httpBudget string = '60s'

@description('OATHPIPE_IMPORT_BUDGET: how long one ImportSeeds invocation works before it hands the import on to a continuation (Go duration, 1s to 8m; functionTimeout is 10 minutes).')
param importBudget string = '5m'

@description('OATHPIPE_THROTTLE_MAX_WAIT: how long a token may stay throttled by Graph or Key Vault (re-queued after each Retry-After) before it is recorded failed (Go duration, 1m to 168h).')
param throttleMaxWait string = '24h'

@description('OATHPIPE_RECONCILE_SCHEDULE: when the Reconcile function runs (NCRONTAB, six fields, UTC).')
param reconcileSchedule string = '0 0 2 * * *'

@description('OATHPIPE_RECONCILE_TAKE_BACK: none (report only) or disabled (also take tokens back from disabled accounts).')
@allowed([
  'none'
  'disabled'
])
param reconcileTakeBack string = 'none'

@description('OATHPIPE_RECONCILE_STUCK_DAYS: days after which a token still assigned or failedActivation is reported as stuck.')
@minValue(1)
@maxValue(365)
param reconcileStuckDays int = 7

@description('Name of a Key Vault secret (in this deployment\'s vault) holding the OATHPIPE_NOTIFY_URL incoming webhook (Teams or Slack); empty: no notifications.')
param notifyUrlSecretName string = ''

@description('OATHPIPE_LOG_LEVEL.')
@allowed([
  'debug'
  'info'
  'warn'
  'error'
])
param logLevel string = 'info'

@description('Name of a Key Vault secret (in this deployment\'s vault) holding the hex PSKC pre-shared key; empty when vendors send no encrypted PSKC.')
param pskcKeySecretName string = ''

@description('Name of a Key Vault secret (in this deployment\'s vault) holding the PSKC PBKDF2 password; empty when not needed.')
param pskcPasswordSecretName string = ''

@description('OATHPIPE_PGP_KEY_SECRET: Key Vault secret holding the armored OpenPGP private key (post-deploy.sh creates it with `oathpipe pgp-keygen --if-missing`).')
param pgpKeySecretName string = 'oathpipe-pgp-key'

@description('OATHPIPE_ZIP_PASSWORDS_SECRET: Key Vault secret holding the zip passwords (a JSON array of strings).')
param zipPasswordsSecretName string = 'oathpipe-zip-passwords'

@description('Most instances the function app scales out to: Flex Consumption accepts 40 to 1000 (flex-consumption-plan.md, "The lowest maximum scale is currently 40"). Graph throttles writes per app and tenant, so more rarely helps.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of one Flex Consumption instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

// Bicep has no pattern decorator: every character of namePrefix must be one of these, or the
// deployment stops with fail() before anything is created. With 2-9 such characters and a
// 13-character uniqueString, 'st…' is 3-24 lower-case letters and digits (storage) and 'kv-…-…'
// starts with a letter, has no double hyphen and no trailing hyphen (vault).
var prefixAlphabet = 'abcdefghijklmnopqrstuvwxyz0123456789'
var prefixBadChars = filter(map(range(0, length(namePrefix)), i => substring(namePrefix, i, 1)), c => !contains(prefixAlphabet, c))
var prefix = empty(prefixBadChars) ? namePrefix : fail('namePrefix must be lower-case letters and digits only (storage and Key Vault names are built from it); got \'${namePrefix}\'')

// requiredRole is only safe behind App Service authentication, which needs the app registration.
var authClient = empty(requiredRole) || !empty(authClientId) ? authClientId : fail('requiredRole is set but authClientId is empty: App Service authentication (which makes X-MS-CLIENT-PRINCIPAL trustworthy) needs the app registration\'s client id')

var token = uniqueString(resourceGroup().id, prefix)
var names = {
  identity: 'id-${prefix}-${token}'
  storage: take('st${prefix}${token}', 24)
  keyVault: take('kv-${prefix}-${token}', 24)
  logAnalytics: 'log-${prefix}-${token}'
  appInsights: 'appi-${prefix}-${token}'
  plan: 'plan-${prefix}-${token}'
  functionApp: 'func-${prefix}-${token}'
  systemTopic: 'evgt-${prefix}-${token}'
}

// The app's only identity: storage (host and app), Key Vault, Application Insights and Graph all
// see this one principal, so its rights are listed in one place (modules/roles.bicep and the
// Graph step of post-deploy.sh).
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
  tags: tags
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: names.storage
    systemTopicName: names.systemTopic
    location: location
    tags: tags
    seedBlobRetentionDays: seedBlobRetentionDays
    rejectedRetentionDays: rejectedRetentionDays
    reportRetentionDays: reportRetentionDays
    blobSoftDeleteDays: blobSoftDeleteDays
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    location: location
    tags: tags
    logRetentionDays: logRetentionDays
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: names.keyVault
    location: location
    tags: tags
    publicNetworkAccess: keyVaultPublicNetworkAccess
    softDeleteRetentionInDays: keyVaultSoftDeleteDays
    createMode: keyVaultCreateMode
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: identity.properties.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: tags
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    keyVaultUri: keyVault.outputs.uri
    activation: activation
    requiredRole: requiredRole
    authClientId: authClient
    graphUrl: graphUrl
    vaultConcurrency: vaultConcurrency
    httpBudget: httpBudget
    importBudget: importBudget
    throttleMaxWait: throttleMaxWait
    logLevel: logLevel
    reconcileSchedule: reconcileSchedule
    notifyUrlSecretName: notifyUrlSecretName
    reconcileTakeBack: reconcileTakeBack
    reconcileStuckDays: reconcileStuckDays
    pskcKeySecretName: pskcKeySecretName
    pskcPasswordSecretName: pskcPasswordSecretName
    pgpKeySecretName: pgpKeySecretName
    zipPasswordsSecretName: zipPasswordsSecretName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  // The host reads storage and Key Vault at start; let the grants land first.
  dependsOn: [
    roles
  ]
}

// What infra/post-deploy.sh (and azd, which exports outputs as environment variables) needs.
// Names and URLs only: no key, connection string or secret is ever an output.
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_LOCATION string = location
output RESOURCE_GROUP string = resourceGroup().name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = functionApp.outputs.url
output IDENTITY_NAME string = identity.name
output IDENTITY_CLIENT_ID string = identity.properties.clientId
output IDENTITY_PRINCIPAL_ID string = identity.properties.principalId
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output INBOX_CONTAINER string = storage.outputs.inboxContainerName
output IMPORT_QUEUE string = storage.outputs.importQueueName
output EVENT_GRID_SYSTEM_TOPIC_NAME string = storage.outputs.systemTopicName
output EVENT_GRID_SUBSCRIPTION_NAME string = storage.outputs.importSubscriptionName
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
// A secret's name, not its value: post-deploy.sh passes it to `oathpipe pgp-keygen --secret`.
output PGP_KEY_SECRET_NAME string = pgpKeySecretName
output APP_INSIGHTS_NAME string = monitoring.outputs.appInsightsName
