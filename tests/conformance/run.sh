#!/usr/bin/env bash
# Runs the official MCP SDK clients (TypeScript and Python) against the reference server
# @modelcontextprotocol/server-everything, directly and through the gateway, plus held calls
# with the TypeScript client, and the Python client against the demo upstream (directly and
# through a gateway with the demo policy), and the Python Client in each era against an MCPServer
# upstream (modern.py; its held calls are approved by signed clicks on the real webhook), also
# across each bridge (gateways with UPSTREAM_ERA=modern and =legacy in front of it), and
# held calls served as MCP tasks with the TypeScript client's experimental tasks API (tasks.mjs),
# and OAuth for agents: the Python SDK's ClientCredentialsOAuthProvider against a gateway that
# trusts a real authorization server (oauth_provider.mjs: npm oidc-provider) (oauth.py).
# Installs what is missing. Prints "N passed, M failed" last and
# exits non-zero on any failure.
# Env: DATABASE_URL (a database to create a fresh one from), REDIS_URL, CARGO_TARGET_DIR,
#      CONFORMANCE_SKIP_LITERAL=1 to skip the literal 90 s hold.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE_DB=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379}
LOGS=$(mktemp -d /tmp/airlock-conformance.XXXXXX)
PIDS=()
DB=""
started=$(date +%s)

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  # Gateways start inside $(...), whose PIDS+= never reaches this shell: they note their pid here.
  [ -f "$LOGS/gateway.pids" ] && while read -r p; do kill "$p" 2>/dev/null; done <"$LOGS/gateway.pids"
  wait 2>/dev/null
  if [ -n "$DB" ]; then psql "$BASE_DB" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1; fi
}
trap cleanup EXIT

fail_setup() {
  echo "setup failed: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

cd "$HERE"
if [ ! -d node_modules/@modelcontextprotocol/sdk ] || [ ! -d node_modules/@modelcontextprotocol/server-everything ] \
  || [ ! -d node_modules/oidc-provider ]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund >"$LOGS/npm.log" 2>&1 || { cat "$LOGS/npm.log"; fail_setup "npm ci"; }
fi
# 2.3 or newer: its Client speaks 2026-07-28 and its MCPServer both eras (modern.py).
if ! python3 -c "import mcp.client.streamable_http; from mcp.client import Client; import mcp.server.mcpserver" 2>/dev/null; then
  echo "== pip install mcp"
  python3 -m pip install --quiet "mcp>=2.3,<3" >"$LOGS/pip.log" 2>&1 || { cat "$LOGS/pip.log"; fail_setup "pip install mcp"; }
fi

echo "== cargo build -p airlock-gateway -p webhook-fn --bin airlock-demo-upstream"
(cd "$ROOT" && cargo build -q -p airlock-gateway && cargo build -q -p webhook-fn --bin airlock-webhook \
  && cargo build -q -p airlock-e2e --bin airlock-demo-upstream) \
  || fail_setup "cargo build"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/airlock-gateway
WEBHOOK_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/airlock-webhook
DEMO_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/airlock-demo-upstream
[ -x "$BIN" ] || fail_setup "no binary at $BIN"
[ -x "$WEBHOOK_BIN" ] || fail_setup "no binary at $WEBHOOK_BIN"
[ -x "$DEMO_BIN" ] || fail_setup "no binary at $DEMO_BIN"

DB="airlock_conf_$$_$RANDOM"
psql "$BASE_DB" -qc "CREATE DATABASE $DB" || fail_setup "create database"
DB_URL="${BASE_DB%/*}/$DB"
PREFIX="conf$$x$RANDOM"
TOKEN="conformance-$RANDOM$RANDOM"
SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
cat >"$LOGS/agents.yaml" <<YAML
agents:
  - name: conformance-bot
    token_sha256: $SHA
YAML
cat >"$LOGS/policy.yaml" <<'YAML'
version: 1
default: allow
rules:
  - name: expiring held echoes
    tools: ["echo"]
    when: [{ arg: /message, matches: "^hold-expire-" }]
    action: approve
    approvers: [U1]
    timeout: 3s
  - name: held echoes
    tools: ["echo"]
    when: [{ arg: /message, matches: "^hold-" }]
    action: approve
    approvers: [U1]
YAML

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 150); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.2
  done
  return 1
}

UP_PORT=$(free_port)
PORT=$UP_PORT node node_modules/@modelcontextprotocol/server-everything/dist/index.js streamableHttp >"$LOGS/everything.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/mcp" || fail_setup "server-everything did not start ($LOGS/everything.log)"

