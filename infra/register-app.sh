#!/usr/bin/env bash
# Creates or updates the multi-tenant Entra ID app registration of the MSSP Defender connector,
# stores a new client secret in Key Vault without ever printing it, and points the function app
# at the registration. Run after `az deployment group create -f infra/main.bicep`.
# See --help and docs/deploy.md.
set -euo pipefail
# Never trace this script, even under `bash -x`: it handles a client secret.
{ set +x; } 2>/dev/null

readonly DEFENDER_APP_ID='fc780465-2017-40d4-a0c5-307022471b92' # WindowsDefenderATP (Defender for Endpoint API)
readonly DEFENDER_SCOPE='Alert.Read'                             # delegated permission the app asks customers for
readonly GRAPH_APP_ID='00000003-0000-0000-c000-000000000000'     # Microsoft Graph
readonly GRAPH_SCOPE='SecurityAlert.Read.All'                    # delegated permission for tenants with source "graph"
readonly SECRET_NAME='mssp-client-secret'                        # MSSP_CLIENT_SECRET references this secret
readonly SIGN_IN_AUDIENCE='AzureADMultipleOrgs'
readonly CONSOLE_ROLE_JSON='[{"allowedMemberTypes":["User","Application"],"description":"Operate the MSSP Defender connector console: register, re-consent and offboard customer tenants.","displayName":"Console operator","id":"5b0f0c1e-4f3a-4b8e-9a7d-2c6e1f0a9b31","isEnabled":true,"value":"Console.Operator"}]'
readonly VAULT_ATTEMPTS=12 VAULT_RETRY_SECONDS=15

