#!/bin/sh
# MWAA startup script (uploaded to s3://<lake bucket>/airflow/startup.sh; infra/airflow.yaml points
# at it). MWAA runs it before every Airflow component starts; what it exports is the components'
# and tasks' environment. It turns the environment's `lambdalake.*` Airflow options
# (AIRFLOW__LAMBDALAKE__X) into the LAMBDALAKE_X settings lambdalake reads, and fetches the
# warehouse login from Secrets Manager (the secret named by lambdalake_deploy.warehouse_secret_arn).
set -eu

for name in $(env | sed -n 's/^AIRFLOW__LAMBDALAKE__\([A-Z0-9_]*\)=.*/\1/p'); do
  export "LAMBDALAKE_${name}=$(printenv "AIRFLOW__LAMBDALAKE__${name}")"
done

if [ -n "${AIRFLOW__LAMBDALAKE_DEPLOY__WAREHOUSE_SECRET_ARN:-}" ]; then
  login=$(aws secretsmanager get-secret-value \
    --secret-id "$AIRFLOW__LAMBDALAKE_DEPLOY__WAREHOUSE_SECRET_ARN" --query SecretString --output text)
  LAMBDALAKE_WAREHOUSE_USER=$(printf '%s' "$login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["username"])')
  LAMBDALAKE_WAREHOUSE_PASSWORD=$(printf '%s' "$login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["password"])')
  export LAMBDALAKE_WAREHOUSE_USER LAMBDALAKE_WAREHOUSE_PASSWORD
fi
