"""The score stage with the project's real model (TF SavedModel via model_directory.load_scoring_model,
loaded in the Spark Python workers): Spark scores equal in-process predict to 1e-6."""
from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pytest

from demandcast.config import load_config
from demandcast.errors import StageFailed
from demandcast.tables import read_table
from training.model_directory import load_failed, load_scoring_model, require_model_dir
from training.scoring.stage import run_score
from training.scoring.udf import check_model_inputs

from scoring_fixtures import (CATEGORIES, SNAPSHOTS, feature_frame, save_wide_and_deep,
                              write_features, write_models_table)


def test_udf_scores_of_the_real_model_equal_in_process_predict(spark, warehouse, tmp_path,
                                                                project_root):
    train = feature_frame(300, SNAPSHOTS[0], seed=1)
    current = feature_frame(300, SNAPSHOTS[1], seed=2)
    write_features(spark, warehouse, [train, current])
    features = read_table(spark, warehouse, "user_features")
    model_dir = save_wide_and_deep(features.where(f"snapshot_date = '{SNAPSHOTS[0]}'"),
                                   tmp_path / "runs" / "models" / "wd1", "wd1")
    write_models_table(spark, warehouse, [("wd1", 0.6, str(model_dir), SNAPSHOTS[0],
                                           dt.datetime(2026, 4, 2))])
    cfg = load_config(project_root / "conf" / "local.yaml", [
        f"warehouse={warehouse}", f"runs_dir={tmp_path / 'runs'}", "score.arrow_batch_size=128"])

    summary = run_score(spark, cfg)  # the default loader: training.model_directory.load_scoring_model
    assert summary["model_version"] == "wd1" and summary["users_scored"] == 300

    model = load_scoring_model(model_dir)
    want = model.predict(current.set_index("user_key"))
    got = read_table(spark, warehouse, "predictions").toPandas().set_index("user_key").loc[want.index]
    np.testing.assert_allclose(got["p_purchase"], want["p_purchase"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["expected_spend"], want["expected_spend"], rtol=1e-6)
    tops = got["top_categories"].map(lambda t: "p_category_" + t[0]["category_id"])
    assert (tops == want[model.category_columns].idxmax(axis=1)).mean() > 0.99  # float32 ties

    demand = read_table(spark, warehouse, "category_demand").toPandas().set_index("category_id")
    np.testing.assert_allclose(demand.loc[CATEGORIES, "expected_buyers"],
                               want[model.category_columns].sum().to_numpy(), rtol=1e-6)

    # The same model refuses a feature table without one of its inputs, before any write.
    narrow = features.drop("sessions_last_7d")
    with pytest.raises(StageFailed, match="missing column 'sessions_last_7d'"):
        check_model_inputs(model.input_columns, narrow.schema, "wd1")

    # Values never seen in training (and nulls) go to the lookups' OOV bucket: finite scores.
    unseen = current.assign(device="smart_fridge", region=None).set_index("user_key")
    oov = model.predict(unseen)
    assert np.isfinite(oov.to_numpy()).all() and oov["p_purchase"].between(0, 1).all()

    # A half-copied or corrupt model directory is one clear line, never a TF stack trace.
    half = tmp_path / "half"
    shutil.copytree(model_dir, half)
    (half / "saved_model" / "variables" / "variables.index").unlink()
    with pytest.raises(StageFailed, match=r"is incomplete \(missing \['saved_model/variables/"
                                          r"variables.index'\]\); retrain"):
        load_scoring_model(half)
    with pytest.raises(StageFailed, match="no model directory at"):
        require_model_dir(tmp_path / "nowhere")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(model_dir, corrupt)
    (corrupt / "saved_model" / "saved_model.pb").write_bytes(b"not a protobuf")
    with pytest.raises(Exception) as raised:
        load_scoring_model(corrupt)
    message = str(load_failed("wd1", corrupt, raised.value))
    assert "\n" not in message and message.startswith(f"cannot load model wd1 from {corrupt}")
