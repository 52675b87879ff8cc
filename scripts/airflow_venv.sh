#!/usr/bin/env bash
# Builds .venv-airflow: a throwaway Airflow (pinned in deploy/airflow/constraints.txt) that only
# loads deploy/airflow/*.py in tests/test_airflow_dag.py. Kept apart from .venv: Airflow's
# dependency set conflicts with the pipeline's pins. Idempotent: a stamp keyed on the pins skips
# the install on a second run. About 1-2 minutes the first time (mostly downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pinned_venv.sh
VENV=${AIRFLOW_VENV:-$PWD/.venv-airflow}
pinned_venv airflow-venv "$VENV" deploy/airflow/constraints.txt apache-airflow apache-airflow-providers-apache-spark
echo "[airflow-venv] $("$VENV/bin/python" -c 'import airflow; print("apache-airflow", airflow.__version__)')"