start_gateway() { # name keepalive [upstream policy upstream-era]
  local port
  port=$(free_port)
  LISTEN_ADDR=127.0.0.1:$port DATABASE_URL=$DB_URL REDIS_URL=$REDIS REDIS_KEY_PREFIX=$PREFIX \
    UPSTREAM_MCP_URL=${3:-http://127.0.0.1:$UP_PORT/mcp} POLICY_FILE=${4:-$LOGS/policy.yaml} \
    AGENT_KEYS_FILE=$LOGS/agents.yaml KEEPALIVE_INTERVAL=$2 APPROVAL_TIMEOUT=5m LOG_FORMAT=json \
    UPSTREAM_ERA=${5:-auto} "$BIN" >"$LOGS/gateway-$1.log" 2>&1 &
  echo $! >>"$LOGS/gateway.pids"
  wait_http "http://127.0.0.1:$port/healthz" || fail_setup "gateway $1 did not start ($LOGS/gateway-$1.log)"
  echo "http://127.0.0.1:$port/mcp"
}
# One at a time: the first applies the migrations.
GW_FAST=$(start_gateway fast 2s) || exit 1
GW_DEFAULT=$(start_gateway default 15s) || exit 1
DIRECT="http://127.0.0.1:$UP_PORT/mcp"
DEMO_PORT=$(free_port)
LISTEN_ADDR=127.0.0.1:$DEMO_PORT ALLOWED_HOSTS=127.0.0.1,localhost LOG_FORMAT=json \
  "$DEMO_BIN" >"$LOGS/demo-upstream.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$DEMO_PORT/healthz" || fail_setup "demo upstream did not start ($LOGS/demo-upstream.log)"
DEMO="http://127.0.0.1:$DEMO_PORT/mcp"
GW_DEMO=$(start_gateway demo 15s "$DEMO" "$ROOT/infra/demo/policy.yaml") || exit 1
MODERN_PORT=$(free_port)
python3 "$HERE/modern_server.py" "$MODERN_PORT" >"$LOGS/modern-upstream.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MODERN_PORT/mcp" || fail_setup "MCPServer upstream did not start ($LOGS/modern-upstream.log)"
cat >"$LOGS/modern-policy.yaml" <<'YAML'
version: 1
default: allow
rules:
  - { name: never delete, tools: ["delete_*"], action: deny }
  - name: held echoes
    tools: ["echo"]
    when: [{ arg: /message, matches: "^hold-" }]
    action: approve
YAML
MODERN="http://127.0.0.1:$MODERN_PORT/mcp"
GW_MODERN=$(start_gateway modern 2s "$MODERN" "$LOGS/modern-policy.yaml") || exit 1
# MCPServer speaks both eras, so each bridge can be forced in front of it.
GW_TO_MODERN=$(start_gateway to-modern 2s "$MODERN" "$LOGS/modern-policy.yaml" modern) || exit 1
GW_TO_LEGACY=$(start_gateway to-legacy 2s "$MODERN" "$LOGS/modern-policy.yaml" legacy) || exit 1
# The real webhook: modern.py approves its held calls with signed Slack clicks.
SIGNING_SECRET="conformance-signing-$RANDOM$RANDOM"
WEBHOOK_PORT=$(free_port)
LISTEN_ADDR=127.0.0.1:$WEBHOOK_PORT DATABASE_URL=$DB_URL REDIS_URL=$REDIS REDIS_KEY_PREFIX=$PREFIX \
  SLACK_SIGNING_SECRET=$SIGNING_SECRET APPROVER_USER_IDS=U1 LOG_FORMAT=json \
  "$WEBHOOK_BIN" >"$LOGS/webhook.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$WEBHOOK_PORT/healthz" || fail_setup "webhook did not start ($LOGS/webhook.log)"
WEBHOOK="http://127.0.0.1:$WEBHOOK_PORT/slack/actions"
# OAuth for agents: a real authorization server (npm oidc-provider, client credentials, JWT
# access tokens for one resource) and a gateway that trusts it, in front of the MCPServer.
AS_PORT=$(free_port)
GW_OAUTH_PORT=$(free_port)
GW_OAUTH="http://127.0.0.1:$GW_OAUTH_PORT/mcp"
AS_ISSUER="http://127.0.0.1:$AS_PORT"
OAUTH_CLIENT=conformance-agent
OAUTH_SECRET="conformance-client-$RANDOM$RANDOM"
node oauth_provider.mjs "$AS_PORT" "$GW_OAUTH" "$OAUTH_CLIENT" "$OAUTH_SECRET" >"$LOGS/oauth-provider.log" 2>&1 &
PIDS+=($!)
wait_http "$AS_ISSUER/.well-known/openid-configuration" || fail_setup "oidc-provider did not start ($LOGS/oauth-provider.log)"
cat >"$LOGS/oauth-policy.yaml" <<'YAML'
version: 1
default: allow
rules:
  - { name: never delete, tools: ["delete_*"], action: deny }
  - name: payments holds
    tools: ["echo"]
    when:
      - { arg: /message, matches: "^hold-" }
      - { claim: team, equals: payments }
    action: approve
YAML
LISTEN_ADDR=127.0.0.1:$GW_OAUTH_PORT DATABASE_URL=$DB_URL REDIS_URL=$REDIS REDIS_KEY_PREFIX=$PREFIX \
  UPSTREAM_MCP_URL=$MODERN POLICY_FILE=$LOGS/oauth-policy.yaml AGENT_KEYS_FILE=$LOGS/agents.yaml \
  KEEPALIVE_INTERVAL=2s LOG_FORMAT=json OAUTH_ISSUERS=$AS_ISSUER OAUTH_AUDIENCE=$GW_OAUTH \
  OAUTH_SCOPES_SUPPORTED="mcp refunds:write" OAUTH_REQUIRED_SCOPES=mcp "$BIN" >"$LOGS/gateway-oauth.log" 2>&1 &
echo $! >>"$LOGS/gateway.pids"
wait_http "http://127.0.0.1:$GW_OAUTH_PORT/healthz" || fail_setup "gateway oauth did not start ($LOGS/gateway-oauth.log)"
echo "== server-everything at $DIRECT; gateways at $GW_FAST (keepalive 2s) and $GW_DEFAULT (15s); logs in $LOGS"

if [ "${CONFORMANCE_SKIP_LITERAL:-0}" != 1 ]; then
  node hold.mjs literal "$GW_DEFAULT" "$TOKEN" "$DB_URL" "$REDIS" "$PREFIX" >"$LOGS/hold-literal.out" 2>&1 &
  LITERAL=$!
fi
echo "== TypeScript SDK client"
node client.mjs "$DIRECT" "$GW_FAST" "$TOKEN" 2>&1 | tee "$LOGS/ts.out"
echo "== Python SDK client"
python3 client.py "$DIRECT" "$GW_FAST" "$TOKEN" 2>&1 | tee "$LOGS/py.out"
echo "== Python SDK client against the demo upstream (session end, refund limit)"
python3 demo_session.py "$DEMO" "$GW_DEMO" "$TOKEN" 2>&1 | tee "$LOGS/py-demo.out"
echo "== Python SDK Client in 2026-07-28, auto and legacy mode against MCPServer (direct, through the gateway, and across each bridge)"
python3 modern.py "$MODERN" "$GW_MODERN" "$TOKEN" "$DB_URL" "$WEBHOOK" "$SIGNING_SECRET" \
  "$GW_TO_MODERN" "$GW_TO_LEGACY" 2>&1 | tee "$LOGS/py-modern.out"
echo "== OAuth: Python SDK ClientCredentialsOAuthProvider, oidc-provider, held call approved by a signed click"
python3 oauth.py "$GW_OAUTH" "$AS_ISSUER" "$OAUTH_CLIENT" "$OAUTH_SECRET" "$TOKEN" "$DB_URL" "$WEBHOOK" \
  "$SIGNING_SECRET" 2>&1 | tee "$LOGS/py-oauth.out"
echo "== held calls, short timeouts (client 6 s, hold 9 s, keepalive 2 s)"
node hold.mjs short "$GW_FAST" "$TOKEN" "$DB_URL" "$REDIS" "$PREFIX" 2>&1 | tee "$LOGS/hold-short.out"
echo "== held calls as MCP tasks: TypeScript SDK experimental tasks API (2025-11-25), signed clicks"
node tasks.mjs "$GW_FAST" "$TOKEN" "$DB_URL" "$WEBHOOK" "$SIGNING_SECRET" 2>&1 | tee "$LOGS/tasks.out"
if [ -n "${LITERAL:-}" ]; then
  echo "== held call, literal (SDK default 60 s timeout, hold 90 s, keepalive 15 s)"
  wait "$LITERAL"
  cat "$LOGS/hold-literal.out"
fi

outs=("$LOGS"/*.out)
passed=$(cat "${outs[@]}" | grep -c '^PASS ')
failed=$(cat "${outs[@]}" | grep -c '^FAIL ')
# A script that died before reporting anything is a failure too.
for o in "${outs[@]}"; do
  grep -q '^\(PASS\|FAIL\) ' "$o" || { echo "no results from $o"; failed=$((failed + 1)); }
done
echo "== done in $(( $(date +%s) - started ))s; logs in $LOGS"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
