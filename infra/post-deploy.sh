#!/usr/bin/env bash
# post-deploy.sh: the steps that follow `az deployment group create -f infra/main.bicep` and that
# ARM cannot do by itself:
#   1. zip-deploy dist/oathpipe.zip (built by `make package`) to the Flex Consumption app;
#   2. subscribe ImportSeeds to BlobCreated events of seed-inbox (Event Grid webhook to the blobs
#      extension, authenticated by the blobs_extension system key, which exists only once the
#      code runs);
#   3. grant the app's managed identity its Microsoft Graph application permissions;
#   4. check (or, with --enable-hardware-oath, turn on) the hardwareOath authentication method.
# Every step is idempotent: run it again after each deployment. It never prints a key.
#
# Usage: infra/post-deploy.sh -g RESOURCE_GROUP [-n DEPLOYMENT_NAME] [--zip PATH]
#                             [--skip-code] [--skip-graph] [--enable-hardware-oath]
# Under `azd` (azure.yaml hook) the deployment outputs arrive as environment variables and the
# flags are not needed. docs/deploy.md explains each step and the roles it needs.
set -euo pipefail

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

RESOURCE_GROUP=${RESOURCE_GROUP:-${AZURE_RESOURCE_GROUP:-}}
DEPLOYMENT_NAME=${DEPLOYMENT_NAME:-main}
ZIP=${ZIP:-dist/oathpipe.zip}
SKIP_CODE=${SKIP_CODE:-0}
SKIP_GRAPH=${SKIP_GRAPH:-0}
ENABLE_HARDWARE_OATH=${ENABLE_HARDWARE_OATH:-0}
# Which permission assigns and activates tokens: auto picks the narrower
# UserAuthMethod-HardwareOATH.ReadWrite.All when the tenant's Graph offers it.
ASSIGN_PERMISSION=${ASSIGN_PERMISSION:-auto}
# Seconds between polls for the host's key and between Event Grid retries.
WAIT_SECONDS=${WAIT_SECONDS:-10}

while [ $# -gt 0 ]; do
  case $1 in
    -g | --resource-group) RESOURCE_GROUP=$2; shift 2 ;;
    -n | --deployment-name) DEPLOYMENT_NAME=$2; shift 2 ;;
    --zip) ZIP=$2; shift 2 ;;
    --skip-code) SKIP_CODE=1; shift ;;
    --skip-graph) SKIP_GRAPH=1; shift ;;
    --enable-hardware-oath) ENABLE_HARDWARE_OATH=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "post-deploy: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

