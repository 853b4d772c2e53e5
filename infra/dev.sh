#!/usr/bin/env bash
# The whole Airlock system without Docker: builds the binaries and runs them against a local
# PostgreSQL and Redis, with the same demo configuration as infra/compose.yaml.
#
#   infra/dev.sh            # build, migrate, run everything in the foreground (Ctrl-C stops all)
#   infra/dev.sh --no-build # reuse the binaries already built
#
# Environment (defaults in brackets): DATABASE_URL [postgres://postgres@127.0.0.1:5432/airlock_dev],
# REDIS_URL [redis://127.0.0.1:6379], CARGO_TARGET_DIR [target], and the Slack settings from
# infra/demo/.env.example. Logs go to $AIRLOCK_DEV_LOGS [target/airlock-dev-logs]/<service>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=1
for arg in "$@"; do
  case "$arg" in
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/airlock_dev}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export REDIS_KEY_PREFIX="${REDIS_KEY_PREFIX:-airlock}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"
SLACK_BOT_TOKEN="${SLACK_BOT_TOKEN:-xoxb-emulator-token-not-a-secret}"
SLACK_SIGNING_SECRET="${SLACK_SIGNING_SECRET:-emulator-signing-secret-not-a-secret}"
SLACK_CHANNEL="${SLACK_CHANNEL:-C0APPROVALS}"
SLACK_API_BASE_URL="${SLACK_API_BASE_URL:-http://127.0.0.1:8090/api}"
APPROVAL_TIMEOUT="${APPROVAL_TIMEOUT:-5m}"
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/debug"
LOGS="${AIRLOCK_DEV_LOGS:-$TARGET/airlock-dev-logs}"
mkdir -p "$LOGS"

need() { command -v "$1" >/dev/null 2>&1 || { echo "dev.sh: $1 is required ($2)" >&2; exit 1; }; }
need curl "health checks"

# PostgreSQL and Redis must be up; create the dev database if it is missing.
if command -v pg_isready >/dev/null && ! pg_isready -d "$DATABASE_URL" -q; then
  echo "dev.sh: PostgreSQL at $DATABASE_URL is not accepting connections" >&2; exit 1
fi
if command -v psql >/dev/null; then
  admin_url="${DATABASE_URL%/*}/postgres"
  db="${DATABASE_URL##*/}"; db="${db%%\?*}"
  if ! psql "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    echo "creating database $db"
    psql "$admin_url" -qc "CREATE DATABASE \"$db\""
  fi
fi
if command -v redis-cli >/dev/null && ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  echo "dev.sh: Redis at $REDIS_URL does not answer PING" >&2; exit 1
fi

if [ "$BUILD" = 1 ]; then
  cargo build --bins -p airlock-gateway -p webhook-fn -p notifier-worker -p airlock-slack-fake -p airlock-e2e
fi
for b in airlock-gateway airlock-webhook airlock-notifier airlock-demo-upstream airlock-slack-emulator; do
  [ -x "$BIN/$b" ] || { echo "dev.sh: $BIN/$b is missing; run without --no-build" >&2; exit 1; }
done

"$BIN/airlock-gateway" migrate

PIDS=()
STOPPING=0
cleanup() {
  trap - INT TERM EXIT
  STOPPING=1
  echo; echo "stopping..."
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

start() { # name health-url command...
  local name="$1" health="$2"; shift 2
  "$@" >>"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
  local pid=$!
  for _ in $(seq 1 150); do
    if curl -fsS "$health" >/dev/null 2>&1; then printf '  %-15s up   %s\n' "$name" "$health"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "dev.sh: $name exited; last lines of $LOGS/$name.log:" >&2; tail -n 30 "$LOGS/$name.log" >&2; exit 1
    fi
    sleep 0.2
  done
  echo "dev.sh: $name not healthy after 30s (see $LOGS/$name.log)" >&2; exit 1
}

echo "starting (logs in $LOGS)"
start demo-upstream http://127.0.0.1:9000/healthz \
  env LISTEN_ADDR=127.0.0.1:9000 ALLOWED_HOSTS=127.0.0.1,localhost "$BIN/airlock-demo-upstream"
start slack-emulator http://127.0.0.1:8090/healthz \
  env LISTEN_ADDR=127.0.0.1:8090 SLACK_BOT_TOKEN="$SLACK_BOT_TOKEN" SLACK_SIGNING_SECRET="$SLACK_SIGNING_SECRET" \
      WEBHOOK_URL=http://127.0.0.1:8081/slack/actions PUBLIC_URL=http://127.0.0.1:8090 "$BIN/airlock-slack-emulator"
start webhook http://127.0.0.1:8081/healthz \
  env LISTEN_ADDR=127.0.0.1:8081 SLACK_SIGNING_SECRET="$SLACK_SIGNING_SECRET" \
      ${APPROVER_USER_IDS:+APPROVER_USER_IDS="$APPROVER_USER_IDS"} "$BIN/airlock-webhook"
start notifier http://127.0.0.1:8082/healthz \
  env LISTEN_ADDR=127.0.0.1:8082 SLACK_BOT_TOKEN="$SLACK_BOT_TOKEN" SLACK_CHANNEL="$SLACK_CHANNEL" \
      SLACK_API_BASE_URL="$SLACK_API_BASE_URL" "$BIN/airlock-notifier"
start gateway http://127.0.0.1:8080/readyz \
  env LISTEN_ADDR=127.0.0.1:8080 UPSTREAM_MCP_URL=http://127.0.0.1:9000/mcp \
      POLICY_FILE="${POLICY_FILE:-infra/demo/policy.yaml}" AGENT_KEYS_FILE="${AGENT_KEYS_FILE:-infra/demo/agent-keys.yaml}" \
      APPROVAL_TIMEOUT="$APPROVAL_TIMEOUT" MIGRATE_ON_START=false "$BIN/airlock-gateway"

cat <<MSG

Airlock is running.
  Slack channel (click here):  http://127.0.0.1:8090
  MCP endpoint for agents:     http://127.0.0.1:8080/mcp   (Authorization: Bearer demo-agent-token-not-a-secret)
Ctrl-C stops everything.
MSG
wait -n "${PIDS[@]}" || true
if [ "$STOPPING" = 0 ]; then
  echo "dev.sh: a service exited; see $LOGS" >&2
  exit 1
fi
