"""Model, model directory, batching and metrics without Spark (fast)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from training import metrics as M
from training.batches import rebatch
from training.model import ModelParams, PiecewiseLinearEmbedding, build_model
from training.model_directory import category_score_column, load_scoring_model, save_model_dir

STATE = {
    "numeric": {"recency": {"mean": 2.0, "std": 1.5, "boundaries": [1.0, 2.0, 3.0]},
                "spend": {"mean": 1.0, "std": 1.0, "boundaries": [0.5]}},
    "categorical": {"region": {"vocabulary": ["north", "south"]}, "device": {"vocabulary": []}},
    "crosses": [["region", "device"], ["region", "recency"]], "cross_hash_buckets": 32,
    "category_ids": ["books", "toys"],
    "labels": {"rows": 100, "base_rate": 0.2, "spend_mean": 12.0, "category_rates": [0.1, 0.05]},
    "calibration": {"method": "none", "a": 1.0, "b": 0.0},
}
# What preprocessing writes today: null buckets and flags, and piecewise-linear embedding edges.
STATE_EMBEDDED = {
    **STATE, "numeric_missing": True,
    "numeric": {"recency": {**STATE["numeric"]["recency"], "embedding_edges": [0.0, 1.0, 2.5, 4.0]},
                "spend": {**STATE["numeric"]["spend"], "embedding_edges": [0.0, 2.0]}},
}
PARAMS = ModelParams(embedding_dim=4, hidden_units=(8,), dropout=0.0, l2=0.0)
ENSEMBLE = dataclasses.replace(PARAMS, hidden_units=(8, 4), ensemble_members=3)
ROWS = {"recency": [1.0, np.nan, 40.0], "spend": [1.0, 0.0, 5.0], "region": ["north", "", "mars"],
        "device": ["x", "", "y"]}


@pytest.mark.parametrize("state,params", [(STATE, PARAMS), (STATE_EMBEDDED, PARAMS),
                                          (STATE_EMBEDDED, ENSEMBLE)],
                         ids=["plain", "embedded_numerics", "ensemble"])
def test_saved_model_scores_raw_columns_like_the_keras_model(tmp_path, state, params):
    import tensorflow as tf

    model = build_model(state, params)
    model.get_layer("calibration").a.assign(0.5)  # calibration must travel with the SavedModel
    model.get_layer("calibration").b.assign(-0.25)
    save_model_dir(model, state, tmp_path / "m", {"model_version": "v1",
                                                  "params": dataclasses.asdict(params)}, {})
    scoring = load_scoring_model(tmp_path / "m")
    assert scoring.input_columns == {"recency": "numeric", "spend": "numeric",
                                     "region": "categorical", "device": "categorical"}
    assert scoring.category_ids == ["books", "toys"]
    frame = pd.DataFrame({"recency": [3.0, None, 40.0], "spend": [0, 5, 1], "extra": 1,
                          "region": ["north", None, "mars"], "device": ["a", "b", None]},
                         index=[10, 11, 12])
    out = scoring.predict(frame)
    assert list(out.index) == [10, 11, 12]
    assert list(out.columns) == ["p_purchase", "expected_spend",
                                 category_score_column("books"), category_score_column("toys")]
    raw = model({"recency": tf.constant([3.0, np.nan, 40.0]), "spend": tf.constant([0.0, 5, 1]),
                 "region": tf.constant(["north", "", "mars"]), "device": tf.constant(["a", "b", ""])})
    expected_p = 1 / (1 + np.exp(-(0.5 * raw["logit"].numpy() - 0.25)))
    np.testing.assert_allclose(out["p_purchase"], expected_p, rtol=1e-5)
    np.testing.assert_allclose(out["expected_spend"], 12.0 * np.exp(raw["spend_log"].numpy()), rtol=1e-5)
    assert out.notna().all().all()
    with pytest.raises(ValueError, match="missing model columns"):
        scoring.predict(frame.drop(columns=["region"]))


def test_piecewise_linear_encoding_of_known_values():
    import tensorflow as tf

    # Feature 0: bins [0,1), [1,3); feature 1: one bin [0,2) and a padding bin that stays 0.
    layer = PiecewiseLinearEmbedding([[0.0, 1.0, 3.0], [0.0, 2.0]], dim=2)
    x = tf.constant([[-1.0, 1.0], [2.0, 5.0], [0.5, 0.0]])
    missing = tf.constant([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    layer([x, missing])
    # Identity-like kernel: embedding dim 0 = first bin's share, dim 1 = second bin's share.
    kernel = np.zeros((2, 2, 2), np.float32)
    kernel[:, 0, 0] = kernel[:, 1, 1] = 1.0
    layer.kernel.assign(kernel)
    layer.missing.assign(np.full((2, 2), 7.0, np.float32))
    out = layer([x, missing]).numpy().reshape(3, 2, 2)
    np.testing.assert_allclose(out[0], [[0.0, 0.0], [0.5, 0.0]])   # below the first edge: zeros
    np.testing.assert_allclose(out[1], [[1.0, 0.5], [1.0, 0.0]])   # above the last edge: ones
    np.testing.assert_allclose(out[2], [[7.0, 7.0], [0.0, 0.0]])   # a null: its learned vector


def test_a_null_numeric_has_its_own_wide_bucket_only_in_new_states():
    import tensorflow as tf

    rows = {"recency": tf.constant([np.nan, 2.0]), "spend": tf.constant([1.0, 1.0]),
            "region": tf.constant(["north", "north"]), "device": tf.constant(["", ""])}
    for state, null_bucket in ((STATE, 2), (STATE_EMBEDDED, 4)):
        model = build_model(state, PARAMS)
        wide = model.get_layer("wide_recency")
        ids = tf.keras.Model(model.inputs, wide.input)(rows).numpy().ravel()
        # log1p(2) = 1.10 is bucket 1 of [1, 2, 3]; the mean (2.0) is bucket 2.
        assert ids.tolist() == [null_bucket, 1]
        assert wide.input_dim == (5 if state is STATE_EMBEDDED else 4)


def test_output_bias_starts_at_the_base_rate():
    import tensorflow as tf

    model = build_model(STATE, PARAMS)
    deep = model.get_layer("deep_logit")
    deep.set_weights([np.zeros_like(w) for w in deep.get_weights()])
    out = model({"recency": tf.constant([1.0]), "spend": tf.constant([1.0]),
                 "region": tf.constant(["north"]), "device": tf.constant(["x"])})
    assert float(out["p_purchase"][0]) == pytest.approx(0.2, abs=1e-4)


def test_ensemble_outputs_are_the_means_of_distinct_members():
    import tensorflow as tf

    model = build_model(STATE_EMBEDDED, ENSEMBLE)
    out = model({k: tf.constant(v) for k, v in ROWS.items()})
    members = out["member_logits"].numpy()
    assert members.shape == (3, 3) and out["member_category_logits"].shape == (3, 3, 2)
    np.testing.assert_allclose(out["logit"].numpy(), members.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(out["spend_log"].numpy(), out["member_spend_log"].numpy().mean(axis=1),
                               rtol=1e-5)
    np.testing.assert_allclose(out["category_logits"].numpy(),
                               out["member_category_logits"].numpy().mean(axis=1), rtol=1e-5)
    # Each member starts from its own random weights, or the ensemble would be one model k times.
    assert members.std(axis=1).min() > 1e-4


def test_every_ensemble_member_starts_at_the_base_rates():
    import tensorflow as tf

    model = build_model(STATE_EMBEDDED, ENSEMBLE)
    for name in ("deep_logit", "category_head"):
        layer = model.get_layer(name)
        layer.kernel.assign(tf.zeros_like(layer.kernel))
    out = model({k: tf.constant(v) for k, v in ROWS.items()})
    np.testing.assert_allclose(tf.sigmoid(out["member_logits"]).numpy(), 0.2, atol=1e-4)
    np.testing.assert_allclose(tf.sigmoid(out["member_category_logits"]).numpy()[..., 0], 0.1, atol=1e-4)
    np.testing.assert_allclose(tf.sigmoid(out["member_category_logits"]).numpy()[..., 1], 0.05, atol=1e-4)


def test_rebatch_yields_every_row_once_in_reproducible_batches():
    groups = [{"id": np.arange(start, start + n)} for start, n in ((0, 7), (7, 30), (37, 0), (37, 13))]
    run = lambda seed: list(rebatch(iter(groups), 8, 2, np.random.default_rng(seed)))
    batches = run(1)
    ids = np.concatenate([b["id"] for b in batches])
    assert sorted(ids) == list(range(50))
    assert all(len(b["id"]) == 8 for b in batches[:-1]) and 0 < len(batches[-1]["id"]) <= 8
    assert [b["id"].tolist() for b in run(1)] == [b["id"].tolist() for b in batches]
    assert ids.tolist() != list(range(50))


def test_classification_metrics_on_a_known_case():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 1])
    p = np.array([0.1, 0.2, 0.8, 0.7, 0.3, 0.4, 0.1, 0.6, 0.2, 0.9])
    m = M.classification_metrics(y, p, threshold=0.5, top_k_percent=20, bins=2)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    # bins [0,0.5): p=.1,.2,.3,.4,.1,.2 -> mean .2167, rate 1/6; [0.5,1]: .8,.7,.6,.9 -> .75, 3/4
    assert m["ece"] == pytest.approx((6 * abs(1.3 / 6 - 1 / 6) + 4 * abs(0.75 - 0.75)) / 10)
    assert m["at_threshold"]["precision"] == pytest.approx(3 / 4)
    assert m["at_threshold"]["recall"] == pytest.approx(3 / 4)
    assert m["at_top_k"]["predicted_positive"] == 2 and m["at_top_k"]["precision"] == 1.0
    assert m["lift"][0]["lift"] == pytest.approx(1 / 0.4)
    assert m["lift"][-1]["cumulative_capture"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.classification_metrics(y, p[:-1])
    # A category nobody in the test split bought: undefined, written as null rather than NaN.
    assert M.defined_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert M.defined_auc(np.zeros(10), p) is None


def test_gpu_path_refuses_clearly_without_a_gpu():
    import horovod.tensorflow as hvd

    from demandcast.config import load_config
    from demandcast.errors import ConfigError
    from training.distributed import configure_devices

    hvd.init()
    with pytest.raises(RuntimeError, match="no GPU"):
        configure_devices(hvd, use_gpu=True, mixed_precision=False)
    # Mixed precision is a policy, not a device: it loads on CPU (and trains, see
    # test_training_precision.py).
    assert load_config("conf/local.yaml", ["train.mixed_precision=true"]).train.mixed_precision
    with pytest.raises(ConfigError, match="inprocess"):
        load_config("conf/local.yaml", ["train.launcher=inprocess", "train.num_proc=2"])


def test_device_plan_gives_each_local_rank_its_own_gpu():
    from training.devices import DevicePlan, device_plan

    # horovodrun on a 4-GPU node: local rank r keeps GPU r, memory grows as needed.
    plans = [device_plan(r, 4, 4, use_gpu=True, mixed_precision=True, cpu_count=32)
             for r in range(4)]
    assert [p.gpu for p in plans] == [0, 1, 2, 3]
    assert all(p.memory_growth and p.policy == "mixed_float16" and not p.hide_gpus for p in plans)
    assert plans[2].describe() == "gpu:2/mixed_float16"
    # horovod.spark.run with GPU-aware scheduling: the GPU Spark assigned wins over the local rank.
    assert device_plan(0, 2, 4, True, False, 32, assigned_gpus=["3"]).gpu == 3
    # A container that shows its task only the assigned GPU: that one, whatever Spark calls it.
    assert device_plan(0, 1, 1, True, False, 8, assigned_gpus=["5"]).gpu == 0
    with pytest.raises(RuntimeError, match="assigned GPU 5"):
        device_plan(0, 1, 2, True, False, 8, assigned_gpus=["5"])
    # More ranks than GPUs on a node would make two ranks share one: refused, naming the fix.
    with pytest.raises(RuntimeError, match="3 ranks on this node but TensorFlow sees 2"):
        device_plan(2, 3, 2, True, False, 8)
    with pytest.raises(RuntimeError, match="no GPU"):
        device_plan(0, 1, 0, True, False, 8)
    # CPU: GPUs hidden if any, the cores shared among the node's ranks, float32 unless asked.
    assert device_plan(1, 2, 0, False, False, 8) == DevicePlan(None, False, False, "float32", 4, 2)
    assert device_plan(0, 4, 2, False, True, 2) == DevicePlan(None, True, False, "mixed_float16", 1, 2)


def test_warmup_schedule_reaches_the_scaled_rate():
    from training.trainer import make_schedule

    schedule = make_schedule(0.01, size=4, scale=True, warmup_steps=10)
    assert float(schedule(0)) == pytest.approx(0.04 * (0.25 + 0.75 * 0.1))  # from ~base LR up
    assert float(schedule(9)) == pytest.approx(0.04)
    assert float(schedule(500)) == pytest.approx(0.04)


def test_embedding_edges_are_train_quantiles_from_minimum_to_maximum(spark):
    from training.preprocessing import numeric_statistics

    values = [float(v) for v in range(100)] + [None] * 10
    constant = [3.0] * 110
    df = spark.createDataFrame(list(zip(values, constant)), "spend double, flag double")
    stats = numeric_statistics(df, ("spend", "flag"), buckets=4, embedding_bins=4)
    edges = np.array(stats["spend"]["embedding_edges"])
    expected = np.log1p(np.quantile(np.arange(100.0), [0, 0.25, 0.5, 0.75, 1.0]))
    np.testing.assert_allclose(edges, expected, atol=0.03)  # approxQuantile: one rank either way
    assert edges[0] == 0.0 and edges[-1] == pytest.approx(np.log1p(99.0))
    assert len(stats["spend"]["boundaries"]) == 3
    # Tied quantiles merge: a constant column has one edge, hence no bin (it encodes to zeros).
    assert stats["flag"]["embedding_edges"] == [pytest.approx(np.log1p(3.0))]
    assert "embedding_edges" not in numeric_statistics(df, ("spend",), buckets=4)["spend"]


@pytest.mark.parametrize("params", [PARAMS, ENSEMBLE], ids=["plain", "ensemble"])
def test_mixed_float16_model_keeps_raw_values_and_outputs_in_float32(params):
    import tensorflow as tf

    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(STATE_EMBEDDED, params)
        # 1e6 and 7e4 are infinities in float16; preprocessed in float32 they stay finite.
        out = model({"recency": tf.constant([3.0, np.nan, 1e6]), "spend": tf.constant([0.0, 5, 7e4]),
                     "region": tf.constant(["north", "", "mars"]), "device": tf.constant(["a", "b", ""])})
        dtypes = {layer.name: layer.compute_dtype for layer in model.layers}
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert all(v.dtype == tf.float32 and np.isfinite(v.numpy()).all() for v in out.values())
    assert dtypes["num_recency"] == dtypes["numeric_embeddings"] == dtypes["calibration"] == "float32"
    assert dtypes["wide_region"] == dtypes["category_head"] == dtypes["spend_head"] == "float32"
    assert dtypes["deep_0"] == dtypes["emb_region"] == "float16"