log() { printf 'post-deploy: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v az >/dev/null 2>&1 || die "the Azure CLI (az) is not installed"
[ -n "$RESOURCE_GROUP" ] || die "no resource group: pass -g RESOURCE_GROUP (or set RESOURCE_GROUP)"

# output NAME: a deployment output of infra/main.bicep, from the environment (azd exports them)
# or from the deployment record.
output() {
  local name=$1 value=${!1:-}
  if [ -z "$value" ]; then
    value=$(az deployment group show -g "$RESOURCE_GROUP" -n "$DEPLOYMENT_NAME" \
      --query "properties.outputs.${name}.value" -o tsv)
  fi
  [ -n "$value" ] || die "deployment $DEPLOYMENT_NAME in $RESOURCE_GROUP has no output $name (was infra/main.bicep deployed with -n $DEPLOYMENT_NAME?)"
  printf '%s' "$value"
}

APP=$(output AZURE_FUNCTION_APP_NAME)
TOPIC=$(output EVENT_GRID_SYSTEM_TOPIC_NAME)
INBOX=$(output INBOX_CONTAINER)
PRINCIPAL_ID=$(output IDENTITY_PRINCIPAL_ID)
log "function app $APP in $RESOURCE_GROUP"

# 1. Code. Flex Consumption takes a zip with host.json at its root and publishes it to the
# deployment container; az authenticates with Entra ID (basic publishing credentials are off).
if [ "$SKIP_CODE" = 1 ]; then
  log "skipping zip deploy (--skip-code)"
else
  [ -f "$ZIP" ] || die "$ZIP not found: run 'make package' first (or pass --zip PATH)"
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

# 2. Event Grid subscription for the blob trigger. The host creates the blobs_extension key when
# it first starts with a blob-triggered function loaded, which can take a minute after a deploy.
blobs_key=""
for _ in $(seq 1 30); do
  blobs_key=$(az functionapp keys list -g "$RESOURCE_GROUP" -n "$APP" \
    --query "systemKeys.blobs_extension" -o tsv 2>/dev/null || true)
  [ -n "$blobs_key" ] && break
  log "waiting for the blobs_extension system key (the host is starting)"
  sleep "$WAIT_SECONDS"
done
[ -n "$blobs_key" ] || die "no blobs_extension system key on $APP after 30 tries: is the code deployed and does ImportSeeds appear in 'az functionapp function list'?"

subscribe() {
  local fn=$1 container=$2
  local sub="${fn,,}-${container}"
  local endpoint="https://${APP}.azurewebsites.net/runtime/webhooks/blobs?functionName=Host.Functions.${fn}&code=${blobs_key}"
  local prefix="/blobServices/default/containers/${container}/"
  local verb=create
  if az eventgrid system-topic event-subscription show -g "$RESOURCE_GROUP" \
    --system-topic-name "$TOPIC" -n "$sub" --output none 2>/dev/null; then
    verb=update
  fi
  log "event subscription $sub ($verb): BlobCreated under $prefix -> $fn"
  # Event Grid validates the webhook when the subscription is written; a host that is still
  # warming up can miss that handshake, so try a few times.
  local try
  for try in 1 2 3 4 5; do
    if az eventgrid system-topic event-subscription "$verb" -g "$RESOURCE_GROUP" \
      --system-topic-name "$TOPIC" -n "$sub" \
      --endpoint-type webhook --endpoint "$endpoint" \
      --included-event-types Microsoft.Storage.BlobCreated \
      --subject-begins-with "$prefix" --output none; then
      return 0
    fi
    log "event subscription $sub: attempt $try failed; retrying"
    sleep "$((WAIT_SECONDS * 2))"
  done
  die "could not $verb event subscription $sub"
}
subscribe ImportSeeds "$INBOX"
unset blobs_key

# 3. Microsoft Graph application permissions for the managed identity. Granting them needs
# Privileged Role Administrator (or Global Administrator) in Entra ID.
GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
GRAPH=https://graph.microsoft.com

graph_role_id() {
  az ad sp show --id "$GRAPH_APP_ID" \
    --query "appRoles[?value=='$1' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv
}

grant_graph_permissions() {
  local graph_sp assign granted permission role_id
  graph_sp=$(az ad sp show --id "$GRAPH_APP_ID" --query id -o tsv)
  assign=$ASSIGN_PERMISSION
  if [ "$assign" = auto ]; then
    assign=UserAuthMethod-HardwareOATH.ReadWrite.All
    if [ -z "$(graph_role_id "$assign")" ]; then
      assign=UserAuthenticationMethod.ReadWrite.All
    fi
  fi
  granted=$(az rest --method get \
    --url "$GRAPH/v1.0/servicePrincipals/$PRINCIPAL_ID/appRoleAssignments" \
    --query "value[?resourceId=='$graph_sp'].appRoleId" -o tsv)
  for permission in Policy.ReadWrite.AuthenticationMethod "$assign" User.Read.All; do
    role_id=$(graph_role_id "$permission")
    [ -n "$role_id" ] || die "Microsoft Graph offers no application permission $permission in this tenant"
    if grep -qx "$role_id" <<<"$granted"; then
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
}

if [ "$SKIP_GRAPH" = 1 ]; then
  log "skipping Graph permissions (--skip-graph). A Privileged Role Administrator must grant the"
  log "identity $PRINCIPAL_ID: Policy.ReadWrite.AuthenticationMethod, User.Read.All and"
  log "UserAuthMethod-HardwareOATH.ReadWrite.All (or UserAuthenticationMethod.ReadWrite.All);"
  log "running this script with their account and without --skip-graph does exactly that."
else
  grant_graph_permissions
fi

# 4. The tenant's authentication methods policy must allow hardware OATH tokens.
OATH_POLICY="$GRAPH/beta/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/hardwareOath"
if [ "$ENABLE_HARDWARE_OATH" = 1 ]; then
  log "enabling the hardwareOath authentication method (needs Authentication Policy Administrator)"
  az rest --method patch --url "$OATH_POLICY" --headers Content-Type=application/json \
    --body '{"@odata.type":"#microsoft.graph.hardwareOathAuthenticationMethodConfiguration","state":"enabled"}' \
    --output none
fi
state=$(az rest --method get --url "$OATH_POLICY" --query state -o tsv 2>/dev/null || echo unknown)
if [ "$state" = enabled ]; then
  log "hardwareOath authentication method: enabled"
else
  log "hardwareOath authentication method: $state. Enable it (Authentication Policy Administrator):"
  log "  Entra admin center > Protection > Authentication methods > Policies > Hardware OATH tokens > Enable,"
  log "  or rerun with --enable-hardware-oath. Changes can take up to an hour to apply."
fi

log "done. Functions: az functionapp function list -g $RESOURCE_GROUP -n $APP --query '[].name' -o tsv"
log "HTTP API: $(output AZURE_FUNCTION_APP_URL)/api/tokens/{serial}/assignment (function key:"
log "  az functionapp function keys list -g $RESOURCE_GROUP -n $APP --function-name TokenAssignment)"
