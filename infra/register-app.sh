#!/usr/bin/env bash
# Creates or updates the multi-tenant Entra ID app registration of the MSSP Defender connector,
# gives it the credential the deployment chose (a federated credential trusting the function app's
# managed identity, a Key Vault certificate, or a client secret stored in Key Vault without ever
# being printed), and points the function app at the registration. Run after
# `az deployment group create -f infra/main.bicep`, or let `azd up` run it (infra/hooks/).
# Idempotent and non-interactive. See --help and docs/deploy.md.
set -euo pipefail
# Never trace this script, even under `bash -x`: it may handle a client secret.
{ set +x; } 2>/dev/null

readonly DEFENDER_APP_ID='fc780465-2017-40d4-a0c5-307022471b92' # WindowsDefenderATP (Defender for Endpoint API)
readonly DEFENDER_SCOPE='Alert.Read'                             # delegated permission the app asks customers for
readonly GRAPH_APP_ID='00000003-0000-0000-c000-000000000000'     # Microsoft Graph
readonly GRAPH_SCOPE='SecurityAlert.Read.All'                    # delegated permission for tenants with source "graph"
readonly DEFENDER_APP_ROLE='Alert.Read.All'                      # application permission (application consent model)
readonly GRAPH_APP_ROLE='SecurityAlert.Read.All'                 # application permission for "graph" tenants
readonly SECRET_NAME='mssp-client-secret'                        # MSSP_CLIENT_SECRET references this secret
readonly DEFAULT_CERTIFICATE_NAME='mssp-client-certificate'      # main.bicep clientCertificateName default
readonly FIC_NAME='mssp-connector-app-identity'                  # the federated credential trusting the app's identity
readonly FIC_AUDIENCE='api://AzureADTokenExchange'               # audience of a managed identity's assertion
readonly ENTRA_LOGIN='https://login.microsoftonline.com'         # issuer host of the identity's tokens (public cloud)
readonly SIGN_IN_AUDIENCE='AzureADMultipleOrgs'
readonly CONSOLE_ROLE_JSON='[{"allowedMemberTypes":["User","Application"],"description":"Operate the MSSP Defender connector console: register, re-consent and offboard customer tenants.","displayName":"Console operator","id":"5b0f0c1e-4f3a-4b8e-9a7d-2c6e1f0a9b31","isEnabled":true,"value":"Console.Operator"}]'
readonly VAULT_ATTEMPTS=12 VAULT_RETRY_SECONDS=15

