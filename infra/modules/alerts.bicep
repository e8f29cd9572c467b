// Log search alert rules and the fleet-health workbook over the app's telemetry in the Log
// Analytics workspace (workspace-based Application Insights: AppTraces, AppMetrics). Every name
// the queries use is part of the telemetry contract in shared/telemetry/names.ts, documented in
// docs/operations.md ("Telemetry"); test/infra/monitoring.test.ts holds the two together.
// The rules need no identity and no role: they run in Azure Monitor against this workspace.

@description('Log Analytics workspace that holds the Application Insights tables.')
param logAnalyticsName string

@description('Azure region of the rules and the workbook.')
param location string

@description('Prefix of the rule names, e.g. mssp-<token>.')
param namePrefix string

@description('Tags applied to every resource.')
param tags object = {}

@description('E-mail address notified when a rule fires. Empty: no action group (the alerts still show in Azure Monitor).')
param alertEmail string = ''

@description('Consecutive failed pull runs of one tenant that raise an alert (within the rule\'s one-day window).')
@minValue(2)
@maxValue(50)
param failingCycles int = 3

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-02-01' existing = {
  name: logAnalyticsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${namePrefix}-ops'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'msspops'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// One pull_run record per run (shared/telemetry/openTelemetry.ts). A tenant alerts when its last
// `failingCycles` runs all failed; the rule names its newest error code.
var failingTenantQuery = replace('''
let cycles = __CYCLES__;
AppTraces
| where tostring(Properties.event) == "pull_run"
| project TimeGenerated, tenantId = tostring(Properties.tenantId), outcome = tostring(Properties.outcome), errorCode = tostring(Properties.errorCode)
| order by tenantId asc, TimeGenerated desc
| extend run = row_number(1, prev(tenantId) != tenantId)
| where run <= cycles
| summarize runs = count(), failures = countif(outcome == "failed"), errorCode = take_anyif(errorCode, run == 1) by tenantId
| where runs == cycles and failures == cycles
''', '__CYCLES__', string(failingCycles))

var reconsentQuery = '''
AppTraces
| where tostring(Properties.event) == "pull_run" and tostring(Properties.healthAfter) == "reconsent_required"
| project TimeGenerated, tenantId = tostring(Properties.tenantId), errorCode = tostring(Properties.errorCode)
'''

// The pull-run record and the consent flow tag the failure category; the error lines of both
// name the credential in their message.
var appCredentialQuery = '''
AppTraces
| where tostring(Properties.category) == "app_credential"
    or Message startswith "MSSP application credential rejected"
    or Message startswith "the MSSP application's credential was rejected"
| project TimeGenerated, errorCode = coalesce(tostring(Properties.errorCode), tostring(Properties.error))
'''

var poisonQuery = '''
AppTraces
| where Message has "moved to the poison queue"
| project TimeGenerated, tenantId = tostring(Properties.tenantId)
'''

// Every alert rule of this template, deployed by ONE loop below. severity: 0 critical .. 4 verbose.
var alertRules = [
  {
    key: 'tenant-failing'
    displayName: 'MSSP connector: a tenant failed ${failingCycles} pull cycles in a row'
    description: 'Every one of the tenant\'s last ${failingCycles} pull runs failed. Look the error code up in docs/operations.md (Pull errors).'
    severity: 2
    evaluationFrequency: 'PT15M'
    windowSize: 'P1D'
    query: failingTenantQuery
    dimensions: [
      'tenantId'
      'errorCode'
    ]
  }
  {
    key: 'reconsent-required'
    displayName: 'MSSP connector: a tenant needs re-consent'
    description: 'Entra ID refused the tenant\'s refresh token; its pulls have stopped. Send its admin a new consent link (docs/operations.md, Re-consent).'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    query: reconsentQuery
    dimensions: [
      'tenantId'
      'errorCode'
    ]
  }
  {
    key: 'app-credential'
    displayName: 'MSSP connector: the MSSP application credential is rejected'
    description: 'Entra ID rejected the MSSP application\'s credential (MSSP_CLIENT_CREDENTIAL): every tenant stops. Renew the secret or certificate, or check the federated credential (docs/app-credential.md).'
    severity: 1
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    query: appCredentialQuery
    dimensions: [
      'errorCode'
    ]
  }
  {
    key: 'pull-poisoned'
    displayName: 'MSSP connector: a pull message went to the poison queue'
    description: 'A tenant pull failed unexpectedly on every retry (pull_poisoned). Read the exceptions of that tenant\'s pulls (docs/operations.md, Pull errors).'
    severity: 2
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    query: poisonQuery
    dimensions: [
      'tenantId'
    ]
  }
]

resource rules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for rule in alertRules: {
    name: '${namePrefix}-${rule.key}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: rule.displayName
      description: rule.description
      severity: rule.severity
      enabled: true
      evaluationFrequency: rule.evaluationFrequency
      windowSize: rule.windowSize
      scopes: [
        workspace.id
      ]
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: 'Count'
            dimensions: [
              for dimension in rule.dimensions: {
                name: dimension
                operator: 'Include'
                values: [
                  '*'
                ]
              }
            ]
            operator: 'GreaterThan'
            threshold: 0
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      // Stateful: one notification when a tenant starts failing, resolved when it stops.
      autoMitigate: true
      actions: {
        actionGroups: empty(alertEmail) ? [] : [
          actionGroup.id
        ]
      }
    }
  }
]

// Fleet health: tenants by health, failures by code, alerts delivered per tenant, lag.
resource fleetHealth 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspace.id, 'mssp-fleet-health')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'MSSP connector: fleet health'
    category: 'workbook'
    version: 'Notebook/1.0'
    sourceId: workspace.id
    serializedData: replace(loadTextContent('fleetHealth.workbook.json'), '__WORKSPACE_ID__', workspace.id)
  }
}

output ruleNames array = [for (rule, i) in alertRules: rules[i].name]
output workbookName string = fleetHealth.name
