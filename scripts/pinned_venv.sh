# Sourced by the scripts that build a throwaway venv with pins of its own (.venv-airflow,
# .venv-mlflow): `pinned_venv TAG VENV PINS PACKAGE...` installs PACKAGE... under PINS into a
# fresh VENV, once. A stamp keyed on the pins and on the calling script and this file skips the
# install on a second run. Called as a plain command, so `set -e` stops on a failed install.
pinned_venv() {
  local tag=$1 venv=$2 pins=$3
  shift 3
  local py=${PYTHON:-python3.11}
  command -v "$py" >/dev/null || py=python3
  local stamp
  stamp=$venv/.installed-$(cat "$pins" "$0" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
  if [ -f "$stamp" ]; then
    echo "[$tag] up to date ($stamp)"
    return 0
  fi
  local t0
  t0=$(date +%s)
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$pins" "$@"
  touch "$stamp"
  echo "[$tag] built $venv in $(( $(date +%s) - t0 )) s"
}
