#!/usr/bin/env bash
# Deploys an overlay: config and secrets, then the migrations Job (awaited), then the rollout.
# Usage: infra/k8s/deploy.sh <overlay: staging|production> [--dry-run]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
overlay="${1:?usage: deploy.sh <overlay> [--dry-run]}"
dry=()
[[ "${2:-}" == "--dry-run" ]] && dry=(--dry-run=server)
rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT

kubectl kustomize "$here/overlays/$overlay" > "$rendered"
ns="$(python3 -c 'import sys,yaml; print(next(d["metadata"]["name"] for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"]=="Namespace"))' "$rendered")"

# 1. Namespace, ServiceAccount, ConfigMaps, ExternalSecret (labelled airlock.dev/phase=pre-rollout).
kubectl apply "${dry[@]}" -f - <<<"$(python3 -c 'import sys,yaml; print(yaml.safe_dump_all([d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"]=="Namespace"]))' "$rendered")"
kubectl apply "${dry[@]}" -f "$rendered" -l 'airlock.dev/phase=pre-rollout,app.kubernetes.io/component!=migrate'
if [[ ${#dry[@]} -eq 0 ]]; then
  if kubectl -n "$ns" get externalsecret airlock-secrets >/dev/null 2>&1; then
    kubectl -n "$ns" wait --for=condition=Ready externalsecret/airlock-secrets --timeout=120s
  fi
  kubectl -n "$ns" get secret airlock-secrets >/dev/null   # staging: create it by hand first
fi

# 2. Migrations before any new gateway starts. A Job's template is immutable: replace the old run.
kubectl -n "$ns" delete job airlock-migrate --ignore-not-found "${dry[@]}"
kubectl apply "${dry[@]}" -f "$rendered" -l 'app.kubernetes.io/component=migrate'
if [[ ${#dry[@]} -eq 0 ]]; then
  if ! kubectl -n "$ns" wait --for=condition=complete job/airlock-migrate --timeout=600s; then
    kubectl -n "$ns" logs job/airlock-migrate --tail=100 || true
    echo "migrations failed; nothing rolled out" >&2
    exit 1
  fi
fi

# 3. Everything else, then wait for the rollouts (old gateway pods drain their holds first).
kubectl apply "${dry[@]}" -f "$rendered"
if [[ ${#dry[@]} -eq 0 ]]; then
  kubectl -n "$ns" rollout status deployment/airlock-gateway --timeout=30m
  kubectl -n "$ns" rollout status deployment/airlock-notifier --timeout=10m
fi
