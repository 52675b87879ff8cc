"""MLflow against a real tracking server (its own venv, scripts/mlflow_venv.sh; SQLite backend,
local artifact root, loopback on a free port): a trained model's run (parameters, per-epoch
metrics, the model as a registered pyfunc), the evaluation files and test metrics in the same
run, the champion alias following promotion and rollback, and score loading
models:/demandcast@champion. The model is a real Wide & Deep model directory
(scoring_fixtures.save_wide_and_deep: the real graph, untrained weights)."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from demandcast.config import load_config
from demandcast.tables import read_table
from scoring_fixtures import save_wide_and_deep
from training import tracking
from training.evaluation.promotion import decide, rollback
from training.lineage import SCHEMA, record_model
from training.model_directory import load_scoring_model
from training.model_status import first_model_status
from training.scoring.stage import run_score
from training_fixtures import simulate, write_contract_tables

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parent.parent
S0, S1 = dt.date(2026, 1, 1), dt.date(2026, 2, 1)
HISTORY = [{"epoch": 1, "loss": 0.71, "val_auc": 0.61}, {"epoch": 2, "loss": 0.64, "val_auc": 0.66}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "mlflow_venv.sh")], check=True)
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    server = subprocess.Popen(
        [str(PROJECT_ROOT / ".venv-mlflow" / "bin" / "mlflow"), "server",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
        # Without the background job runner (its consumers are five more processes): the
        # tests use tracking and the registry only.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MLflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _row(version: str, model_dir: str, minute: int, ids: dict) -> dict:
    names = [c.strip().split(" ")[0] for c in SCHEMA.split(",") if " " in c.strip()]
    row = dict.fromkeys(names)
    row.update(model_version=version, model_dir=model_dir, snapshot_dates=[S0], protocol="holdout",
               created_at=dt.datetime(2026, 2, 2, 0, minute), status="challenger", decisions=[], **ids)
    return row


def test_runs_registry_alias_and_score_from_the_registry(spark, warehouse, tmp_path, mlflow_server):
    from mlflow import MlflowClient

    data = simulate(300, [S0, S1], seed=3)
    write_contract_tables(spark, warehouse, data)
    runs = tmp_path / "runs"
    cfg = load_config(PROJECT_ROOT / "conf" / "local.yaml", [
        f"warehouse={warehouse}", f"runs_dir={runs}", f"mlflow.tracking_uri={mlflow_server}",
        "promote.min_gain=0.0", f"score.snapshot_date={S1}"])
    features = read_table(spark, warehouse, "user_features").where(f"snapshot_date = '{S0}'")
    first = save_wide_and_deep(features, runs / "models" / "wd1", "wd1")
    (first / "metrics.json").write_text(json.dumps({"history": HISTORY,
                                                    "validation": {"calibrated": {"roc_auc": 0.66}}}))
    # The same model again: equal AUC, so with min_gain 0 the challenger is promoted.
    second = runs / "models" / "wd2"
    shutil.copytree(first, second)

    ids = {}
    for n, (version, folder) in enumerate((("wd1", first), ("wd2", second))):
        ids[version] = tracking.log_training(cfg.mlflow, version, str(folder),
                                             {"train": {"epochs": 2, "hidden_units": [16, 8]}},
                                             json.loads((folder / "metrics.json").read_text()))
        row = first_model_status(spark, warehouse, _row(version, str(folder), n, ids[version]))
        record_model(spark, warehouse, row)
        if row["status"] == "champion":
            tracking.move_champion_alias(cfg.mlflow, row)
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"scorers": {"wide_and_deep": {"roc_auc": 0.7}}}))
    (evaluation / "report.html").write_text("<html>report</html>")
    tracking.log_evaluation(cfg.mlflow, ids["wd1"]["mlflow_run_id"], "wd1",
                            {"scorers": {"wide_and_deep": {"roc_auc": 0.7, "log_loss": 0.5},
                                         "lightgbm": {"roc_auc": 0.69}}},
                            [evaluation / "metrics.json", evaluation / "report.html"])

    client = MlflowClient(mlflow_server)
    run = client.get_run(ids["wd1"]["mlflow_run_id"])
    assert run.data.params["train.epochs"] == "2" and run.data.params["train.hidden_units"] == "[16, 8]"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == \
        [(1, 0.71), (2, 0.64)]
    assert run.data.metrics["val_roc_auc"] == 0.66
    assert run.data.metrics["test_wide_and_deep_roc_auc"] == 0.7
    assert run.data.metrics["test_lightgbm_roc_auc"] == 0.69
    assert {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")} == \
        {"evaluation/metrics.json", "evaluation/report.html"}
    versions = {v.version: v for v in client.search_model_versions("name = 'demandcast'")}
    assert sorted(versions) == ["1", "2"]
    assert versions["1"].run_id == run.info.run_id
    assert versions["1"].tags[tracking.VERSION_TAG] == "wd1"
    assert client.get_model_version_by_alias("demandcast", "champion").version == "1"

    # Promotion moves the alias; the registry's champion is what score loads.
    outcome = decide(spark, cfg, "wd2")
    assert outcome["status"] == "champion" and outcome["compared_to"] == "wd1"
    assert client.get_model_version_by_alias("demandcast", "champion").version == "2"
    registry = cfg.model_copy(update={"score": cfg.score.model_copy(
        update={"model_uri": "models:/demandcast@champion"})})
    summary = run_score(spark, registry)
    assert summary["model_version"] == "wd2" and summary["users_scored"] == 300
    assert summary["model_dir"].startswith(str(runs / "mlflow_models"))
    # The pyfunc wraps the same SavedModel: it predicts what the model directory predicts.
    import mlflow.pyfunc

    inputs = data[data.snapshot_date == S1].head(50).reset_index(drop=True)
    got = mlflow.pyfunc.load_model("models:/demandcast@champion").predict(inputs)
    want = load_scoring_model(str(second)).predict(inputs)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))

    rollback(spark, cfg)
    assert client.get_model_version_by_alias("demandcast", "champion").version == "1"
