# The README's two commands: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0

.PHONY: install test-envs demo test test-fast bench clean

install:
	bash scripts/install.sh

demo: install
	$(VENV)/bin/demandcast run-all --conf conf/demo.yaml

# The throwaway venvs slow tests load (Airflow; delta-rs + DuckDB; an MLflow server), built before the suite
# starts so their install time is not spent inside it. The tests call the same idempotent
# scripts, so a single test file still works without this step.
test-envs:
	bash scripts/airflow_venv.sh
	bash scripts/consumer_venv.sh
	bash scripts/mlflow_venv.sh

# The full suite, slow end-to-end tests included (CI runs exactly this).
test: install test-envs
	bash scripts/install_system.sh
	bash scripts/run_tests.sh

# Without the slow-marked tests, for quick local iterations.
test-fast: install
	bash scripts/run_tests.sh -m "not slow"

clean:
	rm -rf warehouse runs data bench/out