usage() {
  cat <<'USAGE'
Usage: infra/register-app.sh --resource-group RG [options]

Registers the MSSP Defender connector in Entra ID (the MSSP's own tenant) after the Bicep
deployment, in these steps:

  1. Read the outputs CONSENT_CALLBACK_URL, FUNCTION_APP_NAME, MSSP_TENANT_ID,
     MSSP_CLIENT_CREDENTIAL and, as the credential needs them, MANAGED_IDENTITY_PRINCIPAL_ID,
     CREDENTIAL_VAULT_NAME and MSSP_CLIENT_CERTIFICATE_NAME of the deployment
     (az deployment group show), unless given explicitly below, and check that az is signed in to
     that MSSP tenant. A deployment without MSSP_CLIENT_CREDENTIAL (an earlier version) uses a
     client secret.
  2. Find the app registration (by --app-id, else by exact --display-name). Create it when it does
     not exist: multi-tenant (signInAudience AzureADMultipleOrgs) with the Web redirect URI
     CONSENT_CALLBACK_URL. When it exists, make it multi-tenant and add the redirect URI if missing
     (other redirect URIs are kept).
     Define the app role Console.Operator (members: users, and applications for automation that
     signs in with client credentials), or let applications into it where it only admitted users.
  3. Create its service principal in the MSSP tenant if missing.
  4. Add the delegated permissions WindowsDefenderATP / Alert.Read (API fc780465-2017-40d4-a0c5-
     307022471b92) and Microsoft Graph / SecurityAlert.Read.All (API 00000003-0000-0000-c000-
     000000000000, for tenants whose source is "graph"), and the application permissions
     WindowsDefenderATP / Alert.Read.All and Microsoft Graph / SecurityAlert.Read.All (tenants
     with the application consent model). The permission ids are looked up at run time from each
     API's service principal. Customers grant them through the app's consent link; nothing is
     granted here.
  5. The app's credential, by MSSP_CLIENT_CREDENTIAL (--credential):
     managedIdentity  no secret and no certificate at all: add (or correct) the federated
                      credential "mssp-connector-app-identity" trusting the function app's
                      user-assigned identity: issuer https://login.microsoftonline.com/<MSSP
                      tenant id>/v2.0, subject its principal (object) id, audience
                      api://AzureADTokenExchange. No Key Vault access is needed.
     certificate      unless --skip-secret: create a new version of the Key Vault certificate
                      MSSP_CLIENT_CERTIFICATE_NAME in the credential vault (self-signed, RSA 2048,
                      PEM, the private key is stored only in Key Vault), then append its public key to
                      the registration. Needs Key Vault Certificates Officer on the credential
                      vault for the run. Also adds the federated credential above: the console's
                      sign-in (App Service authentication) uses the managed identity.
     secret           unless --skip-secret: wait until the credential vault accepts your requests
                      (role assignments take a few minutes to propagate), then create a NEW client
                      secret (appended, existing secrets stay valid) and pipe it straight into its
                      Key Vault secret "mssp-client-secret". The secret is never printed, never
                      stored in a shell variable and never passed as a command-line argument.
                      Needs Key Vault Secrets Officer on the credential vault for the run.
     Vault roles (never on the tokens vault) are for this run only: deploy with
     -p grantDeployerVaultAccess=true -p deployerPrincipalId=$(az ad signed-in-user show --query
     id -o tsv), or activate a PIM assignment, and remove it afterwards (docs/deploy.md "No
     standing access"). With vnetEnabled the vault takes no public traffic: run from inside the
     VNet or allow your address for the run (docs/deploy.md "Network isolation").
  6. Set the function app setting MSSP_CLIENT_ID to the application id (this restarts the app,
     which also re-reads its Key Vault references). Because every Bicep deployment replaces all
     app settings, pass -p clientId=<application id> on later deployments (azd: the hook keeps it
     in the azd environment as MSSP_CLIENT_ID).

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
      --credential TYPE     managedIdentity, certificate or secret, instead of the
                            MSSP_CLIENT_CREDENTIAL output.
      --identity-principal-id GUID
                            Object id of the managed identity the federated credential trusts,
                            instead of the MANAGED_IDENTITY_PRINCIPAL_ID output.
      --mssp-tenant-id GUID Use this MSSP tenant id instead of the MSSP_TENANT_ID output.
      --certificate-name NAME
                            Key Vault certificate to create, instead of the
                            MSSP_CLIENT_CERTIFICATE_NAME output (default mssp-client-certificate).
      --certificate-months N
                            Validity of a new certificate in months (default: 12).
      --secret-years N      Lifetime of the new client secret in years (default: 1).
      --skip-secret         Do not create a client secret or certificate (e.g. only the redirect
                            URI changed). The federated credential is always kept correct.
      --app-id-file FILE    Also write the application id (nothing else) to FILE, for automation.
      --dry-run             Print the az commands instead of running them (no az call at all;
                            values that would be looked up are shown as <PLACEHOLDERS>, and the
                            plan shown is the one for a registration that does not exist yet;
                            without --credential, the plan for managedIdentity, the default).
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
credential=''
identity_principal_id=''
mssp_tenant=''
certificate_name=''
certificate_months='12'
app_id_file=''

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
    --credential)
      require_value "$1" "$@"
      credential="$2"
      shift 2
      ;;
    --identity-principal-id)
      require_value "$1" "$@"
      identity_principal_id="$2"
      shift 2
      ;;
    --mssp-tenant-id)
      require_value "$1" "$@"
      mssp_tenant="$2"
      shift 2
      ;;
    --certificate-name)
      require_value "$1" "$@"
      certificate_name="$2"
      shift 2
      ;;
    --certificate-months)
      require_value "$1" "$@"
      certificate_months="$2"
      shift 2
      ;;
    --app-id-file)
      require_value "$1" "$@"
      app_id_file="$2"
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
readonly GUID_RE='^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$'
if [[ -n "$app_id" && ! "$app_id" =~ $GUID_RE ]]; then
  usage_error "--app-id must be a GUID"
