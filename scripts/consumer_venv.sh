#!/usr/bin/env bash
# Builds .venv-consumer: what a warehouse consumer has to read the predictions and category_demand
# Delta tables without Spark (deltalake = delta-rs, DuckDB for SQL over its Arrow dataset).
# Its own venv and its own pins (deploy/consumer-constraints.txt), from PyPI only, so they never
# collide with the training stack's pins. Idempotent: a stamp keyed on the pins skips a rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=${DEMANDCAST_CONSUMER_VENV:-$ROOT/.venv-consumer}
PINS=$ROOT/deploy/consumer-constraints.txt
STAMP=$VENV/.installed-$(cat "$PINS" scripts/consumer_venv.sh | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import deltalake, duckdb" 2>/dev/null; then
  echo "[consumer-venv] up to date ($VENV)"
  exit 0
fi
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip --disable-pip-version-check -q install -c "$PINS" \
  deltalake pyarrow duckdb pandas
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "[consumer-venv] built $VENV in $(( $(date +%s) - t0 )) s"
