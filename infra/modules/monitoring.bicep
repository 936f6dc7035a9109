// Log Analytics and workspace-based Application Insights. Local (instrumentation key)
// authentication is off on both: telemetry is accepted only from an Entra ID identity holding
// Monitoring Metrics Publisher (the app's, see roles.bicep), so the key inside the connection
// string grants nothing.

param logAnalyticsName string
param appInsightsName string
param location string
param tags object

@description('Days Log Analytics keeps logs.')
param logRetentionDays int

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

output logAnalyticsId string = workspace.id
output appInsightsName string = appInsights.name