fi
if [[ -n "$identity_principal_id" && ! "$identity_principal_id" =~ $GUID_RE ]]; then
  usage_error "--identity-principal-id must be a GUID"
fi
if [[ -n "$mssp_tenant" && ! "$mssp_tenant" =~ $GUID_RE ]]; then
  usage_error "--mssp-tenant-id must be a GUID"
fi
case "$credential" in
  '' | managedIdentity | certificate | secret) ;;
  *) usage_error "--credential must be managedIdentity, certificate or secret" ;;
esac
[[ "$certificate_months" =~ ^[1-9][0-9]?$ ]] || usage_error "--certificate-months must be a whole number from 1 to 99"
if [[ -n "$certificate_name" && ! "$certificate_name" =~ ^[A-Za-z0-9-]{1,127}$ ]]; then
  usage_error "--certificate-name may hold only letters, digits and hyphens"
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

# An output that may be absent (a deployment of an earlier version): empty when it is.
optional_output() {
  local name="$1" value
  value=$(az_read "<$name>" az deployment group show --resource-group "$resource_group" --name "$deployment" \
    --query "properties.outputs.$name.value" --output tsv 2>/dev/null || true)
  strip_cr "$value"
}

if [[ -z "$redirect_uri" ]]; then redirect_uri=$(deployment_output CONSENT_CALLBACK_URL); fi
if [[ -z "$function_app" ]]; then function_app=$(deployment_output FUNCTION_APP_NAME); fi

if [[ -z "$credential" ]]; then
  if [[ "$dry_run" == true ]]; then
    print_command az deployment group show --resource-group "$resource_group" --name "$deployment" \
      --query properties.outputs.MSSP_CLIENT_CREDENTIAL.value --output tsv
    printf '# (the plan below is the one for MSSP_CLIENT_CREDENTIAL=managedIdentity, the Bicep default; pass --credential to see another)\n'
    credential=managedIdentity
  else
    credential=$(optional_output MSSP_CLIENT_CREDENTIAL)
    if [[ -z "$credential" ]]; then
      info "The deployment has no MSSP_CLIENT_CREDENTIAL output (an earlier version): using a client secret"
      credential=secret
    fi
  fi
fi
case "$credential" in
  managedIdentity | certificate | secret) ;;
  *) fail "the deployment's MSSP_CLIENT_CREDENTIAL is '$credential'; expected managedIdentity, certificate or secret" ;;
esac
info "App credential: $credential"

# The federated credential (managedIdentity, and the console sign-in with certificate) trusts the
# app's user-assigned identity; the vault holds a secret or a certificate.
needs_fic=false
if [[ "$credential" != secret ]]; then needs_fic=true; fi
needs_vault=false
if [[ "$credential" != managedIdentity && "$skip_secret" == false ]]; then needs_vault=true; fi
if [[ "$needs_fic" == true && -z "$identity_principal_id" ]]; then
  identity_principal_id=$(deployment_output MANAGED_IDENTITY_PRINCIPAL_ID)
fi
if [[ "$needs_vault" == true && -z "$key_vault" ]]; then key_vault=$(deployment_output CREDENTIAL_VAULT_NAME); fi
if [[ "$credential" == certificate && -z "$certificate_name" ]]; then
  certificate_name=$(optional_output MSSP_CLIENT_CERTIFICATE_NAME)
  certificate_name="${certificate_name:-$DEFAULT_CERTIFICATE_NAME}"
fi

if [[ -z "$mssp_tenant" ]]; then
  mssp_tenant=$(optional_output MSSP_TENANT_ID)
fi
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

