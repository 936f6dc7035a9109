// The seed storage account: vendor files land in seed-inbox, reports and rejected files are
// written beside it, the provisioning queue and the ledger live here, and the Functions host keeps
// its own state here too (AzureWebJobsStorage). Shared-key access is off, so only Entra ID
// identities with a data role can read anything; the names match shared/config (infra_test.go
// checks).

@description('Storage account name (3-24 lowercase letters and digits).')
param name string

@description('Name of the Event Grid system topic on this account.')
param systemTopicName string

param location string
param tags object

@description('Days before blobs in seed-inbox and seed-rejected are deleted.')
param seedBlobRetentionDays int

@description('Days before reports in seed-reports are deleted.')
param reportRetentionDays int

@description('Blob soft delete retention in days.')
param blobSoftDeleteDays int

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // Soft delete guards against a mistaken delete. Versioning stays off: every version of a
    // seed file would be another copy of the seeds at rest.
    deleteRetentionPolicy: {
      enabled: true
      days: blobSoftDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: blobSoftDeleteDays
    }
    isVersioningEnabled: false
  }
}

// Vendor seed files are dropped here; ImportSeeds deletes each once its seeds are in Key Vault.
resource inboxContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'seed-inbox'
  properties: {
    publicAccess: 'None'
  }
}

// Import reports: {name}.json and {name}.failures.csv, never a seed.
resource reportsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'seed-reports'
  properties: {
    publicAccess: 'None'
  }
}

// Files with failed rows, kept whole for an admin to fix; they hold seeds, hence the short
// lifecycle rule below.
resource rejectedContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'seed-rejected'
  properties: {
    publicAccess: 'None'
  }
}

// Flex Consumption reads the app package from here (functionAppConfig.deployment).
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'app-package'
  properties: {
    publicAccess: 'None'
  }
}

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'deleteSeedFiles'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${inboxContainer.name}/'
                '${rejectedContainer.name}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: seedBlobRetentionDays
                }
              }
            }
          }
        }
        {
          name: 'deleteReports'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${reportsContainer.name}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: reportRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

// One message per token for ProvisionToken; never a seed.
resource provisionQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'token-provisioning'
}

// The host moves a message here after its last try; ProvisionFailed listens on it, so it must
// exist before the first failure (the host would create it only on demand).
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'token-provisioning-poison'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

// What happened to each file and token, read by ImportStatus.
resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'oathpipeledger'
}

// One entity per change made through the HTTP API (TokenAssignment).
resource auditTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'oathpipeaudit'
}

// Blob events for the ImportSeeds trigger (source: EventGrid, the only blob trigger Flex
// Consumption has). The subscription to the function's webhook is made by post-deploy.sh, once
// the code is deployed and the blobs_extension key exists.
resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output inboxContainerName string = inboxContainer.name
output deploymentContainerName string = deploymentContainer.name
output systemTopicName string = systemTopic.name
