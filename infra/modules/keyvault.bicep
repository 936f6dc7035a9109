// The seed vault: the only place a seed lives at rest, one secret per token. Access is by Azure
// RBAC only (no access policies); soft delete and purge protection mean a seed deleted by mistake
// or by an attacker can be recovered, and the vault cannot be purged before its retention ends.

@description('Key Vault name (3-24 characters).')
param name string

param location string
param tags object

@description('Enabled or Disabled.')
param publicNetworkAccess string

@description('Soft delete retention in days (7-90).')
param softDeleteRetentionInDays int

@description('Log Analytics workspace that receives the vault\'s audit log (who read or wrote which secret).')
param logAnalyticsId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
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
