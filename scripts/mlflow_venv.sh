#!/usr/bin/env bash
# Builds .venv-mlflow: an MLflow tracking server (pinned in deploy/mlflow/constraints.txt) that
# tests/test_mlflow_tracking.py starts on loopback with a SQLite backend. Kept apart from .venv:
# the full server (Flask, SQLAlchemy, alembic...) is not the pipeline's business, and the pipeline
# talks to any server through its mlflow-skinny client. Idempotent: a stamp keyed on the pins
# skips the install on a second run. About a minute the first time (mostly downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pinned_venv.sh
VENV=${MLFLOW_VENV:-$PWD/.venv-mlflow}
pinned_venv mlflow-venv "$VENV" deploy/mlflow/constraints.txt mlflow
echo "[mlflow-venv] $("$VENV/bin/mlflow" --version)"
