#!/usr/bin/env bash
# post-deploy.sh: the steps that follow `az deployment group create -f infra/main.bicep` and that
# ARM cannot do by itself:
#   1. zip-deploy dist/oathpipe.zip (built by `make package`) to the Flex Consumption app;
#   2. create the PGP key pair for encrypted seed files once (`oathpipe pgp-keygen --if-missing`,
#      binary from `make build`) and print its public key;
#   3. grant the app's managed identity its Microsoft Graph application permissions, and remove
#      Graph permissions it no longer needs;
#   4. report (or, with --enable-hardware-oath, try to turn on) the hardwareOath method.
# Upload events need no step here: the Event Grid subscription (BlobCreated -> queue seed-imports)
# is in the Bicep. Every step is idempotent: run it again after each deployment. It reads no key.
#
# Usage: infra/post-deploy.sh -g RESOURCE_GROUP [-n DEPLOYMENT_NAME] [--zip PATH] [--skip-code]
#            [--skip-graph] [--graph-only] [--assign-permission NAME] [--enable-hardware-oath]
#   --graph-only  only steps 3 and 4 (for an Entra administrator with Reader on the group, or no
#                 Azure role at all when IDENTITY_PRINCIPAL_ID is set in the environment)
# Under `azd` (azure.yaml hook) the deployment outputs arrive as environment variables and the
# flags are not needed. docs/deploy.md explains each step and the roles it needs.
set -euo pipefail

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

RESOURCE_GROUP=${RESOURCE_GROUP:-${AZURE_RESOURCE_GROUP:-}}
DEPLOYMENT_NAME=${DEPLOYMENT_NAME:-main}
ZIP=${ZIP:-dist/oathpipe.zip}
SKIP_CODE=${SKIP_CODE:-0}
SKIP_GRAPH=${SKIP_GRAPH:-0}
GRAPH_ONLY=${GRAPH_ONLY:-0}
ENABLE_HARDWARE_OATH=${ENABLE_HARDWARE_OATH:-0}
# The permission that assigns and activates tokens. The default is the narrow one; the broad
# UserAuthenticationMethod.ReadWrite.All (every method of every user) only when asked for.
NARROW_PERMISSION=UserAuthMethod-HardwareOATH.ReadWrite.All
BROAD_PERMISSION=UserAuthenticationMethod.ReadWrite.All
ASSIGN_PERMISSION=${ASSIGN_PERMISSION:-$NARROW_PERMISSION}
# The CLI that builds the deployment package's oathpipe binary (make build).
OATHPIPE_BIN=${OATHPIPE_BIN:-./bin/oathpipe}
# Seconds between zip deploy retries (tests set 0).
WAIT_SECONDS=${WAIT_SECONDS:-10}
# The first Azure CLI whose `functionapp deployment source config-zip` knows Flex Consumption
# (One Deploy, /api/publish); older ones post to /api/zipdeploy, which Flex answers with 404.
MIN_AZ_VERSION=2.60.0

while [ $# -gt 0 ]; do
  case $1 in
    -g | --resource-group) RESOURCE_GROUP=$2; shift 2 ;;
    -n | --deployment-name) DEPLOYMENT_NAME=$2; shift 2 ;;
    --zip) ZIP=$2; shift 2 ;;
    --skip-code) SKIP_CODE=1; shift ;;
    --skip-graph) SKIP_GRAPH=1; shift ;;
    --graph-only) GRAPH_ONLY=1; shift ;;
    --assign-permission) ASSIGN_PERMISSION=$2; shift 2 ;;
    --enable-hardware-oath) ENABLE_HARDWARE_OATH=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "post-deploy: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

log() { printf 'post-deploy: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
warnings=0
warn() { log "warning: $*"; warnings=$((warnings + 1)); }

command -v az >/dev/null 2>&1 || die "the Azure CLI (az) is not installed"
case $ASSIGN_PERMISSION in
  "$NARROW_PERMISSION" | "$BROAD_PERMISSION") ;;
  *) die "--assign-permission must be $NARROW_PERMISSION (the default) or $BROAD_PERMISSION, not '$ASSIGN_PERMISSION'" ;;
esac
if [ "$GRAPH_ONLY" = 1 ]; then
  [ "$SKIP_GRAPH" = 1 ] && die "--graph-only and --skip-graph together leave nothing to do"
  SKIP_CODE=1
fi

# output NAME: a deployment output of infra/main.bicep, from the environment (azd exports them)
# or from the deployment record (needs Reader on the resource group).
output() {
  local name=$1 value=${!1:-}
  if [ -z "$value" ]; then
    [ -n "$RESOURCE_GROUP" ] || die "no resource group: pass -g RESOURCE_GROUP (or set RESOURCE_GROUP, or $name)"
    value=$(az deployment group show -g "$RESOURCE_GROUP" -n "$DEPLOYMENT_NAME" \
      --query "properties.outputs.${name}.value" -o tsv)
  fi
  [ -n "$value" ] || die "deployment $DEPLOYMENT_NAME in $RESOURCE_GROUP has no output $name (was infra/main.bicep deployed with -n $DEPLOYMENT_NAME?)"
  printf '%s' "$value"
}

