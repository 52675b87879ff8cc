"""The README's own-data example on data with a known truth: the simulator's world exported as a
plain `customer_id,date,quantity,amount` CSV (generate.export: purchases), read through
conf/examples/transactions.yaml (by conf/examples/simulated_purchases.yaml), every stage from
generate to score, with no users or items files and no hand-written exclusions."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from demandcast.tables import read_table
from features.families.btyd import definitions as btyd_features
from features.feature_spec import FeatureSpec


@pytest.mark.slow
def test_the_simulated_purchase_export_runs_every_stage(spark, project_root, tmp_path):
    warehouse, runs, raw = tmp_path / "warehouse", tmp_path / "runs", tmp_path / "raw"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "demandcast"), "run-all",
         "--conf", str(project_root / "conf" / "examples" / "simulated_purchases.yaml"),
         "--set", f"warehouse={warehouse}", "--set", f"raw_dir={raw}", "--set", f"runs_dir={runs}",
         "--set", f"ingest.paths=[{raw / 'transactions'}]", "--set", "generate.n_users=1200",
         "--set", "generate.n_items=200", "--set", "generate.partitions=2",
         "--set", "evaluate.lightgbm_rounds=60", "--set", "evaluate.importance_rows=300",
         "--set", "spark.shuffle_partitions=2", "--set", "spark.driver_memory=2g",
         # The export's path through every stage is under test, not the model's fit: one rank,
         # in this process, for two epochs of one deep tower keeps the run short.
         "--set", "train.launcher=inprocess", "--set", "train.num_proc=1",
         "--set", "train.epochs=2", "--set", "train.ensemble_members=1"],
        cwd=project_root, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]

    # Only an order export landed: the four columns, no event log, no dimension files.
    files = sorted((raw / "transactions").glob("*.csv"))
    with open(files[0]) as f:
        assert next(csv.reader(f)) == ["customer_id", "date", "quantity", "amount"]
    assert not (raw / "events").exists() and not (raw / "users").exists()
    lines = sum(sum(1 for _ in open(f)) - 1 for f in files)
    assert read_table(spark, str(warehouse), "events").count() == lines > 500

    predictions = read_table(spark, str(warehouse), "predictions").toPandas()
    customers = (read_table(spark, str(warehouse), "user_features")
                 .where("snapshot_date = DATE'2025-06-30'").count())
    assert len(predictions) == customers > 100
    assert predictions.p_purchase.between(0, 1).all()
    # View, cart and user-attribute features are null (or one value) for every customer of such
    # an export: the model was trained without them and its metadata says why.
    model_json = next(runs.glob("models/*/model.json"))
    ignored = json.loads(model_json.read_text())["training_set"]["ignored"]
    assert ignored["days_since_last_view"] == "null in every training row"
    assert ignored["has_viewed"] == "the same value in every training row"
    assert "days_since_last_purchase" not in ignored
    assert not {f.name for f in btyd_features(FeatureSpec())} & set(ignored)
    # The field's reference models are scored on the same test rows, with the oracle beside them.
    metrics = json.loads(next(runs.glob("evaluations/*/metrics.json")).read_text())
    for scorer in ("wide_and_deep", "bgnbd", "pareto_nbd", "logistic_regression_rfm_btyd",
                   "lightgbm", "oracle"):
        assert 0.5 < metrics["scorers"][scorer]["roc_auc"] <= 1.0, scorer
    assert metrics["spend_baselines"]["bgnbd_gamma_gamma"]["mae"] > 0
