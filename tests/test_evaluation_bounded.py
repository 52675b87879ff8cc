"""evaluate brings a bounded number of rows to the driver (issue 35, §2): all of a small test
split, with the metrics of every row, or a stated uniform sample of a large one."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import metrics as M
from trained_fixtures import trained_models  # noqa: F401  (session fixture)


def evaluated(spark, cfg, **evaluate_settings) -> tuple[dict, dict, str]:
    from training.evaluation.stage import evaluate

    cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update=evaluate_settings)})
    summary = evaluate(spark, cfg)
    out = Path(summary["report"]).parent
    return summary, json.loads((out / "metrics.json").read_text()), (out / "report.html").read_text()


def as_json(value):
    return json.loads(json.dumps(value, default=str))


@pytest.mark.slow
def test_a_test_split_under_the_cap_is_evaluated_on_every_row_and_a_larger_one_on_a_stated_sample(
        spark, trained_models):
    from training.model_directory import load_scoring_model

    cfg = trained_models["cfg"]
    test = (spark.read.format("delta").load(f"{cfg.warehouse}/training_set")
            .where("split = 'test'").toPandas())
    y = test["label_purchased"].to_numpy(np.float64)
    model = load_scoring_model(trained_models["float32"]["result"]["model_dir"])
    settings = cfg.evaluate

    def metrics_of(p):
        return as_json(M.classification_metrics(y, p, settings.threshold, settings.top_k_percent,
                                                 settings.calibration_bins))

    # Under the cap: the metrics of every test row, as the model and the oracle give them.
    summary, report, html = evaluated(spark, cfg)
    assert summary["test_rows"] == summary["test_split_rows"] == len(test)
    assert report["test_rows"] == {"rows": len(test), "of_rows": len(test), "sampled": False,
                                   "statement": f"computed on all {len(test):,} test rows"}
    assert report["scorers"]["wide_and_deep"] == metrics_of(model.predict(test)["p_purchase"])
    truth = trained_models["data"].set_index(["user_key", "snapshot_date"])["p_true"]
    oracle_p = truth.loc[list(zip(test.user_key, test.snapshot_date))].to_numpy()
    assert report["oracle"]["coverage"] == 1.0
    assert report["scorers"]["oracle"] == metrics_of(oracle_p)
    assert f"computed on all {len(test):,} test rows" in html

    # A cap below the split: a uniform sample of exactly that many rows, said everywhere.
    cap = 200
    summary, report, html = evaluated(spark, cfg, max_driver_rows=cap, importance_rows=100)
    statement = f"computed on a uniform sample of {cap:,} of {len(test):,} test rows"
    assert report["test_rows"] == {"rows": cap, "of_rows": len(test), "sampled": True,
                                   "statement": statement}
    assert summary["test_rows"] == cap and summary["test_split_rows"] == len(test)
    # Every scorer, the BTYD ones included where this world's features allow them, on the sample.
    rows_by_scorer = {name: m["rows"] for name, m in report["scorers"].items()}
    assert {"wide_and_deep", "recency_rule", "logistic_regression_wide", "lightgbm",
            "oracle"} <= set(rows_by_scorer)
    assert set(rows_by_scorer.values()) == {cap}
    assert report["oracle"]["coverage"] == 1.0 and report["oracle"]["oracle"]["rows"] == cap
    # The baselines fit on a bounded sample of the train split as well.
    assert report["baseline_train_rows"]["rows"] == report["train_rows_for_baselines"] == cap
    assert report["baseline_train_rows"]["sampled"]
    assert statement in html


def test_uniform_sample_has_exactly_the_cap_and_reaches_every_partition(spark):
    from training.evaluation.sampling import collect_bounded, uniform_sample

    df = spark.range(0, 20_000, numPartitions=8)
    sample = uniform_sample(df, 1_000, 20_000, seed=3).toPandas()["id"].to_numpy()
    assert len(sample) == len(set(sample)) == 1_000
    # Each eighth of the ids (one partition each) gets about its share (125, sd ~10).
    shares = np.bincount(sample // 2_500, minlength=8)
    assert shares.min() > 80 and shares.max() < 170, shares
    assert uniform_sample(df, 20_000, 20_000, seed=3) is df

    rows, taken = collect_bounded(spark.range(0, 300, numPartitions=3), 500, seed=3)
    assert rows["id"].tolist() == list(range(300)) and not taken.sampled
    rows, taken = collect_bounded(spark.range(0, 300, numPartitions=3), 100, seed=3)
    assert len(rows) == taken.rows == 100 and taken.of_rows == 300 and taken.sampled
    assert rows["id"].is_monotonic_increasing  # the sample keeps the split's row order
