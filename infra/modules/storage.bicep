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

@description('Days before blobs left in seed-inbox are deleted (and how long an upload event may wait in seed-imports).')
param seedBlobRetentionDays int

@description('Days before rejected files in seed-rejected are deleted.')
param rejectedRetentionDays int

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

// Upload events Event Grid could not put on seed-imports after its retries (the system topic's
// identity writes here). They hold no seed: only the blob's name, ETag and size.
resource eventsDeadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'seed-events-deadletter'
  properties: {
    publicAccess: 'None'
  }
}

// ProvisionFailed parks here a message it still cannot record on its last delivery (never a seed).
resource parkedContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'token-parked'
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
          name: 'deleteInboxFiles'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${inboxContainer.name}/'
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
          name: 'deleteRejectedFiles'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${rejectedContainer.name}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: rejectedRetentionDays
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

// One Event Grid BlobCreated event per message (EventGridSchema, plain JSON) for ImportSeeds; a
// long import also enqueues its own continuation here. Never a seed.
resource importQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'seed-imports'
}

// The host moves an import message here after its last try (created up front, like the other).
resource importPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'seed-imports-poison'
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

// Blob events of the account. Its system-assigned identity (the topic's own, not the app's) is what
// Event Grid uses to put events on seed-imports and to dead-letter them.
resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Built-in role definition ids for the topic's identity (the same in every tenant).
var topicRole = {
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}

// Event Grid puts each event on seed-imports with the topic's identity: Microsoft lists Storage
// Queue Data Message Sender for a storage-queue destination (event-grid/add-identity-roles.md).
// On the account, as that page and the portal assign it; it can add messages and nothing else.
resource topicQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, systemTopic.id, topicRole.storageQueueDataMessageSender)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', topicRole.storageQueueDataMessageSender)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Dead-lettering writes a blob with the topic's identity: Storage Blob Data Contributor (same page),
// on the dead-letter container only, the narrowest scope a role assignment can have here.
resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventsDeadLetterContainer.id, systemTopic.id, topicRole.storageBlobDataContributor)
  scope: eventsDeadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', topicRole.storageBlobDataContributor)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// BlobCreated under seed-inbox/ -> queue seed-imports, one event per message, delivered and
// dead-lettered with the topic's identity (no key, no webhook). Every property is checked against
// bicep-types-az generated/eventgrid/microsoft.eventgrid/2022-06-15/types.md.
resource importSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: 'importseeds-seed-inbox'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${inboxContainer.name}/'
    }
    deliveryWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: account.id
          queueName: importQueue.name
          // A message is useless once the lifecycle rule has deleted its blob.
          queueMessageTimeToLiveInSeconds: seedBlobRetentionDays * 86400
        }
      }
    }
    // Event Grid's own limits: at most 30 attempts and 1440 minutes. After them the event goes
    // to the dead-letter container instead of being dropped (docs/deploy.md: replaying it).
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: account.id
          blobContainerName: eventsDeadLetterContainer.name
        }
      }
    }
  }
  // Delivery and dead-lettering fail until the topic's roles exist.
  dependsOn: [
    topicQueueSender
    topicDeadLetterWriter
  ]
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output inboxContainerName string = inboxContainer.name
output importQueueName string = importQueue.name
output deploymentContainerName string = deploymentContainer.name
output systemTopicName string = systemTopic.name
output importSubscriptionName string = importSubscription.name