usage() {
  cat <<'USAGE'
Usage: infra/register-app.sh --resource-group RG [options]

Registers the MSSP Defender connector in Entra ID (the MSSP's own tenant) after the Bicep
deployment, in these steps:

  1. Read the outputs CONSENT_CALLBACK_URL, FUNCTION_APP_NAME, CREDENTIAL_VAULT_NAME and
     MSSP_TENANT_ID of the deployment (az deployment group show), unless given explicitly below,
     and check that az is signed in to that MSSP tenant.
  2. Find the app registration (by --app-id, else by exact --display-name). Create it when it does
     not exist: multi-tenant (signInAudience AzureADMultipleOrgs) with the Web redirect URI
     CONSENT_CALLBACK_URL. When it exists, make it multi-tenant and add the redirect URI if missing
     (other redirect URIs are kept).
     Define the app role Console.Operator (members: users, and applications for automation that
     signs in with client credentials), or let applications into it where it only admitted users.
  3. Create its service principal in the MSSP tenant if missing.
  4. Add the delegated permissions WindowsDefenderATP / Alert.Read (API fc780465-2017-40d4-a0c5-
     307022471b92) and Microsoft Graph / SecurityAlert.Read.All (API 00000003-0000-0000-c000-
     000000000000, for tenants whose source is "graph"). The permission ids are looked up at run
     time from each API's service principal. Customers grant them through the app's consent link;
     nothing is granted here.
  5. Unless --skip-secret: wait until the credential vault accepts your requests (role assignments
     take a few minutes to propagate), then create a NEW client secret (appended, existing secrets
     stay valid) and pipe it straight into its Key Vault secret "mssp-client-secret". The secret is
     never printed, never stored in a shell variable and never passed as a command-line argument.
     You need Key Vault Secrets Officer on the credential vault (never on the tokens vault) for
     this run only: deploy with -p grantDeployerVaultAccess=true
     -p deployerPrincipalId=$(az ad signed-in-user show --query id -o tsv), or activate a PIM
     assignment, and remove it afterwards (docs/deploy.md "No standing access"). With vnetEnabled
     the vault takes no public traffic: run from inside the VNet or allow your address for the
     run (docs/deploy.md "Network isolation").
  6. Set the function app setting MSSP_CLIENT_ID to the application id (this restarts the app,
     which also re-reads the Key Vault reference MSSP_CLIENT_SECRET). Because every Bicep
     deployment replaces all app settings, pass -p clientId=<application id> on later
     deployments.

Options:
  -g, --resource-group RG   Resource group of the deployment (required).
  -d, --deployment NAME     Deployment name to read outputs from (default: main, the name az gives
                            a deployment of main.bicep).
  -n, --display-name NAME   Display name of the app registration
                            (default: "MSSP Defender Connector").
      --app-id GUID         Update this existing registration instead of looking it up by name.
      --redirect-uri URL    Use this redirect URI instead of the CONSENT_CALLBACK_URL output.
      --function-app NAME   Use this function app instead of the FUNCTION_APP_NAME output.
      --key-vault NAME      Use this vault instead of the CREDENTIAL_VAULT_NAME output.
      --secret-years N      Lifetime of the new client secret in years (default: 1).
      --skip-secret         Do not create a client secret (e.g. only the redirect URI changed).
      --dry-run             Print the az commands instead of running them (no az call at all;
                            values that would be looked up are shown as <PLACEHOLDERS>, and the
                            plan shown is the one for a registration that does not exist yet).
  -h, --help                Show this help.

Exit status: 0 on success, 2 on usage errors, 1 when an az step fails.
USAGE
}

usage_error() {
  printf 'register-app.sh: %s\nRun infra/register-app.sh --help for usage.\n' "$1" >&2
  exit 2
}

fail() {
  printf 'register-app.sh: error: %s\n' "$1" >&2
  exit 1
}

info() {
  printf '==> %s\n' "$1"
}

# ---- arguments -----------------------------------------------------------------------------

resource_group=''
deployment='main'
display_name='MSSP Defender Connector'
app_id=''
redirect_uri=''
function_app=''
key_vault=''
secret_years='1'
skip_secret=false
dry_run=false

require_value() {
  # require_value OPTION "$@" — the option at $2 must be followed by a non-empty value.
  if [[ $# -lt 3 || -z "$3" || "$3" == -* ]]; then
    usage_error "option $1 needs a value"
  fi
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    -g | --resource-group)
      require_value "$1" "$@"
      resource_group="$2"
      shift 2
      ;;
    -d | --deployment)
      require_value "$1" "$@"
      deployment="$2"
      shift 2
      ;;
    -n | --display-name)
      require_value "$1" "$@"
      display_name="$2"
      shift 2
      ;;
    --app-id)
      require_value "$1" "$@"
      app_id="$2"
      shift 2
      ;;
    --redirect-uri)
      require_value "$1" "$@"
      redirect_uri="$2"
      shift 2
      ;;
    --function-app)
      require_value "$1" "$@"
      function_app="$2"
      shift 2
      ;;
    --key-vault)
      require_value "$1" "$@"
      key_vault="$2"
      shift 2
      ;;
    --secret-years)
      require_value "$1" "$@"
      secret_years="$2"
      shift 2
      ;;
    --skip-secret)
      skip_secret=true
      shift
      ;;
    --dry-run)
      dry_run=true
      shift
      ;;
    *)
      usage_error "unknown argument: $1"
      ;;
  esac
done

[[ -n "$resource_group" ]] || usage_error "missing required argument --resource-group"
[[ "$secret_years" =~ ^[1-9][0-9]?$ ]] || usage_error "--secret-years must be a whole number from 1 to 99"
if [[ -n "$app_id" && ! "$app_id" =~ ^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$ ]]; then
  usage_error "--app-id must be a GUID"
fi

# ---- running (or printing) az commands -------------------------------------------------------

exec 3>&1 # dry-run lines go to the original stdout, also from inside $(...)

