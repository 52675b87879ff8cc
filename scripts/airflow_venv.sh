#!/usr/bin/env bash
# Builds .venv-airflow: a throwaway Airflow (pinned in deploy/airflow/constraints.txt) that only
# loads deploy/airflow/*.py in tests/test_airflow_dag.py. Kept apart from .venv: Airflow's
# dependency set conflicts with the pipeline's pins. Idempotent: a stamp keyed on the pins skips
# the install on a second run. About 1-2 minutes the first time (mostly downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${AIRFLOW_VENV:-$PWD/.venv-airflow}
PINS=deploy/airflow/constraints.txt
STAMP=$VENV/.installed-$(cat "$PINS" "$0" | sha256sum | cut -c1-16)

if [ -f "$STAMP" ]; then
  echo "[airflow-venv] up to date ($STAMP)"
  exit 0
fi
t0=$(date +%s)
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -c "$PINS" \
  apache-airflow apache-airflow-providers-apache-spark
touch "$STAMP"
echo "[airflow-venv] $("$VENV/bin/python" -c 'import airflow; print("apache-airflow", airflow.__version__)') in $VENV, built in $(( $(date +%s) - t0 )) s"
