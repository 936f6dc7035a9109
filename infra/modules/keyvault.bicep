// The seed vault: the only place a seed lives at rest, one secret per token. Access is by Azure
// RBAC only (no access policies); soft delete and purge protection mean a seed deleted by mistake
// or by an attacker can be recovered, and the vault cannot be purged before its retention ends.

@description('Key Vault name (3-24 characters).')
param name string

param location string
param tags object

@description('Enabled or Disabled.')
param publicNetworkAccess string

@description('Soft delete retention in days (7-90). Fixed once the vault exists: Key Vault refuses a change.')
param softDeleteRetentionInDays int

@description('default creates the vault; recover brings back a soft-deleted vault of the same name (after the resource group was deleted).')
param createMode string

@description('Log Analytics workspace that receives the vault\'s audit log (who read or wrote which secret).')
param logAnalyticsId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // 'default' fails while a soft-deleted vault holds this name; 'recover' restores it with its
    // secrets (bicep-types-az keyvault/2023-07-01: createMode 'default' | 'recover').
    createMode: createMode
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
      bypass: 'AzureServices'
    }
  }
}

// Every read and write of a seed is audited.
resource audit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
