#!/usr/bin/env bash
# Validates Airlock's deployment files without a cloud or a cluster (CI runs this):
#   1. cfn-lint on the SAM template (infra/aws/template.yaml), SAM transform included;
#   2. every kustomize overlay in infra/k8s/overlays rendered (kubectl kustomize, else the python
#      renderer in infra/k8s/validate.py) and each object validated: built-in kinds against the
#      Kubernetes OpenAPI schemas bundled in kubernetes-validate (offline, strict), KEDA and
#      Prometheus Operator kinds against models generated from their CRDs, ExternalSecret against
#      infra/k8s/schemas/; then cross-object checks and PromQL parsing of the alert rules;
#   3. shell syntax of the deploy scripts.
# It builds nothing. Installs into a venv it reuses (idempotent); exits non-zero on any problem.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${AIRLOCK_DEPLOY_CHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock/deploy-check-venv}"
requirements=(
  "cfn-lint==1.51.0"
  "kubernetes-validate==1.37.0"
  "cloudcoil-models-keda==2.16.1.0"
  "cloudcoil-models-prometheus-operator==0.80.1.0"
  "promql-parser==0.11.0"
  "jsonschema==4.26.0"
  "PyYAML==6.0.3"
)
stamp="$venv/.requirements"
start=$SECONDS

if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]]; then
  echo "== installing validators into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" > "$stamp"
fi
py="$venv/bin/python"

echo "== cfn-lint infra/aws/template.yaml"
"$venv/bin/cfn-lint" --format parseable -- "$here/aws/template.yaml"

echo "== kubernetes manifests"
validate_args=()
if command -v kubectl >/dev/null 2>&1; then
  # Also prove the fallback renderer matches kustomize, so machines without kubectl check the same objects.
  validate_args+=(--cross-check)
else
  echo "kubectl not found: rendering with the python renderer"
fi
"$py" "$here/k8s/validate.py" "${validate_args[@]}"

echo "== deploy scripts"
for s in "$here/aws/deploy.sh" "$here/k8s/deploy.sh"; do
  bash -n "$s"
done

echo "check-deploy: all deployment files valid ($((SECONDS - start))s)"
