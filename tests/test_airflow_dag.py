"""The Airflow DAGs load in real Airflow (its own throwaway venv) and have the intended task graph."""
from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from demandcast.cli import STAGES, parse

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_PY = PROJECT_ROOT / ".venv-airflow" / "bin" / "python"

# Runs inside .venv-airflow: parse the DAG folder with Airflow's own DagBag and, for every
# SparkSubmitOperator, the exact spark-submit argv its hook would run for logical date 2025-06-30.
DUMP = r"""
import json, sys
from airflow.models.dagbag import DagBag
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
context = {"ds": "2025-06-30", "ds_nodash": "20250630",
           "var": {"value": {"demandcast_hash_key_secret": "***"}}}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for t in dag.tasks:
        info = {"operator": type(t).__name__, "upstream": sorted(t.upstream_task_ids),
                "external": [getattr(t, "external_dag_id", None), getattr(t, "external_task_id", None)]}
        if isinstance(t, SparkSubmitOperator):
            for name in t.template_fields:
                setattr(t, name, t.render_template(getattr(t, name), context))
            info["argv"] = t._get_hook()._build_spark_submit_command(t.application)
        tasks[t.task_id] = info
    out["dags"][dag_id] = {"schedule": str(dag.schedule_interval), "tasks": tasks,
                           "max_active_runs": dag.max_active_runs}
print(json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def dags(tmp_path_factory) -> dict:
    subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "airflow_venv.sh")], check=True, timeout=1200)
    home = tmp_path_factory.mktemp("airflow_home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "deploy" / "airflow"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           # The connection the DAG names, as an operator would define it (no metadata DB needed).
           "AIRFLOW_CONN_SPARK_DEMANDCAST": json.dumps(
               {"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "cluster"}})}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([str(AIRFLOW_PY), "-c", DUMP, str(PROJECT_ROOT / "deploy" / "airflow")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["import_errors"] == {}
    return result["dags"]


def _edges(dag: dict) -> set[tuple[str, str]]:
    return {(up, task_id) for task_id, t in dag["tasks"].items() for up in t["upstream"]}


def test_daily_dag_is_ingest_features_score(dags):
    daily = dags["demandcast_daily"]
    assert set(daily["tasks"]) == {"ingest", "features", "score"}
    assert _edges(daily) == {("ingest", "features"), ("features", "score")}
    assert daily["schedule"] == "0 2 * * *"
    assert daily["max_active_runs"] == 1


def test_weekly_retrain_waits_for_features_then_trains_and_evaluates(dags):
    weekly = dags["demandcast_weekly_retrain"]
    assert _edges(weekly) == {("wait_for_daily_features", "train"), ("train", "evaluate")}
    sensor = weekly["tasks"]["wait_for_daily_features"]
    assert sensor["operator"] == "ExternalTaskSensor"
    assert sensor["external"] == ["demandcast_daily", "features"]
    assert "features" in dags["demandcast_daily"]["tasks"]
    # Monday at the daily run's time: the sensor looks for the same logical date.
    assert weekly["schedule"].split()[:2] == dags["demandcast_daily"]["schedule"].split()[:2]


def test_weekly_maintain_runs_after_the_days_score(dags):
    weekly = dags["demandcast_weekly_maintain"]
    assert _edges(weekly) == {("wait_for_daily_score", "maintain")}
    assert weekly["tasks"]["wait_for_daily_score"]["external"] == ["demandcast_daily", "score"]
    assert weekly["schedule"].split()[:2] == dags["demandcast_daily"]["schedule"].split()[:2]
    assert weekly["max_active_runs"] == 1


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == flag]


def _job_args(argv: list[str]) -> tuple[str, list[str]]:
    """The application (the first .py that is not a --py-files value) and the arguments after it."""
    index = next(i for i, word in enumerate(argv) if word.endswith(".py") and argv[i - 1] != "--py-files")
    return argv[index], argv[index + 1:]


def test_spark_tasks_submit_like_the_wrapper_yarn_profile(dags, tmp_path):
    """What Airflow would run equals what deploy/submit.py prints for the yarn profile."""
    wrapper = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "python"), str(PROJECT_ROOT / "deploy" / "submit.py"),
         "run-all", "--profile", "yarn", "--build-dir", str(tmp_path), "--dry-run"],
        capture_output=True, text=True, check=True, cwd=PROJECT_ROOT,
        env={**os.environ, "DEMANDCAST_USER_HASH_KEY": "a-key"})  # printed masked as ***
    expected = shlex.split(wrapper.stdout.strip())
    expected_conf = set(_pairs(expected, "--conf")) - {"cluster.yaml"}
    # Both hand the hashing key to the driver's environment on the cluster.
    assert "spark.yarn.appMasterEnv.DEMANDCAST_USER_HASH_KEY=***" in expected_conf

    spark_tasks = {task_id: t["argv"] for dag in dags.values() for task_id, t in dag["tasks"].items()
                   if t["operator"] == "SparkSubmitOperator"}
    assert set(spark_tasks) == {"ingest", "features", "score", "train", "evaluate", "maintain"}
    for stage, argv in spark_tasks.items():
        assert stage in STAGES  # each task is a stage of the CLI ...
        application, args = _job_args(argv)
        # ... run through the same launcher the wrapper submits
        assert Path(application).name == Path(_job_args(expected)[0]).name == "stage_launcher.py"
        assert args[0] == stage
        args = args[1:]
        for flag in ("--master", "--deploy-mode", "--packages"):
            assert _pairs(argv, flag) == _pairs(expected, flag), flag
        assert [Path(f).name for f in _pairs(argv, "--files")[0].split(",")] == \
            [Path(f).name for f in _pairs(expected, "--files")[0].split(",")]
        assert _pairs(argv, "--py-files")[0].endswith(Path(_pairs(expected, "--py-files")[0]).name)
        assert _pairs(argv, "--archives")[0].endswith(Path(_pairs(expected, "--archives")[0]).name)
        differing = expected_conf - set(_pairs(argv, "--conf"))
        # Training turns dynamic allocation off: Horovod ranks must start together.
        assert differing == ({"spark.dynamicAllocation.enabled=true"} if stage == "train" else set())
        # The job's own arguments form a valid command line, with the run's logical date as the
        # day the stage works for.
        assert args[:2] == ["--conf", "cluster.yaml"]
        parsed_stage, cfg = parse([stage, "--conf", str(PROJECT_ROOT / "conf" / "cluster.yaml"), *args[2:]])
        assert parsed_stage == stage
        assert cfg.as_of == dt.date(2025, 6, 30)
        assert cfg.spark.python == "./environment/bin/python"
        if stage == "train":
            # The retrain takes the labelled snapshots up to the date, not [ds] (no labels yet).
            assert cfg.train.snapshot_dates == [] and cfg.train.window_snapshots


def test_weekly_retrain_trains_on_snapshots_with_labels(tmp_path):
    """What the weekly task asks for, on Monday 2025-06-30 with 30-day labels and daily
    snapshots: the newest labelled ones (labels reach 2025-05-31), a week apart."""
    from training.window import window_for

    cfg = parse(["train", "--conf", str(PROJECT_ROOT / "conf" / "cluster.yaml"), "--as-of", "2025-06-30"])[1]
    labelled = [dt.date(2025, 3, 1) + dt.timedelta(days=i) for i in range(92)]  # 03-01 .. 05-31
    dates = window_for(cfg.train, labelled, cfg.as_of)
    assert dates[-1] == dt.date(2025, 5, 31) and len(dates) == cfg.train.window_snapshots == 8
    assert all((b - a).days == 7 for a, b in zip(dates, dates[1:]))
