"""Horovod training end to end on real Spark, Delta, petastorm and Horovod (Gloo) processes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from demandcast.config import load_config
from demandcast.tables import read_table
from training import metrics as M
from training_fixtures import SNAPSHOTS, simulate, write_contract_tables, write_ground_truth

pytestmark = pytest.mark.slow

FAST_MODEL = ["train.files_per_split=2", "train.batch_size=64", "train.deep_learning_rate=0.01",
              "train.hidden_units=[32,16]", "train.top_k_categories=3", "spark.shuffle_partitions=2",
              "evaluate.lightgbm_rounds=60", "evaluate.importance_rows=300"]


def config(tmp_path: Path, *overrides: str):
    snapshots = ",".join(d.isoformat() for d in SNAPSHOTS)  # the fixture's, whatever conf/ says
    return load_config("conf/local.yaml", [f"warehouse={tmp_path}/warehouse", f"runs_dir={tmp_path}/runs",
                                           f"raw_dir={tmp_path}/raw", f"snapshot_dates=[{snapshots}]",
                                           *FAST_MODEL, *overrides])


def test_two_ranks_stay_identical_and_beat_the_recency_rule(spark, tmp_path):
    from training.evaluation import evaluate
    from training.run import train

    cfg = config(tmp_path, "train.launcher=horovodrun", "train.num_proc=2", "train.epochs=8",
                 "train.patience=3", "train.validation_percent=20", "train.test_percent=25",
                 "train.wide_learning_rate=0.3")
    data = simulate(1500, SNAPSHOTS, seed=11)
    write_contract_tables(spark, cfg.warehouse, data)
    write_ground_truth(spark, cfg.raw_dir, data)

    summary = train(spark, cfg)
    run_dir = Path(cfg.runs_dir) / "train_runs" / summary["model_version"]
    sums = [(run_dir / f"weights_rank{r}.sha256").read_text() for r in (0, 1)]
    assert summary["ranks"] == 2 and sums[0] == sums[1]
    # Short last batches and zero-weight dummy batches reuse the train step's one graph.
    assert json.loads((run_dir / "result.json").read_text())["train_step_traces"] == 1
    model_dir = Path(summary["model_dir"])
    for part in ("saved_model", "preprocessing.json", "model.json", "metrics.json", "tensorboard"):
        assert (model_dir / part).exists(), part
    info = json.loads((model_dir / "model.json").read_text())
    assert info["training_set"]["version"] == summary["training_set_version"]
    assert info["training_set"]["source_versions"] == {"user_features": 1, "labels": 1}
    assert info["calibration"]["method"] == "platt"
    row = read_table(spark, cfg.warehouse, "models").collect()
    assert [r.model_version for r in row] == [summary["model_version"]]

    result = evaluate(spark, cfg)
    report = json.loads((Path(result["report"]).parent / "metrics.json").read_text())
    scorers = report["scorers"]
    assert set(scorers) == {"wide_and_deep", "recency_rule", "logistic_regression_wide",
                            "lightgbm", "oracle"}
    assert scorers["wide_and_deep"]["roc_auc"] > scorers["recency_rule"]["roc_auc"] + 0.01
    # The oracle is the simulator's own probability, joined on the HMAC of the raw user id.
    test_keys = set(spark.read.format("delta").load(f"{cfg.warehouse}/training_set")
                    .where("split = 'test'").toPandas().apply(
                        lambda r: (r.user_key, r.snapshot_date), axis=1))
    truth = data[[(k, d) in test_keys for k, d in zip(data.user_key, data.snapshot_date)]]
    assert report["oracle"]["coverage"] == 1.0
    assert scorers["oracle"]["roc_auc"] == pytest.approx(M.auc(truth.label_purchased, truth.p_true))
    html = Path(result["report"]).read_text()
    assert html.count("<img") >= 5 and "lightgbm" in html
    evaluated = read_table(spark, cfg.warehouse, "models").first()
    assert evaluated.test_roc_auc == pytest.approx(scorers["wide_and_deep"]["roc_auc"])