# Adds one application permission (an app role of another API, id looked up from that API's
# service principal) for tenants with the application consent model: their administrator grants
# it through the admin-consent link; the app then uses client-credential tokens.
add_application_permission() {
  local api_id=$1 role=$2 label=$3 placeholder=$4 missing_hint=$5
  info "Adding application permission $label/$role"
  local role_id present
  if ! role_id=$(az_read "$placeholder" az ad sp show --id "$api_id" \
    --query "appRoles[?value=='$role'].id | [0]" --output tsv); then
    fail "the $label service principal ($api_id) is not in this tenant; $missing_hint"
  fi
  role_id=$(strip_cr "$role_id")
  [[ -n "$role_id" ]] || fail "$label exposes no application permission $role"
  present=$(az_read '' az ad app show --id "$app_id" \
    --query "requiredResourceAccess[?resourceAppId=='$api_id'].resourceAccess[] | [?id=='$role_id'].id | [0]" \
    --output tsv)
  if [[ -z "$(strip_cr "$present")" ]]; then
    az_do az ad app permission add --id "$app_id" --api "$api_id" --api-permissions "$role_id=Role" --output none
  else
    info "Permission already present"
  fi
}

add_application_permission "$DEFENDER_APP_ID" "$DEFENDER_APP_ROLE" WindowsDefenderATP '<ALERT_READ_ALL_ROLE_ID>' \
  "sign in to the Microsoft Defender portal once (or ask an admin to run az ad sp create --id $DEFENDER_APP_ID) and retry"
add_application_permission "$GRAPH_APP_ID" "$GRAPH_APP_ROLE" 'Microsoft Graph' '<SECURITY_ALERT_READ_ALL_ROLE_ID>' \
  "ask an admin to run az ad sp create --id $GRAPH_APP_ID and retry"

# ---- 5. the app's credential ------------------------------------------------------------------

# Waits until the credential vault accepts this principal's requests of one kind (secret or
# certificate): a fresh role assignment takes minutes to propagate. Bounded: VAULT_ATTEMPTS tries.
wait_for_vault() {
  local kind=$1 role=$2 attempt=1
  info "Checking access to Key Vault $key_vault"
  until az_do az keyvault "$kind" list --vault-name "$key_vault" --maxresults 1 --output none 2>/dev/null; do
    if [[ $attempt -ge $VAULT_ATTEMPTS ]]; then
      fail "cannot use Key Vault $key_vault; you need $role on it (deploy with -p grantDeployerVaultAccess=true -p deployerPrincipalId=\$(az ad signed-in-user show --query id -o tsv), or activate it in PIM; role assignments can take a few minutes) and, with vnetEnabled, network access to it (docs/deploy.md)"
    fi
    printf 'Key Vault not accessible yet (role assignments propagate slowly); retry %d/%d in %ds\n' \
      "$attempt" "$VAULT_ATTEMPTS" "$VAULT_RETRY_SECONDS"
    attempt=$((attempt + 1))
    sleep "$VAULT_RETRY_SECONDS"
  done
}

# 5a. managedIdentity (and the console sign-in with certificate): a federated identity credential
# trusting the function app's user-assigned identity. Its token for api://AzureADTokenExchange is
# the client assertion; nothing secret is created or stored anywhere. Kept correct on every run.
if [[ "$needs_fic" == true ]]; then
  fic_tenant="${mssp_tenant:-$signed_in_tenant}"
  fic_issuer="$ENTRA_LOGIN/$fic_tenant/v2.0"
  fic_json=$(printf '{"name":"%s","issuer":"%s","subject":"%s","audiences":["%s"],"description":"%s"}' \
    "$FIC_NAME" "$fic_issuer" "$identity_principal_id" "$FIC_AUDIENCE" \
    "MSSP Defender connector: the function app managed identity, no client secret")
  info "Trusting the function app's managed identity $identity_principal_id (federated credential $FIC_NAME)"
  current=$(az_read '' az ad app federated-credential list --id "$app_id" \
    --query "[?name=='$FIC_NAME'] | [0].[issuer, subject, join(' ', audiences)]" --output tsv)
  current=$(strip_cr "$current")
  if [[ -z "$current" ]]; then
    az_do az ad app federated-credential create --id "$app_id" --parameters "$fic_json" --output none
  elif [[ "$current" != "$fic_issuer"$'\t'"$identity_principal_id"$'\t'"$FIC_AUDIENCE" ]]; then
    info "Correcting the federated credential (issuer, subject or audience changed)"
    az_do az ad app federated-credential update --id "$app_id" --federated-credential-id "$FIC_NAME" \
      --parameters "$fic_json" --output none
  else
    info "Federated credential already present"
  fi