# version_at_least HAVE WANT: true when dotted version HAVE >= WANT.
version_at_least() {
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

# 1. Code. Flex Consumption takes a zip with host.json at its root and publishes it to the
# deployment container; az authenticates with Entra ID (basic publishing credentials are off).
if [ "$SKIP_CODE" = 1 ]; then
  log "skipping zip deploy ($([ "$GRAPH_ONLY" = 1 ] && echo --graph-only || echo --skip-code))"
else
  az_version=$(az version --query '"azure-cli"' -o tsv 2>/dev/null || true)
  [ -n "$az_version" ] || die "could not read the Azure CLI version ('az version'); Azure CLI $MIN_AZ_VERSION or newer is needed"
  version_at_least "$az_version" "$MIN_AZ_VERSION" ||
    die "Azure CLI $az_version is too old: Flex Consumption deployment needs Azure CLI $MIN_AZ_VERSION or newer (older ones send the zip to /api/zipdeploy, which Flex answers with 404). Run 'az upgrade'."
  [ -f "$ZIP" ] || die "$ZIP not found: run 'make package' first (or pass --zip PATH)"
  APP=$(output AZURE_FUNCTION_APP_NAME)
  log "function app $APP in $RESOURCE_GROUP (Azure CLI $az_version)"
  # Right after the first provisioning, the identity's new role on the deployment container may
  # not have propagated yet and the upload fails (403 from storage); it succeeds a little later.
  deployed=0
  for try in 1 2 3 4 5; do
    log "zip-deploying $ZIP (attempt $try)"
    if az functionapp deployment source config-zip -g "$RESOURCE_GROUP" -n "$APP" --src "$ZIP" --output none; then
      deployed=1
      break
    fi
    sleep "$((WAIT_SECONDS * 3))"
  done
  [ "$deployed" = 1 ] || die "zip deploy to $APP failed 5 times (see the messages above)"
fi

# 2. The PGP key pair vendors encrypt seed files to. Created once: with --if-missing an existing
# key is left alone and its public key printed. Needs your own Key Vault data role on the vault
# (secrets get and set; Owner alone has none).
if [ "$GRAPH_ONLY" = 1 ]; then
  log "skipping the PGP key (--graph-only)"
elif [ ! -x "$OATHPIPE_BIN" ]; then
  warn "$OATHPIPE_BIN not found or not executable, so the PGP key was not checked or created. Run 'make build' (or set OATHPIPE_BIN) and run this script again; until then .pgp seed files cannot be decrypted."
else
  vault_url=$(output KEY_VAULT_URL)
  pgp_secret=$(output PGP_KEY_SECRET_NAME)
  log "PGP key: $OATHPIPE_BIN pgp-keygen --vault $vault_url --secret $pgp_secret --if-missing"
  if public_key=$("$OATHPIPE_BIN" pgp-keygen --vault "$vault_url" --secret "$pgp_secret" --if-missing); then
    log "PGP public key (give it to the token vendors; the app also serves it at GET /api/pgp-key):"
    printf '%s\n' "$public_key"
  else
    warn "oathpipe pgp-keygen failed (see above). It needs a Key Vault data role for you on the vault, e.g. a time-limited Key Vault Secrets Officer; run this script again afterwards."
  fi
fi

# 3. Microsoft Graph application permissions for the managed identity. Granting and removing them
# needs Privileged Role Administrator (or Global Administrator) in Entra ID.
GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
GRAPH=https://graph.microsoft.com

graph_role_id() {
  az ad sp show --id "$GRAPH_APP_ID" \
    --query "appRoles[?value=='$1' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv
}

grant_graph_permissions() {
  local graph_sp granted permission role_id wanted="" assignment app_role
  PRINCIPAL_ID=$(output IDENTITY_PRINCIPAL_ID)
  graph_sp=$(az ad sp show --id "$GRAPH_APP_ID" --query id -o tsv)
  if [ -z "$(graph_role_id "$ASSIGN_PERMISSION")" ]; then
    if [ "$ASSIGN_PERMISSION" = "$NARROW_PERMISSION" ]; then
      die "Microsoft Graph in this tenant offers no application permission $NARROW_PERMISSION, the narrow one oathpipe uses to assign and activate tokens. Nothing was granted. If you accept the broader $BROAD_PERMISSION (it can change every authentication method of every user), run again with --assign-permission $BROAD_PERMISSION."
    fi
    die "Microsoft Graph in this tenant offers no application permission $ASSIGN_PERMISSION"
  fi
  # One line per Graph app role assignment of the identity: assignment id, app role id.
  granted=$(az rest --method get \
    --url "$GRAPH/v1.0/servicePrincipals/$PRINCIPAL_ID/appRoleAssignments" \
    --query "value[?resourceId=='$graph_sp'].[id, appRoleId]" -o tsv)
  for permission in Policy.ReadWrite.AuthenticationMethod "$ASSIGN_PERMISSION" User.Read.All; do
    role_id=$(graph_role_id "$permission")
    [ -n "$role_id" ] || die "Microsoft Graph offers no application permission $permission in this tenant"
    wanted="$wanted $role_id "
    if cut -f2 <<<"$granted" | grep -qx "$role_id"; then
      log "Graph permission $permission: already granted"
      continue
    fi
    log "Graph permission $permission: granting"
    az rest --method post \
      --url "$GRAPH/v1.0/servicePrincipals/$PRINCIPAL_ID/appRoleAssignments" \
      --headers Content-Type=application/json \
      --body "{\"principalId\":\"$PRINCIPAL_ID\",\"resourceId\":\"$graph_sp\",\"appRoleId\":\"$role_id\"}" \
      --output none
  done
  # Anything else the identity holds on Graph is not needed (e.g. the broad permission after a
  # switch to the narrow one): remove it.
  while IFS=$'\t' read -r assignment app_role; do
    [ -n "$assignment" ] || continue
    case $wanted in *" $app_role "*) continue ;; esac
    log "Graph permission with app role id $app_role: not needed any more, removing"
    az rest --method delete \
      --url "$GRAPH/v1.0/servicePrincipals/$PRINCIPAL_ID/appRoleAssignments/$assignment" --output none
  done <<<"$granted"
}

