#!/usr/bin/env bash
# Builds .venv-mlflow: an MLflow tracking server (pinned in deploy/mlflow/constraints.txt) that
# tests/test_mlflow_tracking.py starts on loopback with a SQLite backend. Kept apart from .venv:
# the full server (Flask, SQLAlchemy, alembic...) is not the pipeline's business, and the pipeline
# talks to any server through its mlflow-skinny client. Idempotent: a stamp keyed on the pins
# skips the install on a second run. About a minute the first time (mostly downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${MLFLOW_VENV:-$PWD/.venv-mlflow}
PINS=deploy/mlflow/constraints.txt
STAMP=$VENV/.installed-$(cat "$PINS" "$0" | sha256sum | cut -c1-16)

if [ -f "$STAMP" ]; then
  echo "[mlflow-venv] up to date ($STAMP)"
  exit 0
fi
t0=$(date +%s)
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -c "$PINS" mlflow
touch "$STAMP"
echo "[mlflow-venv] $("$VENV/bin/mlflow" --version) in $VENV, built in $(( $(date +%s) - t0 )) s"
