#!/bin/sh
# azd postprovision hook (azure.yaml): registers the Entra ID app for the deployment azd just made,
# with infra/register-app.sh, from the deployment's outputs that azd puts in the environment, then
# keeps the application id in the azd environment (MSSP_CLIENT_ID), where
# infra/main.parameters.json passes it to every later provision as clientId.
#
# Idempotent and non-interactive. The app's credential is created on the first registration
# only; later runs keep it (managedIdentity: the federated credential is always kept correct,
# nothing is ever created). MSSP_ROTATE_CREDENTIAL=true creates a new certificate version or
# client secret on the next provision. Needs az signed in to the MSSP tenant (az login --tenant).
set -eu

missing=''
for name in AZURE_RESOURCE_GROUP CONSENT_CALLBACK_URL FUNCTION_APP_NAME MSSP_TENANT_ID MSSP_CLIENT_CREDENTIAL \
  MANAGED_IDENTITY_PRINCIPAL_ID CREDENTIAL_VAULT_NAME; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then missing="$missing $name"; fi
done
if [ -n "$missing" ]; then
  echo "postprovision: the azd environment lacks:$missing (outputs of infra/main.bicep); run azd provision again" >&2
  exit 1
fi
if ! command -v bash >/dev/null 2>&1; then
  echo "postprovision: infra/register-app.sh needs bash (Linux, macOS, WSL, Git Bash, Cloud Shell)" >&2
  exit 1
fi
if ! command -v az >/dev/null 2>&1; then
  echo "postprovision: the Azure CLI (az) is needed to register the Entra ID app; install it, run az login --tenant $MSSP_TENANT_ID, then azd provision" >&2
  exit 1
fi

first_registration=false
if [ -z "${MSSP_CLIENT_ID:-}" ]; then first_registration=true; fi

app_id_file=$(mktemp)
trap 'rm -f "$app_id_file"' EXIT INT TERM

set -- --resource-group "$AZURE_RESOURCE_GROUP" \
  --redirect-uri "$CONSENT_CALLBACK_URL" \
  --function-app "$FUNCTION_APP_NAME" \
  --mssp-tenant-id "$MSSP_TENANT_ID" \
  --credential "$MSSP_CLIENT_CREDENTIAL" \
  --identity-principal-id "$MANAGED_IDENTITY_PRINCIPAL_ID" \
  --key-vault "$CREDENTIAL_VAULT_NAME" \
  --app-id-file "$app_id_file"
if [ -n "${MSSP_CLIENT_ID:-}" ]; then set -- "$@" --app-id "$MSSP_CLIENT_ID"; fi
if [ -n "${MSSP_CLIENT_CERTIFICATE_NAME:-}" ]; then set -- "$@" --certificate-name "$MSSP_CLIENT_CERTIFICATE_NAME"; fi
# A secret or certificate is created once, not on every provision (each would be a new credential).
if [ "$first_registration" = false ] && [ "${MSSP_ROTATE_CREDENTIAL:-false}" != true ]; then
  set -- "$@" --skip-secret
fi

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
bash "$script_dir/../register-app.sh" "$@"

app_id=$(tr -d '\r\n' <"$app_id_file")
if [ -z "$app_id" ]; then
  echo "postprovision: infra/register-app.sh reported no application id" >&2
  exit 1
fi
azd env set MSSP_CLIENT_ID "$app_id"
if [ "${MSSP_ROTATE_CREDENTIAL:-false}" = true ]; then azd env set MSSP_ROTATE_CREDENTIAL false; fi

if [ "$first_registration" = true ]; then
  cat <<NEXT

First registration done (application id $app_id, kept in the azd environment as MSSP_CLIENT_ID).
The console's sign-in is configured by the Bicep deployment, which needs that id: once azd has
deployed the code, run

  azd provision

one more time. Every later azd provision or azd up passes it by itself.
NEXT
fi
