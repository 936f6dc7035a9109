// Every Azure role the app's identity holds, each on the narrowest scope that works and each with
// the reason it is needed. Nothing else is granted: no Owner, Contributor or account-key role.
// (Graph application permissions are not Azure roles; post-deploy.sh grants those.)
// infra_test.go checks the ids against the documented built-in roles.

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

param storageAccountName string
param keyVaultName string
param appInsightsName string

// Built-in role definition ids (the same in every tenant).
var role = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Host storage: the Functions documentation names Blob Data Owner for AzureWebJobsStorage (leases
// and keys in the azure-webjobs-* containers the host creates; the Flex deployment package),
// which is this account. The app itself reads seed-inbox, writes seed-reports, seed-rejected and
// token-parked, and deletes imported files.
resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, role.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Queue triggers and output: seed-imports (ImportSeeds reads it and enqueues its own
// continuations), token-provisioning and the poison queues the host moves messages to.
resource queueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, role.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The ledger and audit tables (read and write entities; infra/ creates both tables, the app
// never does in Azure). On the account because the host keeps its own tables in the same account
// (AzureWebJobsStorage: diagnostic events), not for anything the app does.
resource tableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, role.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.storageTableDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The secrets the app uses, and nothing more: Key Vault Secrets Officer would also allow
// purge, backup and restore (secrets/*), which no code path needs. Custom role names are unique
// per tenant, hence the vault's name in it. assignableScopes cannot be narrower than a resource
// group (role-definitions.md, AssignableScopes); the assignment below is on the vault only.
resource secretsRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, vault.id, 'oathpipe-secrets')
  properties: {
    roleName: 'oathpipe secrets (${keyVaultName})'
    description: 'What the oathpipe app does with secrets in its vault: read, write, list versions, recover, soft-delete a retired token\'s seed. No purge, backup or restore.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          // Read a seed to compute its activation code; read the PGP key and zip password
          // secrets (every enabled version of the PGP key is tried); resolve Key Vault references.
          'Microsoft.KeyVault/vaults/secrets/getSecret/action'
          // Store each seed at import; `oathpipe pgp-keygen` stores a new version of the PGP key.
          'Microsoft.KeyVault/vaults/secrets/setSecret/action'
          // List a secret's versions and read their attributes (enabled, dates) without values:
          // the PGP key's older versions and the check for an existing seed.
          'Microsoft.KeyVault/vaults/secrets/readMetadata/action'
          // A seed secret soft-deleted earlier blocks setSecret (409); recover it instead.
          'Microsoft.KeyVault/vaults/secrets/recover/action'
          // Retire a token (DELETE /api/tokens/{serial}): soft-delete its seed, recoverable for
          // the vault's retention. Not purge: a retired seed stays recoverable until it expires.
          'Microsoft.KeyVault/vaults/secrets/delete'
        ]
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// Writes each seed as a secret at import and reads it back to compute activation codes; reads
// the PGP key and zip password secrets. The custom role above, scoped to this vault only.
resource secretsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, secretsRole.id)
  scope: vault
  properties: {
    roleDefinitionId: secretsRole.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Sends telemetry to Application Insights, whose local (key) auth is off: Entra ID ingestion
// requires this role on the component.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, role.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