if [ "$SKIP_GRAPH" = 1 ]; then
  log "skipping Graph permissions (--skip-graph). A Privileged Role Administrator must grant the"
  log "identity: Policy.ReadWrite.AuthenticationMethod, User.Read.All and $ASSIGN_PERMISSION;"
  log "'infra/post-deploy.sh -g $RESOURCE_GROUP --graph-only' run with their account does exactly that."
else
  grant_graph_permissions
fi

# 4. The tenant's authentication methods policy must allow hardware OATH tokens. The Azure CLI's
# Graph token carries no Policy.* scope, so reading or changing the policy with `az rest` is
# normally refused (403): that is reported, never fatal.
OATH_POLICY="$GRAPH/beta/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/hardwareOath"
oath_howto() {
  log "  Turn it on as an Authentication Policy Administrator: Entra admin center > Protection >"
  log "  Authentication methods > Policies > Hardware OATH tokens > Enable; or with Microsoft Graph"
  log "  PowerShell: Connect-MgGraph -Scopes Policy.ReadWrite.AuthenticationMethod, then"
  log "  Update-MgBetaPolicyAuthenticationMethodPolicyAuthenticationMethodConfiguration (docs/deploy.md)."
  log "  Changes can take up to an hour to apply."
}
oath_err=$(mktemp)
trap 'rm -f "$oath_err"' EXIT
if [ "$ENABLE_HARDWARE_OATH" = 1 ]; then
  log "enabling the hardwareOath authentication method (needs Authentication Policy Administrator)"
  if az rest --method patch --url "$OATH_POLICY" --headers Content-Type=application/json \
    --body '{"@odata.type":"#microsoft.graph.hardwareOathAuthenticationMethodConfiguration","state":"enabled"}' \
    --output none 2>"$oath_err"; then
    log "hardwareOath authentication method: enable requested"
  else
    warn "could not enable the hardwareOath authentication method with the Azure CLI ($(head -n1 "$oath_err")); its token has no Policy.ReadWrite.AuthenticationMethod scope."
    oath_howto
  fi
fi
if state=$(az rest --method get --url "$OATH_POLICY" --query state -o tsv 2>"$oath_err") && [ -n "$state" ]; then
  log "hardwareOath authentication method: $state"
  [ "$state" = enabled ] || oath_howto
else
  log "hardwareOath authentication method: could not be read with the Azure CLI's token (no Policy.* scope: $(head -n1 "$oath_err")). Check it in the Entra admin center."
  oath_howto
fi

if [ "$GRAPH_ONLY" != 1 ]; then
  APP=${APP:-$(output AZURE_FUNCTION_APP_NAME)}
  URL=$(output AZURE_FUNCTION_APP_URL)
  log "Functions: az functionapp function list -g $RESOURCE_GROUP -n $APP --query '[].name' -o tsv"
  log "HTTP API: $URL/api/tokens/{serial}/assignment; PGP public key: $URL/api/pgp-key (function key:"
  log "  az functionapp function keys list -g $RESOURCE_GROUP -n $APP --function-name TokenAssignment)"
fi
if [ "$warnings" -gt 0 ]; then
  log "done, with $warnings warning(s) above"
else
  log "done"
fi