print_command() {
  local line='+' arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      line+=" $arg"
    elif [[ "$arg" != *"'"* ]]; then
      line+=" '$arg'"
    elif [[ "$arg" != *[\"\$\`\\!]* ]]; then
      line+=" \"$arg\""
    else
      line+=" $(printf '%q' "$arg")"
    fi
  done
  printf '%s\n' "$line" >&3
}

# az_read PLACEHOLDER az ARGS... — run a lookup and print its stdout (dry run: print PLACEHOLDER).
az_read() {
  local placeholder="$1"
  shift
  if [[ "$dry_run" == true ]]; then
    print_command "$@"
    printf '%s\n' "$placeholder"
    return 0
  fi
  "$@"
}

# az_do az ARGS... — run a change (dry run: only print it).
az_do() {
  if [[ "$dry_run" == true ]]; then
    print_command "$@"
    return 0
  fi
  "$@"
}

strip_cr() {
  printf '%s' "${1%$'\r'}"
}

lower() {
  printf '%s' "$1" | tr '[:upper:]' '[:lower:]'
}

if [[ "$dry_run" == true ]]; then
  printf '# dry run: az commands that would run (lookups show <PLACEHOLDERS>)\n'
elif ! command -v az >/dev/null 2>&1; then
  fail "the Azure CLI (az) was not found on PATH; install az >= 2.60 and run az login"
fi

# ---- 1. deployment outputs -------------------------------------------------------------------

deployment_output() {
  local name="$1" value
  value=$(az_read "<$name>" az deployment group show --resource-group "$resource_group" --name "$deployment" \
    --query "properties.outputs.$name.value" --output tsv)
  value=$(strip_cr "$value")
  [[ -n "$value" ]] || fail "deployment '$deployment' in resource group '$resource_group' has no output $name (deploy infra/main.bicep first, or pass it explicitly)"
  printf '%s' "$value"
}

info "Reading deployment outputs ($resource_group / $deployment)"
if ! signed_in_tenant=$(az_read '<SIGNED_IN_TENANT_ID>' az account show --query tenantId --output tsv); then
  fail "az is not signed in; run az login --tenant <MSSP tenant id>"
fi
signed_in_tenant=$(strip_cr "$signed_in_tenant")

if [[ -z "$redirect_uri" ]]; then redirect_uri=$(deployment_output CONSENT_CALLBACK_URL); fi
if [[ -z "$function_app" ]]; then function_app=$(deployment_output FUNCTION_APP_NAME); fi
if [[ "$skip_secret" == false && -z "$key_vault" ]]; then key_vault=$(deployment_output CREDENTIAL_VAULT_NAME); fi

mssp_tenant=$(az_read '<MSSP_TENANT_ID>' az deployment group show --resource-group "$resource_group" --name "$deployment" \
  --query 'properties.outputs.MSSP_TENANT_ID.value' --output tsv 2>/dev/null || true)
mssp_tenant=$(strip_cr "$mssp_tenant")
if [[ "$dry_run" == false && -n "$mssp_tenant" && "$(lower "$mssp_tenant")" != "$(lower "$signed_in_tenant")" ]]; then
  fail "az is signed in to tenant $signed_in_tenant but the deployment's MSSP_TENANT_ID is $mssp_tenant; run az login --tenant $mssp_tenant"
fi
if [[ "$dry_run" == false && "$redirect_uri" != https://* ]]; then
  fail "the redirect URI must use https: $redirect_uri"
fi
# App Service authentication signs MSSP staff in to the operator console on the same host.
console_callback=''
if [[ "$redirect_uri" == */api/consent/callback ]]; then
  console_callback="${redirect_uri%/api/consent/callback}/.auth/login/aad/callback"
fi
wanted_uris=("$redirect_uri")
if [[ -n "$console_callback" ]]; then wanted_uris+=("$console_callback"); fi

# ---- 2. app registration -----------------------------------------------------------------------

if [[ -n "$app_id" ]]; then
  info "Using app registration $app_id"
  found=$(az_read "$app_id" az ad app show --id "$app_id" --query appId --output tsv)
  [[ -n "$(strip_cr "$found")" ]] || fail "no app registration with application id $app_id"
else
  info "Looking up app registration \"$display_name\""
  found=$(az_read '' az ad app list --display-name "$display_name" --query '[].appId' --output tsv)
  matches=()
  while IFS= read -r line; do
    line=$(strip_cr "$line")
    if [[ -n "$line" ]]; then matches+=("$line"); fi
  done <<<"$found"
  if [[ ${#matches[@]} -gt 1 ]]; then
    fail "${#matches[@]} app registrations are named \"$display_name\"; pass --app-id to pick one"
  elif [[ ${#matches[@]} -eq 1 ]]; then
    app_id="${matches[0]}"
  fi
fi

if [[ -z "$app_id" ]]; then
  info "Creating multi-tenant app registration \"$display_name\""
  app_id=$(az_read '<APP_ID>' az ad app create --display-name "$display_name" \
    --sign-in-audience "$SIGN_IN_AUDIENCE" --web-redirect-uris "${wanted_uris[@]}" --query appId --output tsv)
  app_id=$(strip_cr "$app_id")
  [[ -n "$app_id" ]] || fail "az ad app create returned no application id"
else
  info "Updating app registration $app_id (audience, redirect URI)"
  existing=$(az_read '' az ad app show --id "$app_id" --query 'web.redirectUris' --output tsv)
  uris=()
  while IFS= read -r line; do
    line=$(strip_cr "$line")
    if [[ -n "$line" && "$line" != "$redirect_uri" && "$line" != "$console_callback" ]]; then uris+=("$line"); fi
  done <<<"$existing"
  uris+=("${wanted_uris[@]}")
  az_do az ad app update --id "$app_id" --sign-in-audience "$SIGN_IN_AUDIENCE" --web-redirect-uris "${uris[@]}"
fi

# ---- 2b. the console's app role ---------------------------------------------------------------
# Staff assigned Console.Operator (Enterprise applications > this app > Users and groups) may use
# the operator console; the app checks the role claim. Applications may hold it too, so automation
# using client credentials gets it as an application permission. A fixed id keeps reruns
# idempotent; a role created by an earlier version (users only) is updated in place.

member_types=$(az_read '' az ad app show --id "$app_id" \
  --query "appRoles[?value=='Console.Operator'] | [0].allowedMemberTypes" --output tsv)
has_user=false has_application=false
while IFS= read -r line; do
  line=$(strip_cr "$line")
  if [[ "$line" == User ]]; then has_user=true; fi
  if [[ "$line" == Application ]]; then has_application=true; fi
done <<<"${member_types//$'\t'/$'\n'}" # one per line, or tab-separated
if [[ -z "$(strip_cr "$member_types")" ]]; then
  info "Adding the app role Console.Operator"
  az_do az ad app update --id "$app_id" --app-roles "$CONSOLE_ROLE_JSON"
elif [[ "$has_user" == false || "$has_application" == false ]]; then
  info "Letting users and applications hold the app role Console.Operator"
  az_do az ad app update --id "$app_id" --app-roles "$CONSOLE_ROLE_JSON"
fi

# ---- 3. service principal in the MSSP tenant -------------------------------------------------

sp=$(az_read '' az ad sp list --filter "appId eq '$app_id'" --query '[].id' --output tsv)
if [[ -z "$(strip_cr "$sp")" ]]; then
  info "Creating the service principal in the MSSP tenant"
  az_do az ad sp create --id "$app_id" --output none
fi

# ---- 4. delegated permissions: Defender for Endpoint API and Microsoft Graph ---------------

# Adds one delegated permission of another API to the app (id looked up from that API's
# service principal at run time); customers grant it through the consent link.
add_delegated_permission() {
  local api_id=$1 scope=$2 label=$3 placeholder=$4 missing_hint=$5
  info "Adding delegated permission $label/$scope"
  local scope_id present
  if ! scope_id=$(az_read "$placeholder" az ad sp show --id "$api_id" \
    --query "oauth2PermissionScopes[?value=='$scope'].id | [0]" --output tsv); then
    fail "the $label service principal ($api_id) is not in this tenant; $missing_hint"
  fi
  scope_id=$(strip_cr "$scope_id")
  [[ -n "$scope_id" ]] || fail "$label exposes no delegated permission $scope"
  present=$(az_read '' az ad app show --id "$app_id" \
    --query "requiredResourceAccess[?resourceAppId=='$api_id'].resourceAccess[] | [?id=='$scope_id'].id | [0]" \
    --output tsv)
  if [[ -z "$(strip_cr "$present")" ]]; then
    az_do az ad app permission add --id "$app_id" --api "$api_id" --api-permissions "$scope_id=Scope" --output none
  else
    info "Permission already present"
  fi
}

add_delegated_permission "$DEFENDER_APP_ID" "$DEFENDER_SCOPE" WindowsDefenderATP '<ALERT_READ_SCOPE_ID>' \
  "sign in to the Microsoft Defender portal once (or ask an admin to run az ad sp create --id $DEFENDER_APP_ID) and retry"
# Tenants with "source": "graph" read Defender XDR alerts through Microsoft Graph security/alerts_v2.
add_delegated_permission "$GRAPH_APP_ID" "$GRAPH_SCOPE" 'Microsoft Graph' '<SECURITY_ALERT_READ_ALL_SCOPE_ID>' \
  "ask an admin to run az ad sp create --id $GRAPH_APP_ID and retry"

# ---- 5. client secret -> Key Vault, never printed -------------------------------------------

if [[ "$skip_secret" == false ]]; then
  info "Checking access to Key Vault $key_vault"
  attempt=1
  until az_do az keyvault secret list --vault-name "$key_vault" --maxresults 1 --output none 2>/dev/null; do
    if [[ $attempt -ge $VAULT_ATTEMPTS ]]; then
      fail "cannot use Key Vault $key_vault; you need Key Vault Secrets Officer on it (deploy with -p grantDeployerVaultAccess=true -p deployerPrincipalId=\$(az ad signed-in-user show --query id -o tsv), or activate it in PIM; role assignments can take a few minutes) and, with vnetEnabled, network access to it (docs/deploy.md)"
    fi
    printf 'Key Vault not accessible yet (role assignments propagate slowly); retry %d/%d in %ds\n' \
      "$attempt" "$VAULT_ATTEMPTS" "$VAULT_RETRY_SECONDS"
    attempt=$((attempt + 1))
    sleep "$VAULT_RETRY_SECONDS"
  done

  info "Creating a client secret and storing it in $key_vault/$SECRET_NAME"
  credential_name="connector-$(date -u +%Y%m%d)"
  reset_command=(az ad app credential reset --id "$app_id" --append --display-name "$credential_name"
    --years "$secret_years" --query password --output tsv)
  store_command=(az keyvault secret set --vault-name "$key_vault" --name "$SECRET_NAME"
    --file /dev/stdin --content-type text/plain --output none)
  if [[ "$dry_run" == true ]]; then
    print_command "${reset_command[@]}"
    printf "  | tr -d '\\\\r\\\\n' |\n" >&3
    print_command "${store_command[@]}"
  else
    # The password travels only through this pipe; tr drops the newline that -o tsv appends.
    "${reset_command[@]}" | tr -d '\r\n' | "${store_command[@]}" ||
      fail "storing the client secret failed; a new credential may have been created anyway (list: az ad app credential list --id $app_id)"
  fi
fi

# ---- 6. function app setting ------------------------------------------------------------------

info "Setting MSSP_CLIENT_ID on $function_app"
az_do az functionapp config appsettings set --resource-group "$resource_group" --name "$function_app" \
  --settings "MSSP_CLIENT_ID=$app_id" --output none

tenant_for_summary="${mssp_tenant:-$signed_in_tenant}"
cat <<SUMMARY

Done.
  Application (client) id: $app_id
  MSSP tenant id:          $tenant_for_summary
  Redirect URI:            $redirect_uri
  Console sign-in URI:     ${console_callback:-(not set: custom redirect URI)}

Next:
  - Pass -p clientId=$app_id on every later Bicep deployment (a deployment replaces all app settings).
  - Assign the MSSP staff who operate the console to the app role Console.Operator
    (Entra admin center > Enterprise applications > $display_name > Users and groups); automation
    signing in with client credentials gets it as an application permission of its own app
    registration (API permissions > My APIs > $display_name > Console.Operator, admin consent).
  - Customers consent through the connector's consent link, then allow the application in the
    Microsoft Defender portal (Settings > Endpoints > APIs > SIEM > MSSP tab) with
    Application ID $app_id and Tenant ID $tenant_for_summary.
SUMMARY
if [[ "$skip_secret" == false ]]; then
  printf '  - The client secret expires in %s year(s); rerun this script before then\n' "$secret_years"
  printf '    (list old secrets: az ad app credential list --id %s).\n' "$app_id"
  printf '  - Remove your Key Vault Secrets Officer assignment on %s now (no standing access):\n' "$key_vault"
  printf '    az role assignment delete --assignee <your object id> --role "Key Vault Secrets Officer" --scope "$(az keyvault show --name %s --query id -o tsv)"\n' "$key_vault"
fi
