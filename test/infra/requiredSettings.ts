/** The settings loadConfig requires, with Azure-shaped values: the base the infra tests vary. */
export const REQUIRED_SETTINGS = {
  MSSP_CLIENT_ID: "00000000-0000-4000-8000-000000000001",
  MSSP_CLIENT_SECRET: "not-a-real-secret",
  MSSP_TENANT_ID: "00000000-0000-4000-8000-000000000002",
  MSSP_PUBLIC_BASE_URL: "https://mssp-func-abc.azurewebsites.net",
  KEY_VAULT_URL: "https://kv-mssp-abc.vault.azure.net/",
  AzureWebJobsStorage__accountName: "stmsspabc",
  AzureWebJobsStorage__credential: "managedidentity",
  AzureWebJobsStorage__clientId: "00000000-0000-4000-8000-000000000003",
  AZURE_CLIENT_ID: "00000000-0000-4000-8000-000000000003",
};