fi

# 5b. certificate: a new version of a self-signed Key Vault certificate whose private key never
# leaves the vault (the app reads it through the certificate's backing secret, PEM); only its
# public key goes to the app registration.
if [[ "$credential" == certificate && "$skip_secret" == false ]]; then
  wait_for_vault certificate 'Key Vault Certificates Officer'
  info "Creating a new version of certificate $certificate_name in $key_vault and adding its public key to the registration"
  policy=$(printf '{"issuerParameters":{"name":"Self"},"keyProperties":{"exportable":true,"keyType":"RSA","keySize":2048,"reuseKey":false},"secretProperties":{"contentType":"application/x-pem-file"},"x509CertificateProperties":{"subject":"CN=%s","validityInMonths":%d,"keyUsage":["digitalSignature"]},"lifetimeActions":[{"trigger":{"daysBeforeExpiry":30},"action":{"actionType":"EmailContacts"}}]}' \
    "${display_name//[^A-Za-z0-9 .-]/}" "$certificate_months")
  az_do az keyvault certificate create --vault-name "$key_vault" --name "$certificate_name" --policy "$policy" --output none ||
    fail "creating the certificate $certificate_name in $key_vault failed"
  az_do az ad app credential reset --id "$app_id" --append --display-name "connector-$(date -u +%Y%m%d)" \
    --keyvault "$key_vault" --cert "$certificate_name" --output none ||
    fail "adding the certificate to the app registration failed; the new version stays in Key Vault (list: az ad app credential list --id $app_id)"
fi

# 5c. secret: a client secret piped straight into Key Vault, never printed.
if [[ "$credential" == secret && "$skip_secret" == false ]]; then
  wait_for_vault secret 'Key Vault Secrets Officer'

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
if [[ -n "$app_id_file" ]]; then printf '%s\n' "$app_id" >"$app_id_file"; fi

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
  - Consent links: register each customer tenant in the console
    (https://<FUNCTION_APP_HOST_NAME>/api/console, "Register a tenant") or with
    POST /api/tenants {"tenantId": "<customer tenant id>", "consentModel": "application" or
    "delegated"}; the answer holds the tenant's consentUrl. Send it to the customer's administrator.
    application: the administrator grants Alert.Read.All (or SecurityAlert.Read.All for "graph")
    to the app for the whole tenant, and nothing else is needed.
    delegated: the administrator signs in and consents, then allows the application in the
    Microsoft Defender portal (Settings > Endpoints > APIs > SIEM > MSSP tab) with
    Application ID $app_id and Tenant ID $tenant_for_summary.
SUMMARY
if [[ "$credential" == managedIdentity ]]; then
  printf '  - No client secret or certificate exists: the app signs in with its managed identity\n'
  printf '    (federated credential %s); nothing to rotate.\n' "$FIC_NAME"
fi
if [[ "$credential" == certificate && "$skip_secret" == false ]]; then
  printf '  - The certificate %s is valid for %s month(s); rerun this script before it expires\n' "$certificate_name" "$certificate_months"
  printf '    (list old credentials: az ad app credential list --id %s).\n' "$app_id"
  printf '  - Remove your Key Vault Certificates Officer assignment on %s now (no standing access):\n' "$key_vault"
  printf '    az role assignment delete --assignee <your object id> --role "Key Vault Certificates Officer" --scope "$(az keyvault show --name %s --query id -o tsv)"\n' "$key_vault"
fi
if [[ "$credential" == secret && "$skip_secret" == false ]]; then
  printf '  - The client secret expires in %s year(s); rerun this script before then\n' "$secret_years"
  printf '    (list old secrets: az ad app credential list --id %s).\n' "$app_id"
  printf '  - Remove your Key Vault Secrets Officer assignment on %s now (no standing access):\n' "$key_vault"
  printf '    az role assignment delete --assignee <your object id> --role "Key Vault Secrets Officer" --scope "$(az keyvault show --name %s --query id -o tsv)"\n' "$key_vault"
fi
