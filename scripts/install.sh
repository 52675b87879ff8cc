#!/usr/bin/env bash
# Builds .venv with the pinned stack in the order that works (see README "Pinned versions"),
# fetches the Delta jars with Maven into .jars/, then runs the self-check.
# Idempotent: a stamp keyed on the pins and this script skips the installs on a second run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=$ROOT/.venv
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
C="-c $ROOT/constraints.txt"
WHEEL_CACHE=${DEMANDCAST_WHEEL_CACHE:-$HOME/.cache/demandcast/wheels}
export TF_CPP_MIN_LOG_LEVEL=2

stamp_of() { cat constraints.txt scripts/install.sh pyproject.toml deploy/jars/pom.xml | sha256sum | cut -c1-16; }
STAMP=$VENV/.installed-$(stamp_of)

log() { printf '[install] %s\n' "$*"; }

if [ -f "$STAMP" ] && [ -n "$(ls .jars/*.jar 2>/dev/null)" ]; then
  log "environment up to date ($STAMP)"
else
  t0=$(date +%s)
  [ -x "$VENV/bin/python" ] || { log "creating $VENV with $($PY --version)"; $PY -m venv "$VENV"; }
  log "1/5 build tools"
  $PIP install --upgrade pip
  $PIP install $C "setuptools" wheel packaging "cmake" cloudpickle psutil pyyaml

  log "2/5 tensorflow-cpu (first: Horovod builds against it)"
  $PIP install $C tensorflow-cpu keras

  log "3/5 horovod from sdist with Gloo, no build isolation (it must see TF)"
  if ! "$VENV/bin/python" -c "import horovod.tensorflow" 2>/dev/null; then
    TF_VER=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('tensorflow-cpu'))")
    PY_VER=$("$VENV/bin/python" -c "import sys; print('%d%d' % sys.version_info[:2])")
    KEY="$WHEEL_CACHE/horovod-0.28.1-tf$TF_VER-py$PY_VER"
    if [ -z "$(ls "$KEY"/horovod-*.whl 2>/dev/null)" ]; then
      log "   building horovod (about 2-4 minutes on 2 cores)"
      mkdir -p "$KEY"
      HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
      HOROVOD_WITHOUT_MPI=1 HOROVOD_WITH_GLOO=1 CMAKE_POLICY_VERSION_MINIMUM=3.5 \
        $PIP wheel $C --no-cache-dir --no-build-isolation --no-deps -w "$KEY" horovod==0.28.1
    fi
    $PIP install $C --no-deps "$KEY"/horovod-*.whl
  fi

  log "4/5 spark, delta, petastorm, pyarrow and the project"
  $PIP install $C pyspark delta-spark petastorm pyarrow pandas numpy
  $PIP install $C -e ".[dev]"

  log "5/5 Delta jars from Maven Central into .jars/"
  rm -rf .jars && mkdir -p .jars
  mvn -q -B -f deploy/jars/pom.xml dependency:copy-dependencies \
      -DincludeScope=runtime -DexcludeGroupIds=org.scala-lang,org.antlr \
      -DoutputDirectory="$ROOT/.jars"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
  log "installed in $(( $(date +%s) - t0 )) s"
fi

"$VENV/bin/python" -m demandcast.selfcheck
