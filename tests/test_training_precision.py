"""Mixed precision on CPU: the mixed_float16 model trains like the float32 one (issue 35, §3)."""
from __future__ import annotations

import pytest

from training import metrics as M
from trained_fixtures import trained_models  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow


def test_mixed_float16_trains_two_epochs_to_the_auc_of_float32(spark, trained_models):
    from training.model_directory import load_scoring_model

    runs = trained_models
    for name, policy in (("float32", "float32"), ("mixed", "mixed_float16")):
        result = runs[name]["result"]
        assert result["metrics"]["dtype_policy"] == policy
        assert result["device"].endswith(f"/{policy}")
        assert [h["epoch"] for h in result["history"]] == [1, 2]
        assert all(h["loss"] == h["loss"] for h in result["history"])  # no NaN loss
    test = (spark.read.format("delta").load(f"{runs['cfg'].warehouse}/training_set")
            .where("split = 'test'").toPandas())
    y = test["label_purchased"].to_numpy()
    aucs = {name: M.auc(y, load_scoring_model(runs[name]["result"]["model_dir"])
                        .predict(test)["p_purchase"].to_numpy())
            for name in ("float32", "mixed")}
    # Far above chance (the fixture's signal), so the two models really learned.
    assert aucs["float32"] > 0.7, aucs
    assert abs(aucs["mixed"] - aucs["float32"]) <= 0.005, aucs
    # Same data, same seed, different arithmetic: the models are not the same model.
    assert runs["mixed"]["result"]["weights_sha256"] != runs["float32"]["result"]["weights_sha256"]
