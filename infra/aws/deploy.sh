#!/usr/bin/env bash
# One-command deploy of airlock-webhook to AWS Lambda: build with cargo-lambda, then `sam deploy`.
#
# Usage: infra/aws/deploy.sh [--no-build] [--dry-run]
# Settings come from the environment (see /work/notes/deploying.md, "Webhook on AWS Lambda"):
#   required: AWS_REGION SLACK_SIGNING_SECRET_ARN DATABASE_URL_SECRET_ARN REDIS_URL_SECRET_ARN
#             VPC_ID SUBNET_IDS (comma-separated) DB_SECURITY_GROUP_ID REDIS_SECURITY_GROUP_ID
#   optional: STACK_NAME (airlock-webhook) ARCH (arm64|x86_64; default: arm64 when the rustup
#             target installs, else x86_64) APPROVER_USER_IDS REDIS_KEY_PREFIX (airlock)
#             RESERVED_CONCURRENCY (20) LOG_RETENTION_DAYS (30) SECRETS_KMS_KEY_ARN
#             CREATE_SECRETS_MANAGER_ENDPOINT (true) ALARM_TOPIC_ARN DATABASE_PORT REDIS_PORT
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
lambda_dir="$root/target/lambda"
build=1
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

run() {
  echo "+ $*" >&2
  if [[ $dry_run -eq 0 ]]; then "$@"; fi
}

missing=()
for v in AWS_REGION SLACK_SIGNING_SECRET_ARN DATABASE_URL_SECRET_ARN REDIS_URL_SECRET_ARN \
         VPC_ID SUBNET_IDS DB_SECURITY_GROUP_ID REDIS_SECURITY_GROUP_ID; do
  [[ -n "${!v:-}" ]] || missing+=("$v")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "deploy.sh: set ${missing[*]} (see /work/notes/deploying.md)" >&2
  exit 2
fi

if [[ -z "${ARCH:-}" ]]; then
  if rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; then ARCH=arm64; else ARCH=x86_64; fi
fi
case "$ARCH" in
  arm64) arch_flag=--arm64 ;;
  x86_64) arch_flag=--x86-64; rustup target add x86_64-unknown-linux-gnu >/dev/null 2>&1 || true ;;
  *) echo "ARCH must be arm64 or x86_64, not $ARCH" >&2; exit 2 ;;
esac

if [[ $build -eq 1 ]]; then
  if ! cargo lambda --version >/dev/null 2>&1; then
    # The PyPI wheel ships cargo-lambda and zig prebuilt; it installs in seconds.
    run python3 -m pip install --quiet cargo-lambda
  fi
  run cargo lambda build --release "$arch_flag" -p webhook-fn --lambda-dir "$lambda_dir"
fi
if [[ $dry_run -eq 0 && ! -x "$lambda_dir/airlock-webhook/bootstrap" ]]; then
  echo "deploy.sh: $lambda_dir/airlock-webhook/bootstrap is missing; run without --no-build" >&2
  exit 1
fi

if ! command -v sam >/dev/null 2>&1; then
  run python3 -m pip install --quiet aws-sam-cli
fi

# Values are quoted for SAM CLI: subnet and user-id lists contain commas, some may be empty.
params=(
  "Architecture=\"$ARCH\""
  "SlackSigningSecretArn=\"$SLACK_SIGNING_SECRET_ARN\""
  "DatabaseUrlSecretArn=\"$DATABASE_URL_SECRET_ARN\""
  "RedisUrlSecretArn=\"$REDIS_URL_SECRET_ARN\""
  "VpcId=\"$VPC_ID\""
  "SubnetIds=\"$SUBNET_IDS\""
  "DatabaseSecurityGroupId=\"$DB_SECURITY_GROUP_ID\""
  "RedisSecurityGroupId=\"$REDIS_SECURITY_GROUP_ID\""
  "ApproverUserIds=\"${APPROVER_USER_IDS:-}\""
  "RedisKeyPrefix=\"${REDIS_KEY_PREFIX:-airlock}\""
  "ReservedConcurrency=\"${RESERVED_CONCURRENCY:-20}\""
  "LogRetentionDays=\"${LOG_RETENTION_DAYS:-30}\""
  "SecretsKmsKeyArn=\"${SECRETS_KMS_KEY_ARN:-}\""
  "CreateSecretsManagerEndpoint=\"${CREATE_SECRETS_MANAGER_ENDPOINT:-true}\""
  "AlarmTopicArn=\"${ALARM_TOPIC_ARN:-}\""
  "DatabasePort=\"${DATABASE_PORT:-5432}\""
  "RedisPort=\"${REDIS_PORT:-6379}\""
)

# sam deploy packages CodeUri (the cargo-lambda output) into a managed S3 bucket.
run sam deploy \
  --template-file "$here/template.yaml" \
  --stack-name "${STACK_NAME:-airlock-webhook}" \
  --region "$AWS_REGION" \
  --resolve-s3 \
  --capabilities CAPABILITY_IAM \
  --no-confirm-changeset \
  --no-fail-on-empty-changeset \
  --parameter-overrides "${params[@]}"

if [[ $dry_run -eq 0 ]]; then
  aws cloudformation describe-stacks --region "$AWS_REGION" --stack-name "${STACK_NAME:-airlock-webhook}" \
    --query "Stacks[0].Outputs[?OutputKey=='SlackInteractivityRequestUrl'].OutputValue" --output text
fi
