#!/usr/bin/env bash
# The local stack for real, with a Docker engine: build and start infra/compose.yaml, wait for
# every service's health check, run one approval through the Slack emulator's JSON API (the
# agent's held refund, Alice clicks Approve, the call completes), then tear everything down.
# Compose v2 (`docker compose`) when present, else v1 (`docker-compose`) with BuildKit on.
#
#   infra/check-stack.sh          # exits 1 when there is no Docker engine
#   infra/check-stack.sh --quiet  # less build output
# Env: STACK_TIMEOUT [600] seconds for build + health, KEEP_STACK=1 to leave it running.
set -euo pipefail
cd "$(dirname "$0")/.."

QUIET=()
for arg in "$@"; do
  case "$arg" in
    --quiet) QUIET=(--quiet) ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "check-stack: no Docker engine reachable (docker info failed); nothing started" >&2
  exit 1
fi
if docker compose version >/dev/null 2>&1; then
  compose() { docker compose -f infra/compose.yaml -p airlock-check "$@"; }
elif command -v docker-compose >/dev/null 2>&1; then
  # Compose v1 builds with the classic builder unless told otherwise; the Dockerfile's cache
  # mounts need BuildKit.
  export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
  compose() { docker-compose -f infra/compose.yaml -p airlock-check "$@"; }
else
  echo "check-stack: neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed" >&2
  exit 1
fi

started=$(date +%s)
deadline=$((started + ${STACK_TIMEOUT:-600}))
teardown() { [ "${KEEP_STACK:-0}" = 1 ] || compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap teardown EXIT
fail() { echo "check-stack: $*" >&2; compose ps >&2 || true; compose logs --tail 40 >&2 || true; exit 1; }

echo "== build"
compose build "${QUIET[@]}" || fail "build failed"
built=$(date +%s)
echo "== up"
compose up -d || fail "up failed"

echo "== health"
services=(postgres redis demo-upstream gateway webhook notifier slack-emulator)
for svc in "${services[@]}"; do
  while :; do
    id=$(compose ps -q "$svc")
    state=$([ -n "$id" ] && docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" || echo missing)
    [ "$state" = healthy ] && break
    [ "$(date +%s)" -lt "$deadline" ] || fail "$svc is $state after ${STACK_TIMEOUT:-600}s"
    sleep 2
  done
  echo "$svc: healthy"
done
healthy=$(date +%s)

echo "== one approval through the emulator"
GW=http://127.0.0.1:8080/mcp
EMU=http://127.0.0.1:8090
H=(-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream'
   -H 'Authorization: Bearer demo-agent-token-not-a-secret')
SID=$(curl -sS -D - -o /dev/null "$GW" "${H[@]}" \
  -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"check-stack","version":"0"}}}' \
  | tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}')
[ -n "$SID" ] || fail "no session from the gateway"
H+=(-H "Mcp-Session-Id: $SID" -H 'MCP-Protocol-Version: 2025-06-18')
curl -sS -o /dev/null "$GW" "${H[@]}" -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
OUT=$(mktemp)
curl -sSN --max-time 120 "$GW" "${H[@]}" \
  -d '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_refund","arguments":{"charge_id":"ch_1001","amount":250,"currency":"usd","reason":"check-stack"}}}' \
  >"$OUT" &
CALL=$!
TS=""
for _ in $(seq 1 60); do
  TS=$(curl -sS "$EMU/_emulator/messages?channel=C0APPROVALS" 2>/dev/null | python3 -c '
import json, sys
msgs = json.load(sys.stdin).get("messages", [])
held = [m for m in msgs if "create_refund" in json.dumps(m) and any(b.get("type") == "actions" for b in m.get("blocks") or [])]
print(held[-1]["ts"] if held else "")' 2>/dev/null || true)
  [ -n "$TS" ] && break
  sleep 1
done
[ -n "$TS" ] || fail "no approval request reached the emulator"
curl -sS -o /dev/null -w '%{http_code}\n' -X POST "$EMU/_emulator/click" -H 'Content-Type: application/json' \
  -d "{\"user_id\":\"U0ALICE\",\"channel\":\"C0APPROVALS\",\"ts\":\"$TS\",\"action_id\":\"airlock_approve\"}" | grep -q '^2' || fail "click failed"
wait "$CALL" || fail "the held call did not complete"
grep -q '"refund"' "$OUT" || fail "the held call did not return a refund: $(cat "$OUT")"
curl -sS http://127.0.0.1:9000/calls | grep -q '"create_refund"' || fail "the upstream did not run the refund"
echo "approved refund ran: $(grep -o '"re_[0-9]*' "$OUT" | head -n1 | tr -d '"')"
done_at=$(date +%s)
echo "== ok: build $((built - started))s, healthy $((healthy - built))s, approval $((done_at - healthy))s"
